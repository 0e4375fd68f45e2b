//! Engine behaviour: mount, commit, remount, locking, rolls, checkpoints, truncation, pins, circular logging.

use std::sync::Arc;
use std::thread;

use mailstore::engine::list_generations;
use mailstore::internals::engine::LOGS_DIR;
use mailstore::kv::{KvEngine, KvError, KvOp};
use mailstore::{Durability, Engine, Error, LogRetention, Options, heed};

fn put(key: &str, value: &str) -> KvOp {
    KvOp::Put { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec() }
}

fn get(db: &KvEngine, key: &str) -> Option<Vec<u8>> {
    db.read(|kv, txn| kv.get(txn, key.as_bytes())).unwrap()
}

fn small() -> Options {
    Options::default().log_target_size(8 << 10).checkpoint_depth(32 << 10)
}

fn generations(dir: &std::path::Path) -> Vec<u64> {
    let mut names: Vec<u64> = std::fs::read_dir(dir.join(LOGS_DIR))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str().and_then(|n| n.strip_suffix(".log")?.parse().ok()))
        .collect();
    names.sort();
    names
}

#[test]
fn commit_dismount_remount() {
    let dir = tempfile::tempdir().unwrap();
    let db: KvEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    assert!(db.recovery_report().created);
    let guid = db.guid();
    let c = db.commit(put("a", "1")).unwrap();
    assert_eq!(c.lsn, 1);
    assert_eq!(db.commit(put("b", "2")).unwrap().lsn, 2);
    assert_eq!(get(&db, "a").as_deref(), Some(&b"1"[..]));
    db.dismount().unwrap();

    let db: KvEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    let report = db.recovery_report().clone();
    assert!(!report.created);
    assert!(report.was_clean);
    assert_eq!(report.replayed, 0, "a clean dismount leaves nothing to replay");
    assert_eq!(db.guid(), guid);
    assert_eq!(get(&db, "b").as_deref(), Some(&b"2"[..]));
    assert_eq!(db.commit(put("c", "3")).unwrap().lsn, 3);
    let status = db.status();
    assert_eq!(status.applied_lsn, 3);
    assert!(status.last_shutdown_clean);
}

#[test]
fn second_mount_is_refused_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let db: KvEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    match KvEngine::mount(dir.path(), Options::default()) {
        Err(Error::AlreadyMounted { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected AlreadyMounted, got {other:?}"),
    }
    db.dismount().unwrap();
    KvEngine::mount(dir.path(), Options::default()).unwrap().dismount().unwrap();
}

#[test]
fn dropped_engine_is_dirty_but_complete() {
    // Dropping without dismount still shuts down cleanly (Drop dismounts).
    let dir = tempfile::tempdir().unwrap();
    {
        let db: KvEngine = Engine::mount(dir.path(), Options::default()).unwrap();
        db.commit(put("x", "y")).unwrap();
    }
    let db: KvEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    assert!(db.recovery_report().was_clean);
    assert_eq!(get(&db, "x").as_deref(), Some(&b"y"[..]));
}

#[test]
fn rejected_operation_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db: KvEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    db.commit(put("k", "v1")).unwrap();
    let err = db
        .commit(KvOp::CompareAndSwap { key: b"k".to_vec(), expected: Some(b"nope".to_vec()), new: None })
        .unwrap_err();
    assert!(matches!(err, Error::Kv(KvError::Conflict { .. })), "{err:?}");
    assert_eq!(get(&db, "k").as_deref(), Some(&b"v1"[..]));
    db.commit(KvOp::CompareAndSwap { key: b"k".to_vec(), expected: Some(b"v1".to_vec()), new: Some(b"v2".to_vec()) })
        .unwrap();
    assert_eq!(get(&db, "k").as_deref(), Some(&b"v2"[..]));
    assert_eq!(db.stats().rejected, 1);
    // Invalid keys never reach the log.
    let before = db.status().applied_lsn;
    assert!(matches!(db.commit(put("", "v")), Err(Error::Kv(KvError::InvalidKey { len: 0 }))));
    assert_eq!(db.status().applied_lsn, before);
}

