//! A load generator: many simulated devices checking in concurrently.
//!
//! Devices share one RSA key but each has its own certificate (so each pins its own identity);
//! request bodies and their signatures are prepared before the timed phase, so the generator
//! measures the server, not its own signing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::X509Name;
use plist::Dictionary;
use pomona::wire::cms::{SignatureStyle, sign_detached};
use pomona::wire::command::Command;
use pomona::wire::enrollment_id::EnrollmentId;

use crate::device::{Device, DeviceIdentity, Transport, xml};
use futures::StreamExt;
use pomona::push::Pusher as _;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// `Idle` check-ins against empty queues.
    Idle,
    /// Command round trips: each request acknowledges one command and receives the next.
    Roundtrip,
    /// SCEP `PKCSReq` enrollments (server-side cost: decrypt, verify, issue, sign, encrypt).
    Scep,
    /// APNs pushes to `--devices` enrollments through the fake APNs.
    Push,
    /// DEP initial fetch and assignment of `--devices` devices from the fake ABM.
    Dep,
    /// `--devices` auto-assign decisions through the plugin chain with `--plugin` loaded.
    Policy,
}

/// How devices authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Auth {
    /// `Mdm-Signature` (DER, SHA-256, signed attributes), pre-computed.
    Signature,
    /// RFC 9440 `Client-Cert` header, as behind a TLS-terminating proxy.
    Header,
}

/// Load-generator options.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Number of simulated enrolled devices.
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Concurrent requests in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds to run (Idle scenario).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// HTTP/2 connections to APNs (Push scenario).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Commands queued per device (Roundtrip scenario).
    #[arg(long, default_value_t = 10)]
    pub commands_per_device: usize,
    /// Scenario.
    #[arg(long, value_enum, default_value = "idle")]
    pub scenario: Scenario,
    /// Device authentication.
    #[arg(long, value_enum, default_value = "signature")]
    pub auth: Auth,
    /// A policy plugin (`.lua` or `.wasm`) for the Policy scenario, or uploaded before the DEP sync.
    #[arg(long)]
    pub plugin: Option<std::path::PathBuf>,
    /// A configuration value for `--plugin` (repeatable).
    #[arg(long = "plugin-config", value_name = "KEY=VALUE")]
    pub plugin_config: Vec<String>,
}

impl Options {
    fn plugin_config(&self) -> anyhow::Result<pomona::policy::PluginConfig> {
        self.plugin_config
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or_else(|| anyhow::anyhow!("--plugin-config {kv:?}: expected KEY=VALUE"))
            })
            .collect()
    }
}

/// Measured results.
#[derive(Debug, Clone)]
pub struct Report {
    /// Requests completed successfully.
    pub ok: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Wall time of the timed phase.
    pub elapsed: Duration,
    /// Latency percentiles (p50, p90, p99, max).
    pub latency: [Duration; 4],
}

impl Report {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "{} ok, {} errors in {:.2} s = {:.0}/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.ok,
            self.errors,
            self.elapsed.as_secs_f64(),
            self.rate(),
            ms(self.latency[0]),
            ms(self.latency[1]),
            ms(self.latency[2]),
            ms(self.latency[3]),
        )
    }
}

/// A prepared request: body and headers.
struct Prepared {
    path: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    auth: (String, String),
}

fn auth_header(device: &Device, body: &[u8], auth: Auth) -> anyhow::Result<(String, String)> {
    Ok(match auth {
        Auth::Signature => {
            let sig = sign_detached(
                body,
                &device.identity.cert,
                &device.identity.key,
                SignatureStyle::DerWithAttributes,
            )?;
            ("Mdm-Signature".into(), B64.encode(sig))
        }
        Auth::Header => (
            "X-Client-Cert".into(),
            format!(":{}:", B64.encode(device.identity.cert.to_der()?)),
        ),
    })
}

fn report_body(udid: &str, status: &str, uuid: Option<&str>) -> Vec<u8> {
    let mut d = Dictionary::new();
    d.insert("UDID".into(), udid.into());
    d.insert("Status".into(), status.into());
    if let Some(u) = uuid {
        d.insert("CommandUUID".into(), u.into());
    }
    xml(&d)
}

/// The static SCEP challenge the load generator's server is configured with.
pub const SCEP_CHALLENGE: &str = "loadgen-challenge";

