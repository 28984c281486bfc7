//! Uploaded DEP server tokens (`.p7m`, S/MIME): decryption with a fixed server key pair, then
//! the MIME markers and the token JSON.
//!
//! Mode byte: 0 = the rest is the `.p7m`; otherwise the rest is plaintext that the target
//! encrypts to the server certificate first, so the post-decryption parsing gets fuzzed too.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::X509;
use pomona::wire::dep::decrypt_token;

struct Server {
    cert: X509,
    key: PKey<Private>,
}

fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| Server {
        cert: common::cert(common::LEAF_CERT),
        key: common::key(common::LEAF_KEY),
    })
}

fuzz_target!(|data: &[u8]| {
    let s = server();
    match common::mode(data) {
        (0, p7m) => {
            let _ = decrypt_token(p7m, &s.cert, &s.key);
        }
        (_, plaintext) => {
            let mut certs = Stack::new().unwrap();
            certs.push(s.cert.clone()).unwrap();
            let flags = Pkcs7Flags::BINARY;
            let p7 = Pkcs7::encrypt(&certs, plaintext, Cipher::aes_256_cbc(), flags).unwrap();
            let smime = p7.to_smime(plaintext, flags).unwrap();
            let _ = decrypt_token(&smime, &s.cert, &s.key);
        }
    }
});
