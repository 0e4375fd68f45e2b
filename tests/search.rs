//! The search API (`mailstore::model::search`): scenario tests of every criterion with IMAP's semantics
//! (decoded, case-insensitive substrings), the listing-record-only path, windows and summaries, limits; and a
//! property test holding the evaluator against an oracle written over the decoded inputs the test encoded.

#[path = "search/oracle.rs"]
mod oracle;

use mailstore::model::search::{Day, DayCmp, Query, QueryError, SearchResults, Window};
use mailstore::model::{
    Fai, FlagAction, Flags, FolderId, FolderRole, ItemClass, MAX_QUERY_DEPTH, MAX_QUERY_TERMS, MAX_QUERY_TEXT,
    MAX_QUERY_UID_RANGES, MailError, MailOp, Uid,
};
use mailstore::{Error, Guid, Timestamp};

mod common;
pub use common::folder::Fixture;

impl Fixture {
    pub fn append(&self, raw: &[u8]) {
        self.append_to(self.inbox, vec![(raw.to_vec(), Flags::empty(), vec![], Timestamp::from_micros(0))]);
    }

    pub fn search(&self, q: &Query) -> SearchResults {
        self.try_search(q, Window::all()).unwrap()
    }

    pub fn try_search(&self, q: &Query, w: Window) -> mailstore::Result<SearchResults> {
        self.db.read(|s, txn| s.search(txn, &self.mbx, self.inbox, q, w))
    }

    pub fn uids(&self, q: &Query) -> Vec<Uid> {
        self.search(q).uids()
    }
}

/// One message per line of `raw` separated by `\n` in the text: a shorthand for plain messages.
fn plain(headers: &str, body: &str) -> Vec<u8> {
    format!("{}\r\n\r\n{}", headers.replace('\n', "\r\n"), body.replace('\n', "\r\n")).into_bytes()
}

#[test]
fn subject_encoded_words_and_case() {
    let f = Fixture::create();
    f.append(&plain("From: a@x.org\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=", "x")); // 1
    f.append(&plain("From: a@x.org\nSubject: =?ISO-8859-1?B?R3L832UgYXVzIEv2bG4=?=", "x")); // 2 Grüße aus Köln
    f.append(&plain("From: a@x.org\nSubject: ΟΔΟΣ and =?utf-8?b?0J/RgNC40LLQtdGC?=", "x")); // 3 Привет
    f.append(&plain("From: a@x.org\nSubject: plain subject", "Grüße in the body only")); // 4
    assert_eq!(f.uids(&Query::subject("grüße")), [1, 2]);
    assert_eq!(f.uids(&Query::subject("GRÜSSE")), [1, 2], "ß folds to ss");
    assert_eq!(f.uids(&Query::subject("KÖLN")), [1, 2]);
    assert_eq!(f.uids(&Query::subject("οδος")), [3], "final sigma folds with Σ");
    assert_eq!(f.uids(&Query::subject("ΟΔΟς")), [3]);
    assert_eq!(f.uids(&Query::subject("GRÜẞE")), [1, 2], "capital sharp s folds as ß does");
    assert_eq!(f.uids(&Query::subject("пРИВЕТ")), [3]);
    assert_eq!(f.uids(&Query::subject("ject")), [4]);
    assert_eq!(f.uids(&Query::subject("=?UTF-8")), Vec::<Uid>::new(), "the encoded form is not matched");
    assert_eq!(f.uids(&Query::subject("")), [1, 2, 3, 4]);
    // All of it from the listing records: the envelope holds every subject whole.
    assert_eq!(f.search(&Query::subject("köln")).messages_read, 0);
}