/// Enroll `n` devices against an in-process engine and run the scenario against `server`.
pub async fn run(engine: &pomona::Engine, server: &str, opts: &Options) -> anyhow::Result<Report> {
    match opts.scenario {
        Scenario::Scep => return run_scep(engine, server, opts).await,
        Scenario::Push => return run_push(engine, opts).await,
        Scenario::Dep => return run_dep(engine, opts).await,
        Scenario::Policy => return run_policy(opts).await,
        _ => {}
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .build()?;
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let public = PKey::public_key_from_der(&key.public_key_to_der()?)?;
    let mut devices = Vec::with_capacity(opts.devices);
    for i in 0..opts.devices {
        let mut name = X509Name::builder()?;
        name.append_entry_by_text("CN", &format!("loadgen-{i}"))?;
        let cert = engine.ca().issue_device_cert(&public, &name.build(), 30)?;
        let mut d = Device::new(
            DeviceIdentity {
                key: key.clone(),
                cert,
            },
            server,
            client.clone(),
        );
        if opts.auth == Auth::Header {
            d.transport = Transport::ProxyHeader("X-Client-Cert".into());
        }
        devices.push(d);
    }
    // Enroll with bounded concurrency.
    futures::future::try_join_all(devices.chunks(64).map(|chunk| async move {
        for d in chunk {
            d.enroll().await?;
        }
        anyhow::Ok(())
    }))
    .await
    .context("enrolling devices")?;

    // Prepare every request of the timed phase.
    let mut scripts: Vec<Vec<Prepared>> = Vec::with_capacity(devices.len());
    for d in &devices {
        let mut script = Vec::new();
        match opts.scenario {
            Scenario::Idle => {
                let body = report_body(&d.udid, "Idle", None);
                let auth = auth_header(d, &body, opts.auth)?;
                script.push(Prepared {
                    path: "/mdm/connect",
                    content_type: "application/x-apple-aspen-mdm",
                    body,
                    auth,
                });
            }
            Scenario::Scep | Scenario::Push | Scenario::Dep | Scenario::Policy => {
                unreachable!("handled by their own runners")
            }
            Scenario::Roundtrip => {
                let id = EnrollmentId::new(d.udid.as_str());
                for n in 0..opts.commands_per_device {
                    let uuid = format!("LG-{}-{n}", d.udid);
                    let cmd = Command::build(uuid.clone(), "ProfileList", Dictionary::new());
                    engine
                        .store()
                        .enqueue(
                            &cmd,
                            std::slice::from_ref(&id),
                            usize::MAX,
                            time::OffsetDateTime::now_utc(),
                        )
                        .await?;
                    let body = report_body(&d.udid, "Acknowledged", Some(&uuid));
                    let auth = auth_header(d, &body, opts.auth)?;
                    script.push(Prepared {
                        path: "/mdm/connect",
                        content_type: "application/x-apple-aspen-mdm",
                        body,
                        auth,
                    });
                }
            }
        }
        scripts.push(script);
    }
    let scripts = Arc::new(scripts);
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let next_device = Arc::new(AtomicU64::new(0));
    let deadline = Duration::from_secs(opts.seconds);
    let start = Instant::now();
    let workers: Vec<_> = (0..opts.concurrency)
        .map(|_| {
            let (scripts, ok, errors, stop, next_device, client) = (
                scripts.clone(),
                ok.clone(),
                errors.clone(),
                stop.clone(),
                next_device.clone(),
                client.clone(),
            );
            let server = server.to_owned();
            let scenario = opts.scenario;
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next_device.fetch_add(1, Ordering::Relaxed) as usize;
                    let script = match scenario {
                        Scenario::Idle => &scripts[i % scripts.len()],
                        _ if i < scripts.len() => &scripts[i],
                        _ => break,
                    };
                    for p in script {
                        let t0 = Instant::now();
                        let r = client
                            .put(format!("{server}{}", p.path))
                            .header("Content-Type", p.content_type)
                            .header(p.auth.0.as_str(), p.auth.1.as_str())
                            .body(p.body.clone())
                            .send()
                            .await;
                        let good = match r {
                            Ok(resp) if resp.status().is_success() => resp.bytes().await.is_ok(),
                            _ => false,
                        };
                        latencies.push(t0.elapsed());
                        if good {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if scenario == Scenario::Idle && start.elapsed() >= deadline {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await?);
    }
    let elapsed = start.elapsed();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(Report {
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        latency: [
            pct(0.50),
            pct(0.90),
            pct(0.99),
            all.last().copied().unwrap_or_default(),
        ],
    })
}

/// Check that the Roundtrip scenario left nothing behind: every command acknowledged.
pub async fn verify_drained(engine: &pomona::Engine, udids: &[String]) -> anyhow::Result<()> {
    for u in udids {
        let q = engine.store().queue(&EnrollmentId::new(u.as_str())).await?;
        anyhow::ensure!(q.is_empty(), "{u} still has {} queued", q.len());
    }
    Ok(())
}

/// SCEP enrollments: `--devices` PKCSReq messages, prepared up front (one RSA key shared by all
/// CSRs, so preparation stays cheap), posted with `--concurrency` in flight.
async fn run_scep(engine: &pomona::Engine, server: &str, opts: &Options) -> anyhow::Result<Report> {
    use pomona::wire::scep::{
        ContentCipher, Digest, MessageType, build_csr, build_request, self_signed_requester,
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .build()?;
    let ca = engine.ca().certificate().to_owned();
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let requester = self_signed_requester(&key, "loadgen")?;
    let mut messages = Vec::with_capacity(opts.devices);
    for i in 0..opts.devices {
        let mut name = X509Name::builder()?;
        name.append_entry_by_text("CN", &format!("loadgen-scep-{i}"))?;
        let csr = build_csr(&key, &name.build(), Some(SCEP_CHALLENGE))?;
        messages.push(build_request(
            &csr,
            MessageType::PkcsReq,
            &format!("TX-{i}"),
            &(i as u128).to_be_bytes(),
            &requester,
            &key,
            &ca,
            ContentCipher::Aes256Cbc,
            Digest::Sha256,
        )?);
    }
    let messages = Arc::new(messages);
    let next = Arc::new(AtomicU64::new(0));
    let (ok, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let workers: Vec<_> = (0..opts.concurrency)
        .map(|_| {
            let (messages, next, ok, errors, client) = (
                messages.clone(),
                next.clone(),
                ok.clone(),
                errors.clone(),
                client.clone(),
            );
            let url = format!("{server}/scep?operation=PKIOperation");
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(m) = messages.get(i) else { break };
                    let t0 = Instant::now();
                    let r = client.post(&url).body(m.clone()).send().await;
                    let good = match r {
                        Ok(resp) if resp.status().is_success() => resp.bytes().await.is_ok(),
                        _ => false,
                    };
                    latencies.push(t0.elapsed());
                    if good { &ok } else { &errors }.fetch_add(1, Ordering::Relaxed);
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await?);
    }
    let elapsed = start.elapsed();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(Report {
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        latency: [
            pct(0.50),
            pct(0.90),
            pct(0.99),
            all.last().copied().unwrap_or_default(),
        ],
    })
}

/// Pushes: `--devices` enrollments with push tokens are written straight to the store, then
/// pushed in one call (the pusher keeps up to 512 pushes in flight over its connections).
async fn run_push(engine: &pomona::Engine, opts: &Options) -> anyhow::Result<Report> {
    use pomona::push::PushOutcome;
    use pomona::wire::checkin::{Authenticate, TokenUpdate};
    use pomona::wire::enrollment_id::{Channel, ChannelKind};
    let store = engine.store();
    let ids: Vec<EnrollmentId> = (0..opts.devices)
        .map(|i| EnrollmentId::new(format!("PUSH-{i:08}")))
        .collect();
    let now = time::OffsetDateTime::now_utc();
    futures::stream::iter(ids.iter().cloned())
        .map(|id| {
            let store = store.clone();
            async move {
                let channel = Channel {
                    id: id.clone(),
                    parent: None,
                    kind: ChannelKind::Device,
                };
                let auth = Authenticate {
                    topic: PUSH_TOPIC.into(),
                    ..Default::default()
                };
                store
                    .store_authenticate(&channel, &auth, now, pomona::store::Emit::none())
                    .await?;
                let tu = TokenUpdate {
                    token: openssl::sha::sha256(id.as_str().as_bytes()).to_vec(),
                    push_magic: format!("magic-{id}"),
                    topic: PUSH_TOPIC.into(),
                    ..Default::default()
                };
                store
                    .store_token_update(
                        &channel,
                        &tu,
                        None,
                        (None, None),
                        now,
                        pomona::store::Emit::none(),
                    )
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let start = Instant::now();
    let outcomes = engine.apns().push(&ids).await;
    let elapsed = start.elapsed();
    let ok = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, PushOutcome::Sent(_)))
        .count() as u64;
    Ok(Report {
        ok,
        errors: outcomes.len() as u64 - ok,
        elapsed,
        latency: [Duration::ZERO; 4],
    })
}

/// The topic of the load generator's push certificate.
pub const PUSH_TOPIC: &str = "com.apple.mgmt.External.00000000-0000-0000-0000-00000000load";

/// Peak resident memory of this process (Linux `VmHWM`), in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// DEP: the fake ABM lists `--devices` devices (pages of 1000, as advertised); one sync fetches
/// and assigns them all.
async fn run_dep(engine: &pomona::Engine, opts: &Options) -> anyhow::Result<Report> {
    let abm = crate::abm::FakeAbm::start(1000).await?;
    for i in 0..opts.devices {
        abm.add(
            &format!("LOAD{i:07}"),
            if i % 3 == 0 { "iPad" } else { "Mac" },
        );
    }
    let dep = engine.dep();
    dep.create_server("load").await?;
    let cert = dep.certificate("load").await?;
    dep.upload_token("load", &abm.token_for(cert.as_bytes())?, false)
        .await?;
    dep.put_profile(
        "standard",
        pomona::wire::dep::Profile {
            profile_name: "Standard".into(),
            ..Default::default()
        },
    )
    .await?;
    dep.patch_server(
        "load",
        pomona::dep::ServerPatch {
            base_url: Some(abm.url.clone()),
            default_profile: Some("standard".into()),
            sync_interval_secs: Some(0),
            ..Default::default()
        },
    )
    .await?;
    if let Some(path) = &opts.plugin {
        let info = engine
            .plugins()
            .put("loadgen", std::fs::read(path)?, None, opts.plugin_config()?)
            .await?;
        eprintln!(
            "plugin {} ({:?}) answers {:?}",
            path.display(),
            info.runtime,
            info.hooks
        );
    }
    let before = peak_rss_kib();
    let start = Instant::now();
    let report = dep.sync_server("load", false).await?;
    let elapsed = start.elapsed();
    let assigned = (0..opts.devices)
        .filter(|i| abm.assignments(&format!("LOAD{i:07}")).len() == 1)
        .count();
    eprintln!(
        "DEP: {} pages, {} devices committed, {} queued; API calls: session {}, account {}, fetch {}, sync {}, define {}, assign {}; peak RSS {} MiB (before sync {} MiB)",
        report.pages,
        report.devices,
        report.queued,
        abm.calls("/session"),
        abm.calls("/account"),
        abm.calls("/server/devices"),
        abm.calls("/devices/sync"),
        abm.calls("/profile"),
        abm.calls("/profile/devices"),
        peak_rss_kib().unwrap_or(0) / 1024,
        before.unwrap_or(0) / 1024,
    );
    Ok(Report {
        ok: assigned as u64,
        errors: (opts.devices - assigned) as u64,
        elapsed,
        latency: [Duration::ZERO; 4],
    })
}

/// The Policy scenario: load `--plugin`, warm it up, then time `--devices` auto-assign decisions
/// through the chain one by one (per-call latency) — what the DEP syncer does per device.
async fn run_policy(opts: &Options) -> anyhow::Result<Report> {
    use pomona::policy::{AssignDecision, DepEvent, LoadedPlugin, OpType, PolicyChain, loader};
    let path = opts
        .plugin
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the policy scenario needs --plugin FILE"))?;
    let source = std::fs::read(path)?;
    let config = opts.plugin_config()?;
    let (runtime, plugin) = loader::load(
        "loadgen",
        &source,
        &config,
        pomona::policy::Limits::default(),
    )?;
    let chain = PolicyChain::new(None);
    chain.replace(vec![std::sync::Arc::new(LoadedPlugin::new(
        "loadgen", runtime, &source, plugin, None,
    ))]);
    let families = ["Mac", "iPad", "iPhone", "AppleTV"];
    let models = [
        "MacBook Air",
        "MacBook Pro",
        "Mac mini",
        "iPad Pro",
        "iPhone 16",
    ];
    let event = |i: usize| DepEvent {
        server: if i.is_multiple_of(2) { "hq" } else { "branch" }.into(),
        serial_number: format!("C{:02}{i:08}", i % 100),
        model: models[i % models.len()].into(),
        description: String::new(),
        color: "space gray".into(),
        device_family: families[i % families.len()].into(),
        os: "OSX".into(),
        profile_status: "empty".into(),
        profile_uuid: None,
        op_type: OpType::Added,
        op_date: None,
        known: false,
        team: None,
    };
    for i in 0..1000 {
        chain.auto_assign(&event(i), || AssignDecision::Skip).await;
    }
    let mut latencies = Vec::with_capacity(opts.devices);
    let mut decided = 0u64;
    let start = Instant::now();
    for i in 0..opts.devices {
        let e = event(i);
        let t = Instant::now();
        let d = chain.auto_assign(&e, || AssignDecision::Skip).await;
        latencies.push(t.elapsed());
        if d.by != "default" {
            decided += 1;
        }
    }
    let elapsed = start.elapsed();
    let stats = chain.plugins()[0].stats.snapshot();
    eprintln!(
        "{runtime:?} plugin {}: {decided} decisions by the plugin, {} errors, {} limit hits",
        path.display(),
        stats.errors,
        stats.limit_hits
    );
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    Ok(Report {
        ok: opts.devices as u64 - stats.errors - stats.limit_hits,
        errors: stats.errors + stats.limit_hits,
        elapsed,
        latency: [
            pct(0.5),
            pct(0.9),
            pct(0.99),
            *latencies.last().unwrap_or(&Duration::ZERO),
        ],
    })
}
