//! Storage: narrow traits per consumer, and the redb implementation.
//!
//! Each service depends only on the trait it needs ([`QueueStore`] for the command queue,
//! [`EnrollmentStore`] for check-in records, and so on), so a backend can be swapped without the
//! services noticing. [`Store`] bundles them for backends that implement all of them; every backend
//! must pass the conformance suite (`store::conformance`, behind the cargo feature `conformance`).

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod dep;
pub mod devices;
pub mod model;
pub mod plugins;
pub mod profiles;
pub mod redb;
pub mod webhooks;

use async_trait::async_trait;

pub use dep::*;
pub use devices::*;
pub use model::*;
pub use plugins::*;
pub use profiles::*;
pub use webhooks::*;

use crate::wire::checkin::{Authenticate, TokenUpdate};
use crate::wire::command::Command;
use crate::wire::enrollment_id::{Channel, EnrollmentId};
use crate::wire::machine_info::MachineInfo;

/// Errors from any storage operation.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed (I/O, corruption, a closed database). Usually transient for callers.
    /// Build one with [`StoreError::backend`].
    #[error("storage backend error: {operation}: {source}")]
    Backend {
        /// What the backend was doing (`"open table"`, `"commit"`, …).
        operation: &'static str,
        /// The backend's own error ([`std::error::Error::source`] of this one).
        #[source]
        source: BackendSource,
    },
    /// The database cannot be used right now: an I/O error such as a full disk. Requests get
    /// HTTP 503 until the store has reopened the database by itself; nothing committed is lost.
    #[error("storage unavailable: {reason}")]
    Unavailable {
        /// What failed and what happens next.
        reason: String,
        /// The I/O error that made the database unusable, when this operation met it.
        #[source]
        source: Option<BackendSource>,
    },
    /// A stored record could not be decoded.
    #[error("stored record {what} is corrupt: {detail}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Decoder message.
        detail: String,
    },
    /// A command with this UUID already exists.
    #[error("a command with UUID {0} already exists")]
    DuplicateCommand(String),
    /// The enrollment does not exist.
    #[error("unknown enrollment {0}")]
    UnknownEnrollment(EnrollmentId),
    /// The enrollment's queue is at its configured bound.
    #[error("queue of {id} is full ({limit} pending commands)")]
    QueueFull {
        /// The enrollment.
        id: EnrollmentId,
        /// The bound.
        limit: usize,
    },
    /// The database was written by a newer Pomona.
    #[error("database schema version {found} is newer than this Pomona supports ({supported})")]
    SchemaTooNew {
        /// Version found in the database.
        found: u64,
        /// Highest version this build knows.
        supported: u64,
    },
}

impl StoreError {
    /// A [`StoreError::Backend`]: the backend failed while doing `operation`, because of `source`.
    pub fn backend(
        operation: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Backend {
            operation,
            source: BackendSource::new(source),
        }
    }

    /// A [`StoreError::Unavailable`] without an underlying error.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable {
            reason: reason.into(),
            source: None,
        }
    }
}

/// The cause of a [`StoreError::Backend`]: the backend's own error, shared so that
/// [`StoreError`] stays `Clone` (one failed commit answers every write of its batch).
///
/// It dereferences to the error itself, so `source.downcast_ref::<redb::Error>()` works, and
/// [`std::error::Error::source`] of the [`StoreError`] is that error, not this wrapper.
#[derive(Clone)]
pub struct BackendSource(std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl BackendSource {
    /// Wrap a backend's error.
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(source.into().into())
    }
}

impl std::ops::Deref for BackendSource {
    type Target = dyn std::error::Error + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl std::fmt::Debug for BackendSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for BackendSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&*self.0, f)
    }
}

