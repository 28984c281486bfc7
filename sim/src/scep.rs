//! A SCEP client, as a device runs it during enrollment.

use anyhow::{Context as _, bail};
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509Name};
use pomona::wire::scep::{
    CertRep, ContentCipher, Digest, MessageType, build_csr, build_request, self_signed_requester,
};

use super::device::DeviceIdentity;

/// Fetch the CA certificate (`GetCACert`).
pub async fn ca_certificate(client: &reqwest::Client, scep_url: &str) -> anyhow::Result<X509> {
    let r = client
        .get(format!("{scep_url}?operation=GetCACert"))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "GetCACert answered {}", r.status());
    Ok(X509::from_der(&r.bytes().await?)?)
}

/// Build a `PKCSReq` for a fresh key; returns the message and the requester identity.
pub fn pkcs_req(
    ca: &X509,
    common_name: &str,
    challenge: Option<&str>,
    cipher: ContentCipher,
) -> anyhow::Result<(Vec<u8>, DeviceIdentity)> {
    pkcs_req_with_key(
        ca,
        common_name,
        challenge,
        cipher,
        PKey::from_rsa(Rsa::generate(2048)?)?,
    )
}

/// Build a `PKCSReq` for `key` (its transaction ID is unique to the key and the name, so
/// simulators may share keys between devices).
pub fn pkcs_req_with_key(
    ca: &X509,
    common_name: &str,
    challenge: Option<&str>,
    cipher: ContentCipher,
    key: PKey<openssl::pkey::Private>,
) -> anyhow::Result<(Vec<u8>, DeviceIdentity)> {
    let mut name = X509Name::builder()?;
    name.append_entry_by_text("CN", common_name)?;
    let csr = build_csr(&key, &name.build(), challenge)?;
    let requester = self_signed_requester(&key, common_name)?;
    let mut nonce = [0u8; 16];
    openssl::rand::rand_bytes(&mut nonce)?;
    let mut id = key.public_key_to_der()?;
    id.extend_from_slice(common_name.as_bytes());
    let tx = hex::encode(openssl::sha::sha256(&id));
    let msg = build_request(
        &csr,
        MessageType::PkcsReq,
        &tx,
        &nonce,
        &requester,
        &key,
        ca,
        cipher,
        Digest::Sha256,
    )?;
    Ok((
        msg,
        DeviceIdentity {
            key,
            cert: requester,
        },
    ))
}

/// Enroll through SCEP: GetCACert, then a `PKCSReq` with `challenge`; returns the issued identity.
pub async fn enroll(
    client: &reqwest::Client,
    scep_url: &str,
    challenge: &str,
) -> anyhow::Result<DeviceIdentity> {
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    enroll_with_key(client, scep_url, challenge, "pomona-testkit-device", key).await
}

/// [`enroll`] with a given key and common name (a simulator of many devices can share a few
/// pre-generated keys: 2048-bit key generation costs far more CPU than the engine's work).
pub async fn enroll_with_key(
    client: &reqwest::Client,
    scep_url: &str,
    challenge: &str,
    common_name: &str,
    key: PKey<openssl::pkey::Private>,
) -> anyhow::Result<DeviceIdentity> {
    let ca = ca_certificate(client, scep_url).await?;
    let (msg, requester) = pkcs_req_with_key(
        &ca,
        common_name,
        Some(challenge),
        ContentCipher::Aes256Cbc,
        key,
    )?;
    let r = client
        .post(format!("{scep_url}?operation=PKIOperation"))
        .header("Content-Type", "application/x-pki-message")
        .body(msg)
        .send()
        .await?;
    anyhow::ensure!(
        r.status().is_success(),
        "PKIOperation answered {}",
        r.status()
    );
    let rep = CertRep::parse(&r.bytes().await?, &ca, &requester.cert, &requester.key)
        .context("reading the CertRep")?;
    if rep.message.pki_status.as_deref() != Some("0") {
        bail!(
            "SCEP refused: pkiStatus {:?}, failInfo {:?}",
            rep.message.pki_status,
            rep.message.fail_info
        );
    }
    let cert = rep
        .certificates
        .into_iter()
        .next()
        .context("CertRep carries no certificate")?;
    Ok(DeviceIdentity {
        key: requester.key,
        cert,
    })
}

/// Renew an identity: a `RenewalReq` for a new key, signed by the current identity.
pub async fn renew(
    client: &reqwest::Client,
    scep_url: &str,
    current: &DeviceIdentity,
) -> anyhow::Result<DeviceIdentity> {
    let ca = ca_certificate(client, scep_url).await?;
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut name = X509Name::builder()?;
    name.append_entry_by_text("CN", "pomona-testkit-device")?;
    let csr = build_csr(&key, &name.build(), None)?;
    let mut nonce = [0u8; 16];
    openssl::rand::rand_bytes(&mut nonce)?;
    let msg = build_request(
        &csr,
        MessageType::RenewalReq,
        &hex::encode(nonce),
        &nonce,
        &current.cert,
        &current.key,
        &ca,
        ContentCipher::Aes128Cbc,
        Digest::Sha256,
    )?;
    let r = client
        .post(format!("{scep_url}?operation=PKIOperation"))
        .body(msg)
        .send()
        .await?;
    anyhow::ensure!(
        r.status().is_success(),
        "PKIOperation answered {}",
        r.status()
    );
    let rep = CertRep::parse(&r.bytes().await?, &ca, &current.cert, &current.key)?;
    if rep.message.pki_status.as_deref() != Some("0") {
        bail!("renewal refused: failInfo {:?}", rep.message.fail_info);
    }
    let cert = rep
        .certificates
        .into_iter()
        .next()
        .context("no certificate")?;
    Ok(DeviceIdentity { key, cert })
}
