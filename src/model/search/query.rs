//! The query type: what IMAP SEARCH and JMAP `Email/query` filters express, built with constructors.

use std::ops::RangeInclusive;

use crate::model::ops::{MAX_QUERY_DEPTH, MAX_QUERY_TERMS, MAX_QUERY_TEXT, MAX_QUERY_UID_RANGES};
use crate::model::types::{Flags, ModSeq, Uid};
use crate::time::{self, Timestamp};

/// A search over the items of a folder or a mailbox (see the [module docs](super) for the exact semantics).
///
/// Build it with the constructors ([`Query::from`], [`Query::body`], [`Query::has_flags`], ...) and combine with
/// [`Query::and`], [`Query::or`] and [`Query::not`]. The variants are public for matching (a server converting
/// or printing queries); new variants may come, hence `#[non_exhaustive]`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Query {
    /// Every item (IMAP `ALL`).
    All,
    /// A header field contains the text (case-insensitive substring, after decoding).
    Header {
        /// Which field.
        field: HeaderField,
        /// The text looked for; empty matches every item (for [`HeaderField::Named`]: every item that has the
        /// field).
        text: String,
    },
    /// The decoded text of the message's text parts contains the text (IMAP `BODY`, JMAP `body`).
    Body(String),
    /// A header field or the body contains the text (IMAP `TEXT`, JMAP `text`).
    Text(String),
    /// A date compared as a point in time (JMAP `before` / `after`).
    Time {
        /// Which date.
        field: DateField,
        /// How it compares.
        cmp: TimeCmp,
        /// With what.
        at: Timestamp,
    },
    /// A date compared as a calendar day, disregarding time and time zone (IMAP `BEFORE`, `ON`, `SINCE`,
    /// `SENTBEFORE`, `SENTON`, `SENTSINCE`).
    Day {
        /// Which date.
        field: DateField,
        /// How it compares.
        cmp: DayCmp,
        /// With what.
        day: Day,
    },
    /// The size is strictly larger than this many bytes (IMAP `LARGER`, JMAP `minSize` is `Larger(n - 1)`).
    Larger(u64),
    /// The size is strictly smaller than this many bytes (IMAP `SMALLER`, JMAP `maxSize`).
    Smaller(u64),
    /// Every one of these system flags is set (IMAP `SEEN`, `FLAGGED`, ...).
    FlagsSet(Flags),
    /// None of these system flags is set (IMAP `UNSEEN`, `UNFLAGGED`, ...).
    FlagsUnset(Flags),
    /// The keyword is set (compared ASCII case-insensitively, as IMAP atoms are; IMAP `KEYWORD`, JMAP
    /// `hasKeyword`).
    Keyword(String),
    /// The keyword is not set (IMAP `UNKEYWORD`, JMAP `notKeyword`).
    NoKeyword(String),
    /// The UID is in one of these ranges (inclusive; IMAP `UID`). `*` and message sequence numbers are the
    /// server's to resolve into UIDs.
    Uids(Vec<RangeInclusive<Uid>>),
    /// The MODSEQ is at least this (RFC 7162 `MODSEQ`).
    ModSeqAtLeast(ModSeq),
    /// Every sub-query matches (an empty list matches everything).
    And(Vec<Query>),
    /// At least one sub-query matches (an empty list matches nothing).
    Or(Vec<Query>),
    /// The sub-query does not match.
    Not(Box<Query>),
}

/// The header field of a [`Query::Header`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderField {
    /// `From`, each address matched as `Display Name <local@domain>`.
    From,
    /// `To`, as `From`.
    To,
    /// `Cc`, as `From`.
    Cc,
    /// `Bcc`, as `From`.
    Bcc,
    /// `Subject`, decoded.
    Subject,
    /// Any field by name (compared ASCII case-insensitively), every occurrence of it.
    Named(String),
}

/// Which date of an item a date criterion looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DateField {
    /// When it was received (IMAP INTERNALDATE, JMAP `receivedAt`): the item's `received` time, in UTC.
    Received,
    /// The message's `Date:` header (JMAP `sentAt`). An item whose `Date:` is absent or invalid matches no date
    /// criterion on it.
    Sent,
}

/// How a [`Query::Time`] compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeCmp {
    /// Strictly earlier than the time.
    Before,
    /// At the time or later.
    Since,
}

/// How a [`Query::Day`] compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DayCmp {
    /// On an earlier day.
    Before,
    /// On that day.
    On,
    /// On that day or a later one.
    Since,
}

/// A calendar day (proleptic Gregorian), as IMAP's `date` arguments are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day {
    days: i64,
}

