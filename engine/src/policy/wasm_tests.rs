//! Tests of the WASM runtime against the committed test guests in `plugins/dist/` (built from
//! `plugins/test-guest` and `plugins/test-escape` by `scripts/build-plugins.sh`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::policy::{DepEvent, HookInput, OpType, Stage, StepProgress, StepStatus, UserIdentity};

const TEST_GUEST: &[u8] = include_bytes!("../../../plugins/dist/test-guest.wasm");
const TEST_ESCAPE: &[u8] = include_bytes!("../../../plugins/dist/test-escape.wasm");

fn config(pairs: &[(&str, &str)]) -> PluginConfig {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn guest() -> WasmPlugin {
    guest_with(Limits::default())
}

fn guest_with(limits: Limits) -> WasmPlugin {
    WasmPlugin::load(
        "test-guest",
        TEST_GUEST,
        &config(&[("profile", "wifi")]),
        limits,
    )
    .expect("the test guest loads")
}

fn device(serial: &str) -> Device {
    Device {
        serial_number: serial.into(),
        udid: None,
        model: String::new(),
        device_family: String::new(),
        os: String::new(),
        os_version: None,
        dep_server: None,
        stage: Stage::Synced,
        team: None,
        user: None,
    }
}

fn place(p: &WasmPlugin, serial: &str) -> Result<Option<Value>, PluginError> {
    p.call(&HookInput::Place(device(serial)))
        .map(|d| d.map(|d| d.to_json()))
}

#[test]
fn declares_its_hooks_from_configuration() {
    assert_eq!(guest().hooks(), Hook::ALL.to_vec());
    let p = WasmPlugin::load(
        "t",
        TEST_GUEST,
        &config(&[("hooks", "release,place")]),
        Limits::default(),
    )
    .unwrap();
    assert_eq!(p.hooks(), vec![Hook::Place, Hook::Release]);
    // A hook the plugin did not declare is never called: no opinion.
    let e = HookInput::SetupSteps(device("C02"));
    assert_eq!(p.call(&e), Ok(None));
    let err = WasmPlugin::load(
        "t",
        TEST_GUEST,
        &config(&[("hooks", "")]),
        Limits::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("returned no hooks"), "{err}");
}

#[test]
fn every_event_field_reaches_the_guest() {
    let event = DepEvent {
        server: "hq".into(),
        serial_number: "C02X".into(),
        model: "MacBook Pro".into(),
        description: "MBP 14".into(),
        color: "space gray".into(),
        device_family: "Mac".into(),
        os: "OSX".into(),
        profile_status: "empty".into(),
        profile_uuid: Some("P1".into()),
        op_type: OpType::Added,
        op_date: Some("2026-12-01T00:00:00Z".into()),
        known: true,
        team: Some("Eng".into()),
    };
    let d = guest()
        .call(&HookInput::AutoAssign(event))
        .unwrap()
        .unwrap();
    assert_eq!(
        d.to_json(),
        json!({"assign": "wifi|keys=profile|hq|C02X|MacBook Pro|MBP 14|space gray|Mac|OSX|empty|P1|OpType::Added|2026-12-01T00:00:00Z|true|Eng|end"})
    );
}

#[test]
fn every_device_field_reaches_the_guest() {
    let d = Device {
        udid: Some("UDID-1".into()),
        model: "iMac".into(),
        device_family: "Mac".into(),
        os: "OSX".into(),
        os_version: Some("15.1".into()),
        dep_server: Some("hq".into()),
        stage: Stage::Enrolled,
        team: Some("Eng".into()),
        user: Some(UserIdentity {
            username: "ada".into(),
            email: Some("ada@example.com".into()),
            groups: vec!["eng".into(), "all".into()],
        }),
        ..device("C02")
    };
    let got = guest().call(&HookInput::Place(d)).unwrap().unwrap();
    assert_eq!(
        got.to_json(),
        json!({"team": "C02|UDID-1|iMac|Mac|OSX|15.1|hq|Stage::Enrolled|Eng|ada<ada@example.com>[eng,all]"})
    );
    let bare = place(&guest(), "C03").unwrap();
    assert_eq!(
        bare,
        Some(json!({"team": "C03|-||||-|-|Stage::Synced|-|-"}))
    );
}

#[test]
fn every_step_kind_comes_back_in_the_lua_shape() {
    let mut d = device("C02");
    d.user = Some(UserIdentity {
        username: "ada".into(),
        ..Default::default()
    });
    let got = guest().call(&HookInput::SetupSteps(d)).unwrap().unwrap();
    assert_eq!(
        got.to_json(),
        json!([
            {"id": "account", "required": true, "account": {"username": "ada", "full_name": "Test Admin", "lock": true, "admin": false}},
            {"id": "profile", "required": true, "install_profile": "wifi"},
            {"id": "package", "required": false, "install_package": {"url": "https://example.com/agent.pkg", "manifest_url": "https://example.com/agent.plist"}},
            {"id": "name", "required": true, "command": {"request_type": "Settings", "parameters": {"Settings": [{"Item": "DeviceName", "DeviceName": "C02"}]}}}
        ])
    );
    let empty = guest().call(&HookInput::SetupSteps(device("empty")));
    assert_eq!(empty.unwrap().unwrap().to_json(), json!([]));
}

#[test]
fn release_sees_progress() {
    let step = |id: &str, required, status| StepProgress {
        id: id.into(),
        required,
        status,
        attempts: 2,
    };
    let p = guest();
    let ask = |steps: Vec<StepProgress>| {
        p.call(&HookInput::Release(
            device("C02"),
            Progress {
                steps,
                elapsed_secs: 40,
            },
        ))
        .unwrap()
        .unwrap()
        .to_json()
    };
    assert_eq!(
        ask(vec![
            step("a", true, StepStatus::Succeeded),
            step("b", false, StepStatus::Running)
        ]),
        json!("release")
    );
    assert_eq!(
        ask(vec![
            step("a", true, StepStatus::Pending),
            step("b", true, StepStatus::Running)
        ]),
        json!({"wait": 42})
    );
    assert_eq!(
        ask(vec![step("a", true, StepStatus::Failed)]),
        json!({"hold": "failed after 2 attempts"})
    );
}

#[test]
fn host_functions_answer() {
    let before = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    let got = place(&guest(), "clock").unwrap().unwrap();
    let after = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    let now: u64 = got["team"].as_str().unwrap().parse().unwrap();
    assert!(
        (before..=after).contains(&now),
        "{now} not in {before}..={after}"
    );
    assert_eq!(place(&guest(), "none"), Ok(None));
    assert_eq!(
        place(&guest(), "no-team"),
        Ok(Some(json!({"no_team": true})))
    );
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    assert_eq!(
        place(&guest(), "loop"),
        Err(PluginError::Limit(LimitKind::Instructions))
    );
}

#[test]
fn an_infinite_loop_with_fuel_to_spare_hits_the_deadline() {
    let p = guest_with(Limits {
        instructions: u64::MAX,
        timeout: Duration::from_millis(50),
        ..Limits::default()
    });
    let started = Instant::now();
    assert_eq!(
        place(&p, "loop"),
        Err(PluginError::Limit(LimitKind::Timeout))
    );
    // Generous: the point is that it stops, not how precisely.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    assert_eq!(
        place(&guest(), "alloc"),
        Err(PluginError::Limit(LimitKind::Memory))
    );
}

