//! The logged operations of the mailbox model ([`MailOp`], [`MailOutput`]) and the one function that applies
//! them, [`apply`], which hands each operation to the module owning what it changes.

mod batch;
mod build;
mod folder;
mod history;
mod housekeep;
mod item;
mod mailbox;
mod recoverable;
mod submission;
mod tx;

use std::time::Duration;

use bytes::Bytes;
use heed::RwTxn;
use serde::{Deserialize, Serialize};

use crate::engine::{ApplyContext, ApplyError};
use crate::error::Error;
use crate::model::MailStore;
use crate::model::audit::{self, Actor};
use crate::model::bodies::NewBody;
use crate::model::envelope::Envelope;
use crate::model::error::MailError;
use crate::model::types::{ContentHash, Flags, FolderId, ItemClass, ItemId, MailboxKind, ModSeq, Quota, Uid};
use crate::time::Timestamp;
use crate::types::Guid;

use tx::Tx;

/// The longest folder name, in bytes.
pub const MAX_FOLDER_NAME: usize = 255;
/// The longest mailbox address, in bytes.
pub const MAX_ADDRESS: usize = 320;
/// The largest message, in bytes (a log record holds one message with room to spare).
pub const MAX_MESSAGE_SIZE: usize = 48 << 20;
/// The most UIDs one operation may name.
pub const MAX_UIDS_PER_OP: usize = 100_000;
/// The longest keyword, in bytes.
pub const MAX_KEYWORD: usize = 128;
/// The most operations one [`MailOp::Batch`] may hold (JMAP servers commonly allow 500 objects per `/set`).
pub const MAX_BATCH_OPS: usize = 10_000;
/// The deepest a search [`Query`](crate::model::search::Query) may nest (`And` / `Or` / `Not` levels, the root
/// counting as one; IMAP clients send a handful).
pub const MAX_QUERY_DEPTH: usize = 64;
/// The most terms (nodes of its tree) a search query may have.
pub const MAX_QUERY_TERMS: usize = 10_000;
/// The most UID ranges a search query's UID sets may hold together (as many as one operation may name UIDs).
pub const MAX_QUERY_UID_RANGES: usize = MAX_UIDS_PER_OP;
/// The most bytes a search query's strings (texts, header names, keywords) may hold together.
pub const MAX_QUERY_TEXT: usize = 64 << 10;

/// How [`MailOp::StoreFlags`] combines the given flags with an item's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlagAction {
    /// Set them (IMAP `+FLAGS`).
    Add,
    /// Clear them (IMAP `-FLAGS`).
    Remove,
    /// Make them the item's flags and keywords (IMAP `FLAGS`).
    Replace,
}

/// What a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// It came into being.
    Created,
    /// It changed.
    Updated,
    /// It is gone (IMAP VANISHED, JMAP destroyed).
    Destroyed,
}

/// What a change was about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Entity {
    /// The mailbox itself.
    Mailbox,
    /// A folder.
    Folder(FolderId),
    /// An item, with the folder and UID it had.
    Item {
        /// The item.
        id: ItemId,
        /// Its folder.
        folder: FolderId,
        /// Its UID there.
        uid: Uid,
    },
}

/// One entry of a mailbox's change log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The MODSEQ of the operation that made it.
    pub modseq: ModSeq,
    /// What happened.
    pub kind: ChangeKind,
    /// To what.
    pub entity: Entity,
}

/// A message waiting in the submission queue for a transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// The submitting mailbox.
    pub mailbox: Guid,
    /// The message, in the mailbox's Outbox.
    pub item: ItemId,
    /// When it was submitted.
    pub submitted: Timestamp,
}

