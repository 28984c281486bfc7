//! Enqueueing commands for many enrollments, then pushing to them.

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use crate::events::{Outbox, event, kind};
use crate::metrics::Metrics;
use crate::push::{PushOutcome, Pusher};
use crate::store::{Emit, EnrollmentStore, QueueStore, StoreError};
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

fn mark(targets: &mut [TargetOutcome], id: &EnrollmentId, error: String) {
    for t in targets.iter_mut().filter(|t| &t.id == id) {
        t.error = Some(error.clone());
    }
}