/// Result alias for storage operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Check-in records: enrollments and their device → user-channel index.
#[async_trait]
pub trait EnrollmentStore: Send + Sync {
    /// Record an `Authenticate` for a device channel: create or refresh it, disabled, tally reset.
    /// Appends `emit`'s events in the same transaction and returns them.
    async fn store_authenticate(
        &self,
        channel: &Channel,
        message: &Authenticate,
        now: Timestamp,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>>;

    /// Record a `TokenUpdate`: store push info, enable the channel (creating user channels on their
    /// first one), bump and return the tally. `unlock_token_sealed` replaces the stored one only when
    /// present. Appends `emit`'s events (built from the new tally) in the same transaction.
    async fn store_token_update(
        &self,
        channel: &Channel,
        message: &TokenUpdate,
        unlock_token_sealed: Option<Vec<u8>>,
        user_names: (Option<String>, Option<String>),
        now: Timestamp,
        emit: Emit<u64>,
    ) -> StoreResult<(u64, Vec<Event>)>;

    /// Disable a channel and, for a device channel, all its user channels. Returns the IDs disabled
    /// and `emit`'s events, appended in the same transaction.
    async fn disable(
        &self,
        id: &EnrollmentId,
        now: Timestamp,
        emit: Emit<Vec<EnrollmentId>>,
    ) -> StoreResult<(Vec<EnrollmentId>, Vec<Event>)>;

    /// One enrollment.
    async fn enrollment(&self, id: &EnrollmentId) -> StoreResult<Option<Enrollment>>;

    /// A page of enrollments, ordered by ID.
    async fn list_enrollments(&self, query: &EnrollmentQuery) -> StoreResult<Vec<Enrollment>>;

    /// The user channels of a device channel.
    async fn user_channels(&self, device: &EnrollmentId) -> StoreResult<Vec<EnrollmentId>>;

    /// Record last-seen times (batched by the caller; unknown IDs are ignored).
    async fn touch(&self, seen: Vec<(EnrollmentId, Timestamp)>) -> StoreResult<()>;
}

/// Push credentials, for the push service.
#[async_trait]
pub trait PushStore: Send + Sync {
    /// Push info of each ID (None for unknown IDs, disabled channels or no `TokenUpdate` yet).
    async fn push_targets(
        &self,
        ids: &[EnrollmentId],
    ) -> StoreResult<Vec<(EnrollmentId, Option<PushInfo>)>>;

    /// Mark an enrollment's push token invalid (APNs said so), appending `emit`'s events in the
    /// same transaction.
    async fn invalidate_push(&self, id: &EnrollmentId, emit: Emit<()>) -> StoreResult<Vec<Event>>;
}

/// Certificate pinning: which device identity belongs to which enrollment.
#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// The enrollment that has ever been associated with this certificate.
    async fn cert_owner(&self, hash: &CertHash) -> StoreResult<Option<EnrollmentId>>;

    /// The certificate currently pinned to an enrollment.
    async fn pinned_cert(&self, id: &EnrollmentId) -> StoreResult<Option<CertHash>>;

    /// Pin a certificate to an enrollment (replacing its current pin; old hashes stay owned by it
    /// so no other enrollment can reuse them).
    async fn pin_cert(&self, id: &EnrollmentId, hash: &CertHash) -> StoreResult<()> {
        self.pin_cert_emitting(id, hash, Emit::none())
            .await
            .map(drop)
    }

