//! SCEP messages (RFC 8894): parsing requests, building replies, and the client side used by
//! the testkit.
//!
//! A `PKIOperation` message is a CMS SignedData (signed by the requester) whose content is an
//! EnvelopedData (encrypted to the CA) holding a PKCS#10 CSR. SCEP's own signed attributes
//! (message type, transaction ID, nonces, status) are read and written here with a small DER
//! layer; signatures, digests and envelopes use OpenSSL.
//!
//! Replies mirror the requester: the envelope uses the content-encryption algorithm the client
//! used (never DES to a client that sent AES), and the digest the client signed with.

use std::sync::OnceLock;

use openssl::hash::{MessageDigest, hash};
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKeyRef, Private};
use openssl::sign::Signer;
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509, X509Ref, X509Req};

use super::der::{self, DerError, Tlv};

const OID_DATA: &str = "1.2.840.113549.1.7.1";
const OID_SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
const OID_CONTENT_TYPE: &str = "1.2.840.113549.1.9.3";
const OID_MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";
const OID_SIGNING_TIME: &str = "1.2.840.113549.1.9.5";
const OID_CHALLENGE_PASSWORD: &str = "1.2.840.113549.1.9.7";
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_MESSAGE_TYPE: &str = "2.16.840.1.113733.1.9.2";
const OID_PKI_STATUS: &str = "2.16.840.1.113733.1.9.3";
const OID_FAIL_INFO: &str = "2.16.840.1.113733.1.9.4";
const OID_SENDER_NONCE: &str = "2.16.840.1.113733.1.9.5";
const OID_RECIPIENT_NONCE: &str = "2.16.840.1.113733.1.9.6";
const OID_TRANSACTION_ID: &str = "2.16.840.1.113733.1.9.7";

/// The capabilities Pomona's SCEP server advertises (`GetCACaps`).
pub const CA_CAPS: &str = "POSTPKIOperation\nSHA-256\nSHA-1\nAES\nDES3\nSCEPStandard\nRenewal\n";

/// Errors reading or producing SCEP messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScepError {
    /// The message is not a well-formed SCEP PKIMessage.
    #[error("malformed SCEP message: {0}")]
    Malformed(String),
    /// The requester's signature does not verify.
    #[error("SCEP message signature does not verify: {0}")]
    BadSignature(String),
    /// A required SCEP attribute is missing.
    #[error("SCEP message lacks the {0} attribute")]
    MissingAttribute(&'static str),
    /// The envelope could not be decrypted with the CA key.
    #[error("cannot decrypt the SCEP envelope: {0}")]
    Decrypt(String),
    /// The envelope uses an algorithm Pomona does not support.
    #[error("unsupported content-encryption algorithm {0}")]
    UnsupportedCipher(String),
    /// The envelope content is not a PKCS#10 request.
    #[error("SCEP envelope does not hold a PKCS#10 request: {0}")]
    BadCsr(String),
    /// OpenSSL failed while building a message.
    #[error("building SCEP message failed: {0}")]
    Build(String),
}

impl From<DerError> for ScepError {
    fn from(e: DerError) -> Self {
        Self::Malformed(e.to_string())
    }
}

fn build_err(e: openssl::error::ErrorStack) -> ScepError {
    ScepError::Build(e.to_string())
}

/// Make sure OpenSSL 3's legacy provider (single DES, RC2) is loaded alongside the default one.
pub fn load_legacy_provider() {
    static LEGACY: OnceLock<Option<openssl::provider::Provider>> = OnceLock::new();
    LEGACY.get_or_init(|| {
        let p = openssl::provider::Provider::try_load(None, "legacy", true).ok();
        if p.is_none() {
            tracing::warn!(
                "OpenSSL legacy provider unavailable: single-DES SCEP clients will fail"
            );
        }
        p
    });
}

/// SCEP `messageType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageType {
    /// 3: the server's reply.
    CertRep,
    /// 17: renewal signed by the current identity.
    RenewalReq,
    /// 19: an initial enrollment.
    PkcsReq,
    /// 20: polling a pending request.
    CertPoll,
    /// Anything else (GetCert, GetCRL, …).
    Other(u32),
}

