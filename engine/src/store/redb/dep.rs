//! [`DepStore`] on redb.

use ::redb::{ReadableTable, WriteTransaction};
use async_trait::async_trait;

use super::events::append_in;
use super::tables::{DEP_DEVICES, DEP_DUE, DEP_PROFILES, DEP_REASK, DEP_SERVERS};
use super::{RedbStore, backend, decode, encode};
use crate::store::{
    AssignResult, DEP_HISTORY_LIMIT, DepDeviceQuery, DepDeviceRecord, DepHistoryEntry,
    DepPageCommit, DepServer, DepStore, Emit, Event, NewEvent, ProfileTemplate, StoreError,
    StoreResult, Timestamp,
};

fn ms(t: Timestamp) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn load_device(
    txn: &WriteTransaction,
    server: &str,
    serial: &str,
) -> StoreResult<Option<DepDeviceRecord>> {
    let t = txn.open_table(DEP_DEVICES).map_err(backend)?;
    let v = t.get((server, serial)).map_err(backend)?;
    v.map(|v| decode(&format!("DEP device {server}/{serial}"), v.value()))
        .transpose()
}

/// Save a device and keep its due-index entry in step with `assign_due_at`.
fn save_device(
    txn: &WriteTransaction,
    old_due: Option<Timestamp>,
    d: &DepDeviceRecord,
) -> StoreResult<()> {
    let mut due = txn.open_table(DEP_DUE).map_err(backend)?;
    if let Some(t) = old_due {
        due.remove((ms(t), d.server.as_str(), d.serial_number.as_str()))
            .map_err(backend)?;
    }
    if let Some(t) = d.assign_due_at {
        due.insert((ms(t), d.server.as_str(), d.serial_number.as_str()), ())
            .map_err(backend)?;
    }
    txn.open_table(DEP_DEVICES)
        .map_err(backend)?
        .insert(
            (d.server.as_str(), d.serial_number.as_str()),
            encode(d).as_slice(),
        )
        .map_err(backend)?;
    Ok(())
}

/// Devices of `server` in a (time, server, serial) index whose time is at most `now`, soonest
/// first.
fn due_devices(
    txn: &::redb::ReadTransaction,
    index: ::redb::TableDefinition<(i64, &str, &str), ()>,
    server: &str,
    now: Timestamp,
    limit: usize,
) -> StoreResult<Vec<DepDeviceRecord>> {
    let due = txn.open_table(index).map_err(backend)?;
    let devices = txn.open_table(DEP_DEVICES).map_err(backend)?;
    let mut out = Vec::new();
    for e in due
        .range((i64::MIN, "", "")..=(ms(now), "\u{10FFFF}", "\u{10FFFF}"))
        .map_err(backend)?
    {
        if out.len() >= limit {
            break;
        }
        let (k, _) = e.map_err(backend)?;
        let (_, srv, serial) = k.value();
        if srv != server {
            continue;
        }
        if let Some(v) = devices.get((srv, serial)).map_err(backend)? {
            out.push(decode("DEP device", v.value())?);
        }
    }
    Ok(out)
}

/// Move a device's re-ask entry to `at` (or remove it).
fn set_reask_in(
    txn: &WriteTransaction,
    d: &mut DepDeviceRecord,
    at: Option<Timestamp>,
) -> StoreResult<()> {
    let mut t = txn.open_table(DEP_REASK).map_err(backend)?;
    if let Some(old) = d.reask_at {
        t.remove((ms(old), d.server.as_str(), d.serial_number.as_str()))
            .map_err(backend)?;
    }
    if let Some(new) = at {
        t.insert((ms(new), d.server.as_str(), d.serial_number.as_str()), ())
            .map_err(backend)?;
    }
    d.reask_at = at;
    Ok(())
}

