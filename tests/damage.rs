//! Log damage: truncation, bit flips, missing and foreign generations. Each case has a documented outcome
//! (ARCHITECTURE.md, "Recovery"), checked here; none may panic or mount a silently wrong state.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use mailstore::engine::check;
use mailstore::internals::engine::{CHECKPOINT_FILE, STATE_DIR};
use mailstore::internals::log::{GenerationHeader, HEADER_LEN, RecordSeal};
use mailstore::kv::KvEngine;
use mailstore::{Engine, Error, LogRetention, Options, RecoveryMode};

fn tolerant() -> Options {
    // Keep every generation (no backup is ever taken), so the crash images below hold the whole log.
    Options::default().log_target_size(16 << 10).checkpoint_depth(1 << 30).retention(LogRetention::UntilBackup)
}

fn strict() -> Options {
    tolerant().recovery(RecoveryMode::AbsoluteConsistency)
}

/// A crash image with `n` records: the state store and checkpoint as they were after record 1, the log with
/// every record up to `n` in several generations — what a crash leaves when the log is durable and the state
/// store is not yet (recovery must replay 2..=n).
fn build(dir: &Path, n: u64) {
    let db: KvEngine = Engine::mount(dir, tolerant()).unwrap();
    db.commit(put(&key(1), "v")).unwrap();
    db.dismount().unwrap();
    let saved = tempfile::tempdir().unwrap();
    copy_state(dir, saved.path());
    let db: KvEngine = Engine::mount(dir, tolerant()).unwrap();
    for i in 2..=n {
        db.commit(put(&key(i), &"v".repeat(20 + (i % 50) as usize))).unwrap();
    }
    db.dismount().unwrap();
    copy_state(saved.path(), dir);
}

/// Copies the state store and the checkpoint file (not the log) from one database directory to another.
fn copy_state(from: &Path, to: &Path) {
    fs::create_dir_all(to.join(STATE_DIR)).unwrap();
    for entry in fs::read_dir(from.join(STATE_DIR)).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(STATE_DIR).join(entry.file_name())).unwrap();
    }
    fs::copy(from.join(CHECKPOINT_FILE), to.join(CHECKPOINT_FILE)).unwrap();
}

/// Asserts the database holds exactly keys 1..=n.
fn assert_prefix(db: &KvEngine, n: u64) {
    assert_eq!(count(db), n);
    if n > 0 {
        assert!(get(db, &key(n)).is_some());
    }
    assert!(get(db, &key(n + 1)).is_none());
}

#[test]
fn truncation_at_random_offsets_of_the_last_generation() {
    let mut rng = Rng::new(0x7A11);
    for round in 0..12 {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), 300);
        let last = generation_files(dir.path()).pop().unwrap();
        let extents = record_extents(&last);
        let (first_lsn, start, _) = extents[0];
        let end = extents.last().unwrap().2;
        let cut = start + rng.below(end - start + 1);
        fs::OpenOptions::new().write(true).open(&last).unwrap().set_len(cut).unwrap();
        // Records wholly before the cut survive; the one the cut falls into (if any) is torn.
        let survivors = extents.iter().filter(|(_, _, e)| *e <= cut).count() as u64;
        let expected = first_lsn - 1 + survivors;
        let at_boundary = extents.iter().any(|(_, s, _)| *s == cut) || cut == end;

        match KvEngine::mount(dir.path(), strict()) {
            Ok(db) => {
                assert!(at_boundary, "round {round}: cut {cut} inside a record mounted in strict mode");
                assert_prefix(&db, expected);
            }
            Err(Error::TornTail { file, offset, .. }) => {
                assert!(!at_boundary, "round {round}");
                assert_eq!(file, last);
                assert!(offset <= cut);
            }
            Err(e) => panic!("round {round}: unexpected {e}"),
        }
        let db = KvEngine::mount(dir.path(), tolerant()).unwrap();
        assert_prefix(&db, expected);
        assert_eq!(db.recovery_report().truncated_tail.is_some(), !at_boundary, "round {round}");
        // The database goes on from there, and the next mount is clean and complete.
        db.commit(put("after", "cut")).unwrap();
        db.dismount().unwrap();
        let report = check(dir.path()).unwrap();
        assert!(report.healthy(), "round {round}: {:?}", report.problems);
        let db = KvEngine::mount(dir.path(), strict()).unwrap();
        assert_eq!(count(&db), expected + 1);
    }
}

