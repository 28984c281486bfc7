//! Device endpoints: check-ins and command reports, with identity extraction.
//!
//! - `PUT /mdm/checkin` — check-in messages (the profile's `CheckInURL`).
//! - `PUT /mdm/connect` — command reports (the profile's `ServerURL`).
//! - `PUT /mdm` — either, told apart by `Content-Type: application/x-apple-aspen-mdm-checkin`.

use std::sync::Arc;

use axum::Router;

use crate::store::SetupState;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use openssl::x509::X509;
use serde_json::json;

use super::cert_cache::{CertCache, ParsedCert};
use super::status::device_status;
use crate::engine::EngineInner;
use crate::mdm::identity::PinnedTo;
use crate::mdm::{CheckinResponse, Identity, IdentityError, IdentitySource, MdmError, Request};
use crate::wire::checkin::CheckinMessage;
use crate::wire::client_cert;
use crate::wire::cms;
use crate::wire::report::CommandReport;

/// Content type of check-in messages.
pub const CHECKIN_CONTENT_TYPE: &str = "application/x-apple-aspen-mdm-checkin";

/// A client certificate presented on the engine's own TLS listener (a request extension).
#[derive(Clone, Debug)]
pub struct PeerCertificate(pub X509);

pub(crate) fn routes(inner: Arc<EngineInner>) -> Router {
    Router::new()
        .route("/mdm/checkin", put(checkin))
        .route("/mdm/connect", put(connect))
        .route("/mdm", put(either))
        .route("/mdm/setup", get(setup_status).post(setup_status))
        // The body is read with the configured cap in `handle`, so an oversized body is a 400
        // like any other unacceptable body.
        .layer(DefaultBodyLimit::disable())
        .with_state(inner)
}

async fn checkin(
    State(inner): State<Arc<EngineInner>>,
    peer: Option<axum::Extension<PeerCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(&inner, peer.map(|p| p.0), &headers, body, true).await
}

async fn connect(
    State(inner): State<Arc<EngineInner>>,
    peer: Option<axum::Extension<PeerCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(&inner, peer.map(|p| p.0), &headers, body, false).await
}

async fn either(
    State(inner): State<Arc<EngineInner>>,
    peer: Option<axum::Extension<PeerCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let is_checkin = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(CHECKIN_CONTENT_TYPE));
    handle(&inner, peer.map(|p| p.0), &headers, body, is_checkin).await
}

async fn handle(
    inner: &EngineInner,
    peer: Option<PeerCertificate>,
    headers: &HeaderMap,
    body: Body,
    is_checkin: bool,
) -> Response {
    let limit = inner.http.max_body_bytes;
    let (body, result) = match axum::body::to_bytes(body, limit).await {
        Ok(body) => {
            let result = dispatch(inner, peer, headers, &body, is_checkin).await;
            (body, result)
        }
        Err(_) => (
            Default::default(),
            Err(MdmError::BadRequest(format!(
                "body is larger than {limit} bytes or was cut off"
            ))),
        ),
    };
    let response = match result {
        Ok(r) => r,
        Err(err) => {
            let status = device_status(&err);
            let body_sha256 = hex::encode(openssl::sha::sha256(&body));
            let signature = headers
                .get("mdm-signature")
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(64).collect::<String>());
            if status.is_server_error() {
                tracing::error!(%err, %status, body_sha256, "device request failed");
            } else {
                tracing::warn!(%err, %status, body_sha256, ?signature, "device request refused");
            }
            (status, err.to_string()).into_response()
        }
    };
    inner.metrics.device_response(response.status().as_u16());
    response
}

async fn dispatch(
    inner: &EngineInner,
    peer: Option<PeerCertificate>,
    headers: &HeaderMap,
    body: &[u8],
    is_checkin: bool,
) -> Result<Response, MdmError> {
    let received_at = time::OffsetDateTime::now_utc();
    // Identity first: signature over the raw bytes and the chain to the CA. Nothing parses the
    // plist before both pass, and a request without identity is refused unparsed.
    let identity = identity(inner, peer, headers, body, received_at.unix_timestamp())?
        .ok_or(IdentityError::Missing)?;
    let identity = Some(identity);
    if is_checkin {
        let msg = CheckinMessage::parse_with(body, &inner.http.plist_limits)
            .map_err(|e| MdmError::BadRequest(e.to_string()))?;
        inner.metrics.checkin(msg.body.message_type());
        let req = Request {
            identifiers: msg.identifiers,
            channel: msg.channel,
            identity,
            raw: body.to_vec(),
            received_at,
        };
        let response = inner.mdm.checkin(&req, &msg.body).await?;
        Ok(match response {
            CheckinResponse::Empty => StatusCode::OK.into_response(),
            CheckinResponse::Plist(p) => {
                ([(header::CONTENT_TYPE, "application/xml")], p).into_response()
            }
            CheckinResponse::Json(j) => {
                ([(header::CONTENT_TYPE, "application/json")], j).into_response()
            }
        })
    } else {
        let report = CommandReport::parse_with(body, &inner.http.plist_limits)
            .map_err(|e| MdmError::BadRequest(e.to_string()))?;
        inner.metrics.report(report.status);
        let req = Request {
            identifiers: report.identifiers.clone(),
            channel: report.channel.clone(),
            identity,
            raw: body.to_vec(),
            received_at,
        };
        let response = inner.mdm.report(&req, &report).await?;
        Ok(match response.next {
            Some(cmd) => {
                inner.metrics.command_delivered();
                ([(header::CONTENT_TYPE, "application/xml")], cmd.raw).into_response()
            }
            None => StatusCode::OK.into_response(),
        })
    }
}

