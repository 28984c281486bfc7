//! Push notifications: telling devices to check in.
//!
//! The [`Pusher`] trait is what the rest of the engine calls; [`apns::ApnsPusher`] implements it
//! over [`client::ApnsClient`]. Until a push certificate is uploaded every push answers with a
//! precise reason instead of sending.

pub mod apns;
pub mod client;

use async_trait::async_trait;
use serde::Serialize;

use crate::wire::enrollment_id::EnrollmentId;

/// The outcome of pushing to one enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
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
