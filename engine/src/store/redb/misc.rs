//! [`BootstrapStore`], [`EventStore`] and [`SecretStore`] on redb.

use ::redb::ReadableTable;
use async_trait::async_trait;

use super::tables::{BOOTSTRAP, EVENTS, SECRETS, next_seq};
use super::{RedbStore, backend, decode, encode};
use crate::store::{
    BootstrapStore, Event, EventStore, NewEvent, SecretStore, StoreResult, Timestamp,
};
use crate::wire::enrollment_id::EnrollmentId;

#[async_trait]
impl BootstrapStore for RedbStore {
    async fn store_bootstrap_token(
        &self,
        id: &EnrollmentId,
        sealed: Option<Vec<u8>>,
    ) -> StoreResult<()> {
        let id = id.clone();
        self.write(move |txn| {
            let mut t = txn.open_table(BOOTSTRAP).map_err(backend)?;
            match &sealed {
                Some(s) => t.insert(id.as_str(), s.as_slice()).map_err(backend)?,
                None => t.remove(id.as_str()).map_err(backend)?,
            };
            Ok(())
        })
        .await
    }

    async fn bootstrap_token(&self, id: &EnrollmentId) -> StoreResult<Option<Vec<u8>>> {
        self.read(|txn| {
            let t = txn.open_table(BOOTSTRAP).map_err(backend)?;
            Ok(t.get(id.as_str())
                .map_err(backend)?
                .map(|v| v.value().to_vec()))
        })
    }
}

#[async_trait]
impl EventStore for RedbStore {
    async fn append_events(
        &self,
        events: Vec<NewEvent>,
        now: Timestamp,
    ) -> StoreResult<Vec<Event>> {
        self.write(move |txn| {
            let mut out = Vec::with_capacity(events.len());
            for e in &events {
                let event = Event {
                    seq: next_seq(txn, "event_seq")?,
                    at: now,
                    kind: e.kind.clone(),
                    enrollment_id: e.enrollment_id.clone(),
                    data: e.data.clone(),
                };
                txn.open_table(EVENTS)
                    .map_err(backend)?
                    .insert(event.seq, encode(&event).as_slice())
                    .map_err(backend)?;
                out.push(event);
            }
            Ok(out)
        })
        .await
    }

    async fn events_after(&self, after: u64, limit: usize) -> StoreResult<Vec<Event>> {
        self.read(|txn| {
            let t = txn.open_table(EVENTS).map_err(backend)?;
            let mut out = Vec::new();
            for entry in t.range(after.saturating_add(1)..).map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                out.push(decode(&format!("event {}", k.value()), v.value())?);
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
    }

    async fn prune_events(&self, before: Timestamp) -> StoreResult<u64> {
        self.write(move |txn| {
            let mut t = txn.open_table(EVENTS).map_err(backend)?;
            let mut doomed = Vec::new();
            for entry in t.range(0u64..).map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                let e: Event = decode(&format!("event {}", k.value()), v.value())?;
                if e.at >= before {
                    break;
                }
                doomed.push(e.seq);
            }
            for seq in &doomed {
                t.remove(*seq).map_err(backend)?;
            }
            Ok(doomed.len() as u64)
        })
        .await
    }
}

#[async_trait]
impl SecretStore for RedbStore {
    async fn secret(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        self.read(|txn| {
            let t = txn.open_table(SECRETS).map_err(backend)?;
            Ok(t.get(name).map_err(backend)?.map(|v| v.value().to_vec()))
        })
    }

    async fn put_secret(&self, name: &str, sealed: Vec<u8>) -> StoreResult<()> {
        let name = name.to_owned();
        self.write(move |txn| {
            txn.open_table(SECRETS)
                .map_err(backend)?
                .insert(name.as_str(), sealed.as_slice())
                .map_err(backend)?;
            Ok(())
        })
        .await
    }
}
