//! Per-client rate limits on the anonymous endpoints that cost work: `GET`/`POST /mdm/enroll`
//! (a challenge written and fsynced per download; MachineInfo verification) and `/scep` (RSA).
//!
//! A token bucket per client address and endpoint group: `burst` requests at once, refilled at
//! `per_minute`. A refused request gets 429 with `Retry-After`. The client is the TCP peer, or
//! behind a trusted proxy the address from `X-Forwarded-For` (see [`super::client_addr`]); IPv6
//! clients are grouped by /64, the block a single subscriber usually holds. Requests whose peer
//! is unknown (an embedder serving the router without [`super::client_addr::ClientAddr`] or
//! `ConnectInfo`) are not limited.
//!
//! The bucket table is bounded by `max_clients`: when it is full, buckets that have refilled
//! (idle clients) are dropped, and if that is not enough, the least recently used quarter.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::client_addr::ClientAddr;
use crate::http::HttpState;

/// One endpoint group's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per minute per client once the burst is spent; 0 turns the limit off.
    pub per_minute: u32,
    /// Requests a client may make at once (at least 1 when the limit is on).
    pub burst: u32,
}

/// Rate limits of the anonymous endpoints (`[rate_limit]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitOptions {
    /// `GET` and `POST /mdm/enroll`.
    pub enroll: Rate,
    /// `/scep` (every operation).
    pub scep: Rate,
    /// Most clients tracked per endpoint group.
    pub max_clients: usize,
}

impl Default for RateLimitOptions {
    fn default() -> Self {
        Self {
            enroll: Rate {
                per_minute: 60,
                burst: 30,
            },
            scep: Rate {
                per_minute: 120,
                burst: 60,
            },
            max_clients: 100_000,
        }
    }
}

impl RateLimitOptions {
    /// No limits (the default of [`crate::http::HttpOptions`]; `pomona serve` uses
    /// [`RateLimitOptions::default`] through its configuration).
    pub fn off() -> Self {
        let off = Rate {
            per_minute: 0,
            burst: 0,
        };
        Self {
            enroll: off,
            scep: off,
            max_clients: 1,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token-bucket limiter keyed by client address, with a bounded table.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: Rate,
    max_clients: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

/// The key for a client: IPv4 as is, IPv6 by /64 (IPv4-mapped IPv6 as IPv4).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

impl RateLimiter {
    pub(crate) fn new(rate: Rate, max_clients: usize) -> Self {
        Self {
            rate,
            max_clients: max_clients.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn burst(&self) -> f64 {
        f64::from(self.rate.burst.max(1))
    }

    fn per_sec(&self) -> f64 {
        f64::from(self.rate.per_minute) / 60.0
    }

    fn refilled(&self, b: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + elapsed * self.per_sec()).min(self.burst())
    }

    /// Take one token for `ip` at `now`; `Err(wait)` when none is left.
    pub(crate) fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.rate.per_minute == 0 {
            return Ok(());
        }
        let key = client_key(ip);
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        if !buckets.contains_key(&key) && buckets.len() >= self.max_clients {
            self.evict(&mut buckets, now);
        }
        let burst = self.burst();
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let tokens = self.refilled(b, now);
        if tokens >= 1.0 {
            *b = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *b = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_sec()))
        }
    }

    /// Make room: drop refilled buckets, then if still full the least recently used quarter.
    fn evict(&self, buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let burst = self.burst();
        buckets.retain(|_, b| self.refilled(b, now) < burst);
        if buckets.len() < self.max_clients {
            return;
        }
        let mut ages: Vec<Instant> = buckets.values().map(|b| b.at).collect();
        let cut = ages.len() / 4;
        let (_, oldest_kept, _) = ages.select_nth_unstable(cut);
        let oldest_kept = *oldest_kept;
        buckets.retain(|_, b| b.at > oldest_kept);
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().expect("rate limit lock").len()
    }
}

/// The engine's limiters, one per endpoint group.
#[derive(Debug)]
pub(crate) struct RateLimits {
    enroll: RateLimiter,
    scep: RateLimiter,
}

impl RateLimits {
    pub(crate) fn new(o: &RateLimitOptions) -> Self {
        Self {
            enroll: RateLimiter::new(o.enroll, o.max_clients),
            scep: RateLimiter::new(o.scep, o.max_clients),
        }
    }
}

/// The client address a request is limited under (see the module docs).
fn client_ip(state: &HttpState, req: &Request) -> Option<IpAddr> {
    let peer = ClientAddr::of(req)?;
    Some(
        state
            .options
            .trusted_proxies
            .client_ip(peer.ip(), req.headers()),
    )
}

async fn limit(
    limiter: &RateLimiter,
    what: &str,
    state: &HttpState,
    req: Request,
    next: Next,
) -> Response {
    let Some(ip) = client_ip(state, &req) else {
        return next.run(req).await;
    };
    match limiter.check(ip, Instant::now()) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            tracing::warn!(%ip, what, retry_after = secs, "rate limited");
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, secs.to_string())],
                format!("too many {what} requests from {ip}; retry after {secs} s"),
            )
                .into_response()
        }
    }
}

/// Middleware limiting `/mdm/enroll`.
pub(crate) async fn limit_enroll(
    State(state): State<HttpState>,
    req: Request,
    next: Next,
) -> Response {
    limit(&state.rate_limits.enroll, "enrollment", &state, req, next).await
}

