//! The command line's arguments and logging set-up.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{client, demo, dep, device, plugin, profile, push, team};

/// Pomona: an embeddable, plugin-scriptable Apple MDM engine.
#[derive(Debug, Parser)]
#[command(name = "pomona", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine: device endpoints, admin API and background work on one listener.
    Serve(ServeArgs),
    /// Apple Business Manager: servers, tokens, profiles, assignments (talks to the API).
    Dep {
        /// The engine.
        #[command(flatten)]
        remote: client::Remote,
        /// What to do.
        #[command(subcommand)]
        command: dep::DepCommand,
    },
    /// Device records: list, show, setup progress, team, release (talks to the API).
    Device {
        /// The engine.
        #[command(flatten)]
        remote: client::Remote,
        /// What to do.
        #[command(subcommand)]
        command: device::DeviceCommand,
    },
    /// Run the whole automated-enrollment flow on loopback: the engine, a fake Apple Business
    /// Manager, a fake APNs and simulated Macs, with the first-party plugins.
    Demo(demo::DemoArgs),
    /// Policy plugins: test one offline over fixtures.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// The configuration-profile library: upload, list, show, delete (talks to the API).
    Profile {
        /// The engine.
        #[command(flatten)]
        remote: client::Remote,
        /// What to do.
        #[command(subcommand)]
        command: profile::ProfileCommand,
    },
    /// Push certificates: make a CSR, upload the certificate.
    #[command(subcommand)]
    Push(push::PushCommand),
    /// Teams: enrollment profile per platform, setup steps, release timeout (talks to the API).
    Team {
        /// The engine.
        #[command(flatten)]
        remote: client::Remote,
        /// What to do.
        #[command(subcommand)]
        command: team::TeamCommand,
    },
    /// Print the version.
    Version,
}

/// `pomona serve` flags (they override the config file and `POMONA_*` variables).
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "POMONA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the database, keys and generated secrets.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:9000.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// URL devices reach the engine at, e.g. https://mdm.example.com.
    #[arg(long)]
    pub public_url: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "POMONA_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Initialise `tracing` (filter from `POMONA_LOG`, then `RUST_LOG`, default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = std::env::var("POMONA_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
