//! Replays the fuzz seed corpora (`fuzz/corpus/<target>/`) through the entry points in `mailstore::internals::fuzzing`,
//! plus deterministic mutations of every seed, so the fuzz targets' invariants (never panic, round trips) are
//! checked by a plain `cargo test` without cargo-fuzz.
//!
//! The seeds themselves are produced by the real encoders: `cargo test --test fuzz_seeds -- --ignored
//! regenerate_seed_corpus` rewrites the generated files (it leaves any other file in the corpus alone, e.g.
//! inputs a fuzzer found).

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use mailstore::internals::engine::Checkpoint;
use mailstore::internals::fuzzing;
use mailstore::internals::log::{FRAME_HEADER_LEN, GenerationHeader, HEADER_LEN, MAX_RECORD_LEN, RecordSeal};
use mailstore::kv::KvOp;
use mailstore::{Guid, Lsn};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus").join(target)
}

/// Every file of a target's corpus, sorted by name; fails when the directory is missing or empty.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut seeds = Vec::new();
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_file() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            seeds.push((name, std::fs::read(&path).unwrap()));
        }
    }
    seeds.sort();
    assert!(!seeds.is_empty(), "the seed corpus {} is empty", dir.display());
    seeds
}

/// xorshift64*: a tiny deterministic PRNG.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// One random mutation of `seed` (or a fresh random input), and a description of it for failure messages.
fn mutate(rng: &mut Rng, seed: &[u8]) -> (Vec<u8>, String) {
    let mut data = seed.to_vec();
    let what = match rng.below(7) {
        0 | 1 if !data.is_empty() => {
            let flips = 1 + rng.below(3);
            let mut bits = Vec::new();
            for _ in 0..flips {
                let bit = rng.below(data.len() * 8);
                data[bit / 8] ^= 1 << (bit % 8);
                bits.push(bit);
            }
            format!("bits {bits:?} flipped")
        }
        2 if !data.is_empty() => {
            let len = rng.below(data.len());
            data.truncate(len);
            format!("truncated to {len} bytes")
        }
        3 if !data.is_empty() => {
            // Overwrite a little-endian length/LSN-sized field with an extreme value.
            let at = rng.below(data.len());
            let value: u64 = [0, 1, u32::MAX as u64, u64::MAX, MAX_RECORD_LEN as u64 + 1][rng.below(5)];
            for (i, b) in value.to_le_bytes().iter().enumerate().take(data.len() - at) {
                data[at + i] = *b;
            }
            format!("{value:#x} written at {at}")
        }
        4 => {
            let at = rng.below(data.len() + 1);
            let extra: Vec<u8> = (0..1 + rng.below(32)).map(|_| rng.next() as u8).collect();
            data.splice(at..at, extra.iter().copied());
            format!("{} random bytes inserted at {at}", extra.len())
        }
        5 => {
            data.extend(std::iter::repeat_n(0u8, 1 + rng.below(64)));
            "zeros appended".to_string()
        }
        _ => {
            data = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
            format!("{} random bytes", data.len())
        }
    };
    (data, what)
}

