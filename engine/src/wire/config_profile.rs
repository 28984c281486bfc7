//! Configuration profiles (`.mobileconfig`) uploaded to the profile library
//! (`docs/protocol.md#configuration-profiles`).
//!
//! [`validate`] accepts what admins actually upload: an XML or binary property list, or either
//! of them inside a CMS (PKCS#7) SignedData in DER or BER with the content attached, as
//! `openssl smime -sign -nodetach -outform der`, Apple Configurator and most MDM consoles write
//! them. A signed profile's signature must match its content, but its signer need not be
//! trusted: the signer is recorded, and devices decide what to make of it.
//!
//! The checks are the ones a device would otherwise fail the `InstallProfile` command on, reported
//! precisely ([`InvalidProfile`]) and never by panicking, whatever the bytes: the top level is a
//! `Configuration` dictionary with a `PayloadIdentifier`, a `PayloadUUID` and `PayloadVersion` 1;
//! `PayloadContent` is an array of payload dictionaries, each with its own `PayloadType`,
//! `PayloadIdentifier`, `PayloadUUID` and `PayloadVersion`, no two sharing an identifier or a UUID.
//! Payload-specific keys are not checked: Apple defines hundreds of payload types.
//!
//! [`install_profile_command`] and [`remove_profile_command`] build the MDM commands that deliver
//! and remove a profile.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use openssl::nid::Nid;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::X509NameRef;
use openssl::x509::store::X509StoreBuilder;
use plist::{Dictionary, Value};
use serde::{Deserialize, Serialize};

use super::bounded_plist::{self, PlistError, PlistLimits};
use super::command::Command;

/// Where in a profile a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// The profile's top-level dictionary.
    Profile,
    /// An entry of the top-level `PayloadContent` array.
    Payload {
        /// Its position, counting from 1.
        position: usize,
        /// Its `PayloadType`, once known.
        payload_type: Option<String>,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Profile => f.write_str("profile"),
            Self::Payload {
                position,
                payload_type: Some(t),
            } => write!(f, "payload {position} ({t})"),
            Self::Payload {
                position,
                payload_type: None,
            } => write!(f, "payload {position}"),
        }
    }
}

/// Why an uploaded profile is not acceptable. Messages name the payload and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidProfile {
    /// No bytes at all.
    #[error("the profile is empty")]
    Empty,
    /// Not a property list in the format it looks like.
    #[error("not a valid {format} property list: {detail}")]
    Plist {
        /// `XML` or `binary`.
        format: &'static str,
        /// The parser's message.
        detail: String,
    },
    /// The property list exceeds a limit of the bounded decoder (nesting depth, values, bytes
    /// once expanded: typically a binary plist sharing its objects to expand far beyond its own
    /// size).
    #[error("{0}")]
    Limit(PlistError),
    /// The CMS structure is malformed, is not SignedData, or its signature does not verify.
    #[error("signed profile: {0}")]
    Signature(String),
    /// A SignedData without the profile inside (a detached signature).
    #[error(
        "signed profile: the signature is detached and the profile is not inside; sign with the content attached (openssl smime -sign -nodetach)"
    )]
    Detached,
    /// The top level is not a dictionary.
    #[error("the top level of the profile is {0}, not a dictionary")]
    NotDictionary(&'static str),
    /// The top-level `PayloadType` is not `Configuration` (often: a bare payload was uploaded).
    #[error(
        "profile: PayloadType is {0:?}, not \"Configuration\" (upload a whole profile, not a single payload)"
    )]
    NotConfiguration(String),
    /// The payloads are encrypted to one device's identity.
    #[error(
        "profile: the payloads are encrypted (EncryptedPayloadContent); encrypted profiles belong to one device and cannot be stored in the library"
    )]
    Encrypted,
    /// A required key is absent.
    #[error("{location}: missing {key}")]
    Missing {
        /// Where.
        location: Location,
        /// The key.
        key: &'static str,
    },
    /// A key has the wrong type.
    #[error("{location}: {key} must be {expected}, not {found}")]
    WrongType {
        /// Where.
        location: Location,
        /// The key.
        key: &'static str,
        /// The type it must have.
        expected: &'static str,
        /// The type it has.
        found: &'static str,
    },
    /// A required string is empty (or only whitespace).
    #[error("{location}: {key} is empty")]
    EmptyString {
        /// Where.
        location: Location,
        /// The key.
        key: &'static str,
    },
    /// `PayloadVersion` has a value this format version does not define.
    #[error("{location}: PayloadVersion {found} is not supported (expected {expected})")]
    BadVersion {
        /// Where.
        location: Location,
        /// The value found.
        found: String,
        /// What is allowed.
        expected: &'static str,
    },
    /// `PayloadScope` is neither `System` nor `User`.
    #[error("profile: PayloadScope must be \"System\" or \"User\", not {0:?}")]
    BadScope(String),
    /// An entry of `PayloadContent` is not a dictionary.
    #[error("payload {position}: must be a dictionary, not {found}")]
    PayloadNotDictionary {
        /// Its position, counting from 1.
        position: usize,
        /// The type it has.
        found: &'static str,
    },
    /// Two payloads share a `PayloadIdentifier`.
    #[error("payloads {first} and {second} have the same PayloadIdentifier {identifier:?}")]
    DuplicateIdentifier {
        /// Position of the first, counting from 1.
        first: usize,
        /// Position of the second.
        second: usize,
        /// The identifier.
        identifier: String,
    },
    /// Two payloads share a `PayloadUUID` (compared case-insensitively).
    #[error("payloads {first} and {second} have the same PayloadUUID {uuid:?}")]
    DuplicateUuid {
        /// Position of the first, counting from 1.
        first: usize,
        /// Position of the second.
        second: usize,
        /// The UUID as the second one spells it.
        uuid: String,
    },
}

