//! The HTTP adapter: device endpoints, the admin API and operational endpoints.
//!
//! Handlers only translate between HTTP and the engine's services; protocol and business rules
//! live in [`crate::mdm`] and below, which never import this module. The adapter owns its state
//! ([`HttpOptions`], its rate limiters) and reaches the engine through its services only.
//! Build the routers with [`Routes`]. Device-endpoint statuses are decided in [`status`] alone,
//! admin API statuses in [`api::error`].

pub mod api;
pub mod client_addr;
pub mod device;
pub mod enroll;
pub mod ops;
pub mod rate_limit;
pub mod scep;
pub mod server;
mod state;
pub mod status;

pub(crate) use state::HttpState;
pub use state::{AdminAuth, HttpOptions, Routes};
