use std::time::{Duration, Instant};

use plist::{Dictionary, Value};
use proptest::prelude::*;

use super::bombs::{nested_arrays, shared_references};
use super::*;

/// Run `f` on a thread with a 256 KiB stack: proof that nothing recurses with the input's depth.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

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

fn limits() -> PlistLimits {
    PlistLimits::default()
}

#[test]
fn the_committed_seed_corpus_is_what_the_generators_make() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/checkin");
    let read = |name: &str| std::fs::read(format!("{dir}/{name}")).unwrap();
    assert_eq!(read("bplist-bomb-30"), shared_references(30));
    assert_eq!(read("bplist-bomb-40"), shared_references(40));
    assert_eq!(read("xml-deep-50000"), nested_arrays(50_000));
    assert!(shared_references(40).len() < 250);
}

#[test]
fn a_small_shared_reference_plist_is_expanded_like_the_plist_crate_does() {
    let small = shared_references(3);
    let expected = Value::from_reader(Cursor::new(&small)).unwrap();
    assert_eq!(decode(&small, &limits()).unwrap(), expected);
    // 1 + 2 + 4 arrays and 8 strings.
    let exact = PlistLimits {
        max_values: 15,
        ..limits()
    };
    assert!(decode(&small, &exact).is_ok());
    let one_less = PlistLimits {
        max_values: 14,
        ..limits()
    };
    assert_eq!(
        decode(&small, &one_less),
        Err(PlistError::TooManyValues { max: 14 })
    );
}

#[test]
fn shared_reference_bombs_are_refused_quickly_with_the_value_limit() {
    for levels in [30, 40] {
        let bomb = shared_references(levels);
        let started = Instant::now();
        let err = on_small_stack(move || decode(&bomb, &PlistLimits::default()).unwrap_err());
        assert_eq!(err, PlistError::TooManyValues { max: 500_000 });
        assert_eq!(err.to_string(), "plist has more than 500000 values");
        assert!(err.is_limit());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{levels} levels"
        );
    }
}

#[test]
fn shared_strings_count_their_bytes_once_per_reference() {
    // 2^20 references to one 40-byte string: 40 MiB once expanded, under the value limit.
    let mut bomb = b"bplist00".to_vec();
    let levels = 20;
    let mut offsets = Vec::new();
    for i in 0..levels {
        offsets.push(bomb.len());
        let next = u8::try_from(i + 1).unwrap();
        bomb.extend([0xa2, next, next]);
    }
    offsets.push(bomb.len());
    bomb.push(0x5f);
    bomb.extend([0x10, 40]);
    bomb.extend([b'a'; 40]);
    let table = bomb.len();
    for o in &offsets {
        bomb.extend(u16::try_from(*o).unwrap().to_be_bytes());
    }
    bomb.extend([0; 6]);
    bomb.extend([2, 1]);
    bomb.extend((offsets.len() as u64).to_be_bytes());
    bomb.extend(0u64.to_be_bytes());
    bomb.extend((table as u64).to_be_bytes());
    let generous = PlistLimits {
        max_values: 10_000_000,
        ..limits()
    };
    assert_eq!(
        decode(&bomb, &generous),
        Err(PlistError::TooManyBytes { max: 32 << 20 })
    );
}

#[test]
fn fifty_thousand_nested_arrays_are_refused_on_a_small_stack() {
    let doc = nested_arrays(50_000);
    assert!(doc.len() > 700_000);
    let err = on_small_stack(move || decode(&doc, &PlistLimits::default()).unwrap_err());
    assert_eq!(err, PlistError::TooDeep { max: 64 });
    assert_eq!(err.to_string(), "plist nesting deeper than 64");
}

#[test]
fn the_depth_limit_is_exact() {
    let at_limit = nested_arrays(64);
    let value = on_small_stack(move || decode(&at_limit, &PlistLimits::default()));
    assert!(value.is_ok());
    assert_eq!(
        decode(&nested_arrays(65), &limits()),
        Err(PlistError::TooDeep { max: 64 })
    );
}

/// A dictionary shaped like one entry of `InstalledApplicationList` from macOS.
fn application(i: usize) -> Value {
    let mut d = Dictionary::new();
    d.insert("Identifier".into(), format!("com.example.app{i}").into());
    d.insert("Name".into(), format!("Example Application {i}").into());
    d.insert("ShortVersion".into(), "12.4.1".into());
    d.insert("Version".into(), "12.4.1 (4521)".into());
    d.insert("BundleSize".into(), (1_234_567 * i as u64).into());
    d.insert("DynamicSize".into(), 0.into());
    d.insert("ExternalVersionIdentifier".into(), 8_675_309.into());
    d.insert("IsValidated".into(), true.into());
    d.insert("AppStoreVendable".into(), false.into());
    d.insert("DeviceBasedVPP".into(), false.into());
    d.insert("BetaReport".into(), false.into());
    d.insert("HasUpdateAvailable".into(), false.into());
    d.insert("Installing".into(), false.into());
    d.insert("IsAppClip".into(), false.into());
    d.insert("AdHocCodeSigned".into(), false.into());
    d.insert(
        "Path".into(),
        format!("/Applications/Example Application {i}.app").into(),
    );
    d.into()
}

