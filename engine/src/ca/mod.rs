//! The engine's certificate authority: it issues device identity certificates and is what the
//! check-in path trusts.
//!
//! Generated on first start (RSA, long-lived, sealed in the store) or imported from PEM files.

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, PKeyRef, Private, Public};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{X509, X509Name, X509NameRef, X509PurposeId, X509Ref, X509StoreContext};

use crate::seal::{SealError, SealKey};
use crate::store::{SecretStore, StoreError};

const SECRET_CERT: &str = "ca.cert";
const SECRET_KEY: &str = "ca.key";

/// Errors creating, loading or using the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// OpenSSL failed.
    #[error("CA crypto failure: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
    /// The imported certificate is not PEM.
    #[error("CA import: certificate is not PEM: {0}")]
    CertificateNotPem(#[source] openssl::error::ErrorStack),
    /// The imported private key is not an unencrypted PEM key.
    #[error("CA import: private key is not unencrypted PEM: {0}")]
    KeyNotPem(#[source] openssl::error::ErrorStack),
    /// The imported private key is not the certificate's.
    #[error("CA import: private key does not match the certificate")]
    KeyMismatch,
    /// A certificate does not chain to this CA or is not valid now.
    #[error("certificate not trusted: {0}")]
    Untrusted(String),
    /// Stored CA material could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored CA material could not be unsealed.
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// Parameters for generating a CA.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CaOptions {
    /// Subject common name.
    pub common_name: String,
    /// RSA key size.
    pub key_bits: u32,
    /// Validity of the CA certificate.
    pub validity_days: u32,
}

impl Default for CaOptions {
    fn default() -> Self {
        Self {
            common_name: "Pomona MDM CA".into(),
            key_bits: 2048,
            validity_days: 3650,
        }
    }
}

crate::setters::with_setters!(CaOptions {
    with_common_name => common_name: String,
    with_key_bits => key_bits: u32,
    with_validity_days => validity_days: u32,
});

/// A certificate authority: certificate, private key and a ready-made trust store.
pub struct CertificateAuthority {
    cert: X509,
    key: PKey<Private>,
    trust: X509Store,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.cert.subject_name())
            .finish_non_exhaustive()
    }
}

fn random_serial() -> Result<Asn1Integer, openssl::error::ErrorStack> {
    let mut bn = BigNum::new()?;
    bn.rand(127, MsbOption::MAYBE_ZERO, false)?;
    bn.to_asn1_integer()
}

fn trust_store(cert: &X509) -> Result<X509Store, openssl::error::ErrorStack> {
    let mut b = X509StoreBuilder::new()?;
    b.add_cert(cert.clone())?;
    b.set_purpose(X509PurposeId::SSL_CLIENT)?;
    Ok(b.build())
}

