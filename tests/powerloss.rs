//! Power-loss simulation: a child process commits from several threads in `Durability::Full` under an
//! `LD_PRELOAD` shim (`tests/powerloss/shim.c`) that journals every write, truncate, sync, rename and unlink it
//! makes below the database directory. The parent kills it with SIGKILL, then rebuilds from the journal the disk
//! images a power loss at that instant could leave: everything a completed `fsync`/`fdatasync` covered is there;
//! each write made after its file's last sync is independently lost, kept, or torn at 512-byte sectors (so the
//! image may hold later unsynced writes without earlier ones). Every image must mount, hold every acknowledged
//! commit, and pass `check`.
//!
//! Model limits: creating, renaming and deleting files count as durable at once (the engine syncs the directory
//! right after each), and the file system itself is assumed not to tear its own metadata.
//! `MAILSTORE_POWERLOSS_ITERS` sets the number of kills (default 8); `MAILSTORE_POWERLOSS_SEED` replays a run.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use std::{env, fs, thread};

use common::{Rng, env_u64, run_killed_child, seed_from};
use mailstore::kv::{KvEngine, KvOp};
use mailstore::{Durability, Engine, Options};
use parking_lot::Mutex;

const CHILD_DIR: &str = "MAILSTORE_POWERLOSS_CHILD_DIR";
const THREADS: u64 = 4;
const IMAGES_PER_KILL: u64 = 3;

fn options(iteration: u64) -> Options {
    Options::default()
        .durability(Durability::Full)
        .log_target_size(16 << 10)
        .checkpoint_depth(48 << 10)
        .circular_logging(iteration % 2 == 1)
}

fn value(thread: u64, seq: u64) -> Vec<u8> {
    format!("{thread}:{seq}:{}", "p".repeat((seq % 61) as usize)).into_bytes()
}

