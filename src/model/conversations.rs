//! Conversations (JMAP `Thread`): every item of a mailbox belongs to exactly one conversation, decided when the
//! item is stored, by the apply function, from the state and the logged envelope alone.
//!
//! ```
//! use mailstore::model::{Flags, FolderRole, MailEngine, MailOp, MailOutput, MailboxKind};
//! use mailstore::{Engine, Options};
//!
//! # fn main() -> mailstore::Result<()> {
//! let dir = tempfile::tempdir().expect("a temporary directory");
//! let db: MailEngine = Engine::mount(dir.path(), Options::default())?;
//! let op = MailOp::create_mailbox("erin@example.com", "Erin", MailboxKind::User);
//! let erin = op.mailbox().expect("a mailbox operation");
//! db.commit(op)?;
//! let inbox = db.read(|s, txn| s.folder_by_role(txn, &erin, FolderRole::Inbox))?.expect("an Inbox").id;
//! let deliver = |raw: &[u8]| -> mailstore::Result<u64> {
//!     match db.commit(MailOp::append(erin, inbox, raw.to_vec(), Flags::empty(), vec![]))?.output {
//!         MailOutput::Appended { item, .. } => Ok(item),
//!         other => panic!("not an append: {other:?}"),
//!     }
//! };
//! // The reply arrives before the message it answers; both end up in one conversation.
//! let reply = deliver(b"From: b@example.com\r\nSubject: Re: lunch\r\nMessage-ID: <2@x>\r\nIn-Reply-To: <1@x>\r\n\r\n.\r\n")?;
//! let first = deliver(b"From: a@example.com\r\nSubject: Lunch\r\nMessage-ID: <1@x>\r\n\r\n.\r\n")?;
//! let other = deliver(b"From: c@example.com\r\nSubject: Lunch\r\nMessage-ID: <3@x>\r\n\r\n.\r\n")?;
//! db.read(|s, txn| {
//!     let conversation = s.conversation(txn, &erin, reply)?.expect("every item has one");
//!     assert_eq!(s.conversation(txn, &erin, first)?, Some(conversation));
//!     // The same subject without a reference is another conversation.
//!     assert_ne!(s.conversation(txn, &erin, other)?, Some(conversation));
//!     // Its items in received order (across folders), and its id is the item id of its first message.
//!     let items: Vec<u64> = s.conversation_items(txn, &erin, conversation)?.iter().map(|i| i.id).collect();
//!     assert_eq!(items, [reply, first]);
//!     assert_eq!(conversation.get(), reply);
//!     Ok(())
//! })?;
//! db.dismount()
//! # }
//! ```
//!
//! # The rule
//!
//! A message stored with new content ([`MailOp::Append`](crate::model::MailOp::Append), `ReplaceItem`, `Submit`)
//! *mentions* the ids of its `In-Reply-To` and, newest first, of its `References` (together, deduplicated, at most
//! [`MAX_CONVERSATION_REFERENCES`]), then its own `Message-ID`. It joins the conversation of the first mentioned id
//! that a message of the same mailbox, in any folder (Recoverable Items included), already mentions — its parent,
//! its nearest ancestor, or a reply or a copy of itself that arrived before it — **provided the conversation's
//! base subject (RFC 5256 §2.1, [`base_subject`]) equals the message's**, as Gmail and Fastmail require, so that a
//! "reply" starting a new topic starts a new conversation. Where an id is mentioned in several conversations, the
//! oldest (lowest id) that agrees on the subject is taken. Otherwise the message starts a new conversation.
//!
//! - **Ids are stable.** A conversation's id is the item id of the message that started it
//!   ([`ConversationId::get`]); item ids are never given twice in a mailbox, so neither are conversation ids. An
//!   item's conversation never changes while it exists, and conversations **never merge**: a message that would
//!   link two conversations joins the first found, and the other stays as it was.
//! - **Copies and moves keep the conversation** (a copy, a move, a deletion into Recoverable Items, a recovery
//!   and a transport's move to Sent Items are new items of the same conversation); expunges and purges remove the
//!   item from it. A conversation whose last item is gone ceases to exist, with what its items mentioned: a later
//!   message referring to them starts a new conversation (with a new id).
//! - **Deterministic.** Only the state and the logged envelope decide, so recovery, a passive copy's replay and a
//!   restore give every item the same conversation.
//!
//! # Limits
//!
//! - At most [`MAX_CONVERSATION_REFERENCES`] (50) referenced ids per message are considered (In-Reply-To first,
//!   then the nearest References): the cost of a delivery and the state per item stay bounded (≤ 51 id entries per
//!   item). The envelope itself keeps up to 100 References (`envelope::MAX_LIST_LEN`).
//! - Where one id is mentioned in more than [`MAX_CONVERSATIONS_PER_ID`] (16) conversations (replies to one
//!   message under many subjects), only the 16 oldest are candidates: a delivery's cost stays bounded.
//! - Ids are compared exactly (octet for octet, as stored without angle brackets), through a 128-bit BLAKE3 hash:
//!   two different ids colliding is not a practical concern.
//! - The subject compared is the stored one (at most `MAX_FIELD_LEN` bytes), through a 128-bit hash of its base
//!   subject; a message without a subject has the empty base subject.
//!
//! # Tables
//!
//! | table | key | value |
//! |---|---|---|
//! | `mail.conversation_of` | GUID ‖ item id | conversation id (u64, big-endian) |
//! | `mail.conversations` | GUID ‖ conversation id | base subject hash (16 bytes) ‖ member count (u64, big-endian) |
//! | `mail.conversation_members` | GUID ‖ conversation id ‖ received time (µs) ‖ item id | empty |
//! | `mail.message_ids` | GUID ‖ id hash (16 bytes) ‖ conversation id | how many of its items mention the id (u32, big-endian) |
//!
//! The four are written only by [`join`] and [`leave`], which `Tx::insert_item` and `Tx::remove_item` call for
//! every item stored and removed; `PurgeMailbox` clears them with the mailbox. [`MailStore::verify_counters`]
//! (`mailstore check`) rebuilds them from the items and compares.

