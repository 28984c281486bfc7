//! The identity-binding policy end to end over HTTP (issue #11 items 3, 5, 9, 16c): who may take
//! over an enrolled UDID, who gets escrowed secrets back, whose serial number links to a device
//! record — the attacks and, as carefully, the legitimate paths.

use std::time::Duration;

use plist::{Dictionary, Value};
use pomona::enroll::EnrollOptions;
use pomona::wire::machine_info::DeviceTrust;
use pomona_testkit::device::{Device, Reply};
use pomona_testkit::enroll::{Profile, TestDeviceCa, download_profile, enroll_automated};
use pomona_testkit::scep;
use pomona_testkit::server::TestServer;
use serde_json::{Value as Json, json};

const TOKEN: &[u8] = b"the real Mac's bootstrap token";

async fn server(device_ca: &TestDeviceCa) -> TestServer {
    let trust = device_ca.trust_pem().unwrap();
    TestServer::start_with(move |b| {
        let mut o = EnrollOptions::new("http://unused");
        o.device_trust = DeviceTrust::from_pem_bundle(&trust).unwrap();
        b.enroll_options(o)
    })
    .await
    .unwrap()
}

fn message(dev: &Device, kind: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("MessageType".into(), kind.into());
    d.insert("UDID".into(), dev.udid.clone().into());
    d
}

async fn set_bootstrap(dev: &Device, token: &[u8]) -> Reply {
    let mut d = message(dev, "SetBootstrapToken");
    d.insert("BootstrapToken".into(), Value::Data(token.to_vec()));
    dev.checkin(&d).await.unwrap()
}

async fn get_bootstrap(dev: &Device) -> Reply {
    dev.checkin(&message(dev, "GetBootstrapToken"))
        .await
        .unwrap()
}

fn bootstrap_of(reply: &Reply) -> Option<Vec<u8>> {
    if reply.status != 200 || reply.body.is_empty() {
        return None;
    }
    let v = Value::from_reader(std::io::Cursor::new(&reply.body)).unwrap();
    v.as_dictionary()?
        .get("BootstrapToken")?
        .as_data()
        .map(<[u8]>::to_vec)
}

async fn authenticate(dev: &Device) -> Reply {
    let mut d = message(dev, "Authenticate");
    d.insert("Topic".into(), dev.topic.clone().into());
    d.insert("SerialNumber".into(), dev.serial.clone().into());
    dev.checkin(&d).await.unwrap()
}

/// A manual download (`GET /mdm/enroll`, anonymous challenge) and SCEP, posing as `udid`.
async fn manual_impostor(s: &TestServer, udid: &str, serial: &str) -> Device {
    let profile =
        Profile::parse(&download_profile(&s.client, &s.url, None).await.unwrap()).unwrap();
    let mut dev = profile.enroll(&s.client).await.unwrap();
    dev.udid = udid.to_owned();
    dev.serial = serial.to_owned();
    dev
}