#[test]
fn addresses_match_display_name_and_address() {
    let f = Fixture::create();
    f.append(&plain("From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <jm@smartchoice.example.com>\nTo: Bob <bob@b.org>, carol@c.org\nCc: Dave <dave@d.org>\nBcc: eve@e.org\nSubject: s", "x"));
    f.append(&plain("From: user@example.com\nTo: friends: ann@a.org, ben@b.org;\nSubject: t", "x"));
    assert_eq!(f.uids(&Query::from("jürgen")), [1]);
    assert_eq!(f.uids(&Query::from("MÜLLER <JM@")), [1], "name and address in one rendered address");
    assert_eq!(f.uids(&Query::from("smartc")), [1], "smartc inside smartchoice");
    assert_eq!(f.uids(&Query::from("example")), [1, 2], "example inside user@example.com");
    assert_eq!(f.uids(&Query::to("bob@b")), [1]);
    assert_eq!(f.uids(&Query::to("CAROL")), [1]);
    assert_eq!(f.uids(&Query::to("ben@")), [2], "group members are addresses");
    assert_eq!(f.uids(&Query::to("friends")), [2], "the group's name is part of the field, as in ENVELOPE");
    assert_eq!(f.uids(&Query::header("To", "friends")), [2], "and of the named To field");
    assert_eq!(f.uids(&Query::cc("dave")), [1]);
    assert_eq!(f.uids(&Query::bcc("eve@e.org")), [1]);
    assert_eq!(f.uids(&Query::cc("bob")), Vec::<Uid>::new());
    assert_eq!(f.uids(&Query::to("bob, carol")), Vec::<Uid>::new(), "each address on its own");
    assert_eq!(f.search(&Query::from("müller")).messages_read, 0);
}

#[test]
fn long_fields_cut_in_the_envelope_are_read_from_the_message() {
    let f = Fixture::create();
    let long_subject = format!("{} needle-at-the-end", "word ".repeat(300));
    let many: Vec<String> = (0..150).map(|i| format!("r{i}@many.org")).collect();
    f.append(&plain(&format!("From: a@x.org\nSubject: {long_subject}\nTo: {}", many.join(", ")), "x"));
    assert_eq!(f.uids(&Query::subject("NEEDLE-AT")), [1]);
    assert_eq!(f.uids(&Query::to("r149@many")), [1], "the 150th address, past the envelope's 100");
    assert_eq!(f.uids(&Query::to("r150@many")), Vec::<Uid>::new());
    assert_eq!(f.search(&Query::subject("needle")).messages_read, 1);
}

#[test]
fn named_headers() {
    let f = Fixture::create();
    f.append(&plain(
        "From: a@x.org\nX-Mailer: =?UTF-8?Q?M=C3=A4iler?= 2.0\nList-Id: <dev.lists.example>\nSubject: a",
        "x",
    ));
    f.append(&plain("From: a@x.org\nSubject: b\nX-Mailer: other\nX-Mailer: second", "x"));
    f.append(&plain("From: a@x.org\nSubject: c\nDate: Mon, 1 Jan 2024 10:00:00 +0000", "x"));
    assert_eq!(f.uids(&Query::header("x-mailer", "MÄILER")), [1]);
    assert_eq!(f.uids(&Query::header("X-MAILER", "")), [1, 2], "empty text: the field exists");
    assert_eq!(f.uids(&Query::header("X-Mailer", "second")), [2], "every occurrence");
    assert_eq!(f.uids(&Query::header("List-Id", "lists.example")), [1]);
    assert_eq!(f.uids(&Query::header("Date", "1 jan 2024")), [3], "a structured field: its raw value");
    assert_eq!(f.uids(&Query::header("Subject", "b")), [2]);
    assert_eq!(f.uids(&Query::header("Mailer", "")), Vec::<Uid>::new());
    for bad in ["", "Bad Name", "X:Y"] {
        let e = f.try_search(&Query::header(bad, "x"), Window::all()).unwrap_err();
        assert!(matches!(e, Error::Mail(MailError::InvalidQuery(QueryError::BadHeaderName))), "{bad:?}: {e}");
    }
}

