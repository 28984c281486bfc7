//! Conformance checks of [`WebhookStore`].

use time::Duration;

use super::*;

fn sub(name: &str, url: &str) -> WebhookSubscription {
    WebhookSubscription {
        name: name.into(),
        url: url.into(),
        secret_sealed: b"sealed-secret".to_vec(),
        events: vec!["command.*".into()],
        enabled: true,
        revision: 0,
        created_at: now(),
        updated_at: now(),
        // Ignored by put_webhook.
        delivery: WebhookDelivery {
            cursor: 9999,
            attempts: 7,
            ..Default::default()
        },
    }
}

async fn append<S: Store + ?Sized>(store: &S, n: usize) -> u64 {
    let events = (0..n)
        .map(|i| NewEvent {
            kind: format!("test.webhook_{i}"),
            enrollment_id: None,
            data: serde_json::json!({}),
        })
        .collect();
    store
        .append_events(events, now())
        .await
        .unwrap()
        .last()
        .unwrap()
        .seq
}

/// Subscriptions: cursor placement, revision-guarded delivery state, replacement, listing,
/// deletion, and the event head.
pub async fn webhooks<S: Store + ?Sized>(store: &S) {
    let last = append(store, 2).await;
    assert_eq!(
        store.event_head().await.unwrap(),
        last,
        "head is the newest seq"
    );

    // A new subscription starts at the head, whatever the record said.
    let a = store
        .put_webhook(&sub("wh-a", "http://a.example/hook"), WebhookStart::Keep)
        .await
        .unwrap();
    assert_eq!(
        a.delivery.cursor, last,
        "Keep on a new subscription: the head"
    );
    assert_eq!(a.delivery.attempts, 0);
    assert!(a.revision > 0);
    assert_eq!(store.webhook("wh-a").await.unwrap().as_ref(), Some(&a));
    assert_eq!(store.webhook("wh-none").await.unwrap(), None);

    // Delivery state is saved only under the current revision.
    let t = now();
    let state = WebhookDelivery {
        cursor: last,
        attempts: 3,
        next_attempt_at: Some(t + Duration::seconds(30)),
        last_attempt_at: Some(t),
        last_success_at: Some(t - Duration::seconds(5)),
        last_status: Some(500),
        last_error: Some("HTTP 500".into()),
        last_error_at: Some(t),
        delivered: 4,
        failures: 3,
    };
    assert!(
        store
            .save_webhook_delivery("wh-a", a.revision, &state)
            .await
            .unwrap()
    );
    assert_eq!(
        store.webhook("wh-a").await.unwrap().unwrap().delivery,
        state
    );
    assert!(
        !store
            .save_webhook_delivery("wh-a", a.revision + 1000, &WebhookDelivery::default())
            .await
            .unwrap(),
        "a stale revision changes nothing"
    );
    assert_eq!(
        store.webhook("wh-a").await.unwrap().unwrap().delivery,
        state
    );

    // Replacing keeps created_at, the cursor and the counters, resets the retry, and bumps the
    // revision so the old one can no longer write.
    let newer = append(store, 3).await;
    let mut changed = sub("wh-a", "https://a.example/v2");
    changed.created_at = now() + Duration::days(1);
    changed.enabled = false;
    let a2 = store
        .put_webhook(&changed, WebhookStart::Keep)
        .await
        .unwrap();
    assert_ne!(a2.revision, a.revision);
    assert_eq!(a2.url, "https://a.example/v2");
    assert!(!a2.enabled);
    assert_eq!(
        a2.created_at, a.created_at,
        "created_at survives replacement"
    );
    assert_eq!(a2.delivery.cursor, last, "Keep keeps the cursor");
    assert_eq!(a2.delivery.attempts, 0);
    assert_eq!(a2.delivery.next_attempt_at, None);
    assert_eq!(a2.delivery.delivered, 4);
    assert_eq!(a2.delivery.failures, 3);
    assert_eq!(a2.delivery.last_error.as_deref(), Some("HTTP 500"));
    assert!(
        !store
            .save_webhook_delivery("wh-a", a.revision, &WebhookDelivery::default())
            .await
            .unwrap(),
        "the replaced revision cannot write"
    );
    let a3 = store
        .put_webhook(&changed, WebhookStart::After(last - 1))
        .await
        .unwrap();
    assert_eq!(a3.delivery.cursor, last - 1);
    let a4 = store
        .put_webhook(&changed, WebhookStart::Head)
        .await
        .unwrap();
    assert_eq!(a4.delivery.cursor, newer);
    assert_eq!(a4.delivery.delivered, 4, "counters survive a cursor move");

    // Listing is by name.
    store
        .put_webhook(&sub("wh-0", "http://zero.example/"), WebhookStart::Head)
        .await
        .unwrap();
    let names: Vec<String> = store
        .webhooks()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .filter(|n| n.starts_with("wh-"))
        .collect();
    assert_eq!(names, ["wh-0", "wh-a"]);

    // Deletion; a recreated subscription gets a revision never used before.
    assert!(store.delete_webhook("wh-a").await.unwrap());
    assert!(!store.delete_webhook("wh-a").await.unwrap());
    assert_eq!(store.webhook("wh-a").await.unwrap(), None);
    assert!(
        !store
            .save_webhook_delivery("wh-a", a4.revision, &state)
            .await
            .unwrap(),
        "a deleted subscription is not resurrected"
    );
    assert_eq!(store.webhook("wh-a").await.unwrap(), None);
    let again = store
        .put_webhook(&sub("wh-a", "http://a.example/hook"), WebhookStart::Keep)
        .await
        .unwrap();
    for old in [a.revision, a2.revision, a3.revision, a4.revision] {
        assert_ne!(again.revision, old);
    }
    assert_eq!(
        again.delivery.delivered, 0,
        "a recreated subscription starts afresh"
    );

    // The head survives pruning.
    store
        .prune_events(now() + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(store.event_head().await.unwrap(), newer);
    assert!(store.delete_webhook("wh-a").await.unwrap());
    assert!(store.delete_webhook("wh-0").await.unwrap());
}

/// `put_webhook_emitting` builds its events from the stored subscription, and
/// `delete_webhook_emitting` from whether it existed; both commit them with the change.
pub async fn webhook_emitting<S: Store + ?Sized>(store: &S) {
    let head = store.event_head().await.unwrap();
    let (stored, written) = store
        .put_webhook_emitting(
            &sub("wh-e", "http://e.example/hook"),
            WebhookStart::Keep,
            Emit::with(|s: &WebhookSubscription| vec![ev(&format!("test.put.{}", s.revision))]),
        )
        .await
        .unwrap();
    let put_kind = format!("test.put.{}", stored.revision);
    assert_eq!(kinds(&written), std::slice::from_ref(&put_kind));
    assert_eq!(store.webhook("wh-e").await.unwrap(), Some(stored));
    let existed = || {
        Emit::with(|existed: &bool| {
            if *existed {
                vec![ev("test.deleted")]
            } else {
                Vec::new()
            }
        })
    };
    let (existed_once, written) = store
        .delete_webhook_emitting("wh-e", existed())
        .await
        .unwrap();
    assert!(existed_once);
    assert_eq!(kinds(&written), ["test.deleted"]);
    let (existed_twice, written) = store
        .delete_webhook_emitting("wh-e", existed())
        .await
        .unwrap();
    assert!(!existed_twice && written.is_empty());
    assert_eq!(
        kinds_after(store, head).await,
        [put_kind, "test.deleted".to_owned()]
    );
    assert!(store.webhooks().await.unwrap().is_empty());
}