/// A mutation of the mailbox model: the payload of one log record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MailOp {
    /// Creates a mailbox; a mail mailbox also gets the well-known folders and the Recoverable Items subtree.
    CreateMailbox {
        /// Its GUID (chosen before logging).
        guid: Guid,
        /// Its unique address.
        address: String,
        /// Display name.
        display_name: String,
        /// Its kind.
        kind: MailboxKind,
        /// Creation time (chosen before logging).
        created: Timestamp,
        /// UIDVALIDITY proposed for its folders (chosen before logging: the time in seconds); they get this or,
        /// if the database has given it out already, one more than the highest given out (`FolderInfo::uidvalidity`).
        uidvalidity: u32,
    },
    /// Creates a folder under `parent`.
    CreateFolder {
        /// The mailbox.
        mailbox: Guid,
        /// The parent folder.
        parent: FolderId,
        /// The name.
        name: String,
        /// Its UIDVALIDITY proposed (chosen before logging); it gets this or one more than the highest the
        /// database has given out, as for [`MailOp::CreateMailbox`].
        uidvalidity: u32,
    },
    /// Renames a folder and/or moves it under another parent (never into its own subtree).
    RenameFolder {
        /// The mailbox.
        mailbox: Guid,
        /// The folder.
        folder: FolderId,
        /// Its new parent.
        parent: FolderId,
        /// Its new name.
        name: String,
    },
    /// Stores a message (delivery or IMAP APPEND) in a folder.
    Append {
        /// The mailbox.
        mailbox: Guid,
        /// The folder.
        folder: FolderId,
        /// Initial flags.
        flags: Flags,
        /// Initial keywords.
        keywords: Vec<String>,
        /// Received time / INTERNALDATE (chosen before logging).
        received: Timestamp,
        /// Item class.
        class: ItemClass,
        /// A folder-associated (settings) item.
        fai: bool,
        /// The envelope, parsed once before logging so replay never re-parses.
        envelope: Box<Envelope>,
        /// The hash of `raw`, computed before logging ([`ContentHash::of`]).
        content: ContentHash,
        /// The raw RFC 5322 bytes: the record's attachment, written once by the log and kept there (`bodies`);
        /// not part of the operation's encoding, so an operation read back from the log has them empty.
        #[serde(skip)]
        raw: Bytes,
    },
    /// Replaces an item's content (an edited appointment, contact or draft): the new version gets a new UID in
    /// the same folder, keeping flags and keywords. Under litigation hold or single item recovery the original is
    /// kept in Recoverable Items/Versions (until the hold is lifted and its retention has passed); otherwise it is
    /// removed.
    ReplaceItem {
        /// The mailbox.
        mailbox: Guid,
        /// The folder.
        folder: FolderId,
        /// The item's UID.
        uid: Uid,
        /// The new class (an appointment's new times, for example).
        class: ItemClass,
        /// When (decided before logging): the new version's received time and the original's deletion time.
        at: Timestamp,
        /// The new envelope, parsed before logging.
        envelope: Box<Envelope>,
        /// The hash of `raw`, computed before logging ([`ContentHash::of`]).
        content: ContentHash,
        /// The new raw bytes: the record's attachment, like [`MailOp::Append`]'s.
        #[serde(skip)]
        raw: Bytes,
    },
    /// Changes flags and keywords of items of one folder, optionally only of those unchanged since a MODSEQ
    /// (IMAP `UNCHANGEDSINCE`).
    StoreFlags {
        /// The mailbox.
        mailbox: Guid,
        /// The folder.
        folder: FolderId,
        /// The items, by UID (UIDs that do not exist are ignored, as IMAP does).
        uids: Vec<Uid>,
        /// How to combine.
        action: FlagAction,
        /// System flags.
        flags: Flags,
        /// Keywords.
        keywords: Vec<String>,
        /// Leave items whose MODSEQ is above this unchanged and report them.
        unchanged_since: Option<ModSeq>,
    },
    /// Copies (or moves) items to another folder of the same mailbox; they get new UIDs there.
    CopyItems {
        /// The mailbox.
        mailbox: Guid,
        /// Source folder.
        from: FolderId,
        /// The items, by UID in the source folder.
        uids: Vec<Uid>,
        /// Destination folder.
        to: FolderId,
        /// Move instead of copy: the source items are removed.
        remove_source: bool,
    },
    /// Deletes items: they move to Recoverable Items/Deletions (new UIDs there), remembering where they came
    /// from and when.
    DeleteItems {
        /// The mailbox.
        mailbox: Guid,
        /// The folder they are in.
        folder: FolderId,
        /// The items, by UID.
        uids: Vec<Uid>,
        /// When (decided before logging).
        at: Timestamp,
    },
    /// Puts items of Recoverable Items/Deletions back in the folder they were deleted from (or the Inbox if it
    /// is gone).
    RecoverItems {
        /// The mailbox.
        mailbox: Guid,
        /// The items, by UID in Deletions.
        uids: Vec<Uid>,
    },
    /// Permanently removes the items of Recoverable Items/Deletions deleted before `deleted_before`
    /// (the caller computes it from its clock and the retention period before logging). Under single item
    /// recovery they move to Purges instead (kept until [`MailOp::PurgeExpired`] finds their retention passed);
    /// under litigation hold nothing moves. Purges itself is left to `PurgeExpired`.
    PurgeDeleted {
        /// The mailbox.
        mailbox: Guid,
        /// Items deleted before this time are purged.
        deleted_before: Timestamp,
    },
    /// Purges the items of Recoverable Items (Deletions, Purges and Versions) whose retention has ended at `now`
    /// (decided before logging); nothing under litigation hold.
    PurgeExpired {
        /// The mailbox.
        mailbox: Guid,
        /// The current time.
        now: Timestamp,
    },
    /// Hard-deletes items of Recoverable Items/Deletions (a user's purge): with single item recovery or a
    /// litigation hold they move to Purges and stay until their retention ends; otherwise they are removed.
    PurgeItems {
        /// The mailbox.
        mailbox: Guid,
        /// The items, by UID in Deletions.
        uids: Vec<Uid>,
    },
    /// Sets single item recovery, litigation hold and the deleted-item retention of a mailbox.
    SetRetention {
        /// The mailbox.
        mailbox: Guid,
        /// Keep purged items in Purges until their retention ends.
        single_item_recovery: bool,
        /// Purge nothing.
        litigation_hold: bool,
        /// Deleted-item retention (logged as whole microseconds).
        #[serde(with = "crate::time::duration_micros")]
        retention: Duration,
    },
    /// Deletes a folder and its subfolders; their items go to Recoverable Items/Deletions.
    DeleteFolder {
        /// The mailbox.
        mailbox: Guid,
        /// The folder (not a well-known one).
        folder: FolderId,
        /// When (decided before logging).
        at: Timestamp,
    },
    /// Submits a message for sending: it is stored in the Outbox and queued for a transport. Refused over the
    /// prohibit-send quota.
    Submit {
        /// The sending mailbox.
        mailbox: Guid,
        /// When (decided before logging).
        submitted: Timestamp,
        /// The envelope, parsed before logging.
        envelope: Box<Envelope>,
        /// The hash of `raw`, computed before logging ([`ContentHash::of`]).
        content: ContentHash,
        /// The raw RFC 5322 bytes: the record's attachment, written once by the log and kept there (`bodies`);
        /// not part of the operation's encoding, so an operation read back from the log has them empty.
        #[serde(skip)]
        raw: Bytes,
    },
    /// A transport has sent a queued message: it leaves the queue and moves from the Outbox to Sent Items.
    AcknowledgeSubmission {
        /// The sending mailbox.
        mailbox: Guid,
        /// The queued item.
        item: ItemId,
    },
    /// Drops the change log below `below` (bounding the history kept for QRESYNC and JMAP `/changes`); asking
    /// for changes since an older state then answers "cannot calculate changes".
    TrimHistory {
        /// The mailbox.
        mailbox: Guid,
        /// The lowest MODSEQ whose changes are kept.
        below: ModSeq,
    },
    /// Soft-deletes a mailbox: it keeps its content, takes no operation but restore and purge, and its address
    /// is free for a new mailbox.
    DeleteMailbox {
        /// The mailbox.
        mailbox: Guid,
        /// When (decided before logging).
        at: Timestamp,
    },
    /// Restores a soft-deleted mailbox (its address must still be free).
    RestoreMailbox {
        /// The mailbox.
        mailbox: Guid,
    },
    /// Removes a soft-deleted mailbox and everything in it. Refused under litigation hold; under a time-bound one
    /// ([`MailOp::SetHoldDuration`]) until the hold of every item in it has ended, and under single item recovery
    /// until its retention has passed since the mailbox and every item in it were deleted.
    PurgeMailbox {
        /// The mailbox.
        mailbox: Guid,
        /// The current time (decided before logging).
        now: Timestamp,
    },
    /// Sets a mailbox's own quota, or (`None`) returns it to the database default.
    SetQuota {
        /// The mailbox.
        mailbox: Guid,
        /// The quota.
        quota: Option<Quota>,
    },
    /// Removes the items of a folder flagged `\Deleted` (all of them, or those among `uids`) from the user's
    /// view. Without a hold they are gone for good; under litigation hold or single item recovery they move to
    /// Recoverable Items/Purges, deleted from `folder` at `at`, and stay there until the hold is lifted and their
    /// retention has passed ([`MailOp::PurgeExpired`]).
    Expunge {
        /// The mailbox.
        mailbox: Guid,
        /// The folder.
        folder: FolderId,
        /// Restrict to these UIDs (IMAP `UID EXPUNGE`).
        uids: Option<Vec<Uid>>,
        /// When (decided before logging): the deletion time a held item keeps.
        at: Timestamp,
    },
    /// Writes the referenced bodies of an old generation that is mostly dead again (the store's compaction):
    /// from then on they lie in this record, and the old generation is deleted once nothing refers to it. Built
    /// by the store ([`MailStore::compaction`](crate::model::MailStore::compaction)), which the engine runs in the
    /// background; a body expunged or moved since it was read is left alone.
    RelocateBodies {
        /// The generation the bodies leave.
        generation: u64,
        /// The bodies in the order their bytes follow each other in `raw`: content hash and length.
        contents: Vec<(ContentHash, u32)>,
        /// Their bytes: the record's attachment, like [`MailOp::Append`]'s.
        #[serde(skip)]
        raw: Bytes,
    },
    /// `op`, performed by `actor`: applied exactly as `op` alone, and recorded with the actor in the audit trail
    /// (`model::audit`). Build it with [`MailOp::by`]; it does not nest.
    Audited {
        /// Who performs it.
        actor: Actor,
        /// The operation.
        op: Box<MailOp>,
    },
    /// Records an access to items or a folder in the audit trail (see [`MailOp::audit_access`]); changes nothing
    /// else. Refused for a folder that does not exist.
    RecordAccess {
        /// The mailbox.
        mailbox: Guid,
        /// The folder.
        folder: FolderId,
        /// The items read, by UID (none: the folder was opened).
        uids: Vec<Uid>,
    },
    /// The periodic housekeeping of one mailbox, as the [`Housekeeper`](crate::model::Housekeeper) runs it:
    /// purges what Recoverable Items holds past its retention at `now` (as [`MailOp::PurgeExpired`]: nothing
    /// under litigation hold), trims the change log to its newest `keep_changes` MODSEQs (as
    /// [`MailOp::TrimHistory`]), and records `now` as the mailbox's `housekept` time, so that a scheduler resuming
    /// after a crash or a failover (the time replicates with the log) does not run it again before it is due.
    Housekeep {
        /// The mailbox.
        mailbox: Guid,
        /// The current time (decided before logging).
        now: Timestamp,
        /// How many of the newest MODSEQs keep their changes (at least 1).
        keep_changes: u64,
        /// Audit entries from before this time are removed (the audit retention, decided before logging).
        audit_before: Timestamp,
    },
    /// Several operations of one mailbox in one record, applied in order, all or none; build it with
    /// [`MailOp::batch`], which checks nothing and moves the operations' messages into `raw` (the commit checks).
    Batch {
        /// The operations, in order (none of them a batch).
        ops: Vec<MailOp>,
        /// Per operation, the length of the message it stores (0 for one storing none): their bytes follow each
        /// other in `raw` in this order.
        lengths: Vec<u32>,
        /// The messages' bytes: the record's attachment, like [`MailOp::Append`]'s.
        #[serde(skip)]
        raw: Bytes,
    },
    /// Makes a mailbox's litigation hold time-bound (Exchange's `LitigationHoldDuration`): each item is held only
    /// until `duration` after it was received; `None` holds everything for as long as the hold is on. Judged at
    /// each operation's own time: an expunge or an edit at `at`, a purge at its `now` (and
    /// [`MailOp::PurgeDeleted`] at its `deleted_before`, never later than the caller's clock, so an item is kept
    /// at least as long as its hold says). Set the hold itself with [`MailOp::SetRetention`].
    SetHoldDuration {
        /// The mailbox.
        mailbox: Guid,
        /// How long after its arrival an item stays held (logged as whole microseconds); `None`: indefinitely.
        #[serde(with = "crate::time::option_duration_micros")]
        duration: Option<Duration>,
    },
}

