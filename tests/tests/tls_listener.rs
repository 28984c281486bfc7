//! Device identity over mutual TLS on Pomona's own HTTPS listener.

use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509, X509Name};
use pomona::Engine;
use pomona_testkit::device::{Device, DeviceIdentity, Transport};

fn server_cert() -> (Vec<u8>, Vec<u8>) {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_text("CN", "127.0.0.1").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (
        b.build().to_pem().unwrap(),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
}

#[tokio::test]
async fn devices_authenticate_with_tls_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = server_cert();
    let (cert_file, key_file) = (dir.path().join("tls.pem"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, &cert_pem).unwrap();
    std::fs::write(&key_file, &key_pem).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let engine = Engine::builder().public_url(&url).build().await.unwrap();
    let tls = pomona::http::server::tls_acceptor(&cert_file, &key_file).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(pomona::http::server::serve(
        listener,
        pomona::http::Routes::new(&engine, pomona::http::HttpOptions::new()).router(),
        Some(tls),
        async {
            let _ = stopped.await;
        },
    ));

    let identity = DeviceIdentity::issue(engine.ca(), "tls-device").unwrap();
    let client_identity = reqwest::Identity::from_pkcs8_pem(
        &identity.cert.to_pem().unwrap(),
        &identity.key.private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&cert_pem).unwrap())
        .identity(client_identity)
        .build()
        .unwrap();
    let mut dev = Device::new(identity, &url, client);
    dev.transport = Transport::Anonymous; // no Mdm-Signature: the TLS certificate is the identity
    dev.enroll().await.unwrap();
    assert!(dev.idle().await.unwrap().is_none());

    // Without a client certificate the device endpoints refuse (400), the ops endpoints work.
    let anonymous = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&cert_pem).unwrap())
        .build()
        .unwrap();
    let mut stranger = Device::new(
        DeviceIdentity::issue(engine.ca(), "other").unwrap(),
        &url,
        anonymous.clone(),
    );
    stranger.transport = Transport::Anonymous;
    let err = stranger.authenticate().await.unwrap_err().to_string();
    assert!(
        err.contains("400") && err.contains("no device identity"),
        "{err}"
    );
    let r = anonymous.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