use std::collections::{BTreeMap, BTreeSet};

use heed::{RoTxn, RwTxn};
use serde::{Deserialize, Serialize};

use crate::error::{CodecError, Result};
use crate::model::envelope::Envelope;
use crate::model::search::base_subject;
use crate::model::types::{ItemId, ItemInfo};
use crate::model::{MailStore, keys};
use crate::types::Guid;

/// The most referenced ids (`In-Reply-To`, then `References` newest first) a message is linked by.
pub const MAX_CONVERSATION_REFERENCES: usize = 50;

/// The most conversations one mentioned id is looked up in (the oldest): a hostile sender can make many
/// conversations mention one id (replies to it under ever new subjects), and a delivery must not pay for all.
pub const MAX_CONVERSATIONS_PER_ID: usize = 16;

/// A conversation of a mailbox (JMAP `Thread` id): the item id of the message that started it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConversationId(pub u64);

impl ConversationId {
    /// The id as a number: the item id of the conversation's first message (which may be gone since).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for ConversationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "T{}", self.0)
    }
}

/// A 128-bit hash naming a message id or a base subject in keys.
type Hash16 = [u8; 16];

fn hash16(s: &str) -> Hash16 {
    let mut h = [0u8; 16];
    h.copy_from_slice(&blake3::hash(s.as_bytes()).as_bytes()[..16]);
    h
}

/// The hash of the base subject of an envelope's subject (empty when it has none).
fn subject_hash(e: &Envelope) -> Hash16 {
    hash16(&base_subject(e.subject.as_deref().unwrap_or("")))
}

