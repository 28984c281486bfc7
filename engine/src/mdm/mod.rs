//! The MDM check-in and command protocol as a chain of middleware around one trait.
//!
//! The HTTP adapter parses a request into a [`Request`] plus either a
//! [`CheckinBody`] or a [`CommandReport`] and calls an [`MdmService`]. The default chain is
//!
//! ```text
//! VerifyIdentity (chain to the CA) → PinIdentity (certificate ↔ enrollment) → Core
//! ```
//!
//! Core writes each state change together with the events reporting it (built in [`observe`]) in
//! one store transaction, then broadcasts them.
//!
//! Each layer is an `MdmService` wrapping the next, so embedders and policy hooks add behaviour by
//! wrapping rather than by flags. The trait has two methods — check-in messages and command
//! reports — and a middleware that cares about one message type matches on [`CheckinBody`].

mod cert_cache;
pub mod commands;
pub mod core;
pub mod declarative;
pub mod gateway;
pub mod identity;
pub mod last_seen;
pub mod observe;
#[cfg(test)]
pub(crate) mod testing;

use async_trait::async_trait;
use openssl::x509::X509;

use crate::seal::SealError;
use crate::store::{CertHash, QueuedCommand, ReportOutcome, StoreError, Timestamp};
use crate::wire::checkin::CheckinBody;
use crate::wire::enrollment_id::{Channel, Identifiers};
use crate::wire::report::CommandReport;

pub use self::core::{Core, CoreOptions, UserAuthenticatePolicy};
pub use gateway::{
    ClientCertificate, DeviceEndpoint, DeviceGateway, DeviceRequest, DeviceResponse,
};
pub use identity::{CachedVerifier, IdentityService, PinIdentity, RenewalPolicy, VerifyIdentity};

/// The certificate a device presented (by `Mdm-Signature` or mutual TLS).
#[derive(Debug, Clone)]
pub struct Identity {
    /// The certificate.
    pub cert: X509,
    /// SHA-256 of its DER.
    pub hash: CertHash,
    /// How it was presented.
    pub source: IdentitySource,
}

impl Identity {
    /// Wrap a presented certificate whose DER hash is already known.
    pub fn with_hash(cert: X509, hash: CertHash, source: IdentitySource) -> Self {
        Self { cert, hash, source }
    }

    /// Wrap a presented certificate.
    pub fn new(cert: X509, source: IdentitySource) -> Self {
        let der = cert.to_der().expect("a parsed certificate re-encodes");
        Self {
            hash: CertHash::of_der(&der),
            cert,
            source,
        }
    }
}

/// How a device presented its identity certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentitySource {
    /// The `Mdm-Signature` header over the body.
    Signature,
    /// The engine's own TLS listener.
    Tls,
    /// A header set by a TLS-terminating reverse proxy.
    ProxyHeader,
    /// Supplied in-process by an embedder that authenticated the device itself.
    Embedder,
}

/// One device request, as the service chain sees it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The identifying keys of the message.
    pub identifiers: Identifiers,
    /// The channel they name.
    pub channel: Channel,
    /// The presented identity, if any.
    pub identity: Option<Identity>,
    /// The exact body.
    pub raw: Vec<u8>,
    /// When the request arrived.
    pub received_at: Timestamp,
}

/// What to send back for a check-in message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckinResponse {
    /// 200 with an empty body.
    Empty,
    /// 200 with an XML plist.
    Plist(Vec<u8>),
    /// 200 with a JSON document (Declarative Management).
    Json(Vec<u8>),
}

/// What to send back for a command report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportResponse {
    /// What recording the report did (`None` for `Idle`).
    pub outcome: Option<ReportOutcome>,
    /// The next command to deliver, if any.
    pub next: Option<QueuedCommand>,
}

/// Why a device's identity was refused. Always a 400 to the device, never a 401.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Neither `Mdm-Signature` nor a client certificate was presented.
    #[error("no device identity: send Mdm-Signature or use a client certificate")]
    Missing,
    /// The certificate does not chain to the engine's CA (or is expired, or not for client auth).
    #[error("device certificate not trusted: {0}")]
    Untrusted(String),
    /// `Authenticate` with a certificate already pinned to another enrollment.
    #[error("certificate is already associated with enrollment {0}")]
    InUse(String),
    /// The certificate is not the one pinned to this enrollment and is not a recognised renewal.
    #[error("certificate does not match the identity pinned to enrollment {0}")]
    Mismatch(String),
    /// `Authenticate` for an enrollment pinned to another certificate, without evidence that
    /// the new certificate belongs to the same device (see `docs/security.md`).
    #[error("re-enrollment refused: {0}")]
    TakeoverRefused(String),
    /// An escrowed secret was asked for by a certificate other than the one that escrowed it.
    #[error("{0} was escrowed by another certificate")]
    NotEscrowHolder(&'static str),
    /// A message other than `Authenticate` for a device that never authenticated.
    #[error("enrollment {0} is unknown: the device must Authenticate first")]
    UnknownEnrollment(String),
}

/// Errors from the check-in path.
///
/// The built-in HTTP adapter answers a device with 400 for [`MdmError::BadRequest`] and
/// [`MdmError::Identity`], 410 for [`MdmError::Declined`], 404 for [`MdmError::NotFound`], 401
/// only for [`MdmError::Unenroll`], 503 when storage is unavailable and 500 otherwise; an
/// embedder serving devices itself should do the same.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MdmError {
    /// The message is not acceptable (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The device identity was refused (400).
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// `UserAuthenticate` declined (410).
    #[error("user channel declined")]
    Declined,
    /// The requested resource does not exist (404), e.g. an unknown declaration.
    #[error("not found: {0}")]
    NotFound(String),
    /// A deliberate policy decision to unenroll the device (401).
    #[error("enrollment refused by policy: {0}")]
    Unenroll(String),
    /// Storage failed (500: the device retries).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored secret could not be unsealed (500).
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// The MDM protocol service: one method for check-in messages, one for command reports.
#[async_trait]
pub trait MdmService: Send + Sync + 'static {
    /// Handle a check-in message.
    async fn checkin(&self, req: &Request, body: &CheckinBody)
    -> Result<CheckinResponse, MdmError>;

    /// Handle a command report; returns the next command to deliver.
    async fn report(
        &self,
        req: &Request,
        report: &CommandReport,
    ) -> Result<ReportResponse, MdmError>;
}

#[async_trait]
impl<T: MdmService + ?Sized> MdmService for std::sync::Arc<T> {
    async fn checkin(
        &self,
        req: &Request,
        body: &CheckinBody,
    ) -> Result<CheckinResponse, MdmError> {
        (**self).checkin(req, body).await
    }

    async fn report(
        &self,
        req: &Request,
        report: &CommandReport,
    ) -> Result<ReportResponse, MdmError> {
        (**self).report(req, report).await
    }
}
