//! The housekeeping schedule (issue 20): Recoverable Items purged past retention and change logs trimmed by the
//! library, within a budget per cycle, holds respected, resuming after a remount and across a failover without
//! housekeeping any mailbox twice in an interval; the `Housekeeper` thread stops on a fence and on request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mailstore::model::{FolderRole, Housekeeper, HousekeepingOptions, MailEngine, MailOp, MailboxKind, housekeep_due};
use mailstore::replication::{CopyOptions, LogSource, MountDial, PassiveCopy, ShippingSource, SourceOptions};
use mailstore::{Engine, Error, Guid, Options, Timestamp};

mod common;
use common::mail::{check, message};

const DAY: Duration = Duration::from_secs(86_400);

fn create(db: &MailEngine, n: usize) -> Guid {
    let op = MailOp::create_mailbox(&format!("user{n}@example.com"), "User", MailboxKind::User);
    let guid = op.mailbox().unwrap();
    db.commit(op).unwrap();
    guid
}

fn inbox(db: &MailEngine, mbx: Guid) -> u64 {
    db.read(|s, txn| s.folder_by_role(txn, &mbx, FolderRole::Inbox)).unwrap().unwrap().id
}

fn deliver(db: &MailEngine, mbx: Guid, n: usize) -> u32 {
    match db.deliver(mbx, None, message(n)).unwrap() {
        mailstore::model::MailOutput::Appended { uid, .. } => uid,
        other => panic!("{other:?}"),
    }
}

fn recoverable(db: &MailEngine, mbx: Guid) -> u64 {
    db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().unwrap().recoverable_items
}

fn housekept(db: &MailEngine) -> Vec<(Guid, Option<Timestamp>)> {
    db.read(|s, txn| Ok(s.mailboxes(txn)?.into_iter().map(|m| (m.guid, m.housekept)).collect())).unwrap()
}

#[test]
fn housekeeping_purges_past_retention_trims_history_and_respects_holds() {
    let dir = tempfile::tempdir().unwrap();
    let db: MailEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    let now = Timestamp::now();
    let (plain, held) = (create(&db, 0), create(&db, 1));
    db.commit(MailOp::SetRetention {
        mailbox: held,
        single_item_recovery: true,
        litigation_hold: true,
        retention: DAY,
    })
    .unwrap();
    for mbx in [plain, held] {
        let inbox = inbox(&db, mbx);
        let uids: Vec<u32> = (0..6).map(|n| deliver(&db, mbx, n)).collect();
        // Three deleted 20 days ago (past the 14-day default retention), three an hour ago.
        db.commit(MailOp::DeleteItems {
            mailbox: mbx,
            folder: inbox,
            uids: uids[..3].to_vec(),
            at: now.saturating_sub(20 * DAY),
        })
        .unwrap();
        let recent = now.saturating_sub(Duration::from_secs(3600));
        db.commit(MailOp::DeleteItems { mailbox: mbx, folder: inbox, uids: uids[3..].to_vec(), at: recent }).unwrap();
    }
    assert_eq!(recoverable(&db, plain), 6);
    let options = HousekeepingOptions::default().keep_changes(5);
    let report = housekeep_due(&db, &options, now).unwrap();
    assert_eq!((report.housekept, report.due), (2, 0), "{report:?}");
    assert_eq!(report.purged, 3, "only the plain mailbox's three old deletions: {report:?}");
    assert_eq!(recoverable(&db, plain), 3);
    assert_eq!(recoverable(&db, held), 6, "litigation hold: nothing purged");
    let m = db.read(|s, txn| s.mailbox(txn, &plain)).unwrap().unwrap();
    assert_eq!(m.housekept, Some(now));
    assert_eq!(m.history_floor, m.highest_modseq - 4, "the newest five MODSEQs keep their changes");
    assert!(report.trimmed > 0);
    // Not due again within the interval; due again after it.
    assert_eq!(housekeep_due(&db, &options, now.saturating_add(DAY / 2)).unwrap().housekept, 0);
    assert_eq!(housekeep_due(&db, &options, now.saturating_add(DAY)).unwrap().housekept, 2);
    db.dismount().unwrap();
    check(dir.path());
}

