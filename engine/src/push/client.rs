//! A small HTTP/2 APNs client: client-certificate TLS, a configurable base URL, a few long-lived
//! connections with many concurrent streams each, reconnecting when a connection dies.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use openssl::ssl::{Ssl, SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_openssl::SslStream;

use crate::wire::apns::{Disposition, PushCertificate, classify, push_body};

/// Errors talking to APNs (transport level: the push may be retried).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApnsError {
    /// The base URL is unusable.
    #[error("invalid APNs base URL {0:?}")]
    BadUrl(String),
    /// TLS setup failed.
    #[error("APNs TLS setup: {0}")]
    Tls(#[source] openssl::error::ErrorStack),
    /// No connection within the deadline.
    #[error("cannot connect to APNs at {0}")]
    Connect(String),
    /// The TCP connection failed.
    #[error("cannot connect to APNs at {addr}: {source}")]
    Tcp {
        /// `host:port`.
        addr: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed.
    #[error("cannot connect to APNs at {addr}: TLS: {source}")]
    Handshake {
        /// `host:port`.
        addr: String,
        /// The TLS error.
        #[source]
        source: openssl::ssl::Error,
    },
    /// The HTTP/2 handshake failed.
    #[error("cannot connect to APNs at {addr}: HTTP/2: {source}")]
    Http2 {
        /// `host:port`.
        addr: String,
        /// The HTTP/2 error.
        #[source]
        source: hyper::Error,
    },
    /// The request could not be built.
    #[error("APNs request failed: {0}")]
    BadRequest(#[source] http::Error),
    /// The request failed on the wire.
    #[error("APNs request failed: {0}")]
    Request(#[source] hyper::Error),
    /// No answer within the request timeout.
    #[error("APNs request failed: timed out")]
    Timeout,
}

/// Where and how to reach APNs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApnsEndpoint {
    /// Base URL, e.g. `https://api.push.apple.com` (a port may follow the host).
    pub base_url: String,
    /// An extra CA to trust for the server certificate (tests, proxies).
    pub extra_ca: Option<X509>,
    /// Connections to keep open.
    pub connections: usize,
    /// Per-request timeout (from sending a push to APNs' complete answer).
    pub timeout: Duration,
    /// Longest TCP connect.
    pub connect_timeout: Duration,
    /// Longest TLS plus HTTP/2 handshake.
    pub handshake_timeout: Duration,
}

impl Default for ApnsEndpoint {
    /// Apple production, two connections, 10 s to connect, 10 s to handshake, 15 s per push.
    fn default() -> Self {
        Self {
            base_url: crate::wire::apns::PRODUCTION_URL.into(),
            extra_ca: None,
            connections: 2,
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

crate::setters::with_setters!(ApnsEndpoint {
    with_base_url => base_url: String,
    with_extra_ca => extra_ca: Option<X509>,
    with_connections => connections: usize,
    with_timeout => timeout: std::time::Duration,
    with_connect_timeout => connect_timeout: std::time::Duration,
    with_handshake_timeout => handshake_timeout: std::time::Duration,
});

struct Target {
    host: String,
    port: u16,
    authority: String,
}

fn parse_base(url: &str) -> Result<Target, ApnsError> {
    let bad = || ApnsError::BadUrl(url.to_owned());
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let authority = rest.trim_end_matches('/').to_owned();
    if authority.is_empty() || authority.contains('/') {
        return Err(bad());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            (h.to_owned(), p.parse().map_err(|_| bad())?)
        }
        _ => (authority.clone(), 443),
    };
    Ok(Target {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        authority,
    })
}

/// A pool of HTTP/2 connections to APNs for one push certificate.
pub struct ApnsClient {
    target: Target,
    connector: SslConnector,
    slots: Vec<Mutex<Option<SendRequest<Full<Bytes>>>>>,
    next: AtomicUsize,
    topic: String,
    timeout: Duration,
    connect_timeout: Duration,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for ApnsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsClient")
            .field("authority", &self.target.authority)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl ApnsClient {
    /// A client for `cert`'s topic at `endpoint`. Connections open lazily.
    pub fn new(cert: &PushCertificate, endpoint: &ApnsEndpoint) -> Result<Arc<Self>, ApnsError> {
        let target = parse_base(&endpoint.base_url)?;
        let tls = ApnsError::Tls;
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(tls)?;
        b.set_certificate(&cert.cert).map_err(tls)?;
        for c in &cert.chain {
            b.add_extra_chain_cert(c.clone()).map_err(tls)?;
        }
        b.set_private_key(&cert.key).map_err(tls)?;
        b.set_alpn_protos(b"\x02h2").map_err(tls)?;
        b.set_verify(SslVerifyMode::PEER);
        if let Some(ca) = &endpoint.extra_ca {
            b.cert_store_mut().add_cert(ca.clone()).map_err(tls)?;
        }
        Ok(Arc::new(Self {
            target,
            connector: b.build(),
            slots: (0..endpoint.connections.max(1))
                .map(|_| Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            topic: cert.topic.clone(),
            timeout: endpoint.timeout,
            connect_timeout: endpoint.connect_timeout,
            handshake_timeout: endpoint.handshake_timeout,
        }))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ApnsError> {
        let addr = format!("{}:{}", self.target.host, self.target.port);
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| {
                ApnsError::Connect(format!(
                    "{addr}: no TCP connection within {} ms",
                    self.connect_timeout.as_millis()
                ))
            })?
            .map_err(|source| ApnsError::Tcp {
                addr: addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let mut config = self.connector.configure().map_err(ApnsError::Tls)?;
        config.set_use_server_name_indication(true);
        let ssl: Ssl = config.into_ssl(&self.target.host).map_err(ApnsError::Tls)?;
        let mut stream = SslStream::new(ssl, tcp).map_err(ApnsError::Tls)?;
        // TLS and HTTP/2 handshakes share one deadline: a server or proxy that accepts the
        // connection and then says nothing must not hold the push (and the caller) forever.
        let handshakes = async {
            Pin::new(&mut stream)
                .connect()
                .await
                .map_err(|source| ApnsError::Handshake {
                    addr: addr.clone(),
                    source,
                })?;
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|source| ApnsError::Http2 {
                    addr: addr.clone(),
                    source,
                })
        };
        let (send, conn) = tokio::time::timeout(self.handshake_timeout, handshakes)
            .await
            .map_err(|_| {
                ApnsError::Connect(format!(
                    "{addr}: no TLS and HTTP/2 handshake within {} ms",
                    self.handshake_timeout.as_millis()
                ))
            })??;
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(%err, "APNs connection closed");
            }
        });
        Ok(send)
    }

    /// A ready sender on one of the pool's connections (reconnecting a dead one).
    async fn sender(&self) -> Result<(usize, SendRequest<Full<Bytes>>), ApnsError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        if let Some(s) = slot.as_ref()
            && !s.is_closed()
        {
            return Ok((i, s.clone()));
        }
        let s = self.connect().await?;
        *slot = Some(s.clone());
        Ok((i, s))
    }

    async fn drop_connection(&self, i: usize) {
        *self.slots[i].lock().await = None;
    }

    /// Send one MDM push; returns what APNs said. Bounded in time: waiting for a connection
    /// (which may mean waiting behind another push that is opening it, then opening one) takes
    /// at most the connect plus handshake timeouts, and the request at most the request timeout.
    pub async fn push(&self, token_hex: &str, push_magic: &str) -> Result<Disposition, ApnsError> {
        let open = self.connect_timeout + self.handshake_timeout;
        let (slot, mut sender) =
            tokio::time::timeout(open, self.sender())
                .await
                .map_err(|_| {
                    ApnsError::Connect(format!("no APNs connection within {} ms", open.as_millis()))
                })??;
        let req = http::Request::post(format!(
            "https://{}/3/device/{token_hex}",
            self.target.authority
        ))
        .header("apns-topic", &self.topic)
        .header("apns-push-type", "mdm")
        .header("apns-priority", "10")
        .header("apns-expiration", "0")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(push_body(push_magic))))
        .map_err(ApnsError::BadRequest)?;
        let result = tokio::time::timeout(self.timeout, async {
            sender.ready().await.map_err(ApnsError::Request)?;
            let resp = sender.send_request(req).await.map_err(ApnsError::Request)?;
            let status = resp.status().as_u16();
            let apns_id = resp
                .headers()
                .get("apns-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(ApnsError::Request)?
                .to_bytes();
            Ok::<_, ApnsError>(classify(status, apns_id.as_deref(), &body))
        })
        .await
        .unwrap_or_else(|_| Err(ApnsError::Timeout));
        if result.is_err() {
            self.drop_connection(slot).await;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let t = parse_base("https://api.push.apple.com").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("api.push.apple.com", 443));
        let t = parse_base("https://127.0.0.1:2197/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str()),
            ("127.0.0.1", 2197, "127.0.0.1:2197")
        );
        assert!(parse_base("http://x").is_err());
        assert!(parse_base("https://x/path").is_err());
        assert!(parse_base("https://x:notaport").is_err());
    }
}
