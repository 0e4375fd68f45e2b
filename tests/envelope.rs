//! Envelope parsing: real-looking messages, hostile ones, bounds, and a never-panics property.

use mailstore::model::envelope::{Address, Envelope, MAX_FIELD_LEN, MAX_LIST_LEN, parse};
use proptest::prelude::*;

/// A message written with `\n` line ends, as sent on the wire (CRLF).
fn crlf(text: &str) -> Vec<u8> {
    text.replace('\n', "\r\n").into_bytes()
}

fn addr(name: Option<&str>, email: &str) -> Address {
    Address { name: name.map(str::to_owned), email: Some(email.to_owned()), group: None }
}

fn emails(list: &[Address]) -> Vec<&str> {
    list.iter().map(|a| a.email.as_deref().unwrap_or("<none>")).collect()
}

const PLAIN: &str = "\
Return-Path: <alice@example.org>
Received: from mx.example.org (mx.example.org [192.0.2.1]) by mail.example.net; Tue, 1 Jul 2003 10:52:40 +0200
From: Alice Example <alice@example.org>
Sender: Mailing Bot <bot@example.org>
Reply-To: \"Alice (replies)\" <replies@example.org>
To: Bob <bob@example.net>, carol@example.net
Cc: Dave <dave@example.com>
Bcc: eve@example.com
Subject: Lunch on Thursday?
Date: Tue, 1 Jul 2003 10:52:37 +0200
Message-ID: <1234.5678@mail.example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Hi Bob,

Are we still on for lunch on Thursday?

-- Alice
";

#[test]
fn plain_text_message() {
    let raw = crlf(PLAIN);
    let env = parse(&raw);
    assert_eq!(
        env,
        Envelope {
            subject: Some("Lunch on Thursday?".into()),
            from: vec![addr(Some("Alice Example"), "alice@example.org")],
            sender: vec![addr(Some("Mailing Bot"), "bot@example.org")],
            reply_to: vec![addr(Some("Alice (replies)"), "replies@example.org")],
            to: vec![addr(Some("Bob"), "bob@example.net"), addr(None, "carol@example.net")],
            cc: vec![addr(Some("Dave"), "dave@example.com")],
            bcc: vec![addr(None, "eve@example.com")],
            // 2003-07-01T08:52:37Z
            date: Some(1_057_049_557),
            date_zone: Some(120),
            date_text: Some("Tue, 1 Jul 2003 10:52:37 +0200".into()),
            message_id: Some("1234.5678@mail.example.org".into()),
            in_reply_to: vec![],
            references: vec![],
            size: raw.len() as u64,
            has_attachments: false,
            malformed: false,
        }
    );
}

#[test]
fn size_is_the_raw_length_with_bare_lf_too() {
    let lf = PLAIN.as_bytes();
    let env = parse(lf);
    assert!(!env.malformed);
    assert_eq!(env.size, lf.len() as u64);
    assert_eq!(env.subject.as_deref(), Some("Lunch on Thursday?"));
    assert_ne!(parse(&crlf(PLAIN)).size, env.size, "CRLF and LF versions differ in size");
}

#[test]
fn multipart_alternative_has_no_attachments() {
    let raw = crlf(
        "\
From: \"Shop\" <news@shop.example>
To: customer@example.net
Subject: Your weekly offers
Date: Mon, 15 Jan 2024 09:00:00 +0000
Message-ID: <offers-2024-03@shop.example>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary=\"b1_alt\"

--b1_alt
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

This week: 20% off everything.
--b1_alt
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<html><body><p>This week: <b>20% off</b> everything.</p></body></html>
--b1_alt--
",
    );
    let env = parse(&raw);
    assert!(!env.malformed);
    assert!(!env.has_attachments);
    assert_eq!(env.subject.as_deref(), Some("Your weekly offers"));
    assert_eq!(env.from, vec![addr(Some("Shop"), "news@shop.example")]);
    assert_eq!(env.date, Some(1_705_309_200));
    assert_eq!(env.message_id.as_deref(), Some("offers-2024-03@shop.example"));
}

