//! Test helpers for the check-in path: certificates and requests built in-process.

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::{X509, X509Name};

use super::{Identity, IdentitySource, Request};
use crate::wire::enrollment_id::{Channel, ChannelKind, EnrollmentId, Identifiers};

/// A self-signed certificate named `cn` on a fresh P-256 key: a distinct device identity.
pub(crate) fn cert(cn: &str) -> X509 {
    let key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    b.build()
}

/// A request on device channel `udid`, presenting `cert`.
pub(crate) fn device_request(udid: &str, cert: &X509) -> Request {
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
        identity: Some(Identity::new(cert.clone(), IdentitySource::Embedder)),
        raw: b"<plist/>".to_vec(),
        received_at: time::OffsetDateTime::now_utc(),
    }
}

/// A request on the macOS user channel `user` of device `udid`, presenting `cert`.
pub(crate) fn user_request(udid: &str, user: &str, cert: &X509) -> Request {
    let mut req = device_request(udid, cert);
    req.identifiers.user_id = Some(user.into());
    req.identifiers.user_short_name = Some(format!("{user}-short"));
    req.identifiers.user_long_name = Some(format!("{user} Long"));
    req.channel = req.identifiers.channel().expect("a user channel");
    assert_eq!(req.channel.kind, ChannelKind::User);
    req
}
