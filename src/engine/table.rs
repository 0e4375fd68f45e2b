//! Verified tables: every value in the state store carries a checksum binding it to its table and its key, and
//! every read checks it. This module is the only code that reads or writes a table of the state store (the
//! engine's `engine.meta`, the mailbox model's tables, the key-value machine's): [`Table`] wraps heed's
//! `Database<Bytes, Bytes>` and mirrors the methods the call sites use, appending the checksum on write and
//! verifying and stripping it on every read, iterators included, so that no read path can bypass it.
//!
//! # Layout
//!
//! ```text
//! stored value = value ‖ crc32(crc32(table name) ‖ key ‖ value)   (the CRC little-endian, 4 bytes)
//! ```
//!
//! The CRC is seeded with the CRC of the table's name (computed once, when the table is opened): an entry copied
//! into another table, a flipped bit in the key or in the value, a truncated or zeroed value all fail. CRC-32
//! detects every single-bit error, every burst up to 32 bits and every 2- and 3-bit error in entries of the
//! sizes LMDB stores; anything else is missed with probability 2^-32.
//!
//! # Damage is never a wrong answer
//!
//! A flipped bit in a key can also move an entry: LMDB still finds it where it is in the page, under a key no
//! caller asks for, and a lookup of the original key would answer "absent" without reading the damaged entry at
//! all. When the flipped key still sorts between its neighbours (if it does not, the page's key order is broken,
//! which the structural verifier of `data.mdb` finds before the file is mapped), the damaged entry is the
//! predecessor or the successor of the key it used to be. So a lookup that finds nothing verifies both
//! neighbours of the key it looked for, and a walk over a range or a prefix verifies the entry just outside each
//! end it stops at: a moved entry is reported as damage instead of being silently left out.
//!
//! A failed check is a heed decoding error carrying a [`Damage`] (so that the call sites keep heed's error type);
//! the conversion into the crate's [`Error`](crate::Error) turns it into [`Error::Damaged`](crate::Error::Damaged),
//! and the engine's boundaries ([`Error::in_database`](crate::Error::in_database)) name the database directory.

use std::ops::{Bound, RangeBounds};

use heed::types::Bytes;
use heed::{CommitOrAbort, CommitToken, Database, Env, OnCommit, RoRange, RoRevRange, RoTxn, RwTxn, WithoutTls};

/// Bytes of checksum after every stored value.
pub const CHECKSUM_LEN: usize = 4;

/// A state store entry failed its checksum: damage in `data.mdb`.
#[derive(Debug, thiserror::Error)]
#[error("entry {} of table {table} fails its checksum", display_key(key))]
pub(crate) struct Damage {
    /// The table.
    pub(crate) table: String,
    /// The key as stored (damaged or not).
    pub(crate) key: Vec<u8>,
}

/// A key as an error names it: printable ASCII as it is, anything else in hex.
pub fn display_key(key: &[u8]) -> String {
    if !key.is_empty() && key.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        String::from_utf8_lossy(key).into_owned()
    } else {
        let mut s = String::with_capacity(2 + 2 * key.len());
        s.push_str("0x");
        for b in key {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

/// A value as table `table` stores it under `key`: the value and its checksum (for tests and tools that write a
/// state store by hand; `mailstore::internals`).
#[cfg_attr(not(feature = "internals"), allow(dead_code, reason = "for tests, through `internals`"))]
pub fn seal(table: &str, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(value.len() + CHECKSUM_LEN);
    stored.extend_from_slice(value);
    stored.extend_from_slice(&checksum(seed(table), key, value).to_le_bytes());
    stored
}

/// The seed of a table's checksums: the CRC of its name.
fn seed(name: &str) -> u32 {
    crc32fast::hash(name.as_bytes())
}

/// The checksum of an entry of the table whose seed is `seed`.
#[inline]
fn checksum(seed: u32, key: &[u8], value: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(seed);
    h.update(key);
    h.update(value);
    h.finalize()
}

/// Whether reads verify checksums: always, except in a benchmark that measures what verifying costs
/// ([`set_verification`], only with the `internals` feature).
#[cfg(feature = "internals")]
static VERIFYING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

#[cfg(feature = "internals")]
#[inline]
fn verifying() -> bool {
    VERIFYING.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(not(feature = "internals"))]
#[inline]
fn verifying() -> bool {
    true
}

/// Turns the verification of reads off or on for the whole process: **for the benchmark of its cost only**
/// (`benches/verify.rs`, `mailstore::internals`); with it off, damage gives wrong answers. Without the
/// `internals` feature reads always verify.
#[cfg(feature = "internals")]
pub fn set_verification(on: bool) {
    VERIFYING.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// The value of a stored entry if its checksum holds.
#[inline]
fn open_value<'v>(seed: u32, key: &[u8], stored: &'v [u8]) -> Option<&'v [u8]> {
    let at = stored.len().checked_sub(CHECKSUM_LEN)?;
    let (value, sum) = stored.split_at(at);
    if !verifying() {
        return Some(value);
    }
    let sum = u32::from_le_bytes([sum[0], sum[1], sum[2], sum[3]]);
    (checksum(seed, key, value) == sum).then_some(value)
}

/// A table of the state store: byte keys to checksummed byte values. Copy, like heed's `Database`.
#[derive(Clone, Copy)]
pub(crate) struct Table {
    db: Database<'static, Bytes, Bytes>,
    name: &'static str,
    seed: u32,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("name", &self.name).finish()
    }
}

