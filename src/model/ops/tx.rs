//! The write side of one operation ([`Tx`]): reading and writing mailbox, folder and item records, the UID and
//! received-time indexes, content references and the change log, keeping the counters right.

use heed::RwTxn;

use crate::engine::ApplyError;
use crate::model::bodies::NewBody;
use crate::model::error::{MailError, QuotaKind};
use crate::model::types::{
    ContentHash, Flags, FolderId, FolderInfo, FolderRole, ItemId, ItemInfo, MailboxInfo, ModSeq, Uid,
};
use crate::model::{MailStore, Table, conversations, keys, load, store, summary};
use crate::types::Guid;

use super::{Change, ChangeKind, Entity, reject, storage};

/// Refuses a message larger than the mailbox's quota allows.
pub(super) fn check_message_size(m: &MailboxInfo, size: usize) -> Result<(), ApplyError<MailError>> {
    let limit = m.quota.unwrap_or_default().max_message_size;
    if size as u64 > limit {
        return Err(reject(MailError::MessageTooLarge { size: size as u64, limit }));
    }
    Ok(())
}

/// Refuses an operation that leaves Recoverable Items above its hard quota.
pub(super) fn check_recoverable_quota(m: &MailboxInfo) -> Result<(), ApplyError<MailError>> {
    check_quota(m, QuotaKind::RecoverableItems, m.recoverable_size, m.quota.unwrap_or_default().recoverable_hard)
}

/// Refuses an operation that takes mailbox `m` to `size` bytes, above `limit`, its quota `quota`.
pub(super) fn check_quota(
    m: &MailboxInfo,
    quota: QuotaKind,
    size: u64,
    limit: u64,
) -> Result<(), ApplyError<MailError>> {
    if size > limit {
        return Err(reject(MailError::QuotaExceeded { address: m.address.clone(), quota, size, limit }));
    }
    Ok(())
}

/// The write side of one operation: the model's databases and the transaction.
pub(super) struct Tx<'a, 't> {
    pub(super) s: &'a MailStore,
    pub(super) txn: &'a mut RwTxn<'t>,
    /// The mailbox the operation is about.
    pub(super) guid: Guid,
    /// Change log entries recorded so far (their sequence number within the MODSEQ).
    changes: u32,
}

impl<'a, 't> Tx<'a, 't> {
    /// The write side of an operation on mailbox `guid`.
    pub(super) fn new(s: &'a MailStore, txn: &'a mut RwTxn<'t>, guid: Guid) -> Self {
        Tx { s, txn, guid, changes: 0 }
    }

    /// The mailbox, which must not be soft-deleted.
    pub(super) fn mailbox(&self) -> Result<MailboxInfo, ApplyError<MailError>> {
        let m = self.any_mailbox()?;
        if m.deleted.is_some() {
            return Err(reject(MailError::MailboxDeleted { mailbox: self.guid }));
        }
        Ok(m)
    }

    /// The mailbox, soft-deleted or not.
    pub(super) fn any_mailbox(&self) -> Result<MailboxInfo, ApplyError<MailError>> {
        if let Some(m) = self.s.records.lock().mailboxes.remove(&self.guid) {
            return Ok(m);
        }
        match self.s.mailboxes.get(self.txn, &keys::mailbox(&self.guid))? {
            Some(raw) => Ok(load(raw)?),
            None => Err(reject(MailError::NoSuchMailbox { mailbox: self.guid })),
        }
    }

    /// Deletes every entry of `table` whose key starts with the mailbox GUID; returns how many.
    pub(super) fn clear(&mut self, table: Table) -> heed::Result<u64> {
        let prefix = keys::mailbox(&self.guid);
        let keys: Vec<Vec<u8>> =
            table.prefix_iter(self.txn, &prefix)?.map(|e| e.map(|(k, _)| k.to_vec())).collect::<heed::Result<_>>()?;
        for k in &keys {
            table.delete(self.txn, k)?;
        }
        Ok(keys.len() as u64)
    }

    pub(super) fn put_mailbox(&mut self, m: &MailboxInfo) -> heed::Result<()> {
        self.s.mailboxes.put(self.txn, &keys::mailbox(&self.guid), &store(m)?)?;
        self.s.records.lock().mailboxes.insert(self.guid, m.clone());
        Ok(())
    }

