//! The redb backend: one file, ACID, crash-safe; group commit for throughput.
//!
//! Reads run inline on the caller's thread in their own MVCC snapshot. Writes are closures sent
//! to a single writer thread that runs as many as are waiting in one transaction and commits
//! them together (group commit), so one fsync covers a whole burst of check-ins. Each write
//! closure is atomic on its own: if one fails, the batch is aborted and re-run without it.

mod bootstrap;
mod challenges;
mod dep;
mod device_info;
mod devices;
mod enrollments;
mod error;
mod events;
mod identity;
mod migrate;
mod plugins;
mod profiles;
mod push;
mod queue;
mod scep_transactions;
mod sealed;
mod secrets;
mod tables;
mod teams;
mod webhooks;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};

use ::redb::{Database, Durability, ReadTransaction, ReadableDatabase, WriteTransaction};
use tokio::sync::oneshot;

use self::error::{InFile, WriterGone, backend};
pub use self::migrate::SCHEMA_VERSION;
use self::migrate::migrate;
use self::writer::{AnyBox, Job, Shared, WriteOp, run_writer};
use super::{StoreError, StoreResult};
use crate::seal::SealKey;

/// A Pomona store in a redb database.
///
/// Command payloads (`command_raw`), command results (`results`) and library profile bytes
/// (`profile_bytes`) are sealed with the store's [`SealKey`], bound to their table and key; the
/// traits see plaintext.
#[derive(Clone)]
pub struct RedbStore {
    shared: Arc<Shared>,
    writer: mpsc::Sender<Job>,
    seal: SealKey,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Open (or create) the database file at `path`, migrating it to [`SCHEMA_VERSION`]. `seal`
    /// seals secrets at rest: use the engine's seal key, the same on every open.
    ///
    /// A new file is created readable and writable by its owner only (0600 on Unix).
    pub fn open(path: impl AsRef<Path>, seal: &SealKey) -> StoreResult<Self> {
        let in_file = |source| InFile {
            path: path.as_ref().to_owned(),
            source,
        };
        create_private(path.as_ref())
            .map_err(|e| StoreError::backend("create database", in_file(e.into())))?;
        let db = Database::create(path.as_ref())
            .map_err(|e| StoreError::backend("open database", in_file(e.into())))?;
        Self::start(
            db,
            Some(path.as_ref().to_owned()),
            Durability::Immediate,
            seal.clone(),
        )
    }

    /// A fresh database held in memory (for tests and ephemeral embedders), sealed with a
    /// random key that lives as long as the store.
    pub fn in_memory() -> StoreResult<Self> {
        let db = Database::builder()
            .create_with_backend(::redb::backends::InMemoryBackend::new())
            .map_err(backend)?;
        Self::start(db, None, Durability::Immediate, SealKey::generate())
    }

    fn start(
        mut db: Database,
        path: Option<PathBuf>,
        durability: Durability,
        seal: SealKey,
    ) -> StoreResult<Self> {
        if migrate(&db, &seal)? {
            // Drop the pages that held the values in the clear, where redb can.
            db.compact().map_err(backend)?;
        }
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(Arc::new(db))),
            path,
            broken: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel::<Job>();
        let writer_shared = shared.clone();
        std::thread::Builder::new()
            .name("pomona-redb-writer".into())
            .spawn(move || run_writer(&writer_shared, &rx, durability))
            .map_err(|e| StoreError::backend("start writer thread", e))?;
        Ok(Self {
            shared,
            writer: tx,
            seal,
        })
    }

    /// Run `f` in a read snapshot on the calling thread.
    fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> StoreResult<T>) -> StoreResult<T> {
        let result = {
            let db = self.shared.current()?;
            let txn = db.begin_read().map_err(backend)?;
            f(&txn)
        };
        if matches!(result, Err(StoreError::Unavailable { .. }))
            && !self.shared.broken.swap(true, Ordering::AcqRel)
        {
            // The database failed under a read: wake the writer so it reopens it.
            let (reply, _) = oneshot::channel();
            let _ = self.writer.send(Job {
                op: Box::new(|_| Ok(Box::new(()) as AnyBox)),
                reply,
            });
        }
        result
    }

    /// Run `f` in the writer's next batch; resolves after the batch is durably committed.
    ///
    /// `f` may run more than once (if another closure in its batch fails), so it must only
    /// depend on its captures and the transaction.
    async fn write<T: Send + 'static>(
        &self,
        f: impl Fn(&WriteTransaction) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, rx) = oneshot::channel();
        let op: WriteOp = Box::new(move |txn| f(txn).map(|v| Box::new(v) as AnyBox));
        self.writer
            .send(Job { op, reply })
            .map_err(|_| StoreError::backend("write", WriterGone::Stopped))?;
        let value = rx
            .await
            .map_err(|_| StoreError::backend("write", WriterGone::DroppedRequest))??;
        Ok(*value
            .downcast::<T>()
            .expect("writer returns the closure's own type"))
    }
}

impl RedbStore {
    /// [`RedbStore::write`], then append `emit`'s events for the outcome in the same transaction.
    async fn write_emitting<T: Send + 'static>(
        &self,
        emit: super::Emit<T>,
        now: super::Timestamp,
        f: impl Fn(&WriteTransaction) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<(T, Vec<super::Event>)> {
        self.write(move |txn| {
            let value = f(txn)?;
            let events = events::append_in(txn, &emit.build(&value), now)?;
            Ok((value, events))
        })
        .await
    }
}

/// Create an empty file at `path` with mode 0600 if there is none (redb then initialises it), so
/// the database is never readable by others, not even briefly.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(crate::fsutil::FILE_MODE);
    }
    match options.open(path) {
        Ok(_) => crate::fsutil::sync_parent(path),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Decode a JSON record, naming it in the error.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what: what.to_owned(),
        detail: e.to_string(),
    })
}

