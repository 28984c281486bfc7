use super::*;
use crate::ca::{CaOptions, CertificateAuthority};
use openssl::asn1::Asn1Time;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::X509Name;

fn key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

fn name(cn: &str) -> X509Name {
    let mut n = X509Name::builder().unwrap();
    n.append_entry_by_text("CN", cn).unwrap();
    n.build()
}

/// The requester's throw-away self-signed certificate.
fn self_signed(key: &PKey<Private>) -> X509 {
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = openssl::bn::BigNum::from_u32(4242)
        .unwrap()
        .to_asn1_integer()
        .unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name("scep-client")).unwrap();
    b.set_issuer_name(&name("scep-client")).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    b.sign(key, MessageDigest::sha256()).unwrap();
    b.build()
}

struct Client {
    key: PKey<Private>,
    cert: X509,
}

impl Client {
    fn new() -> Self {
        let key = key();
        let cert = self_signed(&key);
        Self { key, cert }
    }

    fn request(
        &self,
        ca: &CertificateAuthority,
        challenge: Option<&str>,
        cipher: ContentCipher,
        digest: Digest,
    ) -> Vec<u8> {
        let csr = build_csr(&self.key, &name("device"), challenge).unwrap();
        build_request(
            &csr,
            MessageType::PkcsReq,
            "TX-1",
            b"0123456789abcdef",
            &self.cert,
            &self.key,
            ca.certificate(),
            cipher,
            digest,
        )
        .unwrap()
    }
}

fn reply_cipher(rep: &CertRep) -> ContentCipher {
    envelope_cipher(&rep.message.content).unwrap()
}

#[test]
fn round_trip_with_every_cipher_and_digest() {
    let ca = CertificateAuthority::generate(&CaOptions::default()).unwrap();
    for cipher in [
        ContentCipher::DesCbc,
        ContentCipher::DesEde3Cbc,
        ContentCipher::Aes128Cbc,
        ContentCipher::Aes192Cbc,
        ContentCipher::Aes256Cbc,
    ] {
        for digest in [Digest::Sha1, Digest::Sha256] {
            let client = Client::new();
            let msg = client.request(&ca, Some("s3cret"), cipher, digest);
            let req = ScepRequest::parse(&msg).unwrap();
            assert_eq!(req.cipher, cipher);
            assert_eq!(req.message.digest, digest);
            assert_eq!(req.message.message_type, MessageType::PkcsReq);
            assert_eq!(req.message.transaction_id, "TX-1");
            assert_eq!(req.message.sender_nonce, b"0123456789abcdef");
            let csr = req.decrypt_csr(ca.certificate(), ca.private_key()).unwrap();
            assert_eq!(csr_challenge(&csr).as_deref(), Some("s3cret"));
            let issued = ca
                .issue_device_cert(&csr.public_key().unwrap(), csr.subject_name(), 30)
                .unwrap();
            let rep = build_cert_rep(
                &req,
                Outcome::Success(vec![&issued]),
                ca.certificate(),
                ca.private_key(),
            )
            .unwrap();
            let parsed = CertRep::parse(&rep, ca.certificate(), &client.cert, &client.key).unwrap();
            assert_eq!(
                parsed.message.pki_status.as_deref(),
                Some("0"),
                "{cipher:?}/{digest:?}"
            );
            assert_eq!(parsed.message.message_type, MessageType::CertRep);
            assert_eq!(parsed.message.transaction_id, "TX-1");
            assert_eq!(
                parsed.message.recipient_nonce.as_deref(),
                Some(&b"0123456789abcdef"[..])
            );
            assert_eq!(
                parsed.message.digest, digest,
                "the reply mirrors the client's digest"
            );
            assert_eq!(
                reply_cipher(&parsed),
                cipher,
                "the reply uses the client's own cipher"
            );
            assert_eq!(parsed.certificates.len(), 1);
            assert_eq!(
                parsed.certificates[0].to_der().unwrap(),
                issued.to_der().unwrap()
            );
        }
    }
}

#[test]
fn failure_reply_carries_fail_info() {
    let ca = CertificateAuthority::generate(&CaOptions::default()).unwrap();
    let client = Client::new();
    let req = ScepRequest::parse(&client.request(
        &ca,
        Some("wrong"),
        ContentCipher::Aes256Cbc,
        Digest::Sha256,
    ))
    .unwrap();
    let rep = build_cert_rep(
        &req,
        Outcome::Failure(FailInfo::BadRequest),
        ca.certificate(),
        ca.private_key(),
    )
    .unwrap();
    let parsed = CertRep::parse(&rep, ca.certificate(), &client.cert, &client.key).unwrap();
    assert_eq!(parsed.message.pki_status.as_deref(), Some("2"));
    assert_eq!(parsed.message.fail_info, Some(FailInfo::BadRequest));
    assert!(parsed.certificates.is_empty());
}

