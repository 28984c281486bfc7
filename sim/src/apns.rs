//! A fake APNs: HTTP/2 over TLS requiring a client certificate, recording every push and
//! answering as scripted; plus the test PKI (a CA, the server's certificate, push certificates).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{Ssl, SslAcceptor, SslMethod, SslVerifyMode};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509, X509Name};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_openssl::SslStream;

/// A CA that issues the fake server's TLS certificate and MDM push certificates.
pub struct ApnsTestPki {
    ca: (X509, PKey<Private>),
    server: (X509, PKey<Private>),
}

fn issue(
    subject: &[(Nid, &str)],
    issuer: Option<&(X509, PKey<Private>)>,
    ca: bool,
    san_ip: Option<&str>,
    days: u32,
) -> anyhow::Result<(X509, PKey<Private>)> {
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut name = X509Name::builder()?;
    for (nid, v) in subject {
        name.append_entry_by_nid(*nid, v)?;
    }
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
    let (nb, na) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(days)?);
    b.set_not_before(&nb)?;
    b.set_not_after(&na)?;
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    }
    if let Some(ip) = san_ip {
        let san = SubjectAlternativeName::new()
            .ip(ip)
            .dns("localhost")
            .build(&b.x509v3_context(issuer.map(|i| &*i.0), None))?;
        b.append_extension(san)?;
    }
    b.sign(issuer.map_or(&key, |i| &i.1), MessageDigest::sha256())?;
    Ok((b.build(), key))
}

impl ApnsTestPki {
    /// A new CA and server certificate for 127.0.0.1.
    pub fn new() -> anyhow::Result<Self> {
        let ca = issue(&[(Nid::COMMONNAME, "Fake APNs CA")], None, true, None, 30)?;
        let server = issue(
            &[(Nid::COMMONNAME, "127.0.0.1")],
            Some(&ca),
            false,
            Some("127.0.0.1"),
            30,
        )?;
        Ok(Self { ca, server })
    }

    /// The CA to trust for the fake server (`apns.extra_ca_file`), PEM.
    pub fn ca_pem(&self) -> Vec<u8> {
        self.ca.0.to_pem().expect("PEM")
    }

    /// Sign a CSR (PEM, as `pomona push csr` writes it) into a push certificate for `topic`, as
    /// Apple's portal would. Returns the certificate, PEM.
    pub fn sign_push_csr(&self, csr_pem: &[u8], topic: &str) -> anyhow::Result<Vec<u8>> {
        let csr = openssl::x509::X509Req::from_pem(csr_pem)?;
        let key = csr.public_key()?;
        anyhow::ensure!(csr.verify(&key)?, "the CSR's signature does not verify");
        let mut name = X509Name::builder()?;
        name.append_entry_by_nid(Nid::USERID, topic)?;
        name.append_entry_by_nid(Nid::COMMONNAME, "APSP:cli")?;
        let name = name.build();
        let mut b = X509::builder()?;
        b.set_version(2)?;
        let serial = BigNum::from_u32(7)?.to_asn1_integer()?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(&name)?;
        b.set_issuer_name(self.ca.0.subject_name())?;
        b.set_pubkey(&key)?;
        let (nb, na) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(365)?);
        b.set_not_before(&nb)?;
        b.set_not_after(&na)?;
        b.sign(&self.ca.1, MessageDigest::sha256())?;
        Ok(b.build().to_pem()?)
    }

    /// An MDM push certificate for `topic`, valid `days`: certificate then key, PEM.
    pub fn push_certificate(&self, topic: &str, days: u32) -> anyhow::Result<Vec<u8>> {
        let (cert, key) = issue(
            &[
                (Nid::USERID, topic),
                (
                    Nid::COMMONNAME,
                    &format!("APSP:{}", topic.rsplit('.').next().unwrap_or(topic)),
                ),
            ],
            Some(&self.ca),
            false,
            None,
            days,
        )?;
        Ok([cert.to_pem()?, key.private_key_to_pem_pkcs8()?].concat())
    }
}

/// One push the fake received.
#[derive(Debug, Clone)]
pub struct RecordedPush {
    /// Device token from the path.
    pub token: String,
    /// Topic from the client certificate's UID.
    pub topic: String,
    /// `apns-topic` header.
    pub topic_header: Option<String>,
    /// The JSON body.
    pub body: serde_json::Value,
    /// Request headers.
    pub headers: HashMap<String, String>,
}

#[derive(Default)]
struct Script {
    per_token: HashMap<String, (u16, String)>,
    next: VecDeque<(u16, String)>,
    delay: Duration,
}

