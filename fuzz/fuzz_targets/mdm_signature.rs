//! The `Mdm-Signature` header: base64 decoding, the detached CMS walker, and verification over a
//! fixed check-in body, with the signer's key and with the key of the fixture device.
//!
//! Mode byte: 0 = the rest is the DER/BER signature; otherwise the rest is the header value.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use openssl::pkey::{PKey, Public};
use openssl::x509::X509;
use pomona::wire::cms::{DetachedSignature, decode_signature_header, verify_detached};

const BODY: &[u8] = include_bytes!("../../engine/src/wire/fixtures/checkin-body.plist");
const DEVICE_CERT: &[u8] = include_bytes!("../../engine/src/wire/fixtures/device-cert.pem");

fn device_key() -> &'static PKey<Public> {
    static KEY: OnceLock<PKey<Public>> = OnceLock::new();
    KEY.get_or_init(|| common::cert(DEVICE_CERT).public_key().expect("fixture key"))
}

fn check(signature: &[u8]) {
    if let Ok(parsed) = DetachedSignature::parse(signature) {
        let _ = parsed.verify(BODY, device_key());
        if let Ok(signer) = X509::from_der(parsed.signer_cert_der)
            && let Ok(key) = signer.public_key()
        {
            let _ = parsed.verify(BODY, &key);
        }
    }
    let _ = verify_detached(signature, BODY);
}

fuzz_target!(|data: &[u8]| {
    match common::mode(data) {
        (0, signature) => check(signature),
        (_, header) => {
            if let Ok(value) = std::str::from_utf8(header)
                && let Ok(signature) = decode_signature_header(value)
            {
                check(&signature);
            }
        }
    }
});