/// Runs every seed of `target`, then `mutations` mutations spread over the seeds; reports every input that
/// panicked.
fn replay(target: &str, run: fn(&[u8]), mutations: usize) {
    let seeds = seeds(target);
    let mut failures = Vec::new();
    let mut call = |data: &[u8], what: String| {
        if panic::catch_unwind(AssertUnwindSafe(|| run(data))).is_err() {
            failures.push(what);
        }
    };
    for (name, data) in &seeds {
        call(data, format!("seed {name}"));
    }
    let mut rng = Rng(0x6D61_696C_7374_6F72); // "mailstor"
    for i in 0..mutations {
        let (name, seed) = &seeds[i % seeds.len()];
        let (data, what) = mutate(&mut rng, seed);
        call(&data, format!("mutation {i} of seed {name}: {what}"));
    }
    assert!(failures.is_empty(), "{target}: {} inputs panicked:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn record_decoder_seeds_and_mutations() {
    replay("record_decoder", fuzzing::record_decoder, 400);
}

#[test]
fn header_decoder_seeds_and_mutations() {
    replay("header_decoder", fuzzing::header_decoder, 400);
}

#[test]
fn checkpoint_decoder_seeds_and_mutations() {
    replay("checkpoint_decoder", fuzzing::checkpoint_decoder, 400);
}

#[test]
fn chunk_inspection_seeds_and_mutations() {
    replay("chunk_inspection", fuzzing::chunk_inspection, 400);
}

#[test]
fn shipping_message_seeds_and_mutations() {
    replay("shipping_message", fuzzing::shipping_message, 400);
}

/// Recovery builds and mounts a database per input: the seeds and only a few mutations.
#[test]
fn recovery_seeds_and_mutations() {
    replay("recovery", fuzzing::recovery, 20);
}

// ---------------------------------------------------------------------------------------------------------
// Seed generation.

/// A generated seed: file name and contents.
type Seed = (&'static str, Vec<u8>);
type SeedMaker = fn() -> Vec<Seed>;

fn op(op: &KvOp) -> Vec<u8> {
    mailstore::internals::codec::encode_record(op, &[]).unwrap()
}

fn put(key: &[u8], value: &[u8]) -> Vec<u8> {
    op(&KvOp::Put { key: key.to_vec(), value: value.to_vec() })
}

/// Frames for `(lsn, payload)` pairs, sealed for `mailstore::internals::fuzzing::fixed_header`.
fn frames(records: &[(Lsn, Vec<u8>)]) -> Vec<u8> {
    let seal = RecordSeal::for_header(&mailstore::internals::fuzzing::fixed_header());
    let mut out = Vec::new();
    for (lsn, payload) in records {
        seal.encode_into(*lsn, 1_700_000_000_000_000 + *lsn, payload, &mut out);
    }
    out
}

const END_MARKER: [u8; FRAME_HEADER_LEN] = [0; FRAME_HEADER_LEN];

fn with_end(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.extend_from_slice(&END_MARKER);
    bytes
}

fn flip(mut bytes: Vec<u8>, at: usize) -> Vec<u8> {
    bytes[at] ^= 0x10;
    bytes
}

/// CRC32 (IEEE), to re-seal headers and slots after changing a field the encoders never write.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Sets `bytes[at..]` to `value` and recomputes the CRC stored at 124 over bytes 0..124 (both the generation
/// header and the checkpoint slot use that layout).
fn patch_and_reseal(bytes: &[u8], at: usize, value: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + value.len()].copy_from_slice(value);
    let crc = crc32(&b[..124]);
    b[124..128].copy_from_slice(&crc.to_le_bytes());
    b
}

fn record_decoder_seeds() -> Vec<Seed> {
    let three_ops = frames(&[
        (1, put(b"greeting", b"hello")),
        (2, op(&KvOp::Delete { key: b"greeting".to_vec() })),
        (3, op(&KvOp::CompareAndSwap { key: b"n".to_vec(), expected: Some(b"1".to_vec()), new: None })),
    ]);
    let one = frames(&[(1, put(b"greeting", b"hello"))]);
    let mut hostile_len = vec![3u8, 253]; // PutMany, then a u64 varint length
    hostile_len.extend_from_slice(&u64::MAX.to_le_bytes());
    let mut too_long = one.clone();
    too_long[0..4].copy_from_slice(&(MAX_RECORD_LEN as u32 + 1).to_le_bytes());
    let mut then_garbage = one.clone();
    then_garbage.extend_from_slice(b"\x07\x00\x00\x00garbage!\x02\x00\x00\x00\x00\x00\x00\x00xyz");
    vec![
        ("put_one_frame.bin", one.clone()),
        ("put_delete_cas_then_end_marker.bin", with_end(three_ops.clone())),
        (
            "put_many_and_cas_insert.bin",
            with_end(frames(&[
                (1, op(&KvOp::PutMany(vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), vec![0xEE; 40])]))),
                (2, op(&KvOp::CompareAndSwap { key: b"c".to_vec(), expected: None, new: Some(b"3".to_vec()) })),
            ])),
        ),
        ("valid_crc_payload_trailing_byte.bin", frames(&[(1, [put(b"k", b"v"), vec![0]].concat())])),
        ("valid_crc_payload_unknown_variant.bin", frames(&[(1, vec![7, 1, b'k'])])),
        ("valid_crc_payload_hostile_length.bin", frames(&[(1, hostile_len)])),
        ("valid_crc_payload_empty_key.bin", frames(&[(1, put(b"", b""))])),
        ("truncated_in_payload.bin", three_ops[..three_ops.len() - 3].to_vec()),
        ("truncated_in_frame_header.bin", one[..10].to_vec()),
        ("crc_bit_flipped.bin", flip(one.clone(), 5)),
        ("payload_bit_flipped.bin", flip(one.clone(), 20)),
        ("lsn_bit_flipped.bin", flip(one.clone(), 8)),
        ("length_out_of_range.bin", too_long),
        ("end_marker_only.bin", END_MARKER.to_vec()),
        ("valid_frame_then_garbage.bin", then_garbage),
    ]
}

