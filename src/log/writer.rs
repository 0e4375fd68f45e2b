//! Appending to the log: the current generation, batches of records, and rolling to the next generation.
//!
//! A [`LogWriter`] is owned by the one thread that writes a database's log: the engine's writer thread on an
//! active database, the copier on a passive copy (which appends frames the active sealed and the copy
//! inspected). It never syncs on its own initiative: its owner decides when a batch must be durable
//! ([`LogWriter::sync`]), which is what makes group commit possible. Every write, sync and creation goes through
//! the fail points `log::append::write`, `log::append::sync`, `log::roll::create` and `log::roll::sync`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::fault::fail_io;
use crate::log::format::{END_MARKER, FRAME_HEADER_LEN, GenerationHeader, HEADER_LEN, MAX_RECORD_LEN, RecordSeal};
use crate::log::generation::{self, Scan};
use crate::types::{Guid, Lsn, now_micros};

/// The most room the group buffer keeps between groups: enough for a group of ordinary mail, so the common case
/// never reallocates; a group of large messages allocates what it needs and gives it back after its write.
const KEPT_FRAME_BUFFER: usize = 4 << 20;

/// The appender of one database's log.
pub struct LogWriter {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    header: GenerationHeader,
    seal: RecordSeal,
    /// Offset just past the last record written (where the end marker sits).
    offset: u64,
    /// CRC32 of the generation's bytes `0..offset`.
    hasher: crc32fast::Hasher,
    next_lsn: Lsn,
    target_size: u64,
    /// True when records were written since the last sync.
    dirty: bool,
    frames: Vec<u8>,
}

/// What [`LogWriter::roll`] did with the previous generation's space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollKind {
    /// A new file.
    Created,
    /// An old generation's file renamed and reused (circular logging).
    Recycled,
}

impl LogWriter {
    /// Creates generation 1 of a new log in `dir` (which must hold no generation).
    pub fn create(dir: &Path, guid: Guid, epoch: u64, target_size: u64) -> Result<Self> {
        let header = GenerationHeader {
            guid,
            generation: 1,
            epoch,
            first_lsn: 1,
            created_micros: now_micros(),
            prev_checksum: 0,
        };
        let (file, path) = create_generation(dir, header.generation, &header.encode(), None)?;
        Ok(Self::new(dir, file, path, header, target_size))
    }

    /// Starts generation `header.generation` of a passive copy's log with `bytes`, the generation's first bytes
    /// as its active wrote them (the header, then whole record frames up to LSN `next_lsn - 1`), already
    /// inspected. Created like any generation (temporary name, sync, rename, directory sync).
    pub fn start_copied(dir: &Path, header: GenerationHeader, bytes: &[u8], next_lsn: Lsn) -> Result<Self> {
        let (file, path) = create_generation(dir, header.generation, bytes, None)?;
        let mut writer = Self::new(dir, file, path, header, 0);
        writer.offset = bytes.len() as u64;
        writer.hasher = crc32fast::Hasher::new();
        writer.hasher.update(bytes);
        writer.next_lsn = next_lsn;
        Ok(writer)
    }

