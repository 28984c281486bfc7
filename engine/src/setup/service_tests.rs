//! Placement rules, without an engine: the built-in answer and the admin's lock.

use std::collections::BTreeMap;

use super::*;
use crate::policy::loader;
use crate::policy::{Limits, LoadedPlugin, PluginConfig};
use crate::setup::place;

fn record(family: &str, team: Option<&str>, placed_by: Option<&str>) -> DeviceRecord {
    DeviceRecord {
        model: "MacBook Air".into(),
        device_family: family.into(),
        dep_server: Some("hq".into()),
        team: team.map(str::to_owned),
        placed_by: placed_by.map(str::to_owned),
        ..DeviceRecord::new(
            "C02TEST",
            DeviceStage::Synced,
            time::OffsetDateTime::now_utc(),
        )
    }
}

fn defaults() -> BTreeMap<String, String> {
    [("macos".to_string(), "Macs".to_string())].into()
}

fn chain_with(source: &str) -> PolicyChain {
    let chain = PolicyChain::new(None);
    let (runtime, plugin) = loader::load(
        "p",
        source.as_bytes(),
        &PluginConfig::new(),
        Limits::default(),
    )
    .unwrap();
    chain.upsert(std::sync::Arc::new(LoadedPlugin::new(
        "p",
        runtime,
        source.as_bytes(),
        plugin,
        None,
    )));
    chain
}

#[tokio::test]
async fn the_default_gives_the_server_default_team_then_keeps_it() {
    let chain = PolicyChain::new(None);
    let mut d = record("Mac", None, None);
    let ev = place(&chain, &mut d, &defaults()).await.expect("placed");
    assert_eq!(d.team.as_deref(), Some("Macs"));
    assert_eq!(d.placed_by.as_deref(), Some("default"));
    assert_eq!(ev.data["previous"], serde_json::Value::Null);
    assert!(
        place(&chain, &mut d, &defaults()).await.is_none(),
        "unchanged: no event"
    );
    let mut pad = record("iPad", None, None);
    assert!(place(&chain, &mut pad, &defaults()).await.is_none());
    assert_eq!(pad.team, None, "no default for iPads: no team");
}

#[tokio::test]
async fn a_plugin_moves_a_device_but_never_an_admins() {
    let chain = chain_with(r#"return { place = function(d) return { team = "Lab" } end }"#);
    let mut d = record("Mac", Some("Macs"), Some("default"));
    let ev = place(&chain, &mut d, &defaults()).await.expect("moved");
    assert_eq!(d.team.as_deref(), Some("Lab"));
    assert_eq!(ev.data["previous"], "Macs");
    assert_eq!(ev.data["by"], "p");
    let mut locked = record("Mac", Some("Sales"), Some(BY_ADMIN));
    assert!(place(&chain, &mut locked, &defaults()).await.is_none());
    assert_eq!(locked.team.as_deref(), Some("Sales"));
    let chain = chain_with(r#"return { place = function(d) return { no_team = true } end }"#);
    let mut d = record("Mac", Some("Macs"), Some("default"));
    place(&chain, &mut d, &defaults()).await.expect("taken out");
    assert_eq!(d.team, None);
}

#[test]
fn release_command_depends_on_the_channel() {
    let mut s = SetupRecord::new("E", "S", 1, time::OffsetDateTime::now_utc(), "default");
    assert_eq!(release_command(&s, "u").request_type, "DeviceConfigured");
    s.user_channel = true;
    assert_eq!(release_command(&s, "u").request_type, "UserConfigured");
}

/// Pushes nothing (the queued commands are not what these tests look at).
struct NoPush;

#[async_trait::async_trait]
impl crate::push::Pusher for NoPush {
    async fn push(&self, ids: &[EnrollmentId]) -> Vec<(EnrollmentId, crate::push::PushOutcome)> {
        ids.iter()
            .map(|id| (id.clone(), crate::push::PushOutcome::Failed("test".into())))
            .collect()
    }
}

fn service(
    dir: &std::path::Path,
    chain: PolicyChain,
) -> (SetupService, Arc<crate::store::redb::RedbStore>) {
    let store = Arc::new(
        crate::store::redb::RedbStore::open(dir.join("p.redb"), &crate::seal::SealKey::generate())
            .unwrap(),
    );
    let outbox = Outbox::new(store.clone(), 64);
    let commander = Arc::new(Commander::new(
        store.clone(),
        store.clone(),
        Arc::new(NoPush),
        outbox.clone(),
        Arc::new(crate::metrics::Metrics::default()),
        100,
    ));
    let service = SetupService::new(
        store.clone(),
        store.clone(),
        store.clone(),
        store.clone(),
        commander,
        Arc::new(chain),
        outbox,
        SetupOptions::default(),
    );
    (service, store)
}

/// Two events of one device in one batch: the `setup-steps` answer decided (without the lock)
/// for the second one saw the device before the first one placed it, so it is not used; the
/// event is decided again on the placed device. The setup gets the steps for its real team.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_decided_on_records_changed_since_is_decided_again() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain_with(
        r#"return {
            place = function(d) return { team = "Lab" } end,
            setup_steps = function(d)
              if d.team == "Lab" then return { { id = "lab", install_profile = "lab" } } end
              return { { id = "stale", install_profile = "stale" } }
            end,
        }"#,
    );
    let (service, store) = service(dir.path(), chain);
    let t = time::OffsetDateTime::now_utc();
    // A DEP device, linked to its enrollment, in no team yet.
    let device = DeviceRecord {
        enrollment_id: Some("E1".into()),
        ..DeviceRecord::new("C02TEST", DeviceStage::Synced, t)
    };
    store
        .apply(
            LifecycleWrite {
                devices: vec![device],
                ..Default::default()
            },
            t,
        )
        .await
        .unwrap();
    let id = EnrollmentId::new("E1".to_owned());
    service
        .outbox
        .publish(vec![
            event(
                kind::ENROLLMENT_AUTHENTICATED,
                Some(&id),
                json!({"verified_serial_number": "C02TEST", "udid": "E1"}),
            ),
            event(
                kind::ENROLLMENT_COMPLETED,
                Some(&id),
                json!({"kind": "device", "awaiting_configuration": true}),
            ),
        ])
        .await
        .unwrap();
    // The two events, and those the pass itself wrote (placement, setup start).
    assert!(service.pass().await.unwrap() >= 2);
    let d = store.device("C02TEST").await.unwrap().unwrap();
    assert_eq!(d.team.as_deref(), Some("Lab"));
    let setup = store.setup("E1").await.unwrap().expect("started");
    let ids: Vec<&str> = setup.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        ["lab"],
        "decided on the placed device, not the stale one"
    );
    assert_eq!(setup.steps_by, "p");
    // Started once: another pass changes neither the steps nor who started them.
    service.pass().await.unwrap();
    let again = store.setup("E1").await.unwrap().unwrap();
    assert_eq!(again.started_by, setup.started_by);
    assert_eq!(again.steps[0].command_uuid, setup.steps[0].command_uuid);
}
