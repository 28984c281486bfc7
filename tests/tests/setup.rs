//! The setup flow end to end over real HTTP: a device is placed by a plugin when it
//! authenticates, its team's setup steps are sent while it waits in Setup Assistant, each result
//! is tracked, and the device is released — by the built-in rule, by its timeout, or by an admin
//! after a plugin held it.

use std::time::{Duration, Instant};

use pomona::policy::Limits;
use pomona::setup::SetupOptions;
use pomona_testkit::api::ApiClient;
use pomona_testkit::device::{Device, ReceivedCommand};
use pomona_testkit::server::TestServer;
use serde_json::{Value, json};

async fn server(release_timeout: Duration) -> TestServer {
    TestServer::start_with(|b| {
        b.setup_options(
            SetupOptions::default()
                .with_release_timeout(release_timeout)
                .with_poll(Duration::from_millis(50)),
        )
    })
    .await
    .unwrap()
}

async fn put_plugin(api: &ApiClient, name: &str, source: &str) {
    let r = api
        .put_bytes(&format!("/v1/plugins/{name}"), source.as_bytes().to_vec())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.json);
}

async fn put_team(api: &ApiClient, name: &str, team: Value) {
    let r = api
        .put_json(&format!("/v1/teams/{name}"), &team)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.json);
}

