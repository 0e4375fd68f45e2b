//! The mailbox audit trail: who did what to which items, as entries written by the operations themselves.
//!
//! An operation carries who performs it when it is wrapped in [`MailOp::Audited`] (built with [`MailOp::by`]);
//! applying an operation of an audited kind (deletions and purges, moves and copies, edits, sending, recovery,
//! hold and quota changes, the mailbox's deletion, restore and purge, the retention purge of housekeeping, and
//! an access recorded with [`MailOp::audit_access`]) writes one [`AuditEntry`] in the same transaction, stamped with
//! the record's commit time. So the trail is written once, by the one `apply`, and replicates, recovers and
//! restores with the database; an operation without an actor is recorded as unattributed, never skipped.
//! Entries are read by mailbox and time range ([`MailStore::audit`](super::MailStore::audit)) and kept for the
//! audit retention of housekeeping ([`HousekeepingOptions::audit_retention`](super::HousekeepingOptions)); a
//! purged mailbox's trail goes with it, except the entry recording the purge.
//!
//! Flag changes and deliveries are not audited (Exchange's defaults leave them out too): they are the change
//! log's business (`MailStore::changes`). Permission changes will be, once mailboxes have permissions.

use heed::{RoTxn, RwTxn};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::types::{FolderId, Uid};
use crate::model::{MailOp, MailOutput, MailStore};
use crate::time::Timestamp;
use crate::types::{Guid, Lsn};

/// Who performs an operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// Their address (or an administrator's or service's name).
    pub address: String,
    /// In what capacity.
    pub role: ActorRole,
}

/// In what capacity an [`Actor`] acts on a mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ActorRole {
    /// The mailbox's owner.
    Owner,
    /// Someone the owner gave access (a delegate, a shared mailbox's member).
    Delegate,
    /// An administrator (a compliance officer, a help desk).
    Administrator,
    /// A program acting for the organization (a transport, a migration).
    Service,
}

/// What an audited operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AuditAction {
    /// Items moved to Recoverable Items (`DeleteItems`, and `DeleteFolder` for a folder's items).
    SoftDelete,
    /// Items removed from the user's view for good or into Purges (`Expunge`, `PurgeItems`, `PurgeDeleted`).
    HardDelete,
    /// Items moved to another folder.
    Move,
    /// Items copied to another folder.
    Copy,
    /// An item replaced by a new version.
    Update,
    /// A message submitted for sending (send-as when the actor is not the owner).
    Send,
    /// Items recovered from Recoverable Items.
    Recover,
    /// Single item recovery, litigation hold or the retention changed.
    HoldChange,
    /// The quota changed.
    QuotaChange,
    /// A folder (and its subtree) deleted.
    FolderDelete,
    /// The mailbox soft-deleted.
    MailboxDelete,
    /// The mailbox restored.
    MailboxRestore,
    /// The mailbox purged.
    MailboxPurge,
    /// Items past their retention purged by housekeeping.
    RetentionPurge,
    /// Items or a folder read ([`MailOp::audit_access`]).
    Access,
}

/// One entry of a mailbox's audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditEntry {
    /// When: the commit time of the operation's record.
    pub at: Timestamp,
    /// The record's LSN.
    pub lsn: Lsn,
    /// Who, if the operation said ([`MailOp::by`]); `None`: unattributed.
    pub actor: Option<Actor>,
    /// What.
    pub action: AuditAction,
    /// In which folder (the source folder of a move).
    pub folder: Option<FolderId>,
    /// The items the operation names or removed, by UID in `folder` (empty when it names none).
    pub uids: Vec<Uid>,
    /// How many items it affected.
    pub count: u64,
}

impl MailOp {
    /// This operation, performed by `actor` in `role`: recorded with them in the audit trail (where its kind is
    /// audited, see [`audit`](crate::model::AuditEntry)). The wrapped operation is applied exactly as it would be
    /// alone.
    pub fn by(self, address: &str, role: ActorRole) -> MailOp {
        MailOp::Audited { actor: Actor { address: address.to_owned(), role }, op: Box::new(self) }
    }

