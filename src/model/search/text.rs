//! Text matching: case folding, and the decoded texts of a message that header and body criteria look at.

use std::borrow::Cow;

use mail_parser::parsers::MessageStream;
use mail_parser::{HeaderValue, Message, PartType};

/// The case-folded form of `s`: every character mapped to the lowercase of the uppercase of its lowercase, one
/// character at a time and without context (see the [module docs](super#case-and-unicode)).
pub(crate) fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else {
            for l in c.to_lowercase() {
                for u in l.to_uppercase() {
                    out.extend(u.to_lowercase());
                }
            }
        }
    }
    out
}

/// Whether `folded_needle` (already folded) occurs in `haystack` once folded.
pub(crate) fn contains(haystack: &str, folded_needle: &str) -> bool {
    folded_needle.is_empty() || fold(haystack).contains(folded_needle)
}

/// One address as it is matched: `Display Name <local@domain>`, `<local@domain>` without a display name,
/// `Display Name` without an address (blank parts count as absent).
pub(crate) fn render_address(name: Option<&str>, email: Option<&str>) -> String {
    let name = name.filter(|n| !n.trim().is_empty());
    let email = email.filter(|e| !e.trim().is_empty());
    match (name, email) {
        (Some(n), Some(e)) => format!("{n} <{e}>"),
        (None, Some(e)) => format!("<{e}>"),
        (Some(n), None) => n.to_owned(),
        (None, None) => String::new(),
    }
}

/// The addresses of an address field of a parsed message, and the names of its groups (as the stored envelope
/// has them: [`Address::group`](crate::model::Address::group)).
pub(crate) fn addresses(field: Option<&mail_parser::Address<'_>>) -> Vec<String> {
    let Some(field) = field else { return Vec::new() };
    let groups = match field {
        mail_parser::Address::Group(groups) => groups.iter().filter_map(|g| g.name.as_deref()).collect(),
        mail_parser::Address::List(_) => Vec::new(),
    };
    field
        .iter()
        .map(|a| render_address(a.name(), a.address()))
        .chain(groups.into_iter().map(str::to_owned))
        .filter(|s| !s.is_empty())
        .collect()
}

/// The text of one header field's value as a named-header criterion sees it: address fields as their rendered
/// addresses separated by `, ` (group names kept), every other field as unstructured text: unfolded, RFC 2047
/// encoded words decoded (`mail-parser` leaves the fields it does not know raw).
pub(crate) fn header_value<'m>(message: &'m Message<'_>, header: &'m mail_parser::Header<'_>) -> Cow<'m, str> {
    if let HeaderValue::Address(a) = &header.value {
        let mut parts = Vec::new();
        if let Some(groups) = a.as_group() {
            for g in groups {
                if let Some(name) = g.name.as_deref() {
                    parts.push(name.to_owned());
                }
                parts.extend(g.addresses.iter().map(|x| render_address(x.name(), x.address())));
            }
        } else {
            parts.extend(a.iter().map(|x| render_address(x.name(), x.address())));
        }
        return Cow::Owned(parts.join(", "));
    }
    let raw = message.raw_message.get(header.offset_start as usize..header.offset_end as usize).unwrap_or_default();
    match MessageStream::new(raw).parse_unstructured() {
        HeaderValue::Text(t) => Cow::Owned(t.into_owned()),
        HeaderValue::TextList(list) => Cow::Owned(list.iter().map(|s| s.as_ref()).collect::<Vec<_>>().join(" ")),
        _ => Cow::Borrowed(""),
    }
}

/// The fields named `name` (ASCII case-insensitively) of the message's top-level header.
pub(crate) fn named<'m, 'x>(
    message: &'m Message<'x>,
    name: &'m str,
) -> impl Iterator<Item = &'m mail_parser::Header<'x>> + 'm {
    message.headers().iter().filter(move |h| h.name.as_str().eq_ignore_ascii_case(name))
}

/// Calls `each` with the decoded text of every text part of the message (`text/*`, HTML source included), and
/// of the messages attached to it, in order, until it returns true.
pub(crate) fn any_body_text(message: &Message<'_>, each: &mut dyn FnMut(&str) -> bool) -> bool {
    // The root part of a single-part message is its body; of a multipart message, a container. Parts are in
    // document order.
    for part in &message.parts {
        let found = match &part.body {
            PartType::Text(t) | PartType::Html(t) => each(t),
            PartType::Message(inner) => any_body_text(inner, each),
            _ => false,
        };
        if found {
            return true;
        }
    }
    false
}

/// Calls `each` with every top-level header field as `Name: value` (the value as [`header_value`] gives it)
/// until it returns true.
pub(crate) fn any_header_line(message: &Message<'_>, each: &mut dyn FnMut(&str) -> bool) -> bool {
    message.headers().iter().any(|h| each(&format!("{}: {}", h.name.as_str(), header_value(message, h))))
}
