//! The syncer (cursor state machine) and the assigner (work queue → Apple).

use std::collections::BTreeMap;

use crate::policy::{AssignDecision, Decided, DepEvent, OpType};
use std::time::Duration;

use serde_json::json;

use super::client::{DepApi, DepError};
use super::{DepService, DepServiceError, now};
use crate::events::{event, kind};
use crate::store::{
    AssignResult, DepDeviceRecord, DepPageCommit, DepServer, DeviceRecord, DeviceStage, Emit,
    LifecycleWrite, NewEvent, ProfileDefinition, SyncPhase, TokenState,
};
use crate::teams::platform_of;
use crate::wire::dep::{Device, Profile};

/// Page size when Apple's `/account` gives none.
const DEFAULT_PAGE: u32 = 1000;
/// Start a full fetch before Apple's 7-day cursor expiry.
const CURSOR_MAX_AGE: time::Duration = time::Duration::days(6);
/// Most pages read in one sync run (a guard against a server that never says "done").
const MAX_PAGES: usize = 100_000;
/// Most serials per assignment request.
const ASSIGN_BATCH: usize = 1000;

/// What one sync run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    /// Pages committed.
    pub pages: usize,
    /// Device entries committed.
    pub devices: usize,
    /// Devices queued for assignment.
    pub queued: usize,
    /// Stopped because Apple returned the same cursor with `more_to_follow`.
    pub same_cursor: bool,
}

/// Keep one entry per serial: the one with the latest `op_date`.
fn dedupe(devices: Vec<Device>) -> Vec<Device> {
    let mut by_serial: BTreeMap<String, Device> = BTreeMap::new();
    for d in devices {
        match by_serial.get(&d.serial_number) {
            Some(existing) if existing.op_date >= d.op_date => {}
            _ => {
                by_serial.insert(d.serial_number.clone(), d);
            }
        }
    }
    by_serial.into_values().collect()
}

/// The built-in policy: should this device get the server's default profile?
/// New devices, re-added ones, devices moved to us (`modified` while unknown), and devices back
/// from `removed`.
fn wants_assignment(op: &str, known: Option<&DepDeviceRecord>, d: &Device) -> bool {
    let removed = d.profile_status.as_deref() == Some("removed");
    match op {
        "deleted" => false,
        "added" => true,
        "fetched" | "modified" => known.is_none() || removed || known.is_some_and(|k| !k.present),
        _ => known.is_none(),
    }
}

/// The `auto-assign` input for one device of a page.
fn policy_event(server: &str, op: &str, known: Option<&DepDeviceRecord>, d: &Device) -> DepEvent {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    DepEvent {
        server: server.to_owned(),
        serial_number: d.serial_number.clone(),
        model: text(&d.model),
        description: text(&d.description),
        color: text(&d.color),
        device_family: text(&d.device_family),
        os: text(&d.os),
        profile_status: text(&d.profile_status),
        profile_uuid: d.profile_uuid.clone().filter(|u| !u.is_empty()),
        op_type: match op {
            "added" => OpType::Added,
            "deleted" => OpType::Deleted,
            "fetched" => OpType::Fetched,
            _ => OpType::Modified,
        },
        op_date: d.op_date.clone(),
        known: known.is_some(),
        team: None,
    }
}

impl DepService {
    /// Place one synced device (when teams are wired): its team, and that team's enrollment
    /// profile for the device's platform. The record goes into `placed`.
    async fn place_synced(
        &self,
        s: &DepServer,
        op: &str,
        d: &Device,
        placed: &mut LifecycleWrite,
    ) -> Result<(Option<String>, Option<String>), DepServiceError> {
        let Some(p) = &self.placement else {
            return Ok((None, None));
        };
        let at = now();
        let mut rec = match p.devices.device(&d.serial_number).await? {
            Some(r) => r,
            None => DeviceRecord::new(&d.serial_number, DeviceStage::Synced, at),
        };
        let text = |v: &Option<String>, old: &str| v.clone().unwrap_or_else(|| old.to_owned());
        rec.model = text(&d.model, &rec.model);
        rec.device_family = text(&d.device_family, &rec.device_family);
        rec.os = text(&d.os, &rec.os);
        rec.dep_server = Some(s.name.clone());
        rec.updated_at = at;
        if op != "deleted"
            && let Some(ev) = crate::setup::place(&self.policy, &mut rec, &s.default_teams).await
        {
            placed.events.push(ev);
        }
        let profile = match (&rec.team, platform_of(&rec.device_family)) {
            (Some(t), Some(platform)) => p
                .teams
                .team(t)
                .await?
                .and_then(|t| t.enrollment_profiles.get(platform).cloned()),
            _ => None,
        };
        let team = rec.team.clone();
        placed.devices.push(rec);
        Ok((team, profile))
    }

