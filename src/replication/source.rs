//! The shipping source on the active copy: serves its generations (closed ones in file mode, and the durable
//! bytes of the current one in block mode), snapshots of its state for seeding, and keeps the log its copies
//! still need.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::engine::state::StateStore;
use crate::engine::{Engine, LOGS_DIR, LogPin, LogPosition, SEGMENTS_DIR, StateMachine};
use crate::error::{Error, IoContext, Result};
use crate::log::format::{FRAME_HEADER_LEN, HEADER_LEN, frame_len};
use crate::log::generation;
use crate::replication::ReplicationError;
use crate::replication::protocol::{
    Chunk, CopyId, Hello, LogSource, MAX_CHUNK_BYTES, MAX_SNAPSHOT_GENERATIONS, ReadRequest, SnapshotPart,
    SnapshotRequest, SourceInfo, SourceRole, layout_bytes,
};
use crate::types::{Guid, Lsn};

/// File in the active's directory listing the copies and the LSN each still needs, so that their log survives
/// a restart of the active until they reconnect.
pub const COPIES_FILE: &str = "copies";
/// Longest a read may long-poll.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// How a source treats its copies.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SourceOptions {
    /// The guard against a suspended or vanished copy filling the disk: a copy whose pinned log is more than
    /// this many generations behind the head loses its pin (it then needs a reseed), and the log is
    /// truncated as if it did not exist. Default 4096 generations (4 GiB with the default 1 MiB generations).
    pub max_pinned_generations: u64,
}

impl SourceOptions {
    /// Sets [`SourceOptions::max_pinned_generations`].
    pub fn max_pinned_generations(mut self, generations: u64) -> Self {
        self.max_pinned_generations = generations;
        self
    }
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions { max_pinned_generations: 4096 }
    }
}

struct CopyEntry {
    pin: Option<LogPin>,
    /// The generation the copy last asked for: how far behind it is.
    generation: u64,
}

/// Serves an active engine's log to passive copies (see [`LogSource`]). Create it right after mounting: it
/// re-pins the log for the copies recorded in `DIR/copies`.
///
/// It holds the engine (`Arc`), so drop it before dismounting.
pub struct ShippingSource<M: StateMachine> {
    engine: Arc<Engine<M>>,
    options: SourceOptions,
    copies: Mutex<BTreeMap<CopyId, CopyEntry>>,
    /// End of the records of closed generations (found by a scan once).
    ends: Mutex<HashMap<u64, u64>>,
    snapshots: SnapshotServer,
}

impl<M: StateMachine> ShippingSource<M> {
    /// A source for `engine`, re-pinning the log of the copies recorded in its directory.
    pub fn new(engine: Arc<Engine<M>>, options: SourceOptions) -> Result<Self> {
        let source = ShippingSource {
            engine,
            options,
            copies: Mutex::new(BTreeMap::new()),
            ends: Mutex::new(HashMap::new()),
            snapshots: SnapshotServer::new(),
        };
        for (copy, lsn) in read_copies(source.engine.dir())? {
            let pin = source.engine.pin_log(lsn.max(source.engine.status().oldest_lsn)).ok();
            source.copies.lock().insert(copy, CopyEntry { pin, generation: 0 });
        }
        Ok(source)
    }

    /// The engine served.
    pub fn engine(&self) -> &Arc<Engine<M>> {
        &self.engine
    }

    /// The copies known to this source, with the LSN each keeps pinned (`None`: its pin was dropped).
    pub fn copies(&self) -> Vec<(CopyId, Option<Lsn>)> {
        self.copies.lock().iter().map(|(id, c)| (*id, c.pin.as_ref().map(LogPin::lsn))).collect()
    }

    fn info(&self) -> SourceInfo {
        let status = self.engine.status();
        SourceInfo {
            guid: status.guid,
            epoch: status.epoch,
            position: status.position,
            oldest_generation: status.oldest_generation,
            role: SourceRole::Active,
        }
    }

    /// Fences the engine when the copy knows a newer epoch than `epoch`, the engine's.
    fn check_epoch(&self, known_epoch: u64, epoch: u64) -> Result<()> {
        if known_epoch > epoch {
            self.engine.fence(known_epoch)?;
            return Err(Error::Fenced { epoch: known_epoch, current: epoch });
        }
        Ok(())
    }

