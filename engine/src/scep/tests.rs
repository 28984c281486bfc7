use super::*;
use crate::ca::CaOptions;
use crate::store::redb::RedbStore;
use crate::wire::scep::{
    CertRep, ContentCipher, Digest, build_cert_poll, build_csr, build_request,
    self_signed_requester,
};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509Name};

struct Setup {
    service: ScepService,
    ca: Arc<CertificateAuthority>,
    store: Arc<RedbStore>,
}

fn setup(static_challenge: Option<&str>) -> Setup {
    let store = Arc::new(RedbStore::in_memory().unwrap());
    let ca = Arc::new(CertificateAuthority::generate(&CaOptions::default()).unwrap());
    let outbox = Outbox::new(store.clone(), 16);
    let service = ScepService::new(
        ca.clone(),
        store.clone(),
        store.clone(),
        outbox,
        ScepOptions {
            static_challenge: static_challenge.map(Into::into),
            ..Default::default()
        },
    );
    Setup { service, ca, store }
}

fn key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

fn subject() -> X509Name {
    let mut n = X509Name::builder().unwrap();
    n.append_entry_by_text("CN", "device").unwrap();
    n.build()
}

/// Send a request; returns the decoded reply.
async fn request(
    s: &Setup,
    message_type: MessageType,
    challenge: Option<&str>,
    signer: Option<(&X509, &PKey<Private>)>,
    cipher: ContentCipher,
) -> CertRep {
    let device_key = key();
    let csr = build_csr(&device_key, &subject(), challenge).unwrap();
    let throwaway_key = key();
    let throwaway = self_signed_requester(&throwaway_key, "scep-client").unwrap();
    let (cert, k) = signer.unwrap_or((&throwaway, &throwaway_key));
    let msg = build_request(
        &csr,
        message_type,
        "TX",
        b"nonce-0123456789",
        cert,
        k,
        s.ca.certificate(),
        cipher,
        Digest::Sha256,
    )
    .unwrap();
    let reply = s.service.pki_operation(&msg).await.unwrap();
    CertRep::parse(&reply, s.ca.certificate(), cert, k).unwrap()
}

#[tokio::test]
async fn static_challenge_issues_and_wrong_challenge_fails() {
    let s = setup(Some("static-secret"));
    let ok = request(
        &s,
        MessageType::PkcsReq,
        Some("static-secret"),
        None,
        ContentCipher::Aes256Cbc,
    )
    .await;
    assert_eq!(ok.message.pki_status.as_deref(), Some("0"));
    s.ca.verify_device_cert(&ok.certificates[0]).unwrap();
    for wrong in [Some("nope"), None] {
        let bad = request(
            &s,
            MessageType::PkcsReq,
            wrong,
            None,
            ContentCipher::Aes128Cbc,
        )
        .await;
        assert_eq!(bad.message.pki_status.as_deref(), Some("2"));
        assert_eq!(bad.message.fail_info, Some(FailInfo::BadRequest));
    }
}

#[tokio::test]
async fn one_time_challenges_are_consumed() {
    let s = setup(None);
    let c = s.service.mint_challenge().await.unwrap();
    let first = request(
        &s,
        MessageType::PkcsReq,
        Some(&c),
        None,
        ContentCipher::DesCbc,
    )
    .await;
    assert_eq!(
        first.message.pki_status.as_deref(),
        Some("0"),
        "single DES clients are served"
    );
    let replay = request(
        &s,
        MessageType::PkcsReq,
        Some(&c),
        None,
        ContentCipher::DesEde3Cbc,
    )
    .await;
    assert_eq!(
        replay.message.pki_status.as_deref(),
        Some("2"),
        "a replayed challenge is refused"
    );
}

#[tokio::test]
async fn renewal_needs_a_valid_identity_and_links_the_new_certificate() {
    let s = setup(Some("c"));
    let device_key = key();
    let first = request(
        &s,
        MessageType::PkcsReq,
        Some("c"),
        None,
        ContentCipher::Aes256Cbc,
    )
    .await;
    assert_eq!(first.message.pki_status.as_deref(), Some("0"));
    // Re-issue for a key we hold, so we can sign the renewal with that identity.
    let public = PKey::public_key_from_der(&device_key.public_key_to_der().unwrap()).unwrap();
    let identity = s.ca.issue_device_cert(&public, &subject(), 30).unwrap();
    let renewed = request(
        &s,
        MessageType::RenewalReq,
        None,
        Some((&identity, &device_key)),
        ContentCipher::Aes256Cbc,
    )
    .await;
    assert_eq!(renewed.message.pki_status.as_deref(), Some("0"));
    let old = CertHash::of_der(&identity.to_der().unwrap());
    let new = CertHash::of_der(&renewed.certificates[0].to_der().unwrap());
    assert_eq!(s.store.renewed_from(&new).await.unwrap(), Some(old));

    // A renewal signed by a stranger's self-signed certificate is refused.
    let refused = request(
        &s,
        MessageType::RenewalReq,
        None,
        None,
        ContentCipher::Aes256Cbc,
    )
    .await;
    assert_eq!(refused.message.pki_status.as_deref(), Some("2"));
}