async fn events_of(s: &TestServer, kind: &str) -> Vec<Json> {
    let r = s.api().get("/v1/events?after=0&limit=1000").await.unwrap();
    r.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

/// A DEP-enrolled Mac with an escrowed bootstrap token.
async fn enrolled_mac(s: &TestServer, ca: &TestDeviceCa, udid: &str, serial: &str) -> Device {
    let mac = enroll_automated(&s.client, &s.url, ca, udid, serial)
        .await
        .unwrap();
    mac.enroll().await.unwrap();
    assert_eq!(set_bootstrap(&mac, TOKEN).await.status, 200);
    mac
}

/// Issue #11 attack 3: a fresh manual profile, SCEP with CN = the victim's UDID, Authenticate
/// with the victim's UDID. Before: 200, the enrollment re-pinned, the bootstrap token handed
/// over, the real Mac locked out with 400.
#[tokio::test]
async fn a_manual_certificate_cannot_take_over_an_enrolled_udid() {
    let ca = TestDeviceCa::new().unwrap();
    let s = server(&ca).await;
    let udid = "00008103-000A1B2C3D4E0001";
    let mac = enrolled_mac(&s, &ca, udid, "C02VICTIM01").await;

    let attacker = manual_impostor(&s, udid, "C02VICTIM01").await;
    let r = authenticate(&attacker).await;
    assert!(
        (400..500).contains(&r.status),
        "takeover answered {}",
        r.status
    );
    let r = get_bootstrap(&attacker).await;
    assert!(
        (400..500).contains(&r.status),
        "GetBootstrapToken answered {}",
        r.status
    );
    assert_eq!(bootstrap_of(&r), None);

    // The real Mac is undisturbed.
    assert!(mac.idle().await.unwrap().is_none());
    let r = get_bootstrap(&mac).await;
    assert_eq!(r.status, 200);
    assert_eq!(bootstrap_of(&r).as_deref(), Some(TOKEN));
    let refused = events_of(&s, "identity.takeover_refused").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["enrollment_id"], udid);

    // A MachineInfo-bound certificate of another device cannot claim this UDID either.
    let other = enroll_automated(&s.client, &s.url, &ca, "OTHER-UDID-0002", "C02OTHER02")
        .await
        .unwrap();
    let mut posing = Device::new(other.identity, &s.url, s.client.clone());
    posing.udid = udid.to_owned();
    let r = authenticate(&posing).await;
    assert!((400..500).contains(&r.status), "{}", r.status);
    assert_eq!(
        bootstrap_of(&get_bootstrap(&mac).await).as_deref(),
        Some(TOKEN)
    );
}

/// Erase and Automated Device Enrollment again: new MachineInfo, new certificate, same UDID.
/// Accepted; the old certificate's escrow is cleared and the old certificate is retired.
#[tokio::test]
async fn erase_then_dep_reenrollment_is_accepted_and_clears_the_escrow() {
    let ca = TestDeviceCa::new().unwrap();
    let s = server(&ca).await;
    let udid = "00008103-000A1B2C3D4E0003";
    let old = enrolled_mac(&s, &ca, udid, "C02ERASE003").await;

    let new = enroll_automated(&s.client, &s.url, &ca, udid, "C02ERASE003")
        .await
        .unwrap();
    assert_eq!(authenticate(&new).await.status, 200);
    new.token_update(true).await.unwrap();
    let r = get_bootstrap(&new).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        bootstrap_of(&r),
        None,
        "the previous holder's token is cleared"
    );
    assert_eq!(set_bootstrap(&new, b"new token").await.status, 200);
    assert_eq!(
        bootstrap_of(&get_bootstrap(&new).await).as_deref(),
        Some(&b"new token"[..])
    );
    // The erased Mac's certificate is retired.
    assert_eq!(get_bootstrap(&old).await.status, 400);
    assert_eq!(authenticate(&old).await.status, 400);
    let e = events_of(&s, "identity.reenrolled").await;
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["data"]["evidence"], "machine_info");
    assert_eq!(e[0]["data"]["escrow_cleared"], true);
}

/// The same Mac removes its profile (CheckOut, signed by the pinned certificate) and installs a
/// new one from a manual download: accepted. Without the CheckOut: refused.
#[tokio::test]
async fn reinstalling_the_profile_after_checkout_is_accepted() {
    let ca = TestDeviceCa::new().unwrap();
    let s = server(&ca).await;
    let udid = "00008103-000A1B2C3D4E0004";
    let mac = enrolled_mac(&s, &ca, udid, "C02REINST04").await;
    mac.check_out().await.unwrap();

    let again = manual_impostor(&s, udid, "C02REINST04").await;
    assert_eq!(authenticate(&again).await.status, 200);
    again.token_update(false).await.unwrap();
    assert_eq!(bootstrap_of(&get_bootstrap(&again).await), None);
    assert_eq!(
        get_bootstrap(&mac).await.status,
        400,
        "the old certificate is retired"
    );
    let e = events_of(&s, "identity.reenrolled").await;
    assert_eq!(e[0]["data"]["evidence"], "checked_out");

    // The checked-out mark is used up: a third certificate needs evidence of its own.
    let third = manual_impostor(&s, udid, "C02REINST04").await;
    assert_eq!(authenticate(&third).await.status, 400);
}

