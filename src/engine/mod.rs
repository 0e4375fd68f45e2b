//! One mailbox database: a write-ahead log, an LMDB state store, a checkpoint, one writer thread.
//!
//! [`Engine::mount`] opens (or creates) a database directory, recovers it from its log, and starts the writer.
//! [`Engine::commit`] logs one operation and returns once it is durable (per [`Durability`]) and applied.
//! [`Engine::read`] runs a closure over a consistent snapshot. [`Engine::dismount`] drains the writer, writes a
//! final checkpoint and marks the shutdown clean.
//!
//! A database directory holds:
//!
//! ```text
//! DIR/lock         advisory lock held while mounted
//! DIR/checkpoint   two-slot checkpoint file (see `checkpoint`)
//! DIR/state/       the LMDB environment
//! DIR/logs/        generations 0000000000000001.log, 0000000000000002.log, ...
//! DIR/segments/    generations the log no longer needs whose attachments the state still refers to
//! ```

mod attachments;
pub(crate) mod checkpoint;
mod compactor;
mod inspect;
pub(crate) mod lmdb_file;
mod machine;
mod maintenance;
pub(crate) mod notify;
pub(crate) mod open;
mod recovery;
mod ship;
pub(crate) mod state;
pub(crate) mod table;
mod writer;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use heed::RoTxn;
use parking_lot::{Condvar, Mutex};

pub(crate) use attachments::SEGMENTS_DIR;
pub use attachments::{Attachments, Place};
pub(crate) use checkpoint::{CHECKPOINT_FILE, Checkpoint};
pub(crate) use inspect::inspection_lock;
pub use inspect::{
    CheckReport, GenerationInfo, OfflineStatus, check, check_as, list_generations, machine_name, offline_status,
    with_state,
};
pub use machine::{ApplyContext, ApplyError, SegmentUsage, StateMachine};
pub use maintenance::{
    CompactReport, RepairReport, SpaceReport, compact, rebuild_checkpoint, repair_state_from, space,
};
pub use notify::{Changed, Scope, Subscription};
pub use recovery::{RecoveryReport, TailTruncation};
pub(crate) use ship::{COPY_FILE, read_fence, write_fence};
pub use ship::{LogPosition, OnSyncTimeout, SyncPolicy};
pub(crate) use state::STATE_DIR;

use crate::error::{Error, IoContext, Result};
use crate::fsutil::DirLock;

use crate::types::{Guid, Lsn};
use checkpoint::CheckpointFile;
pub(crate) use ship::Shipping;
use state::StateStore;
pub use writer::CommitFuture;
use writer::{Control, Queue, Slot};

/// Directory of the log generations inside a database directory.
pub(crate) const LOGS_DIR: &str = "logs";

/// When a commit counts as durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// A commit that returned `Ok` survives a process crash **and** a power loss or OS crash: its log record
    /// was made durable with `fdatasync` before the commit was applied and acknowledged, and the state store
    /// runs with flags that never corrupt it on power loss (LMDB `NO_META_SYNC`).
    #[default]
    Full,
    /// A commit that returned `Ok` survives a process crash (`kill -9`): its record is in the operating
    /// system's page cache before it is acknowledged. It does **not** survive a power loss or OS crash: the
    /// log is synced only at checkpoints and dismount, the state store runs with LMDB `NO_SYNC`, and after a
    /// power loss recent commits may be lost and the state store may be damaged beyond recovery (restore or
    /// reseed it). Use it for data that can be rebuilt, or with a synchronous passive copy.
    Relaxed,
}

/// How recovery treats damage at the end of the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Any damage, even a torn last record, stops the mount with an error ([`Error::TornTail`]); nothing is
    /// changed on disk.
    AbsoluteConsistency,
    /// A torn or damaged tail of the last generation (invalid bytes with no valid record after them, what a
    /// crash during an append leaves) is discarded and the discard synced; the records before it are kept.
    /// Damage anywhere else is still an error.
    #[default]
    TolerateTailCorruption,
}

/// Which generations the log keeps after the checkpoint has passed them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogRetention {
    /// Delete a generation once it lies wholly below the checkpoint and below every [`LogPin`].
    #[default]
    Truncate,
    /// Also keep every generation that the last completed backup has not copied (Exchange's behaviour with
    /// circular logging off): see [`Engine::backup_completed`]. Until a backup completes, nothing is deleted.
    UntilBackup,
}

