//! [`ProfileStore`] on redb: metadata in `profiles`, bytes in `profile_bytes`.

use async_trait::async_trait;

use super::tables::{PROFILE_BYTES, PROFILES};
use super::{RedbStore, backend, decode, encode};
use crate::seal::context;
use crate::store::{
    Emit, Event, ProfileMeta, ProfileStore, StoreError, StoreResult, StoredProfile,
};

#[async_trait]
impl ProfileStore for RedbStore {
    async fn put_profile_emitting(
        &self,
        profile: &StoredProfile,
        emit: Emit<bool>,
    ) -> StoreResult<(bool, Vec<Event>)> {
        let p = profile.clone();
        let sealed = self.seal_value(&context::profile_bytes(&p.meta.name), &p.bytes);
        self.write_emitting(emit, time::OffsetDateTime::now_utc(), move |txn| {
            let name = p.meta.name.as_str();
            let replaced = txn
                .open_table(PROFILES)
                .map_err(backend)?
                .insert(name, encode(&p.meta).as_slice())
                .map_err(backend)?
                .is_some();
            txn.open_table(PROFILE_BYTES)
                .map_err(backend)?
                .insert(name, sealed.as_slice())
                .map_err(backend)?;
            Ok(replaced)
        })
        .await
    }

    async fn profile(&self, name: &str) -> StoreResult<Option<StoredProfile>> {
        self.read(|txn| {
            let meta = txn.open_table(PROFILES).map_err(backend)?;
            let Some(m) = meta.get(name).map_err(backend)? else {
                return Ok(None);
            };
            let what = format!("profile {name}");
            let meta: ProfileMeta = decode(&what, m.value())?;
            let bytes = txn
                .open_table(PROFILE_BYTES)
                .map_err(backend)?
                .get(name)
                .map_err(backend)?
                .ok_or_else(|| StoreError::Corrupt {
                    what: what.clone(),
                    detail: "its bytes are missing".into(),
                })?;
            let bytes = self.open_value(&what, &context::profile_bytes(name), bytes.value())?;
            Ok(Some(StoredProfile { meta, bytes }))
        })
    }

    async fn profiles(&self) -> StoreResult<Vec<ProfileMeta>> {
        self.read(|txn| {
            let meta = txn.open_table(PROFILES).map_err(backend)?;
            let mut out = Vec::new();
            for e in meta.range::<&str>(..).map_err(backend)? {
                let (k, v) = e.map_err(backend)?;
                out.push(decode(&format!("profile {}", k.value()), v.value())?);
            }
            Ok(out)
        })
    }

    async fn delete_profile_emitting(
        &self,
        name: &str,
        emit: Emit<bool>,
    ) -> StoreResult<(bool, Vec<Event>)> {
        let name = name.to_owned();
        self.write_emitting(emit, time::OffsetDateTime::now_utc(), move |txn| {
            let existed = txn
                .open_table(PROFILES)
                .map_err(backend)?
                .remove(name.as_str())
                .map_err(backend)?
                .is_some();
            txn.open_table(PROFILE_BYTES)
                .map_err(backend)?
                .remove(name.as_str())
                .map_err(backend)?;
            Ok(existed)
        })
        .await
    }
}
