//! Enrollment end to end: profile download → SCEP → Authenticate → TokenUpdate → commands, for
//! the manual and the automated (signed MachineInfo) paths.

use base64::Engine as _;
use pomona::enroll::EnrollOptions;
use pomona::wire::machine_info::{DeviceTrust, MachineInfo};
use pomona_testkit::api::ApiClient;
use pomona_testkit::enroll::{Profile, TestDeviceCa, download_profile};
use pomona_testkit::server::{ServeProcess, TestServer};
use serde_json::json;

#[tokio::test]
async fn manual_enrollment_against_pomona_serve() {
    let dir = tempfile::tempdir().unwrap();
    let key = "enroll-e2e-api-key-0123456789";
    let p = ServeProcess::start(&dir.path().join("data"), &[("POMONA_API_KEY", key)], &[])
        .await
        .unwrap();
    let client = reqwest::Client::new();

    let bytes = download_profile(&client, &p.url, None).await.unwrap();
    let profile = Profile::parse(&bytes).unwrap();
    assert_eq!(profile.scep_url, format!("{}/scep", p.url));
    assert_eq!(profile.server_url, format!("{}/mdm/connect", p.url));
    assert_eq!(profile.check_in_url, format!("{}/mdm/checkin", p.url));
    assert!(profile.sign_message && !profile.signed);

    let device = profile.enroll(&client).await.unwrap();
    device.enroll().await.unwrap();
    let api = ApiClient::new(&p.url, key, client.clone());
    let uuid = api
        .command(&[&device.udid], "ProfileList", json!({}))
        .await
        .unwrap();
    assert_eq!(device.idle().await.unwrap().unwrap().uuid, uuid);
    assert!(device.acknowledge(&uuid).await.unwrap().is_none());

    // The profile's one-time challenge cannot enroll a second device.
    let err = profile.enroll(&client).await.unwrap_err().to_string();
    assert!(err.contains("BadRequest"), "{err}");
    // Every download mints a fresh challenge.
    let again = Profile::parse(&download_profile(&client, &p.url, None).await.unwrap()).unwrap();
    assert_ne!(again.challenge, profile.challenge);
}