    pub(super) fn folder(&self, id: FolderId) -> Result<FolderInfo, ApplyError<MailError>> {
        if let Some(f) = self.s.records.lock().folders.remove(&(self.guid, id)) {
            return Ok(f);
        }
        match self.s.folders.get(self.txn, &keys::folder(&self.guid, id))? {
            Some(raw) => Ok(load(raw)?),
            None => Err(reject(MailError::NoSuchFolder { mailbox: self.guid, folder: id })),
        }
    }

    /// A folder items can live in: not the root.
    pub(super) fn item_folder(&self, id: FolderId) -> Result<FolderInfo, ApplyError<MailError>> {
        let f = self.folder(id)?;
        if f.role == Some(FolderRole::Root) {
            return Err(reject(MailError::RootFolder { mailbox: self.guid }));
        }
        Ok(f)
    }

    pub(super) fn put_folder(&mut self, f: &FolderInfo) -> heed::Result<()> {
        self.s.folders.put(self.txn, &keys::folder(&self.guid, f.id), &store(f)?)?;
        self.s.records.lock().folders.insert((self.guid, f.id), f.clone());
        Ok(())
    }

    pub(super) fn item(&self, id: ItemId) -> heed::Result<Option<ItemInfo>> {
        self.s.items.get(self.txn, &keys::item(&self.guid, id))?.map(load).transpose()
    }

    pub(super) fn item_at(&self, folder: FolderId, uid: Uid) -> heed::Result<Option<ItemInfo>> {
        match self.s.uids.get(self.txn, &keys::uid(&self.guid, folder, uid))? {
            Some(raw) => self.item(keys::u64_at(raw, 0)),
            None => Ok(None),
        }
    }

    /// Writes the item and its UID index entry (the listing record, a copy of the item: see `summary`), so the
    /// two never differ after a transaction.
    pub(super) fn put_item(&mut self, item: &ItemInfo) -> Result<(), ApplyError<MailError>> {
        // Encoding fails only past 2 GiB of strings or 2^32 list entries (say, keywords added by a great many
        // operations): a function of the item alone, so the refusal is deterministic, like any other.
        let record =
            summary::encode(item).map_err(|_| reject(MailError::ItemTooLarge { mailbox: self.guid, item: item.id }))?;
        self.s.items.put(self.txn, &keys::item(&self.guid, item.id), &store(item)?)?;
        self.s.uids.put(self.txn, &keys::uid(&self.guid, item.folder, item.uid), &record)?;
        Ok(())
    }

    pub(super) fn record(&mut self, modseq: ModSeq, kind: ChangeKind, entity: Entity) -> heed::Result<()> {
        let key = keys::change(&self.guid, modseq, self.changes);
        self.changes += 1;
        self.s.changes.put(self.txn, &key, &store(&Change { modseq, kind, entity })?)
    }

    /// Inserts a new folder (the caller checked the parent) and indexes its name.
    pub(super) fn insert_folder(
        &mut self,
        m: &mut MailboxInfo,
        folder: FolderInfo,
    ) -> Result<FolderId, ApplyError<MailError>> {
        if let Some(parent) = folder.parent {
            let name_key = keys::folder_name(&self.guid, parent, &folder.name);
            if self.s.folder_names.get(self.txn, &name_key)?.is_some() {
                return Err(reject(MailError::FolderExists { mailbox: self.guid, parent, name: folder.name }));
            }
            self.s.folder_names.put(self.txn, &name_key, &folder.id.to_be_bytes())?;
        }
        self.put_folder(&folder)?;
        m.next_folder_id = m.next_folder_id.max(folder.id + 1);
        Ok(folder.id)
    }

    /// The UIDVALIDITY of a folder (or of the folders of a new mailbox) created now: `proposed` (the creation
    /// time in seconds, chosen before logging) unless the database has already given out that or a later one,
    /// then the next after the highest. So every folder of the database, in every mailbox, ever created gets a
    /// UIDVALIDITY no folder had before, however fast folders are deleted and re-created, across remounts and
    /// failovers (the highest is state, replayed like the rest).
    pub(super) fn next_uidvalidity(&mut self, proposed: u32) -> Result<u32, ApplyError<MailError>> {
        let last = match self.s.meta.get(self.txn, keys::LAST_UIDVALIDITY)? {
            Some(v) => keys::u32_at(v, 0),
            None => 0,
        };
        let Some(next) = last.checked_add(1) else {
            return Err(reject(MailError::UidValidityExhausted));
        };
        let v = proposed.max(next);
        self.s.meta.put(self.txn, keys::LAST_UIDVALIDITY, &v.to_be_bytes())?;
        Ok(v)
    }