/// The ids a message mentions, in the order they are looked up: `In-Reply-To`, `References` newest first (at most
/// [`MAX_CONVERSATION_REFERENCES`] of the two, deduplicated), then its own `Message-ID`. Hashed.
pub(crate) fn mentioned(e: &Envelope) -> Vec<Hash16> {
    let mut out: Vec<Hash16> = Vec::with_capacity(MAX_CONVERSATION_REFERENCES + 1);
    let referenced = e.in_reply_to.iter().chain(e.references.iter().rev());
    for id in referenced {
        if out.len() >= MAX_CONVERSATION_REFERENCES {
            break;
        }
        let h = hash16(id);
        if !out.contains(&h) {
            out.push(h);
        }
    }
    if let Some(id) = &e.message_id {
        let h = hash16(id);
        if !out.contains(&h) {
            out.push(h);
        }
    }
    out
}

fn key_of(guid: &Guid, item: ItemId) -> [u8; 24] {
    keys::item(guid, item)
}

fn key_conversation(guid: &Guid, c: ConversationId) -> [u8; 24] {
    keys::item(guid, c.0)
}

fn key_member(guid: &Guid, c: ConversationId, received: u64, item: ItemId) -> [u8; 40] {
    keys::received(guid, c.0, received, item)
}

fn key_id_prefix(guid: &Guid, id: &Hash16) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(&guid.0);
    k[16..].copy_from_slice(id);
    k
}

fn key_id(guid: &Guid, id: &Hash16, c: ConversationId) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&key_id_prefix(guid, id));
    k[32..].copy_from_slice(&c.0.to_be_bytes());
    k
}

fn damaged(rule: &str) -> heed::Error {
    heed::Error::Decoding(Box::new(CodecError::Malformed { record: "conversation entry", rule: rule.to_owned() }))
}

/// A `mail.conversations` value: the base subject hash and the member count.
fn decode_conversation(raw: &[u8]) -> heed::Result<(Hash16, u64)> {
    if raw.len() != 24 {
        return Err(damaged("a conversation record is not 24 bytes"));
    }
    let mut subject = [0u8; 16];
    subject.copy_from_slice(&raw[..16]);
    Ok((subject, keys::u64_at(raw, 16)))
}

fn encode_conversation(subject: &Hash16, members: u64) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[..16].copy_from_slice(subject);
    v[16..].copy_from_slice(&members.to_be_bytes());
    v
}

fn count_of(raw: &[u8]) -> heed::Result<u32> {
    <[u8; 4]>::try_from(raw).map(u32::from_be_bytes).map_err(|_| damaged("a message id count is not 4 bytes"))
}

/// The conversation `item` (just written by `Tx::insert_item`) joins, recorded in the four tables: `source`'s
/// when it is a copy or move of the item `source` (same content), else the one its envelope links it to (see
/// the [module docs](self#the-rule)), or a new one named after it.
pub(crate) fn join(
    s: &MailStore,
    txn: &mut RwTxn<'_>,
    guid: &Guid,
    item: &ItemInfo,
    source: Option<ItemId>,
) -> heed::Result<ConversationId> {
    let ids = mentioned(&item.envelope);
    let conversation = match source {
        Some(src) => match s.conversation_of.get(txn, &key_of(guid, src))? {
            Some(raw) => ConversationId(keys::u64_at(raw, 0)),
            None => return Err(damaged("a copied item has no conversation")),
        },
        None => find(s, txn, guid, &ids, &subject_hash(&item.envelope))?.unwrap_or(ConversationId(item.id)),
    };
    let ckey = key_conversation(guid, conversation);
    let (subject, members) = match s.conversations.get(txn, &ckey)? {
        Some(raw) => decode_conversation(raw)?,
        None => (subject_hash(&item.envelope), 0),
    };
    s.conversations.put(txn, &ckey, &encode_conversation(&subject, members + 1))?;
    s.conversation_of.put(txn, &key_of(guid, item.id), &conversation.0.to_be_bytes())?;
    s.conversation_members.put(txn, &key_member(guid, conversation, item.received.as_micros(), item.id), &[])?;
    for id in &ids {
        let k = key_id(guid, id, conversation);
        let n = match s.message_ids.get(txn, &k)? {
            Some(raw) => count_of(raw)?,
            None => 0,
        };
        s.message_ids.put(txn, &k, &n.saturating_add(1).to_be_bytes())?;
    }
    Ok(conversation)
}

