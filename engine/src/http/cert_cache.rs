//! Parsed device certificates, cached by the SHA-256 of their DER.
//!
//! OpenSSL 3 decodes a certificate's public key through its provider machinery, which costs
//! far more than the rest of a check-in (and contends on global locks). Devices present the
//! same certificate on every request, so each one is decoded once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use openssl::pkey::{PKey, Public};
use openssl::x509::X509;

use crate::store::CertHash;

/// Most certificates kept before the cache starts over.
const LIMIT: usize = 200_000;

/// A decoded certificate with its public key and hash.
pub(crate) struct ParsedCert {
    pub cert: X509,
    pub key: PKey<Public>,
    pub hash: CertHash,
}

/// The cache.
#[derive(Default)]
pub(crate) struct CertCache {
    map: RwLock<HashMap<CertHash, Arc<ParsedCert>>>,
}

impl CertCache {
    /// The decoded certificate for `der`, decoding it on first sight.
    pub fn get(&self, der: &[u8]) -> Result<Arc<ParsedCert>, String> {
        let hash = CertHash::of_der(der);
        if let Some(p) = self.map.read().expect("cert cache lock").get(&hash) {
            return Ok(p.clone());
        }
        let cert =
            X509::from_der(der).map_err(|e| format!("certificate cannot be decoded: {e}"))?;
        let key = cert
            .public_key()
            .map_err(|e| format!("certificate key cannot be decoded: {e}"))?;
        let parsed = Arc::new(ParsedCert { cert, key, hash });
        let mut map = self.map.write().expect("cert cache lock");
        if map.len() >= LIMIT {
            map.clear();
        }
        map.insert(hash, parsed.clone());
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_once_and_rejects_garbage() {
        let cache = CertCache::default();
        let der = X509::from_pem(include_bytes!("../wire/fixtures/device-cert.pem"))
            .unwrap()
            .to_der()
            .unwrap();
        let a = cache.get(&der).unwrap();
        let b = cache.get(&der).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.hash, CertHash::of_der(&der));
        assert!(cache.get(b"nope").is_err());
    }
}
