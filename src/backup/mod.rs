//! Online backup of a mounted database to a [`Target`] — a local directory, or (feature `s3`) a prefix of an
//! S3-compatible bucket (`S3Config`) — and restore with roll-forward. The steps below are written once; each
//! kind of target only stores and reads files (`target.rs`, `s3.rs`).
//!
//! A backup *set* starts with a full backup and grows by incrementals. Each backup is a directory (on S3: a key
//! prefix) of the target named by its id, holding
//!
//! * a full backup: `state.mdb` (a consistent, compacted snapshot of the state store, taken while commits go on),
//!   `segments/` (every closed generation below the log's start that the snapshot's state refers to: they hold
//!   message bodies) and `logs/` (every generation from the one holding the record after the snapshot's applied
//!   LSN up to the one a log roll closed after the snapshot);
//! * an incremental: `logs/` with the generations closed since the previous backup of the set (another roll).
//!
//! Each generation is copied up to the end of its last record, followed by an end marker. Every file is listed
//! in the catalogue (`catalogue.json` at the target's root) with its length and BLAKE3 hash. A backup is written
//! under `<id>.partial`, synced, renamed to `<id>`, and only then entered in the catalogue (written to a
//! temporary name, synced, renamed): a crash mid-backup leaves no backup the catalogue lists, so none that looks
//! complete. [`Engine::backup_completed`] is called only after the catalogue names the backup durably.
//!
//! On S3 every file is one PUT or a multipart upload under `<id>/` (no `.partial`: nothing is visible until the
//! catalogue, written last by one PUT, names it). **An S3 backup is complete, and durable, exactly when the
//! catalogue naming it was stored**: every object of it had been acknowledged by the store before; only then is
//! [`Engine::backup_completed`] called. Objects a crash or a failure left under an unlisted id are never read
//! and are deleted by the next backup; the lock is an object created with a conditional PUT (see `s3.rs`).
//!
//! Crash safety. A backup that returned `Ok` is durable: its files, its directory and the catalogue entry naming
//! it are synced. A backup killed at any step leaves the target's catalogue and every backup it lists as they
//! were, and the database untouched (but for a log roll). What it may leave behind is cleaned up by the next
//! backup: at its start, every backup directory of the target that the catalogue does not list (`<id>` or
//! `<id>.partial` holding only backup files: a crash before the catalogue named it) is removed — never one the
//! catalogue lists, never anything else — so the next backup's id is always fresh; and every staging directory (`backup-<guid>` in the
//! database's directory) that no backup running in this process owns is removed. Backups into one target are
//! serialised by a lock on `<target>/backup.lock` (a second one fails with [`Error::InvalidArgument`]).
//!
//! Restore ([`restore`]) is in `restore.rs`.

mod catalogue;
mod restore;
#[cfg(feature = "s3")]
mod s3;
mod target;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::engine::{Engine, LOGS_DIR, SEGMENTS_DIR, StateMachine};
use crate::error::{Error, IoContext, Result};
use crate::fault::crash_point;
use crate::log::format::{END_MARKER, HEADER_LEN};
use crate::log::generation;
use crate::replication::snapshot::{SNAPSHOT_STATE_FILE, link_generation, prepare_snapshot};
use crate::time::Timestamp;
use crate::types::{Guid, Lsn};

pub use crate::error::BackupError;
use catalogue::CATALOGUE_FILE;
pub use catalogue::{BackupEntry, BackupFile, BackupKind, Catalogue, FileKind};
pub(crate) use restore::refuse_unfinished_restore;
pub use restore::{RESTORING_FILE, RestoreReport, StopAt, restore};
#[cfg(feature = "s3")]
pub use s3::S3Config;
use target::Backend;
pub use target::Target;

/// What a finished backup holds: its catalogue entry.
pub type BackupReport = BackupEntry;

