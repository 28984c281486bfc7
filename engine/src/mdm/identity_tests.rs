//! Certificate verification and certificate ↔ enrollment pinning, called directly (no HTTP).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use openssl::x509::X509;

use super::*;
use crate::events::testing::FailingAppends;
use crate::mdm::testing::{cert, device_request, user_request};
use crate::mdm::{Core, CoreOptions, last_seen::LastSeen};
use crate::seal::SealKey;
use crate::store::redb::RedbStore;
use crate::store::{BindingSource, BootstrapStore, CertBinding, Event, EventStore, ReportOutcome};
use crate::wire::checkin::{Authenticate, TokenUpdate};
use crate::wire::report::Status;

fn hash(c: &X509) -> CertHash {
    Identity::new(c.clone(), super::super::IdentitySource::Tls).hash
}

// --- CachedVerifier ---

/// A verifier that accepts certificates named in `trusted` and counts its calls.
#[derive(Default)]
struct Counting {
    trusted: Mutex<Vec<CertHash>>,
    calls: AtomicUsize,
}

impl IdentityVerifier for Counting {
    fn verify(&self, cert: &X509Ref) -> Result<(), String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let h = CertHash::of_der(&cert.to_der().unwrap());
        if self.trusted.lock().unwrap().contains(&h) {
            Ok(())
        } else {
            Err("not issued by the test CA".into())
        }
    }
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[test]
fn the_verifier_cache_remembers_only_what_verified() {
    let counting = Arc::new(Counting::default());
    let cache = CachedVerifier::new(counting.clone());
    let good = cert("good");
    counting.trusted.lock().unwrap().push(hash(&good));
    let calls = || counting.calls.load(Ordering::SeqCst);

    cache.check(&good, &hash(&good), now_unix()).unwrap();
    cache.check(&good, &hash(&good), now_unix()).unwrap();
    assert_eq!(calls(), 1, "the second check is a cache hit");

    // A refusal is not remembered: asked again each time.
    let bad = cert("bad");
    for n in 2..=3 {
        let err = cache.check(&bad, &hash(&bad), now_unix()).unwrap_err();
        assert!(matches!(err, IdentityError::Untrusted(_)), "{err}");
        assert_eq!(calls(), n);
    }

    // Another certificate with the same subject is another entry: verified on its own.
    let lookalike = cert("good");
    assert_ne!(hash(&lookalike), hash(&good));
    assert!(
        cache
            .check(&lookalike, &hash(&lookalike), now_unix())
            .is_err()
    );
    assert_eq!(calls(), 4);

    // An entry lasts until the certificate expires (30 days for these), then is checked again.
    let later = now_unix() + 31 * 86_400;
    cache.check(&good, &hash(&good), later).unwrap();
    assert_eq!(calls(), 5);
    counting.trusted.lock().unwrap().clear();
    let err = cache.check(&good, &hash(&good), later + 1).unwrap_err();
    assert!(matches!(err, IdentityError::Untrusted(_)), "{err}");
}

#[tokio::test]
async fn verify_identity_refuses_before_the_inner_service() {
    let counting = Arc::new(Counting::default());
    let inner = Arc::new(Recording::default());
    let svc = VerifyIdentity::new(inner.clone(), counting.clone());
    let good = cert("good");
    counting.trusted.lock().unwrap().push(hash(&good));

    let mut anonymous = device_request("U", &good);
    anonymous.identity = None;
    let err = svc
        .checkin(&anonymous, &CheckinBody::CheckOut)
        .await
        .unwrap_err();
    assert!(
        matches!(err, MdmError::Identity(IdentityError::Missing)),
        "{err}"
    );
    let stranger = device_request("U", &cert("stranger"));
    let err = svc.report(&stranger, &idle(&stranger)).await.unwrap_err();
    assert!(
        matches!(err, MdmError::Identity(IdentityError::Untrusted(_))),
        "{err}"
    );
    assert_eq!(inner.calls(), 0);

    let req = device_request("U", &good);
    svc.checkin(&req, &CheckinBody::CheckOut).await.unwrap();
    svc.report(&req, &idle(&req)).await.unwrap();
    assert_eq!(inner.calls(), 2);
}

// --- PinIdentity ---

/// The inner service: the real core, counting the messages that got through.
#[derive(Default)]
struct Recording {
    core: Option<Core>,
    calls: AtomicUsize,
}

