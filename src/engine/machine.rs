//! The seam between the engine and what it stores: a deterministic state machine over LMDB.
//!
//! The engine logs operations and hands each one, in LSN order, to [`StateMachine::apply`]. The same function
//! runs at commit time, during crash recovery and (later) on passive copies, so it must be a pure function of
//! the state and the operation: it may not read clocks, draw random numbers, generate ids or consult anything
//! outside the transaction. Whatever must vary (times, ids, UIDVALIDITY) is decided by the caller *before*
//! the operation is committed and travels inside it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use heed::{DatabaseOpener, OnCommit, RoTxn, RwTxn, WithoutTls};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::attachments::{Attachments, Place};
use crate::error::{Error, Result};
use crate::types::{Guid, Lsn};

/// What an operation knows about the record that carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplyContext<'a> {
    /// The record's LSN.
    pub lsn: Lsn,
    /// The epoch of the generation the record was written in.
    pub epoch: u64,
    /// When the record was committed, as its frame records it: decided by the writer before the record was
    /// written, so the same wherever and whenever the record is applied (the audit trail's time).
    pub committed: crate::time::Timestamp,
    /// The record's attachment ([`StateMachine::attachment`] of the operation when it was committed), as the log
    /// holds it: the operation decoded from the record carries none of it.
    pub attachment: &'a [u8],
    /// Where the attachment's first byte lies in the log, the same on every copy: what the state keeps to read
    /// it back later ([`Attachments::read`]).
    pub attachment_at: Place,
}

/// What the state keeps in one generation ([`StateMachine::segment_usage`]), for the space report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentUsage {
    /// Bytes of attachments written into the generation that the state still refers to.
    pub live: u64,
    /// Bytes of attachments written into it in all.
    pub stored: u64,
    /// Whether compaction ([`StateMachine::compaction`]) relocates its live bytes, so that its file goes.
    pub compactable: bool,
}

/// Why [`StateMachine::apply`] did not apply an operation; `R` is the machine's [`StateMachine::Rejection`].
#[derive(Debug)]
pub enum ApplyError<R = Error> {
    /// The operation is refused by the state it meets (a conflict, a missing object, a quota). The refusal is
    /// deterministic: replay refuses it the same way. The engine rolls back whatever the operation wrote and
    /// hands the rejection, converted into [`Error`], to the committer; the record stays in the log as a no-op.
    Reject(R),
    /// The state store failed. `MDB_MAP_FULL` makes the engine grow the map and apply the batch again; any
    /// other storage error poisons the engine.
    Storage(heed::Error),
}

impl<R> From<heed::Error> for ApplyError<R> {
    fn from(e: heed::Error) -> Self {
        ApplyError::Storage(e)
    }
}

