//! Commit throughput of the engine, measured against the raw `fdatasync` rate of the disk it runs on.
//!
//! One run measures:
//!
//! * `fdatasync_baseline/append_4k`: append 4 KiB to a file and `fdatasync` it, one at a time: what one
//!   durable write costs on this disk when it also grows the file (the figure the targets are stated against);
//! * `fdatasync_baseline/overwrite_4k_preallocated`: the same into a preallocated, already written file, which
//!   is what the engine's log does (generations are preallocated, see `log::writer`);
//! * `commit_full/committers/N` for N = 1, 8, 64: `KvOp::Put` commits (distinct 9-byte keys, 100-byte
//!   values) from N threads at once into one engine mounted with `Durability::Full` and default options;
//! * `commit_relaxed/committers/64`: the same with `Durability::Relaxed`;
//! * `fdatasync_baseline_end/append_4k`: the append baseline again, to show how much the disk drifted during the
//!   run; the reference rate for the ratios is that of both append runs together.
//!
//! Each criterion iteration is one commit (or one synced 4 KiB write): `iters` commits are spread over the N
//! threads and the wall time of all of them is reported. The engine's counters are read around every sample,
//! and after criterion's own report a summary table gives, over the measurement samples (warm-up excluded):
//! commits/s, commits per log `fdatasync`, batches, LMDB commits, and the ratio to the raw `fdatasync` rate.
//!
//! The files go to `MAILSTORE_BENCH_DIR` if set, else to the system temporary directory unless that is a memory
//! file system (`tmpfs`, where `fdatasync` costs nothing and the comparison would be meaningless), in which case
//! they go under the crate's `target/bench-tmp`. `MAILSTORE_BENCH_QUICK=1` shrinks the run to a smoke test.
//!
//! ```text
//! cargo bench --bench engine
//! MAILSTORE_BENCH_QUICK=1 cargo bench --bench engine
//! ```

use std::env;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::{Call, Record, Summary, Tally, bench_root};
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, measurement::WallTime};
use mailstore::kv::{KvEngine, KvOp};
use mailstore::{Durability, Engine, EngineStats, Options};

/// Size of one raw write.
const BLOCK: usize = 4096;
/// Size of the preallocated file the overwrite baseline cycles through.
const PREALLOC: u64 = 16 << 20;
/// Size of each committed value.
const VALUE_LEN: usize = 100;
/// Committer counts for `Durability::Full`.
const COMMITTERS: [usize; 3] = [1, 8, 64];
/// Committer count for `Durability::Relaxed`.
const RELAXED_COMMITTERS: usize = 64;

/// How long criterion runs each benchmark.
struct Config {
    quick: bool,
    sample_size: usize,
    warm_up: Duration,
    measurement: Duration,
}

impl Config {
    fn from_env() -> Self {
        let quick = env::var("MAILSTORE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        if quick {
            Config {
                quick,
                sample_size: 10,
                warm_up: Duration::from_millis(100),
                measurement: Duration::from_millis(300),
            }
        } else {
            Config { quick, sample_size: 10, warm_up: Duration::from_secs(1), measurement: Duration::from_secs(4) }
        }
    }

    fn apply(&self, group: &mut BenchmarkGroup<'_, WallTime>) {
        group.sample_size(self.sample_size).warm_up_time(self.warm_up).measurement_time(self.measurement);
    }
}

/// The engine counters this bench looks at (a subset of [`EngineStats`], so that new fields don't matter).
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    commits: u64,
    batches: u64,
    log_syncs: u64,
    state_commits: u64,
    checkpoints: u64,
    map_resizes: u64,
    generations_created: u64,
    bytes_logged: u64,
}

impl Tally for Counts {
    fn add(&mut self, other: Counts) {
        self.add_counts(other);
    }
}

impl Counts {
    fn of(s: &EngineStats) -> Self {
        Counts {
            commits: s.commits,
            batches: s.batches,
            log_syncs: s.log_syncs,
            state_commits: s.state_commits,
            checkpoints: s.checkpoints,
            map_resizes: s.map_resizes,
            generations_created: s.generations_created,
            bytes_logged: s.bytes_logged,
        }
    }

