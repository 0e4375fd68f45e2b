//! The listing record of an item: a copy of the item laid out so that it can be read in place.
//!
//! `mail.uids` maps GUID ‖ folder ‖ UID to this record (not only to the item id), so listing a folder in UID
//! order — IMAP `FETCH ... (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)`, a webmail's first page — is one cursor
//! walk over one table: no second lookup in `mail.items`, no decoding into owned values, no allocation per field.
//! [`ItemSummary`] is a view of one record, borrowing its strings from the read transaction's memory map.
//!
//! The record holds everything [`ItemInfo`] holds, so it is also the fast path of the owned listings
//! ([`MailStore::items_by_uid`](crate::model::MailStore::items_by_uid) and friends), and
//! [`MailStore::verify_counters`](crate::model::MailStore::verify_counters) can check it against the item field
//! by field. The apply function writes it with the item, in the same transaction, whenever the item changes.
//!
//! # Layout (version 2)
//!
//! Integers are little-endian except the item id, which stays big-endian at offset 0 (the index's value before
//! the record existed), so a reader that only needs the id reads the first 8 bytes.
//!
//! | off | size | field |
//! |---|---|---|
//! | 0 | 8 | item id (big-endian) |
//! | 8 | 1 | layout version (2) |
//! | 9 | 1 | system flags |
//! | 10 | 1 | bits: 1 FAI, 2 has attachments, 4 malformed, 8 `Date` present, 16 deleted (32, 64, 128: zero) |
//! | 11 | 1 | class: 0 Note, 1 Appointment, 2 Contact, 3 Task, 4 Other |
//! | 12 | 4 | slot count S |
//! | 16 | 8 | MODSEQ |
//! | 24 | 8 | received time (µs) |
//! | 32 | 8 | size |
//! | 40 | 8 | the envelope's size |
//! | 48 | 8 | `Date` (seconds, i64; 0 when absent) |
//! | 56 | 16 | appointment start and end (0 for other classes) |
//! | 72 | 16 | deleted: the folder it came from and when (0 when not deleted) |
//! | 88 | 32 | BLAKE3 hash of the content |
//! | 120 | 36 | entry counts (u32 each) of From, Sender, Reply-To, To, Cc, Bcc, In-Reply-To, References, keywords |
//! | 156 | 2 | the `Date`'s zone, minutes east of UTC (i16; 0 when absent) |
//! | 158 | 2 | zero |
//! | 160 | 4·S | slot table: the end offset of each string in the heap; bit 31 set = absent (`None`, zero length) |
//! | 160 + 4·S | … | heap: every string, concatenated (valid UTF-8 as a whole) |
//!
//! Slots, in order: subject, Message-ID, the class name (`Other` only), the `Date` as written; then, for each
//! address of the six address fields in turn, its display name, its email and its group; then the In-Reply-To
//! ids, the References ids and the keywords. `S = 4 + 3 · addresses + ids + keywords`.
//!
//! Because the heap is one UTF-8 string, a record is validated with one UTF-8 check and one pass over the slot
//! table (monotonic ends on character boundaries); after that every string is a slice of the heap.

use crate::error::{CodecError, Error, Result};
use crate::model::envelope::{Address, Envelope};
use crate::model::types::{Deleted, Flags, FolderId, ItemClass, ItemId, ItemInfo, ModSeq, Uid};
use crate::time::Timestamp;

/// The layout version this code writes and reads.
const VERSION: u8 = 2;
/// Bytes before the slot table.
const HEADER: usize = 160;
/// Offset of the `Date`'s zone.
const ZONE: usize = 156;
/// Offset of the entry counts.
const COUNTS: usize = 120;
/// Lists with entry counts: six address fields, then In-Reply-To, References, keywords.
const LISTS: usize = 9;
/// The first six lists hold addresses (two slots per entry).
const ADDRESS_LISTS: usize = 6;
/// Slots before the lists: subject, Message-ID, class name, the `Date` as written.
const FIXED_SLOTS: usize = 4;
/// Slots per address: display name, email, group.
const ADDRESS_SLOTS: usize = 3;
/// Slot-table bit marking an absent string.
const ABSENT: u32 = 1 << 31;

