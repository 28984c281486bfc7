use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Extension;
use axum::routing::{get, put};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::*;

/// Generous bound for "the server reacted": the configured limits are a few hundred ms.
const SOON: Duration = Duration::from_secs(5);

fn short() -> ListenerOptions {
    ListenerOptions {
        max_connections: 64,
        tls_handshake_timeout: Duration::from_millis(300),
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
        keep_alive_timeout: Duration::from_millis(300),
    }
}

fn router() -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/peer",
            get(|Extension(ClientAddr(a)): Extension<ClientAddr>| async move { a.to_string() }),
        )
        .route(
            "/body",
            put(|body: Bytes| async move { body.len().to_string() }),
        )
}

async fn start(
    router: Router,
    tls: Option<Arc<SslAcceptor>>,
    options: ListenerOptions,
) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_with(listener, router, tls, options, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Whether the server closed the connection within `within` (reading and discarding anything
/// it sends first).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// The first response line, if one arrives within `within`.
async fn status_line(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        while !got.windows(2).any(|w| w == b"\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    let text = String::from_utf8_lossy(&got);
    text.split("\r\n")
        .next()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
}

#[tokio::test]
async fn silent_and_slow_header_clients_are_disconnected() {
    let (addr, _stop) = start(router(), None, short()).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut silent, SOON).await,
        "a connection that sends nothing stays open"
    );
    assert!(
        closed_within(&mut half, SOON).await,
        "a connection with half a request head stays open"
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let (addr, _stop) = start(router(), None, short()).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        status_line(&mut c, SOON).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    assert!(
        closed_within(&mut c, SOON).await,
        "an idle keep-alive connection stays open"
    );
}

#[tokio::test]
async fn a_tls_handshake_that_never_finishes_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::ca::CertificateAuthority::generate(&Default::default()).unwrap();
    let (cert_file, key_file) = (dir.path().join("tls.pem"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, ca.certificate().to_pem().unwrap()).unwrap();
    std::fs::write(
        &key_file,
        ca.private_key().private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
    let tls = tls_acceptor(&cert_file, &key_file).unwrap();
    let mut options = short();
    // Longer header limit: the handshake limit must be the one that acts.
    options.header_read_timeout = Duration::from_secs(60);
    options.keep_alive_timeout = Duration::from_secs(60);
    let (addr, _stop) = start(router(), Some(tls), options).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Half a TLS record header: the handshake starts and stalls.
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    assert!(closed_within(&mut silent, SOON).await);
    assert!(closed_within(&mut partial, SOON).await);
}

#[tokio::test]
async fn a_slow_body_is_cut_off() {
    let (addr, _stop) = start(router(), None, short()).await;
    let engine = crate::Engine::builder().build().await.unwrap();
    let routes = crate::http::Routes::new(&engine, crate::http::HttpOptions::new());
    let (device_addr, _stop2) = start(routes.router(), None, short()).await;
    for (addr, path) in [(addr, "/body"), (device_addr, "/mdm/checkin")] {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(
            format!("PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let (mut rd, mut wr) = c.into_split();
        let trickle = tokio::spawn(async move {
            for _ in 0..1000 {
                if wr.write_all(b"a").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let mut got = Vec::new();
        let _ = tokio::time::timeout(SOON, rd.read_to_end(&mut got)).await;
        trickle.abort();
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 4"),
            "{path}: expected a 4xx answer, got {text:?}"
        );
    }
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let options = ListenerOptions {
        max_connections: 2,
        header_read_timeout: Duration::from_secs(60),
        keep_alive_timeout: Duration::from_secs(60),
        ..short()
    };
    let (addr, _stop) = start(router(), None, options).await;
    let first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    // The second holds a slot and is served.
    second
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        status_line(&mut second, SOON).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        status_line(&mut third, Duration::from_millis(500)).await,
        None,
        "a third connection is served while two are open"
    );
    drop(first);
    assert_eq!(
        status_line(&mut third, SOON).await.as_deref(),
        Some("HTTP/1.1 200 OK"),
        "the third connection is served once a slot frees"
    );
}

#[tokio::test]
async fn requests_carry_the_peer_address() {
    let (addr, _stop) = start(router(), None, ListenerOptions::default()).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let me = c.local_addr().unwrap();
    c.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = String::new();
    tokio::time::timeout(SOON, c.read_to_string(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert!(
        got.ends_with(&me.to_string()),
        "{got:?} does not end with {me}"
    );
}

#[tokio::test]
async fn accept_errors_back_off() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    accept_loop(
        move || {
            counted.fetch_add(1, Ordering::Relaxed);
            async { Err::<(TcpStream, SocketAddr), _>(io::Error::other("EMFILE")) }
        },
        router(),
        None,
        ListenerOptions::default(),
        tokio::time::sleep(Duration::from_millis(500)),
    )
    .await;
    let n = calls.load(Ordering::Relaxed);
    // 10, 20, 40, 80, 160, 320 ms: about six attempts in half a second, not thousands.
    assert!((1..=20).contains(&n), "{n} accept attempts in 500 ms");
    let mut b = AcceptBackoff::default();
    let delays: Vec<u64> = (0..9).map(|_| b.next_delay().as_millis() as u64).collect();
    assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    b.reset();
    assert_eq!(b.next_delay(), Duration::from_millis(10));
}
