//! Teams, devices and their setup progress: the records the setup flow keeps.
//!
//! A [`DeviceRecord`] joins what the engine knows of one device (by serial number): its DEP
//! server, its enrollment, its team and its stage. A [`SetupRecord`] is the durable state of one
//! enrollment's setup experience: the steps decided for it, each step's command and status, and
//! how it was released. Every change to these records is written with its events and the flow's
//! outbox cursor in one transaction ([`LifecycleWrite`]), so a restart resumes where it stopped.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Emit, Event, NewEvent, StoreResult, Timestamp};

/// A team: where a device belongs, which enrollment profile it gets, and its setup defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Team {
    /// Unique name.
    pub name: String,
    /// DEP enrollment profile (template name) per platform: `macos`, `ios`, `ipados`, `tvos`.
    #[serde(default)]
    pub enrollment_profiles: BTreeMap<String, String>,
    /// The built-in setup experience: setup steps in the Lua shape (as a `setup-steps` plugin
    /// would answer), used when no plugin answers.
    #[serde(default)]
    pub setup_steps: serde_json::Value,
    /// Seconds after enrollment when the built-in release rule releases a device whose required
    /// steps are not all finished (default: the engine's).
    #[serde(default)]
    pub release_timeout_secs: Option<u64>,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: Timestamp,
}

/// Where a device is in its life with the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeviceStage {
    /// Known from Apple Business Manager only.
    Synced,
    /// MachineInfo or Authenticate seen.
    Enrolling,
    /// First TokenUpdate seen: the device takes commands.
    Enrolled,
    /// Enrolled and released from Setup Assistant.
    Released,
    /// Checked out (unenrolled).
    CheckedOut,
}

/// The person using a device, when known (from enrollment SSO or an embedder).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceUser {
    /// Short user name.
    pub username: String,
    /// E-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// Identity-provider groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Everything the engine knows of one device, by serial number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Serial number (the key).
    pub serial_number: String,
    /// UDID, once enrolling.
    #[serde(default)]
    pub udid: Option<String>,
    /// The device channel's enrollment ID, once enrolled.
    #[serde(default)]
    pub enrollment_id: Option<String>,
    /// Model.
    #[serde(default)]
    pub model: String,
    /// `Mac`, `iPhone`, `iPad`, …
    #[serde(default)]
    pub device_family: String,
    /// `OSX`, `iOS`, …
    #[serde(default)]
    pub os: String,
    /// OS version, when known.
    #[serde(default)]
    pub os_version: Option<String>,
    /// The DEP server the device came from.
    #[serde(default)]
    pub dep_server: Option<String>,
    /// Life stage.
    pub stage: DeviceStage,
    /// Current team.
    #[serde(default)]
    pub team: Option<String>,
    /// Who placed it: a plugin's name, `default` or `admin`.
    #[serde(default)]
    pub placed_by: Option<String>,
    /// The user, if known.
    #[serde(default)]
    pub user: Option<DeviceUser>,
    /// First seen.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: Timestamp,
}

impl DeviceRecord {
    /// A device seen for the first time, at `stage`, knowing only its serial number.
    pub fn new(serial_number: &str, stage: DeviceStage, now: Timestamp) -> Self {
        Self {
            serial_number: serial_number.to_owned(),
            udid: None,
            enrollment_id: None,
            model: String::new(),
            device_family: String::new(),
            os: String::new(),
            os_version: None,
            dep_server: None,
            stage,
            team: None,
            placed_by: None,
            user: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// How a setup step is going (the `release` hook's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepState {
    /// Not yet sent, or the device answered NotNow.
    Pending,
    /// Sent, no result yet.
    Running,
    /// Acknowledged.
    Succeeded,
    /// Error or CommandFormatError.
    Failed,
    /// Not applicable (for example a profile missing from the library).
    Skipped,
}

impl StepState {
    /// Whether the step is finished, one way or another.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepState::Succeeded | StepState::Failed | StepState::Skipped
        )
    }
}

/// One setup step of one enrollment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetupStep {
    /// The step's id.
    pub id: String,
    /// Whether release waits for it.
    pub required: bool,
    /// The step in the Lua shape.
    pub action: serde_json::Value,
    /// The command that carries it (fixed when the step is recorded, so a resend is a duplicate).
    pub command_uuid: String,
    /// Whether the command has been queued.
    pub queued: bool,
    /// Status.
    pub status: StepState,
    /// Times the device answered for it (NotNow included).
    pub attempts: u32,
    /// Why it failed or was skipped (Apple's error chain, or the engine's reason).
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

/// Where a setup is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
#[non_exhaustive]
pub enum SetupState {
    /// Steps are running; the release rule is asked after each result and on a timer.
    Running,
    /// A plugin holds the device in Setup Assistant until an admin releases it.
    Held {
        /// The plugin's reason.
        reason: String,
        /// The plugin that decided.
        by: String,
    },
    /// `DeviceConfigured` was queued.
    Released {
        /// Who released it: a plugin's name, `default` or `admin`.
        by: String,
        /// Why, in words (`required steps finished`, `timeout`, a plugin's answer, …).
        reason: String,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: Timestamp,
    },
}