impl MessageType {
    fn parse(s: &str) -> Self {
        match s.trim().parse::<u32>() {
            Ok(3) => Self::CertRep,
            Ok(17) => Self::RenewalReq,
            Ok(19) => Self::PkcsReq,
            Ok(20) => Self::CertPoll,
            Ok(n) => Self::Other(n),
            Err(_) => Self::Other(u32::MAX),
        }
    }

    fn code(self) -> u32 {
        match self {
            Self::CertRep => 3,
            Self::RenewalReq => 17,
            Self::PkcsReq => 19,
            Self::CertPoll => 20,
            Self::Other(n) => n,
        }
    }
}

/// SCEP `failInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailInfo {
    /// 0: unrecognised or unsupported algorithm.
    BadAlg,
    /// 1: integrity check failed.
    BadMessageCheck,
    /// 2: transaction not permitted or supported (e.g. a wrong challenge).
    BadRequest,
    /// 3: signingTime too far off.
    BadTime,
    /// 4: no certificate matches.
    BadCertId,
}

impl FailInfo {
    fn code(self) -> u8 {
        match self {
            Self::BadAlg => 0,
            Self::BadMessageCheck => 1,
            Self::BadRequest => 2,
            Self::BadTime => 3,
            Self::BadCertId => 4,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "0" => Self::BadAlg,
            "1" => Self::BadMessageCheck,
            "2" => Self::BadRequest,
            "3" => Self::BadTime,
            "4" => Self::BadCertId,
            _ => return None,
        })
    }
}

/// Content-encryption algorithms of SCEP envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContentCipher {
    /// Single DES-CBC (still sent by some clients; needs OpenSSL's legacy provider).
    DesCbc,
    /// Triple DES (EDE3-CBC).
    DesEde3Cbc,
    /// AES-128-CBC.
    Aes128Cbc,
    /// AES-192-CBC.
    Aes192Cbc,
    /// AES-256-CBC.
    Aes256Cbc,
}

impl ContentCipher {
    fn from_oid(oid: &[u8]) -> Result<Self, ScepError> {
        let table = [
            ("1.3.14.3.2.7", Self::DesCbc),
            ("1.2.840.113549.3.7", Self::DesEde3Cbc),
            ("2.16.840.1.101.3.4.1.2", Self::Aes128Cbc),
            ("2.16.840.1.101.3.4.1.22", Self::Aes192Cbc),
            ("2.16.840.1.101.3.4.1.42", Self::Aes256Cbc),
        ];
        table
            .iter()
            .find(|(dotted, _)| der::oid(dotted) == oid)
            .map(|(_, c)| *c)
            .ok_or_else(|| ScepError::UnsupportedCipher(hex::encode(oid)))
    }

    /// The OpenSSL cipher.
    pub fn openssl(self) -> Cipher {
        match self {
            Self::DesCbc => Cipher::des_cbc(),
            Self::DesEde3Cbc => Cipher::des_ede3_cbc(),
            Self::Aes128Cbc => Cipher::aes_128_cbc(),
            Self::Aes192Cbc => Cipher::aes_192_cbc(),
            Self::Aes256Cbc => Cipher::aes_256_cbc(),
        }
    }
}

/// Digest algorithms of SCEP signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Digest {
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
}

impl Digest {
    fn oid(self) -> Vec<u8> {
        der::oid(match self {
            Self::Sha1 => "1.3.14.3.2.26",
            Self::Sha256 => "2.16.840.1.101.3.4.2.1",
        })
    }

    fn from_oid(oid: &[u8]) -> Self {
        if oid == Self::Sha1.oid().as_slice() {
            Self::Sha1
        } else {
            Self::Sha256
        }
    }

    fn md(self) -> MessageDigest {
        match self {
            Self::Sha1 => MessageDigest::sha1(),
            Self::Sha256 => MessageDigest::sha256(),
        }
    }

    fn algorithm_identifier(self) -> Vec<u8> {
        der::constructed(der::SEQUENCE, &[&self.oid(), &der::tlv(der::NULL, &[])])
    }
}

