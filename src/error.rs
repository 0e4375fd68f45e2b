//! The errors of the crate, in layers under one umbrella [`Error`].
//!
//! Each layer raises its own typed error, and each converts (`From`) into one variant of [`Error`], the type every
//! public function returns:
//!
//! - **engine and storage** (the log, the state store, mounting): the variants of [`Error`] itself, such as
//!   [`Error::Poisoned`] ("dismount and mount again"), [`Error::Corrupted`] (names the damaged file and offset),
//!   [`Error::AlreadyMounted`] (another engine holds the directory); [`Error::is_damage`] groups the damage ones.
//!   Encoding failures are a [`CodecError`] in [`Error::Codec`].
//! - **state machines** reject operations with their own type ([`StateMachine::Rejection`]): the mailbox model's
//!   [`MailError`] arrives as [`Error::Mail`], the key-value machine's [`KvError`] as [`Error::Kv`].
//! - **the store** (databases by name): [`StoreError`] in [`Error::Store`].
//! - **replication** (log shipping, passive copies, activation): [`ReplicationError`] in [`Error::Replication`].
//!
//! Match the layer, then the precise variant: `Err(Error::Mail(MailError::NoSuchFolder { .. }))`. The layer
//! variants display their inner error unchanged. Nothing a caller could act on is folded into a generic variant.
//!
//! [`StateMachine::Rejection`]: crate::StateMachine::Rejection
//! [`MailError`]: crate::model::MailError
//! [`KvError`]: crate::kv::KvError
//! [`ReplicationError`]: crate::replication::ReplicationError

use std::io;
use std::path::{Path, PathBuf};

use crate::kv::KvError;
use crate::model::MailError;
use crate::replication::ReplicationError;
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

    /// An entry of the state store fails its checksum (`data.mdb` is damaged): the value read would have been
    /// wrong, so none is returned. Every table's values carry a checksum over the table, the key and the value
    /// (ARCHITECTURE.md, "Verified state"); `mailstore check` lists every damaged entry.
    #[error("{}: entry {key} of table {table} fails its checksum (the state store is damaged)", database.display())]
    Damaged {
        /// The database directory (whose `state/data.mdb` holds the entry).
        database: PathBuf,
        /// The table (LMDB database name, such as `mail.items` or `engine.meta`).
        table: String,
        /// The entry's key as stored: printable ASCII as it is, anything else in hex (`0x...`).
        key: String,
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

    /// The database was written in a format this release does not read (an older or newer release made it): it
    /// is refused before anything is read from it. Nothing was changed.
    #[error(
        "{} holds a database in {what} format version {found}; this release reads version {supported} only \
         (open it with the release that wrote it)",
        path.display()
    )]
    UnsupportedFormat {
        /// The database directory.
        path: PathBuf,
        /// Whose format: `engine`, or the state machine's name.
        what: String,
        /// The version the database was written in.
        found: u32,
        /// The version this release reads.
        supported: u32,
    },

    /// The directory holds a restore that did not finish (its `RESTORING` marker is there: a crash or a failure
    /// ended [`crate::backup::restore`] before it was done), so it is refused by mount, checkpoint rebuild and
    /// state repair: it may hold any prefix of the restored files. Restore into it again; that starts over.
    #[error("{}: a restore into this directory did not finish; restore again", path.display())]
    RestoreUnfinished {
        /// The database directory.
        path: PathBuf,
    },

    /// An earlier write or fsync failed; the engine refuses all work from then on, because retrying an fsync
    /// after a failure can silently lose data. Dismount and mount again: recovery replays the log.
    #[error("engine poisoned by an earlier failure ({reason}); dismount and mount the database again to recover")]
    Poisoned {
        /// The failure that poisoned the engine.
        reason: String,
    },

    /// A passive copy's own log write or sync failed; it stopped copying and replaying for good (a failed fsync
    /// is never retried). Closing the copy and opening it again judges its log from disk and goes on.
    #[error(
        "the passive copy stopped after its own log write or sync failed ({reason}); close the copy and open it again"
    )]
    CopyPoisoned {
        /// The failure that stopped the copy.
        reason: String,
    },

    /// The engine was dismounted (or is dismounting) and takes no more work.
    #[error("the database is dismounted")]
    Dismounted,

    /// A caller-supplied value is out of range or malformed (engine or copy options, a log position). Refused mail
    /// input is a [`MailError`], a refused database name a [`StoreError::InvalidName`].
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

    /// Encoding or decoding a value failed.
    #[error("codec error: {0}")]
    Codec(#[from] CodecError),

    /// The mailbox model refused an operation or a lookup failed (see [`MailError`]); nothing was changed.
    #[error(transparent)]
    Mail(#[from] MailError),

    /// The key-value state machine refused an operation (see [`KvError`]); nothing was changed.
    #[error(transparent)]
    Kv(#[from] KvError),

    /// A database of a [`Store`](crate::Store) is missing, exists already or is in use (see [`StoreError`]).
    #[error(transparent)]
    Store(#[from] StoreError),

    /// Log shipping, a passive copy or an activation failed (see [`ReplicationError`]).
    #[error(transparent)]
    Replication(#[from] ReplicationError),

    /// A backup target (an S3 bucket, a target that cannot be used) failed or refused (see [`BackupError`]).
    #[error(transparent)]
    Backup(#[from] BackupError),
}

/// What failed at a backup target (`crate::backup`): the object store, its lock, or the target's name.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// A request to the object store failed (after its retries).
    #[error(
        "{target}: {operation} failed: {reason}; check the endpoint, the bucket, the credentials (the AWS_* \
         variables or S3Config) and the network, then retry"
    )]
    ObjectStore {
        /// The target (`s3://bucket/prefix`).
        target: String,
        /// What was being done, with the object's key.
        operation: String,
        /// The store's error.
        reason: String,
    },
    /// The catalogue names an object the store does not hold.
    #[error(
        "{target}: the catalogue lists {object}, which the store does not hold: this backup is damaged; restore from another backup set"
    )]
    MissingObject {
        /// The target.
        target: String,
        /// The object's key.
        object: String,
    },
    /// Another backup holds the target's lock object.
    #[error(
        "another backup into {target} holds its lock ({holder}); retry when it is done, or delete {lock} if that \
         backup was killed"
    )]
    Locked {
        /// The target.
        target: String,
        /// The lock object's key.
        lock: String,
        /// What the lock says of its holder.
        holder: String,
    },
    /// An `s3://` target was given to a build without the `s3` feature.
    #[error("{target} is an S3 target, but this build of mailstore has no S3 support: build it with the `s3` feature")]
    NoS3Support {
        /// The target as given.
        target: String,
    },
    /// The target cannot be used as given.
    #[error("{target} is not a usable backup target: {reason}")]
    BadTarget {
        /// The target as given.
        target: String,
        /// Why, and what to give instead.
        reason: String,
    },
    /// An S3 target was used from inside an async runtime, where its private runtime cannot block.
    #[error(
        "{target}: backup and restore are blocking calls; call them from a blocking thread (for example \
         tokio::task::spawn_blocking), not from inside an async runtime"
    )]
    InsideRuntime {
        /// The target.
        target: String,
    },
}