    /// Takes the next MODSEQ of the mailbox.
    pub(super) fn next_modseq(m: &mut MailboxInfo) -> ModSeq {
        m.highest_modseq += 1;
        m.highest_modseq
    }

    /// Stores a new item in `folder` with a fresh id and UID; updates counters. Returns it. `raw` is the
    /// content of a new message; `None` reuses the content `template` already references (copy, move).
    pub(super) fn insert_item(
        &mut self,
        m: &mut MailboxInfo,
        folder: &mut FolderInfo,
        template: &ItemInfo,
        raw: Option<(NewBody, ContentHash)>,
        modseq: ModSeq,
    ) -> Result<ItemInfo, ApplyError<MailError>> {
        if folder.uidnext == Uid::MAX {
            return Err(reject(MailError::UidsExhausted { mailbox: self.guid, folder: folder.id }));
        }
        let content = match raw {
            Some((_, hash)) => hash.0,
            None => template.content,
        };
        // Same content (copy, move, deletion, recovery): the source item's conversation; new content: the one
        // its envelope links it to (`conversations`).
        let source = if raw.is_none() { Some(template.id) } else { None };
        self.add_ref(&content, raw.map(|(raw, _)| raw))?;
        let item = ItemInfo {
            id: m.next_item_id,
            folder: folder.id,
            uid: folder.uidnext,
            modseq,
            content,
            ..template.clone()
        };
        m.next_item_id += 1;
        folder.uidnext += 1;
        folder.highest_modseq = modseq;
        self.put_item(&item)?;
        conversations::join(self.s, self.txn, &self.guid, &item, source)?;
        self.s.received.put(
            self.txn,
            &keys::received(&self.guid, folder.id, item.received.as_micros(), item.id),
            &[],
        )?;
        count(m, folder, &item, 1);
        self.record(modseq, ChangeKind::Created, Entity::Item { id: item.id, folder: folder.id, uid: item.uid })?;
        Ok(item)
    }

    /// Removes an item from its folder and the mailbox; updates counters.
    pub(super) fn remove_item(
        &mut self,
        m: &mut MailboxInfo,
        folder: &mut FolderInfo,
        item: &ItemInfo,
        modseq: ModSeq,
    ) -> heed::Result<()> {
        conversations::leave(self.s, self.txn, &self.guid, item)?;
        self.s.items.delete(self.txn, &keys::item(&self.guid, item.id))?;
        self.s.uids.delete(self.txn, &keys::uid(&self.guid, folder.id, item.uid))?;
        self.drop_ref(&item.content)?;
        self.s.received.delete(self.txn, &keys::received(&self.guid, folder.id, item.received.as_micros(), item.id))?;
        // An item that leaves its folder (sent, deleted, moved, expunged) is no longer queued for submission.
        self.s.submissions.delete(self.txn, &keys::item(&self.guid, item.id))?;
        count(m, folder, item, -1);
        folder.highest_modseq = modseq;
        self.record(modseq, ChangeKind::Destroyed, Entity::Item { id: item.id, folder: folder.id, uid: item.uid })
    }

    /// Removes the items of `folder` among `uids` that `matches`, taking the operation's MODSEQ (in `modseq`)
    /// with the first removal. Returns their UIDs.
    pub(super) fn remove_matching(
        &mut self,
        m: &mut MailboxInfo,
        folder: &mut FolderInfo,
        uids: Vec<Uid>,
        modseq: &mut Option<ModSeq>,
        matches: impl Fn(&ItemInfo) -> bool,
    ) -> Result<Vec<Uid>, ApplyError<MailError>> {
        let mut removed = Vec::new();
        for uid in uids {
            let Some(item) = self.item_at(folder.id, uid)? else { continue };
            if !matches(&item) {
                continue;
            }
            let ms = *modseq.get_or_insert_with(|| Tx::next_modseq(m));
            self.remove_item(m, folder, &item, ms)?;
            removed.push(uid);
        }
        Ok(removed)
    }

