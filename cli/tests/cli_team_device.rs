//! `pomona team …` and `pomona device …` against an engine serving on loopback, with simulated
//! devices that authenticate (and one that enrolls waiting in Setup Assistant).

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use pomona_sim::device::{Device, DeviceIdentity};
use serde_json::{Value, json};

const KEY: &str = "pomona-cli-team-device-test-key-0123";

async fn pomona(url: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_pomona"))
        .args(args)
        .env("POMONA_URL", url)
        .env("POMONA_API_KEY", KEY)
        .output()
        .await
        .expect("run pomona")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Run a command that must succeed; return its standard output.
async fn ok(url: &str, args: &[&str]) -> String {
    let out = pomona(url, args).await;
    assert!(
        out.status.success(),
        "pomona {args:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Run a command that must succeed and print JSON.
async fn ok_json(url: &str, args: &[&str]) -> Value {
    let out = ok(url, args).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("pomona {args:?}: {e}: {out}"))
}

/// Run a command that must fail; return its standard error.
async fn fails(url: &str, args: &[&str]) -> String {
    let out = pomona(url, args).await;
    assert!(
        !out.status.success(),
        "pomona {args:?} succeeded: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// Poll `pomona device show SERIAL --json` until `ready` accepts it (the setup flow runs in the
/// background).
async fn wait_for_device(url: &str, serial: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = pomona(url, &["device", "show", serial, "--json"]).await;
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            if ready(&v) {
                return v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "device {serial} never became ready: {} {}",
            text(&out.stdout),
            text(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn serials(list: &Value) -> Vec<String> {
    list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["serial_number"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_and_device_subcommands_work_through_the_api() {
    let served = common::Served::start(KEY).await;
    let url = served.url.clone();
    let url = url.as_str();
    let dir = tempfile::tempdir().unwrap();

    // Teams.
    assert_eq!(ok(url, &["team", "list"]).await.trim(), "No teams.");
    assert_eq!(
        ok_json(url, &["team", "list", "--json"]).await,
        json!({"teams": []})
    );

    let steps = dir.path().join("steps.json");
    std::fs::write(
        &steps,
        json!([
            {"id": "name", "command": {"request_type": "Settings", "parameters": {"Settings": [{"Item": "DeviceName", "DeviceName": "Eng Mac"}]}}},
            {"id": "extra", "required": false, "install_profile": "not-in-the-library"}
        ])
        .to_string(),
    )
    .unwrap();
    let steps = steps.to_str().unwrap();
    let out = ok(
        url,
        &[
            "team",
            "put",
            "Eng",
            "--profile",
            "macos=mac-eng",
            "--profile",
            "ipados=ipad-eng",
            "--steps",
            steps,
            "--release-timeout",
            "900",
        ],
    )
    .await;
    assert!(out.contains("Saved team \"Eng\"."), "{out}");
    assert!(out.contains("ipados=ipad-eng, macos=mac-eng"), "{out}");
    assert!(out.contains("900s"), "{out}");

    let eng = ok_json(url, &["team", "show", "Eng", "--json"]).await;
    assert_eq!(eng["name"], "Eng");
    assert_eq!(
        eng["enrollment_profiles"],
        json!({"macos": "mac-eng", "ipados": "ipad-eng"})
    );
    assert_eq!(eng["release_timeout_secs"], 900);
    assert_eq!(eng["setup_steps"][0]["id"], "name");
    assert_eq!(eng["setup_steps"][1]["required"], false);

    let out = ok(url, &["team", "show", "Eng"]).await;
    assert!(out.contains("command Settings"), "{out}");
    assert!(
        out.lines().any(|l| l.contains("extra")
            && l.contains("optional")
            && l.contains("install_profile not-in-the-library")),
        "{out}"
    );

    // The whole body from a file, for a name that needs encoding in the URL.
    let body = dir.path().join("team.json");
    std::fs::write(&body, r#"{"enrollment_profiles": {"tvos": "tv-lobby"}}"#).unwrap();
    let body = body.to_str().unwrap();
    let field = ok_json(url, &["team", "put", "Field Ops", "--file", body, "--json"]).await;
    assert_eq!(field["name"], "Field Ops");
    assert_eq!(field["enrollment_profiles"], json!({"tvos": "tv-lobby"}));
    assert_eq!(field["release_timeout_secs"], Value::Null);

    let list = ok(url, &["team", "list"]).await;
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(lines[0].starts_with("NAME"), "{list}");
    assert!(lines[1].starts_with("Eng "), "{list}");
    assert!(lines[1].contains("900s"), "{list}");
    assert!(lines[2].starts_with("Field Ops "), "{list}");
    assert!(lines[2].contains("tvos=tv-lobby"), "{list}");
    assert!(lines[2].contains("default"), "{list}");
    let list = ok_json(url, &["team", "list", "--json"]).await;
    assert_eq!(list["teams"][1]["name"], "Field Ops");

    // Team errors: the API's message, not its JSON.
    let err = fails(url, &["team", "put", "X", "--profile", "windows=win"]).await;
    assert!(
        err.contains(
            r#"enrollment_profiles: unknown platform "windows": expected one of macos, ios, ipados, tvos"#
        ),
        "{err}"
    );
    assert!(err.contains("400"), "{err}");
    assert!(!err.contains(r#"{"error""#), "{err}");
    let err = fails(url, &["team", "show", "Nope"]).await;
    assert!(err.contains(r#"no team named "Nope""#), "{err}");
    assert!(err.contains("404"), "{err}");
    let err = fails(url, &["team", "put", "X", "--profile", "macos"]).await;
    assert!(err.contains("expected PLATFORM=DEP_PROFILE"), "{err}");
    let err = fails(
        url,
        &[
            "team",
            "put",
            "X",
            "--profile",
            "macos=a",
            "--profile",
            "macos=b",
        ],
    )
    .await;
    assert!(err.contains("--profile macos=… is given twice"), "{err}");
    let err = fails(
        url,
        &["team", "put", "X", "--file", body, "--profile", "macos=a"],
    )
    .await;
    assert!(err.contains("cannot be used with"), "{err}");
    let err = fails(url, &["team", "put", "X", "--steps", body]).await;
    assert!(
        err.contains("expected a JSON array of setup steps"),
        "{err}"
    );
    let bad_step = dir.path().join("bad-step.json");
    std::fs::write(&bad_step, r#"[{"id": "nothing"}]"#).unwrap();
    let err = fails(
        url,
        &["team", "put", "X", "--steps", bad_step.to_str().unwrap()],
    )
    .await;
    assert!(err.contains("setup_steps: step 1: no action"), "{err}");
    let err = fails(url, &["team", "show", "X"]).await;
    assert!(
        err.contains(r#"no team named "X""#),
        "nothing was saved: {err}"
    );

    // Devices: one authenticates, then enrolls waiting in Setup Assistant; another only
    // authenticates.
    let http = reqwest::Client::new();
    let mac = Device::new(
        DeviceIdentity::issue(served.engine.ca(), "cli-test-mac").unwrap(),
        url,
        http.clone(),
    );
    let other = Device::new(
        DeviceIdentity::issue(served.engine.ca(), "cli-test-other").unwrap(),
        url,
        http.clone(),
    );

    // Both identities were issued for verified MachineInfo (as SCEP records after an Automated
    // Device Enrollment): only such evidence links an enrollment to a device record.
    for d in [&mac, &other] {
        let hash = pomona::store::CertHash::of_der(&d.identity.cert.to_der().unwrap());
        let binding = pomona::store::CertBinding {
            udid: d.udid.clone(),
            serial: d.serial.clone(),
            source: pomona::store::BindingSource::MachineInfo,
        };
        served
            .engine
            .store()
            .bind_cert(&hash, &binding)
            .await
            .unwrap();
    }

    let err = fails(url, &["device", "show", "C02UNKNOWN"]).await;
    assert!(
        err.contains(r#"no device with serial number "C02UNKNOWN""#),
        "{err}"
    );
    assert!(err.contains("404"), "{err}");
    assert_eq!(ok(url, &["device", "list"]).await.trim(), "No devices.");

    mac.authenticate().await.unwrap();
    other.authenticate().await.unwrap();
    wait_for_device(url, &mac.serial, |v| v["device"]["stage"] == "enrolling").await;
    wait_for_device(url, &other.serial, |v| v["device"]["stage"] == "enrolling").await;

    let err = fails(url, &["device", "team", &mac.serial, "Nope"]).await;
    assert!(err.contains(r#"no team named "Nope""#), "{err}");
    let err = fails(url, &["device", "team", &mac.serial]).await;
    assert!(err.contains("--none"), "{err}");
    let err = fails(url, &["device", "team", "C02UNKNOWN", "Eng"]).await;
    assert!(
        err.contains(r#"no device with serial number "C02UNKNOWN""#),
        "{err}"
    );
    let out = ok(url, &["device", "team", &mac.serial, "Eng"]).await;
    assert_eq!(out.trim(), format!("Moved {} to team \"Eng\".", mac.serial));
    let moved = ok_json(url, &["device", "team", &other.serial, "Eng", "--json"]).await;
    assert_eq!(moved["device"]["team"], "Eng");
    assert_eq!(moved["device"]["placed_by"], "admin");
    assert_eq!(moved["reassigned_profile"], Value::Null);
    let out = ok(url, &["device", "team", &other.serial, "--none"]).await;
    assert_eq!(
        out.trim(),
        format!("Took {} out of its team.", other.serial)
    );

    let err = fails(url, &["device", "setup", &other.serial]).await;
    assert!(err.contains("has no setup"), "{err}");
    let err = fails(url, &["device", "release", &other.serial]).await;
    assert!(
        err.contains(&format!("device {:?} has not enrolled", other.serial)),
        "{err}"
    );
    assert!(err.contains("409"), "{err}");

    // The Mac enrolls and gets its team's steps.
    mac.token_update(true).await.unwrap();
    let shown = wait_for_device(url, &mac.serial, |v| {
        v["device"]["stage"] == "enrolled" && v["setup"].is_object()
    })
    .await;
    assert_eq!(shown["enrollment"]["awaiting_configuration"], true);
    let out = ok(url, &["device", "show", &mac.serial]).await;
    assert!(
        out.contains(&format!("Serial number: {}", mac.serial)),
        "{out}"
    );
    assert!(out.contains("Stage:         enrolled"), "{out}");
    assert!(
        out.contains("Team:          Eng (placed by admin)"),
        "{out}"
    );
    assert!(out.contains("Model:         Mac14,2"), "{out}");
    assert!(out.contains("awaiting configuration"), "{out}");
    assert!(out.contains("Setup:         running"), "{out}");

    let setup = ok_json(url, &["device", "setup", &mac.serial, "--json"]).await;
    assert_eq!(setup["steps_by"], "default");
    assert_eq!(setup["timeout_secs"], 900);
    assert_eq!(setup["steps"][0]["id"], "name");
    let out = ok(url, &["device", "setup", &mac.serial]).await;
    assert!(out.contains("Steps by:      default"), "{out}");
    assert!(out.contains("Timeout:       900s"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("name") && l.contains("command Settings")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("extra") && l.contains("optional")),
        "{out}"
    );

    // Release by hand.
    let out = ok(url, &["device", "release", &mac.serial]).await;
    assert!(
        out.starts_with(&format!("Released {}: DeviceConfigured ", mac.serial)),
        "{out}"
    );
    assert!(out.contains("(queued)"), "{out}");
    let setup = ok_json(url, &["device", "setup", &mac.serial, "--json"]).await;
    assert_eq!(setup["state"], "released");
    assert_eq!(setup["by"], "admin");
    assert_eq!(setup["reason"], "released by an admin");
    let out = ok(url, &["device", "setup", &mac.serial]).await;
    assert!(
        out.contains("State:         released by admin at "),
        "{out}"
    );
    assert!(out.contains(": released by an admin"), "{out}");
    let err = fails(url, &["device", "release", "C02UNKNOWN"]).await;
    assert!(
        err.contains(r#"no device with serial number "C02UNKNOWN""#),
        "{err}"
    );

    // Lists, filters and pages.
    let mut both = vec![mac.serial.clone(), other.serial.clone()];
    both.sort();
    let list = ok_json(url, &["device", "list", "--json"]).await;
    assert_eq!(serials(&list), both);
    let out = ok(url, &["device", "list"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("SERIAL"), "{out}");
    assert!(lines[1].starts_with(&both[0]), "{out}");
    assert!(lines[2].starts_with(&both[1]), "{out}");
    let mac_line = lines.iter().find(|l| l.starts_with(&mac.serial)).unwrap();
    assert!(mac_line.contains(" released "), "{out}");
    assert!(mac_line.contains("Eng"), "{out}");
    assert!(mac_line.contains("admin"), "{out}");

    let list = ok_json(url, &["device", "list", "--team", "Eng", "--json"]).await;
    assert_eq!(serials(&list), [mac.serial.as_str()]);
    let list = ok_json(url, &["device", "list", "--team", "", "--json"]).await;
    assert_eq!(serials(&list), [other.serial.as_str()]);
    let list = ok_json(url, &["device", "list", "--stage", "enrolling", "--json"]).await;
    assert_eq!(serials(&list), [other.serial.as_str()]);
    let list = ok_json(url, &["device", "list", "--stage", "released", "--json"]).await;
    assert_eq!(serials(&list), [mac.serial.as_str()]);
    let list = ok_json(url, &["device", "list", "--dep-server", "hq", "--json"]).await;
    assert_eq!(serials(&list), Vec::<String>::new());
    let err = fails(url, &["device", "list", "--stage", "lost"]).await;
    assert!(err.contains("invalid value 'lost'"), "{err}");

    let out = pomona(url, &["device", "list", "--limit", "1"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(page.len(), 2, "{page:?}");
    assert!(page[1].starts_with(&both[0]), "{page:?}");
    assert!(
        text(&out.stderr).contains(&format!("pass --after {}, or --all", both[0])),
        "{}",
        text(&out.stderr)
    );
    let list = ok_json(url, &["device", "list", "--limit", "1", "--json"]).await;
    assert_eq!(serials(&list), [both[0].as_str()]);
    assert_eq!(list["next"], both[0].as_str());
    assert_eq!(list["next_after"], both[0].as_str());
    let list = ok_json(
        url,
        &[
            "device", "list", "--limit", "1", "--after", &both[0], "--json",
        ],
    )
    .await;
    assert_eq!(serials(&list), [both[1].as_str()]);
    let list = ok_json(url, &["device", "list", "--limit", "1", "--all", "--json"]).await;
    assert_eq!(serials(&list), both);
    assert_eq!(list["next"], Value::Null);
    assert_eq!(list["next_after"], Value::Null);
    let out = pomona(url, &["device", "list", "--limit", "1", "--all"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 3);
    assert!(
        !text(&out.stderr).contains("--after"),
        "{}",
        text(&out.stderr)
    );

    // Deleting teams.
    let out = ok(url, &["team", "delete", "Field Ops"]).await;
    assert_eq!(out.trim(), "Deleted team \"Field Ops\".");
    let err = fails(url, &["team", "delete", "Field Ops"]).await;
    assert!(err.contains(r#"no team named "Field Ops""#), "{err}");
    let list = ok_json(url, &["team", "list", "--json"]).await;
    assert_eq!(list["teams"].as_array().unwrap().len(), 1);

    // No key: the same precise error as the other remote commands.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pomona"))
        .args(["team", "list"])
        .env("POMONA_URL", url)
        .env_remove("POMONA_API_KEY")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no admin API key"),
        "{}",
        text(&out.stderr)
    );

    served.stop().await;
}
