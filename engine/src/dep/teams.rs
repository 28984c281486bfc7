//! Team-driven re-assignment: a DEP device that has not enrolled yet follows its team's
//! enrollment profile when it changes team, or when its team's profile changes.

use std::collections::BTreeMap;

use super::{DepService, DepServiceError};
use crate::store::{DeviceQuery, DeviceRecord, DeviceStage, Team};
use crate::teams::platform_of;

/// Devices read per page while re-assigning a team.
const PAGE: usize = 1000;

impl DepService {
    /// Assign `device` its team's enrollment profile for its platform, if it is a DEP device
    /// that has not enrolled and its team names one. Returns the profile assigned.
    pub async fn assign_team_profile(
        &self,
        device: &DeviceRecord,
    ) -> Result<Option<String>, DepServiceError> {
        let (Some(p), Some(server), Some(team), DeviceStage::Synced) = (
            &self.placement,
            &device.dep_server,
            &device.team,
            device.stage,
        ) else {
            return Ok(None);
        };
        let profile = match platform_of(&device.device_family) {
            Some(platform) => p
                .teams
                .team(team)
                .await?
                .and_then(|t| t.enrollment_profiles.get(platform).cloned()),
            None => None,
        };
        if let Some(profile) = &profile {
            self.assign(server, profile, std::slice::from_ref(&device.serial_number))
                .await?;
        }
        Ok(profile)
    }

    /// After a team changed from `before` to `after`, assign its DEP devices that have not
    /// enrolled the new profile of their platform, where that profile changed. A new team has no
    /// devices to move. Returns how many devices were re-assigned.
    pub async fn reassign_team(
        &self,
        before: Option<&Team>,
        after: &Team,
    ) -> Result<usize, DepServiceError> {
        let (Some(p), Some(before)) = (&self.placement, before) else {
            return Ok(0);
        };
        let changed: BTreeMap<&str, &str> = after
            .enrollment_profiles
            .iter()
            .filter(|(platform, profile)| {
                before.enrollment_profiles.get(*platform) != Some(*profile)
            })
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if changed.is_empty() {
            return Ok(0);
        }
        // (server, profile) → serials
        let mut work: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        let mut cursor = None;
        loop {
            let page = p
                .devices
                .list_devices(&DeviceQuery {
                    team: Some(after.name.clone()),
                    stage: Some(DeviceStage::Synced),
                    after: cursor.clone(),
                    limit: Some(PAGE),
                    ..Default::default()
                })
                .await?;
            for d in &page {
                let profile = platform_of(&d.device_family).and_then(|p| changed.get(p));
                if let (Some(server), Some(profile)) = (&d.dep_server, profile) {
                    work.entry((server.clone(), (*profile).to_owned()))
                        .or_default()
                        .push(d.serial_number.clone());
                }
            }
            if page.len() < PAGE {
                break;
            }
            cursor = page.last().map(|d| d.serial_number.clone());
        }
        let mut n = 0;
        for ((server, profile), serials) in work {
            self.assign(&server, &profile, &serials).await?;
            n += serials.len();
        }
        Ok(n)
    }
}
