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

pub mod codec;
pub mod engine;
mod error;
mod fault;
mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod kv;
pub mod log;
pub mod model;
pub mod replication;
pub mod store;
mod types;

pub use engine::{
    ApplyContext, ApplyError, Committed, Durability, Engine, EngineStats, EngineStatus, LogPin, LogPolicy, LogPosition,
    LogRetention, OnSyncTimeout, Options, RecoveryMode, RecoveryReport, StateMachine, SyncPolicy,
};
pub use error::{CodecError, Error, Result, StoreError};
pub use store::Store;
pub use types::{Guid, Lsn};
