//! The single writer thread: group commit, and reopening the database after an I/O error.

use std::any::Any;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ::redb::{Database, Durability, WriteTransaction};
use tokio::sync::oneshot;

use super::error::{backend, unavailable};
use crate::store::{StoreError, StoreResult};

/// Most write closures committed in one transaction.
const MAX_BATCH: usize = 512;

/// How often the writer tries to reopen a database that failed with an I/O error (disk full).
const REOPEN_EVERY: Duration = Duration::from_secs(1);

pub(super) type AnyBox = Box<dyn Any + Send>;
pub(super) type WriteOp = Box<dyn Fn(&WriteTransaction) -> StoreResult<AnyBox> + Send>;

/// One write closure and where its outcome goes.
pub(super) struct Job {
    pub(super) op: WriteOp,
    pub(super) reply: oneshot::Sender<StoreResult<AnyBox>>,
}

/// The open database, shared by readers and the writer thread.
///
/// After an I/O error (a full disk, typically) redb refuses every later operation until the
/// database is closed and opened again. The writer thread then closes it (readers and writers get
/// [`StoreError::Unavailable`] meanwhile) and every [`REOPEN_EVERY`] tries to open the file again;
/// redb's repair on open finds the last committed transaction.
pub(super) struct Shared {
    pub(super) db: RwLock<Option<Arc<Database>>>,
    /// The file, for reopening (`None` for an in-memory database, which cannot be reopened).
    pub(super) path: Option<PathBuf>,
    /// The database failed with an I/O error and must be reopened before the next write.
    pub(super) broken: AtomicBool,
}

impl Shared {
    pub(super) fn current(&self) -> StoreResult<Arc<Database>> {
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

pub(super) fn run_writer(shared: &Shared, jobs: &mpsc::Receiver<Job>, durability: Durability) {
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
            .find(|(_, e)| matches!(e, StoreError::Unavailable { .. }))
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
    !matches!(e, StoreError::Unavailable { .. })
}
