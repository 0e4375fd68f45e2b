//! A passive copy: a database directory that receives its active's log, inspects it, and replays it.
//!
//! Two threads work on it. The **copier** asks the source for the next bytes of the log (long-polling),
//! **inspects** them — framing, checksums, GUID, epoch, generation sequence, previous-generation chain, LSN
//! continuity, and that every record decodes — and only then writes them to the copy's own `logs/` (byte for
//! byte what the active has, end marker after) and syncs them. The **replayer** reads inspected records back
//! from the copy's log and applies them through the same [`StateMachine::apply`] the active used (the engine's
//! `apply_records`), holding back by the replay lag, and takes a deep checkpoint every
//! [`CopyOptions::checkpoint_depth`] bytes.
//!
//! Durability of a passive copy: every chunk is `fdatasync`ed before the copy asks for (and acknowledges) the
//! next one, and the state store runs with the flags of [`Durability::Full`](crate::Durability::Full), so a
//! copy survives a process crash and a power loss with everything it acknowledged; after one it resumes from
//! its own log.
//!
//! A copy directory holds what a database directory holds (`checkpoint`, `state/`, `logs/`), plus `copy` (its
//! identity and admin state) and `fence` (the newest epoch it knows exists).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::engine::checkpoint::CheckpointFile;
use crate::engine::state::{self, Meta, StateStore};
use crate::engine::{
    CHECKPOINT_FILE, Checkpoint, Counters, Durability, Engine, LOGS_DIR, Options, StateMachine, read_fence, write_fence,
};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::DirLock;
use crate::log::format::{FRAME_HEADER_LEN, Frame, GenerationHeader, HEADER_LEN, RecordSeal};
use crate::log::generation::{self, RecordRef, TMP_SUFFIX};
use crate::log::verify;
use crate::replication::inspect::{Expect, Inspected, TailView, inspect, inspect_origin};
use crate::replication::protocol::{
    Chunk, CopyId, Hello, LogSource, ReadRequest, SnapshotRequest, SourceInfo, SourceRole,
};
use crate::types::{Guid, Lsn, now_micros};

pub(crate) use crate::engine::COPY_FILE;
/// The longest replay or truncation lag (Exchange's limit).
pub const MAX_LAG: Duration = Duration::from_secs(14 * 24 * 3600);
const END_MARKER: [u8; FRAME_HEADER_LEN] = [0; FRAME_HEADER_LEN];
/// Records replayed per LMDB transaction.
const REPLAY_BATCH_RECORDS: usize = 32_768;
/// Payload bytes replayed per LMDB transaction.
const REPLAY_BATCH_BYTES: usize = 64 << 20;

/// How a passive copy copies and replays.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CopyOptions {
    /// Block mode (default): ship the durable bytes of the generation being written, as they are written.
    /// File mode (`false`): ship closed generations only.
    pub block_mode: bool,
    /// Replay a generation only once this long has passed since it was closed (default 0, at most 14 days).
    pub replay_lag: Duration,
    /// Keep a replayed generation this long after it was closed before deleting it (default 0, at most 14
    /// days); the active keeps it as long too.
    pub truncation_lag: Duration,
    /// Bytes of replayed log between deep checkpoints (default 100 MiB).
    pub checkpoint_depth: u64,
    /// The most bytes asked for per request (default 4 MiB).
    pub chunk_bytes: u32,
    /// How long one request may wait at the source for new log (default 200 ms). Activation waits for the
    /// request in flight, so this also bounds how long activation takes to stop copying.
    pub poll: Duration,
    /// Activation preference for [`best_copy`](crate::replication::best_copy): lower is preferred (default 1).
    pub activation_preference: u32,
    /// When the copy's state store is made durable (default [`StateSync::EveryBatch`]).
    pub state_sync: StateSync,
}

/// When a passive copy makes its state store durable. Its *log* (what it acknowledges to its source) is
/// `fdatasync`ed chunk by chunk in both modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StateSync {
    /// After every replayed batch (LMDB with the flags of [`Durability::Full`]): after a process crash, an OS
    /// crash or a power loss the copy opens with its state intact and resumes replay from its own log.
    #[default]
    EveryBatch,
    /// Only at deep checkpoints and when the copy is closed or activated (LMDB `NO_SYNC` in between), like the
    /// deep checkpoint of Exchange's passive copies: replay writes far less synchronously. A process crash loses
    /// nothing (the operating system still has the pages). After an OS crash or a power loss *while the copy was
    /// open*, its state store may be damaged: the copy detects it (the machine's boot id changed since it
    /// opened) and refuses to open with [`Error::CopyFailed`] — reseed it.
    AtCheckpoint,
}

/// The snapshot being received while a copy is seeded (inside `state/`): its presence means "Seeding".
const SEEDING_FILE: &str = "data.mdb.seeding";
/// Present while [`resync`](super::resync) works on a directory: its presence means "Resynchronizing".
pub(crate) const RESYNCING_FILE: &str = "resyncing";

/// Marker of a copy open with [`StateSync::AtCheckpoint`]: the boot id of the machine it runs on.
const UNSYNCED_FILE: &str = "unsynced";

/// This boot's identity (Linux); `None` where the system does not say.
fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            block_mode: true,
            replay_lag: Duration::ZERO,
            truncation_lag: Duration::ZERO,
            checkpoint_depth: 100 << 20,
            chunk_bytes: 4 << 20,
            poll: Duration::from_millis(200),
            activation_preference: 1,
            state_sync: StateSync::EveryBatch,
        }
    }
}

impl CopyOptions {
    /// Sets [`CopyOptions::block_mode`].
    pub fn block_mode(mut self, on: bool) -> Self {
        self.block_mode = on;
        self
    }
    /// Sets [`CopyOptions::replay_lag`].
    pub fn replay_lag(mut self, lag: Duration) -> Self {
        self.replay_lag = lag;
        self
    }
    /// Sets [`CopyOptions::truncation_lag`].
    pub fn truncation_lag(mut self, lag: Duration) -> Self {
        self.truncation_lag = lag;
        self
    }
    /// Sets [`CopyOptions::checkpoint_depth`].
    pub fn checkpoint_depth(mut self, bytes: u64) -> Self {
        self.checkpoint_depth = bytes;
        self
    }
    /// Sets [`CopyOptions::chunk_bytes`].
    pub fn chunk_bytes(mut self, bytes: u32) -> Self {
        self.chunk_bytes = bytes;
        self
    }
    /// Sets [`CopyOptions::poll`].
    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }
    /// Sets [`CopyOptions::activation_preference`].
    pub fn activation_preference(mut self, preference: u32) -> Self {
        self.activation_preference = preference;
        self
    }
    /// Sets [`CopyOptions::state_sync`].
    pub fn state_sync(mut self, sync: StateSync) -> Self {
        self.state_sync = sync;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.replay_lag > MAX_LAG || self.truncation_lag > MAX_LAG {
            return Err(Error::InvalidArgument("replay and truncation lags are limited to 14 days".into()));
        }
        if self.checkpoint_depth == 0 || self.chunk_bytes < 4096 {
            return Err(Error::InvalidArgument("checkpoint_depth must be positive and chunk_bytes >= 4096".into()));
        }
        Ok(())
    }
}

/// The state of a copy, as Exchange names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyState {
    /// Opened, not yet in contact with its source.
    Initializing,
    /// Copying and replaying.
    Healthy,
    /// Finding where its log diverged from the new active's and discarding what diverged.
    Resynchronizing,
    /// Receiving a snapshot.
    Seeding,
    /// Serving a snapshot to a copy being seeded (and otherwise healthy).
    SeedingSource,
    /// Suspended by an administrator: neither copying nor replaying.
    Suspended,
    /// Stopped by an error it cannot get past alone (see the reason); resume or reseed it.
    Failed,
    /// Failed and suspended: needs an administrator (a divergence that could not be resolved ends here).
    FailedAndSuspended,
    /// Its source is unreachable; what it has is sound and it retries.
    DisconnectedAndHealthy,
    /// It was activated: it is now the mounted active copy.
    Mounted,
    /// Closed.
    Dismounted,
}

