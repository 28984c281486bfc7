//! Enrollment: serving the MDM enrollment profile, manually (OTA download) and for Automated
//! Device Enrollment (signed MachineInfo).
//!
//! Each profile download mints a one-time SCEP challenge, so a leaked profile enrolls at most
//! one device and only within the challenge lifetime.

use std::sync::Arc;

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use serde_json::json;

use crate::ca::CertificateAuthority;
use crate::events::{Outbox, event, kind};
use crate::push::apns::ApnsPusher;
use crate::scep::ScepService;
use crate::store::{BindingSource, CertBinding, DeviceInfoStore, Emit, StoreError};
use crate::wire::machine_info::{
    self, DeviceTrust, MachineInfo, MachineInfoError, software_update_required_body, version_lt,
};
use crate::wire::mobileconfig::{EnrollmentProfile, MdmPayload, ProfileError, ScepPayload};

/// Topic used when no push certificate is configured (pushes cannot work until one is).
pub const PLACEHOLDER_TOPIC: &str = "com.apple.mgmt.External.pomona-no-push-certificate";

/// Errors serving an enrollment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollError {
    /// The download is gated by an enrollment token and the right one was not given (403).
    #[error("enrollment token missing or wrong")]
    Forbidden,
    /// The MachineInfo is unreadable or untrusted (400).
    #[error(transparent)]
    MachineInfo(#[from] MachineInfoError),
    /// Storage failed (503).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The profile could not be signed (500).
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

/// A signing identity for profiles.
#[derive(Clone)]
pub struct SigningIdentity {
    /// Signer certificate.
    pub cert: X509,
    /// Its key.
    pub key: PKey<Private>,
    /// Intermediates to include.
    pub chain: Vec<X509>,
}

impl std::fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningIdentity")
            .field("subject", &self.cert.subject_name())
            .finish_non_exhaustive()
    }
}

/// Enrollment settings.
#[derive(Debug)]
#[non_exhaustive]
pub struct EnrollOptions {
    /// Base URL devices use.
    pub public_url: String,
    /// APNs topic; default: the uploaded push certificate's, else [`PLACEHOLDER_TOPIC`].
    pub topic: Option<String>,
    /// Profile display name.
    pub display_name: String,
    /// Profile organization.
    pub organization: Option<String>,
    /// `PayloadIdentifier` prefix.
    pub identifier: String,
    /// Require `?token=` on manual downloads.
    pub token: Option<String>,
    /// Devices below this OS version are told to update before enrolling (ADE only).
    pub min_os_version: Option<String>,
    /// Build to offer with the minimum version.
    pub min_build_version: Option<String>,
    /// DER certificates of the server's TLS CA to install as trusted roots.
    pub trust_anchors_der: Vec<Vec<u8>>,
    /// Sign profiles with this identity.
    pub signing: Option<SigningIdentity>,
    /// Trust roots for MachineInfo signatures (Apple's device CA in production).
    pub device_trust: DeviceTrust,
}

impl EnrollOptions {
    /// Defaults for `public_url`: unsigned profiles, Apple's device CA.
    pub fn new(public_url: &str) -> Self {
        Self {
            public_url: public_url.trim_end_matches('/').to_owned(),
            topic: None,
            display_name: "Pomona MDM enrollment".into(),
            organization: None,
            identifier: "dev.pomona.enrollment".into(),
            token: None,
            min_os_version: None,
            min_build_version: None,
            trust_anchors_der: Vec::new(),
            signing: None,
            device_trust: DeviceTrust::apple(),
        }
    }
}

crate::setters::with_setters!(EnrollOptions {
    with_public_url => public_url: String,
    with_topic => topic: Option<String>,
    with_display_name => display_name: String,
    with_organization => organization: Option<String>,
    with_identifier => identifier: String,
    with_token => token: Option<String>,
    with_min_os_version => min_os_version: Option<String>,
    with_min_build_version => min_build_version: Option<String>,
    with_trust_anchors_der => trust_anchors_der: Vec<Vec<u8>>,
    with_signing => signing: Option<SigningIdentity>,
    with_device_trust => device_trust: DeviceTrust,
});

/// What to answer an automated enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AutomatedAnswer {
    /// The enrollment profile.
    Profile(Vec<u8>),
    /// HTTP 403 with this JSON: update the OS first.
    SoftwareUpdateRequired(Vec<u8>),
}

/// The enrollment service.
pub struct EnrollService {
    ca: Arc<CertificateAuthority>,
    scep: Arc<ScepService>,
    apns: Arc<ApnsPusher>,
    devices: Arc<dyn DeviceInfoStore>,
    outbox: Outbox,
    options: EnrollOptions,
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    openssl::memcmp::eq(
        &openssl::sha::sha256(a.as_bytes()),
        &openssl::sha::sha256(b.as_bytes()),
    )
}