const MULTIPART: &str = "From: a@x.org\nSubject: parts\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"outer\"\n\n\
--outer\nContent-Type: multipart/alternative; boundary=\"inner\"\n\n\
--inner\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n\
The smartchoice offer is v=\nalid until Fr=C3=BChling.\n\
--inner\nContent-Type: text/html; charset=iso-8859-1\nContent-Transfer-Encoding: base64\n\n\
PGh0bWw+PGI+SGVsbG8gV/ZybGQ8L2I+PC9odG1sPg==\n\
--inner--\n\
--outer\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n\
c2VjcmV0IGJpbmFyeSB0ZXh0\n\
--outer\nContent-Type: message/rfc822\n\n\
From: inner@y.org\nSubject: attached\n\nForwarded words here\n\
--outer--\n";

#[test]
fn bodies_decoded_across_parts() {
    let f = Fixture::create();
    f.append(&plain(MULTIPART, "")); // 1
    f.append(&plain("From: a@x.org\nSubject: qp\nContent-Transfer-Encoding: quoted-printable\nContent-Type: text/plain; charset=iso-8859-1", "caf=E9 cr=E8me =\nbr=FBl=E9e")); // 2
    f.append(&plain("From: a@x.org\nSubject: b64\nContent-Transfer-Encoding: base64", "VGhlIHF1aWNrIGJyb3duIGZveA==")); // 3
    f.append(&plain("From: a@x.org\nSubject: plain", "Nothing special, user@example.com wrote")); // 4
    assert_eq!(f.uids(&Query::body("smartc")), [1]);
    assert_eq!(f.uids(&Query::body("offer is valid")), [1], "a QP soft line break is undone");
    assert_eq!(f.uids(&Query::body("FRÜHLING")), [1]);
    assert_eq!(f.uids(&Query::body("hello wörld")), [1], "base64 HTML in ISO-8859-1");
    assert_eq!(f.uids(&Query::body("<b>")), [1], "HTML is matched as its source, tags included");
    assert_eq!(f.uids(&Query::body("forwarded words")), [1], "the text of an attached message");
    assert_eq!(f.uids(&Query::body("secret")), Vec::<Uid>::new(), "non-text parts are not searched");
    assert_eq!(f.uids(&Query::body("CRÈME BRÛLÉE")), [2]);
    assert_eq!(f.uids(&Query::body("quick BROWN")), [3]);
    assert_eq!(f.uids(&Query::body("cXVpY2s")), Vec::<Uid>::new(), "the encoded form is not matched");
    assert_eq!(f.uids(&Query::body("example")), [4]);
    assert_eq!(f.uids(&Query::body("subject")), Vec::<Uid>::new(), "the header is not the body");
    assert_eq!(f.uids(&Query::body("offer is valid until hello")), Vec::<Uid>::new(), "not across parts");
    // TEXT: headers or body.
    assert_eq!(f.uids(&Query::text("subject: b64")), [3]);
    assert_eq!(f.uids(&Query::text("brown fox")), [3]);
    assert_eq!(f.uids(&Query::text("a@x.org")), [1, 2, 3, 4]);
    assert_eq!(f.uids(&Query::text("inner@y")), Vec::<Uid>::new(), "an attached message's header is not searched");
    assert_eq!(f.search(&Query::body("x")).messages_read, 4);
}

