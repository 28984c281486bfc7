//! APNs for MDM (`docs/protocol.md#apns`): push certificates, the push request and APNs replies.

use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use serde::{Deserialize, Serialize};

/// Apple's production APNs endpoint.
pub const PRODUCTION_URL: &str = "https://api.push.apple.com";
/// Apple's development APNs endpoint.
pub const SANDBOX_URL: &str = "https://api.sandbox.push.apple.com";

/// Errors reading a push certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushCertError {
    /// No certificate in the input.
    #[error("no PEM certificate found")]
    NoCertificate,
    /// No private key in the input.
    #[error("no unencrypted PEM private key found (send the certificate followed by its key)")]
    NoKey,
    /// The key does not belong to the certificate.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// The certificate has no UID attribute.
    #[error("the certificate has no UID (topic) in its subject")]
    NoTopic,
    /// The topic is not an MDM topic.
    #[error("topic {0:?} is not an MDM push topic (it must start with com.apple.mgmt)")]
    NotMdmTopic(String),
    /// PKCS#12 could not be read.
    #[error("cannot read PKCS#12: {0}")]
    Pkcs12(String),
    /// OpenSSL failed.
    #[error("push certificate: {0}")]
    Crypto(String),
}

/// An MDM push certificate with its key.
#[derive(Clone)]
pub struct PushCertificate {
    /// The certificate.
    pub cert: X509,
    /// Its private key.
    pub key: PKey<Private>,
    /// Intermediates that came with it.
    pub chain: Vec<X509>,
    /// The APNs topic (the subject's UID).
    pub topic: String,
    /// Expiry, as a Unix timestamp.
    pub not_after: i64,
}

impl std::fmt::Debug for PushCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushCertificate")
            .field("topic", &self.topic)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn crypto(e: openssl::error::ErrorStack) -> PushCertError {
    PushCertError::Crypto(e.to_string())
}

fn unix_of(t: &openssl::asn1::Asn1TimeRef) -> Result<i64, PushCertError> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).map_err(crypto)?;
    let d = epoch.diff(t).map_err(crypto)?;
    Ok(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

impl PushCertificate {
    /// Check and wrap a certificate and key.
    pub fn new(cert: X509, key: PKey<Private>, chain: Vec<X509>) -> Result<Self, PushCertError> {
        if !cert.public_key().map_err(crypto)?.public_eq(&key) {
            return Err(PushCertError::KeyMismatch);
        }
        let topic = cert
            .subject_name()
            .entries_by_nid(Nid::USERID)
            .next()
            .and_then(|e| e.data().to_string().ok())
            .ok_or(PushCertError::NoTopic)?;
        if !topic.starts_with("com.apple.mgmt") {
            return Err(PushCertError::NotMdmTopic(topic));
        }
        let not_after = unix_of(cert.not_after())?;
        Ok(Self {
            cert,
            key,
            chain,
            topic,
            not_after,
        })
    }

    /// Read a PEM certificate followed by its unencrypted PEM key (NanoMDM's `PUT /v1/pushcert`).
    pub fn from_pem(pem: &[u8]) -> Result<Self, PushCertError> {
        let mut certs = X509::stack_from_pem(pem).map_err(|_| PushCertError::NoCertificate)?;
        if certs.is_empty() {
            return Err(PushCertError::NoCertificate);
        }
        // An explicit (empty) passphrase: with none, OpenSSL asks for one on the controlling
        // terminal, which blocks the request when the server runs in one.
        let key = PKey::private_key_from_pem_callback(pem, |_| Ok(0))
            .map_err(|_| PushCertError::NoKey)?;
        let cert = certs.remove(0);
        Self::new(cert, key, certs)
    }

    /// Read PKCS#12 (including old RC2-40 files, through OpenSSL's legacy provider).
    pub fn from_pkcs12(der: &[u8], password: &str) -> Result<Self, PushCertError> {
        super::scep::load_legacy_provider();
        let parsed = Pkcs12::from_der(der)
            .and_then(|p| p.parse2(password))
            .map_err(|e| PushCertError::Pkcs12(e.to_string()))?;
        let cert = parsed.cert.ok_or(PushCertError::NoCertificate)?;
        let key = parsed.pkey.ok_or(PushCertError::NoKey)?;
        let chain = parsed
            .ca
            .map(|s| s.into_iter().collect())
            .unwrap_or_default();
        Self::new(cert, key, chain)
    }

    /// Certificate then key, PEM (how Pomona stores it, sealed).
    pub fn to_pem(&self) -> Result<Vec<u8>, PushCertError> {
        let mut out = self.cert.to_pem().map_err(crypto)?;
        for c in &self.chain {
            out.extend(c.to_pem().map_err(crypto)?);
        }
        out.extend(self.key.private_key_to_pem_pkcs8().map_err(crypto)?);
        Ok(out)
    }
}

/// Expiry state of a certificate or token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExpiryState {
    /// More than 30 days left.
    Valid,
    /// 30 days or less left.
    Expiring,
    /// Past its expiry.
    Expired,
}

impl ExpiryState {
    /// The state of something expiring at `not_after` (Unix seconds), seen at `now`.
    pub fn at(not_after: i64, now: i64) -> Self {
        if now >= not_after {
            Self::Expired
        } else if not_after - now <= 30 * 86_400 {
            Self::Expiring
        } else {
            Self::Valid
        }
    }
}

