//! [`PushStore`] on redb: the push half of the enrollment records in `enrollments`.

use async_trait::async_trait;

use super::enrollments::{load, save};
use super::tables::ENROLLMENTS;
use super::{RedbStore, backend, decode};
use crate::store::{Emit, Enrollment, Event, PushInfo, PushStore, StoreResult};
use crate::wire::enrollment_id::EnrollmentId;

#[async_trait]
impl PushStore for RedbStore {
    async fn push_targets(
        &self,
        ids: &[EnrollmentId],
    ) -> StoreResult<Vec<(EnrollmentId, Option<PushInfo>)>> {
        self.read(|txn| {
            let table = txn.open_table(ENROLLMENTS).map_err(backend)?;
            ids.iter()
                .map(|id| {
                    let info = match table.get(id.as_str()).map_err(backend)? {
                        Some(v) => {
                            let e: Enrollment = decode(&format!("enrollment {id}"), v.value())?;
                            e.push.filter(|_| e.enabled)
                        }
                        None => None,
                    };
                    Ok((id.clone(), info))
                })
                .collect()
        })
    }

    async fn invalidate_push(&self, id: &EnrollmentId, emit: Emit<()>) -> StoreResult<Vec<Event>> {
        let id = id.clone();
        let now = time::OffsetDateTime::now_utc();
        self.write_emitting(emit, now, move |txn| {
            if let Some(mut e) = load(txn, id.as_str())?
                && let Some(p) = e.push.as_mut()
            {
                p.valid = false;
                save(txn, &e)?;
            }
            Ok(())
        })
        .await
        .map(|(_, events)| events)
    }
}
