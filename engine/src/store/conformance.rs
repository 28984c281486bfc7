//! The storage contract: the conformance checks every backend of [`Store`] must pass.
//!
//! Each check is a public async function that takes a fresh, empty store and drives it through
//! the store traits exactly as the services do, panicking with a message that names the broken
//! promise. Together they cover every trait and every method: the command queue (the check-in
//! sequence, NotNow, duplicate UUIDs, clearing, garbage collection), enrollments and the device → user-channel cascade, push targets, certificate
//! pinning and evidence, SCEP challenges and transactions, bootstrap tokens, secrets, the event
//! outbox, DEP (servers, profile templates, pages committed with their cursor and events,
//! assignments, re-asks), teams, devices and setups, plugins, the profile library and
//! webhooks. Every `*_emitting` write is checked to append its events in the same commit.
//!
//! The suite is compiled for this crate's own tests and, for other crates, behind the cargo
//! feature `conformance`. A third-party backend (a PostgreSQL store, say) runs it from its own
//! tests with [`store_conformance!`](crate::store_conformance), which emits one
//! `#[tokio::test]` per check, each on a store from the given factory expression:
//!
//! ```toml
//! [dev-dependencies]
//! pomona = { version = "…", features = ["conformance"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! ```ignore
//! // tests/conformance.rs of the backend crate.
//! mod postgres {
//!     // Evaluated anew in every test: an expression whose `.await` gives something that
//!     // dereferences to the store (`Arc<PgStore>`, `Box<…>`, or a guard that also keeps a
//!     // temporary database alive until the test ends).
//!     pomona::store_conformance!(async {
//!         std::sync::Arc::new(my_backend::PgStore::connect_to_fresh_schema().await.unwrap())
//!     });
//! }
//! ```
//!
//! `cargo test` then lists `postgres::queue_sequence`, `postgres::dep_page_commit`, … one test
//! per check, so one failure does not hide the others. The checks can also be called one by
//! one (`pomona::store::conformance::queue_sequence(&store).await`); [`CHECKS`] names them all.
//! This crate runs the suite against redb on a file and in memory (`store::conformance::redb_file`
//! and `store::conformance::redb_memory`).

use super::*;
use crate::wire::checkin::{Authenticate, TokenUpdate};
use crate::wire::command::Command;
use crate::wire::enrollment_id::{Channel, ChannelKind, EnrollmentId};
use crate::wire::report::Status;

mod dep;
mod devices;
mod enrollments;
mod identity;
mod outbox;
mod plugins;
mod profiles;
mod queue;
mod scep;
mod webhooks;

pub use dep::*;
pub use devices::*;
pub use enrollments::*;
pub use identity::*;
pub use outbox::*;
pub use plugins::*;
pub use profiles::*;
pub use queue::*;
pub use scep::*;
pub use webhooks::*;

/// Emits one `#[tokio::test]` per conformance check, each on a fresh store.
///
/// The argument is an expression evaluated anew in every test; its `.await` must give something
/// that dereferences to a [`Store`](crate::store::Store) (`Arc<MyStore>`, `Box<dyn Store>`, or a
/// guard that also owns what the store needs, like a temporary directory). Invoke it inside a
/// module named after the backend. The caller needs `tokio` with the `macros` and
/// `rt-multi-thread` features. See [`crate::store::conformance`].
#[macro_export]
macro_rules! store_conformance {
    (@checks ($fresh:expr) $($check:ident)*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let store = $fresh.await;
                $crate::store::conformance::$check(&*store).await;
            }
        )*
        // The list above and `CHECKS` name the same checks.
        #[test]
        fn every_check_runs() {
            assert_eq!(
                [$(stringify!($check)),*],
                $crate::store::conformance::CHECKS,
            );
        }
    };
    ($fresh:expr $(,)?) => {
        $crate::store_conformance!(@checks ($fresh)
            queue_sequence
            unknown_report_leaves_queue_alone
            duplicate_and_unknown_targets
            one_command_many_targets
            garbage_collection
            garbage_collection_limit
            queue_unknowns
            enqueue_emitting
            record_report_emitting
            cancel_one_target
            user_channel_cascade
            token_update_tally_and_unlock_token
            listing
            listing_filters_and_pages
            enrollment_unknowns
            authenticate_records_and_emits
            token_update_emits_from_tally
            disable_emits_what_it_disabled
            invalidate_push_emitting
            identity_pinning
            identity_evidence
            identity_unknowns
            identity_emitting
            machine_info
            machine_info_emitting
            challenges
            scep_transactions
            scep_issuance
            scep_issue_pruning_limit
            challenge_pruning
            events_bootstrap_secrets
            events_order_and_limits
            event_head_and_pruning
            bootstrap_holder
            bootstrap_emitting
            secrets_replace_and_emit
            emitting_writes
            webhooks
            webhook_emitting
            profile_library
            profile_emitting
            devices_and_setups
            device_listing
            setups_open_and_due
            teams
            team_emitting
            dep_servers
            dep_profiles
            dep_page_commit
            dep_page_history_is_bounded
            dep_page_for_unknown_server
            dep_device_listing
            dep_assignments
            dep_reasks
            plugins
            plugin_emitting
        );
    };
}

