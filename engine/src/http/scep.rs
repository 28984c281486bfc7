//! The SCEP endpoint: `GET|POST /scep?operation=…` (RFC 8894).
//!
//! - `GetCACaps` → text capabilities.
//! - `GetCACert` → the CA certificate (`application/x-x509-ca-cert`, DER).
//! - `PKIOperation` → a CertRep (`application/x-pki-message`); the request arrives as a POST
//!   body, or base64 in `message=` on GET (certmonger uses GET even when POST is advertised).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::collections::HashMap;

use crate::http::HttpState;
use crate::scep::ScepServiceError;

/// Largest PKIOperation accepted.
const MAX_MESSAGE: usize = 256 * 1024;

pub(crate) fn routes(state: HttpState) -> Router {
    Router::new()
        .route("/scep", get(scep).post(scep))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_MESSAGE))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::rate_limit::limit_scep,
        ))
        .with_state(state)
}

fn bad(message: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, message.into()).into_response()
}

async fn scep(
    State(state): State<HttpState>,
    method: Method,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let service = &state.scep;
    match q.get("operation").map(String::as_str) {
        Some("GetCACaps") => (
            [(header::CONTENT_TYPE, "text/plain")],
            service.capabilities(),
        )
            .into_response(),
        Some("GetCACert") => (
            [(header::CONTENT_TYPE, "application/x-x509-ca-cert")],
            service.ca_certificate_der(),
        )
            .into_response(),
        Some("PKIOperation") => {
            let message = if method == Method::POST {
                body.to_vec()
            } else {
                let Some(m) = q.get("message") else {
                    return bad("PKIOperation over GET needs a message parameter");
                };
                // Form decoding turns an unescaped '+' into a space; undo that.
                let compact: String = m
                    .chars()
                    .filter(|c| *c != '\n' && *c != '\r')
                    .map(|c| if c == ' ' { '+' } else { c })
                    .collect();
                match B64.decode(compact) {
                    Ok(m) => m,
                    Err(_) => return bad("PKIOperation message is not base64"),
                }
            };
            match service.pki_operation(&message).await {
                Ok(reply) => {
                    ([(header::CONTENT_TYPE, "application/x-pki-message")], reply).into_response()
                }
                Err(ScepServiceError::Message(e)) => {
                    tracing::warn!(err = %e, "unreadable SCEP message");
                    bad(e.to_string())
                }
                Err(ScepServiceError::Store(e)) => {
                    tracing::error!(err = %e, "SCEP storage failure");
                    (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
                }
            }
        }
        Some(other) => bad(format!("unknown SCEP operation {other:?}")),
        None => bad("missing SCEP operation parameter"),
    }
}
