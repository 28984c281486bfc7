//! [`PluginStore`] on redb: settings in `plugins`, sources in `plugin_sources`.

use async_trait::async_trait;

use super::tables::{PLUGIN_SOURCES, PLUGINS};
use super::{RedbStore, backend, decode, encode};
use crate::store::{Emit, Event, PluginStore, StoreError, StoreResult, StoredPlugin};

#[async_trait]
impl PluginStore for RedbStore {
    async fn put_plugin_emitting(
        &self,
        plugin: &StoredPlugin,
        emit: Emit<()>,
    ) -> StoreResult<((), Vec<Event>)> {
        let p = plugin.clone();
        self.write_emitting(emit, time::OffsetDateTime::now_utc(), move |txn| {
            txn.open_table(PLUGINS)
                .map_err(backend)?
                .insert(p.name.as_str(), encode(&p).as_slice())
                .map_err(backend)?;
            txn.open_table(PLUGIN_SOURCES)
                .map_err(backend)?
                .insert(p.name.as_str(), p.source.as_slice())
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn delete_plugin_emitting(
        &self,
        name: &str,
        emit: Emit<bool>,
    ) -> StoreResult<(bool, Vec<Event>)> {
        let name = name.to_owned();
        self.write_emitting(emit, time::OffsetDateTime::now_utc(), move |txn| {
            let existed = txn
                .open_table(PLUGINS)
                .map_err(backend)?
                .remove(name.as_str())
                .map_err(backend)?
                .is_some();
            txn.open_table(PLUGIN_SOURCES)
                .map_err(backend)?
                .remove(name.as_str())
                .map_err(backend)?;
            Ok(existed)
        })
        .await
    }

    async fn plugins(&self) -> StoreResult<Vec<StoredPlugin>> {
        self.read(|txn| {
            let meta = txn.open_table(PLUGINS).map_err(backend)?;
            let sources = txn.open_table(PLUGIN_SOURCES).map_err(backend)?;
            let mut out = Vec::new();
            for e in meta.range::<&str>(..).map_err(backend)? {
                let (k, v) = e.map_err(backend)?;
                let name = k.value();
                let mut p: StoredPlugin = decode(&format!("plugin {name}"), v.value())?;
                p.source = sources
                    .get(name)
                    .map_err(backend)?
                    .ok_or_else(|| StoreError::Corrupt {
                        what: format!("plugin {name}"),
                        detail: "its source is missing".into(),
                    })?
                    .value()
                    .to_vec();
                out.push(p);
            }
            out.sort_by(|a, b| a.order.cmp(&b.order).then_with(|| a.name.cmp(&b.name)));
            Ok(out)
        })
    }
}
