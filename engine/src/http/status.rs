//! The device-endpoint HTTP status policy (`docs/protocol.md#http-status-policy`), in one place.
//!
//! - 200: handled (empty body when there is nothing to send).
//! - 400: unparseable body, bad or missing signature, untrusted or mismatched certificate.
//! - 401: only a deliberate policy decision to unenroll ([`MdmError::Unenroll`]). Never by accident.
//! - 404: an unknown Declarative Management declaration.
//! - 410: `UserAuthenticate` declined.
//! - 503: storage unavailable (an I/O error such as a full disk) — the device retries.
//! - 500: a storage or sealing failure — transient from the device's view; it retries.

use http::StatusCode;

use crate::mdm::MdmError;
use crate::mdm::gateway::SetupProgressError;
use crate::store::StoreError;

/// The HTTP status a device gets for an error.
pub fn device_status(err: &MdmError) -> StatusCode {
    match err {
        MdmError::BadRequest(_) | MdmError::Identity(_) => StatusCode::BAD_REQUEST,
        MdmError::Declined => StatusCode::GONE,
        MdmError::NotFound(_) => StatusCode::NOT_FOUND,
        MdmError::Unenroll(_) => StatusCode::UNAUTHORIZED,
        MdmError::Store(StoreError::Backend { .. } | StoreError::Unavailable { .. }) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        MdmError::Store(_) | MdmError::Seal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The HTTP status of a refused `/mdm/setup` request: 403 without an identity or with one not
/// pinned (or retired), 400 for a malformed or untrusted identity, 503 when storage fails.
pub fn setup_progress_status(err: &SetupProgressError) -> StatusCode {
    match err {
        SetupProgressError::NoIdentity
        | SetupProgressError::NotPinned
        | SetupProgressError::Retired => StatusCode::FORBIDDEN,
        SetupProgressError::Identity(_) => StatusCode::BAD_REQUEST,
        SetupProgressError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdm::IdentityError;

    #[test]
    fn only_a_deliberate_decision_is_401() {
        let cases = [
            MdmError::BadRequest("x".into()),
            MdmError::Identity(IdentityError::Missing),
            MdmError::Identity(IdentityError::Untrusted("x".into())),
            MdmError::Identity(IdentityError::Mismatch("x".into())),
            MdmError::Identity(IdentityError::InUse("x".into())),
            MdmError::Identity(IdentityError::UnknownEnrollment("x".into())),
            MdmError::Identity(IdentityError::TakeoverRefused("x".into())),
            MdmError::Identity(IdentityError::NotEscrowHolder("x")),
            MdmError::Declined,
            MdmError::NotFound("x".into()),
            MdmError::Store(StoreError::backend("write", "disk")),
            MdmError::Store(StoreError::unavailable("disk full")),
            MdmError::Store(StoreError::DuplicateCommand("x".into())),
        ];
        for e in &cases {
            assert_ne!(device_status(e), StatusCode::UNAUTHORIZED, "{e}");
        }
        assert_eq!(
            device_status(&MdmError::Unenroll("policy".into())),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(device_status(&MdmError::Declined), StatusCode::GONE);
        assert_eq!(
            device_status(&MdmError::Store(StoreError::unavailable("full"))),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            device_status(&MdmError::Identity(IdentityError::Missing)),
            StatusCode::BAD_REQUEST
        );
    }
}
