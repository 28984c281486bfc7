//! Conformance checks of [`EnrollmentStore`] and [`PushStore`].

use time::Duration;

use super::*;

/// User channels: created on their first TokenUpdate, indexed, disabled with their device.
pub async fn user_channel_cascade<S: Store + ?Sized>(store: &S) {
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

/// The TokenUpdate tally, the unlock token, Authenticate's reset, push targets and
/// `invalidate_push`.
pub async fn token_update_tally_and_unlock_token<S: Store + ?Sized>(store: &S) {
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

/// Enrollment pages (`after`, `limit`), filters, and `touch`.
pub async fn listing<S: Store + ?Sized>(store: &S) {
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

/// Every page of enrollments, walked with `after` and `limit`, lists each one once, ordered by
/// ID; the `enabled` and `parent` filters.
pub async fn listing_filters_and_pages<S: Store + ?Sized>(store: &S) {
    let mut ids = Vec::new();
    for i in [3, 0, 4, 1, 2] {
        ids.push(enroll(store, &format!("LP-{i}")).await.id);
    }
    let u = user("LP-2", "U");
    store
        .store_token_update(&u, &token_update(), None, (None, None), now(), Emit::none())
        .await
        .unwrap();
    store
        .disable(&EnrollmentId::new("LP-4"), now(), Emit::none())
        .await
        .unwrap();
    let mut walked = Vec::new();
    let mut after = None;
    loop {
        let q = EnrollmentQuery {
            after: after.clone(),
            limit: Some(2),
            ..Default::default()
        };
        let page = store.list_enrollments(&q).await.unwrap();
        assert!(page.len() <= 2, "a page holds at most `limit`");
        let Some(last) = page.last() else { break };
        after = Some(last.id.as_str().to_owned());
        walked.extend(page.into_iter().map(|e| e.id.as_str().to_owned()));
    }
    assert_eq!(
        walked,
        ["LP-0", "LP-1", "LP-2", "LP-2:U", "LP-3", "LP-4"],
        "every enrollment once, by ID"
    );
    let ids_of = |page: Vec<Enrollment>| {
        page.into_iter()
            .map(|e| e.id.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    let disabled = store
        .list_enrollments(&EnrollmentQuery {
            enabled: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids_of(disabled), ["LP-4"]);
    let enabled = store
        .list_enrollments(&EnrollmentQuery {
            enabled: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(enabled.len(), 5);
    let children = store
        .list_enrollments(&EnrollmentQuery {
            parent: Some("LP-2".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids_of(children), ["LP-2:U"]);
    let users = store
        .list_enrollments(&EnrollmentQuery {
            kind: Some(ChannelKind::User),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids_of(users), ["LP-2:U"]);
}

/// Unknown enrollments: no record, no user channels, nothing to disable or push to.
pub async fn enrollment_unknowns<S: Store + ?Sized>(store: &S) {
    let ghost = EnrollmentId::new("ghost");
    assert_eq!(store.enrollment(&ghost).await.unwrap(), None);
    assert!(store.user_channels(&ghost).await.unwrap().is_empty());
    let (disabled, written) = store
        .disable(
            &ghost,
            now(),
            Emit::with(|ids: &Vec<EnrollmentId>| {
                ids.iter().map(|i| ev(&format!("test.{i}"))).collect()
            }),
        )
        .await
        .unwrap();
    assert!(disabled.is_empty() && written.is_empty());
    let known = enroll(store, "EU-1").await;
    let push = store
        .push_targets(&[ghost.clone(), known.id.clone()])
        .await
        .unwrap();
    assert_eq!(push.len(), 2, "one answer per ID, in order");
    assert_eq!(push[0], (ghost.clone(), None));
    assert_eq!(push[1].0, known.id);
    assert!(push[1].1.as_ref().is_some_and(|p| p.valid));
    store.invalidate_push(&ghost, Emit::none()).await.unwrap();
    assert_eq!(store.enrollment(&ghost).await.unwrap(), None);
    assert!(
        store
            .list_enrollments(&EnrollmentQuery {
                serial_number: Some("SN-ghost".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    );
}

/// `store_authenticate` records the device facts, disabled, and appends its events with them;
/// a re-Authenticate keeps `created_at` and drops the push credentials.
pub async fn authenticate_records_and_emits<S: Store + ?Sized>(store: &S) {
    let c = device("AU-1");
    let auth = Authenticate {
        topic: "com.apple.mgmt.External.test".into(),
        serial_number: Some("SN-AU-1".into()),
        model: Some("Mac14,3".into()),
        os_version: Some("14.4".into()),
        device_name: Some("Desk".into()),
        ..Default::default()
    };
    let t0 = now();
    let head = store.event_head().await.unwrap();
    let written = store
        .store_authenticate(&c, &auth, t0, Emit::events(vec![ev("test.authenticated")]))
        .await
        .unwrap();
    assert_eq!(kinds(&written), ["test.authenticated"]);
    assert_eq!(kinds_after(store, head).await, ["test.authenticated"]);
    let e = store.enrollment(&c.id).await.unwrap().unwrap();
    assert_eq!(e.kind, ChannelKind::Device);
    assert_eq!(e.parent, None);
    assert!(!e.enabled);
    assert_eq!(e.token_update_tally, 0);
    assert_eq!(e.topic.as_deref(), Some("com.apple.mgmt.External.test"));
    assert_eq!(e.device.serial_number.as_deref(), Some("SN-AU-1"));
    assert_eq!(e.device.model.as_deref(), Some("Mac14,3"));
    assert_eq!(e.device.os_version.as_deref(), Some("14.4"));
    assert_eq!(e.device.device_name.as_deref(), Some("Desk"));
    assert_eq!(e.authenticated_at, Some(t0));
    assert_eq!(e.created_at, t0);
    let update = TokenUpdate {
        awaiting_configuration: true,
        ..token_update()
    };
    store
        .store_token_update(&c, &update, None, (None, None), t0, Emit::none())
        .await
        .unwrap();
    let e = store.enrollment(&c.id).await.unwrap().unwrap();
    assert!(e.enabled && e.awaiting_configuration);
    assert_eq!(e.token_updated_at, Some(t0));
    let t1 = t0 + Duration::seconds(10);
    store
        .store_authenticate(&c, &auth, t1, Emit::none())
        .await
        .unwrap();
    let e = store.enrollment(&c.id).await.unwrap().unwrap();
    assert_eq!(e.created_at, t0, "first seen is kept");
    assert_eq!(e.authenticated_at, Some(t1));
    assert!(!e.enabled);
    assert_eq!(e.push, None, "a re-Authenticate drops the push credentials");
    assert!(!e.awaiting_configuration);
}

/// `store_token_update` builds its events from the new tally.
pub async fn token_update_emits_from_tally<S: Store + ?Sized>(store: &S) {
    let c = device("TT-1");
    store
        .store_authenticate(&c, &Authenticate::default(), now(), Emit::none())
        .await
        .unwrap();
    let head = store.event_head().await.unwrap();
    for expected in [1u64, 2] {
        let (tally, written) = store
            .store_token_update(
                &c,
                &token_update(),
                None,
                (None, None),
                now(),
                Emit::with(|tally: &u64| vec![ev(&format!("test.tally_{tally}"))]),
            )
            .await
            .unwrap();
        assert_eq!(tally, expected);
        assert_eq!(kinds(&written), [format!("test.tally_{expected}")]);
    }
    assert_eq!(
        kinds_after(store, head).await,
        ["test.tally_1", "test.tally_2"]
    );
}

/// `disable` returns and emits only the channels it disabled (a second disable: none).
pub async fn disable_emits_what_it_disabled<S: Store + ?Sized>(store: &S) {
    let d = enroll(store, "DI-1").await;
    let u = user("DI-1", "U");
    store
        .store_token_update(&u, &token_update(), None, (None, None), now(), Emit::none())
        .await
        .unwrap();
    let per_id = || {
        Emit::with(|ids: &Vec<EnrollmentId>| {
            let mut ids = ids.clone();
            ids.sort();
            ids.iter()
                .map(|i| ev(&format!("test.disabled.{i}")))
                .collect()
        })
    };
    let head = store.event_head().await.unwrap();
    let (mut disabled, written) = store.disable(&d.id, now(), per_id()).await.unwrap();
    disabled.sort();
    assert_eq!(disabled, vec![d.id.clone(), u.id.clone()]);
    assert_eq!(
        kinds(&written),
        ["test.disabled.DI-1", "test.disabled.DI-1:U"]
    );
    let (again, written) = store.disable(&d.id, now(), per_id()).await.unwrap();
    assert!(again.is_empty(), "nothing left to disable");
    assert!(written.is_empty());
    assert_eq!(kinds_after(store, head).await.len(), 2);
    let e = store.enrollment(&d.id).await.unwrap().unwrap();
    assert!(!e.enabled && e.disabled_at.is_some());
}

/// `invalidate_push` appends its events with the change.
pub async fn invalidate_push_emitting<S: Store + ?Sized>(store: &S) {
    let c = enroll(store, "IP-1").await;
    let head = store.event_head().await.unwrap();
    let written = store
        .invalidate_push(&c.id, Emit::events(vec![ev("test.push_invalid")]))
        .await
        .unwrap();
    assert_eq!(kinds(&written), ["test.push_invalid"]);
    assert_eq!(kinds_after(store, head).await, ["test.push_invalid"]);
    let push = store
        .push_targets(std::slice::from_ref(&c.id))
        .await
        .unwrap();
    assert!(!push[0].1.as_ref().unwrap().valid);
    // A new TokenUpdate brings a valid token again.
    store
        .store_token_update(&c, &token_update(), None, (None, None), now(), Emit::none())
        .await
        .unwrap();
    let push = store
        .push_targets(std::slice::from_ref(&c.id))
        .await
        .unwrap();
    assert!(push[0].1.as_ref().unwrap().valid);
}
