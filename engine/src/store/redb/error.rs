//! How redb's errors become [`StoreError`]s: the failed operation, and the redb error as source.

use std::path::PathBuf;

use crate::store::{BackendSource, StoreError};

/// An error about the database file, naming it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub(super) struct InFile {
    pub(super) path: PathBuf,
    #[source]
    pub(super) source: Box<dyn std::error::Error + Send + Sync>,
}

/// Why a write never reached the database: the writer thread is gone.
#[derive(Debug, thiserror::Error)]
pub(super) enum WriterGone {
    #[error("the database writer has stopped")]
    Stopped,
    #[error("the database writer dropped a request")]
    DroppedRequest,
}

/// A [`StoreError::Unavailable`] for `what`, which the writer thread is about to repair.
pub(super) fn unavailable(what: &str) -> StoreError {
    StoreError::unavailable(format!("{what} (disk full?); retrying in the background"))
}

/// Map a redb error to [`StoreError`]: I/O failures (a full disk) and the refusals that follow
/// them are [`StoreError::Unavailable`], anything else [`StoreError::Backend`] holding the
/// [`::redb::Error`] as its source and the operation its type stands for.
pub(crate) fn backend<E: RedbError>(e: E) -> StoreError {
    let e: ::redb::Error = e.into();
    match e {
        ::redb::Error::Io(_) | ::redb::Error::PreviousIo => StoreError::Unavailable {
            reason: format!("{e} (disk full?); retrying in the background"),
            source: Some(BackendSource::new(e)),
        },
        e => StoreError::backend(E::OPERATION, e),
    }
}

/// A redb error type and the operation that returns it (redb has one error type per operation).
pub(crate) trait RedbError: Into<::redb::Error> {
    /// The operation, for [`StoreError::Backend`].
    const OPERATION: &'static str;
}

macro_rules! redb_operations {
    ($($error:ident => $operation:literal,)*) => {
        $(impl RedbError for ::redb::$error {
            const OPERATION: &'static str = $operation;
        })*
    };
}

redb_operations! {
    DatabaseError => "open database",
    TransactionError => "begin transaction",
    SetDurabilityError => "set durability",
    TableError => "open table",
    StorageError => "read or write",
    CommitError => "commit",
    CompactionError => "compact",
    Error => "redb",
}
