//! Single-mailbox recovery: one mailbox's folders and messages, read from another database — a database
//! restored from a backup into a directory of its own (Exchange's *recovery database*), a passive copy, an older
//! state — and written into a mailbox of a live database as ordinary operations, so they are logged, replicated
//! and replayed like any delivery.

use crate::error::Result;
use crate::model::error::MailError;
use crate::model::types::{ContentHash, Fai, FolderId, FolderInfo, FolderRole};
use crate::model::{MailEngine, MailOp, MailOutput, envelope};
use crate::types::Guid;

/// Items read from the source per read transaction.
const PAGE: usize = 256;

/// What [`recover_mailbox`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MailboxRecovery {
    /// The folder created in the target mailbox to hold what was recovered.
    pub folder: FolderId,
    /// Folders created under it (the source's visible folder tree).
    pub folders: u64,
    /// Items recovered.
    pub items: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Recovers mailbox `source` of `from` into a new folder `folder_name` at the top of mailbox `target` of `into`.
///
/// The source's visible folder tree (every folder but the hidden ones: Recoverable Items and its subfolders) is
/// created again under the new folder, names kept, and every item of it — messages, folder-associated items,
/// items of any class — is appended with its flags, keywords, class and received time (INTERNALDATE); bodies are
/// read from the source (checked against their content hashes) one at a time, so memory stays bounded by one
/// message and one page of item summaries. The items get new UIDs in the new folders (a recovery never
/// overwrites what the target holds).
///
/// Each folder and item is one commit of `into`: a failure (a quota, a dismount) returns its error with what was
/// recovered until then kept in the new folder; recovering again writes a new folder. `from` and `into` may be
/// the same engine (an item recovered into another mailbox of the same database).
pub fn recover_mailbox(
    from: &MailEngine,
    source: Guid,
    into: &MailEngine,
    target: Guid,
    folder_name: &str,
) -> Result<MailboxRecovery> {
    let folders = from.read(|s, txn| {
        s.mailbox(txn, &source)?.ok_or(MailError::NoSuchMailbox { mailbox: source })?;
        s.folders(txn, &source)
    })?;
    let root = folders
        .iter()
        .find(|f| f.role == Some(FolderRole::Root))
        .ok_or(MailError::NoWellKnownFolder { mailbox: source, role: FolderRole::Root })?
        .id;
    let top = into
        .read(|s, txn| s.folder_by_role(txn, &target, FolderRole::Root))?
        .ok_or(MailError::NoWellKnownFolder { mailbox: target, role: FolderRole::Root })?
        .id;
    let folder = create_folder(into, target, top, folder_name)?;
    let mut report = MailboxRecovery { folder, folders: 0, items: 0, bytes: 0 };
    // Depth-first from the source's root: each folder is created under its parent's counterpart.
    let mut stack: Vec<(FolderId, FolderId)> = children(&folders, root).map(|f| (f.id, folder)).collect();
    while let Some((id, parent)) = stack.pop() {
        let Some(f) = folders.iter().find(|f| f.id == id) else { continue };
        let created = create_folder(into, target, parent, &f.name)?;
        report.folders += 1;
        copy_items(from, source, id, into, target, created, &mut report)?;
        stack.extend(children(&folders, id).map(|c| (c.id, created)));
    }
    Ok(report)
}

/// The visible children of `parent`, in reverse id order (so that a stack pops them in id order).
fn children(folders: &[FolderInfo], parent: FolderId) -> impl Iterator<Item = &FolderInfo> {
    let mut found: Vec<&FolderInfo> = folders.iter().filter(|f| f.parent == Some(parent) && !f.hidden).collect();
    found.sort_unstable_by_key(|f| std::cmp::Reverse(f.id));
    found.into_iter()
}

fn create_folder(into: &MailEngine, mailbox: Guid, parent: FolderId, name: &str) -> Result<FolderId> {
    match into.commit(MailOp::create_folder(mailbox, parent, name))?.output {
        MailOutput::FolderCreated { id, .. } => Ok(id),
        other => Err(crate::Error::InvalidArgument(format!("creating a folder answered {other:?}"))),
    }
}

/// Appends every item of folder `id` of `source` to folder `to` of `target`, a page of summaries at a time.
fn copy_items(
    from: &MailEngine,
    source: Guid,
    id: FolderId,
    into: &MailEngine,
    target: Guid,
    to: FolderId,
    report: &mut MailboxRecovery,
) -> Result<()> {
    let mut next = 1;
    loop {
        let page = from.read(|s, txn| s.items_by_uid(txn, &source, id, next, PAGE, Fai::Include))?;
        let Some(last) = page.last() else { return Ok(()) };
        let Some(after) = last.uid.checked_add(1) else { return Ok(()) };
        next = after;
        let full = page.len() == PAGE;
        for item in page {
            let Some(raw) = from.read(|s, txn| s.raw(txn, &source, item.id))? else { continue };
            report.bytes += raw.len() as u64;
            // Parsed and hashed here, before logging, as for any message that arrives.
            let envelope = Box::new(envelope::parse(&raw));
            let content = ContentHash::of(&raw);
            into.commit(MailOp::Append {
                mailbox: target,
                folder: to,
                flags: item.flags,
                keywords: item.keywords,
                received: item.received,
                class: item.class,
                fai: item.fai,
                envelope,
                content,
                raw: raw.into(),
            })?;
            report.items += 1;
        }
        if !full {
            return Ok(());
        }
    }
}
