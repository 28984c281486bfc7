//! Detached CMS (PKCS#7) signatures: Apple's `Mdm-Signature` header.
//!
//! A device signs the exact HTTP body with its identity key and sends the detached SignedData,
//! base64-encoded, in `Mdm-Signature`. Two encodings occur in practice and both are accepted:
//!
//! - **Real devices**: indefinite-length BER (`30 80 …`), SHA-1, and *no* signed attributes (the
//!   RSA signature covers the body digest directly).
//! - **OpenSSL and simulators**: DER, SHA-256, with signed attributes (`contentType`,
//!   `signingTime`, `messageDigest`).
//!
//! Verification here is cryptographic only; the caller verifies the signer's chain.

use std::ffi::c_int;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use foreign_types::{ForeignType, ForeignTypeRef};
use openssl::hash::{MessageDigest, hash};
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKeyRef, Private, Public};
use openssl::sign::Verifier;
use openssl::stack::Stack;
use openssl::x509::{X509, X509Ref};

use super::der::{self, Tlv};

/// Errors verifying or producing a detached CMS signature.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CmsError {
    /// The header value is not base64.
    #[error("signature is not valid base64")]
    Base64,
    /// The bytes are not a PKCS#7 / CMS structure.
    #[error("signature is not a CMS SignedData structure: {0}")]
    Malformed(String),
    /// The SignedData names no signer certificate it contains.
    #[error("signature carries no signer certificate")]
    NoSigner,
    /// More than one signer.
    #[error("signature has {0} signers; exactly one is expected")]
    MultipleSigners(usize),
    /// The signature does not match the content.
    #[error("signature does not match the body: {0}")]
    BadSignature(String),
    /// Producing a signature failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

/// How [`sign_detached`] encodes a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureStyle {
    /// DER, SHA-256, with signed attributes (OpenSSL/simulator style).
    DerWithAttributes,
    /// Indefinite-length BER, SHA-1, no signed attributes (real-device style).
    BerNoAttributes,
}

/// Decode the `Mdm-Signature` header value (base64; whitespace and line breaks are ignored).
pub fn decode_signature_header(value: &str) -> Result<Vec<u8>, CmsError> {
    let compact: String = value.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    B64.decode(compact).map_err(|_| CmsError::Base64)
}

/// A parsed detached SignedData with exactly one signer, ready to verify against its key.
///
/// Parsing is pure DER/BER walking (no certificate or key decoding), so a caller can look the
/// signer certificate up in a cache before paying for OpenSSL's decoders.
#[derive(Clone)]
pub struct DetachedSignature<'a> {
    /// DER of the signer's certificate, as carried in the signature.
    pub signer_cert_der: &'a [u8],
    digest: MessageDigest,
    signed_attributes: Option<Vec<u8>>,
    message_digest: Option<&'a [u8]>,
    signature: &'a [u8],
}

impl std::fmt::Debug for DetachedSignature<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetachedSignature")
            .field("signer_cert_der_len", &self.signer_cert_der.len())
            .field("signed_attributes", &self.signed_attributes.is_some())
            .finish_non_exhaustive()
    }
}

const OID_SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
const OID_MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";

fn malformed(what: &str) -> CmsError {
    CmsError::Malformed(what.to_owned())
}

fn digest_for(oid: &[u8]) -> Result<MessageDigest, CmsError> {
    let table = [
        ("1.3.14.3.2.26", MessageDigest::sha1()),
        ("2.16.840.1.101.3.4.2.4", MessageDigest::sha224()),
        ("2.16.840.1.101.3.4.2.1", MessageDigest::sha256()),
        ("2.16.840.1.101.3.4.2.2", MessageDigest::sha384()),
        ("2.16.840.1.101.3.4.2.3", MessageDigest::sha512()),
    ];
    table
        .iter()
        .find(|(dotted, _)| der::oid(dotted) == oid)
        .map(|(_, md)| *md)
        .ok_or_else(|| {
            CmsError::Malformed(format!("unsupported digest algorithm {}", hex::encode(oid)))
        })
}

