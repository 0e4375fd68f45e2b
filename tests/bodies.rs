//! Message bodies are written once, by the log, and read back from where it wrote them: generations the log no
//! longer needs are kept in `segments/` while the state refers to a body in them and deleted once it refers to
//! none; single-instance storage keeps working; a database of the previous format is refused, never misread.

use std::path::Path;

use mailstore::internals::engine::{LOGS_DIR, SEGMENTS_DIR};
use mailstore::model::{ItemId, MailEngine};
use mailstore::{Engine, Error, Options};

mod common;
use common::mail::{check, deliver, expunge, mailbox, message};

/// Small generations, so that a few deliveries fill several, and no automatic checkpoint.
fn options() -> Options {
    Options::default().log_target_size(64 << 10).checkpoint_depth(1 << 30)
}

fn files_in(dir: &Path, sub: &str) -> usize {
    std::fs::read_dir(dir.join(sub)).map_or(0, |d| d.filter(|e| e.as_ref().is_ok_and(|e| e.path().is_file())).count())
}

#[test]
fn bodies_stay_in_segments_while_referenced_and_go_when_not() {
    let dir = tempfile::tempdir().unwrap();
    let db: MailEngine = Engine::mount(dir.path(), options()).unwrap();
    let (mbx, inbox) = mailbox(&db);
    let delivered: Vec<(ItemId, u32, Vec<u8>)> = (0..60)
        .map(|n| {
            let (item, uid) = deliver(&db, mbx, inbox, message(n));
            (item, uid, message(n))
        })
        .collect();
    db.checkpoint().unwrap();
    // Every generation below the current one holds bodies the state refers to: none was deleted, all moved.
    let segments = files_in(dir.path(), SEGMENTS_DIR);
    let logs = files_in(dir.path(), LOGS_DIR);
    assert!(segments >= 5, "{segments} segments, {logs} generations in the log");
    assert_eq!(files_in(dir.path(), LOGS_DIR), 1, "the log keeps only its current generation");
    for (item, _, raw) in &delivered {
        assert_eq!(db.read(|s, txn| s.raw(txn, &mbx, *item)).unwrap().as_ref(), Some(raw));
    }

    // Expunge all but the last message: the segments holding only expunged bodies are deleted at the next
    // checkpoint, the one holding the last body stays.
    let (keep, rest) = delivered.split_last().unwrap();
    expunge(&db, mbx, inbox, rest.iter().map(|(_, uid, _)| *uid).collect());
    db.checkpoint().unwrap();
    assert!(files_in(dir.path(), SEGMENTS_DIR) <= 1, "{} segments left", files_in(dir.path(), SEGMENTS_DIR));
    assert_eq!(db.read(|s, txn| s.raw(txn, &mbx, keep.0)).unwrap().as_ref(), Some(&keep.2));
    db.dismount().unwrap();
    check(dir.path());

    // After a remount the body is read from wherever it now lies.
    let db: MailEngine = Engine::mount(dir.path(), options()).unwrap();
    assert_eq!(db.read(|s, txn| s.raw(txn, &mbx, keep.0)).unwrap().as_ref(), Some(&keep.2));
    assert_eq!(db.read(|s, txn| s.stored_contents(txn)).unwrap(), (1, keep.2.len() as u64));
}

#[test]
fn single_instance_content_outlives_the_delivery_that_stored_it() {
    let dir = tempfile::tempdir().unwrap();
    let db: MailEngine = Engine::mount(dir.path(), options()).unwrap();
    let (mbx, inbox) = mailbox(&db);
    let (_, first) = deliver(&db, mbx, inbox, message(7));
    // Fill a few generations, then deliver the same bytes again: one content, two references.
    for n in 100..120 {
        deliver(&db, mbx, inbox, message(n));
    }
    let (second, _) = deliver(&db, mbx, inbox, message(7));
    assert_eq!(db.read(|s, txn| s.stored_contents(txn)).unwrap().0, 21);
    // The first delivery goes; the bytes it stored (in an old generation) stay for the second.
    expunge(&db, mbx, inbox, vec![first]);
    db.checkpoint().unwrap();
    assert_eq!(db.read(|s, txn| s.raw(txn, &mbx, second)).unwrap(), Some(message(7)));
    db.dismount().unwrap();
    check(dir.path());
}

/// Rewrites the engine's metadata of the dismounted database in `dir` as an older release wrote it: values without
/// checksums, and the `format` key as given (`None`: absent, as format 1 kept it).
fn make_legacy(dir: &std::path::Path, format: Option<[u8; 8]>) {
    // SAFETY: the database is dismounted and nothing else opens its environment while the test edits it.
    let env =
        unsafe { heed::EnvOpenOptions::new().read_txn_without_tls().max_dbs(128).open(dir.join("state")) }.unwrap();
    let rtxn = env.read_txn().unwrap();
    let meta: heed::Database<heed::types::Bytes, heed::types::Bytes> = env
        .open_databases_and_commit(rtxn, |dbo, rtxn| -> heed::Result<_> {
            Ok(heed::CommitOrAbort::<_, ()>::Commit(dbo.open_database(rtxn, Some("engine.meta"))?.unwrap()))
        })
        .unwrap()
        .unwrap_commit();
    let mut wtxn = env.write_txn().unwrap();
    let entries: Vec<(Vec<u8>, Vec<u8>)> =
        meta.iter(&wtxn).unwrap().map(|e| e.map(|(k, v)| (k.to_vec(), v[..v.len() - 4].to_vec())).unwrap()).collect();
    for (k, v) in entries {
        meta.put(&mut wtxn, &k, &v).unwrap();
    }
    match format {
        Some(f) => meta.put(&mut wtxn, b"format", &f).unwrap(),
        None => assert!(meta.delete(&mut wtxn, b"format").unwrap()),
    }
    wtxn.commit().unwrap();
}

