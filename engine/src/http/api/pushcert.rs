//! Push certificates: `PUT /v1/pushcert`, `GET /v1/pushcert`.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use serde_json::json;

use super::error::{ApiError, ApiResult};
use crate::http::HttpState;
use crate::wire::apns::PushCertificate;

/// `PUT /v1/pushcert`: the PEM certificate followed by its unencrypted PEM key (NanoMDM's
/// format), or a PKCS#12 file with `?password=`. Answers `{"topic", "not_after", "state"}`.
pub(crate) async fn put(
    State(state): State<HttpState>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let cert = if body.starts_with(b"-----") || body.windows(10).any(|w| w == b"-----BEGIN") {
        PushCertificate::from_pem(&body)
    } else {
        PushCertificate::from_pkcs12(&body, q.get("password").map_or("", String::as_str))
    }
    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let info = state.apns.add_certificate(cert).await?;
    Ok(Json(json!({
        "topic": info.topic,
        "not_after": info.not_after,
        "state": info.state,
    })))
}

/// `GET /v1/pushcert`: the first certificate's topic and expiry, and all of them.
pub(crate) async fn get(State(state): State<HttpState>) -> ApiResult<Json<serde_json::Value>> {
    let certs = state.apns.certificates();
    let first = certs
        .first()
        .ok_or_else(|| ApiError::NotFound("no push certificate uploaded".into()))?;
    Ok(Json(json!({
        "topic": first.topic,
        "not_after": first.not_after,
        "state": first.state,
        "circuit_open": state.apns.is_circuit_open(),
        "certificates": certs,
    })))
}