#[test]
fn dates_received_and_sent() {
    let f = Fixture::create();
    let at = |s: &str| s.parse::<Timestamp>().unwrap();
    let day = |y, m, d| Day::new(y, m, d).unwrap();
    f.append_to(
        f.inbox,
        vec![
            // Sent 1 Jan 23:30 in -05:00, which is 2 Jan in UTC.
            (
                plain("From: a@x.org\nDate: Mon, 1 Jan 2024 23:30:00 -0500", "x"),
                Flags::empty(),
                vec![],
                at("2024-01-02T05:00:00Z"),
            ),
            (
                plain("From: a@x.org\nDate: Wed, 3 Jan 2024 00:10:00 +0200", "x"),
                Flags::empty(),
                vec![],
                at("2024-01-03T23:59:59Z"),
            ),
            (
                plain("From: a@x.org\nDate: 31 Feb 2024 10:00:00 +0000", "x"),
                Flags::empty(),
                vec![],
                at("2024-01-10T00:00:00Z"),
            ),
            (plain("From: a@x.org", "no date"), Flags::empty(), vec![], at("2024-01-10T00:00:00Z")),
        ],
    );
    assert_eq!(f.uids(&Query::sent_day(DayCmp::On, day(2024, 1, 1))), [1], "the header's own day");
    assert_eq!(f.uids(&Query::sent_day(DayCmp::On, day(2024, 1, 2))), Vec::<Uid>::new());
    assert_eq!(f.uids(&Query::sent_day(DayCmp::On, day(2024, 1, 3))), [2]);
    assert_eq!(f.uids(&Query::sent_day(DayCmp::Before, day(2024, 1, 3))), [1]);
    assert_eq!(f.uids(&Query::sent_day(DayCmp::Since, day(2024, 1, 2))), [2]);
    assert_eq!(f.uids(&Query::sent_day(DayCmp::Since, day(2000, 1, 1))), [1, 2], "no valid Date: no match");
    assert_eq!(f.uids(&Query::not(Query::sent_day(DayCmp::Since, day(2000, 1, 1)))), [3, 4]);
    // The zone is in the listing record: decided without reading, near the day too.
    assert_eq!(f.search(&Query::sent_day(DayCmp::Since, day(2000, 1, 1))).messages_read, 0);
    assert_eq!(f.search(&Query::sent_day(DayCmp::On, day(2024, 1, 1))).messages_read, 0);
    assert_eq!(f.uids(&Query::sent_before(at("2024-01-02T04:30:01Z"))), [1]);
    assert_eq!(f.uids(&Query::sent_since(at("2024-01-02T04:30:01Z"))), [2]);
    assert_eq!(f.uids(&Query::received_day(DayCmp::On, day(2024, 1, 3))), [2]);
    assert_eq!(f.uids(&Query::received_day(DayCmp::Before, day(2024, 1, 3))), [1]);
    assert_eq!(f.uids(&Query::received_day(DayCmp::Since, day(2024, 1, 3))), [2, 3, 4]);
    assert_eq!(f.uids(&Query::received_before(at("2024-01-03T23:59:59Z"))), [1]);
    assert_eq!(f.uids(&Query::received_since(at("2024-01-03T23:59:59Z"))), [2, 3, 4]);
    let q = Query::received_day(DayCmp::Since, day(2024, 1, 3)).and(Query::received_before(at("2024-01-05T00:00:00Z")));
    assert_eq!(f.search(&q).messages_read, 0);
    assert_eq!(Day::new(2024, 2, 30), None);
    assert_eq!(day(2024, 2, 29).ymd(), (2024, 2, 29));
    assert_eq!(Day::of(at("2024-01-03T23:59:59Z")), day(2024, 1, 3));
}

