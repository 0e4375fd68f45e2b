//! Entry points for the fuzz targets in `fuzz/` (and for the tests that replay their seed corpora).
//! Each takes arbitrary bytes and must never panic.

use std::fs;

use crate::engine::{self, Checkpoint, Options, RecoveryMode};
use crate::kv::KvEngine;
use crate::log::format::{GenerationHeader, RecordSeal};
use crate::types::Guid;

/// Decodes record frames from `data` until the first non-record, with a fixed generation seal.
pub fn record_decoder(data: &[u8]) {
    let header = GenerationHeader {
        guid: Guid([0x5A; 16]),
        generation: 1,
        epoch: 1,
        first_lsn: 1,
        created_micros: 0,
        prev_checksum: 0,
    };
    let seal = RecordSeal::for_header(&header);
    let mut rest = data;
    while let crate::log::format::Frame::Record { frame_len, payload, .. } = seal.decode(rest) {
        let _ = crate::codec::decode::<crate::kv::KvOp>(payload);
        rest = &rest[frame_len..];
    }
}

/// Decodes a generation header.
pub fn header_decoder(data: &[u8]) {
    if let Ok(h) = GenerationHeader::decode(data) {
        assert_eq!(GenerationHeader::decode(&h.encode()), Ok(h), "header round trip");
    }
}

/// Decodes a checkpoint file image.
pub fn checkpoint_decoder(data: &[u8]) {
    if let Some(c) = Checkpoint::newest_of(data) {
        assert_eq!(Checkpoint::decode(&c.encode()), Some(c), "checkpoint round trip");
    }
}

/// Builds a database whose last generation's records are replaced by `data`, then recovers it: any outcome
/// but a panic is acceptable.
pub fn recovery(data: &[u8]) {
    let Ok(dir) = tempfile_dir() else { return };
    let path = dir.join("db");
    let Ok(db) = KvEngine::mount(&path, Options::default()) else { return };
    let guid = db.guid();
    let _ = db.commit(crate::kv::KvOp::Put { key: b"k".to_vec(), value: b"v".to_vec() });
    drop(db);
    // Overwrite the records of generation 1 (keep its header) with the fuzz input.
    let gen_path = path.join(engine::LOGS_DIR).join(crate::log::generation::file_name(1));
    let mut bytes = fs::read(&gen_path).unwrap_or_default();
    let end = crate::log::format::HEADER_LEN;
    bytes.truncate(end);
    bytes.extend_from_slice(data);
    let _ = fs::write(&gen_path, &bytes);
    for mode in [RecoveryMode::AbsoluteConsistency, RecoveryMode::TolerateTailCorruption] {
        if let Ok(db) = KvEngine::mount(&path, Options::default().recovery(mode)) {
            let _ = db.guid() == guid;
            let _ = db.read(|kv, txn| kv.dump(txn));
        }
    }
    let _ = engine::check(&path);
    let _ = fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let base = std::env::temp_dir().join(format!("mailstore-fuzz-{}", std::process::id()));
    let dir = base.join(format!("{}", crate::types::now_micros()));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}
