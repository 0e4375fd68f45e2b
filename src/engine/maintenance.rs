//! Offline maintenance of a database that is not mounted: the space report, compaction, rebuilding a lost
//! checkpoint file from the state store and the log, and repairing a damaged state store from a healthy copy.
//!
//! Each takes the directory's lock, so none runs against a mounted database, and none ever creates a database:
//! they refuse a directory that is not one.

use std::fs;
use std::path::{Path, PathBuf};

use heed::types::Bytes;
use heed::{CommitOrAbort, CompactionOption, Database};

use crate::engine::checkpoint::{self, CheckpointFile};
use crate::engine::{
    Attachments, CHECKPOINT_FILE, Checkpoint, Durability, Engine, LOGS_DIR, Options, STATE_DIR, StateMachine, check_as,
    inspection_lock, state,
};
use crate::error::{Error, IoContext, Result};
use crate::fault::crash_point;
use crate::fsutil::{self, DirLock};
use crate::log::{generation, verify};
use crate::types::Lsn;

/// The LMDB data file inside the state store's directory.
const DATA_FILE: &str = "data.mdb";
/// Where [`compact`] writes the compacted copy of the data file before it replaces the file.
const COMPACTING_FILE: &str = "data.mdb.compact";
/// Where [`rebuild_checkpoint`] moves a checkpoint file neither of whose slots is readable: kept, never deleted.
const DAMAGED_CHECKPOINT: &str = "checkpoint.damaged";

/// Where a dismounted database's bytes are, and how many of them compaction would give back
/// ([`space`], `mailstore space`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpaceReport {
    /// Bytes of the state store's data file (`state/data.mdb`).
    pub state_file_bytes: u64,
    /// Bytes of it in the pages the state's B-trees use (the rest are free pages: the store reuses them, and
    /// [`compact`] gives them back to the file system).
    pub state_used_bytes: u64,
    /// Generations in `logs/`.
    pub log_generations: u64,
    /// Their bytes.
    pub log_bytes: u64,
    /// Generations in `segments/` (out of the log, kept for the attachments the state refers to).
    pub segments: u64,
    /// Their bytes.
    pub segment_bytes: u64,
    /// Bytes of attachments in segments that the state still refers to.
    pub segment_live_bytes: u64,
    /// Bytes of segment files that compaction deletes (nothing refers to them, or their live attachments are
    /// few enough to be relocated), less the live bytes it writes again.
    pub segment_reclaimable_bytes: u64,
}

impl SpaceReport {
    /// Bytes in use: the state's pages, the log, and the live attachments in segments.
    pub fn used_bytes(&self) -> u64 {
        self.state_used_bytes + self.log_bytes + self.segment_live_bytes
    }

    /// Free bytes inside the state store's file, which it reuses before it grows.
    pub fn free_bytes(&self) -> u64 {
        self.state_file_bytes.saturating_sub(self.state_used_bytes)
    }

    /// Bytes [`compact`] would give back to the file system.
    pub fn reclaimable_bytes(&self) -> u64 {
        self.free_bytes() + self.segment_reclaimable_bytes
    }
}

/// What [`compact`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactReport {
    /// The space before.
    pub before: SpaceReport,
    /// The space after.
    pub after: SpaceReport,
    /// Compaction operations committed (each relocates the live attachments of one segment, or part of them).
    pub relocations: u64,
}

/// Reports the space of the dismounted database in `dir`, opened as machine `M`. Takes a shared lock, so it
/// fails with [`Error::AlreadyMounted`] while the database is mounted.
pub fn space<M: StateMachine>(dir: &Path) -> Result<SpaceReport> {
    let _lock = inspection_lock(dir)?;
    let env = state::open_env(dir, Durability::Full, true)?;
    let values = state::read_meta(&env, dir)?;
    crate::engine::open::check_meta::<M>(dir, &values)?;
    let mut report = SpaceReport::default();
    let data = dir.join(STATE_DIR).join(DATA_FILE);
    report.state_file_bytes = fs::metadata(&data).at(&data)?.len();
    let page = u64::from(env.unnamed_database_stat().page_size);
    let pages = used_pages(&env)?;
    report.state_used_bytes = (pages * page).min(report.state_file_bytes);

    for (_, path) in generation::list(&dir.join(LOGS_DIR))?.generations {
        report.log_generations += 1;
        report.log_bytes += fs::metadata(&path).at(&path)?.len();
    }
    let attachments = Attachments::new(dir);
    let machine = state::open_machine::<M>(&env, &attachments, &dir.join(STATE_DIR))?;
    let txn = env.read_txn()?;
    let usage = machine.segment_usage(&txn)?;
    for (generation, path) in attachments.list_segments()? {
        let len = fs::metadata(&path).at(&path)?.len();
        report.segments += 1;
        report.segment_bytes += len;
        match usage.get(&generation) {
            None => report.segment_reclaimable_bytes += len,
            Some(u) => {
                report.segment_live_bytes += u.live;
                if u.compactable {
                    report.segment_reclaimable_bytes += len.saturating_sub(u.live);
                }
            }
        }
    }
    Ok(report)
}

