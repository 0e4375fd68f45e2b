//! The writer thread: group commit, rolls, checkpoints and truncation.
//!
//! Committers queue encoded operations and wait. The writer takes everything queued at once (a batch),
//! appends it to the log in one write, makes it durable with one `fdatasync` (in `Full` mode), applies it to
//! the state store in one LMDB transaction, and only then wakes the committers. A failure anywhere on that path
//! poisons the engine: the batch's committers and everyone after them get [`Error::Poisoned`].

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::codec;
use crate::engine::{
    Checkpoint, Committed, Counters, Durability, Inner, LogPosition, LogRetention, PinSet, StateMachine,
};
use crate::error::{Error, IoContext, Result};
use crate::log::format::FRAME_HEADER_LEN;
use crate::log::truncate::{self, Truncator};
use crate::log::writer::RollKind;
use crate::log::{LogWriter, MAX_RECORD_LEN, RecordRef};
use crate::types::{Guid, Lsn, now_micros};

/// Truncated generations circular logging keeps around for reuse.
const SPARE_GENERATIONS: usize = 2;
/// The most commits [`Writer::gather`] waits for, and the longest it waits.
const MAX_GATHER: usize = 4096;
const MAX_GATHER_WAIT: Duration = Duration::from_millis(2);

/// A one-shot answer to one committer.
///
/// Waking committers is the writer's largest cost at high concurrency (one futex wake each, measured at ~3.6 µs
/// on this project's VMs), and the writer cannot start the next batch until it is done. So the writer fills a
/// whole batch of slots quietly and wakes only the first committer; each woken committer wakes the next two of
/// its batch (a binary tree: slot `i` wakes `2i + 1` and `2i + 2`). The writer pays one wake per batch, and the
/// last committer of a batch of 64 is woken six wake-latencies after the first.
pub(crate) struct Slot<T> {
    state: Mutex<SlotState<T>>,
    ready: Condvar,
    /// Answered to a future (its task's waker), not to a thread waiting on `ready`.
    wakes_task: bool,
}

/// The slots of one answered batch, in wake-up tree order.
type Batch<T> = Arc<[Arc<Slot<T>>]>;

struct SlotState<T> {
    value: Option<T>,
    /// The task of a [`CommitFuture`] waiting for the answer.
    waker: Option<Waker>,
    /// The batch this slot was answered in and its index there, for passing the wake-up on.
    wake_on: Option<(Batch<T>, usize)>,
}

impl<T> Slot<T> {
    /// A slot for a committing thread (`wakes_task` false: it waits in [`Slot::wait`]) or for a future.
    pub(crate) fn new(wakes_task: bool) -> Self {
        Slot {
            state: Mutex::new(SlotState { value: None, waker: None, wake_on: None }),
            ready: Condvar::new(),
            wakes_task,
        }
    }