impl Recording {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl MdmService for Recording {
    async fn checkin(
        &self,
        req: &Request,
        body: &CheckinBody,
    ) -> Result<CheckinResponse, MdmError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match &self.core {
            Some(core) => core.checkin(req, body).await,
            None => Ok(CheckinResponse::Empty),
        }
    }

    async fn report(
        &self,
        req: &Request,
        report: &CommandReport,
    ) -> Result<ReportResponse, MdmError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match &self.core {
            Some(core) => core.report(req, report).await,
            None => Ok(ReportResponse {
                outcome: None,
                next: None,
            }),
        }
    }
}

fn idle(req: &Request) -> CommandReport {
    CommandReport {
        identifiers: req.identifiers.clone(),
        channel: req.channel.clone(),
        status: Status::Idle,
        command_uuid: None,
        error_chain: Vec::new(),
    }
}

struct Pinned {
    store: Arc<RedbStore>,
    inner: Arc<Recording>,
    pin: PinIdentity<Arc<Recording>>,
    admin: IdentityService,
}

impl Pinned {
    fn new(renewal: RenewalPolicy) -> Self {
        let store = Arc::new(RedbStore::in_memory().unwrap());
        let outbox = Outbox::new(store.clone(), 64);
        let inner = Arc::new(Recording {
            core: Some(Core::new(
                store.clone(),
                store.clone(),
                store.clone(),
                store.clone(),
                outbox.clone(),
                SealKey::generate(),
                Arc::new(LastSeen::default()),
                CoreOptions::default(),
            )),
            calls: AtomicUsize::new(0),
        });
        let pin = PinIdentity::new(inner.clone(), store.clone(), renewal, Some(outbox.clone()));
        let admin = IdentityService::new(store.clone(), store.clone(), outbox);
        Self {
            store,
            inner,
            pin,
            admin,
        }
    }

    async fn authenticate(&self, udid: &str, c: &X509) -> Result<CheckinResponse, MdmError> {
        let body = CheckinBody::Authenticate(Authenticate {
            topic: "com.apple.mgmt.External.t".into(),
            serial_number: Some(format!("SN-{udid}")),
            ..Default::default()
        });
        self.pin.checkin(&device_request(udid, c), &body).await
    }

    /// Authenticate and TokenUpdate with `c`, then escrow a bootstrap token.
    async fn enroll(&self, udid: &str, c: &X509) {
        self.authenticate(udid, c).await.unwrap();
        let req = device_request(udid, c);
        let token = CheckinBody::TokenUpdate(TokenUpdate {
            token: vec![1; 32],
            push_magic: "m".into(),
            topic: "com.apple.mgmt.External.t".into(),
            ..Default::default()
        });
        self.pin.checkin(&req, &token).await.unwrap();
        self.pin
            .checkin(&req, &CheckinBody::SetBootstrapToken(Some(b"bt".to_vec())))
            .await
            .unwrap();
    }

    async fn pinned(&self, udid: &str) -> Option<CertHash> {
        self.store
            .pinned_cert(&EnrollmentId::new(udid))
            .await
            .unwrap()
    }

    async fn escrowed(&self, udid: &str) -> bool {
        self.store
            .bootstrap_token(&EnrollmentId::new(udid))
            .await
            .unwrap()
            .is_some()
    }

    async fn events_after(&self, after: u64) -> Vec<Event> {
        self.store.events_after(after, 1000).await.unwrap()
    }

    async fn last_seq(&self) -> u64 {
        self.events_after(0).await.last().map_or(0, |e| e.seq)
    }

    /// The identity events logged after `after`.
    async fn identity_events(&self, after: u64) -> Vec<Event> {
        let mut log = self.events_after(after).await;
        log.retain(|e| e.kind.starts_with("identity."));
        log
    }
}

fn refused(err: MdmError) -> String {
    match err {
        MdmError::Identity(IdentityError::TakeoverRefused(why)) => why,
        other => panic!("expected a refused takeover, got {other}"),
    }
}

#[tokio::test]
async fn the_first_authenticate_pins_and_the_same_certificate_passes() {
    let p = Pinned::new(RenewalPolicy::Linked);
    let c1 = cert("c1");
    p.enroll("U", &c1).await;
    assert_eq!(p.pinned("U").await, Some(hash(&c1)));
    assert_eq!(p.inner.calls(), 3);
    p.authenticate("U", &c1).await.unwrap();
    assert_eq!(p.pinned("U").await, Some(hash(&c1)));
    assert!(p.identity_events(0).await.is_empty(), "nothing to report");

    // The pinned certificate is this enrollment's: not another's.
    let err = p.authenticate("OTHER", &c1).await.unwrap_err();
    assert!(
        matches!(&err, MdmError::Identity(IdentityError::InUse(owner)) if owner == "U"),
        "{err}"
    );
    assert_eq!(p.pinned("OTHER").await, None);
}

