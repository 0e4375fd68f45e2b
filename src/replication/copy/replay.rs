//! Replay: the prefetcher reads, frames and decodes the next batch from the copy's log while the replayer
//! applies the current one, takes the deep checkpoints and deletes, on a thread of its own, what they release.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::shared::{Progress, Shared};
use crate::codec;
use crate::engine::state::StateStore;
use crate::engine::{Checkpoint, Counters, StateMachine};
use crate::error::{CodecError, Error, Result};
use crate::log::reader::{Batch, BatchReader, Extent};
use crate::log::truncate::{self, Truncator};
use crate::replication::ReplicationError;
use crate::types::{Guid, Lsn, now_micros};

/// A batch read from the copy's log and decoded ahead of its replay.
struct Prepared<M: StateMachine> {
    batch: Batch,
    /// Per record, its operation.
    ops: Vec<M::Op>,
}

/// Reads, checks the framing of and decodes the next batch while the replayer applies the current one, on its
/// own thread: replay's CPU then goes to `apply` and the state store (Exchange's replay also prefetches the
/// log). It only reads what the inspector has already passed and the replay limit allows; the replayer checks
/// that each batch starts where replay stands.
struct Prefetcher<M: StateMachine> {
    shared: Arc<Shared<M>>,
    reader: BatchReader,
    /// The next LSN to read, once the first batch is read.
    next: Option<Lsn>,
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
                    self.reader.reset();
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
        p.gens
            .values()
            .filter(|g| g.closed_micros.is_some_and(|c| c <= cutoff))
            .map(|g| g.extent.last_lsn)
            .max()
            .unwrap_or(0)
    }

    /// Reads the next batch; `Ok(None)` when there is nothing to replay yet.
    fn prepare(&mut self) -> Result<Option<Prepared<M>>> {
        let (from, limit, extents) = {
            let p = self.shared.progress.lock();
            let from = self.next.unwrap_or(p.replayed_lsn + 1);
            let limit = self.limit(&p).min(p.copied_lsn);
            if limit < from {
                return Ok(None);
            }
            let extents: Vec<Extent> = p
                .gens
                .values()
                .filter(|g| g.extent.last_lsn >= from && g.extent.header.first_lsn <= limit)
                .map(|g| g.extent.clone())
                .collect();
            (from, limit, extents)
        };
        let Some(batch) = self.reader.read(&extents, from, limit)? else { return Ok(None) };
        let records = batch.records();
        let mut ops = Vec::with_capacity(records.len());
        for record in &records {
            let (op, _) = codec::decode_record::<M::Op>(record.payload)
                .map_err(|e| CodecError::Record { lsn: record.lsn, source: Box::new(e) })?;
            ops.push(op);
        }
        self.next = records.last().map(|r| r.lsn + 1);
        drop(records);
        Ok(Some(Prepared { batch, ops }))
    }
}