impl CertificateAuthority {
    /// Generate a new self-signed CA.
    pub fn generate(opts: &CaOptions) -> Result<Self, CaError> {
        let key = PKey::from_rsa(Rsa::generate(opts.key_bits)?)?;
        let mut name = X509Name::builder()?;
        name.append_entry_by_text("CN", &opts.common_name)?;
        let name = name.build();
        let mut b = X509::builder()?;
        b.set_version(2)?;
        let serial = random_serial()?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(&name)?;
        b.set_issuer_name(&name)?;
        b.set_pubkey(&key)?;
        let (not_before, not_after) = (
            Asn1Time::days_from_now(0)?,
            Asn1Time::days_from_now(opts.validity_days)?,
        );
        b.set_not_before(&not_before)?;
        b.set_not_after(&not_after)?;
        b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .digital_signature()
                .key_encipherment()
                .build()?,
        )?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
        b.append_extension(ski)?;
        b.sign(&key, MessageDigest::sha256())?;
        let cert = b.build();
        let trust = trust_store(&cert)?;
        Ok(Self { cert, key, trust })
    }

    /// Import a CA from PEM certificate and private key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, CaError> {
        let cert = X509::from_pem(cert_pem).map_err(CaError::CertificateNotPem)?;
        let key = PKey::private_key_from_pem(key_pem).map_err(CaError::KeyNotPem)?;
        if !cert.public_key()?.public_eq(&key) {
            return Err(CaError::KeyMismatch);
        }
        let trust = trust_store(&cert)?;
        Ok(Self { cert, key, trust })
    }

    /// Load the CA sealed in `store`, or generate one and seal it there.
    pub async fn load_or_generate(
        store: &dyn SecretStore,
        seal: &SealKey,
        opts: &CaOptions,
    ) -> Result<Self, CaError> {
        if let (Some(c), Some(k)) = (
            store.secret(SECRET_CERT).await?,
            store.secret(SECRET_KEY).await?,
        ) {
            let cert = seal.unseal(SECRET_CERT, &c)?;
            let key = seal.unseal(SECRET_KEY, &k)?;
            return Self::from_pem(&cert, &key);
        }
        let ca = Self::generate(opts)?;
        store
            .put_secret(
                SECRET_KEY,
                seal.seal(SECRET_KEY, &ca.key.private_key_to_pem_pkcs8()?),
            )
            .await?;
        store
            .put_secret(SECRET_CERT, seal.seal(SECRET_CERT, &ca.cert.to_pem()?))
            .await?;
        Ok(ca)
    }

    /// The CA certificate.
    pub fn certificate(&self) -> &X509Ref {
        &self.cert
    }

    /// The CA private key (for signing SCEP replies).
    pub fn private_key(&self) -> &PKeyRef<Private> {
        &self.key
    }

    /// Issue a device identity certificate (client-auth usage) for `public_key`.
    pub fn issue_device_cert(
        &self,
        public_key: &PKeyRef<Public>,
        subject: &X509NameRef,
        validity_days: u32,
    ) -> Result<X509, CaError> {
        let mut b = X509::builder()?;
        b.set_version(2)?;
        let serial = random_serial()?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(subject)?;
        b.set_issuer_name(self.cert.subject_name())?;
        b.set_pubkey(public_key)?;
        // Backdate a little for devices whose clocks run slow.
        let not_before =
            Asn1Time::from_unix(time::OffsetDateTime::now_utc().unix_timestamp() - 3600)?;
        b.set_not_before(&not_before)?;
        let not_after = Asn1Time::days_from_now(validity_days)?;
        b.set_not_after(&not_after)?;
        b.append_extension(BasicConstraints::new().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build()?,
        )?;
        b.append_extension(ExtendedKeyUsage::new().client_auth().build()?)?;
        let ctx = b.x509v3_context(Some(&self.cert), None);
        let ski = SubjectKeyIdentifier::new().build(&ctx)?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(false)
            .build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(ski)?;
        b.append_extension(aki)?;
        b.sign(&self.key, MessageDigest::sha256())?;
        Ok(b.build())
    }

    /// Verify that `cert` was issued by this CA, is valid now and allows client authentication.
    pub fn verify_device_cert(&self, cert: &X509Ref) -> Result<(), CaError> {
        let chain = Stack::new()?;
        let mut ctx = X509StoreContext::new()?;
        let ok = ctx.init(&self.trust, cert, &chain, |c| {
            let ok = c.verify_cert()?;
            Ok(if ok { None } else { Some(c.error()) })
        })?;
        match ok {
            None => Ok(()),
            Some(err) => Err(CaError::Untrusted(err.error_string().to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::RedbStore;

    fn device_subject(cn: &str) -> X509Name {
        let mut n = X509Name::builder().unwrap();
        n.append_entry_by_text("CN", cn).unwrap();
        n.build()
    }

    #[test]
    fn issues_and_verifies_device_certs() {
        let ca = CertificateAuthority::generate(&CaOptions::default()).unwrap();
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let public = PKey::public_key_from_der(&key.public_key_to_der().unwrap()).unwrap();
        let cert = ca
            .issue_device_cert(&public, &device_subject("device"), 365)
            .unwrap();
        ca.verify_device_cert(&cert).unwrap();

        let other = CertificateAuthority::generate(&CaOptions::default()).unwrap();
        let foreign = other
            .issue_device_cert(&public, &device_subject("device"), 365)
            .unwrap();
        let err = ca.verify_device_cert(&foreign).unwrap_err();
        assert!(matches!(err, CaError::Untrusted(_)), "{err}");
    }

    #[test]
    fn import_checks_the_key() {
        let a = CertificateAuthority::generate(&CaOptions::default()).unwrap();
        let b = CertificateAuthority::generate(&CaOptions::default()).unwrap();
        let cert = a.cert.to_pem().unwrap();
        let key = a.key.private_key_to_pem_pkcs8().unwrap();
        CertificateAuthority::from_pem(&cert, &key).unwrap();
        let wrong = b.key.private_key_to_pem_pkcs8().unwrap();
        let err = CertificateAuthority::from_pem(&cert, &wrong).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CA import: private key does not match the certificate"
        );
        let junk = CertificateAuthority::from_pem(b"junk", &key).unwrap_err();
        assert!(matches!(junk, CaError::CertificateNotPem(_)), "{junk}");
        let source = std::error::Error::source(&junk).expect("the OpenSSL error");
        assert!(source.is::<openssl::error::ErrorStack>());
    }

    #[tokio::test]
    async fn generated_once_then_loaded_sealed() {
        let store = RedbStore::in_memory().unwrap();
        let seal = SealKey::generate();
        let opts = CaOptions::default();
        let a = CertificateAuthority::load_or_generate(&store, &seal, &opts)
            .await
            .unwrap();
        let b = CertificateAuthority::load_or_generate(&store, &seal, &opts)
            .await
            .unwrap();
        assert_eq!(a.cert.to_der().unwrap(), b.cert.to_der().unwrap());
        let sealed = store.secret(SECRET_KEY).await.unwrap().unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("PRIVATE KEY"));
        let err = CertificateAuthority::load_or_generate(&store, &SealKey::generate(), &opts)
            .await
            .unwrap_err();
        assert!(matches!(err, CaError::Seal(SealError::Unseal { .. })));
    }
}