const FAI: u8 = 1;
const HAS_ATTACHMENTS: u8 = 2;
const MALFORMED: u8 = 4;
const HAS_DATE: u8 = 8;
const DELETED: u8 = 16;

/// Builds the slot table and heap of one record.
struct Builder {
    slots: Vec<u8>,
    heap: Vec<u8>,
    count: u32,
}

impl Builder {
    fn put(&mut self, s: Option<&str>) -> Result<()> {
        if let Some(s) = s {
            self.heap.extend_from_slice(s.as_bytes());
        }
        let end = u32::try_from(self.heap.len())
            .ok()
            .filter(|e| e & ABSENT == 0)
            .ok_or_else(|| malformed("more than 2 GiB of strings"))?;
        let slot = if s.is_some() { end } else { end | ABSENT };
        self.slots.extend_from_slice(&slot.to_le_bytes());
        self.count += 1;
        Ok(())
    }
}

/// A listing record that breaks its layout rule `rule`.
fn malformed(rule: &str) -> Error {
    CodecError::Malformed { record: "listing record", rule: rule.to_owned() }.into()
}

fn count(len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| malformed("a list with more than 2^32 entries"))
}

/// The listing record of `item` (see the [module docs](self) for the layout).
pub(crate) fn encode(item: &ItemInfo) -> Result<Vec<u8>> {
    let e = &item.envelope;
    let address_lists = [&e.from, &e.sender, &e.reply_to, &e.to, &e.cc, &e.bcc];
    let string_lists = [&e.in_reply_to, &e.references, &item.keywords];
    let addresses: usize = address_lists.iter().map(|l| l.len()).sum();
    let strings: usize = string_lists.iter().map(|l| l.len()).sum();
    let slots = FIXED_SLOTS + ADDRESS_SLOTS * addresses + strings;
    let mut b = Builder { slots: Vec::with_capacity(4 * slots), heap: Vec::with_capacity(128), count: 0 };
    b.put(e.subject.as_deref())?;
    b.put(e.message_id.as_deref())?;
    let (tag, start, end, other) = match &item.class {
        ItemClass::Note => (0u8, 0, 0, None),
        ItemClass::Appointment { start, end } => (1, start.as_micros(), end.as_micros(), None),
        ItemClass::Contact => (2, 0, 0, None),
        ItemClass::Task => (3, 0, 0, None),
        ItemClass::Other(name) => (4, 0, 0, Some(name.as_str())),
    };
    b.put(other)?;
    b.put(e.date_text.as_deref())?;
    for list in address_lists {
        for a in list {
            b.put(a.name.as_deref())?;
            b.put(a.email.as_deref())?;
            b.put(a.group.as_deref())?;
        }
    }
    for list in string_lists {
        for s in list {
            b.put(Some(s))?;
        }
    }
    let bits = (if item.fai { FAI } else { 0 })
        | (if e.has_attachments { HAS_ATTACHMENTS } else { 0 })
        | (if e.malformed { MALFORMED } else { 0 })
        | (if e.date.is_some() { HAS_DATE } else { 0 })
        | (if item.deleted.is_some() { DELETED } else { 0 });
    let deleted = item.deleted.unwrap_or(Deleted { from: 0, at: Timestamp::EPOCH });
    let mut out = Vec::with_capacity(HEADER + b.slots.len() + b.heap.len());
    out.extend_from_slice(&item.id.to_be_bytes());
    out.extend_from_slice(&[VERSION, item.flags.0, bits, tag]);
    out.extend_from_slice(&b.count.to_le_bytes());
    for v in [item.modseq, item.received.as_micros(), item.size, e.size, e.date.unwrap_or(0) as u64, start, end] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&deleted.from.to_le_bytes());
    out.extend_from_slice(&deleted.at.as_micros().to_le_bytes());
    out.extend_from_slice(&item.content);
    for list in address_lists {
        out.extend_from_slice(&count(list.len())?.to_le_bytes());
    }
    for list in string_lists {
        out.extend_from_slice(&count(list.len())?.to_le_bytes());
    }
    out.extend_from_slice(&e.date_zone.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    debug_assert_eq!(out.len(), HEADER);
    out.extend_from_slice(&b.slots);
    out.extend_from_slice(&b.heap);
    Ok(out)
}

