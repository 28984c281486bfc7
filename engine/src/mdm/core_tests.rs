use super::*;
use crate::store::redb::RedbStore;
use crate::wire::enrollment_id::{ChannelKind, Identifiers};

fn channel(udid: &str) -> Channel {
    Channel {
        id: EnrollmentId::new(udid),
        parent: None,
        kind: ChannelKind::Device,
    }
}

fn request(udid: &str) -> Request {
    Request {
        identifiers: Identifiers {
            udid: Some(udid.into()),
            ..Default::default()
        },
        channel: channel(udid),
        identity: None,
        raw: Vec::new(),
        received_at: time::OffsetDateTime::now_utc(),
    }
}

#[tokio::test]
async fn a_bootstrap_token_copied_to_another_enrollment_does_not_open() {
    let store = Arc::new(RedbStore::in_memory().unwrap());
    let core = Core::new(
        store.clone(),
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
    let v = plist::Value::from_reader(std::io::Cursor::new(&body)).unwrap();
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
        .store_bootstrap_token(&EnrollmentId::new("B"), Some(sealed))
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
