//! Crash torture: a child process commits from several threads and prints every acknowledgement; the parent
//! kills it with SIGKILL at a random moment, remounts, and checks that every acknowledged commit is present
//! and nothing else is damaged. `MAILSTORE_TORTURE_ITERS` sets the number of kills (default 20);
//! `MAILSTORE_TORTURE_SEED` replays a run.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use std::{env, thread};

use common::*;
use mailstore::kv::{KvEngine, KvOp};
use mailstore::{Durability, Engine, Options};
use parking_lot::Mutex;

const CHILD_DIR: &str = "MAILSTORE_TORTURE_CHILD_DIR";
const CHILD_ITER: &str = "MAILSTORE_TORTURE_CHILD_ITER";
const THREADS: u64 = 4;

fn options(iteration: u64) -> Options {
    // Small generations and a shallow checkpoint so rolls, checkpoints and truncation happen under the kill;
    // every third iteration recycles files; odd iterations run Relaxed (which also promises kill -9 safety).
    Options::default()
        .log_target_size(16 << 10)
        .checkpoint_depth(64 << 10)
        .circular_logging(iteration % 3 == 2)
        .durability(if iteration % 2 == 1 { Durability::Relaxed } else { Durability::Full })
}

fn value(iteration: u64, thread: u64, seq: u64) -> String {
    format!("{iteration}:{thread}:{seq}:{}", "x".repeat((seq % 97) as usize))
}

/// The child: commits until killed, printing `ack ITER THREAD SEQ LSN` after each acknowledged commit.
#[test]
#[ignore = "run by `crash_torture` in a child process"]
fn torture_child() {
    let (Ok(dir), Ok(iteration)) = (env::var(CHILD_DIR), env::var(CHILD_ITER)) else { return };
    let iteration: u64 = iteration.parse().unwrap();
    let db: Arc<KvEngine> = Arc::new(Engine::mount(&dir, options(iteration)).unwrap());
    let out = Arc::new(Mutex::new(std::io::stdout()));
    println!("mounted");
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (db, out) = (Arc::clone(&db), Arc::clone(&out));
            thread::spawn(move || {
                for seq in 0.. {
                    let key = format!("i{iteration}-t{t}-{seq:08}");
                    let committed =
                        db.commit(KvOp::Put { key: key.into_bytes(), value: value(iteration, t, seq).into_bytes() });
                    let lsn = committed.unwrap().lsn;
                    use std::io::Write;
                    let mut out = out.lock();
                    writeln!(out, "ack {iteration} {t} {seq} {lsn}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

struct Acks {
    /// Highest acknowledged sequence number per (iteration, thread).
    highest: HashMap<(u64, u64), u64>,
    max_lsn: u64,
    count: u64,
}

fn run_child(dir: &Path, iteration: u64, kill_after: Duration) -> Acks {
    let envs = [(CHILD_DIR, dir.display().to_string()), (CHILD_ITER, iteration.to_string())];
    let mut acks = Acks { highest: HashMap::new(), max_lsn: 0, count: 0 };
    for words in run_killed_child("torture_child", &envs, kill_after) {
        let n: Vec<u64> = words[1..].iter().map(|w| w.parse().unwrap()).collect();
        let entry = acks.highest.entry((n[0], n[1])).or_insert(0);
        *entry = (*entry).max(n[2]);
        acks.max_lsn = acks.max_lsn.max(n[3]);
        acks.count += 1;
    }
    acks
}

#[test]
fn crash_torture() {
    let iterations: u64 = env::var("MAILSTORE_TORTURE_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let seed: u64 = env::var("MAILSTORE_TORTURE_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("crash torture: {iterations} kills, MAILSTORE_TORTURE_SEED={seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut all: HashMap<(u64, u64), u64> = HashMap::new();
    let mut total_acks = 0;
    for iteration in 0..iterations {
        let kill_after = match rng.below(10) {
            0 => Duration::from_millis(rng.below(15)),
            _ => Duration::from_millis(20 + rng.below(250)),
        };
        let acks = run_child(dir.path(), iteration, kill_after);
        total_acks += acks.count;
        all.extend(acks.highest.iter().map(|(k, v)| (*k, *v)));

        let db: KvEngine = Engine::mount(dir.path(), options(iteration)).unwrap();
        assert!(db.status().applied_lsn >= acks.max_lsn, "iteration {iteration} (seed {seed}): LSNs went back");
        let pairs = db.read(|kv, txn| kv.dump(txn)).unwrap();
        let mut present: HashMap<(u64, u64), Vec<u64>> = HashMap::new();
        for (k, v) in &pairs {
            let k = String::from_utf8(k.clone()).unwrap();
            let parts: Vec<&str> = k.split(['i', '-', 't']).filter(|s| !s.is_empty()).collect();
            let (it, t, seq): (u64, u64, u64) =
                (parts[0].parse().unwrap(), parts[1].parse().unwrap(), parts[2].parse().unwrap());
            assert_eq!(v, value(it, t, seq).as_bytes(), "iteration {iteration} (seed {seed}): {k} has a wrong value");
            present.entry((it, t)).or_default().push(seq);
        }
        // Every acknowledged commit is present, and each thread's commits form a gapless prefix that ends at
        // most one past its last acknowledgement (the commit in flight at the kill may or may not be there).
        for ((it, t), highest) in &all {
            let seqs = present.get(&(*it, *t)).cloned().unwrap_or_default();
            let n = seqs.len() as u64;
            assert!(
                n > *highest,
                "iteration {iteration} (seed {seed}): i{it}-t{t} lost acknowledged commits: {n} present, acked up to {highest}"
            );
            assert!(
                n <= highest + 2,
                "iteration {iteration} (seed {seed}): i{it}-t{t} has {n} commits, acked up to {highest}"
            );
            assert!(seqs.iter().enumerate().all(|(i, s)| i as u64 == *s), "iteration {iteration}: gap in i{it}-t{t}");
        }
        db.dismount().unwrap();
        let report = mailstore::engine::check(dir.path()).unwrap();
        assert!(report.healthy(), "iteration {iteration} (seed {seed}): {:?}", report.problems);
        // Commits in flight at the kill that did land must not be re-acknowledged by the next child: each
        // iteration uses its own key prefix.
    }
    eprintln!("crash torture: {iterations} kills, {total_acks} acknowledged commits verified");
    assert!(total_acks > 0, "the children never acknowledged anything");
}
