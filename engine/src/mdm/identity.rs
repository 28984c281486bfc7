//! Identity middleware: certificate chain verification and certificate ↔ enrollment pinning.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use openssl::x509::X509Ref;
use serde_json::json;

use super::{
    CheckinResponse, Identity, IdentityError, MdmError, MdmService, ReportResponse, Request,
};
use crate::ca::CertificateAuthority;
use crate::events::{Outbox, event, kind};
use crate::store::{
    CertHash, Emit, EnrollmentStore, IdentityStore, NewEvent, StoreError, Timestamp,
};
use crate::wire::checkin::CheckinBody;
use crate::wire::enrollment_id::EnrollmentId;
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

/// A verifier with a cache of certificates it accepted, by hash, until they expire.
///
/// Shared by the HTTP adapter (which verifies the chain before it parses a body) and the
/// [`VerifyIdentity`] middleware, so the second check of a request is a map lookup.
pub struct CachedVerifier {
    verifier: Arc<dyn IdentityVerifier>,
    verified: Mutex<HashMap<CertHash, i64>>,
}

impl CachedVerifier {
    /// Cache what `verifier` accepts.
    pub fn new(verifier: Arc<dyn IdentityVerifier>) -> Self {
        Self {
            verifier,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok` if `cert` (whose DER hashes to `hash`) is a trusted device identity at `now` (unix
    /// seconds).
    pub fn check(&self, cert: &X509Ref, hash: &CertHash, now: i64) -> Result<(), IdentityError> {
        if let Some(&not_after) = self.verified.lock().expect("cache lock").get(hash)
            && now < not_after
        {
            return Ok(());
        }
        self.verifier
            .verify(cert)
            .map_err(IdentityError::Untrusted)?;
        let not_after = not_after_unix(cert).unwrap_or(now + 3600);
        let mut cache = self.verified.lock().expect("cache lock");
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(*hash, not_after);
        Ok(())
    }
}

/// Middleware: the presented certificate must chain to the trusted CA and be valid now.
///
/// Successful verifications are cached by certificate hash until the certificate expires.
pub struct VerifyIdentity<S> {
    inner: S,
    verifier: Arc<CachedVerifier>,
}

impl<S> VerifyIdentity<S> {
    /// Wrap `inner`, trusting what `verifier` accepts.
    pub fn new(inner: S, verifier: Arc<dyn IdentityVerifier>) -> Self {
        Self::shared(inner, Arc::new(CachedVerifier::new(verifier)))
    }

    /// Wrap `inner`, sharing a verifier cache with other callers.
    pub fn shared(inner: S, verifier: Arc<CachedVerifier>) -> Self {
        Self { inner, verifier }
    }

    fn check(&self, req: &Request) -> Result<(), MdmError> {
        let identity = req.identity.as_ref().ok_or(IdentityError::Missing)?;
        self.verifier.check(
            &identity.cert,
            &identity.hash,
            req.received_at.unix_timestamp(),
        )?;
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
#[non_exhaustive]
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

    /// Hand events already committed with their state change to live subscribers.
    fn broadcast(&self, events: &[crate::store::Event]) {
        if let Some(outbox) = &self.outbox {
            outbox.broadcast(events);
        }
    }

    async fn publish(&self, e: NewEvent) {
        if let Some(outbox) = &self.outbox {
            let what = e.kind.clone();
            if let Err(err) = outbox.publish(vec![e]).await {
                tracing::warn!(%err, "could not record {what} event");
            }
        }
    }

    /// `Authenticate` on a device channel: pin the certificate, unless the enrollment is pinned
    /// to another one and there is no evidence for the change (see `docs/security.md`).
    async fn authenticate(&self, req: &Request, identity: &Identity) -> Result<(), MdmError> {
        let device = req.channel.device_id();
        let presented = identity.hash;
        let owner = self.store.cert_owner(&presented).await?;
        if let Some(owner) = &owner
            && owner != device
        {
            return Err(IdentityError::InUse(owner.to_string()).into());
        }
        let binding = self.store.cert_binding(&presented).await?;
        if let Some(b) = &binding
            && req.identifiers.udid.as_deref() != Some(b.udid.as_str())
        {
            self.refused(
                device,
                None,
                &presented,
                "the certificate was issued to another UDID",
            )
            .await;
            return Err(IdentityError::TakeoverRefused(format!(
                "certificate was issued for UDID {}, not this one",
                b.udid
            ))
            .into());
        }
        let pinned = match self.store.pinned_cert(device).await? {
            None => {
                self.store.pin_cert(device, &presented).await?;
                return Ok(());
            }
            Some(p) if p == presented => {
                // The same certificate again; if it had checked out, it is back, and the
                // checked-out mark must not let another certificate in later.
                if self.store.pin_released(device).await? {
                    self.store.pin_cert(device, &presented).await?;
                }
                return Ok(());
            }
            Some(p) => p,
        };
        if owner.is_some() {
            // A retired certificate of this enrollment: replaced, never taken back.
            self.refused(device, Some(&pinned), &presented, "retired certificate")
                .await;
            return Err(IdentityError::TakeoverRefused(
                "this certificate was replaced and is retired".into(),
            )
            .into());
        }
        let evidence = if binding.is_some() {
            "machine_info"
        } else if self.renews(&presented, &pinned).await? {
            "renewal"
        } else if self.store.pin_released(device).await? {
            "checked_out"
        } else if self
            .store
            .take_reenrollment_approval(device, req.received_at)
            .await?
        {
            "admin"
        } else if self.renewal == RenewalPolicy::Any {
            "renewal_policy_any"
        } else {
            self.refused(device, Some(&pinned), &presented, "no evidence")
                .await;
            return Err(IdentityError::TakeoverRefused(format!(
                "enrollment {device} belongs to another certificate; re-enrolling it needs signed \
                 MachineInfo, a CheckOut by that certificate, or an admin's approval"
            ))
            .into());
        };
        let reenrolled = Emit::events(vec![event(
            kind::IDENTITY_REENROLLED,
            Some(device),
            json!({
                "previous": pinned.to_hex(),
                "current": presented.to_hex(),
                "evidence": evidence,
                "escrow_cleared": evidence != "renewal",
            }),
        )]);
        // The new pin and its event commit together; a different holder loses the escrow.
        let events = if evidence == "renewal" {
            self.store
                .pin_cert_emitting(device, &presented, reenrolled)
                .await?
        } else {
            self.store
                .repin_cert_clearing_escrow(device, &presented, reenrolled)
                .await?
        };
        self.broadcast(&events);
        Ok(())
    }

    /// Whether `new` was issued by a SCEP renewal of `old` (directly or through a few renewals).
    async fn renews(&self, new: &CertHash, old: &CertHash) -> Result<bool, MdmError> {
        holds_through_renewals(&*self.store, new, old).await
    }

    async fn refused(
        &self,
        device: &EnrollmentId,
        pinned: Option<&CertHash>,
        presented: &CertHash,
        reason: &str,
    ) {
        tracing::warn!(enrollment = %device, reason, "identity takeover refused");
        self.publish(event(
            kind::IDENTITY_TAKEOVER_REFUSED,
            Some(device),
            json!({
                "pinned": pinned.map(CertHash::to_hex),
                "presented": presented.to_hex(),
                "reason": reason,
            }),
        ))
        .await;
    }

    async fn check(&self, req: &Request, authenticate: bool) -> Result<(), MdmError> {
        let identity = req.identity.as_ref().ok_or(IdentityError::Missing)?;
        let device = req.channel.device_id();
        if authenticate {
            return self.authenticate(req, identity).await;
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
        self.broadcast(&events);
        Ok(())
    }
}

/// Most renewal links followed back from a certificate.
const RENEWAL_DEPTH: usize = 16;

/// Whether `presented` is `holder` or was issued by a chain of SCEP renewals from it.
pub async fn holds_through_renewals(
    store: &dyn IdentityStore,
    presented: &CertHash,
    holder: &CertHash,
) -> Result<bool, MdmError> {
    let mut current = *presented;
    for _ in 0..=RENEWAL_DEPTH {
        if &current == holder {
            return Ok(true);
        }
        match store.renewed_from(&current).await? {
            Some(previous) => current = previous,
            None => return Ok(false),
        }
    }
    Ok(false)
}

#[async_trait]
impl<S: MdmService> MdmService for PinIdentity<S> {
    async fn checkin(
        &self,
        req: &Request,
        body: &CheckinBody,
    ) -> Result<CheckinResponse, MdmError> {
        let authenticate = matches!(body, CheckinBody::Authenticate(_));
        self.check(req, authenticate && req.channel.kind.is_device())
            .await?;
        let response = self.inner.checkin(req, body).await?;
        if matches!(body, CheckinBody::CheckOut) && req.channel.kind.is_device() {
            // Signed by the pinned certificate (checked above): the device left, and a new
            // certificate may enroll this UDID again.
            self.store.release_pin(&req.channel.id).await?;
        }
        Ok(response)
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

/// Errors approving a re-enrollment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalError {
    /// No such enrollment (404).
    #[error("unknown enrollment {0}")]
    UnknownEnrollment(String),
    /// A user channel: approve its device channel instead (400).
    #[error("{0} is a user channel; approve the device channel's re-enrollment")]
    NotDevice(String),
    /// The lifetime is zero or longer than allowed (400).
    #[error("ttl_secs must be between 1 and {max}")]
    BadTtl {
        /// Longest lifetime allowed.
        max: u64,
    },
    /// Storage failed (503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Default lifetime of an admin's re-enrollment approval: 24 hours.
pub const APPROVAL_TTL_SECS: u64 = 24 * 3600;
/// Longest lifetime of an admin's re-enrollment approval: 7 days.
pub const APPROVAL_MAX_TTL_SECS: u64 = 7 * 24 * 3600;

/// What a presented certificate is pinned to (see [`IdentityService::pinned_to`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PinnedTo {
    /// No enrollment has used it.
    Nothing,
    /// It was pinned once, then replaced by a renewal or a re-enrollment.
    Retired,
    /// The enrollment it is currently pinned to.
    Enrollment(EnrollmentId),
}

/// Admin decisions about device identities.
pub struct IdentityService {
    enrollments: Arc<dyn EnrollmentStore>,
    store: Arc<dyn IdentityStore>,
    outbox: Outbox,
}

impl IdentityService {
    /// The enrollment `id`, if there is one.
    pub async fn enrollment(
        &self,
        id: &EnrollmentId,
    ) -> Result<Option<crate::store::Enrollment>, StoreError> {
        self.enrollments.enrollment(id).await
    }

    /// A page of enrollments.
    pub async fn enrollments(
        &self,
        query: &crate::store::EnrollmentQuery,
    ) -> Result<Vec<crate::store::Enrollment>, StoreError> {
        self.enrollments.list_enrollments(query).await
    }

    /// A service over the stores.
    pub fn new(
        enrollments: Arc<dyn EnrollmentStore>,
        store: Arc<dyn IdentityStore>,
        outbox: Outbox,
    ) -> Self {
        Self {
            enrollments,
            store,
            outbox,
        }
    }

    /// The enrollment `hash` is currently pinned to. A certificate the owner table remembers but
    /// that a renewal or re-enrollment replaced is [`PinnedTo::Retired`].
    pub async fn pinned_to(&self, hash: &CertHash) -> Result<PinnedTo, StoreError> {
        let Some(owner) = self.store.cert_owner(hash).await? else {
            return Ok(PinnedTo::Nothing);
        };
        Ok(match self.store.pinned_cert(&owner).await? {
            Some(pinned) if pinned == *hash => PinnedTo::Enrollment(owner),
            _ => PinnedTo::Retired,
        })
    }

    /// Allow the next `Authenticate` of device enrollment `id` with a new certificate, once,
    /// within `ttl_secs` (default [`APPROVAL_TTL_SECS`]). The accepted re-enrollment clears what
    /// the previous certificate escrowed. Returns when the approval expires.
    pub async fn approve_reenrollment(
        &self,
        id: &EnrollmentId,
        ttl_secs: Option<u64>,
        now: Timestamp,
    ) -> Result<Timestamp, ApprovalError> {
        let ttl = ttl_secs.unwrap_or(APPROVAL_TTL_SECS);
        if ttl == 0 || ttl > APPROVAL_MAX_TTL_SECS {
            return Err(ApprovalError::BadTtl {
                max: APPROVAL_MAX_TTL_SECS,
            });
        }
        let enrollment = self
            .enrollments
            .enrollment(id)
            .await?
            .ok_or_else(|| ApprovalError::UnknownEnrollment(id.to_string()))?;
        if !enrollment.kind.is_device() {
            return Err(ApprovalError::NotDevice(id.to_string()));
        }
        let expires_at = now + time::Duration::seconds(ttl as i64);
        let e = event(
            kind::IDENTITY_REENROLL_APPROVED,
            Some(id),
            json!({"expires_at": expires_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()}),
        );
        let events = self
            .store
            .approve_reenrollment_emitting(id, expires_at, Emit::events(vec![e]))
            .await?;
        self.outbox.broadcast(&events);
        Ok(expires_at)
    }
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
