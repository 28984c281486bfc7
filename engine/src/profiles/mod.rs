//! The configuration-profile library: named `.mobileconfig` files that setup steps and admins
//! install on devices (`InstallProfile`), validated on upload and kept byte for byte.
//!
//! ```no_run
//! # async fn demo(engine: &pomona::Engine) -> Result<(), Box<dyn std::error::Error>> {
//! let bytes = std::fs::read("wifi.mobileconfig")?;
//! let meta = engine.profiles().put("office-wifi", bytes).await?.meta;
//! println!("stored {} ({} payloads)", meta.profile.identifier, meta.profile.payloads.len());
//! // Later, for a device: the ready command, to enqueue with `engine.commands()`.
//! let command = engine
//!     .profiles()
//!     .install_command("office-wifi", "setup-ABC123-wifi")
//!     .await?
//!     .expect("the profile is in the library");
//! # let _ = command; Ok(()) }
//! ```

use std::sync::Arc;

use serde_json::json;

use crate::events::{Outbox, event, kind};
use crate::store::{Emit, ProfileMeta, ProfileStore, StoreError, StoredProfile};
use crate::wire::bounded_plist::PlistLimits;
use crate::wire::command::Command;
use crate::wire::config_profile::{self, InvalidProfile};

/// The largest profile the library accepts (profiles with fonts or many certificates are big;
/// each queued `InstallProfile` carries a copy).
pub const MAX_PROFILE_BYTES: usize = 8 << 20;

/// Why a library operation failed. Nothing changes when one does.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileLibraryError {
    /// The name is not usable in a URL path.
    #[error(
        "invalid profile name {0:?}: use 1-64 letters, digits, '-', '_' or '.', not starting with '.'"
    )]
    InvalidName(String),
    /// The upload is larger than [`MAX_PROFILE_BYTES`].
    #[error("the profile is {size} bytes; the library accepts at most {MAX_PROFILE_BYTES}")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// The bytes are not a valid configuration profile.
    #[error(transparent)]
    Invalid(#[from] InvalidProfile),
    /// No profile by that name.
    #[error("no profile named {0:?} in the library")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`ProfileLibrary::put`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// The stored profile's metadata.
    pub meta: ProfileMeta,
    /// What changed.
    pub change: Change,
}

/// How an upload changed the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The name was new.
    Created,
    /// Different bytes replaced the profile of that name.
    Replaced,
    /// The same bytes were already stored under that name: nothing was written and no event
    /// was emitted (the original `uploaded_at` stays).
    Unchanged,
}

impl Change {
    /// `created`, `replaced` or `unchanged` (as in events and the API).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Replaced => "replaced",
            Self::Unchanged => "unchanged",
        }
    }
}

/// Whether `name` is a usable library name: 1–64 ASCII letters, digits, `-`, `_` or `.`, not
/// starting with `.`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

/// The profile library service: validates uploads, stores them, emits `profile.changed` and
/// `profile.deleted`, and builds `InstallProfile` commands from stored profiles.
pub struct ProfileLibrary {
    store: Arc<dyn ProfileStore>,
    outbox: Outbox,
    write: tokio::sync::Mutex<()>,
    plist_limits: PlistLimits,
}

impl std::fmt::Debug for ProfileLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileLibrary").finish_non_exhaustive()
    }
}

impl ProfileLibrary {
    /// A library over `store`, recording its events in `outbox`.
    pub fn new(store: Arc<dyn ProfileStore>, outbox: Outbox) -> Self {
        Self {
            store,
            outbox,
            write: tokio::sync::Mutex::new(()),
            plist_limits: PlistLimits::default(),
        }
    }

    /// Validate uploads within `limits` (default: [`PlistLimits::default`]).
    pub fn with_plist_limits(mut self, limits: PlistLimits) -> Self {
        self.plist_limits = limits;
        self
    }