/// Poll with `Idle` until the engine queues something (the flow runs in the background).
async fn next_command(dev: &Device) -> ReceivedCommand {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(c) = dev.idle().await.unwrap() {
            return c;
        }
        assert!(Instant::now() < deadline, "no command arrived");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Poll `GET path` until `ready` accepts the JSON.
async fn wait_for(api: &ApiClient, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = api.get(path).await.unwrap();
        if r.status == 200 && ready(&r.json) {
            return r.json;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never became ready: {} {}",
            r.status,
            r.json
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn events_of(api: &ApiClient, kind: &str) -> Vec<Value> {
    let r = api.get("/v1/events?after=0&limit=1000").await.unwrap();
    r.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

/// Placement by a Lua plugin at Authenticate, the team's steps in order, a failed optional-free
/// step, and release by the built-in rule once every required step has finished.
#[tokio::test]
async fn team_steps_run_and_the_default_releases_when_they_finish() {
    let s = server(Duration::from_secs(1800)).await;
    let api = s.api();
    put_plugin(
        &api,
        "teams",
        r#"return { place = function(d) if d.serial_number ~= "" then return { team = "Eng" } end end }"#,
    )
    .await;
    let wifi = include_bytes!("../../engine/tests/fixtures/profiles/wifi.mobileconfig");
    let r = api
        .put_bytes("/v1/profiles/wifi", wifi.to_vec())
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.json);
    let dock = include_bytes!("../../engine/tests/fixtures/profiles/user-dock.mobileconfig");
    let r = api
        .put_bytes("/v1/profiles/dock", dock.to_vec())
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.json);
    put_team(
        &api,
        "Eng",
        json!({
            "setup_steps": [
                {"id": "account", "account": {"username": "ada", "full_name": "Ada L", "lock": true}},
                {"id": "wifi", "install_profile": "wifi"},
                {"id": "dock", "install_profile": "dock"},
                {"id": "name", "command": {"request_type": "Settings", "parameters": {"Settings": [{"Item": "DeviceName", "DeviceName": "Eng Mac"}]}}},
                {"id": "agent", "install_package": {"url": "https://example.com/agent.pkg"}},
                {"id": "extra", "required": false, "install_profile": "not-in-the-library"}
            ]
        }),
    )
    .await;

    let dev = s.device().await.unwrap();
    dev.authenticate().await.unwrap();
    let path = format!("/v1/devices/{}", dev.serial);
    let placed = wait_for(&api, &path, |j| j["device"]["team"] == "Eng").await;
    assert_eq!(placed["device"]["placed_by"], "teams");
    assert_eq!(placed["device"]["stage"], "enrolling");
    dev.token_update(true).await.unwrap();

    let c = next_command(&dev).await;
    assert_eq!(c.request_type, "AccountConfiguration");
    let c = dev
        .acknowledge(&c.uuid)
        .await
        .unwrap()
        .expect("the next step");
    assert_eq!(c.request_type, "InstallProfile");
    let sent = plist::Value::from_reader(std::io::Cursor::new(&c.raw)).unwrap();
    let payload = sent.as_dictionary().unwrap()["Command"]
        .as_dictionary()
        .unwrap()["Payload"]
        .as_data()
        .unwrap()
        .to_vec();
    assert_eq!(payload, wifi.to_vec(), "the library's exact bytes");
    let c = dev
        .acknowledge(&c.uuid)
        .await
        .unwrap()
        .expect("the next step");
    assert_eq!(
        c.request_type, "Settings",
        "the user-scoped profile is not sent"
    );
    let c = dev
        .acknowledge(&c.uuid)
        .await
        .unwrap()
        .expect("the next step");
    assert_eq!(c.request_type, "InstallEnterpriseApplication");
    // The failed package was the last required step: the default releases (the flow runs in the
    // background, so DeviceConfigured comes with this answer or with the next poll).
    let c = match dev.error(&c.uuid).await.unwrap() {
        Some(c) => c,
        None => next_command(&dev).await,
    };
    assert_eq!(c.request_type, "DeviceConfigured");
    assert!(dev.acknowledge(&c.uuid).await.unwrap().is_none());

    let setup = wait_for(&api, &format!("{path}/setup"), |j| j["state"] == "released").await;
    assert_eq!(setup["by"], "default");
    assert_eq!(setup["reason"], "required steps finished");
    let status: Vec<(&str, &str)> = setup["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        status,
        [
            ("account", "succeeded"),
            ("wifi", "succeeded"),
            ("dock", "skipped"),
            ("name", "succeeded"),
            ("agent", "failed"),
            ("extra", "skipped")
        ]
    );
    let (status, progress) = dev.setup_status().await.unwrap();
    assert_eq!(status, 200, "{progress}");
    assert_eq!(progress["state"], "released");
    assert_eq!(progress["detail"], "required steps finished");
    assert_eq!(progress["steps"][1]["id"], "wifi");
    assert_eq!(progress["steps"][1]["status"], "succeeded");
    let mut stranger = s.device().await.unwrap();
    stranger.transport = pomona_testkit::device::Transport::Anonymous;
    assert_eq!(
        stranger.setup_status().await.unwrap().0,
        403,
        "no identity, no answer"
    );
    let unenrolled = s.device().await.unwrap();
    assert_eq!(
        unenrolled.setup_status().await.unwrap().0,
        403,
        "a certificate pinned to no enrollment"
    );
    let device = wait_for(&api, &path, |j| j["device"]["stage"] == "released").await;
    assert_eq!(device["device"]["team"], "Eng");
    let released = events_of(&api, "device.released").await;
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(released[0]["data"]["reason"], "required steps finished");
    assert_eq!(events_of(&api, "setup.step.failed").await.len(), 1);
    assert_eq!(events_of(&api, "setup.step.skipped").await.len(), 2);
    s.stop().await;
}

/// A step the device keeps deferring (NotNow) does not block forever: the team's timeout
/// releases the device, and the event says so.
#[tokio::test]
async fn the_timeout_releases_a_device_whose_steps_do_not_finish() {
    let s = server(Duration::from_secs(1800)).await;
    let api = s.api();
    put_plugin(
        &api,
        "teams",
        r#"return { place = function() return { team = "Lab" } end }"#,
    )
    .await;
    put_team(
        &api,
        "Lab",
        json!({
            "release_timeout_secs": 1,
            "setup_steps": [{"id": "name", "command": {"request_type": "Settings", "parameters": {}}}]
        }),
    )
    .await;
    let dev = s.device().await.unwrap();
    dev.authenticate().await.unwrap();
    wait_for(&api, &format!("/v1/devices/{}", dev.serial), |j| {
        j["device"]["team"] == "Lab"
    })
    .await;
    dev.token_update(true).await.unwrap();
    // The device keeps answering NotNow (it gets the command again at each Idle, FIFO first).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut deferred = 0;
    let mut answer = None;
    let released = loop {
        let c = match answer.take() {
            Some(c) => c,
            None => next_command(&dev).await,
        };
        if c.request_type == "DeviceConfigured" {
            break c;
        }
        assert_eq!(c.request_type, "Settings");
        // The answer to NotNow is the next command, if one is queued (DeviceConfigured).
        answer = dev.not_now(&c.uuid).await.unwrap();
        deferred += 1;
        assert!(Instant::now() < deadline, "never released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(deferred >= 1);
    dev.acknowledge(&released.uuid).await.unwrap();
    let setup = wait_for(&api, &format!("/v1/devices/{}/setup", dev.serial), |j| {
        j["state"] == "released"
    })
    .await;
    assert_eq!(setup["reason"], "timeout");
    assert_eq!(setup["steps"][0]["status"], "pending");
    assert!(setup["steps"][0]["attempts"].as_u64().unwrap() >= 1);
    s.stop().await;
}

/// A plugin holds the device; nothing is sent until an admin releases it.
#[tokio::test]
async fn a_plugin_holds_and_an_admin_releases() {
    let s = server(Duration::from_secs(1)).await;
    let api = s.api();
    put_plugin(
        &api,
        "gate",
        r#"return { release = function(d, p) return { hold = "waiting for IT" } end }"#,
    )
    .await;
    let dev = s.device().await.unwrap();
    dev.authenticate().await.unwrap();
    dev.token_update(true).await.unwrap();
    let path = format!("/v1/devices/{}/setup", dev.serial);
    let setup = wait_for(&api, &path, |j| j["state"] == "held").await;
    assert_eq!(setup["reason"], "waiting for IT");
    assert_eq!(setup["by"], "gate");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        dev.idle().await.unwrap().is_none(),
        "held: not even the timeout releases it"
    );
    let r = api
        .post_json(&format!("/v1/devices/{}/release", dev.serial), &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["by"], "admin");
    let c = next_command(&dev).await;
    assert_eq!(c.request_type, "DeviceConfigured");
    // The device refuses it: the setup is held again, with Apple's reason, not silently stuck.
    assert!(dev.error(&c.uuid).await.unwrap().is_none());
    let setup = wait_for(&api, &path, |j| j["state"] == "held").await;
    assert!(
        setup["reason"]
            .as_str()
            .unwrap()
            .starts_with("DeviceConfigured failed"),
        "{setup}"
    );
    assert_eq!(events_of(&api, "setup.release_failed").await.len(), 1);
    let r = api
        .post_json(&format!("/v1/devices/{}/release", dev.serial), &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.json);
    let again = next_command(&dev).await;
    assert_eq!(again.request_type, "DeviceConfigured");
    assert_ne!(again.uuid, c.uuid, "a new command");
    assert!(dev.acknowledge(&again.uuid).await.unwrap().is_none());
    let r = api
        .post_json("/v1/devices/NOPE/release", &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    s.stop().await;
}

/// A plugin that backtracks in Lua's pattern matcher for one device (C code the instruction
/// hook never reached: the setup pass was stuck there for hours, and every device behind it
/// waited) costs that device at most its time limit: the others still get their steps, and the
/// slow device falls back to its team's steps.
#[tokio::test]
async fn a_slow_plugin_for_one_device_does_not_stall_the_others() {
    let s = server(Duration::from_secs(1800)).await;
    let api = s.api();
    put_team(
        &api,
        "Eng",
        json!({"setup_steps": [{"id": "name", "command": {"request_type": "Settings", "parameters": {"Settings": []}}}]}),
    )
    .await;
    let slow = s.device().await.unwrap();
    let other = s.device().await.unwrap();
    put_plugin(
        &api,
        "slow",
        &format!(
            r#"return {{
                place = function(d) return {{ team = "Eng" }} end,
                setup_steps = function(d)
                  if d.serial_number == "{}" then
                    string.find(string.rep("a", 5000), string.rep("a*", 30) .. "b")
                  end
                end,
            }}"#,
            slow.serial
        ),
    )
    .await;
    for dev in [&slow, &other] {
        dev.authenticate().await.unwrap();
    }
    let started = Instant::now();
    slow.token_update(true).await.unwrap();
    other.token_update(true).await.unwrap();
    let c = next_command(&other).await;
    assert_eq!(c.request_type, "Settings");
    assert!(started.elapsed() < Duration::from_secs(5));
    let c = next_command(&slow).await;
    assert_eq!(c.request_type, "Settings", "the team's steps, by default");
    let setup = wait_for(&api, &format!("/v1/devices/{}/setup", slow.serial), |j| {
        j["state"] == "running"
    })
    .await;
    assert_eq!(setup["steps_by"], "default", "{setup}");
    let failed = events_of(&api, "plugin.failed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["data"]["limit"], true);
    s.stop().await;
}

/// A server whose plugins may run 3 s per call: a plugin looping for one device keeps its call
/// in flight that long, which is the yardstick of the two tests below.
async fn patient_server() -> TestServer {
    TestServer::start_with(|b| {
        b.setup_options(
            SetupOptions::default()
                .with_release_timeout(Duration::from_secs(1800))
                .with_poll(Duration::from_millis(50)),
        )
        .plugin_limits(
            Limits::default()
                .with_instructions(1_000_000_000_000)
                .with_timeout(Duration::from_secs(3)),
        )
    })
    .await
    .unwrap()
}

/// The sequence number of the only event of `kind` whose data has `key` = `value`.
async fn seq_of(api: &ApiClient, kind: &str, key: &str, value: &str) -> u64 {
    let found: Vec<Value> = events_of(api, kind)
        .await
        .into_iter()
        .filter(|e| e["data"][key] == value)
        .collect();
    assert_eq!(found.len(), 1, "{kind} {key}={value}: {found:?}");
    found[0]["seq"].as_u64().unwrap()
}

/// The admin moves and releases `dev` (enrolled, not in Setup Assistant); both answer 200.
async fn admin_moves_and_releases(api: &ApiClient, dev: &Device) {
    let r = api
        .put_json(
            &format!("/v1/devices/{}/team", dev.serial),
            &json!({"team": "Ops"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.json);
    let r = api
        .post_json(&format!("/v1/devices/{}/release", dev.serial), &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.json);
}

/// A `release` plugin that loops for one device until its 3 s limit holds up neither another
/// device's setup nor the admin: no lock is held while a plugin runs. (The flow used to ask
/// `release` under the lock every event and admin call takes, so both waited the full 3 s.)
#[tokio::test]
async fn a_slow_release_answer_holds_up_neither_other_setups_nor_the_admin() {
    let s = patient_server().await;
    let api = s.api();
    for team in ["Eng", "Ops"] {
        put_team(
            &api,
            team,
            json!({"setup_steps": [{"id": "name", "command": {"request_type": "Settings", "parameters": {"Settings": []}}}]}),
        )
        .await;
    }
    let slow = s.device().await.unwrap();
    let other = s.device().await.unwrap();
    let third = s.device().await.unwrap();
    put_plugin(
        &api,
        "slow",
        &format!(
            r#"return {{
                place = function(d) return {{ team = "Eng" }} end,
                release = function(d, p)
                  if d.serial_number == "{}" then while true do end end
                end,
            }}"#,
            slow.serial
        ),
    )
    .await;
    for dev in [&slow, &other, &third] {
        dev.authenticate().await.unwrap();
    }
    third.token_update(false).await.unwrap();
    wait_for(&api, &format!("/v1/devices/{}", third.serial), |j| {
        j["device"]["stage"] == "enrolled"
    })
    .await;
    slow.token_update(true).await.unwrap();
    // Its step is queued; `release` is asked about it next, and loops for 3 s.
    assert_eq!(next_command(&slow).await.request_type, "Settings");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = Instant::now();
    other.token_update(true).await.unwrap();
    assert_eq!(next_command(&other).await.request_type, "Settings");
    admin_moves_and_releases(&api, &third).await;
    let took = asked.elapsed();
    // The slow call ends (limit hit: `plugin.failed`) after all of that happened.
    let deadline = Instant::now() + Duration::from_secs(10);
    while events_of(&api, "plugin.failed").await.is_empty() {
        assert!(Instant::now() < deadline, "the slow call never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failed = seq_of(&api, "plugin.failed", "plugin", "slow").await;
    let queued = seq_of(&api, "setup.step.queued", "serial_number", &other.serial).await;
    let released = seq_of(&api, "device.released", "serial_number", &third.serial).await;
    assert!(
        queued < failed && released < failed,
        "the other device's step ({queued}) and the admin's release ({released}) waited for \
         the slow call to end ({failed}); took {took:?}"
    );
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    s.stop().await;
}

/// A `setup-steps` plugin that loops for one device until its 3 s limit does not hold up the
/// admin, and the device then gets its team's steps by default.
#[tokio::test]
async fn a_slow_setup_steps_answer_does_not_hold_up_the_admin() {
    let s = patient_server().await;
    let api = s.api();
    for team in ["Eng", "Ops"] {
        put_team(
            &api,
            team,
            json!({"setup_steps": [{"id": "name", "command": {"request_type": "Settings", "parameters": {"Settings": []}}}]}),
        )
        .await;
    }
    let slow = s.device().await.unwrap();
    let third = s.device().await.unwrap();
    put_plugin(
        &api,
        "slow",
        &format!(
            r#"return {{
                place = function(d) return {{ team = "Eng" }} end,
                setup_steps = function(d)
                  if d.serial_number == "{}" then while true do end end
                end,
            }}"#,
            slow.serial
        ),
    )
    .await;
    for dev in [&slow, &third] {
        dev.authenticate().await.unwrap();
    }
    third.token_update(false).await.unwrap();
    wait_for(&api, &format!("/v1/devices/{}", third.serial), |j| {
        j["device"]["stage"] == "enrolled"
    })
    .await;
    slow.token_update(true).await.unwrap();
    // The flow picks the event up at once and asks `setup-steps`, which loops for 3 s.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    admin_moves_and_releases(&api, &third).await;
    let took = asked.elapsed();
    assert_eq!(next_command(&slow).await.request_type, "Settings");
    let setup = wait_for(&api, &format!("/v1/devices/{}/setup", slow.serial), |j| {
        j["state"] == "running"
    })
    .await;
    assert_eq!(setup["steps_by"], "default", "{setup}");
    let failed = seq_of(&api, "plugin.failed", "plugin", "slow").await;
    let placed = seq_of(&api, "device.placed", "team", "Ops").await;
    let released = seq_of(&api, "device.released", "serial_number", &third.serial).await;
    assert!(
        placed < failed && released < failed,
        "the admin ({placed}, {released}) waited for the slow call to end ({failed}); took {took:?}"
    );
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    s.stop().await;
}

/// Teams are validated; a device can be moved by an admin, and plugins no longer move it.
#[tokio::test]
async fn teams_and_admin_placement() {
    let s = server(Duration::from_secs(1800)).await;
    let api = s.api();
    let r = api
        .put_json(
            "/v1/teams/Bad",
            &json!({"enrollment_profiles": {"windows": "x"}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.json);
    put_team(&api, "A", json!({})).await;
    put_team(
        &api,
        "B",
        json!({"enrollment_profiles": {"macos": "mac-b"}}),
    )
    .await;
    let list = api.get("/v1/teams").await.unwrap().json;
    assert_eq!(list["teams"].as_array().unwrap().len(), 2);
    put_plugin(
        &api,
        "teams",
        r#"return { place = function() return { team = "A" } end }"#,
    )
    .await;
    let dev = s.device().await.unwrap();
    dev.authenticate().await.unwrap();
    let path = format!("/v1/devices/{}", dev.serial);
    wait_for(&api, &path, |j| j["device"]["team"] == "A").await;
    let r = api
        .put_json(&format!("{path}/team"), &json!({"team": "B"}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["device"]["placed_by"], "admin");
    let r = api
        .put_json(&format!("{path}/team"), &json!({"team": "Nope"}))
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.json);
    // A second Authenticate asks the plugin again, which may no longer move the device.
    dev.authenticate().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d = api.get(&path).await.unwrap().json;
    assert_eq!(d["device"]["team"], "B");
    let list = api.get("/v1/devices?team=B").await.unwrap().json;
    assert_eq!(list["devices"].as_array().unwrap().len(), 1);
    let r = api.delete("/v1/teams/A").await.unwrap();
    assert_eq!(r.status, 204);
    s.stop().await;
}

/// A Shared iPad user's session waits too: its first TokenUpdate with AwaitingConfiguration is
/// answered with `UserConfigured` on the user's channel, not on the device's.
#[tokio::test]
async fn a_shared_ipad_user_is_released_with_user_configured() {
    let s = server(Duration::from_secs(1800)).await;
    let api = s.api();
    let dev = s.device().await.unwrap();
    dev.enroll().await.unwrap();
    dev.shared_ipad_user_token_update("student1", true)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let c = loop {
        if let Some(c) = dev.shared_ipad_user_status("student1", None).await.unwrap() {
            break c;
        }
        assert!(Instant::now() < deadline, "no UserConfigured");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(c.request_type, "UserConfigured");
    assert!(
        dev.shared_ipad_user_status("student1", Some(&c.uuid))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        dev.idle().await.unwrap().is_none(),
        "nothing on the device channel"
    );
    let released = events_of(&api, "device.released").await;
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(released[0]["data"]["serial_number"], dev.serial.as_str());
    s.stop().await;
}
