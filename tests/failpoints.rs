//! Fault injection on every write path of the log and the checkpoint (`--features failpoints`).
//!
//! Each case: commits are acknowledged, a fail point injects EIO or ENOSPC on a write or sync, the engine
//! is poisoned (every later call says so), and a remount recovers with every acknowledged commit present.
//! Fail points are process-global, so the cases run one at a time (`fail::FailScenario`).

mod common;

use common::*;
use mailstore::kv::KvEngine;
use mailstore::{Engine, Error, Options};

/// Serializes the cases (the scenario holds a global lock) and clears every fail point when dropped, even if
/// the case panics.
fn scenario() -> fail::FailScenario<'static> {
    fail::FailScenario::setup()
}

fn options() -> Options {
    Options::default().log_target_size(8 << 10).checkpoint_depth(1 << 30)
}

fn assert_poisoned<T: std::fmt::Debug>(result: mailstore::Result<T>, fail_point: &str, arg: &str) {
    match result {
        Err(Error::Poisoned { reason }) => {
            let expected = if arg == "enospc" { "No space left" } else { "Input/output error" };
            assert!(reason.contains(expected), "{fail_point}: reason {reason:?}");
            // The cause is given once, not wrapped in poison messages again.
            let message = Error::Poisoned { reason: reason.clone() }.to_string();
            assert_eq!(message.matches("poisoned").count(), 1, "{fail_point}: nested: {message}");
            assert_eq!(message.matches(expected).count(), 1, "{fail_point}: repeated: {message}");
        }
        other => panic!("{fail_point}: expected Poisoned, got {other:?}"),
    }
}

/// Commits until the fail point fires (at most `limit` commits), returning the keys acknowledged.
fn commit_until_failure(db: &KvEngine, limit: u64, fail_point: &str, arg: &str) -> Vec<String> {
    let mut acked = Vec::new();
    for i in 0..limit {
        let k = key(1000 + i);
        match db.commit(put(&k, &"p".repeat(300))) {
            Ok(_) => acked.push(k),
            Err(e) => {
                assert_poisoned::<()>(Err(e), fail_point, arg);
                return acked;
            }
        }
        // A roll fails after its batch was acknowledged: the next call must see the poison.
        if let Some(reason) = db.status().poisoned {
            assert!(reason.contains(if arg == "enospc" { "No space left" } else { "Input/output error" }));
            return acked;
        }
    }
    panic!("{fail_point} never fired in {limit} commits");
}

fn run_case(fail_point: &str, arg: &str) {
    let _scenario = scenario();
    let dir = tempfile::tempdir().unwrap();
    let db: KvEngine = Engine::mount(dir.path(), options()).unwrap();
    for i in 0..20 {
        db.commit(put(&key(i), "before")).unwrap();
    }
    fail::cfg(fail_point, &format!("return({arg})")).unwrap();
    let acked = if fail_point.starts_with("checkpoint") {
        assert_poisoned(db.checkpoint(), fail_point, arg);
        Vec::new()
    } else {
        commit_until_failure(&db, 200, fail_point, arg)
    };
    fail::remove(fail_point);

    // Poisoned for good: commits, reads, checkpoints, and the dismount all say so.
    assert_poisoned(db.commit(put("later", "x")), fail_point, arg);
    assert_poisoned(db.read(|kv, txn| kv.len(txn)), fail_point, arg);
    assert_poisoned(db.checkpoint(), fail_point, arg);
    assert!(db.status().poisoned.is_some());
    assert_poisoned(db.dismount(), fail_point, arg);

    // A remount recovers: nothing acknowledged is lost, and the database works again.
    let db: KvEngine = Engine::mount(dir.path(), options()).unwrap();
    assert!(!db.recovery_report().was_clean, "{fail_point}: a poisoned dismount is not clean");
    for i in 0..20 {
        assert_eq!(get(&db, &key(i)).as_deref(), Some(&b"before"[..]), "{fail_point}");
    }
    for k in &acked {
        assert!(get(&db, k).is_some(), "{fail_point}: acknowledged {k} lost");
    }
    assert!(get(&db, "later").is_none());
    db.commit(put("after", "remount")).unwrap();
    db.dismount().unwrap();
    assert!(mailstore::engine::check(dir.path()).unwrap().healthy(), "{fail_point}");
}

#[test]
fn append_write_error() {
    run_case("log::append::write", "eio");
    run_case("log::append::write", "enospc");
}

#[test]
fn append_sync_error() {
    run_case("log::append::sync", "eio");
    run_case("log::append::sync", "enospc");
}

#[test]
fn roll_create_error() {
    run_case("log::roll::create", "eio");
    run_case("log::roll::create", "enospc");
}