/// (issuer Name, serial INTEGER) encodings of a certificate, for matching a SignerInfo.
fn issuer_and_serial(cert: &[u8]) -> Option<(&[u8], &[u8])> {
    let (c, _) = Tlv::read(cert).ok()?;
    let tbs = c.children().ok()?.into_iter().next()?;
    let fields = tbs.children().ok()?;
    let skip = usize::from(fields.first()?.tag == 0xa0);
    Some((fields.get(skip + 2)?.raw, fields.get(skip)?.raw))
}

impl<'a> DetachedSignature<'a> {
    /// Parse a detached SignedData (DER or indefinite-length BER).
    pub fn parse(signature: &'a [u8]) -> Result<Self, CmsError> {
        let (ci, _) = Tlv::read(signature).map_err(|e| CmsError::Malformed(e.to_string()))?;
        let ci = ci
            .children()
            .map_err(|e| CmsError::Malformed(e.to_string()))?;
        match ci.first() {
            Some(t) if t.raw == der::oid(OID_SIGNED_DATA).as_slice() => {}
            _ => return Err(malformed("not a SignedData")),
        }
        let wrapper = ci
            .get(1)
            .filter(|t| t.tag == 0xa0)
            .ok_or_else(|| malformed("SignedData content missing"))?;
        let (sd, _) = Tlv::read(wrapper.value).map_err(|e| CmsError::Malformed(e.to_string()))?;
        let sd = sd
            .children()
            .map_err(|e| CmsError::Malformed(e.to_string()))?;
        // Any encapsulated content is ignored: the signature is checked against the HTTP body
        // (OpenSSL's streaming output even carries an empty one in detached signatures).
        let certs = sd
            .iter()
            .find(|t| t.tag == 0xa0)
            .ok_or(CmsError::NoSigner)?;
        let certs = certs
            .children()
            .map_err(|e| CmsError::Malformed(e.to_string()))?;
        let infos = sd
            .last()
            .filter(|t| t.tag == der::SET)
            .ok_or_else(|| malformed("no signerInfos"))?;
        let infos = infos
            .children()
            .map_err(|e| CmsError::Malformed(e.to_string()))?;
        let info = match infos.len() {
            0 => return Err(CmsError::NoSigner),
            1 => &infos[0],
            n => return Err(CmsError::MultipleSigners(n)),
        };
        let f = info
            .children()
            .map_err(|e| CmsError::Malformed(e.to_string()))?;
        let sid = f
            .get(1)
            .ok_or_else(|| malformed("SignerInfo without signer identifier"))?;
        let signer_cert_der = if certs.len() == 1 {
            certs[0].raw
        } else {
            let sid_parts = sid
                .children()
                .map_err(|e| CmsError::Malformed(e.to_string()))?;
            let (issuer, serial) = match (sid_parts.first(), sid_parts.get(1)) {
                (Some(i), Some(s)) if sid.tag == der::SEQUENCE => (i.raw, s.raw),
                _ => return Err(CmsError::NoSigner),
            };
            certs
                .iter()
                .find(|c| issuer_and_serial(c.raw) == Some((issuer, serial)))
                .ok_or(CmsError::NoSigner)?
                .raw
        };
        let digest_alg = f
            .get(2)
            .ok_or_else(|| malformed("SignerInfo without digest algorithm"))?;
        let digest_oid = digest_alg
            .children()
            .ok()
            .and_then(|c| c.into_iter().next())
            .ok_or_else(|| malformed("empty digest algorithm"))?;
        let digest = digest_for(digest_oid.raw)?;
        let (signed_attributes, message_digest, rest) = match f.get(3) {
            Some(attrs) if attrs.tag == 0xa0 => {
                let children = attrs
                    .children()
                    .map_err(|e| CmsError::Malformed(e.to_string()))?;
                let mut md = None;
                for a in &children {
                    let parts = a
                        .children()
                        .map_err(|e| CmsError::Malformed(e.to_string()))?;
                    if parts.first().map(|o| o.raw) == Some(der::oid(OID_MESSAGE_DIGEST).as_slice())
                    {
                        md = parts
                            .get(1)
                            .and_then(|set| set.children().ok())
                            .and_then(|v| v.into_iter().next())
                            .map(|v| v.value);
                    }
                }
                let encoded: Vec<u8> = children
                    .iter()
                    .flat_map(|c| c.raw.iter().copied())
                    .collect();
                (Some(der::tlv(der::SET, &encoded)), md, &f[4..])
            }
            _ => (None, None, &f[3..]),
        };
        let signature = rest
            .get(1)
            .filter(|t| t.tag == der::OCTET_STRING)
            .ok_or_else(|| malformed("SignerInfo without signature"))?
            .value;
        if signed_attributes.is_some() && message_digest.is_none() {
            return Err(malformed("signed attributes lack messageDigest"));
        }
        Ok(Self {
            signer_cert_der,
            digest,
            signed_attributes,
            message_digest,
            signature,
        })
    }

