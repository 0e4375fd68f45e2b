//! Search: a [`Query`] over the items of a folder ([`MailStore::search`]) or of a whole mailbox
//! ([`MailStore::search_mailbox`]), with IMAP SEARCH's semantics (RFC 3501 / RFC 9051), evaluated by a scan;
//! and its hits sorted ([`MailStore::sort`], RFC 5256 / RFC 5957: see the [`sort`] module).
//!
//! ```
//! use mailstore::model::search::{Query, Window};
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
//!     b"From: Bob <bob@example.com>\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n\r\nsee you\r\n",
//!     b"From: carol@example.org\r\nSubject: lunch\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
//!       the smartchoice plan is =\r\nready\r\n",
//!     b"From: dave@example.net\r\nSubject: hello\r\n\r\nnothing here\r\n",
//! ];
//! for raw in messages {
//!     db.commit(MailOp::append(erin, inbox, raw.to_vec(), Flags::empty(), vec![]))?;
//! }
//! db.commit(MailOp::store_flags(erin, inbox, vec![3], mailstore::model::FlagAction::Add, Flags::SEEN))?;
//!
//! let search = |q: Query| db.read(|s, txn| s.search(txn, &erin, inbox, &q, Window::all()));
//! // Encoded words are decoded and case is folded: "GRÜSSE" finds "Grüße".
//! assert_eq!(search(Query::subject("GRÜSSE"))?.uids(), [1]);
//! // Substrings inside words and addresses; quoted-printable soft line breaks are undone.
//! assert_eq!(search(Query::body("smartc"))?.uids(), [2]);
//! assert_eq!(search(Query::body("plan is ready"))?.uids(), [2]);
//! assert_eq!(search(Query::from("example"))?.uids(), [1, 2, 3]);
//! // Flags, AND / OR / NOT; ESEARCH's COUNT, MIN and MAX, and a page of the hits.
//! let unseen = search(Query::from("example").and(Query::lacks_flags(Flags::SEEN)))?;
//! assert_eq!((unseen.count, unseen.min(), unseen.max()), (2, Some(1), Some(2)));
//! let page = db.read(|s, txn| s.search(txn, &erin, inbox, &Query::all(), Window::page(1, 1)))?;
//! assert_eq!((page.count, page.uids()), (3, vec![2]));
//! db.dismount()
//! # }
//! ```
//!
//! # Semantics
//!
//! - **Text criteria** ([`Query::Header`], [`Query::Body`], [`Query::Text`]) are case-insensitive *substring*
//!   matches on the decoded text: `smartc` is found in `smartchoice`, `example` in `user@example.com`. There are
//!   no words, tokens or stemming, so no match is invented and none is missed. An empty text matches every item
//!   (a [`HeaderField::Named`] one: every item that has the field).
//! - **Decoding.** Messages are parsed with `mail-parser` (as at ingest): RFC 2047 encoded words in headers,
//!   `quoted-printable` and `base64` transfer encodings, and the part's charset converted to UTF-8 (text whose
//!   charset is unknown or wrong is read as UTF-8 with invalid sequences replaced).
//! - **Body** is every `text/*` part of the message, of every multipart level, and the text parts of attached
//!   messages (`message/rfc822`, to the nesting `mail-parser` parses: three levels). A text criterion matches
//!   inside one part, not across two. **HTML** parts are matched as their decoded source: the text between tags is
//!   found, and so are tag and attribute names (a search for `div` may find an HTML message); character
//!   references (`&amp;`) are not expanded. Non-text parts (images, PDFs) are not searched.
//! - **Subject** is the decoded `Subject` field; **From / To / Cc / Bcc** are their addresses, groups flattened
//!   into their members as in the [envelope](crate::model::envelope); each address is matched on its own, as
//!   `Display Name <local@domain>` (`<local@domain>` without a name), so the text may be part of the name, part of
//!   the address, or span them (`Bob <bob@`). Where a field occurs more than once, the last occurrence counts (as
//!   in the envelope). A **named field** ([`Query::header`]) is every occurrence of it in the message's top-level
//!   header: address fields as their addresses separated by `, ` (group names kept), every other field (fields
//!   `mail-parser` does not know, dates, `Content-Type`, `Message-ID` with its brackets) as unstructured text:
//!   unfolded, RFC 2047 encoded words decoded.
//! - **Text** ([`Query::Text`], IMAP `TEXT`) matches any top-level header field, as `Name: value` with the value
//!   as for a named field, or the body.
//! - **Dates.** [`Query::Day`] compares days: the received time's UTC day (the store keeps INTERNALDATE in UTC),
//!   and the `Date:` header's own day in its own zone (RFC 3501: "disregarding time and timezone").
//!   [`Query::Time`] compares instants (JMAP). A `Date:` that is absent or invalid (as the envelope judged it at
//!   ingest) matches no sent-date criterion (and so does match its negation: `NOT SENTBEFORE d`).
//! - **Flags** are the item's system flags; **keywords** compare ASCII case-insensitively; **sizes** are the raw
//!   message's size (RFC822.SIZE); **UIDs** and **MODSEQ** are the item's own.
//! - **Results** are in UID order (for a mailbox: folder id, then UID); folder-associated items are never
//!   searched.
//!
//! # Case and Unicode
//!
//! Case is folded one character at a time as the lowercase of the uppercase of the lowercase
//! (`char::to_lowercase`, `char::to_uppercase`, `char::to_lowercase`), without context, on the needle and the text
//! alike. Two texts then compare equal where Unicode full case folding (CaseFolding.txt, statuses C and F) makes
//! them equal, for everything mail meets: `ß`, `ẞ`, `SS` and `ss` match, final `ς` matches `σ` and `Σ`, `ſ`
//! matches `s`, the Kelvin sign matches `k`, `ﬀ` matches `ff`, Greek with iota subscript matches its capitals,
//! Cyrillic folds as expected. (`str::to_lowercase` alone would not: it turns `Σ` into `ς` at the end of a word and
//! leaves `ß` and `ss` apart.) The one knowing difference: dotless `ı` also matches `i` and `I` (its uppercase is
//! `I`), where full folding keeps it apart; the Turkish rules (`I` to `ı`) are not applied. No Unicode
//! normalization is applied: a precomposed `é` and `e` followed by a combining accent are different texts, as they
//! are to RFC 5051's `i;unicode-casemap` without normalization.
//!
//! # What is read
//!
//! Criteria on flags, keywords, UIDs, MODSEQ, sizes and dates are decided by the item's listing record (the UID
//! index's entry, [`ItemSummary`](crate::model::ItemSummary)), as are `Subject` and address criteria whenever
//! the stored envelope holds the field whole (no string or list was cut at ingest; otherwise the message is
//! read). The stored envelope is taken as the message's: it is what [`envelope::parse`](crate::model::envelope::parse)
//! made of the same bytes with the same parser (an embedder that logs an envelope of its own making gets answers
//! from it). The evaluation is three-valued: `Seen AND BODY x` reads no message that is not `\Seen`, `UID 5:9 OR
//! ...` walks only the UIDs that can match. A message is read only when the listing record cannot decide, one at
//! a time: its bytes (at most [`MAX_MESSAGE_SIZE`](crate::model::MAX_MESSAGE_SIZE)), the parsed message and the
//! folded text of its parts are in memory together, a small multiple of the message's size, and dropped before the
//! next item.
//!
//! # Limits
//!
//! A query is checked before anything is read ([`Query::check_limits`]); one past a limit is
//! [`MailError::InvalidQuery`](crate::model::MailError::InvalidQuery) with the [`QueryError`]:
//! [`MAX_QUERY_DEPTH`](crate::model::MAX_QUERY_DEPTH) levels of nesting,
//! [`MAX_QUERY_TERMS`](crate::model::MAX_QUERY_TERMS) terms,
//! [`MAX_QUERY_UID_RANGES`](crate::model::MAX_QUERY_UID_RANGES) UID ranges and
//! [`MAX_QUERY_TEXT`](crate::model::MAX_QUERY_TEXT) bytes of text. The check walks the query without recursion;
//! the evaluation recurses at most `MAX_QUERY_DEPTH` deep.
//!
//! [`MailStore::search`]: crate::model::MailStore::search
//! [`MailStore::search_mailbox`]: crate::model::MailStore::search_mailbox
//! [`MailStore::sort`]: crate::model::MailStore::sort