/// Takes a full backup of the mounted `engine` into `target` (a local directory, created if missing, or an S3
/// prefix), while commits go on. Returns the backup's catalogue entry once the catalogue holds it durably; then records it with
/// [`Engine::backup_completed`] (its last LSN + 1), so [`crate::LogRetention::UntilBackup`] may release the
/// generations it covers. A database whose catalogue in `target` belongs to another database is refused.
///
/// Durable once it returns; a crash before leaves the target's catalogue as it was, and what the crash left is
/// removed by the next backup (see the module's documentation): backup directories the catalogue does not list,
/// and stale staging directories.
pub fn full_backup<M: StateMachine>(engine: &Engine<M>, target: impl Into<Target>) -> Result<BackupReport> {
    let target = target.into();
    let (mut catalogue, mut backend, taken) = open_target(&target, engine.guid())?;
    let started = Timestamp::now();
    let applied = engine.status().applied_lsn;
    // Keep every record from the one after the snapshot's applied LSN until the backup is copied.
    let _pin = engine.pin_log(applied + 1)?;
    staged(engine, |staging| {
        let prepared = engine.read(|_, _| {
            prepare_snapshot::<M>(
                engine.dir(),
                staging,
                engine.guid(),
                |path| engine.snapshot_state(path),
                || {
                    let end = engine.log_position();
                    (end.generation, end.offset)
                },
            )
        })?;
        let snapshot = Timestamp::now();
        let Some((start, _)) = prepared.log else {
            return Err(Error::InvalidArgument("the log moved on while the backup's snapshot was taken; retry".into()));
        };
        let closed = engine.roll_log()? - 1;
        // The generations after the start, linked now (the pin keeps them; they may have moved to `segments/`).
        engine
            .read(|_, _| (start + 1..=closed).try_for_each(|g| link_generation(engine.dir(), staging, g).map(drop)))?;
        crash_point!("backup::staged");
        let id = catalogue.next_id(&taken);
        let mut writer = BackupWriter::new(backend.as_mut(), &id)?;
        writer.copy_whole(&staging.join(SNAPSHOT_STATE_FILE), SNAPSHOT_STATE_FILE, FileKind::State)?;
        crash_point!("backup::snapshot_written");
        for (g, _) in &prepared.segments {
            writer.copy_generation(staging, *g, SEGMENTS_DIR, FileKind::Segment, engine.guid())?;
        }
        let mut last_lsn = prepared.applied_lsn;
        for g in start..=closed {
            last_lsn = writer.copy_generation(staging, g, LOGS_DIR, FileKind::Log, engine.guid())?.max(last_lsn);
        }
        let entry = BackupEntry {
            id: id.clone(),
            kind: BackupKind::Full,
            parent: None,
            epoch: engine.status().epoch,
            applied_lsn: prepared.applied_lsn,
            last_lsn,
            first_generation: start,
            last_generation: closed,
            started,
            snapshot,
            finished: Timestamp::now(),
            files: Vec::new(),
        };
        writer.finish(&mut catalogue, entry)
    })
}

/// Takes an incremental backup of the mounted `engine` into `target`: the generations closed (by a log roll now)
/// since the newest backup of the set. Fails with [`Error::InvalidArgument`] when the target holds no full backup
/// of this database, or when the log no longer holds the records after the newest backup (truncated: take a
/// full backup, or use [`crate::LogRetention::UntilBackup`]).
///
/// Durable once it returns; a crash before leaves the target's catalogue as it was (as [`full_backup`]).
pub fn incremental_backup<M: StateMachine>(engine: &Engine<M>, target: impl Into<Target>) -> Result<BackupReport> {
    let target = target.into();
    let (mut catalogue, mut backend, taken) = open_target(&target, engine.guid())?;
    let Some(previous) = catalogue.backups.last().cloned() else {
        return Err(Error::InvalidArgument(format!("{target} holds no full backup to add to")));
    };
    let started = Timestamp::now();
    let _pin = engine.pin_log(previous.last_lsn + 1)?;
    staged(engine, |staging| {
        let closed = engine.roll_log()? - 1;
        let first = previous.last_generation + 1;
        engine.read(|_, _| (first..=closed).try_for_each(|g| link_generation(engine.dir(), staging, g).map(drop)))?;
        crash_point!("backup::staged");
        let id = catalogue.next_id(&taken);
        let mut writer = BackupWriter::new(backend.as_mut(), &id)?;
        let mut last_lsn = previous.last_lsn;
        for g in first..=closed {
            last_lsn = writer.copy_generation(staging, g, LOGS_DIR, FileKind::Log, engine.guid())?.max(last_lsn);
        }
        let entry = BackupEntry {
            id: id.clone(),
            kind: BackupKind::Incremental,
            parent: Some(previous.id.clone()),
            epoch: engine.status().epoch,
            applied_lsn: previous.last_lsn,
            last_lsn,
            first_generation: first,
            last_generation: closed,
            started,
            snapshot: started,
            finished: Timestamp::now(),
            files: Vec::new(),
        };
        writer.finish(&mut catalogue, entry)
    })
}

/// The name prefix of a staging directory in a database's directory (`backup-<guid>`).
const STAGING_PREFIX: &str = "backup-";

