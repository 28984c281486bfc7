//! The durable event outbox over HTTP.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, ApiResult};
use crate::http::HttpState;

/// `?after=SEQ&limit=N`
#[derive(Debug, Deserialize)]
pub(crate) struct Page {
    after: Option<u64>,
    limit: Option<usize>,
}

/// `GET /v1/events?after=SEQ&limit=N`: events with `seq > after`, oldest first; `next` is the
/// `after` to use for the following page.
pub(crate) async fn list(
    State(state): State<HttpState>,
    query: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Query(p) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let after = p.after.unwrap_or(0);
    let events = state
        .outbox
        .after(after, p.limit.unwrap_or(100).clamp(1, 1000))
        .await?;
    let next = events.last().map_or(after, |e| e.seq);
    Ok(Json(json!({ "events": events, "next": next })))
}
