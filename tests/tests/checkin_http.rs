//! The check-in protocol end to end over real HTTP on loopback (`docs/protocol.md`, from
//! `#check-in-messages` to `#http-status-policy`).

use plist::{Dictionary, Value};
use pomona::wire::cms::SignatureStyle;
use pomona_testkit::device::{Transport, xml};
use pomona_testkit::server::TestServer;
use serde_json::json;

fn profile_list() -> Vec<u8> {
    let uuid = uuid::Uuid::new_v4().to_string();
    let mut cmd = Dictionary::new();
    cmd.insert("RequestType".into(), "ProfileList".into());
    let mut d = Dictionary::new();
    d.insert("CommandUUID".into(), uuid.into());
    d.insert("Command".into(), cmd.into());
    xml(&d)
}

/// The queue conformance sequence (`docs/protocol.md#queue-conformance-sequence`), driven by a
/// device with a real-device-style signature (indefinite-length BER, SHA-1, no signed attributes).
#[tokio::test]
async fn conformance_sequence_over_http() {
    let server = TestServer::start().await.unwrap();
    let api = server.api();
    let mut dev = server.device().await.unwrap();
    dev.transport = Transport::Signature(SignatureStyle::BerNoAttributes);
    dev.enroll().await.unwrap();
    let id = dev.udid.as_str();

    assert!(dev.idle().await.unwrap().is_none(), "Idle → nothing");
    let c1 = profile_list();
    let r = api.enqueue_raw(&[id], c1.clone(), false).await.unwrap();
    assert_eq!(
        r.status, 207,
        "queued, but push is not configured: {}",
        r.json
    );
    assert!(
        r.json["status"][id]["push_error"]
            .as_str()
            .unwrap()
            .contains("APNs is not configured")
    );
    let c1_uuid = r.json["command_uuid"].as_str().unwrap().to_owned();
    let r = api.enqueue_raw(&[id], profile_list(), true).await.unwrap();
    let c2_uuid = r.json["command_uuid"].as_str().unwrap().to_owned();

    let got = dev.idle().await.unwrap().unwrap();
    assert_eq!(got.uuid, c1_uuid, "Idle → C1");
    assert_eq!(got.raw, c1, "the exact enqueued bytes");
    let got = dev.acknowledge(&c1_uuid).await.unwrap().unwrap();
    assert_eq!(got.uuid, c2_uuid, "Ack C1 → C2");
    assert!(
        dev.acknowledge(&c2_uuid).await.unwrap().is_none(),
        "Ack C2 → nothing"
    );

    let c3 = api
        .command(
            &[id],
            "DeviceInformation",
            json!({"Queries": ["OSVersion"]}),
        )
        .await
        .unwrap();
    assert_eq!(dev.idle().await.unwrap().unwrap().uuid, c3, "Idle → C3");
    assert!(
        dev.not_now(&c3).await.unwrap().is_none(),
        "NotNow C3 → nothing"
    );
    assert_eq!(dev.idle().await.unwrap().unwrap().uuid, c3, "Idle → C3");
    assert!(
        dev.acknowledge(&c3).await.unwrap().is_none(),
        "Ack C3 → nothing"
    );

    let c4 = api.command(&[id], "ProfileList", json!({})).await.unwrap();
    dev.authenticate().await.unwrap();
    assert!(
        dev.idle().await.unwrap().is_none(),
        "re-Authenticate clears the queue"
    );
    let c4 = api.get(&format!("/v1/commands/{c4}")).await.unwrap();
    assert_eq!(c4.json["targets"][0]["state"], "cancelled");

    // The acknowledged command carries its result.
    let r = api.get(&format!("/v1/commands/{c1_uuid}")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json["targets"][0]["state"], "acknowledged");
    assert_eq!(r.json["targets"][0]["result"]["Status"], "Acknowledged");
    server.stop().await;
}

#[tokio::test]
async fn both_signature_styles_and_proxy_header_are_accepted() {
    let server = TestServer::start().await.unwrap();
    for transport in [
        Transport::Signature(SignatureStyle::DerWithAttributes),
        Transport::Signature(SignatureStyle::BerNoAttributes),
        Transport::ProxyHeader("X-Client-Cert".into()),
    ] {
        let mut dev = server.device().await.unwrap();
        dev.transport = transport.clone();
        dev.enroll()
            .await
            .unwrap_or_else(|e| panic!("{transport:?}: {e}"));
        assert!(dev.idle().await.unwrap().is_none());
    }
    server.stop().await;
}

