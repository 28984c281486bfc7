//! Last-seen times, batched: recorded in memory on every request and flushed periodically, so
//! an `Idle` check-in with an empty queue costs no write.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::{EnrollmentStore, StoreResult, Timestamp};
use crate::wire::enrollment_id::EnrollmentId;

/// Pending last-seen updates.
#[derive(Debug, Default)]
pub struct LastSeen {
    pending: Mutex<HashMap<EnrollmentId, Timestamp>>,
}

impl LastSeen {
    /// Remember that `id` was seen at `at`.
    pub fn record(&self, id: &EnrollmentId, at: Timestamp) {
        let mut map = self.pending.lock().expect("last-seen lock poisoned");
        match map.get_mut(id) {
            Some(t) if *t >= at => {}
            Some(t) => *t = at,
            None => {
                map.insert(id.clone(), at);
            }
        }
    }

    /// Write every pending update in one batch. Returns how many were written.
    pub async fn flush(&self, store: &dyn EnrollmentStore) -> StoreResult<usize> {
        let batch: Vec<_> = std::mem::take(&mut *self.pending.lock().expect("last-seen lock"))
            .into_iter()
            .collect();
        let n = batch.len();
        if n > 0 {
            store.touch(batch).await?;
        }
        Ok(n)
    }
}
