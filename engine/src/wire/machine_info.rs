//! Signed `MachineInfo` from Automated Device Enrollment (`docs/protocol.md#machineinfo`).
//!
//! During ADE the device POSTs a CMS-signed plist (or, in the web-view flow, sends the same bytes
//! base64-encoded in `x-apple-aspen-deviceinfo`). The signature chains to Apple's device CA in
//! production. That CA expired in 2014 and uses SHA-1 with a 1024-bit key, and the device
//! certificate lacks S/MIME key usage, so verification ignores validity times, accepts legacy
//! algorithms (authentication level 0) and checks the chain for no particular purpose — after
//! checking the signature itself.
//!
//! Because any certificate under Apple Root CA (a free developer certificate, for one) would
//! pass such a loose check, the chain is built only from the configured bundle — certificates
//! embedded in the CMS are never used as intermediates — and the signer must be issued directly
//! by a device CA of the bundle: a bundle certificate that issues no other bundle certificate
//! (Apple iPhone Device CA in Apple's chain).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKeyRef, Private};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509, X509Ref, X509StoreContext};
use plist::{Dictionary, Value};
use serde::{Deserialize, Serialize};

use super::checkin::to_xml;

/// Errors reading signed MachineInfo.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MachineInfoError {
    /// The header value is not base64.
    #[error("x-apple-aspen-deviceinfo is not valid base64")]
    Base64,
    /// Not a CMS SignedData with content.
    #[error("MachineInfo is not a signed message: {0}")]
    Malformed(String),
    /// The signature does not verify.
    #[error("MachineInfo signature does not verify: {0}")]
    BadSignature(String),
    /// The signer does not chain to the trusted device CA.
    #[error("MachineInfo signer is not trusted: {0}")]
    Untrusted(String),
    /// The content is not a plist dictionary.
    #[error("MachineInfo content is not a property list: {0}")]
    NotPlist(String),
    /// A required key is missing.
    #[error("MachineInfo lacks {0}")]
    MissingKey(&'static str),
    /// The trust bundle is unusable.
    #[error("device CA bundle: {0}")]
    Trust(String),
    /// Signing failed (test devices).
    #[error("signing MachineInfo failed: {0}")]
    Sign(String),
}

/// The decoded MachineInfo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineInfo {
    /// `UDID`.
    pub udid: String,
    /// `SERIAL`.
    pub serial: String,
    /// `PRODUCT`, e.g. `MacBookPro18,3`.
    pub product: Option<String>,
    /// `VERSION`: the OS build, e.g. `23A344`.
    pub version: Option<String>,
    /// `OS_VERSION`, e.g. `14.0`.
    pub os_version: Option<String>,
    /// `LANGUAGE`.
    pub language: Option<String>,
    /// `IMEI`.
    pub imei: Option<String>,
    /// `MEID`.
    pub meid: Option<String>,
    /// `SOFTWARE_UPDATE_DEVICE_ID`.
    pub software_update_device_id: Option<String>,
    /// `MDM_CAN_REQUEST_SOFTWARE_UPDATE`: the device can update during Setup Assistant.
    pub can_request_software_update: bool,
}

impl MachineInfo {
    /// The MachineInfo plist (as a device sends it, before signing).
    pub fn to_plist(&self) -> Vec<u8> {
        let mut d = Dictionary::new();
        d.insert("UDID".into(), self.udid.clone().into());
        d.insert("SERIAL".into(), self.serial.clone().into());
        let opt = [
            ("PRODUCT", &self.product),
            ("VERSION", &self.version),
            ("OS_VERSION", &self.os_version),
            ("LANGUAGE", &self.language),
            ("IMEI", &self.imei),
            ("MEID", &self.meid),
            ("SOFTWARE_UPDATE_DEVICE_ID", &self.software_update_device_id),
        ];
        for (k, v) in opt {
            if let Some(v) = v {
                d.insert(k.into(), v.clone().into());
            }
        }
        if self.can_request_software_update {
            d.insert("MDM_CAN_REQUEST_SOFTWARE_UPDATE".into(), true.into());
        }
        to_xml(&Value::Dictionary(d))
    }

    fn from_plist(bytes: &[u8]) -> Result<Self, MachineInfoError> {
        let v = super::bounded_plist::decode(bytes, &super::bounded_plist::PlistLimits::default())
            .map_err(|e| MachineInfoError::NotPlist(e.to_string()))?;
        let d = v
            .as_dictionary()
            .ok_or_else(|| MachineInfoError::NotPlist("root is not a dictionary".into()))?;
        let s = |k: &str| d.get(k).and_then(Value::as_string).map(str::to_owned);
        Ok(Self {
            udid: s("UDID").ok_or(MachineInfoError::MissingKey("UDID"))?,
            serial: s("SERIAL").ok_or(MachineInfoError::MissingKey("SERIAL"))?,
            product: s("PRODUCT"),
            version: s("VERSION"),
            os_version: s("OS_VERSION"),
            language: s("LANGUAGE"),
            imei: s("IMEI"),
            meid: s("MEID"),
            software_update_device_id: s("SOFTWARE_UPDATE_DEVICE_ID"),
            can_request_software_update: match d.get("MDM_CAN_REQUEST_SOFTWARE_UPDATE") {
                Some(Value::Boolean(b)) => *b,
                Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
                _ => false,
            },
        })
    }
}