#[test]
fn unbounded_recursion_hits_the_stack_limit() {
    assert_eq!(
        place(&guest(), "recurse"),
        Err(PluginError::Limit(LimitKind::Stack))
    );
}

#[test]
fn traps_and_errors_are_failures_with_their_reason() {
    let p = guest();
    let panic = place(&p, "panic").unwrap_err().to_string();
    assert!(
        panic.contains("trapped") && panic.contains("unreachable"),
        "{panic}"
    );
    assert_eq!(
        place(&p, "error"),
        Err(PluginError::Failed(
            "returned an error: the test guest was asked to fail".into()
        ))
    );
}

#[test]
fn malformed_answers_are_rejected_for_every_hook() {
    let p = guest();
    let inputs = [
        HookInput::AutoAssign(DepEvent {
            server: "hq".into(),
            serial_number: "malformed".into(),
            model: String::new(),
            description: String::new(),
            color: String::new(),
            device_family: String::new(),
            os: String::new(),
            profile_status: String::new(),
            profile_uuid: None,
            op_type: OpType::Added,
            op_date: None,
            known: false,
            team: None,
        }),
        HookInput::Place(device("malformed")),
        HookInput::SetupSteps(device("malformed")),
        HookInput::SetupSteps(device("bad-json")),
        HookInput::Release(device("malformed"), Progress::default()),
    ];
    let want = [
        "assign must be a non-empty string",
        "team must be a non-empty string",
        "step 2: duplicate id",
        "step 1: command.parameters-json is not JSON",
        "hold must be a non-empty string",
    ];
    for (input, want) in inputs.iter().zip(want) {
        match p.call(input) {
            Err(PluginError::Malformed(m)) => assert!(m.contains(want), "{m:?} lacks {want:?}"),
            other => panic!("{:?}: {other:?}", input.hook()),
        }
    }
}

