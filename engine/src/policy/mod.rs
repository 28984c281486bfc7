//! Policy hooks: the four decisions admins want to change, answered by plugins.
//!
//! A [`PolicyPlugin`] answers some of the [`Hook`]s; the [`PolicyChain`] asks its plugins in
//! order and the first definite decision wins. A plugin that errors, traps, returns a malformed
//! value or exceeds a [`Limits`] bound counts as "no opinion" for that call: the chain records it
//! and moves on, and the caller's built-in default decides last.
//!
//! Runtimes: [`lua`] (mlua, Lua 5.4, sandboxed) and [`wasm`] (wasmtime components implementing
//! the `pomona:policy@0.1.0` world from `sdk/wit`; behind the default-on cargo feature `wasm`).

pub mod chain;
pub mod fixture;
pub mod loader;
pub mod lua;
pub mod lua_pattern;
pub mod plugin_log;
pub mod registry;
pub mod stats;
pub mod types;
#[cfg(feature = "wasm")]
pub mod wasm;

use std::collections::BTreeMap;
use std::time::Duration;

pub use chain::{Decided, LoadedPlugin, PolicyChain};
pub use types::*;

/// How a plugin call failed. Every variant means "no opinion" for the call; none stops the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The plugin could not be loaded (syntax error, invalid component, missing exports).
    #[error("plugin did not load: {0}")]
    Load(String),
    /// The plugin raised an error or trapped.
    #[error("plugin failed: {0}")]
    Failed(String),
    /// The plugin returned a value that is not a decision for this hook.
    #[error("plugin returned a malformed decision: {0}")]
    Malformed(String),
    /// The plugin exceeded one of its limits.
    #[error("plugin exceeded its {0} limit")]
    Limit(LimitKind),
}

impl PluginError {
    /// Whether this is a limit hit (counted separately from other failures).
    pub fn is_limit(&self) -> bool {
        matches!(self, PluginError::Limit(_))
    }
}

/// Which limit a plugin hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LimitKind {
    /// Instruction count (Lua) or fuel (WASM).
    Instructions,
    /// Memory.
    Memory,
    /// Wall-clock time for one call.
    Timeout,
    /// Call-stack depth.
    Stack,
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitKind::Instructions => "instruction",
            LimitKind::Memory => "memory",
            LimitKind::Timeout => "time",
            LimitKind::Stack => "stack",
        })
    }
}

/// Bounds on one plugin call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Limits {
    /// Lua VM instructions, or WASM fuel units, per call.
    pub instructions: u64,
    /// Bytes of memory the plugin may hold (Lua heap, or WASM linear memory).
    pub memory_bytes: usize,
    /// Wall-clock time per call.
    #[serde(with = "millis")]
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            instructions: 10_000_000,
            memory_bytes: 16 << 20,
            timeout: Duration::from_millis(100),
        }
    }
}

crate::setters::with_setters!(Limits {
    with_instructions => instructions: u64,
    with_memory_bytes => memory_bytes: usize,
    with_timeout => timeout: std::time::Duration,
});

mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(serde::Deserialize::deserialize(d)?))
    }
}

/// Plugin-scoped configuration values (`config.*` in a Lua plugin, `config-get` in WASM).
pub type PluginConfig = BTreeMap<String, String>;

/// A loaded plugin, in any runtime.
///
/// Implementations must be cheap to call many times and safe to call from several threads.
pub trait PolicyPlugin: Send + Sync {
    /// The hooks this plugin answers.
    fn hooks(&self) -> Vec<Hook>;

    /// Answer `input`: `Ok(None)` is "no opinion". Runtimes validate the shape with
    /// [`Decision::from_json`] (or typed bindings), so a returned decision always matches the hook.
    fn call(&self, input: &HookInput) -> Result<Option<Decision>, PluginError>;
}