/// The oldest conversation that mentions the first of `ids` mentioned anywhere and has the base subject `subject`.
fn find(
    s: &MailStore,
    txn: &RoTxn<'_>,
    guid: &Guid,
    ids: &[Hash16],
    subject: &Hash16,
) -> heed::Result<Option<ConversationId>> {
    for id in ids {
        for entry in s.message_ids.prefix_iter(txn, &key_id_prefix(guid, id))?.take(MAX_CONVERSATIONS_PER_ID) {
            let (key, _) = entry?;
            let c = ConversationId(keys::u64_at(key, 32));
            let Some(raw) = s.conversations.get(txn, &key_conversation(guid, c))? else {
                return Err(damaged("a message id names a conversation that does not exist"));
            };
            if &decode_conversation(raw)?.0 == subject {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

/// Takes `item` (about to be removed by `Tx::remove_item`) out of its conversation; the conversation and what only
/// it mentioned go with its last item.
pub(crate) fn leave(s: &MailStore, txn: &mut RwTxn<'_>, guid: &Guid, item: &ItemInfo) -> heed::Result<()> {
    let of = key_of(guid, item.id);
    let Some(raw) = s.conversation_of.get(txn, &of)? else {
        return Err(damaged("a removed item has no conversation"));
    };
    let conversation = ConversationId(keys::u64_at(raw, 0));
    s.conversation_of.delete(txn, &of)?;
    s.conversation_members.delete(txn, &key_member(guid, conversation, item.received.as_micros(), item.id))?;
    let ckey = key_conversation(guid, conversation);
    let Some(raw) = s.conversations.get(txn, &ckey)? else {
        return Err(damaged("an item names a conversation that does not exist"));
    };
    let (subject, members) = decode_conversation(raw)?;
    if members <= 1 {
        s.conversations.delete(txn, &ckey)?;
    } else {
        s.conversations.put(txn, &ckey, &encode_conversation(&subject, members - 1))?;
    }
    for id in mentioned(&item.envelope) {
        let k = key_id(guid, &id, conversation);
        let Some(raw) = s.message_ids.get(txn, &k)? else {
            return Err(damaged("a message id an item mentions is not counted"));
        };
        match count_of(raw)? {
            0 | 1 => s.message_ids.delete(txn, &k)?,
            n => {
                s.message_ids.put(txn, &k, &(n - 1).to_be_bytes())?;
                true
            }
        };
    }
    Ok(())
}

impl MailStore {
    /// The conversation of the item `item` of mailbox `guid`; `None` when there is no such item. Every item has
    /// one (see [`conversations`](crate::model::conversations)).
    pub fn conversation(&self, txn: &RoTxn<'_>, guid: &Guid, item: ItemId) -> Result<Option<ConversationId>> {
        Ok(self.conversation_of.get(txn, &key_of(guid, item))?.map(|raw| ConversationId(keys::u64_at(raw, 0))))
    }

    /// The items of `conversation` in mailbox `guid`, in every folder, in received order (INTERNALDATE, then item
    /// id): JMAP `Thread/get`'s `emailIds`. Items in Recoverable Items (hidden folders) are included, so a caller
    /// showing the user's view leaves out those whose folder is hidden. Empty for a conversation that does not
    /// exist (any more). One cursor walk over the members and one lookup per item.
    pub fn conversation_items(
        &self,
        txn: &RoTxn<'_>,
        guid: &Guid,
        conversation: ConversationId,
    ) -> Result<Vec<ItemInfo>> {
        let mut out = Vec::new();
        for entry in self.conversation_members.prefix_iter(txn, &key_conversation(guid, conversation))? {
            let (key, _) = entry?;
            let id = keys::u64_at(key, 32);
            match self.item(txn, guid, id)? {
                Some(item) => out.push(item),
                None => return Err(damaged("a conversation names an item that does not exist").into()),
            }
        }
        Ok(out)
    }

    /// Checks the conversation tables of every mailbox against its items: each item is in exactly one
    /// conversation, listed among its members under its received time, counted in its member count, and the
    /// message ids it mentions are counted for that conversation; no entry names an item, a conversation or a
    /// mailbox that does not exist, and no count is more than its items. Appends each problem found.
    pub(crate) fn verify_conversations(&self, txn: &RoTxn<'_>, problems: &mut Vec<String>) -> Result<()> {
        let mailboxes: BTreeSet<Guid> = self.mailboxes(txn)?.into_iter().map(|m| m.guid).collect();
        // What the tables should hold, rebuilt from the items and `mail.conversation_of`.
        let mut members: BTreeMap<(Guid, u64), u64> = BTreeMap::new();
        let mut member_keys: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut ids: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
        let mut items = 0u64;
        for entry in self.items.iter(txn)? {
            let (key, raw) = entry?;
            let item: ItemInfo = crate::model::load(raw)?;
            let guid = Guid(key.get(..16).and_then(|k| k.try_into().ok()).ok_or_else(|| damaged("a short item key"))?);
            items += 1;
            let Some(raw) = self.conversation_of.get(txn, &key_of(&guid, item.id))? else {
                problems.push(format!("mailbox {guid}: item {} is in no conversation", item.id));
                continue;
            };
            let c = ConversationId(keys::u64_at(raw, 0));
            *members.entry((guid, c.0)).or_default() += 1;
            member_keys.insert(key_member(&guid, c, item.received.as_micros(), item.id).to_vec());
            for id in mentioned(&item.envelope) {
                *ids.entry(key_id(&guid, &id, c).to_vec()).or_default() += 1;
            }
        }
        let of = self.conversation_of.len(txn)?;
        if of != items {
            problems.push(format!("{of} items have a conversation, but there are {items} items"));
        }
        for entry in self.conversations.iter(txn)? {
            let (key, raw) = entry?;
            let guid =
                Guid(key.get(..16).and_then(|k| k.try_into().ok()).ok_or_else(|| damaged("a short conversation key"))?);
            let c = keys::u64_at(key, 16);
            let (_, count) = decode_conversation(raw)?;
            let found = members.remove(&(guid, c)).unwrap_or(0);
            if count != found || !mailboxes.contains(&guid) {
                problems.push(format!("mailbox {guid} conversation {c}: counted {count} items, has {found}"));
            }
        }
        for ((guid, c), n) in members {
            problems.push(format!("mailbox {guid}: conversation {c} of {n} items has no record"));
        }
        for entry in self.conversation_members.iter(txn)? {
            let (key, _) = entry?;
            if !member_keys.remove(key) {
                problems.push(format!(
                    "conversation member entry {} names no item of that conversation",
                    crate::engine::table::display_key(key)
                ));
            }
        }
        if !member_keys.is_empty() {
            problems.push(format!("{} items are missing from their conversation's members", member_keys.len()));
        }
        for entry in self.message_ids.iter(txn)? {
            let (key, raw) = entry?;
            let n = count_of(raw)?;
            let expected = ids.remove(key).unwrap_or(0);
            if n != expected {
                problems.push(format!(
                    "message id entry {}: counted {n}, mentioned by {expected} item(s)",
                    crate::engine::table::display_key(key)
                ));
            }
        }
        if !ids.is_empty() {
            problems.push(format!("{} message ids mentioned by items are not counted", ids.len()));
        }
        Ok(())
    }
}