#[test]
fn roll_sync_error() {
    run_case("log::roll::sync", "eio");
    run_case("log::roll::sync", "enospc");
}

#[test]
fn checkpoint_write_error() {
    run_case("checkpoint::write", "eio");
    run_case("checkpoint::write", "enospc");
}

#[test]
fn checkpoint_sync_error() {
    run_case("checkpoint::sync", "eio");
    run_case("checkpoint::sync", "enospc");
}

#[test]
fn failure_during_mount_leaves_the_database_mountable() {
    let _scenario = scenario();
    let dir = tempfile::tempdir().unwrap();
    let db: KvEngine = Engine::mount(dir.path(), options()).unwrap();
    db.commit(put("k", "v")).unwrap();
    db.dismount().unwrap();
    // Mount writes a checkpoint (marking the database dirty); make that fail.
    fail::cfg("checkpoint::sync", "return").unwrap();
    let err = KvEngine::mount(dir.path(), options()).unwrap_err();
    fail::remove("checkpoint::sync");
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    let db: KvEngine = Engine::mount(dir.path(), options()).unwrap();
    assert_eq!(get(&db, "k").as_deref(), Some(&b"v"[..]));
}

/// The same fail points on a passive copy's own log: its copier appends and creates generations with the
/// engine's log writer. A failed write or sync fails the copy for good (resuming is refused, nothing after its
/// last sync is replayed), and closing and reopening it catches up with every record.
fn run_copy_case(fail_point: &str, arg: &str) {
    use mailstore::replication::{CopyOptions, CopyState, LogSource, PassiveCopy, ShippingSource, SourceOptions};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let _scenario = scenario();
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(KvEngine::mount(dir.path().join("active"), options()).unwrap());
    let source = Arc::new(ShippingSource::new(Arc::clone(&db), SourceOptions::default()).unwrap());
    db.commit(put("first", "x")).unwrap();
    let copy_options = || CopyOptions::default().poll(Duration::from_millis(20)).chunk_bytes(4 << 10);
    let log: Arc<dyn LogSource> = source.clone();
    let copy_dir = dir.path().join("copy");
    let copy: PassiveCopy<mailstore::kv::Kv> =
        PassiveCopy::seed(&copy_dir, source.as_ref(), log.clone(), copy_options(), |_| {}).unwrap();
    copy.suspend().unwrap();
    for i in 0..80 {
        db.commit(put(&key(i), &"p".repeat(300))).unwrap();
    }
    db.roll_log().unwrap();
    let head = db.status().applied_lsn;
    // The active writes nothing from here on: only the copy's log writes reach the fail point.
    fail::cfg(fail_point, &format!("return({arg})")).unwrap();
    copy.resume().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while copy.status().state != CopyState::Failed {
        assert!(Instant::now() < deadline, "{fail_point}: the copy did not fail: {:?}", copy.status());
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = copy.status();
    let expected = if arg == "enospc" { "No space left" } else { "Input/output error" };
    assert!(status.reason.as_deref().unwrap_or("").contains(expected), "{fail_point}: {status:?}");
    assert!(status.last_copied_lsn < head, "{fail_point}: copied past the failed write: {status:?}");
    match copy.resume() {
        Err(e @ Error::CopyPoisoned { .. }) => {
            // One remedy, the copy's, and the cause once.
            let message = e.to_string();
            assert_eq!(message.matches("close the copy").count(), 1, "{fail_point}: {message}");
            assert!(!message.contains("dismount"), "{fail_point}: the engine's remedy for a copy: {message}");
            assert_eq!(message.matches(expected).count(), 1, "{fail_point}: {message}");
        }
        other => panic!("{fail_point}: a poisoned copy resumed: {other:?}"),
    }
    fail::remove(fail_point);
    copy.close().unwrap();

    let copy = PassiveCopy::<mailstore::kv::Kv>::open(&copy_dir, log, copy_options()).unwrap();
    assert!(copy.wait_replayed(head, Duration::from_secs(20)), "{fail_point}: {:?}", copy.status());
    let copied = copy.read(|kv, txn| kv.dump(txn)).unwrap();
    assert_eq!(copied, db.read(|kv, txn| kv.dump(txn)).unwrap(), "{fail_point}");
    copy.close().unwrap();
    assert!(mailstore::engine::check(&copy_dir).unwrap().healthy(), "{fail_point}");
}

#[test]
fn copy_log_write_errors() {
    for fail_point in ["log::append::write", "log::append::sync", "log::roll::create", "log::roll::sync"] {
        run_copy_case(fail_point, "eio");
        run_copy_case(fail_point, "enospc");
    }
}