#[test]
fn a_database_of_a_previous_format_is_refused() {
    // Format 1 (bodies in the state store) had no `format` key; format 2, values without checksums.
    for (format, found) in [(None, 1), (Some([0, 0, 0, 2, 0, 0, 0, 2]), 2)] {
        let dir = tempfile::tempdir().unwrap();
        let db: MailEngine = Engine::mount(dir.path(), Options::default()).unwrap();
        mailbox(&db);
        db.dismount().unwrap();
        make_legacy(dir.path(), format);
        for attempt in [
            Engine::<mailstore::model::MailStore>::mount(dir.path(), Options::default()).map(drop),
            mailstore::engine::with_state::<mailstore::model::MailStore, _>(dir.path(), |_, _| Ok(())),
        ] {
            match attempt {
                Err(Error::UnsupportedFormat { what, found: f, supported: 3, .. }) if f == found => {
                    assert_eq!(what, "engine")
                }
                other => panic!("{other:?}"),
            }
        }
        // Refused, not changed: the log and the state are still there.
        assert_eq!(files_in(dir.path(), LOGS_DIR), 1);
        assert!(dir.path().join("state").join("data.mdb").exists());
    }
}

#[test]
fn compaction_relocates_the_live_bodies_of_mostly_dead_segments() {
    let dir = tempfile::tempdir().unwrap();
    let db: MailEngine = Engine::mount(dir.path(), options()).unwrap();
    let (mbx, inbox) = mailbox(&db);
    let delivered: Vec<(ItemId, u32, Vec<u8>)> = (0..90)
        .map(|n| {
            let (item, uid) = deliver(&db, mbx, inbox, message(n));
            (item, uid, message(n))
        })
        .collect();
    db.checkpoint().unwrap();
    let before = files_in(dir.path(), SEGMENTS_DIR);
    // Keep one message in five: every segment is then mostly dead, and none is empty.
    let (kept, gone): (Vec<_>, Vec<_>) = delivered.iter().partition(|(_, uid, _)| uid % 5 == 0);
    expunge(&db, mbx, inbox, gone.iter().map(|(_, uid, _)| *uid).collect());
    db.checkpoint().unwrap();
    // The compaction runs after the checkpoint, in the background; the next checkpoint deletes what it emptied.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while db.stats().compactions < before as u64 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(db.stats().compactions > 0, "{:?}", db.status().compaction_failure);
    db.checkpoint().unwrap();
    let after = files_in(dir.path(), SEGMENTS_DIR);
    assert!(after < before, "{before} segments before the compaction, {after} after");
    for (item, _, raw) in &kept {
        assert_eq!(db.read(|s, txn| s.raw(txn, &mbx, *item)).unwrap().as_ref(), Some(raw));
    }
    assert_eq!(db.stats().compaction_failures, 0);
    db.dismount().unwrap();
    check(dir.path());
}

#[test]
fn a_directory_whose_segments_hold_bodies_is_never_created_over() {
    let dir = tempfile::tempdir().unwrap();
    let db: MailEngine = Engine::mount(dir.path(), options()).unwrap();
    let (mbx, inbox) = mailbox(&db);
    for n in 0..30 {
        deliver(&db, mbx, inbox, message(n));
    }
    db.checkpoint().unwrap();
    db.dismount().unwrap();
    let segments = files_in(dir.path(), SEGMENTS_DIR);
    assert!(segments > 0);
    // Only the message bodies are left (a restore of part of a database, an operator's mistake): mounting must
    // not take the directory for a new database.
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    std::fs::remove_dir_all(dir.path().join(LOGS_DIR)).unwrap();
    match Engine::<mailstore::model::MailStore>::mount(dir.path(), options()) {
        Err(Error::NotADatabase { reason, .. }) => assert!(reason.contains("message bodies"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(files_in(dir.path(), SEGMENTS_DIR), segments, "nothing was deleted");
}

#[test]
fn a_lost_checkpoint_file_never_turns_a_database_into_a_new_one() {
    // The checkpoint file lost right after a roll (or only `state/` restored): the log's newest generation holds
    // no record, and the state store has applied everything. Mounting must refuse, not start an empty database.
    let dir = tempfile::tempdir().unwrap();
    // No message: no body keeps the old generation as a segment, so only the state store says there is data.
    let db: MailEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    mailbox(&db);
    db.roll_log().unwrap();
    db.checkpoint().unwrap();
    db.dismount().unwrap();
    assert_eq!((files_in(dir.path(), LOGS_DIR), files_in(dir.path(), SEGMENTS_DIR)), (1, 0));
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    for _ in 0..2 {
        match Engine::<mailstore::model::MailStore>::mount(dir.path(), Options::default()) {
            Err(Error::NotADatabase { reason, .. }) => assert!(reason.contains("state store has applied"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(dir.path().join("state").join("data.mdb").exists(), "the state store is still there");
}
