//! The check-in core writes each state change and its events in one transaction.

use std::sync::Arc;

use async_trait::async_trait;

use super::*;
use crate::events::{Outbox, kind};
use crate::store::redb::RedbStore;
use crate::store::{
    Event, EventStore, NewEvent, ReportOutcome, StoreError, StoreResult, Timestamp,
};
use crate::wire::checkin::{Authenticate, TokenUpdate};
use crate::wire::command::Command;
use crate::wire::enrollment_id::{ChannelKind, Identifiers};

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
