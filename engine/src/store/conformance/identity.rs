//! Conformance checks of [`IdentityStore`] and [`DeviceInfoStore`].

use time::Duration;

use super::*;

/// Pinning, renewal links, and old hashes staying owned by their enrollment.
pub async fn identity_pinning<S: Store + ?Sized>(store: &S) {
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
pub async fn identity_evidence<S: Store + ?Sized>(store: &S) {
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

/// MachineInfo is replaced, keeping the first sighting.
pub async fn machine_info<S: Store + ?Sized>(store: &S) {
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

/// Unknown enrollments and certificates: no pin, no owner, no link, no mark, no approval.
pub async fn identity_unknowns<S: Store + ?Sized>(store: &S) {
    let ghost = EnrollmentId::new("ghost");
    let h = CertHash::of_der(b"unknown cert");
    assert_eq!(store.pinned_cert(&ghost).await.unwrap(), None);
    assert_eq!(store.cert_owner(&h).await.unwrap(), None);
    assert_eq!(store.renewed_from(&h).await.unwrap(), None);
    assert_eq!(store.cert_binding(&h).await.unwrap(), None);
    assert!(!store.pin_released(&ghost).await.unwrap());
    assert!(
        !store
            .take_reenrollment_approval(&ghost, now())
            .await
            .unwrap()
    );
    assert_eq!(store.machine_info("ghost").await.unwrap(), None);
    // A binding is replaced by the next one.
    let first = CertBinding {
        udid: "U-1".into(),
        serial: "S-1".into(),
        source: BindingSource::MachineInfo,
    };
    let second = CertBinding {
        udid: "U-2".into(),
        serial: "S-2".into(),
        source: BindingSource::MachineInfo,
    };
    store.bind_cert(&h, &first).await.unwrap();
    store.bind_cert(&h, &second).await.unwrap();
    assert_eq!(store.cert_binding(&h).await.unwrap(), Some(second));
    // An approval replaces a pending one.
    store
        .approve_reenrollment(&ghost, now() - Duration::seconds(1))
        .await
        .unwrap();
    store
        .approve_reenrollment(&ghost, now() + Duration::hours(1))
        .await
        .unwrap();
    assert!(
        store
            .take_reenrollment_approval(&ghost, now())
            .await
            .unwrap()
    );
}

/// `pin_cert_emitting` and `repin_cert_clearing_escrow` append their events with the pin.
pub async fn identity_emitting<S: Store + ?Sized>(store: &S) {
    let ch = enroll(store, "IE-1").await;
    let id = ch.id.clone();
    let h1 = CertHash::of_der(b"emitting one");
    let h2 = CertHash::of_der(b"emitting two");
    let head = store.event_head().await.unwrap();
    let written = store
        .pin_cert_emitting(&id, &h1, Emit::events(vec![ev("test.pinned")]))
        .await
        .unwrap();
    assert_eq!(kinds(&written), ["test.pinned"]);
    assert_eq!(store.pinned_cert(&id).await.unwrap(), Some(h1));
    assert_eq!(store.cert_owner(&h1).await.unwrap(), Some(id.clone()));
    store
        .store_bootstrap_token(&id, Some(b"bt".to_vec()), Emit::none())
        .await
        .unwrap();
    store.release_pin(&id).await.unwrap();
    let written = store
        .repin_cert_clearing_escrow(&id, &h2, Emit::events(vec![ev("test.repinned")]))
        .await
        .unwrap();
    assert_eq!(kinds(&written), ["test.repinned"]);
    assert_eq!(
        kinds_after(store, head).await,
        ["test.pinned", "test.repinned"]
    );
    assert_eq!(store.pinned_cert(&id).await.unwrap(), Some(h2));
    assert_eq!(store.cert_owner(&h2).await.unwrap(), Some(id.clone()));
    assert_eq!(store.bootstrap_token(&id).await.unwrap(), None);
    assert!(
        !store.pin_released(&id).await.unwrap(),
        "a pin ends the mark"
    );
}

/// `record_machine_info` appends its events with the record.
pub async fn machine_info_emitting<S: Store + ?Sized>(store: &S) {
    let info = crate::wire::machine_info::MachineInfo {
        udid: "MIE-1".into(),
        serial: "SN-MIE-1".into(),
        ..Default::default()
    };
    let t0 = now();
    let head = store.event_head().await.unwrap();
    let written = store
        .record_machine_info(&info, t0, Emit::events(vec![ev("test.machine_info")]))
        .await
        .unwrap();
    assert_eq!(kinds(&written), ["test.machine_info"]);
    assert_eq!(kinds_after(store, head).await, ["test.machine_info"]);
    let r = store.machine_info("MIE-1").await.unwrap().unwrap();
    assert_eq!(r.info, info);
    assert_eq!((r.first_seen_at, r.last_seen_at), (t0, t0));
}
