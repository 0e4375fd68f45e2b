//! Where message bytes live: packed into **chunks** in `mail.bodies`, one LMDB value holding the bytes of many
//! messages, instead of one value per message.
//!
//! LMDB stores a value larger than half a page in overflow pages of its own, rounded up to whole 4 KiB pages,
//! and every value costs a B-tree entry. A 4,098-byte message took two overflow pages (8 KiB written for 4 KiB of
//! mail) plus a leaf entry. Packing the messages a transaction stores into one value writes them back to back:
//! in a raw heed test of the state writes of 150,000 deliveries into a 130,000-delivery environment, 60–62k →
//! 81–98k deliveries/s (ARCHITECTURE.md, "Message bytes are packed into chunks").
//!
//! * A transaction's new bytes are gathered in memory ([`Pending`]) while its operations are applied, and
//!   written as one chunk (or several of at most [`CHUNK_TARGET`] bytes) when the transaction finishes
//!   ([`StateMachine::finish`](crate::engine::StateMachine::finish)), before it commits. Everything stays inside
//!   the LMDB transaction: a crash, an abort or a rejected operation leaves no chunk behind.
//! * A chunk's key is its id (u64, one more than the last chunk's when it is written); its value is a directory
//!   (content hash and offset of each body, in the order stored) followed by the bytes.
//! * `mail.blob_refs` says, per content hash, how many items hold it, its body id (the LSN that stored it: the
//!   logical identity) and where its bytes are (chunk, offset, length: the physical place).
//! * `mail.chunks` counts, per chunk, the bytes still referenced and the bytes stored. When the last reference to
//!   a content goes, its bytes stay in the chunk until the chunk is empty (then it is deleted) or less than half of
//!   it is still referenced: then the live bodies are copied into the transaction's pending chunk and the old one
//!   is deleted (compaction), so at most half of the space of a chunk that is not being filled is dead.
//!
//! Where a body lies depends on how operations were batched into transactions, which differs between an active
//! and its copies, and between a run and its recovery: that is physical layout, like LMDB's page numbers. The
//! logical state (which contents exist, how often they are referenced, their body ids and bytes) is the same
//! everywhere, and that is what [`MailStore::digest`](super::MailStore::digest) hashes.

use heed::types::Bytes;
use heed::{Database, RoTxn, RwTxn};
use std::io::Write;

use crate::model::keys;
use crate::model::types::ContentHash;
use crate::types::Lsn;

/// A chunk is written when the bytes gathered for it reach this many (a message larger than this gets a chunk of
/// its own). Measured at 64 KiB, 256 KiB and 1 MiB: 81k, 86–89k and 88–98k deliveries/s; a compaction copies at
/// most half a chunk, so the middle one.
pub(crate) const CHUNK_TARGET: usize = 256 << 10;

/// The chunk id of empty content, which is stored nowhere (chunk ids start at 1).
pub(crate) const NO_CHUNK: u64 = 0;

/// One directory entry of a chunk: content hash, offset of its bytes.
const DIR_ENTRY: usize = 36;

/// A `mail.blob_refs` value: reference count, body id, and where the bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlobRef {
    /// How many items hold the content.
    pub count: u64,
    /// The LSN of the operation that stored the content (its logical identity).
    pub body: Lsn,
    /// The chunk holding the bytes (its `mail.bodies` key, big-endian).
    pub chunk: u64,
    /// Offset of the bytes in the chunk's byte area (after its directory).
    pub offset: u32,
    /// Length of the bytes.
    pub len: u32,
}

/// Encoded length of a [`BlobRef`]: 32 bytes. Every new message inserts one at a random place of
/// `mail.blob_refs` (the key is a hash), so its size sets how many pages a batch of deliveries rewrites: in a raw
/// heed test, 16-, 32- and 40-byte values gave 115k, 107–113k and 100–104k deliveries/s.
const BLOB_REF_LEN: usize = 32;

impl BlobRef {
    pub(crate) fn encode(&self) -> [u8; BLOB_REF_LEN] {
        let mut v = [0u8; BLOB_REF_LEN];
        v[..8].copy_from_slice(&self.count.to_be_bytes());
        v[8..16].copy_from_slice(&self.body.to_be_bytes());
        v[16..24].copy_from_slice(&self.chunk.to_be_bytes());
        v[24..28].copy_from_slice(&self.offset.to_be_bytes());
        v[28..].copy_from_slice(&self.len.to_be_bytes());
        v
    }

