//! The mailbox model: mailboxes, folders and items in a database, with IMAP UIDs, MODSEQs and a change log.
//!
//! [`MailStore`] is the [`StateMachine`] of a mailbox database: every mutation is a [`MailOp`] committed through
//! the engine and applied by [`MailStore::apply`], the same at commit time, in recovery and on passive copies.
//! Whatever varies between runs (GUIDs, times, UIDVALIDITY) is chosen by the constructors on [`MailOp`] before
//! the operation is logged. Counters that follow from the state itself (folder and item ids, UIDs, MODSEQs)
//! are allocated inside `apply`: they are a deterministic function of the log, so every copy allocates the
//! same values, and concurrent committers never race for them.
//!
//! Reading goes through [`crate::Engine::read`] with the methods of [`MailStore`].

mod audit;
mod bodies;
mod check;
pub mod conversations;
mod databases;
use databases::{MailDatabases, TABLES};
pub mod envelope;
mod error;
mod housekeeping;
mod keys;
mod ops;
mod restore;
pub mod search;
mod summary;
mod types;

use std::collections::{BTreeMap, BTreeSet};

use heed::types::Bytes;
use heed::{DatabaseOpener, RoTxn, RwTxn, WithoutTls};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::engine::{ApplyContext, ApplyError, Attachments, CommitFuture, Engine, SegmentUsage, StateMachine};
use crate::error::{CodecError, Result};
use crate::time::Timestamp;
use crate::types::Guid;

pub use audit::{Actor, ActorRole, AuditAction, AuditEntry};
pub use conversations::{ConversationId, MAX_CONVERSATION_REFERENCES, MAX_CONVERSATIONS_PER_ID};
pub use error::{MailError, QuotaKind};
pub use housekeeping::{Housekeeper, HousekeepingOptions, HousekeepingReport, housekeep_due};
pub use ops::{
    Change, ChangeKind, Entity, FlagAction, MAX_BATCH_OPS, MAX_MESSAGE_SIZE, MAX_QUERY_DEPTH, MAX_QUERY_TERMS,
    MAX_QUERY_TEXT, MAX_QUERY_UID_RANGES, MailOp, MailOutput, Submission,
};
pub use restore::{MailboxRecovery, recover_mailbox};
pub use summary::{AddressRef, Addresses, ItemSummary, Strings};

/// The answer to [`MailStore::changes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changes {
    /// What changed.
    Feed(ChangeFeed),
    /// The history since the given state was trimmed (JMAP `cannotCalculateChanges`): resynchronize fully.
    CannotCalculate {
        /// The oldest state changes can still be calculated from is `history_floor - 1`.
        history_floor: ModSeq,
    },
}

/// The changes of a mailbox between two states.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeFeed {
    /// Entities that came into being.
    pub created: Vec<Entity>,
    /// Entities that changed.
    pub updated: Vec<Entity>,
    /// Entities that are gone.
    pub destroyed: Vec<Entity>,
    /// The state to ask from next time (the mailbox's highest MODSEQ).
    pub new_state: ModSeq,
}
pub use types::{
    ContentHash, DEFAULT_RETENTION, Deleted, Fai, Flags, FolderId, FolderInfo, FolderRole, ItemClass, ItemId, ItemInfo,
    MailboxInfo, MailboxKind, ModSeq, Order, Quota, QuotaStatus, Uid,
};

/// A mailbox database.
pub type MailEngine = Engine<MailStore>;

/// One of the model's LMDB databases: bytes to checksummed bytes (`engine::table`), the keys laid out by `keys`.
pub(crate) use crate::engine::table::Table;

