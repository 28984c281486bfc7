//! The real `pomona serve` binary: first start on an empty data dir, restarts, graceful
//! shutdown, and a SIGKILL in the middle of a burst of command acknowledgements.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pomona_testkit::api::ApiClient;
use pomona_testkit::device::{Device, DeviceIdentity};
use pomona_testkit::server::{ServeCa, ServeProcess};

#[tokio::test]
async fn first_start_creates_state_and_restarts_keep_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut p = ServeProcess::start(&data, &[], &[]).await.unwrap();
    let key_file = data.join("api.key");
    let key = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(key.len() >= 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["api.key", "seal.key"] {
            let mode = std::fs::metadata(data.join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f} must be private");
        }
    }
    assert!(data.join("pomona.redb").exists());
    let client = reqwest::Client::new();
    let api = ApiClient::new(&p.url, &key, client.clone());
    assert_eq!(api.get("/v1/enrollments").await.unwrap().status, 200);
    let r = client
        .get(format!("{}/v1/enrollments", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let status = p.terminate().await.unwrap();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");

    // Restart: same key, same CA (the data dir is the whole state).
    let p = ServeProcess::start(&data, &[], &[]).await.unwrap();
    let api = ApiClient::new(&p.url, &key, client);
    assert_eq!(api.get("/v1/enrollments").await.unwrap().status, 200);
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), key);
}

#[tokio::test]
async fn api_key_from_environment_is_used_and_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = "env-supplied-key-0123456789";
    let p = ServeProcess::start(&data, &[("POMONA_API_KEY", key)], &[])
        .await
        .unwrap();
    assert!(!data.join("api.key").exists());
    let api = ApiClient::new(&p.url, key, reqwest::Client::new());
    assert_eq!(api.get("/v1/enrollments").await.unwrap().status, 200);
}

#[tokio::test]
async fn bad_configuration_fails_with_a_precise_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "listen = 5\n").unwrap();
    let out =
        tokio::process::Command::new(pomona_testkit::server::sibling_binary("pomona").unwrap())
            .args(["serve", "--config"])
            .arg(&cfg)
            .output()
            .await
            .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid config file"), "{stderr}");
}

/// Kill the server (SIGKILL) in the middle of a burst of acknowledgements, restart it, and show
/// that every command is either acknowledged with its result or still queued — none lost, none
/// delivered again after its acknowledgement was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_acknowledgements_loses_nothing() {
    const DEVICES: usize = 12;
    const COMMANDS: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve_ca = ServeCa::write(dir.path()).unwrap();
    let ca = &serve_ca.ca;
    let key = "crash-test-api-key-0123456789";
    let env = serve_ca.env(key);
    let mut p = ServeProcess::start(&data, &env, &[]).await.unwrap();
    let client = reqwest::Client::new();
    let api = ApiClient::new(&p.url, key, client.clone());

    let mut devices = Vec::new();
    let mut all = BTreeSet::new();
    for i in 0..DEVICES {
        let d = Device::new(
            DeviceIdentity::issue(ca, &format!("crash-{i}")).unwrap(),
            &p.url,
            client.clone(),
        );
        d.enroll().await.unwrap();
        for n in 0..COMMANDS {
            let uuid = format!("CRASH-{i}-{n}");
            let body = format!(
                "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>CommandUUID</key><string>{uuid}</string><key>Command</key><dict><key>RequestType</key><string>ProfileList</string></dict></dict></plist>"
            );
            let r = api
                .enqueue_raw(&[&d.udid], body.into_bytes(), true)
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{}", r.json);
            all.insert(uuid);
        }
        devices.push(Arc::new(d));
    }

    // Acknowledge as fast as possible from every device; record acks the server answered.
    let answered: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let burst: Vec<_> = devices
        .iter()
        .map(|d| {
            let (d, answered) = (d.clone(), answered.clone());
            tokio::spawn(async move {
                let Ok(mut next) = d.idle().await else { return };
                while let Some(cmd) = next {
                    match d.acknowledge(&cmd.uuid).await {
                        Ok(n) => {
                            answered.lock().unwrap().insert(cmd.uuid.clone());
                            next = n;
                        }
                        Err(_) => return, // the server died mid-request
                    }
                }
            })
        })
        .collect();
    // Let roughly a third of the acknowledgements through, then kill.
    for _ in 0..400 {
        if answered.lock().unwrap().len() >= DEVICES * COMMANDS / 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    p.kill().await.unwrap();
    for t in burst {
        let _ = t.await;
    }
    let answered = answered.lock().unwrap().clone();
    assert!(
        !answered.is_empty(),
        "the burst should have started before the kill"
    );
    assert!(
        answered.len() < all.len(),
        "the kill should have interrupted the burst"
    );

    let p = ServeProcess::start(&data, &env, &[]).await.unwrap();
    let api = ApiClient::new(&p.url, key, client.clone());
    let mut state = BTreeMap::new();
    for uuid in &all {
        let r = api.get(&format!("/v1/commands/{uuid}")).await.unwrap();
        assert_eq!(r.status, 200, "command {uuid} lost: {}", r.json);
        let t = &r.json["targets"][0];
        let s = t["state"].as_str().unwrap().to_owned();
        match s.as_str() {
            "acknowledged" => assert_eq!(
                t["result"]["Status"], "Acknowledged",
                "{uuid} result stored"
            ),
            "pending" => {}
            other => panic!("{uuid} in unexpected state {other}"),
        }
        state.insert(uuid.clone(), s);
    }
    for uuid in &answered {
        assert_eq!(
            state[uuid], "acknowledged",
            "{uuid}'s ack was answered, so it must be durable"
        );
    }
    // Drain after restart: only still-pending commands are delivered, each exactly once.
    let mut delivered = BTreeSet::new();
    for d in &devices {
        let mut d2 = Device::new(d.identity.clone(), &p.url, client.clone());
        d2.udid = d.udid.clone();
        for cmd in d2.drain().await.unwrap() {
            assert_eq!(
                state[&cmd.uuid], "pending",
                "{} delivered again after its ack was stored",
                cmd.uuid
            );
            assert!(
                delivered.insert(cmd.uuid.clone()),
                "{} delivered twice",
                cmd.uuid
            );
        }
    }
    let pending: BTreeSet<_> = state
        .iter()
        .filter(|(_, s)| *s == "pending")
        .map(|(u, _)| u.clone())
        .collect();
    assert_eq!(
        delivered, pending,
        "every pending command is delivered after restart"
    );
}

