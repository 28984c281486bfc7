//! Webhook subscriptions and their delivery state (see [`crate::webhooks`]).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Emit, Event, StoreResult, Timestamp};

/// A webhook subscription as stored: where to deliver, what, and how far delivery got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSubscription {
    /// Unique, URL-safe name.
    pub name: String,
    /// The receiver's URL (`http` or `https`).
    pub url: String,
    /// The signing secret, sealed (never stored or returned in clear).
    pub secret_sealed: Vec<u8>,
    /// Event kinds (exact, or prefixes ending in `.*`) to deliver; empty: every event.
    pub events: Vec<String>,
    /// Whether the delivery worker delivers to it.
    pub enabled: bool,
    /// Set by the store on every [`WebhookStore::put_webhook`], unique across subscriptions, so a
    /// delivery worker holding an older copy cannot overwrite a newer configuration's state.
    pub revision: u64,
    /// When it was first created (kept across replacements).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
    /// When it was last created or replaced.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: Timestamp,
    /// How far delivery got.
    #[serde(default)]
    pub delivery: WebhookDelivery,
}

/// Delivery progress of one subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// The outbox sequence number of the last event delivered or skipped (0: none yet).
    pub cursor: u64,
    /// Failed attempts at the current event (the one after the cursor); 0 after a success.
    pub attempts: u32,
    /// When the current event is retried, while backing off.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub next_attempt_at: Option<Timestamp>,
    /// When the last delivery attempt finished.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub last_attempt_at: Option<Timestamp>,
    /// When the receiver last accepted an event.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub last_success_at: Option<Timestamp>,
    /// The HTTP status of the last attempt (none if it got no answer).
    pub last_status: Option<u16>,
    /// The last error (a failed attempt, or events pruned before they were delivered); kept after
    /// later successes so it can be read, see `last_error_at`.
    pub last_error: Option<String>,
    /// When `last_error` happened.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub last_error_at: Option<Timestamp>,
    /// Events the receiver accepted, in total.
    pub delivered: u64,
    /// Failed attempts, in total.
    pub failures: u64,
}

/// Where delivery starts when a subscription is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebhookStart {
    /// Keep the cursor of the subscription being replaced; a new one starts at the head.
    Keep,
    /// At the head: only events appended after this write are delivered.
    Head,
    /// With this cursor: events with `seq > cursor` are delivered.
    After(u64),
}

/// Storage of webhook subscriptions, for the webhook service.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Create or replace a subscription, in one transaction. The store assigns a fresh
    /// `revision`, keeps `created_at` and the delivery counters of a replaced subscription,
    /// resets `attempts` and `next_attempt_at` (a changed subscription is tried at once), and
    /// places the cursor as `start` says (the head is read in the same transaction). The given
    /// `revision` and `delivery` are ignored. Returns the stored subscription.
    async fn put_webhook(
        &self,
        subscription: &WebhookSubscription,
        start: WebhookStart,
    ) -> StoreResult<WebhookSubscription> {
        self.put_webhook_emitting(subscription, start, Emit::none())
            .await
            .map(|(v, _)| v)
    }

    /// [`Self::put_webhook`], appending `emit`'s events in the same transaction.
    async fn put_webhook_emitting(
        &self,
        subscription: &WebhookSubscription,
        start: WebhookStart,
        emit: Emit<WebhookSubscription>,
    ) -> StoreResult<(WebhookSubscription, Vec<Event>)>;

    /// One subscription.
    async fn webhook(&self, name: &str) -> StoreResult<Option<WebhookSubscription>>;

    /// Every subscription, ordered by name.
    async fn webhooks(&self) -> StoreResult<Vec<WebhookSubscription>>;

    /// Delete a subscription; whether it existed.
    async fn delete_webhook(&self, name: &str) -> StoreResult<bool> {
        self.delete_webhook_emitting(name, Emit::none())
            .await
            .map(|(v, _)| v)
    }

    /// [`Self::delete_webhook`], appending `emit`'s events (built from whether it existed) in the
    /// same transaction.
    async fn delete_webhook_emitting(
        &self,
        name: &str,
        emit: Emit<bool>,
    ) -> StoreResult<(bool, Vec<Event>)>;

    /// Replace the delivery state of subscription `name` if its revision is still `revision`.
    /// Returns false (and changes nothing) if it was deleted or replaced meanwhile.
    async fn save_webhook_delivery(
        &self,
        name: &str,
        revision: u64,
        delivery: &WebhookDelivery,
    ) -> StoreResult<bool> {
        self.save_webhook_delivery_emitting(name, revision, delivery, Emit::none())
            .await
            .map(|(saved, _)| saved)
    }

    /// [`WebhookStore::save_webhook_delivery`], appending `emit`'s events (given whether it was
    /// saved) in the same transaction.
    async fn save_webhook_delivery_emitting(
        &self,
        name: &str,
        revision: u64,
        delivery: &WebhookDelivery,
        emit: Emit<bool>,
    ) -> StoreResult<(bool, Vec<Event>)>;

    /// The sequence number of the newest event ever appended (0 if none), even if it was pruned.
    async fn event_head(&self) -> StoreResult<u64>;
}