/// What applying a [`MailOp`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MailOutput {
    /// A mailbox was created.
    MailboxCreated {
        /// Its root folder.
        root: FolderId,
        /// The MODSEQ of the creation.
        modseq: ModSeq,
    },
    /// A folder was created.
    FolderCreated {
        /// Its id.
        id: FolderId,
        /// The MODSEQ of the creation.
        modseq: ModSeq,
    },
    /// A folder was renamed or moved.
    FolderRenamed {
        /// The MODSEQ of the change.
        modseq: ModSeq,
    },
    /// A message was stored (IMAP APPENDUID).
    Appended {
        /// Its item id.
        item: ItemId,
        /// Its UID.
        uid: Uid,
        /// The folder's UIDVALIDITY.
        uidvalidity: u32,
        /// Its MODSEQ.
        modseq: ModSeq,
    },
    /// An item was replaced by a new version.
    Replaced {
        /// The new version's UID.
        uid: Uid,
        /// Where the original went: its UID in Versions under litigation hold or single item recovery.
        original_in_versions: Option<Uid>,
        /// The MODSEQ of the change.
        modseq: ModSeq,
    },
    /// Flags were stored.
    FlagsStored {
        /// The MODSEQ of the change, if anything changed.
        modseq: Option<ModSeq>,
        /// Items changed, with their new MODSEQ.
        updated: Vec<(Uid, ModSeq)>,
        /// Items left alone because they changed after `unchanged_since` (IMAP `MODIFIED`).
        modified: Vec<Uid>,
    },
    /// Items were copied or moved (IMAP COPYUID).
    Copied {
        /// The destination folder's UIDVALIDITY.
        uidvalidity: u32,
        /// `(source UID, destination UID)` for every item copied.
        mapping: Vec<(Uid, Uid)>,
        /// The MODSEQ of the change, if anything was copied.
        modseq: Option<ModSeq>,
    },
    /// Items were deleted to Recoverable Items.
    DeletedToRecoverable {
        /// `(UID in the folder, UID in Deletions)` per item.
        mapping: Vec<(Uid, Uid)>,
        /// The MODSEQ of the change, if anything was deleted.
        modseq: Option<ModSeq>,
    },
    /// Items were recovered.
    Recovered {
        /// `(UID in Deletions, folder, UID there)` per item.
        mapping: Vec<(Uid, FolderId, Uid)>,
        /// The MODSEQ of the change, if anything was recovered.
        modseq: Option<ModSeq>,
    },
    /// A folder (and its subfolders) was deleted.
    FolderDeleted {
        /// Folders removed, the folder itself first.
        folders: Vec<FolderId>,
        /// Items moved to Recoverable Items.
        items: u64,
        /// The MODSEQ of the change.
        modseq: ModSeq,
    },
    /// A mailbox setting (quota, retention, holds) was set.
    SettingsChanged,
    /// A message was submitted.
    Submitted {
        /// Its item id in the Outbox.
        item: ItemId,
        /// Its UID there.
        uid: Uid,
    },
    /// A submission was acknowledged; the message is in Sent Items.
    Sent {
        /// Its UID in Sent Items.
        uid: Uid,
    },
    /// The change log was trimmed.
    HistoryTrimmed {
        /// Change entries removed.
        removed: u64,
    },
    /// A mailbox was soft-deleted, restored or purged.
    MailboxChanged,
    /// Items were expunged (or purged).
    Expunged {
        /// Their UIDs.
        uids: Vec<Uid>,
        /// The MODSEQ of the change, if anything was expunged.
        modseq: Option<ModSeq>,
    },
    /// Bodies were relocated by a compaction.
    Relocated {
        /// How many moved (the others were gone or elsewhere by then).
        moved: u32,
    },
    /// A mailbox was housekept.
    Housekept {
        /// Items purged from Recoverable Items.
        purged: u64,
        /// Change entries trimmed.
        trimmed: u64,
    },
    /// An access was recorded in the audit trail.
    Recorded,
    /// A batch was applied: each operation's output, in order.
    Batch(Vec<MailOutput>),
}