    /// [`IdentityStore::pin_cert`], appending `emit`'s events in the same transaction.
    async fn pin_cert_emitting(
        &self,
        id: &EnrollmentId,
        hash: &CertHash,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>>;

    /// Record that certificate `new` renews certificate `old` (from a SCEP RenewalReq).
    async fn link_renewal(&self, old: &CertHash, new: &CertHash) -> StoreResult<()>;

    /// The certificate `hash` was issued as a renewal of, if any.
    async fn renewed_from(&self, new: &CertHash) -> StoreResult<Option<CertHash>>;

    /// Record the evidence-based binding of an issued certificate (replacing any).
    async fn bind_cert(&self, hash: &CertHash, binding: &CertBinding) -> StoreResult<()>;

    /// The evidence-based binding of a certificate, if it has one.
    async fn cert_binding(&self, hash: &CertHash) -> StoreResult<Option<CertBinding>>;

    /// Pin `hash` to `id` for a re-enrollment by a different holder: like [`Self::pin_cert`], and
    /// in the same transaction drop what the previous holder escrowed (bootstrap token, unlock
    /// token).
    async fn repin_cert_clearing_escrow(
        &self,
        id: &EnrollmentId,
        hash: &CertHash,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>>;

    /// Mark `id` as checked out by its pinned certificate: a new certificate may enroll it again.
    /// Pinning a certificate ends the mark.
    async fn release_pin(&self, id: &EnrollmentId) -> StoreResult<()>;

    /// Whether `id` is checked out (see [`Self::release_pin`]).
    async fn pin_released(&self, id: &EnrollmentId) -> StoreResult<bool>;

    /// Allow one re-enrollment of `id` by a new certificate until `expires_at` (an admin's
    /// approval; replaces a pending one).
    async fn approve_reenrollment(
        &self,
        id: &EnrollmentId,
        expires_at: Timestamp,
    ) -> StoreResult<()> {
        self.approve_reenrollment_emitting(id, expires_at, Emit::none())
            .await
            .map(drop)
    }

    /// [`IdentityStore::approve_reenrollment`], appending `emit`'s events in the same
    /// transaction.
    async fn approve_reenrollment_emitting(
        &self,
        id: &EnrollmentId,
        expires_at: Timestamp,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>>;

    /// Use the pending approval of `id` if there is an unexpired one. Returns whether there was.
    async fn take_reenrollment_approval(
        &self,
        id: &EnrollmentId,
        now: Timestamp,
    ) -> StoreResult<bool>;
}

/// The command queue and command results.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Store one command for many targets (all exist, or nothing is stored).
    async fn enqueue(
        &self,
        command: &Command,
        targets: &[EnrollmentId],
        max_queue_len: usize,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.enqueue_emitting(command, targets, max_queue_len, now, Emit::none())
            .await
            .map(drop)
    }

    /// [`QueueStore::enqueue`], appending `emit`'s events in the same transaction.
    async fn enqueue_emitting(
        &self,
        command: &Command,
        targets: &[EnrollmentId],
        max_queue_len: usize,
        now: Timestamp,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>>;

    /// The next command for an enrollment.
    async fn next_command(
        &self,
        id: &EnrollmentId,
        mode: NextCommand,
    ) -> StoreResult<Option<QueuedCommand>>;

    /// Record a non-`Idle` report. A report for a command not queued for `id` changes nothing but
    /// `emit`'s events (built from the outcome), appended in the same transaction.
    async fn record_report(
        &self,
        id: &EnrollmentId,
        report: &ReportRecord,
        now: Timestamp,
        emit: Emit<ReportOutcome>,
    ) -> StoreResult<(ReportOutcome, Vec<Event>)>;

    /// Cancel every queued command of these enrollments. Returns how many were removed.
    async fn clear_queue(&self, ids: &[EnrollmentId], now: Timestamp) -> StoreResult<u64>;

    /// An enrollment's queue in delivery order.
    async fn queue(&self, id: &EnrollmentId) -> StoreResult<Vec<QueuedCommand>>;

    /// Cancel one queued command for one enrollment. Returns whether it was queued.
    async fn cancel(&self, id: &EnrollmentId, uuid: &str, now: Timestamp) -> StoreResult<bool> {
        self.cancel_emitting(id, uuid, now, Emit::none())
            .await
            .map(|(cancelled, _)| cancelled)
    }

    /// [`QueueStore::cancel`], appending `emit`'s events (built from whether the command was
    /// queued) in the same transaction.
    async fn cancel_emitting(
        &self,
        id: &EnrollmentId,
        uuid: &str,
        now: Timestamp,
        emit: Emit<bool>,
    ) -> StoreResult<(bool, Vec<Event>)>;

    /// A command with every target's progress and results.
    async fn command(&self, uuid: &str) -> StoreResult<Option<CommandRecord>>;

    /// Delete commands (and their results) that finished before `before`; at most `limit`.
    /// Returns how many were deleted.
    async fn collect_garbage(&self, before: Timestamp, limit: usize) -> StoreResult<u64>;
}

/// Bootstrap tokens (sealed by the caller).
#[async_trait]
pub trait BootstrapStore: Send + Sync {
    /// Store or clear a device's sealed bootstrap token, appending `emit`'s events in the same
    /// transaction.
    async fn store_bootstrap_token(
        &self,
        id: &EnrollmentId,
        sealed: Option<Vec<u8>>,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>>;

    /// A device's sealed bootstrap token.
    async fn bootstrap_token(&self, id: &EnrollmentId) -> StoreResult<Option<Vec<u8>>>;

    /// Store or clear a device's sealed bootstrap token together with the certificate that
    /// escrowed it (the only one it is handed back to, with its SCEP renewals).
    async fn store_bootstrap_token_held(
        &self,
        id: &EnrollmentId,
        sealed: Option<Vec<u8>>,
        holder: &CertHash,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>>;

    /// The certificate that escrowed a device's bootstrap token (none for tokens stored before
    /// holders were recorded).
    async fn bootstrap_holder(&self, id: &EnrollmentId) -> StoreResult<Option<CertHash>>;
}

/// The durable event outbox.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Append events; returns them with their sequence numbers.
    async fn append_events(&self, events: Vec<NewEvent>, now: Timestamp)
    -> StoreResult<Vec<Event>>;

    /// Events with `seq > after`, oldest first, at most `limit`.
    async fn events_after(&self, after: u64, limit: usize) -> StoreResult<Vec<Event>>;

    /// Delete events older than `before`. Returns how many were deleted.
    async fn prune_events(&self, before: Timestamp) -> StoreResult<u64>;
}

/// Named engine secrets (CA key, push key …), sealed by the caller.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// A stored secret.
    async fn secret(&self, name: &str) -> StoreResult<Option<Vec<u8>>>;

    /// Store (replace) a secret.
    async fn put_secret(&self, name: &str, sealed: Vec<u8>) -> StoreResult<()> {
        self.put_secret_emitting(name, sealed, Emit::none())
            .await
            .map(drop)
    }

    /// [`SecretStore::put_secret`], appending `emit`'s events in the same transaction.
    async fn put_secret_emitting(
        &self,
        name: &str,
        sealed: Vec<u8>,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>>;
}

/// Outcome of consuming a one-time SCEP challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChallengeStatus {
    /// It existed, was unused and unexpired; it is now used.
    Accepted,
    /// No such challenge.
    Unknown,
    /// It expired before use.
    Expired,
    /// It was already used (replay).
    AlreadyUsed,
}

/// A certificate issued for a SCEP transaction, kept until `expires_at` so a retry of the
/// transaction (its reply was lost) gets the same certificate again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScepIssue {
    /// The `transactionID`.
    pub transaction_id: String,
    /// SHA-256 of the CSR's public key (DER SubjectPublicKeyInfo).
    pub csr_key_sha256: [u8; 32],
    /// SHA-256 of the request signer's public key.
    pub signer_key_sha256: [u8; 32],
    /// SHA-256 of the challenge the request carried (`None` for a renewal).
    pub challenge_sha256: Option<[u8; 32]>,
    /// The issued certificate, DER.
    pub certificate_der: Vec<u8>,
    /// When the record may be forgotten.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: Timestamp,
}

/// Everything a SCEP issuance records, written in one transaction by
/// [`ScepTransactionStore::record_issuance`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScepIssuance {
    /// The one-time challenge the request used, consumed by the write (`None` for a renewal or
    /// the static challenge).
    pub challenge: Option<String>,
    /// The issued certificate.
    pub certificate: CertHash,
    /// The certificate it renews (a `RenewalReq`).
    pub renewal_of: Option<CertHash>,
    /// The evidence-based binding the new certificate inherits.
    pub binding: Option<CertBinding>,
    /// The record kept for retries of the transaction.
    pub issue: ScepIssue,
}

/// Certificates issued per SCEP transaction (for retries and `CertPoll`).
#[async_trait]
pub trait ScepTransactionStore: Send + Sync {
    /// Remember (or replace) the certificate issued for `(transaction_id, csr_key_sha256)`.
    async fn put_scep_issue(&self, issue: &ScepIssue) -> StoreResult<()>;