/// What a passive copy reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyStatus {
    /// The copy.
    pub copy: CopyId,
    /// The database.
    pub database: Guid,
    /// Its state.
    pub state: CopyState,
    /// Why it failed, or why it is disconnected.
    pub reason: Option<String>,
    /// Copy queue length: generations the source has of which the copy lacks some bytes.
    pub copy_queue_length: u64,
    /// Replay queue length: generations copied and inspected but not completely replayed.
    pub replay_queue_length: u64,
    /// Last LSN copied (received and written).
    pub last_copied_lsn: Lsn,
    /// When (microseconds since the Unix epoch; 0: never).
    pub last_copied_micros: u64,
    /// Last LSN inspected (every copied record is inspected before it is written).
    pub last_inspected_lsn: Lsn,
    /// When.
    pub last_inspected_micros: u64,
    /// Last LSN replayed into the copy's state.
    pub last_replayed_lsn: Lsn,
    /// When.
    pub last_replayed_micros: u64,
    /// The source's durable end as last seen.
    pub source_lsn: Lsn,
    /// The source's head generation as last seen.
    pub source_generation: u64,
    /// When the source last answered (0: never).
    pub source_contact_micros: u64,
    /// The newest epoch the copy knows exists.
    pub epoch: u64,
    /// Replay lag in force.
    pub replay_lag: Duration,
    /// Truncation lag in force.
    pub truncation_lag: Duration,
    /// A play-down (replay to the head regardless of lag) is in progress.
    pub playing_down: bool,
    /// Activation preference (lower is preferred).
    pub activation_preference: u32,
    /// The copy's last deep checkpoint.
    pub checkpoint_lsn: Lsn,
}

/// The mount dial of activation (Exchange's `AutoDatabaseMountDial`): how many generations may be missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountDial {
    /// Mount only with nothing missing.
    Lossless,
    /// Mount with at most 6 generations missing.
    GoodAvailability,
    /// Mount with at most 12 generations missing.
    BestAvailability,
}

impl MountDial {
    /// Generations the dial allows to be missing.
    pub fn allowed(self) -> u64 {
        match self {
            MountDial::Lossless => 0,
            MountDial::GoodAvailability => 6,
            MountDial::BestAvailability => 12,
        }
    }
}

impl std::fmt::Display for MountDial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// The copy's identity and administrative state, in `DIR/copy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CopyFile {
    pub(crate) id: CopyId,
    pub(crate) suspended: bool,
    pub(crate) failed: Option<String>,
    /// The source as last seen: what activation measures missing generations against when the source is gone.
    pub(crate) source: Option<SourceInfo>,
}

