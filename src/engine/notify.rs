//! Change notification: a [`Subscription`] is woken once a change it covers is durable and readable.
//!
//! The writer (on an active) and the replayer (on a passive copy) publish after each batch they apply, with the
//! batch's last LSN and the [`StateMachine::scope`](crate::StateMachine::scope) of every operation that changed
//! something. A subscription keeps at most one pending notification — "changed since you last looked, now at
//! LSN N" — so a subscriber that never looks costs one slot, never a queue, and never slows the writer, which
//! only sets that slot and wakes the waiter. With no subscription at all publishing is one atomic load.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::types::{Guid, Lsn};

/// What a [`Subscription`] covers.
///
/// There is no folder scope: to watch one folder (IMAP IDLE on a selected folder), subscribe to its mailbox and
/// compare the folder's HIGHESTMODSEQ with the one last seen after each wake-up — one lookup per wake-up, where a
/// folder key would make every operation name each folder it touches (a move two, a folder deletion a subtree).
/// The wake-up carries the LSN at which the change became readable; the state token to hand a client (the
/// mailbox's or folder's MODSEQ) is read after it. Subscribe before reading the token, and no change is missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every change to the database.
    Database,
    /// Changes to one key of the state machine's: for the mailbox model, a mailbox GUID
    /// ([`StateMachine::scope`](crate::StateMachine::scope)).
    Key(Guid),
}

/// Why subscriptions end.
#[derive(Clone, Debug)]
enum Closed {
    Dismounted,
    Poisoned(String),
}

impl Closed {
    fn error(&self) -> Error {
        match self {
            Closed::Dismounted => Error::Dismounted,
            Closed::Poisoned(reason) => Error::Poisoned { reason: reason.clone() },
        }
    }
}

