//! APNs end to end against the fake APNs: upload, pushes after enqueue, error mapping, retries,
//! the circuit breaker, reconnects, re-arm pushes and certificate health.

use std::time::Duration;

use openssl::pkcs12::Pkcs12;
use openssl::pkey::PKey;
use openssl::x509::X509;
use pomona::push::apns::ApnsOptions;
use pomona::push::client::ApnsEndpoint;
use pomona_testkit::apns::{ApnsTestPki, FakeApns};
use pomona_testkit::device::Device;
use pomona_testkit::enroll::{Profile, download_profile};
use pomona_testkit::server::TestServer;
use serde_json::json;

const TOPIC: &str = "com.apple.mgmt.External.11111111-2222-3333-4444-555555555555";

struct Rig {
    pki: ApnsTestPki,
    fake: FakeApns,
    server: TestServer,
}

async fn rig(tune: impl FnOnce(&mut ApnsOptions)) -> Rig {
    let pki = ApnsTestPki::new().unwrap();
    let fake = FakeApns::start(&pki).await.unwrap();
    let mut options = ApnsOptions::default()
        .with_endpoint(
            ApnsEndpoint::default()
                .with_base_url(fake.url.clone())
                .with_extra_ca(Some(X509::from_pem(&pki.ca_pem()).unwrap()))
                .with_connections(2)
                .with_timeout(Duration::from_secs(5)),
        )
        .with_retry_delays(vec![Duration::from_millis(150), Duration::from_millis(300)])
        .with_breaker_threshold(3)
        .with_breaker_cooldown(Duration::from_millis(400));
    tune(&mut options);
    let server = TestServer::start_with(|b| b.apns_options(options))
        .await
        .unwrap();
    let r = server
        .client
        .put(format!("{}/v1/pushcert", server.url))
        .bearer_auth(pomona_testkit::server::TEST_API_KEY)
        .body(pki.push_certificate(TOPIC, 365).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["topic"], TOPIC);
    assert!(j["not_after"].as_str().unwrap().contains('T'));
    Rig { pki, fake, server }
}

/// A device enrolled through the profile (so it reports the uploaded certificate's topic).
async fn device(r: &Rig) -> Device {
    let c = &r.server.client;
    let profile = Profile::parse(&download_profile(c, &r.server.url, None).await.unwrap()).unwrap();
    assert_eq!(
        profile.topic, TOPIC,
        "profiles carry the push certificate's topic"
    );
    let d = profile.enroll(c).await.unwrap();
    d.enroll().await.unwrap();
    d
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn enqueue_causes_exactly_one_push_then_the_device_gets_the_command() {
    let r = rig(|_| {}).await;
    let d = device(&r).await;
    assert!(
        r.fake.pushes().is_empty(),
        "nothing is pushed before a command exists"
    );
    let api = r.server.api();
    let res = api
        .post_json(
            "/v1/commands",
            &json!({"targets": [d.udid], "request_type": "ProfileList"}),
        )
        .await
        .unwrap();
    assert_eq!(res.status, 201, "{}", res.json);
    assert!(
        res.json["targets"][0]["push"]["sent"].is_string(),
        "{}",
        res.json
    );
    let pushes = r.fake.pushes();
    assert_eq!(pushes.len(), 1);
    let p = &pushes[0];
    assert_eq!(p.token, hex::encode(&d.push_token));
    assert_eq!(
        p.topic, TOPIC,
        "the client certificate is the push certificate"
    );
    assert_eq!(p.topic_header.as_deref(), Some(TOPIC));
    assert_eq!(p.body, json!({"mdm": format!("magic-{}", d.udid)}));
    assert_eq!(
        p.headers.get("apns-push-type").map(String::as_str),
        Some("mdm")
    );
    let uuid = res.json["command_uuid"].as_str().unwrap();
    assert_eq!(d.idle().await.unwrap().unwrap().uuid, uuid);

    // NanoMDM-style push endpoint too.
    let res = api.get(&format!("/v1/push/{}", d.udid)).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.json);
    assert!(res.json["status"][&d.udid]["push_result"].is_string());
    assert_eq!(r.fake.pushes().len(), 2);
}