/// An entry of a walk: its key and its verified value, read in place.
pub(crate) type Entry<'t> = heed::Result<(&'t [u8], &'t [u8])>;

impl Table {
    /// The table `name`, opened as `db`.
    pub(crate) fn new(db: Database<'static, Bytes, Bytes>, name: &'static str) -> Self {
        Table { db, name, seed: seed(name) }
    }

    fn damage(&self, key: &[u8]) -> heed::Error {
        heed::Error::Decoding(Box::new(Damage { table: self.name.to_string(), key: key.to_vec() }))
    }

    /// The verified value of a stored entry.
    #[inline]
    fn open<'v>(&self, key: &[u8], stored: &'v [u8]) -> heed::Result<&'v [u8]> {
        open_value(self.seed, key, stored).ok_or_else(|| self.damage(key))
    }

    /// Verifies an entry the caller does not use (a neighbour, the entry a walk stops at).
    fn check(&self, entry: Option<(&[u8], &[u8])>) -> heed::Result<()> {
        match entry {
            Some((key, stored)) => self.open(key, stored).map(|_| ()),
            None => Ok(()),
        }
    }

    /// The value of `key`. When there is none, the keys on either side are verified (see the module
    /// documentation: a damaged key that used to be `key` is one of them).
    pub(crate) fn get<'t>(&self, txn: &'t RoTxn<'_>, key: &[u8]) -> heed::Result<Option<&'t [u8]>> {
        match self.db.get(txn, key)? {
            Some(stored) => self.open(key, stored).map(Some),
            None if verifying() => {
                self.check(self.db.get_lower_than(txn, key)?)?;
                self.check(self.db.get_greater_than(txn, key)?)?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Sets `key` to `value`.
    pub(crate) fn put(&self, txn: &mut RwTxn<'_>, key: &[u8], value: &[u8]) -> heed::Result<()> {
        let sum = checksum(self.seed, key, value).to_le_bytes();
        self.db.put_reserved(txn, key, value.len() + CHECKSUM_LEN, |space| {
            use std::io::Write;
            space.write_all(value)?;
            space.write_all(&sum)
        })
    }

    /// Sets `key` to `value` unless it holds a value already; that value if it does (verified), `None` if it was
    /// set. Like [`get`](Self::get), a key found absent has its neighbours verified.
    pub(crate) fn get_or_put<'t>(
        &self,
        txn: &'t mut RwTxn<'_>,
        key: &[u8],
        value: &[u8],
    ) -> heed::Result<Option<&'t [u8]>> {
        // A lookup (neighbours verified when absent), then the write: `get` keeps the damage checks in one place.
        if self.get(txn, key)?.is_some() {
            return self.get(txn, key);
        }
        self.put(txn, key, value)?;
        Ok(None)
    }

    /// Removes `key`; whether it was there.
    pub(crate) fn delete(&self, txn: &mut RwTxn<'_>, key: &[u8]) -> heed::Result<bool> {
        self.db.delete(txn, key)
    }

    /// The number of entries.
    pub(crate) fn len(&self, txn: &RoTxn<'_>) -> heed::Result<u64> {
        self.db.len(txn)
    }

    /// True when the table holds no entry.
    pub(crate) fn is_empty(&self, txn: &RoTxn<'_>) -> heed::Result<bool> {
        self.db.is_empty(txn)
    }

    /// Every entry, in key order.
    pub(crate) fn iter<'t>(&self, txn: &'t RoTxn<'_>) -> heed::Result<Entries<'t>> {
        let all: (Bound<&[u8]>, Bound<&[u8]>) = (Bound::Unbounded, Bound::Unbounded);
        Ok(Entries::forward(*self, self.db.range(txn, &all)?, Until::Never))
    }

    /// The entries in `range`, in key order.
    pub(crate) fn range<'t, R: RangeBounds<[u8]>>(&self, txn: &'t RoTxn<'_>, range: &R) -> heed::Result<Entries<'t>> {
        self.check_before(txn, range.start_bound())?;
        let from: (Bound<&[u8]>, Bound<&[u8]>) = (range.start_bound(), Bound::Unbounded);
        let until = match range.end_bound() {
            Bound::Unbounded => Until::Never,
            Bound::Included(end) => Until::Above(end.to_vec(), true),
            Bound::Excluded(end) => Until::Above(end.to_vec(), false),
        };
        Ok(Entries::forward(*self, self.db.range(txn, &from)?, until))
    }

    /// The entries whose key starts with `prefix`, in key order.
    pub(crate) fn prefix_iter<'t>(&self, txn: &'t RoTxn<'_>, prefix: &[u8]) -> heed::Result<Entries<'t>> {
        self.check_before(txn, Bound::Included(prefix))?;
        let from: (Bound<&[u8]>, Bound<&[u8]>) = (Bound::Included(prefix), Bound::Unbounded);
        Ok(Entries::forward(*self, self.db.range(txn, &from)?, Until::Prefix(prefix.to_vec())))
    }

    /// The entries whose key starts with `prefix`, in reverse key order.
    pub(crate) fn rev_prefix_iter<'t>(&self, txn: &'t RoTxn<'_>, prefix: &[u8]) -> heed::Result<Entries<'t>> {
        let above = after_prefix(prefix);
        let end = match &above {
            Some(above) => Bound::Excluded(&above[..]),
            None => Bound::Unbounded,
        };
        if let (Bound::Excluded(above), true) = (end, verifying()) {
            self.check(self.db.get_greater_than_or_equal_to(txn, above)?)?;
        }
        let to: (Bound<&[u8]>, Bound<&[u8]>) = (Bound::Unbounded, end);
        Ok(Entries::backward(*self, self.db.rev_range(txn, &to)?, Until::Prefix(prefix.to_vec())))
    }

    /// Verifies the entry just before a forward walk that starts at `start`.
    fn check_before(&self, txn: &RoTxn<'_>, start: Bound<&[u8]>) -> heed::Result<()> {
        match start {
            _ if !verifying() => Ok(()),
            Bound::Unbounded => Ok(()),
            Bound::Included(start) => self.check(self.db.get_lower_than(txn, start)?),
            Bound::Excluded(start) => self.check(self.db.get_lower_than_or_equal_to(txn, start)?),
        }
    }
}