/// Which generations a database keeps, stored in the database itself so that every mount honours it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogPolicy {
    /// Which generations are kept after the checkpoint has passed them (default [`LogRetention::Truncate`]).
    pub retention: LogRetention,
    /// Reuse the files of truncated generations for new ones instead of creating files (default off; Exchange's
    /// "circular logging"). Cannot be combined with [`LogRetention::UntilBackup`].
    pub circular_logging: bool,
}

/// How to mount a database.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// Commit durability (default [`Durability::Full`]).
    pub durability: Durability,
    /// Treatment of a damaged log tail at mount (default [`RecoveryMode::TolerateTailCorruption`]).
    pub recovery: RecoveryMode,
    /// Size at which a generation is closed and the next one started (default 16 MiB). A batch is never split,
    /// so a generation may exceed this by one batch. Generations keep the message bodies they hold (as
    /// `segments/`), so this is also the granularity at which deleted mail's space is given back.
    pub log_target_size: u64,
    /// Bytes of log after which the writer takes a checkpoint (default 20 MiB): this bounds recovery time and
    /// decides when generations can be truncated.
    pub checkpoint_depth: u64,
    /// The log policy to set. `None` (the default) keeps the policy stored in the database (a new database
    /// gets [`LogPolicy::default`]); `Some` stores the new policy durably at mount. Because the policy lives in
    /// the database, mounting with default options can never delete generations a backup still needs.
    pub log_policy: Option<LogPolicy>,
    /// Create the database when the directory holds none (default true).
    pub create_if_missing: bool,
    /// Synchronous replication (default `None`: commits never wait for passive copies). See [`SyncPolicy`];
    /// it can also be changed while mounted with [`Engine::set_sync_policy`].
    pub sync: Option<SyncPolicy>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Full,
            recovery: RecoveryMode::TolerateTailCorruption,
            log_target_size: 16 << 20,
            checkpoint_depth: 20 << 20,
            log_policy: None,
            create_if_missing: true,
            sync: None,
        }
    }
}

impl Options {
    /// Sets [`Options::durability`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }
    /// Sets [`Options::recovery`].
    pub fn recovery(mut self, recovery: RecoveryMode) -> Self {
        self.recovery = recovery;
        self
    }
    /// Sets [`Options::log_target_size`].
    pub fn log_target_size(mut self, bytes: u64) -> Self {
        self.log_target_size = bytes;
        self
    }
    /// Sets [`Options::checkpoint_depth`].
    pub fn checkpoint_depth(mut self, bytes: u64) -> Self {
        self.checkpoint_depth = bytes;
        self
    }
    /// Sets [`Options::log_policy`].
    pub fn log_policy(mut self, policy: LogPolicy) -> Self {
        self.log_policy = Some(policy);
        self
    }
    /// Sets the retention of [`Options::log_policy`] (starting from the default policy if none is set).
    pub fn retention(mut self, retention: LogRetention) -> Self {
        self.log_policy.get_or_insert_default().retention = retention;
        self
    }
    /// Sets circular logging in [`Options::log_policy`] (starting from the default policy if none is set).
    pub fn circular_logging(mut self, on: bool) -> Self {
        self.log_policy.get_or_insert_default().circular_logging = on;
        self
    }
    /// Sets [`Options::create_if_missing`].
    pub fn create_if_missing(mut self, on: bool) -> Self {
        self.create_if_missing = on;
        self
    }

    /// Sets [`Options::sync`].
    pub fn synchronous(mut self, policy: SyncPolicy) -> Self {
        self.sync = Some(policy);
        self
    }

    fn validate(&self) -> Result<()> {
        if self.log_target_size < 4096 || self.log_target_size > (1 << 30) {
            return Err(Error::InvalidArgument(format!(
                "log_target_size {} is outside 4 KiB ..= 1 GiB",
                self.log_target_size
            )));
        }
        if self.checkpoint_depth == 0 {
            return Err(Error::InvalidArgument("checkpoint_depth must be positive".into()));
        }
        if self.log_policy.is_some_and(|p| p.circular_logging && p.retention == LogRetention::UntilBackup) {
            return Err(Error::InvalidArgument(
                "circular logging truncates at the checkpoint; it cannot keep generations until a backup".into(),
            ));
        }
        Ok(())
    }
}