    /// Answers and wakes this committer.
    fn fill(&self, value: T) {
        let mut state = self.state.lock();
        state.value = Some(value);
        let waker = state.waker.take();
        drop(state);
        self.ready.notify_one();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The answer, or `Pending` with the task's waker kept for [`Slot::fill`].
    fn poll_answer(&self, cx: &mut Context<'_>) -> Poll<T> {
        let mut state = self.state.lock();
        match state.value.take() {
            Some(value) => Poll::Ready(value),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Answers without waking: the wake-up comes down the batch's tree (see [`answer_batch`]).
    fn fill_quiet(&self, value: T, batch: Batch<T>, index: usize) {
        let mut state = self.state.lock();
        state.value = Some(value);
        state.wake_on = Some((batch, index));
    }

    /// Waits for the answer, then passes the wake-up on to the next two slots of the batch.
    pub(crate) fn wait(&self) -> T {
        let mut state = self.state.lock();
        let value = loop {
            // The value is set under the lock before any wake-up is sent, and checked under it here.
            if let Some(value) = state.value.take() {
                break value;
            }
            self.ready.wait(&mut state);
        };
        let wake_on = state.wake_on.take(); // also breaks the slot → batch → slot reference cycle
        drop(state);
        if let Some((batch, i)) = wake_on {
            for child in [2 * i + 1, 2 * i + 2] {
                if let Some(slot) = batch.get(child) {
                    slot.ready.notify_one();
                }
            }
        }
        value
    }
}

/// Answers a batch of committers: wakes the tasks of futures one by one, fills the slots of waiting threads,
/// then wakes the root of their wake-up tree.
fn answer_batch<T>(answers: impl IntoIterator<Item = (Arc<Slot<T>>, T)>) {
    let (slots, values): (Vec<_>, Vec<_>) = answers
        .into_iter()
        .filter_map(|(slot, value)| {
            if !slot.wakes_task {
                return Some((slot, value));
            }
            slot.fill(value);
            None
        })
        .unzip();
    let slots: Batch<T> = slots.into();
    for (i, (slot, value)) in slots.iter().zip(values).enumerate() {
        slot.fill_quiet(value, Arc::clone(&slots), i);
    }
    if let Some(root) = slots.first() {
        root.ready.notify_one();
    }
}

/// The slot a commit's answer goes to.
pub(crate) type CommitSlot<O> = Arc<Slot<Result<Committed<O>>>>;

/// One queued commit.
pub(crate) struct Pending<O> {
    payload: Vec<u8>,
    /// Its [`StateMachine::scope`], for the subscriptions woken once it is applied.
    scope: Option<Guid>,
    slot: Option<Arc<Slot<Result<Committed<O>>>>>,
}

impl<O> Pending<O> {
    pub(crate) fn new(payload: Vec<u8>, scope: Option<Guid>, slot: Arc<Slot<Result<Committed<O>>>>) -> Self {
        Pending { payload, scope, slot: Some(slot) }
    }

    fn reply(mut self, result: Result<Committed<O>>) {
        if let Some(slot) = self.slot.take() {
            slot.fill(result);
        }
    }

    fn take_slot(&mut self) -> Option<Arc<Slot<Result<Committed<O>>>>> {
        self.slot.take()
    }
}

impl<O> Drop for Pending<O> {
    /// A commit dropped unanswered (the writer panicked) must not leave its committer waiting forever.
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.fill(Err(Error::Poisoned { reason: "the writer thread stopped before answering".into() }));
        }
    }
}

/// Requests other than commits.
pub(crate) enum Control {
    Checkpoint(Arc<Slot<Result<Lsn>>>),
    BackupCompleted(Lsn, Arc<Slot<Result<Lsn>>>),
    Roll(Arc<Slot<Result<Lsn>>>),
}

/// What committers hand the writer.
pub(crate) struct Queue<O> {
    pub(crate) pending: Vec<Pending<O>>,
    pub(crate) controls: Vec<Control>,
    pub(crate) shutdown: bool,
}

impl<O> Default for Queue<O> {
    fn default() -> Self {
        Queue { pending: Vec::new(), controls: Vec::new(), shutdown: false }
    }
}

/// One generation on disk, as the writer tracks it.
#[derive(Clone, Debug)]
pub(crate) struct GenInfo {
    pub(crate) number: u64,
    pub(crate) first_lsn: Lsn,
    pub(crate) path: PathBuf,
}

struct Writer<M: StateMachine> {
    inner: Arc<Inner<M>>,
    deleter: Truncator,
    log: LogWriter,
    /// Every generation in `logs/`, oldest first; the last is the one being written.
    gens: VecDeque<GenInfo>,
    /// The generations in `segments/`: out of the log, holding attachments the state refers to.
    segments: BTreeSet<u64>,
    epoch: u64,
    applied: Lsn,
    since_checkpoint: u64,
    /// The commit time the last batch carried: the next one never carries an earlier one, so a point-in-time
    /// restore's "the last record at or before T" is a prefix of the log even if the clock steps back.
    last_commit_micros: u64,
    /// Commits the last batch answered, and how long it took: what [`Writer::gather`] waits for.
    answered: usize,
    batch_time: Duration,
}

/// Starts the writer thread.
pub(crate) fn spawn<M: StateMachine>(
    inner: Arc<Inner<M>>,
    log: LogWriter,
    gens: VecDeque<GenInfo>,
    epoch: u64,
    applied: Lsn,
) -> Result<JoinHandle<()>> {
    let dir = inner.dir.clone();
    let deleter = {
        let (failing, counting) = (Arc::clone(&inner), Arc::clone(&inner));
        Truncator::start(
            inner.state.attachments.clone(),
            move |e| failing.poison(format!("releasing truncated generations failed: {e}")),
            move |n| Counters::add(&counting.stats.generations_deleted, n),
        )?
    };
    let segments = inner.state.attachments.list_segments()?.into_iter().map(|(g, _)| g).collect();
    let writer = Writer {
        inner,
        deleter,
        log,
        gens,
        segments,
        epoch,
        applied,
        since_checkpoint: 0,
        last_commit_micros: 0,
        answered: 0,
        batch_time: Duration::ZERO,
    };
    std::thread::Builder::new().name("mailstore-writer".into()).spawn(move || writer.run()).at(dir)
}

/// Poisons the engine if the writer thread unwinds (a panicking `apply`), and refuses what is queued, so no
/// committer waits for a writer that is gone.
struct PanicGuard<'a, M: StateMachine>(&'a Inner<M>);