/// The SCEP attributes and signer of a signed PKIMessage.
#[derive(Debug, Clone)]
pub struct SignedMessage {
    /// `messageType`.
    pub message_type: MessageType,
    /// `transactionID`.
    pub transaction_id: String,
    /// `senderNonce`.
    pub sender_nonce: Vec<u8>,
    /// `recipientNonce` (replies).
    pub recipient_nonce: Option<Vec<u8>>,
    /// `pkiStatus` (replies): "0" success, "2" failure, "3" pending.
    pub pki_status: Option<String>,
    /// `failInfo` (failed replies).
    pub fail_info: Option<FailInfo>,
    /// The signer's certificate.
    pub signer: X509,
    /// The digest the signer used.
    pub digest: Digest,
    /// The signed content (an EnvelopedData, or empty).
    pub content: Vec<u8>,
}

/// A parsed, signature-checked SCEP request.
#[derive(Debug, Clone)]
pub struct ScepRequest {
    /// Attributes, signer and content.
    pub message: SignedMessage,
    /// The envelope's content-encryption algorithm.
    pub cipher: ContentCipher,
}

impl ScepRequest {
    /// Parse and verify the requester's signature (the signer is usually self-signed; the
    /// caller decides whether it must chain anywhere).
    pub fn parse(der_bytes: &[u8]) -> Result<Self, ScepError> {
        let message = parse_signed(der_bytes, None)?;
        let cipher = envelope_cipher(&message.content)?;
        Ok(Self { message, cipher })
    }

    /// Decrypt the envelope with the CA's key and return the CSR (signature verified).
    pub fn decrypt_csr(
        &self,
        ca_cert: &X509Ref,
        ca_key: &PKeyRef<Private>,
    ) -> Result<X509Req, ScepError> {
        if self.cipher == ContentCipher::DesCbc {
            load_legacy_provider();
        }
        let env = Pkcs7::from_der(&self.message.content)
            .map_err(|e| ScepError::Malformed(format!("envelope: {e}")))?;
        let csr_der = env
            .decrypt(ca_key, ca_cert, Pkcs7Flags::BINARY)
            .map_err(|e| ScepError::Decrypt(e.to_string()))?;
        let csr = X509Req::from_der(&csr_der).map_err(|e| ScepError::BadCsr(e.to_string()))?;
        let key = csr
            .public_key()
            .map_err(|e| ScepError::BadCsr(e.to_string()))?;
        if !csr.verify(&key).unwrap_or(false) {
            return Err(ScepError::BadCsr(
                "the CSR's signature does not match its public key".into(),
            ));
        }
        Ok(csr)
    }
}

/// Parse a SignedData, verify its signature (and, with `trust`, the signer's chain), read SCEP
/// attributes.
fn parse_signed(der_bytes: &[u8], trust: Option<&X509Ref>) -> Result<SignedMessage, ScepError> {
    let p7 = Pkcs7::from_der(der_bytes).map_err(|e| ScepError::Malformed(e.to_string()))?;
    let none = Stack::new().map_err(build_err)?;
    let signers = p7
        .signers(&none, Pkcs7Flags::empty())
        .map_err(|e| ScepError::Malformed(format!("no signer certificate: {e}")))?;
    let signer = signers
        .get(0)
        .ok_or_else(|| ScepError::Malformed("no signer certificate".into()))?
        .to_owned();
    let mut store = X509StoreBuilder::new().map_err(build_err)?;
    let mut flags = Pkcs7Flags::BINARY;
    match trust {
        Some(ca) => store.add_cert(ca.to_owned()).map_err(build_err)?,
        None => flags |= Pkcs7Flags::NOVERIFY,
    }
    let store = store.build();
    let mut content = Vec::new();
    // Failure replies carry no content: verify over empty content then.
    let has_content = p7.signed().is_some() && content_present(der_bytes)?;
    let detached: Option<&[u8]> = if has_content { None } else { Some(&[]) };
    p7.verify(&none, &store, detached, Some(&mut content), flags)
        .map_err(|e| ScepError::BadSignature(e.to_string()))?;
    let attrs = signed_attributes(der_bytes)?;
    let printable = |oid: &str| -> Option<String> {
        attrs
            .iter()
            .find(|(o, _)| *o == der::oid(oid))
            .and_then(|(_, v)| Tlv::read(v).ok())
            .map(|(t, _)| String::from_utf8_lossy(t.value).into_owned())
    };
    let octets = |oid: &str| -> Option<Vec<u8>> {
        attrs
            .iter()
            .find(|(o, _)| *o == der::oid(oid))
            .and_then(|(_, v)| Tlv::read(v).ok())
            .map(|(t, _)| t.value.to_vec())
    };
    Ok(SignedMessage {
        message_type: MessageType::parse(
            &printable(OID_MESSAGE_TYPE).ok_or(ScepError::MissingAttribute("messageType"))?,
        ),
        transaction_id: printable(OID_TRANSACTION_ID)
            .ok_or(ScepError::MissingAttribute("transactionID"))?,
        sender_nonce: octets(OID_SENDER_NONCE).unwrap_or_default(),
        recipient_nonce: octets(OID_RECIPIENT_NONCE),
        pki_status: printable(OID_PKI_STATUS),
        fail_info: printable(OID_FAIL_INFO).and_then(|s| FailInfo::parse(&s)),
        signer,
        digest: signer_digest(der_bytes)?,
        content,
    })
}

