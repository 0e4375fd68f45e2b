//! Appending to the log: the current generation, batches of records, and rolling to the next generation.
//!
//! Only the engine's writer thread owns a [`LogWriter`]. It never syncs on its own initiative: the engine
//! decides when a batch must be durable ([`LogWriter::sync`]), which is what makes group commit possible.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::fault::fail_io;
use crate::log::format::{FRAME_HEADER_LEN, GenerationHeader, HEADER_LEN, MAX_RECORD_LEN, RecordSeal};
use crate::log::generation::{self, Scan, TMP_SUFFIX};
use crate::types::{Guid, Lsn, now_micros};

const END_MARKER: [u8; FRAME_HEADER_LEN] = [0; FRAME_HEADER_LEN];

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
    /// A new, preallocated file.
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
        let (file, path) = create_generation(dir, &header, target_size, None)?;
        Ok(Self::new(dir, file, path, header, target_size))
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
        // Re-hash the valid prefix: the chain checksum covers the whole generation.
        let mut prefix = vec![0u8; last.end_offset as usize];
        writer.file.read_exact_at(&mut prefix, 0).at(&last.path)?;
        writer.hasher = crc32fast::Hasher::new();
        writer.hasher.update(&prefix);
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

    /// True once the current generation has reached its target size: roll before the next batch.
    pub fn is_full(&self) -> bool {
        self.offset >= self.target_size
    }

    /// Writes one record per payload (LSNs `next_lsn..`) followed by the end marker, without syncing.
    /// Returns the LSN of the last record.
    ///
    /// On error nothing is promised about the file's tail; the caller must poison the engine.
    pub fn append<'p>(&mut self, payloads: impl IntoIterator<Item = &'p [u8]>) -> Result<Lsn> {
        self.frames.clear();
        let mut lsn = self.next_lsn;
        for payload in payloads {
            if payload.is_empty() || payload.len() > MAX_RECORD_LEN {
                return Err(Error::RecordTooLarge { len: payload.len(), max: MAX_RECORD_LEN });
            }
            self.seal.encode_into(lsn, payload, &mut self.frames);
            lsn += 1;
        }
        if lsn == self.next_lsn {
            return Ok(lsn - 1);
        }
        let records_len = self.frames.len();
        self.frames.extend_from_slice(&END_MARKER);
        write_at(&self.file, &self.frames, self.offset).at(&self.path)?;
        self.hasher.update(&self.frames[..records_len]);
        self.offset += records_len as u64;
        self.next_lsn = lsn;
        self.dirty = true;
        Ok(lsn - 1)
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
            prev_checksum: self.hasher.clone().finalize(),
        };
        let (file, path) = create_generation(&self.dir, &header, self.target_size, recycle)?;
        *self = Self::new(&self.dir, file, path, header, self.target_size);
        Ok(if recycle.is_some() { RollKind::Recycled } else { RollKind::Created })
    }
}

/// Prepares generation `header.generation` under a temporary name and renames it into place.
fn create_generation(
    dir: &Path,
    header: &GenerationHeader,
    target_size: u64,
    recycle: Option<&Path>,
) -> Result<(File, PathBuf)> {
    let final_path = dir.join(generation::file_name(header.generation));
    let tmp_path = dir.join(format!("{:016}{TMP_SUFFIX}", header.generation));
    let file = (|| -> io::Result<File> {
        fail_io!("log::roll::create");
        let file = match recycle {
            Some(old) => {
                fs::rename(old, &tmp_path)?;
                OpenOptions::new().read(true).write(true).open(&tmp_path)?
            }
            None => {
                let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&tmp_path)?;
                preallocate(&f, target_size)?;
                f
            }
        };
        let mut head = Vec::with_capacity(HEADER_LEN + FRAME_HEADER_LEN);
        head.extend_from_slice(&header.encode());
        head.extend_from_slice(&END_MARKER);
        file.write_all_at(&head, 0)?;
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

/// Writes zeros over the whole target size, so later appends overwrite allocated blocks and each `fdatasync`
/// flushes data only, not the file's size and block map.
fn preallocate(file: &File, size: u64) -> io::Result<()> {
    const CHUNK: usize = 256 << 10;
    let zeros = vec![0u8; CHUNK];
    let mut at = 0u64;
    while at < size {
        let n = CHUNK.min((size - at) as usize);
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

fn write_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    fail_io!("log::append::write");
    file.write_all_at(bytes, offset)
}

fn sync_data(file: &File) -> io::Result<()> {
    fail_io!("log::append::sync");
    file.sync_data()
}
