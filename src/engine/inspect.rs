//! Offline inspection of a database directory that is not mounted: status, the generations, and a full
//! integrity check. All three take a shared lock, so they refuse to run against a mounted database.

use std::path::{Path, PathBuf};

use heed::RoTxn;

use crate::codec;
use crate::engine::{
    Attachments, CHECKPOINT_FILE, Checkpoint, Durability, LOGS_DIR, STATE_DIR, StateMachine, checkpoint,
};
use crate::engine::{lmdb_file, state};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::DirLock;
use crate::log::generation;
use crate::log::verify;
use crate::types::{Guid, Lsn};

/// The position of a dismounted database, read from its files.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OfflineStatus {
    /// The database's GUID.
    pub guid: Guid,
    /// The state machine it was created for.
    pub machine: String,
    /// Current epoch.
    pub epoch: u64,
    /// The newest valid checkpoint.
    pub checkpoint: Checkpoint,
    /// Last LSN the state store has applied.
    pub applied_lsn: Lsn,
    /// Oldest generation on disk.
    pub oldest_generation: u64,
    /// Newest generation on disk.
    pub head_generation: u64,
    /// LSN of the last valid record in the log.
    pub head_lsn: Lsn,
    /// Whether the last mount ended with a clean dismount.
    pub clean: bool,
    /// Generations out of the log kept for the attachments (message bodies) the state refers to (`segments/`).
    pub segments: u64,
    /// Their bytes in all.
    pub segment_bytes: u64,
}

/// One generation as `mailstore logs` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerationInfo {
    /// The file.
    pub path: PathBuf,
    /// Generation number (from the header, or the file name when the header is unreadable).
    pub number: u64,
    /// Its epoch.
    pub epoch: u64,
    /// First LSN it holds (or would hold).
    pub first_lsn: Lsn,
    /// Last valid LSN (`first_lsn - 1` when it holds none).
    pub last_lsn: Lsn,
    /// Valid records.
    pub records: u64,
    /// Bytes up to the end of its last valid record.
    pub bytes: u64,
    /// CRC32 of those bytes (what the next generation's header must carry).
    pub checksum: u32,
    /// The next generation's header names this one's checksum (true for the newest generation).
    pub chain_ok: bool,
    /// What is wrong with it, if anything.
    pub problem: Option<String>,
    /// The problem is invalid bytes after the last valid record with no valid record after them: a torn
    /// tail if this is the newest generation.
    pub tail_only: bool,
}

/// The result of [`check`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Generations examined.
    pub generations: u64,
    /// Valid records found.
    pub records: u64,
    /// Every problem found, each naming its file (and offset where there is one).
    pub problems: Vec<String>,
}