#[async_trait]
impl DepStore for RedbStore {
    async fn put_dep_server_emitting(
        &self,
        server: &DepServer,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>> {
        let s = server.clone();
        let now = time::OffsetDateTime::now_utc();
        self.write_emitting(emit, now, move |txn| {
            txn.open_table(DEP_SERVERS)
                .map_err(backend)?
                .insert(s.name.as_str(), encode(&s).as_slice())
                .map_err(backend)?;
            Ok(())
        })
        .await
        .map(|(_, events)| events)
    }

    async fn dep_server(&self, name: &str) -> StoreResult<Option<DepServer>> {
        self.read(|txn| {
            let t = txn.open_table(DEP_SERVERS).map_err(backend)?;
            t.get(name)
                .map_err(backend)?
                .map(|v| decode(&format!("DEP server {name}"), v.value()))
                .transpose()
        })
    }

    async fn dep_servers(&self) -> StoreResult<Vec<DepServer>> {
        self.read(|txn| {
            let t = txn.open_table(DEP_SERVERS).map_err(backend)?;
            let mut out = Vec::new();
            for e in t.range::<&str>(..).map_err(backend)? {
                let (k, v) = e.map_err(backend)?;
                out.push(decode(&format!("DEP server {}", k.value()), v.value())?);
            }
            Ok(out)
        })
    }

    async fn commit_dep_page(
        &self,
        server: &str,
        page: DepPageCommit,
        now: Timestamp,
    ) -> StoreResult<Vec<Event>> {
        let server = server.to_owned();
        self.write(move |txn| {
            let mut s: DepServer = {
                let t = txn.open_table(DEP_SERVERS).map_err(backend)?;
                let v = t.get(server.as_str()).map_err(backend)?.ok_or_else(|| {
                    StoreError::Corrupt {
                        what: format!("DEP server {server}"),
                        detail: "missing while committing a page".into(),
                    }
                })?;
                decode(&format!("DEP server {server}"), v.value())?
            };
            for (device, op) in &page.devices {
                let serial = device.serial_number.as_str();
                let existing = load_device(txn, &server, serial)?;
                let old_due = existing.as_ref().and_then(|d| d.assign_due_at);
                let mut rec = existing.unwrap_or_else(|| DepDeviceRecord {
                    server: server.clone(),
                    serial_number: serial.to_owned(),
                    device: device.clone(),
                    present: true,
                    history: Vec::new(),
                    assigned_profile: None,
                    assign_result: None,
                    assign_error: None,
                    assign_attempts: 0,
                    assign_due_at: None,
                    reask_at: None,
                    first_seen_at: now,
                    updated_at: now,
                });
                let reask = page
                    .reask
                    .iter()
                    .find(|(s, _)| s == serial)
                    .map(|(_, at)| *at)
                    .filter(|_| op != "deleted");
                set_reask_in(txn, &mut rec, reask)?;
                rec.device = device.clone();
                rec.present = op != "deleted";
                rec.updated_at = now;
                rec.history.push(DepHistoryEntry {
                    op: op.clone(),
                    op_date: device.op_date.clone(),
                    profile_status: device.profile_status.clone(),
                    at: now,
                });
                if rec.history.len() > DEP_HISTORY_LIMIT {
                    rec.history.remove(0);
                }
                if let Some((_, profile)) = page.assign.iter().find(|(s, _)| s == serial) {
                    rec.assigned_profile = Some(profile.clone());
                    rec.assign_result = None;
                    rec.assign_error = None;
                    rec.assign_attempts = 0;
                    rec.assign_due_at = Some(now);
                }
                if !rec.present {
                    rec.assign_due_at = None;
                }
                save_device(txn, old_due, &rec)?;
            }
            s.cursor = page.cursor.clone().or(s.cursor);
            s.phase = page.phase;
            if page.new_chain {
                s.cursor_started_at = Some(now);
            }
            s.last_sync_at = Some(now);
            s.last_error = None;
            txn.open_table(DEP_SERVERS)
                .map_err(backend)?
                .insert(server.as_str(), encode(&s).as_slice())
                .map_err(backend)?;
            append_in(txn, &page.events, now)
        })
        .await
    }

    async fn dep_device(&self, server: &str, serial: &str) -> StoreResult<Option<DepDeviceRecord>> {
        self.read(|txn| {
            let t = txn.open_table(DEP_DEVICES).map_err(backend)?;
            t.get((server, serial))
                .map_err(backend)?
                .map(|v| decode(&format!("DEP device {server}/{serial}"), v.value()))
                .transpose()
        })
    }

    async fn dep_devices(&self, q: &DepDeviceQuery) -> StoreResult<Vec<DepDeviceRecord>> {
        let limit = q.limit.unwrap_or(100).clamp(1, 1000);
        self.read(|txn| {
            let t = txn.open_table(DEP_DEVICES).map_err(backend)?;
            let start = match q.after.as_deref().and_then(|a| a.split_once('/')) {
                Some((s, serial)) => (s.to_owned(), format!("{serial}\u{0}")),
                None => (q.server.clone().unwrap_or_default(), String::new()),
            };
            let mut out = Vec::new();
            for e in t
                .range((start.0.as_str(), start.1.as_str())..)
                .map_err(backend)?
            {
                let (k, v) = e.map_err(backend)?;
                let (srv, _) = k.value();
                if q.server.as_deref().is_some_and(|s| s != srv) {
                    break;
                }
                let d: DepDeviceRecord = decode("DEP device", v.value())?;
                let result = match d.assign_result {
                    None => "pending".to_owned(),
                    Some(r) => serde_json::to_value(r)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                };
                let keep = q
                    .serial_number
                    .as_deref()
                    .is_none_or(|s| s == d.serial_number)
                    && q.profile_status
                        .as_deref()
                        .is_none_or(|s| d.device.profile_status.as_deref() == Some(s))
                    && q.assign_result
                        .as_deref()
                        .is_none_or(|r| r.eq_ignore_ascii_case(&result));
                if keep {
                    out.push(d);
                    if out.len() == limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    async fn due_assignments(
        &self,
        server: &str,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<DepDeviceRecord>> {
        self.read(|txn| due_devices(txn, DEP_DUE, server, now, limit))
    }

    async fn record_assignments(
        &self,
        server: &str,
        outcomes: Vec<(String, AssignResult, Option<String>, Option<Timestamp>)>,
        events: Vec<NewEvent>,
        now: Timestamp,
    ) -> StoreResult<Vec<Event>> {
        let server = server.to_owned();
        self.write(move |txn| {
            for (serial, result, error, next) in &outcomes {
                let Some(mut d) = load_device(txn, &server, serial)? else {
                    continue;
                };
                let old_due = d.assign_due_at;
                d.assign_result = Some(*result);
                d.assign_error = error.clone();
                d.assign_attempts += 1;
                d.assign_due_at = *next;
                d.updated_at = now;
                save_device(txn, old_due, &d)?;
            }
            append_in(txn, &events, now)
        })
        .await
    }

    async fn request_assignments(
        &self,
        server: &str,
        profile: &str,
        serials: &[String],
        now: Timestamp,
    ) -> StoreResult<()> {
        let (server, profile, serials) = (server.to_owned(), profile.to_owned(), serials.to_vec());
        self.write(move |txn| {
            for serial in &serials {
                let existing = load_device(txn, &server, serial)?;
                let old_due = existing.as_ref().and_then(|d| d.assign_due_at);
                let mut d = existing.unwrap_or_else(|| DepDeviceRecord {
                    server: server.clone(),
                    serial_number: serial.clone(),
                    device: crate::wire::dep::Device {
                        serial_number: serial.clone(),
                        ..Default::default()
                    },
                    present: true,
                    history: Vec::new(),
                    assigned_profile: None,
                    assign_result: None,
                    assign_error: None,
                    assign_attempts: 0,
                    assign_due_at: None,
                    reask_at: None,
                    first_seen_at: now,
                    updated_at: now,
                });
                // An assignment answers any pending re-ask.
                set_reask_in(txn, &mut d, None)?;
                d.assigned_profile = Some(profile.clone());
                d.assign_result = None;
                d.assign_error = None;
                d.assign_attempts = 0;
                d.assign_due_at = Some(now);
                d.updated_at = now;
                save_device(txn, old_due, &d)?;
            }
            Ok(())
        })
        .await
    }

    async fn due_reasks(
        &self,
        server: &str,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<DepDeviceRecord>> {
        self.read(|txn| due_devices(txn, DEP_REASK, server, now, limit))
    }

    async fn set_reask(
        &self,
        server: &str,
        serial: &str,
        at: Option<Timestamp>,
    ) -> StoreResult<()> {
        let (server, serial) = (server.to_owned(), serial.to_owned());
        self.write(move |txn| {
            let Some(mut d) = load_device(txn, &server, &serial)? else {
                return Ok(());
            };
            let old_due = d.assign_due_at;
            set_reask_in(txn, &mut d, at)?;
            save_device(txn, old_due, &d)
        })
        .await
    }

    async fn put_dep_profile_emitting(
        &self,
        profile: &ProfileTemplate,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>> {
        let p = profile.clone();
        let now = time::OffsetDateTime::now_utc();
        self.write_emitting(emit, now, move |txn| {
            txn.open_table(DEP_PROFILES)
                .map_err(backend)?
                .insert(p.name.as_str(), encode(&p).as_slice())
                .map_err(backend)?;
            Ok(())
        })
        .await
        .map(|(_, events)| events)
    }

    async fn dep_profile(&self, name: &str) -> StoreResult<Option<ProfileTemplate>> {
        self.read(|txn| {
            let t = txn.open_table(DEP_PROFILES).map_err(backend)?;
            t.get(name)
                .map_err(backend)?
                .map(|v| decode(&format!("DEP profile {name}"), v.value()))
                .transpose()
        })
    }

    async fn dep_profiles(&self) -> StoreResult<Vec<ProfileTemplate>> {
        self.read(|txn| {
            let t = txn.open_table(DEP_PROFILES).map_err(backend)?;
            let mut out = Vec::new();
            for e in t.range::<&str>(..).map_err(backend)? {
                let (k, v) = e.map_err(backend)?;
                out.push(decode(&format!("DEP profile {}", k.value()), v.value())?);
            }
            Ok(out)
        })
    }
}
