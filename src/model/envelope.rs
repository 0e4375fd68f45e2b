//! The envelope of a message: what an IMAP or JMAP server needs to list, sort, search and thread mail
//! without touching the message body.
//!
//! [`parse`] reads the raw RFC 5322 bytes of a message **once, at ingest**, with `mail-parser`, and extracts:
//!
//! - the `Subject`, decoded (RFC 2047 encoded words become UTF-8);
//! - the address fields `From`, `Sender`, `Reply-To`, `To`, `Cc` and `Bcc`, with display names decoded and
//!   each member of a group (`Friends: a@x, b@y;`) marked with the group's name ([`Address::group`]);
//! - the `Date` as seconds since the Unix epoch, in UTC, with the zone it was written in, and as written (IMAP's
//!   ENVELOPE copies it; SENTON and friends compare the date in its own zone);
//! - the `Message-ID`, `In-Reply-To` and `References` ids, without their angle brackets (for threading);
//! - the raw size, and whether the message has any attachment part.
//!
//! # Why once
//!
//! The resulting [`Envelope`] is stored *inside the logged operation* that appends the message. Replaying the
//! log after a crash, or on a passive copy, therefore never re-parses the message: apply reads the envelope as
//! logged. That keeps apply deterministic even if a later `mail-parser` version parses the same bytes
//! differently, and it keeps replay cheap.
//!
//! # Semantics
//!
//! Where a header occurs more than once, the **last** occurrence is used (`mail-parser`'s choice, and the rule of
//! RFC 8621 for JMAP's `header:Name` properties). A message that cannot be parsed at all, has no header section,
//! or has no `From` field is still accepted: its envelope is marked [`Envelope::malformed`] and carries whatever
//! could be extracted. [`parse`] never panics.
//!
//! # Bounds
//!
//! Hostile input must not produce an envelope that bloats every log record that carries it, so every field is
//! bounded:
//!
//! - every string (subject, display name, email, message id) is at most [`MAX_FIELD_LEN`] bytes, truncated on
//!   a UTF-8 character boundary;
//! - every address field holds at most [`MAX_LIST_LEN`] entries (the first ones, in header order; an empty group
//!   is one entry);
//! - `In-Reply-To` holds at most [`MAX_LIST_LEN`] ids (the first ones); `References` holds at most
//!   [`MAX_LIST_LEN`] ids: the first (the thread's root) and the last `MAX_LIST_LEN - 1` (the nearest ancestors),
//!   which are the ones threading needs.

use std::panic::{AssertUnwindSafe, catch_unwind};

use mail_parser::{DateTime, HeaderValue, Message, MessageParser, PartType};
use serde::{Deserialize, Serialize};

/// The most bytes any string field of an [`Envelope`] holds: RFC 5322's limit on the length of a line.
///
/// Longer strings are truncated on a UTF-8 character boundary, so a truncated field may be a few bytes shorter.
pub const MAX_FIELD_LEN: usize = 998;

/// The most entries any list field of an [`Envelope`] holds (addresses per address field, ids per
/// `In-Reply-To` or `References`).
pub const MAX_LIST_LEN: usize = 100;

/// One mailbox of an address field.
///
/// The members of a group (RFC 5322 `display-name: mailbox-list;`) carry the group's name in
/// [`group`](Address::group), in header order; a group without members (`undisclosed-recipients:;`) is one entry
/// with neither name nor email.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// The display name, decoded to UTF-8 (`None` if absent or blank). `mail-parser` may fold comments into it.
    pub name: Option<String>,
    /// The address as `local@domain` (`None` if the entry has no address, e.g. `From: undisclosed`).
    pub email: Option<String>,
    /// The name of the group this mailbox belongs to, decoded (`None` outside any group).
    pub group: Option<String>,
}