    /// Place `d` and ask the `auto-assign` chain which profile it gets. The built-in rule is
    /// its team's profile, else the server's default, for a device that wants one: new,
    /// re-added, moved in or unassigned (every device when `as_new`), or a known device a plugin
    /// just moved to a team with another profile.
    async fn decide_assignment(
        &self,
        s: &DepServer,
        op: &str,
        d: &Device,
        known: Option<&DepDeviceRecord>,
        as_new: bool,
        placed: &mut LifecycleWrite,
    ) -> Result<Decided<AssignDecision>, DepServiceError> {
        let before = placed.events.len();
        let (team, team_profile) = self.place_synced(s, op, d, placed).await?;
        let rule_known = if as_new { None } else { known };
        let moved = placed.events.len() > before
            && rule_known.is_some_and(|k| {
                k.present && team_profile.is_some() && k.assigned_profile != team_profile
            });
        let builtin = || match team_profile.or_else(|| s.default_profile.clone()) {
            Some(p) if moved || wants_assignment(op, rule_known, d) => AssignDecision::Assign(p),
            _ => AssignDecision::Skip,
        };
        let mut input = policy_event(&s.name, op, known, d);
        input.team = team;
        Ok(self.policy.auto_assign(&input, builtin).await)
    }

    /// Write the device records and `device.placed` events of a batch of placements.
    async fn write_placements(&self, placed: LifecycleWrite) -> Result<(), DepServiceError> {
        if let Some(p) = &self.placement
            && !placed.is_empty()
        {
            let events = p.devices.apply(placed, now()).await?;
            self.outbox.broadcast(&events);
        }
        Ok(())
    }

    /// Sync one server now: fetch or sync pages until Apple has no more, committing each page
    /// with its devices, events, assignment work and cursor; then run the assigner.
    pub async fn sync_server(&self, name: &str, full: bool) -> Result<SyncReport, DepServiceError> {
        let _one_at_a_time = self.running.lock().await;
        let mut s = self.server(name).await?;
        let client = self.client(&s)?;
        let result = self.sync_pages(&mut s, &*client, full).await;
        match &result {
            Err(DepServiceError::Api(e)) => self.record_api_error(&mut s, e).await?,
            Err(_) => {}
            Ok(_) => {
                if matches!(
                    s.token_state,
                    TokenState::TermsNotSigned | TokenState::Invalid
                ) {
                    // Apple answered again: the token works.
                    let mut fresh = self.server(name).await?;
                    fresh.token_state = fresh
                        .token_expiry
                        .as_deref()
                        .map_or(TokenState::Valid, super::token_state);
                    self.store.put_dep_server(&fresh).await?;
                }
            }
        }
        let report = result?;
        self.assign_due(name).await?;
        Ok(report)
    }

    async fn record_api_error(
        &self,
        s: &mut DepServer,
        e: &DepError,
    ) -> Result<(), DepServiceError> {
        let mut fresh = self.server(&s.name).await?;
        fresh.last_error = Some(e.to_string());
        let state = match e {
            DepError::TermsNotSigned => Some(TokenState::TermsNotSigned),
            DepError::Unauthorized(_) => Some(TokenState::Invalid),
            _ => None,
        };
        let mut events = Vec::new();
        if let Some(state) = state
            && fresh.token_state != state
        {
            fresh.token_state = state;
            events.push((
                kind::DEP_TOKEN_STATE,
                json!({"server": s.name, "state": state, "error": e.to_string()}),
            ));
        }
        self.put_server_emitting(&fresh, events).await
    }

