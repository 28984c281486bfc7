use super::*;
use crate::ca::CaOptions;
use crate::store::redb::RedbStore;
use crate::wire::scep::{
    CertRep, ContentCipher, Digest, build_csr, build_request, self_signed_requester,
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