fn u64_le(h: &[u8; HEADER], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[at..at + 8]);
    u64::from_le_bytes(b)
}

fn u32_le(h: &[u8; HEADER], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&h[at..at + 4]);
    u32::from_le_bytes(b)
}

/// The slot table and heap of a validated record.
#[derive(Clone, Copy)]
struct Slots<'a> {
    table: &'a [u8],
    heap: &'a str,
}

impl<'a> Slots<'a> {
    /// The raw slot `i` (0 past the end, which validation rules out).
    fn raw(self, i: usize) -> u32 {
        self.table.get(4 * i..4 * i + 4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes)
    }

    /// String `i`: `None` when absent. Validation checked every end (monotonic, within the heap, on a character
    /// boundary), so the slice always exists.
    fn get(self, i: usize) -> Option<&'a str> {
        let end = self.raw(i);
        if end & ABSENT != 0 {
            return None;
        }
        let start = if i == 0 { 0 } else { self.raw(i - 1) & !ABSENT };
        self.heap.get(start as usize..end as usize)
    }
}

/// One entry of an address field, borrowed from the read transaction (the owned form is [`Address`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressRef<'a> {
    /// The display name (`None` if absent).
    pub name: Option<&'a str>,
    /// The address as `local@domain` (`None` if the entry has none).
    pub email: Option<&'a str>,
    /// The group it is a member of (`None` outside any; see [`Address::group`]).
    pub group: Option<&'a str>,
}

impl AddressRef<'_> {
    /// The owned form.
    pub fn to_address(self) -> Address {
        Address {
            name: self.name.map(str::to_owned),
            email: self.email.map(str::to_owned),
            group: self.group.map(str::to_owned),
        }
    }
}

/// An address field of an [`ItemSummary`]: the addresses in header order, read in place.
#[derive(Clone, Copy)]
pub struct Addresses<'a> {
    slots: Slots<'a>,
    first: usize,
    len: usize,
}

impl std::fmt::Debug for Addresses<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl std::fmt::Debug for Strings<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> Addresses<'a> {
    /// How many addresses.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Address `i`.
    pub fn get(&self, i: usize) -> Option<AddressRef<'a>> {
        (i < self.len).then(|| address_at(self.slots, self.first + ADDRESS_SLOTS * i))
    }

    /// The addresses, in header order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = AddressRef<'a>> + 'a {
        let (slots, first) = (self.slots, self.first);
        (0..self.len).map(move |i| address_at(slots, first + ADDRESS_SLOTS * i))
    }

    /// The owned form.
    pub fn to_vec(&self) -> Vec<Address> {
        self.iter().map(AddressRef::to_address).collect()
    }
}

fn address_at(slots: Slots<'_>, at: usize) -> AddressRef<'_> {
    AddressRef { name: slots.get(at), email: slots.get(at + 1), group: slots.get(at + 2) }
}

/// A list of strings of an [`ItemSummary`] (message ids, keywords), read in place.
#[derive(Clone, Copy)]
pub struct Strings<'a> {
    slots: Slots<'a>,
    first: usize,
    len: usize,
}

impl<'a> Strings<'a> {
    /// How many strings.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// String `i`.
    pub fn get(&self, i: usize) -> Option<&'a str> {
        if i < self.len { self.slots.get(self.first + i) } else { None }
    }

    /// The strings, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a str> + 'a {
        let (slots, first) = (self.slots, self.first);
        (0..self.len).map(move |i| slots.get(first + i).unwrap_or_default())
    }

    /// The owned form.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }
}