#[tokio::test]
async fn identity_is_checked_and_never_answered_with_401() {
    let server = TestServer::start().await.unwrap();
    let dev = server.device().await.unwrap();
    dev.enroll().await.unwrap();

    // No identity at all.
    let mut anon = server.device().await.unwrap();
    anon.udid = dev.udid.clone();
    anon.transport = Transport::Anonymous;
    let mut idle = Dictionary::new();
    idle.insert("UDID".into(), dev.udid.clone().into());
    idle.insert("Status".into(), "Idle".into());
    let r = anon.report(&idle).await.unwrap();
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));

    // Another valid certificate claiming this device: refused, pinned identity wins.
    let mut imposter = server.device().await.unwrap();
    imposter.udid = dev.udid.clone();
    let r = imposter.report(&idle).await.unwrap();
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("does not match"));

    // A certificate from a foreign CA.
    let foreign_ca = pomona::ca::CertificateAuthority::generate(&Default::default()).unwrap();
    let mut stranger = server.device().await.unwrap();
    stranger.identity = pomona_testkit::device::DeviceIdentity::issue(&foreign_ca, "x").unwrap();
    let r = stranger
        .checkin(&{
            let mut d = Dictionary::new();
            d.insert("MessageType".into(), "Authenticate".into());
            d.insert("UDID".into(), stranger.udid.clone().into());
            d.insert("Topic".into(), "t".into());
            d
        })
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("not trusted"));

    // Re-using an enrolled device's certificate for another UDID at Authenticate.
    let mut thief = server.device().await.unwrap();
    thief.identity = dev.identity.clone();
    let err = thief.authenticate().await.unwrap_err().to_string();
    assert!(err.contains("already associated"), "{err}");

    // Messages before Authenticate.
    let newcomer = server.device().await.unwrap();
    let err = newcomer.token_update(false).await.unwrap_err().to_string();
    assert!(err.contains("must Authenticate first"), "{err}");

    // Garbage signature.
    let r = server
        .client
        .put(format!("{}/mdm/connect", server.url))
        .header("Mdm-Signature", "bm90IGEgc2lnbmF0dXJl")
        .body(xml(&idle))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The genuine device is unaffected.
    assert!(dev.idle().await.unwrap().is_none());
    server.stop().await;
}

#[tokio::test]
async fn user_channels_cascade_on_checkout() {
    let server = TestServer::start().await.unwrap();
    let api = server.api();
    let dev = server.device().await.unwrap();
    dev.enroll().await.unwrap();
    dev.user_token_update("USER-GUID-1", "jane").await.unwrap();
    let user_id = format!("{}:USER-GUID-1", dev.udid);
    let r = api
        .get(&format!("/v1/enrollments/{user_id}"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["enabled"], true);
    assert_eq!(r.json["user_short_name"], "jane");
    assert_eq!(r.json["parent"], dev.udid.as_str());

    dev.check_out().await.unwrap();
    let r = api
        .get(&format!("/v1/enrollments/{user_id}"))
        .await
        .unwrap();
    assert_eq!(
        r.json["enabled"], false,
        "device checkout disables its user channels"
    );
    let r = api
        .get(&format!("/v1/enrollments/{}", dev.udid))
        .await
        .unwrap();
    assert_eq!(r.json["enabled"], false);
    server.stop().await;
}

#[tokio::test]
async fn other_message_types() {
    let server = TestServer::start().await.unwrap();
    let dev = server.device().await.unwrap();
    dev.enroll().await.unwrap();
    let msg = |t: &str| {
        let mut d = Dictionary::new();
        d.insert("MessageType".into(), t.into());
        d.insert("UDID".into(), dev.udid.clone().into());
        d
    };

    // Bootstrap token: empty before, stored sealed, returned exactly.
    let r = dev.checkin(&msg("GetBootstrapToken")).await.unwrap();
    assert_eq!((r.status, r.body.len()), (200, 0));
    let mut set = msg("SetBootstrapToken");
    set.insert(
        "BootstrapToken".into(),
        Value::Data(b"bootstrap-secret".to_vec()),
    );
    assert_eq!(dev.checkin(&set).await.unwrap().status, 200);
    let r = dev.checkin(&msg("GetBootstrapToken")).await.unwrap();
    let v = Value::from_reader(std::io::Cursor::new(&r.body)).unwrap();
    assert_eq!(
        v.as_dictionary().unwrap().get("BootstrapToken"),
        Some(&Value::Data(b"bootstrap-secret".to_vec()))
    );

    // UserAuthenticate is declined with 410 by default.
    let mut ua = msg("UserAuthenticate");
    ua.insert("UserID".into(), "NET-USER".into());
    assert_eq!(dev.checkin(&ua).await.unwrap().status, 410);

    // Declarative Management: a valid, empty declaration set.
    let mut ddm = msg("DeclarativeManagement");
    ddm.insert("Endpoint".into(), "tokens".into());
    let r = dev.checkin(&ddm).await.unwrap();
    assert_eq!(r.status, 200);
    let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(j["SyncTokens"]["DeclarationsToken"].is_string());
    ddm.insert("Endpoint".into(), "declaration-items".into());
    let j: serde_json::Value =
        serde_json::from_slice(&dev.checkin(&ddm).await.unwrap().body).unwrap();
    assert_eq!(j["Declarations"]["Configurations"], json!([]));
    ddm.insert("Endpoint".into(), "declaration/configuration/x".into());
    assert_eq!(dev.checkin(&ddm).await.unwrap().status, 404);

    // GetToken without a token service: a precise 400, never a 401.
    let mut gt = msg("GetToken");
    gt.insert("TokenServiceType".into(), "com.apple.maid".into());
    let r = dev.checkin(&gt).await.unwrap();
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("com.apple.maid"));

    // ReturnToService: not enabled.
    let r = dev.checkin(&msg("ReturnToService")).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("ReturnToService"));
    server.stop().await;
}