#[tokio::test]
async fn garbage_is_an_error_not_a_reply() {
    let s = setup(Some("c"));
    assert!(matches!(
        s.service.pki_operation(b"garbage").await,
        Err(ScepServiceError::Message(_))
    ));
}

/// One requester: its device key (in the CSR) and its throw-away signer.
struct Requester {
    device_key: PKey<Private>,
    signer_key: PKey<Private>,
    signer: X509,
}

fn requester(device_key: PKey<Private>) -> Requester {
    let signer_key = key();
    let signer = self_signed_requester(&signer_key, "scep-client").unwrap();
    Requester {
        device_key,
        signer_key,
        signer,
    }
}

/// A PKCSReq for `transaction_id` from `r`.
async fn pkcs_req(s: &Setup, r: &Requester, transaction_id: &str, challenge: &str) -> CertRep {
    let csr = build_csr(&r.device_key, &subject(), Some(challenge)).unwrap();
    let mut nonce = [0u8; 16];
    openssl::rand::rand_bytes(&mut nonce).unwrap();
    let msg = build_request(
        &csr,
        MessageType::PkcsReq,
        transaction_id,
        &nonce,
        &r.signer,
        &r.signer_key,
        s.ca.certificate(),
        ContentCipher::Aes256Cbc,
        Digest::Sha256,
    )
    .unwrap();
    let reply = s.service.pki_operation(&msg).await.unwrap();
    let rep = CertRep::parse(&reply, s.ca.certificate(), &r.signer, &r.signer_key).unwrap();
    assert_eq!(rep.message.recipient_nonce.as_deref(), Some(&nonce[..]));
    rep
}

