//! The APNs pusher: push certificates by topic, coalescing, retries with jittered backoff, a
//! circuit breaker, invalid-token handling, re-arm pushes and certificate health.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use tokio::sync::oneshot;

use super::client::{ApnsClient, ApnsEndpoint};
use super::{PushOutcome, Pusher};
use crate::events::{Outbox, event, kind};
use crate::metrics::Metrics;
use crate::seal::SealKey;
use crate::store::{
    Emit, EnrollmentQuery, EnrollmentStore, PushInfo, PushStore, SecretStore, StoreError,
};
use crate::wire::apns::{Disposition, ExpiryState, PushCertError, PushCertificate};
use crate::wire::enrollment_id::EnrollmentId;

const SECRET_CERTS: &str = "push.certificates";

/// Errors managing push certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The certificate is unusable.
    #[error(transparent)]
    Certificate(#[from] PushCertError),
    /// A client could not be set up for it.
    #[error(transparent)]
    Client(#[from] super::client::ApnsError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored certificates could not be unsealed.
    #[error(transparent)]
    Seal(#[from] crate::seal::SealError),
}

/// Push settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApnsOptions {
    /// Where APNs is and how to connect.
    pub endpoint: ApnsEndpoint,
    /// Delays before retrying a transiently failed push (jittered ±20 %).
    pub retry_delays: Vec<Duration>,
    /// Consecutive transient failures that open the circuit breaker.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before letting one push through.
    pub breaker_cooldown: Duration,
    /// Push to enabled enrollments silent for longer than this (re-arm).
    pub rearm_after: Duration,
    /// Most re-arm pushes per second (spread so they never burst).
    pub rearm_rate_per_sec: u32,
}

impl Default for ApnsOptions {
    fn default() -> Self {
        Self {
            endpoint: ApnsEndpoint::default(),
            retry_delays: [30, 120, 480, 1800].map(Duration::from_secs).to_vec(),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
            rearm_after: Duration::from_secs(24 * 3600),
            rearm_rate_per_sec: 20,
        }
    }
}

crate::setters::with_setters!(ApnsOptions {
    with_endpoint => endpoint: ApnsEndpoint,
    with_retry_delays => retry_delays: Vec<std::time::Duration>,
    with_breaker_threshold => breaker_threshold: u32,
    with_breaker_cooldown => breaker_cooldown: std::time::Duration,
    with_rearm_after => rearm_after: std::time::Duration,
    with_rearm_rate_per_sec => rearm_rate_per_sec: u32,
});

/// A configured push certificate as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushCertInfo {
    /// APNs topic.
    pub topic: String,
    /// Expiry (RFC 3339).
    pub not_after: String,
    /// Expiry as Unix seconds.
    pub not_after_unix: i64,
    /// valid / expiring / expired.
    pub state: ExpiryState,
}

struct Installed {
    cert: PushCertificate,
    client: Arc<ApnsClient>,
    last_state: ExpiryState,
}

/// Retry bookkeeping: failed attempts so far, and which enrollments have a retry waiting.
#[derive(Default)]
struct Retries {
    attempts: HashMap<EnrollmentId, usize>,
    scheduled: std::collections::HashSet<EnrollmentId>,
}

#[derive(Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// Sends MDM pushes through APNs.
pub struct ApnsPusher {
    store: Arc<dyn PushStore>,
    enrollments: Arc<dyn EnrollmentStore>,
    secrets: Arc<dyn SecretStore>,
    seal: SealKey,
    outbox: Outbox,
    metrics: Arc<Metrics>,
    options: ApnsOptions,
    certs: RwLock<HashMap<String, Installed>>,
    breaker: StdMutex<Breaker>,
    inflight: StdMutex<HashMap<EnrollmentId, Vec<oneshot::Sender<PushOutcome>>>>,
    retries: StdMutex<Retries>,
    me: std::sync::Weak<ApnsPusher>,
}

impl std::fmt::Debug for ApnsPusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsPusher")
            .field("base_url", &self.options.endpoint.base_url)
            .finish_non_exhaustive()
    }
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    openssl::rand::rand_bytes(&mut b).expect("the OpenSSL RNG works");
    let r = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX); // 0..1
    d.mul_f64(0.8 + 0.4 * r)
}

