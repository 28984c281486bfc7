//! Client certificates forwarded by a TLS-terminating reverse proxy.
//!
//! Accepted encodings of the header value:
//! - RFC 9440 `Client-Cert`: `:BASE64-DER:` (a structured-field byte sequence);
//! - nginx `$ssl_client_escaped_cert`: URL-escaped PEM;
//! - plain PEM, including PEM whose line breaks a proxy folded into spaces;
//! - bare base64 DER.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::x509::X509;

/// Errors decoding a forwarded client certificate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientCertError {
    /// The header is empty or a placeholder such as `(null)` or `-`.
    #[error("client certificate header is empty")]
    Empty,
    /// The value is not base64 (after unwrapping).
    #[error("client certificate is not valid base64")]
    Base64,
    /// URL-escaped PEM with a broken escape.
    #[error("client certificate has invalid URL escaping")]
    Escaping,
    /// PEM armour without a certificate inside.
    #[error("client certificate PEM has no CERTIFICATE block")]
    NoPemBlock,
    /// The bytes are not an X.509 certificate.
    #[error("client certificate is not a DER X.509 certificate: {0}")]
    NotCertificate(String),
}

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// Decode a forwarded client certificate header value.
pub fn decode_client_cert_header(value: &str) -> Result<X509, ClientCertError> {
    let der = decode_client_cert_der(value)?;
    X509::from_der(&der).map_err(|e| ClientCertError::NotCertificate(e.to_string()))
}

/// Decode a forwarded client certificate header value to DER bytes, without parsing them.
pub fn decode_client_cert_der(value: &str) -> Result<Vec<u8>, ClientCertError> {
    let v = value.trim();
    if v.is_empty() || v == "(null)" || v == "-" {
        return Err(ClientCertError::Empty);
    }
    let der = if let Some(inner) = v.strip_prefix(':').and_then(|s| s.strip_suffix(':')) {
        b64(inner)?
    } else if v.contains('%') {
        let pem = percent_encoding::percent_decode_str(v)
            .decode_utf8()
            .map_err(|_| ClientCertError::Escaping)?;
        pem_to_der(&pem)?
    } else if v.contains("-----BEGIN") {
        pem_to_der(v)?
    } else {
        b64(v)?
    };
    Ok(der)
}

fn b64(s: &str) -> Result<Vec<u8>, ClientCertError> {
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err(ClientCertError::Empty);
    }
    B64.decode(compact).map_err(|_| ClientCertError::Base64)
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, ClientCertError> {
    let start = pem.find(BEGIN).ok_or(ClientCertError::NoPemBlock)? + BEGIN.len();
    let end = pem[start..].find(END).ok_or(ClientCertError::NoPemBlock)? + start;
    b64(&pem[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &[u8] = include_bytes!("fixtures/device-cert.pem");

    fn der() -> Vec<u8> {
        X509::from_pem(CERT).unwrap().to_der().unwrap()
    }

    #[test]
    fn decodes_every_forwarding_format() {
        let pem = String::from_utf8(CERT.to_vec()).unwrap();
        let escaped: String =
            percent_encoding::utf8_percent_encode(&pem, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let folded = pem.replace('\n', " ");
        let rfc9440 = format!(":{}:", B64.encode(der()));
        let bare = B64.encode(der());
        for value in [&rfc9440, &escaped, &pem, &folded, &bare] {
            let cert = decode_client_cert_header(value).unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(cert.to_der().unwrap(), der());
        }
    }

    #[test]
    fn precise_errors() {
        assert_eq!(
            decode_client_cert_header(" ").unwrap_err(),
            ClientCertError::Empty
        );
        assert_eq!(
            decode_client_cert_header("(null)").unwrap_err(),
            ClientCertError::Empty
        );
        assert_eq!(
            decode_client_cert_header("::").unwrap_err(),
            ClientCertError::Empty
        );
        assert_eq!(
            decode_client_cert_header(":!!:").unwrap_err(),
            ClientCertError::Base64
        );
        assert_eq!(
            decode_client_cert_header("%E0%A4%A").unwrap_err(),
            ClientCertError::Escaping
        );
        assert_eq!(
            decode_client_cert_header("-----BEGIN CERTIFICATE----- AAAA").unwrap_err(),
            ClientCertError::NoPemBlock
        );
        assert!(matches!(
            decode_client_cert_header(":aGVsbG8=:").unwrap_err(),
            ClientCertError::NotCertificate(_)
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_values_never_panic(s in ".{0,300}") {
            let _ = decode_client_cert_header(&s);
        }
    }
}
