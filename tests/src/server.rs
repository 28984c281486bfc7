//! Running Pomona for tests: in-process, or as the real `pomona serve` binary.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::http::HeaderName;
use pomona::http::{HttpOptions, Routes};
use pomona::{Engine, EngineBuilder};
use tokio::sync::oneshot;

use crate::api::ApiClient;
use crate::device::{Device, DeviceIdentity};

/// The API key test servers use.
pub const TEST_API_KEY: &str = "pomona-test-api-key-0123456789";

/// An engine serving on an ephemeral loopback port inside the test process.
pub struct TestServer {
    /// The engine.
    pub engine: Engine,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// A shared HTTP client.
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Start an engine with defaults (in-memory store, test API key).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|b| b).await
    }

    /// Start an engine, letting `configure` adjust the builder.
    pub async fn start_with(
        configure: impl FnOnce(EngineBuilder) -> EngineBuilder,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let builder = configure(Engine::builder().public_url(&url));
        let engine = builder.build().await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let router = Routes::new(
            &engine,
            HttpOptions::new()
                .api_key(TEST_API_KEY)
                .client_cert_header(HeaderName::from_static("x-client-cert")),
        )
        .router();
        let task = tokio::spawn(async move {
            let _ = pomona::http::server::serve(listener, router, None, async {
                let _ = stopped.await;
            })
            .await;
        });
        Ok(Self {
            engine,
            url,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// A new simulated device with an identity issued by this engine's CA and bound to its UDID
    /// and serial number, as SCEP binds a certificate issued after verified MachineInfo (an
    /// Automated Device Enrollment).
    pub async fn device(&self) -> anyhow::Result<Device> {
        let dev = self.device_self_asserted()?;
        bind_as_machine_info(&self.engine, &dev).await?;
        Ok(dev)
    }

    /// A new simulated device with an identity issued by this engine's CA and no evidence of
    /// which device it is (a manual enrollment): its serial number is self-asserted.
    pub fn device_self_asserted(&self) -> anyhow::Result<Device> {
        let identity = DeviceIdentity::issue(self.engine.ca(), "pomona-test-device")?;
        Ok(Device::new(identity, &self.url, self.client.clone()))
    }

    /// An admin API client with the right key.
    pub fn api(&self) -> ApiClient {
        ApiClient::new(&self.url, TEST_API_KEY, self.client.clone())
    }

    /// Stop serving and shut the engine down.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.engine.shutdown().await;
    }
}

/// Path of a binary built next to the running test executable (`target/<profile>/NAME`).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("test executable has a directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps has a parent")?;
    }
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build it first (cargo build -p pomona-cli)",
            path.display()
        );
    }
    Ok(path)
}

/// A CA for a `pomona serve` child process, written as PEM files, so a test can issue device
/// identities the process trusts.
pub struct ServeCa {
    /// The CA (issue device identities with it).
    pub ca: pomona::ca::CertificateAuthority,
    /// A test device CA the process trusts for signed MachineInfo (enroll devices with
    /// [`pomona_sim::enroll::enroll_automated`]).
    pub device_ca: pomona_sim::enroll::TestDeviceCa,
    cert: String,
    key: String,
    device_ca_file: String,
}

impl ServeCa {
    /// Generate a CA and write its certificate and key into `dir`.
    pub fn write(dir: &Path) -> anyhow::Result<Self> {
        let ca = pomona::ca::CertificateAuthority::generate(&Default::default())?;
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
        std::fs::write(&cert, ca.certificate().to_pem()?)?;
        std::fs::write(&key, ca.private_key().private_key_to_pem_pkcs8()?)?;
        let device_ca = pomona_sim::enroll::TestDeviceCa::new()?;
        let device_ca_file = dir.join("device-ca.pem");
        std::fs::write(&device_ca_file, device_ca.trust_pem()?)?;
        let text = |p: PathBuf| p.to_str().map(str::to_owned).context("non-UTF-8 temp path");
        Ok(Self {
            ca,
            device_ca,
            cert: text(cert)?,
            key: text(key)?,
            device_ca_file: text(device_ca_file)?,
        })
    }

    /// The environment for [`ServeProcess::start`]: this CA, the test device CA and the admin
    /// `api_key`.
    pub fn env<'a>(&'a self, api_key: &'a str) -> [(&'a str, &'a str); 4] {
        [
            ("POMONA_API_KEY", api_key),
            ("POMONA_CA_CERT_FILE", &self.cert),
            ("POMONA_CA_KEY_FILE", &self.key),
            ("POMONA_ENROLL_DEVICE_CA_FILE", &self.device_ca_file),
        ]
    }
}

/// The real `pomona serve` binary running as a child process.
pub struct ServeProcess {
    /// The child.
    pub child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The data directory.
    pub data_dir: PathBuf,
}

impl ServeProcess {
    /// Start `pomona serve` on a free port with `data_dir`, extra environment and arguments,
    /// and wait until `/health` answers.
    pub async fn start(
        data_dir: &Path,
        env: &[(&str, &str)],
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let url = format!("http://127.0.0.1:{port}");
        let mut cmd = tokio::process::Command::new(sibling_binary("pomona")?);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--public-url")
            .arg(&url)
            .args(extra_args)
            .env("POMONA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("spawning pomona serve")?;
        let mut p = Self {
            child,
            url,
            data_dir: data_dir.to_owned(),
        };
        p.wait_healthy().await?;
        Ok(p)
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait()? {
                bail!("pomona serve exited early with {status}");
            }
            if let Ok(r) = client.get(format!("{}/health", self.url)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("pomona serve did not become healthy within 10 s")
    }

    /// Kill the process with SIGKILL (no shutdown work at all).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// Ask the process to stop (SIGTERM) and wait for it.
    pub async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .context("running kill -TERM")?;
        }
        Ok(tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await??)
    }
}

/// Record that `dev`'s certificate was issued for verified MachineInfo naming its UDID and serial
/// (what SCEP records for a challenge minted by `POST /mdm/enroll`), for devices whose identity a
/// test issued directly from the CA.
pub async fn bind_as_machine_info(engine: &Engine, dev: &Device) -> anyhow::Result<()> {
    let hash = pomona::store::CertHash::of_der(&dev.identity.cert.to_der()?);
    let binding = pomona::store::CertBinding {
        udid: dev.udid.clone(),
        serial: dev.serial.clone(),
        source: pomona::store::BindingSource::MachineInfo,
    };
    engine.store().bind_cert(&hash, &binding).await?;
    Ok(())
}
