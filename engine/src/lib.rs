//! # Pomona
//!
//! An embeddable, plugin-scriptable Apple MDM engine.
//!
//! The crate is layered; dependencies point inward:
//!
//! - [`wire`]: Apple wire formats (plists, commands, CMS signatures) — pure functions.
//! - [`store`]: narrow storage traits per consumer and the redb backend.
//! - Services: [`mdm`] (check-in and command queue), [`ca`], [`events`], [`push`].
//! - Adapters: [`http`] (device endpoints, admin API) and the `pomona` binary.
//!
//! Start with [`Engine::builder`]; serve it with [`Routes`] (device, admin and ops routers, each
//! mountable under any prefix) or hand raw device requests to [`Engine::device_gateway`]. What
//! embedders need most is re-exported here: [`RedbStore`], [`SealKey`], [`HttpOptions`],
//! [`AdminAuth`].

#![warn(missing_docs)]

pub mod ca;
pub mod config;
pub mod dep;
mod engine;
pub mod enroll;
pub mod events;
pub mod fsutil;
pub mod http;
pub mod mdm;
pub mod metrics;
pub mod policy;
pub mod profiles;
pub mod push;
pub mod scep;
pub mod seal;
mod setters;
pub mod setup;
pub mod store;
pub mod teams;
pub mod webhooks;
pub mod wire;

pub use engine::{Engine, EngineBuilder, EngineError, Retention};
pub use http::{AdminAuth, HttpOptions, Routes};
pub use mdm::DeviceGateway;
pub use seal::SealKey;
pub use store::redb::RedbStore;
pub use store::{Store, StoreError};
