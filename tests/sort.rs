//! Sort (`MailStore::sort`, RFC 5256 / RFC 5957): a scenario test per key, base subjects, missing `Date`,
//! `REVERSE`, several keys, the UID tie-break, windows; and a property test holding the sort against an oracle
//! sort over the values the test put into random envelopes.

use mailstore::Timestamp;
use mailstore::model::search::{Query, SearchResults, SortField, SortKey, Window, base_subject};
use mailstore::model::{Flags, Uid};
use proptest::prelude::*;

mod common;
use common::folder::Fixture;

impl Fixture {
    /// Appends the messages in one batch, each with its received time; their UIDs follow from 1.
    fn append_all(&self, messages: Vec<(Vec<u8>, Timestamp)>) {
        self.append_to(self.inbox, messages.into_iter().map(|(raw, at)| (raw, Flags::empty(), vec![], at)).collect());
    }

    /// One message per header block (received times 1 s, 2 s, … in order).
    fn with(headers: &[&str]) -> Fixture {
        let f = Fixture::create();
        f.append_all(
            headers
                .iter()
                .enumerate()
                .map(|(i, h)| (msg(h, "body"), Timestamp::from_micros((i as u64 + 1) * 1_000_000)))
                .collect(),
        );
        f
    }

    fn sort_in(&self, q: &Query, keys: &[SortKey], w: Window) -> SearchResults {
        self.db.read(|s, txn| s.sort(txn, &self.mbx, self.inbox, q, keys, w)).unwrap()
    }

    fn sort(&self, keys: &[SortKey]) -> Vec<Uid> {
        self.sort_in(&Query::all(), keys, Window::all()).uids()
    }
}

fn msg(headers: &str, body: &str) -> Vec<u8> {
    format!("{}\r\n\r\n{}\r\n", headers.replace('\n', "\r\n"), body).into_bytes()
}

fn asc(f: SortField) -> SortKey {
    SortKey::new(f)
}

fn rev(f: SortField) -> SortKey {
    SortKey::new(f).reversed()
}

#[test]
fn base_subject_rfc5256() {
    for (subject, base) in [
        ("Re: [list] Fwd: subject (fwd)", "subject"),
        ("subject", "subject"),
        ("RE: Re: re:subject", "subject"),
        ("Fw: FWD: fwd : subject", "subject"),
        ("Re[2]: subject", "subject"),
        ("Re [list]: subject", "subject"),
        ("[list] [other] Re: subject", "subject"),
        ("subject (fwd) (FWD)  ", "subject"),
        ("  subject\t\r\n  more   words ", "subject more words"),
        ("[Fwd: Re: subject]", "subject"),
        ("[fwd: [Fwd: subject (fwd)]] (fwd)", "subject"),
        ("[list]", "[list]"),
        ("Re: [list]", "[list]"),
        ("Re:", ""),
        ("", ""),
        ("Reply to this", "reply to this"),
        ("Fwdx: subject", "fwdx: subject"),
        ("[unclosed subject", "[unclosed subject"),
        ("Ré: straße", "ré: strasse"),
    ] {
        assert_eq!(base_subject(subject), base, "base subject of {subject:?}");
    }
}

#[test]
fn subject_base_decoded_and_folded() {
    let f = Fixture::with(&[
        "Subject: Re: [list] Fwd: Zebra (fwd)",   // 1 zebra
        "Subject: =?UTF-8?Q?=C3=89mile?= notes",  // 2 émile notes
        "Subject: apple",                         // 3 apple
        "Subject: Fwd: APPLE",                    // 4 apple
        "From: a@b.c",                            // 5 no subject: ""
        "Subject: =?ISO-8859-1?Q?Re=3A_banana?=", // 6 banana (the Re: is inside the encoded word)
    ]);
    assert_eq!(f.sort(&[asc(SortField::Subject)]), [5, 3, 4, 6, 1, 2]);
    // REVERSE reverses the key, not the UID tie-break.
    assert_eq!(f.sort(&[rev(SortField::Subject)]), [2, 1, 6, 3, 4, 5]);
}