/// `PayloadScope`: where macOS installs a profile when the user installs it by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayloadScope {
    /// The whole computer.
    System,
    /// The user who installs it (needs a user channel when delivered by MDM).
    User,
}

pub use super::bounded_plist::PlistFormat;

/// The certificate that signed a signed profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signer {
    /// Its subject, e.g. `CN=Example Signer, O=Example Inc.`.
    pub subject: String,
    /// Its issuer, in the same form.
    pub issuer: String,
}

/// One entry of `PayloadContent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadSummary {
    /// `PayloadType`, e.g. `com.apple.wifi.managed`.
    #[serde(rename = "type")]
    pub payload_type: String,
    /// `PayloadIdentifier`.
    pub identifier: String,
    /// `PayloadUUID`.
    pub uuid: String,
    /// `PayloadDisplayName`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// What a valid profile says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileInfo {
    /// Top-level `PayloadIdentifier`: a device replaces an installed profile with the same one.
    pub identifier: String,
    /// Top-level `PayloadUUID`.
    pub uuid: String,
    /// `PayloadDisplayName`.
    pub display_name: Option<String>,
    /// `PayloadDescription`.
    pub description: Option<String>,
    /// `PayloadOrganization`.
    pub organization: Option<String>,
    /// `PayloadScope` as written (absent: `None`).
    pub scope: Option<PayloadScope>,
    /// `PayloadScope` is `User`: it goes to a user channel, and cannot gate the release of a
    /// device in Setup Assistant (`docs/protocol.md#setup-assistant-and-release`).
    pub user_scoped: bool,
    /// `PayloadRemovalDisallowed` (absent: false).
    pub removal_disallowed: bool,
    /// The property list's encoding (inside the signature, for a signed profile).
    pub format: PlistFormat,
    /// Whether the profile is CMS-signed.
    pub signed: bool,
    /// Who signed it (not necessarily anyone trusted).
    pub signer: Option<Signer>,
    /// The entries of `PayloadContent`, in order.
    pub payloads: Vec<PayloadSummary>,
}