    /// Record an issued certificate in one transaction: consume the one-time challenge (if
    /// any), link the renewal, bind the certificate, remember the transaction for retries and
    /// append `emit`'s events. If the challenge is not [`ChallengeStatus::Accepted`] nothing is
    /// written and its status is returned with no events.
    async fn record_issuance(
        &self,
        issuance: &ScepIssuance,
        now: Timestamp,
        emit: Emit<()>,
    ) -> StoreResult<(ChallengeStatus, Vec<Event>)>;

    /// The unexpired certificates issued for a transaction (at most a few; one per CSR key).
    async fn scep_issues(
        &self,
        transaction_id: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<ScepIssue>>;

    /// Forget at most `limit` records that expired before `before`. Returns how many.
    async fn prune_scep_issues(&self, before: Timestamp, limit: usize) -> StoreResult<u64>;
}

/// One-time SCEP challenges (stored as hashes, never in clear), and the certificates issued
/// per transaction.
#[async_trait]
pub trait ChallengeStore: ScepTransactionStore + Send + Sync {
    /// Remember a challenge until `expires_at`.
    async fn put_challenge(&self, challenge: &str, expires_at: Timestamp) -> StoreResult<()>;

    /// Use a challenge once.
    async fn consume_challenge(
        &self,
        challenge: &str,
        now: Timestamp,
    ) -> StoreResult<ChallengeStatus>;

