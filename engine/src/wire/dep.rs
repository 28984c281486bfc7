//! Apple Business Manager / DEP wire formats (`docs/protocol.md#dep-and-apple-business-manager`):
//! OAuth 1.0a signing of `GET /session`, server-token decryption, and the JSON types of the
//! enrollment API.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, PKeyRef, Private};
use openssl::sign::Signer;
use openssl::x509::{X509, X509Ref};
use serde::{Deserialize, Serialize};

/// Apple's DEP API base URL.
pub const APPLE_BASE_URL: &str = "https://mdmenrollment.apple.com";

/// Errors reading DEP material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DepWireError {
    /// The `.p7m` could not be read or decrypted.
    #[error("server token: {0}")]
    Token(String),
    /// A body is not the JSON expected.
    #[error("DEP response is not valid JSON for {what}: {detail}")]
    Json {
        /// What was being read.
        what: &'static str,
        /// The parser's message.
        detail: String,
    },
}

/// OAuth credentials of a server token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthToken {
    /// `consumer_key`.
    pub consumer_key: String,
    /// `consumer_secret`.
    pub consumer_secret: String,
    /// `access_token`.
    pub access_token: String,
    /// `access_secret`.
    pub access_secret: String,
    /// `access_token_expiry`, e.g. `2025-05-01T12:00:00Z`.
    pub access_token_expiry: String,
}

impl std::fmt::Debug for OAuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthToken")
            .field("consumer_key", &self.consumer_key)
            .field("access_token_expiry", &self.access_token_expiry)
            .finish_non_exhaustive()
    }
}

