//! Mounting: creating a database, or opening one and recovering it from its log.
//!
//! Recovery, in order:
//! 1. read the checkpoint file (the newest valid slot) and the state store's `applied_lsn`;
//! 2. remove leftovers of an interrupted generation create (`*.log.tmp`);
//! 3. inspect the log from the generation holding `min(checkpoint, applied) + 1` to the end (see
//!    [`crate::log::verify`]), before anything is replayed;
//! 4. decide about a torn tail according to the [`RecoveryMode`];
//! 5. replay every record above `applied_lsn` through [`StateStore::apply_records`], the function commits use;
//! 6. discard the torn tail (zero it and sync), sync the state, and write a checkpoint marked dirty (mounted).

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codec;
use crate::engine::checkpoint::CheckpointFile;
use crate::engine::open::OpenDir;
use crate::engine::state::{self, StateStore};
use crate::engine::writer::GenInfo;
use crate::engine::{
    Attachments, CHECKPOINT_FILE, Checkpoint, Counters, LOGS_DIR, LogPolicy, Options, RecoveryMode, SEGMENTS_DIR,
    StateMachine,
};
use crate::error::{Error, IoContext, Result};
use crate::log::reader::{BatchReader, Extent};
use crate::log::verify::{self, Walk};
use crate::log::{LogWriter, generation};
use crate::types::{Guid, Lsn};

/// What mounting found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// The database was created by this mount.
    pub created: bool,
    /// The previous mount ended with a clean dismount (true for a new database).
    pub was_clean: bool,
    /// Checkpoint LSN found at mount.
    pub checkpoint_lsn: Lsn,
    /// Applied LSN the state store had at mount.
    pub applied_lsn_before: Lsn,
    /// Applied LSN after replay: the last record in the log.
    pub applied_lsn_after: Lsn,
    /// Records replayed.
    pub replayed: u64,
    /// Generations inspected.
    pub generations_scanned: u64,
    /// The torn tail discarded, if there was one.
    pub truncated_tail: Option<TailTruncation>,
    /// Leftover temporary files removed.
    pub leftovers_removed: Vec<PathBuf>,
    /// The checkpoint read (the newest valid slot) named records the log no longer holds, because a newer
    /// checkpoint, whose slot was damaged, had let them be truncated: recovery went on from the state store's
    /// applied LSN instead, which every record up to it is in.
    pub checkpoint_superseded: bool,
}

/// A torn tail that recovery discarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailTruncation {
    /// The last generation.
    pub file: PathBuf,
    /// Where its valid records end.
    pub offset: u64,
    /// Bytes zeroed after that offset.
    pub bytes: u64,
    /// What was found at `offset`.
    pub reason: String,
}

pub(crate) struct Mounted<M: StateMachine> {
    pub(crate) state: StateStore<M>,
    pub(crate) checkpoint: CheckpointFile,
    pub(crate) log: LogWriter,
    pub(crate) present: VecDeque<GenInfo>,
    pub(crate) report: RecoveryReport,
    pub(crate) epoch: u64,
    pub(crate) policy: LogPolicy,
}

/// Mounts `dir`. With `activate = Some(epoch)`, the log then continues in a new generation of epoch
/// `max(epoch, current epoch + 1)` (activation of a passive copy).
pub(crate) fn mount<M: StateMachine>(dir: &Path, options: &Options, activate: Option<u64>) -> Result<Mounted<M>> {
    if dir.join(CHECKPOINT_FILE).exists() {
        open_existing(dir, options, activate)
    } else if options.create_if_missing {
        create(dir, options)
    } else {
        Err(Error::NotADatabase { path: dir.to_path_buf(), reason: "no checkpoint file".into() })
    }
}