fn serial(rep: &CertRep) -> String {
    rep.certificates[0]
        .serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_retried_transaction_gets_its_certificate_again() {
    let s = setup(None);
    let c = s.service.mint_challenge().await.unwrap();
    let device_key = key();
    let der = device_key.private_key_to_der().unwrap();
    let first = pkcs_req(&s, &requester(device_key), "TX-RETRY", &c).await;
    assert_eq!(first.message.pki_status.as_deref(), Some("0"));
    // The reply was lost; the device retries with the same key and transaction, and a new
    // signer and nonce.
    let again = requester(PKey::private_key_from_der(&der).unwrap());
    let retry = pkcs_req(&s, &again, "TX-RETRY", &c).await;
    assert_eq!(
        retry.message.pki_status.as_deref(),
        Some("0"),
        "the retry is refused: {:?}",
        retry.message.fail_info
    );
    assert_eq!(serial(&retry), serial(&first), "the same certificate again");
    assert_eq!(
        retry.certificates[0].to_der().unwrap(),
        first.certificates[0].to_der().unwrap()
    );
}

#[tokio::test]
async fn a_retry_with_another_key_or_transaction_is_refused() {
    let s = setup(None);
    let c = s.service.mint_challenge().await.unwrap();
    let device_key = key();
    let der = device_key.private_key_to_der().unwrap();
    let first = pkcs_req(&s, &requester(device_key), "TX-1", &c).await;
    assert_eq!(first.message.pki_status.as_deref(), Some("0"));
    // Someone else guesses the transaction ID, with their own key.
    let stranger = pkcs_req(&s, &requester(key()), "TX-1", &c).await;
    assert_eq!(stranger.message.pki_status.as_deref(), Some("2"));
    assert_eq!(stranger.message.fail_info, Some(FailInfo::BadRequest));
    // The same key in an unrelated transaction with the used challenge.
    let same_key = requester(PKey::private_key_from_der(&der).unwrap());
    let other_tx = pkcs_req(&s, &same_key, "TX-2", &c).await;
    assert_eq!(other_tx.message.pki_status.as_deref(), Some("2"));
    // The same transaction and key with another (wrong) challenge.
    let wrong = pkcs_req(&s, &same_key, "TX-1", "not-the-challenge").await;
    assert_eq!(wrong.message.pki_status.as_deref(), Some("2"));
}

#[tokio::test]
async fn cert_poll_answers_for_an_issued_transaction() {
    let s = setup(None);
    let c = s.service.mint_challenge().await.unwrap();
    let device_key = key();
    let der = device_key.private_key_to_der().unwrap();
    // The device signs with its own key, as Apple devices do.
    let mut r = requester(device_key);
    r.signer_key = PKey::private_key_from_der(&der).unwrap();
    r.signer = self_signed_requester(&r.signer_key, "device").unwrap();
    let first = pkcs_req(&s, &r, "TX-POLL", &c).await;
    assert_eq!(first.message.pki_status.as_deref(), Some("0"));
    let poll = |tx: &'static str, signer: X509, signer_key: PKey<Private>| {
        let msg = build_cert_poll(
            &subject(),
            tx,
            b"poll-nonce-01234",
            &signer,
            &signer_key,
            s.ca.certificate(),
            ContentCipher::Aes256Cbc,
            Digest::Sha256,
        )
        .unwrap();
        let service = &s.service;
        let ca = s.ca.certificate().to_owned();
        async move {
            let reply = service.pki_operation(&msg).await.unwrap();
            CertRep::parse(&reply, &ca, &signer, &signer_key).unwrap()
        }
    };
    let got = poll("TX-POLL", r.signer.clone(), r.signer_key.clone()).await;
    assert_eq!(
        got.message.pki_status.as_deref(),
        Some("0"),
        "CertPoll refused: {:?}",
        got.message.fail_info
    );
    assert_eq!(serial(&got), serial(&first));
    // Another key polling the same transaction, or an unknown transaction, gets badCertId.
    let other_key = key();
    let other = self_signed_requester(&other_key, "x").unwrap();
    let stranger = poll("TX-POLL", other, other_key).await;
    assert_eq!(stranger.message.pki_status.as_deref(), Some("2"));
    assert_eq!(stranger.message.fail_info, Some(FailInfo::BadCertId));
    let unknown = poll("TX-NONE", r.signer.clone(), r.signer_key.clone()).await;
    assert_eq!(unknown.message.fail_info, Some(FailInfo::BadCertId));
}

#[tokio::test]
async fn a_retried_renewal_gets_its_certificate_again() {
    let s = setup(None);
    // The current identity the device renews with.
    let identity_key = key();
    let public = PKey::public_key_from_der(&identity_key.public_key_to_der().unwrap()).unwrap();
    let identity = s.ca.issue_device_cert(&public, &subject(), 30).unwrap();
    let identity_der = identity_key.private_key_to_der().unwrap();
    let new_key = key();
    let new_der = new_key.private_key_to_der().unwrap();
    let renew = |r: Requester| {
        let csr = build_csr(&r.device_key, &subject(), None).unwrap();
        let msg = build_request(
            &csr,
            MessageType::RenewalReq,
            "TX-RENEW",
            b"renewal-nonce-01",
            &r.signer,
            &r.signer_key,
            s.ca.certificate(),
            ContentCipher::Aes256Cbc,
            Digest::Sha256,
        )
        .unwrap();
        let service = &s.service;
        let ca = s.ca.certificate().to_owned();
        async move {
            let reply = service.pki_operation(&msg).await.unwrap();
            CertRep::parse(&reply, &ca, &r.signer, &r.signer_key).unwrap()
        }
    };
    let with_identity = |device_der: &[u8]| Requester {
        device_key: PKey::private_key_from_der(device_der).unwrap(),
        signer_key: PKey::private_key_from_der(&identity_der).unwrap(),
        signer: identity.clone(),
    };
    let first = renew(with_identity(&new_der)).await;
    assert_eq!(first.message.pki_status.as_deref(), Some("0"));
    let retry = renew(with_identity(&new_der)).await;
    assert_eq!(retry.message.pki_status.as_deref(), Some("0"));
    assert_eq!(serial(&retry), serial(&first), "the same certificate again");
    // A stranger's self-signed signer with the same transaction and CSR key is refused.
    let mut stranger = requester(PKey::private_key_from_der(&new_der).unwrap());
    stranger.signer_key = key();
    stranger.signer = self_signed_requester(&stranger.signer_key, "x").unwrap();
    assert_eq!(
        renew(stranger).await.message.pki_status.as_deref(),
        Some("2")
    );
}

