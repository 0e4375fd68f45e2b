//! IMAP SEARCH keys (imap-codec's `SearchKey`) as the store's search queries (`mailstore::model::search`).
//!
//! The store evaluates everything about the messages; the session keeps what only it knows: message sequence
//! numbers and `*`, which become UID ranges here from the session's view of the folder.

use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use mailstore::model::search::{Day, DayCmp, Query};
use mailstore::model::{Flags, MAX_QUERY_DEPTH, Uid};

/// Why a SEARCH could not become a query (answered BAD).
#[derive(Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// The keys nest deeper than the store accepts.
    TooDeep,
    /// A date the store's calendar cannot hold.
    Date,
}

/// The query of a SEARCH command's keys (ANDed), `uids` being the session's UIDs in sequence-number order.
pub fn query(keys: &[SearchKey<'_>], uids: &[Uid]) -> Result<Query, Unsupported> {
    let list: Result<Vec<Query>, Unsupported> = keys.iter().map(|k| key(k, uids, 2)).collect();
    let mut list = list?;
    Ok(if list.len() == 1 { list.remove(0) } else { Query::And(list) })
}

fn text(s: &impl AsRef<[u8]>) -> String {
    String::from_utf8_lossy(s.as_ref()).into_owned()
}

fn day(d: &chrono::NaiveDate) -> Result<Day, Unsupported> {
    use chrono::Datelike;
    Day::new(d.year(), d.month(), d.day()).ok_or(Unsupported::Date)
}

fn key(k: &SearchKey<'_>, uids: &[Uid], depth: usize) -> Result<Query, Unsupported> {
    if depth > MAX_QUERY_DEPTH {
        return Err(Unsupported::TooDeep);
    }
    let sub = |k: &SearchKey<'_>| key(k, uids, depth + 1);
    Ok(match k {
        SearchKey::And(list) => Query::And(list.as_ref().iter().map(sub).collect::<Result<_, _>>()?),
        SearchKey::Or(a, b) => Query::Or(vec![sub(a)?, sub(b)?]),
        SearchKey::Not(k) => Query::not(sub(k)?),
        SearchKey::SequenceSet(set) => Query::Uids(sequence_ranges(set, uids)),
        SearchKey::Uid(set) => Query::Uids(uid_ranges(set, uids.last().copied().unwrap_or(0))),
        // The store keeps no \Recent: no message is recent, every message is old.
        SearchKey::All | SearchKey::Old => Query::all(),
        SearchKey::New | SearchKey::Recent => Query::any_of([]),
        SearchKey::Answered => Query::has_flags(Flags::ANSWERED),
        SearchKey::Deleted => Query::has_flags(Flags::DELETED),
        SearchKey::Draft => Query::has_flags(Flags::DRAFT),
        SearchKey::Flagged => Query::has_flags(Flags::FLAGGED),
        SearchKey::Seen => Query::has_flags(Flags::SEEN),
        SearchKey::Unanswered => Query::lacks_flags(Flags::ANSWERED),
        SearchKey::Undeleted => Query::lacks_flags(Flags::DELETED),
        SearchKey::Undraft => Query::lacks_flags(Flags::DRAFT),
        SearchKey::Unflagged => Query::lacks_flags(Flags::FLAGGED),
        SearchKey::Unseen => Query::lacks_flags(Flags::SEEN),
        SearchKey::Keyword(k) => Query::keyword(k.as_ref()),
        SearchKey::Unkeyword(k) => Query::no_keyword(k.as_ref()),
        SearchKey::Larger(n) => Query::larger(u64::from(*n)),
        SearchKey::Smaller(n) => Query::smaller(u64::from(*n)),
        SearchKey::Before(d) => Query::received_day(DayCmp::Before, day(d.as_ref())?),
        SearchKey::On(d) => Query::received_day(DayCmp::On, day(d.as_ref())?),
        SearchKey::Since(d) => Query::received_day(DayCmp::Since, day(d.as_ref())?),
        SearchKey::SentBefore(d) => Query::sent_day(DayCmp::Before, day(d.as_ref())?),
        SearchKey::SentOn(d) => Query::sent_day(DayCmp::On, day(d.as_ref())?),
        SearchKey::SentSince(d) => Query::sent_day(DayCmp::Since, day(d.as_ref())?),
        SearchKey::Subject(s) => Query::subject(text(s)),
        SearchKey::From(s) => Query::from(text(s)),
        SearchKey::To(s) => Query::to(text(s)),
        SearchKey::Cc(s) => Query::cc(text(s)),
        SearchKey::Bcc(s) => Query::bcc(text(s)),
        SearchKey::Header(name, value) => Query::header(text(name), text(value)),
        SearchKey::Body(s) => Query::body(text(s)),
        SearchKey::Text(s) => Query::text(text(s)),
        SearchKey::ModSequence { modseq, .. } => Query::modseq_at_least(*modseq),
    })
}

fn bound(v: &SeqOrUid, largest: u32) -> u32 {
    match v {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => largest,
    }
}

/// A sequence set of message numbers (`*` the last) as the UID ranges of those messages in the session's view.
fn sequence_ranges(set: &SequenceSet, uids: &[Uid]) -> Vec<std::ops::RangeInclusive<Uid>> {
    let count = u32::try_from(uids.len()).unwrap_or(u32::MAX);
    let uid_of = |seq: u32| uids.get(seq as usize - 1).copied();
    let mut out = Vec::new();
    for s in set.0.as_ref() {
        let (a, b) = match s {
            Sequence::Single(v) => (bound(v, count), bound(v, count)),
            Sequence::Range(a, b) => (bound(a, count), bound(b, count)),
        };
        let (lo, hi) = (a.min(b).max(1), a.max(b).min(count));
        if lo <= hi
            && let (Some(first), Some(last)) = (uid_of(lo), uid_of(hi))
        {
            out.push(first..=last);
        }
    }
    out
}

/// A UID set (`*` the highest UID of the view; `a:b` in either order) as UID ranges.
fn uid_ranges(set: &SequenceSet, largest: Uid) -> Vec<std::ops::RangeInclusive<Uid>> {
    set.0
        .as_ref()
        .iter()
        .map(|s| {
            let (a, b) = match s {
                Sequence::Single(v) => (bound(v, largest), bound(v, largest)),
                Sequence::Range(a, b) => (bound(a, largest), bound(b, largest)),
            };
            a.min(b)..=a.max(b)
        })
        .collect()
}

/// Whether the keys use MODSEQ (the response then carries `(MODSEQ n)`, RFC 7162 3.1.5).
pub fn uses_modseq(keys: &[SearchKey<'_>]) -> bool {
    keys.iter().any(|k| match k {
        SearchKey::ModSequence { .. } => true,
        SearchKey::And(list) => uses_modseq(list.as_ref()),
        SearchKey::Not(k) => uses_modseq(std::slice::from_ref(k.as_ref())),
        SearchKey::Or(a, b) => {
            uses_modseq(std::slice::from_ref(a.as_ref())) || uses_modseq(std::slice::from_ref(b.as_ref()))
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_become_uid_ranges() {
        let uids = [3, 5, 9, 10, 20];
        let set = |s: &str| SequenceSet::try_from(s).unwrap();
        assert_eq!(sequence_ranges(&set("2:4"), &uids), vec![5..=10]);
        assert_eq!(sequence_ranges(&set("4:*"), &uids), vec![10..=20]);
        assert_eq!(sequence_ranges(&set("*:4"), &uids), vec![10..=20]);
        assert_eq!(sequence_ranges(&set("1,6"), &uids), vec![3..=3]);
        assert_eq!(sequence_ranges(&set("6:9"), &uids), vec![]);
        assert_eq!(sequence_ranges(&set("1:*"), &[]), vec![]);
        assert_eq!(uid_ranges(&set("7:*"), 20), vec![7..=20]);
        assert_eq!(uid_ranges(&set("30:*"), 20), vec![20..=30]);
        assert_eq!(uid_ranges(&set("4,2:1"), 20), vec![4..=4, 1..=2]);
        let q = query(&[SearchKey::Seen, SearchKey::Not(Box::new(SearchKey::Deleted))], &uids).unwrap();
        assert_eq!(q, Query::has_flags(Flags::SEEN).and(Query::not(Query::has_flags(Flags::DELETED))));
        let mut deep = SearchKey::All;
        for _ in 0..MAX_QUERY_DEPTH {
            deep = SearchKey::Not(Box::new(deep));
        }
        assert_eq!(query(&[deep], &uids), Err(Unsupported::TooDeep));
    }
}
