//! The evaluator: a query compiled once (needles folded, UID sets merged), then judged item by item over the
//! UID index, reading a message only when its listing record cannot decide.

use std::cell::OnceCell;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};

use heed::RoTxn;
use mail_parser::{Message, MessageParser};

use super::query::{DateField, Day, DayCmp, HeaderField, Query, TimeCmp};
use super::text;
use super::{Hit, SearchResults, Window};
use crate::error::{CodecError, Result};
use crate::model::envelope::{MAX_FIELD_LEN, MAX_LIST_LEN};
use crate::model::summary::{Addresses, ItemSummary};
use crate::model::types::{FolderId, Uid};
use crate::model::{MailError, MailStore, keys};
use crate::time::Timestamp;
use crate::types::Guid;

/// A stored string this long or shorter was not truncated at ingest (a truncated one is at least
/// `MAX_FIELD_LEN - 3` bytes: truncation keeps whole UTF-8 characters of at most 4 bytes).
const UNTRUNCATED: usize = MAX_FIELD_LEN - 4;

/// Which address field.
#[derive(Clone, Copy, Debug)]
enum AddressField {
    From,
    To,
    Cc,
    Bcc,
}

/// A query ready to evaluate: texts folded, keywords lowercased, UID sets sorted and merged.
#[derive(Debug)]
enum Node {
    Const(bool),
    Subject(String),
    Address(AddressField, String),
    Named { name: String, text: String },
    Body(String),
    Text(String),
    Time { field: DateField, cmp: TimeCmp, at: Timestamp },
    Day { field: DateField, cmp: DayCmp, day: Day },
    Larger(u64),
    Smaller(u64),
    FlagsSet(u8),
    FlagsUnset(u8),
    Keyword(String, bool),
    Uids(Vec<(Uid, Uid)>),
    ModSeq(u64),
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
}

/// Compiles a query that passed [`Query::check_limits`] (so the recursion is bounded by `MAX_QUERY_DEPTH`).
fn compile(q: &Query) -> Node {
    match q {
        Query::All => Node::Const(true),
        Query::Header { field, text } => {
            let needle = text::fold(text);
            match field {
                HeaderField::From => Node::Address(AddressField::From, needle),
                HeaderField::To => Node::Address(AddressField::To, needle),
                HeaderField::Cc => Node::Address(AddressField::Cc, needle),
                HeaderField::Bcc => Node::Address(AddressField::Bcc, needle),
                HeaderField::Subject => Node::Subject(needle),
                HeaderField::Named(name) => Node::Named { name: name.clone(), text: needle },
            }
        }
        Query::Body(t) => Node::Body(text::fold(t)),
        Query::Text(t) => Node::Text(text::fold(t)),
        Query::Time { field, cmp, at } => Node::Time { field: *field, cmp: *cmp, at: *at },
        Query::Day { field, cmp, day } => Node::Day { field: *field, cmp: *cmp, day: *day },
        Query::Larger(n) => Node::Larger(*n),
        Query::Smaller(n) => Node::Smaller(*n),
        Query::FlagsSet(f) => Node::FlagsSet(f.0),
        Query::FlagsUnset(f) => Node::FlagsUnset(f.0),
        Query::Keyword(k) => Node::Keyword(k.to_ascii_lowercase(), true),
        Query::NoKeyword(k) => Node::Keyword(k.to_ascii_lowercase(), false),
        Query::Uids(ranges) => {
            let mut r: Vec<(Uid, Uid)> =
                ranges.iter().filter(|r| r.start() <= r.end()).map(|r| (*r.start(), *r.end())).collect();
            r.sort_unstable();
            let mut merged: Vec<(Uid, Uid)> = Vec::with_capacity(r.len());
            for (a, b) in r {
                match merged.last_mut() {
                    Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                    _ => merged.push((a, b)),
                }
            }
            Node::Uids(merged)
        }
        Query::ModSeqAtLeast(m) => Node::ModSeq(*m),
        Query::And(list) => Node::And(list.iter().map(compile).collect()),
        Query::Or(list) => Node::Or(list.iter().map(compile).collect()),
        Query::Not(q) => Node::Not(Box::new(compile(q))),
    }
}

/// The UIDs a node can match at all, as an inclusive range (for the cursor walk's start and end).
fn uid_bounds(node: &Node) -> (Uid, Uid) {
    match node {
        Node::Uids(r) => match (r.first(), r.last()) {
            (Some(first), Some(last)) => (first.0, last.1),
            _ => (1, 0),
        },
        Node::Const(false) => (1, 0),
        Node::And(list) => list.iter().map(uid_bounds).fold((0, Uid::MAX), |(a, b), (c, d)| (a.max(c), b.min(d))),
        Node::Or(list) => list.iter().map(uid_bounds).fold((1, 0), |(a, b), (c, d)| {
            if a > b {
                (c, d)
            } else if c > d {
                (a, b)
            } else {
                (a.min(c), b.max(d))
            }
        }),
        _ => (0, Uid::MAX),
    }
}

