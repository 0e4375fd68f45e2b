//! Operations on the submission queue: submitting a message (stored in the Outbox) and acknowledging that a
//! transport sent it (moved to Sent Items).

use crate::model::bodies::NewBody;
use crate::model::error::{MailError, QuotaKind};
use crate::model::keys;
use crate::model::store;
use crate::model::types::{Flags, FolderRole, ItemId, ItemInfo};

use super::item::incoming;
use super::tx::{Tx, check_message_size, check_quota};
use super::{Applied, MailOutput, Message, Submission, reject};

/// Applies [`MailOp::Submit`](super::MailOp::Submit).
pub(super) fn submit(
    mut tx: Tx<'_, '_>,
    Message { received: submitted, envelope, content, raw }: Message<NewBody>,
) -> Applied {
    let mailbox = tx.guid;
    let mut m = tx.mailbox()?;
    check_message_size(&m, raw.len as usize)?;
    check_quota(&m, QuotaKind::ProhibitSend, m.size, m.quota.unwrap_or_default().prohibit_send)?;
    let mut outbox = tx.role_folder(FolderRole::Outbox)?;
    let modseq = Tx::next_modseq(&mut m);
    let template = ItemInfo { flags: Flags::SEEN, ..incoming(submitted, raw.len as usize, *envelope) };
    let item = tx.insert_item(&mut m, &mut outbox, &template, Some((raw, content)), modseq)?;
    let queued = Submission { mailbox, item: item.id, submitted };
    tx.s.submissions.put(tx.txn, &keys::item(&mailbox, item.id), &store(&queued)?)?;
    tx.put_folder(&outbox)?;
    tx.put_mailbox(&m)?;
    Ok(MailOutput::Submitted { item: item.id, uid: item.uid })
}

/// Applies [`MailOp::AcknowledgeSubmission`](super::MailOp::AcknowledgeSubmission).
pub(super) fn acknowledge(mut tx: Tx<'_, '_>, item: ItemId) -> Applied {
    let mailbox = tx.guid;
    let mut m = tx.mailbox()?;
    let key = keys::item(&mailbox, item);
    if tx.s.submissions.get(tx.txn, &key)?.is_none() {
        return Err(reject(MailError::NoSuchSubmission { mailbox, item }));
    }
    let queued = tx.item(item)?.ok_or_else(|| reject(MailError::NoSuchSubmission { mailbox, item }))?;
    let mut outbox = tx.folder(queued.folder)?;
    let mut sent = tx.role_folder(FolderRole::SentItems)?;
    let modseq = Tx::next_modseq(&mut m);
    let uid = tx.move_item(&mut m, &mut outbox, &mut sent, &queued, queued.clone(), modseq)?;
    tx.s.submissions.delete(tx.txn, &key)?;
    tx.put_folder(&outbox)?;
    tx.put_folder(&sent)?;
    tx.put_mailbox(&m)?;
    Ok(MailOutput::Sent { uid })
}