/// The body of an MDM push: exactly `{"mdm":"<PushMagic>"}`.
pub fn push_body(push_magic: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "mdm": push_magic })).expect("JSON serializes")
}

/// An APNs failure reason.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The token is malformed or for another environment.
    BadDeviceToken,
    /// The token is no longer active (410).
    Unregistered,
    /// The token belongs to another topic.
    DeviceTokenNotForTopic,
    /// Too many requests for this token (429).
    TooManyRequests,
    /// The provider credentials expired.
    ExpiredProviderToken,
    /// APNs failed internally (500).
    InternalServerError,
    /// APNs is unavailable (503).
    ServiceUnavailable,
    /// APNs is shutting down this connection.
    Shutdown,
    /// Another reason.
    Other(String),
}

impl Reason {
    /// Parse APNs' reason string.
    pub fn parse(s: &str) -> Self {
        match s {
            "BadDeviceToken" => Self::BadDeviceToken,
            "Unregistered" => Self::Unregistered,
            "DeviceTokenNotForTopic" => Self::DeviceTokenNotForTopic,
            "TooManyRequests" => Self::TooManyRequests,
            "ExpiredProviderToken" => Self::ExpiredProviderToken,
            "InternalServerError" => Self::InternalServerError,
            "ServiceUnavailable" => Self::ServiceUnavailable,
            "Shutdown" => Self::Shutdown,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The reason string.
    pub fn as_str(&self) -> &str {
        match self {
            Self::BadDeviceToken => "BadDeviceToken",
            Self::Unregistered => "Unregistered",
            Self::DeviceTokenNotForTopic => "DeviceTokenNotForTopic",
            Self::TooManyRequests => "TooManyRequests",
            Self::ExpiredProviderToken => "ExpiredProviderToken",
            Self::InternalServerError => "InternalServerError",
            Self::ServiceUnavailable => "ServiceUnavailable",
            Self::Shutdown => "Shutdown",
            Self::Other(s) => s,
        }
    }
}

/// What an APNs reply means for Pomona.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// Accepted; the `apns-id`.
    Delivered(String),
    /// The enrollment's token is unusable: mark it invalid, stop pushing.
    InvalidToken(Reason),
    /// Transient: retry later with backoff.
    Retry(Reason),
    /// Neither: report it, do not retry.
    Failed(Reason),
}

/// Classify an APNs reply from its status, `apns-id` header and body.
pub fn classify(status: u16, apns_id: Option<&str>, body: &[u8]) -> Disposition {
    if status == 200 {
        return Disposition::Delivered(apns_id.unwrap_or_default().to_owned());
    }
    let reason = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(Reason::parse))
        .unwrap_or_else(|| Reason::Other(format!("HTTP {status}")));
    match (&reason, status) {
        (Reason::BadDeviceToken | Reason::Unregistered | Reason::DeviceTokenNotForTopic, _) => {
            Disposition::InvalidToken(reason)
        }
        (_, 410) => Disposition::InvalidToken(reason),
        (
            Reason::TooManyRequests
            | Reason::InternalServerError
            | Reason::ServiceUnavailable
            | Reason::Shutdown,
            _,
        )
        | (_, 429 | 500..=599) => Disposition::Retry(reason),
        _ => Disposition::Failed(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encrypted_pem_key_is_refused_without_asking_for_a_passphrase() {
        // Found with the push_cert fuzz seed under a terminal: "Enter PEM pass phrase:" blocked.
        let pem = include_bytes!("fixtures/push-encrypted-key.pem");
        let e = PushCertificate::from_pem(pem).unwrap_err();
        assert!(matches!(e, PushCertError::NoKey), "{e}");
    }

    #[test]
    fn body_is_exact() {
        assert_eq!(push_body("abc\"d"), br#"{"mdm":"abc\"d"}"#);
    }

    #[test]
    fn classification_of_every_reason() {
        let r = |reason: &str| format!("{{\"reason\":\"{reason}\",\"timestamp\":1}}").into_bytes();
        assert_eq!(
            classify(200, Some("ID"), b""),
            Disposition::Delivered("ID".into())
        );
        for (status, reason) in [
            (400, "BadDeviceToken"),
            (410, "Unregistered"),
            (400, "DeviceTokenNotForTopic"),
        ] {
            assert!(
                matches!(classify(status, None, &r(reason)), Disposition::InvalidToken(x) if x.as_str() == reason)
            );
        }
        for (status, reason) in [
            (429, "TooManyRequests"),
            (500, "InternalServerError"),
            (503, "ServiceUnavailable"),
            (503, "Shutdown"),
        ] {
            assert!(
                matches!(classify(status, None, &r(reason)), Disposition::Retry(x) if x.as_str() == reason)
            );
        }
        assert!(matches!(
            classify(403, None, &r("ExpiredProviderToken")),
            Disposition::Failed(Reason::ExpiredProviderToken)
        ));
        assert!(matches!(
            classify(502, None, b"<html>"),
            Disposition::Retry(Reason::Other(_))
        ));
        assert!(matches!(
            classify(404, None, b""),
            Disposition::Failed(Reason::Other(_))
        ));
    }

    #[test]
    fn expiry_states() {
        let now = 1_000_000_000;
        assert_eq!(ExpiryState::at(now + 31 * 86_400, now), ExpiryState::Valid);
        assert_eq!(
            ExpiryState::at(now + 29 * 86_400, now),
            ExpiryState::Expiring
        );
        assert_eq!(ExpiryState::at(now - 1, now), ExpiryState::Expired);
    }
}
