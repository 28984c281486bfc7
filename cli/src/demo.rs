//! `pomona demo`: the whole automated-enrollment flow in one process, with no Apple account.
//!
//! The engine runs on loopback with a fake Apple Business Manager, a fake APNs and N simulated
//! Macs, using the first-party plugins: `auto-assign-rules` (WASM) assigns the enrollment
//! profile, `place-by-model` (Lua) picks the team, `setup-basic` (Lua) decides the setup steps
//! and `release-when-done` (Lua) releases each Mac. Every Mac enrolls for real: signed
//! MachineInfo, SCEP, the check-in protocol, then it answers each command until
//! `DeviceConfigured`. The timeline is printed from the engine's own events.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use openssl::pkey::{PKey, Private};
use pomona::Engine;
use pomona::dep::DepOptions;
use pomona::enroll::EnrollOptions;
use pomona::push::apns::ApnsOptions;
use pomona::push::client::ApnsEndpoint;
use pomona::setup::SetupOptions;
use pomona::store::Event;
use pomona::teams::TeamSpec;
use pomona::wire::apns::PushCertificate;
use pomona::wire::dep::Profile as DepProfile;
use pomona::wire::machine_info::{DeviceTrust, MachineInfo};
use pomona_sim::abm::FakeAbm;
use pomona_sim::apns::{ApnsTestPki, FakeApns};
use pomona_sim::enroll::{TestDeviceCa, enroll_automated_as};

const TOPIC: &str = "com.apple.mgmt.External.pomona-demo";
const SERVER: &str = "demo";

const AUTO_ASSIGN: &[u8] = include_bytes!("../../plugins/dist/auto-assign-rules.wasm");
const PLACE: &str = include_str!("../../plugins/place-by-model/place-by-model.lua");
const SETUP: &str = include_str!("../../plugins/setup-basic/setup-basic.lua");
const RELEASE: &str = include_str!("../../plugins/release-when-done/release-when-done.lua");
const WIFI: &[u8] = include_bytes!("../../engine/tests/fixtures/profiles/wifi.mobileconfig");
const RESTRICTIONS: &[u8] =
    include_bytes!("../../engine/tests/fixtures/profiles/restrictions.mobileconfig");

/// RSA keys the simulated Macs share.
const KEYS: usize = 8;

/// The Macs the fake Apple Business Manager lists, in turn.
const MODELS: [&str; 3] = ["MacBook Pro 14\"", "MacBook Air 13\"", "Mac mini"];

/// `pomona demo` flags.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many simulated Macs.
    #[arg(long, default_value_t = 10)]
    pub devices: usize,
    /// How many Macs enroll at the same time.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Print the timeline of at most this many Macs (every Mac is counted in the summary).
    #[arg(long, default_value_t = 5)]
    pub show: usize,
    /// Give up on Macs not released after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// End with one JSON line summarising the run.
    #[arg(long)]
    pub json: bool,
    /// Keep the engine's state in a database file in this (new or empty) directory instead of
    /// memory, with every commit durable, as `pomona serve` runs.
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
}

/// When each stage of one Mac happened, as seconds since the start.
#[derive(Debug, Default, Clone)]
struct Stages {
    added: Option<f64>,
    assigned: Option<f64>,
    enrolled: Option<f64>,
    released: Option<f64>,
}

