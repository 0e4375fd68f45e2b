//! What IMAP FETCH returns about a message: ENVELOPE (from the envelope the store parsed at ingest),
//! BODYSTRUCTURE and BODY[section] (from the raw bytes, parsed with `mail-parser`), and the IMAP string forms.

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};
use mailstore::model::envelope::{self, Address, Envelope};

/// Appends an IMAP string for `bytes`: a quoted string when it is short printable ASCII, a literal otherwise.
pub fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    let quotable = bytes.len() < 1024 && bytes.iter().all(|&b| (0x20..0x7f).contains(&b));
    if quotable {
        out.push(b'"');
        for &b in bytes {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        literal(out, bytes);
    }
}

/// Appends an IMAP literal.
pub fn literal(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", bytes.len()).as_bytes());
    out.extend_from_slice(bytes);
}

/// A header value for ENVELOPE: ASCII stays as is, anything else becomes an RFC 2047 encoded word (the store
/// keeps decoded UTF-8; ENVELOPE fields are raw header text).
fn header_text(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => out.extend_from_slice(b"NIL"),
        Some(v) if v.is_ascii() => string(out, v.as_bytes()),
        Some(v) => {
            use base64::Engine as _;
            let word = format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(v.as_bytes()));
            string(out, word.as_bytes());
        }
    }
}

/// An address list in ENVELOPE form: RFC 3501 writes a group as a start marker `(NIL NIL "name" NIL)`, its
/// members, and an end marker `(NIL NIL NIL NIL)`; a group without members is the two markers alone.
fn addresses(out: &mut Vec<u8>, list: &[Address]) {
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    let mut open: Option<&str> = None;
    for a in list {
        if open != a.group.as_deref() {
            if open.is_some() {
                out.extend_from_slice(b"(NIL NIL NIL NIL)");
            }
            if let Some(group) = a.group.as_deref() {
                out.extend_from_slice(b"(NIL NIL ");
                header_text(out, Some(group));
                out.extend_from_slice(b" NIL)");
            }
            open = a.group.as_deref();
        }
        if a.name.is_none() && a.email.is_none() {
            continue; // an empty group's entry: its markers are all there is
        }
        mailbox(out, a);
    }
    if open.is_some() {
        out.extend_from_slice(b"(NIL NIL NIL NIL)");
    }
    out.push(b')');
}

fn mailbox(out: &mut Vec<u8>, a: &Address) {
    out.push(b'(');
    header_text(out, a.name.as_deref());
    out.extend_from_slice(b" NIL ");
    let (local, host) = match a.email.as_deref() {
        Some(e) => match e.rsplit_once('@') {
            Some((l, h)) => (Some(l), Some(h)),
            None => (Some(e), None),
        },
        None => (None, None),
    };
    header_text(out, local);
    out.push(b' ');
    header_text(out, host);
    out.push(b')');
}

fn ids(list: &[String]) -> Option<String> {
    if list.is_empty() { None } else { Some(list.iter().map(|i| format!("<{i}>")).collect::<Vec<_>>().join(" ")) }
}

/// Appends the IMAP ENVELOPE of a stored envelope.
pub fn envelope(out: &mut Vec<u8>, e: &Envelope) {
    out.push(b'(');
    // The Date field as written (RFC 3501 copies it; rewriting it in UTC loses the sender's zone).
    header_text(out, e.date_text.as_deref());
    out.push(b' ');
    header_text(out, e.subject.as_deref());
    out.push(b' ');
    addresses(out, &e.from);
    out.push(b' ');
    // RFC 3501: Sender and Reply-To default to From.
    addresses(out, if e.sender.is_empty() { &e.from } else { &e.sender });
    out.push(b' ');
    addresses(out, if e.reply_to.is_empty() { &e.from } else { &e.reply_to });
    for list in [&e.to, &e.cc, &e.bcc] {
        out.push(b' ');
        addresses(out, list);
    }
    out.push(b' ');
    header_text(out, ids(&e.in_reply_to).as_deref());
    out.push(b' ');
    header_text(out, e.message_id.as_ref().map(|m| format!("<{m}>")).as_deref());
    out.push(b')');
}

/// Parses a raw message; `None` when `mail-parser` cannot make a message of it.
pub fn parse(raw: &[u8]) -> Option<Message<'_>> {
    MessageParser::default().parse(raw)
}