/// What applying an operation returns.
type Applied = Result<MailOutput, ApplyError<MailError>>;

/// The message an operation stores ([`MailOp::Append`], [`MailOp::ReplaceItem`], [`MailOp::Submit`]): when it
/// arrives, its parsed envelope, the hash of its bytes, and its body — the bytes themselves as the constructors
/// prepare it before logging (`Message<Vec<u8>>`), where the log put them when it is applied
/// (`Message<NewBody>`).
struct Message<B> {
    received: Timestamp,
    envelope: Box<Envelope>,
    content: ContentHash,
    raw: B,
}

fn reject(e: MailError) -> ApplyError<MailError> {
    ApplyError::Reject(e)
}

/// An error from a read helper of [`MailStore`] used inside apply: storage errors stay storage errors, a model
/// refusal stays a refusal. (The helpers used fail only in the state store; anything else would be damage they
/// read, a storage failure too.)
fn storage(e: Error) -> ApplyError<MailError> {
    match e {
        Error::State(e) => ApplyError::Storage(e),
        Error::Mail(e) => ApplyError::Reject(e),
        other => ApplyError::Storage(heed::Error::Decoding(Box::new(other))),
    }
}

/// Applies one operation. Deterministic: it reads only the transaction (with what the transaction's earlier
/// operations gathered for it, see `bodies`) and the operation.
pub(crate) fn apply(s: &MailStore, txn: &mut RwTxn<'_>, ctx: ApplyContext<'_>, op: MailOp) -> Applied {
    apply_as(s, txn, ctx, op, None)
}