/// Run the demo; fails (exit status 1) if any Mac was not released.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.devices == 0 {
        bail!("--devices must be at least 1");
    }
    let started = Instant::now();
    let abm = FakeAbm::start(100)
        .await
        .context("starting the fake Apple Business Manager")?;
    let pki = ApnsTestPki::new().context("making the fake APNs certificates")?;
    let apns = FakeApns::start(&pki)
        .await
        .context("starting the fake APNs")?;
    let device_ca = Arc::new(TestDeviceCa::new().context("making the simulated devices' CA")?);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let mut enroll = EnrollOptions::new(&url);
    enroll.device_trust = DeviceTrust::from_pem_bundle(&device_ca.trust_pem()?)
        .context("trusting the simulated devices' CA")?;
    let mut key = [0u8; 24];
    openssl::rand::rand_bytes(&mut key)?;
    let api_key = hex::encode(key);
    let mut builder = Engine::builder();
    if let Some(dir) = &args.data_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("pomona.redb");
        if path.exists() {
            bail!(
                "{} exists: give the demo a new or empty directory",
                path.display()
            );
        }
        let seal = pomona::seal::SealKey::generate();
        let store = pomona::store::redb::RedbStore::open(&path, &seal)
            .with_context(|| format!("opening {}", path.display()))?;
        builder = builder.store(Arc::new(store)).seal_key(seal);
    }
    let engine = builder
        .public_url(&url)
        .enroll_options(enroll)
        .dep_options(DepOptions::new(&url))
        .apns_options(
            ApnsOptions::default().with_endpoint(
                ApnsEndpoint::default()
                    .with_base_url(apns.url.clone())
                    .with_extra_ca(Some(openssl::x509::X509::from_pem(&pki.ca_pem())?))
                    .with_connections(2)
                    .with_timeout(Duration::from_secs(5)),
            ),
        )
        .setup_options(SetupOptions::default().with_poll(Duration::from_millis(100)))
        .build()
        .await
        .context("starting the engine")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(pomona::http::server::serve(
        listener,
        pomona::http::Routes::new(&engine, pomona::http::HttpOptions::new().api_key(&api_key))
            .router(),
        None,
        async {
            let _ = stopped.await;
        },
    ));

    let timeline = Timeline::new(started, args.show);
    let watcher = timeline.clone().watch(engine.subscribe());
    configure(&engine, &abm, &pki).await?;
    timeline.say(&format!(
        "engine on {url}; fake Apple Business Manager on {}; fake APNs on {}",
        abm.url, apns.url
    ));

    let serials: Vec<String> = (0..args.devices).map(|i| format!("DEMO{i:06}")).collect();
    for (i, serial) in serials.iter().enumerate() {
        abm.add_model(serial, "Mac", MODELS[i % MODELS.len()]);
        timeline.order(serial);
    }
    let report = engine
        .dep()
        .sync_server(SERVER, false)
        .await
        .context("syncing with the fake Apple Business Manager")?;
    timeline.say(&format!(
        "DEP sync: {} devices in {} pages, {} assignments queued",
        report.devices, report.pages, report.queued
    ));

    let deadline = started + Duration::from_secs(args.timeout_secs);
    // Real Macs make their keys on their own CPUs; generating 1,000 2048-bit RSA keys here would
    // take over a minute of this machine's time, so the simulated Macs share a few keys (each
    // still gets its own certificate, and signs its own requests).
    let keys = device_keys(KEYS).await?;
    let client = reqwest::Client::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut macs = tokio::task::JoinSet::new();
    for (i, serial) in serials.clone().into_iter().enumerate() {
        let (gate, client, url, ca) =
            (gate.clone(), client.clone(), url.clone(), device_ca.clone());
        let key = keys[i % keys.len()].clone();
        macs.spawn(async move {
            let _slot = gate.acquire_owned().await.expect("semaphore");
            let result = simulate_mac(&client, &url, &ca, &serial, key, deadline).await;
            (serial, result)
        });
    }
    let mut failures = BTreeMap::new();
    while let Some(joined) = macs.join_next().await {
        let (serial, result) = joined.context("a simulated Mac panicked")?;
        if let Err(e) = result {
            failures.insert(serial, format!("{e:#}"));
        }
    }
    // The last events may still be on their way to the watcher.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seconds = started.elapsed().as_secs_f64();
    let stages = timeline.stages();
    let released = serials
        .iter()
        .filter(|s| stages.get(*s).is_some_and(|st| st.released.is_some()))
        .count();
    let failed = args.devices - released;
    for (serial, why) in failures.iter().take(10) {
        eprintln!("{serial}: {why}");
    }
    let latency = |from: fn(&Stages) -> Option<f64>, to: fn(&Stages) -> Option<f64>| {
        let mut d: Vec<f64> = stages
            .values()
            .filter_map(|s| Some(to(s)? - from(s)?))
            .collect();
        d.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            d.get(((d.len() as f64 - 1.0) * q).round() as usize)
                .map(|v| (v * 1000.0).round() / 1000.0)
        };
        json!({ "p50": pick(0.5), "p95": pick(0.95), "max": pick(1.0) })
    };
    let summary = json!({
        "devices": args.devices,
        "released": released,
        "failed": failed,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "pushes": apns.pushes().len(),
        "stages_seconds": {
            "added_to_assigned": latency(|s| s.added, |s| s.assigned),
            "enrolled_to_released": latency(|s| s.enrolled, |s| s.released),
            "added_to_released": latency(|s| s.added, |s| s.released),
        },
        "plugins": engine.plugins().list().iter().map(|p| json!({
            "name": p.name, "calls": p.stats.calls, "decisions": p.stats.decisions,
            "errors": p.stats.errors, "p50_us": p.stats.p50_us,
        })).collect::<Vec<_>>(),
    });
    watcher.abort();
    let _ = stop.send(());
    let _ = server.await;
    engine.shutdown().await;
    println!(
        "\n{released} of {} Macs released in {seconds:.2} s ({failed} not released); {} pushes sent",
        args.devices,
        apns.pushes().len()
    );
    if args.json {
        println!("{summary}");
    }
    if failed > 0 {
        bail!("{failed} Macs were not released");
    }
    Ok(())
}

