//! Parsed device certificates, cached by the SHA-256 of their DER.
//!
//! OpenSSL 3 decodes a certificate's public key through its provider machinery, which costs
//! far more than the rest of a check-in (and contends on global locks). Devices present the
//! same certificate on every request, so each one is decoded once.
//!
//! Only certificates that proved themselves are cached: the caller decodes with
//! [`CertCache::decode`] (nothing is stored), verifies the request's signature and the chain to
//! the engine's CA, and only then calls [`CertCache::insert`]. Anonymous requests cannot grow
//! the cache or evict what is in it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use openssl::pkey::{PKey, Public};
use openssl::x509::X509;

use crate::store::CertHash;

/// Most certificates kept before the cache starts over (each entry is a few KiB).
pub(crate) const LIMIT: usize = 100_000;

/// Largest certificate accepted, DER bytes. Device identities are about 1 KiB.
pub(crate) const MAX_CERT_BYTES: usize = 16 << 10;

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
    /// The cached certificate with this DER, if it was verified before.
    pub fn cached(&self, der: &[u8]) -> Option<Arc<ParsedCert>> {
        let hash = CertHash::of_der(der);
        self.map
            .read()
            .expect("cert cache lock")
            .get(&hash)
            .cloned()
    }

    /// Decode `der` without caching it.
    pub fn decode(der: &[u8]) -> Result<ParsedCert, String> {
        if der.len() > MAX_CERT_BYTES {
            return Err(format!(
                "certificate is {} bytes, more than {MAX_CERT_BYTES}",
                der.len()
            ));
        }
        let cert =
            X509::from_der(der).map_err(|e| format!("certificate cannot be decoded: {e}"))?;
        let key = cert
            .public_key()
            .map_err(|e| format!("certificate key cannot be decoded: {e}"))?;
        Ok(ParsedCert {
            cert,
            key,
            hash: CertHash::of_der(der),
        })
    }

    /// Remember a certificate whose signature and chain were verified.
    pub fn insert(&self, parsed: ParsedCert) -> Arc<ParsedCert> {
        let parsed = Arc::new(parsed);
        let mut map = self.map.write().expect("cert cache lock");
        if map.len() >= LIMIT {
            map.clear();
        }
        map.insert(parsed.hash, parsed.clone());
        parsed
    }

    /// How many certificates are cached.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.read().expect("cert cache lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_without_caching_and_caches_on_insert() {
        let cache = CertCache::default();
        let der = X509::from_pem(include_bytes!("../wire/fixtures/device-cert.pem"))
            .unwrap()
            .to_der()
            .unwrap();
        let parsed = CertCache::decode(&der).unwrap();
        assert_eq!(parsed.hash, CertHash::of_der(&der));
        assert!(cache.cached(&der).is_none());
        assert_eq!(cache.len(), 0);
        let a = cache.insert(parsed);
        let b = cache.cached(&der).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(CertCache::decode(b"nope").is_err());
        assert!(CertCache::decode(&vec![0x30; MAX_CERT_BYTES + 1]).is_err());
    }
}
