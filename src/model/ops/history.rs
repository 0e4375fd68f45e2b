//! Trimming a mailbox's change log, which bounds the history kept for QRESYNC and JMAP `/changes`.

use crate::model::keys;
use crate::model::types::ModSeq;

use super::tx::Tx;
use super::{Applied, MailOutput};

/// Applies [`MailOp::TrimHistory`](super::MailOp::TrimHistory).
pub(super) fn trim(mut tx: Tx<'_, '_>, below: ModSeq) -> Applied {
    let mailbox = tx.guid;
    let mut m = tx.mailbox()?;
    // Never beyond the present: the changes of the newest state stay answerable.
    let below = below.min(m.highest_modseq + 1);
    let start = keys::change(&mailbox, 0, 0);
    let end = keys::change(&mailbox, below, 0);
    let range = (std::ops::Bound::Included(&start[..]), std::ops::Bound::Excluded(&end[..]));
    let keys: Vec<Vec<u8>> =
        tx.s.changes.range(tx.txn, &range)?.map(|e| e.map(|(k, _)| k.to_vec())).collect::<heed::Result<_>>()?;
    for k in &keys {
        tx.s.changes.delete(tx.txn, k)?;
    }
    m.history_floor = m.history_floor.max(below);
    tx.put_mailbox(&m)?;
    Ok(MailOutput::HistoryTrimmed { removed: keys.len() as u64 })
}
