//! Offline maintenance: a lost checkpoint file is rebuilt from the state store and the log (never a database
//! created over the data), compaction gives space back without changing the state, and the space report says
//! how much it will give back.

use std::fs;
use std::path::Path;

use mailstore::engine::{self, LogPolicy, LogRetention};
use mailstore::internals::engine::{CHECKPOINT_FILE, SEGMENTS_DIR, STATE_DIR};
use mailstore::model::{MailEngine, MailStore};
use mailstore::{Engine, Error, Options};

mod common;
use common::copy_dir;
use common::mail::{check, deliver, digest, expunge, mailbox, message};

/// Small generations, so that a few deliveries fill several, and no automatic checkpoint.
fn options() -> Options {
    Options::default().log_target_size(64 << 10).checkpoint_depth(1 << 30)
}

fn reopen(dir: &Path) -> Result<MailEngine, Error> {
    Engine::mount(dir, options().create_if_missing(false))
}

/// Trigger 1 of issue 14: only `state/` restored from an older backup and the checkpoint file lost. The default
/// mount (which creates a database when there is none) refuses instead of starting an empty one; the checkpoint
/// is rebuilt from the state and the log, and the mount then replays the log to the very same state.
#[test]
fn a_lost_checkpoint_with_an_older_state_is_rebuilt_and_the_log_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let policy = LogPolicy { retention: LogRetention::UntilBackup, circular_logging: false };
    let db: MailEngine = Engine::mount(dir.path(), options().log_policy(policy)).unwrap();
    let (mbx, inbox) = mailbox(&db);
    for n in 0..20 {
        deliver(&db, mbx, inbox, message(n));
    }
    db.dismount().unwrap();
    let old_state = tempfile::tempdir().unwrap();
    copy_dir(&dir.path().join(STATE_DIR), old_state.path());

    let db = reopen(dir.path()).unwrap();
    for n in 20..60 {
        deliver(&db, mbx, inbox, message(n));
    }
    db.checkpoint().unwrap();
    let expected = digest(&db);
    db.dismount().unwrap();

    fs::remove_dir_all(dir.path().join(STATE_DIR)).unwrap();
    copy_dir(old_state.path(), &dir.path().join(STATE_DIR));
    fs::remove_file(dir.path().join(CHECKPOINT_FILE)).unwrap();
    let Err(refused) = Engine::<MailStore>::mount(dir.path(), options()) else { panic!("mounted over lost data") };
    assert!(matches!(refused, Error::NotADatabase { .. }), "{refused}");

    let ck = engine::rebuild_checkpoint(dir.path()).unwrap();
    assert!(ck.lsn > 0 && !ck.clean, "{ck:?}");
    let db = reopen(dir.path()).unwrap();
    assert!(db.recovery_report().replayed >= 40, "{:?}", db.recovery_report());
    assert_eq!(digest(&db), expected);
    db.dismount().unwrap();
    check(dir.path());
}

#[test]
fn a_checkpoint_damaged_in_both_slots_is_kept_aside_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let db: MailEngine = Engine::mount(dir.path(), options()).unwrap();
    let (mbx, inbox) = mailbox(&db);
    for n in 0..10 {
        deliver(&db, mbx, inbox, message(n));
    }
    let expected = digest(&db);
    db.dismount().unwrap();
    let path = dir.path().join(CHECKPOINT_FILE);
    let original = fs::read(&path).unwrap();
    fs::write(&path, vec![0x5A; original.len()]).unwrap();
    let Err(refused) = reopen(dir.path()) else { panic!("mounted with an unreadable checkpoint") };
    assert!(refused.is_damage(), "{refused}");

    engine::rebuild_checkpoint(dir.path()).unwrap();
    assert_eq!(fs::read(dir.path().join("checkpoint.damaged")).unwrap(), vec![0x5A; original.len()]);
    let db = reopen(dir.path()).unwrap();
    assert_eq!(digest(&db), expected);
    db.dismount().unwrap();
    check(dir.path());
}

