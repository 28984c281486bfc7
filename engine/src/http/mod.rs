//! The HTTP adapter: device endpoints, the admin API and operational endpoints.
//!
//! Handlers only translate between HTTP and the services; protocol and business rules live in
//! [`crate::mdm`] and below. Device-endpoint statuses are decided in [`status`] alone.

pub mod api;
mod cert_cache;
pub mod client_addr;
pub mod device;
pub mod enroll;
pub mod ops;
pub mod rate_limit;
pub mod scep;
pub mod server;
pub mod status;

use std::sync::Arc;

use axum::Router;

use crate::engine::EngineInner;
pub(crate) use cert_cache::CertCache;
pub(crate) use rate_limit::RateLimits;

pub(crate) fn router(inner: Arc<EngineInner>) -> Router {
    Router::new()
        .merge(device::routes(inner.clone()))
        .merge(api::routes(inner.clone()))
        .merge(scep::routes(inner.clone()))
        .merge(enroll::routes(inner.clone()))
        .merge(ops::routes(inner.clone()))
        .layer(axum::middleware::from_fn_with_state(
            inner,
            client_addr::guard_proxy_header,
        ))
}
