//! The state the copy's threads share: its progress (what is copied, inspected, replayed; admin state), the
//! local log's generations and tail, and the `Shared` handle with its stop flag and write gate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::admin::{CopyFile, write_copy_file};
use super::options::CopyOptions;
use super::status::CopyState;
use crate::engine::StateMachine;
use crate::engine::checkpoint::CheckpointFile;
use crate::error::Result;
use crate::log::LogWriter;
use crate::log::generation;
use crate::log::reader::Extent;
use crate::log::verify::{self, Walk};
use crate::replication::protocol::{CopyId, LogSource, SourceInfo};
use crate::types::{Guid, Lsn};

/// One generation of the copy's log: what replay reads of it (its end and last LSN as inspected so far), and when
/// it was closed (the creation time of the next generation).
#[derive(Clone, Debug)]
pub(super) struct LocalGen {
    pub(super) extent: Extent,
    pub(super) closed_micros: Option<u64>,
}

/// The copy's own log, judged by the engine's walk from the generation holding the first record replay still
/// needs: every generation present, those from there on scanned (their chain, epochs and records checked). `None`
/// for a freshly seeded copy, which has no log yet.
pub(super) fn read_log(logs: &Path, guid: Guid, replayed: Lsn) -> Result<Option<(BTreeMap<u64, LocalGen>, Walk)>> {
    if generation::list(logs)?.generations.is_empty() {
        return Ok(None);
    }
    let walk = verify::walk(logs, guid, Some(replayed + 1), |_| Ok(()))?;
    let mut gens = BTreeMap::new();
    let mut headers = walk.present.iter().peekable();
    while let Some((header, path)) = headers.next() {
        let next = headers.peek().map(|(next, _)| next);
        let scan = walk.scans.iter().find(|s| s.header.generation == header.generation);
        gens.insert(
            header.generation,
            LocalGen {
                extent: Extent {
                    header: *header,
                    path: path.clone(),
                    end_offset: scan.map_or(0, |s| s.end_offset),
                    last_lsn: scan.map_or_else(|| next.map_or(header.first_lsn, |n| n.first_lsn) - 1, |s| s.last_lsn),
                },
                closed_micros: next.map(|n| n.created_micros),
            },
        );
    }
    Ok(Some((gens, walk)))
}

/// The end of the copy's log, as the copier appends to it.
pub(super) struct Tail {
    /// The appender of the copy's last generation: the engine's own, with its fail points.
    pub(super) log: LogWriter,
    /// The source said this generation is complete.
    pub(super) closed: bool,
}

impl Tail {
    /// The generation being appended to.
    pub(super) fn generation(&self) -> u64 {
        self.log.header().generation
    }
}

#[derive(Debug)]
pub(super) struct Progress {
    pub(super) state: CopyState,
    pub(super) reason: Option<String>,
    pub(super) suspended: bool,
    pub(super) failed: bool,
    /// A write or sync of the copy's own log failed: the copier has stopped for good (a failed `fsync` is never
    /// retried) and only closing and reopening the copy, which judges its log from disk, brings it back.
    pub(super) poisoned: Option<String>,
    pub(super) copied_lsn: Lsn,
    pub(super) copied_micros: u64,
    pub(super) copied_generation: u64,
    pub(super) copied_offset: u64,
    pub(super) replayed_lsn: Lsn,
    pub(super) replayed_micros: u64,
    pub(super) source: Option<SourceInfo>,
    pub(super) source_micros: u64,
    pub(super) known_epoch: u64,
    pub(super) gens: BTreeMap<u64, LocalGen>,
    pub(super) play_down: bool,
    pub(super) checkpoint_lsn: Lsn,
    pub(super) seeding_others: u32,
    /// The copier is between deciding to copy and having written what it got.
    pub(super) copier_busy: bool,
}

impl Progress {
    /// A copy in `state` as its copy file describes it (admin state, last known source), before anything about
    /// its log and state is known.
    pub(super) fn of(state: CopyState, copy: &CopyFile) -> Self {
        Progress {
            state,
            reason: copy.failed.clone(),
            suspended: copy.suspended,
            failed: copy.failed.is_some(),
            poisoned: None,
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

pub(super) struct Shared<M: StateMachine> {
    pub(super) dir: PathBuf,
    pub(super) id: CopyId,
    pub(super) guid: Guid,
    pub(super) options: CopyOptions,
    pub(super) source: Arc<dyn LogSource>,
    pub(super) checkpoint: Mutex<CheckpointFile>,
    pub(super) progress: Mutex<Progress>,
    pub(super) changed: Condvar,
    pub(super) stop: AtomicBool,
    /// Held by the copier whenever it writes (log, copy file, fence), and checked against `stop` under it: once
    /// activation has set `stop` and taken the gate, the copier never writes again, even if it is still blocked
    /// in a request and is left to finish on its own.
    pub(super) write_gate: Mutex<()>,
    pub(super) snapshots: crate::replication::snapshot::SnapshotServer,
    /// Change subscriptions, woken after each replayed batch.
    pub(super) notify: Arc<crate::engine::notify::Hub>,
    pub(super) _machine: std::marker::PhantomData<fn() -> M>,
}

impl<M: StateMachine> Shared<M> {
    pub(super) fn fail(&self, reason: String) {
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

    /// Fails the copy after a write or sync of its own log failed (see [`Progress::poisoned`]).
    pub(super) fn poison(&self, reason: String) {
        let mut p = self.progress.lock();
        p.failed = true;
        p.reason = Some(format!("{reason}; close the copy and open it again"));
        p.poisoned = Some(reason);
        drop(p);
        self.changed.notify_all();
    }

    /// Writes the copy file from the progress (admin state and the source's last known position).
    pub(super) fn save_admin(&self, p: &Progress) -> Result<()> {
        // A poisoned copy is failed until it is reopened, not after: that is not written down.
        let failed = if p.failed && p.poisoned.is_none() { p.reason.clone() } else { None };
        write_copy_file(&self.dir, &CopyFile { id: self.id, suspended: p.suspended, failed, source: p.source })
    }

    pub(super) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Suspended or failed: neither copying nor replaying.
    pub(super) fn paused(&self) -> bool {
        let p = self.progress.lock();
        p.suspended || p.failed
    }

    /// Waits for a change or `timeout`.
    pub(super) fn idle(&self, timeout: Duration) {
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
    pub(super) fn keep_lsn(&self, p: &Progress) -> Lsn {
        let next = p.copied_lsn + 1;
        let from =
            if self.options.truncation_lag.is_zero() { p.gens.values().next_back() } else { p.gens.values().next() };
        from.map_or(next, |g| g.extent.header.first_lsn.min(next))
    }
}
