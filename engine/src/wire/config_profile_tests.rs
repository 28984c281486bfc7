use super::*;
use crate::ca::CertificateAuthority;
use crate::wire::cms::{self, SignatureStyle};
use crate::wire::mobileconfig::sign_profile;
use proptest::prelude::*;
use std::io::Cursor;

const WIFI: &[u8] = include_bytes!("../../tests/fixtures/profiles/wifi.mobileconfig");
const WIFI_SIGNED: &[u8] = include_bytes!("../../tests/fixtures/profiles/wifi-signed.mobileconfig");
const RESTRICTIONS: &[u8] =
    include_bytes!("../../tests/fixtures/profiles/restrictions.mobileconfig");
const USER_DOCK: &[u8] = include_bytes!("../../tests/fixtures/profiles/user-dock.mobileconfig");
const MISSING_UUID: &[u8] =
    include_bytes!("../../tests/fixtures/profiles/malformed/missing-payload-uuid.mobileconfig");
const DUPLICATE_ID: &[u8] =
    include_bytes!("../../tests/fixtures/profiles/malformed/duplicate-identifier.mobileconfig");
const BARE_PAYLOAD: &[u8] =
    include_bytes!("../../tests/fixtures/profiles/malformed/bare-payload.mobileconfig");
const TRUNCATED: &[u8] =
    include_bytes!("../../tests/fixtures/profiles/malformed/truncated.mobileconfig");
const TAMPERED: &[u8] =
    include_bytes!("../../tests/fixtures/profiles/malformed/tampered-signed.mobileconfig");

fn xml(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    v.to_writer_xml(&mut out).unwrap();
    out
}

fn binary(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    v.to_writer_binary(&mut out).unwrap();
    out
}

fn parsed(bytes: &[u8]) -> Dictionary {
    Value::from_reader(Cursor::new(bytes))
        .unwrap()
        .into_dictionary()
        .unwrap()
}

fn err(bytes: &[u8]) -> InvalidProfile {
    validate(bytes).expect_err("the profile must be refused")
}

/// The Wi-Fi fixture with `change` applied to its top-level dictionary.
fn mutated(change: impl FnOnce(&mut Dictionary)) -> InvalidProfile {
    let mut top = parsed(WIFI);
    change(&mut top);
    err(&xml(&Value::Dictionary(top)))
}

/// The restrictions fixture (two payloads) with `change` applied to payload `index` (from 0).
fn mutated_payload(index: usize, change: impl FnOnce(&mut Dictionary)) -> InvalidProfile {
    let mut top = parsed(RESTRICTIONS);
    let payloads = top
        .get_mut("PayloadContent")
        .and_then(Value::as_array_mut)
        .unwrap();
    change(payloads[index].as_dictionary_mut().unwrap());
    err(&xml(&Value::Dictionary(top)))
}

#[test]
fn wifi_profile_is_described() {
    let info = validate(WIFI).unwrap();
    assert_eq!(info.identifier, "com.example.wifi.office");
    assert_eq!(info.uuid, "0E6F3C1B-2A94-4D7E-8B50-C3D1A9F27E16");
    assert_eq!(info.display_name.as_deref(), Some("Office Wi-Fi"));
    assert_eq!(
        info.description.as_deref(),
        Some("Joins Macs to the Example office network.")
    );
    assert_eq!(info.organization.as_deref(), Some("Example Inc."));
    assert_eq!(info.scope, Some(PayloadScope::System));
    assert!(!info.user_scoped);
    assert!(info.removal_disallowed);
    assert_eq!(info.format, PlistFormat::Xml);
    assert!(!info.signed);
    assert_eq!(info.signer, None);
    assert_eq!(
        info.payloads,
        vec![PayloadSummary {
            payload_type: "com.apple.wifi.managed".into(),
            identifier: "com.example.wifi.office.payload".into(),
            uuid: "5B0C4E9A-7D2F-4A61-9C3E-1F8B6A2D4E70".into(),
            display_name: Some("Wi-Fi (Example-Office)".into()),
        }]
    );
}

#[test]
fn restrictions_profile_lists_its_payloads_in_order() {
    let info = validate(RESTRICTIONS).unwrap();
    assert_eq!(info.identifier, "com.example.restrictions");
    assert!(!info.removal_disallowed, "absent means removable");
    assert_eq!(info.description, None);
    let kinds: Vec<(&str, &str)> = info
        .payloads
        .iter()
        .map(|p| (p.payload_type.as_str(), p.identifier.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (
                "com.apple.applicationaccess",
                "com.example.restrictions.applicationaccess"
            ),
            (
                "com.apple.screensaver",
                "com.example.restrictions.screensaver"
            ),
        ]
    );
}