/// The envelope of one message, parsed once at ingest and logged with it (see the [module docs](self)).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The `Subject`, decoded to UTF-8, at most [`MAX_FIELD_LEN`] bytes. `None` if absent or empty.
    pub subject: Option<String>,
    /// The `From` mailboxes.
    pub from: Vec<Address>,
    /// The `Sender` mailboxes.
    pub sender: Vec<Address>,
    /// The `Reply-To` mailboxes.
    pub reply_to: Vec<Address>,
    /// The `To` mailboxes.
    pub to: Vec<Address>,
    /// The `Cc` mailboxes.
    pub cc: Vec<Address>,
    /// The `Bcc` mailboxes.
    pub bcc: Vec<Address>,
    /// The `Date` as seconds since the Unix epoch (UTC); `None` if absent or not a valid date and time.
    pub date: Option<i64>,
    /// The zone `date` was written in, in minutes east of UTC (`-0500` is -300); `Some` exactly when `date` is.
    pub date_zone: Option<i16>,
    /// The `Date` field as written (unfolded, trimmed, at most [`MAX_FIELD_LEN`] bytes), valid or not; `None` if
    /// absent or blank. IMAP's ENVELOPE copies it rather than rewriting the date.
    pub date_text: Option<String>,
    /// The `Message-ID`, without angle brackets (the first id if the header holds several).
    pub message_id: Option<String>,
    /// The `In-Reply-To` message ids, without angle brackets.
    pub in_reply_to: Vec<String>,
    /// The `References` message ids, without angle brackets, oldest first.
    pub references: Vec<String>,
    /// The length of the raw message, in bytes.
    pub size: u64,
    /// Whether the message has any attachment part, in `mail-parser`'s sense (non-text parts, inline images
    /// included; text parts that are not bodies, such as `text/calendar` or `Content-Disposition: attachment`;
    /// attached messages), not counting the `text/plain` and `text/html` parts that are its bodies.
    pub has_attachments: bool,
    /// The bytes could not be parsed as a message, or have no header section, or no `From` mailbox could be read
    /// (absent or unparseable `From`). The other fields still hold whatever could be extracted.
    pub malformed: bool,
}

impl Envelope {
    /// The author's address: the first `From` mailbox that has one (`None` when none has).
    pub fn from_address(&self) -> Option<&str> {
        self.from.iter().find_map(|a| a.email.as_deref())
    }
}

/// Parses the raw RFC 5322 bytes of a message into its [`Envelope`].
///
/// Never panics and never fails: input that is not a message gives an envelope with
/// [`malformed`](Envelope::malformed) set. An empty input is `malformed` with `size` 0. All fields are bounded
/// as described in the [module docs](self#bounds): strings to [`MAX_FIELD_LEN`] bytes, lists to
/// [`MAX_LIST_LEN`] entries.
pub fn parse(raw: &[u8]) -> Envelope {
    let size = u64::try_from(raw.len()).unwrap_or(u64::MAX);
    // `mail-parser` promises not to panic, but it contains `debug_assert!`s and arithmetic on offsets; a panic
    // there must not take down the ingest path, so it degrades to a malformed envelope. (Only the parser is
    // guarded: a panic in the extraction below is a bug of ours and must surface.)
    match catch_unwind(AssertUnwindSafe(|| MessageParser::default().parse(raw))) {
        Ok(Some(message)) => Envelope { size, ..from_message(&message) },
        Ok(None) | Err(_) => Envelope { size, malformed: true, ..Envelope::default() },
    }
}

/// Extracts the envelope of a parsed message (everything but `size`).
fn from_message(message: &Message<'_>) -> Envelope {
    let from = addresses(message.from());
    // No header section means no From either.
    let malformed = !from.iter().any(|a| a.name.is_some() || a.email.is_some());
    let date = message.date().filter(|date| month_name_agrees(message, date)).and_then(|date| {
        let zone = i16::from(date.tz_hour) * 60 + i16::from(date.tz_minute);
        timestamp(date).map(|secs| (secs, if date.tz_before_gmt { -zone } else { zone }))
    });
    Envelope {
        subject: message.subject().and_then(bounded),
        sender: addresses(message.sender()),
        reply_to: addresses(message.reply_to()),
        to: addresses(message.to()),
        cc: addresses(message.cc()),
        bcc: addresses(message.bcc()),
        from,
        date: date.map(|(secs, _)| secs),
        date_zone: date.map(|(_, zone)| zone),
        date_text: message.header_raw(mail_parser::HeaderName::Date).map(unfold).as_deref().and_then(bounded),
        message_id: message_id(message),
        in_reply_to: ids(message.in_reply_to()).take(MAX_LIST_LEN).collect(),
        references: references(ids(message.references()).collect()),
        size: 0,
        has_attachments: has_attachments(message),
        malformed,
    }
}

/// An address field (list or groups) as at most [`MAX_LIST_LEN`] bounded entries: members of a group carry its
/// name, a group without members is one entry of its own, and mailboxes with neither a name nor an address are
/// skipped.
fn addresses(field: Option<&mail_parser::Address<'_>>) -> Vec<Address> {
    let mailbox = |addr: &mail_parser::Addr<'_>, group: &Option<String>| {
        let name = addr.name().and_then(bounded);
        let email = addr.address().and_then(bounded);
        (name.is_some() || email.is_some()).then(|| Address { name, email, group: group.clone() })
    };
    let mut out = Vec::new();
    match field {
        None => {}
        Some(mail_parser::Address::List(list)) => out.extend(list.iter().filter_map(|a| mailbox(a, &None))),
        Some(mail_parser::Address::Group(groups)) => {
            for g in groups {
                let group = g.name.as_deref().and_then(bounded);
                let before = out.len();
                out.extend(g.addresses.iter().filter_map(|a| mailbox(a, &group)));
                if out.len() == before && group.is_some() {
                    out.push(Address { group, ..Address::default() });
                }
                if out.len() >= MAX_LIST_LEN {
                    break;
                }
            }
        }
    }
    out.truncate(MAX_LIST_LEN);
    out
}

