//! The property test: random messages, each part encoded at random (raw UTF-8, RFC 2047 Q and B words,
//! quoted-printable, base64; UTF-8 or ISO-8859-1; single part, `multipart/alternative` with an HTML twin,
//! `multipart/mixed` with a binary attachment), random queries, and an oracle over the *decoded* texts the test
//! started from: the evaluator must agree with it on every item.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mailstore::Timestamp;
use mailstore::model::search::{DateField, Day, DayCmp, HeaderField, Query, TimeCmp};
use mailstore::model::{Flags, Uid};
use proptest::prelude::*;

use super::Fixture;

/// Words of the messages, with case and non-ASCII variety (`ß`, final sigma, Cyrillic, accents).
const WORDS: &[&str] = &[
    "smartchoice",
    "Smart",
    "plan",
    "READY",
    "grüße",
    "STRASSE",
    "Straße",
    "ΣΟΦΙΑ",
    "σοφίας",
    "Привет",
    "мир",
    "café",
    "Naïve",
    "köln",
    "user@example.com",
    "e-mail",
    "x1",
    "quoted=sign",
    "Ünïcödé",
    "fin.",
];
const EMAILS: &[&str] = &["bob@example.com", "carol@smartchoice.org", "d.e@mail.example.net"];
const KEYWORDS: &[&str] = &["$Work", "urgent", "$label1"];
/// The binary attachment's bytes: never a match, it is not text.
const SECRET: &str = "attachmentsecret";
/// Needles not cut from a message besides the words: the attachment's, and bits of markup and headers.
const OTHER_NEEDLES: &[&str] =
    &["ss", "σ", "attachmentsecret", "b-alt", "team@", "<p>", "8bit", "iso-8859", "printable", "date: ", "2024 "];

/// Every needle a query picks whole: the words and [`OTHER_NEEDLES`].
fn all_needles() -> Vec<&'static str> {
    WORDS.iter().chain(OTHER_NEEDLES).copied().collect()
}

#[derive(Clone, Debug)]
struct Spec {
    subject: String,
    subject_enc: u8,
    name: String,
    name_enc: u8,
    email: &'static str,
    /// A `Cc` display name (empty: no name) and its encoding; `None`: no `Cc`.
    cc: Option<(String, u8)>,
    /// An `X-Note` field's text and its encoding; `None`: no such field.
    note: Option<(String, u8)>,
    body: String,
    body_enc: u8,
    latin1: bool,
    structure: u8,
    flags: u8,
    keyword: Option<&'static str>,
    received_day: i64,
    /// Day offset, hour, and zone in minutes east of UTC of the `Date:` header.
    sent: (i64, u32, i32),
}

fn words(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDS), 1..=max).prop_map(|w| w.join(" "))
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        (words(4), 0u8..4, prop_oneof![Just(String::new()), words(2)], 0u8..3, prop::sample::select(EMAILS)),
        (prop::option::of((prop_oneof![Just(String::new()), words(2)], 0u8..3)), prop::option::of((words(3), 0u8..3))),
        (words(40), 0u8..3, any::<bool>(), 0u8..3),
        (0u8..32, prop::option::of(prop::sample::select(KEYWORDS)), 0i64..6, (0i64..6, 0u32..24, -720i32..=840)),
    )
        .prop_map(
            |((subject, subject_enc, name, name_enc, email), (cc, note), (body, body_enc, latin1, structure), rest)| {
                let (flags, keyword, received_day, sent) = rest;
                Spec {
                    subject,
                    subject_enc,
                    name,
                    name_enc,
                    email,
                    cc,
                    note,
                    body,
                    body_enc,
                    latin1,
                    structure,
                    flags,
                    keyword,
                    received_day,
                    sent,
                }
            },
        )
}

