//! Load a plugin from its bytes, whichever runtime it is for.

use super::chain::Runtime;
use super::lua::LuaPlugin;
#[cfg(feature = "wasm")]
use super::wasm::WasmPlugin;
use super::{Limits, PluginConfig, PluginError, PolicyPlugin};

/// Why a WASM plugin does not load in a build without the `wasm` feature.
#[cfg(not(feature = "wasm"))]
pub const NO_WASM_RUNTIME: &str = "this build has no WASM plugin runtime (feature `wasm`)";

/// The runtime `source` is for: a WASM binary starts with `\0asm`; anything else is Lua.
pub fn runtime_of(source: &[u8]) -> Runtime {
    if source.starts_with(b"\0asm") {
        Runtime::Wasm
    } else {
        Runtime::Lua
    }
}

/// Load and self-check a plugin named `name` (the name appears in its log lines).
pub fn load(
    name: &str,
    source: &[u8],
    config: &PluginConfig,
    limits: Limits,
) -> Result<(Runtime, Box<dyn PolicyPlugin>), PluginError> {
    let runtime = runtime_of(source);
    let plugin: Box<dyn PolicyPlugin> = match runtime {
        #[cfg(feature = "wasm")]
        Runtime::Wasm => Box::new(WasmPlugin::load(name, source, config, limits)?),
        #[cfg(not(feature = "wasm"))]
        Runtime::Wasm => return Err(PluginError::Load(NO_WASM_RUNTIME.into())),
        Runtime::Lua => {
            let text = std::str::from_utf8(source).map_err(|e| {
                PluginError::Load(format!(
                    "neither a WASM component nor UTF-8 Lua source (invalid UTF-8 at byte {})",
                    e.valid_up_to()
                ))
            })?;
            Box::new(LuaPlugin::load(name, text, config, limits)?)
        }
    };
    Ok((runtime, plugin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_the_runtime() {
        assert_eq!(runtime_of(b"\0asm\x0d\0\x01\0"), Runtime::Wasm);
        assert_eq!(runtime_of(b"return {}"), Runtime::Lua);
    }

    #[cfg(not(feature = "wasm"))]
    #[test]
    fn wasm_without_the_runtime_is_refused_precisely() {
        let err = load(
            "x",
            b"\0asm\x0d\0\x01\0",
            &PluginConfig::new(),
            Limits::default(),
        )
        .err()
        .unwrap();
        assert_eq!(err, PluginError::Load(NO_WASM_RUNTIME.into()));
    }

    #[test]
    fn binary_that_is_not_wasm_is_refused_precisely() {
        let err = load(
            "x",
            b"\xff\xfe\x00garbage",
            &PluginConfig::new(),
            Limits::default(),
        )
        .err()
        .unwrap();
        assert!(
            err.to_string()
                .contains("neither a WASM component nor UTF-8 Lua"),
            "{err}"
        );
    }
}
