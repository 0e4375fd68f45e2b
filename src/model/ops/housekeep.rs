//! The periodic housekeeping of one mailbox ([`MailOp::Housekeep`](super::MailOp::Housekeep)): the retention
//! purge of Recoverable Items, the trim of the change log, and the time it last ran. One operation, so that the
//! three happen together or not at all and the time replicates with what it records.

use heed::RwTxn;

use crate::model::MailStore;
use crate::model::audit;
use crate::model::types::ModSeq;
use crate::time::Timestamp;
use crate::types::Guid;

use super::tx::Tx;
use super::{Applied, MailOutput, history, recoverable};

/// Applies [`MailOp::Housekeep`](super::MailOp::Housekeep).
pub(super) fn apply(
    s: &MailStore,
    txn: &mut RwTxn<'_>,
    mailbox: Guid,
    now: Timestamp,
    keep_changes: u64,
    audit_before: Timestamp,
) -> Applied {
    let purged = match recoverable::purge_expired(Tx::new(s, txn, mailbox), now)? {
        MailOutput::Expunged { uids, .. } => uids.len() as u64,
        _ => 0,
    };
    let highest: ModSeq = Tx::new(s, txn, mailbox).mailbox()?.highest_modseq;
    let below = highest.saturating_sub(keep_changes).saturating_add(1);
    let trimmed = match history::trim(Tx::new(s, txn, mailbox), below)? {
        MailOutput::HistoryTrimmed { removed } => removed,
        _ => 0,
    };
    audit::trim(s, txn, &mailbox, audit_before)?;
    let mut tx = Tx::new(s, txn, mailbox);
    let mut m = tx.mailbox()?;
    m.housekept = Some(now);
    tx.put_mailbox(&m)?;
    Ok(MailOutput::Housekept { purged, trimmed })
}