#[test]
fn a_schedule_resumes_after_a_remount_and_a_failover_without_repeating_a_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options::default().log_target_size(64 << 10);
    let active = dir.path().join("active");
    let db: MailEngine = Engine::mount(&active, options()).unwrap();
    let mailboxes: Vec<Guid> = (0..7).map(|n| create(&db, n)).collect();
    let schedule = HousekeepingOptions::default().budget(2);
    let now = Timestamp::now();

    let first = housekeep_due(&db, &schedule, now).unwrap();
    assert_eq!((first.housekept, first.due), (2, 5));
    db.dismount().unwrap();
    let db: Arc<MailEngine> = Arc::new(Engine::mount(&active, options()).unwrap());
    let later = now.saturating_add(Duration::from_secs(60));
    let second = housekeep_due(&db, &schedule, later).unwrap();
    assert_eq!((second.housekept, second.due), (2, 3), "resumed with mailboxes not yet done");

    // A failover: the copy holds the housekeeping times, and its engine goes on with the rest.
    let source = Arc::new(ShippingSource::new(Arc::clone(&db), SourceOptions::default()).unwrap());
    let log: Arc<dyn LogSource> = source.clone();
    let copy_options = CopyOptions::default().poll(Duration::from_millis(20));
    let copy: PassiveCopy<mailstore::model::MailStore> =
        PassiveCopy::seed(dir.path().join("copy"), source.as_ref(), log, copy_options, |_| {}).unwrap();
    assert!(copy.wait_replayed(db.status().applied_lsn, Duration::from_secs(20)));
    let new_active: MailEngine = copy.activate(MountDial::Lossless, 2, options()).unwrap();
    let third = housekeep_due(&new_active, &schedule, later.saturating_add(Duration::from_secs(60))).unwrap();
    assert_eq!((third.housekept, third.due), (2, 1));
    let fourth = housekeep_due(&new_active, &schedule, later.saturating_add(Duration::from_secs(120))).unwrap();
    assert_eq!((fourth.housekept, fourth.due), (1, 0));
    let times = housekept(&new_active);
    assert_eq!(times.len(), mailboxes.len());
    assert!(times.iter().all(|(_, t)| t.is_some()), "each housekept once: {times:?}");
    let distinct: std::collections::BTreeSet<_> = times.iter().map(|(_, t)| t.unwrap()).collect();
    assert_eq!(distinct.len(), 4, "four cycles, each mailbox in exactly one: {times:?}");
    // A day later all are due again, and the longest waiting go first (the mailbox with the smallest GUID, done
    // last here, waits although the store lists it first).
    let smallest = times.iter().map(|(g, _)| *g).min().unwrap();
    let last = later.saturating_add(Duration::from_secs(180));
    new_active
        .commit(MailOp::Housekeep { mailbox: smallest, now: last, keep_changes: 100_000, audit_before: last })
        .unwrap();
    let mut waiting: Vec<(Timestamp, Guid)> =
        housekept(&new_active).into_iter().map(|(g, t)| (t.unwrap(), g)).collect();
    waiting.sort();
    let longest: std::collections::BTreeSet<Guid> = waiting[..2].iter().map(|(_, g)| *g).collect();
    let again = last.saturating_add(DAY);
    assert_eq!(housekeep_due(&new_active, &schedule, again).unwrap().due, 5);
    let redone: std::collections::BTreeSet<Guid> =
        housekept(&new_active).into_iter().filter(|(_, t)| *t == Some(again)).map(|(g, _)| g).collect();
    assert_eq!(redone, longest);
    assert!(!redone.contains(&smallest));

    // The old active, told of the new epoch (by whatever manages the cluster), is fenced: its housekeeper ends
    // instead of working on a database it no longer owns.
    db.fence(2).unwrap();
    let housekeeper = Housekeeper::start(&db, HousekeepingOptions::default().interval(Duration::ZERO));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !housekeeper.ended() {
        assert!(Instant::now() < deadline, "the housekeeper of a fenced engine did not stop: {housekeeper:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(housekeeper.last_error().unwrap().contains("fenced"), "{:?}", housekeeper.last_error());
    drop(source);
    new_active.dismount().unwrap();
}

#[test]
fn the_housekeeper_runs_cycles_until_stopped_and_holds_no_handle() {
    let dir = tempfile::tempdir().unwrap();
    let db: Arc<MailEngine> = Arc::new(Engine::mount(dir.path(), Options::default()).unwrap());
    for n in 0..5 {
        create(&db, n);
    }
    let options = HousekeepingOptions::default().budget(2).tick(Duration::from_millis(5));
    let housekeeper = Housekeeper::start(&db, options);
    let deadline = Instant::now() + Duration::from_secs(10);
    while housekept(&db).iter().any(|(_, t)| t.is_none()) {
        assert!(Instant::now() < deadline, "{housekeeper:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (total, cycles) = housekeeper.progress();
    assert_eq!(total.housekept, 5, "each once: {total:?}");
    assert!(cycles >= 3, "a budget of 2 takes three cycles for 5: {cycles}");
    housekeeper.stop();
    let db = Arc::into_inner(db).expect("the housekeeper holds no handle once stopped");
    assert!(matches!(
        db.commit(MailOp::Housekeep {
            mailbox: Guid([1; 16]),
            now: Timestamp::now(),
            keep_changes: 0,
            audit_before: Timestamp::now()
        }),
        Err(Error::Mail(mailstore::model::MailError::InvalidHousekeeping { .. }))
    ));
    db.dismount().unwrap();
}