    pub(crate) fn decode(v: &[u8]) -> heed::Result<Self> {
        if v.len() != BLOB_REF_LEN {
            return Err(heed::Error::Decoding("a mail.blob_refs value has the wrong length".into()));
        }
        Ok(BlobRef {
            count: keys::u64_at(v, 0),
            body: keys::u64_at(v, 8),
            chunk: keys::u64_at(v, 16),
            offset: keys::u32_at(v, 24),
            len: keys::u32_at(v, 28),
        })
    }
}

/// Reads a `mail.chunks` value: (bytes still referenced, bytes stored).
fn read_chunk_stats(v: &[u8]) -> (u64, u64) {
    (keys::u64_at(v, 0), keys::u64_at(v, 8))
}

/// The entries of a chunk directory: (content hash, offset) of each body, in the order stored.
fn directory_entries(directory: &[u8]) -> impl Iterator<Item = ([u8; 32], u32)> + '_ {
    directory.chunks_exact(DIR_ENTRY).map(|e| {
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&e[..32]);
        (hash, keys::u32_at(e, 32))
    })
}

/// A `mail.chunks` value: bytes of the chunk still referenced, bytes stored in it.
fn chunk_stats(live: u64, stored: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&live.to_be_bytes());
    v[8..].copy_from_slice(&stored.to_be_bytes());
    v
}

/// A stored chunk, read in place.
pub(crate) struct Chunk<'t> {
    directory: &'t [u8],
    bytes: &'t [u8],
}

impl<'t> Chunk<'t> {
    /// Splits a `mail.bodies` value into its directory and byte area.
    pub(crate) fn parse(value: &'t [u8]) -> heed::Result<Self> {
        let bad = || heed::Error::Decoding("a mail.bodies chunk is malformed".into());
        let n = value.get(..4).map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]])).ok_or_else(bad)? as usize;
        let base = n.checked_mul(DIR_ENTRY).and_then(|d| d.checked_add(4)).ok_or_else(bad)?;
        if base > value.len() {
            return Err(bad());
        }
        Ok(Chunk { directory: &value[4..base], bytes: &value[base..] })
    }

    /// The bytes at `offset`, `len` long; `None` when the range lies outside the chunk.
    pub(crate) fn get(&self, offset: u32, len: u32) -> Option<&'t [u8]> {
        let start = offset as usize;
        self.bytes.get(start..start.checked_add(len as usize)?)
    }

    /// The directory: (content hash, offset) of every body stored in the chunk, live or not.
    pub(crate) fn entries(&self) -> impl Iterator<Item = ([u8; 32], u32)> + 't {
        directory_entries(self.directory)
    }

    /// Length of the byte area.
    pub(crate) fn stored(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// The tables the chunks live in.
#[derive(Clone, Copy)]
pub(crate) struct Tables {
    pub bodies: Database<'static, Bytes, Bytes>,
    pub chunks: Database<'static, Bytes, Bytes>,
    pub blob_refs: Database<'static, Bytes, Bytes>,
}

/// The bytes the current write transaction stores, gathered into the next chunk. Only the writer thread touches
/// it (LMDB has one write transaction at a time), between the first `apply` of a transaction and its
/// [`Pending::finish`] or [`Pending::abandon`].
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// The LSN of the operation being applied (set before each `apply`).
    lsn: Lsn,
    /// Id of the chunk being gathered, if any.
    key: Option<u64>,
    /// The id the next chunk gets; read from `mail.bodies` (its last key + 1) when a transaction first needs it.
    next: Option<u64>,
    /// (hash, offset) of every body gathered.
    directory: Vec<u8>,
    /// The bytes gathered.
    bytes: Vec<u8>,
    /// Bytes of `bytes` still referenced.
    live: u64,
}

impl Pending {
    /// Notes the LSN of the operation about to be applied.
    pub(crate) fn begin(&mut self, lsn: Lsn) {
        self.lsn = lsn;
    }

    /// Forgets everything gathered (the transaction is aborted).
    pub(crate) fn abandon(&mut self) {
        self.key = None;
        self.next = None;
        self.directory.clear();
        self.bytes.clear();
        self.live = 0;
    }