#[test]
fn rejections_inside_a_batch_leave_no_trace_and_the_rest_of_the_batch_applies() {
    // Batches are applied without a savepoint per operation and re-applied with them when one is rejected:
    // many threads mix accepted puts with rejected compare-and-swaps, so batches hold both.
    let dir = tempfile::tempdir().unwrap();
    let db: Arc<KvEngine> = Arc::new(Engine::mount(dir.path(), small()).unwrap());
    let rejected = std::sync::atomic::AtomicU64::new(0);
    thread::scope(|s| {
        for t in 0..8 {
            let (db, rejected) = (&db, &rejected);
            s.spawn(move || {
                for i in 0..200 {
                    db.commit(put(&format!("t{t}-{i}"), "ok")).unwrap();
                    // Refused by `apply` (not by validation): its batch is applied again with savepoints.
                    let key = format!("t{t}-{i}").into_bytes();
                    let op =
                        KvOp::CompareAndSwap { key, expected: Some(b"not ok".to_vec()), new: Some(b"ghost".to_vec()) };
                    if let Err(Error::Kv(KvError::Conflict { .. })) = db.commit(op) {
                        rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(rejected.into_inner(), 1600);
    let stats = db.stats();
    assert_eq!(stats.rejected, 1600);
    assert!(stats.batches < stats.commits, "some batches held several commits: {stats:?}");
    let dump = db.read(|kv, txn| kv.dump(txn)).unwrap();
    assert_eq!(dump.len(), 1600);
    assert!(dump.iter().all(|(k, v)| k.starts_with(b"t") && v == b"ok"));
    // Recovery replays the same batches to the same state.
    let db = Arc::try_unwrap(db).unwrap();
    drop(db);
    let db: KvEngine = Engine::mount(dir.path(), small()).unwrap();
    assert_eq!(db.read(|kv, txn| kv.dump(txn)).unwrap(), dump);
}

#[test]
fn concurrent_commits_are_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    let db: Arc<KvEngine> = Arc::new(Engine::mount(dir.path(), small()).unwrap());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let db = Arc::clone(&db);
            thread::spawn(move || {
                for i in 0..100 {
                    db.commit(put(&format!("t{t}-{i}"), &format!("{i}"))).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = db.stats();
    assert_eq!(stats.commits, 1600);
    assert!(stats.batches <= stats.commits);
    assert_eq!(stats.log_syncs, stats.batches, "Full mode syncs once per batch");
    assert_eq!(db.read(|kv, txn| kv.len(txn)).unwrap(), 1600);
    let db = Arc::try_unwrap(db).unwrap();
    db.dismount().unwrap();
    let db: KvEngine = Engine::mount(dir.path(), small()).unwrap();
    assert_eq!(db.read(|kv, txn| kv.len(txn)).unwrap(), 1600);
}

#[test]
fn log_rolls_and_truncates_behind_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let db: KvEngine = Engine::mount(dir.path(), small()).unwrap();
    for i in 0..400 {
        db.commit(put(&format!("key{i:04}"), &"x".repeat(200))).unwrap();
    }
    let stats = db.stats();
    assert!(stats.generations_created > 5, "{stats:?}");
    assert!(stats.checkpoints >= 2, "{stats:?}");
    // An explicit checkpoint returns once the generations it truncated are gone (automatic ones delete in the
    // background).
    db.checkpoint().unwrap();
    assert!(db.stats().generations_deleted > 0, "{stats:?}");
    let gens = generations(dir.path());
    assert_eq!(*gens.first().unwrap(), db.status().oldest_generation);
    // Generations are contiguous.
    assert!(gens.windows(2).all(|w| w[1] == w[0] + 1), "{gens:?}");
    db.dismount().unwrap();
    let infos = list_generations(dir.path()).unwrap();
    assert!(infos.iter().all(|g| g.chain_ok && g.problem.is_none()), "{infos:#?}");
    let db: KvEngine = Engine::mount(dir.path(), small()).unwrap();
    assert_eq!(db.read(|kv, txn| kv.len(txn)).unwrap(), 400);
}

#[test]
fn pins_hold_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let db: KvEngine = Engine::mount(dir.path(), small()).unwrap();
    let pin = db.pin_log(1).unwrap();
    for i in 0..300 {
        db.commit(put(&format!("key{i:04}"), &"x".repeat(200))).unwrap();
    }
    db.checkpoint().unwrap();
    assert_eq!(generations(dir.path())[0], 1, "a pin at LSN 1 keeps generation 1");
    assert_eq!(db.status().oldest_lsn, 1);
    pin.advance(250);
    db.checkpoint().unwrap();
    let oldest = db.status().oldest_lsn;
    assert!(oldest > 1 && oldest <= 250, "oldest LSN {oldest}");
    drop(pin);
    db.checkpoint().unwrap();
    assert!(db.status().oldest_lsn > 250);
    // A pin below what is left is refused.
    assert!(matches!(db.pin_log(1), Err(Error::InvalidArgument(_))));
}

#[test]
fn retention_until_backup() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small().retention(LogRetention::UntilBackup);
    let db: KvEngine = Engine::mount(dir.path(), opts.clone()).unwrap();
    for i in 0..300 {
        db.commit(put(&format!("key{i:04}"), &"x".repeat(200))).unwrap();
    }
    db.checkpoint().unwrap();
    assert_eq!(db.stats().generations_deleted, 0, "nothing is deleted before a backup");
    assert_eq!(generations(dir.path())[0], 1);
    db.backup_completed(200).unwrap();
    assert!(db.stats().generations_deleted > 0);
    assert!(db.status().oldest_lsn <= 200);
    assert_eq!(db.status().backup_lsn, 200);
    db.dismount().unwrap();
    // The backup position is durable.
    let db: KvEngine = Engine::mount(dir.path(), opts).unwrap();
    assert_eq!(db.status().backup_lsn, 200);
    assert!(matches!(db.backup_completed(10_000), Err(Error::InvalidArgument(_))));
}

#[test]
fn circular_logging_recycles_files() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small().circular_logging(true);
    let db: KvEngine = Engine::mount(dir.path(), opts.clone()).unwrap();
    for i in 0..600 {
        db.commit(put(&format!("key{i:04}"), &"x".repeat(200))).unwrap();
    }
    let stats = db.stats();
    assert!(stats.generations_recycled > 0, "{stats:?}");
    assert!(generations(dir.path()).len() < 12, "{:?}", generations(dir.path()));
    db.dismount().unwrap();
    assert!(mailstore::engine::check(dir.path()).unwrap().healthy());
    let db: KvEngine = Engine::mount(dir.path(), opts).unwrap();
    assert_eq!(db.read(|kv, txn| kv.len(txn)).unwrap(), 600);
    let bad = Options::default().circular_logging(true).retention(LogRetention::UntilBackup);
    assert!(matches!(KvEngine::mount(dir.path().join("x"), bad), Err(Error::InvalidArgument(_))));
}

#[test]
fn relaxed_mode_survives_remount() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small().durability(Durability::Relaxed);
    let db: KvEngine = Engine::mount(dir.path(), opts.clone()).unwrap();
    for i in 0..200 {
        db.commit(put(&format!("k{i}"), "v")).unwrap();
    }
    assert_eq!(db.stats().log_syncs, 0);
    db.dismount().unwrap();
    let db: KvEngine = Engine::mount(dir.path(), opts).unwrap();
    assert_eq!(db.read(|kv, txn| kv.len(txn)).unwrap(), 200);
}

#[test]
fn large_records_and_map_growth() {
    let dir = tempfile::tempdir().unwrap();
    let db: KvEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    // 100 MiB of values: more than the initial 64 MiB map.
    for i in 0..50 {
        db.commit(put(&format!("big{i}"), &"z".repeat(2 << 20))).unwrap();
    }
    assert!(db.stats().map_resizes > 0);
    db.dismount().unwrap();
    let db: KvEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    assert_eq!(get(&db, "big49").map(|v| v.len()), Some(2 << 20));
}

/// A machine whose one operation writes far more state than its record holds: `n` MiB of zeros.
struct Expander(heed::Database<'static, heed::types::Bytes, heed::types::Bytes>);

struct ExpanderDatabases<'e>(heed::Database<'e, heed::types::Bytes, heed::types::Bytes>);

impl heed::OnCommit for ExpanderDatabases<'_> {
    type Committed = Expander;
    fn on_commit(self, token: &heed::CommitToken) -> Expander {
        Expander(self.0.on_commit(token))
    }
}

impl mailstore::StateMachine for Expander {
    const NAME: &'static str = "expander";
    type Op = u32;
    type Output = ();
    type Rejection = mailstore::Error;
    type Databases<'e> = ExpanderDatabases<'e>;

    fn create_databases<'e>(
        opener: &heed::DatabaseOpener<'e, heed::WithoutTls>,
        txn: &mut heed::RwTxn<'e>,
        _attachments: &mailstore::engine::Attachments,
    ) -> mailstore::Result<ExpanderDatabases<'e>> {
        Ok(ExpanderDatabases(opener.create_database(txn, Some("zeros"))?))
    }

    fn open_databases<'e>(
        opener: &heed::DatabaseOpener<'e, heed::WithoutTls>,
        txn: &heed::RoTxn<'e>,
        _attachments: &mailstore::engine::Attachments,
    ) -> mailstore::Result<Option<ExpanderDatabases<'e>>> {
        Ok(opener.open_database(txn, Some("zeros"))?.map(ExpanderDatabases))
    }

    fn apply(
        &self,
        txn: &mut heed::RwTxn<'_>,
        ctx: mailstore::ApplyContext<'_>,
        mib: u32,
    ) -> Result<(), mailstore::ApplyError> {
        let zeros = vec![0u8; 1 << 20];
        for i in 0..mib {
            self.0.put(txn, format!("{}-{i}", ctx.lsn).as_bytes(), &zeros)?;
        }
        Ok(())
    }
}