    /// Records that `actor` read items of `folder` (or opened the folder, `uids` empty): an access by someone other
    /// than the owner, for the audit trail. It changes nothing else.
    pub fn audit_access(mailbox: Guid, folder: FolderId, uids: Vec<Uid>, address: &str, role: ActorRole) -> MailOp {
        MailOp::RecordAccess { mailbox, folder, uids }.by(address, role)
    }
}

/// What an operation of an audited kind will record, known before it is applied (the operation is consumed).
pub(crate) struct Plan {
    mailbox: Guid,
    action: AuditAction,
    folder: Option<FolderId>,
    uids: Vec<Uid>,
}

/// The audit plan of `op`, `None` for the kinds not audited.
pub(crate) fn plan(op: &MailOp) -> Option<Plan> {
    let (mailbox, action, folder, uids) = match op {
        MailOp::DeleteItems { mailbox, folder, uids, .. } => (*mailbox, AuditAction::SoftDelete, Some(*folder), uids),
        MailOp::Expunge { mailbox, folder, .. } => (*mailbox, AuditAction::HardDelete, Some(*folder), &Vec::new()),
        MailOp::PurgeItems { mailbox, uids } => (*mailbox, AuditAction::HardDelete, None, uids),
        MailOp::PurgeDeleted { mailbox, .. } => (*mailbox, AuditAction::HardDelete, None, &Vec::new()),
        MailOp::CopyItems { mailbox, from, uids, remove_source, .. } => {
            let action = if *remove_source { AuditAction::Move } else { AuditAction::Copy };
            (*mailbox, action, Some(*from), uids)
        }
        MailOp::ReplaceItem { mailbox, folder, uid, .. } => {
            return Some(Plan {
                mailbox: *mailbox,
                action: AuditAction::Update,
                folder: Some(*folder),
                uids: vec![*uid],
            });
        }
        MailOp::Submit { mailbox, .. } => (*mailbox, AuditAction::Send, None, &Vec::new()),
        MailOp::RecoverItems { mailbox, uids } => (*mailbox, AuditAction::Recover, None, uids),
        MailOp::SetRetention { mailbox, .. } | MailOp::SetHoldDuration { mailbox, .. } => {
            (*mailbox, AuditAction::HoldChange, None, &Vec::new())
        }
        MailOp::SetQuota { mailbox, .. } => (*mailbox, AuditAction::QuotaChange, None, &Vec::new()),
        MailOp::DeleteFolder { mailbox, folder, .. } => {
            (*mailbox, AuditAction::FolderDelete, Some(*folder), &Vec::new())
        }
        MailOp::DeleteMailbox { mailbox, .. } => (*mailbox, AuditAction::MailboxDelete, None, &Vec::new()),
        MailOp::RestoreMailbox { mailbox } => (*mailbox, AuditAction::MailboxRestore, None, &Vec::new()),
        MailOp::PurgeMailbox { mailbox, .. } => (*mailbox, AuditAction::MailboxPurge, None, &Vec::new()),
        MailOp::PurgeExpired { mailbox, .. } => (*mailbox, AuditAction::RetentionPurge, None, &Vec::new()),
        MailOp::Housekeep { mailbox, .. } => (*mailbox, AuditAction::RetentionPurge, None, &Vec::new()),
        MailOp::RecordAccess { mailbox, folder, uids } => (*mailbox, AuditAction::Access, Some(*folder), uids),
        _ => return None,
    };
    Some(Plan { mailbox, action, folder, uids: uids.clone() })
}