const MIXED_WITH_PDF: &str = "\
From: Carol <carol@example.net>
To: Alice <alice@example.org>
Subject: Invoice 2024-017
Date: Wed, 07 Feb 2024 14:03:11 -0500
Message-ID: <inv-017@example.net>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=\"==mixed==\"

This is a multi-part message in MIME format.

--==mixed==
Content-Type: multipart/alternative; boundary=\"==alt==\"

--==alt==
Content-Type: text/plain; charset=utf-8

Please find the invoice attached.
--==alt==
Content-Type: text/html; charset=utf-8

<p>Please find the invoice attached.</p>
--==alt==--

--==mixed==
Content-Type: application/pdf; name=\"invoice-2024-017.pdf\"
Content-Disposition: attachment; filename=\"invoice-2024-017.pdf\"
Content-Transfer-Encoding: base64

JVBERi0xLjQKMSAwIG9iaiA8PCAvVHlwZSAvQ2F0YWxvZyA+PiBlbmRvYmoKdHJhaWxlciA8PCAv
Um9vdCAxIDAgUiA+PgolJUVPRgo=
--==mixed==--
";

#[test]
fn multipart_mixed_with_pdf_has_attachments() {
    let env = parse(&crlf(MIXED_WITH_PDF));
    assert!(!env.malformed);
    assert!(env.has_attachments);
    assert_eq!(env.subject.as_deref(), Some("Invoice 2024-017"));
    // 2024-02-07T19:03:11Z
    assert_eq!(env.date, Some(1_707_332_591));

    // The same message without its PDF part has none.
    let without = MIXED_WITH_PDF.split("--==mixed==\nContent-Type: application/pdf").next().unwrap_or_default();
    let env = parse(&crlf(&format!("{without}--==mixed==--\n")));
    assert!(!env.malformed);
    assert!(!env.has_attachments);
}

#[test]
fn text_part_with_attachment_disposition_and_attached_message_count() {
    let notes = crlf(
        "\
From: a@example.org
Subject: notes
Content-Type: multipart/mixed; boundary=XX

--XX
Content-Type: text/plain

See the notes.
--XX
Content-Type: text/plain; name=notes.txt
Content-Disposition: attachment; filename=notes.txt

1. buy milk
--XX--
",
    );
    assert!(parse(&notes).has_attachments);

    let forwarded = crlf(
        "\
From: a@example.org
Subject: Fwd: hello
Content-Type: multipart/mixed; boundary=YY

--YY
Content-Type: text/plain

Forwarding this.
--YY
Content-Type: message/rfc822

From: b@example.org
Subject: hello

inner body
--YY--
",
    );
    let env = parse(&forwarded);
    assert!(env.has_attachments);
    assert_eq!(env.subject.as_deref(), Some("Fwd: hello"), "the inner Subject must not leak out");
    assert_eq!(emails(&env.from), ["a@example.org"]);
}

#[test]
fn inline_images_and_calendar_parts_are_attachments_text_bodies_are_not() {
    let photo = crlf(
        "\
From: a@example.org
Subject: our cat
Content-Type: multipart/mixed; boundary=B

--B
Content-Type: text/plain

Look at her!
--B
Content-Type: image/png
Content-Disposition: inline; filename=cat.png
Content-Transfer-Encoding: base64

iVBORw0KGgo=
--B--
",
    );
    assert!(parse(&photo).has_attachments, "an inline image is an attachment");

    let invite = crlf(
        "\
From: a@example.org
Subject: Meeting
Content-Type: multipart/alternative; boundary=C

--C
Content-Type: text/plain

Meeting at noon.
--C
Content-Type: text/html

<p>Meeting at noon.</p>
--C
Content-Type: text/calendar; method=REQUEST

BEGIN:VCALENDAR
END:VCALENDAR
--C--
",
    );
    assert!(parse(&invite).has_attachments, "a text/calendar alternative is an attachment");

    let two_texts = crlf(
        "\
From: a@example.org
Subject: two parts
Content-Type: multipart/mixed; boundary=D

--D
Content-Type: text/plain

first
--D
Content-Type: text/html

<p>second</p>
--D--
",
    );
    assert!(!parse(&two_texts).has_attachments, "inline text bodies are not attachments");
}