/// The smallest key above every key starting with `prefix`; `None` when there is none (all bytes 0xff).
fn after_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut above = prefix.to_vec();
    while let Some(last) = above.pop() {
        if last < u8::MAX {
            above.push(last + 1);
            return Some(above);
        }
    }
    None
}

/// Where a walk ends.
enum Until {
    /// At the end of the table.
    Never,
    /// At the first key that does not start with the prefix.
    Prefix(Vec<u8>),
    /// Forward, at the first key above the bound (`true`: the bound itself included in the walk).
    Above(Vec<u8>, bool),
}

impl Until {
    #[inline]
    fn admits(&self, key: &[u8]) -> bool {
        match self {
            Until::Never => true,
            Until::Prefix(prefix) => key.starts_with(prefix),
            Until::Above(end, true) => key <= &end[..],
            Until::Above(end, false) => key < &end[..],
        }
    }
}

enum Cursor<'t> {
    Forward(RoRange<'t, Bytes, Bytes>),
    Backward(RoRevRange<'t, Bytes, Bytes>),
}

/// A walk over a [`Table`]: every entry it reads is verified, the one it stops at included.
pub(crate) struct Entries<'t> {
    table: Table,
    cursor: Cursor<'t>,
    until: Until,
    done: bool,
}

impl<'t> Entries<'t> {
    fn forward(table: Table, range: RoRange<'t, Bytes, Bytes>, until: Until) -> Self {
        Entries { table, cursor: Cursor::Forward(range), until, done: false }
    }

    fn backward(table: Table, range: RoRevRange<'t, Bytes, Bytes>, until: Until) -> Self {
        Entries { table, cursor: Cursor::Backward(range), until, done: false }
    }
}

impl<'t> Iterator for Entries<'t> {
    type Item = Entry<'t>;

