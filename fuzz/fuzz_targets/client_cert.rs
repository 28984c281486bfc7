//! The client-certificate header a TLS-terminating proxy forwards (PEM, URL-escaped PEM,
//! `:base64:` or bare base64).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pomona::wire::client_cert::{decode_client_cert_der, decode_client_cert_header};

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = std::str::from_utf8(data) {
        let _ = decode_client_cert_der(value);
        let _ = decode_client_cert_header(value);
    }
});
