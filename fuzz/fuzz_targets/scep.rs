//! SCEP `PKIOperation` (`POST /scep`): the PKIMessage parser, envelope decryption with a test CA,
//! and the whole `ScepService::pki_operation` path over an in-memory store.
//!
//! Mode byte: 0 = the rest is a raw PKIMessage; otherwise the rest drives a well-formed request
//! (message type, challenge, subject, transaction ID, nonce, cipher, digest, signer) that the
//! target builds and then corrupts at fuzz-chosen offsets. An uncorrupted request must get a
//! CertRep that the client side can verify.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::{Arc, OnceLock};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509, X509Name};
use pomona::ca::CertificateAuthority;
use pomona::events::Outbox;
use pomona::scep::{ScepOptions, ScepService};
use pomona::store::redb::RedbStore;
use pomona::wire::scep::{
    CertRep, ContentCipher, Digest, MessageType, ScepRequest, build_csr, build_request,
    self_signed_requester,
};

const CHALLENGE: &str = "fuzz-challenge";

struct Fixture {
    rt: tokio::runtime::Runtime,
    ca: Arc<CertificateAuthority>,
    service: ScepService,
    /// Key of the CSRs and of both signers.
    key: PKey<Private>,
    /// A self-signed throwaway signer (PKCSReq).
    throwaway: X509,
    /// An identity the CA issued (RenewalReq).
    issued: X509,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = Arc::new(RedbStore::in_memory().unwrap());
        let ca = Arc::new(CertificateAuthority::from_pem(common::CA_CERT, common::CA_KEY).unwrap());
        let service = {
            let _guard = rt.enter();
            ScepService::new(
                ca.clone(),
                store.clone(),
                store.clone(),
                Outbox::new(store, 16),
                ScepOptions::default().with_static_challenge(Some(CHALLENGE.into())),
            )
        };
        let key = common::key(common::LEAF_KEY);
        let throwaway = self_signed_requester(&key, "scep-client").unwrap();
        let mut name = X509Name::builder().unwrap();
        name.append_entry_by_text("CN", "fuzz-device").unwrap();
        let public = PKey::public_key_from_der(&key.public_key_to_der().unwrap()).unwrap();
        let issued = ca.issue_device_cert(&public, &name.build(), 30).unwrap();
        Fixture {
            rt,
            ca,
            service,
            key,
            throwaway,
            issued,
        }
    })
}

#[derive(Arbitrary, Debug)]
struct Built {
    renewal: bool,
    right_challenge: bool,
    challenge: Option<String>,
    common_name: String,
    transaction_id: String,
    nonce: Vec<u8>,
    cipher: u8,
    sha1: bool,
    issued_signer: bool,
    corruptions: Vec<(u16, u8)>,
}

fn raw(f: &Fixture, message: &[u8]) {
    if let Ok(request) = ScepRequest::parse(message) {
        let _ = request.decrypt_csr(f.ca.certificate(), f.ca.private_key());
    }
    let _ = f.rt.block_on(f.service.pki_operation(message));
}

fn built(f: &Fixture, b: Built) {
    let Ok(mut name) = X509Name::builder() else {
        return;
    };
    if name.append_entry_by_text("CN", &b.common_name).is_err() {
        return;
    }
    let subject = name.build();
    let challenge = if b.right_challenge {
        Some(CHALLENGE)
    } else {
        b.challenge.as_deref()
    };
    let Ok(csr) = build_csr(&f.key, &subject, challenge) else {
        return;
    };
    let cipher = match b.cipher % 5 {
        0 => ContentCipher::DesCbc,
        1 => ContentCipher::DesEde3Cbc,
        2 => ContentCipher::Aes128Cbc,
        3 => ContentCipher::Aes192Cbc,
        _ => ContentCipher::Aes256Cbc,
    };
    let digest = if b.sha1 { Digest::Sha1 } else { Digest::Sha256 };
    let message_type = if b.renewal {
        MessageType::RenewalReq
    } else {
        MessageType::PkcsReq
    };
    let signer = if b.issued_signer {
        &f.issued
    } else {
        &f.throwaway
    };
    let Ok(mut message) = build_request(
        &csr,
        message_type,
        &b.transaction_id,
        &b.nonce,
        signer,
        &f.key,
        f.ca.certificate(),
        cipher,
        digest,
    ) else {
        return;
    };
    if b.corruptions.is_empty() {
        let reply =
            f.rt.block_on(f.service.pki_operation(&message))
                .expect("a well-formed request gets a CertRep");
        CertRep::parse(&reply, f.ca.certificate(), signer, &f.key)
            .expect("the CertRep verifies on the client side");
        return;
    }
    for (at, byte) in b.corruptions {
        let len = message.len();
        message[usize::from(at) % len] ^= byte;
    }
    raw(f, &message);
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    match common::mode(data) {
        (0, message) => raw(f, message),
        (_, rest) => {
            if let Ok(b) = Built::arbitrary_take_rest(Unstructured::new(rest)) {
                built(f, b);
            }
        }
    }
});