#[derive(Default)]
struct State {
    pushes: Mutex<Vec<RecordedPush>>,
    script: Mutex<Script>,
}

/// The fake APNs server.
pub struct FakeApns {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
    state: Arc<State>,
    acceptor: Arc<SslAcceptor>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn acceptor(pki: &ApnsTestPki) -> anyhow::Result<Arc<SslAcceptor>> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    b.set_certificate(&pki.server.0)?;
    b.set_private_key(&pki.server.1)?;
    b.cert_store_mut().add_cert(pki.ca.0.clone())?;
    b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    b.set_alpn_select_callback(|_, client| {
        openssl::ssl::select_next_proto(b"\x02h2", client).ok_or(openssl::ssl::AlpnError::NOACK)
    });
    Ok(Arc::new(b.build()))
}

impl FakeApns {
    /// Start on an ephemeral loopback port.
    pub async fn start(pki: &ApnsTestPki) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let mut f = Self {
            url: format!("https://127.0.0.1:{port}"),
            port,
            state: Arc::default(),
            acceptor: acceptor(pki)?,
            stop: None,
            task: None,
        };
        f.serve(listener);
        Ok(f)
    }

    fn serve(&mut self, listener: TcpListener) {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (state, acceptor) = (self.state.clone(), self.acceptor.clone());
        self.task = Some(tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let (tcp, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    _ = &mut stopped => break,
                };
                let (state, acceptor) = (state.clone(), acceptor.clone());
                conns.spawn(async move {
                    let Ok(ssl) = Ssl::new(acceptor.context()) else {
                        return;
                    };
                    let Ok(mut stream) = SslStream::new(ssl, tcp) else {
                        return;
                    };
                    if Pin::new(&mut stream).accept().await.is_err() {
                        return;
                    }
                    let topic = stream
                        .ssl()
                        .peer_certificate()
                        .and_then(|c| {
                            c.subject_name()
                                .entries_by_nid(Nid::USERID)
                                .next()
                                .and_then(|e| e.data().to_string().ok())
                        })
                        .unwrap_or_default();
                    let service = service_fn(move |req| handle(state.clone(), topic.clone(), req));
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(1000)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            conns.abort_all();
        }));
        self.stop = Some(stop);
    }

    /// Stop serving and drop every connection (the port is freed).
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Start again on the same port, keeping the record and the script.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .context("rebinding the fake APNs port")?;
        self.serve(listener);
        Ok(())
    }

    /// Every push received so far.
    pub fn pushes(&self) -> Vec<RecordedPush> {
        self.state.pushes.lock().expect("lock").clone()
    }

    /// Forget recorded pushes.
    pub fn clear(&self) {
        self.state.pushes.lock().expect("lock").clear();
    }

    /// Answer every push to `token` with `status` and `reason`.
    pub fn fail_token(&self, token: &str, status: u16, reason: &str) {
        self.state
            .script
            .lock()
            .expect("lock")
            .per_token
            .insert(token.to_owned(), (status, reason.to_owned()));
    }

    /// Answer the next `n` pushes (any token) with `status` and `reason`.
    pub fn fail_next(&self, n: usize, status: u16, reason: &str) {
        let mut s = self.state.script.lock().expect("lock");
        for _ in 0..n {
            s.next.push_back((status, reason.to_owned()));
        }
    }

    /// Delay every answer.
    pub fn set_delay(&self, d: Duration) {
        self.state.script.lock().expect("lock").delay = d;
    }
}

async fn handle(
    state: Arc<State>,
    topic: String,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let token = req
        .uri()
        .path()
        .strip_prefix("/3/device/")
        .unwrap_or_default()
        .to_owned();
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (answer, delay) = {
        let mut s = state.script.lock().expect("lock");
        let answer = s
            .per_token
            .get(&token)
            .cloned()
            .or_else(|| s.next.pop_front());
        (answer, s.delay)
    };
    state.pushes.lock().expect("lock").push(RecordedPush {
        token,
        topic,
        topic_header: headers.get("apns-topic").cloned(),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        headers,
    });
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let response = match answer {
        None => hyper::Response::builder()
            .status(200)
            .header("apns-id", uuid::Uuid::new_v4().to_string().to_uppercase())
            .body(Full::new(Bytes::new())),
        Some((status, reason)) => hyper::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(format!(
                "{{\"reason\":\"{reason}\",\"timestamp\":1700000000000}}"
            )))),
    };
    Ok(response.expect("valid response"))
}
