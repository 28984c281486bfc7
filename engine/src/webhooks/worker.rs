//! One subscription's delivery loop, and a single delivery attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{Notify, watch};

use super::{EventFilter, Shared, now, seal_context, signature};
use crate::events::{event, kind};
use crate::store::{Emit, Event, StoreError, Timestamp, WebhookDelivery};

/// What the loop does after a step.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Read again at once (a batch was handled, or the subscription changed under us).
    Again,
    /// Caught up: wait for a new event.
    Idle,
    /// The current event failed: try it again at this time.
    RetryAt(Timestamp),
    /// Nothing to do until the subscription changes (disabled, deleted, unusable).
    Parked,
}

/// Deliver to subscription `name` until shutdown.
pub(super) async fn run(
    shared: Arc<Shared>,
    name: String,
    kick: Arc<Notify>,
    mut head: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let poll = shared.options.poll_interval;
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Events published from here on wake the wait below.
        head.borrow_and_update();
        let next = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            n = step(&shared, &name) => n,
        };
        let (wait_for_events, sleep) = match next {
            Ok(Next::Again) => continue,
            Ok(Next::Idle) => (true, poll),
            Ok(Next::RetryAt(t)) => (false, until(t)),
            Ok(Next::Parked) => (false, poll),
            Err(err) => {
                tracing::warn!(%err, webhook = %name, "webhook delivery paused by a storage error");
                (false, poll.min(Duration::from_secs(5)))
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = kick.notified() => {}
            r = head.changed(), if wait_for_events => {
                if r.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

fn until(t: Timestamp) -> Duration {
    Duration::try_from(t - now()).unwrap_or(Duration::ZERO)
}

/// The delay before retry number `attempts` (1 for the first retry): `initial` doubling per
/// attempt, at most `max`, then a uniformly random point in its upper half (jitter, so many
/// subscriptions failing together do not retry in lockstep).
pub(super) fn backoff(initial: Duration, max: Duration, attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(31);
    let base = initial.saturating_mul(1u32 << exp).min(max);
    let half = base / 2;
    let mut r = [0u8; 8];
    openssl::rand::rand_bytes(&mut r).expect("the OpenSSL RNG works");
    let frac = (u64::from_le_bytes(r) >> 11) as f64 / (1u64 << 53) as f64;
    half + half.mul_f64(frac)
}

/// Handle what is due for one subscription: one batch of events, or one failed attempt.
async fn step(shared: &Shared, name: &str) -> Result<Next, StoreError> {
    let Some(sub) = shared.store.webhook(name).await? else {
        return Ok(Next::Parked);
    };
    if !sub.enabled {
        return Ok(Next::Parked);
    }
    if let Some(t) = sub.delivery.next_attempt_at
        && t > now()
    {
        return Ok(Next::RetryAt(t));
    }
    let mut d = sub.delivery.clone();
    let filter = EventFilter::parse(&sub.events);
    let secret = shared.seal.unseal(&seal_context(name), &sub.secret_sealed);
    let (filter, secret) = match (filter, secret) {
        (Ok(f), Ok(s)) => (f, s),
        (Err(e), _) => return park_broken(shared, name, sub.revision, d, e).await,
        (_, Err(e)) => return park_broken(shared, name, sub.revision, d, e.to_string()).await,
    };
    let events = shared
        .outbox
        .after(d.cursor, shared.options.batch.max(1))
        .await?;
    if events.is_empty() {
        return Ok(Next::Idle);
    }
    let mut unsaved = false;
    for e in &events {
        if e.seq > d.cursor.saturating_add(1) {
            // Everything between the cursor and this event was pruned before it was delivered.
            let lost = (d.cursor + 1, e.seq - 1);
            d.last_error = Some(format!(
                "events {}..={} were pruned from the outbox before they were delivered; continuing from {}",
                lost.0, lost.1, e.seq
            ));
            d.last_error_at = Some(now());
            d.cursor = e.seq - 1;
            // The skip over the lost events and the event reporting it commit together.
            let ev = event(
                kind::WEBHOOK_EVENTS_PRUNED,
                None,
                json!({"name": name, "first_lost": lost.0, "last_lost": lost.1, "resumed_at": e.seq}),
            );
            let (saved, written) = shared
                .store
                .save_webhook_delivery_emitting(
                    name,
                    sub.revision,
                    &d,
                    Emit::with(
                        move |saved: &bool| if *saved { vec![ev.clone()] } else { Vec::new() },
                    ),
                )
                .await?;
            if !saved {
                return Ok(Next::Again);
            }
            shared.outbox.broadcast(&written);
            tracing::warn!(webhook = %name, first = lost.0, last = lost.1, "webhook missed pruned events");
        }
        if !filter.matches(&e.kind) {
            d.cursor = e.seq;
            unsaved = true;
            continue;
        }
        let a = deliver(shared, &sub.url, &secret, e).await;
        let t = now();
        d.last_attempt_at = Some(t);
        d.last_status = a.status;
        match a.error {
            None => {
                d.cursor = e.seq;
                d.attempts = 0;
                d.next_attempt_at = None;
                d.last_success_at = Some(t);
                d.delivered += 1;
                if !shared
                    .store
                    .save_webhook_delivery(name, sub.revision, &d)
                    .await?
                {
                    return Ok(Next::Again);
                }
                unsaved = false;
            }
            Some(err) => {
                d.attempts = d.attempts.saturating_add(1);
                d.failures += 1;
                let delay = backoff(
                    shared.options.initial_backoff,
                    shared.options.max_backoff,
                    d.attempts,
                );
                tracing::debug!(webhook = %name, seq = e.seq, attempts = d.attempts, %err, "webhook delivery failed");
                d.last_error = Some(format!("event {}: {err}", e.seq));
                d.last_error_at = Some(t);
                let retry = t + delay;
                d.next_attempt_at = Some(retry);
                if !shared
                    .store
                    .save_webhook_delivery(name, sub.revision, &d)
                    .await?
                {
                    return Ok(Next::Again);
                }
                return Ok(Next::RetryAt(retry));
            }
        }
    }
    if unsaved
        && !shared
            .store
            .save_webhook_delivery(name, sub.revision, &d)
            .await?
    {
        return Ok(Next::Again);
    }
    Ok(Next::Again)
}

/// A stored subscription the worker cannot use (corrupt filter, secret that does not unseal):
/// say so in `last_error` once, and wait for it to be replaced.
async fn park_broken(
    shared: &Shared,
    name: &str,
    revision: u64,
    mut d: WebhookDelivery,
    why: String,
) -> Result<Next, StoreError> {
    let msg = format!("subscription unusable: {why}");
    if d.last_error.as_deref() != Some(msg.as_str()) {
        tracing::warn!(webhook = %name, error = %msg, "webhook cannot be delivered");
        d.last_error = Some(msg);
        d.last_error_at = Some(now());
        shared
            .store
            .save_webhook_delivery(name, revision, &d)
            .await?;
    }
    Ok(Next::Parked)
}

/// The outcome of one POST.
pub(super) struct Attempt {
    /// The receiver's status, if it answered.
    pub status: Option<u16>,
    /// Why it failed (None: a 2xx answer).
    pub error: Option<String>,
    /// How long it took.
    pub duration: Duration,
}

/// An error with its causes, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Most bytes of a failed answer's body quoted in `last_error`.
const BODY_SNIPPET: usize = 200;

/// POST `event` to `url`, signed with `secret`.
pub(super) async fn deliver(shared: &Shared, url: &str, secret: &[u8], e: &Event) -> Attempt {
    let started = Instant::now();
    let body = serde_json::to_vec(e).expect("events serialize");
    let t = now().unix_timestamp();
    let sig = signature::sign(secret, t, &body);
    let sent = shared
        .client
        .post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("Pomona-Event", e.kind.as_str())
        .header("Pomona-Delivery", e.seq.to_string())
        .header("Pomona-Signature", sig)
        .body(body)
        .send()
        .await;
    let timeout = shared.options.timeout;
    let describe = |err: &reqwest::Error| {
        if err.is_timeout() {
            format!("no answer within {} ms", timeout.as_millis())
        } else {
            chain(err)
        }
    };
    let (status, error) = match sent {
        Err(err) => (None, Some(describe(&err))),
        Ok(mut resp) => {
            let status = resp.status();
            if status.is_success() {
                (Some(status.as_u16()), None)
            } else {
                let mut snippet = Vec::new();
                while snippet.len() < BODY_SNIPPET {
                    match resp.chunk().await {
                        Ok(Some(c)) => snippet.extend_from_slice(&c),
                        _ => break,
                    }
                }
                snippet.truncate(BODY_SNIPPET);
                let text = String::from_utf8_lossy(&snippet);
                let text = text.trim();
                let msg = if text.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {text}")
                };
                (Some(status.as_u16()), Some(msg))
            }
        }
    };
    Attempt {
        status,
        error,
        duration: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Outbox;
    use crate::seal::SealKey;
    use crate::store::redb::RedbStore;
    use crate::store::{EventStore, WebhookStore};
    use crate::webhooks::{WebhookOptions, WebhookService, WebhookSpec};

    #[tokio::test]
    async fn skipping_pruned_events_is_logged_with_the_skip() {
        let store = Arc::new(RedbStore::in_memory().unwrap());
        let outbox = Outbox::new(
            Arc::new(crate::events::testing::FailingAppends(store.clone())),
            16,
        );
        let service = WebhookService::new(
            store.clone(),
            outbox,
            SealKey::generate(),
            WebhookOptions::default(),
        )
        .unwrap();
        let old = now() - time::Duration::days(30);
        let lost = vec![event("test.lost", None, json!({})); 3];
        store.append_events(lost, old).await.unwrap();
        let mut spec = WebhookSpec::new("http://127.0.0.1:9/hook");
        spec.events = vec!["nothing.matches".into()];
        spec.from_seq = Some(1);
        service.put("w", spec).await.unwrap();
        assert_eq!(
            store
                .prune_events(now() - time::Duration::days(1))
                .await
                .unwrap(),
            3
        );

        step(&service.inner.shared, "w").await.unwrap();

        // The skip over events 1..=3 and the event reporting it committed together, although
        // the outbox cannot append.
        let sub = store.webhook("w").await.unwrap().unwrap();
        assert!(sub.delivery.cursor >= 3, "cursor {}", sub.delivery.cursor);
        let log = store.events_after(0, 100).await.unwrap();
        let pruned = log
            .iter()
            .find(|e| e.kind == kind::WEBHOOK_EVENTS_PRUNED)
            .unwrap_or_else(|| panic!("no webhook.events_pruned in {log:?}"));
        assert_eq!(pruned.data["name"], "w");
        assert_eq!(pruned.data["first_lost"], 1);
        assert_eq!(pruned.data["last_lost"], 3);
    }

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let initial = Duration::from_secs(1);
        let max = Duration::from_secs(600);
        for attempts in 1..=12u32 {
            let base = (initial * 2u32.pow(attempts - 1)).min(max);
            for _ in 0..50 {
                let d = backoff(initial, max, attempts);
                assert!(
                    d >= base / 2 && d <= base,
                    "attempt {attempts}: {d:?} not in [{:?}, {base:?}]",
                    base / 2
                );
            }
        }
        // Far past the cap (and past any shift overflow) it stays capped.
        for attempts in [40, 1000, u32::MAX] {
            let d = backoff(initial, max, attempts);
            assert!(d >= max / 2 && d <= max, "{attempts}: {d:?}");
        }
        // The jitter actually varies.
        let samples: std::collections::HashSet<_> =
            (0..20).map(|_| backoff(initial, max, 5)).collect();
        assert!(samples.len() > 1);
    }
}