#[tokio::test]
async fn another_certificate_without_evidence_is_refused_and_logged() {
    let p = Pinned::new(RenewalPolicy::Linked);
    let (c1, c2) = (cert("c1"), cert("c2"));
    p.enroll("U", &c1).await;
    let (calls, before) = (p.inner.calls(), p.last_seq().await);

    let why = refused(p.authenticate("U", &c2).await.unwrap_err());
    assert!(why.contains("belongs to another certificate"), "{why}");

    assert_eq!(p.inner.calls(), calls, "the core never saw it");
    assert_eq!(p.pinned("U").await, Some(hash(&c1)));
    assert!(p.escrowed("U").await, "the escrow stays with c1");
    let log = p.events_after(before).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].kind, kind::IDENTITY_TAKEOVER_REFUSED);
    assert_eq!(log[0].enrollment_id, Some(EnrollmentId::new("U")));
    assert_eq!(log[0].data["reason"], "no evidence");
    assert_eq!(log[0].data["pinned"], hash(&c1).to_hex());
    assert_eq!(log[0].data["presented"], hash(&c2).to_hex());
}

#[tokio::test]
async fn e1_a_certificate_bound_to_this_udid_re_enrolls_and_clears_the_escrow() {
    let p = Pinned::new(RenewalPolicy::Linked);
    let (c1, c2, elsewhere) = (cert("c1"), cert("c2"), cert("elsewhere"));
    p.enroll("U", &c1).await;
    let binding = |udid: &str| CertBinding {
        udid: udid.into(),
        serial: "SN".into(),
        source: BindingSource::MachineInfo,
    };
    p.store.bind_cert(&hash(&c2), &binding("U")).await.unwrap();
    p.store
        .bind_cert(&hash(&elsewhere), &binding("OTHER-UDID"))
        .await
        .unwrap();
    let before = p.last_seq().await;

    // Bound to another UDID: refused, even though it would be evidence there.
    let why = refused(p.authenticate("U", &elsewhere).await.unwrap_err());
    assert!(why.contains("OTHER-UDID"), "{why}");
    // Also for an enrollment that has no pin yet.
    refused(p.authenticate("FRESH", &elsewhere).await.unwrap_err());
    assert_eq!(p.pinned("FRESH").await, None);

    p.authenticate("U", &c2).await.unwrap();
    assert_eq!(p.pinned("U").await, Some(hash(&c2)));
    assert!(!p.escrowed("U").await, "a new holder loses the escrow");
    let log = p.identity_events(before).await;
    let kinds: Vec<_> = log.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            kind::IDENTITY_TAKEOVER_REFUSED,
            kind::IDENTITY_TAKEOVER_REFUSED,
            kind::IDENTITY_REENROLLED
        ]
    );
    assert_eq!(
        log[0].data["reason"],
        "the certificate was issued to another UDID"
    );
    assert_eq!(log[2].data["evidence"], "machine_info");
    assert_eq!(log[2].data["escrow_cleared"], true);
    assert_eq!(log[2].data["previous"], hash(&c1).to_hex());
    assert_eq!(log[2].data["current"], hash(&c2).to_hex());
}

#[tokio::test]
async fn e2_a_renewal_of_the_pinned_certificate_keeps_the_escrow() {
    let p = Pinned::new(RenewalPolicy::Linked);
    let (c1, c2, c3) = (cert("c1"), cert("c2"), cert("c3"));
    p.enroll("U", &c1).await;
    // c3 renews c2 renews c1: a chain of renewals counts.
    p.store.link_renewal(&hash(&c1), &hash(&c2)).await.unwrap();
    p.store.link_renewal(&hash(&c2), &hash(&c3)).await.unwrap();
    let before = p.last_seq().await;

    p.authenticate("U", &c3).await.unwrap();

    assert_eq!(p.pinned("U").await, Some(hash(&c3)));
    assert!(p.escrowed("U").await, "the same holder keeps the escrow");
    let log = p.identity_events(before).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].kind, kind::IDENTITY_REENROLLED);
    assert_eq!(log[0].data["evidence"], "renewal");
    assert_eq!(log[0].data["escrow_cleared"], false);

    // The replaced certificate is retired: never taken back.
    let why = refused(p.authenticate("U", &c1).await.unwrap_err());
    assert!(why.contains("retired"), "{why}");
    assert_eq!(p.pinned("U").await, Some(hash(&c3)));
    let log = p.identity_events(before).await;
    assert_eq!(log[1].data["reason"], "retired certificate");
}

