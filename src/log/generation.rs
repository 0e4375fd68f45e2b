//! Generation files on disk: naming, listing, and scanning one generation.
//!
//! A scan reads one generation, verifies its header and every record frame in order, and reports where the
//! valid records end and why. It never modifies the file: repairing a torn tail is the recovery's decision.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::log::format::{FRAME_HEADER_LEN, Frame, GenerationHeader, HEADER_LEN, RecordSeal};
use crate::types::{Guid, Lsn};

/// One valid record, as a scan finds it.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    /// Its LSN.
    pub lsn: Lsn,
    /// The epoch of the generation it was written in.
    pub epoch: u64,
    /// The generation it is in.
    pub generation: u64,
    /// Where its payload starts in the generation's file.
    pub offset: u64,
    /// When it was committed (microseconds since the Unix epoch), as its frame records it.
    pub commit_micros: u64,
    /// Its payload (one operation and its attachment, see `codec`).
    pub payload: &'a [u8],
}

/// Suffix of a generation being created or recycled; removed at mount.
pub const TMP_SUFFIX: &str = ".log.tmp";

/// The file name of `generation`: sixteen decimal digits, so a plain sort lists generations in order.
pub fn file_name(generation: u64) -> String {
    format!("{generation:016}.log")
}

/// The temporary name `generation` has while it is created or recycled (see [`TMP_SUFFIX`]).
pub fn tmp_file_name(generation: u64) -> String {
    format!("{generation:016}{TMP_SUFFIX}")
}

/// The generation number a file name stands for, if it is a generation's name.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What a log directory holds.
#[derive(Debug, Default)]
pub struct Listing {
    /// Generations, sorted by number.
    pub generations: Vec<(u64, PathBuf)>,
    /// Leftovers of an interrupted create or recycle (`*.log.tmp`).
    pub leftovers: Vec<PathBuf>,
}

/// Lists the generations in `dir`.
pub fn list(dir: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(generation) = parse_file_name(name) {
            listing.generations.push((generation, entry.path()));
        } else if name.ends_with(TMP_SUFFIX) {
            listing.leftovers.push(entry.path());
        }
    }
    listing.generations.sort_unstable_by_key(|(g, _)| *g);
    Ok(listing)
}

/// Where and why the valid records of a generation stop before a clean end marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Offset of the first byte that is not part of a valid record.
    pub offset: u64,
    /// What was wrong there.
    pub reason: &'static str,
    /// Offset of a valid record of this generation found *after* the damage, if any: damage followed by valid
    /// records is corruption in the middle of the log, never a torn tail.
    pub valid_record_after: Option<u64>,
}

/// The result of scanning one generation.
#[derive(Clone, Debug)]
pub struct Scan {
    /// The file.
    pub path: PathBuf,
    /// Its header.
    pub header: GenerationHeader,
    /// Number of valid records.
    pub records: u64,
    /// LSN of the last valid record, or `first_lsn - 1` when there is none.
    pub last_lsn: Lsn,
    /// Offset just past the last valid record.
    pub end_offset: u64,
    /// CRC32 of bytes `0..end_offset`: what the next generation's header must record as `prev_checksum`.
    pub checksum: u32,
    /// Length of the file.
    pub file_len: u64,
    /// Set when the valid records stop at something other than the end marker.
    pub damage: Option<Damage>,
}

impl Scan {
    /// The next LSN after this generation's records.
    pub fn next_lsn(&self) -> Lsn {
        self.last_lsn + 1
    }
}

/// Reads a whole generation file, bounded by its length on disk.
fn read_file(path: &Path) -> Result<Vec<u8>> {
    let mut f = File::open(path).at(path)?;
    let len = f.metadata().at(path)?.len();
    let cap = usize::try_from(len).map_err(|_| Error::corrupted(path, 0, "file too large"))?;
    let mut buf = Vec::with_capacity(cap);
    f.read_to_end(&mut buf).at(path)?;
    Ok(buf)
}

/// Reads and verifies only the header of a generation.
pub fn read_header(path: &Path, expect_guid: Option<Guid>) -> Result<GenerationHeader> {
    let mut f = File::open(path).at(path)?;
    let mut buf = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = f.read(&mut buf[filled..]).at(path)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    check_header(path, &buf[..filled], expect_guid)
}

fn check_header(path: &Path, bytes: &[u8], expect_guid: Option<Guid>) -> Result<GenerationHeader> {
    let header = GenerationHeader::decode(bytes).map_err(|e| Error::corrupted(path, 0, e.to_string()))?;
    if let Some(expected) = expect_guid
        && header.guid != expected
    {
        return Err(Error::ForeignDatabase { file: path.to_path_buf(), expected, found: header.guid });
    }
    let named = path.file_name().and_then(|n| n.to_str()).and_then(parse_file_name);
    if named.is_some_and(|g| g != header.generation) {
        return Err(Error::corrupted(
            path,
            32,
            format!("header says generation {} but the file is named for another", header.generation),
        ));
    }
    Ok(header)
}

/// Scans one generation, calling `visit` for each valid record in order.
///
/// Errors only for an unreadable file, a bad header (offset 0), a foreign GUID, or an error from `visit` (an
/// [`Error::Codec`] from `visit` becomes [`Error::Corrupted`] naming the record's file and offset); damage among
/// the records is reported in [`Scan::damage`] for the caller to judge.
pub fn scan(
    path: &Path,
    expect_guid: Option<Guid>,
    mut visit: impl FnMut(RecordRef<'_>) -> Result<()>,
) -> Result<Scan> {
    let bytes = read_file(path)?;
    let header = check_header(path, &bytes, expect_guid)?;
    let seal = RecordSeal::for_header(&header);
    let mut expected = header.first_lsn;
    let mut end = HEADER_LEN;
    let mut damage = None;
    for (at, frame) in seal.frames(&bytes[HEADER_LEN..]) {
        let offset = HEADER_LEN + at;
        match frame {
            Frame::End => break,
            Frame::Record { lsn, commit_micros, payload, frame_len } if lsn == expected => {
                // A payload that does not decode is damage at this record: name the file and offset.
                let record = RecordRef {
                    lsn,
                    epoch: header.epoch,
                    generation: header.generation,
                    offset: (offset + FRAME_HEADER_LEN) as u64,
                    commit_micros,
                    payload,
                };
                visit(record).map_err(|e| match e {
                    Error::Codec(e) => Error::corrupted(path, offset as u64, format!("record LSN {lsn}: {e}")),
                    e => e,
                })?;
                expected += 1;
                end = offset + frame_len;
            }
            Frame::Record { .. } => {
                damage = Some(damaged_at(&seal, &bytes, offset, expected, "record carries an unexpected LSN"));
                break;
            }
            Frame::Invalid(reason) => {
                damage = Some(damaged_at(&seal, &bytes, offset, expected, reason));
                break;
            }
        }
    }
    Ok(Scan {
        path: path.to_path_buf(),
        header,
        records: expected - header.first_lsn,
        last_lsn: expected - 1,
        end_offset: end as u64,
        checksum: crc32fast::hash(&bytes[..end]),
        file_len: bytes.len() as u64,
        damage,
    })
}

/// Builds the damage report for invalid bytes at `offset`, looking for any valid record of this generation
/// further on (with an LSN at or past the expected one): if there is one, the damage is not a torn tail.
fn damaged_at(seal: &RecordSeal, bytes: &[u8], offset: usize, expected: Lsn, reason: &'static str) -> Damage {
    let valid_record_after = seal.find_record(bytes, offset + 1, expected).map(|p| p as u64);
    Damage { offset: offset as u64, reason, valid_record_after }
}
