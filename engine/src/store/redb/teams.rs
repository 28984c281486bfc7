//! [`TeamStore`] on redb: one sealed JSON record per team in `teams`, by name.

use async_trait::async_trait;

use super::sealed::{open_json, seal_json};
use super::tables::TEAMS;
use super::{RedbStore, backend};
use crate::seal::context;
use crate::store::{Emit, Event, StoreResult, Team, TeamStore};

#[async_trait]
impl TeamStore for RedbStore {
    async fn put_team_emitting(
        &self,
        team: &Team,
        emit: Emit<()>,
    ) -> StoreResult<((), Vec<Event>)> {
        let name = team.name.clone();
        let sealed = seal_json(&self.seal, &context::team(&name), team);
        self.write_emitting(emit, time::OffsetDateTime::now_utc(), move |txn| {
            txn.open_table(TEAMS)
                .map_err(backend)?
                .insert(name.as_str(), sealed.as_slice())
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn delete_team_emitting(
        &self,
        name: &str,
        emit: Emit<bool>,
    ) -> StoreResult<(bool, Vec<Event>)> {
        let name = name.to_owned();
        self.write_emitting(emit, time::OffsetDateTime::now_utc(), move |txn| {
            Ok(txn
                .open_table(TEAMS)
                .map_err(backend)?
                .remove(name.as_str())
                .map_err(backend)?
                .is_some())
        })
        .await
    }

    async fn team(&self, name: &str) -> StoreResult<Option<Team>> {
        self.read(|txn| {
            let t = txn.open_table(TEAMS).map_err(backend)?;
            t.get(name)
                .map_err(backend)?
                .map(|v| {
                    open_json(
                        &self.seal,
                        &format!("team {name}"),
                        &context::team(name),
                        v.value(),
                    )
                })
                .transpose()
        })
    }

    async fn teams(&self) -> StoreResult<Vec<Team>> {
        self.read(|txn| {
            let t = txn.open_table(TEAMS).map_err(backend)?;
            let mut out = Vec::new();
            for e in t.range::<&str>(..).map_err(backend)? {
                let (k, v) = e.map_err(backend)?;
                let name = k.value();
                out.push(open_json(
                    &self.seal,
                    &format!("team {name}"),
                    &context::team(name),
                    v.value(),
                )?);
            }
            Ok(out)
        })
    }
}