#[test]
fn rebuilding_refuses_a_readable_checkpoint_and_a_log_that_cannot_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let db: MailEngine = Engine::mount(dir.path(), options()).unwrap();
    let (mbx, inbox) = mailbox(&db);
    for n in 0..30 {
        deliver(&db, mbx, inbox, message(n));
    }
    db.dismount().unwrap();
    let before = fs::read(dir.path().join(CHECKPOINT_FILE)).unwrap();
    let refused = engine::rebuild_checkpoint(dir.path()).unwrap_err();
    assert!(matches!(refused, Error::InvalidArgument(_)), "{refused}");
    assert_eq!(fs::read(dir.path().join(CHECKPOINT_FILE)).unwrap(), before, "a readable checkpoint was rewritten");

    // A state ahead of its log: the state is kept, the log records it applied are gone.
    fs::remove_file(dir.path().join(CHECKPOINT_FILE)).unwrap();
    for entry in fs::read_dir(dir.path().join("logs")).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let refused = engine::rebuild_checkpoint(dir.path()).unwrap_err();
    assert!(refused.is_damage(), "{refused}");
    assert!(!dir.path().join(CHECKPOINT_FILE).exists(), "a checkpoint was written over a log that cannot carry on");
}

#[test]
fn compaction_gives_back_what_the_space_report_promised_and_keeps_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let db: MailEngine = Engine::mount(dir.path(), options()).unwrap();
    let (mbx, inbox) = mailbox(&db);
    let uids: Vec<u32> = (0..120).map(|n| deliver(&db, mbx, inbox, message(n)).1).collect();
    // Keep one message in four: every segment is then less than half referenced.
    let gone: Vec<u32> = uids.iter().copied().filter(|uid| uid % 4 != 0).collect();
    expunge(&db, mbx, inbox, gone);
    db.roll_log().unwrap();
    db.checkpoint().unwrap();
    db.dismount().unwrap();
    // The background compaction may have started on the segments; a database still holds some.
    let before = engine::space::<MailStore>(dir.path()).unwrap();
    let db = reopen(dir.path()).unwrap();
    let expected = digest(&db);
    db.dismount().unwrap();

    let report = engine::compact::<MailStore>(dir.path()).unwrap();
    let after = &report.after;
    assert!(after.segment_bytes <= before.segment_bytes.saturating_sub(before.segment_reclaimable_bytes) + (1 << 20));
    assert!(after.state_file_bytes <= before.state_file_bytes, "{before:?} -> {after:?}");
    assert_eq!(after.free_bytes(), 0, "a compacted state file has no free pages: {after:?}");
    assert_eq!(after.segment_reclaimable_bytes, 0, "{after:?}");
    // The kept messages' bodies now lie in the log, written again by the relocation; the digest covers their bytes.
    assert!(report.relocations > 0);
    check(dir.path());
    let db = reopen(dir.path()).unwrap();
    assert_eq!(digest(&db), expected, "compaction changed the state");
    db.dismount().unwrap();
    // A leftover compacted copy from a crash is removed by the next compaction.
    fs::write(dir.path().join(STATE_DIR).join("data.mdb.compact"), b"partial").unwrap();
    engine::compact::<MailStore>(dir.path()).unwrap();
    assert!(!dir.path().join(STATE_DIR).join("data.mdb.compact").exists());
    assert!(dir.path().join(SEGMENTS_DIR).exists());
}

#[test]
fn compaction_refuses_a_damaged_database_and_a_mounted_one() {
    let dir = tempfile::tempdir().unwrap();
    let db: MailEngine = Engine::mount(dir.path(), options()).unwrap();
    let (mbx, inbox) = mailbox(&db);
    for n in 0..10 {
        deliver(&db, mbx, inbox, message(n));
    }
    let busy = engine::compact::<MailStore>(dir.path()).unwrap_err();
    assert!(matches!(busy, Error::AlreadyMounted { .. }), "{busy}");
    db.dismount().unwrap();
    let log = common::generation_files(dir.path())[0].clone();
    common::flip_byte(&log, 128 + 40);
    let refused = engine::compact::<MailStore>(dir.path()).unwrap_err();
    assert!(refused.is_damage(), "{refused}");
}