#[test]
fn rfc2047_subject_and_display_names_are_decoded() {
    let env = parse(&crlf(
        "\
From: =?UTF-8?B?SsO8cmdlbiBNw7xsbGVy?= <juergen@example.de>
To: =?ISO-8859-1?Q?Andr=E9?= Pirard <pirard@example.be>, =?utf-8?q?Fran=C3=A7ois?= <f@example.fr>
Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4g4piV?=
Date: Thu, 29 Feb 2024 16:00:00 -0730

body
",
    ));
    assert!(!env.malformed);
    assert_eq!(env.subject.as_deref(), Some("Grüße aus Köln ☕"));
    assert_eq!(env.from, vec![addr(Some("Jürgen Müller"), "juergen@example.de")]);
    assert_eq!(env.to, vec![addr(Some("André Pirard"), "pirard@example.be"), addr(Some("François"), "f@example.fr")]);
    // A leap day and a half-hour negative offset: 2024-02-29T23:30:00Z.
    assert_eq!(env.date, Some(1_709_249_400));

    let env = parse(&crlf(
        "From: x@example.org\nSubject: =?ISO-8859-1?Q?Caf=E9_cr=E8me?= et =?UTF-8?B?5pel5pys6Kqe44Gu5Lu25ZCN?=\n\n",
    ));
    assert_eq!(env.subject.as_deref(), Some("Café crème et 日本語の件名"));
}

#[test]
fn group_members_carry_the_group_name() {
    let env = parse(&crlf(
        "\
From: organiser@example.org
To: Project Team: Joe <joe@example.org>, \"Ann B.\" <ann@example.org>;, solo@example.com
Cc: undisclosed-recipients:;
Subject: kickoff

.
",
    ));
    assert!(!env.malformed);
    let team = |a: Address| Address { group: Some("Project Team".into()), ..a };
    assert_eq!(
        env.to,
        vec![
            team(addr(Some("Joe"), "joe@example.org")),
            team(addr(Some("Ann B."), "ann@example.org")),
            addr(None, "solo@example.com")
        ]
    );
    let empty = Address { group: Some("undisclosed-recipients".into()), ..Address::default() };
    assert_eq!(env.cc, vec![empty], "an empty group is one entry without name or email");
}

#[test]
fn the_date_keeps_its_zone_and_its_text() {
    let env = |value: &str| parse(&crlf(&format!("From: a@b.example\nDate: {value}\n\n")));
    let e = env("Tue, 1 Jul 2003 01:52:37 -0730");
    assert_eq!((e.date, e.date_zone), (Some(1_057_049_557 + 30 * 60), Some(-450)));
    assert_eq!(e.date_text.as_deref(), Some("Tue, 1 Jul 2003 01:52:37 -0730"));
    // Folded, and with a comment: unfolded, kept as written.
    let e = parse(&crlf("From: a@b.example\nDate: Tue, 1 Jul 2003\n 10:52:37 +0200 (CEST)\n\n"));
    assert_eq!((e.date, e.date_zone), (Some(1_057_049_557), Some(120)));
    assert_eq!(e.date_text.as_deref(), Some("Tue, 1 Jul 2003 10:52:37 +0200 (CEST)"));
    // Not a date: no instant and no zone, but the text is still what IMAP's ENVELOPE shows.
    let e = env("yesterday, around noon");
    assert_eq!((e.date, e.date_zone, e.date_text.as_deref()), (None, None, Some("yesterday, around noon")));
    assert_eq!(parse(&crlf("From: a@b.example\n\n")).date_text, None);
}

#[test]
fn references_and_in_reply_to() {
    let env = parse(&crlf(
        "\
From: bob@example.net
Subject: Re: Re: Lunch on Thursday?
Message-ID: <reply-2@example.net>
In-Reply-To: <reply-1@example.org> <1234.5678@mail.example.org>
References: <1234.5678@mail.example.org>
 <reply-1@example.org>
\t<side-thread@example.com>

Sure.
",
    ));
    assert!(!env.malformed);
    assert_eq!(env.message_id.as_deref(), Some("reply-2@example.net"));
    assert_eq!(env.in_reply_to, ["reply-1@example.org", "1234.5678@mail.example.org"]);
    assert_eq!(env.references, ["1234.5678@mail.example.org", "reply-1@example.org", "side-thread@example.com"]);
}

