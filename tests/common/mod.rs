//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod folder;
pub mod history;
pub mod mail;

use std::fs;
use std::path::{Path, PathBuf};

use mailstore::internals::engine::LOGS_DIR;
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
    let mut at = mailstore::internals::log::HEADER_LEN as u64;
    mailstore::internals::log::scan(path, None, |r| {
        let end = at + (mailstore::internals::log::FRAME_HEADER_LEN + r.payload.len()) as u64;
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

/// A `u64` from the environment variable `name`, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The seed from `name`, or a fresh one from the clock (print it so a failure can be replayed).
pub fn seed_from(name: &str) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    })
}

/// Runs this test binary's ignored test `child` in a child process with `envs`, waits for its `mounted` line
/// (unless `kill_after` is under 15 ms: some kills land during mount and recovery), lets it run for
/// `kill_after`, kills it with SIGKILL, and returns the words of every complete line it printed that starts with
/// `ack` (a line cut short by the kill was never a complete acknowledgement).
pub fn run_killed_child(child: &str, envs: &[(&str, String)], kill_after: std::time::Duration) -> Vec<Vec<String>> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::Duration;
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", child, "--ignored", "--nocapture", "--test-threads=1"]);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut process = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = process.stdout.take().unwrap();
    let (mounted_tx, mounted_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if line.ends_with('\n') {
                let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
                // The test harness prints "test NAME ... " before the child's first line.
                if words.last().map(String::as_str) == Some("mounted") {
                    let _ = mounted_tx.send(());
                } else if words.first().map(String::as_str) == Some("ack") {
                    acks.push(words);
                }
            }
            line.clear();
        }
        acks
    });
    if kill_after > Duration::from_millis(15) {
        let _ = mounted_rx.recv_timeout(Duration::from_secs(60));
    }
    std::thread::sleep(kill_after);
    process.kill().unwrap(); // SIGKILL
    process.wait().unwrap();
    reader.join().unwrap()
}

/// Copies the directory tree `from` into `to` (created), file by file.
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}
