//! Signed MachineInfo (the `x-apple-aspen-deviceinfo` header and the enrollment POST body),
//! verified against a test device-CA trust store.
//!
//! Mode byte: 0 = the rest is the CMS (DER); 1 = the rest is the header value (base64);
//! otherwise the rest is content that the target signs with the test CA's leaf first, so the
//! MachineInfo plist decoder behind the signature check gets fuzzed too.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::X509;
use pomona::wire::machine_info::{DeviceTrust, verify_machine_info, verify_machine_info_header};

struct Fixture {
    trust: DeviceTrust,
    leaf: X509,
    key: PKey<Private>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| Fixture {
        trust: DeviceTrust::from_pem_bundle(common::CA_CERT).expect("test CA bundle"),
        leaf: common::cert(common::LEAF_CERT),
        key: common::key(common::LEAF_KEY),
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    match common::mode(data) {
        (0, der) => {
            let _ = verify_machine_info(der, &f.trust);
        }
        (1, header) => {
            if let Ok(value) = std::str::from_utf8(header) {
                let _ = verify_machine_info_header(value, &f.trust);
            }
        }
        (_, content) => {
            let none = Stack::new().unwrap();
            let flags = Pkcs7Flags::BINARY | Pkcs7Flags::NOSMIMECAP;
            let signed = Pkcs7::sign(&f.leaf, &f.key, &none, content, flags)
                .and_then(|p| p.to_der())
                .unwrap();
            let _ = verify_machine_info(&signed, &f.trust);
        }
    }
});