#[tokio::test]
async fn invalid_tokens_are_marked_and_not_pushed_again() {
    let r = rig(|_| {}).await;
    let api = r.server.api();
    for (status, reason) in [
        (400, "BadDeviceToken"),
        (410, "Unregistered"),
        (400, "DeviceTokenNotForTopic"),
    ] {
        let d = device(&r).await;
        let token = hex::encode(&d.push_token);
        r.fake.fail_token(&token, status, reason);
        let res = api.get(&format!("/v1/push/{}", d.udid)).await.unwrap();
        let err = res.json["status"][&d.udid]["push_error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            err.contains(reason) && err.contains("marked invalid"),
            "{err}"
        );
        let e = api
            .get(&format!("/v1/enrollments/{}", d.udid))
            .await
            .unwrap();
        assert_eq!(e.json["push"]["valid"], false);
        let before = r.fake.pushes().len();
        let res = api.get(&format!("/v1/push/{}", d.udid)).await.unwrap();
        assert!(
            res.json["status"][&d.udid]["push_error"]
                .as_str()
                .unwrap()
                .contains("invalid")
        );
        assert_eq!(
            r.fake.pushes().len(),
            before,
            "no push to a token APNs refused"
        );
        // A new TokenUpdate makes it pushable again.
        d.token_update(false).await.unwrap();
        let e = api
            .get(&format!("/v1/enrollments/{}", d.udid))
            .await
            .unwrap();
        assert_eq!(e.json["push"]["valid"], true);
    }
    let events = api.get("/v1/events?after=0&limit=1000").await.unwrap();
    let n = events.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "push.token_invalid")
        .count();
    assert_eq!(n, 3);
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff() {
    let r = rig(|_| {}).await;
    for (status, reason) in [
        (429, "TooManyRequests"),
        (500, "InternalServerError"),
        (503, "ServiceUnavailable"),
        (503, "Shutdown"),
    ] {
        // A fresh device each time: a retry still in flight for the previous one must not
        // coalesce with this push.
        let d = device(&r).await;
        r.fake.clear();
        r.fake.fail_next(1, status, reason);
        let res = r
            .server
            .api()
            .get(&format!("/v1/push/{}", d.udid))
            .await
            .unwrap();
        let err = res.json["status"][&d.udid]["push_error"]
            .as_str()
            .unwrap_or_else(|| panic!("{reason}: {}", res.json))
            .to_owned();
        assert!(err.contains(reason) && err.contains("retrying in"), "{err}");
        eventually("the retried push", || r.fake.pushes().len() == 2).await;
        let e = r
            .server
            .api()
            .get(&format!("/v1/enrollments/{}", d.udid))
            .await
            .unwrap();
        assert_eq!(
            e.json["push"]["valid"], true,
            "transient errors do not invalidate tokens"
        );
    }
}

