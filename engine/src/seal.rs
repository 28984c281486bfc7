//! Sealing secrets at rest (AES-256-GCM with a per-installation key).
//!
//! Every secret the engine stores — the CA key, bootstrap tokens, unlock tokens, DEP keys and
//! tokens, command payloads and results, library profiles — is sealed with the [`SealKey`] and
//! bound to a context string naming its purpose and its record (see [`context`]), so a sealed
//! blob copied into another record does not unseal. The key is generated on first start or
//! supplied by the operator.

use std::fmt;
use std::path::Path;

use openssl::rand::rand_bytes;
use openssl::symm::{Cipher, decrypt_aead, encrypt_aead};

const MAGIC: &[u8; 3] = b"PS1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The context strings sealed values are bound to: purpose and record key.
pub mod context {
    /// Bootstrap token of an enrollment.
    pub fn bootstrap_token(enrollment_id: &str) -> String {
        format!("bootstrap-token:{enrollment_id}")
    }

    /// Unlock token of an enrollment.
    pub fn unlock_token(enrollment_id: &str) -> String {
        format!("unlock-token:{enrollment_id}")
    }

    /// Private key of a DEP server's key pair (current or staging).
    pub fn dep_server_key(server: &str) -> String {
        format!("dep-server-key:{server}")
    }

    /// OAuth token of a DEP server.
    pub fn dep_server_token(server: &str) -> String {
        format!("dep-server-token:{server}")
    }

    /// The raw plist of a command (store table `command_raw`).
    pub fn command_raw(uuid: &str) -> String {
        format!("command_raw:{uuid}")
    }

    /// One target's raw command result (store table `results`). The UUID's length keeps
    /// `(uuid, id)` pairs apart whatever characters they hold.
    pub fn command_result(uuid: &str, enrollment_id: &str) -> String {
        format!("results:{}:{uuid}:{enrollment_id}", uuid.len())
    }

    /// The bytes of a library profile (store table `profile_bytes`).
    pub fn profile_bytes(name: &str) -> String {
        format!("profile_bytes:{name}")
    }

    /// A team's JSON record (store table `teams`: its setup steps can hold passwords).
    pub fn team(name: &str) -> String {
        format!("teams:{name}")
    }

    /// An enrollment's setup JSON record (store table `setups`: its steps copy the team's).
    pub fn setup(enrollment_id: &str) -> String {
        format!("setups:{enrollment_id}")
    }

    /// Purposes used before values were bound to their record (schema version 1); only the
    /// migration to schema version 2 opens values with them.
    pub mod legacy {
        /// Bootstrap tokens.
        pub const BOOTSTRAP_TOKEN: &str = "bootstrap-token";
        /// Unlock tokens.
        pub const UNLOCK_TOKEN: &str = "unlock-token";
        /// DEP server private keys.
        pub const DEP_SERVER_KEY: &str = "dep-server-key";
        /// DEP server tokens.
        pub const DEP_SERVER_TOKEN: &str = "dep-server-token";
    }
}

/// Whether `bytes` look like a value produced by [`SealKey::seal`] (its format prefix).
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.len() >= MAGIC.len() + NONCE_LEN + TAG_LEN && bytes.starts_with(MAGIC)
}

/// Errors loading a seal key or unsealing a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The key is not 64 hex characters.
    #[error("seal key must be 64 hexadecimal characters (32 bytes)")]
    BadKey,
    /// The key file could not be read or written.
    #[error("seal key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The sealed blob is not in Pomona's format.
    #[error("sealed secret {context:?} is truncated or not in Pomona's format")]
    Malformed {
        /// The secret's context.
        context: String,
    },
    /// Authentication failed: wrong key, wrong context or tampered data.
    #[error("sealed secret {context:?} cannot be unsealed: wrong seal key or tampered data")]
    Unseal {
        /// The secret's context.
        context: String,
    },
    /// OpenSSL failed.
    #[error("sealing failed: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
}

/// The 256-bit key that seals secrets at rest.
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand_bytes(&mut k).expect("the OpenSSL RNG works");
        Self(k)
    }

    /// Parse 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Self, SealError> {
        let bytes = hex::decode(s.trim()).map_err(|_| SealError::BadKey)?;
        bytes.try_into().map(Self).map_err(|_| SealError::BadKey)
    }

    /// The key as 64 hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Load the key file at `path`, or create it (mode 0600) with a new key.
    pub fn load_or_create(path: &Path) -> Result<Self, SealError> {
        let io = |source| SealError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(s) => Self::from_hex(&s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                crate::fsutil::write_private(path, format!("{}\n", key.to_hex()).as_bytes())
                    .map_err(io)?;
                Ok(key)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Seal `plaintext` for `context`.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand_bytes(&mut nonce).expect("the OpenSSL RNG works");
        let mut tag = [0u8; TAG_LEN];
        let ct = encrypt_aead(
            Cipher::aes_256_gcm(),
            &self.0,
            Some(&nonce),
            context.as_bytes(),
            plaintext,
            &mut tag,
        )
        .expect("AES-256-GCM with a valid key and nonce cannot fail");
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + ct.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out.extend_from_slice(&tag);
        out
    }

    /// Unseal a blob produced by [`SealKey::seal`] with the same context.
    pub fn unseal(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < MAGIC.len() + NONCE_LEN + TAG_LEN || !sealed.starts_with(MAGIC) {
            return Err(SealError::Malformed {
                context: context.to_owned(),
            });
        }
        let body = &sealed[MAGIC.len()..];
        let (nonce, rest) = body.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        decrypt_aead(
            Cipher::aes_256_gcm(),
            &self.0,
            Some(nonce),
            context.as_bytes(),
            ct,
            tag,
        )
        .map_err(|_| SealError::Unseal {
            context: context.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_binding() {
        let k = SealKey::generate();
        let s = k.seal("ca.key", b"secret");
        assert_eq!(k.unseal("ca.key", &s).unwrap(), b"secret");
        assert!(matches!(
            k.unseal("other", &s),
            Err(SealError::Unseal { .. })
        ));
        assert!(matches!(
            SealKey::generate().unseal("ca.key", &s),
            Err(SealError::Unseal { .. })
        ));
        let mut tampered = s.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(k.unseal("ca.key", &tampered).is_err());
        assert!(matches!(
            k.unseal("ca.key", b"PS1"),
            Err(SealError::Malformed { .. })
        ));
    }

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seal.key");
        let k1 = SealKey::load_or_create(&p).unwrap();
        let k2 = SealKey::load_or_create(&p).unwrap();
        assert_eq!(k1.to_hex(), k2.to_hex());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&p, "zz").unwrap();
        assert!(matches!(
            SealKey::load_or_create(&p),
            Err(SealError::BadKey)
        ));
    }
}
