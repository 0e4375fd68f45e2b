//! Seeding: [`PassiveCopy::seed`] makes a copy directory from a snapshot served by the active or a healthy
//! passive, then opens it; [`SeedProgress`] reports how far the snapshot has come.
//!
//! A snapshot is the state file followed by generations (see [`SnapshotPart`]): those holding message bodies the
//! state refers to, which become the copy's `segments/`, and the generation its log starts with. Each is
//! received under a temporary name and synced, checked with the log's own scan, and only then renamed into
//! place, before the copy is opened: a damaged or hostile generation fails the seeding and is not kept.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::PassiveCopy;
use super::admin::{CopyFile, SEEDING_FILE, UNSYNCED_FILE, read_copy_file, write_copy_file};
use super::options::CopyOptions;
use crate::engine::checkpoint::CheckpointFile;
use crate::engine::state;
use crate::engine::{CHECKPOINT_FILE, Checkpoint, Durability, LOGS_DIR, SEGMENTS_DIR, StateMachine, read_fence};
use crate::error::{IoContext, Result};
use crate::fsutil::DirLock;
use crate::log::format::{END_MARKER, HEADER_LEN};
use crate::log::generation::{self, tmp_file_name};
use crate::replication::ReplicationError;
use crate::replication::protocol::{Hello, LogSource, MAX_SNAPSHOT_GENERATIONS, SnapshotPart, SnapshotRequest};
use crate::types::Guid;

/// Progress of a seeding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedProgress {
    /// Snapshot bytes received.
    pub bytes: u64,
    /// Snapshot bytes in all.
    pub total: u64,
}

impl<M: StateMachine> PassiveCopy<M> {
    /// Creates a passive copy in `dir` from a consistent snapshot served by `snapshot_from` (the active or a
    /// healthy passive), then opens it: it catches up from `source`'s log while the active keeps taking
    /// writes. The snapshot carries the generations holding the message bodies the state refers to (they go to
    /// the copy's `segments/`) and the one the copy's log starts with, so every message reads back on the copy
    /// at once. `dir` may hold a failed copy or an old active: its state, log and segments are replaced (its
    /// `diverged/` directory is kept). `progress` is called after every piece of the snapshot.
    pub fn seed(
        dir: impl AsRef<Path>,
        snapshot_from: &dyn LogSource,
        source: Arc<dyn LogSource>,
        options: CopyOptions,
        mut progress: impl FnMut(SeedProgress),
    ) -> Result<Self> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).at(&dir)?;
        {
            let _lock = DirLock::exclusive(&dir)?;
            let id = read_copy_file(&dir).ok().flatten().map_or_else(Guid::new_random, |c| c.id);
            // Replace whatever was there (a failed copy, an old active's state).
            for name in [CHECKPOINT_FILE, crate::replication::source::COPIES_FILE, UNSYNCED_FILE] {
                let path = dir.join(name);
                if path.exists() {
                    fs::remove_file(&path).at(&path)?;
                }
            }
            for name in [state::STATE_DIR, LOGS_DIR, SEGMENTS_DIR] {
                let path = dir.join(name);
                if path.exists() {
                    fs::remove_dir_all(&path).at(&path)?;
                }
            }
            write_copy_file(&dir, &CopyFile { id, suspended: false, failed: None, source: None })?;
            let known_epoch = read_fence(&dir)?.unwrap_or(0);

            // Pin the log on the active from where the snapshot source stands, before the snapshot is taken.
            let info = source.hello(Hello { copy: id, known_epoch, keep_lsn: 0 })?;
            let from = snapshot_from.hello(Hello { copy: id, known_epoch, keep_lsn: 0 })?;
            if from.guid != info.guid {
                return Err(ReplicationError::ForeignSource { expected: info.guid, found: from.guid }.into());
            }
            source.hello(Hello { copy: id, known_epoch, keep_lsn: from.position.lsn.min(info.position.lsn) + 1 })?;

            let state_dir = dir.join(state::STATE_DIR);
            let tmp = state_dir.join(SEEDING_FILE);
            let received = receive(&dir, snapshot_from, id, &options, &mut progress)?;
            let data = state_dir.join("data.mdb");
            fs::rename(&tmp, &data).at(&data)?;
            crate::fsutil::sync_dir(&state_dir)?;

            let env = state::open_env(&dir, Durability::Full, false)?;
            let values = state::read_meta(&env, &dir)?;
            if values.guid != info.guid {
                return Err(ReplicationError::ForeignSource { expected: info.guid, found: values.guid }.into());
            }
            drop(env);
            received.install::<M>(info.guid, values.applied_lsn)?;
            CheckpointFile::create(&dir, Checkpoint::first(values.guid, values.applied_lsn, values.epoch, true))?;
            let logs = dir.join(LOGS_DIR);
            fs::create_dir_all(&logs).at(&logs)?;
            crate::fsutil::sync_dir(&dir)?;
        }
        Self::open(dir, source, options)
    }
}

