//! The shipping source on the active copy: serves its generations (closed ones in file mode, and the durable
//! bytes of the current one in block mode), snapshots of its state for seeding, and keeps the log its copies
//! still need.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::engine::{Engine, LOGS_DIR, LogPin, LogPosition, StateMachine};
use crate::error::{Error, IoContext, Result};
use crate::log::format::{FRAME_HEADER_LEN, HEADER_LEN, frame_len};
use crate::log::generation;
use crate::replication::ReplicationError;
use crate::replication::protocol::{
    Chunk, CopyId, Hello, LogSource, MAX_CHUNK_BYTES, ReadRequest, SnapshotPart, SnapshotRequest, SourceInfo,
    SourceRole,
};
use crate::replication::snapshot::{MAX_SNAPSHOTS, SNAPSHOT_IDLE, SnapshotServer, prepare_snapshot};
use crate::types::Lsn;

/// File in the active's directory listing the copies and the LSN each still needs, so that their log survives
/// a restart of the active until they reconnect.
pub const COPIES_FILE: &str = "copies";
/// Longest a read may long-poll.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// How a source treats its copies. Every copy, and any peer holding the shipping key, is bounded by these: the
/// log it can pin, the copy ids it can register, the snapshots it can have prepared on disk.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SourceOptions {
    /// The guard against a suspended or vanished copy filling the disk: a copy whose pinned log is more than
    /// this many generations behind the head loses its pin (it then needs a reseed), and the log is
    /// truncated as if it did not exist. Default 4096 generations (4 GiB with the default 1 MiB generations).
    pub max_pinned_generations: u64,
    /// Copy ids the source keeps track of at once (Exchange allows 16 copies of a database). A new copy id
    /// beyond it first evicts the copy heard from longest ago that pins no log; when every one pins log, it is
    /// refused ([`ReplicationError::Refused`]) until a copy says goodbye or is forgotten. Default 16.
    pub max_copies: usize,
    /// A copy not heard from for this long is forgotten: its pin is dropped (the log is truncated as if it did
    /// not exist; it needs a reseed if it comes back too late). Its snapshot, idle as long, goes by
    /// [`SourceOptions::snapshot_idle`]. Default 24 hours.
    pub forget_after: Duration,
    /// Snapshots (seeds) prepared and served at once; each is a copy of the state on disk. Default 4.
    pub max_snapshots: usize,
    /// A snapshot nobody read a piece of for this long is removed. Default 10 minutes.
    pub snapshot_idle: Duration,
}

impl SourceOptions {
    /// Sets [`SourceOptions::max_pinned_generations`].
    pub fn max_pinned_generations(mut self, generations: u64) -> Self {
        self.max_pinned_generations = generations;
        self
    }

    /// Sets [`SourceOptions::max_copies`] (at least 1).
    pub fn max_copies(mut self, copies: usize) -> Self {
        self.max_copies = copies.max(1);
        self
    }

    /// Sets [`SourceOptions::forget_after`].
    pub fn forget_after(mut self, after: Duration) -> Self {
        self.forget_after = after;
        self
    }

    /// Sets [`SourceOptions::max_snapshots`] (at least 1).
    pub fn max_snapshots(mut self, snapshots: usize) -> Self {
        self.max_snapshots = snapshots.max(1);
        self
    }

    /// Sets [`SourceOptions::snapshot_idle`].
    pub fn snapshot_idle(mut self, idle: Duration) -> Self {
        self.snapshot_idle = idle;
        self
    }
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            max_pinned_generations: 4096,
            max_copies: 16,
            forget_after: Duration::from_secs(24 * 3600),
            max_snapshots: MAX_SNAPSHOTS,
            snapshot_idle: SNAPSHOT_IDLE,
        }
    }
}

struct CopyEntry {
    pin: Option<LogPin>,
    /// The generation the copy last asked for: how far behind it is.
    generation: u64,
    /// When it last asked for anything (for a copy recorded before a restart: when the source started).
    heard: Instant,
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
        let snapshots = SnapshotServer::new(engine.dir(), options.max_snapshots, options.snapshot_idle)?;
        let source = ShippingSource {
            engine,
            options,
            copies: Mutex::new(BTreeMap::new()),
            ends: Mutex::new(HashMap::new()),
            snapshots,
        };
        let now = Instant::now();
        for (copy, lsn) in read_copies(source.engine.dir())? {
            let pin = source.engine.pin_log(lsn.max(source.engine.status().oldest_lsn)).ok();
            source.copies.lock().insert(copy, CopyEntry { pin, generation: 0, heard: now });
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
        let now = Instant::now();
        let mut changed = self.forget_idle(&mut copies, now);
        if !copies.contains_key(&copy) {
            if copies.len() >= self.options.max_copies {
                self.evict_unpinned(&mut copies)?;
            }
            changed = true;
        }
        let entry = copies.entry(copy).or_insert(CopyEntry { pin: None, generation, heard: now });
        entry.heard = now;
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

    /// Forgets the copies not heard from for [`SourceOptions::forget_after`]; true when one of them pinned log.
    /// Their snapshots are left to [`SourceOptions::snapshot_idle`]: `keep` runs inside a snapshot's
    /// preparation, which holds the snapshots' lock.
    fn forget_idle(&self, copies: &mut BTreeMap<CopyId, CopyEntry>, now: Instant) -> bool {
        let idle: Vec<CopyId> = copies
            .iter()
            .filter(|(_, c)| now.duration_since(c.heard) >= self.options.forget_after)
            .map(|(id, _)| *id)
            .collect();
        let mut pinned = false;
        for id in idle {
            pinned |= copies.remove(&id).is_some_and(|c| c.pin.is_some());
            self.engine.inner.shipping.forget(id);
        }
        pinned
    }

    /// Makes room for a new copy id: forgets the copy heard from longest ago that pins no log, or refuses.
    fn evict_unpinned(&self, copies: &mut BTreeMap<CopyId, CopyEntry>) -> Result<()> {
        let oldest = copies.iter().filter(|(_, c)| c.pin.is_none()).min_by_key(|(_, c)| c.heard).map(|(id, _)| *id);
        let Some(id) = oldest else {
            return Err(refused(format!(
                "this source already serves {} copies that pin its log (SourceOptions::max_copies): remove one \
                 (goodbye) or wait until one is forgotten",
                copies.len()
            )));
        };
        copies.remove(&id);
        self.engine.inner.shipping.forget(id);
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
