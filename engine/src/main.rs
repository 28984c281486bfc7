//! The `pomona` binary.

mod cli;

use clap::Parser;
use cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            cli::init_logging(args.log_format);
            cli::serve::run(args).await
        }
        Command::Dep { remote, command } => {
            cli::init_logging(cli::LogFormat::Text);
            cli::dep::run(&remote, command).await
        }
        Command::Device { remote, command } => {
            cli::init_logging(cli::LogFormat::Text);
            cli::device::run(&remote, command).await
        }
        Command::Demo(args) => {
            cli::init_logging(cli::LogFormat::Text);
            cli::demo::run(args).await
        }
        Command::Plugin(cmd) => {
            cli::init_logging(cli::LogFormat::Text);
            cli::plugin::run(cmd)
        }
        Command::Profile { remote, command } => {
            cli::init_logging(cli::LogFormat::Text);
            cli::profile::run(&remote, command).await
        }
        Command::Push(cmd) => {
            cli::init_logging(cli::LogFormat::Text);
            cli::push::run(cmd).await
        }
        Command::Team { remote, command } => {
            cli::init_logging(cli::LogFormat::Text);
            cli::team::run(&remote, command).await
        }
        Command::Version => {
            println!("pomona {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}
