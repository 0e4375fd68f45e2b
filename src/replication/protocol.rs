//! The shipping protocol: what a passive copy asks its source and what it gets back, independent of the
//! transport. Every request is idempotent (it names the position it wants), so a transport may retry one after
//! a cut connection without losing or duplicating log.

use serde::{Deserialize, Serialize};

use crate::engine::LogPosition;
use crate::error::{Error, Result};
use crate::replication::ReplicationError;
use crate::types::{Guid, Lsn};

/// Identifies one passive copy to its source (stable for the copy's life, stored in its directory).
pub type CopyId = Guid;

/// The largest chunk of log or snapshot one reply may carry: a record is at most 64 MiB, plus its frame.
pub const MAX_CHUNK_BYTES: usize = crate::log::MAX_RECORD_LEN + 4096;

/// What a source is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceRole {
    /// The active copy: serves its log and snapshots of its state.
    Active,
    /// A healthy passive copy: serves snapshots of its state (seeding source), not log.
    Passive,
}

/// Who the source is and where its log ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// The database.
    pub guid: Guid,
    /// The source's epoch.
    pub epoch: u64,
    /// The durable end of its log.
    pub position: LogPosition,
    /// The oldest generation it still has.
    pub oldest_generation: u64,
    /// Active or passive.
    pub role: SourceRole,
}

/// A copy introduces itself (again after every reconnect).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The copy.
    pub copy: CopyId,
    /// The newest epoch the copy knows exists: a source older than that is an old active and gets fenced.
    pub known_epoch: u64,
    /// The lowest LSN the copy still needs from the source (0: it only wants to talk, not to pin the log).
    pub keep_lsn: Lsn,
}

/// A request for log bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRequest {
    /// The copy asking.
    pub copy: CopyId,
    /// The newest epoch the copy knows exists.
    pub known_epoch: u64,
    /// The generation wanted.
    pub generation: u64,
    /// Offset in it: 0 for a whole generation (header first), otherwise the end of the records the copy has.
    pub offset: u64,
    /// Every record up to this LSN is durable in the copy's log: the acknowledgement synchronous mode counts.
    pub durable_lsn: Lsn,
    /// The lowest LSN the copy still needs: the source keeps the log from here on.
    pub keep_lsn: Lsn,
    /// The most bytes to return (a chunk holds at least one whole record even if that is larger).
    pub max_bytes: u32,
    /// How long the source may wait for new log before answering with an empty chunk (long poll).
    pub wait_millis: u32,
    /// Block mode: also ship the durable bytes of the generation being written. File mode: closed
    /// generations only.
    pub block_mode: bool,
}

/// Bytes of one generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The generation.
    pub generation: u64,
    /// Where `bytes` start in it.
    pub offset: u64,
    /// Header (when `offset` is 0) and whole record frames; may be empty after a long poll with no news.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    /// The generation is closed and `bytes` reach the end of its records: the next one follows.
    pub closed: bool,
    /// The source's position when it served the chunk (the chunk never reaches past it).
    pub source: SourceInfo,
}

/// Why a source refused a request, in a form that crosses a transport.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The source is an old active: a newer epoch exists, and it has fenced itself.
    Fenced {
        /// The newer epoch.
        epoch: u64,
        /// The source's epoch.
        current: u64,
    },
    /// The generation was truncated on the source: the copy must be reseeded.
    Gone {
        /// The generation asked for.
        generation: u64,
        /// The oldest generation the source has.
        oldest: u64,
    },
    /// The source serves another database.
    Foreign {
        /// The database the copy belongs to.
        expected: Guid,
        /// The source's database.
        found: Guid,
    },
    /// Anything else, in words.
    Other(String),
}

impl Refusal {
    /// The refusal as an [`Error`].
    pub fn into_error(self) -> Error {
        match self {
            Refusal::Fenced { epoch, current } => Error::Fenced { epoch, current },
            Refusal::Gone { generation, oldest } => ReplicationError::LogTruncated { generation, oldest }.into(),
            Refusal::Foreign { expected, found } => ReplicationError::ForeignSource { expected, found }.into(),
            Refusal::Other(reason) => ReplicationError::Refused { reason }.into(),
        }
    }

    /// The refusal an [`Error`] stands for on the wire.
    pub fn from_error(e: &Error) -> Self {
        match e {
            Error::Fenced { epoch, current } => Refusal::Fenced { epoch: *epoch, current: *current },
            Error::Replication(ReplicationError::LogTruncated { generation, oldest }) => {
                Refusal::Gone { generation: *generation, oldest: *oldest }
            }
            Error::Replication(ReplicationError::ForeignSource { expected, found }) => {
                Refusal::Foreign { expected: *expected, found: *found }
            }
            e => Refusal::Other(e.to_string()),
        }
    }
}