#[test]
fn user_scope_is_reported() {
    let info = validate(USER_DOCK).unwrap();
    assert_eq!(info.scope, Some(PayloadScope::User));
    assert!(info.user_scoped);
    assert_eq!(info.display_name, None);
    assert_eq!(info.payloads[0].display_name, None);

    let mut top = parsed(WIFI);
    top.remove("PayloadScope");
    let info = validate(&xml(&Value::Dictionary(top))).unwrap();
    assert_eq!(info.scope, None, "an absent scope stays absent");
    assert!(!info.user_scoped);
}

#[test]
fn binary_plists_are_accepted_and_described_alike() {
    let bin = binary(&Value::Dictionary(parsed(WIFI)));
    assert!(bin.starts_with(b"bplist00"));
    let info = validate(&bin).unwrap();
    assert_eq!(info.format, PlistFormat::Binary);
    let xml_info = validate(WIFI).unwrap();
    assert_eq!(
        ProfileInfo {
            format: PlistFormat::Xml,
            ..info
        },
        xml_info
    );
}

#[test]
fn an_empty_payload_list_is_a_valid_profile() {
    let mut top = parsed(WIFI);
    top.insert("PayloadContent".into(), Value::Array(vec![]));
    let info = validate(&xml(&Value::Dictionary(top))).unwrap();
    assert!(info.payloads.is_empty());
}

#[test]
fn the_openssl_cli_signed_fixture_is_unwrapped_and_its_signer_recorded() {
    let info = validate(WIFI_SIGNED).unwrap();
    assert!(info.signed);
    let signer = info.signer.clone().unwrap();
    assert_eq!(signer.subject, "CN=Pomona Fixture Signer, O=Example Inc.");
    assert_eq!(
        signer.issuer, signer.subject,
        "self-signed, and not trusted"
    );
    assert_eq!(
        ProfileInfo {
            signed: false,
            signer: None,
            ..info
        },
        validate(WIFI).unwrap(),
        "the signed content is the Wi-Fi profile"
    );
}

#[test]
fn signed_profiles_made_with_the_openssl_crate_in_der_and_ber() {
    let ca = CertificateAuthority::generate(&Default::default()).unwrap();
    let bin = binary(&Value::Dictionary(parsed(RESTRICTIONS)));
    let der = sign_profile(&bin, ca.certificate(), ca.private_key(), &[]).unwrap();
    let info = validate(&der).unwrap();
    assert!(info.signed);
    assert_eq!(
        info.format,
        PlistFormat::Binary,
        "binary inside the signature"
    );
    assert_eq!(info.identifier, "com.example.restrictions");
    let subject = info.signer.unwrap().subject;
    assert!(subject.starts_with("CN="), "{subject}");

    // Apple's tools write indefinite-length BER.
    let ber = cms::to_indefinite_length(&der);
    assert_eq!(&ber[..2], &[0x30, 0x80]);
    assert_eq!(
        validate(&ber).unwrap().identifier,
        "com.example.restrictions"
    );
}

#[test]
fn a_detached_signature_is_refused_with_a_hint() {
    let ca = CertificateAuthority::generate(&Default::default()).unwrap();
    let sig = cms::sign_detached(
        WIFI,
        ca.certificate(),
        ca.private_key(),
        SignatureStyle::DerWithAttributes,
    )
    .unwrap();
    let e = err(&sig);
    assert_eq!(e, InvalidProfile::Detached);
    assert!(e.to_string().contains("-nodetach"), "{e}");
}

#[test]
fn a_tampered_signed_profile_is_refused() {
    let e = err(TAMPERED);
    let InvalidProfile::Signature(detail) = &e else {
        panic!("{e:?}");
    };
    assert!(detail.contains("does not match"), "{e}");
}

#[test]
fn cms_that_is_not_signed_data_or_not_cms_is_refused() {
    let ca = CertificateAuthority::generate(&Default::default()).unwrap();
    let mut certs = Stack::new().unwrap();
    certs.push(ca.certificate().to_owned()).unwrap();
    let enveloped = Pkcs7::encrypt(
        &certs,
        WIFI,
        openssl::symm::Cipher::aes_256_cbc(),
        Pkcs7Flags::BINARY,
    )
    .unwrap()
    .to_der()
    .unwrap();
    let e = err(&enveloped);
    assert!(
        matches!(&e, InvalidProfile::Signature(d) if d.contains("not signed data")),
        "{e}"
    );
    let mut junk = vec![0x30, 0x82, 0x01, 0x00];
    junk.extend([0xa5; 256]);
    let e = err(&junk);
    assert!(
        matches!(&e, InvalidProfile::Signature(d) if d.contains("not a CMS structure")),
        "{e}"
    );
}

