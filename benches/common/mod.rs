//! Shared by the benchmarks: where benchmark files go (never a memory file system, where `fdatasync` is free).
#![allow(dead_code)]

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// The mount that holds `path`: (mount point, file system type, source), from `/proc/self/mountinfo`.
pub fn mount_of(path: &Path) -> Option<(PathBuf, String, String)> {
    let path = fs::canonicalize(path).ok()?;
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(PathBuf, String, String)> = None;
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let Some(mount_point) = left.split(' ').nth(4).map(unescape) else { continue };
        let mut right = right.split(' ');
        let (Some(fstype), Some(source)) = (right.next(), right.next()) else { continue };
        let mount_point = PathBuf::from(mount_point);
        // Later lines are mounted on top of earlier ones, so on a tie the later wins.
        if path.starts_with(&mount_point)
            && best.as_ref().is_none_or(|(b, _, _)| mount_point.as_os_str().len() >= b.as_os_str().len())
        {
            best = Some((mount_point, fstype.to_string(), unescape(source)));
        }
    }
    best
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(Ok(code)) = s.get(i + 1..i + 4).map(|o| u8::from_str_radix(o, 8))
        {
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn is_memory_fs(fstype: &str) -> bool {
    matches!(fstype, "tmpfs" | "ramfs" | "devtmpfs" | "hugetlbfs")
}

/// Picks the directory the benchmark files go under and says why.
pub fn bench_root() -> PathBuf {
    let root = if let Some(dir) = env::var_os("MAILSTORE_BENCH_DIR") {
        PathBuf::from(dir)
    } else {
        let tmp = env::temp_dir();
        match mount_of(&tmp) {
            Some((_, fstype, _)) if is_memory_fs(&fstype) => {
                let fallback = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("bench-tmp");
                println!(
                    "note: {} is {fstype}, where fdatasync costs nothing; using {} instead",
                    tmp.display(),
                    fallback.display()
                );
                fallback
            }
            _ => tmp,
        }
    };
    fs::create_dir_all(&root).unwrap_or_else(|e| panic!("cannot create bench dir {}: {e}", root.display()));
    match mount_of(&root) {
        Some((mount_point, fstype, source)) => {
            println!(
                "bench dir: {} (file system {fstype}, {source} mounted on {})",
                root.display(),
                mount_point.display()
            );
            if is_memory_fs(&fstype) {
                println!("warning: {fstype} keeps files in memory: fdatasync is free and the ratios mean nothing");
            }
        }
        None => println!("bench dir: {} (file system unknown)", root.display()),
    }
    root
}

// ---------------------------------------------------------------------------------------------------------------
// What each benchmark recorded, and the figures over its measurement samples.

/// Counters a benchmark adds up over its samples.
pub trait Tally: Copy + Default {
    /// Adds `other` to `self`.
    fn add(&mut self, other: Self);
}

/// One call of an `iter_custom` routine: criterion makes the warm-up calls first, then one per sample.
#[derive(Clone, Copy, Debug)]
pub struct Call<C> {
    pub iters: u64,
    pub elapsed: std::time::Duration,
    pub counts: C,
}

/// What one benchmark recorded.
pub struct Record<K, C> {
    pub name: String,
    pub kind: K,
    pub calls: std::sync::Arc<std::sync::Mutex<Vec<Call<C>>>>,
}

/// Registers a benchmark in `records` and returns where its routine pushes its calls.
pub fn register<K, C>(
    records: &std::sync::Mutex<Vec<Record<K, C>>>,
    name: String,
    kind: K,
) -> std::sync::Arc<std::sync::Mutex<Vec<Call<C>>>> {
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    records.lock().unwrap().push(Record { name, kind, calls: std::sync::Arc::clone(&calls) });
    calls
}

/// Figures over the measurement samples of one benchmark.
pub struct Summary<K, C> {
    pub name: String,
    pub kind: K,
    pub samples: usize,
    pub ops: u64,
    pub elapsed: std::time::Duration,
    pub median_ns: f64,
    pub counts: C,
}

impl<K: Copy, C: Tally> Summary<K, C> {
    /// The last `sample_size` calls are criterion's samples; the ones before them were warm-up.
    pub fn of(record: &Record<K, C>, sample_size: usize) -> Option<Self> {
        let calls = record.calls.lock().unwrap();
        let samples = &calls[calls.len().saturating_sub(sample_size)..];
        if samples.is_empty() {
            return None;
        }
        let mut per_op: Vec<f64> = samples.iter().map(|c| c.elapsed.as_nanos() as f64 / c.iters as f64).collect();
        per_op.sort_by(f64::total_cmp);
        let mid = per_op.len() / 2;
        let median_ns =
            if per_op.len().is_multiple_of(2) { (per_op[mid - 1] + per_op[mid]) / 2.0 } else { per_op[mid] };
        let mut counts = C::default();
        for c in samples {
            counts.add(c.counts);
        }
        Some(Summary {
            name: record.name.clone(),
            kind: record.kind,
            samples: samples.len(),
            ops: samples.iter().map(|c| c.iters).sum(),
            elapsed: samples.iter().map(|c| c.elapsed).sum(),
            median_ns,
            counts,
        })
    }

    /// Operations per second over all samples (total operations / total time).
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// Operations per second at criterion's median time per operation.
    pub fn median_rate(&self) -> f64 {
        1e9 / self.median_ns
    }

    /// Mean time per operation over all samples.
    pub fn mean_ns(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.ops as f64
    }
}

/// Writes back every dirty page of the machine (`sync`) before a timed phase, so that the phase does not pay
/// for the write-back of what an earlier phase left in the page cache (the kernel flushes it within 30 s, on
/// the same CPUs). Prints a note if `sync` cannot run; the phase is then measured as it is.
pub fn settle() {
    match std::process::Command::new("sync").status() {
        Ok(status) if status.success() => {}
        other => eprintln!("note: `sync` before a timed phase did not run ({other:?})"),
    }
}
