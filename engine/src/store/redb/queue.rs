//! [`QueueStore`] on redb: one stored command, many targets, a FIFO per enrollment.

use ::redb::{ReadTransaction, ReadableTable, WriteTransaction};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::tables::{
    COMMAND_RAW, COMMANDS, ENROLLMENTS, FINISHED, NOT_NOW, QUEUE, QUEUE_INDEX, RESULTS, TARGETS,
    next_seq,
};
use super::{RedbStore, backend, decode, encode};
use crate::seal::context;
use crate::store::{
    CommandRecord, Emit, Event, NextCommand, QueueStore, QueuedCommand, ReportOutcome,
    ReportRecord, StoreError, StoreResult, TargetRecord, TargetState, Timestamp,
};
use crate::wire::command::Command;
use crate::wire::enrollment_id::EnrollmentId;
use crate::wire::report::ErrorChainItem;

/// Stored per command, next to its raw bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CommandMeta {
    request_type: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: Timestamp,
    #[serde(with = "time::serde::rfc3339::option")]
    finished_at: Option<Timestamp>,
    /// Targets not yet in a terminal state.
    pending: u32,
}

fn unix_ms(t: Timestamp) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The queue entries `(seq, uuid)` of one enrollment, in order.
fn entries<T: ReadableTable<(&'static str, u64), &'static str>>(
    table: &T,
    id: &str,
) -> StoreResult<Vec<(u64, String)>> {
    let mut out = Vec::new();
    for entry in table.range((id, 0u64)..=(id, u64::MAX)).map_err(backend)? {
        let (k, v) = entry.map_err(backend)?;
        out.push((k.value().1, v.value().to_owned()));
    }
    Ok(out)
}

fn load_meta<T: ReadableTable<&'static str, &'static [u8]>>(
    table: &T,
    uuid: &str,
) -> StoreResult<Option<CommandMeta>> {
    table
        .get(uuid)
        .map_err(backend)?
        .map(|v| decode(&format!("command {uuid}"), v.value()))
        .transpose()
}

fn queued(
    store: &RedbStore,
    txn: &ReadTransaction,
    uuid: &str,
    not_now: bool,
) -> StoreResult<QueuedCommand> {
    let meta = load_meta(&txn.open_table(COMMANDS).map_err(backend)?, uuid)?;
    let raw = txn
        .open_table(COMMAND_RAW)
        .map_err(backend)?
        .get(uuid)
        .map_err(backend)?
        .map(|v| v.value().to_vec());
    match (meta, raw) {
        (Some(meta), Some(raw)) => Ok(QueuedCommand {
            uuid: uuid.to_owned(),
            request_type: meta.request_type,
            raw: store.open_value(
                &format!("command {uuid}"),
                &context::command_raw(uuid),
                &raw,
            )?,
            not_now,
            enqueued_at: meta.created_at,
        }),
        _ => Err(StoreError::Corrupt {
            what: format!("command {uuid}"),
            detail: "queued but not stored".into(),
        }),
    }
}

/// Move one target of a command to a terminal state and drop it from the queue; `result` is
/// the sealed raw report. Returns whether that finished the command for every target.
#[allow(clippy::too_many_arguments)]
fn finish_target(
    txn: &WriteTransaction,
    id: &str,
    uuid: &str,
    seq: u64,
    state: TargetState,
    error_chain: &[ErrorChainItem],
    result: Option<&[u8]>,
    now: Timestamp,
) -> StoreResult<bool> {
    txn.open_table(QUEUE)
        .map_err(backend)?
        .remove((id, seq))
        .map_err(backend)?;
    txn.open_table(QUEUE_INDEX)
        .map_err(backend)?
        .remove((id, uuid))
        .map_err(backend)?;
    txn.open_table(NOT_NOW)
        .map_err(backend)?
        .remove((id, uuid))
        .map_err(backend)?;
    set_target(txn, id, uuid, state, error_chain, now)?;
    if let Some(raw) = result {
        txn.open_table(RESULTS)
            .map_err(backend)?
            .insert((uuid, id), raw)
            .map_err(backend)?;
    }
    let mut commands = txn.open_table(COMMANDS).map_err(backend)?;
    let Some(mut meta) = load_meta(&commands, uuid)? else {
        return Ok(false);
    };
    meta.pending = meta.pending.saturating_sub(1);
    let finished = meta.pending == 0;
    if finished {
        meta.finished_at = Some(now);
        txn.open_table(FINISHED)
            .map_err(backend)?
            .insert((unix_ms(now), uuid), ())
            .map_err(backend)?;
    }
    commands
        .insert(uuid, encode(&meta).as_slice())
        .map_err(backend)?;
    Ok(finished)
}

fn set_target(
    txn: &WriteTransaction,
    id: &str,
    uuid: &str,
    state: TargetState,
    error_chain: &[ErrorChainItem],
    now: Timestamp,
) -> StoreResult<()> {
    let record = TargetRecord {
        enrollment_id: EnrollmentId::new(id),
        state,
        error_chain: error_chain.to_vec(),
        updated_at: now,
        result: None,
    };
    txn.open_table(TARGETS)
        .map_err(backend)?
        .insert((uuid, id), encode(&record).as_slice())
        .map_err(backend)?;
    Ok(())
}

fn has_not_now(txn: &ReadTransaction, id: &str) -> StoreResult<bool> {
    let t = txn.open_table(NOT_NOW).map_err(backend)?;
    let mut range = t.range((id, "")..).map_err(backend)?;
    Ok(match range.next() {
        Some(entry) => entry.map_err(backend)?.0.value().0 == id,
        None => false,
    })
}

#[async_trait]
impl QueueStore for RedbStore {
    async fn enqueue_emitting(
        &self,
        command: &Command,
        targets: &[EnrollmentId],
        max_queue_len: usize,
        now: Timestamp,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>> {
        let command = command.clone();
        let sealed_raw = self.seal_value(&context::command_raw(&command.uuid), &command.raw);
        let mut targets = targets.to_vec();
        targets.sort();
        targets.dedup();
        self.write_emitting(emit, now, move |txn| {
            let uuid = command.uuid.as_str();
            let mut commands = txn.open_table(COMMANDS).map_err(backend)?;
            if commands.get(uuid).map_err(backend)?.is_some() {
                return Err(StoreError::DuplicateCommand(command.uuid.clone()));
            }
            let mut queue = txn.open_table(QUEUE).map_err(backend)?;
            {
                let enrollments = txn.open_table(ENROLLMENTS).map_err(backend)?;
                for id in &targets {
                    if enrollments.get(id.as_str()).map_err(backend)?.is_none() {
                        return Err(StoreError::UnknownEnrollment(id.clone()));
                    }
                    let len = queue
                        .range((id.as_str(), 0u64)..=(id.as_str(), u64::MAX))
                        .map_err(backend)?
                        .take(max_queue_len)
                        .count();
                    if len >= max_queue_len {
                        return Err(StoreError::QueueFull {
                            id: id.clone(),
                            limit: max_queue_len,
                        });
                    }
                }
            }
            let meta = CommandMeta {
                request_type: command.request_type.clone(),
                created_at: now,
                finished_at: None,
                pending: targets.len() as u32,
            };
            commands
                .insert(uuid, encode(&meta).as_slice())
                .map_err(backend)?;
            txn.open_table(COMMAND_RAW)
                .map_err(backend)?
                .insert(uuid, sealed_raw.as_slice())
                .map_err(backend)?;
            let mut index = txn.open_table(QUEUE_INDEX).map_err(backend)?;
            for id in &targets {
                let seq = next_seq(txn, "queue_seq")?;
                queue.insert((id.as_str(), seq), uuid).map_err(backend)?;
                index.insert((id.as_str(), uuid), seq).map_err(backend)?;
                set_target(txn, id.as_str(), uuid, TargetState::Pending, &[], now)?;
            }
            Ok(())
        })
        .await
        .map(|(_, events)| events)
    }

    async fn next_command(
        &self,
        id: &EnrollmentId,
        mode: NextCommand,
    ) -> StoreResult<Option<QueuedCommand>> {
        let reset_flags =
            mode == NextCommand::AfterIdle && self.read(|txn| has_not_now(txn, id.as_str()))?;
        if reset_flags {
            let owned = id.clone();
            self.write(move |txn| {
                let id = owned.as_str();
                txn.open_table(NOT_NOW)
                    .map_err(backend)?
                    .retain_in((id, "")..=(id, "\u{10FFFF}"), |(eid, _), ()| eid != id)
                    .map_err(backend)?;
                Ok(())
            })
            .await?;
        }
        self.read(|txn| {
            let queue = txn.open_table(QUEUE).map_err(backend)?;
            let not_now = txn.open_table(NOT_NOW).map_err(backend)?;
            for entry in queue
                .range((id.as_str(), 0u64)..=(id.as_str(), u64::MAX))
                .map_err(backend)?
            {
                let (_, v) = entry.map_err(backend)?;
                let uuid = v.value();
                let flagged = not_now.get((id.as_str(), uuid)).map_err(backend)?.is_some();
                if mode == NextCommand::AfterIdle || !flagged {
                    return queued(self, txn, uuid, flagged).map(Some);
                }
            }
            Ok(None)
        })
    }

    async fn record_report(
        &self,
        id: &EnrollmentId,
        report: &ReportRecord,
        now: Timestamp,
        emit: Emit<ReportOutcome>,
    ) -> StoreResult<(ReportOutcome, Vec<Event>)> {
        let (id, report) = (id.clone(), report.clone());
        let sealed_result = self.seal_value(
            &context::command_result(&report.command_uuid, id.as_str()),
            &report.raw,
        );
        self.write_emitting(emit, now, move |txn| {
            let (eid, uuid) = (id.as_str(), report.command_uuid.as_str());
            let seq = txn
                .open_table(QUEUE_INDEX)
                .map_err(backend)?
                .get((eid, uuid))
                .map_err(backend)?
                .map(|v| v.value());
            let Some(seq) = seq else {
                return Ok(ReportOutcome::NotQueued);
            };
            let Some(state) = TargetState::from_status(report.status) else {
                return Ok(ReportOutcome::NotQueued);
            };
            if state == TargetState::NotNow {
                txn.open_table(NOT_NOW)
                    .map_err(backend)?
                    .insert((eid, uuid), ())
                    .map_err(backend)?;
                set_target(txn, eid, uuid, state, &[], now)?;
                return Ok(ReportOutcome::Recorded {
                    command_finished: false,
                });
            }
            let finished = finish_target(
                txn,
                eid,
                uuid,
                seq,
                state,
                &report.error_chain,
                Some(&sealed_result),
                now,
            )?;
            Ok(ReportOutcome::Recorded {
                command_finished: finished,
            })
        })
        .await
    }

    async fn clear_queue(&self, ids: &[EnrollmentId], now: Timestamp) -> StoreResult<u64> {
        let ids = ids.to_vec();
        self.write(move |txn| {
            let mut removed = 0;
            for id in &ids {
                let pending = entries(&txn.open_table(QUEUE).map_err(backend)?, id.as_str())?;
                for (seq, uuid) in pending {
                    finish_target(
                        txn,
                        id.as_str(),
                        &uuid,
                        seq,
                        TargetState::Cancelled,
                        &[],
                        None,
                        now,
                    )?;
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
    }

    async fn queue(&self, id: &EnrollmentId) -> StoreResult<Vec<QueuedCommand>> {
        self.read(|txn| {
            let items = entries(&txn.open_table(QUEUE).map_err(backend)?, id.as_str())?;
            let not_now = txn.open_table(NOT_NOW).map_err(backend)?;
            items
                .iter()
                .map(|(_, uuid)| {
                    let flagged = not_now
                        .get((id.as_str(), uuid.as_str()))
                        .map_err(backend)?
                        .is_some();
                    queued(self, txn, uuid, flagged)
                })
                .collect()
        })
    }

    async fn cancel_emitting(
        &self,
        id: &EnrollmentId,
        uuid: &str,
        now: Timestamp,
        emit: Emit<bool>,
    ) -> StoreResult<(bool, Vec<Event>)> {
        let (id, uuid) = (id.clone(), uuid.to_owned());
        self.write_emitting(emit, now, move |txn| {
            let seq = txn
                .open_table(QUEUE_INDEX)
                .map_err(backend)?
                .get((id.as_str(), uuid.as_str()))
                .map_err(backend)?
                .map(|v| v.value());
            match seq {
                Some(seq) => {
                    finish_target(
                        txn,
                        id.as_str(),
                        &uuid,
                        seq,
                        TargetState::Cancelled,
                        &[],
                        None,
                        now,
                    )?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
        .await
    }

    async fn command(&self, uuid: &str) -> StoreResult<Option<CommandRecord>> {
        self.read(|txn| {
            let Some(meta) = load_meta(&txn.open_table(COMMANDS).map_err(backend)?, uuid)? else {
                return Ok(None);
            };
            let raw = txn
                .open_table(COMMAND_RAW)
                .map_err(backend)?
                .get(uuid)
                .map_err(backend)?
                .map(|v| {
                    self.open_value(
                        &format!("command {uuid}"),
                        &context::command_raw(uuid),
                        v.value(),
                    )
                })
                .transpose()?
                .unwrap_or_default();
            let results = txn.open_table(RESULTS).map_err(backend)?;
            let mut targets = Vec::new();
            for entry in txn
                .open_table(TARGETS)
                .map_err(backend)?
                .range((uuid, "")..)
                .map_err(backend)?
            {
                let (k, v) = entry.map_err(backend)?;
                let (u, id) = k.value();
                if u != uuid {
                    break;
                }
                let mut t: TargetRecord = decode(&format!("target {uuid}/{id}"), v.value())?;
                t.result = results
                    .get((uuid, id))
                    .map_err(backend)?
                    .map(|r| {
                        self.open_value(
                            &format!("result {uuid}/{id}"),
                            &context::command_result(uuid, id),
                            r.value(),
                        )
                    })
                    .transpose()?;
                targets.push(t);
            }
            Ok(Some(CommandRecord {
                uuid: uuid.to_owned(),
                request_type: meta.request_type,
                raw,
                created_at: meta.created_at,
                finished_at: meta.finished_at,
                targets,
            }))
        })
    }

    async fn collect_garbage(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        let cutoff = unix_ms(before);
        self.write(move |txn| {
            let mut finished = txn.open_table(FINISHED).map_err(backend)?;
            let mut doomed = Vec::new();
            for entry in finished
                .range((i64::MIN, "")..(cutoff, ""))
                .map_err(backend)?
            {
                if doomed.len() >= limit {
                    break;
                }
                let (k, _) = entry.map_err(backend)?;
                let (at, uuid) = k.value();
                doomed.push((at, uuid.to_owned()));
            }
            let mut commands = txn.open_table(COMMANDS).map_err(backend)?;
            let mut raw = txn.open_table(COMMAND_RAW).map_err(backend)?;
            let mut targets = txn.open_table(TARGETS).map_err(backend)?;
            let mut results = txn.open_table(RESULTS).map_err(backend)?;
            for (at, uuid) in &doomed {
                let u = uuid.as_str();
                finished.remove((*at, u)).map_err(backend)?;
                // A command re-used its UUID? Only delete it if it is still finished.
                if load_meta(&commands, u)?.is_some_and(|m| m.pending == 0) {
                    commands.remove(u).map_err(backend)?;
                    raw.remove(u).map_err(backend)?;
                    targets
                        .retain_in((u, "")..=(u, "\u{10FFFF}"), |(cu, _), _| cu != u)
                        .map_err(backend)?;
                    results
                        .retain_in((u, "")..=(u, "\u{10FFFF}"), |(cu, _), _| cu != u)
                        .map_err(backend)?;
                }
            }
            Ok(doomed.len() as u64)
        })
        .await
    }
}