#[test]
fn arrival_date_and_missing_date() {
    // Received at 1 s .. 4 s; Dates: 3: 1970-01-01 00:00:02.5 is not valid, so whole seconds.
    let f = Fixture::with(&[
        "Date: Thu, 01 Jan 1970 00:00:10 +0000", // 1: 10 s
        "Subject: no date",                      // 2: received 2 s
        "Date: Thu, 01 Jan 1970 01:00:00 +0100", // 3: 0 s (zone)
        "Date: not a date",                      // 4: invalid, received 4 s
    ]);
    assert_eq!(f.sort(&[asc(SortField::Arrival)]), [1, 2, 3, 4]);
    assert_eq!(f.sort(&[rev(SortField::Arrival)]), [4, 3, 2, 1]);
    assert_eq!(f.sort(&[asc(SortField::Date)]), [3, 2, 4, 1]);
    assert_eq!(f.sort(&[rev(SortField::Date)]), [1, 4, 2, 3]);
}

#[test]
fn size_and_uid_tie_break() {
    let f = Fixture::create();
    let t = Timestamp::from_micros(5);
    f.append_all(vec![
        (msg("Subject: x", "aaaa"), t),
        (msg("Subject: x", "a"), t),
        (msg("Subject: x", "aaaa"), t),
        (msg("Subject: x", "aa"), t),
        (msg("Subject: x", "aaaa"), t),
    ]);
    assert_eq!(f.sort(&[asc(SortField::Size)]), [2, 4, 1, 3, 5]);
    assert_eq!(f.sort(&[rev(SortField::Size)]), [1, 3, 5, 4, 2]);
    // Every key equal: UID order, in both directions.
    for k in [asc(SortField::Arrival), rev(SortField::Arrival), rev(SortField::Subject), rev(SortField::From)] {
        assert_eq!(f.sort(&[k]), [1, 2, 3, 4, 5], "{k:?}");
    }
    assert_eq!(f.sort(&[]), [1, 2, 3, 4, 5]);
}

#[test]
fn address_keys_mailbox_and_display() {
    let f = Fixture::with(&[
        "From: Zed <Alice@z.example>\nTo: <mike@a.example>\nCc: c@x", // 1
        "From: bob@a.example\nTo: Anna <zoe@a.example>",              // 2
        "From: \"Anna\" <carl@y.example>\nTo: nobody@b, first@c\nCc: A <b@x>", // 3
        "Subject: no addresses",                                      // 4
        "From: =?UTF-8?Q?=C3=84rger?= <dora@x>\nTo: undisclosed-recipients:;", // 5
    ]);
    // FROM: local parts alice, bob, carl, "", dora.
    assert_eq!(f.sort(&[asc(SortField::From)]), [4, 1, 2, 3, 5]);
    // DISPLAYFROM: zed, bob@a.example, anna, "", ärger (ä after ASCII letters in code point order).
    assert_eq!(f.sort(&[asc(SortField::DisplayFrom)]), [4, 3, 2, 1, 5]);
    // TO: mike, zoe, nobody (the first address), "", "" (an empty group).
    assert_eq!(f.sort(&[asc(SortField::To)]), [4, 5, 1, 3, 2]);
    // DISPLAYTO: mike@a.example, anna, nobody@b, "", "".
    assert_eq!(f.sort(&[asc(SortField::DisplayTo)]), [4, 5, 2, 1, 3]);
    // CC: c, "", b, "", "".
    assert_eq!(f.sort(&[asc(SortField::Cc)]), [2, 4, 5, 3, 1]);
    assert_eq!(f.sort(&[rev(SortField::Cc)]), [1, 3, 2, 4, 5]);
}

#[test]
fn several_keys_query_and_window() {
    let f = Fixture::with(&[
        "From: b@x\nSubject: one",     // 1
        "From: a@x\nSubject: two",     // 2
        "From: b@x\nSubject: Re: two", // 3
        "From: a@x\nSubject: one",     // 4
        "From: c@x\nSubject: one",     // 5
    ]);
    assert_eq!(f.sort(&[asc(SortField::From), asc(SortField::Subject)]), [4, 2, 1, 3, 5]);
    assert_eq!(f.sort(&[asc(SortField::Subject), rev(SortField::From)]), [5, 1, 4, 3, 2]);
    assert_eq!(f.sort(&[rev(SortField::Subject), asc(SortField::Arrival)]), [2, 3, 1, 4, 5]);
    // A field named again is ignored: the second Subject key does not reverse the first.
    assert_eq!(f.sort(&[asc(SortField::Subject), rev(SortField::Subject)]), [1, 4, 5, 2, 3]);

    // Combined with a search, and a window: the summary covers every hit, in sorted order.
    let q = Query::subject("one");
    let r = f.sort_in(&q, &[rev(SortField::From)], Window::page(1, 1));
    assert_eq!((r.count, r.uids(), r.position), (3, vec![1], 1));
    assert_eq!((r.first.map(|h| h.uid), r.last.map(|h| h.uid)), (Some(5), Some(4)));
    let none = f.sort_in(&q, &[rev(SortField::From)], Window::none());
    assert_eq!((none.count, none.hits.len()), (3, 0));
    let empty = f.sort_in(&Query::subject("nothing"), &[asc(SortField::Date)], Window::all());
    assert_eq!((empty.count, empty.first, empty.hits.len()), (0, None, 0));
}

