//! Conformance checks of [`DepStore`].

use time::Duration;

use super::*;
use crate::wire::dep::{Device, Profile};

fn dep_device_of(serial: &str, profile_status: Option<&str>) -> Device {
    Device {
        serial_number: serial.into(),
        model: Some("Mac mini".into()),
        os: Some("OSX".into()),
        profile_status: profile_status.map(Into::into),
        ..Default::default()
    }
}

fn page(devices: &[(&str, &str)], assign: &[(&str, &str)]) -> DepPageCommit {
    DepPageCommit {
        devices: devices
            .iter()
            .map(|(serial, op)| (dep_device_of(serial, None), (*op).to_owned()))
            .collect(),
        assign: assign
            .iter()
            .map(|(s, p)| ((*s).to_owned(), (*p).to_owned()))
            .collect(),
        ..Default::default()
    }
}

fn serials(devices: &[DepDeviceRecord]) -> Vec<String> {
    devices.iter().map(|d| d.serial_number.clone()).collect()
}

/// Servers: create, read, replace, list; unknown names.
pub async fn dep_servers<S: Store + ?Sized>(store: &S) {
    assert_eq!(store.dep_server("abm").await.unwrap(), None);
    assert!(store.dep_servers().await.unwrap().is_empty());
    let t0 = now();
    let b = DepServer::new("b-server", t0);
    let mut a = DepServer::new("a-server", t0);
    a.token_sealed = Some(vec![0, 1, 2, 255]);
    a.consumer_key = Some("CK_1".into());
    a.token_state = TokenState::Valid;
    a.current_keys = Some(DepKeyPair {
        cert_pem: "-----BEGIN CERTIFICATE-----".into(),
        key_sealed: vec![9; 40],
    });
    a.default_teams.insert("macos".into(), "blue".into());
    store.put_dep_server(&b).await.unwrap();
    store.put_dep_server(&a).await.unwrap();
    assert_eq!(store.dep_server("a-server").await.unwrap(), Some(a.clone()));
    let mut all = store.dep_servers().await.unwrap();
    all.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(all, vec![a.clone(), b.clone()]);
    a.sync_interval_secs = 0;
    a.token_state = TokenState::Expired;
    a.staging_keys = a.current_keys.take();
    store.put_dep_server(&a).await.unwrap();
    assert_eq!(store.dep_server("a-server").await.unwrap(), Some(a));
    assert_eq!(
        store.dep_servers().await.unwrap().len(),
        2,
        "replaced, not added"
    );
}

/// Profile templates: create, read, replace, list; unknown names.
pub async fn dep_profiles<S: Store + ?Sized>(store: &S) {
    assert_eq!(store.dep_profile("mac").await.unwrap(), None);
    assert!(store.dep_profiles().await.unwrap().is_empty());
    let t0 = now();
    let mut mac = ProfileTemplate {
        name: "mac".into(),
        template: Profile {
            profile_name: "Macs".into(),
            url: Some("https://mdm.example/mdm/enroll".into()),
            ..Default::default()
        },
        definitions: Default::default(),
        updated_at: t0,
    };
    let ios = ProfileTemplate {
        name: "ios".into(),
        template: Profile {
            profile_name: "Phones".into(),
            ..Default::default()
        },
        definitions: Default::default(),
        updated_at: t0,
    };
    store.put_dep_profile(&mac).await.unwrap();
    store.put_dep_profile(&ios).await.unwrap();
    assert_eq!(store.dep_profile("mac").await.unwrap(), Some(mac.clone()));
    mac.definitions.insert(
        "abm".into(),
        ProfileDefinition {
            hash: "ab".repeat(32),
            profile_uuid: Some("UUID-1".into()),
            error: None,
            defined_at: t0,
        },
    );
    store.put_dep_profile(&mac).await.unwrap();
    assert_eq!(store.dep_profile("mac").await.unwrap(), Some(mac.clone()));
    let mut all = store.dep_profiles().await.unwrap();
    all.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(all, vec![ios, mac]);
}

