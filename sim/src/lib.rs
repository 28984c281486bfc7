//! Simulated Apple services and devices, for `pomona demo`, tests and load generators.
//!
//! Everything here runs on loopback and speaks the real wire formats, so the engine cannot tell
//! it from the real thing: a Mac that enrolls through SCEP and signs its requests
//! ([`device::Device`], [`scep`], [`enroll`]), a fake Apple Business Manager with OAuth1,
//! cursors, paging and scripted faults ([`abm::FakeAbm`]), and a fake APNs over HTTP/2 with
//! mutual TLS ([`apns::FakeApns`]).
//!
//! This is tooling, not part of the engine's protocol surface: its functions return
//! [`anyhow::Result`]. It is its own crate, so an embedder of `pomona` never compiles it.

pub mod abm;
pub mod apns;
pub mod device;
pub mod enroll;
pub mod scep;