/// What a listing needs of one item (UID, MODSEQ, flags and keywords, INTERNALDATE, size, the envelope), read in
/// place from the `mail.uids` index: strings borrow from the read transaction, and nothing is allocated. It holds
/// everything [`ItemInfo`] holds; [`ItemSummary::to_item_info`] makes the owned copy.
///
/// Returned by [`MailStore::newest_summaries`](crate::model::MailStore::newest_summaries),
/// [`MailStore::summaries_by_uid`](crate::model::MailStore::summaries_by_uid) and
/// [`MailStore::summary_by_uid`](crate::model::MailStore::summary_by_uid); valid as long as the read
/// transaction. The record was validated when the view was made; every accessor is a load from it (a few
/// pointers wide, the view is cheap to copy and to collect).
#[derive(Clone, Copy)]
pub struct ItemSummary<'a> {
    folder: FolderId,
    uid: Uid,
    header: &'a [u8; HEADER],
    slots: Slots<'a>,
}

impl std::fmt::Debug for ItemSummary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemSummary")
            .field("id", &self.id())
            .field("folder", &self.folder)
            .field("uid", &self.uid)
            .field("modseq", &self.modseq())
            .field("flags", &self.flags())
            .field("keywords", &self.keywords())
            .field("received", &self.received())
            .field("size", &self.size())
            .field("subject", &self.subject())
            .field("from", &self.from())
            .field("deleted", &self.deleted())
            .finish_non_exhaustive()
    }
}

