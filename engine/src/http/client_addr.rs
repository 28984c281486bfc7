//! Who is on the other end of a request: the TCP peer address, trusted proxies (CIDRs), and the
//! client address behind a trusted proxy (`X-Forwarded-For`).
//!
//! [`super::server::serve`] inserts a [`ClientAddr`] extension into every request; embedders
//! serving [`crate::http::Routes`] themselves can insert it too, or serve with axum's
//! `into_make_service_with_connect_info::<SocketAddr>()`. Without either the peer is unknown:
//! proxy headers are refused and requests are not rate limited.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::HttpState;

/// The TCP peer of the connection a request arrived on (a request extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

impl ClientAddr {
    /// The peer address of `req`: a [`ClientAddr`] extension, else axum's `ConnectInfo`.
    pub fn of<B>(req: &Request<B>) -> Option<SocketAddr> {
        let ext = req.extensions();
        ext.get::<ClientAddr>()
            .map(|c| c.0)
            .or_else(|| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0))
    }
}

/// An invalid CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR (like 10.0.0.0/8 or fd00::/8)")]
pub struct CidrError(pub String);

/// An IPv4 or IPv6 network: an address and a prefix length. A bare address is a single host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

fn mask(prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        let all = if width == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        all & !((1u128 << (width - prefix)) - 1)
    }
}

