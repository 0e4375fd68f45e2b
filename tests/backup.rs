//! Online full and incremental backups of a mail database while it takes deliveries, and restores rolled forward
//! to the end, to an LSN and to a time: each restored digest equals the source's digest at that point.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use mailstore::backup::{self, Catalogue, FileKind, StopAt};
use mailstore::internals::engine::LOGS_DIR;
use mailstore::model::{Flags, FolderRole, MailEngine, MailOp, MailboxKind};
use mailstore::{Engine, Error, Guid, Lsn, Options, Timestamp};

mod common;
use common::history::{self, History, deliver_n, options, record, while_delivering};

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

fn restored_digest(dir: &std::path::Path) -> (Lsn, String) {
    let db: MailEngine = Engine::mount(dir, Options::default()).unwrap();
    let out = (db.status().applied_lsn, db.read(|s, txn| s.digest(txn)).unwrap());
    db.dismount().unwrap();
    out
}

#[test]
fn online_full_and_incremental_backups_restore_to_end_lsn_and_time() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, target) = (tmp.path().join("source"), tmp.path().join("backups"));
    let (db, mbx, history) = history::source(&source);

    // A full backup while another thread delivers.
    let done = Arc::new(AtomicU64::new(0));
    let full = while_delivering(&db, mbx, &history, &done, || backup::full_backup(&db, &target).unwrap());
    // `done` counts deliveries started: at least 39 had been committed (LSNs 2..=40) when the backup began.
    assert!(full.applied_lsn >= 40 && full.last_lsn >= full.applied_lsn, "{full:?}");
    assert!(full.files.iter().any(|f| f.kind == FileKind::State));

    // Until a backup holds them, the generations stay; more deliveries, then an incremental.
    deliver_n(&db, mbx, 100, &history, &done);
    // An atomic batch (one record) is rolled forward like any record: each of its messages with its own bytes.
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &mbx, FolderRole::Inbox)).unwrap().unwrap().id;
    let parts = (0..5).map(|k| format!("Subject: part {k}\r\n\r\n{}\r\n", "x".repeat(100 * k)).into_bytes());
    let lsn = db.commit(MailOp::batch(parts.map(|raw| MailOp::append(mbx, inbox, raw, Flags::empty(), vec![]))));
    record(&db, lsn.unwrap().lsn, &history);
    db.checkpoint().unwrap();
    let kept = files_in(&source.join(LOGS_DIR));
    let incremental = backup::incremental_backup(&db, &target).unwrap();
    assert_eq!(incremental.applied_lsn, full.last_lsn);
    assert!(incremental.last_lsn > full.last_lsn + 50, "{incremental:?}");
    assert_eq!(db.status().backup_lsn, incremental.last_lsn + 1);
    db.checkpoint().unwrap();
    let after = files_in(&source.join(LOGS_DIR));
    assert!(after < kept, "the backup released generations: {kept} before, {after} after");
    // Records after the last backup are not in any restore.
    deliver_n(&db, mbx, 10, &history, &done);
    let catalogue = Catalogue::load(&target).unwrap();
    assert_eq!(catalogue.backups.len(), 2);

    let history = history.lock().clone();
    let check = |stop: StopAt, expect_lsn: Lsn| {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("restored");
        let report = backup::restore(&target, &to, stop).unwrap();
        assert_eq!(report.stop_lsn, expect_lsn, "{stop:?}");
        let (applied, digest) = restored_digest(&to);
        assert_eq!(applied, expect_lsn, "{stop:?}");
        assert_eq!(digest, history[&expect_lsn].0, "{stop:?}: digest at LSN {expect_lsn}");
    };
    check(StopAt::End, incremental.last_lsn);
    // An LSN inside the full backup's log, and one in the incremental.
    check(StopAt::Lsn(full.applied_lsn + 1), full.applied_lsn + 1);
    let mid = (full.last_lsn + incremental.last_lsn) / 2;
    check(StopAt::Lsn(mid), mid);
    // A time: the last record at or before it.
    let at = full.last_lsn + 7;
    check(StopAt::Time(Timestamp::from_micros(history[&at].1)), at);
    db.checkpoint().unwrap();
    Arc::try_unwrap(db).ok().unwrap().dismount().unwrap();
}

#[test]
fn damage_of_a_backup_file_is_detected_at_restore_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, target) = (tmp.path().join("source"), tmp.path().join("backups"));
    let db: MailEngine = Engine::mount(&source, options()).unwrap();
    let history = parking_lot::Mutex::new(History::new());
    let op = MailOp::create_mailbox("bob@example.com", "Bob", MailboxKind::User);
    let MailOp::CreateMailbox { guid: mbx, .. } = op else { unreachable!() };
    db.commit(op).unwrap();
    let done = AtomicU64::new(0);
    deliver_n(&db, mbx, 20, &history, &done);
    backup::full_backup(&db, &target).unwrap();
    deliver_n(&db, mbx, 20, &history, &done);
    let incremental = backup::incremental_backup(&db, &target).unwrap();
    db.dismount().unwrap();
    let log = incremental.files.iter().find(|f| f.kind == FileKind::Log).unwrap();
    let path = target.join(&log.path);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let to = tmp.path().join("restored");
    match backup::restore(&target, &to, StopAt::End) {
        Err(Error::Corrupted { file, .. }) => assert_eq!(file, path),
        other => panic!("{other:?}"),
    }
    assert!(!to.exists(), "nothing is written before every check passed");
    // Restore never writes over data.
    std::fs::create_dir_all(&to).unwrap();
    std::fs::write(to.join("x"), b"x").unwrap();
    assert!(matches!(backup::restore(&target, &to, StopAt::End), Err(Error::InvalidArgument(_))));
}

