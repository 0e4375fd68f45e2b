//! Where message bytes live: in the log, where the operation that stored them wrote them, written once.
//!
//! An operation that stores a message ([`MailOp::Append`](super::MailOp::Append), `ReplaceItem`, `Submit`)
//! carries its bytes as the log record's attachment ([`StateMachine::attachment`](crate::engine::StateMachine)):
//! they are written by the log append, made durable by the log's `fdatasync`, shipped to passive copies with the
//! log, and never written again. The state keeps only where they are:
//!
//! * `mail.blob_refs` says, per content hash, how many items hold it, its body id (the LSN that stored it: the
//!   logical identity) and where its bytes lie ([`Place`]: generation and offset, the same on every copy) and
//!   their length;
//! * `mail.segments` counts, per generation, the bytes of the bodies in it that are still referenced and the bytes
//!   of bodies written into it in all. A generation is in the table exactly while some body in it is referenced:
//!   that is what [`referenced_generations`] tells the engine, which keeps such a generation (moved from `logs/`
//!   to `segments/` once the log no longer needs it) and deletes it once it is out of the table.
//!
//! Single-instance storage: a content already stored gains a reference and nothing else, however many times it
//! is delivered (the bytes of a second delivery are in the log too, counted as stored but dead from the start).
//! Reading a body reads its place in the file and checks the bytes against the content hash that names them, so
//! a damaged segment is reported as damage ([`Error::Corrupted`]), never served.

use std::collections::{BTreeMap, BTreeSet};

use heed::{RoTxn, RwTxn};

use crate::engine::table::Table;

use crate::engine::{Attachments, Place, SegmentUsage};
use crate::error::{Error, Result};
use crate::model::keys;
use crate::model::types::ContentHash;
use crate::types::Lsn;

/// The generation number of empty content, which lies nowhere (generations start at 1).
const NOWHERE: u64 = 0;

/// A `mail.blob_refs` value: reference count, body id, and where the bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlobRef {
    /// How many items hold the content.
    pub count: u32,
    /// Length of the bytes.
    pub len: u32,
    /// The LSN of the operation that stored the content (its logical identity).
    pub body: Lsn,
    /// Where the bytes are (generation [`NOWHERE`] for empty content).
    pub at: Place,
}

/// Encoded length of a [`BlobRef`]: 32 bytes. Every new message inserts one at a random place of
/// `mail.blob_refs` (the key is a hash), so its size sets how many pages a batch of deliveries rewrites: in a raw
/// heed test, 16-, 32- and 40-byte values gave 115k, 107–113k and 100–104k deliveries/s.
const BLOB_REF_LEN: usize = 32;

impl BlobRef {
    pub(crate) fn encode(&self) -> [u8; BLOB_REF_LEN] {
        let mut v = [0u8; BLOB_REF_LEN];
        v[..4].copy_from_slice(&self.count.to_be_bytes());
        v[4..8].copy_from_slice(&self.len.to_be_bytes());
        v[8..16].copy_from_slice(&self.body.to_be_bytes());
        v[16..24].copy_from_slice(&self.at.generation.to_be_bytes());
        v[24..].copy_from_slice(&self.at.offset.to_be_bytes());
        v
    }

    pub(crate) fn decode(v: &[u8]) -> heed::Result<Self> {
        if v.len() != BLOB_REF_LEN {
            return Err(heed::Error::Decoding("a mail.blob_refs value has the wrong length".into()));
        }
        Ok(BlobRef {
            count: keys::u32_at(v, 0),
            len: keys::u32_at(v, 4),
            body: keys::u64_at(v, 8),
            at: Place { generation: keys::u64_at(v, 16), offset: keys::u64_at(v, 24) },
        })
    }
}

/// A message body an operation stores: its length and where its record's attachment put it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NewBody {
    /// Length in bytes.
    pub len: u32,
    /// Where the bytes lie.
    pub at: Place,
    /// The LSN of the operation storing it (its body id).
    pub body: Lsn,
}

/// A `mail.segments` value: bytes of the generation's bodies still referenced, bytes of bodies written into it.
fn segment_stats(live: u64, stored: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&live.to_be_bytes());
    v[8..].copy_from_slice(&stored.to_be_bytes());
    v
}

fn read_segment_stats(v: &[u8]) -> heed::Result<(u64, u64)> {
    if v.len() != 16 {
        return Err(heed::Error::Decoding("a mail.segments value has the wrong length".into()));
    }
    Ok((keys::u64_at(v, 0), keys::u64_at(v, 8)))
}