#[test]
fn the_guest_cannot_reach_files_network_or_environment() {
    assert_eq!(
        place(&guest(), "escape"),
        Ok(Some(json!({"team": "fs=denied net=denied env=absent"})))
    );
}

#[test]
fn a_component_importing_more_than_the_host_offers_does_not_load() {
    let err = WasmPlugin::load(
        "escape",
        TEST_ESCAPE,
        &PluginConfig::new(),
        Limits::default(),
    )
    .unwrap_err();
    let PluginError::Load(m) = err else {
        panic!("{err:?}")
    };
    assert!(
        m.contains("imports the engine does not offer") && m.contains("wasi:filesystem/preopens"),
        "{m}"
    );
}

#[test]
fn bytes_that_are_not_a_component_are_refused_precisely() {
    let core = WasmPlugin::load(
        "m",
        b"\0asm\x01\0\0\0",
        &PluginConfig::new(),
        Limits::default(),
    )
    .unwrap_err();
    assert!(
        core.to_string()
            .contains("core WebAssembly module, not a component"),
        "{core}"
    );
    let mut truncated = TEST_GUEST.to_vec();
    truncated.truncate(TEST_GUEST.len() / 2);
    let bad =
        WasmPlugin::load("t", &truncated, &PluginConfig::new(), Limits::default()).unwrap_err();
    assert!(
        bad.to_string()
            .contains("not a valid WebAssembly component"),
        "{bad}"
    );
}

#[test]
fn initial_memory_beyond_the_cap_fails_to_load() {
    let err = WasmPlugin::load(
        "t",
        TEST_GUEST,
        &PluginConfig::new(),
        Limits {
            memory_bytes: 4096,
            ..Limits::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        err,
        PluginError::Load("instantiating: plugin exceeded its memory limit".into())
    );
}

#[test]
fn the_plugin_keeps_serving_after_every_kind_of_failure() {
    let p = guest();
    for serial in ["loop", "alloc", "recurse", "panic", "error", "malformed"] {
        assert!(place(&p, serial).is_err(), "{serial}");
        assert_eq!(
            place(&p, "C03"),
            Ok(Some(json!({"team": "C03|-||||-|-|Stage::Synced|-|-"}))),
            "after {serial}"
        );
    }
}

#[test]
fn many_threads_share_one_plugin() {
    let p = std::sync::Arc::new(guest());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let serial = format!("T{t}-{i}");
                    let got = place(&p, &serial).unwrap().unwrap();
                    assert!(got["team"].as_str().unwrap().starts_with(&serial));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(p.pool.lock().unwrap().len() <= POOL_MAX);
}
