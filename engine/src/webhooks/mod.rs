//! Webhook subscriptions: ordered, at-least-once delivery of outbox events to HTTP receivers.
//!
//! A subscription names a URL, a signing secret (sealed at rest) and an event filter
//! ([`EventFilter`]). One delivery worker per subscription reads the durable outbox after the
//! subscription's cursor, skips events the filter rejects, and POSTs each matching event — the
//! same JSON as one element of `GET /v1/events` — signed with `Pomona-Signature`
//! ([`signature`]). A 2xx answer advances the cursor durably; anything else keeps it and retries
//! the same event with exponential backoff and jitter, so a receiver sees every matching event in
//! sequence order at least once (a crash between its 2xx and the cursor write repeats one event;
//! `Pomona-Delivery` carries the sequence number for de-duplication).
//!
//! Workers are independent tasks, so a slow or failing receiver delays only its own
//! subscription. They wake on [`Outbox::subscribe`] broadcasts and also poll, and they stop on
//! engine shutdown. If the outbox pruned events a subscription had not delivered yet (it was
//! disabled or failing for longer than the event retention), the worker records that in
//! `last_error`, publishes [`kind::WEBHOOK_EVENTS_PRUNED`] and continues from the oldest event
//! still retained.

pub mod filter;
pub mod signature;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;

pub use filter::EventFilter;
pub use signature::{SignatureError, sign, verify};

use crate::events::{Outbox, event, kind};
use crate::seal::{SealError, SealKey};
use crate::store::{
    Emit, Event, NewEvent, StoreError, Timestamp, WebhookDelivery, WebhookStart, WebhookStore,
    WebhookSubscription,
};

/// Delivery timing. The defaults suit production; tests shorten them.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebhookOptions {
    /// How long one delivery may take (connect, send, answer) before it counts as failed.
    pub timeout: Duration,
    /// Delay before the first retry of an event; it doubles per failed attempt.
    pub initial_backoff: Duration,
    /// Longest delay between retries.
    pub max_backoff: Duration,
    /// How often workers look for new events without a broadcast (a fallback), and how often
    /// the supervisor checks every stored subscription has a running worker.
    pub poll_interval: Duration,
    /// Most events read from the outbox at a time.
    pub batch: usize,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(600),
            poll_interval: Duration::from_secs(30),
            batch: 100,
        }
    }
}

crate::setters::with_setters!(WebhookOptions {
    with_timeout => timeout: std::time::Duration,
    with_initial_backoff => initial_backoff: std::time::Duration,
    with_max_backoff => max_backoff: std::time::Duration,
    with_poll_interval => poll_interval: std::time::Duration,
    with_batch => batch: usize,
});

/// What an admin sets when creating or replacing a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSpec {
    /// The receiver (`http://` or `https://`).
    pub url: String,
    /// Event kinds or `prefix.*` patterns; empty: every event.
    pub events: Vec<String>,
    /// The signing secret (16–256 printable ASCII characters). `None`: keep the secret of the
    /// subscription being replaced, or generate one for a new subscription.
    pub secret: Option<String>,
    /// Whether to deliver.
    pub enabled: bool,
    /// Deliver events with `seq >= from_seq` (the cursor becomes `from_seq - 1`). `None`: a new
    /// subscription starts at the head (only future events), a replaced one keeps its cursor.
    pub from_seq: Option<u64>,
}

impl WebhookSpec {
    /// An enabled subscription to every event at `url`, with a generated secret.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            events: Vec::new(),
            secret: None,
            enabled: true,
            from_seq: None,
        }
    }
}

/// A subscription as admins see it: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Webhook {
    /// Unique name.
    pub name: String,
    /// The receiver.
    pub url: String,
    /// The event filter as given.
    pub events: Vec<String>,
    /// Whether it is delivered to.
    pub enabled: bool,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
    /// When it was last replaced.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: Timestamp,
    /// Delivery state: cursor, attempts, last success and error, counters.
    #[serde(flatten)]
    pub delivery: WebhookDelivery,
}

