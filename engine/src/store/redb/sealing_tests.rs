//! Secrets in command payloads, command results and library profiles are sealed at rest.

use super::*;
use crate::store::conformance::enroll;
use crate::store::{
    NextCommand, ProfileMeta, ProfileStore, QueueStore, ReportRecord, StoredProfile,
};
use crate::wire::command::Command;
use crate::wire::config_profile::{PlistFormat, ProfileInfo};
use crate::wire::report::Status;

const PASSWORD: &str = "account-password-hunter2-7f3a";
const RESULT_SECRET: &str = "bypass-code-XK4M-9QRT-ZZ81";
const PSK: &str = "wifi-psk-correct-horse-battery";

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
    assert!(contains(&queued.raw, PASSWORD), "the device gets the plaintext");
    let report = ReportRecord {
        command_uuid: "C-SEAL".into(),
        status: Status::Acknowledged,
        error_chain: vec![],
        raw: format!("<plist><dict><key>Code</key><string>{RESULT_SECRET}</string></dict></plist>")
            .into_bytes(),
    };
    store.record_report(&c.id, &report, now()).await.unwrap();
    store.put_profile(&profile_with_psk()).await.unwrap();
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_file_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.redb");
    let store = RedbStore::open(&path).unwrap();
    write_secrets(&store).await;
    let file = std::fs::read(&path).unwrap();
    for secret in [PASSWORD, RESULT_SECRET, PSK] {
        assert!(
            !contains(&file, secret),
            "{secret:?} is stored in the clear in the database file"
        );
    }
    assert_plaintext_through_the_api(&store).await;
}
