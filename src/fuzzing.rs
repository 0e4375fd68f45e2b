//! Entry points for the fuzz targets in `fuzz/` (and for the tests that replay their seed corpora).
//! Each takes arbitrary bytes and must never panic.

use std::fs;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::{self, Checkpoint, Options, RecoveryMode};
use crate::kv::KvEngine;
use crate::log::format::{FRAME_HEADER_LEN, Frame, GenerationHeader, HEADER_LEN, RecordSeal};
use crate::types::Guid;

/// Decodes record frames from `data` until the first non-record, with a fixed generation seal.
pub fn record_decoder(data: &[u8]) {
    let seal = RecordSeal::for_header(&fixed_header());
    for (_, frame) in seal.frames(data) {
        if let Frame::Record { payload, .. } = frame {
            let _ = crate::codec::decode_record::<crate::kv::KvOp>(payload);
        }
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

/// Builds a database (one record committed, LSN 1), replaces the records of its generation 1 (keeping the
/// header) by `data`, then mounts it in both recovery modes and runs `check`: any outcome but a panic is
/// acceptable.
///
/// The database's GUID is random, so no frame in `data` could carry a valid checksum for it. Every frame in
/// `data` that is valid for the fixed seal [`record_decoder`] uses (GUID `[0x5A; 16]`, generation 1, epoch 1) is
/// therefore re-sealed for the real generation first: seeds written with the real encoder for that seal, and
/// the fuzzer (which can solve a checksum it sees compared), reach replay; damaged frames stay damaged.
pub fn recovery(data: &[u8]) {
    let Ok(dir) = tempfile_dir() else { return };
    recover_in(&dir, data);
    let _ = fs::remove_dir_all(&dir);
}

fn recover_in(dir: &std::path::Path, data: &[u8]) {
    let path = dir.join("db");
    let Ok(db) = KvEngine::mount(&path, Options::default()) else { return };
    let guid = db.guid();
    let _ = db.commit(crate::kv::KvOp::Put { key: b"k".to_vec(), value: b"v".to_vec() });
    drop(db);
    // Overwrite the records of generation 1 (keep its header) with the fuzz input.
    let gen_path = path.join(engine::LOGS_DIR).join(crate::log::generation::file_name(1));
    let mut bytes = fs::read(&gen_path).unwrap_or_default();
    let Ok(header) = GenerationHeader::decode(&bytes) else { return };
    bytes.truncate(HEADER_LEN);
    bytes.extend_from_slice(&reseal(data, &header));
    let _ = fs::write(&gen_path, &bytes);
    for mode in [RecoveryMode::AbsoluteConsistency, RecoveryMode::TolerateTailCorruption] {
        if let Ok(db) = KvEngine::mount(&path, Options::default().recovery(mode)) {
            assert_eq!(db.guid(), guid, "recovery changed the database GUID");
            let _ = db.read(|kv, txn| kv.dump(txn));
        }
    }
    let _ = engine::check(&path);
}

/// The header whose seal [`record_decoder`] uses (seed generators seal their frames with it too).
pub fn fixed_header() -> GenerationHeader {
    GenerationHeader {
        guid: Guid([0x5A; 16]),
        generation: 1,
        epoch: 1,
        first_lsn: 1,
        created_micros: 0,
        prev_checksum: 0,
    }
}

/// `data` with every frame that is valid under [`fixed_header`]'s seal (at any offset) re-sealed for `real`.
fn reseal(data: &[u8], real: &GenerationHeader) -> Vec<u8> {
    let fixed = RecordSeal::for_header(&fixed_header());
    let real = RecordSeal::for_header(real);
    let mut out = data.to_vec();
    let mut at = 0;
    let mut frame = Vec::new();
    while at + FRAME_HEADER_LEN <= data.len() {
        match fixed.decode(&data[at..]) {
            Frame::Record { lsn, commit_micros, payload, frame_len } => {
                frame.clear();
                real.encode_into(lsn, commit_micros, payload, &mut frame);
                out[at..at + frame_len].copy_from_slice(&frame);
                at += frame_len;
            }
            Frame::End | Frame::Invalid(_) => at += 1,
        }
    }
    out
}

/// A fresh directory per call (calls may come from several threads of one test process).
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("mailstore-fuzz-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Inspects `data[1..]` as a shipped chunk against a fixed copy: `data[0]` chooses a new generation 2 (whose
/// header must chain to a fixed generation 1 that ends at LSN 3), a continuation of generation 1 at LSN 4, or a
/// freshly seeded copy that needs LSN 1. Rejections are fine; a panic is not.
pub fn chunk_inspection(data: &[u8]) {
    use crate::replication::inspect::{Expect, TailView, inspect};
    use crate::replication::{Chunk, SourceInfo, SourceRole};
    let Some((&mode, bytes)) = data.split_first() else { return };
    let header = fixed_header();
    let tail = TailView { header, next_lsn: 4, chain: 0x1234_5678 };
    let (generation, offset, tail) = match mode % 3 {
        0 => (2, 0, Some(tail)),
        1 => (1, HEADER_LEN as u64 + 100, Some(tail)),
        _ => (1, 0, None),
    };
    let expect = Expect { guid: header.guid, known_epoch: 1, generation, offset, tail, want_lsn: 1 };
    let source = SourceInfo {
        guid: header.guid,
        epoch: 1,
        position: crate::engine::LogPosition { generation: 2, offset: 4096, lsn: 100, epoch: 1 },
        oldest_generation: 1,
        role: SourceRole::Active,
    };
    let chunk = Chunk { generation, offset, bytes: bytes.to_vec(), closed: false, source };
    if let Ok(inspected) = inspect::<crate::kv::KvOp>(&expect, &chunk) {
        assert!(inspected.records <= bytes.len() as u64 / (FRAME_HEADER_LEN as u64 + 1), "more records than bytes");
    }
}

/// Decodes `data` as a shipping request and as a response (what a TCP peer sends), and answers a decoded
/// request from a source that refuses everything.
pub fn shipping_message(data: &[u8]) {
    use crate::replication::{LogSource, NoSource, Request, Response, serve};
    if let Ok(request) = crate::codec::decode::<Request>(data) {
        let source: &dyn LogSource = &NoSource;
        let _ = crate::codec::encode(&serve(source, request));
    }
    if let Ok(Response::Refused(refusal)) = crate::codec::decode::<Response>(data) {
        let _ = refusal.into_error().to_string();
    }
}
