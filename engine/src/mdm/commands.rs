//! Enqueueing commands for many enrollments, then pushing to them.

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use crate::events::{Outbox, event, kind};
use crate::metrics::Metrics;
use crate::push::{PushOutcome, Pusher};
use crate::store::{CommandRecord, Emit, EnrollmentStore, QueueStore, QueuedCommand, StoreError};
use crate::wire::command::Command;
use crate::wire::enrollment_id::EnrollmentId;

/// What happened for one target of an enqueue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetOutcome {
    /// The target.
    pub id: EnrollmentId,
    /// Why the command was not queued for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Result of the push that followed, if one was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<PushOutcome>,
}

/// The result of [`Commander::enqueue`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnqueueOutcome {
    /// `CommandUUID`.
    pub command_uuid: String,
    /// `RequestType`.
    pub request_type: String,
    /// Why nothing was queued, if the command itself was refused (e.g. a duplicate UUID).
    pub command_error: Option<String>,
    /// One entry per requested target, in request order.
    pub targets: Vec<TargetOutcome>,
}

impl EnqueueOutcome {
    /// How many targets got the command.
    pub fn queued(&self) -> usize {
        if self.command_error.is_some() {
            return 0;
        }
        self.targets.iter().filter(|t| t.error.is_none()).count()
    }

    /// Whether anything (enqueue or push) went wrong for any target.
    pub fn has_errors(&self) -> bool {
        self.command_error.is_some()
            || self
                .targets
                .iter()
                .any(|t| t.error.is_some() || matches!(t.push, Some(PushOutcome::Failed(_))))
    }
}

/// Enqueues commands and pushes to their targets.
pub struct Commander {
    queue: Arc<dyn QueueStore>,
    enrollments: Arc<dyn EnrollmentStore>,
    pusher: Arc<dyn Pusher>,
    outbox: Outbox,
    metrics: Arc<Metrics>,
    max_queue_len: usize,
}

impl Commander {
    /// A commander over the given stores.
    pub fn new(
        queue: Arc<dyn QueueStore>,
        enrollments: Arc<dyn EnrollmentStore>,
        pusher: Arc<dyn Pusher>,
        outbox: Outbox,
        metrics: Arc<Metrics>,
        max_queue_len: usize,
    ) -> Self {
        Self {
            queue,
            enrollments,
            pusher,
            outbox,
            metrics,
            max_queue_len,
        }
    }

