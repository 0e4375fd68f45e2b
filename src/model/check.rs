//! Checking a mailbox database: the digest of its logical state (copies compare it) and the verification of its
//! counters, indexes and stored bodies (`mailstore check`).

use heed::RoTxn;

use crate::error::Result;
use crate::model::types::{Flags, ItemInfo};
use crate::model::{ItemSummary, MailStore, bodies, keys, load};

impl MailStore {
    /// A deterministic digest (BLAKE3, hex) of the database's whole logical state: every entry of every table
    /// of the model, in key order, and every stored content (hash, reference count, body id, bytes) — not where
    /// the bytes lie, which is physical layout (see `bodies`). Two copies that applied the same log have the
    /// same digest.
    pub fn digest(&self, txn: &RoTxn<'_>) -> Result<String> {
        let mut hasher = blake3::Hasher::new();
        let tables = [
            self.mailboxes,
            self.addresses,
            self.folders,
            self.folder_names,
            self.items,
            self.uids,
            self.changes,
            self.received,
            self.submissions,
            self.conversation_of,
            self.conversations,
            self.conversation_members,
            self.message_ids,
        ];
        let field = |hasher: &mut blake3::Hasher, bytes: &[u8]| {
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        for (i, table) in tables.iter().enumerate() {
            hasher.update(&(i as u32).to_le_bytes());
            for entry in table.iter(txn)? {
                let (key, value) = entry?;
                field(&mut hasher, key);
                field(&mut hasher, value);
            }
        }
        hasher.update(&(tables.len() as u32).to_le_bytes());
        for entry in self.blob_refs.iter(txn)? {
            let (hash, value) = entry?;
            let r = bodies::BlobRef::decode(value)?;
            let hash: &[u8; 32] = hash
                .try_into()
                .map_err(|_| heed::Error::Decoding("a mail.blob_refs key is not a content hash".into()))?;
            field(&mut hasher, hash);
            hasher.update(&u64::from(r.count).to_le_bytes());
            hasher.update(&r.body.to_le_bytes());
            field(&mut hasher, &bodies::read(&self.attachments, &r, hash)?);
        }
        Ok(hasher.finalize().to_hex().to_string())
    }

    /// Checks every mailbox: folder counts, unread counts and sizes match the items in them; mailbox and
    /// Recoverable Items totals match their folders; every UID index entry names an item that names it back, and
    /// its listing record equals that item field by field; every item has exactly one UID index entry; UIDNEXT
    /// lies above every UID; no MODSEQ is above the mailbox's highest; every item is in exactly one conversation
    /// and the conversation tables match the items (`conversations`). Returns each problem found.
    pub fn verify_counters(&self, txn: &RoTxn<'_>) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let last_uidvalidity = self.meta.get(txn, keys::LAST_UIDVALIDITY)?.map_or(0, |v| keys::u32_at(v, 0));
        for m in self.mailboxes(txn)? {
            let folders = self.folders(txn, &m.guid)?;
            for f in folders.iter().filter(|f| f.uidvalidity > last_uidvalidity) {
                problems.push(format!(
                    "mailbox {} folder {}: UIDVALIDITY {} is above the highest given out ({last_uidvalidity}), so a \
                     new folder could get it again",
                    m.address, f.id, f.uidvalidity
                ));
            }
            let (mut items, mut size, mut rec_items, mut rec_size) = (0u64, 0u64, 0u64, 0u64);
            let mut indexed = 0u64;
            for f in &folders {
                // The folder's items, found through the UID index and read from `mail.items`.
                let mut list = Vec::new();
                for entry in self.uids.prefix_iter(txn, &keys::folder(&m.guid, f.id))? {
                    let (key, raw) = entry?;
                    indexed += 1;
                    let uid = keys::u32_at(key, 24);
                    let at = format!("mailbox {} folder {} UID {uid}", m.address, f.id);
                    let summary = match ItemSummary::parse(key, raw) {
                        Ok(s) => s,
                        Err(e) => {
                            problems.push(format!("{at}: unreadable UID index entry ({e})"));
                            continue;
                        }
                    };
                    let Some(item) = self.item(txn, &m.guid, summary.id())? else {
                        problems.push(format!("{at}: the UID index names item {}, which does not exist", summary.id()));
                        continue;
                    };
                    if (item.folder, item.uid) != (f.id, uid) {
                        problems.push(format!(
                            "{at}: the UID index names item {}, which is UID {} of folder {}",
                            item.id, item.uid, item.folder
                        ));
                        continue;
                    }
                    if summary.to_item_info() != item {
                        problems.push(format!("{at}: the listing record differs from item {}", item.id));
                    }
                    list.push(item);
                }
                let visible: Vec<_> = list.iter().filter(|i| !i.fai).collect();
                let total = visible.len() as u64;
                let unread = visible.iter().filter(|i| !i.flags.contains(Flags::SEEN)).count() as u64;
                let fsize: u64 = visible.iter().map(|i| i.size).sum();
                if (f.total, f.unread, f.size) != (total, unread, fsize) {
                    problems.push(format!(
                        "mailbox {} folder {} ({:?}): counters say {} items, {} unread, {} bytes; its items are {total}, {unread}, {fsize}",
                        m.address, f.id, f.name, f.total, f.unread, f.size
                    ));
                }
                for i in &list {
                    if i.uid >= f.uidnext || i.modseq > m.highest_modseq {
                        problems.push(format!(
                            "mailbox {} folder {}: item {} (UID {}) is inconsistent with its folder or mailbox",
                            m.address, f.id, i.id, i.uid
                        ));
                    }
                }
                let n = list.len() as u64;
                let all_size: u64 = list.iter().map(|i| i.size).sum();
                if f.hidden {
                    rec_items += n;
                    rec_size += all_size;
                } else {
                    items += n;
                    size += all_size;
                }
            }
            // Each index entry names a distinct item (an item has one folder and UID); equal counts make the index
            // and the items a one-to-one match.
            let mut stored = 0u64;
            for entry in self.items.prefix_iter(txn, &keys::mailbox(&m.guid))? {
                entry?;
                stored += 1;
            }
            if stored != indexed {
                problems.push(format!(
                    "mailbox {}: {stored} items but {indexed} UID index entries in its folders",
                    m.address
                ));
            }
            if (m.items, m.size, m.recoverable_items, m.recoverable_size) != (items, size, rec_items, rec_size) {
                problems.push(format!(
                    "mailbox {}: totals say {} items / {} bytes and {} / {} in Recoverable Items; its folders hold {items} / {size} and {rec_items} / {rec_size}",
                    m.address, m.items, m.size, m.recoverable_items, m.recoverable_size
                ));
            }
        }
        // Single-instance storage: every stored copy is referenced exactly as often as its count says, and lies
        // where its reference says, hashing to its name (`bodies::verify`).
        let mut refs: std::collections::BTreeMap<[u8; 32], u64> = Default::default();
        for entry in self.items.iter(txn)? {
            let item: ItemInfo = load(entry?.1)?;
            *refs.entry(item.content).or_default() += 1;
        }
        let counts = bodies::verify(&self.body_tables(), txn, &self.attachments, &mut problems)?;
        for (hash, count) in &counts {
            let expected = refs.get(hash).copied().unwrap_or(0);
            if *count != expected {
                let hex = blake3::Hash::from_bytes(*hash).to_hex();
                problems
                    .push(format!("message content {hex}: reference count {count}, referenced by {expected} item(s)"));
            }
        }
        let uncounted = refs.keys().filter(|hash| !counts.contains_key(*hash)).count();
        if uncounted > 0 {
            problems.push(format!("{uncounted} stored message contents are referenced without a count"));
        }
        self.verify_conversations(txn, &mut problems)?;
        Ok(problems)
    }
}