/// A committed operation.
#[derive(Debug)]
pub struct Committed<O> {
    /// The LSN of its log record.
    pub lsn: Lsn,
    /// What `apply` returned.
    pub output: O,
}

/// A snapshot of a mounted engine's position.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStatus {
    /// The database's GUID.
    pub guid: Guid,
    /// Current epoch.
    pub epoch: u64,
    /// Durability mode in force.
    pub durability: Durability,
    /// Last LSN applied to the state store.
    pub applied_lsn: Lsn,
    /// Last checkpoint LSN.
    pub checkpoint_lsn: Lsn,
    /// LSN below which a backup holds the log (0: none).
    pub backup_lsn: Lsn,
    /// The current (newest) generation.
    pub head_generation: u64,
    /// The oldest generation still on disk.
    pub oldest_generation: u64,
    /// The oldest LSN still in the log.
    pub oldest_lsn: Lsn,
    /// The log policy in force.
    pub log_policy: LogPolicy,
    /// Whether the previous mount ended with a clean dismount.
    pub last_shutdown_clean: bool,
    /// Why the engine is poisoned, if it is.
    pub poisoned: Option<String>,
    /// The durable end of the log: what a passive copy can be shipped.
    pub position: LogPosition,
    /// The newer epoch that fences this copy, if one is known: it refuses writes.
    pub fenced_by: Option<u64>,
    /// The synchronous-replication policy in force.
    pub sync: Option<SyncPolicy>,
    /// Synchronous mode timed out and degraded to local durability ([`OnSyncTimeout::Degrade`]).
    pub sync_degraded: bool,
    /// Why the last compaction failed, if one did since mount (it is retried after the next checkpoint).
    pub compaction_failure: Option<String>,
}

/// Counters since mount.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// Operations committed (applied or rejected).
    pub commits: u64,
    /// Of those, operations `apply` rejected (logged as no-ops).
    pub rejected: u64,
    /// Group-commit batches written.
    pub batches: u64,
    /// `fdatasync` calls on the log that made batches durable.
    pub log_syncs: u64,
    /// LMDB write transactions committed.
    pub state_commits: u64,
    /// Times the LMDB map was grown.
    pub map_resizes: u64,
    /// Checkpoints taken.
    pub checkpoints: u64,
    /// Generations created as new files.
    pub generations_created: u64,
    /// Generations created by recycling an old file.
    pub generations_recycled: u64,
    /// Generation files deleted.
    pub generations_deleted: u64,
    /// Bytes of record frames appended.
    pub bytes_logged: u64,
    /// Compaction operations committed (see [`StateMachine::compaction`]).
    pub compactions: u64,
    /// Compactions that could not be built or committed (see [`EngineStatus::compaction_failure`]).
    pub compaction_failures: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    commits: AtomicU64,
    rejected: AtomicU64,
    batches: AtomicU64,
    log_syncs: AtomicU64,
    state_commits: AtomicU64,
    map_resizes: AtomicU64,
    checkpoints: AtomicU64,
    generations_created: AtomicU64,
    generations_recycled: AtomicU64,
    generations_deleted: AtomicU64,
    bytes_logged: AtomicU64,
    compactions: AtomicU64,
    compaction_failures: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> EngineStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        EngineStats {
            commits: g(&self.commits),
            rejected: g(&self.rejected),
            batches: g(&self.batches),
            log_syncs: g(&self.log_syncs),
            state_commits: g(&self.state_commits),
            map_resizes: g(&self.map_resizes),
            checkpoints: g(&self.checkpoints),
            generations_created: g(&self.generations_created),
            generations_recycled: g(&self.generations_recycled),
            generations_deleted: g(&self.generations_deleted),
            bytes_logged: g(&self.bytes_logged),
            compactions: g(&self.compactions),
            compaction_failures: g(&self.compaction_failures),
        }
    }
}