/// Applies the batches the prefetcher prepares, through the engine's `apply_records`, and takes the copy's
/// deep checkpoints.
pub(super) struct Replayer<M: StateMachine> {
    shared: Arc<Shared<M>>,
    state: Arc<StateStore<M>>,
    since_checkpoint: u64,
    stats: Counters,
    /// Releases the generations deep checkpoints truncate, on its own thread: the engine's truncator.
    truncator: Option<Truncator>,
    /// The generations in `segments/` (listed at the first deep checkpoint).
    segments: Option<BTreeSet<u64>>,
    /// Buffers handed back to the prefetcher.
    recycled: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl<M: StateMachine> Replayer<M> {
    pub(super) fn new(shared: Arc<Shared<M>>, state: Arc<StateStore<M>>) -> Self {
        Replayer {
            shared,
            state,
            since_checkpoint: 0,
            stats: Counters::default(),
            truncator: None,
            segments: None,
            recycled: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub(super) fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        // One batch prepared ahead: reading and decoding overlap applying, memory stays at two batches.
        let (sender, batches) = std::sync::mpsc::sync_channel(1);
        let prefetcher = Prefetcher {
            shared: Arc::clone(&shared),
            reader: BatchReader::new(Arc::clone(&self.recycled)),
            next: None,
        };
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
            shared.fail(format!("replay: {}", ReplicationError::ThreadPanicked { thread: "prefetch" }));
        }
        // Stopping the copy (closing, activating) stops the deletions after the current file rather than
        // waiting for all of them; the thread is joined here, so none runs once the replayer has stopped.
        if let Some(truncator) = self.truncator.take() {
            truncator.stop();
        }
    }

    /// Applies one prepared batch, which must start right after what is replayed.
    fn apply(&mut self, batch: Prepared<M>) -> Result<()> {
        let Prepared { batch, ops } = batch;
        let bytes = batch.bytes();
        let records = batch.records();
        let Some(last) = records.last().map(|r| r.lsn) else { return Ok(()) };
        let from = self.shared.progress.lock().replayed_lsn + 1;
        if records[0].lsn != from {
            return Err(Error::corrupted(
                &self.shared.dir,
                0,
                format!("replay stands at LSN {} but the next batch starts at {}", from - 1, records[0].lsn),
            ));
        }
        let scopes: Vec<Option<Guid>> =
            if self.shared.notify.active() { ops.iter().map(M::scope).collect() } else { Vec::new() };
        // Rejections were rejections on the active too: the record is a no-op either way.
        let applied = self.state.apply_decoded(&records, Some(ops), &self.stats);
        drop(records);
        BatchReader::recycle(&self.recycled, batch.into_buffers());
        let outcomes = applied?;
        {
            let mut p = self.shared.progress.lock();
            p.replayed_lsn = last;
            p.replayed_micros = now_micros();
        }
        self.shared.changed.notify_all();
        let keys = scopes.iter().zip(&outcomes).filter(|(_, o)| o.is_ok()).filter_map(|(scope, _)| *scope);
        self.shared.notify.publish(last, keys);
        self.since_checkpoint += bytes as u64;
        if self.since_checkpoint >= self.shared.options.checkpoint_depth {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// A deep checkpoint: sync the state, record it, and delete generations nobody needs any more (older than
    /// the truncation lag), oldest first, off the replay thread: replay never waits for deletions (with fast
    /// replay, deep checkpoints come faster than ~100 unlinks of 3–25 ms each). The generations are out of
    /// `gens` before they are handed over, so nothing reads them any more; what a crash or a stop leaves of
    /// them is listed again when the copy opens and deleted at its next deep checkpoint (an activated copy's
    /// engine truncates it at its first checkpoint).
    fn checkpoint(&mut self) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let replayed = shared.progress.lock().replayed_lsn;
        {
            let mut ck = shared.checkpoint.lock();
            let current = ck.current();
            ck.write_after_sync(&self.state.env, Checkpoint { lsn: replayed, clean: false, ..current })?;
        }
        self.since_checkpoint = 0;
        let cutoff = now_micros().saturating_sub(shared.options.truncation_lag.as_micros() as u64);
        let doomed: Vec<(u64, PathBuf)> = {
            let mut p = shared.progress.lock();
            p.checkpoint_lsn = replayed;
            let newest = p.gens.keys().next_back().copied().unwrap_or(0);
            let doomed: Vec<u64> = p
                .gens
                .iter()
                .take_while(|(n, g)| {
                    **n < newest && g.extent.last_lsn <= replayed && g.closed_micros.is_some_and(|c| c <= cutoff)
                })
                .map(|(n, _)| *n)
                .collect();
            doomed
                .iter()
                .filter_map(|n| p.gens.remove(n))
                .map(|g| (g.extent.header.generation, g.extent.path))
                .collect()
        };
        // As on the active: generations whose attachments the (just checkpointed) state refers to become
        // segments, the rest and the segments nothing refers to any more are deleted.
        let referenced = self.state.referenced_generations()?;
        let attachments = &self.state.attachments;
        let segments = match &mut self.segments {
            Some(segments) => segments,
            None => self.segments.insert(attachments.list_segments()?.into_iter().map(|(g, _)| g).collect()),
        };
        let release = truncate::plan(doomed, segments, &referenced, attachments);
        if self.truncator.is_none() {
            let failing = Arc::clone(&shared);
            self.truncator = Some(Truncator::start(
                attachments.clone(),
                move |e| failing.fail(format!("replay: releasing replayed generations: {e}")),
                |_| {},
            )?);
        }
        if let Some(truncator) = &self.truncator {
            truncator.release(release);
        }
        Ok(())
    }
}