/// Three-valued results: `None` is "the listing record cannot tell".
fn and3(values: impl Iterator<Item = Option<bool>>) -> Option<bool> {
    let mut unknown = false;
    for v in values {
        match v {
            Some(false) => return Some(false),
            None => unknown = true,
            Some(true) => {}
        }
    }
    if unknown { None } else { Some(true) }
}

fn or3(values: impl Iterator<Item = Option<bool>>) -> Option<bool> {
    let mut unknown = false;
    for v in values {
        match v {
            Some(true) => return Some(true),
            None => unknown = true,
            Some(false) => {}
        }
    }
    if unknown { None } else { Some(false) }
}

fn compare_day(local: i64, cmp: DayCmp, day: Day) -> bool {
    match cmp {
        DayCmp::Before => local < day.days(),
        DayCmp::On => local == day.days(),
        DayCmp::Since => local >= day.days(),
    }
}

impl Node {
    /// The node judged on the listing record alone.
    fn on_summary(&self, s: &ItemSummary<'_>) -> Option<bool> {
        Some(match self {
            Node::Const(v) => *v,
            Node::Subject(needle) => {
                if needle.is_empty() {
                    return Some(true);
                }
                match s.subject() {
                    Some(subject) if subject.len() <= UNTRUNCATED => text::contains(subject, needle),
                    // Absent or blank: a needle of more than blanks cannot be in it.
                    None if !needle.trim().is_empty() => false,
                    _ => return None,
                }
            }
            Node::Address(field, needle) => {
                if needle.is_empty() {
                    return Some(true);
                }
                let list = address_list(s, *field);
                let whole = |s: Option<&str>| s.is_none_or(|s| s.len() <= UNTRUNCATED);
                let complete =
                    list.len() < MAX_LIST_LEN && list.iter().all(|a| whole(a.name) && whole(a.email) && whole(a.group));
                if !complete {
                    return None;
                }
                // A group's name is part of the field, as in IMAP's ENVELOPE.
                list.iter().any(|a| {
                    text::contains(&text::render_address(a.name, a.email), needle)
                        || a.group.is_some_and(|g| text::contains(g, needle))
                })
            }
            Node::Named { .. } | Node::Body(_) | Node::Text(_) => {
                return None;
            }
            Node::Time { field, cmp, at } => {
                let micros = match field {
                    DateField::Received => i128::from(s.received().as_micros()),
                    DateField::Sent => match s.date() {
                        Some(secs) => i128::from(secs) * 1_000_000,
                        None => return Some(false),
                    },
                };
                match cmp {
                    TimeCmp::Before => micros < i128::from(at.as_micros()),
                    TimeCmp::Since => micros >= i128::from(at.as_micros()),
                }
            }
            Node::Day { field: DateField::Received, cmp, day } => compare_day(Day::of(s.received()).days(), *cmp, *day),
            Node::Day { field: DateField::Sent, cmp, day } => {
                // The day the header names: the instant in the zone it was written in.
                let (Some(secs), Some(zone)) = (s.date(), s.date_zone()) else { return Some(false) };
                compare_day((secs + i64::from(zone) * 60).div_euclid(86_400), *cmp, *day)
            }
            Node::Larger(n) => s.size() > *n,
            Node::Smaller(n) => s.size() < *n,
            Node::FlagsSet(f) => s.flags().0 & f == *f,
            Node::FlagsUnset(f) => s.flags().0 & f == 0,
            Node::Keyword(k, set) => s.keywords().iter().any(|w| w.eq_ignore_ascii_case(k)) == *set,
            Node::Uids(ranges) => {
                let uid = s.uid();
                let i = ranges.partition_point(|r| r.1 < uid);
                ranges.get(i).is_some_and(|r| r.0 <= uid)
            }
            Node::ModSeq(m) => s.modseq() >= *m,
            Node::And(list) => return and3(list.iter().map(|n| n.on_summary(s))),
            Node::Or(list) => return or3(list.iter().map(|n| n.on_summary(s))),
            Node::Not(n) => return n.on_summary(s).map(|v| !v),
        })
    }