#[test]
fn a_backup_removes_only_the_unlisted_backup_directories_a_crash_left() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, target) = (tmp.path().join("source"), tmp.path().join("backups"));
    let db: MailEngine = Engine::mount(&source, options()).unwrap();
    let history = parking_lot::Mutex::new(History::new());
    let op = MailOp::create_mailbox("carol@example.com", "Carol", MailboxKind::User);
    let MailOp::CreateMailbox { guid: mbx, .. } = op else { unreachable!() };
    db.commit(op).unwrap();
    let done = AtomicU64::new(0);
    deliver_n(&db, mbx, 10, &history, &done);
    let full = backup::full_backup(&db, &target).unwrap();
    // What a crash leaves: the next id renamed into place but never catalogued, a later partial one, and a
    // staging directory in the database. Next to them, things that are not a backup's.
    let stray = target.join("000002");
    std::fs::create_dir_all(stray.join(LOGS_DIR)).unwrap();
    std::fs::write(stray.join(LOGS_DIR).join("0000000000000001.log"), b"x").unwrap();
    std::fs::write(stray.join("state.mdb"), b"x").unwrap();
    std::fs::create_dir_all(target.join("000007.partial").join("segments")).unwrap();
    std::fs::create_dir_all(target.join("000003")).unwrap();
    std::fs::write(target.join("000003").join("notes.txt"), b"mine").unwrap();
    std::fs::create_dir_all(target.join("notes")).unwrap();
    let staging = source.join(format!("backup-{}", Guid::new_random()));
    std::fs::create_dir_all(&staging).unwrap();
    deliver_n(&db, mbx, 10, &history, &done);
    let incremental = backup::incremental_backup(&db, &target).unwrap();
    // The stray 000002 was removed (the incremental, now 000002, has no state file), and so was the partial.
    assert!(!stray.join("state.mdb").exists() && !target.join("000007.partial").exists());
    assert!(!staging.exists(), "a stale staging directory is removed");
    assert_eq!(std::fs::read(target.join("000003").join("notes.txt")).unwrap(), b"mine", "not a backup's: kept");
    assert!(target.join("notes").is_dir());
    // The id is fresh: above every listed one, and not the directory that is not a backup's.
    assert_eq!(incremental.id, "000002");
    let another = backup::incremental_backup(&db, &target).unwrap();
    assert_eq!(another.id, "000004", "000003 is taken by a directory that is not a backup's");
    assert!(target.join(&full.id).join("state.mdb").exists(), "a listed backup is never removed");
    db.dismount().unwrap();
    let to = tmp.path().join("restored");
    let report = backup::restore(&target, &to, StopAt::End).unwrap();
    assert_eq!(report.backups, vec![full.id, incremental.id, another.id]);
    let (applied, digest) = restored_digest(&to);
    assert_eq!(applied, another.last_lsn);
    assert_eq!(digest, history.lock()[&applied].0);
}

#[test]
fn an_unfinished_restore_is_refused_until_restored_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, target) = (tmp.path().join("source"), tmp.path().join("backups"));
    let db: MailEngine = Engine::mount(&source, options()).unwrap();
    let history = parking_lot::Mutex::new(History::new());
    let op = MailOp::create_mailbox("dave@example.com", "Dave", MailboxKind::User);
    let MailOp::CreateMailbox { guid: mbx, .. } = op else { unreachable!() };
    db.commit(op).unwrap();
    let done = AtomicU64::new(0);
    deliver_n(&db, mbx, 10, &history, &done);
    let full = backup::full_backup(&db, &target).unwrap();
    db.dismount().unwrap();
    let to = tmp.path().join("restored");
    backup::restore(&target, &to, StopAt::End).unwrap();
    assert!(!to.join(backup::RESTORING_FILE).exists());
    // A restore that stopped before removing its marker (the files all there, even the checkpoint).
    std::fs::write(to.join(backup::RESTORING_FILE), b"").unwrap();
    std::fs::write(to.join("junk"), b"left by the unfinished restore").unwrap();
    match Engine::<mailstore::model::MailStore>::mount(&to, Options::default()) {
        Err(e @ Error::RestoreUnfinished { .. }) => assert!(e.to_string().contains("restore again"), "{e}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("an unfinished restore was mounted"),
    }
    assert!(matches!(mailstore::engine::rebuild_checkpoint(&to), Err(Error::RestoreUnfinished { .. })));
    backup::restore(&target, &to, StopAt::End).unwrap();
    assert!(!to.join("junk").exists() && !to.join(backup::RESTORING_FILE).exists());
    let (applied, digest) = restored_digest(&to);
    assert_eq!(applied, full.last_lsn);
    assert_eq!(digest, history.lock()[&applied].0);
}