impl<M: StateMachine> Drop for PanicGuard<'_, M> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poison("the writer thread panicked".into());
            let mut queue = self.0.queue.lock();
            queue.shutdown = true;
            // Dropping unanswered commits answers them with `Poisoned`; controls likewise.
            queue.pending.clear();
            for control in queue.controls.drain(..) {
                let (Control::Checkpoint(slot) | Control::BackupCompleted(_, slot) | Control::Roll(slot)) = control;
                slot.fill(Err(Error::Poisoned { reason: "the writer thread panicked".into() }));
            }
        }
    }
}

impl<M: StateMachine> Writer<M> {
    fn run(mut self) {
        let inner = Arc::clone(&self.inner);
        let _guard = PanicGuard(&inner);
        loop {
            let (mut batch, controls, shutdown) = {
                let mut queue = self.inner.queue.lock();
                // Counted before waiting: the committers just answered may already be back in the queue.
                let want = (self.answered + queue.pending.len()).min(MAX_GATHER);
                while queue.pending.is_empty() && queue.controls.is_empty() && !queue.shutdown {
                    self.inner.wake.wait(&mut queue);
                }
                self.gather(&mut queue, want);
                (std::mem::take(&mut queue.pending), std::mem::take(&mut queue.controls), queue.shutdown)
            };
            if !batch.is_empty() {
                let started = Instant::now();
                self.answered = batch.len();
                self.commit_batch(&mut batch);
                self.batch_time = started.elapsed();
            }
            for control in controls {
                self.control(control);
            }
            // Once `shutdown` is seen, committers are refused under the same lock, so nothing more can arrive.
            if shutdown {
                break;
            }
        }
        if self.inner.check_poison().is_ok()
            && let Err(e) = self.checkpoint(true, None)
        {
            self.inner.poison(format!("final checkpoint failed: {e}"));
        }
    }

    /// Lets the next batch gather the committers the last one answered (`Durability::Full` only). They commit
    /// again within microseconds, but the writer, free again at once, would take only those that queued meanwhile:
    /// with 32 committers the batches settled into two halves of 16, each paying a log `fdatasync` and an LMDB
    /// sync of its own. So while fewer than `want` commits are queued — the last batch's size plus what was queued
    /// when it was answered — the writer waits, at most a quarter of the last batch's time ([`MAX_GATHER_WAIT`] at
    /// most): a commit waits at most that much longer, for batches up to twice as large. A lone committer is not
    /// held up (`want` is 1), a writer with nothing queued waits for the first commit as before, and a control or a
    /// shutdown ends the wait at once.
    fn gather(&self, queue: &mut parking_lot::MutexGuard<'_, Queue<M::Output>>, want: usize) {
        if self.inner.options.durability != Durability::Full || self.batch_time.is_zero() {
            return;
        }
        let deadline = Instant::now() + (self.batch_time / 4).min(MAX_GATHER_WAIT);
        while queue.pending.len() < want && queue.controls.is_empty() && !queue.shutdown {
            if self.inner.wake.wait_until(queue, deadline).timed_out() {
                break;
            }
        }
    }