#[test]
fn a_mac_with_two_thousand_applications_passes_the_defaults() {
    let mut report = Dictionary::new();
    report.insert("UDID".into(), "0000FE00-1234".into());
    report.insert("Status".into(), "Acknowledged".into());
    report.insert("CommandUUID".into(), "C-APPS".into());
    report.insert(
        "InstalledApplicationList".into(),
        Value::Array((0..2000).map(application).collect()),
    );
    let report = Value::Dictionary(report);
    for bytes in [xml(&report), binary(&report)] {
        let started = Instant::now();
        let (value, _) = decode_with_format(&bytes, &limits()).unwrap();
        assert_eq!(value, report);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    assert!(xml(&report).len() < 8 << 20, "fits the default body cap");
}

#[test]
fn every_limit_is_configurable_and_named_in_its_error() {
    let doc = Value::Array(vec![Value::Array(vec!["abcd".into(), "efgh".into()])]);
    let bytes = xml(&doc);
    assert_eq!(decode(&bytes, &limits()).unwrap(), doc);
    let with = |f: fn(&mut PlistLimits)| {
        let mut l = limits();
        f(&mut l);
        decode(&bytes, &l).unwrap_err()
    };
    assert_eq!(with(|l| l.max_depth = 1), PlistError::TooDeep { max: 1 });
    assert_eq!(
        with(|l| l.max_values = 3),
        PlistError::TooManyValues { max: 3 }
    );
    assert_eq!(
        with(|l| l.max_bytes = 7),
        PlistError::TooManyBytes { max: 7 }
    );
    assert_eq!(
        with(|l| l.max_input_bytes = 10),
        PlistError::InputTooLarge {
            size: bytes.len(),
            max: 10
        }
    );
    assert_eq!(
        with(|l| l.max_bytes = 7).to_string(),
        "plist has more than 7 bytes of strings and data"
    );
}

#[test]
fn limits_are_checked_for_usable_values() {
    PlistLimits::default().check().unwrap();
    let bad = |f: fn(&mut PlistLimits)| {
        let mut l = limits();
        f(&mut l);
        l.check().unwrap_err()
    };
    assert_eq!(
        bad(|l| l.max_depth = 0),
        "max_depth must be between 1 and 256"
    );
    assert_eq!(
        bad(|l| l.max_depth = 100_000),
        "max_depth must be between 1 and 256"
    );
    assert_eq!(bad(|l| l.max_values = 0), "max_values must be at least 1");
    let parsed: PlistLimits =
        serde_json::from_str(r#"{"max_depth": 16, "max_values": 100}"#).unwrap();
    assert_eq!(parsed.max_depth, 16);
    assert_eq!(parsed.max_values, 100);
    assert_eq!(parsed.max_bytes, limits().max_bytes);
    assert!(serde_json::from_str::<PlistLimits>(r#"{"depth": 16}"#).is_err());
}

#[test]
fn malformed_plists_get_syntax_errors_not_panics() {
    for (bytes, format) in [
        (&b""[..], PlistFormat::Xml),
        (
            b"<plist><dict><key>a</key></dict></plist>",
            PlistFormat::Xml,
        ),
        (b"<plist><dict><key>a</key>", PlistFormat::Xml),
        (b"<plist><array></dict></plist>", PlistFormat::Xml),
        (b"not a plist at all", PlistFormat::Xml),
        (b"bplist00", PlistFormat::Binary),
        (b"{ a = b; }", PlistFormat::Xml),
    ] {
        let err = decode(bytes, &limits()).unwrap_err();
        assert!(
            matches!(&err, PlistError::Syntax { format: f, .. } if *f == format),
            "{:?}: {err:?}",
            String::from_utf8_lossy(bytes)
        );
        assert!(!err.is_limit());
    }
}

#[test]
fn a_dictionary_root_is_told_apart() {
    let mut d = Dictionary::new();
    d.insert("k".into(), 1.into());
    let bytes = xml(&Value::Dictionary(d.clone()));
    assert_eq!(decode_dictionary(&bytes, &limits()).unwrap(), Ok(d));
    let array = xml(&Value::Array(vec![]));
    assert_eq!(
        decode_dictionary(&array, &limits()).unwrap(),
        Err(Value::Array(vec![]))
    );
}

fn arbitrary_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(|i| Value::Integer(i.into())),
        (-1.0e9f64..1.0e9).prop_map(Value::Real),
        "[a-zA-Z0-9 <>&\"'.]{0,12}".prop_map(Value::String),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Data),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec(("[a-z]{1,6}", inner), 0..6).prop_map(|entries| {
                Value::Dictionary(entries.into_iter().collect::<Dictionary>())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn decodes_what_the_plist_crate_writes(value in arbitrary_value()) {
        for bytes in [xml(&value), binary(&value)] {
            prop_assert_eq!(decode(&bytes, &limits()).unwrap(), value.clone());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        magic in prop_oneof![
            Just(b"bplist00".to_vec()),
            Just(b"<?xml version=\"1.0\"?><plist version=\"1.0\">".to_vec()),
            Just(Vec::new()),
        ],
        rest in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut bytes = magic;
        bytes.extend(rest);
        if let Ok(v) = decode(&bytes, &limits()) {
            // What the bounded decoder accepts, the plist crate reads alike.
            prop_assert_eq!(Value::from_reader(Cursor::new(&bytes)).ok(), Some(v));
        }
    }

    #[test]
    fn corrupted_bombs_never_panic(
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let mut bytes = shared_references(40);
        let i = at.index(bytes.len());
        bytes[i] = value;
        let _ = decode(&bytes, &limits());
    }
}
