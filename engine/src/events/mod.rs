//! The durable event outbox and live subscriptions.
//!
//! Services publish [`NewEvent`]s; the [`Outbox`] appends them to the [`EventStore`] (so
//! `GET /v1/events?after=SEQ` and future webhooks can replay them) and then broadcasts them to
//! in-process subscribers ([`Outbox::subscribe`]).

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::store::{Event, EventStore, NewEvent, StoreResult};
use crate::wire::enrollment_id::EnrollmentId;

/// Event kinds the engine emits.
pub mod kind {
    /// A device channel sent `Authenticate` (not yet able to receive commands).
    pub const ENROLLMENT_AUTHENTICATED: &str = "enrollment.authenticated";
    /// A channel sent `TokenUpdate`.
    pub const ENROLLMENT_TOKEN_UPDATED: &str = "enrollment.token_updated";
    /// The first `TokenUpdate` after `Authenticate`: the channel can now receive commands.
    pub const ENROLLMENT_COMPLETED: &str = "enrollment.completed";
    /// The device removed its enrollment (`CheckOut`); the listed channels were disabled.
    pub const ENROLLMENT_CHECKED_OUT: &str = "enrollment.checked_out";
    /// A device presented a new identity certificate accepted as a renewal.
    pub const IDENTITY_RENEWED: &str = "identity.renewed";
    /// An enrollment was taken over by a new certificate with evidence (`data.evidence`:
    /// `machine_info`, `renewal`, `checked_out`, `admin`, `renewal_policy_any`).
    pub const IDENTITY_REENROLLED: &str = "identity.reenrolled";
    /// A certificate tried to take over an enrollment pinned to another one without evidence.
    pub const IDENTITY_TAKEOVER_REFUSED: &str = "identity.takeover_refused";
    /// An admin allowed one re-enrollment of an enrollment by a new certificate.
    pub const IDENTITY_REENROLL_APPROVED: &str = "identity.reenroll_approved";
    /// A device stored (or cleared) its bootstrap token.
    pub const BOOTSTRAP_TOKEN_STORED: &str = "bootstrap_token.stored";
    /// A device escrowed bootstrap token was handed back to it.
    pub const BOOTSTRAP_TOKEN_RETRIEVED: &str = "bootstrap_token.retrieved";
    /// A webhook subscription was created, replaced or deleted (`data.action`).
    pub const WEBHOOK_CHANGED: &str = "webhook.changed";
    /// A webhook subscription's cursor fell behind the oldest retained event: the events in
    /// `data.first_lost..=data.last_lost` were pruned before they were delivered to it.
    pub const WEBHOOK_EVENTS_PRUNED: &str = "webhook.events_pruned";
    /// A test delivery (`POST /v1/webhooks/{name}/test`); sent to one receiver, never stored.
    pub const WEBHOOK_TEST: &str = "webhook.test";
    /// A command was enqueued.
    pub const COMMAND_ENQUEUED: &str = "command.enqueued";
    /// A queued command was cancelled for one enrollment before the device took it.
    pub const COMMAND_CANCELLED: &str = "command.cancelled";
    /// A device reported a terminal result (`Acknowledged`, `Error`, `CommandFormatError`).
    pub const COMMAND_RESULT: &str = "command.result";
    /// A device answered `NotNow`.
    pub const COMMAND_NOT_NOW: &str = "command.not_now";
    /// A device asked to enroll through Automated Device Enrollment (verified MachineInfo).
    pub const ENROLL_MACHINE_INFO: &str = "enroll.machine_info";
    /// The SCEP server issued a device identity certificate.
    pub const SCEP_CERTIFICATE_ISSUED: &str = "scep.certificate_issued";
    /// APNs refused an enrollment's push token; it is marked invalid until the next TokenUpdate.
    pub const PUSH_TOKEN_INVALID: &str = "push.token_invalid";
    /// A push certificate was uploaded.
    pub const PUSH_CERTIFICATE_UPLOADED: &str = "push_certificate.uploaded";
    /// A push certificate's expiry state changed (valid → expiring → expired).
    pub const PUSH_CERTIFICATE_STATE: &str = "push_certificate.state_changed";
    /// A DEP server was created.
    pub const DEP_SERVER_CREATED: &str = "dep.server.created";
    /// A DEP server token's state changed (uploaded, expiring, terms not signed, invalid).
    pub const DEP_TOKEN_STATE: &str = "dep.token.state";
    /// Apple Business Manager lists a device that is new to this server.
    pub const DEP_DEVICE_ADDED: &str = "dep.device.added";
    /// A device changed in Apple Business Manager (data flags `unknown_modified`, `unassigned`).
    pub const DEP_DEVICE_MODIFIED: &str = "dep.device.modified";
    /// A device left this server in Apple Business Manager.
    pub const DEP_DEVICE_DELETED: &str = "dep.device.deleted";
    /// Apple accepted a profile assignment.
    pub const DEP_DEVICE_ASSIGNED: &str = "device.assigned";
    /// A profile assignment failed, was throttled or the device is no longer accessible.
    pub const DEP_ASSIGNMENT_FAILED: &str = "dep.assignment.failed";
    /// A profile was defined with Apple (or refused).
    pub const DEP_PROFILE_DEFINED: &str = "dep.profile.defined";
    /// A device reported on a command that is not queued for it (ignored safely).
    pub const COMMAND_REPORT_UNMATCHED: &str = "command.report_unmatched";
    /// A policy plugin failed or hit a limit; its answer counted as no opinion.
    pub const PLUGIN_FAILED: &str = "plugin.failed";
    /// A policy plugin was loaded, replaced or removed.
    pub const PLUGIN_CHANGED: &str = "plugin.changed";
    /// A configuration profile was added to the library or replaced (`data.change`).
    pub const PROFILE_CHANGED: &str = "profile.changed";
    /// A configuration profile was removed from the library.
    pub const PROFILE_DELETED: &str = "profile.deleted";
    /// A team was created or changed.
    pub const TEAM_CHANGED: &str = "team.changed";
    /// A team was deleted.
    pub const TEAM_DELETED: &str = "team.deleted";
    /// A device was placed in a team (or taken out of one).
    pub const DEVICE_PLACED: &str = "device.placed";
    /// A device's setup started: its steps were decided.
    pub const SETUP_STARTED: &str = "setup.started";
    /// A setup step's command was queued.
    pub const SETUP_STEP_QUEUED: &str = "setup.step.queued";
    /// A setup step succeeded.
    pub const SETUP_STEP_SUCCEEDED: &str = "setup.step.succeeded";
    /// A setup step failed.
    pub const SETUP_STEP_FAILED: &str = "setup.step.failed";
    /// A setup step was skipped (for example its profile is not in the library).
    pub const SETUP_STEP_SKIPPED: &str = "setup.step.skipped";
    /// The device answered NotNow to a setup step; it stays pending.
    pub const SETUP_STEP_DEFERRED: &str = "setup.step.deferred";
    /// A plugin holds the device in Setup Assistant.
    pub const SETUP_HELD: &str = "setup.held";
    /// The device answered `DeviceConfigured` with an error; the setup is held.
    pub const SETUP_RELEASE_FAILED: &str = "setup.release_failed";
    /// The device was released from Setup Assistant (`DeviceConfigured` queued).
    pub const DEVICE_RELEASED: &str = "device.released";
    /// The device checked out (unenrolled).
    pub const DEVICE_CHECKED_OUT: &str = "device.checked_out";
}

