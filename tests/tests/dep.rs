//! DEP / Apple Business Manager end to end against the fake ABM.

use std::time::Duration;

use pomona::dep::DepOptions;
use pomona_testkit::abm::FakeAbm;
use pomona_testkit::api::ApiClient;
use pomona_testkit::server::{ServeProcess, TEST_API_KEY, TestServer};
use serde_json::{Value, json};

async fn put_token(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    server: &str,
    p7m: Vec<u8>,
    force: bool,
) -> (u16, Value) {
    let q = if force { "?force=1" } else { "" };
    let r = client
        .put(format!("{url}/v1/dep/servers/{server}/token{q}"))
        .bearer_auth(key)
        .body(p7m)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Create a server, upload its token, point it at the fake, set a default profile.
async fn setup(api: &ApiClient, client: &reqwest::Client, url: &str, key: &str, abm: &FakeAbm) {
    let r = api
        .post_json("/v1/dep/servers", &json!({"name": "main"}))
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["token_state"], "missing");
    let cert = client
        .get(format!("{url}/v1/dep/servers/main/certificate"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(cert.starts_with(b"-----BEGIN CERTIFICATE-----"));
    let (status, j) = put_token(
        client,
        url,
        key,
        "main",
        abm.token_for(&cert).unwrap(),
        false,
    )
    .await;
    assert_eq!(status, 200, "{j}");
    assert_eq!(j["token_state"], "valid");
    let r = client
        .put(format!("{url}/v1/dep/profiles/standard"))
        .bearer_auth(key)
        .json(&json!({"profile_name": "Standard", "is_supervised": true, "await_device_configured": true, "skip_setup_items": ["Siri"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .patch(format!("{url}/v1/dep/servers/main"))
        .bearer_auth(key)
        .json(&json!({"base_url": abm.url, "default_profile": "standard", "sync_interval_secs": 0, "default_teams": {"macos": "Mac fleet"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

struct Rig {
    abm: FakeAbm,
    server: TestServer,
}

async fn rig(page: u32) -> Rig {
    let abm = FakeAbm::start(page).await.unwrap();
    let server = TestServer::start_with(|b| {
        let mut o = DepOptions::new("http://unused");
        o.failed_retry = Duration::from_millis(100);
        o.throttle_cooldown = Duration::from_millis(200);
        o.api_backoff = Duration::from_millis(5);
        b.dep_options(o)
    })
    .await
    .unwrap();
    setup(
        &server.api(),
        &server.client,
        &server.url,
        TEST_API_KEY,
        &abm,
    )
    .await;
    Rig { abm, server }
}

async fn sync(r: &Rig, full: bool) -> Value {
    let q = if full { "?full=1" } else { "" };
    let res = r
        .server
        .api()
        .post_json(&format!("/v1/dep/servers/main/sync{q}"), &json!({}))
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.json);
    res.json
}

async fn device(r: &Rig, serial: &str) -> Value {
    let res = r
        .server
        .api()
        .get(&format!(
            "/v1/dep/devices?server=main&serial_number={serial}"
        ))
        .await
        .unwrap();
    res.json["devices"][0].clone()
}

#[tokio::test]
async fn initial_fetch_assigns_every_device_with_minimal_calls() {
    let abm = FakeAbm::start(10).await.unwrap();
    for i in 0..25 {
        abm.add(
            &format!("SN{i:03}"),
            if i % 2 == 0 { "Mac" } else { "iPad" },
        );
    }
    let server = TestServer::start().await.unwrap();
    setup(
        &server.api(),
        &server.client,
        &server.url,
        TEST_API_KEY,
        &abm,
    )
    .await;
    let r = Rig { abm, server };
    let report = sync(&r, false).await;
    assert_eq!(report["pages"], 3, "pages of the advertised size: {report}");
    assert_eq!(report["queued"], 25);
    for i in 0..25 {
        let serial = format!("SN{i:03}");
        assert_eq!(
            r.abm.assignments(&serial).len(),
            1,
            "{serial} assigned once"
        );
        let d = device(&r, &serial).await;
        assert_eq!(d["assign_result"], "SUCCESS");
        assert_eq!(d["assigned_profile"], "standard");
        assert_eq!(d["server"], "main");
        assert_eq!(d["serial_number"], serial.as_str());
    }
    assert_eq!(
        r.abm.calls("/profile/devices"),
        1,
        "one assignment call for 25 devices"
    );
    assert_eq!(r.abm.calls("/profile"), 1, "the profile is defined once");
    assert_eq!(r.abm.calls("/session"), 1, "one session per token");
    let profile = r
        .abm
        .state
        .lock()
        .unwrap()
        .profiles
        .values()
        .next()
        .cloned()
        .unwrap();
    assert_eq!(
        profile.url.as_deref(),
        Some(format!("{}/mdm/enroll", r.server.url).as_str())
    );
    assert_eq!(profile.is_mdm_removable, None, "never an accidental false");
    let s = r.server.api().get("/v1/dep/servers/main").await.unwrap();
    assert_eq!(s.json["phase"], "sync");
    assert!(s.json["last_sync_at"].is_string());
    // Nothing new: a sync is cheap and assigns nothing more.
    let report = sync(&r, false).await;
    assert_eq!(report["queued"], 0);
    assert_eq!(r.abm.calls("/profile/devices"), 1);
}

#[tokio::test]
async fn added_moved_in_released_and_deleted_devices() {
    let r = rig(10).await;
    r.abm.add("A1", "Mac");
    r.abm.add("A2", "Mac");
    sync(&r, false).await;
    r.abm.add("NEW", "iPhone");
    r.abm.modify("MOVED", "empty"); // moved to us from another MDM server: unknown locally
    r.abm.modify("A1", "removed"); // released: back from `removed`
    r.abm.delete("A2");
    sync(&r, false).await;
    assert_eq!(r.abm.assignments("NEW").len(), 1);
    assert_eq!(
        r.abm.assignments("MOVED").len(),
        1,
        "modified but unknown: assigned"
    );
    assert_eq!(
        r.abm.assignments("A1").len(),
        2,
        "re-assigned after removal"
    );
    assert_eq!(r.abm.assignments("A2").len(), 1, "deleted: not re-assigned");
    assert_eq!(device(&r, "A2").await["present"], false);
    let events = r
        .server
        .api()
        .get("/v1/events?after=0&limit=1000")
        .await
        .unwrap();
    let kinds: Vec<String> = events.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    for k in [
        "dep.device.added",
        "dep.device.modified",
        "dep.device.deleted",
        "device.assigned",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
    let unknown = events.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["data"]["unknown_modified"] == true);
    assert!(unknown, "a modified-but-unknown device is flagged");
}

#[tokio::test]
async fn session_expiry_reauthenticates_once() {
    let r = rig(10).await;
    r.abm.add("S1", "Mac");
    sync(&r, false).await;
    r.abm.faults(|f| f.expire_session = true);
    r.abm.add("S2", "Mac");
    sync(&r, false).await;
    assert_eq!(r.abm.calls("/session"), 2);
    assert_eq!(r.abm.assignments("S2").len(), 1);
}

#[tokio::test]
async fn same_cursor_more_to_follow_does_not_spin() {
    let r = rig(5).await;
    for i in 0..20 {
        r.abm.add(&format!("C{i:02}"), "Mac");
    }
    r.abm.faults(|f| f.same_cursor_once = true);
    let report = sync(&r, false).await;
    assert_eq!(report["same_cursor"], true);
    assert_eq!(
        report["pages"], 2,
        "stops at the repeated cursor instead of looping"
    );
    let report = sync(&r, false).await;
    assert_eq!(report["same_cursor"], false);
    for i in 0..20 {
        assert_eq!(r.abm.assignments(&format!("C{i:02}")).len(), 1);
    }
}

#[tokio::test]
async fn expired_and_invalid_cursors_restart_a_full_fetch() {
    let r = rig(10).await;
    r.abm.add("E1", "Mac");
    sync(&r, false).await;
    let fetches = r.abm.calls("/server/devices");
    for fault in ["expired", "invalid"] {
        r.abm.faults(|f| {
            if fault == "expired" {
                f.expired_cursor_once = true
            } else {
                f.invalid_cursor_once = true
            }
        });
        sync(&r, false).await;
    }
    assert_eq!(
        r.abm.calls("/server/devices"),
        fetches + 2,
        "each refused cursor starts a full fetch"
    );
    assert_eq!(
        r.abm.assignments("E1").len(),
        1,
        "re-fetched devices are not re-assigned"
    );
}

#[tokio::test]
async fn throttled_failed_and_not_accessible_devices() {
    let r = rig(10).await;
    r.abm.add("T1", "Mac");
    r.abm.add("N1", "Mac");
    r.abm.faults(|f| {
        f.throttle.insert("T1".into(), 1);
        f.not_accessible.insert("N1".into());
    });
    sync(&r, false).await;
    let t = device(&r, "T1").await;
    assert_eq!(t["assign_result"], "THROTTLED");
    assert!(t["next_assign_at"].is_string());
    let n = device(&r, "N1").await;
    assert_eq!(n["assign_result"], "NOT_ACCESSIBLE");
    assert!(n["next_assign_at"].is_null(), "not ours any more: no retry");
    let throttled = r
        .server
        .api()
        .get("/v1/dep/devices?assign_result=THROTTLED")
        .await
        .unwrap();
    assert_eq!(throttled.json["devices"].as_array().unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(250)).await;
    r.server.engine.dep().assign_due("main").await.unwrap();
    assert_eq!(device(&r, "T1").await["assign_result"], "SUCCESS");
    assert_eq!(r.abm.assignments("T1").len(), 1);
    // Transient API failures (5xx) are retried by the client.
    r.abm.add("F1", "Mac");
    r.abm.faults(|f| f.fail_5xx = 2);
    sync(&r, false).await;
    assert_eq!(device(&r, "F1").await["assign_result"], "SUCCESS");
}

#[tokio::test]
async fn terms_not_signed_is_a_token_state() {
    let r = rig(10).await;
    r.abm.faults(|f| f.terms_not_signed = true);
    let res = r
        .server
        .api()
        .post_json("/v1/dep/servers/main/sync", &json!({}))
        .await
        .unwrap();
    assert_eq!(res.status, 502);
    assert!(
        res.json["error"]
            .as_str()
            .unwrap()
            .contains("T_C_NOT_SIGNED")
    );
    let s = r.server.api().get("/v1/dep/servers/main").await.unwrap();
    assert_eq!(s.json["token_state"], "terms_not_signed");
    r.abm.faults(|f| f.terms_not_signed = false);
    sync(&r, false).await;
    let s = r.server.api().get("/v1/dep/servers/main").await.unwrap();
    assert_eq!(s.json["token_state"], "valid");
}

#[tokio::test]
async fn another_servers_token_is_refused_unless_forced() {
    let r = rig(10).await;
    let other = FakeAbm::start(10).await.unwrap();
    let c = &r.server.client;
    let cert = c
        .get(format!("{}/v1/dep/servers/main/certificate", r.server.url))
        .bearer_auth(TEST_API_KEY)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let (status, j) = put_token(
        c,
        &r.server.url,
        TEST_API_KEY,
        "main",
        other.token_for(&cert).unwrap(),
        false,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        j["error"].as_str().unwrap().contains("another DEP server"),
        "{j}"
    );
    let (status, _) = put_token(
        c,
        &r.server.url,
        TEST_API_KEY,
        "main",
        other.token_for(&cert).unwrap(),
        true,
    )
    .await;
    assert_eq!(status, 200);
    let (status, j) = put_token(
        c,
        &r.server.url,
        TEST_API_KEY,
        "main",
        b"not a token".to_vec(),
        true,
    )
    .await;
    assert_eq!(status, 400, "{j}");
}

#[tokio::test]
async fn manual_assignment_and_profile_changes() {
    let r = rig(10).await;
    r.abm.add("M1", "Mac");
    sync(&r, false).await;
    let api = r.server.api();
    let res = r
        .server
        .client
        .put(format!("{}/v1/dep/profiles/kiosk", r.server.url))
        .bearer_auth(TEST_API_KEY)
        .json(&json!({"profile_name": "Kiosk", "is_mandatory": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = api
        .post_json(
            "/v1/dep/servers/main/assign",
            &json!({"profile": "kiosk", "serials": ["M1"]}),
        )
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.json);
    assert_eq!(res.json["devices"][0]["assigned_profile"], "kiosk");
    assert_eq!(res.json["devices"][0]["assign_result"], "SUCCESS");
    assert_eq!(r.abm.assignments("M1").len(), 2);
    // Changing the template defines it again (new UUID) and re-assigns its devices.
    r.server
        .client
        .put(format!("{}/v1/dep/profiles/kiosk", r.server.url))
        .bearer_auth(TEST_API_KEY)
        .json(&json!({"profile_name": "Kiosk v2", "is_mandatory": true}))
        .send()
        .await
        .unwrap();
    r.server.engine.dep().assign_due("main").await.unwrap();
    let a = r.abm.assignments("M1");
    assert_eq!(a.len(), 3);
    assert_ne!(a[1], a[2], "a changed profile gets a new UUID");
    let res = api
        .post_json(
            "/v1/dep/servers/main/assign",
            &json!({"profile": "nope", "serials": ["M1"]}),
        )
        .await
        .unwrap();
    assert_eq!(res.status, 404);
    let profiles = api.get("/v1/dep/profiles").await.unwrap();
    assert_eq!(profiles.json["profiles"].as_array().unwrap().len(), 2);
}

/// Kill the engine (SIGKILL) after a page is committed but while its assignment is in flight;
/// after a restart every device is assigned exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_commit_and_assignment_replays_the_work() {
    let abm = FakeAbm::start(50).await.unwrap();
    for i in 0..40 {
        abm.add(&format!("K{i:02}"), "Mac");
    }
    let dir = tempfile::tempdir().unwrap();
    let key = "dep-crash-api-key-0123456789";
    let env = [("POMONA_API_KEY", key)];
    let data = dir.path().join("data");
    let mut p = ServeProcess::start(&data, &env, &[]).await.unwrap();
    let client = reqwest::Client::new();
    let api = ApiClient::new(&p.url, key, client.clone());
    setup(&api, &client, &p.url, key, &abm).await;
    abm.faults(|f| f.delay = Duration::from_millis(0));
    // Hold the assignment call: the page is committed, the assignment is in flight.
    {
        let mut s = abm.state.lock().unwrap();
        s.faults.delay = Duration::ZERO;
    }
    let slow = abm.state.clone();
    let sync_url = format!("{}/v1/dep/servers/main/sync", p.url);
    let c2 = client.clone();
    let request = tokio::spawn(async move {
        let _ = c2.post(sync_url).bearer_auth(key).send().await;
    });
    // Wait for the page commit (the fetch call), then slow everything down and kill.
    for _ in 0..200 {
        if slow
            .lock()
            .unwrap()
            .calls
            .get("/server/devices")
            .copied()
            .unwrap_or(0)
            >= 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    slow.lock().unwrap().faults.delay = Duration::from_secs(10);
    for _ in 0..500 {
        if slow
            .lock()
            .unwrap()
            .calls
            .get("/profile/devices")
            .copied()
            .unwrap_or(0)
            >= 1
            || slow
                .lock()
                .unwrap()
                .calls
                .get("/profile")
                .copied()
                .unwrap_or(0)
                >= 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    p.kill().await.unwrap();
    let _ = request.await;
    assert!(
        abm.assignments("K00").is_empty(),
        "killed before the assignment happened"
    );
    slow.lock().unwrap().faults.delay = Duration::ZERO;

    let p = ServeProcess::start(&data, &env, &[]).await.unwrap();
    let api = ApiClient::new(&p.url, key, client);
    let d = api
        .get("/v1/dep/devices?server=main&limit=1000")
        .await
        .unwrap();
    assert_eq!(
        d.json["devices"].as_array().unwrap().len(),
        40,
        "the committed page survived"
    );
    assert!(
        d.json["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["assign_result"].is_null()),
        "work pending"
    );
    let res = api
        .post_json("/v1/dep/servers/main/sync", &json!({}))
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.json);
    for i in 0..40 {
        assert_eq!(
            abm.assignments(&format!("K{i:02}")).len(),
            1,
            "K{i:02} assigned exactly once"
        );
    }
}

/// `pomona dep …` run as a child process against an engine, without blocking the test's runtime
/// (the fake ABM answers the engine on that runtime).
struct DepCli {
    bin: std::path::PathBuf,
    url: String,
    key: &'static str,
}

impl DepCli {
    async fn run(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new(&self.bin)
            .arg("dep")
            .args(args)
            .args(["--url", &self.url, "--api-key", self.key])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "pomona dep {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The admin's path through the CLI against `pomona serve`: create a server, download its
/// certificate, upload the token, define a profile, set it as default, sync, see devices assigned.
#[tokio::test]
async fn the_pomona_dep_cli_end_to_end() {
    let abm = FakeAbm::start(10).await.unwrap();
    abm.add("CLI1", "Mac");
    abm.add("CLI2", "iPad");
    let dir = tempfile::tempdir().unwrap();
    let key = "dep-cli-api-key-0123456789";
    let p = ServeProcess::start(&dir.path().join("data"), &[("POMONA_API_KEY", key)], &[])
        .await
        .unwrap();
    let cli = DepCli {
        bin: pomona_testkit::server::sibling_binary("pomona").unwrap(),
        url: p.url.clone(),
        key,
    };
    cli.run(&["create", "hq"]).await;
    let cert = dir.path().join("hq.pem");
    cli.run(&["certificate", "hq", "--out", cert.to_str().unwrap()])
        .await;
    let token = dir.path().join("hq.p7m");
    std::fs::write(
        &token,
        abm.token_for(&std::fs::read(&cert).unwrap()).unwrap(),
    )
    .unwrap();
    let uploaded = cli.run(&["token", "hq", token.to_str().unwrap()]).await;
    assert!(uploaded.contains("\"token_state\":\"valid\""), "{uploaded}");
    let profile = dir.path().join("standard.json");
    std::fs::write(
        &profile,
        r#"{"profile_name": "Standard", "is_supervised": true}"#,
    )
    .unwrap();
    cli.run(&["profile", "standard", profile.to_str().unwrap()])
        .await;
    cli.run(&[
        "set",
        "hq",
        "--base-url",
        &abm.url,
        "--default-profile",
        "standard",
        "--sync-interval-secs",
        "0",
        "--team",
        "macos=Mac fleet",
    ])
    .await;
    let report = cli.run(&["sync", "hq"]).await;
    assert!(report.contains("\"queued\": 2"), "{report}");
    let devices = cli
        .run(&["devices", "--server", "hq", "--result", "SUCCESS"])
        .await;
    assert!(
        devices.contains("CLI1") && devices.contains("CLI2"),
        "{devices}"
    );
    let shown = cli.run(&["show", "hq"]).await;
    assert!(shown.contains("\"macos\": \"Mac fleet\""), "{shown}");
}

async fn put_plugin(r: &Rig, name: &str, query: &str, source: impl AsRef<[u8]>) -> (u16, Value) {
    let res = r
        .server
        .client
        .put(format!("{}/v1/plugins/{name}{query}", r.server.url))
        .bearer_auth(TEST_API_KEY)
        .body(source.as_ref().to_vec())
        .send()
        .await
        .unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

/// A Lua plugin uploaded through the API decides which profile each device gets; a hostile
/// plugin ahead of it is contained and falls through; removing the plugin restores the default.
#[tokio::test]
async fn uploaded_plugins_change_auto_assignment() {
    let r = rig(10).await;
    let res = r
        .server
        .api()
        .put_json("/v1/dep/profiles/ipads", &json!({"profile_name": "iPads"}))
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.json);
    let (status, j) = put_plugin(
        &r,
        "looper",
        "?config.note=x",
        "return { auto_assign = function() while true do end end }",
    )
    .await;
    assert_eq!(status, 200, "{j}");
    let (status, j) = put_plugin(
        &r,
        "by-family",
        "?hooks=auto-assign",
        r#"return { auto_assign = function(e)
             if e.device_family == "iPad" then return { assign = "ipads" } end
             if e.serial_number:sub(1, 4) == "SKIP" then return { skip = true } end
           end }"#,
    )
    .await;
    assert_eq!(status, 200, "{j}");
    assert_eq!(j["runtime"], "lua");
    assert_eq!(j["hooks"], json!(["auto-assign"]));
    let (status, j) = put_plugin(&r, "broken", "", "return {").await;
    assert_eq!(status, 400, "{j}");
    assert!(j.to_string().contains("broken"), "{j}");

    r.abm.add("PAD1", "iPad");
    r.abm.add("MAC1", "Mac");
    r.abm.add("SKIP1", "Mac");
    sync(&r, false).await;
    assert_eq!(device(&r, "PAD1").await["assigned_profile"], "ipads");
    assert_eq!(
        device(&r, "MAC1").await["assigned_profile"],
        "standard",
        "no opinion: the default"
    );
    assert_eq!(device(&r, "SKIP1").await["assigned_profile"], Value::Null);

    let list = r.server.api().get("/v1/plugins").await.unwrap().json;
    let names: Vec<_> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(names, [json!("looper"), json!("by-family")]);
    assert_eq!(list["plugins"][0]["stats"]["limit_hits"], 3, "{list}");
    assert_eq!(list["plugins"][1]["stats"]["decisions"], 2, "{list}");
    let events = r
        .server
        .api()
        .get("/v1/events?after=0&limit=1000")
        .await
        .unwrap()
        .json;
    let failed: Vec<_> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "plugin.failed")
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "one event per plugin per minute, counters for every call"
    );
    assert_eq!(failed[0]["data"]["plugin"], "looper");

    let res = r
        .server
        .api()
        .delete("/v1/plugins/by-family")
        .await
        .unwrap();
    assert_eq!(res.status, 204);
    assert_eq!(
        r.server
            .api()
            .delete("/v1/plugins/by-family")
            .await
            .unwrap()
            .status,
        404
    );
    r.abm.add("PAD2", "iPad");
    sync(&r, false).await;
    assert_eq!(device(&r, "PAD2").await["assigned_profile"], "standard");
}

/// A Rust plugin compiled to a WASM component, uploaded through the API, assigns profiles by the
/// rules in its configuration; a hostile component behind it is contained by its limits.
#[tokio::test]
async fn an_uploaded_wasm_plugin_assigns_by_rules() {
    let r = rig(10).await;
    let res = r
        .server
        .api()
        .put_json("/v1/dep/profiles/ipads", &json!({"profile_name": "iPads"}))
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.json);
    let rules = include_bytes!("../../plugins/dist/auto-assign-rules.wasm");
    let (status, j) = put_plugin(
        &r,
        "rules",
        "?config.family.iPad=ipads&config.serial.SKIP=@skip",
        rules,
    )
    .await;
    assert_eq!(status, 200, "{j}");
    assert_eq!(j["runtime"], "wasm");
    assert_eq!(j["hooks"], json!(["auto-assign"]));
    let hostile = include_bytes!("../../plugins/dist/test-guest.wasm");
    let (status, j) = put_plugin(&r, "hostile", "?config.hooks=auto-assign", hostile).await;
    assert_eq!(status, 200, "{j}");
    let (status, j) = put_plugin(&r, "half", "", &rules[..rules.len() / 2]).await;
    assert_eq!(status, 400, "a truncated component is refused: {j}");

    r.abm.add("PAD1", "iPad");
    r.abm.add("SKIP1", "Mac");
    r.abm.add("loop", "Mac");
    r.abm.add("alloc", "Mac");
    sync(&r, false).await;
    assert_eq!(device(&r, "PAD1").await["assigned_profile"], "ipads");
    assert_eq!(device(&r, "SKIP1").await["assigned_profile"], Value::Null);
    for serial in ["loop", "alloc"] {
        assert_eq!(
            device(&r, serial).await["assigned_profile"],
            "standard",
            "{serial}: the hostile plugin hit a limit, so the default decided"
        );
    }
    let list = r.server.api().get("/v1/plugins").await.unwrap().json;
    let stats = |i: usize| list["plugins"][i]["stats"].clone();
    assert_eq!(list["plugins"][0]["name"], "rules", "{list}");
    assert_eq!(stats(0)["decisions"], 2, "{list}");
    assert_eq!(stats(1)["limit_hits"], 2, "{list}");
}

/// Teams decide enrollment profiles: synced devices land in their server's default team for
/// their platform, get that team's profile instead of the server's default, and a device moved
/// to another team before it enrolls is re-assigned the new team's profile.
#[tokio::test]
async fn teams_decide_enrollment_profiles_at_sync() {
    let r = rig(10).await;
    let api = r.server.api();
    for (name, profile) in [("mac-eng", "Eng Macs"), ("mac-lab", "Lab Macs")] {
        let res = api
            .put_json(
                &format!("/v1/dep/profiles/{name}"),
                &json!({"profile_name": profile}),
            )
            .await
            .unwrap();
        assert_eq!(res.status, 200, "{}", res.json);
    }
    for (team, profile) in [("Eng", "mac-eng"), ("Lab", "mac-lab")] {
        let res = api
            .put_json(
                &format!("/v1/teams/{team}"),
                &json!({"enrollment_profiles": {"macos": profile}}),
            )
            .await
            .unwrap();
        assert_eq!(res.status, 200, "{}", res.json);
    }
    let res = r
        .server
        .client
        .patch(format!("{}/v1/dep/servers/main", r.server.url))
        .bearer_auth(TEST_API_KEY)
        .json(&json!({"default_teams": {"macos": "Eng"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    r.abm.add("MAC1", "Mac");
    r.abm.add("PAD1", "iPad");
    sync(&r, false).await;
    assert_eq!(device(&r, "MAC1").await["assigned_profile"], "mac-eng");
    assert_eq!(
        device(&r, "PAD1").await["assigned_profile"],
        "standard",
        "no default team for iPads: the server's default profile"
    );
    let d = api.get("/v1/devices/MAC1").await.unwrap().json;
    assert_eq!(d["device"]["team"], "Eng", "{d}");
    assert_eq!(d["device"]["placed_by"], "default");
    assert_eq!(d["device"]["stage"], "synced");
    assert_eq!(d["dep"]["assigned_profile"], "mac-eng");

    let res = api
        .put_json("/v1/devices/MAC1/team", &json!({"team": "Lab"}))
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.json);
    assert_eq!(res.json["reassigned_profile"], "mac-lab");
    assert_eq!(device(&r, "MAC1").await["assigned_profile"], "mac-lab");
    // The next sync keeps the admin's choice.
    r.abm.modify("MAC1", "assigned");
    sync(&r, false).await;
    let d = api.get("/v1/devices/MAC1").await.unwrap().json;
    assert_eq!(d["device"]["team"], "Lab");
    let placed: Vec<Value> = api.get("/v1/events?after=0&limit=1000").await.unwrap().json["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "device.placed")
        .cloned()
        .collect();
    assert_eq!(placed.len(), 2, "{placed:?}");
    assert_eq!(placed[1]["data"]["by"], "admin");

    // A plugin moves an already assigned device to another team: it gets that team's profile.
    r.abm.add("MAC3", "Mac");
    sync(&r, false).await;
    assert_eq!(device(&r, "MAC3").await["assigned_profile"], "mac-eng");
    let (status, j) = put_plugin(
        &r,
        "movers",
        "",
        r#"return { place = function(d) if d.serial_number == "MAC3" then return { team = "Lab" } end end }"#,
    )
    .await;
    assert_eq!(status, 200, "{j}");
    r.abm.modify("MAC3", "assigned");
    sync(&r, false).await;
    assert_eq!(device(&r, "MAC3").await["assigned_profile"], "mac-lab");
    let d = api.get("/v1/devices/MAC3").await.unwrap().json;
    assert_eq!(d["device"]["placed_by"], "movers");

    // Changing a team's enrollment profile re-assigns its devices that have not enrolled.
    let res = api
        .put_json(
            "/v1/teams/Lab",
            &json!({"enrollment_profiles": {"macos": "mac-eng"}}),
        )
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.json);
    assert_eq!(res.json["reassigned"], 2, "MAC1 and MAC3: {}", res.json);
    assert_eq!(device(&r, "MAC1").await["assigned_profile"], "mac-eng");
    assert_eq!(device(&r, "MAC3").await["assigned_profile"], "mac-eng");
    let res = api
        .put_json(
            "/v1/teams/Lab",
            &json!({"enrollment_profiles": {"macos": "mac-eng"}}),
        )
        .await
        .unwrap();
    assert_eq!(res.json["reassigned"], 0, "nothing changed");
}

/// A plugin that answers `retry_after` is asked again once that time has passed (durably: the
/// re-ask time is stored with the device), and its later answer is assigned.
#[tokio::test]
async fn retry_after_asks_the_plugin_again_later() {
    let r = rig(10).await;
    let until = time::OffsetDateTime::now_utc().unix_timestamp() + 2;
    let (status, j) = put_plugin(
        &r,
        "later",
        &format!("?config.until={until}"),
        r#"return { auto_assign = function(e)
             if pomona.now() < tonumber(pomona.config["until"]) then return { retry_after = 1 } end
             return { assign = "standard" }
           end }"#,
    )
    .await;
    assert_eq!(status, 200, "{j}");
    r.abm.add("WAIT1", "Mac");
    sync(&r, false).await;
    let d = device(&r, "WAIT1").await;
    assert_eq!(d["assigned_profile"], Value::Null, "not yet: {d}");
    assert!(d["reask_at"].is_string(), "{d}");
    assert!(r.abm.assignments("WAIT1").is_empty());
    r.server.engine.dep().tick().await;
    assert_eq!(
        device(&r, "WAIT1").await["assigned_profile"],
        Value::Null,
        "asked too early: still waiting"
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    r.server.engine.dep().tick().await;
    let d = device(&r, "WAIT1").await;
    assert_eq!(d["assigned_profile"], "standard", "{d}");
    assert_eq!(d["reask_at"], Value::Null);
    assert_eq!(
        r.abm.assignments("WAIT1").len(),
        1,
        "assigned with Apple once"
    );
}
