//! Shared by the benchmarks: where benchmark files go (never a memory file system, where `fdatasync` is free).
#![allow(dead_code)]

use std::env;
use std::fs;
use std::io::Write as _;
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

// ---------------------------------------------------------------------------------------------------------------
// The 10 KiB messages the mailbox benches deliver (benches/mailbox.rs, benches/growth.rs).

/// The size of every delivered message.
pub const MESSAGE_SIZE: usize = 10 * 1024;

/// Plain text for the bodies: 76-character lines of prose, CRLF-terminated, longer than any body needs.
fn body_text() -> &'static [u8] {
    static TEXT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        const PROSE: &str = "Thanks for the notes from Tuesday. I went through the numbers for the second quarter \
            again and the picture is mostly the same as in the draft: the support backlog is down, the migration \
            of the remaining mailboxes is on schedule, and the storage budget needs another look before we commit \
            to the new retention policy. Could you check the figures in the attached summary against what finance \
            sent last week? If they agree, I would like to circulate the plan to the wider team on Friday and \
            schedule the review for the week after. Let me know if anything is unclear or missing. ";
        let words: Vec<&str> = PROSE.split_whitespace().collect();
        let mut text = Vec::with_capacity(2 * MESSAGE_SIZE);
        let mut line = String::new();
        let mut i = 0;
        while text.len() < 2 * MESSAGE_SIZE {
            let word = words[i % words.len()];
            i += 1;
            if line.len() + 1 + word.len() > 76 {
                text.extend_from_slice(line.as_bytes());
                text.extend_from_slice(b"\r\n");
                line.clear();
                if i % 53 == 0 {
                    text.extend_from_slice(b"\r\n");
                }
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        text
    })
}

/// Message number `n`: a plain-text message of exactly [`MESSAGE_SIZE`] bytes with a unique subject and id.
pub fn message(n: u64) -> Vec<u8> {
    let sender = n % 97;
    let (h, m, s) = ((n / 3600) % 24, (n / 60) % 60, n % 60);
    // 3 March 2026 is a Tuesday.
    let date = format!("Tue, 3 Mar 2026 {h:02}:{m:02}:{s:02} +0100");
    let mut out = Vec::with_capacity(MESSAGE_SIZE);
    write!(
        out,
        "Return-Path: <sender{sender}@example.org>\r\n\
         Received: from mx{sender}.example.org (mx{sender}.example.org [192.0.2.{ip}])\r\n\
         \tby mx.example.com with ESMTPS id {n:016x}\r\n\
         \tfor <alice@example.com>; {date}\r\n\
         From: \"Sender Number {sender}\" <sender{sender}@example.org>\r\n\
         To: \"Alice Example\" <alice@example.com>\r\n\
         Subject: Quarterly planning notes, part {n}\r\n\
         Date: {date}\r\n\
         Message-ID: <{n:016x}.{sender}@example.org>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n",
        ip = sender + 1,
    )
    .expect("write to a Vec");
    let need = MESSAGE_SIZE - out.len() - 2;
    out.extend_from_slice(&body_text()[..need]);
    if out.last() == Some(&b'\r') {
        *out.last_mut().unwrap() = b'.';
    }
    out.extend_from_slice(b"\r\n");
    debug_assert_eq!(out.len(), MESSAGE_SIZE);
    out
}
