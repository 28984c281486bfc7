//! Conformance checks of [`TeamStore`] and [`DeviceStore`].

use std::collections::BTreeMap;

use time::Duration;

use super::*;

/// Devices and setups written with their events and cursor in one [`LifecycleWrite`]; the
/// enrollment and command indexes follow replacements.
pub async fn devices_and_setups<S: Store + ?Sized>(store: &S) {
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

fn team(name: &str, at: Timestamp) -> Team {
    Team {
        name: name.into(),
        enrollment_profiles: BTreeMap::from([("macos".to_owned(), format!("{name}-mac"))]),
        setup_steps: serde_json::json!([{"id": "wifi", "install_profile": "wifi"}]),
        release_timeout_secs: Some(600),
        updated_at: at,
    }
}

fn step(id: &str, uuid: &str, queued: bool) -> SetupStep {
    SetupStep {
        id: id.into(),
        required: true,
        action: serde_json::json!({"id": id}),
        command_uuid: uuid.into(),
        queued,
        status: if queued {
            StepState::Running
        } else {
            StepState::Pending
        },
        attempts: 0,
        error: None,
    }
}

/// Teams: create, read, list by name, replace, delete (whether it existed).
pub async fn teams<S: Store + ?Sized>(store: &S) {
    assert_eq!(store.team("blue").await.unwrap(), None);
    assert!(store.teams().await.unwrap().is_empty());
    assert!(!store.delete_team("blue").await.unwrap());
    let t0 = now();
    store.put_team(&team("blue", t0)).await.unwrap();
    store.put_team(&team("amber", t0)).await.unwrap();
    assert_eq!(store.team("blue").await.unwrap(), Some(team("blue", t0)));
    let names: Vec<String> = store
        .teams()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["amber", "blue"], "listed by name");
    let mut changed = team("blue", t0 + Duration::minutes(1));
    changed.release_timeout_secs = None;
    changed.enrollment_profiles.clear();
    store.put_team(&changed).await.unwrap();
    assert_eq!(store.team("blue").await.unwrap(), Some(changed));
    assert_eq!(store.teams().await.unwrap().len(), 2);
    assert!(store.delete_team("blue").await.unwrap());
    assert!(!store.delete_team("blue").await.unwrap());
    assert_eq!(store.team("blue").await.unwrap(), None);
    assert_eq!(store.teams().await.unwrap(), vec![team("amber", t0)]);
}

/// `put_team_emitting` and `delete_team_emitting` (built from whether it existed) commit their
/// events with the change.
pub async fn team_emitting<S: Store + ?Sized>(store: &S) {
    let head = store.event_head().await.unwrap();
    let (_, written) = store
        .put_team_emitting(
            &team("green", now()),
            Emit::events(vec![ev("test.team_put")]),
        )
        .await
        .unwrap();
    assert_eq!(kinds(&written), ["test.team_put"]);
    let existed = || Emit::with(|b: &bool| vec![ev(&format!("test.team_deleted.{b}"))]);
    let (gone, written) = store
        .delete_team_emitting("green", existed())
        .await
        .unwrap();
    assert!(gone);
    assert_eq!(kinds(&written), ["test.team_deleted.true"]);
    let (gone, _) = store
        .delete_team_emitting("green", existed())
        .await
        .unwrap();
    assert!(!gone);
    assert_eq!(
        kinds_after(store, head).await,
        [
            "test.team_put",
            "test.team_deleted.true",
            "test.team_deleted.false"
        ]
    );
}