/// A SCEP service whose outbox cannot append on its own (see `FailingAppends`).
fn setup_failing_appends() -> Setup {
    let store = Arc::new(RedbStore::in_memory().unwrap());
    let ca = Arc::new(CertificateAuthority::generate(&CaOptions::default()).unwrap());
    let outbox = Outbox::new(
        Arc::new(crate::events::testing::FailingAppends(store.clone())),
        16,
    );
    let service = ScepService::new(
        ca.clone(),
        store.clone(),
        store.clone(),
        outbox,
        ScepOptions::default(),
    );
    Setup { service, ca, store }
}

#[tokio::test]
async fn the_issued_certificate_is_logged_with_its_records() {
    use crate::store::{EventStore, ScepTransactionStore};
    let s = setup_failing_appends();
    let mut live = s.service.outbox.subscribe();
    let binding = CertBinding {
        udid: "UDID-LOGGED".into(),
        serial: "SN-LOGGED".into(),
        source: crate::store::BindingSource::MachineInfo,
    };
    let c = s.service.mint_bound_challenge(&binding).await.unwrap();
    let rep = pkcs_req(&s, &requester(key()), "TX-LOGGED", &c).await;
    assert_eq!(rep.message.pki_status.as_deref(), Some("0"));
    let hash = CertHash::of_der(&rep.certificates[0].to_der().unwrap());

    // The binding, the transaction record, the consumed challenge and the event committed
    // together, although the outbox's own appends fail.
    assert_eq!(s.store.cert_binding(&hash).await.unwrap(), Some(binding));
    let now = time::OffsetDateTime::now_utc();
    assert_eq!(
        s.store.scep_issues("TX-LOGGED", now).await.unwrap().len(),
        1
    );
    assert_eq!(
        s.store.consume_challenge(&c, now).await.unwrap(),
        ChallengeStatus::AlreadyUsed
    );
    let log = s.store.events_after(0, 100).await.unwrap();
    let issued: Vec<_> = log
        .iter()
        .filter(|e| e.kind == kind::SCEP_CERTIFICATE_ISSUED)
        .collect();
    assert_eq!(issued.len(), 1, "events: {log:?}");
    assert_eq!(issued[0].data["certificate_sha256"], hash.to_hex());
    assert_eq!(issued[0].data["bound_udid"], "UDID-LOGGED");
    assert_eq!(issued[0].data["transaction_id"], "TX-LOGGED");
    // Live subscribers get the committed event.
    assert_eq!(live.try_recv().unwrap().seq, issued[0].seq);
}

#[tokio::test]
async fn a_renewal_is_logged_with_its_link_and_binding() {
    use crate::store::EventStore;
    let s = setup_failing_appends();
    let device_key = key();
    let public = PKey::public_key_from_der(&device_key.public_key_to_der().unwrap()).unwrap();
    let identity = s.ca.issue_device_cert(&public, &subject(), 30).unwrap();
    let old = CertHash::of_der(&identity.to_der().unwrap());
    let binding = CertBinding {
        udid: "UDID-RENEWED".into(),
        serial: "SN-RENEWED".into(),
        source: crate::store::BindingSource::MachineInfo,
    };
    s.store.bind_cert(&old, &binding).await.unwrap();
    let renewed = request(
        &s,
        MessageType::RenewalReq,
        None,
        Some((&identity, &device_key)),
        ContentCipher::Aes256Cbc,
    )
    .await;
    assert_eq!(renewed.message.pki_status.as_deref(), Some("0"));
    let new = CertHash::of_der(&renewed.certificates[0].to_der().unwrap());
    assert_eq!(s.store.renewed_from(&new).await.unwrap(), Some(old));
    assert_eq!(s.store.cert_binding(&new).await.unwrap(), Some(binding));
    let log = s.store.events_after(0, 100).await.unwrap();
    let renewal = log
        .iter()
        .find(|e| e.kind == kind::SCEP_CERTIFICATE_ISSUED)
        .unwrap_or_else(|| panic!("no scep.certificate_issued in {log:?}"));
    assert_eq!(renewal.data["renewal_of"], old.to_hex());
    assert_eq!(renewal.data["certificate_sha256"], new.to_hex());
    assert_eq!(renewal.data["bound_udid"], "UDID-RENEWED");
}

/// A challenge store whose first issuance write fails as a whole (a full disk, a crash): like a
/// failed transaction, it leaves nothing behind.
struct FirstIssuanceFails {
    inner: Arc<RedbStore>,
    failed: std::sync::atomic::AtomicBool,
}

