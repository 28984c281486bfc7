use super::*;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::X509Name;
use openssl::x509::extension::BasicConstraints;

struct Issued {
    cert: X509,
    key: PKey<Private>,
}

fn make(cn: &str, issuer: Option<&Issued>, ca: bool, expired: bool, md: MessageDigest) -> Issued {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(cn.len() as u32 + 7)
        .unwrap()
        .to_asn1_integer()
        .unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&*name, |i| i.cert.subject_name()))
        .unwrap();
    b.set_pubkey(&key).unwrap();
    let (nb, na) = if expired {
        (
            Asn1Time::from_unix(1_200_000_000).unwrap(),
            Asn1Time::from_unix(1_300_000_000).unwrap(),
        )
    } else {
        (
            Asn1Time::days_from_now(0).unwrap(),
            Asn1Time::days_from_now(30).unwrap(),
        )
    };
    b.set_not_before(&nb).unwrap();
    b.set_not_after(&na).unwrap();
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
    }
    b.sign(issuer.map_or(&key, |i| &i.key), md).unwrap();
    Issued {
        cert: b.build(),
        key,
    }
}

/// A chain shaped like Apple's: root → intermediate → expired SHA-1 device leaf.
fn chain() -> (Issued, Issued, Issued) {
    let root = make("Test Root CA", None, true, false, MessageDigest::sha256());
    let inter = make(
        "Test Device CA",
        Some(&root),
        true,
        true,
        MessageDigest::sha1(),
    );
    let leaf = make(
        "Test Device",
        Some(&inter),
        false,
        true,
        MessageDigest::sha1(),
    );
    (root, inter, leaf)
}

fn info() -> MachineInfo {
    MachineInfo {
        udid: "00008103-000A1B2C3D4E5F60".into(),
        serial: "C02TEST123".into(),
        product: Some("MacBookPro18,3".into()),
        version: Some("23A344".into()),
        os_version: Some("14.0".into()),
        language: Some("en".into()),
        can_request_software_update: true,
        ..Default::default()
    }
}

#[test]
fn verifies_an_expired_sha1_chain_like_apples() {
    let (root, inter, leaf) = chain();
    let trust = DeviceTrust::from_pem_bundle(
        &[root.cert.to_pem().unwrap(), inter.cert.to_pem().unwrap()].concat(),
    )
    .unwrap();
    let signed = sign_machine_info(&info(), &leaf.cert, &leaf.key, &[]).unwrap();
    assert_eq!(verify_machine_info(&signed, &trust).unwrap(), info());
    // An intermediate travelling inside the signature is ignored: only the bundle builds the
    // chain, so a bundle without the device CA trusts nothing.
    let trust_root_only = DeviceTrust::from_pem_bundle(&root.cert.to_pem().unwrap()).unwrap();
    let with_chain = sign_machine_info(
        &info(),
        &leaf.cert,
        &leaf.key,
        std::slice::from_ref(&inter.cert),
    )
    .unwrap();
    assert!(matches!(
        verify_machine_info(&with_chain, &trust_root_only),
        Err(MachineInfoError::Untrusted(_))
    ));
    // With the device CA in the bundle, the same signature verifies.
    assert_eq!(
        verify_machine_info(&with_chain, &trust).unwrap().serial,
        "C02TEST123"
    );
    let header = B64.encode(&signed);
    assert_eq!(
        verify_machine_info_header(&header, &trust).unwrap().udid,
        info().udid
    );
}

#[test]
fn untrusted_tampered_and_incomplete_inputs_are_refused() {
    let (root, inter, leaf) = chain();
    let trust = DeviceTrust::from_pem_bundle(
        &[root.cert.to_pem().unwrap(), inter.cert.to_pem().unwrap()].concat(),
    )
    .unwrap();
    let stranger = make("Stranger", None, false, false, MessageDigest::sha256());
    let signed = sign_machine_info(&info(), &stranger.cert, &stranger.key, &[]).unwrap();
    assert!(matches!(
        verify_machine_info(&signed, &trust),
        Err(MachineInfoError::Untrusted(_))
    ));

    let mut tampered = sign_machine_info(&info(), &leaf.cert, &leaf.key, &[]).unwrap();
    let pos = tampered
        .windows(10)
        .position(|w| w == b"C02TEST123")
        .unwrap();
    tampered[pos] = b'X';
    assert!(matches!(
        verify_machine_info(&tampered, &trust),
        Err(MachineInfoError::BadSignature(_))
    ));

    let no_udid = MachineInfo {
        udid: String::new(),
        ..info()
    };
    let mut d = Dictionary::new();
    d.insert("SERIAL".into(), no_udid.serial.clone().into());
    let p7 = Pkcs7::sign(
        &leaf.cert,
        &leaf.key,
        &Stack::new().unwrap(),
        &to_xml(&Value::Dictionary(d)),
        Pkcs7Flags::BINARY,
    )
    .unwrap();
    assert!(matches!(
        verify_machine_info(&p7.to_der().unwrap(), &trust),
        Err(MachineInfoError::MissingKey("UDID"))
    ));

    assert!(matches!(
        verify_machine_info_header("!!!", &trust),
        Err(MachineInfoError::Base64)
    ));
    assert!(matches!(
        verify_machine_info(b"junk", &trust),
        Err(MachineInfoError::Malformed(_))
    ));
}