#[test]
fn malformed_fixtures_get_precise_messages() {
    assert_eq!(
        err(MISSING_UUID).to_string(),
        "payload 3 (com.apple.wifi.managed): missing PayloadUUID"
    );
    assert_eq!(
        err(DUPLICATE_ID),
        InvalidProfile::DuplicateIdentifier {
            first: 1,
            second: 2,
            identifier: "com.example.twice.payload".into()
        }
    );
    assert_eq!(
        err(DUPLICATE_ID).to_string(),
        "payloads 1 and 2 have the same PayloadIdentifier \"com.example.twice.payload\""
    );
    assert_eq!(
        err(BARE_PAYLOAD),
        InvalidProfile::NotConfiguration("com.apple.wifi.managed".into())
    );
    assert!(
        matches!(err(TRUNCATED), InvalidProfile::Plist { format: "XML", .. }),
        "{}",
        err(TRUNCATED)
    );
}

#[test]
fn top_level_keys_are_checked() {
    let missing = |key: &'static str| InvalidProfile::Missing {
        location: Location::Profile,
        key,
    };
    for key in [
        "PayloadType",
        "PayloadIdentifier",
        "PayloadUUID",
        "PayloadVersion",
        "PayloadContent",
    ] {
        assert_eq!(mutated(|d| drop(d.remove(key))), missing(key), "{key}");
    }
    assert_eq!(
        mutated(|d| drop(d.insert("PayloadIdentifier".into(), " ".into()))),
        InvalidProfile::EmptyString {
            location: Location::Profile,
            key: "PayloadIdentifier"
        }
    );
    assert_eq!(
        mutated(|d| drop(d.insert("PayloadUUID".into(), 7.into()))).to_string(),
        "profile: PayloadUUID must be a string, not an integer"
    );
    assert_eq!(
        mutated(|d| drop(d.insert("PayloadVersion".into(), 2.into()))).to_string(),
        "profile: PayloadVersion 2 is not supported (expected 1)"
    );
    assert_eq!(
        mutated(|d| drop(d.insert("PayloadVersion".into(), "1".into()))).to_string(),
        "profile: PayloadVersion must be an integer, not a string"
    );
    assert_eq!(
        mutated(|d| drop(d.insert("PayloadScope".into(), "Device".into()))),
        InvalidProfile::BadScope("Device".into())
    );
    assert_eq!(
        mutated(|d| drop(d.insert("PayloadRemovalDisallowed".into(), "yes".into()))).to_string(),
        "profile: PayloadRemovalDisallowed must be a boolean, not a string"
    );
    assert_eq!(
        mutated(|d| drop(d.insert("PayloadDisplayName".into(), Value::Array(vec![])))).to_string(),
        "profile: PayloadDisplayName must be a string, not an array"
    );
    assert_eq!(
        mutated(|d| drop(d.insert("PayloadContent".into(), Dictionary::new().into()))).to_string(),
        "profile: PayloadContent must be an array, not a dictionary"
    );
    assert_eq!(
        mutated(|d| {
            d.remove("PayloadContent");
            d.insert("EncryptedPayloadContent".into(), Value::Data(vec![1, 2, 3]));
        }),
        InvalidProfile::Encrypted
    );
    assert_eq!(
        err(&xml(&Value::Array(vec![]))),
        InvalidProfile::NotDictionary("an array")
    );
    assert_eq!(err(b""), InvalidProfile::Empty);
}

#[test]
fn payload_keys_are_checked() {
    let at = |payload_type: Option<&str>| Location::Payload {
        position: 2,
        payload_type: payload_type.map(str::to_owned),
    };
    assert_eq!(
        mutated_payload(1, |d| drop(d.remove("PayloadType"))),
        InvalidProfile::Missing {
            location: at(None),
            key: "PayloadType"
        }
    );
    assert_eq!(
        mutated_payload(1, |d| drop(d.remove("PayloadType"))).to_string(),
        "payload 2: missing PayloadType"
    );
    for key in ["PayloadIdentifier", "PayloadUUID", "PayloadVersion"] {
        assert_eq!(
            mutated_payload(1, |d| drop(d.remove(key))),
            InvalidProfile::Missing {
                location: at(Some("com.apple.screensaver")),
                key
            },
            "{key}"
        );
    }
    assert_eq!(
        mutated_payload(1, |d| drop(d.insert("PayloadVersion".into(), 0.into()))).to_string(),
        "payload 2 (com.apple.screensaver): PayloadVersion 0 is not supported (expected a positive integer)"
    );
    assert!(
        validate(&{
            let mut top = parsed(RESTRICTIONS);
            let p = top
                .get_mut("PayloadContent")
                .unwrap()
                .as_array_mut()
                .unwrap();
            p[1].as_dictionary_mut()
                .unwrap()
                .insert("PayloadVersion".into(), 2.into());
            xml(&Value::Dictionary(top))
        })
        .is_ok(),
        "payloads may have their own versions"
    );
    assert_eq!(
        mutated_payload(0, |d| drop(d.insert("PayloadUUID".into(), "".into()))).to_string(),
        "payload 1 (com.apple.applicationaccess): PayloadUUID is empty"
    );
    let uuid_of_first = "a4c2e8f1-6b3d-4f90-8e17-2d5c9b0a3f64";
    assert_eq!(
        mutated_payload(1, |d| drop(
            d.insert("PayloadUUID".into(), uuid_of_first.into())
        )),
        InvalidProfile::DuplicateUuid {
            first: 1,
            second: 2,
            uuid: uuid_of_first.into()
        },
        "UUIDs compare case-insensitively"
    );
    let mut top = parsed(RESTRICTIONS);
    top.get_mut("PayloadContent")
        .unwrap()
        .as_array_mut()
        .unwrap()
        .push("com.apple.dock".into());
    assert_eq!(
        err(&xml(&Value::Dictionary(top))).to_string(),
        "payload 3: must be a dictionary, not a string"
    );
}

