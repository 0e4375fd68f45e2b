//! Sort (RFC 5256 `SORT`, RFC 5957 `SORT=DISPLAY`): the hits of a [`Query`] ordered by [`SortKey`]s, from the
//! listing records alone.
//!
//! ```
//! use mailstore::model::search::{Query, SortField, SortKey, Window};
//! use mailstore::model::{Flags, FolderRole, MailEngine, MailOp, MailboxKind};
//! use mailstore::{Engine, Options};
//!
//! # fn main() -> mailstore::Result<()> {
//! let dir = tempfile::tempdir().expect("a temporary directory");
//! let db: MailEngine = Engine::mount(dir.path(), Options::default())?;
//! let op = MailOp::create_mailbox("erin@example.com", "Erin", MailboxKind::User);
//! let erin = op.mailbox().expect("a mailbox operation");
//! db.commit(op)?;
//! let inbox = db.read(|s, txn| s.folder_by_role(txn, &erin, FolderRole::Inbox))?.expect("an Inbox").id;
//! let messages: [&[u8]; 3] = [
//!     b"From: Zoe <a@example.com>\r\nSubject: Re: [list] Fwd: lunch (fwd)\r\n\r\n.\r\n",
//!     b"From: Adam <z@example.com>\r\nSubject: =?UTF-8?Q?Apples?=\r\n\r\n.\r\n",
//!     b"From: bob@example.com\r\nSubject: LUNCH\r\n\r\n.\r\n",
//! ];
//! for raw in messages {
//!     db.commit(MailOp::append(erin, inbox, raw.to_vec(), Flags::empty(), vec![]))?;
//! }
//! let sort = |keys: &[SortKey]| db.read(|s, txn| s.sort(txn, &erin, inbox, &Query::all(), keys, Window::all()));
//! // Base subjects: "lunch", "apples", "lunch"; equal keys keep UID order.
//! assert_eq!(sort(&[SortKey::new(SortField::Subject)])?.uids(), [2, 1, 3]);
//! // FROM sorts on the mailbox (local part): a, bob, z; DISPLAYFROM on the display name: Adam, bob@…, Zoe.
//! assert_eq!(sort(&[SortKey::new(SortField::From)])?.uids(), [1, 3, 2]);
//! assert_eq!(sort(&[SortKey::new(SortField::DisplayFrom)])?.uids(), [2, 3, 1]);
//! // REVERSE, and a second key for ties; the sort read no message.
//! let r = sort(&[SortKey::new(SortField::Subject).reversed(), SortKey::new(SortField::Size)])?;
//! assert_eq!((r.uids(), r.messages_read), (vec![3, 1, 2], 0));
//! db.dismount()
//! # }
//! ```
//!
//! # Keys
//!
//! Each key is computed from the item's listing record ([`ItemSummary`]), never from the message:
//!
//! - [`SortField::Arrival`]: the received time (INTERNALDATE).
//! - [`SortField::Date`]: the `Date:` header as an instant (UTC); where the header is absent or invalid, the
//!   received time, as RFC 5256 says.
//! - [`SortField::Size`]: the message's size (RFC822.SIZE).
//! - [`SortField::Subject`]: the *base subject* of RFC 5256 §2.1 ([`base_subject`]): the decoded subject with
//!   whitespace runs folded to one space, then, repeatedly, trailing `(fwd)` and blanks removed, leading `Re:`,
//!   `Fw:`, `Fwd:` (with optional blanks and a `[blob]` before the colon) and `[blob]` prefixes removed (a blob
//!   only when something is left after it), and a whole `[fwd: …]` wrapper removed.
//! - [`SortField::From`], [`SortField::To`], [`SortField::Cc`]: the mailbox (local part, the `addr-mailbox` of
//!   RFC 5256) of the field's first address; an empty string where there is none.
//! - [`SortField::DisplayFrom`], [`SortField::DisplayTo`] (RFC 5957): the display name of the first address,
//!   or, where it has none (or only blanks), its address (`local@domain`); an empty string where there is none.
//!
//! Every key is ascending unless [`SortKey::reversed`] (IMAP `REVERSE`). Keys apply in order, each breaking the
//! ties of the ones before; items equal on every key are in UID order (ascending, whatever the keys' directions,
//! as RFC 5256 requires: `REVERSE` reverses a key, not the tie-break). A field named twice is taken at its first
//! occurrence (a later one cannot change the order).
//!
//! # Collation
//!
//! Strings compare after the search module's case folding (see [case and Unicode](super#case-and-unicode)), by
//! Unicode code point. That is RFC 5051's `i;unicode-casemap` without normalization; on ASCII it is exactly RFC
//! 5256's default `i;ascii-casemap` (letters compared as lowercase, octet order otherwise). It is chosen over
//! `i;ascii-casemap` because the keys are decoded (RFC 5256 §2.1 decodes subjects to UTF-8 first, RFC 5957 decodes
//! display names): `Émile` and `émile`, `STRASSE` and `straße` sort together, as the same texts match each other
//! in search. An empty key sorts first.
//!
//! The stored envelope keeps at most [`MAX_FIELD_LEN`](crate::model::envelope::MAX_FIELD_LEN) bytes of a
//! field; two subjects or names equal on those bytes compare equal (and fall to the next key, then the UID).
//!
//! # Cost
//!
//! The query is evaluated as by [`MailStore::search`] (a message is read only where the query needs it:
//! [`SearchResults::messages_read`]); the keys are then computed from the listing records the scan walked, the
//! hits sorted in memory (one key tuple per hit) and the window taken. A sort of `Query::all()` reads no message.