    /// Verify the signature over `content` with the signer's public key.
    pub fn verify(&self, content: &[u8], key: &PKeyRef<Public>) -> Result<(), CmsError> {
        let bad = |m: &str| CmsError::BadSignature(m.to_owned());
        let mut verifier = Verifier::new(self.digest, key).map_err(|e| bad(&e.to_string()))?;
        match (&self.signed_attributes, self.message_digest) {
            (Some(attrs), Some(expected)) => {
                let actual = hash(self.digest, content).map_err(|e| bad(&e.to_string()))?;
                if actual.as_ref() != expected {
                    return Err(bad("messageDigest does not match the body"));
                }
                verifier.update(attrs).map_err(|e| bad(&e.to_string()))?;
            }
            _ => verifier.update(content).map_err(|e| bad(&e.to_string()))?,
        }
        match verifier.verify(self.signature) {
            Ok(true) => Ok(()),
            _ => Err(bad("the signature value does not verify")),
        }
    }
}

/// Verify a detached signature (DER or BER) over `content`; return the signer's certificate.
pub fn verify_detached(signature: &[u8], content: &[u8]) -> Result<X509, CmsError> {
    let parsed = DetachedSignature::parse(signature)?;
    let cert = X509::from_der(parsed.signer_cert_der)
        .map_err(|e| CmsError::Malformed(format!("signer certificate: {}", first_reason(&e))))?;
    let key = cert
        .public_key()
        .map_err(|e| CmsError::Malformed(format!("signer key: {}", first_reason(&e))))?;
    parsed.verify(content, &key)?;
    Ok(cert)
}

fn first_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|e| e.reason().map(str::to_owned))
        .unwrap_or_else(|| e.to_string())
}

unsafe extern "C" {
    // Declared here because openssl-sys does not expose them.
    fn PKCS7_sign_add_signer(
        p7: *mut openssl_sys::PKCS7,
        signcert: *mut openssl_sys::X509,
        pkey: *mut openssl_sys::EVP_PKEY,
        md: *const openssl_sys::EVP_MD,
        flags: c_int,
    ) -> *mut openssl_sys::PKCS7_SIGNER_INFO;
    fn PKCS7_final(p7: *mut openssl_sys::PKCS7, data: *mut openssl_sys::BIO, flags: c_int)
    -> c_int;
}

/// Produce a detached signature over `content` with `cert`/`key` in the given style.
pub fn sign_detached(
    content: &[u8],
    cert: &X509Ref,
    key: &PKeyRef<Private>,
    style: SignatureStyle,
) -> Result<Vec<u8>, CmsError> {
    let err = |e: openssl::error::ErrorStack| CmsError::Sign(e.to_string());
    match style {
        SignatureStyle::DerWithAttributes => {
            let none = Stack::new().map_err(err)?;
            let flags = Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY | Pkcs7Flags::NOSMIMECAP;
            Pkcs7::sign(cert, key, &none, content, flags)
                .and_then(|p7| p7.to_der())
                .map_err(err)
        }
        SignatureStyle::BerNoAttributes => {
            let flags = Pkcs7Flags::DETACHED
                | Pkcs7Flags::BINARY
                | Pkcs7Flags::NOATTR
                | Pkcs7Flags::PARTIAL;
            let der = unsafe { sign_sha1_no_attributes(content, cert, key, flags.bits()) }?;
            Ok(to_indefinite_length(&der))
        }
    }
}