fn latin1_bytes(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

/// An RFC 2047 encoded word of `text` (Q when `q`), in ISO-8859-1 when it can be.
fn encoded_word(text: &str, q: bool) -> String {
    let (charset, bytes) = match latin1_bytes(text) {
        Some(b) if q => ("ISO-8859-1", b),
        _ => ("UTF-8", text.as_bytes().to_vec()),
    };
    if q {
        let mut out = String::new();
        for b in bytes {
            match b {
                b' ' => out.push('_'),
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => out.push(b as char),
                _ => out.push_str(&format!("={b:02X}")),
            }
        }
        format!("=?{charset}?Q?{out}?=")
    } else {
        format!("=?{charset}?B?{}?=", B64.encode(bytes))
    }
}

fn header_text(text: &str, enc: u8) -> String {
    match enc {
        0 => text.to_owned(), // raw UTF-8 (RFC 6532)
        1 => encoded_word(text, true),
        _ => encoded_word(text, false),
    }
}

fn quoted_printable(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut line = 0;
    for &b in bytes {
        let piece = match b {
            b'=' => "=3D".to_owned(),
            33..=126 | b' ' => (b as char).to_string(),
            _ => format!("={b:02X}"),
        };
        if line + piece.len() > 72 {
            out.push_str("=\r\n");
            line = 0;
        }
        line += piece.len();
        out.push_str(&piece);
    }
    out
}

/// A text part: its headers and encoded body.
fn text_part(spec: &Spec, subtype: &str, text: &str) -> String {
    let (charset, bytes) = match latin1_bytes(text) {
        Some(b) if spec.latin1 => ("iso-8859-1", b),
        _ => ("utf-8", text.as_bytes().to_vec()),
    };
    let (cte, body) = match spec.body_enc {
        0 => ("8bit", text.to_owned()),
        1 => ("quoted-printable", quoted_printable(&bytes)),
        _ => {
            let encoded = B64.encode(&bytes).into_bytes();
            let lines: Vec<String> = encoded.chunks(76).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
            ("base64", lines.join("\r\n"))
        }
    };
    // An 8bit body is UTF-8 whatever the spec's charset wish.
    let charset = if spec.body_enc == 0 { "utf-8" } else { charset };
    format!("Content-Type: text/{subtype}; charset={charset}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n{body}\r\n")
}

fn html(spec: &Spec) -> String {
    format!("<html><body><p>{}</p></body></html>", spec.body)
}

fn date_header(spec: &Spec) -> String {
    let (day, hour, zone) = spec.sent;
    let sign = if zone < 0 { '-' } else { '+' };
    format!("{} Mar 2024 {hour:02}:17:00 {sign}{:02}{:02}", 1 + day, zone.abs() / 60, zone.abs() % 60)
}

/// An address as written: a bare address, a quoted raw UTF-8 name, or an encoded-word name.
fn mailbox(name: &str, enc: u8, email: &str) -> String {
    if name.is_empty() {
        email.to_owned()
    } else if enc == 0 {
        format!("\"{name}\" <{email}>")
    } else {
        format!("{} <{email}>", header_text(name, enc))
    }
}

const CC: &str = "cc@example.net";

fn raw(spec: &Spec) -> Vec<u8> {
    let mut out = format!(
        "From: {}\r\nTo: Team <team@example.org>\r\nSubject: {}\r\nDate: {}\r\n",
        mailbox(&spec.name, spec.name_enc, spec.email),
        header_text(&spec.subject, spec.subject_enc),
        date_header(spec)
    );
    if let Some((name, enc)) = &spec.cc {
        out.push_str(&format!("Cc: {}\r\n", mailbox(name, *enc, CC)));
    }
    if let Some((text, enc)) = &spec.note {
        out.push_str(&format!("X-Note: {}\r\n", header_text(text, *enc)));
    }
    out.push_str("MIME-Version: 1.0\r\n");
    match spec.structure {
        0 => out.push_str(&text_part(spec, "plain", &spec.body)),
        1 => {
            out.push_str("Content-Type: multipart/alternative; boundary=\"b-alt\"\r\n\r\n--b-alt\r\n");
            out.push_str(&text_part(spec, "plain", &spec.body));
            out.push_str("--b-alt\r\n");
            out.push_str(&text_part(spec, "html", &html(spec)));
            out.push_str("--b-alt--\r\n");
        }
        _ => {
            out.push_str("Content-Type: multipart/mixed; boundary=\"b-mix\"\r\n\r\n--b-mix\r\n");
            out.push_str(&text_part(spec, "plain", &spec.body));
            out.push_str(
                "--b-mix\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            );
            out.push_str(&B64.encode(SECRET));
            out.push_str("\r\n--b-mix--\r\n");
        }
    }
    out.into_bytes()
}

/// What the oracle knows of one message: its decoded texts.
struct Known {
    spec: Spec,
    size: u64,
    uid: Uid,
}

/// An address as the search matches it.
fn rendered(name: &str, email: &str) -> String {
    if name.is_empty() { format!("<{email}>") } else { format!("{name} <{email}>") }
}

fn fold(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).flat_map(char::to_uppercase).flat_map(char::to_lowercase).collect()
}

fn has(hay: &str, needle: &str) -> bool {
    fold(hay).contains(&fold(needle))
}

impl Known {
    fn address(&self) -> String {
        rendered(&self.spec.name, self.spec.email)
    }

    fn cc(&self) -> Option<String> {
        self.spec.cc.as_ref().map(|(name, _)| rendered(name, CC))
    }

    fn bodies(&self) -> Vec<String> {
        match self.spec.structure {
            1 => vec![self.spec.body.clone(), html(&self.spec)],
            _ => vec![self.spec.body.clone()],
        }
    }

    fn header_lines(&self) -> Vec<String> {
        let content_type = match self.spec.structure {
            0 => text_part(&self.spec, "plain", &self.spec.body)
                .lines()
                .next()
                .unwrap()
                .trim_start_matches("Content-Type: ")
                .to_owned(),
            1 => "multipart/alternative; boundary=\"b-alt\"".to_owned(),
            _ => "multipart/mixed; boundary=\"b-mix\"".to_owned(),
        };
        let mut lines = vec![
            format!("From: {}", self.address()),
            "To: Team <team@example.org>".to_owned(),
            format!("Subject: {}", self.spec.subject),
            format!("Date: {}", date_header(&self.spec)),
            "MIME-Version: 1.0".to_owned(),
            format!("Content-Type: {content_type}"),
        ];
        lines.extend(self.cc().map(|cc| format!("Cc: {cc}")));
        lines.extend(self.spec.note.as_ref().map(|n| format!("X-Note: {}", n.0)));
        if self.spec.structure == 0 {
            let cte = ["8bit", "quoted-printable", "base64"][self.spec.body_enc as usize];
            lines.push(format!("Content-Transfer-Encoding: {cte}"));
        }
        lines
    }

    fn sent_day(&self) -> i64 {
        day_number(2024, 3, 1) + self.spec.sent.0
    }

    fn sent_micros(&self) -> i64 {
        let (day, hour, zone) = self.spec.sent;
        ((day_number(2024, 3, 1) + day) * 86_400 + i64::from(hour) * 3600 + 17 * 60 - i64::from(zone) * 60) * 1_000_000
    }

    fn received(&self) -> Timestamp {
        Timestamp::from_micros(((day_number(2024, 3, 1) + self.spec.received_day) * 86_400 + 4000) as u64 * 1_000_000)
    }

    fn matches(&self, q: &Query) -> bool {
        let s = &self.spec;
        match q {
            Query::All => true,
            Query::Header { field, text } => match field {
                HeaderField::Subject => has(&s.subject, text),
                HeaderField::From => has(&self.address(), text),
                HeaderField::To => has("Team <team@example.org>", text),
                HeaderField::Cc => text.is_empty() || self.cc().is_some_and(|cc| has(&cc, text)),
                HeaderField::Bcc => text.is_empty(),
                HeaderField::Named(name) if name == "X-Note" => {
                    self.spec.note.as_ref().is_some_and(|n| has(&n.0, text))
                }
                HeaderField::Named(name) if name == "subject" => has(&s.subject, text),
                _ => unreachable!("not generated"),
            },
            Query::Body(text) => self.bodies().iter().any(|b| has(b, text)),
            Query::Text(text) => {
                self.header_lines().iter().any(|l| has(l, text)) || self.bodies().iter().any(|b| has(b, text))
            }
            Query::Day { field, cmp, day } => {
                let own = match field {
                    DateField::Received => (self.received().as_micros() / 86_400_000_000) as i64,
                    DateField::Sent => self.sent_day(),
                };
                let (y, m, d) = day.ymd();
                let day = day_number(y as i64, m as i64, d as i64);
                match cmp {
                    DayCmp::Before => own < day,
                    DayCmp::On => own == day,
                    DayCmp::Since => own >= day,
                }
            }
            Query::Time { field, cmp, at } => {
                let own = match field {
                    DateField::Received => self.received().as_micros() as i64,
                    DateField::Sent => self.sent_micros(),
                };
                match cmp {
                    TimeCmp::Before => own < at.as_micros() as i64,
                    TimeCmp::Since => own >= at.as_micros() as i64,
                }
            }
            Query::Larger(n) => self.size > *n,
            Query::Smaller(n) => self.size < *n,
            Query::FlagsSet(f) => s.flags & f.0 == f.0,
            Query::FlagsUnset(f) => s.flags & f.0 == 0,
            Query::Keyword(k) => s.keyword.is_some_and(|w| w.eq_ignore_ascii_case(k)),
            Query::NoKeyword(k) => !s.keyword.is_some_and(|w| w.eq_ignore_ascii_case(k)),
            Query::Uids(r) => r.iter().any(|r| r.contains(&self.uid)),
            Query::And(list) => list.iter().all(|q| self.matches(q)),
            Query::Or(list) => list.iter().any(|q| self.matches(q)),
            Query::Not(q) => !self.matches(q),
            _ => unreachable!("not generated"),
        }
    }
}

fn day_number(y: i64, m: i64, d: i64) -> i64 {
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

/// A query leaf before it meets the messages: the needles are cut from them.
#[derive(Clone, Debug)]
enum Leaf {
    /// Criterion kind, message, field, start, length, case.
    Text(u8, usize, u8, usize, usize, u8),
    Word(u8, &'static str),
    Flags(bool, u8),
    Keyword(bool, &'static str),
    Size(bool, usize, i8),
    Uids(u32, u32),
    Day(bool, u8, i64),
    Time(bool, bool, i64),
}

fn leaf() -> impl Strategy<Value = Leaf> {
    prop_oneof![
        8 => (0u8..9, any::<usize>(), 0u8..5, any::<usize>(), 1usize..12, 0u8..3)
            .prop_map(|(k, m, f, s, l, c)| Leaf::Text(k, m, f, s, l, c)),
        2 => (0u8..9, prop::sample::select(all_needles()))
            .prop_map(|(k, w)| Leaf::Word(k, w)),
        1 => (any::<bool>(), 1u8..32).prop_map(|(s, f)| Leaf::Flags(s, f)),
        1 => (any::<bool>(), prop::sample::select(KEYWORDS)).prop_map(|(s, k)| Leaf::Keyword(s, k)),
        1 => (any::<bool>(), any::<usize>(), -1i8..=1).prop_map(|(l, m, d)| Leaf::Size(l, m, d)),
        1 => (0u32..10, 0u32..10).prop_map(|(a, b)| Leaf::Uids(a, b)),
        1 => (any::<bool>(), 0u8..3, -1i64..8).prop_map(|(s, c, d)| Leaf::Day(s, c, d)),
        1 => (any::<bool>(), any::<bool>(), 0i64..(8 * 86_400)).prop_map(|(s, b, t)| Leaf::Time(s, b, t)),
    ]
}

#[derive(Clone, Debug)]
enum Shape {
    Leaf(Leaf),
    And(Vec<Shape>),
    Or(Vec<Shape>),
    Not(Box<Shape>),
}

fn shape() -> impl Strategy<Value = Shape> {
    leaf().prop_map(Shape::Leaf).prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Shape::And),
            prop::collection::vec(inner.clone(), 0..3).prop_map(Shape::Or),
            inner.prop_map(|s| Shape::Not(Box::new(s))),
        ]
    })
}