fn slice(raw: &[u8], from: u32, to: u32) -> &[u8] {
    let end = (to as usize).min(raw.len());
    let start = (from as usize).min(end);
    &raw[start..end]
}

/// Appends BODYSTRUCTURE (`extended`) or BODY of a message.
pub fn body_structure(out: &mut Vec<u8>, raw: &[u8], extended: bool) {
    match parse(raw) {
        Some(msg) => part_structure(out, &msg, 0, extended, 0),
        // Not a message: describe the bytes as one text part.
        None => {
            let lines = raw.iter().filter(|&&b| b == b'\n').count();
            out.extend_from_slice(
                format!("(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" {} {lines})", raw.len())
                    .as_bytes(),
            );
        }
    }
}

const MAX_DEPTH: usize = 20;

fn params(out: &mut Vec<u8>, attributes: Option<&[mail_parser::Attribute<'_>]>, default: Option<(&str, &str)>) {
    let mut pairs: Vec<(String, String)> =
        attributes.unwrap_or(&[]).iter().map(|a| (a.name.to_uppercase(), a.value.to_string())).collect();
    if let Some((k, v)) = default
        && !pairs.iter().any(|(n, _)| n == k)
    {
        pairs.push((k.to_owned(), v.to_owned()));
    }
    if pairs.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        string(out, k.as_bytes());
        out.push(b' ');
        header_text(out, Some(v));
    }
    out.push(b')');
}

