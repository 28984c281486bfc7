//! The MDM enrollment profile (`.mobileconfig`) (`docs/protocol.md#enrollment-profile`).
//!
//! A `Configuration` profile holding a SCEP payload (the device identity), the MDM payload that
//! points at Pomona, and optional root-certificate payloads for the server's TLS CA.

use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKeyRef, Private};
use openssl::stack::Stack;
use openssl::x509::{X509, X509Ref};
use plist::{Dictionary, Value};

use super::checkin::to_xml;

/// The content type profiles are served with.
pub const CONTENT_TYPE: &str = "application/x-apple-aspen-config";

/// Errors producing a profile.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// Signing failed.
    #[error("signing the profile failed: {0}")]
    Sign(String),
}

/// The SCEP payload (`com.apple.security.scep`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScepPayload {
    /// SCEP endpoint URL.
    pub url: String,
    /// Challenge password.
    pub challenge: Option<String>,
    /// Sent as the `message` of GetCACert.
    pub name: Option<String>,
    /// Subject RDNs, e.g. `[("CN", "Pomona device")]`.
    pub subject: Vec<(String, String)>,
    /// RSA key size.
    pub key_size: u32,
    /// SHA-256 of the CA certificate (`CAFingerprint`).
    pub ca_fingerprint_sha256: Option<Vec<u8>>,
    /// Retries on a pending reply.
    pub retries: Option<u32>,
    /// Seconds between retries.
    pub retry_delay: Option<u32>,
}

/// The MDM payload (`com.apple.mdm`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdmPayload {
    /// Command reports go here.
    pub server_url: String,
    /// Check-ins go here (ServerURL when absent).
    pub check_in_url: Option<String>,
    /// APNs topic of the push certificate.
    pub topic: String,
    /// Devices sign every request (`Mdm-Signature`).
    pub sign_message: bool,
    /// Access rights bit mask (8191 = all).
    pub access_rights: u32,
    /// Send `CheckOut` when the profile is removed.
    pub check_out_when_removed: bool,
    /// `ServerCapabilities`.
    pub server_capabilities: Vec<String>,
}

impl MdmPayload {
    /// The capabilities Pomona supports.
    pub fn default_capabilities() -> Vec<String> {
        [
            "com.apple.mdm.per-user-connections",
            "com.apple.mdm.bootstraptoken",
            "com.apple.mdm.token",
        ]
        .map(String::from)
        .to_vec()
    }
}

/// Everything needed to build an enrollment profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentProfile {
    /// `PayloadDisplayName` of the profile.
    pub display_name: String,
    /// `PayloadOrganization`.
    pub organization: Option<String>,
    /// Prefix of every `PayloadIdentifier`, e.g. `com.example.pomona`.
    pub identifier_prefix: String,
    /// The identity.
    pub scep: ScepPayload,
    /// The MDM payload.
    pub mdm: MdmPayload,
    /// DER certificates installed as trusted roots (the server's TLS CA).
    pub trust_anchors_der: Vec<Vec<u8>>,
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string().to_uppercase()
}

fn payload(kind: &str, identifier: String, display: &str) -> (Dictionary, String) {
    let id = uuid();
    let mut d = Dictionary::new();
    d.insert("PayloadType".into(), kind.into());
    d.insert("PayloadIdentifier".into(), identifier.into());
    d.insert("PayloadUUID".into(), id.clone().into());
    d.insert("PayloadVersion".into(), 1.into());
    d.insert("PayloadDisplayName".into(), display.into());
    (d, id)
}

