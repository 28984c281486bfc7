//! `pomona-loadgen`: start an engine with a durable (fsync'd) redb store in a temporary
//! directory, enroll simulated devices and measure check-ins.
//!
//! ```text
//! cargo run --release -p pomona-testkit --bin pomona-loadgen -- --devices 1000 --scenario idle
//! cargo run --release -p pomona-testkit --bin pomona-loadgen -- --devices 1000 --scenario roundtrip
//! cargo run --release -p pomona-testkit --bin pomona-loadgen -- --devices 500 --scenario scep --concurrency 8
//! cargo run --release -p pomona-testkit --bin pomona-loadgen -- --devices 100000 --scenario push --connections 4
//! cargo run --release -p pomona-testkit --bin pomona-loadgen -- --devices 100000 --scenario dep
//! cargo run --release -p pomona-testkit --bin pomona-loadgen -- --devices 100000 --scenario policy --plugin plugins/place-by-model/place_by_model.lua
//! ```

use clap::Parser;
use pomona::push::apns::ApnsOptions;
use pomona::push::client::ApnsEndpoint;
use pomona::store::redb::RedbStore;
use pomona::wire::apns::PushCertificate;
use pomona_testkit::apns::{ApnsTestPki, FakeApns};
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
        let seal = pomona::seal::SealKey::generate();
        let store = Arc::new(RedbStore::open(dir.path().join("load.redb"), &seal)?);
        let pki = ApnsTestPki::new()?;
        let fake = FakeApns::start(&pki).await?;
        let apns = ApnsOptions::default().with_endpoint(
            ApnsEndpoint::default()
                .with_base_url(fake.url.clone())
                .with_extra_ca(Some(openssl::x509::X509::from_pem(&pki.ca_pem())?))
                .with_connections(args.opts.connections)
                .with_timeout(std::time::Duration::from_secs(30)),
        );
        let server = TestServer::start_with(|b| {
            b.store(store)
                .seal_key(seal.clone())
                .max_queue_len(usize::MAX)
                .apns_options(apns)
                .scep_options(
                    pomona::scep::ScepOptions::default()
                        .with_static_challenge(Some(loadgen::SCEP_CHALLENGE.into())),
                )
        })
        .await?;
        if args.opts.scenario == loadgen::Scenario::Push {
            let cert = PushCertificate::from_pem(&pki.push_certificate(loadgen::PUSH_TOPIC, 365)?)?;
            server.engine.apns().add_certificate(cert).await?;
        }
        eprintln!(
            "enrolling {} devices, then running {:?} with {:?} auth ({} in flight)…",
            args.opts.devices, args.opts.scenario, args.opts.auth, args.opts.concurrency
        );
        let report = loadgen::run(&server.engine, &server.url, &args.opts).await?;
        match args.opts.scenario {
            loadgen::Scenario::Scep => println!("Scep: {report}"),
            loadgen::Scenario::Dep => println!(
                "Dep: {} devices fetched and assigned exactly once ({} not) in {:.2} s",
                report.ok,
                report.errors,
                report.elapsed.as_secs_f64()
            ),
            loadgen::Scenario::Push => println!(
                "Push ({} connections): {} pushes accepted by the fake APNs, {} failed, in {:.2} s = {:.0} pushes/s ({} received)",
                args.opts.connections,
                report.ok,
                report.errors,
                report.elapsed.as_secs_f64(),
                report.rate(),
                fake.pushes().len()
            ),
            loadgen::Scenario::Policy => {
                let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
                println!(
                    "Policy: {} decisions in {:.3} s = {:.0}/s; per decision p50 {:.2} µs, p90 {:.2} µs, p99 {:.2} µs, max {:.1} µs",
                    report.ok + report.errors,
                    report.elapsed.as_secs_f64(),
                    (report.ok + report.errors) as f64 / report.elapsed.as_secs_f64(),
                    us(report.latency[0]),
                    us(report.latency[1]),
                    us(report.latency[2]),
                    us(report.latency[3])
                )
            }
            s => println!("{s:?} ({:?}): {report}", args.opts.auth),
        }
        server.stop().await;
        anyhow::Ok(())
    })
}