#[test]
fn partial_record_after_the_last_one_is_repaired_and_synced() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 50);
    let last = generation_files(dir.path()).pop().unwrap();
    let end = record_extents(&last).last().unwrap().2;
    // What a crash in the middle of an append leaves: a frame header and part of a payload.
    let mut bytes = fs::read(&last).unwrap();
    // Generations grow with their appends: the torn one reaches past the file's end.
    bytes.resize(bytes.len().max(end as usize + 30), 0);
    bytes[end as usize..end as usize + 4].copy_from_slice(&200u32.to_le_bytes());
    bytes[end as usize + 4..end as usize + 30].fill(0xAB);
    fs::write(&last, &bytes).unwrap();
    assert!(!check(dir.path()).unwrap().healthy());

    let db = KvEngine::mount(dir.path(), tolerant()).unwrap();
    let t = db.recovery_report().truncated_tail.clone().expect("tail truncated");
    assert_eq!((t.file.as_path(), t.offset), (last.as_path(), end));
    assert_prefix(&db, 50);
    drop(db);
    // The garbage is gone from the file, not just skipped.
    let after = fs::read(&last).unwrap();
    assert!(after[end as usize..end as usize + 30].iter().all(|&b| b == 0));
    assert!(check(dir.path()).unwrap().healthy());
}

#[test]
fn bit_flip_in_the_last_record_is_a_torn_tail() {
    let mut rng = Rng::new(0xF11);
    for _ in 0..8 {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), 120);
        let last = generation_files(dir.path()).pop().unwrap();
        let (lsn, start, end) = *record_extents(&last).last().unwrap();
        flip_byte(&last, start + rng.below(end - start));
        match KvEngine::mount(dir.path(), strict()) {
            Err(Error::TornTail { file, offset, .. }) => assert_eq!((file, offset), (last.clone(), start)),
            other => panic!("expected TornTail, got {other:?}"),
        }
        let db = KvEngine::mount(dir.path(), tolerant()).unwrap();
        assert_prefix(&db, lsn - 1);
    }
}

#[test]
fn bit_flip_before_the_tail_is_corruption_in_every_mode() {
    let mut rng = Rng::new(0xB17);
    for _ in 0..8 {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), 120);
        let last = generation_files(dir.path()).pop().unwrap();
        let extents = record_extents(&last);
        assert!(extents.len() > 3);
        let (_, start, end) = extents[rng.below(extents.len() as u64 - 2) as usize];
        flip_byte(&last, start + rng.below(end - start));
        for options in [strict(), tolerant()] {
            match KvEngine::mount(dir.path(), options) {
                Err(Error::Corrupted { file, offset, .. }) => assert_eq!((file, offset), (last.clone(), start)),
                other => panic!("expected Corrupted, got {other:?}"),
            }
        }
        assert!(!check(dir.path()).unwrap().healthy());
    }
}

#[test]
fn bit_flip_in_an_older_generation_recovery_needs() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 800);
    let gens = generation_files(dir.path());
    assert!(gens.len() >= 4, "{gens:?}");
    let victim = &gens[1];
    let (_, start, end) = record_extents(victim)[3];
    flip_byte(victim, start + (end - start) / 2);
    for options in [strict(), tolerant()] {
        match KvEngine::mount(dir.path(), options) {
            Err(Error::Corrupted { file, offset, .. }) => assert_eq!((&file, offset), (victim, start)),
            other => panic!("expected Corrupted in {victim:?}, got {other:?}"),
        }
    }
    let report = check(dir.path()).unwrap();
    assert!(report.problems.iter().any(|p| p.contains(&victim.display().to_string())), "{:?}", report.problems);
}

