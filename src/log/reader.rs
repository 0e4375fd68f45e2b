//! Reading records back from a database's own log in large batches, for replay: recovery at mount and a
//! passive copy's replayer both read through a [`BatchReader`].
//!
//! A batch holds the records of an LSN range as slices of the buffers it read them into (one buffer per
//! generation part, no copy per record), up to a record count and a byte budget: the larger the replay
//! transaction, the fewer index pages each record rewrites (ARCHITECTURE §11), and memory stays bounded by the
//! budget. The reader only reads what was already judged (recovery's walk, a copy's inspection), but it checks
//! every frame again, so bytes that changed on disk since are reported as damage, never replayed.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, IoContext, Result};
use crate::log::format::{FRAME_HEADER_LEN, Frame, GenerationHeader, HEADER_LEN, RecordSeal};
use crate::log::generation::{RecordRef, Scan};
use crate::types::Lsn;

/// Records in one replay batch at most.
pub(crate) const BATCH_RECORDS: usize = 32_768;
/// Payload bytes in one replay batch at most (a single larger record still makes a batch of its own).
pub(crate) const BATCH_BYTES: usize = 64 << 20;

/// A generation to read from: its header, its file, and where its valid records end.
#[derive(Clone, Debug)]
pub(crate) struct Extent {
    pub(crate) header: GenerationHeader,
    pub(crate) path: PathBuf,
    pub(crate) end_offset: u64,
    /// LSN of its last valid record (`first_lsn - 1` when it holds none).
    pub(crate) last_lsn: Lsn,
}

impl Extent {
    /// The extent of a scanned generation.
    pub(crate) fn of(scan: &Scan) -> Self {
        Extent { header: scan.header, path: scan.path.clone(), end_offset: scan.end_offset, last_lsn: scan.last_lsn }
    }
}

/// Consecutive records read from the log, pointing into the buffers that hold them.
pub(crate) struct Batch {
    bufs: Vec<Vec<u8>>,
    /// Per record: LSN, epoch, commit time, which buffer, where its payload lies in it.
    spans: Vec<(Lsn, u64, u64, usize, Range<usize>)>,
    /// Per buffer: the generation it was read from and the file offset of its first byte.
    origins: Vec<(u64, u64)>,
    /// Payload bytes in all.
    bytes: usize,
}

impl Batch {
    /// The records, in LSN order.
    pub(crate) fn records(&self) -> Vec<RecordRef<'_>> {
        self.spans
            .iter()
            .map(|(lsn, epoch, commit_micros, index, range)| {
                let (generation, start) = self.origins[*index];
                RecordRef {
                    lsn: *lsn,
                    epoch: *epoch,
                    generation,
                    offset: start + range.start as u64,
                    commit_micros: *commit_micros,
                    payload: &self.bufs[*index][range.clone()],
                }
            })
            .collect()
    }

    /// Payload bytes in the batch.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The buffers, for the reader to reuse ([`BatchReader::recycle`]).
    pub(crate) fn into_buffers(self) -> Vec<Vec<u8>> {
        self.bufs
    }
}

/// Reads batches of records in LSN order, resuming each read where the previous one stopped.
pub(crate) struct BatchReader {
    /// Where the next record to read starts: (generation, offset, its LSN).
    cursor: Option<(u64, u64, Lsn)>,
    /// Buffers handed back, shared with whoever applies the batches on another thread.
    recycled: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl BatchReader {
    /// A reader whose spent buffers come back through `recycled`.
    pub(crate) fn new(recycled: Arc<Mutex<Vec<Vec<u8>>>>) -> Self {
        BatchReader { cursor: None, recycled }
    }

    /// Forgets where the last batch stopped: the next read starts from its generation's first record.
    pub(crate) fn reset(&mut self) {
        self.cursor = None;
    }

    /// Hands a batch's buffers back for later reads, keeping a generation's worth, not a batch's peak.
    pub(crate) fn recycle(recycled: &Mutex<Vec<Vec<u8>>>, bufs: Vec<Vec<u8>>) {
        let mut pool = recycled.lock();
        pool.extend(bufs);
        pool.truncate(2);
    }

    /// Reads the records from LSN `from` up to `limit` (at most [`BATCH_RECORDS`] records and about
    /// [`BATCH_BYTES`] bytes) out of `extents`, the generations holding them in order. `Ok(None)` when none of
    /// those records is in `extents` yet.
    pub(crate) fn read(&mut self, extents: &[Extent], from: Lsn, limit: Lsn) -> Result<Option<Batch>> {
        let mut bufs: Vec<Vec<u8>> = Vec::new();
        let mut origins = Vec::new();
        let mut spans: Vec<(Lsn, u64, u64, usize, Range<usize>)> = Vec::new();
        let mut bytes = 0usize;
        let mut cursor = None;
        for g in extents.iter().filter(|g| g.last_lsn >= from && g.header.first_lsn <= limit) {
            // Resume where the previous batch stopped instead of reading the generation from its start.
            let start = match self.cursor {
                Some((generation, offset, next)) if generation == g.header.generation && next == from => offset,
                _ => HEADER_LEN as u64,
            };
            if start >= g.end_offset {
                continue;
            }
            let buf = self.read_part(g, start)?;
            let index = bufs.len();
            let seal = RecordSeal::for_header(&g.header);
            // Past the limit, or the batch is full: nothing more from any generation.
            let mut done = false;
            for (at, frame) in seal.frames(&buf) {
                match frame {
                    Frame::Record { lsn, .. } if lsn > limit => {
                        done = true;
                        break;
                    }
                    Frame::Record { lsn, commit_micros, payload, frame_len } => {
                        if lsn < from {
                            continue;
                        }
                        let payload_at = at + FRAME_HEADER_LEN;
                        bytes += payload.len();
                        spans.push((lsn, g.header.epoch, commit_micros, index, payload_at..payload_at + payload.len()));
                        cursor = Some((g.header.generation, start + (at + frame_len) as u64, lsn + 1));
                        if spans.len() >= BATCH_RECORDS || bytes >= BATCH_BYTES {
                            done = true;
                            break;
                        }
                    }
                    Frame::End => break,
                    Frame::Invalid(why) => return Err(Error::corrupted(&g.path, start + at as u64, why)),
                }
            }
            bufs.push(buf);
            origins.push((g.header.generation, start));
            if done {
                break;
            }
        }
        if spans.is_empty() {
            Self::recycle(&self.recycled, bufs);
            return Ok(None);
        }
        self.cursor = cursor;
        Ok(Some(Batch { bufs, spans, origins, bytes }))
    }

    /// Reads generation `g` from `start` to the end of its valid records into a recycled buffer.
    fn read_part(&self, g: &Extent, start: u64) -> Result<Vec<u8>> {
        let mut file = File::open(&g.path).at(&g.path)?;
        file.seek(SeekFrom::Start(start)).at(&g.path)?;
        let len = usize::try_from(g.end_offset - start)
            .map_err(|_| Error::corrupted(&g.path, start, "generation too large"))?;
        let mut buf = self.recycled.lock().pop().unwrap_or_default();
        buf.clear();
        buf.try_reserve_exact(len).map_err(|e| Error::corrupted(&g.path, start, format!("{len} bytes: {e}")))?;
        // `read_to_end` into reserved capacity: no zeroing of the buffer first.
        (&file).take(len as u64).read_to_end(&mut buf).at(&g.path)?;
        if buf.len() != len {
            return Err(Error::corrupted(&g.path, start + buf.len() as u64, "generation shorter than its records"));
        }
        Ok(buf)
    }
}
