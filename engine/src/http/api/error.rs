//! JSON errors of the admin API: `{"error": "<precise message>"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

/// An admin API error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong API key (401).
    #[error(
        "missing or invalid API key: use 'Authorization: Bearer KEY' or HTTP Basic with the key as password"
    )]
    Unauthorized,
    /// No such resource (404).
    #[error("{0}")]
    NotFound(String),
    /// The resource exists already (409).
    #[error("{0}")]
    Conflict(String),
    /// An upstream service (Apple) failed (502).
    #[error("{0}")]
    Upstream(String),
    /// An internal failure that is not storage (500).
    #[error("{0}")]
    Internal(String),
    /// Storage failed (500, or 503 when the backend is unavailable).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Store(StoreError::Backend(_) | StoreError::Unavailable(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(err = %self, "admin API request failed");
        }
        let mut response = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer, Basic realm=\"pomona\""),
            );
        }
        response
    }
}

/// Admin API result alias.
pub type ApiResult<T> = Result<T, ApiError>;
