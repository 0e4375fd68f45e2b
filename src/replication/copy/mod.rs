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

mod admin;
mod copier;
mod options;
mod replay;
mod seed;
mod shared;
mod snapshots;
mod status;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use self::admin::{UNSYNCED_FILE, boot_id};
use self::copier::Copier;
use self::replay::Replayer;
use self::shared::{LocalGen, Progress, Shared, Tail, read_log};
use self::status::status_of;
use crate::engine::open::OpenDir;
use crate::engine::state::StateStore;
use crate::engine::{Checkpoint, Durability, Engine, LOGS_DIR, Options, StateMachine, read_fence};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::DirLock;
use crate::log::LogWriter;
use crate::replication::ReplicationError;
use crate::replication::protocol::{CopyId, LogSource};
use crate::types::{Guid, Lsn};

pub use self::admin::is_passive_copy;
pub(crate) use self::admin::{CopyFile, RESYNCING_FILE, read_copy_file, write_copy_file};
pub use self::options::{CopyOptions, MAX_LAG, StateSync};
pub use self::seed::SeedProgress;
pub use self::status::{CopyState, CopyStatus, MountDial, NoSource, offline_copy_status};
pub(crate) use crate::engine::COPY_FILE;

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
                return Err(ReplicationError::CopyFailed { reason }.into());
            }
        }
        let durability = match options.state_sync {
            StateSync::EveryBatch => Durability::Full,
            StateSync::AtCheckpoint => Durability::Relaxed,
        };
        let OpenDir { state, meta, checkpoint, .. } = OpenDir::<M>::open(&dir, durability)?;
        // Whatever an earlier run of this boot left unsynced is in the page cache: make it durable now.
        state.env.force_sync()?;
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
        let guid = meta.guid;
        let replayed = meta.applied_lsn;
        let logs = dir.join(LOGS_DIR);
        let (gens, tail) = open_log(&logs, guid, replayed)?;
        let known_epoch =
            gens.values().map(|g| g.extent.header.epoch).fold(meta.epoch.max(read_fence(&dir)?.unwrap_or(0)), u64::max);
        let copied_lsn = tail.as_ref().map_or(replayed, |t| t.log.next_lsn() - 1).max(replayed);
        if replayed > copied_lsn {
            return Err(Error::StateAheadOfLog { applied: replayed, log_end: copied_lsn });
        }
        let checkpoint_lsn = checkpoint.current().lsn;
        let progress = Progress {
            copied_lsn,
            copied_generation: tail.as_ref().map_or(0, Tail::generation),
            copied_offset: tail.as_ref().map_or(0, |t| t.log.offset()),
            replayed_lsn: replayed,
            known_epoch,
            gens,
            checkpoint_lsn,
            ..Progress::of(CopyState::Initializing, &copy)
        };
        let snapshots =
            super::snapshot::SnapshotServer::new(&dir, super::snapshot::MAX_SNAPSHOTS, super::snapshot::SNAPSHOT_IDLE)?;
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
            snapshots,
            notify: Arc::default(),
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

    /// Generations missing on this copy compared with what its source last reported; `Err` when the mount dial
    /// does not allow activating with that many.
    pub fn check_activation(&self, dial: MountDial) -> Result<u64> {
        let missing = self.status().copy_queue_length;
        if missing > dial.allowed() {
            return Err(ReplicationError::ActivationRefused { missing, allowed: dial.allowed(), dial }.into());
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
    ///
    /// The copy's subscriptions ([`subscribe`](Self::subscribe)) carry over to the engine, and are woken once it
    /// is mounted; if the activation fails they end with [`Error::Dismounted`].
    pub fn activate(self, dial: MountDial, min_epoch: u64, options: Options) -> Result<Engine<M>> {
        let notify = Arc::clone(&self.shared.notify);
        let activated = self.activate_with(dial, min_epoch, options, Arc::clone(&notify));
        if activated.is_err() {
            notify.close(None);
        }
        activated
    }

    fn activate_with(
        mut self,
        dial: MountDial,
        min_epoch: u64,
        options: Options,
        notify: Arc<crate::engine::notify::Hub>,
    ) -> Result<Engine<M>> {
        // A copier blocked in a request to a dead or idle source is not waited for: once `stop` is set and the
        // write gate taken, it never writes again (see `Shared::write_gate`).
        self.stop_replayer_and_fence_copier();
        if self.shared.progress.lock().gens.is_empty() {
            return Err(ReplicationError::CopyFailed {
                reason: "the copy holds no log yet (seeded, but it has not copied a generation): it cannot start \
                         the next one"
                    .into(),
            }
            .into());
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
            return Err(ReplicationError::StateInUse.into());
        }
        let engine = Engine::mount_with(&dir, options.create_if_missing(false), Some(epoch), notify)?;
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
        // Closed or activated: subscribers go to the engine that mounts it (`Error::Dismounted`).
        self.shared.notify.close(None);
    }

    /// Subscribes to the changes this copy replays ([`Engine::subscribe`](crate::Engine::subscribe) on an
    /// active): woken once a replayed batch is readable through [`read`](Self::read). Closing or activating the
    /// copy ends the subscription with [`Error::Dismounted`]; subscribe again on the activated engine, and read
    /// its state first (a state token tells what changed in between).
    pub fn subscribe(&self, scope: crate::engine::Scope) -> crate::engine::Subscription {
        self.shared.notify.subscribe(scope)
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
        // The state is durable before the marker that says it may not be goes.
        self.state.env.force_sync()?;
        let marker = shared.dir.join(UNSYNCED_FILE);
        if marker.exists() {
            fs::remove_file(&marker).at(&marker)?;
            crate::fsutil::sync_dir(&shared.dir)?;
        }
        let replayed = shared.progress.lock().replayed_lsn;
        let mut ck = shared.checkpoint.lock();
        let current = ck.current();
        ck.write_after_sync(&self.state.env, Checkpoint { lsn: replayed, clean: true, ..current })?;
        let mut p = shared.progress.lock();
        shared.save_admin(&p)?;
        p.state = CopyState::Dismounted;
        Ok(())
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

/// The copy's own log, opened for appending after a torn chunk write is discarded (the copier asks for it
/// again); see [`read_log`].
fn open_log(logs: &Path, guid: Guid, replayed: Lsn) -> Result<(BTreeMap<u64, LocalGen>, Option<Tail>)> {
    let Some((gens, walk)) = read_log(logs, guid, replayed)? else { return Ok((BTreeMap::new(), None)) };
    walk.discard_tail()?;
    let log = LogWriter::resume(logs, walk.last(), 0)?;
    Ok((gens, Some(Tail { log, closed: false })))
}