#[tokio::test]
async fn circuit_breaker_opens_and_closes() {
    let r = rig(|o| o.retry_delays = vec![]).await;
    let api = r.server.api();
    let devices = [
        device(&r).await,
        device(&r).await,
        device(&r).await,
        device(&r).await,
    ];
    r.fake.fail_next(3, 503, "ServiceUnavailable");
    for d in &devices[..3] {
        api.get(&format!("/v1/push/{}", d.udid)).await.unwrap();
    }
    let cert = api.get("/v1/pushcert").await.unwrap();
    assert_eq!(cert.json["circuit_open"], true);
    let before = r.fake.pushes().len();
    let res = api
        .get(&format!("/v1/push/{}", devices[3].udid))
        .await
        .unwrap();
    assert!(
        res.json["status"][&devices[3].udid]["push_error"]
            .as_str()
            .unwrap()
            .contains("circuit breaker")
    );
    assert_eq!(r.fake.pushes().len(), before, "an open breaker fails fast");
    let metrics = r
        .server
        .client
        .get(format!("{}/metrics", r.server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("pomona_apns_circuit_open 1"));
    tokio::time::sleep(Duration::from_millis(450)).await;
    let res = api
        .get(&format!("/v1/push/{}", devices[3].udid))
        .await
        .unwrap();
    assert_eq!(
        res.status, 200,
        "half-open lets a push through: {}",
        res.json
    );
    assert_eq!(
        api.get("/v1/pushcert").await.unwrap().json["circuit_open"],
        false
    );
}

#[tokio::test]
async fn reconnects_after_the_server_restarts() {
    let mut r = rig(|_| {}).await;
    let d = device(&r).await;
    let api = r.server.api();
    assert_eq!(
        api.get(&format!("/v1/push/{}", d.udid))
            .await
            .unwrap()
            .status,
        200
    );
    r.fake.restart().await.unwrap();
    r.fake.clear();
    // The first push may meet the dead connection; a retry or the next push reconnects.
    let first = api.get(&format!("/v1/push/{}", d.udid)).await.unwrap();
    if first.status != 200 {
        eventually("a push after the restart", || !r.fake.pushes().is_empty()).await;
    }
    assert_eq!(
        api.get(&format!("/v1/push/{}", d.udid))
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test]
async fn nothing_is_pushed_to_checked_out_or_tokenless_enrollments() {
    let r = rig(|_| {}).await;
    let d = device(&r).await;
    d.check_out().await.unwrap();
    let api = r.server.api();
    let res = api.get(&format!("/v1/push/{}", d.udid)).await.unwrap();
    assert!(
        res.json["status"][&d.udid]["push_error"]
            .as_str()
            .unwrap()
            .contains("no push token")
    );
    // Authenticated but no TokenUpdate yet: never pushed.
    let c = &r.server.client;
    let profile = Profile::parse(&download_profile(c, &r.server.url, None).await.unwrap()).unwrap();
    let fresh = profile.enroll(c).await.unwrap();
    fresh.authenticate().await.unwrap();
    api.get(&format!("/v1/push/{}", fresh.udid)).await.unwrap();
    assert!(r.fake.pushes().is_empty());
}

#[tokio::test]
async fn rearm_pushes_silent_enrollments() {
    let r = rig(|o| {
        o.rearm_after = Duration::ZERO;
        o.rearm_rate_per_sec = 1000;
    })
    .await;
    let a = device(&r).await;
    let b = device(&r).await;
    b.check_out().await.unwrap();
    let n = r.server.engine.apns().rearm().await.unwrap();
    assert_eq!(n, 1);
    let pushes = r.fake.pushes();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].token, hex::encode(&a.push_token));
}