fn header_decoder_seeds() -> Vec<Seed> {
    let gen1 = mailstore::internals::fuzzing::fixed_header().encode().to_vec();
    let gen7 = GenerationHeader {
        guid: Guid(*b"0123456789abcdef"),
        generation: 7,
        epoch: 3,
        first_lsn: 1000,
        created_micros: 1_700_000_000_000_000,
        prev_checksum: 0xDEAD_BEEF,
    };
    let gen7_with_records = {
        let mut b = gen7.encode().to_vec();
        RecordSeal::for_header(&gen7).encode_into(1000, 1_700_000_000_000_000, &put(b"k", b"v"), &mut b);
        with_end(b)
    };
    vec![
        ("valid_generation_1.bin", gen1.clone()),
        ("valid_generation_7_then_records.bin", gen7_with_records),
        ("short_127_bytes.bin", gen1[..HEADER_LEN - 1].to_vec()),
        ("bad_magic.bin", flip(gen1.clone(), 0)),
        ("unsupported_version_2_resealed.bin", patch_and_reseal(&gen1, 8, &2u32.to_le_bytes())),
        ("bad_checksum.bin", flip(gen1.clone(), 40)),
        ("bad_header_length_resealed.bin", patch_and_reseal(&gen1, 12, &64u32.to_le_bytes())),
        (
            "generation_zero.bin",
            GenerationHeader { generation: 0, ..mailstore::internals::fuzzing::fixed_header() }.encode().to_vec(),
        ),
        (
            "epoch_zero.bin",
            GenerationHeader { epoch: 0, ..mailstore::internals::fuzzing::fixed_header() }.encode().to_vec(),
        ),
        (
            "first_lsn_zero.bin",
            GenerationHeader { first_lsn: 0, ..mailstore::internals::fuzzing::fixed_header() }.encode().to_vec(),
        ),
        ("reserved_nonzero_resealed.bin", patch_and_reseal(&gen1, 80, b"reserved")),
    ]
}

