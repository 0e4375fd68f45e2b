//! The one place that knows how operations become bytes.
//!
//! Operations travel through the log as bincode 2 (serde mode, standard configuration: little-endian,
//! variable-length integers). Keeping the codec behind this module means a format change touches one file,
//! and every decode is bounded: bincode is told the largest allocation it may make, so a hostile length
//! inside a record can never allocate more than the record itself could hold.
//!
//! A record's payload is an encoded operation and its **attachment**, the raw bytes it carries outside its
//! encoded form (a message body, [`StateMachine::attachment`](crate::engine::StateMachine::attachment)):
//!
//! ```text
//! off    size  field
//!   0       4  N: length of the encoded operation, little-endian
//!   4       N  the operation, bincode
//!   4 + N   …  the attachment: the rest of the payload, as given (possibly empty)
//! ```
//!
//! The attachment is never decoded: it stays where the log wrote it, and the state points at it there.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CodecError;
use crate::log::format::MAX_RECORD_LEN;

/// The most that decoding one payload may claim for owned data (bincode's limit), in bytes. Records are at most
/// [`MAX_RECORD_LEN`] long; a few times that covers every honest value (varint-packed integers expand) while a
/// hostile length prefix fails before anything is allocated.
const DECODE_LIMIT: usize = 4 * MAX_RECORD_LEN;

/// Encodes `value` into a fresh buffer.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = VecWriter(Vec::with_capacity(INITIAL_CAPACITY));
    bincode::serde::encode_into_writer(value, &mut out, bincode::config::standard())
        .map_err(|e| CodecError::Encode { reason: e.to_string() })?;
    Ok(out.0)
}

/// What `encode` allocates up front: enough for every state record (folder, mailbox, item, change) in one
/// allocation, where bincode's own `encode_to_vec` starts empty and grows the buffer several times per value.
const INITIAL_CAPACITY: usize = 256;

/// A growable buffer as a bincode writer.
struct VecWriter(Vec<u8>);

impl bincode::enc::write::Writer for VecWriter {
    fn write(&mut self, bytes: &[u8]) -> std::result::Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// Length of the prefix that gives the encoded operation's length.
pub(crate) const RECORD_PREFIX: usize = 4;

/// Encodes a record's payload: `op` and its `attachment` (see the module documentation).
pub fn encode_record<T: Serialize>(op: &T, attachment: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut out = VecWriter(Vec::with_capacity(RECORD_PREFIX + INITIAL_CAPACITY + attachment.len()));
    out.0.extend_from_slice(&[0; RECORD_PREFIX]);
    bincode::serde::encode_into_writer(op, &mut out, bincode::config::standard())
        .map_err(|e| CodecError::Encode { reason: e.to_string() })?;
    let len = u32::try_from(out.0.len() - RECORD_PREFIX)
        .map_err(|_| CodecError::Encode { reason: "an operation over 4 GiB".into() })?;
    out.0[..RECORD_PREFIX].copy_from_slice(&len.to_le_bytes());
    out.0.extend_from_slice(attachment);
    Ok(out.0)
}

/// Splits a record's payload into the encoded operation and the attachment; the attachment starts at
/// `RECORD_PREFIX + op.len()` in the payload.
pub fn split_record(payload: &[u8]) -> Result<(&[u8], &[u8]), CodecError> {
    let short = || CodecError::Decode { reason: "a record shorter than the length of its operation".into() };
    let prefix: [u8; RECORD_PREFIX] =
        payload.get(..RECORD_PREFIX).ok_or_else(short)?.try_into().map_err(|_| short())?;
    let end = (u32::from_le_bytes(prefix) as usize).checked_add(RECORD_PREFIX).ok_or_else(short)?;
    let op = payload.get(RECORD_PREFIX..end).ok_or_else(short)?;
    Ok((op, &payload[end..]))
}

/// Decodes the operation of a record's payload (see [`split_record`]) and returns it with the attachment.
pub fn decode_record<T: DeserializeOwned>(payload: &[u8]) -> Result<(T, &[u8]), CodecError> {
    let (op, attachment) = split_record(payload)?;
    Ok((decode(op)?, attachment))
}

/// Decodes one value that must span all of `bytes`.
///
/// Trailing bytes are an error: a record's payload is exactly one operation.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let config = bincode::config::standard().with_limit::<DECODE_LIMIT>();
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, config).map_err(|e| CodecError::Decode { reason: e.to_string() })?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes { count: bytes.len() - used });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    enum Op {
        Put { key: Vec<u8>, value: Vec<u8> },
        Delete(Vec<u8>),
    }

    #[test]
    fn round_trip() {
        let op = Op::Put { key: b"k".to_vec(), value: vec![7; 300] };
        let bytes = encode(&op).unwrap();
        assert_eq!(decode::<Op>(&bytes).unwrap(), op);
    }

    #[test]
    fn records_carry_their_attachment_after_the_operation() {
        let op = Op::Delete(b"key".to_vec());
        let payload = encode_record(&op, b"attached bytes").unwrap();
        let (decoded, attachment) = decode_record::<Op>(&payload).unwrap();
        assert_eq!((decoded, attachment), (op, &b"attached bytes"[..]));
        let (encoded, _) = split_record(&payload).unwrap();
        assert_eq!(encoded, encode(&Op::Delete(b"key".to_vec())).unwrap());
        // A length prefix pointing past the payload is refused, not trusted.
        let mut bad = payload.clone();
        bad[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(split_record(&bad).is_err());
        assert!(split_record(&payload[..3]).is_err());
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&Op::Delete(b"x".to_vec())).unwrap();
        bytes.push(0);
        assert!(matches!(decode::<Op>(&bytes), Err(CodecError::TrailingBytes { count: 1 })));
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct AsBytes {
        #[serde(with = "serde_bytes")]
        raw: Vec<u8>,
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct AsSeq {
        raw: Vec<u8>,
    }

    #[test]
    fn byte_fields_keep_their_wire_format() {
        // `serde_bytes` only changes how fast byte fields encode, not the bytes: logs written either way read
        // back either way.
        let raw: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let fast = encode(&AsBytes { raw: raw.clone() }).unwrap();
        let slow = encode(&AsSeq { raw: raw.clone() }).unwrap();
        assert_eq!(fast, slow);
        assert_eq!(decode::<AsBytes>(&slow).unwrap().raw, raw);
    }

    #[test]
    fn hostile_length_does_not_allocate() {
        // Variant 1 (Delete) followed by a varint length of u64::MAX-ish: must fail, not allocate.
        let bytes = [1u8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
        assert!(decode::<Op>(&bytes).is_err());
    }
}
