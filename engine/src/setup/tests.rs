//! Placement rules, without an engine: the built-in answer and the admin's lock.

use std::collections::BTreeMap;

use super::*;
use crate::policy::loader;
use crate::policy::{Limits, LoadedPlugin, PluginConfig};

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
