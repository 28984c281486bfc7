//! [`EventStore`] on redb: the event log in `events`, keyed by sequence number.

use ::redb::ReadableTable;
use async_trait::async_trait;

use super::tables::{EVENTS, next_seq};
use super::{RedbStore, backend, decode, encode};
use crate::store::{Event, EventStore, NewEvent, StoreResult, Timestamp};

/// Append events inside an open write transaction (so state and its events commit together).
pub(super) fn append_in(
    txn: &::redb::WriteTransaction,
    events: &[NewEvent],
    now: Timestamp,
) -> StoreResult<Vec<Event>> {
    let mut out = Vec::with_capacity(events.len());
    for e in events {
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
}

#[async_trait]
impl EventStore for RedbStore {
    async fn append_events(
        &self,
        events: Vec<NewEvent>,
        now: Timestamp,
    ) -> StoreResult<Vec<Event>> {
        self.write(move |txn| append_in(txn, &events, now)).await
    }

    async fn events_after(&self, after: u64, limit: usize) -> StoreResult<Vec<Event>> {
        self.read(|txn| {
            let t = txn.open_table(EVENTS).map_err(backend)?;
            let mut out = Vec::new();
            for entry in t.range(after.saturating_add(1)..).map_err(backend)? {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = entry.map_err(backend)?;
                out.push(decode(&format!("event {}", k.value()), v.value())?);
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
