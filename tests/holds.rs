//! Holds cannot be bypassed (issue 20). Under litigation hold nothing that existed when it started, or arrived
//! during it, becomes unrecoverable, whichever way it leaves the user's view (expunge in any folder, delete, a
//! folder delete with its subtree, an edit, a purge of Recoverable Items, a mailbox delete and purge); under single
//! item recovery the same holds until the retention has passed since the item left the user's view. Checked by
//! scenarios and by a property test over random operation sequences with holds switched on and off, remounts
//! included (recovery replays the same operations).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mailstore::model::{
    Deleted, Fai, FlagAction, Flags, FolderId, FolderRole, ItemClass, MailEngine, MailError, MailOp, MailOutput,
    MailboxKind, Uid,
};
use mailstore::{Engine, Error, Guid, Options, Timestamp};
use proptest::prelude::*;

fn us(micros: u64) -> Timestamp {
    Timestamp::from_micros(micros)
}

fn message(subject: &str) -> Vec<u8> {
    format!("From: a@example.com\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.com>\r\n\r\n{subject}\r\n")
        .into_bytes()
}

fn mount(dir: &std::path::Path) -> MailEngine {
    Engine::mount(dir, Options::default().log_target_size(16 << 10).checkpoint_depth(64 << 10)).unwrap()
}

fn create_mailbox(db: &MailEngine, address: &str) -> Guid {
    let op = MailOp::create_mailbox(address, "Held", MailboxKind::User);
    let MailOp::CreateMailbox { guid, .. } = op else { unreachable!() };
    db.commit(op).unwrap();
    guid
}

fn role(db: &MailEngine, mbx: Guid, role: FolderRole) -> FolderId {
    db.read(|s, txn| s.folder_by_role(txn, &mbx, role)).unwrap().unwrap().id
}

fn append(db: &MailEngine, mbx: Guid, folder: FolderId, subject: &str) -> Uid {
    match db.commit(MailOp::append(mbx, folder, message(subject), Flags::empty(), vec![])).unwrap().output {
        MailOutput::Appended { uid, .. } => uid,
        other => panic!("{other:?}"),
    }
}

fn retention(mbx: Guid, sir: bool, hold: bool, retention: u64) -> MailOp {
    MailOp::SetRetention {
        mailbox: mbx,
        single_item_recovery: sir,
        litigation_hold: hold,
        retention: Duration::from_micros(retention),
    }
}

fn expunge_at(db: &MailEngine, mbx: Guid, folder: FolderId, uids: Vec<Uid>, at: u64) -> Vec<Uid> {
    db.commit(MailOp::store_flags(mbx, folder, uids.clone(), FlagAction::Add, Flags::DELETED)).unwrap();
    match db.commit(MailOp::Expunge { mailbox: mbx, folder, uids: Some(uids), at: us(at) }).unwrap().output {
        MailOutput::Expunged { uids, .. } => uids,
        other => panic!("{other:?}"),
    }
}

fn purge_expired(db: &MailEngine, mbx: Guid, now: u64) -> usize {
    match db.commit(MailOp::PurgeExpired { mailbox: mbx, now: us(now) }).unwrap().output {
        MailOutput::Expunged { uids, .. } => uids.len(),
        other => panic!("{other:?}"),
    }
}

/// The subjects of every item of the mailbox, hidden folders included, and of its visible folders.
fn subjects(db: &MailEngine, mbx: Guid) -> (BTreeSet<String>, BTreeSet<String>) {
    db.read(|s, txn| {
        let (mut all, mut visible) = (BTreeSet::new(), BTreeSet::new());
        for f in s.folders(txn, &mbx)? {
            for item in s.items_by_uid(txn, &mbx, f.id, 1, usize::MAX, Fai::Include)? {
                let subject = item.envelope.subject.clone().unwrap_or_default();
                if !f.hidden {
                    visible.insert(subject.clone());
                }
                all.insert(subject);
            }
        }
        Ok((all, visible))
    })
    .unwrap()
}