impl Cidr {
    /// Whether `ip` is inside this network. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`)
    /// match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let ((net, width), (addr, addr_width)) = (bits(self.net), bits(ip));
        if width != addr_width {
            return false;
        }
        let m = mask(self.prefix, width);
        net & m == addr & m
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CidrError(s.to_owned());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let net: IpAddr = addr.parse().map_err(|_| bad())?;
        let width = bits(net).1;
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
            None => width,
        };
        if prefix > width {
            return Err(bad());
        }
        Ok(Self { net, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// The proxies whose forwarded headers (client certificate, `X-Forwarded-For`) are believed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl Default for TrustedProxies {
    /// Loopback only (`127.0.0.0/8`, `::1`): a proxy on the same host.
    fn default() -> Self {
        Self(vec![
            Cidr {
                net: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
                prefix: 8,
            },
            Cidr {
                net: IpAddr::V6(Ipv6Addr::LOCALHOST),
                prefix: 128,
            },
        ])
    }
}

impl TrustedProxies {
    /// Parse a list of CIDRs (or bare addresses).
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Self, CidrError> {
        list.iter()
            .map(|s| s.as_ref().parse())
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Trust nobody.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The address of the client behind `peer`: `peer` itself unless it is a trusted proxy;
    /// then the rightmost `X-Forwarded-For` hop that is not a trusted proxy (every hop to its
    /// right was added by a trusted proxy, so it is the first one nobody could forge). An
    /// unreadable hop ends the walk at the last trusted hop.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else { break };
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        client
    }
}

/// Middleware refusing (400) a request that carries the configured client-certificate header
/// unless its TCP peer is a trusted proxy: device certificates are public, so whoever could set
/// that header directly could be any device.
pub(crate) async fn guard_proxy_header(
    State(state): State<HttpState>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    if let Some(name) = &state.options.client_cert_header
        && req.headers().contains_key(name)
    {
        let peer = ClientAddr::of(&req);
        if !peer.is_some_and(|p| state.options.trusted_proxies.contains(p.ip())) {
            let from = peer.map_or_else(|| "an unknown address".to_owned(), |p| p.ip().to_string());
            tracing::warn!(header = %name, %from, "client-certificate header from an untrusted peer");
            return (
                StatusCode::BAD_REQUEST,
                format!(
                    "the {name} header is accepted only from a trusted proxy \
                     (identity.trusted_proxies); this request came from {from}"
                ),
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    hop.parse::<SocketAddr>().ok().map(|s| s.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Item 13 of issue 11: device certificates are public, so the forwarded-certificate header
    /// must authenticate only when a trusted proxy sent it.
    #[tokio::test]
    async fn the_certificate_header_counts_only_from_a_trusted_proxy() {
        use axum::body::Body;
        use base64::Engine as _;
        use tower::ServiceExt as _;

        let engine = crate::Engine::builder().build().await.unwrap();
        let routes = crate::http::Routes::new(
            &engine,
            crate::http::HttpOptions::new()
                .client_cert_header(http::HeaderName::from_static("x-client-cert"))
                .trusted_proxies(TrustedProxies::parse(&["10.0.0.0/8", "fd00::/8"]).unwrap()),
        );
        let key =
            openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let public =
            openssl::pkey::PKey::public_key_from_der(&key.public_key_to_der().unwrap()).unwrap();
        let mut name = openssl::x509::X509Name::builder().unwrap();
        name.append_entry_by_text("CN", "proxied").unwrap();
        let cert = engine
            .ca()
            .issue_device_cert(&public, &name.build(), 30)
            .unwrap();
        let header = format!(
            ":{}:",
            base64::engine::general_purpose::STANDARD.encode(cert.to_der().unwrap())
        );
        let mut d = plist::Dictionary::new();
        d.insert("MessageType".into(), "Authenticate".into());
        d.insert("UDID".into(), "PROXIED-0001".into());
        d.insert("Topic".into(), "t".into());
        let body = crate::wire::checkin::to_xml(&plist::Value::Dictionary(d));
        let send = |peer: Option<&str>| {
            let mut req = Request::put("/mdm/checkin")
                .header("X-Client-Cert", &header)
                .body(Body::from(body.clone()))
                .unwrap();
            if let Some(p) = peer {
                req.extensions_mut().insert(ClientAddr(p.parse().unwrap()));
            }
            routes.router().oneshot(req)
        };
        for untrusted in [Some("192.0.2.1:4000"), Some("[2001:db8::1]:4000"), None] {
            let r = send(untrusted).await.unwrap();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "from {untrusted:?}");
            let text = axum::body::to_bytes(r.into_body(), 4096).await.unwrap();
            assert!(
                String::from_utf8_lossy(&text).contains("trusted_proxies"),
                "{text:?}"
            );
        }
        let id = crate::wire::enrollment_id::EnrollmentId::new("PROXIED-0001");
        assert!(
            engine.store().enrollment(&id).await.unwrap().is_none(),
            "nothing is stored for a refused request"
        );
        for trusted in ["10.1.2.3:4000", "[fd00::7]:4000"] {
            let r = send(Some(trusted)).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "from {trusted}");
        }
        assert!(engine.store().enrollment(&id).await.unwrap().is_some());
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.1.200.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped IPv6");
        assert!(!c.contains(ip("fd00::1")));
        let host: Cidr = "192.0.2.7".parse().unwrap();
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
        let any: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains(ip("203.0.113.1")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains(ip("fe80::1")));
        let one6: Cidr = "::1".parse().unwrap();
        assert!(one6.contains(ip("::1")) && !one6.contains(ip("::2")));
        assert_eq!(c.to_string(), "10.1.0.0/16");
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0/8",
            "x/8",
            "1.2.3.4/+8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} should not parse");
        }
        let err = TrustedProxies::parse(&["10.0.0.0/8", "nope"]).unwrap_err();
        assert_eq!(err, CidrError("nope".into()));
    }

    #[test]
    fn loopback_is_trusted_by_default() {
        let t = TrustedProxies::default();
        assert!(t.contains(ip("127.0.0.1")) && t.contains(ip("::1")));
        assert!(!t.contains(ip("192.0.2.1")));
        assert!(!TrustedProxies::none().contains(ip("127.0.0.1")));
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let t = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "198.51.100.1, 203.0.113.9, 10.0.0.2".parse().unwrap(),
        );
        // A trusted proxy: its forwarded chain is walked past trusted hops.
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("203.0.113.9"));
        // Anyone else: the header is ignored.
        assert_eq!(t.client_ip(ip("192.0.2.5"), &h), ip("192.0.2.5"));
        // Several header lines form one list, in order.
        let mut two = HeaderMap::new();
        two.append("x-forwarded-for", "198.51.100.1".parse().unwrap());
        two.append("x-forwarded-for", "[2001:db8::5]:443".parse().unwrap());
        assert_eq!(t.client_ip(ip("10.0.0.1"), &two), ip("2001:db8::5"));
        // No header, or only trusted hops: the nearest address known.
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
        let mut state = HeaderMap::new();
        state.insert("x-forwarded-for", "10.9.9.9".parse().unwrap());
        assert_eq!(t.client_ip(ip("10.0.0.1"), &state), ip("10.9.9.9"));
        // Garbage stops the walk.
        let mut junk = HeaderMap::new();
        junk.insert("x-forwarded-for", "198.51.100.1, junk".parse().unwrap());
        assert_eq!(t.client_ip(ip("10.0.0.1"), &junk), ip("10.0.0.1"));
    }
}
