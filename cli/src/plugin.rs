//! `pomona plugin test`: run a plugin offline over fixture records.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::Value;

use pomona::policy::{Hook, Limits, PluginConfig, fixture, loader};

/// `pomona plugin …`
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Run a `.lua` or `.wasm` plugin over fixture records and print each decision as JSON.
    ///
    /// Prints one line per record: `{"index": i, "decision": <Lua-shape decision or null>,
    /// "error": <string or null>}`. Exits 0 when the plugin loaded, even if calls failed.
    Test {
        /// The plugin file.
        file: PathBuf,
        /// The hook to call.
        #[arg(long)]
        hook: Hook,
        /// A JSON array of input records (for `release`: `{"device": .., "progress": ..}`).
        #[arg(long)]
        fixture: PathBuf,
        /// A plugin configuration value (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_kv)]
        config: Vec<(String, String)>,
        /// A JSON object of configuration values (string values), applied before `--config`.
        #[arg(long)]
        config_file: Option<PathBuf>,
        /// Instruction (Lua) or fuel (WASM) limit per call.
        #[arg(long)]
        instructions: Option<u64>,
        /// Memory limit in bytes.
        #[arg(long)]
        memory_bytes: Option<usize>,
        /// Time limit per call, in milliseconds.
        #[arg(long)]
        timeout_ms: Option<u64>,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| "expected KEY=VALUE".to_owned())
}

/// Read a JSON object of string values as plugin configuration.
pub fn read_config_file(path: &std::path::Path) -> anyhow::Result<PluginConfig> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Map<String, Value> = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a JSON object", path.display()))?;
    v.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => anyhow::bail!(
                "{}: value of {k:?} must be a string, got {other}",
                path.display()
            ),
        })
        .collect()
}

/// Run a `pomona plugin` command.
pub fn run(cmd: PluginCommand) -> anyhow::Result<()> {
    let PluginCommand::Test {
        file,
        hook,
        fixture,
        config,
        config_file,
        instructions,
        memory_bytes,
        timeout_ms,
    } = cmd;
    let mut cfg = match &config_file {
        Some(p) => read_config_file(p)?,
        None => PluginConfig::new(),
    };
    cfg.extend(config);
    let mut limits = Limits::default();
    if let Some(i) = instructions {
        limits.instructions = i;
    }
    if let Some(m) = memory_bytes {
        limits.memory_bytes = m;
    }
    if let Some(t) = timeout_ms {
        limits.timeout = Duration::from_millis(t);
    }
    let records: Vec<Value> = {
        let text =
            std::fs::read(&fixture).with_context(|| format!("reading {}", fixture.display()))?;
        serde_json::from_slice(&text)
            .with_context(|| format!("{} must be a JSON array of records", fixture.display()))?
    };
    let source = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let name = file
        .file_stem()
        .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned());
    let (_, plugin) = loader::load(&name, &source, &cfg, limits)
        .with_context(|| format!("loading {}", file.display()))?;
    if !plugin.hooks().contains(&hook) {
        eprintln!(
            "note: {} does not implement {hook}; every decision is null",
            file.display()
        );
    }
    let mut out = std::io::stdout().lock();
    for line in fixture::lines(plugin.as_ref(), hook, records) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}
