//! `Core` called directly, without HTTP: every check-in message type and command report, with
//! each state change and its events written in one transaction.

use std::sync::Arc;

use async_trait::async_trait;
use openssl::x509::X509;

use super::*;
use crate::events::{Outbox, kind};
use crate::mdm::testing::{cert, device_request, user_request};
use crate::store::redb::RedbStore;
use crate::store::{
    BindingSource, CertBinding, Event, EventStore, IdentityStore, NewEvent, QueueStore,
    ReportOutcome, StoreError, StoreResult, TargetState, Timestamp,
};
use crate::wire::checkin::{Authenticate, DeclarativeManagement, TokenUpdate, UserAuthenticate};
use crate::wire::command::Command;
use crate::wire::enrollment_id::{ChannelKind, Identifiers};
use crate::wire::report::ErrorChainItem;

/// An event log whose separate appends always fail (a full disk, a crash between two writes):
/// only events written inside the state change's own transaction can survive it.
struct FailingAppends;

#[async_trait]
impl EventStore for FailingAppends {
    async fn append_events(&self, _: Vec<NewEvent>, _: Timestamp) -> StoreResult<Vec<Event>> {
        Err(StoreError::backend(
            "append events",
            "injected: event append failed",
        ))
    }
    async fn events_after(&self, _: u64, _: usize) -> StoreResult<Vec<Event>> {
        Ok(Vec::new())
    }
    async fn prune_events(&self, _: Timestamp) -> StoreResult<u64> {
        Ok(0)
    }
}

fn request(udid: &str) -> Request {
    Request {
        identifiers: Identifiers {
            udid: Some(udid.into()),
            ..Default::default()
        },
        channel: Channel {
            id: EnrollmentId::new(udid),
            parent: None,
            kind: ChannelKind::Device,
        },
        // The core trusts the chain's earlier layers; escrow records which certificate it is.
        identity: Some(super::super::Identity::new(
            openssl::x509::X509::from_pem(include_bytes!("../wire/fixtures/device-cert.pem"))
                .expect("fixture certificate"),
            super::super::IdentitySource::Embedder,
        )),
        raw: b"<plist/>".to_vec(),
        received_at: time::OffsetDateTime::now_utc(),
    }
}