fn checkpoint_decoder_seeds() -> Vec<Seed> {
    const STRIDE: usize = 4096;
    let slot = |sequence: u64, clean: bool| {
        Checkpoint { guid: Guid([0x5A; 16]), sequence, lsn: 40 + sequence, epoch: 1, backup_lsn: 7, clean }.encode()
    };
    let image = |a: &[u8], b: &[u8]| {
        let mut image = vec![0u8; STRIDE + b.len()];
        image[..a.len()].copy_from_slice(a);
        image[STRIDE..].copy_from_slice(b);
        image
    };
    let older = slot(4, false);
    let newer = slot(5, true);
    vec![
        ("two_slots_newer_at_4096.bin", image(&older, &newer)),
        ("two_slots_newer_torn.bin", image(&older, &flip(newer.to_vec(), 40))),
        ("slot0_only_clean.bin", newer.to_vec()),
        ("slot0_only_dirty.bin", older.to_vec()),
        ("slot0_short_127_bytes.bin", newer[..127].to_vec()),
        ("slot0_bad_magic.bin", flip(newer.to_vec(), 3)),
        ("slot0_bad_crc.bin", flip(newer.to_vec(), 125)),
        ("slot0_clean_byte_2_resealed.bin", patch_and_reseal(&newer, 64, &[2])),
        ("slot0_version_2_resealed.bin", patch_and_reseal(&newer, 8, &2u32.to_le_bytes())),
        ("slot0_reserved_nonzero_resealed.bin", patch_and_reseal(&newer, 12, &[0xFF; 4])),
    ]
}

fn recovery_seeds() -> Vec<Seed> {
    // `fuzzing::recovery` commits Put { k: v } at LSN 1 before replacing the records.
    let lsn1 = frames(&[(1, put(b"k", b"v"))]);
    let three = frames(&[(1, put(b"k", b"v")), (2, put(b"k2", b"v2")), (3, op(&KvOp::Delete { key: b"k".to_vec() }))]);
    let middle_damage = {
        let mut b = three.clone();
        let second = lsn1.len() + FRAME_HEADER_LEN + 2; // a payload byte of LSN 2
        b[second] ^= 0x01;
        with_end(b)
    };
    vec![
        ("empty.bin", Vec::new()),
        ("end_marker_only.bin", END_MARKER.to_vec()),
        ("zeros_512.bin", vec![0; 512]),
        ("partial_frame_header.bin", lsn1[..7].to_vec()),
        ("put_lsn1_then_end.bin", with_end(lsn1.clone())),
        ("put_lsn1_no_end_marker.bin", lsn1.clone()),
        ("lsn1_to_3_then_end.bin", with_end(three.clone())),
        ("lsn1_to_3_torn_in_lsn3.bin", three[..three.len() - 2].to_vec()),
        ("lsn2_damaged_lsn3_valid.bin", middle_damage),
        ("lsn_gap_1_then_3.bin", with_end(frames(&[(1, put(b"k", b"v")), (3, put(b"x", b"y"))]))),
        ("lsn2_unknown_variant.bin", with_end(frames(&[(1, put(b"k", b"v")), (2, vec![9, 9])]))),
        (
            "lsn2_cas_conflict.bin",
            with_end(frames(&[
                (1, put(b"k", b"v")),
                (
                    2,
                    op(&KvOp::CompareAndSwap {
                        key: b"k".to_vec(),
                        expected: Some(b"not v".to_vec()),
                        new: Some(b"w".to_vec()),
                    }),
                ),
            ])),
        ),
        ("lsn2_empty_key.bin", with_end(frames(&[(1, put(b"k", b"v")), (2, put(b"", b"x"))]))),
    ]
}

