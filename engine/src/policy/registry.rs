//! Plugin management: plugins declared in configuration and uploaded through the API, loaded,
//! self-checked and swapped into the [`PolicyChain`] atomically.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;

use super::chain::{LoadedPlugin, PluginInfo, PolicyChain};
use super::{Hook, Limits, PluginConfig, PluginError, loader};
use crate::events::{Outbox, event, kind};
use crate::store::{Emit, NewEvent, PluginStore, StoreError, StoredPlugin};

/// A plugin declared in configuration (`[[plugins]]`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DeclaredPlugin {
    /// Unique name.
    pub name: String,
    /// The `.lua` or `.wasm` file.
    pub path: PathBuf,
    /// Hooks to ask it for (default: every hook it implements).
    #[serde(default)]
    pub hooks: Option<Vec<Hook>>,
    /// Its configuration values.
    #[serde(default)]
    pub config: PluginConfig,
    /// Its limits (default: the engine's).
    #[serde(default)]
    pub limits: Option<Limits>,
}

impl DeclaredPlugin {
    /// The plugin `name` in the file at `path`, asked for every hook it implements, with no
    /// configuration values and the engine's limits.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
            hooks: None,
            config: PluginConfig::new(),
            limits: None,
        }
    }
}

crate::setters::with_setters!(DeclaredPlugin {
    with_hooks => hooks: Option<Vec<Hook>>,
    with_config => config: PluginConfig,
    with_limits => limits: Option<Limits>,
});