/// The pages the B-trees of `env` use: the two meta pages, the main database (which names the others), and
/// every named database.
fn used_pages(env: &heed::Env<heed::WithoutTls>) -> Result<u64> {
    let main = env.unnamed_database_stat();
    let base = 2 + (main.branch_pages + main.leaf_pages + main.overflow_pages) as u64;
    let rtxn = env.read_txn()?;
    let counted = env.open_databases_and_commit(rtxn, |dbo, txn| -> Result<_> {
        let mut pages = base;
        let Some(names) = dbo.open_database::<Bytes, Bytes>(txn, None)? else {
            return Ok(CommitOrAbort::<Option<Database<'_, Bytes, Bytes>>, u64>::Abort(pages));
        };
        let mut named = Vec::new();
        for entry in names.iter(txn)? {
            named.push(String::from_utf8_lossy(entry?.0).into_owned());
        }
        for name in &named {
            if let Some(db) = dbo.open_database::<Bytes, Bytes>(txn, Some(name))? {
                let s = db.stat(txn)?;
                pages += (s.branch_pages + s.leaf_pages + s.overflow_pages) as u64;
            }
        }
        // Nothing to keep open: the transaction is aborted.
        Ok(CommitOrAbort::Abort(pages))
    })?;
    Ok(counted.abort().unwrap_or(base))
}

/// Compacts the dismounted database in `dir`, opened as machine `M`, and returns the space before and after.
///
/// It first checks the database ([`check_as`]) and refuses a damaged one (compaction would copy the damage).
/// Then it mounts it (which recovers it) and relocates the live attachments out of the segments compaction
/// takes ([`Engine::compact_now`]: logged operations, which passive copies replay), dismounts, and finally
/// replaces the state store's data file with a compacted copy of it: the copy is written next to it
/// (`state/data.mdb.compact`) and synced, and only then renamed over it, so a crash at any point leaves either
/// the old file or the new one, both whole (a leftover copy is removed by the next compaction).
pub fn compact<M: StateMachine>(dir: &Path) -> Result<CompactReport> {
    let before = space::<M>(dir)?;
    let check = check_as::<M>(dir)?;
    if let Some(first) = check.problems.first() {
        return Err(Error::corrupted(
            dir,
            0,
            format!("check found {} problem(s), so compaction would copy damage; first: {first}", check.problems.len()),
        ));
    }
    let engine = Engine::<M>::mount(dir, Options::default().create_if_missing(false))?;
    let relocations = engine.compact_now()?;
    crash_point!("compact::relocated");
    engine.dismount()?;
    crash_point!("compact::dismounted");
    {
        let _lock = DirLock::exclusive(dir)?;
        compact_state_file(dir)?;
    }
    let after = space::<M>(dir)?;
    Ok(CompactReport { before, after, relocations })
}

/// Replaces `dir/state/data.mdb` with LMDB's compacting copy of it (free pages left out, pages renumbered).
fn compact_state_file(dir: &Path) -> Result<()> {
    let state_dir = dir.join(STATE_DIR);
    let data = state_dir.join(DATA_FILE);
    let copy = state_dir.join(COMPACTING_FILE);
    if copy.exists() {
        fs::remove_file(&copy).at(&copy)?;
    }
    let env = state::open_env(dir, Durability::Full, true)?;
    let file = env.copy_to_path(&copy, CompactionOption::Enabled)?;
    file.sync_all().at(&copy)?;
    drop(file);
    // The environment must be closed before its file is replaced.
    env.prepare_for_closing().wait();
    crash_point!("compact::copy_synced");
    fs::rename(&copy, &data).at(&data)?;
    crash_point!("compact::renamed");
    fsutil::sync_dir(&state_dir)
}

/// Writes a new checkpoint file for the dismounted database in `dir` whose checkpoint file is missing, or
/// damaged in both slots, from what the state store and the log still say: the checkpoint names the LSN the
/// state store has applied (made durable first), in the newest epoch of the state and the log, marked dirty,
/// so that the next mount replays the log from there. The backup LSN it held is not known any more: it is 0,
/// so a database that keeps its log until backed up keeps all of it until the next backup completes.
///
/// A damaged checkpoint file is kept as `checkpoint.damaged`, never deleted. Refuses (and changes nothing) when
/// the checkpoint file is readable, when the state store holds no database, and when the log cannot carry on
/// from the state: a generation the replay needs is missing ([`Error::MissingGeneration`]) or the log ends
/// before the state ([`Error::StateAheadOfLog`]), and when the directory holds a restore that did not finish
/// ([`Error::RestoreUnfinished`]: its files may be any prefix of the restored ones; restore again).
pub fn rebuild_checkpoint(dir: &Path) -> Result<Checkpoint> {
    let _lock = DirLock::exclusive(dir)?;
    crate::backup::refuse_unfinished_restore(dir)?;
    let path = dir.join(CHECKPOINT_FILE);
    let damaged = match checkpoint::read(dir) {
        Ok(ck) => {
            return Err(Error::InvalidArgument(format!(
                "{} is readable (checkpoint LSN {}): there is nothing to rebuild",
                path.display(),
                ck.lsn
            )));
        }
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => false,
        Err(Error::Corrupted { .. }) => true,
        Err(e) => return Err(e),
    };
    let env = state::open_env(dir, Durability::Full, false)?;
    let meta = state::read_meta(&env, dir)?;
    let walk = verify::walk(&dir.join(LOGS_DIR), meta.guid, Some(meta.applied_lsn + 1), |_| Ok(()))?;
    let last = walk.last_lsn();
    if last < meta.applied_lsn {
        return Err(Error::StateAheadOfLog { applied: meta.applied_lsn, log_end: last });
    }
    let epoch = meta.epoch.max(walk.last().header.epoch);
    env.force_sync()?;
    if damaged {
        let aside = dir.join(DAMAGED_CHECKPOINT);
        fs::rename(&path, &aside).at(&aside)?;
    }
    let file = CheckpointFile::create(dir, Checkpoint::first(meta.guid, meta.applied_lsn, epoch, false))?;
    fsutil::sync_dir(dir)?;
    Ok(file.current())
}

/// What [`repair_state_from`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairReport {
    /// The LSN the healthy copy's state had applied: where the repaired database's own log took over.
    pub copied_at: Lsn,
    /// Records of the database's own log replayed on top of it.
    pub replayed: u64,
    /// Generations the copy's state refers to that the database no longer held, copied into its `segments/`.
    pub generations_copied: u64,
    /// Where the damaged state store was moved (kept, never deleted); `None` when there was none.
    pub damaged_state: Option<PathBuf>,
}

