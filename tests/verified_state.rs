//! Verified state: a flipped bit in `state/data.mdb` inside a value or a key of a known entry is an
//! `Error::Damaged` naming the database, the table and the key on read (never a wrong answer), and `check` lists
//! it (ARCHITECTURE.md, "Verified state").

mod common;

use std::fs;
use std::path::Path;

use common::*;
use mailstore::engine::{check_as, with_state};
use mailstore::kv::{Kv, KvEngine, KvOp};
use mailstore::{Engine, Error, Options};

const ENTRIES: u64 = 100;
const VALUE_OF_42: &[u8] = b"VALUE-OF-FORTY-TWO:0123456789";

/// The key of entry `i`: gaps between them, so that a flipped bit can make a key that still sorts between its
/// neighbours.
fn k(i: u64) -> String {
    key(i * 10)
}

fn value(i: u64) -> Vec<u8> {
    if i == 42 { VALUE_OF_42.to_vec() } else { format!("value of {i}").into_bytes() }
}

/// A dismounted kv database whose entries were all written in one transaction (so each leaf exists once).
fn build(dir: &Path) -> Vec<u8> {
    let db: KvEngine = Engine::mount(dir, Options::default()).unwrap();
    let pairs = (1..=ENTRIES).map(|i| (k(i).into_bytes(), value(i))).collect();
    db.commit(KvOp::PutMany(pairs)).unwrap();
    db.dismount().unwrap();
    fs::read(data_mdb(dir)).unwrap()
}

fn data_mdb(dir: &Path) -> std::path::PathBuf {
    dir.join("state").join("data.mdb")
}

fn find_once(haystack: &[u8], needle: &[u8]) -> usize {
    let hits: Vec<usize> =
        haystack.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect();
    assert_eq!(hits.len(), 1, "{:?} found {} times in data.mdb", String::from_utf8_lossy(needle), hits.len());
    hits[0]
}

fn with_bit_flipped(dir: &Path, original: &[u8], bit: usize) {
    let mut bytes = original.to_vec();
    bytes[bit / 8] ^= 1 << (bit % 8);
    fs::write(data_mdb(dir), bytes).unwrap();
}

fn read(dir: &Path, k: &[u8]) -> mailstore::Result<Option<Vec<u8>>> {
    with_state::<Kv, _>(dir, |kv, txn| kv.get(txn, k))
}

fn assert_damaged(result: mailstore::Result<Option<Vec<u8>>>, dir: &Path, expect_key: Option<&str>, what: &str) {
    match result {
        Err(e @ Error::Damaged { .. }) => {
            assert!(e.is_damage());
            let Error::Damaged { database, table, key } = &e else { unreachable!() };
            assert_eq!(database, dir, "{what}");
            assert_eq!(table, "kv.data", "{what}");
            if let Some(k) = expect_key {
                assert_eq!(key, k, "{what}");
            }
        }
        other => panic!("{what}: expected Error::Damaged, got {other:?}"),
    }
}

/// The damaged entries `check` reports.
fn checked(dir: &Path) -> Vec<String> {
    check_as::<Kv>(dir).unwrap().problems.into_iter().filter(|p| p.contains("fails its checksum")).collect()
}

#[test]
fn every_bit_flip_in_a_value_is_a_typed_error_naming_table_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let original = build(dir.path());
    assert!(checked(dir.path()).is_empty());
    let at = find_once(&original, VALUE_OF_42);
    let key42 = k(42);
    for bit in at * 8..(at + VALUE_OF_42.len()) * 8 {
        with_bit_flipped(dir.path(), &original, bit);
        assert_damaged(read(dir.path(), key42.as_bytes()), dir.path(), Some(&key42), &format!("value bit {bit}"));
        let found = checked(dir.path());
        assert_eq!(found.len(), 1, "value bit {bit}: {found:?}");
        assert!(found[0].contains(&format!("entry {key42} of table kv.data")), "{found:?}");
        // Its neighbours are intact and still read.
        assert_eq!(read(dir.path(), k(41).as_bytes()).unwrap(), Some(value(41)));
    }
    // A mount reads it the same way.
    with_bit_flipped(dir.path(), &original, at * 8 + 3);
    let db: KvEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    assert_damaged(db.read(|kv, txn| kv.get(txn, key42.as_bytes())), dir.path(), Some(&key42), "mounted");
    assert!(matches!(db.read(|kv, txn| kv.dump(txn)), Err(Error::Damaged { .. })), "a walk meets it too");
    db.dismount().unwrap();
}

