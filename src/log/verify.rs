//! Walking a log directory: every generation present, in order, with the chain between them checked.
//!
//! The walk is the one judge of a log's health. Recovery runs it twice (first to inspect, then to replay) and
//! `mailstore check` runs it over every generation. It checks that:
//!
//! - generation numbers are consecutive (a gap is [`Error::MissingGeneration`]);
//! - every header verifies and names this database ([`Error::ForeignDatabase`] otherwise);
//! - epochs never decrease and each generation's first LSN follows the previous generation's last record;
//! - each header's `prev_checksum` equals the checksum of the previous generation ([`Error::BrokenChain`]);
//! - every generation but the last ends in a clean end marker, and the last one either does too or ends in a
//!   *torn tail*: invalid bytes with no valid record after them. Damage followed by a valid record, or damage in
//!   any earlier generation, is [`Error::Corrupted`] naming the file and offset.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::log::format::GenerationHeader;
use crate::log::generation::{self, Damage, RecordRef, Scan};
use crate::types::{Guid, Lsn};

/// The outcome of a walk over a healthy (or only tail-damaged) log.
#[derive(Debug)]
pub struct Walk {
    /// The header and file of every generation present, scanned or not, in order.
    pub present: Vec<(GenerationHeader, PathBuf)>,
    /// Every generation scanned, in order.
    pub scans: Vec<Scan>,
    /// Damage at the end of the last generation, if any: what a crash during an append leaves.
    pub tail_damage: Option<Damage>,
}

impl Walk {
    /// The last generation scanned.
    pub fn last(&self) -> &Scan {
        // A walk always scans at least one generation (`walk` fails on an empty log).
        &self.scans[self.scans.len() - 1]
    }

    /// LSN of the last valid record in the log (0 when the log holds none).
    pub fn last_lsn(&self) -> Lsn {
        self.last().last_lsn
    }

    /// Discards a torn tail ([`truncate_tail`]). Returns what was found there and the number of bytes zeroed,
    /// or `None` when the log ended cleanly.
    pub fn discard_tail(&self) -> Result<Option<(Damage, u64)>> {
        match &self.tail_damage {
            None => Ok(None),
            Some(damage) => Ok(Some((damage.clone(), truncate_tail(self.last())?))),
        }
    }
}

/// Walks the log in `dir` from the generation that holds `from_lsn` (or from the first generation present when
/// `from_lsn` is `None`) to the end, calling `visit` for every valid record of every generation
/// scanned (including records below `from_lsn` in the first one: the caller filters).
pub fn walk(
    dir: &Path,
    guid: Guid,
    from_lsn: Option<Lsn>,
    mut visit: impl FnMut(RecordRef<'_>) -> Result<()>,
) -> Result<Walk> {
    let listing = generation::list(dir)?;
    let gens = &listing.generations;
    let Some(&(first_gen, _)) = gens.first() else {
        return Err(Error::MissingGeneration { generation: 1, file: dir.join(generation::file_name(1)) });
    };
    for (i, (number, _)) in gens.iter().enumerate() {
        let expected = first_gen + i as u64;
        if *number != expected {
            return Err(Error::MissingGeneration {
                generation: expected,
                file: dir.join(generation::file_name(expected)),
            });
        }
    }
    let mut headers = Vec::with_capacity(gens.len());
    for (_, path) in gens {
        headers.push(generation::read_header(path, Some(guid))?);
    }
    let start = match from_lsn {
        None => 0,
        Some(lsn) => {
            if lsn < headers[0].first_lsn {
                let missing = first_gen.saturating_sub(1).max(1);
                return Err(Error::MissingGeneration {
                    generation: missing,
                    file: dir.join(generation::file_name(missing)),
                });
            }
            headers.iter().rposition(|h| h.first_lsn <= lsn).unwrap_or(0)
        }
    };

    let mut scans: Vec<Scan> = Vec::with_capacity(gens.len() - start);
    for (path, header) in gens[start..].iter().map(|(_, p)| p).zip(&headers[start..]) {
        if let Some(prev) = scans.last() {
            if let Some(damage) = &prev.damage {
                return Err(Error::corrupted(&prev.path, damage.offset, damage.reason));
            }
            if header.epoch < prev.header.epoch {
                return Err(Error::corrupted(
                    path,
                    40,
                    format!(
                        "epoch {} is older than the previous generation's epoch {}",
                        header.epoch, prev.header.epoch
                    ),
                ));
            }
            if header.first_lsn != prev.next_lsn() {
                return Err(Error::corrupted(
                    path,
                    48,
                    format!(
                        "first LSN {} does not follow the previous generation, whose last record is LSN {}",
                        header.first_lsn, prev.last_lsn
                    ),
                ));
            }
            if header.prev_checksum != prev.checksum {
                return Err(Error::BrokenChain {
                    file: path.clone(),
                    expected: header.prev_checksum,
                    found: prev.checksum,
                });
            }
        }
        scans.push(generation::scan(path, Some(guid), &mut visit)?);
    }
    let last = &scans[scans.len() - 1];
    let tail_damage = last.damage.clone();
    if let Some(damage) = &tail_damage
        && damage.valid_record_after.is_some()
    {
        return Err(Error::corrupted(
            &last.path,
            damage.offset,
            format!("{}, followed by valid records: corruption inside the log, not a torn tail", damage.reason),
        ));
    }
    let present = headers.into_iter().zip(gens.iter().map(|(_, p)| p.clone())).collect();
    Ok(Walk { present, scans, tail_damage })
}

/// Discards a torn tail: zeros the last generation from the end of its last valid record up to the last
/// non-zero byte after it, then syncs, so the clean end marker is where the valid records stop. Returns the
/// number of bytes zeroed (the torn bytes; the zero-filled preallocated space after them is left alone).
pub fn truncate_tail(last: &Scan) -> Result<u64> {
    let file = OpenOptions::new().read(true).write(true).open(&last.path).at(&last.path)?;
    let mut tail = vec![0u8; last.file_len.saturating_sub(last.end_offset) as usize];
    file.read_exact_at(&mut tail, last.end_offset).at(&last.path)?;
    let torn = tail.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    tail[..torn].fill(0);
    file.write_all_at(&tail[..torn], last.end_offset).at(&last.path)?;
    file.sync_data().at(&last.path)?;
    Ok(torn as u64)
}