/// Repairs the dismounted database in `dir`, whose state store is damaged (or lost), from `healthy`: a
/// dismounted passive copy of it, or any dismounted database directory of the same database (same GUID) whose
/// state is not ahead of `dir`'s log — for example an older copy of `dir` itself.
///
/// The healthy state is checked first ([`check_as`] must find it healthy) and copied (LMDB's compacting copy);
/// the generations its state refers to that `dir` no longer holds are copied into `dir/segments/`; the damaged
/// state store is moved to `state.damaged-N/` (never deleted) and the copy takes its place; then `dir` is
/// mounted, which replays `dir`'s own log from the copy's applied LSN to its end — the one way state changes,
/// so the result is the state every copy of the database reaches at that LSN — and dismounted. Refuses, and
/// changes nothing, when `healthy` belongs to another database ([`Error::ForeignDatabase`]) or is damaged, or
/// when `dir`'s log cannot carry on from the copy's state ([`Error::MissingGeneration`] when the records after
/// it were truncated, [`Error::StateAheadOfLog`] when the copy is ahead of the log).
pub fn repair_state_from<M: StateMachine>(dir: &Path, healthy: &Path) -> Result<RepairReport> {
    let problems = check_as::<M>(healthy)?.problems;
    if let Some(first) = problems.first() {
        return Err(Error::corrupted(
            healthy,
            0,
            format!("the copy to repair from is not healthy ({} problem(s)); first: {first}", problems.len()),
        ));
    }
    let (copied_at, generations_copied, damaged_state) = {
        let _lock = DirLock::exclusive(dir)?;
        crate::backup::refuse_unfinished_restore(dir)?;
        let _source = inspection_lock(healthy)?;
        install_state::<M>(dir, healthy)?
    };
    let engine = Engine::<M>::mount(dir, Options::default().create_if_missing(false))?;
    let replayed = engine.recovery_report().replayed;
    engine.dismount()?;
    Ok(RepairReport { copied_at, replayed, generations_copied, damaged_state })
}