/// Middleware limiting `/scep`.
pub(crate) async fn limit_scep(
    State(state): State<HttpState>,
    req: Request,
    next: Next,
) -> Response {
    limit(&state.rate_limits.scep, "SCEP", &state, req, next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Item 10 of issue 11: the anonymous, costly endpoints answer 429 with `Retry-After` once a
    /// client's burst is spent; other clients (also behind a trusted proxy) are unaffected.
    #[tokio::test]
    async fn enroll_and_scep_answer_429_per_client() {
        use axum::body::Body;
        use tower::ServiceExt as _;

        let engine = crate::Engine::builder().build().await.unwrap();
        let routes = crate::http::Routes::new(
            &engine,
            crate::http::HttpOptions::new().rate_limits(RateLimitOptions {
                enroll: Rate {
                    per_minute: 1,
                    burst: 2,
                },
                scep: Rate {
                    per_minute: 1,
                    burst: 3,
                },
                max_clients: 100,
            }),
        );
        let send = |path: &str, peer: &str, forwarded: Option<&str>| {
            let mut req = Request::get(path);
            if let Some(f) = forwarded {
                req = req.header("x-forwarded-for", f);
            }
            let mut req = req.body(Body::empty()).unwrap();
            req.extensions_mut()
                .insert(ClientAddr(peer.parse().unwrap()));
            routes.router().oneshot(req)
        };
        let enroll = "/mdm/enroll";
        for _ in 0..2 {
            assert_eq!(
                send(enroll, "192.0.2.1:1", None).await.unwrap().status(),
                200
            );
        }
        let refused = send(enroll, "192.0.2.1:2", None).await.unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = refused.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "Retry-After: {retry}");
        // Another address, and a client behind the (loopback) proxy, are unaffected…
        assert_eq!(
            send(enroll, "192.0.2.2:1", None).await.unwrap().status(),
            200
        );
        let behind = Some("198.51.100.4");
        assert_eq!(
            send(enroll, "127.0.0.1:1", behind).await.unwrap().status(),
            200
        );
        // …but X-Forwarded-For from an untrusted peer changes nothing.
        let spoofed = send(enroll, "192.0.2.1:3", Some("198.51.100.77"))
            .await
            .unwrap();
        assert_eq!(spoofed.status(), StatusCode::TOO_MANY_REQUESTS);
        // SCEP has its own bucket.
        let caps = "/scep?operation=GetCACaps";
        for _ in 0..3 {
            assert_eq!(send(caps, "192.0.2.1:1", None).await.unwrap().status(), 200);
        }
        assert_eq!(
            send(caps, "192.0.2.1:1", None).await.unwrap().status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        // Unlimited endpoints stay so.
        assert_eq!(
            send("/health", "192.0.2.1:1", None).await.unwrap().status(),
            200
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_then_refusal_then_refill() {
        let l = RateLimiter::new(
            Rate {
                per_minute: 60,
                burst: 3,
            },
            100,
        );
        let t0 = Instant::now();
        for _ in 0..3 {
            l.check(ip("192.0.2.1"), t0).unwrap();
        }
        let wait = l.check(ip("192.0.2.1"), t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another client is unaffected.
        l.check(ip("192.0.2.2"), t0).unwrap();
        // One token per second comes back.
        l.check(ip("192.0.2.1"), t0 + Duration::from_millis(1001))
            .unwrap();
        assert!(
            l.check(ip("192.0.2.1"), t0 + Duration::from_millis(1002))
                .is_err()
        );
        // Never more than the burst, however long the client waits.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            l.check(ip("192.0.2.1"), later).unwrap();
        }
        assert!(l.check(ip("192.0.2.1"), later).is_err());
    }

    #[test]
    fn zero_turns_it_off() {
        let l = RateLimiter::new(
            Rate {
                per_minute: 0,
                burst: 0,
            },
            1,
        );
        let t0 = Instant::now();
        for i in 0..1000u32 {
            l.check(IpAddr::from(i.to_be_bytes()), t0).unwrap();
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let l = RateLimiter::new(
            Rate {
                per_minute: 1,
                burst: 1,
            },
            100,
        );
        let t0 = Instant::now();
        l.check(ip("2001:db8:1:2::1"), t0).unwrap();
        assert!(l.check(ip("2001:db8:1:2:ffff::9"), t0).is_err());
        l.check(ip("2001:db8:1:3::1"), t0).unwrap();
        l.check(ip("::ffff:192.0.2.1"), t0).unwrap();
        assert!(l.check(ip("192.0.2.1"), t0).is_err(), "IPv4-mapped is IPv4");
    }

    #[test]
    fn the_table_stays_bounded() {
        let l = RateLimiter::new(
            Rate {
                per_minute: 1,
                burst: 2,
            },
            1000,
        );
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            let _ = l.check(
                IpAddr::from((0x0a00_0000 + i).to_be_bytes()),
                t0 + Duration::from_millis(u64::from(i)),
            );
            assert!(l.tracked() <= 1000);
        }
        // Idle buckets go first: once everyone has refilled, a full table empties.
        let small = RateLimiter::new(
            Rate {
                per_minute: 1,
                burst: 2,
            },
            10,
        );
        for i in 0..10u8 {
            small.check(IpAddr::from([10, 0, 0, i]), t0).unwrap();
        }
        assert_eq!(small.tracked(), 10);
        let much_later = t0 + Duration::from_secs(10_000);
        small.check(ip("203.0.113.1"), much_later).unwrap();
        assert_eq!(small.tracked(), 1);
    }
}
