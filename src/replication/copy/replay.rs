//! Replay: the prefetcher reads, frames and decodes the next batch from the copy's log while the replayer
//! applies the current one, takes the deep checkpoints and deletes, on a thread of its own, what they release.

use std::fs::{self, File};
use std::io::{Read, Seek};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::shared::{LocalGen, Progress, Shared};
use crate::codec;
use crate::engine::state::StateStore;
use crate::engine::{Checkpoint, Counters, LOGS_DIR, StateMachine};
use crate::error::{Error, IoContext, Result};
use crate::log::format::{FRAME_HEADER_LEN, Frame, HEADER_LEN, RecordSeal};
use crate::log::generation::RecordRef;
use crate::types::{Lsn, now_micros};

/// Records replayed per LMDB transaction.
const REPLAY_BATCH_RECORDS: usize = 32_768;
/// Payload bytes replayed per LMDB transaction.
const REPLAY_BATCH_BYTES: usize = 64 << 20;

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
pub(super) struct Replayer<M: StateMachine> {
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
    pub(super) fn new(shared: Arc<Shared<M>>, state: Arc<StateStore<M>>) -> Self {
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

    pub(super) fn run(mut self) {
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