impl FirstIssuanceFails {
    fn fail_once(&self) -> Result<(), StoreError> {
        if self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Ok(())
        } else {
            Err(StoreError::backend(
                "issue certificate",
                "injected: issuance write failed",
            ))
        }
    }
}

#[async_trait::async_trait]
impl crate::store::ScepTransactionStore for FirstIssuanceFails {
    async fn put_scep_issue(&self, issue: &ScepIssue) -> crate::store::StoreResult<()> {
        self.fail_once()?;
        self.inner.put_scep_issue(issue).await
    }
    async fn record_issuance(
        &self,
        issuance: &ScepIssuance,
        now: crate::store::Timestamp,
        emit: Emit<()>,
    ) -> crate::store::StoreResult<(ChallengeStatus, Vec<crate::store::Event>)> {
        self.fail_once()?;
        self.inner.record_issuance(issuance, now, emit).await
    }
    async fn scep_issues(
        &self,
        transaction_id: &str,
        now: crate::store::Timestamp,
    ) -> crate::store::StoreResult<Vec<ScepIssue>> {
        self.inner.scep_issues(transaction_id, now).await
    }
    async fn prune_scep_issues(
        &self,
        before: crate::store::Timestamp,
        limit: usize,
    ) -> crate::store::StoreResult<u64> {
        self.inner.prune_scep_issues(before, limit).await
    }
}

#[async_trait::async_trait]
impl ChallengeStore for FirstIssuanceFails {
    async fn put_challenge(
        &self,
        challenge: &str,
        expires_at: crate::store::Timestamp,
    ) -> crate::store::StoreResult<()> {
        self.inner.put_challenge(challenge, expires_at).await
    }
    async fn consume_challenge(
        &self,
        challenge: &str,
        now: crate::store::Timestamp,
    ) -> crate::store::StoreResult<ChallengeStatus> {
        self.inner.consume_challenge(challenge, now).await
    }
    async fn put_bound_challenge(
        &self,
        challenge: &str,
        expires_at: crate::store::Timestamp,
        binding: &CertBinding,
    ) -> crate::store::StoreResult<()> {
        self.inner
            .put_bound_challenge(challenge, expires_at, binding)
            .await
    }
    async fn challenge_binding(
        &self,
        challenge: &str,
    ) -> crate::store::StoreResult<Option<CertBinding>> {
        self.inner.challenge_binding(challenge).await
    }
    async fn prune_challenges(
        &self,
        before: crate::store::Timestamp,
    ) -> crate::store::StoreResult<u64> {
        self.inner.prune_challenges(before).await
    }
}

#[tokio::test]
async fn a_failed_issuance_write_leaves_the_challenge_for_the_retry() {
    let store = Arc::new(RedbStore::in_memory().unwrap());
    let ca = Arc::new(CertificateAuthority::generate(&CaOptions::default()).unwrap());
    let service = ScepService::new(
        ca.clone(),
        Arc::new(FirstIssuanceFails {
            inner: store.clone(),
            failed: Default::default(),
        }),
        store.clone(),
        Outbox::new(store.clone(), 16),
        ScepOptions::default(),
    );
    let c = service.mint_challenge().await.unwrap();
    let r = requester(key());
    let csr = build_csr(&r.device_key, &subject(), Some(&c)).unwrap();
    let msg = build_request(
        &csr,
        MessageType::PkcsReq,
        "TX-FAILED-WRITE",
        b"nonce-0123456789",
        &r.signer,
        &r.signer_key,
        ca.certificate(),
        ContentCipher::Aes256Cbc,
        Digest::Sha256,
    )
    .unwrap();
    assert!(
        service.pki_operation(&msg).await.is_err(),
        "the failed write is an error (HTTP 500), the client retries"
    );
    let reply = service.pki_operation(&msg).await.unwrap();
    let rep = CertRep::parse(&reply, ca.certificate(), &r.signer, &r.signer_key).unwrap();
    assert_eq!(
        rep.message.pki_status.as_deref(),
        Some("0"),
        "the retry is refused: {:?}",
        rep.message.fail_info
    );
    let hash = CertHash::of_der(&rep.certificates[0].to_der().unwrap());
    let log = crate::store::EventStore::events_after(&*store, 0, 100)
        .await
        .unwrap();
    let issued: Vec<_> = log
        .iter()
        .filter(|e| e.kind == kind::SCEP_CERTIFICATE_ISSUED)
        .collect();
    assert_eq!(issued.len(), 1, "one issuance, one event: {log:?}");
    assert_eq!(issued[0].data["certificate_sha256"], hash.to_hex());
}
