//! [`EnrollmentStore`] on redb: enrollment records in `enrollments`, user channels by device in
//! `user_channels`.

use ::redb::{ReadableTable, WriteTransaction};
use async_trait::async_trait;

use super::tables::{ENROLLMENTS, USER_CHANNELS};
use super::{RedbStore, backend, decode, encode};
use crate::store::{
    DeviceFacts, Emit, Enrollment, EnrollmentQuery, EnrollmentStore, Event, PushInfo, StoreResult,
    Timestamp,
};
use crate::wire::checkin::{Authenticate, TokenUpdate};
use crate::wire::enrollment_id::{Channel, EnrollmentId};

/// Largest page `list_enrollments` returns.
const MAX_PAGE: usize = 1000;

pub(super) fn load(txn: &WriteTransaction, id: &str) -> StoreResult<Option<Enrollment>> {
    let table = txn.open_table(ENROLLMENTS).map_err(backend)?;
    let value = table.get(id).map_err(backend)?;
    value
        .map(|v| decode(&format!("enrollment {id}"), v.value()))
        .transpose()
}

pub(super) fn save(txn: &WriteTransaction, e: &Enrollment) -> StoreResult<()> {
    let mut table = txn.open_table(ENROLLMENTS).map_err(backend)?;
    table
        .insert(e.id.as_str(), encode(e).as_slice())
        .map_err(backend)?;
    Ok(())
}

