//! `mailstore`: an embeddable mailbox store.
//!
//! A mail server embeds `mailstore` the way it would embed SQLite or LMDB. Each **mailbox database** is an
//! independent [`Engine`]: its own directory, its own write-ahead log in numbered generations, its own
//! checkpoint and writer thread, recovered from its own log after a crash.
//!
//! ```no_run
//! use mailstore::kv::{KvEngine, KvOp};
//! use mailstore::{Engine, Options};
//!
//! # fn main() -> mailstore::Result<()> {
//! let db: KvEngine = Engine::mount("/var/lib/mail/db1", Options::default())?;
//! let committed = db.commit(KvOp::Put { key: b"greeting".to_vec(), value: b"hello".to_vec() })?;
//! // Durable (it survives power loss in the default `Durability::Full`) and applied.
//! let value = db.read(|kv, txn| kv.get(txn, b"greeting"))?;
//! assert_eq!(value.as_deref(), Some(&b"hello"[..]));
//! println!("committed at LSN {}", committed.lsn);
//! db.dismount()?;
//! # Ok(()) }
//! ```
//!
//! See `ARCHITECTURE.md` for the file formats, the commit and recovery protocols, and the invariants.

#![warn(missing_docs)]
#![cfg(unix)]

pub mod backup;
pub(crate) mod codec;
pub mod engine;
mod error;
mod fault;
mod fsutil;
#[cfg(feature = "internals")]
mod fuzzing;
pub mod kv;
pub(crate) mod log;
pub mod model;
pub mod replication;
pub mod store;
mod time;
mod types;

/// Internals for the crate's own tests, fuzz targets, benches and examples: the log's byte format, generation
/// file naming and scanning, the operation codec, the checkpoint, the names of a database's files, and the fuzz
/// entry points.
///
/// **Not a stable API.** It exists only with the `internals` feature, which the crate's own test targets
/// enable (through a dev-dependency of the crate on itself) and `fuzz/` enables; nothing here is covered by
/// semantic versioning, and a program embedding `mailstore` should not enable the feature.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    /// The operation codec (bincode 2, bounded decoding): how operations and shipping messages become bytes.
    pub mod codec {
        pub use crate::codec::{decode, decode_record, encode, encode_record};
    }

    /// The write-ahead log: the byte layout of generation headers and record frames, and generation files.
    pub mod log {
        pub use crate::log::format::GenerationHeader;
        pub use crate::log::format::{FRAME_HEADER_LEN, HEADER_LEN, RecordSeal};
        pub use crate::log::generation::Scan;
        pub use crate::log::generation::{file_name, parse_file_name, scan};
        pub use crate::log::{MAX_RECORD_LEN, RecordRef};
    }

    /// A database directory's files, and its checkpoint.
    pub mod engine {
        pub use crate::engine::checkpoint::{CHECKPOINT_FILE, Checkpoint};
        pub use crate::engine::state::STATE_DIR;
        /// The structural verifier of LMDB data files (reads with `pread`, never maps).
        pub mod lmdb_file {
            pub use crate::engine::lmdb_file::{Header, Problem, Verified, entry_ranges, read_header, verify};
        }
        pub use crate::engine::table::{CHECKSUM_LEN, display_key, seal, set_verification};
        pub use crate::fsutil::lock::LOCK_FILE;

        /// Directory of the log generations inside a database directory.
        pub const LOGS_DIR: &str = crate::engine::LOGS_DIR;
        /// Directory of the generations that only hold attachments (message bodies) any more.
        pub const SEGMENTS_DIR: &str = crate::engine::SEGMENTS_DIR;
    }

    /// Entry points of the fuzz targets in `fuzz/`: each takes arbitrary bytes and must never panic.
    pub mod fuzzing {
        pub use crate::fuzzing::{
            checkpoint_decoder, chunk_inspection, fixed_header, header_decoder, record_decoder, recovery,
            shipping_message,
        };
    }
}

/// The bytes of a message in an operation (`model::MailOp::Append::raw` and the others that store one): cheap to
/// clone, so one message delivered to many mailboxes is held once. Every constructor takes `impl Into<Bytes>`
/// (a `Vec<u8>` converts without a copy).
pub use bytes::Bytes;
pub use engine::{
    ApplyContext, ApplyError, Attachments, Committed, Durability, Engine, EngineStats, EngineStatus, LogPin, LogPolicy,
    LogPosition, LogRetention, OnSyncTimeout, Options, RecoveryMode, RecoveryReport, StateMachine, SyncPolicy,
};
pub use error::{BackupError, CodecError, Error, Result, StoreError};
/// The LMDB binding the state store is built on, re-exported as part of the API: a [`StateMachine`] opens its
/// tables with heed's `DatabaseOpener` and applies operations in heed's `RwTxn`, and readers take a [`RoTxn`].
/// Use this re-export rather than a `heed` dependency of your own, so the versions always match. A change of
/// heed's major version is a breaking change of `mailstore`.
pub use heed;
/// A read transaction over a database's state store (heed's, re-exported): what [`Engine::read`] hands its
/// closure and what every reader of a state machine takes, e.g. `MailStore::items_by_uid`. It is a consistent
/// snapshot: commits that complete while it is open are not seen by it.
pub use heed::RoTxn;
pub use model::search;
pub use store::{CloseError, Store};
pub use time::Timestamp;
pub use types::{Guid, Lsn};

/// The README's examples, compiled and run by `cargo test` so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