impl ApnsPusher {
    /// A pusher; loads the push certificates sealed in `secrets`.
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        store: Arc<dyn PushStore>,
        enrollments: Arc<dyn EnrollmentStore>,
        secrets: Arc<dyn SecretStore>,
        seal: SealKey,
        outbox: Outbox,
        metrics: Arc<Metrics>,
        options: ApnsOptions,
    ) -> Result<Arc<Self>, PushError> {
        let pusher = Arc::new_cyclic(|me| Self {
            store,
            enrollments,
            secrets,
            seal,
            outbox,
            metrics,
            options,
            certs: RwLock::new(HashMap::new()),
            breaker: StdMutex::new(Breaker::default()),
            inflight: StdMutex::new(HashMap::new()),
            retries: StdMutex::new(Retries::default()),
            me: me.clone(),
        });
        if let Some(sealed) = pusher.secrets.secret(SECRET_CERTS).await? {
            let pems: Vec<String> =
                serde_json::from_slice(&pusher.seal.unseal(SECRET_CERTS, &sealed)?)
                    .map_err(|e| PushError::Certificate(PushCertError::Crypto(e.to_string())))?;
            for pem in pems {
                let cert = PushCertificate::from_pem(pem.as_bytes())?;
                pusher.install(cert)?;
            }
        }
        Ok(pusher)
    }

    fn install(&self, cert: PushCertificate) -> Result<ExpiryState, PushError> {
        let client = ApnsClient::new(&cert, &self.options.endpoint)?;
        let state = ExpiryState::at(cert.not_after, now_unix());
        self.certs.write().expect("certs lock").insert(
            cert.topic.clone(),
            Installed {
                cert,
                client,
                last_state: state,
            },
        );
        Ok(state)
    }

    /// Add (or replace, by topic) a push certificate; it is sealed in the store.
    pub async fn add_certificate(&self, cert: PushCertificate) -> Result<PushCertInfo, PushError> {
        let (topic, not_after) = (cert.topic.clone(), cert.not_after);
        let state = self.install(cert)?;
        let pems: Vec<String> = {
            let certs = self.certs.read().expect("certs lock");
            let mut v = Vec::new();
            for i in certs.values() {
                v.push(String::from_utf8_lossy(&i.cert.to_pem()?).into_owned());
            }
            v
        };
        let sealed = self.seal.seal(
            SECRET_CERTS,
            &serde_json::to_vec(&pems).expect("strings serialize"),
        );
        let info = PushCertInfo {
            topic: topic.clone(),
            not_after: rfc3339(not_after),
            not_after_unix: not_after,
            state,
        };
        let e = event(kind::PUSH_CERTIFICATE_UPLOADED, None, json!(info));
        let events = self
            .secrets
            .put_secret_emitting(SECRET_CERTS, sealed, Emit::events(vec![e]))
            .await?;
        self.outbox.broadcast(&events);
        Ok(info)
    }

    /// The configured push certificates.
    pub fn certificates(&self) -> Vec<PushCertInfo> {
        let now = now_unix();
        let mut v: Vec<_> = self
            .certs
            .read()
            .expect("certs lock")
            .values()
            .map(|i| PushCertInfo {
                topic: i.cert.topic.clone(),
                not_after: rfc3339(i.cert.not_after),
                not_after_unix: i.cert.not_after,
                state: ExpiryState::at(i.cert.not_after, now),
            })
            .collect();
        v.sort_by(|a, b| a.topic.cmp(&b.topic));
        v
    }

    /// The first configured topic (for enrollment profiles).
    pub fn default_topic(&self) -> Option<String> {
        self.certificates().into_iter().next().map(|c| c.topic)
    }

    /// Re-evaluate certificate expiry states; publish an event for each change.
    pub async fn check_certificates(&self) {
        let now = now_unix();
        let changed: Vec<(String, ExpiryState, ExpiryState, i64)> = {
            let mut certs = self.certs.write().expect("certs lock");
            certs
                .values_mut()
                .filter_map(|i| {
                    let s = ExpiryState::at(i.cert.not_after, now);
                    (s != i.last_state).then(|| {
                        let old = std::mem::replace(&mut i.last_state, s);
                        (i.cert.topic.clone(), old, s, i.cert.not_after)
                    })
                })
                .collect()
        };
        for (topic, from, to, not_after) in changed {
            tracing::warn!(%topic, ?from, ?to, "push certificate state changed");
            let e = event(
                kind::PUSH_CERTIFICATE_STATE,
                None,
                json!({"topic": topic, "from": from, "to": to, "not_after": rfc3339(not_after)}),
            );
            if let Err(err) = self.outbox.publish(vec![e]).await {
                tracing::warn!(%err, "could not record push certificate state");
            }
        }
    }

    fn client_for(&self, topic: &str) -> Result<Arc<ApnsClient>, String> {
        let certs = self.certs.read().expect("certs lock");
        if certs.is_empty() {
            return Err("APNs is not configured: upload a push certificate first".into());
        }
        certs
            .get(topic)
            .map(|i| i.client.clone())
            .ok_or_else(|| format!("no push certificate for topic {topic}"))
    }

    fn breaker_open(&self) -> bool {
        let mut b = self.breaker.lock().expect("breaker lock");
        match b.open_until {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                // Half-open: let the next push through; another failure re-opens it.
                b.open_until = None;
                b.failures = self.options.breaker_threshold.saturating_sub(1);
                false
            }
            None => false,
        }
    }

    fn record(&self, ok: bool) {
        let mut b = self.breaker.lock().expect("breaker lock");
        if ok {
            b.failures = 0;
            b.open_until = None;
        } else {
            b.failures += 1;
            if b.failures >= self.options.breaker_threshold && b.open_until.is_none() {
                tracing::warn!(failures = b.failures, "APNs circuit breaker open");
                b.open_until = Some(Instant::now() + self.options.breaker_cooldown);
            }
        }
    }

    /// Whether the circuit breaker is currently open.
    pub fn is_circuit_open(&self) -> bool {
        let b = self.breaker.lock().expect("breaker lock");
        b.open_until.is_some_and(|u| Instant::now() < u)
    }

    /// Schedule a retry for `id` after the next backoff delay. At most one retry waits per
    /// enrollment; after the last delay the push is given up (devices still check in on their
    /// own, and re-arm pushes reach silent ones).
    fn schedule_retry(&self, id: &EnrollmentId) -> Option<Duration> {
        let attempt = {
            let mut r = self.retries.lock().expect("retry lock");
            if r.scheduled.contains(id) {
                return None;
            }
            let attempt = r.attempts.get(id).copied().unwrap_or(0);
            if attempt >= self.options.retry_delays.len() {
                r.attempts.remove(id);
                tracing::warn!(%id, attempts = attempt, "giving up pushing");
                return None;
            }
            r.attempts.insert(id.clone(), attempt + 1);
            r.scheduled.insert(id.clone());
            attempt
        };
        let delay = jitter(self.options.retry_delays[attempt]);
        let me = self.me.upgrade()?;
        let id = id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            me.retries.lock().expect("retry lock").scheduled.remove(&id);
            me.push_ids(std::slice::from_ref(&id)).await;
        });
        Some(delay)
    }

    async fn push_one(&self, id: &EnrollmentId, info: PushInfo) -> PushOutcome {
        // Coalesce: a push already in flight for this enrollment answers for us too.
        let waiter = {
            let mut inflight = self.inflight.lock().expect("inflight lock");
            match inflight.get_mut(id) {
                Some(waiters) => {
                    let (tx, rx) = oneshot::channel();
                    waiters.push(tx);
                    Some(rx)
                }
                None => {
                    inflight.insert(id.clone(), Vec::new());
                    None
                }
            }
        };
        if let Some(rx) = waiter {
            return rx
                .await
                .unwrap_or_else(|_| PushOutcome::Failed("coalesced push was dropped".into()));
        }
        let outcome = self.send(id, &info).await;
        let waiters = self
            .inflight
            .lock()
            .expect("inflight lock")
            .remove(id)
            .unwrap_or_default();
        for w in waiters {
            let _ = w.send(outcome.clone());
        }
        outcome
    }

    async fn send(&self, id: &EnrollmentId, info: &PushInfo) -> PushOutcome {
        let client = match self.client_for(&info.topic) {
            Ok(c) => c,
            Err(e) => return PushOutcome::Failed(e),
        };
        let retry = |why: String| {
            self.metrics.push_failed();
            match self.schedule_retry(id) {
                Some(d) => PushOutcome::Failed(format!("{why}; retrying in {} ms", d.as_millis())),
                None => PushOutcome::Failed(format!(
                    "{why}; a retry is already scheduled or retries are exhausted"
                )),
            }
        };
        if self.breaker_open() {
            return retry("APNs circuit breaker is open".into());
        }
        match client.push(&info.token, &info.push_magic).await {
            Ok(Disposition::Delivered(apns_id)) => {
                self.record(true);
                self.metrics.push_sent();
                self.retries.lock().expect("retry lock").attempts.remove(id);
                PushOutcome::Sent(apns_id)
            }
            Ok(Disposition::InvalidToken(reason)) => {
                self.record(true);
                self.metrics.push_failed();
                let e = event(
                    kind::PUSH_TOKEN_INVALID,
                    Some(id),
                    json!({"reason": reason.as_str(), "token": info.token}),
                );
                match self.store.invalidate_push(id, Emit::events(vec![e])).await {
                    Ok(events) => self.outbox.broadcast(&events),
                    Err(err) => tracing::error!(%err, %id, "could not mark push token invalid"),
                }
                PushOutcome::Failed(format!("APNs: {} (token marked invalid)", reason.as_str()))
            }
            Ok(Disposition::Retry(reason)) => {
                self.record(false);
                retry(format!("APNs: {}", reason.as_str()))
            }
            Ok(Disposition::Failed(reason)) => {
                self.metrics.push_failed();
                PushOutcome::Failed(format!("APNs: {}", reason.as_str()))
            }
            Err(e) => {
                self.record(false);
                retry(e.to_string())
            }
        }
    }

    async fn push_ids(&self, ids: &[EnrollmentId]) -> Vec<(EnrollmentId, PushOutcome)> {
        let targets = match self.store.push_targets(ids).await {
            Ok(t) => t,
            Err(e) => {
                return ids
                    .iter()
                    .map(|id| (id.clone(), PushOutcome::Failed(e.to_string())))
                    .collect();
            }
        };
        futures::stream::iter(targets)
            .map(|(id, info)| async move {
                let outcome = match info {
                    None => PushOutcome::Failed(
                        "no push token: the enrollment is unknown, disabled or has not sent TokenUpdate".into(),
                    ),
                    Some(i) if !i.valid => PushOutcome::Failed(
                        "push token is invalid (APNs refused it); waiting for a new TokenUpdate".into(),
                    ),
                    Some(i) => self.push_one(&id, i).await,
                };
                (id, outcome)
            })
            .buffered(512)
            .collect()
            .await
    }

    /// Push to enabled enrollments not seen for `rearm_after`, at most `rearm_rate_per_sec`.
    /// Returns how many were pushed.
    pub async fn rearm(&self) -> Result<usize, StoreError> {
        let cutoff = time::OffsetDateTime::now_utc()
            - time::Duration::try_from(self.options.rearm_after).unwrap_or(time::Duration::DAY);
        let pace = Duration::from_secs(1) / self.options.rearm_rate_per_sec.max(1);
        let mut after = None;
        let mut pushed = 0;
        loop {
            let page = self
                .enrollments
                .list_enrollments(&EnrollmentQuery {
                    after: after.clone(),
                    limit: Some(500),
                    enabled: Some(true),
                    ..Default::default()
                })
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.to_string());
            for e in &page {
                let silent = e.last_seen_at.is_none_or(|t| t < cutoff);
                if silent && e.push.as_ref().is_some_and(|p| p.valid) {
                    self.push_ids(std::slice::from_ref(&e.id)).await;
                    pushed += 1;
                    tokio::time::sleep(pace).await;
                }
            }
        }
        Ok(pushed)
    }
}

#[async_trait]
impl Pusher for ApnsPusher {
    async fn push(&self, ids: &[EnrollmentId]) -> Vec<(EnrollmentId, PushOutcome)> {
        self.push_ids(ids).await
    }
}
