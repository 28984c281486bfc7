//! Team placement: ask the `place` hook, fall back to the device's current team or its DEP
//! server's default team for its platform, and record who decided.

use std::collections::BTreeMap;

use serde_json::json;

use crate::events::{event, kind};
use crate::policy::{self, Decided, PlaceDecision, PolicyChain};
use crate::store::{DeviceRecord, DeviceStage, NewEvent};
use crate::teams::platform_of;

/// Who placed a device when an admin did; plugins and defaults never move such a device.
pub const BY_ADMIN: &str = "admin";

/// The policy view of a device record.
pub fn policy_device(d: &DeviceRecord) -> policy::Device {
    policy::Device {
        serial_number: d.serial_number.clone(),
        udid: d.udid.clone(),
        model: d.model.clone(),
        device_family: d.device_family.clone(),
        os: d.os.clone(),
        os_version: d.os_version.clone(),
        dep_server: d.dep_server.clone(),
        stage: match d.stage {
            DeviceStage::Synced => policy::Stage::Synced,
            DeviceStage::Enrolling => policy::Stage::Enrolling,
            DeviceStage::Enrolled | DeviceStage::Released | DeviceStage::CheckedOut => {
                policy::Stage::Enrolled
            }
        },
        team: d.team.clone(),
        user: d.user.as_ref().map(|u| policy::UserIdentity {
            username: u.username.clone(),
            email: u.email.clone(),
            groups: u.groups.clone(),
        }),
    }
}

/// Place `device` (unless an admin placed it): the chain decides, else it keeps its team, else
/// it gets `default_teams[platform]` of its DEP server. Returns the `device.placed` event when
/// the team changed.
pub async fn place(
    chain: &PolicyChain,
    device: &mut DeviceRecord,
    default_teams: &BTreeMap<String, String>,
) -> Option<NewEvent> {
    let (input, default) = place_question(device, default_teams)?;
    let decided = chain.place(&input, || default).await;
    apply_place(device, decided)
}

/// What the `place` hook is asked for `device`, and the built-in answer; `None` when an admin
/// placed it (nobody is asked). The decision depends on nothing else, so an answer given for an
/// equal question may be applied later (the setup flow decides before it takes its lock).
pub(crate) fn place_question(
    device: &DeviceRecord,
    default_teams: &BTreeMap<String, String>,
) -> Option<(policy::Device, Option<PlaceDecision>)> {
    if device.placed_by.as_deref() == Some(BY_ADMIN) {
        return None;
    }
    let server_default = platform_of(&device.device_family)
        .and_then(|p| default_teams.get(p))
        .cloned();
    let default = device
        .team
        .clone()
        .or(server_default)
        .map(PlaceDecision::Team);
    Some((policy_device(device), default))
}

/// Apply the answer to [`place_question`] to `device`; the `device.placed` event when the team
/// changed.
pub(crate) fn apply_place(
    device: &mut DeviceRecord,
    decided: Option<Decided<PlaceDecision>>,
) -> Option<NewEvent> {
    let decided = decided?;
    let current = device.team.clone();
    let team = match decided.decision {
        PlaceDecision::Team(t) => Some(t),
        PlaceDecision::NoTeam => None,
    };
    if team == current && device.placed_by.is_some() {
        return None;
    }
    device.team = team.clone();
    device.placed_by = Some(decided.by.clone());
    (team != current).then(|| {
        event(
            kind::DEVICE_PLACED,
            None,
            json!({
                "serial_number": device.serial_number,
                "team": team,
                "previous": current,
                "by": decided.by,
                "stage": device.stage,
            }),
        )
    })
}
