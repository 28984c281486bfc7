//! Operational endpoints: `GET /health`, `GET /version`, `GET /metrics` (no authentication).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::engine::EngineInner;
use crate::wire::enrollment_id::EnrollmentId;

pub(crate) fn routes(inner: Arc<EngineInner>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(inner)
}

/// 200 when the store answers reads, 503 otherwise.
async fn health(State(inner): State<Arc<EngineInner>>) -> impl IntoResponse {
    match inner.store.enrollment(&EnrollmentId::new("-health-")).await {
        Ok(_) => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "error": e.to_string()})),
        ),
    }
}

async fn version() -> Json<serde_json::Value> {
    Json(json!({"name": "pomona", "version": env!("CARGO_PKG_VERSION")}))
}

async fn metrics(State(inner): State<Arc<EngineInner>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        inner.metrics.render(),
    )
}
