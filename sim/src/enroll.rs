//! Enrolling the way a Mac does: download the profile (or present signed MachineInfo), run SCEP
//! with the profile's challenge, then talk to the profile's URLs.

use anyhow::{Context as _, bail};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::BasicConstraints;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509, X509Name};
use plist::Value;
use pomona::wire::machine_info::{MachineInfo, sign_machine_info};

use super::device::Device;

/// What a device reads from an enrollment profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// SCEP URL.
    pub scep_url: String,
    /// SCEP challenge.
    pub challenge: Option<String>,
    /// `ServerURL`.
    pub server_url: String,
    /// `CheckInURL` (ServerURL when absent).
    pub check_in_url: String,
    /// APNs topic.
    pub topic: String,
    /// `SignMessage`.
    pub sign_message: bool,
    /// Whether the profile was CMS-signed.
    pub signed: bool,
}

impl Profile {
    /// Read a profile, unwrapping a CMS signature if there is one.
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Self> {
        let (xml, signed) = if bytes.first() == Some(&0x30) {
            let p7 = Pkcs7::from_der(bytes).context("signed profile")?;
            let mut out = Vec::new();
            let store = X509StoreBuilder::new()?.build();
            let none: Stack<X509> = Stack::new()?;
            p7.verify(&none, &store, None, Some(&mut out), Pkcs7Flags::NOVERIFY)
                .context("profile signature")?;
            (out, true)
        } else {
            (bytes.to_vec(), false)
        };
        let v = Value::from_reader(std::io::Cursor::new(&xml)).context("profile plist")?;
        let payloads = v
            .as_dictionary()
            .and_then(|d| d.get("PayloadContent"))
            .and_then(Value::as_array)
            .context("PayloadContent")?;
        let find = |t: &str| {
            payloads
                .iter()
                .filter_map(Value::as_dictionary)
                .find(|p| p.get("PayloadType").and_then(Value::as_string) == Some(t))
        };
        let scep = find("com.apple.security.scep").context("SCEP payload")?;
        let scep_content = scep
            .get("PayloadContent")
            .and_then(Value::as_dictionary)
            .context("SCEP PayloadContent")?;
        let mdm = find("com.apple.mdm").context("MDM payload")?;
        let s =
            |d: &plist::Dictionary, k: &str| d.get(k).and_then(Value::as_string).map(str::to_owned);
        if s(mdm, "IdentityCertificateUUID") != s(scep, "PayloadUUID") {
            bail!("the MDM payload does not use the SCEP identity");
        }
        let server_url = s(mdm, "ServerURL").context("ServerURL")?;
        Ok(Self {
            scep_url: s(scep_content, "URL").context("SCEP URL")?,
            challenge: s(scep_content, "Challenge"),
            check_in_url: s(mdm, "CheckInURL").unwrap_or_else(|| server_url.clone()),
            server_url,
            topic: s(mdm, "Topic").context("Topic")?,
            sign_message: mdm
                .get("SignMessage")
                .and_then(Value::as_boolean)
                .unwrap_or(false),
            signed,
        })
    }

    /// Obtain an identity through SCEP and return a device using this profile's URLs
    /// (not yet authenticated).
    pub async fn enroll(&self, client: &reqwest::Client) -> anyhow::Result<Device> {
        let key = PKey::from_rsa(Rsa::generate(2048)?)?;
        self.enroll_with_key(client, "pomona-testkit-device", key)
            .await
    }

    /// [`Profile::enroll`] with a given key and certificate common name.
    pub async fn enroll_with_key(
        &self,
        client: &reqwest::Client,
        common_name: &str,
        key: PKey<Private>,
    ) -> anyhow::Result<Device> {
        let challenge = self
            .challenge
            .as_deref()
            .context("profile has no challenge")?;
        let identity =
            super::scep::enroll_with_key(client, &self.scep_url, challenge, common_name, key)
                .await?;
        let mut d = Device::with_urls(
            identity,
            &self.check_in_url,
            &self.server_url,
            client.clone(),
        );
        d.topic = self.topic.clone();
        Ok(d)
    }
}