/// Positions the writer publishes for [`Engine::status`].
#[derive(Clone, Debug)]
pub(crate) struct Live {
    epoch: u64,
    applied_lsn: Lsn,
    checkpoint: Checkpoint,
    head_generation: u64,
    oldest_generation: u64,
    oldest_lsn: Lsn,
}

/// The set of log pins of one engine.
#[derive(Default)]
pub(crate) struct PinSet {
    pins: Mutex<BTreeMap<u64, Lsn>>,
    next_id: AtomicU64,
}

impl PinSet {
    /// The lowest pinned LSN, if any pin exists. The caller holds the lock.
    fn min(pins: &BTreeMap<u64, Lsn>) -> Option<Lsn> {
        pins.values().copied().min()
    }
}

/// Keeps every log record from an LSN on from being truncated, for as long as it lives (a backup in progress,
/// a passive copy that has not yet copied them). Pins live in memory: they do not survive a dismount.
pub struct LogPin {
    set: Arc<PinSet>,
    id: u64,
}

impl LogPin {
    /// The lowest LSN this pin keeps.
    pub fn lsn(&self) -> Lsn {
        self.set.pins.lock().get(&self.id).copied().unwrap_or(0)
    }

    /// Moves the pin forward: records below `lsn` are no longer needed by its holder. Moving it backwards is
    /// ignored (the records may already be gone).
    pub fn advance(&self, lsn: Lsn) {
        if let Some(pinned) = self.set.pins.lock().get_mut(&self.id) {
            *pinned = (*pinned).max(lsn);
        }
    }
}

impl Drop for LogPin {
    fn drop(&mut self) {
        self.set.pins.lock().remove(&self.id);
    }
}

impl std::fmt::Debug for LogPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogPin").field("lsn", &self.lsn()).finish()
    }
}

pub(crate) struct Inner<M: StateMachine> {
    dir: PathBuf,
    options: Options,
    policy: LogPolicy,
    guid: Guid,
    state: StateStore<M>,
    queue: Mutex<Queue<M::Output>>,
    wake: Condvar,
    poison: Mutex<Option<String>>,
    live: Mutex<Live>,
    checkpoint: Mutex<CheckpointFile>,
    pins: Arc<PinSet>,
    stats: Counters,
    pub(crate) shipping: Arc<Shipping>,
    /// Wakes the compaction thread after checkpoints.
    compaction: Arc<compactor::Signal>,
    compaction_failure: Mutex<Option<String>>,
    /// Change subscriptions, woken after each applied batch.
    pub(crate) notify: Arc<notify::Hub>,
}

impl<M: StateMachine> Inner<M> {
    pub(crate) fn poison(&self, reason: String) {
        let mut p = self.poison.lock();
        if p.is_none() {
            *p = Some(reason.clone());
            drop(p);
            self.notify.close(Some(reason));
        }
    }

    fn check_poison(&self) -> Result<()> {
        match &*self.poison.lock() {
            Some(reason) => Err(Error::Poisoned { reason: reason.clone() }),
            None => Ok(()),
        }
    }

    /// [`Engine::commit`]: also how the engine's own compaction commits.
    pub(crate) fn commit(&self, op: M::Op) -> Result<Committed<M::Output>> {
        self.enqueue(op, false)?.wait()
    }

    /// Refuses writes once a newer epoch is known to exist.
    pub(crate) fn check_fence(&self) -> Result<()> {
        // One atomic load on the commit path; the epoch is only looked up once a fence exists.
        let Some(epoch) = self.shipping.fence() else { return Ok(()) };
        let current = self.live.lock().epoch;
        if epoch > current { Err(Error::Fenced { epoch, current }) } else { Ok(()) }
    }
}

/// One mounted database.
///
/// `Engine` is `Sync`: share it by reference (or in an `Arc`) between the threads that commit and read. All
/// writes go through one writer thread that batches concurrent commits into one log write and one `fdatasync`
/// (group commit).
pub struct Engine<M: StateMachine> {
    // Field order matters: fields drop in declaration order, so the environment (inside `inner`, whose last
    // reference this is once the writer has exited) is closed before the directory lock is released, and a new
    // mount can never open the environment while this one still has it open.
    compactor: Option<compactor::Compactor>,
    writer: Option<JoinHandle<()>>,
    pub(crate) inner: Arc<Inner<M>>,
    report: RecoveryReport,
    _lock: DirLock,
}