/// When each item of the mailbox (hidden folders included) was received, by subject, in microseconds.
fn received_times(db: &MailEngine, mbx: Guid) -> BTreeMap<String, u64> {
    db.read(|s, txn| {
        let mut all = BTreeMap::new();
        for f in s.folders(txn, &mbx)? {
            for item in s.items_by_uid(txn, &mbx, f.id, 1, usize::MAX, Fai::Include)? {
                all.insert(item.envelope.subject.clone().unwrap_or_default(), item.received.as_micros());
            }
        }
        Ok(all)
    })
    .unwrap()
}

/// The report: under litigation hold with single item recovery, `\Deleted` + EXPUNGE on the Inbox (the
/// example server's IMAP EXPUNGE) destroyed the message. It now goes to Purges, keeps its bytes, where and when it
/// was deleted, survives every purge while the hold is on, and is released by retention once the hold is lifted.
#[test]
fn expunge_under_litigation_hold_keeps_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = mount(dir.path());
    let mbx = create_mailbox(&db, "held@example.com");
    let inbox = role(&db, mbx, FolderRole::Inbox);
    let purges = role(&db, mbx, FolderRole::Purges);
    let uid = append(&db, mbx, inbox, "evidence");
    db.commit(retention(mbx, true, true, 1_000)).unwrap();

    assert_eq!(expunge_at(&db, mbx, inbox, vec![uid], 5_000), [uid], "gone from the user's view");
    let m = db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().unwrap();
    assert_eq!((m.items, m.recoverable_items), (0, 1));
    let kept = db.read(|s, txn| s.items_by_uid(txn, &mbx, purges, 1, 10, Fai::Include)).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].deleted, Some(Deleted { from: inbox, at: us(5_000) }));
    assert_eq!(db.read(|s, txn| s.raw(txn, &mbx, kept[0].id)).unwrap().unwrap(), message("evidence"));

    // No purge releases it while the hold is on, before or after a remount.
    db.commit(MailOp::PurgeDeleted { mailbox: mbx, deleted_before: us(u64::MAX) }).unwrap();
    assert_eq!(purge_expired(&db, mbx, u64::MAX), 0);
    db.dismount().unwrap();
    db = mount(dir.path());
    assert_eq!(subjects(&db, mbx).0, BTreeSet::from(["evidence".to_string()]));

    // Lifted (single item recovery stays): retention decides, counted from the expunge.
    db.commit(retention(mbx, true, false, 1_000)).unwrap();
    assert_eq!(purge_expired(&db, mbx, 5_999), 0);
    assert_eq!(purge_expired(&db, mbx, 6_001), 1);
    assert_eq!(db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().unwrap().recoverable_items, 0);
}

/// Single item recovery alone keeps every item that leaves the user's view — expunged, deleted and then purged
/// from Deletions by the user or by `PurgeDeleted`, or replaced by an edit — until its retention has passed.
#[test]
fn single_item_recovery_keeps_everything_until_its_retention_passes() {
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    let mbx = create_mailbox(&db, "sir@example.com");
    let inbox = role(&db, mbx, FolderRole::Inbox);
    let deletions = role(&db, mbx, FolderRole::Deletions);
    for s in ["a", "b", "c", "d"] {
        append(&db, mbx, inbox, s);
    }
    db.commit(retention(mbx, true, false, 1_000)).unwrap();
    db.commit(MailOp::DeleteItems { mailbox: mbx, folder: inbox, uids: vec![1], at: us(10) }).unwrap();
    db.commit(MailOp::PurgeItems { mailbox: mbx, uids: vec![1] }).unwrap();
    db.commit(MailOp::DeleteItems { mailbox: mbx, folder: inbox, uids: vec![2], at: us(20) }).unwrap();
    db.commit(MailOp::PurgeDeleted { mailbox: mbx, deleted_before: us(u64::MAX) }).unwrap();
    expunge_at(&db, mbx, inbox, vec![3], 30);
    let mut edit = MailOp::replace_item(mbx, inbox, 4, message("d2"), ItemClass::Note);
    if let MailOp::ReplaceItem { at, .. } = &mut edit {
        *at = us(40);
    }
    let MailOutput::Replaced { original_in_versions, .. } = db.commit(edit).unwrap().output else { panic!() };
    assert!(original_in_versions.is_some(), "the original is kept in Versions");
    assert!(db.read(|s, txn| s.items_by_uid(txn, &mbx, deletions, 1, 10, Fai::Include)).unwrap().is_empty());
    let all = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(subjects(&db, mbx), (all(&["a", "b", "c", "d", "d2"]), all(&["d2"])));

    assert_eq!(purge_expired(&db, mbx, 1_009), 0, "a's retention ends at 1,010");
    assert_eq!(purge_expired(&db, mbx, 1_025), 2, "a and b");
    assert_eq!(purge_expired(&db, mbx, 1_041), 2, "c and d");
    assert_eq!(subjects(&db, mbx).0, all(&["d2"]));

    // Without single item recovery, the same operations remove for good (the control).
    db.commit(retention(mbx, false, false, 1_000)).unwrap();
    let e = append(&db, mbx, inbox, "e");
    expunge_at(&db, mbx, inbox, vec![e], 50);
    assert_eq!(subjects(&db, mbx).0, all(&["d2"]));
}

