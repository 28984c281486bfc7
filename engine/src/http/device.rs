//! Device endpoints: check-ins and command reports, with identity extraction.
//!
//! - `PUT /mdm/checkin` — check-in messages (the profile's `CheckInURL`).
//! - `PUT /mdm/connect` — command reports (the profile's `ServerURL`).
//! - `PUT /mdm` — either, told apart by `Content-Type: application/x-apple-aspen-mdm-checkin`.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use openssl::x509::X509;

use super::HttpState;
use super::status::{device_status, setup_progress_status};
use crate::mdm::gateway::{MAX_SETUP_PROGRESS_BODY, SetupProgressError};
use crate::mdm::{ClientCertificate, DeviceEndpoint, DeviceRequest, MdmError};
use crate::wire::client_cert;

/// Content type of check-in messages.
pub const CHECKIN_CONTENT_TYPE: &str = "application/x-apple-aspen-mdm-checkin";

/// A client certificate presented on the engine's own TLS listener (a request extension).
#[derive(Clone, Debug)]
pub struct PeerCertificate(pub X509);

pub(crate) fn routes(state: HttpState) -> Router {
    Router::new()
        .route("/mdm/checkin", put(checkin))
        .route("/mdm/connect", put(connect))
        .route("/mdm", put(either))
        .route("/mdm/setup", get(setup_status).post(setup_status))
        // The body is read with the configured cap in `handle`, so an oversized body is a 400
        // like any other unacceptable body.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn checkin(
    State(state): State<HttpState>,
    peer: Option<axum::Extension<PeerCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(
        &state,
        peer.map(|p| p.0),
        &headers,
        body,
        DeviceEndpoint::CheckIn,
    )
    .await
}

async fn connect(
    State(state): State<HttpState>,
    peer: Option<axum::Extension<PeerCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(
        &state,
        peer.map(|p| p.0),
        &headers,
        body,
        DeviceEndpoint::Report,
    )
    .await
}

async fn either(
    State(state): State<HttpState>,
    peer: Option<axum::Extension<PeerCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let is_checkin = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(CHECKIN_CONTENT_TYPE));
    let endpoint = if is_checkin {
        DeviceEndpoint::CheckIn
    } else {
        DeviceEndpoint::Report
    };
    handle(&state, peer.map(|p| p.0), &headers, body, endpoint).await
}

async fn handle(
    state: &HttpState,
    peer: Option<PeerCertificate>,
    headers: &HeaderMap,
    body: Body,
    endpoint: DeviceEndpoint,
) -> Response {
    let gateway = &state.gateway;
    let (body, result) = match axum::body::to_bytes(body, gateway.max_body_bytes()).await {
        Ok(body) => {
            let result = match client_certificate(state, peer, headers) {
                Ok(cert) => {
                    let request = device_request(&body, headers, cert.as_ref());
                    gateway.handle(endpoint, request).await
                }
                Err(e) => Err(e),
            };
            (body, result)
        }
        Err(_) => (Default::default(), Err(gateway.body_too_large())),
    };
    let response = match result {
        Ok(answer) => match answer.content_type() {
            Some(ct) => ([(header::CONTENT_TYPE, ct)], answer.into_body()).into_response(),
            None => StatusCode::OK.into_response(),
        },
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
    state.metrics.device_response(response.status().as_u16());
    response
}

/// The raw request for the gateway: the body, `Mdm-Signature` and the client certificate.
fn device_request<'a>(
    body: &'a [u8],
    headers: &'a HeaderMap,
    cert: Option<&'a ClientCertificate>,
) -> DeviceRequest<'a> {
    DeviceRequest {
        body,
        signature: headers.get("mdm-signature").map(|v| v.as_bytes()),
        client_certificate: cert,
    }
}

/// The client certificate outside the body: the TLS peer's, else the configured proxy header's
/// (the proxy guard already refused that header from untrusted peers). A present but unreadable
/// header is an error.
fn client_certificate(
    state: &HttpState,
    peer: Option<PeerCertificate>,
    headers: &HeaderMap,
) -> Result<Option<ClientCertificate>, MdmError> {
    if let Some(peer) = peer {
        return Ok(Some(ClientCertificate::Tls(peer.0)));
    }
    if let Some(name) = &state.options.client_cert_header
        && let Some(value) = headers.get(name)
    {
        let value = value
            .to_str()
            .map_err(|_| MdmError::BadRequest(format!("{name} header is not ASCII")))?;
        let der = client_cert::decode_client_cert_der(value)
            .map_err(|e| MdmError::BadRequest(format!("{name} header: {e}")))?;
        return Ok(Some(ClientCertificate::Forwarded(der)));
    }
    Ok(None)
}

/// `GET`/`POST /mdm/setup`: the setup progress of the device presenting the request, for a
/// progress window on the Mac to poll ([`crate::mdm::DeviceGateway::setup_progress`]).
async fn setup_status(
    State(state): State<HttpState>,
    peer: Option<axum::Extension<PeerCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(body) = axum::body::to_bytes(body, MAX_SETUP_PROGRESS_BODY).await else {
        return (StatusCode::BAD_REQUEST, "body is larger than 64 KiB").into_response();
    };
    let result = match client_certificate(&state, peer.map(|p| p.0), &headers) {
        Ok(cert) => {
            let request = device_request(&body, &headers, cert.as_ref());
            state.gateway.setup_progress(request).await
        }
        Err(e) => Err(SetupProgressError::Identity(e)),
    };
    match result {
        Ok(progress) => axum::Json(progress).into_response(),
        Err(e) => (setup_progress_status(&e), e.to_string()).into_response(),
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