/// Appends events durably, then broadcasts them.
#[derive(Clone)]
pub struct Outbox {
    store: Arc<dyn EventStore>,
    live: broadcast::Sender<Event>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

impl Outbox {
    /// An outbox over `store`, buffering up to `capacity` events per slow subscriber.
    pub fn new(store: Arc<dyn EventStore>, capacity: usize) -> Self {
        let (live, _) = broadcast::channel(capacity.max(1));
        Self { store, live }
    }

    /// Append events durably, then broadcast them. Returns them with sequence numbers.
    pub async fn publish(&self, events: Vec<NewEvent>) -> StoreResult<Vec<Event>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let written = self
            .store
            .append_events(events, time::OffsetDateTime::now_utc())
            .await?;
        for e in &written {
            // No subscribers is fine: the outbox is the durable record.
            let _ = self.live.send(e.clone());
        }
        Ok(written)
    }

    /// Broadcast events already appended durably (by a store transaction) to live subscribers.
    pub fn broadcast(&self, events: &[Event]) {
        for e in events {
            let _ = self.live.send(e.clone());
        }
    }

    /// Receive events as they are published. A subscriber that falls more than the channel
    /// capacity behind gets `RecvError::Lagged` and should catch up with [`Outbox::after`].
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }

    /// Durable events with `seq > after`.
    pub async fn after(&self, after: u64, limit: usize) -> StoreResult<Vec<Event>> {
        self.store.events_after(after, limit).await
    }
}

/// Build a [`NewEvent`].
pub fn event(
    kind: &str,
    enrollment_id: Option<&EnrollmentId>,
    data: serde_json::Value,
) -> NewEvent {
    NewEvent {
        kind: kind.to_owned(),
        enrollment_id: enrollment_id.cloned(),
        data,
    }
}

/// Test doubles for the outbox.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use async_trait::async_trait;

    use crate::store::{Event, EventStore, NewEvent, StoreError, StoreResult, Timestamp};

    /// An event log whose separate appends always fail (a full disk, a crash between two
    /// writes) while reads and pruning go to `0`: only events written inside the state change's
    /// own transaction can reach the log.
    pub(crate) struct FailingAppends(pub(crate) Arc<dyn EventStore>);

    #[async_trait]
    impl EventStore for FailingAppends {
        async fn append_events(&self, _: Vec<NewEvent>, _: Timestamp) -> StoreResult<Vec<Event>> {
            Err(StoreError::backend(
                "append events",
                "injected: event append failed",
            ))
        }
        async fn events_after(&self, after: u64, limit: usize) -> StoreResult<Vec<Event>> {
            self.0.events_after(after, limit).await
        }
        async fn prune_events(&self, before: Timestamp) -> StoreResult<u64> {
            self.0.prune_events(before).await
        }
    }
}