    /// Where `len` bytes added now would go (flushing the chunk being gathered first if they would overflow it);
    /// nothing is added until [`append`](Self::append). Empty content takes no place in any chunk: it is chunk
    /// [`NO_CHUNK`].
    fn reserve(&mut self, t: &Tables, txn: &mut RwTxn<'_>, len: usize) -> heed::Result<BlobRef> {
        let len32 = u32::try_from(len).map_err(|_| heed::Error::Encoding("a message over 4 GiB".into()))?;
        if len == 0 {
            return Ok(BlobRef { count: 1, body: self.lsn, chunk: NO_CHUNK, offset: 0, len: 0 });
        }
        if self.key.is_some() && !self.bytes.is_empty() && self.bytes.len() + len > CHUNK_TARGET {
            self.flush(t, txn)?;
        }
        let key = match self.key {
            Some(key) => key,
            None => {
                // A chunk deleted at the end of the table may see its id again: harmless, as nothing refers to a
                // deleted chunk (it goes when its last reference does, or after its references moved).
                let id = match self.next {
                    Some(id) => id,
                    None => t.bodies.last(txn)?.map_or(1, |(k, _)| keys::u64_at(k, 0) + 1),
                };
                self.next = Some(id + 1);
                *self.key.insert(id)
            }
        };
        let offset =
            u32::try_from(self.bytes.len()).map_err(|_| heed::Error::Encoding("a chunk grew past 4 GiB".into()))?;
        Ok(BlobRef { count: 1, body: self.lsn, chunk: key, offset, len: len32 })
    }

    /// Adds `raw`, whose content hash is `hash`, where [`reserve`](Self::reserve) just said (`at`).
    fn append(&mut self, hash: &[u8; 32], raw: &[u8], at: &BlobRef) {
        if at.len == 0 {
            return;
        }
        self.directory.extend_from_slice(hash);
        self.directory.extend_from_slice(&at.offset.to_be_bytes());
        self.bytes.extend_from_slice(raw);
        self.live += u64::from(at.len);
    }

    /// Adds `raw`, whose content hash is `hash`, to the chunk being gathered; returns where it will be.
    fn push(&mut self, t: &Tables, txn: &mut RwTxn<'_>, hash: &[u8; 32], raw: &[u8]) -> heed::Result<BlobRef> {
        let at = self.reserve(t, txn, raw.len())?;
        self.append(hash, raw, &at);
        Ok(at)
    }

    /// Ends the transaction's gathering: writes what is left. Called once per transaction, before it commits.
    pub(crate) fn finish(&mut self, t: &Tables, txn: &mut RwTxn<'_>) -> heed::Result<()> {
        self.flush(t, txn)?;
        self.next = None;
        Ok(())
    }

    /// Writes the chunk being gathered (unless nothing of it is referenced any more) and starts afresh.
    fn flush(&mut self, t: &Tables, txn: &mut RwTxn<'_>) -> heed::Result<()> {
        let Some(key) = self.key.take() else { return Ok(()) };
        if self.live > 0 && self.live * 2 < self.bytes.len() as u64 {
            self.drop_dead(t, txn, key)?;
        }
        if self.live > 0 {
            let n = (self.directory.len() / DIR_ENTRY) as u32;
            let total = 4 + self.directory.len() + self.bytes.len();
            let (directory, bytes) = (&self.directory, &self.bytes);
            let key = key.to_be_bytes();
            t.bodies.put_reserved(txn, &key, total, |space| {
                space.write_all(&n.to_be_bytes())?;
                space.write_all(directory)?;
                space.write_all(bytes)
            })?;
            t.chunks.put(txn, &key, &chunk_stats(self.live, self.bytes.len() as u64))?;
        }
        self.directory.clear();
        self.bytes.clear();
        self.live = 0;
        // After a message larger than a chunk, give its buffer back rather than keep it for the process's life.
        if self.bytes.capacity() > 4 * CHUNK_TARGET {
            self.bytes = Vec::new();
        }
        Ok(())
    }

