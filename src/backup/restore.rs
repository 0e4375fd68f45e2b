//! Restore of a backup set into a new directory, rolled forward to the end, to an LSN or to a time.
//!
//! Restore copies files and lets the normal recovery do the rest: the state snapshot becomes `state/data.mdb`,
//! the segments `segments/`, and the log generations `logs/` — up to the stop point only: the generation holding
//! the stop record is cut after it (and closed with an end marker), later ones are not carried. A checkpoint at
//! the snapshot's applied LSN is written; mounting the directory replays the log from there (one way to change
//! state). Every file's length and BLAKE3 hash is checked against the catalogue, and the log chain (generation
//! numbers, first LSNs, each header's checksum of the previous generation) is verified, before anything is
//! written.
//!
//! Crash safety. Before anything else is written, restore creates the marker file [`RESTORING_FILE`] in the
//! directory (synced, and the directory synced), and it removes the marker only after every file, the
//! checkpoint and the directory are synced. While the marker is there the directory is an unfinished restore:
//! mounting it, rebuilding its checkpoint and repairing its state refuse it with
//! [`Error::RestoreUnfinished`], and a new restore into it starts over (it removes what the unfinished one
//! wrote). So a crash at any point leaves either a directory that is refused until restored again, or the
//! whole restored database.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::catalogue::{BackupEntry, BackupKind, CATALOGUE_FILE, Catalogue, FileKind};
use super::target::{Target, is_backup_file, is_backup_id};
use crate::engine::checkpoint::CheckpointFile;
use crate::engine::{Checkpoint, Durability, LOGS_DIR, SEGMENTS_DIR, STATE_DIR, state};
use crate::error::{Error, IoContext, Result};
use crate::fault::crash_point;
use crate::fsutil::DirLock;
use crate::fsutil::lock::LOCK_FILE;
use crate::log::format::{END_MARKER, FRAME_HEADER_LEN};
use crate::log::generation;
use crate::time::Timestamp;
use crate::types::{Guid, Lsn};

/// The marker file of a restore under way (or one a crash or a failure ended) in the restored directory.
pub const RESTORING_FILE: &str = "RESTORING";

/// Fails with [`Error::RestoreUnfinished`] when `dir` holds the marker of a restore that did not finish.
pub(crate) fn refuse_unfinished_restore(dir: &Path) -> Result<()> {
    let marker = dir.join(RESTORING_FILE);
    match fs::symlink_metadata(&marker) {
        Ok(_) => Err(Error::RestoreUnfinished { path: dir.to_path_buf() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&marker, e)),
    }
}

/// Where roll-forward stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopAt {
    /// At the last record the backups hold.
    End,
    /// At this LSN (it must be within what the backups hold).
    Lsn(Lsn),
    /// At the last record committed at or before this time.
    Time(Timestamp),
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreReport {
    /// The backups used, oldest first.
    pub backups: Vec<String>,
    /// The state snapshot's applied LSN.
    pub snapshot_lsn: Lsn,
    /// The last record carried: the restored database's applied LSN once mounted.
    pub stop_lsn: Lsn,
    /// Bytes copied.
    pub bytes: u64,
}

/// Restores the backups in `from` into `to` (which must not exist, be empty, or hold an unfinished restore:
/// its [`RESTORING_FILE`] marker), stopping at `stop`. Mount `to` afterwards with [`crate::Engine::mount`]:
/// recovery replays the carried log.
///
/// Fails with [`Error::Corrupted`] when a backup file's length or hash differs from the catalogue's, or the log
/// chain is broken; with [`Error::InvalidArgument`] when `to` holds something else or the stop point is not
/// covered. Nothing is written to `to` before every check passed.
///
/// Durable once it returns: every file, the checkpoint and the directory are synced before the marker is
/// removed. Until then `to` is refused by mount ([`Error::RestoreUnfinished`]); after a crash or a failure,
/// restore into it again: that removes what the unfinished restore wrote and starts over.
///
/// The restored database keeps the source's GUID and epoch (its log records are sealed with them).
///
/// From a target that is not a local directory (S3), the files of the chosen backups are first downloaded with
/// the catalogue into `<to>.download-<random>` beside `to` (removed when the restore ends; a crash may leave
/// one, which holds nothing else and can be deleted), and restored from there by the same steps and checks.
pub fn restore(from: impl Into<Target>, to: &Path, stop: StopAt) -> Result<RestoreReport> {
    match from.into() {
        Target::Dir(dir) => restore_dir(&dir, to, stop),
        #[allow(unreachable_patterns)]
        remote => {
            check_destination(to)?;
            let backend = remote.open()?;
            let Some(bytes) = backend.read(CATALOGUE_FILE)? else {
                return Err(Error::InvalidArgument(format!("{remote} holds no backup catalogue ({CATALOGUE_FILE})")));
            };
            let catalogue = Catalogue::parse(&bytes, Path::new(&format!("{remote}/{CATALOGUE_FILE}")))?;
            let chain = choose_chain(&catalogue, stop)?;
            let name = to.file_name().and_then(|n| n.to_str()).unwrap_or("restore");
            let download = to.with_file_name(format!("{name}.download-{}", Guid::new_random()));
            let fetched = (|| -> Result<()> {
                for sub in [LOGS_DIR, SEGMENTS_DIR] {
                    for entry in &chain {
                        fs::create_dir_all(download.join(&entry.id).join(sub)).at(&download)?;
                    }
                }
                for file in chain.iter().flat_map(|e| &e.files) {
                    // A path the catalogue gives is checked before it names a local file.
                    if !file.path.split_once('/').is_some_and(|(id, rest)| is_backup_id(id) && is_backup_file(rest)) {
                        return Err(Error::corrupted(
                            Path::new(&format!("{remote}/{CATALOGUE_FILE}")),
                            0,
                            format!("the catalogue names {:?}, which is not a backup file", file.path),
                        ));
                    }
                    backend.fetch(&file.path, file.len, &download.join(&file.path))?;
                }
                fs::write(download.join(CATALOGUE_FILE), &bytes).at(&download)
            })();
            let restored = fetched.and_then(|()| restore_dir(&download, to, stop));
            let removed = fs::remove_dir_all(&download).at(&download);
            let report = restored?;
            removed?;
            Ok(report)
        }
    }
}

