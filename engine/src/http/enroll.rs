//! Enrollment endpoints.
//!
//! - `GET /mdm/enroll[?token=…]`: the enrollment profile for a manual (OTA) download.
//! - `POST /mdm/enroll` with signed MachineInfo: Automated Device Enrollment (the DEP profile's
//!   `url`).
//! - `GET /mdm/enroll` with `x-apple-aspen-deviceinfo`: the web-view flow
//!   (`configuration_web_url`).
//!
//! Answers: the profile (`application/x-apple-aspen-config`); 403 with
//! `com.apple.softwareupdate.required` JSON when the device must update first; 403 for a wrong
//! enrollment token; 400 for unreadable or untrusted MachineInfo.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::enroll::{AutomatedAnswer, EnrollError};
use crate::http::HttpState;
use crate::wire::mobileconfig::CONTENT_TYPE;

/// Largest MachineInfo accepted.
const MAX_MACHINE_INFO: usize = 64 * 1024;

pub(crate) fn routes(state: HttpState) -> Router {
    Router::new()
        .route("/mdm/enroll", get(download).post(automated))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_MACHINE_INFO))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::rate_limit::limit_enroll,
        ))
        .with_state(state)
}

fn profile(body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, CONTENT_TYPE),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"pomona-enrollment.mobileconfig\"",
            ),
        ],
        body,
    )
        .into_response()
}

fn answer(result: Result<AutomatedAnswer, EnrollError>) -> Response {
    match result {
        Ok(AutomatedAnswer::Profile(p)) => profile(p),
        Ok(AutomatedAnswer::SoftwareUpdateRequired(json)) => (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response(),
        Err(e) => error(e),
    }
}

fn error(e: EnrollError) -> Response {
    let status = match &e {
        EnrollError::Forbidden => StatusCode::FORBIDDEN,
        EnrollError::MachineInfo(_) => StatusCode::BAD_REQUEST,
        EnrollError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        EnrollError::Profile(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::error!(err = %e, "enrollment failed");
    } else {
        tracing::warn!(err = %e, %status, "enrollment refused");
    }
    (status, e.to_string()).into_response()
}

async fn download(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(info) = headers.get("x-apple-aspen-deviceinfo") {
        let Ok(info) = info.to_str() else {
            return (
                StatusCode::BAD_REQUEST,
                "x-apple-aspen-deviceinfo is not ASCII",
            )
                .into_response();
        };
        return answer(state.enroll.automated_header(info).await);
    }
    match state
        .enroll
        .manual_profile(q.get("token").map(String::as_str))
        .await
    {
        Ok(p) => profile(p),
        Err(e) => error(e),
    }
}

async fn automated(State(state): State<HttpState>, body: Bytes) -> Response {
    answer(state.enroll.automated(&body).await)
}
