//! Push certificate uploads (`PUT /v1/pushcert`): PEM (certificate then key) and PKCS#12.
//!
//! Mode byte: 0 = PEM; 1 = PKCS#12 with the password `fuzz`; otherwise PKCS#12 with no password.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use pomona::wire::apns::PushCertificate;

fuzz_target!(|data: &[u8]| {
    match common::mode(data) {
        (0, pem) => {
            let _ = PushCertificate::from_pem(pem);
        }
        (1, der) => {
            let _ = PushCertificate::from_pkcs12(der, "fuzz");
        }
        (_, der) => {
            let _ = PushCertificate::from_pkcs12(der, "");
        }
    }
});