/// Validate an uploaded `.mobileconfig` within the default [`PlistLimits`] and describe it.
/// Never panics, whatever the bytes.
pub fn validate(bytes: &[u8]) -> Result<ProfileInfo, InvalidProfile> {
    validate_with(bytes, &PlistLimits::default())
}

/// [`validate`] within `limits`.
pub fn validate_with(bytes: &[u8], limits: &PlistLimits) -> Result<ProfileInfo, InvalidProfile> {
    if bytes.is_empty() {
        return Err(InvalidProfile::Empty);
    }
    let (content, signer) = if looks_like_cms(bytes) {
        let (content, signer) = unwrap_signed(bytes)?;
        (Cow::Owned(content), Some(signer))
    } else {
        (Cow::Borrowed(bytes), None)
    };
    let (value, format) = parse_plist(&content, limits)?;
    describe(value, format, signer)
}

/// `InstallProfile` delivering `profile` (the exact uploaded bytes, signed or not) as its
/// `Payload`.
pub fn install_profile_command(command_uuid: impl Into<String>, profile: &[u8]) -> Command {
    let mut p = Dictionary::new();
    p.insert("Payload".into(), Value::Data(profile.to_vec()));
    Command::build(command_uuid, "InstallProfile", p)
}

/// `RemoveProfile` for the profile whose top-level `PayloadIdentifier` is `identifier`.
pub fn remove_profile_command(command_uuid: impl Into<String>, identifier: &str) -> Command {
    let mut p = Dictionary::new();
    p.insert("Identifier".into(), identifier.into());
    Command::build(command_uuid, "RemoveProfile", p)
}

/// A DER/BER SEQUENCE with a long-form or indefinite length: a CMS ContentInfo, never a plist
/// (XML starts with `<`, a BOM or whitespace; binary with `bplist`).
fn looks_like_cms(bytes: &[u8]) -> bool {
    bytes.len() > 1 && bytes[0] == 0x30 && bytes[1] >= 0x80
}

fn openssl_reason(e: &openssl::error::ErrorStack) -> String {
    let reasons: Vec<String> = e
        .errors()
        .iter()
        .map(|e| e.reason().map_or_else(|| e.to_string(), str::to_owned))
        .collect();
    if reasons.is_empty() {
        "unknown OpenSSL error".into()
    } else {
        reasons.join("; ")
    }
}

/// Verify the signature (not the signer's trust) and return the content and its signer.
fn unwrap_signed(bytes: &[u8]) -> Result<(Vec<u8>, Signer), InvalidProfile> {
    let sig = |e: &openssl::error::ErrorStack| InvalidProfile::Signature(openssl_reason(e));
    let p7 = Pkcs7::from_der(bytes).map_err(|e| {
        InvalidProfile::Signature(format!(
            "not a CMS structure ({}); upload the .mobileconfig as XML, binary or DER-signed",
            openssl_reason(&e)
        ))
    })?;
    let kind = p7.type_().map(|t| t.nid());
    if kind != Some(Nid::PKCS7_SIGNED) {
        let name = kind
            .and_then(|n| n.long_name().ok())
            .unwrap_or("an unknown type");
        return Err(InvalidProfile::Signature(format!(
            "the CMS structure is {name}, not signed data"
        )));
    }
    // PKCS7_get0_signers and PKCS7_verify dereference the content; refuse a detached signature
    // before asking them.
    if !has_attached_content(&p7) {
        return Err(InvalidProfile::Detached);
    }
    let none = Stack::new().map_err(|e| sig(&e))?;
    let signers = p7
        .signers(&none, Pkcs7Flags::empty())
        .map_err(|e| sig(&e))?;
    let cert = signers
        .iter()
        .next()
        .ok_or_else(|| InvalidProfile::Signature("no signer certificate".into()))?;
    let signer = Signer {
        subject: name_string(cert.subject_name()),
        issuer: name_string(cert.issuer_name()),
    };
    let store = X509StoreBuilder::new().map_err(|e| sig(&e))?.build();
    let mut content = Vec::new();
    p7.verify(
        &none,
        &store,
        None,
        Some(&mut content),
        Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY,
    )
    .map_err(|e| {
        InvalidProfile::Signature(format!(
            "the signature does not match the content ({})",
            openssl_reason(&e)
        ))
    })?;
    if content.is_empty() {
        return Err(InvalidProfile::Detached);
    }
    Ok((content, signer))
}