impl<'a> ItemSummary<'a> {
    /// Reads the record `value` of the `mail.uids` entry `key` (GUID ‖ folder ‖ UID). Checks the whole record
    /// (lengths, counts, slot table, UTF-8) without allocating; a record that fails is damage in the state store.
    pub(crate) fn parse(key: &[u8], value: &'a [u8]) -> Result<Self> {
        let bad = malformed;
        let header: &[u8; HEADER] =
            value.get(..HEADER).and_then(|h| h.try_into().ok()).ok_or_else(|| bad("shorter than its header"))?;
        if header[8] != VERSION {
            return Err(bad("unknown layout version"));
        }
        let mut slot_count = FIXED_SLOTS as u64;
        for i in 0..LISTS {
            let c = u64::from(u32_le(header, COUNTS + 4 * i));
            slot_count += if i < ADDRESS_LISTS { ADDRESS_SLOTS as u64 * c } else { c };
        }
        // Bounded by the record's own length before anything is read from the table.
        if slot_count != u64::from(u32_le(header, 12)) || slot_count > ((value.len() - HEADER) / 4) as u64 {
            return Err(bad("slot table does not fit"));
        }
        let (table, heap) = value[HEADER..].split_at(4 * slot_count as usize);
        let heap = std::str::from_utf8(heap).map_err(|_| bad("strings are not UTF-8"))?;
        let mut prev = 0usize;
        for raw in table.chunks_exact(4) {
            let raw = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
            let end = (raw & !ABSENT) as usize;
            if end < prev || (raw & ABSENT != 0 && end != prev) || !heap.is_char_boundary(end) {
                return Err(bad("bad slot table"));
            }
            prev = end;
        }
        if prev != heap.len() {
            return Err(bad("bytes after the last string"));
        }
        Ok(ItemSummary {
            folder: key.get(16..24).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes),
            uid: key.get(24..28).and_then(|b| b.try_into().ok()).map_or(0, u32::from_be_bytes),
            header,
            slots: Slots { table, heap },
        })
    }

    fn bit(&self, bit: u8) -> bool {
        self.header[10] & bit != 0
    }

    fn count(&self, list: usize) -> usize {
        u32_le(self.header, COUNTS + 4 * list) as usize
    }

    /// The first slot of list `list` (validation checked that every list lies inside the slot table).
    fn start(&self, list: usize) -> usize {
        let addresses: usize = (0..list.min(ADDRESS_LISTS)).map(|i| self.count(i)).sum();
        let strings: usize = (ADDRESS_LISTS..list.max(ADDRESS_LISTS)).map(|i| self.count(i)).sum();
        FIXED_SLOTS + ADDRESS_SLOTS * addresses + strings
    }

    fn addresses(&self, list: usize) -> Addresses<'a> {
        Addresses { slots: self.slots, first: self.start(list), len: self.count(list) }
    }

    fn strings(&self, list: usize) -> Strings<'a> {
        Strings { slots: self.slots, first: self.start(list), len: self.count(list) }
    }

    /// The item's id.
    pub fn id(&self) -> ItemId {
        let h = self.header;
        u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
    }

    /// Its folder.
    pub fn folder(&self) -> FolderId {
        self.folder
    }

    /// Its UID in that folder.
    pub fn uid(&self) -> Uid {
        self.uid
    }

    /// Its MODSEQ: that of its last change.
    pub fn modseq(&self) -> ModSeq {
        u64_le(self.header, 16)
    }

    /// System flags.
    pub fn flags(&self) -> Flags {
        Flags(self.header[9])
    }

    /// Received time (IMAP INTERNALDATE).
    pub fn received(&self) -> Timestamp {
        Timestamp::from_micros(u64_le(self.header, 24))
    }

    /// Size of the raw bytes (IMAP RFC822.SIZE).
    pub fn size(&self) -> u64 {
        u64_le(self.header, 32)
    }

    /// A folder-associated (settings) item.
    pub fn fai(&self) -> bool {
        self.bit(FAI)
    }

    /// Set while the item is in Recoverable Items: where it came from and when it was deleted.
    pub fn deleted(&self) -> Option<Deleted> {
        self.bit(DELETED)
            .then(|| Deleted { from: u64_le(self.header, 72), at: Timestamp::from_micros(u64_le(self.header, 80)) })
    }

    /// The `Date` header as seconds since the Unix epoch (UTC), if valid.
    pub fn date(&self) -> Option<i64> {
        self.bit(HAS_DATE).then(|| u64_le(self.header, 48) as i64)
    }

    /// The zone the `Date` was written in, minutes east of UTC (see [`Envelope::date_zone`]).
    pub fn date_zone(&self) -> Option<i16> {
        self.bit(HAS_DATE).then(|| i16::from_le_bytes([self.header[ZONE], self.header[ZONE + 1]]))
    }

    /// The `Date` field as written (see [`Envelope::date_text`]).
    pub fn date_text(&self) -> Option<&'a str> {
        self.slots.get(3)
    }

    /// Whether the message has an attachment part (see [`Envelope::has_attachments`]).
    pub fn has_attachments(&self) -> bool {
        self.bit(HAS_ATTACHMENTS)
    }

    /// The envelope could not be fully parsed (see [`Envelope::malformed`]).
    pub fn malformed(&self) -> bool {
        self.bit(MALFORMED)
    }

    /// The `Subject`, decoded.
    pub fn subject(&self) -> Option<&'a str> {
        self.slots.get(0)
    }

    /// The `Message-ID`, without angle brackets.
    pub fn message_id(&self) -> Option<&'a str> {
        self.slots.get(1)
    }

    /// The `From` mailboxes.
    pub fn from(&self) -> Addresses<'a> {
        self.addresses(0)
    }

    /// The `Sender` mailboxes.
    pub fn sender(&self) -> Addresses<'a> {
        self.addresses(1)
    }

    /// The `Reply-To` mailboxes.
    pub fn reply_to(&self) -> Addresses<'a> {
        self.addresses(2)
    }

    /// The `To` mailboxes.
    pub fn to(&self) -> Addresses<'a> {
        self.addresses(3)
    }

    /// The `Cc` mailboxes.
    pub fn cc(&self) -> Addresses<'a> {
        self.addresses(4)
    }

    /// The `Bcc` mailboxes.
    pub fn bcc(&self) -> Addresses<'a> {
        self.addresses(5)
    }

    /// The `In-Reply-To` message ids.
    pub fn in_reply_to(&self) -> Strings<'a> {
        self.strings(6)
    }

    /// The `References` message ids, oldest first.
    pub fn references(&self) -> Strings<'a> {
        self.strings(7)
    }

    /// The keywords, sorted.
    pub fn keywords(&self) -> Strings<'a> {
        self.strings(8)
    }

    /// The item's class (allocates only for [`ItemClass::Other`]).
    pub fn class(&self) -> ItemClass {
        match self.header[11] {
            1 => ItemClass::Appointment {
                start: Timestamp::from_micros(u64_le(self.header, 56)),
                end: Timestamp::from_micros(u64_le(self.header, 64)),
            },
            2 => ItemClass::Contact,
            3 => ItemClass::Task,
            4 => ItemClass::Other(self.slots.get(2).unwrap_or_default().to_owned()),
            _ => ItemClass::Note,
        }
    }

    /// The envelope, owned.
    pub fn envelope(&self) -> Envelope {
        Envelope {
            subject: self.subject().map(str::to_owned),
            from: self.from().to_vec(),
            sender: self.sender().to_vec(),
            reply_to: self.reply_to().to_vec(),
            to: self.to().to_vec(),
            cc: self.cc().to_vec(),
            bcc: self.bcc().to_vec(),
            date: self.date(),
            date_zone: self.date_zone(),
            date_text: self.date_text().map(str::to_owned),
            message_id: self.message_id().map(str::to_owned),
            in_reply_to: self.in_reply_to().to_vec(),
            references: self.references().to_vec(),
            size: u64_le(self.header, 40),
            has_attachments: self.has_attachments(),
            malformed: self.malformed(),
        }
    }

    /// The BLAKE3 hash of its content (the key of its stored body).
    pub(crate) fn content(&self) -> [u8; 32] {
        let mut content = [0u8; 32];
        content.copy_from_slice(&self.header[88..120]);
        content
    }

    /// The owned item record (equal to [`MailStore::item`](crate::model::MailStore::item) of the same item).
    pub fn to_item_info(&self) -> ItemInfo {
        let mut content = [0u8; 32];
        content.copy_from_slice(&self.header[88..120]);
        ItemInfo {
            id: self.id(),
            folder: self.folder,
            uid: self.uid,
            modseq: self.modseq(),
            flags: self.flags(),
            keywords: self.keywords().to_vec(),
            class: self.class(),
            received: self.received(),
            size: self.size(),
            envelope: self.envelope(),
            fai: self.fai(),
            deleted: self.deleted(),
            content,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(folder: FolderId, uid: Uid) -> Vec<u8> {
        let mut k = vec![7u8; 16];
        k.extend_from_slice(&folder.to_be_bytes());
        k.extend_from_slice(&uid.to_be_bytes());
        k
    }

    fn sample() -> ItemInfo {
        let addr = |n: Option<&str>, e: Option<&str>| Address {
            name: n.map(Into::into),
            email: e.map(Into::into),
            group: n.filter(|n| n.starts_with('B')).map(|_| "Team".into()),
        };
        ItemInfo {
            id: 42,
            folder: 9,
            uid: 1234,
            modseq: 77,
            flags: Flags::SEEN | Flags::FLAGGED,
            keywords: vec!["$Forwarded".into(), "work".into()],
            class: ItemClass::Other("IPM.Custom".into()),
            received: Timestamp::from_micros(1_700_000_000_000_000),
            size: 10_240,
            envelope: Envelope {
                subject: Some("Grüße — ünïcödé".into()),
                from: vec![addr(Some("Alice"), Some("alice@example.com"))],
                sender: vec![],
                reply_to: vec![addr(None, Some("r@example.com")), addr(Some("Only Name"), None)],
                to: vec![addr(Some(""), Some("")), addr(None, None)],
                cc: vec![],
                bcc: vec![addr(Some("B"), Some("b@x"))],
                date: Some(-5),
                date_zone: Some(-330),
                date_text: Some("Wed, 31 Dec 1969 18:29:55 -0530".into()),
                message_id: None,
                in_reply_to: vec!["a@b".into()],
                references: vec!["r1@x".into(), "".into(), "r3@x".into()],
                size: 10_000,
                has_attachments: true,
                malformed: false,
            },
            fai: true,
            deleted: Some(Deleted { from: 3, at: Timestamp::from_micros(99) }),
            content: [5; 32],
        }
    }

    #[test]
    fn round_trip() {
        let mut item = sample();
        let bytes = encode(&item).unwrap();
        let s = ItemSummary::parse(&key(9, 1234), &bytes).unwrap();
        assert_eq!(s.to_item_info(), item);
        assert_eq!((s.id(), s.folder(), s.uid(), s.modseq(), s.flags()), (42, 9, 1234, 77, Flags(5)));
        assert_eq!((s.date(), s.fai(), s.has_attachments(), s.malformed()), (Some(-5), true, true, false));
        assert_eq!(
            s.bcc().iter().next(),
            Some(AddressRef { name: Some("B"), email: Some("b@x"), group: Some("Team") })
        );
        assert_eq!((s.date_zone(), s.date_text()), (Some(-330), Some("Wed, 31 Dec 1969 18:29:55 -0530")));
        assert_eq!(s.keywords().get(1), Some("work"));
        assert_eq!(s.in_reply_to().to_vec(), ["a@b"]);
        assert!(format!("{s:?}").contains("subject: Some(\"Grüße — ünïcödé\")"));
        assert_eq!(s.subject(), Some("Grüße — ünïcödé"));
        assert_eq!(s.message_id(), None);
        assert_eq!(s.to().get(0), Some(AddressRef { name: Some(""), email: Some(""), group: None }));
        assert_eq!(s.to().get(1), Some(AddressRef { name: None, email: None, group: None }));
        assert_eq!(s.to().get(2), None);
        assert_eq!(s.references().iter().collect::<Vec<_>>(), ["r1@x", "", "r3@x"]);
        // Every class, and the empty item.
        for class in [
            ItemClass::Note,
            ItemClass::Appointment { start: Timestamp::from_micros(1), end: Timestamp::from_micros(u64::MAX) },
            ItemClass::Contact,
            ItemClass::Task,
        ] {
            item.class = class;
            item.deleted = None;
            item.envelope = Envelope::default();
            item.keywords.clear();
            let bytes = encode(&item).unwrap();
            assert_eq!(ItemSummary::parse(&key(9, 1234), &bytes).unwrap().to_item_info(), item);
        }
    }

    #[test]
    fn damaged_records_are_errors() {
        let bytes = encode(&sample()).unwrap();
        let k = key(9, 1234);
        // Every truncation fails (no panic).
        for len in 0..bytes.len() {
            assert!(ItemSummary::parse(&k, &bytes[..len]).is_err(), "truncated to {len}");
        }
        // A trailing byte, a wrong version, an absurd count, a slot end past the heap, a split character.
        let mut long = bytes.clone();
        long.push(b'x');
        assert!(ItemSummary::parse(&k, &long).is_err());
        let mut v = bytes.clone();
        v[8] = VERSION + 1;
        assert!(ItemSummary::parse(&k, &v).is_err());
        let mut v = bytes.clone();
        v[COUNTS..COUNTS + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(ItemSummary::parse(&k, &v).is_err());
        let mut v = bytes.clone();
        v[HEADER..HEADER + 4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
        assert!(ItemSummary::parse(&k, &v).is_err());
        let mut v = bytes.clone();
        v[HEADER..HEADER + 4].copy_from_slice(&3u32.to_le_bytes()); // inside "ü"
        assert!(ItemSummary::parse(&k, &v).is_err());
        // Flipping any single byte never panics.
        for i in 0..bytes.len() {
            let mut v = bytes.clone();
            v[i] ^= 0xA5;
            let _ = ItemSummary::parse(&k, &v).map(|s| s.to_item_info());
        }
    }
}