#[tokio::test]
async fn enrollment_token_gates_manual_downloads() {
    let server = TestServer::start_with(|b| {
        let mut o = EnrollOptions::new("http://unused");
        o.token = Some("let-me-in".into());
        b.enroll_options(o)
    })
    .await
    .unwrap();
    let err = download_profile(&server.client, &server.url, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("403"), "{err}");
    let err = download_profile(&server.client, &server.url, Some("nope"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("403"), "{err}");
    let bytes = download_profile(&server.client, &server.url, Some("let-me-in"))
        .await
        .unwrap();
    // The public URL in the profile is the engine's own, whatever the options said.
    assert!(
        Profile::parse(&bytes)
            .unwrap()
            .scep_url
            .starts_with(&server.url)
    );
    server.stop().await;
}

fn machine_info(os: &str) -> MachineInfo {
    MachineInfo {
        udid: uuid::Uuid::new_v4().to_string().to_uppercase(),
        serial: "C02ADE0001".into(),
        product: Some("Mac14,2".into()),
        version: Some("23A344".into()),
        os_version: Some(os.into()),
        language: Some("en".into()),
        can_request_software_update: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn automated_enrollment_with_signed_machine_info() {
    let device_ca = TestDeviceCa::new().unwrap();
    let trust = device_ca.trust_pem().unwrap();
    let server = TestServer::start_with(|b| {
        let mut o = EnrollOptions::new("http://unused");
        o.device_trust = DeviceTrust::from_pem_bundle(&trust).unwrap();
        o.min_os_version = Some("14.4".into());
        o.min_build_version = Some("23E214".into());
        b.enroll_options(o)
    })
    .await
    .unwrap();
    let c = &server.client;
    let url = format!("{}/mdm/enroll", server.url);

    // Too old: Setup Assistant is told to update first.
    let old = machine_info("14.0");
    let r = c
        .post(&url)
        .body(device_ca.sign(&old).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["code"], "com.apple.softwareupdate.required");
    assert_eq!(j["details"]["OSVersion"], "14.4");
    assert_eq!(j["details"]["BuildVersion"], "23E214");

    // Up to date: the profile, then SCEP and the check-in protocol.
    let info = machine_info("14.5");
    let r = c
        .post(&url)
        .body(device_ca.sign(&info).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let profile = Profile::parse(&r.bytes().await.unwrap()).unwrap();
    let mut device = profile.enroll(c).await.unwrap();
    device.udid = info.udid.clone();
    device.enroll().await.unwrap();
    let recorded = server
        .engine
        .store()
        .machine_info(&info.udid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recorded.info, info);

    // The web-view flow: the same signed bytes in a header on GET.
    let header = base64::engine::general_purpose::STANDARD
        .encode(device_ca.sign(&machine_info("15.0")).unwrap());
    let r = c
        .get(&url)
        .header("x-apple-aspen-deviceinfo", header)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    Profile::parse(&r.bytes().await.unwrap()).unwrap();

    // MachineInfo signed by anyone else is refused.
    let stranger = TestDeviceCa::new().unwrap();
    let r = c
        .post(&url)
        .body(stranger.sign(&info).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("not trusted"));
    let r = c.post(&url).body("garbage").send().await.unwrap();
    assert_eq!(r.status(), 400);

    let events = server
        .api()
        .get("/v1/events?after=0&limit=1000")
        .await
        .unwrap();
    let kinds: Vec<&str> = events.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "enroll.machine_info")
            .count(),
        3
    );
    server.stop().await;
}

#[tokio::test]
async fn profiles_can_be_signed() {
    let dir = tempfile::tempdir().unwrap();
    let signer = pomona::ca::CertificateAuthority::generate(&Default::default()).unwrap();
    let (cert, key) = (dir.path().join("sign.pem"), dir.path().join("sign.key"));
    std::fs::write(&cert, signer.certificate().to_pem().unwrap()).unwrap();
    std::fs::write(
        &key,
        signer.private_key().private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
    let config = dir.path().join("pomona.toml");
    std::fs::write(
        &config,
        format!(
            "[enroll]\nsigning_cert_file = {:?}\nsigning_key_file = {:?}\norganization = \"Example Org\"\n",
            cert, key
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let p = ServeProcess::start(
        &dir.path().join("data"),
        &[("POMONA_API_KEY", "signed-profile-key-0123456789")],
        &["--config", cfg],
    )
    .await
    .unwrap();
    let bytes = download_profile(&reqwest::Client::new(), &p.url, None)
        .await
        .unwrap();
    let profile = Profile::parse(&bytes).unwrap();
    assert!(profile.signed);
}

/// A SCEP renewal signed by the device's identity: the check-in path accepts the new
/// certificate (re-pinning it) and from then on refuses the old one.
#[tokio::test]
async fn renewed_identity_is_accepted_and_the_old_one_retired() {
    let server = TestServer::start().await.unwrap();
    let c = &server.client;
    let profile = Profile::parse(&download_profile(c, &server.url, None).await.unwrap()).unwrap();
    let mut device = profile.enroll(c).await.unwrap();
    device.enroll().await.unwrap();
    let old = device.identity.clone();
    let renewed = pomona_testkit::scep::renew(c, &profile.scep_url, &old)
        .await
        .unwrap();
    device.identity = renewed;
    assert!(
        device.idle().await.unwrap().is_none(),
        "the renewed certificate is accepted"
    );
    device.identity = old;
    let err = device.idle().await.unwrap_err().to_string();
    assert!(
        err.contains("400") && err.contains("does not match"),
        "{err}"
    );
    let events = server
        .api()
        .get("/v1/events?after=0&limit=100")
        .await
        .unwrap();
    assert!(
        events.json["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "identity.renewed")
    );

    // A certificate from the CA that is not a renewal of the pinned one is still refused.
    let stranger = pomona_testkit::scep::enroll(
        c,
        &profile.scep_url,
        &Profile::parse(&download_profile(c, &server.url, None).await.unwrap())
            .unwrap()
            .challenge
            .unwrap(),
    )
    .await
    .unwrap();
    device.identity = stranger;
    let err = device.idle().await.unwrap_err().to_string();
    assert!(err.contains("does not match"), "{err}");
    server.stop().await;
}