/// The SignedData's children: version, digestAlgorithms, encapContentInfo, [certs], [crls],
/// signerInfos.
fn signed_data_children(der_bytes: &[u8]) -> Result<Vec<Tlv<'_>>, ScepError> {
    let (ci, _) = Tlv::expect(der_bytes, der::SEQUENCE, "ContentInfo")?;
    let ci = ci.children()?;
    let wrapper = ci
        .get(1)
        .ok_or_else(|| ScepError::Malformed("ContentInfo without content".into()))?;
    let (sd, _) = Tlv::expect(wrapper.value, der::SEQUENCE, "SignedData")?;
    Ok(sd.children()?)
}

fn content_present(der_bytes: &[u8]) -> Result<bool, ScepError> {
    let children = signed_data_children(der_bytes)?;
    let encap = children
        .get(2)
        .ok_or_else(|| ScepError::Malformed("SignedData without content info".into()))?;
    Ok(encap.children()?.len() > 1)
}

fn first_signer_info(der_bytes: &[u8]) -> Result<Vec<Tlv<'_>>, ScepError> {
    let children = signed_data_children(der_bytes)?;
    let infos = children
        .iter()
        .rev()
        .find(|t| t.tag == der::SET)
        .ok_or_else(|| ScepError::Malformed("SignedData without signerInfos".into()))?;
    let first = infos
        .children()?
        .into_iter()
        .next()
        .ok_or_else(|| ScepError::Malformed("no SignerInfo".into()))?;
    Ok(first.children()?)
}

fn signer_digest(der_bytes: &[u8]) -> Result<Digest, ScepError> {
    let si = first_signer_info(der_bytes)?;
    let alg = si
        .get(2)
        .ok_or_else(|| ScepError::Malformed("SignerInfo without digest algorithm".into()))?;
    let oid = alg
        .children()?
        .into_iter()
        .next()
        .ok_or_else(|| ScepError::Malformed("empty digest algorithm".into()))?;
    Ok(Digest::from_oid(oid.raw))
}

/// An attribute as (encoded OID, encoded first value).
type Attribute = (Vec<u8>, Vec<u8>);

/// Signed attributes of the first SignerInfo.
fn signed_attributes(der_bytes: &[u8]) -> Result<Vec<Attribute>, ScepError> {
    let si = first_signer_info(der_bytes)?;
    let Some(attrs) = si.iter().find(|t| t.tag == 0xa0) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for attr in attrs.children()? {
        let parts = attr.children()?;
        if let (Some(oid), Some(values)) = (parts.first(), parts.get(1))
            && let Some(first) = values.children()?.into_iter().next()
        {
            out.push((oid.raw.to_vec(), first.raw.to_vec()));
        }
    }
    Ok(out)
}

