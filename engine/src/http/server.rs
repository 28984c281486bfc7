//! Serving the engine's router: plain HTTP, or HTTPS that asks devices for a client certificate.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};
use tokio::net::TcpListener;
use tokio_openssl::SslStream;

use super::device::PeerCertificate;

/// Errors setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate or key could not be loaded.
    #[error("TLS setup failed: {0}")]
    Setup(#[from] openssl::error::ErrorStack),
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

/// Serve `router` on `listener` until `shutdown` resolves, then finish in-flight requests.
/// With `tls`, every connection is TLS and a presented client certificate is handed to the
/// device endpoints.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<SslAcceptor>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        return axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
    };
    let graceful = GracefulShutdown::new();
    let mut shutdown: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(shutdown);
    loop {
        let (tcp, peer_addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let tls = tls.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let ssl = match Ssl::new(tls.context()) {
                Ok(s) => s,
                Err(err) => return tracing::warn!(%err, "TLS session setup failed"),
            };
            let mut stream = match SslStream::new(ssl, tcp) {
                Ok(s) => s,
                Err(err) => return tracing::warn!(%err, "TLS stream setup failed"),
            };
            if let Err(err) = Pin::new(&mut stream).accept().await {
                return tracing::debug!(%err, %peer_addr, "TLS handshake failed");
            }
            let router = match stream.ssl().peer_certificate() {
                Some(cert) => router.layer(Extension(PeerCertificate(cert))),
                None => router,
            };
            let service = TowerToHyperService::new(router);
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(err) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%err, %peer_addr, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
    Ok(())
}
