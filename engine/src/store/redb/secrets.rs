//! [`SecretStore`] on redb: sealed secrets by name in `secrets`.

use async_trait::async_trait;

use super::tables::SECRETS;
use super::{RedbStore, backend};
use crate::store::{Emit, Event, SecretStore, StoreResult};

#[async_trait]
impl SecretStore for RedbStore {
    async fn secret(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        self.read(|txn| {
            let t = txn.open_table(SECRETS).map_err(backend)?;
            Ok(t.get(name).map_err(backend)?.map(|v| v.value().to_vec()))
        })
    }

    async fn put_secret_emitting(
        &self,
        name: &str,
        sealed: Vec<u8>,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>> {
        let name = name.to_owned();
        let now = time::OffsetDateTime::now_utc();
        self.write_emitting(emit, now, move |txn| {
            txn.open_table(SECRETS)
                .map_err(backend)?
                .insert(name.as_str(), sealed.as_slice())
                .map_err(backend)?;
            Ok(())
        })
        .await
        .map(|(_, events)| events)
    }
}
