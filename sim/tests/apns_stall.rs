//! The engine's APNs client against a peer that accepts TCP and never speaks, with a push
//! certificate from the simulated APNs PKI (here rather than in the library's unit tests so the
//! library has no dev-dependency on the simulators).

use std::time::Duration;

use pomona::push::client::{ApnsClient, ApnsEndpoint};
use pomona::wire::apns::PushCertificate;
use pomona_sim::apns::ApnsTestPki;

/// A server (or proxy) that accepts TCP and never speaks must not hold a push for ever.
#[tokio::test]
async fn a_stalled_handshake_fails_the_push() {
    let pki = ApnsTestPki::new().unwrap();
    let cert = PushCertificate::from_pem(
        &pki.push_certificate("com.apple.mgmt.External.stall", 30)
            .unwrap(),
    )
    .unwrap();
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("https://{}", stall.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = stall.accept().await {
            open.push(s);
        }
    });
    let endpoint = ApnsEndpoint::default()
        .with_base_url(base_url)
        .with_connect_timeout(Duration::from_millis(300))
        .with_handshake_timeout(Duration::from_millis(300))
        .with_timeout(Duration::from_millis(300));
    let client = ApnsClient::new(&cert, &endpoint).unwrap();
    let pushed = tokio::time::timeout(Duration::from_secs(20), client.push("00", "m"))
        .await
        .expect("the push gave up instead of waiting for the handshake for ever");
    let err = pushed.unwrap_err().to_string();
    assert!(err.contains("handshake"), "{err}");
    held.abort();
}