#[tokio::test]
async fn e3_an_admin_approval_lets_one_new_certificate_in() {
    let p = Pinned::new(RenewalPolicy::Linked);
    let (c1, c2, c3) = (cert("c1"), cert("c2"), cert("c3"));
    p.enroll("U", &c1).await;
    let device = EnrollmentId::new("U");
    let at = time::OffsetDateTime::now_utc();
    let expires = p
        .admin
        .approve_reenrollment(&device, Some(600), at)
        .await
        .unwrap();
    assert_eq!(expires, at + time::Duration::seconds(600));
    let before = p.last_seq().await;

    p.authenticate("U", &c2).await.unwrap();
    assert_eq!(p.pinned("U").await, Some(hash(&c2)));
    assert!(!p.escrowed("U").await);
    let log = p.identity_events(before).await;
    assert_eq!(log[0].data["evidence"], "admin");
    assert_eq!(log[0].data["escrow_cleared"], true);

    // Used up: the next new certificate needs evidence of its own.
    refused(p.authenticate("U", &c3).await.unwrap_err());
    assert_eq!(p.pinned("U").await, Some(hash(&c2)));
}

#[tokio::test]
async fn an_expired_approval_is_no_evidence() {
    let p = Pinned::new(RenewalPolicy::Linked);
    let (c1, c2) = (cert("c1"), cert("c2"));
    p.enroll("U", &c1).await;
    let long_ago = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    p.admin
        .approve_reenrollment(&EnrollmentId::new("U"), Some(3600), long_ago)
        .await
        .unwrap();
    refused(p.authenticate("U", &c2).await.unwrap_err());
    assert_eq!(p.pinned("U").await, Some(hash(&c1)));
}