/// The map is grown ahead of a batch from the size of its records; a batch that writes far more than that still
/// fills the map, is aborted, and is applied again on a larger one (`MDB_MAP_FULL` handled, never surfaced).
#[test]
fn a_batch_that_fills_the_map_is_applied_again_on_a_larger_one() {
    let dir = tempfile::tempdir().unwrap();
    let db: Engine<Expander> = Engine::mount(dir.path(), Options::default()).unwrap();
    // A 5-byte record that writes 150 MiB: more than twice the initial 64 MiB map.
    db.commit(150).unwrap();
    assert!(db.stats().map_resizes >= 2, "{:?}", db.stats());
    db.dismount().unwrap();
    let db: Engine<Expander> = Engine::mount(dir.path(), Options::default()).unwrap();
    let stored = db.read(|m, txn| Ok(m.0.len(txn)?)).unwrap();
    assert_eq!(stored, 150);
}

#[test]
fn mounting_with_another_machine_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    KvEngine::mount(dir.path(), Options::default()).unwrap().dismount().unwrap();
    assert!(matches!(
        KvEngine::mount(dir.path().join("missing"), Options::default().create_if_missing(false)),
        Err(Error::NotADatabase { .. })
    ));
}

#[test]
fn log_policy_is_stored_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db: KvEngine = Engine::mount(dir.path(), small().retention(LogRetention::UntilBackup)).unwrap();
    for i in 0..300 {
        db.commit(put(&format!("key{i:04}"), &"x".repeat(200))).unwrap();
    }
    db.dismount().unwrap();
    // Mounting with default options keeps the stored policy: nothing a backup still needs is deleted.
    let db: KvEngine = Engine::mount(dir.path(), small()).unwrap();
    assert_eq!(db.status().log_policy.retention, LogRetention::UntilBackup);
    db.checkpoint().unwrap();
    assert_eq!(generations(dir.path())[0], 1);
    db.dismount().unwrap();
    // An explicit policy replaces it, durably.
    let db: KvEngine = Engine::mount(dir.path(), small().retention(LogRetention::Truncate)).unwrap();
    db.checkpoint().unwrap();
    assert!(generations(dir.path())[0] > 1);
    db.dismount().unwrap();
    let db: KvEngine = Engine::mount(dir.path(), small()).unwrap();
    assert_eq!(db.status().log_policy.retention, LogRetention::Truncate);
}