/// Encode a JSON record.
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

#[cfg(test)]
mod sealing_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_error_keeps_the_redb_error_as_its_source() {
        let store = RedbStore::in_memory().unwrap();
        // The meta table holds `&str -> u64`: opening it as `u64 -> u64` is a redb error.
        let wrong = ::redb::TableDefinition::<u64, u64>::new("meta");
        let err = store
            .read(|txn| txn.open_table(wrong).map(drop).map_err(backend))
            .unwrap_err();
        let StoreError::Backend { operation, .. } = &err else {
            panic!("not a backend error: {err:?}");
        };
        assert_eq!(*operation, "open table");
        let source = std::error::Error::source(&err).expect("a backend error has a source");
        let redb_err = source
            .downcast_ref::<::redb::Error>()
            .expect("the source is the redb error itself");
        assert!(
            matches!(redb_err, ::redb::Error::TableTypeMismatch { .. }),
            "{redb_err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("storage backend error: open table: {redb_err}")
        );
    }

    #[test]
    fn a_file_that_cannot_be_created_is_named_and_keeps_the_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("p.redb");
        let err = RedbStore::open(&path, &SealKey::generate()).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Backend {
                    operation: "create database",
                    ..
                }
            ),
            "{err:?}"
        );
        let shown = err.to_string();
        assert!(shown.contains(path.to_str().unwrap()), "{shown}");
        let io = std::error::Error::source(&err)
            .and_then(std::error::Error::source)
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .expect("the I/O error is in the chain");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn challenges_are_pruned_through_the_expiry_index_in_bounded_batches() {
        use crate::store::{ChallengeStatus, ChallengeStore};
        let store = RedbStore::in_memory().unwrap();
        let now = time::OffsetDateTime::now_utc();
        let past = now - time::Duration::hours(1);
        for i in 0..2_500 {
            store
                .put_challenge(&format!("old-{i}"), past)
                .await
                .unwrap();
        }
        for i in 0..3 {
            let at = now + time::Duration::hours(1);
            store.put_challenge(&format!("new-{i}"), at).await.unwrap();
        }
        // One batch touches at most its limit.
        assert_eq!(
            store.prune_challenge_batch(now, 1_000).await.unwrap(),
            1_000
        );
        // The rest, in batches of challenges::PRUNE_BATCH.
        assert_eq!(store.prune_challenges(now).await.unwrap(), 1_500);
        assert_eq!(store.prune_challenges(now).await.unwrap(), 0);
        let left = store
            .read(|txn| {
                use ::redb::ReadableTableMetadata;
                let c = txn.open_table(tables::CHALLENGES).map_err(backend)?.len();
                let i = txn
                    .open_table(tables::CHALLENGE_EXPIRY)
                    .map_err(backend)?
                    .len();
                Ok((c.map_err(backend)?, i.map_err(backend)?))
            })
            .unwrap();
        assert_eq!(
            left,
            (3, 3),
            "only the unexpired challenges and their index remain"
        );
        assert_eq!(
            store.consume_challenge("new-1", now).await.unwrap(),
            ChallengeStatus::Accepted
        );
        assert_eq!(
            store.consume_challenge("old-7", now).await.unwrap(),
            ChallengeStatus::Unknown
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_schema_1_file_gets_its_challenges_indexed_and_pruned() {
        use crate::store::ChallengeStore;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.redb");
        let now = time::OffsetDateTime::now_utc();
        {
            // The layout of schema 1: challenges without the expiry index.
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(tables::META)
                .unwrap()
                .insert("schema_version", 1)
                .unwrap();
            let state = serde_json::json!({
                "expires_at": (now - time::Duration::minutes(5))
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap(),
                "used_at": null,
            });
            txn.open_table(tables::CHALLENGES)
                .unwrap()
                .insert(
                    openssl::sha::sha256(b"legacy").as_slice(),
                    serde_json::to_vec(&state).unwrap().as_slice(),
                )
                .unwrap();
            txn.commit().unwrap();
        }
        let store = RedbStore::open(&path, &SealKey::generate()).unwrap();
        assert_eq!(store.prune_challenges(now).await.unwrap(), 1);
        let version = store
            .read(|txn| {
                let meta = txn.open_table(tables::META).map_err(backend)?;
                Ok(meta
                    .get("schema_version")
                    .map_err(backend)?
                    .map(|v| v.value()))
            })
            .unwrap();
        assert_eq!(version, Some(SCHEMA_VERSION));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_survives_reopen_and_refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.redb");
        let key = SealKey::generate();
        {
            let store = RedbStore::open(&path, &key).unwrap();
            crate::store::SecretStore::put_secret(&store, "k", b"v".to_vec())
                .await
                .unwrap();
        }
        // The writer thread holds a clone of the database; give it a moment to exit.
        let store = loop {
            match RedbStore::open(&path, &key) {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        assert_eq!(
            crate::store::SecretStore::secret(&store, "k")
                .await
                .unwrap(),
            Some(b"v".to_vec())
        );
        drop(store);
        let db = loop {
            match Database::create(&path) {
                Ok(db) => break db,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        let txn = db.begin_write().unwrap();
        txn.open_table(tables::META)
            .unwrap()
            .insert("schema_version", SCHEMA_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
        drop(db);
        let err = loop {
            match RedbStore::open(&path, &key) {
                Err(StoreError::SchemaTooNew { found, .. }) => break found,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                Ok(_) => panic!("opened a database from the future"),
            }
        };
        assert_eq!(err, SCHEMA_VERSION + 1);
    }
}
