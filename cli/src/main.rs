//! The `pomona` binary: `serve`, `demo` and the admin commands, built on the `pomona` library.

mod args;
mod client;
mod config_file;
mod demo;
mod dep;
mod device;
mod plugin;
mod profile;
mod push;
mod serve;
mod team;

use args::{Cli, Command, LogFormat, init_logging};
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_logging(args.log_format);
            serve::run(args).await
        }
        Command::Dep { remote, command } => {
            init_logging(LogFormat::Text);
            dep::run(&remote, command).await
        }
        Command::Device { remote, command } => {
            init_logging(LogFormat::Text);
            device::run(&remote, command).await
        }
        Command::Demo(args) => {
            init_logging(LogFormat::Text);
            demo::run(args).await
        }
        Command::Plugin(cmd) => {
            init_logging(LogFormat::Text);
            plugin::run(cmd)
        }
        Command::Profile { remote, command } => {
            init_logging(LogFormat::Text);
            profile::run(&remote, command).await
        }
        Command::Push(cmd) => {
            init_logging(LogFormat::Text);
            push::run(cmd).await
        }
        Command::Team { remote, command } => {
            init_logging(LogFormat::Text);
            team::run(&remote, command).await
        }
        Command::Version => {
            println!("pomona {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}