    async fn sync_pages(
        &self,
        s: &mut DepServer,
        client: &dyn DepApi,
        full: bool,
    ) -> Result<SyncReport, DepServiceError> {
        let mut report = SyncReport::default();
        let stale = s
            .cursor_started_at
            .is_some_and(|t| now() - t > CURSOR_MAX_AGE);
        let (mut phase, mut cursor, mut new_chain) = if full || stale || s.cursor.is_none() {
            (SyncPhase::Fetch, None, true)
        } else {
            (s.phase, s.cursor.clone(), false)
        };
        let limit = match client.account().await {
            Ok(a) => a
                .urls
                .iter()
                .find(|u| u.uri == "/server/devices")
                .and_then(|u| u.limit)
                .map(|l| l.default.max(1))
                .unwrap_or(DEFAULT_PAGE),
            Err(e @ (DepError::TermsNotSigned | DepError::Unauthorized(_))) => return Err(e.into()),
            Err(_) => DEFAULT_PAGE,
        };
        let mut restarted = false;
        while report.pages < MAX_PAGES {
            let answer = match phase {
                SyncPhase::Fetch => client.fetch(cursor.as_deref(), limit).await,
                SyncPhase::Sync => {
                    client
                        .sync(cursor.as_deref().unwrap_or_default(), limit)
                        .await
                }
            };
            let page = match answer {
                Ok(p) => p,
                Err(e) if phase == SyncPhase::Fetch && e.is("EXHAUSTED_CURSOR") => {
                    phase = SyncPhase::Sync;
                    continue;
                }
                Err(e) if phase == SyncPhase::Sync && e.is("EXHAUSTED_CURSOR") => break,
                Err(e)
                    if !restarted
                        && (e.is("EXPIRED_CURSOR")
                            || e.is("INVALID_CURSOR")
                            || e.is("CURSOR_REQUIRED")) =>
                {
                    tracing::info!(server = %s.name, error = %e, "cursor refused; starting a full fetch");
                    restarted = true;
                    phase = SyncPhase::Fetch;
                    cursor = None;
                    new_chain = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let same_cursor =
                page.more_to_follow && cursor.as_deref() == Some(page.cursor.as_str());
            let devices = dedupe(page.devices);
            let mut commit = DepPageCommit {
                cursor: Some(page.cursor.clone()),
                phase: if phase == SyncPhase::Fetch && !page.more_to_follow {
                    SyncPhase::Sync
                } else {
                    phase
                },
                new_chain,
                ..Default::default()
            };
            let mut placed = LifecycleWrite::default();
            for d in devices {
                let known = self.store.dep_device(&s.name, &d.serial_number).await?;
                let op = match phase {
                    SyncPhase::Fetch => "fetched".to_owned(),
                    SyncPhase::Sync => d.op_type.clone().unwrap_or_else(|| "modified".into()),
                };
                let decided = self
                    .decide_assignment(s, &op, &d, known.as_ref(), false, &mut placed)
                    .await?;
                match decided.decision {
                    AssignDecision::Assign(profile) => {
                        commit.assign.push((d.serial_number.clone(), profile));
                    }
                    AssignDecision::Skip => {}
                    AssignDecision::RetryAfter(secs) => {
                        tracing::info!(server = %s.name, serial = %d.serial_number, secs, by = %decided.by, "auto-assign asked to be asked again later");
                        commit
                            .reask
                            .push((d.serial_number.clone(), reask_time(secs)));
                    }
                }
                commit
                    .events
                    .push(device_event(&s.name, &op, known.as_ref(), &d));
                commit.devices.push((d, op));
            }
            report.pages += 1;
            report.devices += commit.devices.len();
            report.queued += commit.assign.len();
            // Before the page's commit: a crash in between leaves the cursor where it was, so
            // the same page is fetched and placed again (placement is idempotent).
            self.write_placements(placed).await?;
            let events = self.store.commit_dep_page(&s.name, commit, now()).await?;
            self.outbox.broadcast(&events);
            new_chain = false;
            phase = if phase == SyncPhase::Fetch && !page.more_to_follow {
                SyncPhase::Sync
            } else {
                phase
            };
            cursor = Some(page.cursor);
            if same_cursor {
                tracing::warn!(server = %s.name, "Apple returned the same cursor with more_to_follow; stopping until the next tick");
                report.same_cursor = true;
                break;
            }
            if !page.more_to_follow {
                break;
            }
        }
        Ok(report)
    }

    /// Ensure `profile` is defined with Apple for `server` in its current form; its UUID.
    async fn ensure_defined(
        &self,
        server: &str,
        client: &dyn DepApi,
        profile: &str,
    ) -> Result<String, String> {
        let mut t = match self.store.dep_profile(profile).await {
            Ok(Some(t)) => t,
            Ok(None) => return Err(format!("no DEP profile named {profile:?}")),
            Err(e) => return Err(e.to_string()),
        };
        let effective = self.effective_profile(&t.template);
        let hash = hex::encode(openssl::sha::sha256(
            &serde_json::to_vec(&effective).expect("profiles serialize"),
        ));
        if let Some(d) = t.definitions.get(server)
            && d.hash == hash
            && let Some(uuid) = &d.profile_uuid
        {
            return Ok(uuid.clone());
        }
        let result = client.define_profile(&effective).await;
        let definition = ProfileDefinition {
            hash,
            profile_uuid: result.as_ref().ok().map(|r| r.profile_uuid.clone()),
            error: result.as_ref().err().map(ToString::to_string),
            defined_at: now(),
        };
        t.definitions.insert(server.to_owned(), definition);
        let defined = event(
            kind::DEP_PROFILE_DEFINED,
            None,
            json!({"server": server, "profile": profile, "profile_uuid": result.as_ref().ok().map(|r| &r.profile_uuid), "error": result.as_ref().err().map(ToString::to_string)}),
        );
        match self
            .store
            .put_dep_profile_emitting(&t, Emit::events(vec![defined]))
            .await
        {
            Ok(written) => self.outbox.broadcast(&written),
            Err(e) => return Err(e.to_string()),
        }
        result.map(|r| r.profile_uuid).map_err(|e| e.to_string())
    }

    /// The profile sent to Apple: the template, pointed at this engine unless it says otherwise.
    pub fn effective_profile(&self, template: &Profile) -> Profile {
        let mut p = template.clone();
        if p.url.is_none() && p.configuration_web_url.is_none() {
            p.url = Some(format!("{}/mdm/enroll", self.options.public_url));
        }
        p
    }

    fn failed_delay(&self, attempts: u32) -> Duration {
        (self.options.failed_retry * 2u32.saturating_pow(attempts.min(6)))
            .min(Duration::from_secs(3600))
    }

    /// Assign every due device of `server` (batches of ≤ 1000 per profile).
    pub async fn assign_due(&self, server: &str) -> Result<(), DepServiceError> {
        let s = self.server(server).await?;
        if s.token_sealed.is_none() {
            return Ok(());
        }
        let client = self.client(&s)?;
        loop {
            let due = self.store.due_assignments(server, now(), 5000).await?;
            if due.is_empty() {
                return Ok(());
            }
            let mut by_profile: BTreeMap<String, Vec<DepDeviceRecord>> = BTreeMap::new();
            for d in due.iter().filter(|d| d.assigned_profile.is_some()) {
                by_profile
                    .entry(d.assigned_profile.clone().unwrap_or_default())
                    .or_default()
                    .push(d.clone());
            }
            let at = now();
            let mut outcomes = Vec::new();
            let mut events = Vec::new();
            for (profile, devices) in by_profile {
                let uuid = match self.ensure_defined(server, &*client, &profile).await {
                    Ok(u) => u,
                    Err(err) => {
                        for d in &devices {
                            let next = at + self.failed_delay(d.assign_attempts);
                            outcomes.push((
                                d.serial_number.clone(),
                                AssignResult::Failed,
                                Some(format!("profile definition failed: {err}")),
                                Some(next),
                            ));
                        }
                        continue;
                    }
                };
                for chunk in devices.chunks(ASSIGN_BATCH) {
                    let serials: Vec<String> =
                        chunk.iter().map(|d| d.serial_number.clone()).collect();
                    let attempts: BTreeMap<&str, u32> = chunk
                        .iter()
                        .map(|d| (d.serial_number.as_str(), d.assign_attempts))
                        .collect();
                    match client.assign(&uuid, &serials).await {
                        Ok(resp) => {
                            let throttle = resp
                                .retry_after_seconds
                                .filter(|s| *s > 0)
                                .map(Duration::from_secs)
                                .unwrap_or(self.options.throttle_cooldown);
                            for serial in &serials {
                                let status = resp
                                    .devices
                                    .get(serial)
                                    .map(String::as_str)
                                    .unwrap_or("FAILED");
                                let (result, next, error) = match status {
                                    "SUCCESS" => (AssignResult::Success, None, None),
                                    "NOT_ACCESSIBLE" => (
                                        AssignResult::NotAccessible,
                                        None,
                                        Some(
                                            "the device is no longer assigned to this MDM server"
                                                .to_owned(),
                                        ),
                                    ),
                                    "THROTTLED" => (
                                        AssignResult::Throttled,
                                        Some(at + throttle),
                                        Some(format!(
                                            "throttled by Apple; retrying in {} s",
                                            throttle.as_secs()
                                        )),
                                    ),
                                    other => (
                                        AssignResult::Failed,
                                        Some(at + self.failed_delay(attempts[serial.as_str()])),
                                        Some(format!("Apple answered {other}")),
                                    ),
                                };
                                events.push(assignment_event(
                                    server,
                                    serial,
                                    &profile,
                                    result,
                                    error.as_deref(),
                                ));
                                outcomes.push((serial.clone(), result, error, next));
                            }
                        }
                        Err(e) => {
                            let fatal =
                                matches!(e, DepError::TermsNotSigned | DepError::Unauthorized(_));
                            for serial in &serials {
                                let next = at + self.failed_delay(attempts[serial.as_str()]);
                                outcomes.push((
                                    serial.clone(),
                                    AssignResult::Failed,
                                    Some(e.to_string()),
                                    Some(next),
                                ));
                            }
                            if fatal {
                                let mut s = s.clone();
                                self.record_api_error(&mut s, &e).await?;
                            }
                        }
                    }
                }
            }
            let n = due.len();
            let written = self
                .store
                .record_assignments(server, outcomes, events, at)
                .await?;
            self.outbox.broadcast(&written);
            if n < 5000 {
                return Ok(());
            }
        }
    }

    /// Ask `auto-assign` again about devices a plugin answered `retry_after` for, once that
    /// time has come; queue the assignments it now decides.
    pub async fn reask_due(&self, s: &DepServer) -> Result<usize, DepServiceError> {
        let due = self.store.due_reasks(&s.name, now(), 1000).await?;
        let mut assign: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut placed = LifecycleWrite::default();
        for rec in &due {
            let op = rec
                .history
                .last()
                .map_or_else(|| "modified".to_owned(), |h| h.op.clone());
            // The device never got an answer, so the built-in rule treats it as new.
            let decided = self
                .decide_assignment(s, &op, &rec.device, Some(rec), true, &mut placed)
                .await?;
            let serial = &rec.serial_number;
            match decided.decision {
                AssignDecision::Assign(profile) => {
                    assign.entry(profile).or_default().push(serial.clone())
                }
                AssignDecision::Skip => self.store.set_reask(&s.name, serial, None).await?,
                AssignDecision::RetryAfter(secs) => {
                    self.store
                        .set_reask(&s.name, serial, Some(reask_time(secs)))
                        .await?
                }
            }
        }
        self.write_placements(placed).await?;
        for (profile, serials) in &assign {
            // Recording the assignment clears the re-ask.
            self.store
                .request_assignments(&s.name, profile, serials, now())
                .await?;
        }
        Ok(due.len())
    }

    /// Run what is due: sync servers whose interval elapsed, ask `auto-assign` again where a
    /// plugin asked for it, and assign due devices.
    pub async fn tick(&self) {
        let servers = match self.store.dep_servers().await {
            Ok(s) => s,
            Err(err) => return tracing::warn!(%err, "cannot list DEP servers"),
        };
        for s in servers {
            let usable = matches!(s.token_state, TokenState::Valid | TokenState::Expiring);
            let due = s.sync_interval_secs > 0
                && s.last_sync_at.is_none_or(|t| {
                    now() - t >= time::Duration::seconds(s.sync_interval_secs as i64)
                });
            if usable && let Err(err) = self.reask_due(&s).await {
                tracing::warn!(server = %s.name, %err, "DEP re-ask failed");
            }
            if usable && due {
                if let Err(err) = self.sync_server(&s.name, false).await {
                    tracing::warn!(server = %s.name, %err, "DEP sync failed");
                }
            } else if usable && let Err(err) = self.assign_due(&s.name).await {
                tracing::warn!(server = %s.name, %err, "DEP assignment failed");
            }
        }
    }
}

/// When a device answered with `retry_after = secs` is asked again (at least a second away).
fn reask_time(secs: u64) -> crate::store::Timestamp {
    now() + Duration::from_secs(secs.clamp(1, 366 * 24 * 3600))
}

fn device_event(server: &str, op: &str, known: Option<&DepDeviceRecord>, d: &Device) -> NewEvent {
    let k = match op {
        "deleted" => kind::DEP_DEVICE_DELETED,
        "added" => kind::DEP_DEVICE_ADDED,
        "fetched" if known.is_none() => kind::DEP_DEVICE_ADDED,
        _ => kind::DEP_DEVICE_MODIFIED,
    };
    event(
        k,
        None,
        json!({
            "server": server,
            "serial_number": d.serial_number,
            "op_type": op,
            "op_date": d.op_date,
            "profile_status": d.profile_status,
            "model": d.model,
            "device_family": d.device_family,
            "known": known.is_some(),
            "readded": op == "added" && known.is_some(),
            "unknown_modified": op == "modified" && known.is_none(),
            "unassigned": d.profile_status.as_deref() == Some("removed"),
        }),
    )
}

fn assignment_event(
    server: &str,
    serial: &str,
    profile: &str,
    result: AssignResult,
    error: Option<&str>,
) -> NewEvent {
    event(
        if result == AssignResult::Success {
            kind::DEP_DEVICE_ASSIGNED
        } else {
            kind::DEP_ASSIGNMENT_FAILED
        },
        None,
        json!({"server": server, "serial_number": serial, "profile": profile, "result": result, "error": error}),
    )
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