#[test]
fn deep_nesting_is_refused_before_building() {
    let depth = 200;
    let mut doc = String::from(r#"<?xml version="1.0"?><plist version="1.0">"#);
    doc.push_str(&"<array>".repeat(depth));
    doc.push_str(&"</array>".repeat(depth));
    doc.push_str("</plist>");
    assert_eq!(
        err(doc.as_bytes()),
        InvalidProfile::Limit(PlistError::TooDeep { max: 64 })
    );
    assert_eq!(
        err(doc.as_bytes()).to_string(),
        "plist nesting deeper than 64"
    );
}

use crate::wire::bounded_plist::bombs::shared_references as shared_object_bomb;

#[test]
fn shared_object_expansion_is_refused() {
    let small = shared_object_bomb(3);
    assert!(
        Value::from_reader(Cursor::new(&small)).is_ok(),
        "the construction is a valid binary plist"
    );
    assert_eq!(
        err(&small),
        InvalidProfile::NotDictionary("an array"),
        "a small one is parsed"
    );
    assert_eq!(
        err(&shared_object_bomb(40)),
        InvalidProfile::Limit(PlistError::TooManyValues { max: 500_000 })
    );
    let tight = PlistLimits {
        max_values: 5,
        ..PlistLimits::default()
    };
    assert_eq!(
        validate_with(&small, &tight),
        Err(InvalidProfile::Limit(PlistError::TooManyValues { max: 5 }))
    );
}

#[test]
fn install_and_remove_commands() {
    let c = install_profile_command("C-1", WIFI_SIGNED);
    let parsed = Command::parse(c.raw.clone()).unwrap();
    assert_eq!(parsed.uuid, "C-1");
    assert_eq!(parsed.request_type, "InstallProfile");
    let root = Value::from_reader(Cursor::new(&c.raw)).unwrap();
    let cmd = root.as_dictionary().unwrap()["Command"]
        .as_dictionary()
        .unwrap();
    assert_eq!(
        cmd["Payload"].as_data(),
        Some(WIFI_SIGNED),
        "the exact uploaded bytes"
    );

    let r = remove_profile_command("C-2", "com.example.wifi.office");
    assert_eq!(r.request_type, "RemoveProfile");
    let root = Value::from_reader(Cursor::new(&r.raw)).unwrap();
    assert_eq!(
        root.as_dictionary().unwrap()["Command"]
            .as_dictionary()
            .unwrap()["Identifier"]
            .as_string(),
        Some("com.example.wifi.office")
    );
}

fn check_invariants(bytes: &[u8]) {
    if let Ok(info) = validate(bytes) {
        assert!(!info.identifier.trim().is_empty());
        assert!(!info.uuid.trim().is_empty());
        assert_eq!(info.user_scoped, info.scope == Some(PayloadScope::User));
        assert_eq!(info.signed, info.signer.is_some());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        check_invariants(&bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_each_magic_never_panic(
        magic in prop_oneof![
            Just(b"bplist00".to_vec()),
            Just(b"<?xml version=\"1.0\"?><plist version=\"1.0\">".to_vec()),
            Just(vec![0x30, 0x80]),
            Just(vec![0x30, 0x82, 0x04, 0x00]),
        ],
        rest in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut bytes = magic;
        bytes.extend(rest);
        check_invariants(&bytes);
    }

    #[test]
    fn corrupted_fixtures_never_panic(
        which in 0usize..3,
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let bin = binary(&Value::Dictionary(parsed(RESTRICTIONS)));
        let original: &[u8] = [WIFI, WIFI_SIGNED, bin.as_slice()][which];
        let mut bytes = original.to_vec();
        let i = at.index(bytes.len());
        bytes[i] = value;
        check_invariants(&bytes);
        bytes.truncate(cut.index(bytes.len()));
        check_invariants(&bytes);
    }
}
