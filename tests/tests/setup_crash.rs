//! The setup flow survives SIGKILL: the real `pomona serve` binary is killed again and again
//! while devices wait in Setup Assistant and acknowledge their steps; after each restart the
//! flow resumes from its durable cursor and records. Every step reaches each device as exactly
//! one command, and each device is released exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pomona_testkit::api::ApiClient;
use pomona_testkit::device::Device;
use pomona_testkit::enroll::enroll_automated;
use pomona_testkit::server::{ServeCa, ServeProcess};
use serde_json::json;

const DEVICES: usize = 5;
const STEPS: usize = 4;

#[tokio::test]
async fn sigkill_during_setup_neither_loses_nor_repeats_a_step() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve_ca = ServeCa::write(dir.path()).unwrap();
    let key = "setup-crash-api-key-0123456789";
    let env = serve_ca.env(key);
    let client = reqwest::Client::new();
    let mut p = ServeProcess::start(&data, &env, &[]).await.unwrap();
    let api = ApiClient::new(&p.url, key, client.clone());
    let r = api
        .put_bytes(
            "/v1/plugins/teams",
            br#"return { place = function() return { team = "Eng" } end }"#.to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.json);
    let steps: Vec<_> = (0..STEPS)
        .map(|n| {
            json!({"id": format!("s{n}"), "command": {"request_type": "Settings",
                "parameters": {"Settings": [{"Item": "DeviceName", "DeviceName": format!("step {n}")}]}}})
        })
        .collect();
    let r = api
        .put_json("/v1/teams/Eng", &json!({ "setup_steps": steps }))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.json);

    // Enrolled the way Automated Device Enrollment does (signed MachineInfo, then SCEP): only a
    // serial number from such evidence gets a team's setup steps.
    let mut devices: Vec<Device> = Vec::new();
    for i in 0..DEVICES {
        let udid = format!("SETUP-CRASH-UDID-{i}");
        let serial = format!("C02CRASH{i:04}");
        devices.push(
            enroll_automated(&client, &p.url, &serve_ca.device_ca, &udid, &serial)
                .await
                .unwrap(),
        );
    }
    for d in &devices {
        d.authenticate().await.unwrap();
        d.token_update(true).await.unwrap();
    }
    // Killed at once: the flow may not have seen the enrollments yet.
    p.kill().await.unwrap();

    // Per device: every distinct command UUID it was sent, with its request type and body.
    let mut sent: BTreeMap<String, BTreeMap<String, (String, Vec<u8>)>> = BTreeMap::new();
    let mut released: BTreeSet<String> = BTreeSet::new();
    for round in 0..40 {
        p = ServeProcess::start(&data, &env, &[]).await.unwrap();
        for d in &mut devices {
            d.checkin_url = format!("{}/mdm/checkin", p.url);
            d.server_url = format!("{}/mdm/connect", p.url);
        }
        for d in &devices {
            if released.contains(&d.serial) {
                continue;
            }
            // Early rounds acknowledge one command and crash; later ones run to the end.
            let budget = if round < 6 { 1 } else { STEPS + 1 };
            let Ok(mut next) = d.idle().await else { break };
            for _ in 0..budget {
                let Some(c) = next.take() else { break };
                sent.entry(d.serial.clone())
                    .or_default()
                    .insert(c.uuid.clone(), (c.request_type.clone(), c.raw.clone()));
                if c.request_type == "DeviceConfigured" {
                    released.insert(d.serial.clone());
                }
                match d.acknowledge(&c.uuid).await {
                    Ok(n) => next = n,
                    Err(_) => break,
                }
            }
        }
        if released.len() == DEVICES {
            break;
        }
        if round < 6 {
            p.kill().await.unwrap();
        } else {
            // Give the flow a moment to queue what the acknowledgements decided.
            tokio::time::sleep(Duration::from_millis(200)).await;
            p.kill().await.unwrap();
        }
    }
    p.kill().await.unwrap();
    assert_eq!(released.len(), DEVICES, "every device released: {sent:?}");
    for d in &devices {
        let got = &sent[&d.serial];
        let kinds: Vec<&str> = got.values().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "Settings").count(),
            STEPS,
            "{}: one command per step, never two: {kinds:?}",
            d.serial
        );
        assert_eq!(
            kinds.iter().filter(|k| **k == "DeviceConfigured").count(),
            1,
            "{}: released once",
            d.serial
        );
        let bodies: BTreeSet<String> = got
            .values()
            .filter(|(k, _)| k == "Settings")
            .map(|(_, raw)| {
                let s = String::from_utf8_lossy(raw);
                let at = s.find("step ").expect("a step's DeviceName");
                s[at..at + 6].to_owned()
            })
            .collect();
        assert_eq!(bodies.len(), STEPS, "each step once: {bodies:?}");
    }
    let p = ServeProcess::start(&data, &env, &[]).await.unwrap();
    let api = ApiClient::new(&p.url, key, client.clone());
    let events = api.get("/v1/events?after=0&limit=1000").await.unwrap().json;
    let released_events = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "device.released")
        .count();
    assert_eq!(released_events, DEVICES, "one device.released per device");
}
