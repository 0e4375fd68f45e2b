//! Operations on a mailbox as a whole: creating it (with its well-known folders), soft-deleting, restoring and
//! purging it, and its settings (retention, holds, quota).

use std::time::Duration;

use crate::model::error::MailError;
use crate::model::types::{DEFAULT_RETENTION, FolderRole, ItemInfo, MailboxInfo, MailboxKind, Quota};
use crate::model::{keys, load};
use crate::time::Timestamp;

use super::folder;
use super::tx::Tx;
use super::{Applied, ChangeKind, Entity, MailOutput, reject};

/// Applies [`MailOp::CreateMailbox`](super::MailOp::CreateMailbox).
pub(super) fn create(
    mut tx: Tx<'_, '_>,
    address: String,
    display_name: String,
    kind: MailboxKind,
    created: Timestamp,
    uidvalidity: u32,
) -> Applied {
    let guid = tx.guid;
    if tx.s.mailboxes.get(tx.txn, &keys::mailbox(&guid))?.is_some() {
        return Err(reject(MailError::MailboxExists { mailbox: guid }));
    }
    let address_key = address.to_lowercase();
    if tx.s.addresses.get(tx.txn, address_key.as_bytes())?.is_some() {
        return Err(reject(MailError::AddressTaken { address }));
    }
    let mut m = MailboxInfo {
        guid,
        address,
        display_name,
        kind,
        created,
        highest_modseq: 0,
        items: 0,
        size: 0,
        recoverable_items: 0,
        recoverable_size: 0,
        quota: None,
        single_item_recovery: false,
        litigation_hold: false,
        hold_duration: None,
        retention: DEFAULT_RETENTION,
        history_floor: 0,
        deleted: None,
        housekept: None,
        next_folder_id: 1,
        next_item_id: 1,
    };
    let uidvalidity = tx.next_uidvalidity(uidvalidity)?;
    let modseq = Tx::next_modseq(&mut m);
    let folder = |id, parent, name: &str, role, hidden| {
        folder::empty(id, parent, name.to_owned(), Some(role), hidden, uidvalidity, modseq)
    };
    let root = tx.insert_folder(&mut m, folder(1, None, "", FolderRole::Root, false))?;
    tx.record(modseq, ChangeKind::Created, Entity::Mailbox)?;
    if kind.is_mail() {
        let mut ids = vec![(FolderRole::Root, root)];
        for (role, name, parent_role, hidden) in FolderRole::WELL_KNOWN {
            let parent = ids.iter().find(|(r, _)| *r == parent_role).map_or(root, |(_, id)| *id);
            let next = m.next_folder_id;
            let id = tx.insert_folder(&mut m, folder(next, Some(parent), name, role, hidden))?;
            tx.record(modseq, ChangeKind::Created, Entity::Folder(id))?;
            ids.push((role, id));
        }
    }
    tx.s.addresses.put(tx.txn, address_key.as_bytes(), guid.as_bytes())?;
    tx.put_mailbox(&m)?;
    Ok(MailOutput::MailboxCreated { root, modseq })
}

/// Applies [`MailOp::DeleteMailbox`](super::MailOp::DeleteMailbox).
pub(super) fn delete(mut tx: Tx<'_, '_>, at: Timestamp) -> Applied {
    let mut m = tx.mailbox()?;
    let modseq = Tx::next_modseq(&mut m);
    m.deleted = Some(at);
    tx.s.addresses.delete(tx.txn, m.address.to_lowercase().as_bytes())?;
    tx.record(modseq, ChangeKind::Destroyed, Entity::Mailbox)?;
    tx.put_mailbox(&m)?;
    Ok(MailOutput::MailboxChanged)
}

/// Applies [`MailOp::RestoreMailbox`](super::MailOp::RestoreMailbox).
pub(super) fn restore(mut tx: Tx<'_, '_>) -> Applied {
    let mailbox = tx.guid;
    let mut m = tx.any_mailbox()?;
    if m.deleted.is_none() {
        return Err(reject(MailError::MailboxNotDeleted { mailbox }));
    }
    let address_key = m.address.to_lowercase();
    if tx.s.addresses.get(tx.txn, address_key.as_bytes())?.is_some() {
        return Err(reject(MailError::AddressTaken { address: m.address }));
    }
    let modseq = Tx::next_modseq(&mut m);
    m.deleted = None;
    tx.s.addresses.put(tx.txn, address_key.as_bytes(), mailbox.as_bytes())?;
    tx.record(modseq, ChangeKind::Created, Entity::Mailbox)?;
    tx.put_mailbox(&m)?;
    Ok(MailOutput::MailboxChanged)
}

