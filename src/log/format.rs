//! Byte layout of log generations: the generation header and record frames.
//!
//! All integers are little-endian. A generation file is:
//!
//! ```text
//! +----------------------+  offset 0
//! | generation header    |  HEADER_LEN = 128 bytes
//! +----------------------+  offset 128
//! | record frame 1       |
//! | record frame 2       |
//! | ...                  |
//! | 16 zero bytes        |  end marker (a frame header that is all zeros)
//! | zero padding / stale |  preallocated space, or bytes of a recycled file
//! +----------------------+
//! ```
//!
//! Generation header:
//!
//! ```text
//! off size field
//!   0    8 magic  b"MSTORLOG"
//!   8    4 format version (3)
//!  12    4 header length (128)
//!  16   16 database GUID
//!  32    8 generation number (>= 1)
//!  40    8 epoch (activation term, >= 1)
//!  48    8 first LSN: the LSN the first record of this generation carries
//!  56    8 creation time, microseconds since the Unix epoch
//!  64    4 checksum of the previous generation: CRC32 of its bytes from offset 0 to the end of its last
//!          record (0 for generation 1)
//!  68   56 reserved, zero
//! 124    4 CRC32 of bytes 0..124
//! ```
//!
//! Record frame:
//!
//! ```text
//! off size field
//!   0    4 payload length L (1 ..= MAX_RECORD_LEN)
//!   4    4 CRC32 of (GUID ‖ generation ‖ epoch ‖ LSN ‖ commit time ‖ L ‖ payload)
//!   8    8 LSN
//!  16    8 commit time, microseconds since the Unix epoch: decided by the writer before the batch is written,
//!          the same for every record of one batch (point-in-time restore stops by it)
//!  24    L payload: one operation and its attachment (layout in `codec`)
//! ```
//!
//! Seeding the record CRC with the database GUID, the generation number and the epoch binds every record to
//! the file it was written into: a stale record left in a recycled file, or a record copied from another
//! database or another epoch, never validates. A frame header of 24 zero bytes marks the clean end of the
//! generation; it is written after every batch, so the end is explicit even in a recycled file.

use crate::types::{Guid, Lsn};

/// Magic number at the start of every generation.
pub const MAGIC: [u8; 8] = *b"MSTORLOG";
/// Format version written by this release. Version 3 frames carry the record's commit time; version 2 payloads
/// carry an operation and its attachment (`codec`); version 1 payloads were the operation alone. A generation of
/// another version is refused, never misread.
pub const FORMAT_VERSION: u32 = 3;
/// Length of the generation header.
pub const HEADER_LEN: usize = 128;
/// Length of a record frame's header.
pub const FRAME_HEADER_LEN: usize = 24;
/// The end marker: a frame header of zeros, written after the last record of every batch.
pub const END_MARKER: [u8; FRAME_HEADER_LEN] = [0; FRAME_HEADER_LEN];
/// The largest payload one record may carry (64 MiB). Decoders reject larger lengths before allocating.
pub const MAX_RECORD_LEN: usize = 64 << 20;

const HEADER_CRC_AT: usize = 124;

/// The decoded header of one generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenerationHeader {
    /// The database the generation belongs to.
    pub guid: Guid,
    /// Its number (file `{generation:016}.log`).
    pub generation: u64,
    /// The epoch (activation term) it was written in.
    pub epoch: u64,
    /// LSN of its first record.
    pub first_lsn: Lsn,
    /// When it was created (microseconds since the Unix epoch).
    pub created_micros: u64,
    /// CRC32 of the previous generation's bytes up to the end of its last record; 0 for generation 1.
    pub prev_checksum: u32,
}

/// Why a header did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than [`HEADER_LEN`] bytes.
    Short(usize),
    /// The magic number is wrong: not a generation file.
    BadMagic,
    /// A format this release cannot read.
    UnsupportedVersion(u32),
    /// The header's own checksum does not match.
    BadChecksum,
    /// A field holds an impossible value.
    BadField(&'static str),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Short(n) => write!(f, "generation header is {n} bytes, expected {HEADER_LEN}"),
            HeaderError::BadMagic => write!(f, "not a mailstore log generation (bad magic)"),
            HeaderError::UnsupportedVersion(v) => write!(f, "unsupported log format version {v}"),
            HeaderError::BadChecksum => write!(f, "generation header checksum mismatch"),
            HeaderError::BadField(what) => write!(f, "generation header field {what} is invalid"),
        }
    }
}