/// A page commits its devices (history, assignment work), the server's cursor, phase and chain
/// start, and its events in one write; a page without a cursor keeps the last one.
pub async fn dep_page_commit<S: Store + ?Sized>(store: &S) {
    let t0 = now();
    let mut server = DepServer::new("abm", t0);
    server.last_error = Some("timed out".into());
    store.put_dep_server(&server).await.unwrap();
    let head = store.event_head().await.unwrap();
    let first = DepPageCommit {
        devices: vec![
            (dep_device_of("P-1", Some("empty")), "fetched".into()),
            (dep_device_of("P-2", None), "fetched".into()),
        ],
        assign: vec![("P-1".into(), "prof".into())],
        cursor: Some("c1".into()),
        phase: SyncPhase::Fetch,
        new_chain: true,
        events: vec![ev("test.page")],
        reask: Vec::new(),
    };
    let written = store.commit_dep_page("abm", first, t0).await.unwrap();
    assert_eq!(kinds(&written), ["test.page"]);
    assert_eq!(kinds_after(store, head).await, ["test.page"]);
    let s = store.dep_server("abm").await.unwrap().unwrap();
    assert_eq!(s.cursor.as_deref(), Some("c1"));
    assert_eq!(s.phase, SyncPhase::Fetch);
    assert_eq!(s.cursor_started_at, Some(t0));
    assert_eq!(s.last_sync_at, Some(t0));
    assert_eq!(s.last_error, None, "a committed page clears the last error");
    let p1 = store.dep_device("abm", "P-1").await.unwrap().unwrap();
    assert_eq!(p1.server, "abm");
    assert_eq!(p1.device, dep_device_of("P-1", Some("empty")));
    assert!(p1.present);
    assert_eq!(
        p1.history,
        vec![DepHistoryEntry {
            op: "fetched".into(),
            op_date: None,
            profile_status: Some("empty".into()),
            at: t0,
        }]
    );
    assert_eq!(p1.assigned_profile.as_deref(), Some("prof"));
    assert_eq!(p1.assign_result, None);
    assert_eq!(p1.assign_attempts, 0);
    assert_eq!(p1.assign_due_at, Some(t0), "assignment is due at once");
    assert_eq!((p1.first_seen_at, p1.updated_at), (t0, t0));
    let p2 = store.dep_device("abm", "P-2").await.unwrap().unwrap();
    assert_eq!((p2.assigned_profile, p2.assign_due_at), (None, None));
    assert_eq!(store.dep_device("abm", "P-3").await.unwrap(), None);
    assert_eq!(store.dep_device("other", "P-1").await.unwrap(), None);

    // A sync page without a cursor: the cursor and chain start stay.
    let t1 = t0 + Duration::minutes(1);
    let mut modified = dep_device_of("P-1", Some("assigned"));
    modified.op_date = Some("2026-01-02T03:04:05Z".into());
    let second = DepPageCommit {
        devices: vec![
            (modified.clone(), "modified".into()),
            (dep_device_of("P-2", None), "deleted".into()),
        ],
        phase: SyncPhase::Sync,
        ..Default::default()
    };
    assert!(
        store
            .commit_dep_page("abm", second, t1)
            .await
            .unwrap()
            .is_empty()
    );
    let s = store.dep_server("abm").await.unwrap().unwrap();
    assert_eq!(s.cursor.as_deref(), Some("c1"));
    assert_eq!(s.phase, SyncPhase::Sync);
    assert_eq!(s.cursor_started_at, Some(t0));
    assert_eq!(s.last_sync_at, Some(t1));
    let p1 = store.dep_device("abm", "P-1").await.unwrap().unwrap();
    assert_eq!(p1.device, modified);
    assert_eq!(p1.history.len(), 2);
    assert_eq!(p1.history[1].op, "modified");
    assert_eq!(
        p1.history[1].op_date.as_deref(),
        Some("2026-01-02T03:04:05Z")
    );
    assert_eq!(p1.history[1].profile_status.as_deref(), Some("assigned"));
    assert_eq!((p1.first_seen_at, p1.updated_at), (t0, t1));
    assert_eq!(p1.assigned_profile.as_deref(), Some("prof"), "kept");
    let p2 = store.dep_device("abm", "P-2").await.unwrap().unwrap();
    assert!(!p2.present, "deleted by Apple");
    assert_eq!(p2.history.len(), 2);

    // A new chain with a new cursor.
    let t2 = t1 + Duration::minutes(1);
    let third = DepPageCommit {
        cursor: Some("c2".into()),
        phase: SyncPhase::Fetch,
        new_chain: true,
        ..Default::default()
    };
    store.commit_dep_page("abm", third, t2).await.unwrap();
    let s = store.dep_server("abm").await.unwrap().unwrap();
    assert_eq!(s.cursor.as_deref(), Some("c2"));
    assert_eq!(s.cursor_started_at, Some(t2));
}

