//! Bringing an old active back as a passive copy: find where its log diverged from the new active's, discard
//! (and report) what diverged, or say that it needs a reseed. Never a merge.
//!
//! When a passive copy is activated it closes its last generation where its copy of the log ended (LSN `n`)
//! and starts generation `k` of a new epoch, whose header records `n + 1` as its first LSN and the checksum of
//! generation `k - 1` up to record `n`. The old active finds the first generation whose header differs from the
//! new active's, and checks that its own generation `k - 1`, cut after record `n`, has exactly that checksum:
//! then the logs agree up to `n` and differ after it. If the old active's state has not applied any record
//! after `n`, its diverged generations are moved to `DIR/diverged/` and it continues as a passive copy from
//! `n`; otherwise it must be reseeded. Anything else — a checksum that does not match, a generation missing —
//! is a divergence that cannot be resolved: the copy is marked FailedAndSuspended.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::engine::state;
use crate::engine::{CHECKPOINT_FILE, Durability, LOGS_DIR, StateMachine, read_fence, write_fence};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::DirLock;
use crate::log::format::{Frame, GenerationHeader, HEADER_LEN, RecordSeal};
use crate::log::generation;
use crate::replication::ReplicationError;
use crate::replication::copy::{CopyFile, RESYNCING_FILE, read_copy_file, write_copy_file};
use crate::replication::protocol::{Hello, LogSource};
use crate::types::{Guid, Lsn};

/// Directory inside a copy where diverged generations are kept for the administrator.
pub const DIVERGED_DIR: &str = "diverged";

/// Commits an old active made that the new active never received: reported, never merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diverged {
    /// The last LSN both logs share.
    pub common_lsn: Lsn,
    /// The first diverged LSN.
    pub first_lsn: Lsn,
    /// The last diverged LSN.
    pub last_lsn: Lsn,
    /// Where the diverged generations were moved (empty when they were left in place for a reseed).
    pub files: Vec<PathBuf>,
}

impl Diverged {
    /// How many diverged records there are.
    pub fn records(&self) -> u64 {
        self.last_lsn + 1 - self.first_lsn
    }
}

/// What [`resync`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResyncOutcome {
    /// The log had not diverged: the directory is a passive copy, ready to open.
    InSync {
        /// The last LSN of its log.
        lsn: Lsn,
    },
    /// The diverged generations were moved aside (and are reported); the directory is a passive copy, ready
    /// to open, that catches up from the common LSN.
    Resynchronized(Diverged),
    /// The state already applied diverged records: the copy must be reseeded ([`super::PassiveCopy::seed`]).
    /// Nothing was changed on disk.
    NeedsReseed(Diverged),
}