/// The demo's teams, enrollment profile, library profiles and plugins.
async fn configure(engine: &Engine, abm: &FakeAbm, pki: &ApnsTestPki) -> anyhow::Result<()> {
    let cert = PushCertificate::from_pem(&pki.push_certificate(TOPIC, 365)?)
        .context("reading the fake push certificate")?;
    engine.apns().add_certificate(cert).await?;

    let dep = engine.dep();
    dep.create_server(SERVER).await?;
    let public_cert = dep.certificate(SERVER).await?;
    dep.upload_token(SERVER, &abm.token_for(public_cert.as_bytes())?, false)
        .await?;
    dep.put_profile(
        "mac-standard",
        DepProfile {
            profile_name: "Pomona demo".into(),
            is_supervised: Some(true),
            await_device_configured: Some(true),
            ..Default::default()
        },
    )
    .await?;
    let patch: pomona::dep::ServerPatch = serde_json::from_value(json!({
        "base_url": abm.url,
        "sync_interval_secs": 0,
        "default_teams": {"macos": "Everyone"},
    }))?;
    dep.patch_server(SERVER, patch).await?;

    for (name, bytes) in [("wifi", WIFI), ("restrictions", RESTRICTIONS)] {
        engine.profiles().put(name, bytes.to_vec()).await?;
    }
    for team in ["Engineering", "Sales", "Everyone"] {
        let spec: TeamSpec = serde_json::from_value(json!({
            "enrollment_profiles": {"macos": "mac-standard"},
            "release_timeout_secs": 600,
        }))?;
        engine.teams().put(team, spec).await?;
    }

    let config = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let plugins = engine.plugins();
    plugins
        .put(
            "auto-assign-rules",
            AUTO_ASSIGN.to_vec(),
            None,
            config(&[("family.Mac", "mac-standard"), ("family.AppleTV", "@skip")]),
        )
        .await?;
    plugins
        .put(
            "place-by-model",
            PLACE.as_bytes().to_vec(),
            None,
            config(&[
                ("model.MacBook Pro", "Engineering"),
                ("model.MacBook Air", "Sales"),
                ("default", "Everyone"),
            ]),
        )
        .await?;
    plugins
        .put(
            "setup-basic",
            SETUP.as_bytes().to_vec(),
            None,
            config(&[
                ("profiles", "wifi"),
                ("team.Engineering.profiles", "restrictions"),
                ("account.username", "admin"),
                ("account.full_name", "Demo Admin"),
                ("account.lock", "true"),
            ]),
        )
        .await?;
    plugins
        .put(
            "release-when-done",
            RELEASE.as_bytes().to_vec(),
            None,
            config(&[("timeout_secs", "600"), ("poll_secs", "5")]),
        )
        .await?;
    Ok(())
}

/// `n` RSA keys for the simulated Macs, made on the blocking pool.
async fn device_keys(n: usize) -> anyhow::Result<Vec<PKey<Private>>> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        tasks.spawn_blocking(|| -> anyhow::Result<PKey<Private>> {
            Ok(PKey::from_rsa(openssl::rsa::Rsa::generate(2048)?)?)
        });
    }
    let mut keys = Vec::with_capacity(n);
    while let Some(k) = tasks.join_next().await {
        keys.push(k??);
    }
    Ok(keys)
}

