//! DEP records: servers (tokens, cursors), devices as ABM reports them, profile templates and
//! the assignment work queue.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Emit, Event, NewEvent, StoreResult, Timestamp};
use crate::wire::dep::{Device, Profile};

/// Where a server's cursor stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncPhase {
    /// Paging through `/server/devices` (the initial or a full fetch).
    #[default]
    Fetch,
    /// Following changes with `/devices/sync`.
    Sync,
}

/// Health of a server token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TokenState {
    /// No token uploaded yet.
    #[default]
    Missing,
    /// More than 30 days left.
    Valid,
    /// 30 days or less left.
    Expiring,
    /// Past its expiry: automatic sync stops.
    Expired,
    /// Apple's terms changed and must be accepted in Apple Business Manager.
    TermsNotSigned,
    /// Apple refused it (ACCESS_DENIED, unusable credentials).
    Invalid,
}

/// A key pair for a DEP server; the key sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepKeyPair {
    /// The certificate to upload to Apple, PEM.
    pub cert_pem: String,
    /// The private key, sealed.
    pub key_sealed: Vec<u8>,
}

/// A DEP server (an "MDM server" in Apple Business Manager).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepServer {
    /// Local name.
    pub name: String,
    /// API base URL override (tests); Apple's when absent.
    pub base_url: Option<String>,
    /// Seconds between automatic syncs (0: manual only).
    pub sync_interval_secs: u64,
    /// `X-Server-Protocol-Version`.
    pub protocol_version: u32,
    /// Profile template assigned to new devices by the built-in policy.
    pub default_profile: Option<String>,
    /// Default team per platform (`macos`, `ios`, `ipados`).
    #[serde(default)]
    pub default_teams: BTreeMap<String, String>,
    /// The key pair the current token is encrypted to.
    pub current_keys: Option<DepKeyPair>,
    /// A newer key pair, until a token decrypts with it.
    pub staging_keys: Option<DepKeyPair>,
    /// The OAuth token JSON, sealed.
    pub token_sealed: Option<Vec<u8>>,
    /// The token's consumer key (guards against another server's token).
    pub consumer_key: Option<String>,
    /// The token's expiry (RFC 3339).
    pub token_expiry: Option<String>,
    /// Token health.
    #[serde(default)]
    pub token_state: TokenState,
    /// Cursor phase.
    #[serde(default)]
    pub phase: SyncPhase,
    /// The last committed cursor.
    pub cursor: Option<String>,
    /// When the current cursor chain started (a full fetch is due before 7 days).
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub cursor_started_at: Option<Timestamp>,
    /// Last successful sync.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub last_sync_at: Option<Timestamp>,
    /// Last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
}

impl DepServer {
    /// A new server with defaults.
    pub fn new(name: &str, now: Timestamp) -> Self {
        Self {
            name: name.to_owned(),
            base_url: None,
            sync_interval_secs: 1800,
            protocol_version: 10,
            default_profile: None,
            default_teams: BTreeMap::new(),
            current_keys: None,
            staging_keys: None,
            token_sealed: None,
            consumer_key: None,
            token_expiry: None,
            token_state: TokenState::Missing,
            phase: SyncPhase::Fetch,
            cursor: None,
            cursor_started_at: None,
            last_sync_at: None,
            last_error: None,
            created_at: now,
        }
    }
}

/// Result of assigning a profile to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum AssignResult {
    /// Apple accepted it.
    Success,
    /// Apple failed it; retried with backoff.
    Failed,
    /// The device is no longer this server's.
    NotAccessible,
    /// Apple throttled it; retried after its delay.
    Throttled,
}

/// One entry of a device's ABM history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepHistoryEntry {
    /// `added`, `modified`, `deleted`, or `fetched`.
    pub op: String,
    /// Apple's `op_date`.
    pub op_date: Option<String>,
    /// `profile_status` at that time.
    pub profile_status: Option<String>,
    /// When Pomona saw it.
    #[serde(with = "time::serde::rfc3339")]
    pub at: Timestamp,
}

/// A device as known from one DEP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepDeviceRecord {
    /// The server.
    pub server: String,
    /// Serial number.
    pub serial_number: String,
    /// Latest data from Apple.
    pub device: Device,
    /// Still listed by Apple (false after `deleted`).
    pub present: bool,
    /// Recent history (newest last, bounded).
    pub history: Vec<DepHistoryEntry>,
    /// The profile template Pomona (wants to) assign.
    pub assigned_profile: Option<String>,
    /// Last assignment result (None while pending).
    pub assign_result: Option<AssignResult>,
    /// Detail of the last failure.
    pub assign_error: Option<String>,
    /// Assignment attempts since the profile was chosen.
    pub assign_attempts: u32,
    /// When the next assignment attempt is due (pending work).
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub assign_due_at: Option<Timestamp>,
    /// When to ask the `auto-assign` hook again (a plugin answered `retry_after`).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub reask_at: Option<Timestamp>,
    /// First seen.
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen_at: Timestamp,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: Timestamp,
}

