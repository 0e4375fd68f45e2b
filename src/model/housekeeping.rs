//! The library's housekeeping schedule: Recoverable Items purges past their retention and change-log trimming,
//! run for every mailbox of a database on a schedule the embedder configures ([`HousekeepingOptions`]).
//!
//! Each mailbox's housekeeping is one logged operation ([`MailOp::Housekeep`]) that also records when it ran
//! (`MailboxInfo::housekept`). A mailbox is due once `interval` has passed since then; a cycle takes the due
//! mailboxes oldest first, at most `budget` of them. Because the time is part of the state, a schedule resumes
//! after a crash, a remount or a failover (the time replicates with the log) with the mailboxes not yet done,
//! never running one twice in an interval. It runs where operations can be committed, the active copy only: on a
//! fenced engine (an old active after a failover) the commit is refused and the [`Housekeeper`] stops.
//! Holds are respected by the operation itself (nothing is purged under litigation hold).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use mailstore::model::{Housekeeper, HousekeepingOptions, MailEngine, MailOp, MailboxKind};
//! use mailstore::{Engine, Options};
//!
//! # fn main() -> mailstore::Result<()> {
//! let dir = tempfile::tempdir().expect("a temporary directory");
//! let db: Arc<MailEngine> = Arc::new(Engine::mount(dir.path(), Options::default())?);
//! db.commit(MailOp::create_mailbox("frank@example.com", "Frank", MailboxKind::User))?;
//! // Every mailbox once a day, at most 50 per minute, keeping the newest 100,000 changes of each.
//! let options = HousekeepingOptions::default().interval(Duration::from_secs(86_400)).tick(Duration::from_secs(60));
//! let housekeeper = Housekeeper::start(&db, options.budget(50).keep_changes(100_000));
//! // … serve mail …
//! housekeeper.stop(); // before the dismount (it holds no handle between cycles, but may be in one)
//! Arc::into_inner(db).expect("the last handle").dismount()
//! # }
//! ```

use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::model::{MailEngine, MailOp, MailOutput};
use crate::time::Timestamp;

/// When and how much housekeeping runs. `Default`: every mailbox once a day, a cycle a minute of at most 100
/// mailboxes, the newest 100,000 changes of each kept, audit entries kept 90 days.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HousekeepingOptions {
    /// How long after its last housekeeping a mailbox is due again.
    pub interval: Duration,
    /// The most mailboxes one cycle housekeeps (each is one commit); the others wait for the next cycle.
    pub budget: usize,
    /// How often the [`Housekeeper`] runs a cycle.
    pub tick: Duration,
    /// How many of each mailbox's newest MODSEQs keep their changes (QRESYNC, JMAP `/changes`); at least 1.
    pub keep_changes: u64,
    /// How long audit entries are kept (the audit trail's retention; Exchange's default is 90 days).
    pub audit_retention: Duration,
}