/// One file of a snapshot being received: the generation it is (`None`: the state file), where it starts in
/// the stream and how long it is, and its temporary path until it is checked.
struct Incoming {
    generation: Option<u64>,
    start: u64,
    len: u64,
    tmp: PathBuf,
}

/// A snapshot received into temporary files: the state file (`state/data.mdb.seeding`), the segments (in
/// `segments/`) and the start of the copy's log (in `logs/`), each synced.
struct Received {
    dir: PathBuf,
    segments: Vec<Incoming>,
    log: Option<Incoming>,
}

/// Receives a whole snapshot from `from` for copy `id` into the copy directory `dir`.
fn receive(
    dir: &Path,
    from: &dyn LogSource,
    id: Guid,
    options: &CopyOptions,
    progress: &mut impl FnMut(SeedProgress),
) -> Result<Received> {
    let mut layout: Option<Layout> = None;
    let mut offset = 0u64;
    loop {
        let part = from.snapshot(SnapshotRequest { copy: id, offset, max_bytes: options.chunk_bytes })?;
        if part.offset != offset || part.bytes.is_empty() && offset < part.total {
            return Err(protocol(format!("snapshot piece at {} answered for {offset}", part.offset)));
        }
        let layout = match &mut layout {
            Some(layout) if part.total != layout.total || part.applied_lsn != layout.applied_lsn => {
                return Err(protocol("a snapshot piece of another snapshot"));
            }
            Some(layout) => layout,
            None => layout.insert(Layout::of(dir, &part)?),
        };
        layout.write(offset, &part.bytes)?;
        offset += part.bytes.len() as u64;
        progress(SeedProgress { bytes: offset, total: part.total });
        if offset >= part.total {
            break;
        }
    }
    let Some(mut layout) = layout else { return Err(protocol("an empty snapshot")) };
    layout.close_current()?;
    let mut files = layout.files.into_iter().filter(|f| f.generation.is_some());
    let log = if layout.has_log { files.next_back() } else { None };
    Ok(Received { dir: dir.to_path_buf(), segments: files.collect(), log })
}

fn protocol(reason: impl Into<String>) -> crate::error::Error {
    ReplicationError::Protocol { reason: reason.into() }.into()
}

/// How the stream of a snapshot is laid out, from its first piece, and the file being written.
struct Layout {
    total: u64,
    applied_lsn: crate::types::Lsn,
    files: Vec<Incoming>,
    has_log: bool,
    current: Option<(usize, File)>,
}

impl Layout {
    /// The layout the first piece announces, checked: a state file, then generations in increasing order, each at
    /// least a header long, adding up to the total.
    fn of(dir: &Path, part: &SnapshotPart) -> Result<Self> {
        let generations: Vec<(u64, u64)> = part.segments.iter().copied().chain(part.log).collect();
        if generations.len() > MAX_SNAPSHOT_GENERATIONS {
            return Err(protocol(format!("a snapshot of {} generations", generations.len())));
        }
        if part.state_len == 0 {
            return Err(protocol("a snapshot without a state file"));
        }
        let mut files = vec![Incoming {
            generation: None,
            start: 0,
            len: part.state_len,
            tmp: dir.join(state::STATE_DIR).join(SEEDING_FILE),
        }];
        let mut end = part.state_len;
        let mut previous = 0;
        for (i, &(generation, len)) in generations.iter().enumerate() {
            if generation <= previous || len < HEADER_LEN as u64 {
                return Err(protocol(format!("snapshot generation {generation} of {len} bytes out of place")));
            }
            previous = generation;
            let is_log = part.log.is_some() && i + 1 == generations.len();
            let into = dir.join(if is_log { LOGS_DIR } else { SEGMENTS_DIR });
            files.push(Incoming {
                generation: Some(generation),
                start: end,
                len,
                tmp: into.join(tmp_file_name(generation)),
            });
            end = end.checked_add(len).ok_or_else(|| protocol("a snapshot longer than a file can be"))?;
        }
        if end != part.total {
            return Err(protocol(format!("a snapshot of {} bytes whose files add up to {end}", part.total)));
        }
        for sub in [state::STATE_DIR, LOGS_DIR, SEGMENTS_DIR] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).at(&path)?;
        }
        Ok(Layout {
            total: part.total,
            applied_lsn: part.applied_lsn,
            files,
            has_log: part.log.is_some(),
            current: None,
        })
    }

    /// Writes a piece at `offset` of the stream into the file it belongs to (a piece never spans two).
    fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        let index = self.files.partition_point(|f| f.start <= offset).saturating_sub(1);
        let file = &self.files[index];
        if offset + bytes.len() as u64 > file.start + file.len {
            return Err(protocol(format!("a snapshot piece at {offset} runs past the end of its file")));
        }
        let at = offset - file.start;
        if self.current.as_ref().is_none_or(|(i, _)| *i != index) {
            self.close_current()?;
            let f = File::create(&self.files[index].tmp).at(&self.files[index].tmp)?;
            self.current = Some((index, f));
        }
        let file = &self.files[index];
        if let Some((_, f)) = &self.current {
            f.write_all_at(bytes, at).at(&file.tmp)?;
        }
        Ok(())
    }

    /// Syncs and closes the file being written; the log's gets its end marker first.
    fn close_current(&mut self) -> Result<()> {
        if let Some((index, f)) = self.current.take() {
            let file = &self.files[index];
            if self.has_log && index + 1 == self.files.len() {
                f.write_all_at(&END_MARKER, file.len).at(&file.tmp)?;
            }
            f.sync_all().at(&file.tmp)?;
        }
        Ok(())
    }
}

