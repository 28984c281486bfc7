//! Conformance checks of [`PluginStore`].

use std::collections::BTreeMap;

use super::*;

fn plugin(name: &str, order: u64, source: &[u8]) -> StoredPlugin {
    StoredPlugin {
        name: name.into(),
        source: source.to_vec(),
        hooks: Some(vec!["auto-assign".into()]),
        config: BTreeMap::from([("team".to_owned(), format!("{name}-team"))]),
        order,
        uploaded_at: time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
    }
}

/// Plugins: source and settings round-trip (a `.wasm` component's bytes exactly), the chain
/// order, replacement, deletion (whether it existed).
pub async fn plugins<S: Store + ?Sized>(store: &S) {
    assert!(store.plugins().await.unwrap().is_empty());
    assert!(!store.delete_plugin("late").await.unwrap());
    let late = plugin("late", 20, b"return {}");
    let early = plugin("early", 10, &[0, 0x61, 0x73, 0x6d, 0xff, 0xfe]);
    store.put_plugin(&late).await.unwrap();
    store.put_plugin(&early).await.unwrap();
    assert_eq!(
        store.plugins().await.unwrap(),
        vec![early.clone(), late.clone()],
        "chain order, sources included"
    );
    let mut moved = plugin("late", 5, b"return { changed = true }");
    moved.hooks = None;
    moved.config.clear();
    store.put_plugin(&moved).await.unwrap();
    assert_eq!(
        store.plugins().await.unwrap(),
        vec![moved.clone(), early.clone()],
        "source and settings replaced together"
    );
    assert!(store.delete_plugin("late").await.unwrap());
    assert!(!store.delete_plugin("late").await.unwrap());
    assert_eq!(store.plugins().await.unwrap(), vec![early]);
}

/// `put_plugin_emitting` and `delete_plugin_emitting` (built from whether it existed) commit
/// their events with the change.
pub async fn plugin_emitting<S: Store + ?Sized>(store: &S) {
    let head = store.event_head().await.unwrap();
    let (_, written) = store
        .put_plugin_emitting(
            &plugin("p", 1, b"x"),
            Emit::events(vec![ev("test.plugin_put")]),
        )
        .await
        .unwrap();
    assert_eq!(kinds(&written), ["test.plugin_put"]);
    let existed = || Emit::with(|b: &bool| vec![ev(&format!("test.plugin_deleted.{b}"))]);
    let (gone, written) = store.delete_plugin_emitting("p", existed()).await.unwrap();
    assert!(gone);
    assert_eq!(kinds(&written), ["test.plugin_deleted.true"]);
    let (gone, _) = store.delete_plugin_emitting("p", existed()).await.unwrap();
    assert!(!gone);
    assert_eq!(
        kinds_after(store, head).await,
        [
            "test.plugin_put",
            "test.plugin_deleted.true",
            "test.plugin_deleted.false"
        ]
    );
    assert!(store.plugins().await.unwrap().is_empty());
}
