//! # pomona-testkit
//!
//! Simulators for testing Pomona over real HTTP on loopback:
//!
//! - [`device::Device`]: a simulated Apple device that speaks the real wire format (XML plists,
//!   real CMS `Mdm-Signature`s from its own key, or a proxy-forwarded client certificate).
//! - [`server::TestServer`]: an in-process engine on an ephemeral port;
//!   [`server::ServeProcess`]: the real `pomona serve` binary as a child process.
//! - [`apns::FakeApns`]: a fake APNs (HTTP/2, mutual TLS) that records pushes and answers as
//!   scripted; [`apns::ApnsTestPki`] issues its certificates and push certificates.
//! - [`abm::FakeAbm`]: a fake Apple Business Manager with real OAuth1, cursors, paging and
//!   scripted faults.
//! - [`api::ApiClient`]: a small client for the admin API.
//! - [`scep`]: a SCEP client, as devices enroll.
//! - [`loadgen`]: many simulated devices checking in concurrently (`pomona-loadgen` binary).

pub mod api;
pub mod loadgen;
pub mod server;

// The simulators are their own crate (`pomona-sim`, also used by `pomona demo`).
pub use pomona_sim::{abm, apns, device, enroll, scep};