/// The tables the references live in.
#[derive(Clone, Copy)]
pub(crate) struct Tables {
    pub blob_refs: Table,
    pub segments: Table,
    pub placed: Table,
}

/// A `mail.placed` key: where a stored body lies.
fn placed_key(at: Place) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&at.generation.to_be_bytes());
    k[8..].copy_from_slice(&at.offset.to_be_bytes());
    k
}

/// The most a compaction moves in one operation (one log record).
pub(crate) const COMPACTION_BYTES: u64 = 8 << 20;

impl Tables {
    /// Adds `live` referenced and `stored` written bytes to the generation's counts.
    fn count(&self, txn: &mut RwTxn<'_>, generation: u64, live: u64, stored: u64) -> heed::Result<()> {
        let key = generation.to_be_bytes();
        let (l, s) = match self.segments.get(txn, &key)? {
            Some(v) => read_segment_stats(v)?,
            // Bytes dead from the start in a generation holding nothing referenced: nothing to keep it for.
            None if live == 0 => return Ok(()),
            None => (0, 0),
        };
        self.segments.put(txn, &key, &segment_stats(l + live, s + stored))
    }

    /// Takes `len` referenced bytes from the generation's count; a generation with none left leaves the table.
    fn release(&self, txn: &mut RwTxn<'_>, generation: u64, len: u64) -> heed::Result<()> {
        let key = generation.to_be_bytes();
        let Some(v) = self.segments.get(txn, &key)? else {
            return Err(heed::Error::Decoding("a referenced body's generation has no mail.segments entry".into()));
        };
        let (live, stored) = read_segment_stats(v)?;
        match live.checked_sub(len) {
            Some(0) => self.segments.delete(txn, &key).map(drop),
            Some(live) => self.segments.put(txn, &key, &segment_stats(live, stored)),
            None => Err(heed::Error::Decoding("mail.segments counts fewer referenced bytes than it holds".into())),
        }
    }

    /// One more reference to `hash`. `new` is the body the operation stores (its bytes are in its record), or
    /// `None` when the caller knows the content is stored (a copy or move).
    pub(crate) fn add_ref(&self, txn: &mut RwTxn<'_>, hash: &[u8; 32], new: Option<NewBody>) -> heed::Result<()> {
        let existing = match new {
            // New content, a delivery's usual case, costs one B-tree descent.
            Some(b) => {
                let at = if b.len == 0 { Place { generation: NOWHERE, offset: 0 } } else { b.at };
                let r = BlobRef { count: 1, len: b.len, body: b.body, at };
                let existing = self.insert_new(txn, hash, &r)?;
                if existing.is_none() && b.len > 0 {
                    self.placed.put(txn, &placed_key(b.at), hash)?;
                }
                if b.len > 0 {
                    // Stored either way (the bytes are in the log); referenced only if the content is new.
                    let live = if existing.is_none() { u64::from(b.len) } else { 0 };
                    self.count(txn, b.at.generation, live, u64::from(b.len))?;
                }
                match existing {
                    None => return Ok(()),
                    Some(r) => r,
                }
            }
            None => match self.blob_refs.get(txn, hash)? {
                Some(v) => BlobRef::decode(v)?,
                None => return Err(heed::Error::Decoding("referenced message content is missing".into())),
            },
        };
        let count = existing
            .count
            .checked_add(1)
            .ok_or_else(|| heed::Error::Encoding("a message content held by 2^32 items".into()))?;
        self.blob_refs.put(txn, hash, &BlobRef { count, ..existing }.encode())
    }

    /// Inserts `r` for `hash` unless the content is stored: `None` when inserted, else the existing reference.
    fn insert_new(&self, txn: &mut RwTxn<'_>, hash: &[u8; 32], r: &BlobRef) -> heed::Result<Option<BlobRef>> {
        self.blob_refs.get_or_put(txn, hash, &r.encode())?.map(BlobRef::decode).transpose()
    }

