//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use mailstore::engine::LOGS_DIR;
use mailstore::kv::{KvEngine, KvOp};

/// A small deterministic PRNG (xorshift64*), so failures reproduce from the printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub fn put(key: &str, value: &str) -> KvOp {
    KvOp::Put { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec() }
}

pub fn key(i: u64) -> String {
    format!("key{i:06}")
}

pub fn get(db: &KvEngine, key: &str) -> Option<Vec<u8>> {
    db.read(|kv, txn| kv.get(txn, key.as_bytes())).unwrap()
}

pub fn count(db: &KvEngine) -> u64 {
    db.read(|kv, txn| kv.len(txn)).unwrap()
}

/// Generation files of the database in `dir`, oldest first.
pub fn generation_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join(LOGS_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// `(lsn, offset of the frame, offset just past it)` of every record of a generation file.
pub fn record_extents(path: &Path) -> Vec<(u64, u64, u64)> {
    let mut extents = Vec::new();
    let mut at = mailstore::log::format::HEADER_LEN as u64;
    mailstore::log::generation::scan(path, None, |r| {
        let end = at + (mailstore::log::format::FRAME_HEADER_LEN + r.payload.len()) as u64;
        extents.push((r.lsn, at, end));
        at = end;
        Ok(())
    })
    .unwrap();
    extents
}

pub fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x40;
    fs::write(path, bytes).unwrap();
}
