//! Records the storage layer keeps, shared by every backend.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::wire::enrollment_id::{ChannelKind, EnrollmentId};
use crate::wire::report::{ErrorChainItem, Status};

/// A point in time as stored (UTC, RFC 3339 in JSON).
pub type Timestamp = OffsetDateTime;

/// SHA-256 of a certificate's DER encoding: the pinned device identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertHash(pub [u8; 32]);

impl CertHash {
    /// Hash a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        let digest = openssl::sha::sha256(der);
        Self(digest)
    }

    /// Lower-case hex, as shown in the API and logs.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Where a certificate's UDID and serial binding comes from (see `docs/security.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BindingSource {
    /// Issued by SCEP from a one-time challenge minted for verified, Apple-signed MachineInfo
    /// (or renewed from such a certificate).
    MachineInfo,
}

/// The device a certificate was issued to, from evidence rather than from what the device says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertBinding {
    /// The UDID the evidence names.
    pub udid: String,
    /// The hardware serial number the evidence names.
    pub serial: String,
    /// The evidence.
    pub source: BindingSource,
}

/// Device facts reported at `Authenticate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFacts {
    /// Hardware serial number.
    pub serial_number: Option<String>,
    /// Model identifier.
    pub model: Option<String>,
    /// Marketing model name.
    pub model_name: Option<String>,
    /// Product name.
    pub product_name: Option<String>,
    /// OS version.
    pub os_version: Option<String>,
    /// OS build.
    pub build_version: Option<String>,
    /// Device name.
    pub device_name: Option<String>,
    /// IMEI.
    pub imei: Option<String>,
    /// MEID.
    pub meid: Option<String>,
}

/// What is needed to push to an enrollment (from its latest `TokenUpdate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushInfo {
    /// Hex APNs device token.
    pub token: String,
    /// `PushMagic` to send in the push body.
    pub push_magic: String,
    /// APNs topic.
    pub topic: String,
    /// False once APNs said the token is bad or unregistered.
    #[serde(default = "yes")]
    pub valid: bool,
}

fn yes() -> bool {
    true
}

/// One MDM channel's enrollment record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// The enrollment ID.
    pub id: EnrollmentId,
    /// Device channel of a user channel.
    pub parent: Option<EnrollmentId>,
    /// Kind of channel.
    pub kind: ChannelKind,
    /// Whether the channel is enabled (after `TokenUpdate`, until `CheckOut` or re-`Authenticate`).
    pub enabled: bool,
    /// Number of `TokenUpdate`s since the last `Authenticate` (1 = enrollment completed).
    pub token_update_tally: u64,
    /// APNs topic from `Authenticate` or `TokenUpdate`.
    pub topic: Option<String>,
    /// Facts from `Authenticate` (device channels).
    pub device: DeviceFacts,
    /// Push credentials.
    pub push: Option<PushInfo>,
    /// Unlock token, sealed (see [`crate::seal`]).
    pub unlock_token_sealed: Option<Vec<u8>>,
    /// `AwaitingConfiguration` from the latest `TokenUpdate`.
    pub awaiting_configuration: bool,
    /// User short name (user channels).
    pub user_short_name: Option<String>,
    /// User long name (user channels).
    pub user_long_name: Option<String>,
    /// First seen.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
    /// Latest `Authenticate`.
    #[serde(with = "time::serde::rfc3339::option")]
    pub authenticated_at: Option<Timestamp>,
    /// Latest `TokenUpdate`.
    #[serde(with = "time::serde::rfc3339::option")]
    pub token_updated_at: Option<Timestamp>,
    /// When the channel was disabled, if it is.
    #[serde(with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<Timestamp>,
    /// Latest request of any kind (flushed periodically).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen_at: Option<Timestamp>,
}

impl Enrollment {
    /// A fresh, disabled record.
    pub fn new(
        id: EnrollmentId,
        parent: Option<EnrollmentId>,
        kind: ChannelKind,
        now: Timestamp,
    ) -> Self {
        Self {
            id,
            parent,
            kind,
            enabled: false,
            token_update_tally: 0,
            topic: None,
            device: DeviceFacts::default(),
            push: None,
            unlock_token_sealed: None,
            awaiting_configuration: false,
            user_short_name: None,
            user_long_name: None,
            created_at: now,
            authenticated_at: None,
            token_updated_at: None,
            disabled_at: None,
            last_seen_at: None,
        }
    }
}

/// Filter and page for listing enrollments (ordered by ID).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct EnrollmentQuery {
    /// Only IDs strictly greater than this (cursor pagination).
    pub after: Option<String>,
    /// Page size (the store caps it).
    pub limit: Option<usize>,
    /// Only enabled (true) or disabled (false) channels.
    pub enabled: Option<bool>,
    /// Only channels of this kind.
    pub kind: Option<ChannelKind>,
    /// Only the user channels of this device.
    pub parent: Option<String>,
    /// Only channels whose device reported this serial number.
    pub serial_number: Option<String>,
}

/// A command waiting in an enrollment's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedCommand {
    /// `CommandUUID`.
    pub uuid: String,
    /// `RequestType`.
    pub request_type: String,
    /// Exact plist bytes to deliver.
    #[serde(skip)]
    pub raw: Vec<u8>,
    /// The device answered `NotNow` since its last `Idle`.
    pub not_now: bool,
    /// When it was enqueued.
    #[serde(with = "time::serde::rfc3339")]
    pub enqueued_at: Timestamp,
}