/// One Mac: signed MachineInfo, SCEP, Authenticate, TokenUpdate while Setup Assistant waits,
/// then every command acknowledged until `DeviceConfigured`.
async fn simulate_mac(
    client: &reqwest::Client,
    url: &str,
    device_ca: &TestDeviceCa,
    serial: &str,
    key: PKey<Private>,
    deadline: Instant,
) -> anyhow::Result<()> {
    let info = MachineInfo {
        udid: uuid::Uuid::new_v4().to_string().to_uppercase(),
        serial: serial.to_owned(),
        product: Some("Mac15,3".into()),
        version: Some("24B83".into()),
        os_version: Some("15.1".into()),
        language: Some("en".into()),
        ..Default::default()
    };
    let mac = enroll_automated_as(client, url, device_ca, &info, key).await?;
    mac.authenticate().await?;
    mac.token_update(true).await?;
    let mut next = None;
    loop {
        let command = match next.take() {
            Some(c) => c,
            None => match mac.idle().await? {
                Some(c) => c,
                None => {
                    if Instant::now() > deadline {
                        bail!("not released before the deadline");
                    }
                    // A real Mac waits for a push; this one polls.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let done = command.request_type == "DeviceConfigured";
        next = mac.acknowledge(&command.uuid).await?;
        if done {
            return Ok(());
        }
    }
}

/// The timeline: one line per lifecycle event of the first Macs, and every Mac's stage times.
#[derive(Clone)]
struct Timeline {
    started: Instant,
    show: usize,
    state: Arc<Mutex<TimelineState>>,
}

#[derive(Default)]
struct TimelineState {
    order: HashMap<String, usize>,
    serial_of: HashMap<String, String>,
    stages: BTreeMap<String, Stages>,
}

impl Timeline {
    fn new(started: Instant, show: usize) -> Self {
        Self {
            started,
            show,
            state: Default::default(),
        }
    }

    fn at(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn say(&self, line: &str) {
        println!("{:>8.3}s  {line}", self.at());
    }

    fn order(&self, serial: &str) {
        let mut s = self.state.lock().expect("timeline");
        let n = s.order.len();
        s.order.insert(serial.to_owned(), n);
    }

    fn stages(&self) -> BTreeMap<String, Stages> {
        self.state.lock().expect("timeline").stages.clone()
    }

    fn watch(
        self,
        mut events: tokio::sync::broadcast::Receiver<Event>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => self.record(&e),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        eprintln!("(the timeline missed {n} events)");
                    }
                    Err(_) => break,
                }
            }
        })
    }

    fn record(&self, e: &Event) {
        let at = self.at();
        let text = |k: &str| {
            e.data
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let mut s = self.state.lock().expect("timeline");
        let serial = match text("serial_number") {
            serial if !serial.is_empty() => {
                if let Some(id) = &e.enrollment_id {
                    s.serial_of.insert(id.to_string(), serial.clone());
                }
                serial
            }
            _ => match e
                .enrollment_id
                .as_ref()
                .and_then(|id| s.serial_of.get(id.as_str()))
            {
                Some(serial) => serial.clone(),
                None => return,
            },
        };
        let Some(&index) = s.order.get(&serial) else {
            return;
        };
        let stages = s.stages.entry(serial.clone()).or_default();
        let line = match e.kind.as_str() {
            "dep.device.added" => {
                stages.added.get_or_insert(at);
                format!("listed by Apple Business Manager ({})", text("model"))
            }
            "device.assigned" => {
                stages.assigned.get_or_insert(at);
                format!("assigned enrollment profile {}", text("profile"))
            }
            "device.placed" => {
                // Placement is written just before its DEP page: it starts the clock too.
                stages.added.get_or_insert(at);
                format!("placed in team {} by {}", text("team"), text("by"))
            }
            "enroll.machine_info" => "MachineInfo verified: enrollment profile served".into(),
            "enrollment.authenticated" => "Authenticate: MDM enrollment started".into(),
            "enrollment.completed" => {
                stages.enrolled.get_or_insert(at);
                "enrolled, waiting in Setup Assistant".into()
            }
            "setup.started" => {
                let steps: Vec<String> = e.data["steps"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s["id"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                format!("setup decided by {}: {}", text("by"), steps.join(", "))
            }
            "setup.step.succeeded" => format!("step {} done", text("step")),
            "setup.step.failed" => format!("step {} failed", text("step")),
            "setup.step.skipped" => format!("step {} skipped: {}", text("step"), text("reason")),
            "device.released" => {
                stages.released.get_or_insert(at);
                format!("released by {} ({})", text("by"), text("reason"))
            }
            _ => return,
        };
        drop(s);
        if index < self.show {
            println!("{at:>8.3}s  {serial}  {line}");
        }
    }
}