/// Trust anchors for MachineInfo signatures: roots are trusted, other certificates are used as
/// intermediates, and the lowest certificates of the bundle are the device CAs that sign
/// devices' certificates.
pub struct DeviceTrust {
    store: X509Store,
    intermediates: Vec<X509>,
    /// DER of the certificates allowed to issue a MachineInfo signer.
    device_cas: Vec<Vec<u8>>,
    count: usize,
}

impl std::fmt::Debug for DeviceTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceTrust")
            .field("certificates", &self.count)
            .finish()
    }
}

/// Apple's device CA chain (Apple iPhone Device CA → Apple iPhone Certification Authority →
/// Apple Root CA).
const APPLE_DEVICE_CA: &[u8] = include_bytes!("fixtures/apple-device-ca.pem");

fn is_self_signed(c: &X509Ref) -> bool {
    c.issued(c) == openssl::x509::X509VerifyResult::OK
        && c.public_key()
            .ok()
            .and_then(|k| c.verify(&k).ok())
            .unwrap_or(false)
}

impl DeviceTrust {
    /// Trust a PEM bundle: self-signed certificates become roots, the rest intermediates.
    pub fn from_pem_bundle(pem: &[u8]) -> Result<Self, MachineInfoError> {
        let certs =
            X509::stack_from_pem(pem).map_err(|e| MachineInfoError::Trust(e.to_string()))?;
        if certs.is_empty() {
            return Err(MachineInfoError::Trust(
                "no certificates in the bundle".into(),
            ));
        }
        let count = certs.len();
        // Device CAs: bundle certificates that issue no other certificate of the bundle.
        let mut device_cas = Vec::new();
        for c in &certs {
            let issues_another = certs.iter().any(|o| {
                !std::ptr::eq(o, c)
                    && o.to_der().ok() != c.to_der().ok()
                    && c.issued(o) == openssl::x509::X509VerifyResult::OK
            });
            if !issues_another {
                device_cas.push(
                    c.to_der()
                        .map_err(|e| MachineInfoError::Trust(e.to_string()))?,
                );
            }
        }
        let mut b = X509StoreBuilder::new().map_err(|e| MachineInfoError::Trust(e.to_string()))?;
        let mut intermediates = Vec::new();
        let mut roots = 0;
        for c in certs {
            if is_self_signed(&c) {
                b.add_cert(c)
                    .map_err(|e| MachineInfoError::Trust(e.to_string()))?;
                roots += 1;
            } else {
                intermediates.push(c);
            }
        }
        if roots == 0 {
            return Err(MachineInfoError::Trust(
                "the bundle holds no self-signed root".into(),
            ));
        }
        let mut param =
            X509VerifyParam::new().map_err(|e| MachineInfoError::Trust(e.to_string()))?;
        param
            .set_flags(X509VerifyFlags::NO_CHECK_TIME)
            .map_err(|e| MachineInfoError::Trust(e.to_string()))?;
        param.set_auth_level(0);
        b.set_param(&param)
            .map_err(|e| MachineInfoError::Trust(e.to_string()))?;
        Ok(Self {
            store: b.build(),
            intermediates,
            device_cas,
            count,
        })
    }

    /// Apple's device CA chain.
    pub fn apple() -> Self {
        Self::from_pem_bundle(APPLE_DEVICE_CA).expect("the embedded Apple chain parses")
    }

    /// How many certificates the bundle held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the bundle was empty (never true for a constructed trust).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Build and verify `leaf`'s chain from the bundle alone; returns the chain, leaf first.
    fn verify_chain(&self, leaf: &X509Ref) -> Result<Vec<X509>, MachineInfoError> {
        let mut chain = Stack::new().map_err(|e| MachineInfoError::Untrusted(e.to_string()))?;
        for c in &self.intermediates {
            chain
                .push(c.clone())
                .map_err(|e| MachineInfoError::Untrusted(e.to_string()))?;
        }
        let mut ctx =
            X509StoreContext::new().map_err(|e| MachineInfoError::Untrusted(e.to_string()))?;
        let result = ctx
            .init(&self.store, leaf, &chain, |c| {
                Ok(if c.verify_cert()? {
                    let built = c
                        .chain()
                        .map(|s| s.iter().map(|x| x.to_owned()).collect())
                        .unwrap_or_default();
                    Ok(built)
                } else {
                    Err(c.error())
                })
            })
            .map_err(|e| MachineInfoError::Untrusted(e.to_string()))?;
        result.map_err(|e| MachineInfoError::Untrusted(e.error_string().to_owned()))
    }

