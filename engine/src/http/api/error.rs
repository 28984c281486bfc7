//! JSON errors of the admin API: `{"error": "<precise message>"}`, and the one place where
//! service errors become admin API statuses (device-endpoint statuses: [`crate::http::status`]).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::dep::DepServiceError;
use crate::mdm::identity::ApprovalError;
use crate::policy::registry::RegistryError;
use crate::profiles::ProfileLibraryError;
use crate::push::apns::PushError;
use crate::setup::SetupError;
use crate::store::StoreError;
use crate::teams::TeamError;
use crate::webhooks::WebhookError;

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
            Self::Store(StoreError::Backend { .. } | StoreError::Unavailable { .. }) => {
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

impl From<DepServiceError> for ApiError {
    fn from(e: DepServiceError) -> Self {
        match e {
            DepServiceError::UnknownServer(_) | DepServiceError::UnknownProfile(_) => {
                Self::NotFound(e.to_string())
            }
            DepServiceError::Exists(_) => Self::Conflict(e.to_string()),
            DepServiceError::Invalid(_)
            | DepServiceError::KeyPair(_)
            | DepServiceError::StoredToken(_)
            | DepServiceError::WrongServer { .. }
            | DepServiceError::Token(_) => Self::BadRequest(e.to_string()),
            DepServiceError::Api(_) => Self::Upstream(e.to_string()),
            DepServiceError::Store(s) => Self::Store(s),
            DepServiceError::Seal(_) => Self::Internal(e.to_string()),
        }
    }
}

impl From<ApprovalError> for ApiError {
    fn from(e: ApprovalError) -> Self {
        match e {
            ApprovalError::UnknownEnrollment(_) => Self::NotFound(e.to_string()),
            ApprovalError::NotDevice(_) | ApprovalError::BadTtl { .. } => {
                Self::BadRequest(e.to_string())
            }
            ApprovalError::Store(s) => Self::Store(s),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound(_) => Self::NotFound(e.to_string()),
            RegistryError::Declared(_) => Self::Conflict(e.to_string()),
            RegistryError::InvalidName(_) | RegistryError::Plugin { .. } => {
                Self::BadRequest(e.to_string())
            }
            RegistryError::Io { .. } => Self::Internal(e.to_string()),
            RegistryError::Store(s) => Self::Store(s),
        }
    }
}

impl From<ProfileLibraryError> for ApiError {
    fn from(e: ProfileLibraryError) -> Self {
        match e {
            ProfileLibraryError::NotFound(_) => Self::NotFound(e.to_string()),
            ProfileLibraryError::InvalidName(_)
            | ProfileLibraryError::TooLarge { .. }
            | ProfileLibraryError::Invalid(_) => Self::BadRequest(e.to_string()),
            ProfileLibraryError::Store(s) => Self::Store(s),
        }
    }
}

/// Uploading a push certificate: storage failures are the server's, anything else (a
/// certificate APNs cannot use) the request's.
impl From<PushError> for ApiError {
    fn from(e: PushError) -> Self {
        match e {
            PushError::Store(s) => Self::Store(s),
            other => Self::BadRequest(other.to_string()),
        }
    }
}

impl From<SetupError> for ApiError {
    fn from(e: SetupError) -> Self {
        match e {
            SetupError::UnknownDevice(_) => Self::NotFound(e.to_string()),
            SetupError::NotEnrolled(_) => Self::Conflict(e.to_string()),
            SetupError::UnknownTeam(_) => Self::BadRequest(e.to_string()),
            SetupError::Store(s) => Self::Store(s),
        }
    }
}

impl From<TeamError> for ApiError {
    fn from(e: TeamError) -> Self {
        match e {
            TeamError::InvalidName(_) | TeamError::Invalid(_) => Self::BadRequest(e.to_string()),
            TeamError::NotFound(_) => Self::NotFound(e.to_string()),
            TeamError::Store(s) => Self::Store(s),
        }
    }
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::NotFound(_) => Self::NotFound(e.to_string()),
            WebhookError::Invalid(_) => Self::BadRequest(e.to_string()),
            WebhookError::Store(s) => Self::Store(s),
            WebhookError::Seal(_) | WebhookError::Client(_) => Self::Internal(e.to_string()),
        }
    }
}

/// Admin API result alias.
pub type ApiResult<T> = Result<T, ApiError>;