/// Creates a database. The checkpoint file is written last: until it exists, the directory holds an
/// interrupted creation, which is discarded and redone as long as its log holds no record.
fn create<M: StateMachine>(dir: &Path, options: &Options) -> Result<Mounted<M>> {
    let logs = dir.join(LOGS_DIR);
    if logs.exists() {
        for (_, path) in generation::list(&logs)?.generations {
            let scan = generation::scan(&path, None, |_| Ok(()))?;
            if scan.records > 0 {
                return Err(Error::NotADatabase {
                    path: dir.to_path_buf(),
                    reason: format!("the checkpoint file is missing but {} holds records", path.display()),
                });
            }
        }
        fs::remove_dir_all(&logs).at(&logs)?;
    }
    let segments = Attachments::new(dir).list_segments()?;
    if let Some((_, path)) = segments.first() {
        return Err(Error::NotADatabase {
            path: dir.to_path_buf(),
            reason: format!("the checkpoint file is missing but {} holds message bodies", path.display()),
        });
    }
    let state_dir = dir.join(state::STATE_DIR);
    if state_dir.join("data.mdb").exists() {
        // An interrupted creation leaves a state store that applied nothing (or holds no metadata yet); a state
        // store that applied records is a database whose checkpoint file is lost, never to be created over.
        match state::open_env(dir, options.durability, true).and_then(|env| state::read_meta(&env, dir)) {
            Ok(meta) if meta.applied_lsn > 0 => {
                return Err(Error::NotADatabase {
                    path: dir.to_path_buf(),
                    reason: format!(
                        "the checkpoint file is missing but the state store has applied {} records (database {}); \
                         restore the checkpoint file, or recover the database from a backup",
                        meta.applied_lsn, meta.guid
                    ),
                });
            }
            Ok(_) | Err(Error::NotADatabase { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    if state_dir.exists() {
        fs::remove_dir_all(&state_dir).at(&state_dir)?;
    }

    let guid = Guid::new_random();
    let epoch = 1;
    let env = state::open_env(dir, options.durability, false)?;
    let state = StateStore::<M>::create(env, Attachments::new(dir))?;
    let mut txn = state.env.write_txn()?;
    state.meta.init(&mut txn, guid, epoch, M::NAME, M::FORMAT)?;
    let policy = options.log_policy.unwrap_or_default();
    state.meta.set_policy(&mut txn, policy)?;
    txn.commit()?;
    state.env.force_sync()?;

    fs::create_dir_all(&logs).at(&logs)?;
    let segments = dir.join(SEGMENTS_DIR);
    fs::create_dir_all(&segments).at(&segments)?;
    let log = LogWriter::create(&logs, guid, epoch, options.log_target_size)?;
    crate::fsutil::sync_dir(&logs)?;
    let checkpoint = CheckpointFile::create(dir, Checkpoint::first(guid, 0, epoch, false))?;
    crate::fsutil::sync_dir(dir)?;
    let present = VecDeque::from([GenInfo { number: 1, first_lsn: 1, path: log.path().to_path_buf() }]);
    let report = RecoveryReport { created: true, was_clean: true, generations_scanned: 1, ..Default::default() };
    Ok(Mounted { state, checkpoint, log, present, report, epoch, policy })
}

fn open_existing<M: StateMachine>(dir: &Path, options: &Options, activate: Option<u64>) -> Result<Mounted<M>> {
    let logs = dir.join(LOGS_DIR);
    let OpenDir { state, meta: values, mut checkpoint, leftovers_removed } =
        OpenDir::<M>::open(dir, options.durability)?;
    let ck = checkpoint.current();
    let policy = options.log_policy.unwrap_or(values.policy);
    if policy != values.policy {
        let mut txn = state.env.write_txn()?;
        state.meta.set_policy(&mut txn, policy)?;
        txn.commit()?;
        state.env.force_sync()?;
    }
    let mut report = RecoveryReport {
        was_clean: ck.clean,
        checkpoint_lsn: ck.lsn,
        applied_lsn_before: values.applied_lsn,
        leftovers_removed,
        ..Default::default()
    };

    // Inspect everything before replaying anything.
    let applied = values.applied_lsn;
    let start = ck.lsn.min(applied) + 1;
    // Inspection also decodes every record recovery will replay, so an undecodable one is reported as damage
    // with its file and offset before anything is applied.
    let walk = |start: Lsn| {
        verify::walk(&logs, ck.guid, Some(start), |record| {
            if record.lsn > applied {
                codec::decode_record::<M::Op>(record.payload)?;
            }
            Ok(())
        })
    };
    let inspected = match walk(start) {
        // The checkpoint read names records truncated since: a newer checkpoint, whose slot is now damaged (a
        // flipped bit) or lost, let truncation go past it. Truncation only follows a checkpoint that synced the
        // state, and every record up to `applied` is in the state store: the log is needed from `applied + 1`.
        Err(Error::MissingGeneration { .. }) if applied > ck.lsn => {
            report.checkpoint_superseded = true;
            walk(applied + 1)?
        }
        other => other?,
    };
    if let Some(damage) = &inspected.tail_damage
        && options.recovery == RecoveryMode::AbsoluteConsistency
    {
        return Err(Error::TornTail {
            file: inspected.last().path.clone(),
            offset: damage.offset,
            reason: damage.reason.to_string(),
        });
    }
    let log_end = inspected.last_lsn();
    if applied.max(ck.lsn) > log_end {
        return Err(Error::StateAheadOfLog { applied: applied.max(ck.lsn), log_end });
    }

    report.replayed = replay(&state, &inspected, applied)?;
    let walk = inspected;
    report.generations_scanned = walk.scans.len() as u64;
    report.applied_lsn_after = walk.last_lsn();
    let last = walk.last();
    if let Some((damage, bytes)) = walk.discard_tail()? {
        report.truncated_tail = Some(TailTruncation {
            file: last.path.clone(),
            offset: damage.offset,
            bytes,
            reason: damage.reason.to_string(),
        });
    }
    let mut log = LogWriter::resume(&logs, last, options.log_target_size)?;
    let mut present: VecDeque<GenInfo> = walk
        .present
        .iter()
        .map(|(h, path)| GenInfo { number: h.generation, first_lsn: h.first_lsn, path: path.clone() })
        .collect();
    let mut epoch = values.epoch.max(log.header().epoch);
    if let Some(min) = activate {
        // Activation: close the last generation as it is and continue in a new epoch. Its header records the
        // checksum of the last generation, which is how a returning old active finds where it diverged.
        epoch = min.max(epoch + 1);
        log.roll(epoch, None)?;
        let header = *log.header();
        present.push_back(GenInfo { number: header.generation, first_lsn: header.first_lsn, path: log.path().into() });
    }

    // Make the replayed state durable and mark the database mounted (dirty).
    checkpoint.write_after_sync(&state.env, Checkpoint { lsn: report.applied_lsn_after, epoch, clean: false, ..ck })?;
    Ok(Mounted { state, checkpoint, log, present, report, epoch, policy })
}

/// Replays every record above `applied` in the generations `walk` inspected, through the commit path's apply,
/// in the batches a passive copy's replay reads too ([`BatchReader`]). Returns the number of records replayed.
fn replay<M: StateMachine>(state: &StateStore<M>, walk: &Walk, applied: Lsn) -> Result<u64> {
    let extents: Vec<Extent> = walk.scans.iter().map(Extent::of).collect();
    let stats = Counters::default();
    let mut reader = BatchReader::new(Arc::default());
    let (mut next, mut replayed) = (applied + 1, 0);
    while let Some(batch) = reader.read(&extents, next, walk.last_lsn())? {
        let records = batch.records();
        // Rejections were rejections at commit time too: the record is a no-op either way.
        state.apply_records(&records, &stats)?;
        replayed += records.len() as u64;
        next = records.last().map_or(next, |r| r.lsn + 1);
    }
    Ok(replayed)
}