    fn since(self, before: Counts) -> Self {
        Counts {
            commits: self.commits - before.commits,
            batches: self.batches - before.batches,
            log_syncs: self.log_syncs - before.log_syncs,
            state_commits: self.state_commits - before.state_commits,
            checkpoints: self.checkpoints - before.checkpoints,
            map_resizes: self.map_resizes - before.map_resizes,
            generations_created: self.generations_created - before.generations_created,
            bytes_logged: self.bytes_logged - before.bytes_logged,
        }
    }

    fn add_counts(&mut self, o: Counts) {
        self.commits += o.commits;
        self.batches += o.batches;
        self.log_syncs += o.log_syncs;
        self.state_commits += o.state_commits;
        self.checkpoints += o.checkpoints;
        self.map_resizes += o.map_resizes;
        self.generations_created += o.generations_created;
        self.bytes_logged += o.bytes_logged;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    RawAppend,
    RawOverwrite,
    Commit { durability: Durability, committers: usize },
}

/// Every benchmark of this run, in registration order.
static RECORDS: Mutex<Vec<Record<Kind, Counts>>> = Mutex::new(Vec::new());

fn register(name: String, kind: Kind) -> Arc<Mutex<Vec<Call<Counts>>>> {
    common::register(&RECORDS, name, kind)
}

// ---------------------------------------------------------------------------------------------------------------
// Where the files go.

// ---------------------------------------------------------------------------------------------------------------
// Baseline: one synced 4 KiB write at a time.

fn bench_raw(c: &mut Criterion, cfg: &Config, root: &Path) {
    const NAME: &str = "fdatasync_baseline";
    let mut group = c.benchmark_group(NAME);
    cfg.apply(&mut group);
    group.throughput(Throughput::Elements(1));
    bench_append(&mut group, NAME, root);
    bench_overwrite(&mut group, NAME, root);
    group.finish();
}

/// The append baseline again after the engine benchmarks: other work on the machine (or the disk's own moods)
/// changes the `fdatasync` rate over a run, and the two measurements show by how much.
fn bench_raw_again(c: &mut Criterion, cfg: &Config, root: &Path) {
    const NAME: &str = "fdatasync_baseline_end";
    let mut group = c.benchmark_group(NAME);
    cfg.apply(&mut group);
    group.throughput(Throughput::Elements(1));
    bench_append(&mut group, NAME, root);
    group.finish();
}

/// Appends: every `fdatasync` also commits the new file size (a journal commit on ext4).
fn bench_append(group: &mut BenchmarkGroup<'_, WallTime>, group_name: &str, root: &Path) {
    let block = vec![0xa5u8; BLOCK];
    let dir = tempfile::tempdir_in(root).expect("tempdir");
    let mut file =
        OpenOptions::new().create_new(true).append(true).open(dir.path().join("append")).expect("create file");
    let calls = register(format!("{group_name}/append_4k"), Kind::RawAppend);
    group.bench_function("append_4k", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                file.write_all(&block).expect("write");
                file.sync_data().expect("fdatasync");
            }
            let elapsed = start.elapsed();
            calls.lock().unwrap().push(Call { iters, elapsed, counts: Counts::default() });
            elapsed
        })
    });
}

/// Overwrites of blocks already written and synced: data only, no metadata, like the preallocated log.
fn bench_overwrite(group: &mut BenchmarkGroup<'_, WallTime>, group_name: &str, root: &Path) {
    let block = vec![0xa5u8; BLOCK];
    let dir = tempfile::tempdir_in(root).expect("tempdir");
    let file = File::create_new(dir.path().join("overwrite")).expect("create file");
    let zeros = vec![0u8; 1 << 20];
    for at in (0..PREALLOC).step_by(zeros.len()) {
        file.write_all_at(&zeros, at).expect("preallocate");
    }
    file.sync_all().expect("fsync");
    let blocks = PREALLOC / BLOCK as u64;
    let mut next = 0u64;
    let calls = register(format!("{group_name}/overwrite_4k_preallocated"), Kind::RawOverwrite);
    group.bench_function("overwrite_4k_preallocated", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                file.write_all_at(&block, (next % blocks) * BLOCK as u64).expect("write");
                file.sync_data().expect("fdatasync");
                next += 1;
            }
            let elapsed = start.elapsed();
            calls.lock().unwrap().push(Call { iters, elapsed, counts: Counts::default() });
            elapsed
        })
    });
}

