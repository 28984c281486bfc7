//! The embeddable engine: assembled in code with [`Engine::builder`], served over HTTP by
//! `pomona::http::Routes` (or by your own HTTP stack through [`Engine::device_gateway`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), pomona::EngineError> {
//! use pomona::http::{HttpOptions, Routes};
//!
//! let engine = pomona::Engine::builder()
//!     .public_url("https://mdm.example.com")
//!     .build()
//!     .await?;
//! // Mount the device endpoints and the admin API in your own axum app:
//! let routes = Routes::new(&engine, HttpOptions::new().api_key("a-long-random-admin-api-key"));
//! let app = axum::Router::new().merge(routes.router());
//! let mut events = engine.subscribe();
//! # let _ = (app, &mut events);
//! # Ok(()) }
//! ```
//!
//! This module knows nothing of HTTP or of the configuration file: the HTTP adapter and the
//! configuration sit above it and call in.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::ca::{CaError, CaOptions, CertificateAuthority};
use crate::dep::{DepOptions, DepService};
use crate::enroll::{EnrollOptions, EnrollService};
use crate::events::Outbox;
use crate::mdm::commands::Commander;
use crate::mdm::core::TokenService;
use crate::mdm::identity::IdentityVerifier;
use crate::mdm::last_seen::LastSeen;
use crate::mdm::{
    CachedVerifier, Core, CoreOptions, DeviceGateway, IdentityService, MdmService, PinIdentity,
    RenewalPolicy, UserAuthenticatePolicy, VerifyIdentity,
};
use crate::metrics::Metrics;
use crate::policy::registry::{DeclaredPlugin, PluginRegistry, RegistryError};
use crate::policy::{Limits, PolicyChain};
use crate::profiles::ProfileLibrary;
use crate::push::Pusher;
use crate::push::apns::{ApnsOptions, ApnsPusher, PushError};
use crate::scep::{ScepOptions, ScepService};
use crate::seal::{SealError, SealKey};
use crate::setup::{SetupOptions, SetupService};
use crate::store::redb::RedbStore;
use crate::store::{Event, Store, StoreError};
use crate::teams::TeamService;
use crate::webhooks::{WebhookError, WebhookOptions, WebhookService};
use crate::wire::bounded_plist::PlistLimits;