/// The setup experience of one enrollment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetupRecord {
    /// The device channel's enrollment ID (the key).
    pub enrollment_id: String,
    /// Serial number.
    pub serial_number: String,
    /// The outbox event that started it (a later `enrollment.completed` starts a new setup).
    pub started_by: u64,
    /// When the device enrolled.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: Timestamp,
    /// Who decided the steps: a plugin's name or `default`.
    pub steps_by: String,
    /// The steps, in order.
    pub steps: Vec<SetupStep>,
    /// Seconds after `started_at` when the built-in rule releases regardless.
    pub timeout_secs: u64,
    /// Where it is.
    #[serde(flatten)]
    pub state: SetupState,
    /// The `DeviceConfigured` command, once decided (fixed, so a resend is a duplicate).
    #[serde(default)]
    pub release_command: Option<String>,
    /// Whether that command has been queued.
    #[serde(default)]
    pub release_queued: bool,
    /// A Shared iPad user channel's setup: released with `UserConfigured` on that channel.
    #[serde(default)]
    pub user_channel: bool,
    /// When the release rule is next asked, while running.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_check_at: Option<Timestamp>,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: Timestamp,
}

impl SetupRecord {
    /// A running setup with no steps yet, started by outbox event `started_by` at `started_at`.
    pub fn new(
        enrollment_id: &str,
        serial_number: &str,
        started_by: u64,
        started_at: Timestamp,
        steps_by: &str,
    ) -> Self {
        Self {
            enrollment_id: enrollment_id.to_owned(),
            serial_number: serial_number.to_owned(),
            started_by,
            started_at,
            steps_by: steps_by.to_owned(),
            steps: Vec::new(),
            timeout_secs: 0,
            state: SetupState::Running,
            release_command: None,
            release_queued: false,
            user_channel: false,
            next_check_at: None,
            updated_at: started_at,
        }
    }

    /// The step carried by `command_uuid`.
    pub fn step_mut(&mut self, command_uuid: &str) -> Option<&mut SetupStep> {
        self.steps
            .iter_mut()
            .find(|s| s.command_uuid == command_uuid)
    }
}

/// Which devices to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct DeviceQuery {
    /// Only this team (`""`: devices in no team).
    pub team: Option<String>,
    /// Only this stage.
    pub stage: Option<DeviceStage>,
    /// Only devices from this DEP server.
    pub dep_server: Option<String>,
    /// Serial numbers after this one.
    pub after: Option<String>,
    /// At most this many (default 100, at most 1,000).
    pub limit: Option<usize>,
}

/// One atomic change of the setup flow's state: records, events and the flow's outbox cursor.
#[derive(Debug, Clone, Default)]
pub struct LifecycleWrite {
    /// Devices to create or replace.
    pub devices: Vec<DeviceRecord>,
    /// Setups to create or replace.
    pub setups: Vec<SetupRecord>,
    /// Events to append.
    pub events: Vec<NewEvent>,
    /// Advance the cursor named `.0` to `.1`.
    pub cursor: Option<(String, u64)>,
}

impl LifecycleWrite {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
            && self.setups.is_empty()
            && self.events.is_empty()
            && self.cursor.is_none()
    }
}

/// Storage of teams.
#[async_trait]
pub trait TeamStore: Send + Sync {
    /// Create or replace a team.
    async fn put_team(&self, team: &Team) -> StoreResult<()> {
        self.put_team_emitting(team, Emit::none())
            .await
            .map(|(v, _)| v)
    }

    /// [`Self::put_team`], appending `emit`'s events (built from the outcome) in the same
    /// transaction.
    async fn put_team_emitting(&self, team: &Team, emit: Emit<()>)
    -> StoreResult<((), Vec<Event>)>;
    /// Delete a team; whether it existed. Devices in it keep the name until placed again.
    async fn delete_team(&self, name: &str) -> StoreResult<bool> {
        self.delete_team_emitting(name, Emit::none())
            .await
            .map(|(v, _)| v)
    }

    /// [`Self::delete_team`], appending `emit`'s events (built from the outcome) in the same
    /// transaction.
    async fn delete_team_emitting(
        &self,
        name: &str,
        emit: Emit<bool>,
    ) -> StoreResult<(bool, Vec<Event>)>;
    /// One team.
    async fn team(&self, name: &str) -> StoreResult<Option<Team>>;
    /// Every team, by name.
    async fn teams(&self) -> StoreResult<Vec<Team>>;
}

/// Storage of devices and setups, for the setup flow.
#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// One device by serial number.
    async fn device(&self, serial: &str) -> StoreResult<Option<DeviceRecord>>;
    /// The device whose device channel is `enrollment_id`.
    async fn device_by_enrollment(&self, enrollment_id: &str) -> StoreResult<Option<DeviceRecord>>;
    /// A page of devices, by serial number.
    async fn list_devices(&self, query: &DeviceQuery) -> StoreResult<Vec<DeviceRecord>>;
    /// The setup of an enrollment.
    async fn setup(&self, enrollment_id: &str) -> StoreResult<Option<SetupRecord>>;
    /// The setup that owns a command (a step's or the release command).
    async fn setup_by_command(&self, command_uuid: &str) -> StoreResult<Option<SetupRecord>>;
    /// Setups whose next check is due at `now` (running ones, and released ones whose
    /// `DeviceConfigured` could not be queued yet), soonest first.
    async fn due_setups(&self, now: Timestamp, limit: usize) -> StoreResult<Vec<SetupRecord>>;
    /// Setups still running or held, with unfinished work (for resuming after a restart).
    async fn open_setups(&self, limit: usize) -> StoreResult<Vec<SetupRecord>>;
    /// A consumer's outbox cursor (0 if never set).
    async fn cursor(&self, name: &str) -> StoreResult<u64>;
    /// Apply one change atomically; returns the events as appended.
    async fn apply(&self, write: LifecycleWrite, now: Timestamp) -> StoreResult<Vec<Event>>;
}