    /// Registers or advances a copy's pin (it asked for `generation`; the log head is `head`), enforcing the
    /// disk guard.
    fn keep(&self, copy: CopyId, keep_lsn: Lsn, generation: u64, head: u64) -> Result<()> {
        let mut copies = self.copies.lock();
        let mut changed = false;
        let entry = copies.entry(copy).or_insert_with(|| {
            changed = true;
            CopyEntry { pin: None, generation }
        });
        entry.generation = entry.generation.max(generation);
        if keep_lsn > 0 {
            match &entry.pin {
                Some(pin) => pin.advance(keep_lsn),
                None => {
                    // What the copy keeps below the oldest record here, it keeps in its own log.
                    let oldest = self.engine.status().oldest_lsn;
                    entry.pin = Some(self.engine.pin_log(keep_lsn.max(oldest))?);
                    changed = true;
                }
            }
        }
        // The guard: a copy too far behind stops holding the log.
        for entry in copies.values_mut() {
            if entry.pin.is_some()
                && entry.generation > 0
                && head.saturating_sub(entry.generation) > self.options.max_pinned_generations
            {
                entry.pin = None;
                changed = true;
            }
        }
        if changed {
            write_copies(self.engine.dir(), &copies)?;
        }
        Ok(())
    }

    /// The end of the records of closed generation `generation`.
    fn closed_end(&self, generation: u64, path: &Path) -> Result<u64> {
        if let Some(end) = self.ends.lock().get(&generation) {
            return Ok(*end);
        }
        let scan = generation::scan(path, Some(self.engine.guid()), |_| Ok(()))?;
        if let Some(damage) = scan.damage {
            return Err(Error::corrupted(path, damage.offset, damage.reason));
        }
        let mut ends = self.ends.lock();
        if ends.len() > 4096 {
            ends.clear();
        }
        ends.insert(generation, scan.end_offset);
        Ok(scan.end_offset)
    }
}

/// Reads `[offset, end)` of `file` cut at the last whole record frame that fits in `max` bytes (at least one
/// whole frame, however large). `offset` is 0 (the header comes first) or a frame boundary.
fn read_frames(file: &File, path: &Path, offset: u64, end: u64, max: usize) -> Result<Vec<u8>> {
    let start = offset;
    let mut at = if offset == 0 { HEADER_LEN as u64 } else { offset };
    let limit = start + max as u64;
    let mut header = [0u8; FRAME_HEADER_LEN];
    while at + FRAME_HEADER_LEN as u64 <= end {
        file.read_exact_at(&mut header, at).at(path)?;
        let next = frame_len(&header).map(|len| at + len as u64).filter(|&next| next <= end);
        let Some(next) = next else {
            return Err(Error::corrupted(path, at, "frame does not end within the durable log"));
        };
        if next > limit && at > start.max(HEADER_LEN as u64) {
            break;
        }
        at = next;
        if at >= limit {
            break;
        }
    }
    let len = usize::try_from(at - start).map_err(|_| Error::corrupted(path, start, "chunk too large"))?;
    if len > MAX_CHUNK_BYTES {
        return Err(Error::corrupted(path, start, "chunk larger than the largest record"));
    }
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, start).at(path)?;
    Ok(bytes)
}

impl<M: StateMachine> LogSource for ShippingSource<M> {
    fn hello(&self, hello: Hello) -> Result<SourceInfo> {
        let status = self.engine.status();
        self.check_epoch(hello.known_epoch, status.epoch)?;
        self.keep(hello.copy, hello.keep_lsn, 0, status.head_generation)?;
        Ok(self.info())
    }