#[test]
fn sort_reads_no_message() {
    let f = Fixture::with(&["Subject: b\nFrom: x@y", "Subject: a\nFrom: z@y", "Subject: c"]);
    let all = [
        SortField::Arrival,
        SortField::Date,
        SortField::Size,
        SortField::Subject,
        SortField::From,
        SortField::To,
        SortField::Cc,
        SortField::DisplayFrom,
        SortField::DisplayTo,
    ];
    let keys: Vec<SortKey> = all.iter().map(|k| asc(*k)).collect();
    let r = f.sort_in(&Query::all(), &keys, Window::all());
    assert_eq!((r.messages_read, r.count), (0, 3));
    assert_eq!(r.uids(), [1, 2, 3]);
    // A body criterion reads every message, as a search does: the count is the search's.
    let r = f.sort_in(&Query::body("body"), &keys, Window::all());
    assert_eq!((r.messages_read, r.count), (3, 3));
}

// The property: random envelopes whose sort values the test knows by construction.

#[derive(Clone, Debug)]
struct Spec {
    base: String,
    wrappers: Vec<u8>,
    encode: bool,
    from: Option<(Option<String>, String)>,
    to: Option<(Option<String>, String)>,
    date: Option<(u32, u32, u32, i32)>,
    received: u64,
    body: usize,
}

impl Spec {
    fn subject(&self) -> String {
        let mut s = self.base.clone();
        for w in &self.wrappers {
            s = match w % 8 {
                0 => format!("Re: {s}"),
                1 => format!("FWD: {s}"),
                2 => format!("fw:{s}"),
                3 => format!("[list-{w}] {s}"),
                4 => format!("{s} (fwd)"),
                5 => format!("[Fwd: {s}]"),
                6 => format!("Re[{w}]: {s}"),
                _ => format!("  {s}  "),
            };
        }
        s
    }

    fn raw(&self) -> Vec<u8> {
        let mut h = String::new();
        let subject = self.subject();
        if self.encode {
            let q: String = subject.bytes().map(|b| format!("={b:02X}")).collect();
            h.push_str(&format!("Subject: =?UTF-8?Q?{q}?=\r\n"));
        } else {
            h.push_str(&format!("Subject: {subject}\r\n"));
        }
        for (name, field) in [("From", &self.from), ("To", &self.to)] {
            match field {
                Some((Some(n), e)) => h.push_str(&format!("{name}: {n} <{e}>\r\n")),
                Some((None, e)) => h.push_str(&format!("{name}: {e}\r\n")),
                None => {}
            }
        }
        if let Some((day, hour, min, zone)) = self.date {
            let sign = if zone < 0 { '-' } else { '+' };
            h.push_str(&format!("Date: {day:02} Jan 2020 {hour:02}:{min:02}:00 {sign}{:04}\r\n", zone.abs()));
        }
        format!("{h}\r\n{}\r\n", "x".repeat(self.body)).into_bytes()
    }

