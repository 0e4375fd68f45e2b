//! Atomic batches ([`MailOp::Batch`]): several operations of one mailbox in one log record, applied in order
//! and all or none.
//!
//! A batch is an operation like any other: one record, validated before it is logged, applied by the one
//! [`apply`](super::apply) (which hands each part back to it), so recovery, passive copies and restore replay it
//! the same way. The messages its parts store travel as one attachment, their bytes back to back in the order of
//! the parts, with each part's length in the batch (`lengths`): applying a part gives it its own slice of the
//! record's attachment and the place where that slice lies, exactly what the part would have had as a record of its
//! own. A refused part refuses the batch ([`MailError::BatchRefused`], naming the part); the engine then rolls back
//! what the parts before it wrote, so nothing of the batch is applied, and the record stays in the log as a no-op.
//!
//! One mailbox per batch: a mailbox is what moves between databases, so operations bound to each other must stay
//! in one mailbox to stay bound wherever it goes; and it is the key every change notification of the batch falls
//! under.

use heed::RwTxn;

use crate::engine::{ApplyContext, ApplyError, Place};
use crate::model::MailStore;
use crate::model::audit::Actor;
use crate::model::error::MailError;

use super::{Applied, MAX_BATCH_OPS, MAX_MESSAGE_SIZE, MailOp, MailOutput, reject};

impl MailOp {
    /// Several operations of one mailbox as one: committed in one log record, applied in order, all or none (a
    /// JMAP `Email/set`, an IMAP `MULTIAPPEND`, a client's "file these and flag those"). The answer is
    /// [`MailOutput::Batch`] with each operation's output in order; a refused operation refuses the whole batch
    /// with [`MailError::BatchRefused`], which names it by its index and says why.
    ///
    /// The messages the operations store move into the batch (their bytes become the record's attachment, back
    /// to back). Checked at commit, before anything is logged: 1 to [`MAX_BATCH_OPS`] operations, all naming the
    /// same mailbox, no batch inside a batch, each message at most [`MAX_MESSAGE_SIZE`] and all of them together
    /// at most [`MAX_MESSAGE_SIZE`] too (the record must fit in the log: [`Error::RecordTooLarge`] otherwise).
    ///
    /// [`Error::RecordTooLarge`]: crate::Error::RecordTooLarge
    pub fn batch(ops: impl IntoIterator<Item = MailOp>) -> MailOp {
        let mut raw = Vec::new();
        let mut parts = Vec::new();
        let mut lengths = Vec::new();
        for mut op in ops {
            let body = op.message_bytes_mut().map(std::mem::take).unwrap_or_default();
            // A part above the limit is refused by `validate`; its length saturates rather than wrapping.
            lengths.push(u32::try_from(body.len()).unwrap_or(u32::MAX));
            raw.extend_from_slice(&body);
            parts.push(op);
        }
        MailOp::Batch { ops: parts, lengths, raw: raw.into() }
    }

    /// The bytes of the message the operation stores, for [`MailOp::batch`] to take.
    fn message_bytes_mut(&mut self) -> Option<&mut bytes::Bytes> {
        match self {
            MailOp::Append { raw, .. } | MailOp::ReplaceItem { raw, .. } | MailOp::Submit { raw, .. } => Some(raw),
            MailOp::Audited { op, .. } => op.message_bytes_mut(),
            _ => None,
        }
    }

    /// The operation itself, or the one an audited operation wraps.
    fn unwrapped(&self) -> &MailOp {
        match self {
            MailOp::Audited { op, .. } => op,
            op => op,
        }
    }
}

/// The checks of a batch that need no state: its shape, then each part's own checks. `attached`: the bytes of its
/// messages (the batch's `raw` before logging, the record's attachment when applied).
pub(super) fn validate(ops: &[MailOp], lengths: &[u32], attached: usize) -> Result<(), MailError> {
    let invalid = |rule: String| Err(MailError::InvalidBatch { rule });
    if ops.is_empty() || ops.len() > MAX_BATCH_OPS {
        return invalid(format!("has {} operations; a batch holds 1 to {MAX_BATCH_OPS}", ops.len()));
    }
    if lengths.len() != ops.len() {
        return invalid(format!("gives {} message lengths for {} operations", lengths.len(), ops.len()));
    }
    let total: u64 = lengths.iter().map(|l| u64::from(*l)).sum();
    if total != attached as u64 {
        return invalid(format!("says its messages have {total} bytes, but {attached} are attached"));
    }
    if total > MAX_MESSAGE_SIZE as u64 {
        return Err(MailError::BatchTooLarge { size: total, limit: MAX_MESSAGE_SIZE as u64 });
    }
    let mailbox = ops[0].mailbox();
    for (index, (op, len)) in ops.iter().zip(lengths).enumerate() {
        let refused = |cause| MailError::BatchRefused { index, cause: Box::new(cause) };
        match op.unwrapped() {
            MailOp::Batch { .. } => return invalid(format!("holds a batch at {index}; batches do not nest")),
            MailOp::RelocateBodies { .. } => return invalid(format!("holds the store's own relocation at {index}")),
            _ if op.mailbox() != mailbox => {
                return invalid(format!("changes another mailbox at {index}; a batch changes one mailbox"));
            }
            MailOp::Append { .. } | MailOp::ReplaceItem { .. } | MailOp::Submit { .. } => {}
            _ if *len != 0 => return invalid(format!("attaches {len} bytes to operation {index}, which stores none")),
            _ => {}
        }
        op.validate_attached(*len as usize).map_err(refused)?;
    }
    Ok(())
}

/// Checks, before logging, that each part's content hash is the hash of its own bytes.
pub(super) fn check_content(ops: &[MailOp], lengths: &[u32], raw: &[u8]) -> Result<(), MailError> {
    let mut rest = raw;
    for (index, (op, len)) in ops.iter().zip(lengths).enumerate() {
        let Some((bytes, after)) = rest.split_at_checked(*len as usize) else {
            return Err(MailError::InvalidBatch { rule: format!("attaches fewer bytes than operation {index} says") });
        };
        op.check_content_of(bytes).map_err(|cause| MailError::BatchRefused { index, cause: Box::new(cause) })?;
        rest = after;
    }
    Ok(())
}

/// Applies the parts in order, each with its own slice of the record's attachment; the first refusal refuses the
/// batch (the engine rolls back what the parts before it wrote). The batch was validated against the attachment
/// ([`validate`]) before it got here.
pub(super) fn apply(
    s: &MailStore,
    txn: &mut RwTxn<'_>,
    ctx: ApplyContext<'_>,
    ops: Vec<MailOp>,
    lengths: Vec<u32>,
    actor: Option<&Actor>,
) -> Applied {
    let mut outputs = Vec::with_capacity(ops.len());
    let mut offset = 0usize;
    for (index, (op, len)) in ops.into_iter().zip(lengths).enumerate() {
        let end = offset + len as usize;
        let Some(attachment) = ctx.attachment.get(offset..end) else {
            return Err(reject(MailError::InvalidBatch {
                rule: format!("attaches too few bytes for operation {index}"),
            }));
        };
        let place = Place { offset: ctx.attachment_at.offset + offset as u64, ..ctx.attachment_at };
        let part = ApplyContext { attachment, attachment_at: place, ..ctx };
        match super::apply_as(s, txn, part, op, actor) {
            Ok(output) => outputs.push(output),
            Err(ApplyError::Reject(cause)) => {
                return Err(reject(MailError::BatchRefused { index, cause: Box::new(cause) }));
            }
            Err(storage) => return Err(storage),
        }
        offset = end;
    }
    Ok(MailOutput::Batch(outputs))
}