/// A device keeps at most [`DEP_HISTORY_LIMIT`] history entries, newest last.
pub async fn dep_page_history_is_bounded<S: Store + ?Sized>(store: &S) {
    let t0 = now();
    store
        .put_dep_server(&DepServer::new("abm", t0))
        .await
        .unwrap();
    let n = DEP_HISTORY_LIMIT + 5;
    for i in 0..n {
        let mut d = dep_device_of("H-1", None);
        d.op_date = Some(format!("op-{i}"));
        let p = DepPageCommit {
            devices: vec![(d, "modified".into())],
            phase: SyncPhase::Sync,
            ..Default::default()
        };
        store.commit_dep_page("abm", p, t0).await.unwrap();
    }
    let d = store.dep_device("abm", "H-1").await.unwrap().unwrap();
    assert_eq!(d.history.len(), DEP_HISTORY_LIMIT);
    assert_eq!(
        d.history.last().unwrap().op_date.as_deref(),
        Some(format!("op-{}", n - 1).as_str())
    );
    assert_eq!(
        d.history[0].op_date.as_deref(),
        Some(format!("op-{}", n - DEP_HISTORY_LIMIT).as_str()),
        "the oldest entries go first"
    );
}

/// A page for an unknown server is refused and writes nothing: no device, no event, no server.
pub async fn dep_page_for_unknown_server<S: Store + ?Sized>(store: &S) {
    let head = store.event_head().await.unwrap();
    let mut p = page(&[("U-1", "fetched")], &[("U-1", "prof")]);
    p.cursor = Some("c".into());
    p.events = vec![ev("test.page")];
    assert!(store.commit_dep_page("ghost", p, now()).await.is_err());
    assert_eq!(store.event_head().await.unwrap(), head);
    assert_eq!(store.dep_device("ghost", "U-1").await.unwrap(), None);
    assert_eq!(store.dep_server("ghost").await.unwrap(), None);
    assert!(
        store
            .due_assignments("ghost", now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// DEP devices are listed by server then serial, filtered by server, serial, profile status
/// and assignment result (`pending`: none yet), and paged with `after` = `server/serial`.
pub async fn dep_device_listing<S: Store + ?Sized>(store: &S) {
    let t0 = now();
    for name in ["a", "b"] {
        store
            .put_dep_server(&DepServer::new(name, t0))
            .await
            .unwrap();
    }
    let a = DepPageCommit {
        devices: vec![
            (dep_device_of("S3", None), "fetched".into()),
            (dep_device_of("S1", Some("empty")), "fetched".into()),
            (dep_device_of("S2", Some("assigned")), "fetched".into()),
        ],
        assign: vec![("S2".into(), "prof".into())],
        ..Default::default()
    };
    store.commit_dep_page("a", a, t0).await.unwrap();
    store
        .commit_dep_page("b", page(&[("S4", "fetched"), ("S1", "fetched")], &[]), t0)
        .await
        .unwrap();
    store
        .record_assignments(
            "a",
            vec![("S2".into(), AssignResult::Success, None, None)],
            Vec::new(),
            t0,
        )
        .await
        .unwrap();
    let list = |q: DepDeviceQuery| async move {
        store
            .dep_devices(&q)
            .await
            .unwrap()
            .into_iter()
            .map(|d| format!("{}/{}", d.server, d.serial_number))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        list(DepDeviceQuery::default()).await,
        ["a/S1", "a/S2", "a/S3", "b/S1", "b/S4"]
    );
    let q = |f: fn(&mut DepDeviceQuery)| {
        let mut q = DepDeviceQuery::default();
        f(&mut q);
        q
    };
    assert_eq!(
        list(q(|q| q.server = Some("b".into()))).await,
        ["b/S1", "b/S4"]
    );
    assert_eq!(
        list(q(|q| q.serial_number = Some("S1".into()))).await,
        ["a/S1", "b/S1"]
    );
    assert_eq!(
        list(q(|q| q.profile_status = Some("assigned".into()))).await,
        ["a/S2"]
    );
    assert_eq!(
        list(q(|q| q.assign_result = Some("success".into()))).await,
        ["a/S2"]
    );
    assert_eq!(
        list(q(|q| q.assign_result = Some("pending".into()))).await,
        ["a/S1", "a/S3", "b/S1", "b/S4"]
    );
    assert_eq!(
        list(q(|q| {
            q.after = Some("a/S2".into());
            q.limit = Some(2);
        }))
        .await,
        ["a/S3", "b/S1"]
    );
    assert_eq!(list(q(|q| q.after = Some("b/S1".into()))).await, ["b/S4"]);
    assert!(
        list(q(|q| {
            q.server = Some("a".into());
            q.after = Some("a/S3".into());
        }))
        .await
        .is_empty()
    );
    assert!(
        list(q(|q| q.server = Some("c".into()))).await.is_empty(),
        "unknown server"
    );
}

/// Assignment work: due oldest first per server and at most `limit`; outcomes recorded with
/// their events and next attempt; manual requests make a device due at once.
pub async fn dep_assignments<S: Store + ?Sized>(store: &S) {
    let t0 = now();
    for name in ["abm", "other"] {
        store
            .put_dep_server(&DepServer::new(name, t0))
            .await
            .unwrap();
    }
    let p = page(
        &[("A", "fetched"), ("B", "fetched"), ("C", "fetched")],
        &[("A", "prof"), ("B", "prof"), ("C", "prof")],
    );
    store.commit_dep_page("abm", p, t0).await.unwrap();
    let p = page(&[("X", "fetched")], &[("X", "prof")]);
    store.commit_dep_page("other", p, t0).await.unwrap();
    let due = |at: Timestamp, limit: usize| async move {
        serials(&store.due_assignments("abm", at, limit).await.unwrap())
    };
    assert!(due(t0 - Duration::seconds(1), 10).await.is_empty());
    let mut all = due(t0, 10).await;
    all.sort();
    assert_eq!(all, ["A", "B", "C"], "only this server's devices");
    assert_eq!(due(t0, 2).await.len(), 2);
    assert!(due(t0, 0).await.is_empty());

    let head = store.event_head().await.unwrap();
    let written = store
        .record_assignments(
            "abm",
            vec![
                ("A".into(), AssignResult::Success, None, None),
                (
                    "B".into(),
                    AssignResult::Failed,
                    Some("boom".into()),
                    Some(t0 + Duration::seconds(60)),
                ),
                (
                    "C".into(),
                    AssignResult::Throttled,
                    None,
                    Some(t0 + Duration::seconds(30)),
                ),
                ("GHOST".into(), AssignResult::Failed, None, Some(t0)),
            ],
            vec![ev("test.assigned")],
            t0,
        )
        .await
        .unwrap();
    assert_eq!(kinds(&written), ["test.assigned"]);
    assert_eq!(kinds_after(store, head).await, ["test.assigned"]);
    let a = store.dep_device("abm", "A").await.unwrap().unwrap();
    assert_eq!(a.assign_result, Some(AssignResult::Success));
    assert_eq!((a.assign_attempts, a.assign_due_at), (1, None));
    let b = store.dep_device("abm", "B").await.unwrap().unwrap();
    assert_eq!(b.assign_result, Some(AssignResult::Failed));
    assert_eq!(b.assign_error.as_deref(), Some("boom"));
    assert_eq!(b.assign_attempts, 1);
    assert_eq!(b.assign_due_at, Some(t0 + Duration::seconds(60)));
    assert_eq!(
        store.dep_device("abm", "GHOST").await.unwrap(),
        None,
        "outcomes for unknown devices are ignored"
    );
    assert!(due(t0, 10).await.is_empty());
    assert_eq!(
        due(t0 + Duration::seconds(60), 10).await,
        ["C", "B"],
        "soonest first"
    );

    let t1 = t0 + Duration::seconds(10);
    store
        .request_assignments("abm", "prof2", &["A".into(), "NEW".into()], t1)
        .await
        .unwrap();
    let a = store.dep_device("abm", "A").await.unwrap().unwrap();
    assert_eq!(a.assigned_profile.as_deref(), Some("prof2"));
    assert_eq!(a.assign_result, None);
    assert_eq!(a.assign_error, None);
    assert_eq!((a.assign_attempts, a.assign_due_at), (0, Some(t1)));
    let new = store.dep_device("abm", "NEW").await.unwrap().unwrap();
    assert_eq!(new.device.serial_number, "NEW");
    assert_eq!(new.assigned_profile.as_deref(), Some("prof2"));
    assert_eq!(new.assign_due_at, Some(t1));
    let order = due(t0 + Duration::seconds(60), 10).await;
    let mut first = order[..2].to_vec();
    first.sort();
    assert_eq!(first, ["A", "NEW"]);
    assert_eq!(order[2..], ["C", "B"]);
    assert_eq!(
        serials(
            &store
                .due_assignments("other", t0 + Duration::seconds(60), 10)
                .await
                .unwrap()
        ),
        ["X"]
    );
}

/// Re-asks of the `auto-assign` hook: set by a page or by `set_reask`, due soonest first per
/// server, cleared by `None` or by a later page that does not list the device.
pub async fn dep_reasks<S: Store + ?Sized>(store: &S) {
    let t0 = now();
    for name in ["abm", "other"] {
        store
            .put_dep_server(&DepServer::new(name, t0))
            .await
            .unwrap();
    }
    let mut p = page(&[("D1", "fetched"), ("D2", "fetched")], &[]);
    p.reask = vec![("D1".into(), t0 + Duration::seconds(30))];
    store.commit_dep_page("abm", p, t0).await.unwrap();
    let mut p = page(&[("D1", "fetched")], &[]);
    p.reask = vec![("D1".into(), t0)];
    store.commit_dep_page("other", p, t0).await.unwrap();
    let due = |secs: i64, limit: usize| async move {
        serials(
            &store
                .due_reasks("abm", t0 + Duration::seconds(secs), limit)
                .await
                .unwrap(),
        )
    };
    assert!(due(29, 10).await.is_empty());
    assert_eq!(due(30, 10).await, ["D1"]);
    assert_eq!(
        store
            .dep_device("abm", "D1")
            .await
            .unwrap()
            .unwrap()
            .reask_at,
        Some(t0 + Duration::seconds(30))
    );
    store
        .set_reask("abm", "D2", Some(t0 + Duration::seconds(10)))
        .await
        .unwrap();
    assert_eq!(due(30, 10).await, ["D2", "D1"], "soonest first");
    assert_eq!(due(30, 1).await, ["D2"]);
    assert!(due(30, 0).await.is_empty());
    store.set_reask("abm", "D2", None).await.unwrap();
    assert_eq!(due(30, 10).await, ["D1"]);
    assert_eq!(
        store
            .dep_device("abm", "D2")
            .await
            .unwrap()
            .unwrap()
            .reask_at,
        None
    );
    store.set_reask("abm", "GHOST", Some(t0)).await.unwrap();
    assert_eq!(store.dep_device("abm", "GHOST").await.unwrap(), None);
    // A later page that lists D1 without a re-ask clears it.
    let p = page(&[("D1", "modified")], &[]);
    store.commit_dep_page("abm", p, t0).await.unwrap();
    assert!(due(30, 10).await.is_empty());
    assert_eq!(
        store
            .dep_device("abm", "D1")
            .await
            .unwrap()
            .unwrap()
            .reask_at,
        None
    );
    assert_eq!(
        serials(&store.due_reasks("other", t0, 10).await.unwrap()),
        ["D1"]
    );
}