use std::cmp::Ordering;

use heed::RoTxn;

use super::eval::Sink;
use super::text::fold;
use super::{Hit, Query, SearchResults, Window};
use crate::error::Result;
use crate::model::MailStore;
use crate::model::summary::{AddressRef, Addresses, ItemSummary};
use crate::model::types::FolderId;
use crate::types::Guid;

/// What to sort on (RFC 5256 and RFC 5957 sort criteria; see the [module docs](self#keys)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SortField {
    /// `ARRIVAL`: the received time (INTERNALDATE).
    Arrival,
    /// `DATE`: the `Date:` header, or the received time where it is absent or invalid.
    Date,
    /// `SIZE`: the message's size.
    Size,
    /// `SUBJECT`: the base subject (RFC 5256 §2.1).
    Subject,
    /// `FROM`: the mailbox (local part) of the first `From` address.
    From,
    /// `TO`: the mailbox (local part) of the first `To` address.
    To,
    /// `CC`: the mailbox (local part) of the first `Cc` address.
    Cc,
    /// `DISPLAYFROM` (RFC 5957): the display name of the first `From` address, else its address.
    DisplayFrom,
    /// `DISPLAYTO` (RFC 5957): the display name of the first `To` address, else its address.
    DisplayTo,
}

/// One sort criterion: a field, ascending or reversed (IMAP `REVERSE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SortKey {
    /// The field.
    pub field: SortField,
    /// Descending instead of ascending.
    pub reverse: bool,
}

impl SortKey {
    /// `field`, ascending.
    pub fn new(field: SortField) -> SortKey {
        SortKey { field, reverse: false }
    }

    /// The same key in the other direction.
    pub fn reversed(self) -> SortKey {
        SortKey { reverse: !self.reverse, ..self }
    }
}

impl From<SortField> for SortKey {
    fn from(field: SortField) -> SortKey {
        SortKey::new(field)
    }
}

/// One computed key of one hit.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Value {
    Number(i128),
    Text(String),
}

/// Whitespace as RFC 5256's `WSP` sees it after step 1 (tabs and line breaks were made spaces).
fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t' || c == '\r' || c == '\n'
}

/// `subj-blob = "[" *BLOBCHAR "]" *WSP` at the start of `s`: the rest after it.
fn strip_blob(s: &str) -> Option<&str> {
    let rest = s.strip_prefix('[')?;
    let end = rest.find([']', '['])?;
    if rest.as_bytes().get(end) != Some(&b']') {
        return None;
    }
    Some(rest[end + 1..].trim_start_matches(is_wsp))
}