/// The name of every check, in the order [`store_conformance!`](crate::store_conformance) emits
/// them (each is a function of this module).
pub const CHECKS: &[&str] = &[
    "queue_sequence",
    "unknown_report_leaves_queue_alone",
    "duplicate_and_unknown_targets",
    "one_command_many_targets",
    "garbage_collection",
    "garbage_collection_limit",
    "queue_unknowns",
    "enqueue_emitting",
    "record_report_emitting",
    "cancel_one_target",
    "user_channel_cascade",
    "token_update_tally_and_unlock_token",
    "listing",
    "listing_filters_and_pages",
    "enrollment_unknowns",
    "authenticate_records_and_emits",
    "token_update_emits_from_tally",
    "disable_emits_what_it_disabled",
    "invalidate_push_emitting",
    "identity_pinning",
    "identity_evidence",
    "identity_unknowns",
    "identity_emitting",
    "machine_info",
    "machine_info_emitting",
    "challenges",
    "scep_transactions",
    "scep_issuance",
    "scep_issue_pruning_limit",
    "challenge_pruning",
    "events_bootstrap_secrets",
    "events_order_and_limits",
    "event_head_and_pruning",
    "bootstrap_holder",
    "bootstrap_emitting",
    "secrets_replace_and_emit",
    "emitting_writes",
    "webhooks",
    "webhook_emitting",
    "profile_library",
    "profile_emitting",
    "devices_and_setups",
    "device_listing",
    "setups_open_and_due",
    "teams",
    "team_emitting",
    "dep_servers",
    "dep_profiles",
    "dep_page_commit",
    "dep_page_history_is_bounded",
    "dep_page_for_unknown_server",
    "dep_device_listing",
    "dep_assignments",
    "dep_reasks",
    "plugins",
    "plugin_emitting",
];

fn now() -> Timestamp {
    time::OffsetDateTime::now_utc()
}

fn device(udid: &str) -> Channel {
    Channel {
        id: EnrollmentId::new(udid),
        parent: None,
        kind: ChannelKind::Device,
    }
}

fn user(udid: &str, uid: &str) -> Channel {
    Channel {
        id: EnrollmentId::new(format!("{udid}:{uid}")),
        parent: Some(EnrollmentId::new(udid)),
        kind: ChannelKind::User,
    }
}

fn token_update() -> TokenUpdate {
    TokenUpdate {
        token: vec![0xab; 32],
        push_magic: "magic".into(),
        topic: "com.apple.mgmt.External.test".into(),
        ..Default::default()
    }
}

/// Authenticate and TokenUpdate a device channel, as a fresh enrollment does.
pub async fn enroll<S: Store + ?Sized>(store: &S, udid: &str) -> Channel {
    let c = device(udid);
    let auth = Authenticate {
        topic: "com.apple.mgmt.External.test".into(),
        serial_number: Some(format!("SN-{udid}")),
        ..Default::default()
    };
    store
        .store_authenticate(&c, &auth, now(), Emit::none())
        .await
        .unwrap();
    store
        .store_token_update(&c, &token_update(), None, (None, None), now(), Emit::none())
        .await
        .unwrap();
    c
}

fn cmd(uuid: &str) -> Command {
    Command::build(uuid, "ProfileList", plist::Dictionary::new())
}

async fn enqueue_one<S: Store + ?Sized>(store: &S, uuid: &str, id: &EnrollmentId) {
    store
        .enqueue(&cmd(uuid), std::slice::from_ref(id), 100, now())
        .await
        .unwrap();
}

async fn report<S: Store + ?Sized>(
    store: &S,
    id: &EnrollmentId,
    uuid: &str,
    status: Status,
) -> ReportOutcome {
    let r = report_record(uuid, status);
    store
        .record_report(id, &r, now(), Emit::none())
        .await
        .unwrap()
        .0
}

fn report_record(uuid: &str, status: Status) -> ReportRecord {
    ReportRecord {
        command_uuid: uuid.into(),
        status,
        error_chain: vec![],
        raw: format!("report {uuid} {}", status.as_str()).into_bytes(),
    }
}

async fn next<S: Store + ?Sized>(
    store: &S,
    id: &EnrollmentId,
    mode: NextCommand,
) -> Option<String> {
    store.next_command(id, mode).await.unwrap().map(|c| c.uuid)
}

/// A test event of kind `kind`.
fn ev(kind: &str) -> NewEvent {
    NewEvent {
        kind: kind.into(),
        enrollment_id: None,
        data: serde_json::json!({"test": kind}),
    }
}

/// The kinds of the events appended after `head`.
async fn kinds_after<S: Store + ?Sized>(store: &S, head: u64) -> Vec<String> {
    store
        .events_after(head, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

/// The kinds of some events.
fn kinds(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.kind.clone()).collect()
}

#[cfg(test)]
mod redb_memory {
    crate::store_conformance!(async {
        std::sync::Arc::new(crate::store::redb::RedbStore::in_memory().unwrap())
    });
}

#[cfg(test)]
mod redb_file {
    /// A store on a file in a temporary directory that lives as long as the store.
    struct OnDisk {
        store: crate::store::redb::RedbStore,
        _dir: tempfile::TempDir,
    }

    impl std::ops::Deref for OnDisk {
        type Target = crate::store::redb::RedbStore;
        fn deref(&self) -> &Self::Target {
            &self.store
        }
    }

    crate::store_conformance!(async {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::redb::RedbStore::open(
            dir.path().join("conformance.redb"),
            &crate::seal::SealKey::generate(),
        )
        .unwrap();
        OnDisk { store, _dir: dir }
    });
}
