//! The one error type of the crate.
//!
//! Every variant is distinct so that a caller can act on it: [`Error::Poisoned`] means "dismount and mount
//! again", [`Error::Corrupted`] names the damaged file and offset, [`Error::AlreadyMounted`] means another
//! engine holds the directory, and so on. Nothing that a caller could act on is folded into a generic variant.

use std::io;
use std::path::{Path, PathBuf};

use crate::types::{Guid, Lsn};

/// The result type of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `mailstore`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed on `path`.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },

    /// The state store (LMDB, through heed) returned an error.
    #[error("state store error: {0}")]
    State(#[source] heed::Error),

    /// A file holds bytes that fail their checksum, framing or format rules.
    #[error("{} is corrupted at offset {offset}: {reason}", file.display())]
    Corrupted {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the first damaged byte found.
        offset: u64,
        /// What rule the bytes broke.
        reason: String,
    },

    /// The last generation ends in a partial or damaged record (what a crash during an append leaves) and the
    /// recovery mode was [`RecoveryMode::AbsoluteConsistency`](crate::RecoveryMode::AbsoluteConsistency).
    #[error(
        "{} ends in a torn record at offset {offset} ({reason}); mount with RecoveryMode::TolerateTailCorruption \
         or run `mailstore recover` to truncate it",
        file.display()
    )]
    TornTail {
        /// The last generation.
        file: PathBuf,
        /// Offset of the first byte that is not part of a valid record.
        offset: u64,
        /// What was wrong with the bytes there.
        reason: String,
    },

    /// A generation the log needs is not on disk ("committed log files missing").
    #[error("log generation {generation} is missing: expected {}", file.display())]
    MissingGeneration {
        /// The missing generation number.
        generation: u64,
        /// The file name it would have.
        file: PathBuf,
    },

    /// A generation's header names a previous generation whose checksum differs from the one on disk.
    #[error(
        "log chain broken at {}: its header expects the previous generation to have checksum {expected:#010x}, \
         but it has {found:#010x}",
        file.display()
    )]
    BrokenChain {
        /// The generation whose header does not match its predecessor.
        file: PathBuf,
        /// Checksum recorded in `file`'s header.
        expected: u32,
        /// Checksum of the predecessor as found on disk.
        found: u32,
    },

    /// A file belongs to a different database (its GUID differs).
    #[error("{} belongs to database {found}, not to this database {expected}", file.display())]
    ForeignDatabase {
        /// The foreign file.
        file: PathBuf,
        /// This database's GUID.
        expected: Guid,
        /// The GUID found in the file.
        found: Guid,
    },

    /// The state store has applied records that the log no longer holds (the log lost its tail after the
    /// state store persisted it; only possible after a power loss in `Relaxed` durability, or if the log was
    /// tampered with).
    #[error(
        "the state store has applied the log up to LSN {applied}, but the log ends at LSN {log_end}: the log lost \
         records the state depends on; restore or reseed this database"
    )]
    StateAheadOfLog {
        /// Last LSN the state store reflects.
        applied: Lsn,
        /// Last LSN found in the log.
        log_end: Lsn,
    },

    /// Another engine (in this or another process) has this database directory mounted.
    #[error("{} is already mounted by another engine (in this or another process); dismount it first", path.display())]
    AlreadyMounted {
        /// The database directory.
        path: PathBuf,
    },

    /// The directory is not a `mailstore` database, or not one this version can open.
    #[error("{} is not a usable mailstore database: {reason}", path.display())]
    NotADatabase {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// An earlier write or fsync failed; the engine refuses all work from then on, because retrying an fsync
    /// after a failure can silently lose data. Dismount and mount again: recovery replays the log.
    #[error("engine poisoned by an earlier failure ({reason}); dismount and mount the database again to recover")]
    Poisoned {
        /// The failure that poisoned the engine.
        reason: String,
    },

    /// The engine was dismounted (or is dismounting) and takes no more work.
    #[error("the database is dismounted")]
    Dismounted,

    /// A caller-supplied value is out of range or malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// An operation encodes to more bytes than one log record may hold.
    #[error("operation encodes to {len} bytes, more than the maximum record size of {max} bytes")]
    RecordTooLarge {
        /// Encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A conditional operation found the state different from what it expected (nothing was changed).
    #[error("conflict: {0}")]
    Conflict(String),

    /// A named object does not exist.
    #[error("not found: {0}")]
    NotFound(String),

    /// The operation would take a mailbox over one of its quotas; nothing was changed.
    #[error("quota exceeded: {what}: {size} bytes would exceed the limit of {limit} bytes")]
    QuotaExceeded {
        /// Which quota (and mailbox).
        what: String,
        /// The size the operation would reach.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// A message is larger than the mailbox accepts; nothing was changed.
    #[error("message of {size} bytes exceeds the maximum message size of {limit} bytes")]
    MessageTooLarge {
        /// The message's size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// A named object exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),

    /// The object is in use and the operation needs it idle (a database still referenced by other handles).
    #[error("busy: {0}")]
    Busy(String),

    /// A newer epoch of this database exists elsewhere (a passive copy was activated): this copy may no longer
    /// write. Bring it back as a passive copy (resynchronize) instead.
    #[error(
        "fenced: epoch {epoch} of this database exists elsewhere; this copy is at epoch {current} and may not write"
    )]
    Fenced {
        /// The newer epoch.
        epoch: u64,
        /// This copy's epoch.
        current: u64,
    },

    /// Synchronous mode: the commit at `lsn` is durable and applied **locally**, but fewer than `required`
    /// passive copies confirmed holding it within the timeout, so a failover may lose it.
    #[error("commit at LSN {lsn} is durable locally but only {copies} of the {required} required copies hold it")]
    NotReplicated {
        /// The commit's LSN.
        lsn: Lsn,
        /// Copies that hold it.
        copies: usize,
        /// Copies the policy requires.
        required: usize,
    },

    /// A chunk of shipped log failed inspection; nothing of it was written or replayed.
    #[error("shipped log rejected: {reason}")]
    ChunkRejected {
        /// What was wrong with it.
        reason: String,
    },

    /// Log shipping failed: the source refused a request, the transport broke, or the peer misbehaved.
    #[error("log shipping: {0}")]
    Shipping(String),

    /// The source no longer has the generation a copy asked for (it was truncated): reseed the copy.
    #[error("generation {generation} is no longer on the source (its oldest is {oldest}): reseed the copy")]
    LogTruncated {
        /// The generation asked for.
        generation: u64,
        /// The oldest generation the source still has.
        oldest: u64,
    },

    /// Activation was refused by the mount dial: too much of the log is missing on this copy.
    #[error("activation refused: {missing} generations missing, the mount dial {dial} allows {allowed}")]
    ActivationRefused {
        /// Generations the copy lacks.
        missing: u64,
        /// Generations the dial allows.
        allowed: u64,
        /// The dial.
        dial: String,
    },

    /// A passive copy cannot continue from its source: its log diverged beyond repair, or its state needs a
    /// reseed. The copy is Failed (or FailedAndSuspended); nothing was merged.
    #[error("copy failed: {reason}")]
    CopyFailed {
        /// Why.
        reason: String,
    },

    /// Encoding or decoding an operation failed.
    #[error("codec error: {0}")]
    Codec(String),
}

impl Error {
    /// An [`Error::Io`] about `path`.
    pub(crate) fn io(path: impl AsRef<Path>, source: io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }

    /// An [`Error::Corrupted`] about `file` at `offset`.
    pub(crate) fn corrupted(file: impl AsRef<Path>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corrupted { file: file.as_ref().to_path_buf(), offset, reason: reason.into() }
    }

    /// True when the error says on-disk data is damaged or inconsistent (as opposed to an environmental
    /// failure or a refused request).
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::Corrupted { .. }
                | Error::TornTail { .. }
                | Error::MissingGeneration { .. }
                | Error::BrokenChain { .. }
                | Error::ForeignDatabase { .. }
                | Error::StateAheadOfLog { .. }
        )
    }
}

impl From<heed::Error> for Error {
    fn from(e: heed::Error) -> Self {
        Error::State(e)
    }
}

/// Extension to attach a path to `io::Result`s.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