    fn commit_batch(&mut self, batch: &mut Vec<Pending<M::Output>>) {
        // The poison's own reason, not its message: a reason given once, not wrapped again.
        if let Err(Error::Poisoned { reason }) = self.inner.check_poison() {
            for p in batch.drain(..) {
                p.reply(Err(Error::Poisoned { reason: reason.clone() }));
            }
            return;
        }
        if let Err(Error::Fenced { epoch, current }) = self.inner.check_fence() {
            for p in batch.drain(..) {
                p.reply(Err(Error::Fenced { epoch, current }));
            }
            return;
        }
        match self.write_and_apply(batch) {
            Ok(mut outcomes) => {
                // Synchronous mode: acknowledge only once enough copies hold the batch (or the policy says what
                // else to do). The batch is durable and applied locally either way.
                let last = self.applied;
                if let Err(e) = self.inner.shipping.wait_replicated(last) {
                    let (copies, required) = match e {
                        Error::NotReplicated { copies, required, .. } => (copies, required),
                        _ => (0, 0),
                    };
                    for outcome in &mut outcomes {
                        if let Ok(committed) = outcome {
                            *outcome = Err(Error::NotReplicated { lsn: committed.lsn, copies, required });
                        }
                    }
                }
                self.publish_changes(batch, &outcomes);
                answer_batch(batch.iter_mut().filter_map(Pending::take_slot).zip(outcomes));
                batch.clear();
            }
            Err(e) => {
                let reason = format!("commit failed: {e}");
                self.inner.poison(reason.clone());
                for p in batch.drain(..) {
                    p.reply(Err(Error::Poisoned { reason: reason.clone() }));
                }
                return;
            }
        }
        if let Err(e) = self.maintain() {
            self.inner.poison(format!("log maintenance failed: {e}"));
        }
    }