/// The content-encryption algorithm of an EnvelopedData ContentInfo.
fn envelope_cipher(envelope: &[u8]) -> Result<ContentCipher, ScepError> {
    let (ci, _) = Tlv::expect(envelope, der::SEQUENCE, "envelope ContentInfo")?;
    let ci = ci.children()?;
    let wrapper = ci
        .get(1)
        .ok_or_else(|| ScepError::Malformed("envelope without content".into()))?;
    let (env, _) = Tlv::expect(wrapper.value, der::SEQUENCE, "EnvelopedData")?;
    let eci = env
        .children()?
        .into_iter()
        .find(|t| t.tag == der::SEQUENCE)
        .ok_or_else(|| ScepError::Malformed("EnvelopedData without encryptedContentInfo".into()))?;
    let alg = eci
        .children()?
        .into_iter()
        .nth(1)
        .ok_or_else(|| ScepError::Malformed("no content-encryption algorithm".into()))?;
    let oid = alg
        .children()?
        .into_iter()
        .next()
        .ok_or_else(|| ScepError::Malformed("empty content-encryption algorithm".into()))?;
    ContentCipher::from_oid(oid.raw)
}

/// The `challengePassword` attribute of a CSR, if any.
pub fn csr_challenge(csr: &X509Req) -> Option<String> {
    let der_bytes = csr.to_der().ok()?;
    let (req, _) = Tlv::read(&der_bytes).ok()?;
    let info = req.children().ok()?.into_iter().next()?;
    let attrs = info.children().ok()?.into_iter().find(|t| t.tag == 0xa0)?;
    for attr in attrs.children().ok()? {
        let parts = attr.children().ok()?;
        if parts.first()?.raw == der::oid(OID_CHALLENGE_PASSWORD).as_slice() {
            let value = parts.get(1)?.children().ok()?.into_iter().next()?;
            return Some(String::from_utf8_lossy(value.value).into_owned());
        }
    }
    None
}

/// A degenerate ("certs-only") PKCS#7 SignedData carrying `certs`.
pub fn degenerate_certs(certs: &[&X509Ref]) -> Result<Vec<u8>, ScepError> {
    let mut encoded = Vec::new();
    for c in certs {
        encoded.push(c.to_der().map_err(build_err)?);
    }
    let certs = der::tlv(0xa0, &encoded.concat());
    let signed = der::constructed(
        der::SEQUENCE,
        &[
            &der::integer(1),
            &der::tlv(der::SET, &[]),
            &der::constructed(der::SEQUENCE, &[&der::oid(OID_DATA)]),
            &certs,
            &der::tlv(der::SET, &[]),
        ],
    );
    Ok(content_info_signed(&signed))
}

fn content_info_signed(signed_data: &[u8]) -> Vec<u8> {
    der::constructed(
        der::SEQUENCE,
        &[&der::oid(OID_SIGNED_DATA), &der::tlv(0xa0, signed_data)],
    )
}

fn attribute(oid: &str, value: Vec<u8>) -> Vec<u8> {
    der::constructed(
        der::SEQUENCE,
        &[&der::oid(oid), &der::tlv(der::SET, &value)],
    )
}

fn printable(s: &str) -> Vec<u8> {
    der::tlv(der::PRINTABLE_STRING, s.as_bytes())
}

fn utc_now() -> Vec<u8> {
    let now = time::OffsetDateTime::now_utc();
    let s = format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}Z",
        now.year() % 100,
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    der::tlv(0x17, s.as_bytes())
}