/// Whether a SignedData carries its content (`PKCS7_get_detached` is a macro over this field).
fn has_attached_content(p7: &Pkcs7) -> bool {
    use foreign_types::ForeignType as _;
    // SAFETY: `p7` is a live PKCS7 of type signed (checked by the caller), so `d.sign` points at
    // its PKCS7_SIGNED, whose `contents` is the encapsulated ContentInfo; its `d.ptr` is the
    // content when present. Nothing is written or freed.
    unsafe {
        let raw = p7.as_ptr();
        let signed = (*raw).d.sign;
        if signed.is_null() {
            return false;
        }
        let contents = (*signed).contents;
        !contents.is_null() && !(*contents).d.ptr.is_null()
    }
}

/// `CN=…, O=…` in certificate order.
fn name_string(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e
                .object()
                .nid()
                .short_name()
                .map_or_else(|_| e.object().to_string(), str::to_owned);
            let value = e
                .data()
                .to_string()
                .unwrap_or_else(|_| String::from_utf8_lossy(e.data().as_slice()).into_owned());
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parse the property list with the one bounded decoder ([`super::bounded_plist`]).
fn parse_plist(bytes: &[u8], limits: &PlistLimits) -> Result<(Value, PlistFormat), InvalidProfile> {
    bounded_plist::decode_with_format(bytes, limits).map_err(|e| match e {
        PlistError::Syntax { format, detail } => InvalidProfile::Plist {
            format: match format {
                PlistFormat::Xml => "XML",
                PlistFormat::Binary => "binary",
            },
            detail,
        },
        limit => InvalidProfile::Limit(limit),
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "an array",
        Value::Dictionary(_) => "a dictionary",
        Value::Boolean(_) => "a boolean",
        Value::Data(_) => "data",
        Value::Date(_) => "a date",
        Value::Real(_) => "a real",
        Value::Integer(_) => "an integer",
        Value::String(_) => "a string",
        Value::Uid(_) => "a UID",
        _ => "an unknown type",
    }
}

fn wrong(
    location: &Location,
    key: &'static str,
    expected: &'static str,
    v: &Value,
) -> InvalidProfile {
    InvalidProfile::WrongType {
        location: location.clone(),
        key,
        expected,
        found: kind(v),
    }
}

fn opt_string(
    d: &Dictionary,
    key: &'static str,
    at: &Location,
) -> Result<Option<String>, InvalidProfile> {
    match d.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(wrong(at, key, "a string", v)),
    }
}

fn required_string(
    d: &Dictionary,
    key: &'static str,
    at: &Location,
) -> Result<String, InvalidProfile> {
    let s = opt_string(d, key, at)?.ok_or_else(|| InvalidProfile::Missing {
        location: at.clone(),
        key,
    })?;
    if s.trim().is_empty() {
        return Err(InvalidProfile::EmptyString {
            location: at.clone(),
            key,
        });
    }
    Ok(s)
}

/// `PayloadVersion`: an integer; exactly 1 for the profile, at least 1 for a payload.
fn check_version(d: &Dictionary, at: &Location) -> Result<(), InvalidProfile> {
    let key = "PayloadVersion";
    let v = d.get(key).ok_or_else(|| InvalidProfile::Missing {
        location: at.clone(),
        key,
    })?;
    let Value::Integer(i) = v else {
        return Err(wrong(at, key, "an integer", v));
    };
    let n = i.as_signed();
    let (ok, expected) = match at {
        Location::Profile => (n == Some(1), "1"),
        Location::Payload { .. } => (n.is_some_and(|n| n >= 1), "a positive integer"),
    };
    if ok {
        return Ok(());
    }
    let found = n.map_or_else(
        || {
            i.as_unsigned()
                .map_or_else(|| "?".into(), |u| u.to_string())
        },
        |n| n.to_string(),
    );
    Err(InvalidProfile::BadVersion {
        location: at.clone(),
        found,
        expected,
    })
}

fn describe(
    value: Value,
    format: PlistFormat,
    signer: Option<Signer>,
) -> Result<ProfileInfo, InvalidProfile> {
    let Value::Dictionary(top) = value else {
        return Err(InvalidProfile::NotDictionary(kind(&value)));
    };
    let at = Location::Profile;
    let payload_type = required_string(&top, "PayloadType", &at)?;
    if payload_type != "Configuration" {
        return Err(InvalidProfile::NotConfiguration(payload_type));
    }
    if top.contains_key("EncryptedPayloadContent") && !top.contains_key("PayloadContent") {
        return Err(InvalidProfile::Encrypted);
    }
    let identifier = required_string(&top, "PayloadIdentifier", &at)?;
    let uuid = required_string(&top, "PayloadUUID", &at)?;
    check_version(&top, &at)?;
    let display_name = opt_string(&top, "PayloadDisplayName", &at)?;
    let description = opt_string(&top, "PayloadDescription", &at)?;
    let organization = opt_string(&top, "PayloadOrganization", &at)?;
    let scope = match opt_string(&top, "PayloadScope", &at)?.as_deref() {
        None => None,
        Some("System") => Some(PayloadScope::System),
        Some("User") => Some(PayloadScope::User),
        Some(other) => return Err(InvalidProfile::BadScope(other.to_owned())),
    };
    let removal_disallowed = match top.get("PayloadRemovalDisallowed") {
        None => false,
        Some(Value::Boolean(b)) => *b,
        Some(v) => return Err(wrong(&at, "PayloadRemovalDisallowed", "a boolean", v)),
    };
    let content = match top.get("PayloadContent") {
        None => {
            return Err(InvalidProfile::Missing {
                location: at,
                key: "PayloadContent",
            });
        }
        Some(Value::Array(a)) => a,
        Some(v) => return Err(wrong(&at, "PayloadContent", "an array", v)),
    };
    let mut payloads = Vec::with_capacity(content.len());
    let mut identifiers: HashMap<String, usize> = HashMap::new();
    let mut uuids: HashMap<String, usize> = HashMap::new();
    for (i, item) in content.iter().enumerate() {
        let position = i + 1;
        let Value::Dictionary(d) = item else {
            return Err(InvalidProfile::PayloadNotDictionary {
                position,
                found: kind(item),
            });
        };
        let untyped = Location::Payload {
            position,
            payload_type: None,
        };
        let payload_type = required_string(d, "PayloadType", &untyped)?;
        let at = Location::Payload {
            position,
            payload_type: Some(payload_type.clone()),
        };
        let identifier = required_string(d, "PayloadIdentifier", &at)?;
        let uuid = required_string(d, "PayloadUUID", &at)?;
        check_version(d, &at)?;
        let display_name = opt_string(d, "PayloadDisplayName", &at)?;
        if let Some(&first) = identifiers.get(&identifier) {
            return Err(InvalidProfile::DuplicateIdentifier {
                first,
                second: position,
                identifier,
            });
        }
        if let Some(&first) = uuids.get(&uuid.to_ascii_uppercase()) {
            return Err(InvalidProfile::DuplicateUuid {
                first,
                second: position,
                uuid,
            });
        }
        identifiers.insert(identifier.clone(), position);
        uuids.insert(uuid.to_ascii_uppercase(), position);
        payloads.push(PayloadSummary {
            payload_type,
            identifier,
            uuid,
            display_name,
        });
    }
    Ok(ProfileInfo {
        identifier,
        uuid,
        display_name,
        description,
        organization,
        user_scoped: scope == Some(PayloadScope::User),
        scope,
        removal_disallowed,
        format,
        signed: signer.is_some(),
        signer,
        payloads,
    })
}

#[cfg(test)]
#[path = "config_profile_tests.rs"]
mod tests;