impl GenerationHeader {
    /// Encodes the header, checksum included.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..32].copy_from_slice(self.guid.as_bytes());
        b[32..40].copy_from_slice(&self.generation.to_le_bytes());
        b[40..48].copy_from_slice(&self.epoch.to_le_bytes());
        b[48..56].copy_from_slice(&self.first_lsn.to_le_bytes());
        b[56..64].copy_from_slice(&self.created_micros.to_le_bytes());
        b[64..68].copy_from_slice(&self.prev_checksum.to_le_bytes());
        let crc = crc32fast::hash(&b[..HEADER_CRC_AT]);
        b[HEADER_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and verifies a header from the first [`HEADER_LEN`] bytes of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderError> {
        if bytes.len() < HEADER_LEN {
            return Err(HeaderError::Short(bytes.len()));
        }
        let b = &bytes[..HEADER_LEN];
        if b[0..8] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = u32_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        if u32_at(b, HEADER_CRC_AT) != crc32fast::hash(&b[..HEADER_CRC_AT]) {
            return Err(HeaderError::BadChecksum);
        }
        if u32_at(b, 12) as usize != HEADER_LEN {
            return Err(HeaderError::BadField("header length"));
        }
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&b[16..32]);
        let header = GenerationHeader {
            guid: Guid(guid),
            generation: u64_at(b, 32),
            epoch: u64_at(b, 40),
            first_lsn: u64_at(b, 48),
            created_micros: u64_at(b, 56),
            prev_checksum: u32_at(b, 64),
        };
        if header.generation == 0 {
            return Err(HeaderError::BadField("generation"));
        }
        if header.epoch == 0 {
            return Err(HeaderError::BadField("epoch"));
        }
        if header.first_lsn == 0 {
            return Err(HeaderError::BadField("first LSN"));
        }
        Ok(header)
    }
}

/// The running CRC state that every record of one generation starts from.
#[derive(Clone)]
pub struct RecordSeal {
    seeded: crc32fast::Hasher,
}

impl RecordSeal {
    /// The seal for records of `header`'s generation.
    pub fn for_header(header: &GenerationHeader) -> Self {
        let mut seeded = crc32fast::Hasher::new();
        seeded.update(header.guid.as_bytes());
        seeded.update(&header.generation.to_le_bytes());
        seeded.update(&header.epoch.to_le_bytes());
        RecordSeal { seeded }
    }

    fn crc(&self, lsn: Lsn, commit_micros: u64, payload: &[u8]) -> u32 {
        let mut h = self.seeded.clone();
        h.update(&lsn.to_le_bytes());
        h.update(&commit_micros.to_le_bytes());
        h.update(&(payload.len() as u32).to_le_bytes());
        h.update(payload);
        h.finalize()
    }

    /// Appends the frame of one record committed at `commit_micros` (microseconds since the Unix epoch) to
    /// `out`. The caller guarantees `1 <= payload.len() <= MAX_RECORD_LEN`.
    pub fn encode_into(&self, lsn: Lsn, commit_micros: u64, payload: &[u8], out: &mut Vec<u8>) {
        debug_assert!(!payload.is_empty() && payload.len() <= MAX_RECORD_LEN);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.crc(lsn, commit_micros, payload).to_le_bytes());
        out.extend_from_slice(&lsn.to_le_bytes());
        out.extend_from_slice(&commit_micros.to_le_bytes());
        out.extend_from_slice(payload);
    }

    /// The frames of `bytes` in order, from its start: see [`Frames`].
    pub fn frames<'a>(&self, bytes: &'a [u8]) -> Frames<'a, '_> {
        Frames { seal: self, bytes, offset: 0, done: false }
    }

    /// The offset of the first valid record of this generation at or after `from` in `bytes` whose LSN is at
    /// least `min_lsn` (and less than 2^32 past it), looking at every byte offset: how damage is told from a torn
    /// tail (damage followed by a valid record is corruption inside the log).
    pub fn find_record(&self, bytes: &[u8], from: usize, min_lsn: Lsn) -> Option<usize> {
        (from..bytes.len()).find(|&p| {
            // Cheap filters first: a plausible length and LSN, then the checksum.
            bytes[p..].first_chunk::<FRAME_HEADER_LEN>().is_some_and(|header| {
                let lsn = u64_at(header, 8);
                frame_len(header).is_some()
                    && lsn >= min_lsn
                    && lsn - min_lsn < (1 << 32)
                    && matches!(self.decode(&bytes[p..]), Frame::Record { .. })
            })
        })
    }

    /// Decodes the frame at the start of `bytes`.
    pub fn decode<'a>(&self, bytes: &'a [u8]) -> Frame<'a> {
        let Some(header) = bytes.first_chunk::<FRAME_HEADER_LEN>() else {
            return if bytes.iter().all(|&b| b == 0) { Frame::End } else { Frame::Invalid("partial frame header") };
        };
        if header.iter().all(|&b| b == 0) {
            return Frame::End;
        }
        let Some(frame_len) = frame_len(header) else {
            return Frame::Invalid("record length out of range");
        };
        let len = frame_len - FRAME_HEADER_LEN;
        if bytes.len() - FRAME_HEADER_LEN < len {
            return Frame::Invalid("record extends past the end of the file");
        }
        let lsn = u64_at(header, 8);
        let commit_micros = u64_at(header, 16);
        let payload = &bytes[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
        if self.crc(lsn, commit_micros, payload) != u32_at(header, 4) {
            return Frame::Invalid("record checksum mismatch");
        }
        Frame::Record { lsn, commit_micros, payload, frame_len: FRAME_HEADER_LEN + len }
    }
}