    /// One reference fewer to `hash`; the last one releases its bytes from its generation's count.
    pub(crate) fn drop_ref(&self, txn: &mut RwTxn<'_>, hash: &[u8; 32]) -> heed::Result<()> {
        let Some(v) = self.blob_refs.get(txn, hash)? else { return Ok(()) };
        let r = BlobRef::decode(v)?;
        if r.count > 1 {
            return self.blob_refs.put(txn, hash, &BlobRef { count: r.count - 1, ..r }.encode());
        }
        self.blob_refs.delete(txn, hash)?;
        if r.len == 0 {
            return Ok(());
        }
        self.placed.delete(txn, &placed_key(r.at))?;
        self.release(txn, r.at.generation, u64::from(r.len))
    }

    /// Moves the content `hash` (`len` bytes) from generation `from` to `to`, where a compaction wrote its bytes
    /// again; does nothing but count the bytes written when the content is gone or lies elsewhere by now (it was
    /// expunged, or moved, after the compaction read it). Returns whether it moved.
    pub(crate) fn relocate(
        &self,
        txn: &mut RwTxn<'_>,
        hash: &[u8; 32],
        len: u32,
        from: u64,
        to: Place,
    ) -> heed::Result<bool> {
        let current = self.blob_refs.get(txn, hash)?.map(BlobRef::decode).transpose()?;
        let Some(r) = current.filter(|r| r.at.generation == from && r.len == len && len > 0) else {
            self.count(txn, to.generation, 0, u64::from(len))?;
            return Ok(false);
        };
        self.placed.delete(txn, &placed_key(r.at))?;
        self.placed.put(txn, &placed_key(to), hash)?;
        self.blob_refs.put(txn, hash, &BlobRef { at: to, ..r }.encode())?;
        self.release(txn, from, u64::from(len))?;
        self.count(txn, to.generation, u64::from(len), u64::from(len))?;
        Ok(true)
    }
}

/// The reference of the content `hash`; `None` when no item holds it.
pub(crate) fn locate(t: &Tables, txn: &RoTxn<'_>, hash: &[u8; 32]) -> heed::Result<Option<BlobRef>> {
    t.blob_refs.get(txn, hash)?.map(BlobRef::decode).transpose()
}

/// Reads the bytes `r` names, checking them against `hash`: bytes that do not hash to it are damage.
pub(crate) fn read(files: &Attachments, r: &BlobRef, hash: &[u8; 32]) -> Result<Vec<u8>> {
    if r.len == 0 {
        return Ok(Vec::new());
    }
    let raw = files.read(r.at, r.len)?;
    if ContentHash::of(&raw).as_bytes() != hash {
        return Err(Error::corrupted(
            files.segment_path(r.at.generation),
            r.at.offset,
            format!(
                "message content {} (body {}, {} bytes) reads back as bytes that hash to {}",
                blake3::Hash::from_bytes(*hash).to_hex(),
                r.body,
                r.len,
                blake3::hash(&raw).to_hex()
            ),
        ));
    }
    Ok(raw)
}

/// A stored body as a compaction finds it: its content hash and its reference.
pub(crate) type Placed = ([u8; 32], BlobRef);

/// The generation below `below` most worth compacting — less than half of the bytes of bodies written into it
/// still referenced, the most dead bytes — and its referenced bodies in the order they lie, up to
/// [`COMPACTION_BYTES`] (at least one): (generation, [(hash, reference)]).
pub(crate) fn compaction_candidate(
    t: &Tables,
    txn: &RoTxn<'_>,
    below: u64,
) -> heed::Result<Option<(u64, Vec<Placed>)>> {
    let mut best: Option<(u64, u64)> = None;
    for entry in t.segments.iter(txn)? {
        let (key, value) = entry?;
        let generation = keys::u64_at(key, 0);
        if generation >= below {
            break;
        }
        let (live, stored) = read_segment_stats(value)?;
        let dead = stored.saturating_sub(live);
        if compactable(live, stored) && best.is_none_or(|(_, most)| dead > most) {
            best = Some((generation, dead));
        }
    }
    let Some((generation, _)) = best else { return Ok(None) };
    let mut bodies = Vec::new();
    let mut bytes = 0u64;
    for entry in t.placed.prefix_iter(txn, &generation.to_be_bytes())? {
        let (_, hash) = entry?;
        let hash: [u8; 32] =
            hash.try_into().map_err(|_| heed::Error::Decoding("a mail.placed value is not a content hash".into()))?;
        let Some(r) = locate(t, txn, &hash)? else {
            return Err(heed::Error::Decoding("mail.placed names a content without a reference".into()));
        };
        if !bodies.is_empty() && bytes + u64::from(r.len) > COMPACTION_BYTES {
            break;
        }
        bytes += u64::from(r.len);
        bodies.push((hash, r));
    }
    Ok(Some((generation, bodies)))
}