impl EnrollService {
    /// An enrollment service.
    pub fn new(
        ca: Arc<CertificateAuthority>,
        scep: Arc<ScepService>,
        apns: Arc<ApnsPusher>,
        devices: Arc<dyn DeviceInfoStore>,
        outbox: Outbox,
        options: EnrollOptions,
    ) -> Self {
        Self {
            ca,
            scep,
            apns,
            devices,
            outbox,
            options,
        }
    }

    /// The profile for a manual (OTA) download; checks the enrollment token when one is set.
    pub async fn manual_profile(&self, token: Option<&str>) -> Result<Vec<u8>, EnrollError> {
        if let Some(expected) = &self.options.token
            && !token.is_some_and(|t| constant_time_eq(expected, t))
        {
            return Err(EnrollError::Forbidden);
        }
        self.profile(None).await
    }

    /// Answer an Automated Device Enrollment request carrying signed MachineInfo.
    pub async fn automated(&self, signed: &[u8]) -> Result<AutomatedAnswer, EnrollError> {
        let info = machine_info::verify_machine_info(signed, &self.options.device_trust)?;
        self.answer(info).await
    }

    /// The web-view flow: MachineInfo in the `x-apple-aspen-deviceinfo` header.
    pub async fn automated_header(&self, header: &str) -> Result<AutomatedAnswer, EnrollError> {
        let info = machine_info::verify_machine_info_header(header, &self.options.device_trust)?;
        self.answer(info).await
    }

    async fn answer(&self, info: MachineInfo) -> Result<AutomatedAnswer, EnrollError> {
        let now = time::OffsetDateTime::now_utc();
        let needs_update = match (&self.options.min_os_version, &info.os_version) {
            (Some(min), Some(have)) => info.can_request_software_update && version_lt(have, min),
            _ => false,
        };
        let e = event(
            kind::ENROLL_MACHINE_INFO,
            None,
            json!({
                "udid": info.udid,
                "serial_number": info.serial,
                "product": info.product,
                "os_version": info.os_version,
                "build_version": info.version,
                "software_update_required": needs_update,
            }),
        );
        let events = self
            .devices
            .record_machine_info(&info, now, Emit::events(vec![e]))
            .await?;
        self.outbox.broadcast(&events);
        if needs_update {
            let min = self.options.min_os_version.as_deref().unwrap_or_default();
            return Ok(AutomatedAnswer::SoftwareUpdateRequired(
                software_update_required_body(min, self.options.min_build_version.as_deref()),
            ));
        }
        // The challenge in this profile is bound to the verified UDID and serial, and so is the
        // certificate SCEP issues from it.
        let binding = CertBinding {
            udid: info.udid.clone(),
            serial: info.serial.clone(),
            source: BindingSource::MachineInfo,
        };
        Ok(AutomatedAnswer::Profile(
            self.profile(Some(&binding)).await?,
        ))
    }

    /// The APNs topic for profiles: configured, else the uploaded push certificate's, else a
    /// placeholder (with a warning: pushes cannot reach such devices).
    fn topic(&self) -> String {
        if let Some(t) = self
            .options
            .topic
            .clone()
            .or_else(|| self.apns.default_topic())
        {
            return t;
        }
        tracing::warn!("no push certificate uploaded: the profile carries a placeholder topic");
        PLACEHOLDER_TOPIC.into()
    }

    async fn profile(&self, binding: Option<&CertBinding>) -> Result<Vec<u8>, EnrollError> {
        let o = &self.options;
        let challenge = match binding {
            Some(b) => self.scep.mint_bound_challenge(b).await?,
            None => self.scep.mint_challenge().await?,
        };
        let ca_der = self
            .ca
            .certificate()
            .to_der()
            .expect("a loaded certificate re-encodes");
        let mut subject = vec![("CN".to_owned(), "Pomona device identity".to_owned())];
        if let Some(org) = &o.organization {
            subject.push(("O".to_owned(), org.clone()));
        }
        let profile = EnrollmentProfile {
            display_name: o.display_name.clone(),
            organization: o.organization.clone(),
            identifier_prefix: o.identifier.clone(),
            scep: ScepPayload {
                url: format!("{}/scep", o.public_url),
                challenge: Some(challenge),
                name: None,
                subject,
                key_size: 2048,
                ca_fingerprint_sha256: Some(openssl::sha::sha256(&ca_der).to_vec()),
                retries: Some(3),
                retry_delay: Some(10),
            },
            mdm: MdmPayload {
                server_url: format!("{}/mdm/connect", o.public_url),
                check_in_url: Some(format!("{}/mdm/checkin", o.public_url)),
                topic: self.topic(),
                sign_message: true,
                access_rights: 8191,
                check_out_when_removed: true,
                server_capabilities: MdmPayload::default_capabilities(),
            },
            trust_anchors_der: o.trust_anchors_der.clone(),
        };
        let xml = profile.to_plist();
        Ok(match &o.signing {
            Some(s) => crate::wire::mobileconfig::sign_profile(&xml, &s.cert, &s.key, &s.chain)?,
            None => xml,
        })
    }
}