mod eval;
mod query;
pub mod sort;
mod text;
pub mod thread;

pub use query::{DateField, Day, DayCmp, HeaderField, Query, QueryError, TimeCmp};
pub use sort::{SortField, SortKey, base_subject};
pub use thread::{Thread, ThreadAlgorithm, ThreadNode, ThreadResults, format_threads};

use crate::model::types::{FolderId, ItemId, ModSeq, Uid};

/// Which hits a search returns (JMAP `position` / `limit`): the summary (count, first, last) always covers
/// them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    /// Skip this many hits.
    pub position: usize,
    /// Return at most this many (`None`: all the rest).
    pub limit: Option<usize>,
}

impl Window {
    /// Every hit.
    pub fn all() -> Window {
        Window { position: 0, limit: None }
    }

    /// At most `limit` hits from the `position`-th (0-based) on.
    pub fn page(position: usize, limit: usize) -> Window {
        Window { position, limit: Some(limit) }
    }

    /// No hit: only the summary (ESEARCH `RETURN (COUNT)`, `MIN`, `MAX`).
    pub fn none() -> Window {
        Window { position: 0, limit: Some(0) }
    }
}

impl Default for Window {
    fn default() -> Self {
        Window::all()
    }
}

/// One matching item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hit {
    /// Its folder.
    pub folder: FolderId,
    /// Its UID there.
    pub uid: Uid,
    /// Its item id.
    pub item: ItemId,
    /// Its MODSEQ (for CONDSTORE's `(MODSEQ n)`).
    pub modseq: ModSeq,
}

/// The answer to a search: a summary of every hit and the asked-for window of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SearchResults {
    /// How many items match (ESEARCH `COUNT`).
    pub count: u64,
    /// The first hit in result order (for a folder: the lowest UID, ESEARCH `MIN`).
    pub first: Option<Hit>,
    /// The last hit in result order (for a folder: the highest UID, ESEARCH `MAX`).
    pub last: Option<Hit>,
    /// The highest MODSEQ of all hits (RFC 7162's `(MODSEQ n)` of a SEARCH response).
    pub highest_modseq: Option<ModSeq>,
    /// The window's position.
    pub position: usize,
    /// The hits of the window, in result order.
    pub hits: Vec<Hit>,
    /// How many messages had to be read because their listing record could not decide (see
    /// [what is read](self#what-is-read)): the cost of the scan beyond the UID index.
    pub messages_read: u64,
}

impl SearchResults {
    /// The UIDs of the window's hits.
    pub fn uids(&self) -> Vec<Uid> {
        self.hits.iter().map(|h| h.uid).collect()
    }

    /// The item ids of the window's hits.
    pub fn items(&self) -> Vec<ItemId> {
        self.hits.iter().map(|h| h.item).collect()
    }

    /// ESEARCH `MIN`: the first hit's UID.
    pub fn min(&self) -> Option<Uid> {
        self.first.map(|h| h.uid)
    }

    /// ESEARCH `MAX`: the last hit's UID.
    pub fn max(&self) -> Option<Uid> {
        self.last.map(|h| h.uid)
    }
}
