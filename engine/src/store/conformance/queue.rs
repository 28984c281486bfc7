//! Conformance checks of [`QueueStore`].

use time::Duration;

use super::*;

/// The command-queue sequence of a device's check-ins: Idle, Acknowledged, NotNow, a
/// re-Authenticate clearing the queue, NotNow'd commands skipped until the next Idle, cancel.
pub async fn queue_sequence<S: Store + ?Sized>(store: &S) {
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

/// Reports for unknown commands, or commands queued for someone else, change nothing.
pub async fn unknown_report_leaves_queue_alone<S: Store + ?Sized>(store: &S) {
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

/// Duplicate UUIDs, unknown targets (nothing half-written) and the queue bound.
pub async fn duplicate_and_unknown_targets<S: Store + ?Sized>(store: &S) {
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

/// One command for several targets: de-duplicated, finished when the last target answers.
pub async fn one_command_many_targets<S: Store + ?Sized>(store: &S) {
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

/// Finished commands are collected; pending ones are kept.
pub async fn garbage_collection<S: Store + ?Sized>(store: &S) {
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

/// `collect_garbage` deletes at most `limit` commands per call, cancelled ones included.
pub async fn garbage_collection_limit<S: Store + ?Sized>(store: &S) {
    let c = enroll(store, "GL-1").await;
    for uuid in ["GL-C1", "GL-C2", "GL-C3"] {
        enqueue_one(store, uuid, &c.id).await;
    }
    report(store, &c.id, "GL-C1", Status::Acknowledged).await;
    report(store, &c.id, "GL-C2", Status::Error).await;
    assert!(store.cancel(&c.id, "GL-C3", now()).await.unwrap());
    let later = now() + Duration::seconds(5);
    assert_eq!(
        store.collect_garbage(later, 0).await.unwrap(),
        0,
        "a limit of 0 deletes nothing"
    );
    assert_eq!(store.collect_garbage(later, 2).await.unwrap(), 2);
    assert_eq!(store.collect_garbage(later, 2).await.unwrap(), 1);
    assert_eq!(store.collect_garbage(later, 2).await.unwrap(), 0);
    for uuid in ["GL-C1", "GL-C2", "GL-C3"] {
        assert!(store.command(uuid).await.unwrap().is_none(), "{uuid}");
    }
}

/// Unknown enrollments and commands: empty answers, no errors, nothing changed.
pub async fn queue_unknowns<S: Store + ?Sized>(store: &S) {
    let ghost = EnrollmentId::new("ghost");
    use NextCommand::*;
    assert_eq!(next(store, &ghost, AfterIdle).await, None);
    assert_eq!(next(store, &ghost, AfterReport).await, None);
    assert!(store.queue(&ghost).await.unwrap().is_empty());
    assert!(!store.cancel(&ghost, "NOPE", now()).await.unwrap());
    assert!(store.command("NOPE").await.unwrap().is_none());
    assert_eq!(
        store
            .clear_queue(std::slice::from_ref(&ghost), now())
            .await
            .unwrap(),
        0
    );
    let c = enroll(store, "QU-1").await;
    assert!(store.queue(&c.id).await.unwrap().is_empty());
    assert!(!store.cancel(&c.id, "NOPE", now()).await.unwrap());
    assert_eq!(
        store
            .clear_queue(std::slice::from_ref(&c.id), now())
            .await
            .unwrap(),
        0,
        "an empty queue clears nothing"
    );
    // The queue lists commands in delivery order with what was enqueued.
    enqueue_one(store, "QU-C2", &c.id).await;
    enqueue_one(store, "QU-C1", &c.id).await;
    let q = store.queue(&c.id).await.unwrap();
    assert_eq!(
        q.iter().map(|c| c.uuid.as_str()).collect::<Vec<_>>(),
        ["QU-C2", "QU-C1"],
        "enqueue order, not UUID order"
    );
    assert_eq!(q[0].request_type, "ProfileList");
    assert_eq!(q[0].raw, cmd("QU-C2").raw);
    assert!(!q[0].not_now);
    let rec = store.command("QU-C2").await.unwrap().unwrap();
    assert_eq!(rec.request_type, "ProfileList");
    assert_eq!(rec.raw, cmd("QU-C2").raw);
    assert_eq!(rec.finished_at, None);
    assert_eq!(rec.targets.len(), 1);
    assert_eq!(rec.targets[0].enrollment_id, c.id);
    assert_eq!(rec.targets[0].state, TargetState::Pending);
}

/// `enqueue_emitting` appends its events with the command; a refused enqueue appends none.
pub async fn enqueue_emitting<S: Store + ?Sized>(store: &S) {
    let c = enroll(store, "QE-1").await;
    let head = store.event_head().await.unwrap();
    let written = store
        .enqueue_emitting(
            &cmd("QE-C1"),
            std::slice::from_ref(&c.id),
            100,
            now(),
            Emit::events(vec![ev("test.enqueued")]),
        )
        .await
        .unwrap();
    assert_eq!(kinds(&written), ["test.enqueued"]);
    assert_eq!(kinds_after(store, head).await, ["test.enqueued"]);
    assert_eq!(store.queue(&c.id).await.unwrap().len(), 1);

    let head = store.event_head().await.unwrap();
    for targets in [
        vec![c.id.clone()],
        vec![c.id.clone(), EnrollmentId::new("ghost")],
    ] {
        let uuid = if targets.len() == 1 { "QE-C1" } else { "QE-C2" };
        store
            .enqueue_emitting(
                &cmd(uuid),
                &targets,
                100,
                now(),
                Emit::events(vec![ev("test.refused")]),
            )
            .await
            .unwrap_err();
    }
    assert!(
        kinds_after(store, head).await.is_empty(),
        "a refused enqueue logs nothing"
    );
}

/// `record_report` builds its events from the outcome and appends them with the report.
pub async fn record_report_emitting<S: Store + ?Sized>(store: &S) {
    let c = enroll(store, "QR-1").await;
    enqueue_one(store, "QR-C1", &c.id).await;
    let by_outcome = || {
        Emit::with(|o: &ReportOutcome| match o {
            ReportOutcome::Recorded {
                command_finished: true,
            } => vec![ev("test.finished")],
            ReportOutcome::Recorded {
                command_finished: false,
            } => vec![ev("test.recorded")],
            ReportOutcome::NotQueued => Vec::new(),
        })
    };
    let head = store.event_head().await.unwrap();
    let (outcome, written) = store
        .record_report(
            &c.id,
            &report_record("QR-C1", Status::NotNow),
            now(),
            by_outcome(),
        )
        .await
        .unwrap();
    assert_eq!(
        outcome,
        ReportOutcome::Recorded {
            command_finished: false
        }
    );
    assert_eq!(kinds(&written), ["test.recorded"]);
    let (outcome, written) = store
        .record_report(
            &c.id,
            &report_record("QR-C1", Status::Acknowledged),
            now(),
            by_outcome(),
        )
        .await
        .unwrap();
    assert_eq!(
        outcome,
        ReportOutcome::Recorded {
            command_finished: true
        }
    );
    assert_eq!(kinds(&written), ["test.finished"]);
    let (outcome, written) = store
        .record_report(
            &c.id,
            &report_record("QR-C1", Status::Acknowledged),
            now(),
            by_outcome(),
        )
        .await
        .unwrap();
    assert_eq!(outcome, ReportOutcome::NotQueued);
    assert!(written.is_empty());
    assert_eq!(
        kinds_after(store, head).await,
        ["test.recorded", "test.finished"]
    );
    let rec = store.command("QR-C1").await.unwrap().unwrap();
    assert_eq!(rec.targets[0].state, TargetState::Acknowledged);
    assert_eq!(
        rec.targets[0].result.as_deref(),
        Some(&b"report QR-C1 Acknowledged"[..])
    );
}

/// Cancelling a command for one target leaves it queued for the others.
pub async fn cancel_one_target<S: Store + ?Sized>(store: &S) {
    let a = enroll(store, "QC-1").await;
    let b = enroll(store, "QC-2").await;
    store
        .enqueue(&cmd("QC-C1"), &[a.id.clone(), b.id.clone()], 100, now())
        .await
        .unwrap();
    assert!(store.cancel(&a.id, "QC-C1", now()).await.unwrap());
    assert!(store.queue(&a.id).await.unwrap().is_empty());
    assert_eq!(
        next(store, &b.id, NextCommand::AfterIdle).await.as_deref(),
        Some("QC-C1")
    );
    let rec = store.command("QC-C1").await.unwrap().unwrap();
    let state = |id: &EnrollmentId| {
        rec.targets
            .iter()
            .find(|t| &t.enrollment_id == id)
            .map(|t| t.state)
    };
    assert_eq!(state(&a.id), Some(TargetState::Cancelled));
    assert_eq!(state(&b.id), Some(TargetState::Pending));
    assert_eq!(rec.finished_at, None, "b has not answered");
    assert!(store.cancel(&b.id, "QC-C1", now()).await.unwrap());
    let rec = store.command("QC-C1").await.unwrap().unwrap();
    assert!(rec.finished_at.is_some(), "every target is done");
}
