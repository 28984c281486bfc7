//! `pomona-loadgen`: start an engine with a durable (fsync'd) redb store in a temporary
//! directory, enroll simulated devices and measure check-ins.
//!
//! ```text
//! cargo run --release -p pomona-testkit --bin pomona-loadgen -- --devices 1000 --scenario idle
//! cargo run --release -p pomona-testkit --bin pomona-loadgen -- --devices 1000 --scenario roundtrip
//! cargo run --release -p pomona-testkit --bin pomona-loadgen -- --devices 500 --scenario scep --concurrency 8
//! ```

use clap::Parser;
use pomona::store::redb::RedbStore;
use pomona_testkit::loadgen::{self, Options};
use pomona_testkit::server::TestServer;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(about = "Load generator for Pomona's check-in path")]
struct Args {
    #[command(flatten)]
    opts: Options,
    /// Server worker threads (the rest of the machine runs the generator).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let dir = tempfile::tempdir()?;
        let store = Arc::new(RedbStore::open(dir.path().join("load.redb"))?);
        let server = TestServer::start_with(|b| {
            b.store(store)
                .max_queue_len(usize::MAX)
                .scep_options(pomona::scep::ScepOptions {
                    static_challenge: Some(loadgen::SCEP_CHALLENGE.into()),
                    ..Default::default()
                })
        })
        .await?;
        eprintln!(
            "enrolling {} devices, then running {:?} with {:?} auth ({} in flight)…",
            args.opts.devices, args.opts.scenario, args.opts.auth, args.opts.concurrency
        );
        let report = loadgen::run(&server.engine, &server.url, &args.opts).await?;
        match args.opts.scenario {
            loadgen::Scenario::Scep => println!("Scep: {report}"),
            s => println!("{s:?} ({:?}): {report}", args.opts.auth),
        }
        server.stop().await;
        anyhow::Ok(())
    })
}