#[test]
fn single_in_reply_to_and_first_of_several_message_ids() {
    let env = parse(&crlf("From: a@b.example\nMessage-ID: <one@x> <two@x>\nIn-Reply-To: <parent@x>\n\n"));
    assert_eq!(env.message_id.as_deref(), Some("one@x"));
    assert_eq!(env.in_reply_to, ["parent@x"]);
    assert_eq!(env.references, Vec::<String>::new());
}

#[test]
fn dates_with_offsets_are_utc_seconds() {
    let date = |value: &str| parse(&crlf(&format!("From: a@b.example\nDate: {value}\n\n"))).date;
    assert_eq!(date("Tue, 1 Jul 2003 10:52:37 +0200"), Some(1_057_049_557));
    assert_eq!(date("Tue, 1 Jul 2003 08:52:37 +0000"), Some(1_057_049_557));
    assert_eq!(date("Tue, 1 Jul 2003 01:52:37 -0700"), Some(1_057_049_557));
    // Across a year boundary: 2000-01-01 05:30 at +06:30 is 1999-12-31T23:00:00Z.
    assert_eq!(date("Sat, 1 Jan 2000 05:30:00 +0630"), Some(946_681_200));
    assert_eq!(date("1 Jan 1970 00:00:00 GMT"), Some(0));
    // Comments, lower-case month names, obsolete zone names and two-digit years.
    assert_eq!(date("Tue, 1 Jul 2003 10:52:37 +0200 (CEST)"), Some(1_057_049_557));
    assert_eq!(date("Tue, 1 jul 2003 10:52:37 +0200"), Some(1_057_049_557));
    assert_eq!(date("Tue, 1 Jul 2003 03:52:37 EST"), Some(1_057_049_557));
    assert_eq!(date("1 Jul 03 08:52:37 +0000"), Some(1_057_049_557));
}

#[test]
fn missing_or_invalid_date_is_none() {
    let env = parse(&crlf("From: a@b.example\nSubject: no date\n\nbody\n"));
    assert!(!env.malformed, "a missing Date does not make a message malformed");
    assert_eq!(env.date, None);
    let date = |value: &str| parse(&crlf(&format!("From: a@b.example\nDate: {value}\n\n"))).date;
    assert_eq!(date("yesterday, around noon"), None);
    assert_eq!(date("Fri, 31 Feb 2003 10:00:00 +0000"), None, "no 31 February");
    assert_eq!(date("Thu, 29 Feb 2023 10:00:00 +0000"), None, "2023 is no leap year");
    assert_eq!(date("Tue, 1 Jul 2003 99:52:37 +0200"), None, "hour 99");
    // mail-parser maps any three letters to some month; these must not become one.
    assert_eq!(date("Tue, 1 Foo 2003 10:52:37 +0200"), None, "unknown month");
    assert_eq!(date("Tue, 1 Xul 2003 10:52:37 +0200"), None, "unknown month");
    assert_eq!(date("Tue, 1 (Jul) Xyz 2003 10:52:37 +0200"), None, "a month in a comment does not count");
    assert_eq!(date(""), None);
}