/// `GET /mdm/enroll[?token=]`: the raw profile bytes.
pub async fn download_profile(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
) -> anyhow::Result<Vec<u8>> {
    let url = match token {
        Some(t) => format!("{base}/mdm/enroll?token={t}"),
        None => format!("{base}/mdm/enroll"),
    };
    let r = client.get(url).send().await?;
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = r.bytes().await?.to_vec();
    if !status.is_success() {
        bail!(
            "GET /mdm/enroll answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    anyhow::ensure!(
        ct == "application/x-apple-aspen-config",
        "content type {ct}"
    );
    Ok(body)
}

/// A stand-in for Apple's device CA: root → intermediate, issuing device certificates that
/// sign MachineInfo the way Apple's do.
pub struct TestDeviceCa {
    root: (X509, PKey<Private>),
    intermediate: (X509, PKey<Private>),
    /// The key every device certificate is issued for (each signature gets its own certificate;
    /// sharing the key keeps simulating thousands of devices cheap).
    leaf_key: PKey<Private>,
}

fn cert(
    cn: &str,
    issuer: Option<&(X509, PKey<Private>)>,
    ca: bool,
) -> anyhow::Result<(X509, PKey<Private>)> {
    cert_for(cn, issuer, ca, PKey::from_rsa(Rsa::generate(2048)?)?)
}

fn cert_for(
    cn: &str,
    issuer: Option<&(X509, PKey<Private>)>,
    ca: bool,
    key: PKey<Private>,
) -> anyhow::Result<(X509, PKey<Private>)> {
    let mut name = X509Name::builder()?;
    name.append_entry_by_text("CN", cn)?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(64, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(issuer.map_or(&*name, |i| i.0.subject_name()))?;
    b.set_pubkey(&key)?;
    let (nb, na) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(30)?);
    b.set_not_before(&nb)?;
    b.set_not_after(&na)?;
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    }
    b.sign(issuer.map_or(&key, |i| &i.1), MessageDigest::sha256())?;
    Ok((b.build(), key))
}

impl TestDeviceCa {
    /// A new root and intermediate.
    pub fn new() -> anyhow::Result<Self> {
        let root = cert("Pomona Test Device Root", None, true)?;
        let intermediate = cert("Pomona Test Device CA", Some(&root), true)?;
        let leaf_key = PKey::from_rsa(Rsa::generate(2048)?)?;
        Ok(Self {
            root,
            intermediate,
            leaf_key,
        })
    }

    /// PEM bundle to trust (`enroll.device_ca_file`): root and intermediate.
    pub fn trust_pem(&self) -> anyhow::Result<Vec<u8>> {
        Ok([self.root.0.to_pem()?, self.intermediate.0.to_pem()?].concat())
    }

    /// Sign `info` with a fresh device certificate from this CA.
    pub fn sign(&self, info: &MachineInfo) -> anyhow::Result<Vec<u8>> {
        let leaf = cert_for(
            &format!("device {}", info.udid),
            Some(&self.intermediate),
            false,
            self.leaf_key.clone(),
        )?;
        Ok(sign_machine_info(info, &leaf.0, &leaf.1, &[])?)
    }
}

/// Automated Device Enrollment as a Mac does it: POST MachineInfo for `udid` and `serial`, signed
/// by `device_ca`, to `{base}/mdm/enroll`, then SCEP with the profile's challenge (whose
/// certificate the engine binds to that UDID and serial). Returns the device, not yet
/// authenticated.
pub async fn enroll_automated(
    client: &reqwest::Client,
    base: &str,
    device_ca: &TestDeviceCa,
    udid: &str,
    serial: &str,
) -> anyhow::Result<Device> {
    let info = MachineInfo {
        udid: udid.to_owned(),
        serial: serial.to_owned(),
        product: Some("Mac15,3".into()),
        os_version: Some("15.1".into()),
        ..Default::default()
    };
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    enroll_automated_as(client, base, device_ca, &info, key).await
}

/// [`enroll_automated`] with the whole MachineInfo and the device's identity key given (the
/// demo pre-generates keys so that RSA key generation is not what it measures).
pub async fn enroll_automated_as(
    client: &reqwest::Client,
    base: &str,
    device_ca: &TestDeviceCa,
    info: &MachineInfo,
    key: PKey<Private>,
) -> anyhow::Result<Device> {
    let response = client
        .post(format!("{}/mdm/enroll", base.trim_end_matches('/')))
        .body(device_ca.sign(info)?)
        .send()
        .await?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        bail!(
            "the enrollment profile was refused ({status}): {}",
            String::from_utf8_lossy(&body)
        );
    }
    let mut device = Profile::parse(&body)?
        .enroll_with_key(client, &info.udid, key)
        .await
        .context("SCEP")?;
    device.udid = info.udid.clone();
    device.serial = info.serial.clone();
    Ok(device)
}
