//! Conformance checks of [`EventStore`], [`BootstrapStore`], [`SecretStore`], and of writes that
//! append their events in their own transaction (the transactional outbox): the events are
//! returned, in the log, and only when the write changed something.

use time::Duration;

use super::*;

/// Event sequence numbers, `events_after`, pruning, bootstrap tokens and secrets.
pub async fn events_bootstrap_secrets<S: Store + ?Sized>(store: &S) {
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

/// `events_after` is oldest first, after the given sequence number, and holds at most `limit`.
pub async fn events_order_and_limits<S: Store + ?Sized>(store: &S) {
    assert!(
        store.events_after(0, 10).await.unwrap().is_empty(),
        "a fresh store has no events"
    );
    let written = store
        .append_events((0..5).map(|i| ev(&format!("test.e{i}"))).collect(), now())
        .await
        .unwrap();
    assert_eq!(written.len(), 5);
    assert!(
        written.windows(2).all(|w| w[1].seq > w[0].seq),
        "sequence numbers increase"
    );
    assert!(written[0].seq > 0, "0 means no event");
    assert_eq!(store.events_after(0, 0).await.unwrap(), vec![], "limit 0");
    let first_two = store.events_after(0, 2).await.unwrap();
    assert_eq!(first_two, written[..2].to_vec(), "stored as returned");
    let rest = store.events_after(written[1].seq, 10).await.unwrap();
    assert_eq!(kinds(&rest), ["test.e2", "test.e3", "test.e4"]);
    assert!(
        store
            .events_after(written[4].seq, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .append_events(Vec::new(), now())
            .await
            .unwrap()
            .is_empty()
    );
    let e = store
        .append_events(
            vec![NewEvent {
                kind: "test.with_id".into(),
                enrollment_id: Some(EnrollmentId::new("E-1")),
                data: serde_json::json!({"n": 1, "s": "x"}),
            }],
            now(),
        )
        .await
        .unwrap();
    assert_eq!(store.events_after(written[4].seq, 10).await.unwrap(), e);
}

/// The head is 0 on a fresh store, follows appends, and survives pruning; pruning deletes exactly
/// the events older than its bound.
pub async fn event_head_and_pruning<S: Store + ?Sized>(store: &S) {
    assert_eq!(store.event_head().await.unwrap(), 0);
    let t0 = now();
    let old = store
        .append_events(
            vec![ev("test.old1"), ev("test.old2")],
            t0 - Duration::hours(2),
        )
        .await
        .unwrap();
    let new = store.append_events(vec![ev("test.new")], t0).await.unwrap();
    assert_eq!(store.event_head().await.unwrap(), new[0].seq);
    assert_eq!(
        store.prune_events(t0 - Duration::hours(3)).await.unwrap(),
        0
    );
    assert_eq!(
        store.prune_events(t0 - Duration::hours(1)).await.unwrap(),
        2
    );
    assert_eq!(kinds_after(store, 0).await, ["test.new"]);
    assert_eq!(
        store.prune_events(t0).await.unwrap(),
        0,
        "`before` is exclusive"
    );
    assert_eq!(store.event_head().await.unwrap(), new[0].seq);
    assert!(old[1].seq < new[0].seq);
}

/// The escrow holder follows the token: a token stored without one forgets it, clearing a held
/// token clears both.
pub async fn bootstrap_holder<S: Store + ?Sized>(store: &S) {
    let id = EnrollmentId::new("BH-1");
    let h = CertHash::of_der(b"holder");
    assert_eq!(store.bootstrap_holder(&id).await.unwrap(), None);
    store
        .store_bootstrap_token_held(&id, Some(b"one".to_vec()), &h, Emit::none())
        .await
        .unwrap();
    assert_eq!(
        store.bootstrap_token(&id).await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(store.bootstrap_holder(&id).await.unwrap(), Some(h));
    store
        .store_bootstrap_token(&id, Some(b"two".to_vec()), Emit::none())
        .await
        .unwrap();
    assert_eq!(
        store.bootstrap_token(&id).await.unwrap().as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(
        store.bootstrap_holder(&id).await.unwrap(),
        None,
        "no holder is known for this token"
    );
    store
        .store_bootstrap_token_held(&id, Some(b"three".to_vec()), &h, Emit::none())
        .await
        .unwrap();
    store
        .store_bootstrap_token_held(&id, None, &h, Emit::none())
        .await
        .unwrap();
    assert_eq!(store.bootstrap_token(&id).await.unwrap(), None);
    assert_eq!(store.bootstrap_holder(&id).await.unwrap(), None);
}

/// Both bootstrap-token writes append their events with the token.
pub async fn bootstrap_emitting<S: Store + ?Sized>(store: &S) {
    let id = EnrollmentId::new("BE-1");
    let h = CertHash::of_der(b"holder");
    let head = store.event_head().await.unwrap();
    let written = store
        .store_bootstrap_token(&id, Some(b"a".to_vec()), Emit::events(vec![ev("test.bt")]))
        .await
        .unwrap();
    assert_eq!(kinds(&written), ["test.bt"]);
    let written = store
        .store_bootstrap_token_held(
            &id,
            Some(b"b".to_vec()),
            &h,
            Emit::events(vec![ev("test.bt_held")]),
        )
        .await
        .unwrap();
    assert_eq!(kinds(&written), ["test.bt_held"]);
    assert_eq!(kinds_after(store, head).await, ["test.bt", "test.bt_held"]);
}

/// A secret is replaced by the next write; `put_secret_emitting` appends its events with it.
pub async fn secrets_replace_and_emit<S: Store + ?Sized>(store: &S) {
    assert_eq!(store.secret("push.key").await.unwrap(), None);
    store.put_secret("push.key", b"one".to_vec()).await.unwrap();
    let head = store.event_head().await.unwrap();
    let written = store
        .put_secret_emitting(
            "push.key",
            b"two".to_vec(),
            Emit::events(vec![ev("test.secret")]),
        )
        .await
        .unwrap();
    assert_eq!(kinds(&written), ["test.secret"]);
    assert_eq!(kinds_after(store, head).await, ["test.secret"]);
    assert_eq!(
        store.secret("push.key").await.unwrap().as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(store.secret("push").await.unwrap(), None, "names are exact");
}

/// Emitting writes of re-enrollment approvals, DEP servers and profiles, and webhook delivery
/// state (none when a stale revision saved nothing).
pub async fn emitting_writes<S: Store + ?Sized>(store: &S) {
    let head = store.event_head().await.unwrap();
    let id = device("OUTBOX-APPROVE").id;
    let later = now() + Duration::hours(1);
    let written = store
        .approve_reenrollment_emitting(&id, later, Emit::events(vec![ev("test.approved")]))
        .await
        .unwrap();
    assert_eq!(written.len(), 1, "the appended events are returned");
    assert!(written[0].seq > head);
    assert_eq!(kinds_after(store, head).await, ["test.approved"]);
    assert!(store.take_reenrollment_approval(&id, now()).await.unwrap());

    let head = store.event_head().await.unwrap();
    let server = DepServer::new("outbox-dep", now());
    store
        .put_dep_server_emitting(&server, Emit::events(vec![ev("test.dep_server")]))
        .await
        .unwrap();
    assert_eq!(store.dep_server("outbox-dep").await.unwrap(), Some(server));
    let profile = ProfileTemplate {
        name: "outbox-profile".into(),
        template: Default::default(),
        definitions: Default::default(),
        updated_at: now(),
    };
    store
        .put_dep_profile_emitting(&profile, Emit::events(vec![ev("test.dep_profile")]))
        .await
        .unwrap();
    assert_eq!(
        store.dep_profile("outbox-profile").await.unwrap(),
        Some(profile)
    );
    assert_eq!(
        kinds_after(store, head).await,
        ["test.dep_server", "test.dep_profile"]
    );

    // A delivery state saved against a stale revision changes nothing and logs nothing.
    let sub = WebhookSubscription {
        name: "outbox-wh".into(),
        url: "http://outbox.example/hook".into(),
        secret_sealed: b"sealed".to_vec(),
        events: Vec::new(),
        enabled: true,
        revision: 0,
        created_at: now(),
        updated_at: now(),
        delivery: WebhookDelivery::default(),
    };
    let sub = store.put_webhook(&sub, WebhookStart::Keep).await.unwrap();
    let head = store.event_head().await.unwrap();
    let only_if_saved = || {
        Emit::with(|saved: &bool| {
            if *saved {
                vec![ev("test.delivery_saved")]
            } else {
                Vec::new()
            }
        })
    };
    let moved = WebhookDelivery {
        cursor: head,
        ..Default::default()
    };
    let (saved, written) = store
        .save_webhook_delivery_emitting("outbox-wh", sub.revision + 1, &moved, only_if_saved())
        .await
        .unwrap();
    assert!(!saved && written.is_empty(), "stale revision");
    assert!(kinds_after(store, head).await.is_empty());
    let (saved, written) = store
        .save_webhook_delivery_emitting("outbox-wh", sub.revision, &moved, only_if_saved())
        .await
        .unwrap();
    assert!(saved);
    assert_eq!(written.len(), 1);
    assert_eq!(kinds_after(store, head).await, ["test.delivery_saved"]);
    assert_eq!(
        store.webhook("outbox-wh").await.unwrap().unwrap().delivery,
        moved
    );
    store.delete_webhook("outbox-wh").await.unwrap();
}