/// Device pages by serial number (`after`, `limit`: 100 by default, at most 1,000) and the
/// team, stage and DEP-server filters; unknown serials and enrollments.
pub async fn device_listing<S: Store + ?Sized>(store: &S) {
    assert_eq!(store.device("nope").await.unwrap(), None);
    assert_eq!(store.device_by_enrollment("nope").await.unwrap(), None);
    let t0 = now();
    let devices: Vec<DeviceRecord> = (0..1001)
        .map(|i| {
            let mut d = DeviceRecord::new(&format!("DL-{i:04}"), DeviceStage::Synced, t0);
            d.team = (i % 2 == 0).then(|| "even".to_owned());
            d.dep_server = (i % 5 == 0).then(|| "abm".to_owned());
            if i == 7 {
                d.stage = DeviceStage::Enrolled;
                d.enrollment_id = Some("E-DL-7".into());
            }
            d
        })
        .collect();
    let events = store
        .apply(
            LifecycleWrite {
                devices: devices.clone(),
                ..Default::default()
            },
            t0,
        )
        .await
        .unwrap();
    assert!(events.is_empty());
    assert_eq!(
        store.device("DL-0007").await.unwrap().as_ref(),
        Some(&devices[7])
    );
    assert_eq!(
        store.device_by_enrollment("E-DL-7").await.unwrap().as_ref(),
        Some(&devices[7])
    );
    let list = |q: DeviceQuery| async move { store.list_devices(&q).await.unwrap() };
    let serials = |page: &[DeviceRecord]| {
        page.iter()
            .map(|d| d.serial_number.clone())
            .collect::<Vec<_>>()
    };
    let page = list(DeviceQuery::default()).await;
    assert_eq!(page.len(), 100, "100 by default");
    assert_eq!(page[0].serial_number, "DL-0000");
    assert_eq!(page[99].serial_number, "DL-0099");
    let all = list(DeviceQuery {
        limit: Some(5000),
        ..Default::default()
    })
    .await;
    assert_eq!(all.len(), 1000, "at most 1,000");
    let page = list(DeviceQuery {
        after: Some("DL-0997".into()),
        limit: Some(10),
        ..Default::default()
    })
    .await;
    assert_eq!(serials(&page), ["DL-0998", "DL-0999", "DL-1000"]);
    let page = list(DeviceQuery {
        team: Some("even".into()),
        limit: Some(3),
        ..Default::default()
    })
    .await;
    assert_eq!(serials(&page), ["DL-0000", "DL-0002", "DL-0004"]);
    let page = list(DeviceQuery {
        team: Some(String::new()),
        limit: Some(2),
        ..Default::default()
    })
    .await;
    assert_eq!(serials(&page), ["DL-0001", "DL-0003"], "`\"\"`: in no team");
    let page = list(DeviceQuery {
        stage: Some(DeviceStage::Enrolled),
        ..Default::default()
    })
    .await;
    assert_eq!(serials(&page), ["DL-0007"]);
    let page = list(DeviceQuery {
        dep_server: Some("abm".into()),
        team: Some(String::new()),
        after: Some("DL-0010".into()),
        limit: Some(2),
        ..Default::default()
    })
    .await;
    assert_eq!(serials(&page), ["DL-0015", "DL-0025"]);
}