/// Errors assembling an engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The CA could not be loaded, imported or generated.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The seal key is unusable.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A certificate file could not be decoded.
    #[error("{path}: cannot decode the certificates")]
    CertificateFile {
        /// The file.
        path: String,
        /// OpenSSL's error.
        #[source]
        source: openssl::error::ErrorStack,
    },
    /// A private-key file could not be decoded.
    #[error("{path}: cannot decode the private key")]
    KeyFile {
        /// The file.
        path: String,
        /// OpenSSL's error.
        #[source]
        source: openssl::error::ErrorStack,
    },
    /// The device CA bundle (`enroll.device_ca_file`) is unusable.
    #[error("{path}: unusable device CA bundle")]
    DeviceTrust {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: crate::wire::machine_info::MachineInfoError,
    },
    /// The stored push certificates could not be loaded.
    #[error("push certificates")]
    PushCertificates(#[source] PushError),
    /// A declared or stored policy plugin could not be loaded.
    #[error("policy plugins")]
    Plugins(#[source] RegistryError),
    /// The webhook service could not start.
    #[error("webhooks")]
    Webhooks(#[source] WebhookError),
    /// A setting is out of range or inconsistent.
    #[error("invalid setting {name}: {reason}")]
    InvalidSetting {
        /// The setting.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// How long finished work is kept before the background collector removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Days a finished command and its results are kept.
    pub command_days: u32,
    /// Days an event is kept in the outbox.
    pub event_days: u32,
}

impl Retention {
    /// Keep finished commands `command_days` and events `event_days` days.
    pub fn new(command_days: u32, event_days: u32) -> Self {
        Self {
            command_days,
            event_days,
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self::new(30, 30)
    }
}

/// Engine defaults that the configuration file shares.
pub(crate) mod defaults {
    /// The URL devices reach the engine at, unless told otherwise.
    pub const PUBLIC_URL: &str = "http://127.0.0.1:9000";
    /// Largest accepted device request body, in bytes.
    pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
    /// Most commands queued for one enrollment.
    pub const MAX_QUEUE_LEN: usize = 1000;
}

/// Everything the engine holds. Private: adapters see [`Services`].
struct EngineInner {
    store: Arc<dyn Store>,
    ca: Arc<CertificateAuthority>,
    outbox: Outbox,
    mdm: Arc<dyn MdmService>,
    gateway: Arc<DeviceGateway>,
    identity: Arc<IdentityService>,
    commander: Arc<Commander>,
    scep: Arc<ScepService>,
    enroll: Arc<EnrollService>,
    dep: Arc<DepService>,
    teams: Arc<TeamService>,
    setup: Arc<SetupService>,
    plugins: Arc<PluginRegistry>,
    profiles: Arc<ProfileLibrary>,
    webhooks: Arc<WebhookService>,
    pusher: Arc<dyn Pusher>,
    apns: Arc<ApnsPusher>,
    metrics: Arc<Metrics>,
    last_seen: Arc<LastSeen>,
    public_url: String,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The services an adapter (the HTTP adapter) calls: handles onto the engine's services, never
/// the store.
#[derive(Clone)]
pub(crate) struct Services {
    pub gateway: Arc<DeviceGateway>,
    pub identity: Arc<IdentityService>,
    pub commander: Arc<Commander>,
    pub scep: Arc<ScepService>,
    pub enroll: Arc<EnrollService>,
    pub dep: Arc<DepService>,
    pub teams: Arc<TeamService>,
    pub setup: Arc<SetupService>,
    pub plugins: Arc<PluginRegistry>,
    pub profiles: Arc<ProfileLibrary>,
    pub webhooks: Arc<WebhookService>,
    pub pusher: Arc<dyn Pusher>,
    pub apns: Arc<ApnsPusher>,
    pub metrics: Arc<Metrics>,
    pub outbox: Outbox,
}

/// A running Pomona engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("public_url", &self.inner.public_url)
            .finish_non_exhaustive()
    }
}

type Layer = Box<dyn FnOnce(Arc<dyn MdmService>) -> Arc<dyn MdmService> + Send>;

/// Assembles an [`Engine`]. Every setting has a default; the defaults keep state in memory.
pub struct EngineBuilder {
    store: Option<Arc<dyn Store>>,
    seal: Option<SealKey>,
    ca: Option<CertificateAuthority>,
    ca_options: CaOptions,
    public_url: String,
    renewal: RenewalPolicy,
    core: CoreOptions,
    max_body_bytes: usize,
    max_queue_len: usize,
    retention: Retention,
    scep: ScepOptions,
    enroll: Option<EnrollOptions>,
    apns: ApnsOptions,
    dep: Option<DepOptions>,
    pusher: Option<Arc<dyn Pusher>>,
    layers: Vec<Layer>,
    plugins: Vec<DeclaredPlugin>,
    plugin_limits: Limits,
    setup: SetupOptions,
    webhooks: WebhookOptions,
    plist_limits: PlistLimits,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self {
            store: None,
            seal: None,
            ca: None,
            ca_options: CaOptions::default(),
            public_url: defaults::PUBLIC_URL.to_owned(),
            renewal: RenewalPolicy::default(),
            core: CoreOptions::default(),
            max_body_bytes: defaults::MAX_BODY_BYTES,
            max_queue_len: defaults::MAX_QUEUE_LEN,
            retention: Retention::default(),
            scep: ScepOptions::default(),
            enroll: None,
            apns: ApnsOptions::default(),
            dep: None,
            pusher: None,
            layers: Vec::new(),
            plugins: Vec::new(),
            plugin_limits: Limits::default(),
            setup: SetupOptions::default(),
            webhooks: WebhookOptions::default(),
            plist_limits: PlistLimits::default(),
        }
    }
}

impl EngineBuilder {
    /// Use this store (default: a fresh in-memory redb).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Seal secrets with this key (default: a random key, fine only for in-memory stores).
    pub fn seal_key(mut self, key: SealKey) -> Self {
        self.seal = Some(key);
        self
    }

    /// Use this CA (default: the one sealed in the store, generated on first start).
    pub fn ca(mut self, ca: CertificateAuthority) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Generate the CA with these parameters when none is given or stored.
    pub fn ca_options(mut self, options: CaOptions) -> Self {
        self.ca_options = options;
        self
    }

    /// The URL devices reach the engine at.
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = url.into().trim_end_matches('/').to_owned();
        self
    }

    /// What to do when a device presents a new certificate.
    pub fn renewal_policy(mut self, policy: RenewalPolicy) -> Self {
        self.renewal = policy;
        self
    }

    /// `UserAuthenticate` behaviour.
    pub fn user_authenticate(mut self, policy: UserAuthenticatePolicy) -> Self {
        self.core.user_authenticate = policy;
        self
    }

    /// Answer `GetToken` for `service_type` with `service`.
    pub fn token_service(mut self, service_type: &str, service: Arc<dyn TokenService>) -> Self {
        self.core
            .token_services
            .insert(service_type.to_owned(), service);
        self
    }

    /// Largest accepted device request body.
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// Limits on every plist from devices and on uploaded profiles (default:
    /// [`PlistLimits::default`]).
    pub fn plist_limits(mut self, limits: PlistLimits) -> Self {
        self.plist_limits = limits;
        self
    }

    /// Most commands queued per enrollment.
    pub fn max_queue_len(mut self, n: usize) -> Self {
        self.max_queue_len = n;
        self
    }

    /// How long finished commands and events are kept.
    pub fn retention(mut self, r: Retention) -> Self {
        self.retention = r;
        self
    }

    /// SCEP challenge policy and certificate validity.
    pub fn scep_options(mut self, options: ScepOptions) -> Self {
        self.scep = options;
        self
    }

    /// Enrollment-profile settings (default: [`EnrollOptions::new`] for the public URL).
    pub fn enroll_options(mut self, options: EnrollOptions) -> Self {
        self.enroll = Some(options);
        self
    }

    /// APNs endpoint, retry and re-arm settings.
    pub fn apns_options(mut self, options: ApnsOptions) -> Self {
        self.apns = options;
        self
    }

    /// DEP retry and backoff settings (default: [`DepOptions::new`] for the public URL).
    pub fn dep_options(mut self, options: DepOptions) -> Self {
        self.dep = Some(options);
        self
    }

    /// Send pushes with this pusher instead of APNs (push certificates are still managed by the
    /// engine's APNs pusher).
    pub fn pusher(mut self, pusher: Arc<dyn Pusher>) -> Self {
        self.pusher = Some(pusher);
        self
    }

    /// Declare a policy plugin (asked before uploaded ones, in the order declared).
    pub fn plugin(mut self, plugin: DeclaredPlugin) -> Self {
        self.plugins.push(plugin);
        self
    }

    /// Default limits for policy plugins.
    pub fn plugin_limits(mut self, limits: Limits) -> Self {
        self.plugin_limits = limits;
        self
    }

    /// The setup flow's release timeout and timers (default: [`SetupOptions::default`]).
    pub fn setup_options(mut self, options: SetupOptions) -> Self {
        self.setup = options;
        self
    }

    /// Webhook delivery timeout, backoff and polling (default: [`WebhookOptions::default`]).
    pub fn webhook_options(mut self, options: WebhookOptions) -> Self {
        self.webhooks = options;
        self
    }

    /// Wrap the check-in service with your own middleware. Layers see requests whose identity is
    /// already verified and pinned, and wrap the core (which records events); the first layer added
    /// is the outermost.
    pub fn wrap_mdm(
        mut self,
        layer: impl FnOnce(Arc<dyn MdmService>) -> Arc<dyn MdmService> + Send + 'static,
    ) -> Self {
        self.layers.push(Box::new(layer));
        self
    }

    /// Assemble the engine and start its background tasks (needs a Tokio runtime).
    pub async fn build(self) -> Result<Engine, EngineError> {
        let store: Arc<dyn Store> = match self.store {
            Some(s) => s,
            None => Arc::new(RedbStore::in_memory()?),
        };
        let seal = self.seal.unwrap_or_else(SealKey::generate);
        let ca = match self.ca {
            Some(ca) => ca,
            None => {
                CertificateAuthority::load_or_generate(&*store, &seal, &self.ca_options).await?
            }
        };
        let ca = Arc::new(ca);
        self.plist_limits
            .check()
            .map_err(|reason| EngineError::InvalidSetting {
                name: "plist_limits",
                reason,
            })?;
        let metrics = Arc::new(Metrics::default());
        let last_seen = Arc::new(LastSeen::default());
        let outbox = Outbox::new(store.clone(), 1024);
        let apns = ApnsPusher::new(
            store.clone(),
            store.clone(),
            store.clone(),
            seal.clone(),
            outbox.clone(),
            metrics.clone(),
            self.apns,
        )
        .await
        .map_err(EngineError::PushCertificates)?;
        let pusher: Arc<dyn Pusher> = match self.pusher {
            Some(p) => p,
            None => apns.clone(),
        };

        let core = Core::new(
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            outbox.clone(),
            seal.clone(),
            last_seen.clone(),
            self.core,
        );
        let mut service: Arc<dyn MdmService> = Arc::new(core);
        for layer in self.layers.into_iter().rev() {
            service = layer(service);
        }
        let verifier: Arc<dyn IdentityVerifier> = ca.clone();
        let verifier = Arc::new(CachedVerifier::new(verifier));
        let service: Arc<dyn MdmService> = Arc::new(VerifyIdentity::shared(
            PinIdentity::new(service, store.clone(), self.renewal, Some(outbox.clone())),
            verifier.clone(),
        ));
        let identity = Arc::new(IdentityService::new(
            store.clone(),
            store.clone(),
            outbox.clone(),
        ));
        let gateway = Arc::new(DeviceGateway::new(
            service.clone(),
            verifier,
            identity.clone(),
            store.clone(),
            metrics.clone(),
            self.max_body_bytes,
            self.plist_limits,
        ));
        let commander = Arc::new(Commander::new(
            store.clone(),
            store.clone(),
            pusher.clone(),
            outbox.clone(),
            metrics.clone(),
            self.max_queue_len,
        ));
        let scep = Arc::new(ScepService::new(
            ca.clone(),
            store.clone(),
            store.clone(),
            outbox.clone(),
            self.scep,
        ));
        let enroll_options = match self.enroll {
            Some(mut o) => {
                o.public_url = self.public_url.clone();
                o
            }
            None => EnrollOptions::new(&self.public_url),
        };
        let enroll = Arc::new(EnrollService::new(
            ca.clone(),
            scep.clone(),
            apns.clone(),
            store.clone(),
            outbox.clone(),
            enroll_options,
        ));
        let dep_options = match self.dep {
            Some(mut o) => {
                o.public_url = self.public_url.clone();
                o
            }
            None => DepOptions::new(&self.public_url),
        };
        let chain = Arc::new(PolicyChain::new(Some(outbox.clone())));
        let plugins = PluginRegistry::open(
            chain.clone(),
            store.clone(),
            outbox.clone(),
            self.plugin_limits,
            &self.plugins,
        )
        .await
        .map_err(EngineError::Plugins)?;
        let plugins = Arc::new(plugins);
        let dep = Arc::new(
            DepService::new(store.clone(), seal.clone(), outbox.clone(), dep_options)
                .with_policy(chain.clone())
                .with_teams(store.clone(), store.clone()),
        );
        let teams = Arc::new(TeamService::new(store.clone(), outbox.clone()));
        let profiles = Arc::new(
            ProfileLibrary::new(store.clone(), outbox.clone()).with_plist_limits(self.plist_limits),
        );
        let setup = Arc::new(
            SetupService::new(
                store.clone(),
                store.clone(),
                store.clone(),
                store.clone(),
                commander.clone(),
                chain.clone(),
                outbox.clone(),
                self.setup,
            )
            .with_profiles(profiles.clone()),
        );
        let webhooks = Arc::new(
            WebhookService::new(store.clone(), outbox.clone(), seal.clone(), self.webhooks)
                .map_err(EngineError::Webhooks)?,
        );
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(EngineInner {
            store,
            ca,
            outbox,
            mdm: service,
            gateway,
            identity,
            commander,
            scep,
            enroll,
            dep,
            teams,
            setup,
            plugins,
            profiles,
            webhooks,
            pusher,
            apns,
            metrics,
            last_seen,
            public_url: self.public_url,
            shutdown,
            tasks: Mutex::new(Vec::new()),
        });
        let engine = Engine { inner };
        engine.spawn_background(self.retention);
        Ok(engine)
    }
}

impl Engine {
    /// Start assembling an engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The device side for embedders that speak HTTP themselves: hand it a raw device request
    /// (body, `Mdm-Signature`, client certificate) and send back its answer. The built-in HTTP
    /// adapter (`pomona::http::Routes`) is a thin translation onto it.
    pub fn device_gateway(&self) -> &DeviceGateway {
        &self.inner.gateway
    }

    /// The check-in service chain (identity already verified by the caller; prefer
    /// [`Engine::device_gateway`], which verifies it).
    pub fn mdm(&self) -> Arc<dyn MdmService> {
        self.inner.mdm.clone()
    }

    /// The URL devices reach the engine at.
    pub fn public_url(&self) -> &str {
        &self.inner.public_url
    }

    /// Handles onto the services, for the adapters.
    pub(crate) fn services(&self) -> Services {
        let i = &self.inner;
        Services {
            gateway: i.gateway.clone(),
            identity: i.identity.clone(),
            commander: i.commander.clone(),
            scep: i.scep.clone(),
            enroll: i.enroll.clone(),
            dep: i.dep.clone(),
            teams: i.teams.clone(),
            setup: i.setup.clone(),
            plugins: i.plugins.clone(),
            profiles: i.profiles.clone(),
            webhooks: i.webhooks.clone(),
            pusher: i.pusher.clone(),
            apns: i.apns.clone(),
            metrics: i.metrics.clone(),
            outbox: i.outbox.clone(),
        }
    }

    /// Enqueue commands and push.
    pub fn commands(&self) -> &Commander {
        &self.inner.commander
    }

    /// The SCEP service (one-time challenges for enrollment flows).
    pub fn scep(&self) -> &ScepService {
        &self.inner.scep
    }

    /// DEP / Apple Business Manager: servers, sync, profiles, assignment.
    pub fn dep(&self) -> &DepService {
        &self.inner.dep
    }

    /// Teams: create, list, delete.
    pub fn teams(&self) -> &TeamService {
        &self.inner.teams
    }

    /// The setup flow: placement, setup steps and release (it runs in the background).
    pub fn setup(&self) -> &Arc<SetupService> {
        &self.inner.setup
    }

    /// Policy plugins: upload, list, remove (the chain itself: [`PluginRegistry::chain`]).
    pub fn plugins(&self) -> &PluginRegistry {
        &self.inner.plugins
    }

    /// Webhook subscriptions: create, list, test, delete; delivery runs in the background.
    pub fn webhooks(&self) -> &WebhookService {
        &self.inner.webhooks
    }

    /// The configuration-profile library: upload, list, remove, and the `InstallProfile`
    /// command for a stored profile ([`ProfileLibrary::install_command`]).
    pub fn profiles(&self) -> &ProfileLibrary {
        &self.inner.profiles
    }

    /// The APNs pusher (push certificates, health).
    pub fn apns(&self) -> &Arc<ApnsPusher> {
        &self.inner.apns
    }

    /// The certificate authority devices' identities chain to.
    pub fn ca(&self) -> &CertificateAuthority {
        &self.inner.ca
    }

    /// The store.
    pub fn store(&self) -> Arc<dyn Store> {
        self.inner.store.clone()
    }

    /// Events as they are published (durable copies: [`Engine::events_after`]).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.outbox.subscribe()
    }

    /// Durable events with `seq > after`.
    pub async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.inner.outbox.after(after, limit).await
    }

    /// The engine's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Stop background tasks and flush pending last-seen times.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        let tasks = std::mem::take(&mut *self.inner.tasks.lock().expect("tasks lock"));
        for t in tasks {
            let _ = t.await;
        }
        if let Err(err) = self.inner.last_seen.flush(&*self.inner.store).await {
            tracing::warn!(%err, "could not flush last-seen times at shutdown");
        }
    }

    fn spawn_background(&self, retention: Retention) {
        let mut tasks = self.inner.tasks.lock().expect("tasks lock");
        tasks.push(tokio::spawn(
            self.inner
                .setup
                .clone()
                .run(self.inner.shutdown.subscribe()),
        ));
        let inner = self.inner.clone();
        tasks.push(every(
            &self.inner.shutdown,
            Duration::from_secs(5),
            move || {
                let inner = inner.clone();
                async move {
                    if let Err(err) = inner.last_seen.flush(&*inner.store).await {
                        tracing::warn!(%err, "could not flush last-seen times");
                    }
                }
            },
        ));
        let inner = self.inner.clone();
        tasks.push(every(
            &self.inner.shutdown,
            Duration::from_secs(600),
            move || {
                let inner = inner.clone();
                async move { collect_garbage(&inner, &retention).await }
            },
        ));
        // Webhooks: one delivery worker per subscription, woken by new events.
        tasks.push(self.inner.webhooks.start(self.inner.shutdown.subscribe()));
        // DEP: each server syncs when its own interval has elapsed; due assignments go out.
        let inner = self.inner.clone();
        tasks.push(every(&self.inner.shutdown, DEP_TICK, move || {
            let inner = inner.clone();
            async move { inner.dep.tick().await }
        }));
        // APNs: re-check push-certificate expiry (an event when one becomes expiring or expired),
        // then wake devices that have been silent too long (paced, see `ApnsOptions`).
        let inner = self.inner.clone();
        tasks.push(every(&self.inner.shutdown, REARM_TICK, move || {
            let inner = inner.clone();
            async move {
                inner.apns.check_certificates().await;
                match inner.apns.rearm().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(pushed = n, "re-armed silent devices"),
                    Err(err) => tracing::warn!(%err, "push re-arm failed"),
                }
            }
        }));
    }
}