    /// The node judged with the message at hand.
    fn on_message(&self, s: &ItemSummary<'_>, m: &Content<'_>) -> bool {
        if let Some(v) = self.on_summary(s) {
            return v;
        }
        let Some(message) = &m.message else {
            // No header section: no field matches; the bytes are the body.
            return match self {
                Node::Body(needle) | Node::Text(needle) => text::contains(&String::from_utf8_lossy(m.raw), needle),
                Node::And(list) => list.iter().all(|n| n.on_message(s, m)),
                Node::Or(list) => list.iter().any(|n| n.on_message(s, m)),
                Node::Not(n) => !n.on_message(s, m),
                _ => false,
            };
        };
        match self {
            Node::Subject(needle) => message.subject().is_some_and(|subject| text::contains(subject, needle)),
            Node::Address(field, needle) => {
                let list = match field {
                    AddressField::From => message.from(),
                    AddressField::To => message.to(),
                    AddressField::Cc => message.cc(),
                    AddressField::Bcc => message.bcc(),
                };
                text::addresses(list).iter().any(|a| text::contains(a, needle))
            }
            Node::Named { name, text: needle } => {
                text::named(message, name).any(|h| text::contains(&text::header_value(message, h), needle))
            }
            Node::Body(needle) => m.body().iter().any(|part| part.contains(needle.as_str())),
            Node::Text(needle) => {
                m.headers().iter().any(|line| line.contains(needle.as_str()))
                    || m.body().iter().any(|part| part.contains(needle.as_str()))
            }
            Node::And(list) => list.iter().all(|n| n.on_message(s, m)),
            Node::Or(list) => list.iter().any(|n| n.on_message(s, m)),
            Node::Not(n) => !n.on_message(s, m),
            // Every other node is decided by the listing record.
            _ => false,
        }
    }
}

fn address_list<'a>(s: &ItemSummary<'a>, field: AddressField) -> Vec<crate::model::AddressRef<'a>> {
    let list: Addresses<'a> = match field {
        AddressField::From => s.from(),
        AddressField::To => s.to(),
        AddressField::Cc => s.cc(),
        AddressField::Bcc => s.bcc(),
    };
    list.iter().collect()
}

/// One message being judged: its bytes, its parsed form, and its folded texts made on first use.
struct Content<'r> {
    raw: &'r [u8],
    message: Option<Message<'r>>,
    body: OnceCell<Vec<String>>,
    headers: OnceCell<Vec<String>>,
}