    /// Validate `bytes` as a `.mobileconfig` and store them as `name`, creating or replacing it.
    /// Validation happens first: an invalid upload changes nothing, and the previous profile of
    /// that name stays as it was.
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<PutOutcome, ProfileLibraryError> {
        if !valid_name(name) {
            return Err(ProfileLibraryError::InvalidName(name.to_owned()));
        }
        if bytes.len() > MAX_PROFILE_BYTES {
            return Err(ProfileLibraryError::TooLarge { size: bytes.len() });
        }
        let info = config_profile::validate_with(&bytes, &self.plist_limits)?;
        let sha256 = hex::encode(openssl::sha::sha256(&bytes));
        let _guard = self.write.lock().await;
        // A previous record that cannot be read is simply replaced.
        let previous = self.store.profile(name).await.ok().flatten();
        if let Some(p) = previous.as_ref().filter(|p| p.bytes == bytes) {
            return Ok(PutOutcome {
                meta: p.meta.clone(),
                change: Change::Unchanged,
            });
        }
        let meta = ProfileMeta {
            name: name.to_owned(),
            sha256,
            size: bytes.len() as u64,
            uploaded_at: time::OffsetDateTime::now_utc(),
            profile: info,
        };
        let p = &meta.profile;
        let data = json!({
            "name": name,
            "identifier": p.identifier,
            "uuid": p.uuid,
            "sha256": meta.sha256,
            "previous_sha256": previous.map(|p| p.meta.sha256),
            "signed": p.signed,
            "user_scoped": p.user_scoped,
        });
        // The event says whether the write replaced a profile, so it is built from its outcome.
        let emit = Emit::with(move |replaced: &bool| {
            let mut data = data.clone();
            data["change"] = json!(change_of(*replaced).as_str());
            vec![event(kind::PROFILE_CHANGED, None, data)]
        });
        let (replaced, events) = self
            .store
            .put_profile_emitting(
                &StoredProfile {
                    meta: meta.clone(),
                    bytes,
                },
                emit,
            )
            .await?;
        self.outbox.broadcast(&events);
        let change = change_of(replaced);
        Ok(PutOutcome { meta, change })
    }

    /// The stored profile `name`, with its exact bytes (`None` if there is none). This is what
    /// setup steps and admin tools read to install a library profile.
    pub async fn get(&self, name: &str) -> Result<Option<StoredProfile>, StoreError> {
        if !valid_name(name) {
            return Ok(None);
        }
        self.store.profile(name).await
    }

    /// The ready `InstallProfile` command for the library profile `name` with `command_uuid` as
    /// its `CommandUUID` (`None` if there is no such profile). The command carries the stored
    /// bytes as its `Payload`, signature included; enqueue it with
    /// [`crate::mdm::commands::Commander::enqueue`].
    pub async fn install_command(
        &self,
        name: &str,
        command_uuid: impl Into<String>,
    ) -> Result<Option<Command>, StoreError> {
        Ok(self
            .get(name)
            .await?
            .map(|p| p.install_command(command_uuid)))
    }

    /// Every profile's metadata, ordered by name.
    pub async fn list(&self) -> Result<Vec<ProfileMeta>, StoreError> {
        self.store.profiles().await
    }

    /// Remove the profile `name` from the library (devices keep what they installed).
    pub async fn delete(&self, name: &str) -> Result<(), ProfileLibraryError> {
        let _guard = self.write.lock().await;
        let before = if valid_name(name) {
            self.store.profile(name).await.ok().flatten()
        } else {
            None
        };
        if !valid_name(name) {
            return Err(ProfileLibraryError::NotFound(name.to_owned()));
        }
        let deleted = event(
            kind::PROFILE_DELETED,
            None,
            json!({
                "name": name,
                "identifier": before.as_ref().map(|p| p.meta.profile.identifier.clone()),
                "sha256": before.map(|p| p.meta.sha256),
            }),
        );
        let emit = Emit::with(move |existed: &bool| {
            if *existed {
                vec![deleted.clone()]
            } else {
                Vec::new()
            }
        });
        let (existed, events) = self.store.delete_profile_emitting(name, emit).await?;
        if !existed {
            return Err(ProfileLibraryError::NotFound(name.to_owned()));
        }
        self.outbox.broadcast(&events);
        Ok(())
    }
}

fn change_of(replaced: bool) -> Change {
    if replaced {
        Change::Replaced
    } else {
        Change::Created
    }
}

#[cfg(test)]
mod tests;