async fn collect_garbage(inner: &EngineInner, retention: &Retention) {
    let now = time::OffsetDateTime::now_utc();
    let cutoff = now - time::Duration::days(i64::from(retention.command_days));
    loop {
        match inner.store.collect_garbage(cutoff, 1000).await {
            Ok(1000) => continue,
            Ok(n) => {
                if n > 0 {
                    tracing::info!(deleted = n, "collected finished commands");
                }
                break;
            }
            Err(err) => {
                tracing::warn!(%err, "command garbage collection failed");
                break;
            }
        }
    }
    if let Err(err) = inner.scep.prune_challenges().await {
        tracing::warn!(%err, "challenge pruning failed");
    }
    let cutoff = now - time::Duration::days(i64::from(retention.event_days));
    if let Err(err) = inner.store.prune_events(cutoff).await {
        tracing::warn!(%err, "event pruning failed");
    }
}

/// How often the DEP syncer looks for servers whose sync interval elapsed.
const DEP_TICK: Duration = Duration::from_secs(60);

/// How often silent devices are looked for and pushed.
const REARM_TICK: Duration = Duration::from_secs(3600);

/// Run `f` every `period` until shutdown.
fn every<F, Fut>(shutdown: &watch::Sender<bool>, period: Duration, f: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut stop = shutdown.subscribe();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => f().await,
                _ = stop.changed() => break,
            }
        }
    })
}