/// Applies [`MailOp::PurgeMailbox`](super::MailOp::PurgeMailbox).
pub(super) fn purge(mut tx: Tx<'_, '_>, now: Timestamp) -> Applied {
    let mailbox = tx.guid;
    let m = tx.any_mailbox()?;
    let Some(deleted) = m.deleted else {
        return Err(reject(MailError::MailboxNotDeleted { mailbox }));
    };
    if m.litigation_hold && m.hold_duration.is_none() {
        return Err(reject(MailError::LitigationHold { mailbox }));
    }
    let mut contents = Vec::new();
    // Under single item recovery every item is kept until its retention has passed: those still in folders
    // since the mailbox was deleted, those in Recoverable Items since they were. Under a time-bound litigation
    // hold, until the newest item's hold has ended.
    let mut until = Timestamp::from_micros(0);
    for entry in tx.s.items.prefix_iter(tx.txn, &keys::mailbox(&mailbox))? {
        let item: ItemInfo = load(entry?.1)?;
        contents.push(item.content);
        if m.single_item_recovery {
            until = until.max(item.deleted.map_or(deleted, |d| d.at).saturating_add(m.retention));
        }
        if let Some(d) = m.hold_duration.filter(|_| m.litigation_hold) {
            until = until.max(item.received.saturating_add(d));
        }
    }
    if m.single_item_recovery {
        until = until.max(deleted.saturating_add(m.retention));
    }
    if now < until {
        return Err(reject(MailError::RetentionNotPassed { mailbox, until }));
    }
    for hash in &contents {
        tx.drop_ref(hash)?;
    }
    let s = tx.s;
    // The audit trail goes with the mailbox; the entry recording this purge is written after it (`audit`).
    let conversations = [s.conversation_of, s.conversations, s.conversation_members, s.message_ids];
    for table in [s.folders, s.folder_names, s.items, s.uids, s.changes, s.received, s.submissions, s.audit]
        .into_iter()
        .chain(conversations)
    {
        tx.clear(table)?;
    }
    tx.s.mailboxes.delete(tx.txn, &keys::mailbox(&mailbox))?;
    tx.s.records.lock().clear();
    Ok(MailOutput::MailboxChanged)
}

/// Applies [`MailOp::SetRetention`](super::MailOp::SetRetention).
pub(super) fn set_retention(
    mut tx: Tx<'_, '_>,
    single_item_recovery: bool,
    litigation_hold: bool,
    retention: Duration,
) -> Applied {
    change_settings(&mut tx, |m| {
        m.single_item_recovery = single_item_recovery;
        m.litigation_hold = litigation_hold;
        m.retention = retention;
    })
}

/// Applies [`MailOp::SetHoldDuration`](super::MailOp::SetHoldDuration).
pub(super) fn set_hold_duration(mut tx: Tx<'_, '_>, duration: Option<Duration>) -> Applied {
    change_settings(&mut tx, |m| m.hold_duration = duration)
}

/// Applies [`MailOp::SetQuota`](super::MailOp::SetQuota).
pub(super) fn set_quota(mut tx: Tx<'_, '_>, quota: Option<Quota>) -> Applied {
    change_settings(&mut tx, |m| m.quota = quota)
}

/// Changes a mailbox's settings (quota, retention, holds) as one logged change of the mailbox.
fn change_settings(tx: &mut Tx<'_, '_>, change: impl FnOnce(&mut MailboxInfo)) -> Applied {
    let mut m = tx.mailbox()?;
    let modseq = Tx::next_modseq(&mut m);
    change(&mut m);
    tx.record(modseq, ChangeKind::Updated, Entity::Mailbox)?;
    tx.put_mailbox(&m)?;
    Ok(MailOutput::SettingsChanged)
}