#[test]
fn bit_flip_below_the_checkpoint_is_found_by_check_only() {
    let dir = tempfile::tempdir().unwrap();
    let db: KvEngine = Engine::mount(dir.path(), tolerant()).unwrap();
    for i in 1..=800 {
        db.commit(put(&key(i), &"w".repeat(60))).unwrap();
    }
    db.dismount().unwrap();
    let gens = generation_files(dir.path());
    assert!(gens.len() >= 4, "{gens:?}");
    let victim = &gens[0];
    let (_, start, _) = record_extents(victim)[2];
    flip_byte(victim, start + 20);
    // Recovery starts at the checkpoint and never needs the damaged generation.
    let db = KvEngine::mount(dir.path(), strict()).unwrap();
    assert_eq!(count(&db), 800);
    drop(db);
    let report = check(dir.path()).unwrap();
    assert!(!report.healthy());
    assert!(report.problems.iter().any(|p| p.contains(&victim.display().to_string())));
}

#[test]
fn deleted_middle_generation_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 800);
    let gens = generation_files(dir.path());
    fs::remove_file(&gens[2]).unwrap();
    for options in [strict(), tolerant()] {
        match KvEngine::mount(dir.path(), options) {
            Err(Error::MissingGeneration { generation, file }) => {
                assert_eq!(generation, 3);
                assert_eq!(file, gens[2]);
            }
            other => panic!("expected MissingGeneration, got {other:?}"),
        }
    }
    let report = check(dir.path()).unwrap();
    assert!(report.problems.iter().any(|p| p.contains("missing generation 3")), "{:?}", report.problems);
}

#[test]
fn generation_from_another_database_is_foreign() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    build(a.path(), 800);
    build(b.path(), 800);
    let gens_a = generation_files(a.path());
    let gens_b = generation_files(b.path());
    fs::copy(&gens_b[2], &gens_a[2]).unwrap();
    match KvEngine::mount(a.path(), tolerant()) {
        Err(Error::ForeignDatabase { file, .. }) => assert_eq!(file, gens_a[2]),
        other => panic!("expected ForeignDatabase, got {other:?}"),
    }
    assert!(!check(a.path()).unwrap().healthy());
}

#[test]
fn broken_chain_is_detected() {
    // A generation whose header names a different predecessor checksum (a lost flush, a file from a diverged
    // copy of the same database) is refused even though every byte of it verifies on its own.
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 800);
    let gens = generation_files(dir.path());
    let victim = &gens[2];
    let mut bytes = fs::read(victim).unwrap();
    let mut header = GenerationHeader::decode(&bytes).unwrap();
    header.prev_checksum ^= 1;
    bytes[..HEADER_LEN].copy_from_slice(&header.encode());
    fs::write(victim, &bytes).unwrap();
    match KvEngine::mount(dir.path(), tolerant()) {
        Err(Error::BrokenChain { file, .. }) => assert_eq!(&file, victim),
        other => panic!("expected BrokenChain, got {other:?}"),
    }
    let report = check(dir.path()).unwrap();
    assert!(report.problems.iter().any(|p| p.contains("chain broken")), "{:?}", report.problems);
}

#[test]
fn record_that_does_not_decode_is_corruption_with_file_and_offset() {
    // A record whose checksum holds but whose payload is no operation of the machine (a bug in another
    // writer, a format change): recovery must name it as damage before applying anything.
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 30);
    let last = generation_files(dir.path()).pop().unwrap();
    let (lsn, _, end) = *record_extents(&last).last().unwrap();
    let mut bytes = fs::read(&last).unwrap();
    let header = GenerationHeader::decode(&bytes).unwrap();
    let mut frame = Vec::new();
    RecordSeal::for_header(&header).encode_into(lsn + 1, 1_700_000_000_000_000, &[0xFF, 0xFF, 0xFF], &mut frame);
    bytes.resize(bytes.len().max(end as usize + frame.len()), 0);
    bytes[end as usize..end as usize + frame.len()].copy_from_slice(&frame);
    fs::write(&last, &bytes).unwrap();

    match KvEngine::mount(dir.path(), tolerant()) {
        Err(Error::Corrupted { file, offset, reason }) => {
            assert_eq!((file, offset), (last.clone(), end));
            assert!(reason.contains(&format!("LSN {}", lsn + 1)), "{reason}");
        }
        other => panic!("expected Corrupted, got {other:?}"),
    }
    // The structural check cannot see it; the check that knows the machine does.
    assert!(check(dir.path()).unwrap().healthy());
    let report = mailstore::engine::check_as::<mailstore::kv::Kv>(dir.path()).unwrap();
    assert!(report.problems.iter().any(|p| p.contains(&format!("offset {end}"))), "{:?}", report.problems);
}

