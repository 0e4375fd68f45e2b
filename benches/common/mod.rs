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
