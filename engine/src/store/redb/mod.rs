//! The redb backend: one file, ACID, crash-safe; group commit for throughput.
//!
//! Reads run inline on the caller's thread in their own MVCC snapshot. Writes are closures sent
//! to a single writer thread that runs as many as are waiting in one transaction and commits
//! them together (group commit), so one fsync covers a whole burst of check-ins. Each write
//! closure is atomic on its own: if one fails, the batch is aborted and re-run without it.

mod dep;
mod devices;
mod enrollments;
mod identity;
mod misc;
mod plugins;
mod profiles;
mod queue;
mod scep;
mod sealed;
mod tables;
mod webhooks;

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ::redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction,
};
use tokio::sync::oneshot;

use super::{StoreError, StoreResult};
use crate::seal::SealKey;

/// The schema version this build writes. Bump it with a migration in `migrate`.
///
/// Version 2 seals command payloads, command results and library profile bytes, binds sealed
/// tokens and DEP keys to their record ([`crate::seal::context`]), and indexes SCEP challenges
/// by expiry (`scep_challenge_expiry`).
pub const SCHEMA_VERSION: u64 = 2;

/// Most write closures committed in one transaction.
const MAX_BATCH: usize = 512;

/// How often the writer tries to reopen a database that failed with an I/O error (disk full).
const REOPEN_EVERY: Duration = Duration::from_secs(1);

type AnyBox = Box<dyn Any + Send>;
type WriteOp = Box<dyn Fn(&WriteTransaction) -> StoreResult<AnyBox> + Send>;

struct Job {
    op: WriteOp,
    reply: oneshot::Sender<StoreResult<AnyBox>>,
}

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

/// The open database, shared by readers and the writer thread.
///
/// After an I/O error (a full disk, typically) redb refuses every later operation until the
/// database is closed and opened again. The writer thread then closes it (readers and writers get
/// [`StoreError::Unavailable`] meanwhile) and every [`REOPEN_EVERY`] tries to open the file again;
/// redb's repair on open finds the last committed transaction.
struct Shared {
    db: RwLock<Option<Arc<Database>>>,
    /// The file, for reopening (`None` for an in-memory database, which cannot be reopened).
    path: Option<PathBuf>,
    /// The database failed with an I/O error and must be reopened before the next write.
    broken: AtomicBool,
}

impl Shared {
    fn current(&self) -> StoreResult<Arc<Database>> {
        self.db
            .read()
            .expect("database lock")
            .clone()
            .ok_or_else(|| unavailable("the database is being reopened after an I/O error"))
    }

    /// Close the failed database and open the file again. False if that is not possible yet.
    fn reopen(&self) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let taken = self.db.write().expect("database lock").take();
        if let Some(old) = taken {
            match Arc::try_unwrap(old) {
                // Dropping it releases the file; its unclean state is repaired on open.
                Ok(db) => drop(db),
                Err(still_read) => {
                    // A reader still holds it: try again later.
                    *self.db.write().expect("database lock") = Some(still_read);
                    return false;
                }
            }
        }
        match Database::create(path) {
            Ok(db) => {
                *self.db.write().expect("database lock") = Some(Arc::new(db));
                self.broken.store(false, Ordering::Release);
                tracing::warn!(path = %path.display(), "database reopened after an I/O error");
                true
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "database still unavailable");
                false
            }
        }
    }
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
        create_private(path.as_ref()).map_err(|e| {
            StoreError::Backend(format!(
                "cannot create database {}: {e}",
                path.as_ref().display()
            ))
        })?;
        let db = Database::create(path.as_ref()).map_err(|e| {
            StoreError::Backend(format!(
                "cannot open database {}: {e}",
                path.as_ref().display()
            ))
        })?;
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
            .map_err(|e| StoreError::Backend(format!("cannot start writer thread: {e}")))?;
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
        if matches!(result, Err(StoreError::Unavailable(_)))
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
            .map_err(|_| StoreError::Backend("database writer has stopped".into()))?;
        let value = rx
            .await
            .map_err(|_| StoreError::Backend("database writer dropped a request".into()))??;
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
            let events = misc::append_in(txn, &emit.build(&value), now)?;
            Ok((value, events))
        })
        .await
    }
}

