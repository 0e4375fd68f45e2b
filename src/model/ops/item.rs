//! Operations on the items of ordinary folders: storing, replacing, flagging, copying or moving and expunging
//! them.

use crate::engine::ApplyError;
use crate::model::bodies::NewBody;
use crate::model::envelope::Envelope;
use crate::model::error::{MailError, QuotaKind};
use crate::model::types::{
    Deleted, Flags, FolderId, FolderInfo, FolderRole, ItemClass, ItemInfo, MailboxInfo, ModSeq, Uid,
};
use crate::time::Timestamp;

use super::tx::{Tx, check_message_size, check_quota, check_recoverable_quota, count, sorted_unique};
use super::{Applied, ChangeKind, Entity, FlagAction, MailOutput, Message, reject};

/// Applies [`MailOp::Append`](super::MailOp::Append).
pub(super) fn append(
    mut tx: Tx<'_, '_>,
    folder: FolderId,
    flags: Flags,
    keywords: Vec<String>,
    class: ItemClass,
    fai: bool,
    Message { received, envelope, content, raw }: Message<NewBody>,
) -> Applied {
    let (mut m, mut f) = message_target(&mut tx, folder, raw)?;
    let limit = m.quota.unwrap_or_default().prohibit_send_receive;
    check_quota(&m, QuotaKind::ProhibitSendReceive, m.size.saturating_add(u64::from(raw.len)), limit)?;
    let modseq = Tx::next_modseq(&mut m);
    let template = ItemInfo {
        flags: Flags(flags.0 & Flags::ALL.0),
        keywords: normalise_keywords(&keywords),
        class,
        fai,
        ..incoming(received, raw.len as usize, *envelope)
    };
    let item = tx.insert_item(&mut m, &mut f, &template, Some((raw, content)), modseq)?;
    tx.put_folder(&f)?;
    tx.put_mailbox(&m)?;
    Ok(MailOutput::Appended { item: item.id, uid: item.uid, uidvalidity: f.uidvalidity, modseq })
}

/// The mailbox and the folder a message of `raw`'s size is stored in: an ordinary folder (Recoverable Items
/// takes no new message), and a message the mailbox's size limit allows.
fn message_target(
    tx: &mut Tx<'_, '_>,
    folder: FolderId,
    raw: NewBody,
) -> Result<(MailboxInfo, FolderInfo), ApplyError<MailError>> {
    let m = tx.mailbox()?;
    let f = tx.item_folder(folder)?;
    if f.hidden {
        return Err(reject(MailError::RecoverableItems { mailbox: tx.guid, folder }));
    }
    check_message_size(&m, raw.len as usize)?;
    Ok((m, f))
}

/// Applies [`MailOp::ReplaceItem`](super::MailOp::ReplaceItem).
pub(super) fn replace(
    mut tx: Tx<'_, '_>,
    folder: FolderId,
    uid: Uid,
    class: ItemClass,
    Message { received: at, envelope, content, raw }: Message<NewBody>,
) -> Applied {
    let (mut m, mut f) = message_target(&mut tx, folder, raw)?;
    let Some(original) = tx.item_at(folder, uid)? else {
        return Err(reject(MailError::NoSuchItem { mailbox: tx.guid, folder, uid }));
    };
    let modseq = Tx::next_modseq(&mut m);
    let template = ItemInfo {
        class,
        received: at,
        size: u64::from(raw.len),
        envelope: *envelope,
        deleted: None,
        ..original.clone()
    };
    let new_uid = tx.insert_item(&mut m, &mut f, &template, Some((raw, content)), modseq)?.uid;
    let original_in_versions = if m.holds().keeps(&original, at) {
        let mut versions = tx.role_folder(FolderRole::Versions)?;
        let kept = ItemInfo { deleted: Some(Deleted { from: folder, at }), ..original.clone() };
        let kept_uid = tx.move_item(&mut m, &mut f, &mut versions, &original, kept, modseq)?;
        tx.put_folder(&versions)?;
        check_recoverable_quota(&m)?;
        Some(kept_uid)
    } else {
        tx.remove_item(&mut m, &mut f, &original, modseq)?;
        None
    };
    tx.put_folder(&f)?;
    tx.put_mailbox(&m)?;
    Ok(MailOutput::Replaced { uid: new_uid, original_in_versions, modseq })
}