impl Default for HousekeepingOptions {
    fn default() -> Self {
        HousekeepingOptions {
            interval: Duration::from_secs(24 * 3600),
            budget: 100,
            tick: Duration::from_secs(60),
            keep_changes: 100_000,
            audit_retention: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

impl HousekeepingOptions {
    /// Sets [`interval`](Self::interval).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets [`budget`](Self::budget).
    pub fn budget(mut self, budget: usize) -> Self {
        self.budget = budget;
        self
    }

    /// Sets [`tick`](Self::tick).
    pub fn tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// Sets [`audit_retention`](Self::audit_retention).
    pub fn audit_retention(mut self, retention: Duration) -> Self {
        self.audit_retention = retention;
        self
    }

    /// Sets [`keep_changes`](Self::keep_changes).
    pub fn keep_changes(mut self, keep: u64) -> Self {
        self.keep_changes = keep;
        self
    }
}

/// What housekeeping did: in one cycle ([`housekeep_due`]), or in all of a [`Housekeeper`]'s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HousekeepingReport {
    /// Mailboxes housekept.
    pub housekept: u64,
    /// Items purged from Recoverable Items.
    pub purged: u64,
    /// Change entries trimmed.
    pub trimmed: u64,
    /// Mailboxes still due after the cycle (its budget was spent), in the last cycle.
    pub due: u64,
}

/// Runs one cycle at `now`: housekeeps the due mailboxes of `db` (not soft-deleted, last housekept before
/// `now - interval` or never), oldest first, at most `budget` of them, each in a commit of its own. Returns what
/// it did; stops at the first error (a mailbox deleted meanwhile is skipped), what it committed before staying
/// committed.
pub fn housekeep_due(db: &MailEngine, options: &HousekeepingOptions, now: Timestamp) -> Result<HousekeepingReport> {
    let due_before = now.saturating_sub(options.interval);
    let mut due = db.read(|s, txn| {
        Ok(s.mailboxes(txn)?
            .into_iter()
            .filter(|m| m.deleted.is_none() && m.housekept.is_none_or(|t| t <= due_before))
            .map(|m| (m.housekept, m.guid))
            .collect::<Vec<_>>())
    })?;
    due.sort();
    let mut report = HousekeepingReport { due: due.len() as u64, ..HousekeepingReport::default() };
    for (_, mailbox) in due.into_iter().take(options.budget) {
        let audit_before = now.saturating_sub(options.audit_retention);
        let op = MailOp::Housekeep { mailbox, now, keep_changes: options.keep_changes, audit_before };
        match db.commit(op) {
            Ok(committed) => {
                if let MailOutput::Housekept { purged, trimmed } = committed.output {
                    report.purged += purged;
                    report.trimmed += trimmed;
                }
                report.housekept += 1;
            }
            Err(Error::Mail(
                crate::model::MailError::MailboxDeleted { .. } | crate::model::MailError::NoSuchMailbox { .. },
            )) => {}
            Err(e) => return Err(e),
        }
        report.due -= 1;
    }
    Ok(report)
}

/// Runs [`housekeep_due`] on a thread of its own every `tick`, until stopped, dropped, or the engine is gone,
/// dismounted, fenced or poisoned. It holds the engine only during a cycle (a weak handle between cycles), so the
/// last strong handle can still dismount it once the housekeeper is stopped.
pub struct Housekeeper {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
    progress: Mutex<Progress>,
}

#[derive(Default)]
struct Progress {
    total: HousekeepingReport,
    cycles: u64,
    last_error: Option<String>,
    ended: bool,
}

impl Housekeeper {
    /// Starts housekeeping `db` with `options`; the first cycle runs at once.
    pub fn start(db: &Arc<MailEngine>, options: HousekeepingOptions) -> Housekeeper {
        let shared = Arc::new(Shared::default());
        let (weak, theirs) = (Arc::downgrade(db), Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("mailstore-housekeeper".into())
            .spawn(move || run(&weak, &options, &theirs))
            .ok();
        if thread.is_none() {
            let mut progress = shared.progress.lock();
            progress.last_error = Some("the housekeeping thread could not be started".into());
            progress.ended = true;
        }
        Housekeeper { shared, thread }
    }

    /// What every cycle so far did (`due`: after the last one), and how many cycles ran.
    pub fn progress(&self) -> (HousekeepingReport, u64) {
        let progress = self.shared.progress.lock();
        (progress.total, progress.cycles)
    }

    /// The last cycle's error, if it failed (a cycle that fails is tried again at the next tick, unless the engine
    /// is dismounted, fenced or poisoned, which ends the housekeeper).
    pub fn last_error(&self) -> Option<String> {
        self.shared.progress.lock().last_error.clone()
    }

    /// Whether the housekeeper has ended by itself (the engine gone, dismounted, fenced or poisoned).
    pub fn ended(&self) -> bool {
        self.shared.progress.lock().ended
    }

    /// Stops the housekeeper, waiting for a cycle in progress to finish its current commit.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        *self.shared.stop.lock() = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Housekeeper {
    fn drop(&mut self) {
        self.shut_down();
    }
}

impl std::fmt::Debug for Housekeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (total, cycles) = self.progress();
        f.debug_struct("Housekeeper").field("total", &total).field("cycles", &cycles).finish_non_exhaustive()
    }
}

fn run(db: &Weak<MailEngine>, options: &HousekeepingOptions, shared: &Shared) {
    loop {
        let Some(engine) = db.upgrade() else { break };
        let result = housekeep_due(&engine, options, Timestamp::now());
        drop(engine);
        let mut progress = shared.progress.lock();
        progress.cycles += 1;
        match result {
            Ok(report) => {
                progress.total.housekept += report.housekept;
                progress.total.purged += report.purged;
                progress.total.trimmed += report.trimmed;
                progress.total.due = report.due;
                progress.last_error = None;
            }
            Err(e @ (Error::Dismounted | Error::Fenced { .. } | Error::Poisoned { .. })) => {
                progress.last_error = Some(e.to_string());
                break;
            }
            Err(e) => progress.last_error = Some(e.to_string()),
        }
        drop(progress);
        let mut stop = shared.stop.lock();
        if !*stop {
            shared.wake.wait_for(&mut stop, options.tick);
        }
        if *stop {
            break;
        }
    }
    shared.progress.lock().ended = true;
}