fn disposition(out: &mut Vec<u8>, part: &MessagePart<'_>) {
    match part.content_disposition() {
        Some(d) => {
            out.push(b'(');
            string(out, d.ctype().to_uppercase().as_bytes());
            out.push(b' ');
            params(out, d.attributes.as_deref(), None);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
}

fn part_structure(out: &mut Vec<u8>, msg: &Message<'_>, id: u32, extended: bool, depth: usize) {
    let Some(part) = msg.part(id) else {
        out.extend_from_slice(b"(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 0 0)");
        return;
    };
    let raw = msg.raw_message();
    let ct = part.content_type();
    if let PartType::Multipart(children) = &part.body
        && depth < MAX_DEPTH
    {
        out.push(b'(');
        for &child in children {
            part_structure(out, msg, child, extended, depth + 1);
        }
        out.push(b' ');
        let subtype = ct.and_then(|c| c.subtype()).unwrap_or("mixed").to_uppercase();
        string(out, subtype.as_bytes());
        if extended {
            out.push(b' ');
            params(out, ct.and_then(|c| c.attributes.as_deref()), None);
            out.push(b' ');
            disposition(out, part);
            out.extend_from_slice(b" NIL NIL");
        }
        out.push(b')');
        return;
    }
    let is_message = matches!(part.body, PartType::Message(_));
    let (ctype, subtype) = match ct {
        Some(c) => (c.ctype().to_uppercase(), c.subtype().unwrap_or("").to_uppercase()),
        None if is_message => ("MESSAGE".into(), "RFC822".into()),
        None => ("TEXT".into(), "PLAIN".into()),
    };
    let body = slice(raw, part.offset_body, part.offset_end);
    out.push(b'(');
    string(out, ctype.as_bytes());
    out.push(b' ');
    string(out, subtype.as_bytes());
    out.push(b' ');
    let default_charset = if ctype == "TEXT" { Some(("CHARSET", "US-ASCII")) } else { None };
    params(out, ct.and_then(|c| c.attributes.as_deref()), default_charset);
    out.push(b' ');
    header_text(out, part.content_id());
    out.push(b' ');
    header_text(out, part.content_description());
    out.push(b' ');
    let encoding = part.content_transfer_encoding().unwrap_or("7BIT").to_uppercase();
    string(out, encoding.as_bytes());
    out.extend_from_slice(format!(" {}", body.len()).as_bytes());
    let lines = body.iter().filter(|&&b| b == b'\n').count();
    match &part.body {
        PartType::Message(nested) if ctype == "MESSAGE" && depth < MAX_DEPTH => {
            out.push(b' ');
            envelope(out, &envelope::parse(nested.raw_message()));
            out.push(b' ');
            part_structure(out, nested, 0, extended, depth + 1);
            out.extend_from_slice(format!(" {lines}").as_bytes());
        }
        _ if ctype == "TEXT" => out.extend_from_slice(format!(" {lines}").as_bytes()),
        _ => {}
    }
    if extended {
        out.extend_from_slice(b" NIL ");
        disposition(out, part);
        out.extend_from_slice(b" NIL NIL");
    }
    out.push(b')');
}

/// What of a part a section asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SectionText {
    /// The part's content (the whole message for an empty path).
    Content,
    /// The header of the message (or the encapsulated message) at the path.
    Header,
    /// Only these header fields (`NOT`: all but these).
    HeaderFields { names: Vec<String>, not: bool },
    /// The text (body) of the message at the path.
    Text,
    /// The MIME header of the part.
    Mime,
}

/// The bytes of section `path` / `text` of a raw message; empty when the message has no such part
/// (RFC 3501: a missing part is returned empty, not an error).
pub fn section(raw: &[u8], path: &[u32], text: &SectionText) -> Vec<u8> {
    if path.is_empty() && *text == SectionText::Content {
        return raw.to_vec();
    }
    let Some(msg) = parse(raw) else {
        return match text {
            SectionText::Text | SectionText::Content => raw.to_vec(),
            _ => Vec::new(),
        };
    };
    section_in(&msg, 0, path, text, 0)
}

fn section_in(msg: &Message<'_>, id: u32, path: &[u32], text: &SectionText, depth: usize) -> Vec<u8> {
    let raw = msg.raw_message();
    let Some(part) = msg.part(id) else { return Vec::new() };
    if depth > MAX_DEPTH {
        return Vec::new();
    }
    let Some((&first, rest)) = path.split_first() else {
        // At the message (or encapsulated message) itself.
        let header = slice(raw, part.offset_header, part.offset_body);
        return match text {
            SectionText::Content => raw.to_vec(),
            SectionText::Header => header.to_vec(),
            SectionText::HeaderFields { names, not } => header_fields(header, names, *not),
            SectionText::Text => slice(raw, part.offset_body, part.offset_end).to_vec(),
            SectionText::Mime => Vec::new(),
        };
    };
    // Pick the child numbered `first` (1-based); a non-multipart message has only part 1, itself.
    let child = match &part.body {
        PartType::Multipart(children) => match children.get(first as usize - 1) {
            Some(&c) => c,
            None => return Vec::new(),
        },
        _ if first == 1 => id,
        _ => return Vec::new(),
    };
    let Some(child_part) = msg.part(child) else { return Vec::new() };
    if rest.is_empty() {
        return match (text, &child_part.body) {
            (SectionText::Content, _) => slice(raw, child_part.offset_body, child_part.offset_end).to_vec(),
            (SectionText::Mime, _) => slice(raw, child_part.offset_header, child_part.offset_body).to_vec(),
            (_, PartType::Message(nested)) => section_in(nested, 0, &[], text, depth + 1),
            _ => Vec::new(),
        };
    }
    match &child_part.body {
        PartType::Message(nested) => section_in(nested, 0, rest, text, depth + 1),
        PartType::Multipart(_) if child != id => section_in(msg, child, rest, text, depth + 1),
        _ => Vec::new(),
    }
}

/// The header lines (with their continuation lines) whose field name is (or, `not`, is not) among `names`,
/// followed by the blank line.
pub fn header_fields(header: &[u8], names: &[String], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keep = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
            keep = names.iter().any(|n| n.eq_ignore_ascii_case(&name)) != not;
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &[u8] = b"From: a@b.c\r\nSubject: hi\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--XX--\r\n";

    #[test]
    fn sections_and_structure() {
        assert_eq!(section(MIXED, &[1], &SectionText::Content), b"hello");
        assert_eq!(section(MIXED, &[2], &SectionText::Content), b"AAAA");
        assert!(section(MIXED, &[], &SectionText::Header).ends_with(b"boundary=XX\r\n\r\n"));
        let fields = section(MIXED, &[], &SectionText::HeaderFields { names: vec!["subject".into()], not: false });
        assert_eq!(fields, b"Subject: hi\r\n\r\n");
        let mut out = Vec::new();
        body_structure(&mut out, MIXED, true);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("((\"TEXT\" \"PLAIN\""), "{s}");
        assert!(s.contains("\"MIXED\""), "{s}");
        assert_eq!(section(b"Subject: x\r\n\r\nbody\r\n", &[1], &SectionText::Content), b"body\r\n");
    }
}
