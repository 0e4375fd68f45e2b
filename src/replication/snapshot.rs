//! Snapshots of a database's state for seeding a copy: prepared in `seed-<copy>/` inside the database directory
//! (the state file and hard links to the generations it needs), served piece by piece, and removed once served,
//! forgotten, idle too long, or left behind by a process that stopped.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::engine::state::StateStore;
use crate::engine::{LOGS_DIR, SEGMENTS_DIR, StateMachine};
use crate::error::{Error, IoContext, Result};
use crate::log::format::HEADER_LEN;
use crate::log::generation;
use crate::replication::ReplicationError;
use crate::replication::protocol::{
    CopyId, MAX_CHUNK_BYTES, MAX_SNAPSHOT_GENERATIONS, SnapshotPart, SnapshotRequest, layout_bytes,
};
use crate::types::{Guid, Lsn};

fn refused(reason: impl Into<String>) -> Error {
    ReplicationError::Refused { reason: reason.into() }.into()
}

/// The state file's name in a snapshot directory.
pub(crate) const SNAPSHOT_STATE_FILE: &str = "state.mdb";

/// The directory of `copy`'s snapshot in the database directory `dir`: the state file and hard links to the
/// generations it carries.
fn snapshot_dir(dir: &Path, copy: CopyId) -> PathBuf {
    dir.join(format!("seed-{copy}"))
}

/// What [`prepare_snapshot`] chose: the generations that follow the state file (linked next to it).
pub(crate) struct PreparedSnapshot {
    pub(crate) applied_lsn: Lsn,
    pub(crate) segments: Vec<(u64, u64)>,
    pub(crate) log: Option<(u64, u64)>,
}

/// Prepares a snapshot of the database in `dir` (whose GUID is `guid`) in the empty directory `into`, for the
/// active's [`ShippingSource`] and a passive copy's seeding source alike. The caller holds a reader token
/// (`Attachments::enter`) for the whole call: no generation file of the database is deleted meanwhile.
///
/// `snapshot_state` writes the state to the path it is given (`Engine::snapshot_state`, `StateStore::snapshot_to`);
/// its state's exact applied LSN `A` and the generations it refers to are read back from that file. Then:
///
/// * the copy's log will start with the newest generation of `logs/` whose first LSN is at most `A + 1` (the one
///   holding `A + 1`, or the one being written when nothing after `A` is yet), linked whole if it is closed, up
///   to the end of its durable records (`log_end`: the generation being appended to and the end of its durable
///   records) otherwise. The copy's copier goes on from there, so no generation below it is ever fetched;
/// * every generation below it that the state refers to is linked too (from `logs/` or `segments/`): the copy
///   keeps them in its `segments/`. They were all on disk when the token was taken (a generation's deletion
///   decided earlier was decided from an older state, which then no longer referred to it: neither can this
///   one), and they are closed.
///
/// Hard links copy nothing and keep the files whatever truncation does on the source later. Each member's length
/// is recorded as it is now.
pub(crate) fn prepare_snapshot<M: StateMachine>(
    dir: &Path,
    into: &Path,
    guid: Guid,
    snapshot_state: impl FnOnce(&Path) -> Result<Lsn>,
    log_end: impl FnOnce() -> (u64, u64),
) -> Result<PreparedSnapshot> {
    let state = into.join(SNAPSHOT_STATE_FILE);
    snapshot_state(&state)?;
    let (meta, referenced) = StateStore::<M>::snapshot_contents(&state)?;
    if meta.guid != guid {
        return Err(Error::ForeignDatabase { file: state, expected: guid, found: meta.guid });
    }
    let applied = meta.applied_lsn;
    let start = log_start(&dir.join(LOGS_DIR), guid, applied)?;
    let below: Vec<u64> = referenced.into_iter().filter(|g| start.is_none_or(|(s, _)| *g < s)).collect();
    if below.len() >= MAX_SNAPSHOT_GENERATIONS {
        return Err(refused(format!("the snapshot would carry {} generations, more than a snapshot may", below.len())));
    }
    let mut segments = Vec::with_capacity(below.len());
    for generation in below {
        let (_, len) = link_generation(dir, into, generation)?;
        segments.push((generation, len));
    }
    let log = match start {
        None => None,
        Some((generation, first_lsn)) => {
            // The end first, then the link: the file only grows, so the link holds at least what the end says.
            let (appending, offset) = log_end();
            let (path, len) = link_generation(dir, into, generation)?;
            let end = match appending.cmp(&generation) {
                Ordering::Equal => offset,
                // Closed: all of its records.
                Ordering::Greater => {
                    let scan = generation::scan(&path, Some(guid), |_| Ok(()))?;
                    if let Some(damage) = scan.damage {
                        return Err(Error::corrupted(&path, damage.offset, damage.reason));
                    }
                    scan.end_offset
                }
                // Created, but not yet published as the end of the log: it holds no durable record yet.
                Ordering::Less if first_lsn == applied.saturating_add(1) => HEADER_LEN as u64,
                Ordering::Less => return Err(refused("the log moved on while the snapshot was prepared; ask again")),
            };
            if end < HEADER_LEN as u64 || end > len {
                return Err(Error::corrupted(&path, end, "the end of the durable records lies outside the file"));
            }
            Some((generation, end))
        }
    };
    Ok(PreparedSnapshot { applied_lsn: applied, segments, log })
}