    /// Remember a challenge minted for verified MachineInfo: a certificate issued from it is
    /// bound to `binding`.
    async fn put_bound_challenge(
        &self,
        challenge: &str,
        expires_at: Timestamp,
        binding: &CertBinding,
    ) -> StoreResult<()>;

    /// The binding a challenge was minted with (none for anonymous or unknown challenges).
    async fn challenge_binding(&self, challenge: &str) -> StoreResult<Option<CertBinding>>;

    /// Forget challenges that expired before `before`. Returns how many.
    async fn prune_challenges(&self, before: Timestamp) -> StoreResult<u64>;
}

/// What devices reported when they asked to enroll (signed MachineInfo), by UDID.
#[async_trait]
pub trait DeviceInfoStore: Send + Sync {
    /// Record (replace) a device's latest MachineInfo, appending `emit`'s events in the same
    /// transaction.
    async fn record_machine_info(
        &self,
        info: &MachineInfo,
        now: Timestamp,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>>;

    /// A device's latest MachineInfo and when it arrived.
    async fn machine_info(&self, udid: &str) -> StoreResult<Option<MachineInfoRecord>>;
}

/// A backend that implements every store trait.
pub trait Store:
    EnrollmentStore
    + PushStore
    + IdentityStore
    + QueueStore
    + BootstrapStore
    + EventStore
    + SecretStore
    + ChallengeStore
    + DeviceInfoStore
    + DepStore
    + PluginStore
    + ProfileStore
    + TeamStore
    + DeviceStore
    + WebhookStore
    + 'static
{
}

impl<T> Store for T where
    T: EnrollmentStore
        + PushStore
        + IdentityStore
        + QueueStore
        + BootstrapStore
        + EventStore
        + SecretStore
        + ChallengeStore
        + DeviceInfoStore
        + DepStore
        + PluginStore
        + ProfileStore
        + TeamStore
        + DeviceStore
        + WebhookStore
        + 'static
{
}