    fn read(&self, request: ReadRequest) -> Result<Chunk> {
        let status = self.engine.status();
        self.check_epoch(request.known_epoch, status.epoch)?;
        let shipping = &self.engine.inner.shipping;
        shipping.acknowledge(request.copy, request.durable_lsn);
        if request.generation < status.oldest_generation {
            return Err(ReplicationError::LogTruncated {
                generation: request.generation,
                oldest: status.oldest_generation,
            }
            .into());
        }
        self.keep(request.copy, request.keep_lsn, request.generation, status.head_generation)?;
        let deadline = Instant::now() + Duration::from_millis(u64::from(request.wait_millis)).min(MAX_WAIT);
        let max = (request.max_bytes as usize).clamp(FRAME_HEADER_LEN + 1, MAX_CHUNK_BYTES);
        loop {
            let info = self.info();
            let position: LogPosition = info.position;
            if request.generation < info.oldest_generation {
                return Err(ReplicationError::LogTruncated {
                    generation: request.generation,
                    oldest: info.oldest_generation,
                }
                .into());
            }
            let available = request.generation < position.generation
                || (request.generation == position.generation
                    && request.block_mode
                    && (request.offset == 0 || request.offset < position.offset));
            if available {
                let path = self.engine.dir().join(LOGS_DIR).join(generation::file_name(request.generation));
                let closed = request.generation < position.generation;
                let end = if closed { self.closed_end(request.generation, &path)? } else { position.offset };
                if request.offset > end || (request.offset != 0 && request.offset < HEADER_LEN as u64) {
                    return Err(ReplicationError::Refused {
                        reason: format!(
                            "offset {} is outside generation {} (its records end at {end})",
                            request.offset, request.generation
                        ),
                    }
                    .into());
                }
                let file = File::open(&path).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => ReplicationError::LogTruncated {
                        generation: request.generation,
                        oldest: info.oldest_generation,
                    }
                    .into(),
                    _ => Error::io(&path, e),
                })?;
                let bytes = read_frames(&file, &path, request.offset, end, max)?;
                let reached = request.offset + bytes.len() as u64;
                return Ok(Chunk {
                    generation: request.generation,
                    offset: request.offset,
                    closed: closed && reached == end,
                    bytes,
                    source: info,
                });
            }
            let now = Instant::now();
            // A copy that said goodbye (it was activated or closed) stops waiting at once.
            if now >= deadline || !self.copies.lock().contains_key(&request.copy) {
                return Ok(Chunk {
                    generation: request.generation,
                    offset: request.offset,
                    bytes: Vec::new(),
                    closed: false,
                    source: info,
                });
            }
            shipping.wait_past(position, deadline - now);
        }
    }

    fn headers(&self, from: u64) -> Result<Vec<Vec<u8>>> {
        generation_headers(&self.engine.dir().join(LOGS_DIR), from)
    }

    fn snapshot(&self, request: SnapshotRequest) -> Result<SnapshotPart> {
        let engine = &self.engine;
        let prepare = |into: &Path| {
            // A new snapshot: pin the log first, from an LSN the snapshot will have applied at least.
            let status = engine.status();
            self.keep(request.copy, status.applied_lsn + 1, 0, status.head_generation)?;
            // A read transaction holds a reader token for the whole preparation (see `prepare_snapshot`).
            engine.read(|_, _| {
                prepare_snapshot::<M>(
                    engine.dir(),
                    into,
                    engine.guid(),
                    |path| engine.snapshot_state(path),
                    || {
                        let end = engine.log_position();
                        (end.generation, end.offset)
                    },
                )
            })
        };
        self.snapshots.serve(request, prepare, engine.dir())
    }

    fn goodbye(&self, copy: CopyId) -> Result<()> {
        let shipping = &self.engine.inner.shipping;
        shipping.forget(copy);
        let mut copies = self.copies.lock();
        if copies.remove(&copy).is_some() {
            write_copies(self.engine.dir(), &copies)?;
        }
        drop(copies);
        // Wake its request if one is waiting for new log.
        shipping.publish(shipping.position());
        self.snapshots.forget(copy);
        Ok(())
    }
}

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

/// Prepares a snapshot for `copy` (of the active's state, or of a passive copy's when seeding from a passive)
/// and serves its pieces. A snapshot lives in its own directory in the database directory (`seed-<copy>/`), which
/// goes once its last byte was served or the copy is forgotten.
pub(crate) struct SnapshotServer {
    snapshots: Mutex<HashMap<CopyId, Snapshot>>,
}

impl SnapshotServer {
    pub(crate) fn new() -> Self {
        SnapshotServer { snapshots: Mutex::new(HashMap::new()) }
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
        if request.offset == 0 {
            snapshots.remove(&request.copy);
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

/// The raw headers of the generations in `logs` from `from` on (at most 4096).
pub(crate) fn generation_headers(logs: &Path, from: u64) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for (number, path) in generation::list(logs)?.generations {
        if number < from {
            continue;
        }
        if out.len() >= 4096 {
            break;
        }
        match generation::read_header(&path, None) {
            Ok(header) => out.push(header.encode().to_vec()),
            // Truncated while listing: the ones after it are still there.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn read_copies(dir: &Path) -> Result<Vec<(CopyId, Lsn)>> {
    let path = dir.join(COPIES_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let (body, crc) = bytes.split_at(bytes.len().saturating_sub(4));
    if crc.len() != 4 || crc32fast::hash(body).to_le_bytes() != crc || body.len() % 24 != 0 {
        return Err(Error::corrupted(&path, 0, "copies file does not verify"));
    }
    Ok(body
        .chunks_exact(24)
        .map(|c| {
            let mut id = [0u8; 16];
            id.copy_from_slice(&c[..16]);
            let mut lsn = [0u8; 8];
            lsn.copy_from_slice(&c[16..]);
            (crate::types::Guid(id), u64::from_le_bytes(lsn))
        })
        .collect())
}

fn write_copies(dir: &Path, copies: &BTreeMap<CopyId, CopyEntry>) -> Result<()> {
    let mut body = Vec::with_capacity(copies.len() * 24 + 4);
    for (id, entry) in copies {
        if let Some(pin) = &entry.pin {
            body.extend_from_slice(id.as_bytes());
            body.extend_from_slice(&pin.lsn().to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    crate::fsutil::replace_file(dir, COPIES_FILE, &body)
}