/// Build a CMS SignedData over `content` with SCEP attributes, signed by `cert`/`key`.
fn sign_with_attributes(
    content: Option<&[u8]>,
    extra: Vec<Vec<u8>>,
    cert: &X509Ref,
    key: &PKeyRef<Private>,
    digest: Digest,
) -> Result<Vec<u8>, ScepError> {
    let body = content.unwrap_or(&[]);
    let md = hash(digest.md(), body).map_err(build_err)?;
    let mut attrs = vec![
        attribute(OID_CONTENT_TYPE, der::oid(OID_DATA)),
        attribute(OID_MESSAGE_DIGEST, der::tlv(der::OCTET_STRING, &md)),
        attribute(OID_SIGNING_TIME, utc_now()),
    ];
    attrs.extend(extra);
    let signed_attrs = der::set_of(attrs);
    let mut signer = Signer::new(digest.md(), key).map_err(build_err)?;
    let signature = signer
        .sign_oneshot_to_vec(&signed_attrs)
        .map_err(build_err)?;
    let issuer = cert.issuer_name().to_der().map_err(build_err)?;
    let serial = cert.serial_number().to_bn().map_err(build_err)?.to_vec();
    let serial = if serial.first().is_some_and(|b| b & 0x80 != 0) || serial.is_empty() {
        [&[0u8][..], &serial].concat()
    } else {
        serial
    };
    let signer_info = der::constructed(
        der::SEQUENCE,
        &[
            &der::integer(1),
            &der::constructed(der::SEQUENCE, &[&issuer, &der::tlv(der::INTEGER, &serial)]),
            &digest.algorithm_identifier(),
            // [0] IMPLICIT SET OF Attribute: same content, context tag.
            &der::tlv(0xa0, Tlv::read(&signed_attrs)?.0.value),
            &der::constructed(
                der::SEQUENCE,
                &[&der::oid(OID_RSA_ENCRYPTION), &der::tlv(der::NULL, &[])],
            ),
            &der::tlv(der::OCTET_STRING, &signature),
        ],
    );
    let encap = match content {
        Some(c) => der::constructed(
            der::SEQUENCE,
            &[
                &der::oid(OID_DATA),
                &der::tlv(0xa0, &der::tlv(der::OCTET_STRING, c)),
            ],
        ),
        None => der::constructed(der::SEQUENCE, &[&der::oid(OID_DATA)]),
    };
    let signed = der::constructed(
        der::SEQUENCE,
        &[
            &der::integer(1),
            &der::tlv(der::SET, &digest.algorithm_identifier()),
            &encap,
            &der::tlv(0xa0, &cert.to_der().map_err(build_err)?),
            &der::tlv(der::SET, &signer_info),
        ],
    );
    Ok(content_info_signed(&signed))
}

/// Encrypt `content` to `recipient` in an EnvelopedData.
fn envelope(
    content: &[u8],
    recipient: &X509Ref,
    cipher: ContentCipher,
) -> Result<Vec<u8>, ScepError> {
    if cipher == ContentCipher::DesCbc {
        load_legacy_provider();
    }
    let mut certs = Stack::new().map_err(build_err)?;
    certs.push(recipient.to_owned()).map_err(build_err)?;
    Pkcs7::encrypt(&certs, content, cipher.openssl(), Pkcs7Flags::BINARY)
        .and_then(|p| p.to_der())
        .map_err(build_err)
}

fn random_nonce() -> Vec<u8> {
    let mut n = vec![0u8; 16];
    openssl::rand::rand_bytes(&mut n).expect("the OpenSSL RNG works");
    n
}

/// What a CertRep says.
pub enum Outcome<'a> {
    /// Issued: the certificate (and any chain) go in an envelope to the requester.
    Success(Vec<&'a X509Ref>),
    /// Refused.
    Failure(FailInfo),
    /// Waiting for manual approval.
    Pending,
}