fn chunk_inspection_seeds() -> Vec<Seed> {
    use mailstore::internals::log::GenerationHeader;
    let fixed = mailstore::internals::fuzzing::fixed_header();
    let next = GenerationHeader { generation: 2, first_lsn: 4, prev_checksum: 0x1234_5678, ..fixed };
    let mode = |m: u8, bytes: Vec<u8>| {
        let mut out = vec![m];
        out.extend_from_slice(&bytes);
        out
    };
    let next_seal = RecordSeal::for_header(&next);
    let mut gen2 = next.encode().to_vec();
    next_seal.encode_into(4, 1_700_000_000_000_004, &put(b"a", b"b"), &mut gen2);
    next_seal.encode_into(5, 1_700_000_000_000_005, &put(b"c", b"d"), &mut gen2);
    let mut seeded = fixed.encode().to_vec();
    seeded.extend_from_slice(&frames(&[(1, put(b"k", b"v"))]));
    vec![
        ("new_generation_two_records.bin", mode(0, gen2.clone())),
        ("new_generation_torn.bin", mode(0, gen2[..gen2.len() - 3].to_vec())),
        ("new_generation_bad_chain.bin", mode(0, patch_and_reseal(&gen2, 64, &[0; 4]))),
        ("continuation_lsn4.bin", mode(1, frames(&[(4, put(b"x", b"y")), (5, put(b"z", b"w"))]))),
        ("continuation_lsn_gap.bin", mode(1, frames(&[(4, put(b"x", b"y")), (6, put(b"z", b"w"))]))),
        ("continuation_end_marker.bin", mode(1, with_end(frames(&[(4, put(b"x", b"y"))])))),
        ("seeded_copy_generation1.bin", mode(2, seeded)),
    ]
}

fn shipping_message_seeds() -> Vec<Seed> {
    use mailstore::replication::{Hello, ReadRequest, Refusal, Request, Response};
    let copy = Guid([3; 16]);
    let enc = |v: &dyn Fn() -> Vec<u8>| v();
    vec![
        (
            "hello.bin",
            enc(&|| {
                mailstore::internals::codec::encode(&Request::Hello(Hello { copy, known_epoch: 2, keep_lsn: 7 }))
                    .unwrap()
            }),
        ),
        (
            "read.bin",
            enc(&|| {
                mailstore::internals::codec::encode(&Request::Read(ReadRequest {
                    copy,
                    known_epoch: 1,
                    generation: 3,
                    offset: 128,
                    durable_lsn: 9,
                    keep_lsn: 10,
                    max_bytes: 1 << 20,
                    wait_millis: 0,
                    block_mode: true,
                }))
                .unwrap()
            }),
        ),
        ("headers.bin", mailstore::internals::codec::encode(&Request::Headers(1)).unwrap()),
        ("goodbye.bin", mailstore::internals::codec::encode(&Request::Goodbye(copy)).unwrap()),
        (
            "refused_fenced.bin",
            mailstore::internals::codec::encode(&Response::Refused(Refusal::Fenced { epoch: 3, current: 2 })).unwrap(),
        ),
        (
            "refused_gone.bin",
            mailstore::internals::codec::encode(&Response::Refused(Refusal::Gone { generation: 1, oldest: 5 }))
                .unwrap(),
        ),
    ]
}

#[test]
fn crc32_matches_the_encoders() {
    let header = mailstore::internals::fuzzing::fixed_header().encode();
    assert_eq!(patch_and_reseal(&header, 0, &header[..1]), header);
    let slot = Checkpoint { guid: Guid([1; 16]), sequence: 9, lsn: 8, epoch: 7, backup_lsn: 6, clean: true }.encode();
    assert_eq!(patch_and_reseal(&slot, 0, &slot[..1]), slot);
}

/// Writes the generated seeds into `fuzz/corpus/<target>/`. Run once after a format change:
/// `cargo test --test fuzz_seeds -- --ignored regenerate_seed_corpus`.
#[test]
#[ignore = "writes into fuzz/corpus"]
fn regenerate_seed_corpus() {
    let targets: [(&str, SeedMaker); 6] = [
        ("record_decoder", record_decoder_seeds),
        ("header_decoder", header_decoder_seeds),
        ("checkpoint_decoder", checkpoint_decoder_seeds),
        ("recovery", recovery_seeds),
        ("chunk_inspection", chunk_inspection_seeds),
        ("shipping_message", shipping_message_seeds),
    ];
    for (target, make) in targets {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in make() {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