#[test]
fn flags_keywords_sizes_uids_modseq_without_reading() {
    let f = Fixture::create();
    let m = |n: usize| plain("From: a@x.org", &"y".repeat(n));
    let kw = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let t = Timestamp::from_micros(0);
    f.append_to(
        f.inbox,
        vec![
            (m(10), Flags::SEEN, kw(&["$Work"]), t),
            (m(100), Flags::SEEN | Flags::FLAGGED, vec![], t),
            (m(1000), Flags::empty(), kw(&["$work", "urgent"]), t),
            (m(10), Flags::DELETED, vec![], t),
        ],
    );
    f.db.commit(MailOp::store_flags(f.mbx, f.inbox, vec![4], FlagAction::Add, Flags::ANSWERED)).unwrap();
    let size = |u: usize| plain("From: a@x.org", &"y".repeat(u)).len() as u64;
    let cases: Vec<(Query, Vec<Uid>)> = vec![
        (Query::has_flags(Flags::SEEN), vec![1, 2]),
        (Query::has_flags(Flags::SEEN | Flags::FLAGGED), vec![2]),
        (Query::lacks_flags(Flags::SEEN), vec![3, 4]),
        (Query::lacks_flags(Flags::SEEN | Flags::DELETED), vec![3]),
        (Query::has_flags(Flags::ANSWERED), vec![4]),
        (Query::keyword("$WORK"), vec![1, 3]),
        (Query::no_keyword("$work"), vec![2, 4]),
        (Query::keyword("urgent"), vec![3]),
        (Query::larger(size(100)), vec![3]),
        (Query::larger(size(100) - 1), vec![2, 3]),
        (Query::smaller(size(100)), vec![1, 4]),
        (Query::uids([2..=3]), vec![2, 3]),
        (Query::uids([4..=4, 1..=1, 9..=20]), vec![1, 4]),
        (Query::uids([std::ops::RangeInclusive::new(3, 1)]), vec![]),
        (Query::modseq_at_least(f.search(&Query::uids([4..=4])).hits[0].modseq), vec![4]),
        (Query::all(), vec![1, 2, 3, 4]),
        (Query::all_of([]), vec![1, 2, 3, 4]),
        (Query::any_of([]), vec![]),
        (Query::has_flags(Flags::SEEN).or(Query::keyword("urgent")), vec![1, 2, 3]),
        (Query::has_flags(Flags::SEEN).and(Query::keyword("$work")), vec![1]),
        (Query::has_flags(Flags::SEEN).negate(), vec![3, 4]),
        (Query::not(Query::uids([1..=2]).or(Query::larger(500))), vec![4]),
    ];
    for (q, expected) in cases {
        let r = f.search(&q);
        assert_eq!(r.uids(), expected, "{q:?}");
        assert_eq!(r.messages_read, 0, "{q:?} read a message");
    }
    // Three-valued: a body criterion reads only the items the cheap ones leave open.
    let r = f.search(&Query::has_flags(Flags::SEEN).and(Query::body("yyyy")));
    assert_eq!((r.uids(), r.messages_read), (vec![1, 2], 2));
    let r = f.search(&Query::uids([3..=3]).and(Query::body("yyyy")));
    assert_eq!((r.uids(), r.messages_read), (vec![3], 1));
    let r = f.search(&Query::has_flags(Flags::SEEN).or(Query::body("yyyy")));
    assert_eq!((r.uids(), r.messages_read), (vec![1, 2, 3, 4], 2));
}

#[test]
fn windows_and_summaries() {
    let f = Fixture::create();
    for i in 0..10 {
        f.append(&plain("From: a@x.org", if i % 2 == 0 { "even" } else { "odd" }));
    }
    let q = Query::body("even");
    let all = f.search(&q);
    assert_eq!((all.count, all.min(), all.max(), all.uids()), (5, Some(1), Some(9), vec![1, 3, 5, 7, 9]));
    assert_eq!(all.highest_modseq, Some(all.hits.iter().map(|h| h.modseq).max().unwrap()));
    let page = f.try_search(&q, Window::page(1, 2)).unwrap();
    assert_eq!((page.count, page.position, page.uids(), page.min(), page.max()), (5, 1, vec![3, 5], Some(1), Some(9)));
    let past = f.try_search(&q, Window::page(7, 2)).unwrap();
    assert_eq!((past.count, past.hits.len()), (5, 0));
    let none = f.try_search(&q, Window::none()).unwrap();
    assert_eq!((none.count, none.hits.len(), none.max()), (5, 0, Some(9)));
    let items = all.items();
    let raw = f.db.read(|s, txn| s.raw(txn, &f.mbx, items[0])).unwrap().unwrap();
    assert!(String::from_utf8(raw).unwrap().contains("even"));
    let empty = f.search(&Query::body("nowhere"));
    assert_eq!((empty.count, empty.first, empty.last, empty.highest_modseq), (0, None, None, None));
}

