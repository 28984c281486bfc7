//! Conformance checks of the writes that append their events in their own transaction
//! (the transactional outbox): the events are returned, in the log, and only when the write
//! changed something.

use time::Duration;

use super::{device, now};
use crate::store::*;

fn ev(kind: &str) -> NewEvent {
    NewEvent {
        kind: kind.into(),
        enrollment_id: None,
        data: serde_json::json!({"test": kind}),
    }
}

/// The events appended after `head`, as kinds.
async fn kinds_after<S: Store>(store: &S, head: u64) -> Vec<String> {
    store
        .events_after(head, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

/// Every `_emitting` write and `record_issuance`.
pub(super) async fn emitting_writes<S: Store>(store: &S) {
    scep_issuance(store).await;

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

/// `record_issuance`: one-time challenge, binding, renewal link, retry record and events
/// together, or (a challenge that is not accepted) nothing at all.
async fn scep_issuance<S: Store>(store: &S) {
    let later = now() + Duration::hours(1);
    let issuance = |challenge: Option<&str>, cert: u8, renewal_of: Option<CertHash>| ScepIssuance {
        challenge: challenge.map(Into::into),
        certificate: CertHash([cert; 32]),
        renewal_of,
        binding: Some(CertBinding {
            udid: format!("UDID-{cert}"),
            serial: format!("SN-{cert}"),
            source: BindingSource::MachineInfo,
        }),
        issue: ScepIssue {
            transaction_id: format!("ISSUANCE-{cert}"),
            csr_key_sha256: [cert; 32],
            signer_key_sha256: [cert; 32],
            challenge_sha256: None,
            certificate_der: vec![cert],
            expires_at: later,
        },
    };
    let check_recorded = async |i: &ScepIssuance| {
        assert_eq!(
            store.cert_binding(&i.certificate).await.unwrap(),
            i.binding,
            "binding"
        );
        assert_eq!(
            store.renewed_from(&i.certificate).await.unwrap(),
            i.renewal_of,
            "renewal link"
        );
        assert_eq!(
            store
                .scep_issues(&i.issue.transaction_id, now())
                .await
                .unwrap(),
            vec![i.issue.clone()],
            "retry record"
        );
    };

    // An accepted one-time challenge: everything recorded, the challenge used up.
    store.put_challenge("issuance-once", later).await.unwrap();
    let first = issuance(Some("issuance-once"), 0x41, None);
    let head = store.event_head().await.unwrap();
    let (status, written) = store
        .record_issuance(&first, now(), Emit::events(vec![ev("test.issued")]))
        .await
        .unwrap();
    assert_eq!(status, ChallengeStatus::Accepted);
    assert_eq!(written.len(), 1);
    assert_eq!(kinds_after(store, head).await, ["test.issued"]);
    check_recorded(&first).await;
    assert_eq!(
        store
            .consume_challenge("issuance-once", now())
            .await
            .unwrap(),
        ChallengeStatus::AlreadyUsed
    );

    // The same challenge again, an unknown one, an expired one: nothing is written.
    store
        .put_challenge("issuance-stale", now() - Duration::seconds(1))
        .await
        .unwrap();
    for (challenge, expected) in [
        ("issuance-once", ChallengeStatus::AlreadyUsed),
        ("issuance-never", ChallengeStatus::Unknown),
        ("issuance-stale", ChallengeStatus::Expired),
    ] {
        let refused = issuance(Some(challenge), 0x42, Some(first.certificate));
        let head = store.event_head().await.unwrap();
        let (status, written) = store
            .record_issuance(&refused, now(), Emit::events(vec![ev("test.refused")]))
            .await
            .unwrap();
        assert_eq!(status, expected, "{challenge}");
        assert!(written.is_empty(), "{challenge}: no events");
        assert!(kinds_after(store, head).await.is_empty(), "{challenge}");
        assert_eq!(
            store.cert_binding(&refused.certificate).await.unwrap(),
            None
        );
        assert_eq!(
            store.renewed_from(&refused.certificate).await.unwrap(),
            None
        );
        assert!(
            store
                .scep_issues(&refused.issue.transaction_id, now())
                .await
                .unwrap()
                .is_empty(),
            "{challenge}: no retry record"
        );
    }

    // No challenge (a renewal, or the static challenge): recorded, with the renewal link.
    let renewal = issuance(None, 0x43, Some(first.certificate));
    let (status, written) = store
        .record_issuance(&renewal, now(), Emit::none())
        .await
        .unwrap();
    assert_eq!(status, ChallengeStatus::Accepted);
    assert!(written.is_empty());
    check_recorded(&renewal).await;
}