/// Copies `healthy`'s state (and the generations it refers to that `dir` lacks) into `dir`, once `dir`'s log is
/// known to carry on from it; returns the copy's applied LSN, the generations copied and where the damaged
/// state went.
fn install_state<M: StateMachine>(dir: &Path, healthy: &Path) -> Result<(Lsn, u64, Option<PathBuf>)> {
    let logs = dir.join(LOGS_DIR);
    let guid = match checkpoint::read(dir) {
        Ok(ck) => ck.guid,
        Err(_) => {
            let first = generation::list(&logs)?.generations.into_iter().next().ok_or_else(|| Error::NotADatabase {
                path: dir.to_path_buf(),
                reason: "no checkpoint and no log generation".into(),
            })?;
            generation::read_header(&first.1, None)?.guid
        }
    };
    let env = state::open_env(healthy, Durability::Full, true)?;
    let meta = state::read_meta(&env, healthy)?;
    if meta.guid != guid {
        return Err(Error::ForeignDatabase { file: healthy.join(STATE_DIR), expected: guid, found: meta.guid });
    }
    let walk = verify::walk(&logs, guid, Some(meta.applied_lsn + 1), |_| Ok(()))?;
    if walk.last_lsn() < meta.applied_lsn {
        return Err(Error::StateAheadOfLog { applied: meta.applied_lsn, log_end: walk.last_lsn() });
    }
    let referenced = {
        let machine = state::open_machine::<M>(&env, &Attachments::new(healthy), &healthy.join(STATE_DIR))?;
        let txn = env.read_txn()?;
        machine.referenced_generations(&txn)?
    };

    let staging = dir.join("state.repair");
    if staging.exists() {
        fs::remove_dir_all(&staging).at(&staging)?;
    }
    fs::create_dir_all(&staging).at(&staging)?;
    let data = staging.join(DATA_FILE);
    env.copy_to_path(&data, CompactionOption::Enabled)?.sync_all().at(&data)?;
    env.prepare_for_closing().wait();
    fsutil::sync_dir(&staging)?;

    let mine = Attachments::new(dir);
    let theirs = Attachments::new(healthy);
    let mut copied = 0;
    for generation in referenced {
        let in_log = logs.join(generation::file_name(generation));
        let segment = mine.segment_path(generation);
        if in_log.exists() || segment.exists() {
            continue;
        }
        let from = [healthy.join(LOGS_DIR).join(generation::file_name(generation)), theirs.segment_path(generation)]
            .into_iter()
            .find(|p| p.exists())
            .ok_or_else(|| Error::MissingGeneration { generation, file: theirs.segment_path(generation) })?;
        let partial = segment.with_extension("log.tmp");
        fs::copy(&from, &partial).at(&partial)?;
        fs::File::open(&partial).and_then(|f| f.sync_all()).at(&partial)?;
        fs::rename(&partial, &segment).at(&segment)?;
        copied += 1;
    }
    if copied > 0 {
        fsutil::sync_dir(&dir.join(crate::engine::SEGMENTS_DIR))?;
    }

    let state_dir = dir.join(STATE_DIR);
    let damaged = (1..)
        .map(|n| dir.join(format!("state.damaged-{n}")))
        .find(|p| !p.exists())
        .ok_or_else(|| Error::InvalidArgument("no free name for the damaged state".into()))?;
    let damaged = if state_dir.exists() {
        fs::rename(&state_dir, &damaged).at(&damaged)?;
        Some(damaged)
    } else {
        None
    };
    fs::rename(&staging, &state_dir).at(&state_dir)?;
    fsutil::sync_dir(dir)?;
    Ok((meta.applied_lsn, copied, damaged))
}