impl Day {
    /// The day `year`-`month`-`day`; `None` if there is no such day (or the year is outside 1..=9999).
    pub fn new(year: i32, month: u32, day: u32) -> Option<Day> {
        let (y, m, d) = (i64::from(year), i64::from(month), i64::from(day));
        let valid = (1..=9999).contains(&y) && (1..=12).contains(&m) && (1..=time::days_in_month(y, m)).contains(&d);
        valid.then(|| Day { days: time::days_from_civil(y, m, d) })
    }

    /// The day (in UTC) of a point in time.
    pub fn of(at: Timestamp) -> Day {
        Day { days: (at.as_micros() / 86_400_000_000) as i64 }
    }

    /// The year, month and day.
    pub fn ymd(self) -> (i32, u32, u32) {
        let (y, m, d) = time::civil_from_days(self.days);
        (y as i32, m as u32, d as u32)
    }

    /// Days since 1970-01-01 (negative before it).
    pub(crate) fn days(self) -> i64 {
        self.days
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl Query {
    /// Every item.
    pub fn all() -> Query {
        Query::All
    }

    /// A `From` address contains `text`.
    pub fn from(text: impl Into<String>) -> Query {
        Query::Header { field: HeaderField::From, text: text.into() }
    }

    /// A `To` address contains `text`.
    pub fn to(text: impl Into<String>) -> Query {
        Query::Header { field: HeaderField::To, text: text.into() }
    }

    /// A `Cc` address contains `text`.
    pub fn cc(text: impl Into<String>) -> Query {
        Query::Header { field: HeaderField::Cc, text: text.into() }
    }

    /// A `Bcc` address contains `text`.
    pub fn bcc(text: impl Into<String>) -> Query {
        Query::Header { field: HeaderField::Bcc, text: text.into() }
    }

    /// The `Subject` contains `text`.
    pub fn subject(text: impl Into<String>) -> Query {
        Query::Header { field: HeaderField::Subject, text: text.into() }
    }

    /// An occurrence of the header field `name` contains `text` (IMAP `HEADER name text`); with an empty
    /// `text`, the item has the field.
    pub fn header(name: impl Into<String>, text: impl Into<String>) -> Query {
        Query::Header { field: HeaderField::Named(name.into()), text: text.into() }
    }

    /// The body contains `text`.
    pub fn body(text: impl Into<String>) -> Query {
        Query::Body(text.into())
    }

    /// A header field or the body contains `text`.
    pub fn text(text: impl Into<String>) -> Query {
        Query::Text(text.into())
    }

    /// Received strictly before `at`.
    pub fn received_before(at: Timestamp) -> Query {
        Query::Time { field: DateField::Received, cmp: TimeCmp::Before, at }
    }

    /// Received at `at` or later.
    pub fn received_since(at: Timestamp) -> Query {
        Query::Time { field: DateField::Received, cmp: TimeCmp::Since, at }
    }

    /// `Date:` strictly before `at`.
    pub fn sent_before(at: Timestamp) -> Query {
        Query::Time { field: DateField::Sent, cmp: TimeCmp::Before, at }
    }

    /// `Date:` at `at` or later.
    pub fn sent_since(at: Timestamp) -> Query {
        Query::Time { field: DateField::Sent, cmp: TimeCmp::Since, at }
    }

    /// Received on a day `cmp` `day` (UTC days; IMAP `BEFORE` / `ON` / `SINCE`).
    pub fn received_day(cmp: DayCmp, day: Day) -> Query {
        Query::Day { field: DateField::Received, cmp, day }
    }

    /// Sent on a day `cmp` `day`, the day as the `Date:` header writes it, in its own time zone (IMAP
    /// `SENTBEFORE` / `SENTON` / `SENTSINCE`).
    pub fn sent_day(cmp: DayCmp, day: Day) -> Query {
        Query::Day { field: DateField::Sent, cmp, day }
    }

    /// Larger than `bytes`.
    pub fn larger(bytes: u64) -> Query {
        Query::Larger(bytes)
    }

    /// Smaller than `bytes`.
    pub fn smaller(bytes: u64) -> Query {
        Query::Smaller(bytes)
    }

    /// Every flag of `flags` is set.
    pub fn has_flags(flags: Flags) -> Query {
        Query::FlagsSet(flags)
    }

    /// No flag of `flags` is set.
    pub fn lacks_flags(flags: Flags) -> Query {
        Query::FlagsUnset(flags)
    }

    /// The keyword is set.
    pub fn keyword(keyword: impl Into<String>) -> Query {
        Query::Keyword(keyword.into())
    }

    /// The keyword is not set.
    pub fn no_keyword(keyword: impl Into<String>) -> Query {
        Query::NoKeyword(keyword.into())
    }

    /// The UID is in one of `ranges`.
    pub fn uids(ranges: impl IntoIterator<Item = RangeInclusive<Uid>>) -> Query {
        Query::Uids(ranges.into_iter().collect())
    }

    /// The MODSEQ is at least `modseq`.
    pub fn modseq_at_least(modseq: ModSeq) -> Query {
        Query::ModSeqAtLeast(modseq)
    }

    /// Every query of `queries` matches.
    pub fn all_of(queries: impl IntoIterator<Item = Query>) -> Query {
        Query::And(queries.into_iter().collect())
    }

    /// At least one query of `queries` matches.
    pub fn any_of(queries: impl IntoIterator<Item = Query>) -> Query {
        Query::Or(queries.into_iter().collect())
    }

    /// This and `other`.
    pub fn and(self, other: Query) -> Query {
        match self {
            Query::And(mut list) => {
                list.push(other);
                Query::And(list)
            }
            first => Query::And(vec![first, other]),
        }
    }

    /// This or `other`.
    pub fn or(self, other: Query) -> Query {
        match self {
            Query::Or(mut list) => {
                list.push(other);
                Query::Or(list)
            }
            first => Query::Or(vec![first, other]),
        }
    }

    /// Not this (`Query::not(q)`; named so that it reads as the operator in a chain: `q.negate()`).
    pub fn negate(self) -> Query {
        Query::Not(Box::new(self))
    }

    /// Not `query`.
    #[allow(clippy::should_implement_trait)]
    pub fn not(query: Query) -> Query {
        Query::Not(Box::new(query))
    }

    /// Whether the query is within the [limits](super#limits): nesting depth, number of terms, UID ranges and
    /// text. Walks the query with an explicit stack, so any depth is judged without recursion.
    pub fn check_limits(&self) -> Result<(), QueryError> {
        let mut stack = vec![(self, 1usize)];
        let (mut terms, mut ranges, mut text) = (0usize, 0usize, 0usize);
        while let Some((q, depth)) = stack.pop() {
            if depth > MAX_QUERY_DEPTH {
                return Err(QueryError::TooDeep { max: MAX_QUERY_DEPTH });
            }
            terms += 1;
            if terms > MAX_QUERY_TERMS {
                return Err(QueryError::TooManyTerms { max: MAX_QUERY_TERMS });
            }
            match q {
                Query::Header { field, text: t } => {
                    text += t.len();
                    if let HeaderField::Named(name) = field {
                        text += name.len();
                        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                            return Err(QueryError::BadHeaderName);
                        }
                    }
                }
                Query::Body(t) | Query::Text(t) | Query::Keyword(t) | Query::NoKeyword(t) => text += t.len(),
                Query::Uids(r) => ranges += r.len(),
                Query::And(list) | Query::Or(list) => stack.extend(list.iter().map(|q| (q, depth + 1))),
                Query::Not(q) => stack.push((q, depth + 1)),
                _ => {}
            }
            if ranges > MAX_QUERY_UID_RANGES {
                return Err(QueryError::TooManyUidRanges { max: MAX_QUERY_UID_RANGES });
            }
            if text > MAX_QUERY_TEXT {
                return Err(QueryError::TextTooLong { max: MAX_QUERY_TEXT });
            }
        }
        Ok(())
    }
}

/// Why a query was refused before anything was read. It reaches callers as
/// [`MailError::InvalidQuery`](crate::model::MailError::InvalidQuery).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// `And` / `Or` / `Not` nest deeper than the limit.
    #[error("the query nests deeper than {max} levels")]
    TooDeep {
        /// [`MAX_QUERY_DEPTH`](crate::model::MAX_QUERY_DEPTH).
        max: usize,
    },
    /// The query has more terms (nodes of its tree) than the limit.
    #[error("the query has more than {max} terms")]
    TooManyTerms {
        /// [`MAX_QUERY_TERMS`](crate::model::MAX_QUERY_TERMS).
        max: usize,
    },
    /// The query's UID sets have more ranges than the limit.
    #[error("the query's UID sets have more than {max} ranges")]
    TooManyUidRanges {
        /// [`MAX_QUERY_UID_RANGES`](crate::model::MAX_QUERY_UID_RANGES).
        max: usize,
    },
    /// The query's strings together are longer than the limit.
    #[error("the query's text is longer than {max} bytes")]
    TextTooLong {
        /// [`MAX_QUERY_TEXT`](crate::model::MAX_QUERY_TEXT).
        max: usize,
    },
    /// A [`HeaderField::Named`] name is empty or not a field name (printable ASCII without `:`).
    #[error("a header field name is empty or not printable ASCII without ':'")]
    BadHeaderName,
}