/// The mailbox model's state: its LMDB databases (see `keys` for the layout).
#[derive(Debug)]
pub struct MailStore {
    mailboxes: Table,
    addresses: Table,
    folders: Table,
    folder_names: Table,
    items: Table,
    uids: Table,
    changes: Table,
    received: Table,
    submissions: Table,
    blob_refs: Table,
    segments: Table,
    placed: Table,
    audit: Table,
    /// Values of the whole database, one key each (`keys::LAST_UIDVALIDITY`).
    meta: Table,
    /// Item → conversation, conversations, their members and the message ids they mention (`conversations`).
    conversation_of: Table,
    conversations: Table,
    conversation_members: Table,
    message_ids: Table,
    /// Where message bodies are read from: the database's log and segments (see `bodies`).
    attachments: Attachments,
    /// Mailbox and folder records the current write transaction wrote (see [`Records`]).
    records: Mutex<Records>,
}

/// The mailbox and folder records the current write transaction last wrote, decoded: most operations read
/// their mailbox and folder and write them back, so a transaction of many operations on one folder reads them
/// from here instead of searching and decoding them again (two B-tree descents and two decodes per delivery).
/// Written through: every write also goes to LMDB, so every other way of reading the tables (iteration, lookups
/// by role) sees the current state. A read takes the entry out (the caller owns it and writes it back if it
/// changes); a delete removes it. Only the writer thread uses it, and only within one transaction: it is
/// emptied when the transaction finishes or is abandoned.
#[derive(Debug, Default)]
pub(crate) struct Records {
    mailboxes: std::collections::HashMap<Guid, MailboxInfo>,
    folders: std::collections::HashMap<(Guid, FolderId), FolderInfo>,
}

impl Records {
    fn clear(&mut self) {
        self.mailboxes.clear();
        self.folders.clear();
    }
}

impl StateMachine for MailStore {
    const NAME: &'static str = "mailbox";
    /// Version 2: message bodies live in the log (`bodies`), not in the state store. Version 3: `Expunge` and
    /// `PurgeMailbox` carry their time (holds keep expunged items). Version 4: atomic batches (`MailOp::Batch`) and
    /// housekeeping (`MailOp::Housekeep`, `MailboxInfo::housekept`), which a version-3 reader could not decode.
    /// Version 5: the audit trail (`MailOp::Audited`, `MailOp::RecordAccess`, the `mail.audit` table) and
    /// time-bound holds (`MailOp::SetHoldDuration`, `MailboxInfo::hold_duration`), and the `mail.meta` table (the
    /// highest UIDVALIDITY given out). Version 6: conversations (`conversations`: the tables
    /// `mail.conversation_of`, `mail.conversations`, `mail.conversation_members` and `mail.message_ids`, which a
    /// version-5 database lacks and could not fill without replaying its whole history).
    const FORMAT: u32 = 6;
    type Op = MailOp;
    type Output = MailOutput;
    type Rejection = MailError;
    type Databases<'e> = MailDatabases<'e>;

