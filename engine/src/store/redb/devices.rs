//! [`DeviceStore`] on redb.
//!
//! `devices` holds JSON records by serial; `device_by_enrollment` indexes devices by their device
//! channel; `setups` holds one JSON [`SetupRecord`] per enrollment, with `setup_commands` (command
//! UUID → enrollment) and `setup_due` ((ms, enrollment) → ()) beside it. Consumer cursors live in
//! `meta` under `cursor.<name>`.

use ::redb::{ReadableTable, WriteTransaction};
use async_trait::async_trait;

use super::events::append_in;
use super::sealed::{open_json, seal_json};
use super::tables::{DEVICE_BY_ENROLLMENT, DEVICES, META, SETUP_COMMANDS, SETUP_DUE, SETUPS};
use super::{RedbStore, backend, decode, encode};
use crate::seal::{SealKey, context};
use crate::store::{
    DeviceQuery, DeviceRecord, DeviceStore, Event, LifecycleWrite, SetupRecord, SetupState,
    StoreResult, Timestamp,
};

fn ms(t: Timestamp) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn cursor_key(name: &str) -> String {
    format!("cursor.{name}")
}

fn put_device(txn: &WriteTransaction, d: &DeviceRecord) -> StoreResult<()> {
    let mut devices = txn.open_table(DEVICES).map_err(backend)?;
    let mut index = txn.open_table(DEVICE_BY_ENROLLMENT).map_err(backend)?;
    let old: Option<DeviceRecord> = devices
        .get(d.serial_number.as_str())
        .map_err(backend)?
        .map(|v| decode(&format!("device {}", d.serial_number), v.value()))
        .transpose()?;
    if let Some(old_id) = old.and_then(|o| o.enrollment_id)
        && d.enrollment_id.as_deref() != Some(old_id.as_str())
    {
        index.remove(old_id.as_str()).map_err(backend)?;
    }
    if let Some(id) = &d.enrollment_id {
        index
            .insert(id.as_str(), d.serial_number.as_str())
            .map_err(backend)?;
    }
    devices
        .insert(d.serial_number.as_str(), encode(d).as_slice())
        .map_err(backend)?;
    Ok(())
}

fn put_setup(txn: &WriteTransaction, seal: &SealKey, s: &SetupRecord) -> StoreResult<()> {
    let mut setups = txn.open_table(SETUPS).map_err(backend)?;
    let mut commands = txn.open_table(SETUP_COMMANDS).map_err(backend)?;
    let mut due = txn.open_table(SETUP_DUE).map_err(backend)?;
    let old: Option<SetupRecord> = setups
        .get(s.enrollment_id.as_str())
        .map_err(backend)?
        .map(|v| open_setup(seal, &s.enrollment_id, v.value()))
        .transpose()?;
    if let Some(old) = &old {
        if let Some(at) = old.next_check_at {
            due.remove((ms(at), old.enrollment_id.as_str()))
                .map_err(backend)?;
        }
        // A new setup of the same enrollment replaces the old one's command index.
        for uuid in command_uuids(old) {
            if !command_uuids(s).contains(&uuid) {
                commands.remove(uuid.as_str()).map_err(backend)?;
            }
        }
    }
    for uuid in command_uuids(s) {
        commands
            .insert(uuid.as_str(), s.enrollment_id.as_str())
            .map_err(backend)?;
    }
    let release_pending = s.release_command.is_some() && !s.release_queued;
    if let Some(at) = s.next_check_at
        && (s.state == SetupState::Running || release_pending)
    {
        due.insert((ms(at), s.enrollment_id.as_str()), ())
            .map_err(backend)?;
    }
    let sealed = seal_json(seal, &context::setup(&s.enrollment_id), s);
    setups
        .insert(s.enrollment_id.as_str(), sealed.as_slice())
        .map_err(backend)?;
    Ok(())
}

fn open_setup(seal: &SealKey, id: &str, sealed: &[u8]) -> StoreResult<SetupRecord> {
    open_json(seal, &format!("setup {id}"), &context::setup(id), sealed)
}

fn command_uuids(s: &SetupRecord) -> Vec<String> {
    s.steps
        .iter()
        .map(|st| st.command_uuid.clone())
        .chain(s.release_command.clone())
        .collect()
}

fn read_setup(
    txn: &::redb::ReadTransaction,
    seal: &SealKey,
    id: &str,
) -> StoreResult<Option<SetupRecord>> {
    let t = txn.open_table(SETUPS).map_err(backend)?;
    t.get(id)
        .map_err(backend)?
        .map(|v| open_setup(seal, id, v.value()))
        .transpose()
}