/// SHA-1 signer without signed attributes, which the safe `Pkcs7::sign` cannot express.
///
/// # Safety
/// The pointers come from live safe wrappers; ownership of the new PKCS7 is taken by `Pkcs7`.
unsafe fn sign_sha1_no_attributes(
    content: &[u8],
    cert: &X509Ref,
    key: &PKeyRef<Private>,
    flags: c_int,
) -> Result<Vec<u8>, CmsError> {
    let fail = || CmsError::Sign(openssl::error::ErrorStack::get().to_string());
    unsafe {
        let raw = openssl_sys::PKCS7_sign(
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            flags,
        );
        if raw.is_null() {
            return Err(fail());
        }
        let p7 = Pkcs7::from_ptr(raw);
        if PKCS7_sign_add_signer(
            p7.as_ptr(),
            cert.as_ptr(),
            key.as_ptr(),
            openssl_sys::EVP_sha1(),
            flags,
        )
        .is_null()
        {
            return Err(fail());
        }
        let len = c_int::try_from(content.len())
            .map_err(|_| CmsError::Sign("content too large".into()))?;
        let bio = openssl_sys::BIO_new_mem_buf(content.as_ptr().cast(), len);
        if bio.is_null() {
            return Err(fail());
        }
        let ok = PKCS7_final(p7.as_ptr(), bio, flags);
        openssl_sys::BIO_free_all(bio);
        if ok != 1 {
            return Err(fail());
        }
        p7.to_der().map_err(|e| CmsError::Sign(e.to_string()))
    }
}

/// Re-encode a DER SignedData the way devices send it: the ContentInfo, its `[0]` wrapper, the
/// SignedData and its encapsulated-content SEQUENCE in indefinite-length form; certificates and
/// signer infos stay DER (their signatures cover their exact encoding). Input that is not
/// well-formed DER is returned unchanged.
pub fn to_indefinite_length(der: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(der.len() + 64);
    match reencode(der, 0, &mut out) {
        Some(()) => out,
        None => der.to_vec(),
    }
}

/// Whether a constructed element at `depth` is re-encoded with indefinite length.
fn indefinite_at(depth: usize, tag: u8) -> bool {
    depth < 3 || (depth == 3 && tag == 0x30)
}

fn reencode(mut input: &[u8], depth: usize, out: &mut Vec<u8>) -> Option<()> {
    while !input.is_empty() {
        let tag = input[0];
        if tag & 0x1f == 0x1f {
            return None; // high tag numbers do not occur in CMS
        }
        let (len, header) = read_length(&input[1..])?;
        let start = 1 + header;
        let body = input.get(start..start + len)?;
        if tag & 0x20 != 0 && indefinite_at(depth, tag) {
            out.push(tag);
            out.push(0x80);
            reencode(body, depth + 1, out)?;
            out.extend_from_slice(&[0, 0]);
        } else {
            out.extend_from_slice(&input[..start + len]);
        }
        input = &input[start + len..];
    }
    Some(())
}

