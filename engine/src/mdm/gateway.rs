//! The device endpoint without HTTP: a raw device request in, the answer's bytes out.
//!
//! [`DeviceGateway`] is what the built-in HTTP adapter calls for `/mdm/checkin`, `/mdm/connect`,
//! `/mdm` and `/mdm/setup`, and what an embedder with its own HTTP stack calls instead: hand it
//! the body, the `Mdm-Signature` header's value and the client certificate (from your TLS
//! listener, or forwarded by your proxy), and send back what it answers. It enforces the
//! engine's body and plist limits and the order that keeps anonymous input cheap: **identity
//! first** (signature over the raw bytes and chain to the CA), and only then is the plist parsed.
//!
//! Verified certificates are cached by their DER's hash: a certificate enters the cache only
//! after its signature and chain verified, so anonymous requests cannot grow or evict it.

use std::sync::Arc;

use openssl::x509::X509;
use serde::Serialize;

use super::cert_cache::{CertCache, ParsedCert};
use super::identity::PinnedTo;
use super::{
    CachedVerifier, CheckinResponse, Identity, IdentityError, IdentityService, IdentitySource,
    MdmError, MdmService, Request,
};
use crate::metrics::Metrics;
use crate::store::{DeviceStore, SetupState, StepState, StoreError};
use crate::wire::bounded_plist::PlistLimits;
use crate::wire::checkin::CheckinMessage;
use crate::wire::cms;
use crate::wire::report::CommandReport;

/// Which device endpoint a request arrived at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceEndpoint {
    /// A check-in message (the enrollment profile's `CheckInURL`).
    CheckIn,
    /// A command report (the profile's `ServerURL`).
    Report,
}

/// A client certificate the device presented outside the request body.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientCertificate {
    /// Presented on a TLS connection your listener terminated (mutual TLS).
    Tls(X509),
    /// DER forwarded by a TLS-terminating proxy you trust (decode the proxy's header yourself;
    /// believe it only from the proxy).
    Forwarded(Vec<u8>),
}

/// One raw device request.
#[derive(Debug, Clone, Copy)]
pub struct DeviceRequest<'a> {
    /// The request body as received.
    pub body: &'a [u8],
    /// The `Mdm-Signature` header's value as received, if present.
    pub signature: Option<&'a [u8]>,
    /// The client certificate, if one was presented outside the body.
    pub client_certificate: Option<&'a ClientCertificate>,
}

impl<'a> DeviceRequest<'a> {
    /// A request with this body and no identity yet.
    pub fn new(body: &'a [u8]) -> Self {
        Self {
            body,
            signature: None,
            client_certificate: None,
        }
    }

    /// With the `Mdm-Signature` header's value.
    pub fn signature(mut self, value: &'a [u8]) -> Self {
        self.signature = Some(value);
        self
    }

    /// With a client certificate.
    pub fn client_certificate(mut self, cert: &'a ClientCertificate) -> Self {
        self.client_certificate = Some(cert);
        self
    }
}

/// What to send back to the device (status 200).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceResponse {
    /// An empty body.
    Empty,
    /// A plist (`application/xml`): a command, or a check-in answer.
    Plist(Vec<u8>),
    /// JSON (`application/json`): a Declarative Management answer.
    Json(Vec<u8>),
}

impl DeviceResponse {
    /// The `Content-Type` to send, if there is a body.
    pub fn content_type(&self) -> Option<&'static str> {
        match self {
            Self::Empty => None,
            Self::Plist(_) => Some("application/xml"),
            Self::Json(_) => Some("application/json"),
        }
    }

    /// The body (empty for [`DeviceResponse::Empty`]).
    pub fn into_body(self) -> Vec<u8> {
        match self {
            Self::Empty => Vec::new(),
            Self::Plist(b) | Self::Json(b) => b,
        }
    }
}

/// The setup progress of the device presenting a request (`/mdm/setup`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SetupProgress {
    /// `none`, `running`, `held` or `released`.
    pub state: &'static str,
    /// Why it is held or how it was released.
    pub detail: Option<String>,
    /// Its setup steps.
    pub steps: Vec<SetupStepProgress>,
}

/// One step of [`SetupProgress`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SetupStepProgress {
    /// The step.
    pub id: String,
    /// Whether release waits for it.
    pub required: bool,
    /// Its status.
    pub status: StepState,
}

/// Why a setup-progress request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupProgressError {
    /// No identity was presented (403).
    #[error(
        "present the device identity: Mdm-Signature, a TLS client certificate or the proxy header"
    )]
    NoIdentity,
    /// The presented identity is malformed or untrusted (400).
    #[error(transparent)]
    Identity(MdmError),
    /// The certificate is not pinned to an enrollment (403).
    #[error("this certificate is not pinned to an enrollment")]
    NotPinned,
    /// The certificate was replaced by a renewal or a re-enrollment (403).
    #[error("this certificate was replaced and is retired")]
    Retired,
    /// Storage failed (503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Largest body accepted by [`DeviceGateway::setup_progress`].
