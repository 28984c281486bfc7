//! Configuration-profile library endpoints under `/v1/profiles`.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::{ApiError, ApiResult};
use crate::http::HttpState;
use crate::profiles::{Change, ProfileLibraryError};
use crate::store::ProfileMeta;
use crate::wire::mobileconfig::CONTENT_TYPE;

fn not_found(name: &str) -> ApiError {
    ProfileLibraryError::NotFound(name.to_owned()).into()
}

/// `GET /v1/profiles`: every profile's metadata, by name.
pub async fn list(State(state): State<HttpState>) -> ApiResult<Response> {
    let profiles = state.profiles.list().await?;
    Ok(Json(json!({ "profiles": profiles })).into_response())
}

/// Whether `?download=` asks for the bytes; other query parameters are refused.
fn wants_download(query: &BTreeMap<String, String>) -> ApiResult<bool> {
    let mut download = false;
    for (k, v) in query {
        match (k.as_str(), v.as_str()) {
            ("download", "1" | "true") => download = true,
            ("download", "0" | "false") => download = false,
            ("download", _) => {
                return Err(ApiError::BadRequest(format!(
                    "download={v:?}: use download=1 for the .mobileconfig bytes"
                )));
            }
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter {k:?}: only download=1 is accepted"
                )));
            }
        }
    }
    Ok(download)
}

/// `GET /v1/profiles/{name}[?download=1]`: the metadata, or the exact uploaded bytes as
/// `application/x-apple-aspen-config`.
pub async fn get(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    let download = wants_download(&query)?;
    let profile = state
        .profiles
        .get(&name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    if !download {
        return Ok(Json(profile.meta).into_response());
    }
    let mut response = (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        profile.bytes,
    )
        .into_response();
    // Names are letters, digits, '-', '_' and '.', so both headers are always valid.
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}.mobileconfig\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", profile.meta.sha256)) {
        headers.insert(header::ETAG, v);
    }
    Ok(response)
}

fn with_change(meta: &ProfileMeta, change: Change) -> serde_json::Value {
    let mut v = serde_json::to_value(meta).unwrap_or_else(|_| json!({}));
    if let Some(o) = v.as_object_mut() {
        o.insert("change".into(), change.as_str().into());
    }
    v
}

/// `PUT /v1/profiles/{name}` with the `.mobileconfig` (XML, binary or CMS-signed) as the body:
/// 201 when created, 200 when replaced or unchanged, 400 with the validation message.
pub async fn put(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "empty body: send the .mobileconfig (XML, binary or CMS-signed) as the body".into(),
        ));
    }
    let outcome = state.profiles.put(&name, body.to_vec()).await?;
    let status = if outcome.change == Change::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(with_change(&outcome.meta, outcome.change))).into_response())
}

/// `DELETE /v1/profiles/{name}`: 204, or 404 if there is no such profile.
pub async fn delete(
    State(state): State<HttpState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    state.profiles.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