/// What `output` says the operation affected: the UIDs it removed where the operation named none, and a count.
/// `None`: it changed nothing worth an entry (a purge that found nothing to purge).
fn affected(plan: &Plan, output: &MailOutput) -> Option<(Vec<Uid>, u64)> {
    let named = || (plan.uids.clone(), plan.uids.len() as u64);
    let (uids, count) = match output {
        MailOutput::Expunged { uids, .. } if plan.uids.is_empty() => (uids.clone(), uids.len() as u64),
        MailOutput::Expunged { uids, .. } => (plan.uids.clone(), uids.len() as u64),
        MailOutput::Housekept { purged, .. } => (Vec::new(), *purged),
        MailOutput::DeletedToRecoverable { mapping, .. } => (plan.uids.clone(), mapping.len() as u64),
        MailOutput::Copied { mapping, .. } => (plan.uids.clone(), mapping.len() as u64),
        MailOutput::Recovered { mapping, .. } => (plan.uids.clone(), mapping.len() as u64),
        MailOutput::FolderDeleted { items, .. } => return Some((Vec::new(), *items)),
        MailOutput::Submitted { uid, .. } => return Some((vec![*uid], 1)),
        _ => return Some(named()),
    };
    // An operation on items that found none to act on leaves no entry.
    (count > 0).then_some((uids, count))
}

/// Writes the entry of an applied operation: key mailbox ‖ commit time ‖ LSN ‖ index (the parts of a batch share
/// a time and an LSN).
pub(crate) fn record(
    s: &MailStore,
    txn: &mut RwTxn<'_>,
    at: Timestamp,
    lsn: Lsn,
    actor: Option<&Actor>,
    plan: Plan,
    output: &MailOutput,
) -> heed::Result<()> {
    let Some((uids, count)) = affected(&plan, output) else { return Ok(()) };
    let prefix = key(&plan.mailbox, at, lsn, 0);
    let index = s.audit.prefix_iter(txn, &prefix[..32])?.count() as u32;
    let entry = AuditEntry { at, lsn, actor: actor.cloned(), action: plan.action, folder: plan.folder, uids, count };
    let value = crate::codec::encode(&entry).map_err(|e| heed::Error::Encoding(Box::new(e)))?;
    s.audit.put(txn, &key(&plan.mailbox, at, lsn, index), &value)
}

/// Removes the mailbox's entries from before `before` (housekeeping's audit retention); how many.
pub(crate) fn trim(s: &MailStore, txn: &mut RwTxn<'_>, mailbox: &Guid, before: Timestamp) -> heed::Result<u64> {
    let (start, end) = (key(mailbox, Timestamp::from_micros(0), 0, 0), key(mailbox, before, 0, 0));
    let range = (std::ops::Bound::Included(&start[..]), std::ops::Bound::Excluded(&end[..]));
    let keys: Vec<Vec<u8>> =
        s.audit.range(txn, &range)?.map(|e| e.map(|(k, _)| k.to_vec())).collect::<heed::Result<_>>()?;
    for k in &keys {
        s.audit.delete(txn, k)?;
    }
    Ok(keys.len() as u64)
}

/// The mailbox's entries from `from` (inclusive) to `to` (exclusive), oldest first, at most `limit`.
pub(crate) fn read(
    s: &MailStore,
    txn: &RoTxn<'_>,
    mailbox: &Guid,
    from: Timestamp,
    to: Timestamp,
    limit: usize,
) -> Result<Vec<AuditEntry>> {
    let (start, end) = (key(mailbox, from, 0, 0), key(mailbox, to, 0, 0));
    let range = (std::ops::Bound::Included(&start[..]), std::ops::Bound::Excluded(&end[..]));
    let mut out = Vec::new();
    for entry in s.audit.range(txn, &range)?.take(limit) {
        out.push(super::load(entry?.1)?);
    }
    Ok(out)
}

/// A `mail.audit` key: GUID ‖ commit time (µs) ‖ LSN ‖ index, big-endian.
fn key(mailbox: &Guid, at: Timestamp, lsn: Lsn, index: u32) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..16].copy_from_slice(&mailbox.0);
    k[16..24].copy_from_slice(&at.as_micros().to_be_bytes());
    k[24..32].copy_from_slice(&lsn.to_be_bytes());
    k[32..].copy_from_slice(&index.to_be_bytes());
    k
}