/// Fails unless `to` is missing, empty (but for a lock file) or an unfinished restore.
fn check_destination(to: &Path) -> Result<()> {
    let unfinished = to.join(RESTORING_FILE).exists();
    if to.exists() && !unfinished {
        for entry in fs::read_dir(to).at(to)? {
            // A lock file holds no data (a refused mount or an inspection may have left one).
            if entry.at(to)?.file_name() != LOCK_FILE {
                return Err(Error::InvalidArgument(format!(
                    "{} is not empty: restore never writes over data",
                    to.display()
                )));
            }
        }
    }
    Ok(())
}

/// [`restore`] from the local directory `from`.
fn restore_dir(from: &Path, to: &Path, stop: StopAt) -> Result<RestoreReport> {
    check_destination(to)?;
    let catalogue = Catalogue::load(from)?;
    let chain = choose_chain(&catalogue, stop)?;
    for entry in &chain {
        for file in &entry.files {
            verify_file(from, &file.path, file.len, &file.blake3)?;
        }
    }
    let full = &chain[0];
    let snapshot_lsn = full.applied_lsn;
    // The log generations of the chain, in order, with their scans (verifies every record).
    let mut logs = Vec::new();
    for entry in &chain {
        for f in entry.files.iter().filter(|f| f.kind == FileKind::Log) {
            let path = from.join(&f.path);
            let scan = generation::scan(&path, None, |_| Ok(()))?;
            if let Some(damage) = scan.damage {
                return Err(Error::corrupted(&path, damage.offset, damage.reason));
            }
            logs.push(scan);
        }
    }
    for pair in logs.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.header.generation != a.header.generation + 1
            || b.header.first_lsn != a.last_lsn + 1
            || b.header.prev_checksum != a.checksum
            || b.header.guid != a.header.guid
        {
            return Err(Error::corrupted(
                &b.path,
                0,
                "the log chain is broken: this generation does not follow the last",
            ));
        }
    }
    let last = logs.last().map_or(snapshot_lsn, |s| s.last_lsn);
    let stop_lsn = match stop {
        StopAt::End => last,
        StopAt::Lsn(n) if n >= snapshot_lsn && n <= last => n,
        StopAt::Lsn(n) => {
            return Err(Error::InvalidArgument(format!(
                "LSN {n} is not within the backups (LSN {snapshot_lsn} to {last})"
            )));
        }
        StopAt::Time(t) => {
            let mut at = snapshot_lsn;
            for s in &logs {
                generation::scan(&s.path, None, |r| {
                    if r.lsn > snapshot_lsn && r.commit_micros <= t.as_micros() {
                        at = at.max(r.lsn);
                    }
                    Ok(())
                })?;
            }
            at
        }
    };

    fs::create_dir_all(to).at(to)?;
    // Until the restore is done, the lock keeps `to` from being mounted (in this or another process).
    let _lock = DirLock::exclusive(to)?;
    begin(to)?;
    crash_point!("restore::marked");
    clear_unfinished(to)?;
    let mut bytes = 0;
    for sub in [STATE_DIR, LOGS_DIR, SEGMENTS_DIR] {
        fs::create_dir_all(to.join(sub)).at(to)?;
    }
    for f in &full.files {
        let src = from.join(&f.path);
        let dst = match (f.kind, f.generation) {
            (FileKind::State, _) => to.join(STATE_DIR).join("data.mdb"),
            (FileKind::Segment, Some(g)) => to.join(SEGMENTS_DIR).join(generation::file_name(g)),
            _ => continue,
        };
        bytes += copy_prefix(&src, &dst, f.len, false)?;
    }
    for s in logs.iter().filter(|s| s.header.first_lsn <= stop_lsn.max(snapshot_lsn + 1)) {
        let dst = to.join(LOGS_DIR).join(generation::file_name(s.header.generation));
        if s.last_lsn <= stop_lsn {
            bytes += copy_prefix(&s.path, &dst, s.end_offset, true)?;
        } else {
            // Cut after the stop record.
            let mut end = s.end_offset;
            generation::scan(&s.path, None, |r| {
                if r.lsn == stop_lsn + 1 {
                    end = end.min(r.offset - FRAME_HEADER_LEN as u64);
                }
                Ok(())
            })?;
            if s.header.first_lsn > stop_lsn {
                end = crate::log::format::HEADER_LEN as u64;
            }
            bytes += copy_prefix(&s.path, &dst, end, true)?;
        }
    }
    for sub in [STATE_DIR, LOGS_DIR, SEGMENTS_DIR] {
        crate::fsutil::sync_dir(&to.join(sub))?;
    }
    crash_point!("restore::files_copied");
    let env = state::open_env(to, Durability::Full, false)?;
    let values = state::read_meta(&env, to)?;
    drop(env);
    CheckpointFile::create(to, Checkpoint::first(values.guid, values.applied_lsn, values.epoch, false))?;
    crate::fsutil::sync_dir(to)?;
    crash_point!("restore::checkpoint_written");
    let marker = to.join(RESTORING_FILE);
    fs::remove_file(&marker).at(&marker)?;
    crate::fsutil::sync_dir(to)?;
    Ok(RestoreReport { backups: chain.iter().map(|e| e.id.clone()).collect(), snapshot_lsn, stop_lsn, bytes })
}