    /// Moves the items of `from` among `uids` that `matches` to `to`, as `relabel` makes them (where and when they
    /// were deleted), taking the operation's MODSEQ (in `modseq`) with the first move. Returns their UIDs in
    /// `from`. The caller writes `to` back.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn move_matching(
        &mut self,
        m: &mut MailboxInfo,
        from: &mut FolderInfo,
        to: &mut FolderInfo,
        uids: Vec<Uid>,
        modseq: &mut Option<ModSeq>,
        matches: impl Fn(&ItemInfo) -> bool,
        relabel: impl Fn(&ItemInfo) -> ItemInfo,
    ) -> Result<Vec<Uid>, ApplyError<MailError>> {
        let mut moved = Vec::new();
        for uid in uids {
            let Some(item) = self.item_at(from.id, uid)? else { continue };
            if !matches(&item) {
                continue;
            }
            let ms = *modseq.get_or_insert_with(|| Tx::next_modseq(m));
            self.move_item(m, from, to, &item, relabel(&item), ms)?;
            moved.push(uid);
        }
        Ok(moved)
    }

    /// The folder with a well-known role.
    pub(super) fn role_folder(&self, role: FolderRole) -> Result<FolderInfo, ApplyError<MailError>> {
        match self.s.folder_by_role(self.txn, &self.guid, role).map_err(storage)? {
            Some(f) => Ok(f),
            None => Err(reject(MailError::NoWellKnownFolder { mailbox: self.guid, role })),
        }
    }

    /// Every UID of a folder, ascending.
    pub(super) fn uids_of(&self, folder: FolderId) -> heed::Result<Vec<Uid>> {
        let mut all = Vec::new();
        for entry in self.s.uids.prefix_iter(self.txn, &keys::folder(&self.guid, folder))? {
            all.push(keys::u32_at(entry?.0, 24));
        }
        Ok(all)
    }

    /// Moves `item` from `src` to `dst` as `moved` (a new UID there); returns the new UID.
    pub(super) fn move_item(
        &mut self,
        m: &mut MailboxInfo,
        src: &mut FolderInfo,
        dst: &mut FolderInfo,
        item: &ItemInfo,
        moved: ItemInfo,
        modseq: ModSeq,
    ) -> Result<Uid, ApplyError<MailError>> {
        // Insert first: the new reference keeps the stored content alive while the old one is dropped.
        let uid = self.insert_item(m, dst, &moved, None, modseq)?.uid;
        self.remove_item(m, src, item, modseq)?;
        Ok(uid)
    }

    /// One more reference to the content `hash`; `raw` is the body the operation stores, if it stores one
    /// (see `bodies`).
    fn add_ref(&mut self, hash: &[u8; 32], raw: Option<NewBody>) -> Result<(), ApplyError<MailError>> {
        Ok(self.s.body_tables().add_ref(self.txn, hash, raw)?)
    }

    /// One reference fewer to the content `hash`; the last one releases the stored bytes.
    pub(super) fn drop_ref(&mut self, hash: &[u8; 32]) -> heed::Result<()> {
        self.s.body_tables().drop_ref(self.txn, hash)
    }
}

/// Adds (`sign` 1) or removes (`sign` -1) an item from the counters of its mailbox and folder.
pub(super) fn count(m: &mut MailboxInfo, folder: &mut FolderInfo, item: &ItemInfo, sign: i64) {
    let add = |v: &mut u64, by: u64| *v = if sign > 0 { v.saturating_add(by) } else { v.saturating_sub(by) };
    if folder.hidden {
        add(&mut m.recoverable_items, 1);
        add(&mut m.recoverable_size, item.size);
    } else {
        add(&mut m.items, 1);
        add(&mut m.size, item.size);
    }
    if !item.fai {
        add(&mut folder.total, 1);
        add(&mut folder.size, item.size);
        if !item.flags.contains(Flags::SEEN) {
            add(&mut folder.unread, 1);
        }
    }
}

/// The UIDs ascending, each once.
pub(super) fn sorted_unique(uids: &[Uid]) -> Vec<Uid> {
    let mut v = uids.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}