    /// Continues appending to the generation that `last` scanned, after its last valid record.
    ///
    /// The caller has decided that whatever follows `last.end_offset` may be overwritten (a clean end marker,
    /// or a torn tail that recovery chose to discard).
    pub fn resume(dir: &Path, last: &Scan, target_size: u64) -> Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(&last.path).at(&last.path)?;
        let mut writer = Self::new(dir, file, last.path.clone(), last.header, target_size);
        writer.offset = last.end_offset;
        writer.next_lsn = last.next_lsn();
        // The chain checksum covers the whole generation: continue from the scan's.
        writer.hasher = crc32fast::Hasher::new_with_initial_len(last.checksum, last.end_offset);
        Ok(writer)
    }

    fn new(dir: &Path, file: File, path: PathBuf, header: GenerationHeader, target_size: u64) -> Self {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header.encode());
        LogWriter {
            dir: dir.to_path_buf(),
            file,
            path,
            seal: RecordSeal::for_header(&header),
            header,
            offset: HEADER_LEN as u64,
            hasher,
            next_lsn: header.first_lsn,
            target_size,
            dirty: false,
            frames: Vec::new(),
        }
    }

    /// The LSN the next record will get.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// The current generation's header.
    pub fn header(&self) -> &GenerationHeader {
        &self.header
    }

    /// The current generation's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of the current generation up to its last record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// CRC32 of the current generation's bytes up to its last record: what the next generation's header
    /// records as `prev_checksum`.
    pub fn checksum(&self) -> u32 {
        self.hasher.clone().finalize()
    }

    /// True once the current generation has reached its target size: roll before the next batch.
    pub fn is_full(&self) -> bool {
        self.offset >= self.target_size
    }

    /// Writes one record per payload (LSNs `next_lsn..`), each stamped with `commit_micros` (microseconds since
    /// the Unix epoch, decided by the caller before the batch), followed by the end marker, without syncing.
    /// Returns the LSN of the last record.
    ///
    /// On error nothing is promised about the file's tail; the caller must poison the engine.
    pub fn append<'p>(&mut self, commit_micros: u64, payloads: impl IntoIterator<Item = &'p [u8]>) -> Result<Lsn> {
        self.frames.clear();
        let mut lsn = self.next_lsn;
        for payload in payloads {
            if payload.is_empty() || payload.len() > MAX_RECORD_LEN {
                return Err(Error::RecordTooLarge { len: payload.len(), max: MAX_RECORD_LEN });
            }
            self.seal.encode_into(lsn, commit_micros, payload, &mut self.frames);
            lsn += 1;
        }
        if lsn == self.next_lsn {
            return Ok(lsn - 1);
        }
        let mut frames = std::mem::take(&mut self.frames);
        let written = self.write_frames(&mut frames, lsn - 1);
        // The buffer is kept for the next group, but not the room a rare large group (big messages) needed.
        frames.clear();
        frames.shrink_to(KEPT_FRAME_BUFFER);
        self.frames = frames;
        written?;
        Ok(lsn - 1)
    }

    /// Writes `frames`, whole record frames sealed for this generation whose last record is `last_lsn` (a
    /// passive copy appends what its active sealed, after inspecting it), followed by the end marker, without
    /// syncing. On error nothing is promised about the file's tail.
    pub fn append_frames(&mut self, frames: &[u8], last_lsn: Lsn) -> Result<()> {
        let mut buf = Vec::with_capacity(frames.len() + FRAME_HEADER_LEN);
        buf.extend_from_slice(frames);
        self.write_frames(&mut buf, last_lsn)
    }

    /// Writes the frames in `buf` and the end marker after them at the end of the valid records (`buf` is
    /// given back as it came).
    fn write_frames(&mut self, buf: &mut Vec<u8>, last_lsn: Lsn) -> Result<()> {
        let records_len = buf.len();
        buf.extend_from_slice(&END_MARKER);
        let written = write_at(&self.file, buf, self.offset).at(&self.path);
        buf.truncate(records_len);
        written?;
        self.hasher.update(buf);
        self.offset += records_len as u64;
        self.next_lsn = last_lsn + 1;
        self.dirty = true;
        Ok(())
    }

    /// Makes every record written so far durable (`fdatasync`).
    pub fn sync(&mut self) -> Result<()> {
        if self.dirty {
            sync_data(&self.file).at(&self.path)?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Closes the current generation and starts the next one.
    ///
    /// The current generation is synced first, so the checksum the new header records is that of durable
    /// bytes. The new generation is prepared under a temporary name, synced, renamed into place, and the
    /// directory synced: a crash leaves either no new generation or a complete one. `recycle` is an old
    /// generation file that may be reused instead of creating one (circular logging).
    pub fn roll(&mut self, epoch: u64, recycle: Option<&Path>) -> Result<RollKind> {
        self.sync()?;
        let header = GenerationHeader {
            guid: self.header.guid,
            generation: self.header.generation + 1,
            epoch,
            first_lsn: self.next_lsn,
            created_micros: now_micros(),
            prev_checksum: self.checksum(),
        };
        let (file, path) = create_generation(&self.dir, header.generation, &header.encode(), recycle)?;
        *self = Self::new(&self.dir, file, path, header, self.target_size);
        Ok(if recycle.is_some() { RollKind::Recycled } else { RollKind::Created })
    }
}

/// Prepares `generation` under a temporary name, holding `head` (its header, and for a copied generation the
/// frames that came with it) and an end marker; then syncs it, renames it into place and syncs the directory: a
/// crash leaves either no new generation or a complete one. `recycle` is an old generation's file to reuse
/// instead of creating one (circular logging).
///
/// A new file is not preallocated: it grows with each batch. Generations now keep the message bodies they hold
/// (`engine::attachments`), so zero-filling one first would write every byte of mail twice; measured on this
/// project's disk with 340 KB batches each `fdatasync`ed, plain appends ran at 97 % of the rate of overwriting an
/// allocated file, zero-filling each 64 MiB generation first at 43 %, `fallocate` at 88 % (BENCHMARKS.md).
fn create_generation(dir: &Path, generation: u64, head: &[u8], recycle: Option<&Path>) -> Result<(File, PathBuf)> {
    let final_path = dir.join(generation::file_name(generation));
    let tmp_path = dir.join(generation::tmp_file_name(generation));
    let file = (|| -> io::Result<File> {
        fail_io!("log::roll::create");
        let file = match recycle {
            Some(old) => {
                fs::rename(old, &tmp_path)?;
                OpenOptions::new().read(true).write(true).open(&tmp_path)?
            }
            None => OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&tmp_path)?,
        };
        let mut bytes = Vec::with_capacity(head.len() + FRAME_HEADER_LEN);
        bytes.extend_from_slice(head);
        bytes.extend_from_slice(&END_MARKER);
        file.write_all_at(&bytes, 0)?;
        Ok(file)
    })()
    .at(&tmp_path)?;
    (|| -> io::Result<()> {
        fail_io!("log::roll::sync");
        file.sync_all()?;
        fs::rename(&tmp_path, &final_path)?;
        Ok(())
    })()
    .at(&final_path)?;
    crate::fsutil::sync_dir(dir)?;
    Ok((file, final_path))
}

fn write_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    fail_io!("log::append::write");
    file.write_all_at(bytes, offset)
}

fn sync_data(file: &File) -> io::Result<()> {
    fail_io!("log::append::sync");
    file.sync_data()
}