#[tokio::test]
async fn pkcs12_and_expiry_states() {
    let r = rig(|_| {}).await;
    let pem = r
        .pki
        .push_certificate("com.apple.mgmt.External.legacy", 10)
        .unwrap();
    let cert = X509::from_pem(&pem).unwrap();
    let key = PKey::private_key_from_pem(&pem).unwrap();
    pomona::wire::scep::load_legacy_provider();
    let p12 = Pkcs12::builder()
        .name("push")
        .pkey(&key)
        .cert(&cert)
        .key_algorithm(openssl::nid::Nid::PBE_WITHSHA1AND40BITRC2_CBC)
        .cert_algorithm(openssl::nid::Nid::PBE_WITHSHA1AND40BITRC2_CBC)
        .build2("s3cret")
        .unwrap()
        .to_der()
        .unwrap();
    let put = |body: Vec<u8>, pw: &str| {
        r.server
            .client
            .put(format!("{}/v1/pushcert?password={pw}", r.server.url))
            .bearer_auth(pomona_testkit::server::TEST_API_KEY)
            .body(body)
            .send()
    };
    let res = put(p12.clone(), "wrong").await.unwrap();
    assert_eq!(res.status(), 400);
    let res = put(p12, "s3cret").await.unwrap();
    assert_eq!(res.status(), 200);
    let j: serde_json::Value = res.json().await.unwrap();
    assert_eq!(j["topic"], "com.apple.mgmt.External.legacy");
    assert_eq!(j["state"], "expiring", "10 days left");
    let all = r.server.api().get("/v1/pushcert").await.unwrap();
    assert_eq!(
        all.json["certificates"].as_array().unwrap().len(),
        2,
        "several topics"
    );
    let res = put(b"-----BEGIN CERTIFICATE-----\nnope\n".to_vec(), "")
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let metrics = r
        .server
        .client
        .get(format!("{}/metrics", r.server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("pomona_push_certificate_state{topic=\"com.apple.mgmt.External.legacy\",state=\"expiring\"} 1"), "{metrics}");
}

/// The binary end to end: `POMONA_APNS_BASE_URL` / `POMONA_APNS_EXTRA_CA_FILE` point
/// `pomona serve` at the fake; `pomona push csr` and `pomona push upload` install a certificate;
/// a command enqueued for a device enrolled through the profile is pushed.
#[tokio::test]
async fn pomona_serve_with_cli_uploaded_certificate_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ApnsTestPki::new().unwrap();
    let fake = FakeApns::start(&pki).await.unwrap();
    let ca_file = dir.path().join("apns-ca.pem");
    std::fs::write(&ca_file, pki.ca_pem()).unwrap();
    let key = "push-cli-api-key-0123456789";
    let env = [
        ("POMONA_API_KEY", key),
        ("POMONA_APNS_BASE_URL", fake.url.as_str()),
        ("POMONA_APNS_EXTRA_CA_FILE", ca_file.to_str().unwrap()),
    ];
    let p = pomona_testkit::server::ServeProcess::start(&dir.path().join("data"), &env, &[])
        .await
        .unwrap();
    let bin = pomona_testkit::server::sibling_binary("pomona").unwrap();
    let (key_file, csr_file) = (dir.path().join("push.key"), dir.path().join("push.csr"));
    let out = std::process::Command::new(&bin)
        .args(["push", "csr", "--key-out"])
        .arg(&key_file)
        .arg("--csr-out")
        .arg(&csr_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert_file = dir.path().join("push.pem");
    std::fs::write(
        &cert_file,
        pki.sign_push_csr(&std::fs::read(&csr_file).unwrap(), TOPIC)
            .unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new(&bin)
        .args([
            "push",
            "upload",
            "--url",
            &p.url,
            "--api-key",
            key,
            "--cert",
        ])
        .arg(&cert_file)
        .arg("--key")
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(TOPIC));

    let client = reqwest::Client::new();
    let profile = Profile::parse(&download_profile(&client, &p.url, None).await.unwrap()).unwrap();
    assert_eq!(profile.topic, TOPIC);
    let d = profile.enroll(&client).await.unwrap();
    d.enroll().await.unwrap();
    let api = pomona_testkit::api::ApiClient::new(&p.url, key, client);
    let uuid = api
        .command(&[&d.udid], "ProfileList", json!({}))
        .await
        .unwrap();
    let pushes = fake.pushes();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].token, hex::encode(&d.push_token));
    assert_eq!(d.idle().await.unwrap().unwrap().uuid, uuid);
}

/// Item 6 of issue 11: an APNs (or proxy) that accepts the TCP connection and then says nothing
/// must not hold `PUT /v1/enqueue` for ever: the handshake times out and the answer reports it.
#[tokio::test]
async fn a_stalled_apns_handshake_does_not_hold_up_enqueue() {
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stall_url = format!("https://{}", stall.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = stall.accept().await {
            open.push(s);
        }
    });
    let r = rig(|o| {
        o.endpoint.base_url = stall_url;
        o.endpoint.connect_timeout = Duration::from_millis(300);
        o.endpoint.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    let d = device(&r).await;
    let mut cmd = plist::Dictionary::new();
    cmd.insert("RequestType".into(), "ProfileList".into());
    let mut body = plist::Dictionary::new();
    body.insert(
        "CommandUUID".into(),
        uuid::Uuid::new_v4().to_string().into(),
    );
    body.insert("Command".into(), cmd.into());
    let mut xml = Vec::new();
    plist::Value::Dictionary(body)
        .to_writer_xml(&mut xml)
        .unwrap();
    let res = tokio::time::timeout(
        Duration::from_secs(30),
        r.server.api().enqueue_raw(&[&d.udid], xml, false),
    )
    .await
    .expect("PUT /v1/enqueue answers while APNs stalls")
    .unwrap();
    assert_eq!(res.status, 207, "queued, push failed: {}", res.json);
    let err = res.json["status"][&d.udid]["push_error"].as_str().unwrap();
    assert!(err.contains("handshake"), "{err}");
    held.abort();
}