fn run_writer(shared: &Shared, jobs: &mpsc::Receiver<Job>, durability: Durability) {
    let mut last_reopen: Option<Instant> = None;
    loop {
        let first = if shared.broken.load(Ordering::Acquire) {
            match jobs.recv_timeout(REOPEN_EVERY) {
                Ok(job) => Some(job),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match jobs.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            }
        };
        if shared.broken.load(Ordering::Acquire)
            && last_reopen.is_none_or(|t| t.elapsed() >= REOPEN_EVERY)
        {
            last_reopen = Some(Instant::now());
            shared.reopen();
        }
        let Some(first) = first else { continue };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let db = match shared.current() {
            Ok(db) if !shared.broken.load(Ordering::Acquire) => db,
            _ => {
                fail_all(
                    batch,
                    &unavailable("the database is unavailable after an I/O error"),
                );
                continue;
            }
        };
        if !commit_batch(&db, batch, durability) {
            // The first reopen waits a full interval: space rarely returns at once.
            last_reopen = Some(Instant::now());
            shared.broken.store(true, Ordering::Release);
        }
    }
}

fn unavailable(what: &str) -> StoreError {
    StoreError::Unavailable(format!("{what} (disk full?); retrying in the background"))
}

/// Commit a batch; false if the database failed with an I/O error and must be reopened (every
/// job of the batch then got [`StoreError::Unavailable`]).
fn commit_batch(db: &Database, mut batch: Vec<Job>, durability: Durability) -> bool {
    while !batch.is_empty() {
        let mut txn = match db.begin_write() {
            Ok(t) => t,
            Err(e) => return fail_all(batch, &backend(e)),
        };
        if let Err(e) = txn.set_durability(durability) {
            return fail_all(batch, &backend(e));
        }
        let mut values = Vec::with_capacity(batch.len());
        let mut failed = Vec::new();
        for (i, job) in batch.iter().enumerate() {
            match (job.op)(&txn) {
                Ok(v) => values.push(v),
                Err(e) => failed.push((i, e)),
            }
        }
        if let Some((_, e)) = failed
            .iter()
            .find(|(_, e)| matches!(e, StoreError::Unavailable(_)))
        {
            // The database itself failed: nobody in this batch can succeed.
            let e = e.clone();
            drop(txn);
            return fail_all(batch, &e);
        }
        if failed.is_empty() {
            return match txn.commit() {
                Ok(()) => {
                    for (job, v) in batch.into_iter().zip(values) {
                        let _ = job.reply.send(Ok(v));
                    }
                    true
                }
                Err(e) => fail_all(batch, &backend(e)),
            };
        }
        // Abort, answer the failed closures, and re-run the rest in a fresh transaction.
        drop(txn);
        for (i, e) in failed.into_iter().rev() {
            let job = batch.remove(i);
            let _ = job.reply.send(Err(e));
        }
    }
    true
}

/// Answer every job with `e`; false if `e` means the database must be reopened.
fn fail_all(batch: Vec<Job>, e: &StoreError) -> bool {
    for job in batch {
        let _ = job.reply.send(Err(e.clone()));
    }
    !matches!(e, StoreError::Unavailable(_))
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

/// Map a redb error to [`StoreError`]: I/O failures (a full disk) and the refusals that follow
/// them are [`StoreError::Unavailable`], anything else [`StoreError::Backend`].
pub(crate) fn backend(e: impl Into<::redb::Error>) -> StoreError {
    let e: ::redb::Error = e.into();
    match e {
        ::redb::Error::Io(_) | ::redb::Error::PreviousIo => unavailable(&e.to_string()),
        e => StoreError::Backend(e.to_string()),
    }
}

/// Create tables and bring the schema up to [`SCHEMA_VERSION`]. Returns whether rows were
/// rewritten.
fn migrate(db: &Database, seal: &SealKey) -> StoreResult<bool> {
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
                let n = misc::index_challenges(&txn)?;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_conformance_suite() {
        let store = RedbStore::in_memory().unwrap();
        crate::store::conformance::run_all(&store).await;
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
        // The rest, in batches of misc::PRUNE_BATCH.
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
