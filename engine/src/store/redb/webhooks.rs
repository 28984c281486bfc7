//! [`WebhookStore`] on redb: one JSON record per subscription in `webhooks`.

use ::redb::{ReadableTable, WriteTransaction};
use async_trait::async_trait;

use super::tables::{META, WEBHOOKS, next_seq};
use super::{RedbStore, backend, decode, encode};
use crate::store::{
    Emit, Event, StoreResult, WebhookDelivery, WebhookStart, WebhookStore, WebhookSubscription,
};

fn load(txn: &WriteTransaction, name: &str) -> StoreResult<Option<WebhookSubscription>> {
    let t = txn.open_table(WEBHOOKS).map_err(backend)?;
    let v = t.get(name).map_err(backend)?;
    v.map(|v| decode(&format!("webhook {name}"), v.value()))
        .transpose()
}

fn save(txn: &WriteTransaction, s: &WebhookSubscription) -> StoreResult<()> {
    txn.open_table(WEBHOOKS)
        .map_err(backend)?
        .insert(s.name.as_str(), encode(s).as_slice())
        .map_err(backend)?;
    Ok(())
}

fn head_in(meta: &impl ReadableTable<&'static str, u64>) -> StoreResult<u64> {
    Ok(meta
        .get("event_seq")
        .map_err(backend)?
        .map_or(0, |v| v.value()))
}

#[async_trait]
impl WebhookStore for RedbStore {
    async fn put_webhook_emitting(
        &self,
        subscription: &WebhookSubscription,
        start: WebhookStart,
        emit: Emit<WebhookSubscription>,
    ) -> StoreResult<(WebhookSubscription, Vec<Event>)> {
        let s = subscription.clone();
        self.write_emitting(emit, time::OffsetDateTime::now_utc(), move |txn| {
            let old = load(txn, &s.name)?;
            let mut new = s.clone();
            new.revision = next_seq(txn, "webhook_revision")?;
            let head = head_in(&txn.open_table(META).map_err(backend)?)?;
            new.delivery = old.as_ref().map(|o| o.delivery.clone()).unwrap_or_default();
            new.delivery.attempts = 0;
            new.delivery.next_attempt_at = None;
            new.delivery.cursor = match (start, &old) {
                (WebhookStart::Keep, Some(o)) => o.delivery.cursor,
                (WebhookStart::Keep | WebhookStart::Head, _) => head,
                (WebhookStart::After(cursor), _) => cursor,
            };
            if let Some(o) = &old {
                new.created_at = o.created_at;
            }
            save(txn, &new)?;
            Ok(new)
        })
        .await
    }

    async fn webhook(&self, name: &str) -> StoreResult<Option<WebhookSubscription>> {
        self.read(|txn| {
            let t = txn.open_table(WEBHOOKS).map_err(backend)?;
            t.get(name)
                .map_err(backend)?
                .map(|v| decode(&format!("webhook {name}"), v.value()))
                .transpose()
        })
    }

    async fn webhooks(&self) -> StoreResult<Vec<WebhookSubscription>> {
        self.read(|txn| {
            let t = txn.open_table(WEBHOOKS).map_err(backend)?;
            let mut out = Vec::new();
            for e in t.range::<&str>(..).map_err(backend)? {
                let (k, v) = e.map_err(backend)?;
                out.push(decode(&format!("webhook {}", k.value()), v.value())?);
            }
            Ok(out)
        })
    }

    async fn delete_webhook_emitting(
        &self,
        name: &str,
        emit: Emit<bool>,
    ) -> StoreResult<(bool, Vec<Event>)> {
        let name = name.to_owned();
        self.write_emitting(emit, time::OffsetDateTime::now_utc(), move |txn| {
            Ok(txn
                .open_table(WEBHOOKS)
                .map_err(backend)?
                .remove(name.as_str())
                .map_err(backend)?
                .is_some())
        })
        .await
    }

    async fn save_webhook_delivery_emitting(
        &self,
        name: &str,
        revision: u64,
        delivery: &WebhookDelivery,
        emit: Emit<bool>,
    ) -> StoreResult<(bool, Vec<Event>)> {
        let name = name.to_owned();
        let delivery = delivery.clone();
        let now = time::OffsetDateTime::now_utc();
        self.write_emitting(emit, now, move |txn| {
            let Some(mut s) = load(txn, &name)? else {
                return Ok(false);
            };
            if s.revision != revision {
                return Ok(false);
            }
            s.delivery = delivery.clone();
            save(txn, &s)?;
            Ok(true)
        })
        .await
    }

    async fn event_head(&self) -> StoreResult<u64> {
        self.read(|txn| head_in(&txn.open_table(META).map_err(backend)?))
    }
}