/// A header value unfolded (RFC 5322 §2.2.3: every line break removed) and trimmed.
fn unfold(raw: &str) -> String {
    raw.replace("\r\n", "").replace('\n', "").trim().to_owned()
}

/// The `Message-ID`: the first id if `mail-parser` found several.
fn message_id(message: &Message<'_>) -> Option<String> {
    message.header(mail_parser::HeaderName::MessageId).and_then(|value| ids(value).next())
}

/// The bounded, non-empty ids of a message-id header value (`mail-parser` has already stripped the brackets).
fn ids<'a>(value: &'a HeaderValue<'_>) -> impl Iterator<Item = String> + 'a {
    let list: &[std::borrow::Cow<'_, str>] = match value {
        HeaderValue::Text(id) => std::slice::from_ref(id),
        HeaderValue::TextList(ids) => ids,
        _ => &[],
    };
    list.iter().filter_map(|id| bounded(id))
}

/// Keeps at most [`MAX_LIST_LEN`] references: the first (the thread root) and the last `MAX_LIST_LEN - 1`.
fn references(mut all: Vec<String>) -> Vec<String> {
    if all.len() > MAX_LIST_LEN {
        let tail = all.len() - (MAX_LIST_LEN - 1);
        all.drain(1..tail);
    }
    all
}

/// The date as UTC seconds since the epoch, if it is a real date and time.
///
/// `mail-parser` accepts out-of-range fields (`31 Feb`, hour 99); those are rejected here rather than silently
/// normalised into another instant.
fn timestamp(date: &DateTime) -> Option<i64> {
    let days_in_month = match date.month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(date.year) => 29,
        2 => 28,
        _ => return None,
    };
    (date.is_valid() && date.day <= days_in_month).then(|| date.to_timestamp())
}

/// The month names of RFC 5322, January first.
const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];

/// Whether the month name written in the raw `Date` (the first alphabetic token right after a numeric one, comments
/// removed) is the month `mail-parser` returned.
///
/// `mail-parser` recognises month names by a hash of their second and third letters only, so `1 Foo 2003` or
/// `1 Xyz 2003` silently become some real month. A date whose written month is not the parsed one is rejected.
/// Dates with no such token (numeric months) are taken as parsed.
fn month_name_agrees(message: &Message<'_>, date: &DateTime) -> bool {
    let Some(raw) = message.header_raw(mail_parser::HeaderName::Date) else { return true };
    let mut text = String::with_capacity(raw.len());
    let mut depth = 0usize;
    for c in raw.chars() {
        match c {
            '(' => depth = depth.saturating_add(1),
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => text.push(c),
            _ => {}
        }
    }
    let mut previous_is_number = false;
    for token in text.split(|c: char| c.is_whitespace() || c == ',').filter(|t| !t.is_empty()) {
        if previous_is_number && token.bytes().all(|b| b.is_ascii_alphabetic()) {
            let expected = usize::from(date.month).checked_sub(1).and_then(|i| MONTHS.get(i));
            return expected.is_some_and(|name| name.eq_ignore_ascii_case(token));
        }
        previous_is_number = token.bytes().all(|b| b.is_ascii_digit());
    }
    true
}

/// Whether `year` is a Gregorian leap year.
fn is_leap_year(year: u16) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

/// Whether the message has an attachment part that is not a text body.
///
/// `mail-parser` lists as attachments every non-text part (inline images included, even when it also lists them
/// as bodies), every text part that is not a body (`text/calendar`, `Content-Disposition: attachment`) and attached
/// messages. A `text/plain` or `text/html` part that is also one of the message's bodies is not counted.
fn has_attachments(message: &Message<'_>) -> bool {
    message.attachments.iter().any(|id| {
        let is_text = matches!(
            message.parts.get(*id as usize).map(|part| &part.body),
            Some(PartType::Text(_) | PartType::Html(_))
        );
        let is_body = message.text_body.contains(id) || message.html_body.contains(id);
        !(is_text && is_body)
    })
}

/// A string field as stored: `None` if blank, otherwise truncated to [`MAX_FIELD_LEN`] bytes on a char
/// boundary.
fn bounded(s: &str) -> Option<String> {
    if s.trim().is_empty() {
        return None;
    }
    // `floor_char_boundary` never exceeds `s.len()` and always lands on a boundary; `get` keeps it panic-free.
    Some(s.get(..s.floor_char_boundary(MAX_FIELD_LEN)).unwrap_or_default().to_owned())
}