#[test]
fn garbage_bytes_are_malformed() {
    let garbage: Vec<u8> = (0..2048u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let env = parse(&garbage);
    assert!(env.malformed);
    assert_eq!(env.size, 2048);
    assert!(env.from.is_empty());

    let text = b"Hello, this is just a line of text with no headers at all";
    let env = parse(text);
    assert!(env.malformed);
    assert_eq!(env.size, text.len() as u64);

    let nul = b"\x00\xff\xfe\r\n\r\n";
    assert!(parse(nul).malformed);
}

#[test]
fn input_that_trips_a_mail_parser_debug_assertion_is_malformed_not_a_panic() {
    // mail-parser 0.11.9 hits `debug_assert!(false, "Invalid part ID, could not find multipart.")` on this (found by
    // fuzzing); in builds with debug assertions that is a panic inside the parser. Release builds parse on.
    let raw = b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--BContent-Type: message/rfc822\r\n\r\n\
        Content-Type: message/rfc822\r\n\r\n\r\n--B--\r\n\r\n";
    let env = parse(raw);
    assert!(env.malformed);
    assert_eq!(env.size, raw.len() as u64);
}

#[test]
fn empty_input_is_malformed_with_size_zero() {
    assert_eq!(parse(b""), Envelope { malformed: true, ..Envelope::default() });
    assert_eq!(parse(b"").size, 0);
}

#[test]
fn no_header_section_is_malformed() {
    let raw = crlf("\nFrom: a@b.example\nSubject: this is body text\n");
    let env = parse(&raw);
    assert!(env.malformed);
    assert_eq!(env.subject, None, "text after the empty line is body");
    assert_eq!(env.size, raw.len() as u64);
}

#[test]
fn missing_from_is_malformed_but_keeps_what_it_can() {
    let env = parse(&crlf("To: bob@example.net\nSubject: who sent this?\nMessage-ID: <anon@x>\n\nbody\n"));
    assert!(env.malformed);
    assert_eq!(env.subject.as_deref(), Some("who sent this?"));
    assert_eq!(emails(&env.to), ["bob@example.net"]);
    assert_eq!(env.message_id.as_deref(), Some("anon@x"));
}

#[test]
fn header_only_message() {
    let raw = crlf(
        "From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: (no body)\nDate: Tue, 1 Jul 2003 10:52:37 +0200\n",
    );
    let env = parse(&raw);
    assert!(!env.malformed);
    assert!(!env.has_attachments);
    assert_eq!(env.subject.as_deref(), Some("(no body)"));
    assert_eq!(env.from, vec![addr(Some("Alice"), "alice@example.org")]);
    assert_eq!(emails(&env.to), ["bob@example.net"]);
    assert_eq!(env.date, Some(1_057_049_557));
    assert_eq!(env.size, raw.len() as u64);
}

#[test]
fn last_occurrence_of_a_repeated_header_wins() {
    let env = parse(&crlf("From: a@b.example\nSubject: first\nSubject: second\n\n"));
    assert_eq!(env.subject.as_deref(), Some("second"));
}

#[test]
fn name_only_and_blank_entries() {
    let env = parse(&crlf("From: undisclosed\nTo: \nSubject:   \n\n"));
    assert_eq!(env.from, vec![Address { name: Some("undisclosed".into()), ..Address::default() }]);
    assert!(!env.malformed, "a From without an address is still a From");
    assert_eq!(env.to, vec![]);
    assert_eq!(env.subject, None, "a blank Subject is no subject");

    // Blank after decoding counts as blank too.
    let env =
        parse(&crlf("From: \"   \" <a@b.example>, =?UTF-8?B?ICAg?= <c@d.example>\nSubject: =?UTF-8?B?ICAg?=\n\n"));
    assert_eq!(env.from, vec![addr(None, "a@b.example"), addr(None, "c@d.example")]);
    assert_eq!(env.subject, None);
}

#[test]
fn long_subject_is_truncated_on_a_char_boundary() {
    // One ASCII byte then 2999 three-byte chars: 8998 bytes; the largest boundary at or below 998 is 1 + 3 * 332.
    let subject: String = std::iter::once('a').chain(std::iter::repeat_n('€', 2999)).collect();
    assert_eq!(subject.chars().count(), 3000);
    let env = parse(&crlf(&format!("From: a@b.example\nSubject: {subject}\n\nbody\n")));
    let got = env.subject.expect("a subject");
    assert_eq!(got.len(), 997);
    assert!(got.len() <= MAX_FIELD_LEN);
    assert!(subject.starts_with(&got));

    // Plain ASCII is cut at exactly the limit.
    let ascii = "x".repeat(3000);
    let env = parse(&crlf(&format!("From: a@b.example\nSubject: {ascii}\n\n")));
    assert_eq!(env.subject.as_deref(), Some(&ascii[..MAX_FIELD_LEN]));
}

#[test]
fn long_names_emails_and_ids_are_bounded() {
    let name = "N".repeat(5000);
    let local = "l".repeat(3000);
    let id = format!("{}@example.org", "i".repeat(3000));
    let env = parse(&crlf(&format!(
        "From: \"{name}\" <{local}@example.org>\nMessage-ID: <{id}>\nReferences: <{id}> <short@x>\n\n"
    )));
    let from = env.from.first().expect("a From");
    assert_eq!(from.name.as_deref().map(str::len), Some(MAX_FIELD_LEN));
    assert_eq!(from.email.as_deref().map(str::len), Some(MAX_FIELD_LEN));
    assert_eq!(env.message_id.as_deref(), Some(&id[..MAX_FIELD_LEN]));
    assert_eq!(env.references, [&id[..MAX_FIELD_LEN], "short@x"]);
}

#[test]
fn five_hundred_recipients_are_capped_at_one_hundred() {
    let recipients: Vec<String> = (0..500).map(|i| format!("user{i}@example.net")).collect();
    let to = recipients.join(",\n ");
    let groups: Vec<String> = (0..50)
        .map(|g| format!("g{g}: {};", (0..10).map(|i| format!("m{g}.{i}@example.com")).collect::<Vec<_>>().join(", ")))
        .collect();
    let env =
        parse(&crlf(&format!("From: a@b.example\nTo: {to}\nBcc: {}\nSubject: all hands\n\nbody\n", groups.join(" "))));
    assert!(!env.malformed);
    assert_eq!(env.to.len(), MAX_LIST_LEN);
    assert_eq!(emails(&env.to), recipients[..MAX_LIST_LEN].iter().map(String::as_str).collect::<Vec<_>>());
    // Flattened groups are capped after flattening: 500 members, the first 100 kept.
    assert_eq!(env.bcc.len(), MAX_LIST_LEN);
    assert_eq!(env.bcc.first().and_then(|a| a.email.as_deref()), Some("m0.0@example.com"));
    assert_eq!(env.bcc.last().and_then(|a| a.email.as_deref()), Some("m9.9@example.com"));
}

#[test]
fn references_keep_the_root_and_the_nearest_ancestors() {
    let ids: Vec<String> = (0..300).map(|i| format!("r{i}@example.org")).collect();
    let refs = ids.iter().map(|id| format!("<{id}>")).collect::<Vec<_>>().join("\n ");
    let in_reply_to = ids.iter().map(|id| format!("<{id}>")).collect::<Vec<_>>().join(" ");
    let env = parse(&crlf(&format!("From: a@b.example\nReferences: {refs}\nIn-Reply-To: {in_reply_to}\n\n")));
    assert_eq!(env.references.len(), MAX_LIST_LEN);
    assert_eq!(env.references.first(), ids.first(), "the thread root is kept");
    assert_eq!(env.references[1..], ids[300 - (MAX_LIST_LEN - 1)..], "then the nearest ancestors, in order");
    assert_eq!(env.in_reply_to, ids[..MAX_LIST_LEN]);
}

#[test]
fn envelope_round_trips_through_the_log_codec() {
    let env = parse(&crlf(MIXED_WITH_PDF));
    let bytes = mailstore::internals::codec::encode(&env).expect("encode");
    let back: Envelope = mailstore::internals::codec::decode(&bytes).expect("decode");
    assert_eq!(back, env);
    let empty = Envelope::default();
    let back: Envelope =
        mailstore::internals::codec::decode(&mailstore::internals::codec::encode(&empty).expect("encode"))
            .expect("decode");
    assert_eq!(back, empty);
}

/// Checks the invariants every envelope holds, whatever the input.
fn check_invariants(raw: &[u8], env: &Envelope) -> Result<(), TestCaseError> {
    prop_assert_eq!(env.size, raw.len() as u64);
    if let Some(subject) = &env.subject {
        prop_assert!(subject.len() <= MAX_FIELD_LEN);
    }
    if let Some(id) = &env.message_id {
        prop_assert!(id.len() <= MAX_FIELD_LEN);
    }
    if let Some(text) = &env.date_text {
        prop_assert!(text.len() <= MAX_FIELD_LEN);
    }
    prop_assert_eq!(env.date.is_some(), env.date_zone.is_some());
    for list in [&env.from, &env.sender, &env.reply_to, &env.to, &env.cc, &env.bcc] {
        prop_assert!(list.len() <= MAX_LIST_LEN);
        for a in list {
            // An entry without name and email is an empty group's.
            prop_assert!(a.name.is_some() || a.email.is_some() || a.group.is_some());
            prop_assert!(a.name.as_ref().is_none_or(|s| s.len() <= MAX_FIELD_LEN));
            prop_assert!(a.group.as_ref().is_none_or(|s| s.len() <= MAX_FIELD_LEN));
            prop_assert!(a.email.as_ref().is_none_or(|s| s.len() <= MAX_FIELD_LEN));
        }
    }
    for ids in [&env.in_reply_to, &env.references] {
        prop_assert!(ids.len() <= MAX_LIST_LEN);
        prop_assert!(ids.iter().all(|id| !id.is_empty() && id.len() <= MAX_FIELD_LEN));
    }
    prop_assert!(env.malformed || !env.from.is_empty());
    if raw.is_empty() {
        prop_assert!(env.malformed);
    }
    Ok(())
}

/// Header lines drawn from the fields the envelope reads, with arbitrary (often hostile) values.
fn header_block() -> impl Strategy<Value = Vec<u8>> {
    let name = prop::sample::select(vec![
        "From",
        "Sender",
        "Reply-To",
        "To",
        "Cc",
        "Bcc",
        "Subject",
        "Date",
        "Message-ID",
        "In-Reply-To",
        "References",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
        "MIME-Version",
    ]);
    let value = prop::collection::vec(
        prop_oneof![
            any::<u8>(),
            prop::sample::select(b"<>@:;,\"()=?\\ \t\r\n-".to_vec()),
            prop::sample::select(b"abcXYZ019".to_vec()),
        ],
        0..80,
    );
    prop::collection::vec((name, value), 0..12).prop_map(|headers| {
        let mut out = Vec::new();
        for (name, value) in headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(&value);
            out.extend_from_slice(b"\r\n");
        }
        out
    })
}