    fn create_databases<'e>(
        opener: &DatabaseOpener<'e, WithoutTls>,
        txn: &mut RwTxn<'e>,
        attachments: &Attachments,
    ) -> Result<MailDatabases<'e>> {
        let mut dbs = Vec::with_capacity(TABLES.len());
        for name in TABLES {
            dbs.push(opener.create_database::<Bytes, Bytes>(txn, Some(name))?);
        }
        MailDatabases::from_vec(dbs, attachments)
    }

    fn open_databases<'e>(
        opener: &DatabaseOpener<'e, WithoutTls>,
        txn: &RoTxn<'e>,
        attachments: &Attachments,
    ) -> Result<Option<MailDatabases<'e>>> {
        let mut dbs = Vec::with_capacity(TABLES.len());
        for name in TABLES {
            match opener.open_database::<Bytes, Bytes>(txn, Some(name))? {
                Some(db) => dbs.push(db),
                None => return Ok(None),
            }
        }
        MailDatabases::from_vec(dbs, attachments).map(Some)
    }

    fn verify(&self, txn: &RoTxn<'_>) -> Result<Vec<String>> {
        self.verify_counters(txn)
    }

    fn scope(op: &MailOp) -> Option<Guid> {
        op.mailbox()
    }

    fn validate(&self, op: &MailOp) -> Result<(), MailError> {
        op.validate()?;
        // Only here, before logging: `apply` (and so replay) trusts the logged hash instead of hashing again.
        op.check_content()
    }

    fn apply(
        &self,
        txn: &mut RwTxn<'_>,
        ctx: ApplyContext<'_>,
        op: MailOp,
    ) -> Result<MailOutput, ApplyError<MailError>> {
        ops::apply(self, txn, ctx, op)
    }

    fn attachment(op: &MailOp) -> &[u8] {
        op.attachment()
    }

    fn referenced_generations(&self, txn: &RoTxn<'_>) -> Result<BTreeSet<u64>> {
        Ok(bodies::referenced_generations(&self.body_tables(), txn)?)
    }

    fn compaction(&self, txn: &RoTxn<'_>, below: u64) -> Result<Option<MailOp>> {
        self.compaction(txn, below)
    }

    fn segment_usage(&self, txn: &RoTxn<'_>) -> Result<BTreeMap<u64, SegmentUsage>> {
        Ok(bodies::segment_usage(&self.body_tables(), txn)?)
    }

    fn finish(&self, _txn: &mut RwTxn<'_>) -> Result<(), ApplyError<MailError>> {
        self.records.lock().clear();
        Ok(())
    }

    fn abandon(&self) {
        self.records.lock().clear();
    }
}

/// Decodes a stored value; a value that does not decode is damage in the state store.
fn load<T: DeserializeOwned>(bytes: &[u8]) -> heed::Result<T> {
    codec::decode(bytes).map_err(|e| heed::Error::Decoding(Box::new(e)))
}

fn store<T: Serialize>(value: &T) -> heed::Result<Vec<u8>> {
    codec::encode(value).map_err(|e| heed::Error::Encoding(Box::new(e)))
}

/// One entry of a cursor walk over a table: its key and value, read in place.
type Entry<'t> = heed::Result<(&'t [u8], &'t [u8])>;

/// A cursor walk over a table, forward or backward.
type Walk<'t> = Box<dyn Iterator<Item = Entry<'t>> + 't>;