impl<'r> Content<'r> {
    fn new(raw: &'r [u8]) -> Content<'r> {
        // As at ingest (`envelope::parse`): a panic inside the parser degrades to "no header section".
        let message = catch_unwind(AssertUnwindSafe(|| MessageParser::default().parse(raw))).ok().flatten();
        Content { raw, message, body: OnceCell::new(), headers: OnceCell::new() }
    }

    /// The message judged as one without a header section: its bytes are its body.
    fn unparsed(raw: &'r [u8]) -> Content<'r> {
        Content { raw, message: None, body: OnceCell::new(), headers: OnceCell::new() }
    }

    /// The folded text of every text part.
    fn body(&self) -> &[String] {
        self.body.get_or_init(|| {
            let mut out = Vec::new();
            if let Some(m) = &self.message {
                text::any_body_text(m, &mut |t| {
                    out.push(text::fold(t));
                    false
                });
            }
            out
        })
    }

    /// Every top-level header field as folded `name: value`.
    fn headers(&self) -> &[String] {
        self.headers.get_or_init(|| {
            let mut out = Vec::new();
            if let Some(m) = &self.message {
                text::any_header_line(m, &mut |line| {
                    out.push(text::fold(line));
                    false
                });
            }
            out
        })
    }
}

/// Where a folder scan hands its hits: in UID order, each with the listing record that was judged.
pub(super) trait Sink {
    /// A message had to be read (the listing record could not decide).
    fn message_read(&mut self);
    /// One matching item.
    fn push(&mut self, summary: &ItemSummary<'_>, hit: Hit);
}

/// Collects hits in order and keeps the window.
struct Collector {
    window: Window,
    results: SearchResults,
}

impl Collector {
    fn new(window: Window) -> Collector {
        Collector { window, results: SearchResults { position: window.position, ..SearchResults::default() } }
    }

    fn push(&mut self, hit: Hit) {
        let r = &mut self.results;
        let index = r.count;
        r.count += 1;
        r.first.get_or_insert(hit);
        r.last = Some(hit);
        r.highest_modseq = Some(r.highest_modseq.map_or(hit.modseq, |m| m.max(hit.modseq)));
        let index = usize::try_from(index).unwrap_or(usize::MAX);
        if index >= self.window.position && self.window.limit.is_none_or(|l| r.hits.len() < l) {
            r.hits.push(hit);
        }
    }
}

impl Sink for Collector {
    fn message_read(&mut self) {
        self.results.messages_read += 1;
    }

    fn push(&mut self, _summary: &ItemSummary<'_>, hit: Hit) {
        Collector::push(self, hit);
    }
}

impl MailStore {
    /// Checks `query` and the folder, then hands every matching item of `folder` to `sink`, in UID order (what
    /// [`MailStore::search`] does, with the hits going elsewhere).
    pub(super) fn scan_folder(
        &self,
        txn: &RoTxn<'_>,
        guid: &Guid,
        folder: FolderId,
        query: &Query,
        sink: &mut dyn Sink,
    ) -> Result<()> {
        query.check_limits().map_err(MailError::InvalidQuery)?;
        self.existing_folder(txn, guid, folder)?;
        let node = compile(query);
        self.search_folder(txn, guid, folder, &node, sink)
    }

    /// The items of `folder` that match `query`, in UID order: their count, first and last (ESEARCH `MIN` and
    /// `MAX`), highest MODSEQ and the `window` of them (see the [search module](crate::model::search)).
    /// Folder-associated items are not searched.
    ///
    /// A query past the [limits](crate::model::search#limits) is [`MailError::InvalidQuery`]; an unknown
    /// mailbox or folder is [`MailError::NoSuchMailbox`] / [`MailError::NoSuchFolder`].
    pub fn search(
        &self,
        txn: &RoTxn<'_>,
        guid: &Guid,
        folder: FolderId,
        query: &Query,
        window: Window,
    ) -> Result<SearchResults> {
        query.check_limits().map_err(MailError::InvalidQuery)?;
        self.existing_folder(txn, guid, folder)?;
        let node = compile(query);
        let mut out = Collector::new(window);
        self.search_folder(txn, guid, folder, &node, &mut out)?;
        Ok(out.results)
    }

    /// The items of every folder of mailbox `guid` outside Recoverable Items that match `query`, ordered by
    /// folder id and then UID, with the same summary as [`MailStore::search`] (`first` and `last` are then the
    /// first and last in that order).
    pub fn search_mailbox(&self, txn: &RoTxn<'_>, guid: &Guid, query: &Query, window: Window) -> Result<SearchResults> {
        query.check_limits().map_err(MailError::InvalidQuery)?;
        if self.mailbox(txn, guid)?.is_none() {
            return Err(MailError::NoSuchMailbox { mailbox: *guid }.into());
        }
        let node = compile(query);
        let mut out = Collector::new(window);
        let mut folders = self.folders(txn, guid)?;
        folders.sort_by_key(|f| f.id);
        for folder in folders.iter().filter(|f| !f.hidden) {
            self.search_folder(txn, guid, folder.id, &node, &mut out)?;
        }
        Ok(out.results)
    }

    fn existing_folder(&self, txn: &RoTxn<'_>, guid: &Guid, folder: FolderId) -> Result<()> {
        if self.folder(txn, guid, folder)?.is_some() {
            Ok(())
        } else if self.mailbox(txn, guid)?.is_none() {
            Err(MailError::NoSuchMailbox { mailbox: *guid }.into())
        } else {
            Err(MailError::NoSuchFolder { mailbox: *guid, folder }.into())
        }
    }

    /// One cursor walk over the folder's UID index, within the UIDs the query can match.
    fn search_folder(
        &self,
        txn: &RoTxn<'_>,
        guid: &Guid,
        folder: FolderId,
        node: &Node,
        out: &mut dyn Sink,
    ) -> Result<()> {
        let (lo, hi) = uid_bounds(node);
        if lo > hi {
            return Ok(());
        }
        let prefix = keys::folder(guid, folder);
        let start = keys::uid(guid, folder, lo);
        let range = (Bound::Included(&start[..]), Bound::Unbounded);
        for entry in self.uids.range(txn, &range)? {
            let (key, value) = entry?;
            if !key.starts_with(&prefix) {
                break;
            }
            let s = ItemSummary::parse(key, value)?;
            if s.uid() > hi {
                break;
            }
            if s.fai() {
                continue;
            }
            let matched = match node.on_summary(&s) {
                Some(v) => v,
                None => {
                    out.message_read();
                    // One message in memory at a time, dropped before the next is read.
                    let raw = self.body(txn, &s.content())?.ok_or_else(|| CodecError::Malformed {
                        record: "message body",
                        rule: format!("the content of item {} is not stored", s.id()),
                    })?;
                    let content = Content::new(&raw);
                    // The texts are made by `mail-parser` code outside the parse (`Content::new` guards the
                    // parse); a panic there judges the message as one without a header section, as ingest would.
                    catch_unwind(AssertUnwindSafe(|| node.on_message(&s, &content)))
                        .unwrap_or_else(|_| node.on_message(&s, &Content::unparsed(&raw)))
                }
            };
            if matched {
                out.push(&s, Hit { folder, uid: s.uid(), item: s.id(), modseq: s.modseq() });
            }
        }
        Ok(())
    }
}