/// Build the CertRep answering `request`, signed by the CA.
pub fn build_cert_rep(
    request: &ScepRequest,
    outcome: Outcome<'_>,
    ca_cert: &X509Ref,
    ca_key: &PKeyRef<Private>,
) -> Result<Vec<u8>, ScepError> {
    let m = &request.message;
    let (status, content) = match &outcome {
        Outcome::Success(certs) => {
            let inner = degenerate_certs(certs)?;
            ("0", Some(envelope(&inner, &m.signer, request.cipher)?))
        }
        // Refusals carry an empty content rather than none: strict clients (certmonger) cannot
        // verify a SignedData without content and would never see the failure status.
        Outcome::Failure(_) => ("2", Some(Vec::new())),
        Outcome::Pending => ("3", Some(Vec::new())),
    };
    let mut extra = vec![
        attribute(
            OID_MESSAGE_TYPE,
            printable(&MessageType::CertRep.code().to_string()),
        ),
        attribute(OID_PKI_STATUS, printable(status)),
        attribute(OID_TRANSACTION_ID, printable(&m.transaction_id)),
        attribute(
            OID_SENDER_NONCE,
            der::tlv(der::OCTET_STRING, &random_nonce()),
        ),
        attribute(
            OID_RECIPIENT_NONCE,
            der::tlv(der::OCTET_STRING, &m.sender_nonce),
        ),
    ];
    if let Outcome::Failure(f) = outcome {
        extra.push(attribute(OID_FAIL_INFO, printable(&f.code().to_string())));
    }
    sign_with_attributes(content.as_deref(), extra, ca_cert, ca_key, m.digest)
}

/// Client side: build a PKCSReq or RenewalReq for `csr`, signed by `signer_cert`/`signer_key`
/// (a self-signed throw-away certificate, or the current identity for renewal) and encrypted
/// to `ca_cert`.
#[allow(clippy::too_many_arguments)]
pub fn build_request(
    csr: &X509Req,
    message_type: MessageType,
    transaction_id: &str,
    sender_nonce: &[u8],
    signer_cert: &X509Ref,
    signer_key: &PKeyRef<Private>,
    ca_cert: &X509Ref,
    cipher: ContentCipher,
    digest: Digest,
) -> Result<Vec<u8>, ScepError> {
    let env = envelope(&csr.to_der().map_err(build_err)?, ca_cert, cipher)?;
    let extra = vec![
        attribute(
            OID_MESSAGE_TYPE,
            printable(&message_type.code().to_string()),
        ),
        attribute(OID_TRANSACTION_ID, printable(transaction_id)),
        attribute(OID_SENDER_NONCE, der::tlv(der::OCTET_STRING, sender_nonce)),
    ];
    sign_with_attributes(Some(&env), extra, signer_cert, signer_key, digest)
}

/// Client side: a `CertPoll` (`GetCertInitial`) for `transaction_id`, asking about the
/// certificate `ca_cert`'s issuer was asked to issue for `subject`; signed and encrypted like
/// [`build_request`].
#[allow(clippy::too_many_arguments)]
pub fn build_cert_poll(
    subject: &openssl::x509::X509NameRef,
    transaction_id: &str,
    sender_nonce: &[u8],
    signer_cert: &X509Ref,
    signer_key: &PKeyRef<Private>,
    ca_cert: &X509Ref,
    cipher: ContentCipher,
    digest: Digest,
) -> Result<Vec<u8>, ScepError> {
    let issuer_and_subject = der::constructed(
        der::SEQUENCE,
        &[
            &ca_cert.subject_name().to_der().map_err(build_err)?,
            &subject.to_der().map_err(build_err)?,
        ],
    );
    let env = envelope(&issuer_and_subject, ca_cert, cipher)?;
    let extra = vec![
        attribute(
            OID_MESSAGE_TYPE,
            printable(&MessageType::CertPoll.code().to_string()),
        ),
        attribute(OID_TRANSACTION_ID, printable(transaction_id)),
        attribute(OID_SENDER_NONCE, der::tlv(der::OCTET_STRING, sender_nonce)),
    ];
    sign_with_attributes(Some(&env), extra, signer_cert, signer_key, digest)
}

/// Client side: a decoded CertRep.
#[derive(Debug)]
pub struct CertRep {
    /// Attributes and signer.
    pub message: SignedMessage,
    /// Issued certificates, on success.
    pub certificates: Vec<X509>,
}

