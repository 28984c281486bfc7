//! Identity middleware: certificate chain verification and certificate ↔ enrollment pinning.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use openssl::x509::X509Ref;
use serde_json::json;

use super::{CheckinResponse, IdentityError, MdmError, MdmService, ReportResponse, Request};
use crate::ca::CertificateAuthority;
use crate::events::{Outbox, event, kind};
use crate::store::{CertHash, Emit, IdentityStore};
use crate::wire::checkin::CheckinBody;
use crate::wire::report::CommandReport;

/// Decides whether a presented device certificate is trusted.
pub trait IdentityVerifier: Send + Sync + 'static {
    /// `Ok` if `cert` is a valid device identity now; otherwise why not.
    fn verify(&self, cert: &X509Ref) -> Result<(), String>;
}

impl IdentityVerifier for CertificateAuthority {
    fn verify(&self, cert: &X509Ref) -> Result<(), String> {
        self.verify_device_cert(cert).map_err(|e| e.to_string())
    }
}

/// Most verified certificates remembered before the cache is reset.
const CACHE_LIMIT: usize = 100_000;

/// Middleware: the presented certificate must chain to the trusted CA and be valid now.
///
/// Successful verifications are cached by certificate hash until the certificate expires.
pub struct VerifyIdentity<S> {
    inner: S,
    verifier: Arc<dyn IdentityVerifier>,
    verified: Mutex<HashMap<CertHash, i64>>,
}

impl<S> VerifyIdentity<S> {
    /// Wrap `inner`, trusting what `verifier` accepts.
    pub fn new(inner: S, verifier: Arc<dyn IdentityVerifier>) -> Self {
        Self {
            inner,
            verifier,
            verified: Mutex::new(HashMap::new()),
        }
    }

    fn check(&self, req: &Request) -> Result<(), MdmError> {
        let identity = req.identity.as_ref().ok_or(IdentityError::Missing)?;
        let now = req.received_at.unix_timestamp();
        if let Some(&not_after) = self
            .verified
            .lock()
            .expect("cache lock")
            .get(&identity.hash)
            && now < not_after
        {
            return Ok(());
        }
        self.verifier
            .verify(&identity.cert)
            .map_err(IdentityError::Untrusted)?;
        let not_after = not_after_unix(&identity.cert).unwrap_or(now + 3600);
        let mut cache = self.verified.lock().expect("cache lock");
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(identity.hash, not_after);
        Ok(())
    }
}

fn not_after_unix(cert: &X509Ref) -> Option<i64> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let diff = epoch.diff(cert.not_after()).ok()?;
    Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

#[async_trait]
impl<S: MdmService> MdmService for VerifyIdentity<S> {
    async fn checkin(
        &self,
        req: &Request,
        body: &CheckinBody,
    ) -> Result<CheckinResponse, MdmError> {
        self.check(req)?;
        self.inner.checkin(req, body).await
    }

    async fn report(
        &self,
        req: &Request,
        report: &CommandReport,
    ) -> Result<ReportResponse, MdmError> {
        self.check(req)?;
        self.inner.report(req, report).await
    }
}

/// When a device presents a certificate other than the pinned one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RenewalPolicy {
    /// Accept only a certificate issued as a SCEP renewal of the pinned one (the default).
    #[default]
    Linked,
    /// Accept any trusted certificate no other enrollment has used (NanoMDM-compatible; anyone
    /// who can obtain a certificate from the CA can then claim an enrollment).
    Any,
}

/// Middleware: pin the certificate at `Authenticate`; afterwards, every message on the device's
/// channels must present the pinned certificate (or a recognised renewal of it).
pub struct PinIdentity<S> {
    inner: S,
    store: Arc<dyn IdentityStore>,
    renewal: RenewalPolicy,
    outbox: Option<Outbox>,
}

impl<S> PinIdentity<S> {
    /// Wrap `inner`.
    pub fn new(
        inner: S,
        store: Arc<dyn IdentityStore>,
        renewal: RenewalPolicy,
        outbox: Option<Outbox>,
    ) -> Self {
        Self {
            inner,
            store,
            renewal,
            outbox,
        }
    }

    async fn check(&self, req: &Request, authenticate: bool) -> Result<(), MdmError> {
        let identity = req.identity.as_ref().ok_or(IdentityError::Missing)?;
        let device = req.channel.device_id();
        if authenticate {
            match self.store.cert_owner(&identity.hash).await? {
                Some(owner) if &owner != device => {
                    return Err(IdentityError::InUse(owner.to_string()).into());
                }
                _ => {}
            }
            self.store.pin_cert(device, &identity.hash).await?;
            return Ok(());
        }
        let pinned = self
            .store
            .pinned_cert(device)
            .await?
            .ok_or_else(|| IdentityError::UnknownEnrollment(device.to_string()))?;
        if pinned == identity.hash {
            return Ok(());
        }
        let mismatch = || MdmError::from(IdentityError::Mismatch(device.to_string()));
        if self.store.cert_owner(&identity.hash).await?.is_some() {
            // Used before: by another enrollment, or a retired certificate of this one.
            return Err(mismatch());
        }
        let renews_pinned = self.store.renewed_from(&identity.hash).await? == Some(pinned);
        if !(renews_pinned || self.renewal == RenewalPolicy::Any) {
            return Err(mismatch());
        }
        let renewed = event(
            kind::IDENTITY_RENEWED,
            Some(device),
            json!({"previous": pinned.to_hex(), "current": identity.hash.to_hex()}),
        );
        let events = self
            .store
            .pin_cert_emitting(device, &identity.hash, Emit::events(vec![renewed]))
            .await?;
        if let Some(outbox) = &self.outbox {
            outbox.broadcast(&events);
        }
        Ok(())
    }
}

#[async_trait]
impl<S: MdmService> MdmService for PinIdentity<S> {
    async fn checkin(
        &self,
        req: &Request,
        body: &CheckinBody,
    ) -> Result<CheckinResponse, MdmError> {
        self.check(req, matches!(body, CheckinBody::Authenticate(_)))
            .await?;
        self.inner.checkin(req, body).await
    }

    async fn report(
        &self,
        req: &Request,
        report: &CommandReport,
    ) -> Result<ReportResponse, MdmError> {
        self.check(req, false).await?;
        self.inner.report(req, report).await
    }
}