    fn write_and_apply(&mut self, batch: &[Pending<M::Output>]) -> Result<Vec<Result<Committed<M::Output>>>> {
        let stats = &self.inner.stats;
        let first = self.log.next_lsn();
        let epoch = self.log.header().epoch;
        let before = self.log.offset();
        let commit_micros = now_micros().max(self.last_commit_micros);
        self.last_commit_micros = commit_micros;
        let last = self.log.append(commit_micros, batch.iter().map(|p| p.payload.as_slice()))?;
        let bytes = self.log.offset() - before;
        if self.inner.options.durability == Durability::Full {
            self.log.sync()?;
            Counters::add(&stats.log_syncs, 1);
        }
        self.publish_position(last);
        let generation = self.log.header().generation;
        let mut at = before;
        let records: Vec<RecordRef<'_>> = batch
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let offset = at + FRAME_HEADER_LEN as u64;
                at = offset + p.payload.len() as u64;
                RecordRef { lsn: first + i as u64, epoch, generation, offset, commit_micros, payload: &p.payload }
            })
            .collect();
        let outcomes = self.inner.state.apply_records(&records, stats)?;
        self.applied = last;
        self.since_checkpoint += bytes;
        self.inner.live.lock().applied_lsn = last;
        Counters::add(&stats.batches, 1);
        Counters::add(&stats.commits, batch.len() as u64);
        Counters::add(&stats.bytes_logged, bytes);
        let rejected = outcomes.iter().filter(|o| o.is_err()).count() as u64;
        Counters::add(&stats.rejected, rejected);
        Ok(outcomes
            .into_iter()
            .zip(first..)
            .map(|(outcome, lsn)| outcome.map(|output| Committed { lsn, output }))
            .collect())
    }

    fn control(&mut self, control: Control) {
        match control {
            // An explicit checkpoint answers once the generations it released are gone from disk; the truncator
            // answers, so that the writer never waits for deletions (which wait for long read transactions).
            Control::Checkpoint(slot) => {
                let result = self.guarded_checkpoint(None);
                self.deleter.then(move || slot.fill(result));
            }
            Control::Roll(slot) => {
                let result = self.inner.check_poison().and_then(|()| {
                    self.roll().map(|()| self.log.header().generation).map_err(|e| {
                        let reason = format!("rolling the log failed: {e}");
                        self.inner.poison(reason.clone());
                        Error::Poisoned { reason }
                    })
                });
                slot.fill(result);
            }
            Control::BackupCompleted(lsn, slot) => {
                if lsn > self.applied + 1 {
                    slot.fill(Err(Error::InvalidArgument(format!(
                        "backup LSN {lsn} is beyond the log head (last applied LSN {})",
                        self.applied
                    ))));
                } else {
                    let result = self.guarded_checkpoint(Some(lsn));
                    self.deleter.then(move || slot.fill(result));
                }
            }
        }
    }

    fn guarded_checkpoint(&mut self, backup: Option<Lsn>) -> Result<Lsn> {
        self.inner.check_poison()?;
        self.checkpoint(false, backup).map_err(|e| {
            let reason = format!("checkpoint failed: {e}");
            self.inner.poison(reason.clone());
            Error::Poisoned { reason }
        })
    }

    /// Rolls a full generation and takes a checkpoint once enough log has accumulated.
    fn maintain(&mut self) -> Result<()> {
        if self.log.is_full() {
            self.roll()?;
        }
        if self.since_checkpoint >= self.inner.options.checkpoint_depth {
            self.checkpoint(false, None)?;
        }
        Ok(())
    }

    /// The lowest LSN someone still needs: above the checkpoint, every pin, and (if configured) the backup.
    fn keep_from(&self, pins: &std::collections::BTreeMap<u64, Lsn>) -> Lsn {
        let checkpoint = self.inner.live.lock().checkpoint;
        let mut keep = checkpoint.lsn + 1;
        if let Some(pinned) = PinSet::min(pins) {
            keep = keep.min(pinned);
        }
        if self.inner.policy.retention == LogRetention::UntilBackup {
            keep = keep.min(checkpoint.backup_lsn.max(1));
        }
        keep
    }

    /// How many of the oldest generations hold only records below `keep`.
    fn deletable(&self, keep: Lsn) -> usize {
        let mut n = 0;
        while n + 1 < self.gens.len() && self.gens[n + 1].first_lsn <= keep {
            n += 1;
        }
        n
    }

    fn roll(&mut self) -> Result<()> {
        let stats = &self.inner.stats;
        let pins = self.inner.pins.pins.lock();
        // A generation holding attachments the state refers to is never reused: it becomes a segment.
        let recycle = if self.inner.policy.circular_logging
            && self.deletable(self.keep_from(&pins)) > 0
            && self
                .gens
                .front()
                .is_some_and(|g| self.inner.state.referenced_generations().is_ok_and(|r| !r.contains(&g.number)))
        {
            self.gens.pop_front()
        } else {
            None
        };
        let kind = self.log.roll(self.epoch, recycle.as_ref().map(|g| g.path.as_path()))?;
        let header = *self.log.header();
        self.gens.push_back(GenInfo {
            number: header.generation,
            first_lsn: header.first_lsn,
            path: self.log.path().to_path_buf(),
        });
        match kind {
            RollKind::Created => Counters::add(&stats.generations_created, 1),
            RollKind::Recycled => Counters::add(&stats.generations_recycled, 1),
        }
        self.publish_extent();
        drop(pins);
        self.publish_position(self.applied);
        Ok(())
    }

    /// Wakes the subscriptions the applied (not rejected) operations of `batch` concern: the batch is durable
    /// and readable.
    fn publish_changes(&self, batch: &[Pending<M::Output>], outcomes: &[Result<Committed<M::Output>>]) {
        let hub = &self.inner.notify;
        if !hub.active() {
            return;
        }
        let changed = || batch.iter().zip(outcomes).filter(|(_, o)| o.is_ok());
        let Some(last) = changed().map(|(_, o)| o.as_ref().map_or(0, |c| c.lsn)).max() else { return };
        hub.publish(last, changed().filter_map(|(p, _)| p.scope));
    }

    /// Publishes the durable end of the log to shipping sources.
    fn publish_position(&self, lsn: Lsn) {
        let header = self.log.header();
        self.inner.shipping.publish(LogPosition {
            generation: header.generation,
            offset: self.log.offset(),
            lsn,
            epoch: header.epoch,
        });
    }

    /// Makes the state durable up to `applied`, records it in the checkpoint file, and truncates the log.
    fn checkpoint(&mut self, clean: bool, backup: Option<Lsn>) -> Result<Lsn> {
        // Write-ahead rule: the log must be durable before the state it produced is.
        if self.inner.options.durability == Durability::Relaxed || clean {
            self.log.sync()?;
        }
        {
            let mut file = self.inner.checkpoint.lock();
            let current = file.current();
            file.write_after_sync(
                &self.inner.state.env,
                Checkpoint {
                    lsn: self.applied,
                    epoch: self.epoch,
                    backup_lsn: backup.map_or(current.backup_lsn, |b| b.max(current.backup_lsn)),
                    clean,
                    ..current
                },
            )?;
            self.inner.live.lock().checkpoint = file.current();
        }
        self.since_checkpoint = 0;
        Counters::add(&self.inner.stats.checkpoints, 1);
        self.truncate()?;
        if !clean {
            self.inner.compaction.nudge();
        }
        Ok(self.applied)
    }

    /// Drops the oldest generations nobody needs from the log and hands them to the truncator: those holding
    /// attachments the state refers to become segments, the others are deleted (with circular logging, up to a
    /// few of the newest of them are kept as spares to recycle), and so are segments the state no longer refers
    /// to. The state consulted is the one just checkpointed, so it is durable.
    fn truncate(&mut self) -> Result<()> {
        let referenced = self.inner.state.referenced_generations()?;
        let pins = self.inner.pins.pins.lock();
        let deletable = self.deletable(self.keep_from(&pins));
        let mut leaving: Vec<GenInfo> = (0..deletable).filter_map(|_| self.gens.pop_front()).collect();
        if self.inner.policy.circular_logging {
            // Spares stay at the front of the log, so only a run of unreferenced newest ones can be kept.
            let reusable = leaving.iter().rev().take_while(|g| !referenced.contains(&g.number)).count();
            for g in leaving.drain(leaving.len() - reusable.min(SPARE_GENERATIONS)..).rev() {
                self.gens.push_front(g);
            }
        }
        self.publish_extent();
        drop(pins);
        let leaving = leaving.into_iter().map(|g| (g.number, g.path)).collect();
        let attachments = &self.inner.state.attachments;
        self.deleter.release(truncate::plan(leaving, &mut self.segments, &referenced, attachments));
        Ok(())
    }

    /// Publishes the oldest and newest generation. Called with the pin lock held (see `Engine::pin_log`).
    fn publish_extent(&self) {
        let mut live = self.inner.live.lock();
        if let Some(oldest) = self.gens.front() {
            live.oldest_generation = oldest.number;
            live.oldest_lsn = oldest.first_lsn;
        }
        if let Some(newest) = self.gens.back() {
            live.head_generation = newest.number;
        }
    }
}

