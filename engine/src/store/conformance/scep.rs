//! Conformance checks of [`ChallengeStore`] and [`ScepTransactionStore`].

use time::Duration;

use super::*;

/// One-time challenges: accepted once, replays refused, expiry, pruning.
pub async fn challenges<S: Store + ?Sized>(store: &S) {
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

/// Certificates kept per SCEP transaction: one per CSR key, expiry, bounded pruning.
pub async fn scep_transactions<S: Store + ?Sized>(store: &S) {
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

/// `record_issuance`: one-time challenge, binding, renewal link, retry record and events
/// together, or (a challenge that is not accepted) nothing at all.
pub async fn scep_issuance<S: Store + ?Sized>(store: &S) {
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

/// `prune_scep_issues` forgets at most `limit` expired records per call, and only expired ones.
pub async fn scep_issue_pruning_limit<S: Store + ?Sized>(store: &S) {
    let issue = |tx: &str, expires_at| ScepIssue {
        transaction_id: tx.into(),
        csr_key_sha256: [7; 32],
        signer_key_sha256: [7; 32],
        challenge_sha256: None,
        certificate_der: b"cert".to_vec(),
        expires_at,
    };
    let past = now() - Duration::minutes(1);
    for tx in ["TX-P1", "TX-P2"] {
        store.put_scep_issue(&issue(tx, past)).await.unwrap();
    }
    let live = issue("TX-LIVE", now() + Duration::hours(1));
    store.put_scep_issue(&live).await.unwrap();
    assert_eq!(
        store.prune_scep_issues(now(), 0).await.unwrap(),
        0,
        "limit 0"
    );
    assert_eq!(store.prune_scep_issues(now(), 1).await.unwrap(), 1);
    assert_eq!(store.prune_scep_issues(now(), 10).await.unwrap(), 1);
    assert_eq!(store.prune_scep_issues(now(), 10).await.unwrap(), 0);
    assert_eq!(
        store.scep_issues("TX-LIVE", now()).await.unwrap(),
        vec![live]
    );
}

/// Pruning forgets exactly the challenges that expired; a bound challenge reports its binding
/// before use too.
pub async fn challenge_pruning<S: Store + ?Sized>(store: &S) {
    let binding = CertBinding {
        udid: "CP-UDID".into(),
        serial: "CP-SERIAL".into(),
        source: BindingSource::MachineInfo,
    };
    let later = now() + Duration::hours(1);
    store.put_challenge("live", later).await.unwrap();
    store
        .put_bound_challenge("bound", later, &binding)
        .await
        .unwrap();
    assert_eq!(
        store.challenge_binding("bound").await.unwrap(),
        Some(binding)
    );
    for i in 0..3 {
        store
            .put_challenge(&format!("stale-{i}"), now() - Duration::seconds(1))
            .await
            .unwrap();
    }
    assert_eq!(store.prune_challenges(now()).await.unwrap(), 3);
    assert_eq!(store.prune_challenges(now()).await.unwrap(), 0);
    assert_eq!(
        store.consume_challenge("live", now()).await.unwrap(),
        ChallengeStatus::Accepted
    );
    assert_eq!(
        store.consume_challenge("bound", now()).await.unwrap(),
        ChallengeStatus::Accepted
    );
}