/// A DER definite length: (length, bytes used by the length field).
fn read_length(input: &[u8]) -> Option<(usize, usize)> {
    let first = *input.first()?;
    if first < 0x80 {
        return Some((first as usize, 1));
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for b in input.get(1..=n)? {
        len = (len << 8) | *b as usize;
    }
    Some((len, 1 + n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::PKey;

    const CERT: &[u8] = include_bytes!("fixtures/device-cert.pem");
    const KEY: &[u8] = include_bytes!("fixtures/device-key.pem");
    const BODY: &[u8] = include_bytes!("fixtures/checkin-body.plist");
    const SIG_BER: &[u8] = include_bytes!("fixtures/sig-ber-sha1-noattr.der");
    const SIG_DER: &[u8] = include_bytes!("fixtures/sig-der-sha256-attrs.der");

    fn identity() -> (X509, PKey<Private>) {
        (
            X509::from_pem(CERT).unwrap(),
            PKey::private_key_from_pem(KEY).unwrap(),
        )
    }

    #[test]
    fn fixtures_have_the_shapes_they_claim() {
        assert_eq!(
            &SIG_BER[..2],
            &[0x30, 0x80],
            "real-device fixture is indefinite-length BER"
        );
        assert_ne!(SIG_DER[1], 0x80, "OpenSSL fixture is DER");
    }

    #[test]
    fn verifies_real_device_and_openssl_signatures() {
        let (cert, _) = identity();
        for sig in [SIG_BER, SIG_DER] {
            let signer = verify_detached(sig, BODY).unwrap();
            assert_eq!(signer.to_der().unwrap(), cert.to_der().unwrap());
        }
    }

    #[test]
    fn rejects_tampered_bodies_and_signatures() {
        let mut body = BODY.to_vec();
        body[10] ^= 1;
        for sig in [SIG_BER, SIG_DER] {
            assert!(matches!(
                verify_detached(sig, &body),
                Err(CmsError::BadSignature(_))
            ));
        }
        let mut sig = SIG_DER.to_vec();
        let n = sig.len();
        sig[n - 10] ^= 0xff; // inside the RSA signature value
        assert!(verify_detached(&sig, BODY).is_err());
        for junk in [
            &b""[..],
            b"\x30\x80",
            &SIG_DER[..SIG_DER.len() / 2],
            b"hello",
        ] {
            assert!(verify_detached(junk, BODY).is_err());
        }
    }

    #[test]
    fn sign_round_trips_in_both_styles() {
        let (cert, key) = identity();
        let ber = sign_detached(b"hello", &cert, &key, SignatureStyle::BerNoAttributes).unwrap();
        assert_eq!(&ber[..2], &[0x30, 0x80]);
        let der = sign_detached(b"hello", &cert, &key, SignatureStyle::DerWithAttributes).unwrap();
        for sig in [&ber, &der] {
            verify_detached(sig, b"hello").unwrap();
            assert!(verify_detached(sig, b"hellO").is_err());
        }
        // No signed attributes in the real-device style: the signingTime OID is absent.
        let signing_time_oid = [
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x05,
        ];
        assert!(!ber.windows(11).any(|w| w == signing_time_oid));
        assert!(der.windows(11).any(|w| w == signing_time_oid));
    }

    #[test]
    fn openssl_cli_accepts_our_real_device_style() {
        if std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_err()
        {
            eprintln!("openssl CLI not installed; skipping");
            return;
        }
        let (cert, key) = identity();
        let dir = tempfile::tempdir().unwrap();
        let sig = sign_detached(BODY, &cert, &key, SignatureStyle::BerNoAttributes).unwrap();
        std::fs::write(dir.path().join("sig"), sig).unwrap();
        std::fs::write(dir.path().join("body"), BODY).unwrap();
        let out = std::process::Command::new("openssl")
            .args([
                "cms",
                "-verify",
                "-noverify",
                "-binary",
                "-inform",
                "DER",
                "-in",
                "sig",
                "-content",
                "body",
                "-out",
                "/dev/null",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn header_decoding_tolerates_line_breaks() {
        let encoded = B64.encode(SIG_DER);
        let folded: String = encoded
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n ");
        assert_eq!(decode_signature_header(&folded).unwrap(), SIG_DER);
        assert!(matches!(
            decode_signature_header("%%%"),
            Err(CmsError::Base64)
        ));
    }

    #[test]
    fn indefinite_length_conversion() {
        // SEQUENCE { INTEGER 1, SEQUENCE { } }: both levels are structural.
        let der = [0x30, 0x05, 0x02, 0x01, 0x01, 0x30, 0x00];
        assert_eq!(
            to_indefinite_length(&der),
            [
                0x30, 0x80, 0x02, 0x01, 0x01, 0x30, 0x80, 0x00, 0x00, 0x00, 0x00
            ]
        );
        // Five levels deep: the innermost stays definite (it would be a certificate).
        let deep = [0x30, 0x08, 0xa0, 0x06, 0x30, 0x04, 0x31, 0x02, 0x30, 0x00];
        assert_eq!(
            to_indefinite_length(&deep),
            [
                0x30, 0x80, 0xa0, 0x80, 0x30, 0x80, 0x31, 0x02, 0x30, 0x00, 0, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(
            to_indefinite_length(&[0x30, 0x05, 0x02]),
            [0x30, 0x05, 0x02]
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = verify_detached(&bytes, b"body");
            let _ = to_indefinite_length(&bytes);
        }
    }
}
