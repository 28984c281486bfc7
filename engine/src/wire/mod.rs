//! Apple wire formats: pure functions, no I/O.
//!
//! Everything in this module parses or produces bytes that cross the wire between Pomona and Apple
//! devices or services. Nothing here touches storage, sockets or the clock, so every function is
//! exhaustively testable with fixtures.

pub mod apns;
pub mod bounded_plist;
pub mod checkin;
pub mod client_cert;
pub mod cms;
pub mod command;
pub mod config_profile;
pub mod dep;
pub mod der;
pub mod enrollment_id;
pub mod machine_info;
pub mod mobileconfig;
pub mod plist_json;
pub mod report;
pub mod scep;
pub mod setup;