/// RFC 3986 percent-encoding as OAuth requires (unreserved characters stay).
pub fn pct(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// The OAuth 1.0a `Authorization` header for `GET url` (HMAC-SHA1, `realm="ADM"`).
pub fn oauth_header(token: &OAuthToken, url: &str, nonce: &str, timestamp: u64) -> String {
    let ts = timestamp.to_string();
    let mut params = BTreeMap::new();
    params.insert("oauth_consumer_key", token.consumer_key.as_str());
    params.insert("oauth_nonce", nonce);
    params.insert("oauth_signature_method", "HMAC-SHA1");
    params.insert("oauth_timestamp", ts.as_str());
    params.insert("oauth_token", token.access_token.as_str());
    params.insert("oauth_version", "1.0");
    let signature = oauth_signature(token, "GET", url, &params);
    let mut header = String::from("OAuth realm=\"ADM\"");
    for (k, v) in params
        .iter()
        .map(|(k, v)| (*k, (*v).to_owned()))
        .chain([("oauth_signature", signature)])
    {
        header.push_str(&format!(", {k}=\"{}\"", pct(&v)));
    }
    header
}

/// The HMAC-SHA1 signature over the OAuth base string.
pub fn oauth_signature(
    token: &OAuthToken,
    method: &str,
    url: &str,
    params: &BTreeMap<&str, &str>,
) -> String {
    let normalized: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect();
    let base = format!("{method}&{}&{}", pct(url), pct(&normalized.join("&")));
    let key = format!(
        "{}&{}",
        pct(&token.consumer_secret),
        pct(&token.access_secret)
    );
    let key = PKey::hmac(key.as_bytes()).expect("HMAC keys of any length are valid");
    let mut signer = Signer::new(MessageDigest::sha1(), &key).expect("HMAC-SHA1 is available");
    B64.encode(
        signer
            .sign_oneshot_to_vec(base.as_bytes())
            .expect("HMAC never fails"),
    )
}

/// Parse an OAuth `Authorization` header into its parameters (for the fake ABM and tests).
pub fn parse_oauth_header(header: &str) -> BTreeMap<String, String> {
    let rest = header.trim().strip_prefix("OAuth").unwrap_or(header);
    rest.split(',')
        .filter_map(|part| {
            let (k, v) = part.trim().split_once('=')?;
            let v = v.trim().trim_matches('"');
            let v = percent_encoding::percent_decode_str(v).decode_utf8().ok()?;
            Some((k.trim().to_owned(), v.into_owned()))
        })
        .collect()
}

/// Decrypt a server token (`<name>_Token_<time>_smime.p7m`) with the server's key pair.
pub fn decrypt_token(
    p7m: &[u8],
    cert: &X509Ref,
    key: &PKeyRef<Private>,
) -> Result<OAuthToken, DepWireError> {
    let err = |m: String| DepWireError::Token(m);
    let der = smime_body(p7m).ok_or_else(|| {
        err("not an S/MIME message (headers, a blank line, then base64 PKCS#7)".into())
    })?;
    let p7 = Pkcs7::from_der(&der).map_err(|e| err(format!("not a PKCS#7 message: {e}")))?;
    let inner = p7
        .decrypt(key, cert, Pkcs7Flags::empty())
        .map_err(|e| err(format!("cannot decrypt with this server's key (a token for another server, or from an older key pair?): {e}")))?;
    let text = String::from_utf8_lossy(&inner);
    let start = text
        .find("-----BEGIN MESSAGE-----")
        .ok_or_else(|| err("decrypted content lacks -----BEGIN MESSAGE-----".into()))?
        + "-----BEGIN MESSAGE-----".len();
    let end = text[start..]
        .find("-----END MESSAGE-----")
        .ok_or_else(|| err("decrypted content lacks -----END MESSAGE-----".into()))?
        + start;
    serde_json::from_str(text[start..end].trim()).map_err(|e| err(format!("token JSON: {e}")))
}

/// The DER inside an S/MIME `.p7m`: the base64 body after the MIME headers' blank line.
///
/// Read here rather than with OpenSSL's S/MIME reader: that one puts header bytes in its error
/// queue, and the `openssl` crate panics collecting an error whose text is not UTF-8.
fn smime_body(p7m: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(p7m).ok()?;
    let body = ["\r\n\r\n", "\n\n"]
        .iter()
        .filter_map(|sep| text.find(sep).map(|i| i + sep.len()))
        .min()?;
    let b64: String = text[body..]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    B64.decode(b64).ok()
}

/// Make a token file as Apple does (for tests and the fake ABM): the JSON in a MIME part between
/// BEGIN/END MESSAGE markers, encrypted (AES-256) to `cert`, as S/MIME.
pub fn encrypt_token(token: &OAuthToken, cert: &X509) -> Result<Vec<u8>, DepWireError> {
    let json = serde_json::to_string(token).expect("token serializes");
    let inner = format!(
        "Content-Type: text/plain;charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n-----BEGIN MESSAGE-----\n{json}\n-----END MESSAGE-----\n"
    );
    let mut certs = openssl::stack::Stack::new().map_err(|e| DepWireError::Token(e.to_string()))?;
    certs
        .push(cert.clone())
        .map_err(|e| DepWireError::Token(e.to_string()))?;
    let p7 = Pkcs7::encrypt(
        &certs,
        inner.as_bytes(),
        openssl::symm::Cipher::aes_256_cbc(),
        Pkcs7Flags::BINARY,
    )
    .map_err(|e| DepWireError::Token(e.to_string()))?;
    p7.to_smime(inner.as_bytes(), Pkcs7Flags::BINARY)
        .map_err(|e| DepWireError::Token(e.to_string()))
}

/// A new RSA key and self-signed certificate for a DEP server (to upload to Apple).
pub fn new_server_keypair(name: &str) -> Result<(X509, PKey<Private>), DepWireError> {
    let e = |e: openssl::error::ErrorStack| DepWireError::Token(e.to_string());
    let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).map_err(e)?).map_err(e)?;
    let mut n = openssl::x509::X509Name::builder().map_err(e)?;
    n.append_entry_by_text("CN", &format!("Pomona DEP {name}"))
        .map_err(e)?;
    let n = n.build();
    let mut b = X509::builder().map_err(e)?;
    b.set_version(2).map_err(e)?;
    let serial = openssl::bn::BigNum::from_u32(1)
        .and_then(|b| b.to_asn1_integer())
        .map_err(e)?;
    b.set_serial_number(&serial).map_err(e)?;
    b.set_subject_name(&n).map_err(e)?;
    b.set_issuer_name(&n).map_err(e)?;
    b.set_pubkey(&key).map_err(e)?;
    let nb = openssl::asn1::Asn1Time::days_from_now(0).map_err(e)?;
    let na = openssl::asn1::Asn1Time::days_from_now(3650).map_err(e)?;
    b.set_not_before(&nb).map_err(e)?;
    b.set_not_after(&na).map_err(e)?;
    b.sign(&key, MessageDigest::sha256()).map_err(e)?;
    Ok((b.build(), key))
}