impl<M: StateMachine> Engine<M> {
    /// Mounts the database in `dir`, creating it when the directory holds none and
    /// [`Options::create_if_missing`] is set, and recovers it from its log.
    ///
    /// While mounted, the engine holds an exclusive lock on `dir/lock`: a second mount, from this or another
    /// process, fails with [`Error::AlreadyMounted`]. After a crash, mounting replays every record the state
    /// store has not applied, through the same `apply` used at commit time; what happened is in
    /// [`Engine::recovery_report`].
    pub fn mount(dir: impl AsRef<Path>, options: Options) -> Result<Self> {
        Self::mount_with(dir, options, None, Arc::default())
    }

    /// Mounts like [`Engine::mount`]; with `activate = Some(min_epoch)` the log continues in a new generation
    /// of a new epoch (at least `min_epoch`, above every epoch this copy has seen or been fenced by): how a
    /// passive copy becomes the active one ([`crate::replication::PassiveCopy::activate`]).
    /// [`Engine::mount`], or (`activate`: the least epoch) the mount of an activated passive copy; `notify`: the
    /// subscriptions to serve (an activated copy's carry over, and are woken once it is mounted).
    pub(crate) fn mount_with(
        dir: impl AsRef<Path>,
        options: Options,
        activate: Option<u64>,
        notify: Arc<notify::Hub>,
    ) -> Result<Self> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        if !dir.exists() {
            if !options.create_if_missing {
                return Err(Error::NotADatabase { path: dir, reason: "directory does not exist".into() });
            }
            fs::create_dir_all(&dir).at(&dir)?;
        }
        let lock = DirLock::exclusive(&dir)?;
        crate::backup::refuse_unfinished_restore(&dir)?;
        if activate.is_none() && dir.join(COPY_FILE).is_file() {
            return Err(Error::NotADatabase {
                path: dir,
                reason: "it is a passive copy: activate it (PassiveCopy::activate, `mailstore activate`)".into(),
            });
        }
        let fence = ship::read_fence(&dir)?;
        let recovered = recovery::mount(&dir, &options, activate.map(|min| min.max(fence.unwrap_or(0) + 1)))?;
        let recovery::Mounted { state, checkpoint, log, present, report, epoch, policy } = recovered;
        if let Some(newer) = fence
            && newer > epoch
        {
            return Err(Error::Fenced { epoch: newer, current: epoch });
        }
        let position = LogPosition {
            generation: log.header().generation,
            offset: log.offset(),
            lsn: report.applied_lsn_after,
            epoch,
        };
        let shipping = Arc::new(Shipping::new(&dir, position, options.sync)?);
        let current = checkpoint.current();
        let oldest = present.front().map(|g| (g.number, g.first_lsn)).unwrap_or((1, 1));
        let live = Live {
            epoch,
            applied_lsn: report.applied_lsn_after,
            checkpoint: current,
            head_generation: log.header().generation,
            oldest_generation: oldest.0,
            oldest_lsn: oldest.1,
        };
        let inner = Arc::new(Inner {
            dir,
            guid: current.guid,
            options,
            policy,
            state,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            poison: Mutex::new(None),
            live: Mutex::new(live),
            checkpoint: Mutex::new(checkpoint),
            pins: Arc::new(PinSet::default()),
            stats: Counters::default(),
            shipping,
            compaction: Arc::default(),
            compaction_failure: Mutex::new(None),
            notify,
        });
        let writer = writer::spawn(Arc::clone(&inner), log, present, epoch, report.applied_lsn_after)?;
        let mut engine = Engine { compactor: None, writer: Some(writer), inner, report, _lock: lock };
        engine.compactor = Some(compactor::Compactor::start(Arc::clone(&engine.inner))?);
        // Whatever the activation replayed is readable now.
        engine.inner.notify.publish_everyone(engine.report.applied_lsn_after);
        Ok(engine)
    }

    /// What mounting found and did: replayed records, a truncated tail, the previous shutdown state.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The database directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The database's GUID.
    pub fn guid(&self) -> Guid {
        self.inner.guid
    }

    /// The options the engine was mounted with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// Logs `op`, makes it durable according to [`Options::durability`], applies it, and returns what `apply`
    /// returned.
    ///
    /// When this returns `Ok`, the operation is applied and visible to every later [`Engine::read`], and it
    /// survives what the durability mode promises (see [`Durability`]). When `apply` rejects the operation,
    /// the error is returned and nothing of the operation is applied (its record stays in the log as a no-op).
    /// After a write or sync failure the engine is poisoned and this returns [`Error::Poisoned`].
    pub fn commit(&self, op: M::Op) -> Result<Committed<M::Output>> {
        self.inner.commit(op)
    }

    /// [`commit`](Self::commit) for async code: validates, encodes and queues `op` now, and returns a future
    /// resolved with the same answer once the operation is durable and applied. No thread waits for it: the
    /// writer wakes the task. It needs no particular executor. Dropping the future does not withdraw the
    /// operation (it is queued already); only its answer is lost.
    pub fn commit_async(&self, op: M::Op) -> CommitFuture<M::Output> {
        CommitFuture(self.inner.enqueue(op, true).map_err(Some))
    }

    /// Subscribes to changes of this database: all of them ([`Scope::Database`]), or those under one key of
    /// the state machine's ([`Scope::Key`]; the mailbox model's keys are mailbox GUIDs). See [`Subscription`]
    /// for what a wake-up promises.
    pub fn subscribe(&self, scope: Scope) -> Subscription {
        self.inner.notify.subscribe(scope)
    }

    /// Runs `f` over a consistent read-only snapshot of the state.
    ///
    /// Keep `f` short: a live snapshot keeps LMDB from reusing pages, and the writer waits for running
    /// snapshots before it grows the map.
    pub fn read<T>(&self, f: impl FnOnce(&M, &RoTxn<'_>) -> Result<T>) -> Result<T> {
        self.inner.check_poison()?;
        self.inner.state.read(f)
    }

    /// Takes a checkpoint now: syncs the state store, records the applied LSN in the checkpoint file, and
    /// truncates the generations nobody needs any more. Returns the checkpoint LSN.
    pub fn checkpoint(&self) -> Result<Lsn> {
        self.control(Control::Checkpoint)
    }

    /// Compacts now what the background compaction would compact over time: commits the state machine's
    /// compaction operations ([`StateMachine::compaction`]; the mailbox model relocates the live bodies of
    /// segments less than half referenced) until it has none left, then takes a checkpoint, whose truncation
    /// deletes the segments nothing refers to any more. Returns how many operations it committed. Like every
    /// change they are logged, so passive copies replay them. Deliveries go on meanwhile.
    pub fn compact_now(&self) -> Result<u64> {
        self.inner.check_poison()?;
        let committed = compactor::until_done(&self.inner)?;
        self.checkpoint()?;
        Ok(committed)
    }

    /// Records that a backup has copied the state and every log record below `lsn`; with
    /// [`LogRetention::UntilBackup`] the generations wholly below it may now be truncated. The record is made
    /// durable in the checkpoint file before this returns.
    pub fn backup_completed(&self, lsn: Lsn) -> Result<Lsn> {
        self.control(|slot| Control::BackupCompleted(lsn, slot))
    }

    /// Closes the current generation now and starts the next one; returns the new generation's number. File-mode
    /// passive copies receive only closed generations: rolling ships everything committed so far to them.
    pub fn roll_log(&self) -> Result<u64> {
        self.control(Control::Roll)
    }

    fn control(&self, make: impl FnOnce(Arc<Slot<Result<Lsn>>>) -> Control) -> Result<Lsn> {
        self.inner.check_poison()?;
        let slot = Arc::new(Slot::new(false));
        {
            let mut queue = self.inner.queue.lock();
            if queue.shutdown {
                return Err(Error::Dismounted);
            }
            queue.controls.push(make(Arc::clone(&slot)));
        }
        self.inner.wake.notify_one();
        slot.wait()
    }

    /// Keeps every log record from `lsn` on until the returned pin is dropped or advanced.
    ///
    /// Fails with [`Error::InvalidArgument`] when records at `lsn` were already truncated.
    pub fn pin_log(&self, lsn: Lsn) -> Result<LogPin> {
        let set = &self.inner.pins;
        let mut pins = set.pins.lock();
        // The writer truncates while holding the pin lock and publishes `oldest_lsn` under it, so a pin taken
        // here can never lose a race with a truncation.
        let oldest = self.inner.live.lock().oldest_lsn;
        if lsn < oldest {
            return Err(Error::InvalidArgument(format!(
                "LSN {lsn} is no longer in the log; the oldest record kept is LSN {oldest}"
            )));
        }
        let id = set.next_id.fetch_add(1, Ordering::Relaxed);
        pins.insert(id, lsn);
        Ok(LogPin { set: Arc::clone(set), id })
    }

    /// The engine's current position.
    pub fn status(&self) -> EngineStatus {
        let live = self.inner.live.lock().clone();
        let (sync, sync_degraded) = self.inner.shipping.policy();
        EngineStatus {
            guid: self.inner.guid,
            epoch: live.epoch,
            durability: self.inner.options.durability,
            applied_lsn: live.applied_lsn,
            checkpoint_lsn: live.checkpoint.lsn,
            backup_lsn: live.checkpoint.backup_lsn,
            head_generation: live.head_generation,
            oldest_generation: live.oldest_generation,
            oldest_lsn: live.oldest_lsn,
            log_policy: self.inner.policy,
            last_shutdown_clean: self.report.was_clean,
            poisoned: self.inner.poison.lock().clone(),
            position: self.inner.shipping.position(),
            fenced_by: self.inner.shipping.fence().filter(|&f| f > live.epoch),
            sync,
            sync_degraded,
            compaction_failure: self.inner.compaction_failure.lock().clone(),
        }
    }

    /// The durable end of the log.
    pub fn log_position(&self) -> LogPosition {
        self.inner.shipping.position()
    }

    /// Records durably (in `DIR/fence`) that epoch `epoch` of this database exists elsewhere. If it is newer
    /// than this engine's epoch, every later commit fails with [`Error::Fenced`], and so does every later mount:
    /// an old active that learns of a newer one stops writing. Commits already acknowledged stay acknowledged.
    pub fn fence(&self, epoch: u64) -> Result<()> {
        self.inner.shipping.set_fence(epoch)
    }

    /// Changes the synchronous-replication policy ([`Options::sync`]); `None` stops waiting for copies.
    pub fn set_sync_policy(&self, policy: Option<SyncPolicy>) {
        self.inner.shipping.set_policy(policy);
    }

    /// Writes a consistent copy of the state store to `path` (one compacted LMDB file) and syncs it. Returns an
    /// LSN the copy has applied at least; its own metadata holds the exact one. This is only the state: a copy of
    /// a database whose machine keeps attachments (the mailbox model's bodies) also needs the generations the
    /// state refers to, which seeding sends along with it (`SnapshotPart`). Used to seed passive copies; the
    /// engine keeps taking commits meanwhile.
    pub fn snapshot_state(&self, path: &Path) -> Result<Lsn> {
        self.inner.check_poison()?;
        self.inner.state.snapshot_to(path)
    }

    /// Counters since mount.
    pub fn stats(&self) -> EngineStats {
        self.inner.stats.snapshot()
    }

    /// Stops taking work, lets the writer finish what is queued, takes a final checkpoint, records a clean
    /// shutdown, and releases the directory.
    ///
    /// A poisoned engine dismounts without the final checkpoint and stays marked dirty: the next mount
    /// recovers from the log. Returns the poison reason as [`Error::Poisoned`] in that case.
    pub fn dismount(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        // The compaction commits through the writer: it stops first (after the operation it is committing).
        if let Some(mut compactor) = self.compactor.take() {
            compactor.stop();
        }
        let Some(writer) = self.writer.take() else { return Ok(()) };
        self.inner.queue.lock().shutdown = true;
        self.inner.wake.notify_all();
        if writer.join().is_err() {
            self.inner.poison("the writer thread panicked".into());
        }
        self.inner.notify.close(None);
        self.inner.check_poison()
    }
}

impl<M: StateMachine> Drop for Engine<M> {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl<M: StateMachine> std::fmt::Debug for Engine<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("dir", &self.inner.dir).field("guid", &self.inner.guid).finish()
    }
}