#[test]
fn reply_signed_by_another_ca_is_rejected_by_the_client() {
    let ca = CertificateAuthority::generate(&CaOptions::default()).unwrap();
    let other = CertificateAuthority::generate(&CaOptions::default()).unwrap();
    let client = Client::new();
    let req =
        ScepRequest::parse(&client.request(&ca, None, ContentCipher::Aes128Cbc, Digest::Sha256))
            .unwrap();
    let rep = build_cert_rep(
        &req,
        Outcome::Pending,
        other.certificate(),
        other.private_key(),
    )
    .unwrap();
    assert!(matches!(
        CertRep::parse(&rep, ca.certificate(), &client.cert, &client.key),
        Err(ScepError::BadSignature(_))
    ));
}

#[test]
fn tampered_and_garbage_requests_are_refused() {
    let ca = CertificateAuthority::generate(&CaOptions::default()).unwrap();
    let client = Client::new();
    let mut msg = client.request(&ca, Some("x"), ContentCipher::Aes256Cbc, Digest::Sha256);
    let mid = msg.len() / 2;
    msg[mid] ^= 0xff;
    assert!(ScepRequest::parse(&msg).is_err());
    assert!(matches!(
        ScepRequest::parse(b"junk"),
        Err(ScepError::Malformed(_))
    ));
}

#[test]
fn envelope_for_another_ca_cannot_be_decrypted() {
    let ca = CertificateAuthority::generate(&CaOptions::default()).unwrap();
    let other = CertificateAuthority::generate(&CaOptions::default()).unwrap();
    let client = Client::new();
    let req = ScepRequest::parse(&client.request(
        &other,
        Some("x"),
        ContentCipher::Aes256Cbc,
        Digest::Sha256,
    ))
    .unwrap();
    assert!(matches!(
        req.decrypt_csr(ca.certificate(), ca.private_key()),
        Err(ScepError::Decrypt(_))
    ));
}

#[test]
fn csr_signed_by_a_different_key_is_refused() {
    let ca = CertificateAuthority::generate(&CaOptions::default()).unwrap();
    let client = Client::new();
    // A CSR claiming one public key but signed with another.
    let (claimed, signing) = (key(), key());
    let mut b = openssl::x509::X509ReqBuilder::new().unwrap();
    b.set_subject_name(&name("device")).unwrap();
    b.set_pubkey(&claimed).unwrap();
    b.sign(&signing, MessageDigest::sha256()).unwrap();
    let csr = b.build();
    let msg = build_request(
        &csr,
        MessageType::PkcsReq,
        "T",
        b"n",
        &client.cert,
        &client.key,
        ca.certificate(),
        ContentCipher::Aes128Cbc,
        Digest::Sha256,
    )
    .unwrap();
    let req = ScepRequest::parse(&msg).unwrap();
    assert!(matches!(
        req.decrypt_csr(ca.certificate(), ca.private_key()),
        Err(ScepError::BadCsr(_))
    ));
}

#[test]
fn degenerate_certs_parse_with_openssl() {
    let ca = CertificateAuthority::generate(&CaOptions::default()).unwrap();
    let d = degenerate_certs(&[ca.certificate()]).unwrap();
    let p7 = Pkcs7::from_der(&d).unwrap();
    let certs = p7.signed().unwrap().certificates().unwrap();
    assert_eq!(certs.len(), 1);
}

#[test]
fn csr_challenge_encodings() {
    let k = key();
    let plain = build_csr(&k, &name("d"), Some("abc-123")).unwrap();
    assert_eq!(csr_challenge(&plain).as_deref(), Some("abc-123"));
    let utf8 = build_csr(&k, &name("d"), Some("pässword_!")).unwrap();
    assert_eq!(csr_challenge(&utf8).as_deref(), Some("pässword_!"));
    let none = build_csr(&k, &name("d"), None).unwrap();
    assert_eq!(csr_challenge(&none), None);
    assert!(none.verify(&k).unwrap());
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1024)) {
        let _ = ScepRequest::parse(&bytes);
        let _ = envelope_cipher(&bytes);
        let _ = signed_attributes(&bytes);
    }
}