/// What failed when encoding or decoding a value (operations, log records, stored state records).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A value cannot be encoded.
    #[error("encode: {reason}")]
    Encode {
        /// What the encoder said.
        reason: String,
    },
    /// The bytes do not decode as a value of the expected type.
    #[error("decode: {reason}")]
    Decode {
        /// What the decoder said.
        reason: String,
    },
    /// The bytes hold one value and more bytes after it (a record's payload is exactly one operation).
    #[error("decode: {count} trailing bytes after the value")]
    TrailingBytes {
        /// The bytes left over.
        count: usize,
    },
    /// The log record at `lsn` does not decode as an operation of the state machine.
    #[error("record at LSN {lsn} does not decode: {source}")]
    Record {
        /// The record's LSN.
        lsn: Lsn,
        /// Why it does not decode.
        source: Box<CodecError>,
    },
    /// A stored record breaks the rules of its layout (damage in the state store).
    #[error("{record}: {rule}")]
    Malformed {
        /// The kind of record (`"listing record"`, `"address index entry"`).
        record: &'static str,
        /// The rule it breaks.
        rule: String,
    },
}

/// Why a [`Store`](crate::Store) refused an operation on one of its databases.
///
/// A layer of its own (not variants of [`Error`]): its objects are databases *by name*, which neither the engine
/// (one directory) nor the mailbox model knows, and a caller that hosts several databases matches on them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No database of that name exists in the store.
    #[error("database {name:?} does not exist (create it with Store::create_database)")]
    NoSuchDatabase {
        /// The name asked for.
        name: String,
    },
    /// The store could not mount the database (at [`Store::open`](crate::Store::open) or a later mount); it stays
    /// dismounted until [`Store::mount_database`](crate::Store::mount_database) succeeds.
    #[error("database {name:?} failed to mount: {reason} (repair it, then mount it with Store::mount_database)")]
    MountFailed {
        /// The database.
        name: String,
        /// Why.
        reason: String,
    },
    /// The database exists but is not mounted.
    #[error("database {name:?} is not mounted (mount it with Store::mount_database)")]
    NotMounted {
        /// The name asked for.
        name: String,
    },
    /// A database of that name exists already.
    #[error("database {name:?} already exists")]
    DatabaseExists {
        /// The name asked for.
        name: String,
    },
    /// The database is still used by other handles, so it cannot be dismounted; it stays mounted.
    #[error("database {name:?} is still used by {handles} other handle(s); drop them and dismount again")]
    InUse {
        /// The database.
        name: String,
        /// Handles alive besides the store's own.
        handles: usize,
    },
    /// The database is mounted, so it cannot be deleted.
    #[error("database {name:?} is mounted; dismount it first")]
    Mounted {
        /// The database.
        name: String,
    },
    /// The name cannot name a database (it becomes a directory name and may not leave the store's root).
    #[error("database name {name:?} {rule}")]
    InvalidName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        rule: String,
    },
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
                | Error::Damaged { .. }
                | Error::TornTail { .. }
                | Error::MissingGeneration { .. }
                | Error::BrokenChain { .. }
                | Error::ForeignDatabase { .. }
                | Error::StateAheadOfLog { .. }
        )
    }
}