#[test]
fn every_bit_flip_in_a_key_is_found_and_never_read_as_absent() {
    let dir = tempfile::tempdir().unwrap();
    let original = build(dir.path());
    let key42 = k(42);
    let at = find_once(&original, key42.as_bytes());
    let (below, above) = (k(41), k(43));
    let mut moved = 0;
    for bit in at * 8..(at + key42.len()) * 8 {
        with_bit_flipped(dir.path(), &original, bit);
        let mut flipped = key42.clone().into_bytes();
        flipped[bit / 8 - at] ^= 1 << (bit % 8);
        let shown = mailstore::internals::engine::display_key(&flipped);
        let in_order = below.as_bytes() < &flipped[..] && &flipped[..] < above.as_bytes();
        if !in_order {
            // The page's key order is broken: the structural verifier of data.mdb refuses the file first.
            let problems = check_as::<Kv>(dir.path()).unwrap().problems;
            assert!(problems.iter().any(|p| p.contains("data.mdb")), "key bit {bit}: {problems:?}");
            continue;
        }
        let found = checked(dir.path());
        assert_eq!(found.len(), 1, "key bit {bit}: {found:?}");
        assert!(found[0].contains(&format!("entry {shown} of table kv.data")), "{found:?}");
        // While the page's key order holds (otherwise the structural verifier of data.mdb refuses the file),
        // the flipped key read under its own name fails, and the original key is not answered "absent": its
        // damaged neighbour is reported.
        if below.as_bytes() < &flipped[..] && &flipped[..] < above.as_bytes() {
            assert_damaged(read(dir.path(), &flipped), dir.path(), Some(&shown), &format!("flipped key, bit {bit}"));
            assert_damaged(read(dir.path(), key42.as_bytes()), dir.path(), Some(&shown), &format!("key bit {bit}"));
            moved += 1;
        }
    }
    assert!(moved >= 7, "only {moved} flips kept the key order");
}

#[test]
fn check_reports_every_damaged_entry_and_the_engine_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let original = build(dir.path());
    let mut bytes = original.clone();
    for i in [13u64, 42, 99] {
        let v = value(i);
        let at = find_once(&original, &v);
        bytes[at] ^= 0x01;
    }
    fs::write(data_mdb(dir.path()), &bytes).unwrap();
    let found = checked(dir.path());
    assert_eq!(found.len(), 3, "{found:?}");
    for i in [13u64, 42, 99] {
        assert!(found.iter().any(|p| p.contains(&format!("entry {} of table kv.data", k(i)))), "{found:?}");
    }
    // The engine's metadata is verified too: a flip in the machine name of engine.meta.
    // (Every copy of its page is flipped: older ones, left by earlier transactions, are free pages.)
    let mut bytes = original.clone();
    let needle = b"machinekv";
    let hits: Vec<usize> =
        original.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect();
    assert!(!hits.is_empty());
    for at in hits {
        bytes[at + b"machine".len()] ^= 0x04;
    }
    fs::write(data_mdb(dir.path()), &bytes).unwrap();
    let report = check_as::<Kv>(dir.path()).unwrap();
    assert!(report.problems.iter().any(|p| p.contains("entry machine of table engine.meta")), "{:?}", report.problems);
    match Engine::<Kv>::mount(dir.path(), Options::default()) {
        Err(Error::Damaged { table, key, .. }) => {
            assert_eq!((table.as_str(), key.as_str()), ("engine.meta", "machine"))
        }
        other => panic!("{:?}", other.map(drop)),
    }
}
