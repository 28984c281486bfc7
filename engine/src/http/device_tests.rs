//! Robustness of the device endpoints: malformed plists, broken signatures and oversized bodies
//! get a 400 (never a panic, a 401 or a 5xx) and leave stored state untouched.

use axum::body::Body;
use axum::http::Request;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509Name};
use plist::{Dictionary, Value};
use proptest::prelude::*;
use tower::ServiceExt;

use crate::Engine;
use crate::wire::checkin::to_xml;
use crate::wire::cms::{SignatureStyle, sign_detached};
use crate::wire::enrollment_id::EnrollmentId;

const UDID: &str = "ROBUST-0001";

fn router(engine: &Engine) -> axum::Router {
    crate::http::Routes::new(engine, crate::http::HttpOptions::new()).router()
}

struct Fixture {
    engine: Engine,
    rt: tokio::runtime::Runtime,
    cert: X509,
    key: PKey<Private>,
}

fn dict(pairs: &[(&str, Value)]) -> Vec<u8> {
    let mut d = Dictionary::new();
    for (k, v) in pairs {
        d.insert((*k).into(), v.clone());
    }
    to_xml(&Value::Dictionary(d))
}

impl Fixture {
    fn new(max_body: usize) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let engine = rt.block_on(async {
            Engine::builder()
                .max_body_bytes(max_body)
                .build()
                .await
                .unwrap()
        });
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let public = PKey::public_key_from_der(&key.public_key_to_der().unwrap()).unwrap();
        let mut name = X509Name::builder().unwrap();
        name.append_entry_by_text("CN", "robust").unwrap();
        let cert = engine
            .ca()
            .issue_device_cert(&public, &name.build(), 30)
            .unwrap();
        let f = Self {
            engine,
            rt,
            cert,
            key,
        };
        let auth = dict(&[
            ("MessageType", "Authenticate".into()),
            ("UDID", UDID.into()),
            ("Topic", "t".into()),
        ]);
        assert_eq!(
            f.send("/mdm/checkin", auth.clone(), Some(f.sign(&auth))),
            200
        );
        let tu = dict(&[
            ("MessageType", "TokenUpdate".into()),
            ("UDID", UDID.into()),
            ("Topic", "t".into()),
            ("PushMagic", "m".into()),
            ("Token", Value::Data(vec![1; 32])),
        ]);
        assert_eq!(f.send("/mdm/checkin", tu.clone(), Some(f.sign(&tu))), 200);
        let cmd = crate::wire::command::Command::build("KEEP-ME", "ProfileList", Dictionary::new());
        f.rt.block_on(
            f.engine
                .commands()
                .enqueue(&cmd, &[EnrollmentId::new(UDID)], false),
        )
        .unwrap();
        f
    }

    fn sign(&self, body: &[u8]) -> String {
        B64.encode(
            sign_detached(
                body,
                &self.cert,
                &self.key,
                SignatureStyle::DerWithAttributes,
            )
            .unwrap(),
        )
    }

    fn send(&self, path: &str, body: Vec<u8>, signature: Option<String>) -> u16 {
        let mut req = Request::put(path);
        if let Some(s) = signature {
            req = req.header("Mdm-Signature", s);
        }
        let req = req.body(Body::from(body)).unwrap();
        self.rt
            .block_on(router(&self.engine).oneshot(req))
            .unwrap()
            .status()
            .as_u16()
    }

    /// The stored state a bad request must not touch.
    fn snapshot(&self) -> String {
        self.rt.block_on(async {
            let store = self.engine.store();
            let id = EnrollmentId::new(UDID);
            let mut e = store.enrollment(&id).await.unwrap().unwrap();
            e.last_seen_at = None;
            let q = store.queue(&id).await.unwrap();
            format!("{e:?}\n{q:?}")
        })
    }
}