/// A deleted mailbox under single item recovery is not purged before the retention of everything in it has
/// passed; under litigation hold not at all.
#[test]
fn purging_a_mailbox_waits_for_retention() {
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    let mbx = create_mailbox(&db, "gone@example.com");
    let inbox = role(&db, mbx, FolderRole::Inbox);
    append(&db, mbx, inbox, "kept");
    db.commit(retention(mbx, true, false, 1_000)).unwrap();
    db.commit(MailOp::DeleteItems { mailbox: mbx, folder: inbox, uids: vec![1], at: us(400) }).unwrap();
    db.commit(MailOp::DeleteMailbox { mailbox: mbx, at: us(100) }).unwrap();
    match db.commit(MailOp::PurgeMailbox { mailbox: mbx, now: us(1_399) }) {
        Err(Error::Mail(MailError::RetentionNotPassed { until, .. })) => assert_eq!(until, us(1_400)),
        other => panic!("{other:?}"),
    }
    db.commit(MailOp::PurgeMailbox { mailbox: mbx, now: us(1_400) }).unwrap();
    assert!(db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().is_none());
}

/// A time-bound litigation hold (Exchange's `LitigationHoldDuration`) keeps each item until its duration has
/// passed since the item was received, and no longer: an expunge within it goes to Purges, one after it removes
/// for good; purges release a held item only once its hold has ended; a deleted mailbox waits for its newest
/// item's hold. The hold setting replays after a remount.
#[test]
fn a_time_bound_hold_keeps_each_item_for_its_duration_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = mount(dir.path());
    let mbx = create_mailbox(&db, "bounded@example.com");
    let inbox = role(&db, mbx, FolderRole::Inbox);
    let append_at = |db: &MailEngine, subject: &str, at: u64| {
        let op = MailOp::append(mbx, inbox, message(subject), Flags::empty(), vec![]).received_at(us(at));
        match db.commit(op).unwrap().output {
            MailOutput::Appended { uid, .. } => uid,
            other => panic!("{other:?}"),
        }
    };
    let early = append_at(&db, "early", 1_000);
    let late = append_at(&db, "late", 1_800);
    db.commit(retention(mbx, false, true, 100)).unwrap();
    db.commit(MailOp::SetHoldDuration { mailbox: mbx, duration: Some(Duration::from_micros(1_000)) }).unwrap();
    db.dismount().unwrap();
    db = mount(dir.path());
    let m = db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().unwrap();
    assert_eq!(m.hold_duration, Some(Duration::from_micros(1_000)), "the setting replays");

    // Expunged at 1,500: both are within their hold (early's ends at 2,000, late's at 2,800).
    assert_eq!(expunge_at(&db, mbx, inbox, vec![early, late], 1_500), [early, late]);
    let all = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(subjects(&db, mbx).0, all(&["early", "late"]), "both kept in Purges");

    // Retention (100 µs from the expunge) has long passed, but the hold decides: nothing goes before 2,000.
    assert_eq!(purge_expired(&db, mbx, 1_999), 0);
    assert_eq!(purge_expired(&db, mbx, 2_000), 1, "early's hold has ended");
    assert_eq!(subjects(&db, mbx).0, all(&["late"]));
    db.commit(MailOp::PurgeDeleted { mailbox: mbx, deleted_before: us(2_500) }).unwrap();
    assert_eq!(subjects(&db, mbx).0, all(&["late"]), "PurgeDeleted keeps what is still held");

    // An item expunged after its own hold has ended is removed for good.
    let old = append_at(&db, "old", 100);
    assert_eq!(expunge_at(&db, mbx, inbox, vec![old], 2_600), [old]);
    assert_eq!(subjects(&db, mbx).0, all(&["late"]), "old was received at 100: its hold ended at 1,100");

    // A deleted mailbox is purged only once the newest item's hold has ended.
    db.commit(MailOp::DeleteMailbox { mailbox: mbx, at: us(2_600) }).unwrap();
    match db.commit(MailOp::PurgeMailbox { mailbox: mbx, now: us(2_799) }) {
        Err(Error::Mail(MailError::RetentionNotPassed { until, .. })) => assert_eq!(until, us(2_800)),
        other => panic!("{other:?}"),
    }
    db.commit(MailOp::PurgeMailbox { mailbox: mbx, now: us(2_800) }).unwrap();
    assert!(db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().is_none());
}