pub const MAX_SETUP_PROGRESS_BODY: usize = 64 << 10;

/// The device side of the engine, free of any HTTP framework: see the [module docs](self).
///
/// ```no_run
/// # async fn demo(engine: pomona::Engine, body: Vec<u8>, signature: Option<String>)
/// # -> Result<(), pomona::mdm::MdmError> {
/// use pomona::mdm::gateway::{DeviceEndpoint, DeviceRequest};
///
/// // In your own HTTP handler for `PUT /mdm/checkin`:
/// let mut request = DeviceRequest::new(&body);
/// if let Some(sig) = &signature {
///     request = request.signature(sig.as_bytes());
/// }
/// let answer = engine
///     .device_gateway()
///     .handle(DeviceEndpoint::CheckIn, request)
///     .await?; // an error maps to a status: see `MdmError`
/// let content_type = answer.content_type();
/// let bytes = answer.into_body(); // send with status 200
/// # let _ = (content_type, bytes);
/// # Ok(()) }
/// ```
pub struct DeviceGateway {
    mdm: Arc<dyn MdmService>,
    verifier: Arc<CachedVerifier>,
    identity: Arc<IdentityService>,
    setups: Arc<dyn DeviceStore>,
    metrics: Arc<Metrics>,
    certs: CertCache,
    max_body_bytes: usize,
    plist_limits: PlistLimits,
}

impl DeviceGateway {
    /// A gateway in front of `mdm` (the full check-in chain), verifying identities with
    /// `verifier`, reading setups from `setups`.
    pub fn new(
        mdm: Arc<dyn MdmService>,
        verifier: Arc<CachedVerifier>,
        identity: Arc<IdentityService>,
        setups: Arc<dyn DeviceStore>,
        metrics: Arc<Metrics>,
        max_body_bytes: usize,
        plist_limits: PlistLimits,
    ) -> Self {
        Self {
            mdm,
            verifier,
            identity,
            setups,
            metrics,
            certs: CertCache::default(),
            max_body_bytes,
            plist_limits,
        }
    }

    /// Largest device request body accepted: read at most this many bytes (plus one, to notice
    /// an oversized body).
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// The limits every device plist is parsed with.
    pub fn plist_limits(&self) -> &PlistLimits {
        &self.plist_limits
    }

    /// The error for a body larger than [`DeviceGateway::max_body_bytes`] (or cut off).
    pub fn body_too_large(&self) -> MdmError {
        MdmError::BadRequest(format!(
            "body is larger than {} bytes or was cut off",
            self.max_body_bytes
        ))
    }

    /// Handle a check-in message or a command report: verify the identity, then parse and run
    /// it through the check-in chain. Map an error to a status with the rules documented on
    /// [`MdmError`].
    pub async fn handle(
        &self,
        endpoint: DeviceEndpoint,
        request: DeviceRequest<'_>,
    ) -> Result<DeviceResponse, MdmError> {
        if request.body.len() > self.max_body_bytes {
            return Err(self.body_too_large());
        }
        let received_at = time::OffsetDateTime::now_utc();
        let body = request.body;
        // Identity first: signature over the raw bytes and the chain to the CA. Nothing parses
        // the plist before both pass, and a request without identity is refused unparsed.
        let identity = self
            .identify(request, received_at.unix_timestamp())?
            .ok_or(IdentityError::Missing)?;
        let identity = Some(identity);
        match endpoint {
            DeviceEndpoint::CheckIn => {
                let msg = CheckinMessage::parse_with(body, &self.plist_limits)
                    .map_err(|e| MdmError::BadRequest(e.to_string()))?;
                self.metrics.checkin(msg.body.message_type());
                let req = Request {
                    identifiers: msg.identifiers,
                    channel: msg.channel,
                    identity,
                    raw: body.to_vec(),
                    received_at,
                };
                Ok(match self.mdm.checkin(&req, &msg.body).await? {
                    CheckinResponse::Empty => DeviceResponse::Empty,
                    CheckinResponse::Plist(p) => DeviceResponse::Plist(p),
                    CheckinResponse::Json(j) => DeviceResponse::Json(j),
                })
            }
            DeviceEndpoint::Report => {
                let report = CommandReport::parse_with(body, &self.plist_limits)
                    .map_err(|e| MdmError::BadRequest(e.to_string()))?;
                self.metrics.report(report.status);
                let req = Request {
                    identifiers: report.identifiers.clone(),
                    channel: report.channel.clone(),
                    identity,
                    raw: body.to_vec(),
                    received_at,
                };
                let response = self.mdm.report(&req, &report).await?;
                Ok(match response.next {
                    Some(cmd) => {
                        self.metrics.command_delivered();
                        DeviceResponse::Plist(cmd.raw)
                    }
                    None => DeviceResponse::Empty,
                })
            }
        }
    }