#[async_trait]
impl DeviceStore for RedbStore {
    async fn device(&self, serial: &str) -> StoreResult<Option<DeviceRecord>> {
        self.read(|txn| {
            let t = txn.open_table(DEVICES).map_err(backend)?;
            t.get(serial)
                .map_err(backend)?
                .map(|v| decode(&format!("device {serial}"), v.value()))
                .transpose()
        })
    }

    async fn device_by_enrollment(&self, enrollment_id: &str) -> StoreResult<Option<DeviceRecord>> {
        self.read(|txn| {
            let index = txn.open_table(DEVICE_BY_ENROLLMENT).map_err(backend)?;
            let Some(serial) = index.get(enrollment_id).map_err(backend)? else {
                return Ok(None);
            };
            let serial = serial.value().to_owned();
            let t = txn.open_table(DEVICES).map_err(backend)?;
            t.get(serial.as_str())
                .map_err(backend)?
                .map(|v| decode(&format!("device {serial}"), v.value()))
                .transpose()
        })
    }

    async fn list_devices(&self, q: &DeviceQuery) -> StoreResult<Vec<DeviceRecord>> {
        let limit = q.limit.unwrap_or(100).clamp(1, 1000);
        self.read(|txn| {
            let t = txn.open_table(DEVICES).map_err(backend)?;
            let range = match q.after.as_deref() {
                Some(a) => {
                    t.range::<&str>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                }
                None => t.range::<&str>(..),
            }
            .map_err(backend)?;
            let mut out = Vec::new();
            for e in range {
                let (k, v) = e.map_err(backend)?;
                let d: DeviceRecord = decode(&format!("device {}", k.value()), v.value())?;
                let team_ok = match q.team.as_deref() {
                    None => true,
                    Some("") => d.team.is_none(),
                    Some(t) => d.team.as_deref() == Some(t),
                };
                let stage_ok = q.stage.is_none_or(|s| s == d.stage);
                let server_ok = q
                    .dep_server
                    .as_deref()
                    .is_none_or(|s| d.dep_server.as_deref() == Some(s));
                if team_ok && stage_ok && server_ok {
                    out.push(d);
                    if out.len() == limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    async fn setup(&self, enrollment_id: &str) -> StoreResult<Option<SetupRecord>> {
        self.read(|txn| read_setup(txn, &self.seal, enrollment_id))
    }

    async fn setup_by_command(&self, command_uuid: &str) -> StoreResult<Option<SetupRecord>> {
        self.read(|txn| {
            let index = txn.open_table(SETUP_COMMANDS).map_err(backend)?;
            let Some(id) = index.get(command_uuid).map_err(backend)? else {
                return Ok(None);
            };
            let id = id.value().to_owned();
            read_setup(txn, &self.seal, &id)
        })
    }

    async fn due_setups(&self, now: Timestamp, limit: usize) -> StoreResult<Vec<SetupRecord>> {
        self.read(|txn| {
            let due = txn.open_table(SETUP_DUE).map_err(backend)?;
            let mut out = Vec::new();
            for e in due.range(..=(ms(now), "\u{10ffff}")).map_err(backend)? {
                if out.len() >= limit {
                    break;
                }
                let (k, _) = e.map_err(backend)?;
                let (_, id) = k.value();
                if let Some(s) = read_setup(txn, &self.seal, id)? {
                    out.push(s);
                }
            }
            Ok(out)
        })
    }

    async fn open_setups(&self, limit: usize) -> StoreResult<Vec<SetupRecord>> {
        self.read(|txn| {
            let t = txn.open_table(SETUPS).map_err(backend)?;
            let mut out = Vec::new();
            for e in t.range::<&str>(..).map_err(backend)? {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = e.map_err(backend)?;
                let s = open_setup(&self.seal, k.value(), v.value())?;
                let unsent = s.steps.iter().any(|st| !st.queued)
                    || (s.release_command.is_some() && !s.release_queued);
                if unsent {
                    out.push(s);
                }
            }
            Ok(out)
        })
    }

    async fn cursor(&self, name: &str) -> StoreResult<u64> {
        let key = cursor_key(name);
        self.read(|txn| {
            let meta = txn.open_table(META).map_err(backend)?;
            Ok(meta
                .get(key.as_str())
                .map_err(backend)?
                .map_or(0, |v| v.value()))
        })
    }

    async fn apply(&self, write: LifecycleWrite, now: Timestamp) -> StoreResult<Vec<Event>> {
        let seal = self.seal.clone();
        self.write(move |txn| {
            for d in &write.devices {
                put_device(txn, d)?;
            }
            for s in &write.setups {
                put_setup(txn, &seal, s)?;
            }
            if let Some((name, seq)) = &write.cursor {
                txn.open_table(META)
                    .map_err(backend)?
                    .insert(cursor_key(name).as_str(), *seq)
                    .map_err(backend)?;
            }
            append_in(txn, &write.events, now)
        })
        .await
    }
}