/// A state machine whose `apply` panics on one operation: the engine must poison itself, answer every waiting
/// committer, and recover at the next mount.
struct Panicky;
struct PanickyDatabases;

impl heed::OnCommit for PanickyDatabases {
    type Committed = Panicky;
    fn on_commit(self, _token: &heed::CommitToken) -> Panicky {
        Panicky
    }
}

impl mailstore::StateMachine for Panicky {
    const NAME: &'static str = "panicky";
    type Op = u8;
    type Output = u8;
    type Rejection = mailstore::Error;
    type Databases<'e> = PanickyDatabases;

    fn create_databases<'e>(
        _opener: &heed::DatabaseOpener<'e, heed::WithoutTls>,
        _txn: &mut heed::RwTxn<'e>,
        _attachments: &mailstore::engine::Attachments,
    ) -> mailstore::Result<PanickyDatabases> {
        Ok(PanickyDatabases)
    }

    fn open_databases<'e>(
        _opener: &heed::DatabaseOpener<'e, heed::WithoutTls>,
        _txn: &heed::RoTxn<'e>,
        _attachments: &mailstore::engine::Attachments,
    ) -> mailstore::Result<Option<PanickyDatabases>> {
        Ok(Some(PanickyDatabases))
    }

    fn apply(
        &self,
        _txn: &mut heed::RwTxn<'_>,
        _ctx: mailstore::ApplyContext<'_>,
        op: u8,
    ) -> Result<u8, mailstore::ApplyError> {
        assert_ne!(op, 0xFF, "injected panic in apply");
        Ok(op)
    }
}

#[test]
fn a_panicking_apply_poisons_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let db: Engine<Panicky> = Engine::mount(dir.path(), Options::default()).unwrap();
    assert_eq!(db.commit(7).unwrap().output, 7);
    assert!(matches!(db.commit(0xFF), Err(Error::Poisoned { .. })));
    assert!(matches!(db.commit(1), Err(Error::Poisoned { .. })));
    assert!(matches!(db.checkpoint(), Err(Error::Poisoned { .. })));
    assert!(matches!(db.dismount(), Err(Error::Poisoned { .. })));
    // The panicking record is in the log: replaying it panics again, deterministically, inside mount. A
    // database in that state needs a fixed state machine; here we only check the engine never hung.
    assert!(matches!(KvEngine::mount(dir.path(), Options::default()), Err(Error::NotADatabase { .. })));
}