// ---------------------------------------------------------------------------------------------------------------
// Engine commits.

/// Commits `iters` puts from `committers` threads at once; returns the wall time from the moment they are all
/// released until the last commit returned.
fn run_commits(db: &KvEngine, committers: usize, iters: u64, next_key: &AtomicU64) -> Duration {
    let threads = (committers as u64).min(iters).max(1);
    let barrier = Barrier::new(threads as usize + 1);
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let share = iters / threads + u64::from(t < iters % threads);
                let barrier = &barrier;
                s.spawn(move || {
                    let value = vec![b'v'; VALUE_LEN];
                    barrier.wait();
                    for _ in 0..share {
                        let n = next_key.fetch_add(1, Ordering::Relaxed);
                        let mut key = Vec::with_capacity(9);
                        key.push(b'k');
                        key.extend_from_slice(&n.to_be_bytes());
                        db.commit(KvOp::Put { key, value: value.clone() }).expect("commit");
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().expect("committer panicked");
        }
        start.elapsed()
    })
}

fn bench_commits(group: &mut BenchmarkGroup<'_, WallTime>, root: &Path, durability: Durability, committers: usize) {
    let name = format!("{}/committers/{committers}", group_name(durability));
    // One engine for all the samples of this committer count: mounting is not what is measured.
    let dir = tempfile::tempdir_in(root).expect("tempdir");
    let db: KvEngine = Engine::mount(dir.path(), Options::default().durability(durability)).expect("mount");
    let next_key = AtomicU64::new(0);
    let calls = register(name, Kind::Commit { durability, committers });
    group.bench_function(BenchmarkId::new("committers", committers), |b| {
        b.iter_custom(|iters| {
            let before = Counts::of(&db.stats());
            let elapsed = run_commits(&db, committers, iters, &next_key);
            // The writer counts a batch before it answers its committers, so every commit is in here.
            let counts = Counts::of(&db.stats()).since(before);
            calls.lock().unwrap().push(Call { iters, elapsed, counts });
            elapsed
        })
    });
    db.dismount().expect("dismount");
}

fn group_name(durability: Durability) -> &'static str {
    match durability {
        Durability::Full => "commit_full",
        Durability::Relaxed => "commit_relaxed",
    }
}

fn bench_engine(c: &mut Criterion, cfg: &Config, root: &Path) {
    let mut group = c.benchmark_group(group_name(Durability::Full));
    cfg.apply(&mut group);
    group.throughput(Throughput::Elements(1));
    for committers in COMMITTERS {
        bench_commits(&mut group, root, Durability::Full, committers);
    }
    group.finish();

    let mut group = c.benchmark_group(group_name(Durability::Relaxed));
    cfg.apply(&mut group);
    group.throughput(Throughput::Elements(1));
    bench_commits(&mut group, root, Durability::Relaxed, RELAXED_COMMITTERS);
    group.finish();
}

// ---------------------------------------------------------------------------------------------------------------
// Summary.

