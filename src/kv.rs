//! A small key-value state machine: the minimal operation set that exercises the engine.
//!
//! It is the reference implementation of [`StateMachine`]: operations carry everything they need, `apply` reads
//! only the transaction, and conditional operations are refused deterministically. The quickstart, the engine
//! tests and the benchmarks use it; the mailbox model plugs in the same way.

use heed::types::Bytes;
use heed::{CommitToken, Database, DatabaseOpener, OnCommit, RoTxn, RwTxn, WithoutTls};
use serde::{Deserialize, Serialize};

use crate::engine::table::Table;
use crate::engine::{ApplyContext, ApplyError, Attachments, Engine, StateMachine};
use crate::error::Result;

/// The longest key (LMDB's default key limit is 511 bytes).
pub const MAX_KEY_LEN: usize = 511;

/// An operation on the key-value state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    /// Sets `key` to `value`.
    Put {
        /// The key (1 ..= [`MAX_KEY_LEN`] bytes).
        key: Vec<u8>,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Removes `key` (a no-op when absent).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Sets `key` to `new` (or removes it when `None`) only if its current value is `expected` (`None`:
    /// absent); otherwise the operation is rejected with [`KvError::Conflict`] and changes nothing.
    CompareAndSwap {
        /// The key.
        key: Vec<u8>,
        /// The value it must have now.
        expected: Option<Vec<u8>>,
        /// The value it gets.
        new: Option<Vec<u8>>,
    },
    /// Several puts, atomically: all or none.
    PutMany(Vec<(Vec<u8>, Vec<u8>)>),
}

/// Why the key-value machine refuses an operation: its [`StateMachine::Rejection`], which reaches the committer as
/// [`Error::Kv`](crate::Error::Kv).
///
/// A type of its own rather than variants of the crate's `Error`: the reference machine shows how any machine
/// plugs in (a typed rejection plus one `From` into the umbrella error), and a conflict on a key means nothing
/// to the engine or to the mailbox model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// The key is empty or longer than [`MAX_KEY_LEN`]; refused before the operation is logged.
    #[error("key length {len} is outside 1 ..= {MAX_KEY_LEN}")]
    InvalidKey {
        /// The key's length.
        len: usize,
    },
    /// A [`KvOp::CompareAndSwap`] found the key holding another value than expected; nothing was changed.
    #[error("conflict: key {:?} does not hold the expected value", String::from_utf8_lossy(key))]
    Conflict {
        /// The key.
        key: Vec<u8>,
    },
}

/// The key-value state: one LMDB database of byte strings.
#[derive(Debug)]
pub struct Kv {
    data: Table,
}

/// The name of the machine's one table.
const TABLE: &str = "kv.data";

/// [`Kv`]'s database while its opening transaction is live.
pub struct KvDatabases<'e>(Database<'e, Bytes, Bytes>);

impl OnCommit for KvDatabases<'_> {
    type Committed = Kv;
    fn on_commit(self, token: &CommitToken) -> Kv {
        Kv { data: Table::new(self.0.on_commit(token), TABLE) }
    }
}

/// A database engine holding a [`Kv`] state.
pub type KvEngine = Engine<Kv>;

impl Kv {
    /// Reads `key` in a snapshot.
    pub fn get(&self, txn: &RoTxn<'_>, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.data.get(txn, key)?.map(<[u8]>::to_vec))
    }

    /// Every pair, in key order.
    pub fn dump(&self, txn: &RoTxn<'_>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for entry in self.data.iter(txn)? {
            let (k, v) = entry?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Number of keys.
    pub fn len(&self, txn: &RoTxn<'_>) -> Result<u64> {
        Ok(self.data.len(txn)?)
    }

    /// True when there is no key.
    pub fn is_empty(&self, txn: &RoTxn<'_>) -> Result<bool> {
        Ok(self.data.is_empty(txn)?)
    }
}

fn check_key(key: &[u8]) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(KvError::InvalidKey { len: key.len() });
    }
    Ok(())
}

impl StateMachine for Kv {
    const NAME: &'static str = "kv";
    type Op = KvOp;
    type Output = ();
    type Rejection = KvError;
    type Databases<'e> = KvDatabases<'e>;

    fn create_databases<'e>(
        opener: &DatabaseOpener<'e, WithoutTls>,
        txn: &mut RwTxn<'e>,
        _: &Attachments,
    ) -> Result<KvDatabases<'e>> {
        Ok(KvDatabases(opener.create_database(txn, Some(TABLE))?))
    }

    fn open_databases<'e>(
        opener: &DatabaseOpener<'e, WithoutTls>,
        txn: &RoTxn<'e>,
        _: &Attachments,
    ) -> Result<Option<KvDatabases<'e>>> {
        Ok(opener.open_database(txn, Some(TABLE))?.map(KvDatabases))
    }

    fn validate(&self, op: &KvOp) -> Result<(), KvError> {
        match op {
            KvOp::Put { key, .. } | KvOp::Delete { key } | KvOp::CompareAndSwap { key, .. } => check_key(key),
            KvOp::PutMany(pairs) => pairs.iter().try_for_each(|(k, _)| check_key(k)),
        }
    }

    fn apply(&self, txn: &mut RwTxn<'_>, _ctx: ApplyContext, op: KvOp) -> Result<(), ApplyError<KvError>> {
        // Keys are validated before logging; a record that slipped past (an older release, a hand-made log) is
        // rejected here the same way on every copy.
        self.validate(&op).map_err(ApplyError::Reject)?;
        match op {
            KvOp::Put { key, value } => self.data.put(txn, &key, &value)?,
            KvOp::Delete { key } => {
                self.data.delete(txn, &key)?;
            }
            KvOp::CompareAndSwap { key, expected, new } => {
                let current = self.data.get(txn, &key)?;
                if current != expected.as_deref() {
                    return Err(ApplyError::Reject(KvError::Conflict { key }));
                }
                match new {
                    Some(value) => self.data.put(txn, &key, &value)?,
                    None => {
                        self.data.delete(txn, &key)?;
                    }
                }
            }
            KvOp::PutMany(pairs) => {
                for (k, v) in pairs {
                    self.data.put(txn, &k, &v)?;
                }
            }
        }
        Ok(())
    }
}