/// MIME structure soup: boundaries, nested multiparts and attached messages, transfer encodings, and raw bytes.
fn mime_soup() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"\r\n".to_vec()),
        Just(b"--B".to_vec()),
        Just(b"--B--".to_vec()),
        Just(b"--C".to_vec()),
        Just(b"From: a@b.example\r\n".to_vec()),
        Just(b"Content-Type: multipart/mixed; boundary=B\r\n".to_vec()),
        Just(b"Content-Type: multipart/alternative; boundary=C\r\n".to_vec()),
        Just(b"Content-Type: multipart/digest; boundary=B\r\n".to_vec()),
        Just(b"Content-Type: message/rfc822\r\n".to_vec()),
        Just(b"Content-Type: image/png\r\n".to_vec()),
        Just(b"Content-Transfer-Encoding: base64\r\n".to_vec()),
        Just(b"Content-Transfer-Encoding: quoted-printable\r\n".to_vec()),
        Just(b"Subject: =?utf-8?q?a=C3?= =?ISO-8859-1?B?////?=\r\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_bytes(raw in prop::collection::vec(any::<u8>(), 0..4096)) {
        let env = parse(&raw);
        check_invariants(&raw, &env)?;
        prop_assert_eq!(parse(&raw), env, "parsing is deterministic");
    }

    #[test]
    fn never_panics_after_a_valid_header_block(tail in prop::collection::vec(any::<u8>(), 0..4096)) {
        let mut raw = crlf("From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: hello\n\
            Date: Tue, 1 Jul 2003 10:52:37 +0200\nMessage-ID: <p@x>\nMIME-Version: 1.0\n\
            Content-Type: multipart/mixed; boundary=\"b\"\n\n--b\n");
        raw.extend_from_slice(&tail);
        let env = parse(&raw);
        check_invariants(&raw, &env)?;
        prop_assert!(!env.malformed, "the header block is intact whatever follows it");
        prop_assert_eq!(env.subject.as_deref(), Some("hello"));
        prop_assert_eq!(env.date, Some(1_057_049_557));
    }

    #[test]
    fn never_panics_on_hostile_headers(
        headers in header_block(),
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut raw = headers;
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(&body);
        let env = parse(&raw);
        check_invariants(&raw, &env)?;
    }

    #[test]
    fn never_panics_on_mime_soup(raw in mime_soup()) {
        let env = parse(&raw);
        check_invariants(&raw, &env)?;
    }
}