fn needle_query(kind: u8, needle: String) -> Query {
    match kind {
        0 => Query::subject(needle),
        1 => Query::from(needle),
        2 => Query::body(needle),
        3 => Query::text(needle),
        4 => Query::to(needle),
        5 => Query::cc(needle),
        6 => Query::header("X-Note", needle),
        7 => Query::header("subject", needle),
        _ => Query::bcc(needle),
    }
}

fn resolve(shape: &Shape, known: &[Known]) -> Query {
    let base = day_number(2024, 3, 1);
    match shape {
        Shape::And(list) => Query::And(list.iter().map(|s| resolve(s, known)).collect()),
        Shape::Or(list) => Query::Or(list.iter().map(|s| resolve(s, known)).collect()),
        Shape::Not(s) => Query::not(resolve(s, known)),
        Shape::Leaf(leaf) => match leaf {
            Leaf::Text(kind, m, field, start, len, case) => {
                let k = &known[m % known.len()];
                let source = match field {
                    0 => k.spec.subject.clone(),
                    1 => k.address(),
                    2 => k.cc().unwrap_or_else(|| k.spec.body.clone()),
                    3 => k.spec.note.as_ref().map_or_else(|| k.spec.subject.clone(), |n| n.0.clone()),
                    _ => k.spec.body.clone(),
                };
                let chars: Vec<char> = source.chars().collect();
                let start = start % chars.len().max(1);
                let cut: String = chars.iter().skip(start).take(*len).collect();
                let cut = match case {
                    0 => cut,
                    1 => cut.to_uppercase(),
                    _ => cut.to_lowercase(),
                };
                needle_query(*kind, cut)
            }
            Leaf::Word(kind, w) => needle_query(*kind, (*w).to_owned()),
            Leaf::Flags(set, f) => {
                if *set {
                    Query::has_flags(Flags(*f))
                } else {
                    Query::lacks_flags(Flags(*f))
                }
            }
            Leaf::Keyword(set, k) => {
                if *set {
                    Query::keyword(*k)
                } else {
                    Query::no_keyword(*k)
                }
            }
            Leaf::Size(larger, m, d) => {
                let n = (known[m % known.len()].size as i64 + i64::from(*d)) as u64;
                if *larger { Query::larger(n) } else { Query::smaller(n) }
            }
            Leaf::Uids(a, b) => Query::uids([*a..=*b]),
            Leaf::Day(sent, cmp, d) => {
                let day = Day::of(Timestamp::from_micros(((base + d) * 86_400) as u64 * 1_000_000));
                let cmp = [DayCmp::Before, DayCmp::On, DayCmp::Since][*cmp as usize];
                if *sent { Query::sent_day(cmp, day) } else { Query::received_day(cmp, day) }
            }
            Leaf::Time(sent, before, t) => {
                let at = Timestamp::from_micros((base * 86_400 + t) as u64 * 1_000_000);
                match (sent, before) {
                    (true, true) => Query::sent_before(at),
                    (true, false) => Query::sent_since(at),
                    (false, true) => Query::received_before(at),
                    (false, false) => Query::received_since(at),
                }
            }
        },
    }
}

proptest! {
    // `MAILSTORE_SEARCH_CASES` runs more (or fewer) cases than the default 64.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("MAILSTORE_SEARCH_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn evaluator_agrees_with_the_oracle(
        specs in prop::collection::vec(spec(), 1..8),
        shapes in prop::collection::vec(shape(), 12),
    ) {
        let f = Fixture::create();
        let mut known = Vec::new();
        let mut batch = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            let bytes = raw(&spec);
            let k = Known { size: bytes.len() as u64, uid: i as Uid + 1, spec };
            let keywords = k.spec.keyword.map(|w| vec![w.to_owned()]).unwrap_or_default();
            batch.push((bytes, Flags(k.spec.flags), keywords, k.received()));
            known.push(k);
        }
        f.append_to(f.inbox, batch);
        for shape in &shapes {
            let q = resolve(shape, &known);
            let expected: Vec<Uid> = known.iter().filter(|k| k.matches(&q)).map(|k| k.uid).collect();
            let got = f.search(&q);
            prop_assert_eq!(got.uids(), expected, "query {:?}", q);
            prop_assert_eq!(got.count, got.hits.len() as u64);
        }
    }
}
