//! The embeddable engine: assembled in code with [`Engine::builder`], served as an axum router.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pomona::EngineError> {
//! let engine = pomona::Engine::builder()
//!     .public_url("https://mdm.example.com")
//!     .api_key("a-long-random-admin-api-key")
//!     .build()
//!     .await?;
//! // Mount the device endpoints and the admin API in your own axum app:
//! let app = axum::Router::new().merge(engine.router());
//! let mut events = engine.subscribe();
//! # let _ = (app, &mut events);
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::ca::{CaError, CaOptions, CertificateAuthority};
use crate::config::{Config, RetentionConfig};
use crate::dep::{DepOptions, DepService};
use crate::enroll::{EnrollOptions, EnrollService, SigningIdentity};
use crate::events::Outbox;
use crate::mdm::commands::Commander;
use crate::mdm::core::TokenService;
use crate::mdm::identity::IdentityVerifier;
use crate::mdm::last_seen::LastSeen;
use crate::mdm::{
    CachedVerifier, Core, CoreOptions, IdentityService, MdmService, PinIdentity, RenewalPolicy,
    UserAuthenticatePolicy, VerifyIdentity,
};
use crate::metrics::Metrics;
use crate::policy::registry::{DeclaredPlugin, PluginRegistry};
use crate::policy::{Limits, PolicyChain};
use crate::profiles::ProfileLibrary;
use crate::push::Pusher;
use crate::push::apns::{ApnsOptions, ApnsPusher};
use crate::scep::{ScepOptions, ScepService};
use crate::seal::{SealError, SealKey};
use crate::setup::{SetupOptions, SetupService};
use crate::store::redb::RedbStore;
use crate::store::{Event, Store, StoreError};
use crate::teams::TeamService;
use crate::webhooks::{WebhookOptions, WebhookService};
use crate::wire::bounded_plist::PlistLimits;
use crate::wire::machine_info::DeviceTrust;
use openssl::pkey::PKey;
use openssl::x509::X509;

/// Errors assembling an engine.
#[derive(Debug, thiserror::Error)]
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
    /// A file named in the configuration could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Invalid settings.
    #[error("invalid engine settings: {0}")]
    Invalid(String),
}

/// Settings the HTTP adapter reads.
#[derive(Debug, Clone)]
pub(crate) struct HttpSettings {
    pub api_key: Option<String>,
    pub client_cert_header: Option<http::HeaderName>,
    pub max_body_bytes: usize,
    /// Peers whose client-certificate and `X-Forwarded-For` headers are believed.
    pub trusted_proxies: crate::http::client_addr::TrustedProxies,
    /// Limits on device plists (check-ins and command reports).
    pub plist_limits: PlistLimits,
}

