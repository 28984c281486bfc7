//! Serving the engine's router: plain HTTP, or HTTPS that asks devices for a client certificate.
//!
//! One accept loop serves both, with the limits in [`ListenerOptions`]:
//!
//! - at most `max_connections` connections at once; when full, the loop stops accepting until
//!   one closes (new connections wait in the kernel's backlog);
//! - a failed `accept` (out of file descriptors, …) is retried after a delay that doubles from
//!   10 ms to 1 s instead of spinning;
//! - the TLS handshake must finish within `tls_handshake_timeout`;
//! - a request head must arrive within `header_read_timeout` of its first byte (and a new
//!   connection must deliver its first request head within that time of opening);
//! - a connection with no request in flight and nothing arriving is closed after
//!   `keep_alive_timeout`;
//! - a request body must be read completely within `body_read_timeout` of its head (handlers
//!   then see a body error and answer 4xx).
//!
//! The header and idle limits are enforced by a per-connection watchdog rather than hyper's own
//! HTTP/1 header timer: hyper's timer does not cover protocol detection (HTTP/1 or HTTP/2 prior
//! knowledge) or HTTP/2, and it also runs while an HTTP/1 connection sits idle between requests,
//! which would make the keep-alive limit meaningless.
//!
//! Every request gets a [`ClientAddr`] extension (the TCP peer) and, on TLS with a client
//! certificate, a [`PeerCertificate`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_openssl::SslStream;
use tower::ServiceExt as _;

use super::client_addr::ClientAddr;
use super::device::PeerCertificate;

/// Errors setting up TLS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate or key could not be loaded.
    #[error("TLS setup failed: {0}")]
    Setup(#[from] openssl::error::ErrorStack),
}

/// Limits and timeouts of the listener (`[listener]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerOptions {
    /// Most connections served at once (at least 1).
    pub max_connections: usize,
    /// Longest TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Longest time from the first byte of a request head (or from opening the connection) to
    /// the complete head.
    pub header_read_timeout: Duration,
    /// Longest time from a request head to the end of its body.
    pub body_read_timeout: Duration,
    /// Longest idle time (no request in flight, nothing arriving) before a connection is closed.
    pub keep_alive_timeout: Duration,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(15),
            body_read_timeout: Duration::from_secs(60),
            keep_alive_timeout: Duration::from_secs(60),
        }
    }
}

/// A TLS acceptor for the listener. It asks for (but does not require) a client certificate and
/// accepts any: the check-in path verifies device certificates against the CA itself, and admin
/// API clients have none.
pub fn tls_acceptor(cert_file: &Path, key_file: &Path) -> Result<Arc<SslAcceptor>, TlsError> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    b.set_certificate_chain_file(cert_file)?;
    b.set_private_key_file(key_file, SslFiletype::PEM)?;
    b.check_private_key()?;
    b.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    b.set_alpn_select_callback(|_, client| {
        openssl::ssl::select_next_proto(b"\x02h2\x08http/1.1", client)
            .ok_or(openssl::ssl::AlpnError::NOACK)
    });
    Ok(Arc::new(b.build()))
}

/// Serve `router` on `listener` with the default [`ListenerOptions`] until `shutdown` resolves,
/// then finish in-flight requests. With `tls`, every connection is TLS and a presented client
/// certificate is handed to the device endpoints.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<SslAcceptor>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, router, tls, ListenerOptions::default(), shutdown).await
}

/// [`serve`] with explicit limits and timeouts.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<SslAcceptor>>,
    options: ListenerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    accept_loop(|| listener.accept(), router, tls, options, shutdown).await;
    Ok(())
}

/// Delays between failed `accept` calls: 10 ms doubling to 1 s, reset by a success.
#[derive(Debug, Default)]
struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn next_delay(&mut self) -> Duration {
        let d = Self::FIRST.saturating_mul(1 << self.failures.min(10));
        self.failures = self.failures.saturating_add(1);
        d.min(Self::MAX)
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

async fn accept_loop<A, F>(
    mut accept: A,
    router: Router,
    tls: Option<Arc<SslAcceptor>>,
    options: ListenerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    A: FnMut() -> F,
    F: Future<Output = io::Result<(TcpStream, SocketAddr)>>,
{
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let mut backoff = AcceptBackoff::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Take a connection slot first: when all are in use, stop accepting.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%err, delay_ms = delay.as_millis() as u64, "accept failed");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        backoff.reset();
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(
            tcp,
            peer,
            tls.clone(),
            router.clone(),
            options,
            graceful.watcher(),
            permit,
        ));
    }
    graceful.shutdown().await;
}

