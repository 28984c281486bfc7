//! Fixed test material shared by the targets (included with `#[path]`; not a target itself).
#![allow(dead_code)]

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

/// A throwaway test CA (see `fuzz/make-keys.sh`).
pub const CA_CERT: &[u8] = include_bytes!("../keys/ca-cert.pem");
/// Its key.
pub const CA_KEY: &[u8] = include_bytes!("../keys/ca-key.pem");
/// A leaf the test CA issued.
pub const LEAF_CERT: &[u8] = include_bytes!("../keys/leaf-cert.pem");
/// The leaf's key.
pub const LEAF_KEY: &[u8] = include_bytes!("../keys/leaf-key.pem");

/// Parse a committed certificate.
pub fn cert(pem: &[u8]) -> X509 {
    X509::from_pem(pem).expect("committed test certificate")
}

/// Parse a committed key.
pub fn key(pem: &[u8]) -> PKey<Private> {
    PKey::private_key_from_pem(pem).expect("committed test key")
}

/// Split `data` into a mode byte and the rest (empty input: mode 0).
pub fn mode(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((m, rest)) => (*m, rest),
        None => (0, data),
    }
}