impl CertRep {
    /// Verify a CertRep signed by a CA that chains to `ca_cert` and decrypt the issued
    /// certificates with the requester's key.
    pub fn parse(
        der_bytes: &[u8],
        ca_cert: &X509Ref,
        requester_cert: &X509Ref,
        requester_key: &PKeyRef<Private>,
    ) -> Result<Self, ScepError> {
        let message = parse_signed(der_bytes, Some(ca_cert))?;
        let mut certificates = Vec::new();
        if message.pki_status.as_deref() == Some("0") {
            let env = Pkcs7::from_der(&message.content)
                .map_err(|e| ScepError::Malformed(format!("envelope: {e}")))?;
            let inner = env
                .decrypt(requester_key, requester_cert, Pkcs7Flags::BINARY)
                .map_err(|e| ScepError::Decrypt(e.to_string()))?;
            let degenerate = Pkcs7::from_der(&inner)
                .map_err(|e| ScepError::Malformed(format!("certs-only: {e}")))?;
            if let Some(certs) = degenerate.signed().and_then(|s| s.certificates()) {
                certificates = certs.iter().map(|c| c.to_owned()).collect();
            }
        }
        Ok(Self {
            message,
            certificates,
        })
    }
}

/// Client side: a PKCS#10 request for `key` with `subject` and an optional `challengePassword`,
/// signed with SHA-256.
pub fn build_csr(
    key: &PKeyRef<Private>,
    subject: &openssl::x509::X509NameRef,
    challenge: Option<&str>,
) -> Result<X509Req, ScepError> {
    let mut attrs = Vec::new();
    if let Some(c) = challenge {
        attrs.push(attribute(OID_CHALLENGE_PASSWORD, printable_or_utf8(c)));
    }
    let info = der::constructed(
        der::SEQUENCE,
        &[
            &der::integer(0),
            &subject.to_der().map_err(build_err)?,
            &key.public_key_to_der().map_err(build_err)?,
            &der::tlv(0xa0, &attrs.concat()),
        ],
    );
    let mut signer = Signer::new(MessageDigest::sha256(), key).map_err(build_err)?;
    let sig = signer.sign_oneshot_to_vec(&info).map_err(build_err)?;
    let csr = der::constructed(
        der::SEQUENCE,
        &[
            &info,
            &der::constructed(
                der::SEQUENCE,
                &[
                    &der::oid("1.2.840.113549.1.1.11"),
                    &der::tlv(der::NULL, &[]),
                ],
            ),
            &der::tlv(0x03, &[&[0u8][..], &sig].concat()),
        ],
    );
    X509Req::from_der(&csr).map_err(build_err)
}

/// Client side: the throw-away self-signed certificate a requester signs `PKCSReq` with.
pub fn self_signed_requester(key: &PKeyRef<Private>, common_name: &str) -> Result<X509, ScepError> {
    let mut name = openssl::x509::X509Name::builder().map_err(build_err)?;
    name.append_entry_by_text("CN", common_name)
        .map_err(build_err)?;
    let name = name.build();
    let mut serial = openssl::bn::BigNum::new().map_err(build_err)?;
    serial
        .rand(64, openssl::bn::MsbOption::MAYBE_ZERO, false)
        .map_err(build_err)?;
    let mut b = X509::builder().map_err(build_err)?;
    b.set_version(2).map_err(build_err)?;
    let serial = serial.to_asn1_integer().map_err(build_err)?;
    b.set_serial_number(&serial).map_err(build_err)?;
    b.set_subject_name(&name).map_err(build_err)?;
    b.set_issuer_name(&name).map_err(build_err)?;
    b.set_pubkey(key).map_err(build_err)?;
    let not_before = openssl::asn1::Asn1Time::days_from_now(0).map_err(build_err)?;
    let not_after = openssl::asn1::Asn1Time::days_from_now(1).map_err(build_err)?;
    b.set_not_before(&not_before).map_err(build_err)?;
    b.set_not_after(&not_after).map_err(build_err)?;
    b.sign(key, MessageDigest::sha256()).map_err(build_err)?;
    Ok(b.build())
}

/// PrintableString when the text allows it, UTF8String otherwise.
fn printable_or_utf8(s: &str) -> Vec<u8> {
    let printable = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b));
    if printable {
        der::tlv(der::PRINTABLE_STRING, s.as_bytes())
    } else {
        der::tlv(0x0c, s.as_bytes())
    }
}

#[cfg(test)]
#[path = "scep_tests.rs"]
mod tests;
