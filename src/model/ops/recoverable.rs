//! Operations on Recoverable Items: deleting items into Deletions, recovering them, and purging them (to Purges
//! or for good) as retention, single item recovery and litigation hold allow.

use crate::model::types::{Deleted, FolderId, FolderRole, ItemInfo, Uid};

use super::tx::{Tx, check_recoverable_quota, sorted_unique};
use crate::model::error::MailError;
use crate::time::Timestamp;

use super::{Applied, MailOutput, reject};

/// Applies [`MailOp::DeleteItems`](super::MailOp::DeleteItems).
pub(super) fn delete(mut tx: Tx<'_, '_>, folder: FolderId, uids: Vec<Uid>, at: Timestamp) -> Applied {
    let mut m = tx.mailbox()?;
    let mut src = tx.item_folder(folder)?;
    if src.hidden {
        return Err(reject(MailError::RecoverableItems { mailbox: tx.guid, folder }));
    }
    let mut deletions = tx.role_folder(FolderRole::Deletions)?;
    let mut modseq = None;
    let mut mapping = Vec::new();
    for uid in sorted_unique(&uids) {
        let Some(item) = tx.item_at(folder, uid)? else { continue };
        let ms = *modseq.get_or_insert_with(|| Tx::next_modseq(&mut m));
        let moved = ItemInfo { deleted: Some(Deleted { from: folder, at }), ..item.clone() };
        let new_uid = tx.move_item(&mut m, &mut src, &mut deletions, &item, moved, ms)?;
        mapping.push((uid, new_uid));
    }
    check_recoverable_quota(&m)?;
    if modseq.is_some() {
        tx.put_folder(&src)?;
        tx.put_folder(&deletions)?;
        tx.put_mailbox(&m)?;
    }
    Ok(MailOutput::DeletedToRecoverable { mapping, modseq })
}

/// Applies [`MailOp::RecoverItems`](super::MailOp::RecoverItems).
pub(super) fn recover(mut tx: Tx<'_, '_>, uids: Vec<Uid>) -> Applied {
    let mut m = tx.mailbox()?;
    let mut deletions = tx.role_folder(FolderRole::Deletions)?;
    let inbox = tx.role_folder(FolderRole::Inbox)?.id;
    let mut modseq = None;
    let mut mapping = Vec::new();
    for uid in sorted_unique(&uids) {
        let Some(item) = tx.item_at(deletions.id, uid)? else { continue };
        let ms = *modseq.get_or_insert_with(|| Tx::next_modseq(&mut m));
        // Back where it came from, if that folder still exists outside Recoverable Items.
        let from = item.deleted.map_or(inbox, |d| d.from);
        let mut dst = match tx.folder(from) {
            Ok(f) if !f.hidden && f.role != Some(FolderRole::Root) => f,
            _ => tx.folder(inbox)?,
        };
        let restored = ItemInfo { deleted: None, ..item.clone() };
        let new_uid = tx.move_item(&mut m, &mut deletions, &mut dst, &item, restored, ms)?;
        tx.put_folder(&dst)?;
        mapping.push((uid, dst.id, new_uid));
    }
    if modseq.is_some() {
        tx.put_folder(&deletions)?;
        tx.put_mailbox(&m)?;
    }
    Ok(MailOutput::Recovered { mapping, modseq })
}

/// Applies [`MailOp::PurgeDeleted`](super::MailOp::PurgeDeleted). Items a litigation hold keeps stay in
/// Deletions (a time-bound hold is judged at `deleted_before`, no later than the caller's clock).
pub(super) fn purge_deleted(mut tx: Tx<'_, '_>, deleted_before: Timestamp) -> Applied {
    let mut m = tx.mailbox()?;
    let mut deletions = tx.role_folder(FolderRole::Deletions)?;
    let uids = tx.uids_of(deletions.id)?;
    let held = m.holds();
    let old =
        |item: &ItemInfo| item.deleted.is_none_or(|d| d.at < deleted_before) && !held.holds_item(item, deleted_before);
    let mut modseq = None;
    let purged = if m.single_item_recovery {
        // Out of the user's reach, kept until its retention has passed (`purge_expired`).
        let mut purges = tx.role_folder(FolderRole::Purges)?;
        let moved = tx.move_matching(&mut m, &mut deletions, &mut purges, uids, &mut modseq, old, ItemInfo::clone)?;
        tx.put_folder(&purges)?;
        moved
    } else {
        tx.remove_matching(&mut m, &mut deletions, uids, &mut modseq, old)?
    };
    if modseq.is_some() {
        tx.put_folder(&deletions)?;
        tx.put_mailbox(&m)?;
    }
    Ok(MailOutput::Expunged { uids: purged, modseq })
}

/// Applies [`MailOp::PurgeExpired`](super::MailOp::PurgeExpired).
pub(super) fn purge_expired(mut tx: Tx<'_, '_>, now: Timestamp) -> Applied {
    let retention = tx.mailbox()?.retention;
    purge_older_than(&mut tx, now, now.saturating_sub(retention))
}

/// Applies [`MailOp::PurgeItems`](super::MailOp::PurgeItems).
pub(super) fn purge(mut tx: Tx<'_, '_>, uids: Vec<Uid>) -> Applied {
    let mut m = tx.mailbox()?;
    let mut deletions = tx.role_folder(FolderRole::Deletions)?;
    let mut purges = tx.role_folder(FolderRole::Purges)?;
    let keep = m.single_item_recovery || m.litigation_hold;
    let mut modseq = None;
    let mut purged = Vec::new();
    for uid in sorted_unique(&uids) {
        let Some(item) = tx.item_at(deletions.id, uid)? else { continue };
        let ms = *modseq.get_or_insert_with(|| Tx::next_modseq(&mut m));
        if keep {
            tx.move_item(&mut m, &mut deletions, &mut purges, &item, item.clone(), ms)?;
        } else {
            tx.remove_item(&mut m, &mut deletions, &item, ms)?;
        }
        purged.push(uid);
    }
    if modseq.is_some() {
        tx.put_folder(&deletions)?;
        tx.put_folder(&purges)?;
        tx.put_mailbox(&m)?;
    }
    Ok(MailOutput::Expunged { uids: purged, modseq })
}

/// Removes the items of Deletions, Purges and Versions deleted before `cutoff` that no litigation hold keeps at
/// `now`. The UIDs reported are those of the three folders, in that order.
fn purge_older_than(tx: &mut Tx<'_, '_>, now: Timestamp, cutoff: Timestamp) -> Applied {
    let mut m = tx.mailbox()?;
    let held = m.holds();
    let mut modseq = None;
    let mut purged = Vec::new();
    for role in [FolderRole::Deletions, FolderRole::Purges, FolderRole::Versions] {
        let mut folder = tx.role_folder(role)?;
        let uids = tx.uids_of(folder.id)?;
        let expired = |item: &ItemInfo| item.deleted.is_none_or(|d| d.at < cutoff) && !held.holds_item(item, now);
        purged.extend(tx.remove_matching(&mut m, &mut folder, uids, &mut modseq, expired)?);
        if modseq.is_some() {
            tx.put_folder(&folder)?;
        }
    }
    if modseq.is_some() {
        tx.put_mailbox(&m)?;
    }
    Ok(MailOutput::Expunged { uids: purged, modseq })
}
