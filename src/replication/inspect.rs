//! The inspector: judges one shipped chunk against what the copy's log expects next, before a byte of it is
//! written. Pure: no I/O, so it is fuzzed directly (`fuzz/fuzz_targets/chunk_inspection.rs`).

use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::Result;
use crate::log::format::{Frame, GenerationHeader, HEADER_LEN, RecordSeal};
use crate::replication::ReplicationError;
use crate::replication::protocol::Chunk;
use crate::types::{Guid, Lsn};

/// The end of the copy's log, as inspection sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TailView {
    /// Header of the copy's last generation.
    pub(crate) header: GenerationHeader,
    /// The LSN its next record must carry.
    pub(crate) next_lsn: Lsn,
    /// CRC32 of its bytes up to the end of its records: the next header's `prev_checksum`.
    pub(crate) chain: u32,
}

/// What the copy expects the chunk to be.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Expect {
    pub(crate) guid: Guid,
    /// The newest epoch the copy knows exists.
    pub(crate) known_epoch: u64,
    /// The position the copy asked for.
    pub(crate) generation: u64,
    pub(crate) offset: u64,
    /// The copy's last generation (`None` for a freshly seeded copy).
    pub(crate) tail: Option<TailView>,
    /// The first LSN the copy's state lacks (for a copy with no log yet).
    pub(crate) want_lsn: Lsn,
}

/// A chunk that passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Inspected {
    /// The header, when the chunk starts a generation.
    pub(crate) header: Option<GenerationHeader>,
    /// The LSN of its last record (the one before its first when it holds none).
    pub(crate) last_lsn: Lsn,
    /// Records in it.
    pub(crate) records: u64,
}

fn reject<T>(reason: String) -> Result<T> {
    Err(ReplicationError::ChunkRejected { reason }.into())
}

/// Inspects `chunk`: source identity and epoch, position, and for a new generation its header (checksum, GUID,
/// number, epoch, first LSN, chain to the copy's previous generation); then every record frame (checksum,
/// consecutive LSNs, no end marker or partial frame inside) and that every payload decodes as an `Op`.
pub(crate) fn inspect<Op: DeserializeOwned>(expect: &Expect, chunk: &Chunk) -> Result<Inspected> {
    inspect_origin(expect, chunk)?;
    let generation = expect.generation;
    let (header, seal, records_from, first) = if expect.offset == 0 {
        let header = GenerationHeader::decode(&chunk.bytes)
            .map_err(|e| ReplicationError::ChunkRejected { reason: format!("generation {generation}: {e}") })?;
        check_header(expect, &header, chunk.source.epoch)?;
        (Some(header), RecordSeal::for_header(&header), HEADER_LEN, header.first_lsn)
    } else {
        let Some(tail) = &expect.tail else { return reject("a chunk continues a generation the copy lacks".into()) };
        if tail.header.generation != generation {
            return reject(format!(
                "a chunk continues generation {generation}, the copy is at {}",
                tail.header.generation
            ));
        }
        (None, RecordSeal::for_header(&tail.header), 0, tail.next_lsn)
    };
    let bytes = &chunk.bytes[records_from..];
    let mut expected = first;
    for (at, frame) in seal.frames(bytes) {
        match frame {
            Frame::Record { lsn, payload, .. } if lsn == expected => {
                codec::decode_record::<Op>(payload).map_err(|e| ReplicationError::ChunkRejected {
                    reason: format!("generation {generation}: record LSN {lsn} does not decode: {e}"),
                })?;
                expected += 1;
            }
            Frame::Record { lsn, .. } => {
                return reject(format!("generation {generation}: record LSN {lsn} where {expected} was due"));
            }
            // The chunk's end: every byte of it was a whole record.
            Frame::End if at == bytes.len() => break,
            Frame::End => return reject(format!("generation {generation}: end marker inside a chunk")),
            Frame::Invalid(why) => {
                let offset = expect.offset + (records_from + at) as u64;
                return reject(format!("generation {generation} offset {offset}: {why}"));
            }
        }
    }
    let records = expected - first;
    Ok(Inspected { header, last_lsn: expected - 1, records })
}

/// The checks every chunk passes, empty or not: the source's database and epoch, and that it answers the
/// position asked for.
pub(crate) fn inspect_origin(expect: &Expect, chunk: &Chunk) -> Result<()> {
    let generation = expect.generation;
    if chunk.source.guid != expect.guid {
        return reject(format!("the source serves database {}, not {}", chunk.source.guid, expect.guid));
    }
    if chunk.source.epoch < expect.known_epoch {
        return reject(format!(
            "the source is at epoch {} but epoch {} exists: an old active's log is never accepted",
            chunk.source.epoch, expect.known_epoch
        ));
    }
    if chunk.generation != generation || chunk.offset != expect.offset {
        return reject(format!(
            "chunk for generation {} offset {} answers a request for generation {generation} offset {} (duplicated \
             or reordered)",
            chunk.generation, chunk.offset, expect.offset
        ));
    }
    Ok(())
}

/// The checks a new generation's header must pass against the copy's log.
fn check_header(expect: &Expect, header: &GenerationHeader, source_epoch: u64) -> Result<()> {
    let generation = expect.generation;
    if header.guid != expect.guid {
        return reject(format!("generation {generation} belongs to database {}", header.guid));
    }
    if header.generation != generation {
        return reject(format!("generation {generation} carries the header of generation {}", header.generation));
    }
    if header.epoch > source_epoch {
        return reject(format!("generation {generation} has epoch {} beyond its source's", header.epoch));
    }
    match &expect.tail {
        Some(t) => {
            if header.epoch < t.header.epoch {
                return reject(format!(
                    "generation {generation} has epoch {} after epoch {}",
                    header.epoch, t.header.epoch
                ));
            }
            if header.first_lsn != t.next_lsn {
                return reject(format!(
                    "generation {generation} starts at LSN {} but the log ends at LSN {}",
                    header.first_lsn,
                    t.next_lsn.saturating_sub(1)
                ));
            }
            if header.prev_checksum != t.chain {
                return reject(format!(
                    "generation {generation} does not chain to the copy's generation {} (checksum mismatch: the \
                     logs diverged)",
                    t.header.generation
                ));
            }
        }
        None => {
            if header.first_lsn > expect.want_lsn {
                return reject(format!(
                    "generation {generation} starts at LSN {} but the copy needs LSN {}",
                    header.first_lsn, expect.want_lsn
                ));
            }
        }
    }
    Ok(())
}