/// The state of one command for one target enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TargetState {
    /// Queued, not yet answered.
    Pending,
    /// The device answered `NotNow`; still queued.
    NotNow,
    /// The device answered `Acknowledged`.
    Acknowledged,
    /// The device answered `Error`.
    Error,
    /// The device answered `CommandFormatError`.
    CommandFormatError,
    /// Removed from the queue before it finished (re-`Authenticate`, admin cancel).
    Cancelled,
}

impl TargetState {
    /// Whether the command is finished for this target.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Pending | Self::NotNow)
    }

    /// The state a report status moves a target to.
    pub fn from_status(status: Status) -> Option<Self> {
        match status {
            Status::Idle => None,
            Status::Acknowledged => Some(Self::Acknowledged),
            Status::Error => Some(Self::Error),
            Status::CommandFormatError => Some(Self::CommandFormatError),
            Status::NotNow => Some(Self::NotNow),
        }
    }
}

/// One target's progress on a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    /// The target enrollment.
    pub enrollment_id: EnrollmentId,
    /// Where the command stands for it.
    pub state: TargetState,
    /// Error chain of an `Error` report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_chain: Vec<ErrorChainItem>,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: Timestamp,
    /// The raw report plist of a terminal report (kept until garbage collection).
    #[serde(skip)]
    pub result: Option<Vec<u8>>,
}

/// A command with every target's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// `CommandUUID`.
    pub uuid: String,
    /// `RequestType`.
    pub request_type: String,
    /// Exact plist bytes.
    #[serde(skip)]
    pub raw: Vec<u8>,
    /// When it was enqueued.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
    /// When the last target finished, once all have.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<Timestamp>,
    /// Every target.
    pub targets: Vec<TargetRecord>,
}

/// A command report as the queue records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRecord {
    /// The reported command.
    pub command_uuid: String,
    /// Reported status (never `Idle`).
    pub status: Status,
    /// Error chain, for `Error`.
    pub error_chain: Vec<ErrorChainItem>,
    /// The raw report body.
    pub raw: Vec<u8>,
}

/// What recording a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportOutcome {
    /// The command was queued for the enrollment; its state changed.
    Recorded {
        /// Whether this finished the command for every target.
        command_finished: bool,
    },
    /// The command was not queued for this enrollment (unknown, already finished, or cancelled):
    /// nothing changed.
    NotQueued,
}

/// Which command to hand out next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextCommand {
    /// After `Idle`: the oldest command, `NotNow`'d ones included (their flags are reset).
    AfterIdle,
    /// After a report: the oldest command not `NotNow`'d since the last `Idle`.
    AfterReport,
}

/// A durable event in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Sequence number, strictly increasing.
    pub seq: u64,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: Timestamp,
    /// Dotted event kind, e.g. `enrollment.authenticated`.
    pub kind: String,
    /// The enrollment it concerns, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrollment_id: Option<EnrollmentId>,
    /// Kind-specific details.
    pub data: serde_json::Value,
}

/// An event before the outbox assigned its sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Dotted event kind.
    pub kind: String,
    /// The enrollment it concerns, if any.
    pub enrollment_id: Option<EnrollmentId>,
    /// Kind-specific details.
    pub data: serde_json::Value,
}

/// The events a write appends in its own transaction, built from the write's outcome.
///
/// Store writes that report a state change take one, so the change and the events describing it
/// commit together or not at all (the transactional outbox). The builder may run more than once
/// (a group-commit batch is re-run without a failed member), so it must be pure.
pub struct Emit<T>(Option<std::sync::Arc<EmitFn<T>>>);

/// The builder inside an [`Emit`].
type EmitFn<T> = dyn Fn(&T) -> Vec<NewEvent> + Send + Sync;

impl<T> Emit<T> {
    /// No events.
    pub fn none() -> Self {
        Self(None)
    }

    /// These events, whatever the outcome.
    pub fn events(events: Vec<NewEvent>) -> Self {
        if events.is_empty() {
            return Self(None);
        }
        Self(Some(std::sync::Arc::new(move |_: &T| events.clone())))
    }

    /// Events computed from the outcome (for example only when something changed).
    pub fn with(build: impl Fn(&T) -> Vec<NewEvent> + Send + Sync + 'static) -> Self {
        Self(Some(std::sync::Arc::new(build)))
    }

    /// The events for `outcome`.
    pub fn build(&self, outcome: &T) -> Vec<NewEvent> {
        self.0.as_ref().map_or_else(Vec::new, |f| f(outcome))
    }
}

impl<T> Clone for Emit<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Default for Emit<T> {
    fn default() -> Self {
        Self::none()
    }
}

impl<T> std::fmt::Debug for Emit<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Emit(..)"
        } else {
            "Emit(none)"
        })
    }
}

/// A device's latest signed MachineInfo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineInfoRecord {
    /// What the device reported.
    pub info: crate::wire::machine_info::MachineInfo,
    /// When it first asked to enroll.
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen_at: Timestamp,
    /// When it last asked.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: Timestamp,
}