/// The newest generation in `logs` whose first LSN is at most `applied + 1`, and that first LSN; `None` when
/// there is none (no log, or it moved to `segments/` meanwhile: then every generation the state refers to is
/// closed, and the copy's copier finds where to start).
fn log_start(logs: &Path, guid: Guid, applied: Lsn) -> Result<Option<(u64, Lsn)>> {
    for (number, path) in generation::list(logs)?.generations.into_iter().rev() {
        match generation::read_header(&path, Some(guid)) {
            Ok(header) if header.first_lsn <= applied.saturating_add(1) => return Ok(Some((number, header.first_lsn))),
            Ok(_) => {}
            // Moved to `segments/` since it was listed, and the older ones before it.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Hard-links `generation` (from `logs/`, or `segments/` once it has moved) into `into`; returns the link and its
/// length.
pub(crate) fn link_generation(dir: &Path, into: &Path, generation: u64) -> Result<(PathBuf, u64)> {
    let name = generation::file_name(generation);
    let link = into.join(&name);
    // Generations only ever move from `logs/` to `segments/`: one missing from the first is in the second.
    for from in [dir.join(LOGS_DIR).join(&name), dir.join(SEGMENTS_DIR).join(&name)] {
        match fs::hard_link(&from, &link) {
            Ok(()) => {
                let len = fs::metadata(&link).at(&link)?.len();
                if len < HEADER_LEN as u64 {
                    return Err(Error::corrupted(&link, 0, "a generation shorter than its header"));
                }
                return Ok((link, len));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&from, e)),
        }
    }
    Err(Error::MissingGeneration { generation, file: dir.join(SEGMENTS_DIR).join(name) })
}

/// One file of a snapshot being served: where it is, and where it starts in the stream and how long it is there.
struct Member {
    path: PathBuf,
    start: u64,
    len: u64,
}

/// A snapshot being served to one copy: its directory and the files of its stream, in order.
struct Snapshot {
    dir: PathBuf,
    members: Vec<Member>,
    total: u64,
    applied_lsn: Lsn,
    state_len: u64,
    segments: Vec<(u64, u64)>,
    log: Option<(u64, u64)>,
    /// The member read last, open.
    open: Option<(usize, File)>,
    /// When a piece of it was last asked for.
    used: Instant,
}

impl Snapshot {
    fn new(dir: PathBuf, prepared: PreparedSnapshot) -> Result<Self> {
        let state = dir.join(SNAPSHOT_STATE_FILE);
        let state_len = fs::metadata(&state).at(&state)?.len();
        let mut members = vec![Member { path: state, start: 0, len: state_len }];
        let mut total = state_len;
        for (generation, len) in prepared.segments.iter().chain(&prepared.log) {
            members.push(Member { path: dir.join(generation::file_name(*generation)), start: total, len: *len });
            total += len;
        }
        Ok(Snapshot {
            dir,
            members,
            total,
            applied_lsn: prepared.applied_lsn,
            state_len,
            segments: prepared.segments,
            log: prepared.log,
            open: None,
            used: Instant::now(),
        })
    }

    /// Up to `max` bytes from `offset`, within one member.
    fn read(&mut self, offset: u64, max: u64) -> Result<Vec<u8>> {
        if offset >= self.total {
            return Ok(Vec::new());
        }
        let index = self.members.partition_point(|m| m.start <= offset).saturating_sub(1);
        let member = &self.members[index];
        let len = (member.start + member.len - offset).min(max);
        if self.open.as_ref().is_none_or(|(i, _)| *i != index) {
            self.open = Some((index, File::open(&member.path).at(&member.path)?));
        }
        let mut bytes = vec![0u8; len as usize];
        if let Some((_, file)) = &self.open {
            file.read_exact_at(&mut bytes, offset - member.start).at(&member.path)?;
        }
        Ok(bytes)
    }
}

/// Serves one piece of a prepared snapshot, deleting its directory once its last byte was served.
fn serve_snapshot(snapshots: &mut HashMap<CopyId, Snapshot>, request: SnapshotRequest) -> Result<SnapshotPart> {
    let snap = snapshots
        .get_mut(&request.copy)
        .ok_or_else(|| refused("no snapshot in progress for this copy; start at offset 0"))?;
    snap.used = Instant::now();
    if request.offset > snap.total {
        return Err(refused(format!("snapshot offset {} beyond its length {}", request.offset, snap.total)));
    }
    let mut max = u64::from(request.max_bytes).clamp(4096, MAX_CHUNK_BYTES as u64);
    let first = request.offset == 0;
    if first {
        // The layout travels with the first piece: the whole reply stays within what a transport carries.
        let layout = layout_bytes(snap.segments.len() + 1) as u64;
        max = max.min((MAX_CHUNK_BYTES as u64).saturating_sub(layout)).max(1);
    }
    let bytes = snap.read(request.offset, max)?;
    let part = SnapshotPart {
        offset: request.offset,
        total: snap.total,
        applied_lsn: snap.applied_lsn,
        state_len: if first { snap.state_len } else { 0 },
        segments: if first { snap.segments.clone() } else { Vec::new() },
        log: if first { snap.log } else { None },
        bytes,
    };
    if request.offset + part.bytes.len() as u64 == snap.total
        && let Some(done) = snapshots.remove(&request.copy)
    {
        drop(done.open);
        fs::remove_dir_all(&done.dir).at(&done.dir)?;
    }
    Ok(part)
}

/// Removes what a snapshot for a copy left in `path` (its directory, or the single state file earlier releases
/// wrote under that name with `.mdb` appended).
fn remove_snapshot(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(path, e)),
    }
    let old = path.with_extension("mdb");
    match fs::remove_file(&old) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&old, e)),
    }
}

