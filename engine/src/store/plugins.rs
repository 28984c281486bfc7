//! Stored policy plugins: the ones uploaded through the API, so they survive a restart.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Emit, Event, StoreResult, Timestamp};

/// An uploaded plugin: its source and how the chain uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPlugin {
    /// Unique name.
    pub name: String,
    /// The `.lua` source or `.wasm` component.
    #[serde(skip)]
    pub source: Vec<u8>,
    /// Hooks it is asked for (`None`: every hook it implements).
    pub hooks: Option<Vec<String>>,
    /// Its configuration values.
    pub config: std::collections::BTreeMap<String, String>,
    /// Position in the chain (lower first).
    pub order: u64,
    /// When it was uploaded.
    #[serde(with = "time::serde::rfc3339")]
    pub uploaded_at: Timestamp,
}

/// Storage of uploaded plugins.
#[async_trait]
pub trait PluginStore: Send + Sync {
    /// Create or replace a plugin (source and settings in one transaction).
    async fn put_plugin(&self, plugin: &StoredPlugin) -> StoreResult<()> {
        self.put_plugin_emitting(plugin, Emit::none())
            .await
            .map(|(v, _)| v)
    }

    /// [`Self::put_plugin`], appending `emit`'s events (built from the outcome) in the same
    /// transaction.
    async fn put_plugin_emitting(
        &self,
        plugin: &StoredPlugin,
        emit: Emit<()>,
    ) -> StoreResult<((), Vec<Event>)>;
    /// Delete a plugin; whether it existed.
    async fn delete_plugin(&self, name: &str) -> StoreResult<bool> {
        self.delete_plugin_emitting(name, Emit::none())
            .await
            .map(|(v, _)| v)
    }

    /// [`Self::delete_plugin`], appending `emit`'s events (built from the outcome) in the same
    /// transaction.
    async fn delete_plugin_emitting(
        &self,
        name: &str,
        emit: Emit<bool>,
    ) -> StoreResult<(bool, Vec<Event>)>;
    /// Every stored plugin, in chain order.
    async fn plugins(&self) -> StoreResult<Vec<StoredPlugin>>;
}