#[test]
fn compact_now_relocates_bodies_while_the_database_is_mounted() {
    let dir = tempfile::tempdir().unwrap();
    let db: MailEngine = Engine::mount(dir.path(), options()).unwrap();
    let (mbx, inbox) = mailbox(&db);
    let uids: Vec<u32> = (0..80).map(|n| deliver(&db, mbx, inbox, message(n)).1).collect();
    expunge(&db, mbx, inbox, uids.iter().copied().filter(|uid| uid % 5 != 0).collect());
    db.roll_log().unwrap();
    db.checkpoint().unwrap();
    let expected = digest(&db);
    db.compact_now().unwrap();
    assert_eq!(digest(&db), expected);
    db.dismount().unwrap();
    let space = engine::space::<MailStore>(dir.path()).unwrap();
    assert_eq!(space.segment_reclaimable_bytes, 0, "{space:?}");
    check(dir.path());
}

/// Overwrites both LMDB meta pages of the state file: no reader can open it any more.
fn destroy_state(dir: &Path) {
    let data = dir.join(STATE_DIR).join("data.mdb");
    let mut bytes = fs::read(&data).unwrap();
    bytes[..8192].fill(0xFF);
    fs::write(&data, bytes).unwrap();
}

#[test]
fn a_damaged_state_is_repaired_from_an_older_healthy_copy_and_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let policy = LogPolicy { retention: LogRetention::UntilBackup, circular_logging: false };
    let db: MailEngine = Engine::mount(dir.path(), options().log_policy(policy)).unwrap();
    let (mbx, inbox) = mailbox(&db);
    let early: Vec<u32> = (0..20).map(|n| deliver(&db, mbx, inbox, message(n)).1).collect();
    let copied_at = db.status().applied_lsn;
    db.dismount().unwrap();
    let healthy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), healthy.path());

    // The database goes on: the early messages are expunged and, once backed up, the generations that held only
    // them are deleted; the healthy copy's state still refers to them.
    let db = reopen(dir.path()).unwrap();
    db.backup_completed(copied_at).unwrap();
    expunge(&db, mbx, inbox, early);
    for n in 20..60 {
        deliver(&db, mbx, inbox, message(n));
    }
    db.roll_log().unwrap();
    db.checkpoint().unwrap();
    let expected = digest(&db);
    db.dismount().unwrap();

    destroy_state(dir.path());
    let Err(refused) = reopen(dir.path()) else { panic!("mounted a destroyed state") };
    eprintln!("mount of the damaged database: {refused}");

    let report = engine::repair_state_from::<MailStore>(dir.path(), healthy.path()).unwrap();
    assert_eq!(report.copied_at, copied_at);
    assert!(report.replayed > 40, "{report:?}");
    assert!(report.generations_copied > 0, "{report:?}");
    let kept = report.damaged_state.clone().unwrap();
    assert!(kept.join("data.mdb").exists(), "the damaged state was not kept: {report:?}");
    check(dir.path());
    let db = reopen(dir.path()).unwrap();
    assert_eq!(digest(&db), expected);
    db.dismount().unwrap();
}

#[test]
fn repair_refuses_a_copy_the_log_cannot_carry_on_from_and_a_foreign_one() {
    let dir = tempfile::tempdir().unwrap();
    let db: MailEngine = Engine::mount(dir.path(), options()).unwrap();
    let (mbx, inbox) = mailbox(&db);
    for n in 0..20 {
        deliver(&db, mbx, inbox, message(n));
    }
    db.dismount().unwrap();
    let healthy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), healthy.path());
    let db = reopen(dir.path()).unwrap();
    for n in 20..60 {
        deliver(&db, mbx, inbox, message(n));
    }
    db.roll_log().unwrap();
    db.checkpoint().unwrap();
    db.dismount().unwrap();
    destroy_state(dir.path());
    let damaged = fs::read(dir.path().join(STATE_DIR).join("data.mdb")).unwrap();

    // The default policy truncated the records after the copy's state: nothing can replay it forward.
    let refused = engine::repair_state_from::<MailStore>(dir.path(), healthy.path()).unwrap_err();
    assert!(matches!(refused, Error::MissingGeneration { .. }), "{refused}");
    let other = tempfile::tempdir().unwrap();
    Engine::<MailStore>::mount(other.path(), options()).unwrap().dismount().unwrap();
    let refused = engine::repair_state_from::<MailStore>(dir.path(), other.path()).unwrap_err();
    assert!(matches!(refused, Error::ForeignDatabase { .. }), "{refused}");
    assert_eq!(fs::read(dir.path().join(STATE_DIR).join("data.mdb")).unwrap(), damaged, "a refusal changed the state");
    assert!(!dir.path().join("state.repair").exists());
}