fn idle_report() -> Vec<u8> {
    dict(&[("UDID", UDID.into()), ("Status", "Idle".into())])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn signed_garbage_bodies_are_400_and_change_nothing(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        path in prop_oneof![Just("/mdm/checkin"), Just("/mdm/connect"), Just("/mdm")],
    ) {
        let f = fixture();
        let before = f.snapshot();
        let sig = f.sign(&body);
        prop_assert_eq!(f.send(path, body, Some(sig)), 400);
        prop_assert_eq!(f.snapshot(), before);
    }

    #[test]
    fn truncated_or_flipped_reports_never_5xx_or_401(cut in 0usize..200, flip in 0usize..200, bit in 0u8..8) {
        let f = fixture();
        let before = f.snapshot();
        let mut body = idle_report();
        let cut = cut.min(body.len());
        if flip < body.len() {
            body[flip] ^= 1 << bit;
        }
        body.truncate(body.len() - cut);
        let sig = f.sign(&body);
        let status = f.send("/mdm/connect", body, Some(sig));
        prop_assert!(status == 200 || status == 400, "status {}", status);
        prop_assert_eq!(f.snapshot(), before);
    }

    #[test]
    fn broken_signatures_are_400(sig in proptest::collection::vec(any::<u8>(), 0..1500), keep in 0usize..1400) {
        let f = fixture();
        let before = f.snapshot();
        let body = idle_report();
        // Garbage bytes, then a truncated genuine signature.
        prop_assert_eq!(f.send("/mdm/connect", body.clone(), Some(B64.encode(&sig))), 400);
        let genuine = B64.decode(f.sign(&body)).unwrap();
        let truncated = B64.encode(&genuine[..keep.min(genuine.len().saturating_sub(1))]);
        prop_assert_eq!(f.send("/mdm/connect", body, Some(truncated)), 400);
        prop_assert_eq!(f.snapshot(), before);
    }
}

fn fixture() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(|| Fixture::new(64 * 1024))
}

#[test]
fn oversized_bodies_are_400() {
    let f = fixture();
    let before = f.snapshot();
    let mut d = Dictionary::new();
    d.insert("UDID".into(), UDID.into());
    d.insert("Status".into(), "Idle".into());
    d.insert("Padding".into(), Value::Data(vec![0; 128 * 1024]));
    let body = to_xml(&Value::Dictionary(d));
    let sig = f.sign(&body);
    assert_eq!(f.send("/mdm/connect", body, Some(sig)), 400);
    assert_eq!(f.snapshot(), before);
    // A genuine Idle still works and returns the queued command.
    let body = idle_report();
    let sig = f.sign(&body);
    assert_eq!(f.send("/mdm/connect", body, Some(sig)), 200);
}

fn send_text(f: &Fixture, path: &str, body: Vec<u8>, signature: Option<String>) -> (u16, String) {
    let mut req = Request::put(path);
    if let Some(s) = signature {
        req = req.header("Mdm-Signature", s);
    }
    let req = req.body(Body::from(body)).unwrap();
    f.rt.block_on(async {
        let r = router(&f.engine).oneshot(req).await.unwrap();
        let status = r.status().as_u16();
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
}

/// Issue #11, "verify identity before parsing": a request without identity is refused before
/// its plist is read, whatever the body holds.
#[test]
fn no_identity_is_refused_before_parsing() {
    let f = fixture();
    let before = f.snapshot();
    let unparseable = b"<plist><dict><key>UDID</key><array><array>".to_vec();
    let (status, text) = send_text(f, "/mdm/checkin", unparseable, None);
    assert_eq!(status, 400);
    assert!(text.contains("no device identity"), "{text}");
    let (status, text) = send_text(f, "/mdm/connect", idle_report(), None);
    assert_eq!(status, 400);
    assert!(text.contains("no device identity"), "{text}");
    assert_eq!(f.snapshot(), before);
}

/// Issue #11 item 9: certificates that do not chain to the engine's CA never enter the decoded
/// certificate cache, even with a valid signature over the body; the device's own does.
#[test]
fn unauthenticated_certificates_do_not_grow_the_cert_cache() {
    let f = Fixture::new(64 * 1024);
    let cached = f.engine.device_gateway().cached_certificates();
    assert_eq!(cached, 1, "the fixture device's certificate");
    for i in 0..20 {
        let key = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
        let mut name = X509Name::builder().unwrap();
        name.append_entry_by_text("CN", &format!("stranger {i}"))
            .unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        let cert = b.build();
        let body = idle_report();
        let sig = B64
            .encode(sign_detached(&body, &cert, &key, SignatureStyle::DerWithAttributes).unwrap());
        let (status, text) = send_text(&f, "/mdm/connect", body, Some(sig));
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("not trusted"), "{text}");
    }
    assert_eq!(f.engine.device_gateway().cached_certificates(), cached);
    let body = idle_report();
    let sig = f.sign(&body);
    assert_eq!(f.send("/mdm/connect", body, Some(sig)), 200);
    assert_eq!(f.engine.device_gateway().cached_certificates(), 1);
}