    /// Queue `command` for every known target (one stored copy), then push to them unless
    /// `push` is false. Storage failures are errors; per-target problems are in the outcome.
    pub async fn enqueue(
        &self,
        command: &Command,
        ids: &[EnrollmentId],
        push: bool,
    ) -> Result<EnqueueOutcome, StoreError> {
        let mut targets: Vec<TargetOutcome> = ids
            .iter()
            .map(|id| TargetOutcome {
                id: id.clone(),
                error: None,
                push: None,
            })
            .collect();
        for t in &mut targets {
            if self.enrollments.enrollment(&t.id).await?.is_none() {
                t.error = Some(format!("unknown enrollment {}", t.id));
            }
        }
        let mut command_error = None;
        loop {
            let ok: Vec<EnrollmentId> = targets
                .iter()
                .filter(|t| t.error.is_none())
                .map(|t| t.id.clone())
                .collect();
            if ok.is_empty() {
                break;
            }
            let now = time::OffsetDateTime::now_utc();
            let enqueued = Emit::events(vec![event(
                kind::COMMAND_ENQUEUED,
                None,
                json!({
                    "command_uuid": command.uuid,
                    "request_type": command.request_type,
                    "targets": ok,
                }),
            )]);
            match self
                .queue
                .enqueue_emitting(command, &ok, self.max_queue_len, now, enqueued)
                .await
            {
                Ok(events) => {
                    self.outbox.broadcast(&events);
                    break;
                }
                Err(StoreError::QueueFull { id, limit }) => mark(
                    &mut targets,
                    &id,
                    format!("queue is full ({limit} pending commands)"),
                ),
                Err(StoreError::UnknownEnrollment(id)) => {
                    mark(&mut targets, &id, format!("unknown enrollment {id}"))
                }
                Err(e @ StoreError::DuplicateCommand(_)) => {
                    command_error = Some(e.to_string());
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let mut outcome = EnqueueOutcome {
            command_uuid: command.uuid.clone(),
            request_type: command.request_type.clone(),
            command_error,
            targets,
        };
        let queued: Vec<EnrollmentId> = if outcome.command_error.is_some() {
            Vec::new()
        } else {
            outcome
                .targets
                .iter()
                .filter(|t| t.error.is_none())
                .map(|t| t.id.clone())
                .collect()
        };
        if queued.is_empty() {
            return Ok(outcome);
        }
        self.metrics.commands_enqueued(queued.len());
        if push {
            for (id, result) in self.pusher.push(&queued).await {
                if let Some(t) = outcome.targets.iter_mut().find(|t| t.id == id) {
                    t.push = Some(result);
                }
            }
        }
        Ok(outcome)
    }
}

impl Commander {
    /// A command with every target's progress and results.
    pub async fn command(&self, uuid: &str) -> Result<Option<CommandRecord>, StoreError> {
        self.queue.command(uuid).await
    }

    /// An enrollment's pending queue in delivery order, or `None` for an unknown enrollment.
    pub async fn queue(&self, id: &EnrollmentId) -> Result<Option<Vec<QueuedCommand>>, StoreError> {
        if self.enrollments.enrollment(id).await?.is_none() {
            return Ok(None);
        }
        self.queue.queue(id).await.map(Some)
    }

    /// Cancel a command queued for one enrollment, recording `command.cancelled` in the same
    /// write. Returns whether it was queued (nothing is recorded when it was not).
    pub async fn cancel(&self, id: &EnrollmentId, uuid: &str) -> Result<bool, StoreError> {
        let now = time::OffsetDateTime::now_utc();
        let (target, command_uuid) = (id.clone(), uuid.to_owned());
        let emit = Emit::with(move |cancelled: &bool| {
            if *cancelled {
                vec![event(
                    kind::COMMAND_CANCELLED,
                    Some(&target),
                    json!({ "command_uuid": command_uuid }),
                )]
            } else {
                Vec::new()
            }
        });
        let (cancelled, events) = self.queue.cancel_emitting(id, uuid, now, emit).await?;
        self.outbox.broadcast(&events);
        Ok(cancelled)
    }
}

fn mark(targets: &mut [TargetOutcome], id: &EnrollmentId, error: String) {
    for t in targets.iter_mut().filter(|t| &t.id == id) {
        t.error = Some(error.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::events::testing::FailingAppends;
    use crate::push::PushOutcome;
    use crate::store::EventStore;
    use crate::store::redb::RedbStore;
    use crate::wire::checkin::Authenticate;
    use crate::wire::enrollment_id::{Channel, ChannelKind};

    /// Pushes nothing.
    struct NoPush;

    #[async_trait::async_trait]
    impl Pusher for NoPush {
        async fn push(&self, ids: &[EnrollmentId]) -> Vec<(EnrollmentId, PushOutcome)> {
            ids.iter()
                .map(|id| (id.clone(), PushOutcome::Failed("test".into())))
                .collect()
        }
    }

    #[tokio::test]
    async fn a_cancel_is_logged_with_its_change_and_only_when_something_was_queued() {
        let store = Arc::new(RedbStore::in_memory().unwrap());
        // Separate appends fail: only an event written with the cancel itself reaches the log.
        let outbox = Outbox::new(Arc::new(FailingAppends(store.clone())), 16);
        let mut live = outbox.subscribe();
        let commander = Commander::new(
            store.clone(),
            store.clone(),
            Arc::new(NoPush),
            outbox,
            Arc::new(Metrics::default()),
            10,
        );
        let id = EnrollmentId::new("UDID-CANCEL");
        let channel = Channel {
            id: id.clone(),
            parent: None,
            kind: ChannelKind::Device,
        };
        let auth = Authenticate {
            topic: "t".into(),
            ..Default::default()
        };
        store
            .store_authenticate(
                &channel,
                &auth,
                time::OffsetDateTime::now_utc(),
                Emit::none(),
            )
            .await
            .unwrap();
        let cmd = Command::build("CANCEL-ME", "ProfileList", plist::Dictionary::new());
        commander
            .enqueue(&cmd, std::slice::from_ref(&id), false)
            .await
            .unwrap();
        while live.try_recv().is_ok() {}
        let before = store.events_after(0, 100).await.unwrap().len();

        assert!(commander.cancel(&id, "CANCEL-ME").await.unwrap());
        let log = store.events_after(0, 100).await.unwrap();
        assert_eq!(log.len(), before + 1, "events: {log:?}");
        let cancelled = log.last().unwrap();
        assert_eq!(cancelled.kind, kind::COMMAND_CANCELLED);
        assert_eq!(cancelled.enrollment_id.as_ref(), Some(&id));
        assert_eq!(cancelled.data["command_uuid"], "CANCEL-ME");
        assert_eq!(live.try_recv().unwrap().seq, cancelled.seq);
        assert_eq!(commander.queue(&id).await.unwrap(), Some(Vec::new()));

        // Nothing queued any more: no change, no event.
        assert!(!commander.cancel(&id, "CANCEL-ME").await.unwrap());
        assert_eq!(store.events_after(0, 100).await.unwrap().len(), before + 1);
        assert_eq!(
            commander
                .queue(&EnrollmentId::new("UNKNOWN"))
                .await
                .unwrap(),
            None
        );
    }
}