impl EnrollmentProfile {
    /// The profile as an XML plist. Payload UUIDs are fresh on every call; the MDM payload's
    /// `IdentityCertificateUUID` is the SCEP payload's `PayloadUUID`.
    pub fn to_plist(&self) -> Vec<u8> {
        let prefix = &self.identifier_prefix;
        let (mut scep, scep_uuid) = payload(
            "com.apple.security.scep",
            format!("{prefix}.scep"),
            "Device identity",
        );
        let s = &self.scep;
        let mut content = Dictionary::new();
        content.insert("URL".into(), s.url.clone().into());
        if let Some(c) = &s.challenge {
            content.insert("Challenge".into(), c.clone().into());
        }
        if let Some(n) = &s.name {
            content.insert("Name".into(), n.clone().into());
        }
        if !s.subject.is_empty() {
            let rdns: Vec<Value> = s
                .subject
                .iter()
                .map(|(k, v)| {
                    Value::Array(vec![Value::Array(vec![k.clone().into(), v.clone().into()])])
                })
                .collect();
            content.insert("Subject".into(), Value::Array(rdns));
        }
        content.insert("Keysize".into(), s.key_size.into());
        content.insert("Key Type".into(), "RSA".into());
        content.insert("Key Usage".into(), 5.into());
        if let Some(fp) = &s.ca_fingerprint_sha256 {
            content.insert("CAFingerprint".into(), Value::Data(fp.clone()));
        }
        if let Some(r) = s.retries {
            content.insert("Retries".into(), r.into());
        }
        if let Some(r) = s.retry_delay {
            content.insert("RetryDelay".into(), r.into());
        }
        scep.insert("PayloadContent".into(), content.into());

        let m = &self.mdm;
        let (mut mdm, _) = payload(
            "com.apple.mdm",
            format!("{prefix}.mdm"),
            "Device management",
        );
        mdm.insert("IdentityCertificateUUID".into(), scep_uuid.into());
        mdm.insert("Topic".into(), m.topic.clone().into());
        mdm.insert("ServerURL".into(), m.server_url.clone().into());
        if let Some(u) = &m.check_in_url {
            mdm.insert("CheckInURL".into(), u.clone().into());
        }
        mdm.insert("SignMessage".into(), m.sign_message.into());
        mdm.insert("AccessRights".into(), m.access_rights.into());
        mdm.insert(
            "CheckOutWhenRemoved".into(),
            m.check_out_when_removed.into(),
        );
        mdm.insert(
            "ServerCapabilities".into(),
            Value::Array(
                m.server_capabilities
                    .iter()
                    .cloned()
                    .map(Value::from)
                    .collect(),
            ),
        );

        let mut payloads = vec![Value::Dictionary(scep), Value::Dictionary(mdm)];
        for (i, der) in self.trust_anchors_der.iter().enumerate() {
            let (mut root, _) = payload(
                "com.apple.security.root",
                format!("{prefix}.trust.{i}"),
                "Server certificate authority",
            );
            root.insert("PayloadContent".into(), Value::Data(der.clone()));
            payloads.push(root.into());
        }

        let mut top = Dictionary::new();
        top.insert("PayloadType".into(), "Configuration".into());
        top.insert(
            "PayloadDisplayName".into(),
            self.display_name.clone().into(),
        );
        top.insert("PayloadIdentifier".into(), prefix.clone().into());
        top.insert("PayloadUUID".into(), uuid().into());
        top.insert("PayloadVersion".into(), 1.into());
        top.insert("PayloadScope".into(), "System".into());
        if let Some(o) = &self.organization {
            top.insert("PayloadOrganization".into(), o.clone().into());
        }
        top.insert("PayloadContent".into(), Value::Array(payloads));
        to_xml(&Value::Dictionary(top))
    }
}

