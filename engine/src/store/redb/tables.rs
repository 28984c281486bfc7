//! Table definitions, designed around access paths.

use ::redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::backend;
use crate::store::StoreResult;

/// `schema_version`, `queue_seq`, `event_seq`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Enrollment ID → JSON [`crate::store::Enrollment`].
pub const ENROLLMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("enrollments");
/// (device ID, user channel ID) → ().
pub const USER_CHANNELS: TableDefinition<(&str, &str), ()> = TableDefinition::new("user_channels");
/// Certificate hash → enrollment ID that owns it.
pub const CERT_OWNER: TableDefinition<&[u8], &str> = TableDefinition::new("cert_owner");
/// Enrollment ID → currently pinned certificate hash.
pub const CERT_PIN: TableDefinition<&str, &[u8]> = TableDefinition::new("cert_pin");
/// New certificate hash → the hash it renews.
pub const CERT_RENEWAL: TableDefinition<&[u8], &[u8]> = TableDefinition::new("cert_renewal");
/// Certificate hash → JSON [`crate::store::CertBinding`]: the device evidence names for it.
pub const CERT_BINDING: TableDefinition<&[u8], &[u8]> = TableDefinition::new("cert_binding");
/// Enrollment ID → (): checked out by its pinned certificate (a new one may enroll it).
pub const PIN_RELEASED: TableDefinition<&str, ()> = TableDefinition::new("pin_released");
/// Enrollment ID → expiry in unix ms of an admin's one-time re-enrollment approval.
pub const REENROLL_APPROVALS: TableDefinition<&str, i64> =
    TableDefinition::new("reenroll_approvals");
/// Enrollment ID → hash of the certificate that escrowed its bootstrap token.
pub const BOOTSTRAP_HOLDER: TableDefinition<&str, &[u8]> = TableDefinition::new("bootstrap_holder");
/// Command UUID → JSON command metadata.
pub const COMMANDS: TableDefinition<&str, &[u8]> = TableDefinition::new("commands");
/// Command UUID → exact plist bytes.
pub const COMMAND_RAW: TableDefinition<&str, &[u8]> = TableDefinition::new("command_raw");
/// (command UUID, enrollment ID) → JSON target progress.
pub const TARGETS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("targets");
/// (command UUID, enrollment ID) → raw terminal report.
pub const RESULTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("results");
/// (enrollment ID, sequence) → command UUID: each enrollment's FIFO.
pub const QUEUE: TableDefinition<(&str, u64), &str> = TableDefinition::new("queue");
/// (enrollment ID, command UUID) → sequence: find a queue entry by UUID.
pub const QUEUE_INDEX: TableDefinition<(&str, &str), u64> = TableDefinition::new("queue_index");
/// (enrollment ID, command UUID) → (): answered `NotNow` since the last `Idle`.
pub const NOT_NOW: TableDefinition<(&str, &str), ()> = TableDefinition::new("not_now");
/// (finish time in unix ms, command UUID) → (): garbage-collection index.
pub const FINISHED: TableDefinition<(i64, &str), ()> = TableDefinition::new("finished");
/// Enrollment ID → sealed bootstrap token.
pub const BOOTSTRAP: TableDefinition<&str, &[u8]> = TableDefinition::new("bootstrap_tokens");
/// Sequence → JSON [`crate::store::Event`].
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Secret name → sealed bytes.
pub const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");

/// SHA-256 of a one-time SCEP challenge → JSON state.
pub const CHALLENGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("scep_challenges");

/// (SCEP transaction ID, SHA-256 of the CSR key) → JSON [`crate::store::ScepIssue`].
pub const SCEP_ISSUED: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("scep_issued");
/// (expiry in unix ms, transaction ID, SHA-256 of the CSR key) → (): pruning index.
pub const SCEP_ISSUED_EXPIRY: TableDefinition<(i64, &str, &[u8]), ()> =
    TableDefinition::new("scep_issued_expiry");
/// (expiry in unix ms, SHA-256 of the challenge) → (): prune expired challenges by range.
pub const CHALLENGE_EXPIRY: TableDefinition<(i64, &[u8]), ()> =
    TableDefinition::new("scep_challenge_expiry");

/// UDID → JSON [`crate::store::MachineInfoRecord`].
pub const MACHINE_INFO: TableDefinition<&str, &[u8]> = TableDefinition::new("machine_info");

