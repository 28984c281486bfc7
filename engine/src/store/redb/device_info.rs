//! [`DeviceInfoStore`] on redb: the last verified MachineInfo per UDID in `machine_info`.

use ::redb::ReadableTable;
use async_trait::async_trait;

use super::tables::MACHINE_INFO;
use super::{RedbStore, backend, decode, encode};
use crate::store::{DeviceInfoStore, Emit, Event, MachineInfoRecord, StoreResult, Timestamp};
use crate::wire::machine_info::MachineInfo;

#[async_trait]
impl DeviceInfoStore for RedbStore {
    async fn record_machine_info(
        &self,
        info: &MachineInfo,
        now: Timestamp,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>> {
        let info = info.clone();
        self.write_emitting(emit, now, move |txn| {
            let mut t = txn.open_table(MACHINE_INFO).map_err(backend)?;
            let first_seen_at = t
                .get(info.udid.as_str())
                .map_err(backend)?
                .map(|v| decode::<MachineInfoRecord>("machine info", v.value()))
                .transpose()?
                .map_or(now, |r| r.first_seen_at);
            let record = MachineInfoRecord {
                info: info.clone(),
                first_seen_at,
                last_seen_at: now,
            };
            t.insert(info.udid.as_str(), encode(&record).as_slice())
                .map_err(backend)?;
            Ok(())
        })
        .await
        .map(|(_, events)| events)
    }

    async fn machine_info(&self, udid: &str) -> StoreResult<Option<MachineInfoRecord>> {
        self.read(|txn| {
            let t = txn.open_table(MACHINE_INFO).map_err(backend)?;
            t.get(udid)
                .map_err(backend)?
                .map(|v| decode("machine info", v.value()))
                .transpose()
        })
    }
}
