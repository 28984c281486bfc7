//! The configuration-profile library: uploaded `.mobileconfig` files, kept byte for byte.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Emit, Event, StoreResult, Timestamp};
use crate::wire::command::Command;
use crate::wire::config_profile::{ProfileInfo, install_profile_command};

/// What the library knows about a stored profile, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileMeta {
    /// The library name (unique; 1–64 letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Lowercase hex SHA-256 of the stored bytes.
    pub sha256: String,
    /// Size of the stored bytes.
    pub size: u64,
    /// When these bytes were uploaded.
    #[serde(with = "time::serde::rfc3339")]
    pub uploaded_at: Timestamp,
    /// What the profile says about itself (identifier, UUID, scope, signer, payloads …).
    pub profile: ProfileInfo,
}

/// A stored profile: its metadata and the exact uploaded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredProfile {
    /// The metadata.
    pub meta: ProfileMeta,
    /// The `.mobileconfig` exactly as uploaded (signed ones included).
    pub bytes: Vec<u8>,
}

impl StoredProfile {
    /// The `InstallProfile` command delivering these bytes, with `command_uuid` as its
    /// `CommandUUID` (choose a deterministic one to make a retried enqueue idempotent).
    pub fn install_command(&self, command_uuid: impl Into<String>) -> Command {
        install_profile_command(command_uuid, &self.bytes)
    }
}

/// Storage of the profile library.
#[async_trait]
pub trait ProfileStore: Send + Sync {
    /// Create or replace a profile (metadata and bytes in one transaction). Returns whether it
    /// replaced one.
    async fn put_profile(&self, profile: &StoredProfile) -> StoreResult<bool> {
        self.put_profile_emitting(profile, Emit::none())
            .await
            .map(|(v, _)| v)
    }

    /// [`Self::put_profile`], appending `emit`'s events (built from the outcome) in the same
    /// transaction.
    async fn put_profile_emitting(
        &self,
        profile: &StoredProfile,
        emit: Emit<bool>,
    ) -> StoreResult<(bool, Vec<Event>)>;

    /// One profile with its bytes.
    async fn profile(&self, name: &str) -> StoreResult<Option<StoredProfile>>;

    /// Every profile's metadata, ordered by name.
    async fn profiles(&self) -> StoreResult<Vec<ProfileMeta>>;

    /// Delete a profile (metadata and bytes). Returns whether it existed.
    async fn delete_profile(&self, name: &str) -> StoreResult<bool> {
        self.delete_profile_emitting(name, Emit::none())
            .await
            .map(|(v, _)| v)
    }

    /// [`Self::delete_profile`], appending `emit`'s events (built from the outcome) in the same
    /// transaction.
    async fn delete_profile_emitting(
        &self,
        name: &str,
        emit: Emit<bool>,
    ) -> StoreResult<(bool, Vec<Event>)>;
}