#[test]
fn mailbox_wide_and_missing_folders() {
    let f = Fixture::create();
    let sent = f.db.read(|s, txn| s.folder_by_role(txn, &f.mbx, FolderRole::SentItems)).unwrap().unwrap().id;
    f.append(&plain("From: a@x.org\nSubject: in inbox", "needle"));
    f.append_to(
        sent,
        vec![(plain("From: a@x.org\nSubject: in sent", "needle"), Flags::empty(), vec![], Timestamp::EPOCH)],
    );
    f.db.commit(MailOp::append_item(f.mbx, f.inbox, plain("From: a@x.org", "needle"), ItemClass::Note, Fai::Include))
        .unwrap();
    assert_eq!(f.uids(&Query::body("needle")), [1], "folder-associated items are not searched");
    let all = f.db.read(|s, txn| s.search_mailbox(txn, &f.mbx, &Query::body("needle"), Window::all())).unwrap();
    let found: Vec<(FolderId, Uid)> = all.hits.iter().map(|h| (h.folder, h.uid)).collect();
    let mut expected = vec![(f.inbox, 1), (sent, 1)];
    expected.sort();
    assert_eq!(found, expected);
    let e = f.db.read(|s, txn| s.search(txn, &f.mbx, 9999, &Query::all(), Window::all())).unwrap_err();
    assert!(matches!(e, Error::Mail(MailError::NoSuchFolder { folder: 9999, .. })), "{e}");
    let e = f.db.read(|s, txn| s.search_mailbox(txn, &Guid::new_random(), &Query::all(), Window::all())).unwrap_err();
    assert!(matches!(e, Error::Mail(MailError::NoSuchMailbox { .. })), "{e}");
}

#[test]
fn hostile_queries_are_refused_with_typed_errors() {
    let f = Fixture::create();
    f.append(&plain("From: a@x.org", "x"));
    let refused = |q: &Query| match f.try_search(q, Window::all()) {
        Err(Error::Mail(MailError::InvalidQuery(e))) => e,
        other => panic!("{other:?}"),
    };
    let mut deep = Query::all();
    for _ in 0..MAX_QUERY_DEPTH - 1 {
        deep = Query::not(deep);
    }
    assert!(f.try_search(&deep, Window::all()).is_ok(), "exactly the limit is fine");
    assert_eq!(refused(&Query::not(deep.clone())), QueryError::TooDeep { max: MAX_QUERY_DEPTH });
    // Far deeper than any stack would allow recursion to: refused without recursing.
    let mut abyss = Query::all();
    for _ in 0..200_000 {
        abyss = Query::Or(vec![abyss]);
    }
    assert_eq!(refused(&abyss), QueryError::TooDeep { max: MAX_QUERY_DEPTH });
    // Taken apart without recursion, so that dropping it does not overflow the stack either.
    let mut next = Some(abyss);
    while let Some(Query::Or(mut list)) = next.take() {
        next = list.pop();
    }
    let wide = Query::any_of((0..MAX_QUERY_TERMS).map(|_| Query::all()));
    assert_eq!(refused(&wide), QueryError::TooManyTerms { max: MAX_QUERY_TERMS });
    let ranges = Query::uids((0..=MAX_QUERY_UID_RANGES as u32).map(|i| 2 * i..=2 * i));
    assert_eq!(refused(&ranges), QueryError::TooManyUidRanges { max: MAX_QUERY_UID_RANGES });
    assert_eq!(refused(&Query::body("x".repeat(MAX_QUERY_TEXT + 1))), QueryError::TextTooLong { max: MAX_QUERY_TEXT });
    assert!(f.try_search(&Query::body("x".repeat(MAX_QUERY_TEXT)), Window::all()).is_ok());
}

#[test]
fn damaged_and_odd_messages_do_not_panic() {
    let f = Fixture::create();
    let odd: [&[u8]; 6] = [
        b"",
        b"no header at all, just text",
        b"From: a@x.org\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64",
        b"From: a@x.org\r\nSubject: =?UTF-8?B?invalid?= =?bogus?Q?x?=\r\n\r\n\xff\xfe bytes",
        b"From: a@x.org\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=ZZ=4 broken =",
        b"\r\n\r\n\r\n",
    ];
    for raw in odd {
        f.append(raw);
    }
    for q in
        [Query::body("x"), Query::text("bytes"), Query::subject("invalid"), Query::header("From", ""), Query::from("a")]
    {
        let _ = f.search(&q);
    }
    assert_eq!(f.uids(&Query::header("From", "")), [3, 4, 5]);
}