#[tokio::test]
async fn events_are_durable_and_streamed() {
    let server = TestServer::start().await.unwrap();
    let mut live = server.engine.subscribe();
    let api = server.api();
    let dev = server.device().await.unwrap();
    dev.enroll().await.unwrap();
    let uuid = api
        .command(&[&dev.udid], "ProfileList", json!({}))
        .await
        .unwrap();
    dev.drain().await.unwrap();

    let r = api.get("/v1/events?after=0").await.unwrap();
    let kinds: Vec<&str> = r.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "enrollment.authenticated",
            "enrollment.token_updated",
            "enrollment.completed",
            "command.enqueued",
            "command.result"
        ]
    );
    let result = &r.json["events"][4];
    assert_eq!(result["data"]["command_uuid"], uuid.as_str());
    assert_eq!(result["data"]["status"], "Acknowledged");
    let next = r.json["next"].as_u64().unwrap();
    let r = api.get(&format!("/v1/events?after={next}")).await.unwrap();
    assert_eq!(r.json["events"], json!([]));

    let first = live.recv().await.unwrap();
    assert_eq!(first.kind, "enrollment.authenticated");
    server.stop().await;
}

#[tokio::test]
async fn admin_api_auth_and_errors() {
    let server = TestServer::start().await.unwrap();
    let url = &server.url;
    let c = &server.client;
    let r = c.get(format!("{url}/v1/enrollments")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(format!("{url}/v1/enrollments"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(format!("{url}/v1/enrollments"))
        .basic_auth("anyone", Some(pomona_testkit::server::TEST_API_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Device endpoints never answer 401, whatever the API key situation.
    let r = c
        .put(format!("{url}/mdm/connect"))
        .body("junk")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let api = server.api();
    let r = api
        .post_json(
            "/v1/commands",
            &json!({"targets": ["nobody"], "request_type": "ProfileList"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json["targets"][0]["error"], "unknown enrollment nobody");
    let r = api
        .post_json(
            "/v1/commands",
            &json!({"targets": [], "request_type": "ProfileList"}),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json["error"].as_str().unwrap()),
        (400, "targets must not be empty")
    );
    let r = api
        .post_json(
            "/v1/commands",
            &json!({"targets": ["x"], "request_type": "P", "parameters": {"a": null}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(
        r.json["error"].as_str().unwrap().contains("null"),
        "{}",
        r.json
    );
    let r = api
        .enqueue_raw(&["x"], b"not a plist".to_vec(), true)
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(
        r.json["command_error"]
            .as_str()
            .unwrap()
            .contains("not a valid property list")
    );
    let r = api.get("/v1/commands/nope").await.unwrap();
    assert_eq!(r.status, 404);
    let r = api.get("/v1/enrollments?limit=abc").await.unwrap();
    assert_eq!(r.status, 400);

    // Duplicate UUIDs are refused; the first command stays intact.
    let dev = server.device().await.unwrap();
    dev.enroll().await.unwrap();
    let body =
        json!({"targets": [dev.udid], "request_type": "ProfileList", "command_uuid": "DUP-1"});
    assert_eq!(
        api.post_json("/v1/commands", &body).await.unwrap().status,
        207
    );
    let r = api.post_json("/v1/commands", &body).await.unwrap();
    assert_eq!(r.status, 409);
    assert!(
        r.json["command_error"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    let q = api
        .get(&format!("/v1/enrollments/{}/queue", dev.udid))
        .await
        .unwrap();
    assert_eq!(q.json["commands"].as_array().unwrap().len(), 1);
    assert_eq!(
        api.delete(&format!("/v1/enrollments/{}/queue/DUP-1", dev.udid))
            .await
            .unwrap()
            .status,
        204
    );
    assert_eq!(
        api.delete(&format!("/v1/enrollments/{}/queue/DUP-1", dev.udid))
            .await
            .unwrap()
            .status,
        404
    );

    for path in ["/health", "/version", "/metrics"] {
        let r = c.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let metrics = c
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("pomona_checkins_total{message_type=\"Authenticate\"} 1"),
        "{metrics}"
    );
    server.stop().await;
}
