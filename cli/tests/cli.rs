//! The `pomona` binary's command line: help, and precise errors for bad input.
//!
//! Having an integration test here also makes `cargo test --workspace` build
//! `target/debug/pomona`, which the testkit's end-to-end tests start as a child process.

use std::process::{Command, Output};

fn pomona(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pomona"))
        .args(args)
        .env_remove("POMONA_API_KEY")
        .env_remove("POMONA_URL")
        .output()
        .expect("run pomona")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_lists_every_subcommand() {
    let out = pomona(&["--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["serve", "dep", "push"] {
        assert!(text.contains(sub), "`{sub}` missing from help:\n{text}");
    }
}

#[test]
fn a_missing_config_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = pomona(&["serve", "--config", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nope.toml"), "{}", stderr(&out));
}

#[test]
fn a_malformed_config_file_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pomona.toml");
    let data = dir.path().join("data");
    std::fs::write(&config, "listen = [not toml").unwrap();
    let out = pomona(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("pomona.toml"), "{}", stderr(&out));
    assert!(
        !data.exists(),
        "a refused start must not create the data directory"
    );
}

#[test]
fn dep_commands_need_an_api_key() {
    let out = pomona(&["dep", "servers", "--url", "http://127.0.0.1:9"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--api-key"), "{}", stderr(&out));
}

#[test]
fn dep_commands_name_the_engine_they_could_not_reach() {
    let out = pomona(&[
        "dep",
        "servers",
        "--url",
        "http://127.0.0.1:9",
        "--api-key",
        "k",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("http://127.0.0.1:9/v1/dep/servers"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_bad_team_flag_is_explained() {
    let out = pomona(&["dep", "set", "hq", "--team", "macos", "--api-key", "k"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("PLATFORM=TEAM"), "{}", stderr(&out));
}

#[test]
fn plugin_test_prints_one_decision_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("policy.lua");
    std::fs::write(
        &plugin,
        r#"return { auto_assign = function(e)
             if e.serial_number == "LOOP" then while true do end end
             if e.device_family == "Mac" then return { assign = pomona.config.profile } end
           end }"#,
    )
    .unwrap();
    let fixture = dir.path().join("events.json");
    std::fs::write(
        &fixture,
        r#"[{"server": "hq", "serial_number": "C1", "device_family": "Mac", "op_type": "added"},
            {"server": "hq", "serial_number": "P1", "device_family": "iPad", "op_type": "added"},
            {"server": "hq", "serial_number": "LOOP", "op_type": "added"},
            {"serial_number": "no server"}]"#,
    )
    .unwrap();
    let out = pomona(&[
        "plugin",
        "test",
        plugin.to_str().unwrap(),
        "--hook",
        "auto-assign",
        "--fixture",
        fixture.to_str().unwrap(),
        "--config",
        "profile=macs",
        "--instructions",
        "100000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines[0],
        serde_json::json!({"index": 0, "decision": {"assign": "macs"}, "error": null})
    );
    assert_eq!(
        lines[1],
        serde_json::json!({"index": 1, "decision": null, "error": null})
    );
    assert_eq!(lines[2]["error"], "plugin exceeded its instruction limit");
    assert!(
        lines[3]["error"]
            .as_str()
            .unwrap()
            .contains("missing field `server`"),
        "{}",
        lines[3]
    );
}

#[test]
fn plugin_test_fails_when_the_plugin_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("bad.lua");
    std::fs::write(&plugin, "return {").unwrap();
    let fixture = dir.path().join("f.json");
    std::fs::write(&fixture, "[]").unwrap();
    let args = [
        "plugin",
        "test",
        plugin.to_str().unwrap(),
        "--hook",
        "place",
        "--fixture",
        fixture.to_str().unwrap(),
    ];
    let out = pomona(&args);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("bad.lua"), "{}", stderr(&out));
    std::fs::write(&fixture, "{}").unwrap();
    std::fs::write(&plugin, "return { place = function() end }").unwrap();
    let out = pomona(&args);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("JSON array"), "{}", stderr(&out));
    let out = pomona(&[
        "plugin",
        "test",
        plugin.to_str().unwrap(),
        "--hook",
        "deploy",
        "--fixture",
        "x",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown hook"), "{}", stderr(&out));
}

/// The same command runs a WASM component: limits show per record, and a component that imports
/// more than the host offers does not load.
#[test]
fn plugin_test_runs_wasm_components() {
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let dir = tempfile::tempdir().unwrap();
    let fixture = dir.path().join("devices.json");
    std::fs::write(
        &fixture,
        r#"[{"serial_number": "no-team", "stage": "synced"},
            {"serial_number": "loop", "stage": "synced"},
            {"serial_number": "none", "stage": "synced"}]"#,
    )
    .unwrap();
    let run = |component: &str| {
        pomona(&[
            "plugin",
            "test",
            &format!("{repo}/plugins/dist/{component}.wasm"),
            "--hook",
            "place",
            "--fixture",
            fixture.to_str().unwrap(),
        ])
    };
    let out = run("test-guest");
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            serde_json::json!({"index": 0, "decision": {"no_team": true}, "error": null}),
            serde_json::json!({"index": 1, "decision": null, "error": "plugin exceeded its instruction limit"}),
            serde_json::json!({"index": 2, "decision": null, "error": null}),
        ]
    );
    let out = run("test-escape");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("imports the engine does not offer"),
        "{}",
        stderr(&out)
    );
}

/// `pomona demo` runs the whole flow on loopback and ends with the contract's JSON summary.
#[test]
fn demo_releases_every_mac_and_ends_with_a_json_summary() {
    let out = pomona(&["demo", "--devices", "3", "--json", "--show", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("output");
    let summary: serde_json::Value = serde_json::from_str(last).expect("a JSON last line");
    assert_eq!(summary["devices"], 3, "{summary}");
    assert_eq!(summary["released"], 3, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert!(summary["seconds"].as_f64().unwrap() > 0.0);
    for stage in [
        "listed by Apple Business Manager",
        "placed in team Engineering by place-by-model",
        "assigned enrollment profile mac-standard",
        "enrolled, waiting in Setup Assistant",
        "setup decided by setup-basic: account, profile:wifi, profile:restrictions",
        "released by release-when-done",
    ] {
        assert!(stdout.contains(stage), "{stage:?} missing from:\n{stdout}");
    }
    assert!(
        !stdout.contains("DEMO000001"),
        "--show 1 prints one Mac's timeline"
    );
}

/// `pomona demo --data-dir` runs on a durable database file, and never reuses one.
#[test]
fn demo_on_disk_refuses_an_existing_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let args = [
        "demo",
        "--devices",
        "1",
        "--show",
        "0",
        "--json",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let out = pomona(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(data.join("pomona.redb").exists());
    let out = pomona(&args);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("exists"), "{}", stderr(&out));
}