/// Everything the adapters share.
pub(crate) struct EngineInner {
    pub store: Arc<dyn Store>,
    pub ca: Arc<CertificateAuthority>,
    pub outbox: Outbox,
    pub mdm: Arc<dyn MdmService>,
    pub verifier: Arc<CachedVerifier>,
    pub identity: IdentityService,
    pub commander: Arc<Commander>,
    pub scep: Arc<ScepService>,
    pub enroll: EnrollService,
    pub dep: DepService,
    pub teams: TeamService,
    pub setup: Arc<SetupService>,
    pub plugins: PluginRegistry,
    pub profiles: Arc<ProfileLibrary>,
    pub webhooks: WebhookService,
    pub pusher: Arc<dyn Pusher>,
    pub apns: Arc<ApnsPusher>,
    pub metrics: Arc<Metrics>,
    pub last_seen: Arc<LastSeen>,
    pub http: HttpSettings,
    pub certs: crate::http::CertCache,
    pub rate_limits: crate::http::RateLimits,
    pub public_url: String,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A running Pomona engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
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
    api_key: Option<String>,
    public_url: String,
    client_cert_header: Option<String>,
    trusted_proxies: crate::http::client_addr::TrustedProxies,
    rate_limits: crate::http::rate_limit::RateLimitOptions,
    renewal: RenewalPolicy,
    core: CoreOptions,
    max_body_bytes: usize,
    max_queue_len: usize,
    retention: RetentionConfig,
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
        let defaults = Config::default();
        Self {
            store: None,
            seal: None,
            ca: None,
            ca_options: CaOptions::default(),
            api_key: None,
            public_url: defaults.public_url,
            client_cert_header: None,
            trusted_proxies: Default::default(),
            rate_limits: crate::http::rate_limit::RateLimitOptions::off(),
            renewal: RenewalPolicy::default(),
            core: CoreOptions::default(),
            max_body_bytes: defaults.mdm.max_body_bytes,
            max_queue_len: defaults.mdm.max_queue_len,
            retention: defaults.retention,
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
            plist_limits: defaults.plist_limits,
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, EngineError> {
    std::fs::read(path).map_err(|source| EngineError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Enrollment options from the `[enroll]` section (reads the files it names).
fn enroll_options(config: &Config) -> Result<EnrollOptions, EngineError> {
    let e = &config.enroll;
    let mut o = EnrollOptions::new(&config.public_url);
    o.topic = e.topic.clone();
    o.token = e.token.clone();
    o.organization = e.organization.clone();
    o.min_os_version = e.min_os_version.clone();
    o.min_build_version = e.min_build_version.clone();
    if let Some(n) = &e.display_name {
        o.display_name = n.clone();
    }
    if let Some(i) = &e.identifier {
        o.identifier = i.clone();
    }
    if let Some(f) = &e.device_ca_file {
        o.device_trust = DeviceTrust::from_pem_bundle(&read(f)?)
            .map_err(|err| EngineError::Invalid(format!("{}: {err}", f.display())))?;
    }
    for f in &e.trust_anchor_files {
        let certs = X509::stack_from_pem(&read(f)?)
            .map_err(|err| EngineError::Invalid(format!("{}: {err}", f.display())))?;
        for c in certs {
            o.trust_anchors_der.push(
                c.to_der()
                    .map_err(|err| EngineError::Invalid(err.to_string()))?,
            );
        }
    }
    if let (Some(cf), Some(kf)) = (&e.signing_cert_file, &e.signing_key_file) {
        let mut certs = X509::stack_from_pem(&read(cf)?)
            .map_err(|err| EngineError::Invalid(format!("{}: {err}", cf.display())))?;
        if certs.is_empty() {
            return Err(EngineError::Invalid(format!(
                "{}: no certificate",
                cf.display()
            )));
        }
        let cert = certs.remove(0);
        let key = PKey::private_key_from_pem(&read(kf)?)
            .map_err(|err| EngineError::Invalid(format!("{}: {err}", kf.display())))?;
        o.signing = Some(SigningIdentity {
            cert,
            key,
            chain: certs,
        });
    }
    Ok(o)
}

impl EngineBuilder {
    /// A builder configured from a [`Config`]: opens `<data_dir>/pomona.redb`, uses the seal key
    /// from the config or `<data_dir>/seal.key` (created if missing), and imports the CA files
    /// if configured. The API key is taken from `config.api.key` as is.
    pub fn from_config(config: &Config) -> Result<Self, EngineError> {
        crate::fsutil::private_dir(&config.data_dir).map_err(|source| EngineError::Io {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let db_path = config.data_dir.join("pomona.redb");
        crate::fsutil::tighten(&db_path, crate::fsutil::FILE_MODE).map_err(|source| {
            EngineError::Io {
                path: db_path.display().to_string(),
                source,
            }
        })?;
        let seal = match &config.seal.key {
            Some(hex) => SealKey::from_hex(hex)?,
            None => SealKey::load_or_create(&config.data_dir.join("seal.key"))?,
        };
        let store = RedbStore::open(&db_path, &seal)?;
        let mut b = Self::default()
            .store(Arc::new(store))
            .seal_key(seal)
            .public_url(&config.public_url)
            .renewal_policy(config.identity.renewal)
            .user_authenticate(config.mdm.user_authenticate)
            .max_body_bytes(config.mdm.max_body_bytes)
            .max_queue_len(config.mdm.max_queue_len)
            .retention(config.retention.clone())
            .scep_options(ScepOptions {
                static_challenge: config.scep.challenge.clone(),
                validity_days: config.ca.device_cert_validity_days,
                challenge_ttl_secs: config.scep.challenge_ttl_secs,
            });
        b.ca_options = CaOptions {
            key_bits: config.ca.key_bits,
            validity_days: config.ca.validity_days,
            ..CaOptions::default()
        };
        if let Some(key) = &config.api.key {
            b = b.api_key(key);
        }
        if let Some(h) = &config.identity.client_cert_header {
            b = b.client_cert_header(h);
        }
        if let Some(list) = &config.identity.trusted_proxies {
            b.trusted_proxies = crate::http::client_addr::TrustedProxies::parse(list)
                .map_err(|e| EngineError::Invalid(format!("identity.trusted_proxies: {e}")))?;
        }
        b.rate_limits = config.rate_limit.options();
        if let (Some(cert), Some(key)) = (&config.ca.cert_file, &config.ca.key_file) {
            b = b.ca(CertificateAuthority::from_pem(&read(cert)?, &read(key)?)?);
        }
        b.enroll = Some(enroll_options(config)?);
        let mut apns = ApnsOptions::default();
        apns.endpoint.base_url = config.apns.base_url.clone();
        apns.endpoint.connections = config.apns.connections;
        apns.endpoint.connect_timeout = Duration::from_secs(config.apns.connect_timeout_secs);
        apns.endpoint.handshake_timeout = Duration::from_secs(config.apns.handshake_timeout_secs);
        apns.endpoint.timeout = Duration::from_secs(config.apns.request_timeout_secs);
        apns.rearm_after = Duration::from_secs(config.apns.rearm_after_secs);
        if let Some(f) = &config.apns.extra_ca_file {
            apns.endpoint.extra_ca = Some(
                X509::from_pem(&read(f)?)
                    .map_err(|e| EngineError::Invalid(format!("{}: {e}", f.display())))?,
            );
        }
        b.apns = apns;
        b.plugin_limits = config.plugin_limits;
        b.plist_limits = config.plist_limits;
        b.setup.release_timeout = Duration::from_secs(config.setup.release_timeout_secs);
        // Relative plugin paths in a config file are relative to the working directory.
        b.plugins = config.plugins.clone();
        Ok(b)
    }

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

    /// Require this key on the admin API. Without one the admin API answers 401 to everything.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The URL devices reach the engine at.
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = url.into().trim_end_matches('/').to_owned();
        self
    }

    /// Accept client certificates forwarded by a TLS-terminating proxy in this header.
    pub fn client_cert_header(mut self, name: impl Into<String>) -> Self {
        self.client_cert_header = Some(name.into());
        self
    }

    /// Believe the client-certificate header (and `X-Forwarded-For`) only from these peers
    /// (default: loopback only).
    pub fn trusted_proxies(mut self, proxies: crate::http::client_addr::TrustedProxies) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// Per-client rate limits on `/mdm/enroll` and `/scep` (default: off here;
    /// [`EngineBuilder::from_config`] applies `[rate_limit]`, which is on by default).
    pub fn rate_limits(mut self, limits: crate::http::rate_limit::RateLimitOptions) -> Self {
        self.rate_limits = limits;
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
    pub fn retention(mut self, r: RetentionConfig) -> Self {
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
        let header = match &self.client_cert_header {
            Some(h) => Some(http::HeaderName::try_from(h.as_str()).map_err(|_| {
                EngineError::Invalid(format!("client_cert_header {h:?} is not a header name"))
            })?),
            None => None,
        };
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
        .map_err(|e| EngineError::Invalid(format!("push certificates: {e}")))?;
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
        let identity = IdentityService::new(store.clone(), store.clone(), outbox.clone());
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
        let enroll = EnrollService::new(
            ca.clone(),
            scep.clone(),
            apns.clone(),
            store.clone(),
            outbox.clone(),
            enroll_options,
        );
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
        .map_err(|e| EngineError::Invalid(format!("policy plugins: {e}")))?;
        let dep = DepService::new(store.clone(), seal.clone(), outbox.clone(), dep_options)
            .with_policy(chain.clone())
            .with_teams(store.clone(), store.clone());
        let teams = TeamService::new(store.clone(), outbox.clone());
        self.plist_limits
            .check()
            .map_err(|e| EngineError::Invalid(format!("plist_limits: {e}")))?;
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
        let webhooks =
            WebhookService::new(store.clone(), outbox.clone(), seal.clone(), self.webhooks)
                .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(EngineInner {
            store,
            ca,
            outbox,
            mdm: service,
            verifier,
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
            http: HttpSettings {
                api_key: self.api_key,
                client_cert_header: header,
                max_body_bytes: self.max_body_bytes,
                trusted_proxies: self.trusted_proxies,
                plist_limits: self.plist_limits,
            },
            certs: Default::default(),
            rate_limits: crate::http::RateLimits::new(&self.rate_limits),
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

    /// The device endpoints, the admin API (`/v1`) and the operational endpoints as one router.
    pub fn router(&self) -> axum::Router {
        crate::http::router(self.inner.clone())
    }

    /// The check-in service chain (for embedders that speak HTTP themselves).
    pub fn mdm(&self) -> Arc<dyn MdmService> {
        self.inner.mdm.clone()
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

    fn spawn_background(&self, retention: RetentionConfig) {
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
                let retention = retention.clone();
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

async fn collect_garbage(inner: &EngineInner, retention: &RetentionConfig) {
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

#[cfg(all(test, unix))]
mod file_mode_tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &std::path::Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_dir_is_0700_and_database_0600_also_when_they_were_open() {
        let root = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: root.path().join("fresh"),
            ..Config::default()
        };
        drop(EngineBuilder::from_config(&config).unwrap());
        assert_eq!(mode(&config.data_dir), 0o700);
        assert_eq!(mode(&config.data_dir.join("pomona.redb")), 0o600);

        // An older data dir left readable by everyone is tightened on start.
        let old = root.path().join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::File::create(old.join("pomona.redb")).unwrap();
        std::fs::set_permissions(
            old.join("pomona.redb"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let config = Config {
            data_dir: old.clone(),
            ..Config::default()
        };
        drop(EngineBuilder::from_config(&config).unwrap());
        assert_eq!(mode(&old), 0o700);
        assert_eq!(mode(&old.join("pomona.redb")), 0o600);
    }
}