fn kinds(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_separate_append_cannot_separate_state_from_its_events() {
    let store = Arc::new(RedbStore::in_memory().unwrap());
    let outbox = Outbox::new(Arc::new(FailingAppends), 64);
    let mut live = outbox.subscribe();
    let core = Core::new(
        store.clone(),
        store.clone(),
        store.clone(),
        store.clone(),
        outbox,
        SealKey::generate(),
        Arc::new(LastSeen::default()),
        CoreOptions::default(),
    );
    let req = request("TX-1");
    let auth = Authenticate {
        topic: "com.apple.mgmt.External.t".into(),
        serial_number: Some("SN-TX-1".into()),
        ..Default::default()
    };
    core.checkin(&req, &CheckinBody::Authenticate(auth))
        .await
        .unwrap();
    let token = TokenUpdate {
        token: vec![1; 32],
        push_magic: "m".into(),
        topic: "com.apple.mgmt.External.t".into(),
        awaiting_configuration: true,
        ..Default::default()
    };
    core.checkin(&req, &CheckinBody::TokenUpdate(token))
        .await
        .unwrap();

    // The TokenUpdate committed (tally 1) and so did enrollment.completed, in the same log.
    let e = store.enrollment(&req.channel.id).await.unwrap().unwrap();
    assert_eq!(e.token_update_tally, 1);
    let log = store.events_after(0, 100).await.unwrap();
    assert_eq!(
        kinds(&log),
        [
            kind::ENROLLMENT_AUTHENTICATED,
            kind::ENROLLMENT_TOKEN_UPDATED,
            kind::ENROLLMENT_COMPLETED
        ]
    );
    let completed = &log[2];
    assert_eq!(completed.enrollment_id.as_ref(), Some(&req.channel.id));
    assert_eq!(completed.data["tally"], 1);
    assert_eq!(completed.data["awaiting_configuration"], true);

    // A command's enqueue, its result and the report's state change travel together too.
    let cmd = Command::build("CMD-TX-1", "ProfileList", plist::Dictionary::new());
    store
        .enqueue(
            &cmd,
            std::slice::from_ref(&req.channel.id),
            10,
            req.received_at,
        )
        .await
        .unwrap();
    let report = CommandReport {
        identifiers: req.identifiers.clone(),
        channel: req.channel.clone(),
        status: Status::Acknowledged,
        command_uuid: Some(cmd.uuid.clone()),
        error_chain: Vec::new(),
    };
    let answer = core.report(&req, &report).await.unwrap();
    assert_eq!(
        answer.outcome,
        Some(ReportOutcome::Recorded {
            command_finished: true
        })
    );
    let log = store.events_after(3, 100).await.unwrap();
    assert_eq!(kinds(&log), [kind::COMMAND_RESULT]);
    assert_eq!(log[0].data["command_uuid"], cmd.uuid.as_str());

    // Live subscribers got the committed events, with their sequence numbers.
    let mut seen = Vec::new();
    while let Ok(e) = live.try_recv() {
        seen.push(e.seq);
    }
    assert_eq!(seen, [1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_out_and_bootstrap_tokens_are_logged_with_their_change() {
    let store = Arc::new(RedbStore::in_memory().unwrap());
    let core = Core::new(
        store.clone(),
        store.clone(),
        store.clone(),
        store.clone(),
        Outbox::new(Arc::new(FailingAppends), 64),
        SealKey::generate(),
        Arc::new(LastSeen::default()),
        CoreOptions::default(),
    );
    let req = request("TX-2");
    core.checkin(&req, &CheckinBody::Authenticate(Authenticate::default()))
        .await
        .unwrap();
    core.checkin(&req, &CheckinBody::SetBootstrapToken(Some(b"bt".to_vec())))
        .await
        .unwrap();
    core.checkin(&req, &CheckinBody::CheckOut).await.unwrap();
    let log = store.events_after(0, 100).await.unwrap();
    assert_eq!(
        kinds(&log),
        [
            kind::ENROLLMENT_AUTHENTICATED,
            kind::BOOTSTRAP_TOKEN_STORED,
            kind::ENROLLMENT_CHECKED_OUT
        ]
    );
    // Handing out an escrowed token is audited first: with no log, no token.
    let err = core
        .checkin(&req, &CheckinBody::GetBootstrapToken)
        .await
        .unwrap_err();
    assert!(matches!(err, MdmError::Store(_)), "{err}");
}

#[tokio::test]
async fn a_bootstrap_token_copied_to_another_enrollment_does_not_open() {
    let store = Arc::new(RedbStore::in_memory().unwrap());
    let core = Core::new(
        store.clone(),
        store.clone(),
        store.clone(),
        store.clone(),
        Outbox::new(store.clone(), 64),
        SealKey::generate(),
        Arc::new(LastSeen::default()),
        CoreOptions::default(),
    );
    core.checkin(
        &request("A"),
        &CheckinBody::SetBootstrapToken(Some(b"token-of-A".to_vec())),
    )
    .await
    .unwrap();
    let got = core
        .checkin(&request("A"), &CheckinBody::GetBootstrapToken)
        .await
        .unwrap();
    let CheckinResponse::Plist(body) = got else {
        panic!("A gets its token back: {got:?}")
    };
    let v = crate::wire::bounded_plist::decode(&body, &Default::default()).unwrap();
    assert_eq!(
        v.as_dictionary().unwrap()["BootstrapToken"].as_data(),
        Some(&b"token-of-A"[..])
    );
    // Someone with write access to the database copies A's sealed token into B's row.
    let sealed = store
        .bootstrap_token(&EnrollmentId::new("A"))
        .await
        .unwrap()
        .unwrap();
    store
        .store_bootstrap_token(&EnrollmentId::new("B"), Some(sealed), Emit::none())
        .await
        .unwrap();
    let copied = core
        .checkin(&request("B"), &CheckinBody::GetBootstrapToken)
        .await;
    assert!(
        matches!(copied, Err(MdmError::Seal(_))),
        "A's token opened in B's record: {copied:?}"
    );
}

// --- Each message type, called directly on `Core` over an in-memory store. ---

/// A core over a fresh store whose events go to that store.
fn fresh(options: CoreOptions) -> (Arc<RedbStore>, Core, SealKey, Arc<LastSeen>) {
    let store = Arc::new(RedbStore::in_memory().unwrap());
    let seal = SealKey::generate();
    let last_seen = Arc::new(LastSeen::default());
    let core = Core::new(
        store.clone(),
        store.clone(),
        store.clone(),
        store.clone(),
        Outbox::new(store.clone(), 64),
        seal.clone(),
        last_seen.clone(),
        options,
    );
    (store, core, seal, last_seen)
}

fn authenticate(serial: &str) -> CheckinBody {
    CheckinBody::Authenticate(Authenticate {
        topic: "com.apple.mgmt.External.t".into(),
        serial_number: Some(serial.into()),
        model: Some("Mac14,2".into()),
        ..Default::default()
    })
}

fn token_update(token: u8) -> CheckinBody {
    CheckinBody::TokenUpdate(TokenUpdate {
        token: vec![token; 32],
        push_magic: format!("magic-{token}"),
        topic: "com.apple.mgmt.External.t".into(),
        ..Default::default()
    })
}

async fn log_after(store: &RedbStore, after: u64) -> Vec<Event> {
    store.events_after(after, 1000).await.unwrap()
}

async fn last_seq(store: &RedbStore) -> u64 {
    log_after(store, 0).await.last().map_or(0, |e| e.seq)
}

/// Authenticate then TokenUpdate: an enabled device channel.
async fn enrolled(core: &Core, udid: &str, cert: &X509) -> Request {
    let req = device_request(udid, cert);
    core.checkin(&req, &authenticate(&format!("SN-{udid}")))
        .await
        .unwrap();
    core.checkin(&req, &token_update(1)).await.unwrap();
    req
}

fn plist_dict(response: CheckinResponse) -> plist::Dictionary {
    let CheckinResponse::Plist(body) = response else {
        panic!("expected a plist, got {response:?}")
    };
    crate::wire::bounded_plist::decode(&body, &Default::default())
        .unwrap()
        .into_dictionary()
        .unwrap()
}

#[tokio::test]
async fn authenticate_records_facts_and_says_whether_the_serial_is_verified() {
    let (store, core, _, last_seen) = fresh(CoreOptions::default());
    let c = cert("A");
    let req = device_request("UDID-A", &c);
    let answer = core.checkin(&req, &authenticate("SN-SAID")).await.unwrap();
    assert_eq!(answer, CheckinResponse::Empty);
    let e = store.enrollment(&req.channel.id).await.unwrap().unwrap();
    assert!(!e.enabled, "enabled only by TokenUpdate");
    assert_eq!(e.device.serial_number.as_deref(), Some("SN-SAID"));
    assert_eq!(e.topic.as_deref(), Some("com.apple.mgmt.External.t"));
    let log = log_after(&store, 0).await;
    assert_eq!(kinds(&log), [kind::ENROLLMENT_AUTHENTICATED]);
    assert_eq!(log[0].data["serial_evidence"], "self_asserted");
    assert_eq!(log[0].data["serial_number"], "SN-SAID");
    assert_eq!(
        log[0].data["verified_serial_number"],
        serde_json::Value::Null
    );
    assert_eq!(log[0].data["udid"], "UDID-A");
    // Every message counts as a sighting.
    assert_eq!(last_seen.flush(&*store).await.unwrap(), 1);

    // A certificate bound to this UDID by verified MachineInfo makes its serial verified.
    let bound = cert("bound");
    let hash = super::super::Identity::new(bound.clone(), super::super::IdentitySource::Tls).hash;
    store
        .bind_cert(
            &hash,
            &CertBinding {
                udid: "UDID-B".into(),
                serial: "SN-REAL".into(),
                source: BindingSource::MachineInfo,
            },
        )
        .await
        .unwrap();
    let before = last_seq(&store).await;
    core.checkin(&device_request("UDID-B", &bound), &authenticate("SN-SAID"))
        .await
        .unwrap();
    let log = log_after(&store, before).await;
    assert_eq!(log[0].data["serial_evidence"], "machine_info");
    assert_eq!(log[0].data["verified_serial_number"], "SN-REAL");
    // Bound to another UDID: not evidence for this one.
    let before = last_seq(&store).await;
    core.checkin(&device_request("UDID-C", &bound), &authenticate("SN-REAL"))
        .await
        .unwrap();
    let log = log_after(&store, before).await;
    assert_eq!(log[0].data["serial_evidence"], "self_asserted");

    // Only a device channel authenticates.
    let err = core
        .checkin(&user_request("UDID-A", "U1", &c), &authenticate("SN"))
        .await
        .unwrap_err();
    assert!(matches!(err, MdmError::BadRequest(_)), "{err}");
}

#[tokio::test]
async fn re_authenticate_disables_the_enrollment_and_clears_every_queue() {
    let (store, core, _, _) = fresh(CoreOptions::default());
    let c = cert("A");
    let req = enrolled(&core, "UDID-A", &c).await;
    let user = user_request("UDID-A", "U1", &c);
    core.checkin(&user, &token_update(2)).await.unwrap();
    let ids = [req.channel.id.clone(), user.channel.id.clone()];
    for (i, id) in ids.iter().enumerate() {
        let cmd = Command::build(format!("CMD-{i}"), "ProfileList", plist::Dictionary::new());
        store
            .enqueue(&cmd, std::slice::from_ref(id), 10, req.received_at)
            .await
            .unwrap();
    }

    core.checkin(&req, &authenticate("SN-A")).await.unwrap();

    for id in &ids {
        let e = store.enrollment(id).await.unwrap().unwrap();
        assert!(!e.enabled, "{id} still enabled");
        assert!(store.queue(id).await.unwrap().is_empty(), "{id} queue kept");
    }
    let record = store.command("CMD-1").await.unwrap().unwrap();
    assert_eq!(record.targets[0].state, TargetState::Cancelled);
    // Only the new Authenticate is logged: disabling and clearing are part of it.
    let log = log_after(&store, 0).await;
    assert_eq!(
        kinds(&log),
        [
            kind::ENROLLMENT_AUTHENTICATED,
            kind::ENROLLMENT_TOKEN_UPDATED,
            kind::ENROLLMENT_COMPLETED,
            kind::ENROLLMENT_TOKEN_UPDATED,
            kind::ENROLLMENT_COMPLETED,
            kind::ENROLLMENT_AUTHENTICATED,
        ]
    );
}

#[tokio::test]
async fn token_updates_count_seal_the_unlock_token_and_complete_once() {
    let (store, core, seal, _) = fresh(CoreOptions::default());
    let c = cert("A");
    let req = device_request("UDID-A", &c);
    core.checkin(&req, &authenticate("SN-A")).await.unwrap();
    let first = TokenUpdate {
        unlock_token: Some(b"unlock-secret".to_vec()),
        awaiting_configuration: true,
        ..match token_update(1) {
            CheckinBody::TokenUpdate(t) => t,
            _ => unreachable!(),
        }
    };
    core.checkin(&req, &CheckinBody::TokenUpdate(first))
        .await
        .unwrap();
    core.checkin(&req, &token_update(2)).await.unwrap();

    let e = store.enrollment(&req.channel.id).await.unwrap().unwrap();
    assert!(e.enabled);
    assert_eq!(e.token_update_tally, 2);
    assert!(!e.awaiting_configuration, "the latest TokenUpdate counts");
    assert_eq!(e.push.as_ref().unwrap().token, hex::encode([2u8; 32]));
    assert_eq!(e.push.as_ref().unwrap().push_magic, "magic-2");
    let sealed = e.unlock_token_sealed.expect("unlock token kept");
    assert!(!sealed.windows(13).any(|w| w == b"unlock-secret"));
    assert_eq!(
        seal.unseal(&crate::seal::context::unlock_token("UDID-A"), &sealed)
            .unwrap(),
        b"unlock-secret"
    );
    let log = log_after(&store, 0).await;
    assert_eq!(
        kinds(&log),
        [
            kind::ENROLLMENT_AUTHENTICATED,
            kind::ENROLLMENT_TOKEN_UPDATED,
            kind::ENROLLMENT_COMPLETED,
            kind::ENROLLMENT_TOKEN_UPDATED,
        ]
    );
    assert_eq!(log[1].data["kind"], "device");
    assert_eq!(log[3].data["tally"], 2);
}

#[tokio::test]
async fn a_user_channel_token_update_creates_the_user_channel() {
    let (store, core, _, _) = fresh(CoreOptions::default());
    let c = cert("A");
    let device = enrolled(&core, "UDID-A", &c).await;
    let before = last_seq(&store).await;
    let user = user_request("UDID-A", "U1", &c);
    assert_eq!(
        core.checkin(&user, &token_update(7)).await.unwrap(),
        CheckinResponse::Empty
    );

    let e = store.enrollment(&user.channel.id).await.unwrap().unwrap();
    assert_eq!(e.kind, ChannelKind::User);
    assert_eq!(e.parent.as_ref(), Some(&device.channel.id));
    assert!(e.enabled);
    assert_eq!(e.user_short_name.as_deref(), Some("U1-short"));
    assert_eq!(e.user_long_name.as_deref(), Some("U1 Long"));
    assert_eq!(
        store.user_channels(&device.channel.id).await.unwrap(),
        std::slice::from_ref(&user.channel.id)
    );
    let log = log_after(&store, before).await;
    assert_eq!(
        kinds(&log),
        [kind::ENROLLMENT_TOKEN_UPDATED, kind::ENROLLMENT_COMPLETED]
    );
    assert_eq!(log[0].enrollment_id.as_ref(), Some(&user.channel.id));
    assert_eq!(log[0].data["kind"], "user");
    assert_eq!(log[0].data["parent"], "UDID-A");
}

#[tokio::test]
async fn check_out_disables_the_device_and_its_user_channels() {
    let (store, core, _, _) = fresh(CoreOptions::default());
    let c = cert("A");
    let device = enrolled(&core, "UDID-A", &c).await;
    let user = user_request("UDID-A", "U1", &c);
    core.checkin(&user, &token_update(2)).await.unwrap();
    let before = last_seq(&store).await;

    assert_eq!(
        core.checkin(&device, &CheckinBody::CheckOut).await.unwrap(),
        CheckinResponse::Empty
    );

    for id in [&device.channel.id, &user.channel.id] {
        let e = store.enrollment(id).await.unwrap().unwrap();
        assert!(!e.enabled && e.disabled_at.is_some(), "{id}");
    }
    let log = log_after(&store, before).await;
    assert_eq!(kinds(&log), [kind::ENROLLMENT_CHECKED_OUT]);
    assert_eq!(log[0].enrollment_id.as_ref(), Some(&device.channel.id));
}

#[tokio::test]
async fn user_authenticate_follows_the_policy_and_writes_nothing() {
    let with_digest = CheckinBody::UserAuthenticate(UserAuthenticate {
        digest_response: Some("response".into()),
    });
    let without = CheckinBody::UserAuthenticate(UserAuthenticate::default());

    let (store, core, _, _) = fresh(CoreOptions::default());
    let user = user_request("UDID-A", "U1", &cert("A"));
    for body in [&without, &with_digest] {
        let err = core.checkin(&user, body).await.unwrap_err();
        assert!(matches!(err, MdmError::Declined), "{err}");
    }
    assert!(log_after(&store, 0).await.is_empty());

    let (store, core, _, _) = fresh(CoreOptions {
        user_authenticate: UserAuthenticatePolicy::Accept,
        ..Default::default()
    });
    let challenge = plist_dict(core.checkin(&user, &without).await.unwrap());
    assert_eq!(challenge["DigestChallenge"].as_string(), Some(""));
    assert_eq!(challenge.len(), 1);
    assert_eq!(
        core.checkin(&user, &with_digest).await.unwrap(),
        CheckinResponse::Empty
    );
    assert!(log_after(&store, 0).await.is_empty());
    assert!(store.enrollment(&user.channel.id).await.unwrap().is_none());
}

#[tokio::test]
async fn bootstrap_tokens_are_escrowed_for_the_certificate_that_set_them() {
    let (store, core, _, _) = fresh(CoreOptions::default());
    let holder = cert("holder");
    let req = enrolled(&core, "UDID-A", &holder).await;
    // Nothing escrowed yet: an empty answer, still audited.
    let before = last_seq(&store).await;
    assert_eq!(
        core.checkin(&req, &CheckinBody::GetBootstrapToken)
            .await
            .unwrap(),
        CheckinResponse::Empty
    );
    assert_eq!(
        kinds(&log_after(&store, before).await),
        [kind::BOOTSTRAP_TOKEN_RETRIEVED]
    );

    core.checkin(
        &req,
        &CheckinBody::SetBootstrapToken(Some(b"bt-1".to_vec())),
    )
    .await
    .unwrap();
    let sealed = store
        .bootstrap_token(&req.channel.id)
        .await
        .unwrap()
        .unwrap();
    assert!(!sealed.windows(4).any(|w| w == b"bt-1"), "stored sealed");
    let got = plist_dict(
        core.checkin(&req, &CheckinBody::GetBootstrapToken)
            .await
            .unwrap(),
    );
    assert_eq!(got["BootstrapToken"].as_data(), Some(&b"bt-1"[..]));

    // Another certificate on the same enrollment gets nothing, and nothing is logged.
    let stranger = device_request("UDID-A", &cert("stranger"));
    let before = last_seq(&store).await;
    let err = core
        .checkin(&stranger, &CheckinBody::GetBootstrapToken)
        .await
        .unwrap_err();
    assert!(
        matches!(err, MdmError::Identity(IdentityError::NotEscrowHolder(_))),
        "{err}"
    );
    assert!(log_after(&store, before).await.is_empty());

    // A SCEP renewal of the holder's certificate inherits the escrow.
    let renewed = cert("renewed");
    let hash =
        |c: &X509| super::super::Identity::new(c.clone(), super::super::IdentitySource::Tls).hash;
    store
        .link_renewal(&hash(&holder), &hash(&renewed))
        .await
        .unwrap();
    let got = plist_dict(
        core.checkin(
            &device_request("UDID-A", &renewed),
            &CheckinBody::GetBootstrapToken,
        )
        .await
        .unwrap(),
    );
    assert_eq!(got["BootstrapToken"].as_data(), Some(&b"bt-1"[..]));

    // The device clears it.
    let before = last_seq(&store).await;
    core.checkin(&req, &CheckinBody::SetBootstrapToken(None))
        .await
        .unwrap();
    let log = log_after(&store, before).await;
    assert_eq!(kinds(&log), [kind::BOOTSTRAP_TOKEN_STORED]);
    assert_eq!(log[0].data["cleared"], true);
    assert_eq!(
        core.checkin(&req, &CheckinBody::GetBootstrapToken)
            .await
            .unwrap(),
        CheckinResponse::Empty
    );
}

#[tokio::test]
async fn bootstrap_tokens_need_a_device_channel_and_an_identity() {
    let (store, core, _, _) = fresh(CoreOptions::default());
    let c = cert("A");
    let user = user_request("UDID-A", "U1", &c);
    for body in [
        CheckinBody::SetBootstrapToken(Some(b"bt".to_vec())),
        CheckinBody::GetBootstrapToken,
    ] {
        let err = core.checkin(&user, &body).await.unwrap_err();
        assert!(matches!(err, MdmError::BadRequest(_)), "{err}");
        let mut anonymous = device_request("UDID-A", &c);
        anonymous.identity = None;
        let err = core.checkin(&anonymous, &body).await.unwrap_err();
        assert!(
            matches!(err, MdmError::Identity(IdentityError::Missing)),
            "{err}"
        );
    }
    assert!(log_after(&store, 0).await.is_empty());
    assert!(
        store
            .bootstrap_token(&EnrollmentId::new("UDID-A"))
            .await
            .unwrap()
            .is_none()
    );
}

/// A token service answering with the channel and the parameters it was given.
struct EchoTokens;

#[async_trait]
impl TokenService for EchoTokens {
    async fn token(&self, channel: &Channel, request: &GetToken) -> Result<Vec<u8>, MdmError> {
        let params = request
            .token_parameters
            .as_ref()
            .and_then(|p| p.get("Audience"))
            .and_then(|v| v.as_string())
            .unwrap_or("none");
        Ok(format!("{}|{}|{params}", channel.id, request.token_service_type).into_bytes())
    }
}

#[tokio::test]
async fn get_token_asks_the_service_registered_for_the_type() {
    let mut options = CoreOptions::default();
    options
        .token_services
        .insert("com.apple.maid".into(), Arc::new(EchoTokens));
    let (store, core, _, _) = fresh(options);
    let req = device_request("UDID-A", &cert("A"));
    let mut params = plist::Dictionary::new();
    params.insert("Audience".into(), "org".into());
    let got = plist_dict(
        core.checkin(
            &req,
            &CheckinBody::GetToken(GetToken {
                token_service_type: "com.apple.maid".into(),
                token_parameters: Some(params),
            }),
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        got["TokenData"].as_data(),
        Some(&b"UDID-A|com.apple.maid|org"[..])
    );

    let err = core
        .checkin(
            &req,
            &CheckinBody::GetToken(GetToken {
                token_service_type: "com.example.other".into(),
                token_parameters: None,
            }),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, MdmError::BadRequest(m) if m.contains("com.example.other")),
        "{err}"
    );
    assert!(log_after(&store, 0).await.is_empty());
}

#[tokio::test]
async fn declarative_management_answers_an_empty_declaration_set() {
    let (store, core, _, _) = fresh(CoreOptions::default());
    let req = device_request("UDID-A", &cert("A"));
    let ddm = |endpoint: &str| {
        CheckinBody::DeclarativeManagement(DeclarativeManagement {
            endpoint: endpoint.into(),
            data: None,
        })
    };
    let json = |r: CheckinResponse| match r {
        CheckinResponse::Json(b) => serde_json::from_slice::<serde_json::Value>(&b).unwrap(),
        other => panic!("expected JSON, got {other:?}"),
    };
    let tokens = json(core.checkin(&req, &ddm("tokens")).await.unwrap());
    assert_eq!(
        tokens["SyncTokens"]["DeclarationsToken"],
        declarative::EMPTY_DECLARATIONS_TOKEN
    );
    let items = json(core.checkin(&req, &ddm("declaration-items")).await.unwrap());
    assert_eq!(
        items["DeclarationsToken"],
        declarative::EMPTY_DECLARATIONS_TOKEN
    );
    assert_eq!(
        items["Declarations"]["Configurations"],
        serde_json::json!([])
    );
    assert_eq!(
        core.checkin(&req, &ddm("status")).await.unwrap(),
        CheckinResponse::Empty
    );
    let err = core
        .checkin(&req, &ddm("declaration/configuration/x"))
        .await
        .unwrap_err();
    assert!(matches!(err, MdmError::NotFound(_)), "{err}");
    let err = core.checkin(&req, &ddm("bogus")).await.unwrap_err();
    assert!(matches!(err, MdmError::BadRequest(_)), "{err}");
    assert!(log_after(&store, 0).await.is_empty());
}

#[tokio::test]
async fn return_to_service_is_declined() {
    let (store, core, _, _) = fresh(CoreOptions::default());
    let req = device_request("UDID-A", &cert("A"));
    let got = plist_dict(
        core.checkin(&req, &CheckinBody::ReturnToService)
            .await
            .unwrap(),
    );
    let rts = got["ReturnToService"].as_dictionary().unwrap();
    assert_eq!(rts["Enabled"].as_boolean(), Some(false));
    assert!(log_after(&store, 0).await.is_empty());
}

fn report(req: &Request, status: Status, uuid: Option<&str>) -> CommandReport {
    CommandReport {
        identifiers: req.identifiers.clone(),
        channel: req.channel.clone(),
        status,
        command_uuid: uuid.map(str::to_owned),
        error_chain: Vec::new(),
    }
}

fn next_uuid(r: &ReportResponse) -> Option<&str> {
    r.next.as_ref().map(|c| c.uuid.as_str())
}

#[tokio::test]
async fn reports_record_results_and_hand_out_the_next_command() {
    let (store, core, _, last_seen) = fresh(CoreOptions::default());
    let req = enrolled(&core, "UDID-A", &cert("A")).await;
    last_seen.flush(&*store).await.unwrap();
    for uuid in ["C1", "C2", "C3"] {
        let cmd = Command::build(uuid, "ProfileList", plist::Dictionary::new());
        store
            .enqueue(
                &cmd,
                std::slice::from_ref(&req.channel.id),
                10,
                req.received_at,
            )
            .await
            .unwrap();
    }
    let before = last_seq(&store).await;
    let recorded = |finished| {
        Some(ReportOutcome::Recorded {
            command_finished: finished,
        })
    };

    // Idle: the oldest command, nothing recorded.
    let r = core
        .report(&req, &report(&req, Status::Idle, None))
        .await
        .unwrap();
    assert_eq!((r.outcome, next_uuid(&r)), (None, Some("C1")));
    assert!(log_after(&store, before).await.is_empty());
    assert_eq!(
        last_seen.flush(&*store).await.unwrap(),
        1,
        "a report is a sighting"
    );

    // Acknowledged: recorded and dequeued; the next one.
    let r = core
        .report(&req, &report(&req, Status::Acknowledged, Some("C1")))
        .await
        .unwrap();
    assert_eq!((r.outcome, next_uuid(&r)), (recorded(true), Some("C2")));

    // NotNow: still queued, but not handed out again before the next Idle.
    let r = core
        .report(&req, &report(&req, Status::NotNow, Some("C2")))
        .await
        .unwrap();
    assert_eq!((r.outcome, next_uuid(&r)), (recorded(false), Some("C3")));

    // Error: recorded with its chain; C2 is still deferred, so nothing is left for now.
    let mut error = report(&req, Status::Error, Some("C3"));
    error.error_chain = vec![ErrorChainItem {
        code: Some(12021),
        domain: Some("MCMDMErrorDomain".into()),
        ..Default::default()
    }];
    let r = core.report(&req, &error).await.unwrap();
    assert_eq!((r.outcome, next_uuid(&r)), (recorded(true), None));

    // The next Idle hands the deferred command out again.
    let r = core
        .report(&req, &report(&req, Status::Idle, None))
        .await
        .unwrap();
    assert_eq!(next_uuid(&r), Some("C2"));
    assert!(!r.next.unwrap().not_now, "NotNow flags reset by Idle");

    let states = |uuid: &'static str| {
        let store = store.clone();
        async move { store.command(uuid).await.unwrap().unwrap().targets[0].state }
    };
    assert_eq!(states("C1").await, TargetState::Acknowledged);
    assert_eq!(
        states("C2").await,
        TargetState::NotNow,
        "deferred, still queued"
    );
    assert_eq!(states("C3").await, TargetState::Error);
    let log = log_after(&store, before).await;
    assert_eq!(
        kinds(&log),
        [
            kind::COMMAND_RESULT,
            kind::COMMAND_NOT_NOW,
            kind::COMMAND_RESULT
        ]
    );
    assert_eq!(log[0].data["status"], "Acknowledged");
    assert_eq!(log[0].data["command_finished"], true);
    assert_eq!(log[1].data["command_uuid"], "C2");
    assert_eq!(log[2].data["status"], "Error");
    assert_eq!(log[2].data["error_chain"].as_array().unwrap().len(), 1);
    assert!(
        log.iter()
            .all(|e| e.enrollment_id.as_ref() == Some(&req.channel.id))
    );
}

#[tokio::test]
async fn a_report_for_a_command_not_queued_changes_nothing_but_is_logged() {
    let (store, core, _, _) = fresh(CoreOptions::default());
    let req = enrolled(&core, "UDID-A", &cert("A")).await;
    let other = enrolled(&core, "UDID-B", &cert("B")).await;
    let cmd = Command::build("C1", "ProfileList", plist::Dictionary::new());
    store
        .enqueue(
            &cmd,
            std::slice::from_ref(&other.channel.id),
            10,
            req.received_at,
        )
        .await
        .unwrap();
    let before = last_seq(&store).await;

    // Unknown to everyone, and queued for another enrollment only.
    for uuid in ["NOPE", "C1"] {
        let r = core
            .report(&req, &report(&req, Status::Acknowledged, Some(uuid)))
            .await
            .unwrap();
        assert_eq!(r.outcome, Some(ReportOutcome::NotQueued), "{uuid}");
        assert_eq!(r.next, None);
    }

    assert_eq!(
        store.queue(&other.channel.id).await.unwrap().len(),
        1,
        "B's command untouched"
    );
    let c1 = store.command("C1").await.unwrap().unwrap();
    assert_eq!(c1.targets[0].state, TargetState::Pending);
    assert!(store.command("NOPE").await.unwrap().is_none());
    let log = log_after(&store, before).await;
    assert_eq!(
        kinds(&log),
        [
            kind::COMMAND_REPORT_UNMATCHED,
            kind::COMMAND_REPORT_UNMATCHED
        ]
    );
    assert_eq!(log[0].data["command_uuid"], "NOPE");
    assert_eq!(log[0].data["status"], "Acknowledged");
    assert_eq!(log[1].enrollment_id.as_ref(), Some(&req.channel.id));

    // A non-Idle report must name its command.
    let err = core
        .report(&req, &report(&req, Status::Acknowledged, None))
        .await
        .unwrap_err();
    assert!(matches!(err, MdmError::BadRequest(_)), "{err}");
}