/// Writes the marker of a restore under way into `to`, synced, and syncs `to`.
fn begin(to: &Path) -> Result<()> {
    let marker = to.join(RESTORING_FILE);
    let mut file = File::create(&marker).at(&marker)?;
    file.write_all(b"a restore into this directory is under way, or did not finish: restore again\n").at(&marker)?;
    file.sync_all().at(&marker)?;
    crate::fsutil::sync_dir(to)
}

/// Removes everything in `to` but the marker and the lock file: what an unfinished restore wrote.
fn clear_unfinished(to: &Path) -> Result<()> {
    let mut removed = false;
    for entry in fs::read_dir(to).at(to)? {
        let entry = entry.at(to)?;
        let name = entry.file_name();
        if name == RESTORING_FILE || name == LOCK_FILE {
            continue;
        }
        let path = entry.path();
        if entry.file_type().at(&path)?.is_dir() {
            fs::remove_dir_all(&path).at(&path)?;
        } else {
            fs::remove_file(&path).at(&path)?;
        }
        removed = true;
    }
    if removed {
        crate::fsutil::sync_dir(to)?;
    }
    Ok(())
}

/// The newest full backup that can reach `stop`, and the incrementals after it.
fn choose_chain(catalogue: &Catalogue, stop: StopAt) -> Result<Vec<BackupEntry>> {
    let usable = |e: &BackupEntry| match stop {
        StopAt::End => true,
        StopAt::Lsn(n) => e.applied_lsn <= n,
        StopAt::Time(t) => e.snapshot <= t,
    };
    let Some(start) = catalogue.backups.iter().rposition(|e| e.kind == BackupKind::Full && usable(e)) else {
        return Err(Error::InvalidArgument(format!("no full backup in the catalogue reaches back to {stop:?}")));
    };
    let mut chain = vec![catalogue.backups[start].clone()];
    for e in &catalogue.backups[start + 1..] {
        if e.kind == BackupKind::Full || e.parent.as_deref() != Some(chain.last().map_or("", |l| l.id.as_str())) {
            break;
        }
        chain.push(e.clone());
    }
    Ok(chain)
}

/// Checks the length and BLAKE3 hash of `rel` in `from`.
fn verify_file(from: &Path, rel: &str, len: u64, blake3_hex: &str) -> Result<()> {
    let path: PathBuf = from.join(rel);
    let mut file = File::open(&path).at(&path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).at(&path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    if total != len {
        return Err(Error::corrupted(
            &path,
            total.min(len),
            format!("backup file is {total} bytes, the catalogue says {len}"),
        ));
    }
    if hasher.finalize().to_hex().as_str() != blake3_hex {
        return Err(Error::corrupted(&path, 0, "backup file's BLAKE3 hash differs from the catalogue's"));
    }
    Ok(())
}

/// Copies the first `len` bytes of `src` to `dst` (plus an end marker when `end_marker`), synced; returns bytes.
fn copy_prefix(src: &Path, dst: &Path, len: u64, end_marker: bool) -> Result<u64> {
    let mut input = File::open(src).at(src)?.take(len);
    let mut out = File::create(dst).at(dst)?;
    let n = std::io::copy(&mut input, &mut out).at(dst)?;
    if n != len {
        return Err(Error::corrupted(src, n, "backup file is shorter than expected"));
    }
    if end_marker {
        out.write_all(&END_MARKER).at(dst)?;
    }
    out.sync_all().at(dst)?;
    Ok(n)
}