/// [`apply`] with who performs the operation (`MailOp::Audited`), and its audit entry written if its kind is
/// audited.
fn apply_as(s: &MailStore, txn: &mut RwTxn<'_>, ctx: ApplyContext<'_>, op: MailOp, actor: Option<&Actor>) -> Applied {
    op.validate_attached(ctx.attachment.len()).map_err(reject)?;
    let plan = audit::plan(&op);
    let output = apply_one(s, txn, ctx, op, actor)?;
    if let Some(plan) = plan {
        audit::record(s, txn, ctx.committed, ctx.lsn, actor, plan, &output)?;
    }
    Ok(output)
}

/// Applies one operation (a batch's parts, an audited operation's inner one, through [`apply_as`]).
fn apply_one(s: &MailStore, txn: &mut RwTxn<'_>, ctx: ApplyContext<'_>, op: MailOp, actor: Option<&Actor>) -> Applied {
    // The message an operation stores is its record's attachment; its body id is the record's LSN.
    let len = u32::try_from(ctx.attachment.len()).map_err(|_| {
        reject(MailError::MessageTooLarge { size: ctx.attachment.len() as u64, limit: MAX_MESSAGE_SIZE as u64 })
    })?;
    let raw = NewBody { len, at: ctx.attachment_at, body: ctx.lsn };
    match op {
        MailOp::CreateMailbox { guid, address, display_name, kind, created, uidvalidity } => {
            mailbox::create(Tx::new(s, txn, guid), address, display_name, kind, created, uidvalidity)
        }
        MailOp::CreateFolder { mailbox, parent, name, uidvalidity } => {
            folder::create(Tx::new(s, txn, mailbox), parent, name, uidvalidity)
        }
        MailOp::RenameFolder { mailbox, folder, parent, name } => {
            folder::rename(Tx::new(s, txn, mailbox), folder, parent, name)
        }
        MailOp::Append { mailbox, folder, flags, keywords, received, class, fai, envelope, content, .. } => {
            let message = Message { received, envelope, content, raw };
            item::append(Tx::new(s, txn, mailbox), folder, flags, keywords, class, fai, message)
        }
        MailOp::ReplaceItem { mailbox, folder, uid, class, at, envelope, content, .. } => {
            let message = Message { received: at, envelope, content, raw };
            item::replace(Tx::new(s, txn, mailbox), folder, uid, class, message)
        }
        MailOp::StoreFlags { mailbox, folder, uids, action, flags, keywords, unchanged_since } => {
            item::store_flags(Tx::new(s, txn, mailbox), folder, uids, unchanged_since, action, flags, keywords)
        }
        MailOp::CopyItems { mailbox, from, uids, to, remove_source } => {
            item::copy(Tx::new(s, txn, mailbox), from, uids, to, remove_source)
        }
        MailOp::DeleteItems { mailbox, folder, uids, at } => {
            recoverable::delete(Tx::new(s, txn, mailbox), folder, uids, at)
        }
        MailOp::RecoverItems { mailbox, uids } => recoverable::recover(Tx::new(s, txn, mailbox), uids),
        MailOp::PurgeDeleted { mailbox, deleted_before } => {
            recoverable::purge_deleted(Tx::new(s, txn, mailbox), deleted_before)
        }
        MailOp::PurgeExpired { mailbox, now } => recoverable::purge_expired(Tx::new(s, txn, mailbox), now),
        MailOp::PurgeItems { mailbox, uids } => recoverable::purge(Tx::new(s, txn, mailbox), uids),
        MailOp::SetRetention { mailbox, single_item_recovery, litigation_hold, retention } => {
            mailbox::set_retention(Tx::new(s, txn, mailbox), single_item_recovery, litigation_hold, retention)
        }
        MailOp::DeleteFolder { mailbox, folder, at } => folder::delete(Tx::new(s, txn, mailbox), folder, at),
        MailOp::Submit { mailbox, submitted, envelope, content, .. } => {
            let message = Message { received: submitted, envelope, content, raw };
            submission::submit(Tx::new(s, txn, mailbox), message)
        }
        MailOp::AcknowledgeSubmission { mailbox, item } => submission::acknowledge(Tx::new(s, txn, mailbox), item),
        MailOp::TrimHistory { mailbox, below } => history::trim(Tx::new(s, txn, mailbox), below),
        MailOp::DeleteMailbox { mailbox, at } => mailbox::delete(Tx::new(s, txn, mailbox), at),
        MailOp::RestoreMailbox { mailbox } => mailbox::restore(Tx::new(s, txn, mailbox)),
        MailOp::PurgeMailbox { mailbox, now } => mailbox::purge(Tx::new(s, txn, mailbox), now),
        MailOp::SetQuota { mailbox, quota } => mailbox::set_quota(Tx::new(s, txn, mailbox), quota),
        MailOp::SetHoldDuration { mailbox, duration } => mailbox::set_hold_duration(Tx::new(s, txn, mailbox), duration),
        MailOp::Expunge { mailbox, folder, uids, at } => item::expunge(Tx::new(s, txn, mailbox), folder, uids, at),
        MailOp::Housekeep { mailbox, now, keep_changes, audit_before } => {
            housekeep::apply(s, txn, mailbox, now, keep_changes, audit_before)
        }
        MailOp::Batch { ops, lengths, .. } => batch::apply(s, txn, ctx, ops, lengths, actor),
        MailOp::Audited { actor, op } => apply_as(s, txn, ctx, *op, Some(&actor)),
        MailOp::RecordAccess { mailbox, folder, .. } => {
            Tx::new(s, txn, mailbox).folder(folder)?;
            Ok(MailOutput::Recorded)
        }
        MailOp::RelocateBodies { generation, contents, .. } => {
            let t = s.body_tables();
            if contents.iter().map(|(_, len)| u64::from(*len)).sum::<u64>() != u64::from(raw.len) {
                return Err(reject(MailError::ContentHashMismatch { size: raw.len as usize }));
            }
            let mut at = raw.at;
            let mut moved = 0;
            for (hash, len) in contents {
                moved += u32::from(t.relocate(txn, &hash.0, len, generation, at)?);
                at.offset += u64::from(len);
            }
            Ok(MailOutput::Relocated { moved })
        }
    }
}