/// A device as DEP reports it. Unknown enum values are kept as strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// `serial_number`.
    pub serial_number: String,
    /// `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `description`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `color` (may be absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// `asset_tag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_tag: Option<String>,
    /// `device_family`: Mac, iPhone, iPad, iPod, AppleTV, Vision, ….
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    /// `os`: OSX, iOS, iPadOS, tvOS, visionOS, ….
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// `profile_status`: empty, assigned, pushed, removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_status: Option<String>,
    /// `profile_uuid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_uuid: Option<String>,
    /// `profile_assign_time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_assign_time: Option<String>,
    /// `device_assigned_by`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_assigned_by: Option<String>,
    /// `device_assigned_date`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_assigned_date: Option<String>,
    /// `op_type` (sync only): added, modified, deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_type: Option<String>,
    /// `op_date` (sync only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_date: Option<String>,
}

/// Body of `POST /server/devices` and `POST /devices/sync`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorRequest {
    /// The cursor (absent for the first fetch page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Page size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Answer of fetch and sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicePage {
    /// The next cursor.
    pub cursor: String,
    /// Devices (may repeat a serial).
    #[serde(default)]
    pub devices: Vec<Device>,
    /// `fetched_until`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_until: Option<String>,
    /// More pages follow.
    #[serde(default)]
    pub more_to_follow: bool,
}

/// A DEP enrollment profile. Optional booleans stay `None` unless set, so Apple's defaults hold
/// (notably `is_mdm_removable`, whose default is `true`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// `profile_name` (required, ≤ 125 characters).
    pub profile_name: String,
    /// Enrollment URL (MachineInfo POST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Web-view enrollment URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_web_url: Option<String>,
    /// `is_supervised`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_supervised: Option<bool>,
    /// `is_mandatory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_mandatory: Option<bool>,
    /// `is_mdm_removable` (Apple's default: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_mdm_removable: Option<bool>,
    /// `is_multi_user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_multi_user: Option<bool>,
    /// `await_device_configured`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub await_device_configured: Option<bool>,
    /// `auto_advance_setup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_advance_setup: Option<bool>,
    /// `allow_pairing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_pairing: Option<bool>,
    /// `skip_setup_items`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_setup_items: Option<Vec<String>>,
    /// `department`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// `org_magic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_magic: Option<String>,
    /// `language`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `support_phone_number`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_phone_number: Option<String>,
    /// `support_email_address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_email_address: Option<String>,
    /// `anchor_certs` (base64 DER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor_certs: Option<Vec<String>>,
    /// `supervising_host_certs` (base64 DER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervising_host_certs: Option<Vec<String>>,
    /// `devices` to assign at definition time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<String>>,
    /// Any keys Pomona does not model yet, passed through.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// Answer of `POST /profile`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefineProfileResponse {
    /// The new profile's UUID.
    pub profile_uuid: String,
    /// Per-device status of `devices` in the request.
    #[serde(default)]
    pub devices: BTreeMap<String, String>,
}

/// Body of `POST /profile/devices`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignRequest {
    /// The profile.
    pub profile_uuid: String,
    /// At most 1000 serials.
    pub devices: Vec<String>,
}

/// Answer of `POST /profile/devices`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignResponse {
    /// The profile.
    #[serde(default)]
    pub profile_uuid: String,
    /// SUCCESS, NOT_ACCESSIBLE, FAILED or THROTTLED per serial.
    #[serde(default)]
    pub devices: BTreeMap<String, String>,
    /// Seconds to wait before retrying throttled devices (protocol v10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

/// The subset of `GET /account` Pomona uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// `server_name`.
    #[serde(default)]
    pub server_name: String,
    /// `server_uuid`.
    #[serde(default)]
    pub server_uuid: String,
    /// `org_name`.
    #[serde(default)]
    pub org_name: String,
    /// `urls` with page limits.
    #[serde(default)]
    pub urls: Vec<AccountUrl>,
}

/// One endpoint entry of `GET /account`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountUrl {
    /// Path, e.g. `/server/devices`.
    #[serde(default)]
    pub uri: String,
    /// Page limits.
    #[serde(default)]
    pub limit: Option<Limit>,
}

/// Page limits of an endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// Default page size.
    #[serde(default)]
    pub default: u32,
    /// Largest page size.
    #[serde(default)]
    pub maximum: u32,
}

/// Whether an error body names `code` (bare, quoted or in JSON: matched by substring).
pub fn error_is(body: &[u8], code: &str) -> bool {
    String::from_utf8_lossy(body).contains(code)
}

