//! JSON views of stored records (secrets never leave the engine).

use serde::Serialize;

use crate::store::{CommandRecord, DeviceFacts, Enrollment, PushInfo, Timestamp};
use crate::wire::bounded_plist::{self, PlistLimits};
use crate::wire::enrollment_id::{ChannelKind, EnrollmentId};

/// An enrollment as the API shows it.
#[derive(Debug, Serialize)]
pub struct EnrollmentView {
    id: EnrollmentId,
    parent: Option<EnrollmentId>,
    kind: ChannelKind,
    enabled: bool,
    token_update_tally: u64,
    topic: Option<String>,
    device: DeviceFacts,
    push: Option<PushInfo>,
    has_unlock_token: bool,
    awaiting_configuration: bool,
    user_short_name: Option<String>,
    user_long_name: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: Timestamp,
    #[serde(with = "time::serde::rfc3339::option")]
    authenticated_at: Option<Timestamp>,
    #[serde(with = "time::serde::rfc3339::option")]
    token_updated_at: Option<Timestamp>,
    #[serde(with = "time::serde::rfc3339::option")]
    disabled_at: Option<Timestamp>,
    #[serde(with = "time::serde::rfc3339::option")]
    last_seen_at: Option<Timestamp>,
}

impl From<Enrollment> for EnrollmentView {
    fn from(e: Enrollment) -> Self {
        Self {
            id: e.id,
            parent: e.parent,
            kind: e.kind,
            enabled: e.enabled,
            token_update_tally: e.token_update_tally,
            topic: e.topic,
            device: e.device,
            push: e.push,
            has_unlock_token: e.unlock_token_sealed.is_some(),
            awaiting_configuration: e.awaiting_configuration,
            user_short_name: e.user_short_name,
            user_long_name: e.user_long_name,
            created_at: e.created_at,
            authenticated_at: e.authenticated_at,
            token_updated_at: e.token_updated_at,
            disabled_at: e.disabled_at,
            last_seen_at: e.last_seen_at,
        }
    }
}

/// A command with its targets and their results converted to JSON. The stored plists are
/// decoded again within `limits` (the ones they were accepted with); one that does not fit shows
/// as `null`.
pub fn command_json(c: &CommandRecord, limits: &PlistLimits) -> serde_json::Value {
    let to_json = |raw: &[u8]| {
        bounded_plist::decode(raw, limits)
            .map(|p| crate::wire::plist_json::plist_to_json(&p))
            .unwrap_or(serde_json::Value::Null)
    };
    let targets: Vec<_> = c
        .targets
        .iter()
        .map(|t| {
            let mut v = serde_json::to_value(t).expect("records serialize");
            if let Some(raw) = &t.result {
                v["result"] = to_json(raw);
            }
            v
        })
        .collect();
    let command = to_json(&c.raw);
    serde_json::json!({
        "command_uuid": c.uuid,
        "request_type": c.request_type,
        "created_at": c.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "finished_at": c.finished_at.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
        "command": command,
        "targets": targets,
    })
}