#[derive(Default)]
struct SubState {
    changed: Option<Lsn>,
    closed: Option<Closed>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Sub {
    state: Mutex<SubState>,
    ready: Condvar,
}

impl Sub {
    fn signal(&self, update: impl FnOnce(&mut SubState)) {
        let mut state = self.state.lock();
        update(&mut state);
        let waker = state.waker.take();
        drop(state);
        self.ready.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

#[derive(Default)]
struct Subscribers {
    next: u64,
    all: HashMap<u64, Arc<Sub>>,
    keyed: HashMap<Guid, HashMap<u64, Arc<Sub>>>,
    closed: Option<Closed>,
}

/// The subscriptions of one engine or copy.
#[derive(Default)]
pub(crate) struct Hub {
    count: AtomicUsize,
    subs: Mutex<Subscribers>,
}

impl Hub {
    pub(crate) fn subscribe(self: &Arc<Self>, scope: Scope) -> Subscription {
        let sub = Arc::new(Sub::default());
        let mut subs = self.subs.lock();
        let id = subs.next;
        subs.next += 1;
        if let Some(closed) = subs.closed.clone() {
            sub.state.lock().closed = Some(closed);
        }
        match scope {
            Scope::Database => subs.all.insert(id, Arc::clone(&sub)),
            Scope::Key(key) => subs.keyed.entry(key).or_default().insert(id, Arc::clone(&sub)),
        };
        self.count.fetch_add(1, Ordering::Release);
        Subscription { hub: Arc::clone(self), sub, id, scope }
    }

    /// Whether anyone listens: the publisher gathers scopes only then.
    pub(crate) fn active(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    /// Wakes the subscriptions of the database and of `keys`: everything up to `lsn` is durable and readable.
    pub(crate) fn publish(&self, lsn: Lsn, keys: impl Iterator<Item = Guid>) {
        if !self.active() {
            return;
        }
        let mut keys: Vec<Guid> = keys.collect();
        keys.sort_unstable();
        keys.dedup();
        let subs = self.subs.lock();
        let mark = |s: &mut SubState| s.changed = Some(s.changed.map_or(lsn, |c| c.max(lsn)));
        for sub in subs.all.values() {
            sub.signal(mark);
        }
        for key in &keys {
            for sub in subs.keyed.get(key).into_iter().flat_map(HashMap::values) {
                sub.signal(mark);
            }
        }
    }

    /// Wakes every subscription, whatever its scope: everything up to `lsn` is readable (after an activation).
    pub(crate) fn publish_everyone(&self, lsn: Lsn) {
        if !self.active() {
            return;
        }
        let subs = self.subs.lock();
        for sub in subs.all.values().chain(subs.keyed.values().flat_map(HashMap::values)) {
            sub.signal(|s| s.changed = Some(s.changed.map_or(lsn, |c| c.max(lsn))));
        }
    }

    /// Ends every subscription, present and future: dismounted (`None`) or poisoned.
    pub(crate) fn close(&self, poisoned: Option<String>) {
        let closed = poisoned.map_or(Closed::Dismounted, Closed::Poisoned);
        let mut subs = self.subs.lock();
        subs.closed.get_or_insert(closed.clone());
        for sub in subs.all.values().chain(subs.keyed.values().flat_map(HashMap::values)) {
            sub.signal(|s| {
                s.closed.get_or_insert(closed.clone());
            });
        }
    }

    fn remove(&self, id: u64, scope: Scope) {
        let mut subs = self.subs.lock();
        let removed = match scope {
            Scope::Database => subs.all.remove(&id).is_some(),
            Scope::Key(key) => {
                let Some(map) = subs.keyed.get_mut(&key) else { return };
                let removed = map.remove(&id).is_some();
                if map.is_empty() {
                    subs.keyed.remove(&key);
                }
                removed
            }
        };
        if removed {
            self.count.fetch_sub(1, Ordering::Release);
        }
    }
}

/// A subscription to changes of a database ([`Engine::subscribe`](crate::Engine::subscribe),
/// [`PassiveCopy::subscribe`](crate::replication::PassiveCopy::subscribe)).
///
/// It is woken after a change it covers is **durable and readable**: a read started after the wake-up sees it.
/// Notifications coalesce: however many changes happen between two looks, the next look reports one, with the
/// newest LSN; what changed is for the reader to find (for the mailbox model, `MailStore::changes` since the
/// subscriber's state token). A change made before the subscription was taken is not reported: take the
/// subscription first, then read the state, then wait. Dismounting (or closing a copy, as an activation does)
/// ends it with [`Error::Dismounted`]; a poisoned engine with [`Error::Poisoned`] — a change reported before
/// that is still reported first. Dropping it unsubscribes.
pub struct Subscription {
    hub: Arc<Hub>,
    sub: Arc<Sub>,
    id: u64,
    scope: Scope,
}

impl Subscription {
    /// What it covers.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The newest LSN changed since the last look, without waiting (`None`: nothing changed).
    pub fn try_changed(&mut self) -> Result<Option<Lsn>> {
        let mut state = self.sub.state.lock();
        Self::take(&mut state)
    }

    /// Blocks until a change it covers (returns its newest LSN) or `timeout` (returns `None`).
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<Lsn>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.sub.state.lock();
        loop {
            if let Some(lsn) = Self::take(&mut state)? {
                return Ok(Some(lsn));
            }
            if self.sub.ready.wait_until(&mut state, deadline).timed_out() {
                return Self::take(&mut state);
            }
        }
    }

    /// A future resolved with the newest LSN at the next change it covers (at once if one is pending). It needs
    /// no particular executor: it registers the task's waker, which the writer (or replayer) wakes.
    pub fn changed(&mut self) -> Changed<'_> {
        Changed { subscription: self }
    }

    fn take(state: &mut SubState) -> Result<Option<Lsn>> {
        if let Some(lsn) = state.changed.take() {
            return Ok(Some(lsn));
        }
        match &state.closed {
            Some(closed) => Err(closed.error()),
            None => Ok(None),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.remove(self.id, self.scope);
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("scope", &self.scope).finish()
    }
}

/// The future of [`Subscription::changed`].
#[derive(Debug)]
pub struct Changed<'s> {
    subscription: &'s mut Subscription,
}

impl Future for Changed<'_> {
    type Output = Result<Lsn>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Lsn>> {
        let mut state = self.subscription.sub.state.lock();
        match Subscription::take(&mut state) {
            Ok(Some(lsn)) => Poll::Ready(Ok(lsn)),
            Err(e) => Poll::Ready(Err(e)),
            Ok(None) => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