#[derive(Clone, Debug)]
enum Step {
    Append { folder: usize },
    Expunge { folder: usize, pick: Vec<usize> },
    Delete { folder: usize, pick: Vec<usize> },
    Move { from: usize, to: usize, pick: Vec<usize> },
    Replace { folder: usize, pick: usize },
    DeleteFolder,
    Recover { pick: Vec<usize> },
    PurgeItems { pick: Vec<usize> },
    PurgeDeleted,
    PurgeExpired,
    DeleteAndPurgeMailbox,
    Retention { sir: bool, hold: bool },
    HoldFor { micros: Option<u64> },
    Tick { micros: u64 },
    Remount,
}

fn step() -> impl Strategy<Value = Step> {
    let pick = prop::collection::vec(0usize..8, 1..4);
    prop_oneof![
        6 => (0usize..3).prop_map(|folder| Step::Append { folder }),
        3 => (0usize..3, pick.clone()).prop_map(|(folder, pick)| Step::Expunge { folder, pick }),
        2 => (0usize..3, pick.clone()).prop_map(|(folder, pick)| Step::Delete { folder, pick }),
        1 => (0usize..3, 0usize..3, pick.clone()).prop_map(|(from, to, pick)| Step::Move { from, to, pick }),
        1 => (0usize..3, 0usize..8).prop_map(|(folder, pick)| Step::Replace { folder, pick }),
        1 => Just(Step::DeleteFolder),
        1 => pick.clone().prop_map(|pick| Step::Recover { pick }),
        2 => pick.prop_map(|pick| Step::PurgeItems { pick }),
        2 => Just(Step::PurgeDeleted),
        2 => Just(Step::PurgeExpired),
        1 => Just(Step::DeleteAndPurgeMailbox),
        3 => (any::<bool>(), any::<bool>()).prop_map(|(sir, hold)| Step::Retention { sir, hold }),
        2 => prop::option::of(20u64..600).prop_map(|micros| Step::HoldFor { micros }),
        3 => (1u64..400).prop_map(|micros| Step::Tick { micros }),
        1 => Just(Step::Remount),
    ]
}

/// The retention of the property test, in the test's microseconds.
const RETENTION: u64 = 300;

/// The test's view of what must still exist.
#[derive(Default)]
struct Protected {
    /// Litigation hold: every item that existed when it started or arrived during it, with when it was
    /// received (a time-bound hold keeps it only so long after that).
    held: BTreeMap<String, u64>,
    /// Single item recovery: when each item that left the user's view under it may go.
    until: BTreeMap<String, u64>,
}

struct Run {
    dir: tempfile::TempDir,
    db: Option<MailEngine>,
    mbx: Guid,
    /// Inbox, Archive, and a folder of the test's own (deleted and created again).
    folders: [FolderId; 3],
    now: u64,
    sir: bool,
    hold: bool,
    /// The time-bound hold's duration (`None`: indefinite).
    hold_for: Option<u64>,
    next: u64,
}

impl Run {
    fn new() -> Run {
        let dir = tempfile::tempdir().unwrap();
        let db = mount(dir.path());
        let mut run = Run {
            dir,
            db: Some(db),
            mbx: Guid([0; 16]),
            folders: [0; 3],
            now: 1,
            sir: false,
            hold: false,
            hold_for: None,
            next: 0,
        };
        run.create();
        run
    }