/// A request for a piece of a state snapshot (seeding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    /// The copy being seeded.
    pub copy: CopyId,
    /// Offset in the snapshot; 0 starts a new snapshot.
    pub offset: u64,
    /// The most bytes to return.
    pub max_bytes: u32,
}

/// A piece of a snapshot.
///
/// A snapshot is one byte stream of several files, one after the other: the state file (a compacted copy of
/// the state store), then the generations holding the message bodies its state refers to below the generation
/// the copy's log starts with (`segments`, oldest first: they go to the copy's `segments/`), then that
/// generation itself up to the end of its durable records (`log`: the copy's log starts with it, and its copier
/// goes on from there). The first piece (offset 0) says how the stream is laid out; a piece never spans two
/// files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPart {
    /// Where `bytes` start in the stream.
    pub offset: u64,
    /// The bytes.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    /// Length of the whole stream: the state file and every generation.
    pub total: u64,
    /// The LSN the snapshot's state has applied; the log from the LSN after it is pinned on the source.
    pub applied_lsn: Lsn,
    /// First piece only (0 on the others): length of the state file, which comes first.
    pub state_len: u64,
    /// First piece only (empty on the others): the generations that follow the state file, as `(generation,
    /// length)`, oldest first: those below `log`'s that hold message bodies the state refers to (the copy keeps
    /// them in its `segments/`).
    pub segments: Vec<(u64, u64)>,
    /// First piece only: the generation that comes last, as `(generation, length)`: the newest whose first LSN
    /// is at most the one after `applied_lsn` (it holds that LSN, or is being written), up to the end of its
    /// durable records: the copy's log starts with it. `None` when the source has no such generation (the
    /// copy's copier then finds where to start from its log source).
    pub log: Option<(u64, u64)>,
}

/// The most generations one snapshot may carry (a source with more refuses; a copy refuses a layout with more).
pub(crate) const MAX_SNAPSHOT_GENERATIONS: usize = 1 << 20;

/// Bytes the layout of `generations` generations takes on a snapshot's first piece at most, beyond its other
/// fields: two integers of at most 10 bytes each (and their framing) per generation.
pub(crate) fn layout_bytes(generations: usize) -> usize {
    generations.saturating_add(1).saturating_mul(2 * 10 + 2).saturating_add(64)
}

/// One source of log and snapshots, seen from a passive copy. [`crate::replication::ShippingSource`] serves
/// it in process; [`crate::replication::TcpSource`] reaches one over TCP.
pub trait LogSource: Send + Sync {
    /// Registers the copy (pinning the log from `keep_lsn`) and describes the source.
    fn hello(&self, hello: Hello) -> Result<SourceInfo>;
    /// Bytes of one generation from an offset; see [`ReadRequest`].
    fn read(&self, request: ReadRequest) -> Result<Chunk>;
    /// The raw 128-byte headers of the source's generations from `from` on (at most 4096), oldest first: how
    /// a returning old active finds where its log diverged.
    fn headers(&self, from: u64) -> Result<Vec<Vec<u8>>>;
    /// A piece of a consistent snapshot of the source's state, with the generations a copy needs besides it
    /// (see [`SnapshotPart`]).
    fn snapshot(&self, request: SnapshotRequest) -> Result<SnapshotPart>;
    /// The copy goes away: its pin is dropped and it no longer counts for synchronous commits.
    fn goodbye(&self, copy: CopyId) -> Result<()>;
}

/// One message from a copy to a source over a transport.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// [`LogSource::hello`].
    Hello(Hello),
    /// [`LogSource::read`].
    Read(ReadRequest),
    /// [`LogSource::headers`].
    Headers(u64),
    /// [`LogSource::snapshot`].
    Snapshot(SnapshotRequest),
    /// [`LogSource::goodbye`].
    Goodbye(CopyId),
}

/// One answer from a source over a transport.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    /// Answer to `Hello`.
    Info(SourceInfo),
    /// Answer to `Read`.
    Chunk(Chunk),
    /// Answer to `Headers`.
    Headers(Vec<Vec<u8>>),
    /// Answer to `Snapshot`.
    Snapshot(SnapshotPart),
    /// Answer to `Goodbye`.
    Done,
    /// A refusal of any request.
    Refused(Refusal),
}

/// Answers one transported request from `source`.
pub fn serve(source: &dyn LogSource, request: Request) -> Response {
    let result = match request {
        Request::Hello(h) => source.hello(h).map(Response::Info),
        Request::Read(r) => source.read(r).map(Response::Chunk),
        Request::Headers(from) => source.headers(from).map(Response::Headers),
        Request::Snapshot(s) => source.snapshot(s).map(Response::Snapshot),
        Request::Goodbye(c) => source.goodbye(c).map(|()| Response::Done),
    };
    result.unwrap_or_else(|e| Response::Refused(Refusal::from_error(&e)))
}