impl Error {
    /// Names the database directory `dir` in an [`Error::Damaged`] that does not name one yet: the tables that
    /// find the damage do not know their directory, the engine's boundaries (reads, applies, offline tools) do.
    pub(crate) fn in_database(self, dir: &Path) -> Self {
        match self {
            Error::Damaged { database, table, key } if database.as_os_str().is_empty() => {
                Error::Damaged { database: dir.to_path_buf(), table, key }
            }
            e => e,
        }
    }
}

impl From<heed::Error> for Error {
    fn from(e: heed::Error) -> Self {
        match e {
            heed::Error::Decoding(boxed) => match boxed.downcast::<crate::engine::table::Damage>() {
                Ok(damage) => Error::Damaged {
                    database: PathBuf::new(),
                    table: damage.table,
                    key: crate::engine::table::display_key(&damage.key),
                },
                // A crate error a state machine carried through heed's error type (`ApplyError::Storage`).
                Err(other) => match other.downcast::<Error>() {
                    Ok(inner) if matches!(*inner, Error::Damaged { .. }) => *inner,
                    Ok(inner) => Error::State(heed::Error::Decoding(inner)),
                    Err(other) => Error::State(heed::Error::Decoding(other)),
                },
            },
            e => Error::State(e),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::{MountDial, Refusal};

    #[test]
    fn layers_convert_and_display_their_own_message() {
        let refusal = MailError::NoSuchMailbox { mailbox: Guid([7; 16]) };
        let shown = refusal.to_string();
        let e = Error::from(refusal);
        assert!(matches!(e, Error::Mail(MailError::NoSuchMailbox { .. })));
        assert_eq!(e.to_string(), shown);
        let e = Error::from(StoreError::InUse { name: "db1".into(), handles: 2 });
        assert!(e.to_string().contains("still used by 2 other handle(s)"), "{e}");
        let e = Error::from(CodecError::TrailingBytes { count: 3 });
        assert_eq!(e.to_string(), "codec error: decode: 3 trailing bytes after the value");
        assert!(!e.is_damage());
    }

    #[test]
    fn shipping_failures_are_told_from_the_copys_own() {
        let shipping = [
            ReplicationError::Transport { reason: "connect: refused".into() },
            ReplicationError::Offline,
            ReplicationError::Refused { reason: "no snapshot".into() },
            ReplicationError::Protocol { reason: "not a shipping server".into() },
            ReplicationError::Authentication { reason: "wrong key".into() },
            ReplicationError::ForeignSource { expected: Guid([1; 16]), found: Guid([2; 16]) },
        ];
        assert!(shipping.iter().all(ReplicationError::is_shipping));
        let own = [
            ReplicationError::ChunkRejected { reason: "checksum".into() },
            ReplicationError::CopyFailed { reason: "reseed".into() },
            ReplicationError::LogTruncated { generation: 1, oldest: 5 },
            ReplicationError::ActivationRefused { missing: 7, allowed: 6, dial: MountDial::GoodAvailability },
            ReplicationError::StateInUse,
            ReplicationError::ThreadPanicked { thread: "prefetch" },
        ];
        assert!(!own.iter().any(ReplicationError::is_shipping));
    }

    #[test]
    fn typed_refusals_cross_the_wire() {
        for e in [
            Error::from(ReplicationError::LogTruncated { generation: 1, oldest: 5 }),
            Error::from(ReplicationError::ForeignSource { expected: Guid([1; 16]), found: Guid([2; 16]) }),
            Error::Fenced { epoch: 3, current: 2 },
        ] {
            let back = Refusal::from_error(&e).into_error();
            assert_eq!(std::mem::discriminant(&back), std::mem::discriminant(&e));
            assert_eq!(back.to_string(), e.to_string());
        }
        let other = Refusal::Other("offset 9 is outside generation 1".into()).into_error();
        assert!(matches!(other, Error::Replication(ReplicationError::Refused { .. })));
    }
}