    /// The key's value as the test knows it.
    fn value(&self, field: SortField) -> (i128, String) {
        let mailbox = |f: &Option<(Option<String>, String)>| {
            f.as_ref().map(|(_, e)| e.split('@').next().unwrap().to_lowercase()).unwrap_or_default()
        };
        let display = |f: &Option<(Option<String>, String)>| match f {
            Some((Some(n), _)) => n.to_lowercase(),
            Some((None, e)) => e.to_lowercase(),
            None => String::new(),
        };
        let received = i128::from(self.received);
        match field {
            SortField::Arrival => (received, String::new()),
            SortField::Date => match self.date {
                Some((day, hour, min, zone)) => {
                    let zone_secs = i64::from(zone / 100) * 3600 + i64::from(zone % 100) * 60;
                    let secs =
                        1_577_836_800 + i64::from(day - 1) * 86_400 + i64::from(hour) * 3600 + i64::from(min) * 60
                            - zone_secs;
                    (i128::from(secs) * 1_000_000, String::new())
                }
                None => (received, String::new()),
            },
            SortField::Size => (self.raw().len() as i128, String::new()),
            SortField::Subject => (0, self.base.to_lowercase()),
            SortField::From => (0, mailbox(&self.from)),
            SortField::To => (0, mailbox(&self.to)),
            SortField::DisplayFrom => (0, display(&self.from)),
            SortField::DisplayTo => (0, display(&self.to)),
            _ => unreachable!("no Cc in the specs"),
        }
    }
}

fn address() -> impl Strategy<Value = Option<(Option<String>, String)>> {
    proptest::option::of((proptest::option::of("[A-Za-z]{1,3}( [A-Z][a-z]{0,2})?"), "[a-cA-C]{1,3}@(x|y)\\.example"))
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop_oneof![
            Just("lunch".to_owned()),
            Just("Lunch plans".to_owned()),
            Just("apple".to_owned()),
            Just("Émile".to_owned()),
            Just("zebra talk".to_owned()),
            "[a-z]{1,4}",
        ],
        proptest::collection::vec(any::<u8>(), 0..4),
        any::<bool>(),
        address(),
        address(),
        proptest::option::of((1u32..28, 0u32..24, 0u32..60, prop_oneof![Just(0), Just(130), Just(-800)])),
        0u64..4,
        0usize..4,
    )
        .prop_map(|(base, wrappers, encode, from, to, date, received, body)| Spec {
            base,
            wrappers,
            encode,
            from,
            to,
            date,
            // Few distinct received times: many ties.
            received: 1_577_836_800_000_000 + received * 86_400_000_000,
            body,
        })
}

fn field() -> impl Strategy<Value = SortField> {
    prop_oneof![
        Just(SortField::Arrival),
        Just(SortField::Date),
        Just(SortField::Size),
        Just(SortField::Subject),
        Just(SortField::From),
        Just(SortField::To),
        Just(SortField::DisplayFrom),
        Just(SortField::DisplayTo),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn sort_matches_oracle(
        specs in proptest::collection::vec(spec(), 0..24),
        keys in proptest::collection::vec((field(), any::<bool>()), 0..4),
        window in (0usize..30, proptest::option::of(0usize..30)),
    ) {
        let f = Fixture::create();
        f.append_all(specs.iter().map(|s| (s.raw(), Timestamp::from_micros(s.received))).collect());
        let mut keys: Vec<SortKey> =
            keys.into_iter().map(|(k, r)| if r { rev(k) } else { asc(k) }).collect();
        // The oracle takes each field once, at its first occurrence.
        let mut seen = Vec::new();
        keys.retain(|k| if seen.contains(&k.field) { false } else { seen.push(k.field); true });
        let mut expected: Vec<(Vec<(i128, String)>, Uid)> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| (keys.iter().map(|k| s.value(k.field)).collect(), i as Uid + 1))
            .collect();
        expected.sort_by(|a, b| {
            for (i, k) in keys.iter().enumerate() {
                let o = a.0[i].cmp(&b.0[i]);
                let o = if k.reverse { o.reverse() } else { o };
                if o.is_ne() {
                    return o;
                }
            }
            a.1.cmp(&b.1)
        });
        let all: Vec<Uid> = expected.iter().map(|e| e.1).collect();
        let w = Window { position: window.0, limit: window.1 };
        let r = f.sort_in(&Query::all(), &keys, w);
        let page: Vec<Uid> = all.iter().copied().skip(w.position).take(w.limit.unwrap_or(usize::MAX)).collect();
        prop_assert_eq!(r.uids(), page);
        prop_assert_eq!(r.count, specs.len() as u64);
        prop_assert_eq!(r.first.map(|h| h.uid), all.first().copied());
        prop_assert_eq!(r.last.map(|h| h.uid), all.last().copied());
        prop_assert_eq!(r.messages_read, 0);
    }
}