/// `subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"` at the start of `s` (already lowercase): the rest.
fn strip_refwd(s: &str) -> Option<&str> {
    let rest = if let Some(r) = s.strip_prefix("re") {
        r
    } else {
        let r = s.strip_prefix("fw")?;
        r.strip_prefix('d').unwrap_or(r)
    };
    let rest = rest.trim_start_matches(is_wsp);
    let rest = strip_blob(rest).unwrap_or(rest);
    rest.strip_prefix(':')
}

/// `subj-leader = (*subj-blob subj-refwd) / WSP` at the start of `s`: the rest, and whether it was a
/// `subj-refwd` (a reply or forward).
fn strip_leader(s: &str) -> Option<(&str, bool)> {
    if s.starts_with(is_wsp) {
        return Some((s.trim_start_matches(is_wsp), false));
    }
    let mut rest = s;
    loop {
        if let Some(r) = strip_refwd(rest) {
            return Some((r, true));
        }
        rest = strip_blob(rest)?;
    }
}

/// The base subject of RFC 5256 §2.1 of a decoded subject, case-folded (see the [module docs](self#keys)).
///
/// ```
/// use mailstore::model::search::base_subject;
/// assert_eq!(base_subject("Re: [list] Fwd: Subject (fwd)"), "subject");
/// assert_eq!(base_subject("[Fwd: RE:  Lunch\t plans ]"), "lunch plans");
/// assert_eq!(base_subject("[list]"), "[list]");
/// ```
pub fn base_subject(subject: &str) -> String {
    base_subject_and_reply(subject).0
}

/// The base subject of `subject` (as [`base_subject`]) and whether its extraction removed a `Re:`/`Fw:`/`Fwd:`
/// leader, a `(fwd)` trailer or a `[fwd: …]` wrapper: whether the message "is a reply or forward" in RFC 5256's
/// sense (THREAD=REFERENCES, step 5).
pub(crate) fn base_subject_and_reply(subject: &str) -> (String, bool) {
    let mut reply = false;
    // (1) Decoded already; fold case and make each run of whitespace one space.
    let folded = fold(subject);
    let mut s = String::with_capacity(folded.len());
    let mut blank = false;
    for c in folded.chars() {
        if is_wsp(c) {
            blank = true;
        } else {
            if blank && !s.is_empty() {
                s.push(' ');
            }
            blank = false;
            s.push(c);
        }
    }
    // Leading and trailing blanks are gone: both are removed by steps 2 and 3 anyway.
    let mut t: &str = &s;
    loop {
        // (2) Trailing "(fwd)" and blanks.
        loop {
            let before = t.len();
            t = t.trim_end_matches(is_wsp);
            if let Some(r) = t.strip_suffix("(fwd)") {
                t = r;
                reply = true;
            }
            if t.len() == before {
                break;
            }
        }
        // (3), (4), (5): leaders, and a blob that leaves something, until neither applies.
        loop {
            let before = t.len();
            while let Some((r, refwd)) = strip_leader(t) {
                if r.len() == t.len() {
                    break;
                }
                reply |= refwd;
                t = r;
            }
            if let Some(r) = strip_blob(t)
                && r.chars().any(|c| !is_wsp(c))
            {
                t = r;
            }
            if t.len() == before {
                break;
            }
        }
        // (6) A "[fwd:" … "]" wrapper: removed, and again from (2).
        match t.strip_prefix("[fwd:").and_then(|r| r.strip_suffix(']')) {
            Some(inner) => {
                t = inner;
                reply = true;
            }
            None => break,
        }
    }
    (t.to_owned(), reply)
}

/// The local part of `local@domain` (all of it where there is no `@`).
fn mailbox_part(email: &str) -> &str {
    email.rsplit_once('@').map_or(email, |(local, _)| local)
}