/// Applies [`MailOp::StoreFlags`](super::MailOp::StoreFlags): to the items `uids` of `folder` (those unchanged
/// since `unchanged_since`), the change `action` with `flags` and `keywords`.
pub(super) fn store_flags(
    mut tx: Tx<'_, '_>,
    folder: FolderId,
    uids: Vec<Uid>,
    unchanged_since: Option<ModSeq>,
    action: FlagAction,
    flags: Flags,
    keywords: Vec<String>,
) -> Applied {
    let mut m = tx.mailbox()?;
    let mut f = tx.item_folder(folder)?;
    let flags = Flags(flags.0 & Flags::ALL.0);
    let keywords = normalise_keywords(&keywords);
    let mut modseq = None;
    let (mut updated, mut modified) = (Vec::new(), Vec::new());
    for uid in sorted_unique(&uids) {
        let Some(mut item) = tx.item_at(folder, uid)? else { continue };
        if unchanged_since.is_some_and(|since| item.modseq > since) {
            modified.push(uid);
            continue;
        }
        let (new_flags, new_keywords) = match action {
            FlagAction::Add => {
                (item.flags | flags, normalise_keywords(&[item.keywords.clone(), keywords.clone()].concat()))
            }
            FlagAction::Remove => {
                (item.flags.without(flags), item.keywords.iter().filter(|k| !keywords.contains(k)).cloned().collect())
            }
            FlagAction::Replace => (flags, keywords.clone()),
        };
        if new_flags == item.flags && new_keywords == item.keywords {
            continue;
        }
        let ms = *modseq.get_or_insert_with(|| Tx::next_modseq(&mut m));
        count(&mut m, &mut f, &item, -1);
        item.flags = new_flags;
        item.keywords = new_keywords;
        item.modseq = ms;
        count(&mut m, &mut f, &item, 1);
        f.highest_modseq = ms;
        tx.put_item(&item)?;
        tx.record(ms, ChangeKind::Updated, Entity::Item { id: item.id, folder, uid })?;
        updated.push((uid, ms));
    }
    if modseq.is_some() {
        tx.put_folder(&f)?;
        tx.put_mailbox(&m)?;
    }
    Ok(MailOutput::FlagsStored { modseq, updated, modified })
}

/// Applies [`MailOp::CopyItems`](super::MailOp::CopyItems).
pub(super) fn copy(mut tx: Tx<'_, '_>, from: FolderId, uids: Vec<Uid>, to: FolderId, remove_source: bool) -> Applied {
    let mut m = tx.mailbox()?;
    if from == to {
        return Err(reject(MailError::SameFolder { folder: from }));
    }
    let mut src = tx.item_folder(from)?;
    let mut dst = tx.item_folder(to)?;
    if src.hidden || dst.hidden {
        let folder = if src.hidden { from } else { to };
        return Err(reject(MailError::RecoverableItems { mailbox: tx.guid, folder }));
    }
    let mut modseq = None;
    let mut mapping = Vec::new();
    for uid in sorted_unique(&uids) {
        let Some(item) = tx.item_at(from, uid)? else { continue };
        let ms = *modseq.get_or_insert_with(|| Tx::next_modseq(&mut m));
        let copy = tx.insert_item(&mut m, &mut dst, &item, None, ms)?;
        if remove_source {
            tx.remove_item(&mut m, &mut src, &item, ms)?;
        }
        mapping.push((uid, copy.uid));
    }
    if modseq.is_some() {
        tx.put_folder(&src)?;
        tx.put_folder(&dst)?;
        tx.put_mailbox(&m)?;
    }
    Ok(MailOutput::Copied { uidvalidity: dst.uidvalidity, mapping, modseq })
}

/// Applies [`MailOp::Expunge`](super::MailOp::Expunge).
pub(super) fn expunge(mut tx: Tx<'_, '_>, folder: FolderId, uids: Option<Vec<Uid>>, at: Timestamp) -> Applied {
    let mut m = tx.mailbox()?;
    let mut f = tx.item_folder(folder)?;
    if f.hidden {
        // Retention, single item recovery and holds decide what leaves Recoverable Items.
        return Err(reject(MailError::RecoverableItems { mailbox: tx.guid, folder }));
    }
    let candidates: Vec<Uid> = match uids {
        Some(uids) => sorted_unique(&uids),
        None => tx.uids_of(folder)?,
    };
    let mut modseq = None;
    // Gone from the user's view; what a hold keeps goes to Purges, with where and when it was deleted.
    let holds = m.holds();
    let kept = |item: &ItemInfo| item.flags.contains(Flags::DELETED) && holds.keeps(item, at);
    let relabel = |item: &ItemInfo| ItemInfo { deleted: Some(Deleted { from: folder, at }), ..item.clone() };
    let mut purges = tx.role_folder(FolderRole::Purges)?;
    let mut expunged = tx.move_matching(&mut m, &mut f, &mut purges, candidates.clone(), &mut modseq, kept, relabel)?;
    if !expunged.is_empty() {
        check_recoverable_quota(&m)?;
        tx.put_folder(&purges)?;
    }
    let deleted = |item: &ItemInfo| item.flags.contains(Flags::DELETED);
    expunged.extend(tx.remove_matching(&mut m, &mut f, candidates, &mut modseq, deleted)?);
    expunged.sort_unstable();
    if modseq.is_some() {
        tx.put_folder(&f)?;
        tx.put_mailbox(&m)?;
    }
    Ok(MailOutput::Expunged { uids: expunged, modseq })
}

/// A new message as it arrives: unflagged `IPM.Note`; `insert_item` gives it its id, folder, UID, MODSEQ and
/// content reference.
pub(super) fn incoming(received: Timestamp, size: usize, envelope: Envelope) -> ItemInfo {
    ItemInfo {
        id: 0,
        folder: 0,
        uid: 0,
        modseq: 0,
        flags: Flags::empty(),
        keywords: Vec::new(),
        class: ItemClass::Note,
        received,
        size: size as u64,
        envelope,
        fai: false,
        deleted: None,
        content: [0; 32],
    }
}

fn normalise_keywords(keywords: &[String]) -> Vec<String> {
    let mut v = keywords.to_vec();
    v.sort();
    v.dedup();
    v
}
