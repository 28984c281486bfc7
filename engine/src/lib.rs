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
//! Start with [`Engine::builder`].

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