impl From<&WebhookSubscription> for Webhook {
    fn from(s: &WebhookSubscription) -> Self {
        Self {
            name: s.name.clone(),
            url: s.url.clone(),
            events: s.events.clone(),
            enabled: s.enabled,
            created_at: s.created_at,
            updated_at: s.updated_at,
            delivery: s.delivery.clone(),
        }
    }
}

/// The result of [`WebhookService::put`].
#[derive(Debug, Clone)]
pub struct PutOutcome {
    /// The stored subscription.
    pub webhook: Webhook,
    /// Whether it was new (rather than a replacement).
    pub created: bool,
    /// The secret, only when the engine generated it (it is not shown again).
    pub generated_secret: Option<String>,
}

/// The outcome of one synchronous test delivery ([`WebhookService::test`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestDelivery {
    /// Whether the receiver answered 2xx.
    pub ok: bool,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// How long the delivery took.
    pub duration_ms: u64,
}

/// Errors of webhook administration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// No such subscription.
    #[error("no webhook named {0:?}")]
    NotFound(String),
    /// The input is unacceptable (the message says exactly why).
    #[error("{0}")]
    Invalid(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored secret could not be unsealed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The HTTP client could not be built.
    #[error("webhook HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// What the delivery workers share.
pub(crate) struct Shared {
    store: Arc<dyn WebhookStore>,
    outbox: Outbox,
    seal: SealKey,
    options: WebhookOptions,
    client: reqwest::Client,
}

struct Worker {
    kick: Arc<Notify>,
    task: JoinHandle<()>,
}

/// Set once the service is started.
#[derive(Clone)]
struct Runtime {
    shutdown: watch::Receiver<bool>,
    head: watch::Receiver<u64>,
}

struct Inner {
    shared: Arc<Shared>,
    /// Serialises administration, so a store change and its worker change happen together.
    admin: tokio::sync::Mutex<()>,
    workers: Mutex<HashMap<String, Worker>>,
    runtime: Mutex<Option<Runtime>>,
}

/// Webhook subscriptions and their delivery workers.
pub struct WebhookService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WebhookService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookService").finish_non_exhaustive()
    }
}

/// The seal context of a subscription's secret (bound to its name).
fn seal_context(name: &str) -> String {
    format!("webhook-secret:{name}")
}

fn now() -> Timestamp {
    time::OffsetDateTime::now_utc()
}

/// Check a subscription name: 1–64 letters, digits, `-`, `_` or `.`.
pub fn validate_name(name: &str) -> Result<(), WebhookError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(WebhookError::Invalid(format!(
            "webhook name {name:?} must be 1-64 characters of letters, digits, '-', '_' or '.'"
        )))
    }
}

