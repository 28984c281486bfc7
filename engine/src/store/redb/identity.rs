//! [`IdentityStore`] on redb.

use async_trait::async_trait;

use super::tables::{CERT_OWNER, CERT_PIN, CERT_RENEWAL};
use super::{RedbStore, backend};
use crate::store::{CertHash, Emit, Event, IdentityStore, StoreError, StoreResult};
use crate::wire::enrollment_id::EnrollmentId;

fn to_hash(what: &str, bytes: &[u8]) -> StoreResult<CertHash> {
    bytes
        .try_into()
        .map(CertHash)
        .map_err(|_| StoreError::Corrupt {
            what: what.to_owned(),
            detail: format!("certificate hash has {} bytes, not 32", bytes.len()),
        })
}

#[async_trait]
impl IdentityStore for RedbStore {
    async fn cert_owner(&self, hash: &CertHash) -> StoreResult<Option<EnrollmentId>> {
        self.read(|txn| {
            let t = txn.open_table(CERT_OWNER).map_err(backend)?;
            Ok(t.get(hash.0.as_slice())
                .map_err(backend)?
                .map(|v| EnrollmentId::new(v.value())))
        })
    }

    async fn pinned_cert(&self, id: &EnrollmentId) -> StoreResult<Option<CertHash>> {
        self.read(|txn| {
            let t = txn.open_table(CERT_PIN).map_err(backend)?;
            t.get(id.as_str())
                .map_err(backend)?
                .map(|v| to_hash(&format!("certificate pin of {id}"), v.value()))
                .transpose()
        })
    }

    async fn pin_cert_emitting(
        &self,
        id: &EnrollmentId,
        hash: &CertHash,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>> {
        let (id, hash) = (id.clone(), *hash);
        let now = time::OffsetDateTime::now_utc();
        self.write_emitting(emit, now, move |txn| {
            txn.open_table(CERT_OWNER)
                .map_err(backend)?
                .insert(hash.0.as_slice(), id.as_str())
                .map_err(backend)?;
            txn.open_table(CERT_PIN)
                .map_err(backend)?
                .insert(id.as_str(), hash.0.as_slice())
                .map_err(backend)?;
            Ok(())
        })
        .await
        .map(|(_, events)| events)
    }

    async fn link_renewal(&self, old: &CertHash, new: &CertHash) -> StoreResult<()> {
        let (old, new) = (*old, *new);
        self.write(move |txn| {
            txn.open_table(CERT_RENEWAL)
                .map_err(backend)?
                .insert(new.0.as_slice(), old.0.as_slice())
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn renewed_from(&self, new: &CertHash) -> StoreResult<Option<CertHash>> {
        self.read(|txn| {
            let t = txn.open_table(CERT_RENEWAL).map_err(backend)?;
            t.get(new.0.as_slice())
                .map_err(backend)?
                .map(|v| to_hash("certificate renewal link", v.value()))
                .transpose()
        })
    }
}