/// Snapshots served at once by one source; a new one beyond is refused until one finishes or goes idle.
pub(crate) const MAX_SNAPSHOTS: usize = 4;
/// A snapshot nobody read a piece of for this long is dropped, its directory with it.
pub(crate) const SNAPSHOT_IDLE: Duration = Duration::from_secs(600);

/// Prepares a snapshot for `copy` (of the active's state, or of a passive copy's when seeding from a passive)
/// and serves its pieces. A snapshot lives in its own directory in the database directory (`seed-<copy>/`), which
/// goes once its last byte was served, the copy is forgotten, or nobody asked for a piece for `idle`. At most
/// `max` are served at once, so copies (or a peer holding the key) asking for snapshots under ever new copy ids
/// hold at most `max` state copies on disk.
pub(crate) struct SnapshotServer {
    snapshots: Mutex<HashMap<CopyId, Snapshot>>,
    max: usize,
    idle: Duration,
}

impl SnapshotServer {
    /// A server for the database in `dir`, removing the snapshot directories (`seed-*`) a process that stopped
    /// while serving them left behind: nobody can resume them (a copy restarts its seeding at offset 0).
    pub(crate) fn new(dir: &Path, max: usize, idle: Duration) -> Result<Self> {
        for entry in fs::read_dir(dir).at(dir)? {
            let entry = entry.at(dir)?;
            if entry.file_name().to_str().is_some_and(|name| name.starts_with("seed-")) {
                let path = entry.path();
                if entry.file_type().at(&path)?.is_dir() {
                    fs::remove_dir_all(&path).at(&path)?;
                } else {
                    fs::remove_file(&path).at(&path)?;
                }
            }
        }
        Ok(SnapshotServer { snapshots: Mutex::new(HashMap::new()), max: max.max(1), idle })
    }

    /// Serves a piece of `request.copy`'s snapshot; offset 0 prepares a new one in `dir` with `prepare`, which
    /// is given the (empty) directory to prepare it in (see [`prepare_snapshot`]).
    pub(crate) fn serve(
        &self,
        request: SnapshotRequest,
        prepare: impl FnOnce(&Path) -> Result<PreparedSnapshot>,
        dir: &Path,
    ) -> Result<SnapshotPart> {
        let mut snapshots = self.snapshots.lock();
        let now = Instant::now();
        snapshots.retain(|_, s| {
            let keep = now.duration_since(s.used) < self.idle;
            if !keep {
                let _ = fs::remove_dir_all(&s.dir);
            }
            keep
        });
        if request.offset == 0 {
            if let Some(old) = snapshots.remove(&request.copy) {
                drop(old.open);
            }
            if snapshots.len() >= self.max {
                return Err(refused(format!(
                    "{} snapshots are being served, the most at once (SourceOptions::max_snapshots); ask again later",
                    snapshots.len()
                )));
            }
            let into = snapshot_dir(dir, request.copy);
            remove_snapshot(&into)?;
            fs::create_dir_all(&into).at(&into)?;
            match prepare(&into).and_then(|prepared| Snapshot::new(into.clone(), prepared)) {
                Ok(snapshot) => {
                    snapshots.insert(request.copy, snapshot);
                }
                Err(e) => {
                    let _ = fs::remove_dir_all(&into);
                    return Err(e);
                }
            }
        }
        serve_snapshot(&mut snapshots, request)
    }

    /// Drops `copy`'s snapshot in progress, if any, and its directory.
    pub(crate) fn forget(&self, copy: CopyId) {
        if let Some(s) = self.snapshots.lock().remove(&copy) {
            drop(s.open);
            let _ = fs::remove_dir_all(&s.dir);
        }
    }
}