fn validate_url(url: &str) -> Result<(), WebhookError> {
    let invalid = |why: String| WebhookError::Invalid(format!("url {url:?} {why}"));
    if url.len() > 2048 {
        return Err(invalid("is longer than 2048 characters".into()));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(format!("is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "must use http or https, not {:?}",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("has no host".into()));
    }
    Ok(())
}

fn validate_secret(secret: &str) -> Result<(), WebhookError> {
    if !(16..=256).contains(&secret.len()) {
        return Err(WebhookError::Invalid(format!(
            "secret must be 16 to 256 characters long, not {}",
            secret.len()
        )));
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(WebhookError::Invalid(
            "secret must be printable ASCII without spaces".into(),
        ));
    }
    Ok(())
}

/// A new random secret: 32 random bytes as 64 hex characters (the characters are the key).
fn generate_secret() -> String {
    let mut b = [0u8; 32];
    openssl::rand::rand_bytes(&mut b).expect("the OpenSSL RNG works");
    hex::encode(b)
}

impl WebhookService {
    /// A service over `store`, delivering events of `outbox`, sealing secrets with `seal`.
    /// Nothing is delivered until [`WebhookService::start`].
    pub fn new(
        store: Arc<dyn WebhookStore>,
        outbox: Outbox,
        seal: SealKey,
        options: WebhookOptions,
    ) -> Result<Self, WebhookError> {
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("pomona-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(WebhookError::Client)?;
        Ok(Self {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared {
                    store,
                    outbox,
                    seal,
                    options,
                    client,
                }),
                admin: tokio::sync::Mutex::new(()),
                workers: Mutex::new(HashMap::new()),
                runtime: Mutex::new(None),
            }),
        })
    }

    /// Start delivering: one worker per stored subscription (and per subscription created later),
    /// woken by new events. The returned task ends, after every worker stopped, once `shutdown`
    /// turns true (the engine calls this from its builder and awaits it at shutdown).
    pub fn start(&self, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let inner = self.inner.clone();
        let mut live = inner.shared.outbox.subscribe();
        let (head_tx, head_rx) = watch::channel(0u64);
        *inner.runtime.lock().expect("webhook runtime lock") = Some(Runtime {
            shutdown: shutdown.clone(),
            head: head_rx,
        });
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(inner.shared.options.poll_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !*shutdown.borrow() {
                tokio::select! {
                    _ = shutdown.changed() => {}
                    r = live.recv() => match r {
                        Ok(e) => head_tx.send_modify(|h| *h = (*h).max(e.seq)),
                        // Missed broadcasts: wake everyone; they read the durable outbox anyway.
                        Err(broadcast::error::RecvError::Lagged(_)) => head_tx.send_modify(|_| {}),
                        Err(broadcast::error::RecvError::Closed) => {
                            let _ = shutdown.changed().await;
                        }
                    },
                    // Also the first tick: start a worker for every stored subscription (and
                    // restart any that died).
                    _ = tick.tick() => match inner.shared.store.webhooks().await {
                        Ok(subs) => {
                            for s in subs {
                                ensure_worker(&inner, &s.name, false);
                            }
                        }
                        Err(err) => tracing::warn!(%err, "cannot list webhook subscriptions"),
                    },
                }
            }
            *inner.runtime.lock().expect("webhook runtime lock") = None;
            let workers: Vec<Worker> = inner
                .workers
                .lock()
                .expect("webhook workers lock")
                .drain()
                .map(|(_, w)| w)
                .collect();
            for w in workers {
                let _ = w.task.await;
            }
        })
    }

    /// Create or replace subscription `name`. Validation errors are
    /// [`WebhookError::Invalid`] with a precise message.
    pub async fn put(&self, name: &str, spec: WebhookSpec) -> Result<PutOutcome, WebhookError> {
        validate_name(name)?;
        validate_url(&spec.url)?;
        EventFilter::parse(&spec.events).map_err(WebhookError::Invalid)?;
        if let Some(s) = &spec.secret {
            validate_secret(s)?;
        }
        let store = &self.inner.shared.store;
        let start = match spec.from_seq {
            None => WebhookStart::Keep,
            Some(from) => {
                let head = store.event_head().await?;
                if from > head.saturating_add(1) {
                    return Err(WebhookError::Invalid(format!(
                        "from_seq {from} is past the next event: the newest event is {head}, so from_seq can be at most {}",
                        head + 1
                    )));
                }
                WebhookStart::After(from.saturating_sub(1))
            }
        };
        let _admin = self.inner.admin.lock().await;
        let old = store.webhook(name).await?;
        let seal = &self.inner.shared.seal;
        let (secret_sealed, generated_secret) = match (&spec.secret, &old) {
            (Some(s), _) => (seal.seal(&seal_context(name), s.as_bytes()), None),
            (None, Some(o)) => (o.secret_sealed.clone(), None),
            (None, None) => {
                let s = generate_secret();
                (seal.seal(&seal_context(name), s.as_bytes()), Some(s))
            }
        };
        let t = now();
        let record = WebhookSubscription {
            name: name.to_owned(),
            url: spec.url,
            secret_sealed,
            events: spec.events,
            enabled: spec.enabled,
            revision: 0,
            created_at: t,
            updated_at: t,
            delivery: WebhookDelivery::default(),
        };
        let created = old.is_none();
        let changed = change_event(name, if created { "created" } else { "replaced" });
        let (stored, events) = store
            .put_webhook_emitting(&record, start, Emit::events(vec![changed]))
            .await?;
        self.inner.shared.outbox.broadcast(&events);
        ensure_worker(&self.inner, name, true);
        drop(_admin);
        Ok(PutOutcome {
            webhook: Webhook::from(&stored),
            created,
            generated_secret,
        })
    }

    /// One subscription.
    pub async fn get(&self, name: &str) -> Result<Webhook, WebhookError> {
        self.inner
            .shared
            .store
            .webhook(name)
            .await?
            .map(|s| Webhook::from(&s))
            .ok_or_else(|| WebhookError::NotFound(name.to_owned()))
    }

    /// Every subscription, by name.
    pub async fn list(&self) -> Result<Vec<Webhook>, WebhookError> {
        Ok(self
            .inner
            .shared
            .store
            .webhooks()
            .await?
            .iter()
            .map(Webhook::from)
            .collect())
    }

    /// Delete a subscription and stop its worker.
    pub async fn delete(&self, name: &str) -> Result<(), WebhookError> {
        let admin = self.inner.admin.lock().await;
        let deleted = change_event(name, "deleted");
        let emit = Emit::with(move |existed: &bool| {
            if *existed {
                vec![deleted.clone()]
            } else {
                Vec::new()
            }
        });
        let (existed, events) = self
            .inner
            .shared
            .store
            .delete_webhook_emitting(name, emit)
            .await?;
        if !existed {
            return Err(WebhookError::NotFound(name.to_owned()));
        }
        let worker = self
            .inner
            .workers
            .lock()
            .expect("webhook workers lock")
            .remove(name);
        if let Some(w) = worker {
            w.task.abort();
        }
        drop(admin);
        self.inner.shared.outbox.broadcast(&events);
        Ok(())
    }

    /// Send a `webhook.test` event to this subscription only, now, whatever its filter and
    /// `enabled` say, and report what the receiver answered. The event is not in the outbox: its
    /// `seq` (and `Pomona-Delivery`) is 0. Delivery state is not changed.
    pub async fn test(&self, name: &str) -> Result<TestDelivery, WebhookError> {
        let sub = self
            .inner
            .shared
            .store
            .webhook(name)
            .await?
            .ok_or_else(|| WebhookError::NotFound(name.to_owned()))?;
        let secret = self
            .inner
            .shared
            .seal
            .unseal(&seal_context(name), &sub.secret_sealed)?;
        let e = Event {
            seq: 0,
            at: now(),
            kind: kind::WEBHOOK_TEST.to_owned(),
            enrollment_id: None,
            data: json!({"webhook": name}),
        };
        let a = worker::deliver(&self.inner.shared, &sub.url, &secret, &e).await;
        Ok(TestDelivery {
            ok: a.error.is_none(),
            status: a.status,
            error: a.error,
            duration_ms: u64::try_from(a.duration.as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// The `webhook.changed` event, written with the change it reports.
fn change_event(name: &str, action: &str) -> NewEvent {
    event(
        kind::WEBHOOK_CHANGED,
        None,
        json!({"name": name, "action": action}),
    )
}

/// Make sure `name` has a running worker (once the service is started); `kick` wakes an existing
/// one to re-read its subscription.
fn ensure_worker(inner: &Inner, name: &str, kick: bool) {
    let Some(rt) = inner.runtime.lock().expect("webhook runtime lock").clone() else {
        return;
    };
    let mut workers = inner.workers.lock().expect("webhook workers lock");
    if let Some(w) = workers.get(name)
        && !w.task.is_finished()
    {
        if kick {
            w.kick.notify_one();
        }
        return;
    }
    let kick = Arc::new(Notify::new());
    let task = tokio::spawn(worker::run(
        inner.shared.clone(),
        name.to_owned(),
        kick.clone(),
        rt.head,
        rt.shutdown,
    ));
    workers.insert(name.to_owned(), Worker { kick, task });
}