/// DEP server name → JSON [`crate::store::DepServer`].
pub const DEP_SERVERS: TableDefinition<&str, &[u8]> = TableDefinition::new("dep_servers");
/// (server, serial) → JSON [`crate::store::DepDeviceRecord`].
pub const DEP_DEVICES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("dep_devices");
/// (due time in unix ms, server, serial) → (): pending assignment work.
pub const DEP_DUE: TableDefinition<(i64, &str, &str), ()> = TableDefinition::new("dep_assign_due");
/// (re-ask time in unix ms, server, serial) → (): devices a plugin asked to be asked about again.
pub const DEP_REASK: TableDefinition<(i64, &str, &str), ()> = TableDefinition::new("dep_reask");
/// Profile template name → JSON [`crate::store::ProfileTemplate`].
pub const DEP_PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("dep_profiles");
/// Uploaded policy plugins: name → settings (JSON).
pub const PLUGINS: TableDefinition<&str, &[u8]> = TableDefinition::new("plugins");
/// Uploaded policy plugins: name → source bytes.
pub const PLUGIN_SOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("plugin_sources");
/// Profile library: name → JSON [`crate::store::ProfileMeta`].
pub const PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("profiles");
/// Profile library: name → the `.mobileconfig` bytes as uploaded.
pub const PROFILE_BYTES: TableDefinition<&str, &[u8]> = TableDefinition::new("profile_bytes");
/// Webhook subscription name → JSON [`crate::store::WebhookSubscription`] (with delivery state).
pub const WEBHOOKS: TableDefinition<&str, &[u8]> = TableDefinition::new("webhooks");

/// Team name → JSON [`crate::store::Team`].
pub const TEAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("teams");
/// Serial number → JSON [`crate::store::DeviceRecord`].
pub const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
/// Device-channel enrollment ID → serial number.
pub const DEVICE_BY_ENROLLMENT: TableDefinition<&str, &str> =
    TableDefinition::new("device_by_enrollment");
/// Enrollment ID → JSON [`crate::store::SetupRecord`].
pub const SETUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("setups");
/// Command UUID → enrollment ID of the setup that sent it.
pub const SETUP_COMMANDS: TableDefinition<&str, &str> = TableDefinition::new("setup_commands");
/// (next check in unix ms, enrollment ID) → (): running setups' timer.
pub const SETUP_DUE: TableDefinition<(i64, &str), ()> = TableDefinition::new("setup_due");

/// Create every table so read transactions never meet a missing one.
pub fn create_all(txn: &WriteTransaction) -> StoreResult<()> {
    macro_rules! create {
        ($($t:expr),*) => { $( txn.open_table($t).map_err(backend)?; )* };
    }
    create!(
        ENROLLMENTS,
        USER_CHANNELS,
        CERT_OWNER,
        CERT_PIN,
        CERT_RENEWAL,
        CERT_BINDING,
        PIN_RELEASED,
        REENROLL_APPROVALS,
        BOOTSTRAP_HOLDER,
        COMMANDS,
        COMMAND_RAW,
        TARGETS,
        RESULTS,
        QUEUE,
        QUEUE_INDEX,
        NOT_NOW,
        FINISHED,
        BOOTSTRAP,
        EVENTS,
        SECRETS,
        CHALLENGES,
        SCEP_ISSUED,
        SCEP_ISSUED_EXPIRY,
        CHALLENGE_EXPIRY,
        MACHINE_INFO,
        DEP_SERVERS,
        DEP_DEVICES,
        DEP_DUE,
        DEP_REASK,
        DEP_PROFILES,
        PLUGINS,
        PROFILES,
        PROFILE_BYTES,
        PLUGIN_SOURCES,
        TEAMS,
        DEVICES,
        DEVICE_BY_ENROLLMENT,
        SETUPS,
        SETUP_COMMANDS,
        SETUP_DUE,
        WEBHOOKS
    );
    Ok(())
}

/// Take the next value of a counter in [`META`].
pub fn next_seq(txn: &WriteTransaction, name: &str) -> StoreResult<u64> {
    let mut meta = txn.open_table(META).map_err(backend)?;
    let next = meta.get(name).map_err(backend)?.map_or(0, |v| v.value()) + 1;
    meta.insert(name, next).map_err(backend)?;
    Ok(next)
}
