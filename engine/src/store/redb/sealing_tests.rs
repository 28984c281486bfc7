//! Secrets in command payloads, command results and library profiles are sealed at rest.

use ::redb::ReadableTable;

use super::*;
use crate::seal::context;
use crate::store::conformance::enroll;
use crate::store::{
    BootstrapStore, DeviceStore, Emit, EnrollmentStore, LifecycleWrite, NextCommand, ProfileMeta,
    ProfileStore, QueueStore, ReportRecord, SetupRecord, SetupStep, StepState, StoredProfile, Team,
    TeamStore,
};
use crate::wire::command::Command;
use crate::wire::config_profile::{PlistFormat, ProfileInfo};
use crate::wire::report::Status;

const PASSWORD: &str = "account-password-hunter2-7f3a";
const RESULT_SECRET: &str = "bypass-code-XK4M-9QRT-ZZ81";
const PSK: &str = "wifi-psk-correct-horse-battery";
const TEAM_PASSWORD: &str = "team-admin-password-Q8vz2";
const STEP_PSK: &str = "setup-step-psk-lantern-77";

fn now() -> crate::store::Timestamp {
    time::OffsetDateTime::now_utc()
}

fn profile_with_psk() -> StoredProfile {
    let bytes = format!(
        "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>Password</key>\
         <string>{PSK}</string></dict></plist>"
    )
    .into_bytes();
    StoredProfile {
        meta: ProfileMeta {
            name: "wifi".into(),
            sha256: hex::encode(openssl::sha::sha256(&bytes)),
            size: bytes.len() as u64,
            uploaded_at: now(),
            profile: ProfileInfo {
                identifier: "com.example.wifi".into(),
                uuid: "UUID-wifi".into(),
                display_name: None,
                description: None,
                organization: None,
                scope: None,
                user_scoped: false,
                removal_disallowed: false,
                format: PlistFormat::Xml,
                signed: false,
                signer: None,
                payloads: vec![],
            },
        },
        bytes,
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Write a command with a password, its result and a profile with a PSK.
async fn write_secrets(store: &RedbStore) -> crate::wire::enrollment_id::Channel {
    let c = enroll(store, "SEAL-1").await;
    let mut account = plist::Dictionary::new();
    account.insert("Password".into(), PASSWORD.into());
    let cmd = Command::build("C-SEAL", "AccountConfiguration", account);
    store
        .enqueue(&cmd, std::slice::from_ref(&c.id), 10, now())
        .await
        .unwrap();
    let queued = store
        .next_command(&c.id, NextCommand::AfterIdle)
        .await
        .unwrap()
        .unwrap();
    assert!(
        contains(&queued.raw, PASSWORD),
        "the device gets the plaintext"
    );
    let report = ReportRecord {
        command_uuid: "C-SEAL".into(),
        status: Status::Acknowledged,
        error_chain: vec![],
        raw: format!("<plist><dict><key>Code</key><string>{RESULT_SECRET}</string></dict></plist>")
            .into_bytes(),
    };
    store
        .record_report(&c.id, &report, now(), Emit::none())
        .await
        .unwrap();
    store.put_profile(&profile_with_psk()).await.unwrap();
    let team = Team {
        name: "staff".into(),
        enrollment_profiles: Default::default(),
        setup_steps: serde_json::json!([{"id": "admin", "password": TEAM_PASSWORD}]),
        release_timeout_secs: None,
        updated_at: now(),
    };
    store.put_team(&team).await.unwrap();
    let mut setup = SetupRecord::new(c.id.as_str(), "SN-SEAL-1", 1, now(), "default");
    setup.steps.push(SetupStep {
        id: "wifi".into(),
        required: true,
        action: serde_json::json!({"wifi": {"ssid": "corp", "password": STEP_PSK}}),
        command_uuid: "C-STEP".into(),
        queued: false,
        status: StepState::Pending,
        attempts: 0,
        error: None,
    });
    store
        .apply(
            LifecycleWrite {
                setups: vec![setup],
                ..Default::default()
            },
            now(),
        )
        .await
        .unwrap();
    c
}

async fn assert_plaintext_through_the_api(store: &RedbStore) {
    let record = store.command("C-SEAL").await.unwrap().unwrap();
    assert!(contains(&record.raw, PASSWORD));
    assert!(contains(
        record.targets[0].result.as_deref().unwrap(),
        RESULT_SECRET
    ));
    let p = store.profile("wifi").await.unwrap().unwrap();
    assert!(contains(&p.bytes, PSK));
    let team = store.team("staff").await.unwrap().unwrap();
    assert!(team.setup_steps.to_string().contains(TEAM_PASSWORD));
    let setup = store.setup_by_command("C-STEP").await.unwrap().unwrap();
    assert!(setup.steps[0].action.to_string().contains(STEP_PSK));
    assert_eq!(store.open_setups(10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_file_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.redb");
    let store = RedbStore::open(&path, &SealKey::generate()).unwrap();
    write_secrets(&store).await;
    let file = std::fs::read(&path).unwrap();
    for secret in [PASSWORD, RESULT_SECRET, PSK, TEAM_PASSWORD, STEP_PSK] {
        assert!(
            !contains(&file, secret),
            "{secret:?} is stored in the clear in the database file"
        );
    }
    assert_plaintext_through_the_api(&store).await;
}

/// Reopen `path` once the previous store's writer thread has let go of it.
async fn reopen(path: &std::path::Path, key: &SealKey) -> RedbStore {
    for _ in 0..250 {
        match RedbStore::open(path, key) {
            Ok(s) => return s,
            Err(StoreError::Backend { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("reopening: {e}"),
        }
    }
    panic!("the database never reopened")
}

async fn raw_database(path: &std::path::Path) -> Database {
    for _ in 0..250 {
        if let Ok(db) = Database::create(path) {
            return db;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the database never reopened")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_is_sealed_and_rebound_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.redb");
    let key = SealKey::generate();
    let c = {
        let store = RedbStore::open(&path, &key).unwrap();
        let c = write_secrets(&store).await;
        store
            .store_token_update(
                &c,
                &Default::default(),
                Some(vec![1]),
                (None, None),
                now(),
                Emit::none(),
            )
            .await
            .unwrap();
        c
    };
    // Turn it into what version 1 wrote: values in the clear, tokens sealed for a fixed purpose.
    {
        let db = raw_database(&path).await;
        let txn = db.begin_write().unwrap();
        {
            let uuid = "C-SEAL";
            let id = c.id.as_str();
            let mut raw = txn.open_table(tables::COMMAND_RAW).unwrap();
            let clear = key
                .unseal(
                    &context::command_raw(uuid),
                    raw.get(uuid).unwrap().unwrap().value(),
                )
                .unwrap();
            raw.insert(uuid, clear.as_slice()).unwrap();
            let mut results = txn.open_table(tables::RESULTS).unwrap();
            let clear = key
                .unseal(
                    &context::command_result(uuid, id),
                    results.get((uuid, id)).unwrap().unwrap().value(),
                )
                .unwrap();
            results.insert((uuid, id), clear.as_slice()).unwrap();
            let mut profiles = txn.open_table(tables::PROFILE_BYTES).unwrap();
            let clear = key
                .unseal(
                    &context::profile_bytes("wifi"),
                    profiles.get("wifi").unwrap().unwrap().value(),
                )
                .unwrap();
            profiles.insert("wifi", clear.as_slice()).unwrap();
            let mut teams = txn.open_table(tables::TEAMS).unwrap();
            let clear = key
                .unseal(
                    &context::team("staff"),
                    teams.get("staff").unwrap().unwrap().value(),
                )
                .unwrap();
            teams.insert("staff", clear.as_slice()).unwrap();
            let mut setups = txn.open_table(tables::SETUPS).unwrap();
            let clear = key
                .unseal(
                    &context::setup(id),
                    setups.get(id).unwrap().unwrap().value(),
                )
                .unwrap();
            setups.insert(id, clear.as_slice()).unwrap();
            txn.open_table(tables::BOOTSTRAP)
                .unwrap()
                .insert(
                    id,
                    key.seal("bootstrap-token", b"legacy-bootstrap").as_slice(),
                )
                .unwrap();
            let mut enrollments = txn.open_table(tables::ENROLLMENTS).unwrap();
            let mut e: crate::store::Enrollment =
                decode("e", enrollments.get(id).unwrap().unwrap().value()).unwrap();
            e.unlock_token_sealed = Some(key.seal("unlock-token", b"legacy-unlock"));
            enrollments.insert(id, encode(&e).as_slice()).unwrap();
            txn.open_table(tables::META)
                .unwrap()
                .insert("schema_version", 1)
                .unwrap();
        }
        txn.commit().unwrap();
    }
    assert!(contains(&std::fs::read(&path).unwrap(), PASSWORD));

    let store = reopen(&path, &key).await;
    assert_plaintext_through_the_api(&store).await;
    let bootstrap = store.bootstrap_token(&c.id).await.unwrap().unwrap();
    assert_eq!(
        key.unseal(&context::bootstrap_token(c.id.as_str()), &bootstrap)
            .unwrap(),
        b"legacy-bootstrap"
    );
    assert!(key.unseal("bootstrap-token", &bootstrap).is_err());
    let e = store.enrollment(&c.id).await.unwrap().unwrap();
    assert_eq!(
        key.unseal(
            &context::unlock_token(c.id.as_str()),
            e.unlock_token_sealed.as_deref().unwrap()
        )
        .unwrap(),
        b"legacy-unlock"
    );
    store
        .read(|txn| {
            let raw = txn.open_table(tables::COMMAND_RAW).map_err(backend)?;
            assert!(crate::seal::is_sealed(
                raw.get("C-SEAL").map_err(backend)?.unwrap().value()
            ));
            let p = txn.open_table(tables::PROFILE_BYTES).map_err(backend)?;
            assert!(crate::seal::is_sealed(
                p.get("wifi").map_err(backend)?.unwrap().value()
            ));
            Ok(())
        })
        .unwrap();
    let file = std::fs::read(&path).unwrap();
    for secret in [PASSWORD, RESULT_SECRET, PSK, TEAM_PASSWORD, STEP_PSK] {
        assert!(
            !contains(&file, secret),
            "{secret:?} is still in the database file after the migration"
        );
    }
    // Opened with another key, the sealed values are refused rather than returned.
    drop(store);
    let wrong = reopen(&path, &SealKey::generate()).await;
    assert!(matches!(
        wrong.command("C-SEAL").await,
        Err(StoreError::Corrupt { .. })
    ));
}