/// CMS-sign a profile (attached content, DER, SHA-256) with a signing identity and its chain.
pub fn sign_profile(
    profile: &[u8],
    cert: &X509Ref,
    key: &PKeyRef<Private>,
    chain: &[X509],
) -> Result<Vec<u8>, ProfileError> {
    let err = |e: openssl::error::ErrorStack| ProfileError::Sign(e.to_string());
    let mut certs = Stack::new().map_err(err)?;
    for c in chain {
        certs.push(c.clone()).map_err(err)?;
    }
    Pkcs7::sign(
        cert,
        key,
        &certs,
        profile,
        Pkcs7Flags::BINARY | Pkcs7Flags::NOSMIMECAP,
    )
    .and_then(|p| p.to_der())
    .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EnrollmentProfile {
        EnrollmentProfile {
            display_name: "Pomona enrollment".into(),
            organization: Some("Example".into()),
            identifier_prefix: "com.example.pomona".into(),
            scep: ScepPayload {
                url: "https://mdm.example.com/scep".into(),
                challenge: Some("c".into()),
                name: None,
                subject: vec![("CN".into(), "Pomona device".into())],
                key_size: 2048,
                ca_fingerprint_sha256: Some(vec![1; 32]),
                retries: Some(3),
                retry_delay: None,
            },
            mdm: MdmPayload {
                server_url: "https://mdm.example.com/mdm/connect".into(),
                check_in_url: Some("https://mdm.example.com/mdm/checkin".into()),
                topic: "com.apple.mgmt.External.x".into(),
                sign_message: true,
                access_rights: 8191,
                check_out_when_removed: true,
                server_capabilities: MdmPayload::default_capabilities(),
            },
            trust_anchors_der: vec![vec![0x30, 0x00]],
        }
    }

    #[test]
    fn profile_has_apples_keys() {
        let xml = sample().to_plist();
        let v = Value::from_reader(std::io::Cursor::new(&xml)).unwrap();
        let top = v.as_dictionary().unwrap();
        assert_eq!(top["PayloadType"].as_string(), Some("Configuration"));
        assert_eq!(top["PayloadScope"].as_string(), Some("System"));
        let payloads = top["PayloadContent"].as_array().unwrap();
        assert_eq!(payloads.len(), 3);
        let scep = payloads[0].as_dictionary().unwrap();
        let mdm = payloads[1].as_dictionary().unwrap();
        assert_eq!(
            scep["PayloadType"].as_string(),
            Some("com.apple.security.scep")
        );
        assert_eq!(mdm["PayloadType"].as_string(), Some("com.apple.mdm"));
        assert_eq!(
            mdm["IdentityCertificateUUID"].as_string(),
            scep["PayloadUUID"].as_string(),
            "the MDM payload uses the SCEP identity"
        );
        let content = scep["PayloadContent"].as_dictionary().unwrap();
        assert_eq!(
            content["URL"].as_string(),
            Some("https://mdm.example.com/scep")
        );
        assert_eq!(content["Key Type"].as_string(), Some("RSA"));
        assert_eq!(content["Key Usage"].as_unsigned_integer(), Some(5));
        assert_eq!(content["Keysize"].as_unsigned_integer(), Some(2048));
        assert_eq!(
            content["CAFingerprint"].as_data().map(<[u8]>::len),
            Some(32)
        );
        assert!(
            !content.contains_key("RetryDelay"),
            "absent options are omitted"
        );
        let subject = content["Subject"].as_array().unwrap();
        assert_eq!(
            subject[0].as_array().unwrap()[0].as_array().unwrap()[1].as_string(),
            Some("Pomona device")
        );
        assert_eq!(mdm["SignMessage"].as_boolean(), Some(true));
        assert_eq!(mdm["AccessRights"].as_unsigned_integer(), Some(8191));
        assert_eq!(
            mdm["CheckInURL"].as_string(),
            Some("https://mdm.example.com/mdm/checkin")
        );
        let caps: Vec<_> = mdm["ServerCapabilities"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_string)
            .collect();
        assert!(caps.contains(&"com.apple.mdm.per-user-connections"));
        assert_eq!(
            payloads[2].as_dictionary().unwrap()["PayloadType"].as_string(),
            Some("com.apple.security.root")
        );
        for p in payloads {
            let p = p.as_dictionary().unwrap();
            for key in [
                "PayloadIdentifier",
                "PayloadUUID",
                "PayloadVersion",
                "PayloadDisplayName",
            ] {
                assert!(p.contains_key(key), "{key}");
            }
        }
        assert_ne!(sample().to_plist(), xml, "fresh UUIDs on every download");
    }

    #[test]
    fn signed_profile_verifies_and_carries_the_exact_bytes() {
        let ca = crate::ca::CertificateAuthority::generate(&Default::default()).unwrap();
        let xml = sample().to_plist();
        let signed = sign_profile(&xml, ca.certificate(), ca.private_key(), &[]).unwrap();
        let p7 = Pkcs7::from_der(&signed).unwrap();
        let mut out = Vec::new();
        let store = openssl::x509::store::X509StoreBuilder::new()
            .unwrap()
            .build();
        p7.verify(
            &Stack::new().unwrap(),
            &store,
            None,
            Some(&mut out),
            Pkcs7Flags::NOVERIFY,
        )
        .unwrap();
        assert_eq!(out, xml);
    }
}