/// The listing records of a walk over the UID index (`entries`, in the walk's order) while it stays in the
/// folder `prefix`, at most `limit` of them; folder-associated items are left out unless `fai` includes them.
fn summaries<'t>(
    entries: impl Iterator<Item = Entry<'t>>,
    prefix: &[u8],
    limit: usize,
    fai: Fai,
) -> Result<Vec<ItemSummary<'t>>> {
    let mut out = Vec::with_capacity(limit.min(1024));
    if limit == 0 {
        return Ok(out);
    }
    for entry in entries {
        let (key, raw) = entry?;
        if !key.starts_with(prefix) {
            break;
        }
        let summary = ItemSummary::parse(key, raw)?;
        if fai.included() || !summary.fai() {
            out.push(summary);
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

impl MailStore {
    /// The mailbox `guid`.
    pub fn mailbox(&self, txn: &RoTxn<'_>, guid: &Guid) -> Result<Option<MailboxInfo>> {
        Ok(self.mailboxes.get(txn, &keys::mailbox(guid))?.map(load).transpose()?)
    }

    /// The mailbox whose address is `address` (compared case-insensitively).
    /// An address no mailbox can have (empty, or longer than any key) is simply not found.
    pub fn mailbox_by_address(&self, txn: &RoTxn<'_>, address: &str) -> Result<Option<MailboxInfo>> {
        let key = address.to_lowercase();
        // LMDB refuses empty keys and keys over 511 bytes; no mailbox address is either.
        if key.is_empty() || key.len() > 511 {
            return Ok(None);
        }
        let Some(raw) = self.addresses.get(txn, key.as_bytes())? else { return Ok(None) };
        let guid: [u8; 16] = raw
            .try_into()
            .map_err(|_| CodecError::Malformed { record: "address index entry", rule: "not a 16-byte GUID".into() })?;
        self.mailbox(txn, &Guid(guid))
    }

    /// Every mailbox of the database, by GUID.
    pub fn mailboxes(&self, txn: &RoTxn<'_>) -> Result<Vec<MailboxInfo>> {
        let mut out = Vec::new();
        for entry in self.mailboxes.iter(txn)? {
            out.push(load(entry?.1)?);
        }
        Ok(out)
    }

    /// The folder `id` of mailbox `guid`.
    pub fn folder(&self, txn: &RoTxn<'_>, guid: &Guid, id: FolderId) -> Result<Option<FolderInfo>> {
        Ok(self.folders.get(txn, &keys::folder(guid, id))?.map(load).transpose()?)
    }

    /// Every folder of mailbox `guid` (the root and the hidden Recoverable Items subtree included), by id.
    pub fn folders(&self, txn: &RoTxn<'_>, guid: &Guid) -> Result<Vec<FolderInfo>> {
        let mut out = Vec::new();
        for entry in self.folders.prefix_iter(txn, &keys::mailbox(guid))? {
            out.push(load(entry?.1)?);
        }
        Ok(out)
    }

    /// The folder with a well-known `role` in mailbox `guid`.
    pub fn folder_by_role(&self, txn: &RoTxn<'_>, guid: &Guid, role: FolderRole) -> Result<Option<FolderInfo>> {
        Ok(self.folders(txn, guid)?.into_iter().find(|f| f.role == Some(role)))
    }

    /// The child of `parent` named `name` (case-insensitively).
    pub fn child_folder(
        &self,
        txn: &RoTxn<'_>,
        guid: &Guid,
        parent: FolderId,
        name: &str,
    ) -> Result<Option<FolderInfo>> {
        let Some(raw) = self.folder_names.get(txn, &keys::folder_name(guid, parent, name))? else { return Ok(None) };
        self.folder(txn, guid, keys::u64_at(raw, 0))
    }

    /// The item `id` of mailbox `guid`.
    pub fn item(&self, txn: &RoTxn<'_>, guid: &Guid, id: ItemId) -> Result<Option<ItemInfo>> {
        Ok(self.items.get(txn, &keys::item(guid, id))?.map(load).transpose()?)
    }

    /// The item with `uid` in `folder`.
    pub fn item_by_uid(&self, txn: &RoTxn<'_>, guid: &Guid, folder: FolderId, uid: Uid) -> Result<Option<ItemInfo>> {
        Ok(self.summary_by_uid(txn, guid, folder, uid)?.map(|s| s.to_item_info()))
    }

    /// The listing record of the item with `uid` in `folder`, read in place (see [`ItemSummary`]).
    pub fn summary_by_uid<'t>(
        &self,
        txn: &'t RoTxn<'_>,
        guid: &Guid,
        folder: FolderId,
        uid: Uid,
    ) -> Result<Option<ItemSummary<'t>>> {
        let key = keys::uid(guid, folder, uid);
        self.uids.get(txn, &key)?.map(|raw| ItemSummary::parse(&key, raw)).transpose()
    }

    /// Listing records of `folder` with UIDs from `from` on, in UID order, at most `limit` of them, read in place
    /// from the UID index (one cursor walk, nothing allocated per item but the list). Folder-associated items are
    /// left out unless `fai` includes them.
    pub fn summaries_by_uid<'t>(
        &self,
        txn: &'t RoTxn<'_>,
        guid: &Guid,
        folder: FolderId,
        from: Uid,
        limit: usize,
        fai: Fai,
    ) -> Result<Vec<ItemSummary<'t>>> {
        let start = keys::uid(guid, folder, from);
        let range = (std::ops::Bound::Included(&start[..]), std::ops::Bound::Unbounded);
        summaries(self.uids.range(txn, &range)?, &keys::folder(guid, folder), limit, fai)
    }

    /// The listing records of the `limit` items of `folder` with the highest UIDs, newest first, read in place
    /// (IMAP `FETCH` of the last N with `ENVELOPE`, a webmail's first page): one backward cursor walk over the UID
    /// index, no second lookup, nothing allocated per item but the list. Folder-associated items are left out.
    /// Like [`MailStore::newest_by_uid`], it finds N items even when the newest UIDs were expunged.
    pub fn newest_summaries<'t>(
        &self,
        txn: &'t RoTxn<'_>,
        guid: &Guid,
        folder: FolderId,
        limit: usize,
    ) -> Result<Vec<ItemSummary<'t>>> {
        let prefix = keys::folder(guid, folder);
        summaries(self.uids.rev_prefix_iter(txn, &prefix)?, &prefix, limit, Fai::Exclude)
    }

    /// Items of `folder` with UIDs from `from` on, in UID order, at most `limit` of them. Folder-associated
    /// items are left out unless `fai` includes them.
    pub fn items_by_uid(
        &self,
        txn: &RoTxn<'_>,
        guid: &Guid,
        folder: FolderId,
        from: Uid,
        limit: usize,
        fai: Fai,
    ) -> Result<Vec<ItemInfo>> {
        // The UID index holds a full copy of the item (see `ItemSummary`): one lookup per item.
        let summaries = self.summaries_by_uid(txn, guid, folder, from, limit, fai)?;
        Ok(summaries.iter().map(ItemSummary::to_item_info).collect())
    }

    /// The folder at `path` (names separated by `/`, compared case-insensitively, from the top of the tree:
    /// `"Inbox/Projects"`).
    pub fn folder_by_path(&self, txn: &RoTxn<'_>, guid: &Guid, path: &str) -> Result<Option<FolderInfo>> {
        let Some(mut folder) = self.folder_by_role(txn, guid, FolderRole::Root)? else { return Ok(None) };
        for name in path.split('/').filter(|n| !n.is_empty()) {
            match self.child_folder(txn, guid, folder.id, name)? {
                Some(child) => folder = child,
                None => return Ok(None),
            }
        }
        Ok(Some(folder))
    }

    /// Items of `folder` ordered by received time in `order`, skipping `offset` and
    /// returning at most `limit`; folder-associated items are left out.
    pub fn items_by_received(
        &self,
        txn: &RoTxn<'_>,
        guid: &Guid,
        folder: FolderId,
        order: Order,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<ItemInfo>> {
        let prefix = keys::folder(guid, folder);
        let mut out = Vec::new();
        let mut skipped = 0;
        // Walk the index lazily, in the direction asked: a page costs its own size, not the folder's.
        let entries: Walk<'_> = if order == Order::NewestFirst {
            Box::new(self.received.rev_prefix_iter(txn, &prefix)?)
        } else {
            Box::new(self.received.prefix_iter(txn, &prefix)?)
        };
        for entry in entries {
            let (key, _) = entry?;
            if out.len() >= limit {
                break;
            }
            if let Some(item) = self.item(txn, guid, keys::u64_at(key, 32))?
                && !item.fai
            {
                if skipped < offset {
                    skipped += 1;
                } else {
                    out.push(item);
                }
            }
        }
        Ok(out)
    }

    /// Appointments of mailbox `guid` (in any folder outside Recoverable Items) that overlap `start..end`: what a
    /// free/busy query needs.
    pub fn appointments_overlapping(
        &self,
        txn: &RoTxn<'_>,
        guid: &Guid,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<ItemInfo>> {
        let mut out = Vec::new();
        for folder in self.folders(txn, guid)?.into_iter().filter(|f| !f.hidden) {
            for item in self.items_by_uid(txn, guid, folder.id, 1, usize::MAX, Fai::Exclude)? {
                if let ItemClass::Appointment { start: s, end: e } = item.class
                    && s < end
                    && e > start
                {
                    out.push(item);
                }
            }
        }
        out.sort_by_key(|i| match i.class {
            ItemClass::Appointment { start, .. } => start,
            _ => Timestamp::EPOCH,
        });
        Ok(out)
    }

    /// Distinct message contents stored in the database and their total bytes (single-instance storage keeps
    /// one copy of identical bytes, however many items hold them).
    pub fn stored_contents(&self, txn: &RoTxn<'_>) -> Result<(u64, u64)> {
        let (mut count, mut bytes) = (0, 0);
        for entry in self.blob_refs.iter(txn)? {
            count += 1;
            bytes += u64::from(bodies::BlobRef::decode(entry?.1)?.len);
        }
        Ok((count, bytes))
    }

    /// The submission queue of the database, oldest first: messages submitted from Outboxes that a transport
    /// has not yet acknowledged.
    pub fn submissions(&self, txn: &RoTxn<'_>) -> Result<Vec<Submission>> {
        let mut out: Vec<Submission> = Vec::new();
        for entry in self.submissions.iter(txn)? {
            out.push(load(entry?.1)?);
        }
        out.sort_by_key(|s| (s.submitted, s.mailbox, s.item));
        Ok(out)
    }

    /// The `limit` items of `folder` with the highest UIDs, newest first (IMAP `FETCH` of the last N, a webmail's
    /// first page); folder-associated items are left out. Unlike counting back from UIDNEXT, this finds N items
    /// even when the newest UIDs were expunged.
    ///
    /// The records are copied out of the UID index (one lookup per item); [`MailStore::newest_summaries`] reads
    /// them in place without allocating.
    pub fn newest_by_uid(&self, txn: &RoTxn<'_>, guid: &Guid, folder: FolderId, limit: usize) -> Result<Vec<ItemInfo>> {
        Ok(self.newest_summaries(txn, guid, folder, limit)?.iter().map(ItemSummary::to_item_info).collect())
    }

    /// The raw RFC 5322 bytes of an item.
    ///
    /// The bytes are read from the database's log or segments, where the delivery wrote them, and checked
    /// against the item's content hash: damaged bytes are [`Error::Corrupted`], never returned.
    pub fn raw(&self, txn: &RoTxn<'_>, guid: &Guid, id: ItemId) -> Result<Option<Vec<u8>>> {
        let Some(item) = self.item(txn, guid, id)? else { return Ok(None) };
        self.body(txn, &item.content)
    }

    /// The bytes of the content `hash`, checked against it; `None` when no item holds it.
    fn body(&self, txn: &RoTxn<'_>, hash: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        match bodies::locate(&self.body_tables(), txn, hash)? {
            Some(r) => bodies::read(&self.attachments, &r, hash).map(Some),
            None => Ok(None),
        }
    }

    /// The compaction of the segment below generation `below` most worth compacting (see
    /// [`MailOp::RelocateBodies`]), with its referenced bodies read (and checked against their hashes); `None`
    /// when every segment is at least half referenced. The engine runs it after checkpoints.
    pub fn compaction(&self, txn: &RoTxn<'_>, below: u64) -> Result<Option<MailOp>> {
        let Some((generation, found)) = bodies::compaction_candidate(&self.body_tables(), txn, below)? else {
            return Ok(None);
        };
        let mut contents = Vec::with_capacity(found.len());
        let mut raw = Vec::new();
        for (hash, r) in found {
            raw.extend_from_slice(&bodies::read(&self.attachments, &r, &hash)?);
            contents.push((ContentHash(hash), r.len));
        }
        Ok(Some(MailOp::RelocateBodies { generation, contents, raw: raw.into() }))
    }

    /// The tables `bodies` works on.
    fn body_tables(&self) -> bodies::Tables {
        bodies::Tables { blob_refs: self.blob_refs, segments: self.segments, placed: self.placed }
    }

    /// Bytes `range` of an item's raw message (clamped to its size), for IMAP partial fetches.
    pub fn raw_range(
        &self,
        txn: &RoTxn<'_>,
        guid: &Guid,
        id: ItemId,
        range: std::ops::Range<u64>,
    ) -> Result<Option<Vec<u8>>> {
        let Some(item) = self.item(txn, guid, id)? else { return Ok(None) };
        Ok(self.body(txn, &item.content)?.map(|mut raw| {
            let end = (range.end.min(raw.len() as u64)) as usize;
            let start = (range.start as usize).min(end);
            raw.truncate(end);
            raw.drain(..start);
            raw
        }))
    }

    /// The quota state of mailbox `guid`.
    pub fn quota_status(&self, txn: &RoTxn<'_>, guid: &Guid) -> Result<Option<QuotaStatus>> {
        Ok(self.mailbox(txn, guid)?.map(|m| m.quota_status()))
    }

    /// The mailbox's audit trail from `from` (inclusive) to `to` (exclusive), oldest first, at most `limit`
    /// entries (see `AuditEntry`: who did what to which items, written by the operations themselves).
    pub fn audit(
        &self,
        txn: &RoTxn<'_>,
        guid: &Guid,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        audit::read(self, txn, guid, from, to, limit)
    }

    /// What changed in mailbox `guid` since the state `since` (a MODSEQ, e.g. a previous
    /// [`ChangeFeed::new_state`]), folded per entity the way JMAP `/changes` and IMAP QRESYNC want it: an entity
    /// created and destroyed in between is not reported, created-then-updated is created, updated-then-destroyed
    /// is destroyed. Answers [`Changes::CannotCalculate`] when the history since `since` was trimmed.
    pub fn changes(&self, txn: &RoTxn<'_>, guid: &Guid, since: ModSeq) -> Result<Changes> {
        let Some(m) = self.mailbox(txn, guid)? else { return Err(MailError::NoSuchMailbox { mailbox: *guid }.into()) };
        if since.saturating_add(1) < m.history_floor {
            return Ok(Changes::CannotCalculate { history_floor: m.history_floor });
        }
        let mut kinds: std::collections::BTreeMap<Entity, (ChangeKind, ChangeKind)> = Default::default();
        for c in self.changes_since(txn, guid, since)? {
            kinds.entry(c.entity).and_modify(|(_, last)| *last = c.kind).or_insert((c.kind, c.kind));
        }
        let mut feed = ChangeFeed { new_state: m.highest_modseq, ..Default::default() };
        for (entity, (first, last)) in kinds {
            let kind = match (first, last) {
                (ChangeKind::Created, ChangeKind::Destroyed) => continue,
                (ChangeKind::Created, _) => ChangeKind::Created,
                (_, ChangeKind::Destroyed) => ChangeKind::Destroyed,
                _ => ChangeKind::Updated,
            };
            let list = match kind {
                ChangeKind::Created => &mut feed.created,
                ChangeKind::Updated => &mut feed.updated,
                ChangeKind::Destroyed => &mut feed.destroyed,
            };
            list.push(entity);
        }
        Ok(Changes::Feed(feed))
    }

    /// UIDs of `folder` expunged (or moved out) since `since` (IMAP QRESYNC `VANISHED (EARLIER)`), or `None`
    /// when the history since then was trimmed.
    pub fn vanished_since(
        &self,
        txn: &RoTxn<'_>,
        guid: &Guid,
        folder: FolderId,
        since: ModSeq,
    ) -> Result<Option<Vec<Uid>>> {
        match self.changes(txn, guid, since)? {
            Changes::CannotCalculate { .. } => Ok(None),
            Changes::Feed(feed) => {
                let mut uids: Vec<Uid> = feed
                    .destroyed
                    .iter()
                    .filter_map(|e| match e {
                        Entity::Item { folder: f, uid, .. } if *f == folder => Some(*uid),
                        _ => None,
                    })
                    .collect();
                uids.sort_unstable();
                Ok(Some(uids))
            }
        }
    }

    /// Every change in mailbox `guid` with a MODSEQ above `since`, in MODSEQ order.
    pub fn changes_since(&self, txn: &RoTxn<'_>, guid: &Guid, since: ModSeq) -> Result<Vec<Change>> {
        let mut out = Vec::new();
        let start = keys::change(guid, since.saturating_add(1), 0);
        let prefix = keys::mailbox(guid);
        for entry in self.changes.range(txn, &(std::ops::Bound::Included(&start[..]), std::ops::Bound::Unbounded))? {
            let (key, raw) = entry?;
            if !key.starts_with(&prefix) {
                break;
            }
            out.push(load(raw)?);
        }
        Ok(out)
    }
}