/// A SCEP renewal signed by the current certificate: accepted, and the bootstrap token is still
/// returned to the renewed certificate (the same holder).
#[tokio::test]
async fn a_scep_renewal_keeps_the_escrow() {
    let ca = TestDeviceCa::new().unwrap();
    let s = server(&ca).await;
    let udid = "00008103-000A1B2C3D4E0005";
    let mut mac = enrolled_mac(&s, &ca, udid, "C02RENEW05").await;
    let renewed = scep::renew(&s.client, &format!("{}/scep", s.url), &mac.identity)
        .await
        .unwrap();
    mac.identity = renewed;
    assert!(mac.idle().await.unwrap().is_none());
    let r = get_bootstrap(&mac).await;
    assert_eq!(r.status, 200);
    assert_eq!(bootstrap_of(&r).as_deref(), Some(TOKEN));
    // A renewed certificate re-authenticating is fine too, and keeps the escrow.
    assert_eq!(authenticate(&mac).await.status, 200);
    assert_eq!(
        bootstrap_of(&get_bootstrap(&mac).await).as_deref(),
        Some(TOKEN)
    );
}

/// An admin approves one re-enrollment (a Mac whose profile was removed offline): the next new
/// certificate is accepted once, the escrow is cleared, and the approval is used up.
#[tokio::test]
async fn an_admin_approval_allows_one_reenrollment() {
    let ca = TestDeviceCa::new().unwrap();
    let s = server(&ca).await;
    let api = s.api();
    let udid = "00008103-000A1B2C3D4E0006";
    let mac = enrolled_mac(&s, &ca, udid, "C02ADMIN06").await;

    let r = api
        .post_json("/v1/enrollments/NOPE/reenroll", &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.json);
    let r = api
        .post_json(
            &format!("/v1/enrollments/{udid}/reenroll"),
            &json!({"ttl_secs": 0}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.json);
    let r = api
        .post_json(
            &format!("/v1/enrollments/{udid}/reenroll"),
            &json!({"ttl_secs": 600}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.json);
    assert!(r.json["expires_at"].is_string());

    let new = manual_impostor(&s, udid, "C02ADMIN06").await;
    assert_eq!(authenticate(&new).await.status, 200);
    assert_eq!(bootstrap_of(&get_bootstrap(&new).await), None);
    assert_eq!(get_bootstrap(&mac).await.status, 400);
    let third = manual_impostor(&s, udid, "C02ADMIN06").await;
    assert_eq!(
        authenticate(&third).await.status,
        400,
        "the approval is used up"
    );
    let e = events_of(&s, "identity.reenrolled").await;
    assert_eq!(e[0]["data"]["evidence"], "admin");
}

/// Issue #11 item 5: a self-asserted certificate whose Authenticate reports a DEP device's
/// serial number gets no link to that device record and no team steps; the device enrolled with
/// MachineInfo evidence does.
#[tokio::test]
async fn a_claimed_serial_gets_no_device_record_and_no_team_steps() {
    let ca = TestDeviceCa::new().unwrap();
    let s = server(&ca).await;
    let api = s.api();
    let r = api
        .put_json(
            "/v1/teams/Eng",
            &json!({"setup_steps": [{"id": "name", "command": {"request_type": "Settings",
                "parameters": {"Settings": [{"Item": "DeviceName", "DeviceName": "Eng Mac"}]}}}]}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.json);
    let r = api
        .put_bytes(
            "/v1/plugins/teams",
            br#"return { place = function() return { team = "Eng" } end }"#.to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.json);
    let serial = "C02DEPBOX07";

    // The impostor: a manual certificate, its own UDID, the DEP Mac's serial from the box.
    let impostor = manual_impostor(&s, "IMPOSTOR-UDID-0007", serial).await;
    assert_eq!(authenticate(&impostor).await.status, 200);
    impostor.token_update(true).await.unwrap();
    let e = events_of(&s, "enrollment.authenticated").await;
    assert_eq!(e[0]["data"]["serial_evidence"], "self_asserted");
    assert_eq!(e[0]["data"]["verified_serial_number"], Json::Null);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        impostor.idle().await.unwrap().is_none(),
        "no setup step for a claimed serial"
    );
    let r = api.get(&format!("/v1/devices/{serial}")).await.unwrap();
    assert_eq!(
        r.status, 404,
        "no device record from a claimed serial: {}",
        r.json
    );

    // The real Mac, with MachineInfo evidence, gets its record, its team and its steps.
    let mac = enroll_automated(&s.client, &s.url, &ca, "REAL-UDID-0007", serial)
        .await
        .unwrap();
    assert_eq!(authenticate(&mac).await.status, 200);
    mac.token_update(true).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let step = loop {
        if let Some(c) = mac.idle().await.unwrap() {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no setup step arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(step.request_type, "Settings");
    let r = api.get(&format!("/v1/devices/{serial}")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["device"]["enrollment_id"], "REAL-UDID-0007");
    assert_eq!(r.json["device"]["team"], "Eng");
    assert!(impostor.idle().await.unwrap().is_none());
}

/// Issue #11 item 16c: `/mdm/setup` answers only the currently pinned certificate, not one a
/// renewal replaced.
#[tokio::test]
async fn setup_status_refuses_a_retired_certificate() {
    let ca = TestDeviceCa::new().unwrap();
    let s = server(&ca).await;
    let mut mac = enrolled_mac(&s, &ca, "00008103-000A1B2C3D4E0008", "C02RETIRE08").await;
    assert_eq!(mac.setup_status().await.unwrap().0, 200);
    let old = mac.identity.clone();
    mac.identity = scep::renew(&s.client, &format!("{}/scep", s.url), &mac.identity)
        .await
        .unwrap();
    assert!(mac.idle().await.unwrap().is_none());
    assert_eq!(mac.setup_status().await.unwrap().0, 200);
    mac.identity = old;
    assert_eq!(mac.setup_status().await.unwrap().0, 403);
}

/// Attack 3 repeated against the real `pomona serve` binary (default configuration plus a test
/// device CA): refused with a 4xx well within a second, and the real Mac keeps its token.
#[tokio::test]
async fn the_takeover_against_pomona_serve_is_refused() {
    use pomona_testkit::server::{ServeCa, ServeProcess};
    let dir = tempfile::tempdir().unwrap();
    let serve_ca = ServeCa::write(dir.path()).unwrap();
    let env = serve_ca.env("identity-serve-api-key-0123456789");
    let mut p = ServeProcess::start(&dir.path().join("data"), &env, &[])
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let udid = "00008103-000A1B2C3D4E0009";
    let mac = enroll_automated(&client, &p.url, &serve_ca.device_ca, udid, "C02SERVE09")
        .await
        .unwrap();
    mac.enroll().await.unwrap();
    assert_eq!(set_bootstrap(&mac, TOKEN).await.status, 200);

    let profile = Profile::parse(&download_profile(&client, &p.url, None).await.unwrap()).unwrap();
    let mut attacker = profile.enroll(&client).await.unwrap();
    attacker.udid = udid.to_owned();
    let started = std::time::Instant::now();
    let r = authenticate(&attacker).await;
    assert!(
        (400..500).contains(&r.status),
        "takeover answered {}",
        r.status
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let r = get_bootstrap(&attacker).await;
    assert!((400..500).contains(&r.status), "{}", r.status);
    let r = get_bootstrap(&mac).await;
    assert_eq!(r.status, 200);
    assert_eq!(bootstrap_of(&r).as_deref(), Some(TOKEN));
    p.kill().await.unwrap();
}