    /// Leaves out of the chunk being gathered the bodies whose last reference went in this same transaction
    /// (when they are more than half of it), so that every chunk written is at least half referenced.
    fn drop_dead(&mut self, t: &Tables, txn: &mut RwTxn<'_>, key: u64) -> heed::Result<()> {
        let directory = std::mem::take(&mut self.directory);
        let bytes = std::mem::take(&mut self.bytes);
        for (hash, offset) in directory_entries(&directory) {
            let Some(r) = t.blob_refs.get(txn, &hash)?.map(BlobRef::decode).transpose()? else { continue };
            if r.chunk != key || r.offset != offset {
                continue;
            }
            let raw = bytes
                .get(offset as usize..offset as usize + r.len as usize)
                .ok_or_else(|| heed::Error::Decoding("a gathered body lies outside its chunk".into()))?;
            let moved =
                u32::try_from(self.bytes.len()).map_err(|_| heed::Error::Encoding("a chunk grew past 4 GiB".into()))?;
            self.directory.extend_from_slice(&hash);
            self.directory.extend_from_slice(&moved.to_be_bytes());
            self.bytes.extend_from_slice(raw);
            if moved != offset {
                t.blob_refs.put(txn, &hash, &BlobRef { offset: moved, ..r }.encode())?;
            }
        }
        Ok(())
    }

    /// One more reference to `hash`, storing `raw` (its bytes) if it is new. `raw` is `None` when the caller
    /// knows the content is stored (a copy or move).
    pub(crate) fn add_ref(
        &mut self,
        t: &Tables,
        txn: &mut RwTxn<'_>,
        hash: &[u8; 32],
        raw: Option<&[u8]>,
    ) -> heed::Result<()> {
        let existing = match raw {
            // New content, a delivery's usual case, costs one B-tree descent: its reference goes in where its
            // bytes will, unless the content is already stored.
            Some(raw) => {
                let at = self.reserve(t, txn, raw.len())?;
                match t.blob_refs.get_or_put(txn, hash, &at.encode())? {
                    None => {
                        self.append(hash, raw, &at);
                        return Ok(());
                    }
                    Some(v) => BlobRef::decode(v)?,
                }
            }
            None => match t.blob_refs.get(txn, hash)? {
                Some(v) => BlobRef::decode(v)?,
                None => return Err(heed::Error::Decoding("referenced message content is missing".into())),
            },
        };
        t.blob_refs.put(txn, hash, &BlobRef { count: existing.count + 1, ..existing }.encode())
    }

    /// One reference fewer to `hash`; the last one releases its bytes (see the module documentation).
    pub(crate) fn drop_ref(&mut self, t: &Tables, txn: &mut RwTxn<'_>, hash: &[u8; 32]) -> heed::Result<()> {
        let Some(v) = t.blob_refs.get(txn, hash)? else { return Ok(()) };
        let r = BlobRef::decode(v)?;
        if r.count > 1 {
            return t.blob_refs.put(txn, hash, &BlobRef { count: r.count - 1, ..r }.encode());
        }
        t.blob_refs.delete(txn, hash)?;
        if r.len == 0 {
            return Ok(());
        }
        if self.key == Some(r.chunk) {
            self.live = self.live.saturating_sub(u64::from(r.len));
            return Ok(());
        }
        let chunk = r.chunk.to_be_bytes();
        let Some(stats) = t.chunks.get(txn, &chunk)? else {
            return Err(heed::Error::Decoding("a referenced chunk has no mail.chunks entry".into()));
        };
        let (live, stored) = read_chunk_stats(stats);
        let live = live.saturating_sub(u64::from(r.len));
        if live == 0 {
            t.bodies.delete(txn, &chunk)?;
            t.chunks.delete(txn, &chunk)?;
        } else if live * 2 < stored {
            self.compact(t, txn, r.chunk)?;
        } else {
            t.chunks.put(txn, &chunk, &chunk_stats(live, stored))?;
        }
        Ok(())
    }

    /// Moves the bodies of `chunk` that are still referenced into the chunk being gathered and deletes it.
    fn compact(&mut self, t: &Tables, txn: &mut RwTxn<'_>, chunk: u64) -> heed::Result<()> {
        let key = chunk.to_be_bytes();
        let Some(value) = t.bodies.get(txn, &key)? else {
            return Err(heed::Error::Decoding("a chunk with references is missing".into()));
        };
        // Copied out: the moves below write to the transaction that `value` borrows from.
        let value = value.to_vec();
        let old = Chunk::parse(&value)?;
        for (hash, offset) in old.entries() {
            let Some(r) = t.blob_refs.get(txn, &hash)?.map(BlobRef::decode).transpose()? else { continue };
            // The directory lists every body ever stored here; only those whose reference still points here move.
            if r.chunk != chunk || r.offset != offset {
                continue;
            }
            let raw = old
                .get(r.offset, r.len)
                .ok_or_else(|| heed::Error::Decoding("a body lies outside its chunk".into()))?;
            let moved = self.push(t, txn, &hash, raw)?;
            t.blob_refs.put(txn, &hash, &BlobRef { count: r.count, body: r.body, ..moved }.encode())?;
        }
        t.bodies.delete(txn, &key)?;
        t.chunks.delete(txn, &key)?;
        Ok(())
    }
}

