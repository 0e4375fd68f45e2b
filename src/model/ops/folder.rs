//! Operations on folders: creating, renaming or moving, and deleting a folder with its subfolders (their items go
//! to Recoverable Items).

use crate::model::error::MailError;
use crate::model::keys;
use crate::model::types::{Deleted, FolderId, FolderInfo, FolderRole, ItemInfo, ModSeq};
use crate::time::Timestamp;

use super::tx::{Tx, check_recoverable_quota};
use super::{Applied, ChangeKind, Entity, MailOutput, reject, storage};

/// Applies [`MailOp::CreateFolder`](super::MailOp::CreateFolder).
pub(super) fn create(mut tx: Tx<'_, '_>, parent: FolderId, name: String, uidvalidity: u32) -> Applied {
    let mut m = tx.mailbox()?;
    let parent_folder = tx.folder(parent)?;
    if parent_folder.hidden {
        return Err(reject(MailError::RecoverableItems { mailbox: tx.guid, folder: parent }));
    }
    let uidvalidity = tx.next_uidvalidity(uidvalidity)?;
    let modseq = Tx::next_modseq(&mut m);
    let folder = empty(m.next_folder_id, Some(parent), name, None, false, uidvalidity, modseq);
    let id = tx.insert_folder(&mut m, folder)?;
    tx.record(modseq, ChangeKind::Created, Entity::Folder(id))?;
    tx.put_mailbox(&m)?;
    Ok(MailOutput::FolderCreated { id, modseq })
}

/// Applies [`MailOp::RenameFolder`](super::MailOp::RenameFolder).
pub(super) fn rename(mut tx: Tx<'_, '_>, folder: FolderId, parent: FolderId, name: String) -> Applied {
    let mailbox = tx.guid;
    let mut m = tx.mailbox()?;
    let mut f = tx.folder(folder)?;
    if f.role.is_some() {
        return Err(reject(MailError::WellKnownFolder { mailbox, folder, name: f.name }));
    }
    let new_parent = tx.folder(parent)?;
    if new_parent.hidden {
        return Err(reject(MailError::RecoverableItems { mailbox, folder: parent }));
    }
    // No cycles: the new parent may not be the folder or lie below it.
    let mut walk = Some(new_parent.id);
    while let Some(id) = walk {
        if id == folder {
            return Err(reject(MailError::FolderCycle { mailbox, folder, name: f.name }));
        }
        walk = tx.folder(id)?.parent;
    }
    let old_parent = f.parent.unwrap_or(0);
    let old_key = keys::folder_name(&mailbox, old_parent, &f.name);
    let new_key = keys::folder_name(&mailbox, parent, &name);
    if new_key != old_key && tx.s.folder_names.get(tx.txn, &new_key)?.is_some() {
        return Err(reject(MailError::FolderExists { mailbox, parent, name }));
    }
    tx.s.folder_names.delete(tx.txn, &old_key)?;
    tx.s.folder_names.put(tx.txn, &new_key, &folder.to_be_bytes())?;
    let modseq = Tx::next_modseq(&mut m);
    f.parent = Some(parent);
    f.name = name;
    f.highest_modseq = modseq;
    tx.put_folder(&f)?;
    tx.record(modseq, ChangeKind::Updated, Entity::Folder(folder))?;
    tx.put_mailbox(&m)?;
    Ok(MailOutput::FolderRenamed { modseq })
}

/// Applies [`MailOp::DeleteFolder`](super::MailOp::DeleteFolder).
pub(super) fn delete(mut tx: Tx<'_, '_>, folder: FolderId, at: Timestamp) -> Applied {
    let mailbox = tx.guid;
    let mut m = tx.mailbox()?;
    let target = tx.folder(folder)?;
    if target.role.is_some() || target.hidden {
        return Err(reject(MailError::WellKnownFolder { mailbox, folder, name: target.name }));
    }
    let mut deletions = tx.role_folder(FolderRole::Deletions)?;
    let modseq = Tx::next_modseq(&mut m);
    // The subtree, parents before children.
    let all = tx.s.folders(tx.txn, &mailbox).map_err(storage)?;
    let mut subtree = vec![target.id];
    let mut i = 0;
    while i < subtree.len() {
        let parent = subtree[i];
        subtree.extend(all.iter().filter(|f| f.parent == Some(parent)).map(|f| f.id));
        i += 1;
    }
    let mut moved = 0;
    for &id in &subtree {
        let mut f = tx.folder(id)?;
        for uid in tx.uids_of(id)? {
            let Some(item) = tx.item_at(id, uid)? else { continue };
            let deleted = ItemInfo { deleted: Some(Deleted { from: id, at }), ..item.clone() };
            tx.move_item(&mut m, &mut f, &mut deletions, &item, deleted, modseq)?;
            moved += 1;
        }
    }
    check_recoverable_quota(&m)?;
    // Remove children before parents.
    for &id in subtree.iter().rev() {
        let f = tx.folder(id)?;
        let parent = f.parent.unwrap_or(0);
        tx.s.folder_names.delete(tx.txn, &keys::folder_name(&mailbox, parent, &f.name))?;
        tx.s.folders.delete(tx.txn, &keys::folder(&mailbox, id))?;
        tx.s.records.lock().folders.remove(&(mailbox, id));
        tx.record(modseq, ChangeKind::Destroyed, Entity::Folder(id))?;
    }
    tx.put_folder(&deletions)?;
    tx.put_mailbox(&m)?;
    Ok(MailOutput::FolderDeleted { folders: subtree, items: moved, modseq })
}

/// A new folder, empty, created at `modseq`.
pub(super) fn empty(
    id: FolderId,
    parent: Option<FolderId>,
    name: String,
    role: Option<FolderRole>,
    hidden: bool,
    uidvalidity: u32,
    modseq: ModSeq,
) -> FolderInfo {
    FolderInfo {
        id,
        parent,
        name,
        role,
        hidden,
        uidvalidity,
        uidnext: 1,
        highest_modseq: modseq,
        total: 0,
        unread: 0,
        size: 0,
    }
}
