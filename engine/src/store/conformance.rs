//! The storage conformance suite: every backend must pass [`run_all`].
//!
//! It drives a store through the traits exactly as the services do, including the command-queue
//! sequence (`docs/protocol.md#queue-conformance-sequence`), the device → user-channel cascade,
//! reports for unknown UUIDs, duplicate UUIDs, queue clearing and garbage collection. Failures
//! panic with a message naming the step, so call it from a test.

use time::Duration;

use super::*;
use crate::wire::checkin::{Authenticate, TokenUpdate};
use crate::wire::command::Command;
use crate::wire::enrollment_id::{Channel, ChannelKind, EnrollmentId};
use crate::wire::report::Status;

mod outbox;
mod webhooks;

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
pub async fn enroll<S: Store>(store: &S, udid: &str) -> Channel {
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

async fn enqueue_one<S: Store>(store: &S, uuid: &str, id: &EnrollmentId) {
    store
        .enqueue(&cmd(uuid), std::slice::from_ref(id), 100, now())
        .await
        .unwrap();
}

async fn report<S: Store>(
    store: &S,
    id: &EnrollmentId,
    uuid: &str,
    status: Status,
) -> ReportOutcome {
    let r = ReportRecord {
        command_uuid: uuid.into(),
        status,
        error_chain: vec![],
        raw: format!("report {uuid} {}", status.as_str()).into_bytes(),
    };
    store
        .record_report(id, &r, now(), Emit::none())
        .await
        .unwrap()
        .0
}

async fn next<S: Store>(store: &S, id: &EnrollmentId, mode: NextCommand) -> Option<String> {
    store.next_command(id, mode).await.unwrap().map(|c| c.uuid)
}

/// Run every conformance check against a fresh, empty store.
pub async fn run_all<S: Store>(store: &S) {
    queue_sequence(store).await;
    unknown_report_leaves_queue_alone(store).await;
    duplicate_and_unknown_targets(store).await;
    one_command_many_targets(store).await;
    user_channel_cascade(store).await;
    token_update_tally_and_unlock_token(store).await;
    identity_pinning(store).await;
    identity_evidence(store).await;
    garbage_collection(store).await;
    events_bootstrap_secrets(store).await;
    listing(store).await;
    challenges(store).await;
    scep_transactions(store).await;
    machine_info(store).await;
    webhooks::webhooks(store).await;
    profile_library(store).await;
    devices_and_setups(store).await;
    outbox::emitting_writes(store).await;
}

async fn devices_and_setups<S: Store>(store: &S) {
    let t0 = now();
    let device = DeviceRecord {
        serial_number: "SN-SETUP".into(),
        udid: None,
        enrollment_id: Some("E-SETUP".into()),
        model: "Mac mini".into(),
        device_family: "Mac".into(),
        os: "OSX".into(),
        os_version: None,
        dep_server: None,
        stage: DeviceStage::Enrolled,
        team: Some("T".into()),
        placed_by: Some("default".into()),
        user: None,
        created_at: t0,
        updated_at: t0,
    };
    let step = |id: &str, uuid: &str| SetupStep {
        id: id.into(),
        required: true,
        action: serde_json::json!({"id": id, "install_profile": "wifi"}),
        command_uuid: uuid.into(),
        queued: true,
        status: StepState::Running,
        attempts: 0,
        error: None,
    };
    let mut setup = SetupRecord {
        enrollment_id: "E-SETUP".into(),
        serial_number: "SN-SETUP".into(),
        started_by: 7,
        started_at: t0,
        steps_by: "default".into(),
        steps: vec![step("a", "CMD-A"), step("b", "CMD-B")],
        timeout_secs: 60,
        state: SetupState::Running,
        release_command: None,
        release_queued: false,
        user_channel: false,
        next_check_at: Some(t0 + Duration::seconds(30)),
        updated_at: t0,
    };
    let events = store
        .apply(
            LifecycleWrite {
                devices: vec![device.clone()],
                setups: vec![setup.clone()],
                events: vec![NewEvent {
                    kind: "setup.started".into(),
                    enrollment_id: None,
                    data: serde_json::json!({}),
                }],
                cursor: Some(("conformance".into(), 41)),
            },
            t0,
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "events commit with the records");
    assert_eq!(store.cursor("conformance").await.unwrap(), 41);
    assert_eq!(store.cursor("never-set").await.unwrap(), 0);
    assert_eq!(
        store.device("SN-SETUP").await.unwrap(),
        Some(device.clone())
    );
    assert_eq!(
        store.device_by_enrollment("E-SETUP").await.unwrap(),
        Some(device.clone())
    );
    assert_eq!(
        store
            .setup_by_command("CMD-B")
            .await
            .unwrap()
            .map(|s| s.started_by),
        Some(7)
    );
    assert!(
        store.due_setups(t0, 10).await.unwrap().is_empty(),
        "not yet due"
    );
    assert_eq!(
        store
            .due_setups(t0 + Duration::seconds(31), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // A new setup of the same enrollment replaces the old one's command index and timer.
    setup.started_by = 9;
    setup.steps = vec![step("c", "CMD-C")];
    setup.state = SetupState::Held {
        reason: "r".into(),
        by: "p".into(),
    };
    store
        .apply(
            LifecycleWrite {
                setups: vec![setup],
                ..Default::default()
            },
            t0,
        )
        .await
        .unwrap();
    assert!(store.setup_by_command("CMD-A").await.unwrap().is_none());
    assert!(store.setup_by_command("CMD-C").await.unwrap().is_some());
    assert!(
        store
            .due_setups(t0 + Duration::seconds(31), 10)
            .await
            .unwrap()
            .is_empty(),
        "a held setup has no timer"
    );
    // Moving a device to another enrollment re-indexes it.
    let mut moved = device;
    moved.enrollment_id = Some("E-OTHER".into());
    store
        .apply(
            LifecycleWrite {
                devices: vec![moved],
                ..Default::default()
            },
            t0,
        )
        .await
        .unwrap();
    assert!(
        store
            .device_by_enrollment("E-SETUP")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .device_by_enrollment("E-OTHER")
            .await
            .unwrap()
            .is_some()
    );
    let listed = store
        .list_devices(&DeviceQuery {
            team: Some("T".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
}

async fn machine_info<S: Store>(store: &S) {
    let mut info = crate::wire::machine_info::MachineInfo {
        udid: "MI-1".into(),
        serial: "SN-MI-1".into(),
        os_version: Some("14.0".into()),
        ..Default::default()
    };
    let t0 = now();
    store
        .record_machine_info(&info, t0, Emit::none())
        .await
        .unwrap();
    info.os_version = Some("14.1".into());
    store
        .record_machine_info(&info, t0 + Duration::seconds(5), Emit::none())
        .await
        .unwrap();
    let r = store.machine_info("MI-1").await.unwrap().unwrap();
    assert_eq!(r.info.os_version.as_deref(), Some("14.1"));
    assert_eq!(r.first_seen_at, t0, "first sighting is kept");
    assert!(r.last_seen_at > t0);
    assert!(store.machine_info("nope").await.unwrap().is_none());
}

async fn challenges<S: Store>(store: &S) {
    let later = now() + Duration::hours(1);
    store.put_challenge("one-time", later).await.unwrap();
    assert_eq!(
        store.consume_challenge("one-time", now()).await.unwrap(),
        ChallengeStatus::Accepted
    );
    assert_eq!(
        store.consume_challenge("one-time", now()).await.unwrap(),
        ChallengeStatus::AlreadyUsed,
        "replay refused"
    );
    assert_eq!(
        store.consume_challenge("never", now()).await.unwrap(),
        ChallengeStatus::Unknown
    );
    store
        .put_challenge("stale", now() - Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(
        store.consume_challenge("stale", now()).await.unwrap(),
        ChallengeStatus::Expired
    );
    assert!(store.prune_challenges(now()).await.unwrap() >= 1);
    assert_eq!(
        store.consume_challenge("stale", now()).await.unwrap(),
        ChallengeStatus::Unknown
    );
}

async fn scep_transactions<S: Store>(store: &S) {
    let issue = |tx: &str, key: u8, cert: &[u8], expires_at| ScepIssue {
        transaction_id: tx.into(),
        csr_key_sha256: [key; 32],
        signer_key_sha256: [key; 32],
        challenge_sha256: Some([9; 32]),
        certificate_der: cert.to_vec(),
        expires_at,
    };
    let later = now() + Duration::hours(1);
    assert!(store.scep_issues("TX", now()).await.unwrap().is_empty());
    store
        .put_scep_issue(&issue("TX", 1, b"c1", later))
        .await
        .unwrap();
    store
        .put_scep_issue(&issue("TX", 2, b"c2", later))
        .await
        .unwrap();
    store
        .put_scep_issue(&issue("TX-other", 1, b"c3", later))
        .await
        .unwrap();
    // A prefix of another transaction ID is another transaction.
    store
        .put_scep_issue(&issue("T", 1, b"c4", later))
        .await
        .unwrap();
    let mut got = store.scep_issues("TX", now()).await.unwrap();
    got.sort_by_key(|i| i.csr_key_sha256);
    assert_eq!(
        got,
        vec![issue("TX", 1, b"c1", later), issue("TX", 2, b"c2", later)]
    );
    // Replacing keeps one record per (transaction, key).
    let sooner = now() + Duration::minutes(5);
    store
        .put_scep_issue(&issue("TX", 1, b"c1b", sooner))
        .await
        .unwrap();
    assert_eq!(store.scep_issues("TX", now()).await.unwrap().len(), 2);
    store
        .put_scep_issue(&issue("TX-stale", 1, b"c5", now() - Duration::seconds(1)))
        .await
        .unwrap();
    assert!(
        store
            .scep_issues("TX-stale", now())
            .await
            .unwrap()
            .is_empty(),
        "expired records are not returned"
    );
    assert_eq!(store.prune_scep_issues(now(), 100).await.unwrap(), 1);
    assert_eq!(
        store
            .prune_scep_issues(now() + Duration::minutes(10), 100)
            .await
            .unwrap(),
        1,
        "the replaced record expires on its new date"
    );
    assert_eq!(store.scep_issues("TX", now()).await.unwrap().len(), 1);
    assert_eq!(
        store
            .prune_scep_issues(now() + Duration::hours(2), 2)
            .await
            .unwrap(),
        2,
        "pruning stops at the limit"
    );
}

/// The sequence of `docs/protocol.md#queue-conformance-sequence`, step by step.
async fn queue_sequence<S: Store>(store: &S) {
    let c = enroll(store, "Q-1").await;
    let id = &c.id;
    use NextCommand::*;
    assert_eq!(next(store, id, AfterIdle).await, None, "Idle → nothing");
    enqueue_one(store, "C1", id).await;
    enqueue_one(store, "C2", id).await;
    let c1 = store.next_command(id, AfterIdle).await.unwrap().unwrap();
    assert_eq!(c1.uuid, "C1", "Idle → C1");
    assert_eq!(c1.raw, cmd("C1").raw, "exact enqueued bytes");
    assert!(matches!(
        report(store, id, "C1", Status::Acknowledged).await,
        ReportOutcome::Recorded {
            command_finished: true
        }
    ));
    assert_eq!(
        next(store, id, AfterReport).await.as_deref(),
        Some("C2"),
        "Ack C1 → C2"
    );
    report(store, id, "C2", Status::Acknowledged).await;
    assert_eq!(next(store, id, AfterReport).await, None, "Ack C2 → nothing");
    enqueue_one(store, "C3", id).await;
    assert_eq!(
        next(store, id, AfterIdle).await.as_deref(),
        Some("C3"),
        "Idle → C3"
    );
    assert_eq!(
        report(store, id, "C3", Status::NotNow).await,
        ReportOutcome::Recorded {
            command_finished: false
        }
    );
    assert_eq!(
        next(store, id, AfterReport).await,
        None,
        "NotNow C3 → nothing"
    );
    let q = store.queue(id).await.unwrap();
    assert!(
        q.len() == 1 && q[0].not_now,
        "C3 stays queued, flagged NotNow"
    );
    assert_eq!(
        next(store, id, AfterIdle).await.as_deref(),
        Some("C3"),
        "Idle → C3 again"
    );
    assert!(
        !store.queue(id).await.unwrap()[0].not_now,
        "Idle resets NotNow flags"
    );
    report(store, id, "C3", Status::Acknowledged).await;
    assert_eq!(next(store, id, AfterReport).await, None, "Ack C3 → nothing");
    enqueue_one(store, "C4", id).await;
    // Re-Authenticate: the service clears the device's queues.
    assert_eq!(
        store
            .clear_queue(std::slice::from_ref(id), now())
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        next(store, id, AfterIdle).await,
        None,
        "re-Authenticate clears the queue"
    );
    let c4 = store.command("C4").await.unwrap().unwrap();
    assert_eq!(c4.targets[0].state, TargetState::Cancelled);
    assert!(c4.finished_at.is_some());

    // NotNow'd commands are skipped within one response but later ones are still delivered.
    enqueue_one(store, "C5", id).await;
    enqueue_one(store, "C6", id).await;
    assert_eq!(next(store, id, AfterIdle).await.as_deref(), Some("C5"));
    report(store, id, "C5", Status::NotNow).await;
    assert_eq!(
        next(store, id, AfterReport).await.as_deref(),
        Some("C6"),
        "skip NotNow'd C5"
    );
    report(store, id, "C6", Status::Error).await;
    assert_eq!(next(store, id, AfterReport).await, None);
    assert_eq!(next(store, id, AfterIdle).await.as_deref(), Some("C5"));
    let c6 = store.command("C6").await.unwrap().unwrap();
    assert_eq!(c6.targets[0].state, TargetState::Error);
    assert_eq!(
        c6.targets[0].result.as_deref(),
        Some(&b"report C6 Error"[..])
    );
    assert!(store.cancel(id, "C5", now()).await.unwrap());
    assert!(
        !store.cancel(id, "C5", now()).await.unwrap(),
        "cancel twice"
    );
    assert_eq!(next(store, id, AfterIdle).await, None);
}

async fn unknown_report_leaves_queue_alone<S: Store>(store: &S) {
    let c = enroll(store, "U-1").await;
    enqueue_one(store, "U-C1", &c.id).await;
    enqueue_one(store, "U-C2", &c.id).await;
    for status in [Status::Acknowledged, Status::Error, Status::NotNow] {
        assert_eq!(
            report(store, &c.id, "NOPE", status).await,
            ReportOutcome::NotQueued
        );
    }
    // A report for a command queued for someone else changes nothing either.
    let other = enroll(store, "U-2").await;
    assert_eq!(
        report(store, &other.id, "U-C1", Status::Acknowledged).await,
        ReportOutcome::NotQueued
    );
    let q: Vec<_> = store
        .queue(&c.id)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.uuid)
        .collect();
    assert_eq!(
        q,
        ["U-C1", "U-C2"],
        "unknown reports must not disturb the queue"
    );
    // A duplicate ack (device re-sent after a lost response) is harmless.
    report(store, &c.id, "U-C1", Status::Acknowledged).await;
    assert_eq!(
        report(store, &c.id, "U-C1", Status::Acknowledged).await,
        ReportOutcome::NotQueued
    );
    assert_eq!(
        next(store, &c.id, NextCommand::AfterReport)
            .await
            .as_deref(),
        Some("U-C2")
    );
}

async fn duplicate_and_unknown_targets<S: Store>(store: &S) {
    let c = enroll(store, "D-1").await;
    enqueue_one(store, "D-C1", &c.id).await;
    let err = store
        .enqueue(&cmd("D-C1"), std::slice::from_ref(&c.id), 100, now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateCommand(u) if u == "D-C1"));
    let err = store
        .enqueue(
            &cmd("D-C2"),
            &[c.id.clone(), EnrollmentId::new("ghost")],
            100,
            now(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownEnrollment(ref i) if i.as_str() == "ghost"));
    assert!(
        store.command("D-C2").await.unwrap().is_none(),
        "nothing half-written"
    );
    assert_eq!(store.queue(&c.id).await.unwrap().len(), 1);
    store
        .enqueue(&cmd("D-C3"), std::slice::from_ref(&c.id), 2, now())
        .await
        .unwrap();
    let err = store
        .enqueue(&cmd("D-C4"), std::slice::from_ref(&c.id), 2, now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::QueueFull { limit: 2, .. }));
}

async fn one_command_many_targets<S: Store>(store: &S) {
    let a = enroll(store, "M-1").await;
    let b = enroll(store, "M-2").await;
    store
        .enqueue(
            &cmd("M-C1"),
            &[a.id.clone(), b.id.clone(), a.id.clone()],
            100,
            now(),
        )
        .await
        .unwrap();
    let rec = store.command("M-C1").await.unwrap().unwrap();
    assert_eq!(rec.targets.len(), 2, "targets are de-duplicated");
    assert!(matches!(
        report(store, &a.id, "M-C1", Status::Acknowledged).await,
        ReportOutcome::Recorded {
            command_finished: false
        }
    ));
    assert!(matches!(
        report(store, &b.id, "M-C1", Status::Acknowledged).await,
        ReportOutcome::Recorded {
            command_finished: true
        }
    ));
    let rec = store.command("M-C1").await.unwrap().unwrap();
    assert!(
        rec.targets
            .iter()
            .all(|t| t.state == TargetState::Acknowledged)
    );
    assert!(rec.finished_at.is_some());
}

async fn user_channel_cascade<S: Store>(store: &S) {
    let d = enroll(store, "UC-1").await;
    let u = user("UC-1", "G1");
    let tally = store
        .store_token_update(
            &u,
            &token_update(),
            None,
            (Some("jane".into()), None),
            now(),
            Emit::none(),
        )
        .await
        .unwrap();
    assert_eq!(tally.0, 1);
    let e = store.enrollment(&u.id).await.unwrap().unwrap();
    assert!(e.enabled);
    assert_eq!(e.parent.as_ref(), Some(&d.id));
    assert_eq!(e.user_short_name.as_deref(), Some("jane"));
    assert_eq!(
        store.user_channels(&d.id).await.unwrap(),
        vec![u.id.clone()]
    );
    let (mut disabled, _) = store.disable(&d.id, now(), Emit::none()).await.unwrap();
    disabled.sort();
    assert_eq!(
        disabled,
        vec![d.id.clone(), u.id.clone()],
        "device disable cascades"
    );
    assert!(!store.enrollment(&u.id).await.unwrap().unwrap().enabled);
    let push = store
        .push_targets(&[d.id.clone(), u.id.clone()])
        .await
        .unwrap();
    assert!(
        push.iter().all(|(_, p)| p.is_none()),
        "no push to disabled channels"
    );
}

async fn token_update_tally_and_unlock_token<S: Store>(store: &S) {
    let c = enroll(store, "T-1").await;
    let t2 = store
        .store_token_update(
            &c,
            &token_update(),
            Some(b"sealed-unlock".to_vec()),
            (None, None),
            now(),
            Emit::none(),
        )
        .await
        .unwrap();
    assert_eq!(t2.0, 2);
    store
        .store_token_update(&c, &token_update(), None, (None, None), now(), Emit::none())
        .await
        .unwrap();
    let e = store.enrollment(&c.id).await.unwrap().unwrap();
    assert_eq!(e.token_update_tally, 3);
    assert_eq!(
        e.unlock_token_sealed.as_deref(),
        Some(&b"sealed-unlock"[..]),
        "a missing UnlockToken never erases one"
    );
    let auth = Authenticate {
        topic: "t".into(),
        ..Default::default()
    };
    store
        .store_authenticate(&c, &auth, now(), Emit::none())
        .await
        .unwrap();
    let e = store.enrollment(&c.id).await.unwrap().unwrap();
    assert_eq!(
        (e.enabled, e.token_update_tally),
        (false, 0),
        "Authenticate resets"
    );
    let push = store
        .push_targets(std::slice::from_ref(&c.id))
        .await
        .unwrap();
    assert!(push[0].1.is_none());
    store
        .store_token_update(&c, &token_update(), None, (None, None), now(), Emit::none())
        .await
        .unwrap();
    let push = store
        .push_targets(std::slice::from_ref(&c.id))
        .await
        .unwrap();
    assert_eq!(push[0].1.as_ref().unwrap().token, "ab".repeat(32));
    store.invalidate_push(&c.id, Emit::none()).await.unwrap();
    let push = store
        .push_targets(std::slice::from_ref(&c.id))
        .await
        .unwrap();
    assert!(!push[0].1.as_ref().unwrap().valid);
}

async fn identity_pinning<S: Store>(store: &S) {
    let id = EnrollmentId::new("I-1");
    let h1 = CertHash::of_der(b"cert one");
    let h2 = CertHash::of_der(b"cert two");
    assert_eq!(store.cert_owner(&h1).await.unwrap(), None);
    store.pin_cert(&id, &h1).await.unwrap();
    assert_eq!(store.pinned_cert(&id).await.unwrap(), Some(h1));
    store.link_renewal(&h1, &h2).await.unwrap();
    assert_eq!(store.renewed_from(&h2).await.unwrap(), Some(h1));
    store.pin_cert(&id, &h2).await.unwrap();
    assert_eq!(store.pinned_cert(&id).await.unwrap(), Some(h2));
    assert_eq!(
        store.cert_owner(&h1).await.unwrap(),
        Some(id.clone()),
        "old hashes stay owned"
    );
}

/// Certificate bindings, bound challenges, checked-out marks, admin approvals and the escrow
/// holder of bootstrap tokens.
async fn identity_evidence<S: Store>(store: &S) {
    let h1 = CertHash::of_der(b"evidence one");
    let h2 = CertHash::of_der(b"evidence two");
    let binding = CertBinding {
        udid: "EV-UDID".into(),
        serial: "C02EVIDENCE".into(),
        source: BindingSource::MachineInfo,
    };
    assert_eq!(store.cert_binding(&h1).await.unwrap(), None);
    store.bind_cert(&h1, &binding).await.unwrap();
    assert_eq!(
        store.cert_binding(&h1).await.unwrap(),
        Some(binding.clone())
    );

    // A bound challenge keeps its binding after use; an anonymous one has none.
    let later = now() + Duration::hours(1);
    store
        .put_bound_challenge("bound-challenge", later, &binding)
        .await
        .unwrap();
    store.put_challenge("plain-challenge", later).await.unwrap();
    assert_eq!(
        store
            .consume_challenge("bound-challenge", now())
            .await
            .unwrap(),
        ChallengeStatus::Accepted
    );
    assert_eq!(
        store.challenge_binding("bound-challenge").await.unwrap(),
        Some(binding.clone())
    );
    assert_eq!(
        store.challenge_binding("plain-challenge").await.unwrap(),
        None
    );
    assert_eq!(store.challenge_binding("unknown").await.unwrap(), None);

    // Checked out until the next pin.
    let ch = enroll(store, "EV-UDID").await;
    let id = ch.id.clone();
    store.pin_cert(&id, &h1).await.unwrap();
    assert!(!store.pin_released(&id).await.unwrap());
    store.release_pin(&id).await.unwrap();
    assert!(store.pin_released(&id).await.unwrap());
    store.pin_cert(&id, &h1).await.unwrap();
    assert!(!store.pin_released(&id).await.unwrap());

    // One-time, expiring approvals.
    assert!(!store.take_reenrollment_approval(&id, now()).await.unwrap());
    store.approve_reenrollment(&id, later).await.unwrap();
    assert!(store.take_reenrollment_approval(&id, now()).await.unwrap());
    assert!(!store.take_reenrollment_approval(&id, now()).await.unwrap());
    store
        .approve_reenrollment(&id, now() - Duration::seconds(1))
        .await
        .unwrap();
    assert!(!store.take_reenrollment_approval(&id, now()).await.unwrap());

    // The escrow holder; a re-pin clearing escrow drops token, holder and unlock token.
    store
        .store_bootstrap_token_held(&id, Some(b"sealed".to_vec()), &h1, Emit::none())
        .await
        .unwrap();
    assert_eq!(store.bootstrap_holder(&id).await.unwrap(), Some(h1));
    store
        .store_token_update(
            &ch,
            &token_update(),
            Some(b"unlock".to_vec()),
            (None, None),
            now(),
            Emit::none(),
        )
        .await
        .unwrap();
    store
        .repin_cert_clearing_escrow(&id, &h2, Emit::none())
        .await
        .unwrap();
    assert_eq!(store.pinned_cert(&id).await.unwrap(), Some(h2));
    assert_eq!(store.bootstrap_token(&id).await.unwrap(), None);
    assert_eq!(store.bootstrap_holder(&id).await.unwrap(), None);
    let e = store.enrollment(&id).await.unwrap().unwrap();
    assert_eq!(e.unlock_token_sealed, None);
    assert_eq!(store.cert_owner(&h1).await.unwrap(), Some(id.clone()));
}

async fn garbage_collection<S: Store>(store: &S) {
    let c = enroll(store, "G-1").await;
    enqueue_one(store, "G-C1", &c.id).await;
    enqueue_one(store, "G-C2", &c.id).await;
    report(store, &c.id, "G-C1", Status::Acknowledged).await;
    let later = now() + Duration::seconds(5);
    let deleted = store.collect_garbage(later, 10_000).await.unwrap();
    assert!(deleted >= 1);
    assert!(
        store.command("G-C1").await.unwrap().is_none(),
        "finished command collected"
    );
    assert!(
        store.command("G-C2").await.unwrap().is_some(),
        "pending command kept"
    );
    assert_eq!(
        store
            .collect_garbage(now() - Duration::hours(1), 10)
            .await
            .unwrap(),
        0
    );
}

async fn events_bootstrap_secrets<S: Store>(store: &S) {
    let base = store
        .events_after(0, usize::MAX)
        .await
        .unwrap()
        .last()
        .map_or(0, |e| e.seq);
    let ev = |k: &str| NewEvent {
        kind: k.into(),
        enrollment_id: None,
        data: serde_json::json!({"k": k}),
    };
    let written = store
        .append_events(vec![ev("a"), ev("b")], now())
        .await
        .unwrap();
    assert_eq!(written[1].seq, written[0].seq + 1);
    let read = store.events_after(base, 10).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(
        store.events_after(written[0].seq, 10).await.unwrap().len(),
        1
    );
    assert!(
        store
            .prune_events(now() + Duration::seconds(1))
            .await
            .unwrap()
            >= 2
    );
    assert!(store.events_after(0, 10).await.unwrap().is_empty());
    let again = store.append_events(vec![ev("c")], now()).await.unwrap();
    assert!(
        again[0].seq > written[1].seq,
        "sequence numbers never go back"
    );

    let id = EnrollmentId::new("B-1");
    assert_eq!(store.bootstrap_token(&id).await.unwrap(), None);
    store
        .store_bootstrap_token(&id, Some(b"bt".to_vec()), Emit::none())
        .await
        .unwrap();
    assert_eq!(
        store.bootstrap_token(&id).await.unwrap().as_deref(),
        Some(&b"bt"[..])
    );
    store
        .store_bootstrap_token(&id, None, Emit::none())
        .await
        .unwrap();
    assert_eq!(store.bootstrap_token(&id).await.unwrap(), None);

    store
        .put_secret("ca.key", b"sealed".to_vec())
        .await
        .unwrap();
    assert_eq!(
        store.secret("ca.key").await.unwrap().as_deref(),
        Some(&b"sealed"[..])
    );
    assert_eq!(store.secret("nope").await.unwrap(), None);
}

async fn listing<S: Store>(store: &S) {
    for i in 0..5 {
        enroll(store, &format!("L-{i}")).await;
    }
    let q = EnrollmentQuery {
        after: Some("L-".into()),
        limit: Some(2),
        ..Default::default()
    };
    let page = store.list_enrollments(&q).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["L-0", "L-1"]
    );
    let q = EnrollmentQuery {
        after: Some("L-1".into()),
        limit: Some(2),
        ..Default::default()
    };
    let page = store.list_enrollments(&q).await.unwrap();
    assert_eq!(page[0].id.as_str(), "L-2");
    let q = EnrollmentQuery {
        serial_number: Some("SN-L-3".into()),
        ..Default::default()
    };
    let page = store.list_enrollments(&q).await.unwrap();
    assert_eq!(page.len(), 1);
    let q = EnrollmentQuery {
        kind: Some(ChannelKind::User),
        ..Default::default()
    };
    assert!(
        store
            .list_enrollments(&q)
            .await
            .unwrap()
            .iter()
            .all(|e| e.kind == ChannelKind::User)
    );
    store
        .touch(vec![
            (EnrollmentId::new("L-0"), now() + Duration::hours(1)),
            (EnrollmentId::new("ghost"), now()),
        ])
        .await
        .unwrap();
    let e = store
        .enrollment(&EnrollmentId::new("L-0"))
        .await
        .unwrap()
        .unwrap();
    assert!(e.last_seen_at.unwrap() > now());
}

fn profile(name: &str, identifier: &str, bytes: &[u8], at: Timestamp) -> StoredProfile {
    use crate::wire::config_profile::{PayloadSummary, PlistFormat, ProfileInfo};
    StoredProfile {
        meta: ProfileMeta {
            name: name.into(),
            sha256: hex::encode(openssl::sha::sha256(bytes)),
            size: bytes.len() as u64,
            uploaded_at: at,
            profile: ProfileInfo {
                identifier: identifier.into(),
                uuid: format!("UUID-{identifier}"),
                display_name: Some(format!("Profile {name}")),
                description: None,
                organization: None,
                scope: None,
                user_scoped: false,
                removal_disallowed: false,
                format: PlistFormat::Xml,
                signed: false,
                signer: None,
                payloads: vec![PayloadSummary {
                    payload_type: "com.apple.wifi.managed".into(),
                    identifier: format!("{identifier}.wifi"),
                    uuid: format!("UUID-{identifier}.wifi"),
                    display_name: None,
                }],
            },
        },
        bytes: bytes.to_vec(),
    }
}

async fn profile_library<S: Store>(store: &S) {
    assert!(store.profile("wifi").await.unwrap().is_none());
    assert!(!store.delete_profile("wifi").await.unwrap());
    let t0 = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    let wifi = profile("wifi", "com.example.wifi", b"<plist>one</plist>", t0);
    assert!(!store.put_profile(&wifi).await.unwrap(), "created");
    let vpn = profile("a-vpn", "com.example.vpn", &[0u8, 159, 146, 150, 255], t0);
    assert!(!store.put_profile(&vpn).await.unwrap());
    assert_eq!(
        store.profile("wifi").await.unwrap(),
        Some(wifi.clone()),
        "metadata and bytes round-trip"
    );
    assert_eq!(
        store.profile("a-vpn").await.unwrap().unwrap().bytes,
        vpn.bytes,
        "non-UTF-8 bytes are kept exactly"
    );
    let names: Vec<String> = store
        .profiles()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["a-vpn", "wifi"], "listed by name");

    let replaced = profile(
        "wifi",
        "com.example.wifi",
        b"<plist>two, longer</plist>",
        t0 + Duration::minutes(5),
    );
    assert!(store.put_profile(&replaced).await.unwrap(), "replaced");
    let got = store.profile("wifi").await.unwrap().unwrap();
    assert_eq!(got, replaced, "bytes and metadata replaced together");
    assert_eq!(store.profiles().await.unwrap().len(), 2);
    assert_eq!(store.profiles().await.unwrap()[1], replaced.meta);

    assert!(store.delete_profile("wifi").await.unwrap());
    assert!(store.profile("wifi").await.unwrap().is_none());
    assert!(!store.delete_profile("wifi").await.unwrap());
    assert_eq!(store.profiles().await.unwrap(), vec![vpn.meta.clone()]);
    assert!(store.delete_profile("a-vpn").await.unwrap());
    assert!(store.profiles().await.unwrap().is_empty());
}