/// The bytes of the content `hash`, read in place; `None` when no item holds it. A reference whose bytes are not
/// where it says is damage, reported as a decoding error (`mailstore check` names it).
pub(crate) fn get<'t>(t: &Tables, txn: &'t RoTxn<'_>, hash: &[u8; 32]) -> heed::Result<Option<&'t [u8]>> {
    let Some(v) = t.blob_refs.get(txn, hash)? else { return Ok(None) };
    locate(t, txn, &BlobRef::decode(v)?).map(Some)
}

/// The bytes `r` points at.
pub(crate) fn locate<'t>(t: &Tables, txn: &'t RoTxn<'_>, r: &BlobRef) -> heed::Result<&'t [u8]> {
    if r.len == 0 {
        return Ok(&[]);
    }
    let value = t
        .bodies
        .get(txn, &r.chunk.to_be_bytes())?
        .ok_or_else(|| heed::Error::Decoding("a referenced chunk is missing".into()))?;
    Chunk::parse(value)?
        .get(r.offset, r.len)
        .ok_or_else(|| heed::Error::Decoding("message bytes lie outside their chunk".into()))
}

/// Checks every reference and chunk; pushes what is wrong onto `problems` and returns each content's reference
/// count (for the caller to compare with the items). Checked: each reference's bytes are where it says and hash to
/// the content's name; each chunk parses, has its `mail.chunks` entry, and that entry matches the references into
/// it (bytes referenced) and the chunk (bytes stored); no chunk is less than half referenced (compaction keeps
/// them so) or not at all.
pub(crate) fn verify(
    t: &Tables,
    txn: &RoTxn<'_>,
    problems: &mut Vec<String>,
) -> heed::Result<std::collections::BTreeMap<[u8; 32], u64>> {
    use std::collections::BTreeMap;
    let mut counts = BTreeMap::new();
    // Bytes referenced per chunk, from the references.
    let mut referenced: BTreeMap<u64, u64> = BTreeMap::new();
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
        counts.insert(hash, r.count);
        if r.len > 0 {
            *referenced.entry(r.chunk).or_default() += u64::from(r.len);
        }
        let (body, chunk) = (r.body, r.chunk);
        match locate(t, txn, &r) {
            Err(e) => problems.push(format!("message content {hex} (body {body}, chunk {chunk}) is unreadable: {e}")),
            // Every stored copy is the content its hash names (the hash was computed before logging).
            Ok(raw) if ContentHash::of(raw).as_bytes() != &hash => problems.push(format!(
                "message content {hex} is stored as body {body} in chunk {chunk}, whose {} bytes hash to {}",
                raw.len(),
                blake3::hash(raw).to_hex()
            )),
            Ok(_) => {}
        }
    }
    for entry in t.bodies.iter(txn)? {
        let (key, value) = entry?;
        let id = keys::u64_at(key, 0);
        let stored = match Chunk::parse(value) {
            Ok(chunk) => chunk.stored(),
            Err(e) => {
                problems.push(format!("chunk {id}: {e}"));
                continue;
            }
        };
        let live = referenced.remove(&id).unwrap_or(0);
        match t.chunks.get(txn, key)? {
            None => problems.push(format!("chunk {id} ({stored} bytes) has no mail.chunks entry")),
            Some(stats) if read_chunk_stats(stats) != (live, stored) => {
                let (said_live, said_stored) = read_chunk_stats(stats);
                problems.push(format!(
                    "chunk {id}: mail.chunks says {said_live} of {said_stored} bytes referenced; the references and the chunk say {live} of {stored}"
                ))
            }
            Some(_) if live == 0 => problems.push(format!("chunk {id} holds no referenced bytes")),
            Some(_) if live * 2 < stored => {
                problems.push(format!("chunk {id} is less than half referenced ({live} of {stored} bytes)"))
            }
            Some(_) => {}
        }
    }
    let (chunks, stats) = (t.bodies.len(txn)?, t.chunks.len(txn)?);
    if chunks != stats {
        problems.push(format!("{stats} mail.chunks entries for {chunks} chunks"));
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use heed::{EnvOpenOptions, WithoutTls};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// One step of a run: a content (index into a small set) gains or loses a reference, or the transaction ends.
    #[derive(Clone, Debug)]
    enum Step {
        Add(usize),
        Drop(usize),
        Commit,
        Abort,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0..40usize).prop_map(Step::Add),
            4 => (0..40usize).prop_map(Step::Drop),
            1 => Just(Step::Commit),
            1 => Just(Step::Abort),
        ]
    }

    /// Content `i`, distinct for each `i`: sizes from empty through more than a chunk's worth, so that chunks
    /// fill, overflow and hold bodies larger than themselves.
    fn content(i: usize) -> Vec<u8> {
        let len = match i % 8 {
            _ if i == 0 => 0,
            0 => 2 + i,
            1 => 1,
            2 => CHUNK_TARGET + 17,
            _ => 1 + (i * 7919) % (CHUNK_TARGET / 3),
        };
        (0..len).map(|b| (b * 31 + i) as u8).collect()
    }

    fn env(dir: &std::path::Path) -> (heed::Env<WithoutTls>, Tables) {
        // SAFETY: a fresh directory of this test, opened once.
        let env = unsafe {
            EnvOpenOptions::new().read_txn_without_tls().map_size(1 << 30).max_dbs(4).open(dir).expect("open")
        };
        let txn = env.write_txn().expect("txn");
        let (bodies, chunks, blob_refs) = env
            .create_databases_and_commit(txn, |dbo, txn| -> heed::Result<_> {
                Ok(heed::CommitOrAbort::<_, ()>::Commit((
                    dbo.create_database(txn, Some("bodies"))?,
                    dbo.create_database(txn, Some("chunks"))?,
                    dbo.create_database(txn, Some("blob_refs"))?,
                )))
            })
            .expect("databases")
            .unwrap_commit();
        (env, Tables { bodies, chunks, blob_refs })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Whatever the order of references gained and lost and however they are grouped into transactions
        /// (some aborted), every committed content reads back exactly, counts match, aborted transactions leave
        /// nothing, and every chunk is consistent and at least half referenced (`verify` finds nothing).
        #[test]
        fn chunks_hold_exactly_the_referenced_contents(steps in proptest::collection::vec(step(), 1..160)) {
            let dir = tempfile::tempdir().expect("tempdir");
            let (env, t) = env(dir.path());
            let contents: Vec<(Vec<u8>, [u8; 32])> =
                (0..40).map(|i| { let c = content(i); let h = *ContentHash::of(&c).as_bytes(); (c, h) }).collect();
            let mut pending = Pending::default();
            // Reference counts committed, and as the open transaction sees them.
            let mut committed: BTreeMap<usize, u64> = BTreeMap::new();
            let mut open = committed.clone();
            let mut txn = env.write_txn().expect("txn");
            let mut lsn = 0;
            for step in steps.into_iter().chain([Step::Commit]) {
                lsn += 1;
                pending.begin(lsn);
                match step {
                    Step::Add(i) => {
                        pending.add_ref(&t, &mut txn, &contents[i].1, Some(&contents[i].0)).expect("add");
                        *open.entry(i).or_default() += 1;
                    }
                    Step::Drop(i) => {
                        pending.drop_ref(&t, &mut txn, &contents[i].1).expect("drop");
                        if let Some(n) = open.get_mut(&i) {
                            *n -= 1;
                            if *n == 0 {
                                open.remove(&i);
                            }
                        }
                    }
                    Step::Commit => {
                        pending.finish(&t, &mut txn).expect("finish");
                        txn.commit().expect("commit");
                        committed = open.clone();
                        let rtxn = env.read_txn().expect("read");
                        let mut problems = Vec::new();
                        let counts = verify(&t, &rtxn, &mut problems).expect("verify");
                        prop_assert!(problems.is_empty(), "{problems:?}");
                        let expected: BTreeMap<[u8; 32], u64> =
                            committed.iter().map(|(i, n)| (contents[*i].1, *n)).collect();
                        prop_assert_eq!(counts, expected);
                        for i in committed.keys() {
                            let raw = get(&t, &rtxn, &contents[*i].1).expect("get");
                            prop_assert_eq!(raw, Some(&contents[*i].0[..]));
                        }
                        drop(rtxn);
                        txn = env.write_txn().expect("txn");
                    }
                    Step::Abort => {
                        drop(txn);
                        pending.abandon();
                        open = committed.clone();
                        txn = env.write_txn().expect("txn");
                    }
                }
            }
        }
    }
}