#[tokio::test]
async fn approvals_are_for_known_device_enrollments_with_a_bounded_lifetime() {
    let p = Pinned::new(RenewalPolicy::Linked);
    let c1 = cert("c1");
    p.enroll("U", &c1).await;
    let user = user_request("U", "U1", &c1);
    p.pin
        .checkin(
            &user,
            &CheckinBody::TokenUpdate(TokenUpdate {
                token: vec![2; 32],
                push_magic: "m".into(),
                topic: "t".into(),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let before = p.last_seq().await;

    let err = p
        .admin
        .approve_reenrollment(&EnrollmentId::new("NOBODY"), None, now)
        .await
        .unwrap_err();
    assert!(matches!(err, ApprovalError::UnknownEnrollment(_)), "{err}");
    let err = p
        .admin
        .approve_reenrollment(&user.channel.id, None, now)
        .await
        .unwrap_err();
    assert!(matches!(err, ApprovalError::NotDevice(_)), "{err}");
    for ttl in [0, APPROVAL_MAX_TTL_SECS + 1] {
        let err = p
            .admin
            .approve_reenrollment(&EnrollmentId::new("U"), Some(ttl), now)
            .await
            .unwrap_err();
        assert!(matches!(err, ApprovalError::BadTtl { .. }), "{ttl}: {err}");
    }
    assert!(p.events_after(before).await.is_empty(), "nothing approved");
    assert!(
        !p.store
            .take_reenrollment_approval(&EnrollmentId::new("U"), now)
            .await
            .unwrap()
    );

    // The default lifetime is a day; the longest allowed is accepted.
    let expires = p
        .admin
        .approve_reenrollment(&EnrollmentId::new("U"), None, now)
        .await
        .unwrap();
    assert_eq!(
        expires,
        now + time::Duration::seconds(APPROVAL_TTL_SECS as i64)
    );
    p.admin
        .approve_reenrollment(&EnrollmentId::new("U"), Some(APPROVAL_MAX_TTL_SECS), now)
        .await
        .unwrap();
}

#[tokio::test]
async fn e4_a_check_out_by_the_pinned_certificate_releases_the_enrollment() {
    let p = Pinned::new(RenewalPolicy::Linked);
    let (c1, c2, c3) = (cert("c1"), cert("c2"), cert("c3"));
    p.enroll("U", &c1).await;

    // A CheckOut by another certificate is refused before it releases anything.
    let err = p
        .pin
        .checkin(&device_request("U", &c2), &CheckinBody::CheckOut)
        .await
        .unwrap_err();
    assert!(
        matches!(err, MdmError::Identity(IdentityError::Mismatch(_))),
        "{err}"
    );
    assert!(!p.store.pin_released(&EnrollmentId::new("U")).await.unwrap());

    p.pin
        .checkin(&device_request("U", &c1), &CheckinBody::CheckOut)
        .await
        .unwrap();
    assert!(p.store.pin_released(&EnrollmentId::new("U")).await.unwrap());
    let before = p.last_seq().await;

    p.authenticate("U", &c2).await.unwrap();
    assert_eq!(p.pinned("U").await, Some(hash(&c2)));
    let log = p.identity_events(before).await;
    assert_eq!(log[0].data["evidence"], "checked_out");
    assert_eq!(log[0].data["escrow_cleared"], true);
    // The release was used: the next certificate needs evidence again.
    refused(p.authenticate("U", &c3).await.unwrap_err());
}

#[tokio::test]
async fn a_check_out_then_the_same_certificate_again_closes_the_release() {
    let p = Pinned::new(RenewalPolicy::Linked);
    let (c1, c2) = (cert("c1"), cert("c2"));
    p.enroll("U", &c1).await;
    p.pin
        .checkin(&device_request("U", &c1), &CheckinBody::CheckOut)
        .await
        .unwrap();
    // The profile is installed again with the same certificate.
    p.authenticate("U", &c1).await.unwrap();
    assert!(!p.store.pin_released(&EnrollmentId::new("U")).await.unwrap());
    refused(p.authenticate("U", &c2).await.unwrap_err());
    // A CheckOut on a user channel releases nothing.
    let user = user_request("U", "U1", &c1);
    p.pin.checkin(&user, &CheckinBody::CheckOut).await.unwrap();
    assert!(!p.store.pin_released(&EnrollmentId::new("U")).await.unwrap());
}

#[tokio::test]
async fn renewal_policy_any_accepts_an_unused_certificate() {
    let p = Pinned::new(RenewalPolicy::Any);
    let (c1, c2) = (cert("c1"), cert("c2"));
    p.enroll("U", &c1).await;
    let before = p.last_seq().await;
    p.authenticate("U", &c2).await.unwrap();
    let log = p.identity_events(before).await;
    assert_eq!(log[0].data["evidence"], "renewal_policy_any");
    // Not a certificate another enrollment uses, nor a retired one.
    let v = cert("v");
    p.enroll("V", &v).await;
    let err = p.authenticate("U", &v).await.unwrap_err();
    assert!(
        matches!(err, MdmError::Identity(IdentityError::InUse(_))),
        "{err}"
    );
    refused(p.authenticate("U", &c1).await.unwrap_err());
    assert_eq!(p.pinned("U").await, Some(hash(&c2)));
}

#[tokio::test]
async fn later_messages_need_the_pinned_certificate_or_its_renewal() {
    let p = Pinned::new(RenewalPolicy::Linked);
    let (c1, renewed, stranger) = (cert("c1"), cert("renewed"), cert("stranger"));

    // Nothing before Authenticate.
    let err = p
        .pin
        .report(&device_request("U", &c1), &idle(&device_request("U", &c1)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, MdmError::Identity(IdentityError::UnknownEnrollment(id)) if id == "U"),
        "{err}"
    );
    p.enroll("U", &c1).await;
    let calls = p.inner.calls();

    // A stranger's certificate, on the device and on a user channel.
    for req in [
        device_request("U", &stranger),
        user_request("U", "U1", &stranger),
    ] {
        let err = p.pin.report(&req, &idle(&req)).await.unwrap_err();
        assert!(
            matches!(err, MdmError::Identity(IdentityError::Mismatch(_))),
            "{err}"
        );
    }
    // Another enrollment's certificate.
    let v = cert("v");
    p.enroll("V", &v).await;
    let calls_v = p.inner.calls();
    assert_eq!(calls_v, calls + 3, "only V's own messages got through");
    let req = device_request("U", &v);
    let err = p.pin.report(&req, &idle(&req)).await.unwrap_err();
    assert!(
        matches!(err, MdmError::Identity(IdentityError::Mismatch(_))),
        "{err}"
    );

    // A renewal of the pinned certificate is adopted, with `identity.renewed`.
    p.store
        .link_renewal(&hash(&c1), &hash(&renewed))
        .await
        .unwrap();
    let before = p.last_seq().await;
    let req = device_request("U", &renewed);
    let answer = p.pin.report(&req, &idle(&req)).await.unwrap();
    assert_eq!(answer.outcome, None::<ReportOutcome>);
    assert_eq!(p.pinned("U").await, Some(hash(&renewed)));
    let log = p.identity_events(before).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].kind, kind::IDENTITY_RENEWED);
    assert_eq!(log[0].data["previous"], hash(&c1).to_hex());
    assert_eq!(log[0].data["current"], hash(&renewed).to_hex());
    assert!(p.escrowed("U").await);

    // The old certificate is now retired: refused on every channel.
    let old = device_request("U", &c1);
    let err = p.pin.report(&old, &idle(&old)).await.unwrap_err();
    assert!(
        matches!(err, MdmError::Identity(IdentityError::Mismatch(_))),
        "{err}"
    );

    // No identity at all.
    let mut anonymous = device_request("U", &renewed);
    anonymous.identity = None;
    let err = p
        .pin
        .report(&anonymous, &idle(&anonymous))
        .await
        .unwrap_err();
    assert!(
        matches!(err, MdmError::Identity(IdentityError::Missing)),
        "{err}"
    );
    assert_eq!(p.inner.calls(), calls_v + 1, "only the renewal got through");
}

#[tokio::test]
async fn pinned_to_names_the_enrollment_or_says_retired() {
    let p = Pinned::new(RenewalPolicy::Linked);
    let (c1, c2) = (cert("c1"), cert("c2"));
    assert_eq!(
        p.admin.pinned_to(&hash(&c1)).await.unwrap(),
        PinnedTo::Nothing
    );
    p.enroll("U", &c1).await;
    assert_eq!(
        p.admin.pinned_to(&hash(&c1)).await.unwrap(),
        PinnedTo::Enrollment(EnrollmentId::new("U"))
    );
    p.store.link_renewal(&hash(&c1), &hash(&c2)).await.unwrap();
    p.authenticate("U", &c2).await.unwrap();
    assert_eq!(
        p.admin.pinned_to(&hash(&c1)).await.unwrap(),
        PinnedTo::Retired
    );
    assert_eq!(
        p.admin.pinned_to(&hash(&c2)).await.unwrap(),
        PinnedTo::Enrollment(EnrollmentId::new("U"))
    );
}

#[tokio::test]
async fn an_approval_is_logged_with_its_change() {
    let store = Arc::new(RedbStore::in_memory().unwrap());
    let outbox = Outbox::new(Arc::new(FailingAppends(store.clone())), 16);
    let mut live = outbox.subscribe();
    let service = IdentityService::new(store.clone(), store.clone(), outbox);
    let core = Core::new(
        store.clone(),
        store.clone(),
        store.clone(),
        store.clone(),
        Outbox::new(store.clone(), 16),
        SealKey::generate(),
        Arc::new(LastSeen::default()),
        CoreOptions::default(),
    );
    let req = device_request("UDID-APPROVED", &cert("c"));
    core.checkin(&req, &CheckinBody::Authenticate(Authenticate::default()))
        .await
        .unwrap();
    let device = req.channel.id.clone();
    let before = store.events_after(0, 100).await.unwrap().len();
    let now = time::OffsetDateTime::now_utc();
    service
        .approve_reenrollment(&device, None, now)
        .await
        .unwrap();

    // The approval and its event committed together, although the outbox cannot append.
    let log = store.events_after(0, 100).await.unwrap();
    assert_eq!(log.len(), before + 1, "events: {log:?}");
    let approved = log.last().unwrap();
    assert_eq!(approved.kind, kind::IDENTITY_REENROLL_APPROVED);
    assert_eq!(approved.enrollment_id.as_ref(), Some(&device));
    assert_eq!(live.try_recv().unwrap().seq, approved.seq);
    assert!(
        store
            .take_reenrollment_approval(&device, now)
            .await
            .unwrap()
    );
    // One-shot: taken once.
    assert!(
        !store
            .take_reenrollment_approval(&device, now)
            .await
            .unwrap()
    );
}
