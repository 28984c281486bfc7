//! A simulated Apple device.

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509Name};
use plist::{Dictionary, Value};
use pomona::ca::CertificateAuthority;
use pomona::wire::cms::{SignatureStyle, sign_detached};

/// A device's identity: its key and certificate.
#[derive(Clone)]
pub struct DeviceIdentity {
    /// Private key.
    pub key: PKey<Private>,
    /// Identity certificate.
    pub cert: X509,
}

impl std::fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("subject", &self.cert.subject_name())
            .finish_non_exhaustive()
    }
}

impl DeviceIdentity {
    /// A new key with a certificate issued in-process by `ca` (as SCEP would).
    pub fn issue(ca: &CertificateAuthority, common_name: &str) -> anyhow::Result<Self> {
        let key = PKey::from_rsa(Rsa::generate(2048)?)?;
        let public = PKey::public_key_from_der(&key.public_key_to_der()?)?;
        let mut name = X509Name::builder()?;
        name.append_entry_by_text("CN", common_name)?;
        let cert = ca.issue_device_cert(&public, &name.build(), 365)?;
        Ok(Self { key, cert })
    }

    /// Load PEM files.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<Self> {
        Ok(Self {
            key: PKey::private_key_from_pem(key_pem)?,
            cert: X509::from_pem(cert_pem)?,
        })
    }
}

/// How the device proves its identity on each request.
#[derive(Debug, Clone)]
pub enum Transport {
    /// `Mdm-Signature` in the given style.
    Signature(SignatureStyle),
    /// The certificate in a header, as a TLS-terminating proxy forwards it (RFC 9440 format).
    ProxyHeader(String),
    /// No identity at all (for negative tests).
    Anonymous,
}

/// A command the server handed to the device.
#[derive(Debug, Clone)]
pub struct ReceivedCommand {
    /// `CommandUUID`.
    pub uuid: String,
    /// `Command.RequestType`.
    pub request_type: String,
    /// The exact bytes received.
    pub raw: Vec<u8>,
}

/// The result of one device request.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// Parse the body as a command, if it is not empty.
    pub fn command(&self) -> anyhow::Result<Option<ReceivedCommand>> {
        if self.status != 200 {
            bail!(
                "server answered {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            );
        }
        if self.body.is_empty() {
            return Ok(None);
        }
        let v = Value::from_reader(std::io::Cursor::new(&self.body)).context("command plist")?;
        let d = v.as_dictionary().context("command is a dictionary")?;
        let uuid = d
            .get("CommandUUID")
            .and_then(Value::as_string)
            .context("CommandUUID")?;
        let rt = d
            .get("Command")
            .and_then(Value::as_dictionary)
            .and_then(|c| c.get("RequestType"))
            .and_then(Value::as_string)
            .context("RequestType")?;
        Ok(Some(ReceivedCommand {
            uuid: uuid.to_owned(),
            request_type: rt.to_owned(),
            raw: self.body.clone(),
        }))
    }
}

/// A simulated device talking to one server.
pub struct Device {
    /// Device UDID.
    pub udid: String,
    /// Serial number.
    pub serial: String,
    /// APNs topic it reports.
    pub topic: String,
    /// Push token it reports.
    pub push_token: Vec<u8>,
    /// Identity.
    pub identity: DeviceIdentity,
    /// How it authenticates requests.
    pub transport: Transport,
    /// Where check-in messages go (the profile's `CheckInURL`).
    pub checkin_url: String,
    /// Where command reports go (the profile's `ServerURL`).
    pub server_url: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("udid", &self.udid)
            .field("serial", &self.serial)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

/// Serialize a dictionary as an XML plist.
pub fn xml(d: &Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    Value::Dictionary(d.clone())
        .to_writer_xml(&mut out)
        .expect("in-memory plist");
    out
}

impl Device {
    /// A device with a random UDID and serial, talking to Pomona's default paths on `server`
    /// (e.g. `http://127.0.0.1:9000`).
    pub fn new(identity: DeviceIdentity, server: &str, client: reqwest::Client) -> Self {
        let server = server.trim_end_matches('/');
        Self::with_urls(
            identity,
            &format!("{server}/mdm/checkin"),
            &format!("{server}/mdm/connect"),
            client,
        )
    }

    /// A device with a random UDID and serial, using the URLs of an enrollment profile.
    pub fn with_urls(
        identity: DeviceIdentity,
        checkin_url: &str,
        server_url: &str,
        client: reqwest::Client,
    ) -> Self {
        let udid = uuid::Uuid::new_v4().to_string().to_uppercase();
        let serial = format!("C02{}", &udid[..8]);
        Self {
            push_token: udid.as_bytes()[..32].to_vec(),
            udid,
            serial,
            topic: "com.apple.mgmt.External.pomona-test".into(),
            identity,
            transport: Transport::Signature(SignatureStyle::DerWithAttributes),
            checkin_url: checkin_url.to_owned(),
            server_url: server_url.to_owned(),
            client,
        }
    }