/// Prepares the database in `dir` (an old active, not mounted) to come back as a passive copy of `source`.
/// See the module documentation. A divergence that cannot be resolved marks the copy FailedAndSuspended and
/// returns [`ReplicationError::CopyFailed`].
pub fn resync<M: StateMachine>(dir: impl AsRef<Path>, source: &dyn LogSource) -> Result<ResyncOutcome> {
    let dir = dir.as_ref();
    let _lock = DirLock::exclusive(dir)?;
    // `copy-status` from another process reports Resynchronizing while this marker exists.
    let _marker = Marker::create(dir.join(RESYNCING_FILE))?;
    if !dir.join(CHECKPOINT_FILE).exists() {
        return Err(Error::NotADatabase { path: dir.to_path_buf(), reason: "no checkpoint file".into() });
    }
    let id = read_copy_file(dir)?.map_or_else(Guid::new_random, |c| c.id);
    let (guid, applied, own_epoch) = {
        let env = state::open_env(dir, Durability::Full, true)?;
        let values = state::read_meta(&env, dir)?;
        if values.machine != M::NAME {
            return Err(Error::NotADatabase {
                path: dir.to_path_buf(),
                reason: format!("it holds a {:?} database, not {:?}", values.machine, M::NAME),
            });
        }
        (values.guid, values.applied_lsn, values.epoch)
    };
    let logs = dir.join(LOGS_DIR);
    let ours: Vec<(GenerationHeader, PathBuf)> = generation::list(&logs)?
        .generations
        .into_iter()
        .map(|(_, path)| generation::read_header(&path, Some(guid)).map(|h| (h, path)))
        .collect::<Result<_>>()?;
    let Some((last_header, last_path)) = ours.last().cloned() else {
        return Err(Error::NotADatabase { path: logs, reason: "no log generation".into() });
    };
    let last_scan = generation::scan(&last_path, Some(guid), |_| Ok(()))?;
    let our_last = last_scan.last_lsn;
    let known_epoch = own_epoch.max(last_header.epoch).max(read_fence(dir)?.unwrap_or(0));

    let info = source.hello(Hello { copy: id, known_epoch: 0, keep_lsn: 0 })?;
    if info.guid != guid {
        return Err(ReplicationError::ForeignSource { expected: guid, found: info.guid }.into());
    }
    let fail = |reason: String| -> Result<ResyncOutcome> {
        write_copy_file(dir, &CopyFile { id, suspended: true, failed: Some(reason.clone()), source: None })?;
        Err(ReplicationError::CopyFailed { reason }.into())
    };
    let first = ours[0].0.generation;
    let theirs: Vec<GenerationHeader> = source
        .headers(first)?
        .iter()
        .map(|raw| {
            GenerationHeader::decode(raw)
                .map_err(|e| ReplicationError::Protocol { reason: format!("source header: {e}") }.into())
        })
        .collect::<Result<_>>()?;
    let their = |number: u64| theirs.iter().find(|h| h.generation == number);

    // The first generation whose header differs, or the one after our last.
    let split = ours
        .iter()
        .find(|(h, _)| their(h.generation) != Some(h))
        .map_or(last_header.generation + 1, |(h, _)| h.generation);
    let common = match their(split) {
        // The source's log continues from inside our generation `split - 1`.
        Some(next) => {
            let n = next.first_lsn - 1;
            let Some((prev_header, prev_path)) = ours.iter().find(|(h, _)| h.generation + 1 == split) else {
                return fail(format!(
                    "the logs diverge at generation {split}, before the oldest generation this copy has: reseed it"
                ));
            };
            if split > last_header.generation && our_last <= n {
                // We are behind the source inside our last generation: nothing diverged that we can see. The
                // copier checks the rest when it receives it (the next header's chain must match our bytes).
                write_fence(dir, info.epoch.max(known_epoch))?;
                write_copy_file(dir, &CopyFile { id, suspended: false, failed: None, source: None })?;
                return Ok(ResyncOutcome::InSync { lsn: our_last });
            }
            match prefix_through(prev_path, prev_header, n)? {
                Some((_, crc)) if crc == next.prev_checksum => n,
                _ => {
                    return fail(format!(
                        "generation {split} of the source does not chain to this copy's generation {} at LSN {n}: \
                         the logs diverged in a way that cannot be resolved",
                        split - 1
                    ));
                }
            }
        }
        // The source has nothing after our generations: it is at most as far as we are, in our epoch.
        None if split > last_header.generation => our_last,
        None => {
            return fail(format!(
                "this copy's generation {split} differs from the source's, and the source has no generation {split}"
            ));
        }
    };
    write_fence(dir, info.epoch.max(known_epoch))?;
    if our_last <= common && split > last_header.generation {
        write_copy_file(dir, &CopyFile { id, suspended: false, failed: None, source: None })?;
        return Ok(ResyncOutcome::InSync { lsn: our_last });
    }
    let mut diverged =
        Diverged { common_lsn: common, first_lsn: common + 1, last_lsn: our_last.max(common), files: Vec::new() };
    if applied > common {
        return Ok(ResyncOutcome::NeedsReseed(diverged));
    }

    // Move the diverged generations aside, and cut the shared one after the common record.
    let aside = dir.join(DIVERGED_DIR);
    fs::create_dir_all(&aside).at(&aside)?;
    for (header, path) in ours.iter().filter(|(h, _)| h.generation >= split) {
        let to = aside.join(format!("epoch{}-{}", header.epoch, generation::file_name(header.generation)));
        fs::rename(path, &to).at(path)?;
        diverged.files.push(to);
    }
    if let Some((prev_header, prev_path)) = ours.iter().find(|(h, _)| h.generation + 1 == split)
        && let Some((end, _)) = prefix_through(prev_path, prev_header, common)?
    {
        let copy = aside.join(format!("epoch{}-{}", prev_header.epoch, generation::file_name(prev_header.generation)));
        fs::copy(prev_path, &copy).at(&copy)?;
        diverged.files.push(copy);
        let file = OpenOptions::new().read(true).write(true).open(prev_path).at(prev_path)?;
        let len = file.metadata().at(prev_path)?.len();
        // Zero everything after the common record: the end marker is where the shared records stop.
        file.set_len(end).and_then(|()| file.set_len(len.max(end))).at(prev_path)?;
        file.sync_all().at(prev_path)?;
    }
    crate::fsutil::sync_dir(&logs)?;
    crate::fsutil::sync_dir(&aside)?;
    write_copy_file(dir, &CopyFile { id, suspended: false, failed: None, source: None })?;
    Ok(ResyncOutcome::Resynchronized(diverged))
}

/// A file that exists for as long as this value lives.
struct Marker(PathBuf);

impl Marker {
    fn create(path: PathBuf) -> Result<Self> {
        fs::write(&path, b"").at(&path)?;
        Ok(Marker(path))
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The end offset and CRC32 of generation `path` from its start through record `lsn` (through the header only
/// when `lsn` precedes its first record); `None` when it holds no record `lsn`.
fn prefix_through(path: &Path, header: &GenerationHeader, lsn: Lsn) -> Result<Option<(u64, u32)>> {
    let file = std::fs::File::open(path).at(path)?;
    let len = file.metadata().at(path)?.len();
    let mut bytes = vec![0u8; usize::try_from(len).map_err(|_| Error::corrupted(path, 0, "file too large"))?];
    file.read_exact_at(&mut bytes, 0).at(path)?;
    if lsn + 1 == header.first_lsn {
        return Ok(Some((HEADER_LEN as u64, crc32fast::hash(&bytes[..HEADER_LEN.min(bytes.len())]))));
    }
    let seal = RecordSeal::for_header(header);
    for (at, frame) in seal.frames(&bytes[HEADER_LEN.min(bytes.len())..]) {
        let Frame::Record { lsn: l, frame_len, .. } = frame else { break };
        if l == lsn {
            let end = HEADER_LEN + at + frame_len;
            return Ok(Some((end as u64, crc32fast::hash(&bytes[..end]))));
        }
    }
    Ok(None)
}