impl Engine<MailStore> {
    /// The store driver's delivery: stores `raw` in `folder` (a path such as `"Inbox/Lists"`, the Inbox when
    /// `None`) of mailbox `mailbox`, received now; durable when it returns (the commit's promise). The folder is
    /// looked up before the operation is logged; if it disappears in between, the delivery is refused with
    /// [`MailError::NoSuchFolder`]; a folder not found before is [`MailError::NoSuchFolderPath`] (or
    /// [`MailError::NoWellKnownFolder`] for the Inbox), and a mailbox this database does not hold (delivered
    /// through the wrong database) is [`MailError::NoSuchMailbox`]. [`Store::deliver`](crate::Store::deliver)
    /// finds the database itself.
    pub fn deliver(&self, mailbox: Guid, folder: Option<&str>, raw: impl Into<bytes::Bytes>) -> Result<MailOutput> {
        Ok(self.commit(self.delivery(mailbox, folder, raw)?)?.output)
    }

    /// [`deliver`](Self::deliver) for async code ([`Engine::commit_async`]): the folder is looked up now (a short
    /// read), and the future resolves once the message is durable and applied, with the same answers and
    /// refusals as `deliver`.
    pub fn deliver_async(
        &self,
        mailbox: Guid,
        folder: Option<&str>,
        raw: impl Into<bytes::Bytes>,
    ) -> CommitFuture<MailOutput> {
        match self.delivery(mailbox, folder, raw) {
            Ok(op) => self.commit_async(op),
            Err(e) => CommitFuture(Err(Some(e))),
        }
    }