/// The child: commits until killed, printing `ack THREAD SEQ` after each acknowledged commit.
#[test]
#[ignore = "run by `power_loss` in a child process"]
fn powerloss_child() {
    let Ok(dir) = env::var(CHILD_DIR) else { return };
    let iteration: u64 = env::var("MAILSTORE_POWERLOSS_CHILD_ITER").unwrap().parse().unwrap();
    let db: Arc<KvEngine> = Arc::new(Engine::mount(&dir, options(iteration)).unwrap());
    let out = Arc::new(Mutex::new(std::io::stdout()));
    println!("mounted");
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (db, out) = (Arc::clone(&db), Arc::clone(&out));
            thread::spawn(move || {
                for seq in 0.. {
                    let key = format!("t{t}-{seq:08}").into_bytes();
                    db.commit(KvOp::Put { key, value: value(t, seq) }).unwrap();
                    use std::io::Write;
                    let mut out = out.lock();
                    writeln!(out, "ack {t} {seq}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

fn build_shim() -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("powerloss-shim.so");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/powerloss/shim.c");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .arg("-ldl")
        .status()
        .expect("a C compiler (`cc`) is needed to build the power-loss shim");
    assert!(status.success(), "building {} failed", src.display());
    out
}

enum Op {
    Write { path: String, offset: u64, data: Vec<u8> },
    Truncate { path: String, len: u64 },
    Sync { path: String },
    Rename { from: String, to: String },
    Unlink { path: String },
}

fn parse_journal(bytes: &[u8]) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut at = 0;
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as usize;
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    loop {
        // A record cut short by the kill is ignored: the call it describes never returned.
        if at + 5 > bytes.len() {
            break;
        }
        let kind = bytes[at];
        let plen = u32_at(bytes, at + 1);
        let fixed = at + 5 + plen + 20;
        if fixed > bytes.len() {
            break;
        }
        let path = String::from_utf8(bytes[at + 5..at + 5 + plen].to_vec()).unwrap();
        let a = u64_at(bytes, at + 5 + plen);
        let dlen = u32_at(bytes, at + 5 + plen + 16);
        if fixed + dlen > bytes.len() {
            break;
        }
        let data = bytes[fixed..fixed + dlen].to_vec();
        at = fixed + dlen;
        ops.push(match kind {
            1 => Op::Write { path, offset: a, data },
            2 => Op::Truncate { path, len: a },
            3 => Op::Sync { path },
            4 => Op::Rename { from: path, to: String::from_utf8(data).unwrap() },
            5 => Op::Unlink { path },
            k => panic!("unknown journal record kind {k}"),
        });
    }
    ops
}

fn apply_write(file: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if file.len() < end {
        file.resize(end, 0);
    }
    file[offset as usize..end].copy_from_slice(data);
}

/// Replays the journal into what the disk holds after a power loss, choosing the fate of unsynced writes with
/// `rng`.
fn power_loss_image(ops: &[Op], rng: &mut Rng) -> BTreeMap<String, Vec<u8>> {
    let mut durable: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut pending: HashMap<String, Vec<&Op>> = HashMap::new();
    for op in ops {
        match op {
            Op::Write { path, .. } | Op::Truncate { path, .. } => pending.entry(path.clone()).or_default().push(op),
            Op::Sync { path } => {
                for op in pending.remove(path).unwrap_or_default() {
                    let file = durable.entry(path.clone()).or_default();
                    match op {
                        Op::Write { offset, data, .. } => apply_write(file, *offset, data),
                        Op::Truncate { len, .. } => file.resize(*len as usize, 0),
                        _ => unreachable!(),
                    }
                }
            }
            Op::Rename { from, to } => {
                if let Some(file) = durable.remove(from) {
                    durable.insert(to.clone(), file);
                }
                if let Some(p) = pending.remove(from) {
                    pending.insert(to.clone(), p);
                }
            }
            Op::Unlink { path } => {
                durable.remove(path);
                pending.remove(path);
            }
        }
    }
    // The power fails: each unsynced write is lost, kept, or torn (a random subset of its sectors).
    let mut paths: Vec<_> = pending.keys().cloned().collect();
    paths.sort();
    for path in paths {
        for op in &pending[&path] {
            let file = durable.entry(path.clone()).or_default();
            match op {
                Op::Write { offset, data, .. } => match rng.below(3) {
                    0 => {}
                    1 => apply_write(file, *offset, data),
                    _ => {
                        for (i, sector) in data.chunks(512).enumerate() {
                            if rng.below(2) == 0 {
                                apply_write(file, offset + (i * 512) as u64, sector);
                            }
                        }
                    }
                },
                Op::Truncate { len, .. } => {
                    if rng.below(2) == 0 {
                        file.resize(*len as usize, 0);
                    }
                }
                _ => unreachable!(),
            }
        }
    }
    durable
}

fn write_image(files: &BTreeMap<String, Vec<u8>>, dir: &Path) {
    for (path, bytes) in files {
        let target = dir.join(path);
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::write(target, bytes).unwrap();
    }
}

#[test]
fn power_loss() {
    let iterations = env_u64("MAILSTORE_POWERLOSS_ITERS", 8);
    let seed = seed_from("MAILSTORE_POWERLOSS_SEED");
    eprintln!("power loss: {iterations} kills x {IMAGES_PER_KILL} images, MAILSTORE_POWERLOSS_SEED={seed}");
    let shim = build_shim();
    let mut rng = Rng::new(seed);
    let mut verified = 0;
    for iteration in 0..iterations {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().canonicalize().unwrap().join("db");
        fs::create_dir_all(&dir).unwrap();
        let journal = work.path().join("journal");
        let envs = [
            (CHILD_DIR, dir.display().to_string()),
            ("MAILSTORE_POWERLOSS_CHILD_ITER", iteration.to_string()),
            ("LD_PRELOAD", shim.display().to_string()),
            ("MS_SHIM_ROOT", dir.display().to_string()),
            ("MS_SHIM_JOURNAL", journal.display().to_string()),
        ];
        let mut acked: HashMap<u64, u64> = HashMap::new();
        for words in run_killed_child("powerloss_child", &envs, Duration::from_millis(30 + rng.below(250))) {
            let (t, seq): (u64, u64) = (words[1].parse().unwrap(), words[2].parse().unwrap());
            let h = acked.entry(t).or_insert(0);
            *h = (*h).max(seq);
        }
        assert!(!acked.is_empty(), "iteration {iteration}: nothing was acknowledged");
        let ops = parse_journal(&fs::read(&journal).unwrap());

        for image_no in 0..IMAGES_PER_KILL {
            let files = power_loss_image(&ops, &mut rng);
            let image = tempfile::tempdir().unwrap();
            write_image(&files, image.path());
            let context = format!("iteration {iteration} image {image_no} (seed {seed})");
            let db: KvEngine = Engine::mount(image.path(), options(iteration))
                .unwrap_or_else(|e| panic!("{context}: the power-loss image does not mount: {e}"));
            let pairs = db.read(|kv, txn| kv.dump(txn)).unwrap();
            let mut present: HashMap<u64, Vec<u64>> = HashMap::new();
            for (k, v) in &pairs {
                let k = String::from_utf8(k.clone()).unwrap();
                let (t, seq) = k.trim_start_matches('t').split_once('-').unwrap();
                let (t, seq): (u64, u64) = (t.parse().unwrap(), seq.parse().unwrap());
                assert_eq!(v, &value(t, seq), "{context}: {k} has a wrong value");
                present.entry(t).or_default().push(seq);
            }
            for (t, highest) in &acked {
                let seqs = present.remove(t).unwrap_or_default();
                let n = seqs.len() as u64;
                assert!(
                    n > *highest,
                    "{context}: thread {t} lost acknowledged commits: {n} present, acked up to {highest}"
                );
                assert!(seqs.iter().enumerate().all(|(i, s)| i as u64 == *s), "{context}: gap in thread {t}'s commits");
            }
            db.dismount().unwrap();
            let report = mailstore::engine::check(image.path()).unwrap();
            assert!(report.healthy(), "{context}: {:?}", report.problems);
            verified += 1;
        }
    }
    eprintln!("power loss: {verified} images verified");
}
