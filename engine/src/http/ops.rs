//! Operational endpoints: `GET /health`, `GET /version`, `GET /metrics` (no authentication).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::http::HttpState;
use crate::wire::enrollment_id::EnrollmentId;

pub(crate) fn routes(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// 200 when the store answers reads, 503 otherwise.
async fn health(State(state): State<HttpState>) -> impl IntoResponse {
    match state
        .identity
        .enrollment(&EnrollmentId::new("-health-"))
        .await
    {
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

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    use std::fmt::Write as _;
    let mut text = state.metrics.render();
    let _ = writeln!(
        text,
        "# HELP pomona_push_certificate_expiry_timestamp_seconds When each push certificate expires.\n# TYPE pomona_push_certificate_expiry_timestamp_seconds gauge"
    );
    let certs = state.apns.certificates();
    for c in &certs {
        let _ = writeln!(
            text,
            "pomona_push_certificate_expiry_timestamp_seconds{{topic=\"{}\"}} {}",
            c.topic, c.not_after_unix
        );
    }
    let _ = writeln!(
        text,
        "# HELP pomona_push_certificate_state 1 for each push certificate's current expiry state.\n# TYPE pomona_push_certificate_state gauge"
    );
    for c in &certs {
        let state = serde_json::to_value(c.state).unwrap_or_default();
        let _ = writeln!(
            text,
            "pomona_push_certificate_state{{topic=\"{}\",state={}}} 1",
            c.topic, state
        );
    }
    let _ = writeln!(
        text,
        "# HELP pomona_apns_circuit_open 1 while the APNs circuit breaker is open.\n# TYPE pomona_apns_circuit_open gauge\npomona_apns_circuit_open {}",
        u8::from(state.apns.is_circuit_open())
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
