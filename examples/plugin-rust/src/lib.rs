//! A template policy plugin: place devices in teams by their user's identity-provider groups, and
//! hold a device in Setup Assistant while a required setup step has failed.
//!
//! Configuration: `group.<group> = <team>` for each group that decides a team (the first of the
//! user's groups with a rule wins), and `fallback = <team>` for devices whose user has none.

use pomona_sdk::{
    Device, Hook, PlaceDecision, Plugin, Progress, ReleaseDecision, StepStatus, export_plugin, host,
};

/// The team for a user in `groups`, from `rules` (`(group, team)` pairs) or `fallback`.
pub fn team_for(
    groups: &[String],
    rules: &[(String, String)],
    fallback: Option<String>,
) -> Option<String> {
    groups
        .iter()
        .find_map(|g| {
            rules
                .iter()
                .find(|(group, _)| group == g)
                .map(|(_, team)| team.clone())
        })
        .or(fallback)
}

struct MyPolicy;

impl Plugin for MyPolicy {
    fn hooks() -> Vec<Hook> {
        vec![Hook::Place, Hook::Release]
    }

    fn place(device: Device) -> Result<Option<PlaceDecision>, String> {
        // Without a known user this plugin has no opinion; the engine's default decides.
        let Some(user) = device.user else {
            return Ok(None);
        };
        let rules = host::config_with_prefix("group.");
        let team = team_for(&user.groups, &rules, host::config("fallback"));
        if let Some(team) = &team {
            host::info(&format!("{} -> {team}", device.serial_number));
        }
        Ok(team.map(PlaceDecision::Team))
    }

    fn release(_device: Device, progress: Progress) -> Result<Option<ReleaseDecision>, String> {
        let failed: Vec<&str> = progress
            .steps
            .iter()
            .filter(|s| s.required && s.status == StepStatus::Failed)
            .map(|s| s.id.as_str())
            .collect();
        if failed.is_empty() {
            return Ok(None); // let the next plugin or the default decide
        }
        Ok(Some(ReleaseDecision::Hold(format!(
            "failed: {}",
            failed.join(", ")
        ))))
    }
}

export_plugin!(MyPolicy);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_group_with_a_rule_wins() {
        let rules = vec![
            ("eng".to_string(), "Engineering".to_string()),
            ("ops".into(), "Ops".into()),
        ];
        let groups = vec!["all".to_string(), "ops".into(), "eng".into()];
        assert_eq!(team_for(&groups, &rules, None), Some("Ops".into()));
        assert_eq!(
            team_for(&["x".into()], &rules, Some("Staff".into())),
            Some("Staff".into())
        );
        assert_eq!(team_for(&[], &rules, None), None);
    }
}