impl Received {
    /// Checks every generation received with the log's own scan (the database's GUID, the generation its name
    /// says; no damage; the log's records whole and decodable, reaching from at most `applied + 1` to at least
    /// `applied`) and only then moves them into place, syncing the directories. If one fails, none is kept and the
    /// seeding fails with [`ReplicationError::ChunkRejected`].
    fn install<M: StateMachine>(self, guid: Guid, applied: crate::types::Lsn) -> Result<()> {
        let checked = self.check::<M>(guid, applied);
        if checked.is_err() {
            for file in self.segments.iter().chain(&self.log) {
                let _ = fs::remove_file(&file.tmp);
            }
        }
        checked?;
        for (file, sub) in self.segments.iter().map(|f| (f, SEGMENTS_DIR)).chain(self.log.iter().map(|f| (f, LOGS_DIR)))
        {
            if let Some(generation) = file.generation {
                let to = self.dir.join(sub).join(generation::file_name(generation));
                fs::rename(&file.tmp, &to).at(&to)?;
            }
        }
        for sub in [SEGMENTS_DIR, LOGS_DIR] {
            crate::fsutil::sync_dir(&self.dir.join(sub))?;
        }
        Ok(())
    }

    fn check<M: StateMachine>(&self, guid: Guid, applied: crate::types::Lsn) -> Result<()> {
        for file in &self.segments {
            checked(file, generation::scan(&file.tmp, Some(guid), |_| Ok(())), |_| Ok(()))?;
        }
        if let Some(file) = &self.log {
            let scan = generation::scan(&file.tmp, Some(guid), |record| {
                crate::codec::decode_record::<M::Op>(record.payload)?;
                Ok(())
            });
            checked(file, scan, |scan| {
                if scan.end_offset != file.len {
                    return Err(format!("its records end at {}, not at its end {}", scan.end_offset, file.len));
                }
                if scan.header.first_lsn > applied.saturating_add(1) || scan.last_lsn < applied {
                    return Err(format!(
                        "it holds LSNs {} to {}, the state needs the log from LSN {}",
                        scan.header.first_lsn,
                        scan.last_lsn,
                        applied.saturating_add(1)
                    ));
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// Judges the scan of a received generation: it must be the generation announced, undamaged, and pass `more`;
/// otherwise the file is deleted and the seeding fails.
fn checked(
    file: &Incoming,
    scan: Result<generation::Scan>,
    more: impl FnOnce(&generation::Scan) -> std::result::Result<(), String>,
) -> Result<()> {
    let generation = file.generation.unwrap_or(0);
    let verdict = match scan {
        Ok(scan) if scan.header.generation != generation => {
            Err(format!("its header says generation {}", scan.header.generation))
        }
        Ok(scan) => match &scan.damage {
            Some(damage) => Err(format!("damaged at offset {}: {}", damage.offset, damage.reason)),
            None => more(&scan),
        },
        // Reading our own file failed: that is not the source's doing.
        Err(e @ crate::error::Error::Io { .. }) => return Err(e),
        Err(e) => Err(e.to_string()),
    };
    verdict.map_err(|reason| {
        let _ = fs::remove_file(&file.tmp);
        ReplicationError::ChunkRejected { reason: format!("snapshot generation {generation}: {reason}") }.into()
    })
}