/// Most history entries kept per device.
pub const DEP_HISTORY_LIMIT: usize = 20;

/// What a committed page does.
#[derive(Debug, Clone, Default)]
pub struct DepPageCommit {
    /// Devices of the page (one per serial, latest `op_date`), with the op to record
    /// (`fetched` for the fetch phase).
    pub devices: Vec<(Device, String)>,
    /// Devices to (re)assign: serial → profile template.
    pub assign: Vec<(String, String)>,
    /// The new cursor and phase.
    pub cursor: Option<String>,
    /// Phase after this page.
    pub phase: SyncPhase,
    /// Start a new cursor chain (a full fetch begins).
    pub new_chain: bool,
    /// Events to append in the same transaction.
    pub events: Vec<NewEvent>,
    /// Devices to ask the `auto-assign` hook about again: serial → when. A device of the page
    /// that is not listed here has any earlier re-ask cleared (its new answer replaces it).
    pub reask: Vec<(String, Timestamp)>,
}

/// A profile template and its definitions with Apple, per server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileTemplate {
    /// Local name.
    pub name: String,
    /// Apple's profile JSON as given.
    pub template: Profile,
    /// Per server: the defined version.
    #[serde(default)]
    pub definitions: BTreeMap<String, ProfileDefinition>,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: Timestamp,
}

/// A profile as defined with Apple for one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileDefinition {
    /// SHA-256 of the effective JSON that was defined.
    pub hash: String,
    /// Apple's profile UUID (absent when definition failed).
    pub profile_uuid: Option<String>,
    /// Apple's validation error, when it refused.
    pub error: Option<String>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub defined_at: Timestamp,
}

/// Filter for listing DEP devices.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DepDeviceQuery {
    /// Only this server.
    pub server: Option<String>,
    /// Only this serial.
    pub serial_number: Option<String>,
    /// Only this ABM profile status.
    pub profile_status: Option<String>,
    /// Only this assignment result (`pending` for none yet).
    pub assign_result: Option<String>,
    /// Page after this `server/serial`.
    pub after: Option<String>,
    /// Page size.
    pub limit: Option<usize>,
}

/// DEP state.
#[async_trait]
pub trait DepStore: Send + Sync {
    /// Create or replace a server record.
    async fn put_dep_server(&self, server: &DepServer) -> StoreResult<()> {
        self.put_dep_server_emitting(server, Emit::none())
            .await
            .map(drop)
    }
    /// [`DepStore::put_dep_server`], appending `emit`'s events in the same transaction.
    async fn put_dep_server_emitting(
        &self,
        server: &DepServer,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>>;
    /// One server.
    async fn dep_server(&self, name: &str) -> StoreResult<Option<DepServer>>;
    /// All servers.
    async fn dep_servers(&self) -> StoreResult<Vec<DepServer>>;
    /// Commit a page: devices, assignment work, cursor and events in one transaction.
    async fn commit_dep_page(
        &self,
        server: &str,
        page: DepPageCommit,
        now: Timestamp,
    ) -> StoreResult<Vec<super::Event>>;
    /// One device.
    async fn dep_device(&self, server: &str, serial: &str) -> StoreResult<Option<DepDeviceRecord>>;
    /// Devices, ordered by server and serial.
    async fn dep_devices(&self, query: &DepDeviceQuery) -> StoreResult<Vec<DepDeviceRecord>>;
    /// Devices of `server` whose assignment is due by `now`, oldest first.
    async fn due_assignments(
        &self,
        server: &str,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<DepDeviceRecord>>;
    /// Record assignment outcomes: (serial, result, error, next attempt) with events.
    async fn record_assignments(
        &self,
        server: &str,
        outcomes: Vec<(String, AssignResult, Option<String>, Option<Timestamp>)>,
        events: Vec<NewEvent>,
        now: Timestamp,
    ) -> StoreResult<Vec<super::Event>>;
    /// Set the profile to assign for some serials (manual assignment); due now.
    async fn request_assignments(
        &self,
        server: &str,
        profile: &str,
        serials: &[String],
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Devices of `server` whose re-ask time has come, soonest first.
    async fn due_reasks(
        &self,
        server: &str,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<DepDeviceRecord>>;
    /// Set or clear when to ask the `auto-assign` hook about a device again.
    async fn set_reask(&self, server: &str, serial: &str, at: Option<Timestamp>)
    -> StoreResult<()>;
    /// Create or replace a profile template.
    async fn put_dep_profile(&self, profile: &ProfileTemplate) -> StoreResult<()> {
        self.put_dep_profile_emitting(profile, Emit::none())
            .await
            .map(drop)
    }
    /// [`DepStore::put_dep_profile`], appending `emit`'s events in the same transaction.
    async fn put_dep_profile_emitting(
        &self,
        profile: &ProfileTemplate,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>>;
    /// One profile template.
    async fn dep_profile(&self, name: &str) -> StoreResult<Option<ProfileTemplate>>;
    /// All profile templates.
    async fn dep_profiles(&self) -> StoreResult<Vec<ProfileTemplate>>;
}