pub(crate) fn read_copy_file(dir: &Path) -> Result<Option<CopyFile>> {
    let path = dir.join(COPY_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    if bytes.len() > 64 << 10 || bytes.len() < 4 {
        return Err(Error::corrupted(&path, 0, "copy file has an impossible length"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(Error::corrupted(&path, 0, "copy file checksum mismatch"));
    }
    codec::decode(body).map(Some).map_err(|e| Error::corrupted(&path, 0, e.to_string()))
}

pub(crate) fn write_copy_file(dir: &Path, file: &CopyFile) -> Result<()> {
    let mut bytes = codec::encode(file)?;
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    crate::fsutil::replace_file(dir, COPY_FILE, &bytes)
}

/// True when `dir` holds a passive copy.
pub fn is_passive_copy(dir: &Path) -> bool {
    dir.join(COPY_FILE).is_file()
}

/// One generation of the copy's log.
#[derive(Clone, Debug)]
struct LocalGen {
    header: GenerationHeader,
    path: PathBuf,
    /// End of its records as inspected so far.
    end_offset: u64,
    /// LSN of its last record (`first_lsn - 1` when it has none).
    last_lsn: Lsn,
    /// When it was closed: the creation time of the next generation.
    closed_micros: Option<u64>,
}

/// The end of the copy's log, as the copier appends to it.
struct Tail {
    generation: u64,
    header: GenerationHeader,
    file: File,
    path: PathBuf,
    offset: u64,
    next_lsn: Lsn,
    /// CRC32 of bytes `0..offset`: the next generation's `prev_checksum`.
    chain: crc32fast::Hasher,
    /// The source said this generation is complete.
    closed: bool,
}

#[derive(Debug)]
struct Progress {
    state: CopyState,
    reason: Option<String>,
    suspended: bool,
    failed: bool,
    copied_lsn: Lsn,
    copied_micros: u64,
    copied_generation: u64,
    copied_offset: u64,
    replayed_lsn: Lsn,
    replayed_micros: u64,
    source: Option<SourceInfo>,
    source_micros: u64,
    known_epoch: u64,
    gens: BTreeMap<u64, LocalGen>,
    play_down: bool,
    checkpoint_lsn: Lsn,
    seeding_others: u32,
    /// The copier is between deciding to copy and having written what it got.
    copier_busy: bool,
}

impl Progress {
    /// A copy in `state` as its copy file describes it (admin state, last known source), before anything about
    /// its log and state is known.
    fn of(state: CopyState, copy: &CopyFile) -> Self {
        Progress {
            state,
            reason: copy.failed.clone(),
            suspended: copy.suspended,
            failed: copy.failed.is_some(),
            copied_lsn: 0,
            copied_micros: 0,
            copied_generation: 0,
            copied_offset: 0,
            replayed_lsn: 0,
            replayed_micros: 0,
            source: copy.source,
            source_micros: 0,
            known_epoch: copy.source.map_or(0, |s| s.epoch),
            gens: BTreeMap::new(),
            play_down: false,
            checkpoint_lsn: 0,
            seeding_others: 0,
            copier_busy: false,
        }
    }
}

struct Shared<M: StateMachine> {
    dir: PathBuf,
    id: CopyId,
    guid: Guid,
    options: CopyOptions,
    source: Arc<dyn LogSource>,
    checkpoint: Mutex<CheckpointFile>,
    progress: Mutex<Progress>,
    changed: Condvar,
    stop: AtomicBool,
    /// Held by the copier whenever it writes (log, copy file, fence), and checked against `stop` under it: once
    /// activation has set `stop` and taken the gate, the copier never writes again, even if it is still blocked
    /// in a request and is left to finish on its own.
    write_gate: Mutex<()>,
    snapshots: super::source::SnapshotServer,
    _machine: std::marker::PhantomData<fn() -> M>,
}

impl<M: StateMachine> Shared<M> {
    fn fail(&self, reason: String) {
        let _gate = self.write_gate.lock();
        if self.stopped() {
            return;
        }
        let mut p = self.progress.lock();
        p.failed = true;
        p.reason = Some(reason);
        let _ = self.save_admin(&p);
        drop(p);
        self.changed.notify_all();
    }

    /// Writes the copy file from the progress (admin state and the source's last known position).
    fn save_admin(&self, p: &Progress) -> Result<()> {
        let failed = if p.failed { p.reason.clone() } else { None };
        write_copy_file(&self.dir, &CopyFile { id: self.id, suspended: p.suspended, failed, source: p.source })
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Suspended or failed: neither copying nor replaying.
    fn paused(&self) -> bool {
        let p = self.progress.lock();
        p.suspended || p.failed
    }

    /// Waits for a change or `timeout`.
    fn idle(&self, timeout: Duration) {
        let mut p = self.progress.lock();
        if !self.stopped() {
            self.changed.wait_for(&mut p, timeout);
        }
    }

    /// The lowest LSN the copy still needs from the source.
    ///
    /// That is the first LSN of the generation the copy is in, not the LSN after its last record: until the copy
    /// has learned that the generation is closed (and received the next header), it still asks the source about
    /// it, so the source must keep it. (Pinning only the next LSN let a checkpoint on the active delete the
    /// generation a caught-up copy sat at the end of; its next request then failed with `LogTruncated`.)
    fn keep_lsn(&self, p: &Progress) -> Lsn {
        let next = p.copied_lsn + 1;
        let from =
            if self.options.truncation_lag.is_zero() { p.gens.values().next_back() } else { p.gens.values().next() };
        from.map_or(next, |g| g.header.first_lsn.min(next))
    }
}

/// A passive copy of one database; see the module documentation. Dropping it (or [`PassiveCopy::close`])
/// stops both threads and writes a clean checkpoint.
pub struct PassiveCopy<M: StateMachine> {
    shared: Arc<Shared<M>>,
    /// The copy's state store: held here and by the replayer only, so activation can close it without waiting
    /// for a copier blocked in a request.
    state: Arc<StateStore<M>>,
    copier: Option<JoinHandle<()>>,
    replayer: Option<JoinHandle<()>>,
    /// Set once the state was closed cleanly (by `close` or `activate`).
    closed: bool,
    _lock: DirLock,
}

/// Progress of a seeding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedProgress {
    /// Snapshot bytes received.
    pub bytes: u64,
    /// Snapshot bytes in all.
    pub total: u64,
}

impl<M: StateMachine> PassiveCopy<M> {
    /// Opens the passive copy in `dir` (made by [`PassiveCopy::seed`] or [`resync`](super::resync)) and starts
    /// copying from `source` and replaying.
    pub fn open(dir: impl AsRef<Path>, source: Arc<dyn LogSource>, options: CopyOptions) -> Result<Self> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let lock = DirLock::exclusive(&dir)?;
        let copy = read_copy_file(&dir)?.ok_or_else(|| Error::NotADatabase {
            path: dir.clone(),
            reason: "it is not a passive copy (no copy file); seed it first".into(),
        })?;
        // A copy left open with unsynced state by a machine that went down since cannot trust its state store.
        let marker = dir.join(UNSYNCED_FILE);
        if marker.exists() {
            let recorded = fs::read_to_string(&marker).at(&marker)?;
            if boot_id().is_none_or(|now| now != recorded.trim()) {
                let reason = "the machine went down while this copy was open with unsynced state \
                              (StateSync::AtCheckpoint): its state store may be damaged; reseed the copy"
                    .to_string();
                write_copy_file(&dir, &CopyFile { failed: Some(reason.clone()), ..copy })?;
                return Err(Error::CopyFailed { reason });
            }
        }
        let durability = match options.state_sync {
            StateSync::EveryBatch => Durability::Full,
            StateSync::AtCheckpoint => Durability::Relaxed,
        };
        let env = state::open_env(&dir, durability, false)?;
        // Whatever an earlier run of this boot left unsynced is in the page cache: make it durable now.
        env.force_sync()?;
        match (options.state_sync, boot_id()) {
            (StateSync::AtCheckpoint, Some(id)) => crate::fsutil::replace_file(&dir, UNSYNCED_FILE, id.as_bytes())?,
            (StateSync::AtCheckpoint, None) => {
                return Err(Error::InvalidArgument(
                    "StateSync::AtCheckpoint needs the boot id (/proc/sys/kernel/random/boot_id) to detect a \
                     machine crash; use StateSync::EveryBatch here"
                        .into(),
                ));
            }
            (StateSync::EveryBatch, _) if marker.exists() => {
                fs::remove_file(&marker).at(&marker)?;
                crate::fsutil::sync_dir(&dir)?;
            }
            (StateSync::EveryBatch, _) => {}
        }
        let no_meta = || Error::NotADatabase {
            path: dir.join(state::STATE_DIR),
            reason: "the copy's state holds no metadata".into(),
        };
        let meta = Meta::open(&env)?.ok_or_else(no_meta)?;
        let values = {
            let txn = env.read_txn()?;
            meta.read(&txn)?.ok_or_else(no_meta)?
        };
        if values.machine != M::NAME {
            return Err(Error::NotADatabase {
                path: dir.clone(),
                reason: format!("it is a copy of a {:?} database, not {:?}", values.machine, M::NAME),
            });
        }
        let state = StateStore::<M>::create(env)?;
        let checkpoint = CheckpointFile::open(&dir)?;
        let guid = values.guid;
        let logs = dir.join(LOGS_DIR);
        fs::create_dir_all(&logs).at(&logs)?;
        let listing = generation::list(&logs)?;
        for leftover in &listing.leftovers {
            fs::remove_file(leftover).at(leftover)?;
        }

        // The local log: headers of all, a scan of the last (a torn chunk write is discarded; it is copied again).
        let mut gens = BTreeMap::new();
        let mut known_epoch = values.epoch.max(read_fence(&dir)?.unwrap_or(0));
        let mut previous: Option<u64> = None;
        for (number, path) in &listing.generations {
            let header = generation::read_header(path, Some(guid))?;
            if let Some(prev) = previous
                && prev + 1 != *number
            {
                return Err(Error::MissingGeneration {
                    generation: prev + 1,
                    file: logs.join(generation::file_name(prev + 1)),
                });
            }
            previous = Some(*number);
            known_epoch = known_epoch.max(header.epoch);
            if let Some(last) = gens.values_mut().last() {
                let last: &mut LocalGen = last;
                last.closed_micros = Some(header.created_micros);
                last.last_lsn = header.first_lsn - 1;
            }
            gens.insert(
                *number,
                LocalGen {
                    header,
                    path: path.clone(),
                    end_offset: 0,
                    last_lsn: header.first_lsn - 1,
                    closed_micros: None,
                },
            );
        }
        // Scan every generation replay still needs (end offsets), and the last one for the tail.
        let replayed = values.applied_lsn;
        let mut tail = None;
        let numbers: Vec<u64> = gens.keys().copied().collect();
        for (i, number) in numbers.iter().enumerate() {
            let is_last = i + 1 == numbers.len();
            let Some(local) = gens.get_mut(number) else { continue };
            if !is_last && local.last_lsn <= replayed {
                continue;
            }
            let scan = generation::scan(&local.path, Some(guid), |_| Ok(()))?;
            if let Some(damage) = &scan.damage {
                if !is_last || damage.valid_record_after.is_some() {
                    return Err(Error::corrupted(&local.path, damage.offset, damage.reason));
                }
                verify::truncate_tail(&scan)?;
            }
            local.end_offset = scan.end_offset;
            local.last_lsn = scan.last_lsn;
            if is_last {
                let file = OpenOptions::new().read(true).write(true).open(&scan.path).at(&scan.path)?;
                tail = Some(Tail {
                    generation: *number,
                    header: scan.header,
                    file,
                    path: scan.path.clone(),
                    offset: scan.end_offset,
                    next_lsn: scan.next_lsn(),
                    chain: crc32fast::Hasher::new_with_initial_len(scan.checksum, scan.end_offset),
                    closed: false,
                });
            }
        }
        let copied_lsn = tail.as_ref().map_or(replayed, |t| t.next_lsn - 1).max(replayed);
        if replayed > copied_lsn {
            return Err(Error::StateAheadOfLog { applied: replayed, log_end: copied_lsn });
        }
        let checkpoint_lsn = checkpoint.current().lsn;
        let progress = Progress {
            copied_lsn,
            copied_generation: tail.as_ref().map_or(0, |t| t.generation),
            copied_offset: tail.as_ref().map_or(0, |t| t.offset),
            replayed_lsn: replayed,
            known_epoch,
            gens,
            checkpoint_lsn,
            ..Progress::of(CopyState::Initializing, &copy)
        };
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            id: copy.id,
            guid,
            options,
            source,
            checkpoint: Mutex::new(checkpoint),
            progress: Mutex::new(progress),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            write_gate: Mutex::new(()),
            snapshots: super::source::SnapshotServer::new(),
            _machine: std::marker::PhantomData,
        });
        let state = Arc::new(state);
        let copier = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("mailstore-copier".into())
                .spawn(move || Copier { shared, tail }.run())
                .at(&dir)?
        };
        let replayer = {
            let shared = Arc::clone(&shared);
            let state = Arc::clone(&state);
            std::thread::Builder::new()
                .name("mailstore-replayer".into())
                .spawn(move || Replayer::new(shared, state).run())
                .at(&dir)?
        };
        Ok(PassiveCopy { shared, state, copier: Some(copier), replayer: Some(replayer), closed: false, _lock: lock })
    }

    /// Creates a passive copy in `dir` from a consistent snapshot served by `snapshot_from` (the active or a
    /// healthy passive), then opens it: it catches up from `source`'s log while the active keeps taking
    /// writes. `dir` may hold a failed copy or an old active: its state and log are replaced (its `diverged/`
    /// directory is kept). `progress` is called after every piece of the snapshot.
    pub fn seed(
        dir: impl AsRef<Path>,
        snapshot_from: &dyn LogSource,
        source: Arc<dyn LogSource>,
        options: CopyOptions,
        mut progress: impl FnMut(SeedProgress),
    ) -> Result<Self> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).at(&dir)?;
        {
            let _lock = DirLock::exclusive(&dir)?;
            let id = read_copy_file(&dir).ok().flatten().map_or_else(Guid::new_random, |c| c.id);
            // Replace whatever was there (a failed copy, an old active's state).
            for name in [CHECKPOINT_FILE, super::source::COPIES_FILE, UNSYNCED_FILE] {
                let path = dir.join(name);
                if path.exists() {
                    fs::remove_file(&path).at(&path)?;
                }
            }
            for name in [state::STATE_DIR, LOGS_DIR] {
                let path = dir.join(name);
                if path.exists() {
                    fs::remove_dir_all(&path).at(&path)?;
                }
            }
            write_copy_file(&dir, &CopyFile { id, suspended: false, failed: None, source: None })?;
            let known_epoch = read_fence(&dir)?.unwrap_or(0);

            // Pin the log on the active from where the snapshot source stands, before the snapshot is taken.
            let info = source.hello(Hello { copy: id, known_epoch, keep_lsn: 0 })?;
            let from = snapshot_from.hello(Hello { copy: id, known_epoch, keep_lsn: 0 })?;
            if from.guid != info.guid {
                return Err(Error::Shipping(format!(
                    "the snapshot source serves database {}, the log source {}",
                    from.guid, info.guid
                )));
            }
            source.hello(Hello { copy: id, known_epoch, keep_lsn: from.position.lsn.min(info.position.lsn) + 1 })?;

            let state_dir = dir.join(state::STATE_DIR);
            fs::create_dir_all(&state_dir).at(&state_dir)?;
            let tmp = state_dir.join(SEEDING_FILE);
            let file = File::create(&tmp).at(&tmp)?;
            let mut offset = 0u64;
            loop {
                let part =
                    snapshot_from.snapshot(SnapshotRequest { copy: id, offset, max_bytes: options.chunk_bytes })?;
                if part.offset != offset || part.bytes.is_empty() && offset < part.total {
                    return Err(Error::Shipping(format!("snapshot piece at {} answered for {offset}", part.offset)));
                }
                file.write_all_at(&part.bytes, offset).at(&tmp)?;
                offset += part.bytes.len() as u64;
                progress(SeedProgress { bytes: offset, total: part.total });
                if offset >= part.total {
                    break;
                }
            }
            file.sync_all().at(&tmp)?;
            let data = state_dir.join("data.mdb");
            fs::rename(&tmp, &data).at(&data)?;
            crate::fsutil::sync_dir(&state_dir)?;

            let env = state::open_env(&dir, Durability::Full, false)?;
            let values = Meta::open(&env)?
                .and_then(|m| env.read_txn().ok().and_then(|t| m.read(&t).ok().flatten()))
                .ok_or_else(|| Error::Shipping("the snapshot holds no engine metadata".into()))?;
            if values.guid != info.guid {
                return Err(Error::Shipping("the snapshot belongs to another database".into()));
            }
            drop(env);
            CheckpointFile::create(
                &dir,
                Checkpoint {
                    guid: values.guid,
                    sequence: 0,
                    lsn: values.applied_lsn,
                    epoch: values.epoch,
                    backup_lsn: 0,
                    clean: true,
                },
            )?;
            let logs = dir.join(LOGS_DIR);
            fs::create_dir_all(&logs).at(&logs)?;
            crate::fsutil::sync_dir(&dir)?;
        }
        Self::open(dir, source, options)
    }

    /// The copy's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The copy's identity.
    pub fn id(&self) -> CopyId {
        self.shared.id
    }

    /// The database's GUID.
    pub fn guid(&self) -> Guid {
        self.shared.guid
    }

    /// What the copy reports.
    pub fn status(&self) -> CopyStatus {
        status_of(&self.shared)
    }

    /// Runs `f` over a consistent read-only snapshot of the copy's state (as replayed so far).
    pub fn read<T>(&self, f: impl FnOnce(&M, &heed::RoTxn<'_>) -> Result<T>) -> Result<T> {
        self.state.read(f)
    }

    /// Waits until the copy has copied and inspected `lsn` (or `timeout` passes); returns whether it did.
    pub fn wait_copied(&self, lsn: Lsn, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut p = self.shared.progress.lock();
        while p.copied_lsn < lsn {
            if self.shared.changed.wait_until(&mut p, deadline).timed_out() {
                return p.copied_lsn >= lsn;
            }
        }
        true
    }

    /// Waits until the copy has replayed `lsn` (or `timeout` passes); returns whether it did.
    pub fn wait_replayed(&self, lsn: Lsn, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut p = self.shared.progress.lock();
        while p.replayed_lsn < lsn {
            if self.shared.changed.wait_until(&mut p, deadline).timed_out() {
                return p.replayed_lsn >= lsn;
            }
        }
        true
    }

    /// Suspends copying and replaying (the source keeps the log the copy needs; see
    /// [`SourceOptions::max_pinned_generations`](super::SourceOptions) for the guard). Survives a restart.
    /// Returns once the copier has finished the request it had in flight: nothing more is copied after it.
    pub fn suspend(&self) -> Result<()> {
        self.set_admin(true, false)?;
        let mut p = self.shared.progress.lock();
        while p.copier_busy && !self.shared.stopped() {
            self.shared.changed.wait_for(&mut p, Duration::from_millis(50));
        }
        Ok(())
    }

    /// Resumes a suspended or failed copy (clearing the failure: the copier retries where it stopped).
    pub fn resume(&self) -> Result<()> {
        self.set_admin(false, true)
    }

    fn set_admin(&self, suspended: bool, clear_failure: bool) -> Result<()> {
        let mut p = self.shared.progress.lock();
        p.suspended = suspended;
        if clear_failure {
            p.failed = false;
            p.reason = None;
        }
        self.shared.save_admin(&p)?;
        drop(p);
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Replays everything copied, ignoring the replay lag, until the copy reaches what it had copied when
    /// called (or `timeout` passes); returns whether it did. The lag applies again afterwards.
    pub fn play_down(&self, timeout: Duration) -> bool {
        let target = {
            let mut p = self.shared.progress.lock();
            p.play_down = true;
            p.copied_lsn
        };
        self.shared.changed.notify_all();
        let done = self.wait_replayed(target, timeout);
        self.shared.progress.lock().play_down = false;
        done
    }

    /// Learns that epoch `epoch` exists (from a coordinator, or another copy's status): the copy then refuses
    /// log from any older active. Stored durably.
    pub fn learn_epoch(&self, epoch: u64) -> Result<()> {
        learn_epoch(&self.shared, epoch)
    }

    /// Generations missing on this copy compared with what its source last reported; `Err` when the mount dial
    /// does not allow activating with that many.
    pub fn check_activation(&self, dial: MountDial) -> Result<u64> {
        let missing = self.status().copy_queue_length;
        if missing > dial.allowed() {
            return Err(Error::ActivationRefused { missing, allowed: dial.allowed(), dial: dial.to_string() });
        }
        Ok(missing)
    }

    /// Activates the copy: stops copying, checks the mount dial, replays what is left (ignoring the replay
    /// lag), starts a new epoch (at least `min_epoch`, above every epoch the copy knows) in a new generation,
    /// and mounts the database as the active copy with `options`. On a refusal the copy is closed; open it
    /// again to go on copying.
    ///
    /// Give `min_epoch` as one more than the highest epoch any candidate copy reports, so that two copies
    /// activated one after the other can never share an epoch.
    pub fn activate(mut self, dial: MountDial, min_epoch: u64, options: Options) -> Result<Engine<M>> {
        // A copier blocked in a request to a dead or idle source is not waited for: once `stop` is set and the
        // write gate taken, it never writes again (see `Shared::write_gate`).
        self.stop_replayer_and_fence_copier();
        if self.shared.progress.lock().gens.is_empty() {
            return Err(Error::CopyFailed {
                reason: "the copy holds no log yet (seeded, but it has not copied a generation): it cannot start \
                         the next one"
                    .into(),
            });
        }
        self.check_activation(dial)?;
        let epoch = min_epoch.max(self.shared.progress.lock().known_epoch + 1);
        let dir = self.shared.dir.clone();
        self.close_state()?;
        self.closed = true;
        // The state store must be closed before the engine opens it: no other reference may remain.
        let weak = Arc::downgrade(&self.state);
        drop(self);
        if weak.upgrade().is_some() {
            return Err(Error::Busy("the copy's state is still in use (a seeding in progress)".into()));
        }
        let engine = Engine::mount_with(&dir, options.create_if_missing(false), Some(epoch))?;
        // The directory is an active database now.
        let path = dir.join(COPY_FILE);
        fs::remove_file(&path).at(&path)?;
        crate::fsutil::sync_dir(&dir)?;
        Ok(engine)
    }

    /// Stops copying and replaying and writes a clean checkpoint.
    pub fn close(mut self) -> Result<()> {
        self.stop_threads();
        self.closed = true;
        self.close_state()
    }

    fn stop_threads(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.changed.notify_all();
        for handle in [self.copier.take(), self.replayer.take()].into_iter().flatten() {
            let _ = handle.join();
        }
    }

    /// Stops the replayer (joined) and the copier (fenced off by the write gate, left to return on its own).
    fn stop_replayer_and_fence_copier(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.changed.notify_all();
        if let Some(handle) = self.replayer.take() {
            let _ = handle.join();
        }
        drop(self.shared.write_gate.lock());
        self.shared.progress.lock().copier_busy = false;
        // The copy leaves its source (which drops its pin and wakes its waiting request); over a transport that
        // call may have to wait for the request in flight, so it runs on its own thread.
        let source = Arc::clone(&self.shared.source);
        let id = self.shared.id;
        let _ = std::thread::Builder::new().name("mailstore-goodbye".into()).spawn(move || {
            let _ = source.goodbye(id);
        });
        // A copier that returns promptly is joined (it then holds nothing of the source); one blocked in a
        // request to a dead source is left to return on its own.
        if let Some(handle) = self.copier.take() {
            let deadline = std::time::Instant::now() + Duration::from_millis(100);
            while !handle.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }

    fn close_state(&self) -> Result<()> {
        let shared = &self.shared;
        self.state.env.force_sync()?;
        let marker = shared.dir.join(UNSYNCED_FILE);
        if marker.exists() {
            fs::remove_file(&marker).at(&marker)?;
            crate::fsutil::sync_dir(&shared.dir)?;
        }
        let replayed = shared.progress.lock().replayed_lsn;
        let mut ck = shared.checkpoint.lock();
        let current = ck.current();
        ck.write(Checkpoint { lsn: replayed, clean: true, ..current })?;
        let mut p = shared.progress.lock();
        shared.save_admin(&p)?;
        p.state = CopyState::Dismounted;
        Ok(())
    }

    /// A [`LogSource`] that serves snapshots of this copy's state, to seed another copy from it (a seeding
    /// source); it serves no log.
    pub fn seeding_source(&self) -> Arc<dyn LogSource> {
        Arc::new(PassiveSnapshots { shared: Arc::downgrade(&self.shared), state: Arc::downgrade(&self.state) })
    }
}

impl<M: StateMachine> Drop for PassiveCopy<M> {
    fn drop(&mut self) {
        if !self.closed {
            self.stop_threads();
            let _ = self.close_state();
        }
    }
}

/// The status of a passive copy that is not open, from its files alone (for admin tools). `source`, when given,
/// is asked where its log ends (for the copy queue length); otherwise the position the copy last saw is used.
/// Lags and preference are options of an open copy and read as their defaults here.
///
/// While another process seeds the copy or resynchronizes it (and so holds the directory), the answer is a status
/// in state `Seeding` or `Resynchronizing`, built from the copy file alone (identity and last known source).
pub fn offline_copy_status(dir: impl AsRef<Path>, source: Option<&dyn LogSource>) -> Result<CopyStatus> {
    let dir = dir.as_ref();
    let _lock = match crate::engine::inspection_lock(dir) {
        Ok(lock) => lock,
        Err(Error::AlreadyMounted { path }) => {
            let state = if dir.join(state::STATE_DIR).join(SEEDING_FILE).exists() {
                CopyState::Seeding
            } else if dir.join(RESYNCING_FILE).exists() {
                CopyState::Resynchronizing
            } else {
                return Err(Error::AlreadyMounted { path });
            };
            let copy = read_copy_file(dir)?.ok_or(Error::AlreadyMounted { path })?;
            return Ok(busy_status(&copy, state));
        }
        Err(e) => return Err(e),
    };
    let copy = read_copy_file(dir)?
        .ok_or_else(|| Error::NotADatabase { path: dir.to_path_buf(), reason: "it is not a passive copy".into() })?;
    let env = state::open_env(dir, Durability::Full, true)?;
    let no_meta =
        || Error::NotADatabase { path: dir.to_path_buf(), reason: "the copy's state holds no metadata".into() };
    let values = {
        let meta = Meta::open(&env)?.ok_or_else(no_meta)?;
        let txn = env.read_txn()?;
        meta.read(&txn)?.ok_or_else(no_meta)?
    };
    drop(env);
    let mut gens = BTreeMap::new();
    let mut known_epoch = values.epoch.max(read_fence(dir)?.unwrap_or(0));
    let mut copied = (values.applied_lsn, 0, 0);
    let listing = generation::list(&dir.join(LOGS_DIR))?;
    for (i, (number, path)) in listing.generations.iter().enumerate() {
        let header = generation::read_header(path, Some(values.guid))?;
        known_epoch = known_epoch.max(header.epoch);
        let mut local =
            LocalGen { header, path: path.clone(), end_offset: 0, last_lsn: header.first_lsn - 1, closed_micros: None };
        if i + 1 == listing.generations.len() {
            let scan = generation::scan(path, Some(values.guid), |_| Ok(()))?;
            local.last_lsn = scan.last_lsn;
            local.end_offset = scan.end_offset;
            copied = (scan.last_lsn.max(values.applied_lsn), *number, scan.end_offset);
        }
        if let Some(prev) = gens.values_mut().last() {
            let prev: &mut LocalGen = prev;
            prev.last_lsn = header.first_lsn - 1;
            prev.closed_micros = Some(header.created_micros);
        }
        gens.insert(*number, local);
    }
    let source = match source {
        Some(s) => Some(s.hello(Hello { copy: copy.id, known_epoch, keep_lsn: 0 })?),
        None => copy.source,
    };
    let progress = Progress {
        copied_lsn: copied.0,
        copied_generation: copied.1,
        copied_offset: copied.2,
        replayed_lsn: values.applied_lsn,
        source,
        known_epoch,
        gens,
        checkpoint_lsn: CheckpointFile::open(dir).map(|c| c.current().lsn).unwrap_or(0),
        ..Progress::of(CopyState::Dismounted, &copy)
    };
    Ok(compute_status(copy.id, values.guid, &CopyOptions::default(), &progress))
}

/// The status of a copy another process is seeding or resynchronizing: only its identity and last known source
/// are known.
fn busy_status(copy: &CopyFile, state: CopyState) -> CopyStatus {
    let progress = Progress { reason: None, suspended: false, failed: false, ..Progress::of(state, copy) };
    let database = copy.source.map_or(Guid([0; 16]), |s| s.guid);
    compute_status(copy.id, database, &CopyOptions::default(), &progress)
}

/// A source for a copy whose active is gone: every request fails. Open a copy with it to activate the copy
/// from what it has ([`PassiveCopy::activate`] measures the missing generations against the source position
/// the copy last saw).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSource;

impl LogSource for NoSource {
    fn hello(&self, _: Hello) -> Result<SourceInfo> {
        Err(Error::Shipping("no source: the copy is offline".into()))
    }
    fn read(&self, _: ReadRequest) -> Result<Chunk> {
        Err(Error::Shipping("no source: the copy is offline".into()))
    }
    fn headers(&self, _: u64) -> Result<Vec<Vec<u8>>> {
        Err(Error::Shipping("no source: the copy is offline".into()))
    }
    fn snapshot(&self, _: SnapshotRequest) -> Result<crate::replication::protocol::SnapshotPart> {
        Err(Error::Shipping("no source: the copy is offline".into()))
    }
    fn goodbye(&self, _: CopyId) -> Result<()> {
        Ok(())
    }
}

fn learn_epoch<M: StateMachine>(shared: &Shared<M>, epoch: u64) -> Result<()> {
    let mut p = shared.progress.lock();
    if epoch > p.known_epoch {
        write_fence(&shared.dir, epoch)?;
        p.known_epoch = epoch;
    }
    Ok(())
}

fn status_of<M: StateMachine>(shared: &Shared<M>) -> CopyStatus {
    let p = shared.progress.lock();
    compute_status(shared.id, shared.guid, &shared.options, &p)
}

fn compute_status(id: CopyId, guid: Guid, options: &CopyOptions, p: &Progress) -> CopyStatus {
    let state = if p.state == CopyState::Dismounted {
        CopyState::Dismounted
    } else if p.failed && p.suspended {
        CopyState::FailedAndSuspended
    } else if p.failed {
        CopyState::Failed
    } else if p.suspended {
        CopyState::Suspended
    } else if p.seeding_others > 0 {
        CopyState::SeedingSource
    } else {
        p.state
    };
    let (source_lsn, source_generation, source_offset) =
        p.source.map_or((0, 0, 0), |s| (s.position.lsn, s.position.generation, s.position.offset));
    // Generations of which the copy lacks bytes: from the one it is copying to the source's head.
    // A freshly seeded copy holds no generation yet: it lacks at least the one its source is writing.
    let caught_up = !p.gens.is_empty()
        && (p.copied_lsn >= source_lsn
            || (p.copied_generation == source_generation && p.copied_offset >= source_offset));
    let copy_queue_length =
        if p.source.is_none() || caught_up { 0 } else { source_generation.saturating_sub(p.copied_generation) + 1 };
    let replay_queue_length = if p.replayed_lsn >= p.copied_lsn {
        0
    } else {
        let holding = |lsn: Lsn| p.gens.iter().rev().find(|(_, g)| g.header.first_lsn <= lsn).map_or(0, |(n, _)| *n);
        holding(p.copied_lsn).saturating_sub(holding(p.replayed_lsn + 1)) + 1
    };
    CopyStatus {
        copy: id,
        database: guid,
        state,
        reason: p.reason.clone(),
        copy_queue_length,
        replay_queue_length,
        last_copied_lsn: p.copied_lsn,
        last_copied_micros: p.copied_micros,
        last_inspected_lsn: p.copied_lsn,
        last_inspected_micros: p.copied_micros,
        last_replayed_lsn: p.replayed_lsn,
        last_replayed_micros: p.replayed_micros,
        source_lsn,
        source_generation,
        source_contact_micros: p.source_micros,
        epoch: p.known_epoch,
        replay_lag: options.replay_lag,
        truncation_lag: options.truncation_lag,
        playing_down: p.play_down,
        activation_preference: options.activation_preference,
        checkpoint_lsn: p.checkpoint_lsn,
    }
}

/// The copier + inspector thread.
struct Copier<M: StateMachine> {
    shared: Arc<Shared<M>>,
    tail: Option<Tail>,
}

impl<M: StateMachine> Copier<M> {
    fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        let mut backoff = Duration::from_millis(50);
        while !shared.stopped() {
            {
                let mut p = shared.progress.lock();
                if p.suspended || p.failed {
                    drop(p);
                    shared.idle(Duration::from_millis(200));
                    continue;
                }
                p.copier_busy = true;
            }
            let outcome = self.step();
            shared.progress.lock().copier_busy = false;
            shared.changed.notify_all();
            match outcome {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(e @ (Error::Shipping(_) | Error::Io { .. })) if !is_local_io(&e, &shared.dir) => {
                    let mut p = shared.progress.lock();
                    p.state = CopyState::DisconnectedAndHealthy;
                    p.reason = Some(e.to_string());
                    drop(p);
                    shared.changed.notify_all();
                    shared.idle(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(Error::Fenced { epoch, current }) => {
                    // The source is an old active: it fenced itself; we wait for the new active.
                    let mut p = shared.progress.lock();
                    p.state = CopyState::DisconnectedAndHealthy;
                    p.reason = Some(format!("the source is an old active (epoch {current}; epoch {epoch} exists)"));
                    drop(p);
                    shared.idle(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => shared.fail(e.to_string()),
            }
        }
    }

    /// One request and what comes of it.
    fn step(&mut self) -> Result<()> {
        let shared = &self.shared;
        let (generation, offset) = match &self.tail {
            Some(t) if t.closed => (t.generation + 1, 0),
            Some(t) => (t.generation, t.offset),
            None => (self.seed_generation()?, 0),
        };
        let (known_epoch, durable_lsn, keep_lsn) = {
            let p = shared.progress.lock();
            (p.known_epoch, p.copied_lsn, shared.keep_lsn(&p))
        };
        let chunk = shared.source.read(ReadRequest {
            copy: shared.id,
            known_epoch,
            generation,
            offset,
            durable_lsn,
            keep_lsn,
            max_bytes: shared.options.chunk_bytes,
            wait_millis: shared.options.poll.as_millis().min(u128::from(u32::MAX)) as u32,
            block_mode: shared.options.block_mode,
        })?;
        {
            let mut p = shared.progress.lock();
            p.source_micros = now_micros();
            if p.state == CopyState::Initializing || p.state == CopyState::DisconnectedAndHealthy {
                p.state = CopyState::Healthy;
                p.reason = None;
            }
        }
        let shared = Arc::clone(&self.shared);
        let _gate = shared.write_gate.lock();
        if shared.stopped() {
            return Ok(());
        }
        self.accept(generation, offset, chunk)
    }

    /// The generation holding the first record the state needs, for a freshly seeded copy with no log yet.
    fn seed_generation(&self) -> Result<u64> {
        let want = self.shared.progress.lock().replayed_lsn + 1;
        let mut found = None;
        let mut from = 1;
        loop {
            let headers = self.shared.source.headers(from)?;
            let Some(last) = headers.last() else { break };
            for raw in &headers {
                let header = GenerationHeader::decode(raw)
                    .map_err(|e| Error::ChunkRejected { reason: format!("source header: {e}") })?;
                if header.first_lsn <= want {
                    found = Some(header.generation);
                }
            }
            let last = GenerationHeader::decode(last)
                .map_err(|e| Error::ChunkRejected { reason: format!("source header: {e}") })?;
            if headers.len() < 4096 {
                break;
            }
            from = last.generation + 1;
        }
        found.ok_or_else(|| Error::CopyFailed {
            reason: format!("the source no longer has the log from LSN {want}: reseed the copy"),
        })
    }

    /// Inspects a chunk and, only if all of it passes, writes and syncs it.
    fn accept(&mut self, generation: u64, offset: u64, chunk: Chunk) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let (known_epoch, want_lsn) = {
            let p = shared.progress.lock();
            (p.known_epoch, p.replayed_lsn + 1)
        };
        let expect = Expect {
            guid: shared.guid,
            known_epoch,
            generation,
            offset,
            tail: self.tail.as_ref().map(|t| TailView {
                header: t.header,
                next_lsn: t.next_lsn,
                chain: t.chain.clone().finalize(),
            }),
            want_lsn,
        };
        if chunk.bytes.is_empty() {
            // Nothing to inspect but who sent it and for which position.
            inspect_origin(&expect, &chunk)?;
            if chunk.closed
                && let Some(t) = &mut self.tail
                && t.generation == generation
            {
                t.closed = true;
            }
            return self.note_source(chunk.source);
        }
        let Inspected { header, last_lsn, records } = inspect::<M::Op>(&expect, &chunk)?;
        let bytes = &chunk.bytes;
        let expected = last_lsn + 1;
        // Write and sync, then publish.
        if let Some(header) = header {
            let tail = self.create_generation(header, bytes, expected)?;
            let mut p = shared.progress.lock();
            if let Some(prev) = p.gens.values_mut().last() {
                prev.closed_micros = Some(header.created_micros);
            }
            p.gens.insert(
                generation,
                LocalGen {
                    header,
                    path: tail.path.clone(),
                    end_offset: bytes.len() as u64,
                    last_lsn,
                    closed_micros: None,
                },
            );
            drop(p);
            self.tail = Some(tail);
        } else if let Some(t) = &mut self.tail {
            let mut out = Vec::with_capacity(bytes.len() + FRAME_HEADER_LEN);
            out.extend_from_slice(bytes);
            out.extend_from_slice(&END_MARKER);
            t.file.write_all_at(&out, t.offset).at(&t.path)?;
            t.file.sync_data().at(&t.path)?;
            t.chain.update(bytes);
            t.offset += bytes.len() as u64;
            t.next_lsn = expected;
            let mut p = shared.progress.lock();
            if let Some(local) = p.gens.get_mut(&generation) {
                local.end_offset = t.offset;
                local.last_lsn = last_lsn;
            }
        }
        if let Some(t) = &mut self.tail {
            t.closed = chunk.closed;
        }
        {
            let mut p = shared.progress.lock();
            if records > 0 || header.is_some() {
                p.copied_lsn = p.copied_lsn.max(last_lsn);
                p.copied_micros = now_micros();
            }
            if let Some(t) = &self.tail {
                p.copied_generation = t.generation;
                p.copied_offset = t.offset;
            }
        }
        shared.changed.notify_all();
        self.note_source(chunk.source)
    }

    /// Records the source's position (durably once per generation: it survives a restart of the copy) and any
    /// newer epoch. Called with the write gate held.
    fn note_source(&self, source: SourceInfo) -> Result<()> {
        let mut p = self.shared.progress.lock();
        let moved = p.source.is_none_or(|s| s.position.generation != source.position.generation);
        p.source = Some(source);
        if moved {
            self.shared.save_admin(&p)?;
        }
        drop(p);
        learn_epoch(&self.shared, source.epoch)
    }

    /// Creates a generation file holding `bytes` (header and records) and an end marker, durably.
    /// `next_lsn` is the LSN after the last record in `bytes`, as inspection found it.
    fn create_generation(&self, header: GenerationHeader, bytes: &[u8], next_lsn: Lsn) -> Result<Tail> {
        let logs = self.shared.dir.join(LOGS_DIR);
        let path = logs.join(generation::file_name(header.generation));
        let tmp = logs.join(format!("{:016}{TMP_SUFFIX}", header.generation));
        let file = (|| -> std::io::Result<File> {
            let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&tmp)?;
            let mut out = Vec::with_capacity(bytes.len() + FRAME_HEADER_LEN);
            out.extend_from_slice(bytes);
            out.extend_from_slice(&END_MARKER);
            file.write_all_at(&out, 0)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            Ok(file)
        })()
        .at(&path)?;
        crate::fsutil::sync_dir(&logs)?;
        let mut chain = crc32fast::Hasher::new();
        chain.update(bytes);
        let records_end = bytes.len() as u64;
        Ok(Tail {
            generation: header.generation,
            header,
            file,
            path,
            offset: records_end,
            next_lsn,
            chain,
            closed: false,
        })
    }
}

/// I/O errors on the copy's own files are failures; I/O errors elsewhere (a transport) are disconnections.
fn is_local_io(e: &Error, dir: &Path) -> bool {
    matches!(e, Error::Io { path, .. } if path.starts_with(dir))
}

/// A batch read from the copy's log, framed and decoded ahead of its replay.
struct Prepared<M: StateMachine> {
    /// Each generation's part of the batch (records point into these).
    bufs: Vec<Vec<u8>>,
    /// Per record: LSN, epoch, which buffer, where its payload lies in it.
    spans: Vec<(Lsn, u64, usize, std::ops::Range<usize>)>,
    /// Per record, its operation.
    ops: Vec<M::Op>,
    /// Payload bytes in all.
    bytes: usize,
}

/// Reads, checks the framing of and decodes the next batch while the replayer applies the current one, on its
/// own thread: replay's CPU then goes to `apply` and the state store (Exchange's replay also prefetches the
/// log). It only reads what the inspector has already passed and the replay limit allows; the replayer checks
/// that each batch starts where replay stands.
struct Prefetcher<M: StateMachine> {
    shared: Arc<Shared<M>>,
    /// Where the next record to read starts: (generation, offset, its LSN).
    cursor: Option<(u64, u64, Lsn)>,
    /// The next LSN to read, once the first batch is read.
    next: Option<Lsn>,
    /// Buffers the replayer has finished with.
    recycled: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl<M: StateMachine> Prefetcher<M> {
    fn run(mut self, batches: std::sync::mpsc::SyncSender<Result<Prepared<M>>>) {
        let shared = Arc::clone(&self.shared);
        while !shared.stopped() {
            if shared.paused() {
                // A suspended copy resumes where it stopped (a batch may be waiting in the channel); a failed
                // one is reopened before it replays again.
                shared.idle(Duration::from_millis(200));
                continue;
            }
            match self.prepare() {
                Ok(Some(batch)) => {
                    // Blocks while the replayer still has a batch waiting; fails once it has stopped.
                    if batches.send(Ok(batch)).is_err() {
                        return;
                    }
                }
                Ok(None) => shared.idle(Duration::from_millis(100)),
                Err(e) => {
                    self.next = None;
                    self.cursor = None;
                    if batches.send(Err(e)).is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// The last LSN replay may reach now: everything copied, or with a lag the end of the newest generation
    /// closed at least the lag ago.
    fn limit(&self, p: &Progress) -> Lsn {
        let lag = self.shared.options.replay_lag;
        if lag.is_zero() || p.play_down {
            return p.copied_lsn;
        }
        let cutoff = now_micros().saturating_sub(lag.as_micros() as u64);
        p.gens.values().filter(|g| g.closed_micros.is_some_and(|c| c <= cutoff)).map(|g| g.last_lsn).max().unwrap_or(0)
    }

    /// Reads the next batch; `Ok(None)` when there is nothing to replay yet.
    fn prepare(&mut self) -> Result<Option<Prepared<M>>> {
        let (from, limit, gens) = {
            let p = self.shared.progress.lock();
            let from = self.next.unwrap_or(p.replayed_lsn + 1);
            let limit = self.limit(&p).min(p.copied_lsn);
            if limit < from {
                return Ok(None);
            }
            let gens: Vec<LocalGen> =
                p.gens.values().filter(|g| g.last_lsn >= from && g.header.first_lsn <= limit).cloned().collect();
            (from, limit, gens)
        };
        // Each generation's part is read into one buffer; records point into them (no copy per record).
        let mut bufs: Vec<Vec<u8>> = Vec::new();
        let mut spans: Vec<(Lsn, u64, usize, std::ops::Range<usize>)> = Vec::new();
        let mut bytes = 0usize;
        let mut cursor = None;
        for g in &gens {
            // Resume where the previous batch stopped instead of reading the generation from its start.
            let start = match self.cursor {
                Some((generation, offset, next)) if generation == g.header.generation && next == from => offset,
                _ => HEADER_LEN as u64,
            };
            if start >= g.end_offset {
                continue;
            }
            let mut file = File::open(&g.path).at(&g.path)?;
            file.seek(std::io::SeekFrom::Start(start)).at(&g.path)?;
            let len = usize::try_from(g.end_offset - start)
                .map_err(|_| Error::corrupted(&g.path, start, "generation too large"))?;
            let mut buf = self.recycled.lock().pop().unwrap_or_default();
            buf.clear();
            buf.try_reserve_exact(len).map_err(|e| Error::corrupted(&g.path, start, format!("{len} bytes: {e}")))?;
            // `read_to_end` into reserved capacity: no zeroing of the buffer first.
            (&file).take(len as u64).read_to_end(&mut buf).at(&g.path)?;
            if buf.len() != len {
                return Err(Error::corrupted(&g.path, start + buf.len() as u64, "generation shorter than copied"));
            }
            let index = bufs.len();
            let seal = RecordSeal::for_header(&g.header);
            let mut at = 0;
            // Past the replay limit, or the batch is full: nothing more from any generation.
            let mut done = false;
            while at < buf.len() {
                match seal.decode(&buf[at..]) {
                    Frame::Record { lsn, payload, frame_len } => {
                        if lsn > limit {
                            done = true;
                            break;
                        }
                        let payload_at = at + FRAME_HEADER_LEN;
                        at += frame_len;
                        if lsn < from {
                            continue;
                        }
                        bytes += payload.len();
                        spans.push((lsn, g.header.epoch, index, payload_at..payload_at + payload.len()));
                        cursor = Some((g.header.generation, start + at as u64, lsn + 1));
                        if spans.len() >= REPLAY_BATCH_RECORDS || bytes >= REPLAY_BATCH_BYTES {
                            done = true;
                            break;
                        }
                    }
                    Frame::End => break,
                    Frame::Invalid(why) => return Err(Error::corrupted(&g.path, start + at as u64, why)),
                }
            }
            bufs.push(buf);
            if done {
                break;
            }
        }
        let Some(&(last, ..)) = spans.last() else {
            self.recycled.lock().extend(bufs);
            return Ok(None);
        };
        let mut ops = Vec::with_capacity(spans.len());
        for (lsn, _, index, range) in &spans {
            let op = codec::decode::<M::Op>(&bufs[*index][range.clone()])
                .map_err(|e| Error::Codec(format!("record at LSN {lsn} does not decode: {e}")))?;
            ops.push(op);
        }
        self.cursor = cursor;
        self.next = Some(last + 1);
        Ok(Some(Prepared { bufs, spans, ops, bytes }))
    }
}

/// Applies the batches the prefetcher prepares, through the engine's `apply_records`, and takes the copy's
/// deep checkpoints.
struct Replayer<M: StateMachine> {
    shared: Arc<Shared<M>>,
    state: Arc<StateStore<M>>,
    since_checkpoint: u64,
    stats: Counters,
    /// The thread deleting the generations deep checkpoints released: unlinking a generation costs milliseconds
    /// on some file systems, which replay need not wait for.
    deleting: Option<std::thread::JoinHandle<Result<()>>>,
    /// Generations released by deep checkpoints and not deleted yet, oldest first: the deletion thread takes
    /// them one by one, including those a later checkpoint adds while it runs.
    doomed: Arc<Mutex<std::collections::VecDeque<PathBuf>>>,
    /// Buffers handed back to the prefetcher.
    recycled: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl<M: StateMachine> Replayer<M> {
    fn new(shared: Arc<Shared<M>>, state: Arc<StateStore<M>>) -> Self {
        Replayer {
            shared,
            state,
            since_checkpoint: 0,
            stats: Counters::default(),
            deleting: None,
            doomed: Arc::default(),
            recycled: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Waits for the deletion thread; a failed deletion fails the copy like any replay error.
    fn finish_deleting(&mut self) -> Result<()> {
        match self.deleting.take().map(std::thread::JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(Error::Shipping("the thread deleting replayed generations panicked".into())),
        }
    }

    fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        // One batch prepared ahead: reading and decoding overlap applying, memory stays at two batches.
        let (sender, batches) = std::sync::mpsc::sync_channel(1);
        let prefetcher =
            Prefetcher { shared: Arc::clone(&shared), cursor: None, next: None, recycled: Arc::clone(&self.recycled) };
        let prefetching =
            match std::thread::Builder::new().name("mailstore-prefetch".into()).spawn(move || prefetcher.run(sender)) {
                Ok(handle) => handle,
                Err(e) => {
                    shared.fail(format!("replay: starting the prefetch thread: {e}"));
                    return;
                }
            };
        while !shared.stopped() {
            if shared.paused() {
                shared.idle(Duration::from_millis(200));
                continue;
            }
            match batches.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(batch)) => {
                    if let Err(e) = self.apply(batch) {
                        shared.fail(format!("replay: {e}"));
                    }
                }
                Ok(Err(e)) => shared.fail(format!("replay: {e}")),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    shared.fail("replay: the prefetch thread stopped".to_string());
                }
            }
        }
        // Dropping the receiver releases a prefetcher blocked handing over a batch.
        drop(batches);
        if prefetching.join().is_err() {
            shared.fail("replay: the prefetch thread panicked".to_string());
        }
        if let Err(e) = self.finish_deleting() {
            shared.fail(format!("replay: {e}"));
        }
    }

    /// Applies one prepared batch, which must start right after what is replayed.
    fn apply(&mut self, batch: Prepared<M>) -> Result<()> {
        let Prepared { bufs, spans, ops, bytes } = batch;
        let records: Vec<RecordRef<'_>> = spans
            .iter()
            .map(|(lsn, epoch, index, range)| RecordRef {
                lsn: *lsn,
                epoch: *epoch,
                payload: &bufs[*index][range.clone()],
            })
            .collect();
        let Some(last) = records.last().map(|r| r.lsn) else { return Ok(()) };
        let from = self.shared.progress.lock().replayed_lsn + 1;
        if records[0].lsn != from {
            return Err(Error::corrupted(
                &self.shared.dir,
                0,
                format!("replay stands at LSN {} but the next batch starts at {}", from - 1, records[0].lsn),
            ));
        }
        // Rejections were rejections on the active too: the record is a no-op either way.
        let applied = self.state.apply_decoded(&records, Some(ops), &self.stats);
        drop(records);
        {
            // Keep a generation's worth of buffers for the prefetcher, not the batch's peak.
            let mut recycled = self.recycled.lock();
            recycled.extend(bufs);
            recycled.truncate(2);
        }
        applied?;
        {
            let mut p = self.shared.progress.lock();
            p.replayed_lsn = last;
            p.replayed_micros = now_micros();
        }
        self.shared.changed.notify_all();
        self.since_checkpoint += bytes as u64;
        if self.since_checkpoint >= self.shared.options.checkpoint_depth {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// A deep checkpoint: sync the state, record it, and delete generations nobody needs any more.
    fn checkpoint(&mut self) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        self.state.env.force_sync()?;
        let replayed = shared.progress.lock().replayed_lsn;
        {
            let mut ck = shared.checkpoint.lock();
            let current = ck.current();
            ck.write(Checkpoint { lsn: replayed, clean: false, ..current })?;
        }
        self.since_checkpoint = 0;
        let cutoff = now_micros().saturating_sub(shared.options.truncation_lag.as_micros() as u64);
        let doomed: Vec<(u64, PathBuf)> = {
            let mut p = shared.progress.lock();
            p.checkpoint_lsn = replayed;
            let newest = p.gens.keys().next_back().copied().unwrap_or(0);
            let doomed: Vec<(u64, PathBuf)> = p
                .gens
                .iter()
                .take_while(|(n, g)| {
                    **n < newest && g.last_lsn <= replayed && g.closed_micros.is_some_and(|c| c <= cutoff)
                })
                .map(|(n, g)| (*n, g.path.clone()))
                .collect();
            for (n, _) in &doomed {
                p.gens.remove(n);
            }
            doomed
        };
        self.doomed.lock().extend(doomed.into_iter().map(|(_, path)| path));
        // A deletion thread still at work takes the new generations too: replay never waits for deletions
        // (with fast replay, deep checkpoints come faster than ~100 unlinks of 3–25 ms each).
        if self.deleting.as_ref().is_some_and(std::thread::JoinHandle::is_finished) {
            self.finish_deleting()?;
        }
        if self.deleting.is_none() && !self.doomed.lock().is_empty() {
            // Already out of `gens`: nothing reads them any more. Deleted oldest first, so a crash or a stop
            // part-way leaves a contiguous run below the checkpoint: the copy lists it again when it opens and
            // deletes it at its next deep checkpoint; an activated copy's engine truncates it at its first
            // checkpoint. (A thread that found the queue empty just as a checkpoint added to it leaves those to
            // the next checkpoint.)
            // Stopping the copy (closing, activating) stops the deletions after the current file rather than
            // waiting for all of them.
            let logs = shared.dir.join(LOGS_DIR);
            let stopping = Arc::clone(&shared);
            let queue = Arc::clone(&self.doomed);
            let delete = move || -> Result<()> {
                while !stopping.stopped() {
                    let Some(path) = queue.lock().pop_front() else { break };
                    fs::remove_file(&path).at(&path)?;
                }
                crate::fsutil::sync_dir(&logs)
            };
            self.deleting = Some(
                std::thread::Builder::new()
                    .name("mailstore-copy-truncate".into())
                    .spawn(delete)
                    .map_err(|e| Error::Shipping(format!("starting the deletion thread: {e}")))?,
            );
        }
        Ok(())
    }
}

/// Serves snapshots of a passive copy's state (seeding from a passive).
struct PassiveSnapshots<M: StateMachine> {
    shared: std::sync::Weak<Shared<M>>,
    state: std::sync::Weak<StateStore<M>>,
}

impl<M: StateMachine> PassiveSnapshots<M> {
    fn shared(&self) -> Result<Arc<Shared<M>>> {
        self.shared.upgrade().ok_or_else(|| Error::Shipping("the seeding source copy is closed".into()))
    }
}

impl<M: StateMachine> LogSource for PassiveSnapshots<M> {
    fn hello(&self, _hello: Hello) -> Result<SourceInfo> {
        let shared = self.shared()?;
        let p = shared.progress.lock();
        Ok(SourceInfo {
            guid: shared.guid,
            epoch: p.known_epoch,
            position: crate::engine::LogPosition {
                generation: p.copied_generation,
                offset: p.copied_offset,
                lsn: p.replayed_lsn,
                epoch: p.known_epoch,
            },
            oldest_generation: p.gens.keys().next().copied().unwrap_or(0),
            role: SourceRole::Passive,
        })
    }

    fn read(&self, _request: ReadRequest) -> Result<Chunk> {
        Err(Error::Shipping("a passive copy serves snapshots, not log: copy the log from the active".into()))
    }

    fn headers(&self, from: u64) -> Result<Vec<Vec<u8>>> {
        super::source::generation_headers(&self.shared()?.dir.join(LOGS_DIR), from)
    }

    fn snapshot(&self, request: SnapshotRequest) -> Result<crate::replication::protocol::SnapshotPart> {
        let shared = self.shared()?;
        shared.progress.lock().seeding_others += 1;
        let state = self.state.upgrade().ok_or_else(|| Error::Shipping("the seeding source copy is closed".into()))?;
        let result = shared.snapshots.serve(request, |path| state.snapshot_to(path), &shared.dir);
        let mut p = shared.progress.lock();
        p.seeding_others = p.seeding_others.saturating_sub(1);
        result
    }

    fn goodbye(&self, _copy: CopyId) -> Result<()> {
        Ok(())
    }
}