#[async_trait]
impl EnrollmentStore for RedbStore {
    async fn store_authenticate(
        &self,
        channel: &Channel,
        m: &Authenticate,
        now: Timestamp,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>> {
        let channel = channel.clone();
        let m = m.clone();
        self.write_emitting(emit, now, move |txn| {
            let mut e = load(txn, channel.id.as_str())?
                .unwrap_or_else(|| Enrollment::new(channel.id.clone(), None, channel.kind, now));
            e.enabled = false;
            e.token_update_tally = 0;
            e.topic = Some(m.topic.clone());
            e.device = DeviceFacts {
                serial_number: m.serial_number.clone(),
                model: m.model.clone(),
                model_name: m.model_name.clone(),
                product_name: m.product_name.clone(),
                os_version: m.os_version.clone(),
                build_version: m.build_version.clone(),
                device_name: m.device_name.clone(),
                imei: m.imei.clone(),
                meid: m.meid.clone(),
            };
            e.push = None;
            e.awaiting_configuration = false;
            e.authenticated_at = Some(now);
            e.disabled_at = None;
            e.last_seen_at = Some(now);
            save(txn, &e)
        })
        .await
        .map(|(_, events)| events)
    }

    async fn store_token_update(
        &self,
        channel: &Channel,
        m: &TokenUpdate,
        unlock_token_sealed: Option<Vec<u8>>,
        user_names: (Option<String>, Option<String>),
        now: Timestamp,
        emit: Emit<u64>,
    ) -> StoreResult<(u64, Vec<Event>)> {
        let channel = channel.clone();
        let m = m.clone();
        self.write_emitting(emit, now, move |txn| {
            let mut e = match load(txn, channel.id.as_str())? {
                Some(e) => e,
                None => {
                    if let Some(parent) = &channel.parent {
                        let mut idx = txn.open_table(USER_CHANNELS).map_err(backend)?;
                        idx.insert((parent.as_str(), channel.id.as_str()), ())
                            .map_err(backend)?;
                    }
                    Enrollment::new(
                        channel.id.clone(),
                        channel.parent.clone(),
                        channel.kind,
                        now,
                    )
                }
            };
            e.enabled = true;
            e.token_update_tally += 1;
            e.topic = Some(m.topic.clone());
            e.push = Some(PushInfo {
                token: hex::encode(&m.token),
                push_magic: m.push_magic.clone(),
                topic: m.topic.clone(),
                valid: true,
            });
            if let Some(sealed) = &unlock_token_sealed {
                e.unlock_token_sealed = Some(sealed.clone());
            }
            e.awaiting_configuration = m.awaiting_configuration;
            if user_names.0.is_some() {
                e.user_short_name = user_names.0.clone();
            }
            if user_names.1.is_some() {
                e.user_long_name = user_names.1.clone();
            }
            e.token_updated_at = Some(now);
            e.disabled_at = None;
            e.last_seen_at = Some(now);
            save(txn, &e)?;
            Ok(e.token_update_tally)
        })
        .await
    }

    async fn disable(
        &self,
        id: &EnrollmentId,
        now: Timestamp,
        emit: Emit<Vec<EnrollmentId>>,
    ) -> StoreResult<(Vec<EnrollmentId>, Vec<Event>)> {
        let id = id.clone();
        self.write_emitting(emit, now, move |txn| {
            let mut ids = vec![id.clone()];
            {
                let idx = txn.open_table(USER_CHANNELS).map_err(backend)?;
                for entry in idx.range((id.as_str(), "")..).map_err(backend)? {
                    let (k, _) = entry.map_err(backend)?;
                    let (device, user) = k.value();
                    if device != id.as_str() {
                        break;
                    }
                    ids.push(EnrollmentId::new(user));
                }
            }
            let mut disabled = Vec::new();
            for i in ids {
                if let Some(mut e) = load(txn, i.as_str())?
                    && e.enabled
                {
                    e.enabled = false;
                    e.disabled_at = Some(now);
                    save(txn, &e)?;
                    disabled.push(i);
                }
            }
            Ok(disabled)
        })
        .await
    }

    async fn enrollment(&self, id: &EnrollmentId) -> StoreResult<Option<Enrollment>> {
        self.read(|txn| {
            let table = txn.open_table(ENROLLMENTS).map_err(backend)?;
            let value = table.get(id.as_str()).map_err(backend)?;
            value
                .map(|v| decode(&format!("enrollment {id}"), v.value()))
                .transpose()
        })
    }

    async fn list_enrollments(&self, q: &EnrollmentQuery) -> StoreResult<Vec<Enrollment>> {
        let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
        self.read(|txn| {
            let table = txn.open_table(ENROLLMENTS).map_err(backend)?;
            let range = match q.after.as_deref() {
                Some(after) => table
                    .range::<&str>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
                None => table.range::<&str>(..),
            }
            .map_err(backend)?;
            let mut out = Vec::new();
            for entry in range {
                let (k, v) = entry.map_err(backend)?;
                let e: Enrollment = decode(&format!("enrollment {}", k.value()), v.value())?;
                let keep = q.enabled.is_none_or(|want| e.enabled == want)
                    && q.kind.is_none_or(|want| e.kind == want)
                    && q.parent
                        .as_deref()
                        .is_none_or(|p| e.parent.as_ref().is_some_and(|ep| ep.as_str() == p))
                    && q.serial_number
                        .as_deref()
                        .is_none_or(|s| e.device.serial_number.as_deref() == Some(s));
                if keep {
                    out.push(e);
                    if out.len() == limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    async fn user_channels(&self, device: &EnrollmentId) -> StoreResult<Vec<EnrollmentId>> {
        self.read(|txn| {
            let idx = txn.open_table(USER_CHANNELS).map_err(backend)?;
            let mut out = Vec::new();
            for entry in idx.range((device.as_str(), "")..).map_err(backend)? {
                let (k, _) = entry.map_err(backend)?;
                let (d, user) = k.value();
                if d != device.as_str() {
                    break;
                }
                out.push(EnrollmentId::new(user));
            }
            Ok(out)
        })
    }

    async fn touch(&self, seen: Vec<(EnrollmentId, Timestamp)>) -> StoreResult<()> {
        self.write(move |txn| {
            for (id, at) in &seen {
                if let Some(mut e) = load(txn, id.as_str())?
                    && e.last_seen_at.is_none_or(|prev| prev < *at)
                {
                    e.last_seen_at = Some(*at);
                    save(txn, &e)?;
                }
            }
            Ok(())
        })
        .await
    }
}