impl CheckReport {
    /// True when nothing is wrong.
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

fn read_meta(dir: &Path) -> Result<state::MetaValues> {
    state::read_meta(&state::open_env(dir, Durability::Full, true)?, dir)
}

/// The name of the state machine ([`StateMachine::NAME`](crate::StateMachine::NAME)) the dismounted database
/// in `dir` was created for, read from its state store alone: unlike [`offline_status`], it does not read the
/// checkpoint or the log, so it answers even when those are damaged. Takes a shared lock, so it fails with
/// [`Error::AlreadyMounted`] while the database is mounted.
pub fn machine_name(dir: &Path) -> Result<String> {
    let _lock = inspection_lock(dir)?;
    Ok(read_meta(dir)?.machine)
}

/// Reads the status of the dismounted database in `dir`.
pub fn offline_status(dir: &Path) -> Result<OfflineStatus> {
    let _lock = inspection_lock(dir)?;
    let ck = checkpoint::read(dir)?;
    let meta = read_meta(dir)?;
    let walk = verify::walk(&dir.join(LOGS_DIR), ck.guid, Some(ck.lsn.min(meta.applied_lsn) + 1), |_| Ok(()))?;
    let segments = Attachments::new(dir).list_segments()?;
    let mut segment_bytes = 0;
    for (_, path) in &segments {
        segment_bytes += std::fs::metadata(path).at(path)?.len();
    }
    Ok(OfflineStatus {
        guid: ck.guid,
        machine: meta.machine,
        epoch: meta.epoch,
        checkpoint: ck,
        applied_lsn: meta.applied_lsn,
        oldest_generation: walk.present.first().map_or(0, |(h, _)| h.generation),
        head_generation: walk.last().header.generation,
        head_lsn: walk.last_lsn(),
        clean: ck.clean,
        segments: segments.len() as u64,
        segment_bytes,
    })
}

/// Scans every generation in `dir/logs`, independently, without stopping at damage.
pub fn list_generations(dir: &Path) -> Result<Vec<GenerationInfo>> {
    let _lock = inspection_lock(dir)?;
    let guid = checkpoint::read(dir).ok().map(|c| c.guid);
    scan_all(dir, guid)
}

fn scan_all(dir: &Path, guid: Option<Guid>) -> Result<Vec<GenerationInfo>> {
    let listing = generation::list(&dir.join(LOGS_DIR))?;
    let mut infos: Vec<GenerationInfo> = Vec::new();
    for (number, path) in listing.generations {
        let info = match generation::scan(&path, guid, |_| Ok(())) {
            Ok(scan) => GenerationInfo {
                tail_only: scan.damage.as_ref().is_some_and(|d| d.valid_record_after.is_none()),
                number: scan.header.generation,
                epoch: scan.header.epoch,
                first_lsn: scan.header.first_lsn,
                last_lsn: scan.last_lsn,
                records: scan.records,
                bytes: scan.end_offset,
                checksum: scan.checksum,
                chain_ok: true,
                problem: scan.damage.map(|d| {
                    let after = match d.valid_record_after {
                        Some(at) => format!(" (a valid record follows at offset {at})"),
                        None => String::new(),
                    };
                    format!("{} at offset {}: {}{after}", path.display(), d.offset, d.reason)
                }),
                path,
            },
            Err(e) => GenerationInfo {
                path,
                number,
                epoch: 0,
                first_lsn: 0,
                last_lsn: 0,
                records: 0,
                bytes: 0,
                checksum: 0,
                chain_ok: false,
                problem: Some(e.to_string()),
                tail_only: false,
            },
        };
        infos.push(info);
    }
    // The chain: each header must name its predecessor's checksum and continue its LSNs.
    for i in 1..infos.len() {
        let (prev, next) = (&infos[i - 1], &infos[i]);
        if prev.number + 1 != next.number {
            infos[i - 1].chain_ok = false;
            continue;
        }
        let header = generation::read_header(&next.path, None).ok();
        let linked = header.is_some_and(|h| h.prev_checksum == prev.checksum && h.first_lsn == prev.last_lsn + 1);
        infos[i - 1].chain_ok = linked;
    }
    Ok(infos)
}

/// Verifies the dismounted database in `dir`: every generation (framing, checksums, LSN sequence), the chain
/// between them, that no generation is missing, the checkpoint, and the state store's applied LSN.
///
/// This does not decode record payloads (it does not know the state machine); [`check_as`] does.
pub fn check(dir: &Path) -> Result<CheckReport> {
    let _lock = inspection_lock(dir)?;
    Ok(check_structure(dir)?.0)
}

/// [`check`], and also decodes every record's payload as an operation of `M` and runs `M`'s own consistency
/// checks ([`StateMachine::verify`]): a record whose checksum holds but
/// whose payload is not a valid `M` operation would make mount fail, so it is damage too.
pub fn check_as<M: StateMachine>(dir: &Path) -> Result<CheckReport> {
    let _lock = inspection_lock(dir)?;
    let (mut report, state_sound) = check_structure(dir)?;
    let guid = checkpoint::read(dir).ok().map(|c| c.guid);
    for (_, path) in generation::list(&dir.join(LOGS_DIR))?.generations {
        let decoded =
            generation::scan(&path, guid, |record| Ok(codec::decode_record::<M::Op>(record.payload).map(|_| ())?));
        // Header and framing problems are already in the report; only decode failures are new here.
        if let Err(e @ Error::Corrupted { .. }) = decoded
            && !report.problems.iter().any(|p| p.contains(&path.display().to_string()))
        {
            report.problems.push(e.to_string());
        }
    }
    // Only a structurally sound state store is read further.
    if !state_sound {
        return Ok(report);
    }
    // Every entry of every table against its checksum (`engine::table`), each damaged one reported.
    match verify_tables(dir) {
        Ok(damaged) => report.problems.extend(damaged.iter().map(|d| format!("state store: {d}"))),
        Err(e) => report.problems.push(format!("state store: {e}")),
    }
    // The state machine's own consistency checks (counters against what they count).
    match state_of::<M, _>(dir, |machine, txn| machine.verify(txn)) {
        Ok(problems) => report.problems.extend(problems.into_iter().map(|p| format!("state store: {p}"))),
        Err(e) => report.problems.push(format!("state store: {e}")),
    }
    Ok(report)
}

/// Runs `f` over a read-only snapshot of the state of the dismounted database in `dir`, opened as machine `M`
/// (for listings and checks by tools; nothing is written).
pub fn with_state<M: StateMachine, T>(dir: &Path, f: impl FnOnce(&M, &RoTxn<'_>) -> Result<T>) -> Result<T> {
    let _lock = inspection_lock(dir)?;
    state_of::<M, T>(dir, f)
}

fn state_of<M: StateMachine, T>(dir: &Path, f: impl FnOnce(&M, &RoTxn<'_>) -> Result<T>) -> Result<T> {
    let env = state::open_env(dir, Durability::Full, true)?;
    let meta = state::read_meta(&env, dir)?;
    crate::engine::open::check_meta::<M>(dir, &meta)?;
    let machine = state::open_machine::<M>(&env, &Attachments::new(dir), &dir.join(state::STATE_DIR))?;
    let txn = env.read_txn()?;
    f(&machine, &txn).map_err(|e| e.in_database(dir))
}

/// Every damaged entry of every table of the state store of the database in `dir`.
fn verify_tables(dir: &Path) -> Result<Vec<crate::engine::table::DamagedEntry>> {
    let env = state::open_env(dir, Durability::Full, true)?;
    crate::engine::table::verify_all(&env).map_err(|e| e.in_database(dir))
}

/// The structure of the state store's LMDB file, walked without mapping it; false when it is missing or
/// damaged (each problem is in `report`), and nothing else may then open it.
fn check_state_file(dir: &Path, report: &mut CheckReport) -> bool {
    let file = lmdb_file::data_file(&dir.join(state::STATE_DIR));
    let problems = match std::fs::metadata(&file) {
        Err(e) => vec![format!("{}: {e}", file.display())],
        Ok(m) if m.len() == 0 => vec![format!("{}: the file is empty", file.display())],
        Ok(_) => match lmdb_file::verify(&file) {
            Ok(v) => {
                let more = (v.more_problems > 0).then(|| format!("{} more problems", v.more_problems));
                let shown = v.problems.iter().map(|p| format!("{}: {}", file.display(), lmdb_file::describe(p)));
                shown.chain(more).collect()
            }
            Err(e) => vec![e.to_string()],
        },
    };
    let sound = problems.is_empty();
    report.problems.extend(problems.into_iter().map(|p| format!("state store: {p}")));
    sound
}

fn check_structure(dir: &Path) -> Result<(CheckReport, bool)> {
    let mut report = CheckReport::default();
    let state_sound = check_state_file(dir, &mut report);
    let ck = match checkpoint::read(dir) {
        Ok(ck) => Some(ck),
        Err(e) => {
            report.problems.push(format!("checkpoint: {e}"));
            None
        }
    };
    let meta = match state_sound.then(|| read_meta(dir)) {
        None => None,
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => {
            report.problems.push(format!("state store: {e}"));
            None
        }
    };
    let guid = ck.map(|c| c.guid).or(meta.as_ref().map(|m| m.guid));
    if let (Some(ck), Some(meta)) = (&ck, &meta)
        && ck.guid != meta.guid
    {
        report.problems.push(format!(
            "{}: the state store belongs to database {}, the checkpoint to {}",
            dir.join(state::STATE_DIR).display(),
            meta.guid,
            ck.guid
        ));
    }

    let infos = scan_all(dir, guid)?;
    report.generations = infos.len() as u64;
    report.records = infos.iter().map(|i| i.records).sum();
    let logs = dir.join(LOGS_DIR);
    for (i, info) in infos.iter().enumerate() {
        if let Some(problem) = &info.problem {
            let last = i + 1 == infos.len();
            if last && info.tail_only {
                report.problems.push(format!("torn tail: {problem}; run `mailstore recover` to discard it"));
            } else {
                report.problems.push(problem.clone());
            }
        }
        if i + 1 < infos.len() {
            let next = &infos[i + 1];
            if info.number + 1 != next.number {
                report.problems.push(format!(
                    "missing generation {}: expected {}",
                    info.number + 1,
                    logs.join(generation::file_name(info.number + 1)).display()
                ));
            } else if !info.chain_ok && info.problem.is_none() && next.problem.is_none() {
                report.problems.push(format!(
                    "{}: chain broken: its header does not match {} (checksum {:#010x}, last LSN {})",
                    next.path.display(),
                    info.path.display(),
                    info.checksum,
                    info.last_lsn
                ));
            }
        }
    }
    if infos.is_empty() {
        report.problems.push(format!("{}: the log holds no generation", logs.display()));
    }

    // Comparing positions against a log that is itself damaged would only repeat the damage in other words.
    let log_damaged =
        infos.iter().enumerate().any(|(i, g)| g.problem.is_some() && !(i + 1 == infos.len() && g.tail_only));
    if let (false, Some(ck), Some(first), Some(last)) = (log_damaged, &ck, infos.first(), infos.last()) {
        let head = last.last_lsn;
        if ck.lsn > head {
            report.problems.push(format!(
                "{}: checkpoint LSN {} is beyond the end of the log (LSN {head})",
                dir.join(checkpoint::CHECKPOINT_FILE).display(),
                ck.lsn
            ));
        }
        if first.first_lsn > ck.lsn + 1 {
            report.problems.push(format!(
                "{}: the log starts at LSN {} but recovery from the checkpoint needs LSN {}",
                first.path.display(),
                first.first_lsn,
                ck.lsn + 1
            ));
        }
        if let Some(meta) = &meta {
            if meta.applied_lsn > head {
                report.problems.push(format!(
                    "{}: the state store has applied LSN {} but the log ends at LSN {head}",
                    dir.join(state::STATE_DIR).display(),
                    meta.applied_lsn
                ));
            }
            if meta.applied_lsn < ck.lsn {
                report.problems.push(format!(
                    "{}: the state store has applied LSN {} only, below the checkpoint LSN {}",
                    dir.join(state::STATE_DIR).display(),
                    meta.applied_lsn,
                    ck.lsn
                ));
            }
        }
    }
    Ok((report, state_sound))
}

/// The shared lock offline inspection holds: it conflicts with a mounted engine, not with other inspectors, and
/// creates the lock file only in a directory that holds a database.
pub(crate) fn inspection_lock(dir: &Path) -> Result<DirLock> {
    DirLock::shared(dir, dir.join(CHECKPOINT_FILE).exists() || dir.join(STATE_DIR).exists())
}