/// `setup`, `open_setups` (setups with commands still to queue), `due_setups` (running ones,
/// and released ones whose release command is not queued; soonest first, at most `limit`), and
/// the cursor moving with each write.
pub async fn setups_open_and_due<S: Store + ?Sized>(store: &S) {
    assert_eq!(store.setup("E-NONE").await.unwrap(), None);
    assert!(store.open_setups(10).await.unwrap().is_empty());
    assert!(store.due_setups(now(), 10).await.unwrap().is_empty());
    let t0 = now();
    let setup = |id: &str, check_in: i64| {
        let mut s = SetupRecord::new(id, &format!("SN-{id}"), 1, t0, "default");
        s.timeout_secs = 600;
        s.next_check_at = Some(t0 + Duration::seconds(check_in));
        s
    };
    // Running, a step still to queue.
    let mut unsent = setup("E-UNSENT", 30);
    unsent.steps = vec![
        step("a", "CMD-UNSENT-A", true),
        step("b", "CMD-UNSENT-B", false),
    ];
    // Running, everything queued.
    let mut sent = setup("E-SENT", 10);
    sent.steps = vec![step("a", "CMD-SENT-A", true)];
    // Released, its release command not queued yet.
    let mut releasing = setup("E-RELEASING", 20);
    releasing.steps = vec![step("a", "CMD-REL-A", true)];
    releasing.state = SetupState::Released {
        by: "default".into(),
        reason: "required steps finished".into(),
        at: t0,
    };
    releasing.release_command = Some("CMD-REL-DC".into());
    // Released and done.
    let mut done = setup("E-DONE", 5);
    done.state = SetupState::Released {
        by: "admin".into(),
        reason: "released".into(),
        at: t0,
    };
    done.release_command = Some("CMD-DONE-DC".into());
    done.release_queued = true;
    // Held: no timer.
    let mut held = setup("E-HELD", 1);
    held.steps = vec![step("a", "CMD-HELD-A", true)];
    held.state = SetupState::Held {
        reason: "waiting".into(),
        by: "plugin".into(),
    };
    let events = store
        .apply(
            LifecycleWrite {
                setups: vec![
                    unsent.clone(),
                    sent.clone(),
                    releasing.clone(),
                    done.clone(),
                    held.clone(),
                ],
                events: vec![ev("test.setups")],
                cursor: Some(("setup-flow".into(), 5)),
                ..Default::default()
            },
            t0,
        )
        .await
        .unwrap();
    assert_eq!(kinds(&events), ["test.setups"]);
    assert_eq!(store.cursor("setup-flow").await.unwrap(), 5);
    assert_eq!(store.setup("E-UNSENT").await.unwrap(), Some(unsent.clone()));
    assert_eq!(store.setup("E-HELD").await.unwrap(), Some(held));
    assert_eq!(
        store.setup_by_command("CMD-REL-DC").await.unwrap(),
        Some(releasing.clone()),
        "the release command is indexed"
    );
    assert_eq!(store.setup_by_command("CMD-NONE").await.unwrap(), None);

    let ids = |v: Vec<SetupRecord>| {
        let mut ids: Vec<String> = v.into_iter().map(|s| s.enrollment_id).collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(store.open_setups(10).await.unwrap()),
        ["E-RELEASING", "E-UNSENT"],
        "setups with commands still to queue"
    );
    assert_eq!(store.open_setups(1).await.unwrap().len(), 1);
    assert_eq!(store.open_setups(0).await.unwrap().len(), 0);

    let due = |at: i64, limit: usize| async move {
        store
            .due_setups(t0 + Duration::seconds(at), limit)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.enrollment_id)
            .collect::<Vec<_>>()
    };
    assert!(due(4, 10).await.is_empty(), "nothing due yet");
    assert_eq!(due(10, 10).await, ["E-SENT"]);
    assert_eq!(
        due(60, 10).await,
        ["E-SENT", "E-RELEASING", "E-UNSENT"],
        "soonest first; held and finished setups have no timer"
    );
    assert_eq!(due(60, 2).await, ["E-SENT", "E-RELEASING"]);
    assert!(due(60, 0).await.is_empty());

    // Queuing the step and the release command takes them out of the open list and the timer
    // moves with the record.
    unsent.steps[1].queued = true;
    unsent.next_check_at = Some(t0 + Duration::seconds(100));
    releasing.release_queued = true;
    store
        .apply(
            LifecycleWrite {
                setups: vec![unsent, releasing],
                cursor: Some(("setup-flow".into(), 6)),
                ..Default::default()
            },
            t0,
        )
        .await
        .unwrap();
    assert!(store.open_setups(10).await.unwrap().is_empty());
    assert_eq!(due(60, 10).await, ["E-SENT"]);
    assert_eq!(due(100, 10).await, ["E-SENT", "E-UNSENT"]);
    assert_eq!(store.cursor("setup-flow").await.unwrap(), 6);
    assert!(
        store
            .apply(LifecycleWrite::default(), t0)
            .await
            .unwrap()
            .is_empty()
    );
}