    #[inline]
    fn next(&mut self) -> Option<Entry<'t>> {
        if self.done {
            return None;
        }
        let next = match &mut self.cursor {
            Cursor::Forward(range) => range.next(),
            Cursor::Backward(range) => range.next(),
        };
        let result = match next {
            None => None,
            Some(Err(e)) => Some(Err(e)),
            Some(Ok((key, stored))) => match self.table.open(key, stored) {
                Err(e) => Some(Err(e)),
                Ok(value) if self.until.admits(key) => return Some(Ok((key, value))),
                Ok(_) => None,
            },
        };
        self.done = true;
        result
    }
}

/// Tables opened by name, while their opening transaction is live.
struct Named<'e>(Vec<(String, Database<'e, Bytes, Bytes>)>);

impl OnCommit for Named<'_> {
    type Committed = Vec<(String, Database<'static, Bytes, Bytes>)>;
    fn on_commit(self, token: &CommitToken) -> Self::Committed {
        self.0.into_iter().map(|(name, db)| (name, db.on_commit(token))).collect()
    }
}

/// One damaged entry [`verify_all`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DamagedEntry {
    /// The table.
    pub(crate) table: String,
    /// The key, as [`display_key`] shows it.
    pub(crate) key: String,
}

impl std::fmt::Display for DamagedEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "entry {} of table {} fails its checksum", self.key, self.table)
    }
}

/// Verifies every entry of every table of `env` (every named database: the engine's and the state machine's
/// alike) and returns each damaged one, in table and key order; `mailstore check` reports them. What prevents
/// the walk itself (a table that cannot be opened or walked) is an error.
pub(crate) fn verify_all(env: &Env<WithoutTls>) -> crate::Result<Vec<DamagedEntry>> {
    let rtxn = env.read_txn()?;
    let tables = env
        .open_databases_and_commit(rtxn, |dbo, rtxn| -> crate::Result<_> {
            let main = dbo.open_database::<Bytes, Bytes>(rtxn, None)?;
            let mut names = Vec::new();
            if let Some(main) = main {
                for entry in main.iter(rtxn)? {
                    let (name, _) = entry?;
                    names.push(String::from_utf8_lossy(name).into_owned());
                }
            }
            let mut tables = Vec::with_capacity(names.len());
            for name in names {
                if let Some(db) = dbo.open_database::<Bytes, Bytes>(rtxn, Some(&name))? {
                    tables.push((name, db));
                }
            }
            Ok(CommitOrAbort::<_, ()>::Commit(Named(tables)))
        })?
        .commit()
        .unwrap_or_default();
    let txn = env.read_txn()?;
    let mut damaged = Vec::new();
    for (name, db) in &tables {
        let seed = seed(name);
        for entry in db.iter(&txn)? {
            let (key, stored) = entry?;
            if open_value(seed, key, stored).is_none() {
                damaged.push(DamagedEntry { table: name.clone(), key: display_key(key) });
            }
        }
    }
    Ok(damaged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_continues_the_crc_of_the_name() {
        let mut h = crc32fast::Hasher::new();
        h.update(b"kv.data");
        h.update(b"key");
        h.update(b"value");
        assert_eq!(checksum(seed("kv.data"), b"key", b"value"), h.finalize());
    }

    #[test]
    fn every_single_bit_flip_of_key_value_or_checksum_fails() {
        let key = b"some key".to_vec();
        let value = b"some value of a few bytes".to_vec();
        let s = seed("mail.items");
        let mut stored = value.clone();
        stored.extend_from_slice(&checksum(s, &key, &value).to_le_bytes());
        assert_eq!(open_value(s, &key, &stored), Some(&value[..]));
        assert_eq!(open_value(seed("mail.uids"), &key, &stored), None, "bound to the table");
        for bit in 0..stored.len() * 8 {
            let mut bad = stored.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(open_value(s, &key, &bad), None, "value bit {bit}");
        }
        for bit in 0..key.len() * 8 {
            let mut bad = key.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(open_value(s, &bad, &stored), None, "key bit {bit}");
        }
        assert_eq!(open_value(s, &key, &stored[..3]), None);
        assert_eq!(open_value(s, &key, &[]), None);
    }

    #[test]
    fn keys_are_shown_printable_or_in_hex() {
        assert_eq!(display_key(b"applied_lsn"), "applied_lsn");
        assert_eq!(display_key(&[0, 1, 0xab]), "0x0001ab");
        assert_eq!(display_key(b""), "0x");
    }

    #[test]
    fn after_prefix_is_the_next_key_above_the_prefix() {
        assert_eq!(after_prefix(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(after_prefix(&[1, 0xff]), Some(vec![2]));
        assert_eq!(after_prefix(&[0xff, 0xff]), None);
    }
}
