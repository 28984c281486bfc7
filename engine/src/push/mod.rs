//! Push notifications: telling devices to check in.
//!
//! The [`Pusher`] trait is what the rest of the engine calls. Until an APNs push certificate is
//! configured, [`Unconfigured`] answers every push with a precise reason instead of sending.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::store::PushStore;
use crate::wire::enrollment_id::EnrollmentId;

/// The outcome of pushing to one enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushOutcome {
    /// APNs accepted the notification; its `apns-id`.
    Sent(String),
    /// Not sent, and why.
    Failed(String),
}

/// Sends MDM pushes.
#[async_trait]
pub trait Pusher: Send + Sync + 'static {
    /// Push to each enrollment; one outcome per ID, in order.
    async fn push(&self, ids: &[EnrollmentId]) -> Vec<(EnrollmentId, PushOutcome)>;
}

/// The pusher used while no APNs push certificate is configured.
pub struct Unconfigured {
    store: Arc<dyn PushStore>,
}

impl Unconfigured {
    /// A pusher that reports why nothing can be sent.
    pub fn new(store: Arc<dyn PushStore>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl Pusher for Unconfigured {
    async fn push(&self, ids: &[EnrollmentId]) -> Vec<(EnrollmentId, PushOutcome)> {
        let targets = match self.store.push_targets(ids).await {
            Ok(t) => t,
            Err(e) => {
                return ids
                    .iter()
                    .map(|id| (id.clone(), PushOutcome::Failed(e.to_string())))
                    .collect();
            }
        };
        targets
            .into_iter()
            .map(|(id, info)| {
                let reason = match info {
                    None => "no push token: the enrollment is unknown, disabled or has not sent TokenUpdate",
                    Some(_) => "APNs is not configured: upload a push certificate first",
                };
                (id, PushOutcome::Failed(reason.to_owned()))
            })
            .collect()
    }
}
