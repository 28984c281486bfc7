//! What the HTTP adapter owns: its settings ([`HttpOptions`]), its state (the engine's services
//! plus its own rate-limit buckets) and the routers built from them ([`Routes`]).

use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use axum::http::HeaderName;

use super::client_addr::TrustedProxies;
use super::rate_limit::{RateLimitOptions, RateLimits};
use crate::Engine;
use crate::engine::Services;

/// How the admin API (`/v1`) authenticates its callers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AdminAuth {
    /// Pomona checks an API key (`Authorization: Bearer KEY`, or HTTP Basic with the key as
    /// password). Without a key every request is refused with 401: this is the default.
    #[default]
    Locked,
    /// Pomona checks this API key.
    ApiKey(String),
    /// Pomona checks nothing: the embedder mounts the admin router behind its own
    /// authentication. Never serve it unprotected, it manages every device.
    External,
}

/// Settings of the HTTP adapter (the engine's own settings are [`crate::EngineBuilder`]'s).
///
/// The defaults are the safe ones: the admin API refuses everything until given a key (or told
/// that the embedder authenticates), no client-certificate header is believed, and only loopback
/// proxies are trusted. Rate limits are off by default here; `pomona serve` turns them on
/// through its configuration.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpOptions {
    /// Who may call the admin API.
    pub admin_auth: AdminAuth,
    /// The header a TLS-terminating proxy forwards client certificates in.
    pub client_cert_header: Option<HeaderName>,
    /// Peers whose client-certificate and `X-Forwarded-For` headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// Per-client limits on `/mdm/enroll` and `/scep`.
    pub rate_limits: RateLimitOptions,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            admin_auth: AdminAuth::Locked,
            client_cert_header: None,
            trusted_proxies: TrustedProxies::default(),
            rate_limits: RateLimitOptions::off(),
        }
    }
}

impl HttpOptions {
    /// The defaults (see the type's docs).
    pub fn new() -> Self {
        Self::default()
    }

    /// Require this key on the admin API.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.admin_auth = AdminAuth::ApiKey(key.into());
        self
    }

    /// How the admin API authenticates (see [`AdminAuth`]).
    pub fn admin_auth(mut self, auth: AdminAuth) -> Self {
        self.admin_auth = auth;
        self
    }

    /// Accept client certificates forwarded by a TLS-terminating proxy in this header (only
    /// from [`HttpOptions::trusted_proxies`]).
    pub fn client_cert_header(mut self, name: HeaderName) -> Self {
        self.client_cert_header = Some(name);
        self
    }

    /// Believe the client-certificate header (and `X-Forwarded-For`) only from these peers
    /// (default: loopback only).
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// Per-client rate limits on `/mdm/enroll` and `/scep` (default: off).
    pub fn rate_limits(mut self, limits: RateLimitOptions) -> Self {
        self.rate_limits = limits;
        self
    }
}

/// The state every handler gets: the engine's services, the adapter's settings and its rate
/// limiters. Cheap to clone; it holds no store.
#[derive(Clone)]
pub(crate) struct HttpState(Arc<Shared>);

pub(crate) struct Shared {
    pub services: Services,
    pub options: HttpOptions,
    pub rate_limits: RateLimits,
}

impl Deref for HttpState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Deref for Shared {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.services
    }
}

/// The engine's HTTP endpoints, as routers to serve or to mount in an existing axum app.
///
/// Paths are fixed relative to where a router is mounted: mount with [`Router::nest`] to put
/// them under a prefix, and include that prefix in the engine's public URL
/// ([`crate::EngineBuilder::public_url`]): enrollment profiles, the SCEP URL and DEP profiles
/// are built from it.
///
/// ```no_run
/// # async fn demo(engine: pomona::Engine) {
/// use pomona::http::{AdminAuth, HttpOptions, Routes};
///
/// // The engine was built with `.public_url("https://example.com/mdm-engine")`.
/// let routes = Routes::new(&engine, HttpOptions::new().admin_auth(AdminAuth::External));
/// let app: axum::Router = axum::Router::new()
///     .nest("/mdm-engine", routes.device_router())
///     // Put your own authentication in front of the admin API:
///     .nest("/mdm-engine/admin", routes.admin_router());
/// # let _ = app; }
/// ```
#[derive(Clone)]
pub struct Routes {
    state: HttpState,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("options", &self.state.options)
            .finish_non_exhaustive()
    }
}

impl Routes {
    /// The endpoints of `engine`, with these HTTP settings.
    pub fn new(engine: &Engine, options: HttpOptions) -> Self {
        let rate_limits = RateLimits::new(&options.rate_limits);
        Self {
            state: HttpState(Arc::new(Shared {
                services: engine.services(),
                options,
                rate_limits,
            })),
        }
    }

    /// What devices call: `/mdm/checkin`, `/mdm/connect`, `/mdm`, `/mdm/setup`, `/mdm/enroll`
    /// and `/scep`. Authenticated by the device's identity, not by the admin API's settings.
    pub fn device_router(&self) -> Router {
        guarded(&self.state, self.device_routes())
    }

    /// The admin API under `/v1`, authenticated as [`HttpOptions::admin_auth`] says.
    pub fn admin_router(&self) -> Router {
        guarded(&self.state, super::api::routes(self.state.clone()))
    }

    /// Operational endpoints without authentication: `/health`, `/version`, `/metrics`.
    pub fn ops_router(&self) -> Router {
        guarded(&self.state, super::ops::routes(self.state.clone()))
    }

    /// The device endpoints, the admin API and the operational endpoints as one router.
    pub fn router(&self) -> Router {
        guarded(
            &self.state,
            self.device_routes()
                .merge(super::api::routes(self.state.clone()))
                .merge(super::ops::routes(self.state.clone())),
        )
    }

    fn device_routes(&self) -> Router {
        Router::new()
            .merge(super::device::routes(self.state.clone()))
            .merge(super::scep::routes(self.state.clone()))
            .merge(super::enroll::routes(self.state.clone()))
    }
}

/// Refuse the client-certificate header from untrusted peers on every route of `router`.
fn guarded(state: &HttpState, router: Router) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        super::client_addr::guard_proxy_header,
    ))
}