    /// Verify `signer`'s chain and that a device CA of the bundle issued it directly.
    fn verify_signer(&self, signer: &X509Ref) -> Result<(), MachineInfoError> {
        let chain = self.verify_chain(signer)?;
        let issuer = chain
            .get(1)
            .ok_or_else(|| {
                MachineInfoError::Untrusted("the signer is a trust anchor, not a device".into())
            })?
            .to_der()
            .map_err(|e| MachineInfoError::Untrusted(e.to_string()))?;
        if self.device_cas.contains(&issuer) {
            Ok(())
        } else {
            Err(MachineInfoError::Untrusted(
                "the signer was not issued by the device CA".into(),
            ))
        }
    }
}

/// Verify a signed MachineInfo (CMS SignedData with attached content) and decode it.
pub fn verify_machine_info(
    signed: &[u8],
    trust: &DeviceTrust,
) -> Result<MachineInfo, MachineInfoError> {
    let p7 = Pkcs7::from_der(signed).map_err(|e| MachineInfoError::Malformed(e.to_string()))?;
    if p7.signed().is_none() {
        return Err(MachineInfoError::Malformed("not a SignedData".into()));
    }
    // Certificates embedded in the CMS only supply the signer's own certificate; they are never
    // intermediates of its chain (see `DeviceTrust::verify_signer`).
    let none = Stack::new().map_err(|e| MachineInfoError::Malformed(e.to_string()))?;
    let signers = p7
        .signers(&none, Pkcs7Flags::empty())
        .map_err(|e| MachineInfoError::Malformed(format!("no signer: {e}")))?;
    let signer = signers
        .get(0)
        .ok_or_else(|| MachineInfoError::Malformed("no signer".into()))?
        .to_owned();
    let empty = X509StoreBuilder::new()
        .map_err(|e| MachineInfoError::Malformed(e.to_string()))?
        .build();
    let mut content = Vec::new();
    p7.verify(
        &none,
        &empty,
        None,
        Some(&mut content),
        Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY,
    )
    .map_err(|e| MachineInfoError::BadSignature(e.to_string()))?;
    trust.verify_signer(&signer)?;
    MachineInfo::from_plist(&content)
}

/// Decode the `x-apple-aspen-deviceinfo` header value (base64) and verify it.
pub fn verify_machine_info_header(
    value: &str,
    trust: &DeviceTrust,
) -> Result<MachineInfo, MachineInfoError> {
    let compact: String = value.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = B64.decode(compact).map_err(|_| MachineInfoError::Base64)?;
    verify_machine_info(&bytes, trust)
}

/// The 403 body that makes Setup Assistant update the OS before enrolling.
pub fn software_update_required_body(os_version: &str, build_version: Option<&str>) -> Vec<u8> {
    let mut details = serde_json::Map::new();
    details.insert("OSVersion".into(), os_version.into());
    if let Some(b) = build_version {
        details.insert("BuildVersion".into(), b.into());
    }
    serde_json::to_vec(&serde_json::json!({
        "code": "com.apple.softwareupdate.required",
        "details": details,
    }))
    .expect("JSON values serialize")
}

/// Sign a MachineInfo as a device does (attached, DER), for test device CAs.
pub fn sign_machine_info(
    info: &MachineInfo,
    cert: &X509Ref,
    key: &PKeyRef<Private>,
    chain: &[X509],
) -> Result<Vec<u8>, MachineInfoError> {
    let err = |e: openssl::error::ErrorStack| MachineInfoError::Sign(e.to_string());
    let mut certs = Stack::new().map_err(err)?;
    for c in chain {
        certs.push(c.clone()).map_err(err)?;
    }
    Pkcs7::sign(
        cert,
        key,
        &certs,
        &info.to_plist(),
        Pkcs7Flags::BINARY | Pkcs7Flags::NOSMIMECAP,
    )
    .and_then(|p| p.to_der())
    .map_err(err)
}

/// Compare dotted version strings numerically (`14.10` > `14.9`); missing parts count as 0.
pub fn version_lt(a: &str, b: &str) -> bool {
    let parse = |s: &str| -> Vec<u64> {
        s.split('.')
            .map(|p| p.trim().parse().unwrap_or(0))
            .collect()
    };
    let (a, b) = (parse(a), parse(b));
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        if x != y {
            return x < y;
        }
    }
    false
}

#[cfg(test)]
#[path = "machine_info_tests.rs"]
mod tests;
