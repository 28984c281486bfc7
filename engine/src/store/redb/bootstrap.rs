//! [`BootstrapStore`] on redb: sealed bootstrap tokens in `bootstrap`, the identity that escrowed
//! each one in `bootstrap_holder`.

use async_trait::async_trait;

use super::tables::{BOOTSTRAP, BOOTSTRAP_HOLDER};
use super::{RedbStore, backend};
use crate::store::{BootstrapStore, CertHash, Emit, Event, StoreResult};
use crate::wire::enrollment_id::EnrollmentId;

#[async_trait]
impl BootstrapStore for RedbStore {
    async fn store_bootstrap_token(
        &self,
        id: &EnrollmentId,
        sealed: Option<Vec<u8>>,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>> {
        let id = id.clone();
        let now = time::OffsetDateTime::now_utc();
        self.write_emitting(emit, now, move |txn| {
            let mut t = txn.open_table(BOOTSTRAP).map_err(backend)?;
            match &sealed {
                Some(s) => t.insert(id.as_str(), s.as_slice()).map_err(backend)?,
                None => t.remove(id.as_str()).map_err(backend)?,
            };
            // No holder is known for this token: forget any earlier one.
            txn.open_table(BOOTSTRAP_HOLDER)
                .map_err(backend)?
                .remove(id.as_str())
                .map_err(backend)?;
            Ok(())
        })
        .await
        .map(|(_, events)| events)
    }

    async fn bootstrap_token(&self, id: &EnrollmentId) -> StoreResult<Option<Vec<u8>>> {
        self.read(|txn| {
            let t = txn.open_table(BOOTSTRAP).map_err(backend)?;
            Ok(t.get(id.as_str())
                .map_err(backend)?
                .map(|v| v.value().to_vec()))
        })
    }

    async fn store_bootstrap_token_held(
        &self,
        id: &EnrollmentId,
        sealed: Option<Vec<u8>>,
        holder: &CertHash,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>> {
        let (id, holder) = (id.clone(), *holder);
        let now = time::OffsetDateTime::now_utc();
        self.write_emitting(emit, now, move |txn| {
            let mut t = txn.open_table(BOOTSTRAP).map_err(backend)?;
            let mut h = txn.open_table(BOOTSTRAP_HOLDER).map_err(backend)?;
            match &sealed {
                Some(s) => {
                    t.insert(id.as_str(), s.as_slice()).map_err(backend)?;
                    h.insert(id.as_str(), holder.0.as_slice())
                        .map_err(backend)?;
                }
                None => {
                    t.remove(id.as_str()).map_err(backend)?;
                    h.remove(id.as_str()).map_err(backend)?;
                }
            };
            Ok(())
        })
        .await
        .map(|(_, events)| events)
    }

    async fn bootstrap_holder(&self, id: &EnrollmentId) -> StoreResult<Option<CertHash>> {
        self.read(|txn| {
            let t = txn.open_table(BOOTSTRAP_HOLDER).map_err(backend)?;
            t.get(id.as_str())
                .map_err(backend)?
                .map(|v| {
                    v.value().try_into().map(CertHash).map_err(|_| {
                        crate::store::StoreError::Corrupt {
                            what: format!("bootstrap token holder of {id}"),
                            detail: "not a 32-byte hash".into(),
                        }
                    })
                })
                .transpose()
        })
    }
}