    fn db(&self) -> &MailEngine {
        self.db.as_ref().unwrap()
    }

    fn create(&mut self) {
        self.mbx = create_mailbox(self.db(), &format!("prop{}@example.com", self.next));
        let inbox = role(self.db(), self.mbx, FolderRole::Inbox);
        let archive = role(self.db(), self.mbx, FolderRole::Archive);
        self.folders = [inbox, archive, 0];
        self.create_folder();
        self.sir = false;
        self.hold = false;
        self.hold_for = None;
    }

    /// Whether the litigation hold must still keep an item received at `received`.
    fn holds(&self, received: u64) -> bool {
        self.hold && self.hold_for.is_none_or(|d| self.now < received + d)
    }

    fn create_folder(&mut self) {
        let root = self.db().read(|s, txn| s.folder_by_role(txn, &self.mbx, FolderRole::Root)).unwrap().unwrap().id;
        let name = format!("Projects {}", self.next);
        self.next += 1;
        match self.db().commit(MailOp::create_folder(self.mbx, root, &name)).unwrap().output {
            MailOutput::FolderCreated { id, .. } => self.folders[2] = id,
            other => panic!("{other:?}"),
        }
    }

    fn uids(&self, folder: FolderId, pick: &[usize]) -> Vec<Uid> {
        let all: Vec<Uid> = self
            .db()
            .read(|s, txn| s.items_by_uid(txn, &self.mbx, folder, 1, usize::MAX, Fai::Include))
            .unwrap()
            .iter()
            .map(|i| i.uid)
            .collect();
        if all.is_empty() {
            return Vec::new();
        }
        pick.iter().map(|p| all[p % all.len()]).collect()
    }

    fn deletions(&self) -> FolderId {
        role(self.db(), self.mbx, FolderRole::Deletions)
    }