/// The length of the whole frame whose header `header` starts with (its first [`FRAME_HEADER_LEN`] bytes), or
/// `None` when its payload length is out of range (`0`, the end marker, or above [`MAX_RECORD_LEN`]). It reads
/// the length only: the checksum is [`RecordSeal::decode`]'s, once the payload is at hand.
pub fn frame_len(header: &[u8; FRAME_HEADER_LEN]) -> Option<usize> {
    let len = u32_at(header, 0) as usize;
    (1..=MAX_RECORD_LEN).contains(&len).then_some(FRAME_HEADER_LEN + len)
}

/// The frames of a buffer, in order: every valid record, then the end marker or the invalid bytes that stopped
/// the walk (once), then nothing. Each item comes with its offset in the buffer. The buffer's end counts as the
/// end marker, so a buffer of whole frames yields them and then [`Frame::End`] at its length.
pub struct Frames<'a, 's> {
    seal: &'s RecordSeal,
    bytes: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> Iterator for Frames<'a, '_> {
    type Item = (usize, Frame<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let at = self.offset;
        let frame = self.seal.decode(&self.bytes[at..]);
        match &frame {
            Frame::Record { frame_len, .. } => self.offset += frame_len,
            Frame::End | Frame::Invalid(_) => self.done = true,
        }
        Some((at, frame))
    }
}

/// What a frame decode found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A valid record.
    Record {
        /// Its LSN.
        lsn: Lsn,
        /// When it was committed (microseconds since the Unix epoch).
        commit_micros: u64,
        /// Its payload.
        payload: &'a [u8],
        /// Bytes the frame occupies, header included.
        frame_len: usize,
    },
    /// The end marker (or the end of the file).
    End,
    /// Bytes that are neither a record nor the end marker.
    Invalid(&'static str),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> GenerationHeader {
        GenerationHeader {
            guid: Guid([7; 16]),
            generation: 3,
            epoch: 1,
            first_lsn: 41,
            created_micros: 1_700_000_000_000_000,
            prev_checksum: 0xDEAD_BEEF,
        }
    }

    #[test]
    fn header_round_trip_and_every_bit_flip_detected() {
        let h = header();
        let bytes = h.encode();
        assert_eq!(GenerationHeader::decode(&bytes), Ok(h));
        for bit in 0..HEADER_LEN * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(GenerationHeader::decode(&damaged).is_err(), "bit {bit} flip went unnoticed");
        }
    }

    #[test]
    fn record_bound_to_generation() {
        let h = header();
        let seal = RecordSeal::for_header(&h);
        let mut buf = Vec::new();
        seal.encode_into(41, 1_700_000_000_000_001, b"hello", &mut buf);
        assert_eq!(
            seal.decode(&buf),
            Frame::Record { lsn: 41, commit_micros: 1_700_000_000_000_001, payload: b"hello", frame_len: 29 }
        );
        let mut retimed = buf.clone();
        retimed[16] ^= 1;
        assert_eq!(seal.decode(&retimed), Frame::Invalid("record checksum mismatch"), "the time is covered by the CRC");
        let other = RecordSeal::for_header(&GenerationHeader { generation: 4, ..h });
        assert_eq!(other.decode(&buf), Frame::Invalid("record checksum mismatch"));
        let other_epoch = RecordSeal::for_header(&GenerationHeader { epoch: 2, ..h });
        assert!(matches!(other_epoch.decode(&buf), Frame::Invalid(_)));
    }

    #[test]
    fn end_marker_and_partial_frames() {
        let seal = RecordSeal::for_header(&header());
        assert_eq!(seal.decode(&[]), Frame::End);
        assert_eq!(seal.decode(&[0; 40]), Frame::End);
        assert_eq!(seal.decode(&[0, 0, 1]), Frame::Invalid("partial frame header"));
        let mut buf = Vec::new();
        seal.encode_into(41, 7, &[9; 100], &mut buf);
        assert!(matches!(seal.decode(&buf[..50]), Frame::Invalid(_)));
        let mut huge = buf.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(seal.decode(&huge), Frame::Invalid("record length out of range"));
    }
}