/// One connection: TLS handshake (bounded), then HTTP with the watchdog. Holds `_permit` (its
/// connection slot) until it ends.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<SslAcceptor>>,
    router: Router,
    options: ListenerOptions,
    watcher: Watcher,
    _permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = Tracked {
        inner: tcp,
        activity: activity.clone(),
    };
    let Some(tls) = tls else {
        return http(io, peer, None, router, options, watcher, activity).await;
    };
    let ssl = match Ssl::new(tls.context()) {
        Ok(s) => s,
        Err(err) => return tracing::warn!(%err, "TLS session setup failed"),
    };
    let mut stream = match SslStream::new(ssl, io) {
        Ok(s) => s,
        Err(err) => return tracing::warn!(%err, "TLS stream setup failed"),
    };
    match tokio::time::timeout(
        options.tls_handshake_timeout,
        Pin::new(&mut stream).accept(),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return tracing::debug!(%err, %peer, "TLS handshake failed"),
        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
    }
    let cert = stream.ssl().peer_certificate();
    activity.restart();
    http(stream, peer, cert, router, options, watcher, activity).await
}

async fn http<I>(
    io: I,
    peer: SocketAddr,
    cert: Option<X509>,
    router: Router,
    options: ListenerOptions,
    watcher: Watcher,
    activity: Arc<Activity>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let body_timeout = options.body_read_timeout;
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let in_flight = requests.request_started();
        // Bodies get a deadline; requests without one (most GETs) need no timer.
        let mut req = req.map(|b| {
            if hyper::body::Body::is_end_stream(&b) {
                Body::new(b)
            } else {
                Body::new(DeadlineBody::new(b, body_timeout))
            }
        });
        req.extensions_mut().insert(ClientAddr(peer));
        if let Some(c) = &cert {
            req.extensions_mut().insert(PeerCertificate(c.clone()));
        }
        let router = router.clone();
        async move {
            let response = router.oneshot(req).await;
            drop(in_flight);
            response
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let conn = watcher.watch(conn.into_owned());
    tokio::select! {
        ended = conn => if let Err(err) = ended {
            tracing::debug!(%err, %peer, "connection ended with an error");
        },
        reason = activity.watchdog(&options) => {
            tracing::debug!(%peer, reason, "closing connection");
        }
    }
}

/// What a connection is doing, for its watchdog.
struct Activity {
    state: Mutex<ActivityState>,
    changed: Notify,
}

struct ActivityState {
    /// Requests whose handler has not finished.
    in_flight: usize,
    /// When the connection last became idle (opened, or its last request finished).
    idle_since: Instant,
    /// When the first byte of the next request head arrived (or the connection opened).
    head_since: Option<Instant>,
}

/// Marks a request in flight until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().expect("activity lock");
        s.in_flight -= 1;
        if s.in_flight == 0 {
            s.idle_since = Instant::now();
            s.head_since = None;
            drop(s);
            self.0.changed.notify_one();
        }
    }
}

impl Activity {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                idle_since: now,
                // A new connection must deliver its first request head in time.
                head_since: Some(now),
            }),
            changed: Notify::new(),
        }
    }

    /// Start the clocks again (after the TLS handshake, which has its own limit).
    fn restart(&self) {
        let now = Instant::now();
        let mut s = self.state.lock().expect("activity lock");
        s.idle_since = now;
        s.head_since = Some(now);
        drop(s);
        self.changed.notify_one();
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        let mut s = self.state.lock().expect("activity lock");
        s.in_flight += 1;
        s.head_since = None;
        drop(s);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    fn bytes_read(&self) {
        let mut s = self.state.lock().expect("activity lock");
        if s.in_flight == 0 && s.head_since.is_none() {
            s.head_since = Some(Instant::now());
            drop(s);
            self.changed.notify_one();
        }
    }

    /// When the connection must be closed if nothing changes, and why.
    fn deadline(&self, o: &ListenerOptions) -> Option<(Instant, &'static str)> {
        let s = self.state.lock().expect("activity lock");
        if s.in_flight > 0 {
            return None;
        }
        Some(match s.head_since {
            Some(t) => (
                t + o.header_read_timeout,
                "request head not received in time",
            ),
            None => (
                s.idle_since + o.keep_alive_timeout,
                "idle keep-alive timeout",
            ),
        })
    }

    /// Resolves when the connection has overstayed a limit.
    async fn watchdog(&self, o: &ListenerOptions) -> &'static str {
        loop {
            match self.deadline(o) {
                None => self.changed.notified().await,
                Some((at, reason)) => {
                    if at <= Instant::now() {
                        return reason;
                    }
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.changed.notified() => {}
                    }
                }
            }
        }
    }
}

/// A socket that tells its [`Activity`] when bytes arrive.
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The request body was not read completely in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} ms", .0.as_millis())]
pub struct BodyTimeout(Duration);

/// A request body that fails once its deadline passes.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        }
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTimeout(self.timeout).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