/// A deterministic state machine whose state lives in the engine's LMDB environment.
pub trait StateMachine: Send + Sync + Sized + 'static {
    /// A stable name for the kind of state this machine keeps. A database records it at creation, and
    /// mounting it with a different machine fails instead of misreading the log.
    const NAME: &'static str;

    /// The version of the layout this machine keeps in the state store and its operations' encoding. A database
    /// records it at creation; a database of another version is refused at mount with
    /// [`Error::UnsupportedFormat`] naming both versions, never misread. Raise it with every change of layout.
    const FORMAT: u32 = 1;

    /// The logged operation.
    type Op: Serialize + DeserializeOwned + Debug + Send;
    /// What applying an operation returns to the committer.
    type Output: Send + 'static;
    /// Why the machine refuses an operation ([`validate`](Self::validate), [`ApplyError::Reject`]): its own typed
    /// error, which the engine converts into the crate's [`Error`] when it answers the committer (the mailbox
    /// model's `MailError` becomes `Error::Mail`). A machine without a type of its own uses [`Error`] itself.
    type Rejection: Into<Error> + Debug + Send + 'static;

    /// The machine's LMDB databases while the opening transaction is live; committing that transaction turns
    /// them into the machine itself (heed's [`OnCommit`]).
    type Databases<'e>: OnCommit<Committed = Self>;

    /// Creates (or opens) the machine's LMDB databases. Called once per mount, inside the transaction that
    /// the engine commits before recovery replays anything.
    /// `attachments` reads back what the database's records attached.
    fn create_databases<'e>(
        opener: &DatabaseOpener<'e, WithoutTls>,
        txn: &mut RwTxn<'e>,
        attachments: &Attachments,
    ) -> Result<Self::Databases<'e>>;

    /// Opens the machine's existing databases without writing, for offline inspection (`mailstore check`,
    /// listings). `None` when they do not exist.
    fn open_databases<'e>(
        opener: &DatabaseOpener<'e, WithoutTls>,
        txn: &RoTxn<'e>,
        attachments: &Attachments,
    ) -> Result<Option<Self::Databases<'e>>>;

    /// The raw bytes `op` carries outside its encoded form: logged after it in the same record, never decoded,
    /// and kept where the log wrote them for as long as [`referenced_generations`](Self::referenced_generations)
    /// names their generation. The operation's own encoding leaves them out (`#[serde(skip)]`); `apply` sees
    /// them, and where they lie, in its [`ApplyContext`]. The mailbox model attaches message bodies, so that a
    /// body is written once, by the log. The default attaches nothing.
    fn attachment(_op: &Self::Op) -> &[u8] {
        &[]
    }

    /// The generations holding attachments the state still refers to. Truncation keeps them (in `segments/`)
    /// and deletes a generation out of the log once it is no longer named. New references may only go to the
    /// generation of the record being applied (its own attachment, `ApplyContext::attachment_at`), so a generation
    /// out of the log, once dropped from this set, never returns to it. The default: none.
    fn referenced_generations(&self, _txn: &RoTxn<'_>) -> Result<BTreeSet<u64>> {
        Ok(BTreeSet::new())
    }

    /// An operation that compacts what the state keeps in generations below `below` (all out of the log):
    /// typically one that attaches the referenced bytes of a mostly dead segment again, so that the segment can
    /// be deleted. The engine asks after every checkpoint, on a thread of its own, and commits what it gets like
    /// any other operation (so copies replay it), until `None` (the default) or a bounded number of rounds.
    fn compaction(&self, _txn: &RoTxn<'_>, _below: u64) -> Result<Option<Self::Op>> {
        Ok(None)
    }

    /// What the state keeps in each generation holding attachments it refers to (those of
    /// [`referenced_generations`](Self::referenced_generations)), for `mailstore space`. The default: none.
    fn segment_usage(&self, _txn: &RoTxn<'_>) -> Result<BTreeMap<u64, SegmentUsage>> {
        Ok(BTreeMap::new())
    }

    /// Checks that the state is internally consistent (for example that counters match what they count) and
    /// returns every problem found; `mailstore check` reports them. The default finds none.
    fn verify(&self, _txn: &RoTxn<'_>) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// The key a change made by `op` falls under, for [`Scope::Key`](crate::engine::Scope::Key) subscriptions
    /// (the mailbox model: the operation's mailbox). `None` (the default): only database-wide subscriptions
    /// hear of it.
    fn scope(_op: &Self::Op) -> Option<Guid> {
        None
    }

    /// Checks an operation before it is logged, in the committer's thread: reject what `apply` could never
    /// accept (oversized keys, empty names), so that only plausible operations reach the log.
    fn validate(&self, _op: &Self::Op) -> Result<(), Self::Rejection> {
        Ok(())
    }

    /// Applies one operation. Must be deterministic; see the module documentation.
    fn apply(
        &self,
        txn: &mut RwTxn<'_>,
        ctx: ApplyContext,
        op: Self::Op,
    ) -> Result<Self::Output, ApplyError<Self::Rejection>>;

    /// Ends a transaction of applied operations, after its last `apply` and before it commits: writes what the
    /// operations gathered for the whole transaction (the mailbox model packs the bytes of the messages a
    /// transaction stores into one chunk, see `model::bodies`). Part of applying, as deterministic as `apply`;
    /// an error aborts the transaction like a storage error of `apply`. The default has nothing to write.
    fn finish(&self, _txn: &mut RwTxn<'_>) -> Result<(), ApplyError<Self::Rejection>> {
        Ok(())
    }

    /// The transaction the last `apply` calls wrote to is aborted (a rejected operation, a full map, an I/O
    /// error): forget what they gathered for [`finish`](Self::finish). The default has nothing to forget.
    fn abandon(&self) {}
}