/// From nothing to receiving a command: a device gets its identity through SCEP from a
/// `pomona serve` process, enrolls, and receives a command enqueued through the API.
#[tokio::test]
async fn device_enrolls_through_scep_and_receives_a_command() {
    let dir = tempfile::tempdir().unwrap();
    let key = "scep-e2e-api-key-0123456789";
    let env = [
        ("POMONA_API_KEY", key),
        ("POMONA_SCEP_CHALLENGE", "e2e-challenge"),
    ];
    let p = ServeProcess::start(&dir.path().join("data"), &env, &[])
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let scep_url = format!("{}/scep", p.url);
    let err = pomona_testkit::scep::enroll(&client, &scep_url, "wrong")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("BadRequest"), "{err}");
    let identity = pomona_testkit::scep::enroll(&client, &scep_url, "e2e-challenge")
        .await
        .unwrap();
    let device = Device::new(identity, &p.url, client.clone());
    device.enroll().await.unwrap();
    let api = ApiClient::new(&p.url, key, client);
    let uuid = api
        .command(
            &[&device.udid],
            "DeviceInformation",
            serde_json::json!({"Queries": ["SerialNumber"]}),
        )
        .await
        .unwrap();
    let got = device
        .idle()
        .await
        .unwrap()
        .expect("the command is delivered");
    assert_eq!(
        (got.uuid.as_str(), got.request_type.as_str()),
        (uuid.as_str(), "DeviceInformation")
    );
    assert!(device.acknowledge(&uuid).await.unwrap().is_none());
    let events = api.get("/v1/events?after=0").await.unwrap();
    assert_eq!(events.json["events"][0]["kind"], "scep.certificate_issued");
}

/// Issue 11, items 10 and 13 through `pomona serve`'s configuration: `[rate_limit]` answers 429
/// with `Retry-After`, and the client-certificate header from a peer outside
/// `identity.trusted_proxies` (here loopback, not in the list) is refused.
#[tokio::test]
async fn serve_applies_rate_limits_and_trusted_proxies_from_its_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pomona.toml");
    std::fs::write(
        &config,
        "[identity]\nclient_cert_header = \"X-Client-Cert\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n\
         [rate_limit]\nenroll_per_minute = 1\nenroll_burst = 2\n",
    )
    .unwrap();
    let mut p = ServeProcess::start(
        &dir.path().join("data"),
        &[],
        &["--config", config.to_str().unwrap()],
    )
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let enroll = format!("{}/mdm/enroll", p.url);
    for _ in 0..2 {
        assert_eq!(client.get(&enroll).send().await.unwrap().status(), 200);
    }
    let r = client.get(&enroll).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));

    let r = client
        .put(format!("{}/mdm/checkin", p.url))
        .header("X-Client-Cert", ":AAAA:")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("trusted_proxies"));
    p.terminate().await.unwrap();
}