/// Whether compaction takes a generation: less than half of the bytes of bodies written into it still referenced.
fn compactable(live: u64, stored: u64) -> bool {
    live * 2 < stored
}

/// Per generation holding referenced bodies: their bytes still referenced, in all, and whether compaction takes it.
pub(crate) fn segment_usage(t: &Tables, txn: &RoTxn<'_>) -> heed::Result<BTreeMap<u64, SegmentUsage>> {
    let mut out = BTreeMap::new();
    for entry in t.segments.iter(txn)? {
        let (key, value) = entry?;
        let (live, stored) = read_segment_stats(value)?;
        out.insert(keys::u64_at(key, 0), SegmentUsage { live, stored, compactable: compactable(live, stored) });
    }
    Ok(out)
}

/// The generations holding referenced bodies (what the engine must keep).
pub(crate) fn referenced_generations(t: &Tables, txn: &RoTxn<'_>) -> heed::Result<BTreeSet<u64>> {
    let mut out = BTreeSet::new();
    for entry in t.segments.iter(txn)? {
        out.insert(keys::u64_at(entry?.0, 0));
    }
    Ok(out)
}

/// Checks every reference and generation count; pushes what is wrong onto `problems` and returns each content's
/// reference count (for the caller to compare with the items). Checked: each reference's bytes can be read where
/// it says and hash to the content's name; each generation's count of referenced bytes matches the references
/// into it, and no generation without referenced bytes is counted.
pub(crate) fn verify(
    t: &Tables,
    txn: &RoTxn<'_>,
    files: &Attachments,
    problems: &mut Vec<String>,
) -> heed::Result<BTreeMap<[u8; 32], u64>> {
    let mut counts = BTreeMap::new();
    let mut referenced: BTreeMap<u64, u64> = BTreeMap::new();
    let mut placed: BTreeMap<[u8; 16], [u8; 32]> = BTreeMap::new();
    for entry in t.blob_refs.iter(txn)? {
        let (key, value) = entry?;
        let Ok(hash) = <[u8; 32]>::try_from(key) else {
            problems.push(format!("a mail.blob_refs key is {} bytes long, not 32", key.len()));
            continue;
        };
        let hex = blake3::Hash::from_bytes(hash).to_hex();
        let r = match BlobRef::decode(value) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("message content {hex}: {e}"));
                continue;
            }
        };
        counts.insert(hash, u64::from(r.count));
        if r.len > 0 {
            *referenced.entry(r.at.generation).or_default() += u64::from(r.len);
            placed.insert(placed_key(r.at), hash);
        }
        if let Err(e) = read(files, &r, &hash) {
            problems.push(format!(
                "message content {hex} (body {}, generation {} offset {}): {e}",
                r.body, r.at.generation, r.at.offset
            ));
        }
    }
    for entry in t.segments.iter(txn)? {
        let (key, value) = entry?;
        let generation = keys::u64_at(key, 0);
        let live = referenced.remove(&generation).unwrap_or(0);
        match read_segment_stats(value) {
            Err(e) => problems.push(format!("generation {generation}: {e}")),
            Ok((said, stored)) if said != live || live > stored => problems.push(format!(
                "generation {generation}: mail.segments says {said} of {stored} bytes referenced; the references say {live}"
            )),
            Ok((0, _)) => problems.push(format!("generation {generation} is counted with no referenced bytes")),
            Ok(_) => {}
        }
    }
    for (generation, live) in referenced {
        problems.push(format!("generation {generation} holds {live} referenced bytes but has no mail.segments entry"));
    }
    // `mail.placed` lists exactly where every stored body lies.
    for entry in t.placed.iter(txn)? {
        let (key, value) = entry?;
        let said = <[u8; 16]>::try_from(key).ok().and_then(|k| placed.remove(&k).map(|h| (k, h)));
        match said {
            Some((_, hash)) if hash[..] == *value => {}
            _ => problems.push(format!(
                "mail.placed names generation {} offset {} for a body no reference puts there",
                keys::u64_at(key, 0),
                key.get(8..16).map_or(0, |o| keys::u64_at(o, 0))
            )),
        }
    }
    if !placed.is_empty() {
        problems.push(format!("{} stored bodies are missing from mail.placed", placed.len()));
    }
    Ok(counts)
}
