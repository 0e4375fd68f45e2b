//! Offline maintenance of a database that is not mounted: the space report, compaction, and rebuilding a lost
//! checkpoint file from the state store and the log.
//!
//! Each takes the directory's lock, so none runs against a mounted database, and none ever creates a database:
//! they refuse a directory that is not one.

use std::fs;
use std::path::Path;

use heed::types::Bytes;
use heed::{CommitOrAbort, CompactionOption, Database};

use crate::engine::checkpoint::{self, CheckpointFile};
use crate::engine::{
    Attachments, CHECKPOINT_FILE, Checkpoint, Durability, Engine, LOGS_DIR, Options, STATE_DIR, StateMachine, check_as,
    inspection_lock, state,
};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, DirLock};
use crate::log::{generation, verify};

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
    engine.dismount()?;
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
    fs::rename(&copy, &data).at(&data)?;
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
/// before the state ([`Error::StateAheadOfLog`]).
pub fn rebuild_checkpoint(dir: &Path) -> Result<Checkpoint> {
    let _lock = DirLock::exclusive(dir)?;
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
    let ck = Checkpoint { guid: meta.guid, sequence: 0, lsn: meta.applied_lsn, epoch, backup_lsn: 0, clean: false };
    let file = CheckpointFile::create(dir, ck)?;
    fsutil::sync_dir(dir)?;
    Ok(file.current())
}