impl<M: StateMachine> Inner<M> {
    /// Validates, encodes and queues `op` for the writer; the slot is answered once it is durable and applied
    /// (`wakes_task`: by waking a task's waker, for [`Engine::commit_async`]).
    pub(super) fn enqueue(&self, op: M::Op, wakes_task: bool) -> Result<CommitSlot<M::Output>> {
        self.check_poison()?;
        self.check_fence()?;
        self.state.machine.validate(&op).map_err(Into::into)?;
        let payload = codec::encode_record(&op, M::attachment(&op))?;
        if payload.len() > MAX_RECORD_LEN {
            return Err(Error::RecordTooLarge { len: payload.len(), max: MAX_RECORD_LEN });
        }
        let slot = Arc::new(Slot::new(wakes_task));
        {
            let mut queue = self.queue.lock();
            if queue.shutdown {
                return Err(Error::Dismounted);
            }
            queue.pending.push(Pending::new(payload, M::scope(&op), Arc::clone(&slot)));
        }
        self.wake.notify_one();
        Ok(slot)
    }
}

/// The future of [`Engine::commit_async`]: the answer [`Engine::commit`] would give.
#[must_use = "the operation is queued either way; the future only carries its answer"]
pub struct CommitFuture<O>(pub(crate) std::result::Result<CommitSlot<O>, Option<Error>>);

impl<O> std::future::Future for CommitFuture<O> {
    type Output = Result<Committed<O>>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        match &mut self.0 {
            Ok(slot) => slot.poll_answer(cx),
            Err(e) => std::task::Poll::Ready(Err(e.take().unwrap_or(Error::Dismounted))),
        }
    }
}

impl<O> std::fmt::Debug for CommitFuture<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitFuture").finish_non_exhaustive()
    }
}