fn print_summary(cfg: &Config) {
    let records = RECORDS.lock().unwrap();
    let summaries: Vec<Summary<Kind, Counts>> =
        records.iter().filter_map(|r| Summary::of(r, cfg.sample_size)).collect();
    if summaries.is_empty() {
        return;
    }
    // The reference rate of a baseline measured more than once (the append one, before and after the engine
    // benchmarks) is that of all its samples together.
    let raw = |kind: Kind| {
        let (ops, time) = summaries
            .iter()
            .filter(|s| s.kind == kind)
            .fold((0u64, Duration::ZERO), |(ops, time), s| (ops + s.ops, time + s.elapsed));
        (ops > 0).then(|| ops as f64 / time.as_secs_f64())
    };
    let raw_append = raw(Kind::RawAppend);
    let raw_overwrite = raw(Kind::RawOverwrite);
    let ratio = |rate: f64, base: Option<f64>| base.map_or_else(|| "n/a".to_string(), |b| format!("{:.1}x", rate / b));

    println!();
    println!(
        "mailstore engine summary{} (measurement samples only, warm-up excluded; rate = total ops / total time)",
        if cfg.quick { " [MAILSTORE_BENCH_QUICK: smoke run, figures not meaningful]" } else { "" }
    );
    println!(
        "{:<44} {:>7} {:>9} {:>11} {:>12} {:>9} {:>9} {:>10} {:>9} {:>6} {:>5} {:>10} {:>10}",
        "benchmark",
        "samples",
        "ops",
        "ops/s",
        "median op/s",
        "batches",
        "fsyncs",
        "commits/fs",
        "LMDB cmt",
        "ckpts",
        "gens",
        "x append",
        "x overwr"
    );
    for s in &summaries {
        let rate = s.rate();
        let (batches, syncs, per_sync, lmdb, ckpts, gens) = match s.kind {
            Kind::Commit { .. } => {
                let k = s.counts;
                let per_sync = if k.log_syncs == 0 {
                    "-".to_string()
                } else {
                    format!("{:.1}", k.commits as f64 / k.log_syncs as f64)
                };
                (
                    k.batches.to_string(),
                    k.log_syncs.to_string(),
                    per_sync,
                    k.state_commits.to_string(),
                    k.checkpoints.to_string(),
                    k.generations_created.to_string(),
                )
            }
            _ => (String::from("-"), s.ops.to_string(), "-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<44} {:>7} {:>9} {:>11.0} {:>12.0} {:>9} {:>9} {:>10} {:>9} {:>6} {:>5} {:>10} {:>10}",
            s.name,
            s.samples,
            s.ops,
            rate,
            s.median_rate(),
            batches,
            syncs,
            per_sync,
            lmdb,
            ckpts,
            gens,
            ratio(rate, raw_append),
            ratio(rate, raw_overwrite)
        );
        if let Kind::Commit { .. } = s.kind {
            let k = s.counts;
            if k.commits != s.ops {
                println!("  note: the engine counted {} commits for {} timed commits", k.commits, s.ops);
            }
            if k.batches > 0 {
                println!(
                    "  {:.1} commits/batch, {:.0} bytes logged/commit, {:.0} us/batch, {} map resizes",
                    k.commits as f64 / k.batches as f64,
                    k.bytes_logged as f64 / k.commits.max(1) as f64,
                    s.elapsed.as_secs_f64() * 1e6 / k.batches as f64,
                    k.map_resizes
                );
            }
        }
    }

    println!(
        "fsyncs: log fdatasyncs (engine) or fdatasyncs (raw); commits/fs: commits per log fdatasync; LMDB cmt: \
         LMDB write transactions (each syncs the state file once in Full mode); ckpts: checkpoints; gens: log \
         generations created; x append, x overwr: ops/s over the raw reference rate"
    );
    let rate = |r: Option<f64>| r.map_or_else(|| "n/a".to_string(), |r| format!("{r:.0}/s"));
    println!(
        "reference rates: append 4 KiB + fdatasync {} (all append samples, start and end), \
         overwrite 4 KiB + fdatasync {}",
        rate(raw_append),
        rate(raw_overwrite)
    );

    // The issue's targets, for 64 committers in `Durability::Full`.
    let full64 = summaries.iter().find(|s| s.kind == Kind::Commit { durability: Durability::Full, committers: 64 });
    if let Some(s) = full64
        && s.samples < cfg.sample_size
    {
        println!("targets not evaluated: only {} sample(s) (criterion --test, or a partial run)", s.samples);
    } else if let (Some(s), Some(base)) = (full64, raw_append) {
        let per_sync = s.counts.commits as f64 / s.counts.log_syncs.max(1) as f64;
        let times = s.rate() / base;
        println!(
            "targets (Full, 64 committers): commits per log fsync {per_sync:.1} (target >= 10: {}), \
             commits/s vs raw append+fdatasync/s {times:.1}x (target >= 10x: {})",
            if per_sync >= 10.0 { "met" } else { "MISSED" },
            if times >= 10.0 { "met" } else { "MISSED" }
        );
    }
}

fn main() {
    let cfg = Config::from_env();
    let root = bench_root();
    if cfg.quick {
        println!("MAILSTORE_BENCH_QUICK is set: short smoke run");
    }
    let mut c = Criterion::default()
        .sample_size(cfg.sample_size)
        .warm_up_time(cfg.warm_up)
        .measurement_time(cfg.measurement)
        .configure_from_args();
    bench_raw(&mut c, &cfg, &root);
    bench_engine(&mut c, &cfg, &root);
    bench_raw_again(&mut c, &cfg, &root);
    c.final_summary();
    print_summary(&cfg);
}
