//! Declarative Device Management responses until declarations are managed by the engine.
//!
//! Pomona answers the DDM channel as a server with an empty declaration set: devices get a valid,
//! stable `tokens` document and an empty `declaration-items` manifest, status reports are
//! accepted, and any specific declaration is 404. This is a correct DDM conversation (nothing to
//! apply), never a crash or a 401.

use serde_json::json;

use super::{CheckinResponse, MdmError};
use crate::wire::checkin::DeclarativeManagement;

/// Token that identifies the (empty) declaration set; changes when declarations are added.
pub const EMPTY_DECLARATIONS_TOKEN: &str = "pomona-empty-declarations-v1";

/// Answer a `DeclarativeManagement` request.
pub fn respond(m: &DeclarativeManagement) -> Result<CheckinResponse, MdmError> {
    let doc = match m.endpoint.as_str() {
        "tokens" => json!({
            "SyncTokens": {
                "DeclarationsToken": EMPTY_DECLARATIONS_TOKEN,
                "Timestamp": "2024-01-01T00:00:00Z",
            }
        }),
        "declaration-items" => json!({
            "Declarations": {
                "Activations": [],
                "Assets": [],
                "Configurations": [],
                "Management": [],
            },
            "DeclarationsToken": EMPTY_DECLARATIONS_TOKEN,
        }),
        "status" => return Ok(CheckinResponse::Empty),
        other if other.starts_with("declaration/") => {
            return Err(MdmError::NotFound(format!("no declaration at {other}")));
        }
        other => {
            return Err(MdmError::BadRequest(format!(
                "unknown DeclarativeManagement endpoint {other:?}"
            )));
        }
    };
    Ok(CheckinResponse::Json(
        serde_json::to_vec(&doc).expect("JSON literals serialize"),
    ))
}