    /// Applies one step with the test's clock; refusals (quota, a vanished UID) are fine, they change nothing.
    fn apply(&mut self, step: &Step) {
        self.now += 1;
        let (mbx, now) = (self.mbx, us(self.now));
        let result = match step {
            Step::Append { folder } => {
                let subject = format!("m{}", self.next);
                self.next += 1;
                let op = MailOp::append(mbx, self.folders[*folder], message(&subject), Flags::empty(), vec![]);
                self.db().commit(op.received_at(now))
            }
            Step::Expunge { folder, pick } => {
                let (folder, uids) = (self.folders[*folder], self.uids(self.folders[*folder], pick));
                self.db()
                    .commit(MailOp::store_flags(mbx, folder, uids.clone(), FlagAction::Add, Flags::DELETED))
                    .unwrap();
                self.db().commit(MailOp::Expunge { mailbox: mbx, folder, uids: Some(uids), at: now })
            }
            Step::Delete { folder, pick } => {
                let uids = self.uids(self.folders[*folder], pick);
                self.db().commit(MailOp::DeleteItems { mailbox: mbx, folder: self.folders[*folder], uids, at: now })
            }
            Step::Move { from, to, pick } => {
                let uids = self.uids(self.folders[*from], pick);
                self.db().commit(MailOp::move_items(mbx, self.folders[*from], uids, self.folders[*to]))
            }
            Step::Replace { folder, pick } => {
                let Some(&uid) = self.uids(self.folders[*folder], &[*pick]).first() else { return };
                let subject = format!("m{}", self.next);
                self.next += 1;
                let mut op = MailOp::replace_item(mbx, self.folders[*folder], uid, message(&subject), ItemClass::Note);
                if let MailOp::ReplaceItem { at, .. } = &mut op {
                    *at = now;
                }
                self.db().commit(op)
            }
            Step::DeleteFolder => {
                let result = self.db().commit(MailOp::DeleteFolder { mailbox: mbx, folder: self.folders[2], at: now });
                if result.is_ok() {
                    self.create_folder();
                }
                result
            }
            Step::Recover { pick } => {
                let uids = self.uids(self.deletions(), pick);
                self.db().commit(MailOp::RecoverItems { mailbox: mbx, uids })
            }
            Step::PurgeItems { pick } => {
                let uids = self.uids(self.deletions(), pick);
                self.db().commit(MailOp::PurgeItems { mailbox: mbx, uids })
            }
            Step::PurgeDeleted => self.db().commit(MailOp::PurgeDeleted { mailbox: mbx, deleted_before: now }),
            Step::PurgeExpired => self.db().commit(MailOp::PurgeExpired { mailbox: mbx, now }),
            Step::DeleteAndPurgeMailbox => {
                self.db().commit(MailOp::DeleteMailbox { mailbox: mbx, at: now }).unwrap();
                let purged = self.db().commit(MailOp::PurgeMailbox { mailbox: mbx, now });
                if purged.is_err() {
                    self.db().commit(MailOp::RestoreMailbox { mailbox: mbx }).unwrap();
                }
                purged
            }
            Step::Retention { sir, hold } => {
                (self.sir, self.hold) = (*sir, *hold);
                self.db().commit(retention(mbx, *sir, *hold, RETENTION))
            }
            Step::HoldFor { micros } => {
                self.hold_for = *micros;
                self.db().commit(MailOp::SetHoldDuration { mailbox: mbx, duration: micros.map(Duration::from_micros) })
            }
            Step::Tick { micros } => {
                self.now += micros;
                return;
            }
            Step::Remount => {
                self.db.take().unwrap().dismount().unwrap();
                self.db = Some(mount(self.dir.path()));
                return;
            }
        };
        match result {
            Ok(_) | Err(Error::Mail(_)) => {}
            Err(e) => panic!("{step:?}: {e}"),
        }
    }
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut run = Run::new();
    let mut protected = Protected::default();
    let mut visible = subjects(run.db(), run.mbx).1;
    for step in &steps {
        let mbx = run.mbx;
        run.apply(step);
        if run.mbx != mbx || run.db().read(|s, txn| s.mailbox(txn, &mbx)).unwrap().is_none() {
            // Purged: allowed only when nothing was protected any more.
            prop_assert!(protected.held.values().all(|r| !run.holds(*r)), "{step:?}: a mailbox on hold was purged");
            prop_assert!(protected.until.values().all(|u| *u <= run.now), "{step:?}: purged before retention");
            run.create();
            protected = Protected::default();
            visible = subjects(run.db(), run.mbx).1;
            continue;
        }
        let (now_all, now_visible) = subjects(run.db(), run.mbx);
        // What arrived during a hold, and (when the hold starts) everything there is, is held.
        if run.hold {
            protected.held.extend(received_times(run.db(), run.mbx));
        } else {
            protected.held.clear();
        }
        if run.sir {
            for left in visible.difference(&now_visible) {
                let until = protected.until.entry(left.clone()).or_default();
                *until = (*until).max(run.now + RETENTION);
            }
        } else {
            protected.until.clear();
        }
        for (s, received) in &protected.held {
            prop_assert!(
                now_all.contains(s) || !run.holds(*received),
                "{step:?}: {s} (received at {received}) was destroyed at {} under litigation hold for {:?}",
                run.now,
                run.hold_for
            );
        }
        // What is gone is no longer held (a later, longer duration cannot bring it back).
        protected.held.retain(|s, _| now_all.contains(s));
        for (s, until) in &protected.until {
            prop_assert!(
                now_all.contains(s) || *until <= run.now,
                "{step:?}: {s} was destroyed at {} under single item recovery, kept until {until}",
                run.now
            );
        }
        visible = now_visible;
    }
    // Lifted: purges resume, and everything in Recoverable Items goes once its retention has passed.
    run.db().commit(retention(run.mbx, false, false, RETENTION)).unwrap();
    let later = us(run.now + RETENTION + 1_000);
    run.db().commit(MailOp::PurgeExpired { mailbox: run.mbx, now: later }).unwrap();
    let m = run.db().read(|s, txn| s.mailbox(txn, &run.mbx)).unwrap().unwrap();
    prop_assert_eq!((m.recoverable_items, m.recoverable_size), (0, 0));
    prop_assert_eq!(run.db().read(|s, txn| s.verify_counters(txn)).unwrap(), Vec::<String>::new());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("MAILSTORE_HOLD_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn holds_hold_whatever_happens(steps in prop::collection::vec(step(), 1..60)) {
        run(steps)?;
    }
}
