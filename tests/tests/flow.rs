//! The seed flow end to end over real HTTP: Apple Business Manager lists a Mac → a Lua plugin
//! assigns its enrollment profile → a WASM plugin places it in a team → it enrolls through
//! signed MachineInfo and SCEP → the team's setup steps run while Setup Assistant waits → it is
//! released.

use std::time::{Duration, Instant};

use pomona::dep::DepOptions;
use pomona::enroll::EnrollOptions;
use pomona::setup::SetupOptions;
use pomona::wire::machine_info::{DeviceTrust, MachineInfo};
use pomona_testkit::abm::FakeAbm;
use pomona_testkit::api::ApiClient;
use pomona_testkit::enroll::{Profile, TestDeviceCa};
use pomona_testkit::server::TestServer;
use serde_json::{Value, json};

async fn ok(r: anyhow::Result<pomona_testkit::api::ApiReply>) -> Value {
    let r = r.unwrap();
    assert!((200..300).contains(&r.status), "{} {}", r.status, r.json);
    r.json
}

#[tokio::test]
async fn listed_assigned_placed_enrolled_set_up_released() {
    let abm = FakeAbm::start(50).await.unwrap();
    let device_ca = TestDeviceCa::new().unwrap();
    let trust = DeviceTrust::from_pem_bundle(&device_ca.trust_pem().unwrap()).unwrap();
    let s = TestServer::start_with(|b| {
        let mut enroll = EnrollOptions::new("http://unused");
        enroll.device_trust = trust;
        let mut dep = DepOptions::new("http://unused");
        dep.api_backoff = Duration::from_millis(5);
        b.enroll_options(enroll)
            .dep_options(dep)
            .setup_options(SetupOptions::default().with_poll(Duration::from_millis(50)))
    })
    .await
    .unwrap();
    let api: ApiClient = s.api();

    // Apple Business Manager, as an admin sets it up.
    ok(api
        .post_json("/v1/dep/servers", &json!({"name": "hq"}))
        .await)
    .await;
    let cert = s
        .client
        .get(format!("{}/v1/dep/servers/hq/certificate", s.url))
        .bearer_auth(pomona_testkit::server::TEST_API_KEY)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    ok(api
        .put_bytes("/v1/dep/servers/hq/token", abm.token_for(&cert).unwrap())
        .await)
    .await;
    ok(api
        .put_json(
            "/v1/dep/profiles/macs",
            &json!({"profile_name": "Macs", "is_supervised": true, "await_device_configured": true}),
        )
        .await)
    .await;
    let patch = s
        .client
        .patch(format!("{}/v1/dep/servers/hq", s.url))
        .bearer_auth(pomona_testkit::server::TEST_API_KEY)
        .json(&json!({"base_url": abm.url, "sync_interval_secs": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 200);

    // Policy: Lua assigns, WASM places, the team holds the setup experience.
    ok(api
        .put_bytes(
            "/v1/plugins/assign?hooks=auto-assign",
            br#"return { auto_assign = function(e)
                 if e.device_family == "Mac" and e.op_type ~= "deleted" then return { assign = "macs" } end
               end }"#
                .to_vec(),
        )
        .await)
    .await;
    ok(api
        .put_bytes(
            "/v1/plugins/teams?config.hooks=place&config.team=Lab",
            include_bytes!("../../plugins/dist/test-guest.wasm").to_vec(),
        )
        .await)
    .await;
    ok(api
        .put_json(
            "/v1/teams/Lab",
            &json!({"setup_steps": [
                {"id": "account", "account": {"username": "lab", "full_name": "Lab User", "lock": true}},
                {"id": "name", "command": {"request_type": "Settings", "parameters": {"Settings": [{"Item": "DeviceName", "DeviceName": "Lab Mac"}]}}}
            ]}),
        )
        .await)
    .await;

    // Apple lists a new Mac; the sync assigns and places it.
    let serial = "C02FLOW0001";
    abm.add_model(serial, "Mac", "MacBook Pro 14\"");
    ok(api.post_json("/v1/dep/servers/hq/sync", &json!({})).await).await;
    let d = ok(api.get(&format!("/v1/devices/{serial}")).await).await;
    assert_eq!(d["device"]["team"], "Lab", "{d}");
    assert_eq!(
        d["device"]["placed_by"], "teams",
        "the WASM plugin placed it"
    );
    assert_eq!(
        d["dep"]["assigned_profile"], "macs",
        "the Lua plugin assigned it"
    );
    assert_eq!(abm.assignments(serial).len(), 1);

    // The Mac unboxes: signed MachineInfo, SCEP, the check-in protocol.
    let info = MachineInfo {
        udid: uuid::Uuid::new_v4().to_string().to_uppercase(),
        serial: serial.into(),
        product: Some("Mac15,3".into()),
        os_version: Some("15.1".into()),
        ..Default::default()
    };
    let r = s
        .client
        .post(format!("{}/mdm/enroll", s.url))
        .body(device_ca.sign(&info).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let profile = Profile::parse(&r.bytes().await.unwrap()).unwrap();
    let mut mac = profile.enroll(&s.client).await.unwrap();
    mac.udid = info.udid.clone();
    mac.serial = serial.into();
    mac.authenticate().await.unwrap();
    mac.token_update(true).await.unwrap();

    // Setup Assistant waits while the team's steps arrive, then the Mac is released.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    let mut next = None;
    loop {
        let c = match next.take() {
            Some(c) => c,
            None => match mac.idle().await.unwrap() {
                Some(c) => c,
                None => {
                    assert!(Instant::now() < deadline, "not released; saw {seen:?}");
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    continue;
                }
            },
        };
        seen.push(c.request_type.clone());
        next = mac.acknowledge(&c.uuid).await.unwrap();
        if c.request_type == "DeviceConfigured" {
            break;
        }
    }
    assert_eq!(
        seen,
        ["AccountConfiguration", "Settings", "DeviceConfigured"],
        "each step once, then the release"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let d = loop {
        let d = ok(api.get(&format!("/v1/devices/{serial}")).await).await;
        if d["device"]["stage"] == "released" || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(d["device"]["stage"], "released", "{d}");
    assert_eq!(d["device"]["udid"], info.udid.as_str());
    assert_eq!(d["setup"]["by"], "default");
    assert_eq!(d["setup"]["reason"], "required steps finished");

    // The lifecycle, in order, in the durable event log (what webhooks deliver).
    let events = ok(api.get("/v1/events?after=0&limit=1000").await).await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["data"]["serial_number"] == serial
                || e["enrollment_id"].as_str() == Some(info.udid.as_str())
        })
        .map(|e| e["kind"].as_str().unwrap())
        .filter(|k| {
            [
                "dep.device.added",
                "device.placed",
                "device.assigned",
                "enroll.machine_info",
                "enrollment.authenticated",
                "enrollment.completed",
                "setup.started",
                "device.released",
            ]
            .contains(k)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "device.placed",
            "dep.device.added",
            "device.assigned",
            "enroll.machine_info",
            "enrollment.authenticated",
            "enrollment.completed",
            "setup.started",
            "device.released"
        ]
    );
    s.stop().await;
}