#[test]
fn apples_chain_is_embedded_and_verifies_without_time_checks() {
    let trust = DeviceTrust::apple();
    assert_eq!(trust.len(), 3);
    let certs = X509::stack_from_pem(APPLE_DEVICE_CA).unwrap();
    let root = certs
        .iter()
        .find(|c| is_self_signed(c))
        .expect("a self-signed root");
    let fp = root.digest(MessageDigest::sha256()).unwrap();
    assert_eq!(&fp[..4], &[0xB0, 0xB1, 0x73, 0x0E]);
    // The expired, SHA-1, 1024-bit Apple iPhone Device CA still chains to the root.
    let device_ca = certs
        .iter()
        .find(|c| format!("{:?}", c.subject_name()).contains("Apple iPhone Device CA"))
        .expect("Apple iPhone Device CA");
    trust.verify_chain(device_ca).unwrap();
    // It is the device CA: the one certificate of the bundle that issues no other.
    assert_eq!(trust.device_cas, vec![device_ca.to_der().unwrap()]);
}

/// Issue #11 item 4: any certificate under the same root (a developer certificate under Apple
/// Root CA) must not be able to sign MachineInfo, whether its own intermediate travels in the
/// CMS or it was issued by another intermediate of the bundle.
#[test]
fn a_signer_not_issued_by_the_device_ca_is_refused() {
    let (root, inter, leaf) = chain();
    let trust = DeviceTrust::from_pem_bundle(
        &[root.cert.to_pem().unwrap(), inter.cert.to_pem().unwrap()].concat(),
    )
    .unwrap();
    // root → "other intermediate" → leaf, the other intermediate embedded in the CMS.
    let other = make(
        "Developer ID CA",
        Some(&root),
        true,
        false,
        MessageDigest::sha256(),
    );
    let dev = make(
        "Developer",
        Some(&other),
        false,
        false,
        MessageDigest::sha256(),
    );
    let forged = sign_machine_info(
        &info(),
        &dev.cert,
        &dev.key,
        std::slice::from_ref(&other.cert),
    )
    .unwrap();
    let err = verify_machine_info(&forged, &trust).unwrap_err();
    assert!(matches!(err, MachineInfoError::Untrusted(_)), "{err}");

    // A bundle shaped like Apple's (root → certification authority → device CA): a leaf the
    // middle CA issued chains, but not through the device CA.
    let device_ca = make(
        "Device CA",
        Some(&inter),
        true,
        false,
        MessageDigest::sha256(),
    );
    let trust3 = DeviceTrust::from_pem_bundle(
        &[
            root.cert.to_pem().unwrap(),
            inter.cert.to_pem().unwrap(),
            device_ca.cert.to_pem().unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let sibling = make(
        "Sibling",
        Some(&inter),
        false,
        false,
        MessageDigest::sha256(),
    );
    let forged = sign_machine_info(&info(), &sibling.cert, &sibling.key, &[]).unwrap();
    let err = verify_machine_info(&forged, &trust3).unwrap_err();
    assert!(
        err.to_string().contains("not issued by the device CA"),
        "{err}"
    );
    // The legitimate path: a device leaf of the device CA, nothing embedded.
    let device = make(
        "Device",
        Some(&device_ca),
        false,
        true,
        MessageDigest::sha1(),
    );
    let signed = sign_machine_info(&info(), &device.cert, &device.key, &[]).unwrap();
    assert_eq!(verify_machine_info(&signed, &trust3).unwrap(), info());
    // And the two-level bundle still accepts its own device leaf.
    let signed = sign_machine_info(&info(), &leaf.cert, &leaf.key, &[]).unwrap();
    assert_eq!(verify_machine_info(&signed, &trust).unwrap(), info());
}

#[test]
fn software_update_body_and_versions() {
    let body: serde_json::Value =
        serde_json::from_slice(&software_update_required_body("14.4", Some("23E214"))).unwrap();
    assert_eq!(body["code"], "com.apple.softwareupdate.required");
    assert_eq!(body["details"]["OSVersion"], "14.4");
    assert_eq!(body["details"]["BuildVersion"], "23E214");
    let body: serde_json::Value =
        serde_json::from_slice(&software_update_required_body("15", None)).unwrap();
    assert!(body["details"].get("BuildVersion").is_none());
    assert!(version_lt("14.9", "14.10"));
    assert!(version_lt("13", "13.0.1"));
    assert!(!version_lt("14.0", "14"));
    assert!(!version_lt("15.1", "14.7"));
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let _ = verify_machine_info(&bytes, &DeviceTrust::apple());
    }
}