/// Parse a JSON answer, naming what it should be.
pub fn parse<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &'static str,
) -> Result<T, DepWireError> {
    serde_json::from_slice(body).map_err(|e| DepWireError::Json {
        what,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> OAuthToken {
        OAuthToken {
            consumer_key: "CK_test".into(),
            consumer_secret: "CS_test".into(),
            access_token: "AT_test".into(),
            access_secret: "AS_test".into(),
            access_token_expiry: "2030-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_token_with_non_utf8_mime_headers_is_refused_not_a_panic() {
        // Found by the dep_token fuzz target: OpenSSL's S/MIME reader panicked the openssl crate.
        let (cert, key) = new_server_keypair("s").unwrap();
        let p7m = include_bytes!("fixtures/token-non-utf8-header.p7m");
        let e = decrypt_token(p7m, &cert, &key).unwrap_err();
        assert!(e.to_string().contains("not an S/MIME message"), "{e}");
    }

    #[test]
    fn oauth_matches_the_reference_vector() {
        let h = oauth_header(
            &token(),
            "https://mdmenrollment.apple.com/session",
            "abc123",
            1_700_000_000,
        );
        let params = parse_oauth_header(&h);
        assert_eq!(params["oauth_signature"], "U3/4pSzzE3SgMbm6snkJVi8lxxU=");
        assert_eq!(params["realm"], "ADM");
        assert_eq!(params["oauth_consumer_key"], "CK_test");
        assert!(h.starts_with("OAuth realm=\"ADM\", "));
    }

    #[test]
    fn token_round_trip_and_wrong_key() {
        let (cert, key) = new_server_keypair("a").unwrap();
        let p7m = encrypt_token(&token(), &cert).unwrap();
        assert!(String::from_utf8_lossy(&p7m).contains("MIME-Version"));
        assert_eq!(decrypt_token(&p7m, &cert, &key).unwrap(), token());
        let (other_cert, other_key) = new_server_keypair("b").unwrap();
        let err = decrypt_token(&p7m, &other_cert, &other_key)
            .unwrap_err()
            .to_string();
        assert!(err.contains("another server"), "{err}");
        assert!(decrypt_token(b"garbage", &cert, &key).is_err());
    }

    #[test]
    fn openssl_cli_made_tokens_decrypt() {
        // `openssl smime -encrypt -aes256 -binary` over a formatted message
        // (`docs/protocol.md#server-token`).
        if std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_err()
        {
            eprintln!("openssl CLI not installed; skipping");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = new_server_keypair("cli").unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.to_pem().unwrap()).unwrap();
        let json = serde_json::to_string(&token()).unwrap();
        std::fs::write(
            dir.path().join("msg"),
            format!("Content-Type: text/plain\r\n\r\n-----BEGIN MESSAGE-----\n{json}\n-----END MESSAGE-----\n"),
        )
        .unwrap();
        let out = std::process::Command::new("openssl")
            .args([
                "smime",
                "-encrypt",
                "-aes256",
                "-binary",
                "-in",
                "msg",
                "-out",
                "token.p7m",
                "cert.pem",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let p7m = std::fs::read(dir.path().join("token.p7m")).unwrap();
        assert_eq!(decrypt_token(&p7m, &cert, &key).unwrap(), token());
    }

    #[test]
    fn profiles_never_serialize_an_accidental_false() {
        let p: Profile = serde_json::from_str(r#"{"profile_name":"P","x_future_key":1}"#).unwrap();
        let json = serde_json::to_value(&p).unwrap();
        assert!(json.get("is_mdm_removable").is_none());
        assert_eq!(json["x_future_key"], 1, "unknown keys pass through");
    }

    #[test]
    fn error_codes_match_by_substring() {
        for body in [
            &b"EXPIRED_CURSOR"[..],
            b"\"EXPIRED_CURSOR\"",
            br#"{"code":"EXPIRED_CURSOR"}"#,
        ] {
            assert!(error_is(body, "EXPIRED_CURSOR"));
        }
        assert!(!error_is(b"INVALID_CURSOR", "EXPIRED_CURSOR"));
    }

    #[test]
    fn devices_tolerate_unknown_and_missing_fields() {
        let d: Device = serde_json::from_str(
            r#"{"serial_number":"S","device_family":"Vision","new_field":true}"#,
        )
        .unwrap();
        assert_eq!(d.device_family.as_deref(), Some("Vision"));
        assert_eq!(d.color, None);
    }
}