/// The staging directories of the backups running in this process. A backup holds a mounted engine, whose
/// exclusive directory lock keeps every other process out of the database's directory, so a staging directory
/// not in this set is a crashed backup's.
static STAGING: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Takes the lock of `target` (created if missing), loads its catalogue (refused when it is another
/// database's), and removes every backup the catalogue does not list. Returns the target's top-level names
/// that remain (ids that are taken).
fn open_target(target: &Target, guid: Guid) -> Result<(Catalogue, Box<dyn Backend>, HashSet<String>)> {
    let mut backend = target.open()?;
    backend.lock()?;
    let catalogue = Catalogue::for_database(backend.read(CATALOGUE_FILE)?, target, guid)?;
    let listed: HashSet<&str> = catalogue.backups.iter().map(|b| b.id.as_str()).collect();
    let taken = backend.remove_unlisted(&listed)?;
    Ok((catalogue, backend, taken))
}

/// Runs `backup` with a staging directory of its own inside the database's directory (hard links to the files
/// it copies), removes the directory, and records the backup it returns with [`Engine::backup_completed`].
/// First removes the staging directories a crashed backup left (those no backup of this process owns).
fn staged<M: StateMachine>(
    engine: &Engine<M>,
    backup: impl FnOnce(&Path) -> Result<BackupEntry>,
) -> Result<BackupEntry> {
    let staging = engine.dir().join(format!("{STAGING_PREFIX}{}", Guid::new_random()));
    {
        let mut running = STAGING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let running = running.get_or_insert_with(HashSet::new);
        remove_stale_staging(engine.dir(), running)?;
        fs::create_dir(&staging).at(&staging)?;
        running.insert(staging.clone());
    }
    let result = backup(&staging);
    let removed = fs::remove_dir_all(&staging).at(&staging);
    STAGING.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get_or_insert_with(HashSet::new).remove(&staging);
    let entry = result?;
    removed?;
    engine.backup_completed(entry.last_lsn + 1)?;
    Ok(entry)
}

/// Removes the `backup-<guid>` directories of `dir` that are not in `running`.
fn remove_stale_staging(dir: &Path, running: &HashSet<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let path = entry.path();
        let name = entry.file_name();
        let stale =
            name.to_str().and_then(|n| n.strip_prefix(STAGING_PREFIX)).is_some_and(|g| g.parse::<uuid::Uuid>().is_ok())
                && entry.file_type().at(&path)?.is_dir()
                && !running.contains(&path);
        if stale {
            fs::remove_dir_all(&path).at(&path)?;
        }
    }
    Ok(())
}

/// Writes one backup's files into a target (local: under `<id>.partial`; S3: under `<id>/`), hashing each as it
/// goes.
struct BackupWriter<'a> {
    backend: &'a mut dyn Backend,
    id: String,
    files: Vec<BackupFile>,
}

impl<'a> BackupWriter<'a> {
    fn new(backend: &'a mut dyn Backend, id: &str) -> Result<Self> {
        backend.begin(id)?;
        Ok(BackupWriter { backend, id: id.to_owned(), files: Vec::new() })
    }

    /// Copies the whole file `from` to `name` in the backup.
    fn copy_whole(&mut self, from: &Path, name: &str, kind: FileKind) -> Result<()> {
        let mut src = File::open(from).at(from)?;
        let len = src.metadata().at(from)?.len();
        self.write(name, kind, None, len, |out, hasher| copy_range(&mut src, from, len, out, hasher))
    }

    /// Copies generation `g` (linked in `staging`) into `sub/` up to the end of its last record, then an end
    /// marker. Verifies it first; returns its last LSN.
    fn copy_generation(&mut self, staging: &Path, g: u64, sub: &str, kind: FileKind, guid: Guid) -> Result<Lsn> {
        let from = staging.join(generation::file_name(g));
        let scan = generation::scan(&from, Some(guid), |_| Ok(()))?;
        if let Some(damage) = scan.damage {
            return Err(Error::corrupted(&from, damage.offset, damage.reason));
        }
        let mut src = File::open(&from).at(&from)?;
        let name = format!("{sub}/{}", generation::file_name(g));
        let len = scan.end_offset + END_MARKER.len() as u64;
        self.write(&name, kind, Some(g), len, |out, hasher| {
            copy_range(&mut src, &from, scan.end_offset, out, hasher)?;
            hasher.update(&END_MARKER);
            out.write_all(&END_MARKER)
        })?;
        debug_assert!(scan.end_offset >= HEADER_LEN as u64);
        Ok(scan.last_lsn)
    }

    fn write(
        &mut self,
        name: &str,
        kind: FileKind,
        generation: Option<u64>,
        len: u64,
        fill: impl FnOnce(&mut dyn Write, &mut blake3::Hasher) -> std::io::Result<()>,
    ) -> Result<()> {
        let mut out = self.backend.create(&self.id, name, len)?;
        let mut hasher = blake3::Hasher::new();
        let filled = fill(&mut out, &mut hasher);
        out.finish(filled)?;
        let path_in_target = format!("{}/{name}", self.id);
        self.files.push(BackupFile {
            path: path_in_target,
            kind,
            generation,
            len,
            blake3: hasher.finalize().to_hex().to_string(),
        });
        Ok(())
    }

    /// Makes the backup durable and whole, then enters it in the catalogue (written last).
    fn finish(self, catalogue: &mut Catalogue, mut entry: BackupEntry) -> Result<BackupEntry> {
        crash_point!("backup::logs_copied");
        self.backend.seal(&self.id)?;
        entry.files = self.files;
        catalogue.backups.push(entry.clone());
        self.backend.store_catalogue(&catalogue.to_bytes()?)?;
        crash_point!("backup::catalogued");
        Ok(entry)
    }
}

/// Copies the first `len` bytes of `src` to `out`, hashing them.
fn copy_range(
    src: &mut File,
    from: &Path,
    len: u64,
    out: &mut dyn Write,
    hasher: &mut blake3::Hasher,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        src.read_exact(&mut buf[..n]).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", from.display())))?;
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}
