//! The compaction thread: after each checkpoint it asks the state machine for compaction operations
//! ([`StateMachine::compaction`]) and commits them like any committer, so they are logged, shipped and replayed
//! by copies like every other change. The mailbox model relocates the referenced bodies of mostly dead segments,
//! which then go at a later checkpoint (ARCHITECTURE.md, "Message bodies live in the log").

use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use crate::engine::{Counters, Inner, StateMachine};
use crate::error::{Error, IoContext, Result};

/// Operations one round commits at most: a machine whose compaction keeps finding work (bodies that cannot
/// move) cannot keep the thread busy for longer than this until the next checkpoint.
const ROUND_OPERATIONS: usize = 64;

/// How the writer wakes the compaction thread, and how a dismount stops it.
#[derive(Default)]
pub(crate) struct Signal {
    state: Mutex<Wake>,
    changed: Condvar,
}

#[derive(Default)]
struct Wake {
    pending: bool,
    stop: bool,
}

impl Signal {
    /// A checkpoint was taken: there may be something to compact.
    pub(crate) fn nudge(&self) {
        self.state.lock().pending = true;
        self.changed.notify_one();
    }

    fn stop(&self) {
        self.state.lock().stop = true;
        self.changed.notify_one();
    }

    /// Waits for a nudge; false once stopped.
    fn wait(&self) -> bool {
        let mut state = self.state.lock();
        while !state.pending && !state.stop {
            self.changed.wait(&mut state);
        }
        state.pending = false;
        !state.stop
    }

    fn stopped(&self) -> bool {
        self.state.lock().stop
    }
}

/// The running thread; [`Compactor::stop`] joins it.
pub(crate) struct Compactor {
    signal: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
}

impl Compactor {
    pub(crate) fn start<M: StateMachine>(inner: Arc<Inner<M>>) -> Result<Self> {
        let signal = Arc::clone(&inner.compaction);
        let dir = inner.dir.clone();
        let thread = std::thread::Builder::new()
            .name("mailstore-compact".into())
            .spawn(move || {
                while inner.compaction.wait() {
                    round(&inner);
                }
            })
            .at(dir)?;
        Ok(Compactor { signal, thread: Some(thread) })
    }

    /// Stops the thread after the operation it is committing, and joins it.
    pub(crate) fn stop(&mut self) {
        self.signal.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Commits compaction operations until there is none, the engine stops taking commits, or the round is over.
fn round<M: StateMachine>(inner: &Inner<M>) {
    for _ in 0..ROUND_OPERATIONS {
        if inner.compaction.stopped() {
            return;
        }
        match step(inner) {
            Ok(true) => {}
            Ok(false) | Err(Error::Dismounted | Error::Poisoned { .. } | Error::Fenced { .. }) => return,
            Err(e) => return failed(inner, e),
        }
    }
}

/// Commits compaction operations until the state machine has none left, and returns how many it committed:
/// [`Engine::compact_now`](crate::Engine::compact_now). Unlike a background round it has no bound and reports
/// the first failure to its caller.
pub(crate) fn until_done<M: StateMachine>(inner: &Inner<M>) -> Result<u64> {
    let mut committed = 0;
    while step(inner)? {
        committed += 1;
    }
    Ok(committed)
}

/// Asks the state machine for one compaction operation over the generations out of the log and commits it;
/// false when there is none.
fn step<M: StateMachine>(inner: &Inner<M>) -> Result<bool> {
    let below = inner.live.lock().oldest_generation;
    let Some(op) = inner.state.read(|m, txn| m.compaction(txn, below))? else { return Ok(false) };
    inner.commit(op)?;
    Counters::add(&inner.stats.compactions, 1);
    Ok(true)
}

/// A compaction that could not be built or committed (damaged bytes it read, say): counted, and reported in
/// [`EngineStatus::compaction_failure`](crate::engine::EngineStatus); retried after the next checkpoint.
fn failed<M: StateMachine>(inner: &Inner<M>, e: Error) {
    Counters::add(&inner.stats.compaction_failures, 1);
    *inner.compaction_failure.lock() = Some(e.to_string());
}
