//! The schema version, and the migrations that bring older files up to it.

use ::redb::{Database, ReadableTable};

use super::error::backend;
use super::{challenges, sealed, tables};
use crate::seal::SealKey;
use crate::store::{StoreError, StoreResult};

/// The schema version this build writes. Bump it with a migration in `migrate`.
///
/// Version 2 seals command payloads, command results and library profile bytes, binds sealed
/// tokens and DEP keys to their record ([`crate::seal::context`]), and indexes SCEP challenges
/// by expiry (`scep_challenge_expiry`).
pub const SCHEMA_VERSION: u64 = 2;

/// Create tables and bring the schema up to [`SCHEMA_VERSION`]. Returns whether rows were
/// rewritten.
pub(super) fn migrate(db: &Database, seal: &SealKey) -> StoreResult<bool> {
    let txn = db.begin_write().map_err(backend)?;
    // New tables are additive: creating them is idempotent and needs no version bump.
    tables::create_all(&txn)?;
    let mut rewrote = false;
    {
        let mut meta = txn.open_table(tables::META).map_err(backend)?;
        let found = meta
            .get("schema_version")
            .map_err(backend)?
            .map(|v| v.value());
        match found {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::SchemaTooNew {
                    found: v,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(v) if v == SCHEMA_VERSION => {}
            Some(1) => {
                drop(meta);
                sealed::migrate_1_to_2(&txn, seal)?;
                // 1 → 2 also indexes the challenges stored before the expiry index existed.
                let n = challenges::index_challenges(&txn)?;
                tracing::info!(challenges = n, "database migrated to schema 2");
                rewrote = true;
                txn.open_table(tables::META)
                    .map_err(backend)?
                    .insert("schema_version", SCHEMA_VERSION)
                    .map_err(backend)?;
            }
            // A new database.
            _ => {
                meta.insert("schema_version", SCHEMA_VERSION)
                    .map_err(backend)?;
            }
        }
    }
    txn.commit().map_err(backend)?;
    Ok(rewrote)
}