/// The first address of a field: an empty group's entry (no name, no email) is no address.
fn first(list: Addresses<'_>) -> Option<AddressRef<'_>> {
    list.iter().find(|a| a.name.is_some() || a.email.is_some())
}

fn first_mailbox(list: Addresses<'_>) -> String {
    first(list).and_then(|a| a.email).map(|e| fold(mailbox_part(e))).unwrap_or_default()
}

fn first_display(list: Addresses<'_>) -> String {
    let Some(a) = first(list) else { return String::new() };
    match a.name.filter(|n| n.chars().any(|c| !c.is_whitespace())) {
        Some(name) => fold(name.trim()),
        None => a.email.map(fold).unwrap_or_default(),
    }
}

/// The key `field` of one listing record.
fn value(field: SortField, s: &ItemSummary<'_>) -> Value {
    let received = i128::from(s.received().as_micros());
    match field {
        SortField::Arrival => Value::Number(received),
        SortField::Date => Value::Number(s.date().map_or(received, |secs| i128::from(secs) * 1_000_000)),
        SortField::Size => Value::Number(i128::from(s.size())),
        SortField::Subject => Value::Text(s.subject().map(base_subject).unwrap_or_default()),
        SortField::From => Value::Text(first_mailbox(s.from())),
        SortField::To => Value::Text(first_mailbox(s.to())),
        SortField::Cc => Value::Text(first_mailbox(s.cc())),
        SortField::DisplayFrom => Value::Text(first_display(s.from())),
        SortField::DisplayTo => Value::Text(first_display(s.to())),
    }
}

/// Gathers the hits with their keys (`keys.len()` values per hit, in one vector).
struct Gather<'k> {
    keys: &'k [SortKey],
    hits: Vec<Hit>,
    values: Vec<Value>,
    messages_read: u64,
}

impl Sink for Gather<'_> {
    fn message_read(&mut self) {
        self.messages_read += 1;
    }

    fn push(&mut self, summary: &ItemSummary<'_>, hit: Hit) {
        self.hits.push(hit);
        self.values.extend(self.keys.iter().map(|k| value(k.field, summary)));
    }
}

impl MailStore {
    /// The items of `folder` that match `query`, ordered by `keys` (then by UID), with the same summary and
    /// `window` as [`MailStore::search`]: `first` and `last` are the first and last in sorted order (see the
    /// [sort module](crate::model::search::sort)). No keys: UID order, as a search.
    ///
    /// Errors as [`MailStore::search`].
    pub fn sort(
        &self,
        txn: &RoTxn<'_>,
        guid: &Guid,
        folder: FolderId,
        query: &Query,
        keys: &[SortKey],
        window: Window,
    ) -> Result<SearchResults> {
        // A field named again cannot change the order: keep its first occurrence only.
        let mut unique: Vec<SortKey> = Vec::with_capacity(keys.len().min(16));
        for k in keys {
            if !unique.iter().any(|u| u.field == k.field) {
                unique.push(*k);
            }
        }
        let mut gather = Gather { keys: &unique, hits: Vec::new(), values: Vec::new(), messages_read: 0 };
        self.scan_folder(txn, guid, folder, query, &mut gather)?;
        let Gather { hits, values, messages_read, .. } = gather;
        let n = unique.len();
        // Hits arrive in UID order; a stable sort on the keys keeps UID order for ties.
        let mut order: Vec<usize> = (0..hits.len()).collect();
        if n > 0 {
            order.sort_by(|&a, &b| {
                for (i, k) in unique.iter().enumerate() {
                    let o = values[a * n + i].cmp(&values[b * n + i]);
                    let o = if k.reverse { o.reverse() } else { o };
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                Ordering::Equal
            });
        }
        let mut results = SearchResults {
            count: hits.len() as u64,
            first: order.first().map(|&i| hits[i]),
            last: order.last().map(|&i| hits[i]),
            highest_modseq: hits.iter().map(|h| h.modseq).max(),
            position: window.position,
            hits: Vec::new(),
            messages_read,
        };
        let take = window.limit.unwrap_or(usize::MAX);
        results.hits = order.iter().skip(window.position).take(take).map(|&i| hits[i]).collect();
        Ok(results)
    }
}
