//! Values the redb store seals at rest, and the migration that sealed (or re-bound) the values
//! of schema version 1.
//!
//! The store seals `command_raw`, `results`, `profile_bytes`, `teams` and `setups` itself, each
//! value bound to its table and key ([`crate::seal::context`]). Tokens and DEP keys arrive sealed by their services;
//! the migration only re-binds them from the fixed purpose of version 1 to their record.

use ::redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::tables::{
    BOOTSTRAP, COMMAND_RAW, DEP_SERVERS, ENROLLMENTS, PROFILE_BYTES, RESULTS, SETUPS, TEAMS,
};
use super::{RedbStore, backend, decode, encode};
use crate::seal::{SealKey, context, is_sealed};
use crate::store::{DepServer, Enrollment, StoreError, StoreResult};

impl RedbStore {
    /// Seal `plaintext` for `ctx`.
    pub(super) fn seal_value(&self, ctx: &str, plaintext: &[u8]) -> Vec<u8> {
        self.seal.seal(ctx, plaintext)
    }

    /// Open a value this store sealed for `ctx`; `what` names the record in errors.
    pub(super) fn open_value(&self, what: &str, ctx: &str, sealed: &[u8]) -> StoreResult<Vec<u8>> {
        open_with(&self.seal, what, ctx, sealed)
    }
}

/// Encode a JSON record and seal it for `ctx`.
pub(super) fn seal_json<T: serde::Serialize>(seal: &SealKey, ctx: &str, value: &T) -> Vec<u8> {
    seal.seal(ctx, &encode(value))
}

/// Open a JSON record sealed with [`seal_json`] and decode it; `what` names it in errors.
pub(super) fn open_json<T: serde::de::DeserializeOwned>(
    seal: &SealKey,
    what: &str,
    ctx: &str,
    sealed: &[u8],
) -> StoreResult<T> {
    decode(what, &open_with(seal, what, ctx, sealed)?)
}

fn open_with(seal: &SealKey, what: &str, ctx: &str, sealed: &[u8]) -> StoreResult<Vec<u8>> {
    seal.unseal(ctx, sealed).map_err(|e| StoreError::Corrupt {
        what: what.to_owned(),
        detail: e.to_string(),
    })
}

/// Re-seal a value sealed with the version-1 purpose `legacy` for `bound`.
fn rebind(
    seal: &SealKey,
    what: &str,
    legacy: &str,
    bound: &str,
    sealed: &[u8],
) -> StoreResult<Vec<u8>> {
    let plain = open_with(seal, what, legacy, sealed)?;
    Ok(seal.seal(bound, &plain))
}

/// Seal every value of a `&str`-keyed table still in the clear.
fn seal_str_table(
    txn: &WriteTransaction,
    table: TableDefinition<&str, &[u8]>,
    seal: &SealKey,
    ctx: fn(&str) -> String,
) -> StoreResult<()> {
    let mut t = txn.open_table(table).map_err(backend)?;
    let mut clear = Vec::new();
    for entry in t.range::<&str>(..).map_err(backend)? {
        let (k, v) = entry.map_err(backend)?;
        if !is_sealed(v.value()) {
            clear.push((k.value().to_owned(), v.value().to_vec()));
        }
    }
    for (k, v) in clear {
        t.insert(k.as_str(), seal.seal(&ctx(&k), &v).as_slice())
            .map_err(backend)?;
    }
    Ok(())
}

/// Schema 1 → 2: seal command payloads, results and profile bytes; bind bootstrap and unlock
/// tokens to their enrollment and DEP keys and tokens to their server.
pub(super) fn migrate_1_to_2(txn: &WriteTransaction, seal: &SealKey) -> StoreResult<()> {
    use crate::seal::context::legacy;
    seal_str_table(txn, COMMAND_RAW, seal, context::command_raw)?;
    seal_str_table(txn, PROFILE_BYTES, seal, context::profile_bytes)?;
    seal_str_table(txn, TEAMS, seal, context::team)?;
    seal_str_table(txn, SETUPS, seal, context::setup)?;
    {
        let mut t = txn.open_table(RESULTS).map_err(backend)?;
        let mut clear = Vec::new();
        for entry in t.range::<(&str, &str)>(..).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            if !is_sealed(v.value()) {
                let (uuid, id) = k.value();
                clear.push((uuid.to_owned(), id.to_owned(), v.value().to_vec()));
            }
        }
        for (uuid, id, v) in clear {
            let sealed = seal.seal(&context::command_result(&uuid, &id), &v);
            t.insert((uuid.as_str(), id.as_str()), sealed.as_slice())
                .map_err(backend)?;
        }
    }
    {
        let mut t = txn.open_table(BOOTSTRAP).map_err(backend)?;
        let mut rows = Vec::new();
        for entry in t.range::<&str>(..).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            rows.push((k.value().to_owned(), v.value().to_vec()));
        }
        for (id, v) in rows {
            let what = format!("bootstrap token of {id}");
            let bound = context::bootstrap_token(&id);
            let v = rebind(seal, &what, legacy::BOOTSTRAP_TOKEN, &bound, &v)?;
            t.insert(id.as_str(), v.as_slice()).map_err(backend)?;
        }
    }
    {
        let mut t = txn.open_table(ENROLLMENTS).map_err(backend)?;
        let mut rows = Vec::new();
        for entry in t.range::<&str>(..).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let e: Enrollment = decode(&format!("enrollment {}", k.value()), v.value())?;
            if e.unlock_token_sealed.is_some() {
                rows.push((k.value().to_owned(), e));
            }
        }
        for (id, mut e) in rows {
            let what = format!("unlock token of {id}");
            let bound = context::unlock_token(&id);
            if let Some(v) = &e.unlock_token_sealed {
                e.unlock_token_sealed = Some(rebind(seal, &what, legacy::UNLOCK_TOKEN, &bound, v)?);
            }
            t.insert(id.as_str(), encode(&e).as_slice())
                .map_err(backend)?;
        }
    }
    {
        let mut t = txn.open_table(DEP_SERVERS).map_err(backend)?;
        let mut rows = Vec::new();
        for entry in t.range::<&str>(..).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let s: DepServer = decode(&format!("DEP server {}", k.value()), v.value())?;
            rows.push((k.value().to_owned(), s));
        }
        for (name, mut s) in rows {
            let key_ctx = context::dep_server_key(&name);
            let what = format!("key of DEP server {name}");
            for keys in [&mut s.current_keys, &mut s.staging_keys]
                .into_iter()
                .flatten()
            {
                keys.key_sealed = rebind(
                    seal,
                    &what,
                    legacy::DEP_SERVER_KEY,
                    &key_ctx,
                    &keys.key_sealed,
                )?;
            }
            if let Some(v) = &s.token_sealed {
                let what = format!("token of DEP server {name}");
                let bound = context::dep_server_token(&name);
                s.token_sealed = Some(rebind(seal, &what, legacy::DEP_SERVER_TOKEN, &bound, v)?);
            }
            t.insert(name.as_str(), encode(&s).as_slice())
                .map_err(backend)?;
        }
    }
    Ok(())
}