    /// The setup progress of the device presenting `request`, for a progress window on the Mac
    /// to poll (`/mdm/setup`).
    ///
    /// Authenticated like a check-in: the device's MDM identity certificate, presented as an
    /// `Mdm-Signature` over the body (empty for a `GET`), as the TLS client certificate, or
    /// forwarded by a proxy. The certificate must be the one pinned to an enrollment; the answer
    /// is that enrollment's setup only.
    pub async fn setup_progress(
        &self,
        request: DeviceRequest<'_>,
    ) -> Result<SetupProgress, SetupProgressError> {
        if request.body.len() > MAX_SETUP_PROGRESS_BODY {
            return Err(SetupProgressError::Identity(MdmError::BadRequest(
                "body is larger than 64 KiB".into(),
            )));
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let identity = self
            .identify(request, now)
            .map_err(SetupProgressError::Identity)?
            .ok_or(SetupProgressError::NoIdentity)?;
        // The owner table also remembers retired certificates (replaced by a renewal or a
        // re-enrollment): only the currently pinned one may read the setup.
        let owner = match self.identity.pinned_to(&identity.hash).await? {
            PinnedTo::Enrollment(id) => id,
            PinnedTo::Nothing => return Err(SetupProgressError::NotPinned),
            PinnedTo::Retired => return Err(SetupProgressError::Retired),
        };
        Ok(match self.setups.setup(owner.as_str()).await? {
            Some(s) => {
                let (state, detail) = match &s.state {
                    SetupState::Running => ("running", None),
                    SetupState::Held { reason, .. } => ("held", Some(reason.clone())),
                    SetupState::Released { reason, .. } => ("released", Some(reason.clone())),
                };
                SetupProgress {
                    state,
                    detail,
                    steps: s
                        .steps
                        .iter()
                        .map(|st| SetupStepProgress {
                            id: st.id.clone(),
                            required: st.required,
                            status: st.status,
                        })
                        .collect(),
                }
            }
            None => SetupProgress {
                state: "none",
                detail: None,
                steps: Vec::new(),
            },
        })
    }

    /// The identity a request presents: `Mdm-Signature`, else the client certificate. A present
    /// but invalid signature or certificate is an error, not "none".
    ///
    /// The certificate must chain to the engine's CA (at `now`, unix seconds); a certificate
    /// enters the decoded-certificate cache only after its signature and chain verified.
    pub fn identify(
        &self,
        request: DeviceRequest<'_>,
        now: i64,
    ) -> Result<Option<Identity>, MdmError> {
        if let Some(sig) = request.signature {
            let sig = std::str::from_utf8(sig)
                .ok()
                .filter(|s| s.is_ascii())
                .ok_or_else(|| MdmError::BadRequest("Mdm-Signature is not ASCII".into()))?;
            let der = cms::decode_signature_header(sig)
                .map_err(|e| MdmError::BadRequest(format!("Mdm-Signature: {e}")))?;
            let parsed = cms::DetachedSignature::parse(&der)
                .map_err(|e| MdmError::BadRequest(format!("Mdm-Signature: {e}")))?;
            let signer = match self.certs.cached(parsed.signer_cert_der) {
                Some(signer) => {
                    parsed
                        .verify(request.body, &signer.key)
                        .map_err(|e| MdmError::BadRequest(format!("Mdm-Signature: {e}")))?;
                    self.verifier.check(&signer.cert, &signer.hash, now)?;
                    signer
                }
                None => {
                    let signer = CertCache::decode(parsed.signer_cert_der)
                        .map_err(|e| MdmError::BadRequest(format!("Mdm-Signature: signer {e}")))?;
                    parsed
                        .verify(request.body, &signer.key)
                        .map_err(|e| MdmError::BadRequest(format!("Mdm-Signature: {e}")))?;
                    self.verifier.check(&signer.cert, &signer.hash, now)?;
                    self.certs.insert(signer)
                }
            };
            return Ok(Some(Identity::with_hash(
                signer.cert.clone(),
                signer.hash,
                IdentitySource::Signature,
            )));
        }
        match request.client_certificate {
            Some(ClientCertificate::Tls(cert)) => {
                let identity = Identity::new(cert.clone(), IdentitySource::Tls);
                self.verifier.check(&identity.cert, &identity.hash, now)?;
                Ok(Some(identity))
            }
            Some(ClientCertificate::Forwarded(der)) => {
                let cert = match self.certs.cached(der) {
                    Some(cert) => {
                        self.verifier.check(&cert.cert, &cert.hash, now)?;
                        cert
                    }
                    None => {
                        let cert: ParsedCert = CertCache::decode(der).map_err(|e| {
                            MdmError::BadRequest(format!("forwarded client certificate: {e}"))
                        })?;
                        self.verifier.check(&cert.cert, &cert.hash, now)?;
                        self.certs.insert(cert)
                    }
                };
                Ok(Some(Identity::with_hash(
                    cert.cert.clone(),
                    cert.hash,
                    IdentitySource::ProxyHeader,
                )))
            }
            None => Ok(None),
        }
    }

    /// How many verified certificates are cached.
    #[cfg(test)]
    pub(crate) fn cached_certificates(&self) -> usize {
        self.certs.len()
    }
}