    fn base(&self, message_type: Option<&str>) -> Dictionary {
        let mut d = Dictionary::new();
        if let Some(t) = message_type {
            d.insert("MessageType".into(), t.into());
        }
        d.insert("UDID".into(), self.udid.clone().into());
        d
    }

    /// Send `body` to `url` with this device's identity.
    pub async fn put(&self, url: &str, content_type: &str, body: Vec<u8>) -> anyhow::Result<Reply> {
        self.send(reqwest::Method::PUT, url, content_type, body)
            .await
    }

    /// Send `body` to `url` with `method` and this device's identity.
    pub async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<Reply> {
        let mut req = self
            .client
            .request(method, url)
            .header("Content-Type", content_type);
        match &self.transport {
            Transport::Signature(style) => {
                let sig = sign_detached(&body, &self.identity.cert, &self.identity.key, *style)?;
                req = req.header("Mdm-Signature", B64.encode(sig));
            }
            Transport::ProxyHeader(name) => {
                let der = self.identity.cert.to_der()?;
                req = req.header(name.as_str(), format!(":{}:", B64.encode(der)));
            }
            Transport::Anonymous => {}
        }
        let resp = req.body(body).send().await?;
        Ok(Reply {
            status: resp.status().as_u16(),
            body: resp.bytes().await?.to_vec(),
        })
    }

    /// Poll the setup progress endpoint (`POST /mdm/setup`, signed like a check-in), as a
    /// progress window on the Mac would. Returns the HTTP status and the JSON answer.
    pub async fn setup_status(&self) -> anyhow::Result<(u16, serde_json::Value)> {
        let url = self.checkin_url.replace("/mdm/checkin", "/mdm/setup");
        let reply = self
            .send(reqwest::Method::POST, &url, "application/json", Vec::new())
            .await?;
        let json = serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null);
        Ok((reply.status, json))
    }

    /// Send a check-in message built from `d`.
    pub async fn checkin(&self, d: &Dictionary) -> anyhow::Result<Reply> {
        self.put(
            &self.checkin_url,
            "application/x-apple-aspen-mdm-checkin",
            xml(d),
        )
        .await
    }

    /// Send a command report built from `d`.
    pub async fn report(&self, d: &Dictionary) -> anyhow::Result<Reply> {
        self.put(&self.server_url, "application/x-apple-aspen-mdm", xml(d))
            .await
    }