/// `GET`/`POST /mdm/setup`: the setup progress of the device presenting the request, for a
/// progress window on the Mac to poll.
///
/// Authenticated like a check-in: the device's MDM identity certificate, presented as an
/// `Mdm-Signature` over the request body (an empty body for `GET`), as the TLS client
/// certificate, or in the configured proxy header. The certificate must be the one pinned to an
/// enrollment; the answer is that enrollment's setup only.
async fn setup_status(
    State(inner): State<Arc<EngineInner>>,
    peer: Option<axum::Extension<PeerCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(body) = axum::body::to_bytes(body, 64 << 10).await else {
        return (StatusCode::BAD_REQUEST, "body is larger than 64 KiB").into_response();
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let identity = match identity(&inner, peer.map(|p| p.0), &headers, &body, now) {
        Ok(Some(i)) => i,
        Ok(None) => {
            return (
                StatusCode::FORBIDDEN,
                "present the device identity: Mdm-Signature, a TLS client certificate or the proxy header",
            )
                .into_response();
        }
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    // The owner table also remembers retired certificates (replaced by a renewal or a
    // re-enrollment): only the currently pinned one may read the setup.
    let owner = match inner.identity.pinned_to(&identity.hash).await {
        Ok(PinnedTo::Enrollment(id)) => id,
        Ok(PinnedTo::Nothing) => {
            return (
                StatusCode::FORBIDDEN,
                "this certificate is not pinned to an enrollment",
            )
                .into_response();
        }
        Ok(PinnedTo::Retired) => {
            return (
                StatusCode::FORBIDDEN,
                "this certificate was replaced and is retired",
            )
                .into_response();
        }
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    match inner.store.setup(owner.as_str()).await {
        Ok(Some(s)) => {
            let (state, detail) = match &s.state {
                SetupState::Running => ("running", None),
                SetupState::Held { reason, .. } => ("held", Some(reason.clone())),
                SetupState::Released { reason, .. } => ("released", Some(reason.clone())),
            };
            let steps: Vec<serde_json::Value> = s
                .steps
                .iter()
                .map(|st| json!({"id": st.id, "required": st.required, "status": st.status}))
                .collect();
            axum::Json(json!({ "state": state, "detail": detail, "steps": steps })).into_response()
        }
        Ok(None) => axum::Json(json!({"state": "none", "steps": []})).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// The identity a request presents: `Mdm-Signature`, then the TLS peer certificate, then the
/// configured proxy header. A present but invalid signature or header is an error, not "none".
///
/// The certificate must chain to the engine's CA (at `now`, unix seconds); a certificate enters
/// the decoded-certificate cache only after its signature and chain verified.
fn identity(
    inner: &EngineInner,
    peer: Option<PeerCertificate>,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Option<Identity>, MdmError> {
    if let Some(sig) = headers.get("mdm-signature") {
        let sig = sig
            .to_str()
            .map_err(|_| MdmError::BadRequest("Mdm-Signature is not ASCII".into()))?;
        let der = cms::decode_signature_header(sig)
            .map_err(|e| MdmError::BadRequest(format!("Mdm-Signature: {e}")))?;
        let parsed = cms::DetachedSignature::parse(&der)
            .map_err(|e| MdmError::BadRequest(format!("Mdm-Signature: {e}")))?;
        let signer = match inner.certs.cached(parsed.signer_cert_der) {
            Some(signer) => {
                parsed
                    .verify(body, &signer.key)
                    .map_err(|e| MdmError::BadRequest(format!("Mdm-Signature: {e}")))?;
                inner.verifier.check(&signer.cert, &signer.hash, now)?;
                signer
            }
            None => {
                let signer = CertCache::decode(parsed.signer_cert_der)
                    .map_err(|e| MdmError::BadRequest(format!("Mdm-Signature: signer {e}")))?;
                parsed
                    .verify(body, &signer.key)
                    .map_err(|e| MdmError::BadRequest(format!("Mdm-Signature: {e}")))?;
                inner.verifier.check(&signer.cert, &signer.hash, now)?;
                inner.certs.insert(signer)
            }
        };
        return Ok(Some(Identity::with_hash(
            signer.cert.clone(),
            signer.hash,
            IdentitySource::Signature,
        )));
    }
    if let Some(peer) = peer {
        let identity = Identity::new(peer.0, IdentitySource::Tls);
        inner.verifier.check(&identity.cert, &identity.hash, now)?;
        return Ok(Some(identity));
    }
    if let Some(name) = &inner.http.client_cert_header
        && let Some(value) = headers.get(name)
    {
        let value = value
            .to_str()
            .map_err(|_| MdmError::BadRequest(format!("{name} header is not ASCII")))?;
        let der = client_cert::decode_client_cert_der(value)
            .map_err(|e| MdmError::BadRequest(format!("{name} header: {e}")))?;
        let cert = match inner.certs.cached(&der) {
            Some(cert) => {
                inner.verifier.check(&cert.cert, &cert.hash, now)?;
                cert
            }
            None => {
                let cert: ParsedCert = CertCache::decode(&der)
                    .map_err(|e| MdmError::BadRequest(format!("{name} header: {e}")))?;
                inner.verifier.check(&cert.cert, &cert.hash, now)?;
                inner.certs.insert(cert)
            }
        };
        return Ok(Some(Identity::with_hash(
            cert.cert.clone(),
            cert.hash,
            IdentitySource::ProxyHeader,
        )));
    }
    Ok(None)
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
