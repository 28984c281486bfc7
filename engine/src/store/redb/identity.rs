//! [`IdentityStore`] on redb.

use async_trait::async_trait;

use ::redb::WriteTransaction;

use super::tables::{
    BOOTSTRAP, BOOTSTRAP_HOLDER, CERT_BINDING, CERT_OWNER, CERT_PIN, CERT_RENEWAL, PIN_RELEASED,
    REENROLL_APPROVALS,
};
use super::{RedbStore, backend, decode, encode};
use crate::store::{
    CertBinding, CertHash, Emit, Event, IdentityStore, StoreError, StoreResult, Timestamp,
};
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

fn unix_ms(t: Timestamp) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Pin `hash` to `id`: it becomes owned by `id` for good, and ends a checked-out mark.
fn pin_in(txn: &WriteTransaction, id: &EnrollmentId, hash: &CertHash) -> StoreResult<()> {
    txn.open_table(CERT_OWNER)
        .map_err(backend)?
        .insert(hash.0.as_slice(), id.as_str())
        .map_err(backend)?;
    txn.open_table(CERT_PIN)
        .map_err(backend)?
        .insert(id.as_str(), hash.0.as_slice())
        .map_err(backend)?;
    txn.open_table(PIN_RELEASED)
        .map_err(backend)?
        .remove(id.as_str())
        .map_err(backend)?;
    Ok(())
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
        self.write_emitting(emit, now, move |txn| pin_in(txn, &id, &hash))
            .await
            .map(|(_, events)| events)
    }

    async fn repin_cert_clearing_escrow(
        &self,
        id: &EnrollmentId,
        hash: &CertHash,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>> {
        let (id, hash) = (id.clone(), *hash);
        let now = time::OffsetDateTime::now_utc();
        self.write_emitting(emit, now, move |txn| {
            pin_in(txn, &id, &hash)?;
            txn.open_table(BOOTSTRAP)
                .map_err(backend)?
                .remove(id.as_str())
                .map_err(backend)?;
            txn.open_table(BOOTSTRAP_HOLDER)
                .map_err(backend)?
                .remove(id.as_str())
                .map_err(backend)?;
            if let Some(mut e) = super::enrollments::load(txn, id.as_str())?
                && e.unlock_token_sealed.is_some()
            {
                e.unlock_token_sealed = None;
                super::enrollments::save(txn, &e)?;
            }
            Ok(())
        })
        .await
        .map(|(_, events)| events)
    }

    async fn release_pin(&self, id: &EnrollmentId) -> StoreResult<()> {
        let id = id.clone();
        self.write(move |txn| {
            txn.open_table(PIN_RELEASED)
                .map_err(backend)?
                .insert(id.as_str(), ())
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn pin_released(&self, id: &EnrollmentId) -> StoreResult<bool> {
        self.read(|txn| {
            let t = txn.open_table(PIN_RELEASED).map_err(backend)?;
            Ok(t.get(id.as_str()).map_err(backend)?.is_some())
        })
    }

    async fn approve_reenrollment_emitting(
        &self,
        id: &EnrollmentId,
        expires_at: Timestamp,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>> {
        let id = id.clone();
        let now = time::OffsetDateTime::now_utc();
        self.write_emitting(emit, now, move |txn| {
            txn.open_table(REENROLL_APPROVALS)
                .map_err(backend)?
                .insert(id.as_str(), unix_ms(expires_at))
                .map_err(backend)?;
            Ok(())
        })
        .await
        .map(|(_, events)| events)
    }

    async fn take_reenrollment_approval(
        &self,
        id: &EnrollmentId,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let id = id.clone();
        self.write(move |txn| {
            let mut t = txn.open_table(REENROLL_APPROVALS).map_err(backend)?;
            let expires = t.remove(id.as_str()).map_err(backend)?.map(|v| v.value());
            Ok(expires.is_some_and(|e| e > unix_ms(now)))
        })
        .await
    }

    async fn bind_cert(&self, hash: &CertHash, binding: &CertBinding) -> StoreResult<()> {
        let (hash, binding) = (*hash, binding.clone());
        self.write(move |txn| bind_in(txn, &hash, &binding)).await
    }

    async fn cert_binding(&self, hash: &CertHash) -> StoreResult<Option<CertBinding>> {
        self.read(|txn| {
            let t = txn.open_table(CERT_BINDING).map_err(backend)?;
            t.get(hash.0.as_slice())
                .map_err(backend)?
                .map(|v| decode("certificate binding", v.value()))
                .transpose()
        })
    }

    async fn link_renewal(&self, old: &CertHash, new: &CertHash) -> StoreResult<()> {
        let (old, new) = (*old, *new);
        self.write(move |txn| link_renewal_in(txn, &old, &new))
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

/// Record the binding of `hash` inside `txn` (see [`IdentityStore::bind_cert`]).
pub(super) fn bind_in(
    txn: &::redb::WriteTransaction,
    hash: &CertHash,
    binding: &CertBinding,
) -> StoreResult<()> {
    txn.open_table(CERT_BINDING)
        .map_err(backend)?
        .insert(hash.0.as_slice(), encode(binding).as_slice())
        .map_err(backend)?;
    Ok(())
}

/// Record that `new` renews `old` inside `txn` (see [`IdentityStore::link_renewal`]).
pub(super) fn link_renewal_in(
    txn: &::redb::WriteTransaction,
    old: &CertHash,
    new: &CertHash,
) -> StoreResult<()> {
    txn.open_table(CERT_RENEWAL)
        .map_err(backend)?
        .insert(new.0.as_slice(), old.0.as_slice())
        .map_err(backend)?;
    Ok(())
}