    /// The append a delivery commits, its folder looked up (see [`deliver`](Self::deliver)).
    fn delivery(&self, mailbox: Guid, folder: Option<&str>, raw: impl Into<bytes::Bytes>) -> Result<MailOp> {
        let (exists, target) = self.read(|s, txn| {
            let target = match folder {
                Some(path) => s.folder_by_path(txn, &mailbox, path)?,
                None => s.folder_by_role(txn, &mailbox, FolderRole::Inbox)?,
            };
            Ok((target.is_some() || s.mailbox(txn, &mailbox)?.is_some(), target))
        })?;
        // A mailbox of another database (or none) is told apart from a folder the mailbox lacks.
        let target = target.ok_or_else(|| match folder {
            _ if !exists => MailError::NoSuchMailbox { mailbox },
            Some(path) => MailError::NoSuchFolderPath { mailbox, path: path.to_owned() },
            None => MailError::NoWellKnownFolder { mailbox, role: FolderRole::Inbox },
        })?;
        Ok(MailOp::append(mailbox, target.id, raw, Flags::empty(), Vec::new()))
    }
}

/// [`Engine::deliver`] as a free function (the form of earlier releases).
#[deprecated(note = "use the method: `db.deliver(mailbox, folder, raw)`")]
pub fn deliver(
    db: &MailEngine,
    mailbox: Guid,
    folder: Option<&str>,
    raw: impl Into<bytes::Bytes>,
) -> Result<MailOutput> {
    db.deliver(mailbox, folder, raw)
}