/// Why a registry operation failed. Nothing changes when one does.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The name is not usable in a URL path.
    #[error("invalid plugin name {0:?}: use 1-64 letters, digits, '-', '_' or '.'")]
    InvalidName(String),
    /// The plugin is declared in the configuration file; change it there.
    #[error("plugin {0:?} is declared in the configuration; change it there")]
    Declared(String),
    /// No such plugin.
    #[error("no plugin named {0:?}")]
    NotFound(String),
    /// A declared plugin's file could not be read.
    #[error("cannot read plugin {name:?} from {path}: {source}")]
    Io {
        /// The plugin.
        name: String,
        /// Its path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The plugin did not load or failed its self-check.
    #[error("plugin {name:?}: {error}")]
    Plugin {
        /// The plugin.
        name: String,
        /// What went wrong.
        #[source]
        error: PluginError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Loads plugins into a chain and keeps uploaded ones in the store.
pub struct PluginRegistry {
    chain: Arc<PolicyChain>,
    store: Arc<dyn PluginStore>,
    outbox: Outbox,
    limits: Limits,
    declared: Vec<String>,
    write: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRegistry")
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

/// Whether `name` is a usable plugin name.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

impl PluginRegistry {
    /// Load the declared plugins (any failure is an error: the configuration is wrong), then the
    /// uploaded ones from the store (a failure there is logged and recorded, and that plugin
    /// skipped, so one bad upload never stops the engine from starting).
    pub async fn open(
        chain: Arc<PolicyChain>,
        store: Arc<dyn PluginStore>,
        outbox: Outbox,
        limits: Limits,
        declared: &[DeclaredPlugin],
    ) -> Result<PluginRegistry, RegistryError> {
        let mut loaded = Vec::new();
        for d in declared {
            if !valid_name(&d.name) {
                return Err(RegistryError::InvalidName(d.name.clone()));
            }
            let source = std::fs::read(&d.path).map_err(|source| RegistryError::Io {
                name: d.name.clone(),
                path: d.path.display().to_string(),
                source,
            })?;
            let limits = d.limits.unwrap_or(limits);
            loaded.push(Arc::new(
                load(&d.name, source, d.hooks.as_deref(), &d.config, limits).await?,
            ));
        }
        let declared_names: Vec<String> = declared.iter().map(|d| d.name.clone()).collect();
        for p in store.plugins().await? {
            if declared_names.contains(&p.name) {
                tracing::warn!(plugin = %p.name, "uploaded plugin shadowed by a declared one");
                continue;
            }
            let hooks = parse_hooks(p.hooks.as_deref());
            match load(&p.name, p.source, hooks.as_deref(), &p.config, limits).await {
                Ok(l) => loaded.push(Arc::new(l)),
                Err(e) => {
                    tracing::error!(error = %e, "stored plugin skipped");
                    let data = json!({"plugin": p.name, "hook": null, "error": e.to_string(), "limit": false});
                    let _ = outbox
                        .publish(vec![event(kind::PLUGIN_FAILED, None, data)])
                        .await;
                }
            }
        }
        chain.replace(loaded);
        Ok(PluginRegistry {
            chain,
            store,
            outbox,
            limits,
            declared: declared_names,
            write: tokio::sync::Mutex::new(()),
        })
    }

    /// The chain this registry manages.
    pub fn chain(&self) -> &Arc<PolicyChain> {
        &self.chain
    }

    /// Every plugin in chain order, with counters.
    pub fn list(&self) -> Vec<PluginInfo> {
        self.chain.plugins().iter().map(|p| p.describe()).collect()
    }

    /// One plugin.
    pub fn get(&self, name: &str) -> Option<PluginInfo> {
        self.chain
            .plugins()
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.describe())
    }

    /// Upload (or replace) a plugin. It is loaded and self-checked first; only then stored and
    /// swapped in, so the previous version serves until the new one is ready, and a plugin that
    /// fails to load changes nothing.
    pub async fn put(
        &self,
        name: &str,
        source: Vec<u8>,
        hooks: Option<Vec<Hook>>,
        config: PluginConfig,
    ) -> Result<PluginInfo, RegistryError> {
        if !valid_name(name) {
            return Err(RegistryError::InvalidName(name.to_owned()));
        }
        if self.declared.iter().any(|d| d == name) {
            return Err(RegistryError::Declared(name.to_owned()));
        }
        let _guard = self.write.lock().await;
        let loaded = load(name, source.clone(), hooks.as_deref(), &config, self.limits).await?;
        let existing = self.store.plugins().await?;
        let order = existing
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.order)
            .unwrap_or_else(|| existing.iter().map(|p| p.order + 1).max().unwrap_or(0));
        let info = loaded.describe();
        let events = self
            .store
            .put_plugin_emitting(
                &StoredPlugin {
                    name: name.to_owned(),
                    source,
                    hooks: hooks.map(|h| h.iter().map(|h| h.name().to_owned()).collect()),
                    config,
                    order,
                    uploaded_at: time::OffsetDateTime::now_utc(),
                },
                Emit::events(vec![changed(name, "loaded", Some(&info))]),
            )
            .await?
            .1;
        self.chain.upsert(Arc::new(loaded));
        self.outbox.broadcast(&events);
        Ok(info)
    }

    /// Remove an uploaded plugin.
    pub async fn delete(&self, name: &str) -> Result<(), RegistryError> {
        if self.declared.iter().any(|d| d == name) {
            return Err(RegistryError::Declared(name.to_owned()));
        }
        let _guard = self.write.lock().await;
        let removed = changed(name, "removed", None);
        let (existed, events) = self
            .store
            .delete_plugin_emitting(
                name,
                Emit::with(move |existed: &bool| {
                    if *existed {
                        vec![removed.clone()]
                    } else {
                        Vec::new()
                    }
                }),
            )
            .await?;
        if !existed {
            return Err(RegistryError::NotFound(name.to_owned()));
        }
        self.chain.remove(name);
        self.outbox.broadcast(&events);
        Ok(())
    }
}

fn parse_hooks(hooks: Option<&[String]>) -> Option<Vec<Hook>> {
    hooks.map(|h| h.iter().filter_map(|h| h.parse().ok()).collect())
}

/// Load off the async threads: compiling a component can take a while.
async fn load(
    name: &str,
    source: Vec<u8>,
    hooks: Option<&[Hook]>,
    config: &PluginConfig,
    limits: Limits,
) -> Result<LoadedPlugin, RegistryError> {
    let (n, c, h) = (name.to_owned(), config.clone(), hooks.map(<[Hook]>::to_vec));
    tokio::task::spawn_blocking(move || {
        let (runtime, plugin) =
            loader::load(&n, &source, &c, limits).map_err(|error| RegistryError::Plugin {
                name: n.clone(),
                error,
            })?;
        let loaded = LoadedPlugin::new(&n, runtime, &source, plugin, h.as_deref());
        if loaded.hooks.is_empty() {
            return Err(RegistryError::Plugin {
                name: n,
                error: PluginError::Load("it answers none of the hooks it was declared for".into()),
            });
        }
        Ok(loaded)
    })
    .await
    .unwrap_or_else(|e| {
        Err(RegistryError::Plugin {
            name: name.to_owned(),
            error: PluginError::Load(format!("loader panicked: {e}")),
        })
    })
}

/// The `plugin.changed` event, written with the change it reports.
fn changed(name: &str, change: &str, info: Option<&PluginInfo>) -> NewEvent {
    let data = json!({
        "plugin": name,
        "change": change,
        "runtime": info.map(|i| i.runtime),
        "sha256": info.map(|i| i.sha256.clone()),
        "hooks": info.map(|i| i.hooks.clone()),
    });
    event(kind::PLUGIN_CHANGED, None, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::RedbStore;

    async fn registry(
        store: Arc<RedbStore>,
        declared: &[DeclaredPlugin],
    ) -> Result<PluginRegistry, RegistryError> {
        let outbox = Outbox::new(store.clone(), 16);
        PluginRegistry::open(
            Arc::new(PolicyChain::new(None)),
            store,
            outbox,
            Limits::default(),
            declared,
        )
        .await
    }

    const TEAM: &str = "return { place = function(d) return { team = pomona.config.team } end }";

    #[tokio::test]
    async fn uploads_survive_a_restart_in_order() {
        let store = Arc::new(RedbStore::in_memory().unwrap());
        let r = registry(store.clone(), &[]).await.unwrap();
        let cfg = PluginConfig::from([("team".to_owned(), "A".to_owned())]);
        r.put("b-first", TEAM.into(), None, cfg.clone())
            .await
            .unwrap();
        r.put(
            "a-second",
            TEAM.into(),
            Some(vec![Hook::Place]),
            cfg.clone(),
        )
        .await
        .unwrap();
        r.put("b-first", TEAM.into(), None, cfg).await.unwrap();
        let again = registry(store, &[]).await.unwrap();
        let names: Vec<_> = again.list().into_iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            ["b-first", "a-second"],
            "replacing keeps the place; restart keeps the order"
        );
    }

    #[tokio::test]
    async fn a_bad_upload_changes_nothing() {
        let store = Arc::new(RedbStore::in_memory().unwrap());
        let r = registry(store.clone(), &[]).await.unwrap();
        let good = r
            .put("p", TEAM.into(), None, PluginConfig::new())
            .await
            .unwrap();
        for bad in [&b"return {"[..], b"return 1", b"\0asm garbage"] {
            let e = r
                .put("p", bad.to_vec(), None, PluginConfig::new())
                .await
                .unwrap_err();
            assert!(matches!(e, RegistryError::Plugin { .. }), "{e}");
        }
        assert_eq!(
            r.get("p").unwrap().sha256,
            good.sha256,
            "the old version still serves"
        );
        let stored = store.plugins().await.unwrap();
        assert_eq!(stored[0].source, TEAM.as_bytes());
        let e = r
            .put(
                "p",
                TEAM.into(),
                Some(vec![Hook::Release]),
                PluginConfig::new(),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("none of the hooks"), "{e}");
        assert!(matches!(
            r.put("../x", TEAM.into(), None, PluginConfig::new()).await,
            Err(RegistryError::InvalidName(_))
        ));
    }

    #[tokio::test]
    async fn declared_plugins_come_first_and_belong_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("team.lua");
        std::fs::write(&path, TEAM).unwrap();
        let declared = DeclaredPlugin {
            name: "declared".into(),
            path: path.clone(),
            hooks: None,
            config: PluginConfig::new(),
            limits: None,
        };
        let store = Arc::new(RedbStore::in_memory().unwrap());
        let r = registry(store.clone(), std::slice::from_ref(&declared))
            .await
            .unwrap();
        r.put("uploaded", TEAM.into(), None, PluginConfig::new())
            .await
            .unwrap();
        assert!(matches!(
            r.put("declared", TEAM.into(), None, PluginConfig::new())
                .await,
            Err(RegistryError::Declared(_))
        ));
        assert!(matches!(
            r.delete("declared").await,
            Err(RegistryError::Declared(_))
        ));
        let r = registry(store.clone(), std::slice::from_ref(&declared))
            .await
            .unwrap();
        let names: Vec<_> = r.list().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["declared", "uploaded"]);
        r.delete("uploaded").await.unwrap();
        assert!(matches!(
            r.delete("uploaded").await,
            Err(RegistryError::NotFound(_))
        ));
        std::fs::write(&path, "return {").unwrap();
        let e = registry(store, &[declared]).await.unwrap_err();
        assert!(e.to_string().contains("declared"), "{e}");
    }
}
