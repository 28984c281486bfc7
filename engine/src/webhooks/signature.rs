//! The `Pomona-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//!
//! The key is the subscription's secret exactly as shown to the admin (its UTF-8 bytes; a
//! generated secret's 64 hex characters are the key, not the bytes they encode). The signed
//! message is the decimal timestamp, a `.`, and the raw request body. A receiver recomputes the
//! HMAC over the body it received, compares it with `v1` in constant time, and rejects timestamps
//! outside its replay window (see [`verify`]).

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

/// Why a signature header was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The header is not `t=<digits>,v1=<hex>`.
    #[error("malformed Pomona-Signature header: expected t=<unix seconds>,v1=<hex>")]
    Malformed,
    /// The timestamp is further from now than the allowed tolerance (a replay, or a bad clock).
    #[error("signature timestamp {timestamp} is outside the replay window ({tolerance_secs} s)")]
    Stale {
        /// The header's timestamp.
        timestamp: i64,
        /// The allowed distance from now, in seconds.
        tolerance_secs: u64,
    },
    /// No `v1` value matches the body and secret.
    #[error("signature does not match the body and secret")]
    Mismatch,
}

/// HMAC-SHA256 of `"<timestamp>.<body>"` with `secret`.
pub fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> [u8; 32] {
    let key = PKey::hmac(secret).expect("OpenSSL accepts any HMAC key");
    let mut signer = Signer::new(MessageDigest::sha256(), &key).expect("HMAC-SHA256 is available");
    signer
        .update(timestamp.to_string().as_bytes())
        .and_then(|()| signer.update(b"."))
        .and_then(|()| signer.update(body))
        .expect("HMAC update cannot fail");
    let out = signer.sign_to_vec().expect("HMAC finalisation cannot fail");
    out.try_into().expect("SHA-256 MACs are 32 bytes")
}

/// The `Pomona-Signature` header value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac(secret, timestamp, body))
    )
}

/// Check a `Pomona-Signature` header: the timestamp must be within `tolerance_secs` of `now`
/// (unix seconds) and one of its `v1` values must be the HMAC of `"<t>.<body>"`. Unknown
/// fields are ignored, so future signature versions can be added alongside `v1`.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match k {
            "t" => {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(SignatureError::Malformed);
                }
                timestamp = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?);
            }
            "v1" => candidates.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.abs_diff(timestamp) > tolerance_secs {
        return Err(SignatureError::Stale {
            timestamp,
            tolerance_secs,
        });
    }
    let expected = mac(secret, timestamp, body);
    if candidates
        .iter()
        .any(|c| c.len() == expected.len() && openssl::memcmp::eq(c, &expected))
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec-test-0123456789abcdef";
    const BODY: &[u8] =
        br#"{"seq":42,"at":"2024-05-01T12:00:00Z","kind":"command.enqueued","data":{}}"#;

    /// Computed independently with
    /// `printf '%s' '1714564800.{"seq":42,"at":"2024-05-01T12:00:00Z","kind":"command.enqueued","data":{}}'
    /// | openssl dgst -sha256 -hmac 'whsec-test-0123456789abcdef'`.
    const EXPECTED: &str = "544e35c5b5cf9f747d93edb324a9eaa017286855a98e272cde44dcd620626c1d";

    #[test]
    fn matches_an_independently_computed_vector() {
        assert_eq!(
            sign(SECRET, 1_714_564_800, BODY),
            format!("t=1714564800,v1={EXPECTED}")
        );
    }

    #[test]
    fn verify_accepts_its_own_and_rejects_tampering_and_replays() {
        let t = 1_714_564_800;
        let header = sign(SECRET, t, BODY);
        assert_eq!(verify(SECRET, &header, BODY, t + 10, 300), Ok(()));
        assert_eq!(verify(SECRET, &header, BODY, t - 10, 300), Ok(()));
        assert_eq!(
            verify(SECRET, &header, b"{}", t, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"another-secret-0123456789", &header, BODY, t, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, &header, BODY, t + 301, 300),
            Err(SignatureError::Stale {
                timestamp: t,
                tolerance_secs: 300
            })
        );
        // A re-signed timestamp does not carry over the old MAC.
        let forged = header.replace("t=1714564800", "t=1714564900");
        assert_eq!(
            verify(SECRET, &forged, BODY, t + 100, 300),
            Err(SignatureError::Mismatch)
        );
        // Extra fields and several v1 values (secret rotation on the receiver side) are fine.
        let multi = format!("t={t},v0=zz,v1={},v1={}", "00".repeat(32), &header[16..]);
        assert_eq!(verify(SECRET, &multi, BODY, t, 300), Ok(()));
        for bad in [
            "",
            "t=1",
            "v1=00",
            "t=x,v1=00",
            "t=-5,v1=00",
            "t=1;v1=00",
            "t=1,v1=zz",
        ] {
            assert_eq!(
                verify(SECRET, bad, BODY, t, 300),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
    }
}
