//! Teams: where a device belongs, which enrollment profile it gets and what its setup installs.
//!
//! A team names a DEP enrollment profile per platform (the built-in `auto-assign` answer for its
//! devices), a default setup experience (setup steps in the Lua shape, the built-in
//! `setup-steps` answer) and a release timeout. Plugins may answer differently; teams are the
//! defaults an admin edits without writing one.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use crate::events::{Outbox, event, kind};
use crate::policy::steps_from_json;
use crate::store::{Emit, NewEvent, StoreError, Team, TeamStore};

/// The platforms a team can name an enrollment profile for.
pub const PLATFORMS: [&str; 4] = ["macos", "ios", "ipados", "tvos"];

/// The platform of a DEP `device_family` (`Mac` → `macos`, `iPhone`/`iPod` → `ios`,
/// `iPad` → `ipados`, `AppleTV` → `tvos`).
pub fn platform_of(device_family: &str) -> Option<&'static str> {
    match device_family {
        "Mac" => Some("macos"),
        "iPhone" | "iPod" => Some("ios"),
        "iPad" => Some("ipados"),
        "AppleTV" => Some("tvos"),
        _ => None,
    }
}

/// What an admin sends to create or replace a team (`PUT /v1/teams/{name}`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamSpec {
    /// DEP enrollment profile (template name) per platform.
    #[serde(default)]
    pub enrollment_profiles: BTreeMap<String, String>,
    /// Default setup steps, in the Lua shape.
    #[serde(default)]
    pub setup_steps: Option<serde_json::Value>,
    /// Release timeout in seconds.
    #[serde(default)]
    pub release_timeout_secs: Option<u64>,
}

/// Why a team operation failed. Nothing changes when one does.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TeamError {
    /// The name is not usable.
    #[error("invalid team name {0:?}: use 1-64 characters, no '/' or control characters")]
    InvalidName(String),
    /// The settings are not valid.
    #[error("{0}")]
    Invalid(String),
    /// No such team.
    #[error("no team named {0:?}")]
    NotFound(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Team management.
pub struct TeamService {
    store: Arc<dyn TeamStore>,
    outbox: Outbox,
}

impl TeamService {
    /// The team `name`, if there is one.
    pub async fn find(&self, name: &str) -> Result<Option<Team>, TeamError> {
        Ok(self.store.team(name).await?)
    }

    /// A service over `store`, publishing `team.changed` / `team.deleted`.
    pub fn new(store: Arc<dyn TeamStore>, outbox: Outbox) -> Self {
        Self { store, outbox }
    }

    /// Create or replace a team.
    pub async fn put(&self, name: &str, spec: TeamSpec) -> Result<Team, TeamError> {
        if name.is_empty()
            || name.chars().count() > 64
            || name.chars().any(|c| c == '/' || c.is_control())
        {
            return Err(TeamError::InvalidName(name.to_owned()));
        }
        for (platform, profile) in &spec.enrollment_profiles {
            if !PLATFORMS.contains(&platform.as_str()) {
                return Err(TeamError::Invalid(format!(
                    "enrollment_profiles: unknown platform {platform:?}: expected one of {}",
                    PLATFORMS.join(", ")
                )));
            }
            if profile.is_empty() {
                return Err(TeamError::Invalid(format!(
                    "enrollment_profiles.{platform} is empty"
                )));
            }
        }
        let setup_steps = spec.setup_steps.unwrap_or_else(|| json!([]));
        steps_from_json(&setup_steps)
            .map_err(|e| TeamError::Invalid(format!("setup_steps: {e}")))?;
        let team = Team {
            name: name.to_owned(),
            enrollment_profiles: spec.enrollment_profiles,
            setup_steps,
            release_timeout_secs: spec.release_timeout_secs,
            updated_at: time::OffsetDateTime::now_utc(),
        };
        let (_, events) = self
            .store
            .put_team_emitting(
                &team,
                Emit::events(vec![team_event(kind::TEAM_CHANGED, name)]),
            )
            .await?;
        self.outbox.broadcast(&events);
        Ok(team)
    }

    /// One team.
    pub async fn get(&self, name: &str) -> Result<Team, TeamError> {
        self.store
            .team(name)
            .await?
            .ok_or_else(|| TeamError::NotFound(name.to_owned()))
    }

    /// Every team, by name.
    pub async fn list(&self) -> Result<Vec<Team>, TeamError> {
        Ok(self.store.teams().await?)
    }

    /// Delete a team. Its devices keep the name until they are placed again.
    pub async fn delete(&self, name: &str) -> Result<(), TeamError> {
        let deleted = team_event(kind::TEAM_DELETED, name);
        let emit = Emit::with(move |existed: &bool| {
            if *existed {
                vec![deleted.clone()]
            } else {
                Vec::new()
            }
        });
        let (existed, events) = self.store.delete_team_emitting(name, emit).await?;
        if !existed {
            return Err(TeamError::NotFound(name.to_owned()));
        }
        self.outbox.broadcast(&events);
        Ok(())
    }
}

/// A team event, written with the change it reports.
fn team_event(k: &str, name: &str) -> NewEvent {
    event(k, None, json!({ "team": name }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::RedbStore;

    fn service() -> TeamService {
        let store = Arc::new(RedbStore::in_memory().unwrap());
        TeamService::new(store.clone(), Outbox::new(store, 16))
    }

    #[tokio::test]
    async fn teams_are_validated_and_stored() {
        let s = service();
        let spec = |v: serde_json::Value| serde_json::from_value::<TeamSpec>(v).unwrap();
        let t = s
            .put(
                "Engineering",
                spec(json!({
                    "enrollment_profiles": {"macos": "mac-standard"},
                    "setup_steps": [{"id": "wifi", "install_profile": "wifi"}],
                    "release_timeout_secs": 600
                })),
            )
            .await
            .unwrap();
        assert_eq!(s.get("Engineering").await.unwrap(), t);
        let bad = s
            .put("X", spec(json!({"enrollment_profiles": {"windows": "p"}})))
            .await
            .unwrap_err();
        assert!(
            bad.to_string().contains("unknown platform \"windows\""),
            "{bad}"
        );
        let bad = s
            .put("X", spec(json!({"setup_steps": [{"id": "a"}]})))
            .await
            .unwrap_err();
        assert!(
            bad.to_string().contains("setup_steps: step 1: no action"),
            "{bad}"
        );
        assert!(matches!(
            s.put("a/b", TeamSpec::default()).await,
            Err(TeamError::InvalidName(_))
        ));
        assert!(matches!(s.get("X").await, Err(TeamError::NotFound(_))));
        s.delete("Engineering").await.unwrap();
        assert!(s.list().await.unwrap().is_empty());
        assert!(matches!(
            s.delete("Engineering").await,
            Err(TeamError::NotFound(_))
        ));
    }

    #[test]
    fn platforms_from_device_family() {
        assert_eq!(platform_of("Mac"), Some("macos"));
        assert_eq!(platform_of("iPad"), Some("ipados"));
        assert_eq!(platform_of("iPhone"), Some("ios"));
        assert_eq!(platform_of("Vision"), None);
    }
}