#[test]
fn a_flipped_bit_in_the_newest_checkpoint_slot_does_not_make_a_healthy_database_unmountable() {
    // Truncation follows the newest checkpoint; the older slot then names records whose generation is gone.
    let options = || Options::default().log_target_size(16 << 10).checkpoint_depth(1 << 30);
    let base = tempfile::tempdir().unwrap();
    let db: KvEngine = Engine::mount(base.path(), options()).unwrap();
    for i in 1..=100 {
        db.commit(put(&key(i), &"v".repeat(100))).unwrap();
    }
    db.checkpoint().unwrap();
    for i in 101..=1000 {
        db.commit(put(&key(i), &"v".repeat(100))).unwrap();
    }
    db.dismount().unwrap();
    // Damage each slot in turn (one of them is the newest): the database mounts whole either way.
    for slot in [0usize, 4096] {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["state", "logs", "segments"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
            for entry in fs::read_dir(base.path().join(sub)).unwrap() {
                let entry = entry.unwrap();
                fs::copy(entry.path(), dir.path().join(sub).join(entry.file_name())).unwrap();
            }
        }
        let mut ck = fs::read(base.path().join(CHECKPOINT_FILE)).unwrap();
        ck[slot + 24] ^= 0x04;
        fs::write(dir.path().join(CHECKPOINT_FILE), ck).unwrap();
        let db: KvEngine = Engine::mount(dir.path(), options()).unwrap_or_else(|e| panic!("slot {slot}: {e}"));
        assert_prefix(&db, 1000);
        db.dismount().unwrap();
        let report = check(dir.path()).unwrap();
        assert!(report.healthy(), "slot {slot}: {:?}", report.problems);
    }
}

/// One bit flipped in a table's name in LMDB's catalogue (the damage campaign found it twice: `mail.uids` read as
/// `mail.uits`). The mount used to create the table it no longer found, empty, and served mailboxes without their
/// messages. It is refused now, nothing is written, and `check` names the damage.
#[test]
fn a_table_lost_from_the_catalogue_is_refused_not_created_anew() {
    use mailstore::model::{MailEngine, MailOp, MailboxKind};
    let dir = tempfile::tempdir().unwrap();
    let db: MailEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    let op = MailOp::create_mailbox("cat@example.com", "Cat", MailboxKind::User);
    let mbx = op.mailbox().unwrap();
    db.commit(op).unwrap();
    db.deliver(mbx, None, b"Subject: kept\r\n\r\nkept\r\n".to_vec()).unwrap();
    db.dismount().unwrap();

    let data = dir.path().join(STATE_DIR).join("data.mdb");
    let mut bytes = fs::read(&data).unwrap();
    // LMDB copies pages on write, so free pages may hold older copies of the catalogue: flip the name in each.
    let found: Vec<usize> = bytes.windows(9).enumerate().filter(|(_, w)| *w == b"mail.uids").map(|(i, _)| i).collect();
    assert!(!found.is_empty(), "the table's name in the catalogue");
    for at in found {
        bytes[at + 7] ^= 0x10; // `d` becomes `t`
    }
    fs::write(&data, &bytes).unwrap();

    match Engine::<mailstore::model::MailStore>::mount(dir.path(), Options::default()) {
        Err(Error::NotADatabase { reason, .. }) => assert!(reason.contains("lacks"), "{reason}"),
        other => panic!("a state store without its UID index mounted: {:?}", other.map(|_| ())),
    }
    assert_eq!(fs::read(&data).unwrap(), bytes, "the refused mount wrote nothing");
    let report = mailstore::engine::check_as::<mailstore::model::MailStore>(dir.path()).unwrap();
    assert!(report.problems.iter().any(|p| p.contains("lacks")), "{report:?}");
}