    fn ok(reply: Reply, what: &str) -> anyhow::Result<Reply> {
        if reply.status != 200 {
            bail!(
                "{what}: server answered {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            );
        }
        Ok(reply)
    }

    /// `Authenticate`.
    pub async fn authenticate(&self) -> anyhow::Result<()> {
        let mut d = self.base(Some("Authenticate"));
        d.insert("Topic".into(), self.topic.clone().into());
        d.insert("SerialNumber".into(), self.serial.clone().into());
        d.insert("Model".into(), "Mac14,2".into());
        d.insert("ModelName".into(), "MacBook Air".into());
        d.insert("ProductName".into(), "Mac14,2".into());
        d.insert("OSVersion".into(), "14.4".into());
        d.insert("BuildVersion".into(), "23E214".into());
        d.insert("DeviceName".into(), "Test Mac".into());
        Self::ok(self.checkin(&d).await?, "Authenticate").map(|_| ())
    }

    /// `TokenUpdate` (device channel).
    pub async fn token_update(&self, awaiting_configuration: bool) -> anyhow::Result<()> {
        let mut d = self.base(Some("TokenUpdate"));
        d.insert("Token".into(), Value::Data(self.push_token.clone()));
        d.insert("PushMagic".into(), format!("magic-{}", self.udid).into());
        d.insert("Topic".into(), self.topic.clone().into());
        d.insert("UnlockToken".into(), Value::Data(b"unlock".to_vec()));
        if awaiting_configuration {
            d.insert("AwaitingConfiguration".into(), true.into());
        }
        Self::ok(self.checkin(&d).await?, "TokenUpdate").map(|_| ())
    }

    /// `TokenUpdate` for a macOS user channel.
    pub async fn user_token_update(&self, user_id: &str, short_name: &str) -> anyhow::Result<()> {
        let mut d = self.base(Some("TokenUpdate"));
        d.insert("UserID".into(), user_id.into());
        d.insert("UserShortName".into(), short_name.into());
        d.insert("UserLongName".into(), format!("{short_name} (long)").into());
        d.insert("Token".into(), Value::Data(vec![9; 32]));
        d.insert("PushMagic".into(), "user-magic".into());
        d.insert("Topic".into(), self.topic.clone().into());
        Self::ok(self.checkin(&d).await?, "user TokenUpdate").map(|_| ())
    }

    /// Authenticate then TokenUpdate: a completed enrollment.
    pub async fn enroll(&self) -> anyhow::Result<()> {
        self.authenticate().await?;
        self.token_update(false).await
    }

    /// `CheckOut`.
    pub async fn check_out(&self) -> anyhow::Result<()> {
        Self::ok(
            self.checkin(&self.base(Some("CheckOut"))).await?,
            "CheckOut",
        )
        .map(|_| ())
    }

    /// Send a report with `status` for `uuid` (None for `Idle`); returns the next command.
    pub async fn send_status(
        &self,
        status: &str,
        uuid: Option<&str>,
    ) -> anyhow::Result<Option<ReceivedCommand>> {
        let mut d = self.base(None);
        d.insert("Status".into(), status.into());
        if let Some(u) = uuid {
            d.insert("CommandUUID".into(), u.into());
        }
        if status == "Error" {
            let mut e = Dictionary::new();
            e.insert("ErrorCode".into(), 12021.into());
            e.insert("ErrorDomain".into(), "MCMDMErrorDomain".into());
            e.insert("LocalizedDescription".into(), "Simulated failure".into());
            d.insert("ErrorChain".into(), Value::Array(vec![e.into()]));
        }
        self.report(&d).await?.command()
    }

    /// `TokenUpdate` for a Shared iPad user's channel (`UserID` is Apple's all-F value).
    pub async fn shared_ipad_user_token_update(
        &self,
        short_name: &str,
        awaiting_configuration: bool,
    ) -> anyhow::Result<()> {
        let mut d = self.base(Some("TokenUpdate"));
        d.insert(
            "UserID".into(),
            pomona::wire::enrollment_id::SHARED_IPAD_USER_ID.into(),
        );
        d.insert("UserShortName".into(), short_name.into());
        d.insert("Token".into(), Value::Data(vec![7; 32]));
        d.insert("PushMagic".into(), "shared-ipad-magic".into());
        d.insert("Topic".into(), self.topic.clone().into());
        if awaiting_configuration {
            d.insert("AwaitingConfiguration".into(), true.into());
        }
        Self::ok(self.checkin(&d).await?, "Shared iPad user TokenUpdate").map(|_| ())
    }

    /// `Idle` on a Shared iPad user's channel, or acknowledge `uuid` there.
    pub async fn shared_ipad_user_status(
        &self,
        short_name: &str,
        uuid: Option<&str>,
    ) -> anyhow::Result<Option<ReceivedCommand>> {
        let mut d = self.base(None);
        d.insert(
            "UserID".into(),
            pomona::wire::enrollment_id::SHARED_IPAD_USER_ID.into(),
        );
        d.insert("UserShortName".into(), short_name.into());
        match uuid {
            Some(u) => {
                d.insert("Status".into(), "Acknowledged".into());
                d.insert("CommandUUID".into(), u.into());
            }
            None => {
                d.insert("Status".into(), "Idle".into());
            }
        }
        self.report(&d).await?.command()
    }

    /// `Idle`: anything for me?
    pub async fn idle(&self) -> anyhow::Result<Option<ReceivedCommand>> {
        self.send_status("Idle", None).await
    }

    /// `Acknowledged` for `uuid`.
    pub async fn acknowledge(&self, uuid: &str) -> anyhow::Result<Option<ReceivedCommand>> {
        self.send_status("Acknowledged", Some(uuid)).await
    }

    /// `NotNow` for `uuid`.
    pub async fn not_now(&self, uuid: &str) -> anyhow::Result<Option<ReceivedCommand>> {
        self.send_status("NotNow", Some(uuid)).await
    }

    /// `Error` for `uuid`.
    pub async fn error(&self, uuid: &str) -> anyhow::Result<Option<ReceivedCommand>> {
        self.send_status("Error", Some(uuid)).await
    }

    /// Idle, then acknowledge every command until the queue is empty. Returns what was run.
    pub async fn drain(&self) -> anyhow::Result<Vec<ReceivedCommand>> {
        let mut done = Vec::new();
        let mut next = self.idle().await?;
        while let Some(cmd) = next {
            next = self.acknowledge(&cmd.uuid).await?;
            done.push(cmd);
        }
        Ok(done)
    }
}
