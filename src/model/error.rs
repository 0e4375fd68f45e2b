//! Why the mailbox model refused an operation: [`MailError`], the [`StateMachine::Rejection`] of [`MailStore`].
//!
//! Every refusal is deterministic (replay refuses the same operation the same way) and changes nothing. The
//! variants carry the ids and names involved, so that a server maps them to its protocol's answers (IMAP
//! `[NONEXISTENT]`, `[ALREADYEXISTS]`, `[OVERQUOTA]`, JMAP `notFound`, `alreadyExists`, `overQuota`) without
//! reading prose. They reach callers as [`Error::Mail`](crate::Error::Mail).
//!
//! [`StateMachine::Rejection`]: crate::StateMachine::Rejection
//! [`MailStore`]: super::MailStore

use crate::model::types::{FolderId, FolderRole, ItemId, Uid};
use crate::types::Guid;

/// The quota an operation would exceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuotaKind {
    /// Above it, the mailbox may not submit (send) messages.
    ProhibitSend,
    /// Above it, the mailbox receives nothing (deliveries and appends are refused).
    ProhibitSendReceive,
    /// The hard limit of Recoverable Items (deleted items and kept versions).
    RecoverableItems,
}

impl std::fmt::Display for QuotaKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QuotaKind::ProhibitSend => "prohibit-send",
            QuotaKind::ProhibitSendReceive => "prohibit-send-receive",
            QuotaKind::RecoverableItems => "Recoverable Items",
        })
    }
}

/// Why the mailbox model refused an operation (or a model lookup failed). Nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailError {
    // Missing objects.
    /// The mailbox does not exist.
    #[error("mailbox {mailbox} does not exist")]
    NoSuchMailbox {
        /// The mailbox asked for.
        mailbox: Guid,
    },
    /// The mailbox is soft-deleted: it takes no operation until it is restored.
    #[error("mailbox {mailbox} is deleted; restore it first")]
    MailboxDeleted {
        /// The mailbox.
        mailbox: Guid,
    },
    /// The folder does not exist in the mailbox.
    #[error("folder {folder} does not exist in mailbox {mailbox}")]
    NoSuchFolder {
        /// The mailbox.
        mailbox: Guid,
        /// The folder asked for.
        folder: FolderId,
    },
    /// No folder has that path in the mailbox.
    #[error("folder {path:?} does not exist in mailbox {mailbox}")]
    NoSuchFolderPath {
        /// The mailbox.
        mailbox: Guid,
        /// The path asked for (such as `"Inbox/Lists"`).
        path: String,
    },
    /// The mailbox has no folder with that well-known role (a public folder mailbox has no mail folders).
    #[error("mailbox {mailbox} has no {role:?} folder")]
    NoWellKnownFolder {
        /// The mailbox.
        mailbox: Guid,
        /// The role asked for.
        role: FolderRole,
    },
    /// No item has that UID in the folder.
    #[error("no item has UID {uid} in folder {folder} of mailbox {mailbox}")]
    NoSuchItem {
        /// The mailbox.
        mailbox: Guid,
        /// The folder.
        folder: FolderId,
        /// The UID asked for.
        uid: Uid,
    },
    /// The item is not queued for submission (never submitted, acknowledged already, or withdrawn).
    #[error("item {item} of mailbox {mailbox} is not queued for submission")]
    NoSuchSubmission {
        /// The mailbox.
        mailbox: Guid,
        /// The item asked for.
        item: ItemId,
    },

    // Objects that exist already.
    /// A mailbox with that GUID exists already.
    #[error("mailbox {mailbox} already exists")]
    MailboxExists {
        /// The mailbox.
        mailbox: Guid,
    },
    /// Another mailbox (of this database, or of another one of the store) has that address.
    #[error("a mailbox with address {address:?} already exists")]
    AddressTaken {
        /// The address (as given).
        address: String,
    },
    /// The parent folder has a child of that name already (names compare case-insensitively).
    #[error("folder {name:?} already exists in folder {parent} of mailbox {mailbox}")]
    FolderExists {
        /// The mailbox.
        mailbox: Guid,
        /// The parent folder.
        parent: FolderId,
        /// The name asked for.
        name: String,
    },

    // Limits.
    /// The operation would take the mailbox over one of its quotas.
    #[error("quota exceeded: {quota} quota of mailbox {address}: {size} bytes would exceed the limit of {limit} bytes")]
    QuotaExceeded {
        /// The mailbox's address.
        address: String,
        /// Which quota.
        quota: QuotaKind,
        /// The size the operation would reach.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The message is larger than the mailbox accepts (its quota's maximum message size), or larger than any
    /// message may be ([`MAX_MESSAGE_SIZE`](super::MAX_MESSAGE_SIZE)).
    #[error("message of {size} bytes exceeds the maximum message size of {limit} bytes")]
    MessageTooLarge {
        /// The message's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A search query was refused before anything was read: it passes a limit or names no header field.
    #[error("invalid search query: {0}")]
    InvalidQuery(crate::model::search::QueryError),
    /// The item's listing record would pass its limits (2 GiB of strings, 2^32 entries in a list: say, keywords
    /// added by a great many operations).
    #[error("item {item} of mailbox {mailbox} would pass the limits of its listing record")]
    ItemTooLarge {
        /// The mailbox.
        mailbox: Guid,
        /// The item.
        item: ItemId,
    },
    /// The folder has given out every UID (2^32 - 1); its items must move to a new folder.
    #[error("folder {folder} of mailbox {mailbox} has used up its UIDs")]
    UidsExhausted {
        /// The mailbox.
        mailbox: Guid,
        /// The folder.
        folder: FolderId,
    },
    /// The operation names more UIDs than one operation may.
    #[error("{count} UIDs in one operation, at most {max}")]
    TooManyUids {
        /// UIDs named.
        count: usize,
        /// The limit.
        max: usize,
    },

    // What the folder structure forbids.
    /// A well-known folder (Inbox, Sent Items, Recoverable Items…) cannot be renamed, moved or deleted.
    #[error("{name:?} is a well-known folder and cannot be renamed, moved or deleted")]
    WellKnownFolder {
        /// The mailbox.
        mailbox: Guid,
        /// The folder.
        folder: FolderId,
        /// Its name.
        name: String,
    },
    /// The folder would move into its own subtree.
    #[error("cannot move folder {name:?} into its own subtree")]
    FolderCycle {
        /// The mailbox.
        mailbox: Guid,
        /// The folder.
        folder: FolderId,
        /// Its name.
        name: String,
    },
    /// The root folder holds folders, not items.
    #[error("the root folder of mailbox {mailbox} holds no items")]
    RootFolder {
        /// The mailbox.
        mailbox: Guid,
    },
    /// The folder is in Recoverable Items, which only the recoverable-items operations change: items enter it
    /// by `DeleteItems` (and versions kept under a hold), leave it by `RecoverItems`, `PurgeItems`, `PurgeDeleted`
    /// and `PurgeExpired`; no folder is created in or moved into it, no item stored, edited or copied there.
    #[error(
        "folder {folder} of mailbox {mailbox} is in Recoverable Items: only DeleteItems, RecoverItems and the \
         purge operations change it"
    )]
    RecoverableItems {
        /// The mailbox.
        mailbox: Guid,
        /// The folder in (or under) Recoverable Items.
        folder: FolderId,
    },
    /// A copy or move whose source and destination are the same folder.
    #[error("source and destination folder are the same ({folder})")]
    SameFolder {
        /// The folder.
        folder: FolderId,
    },

    // The mailbox's life cycle.
    /// Restoring or purging a mailbox that is not soft-deleted.
    #[error("mailbox {mailbox} is not deleted (delete it first)")]
    MailboxNotDeleted {
        /// The mailbox.
        mailbox: Guid,
    },
    /// A mailbox on litigation hold is not purged.
    #[error("mailbox {mailbox} is on litigation hold and cannot be purged")]
    LitigationHold {
        /// The mailbox.
        mailbox: Guid,
    },
    /// A mailbox under single item recovery is not purged before the retention of what it holds has passed, nor
    /// one under a time-bound litigation hold before the hold of its newest item has ended.
    #[error(
        "mailbox {mailbox} keeps its content until {until} (single item recovery or a time-bound hold); purge it after that"
    )]
    RetentionNotPassed {
        /// The mailbox.
        mailbox: Guid,
        /// When the last of its items' retention ends.
        until: crate::time::Timestamp,
    },

    // Malformed input, refused before the operation is logged.
    /// A mailbox address must be `local@domain` (RFC 5321: a local part of 1 to 64 bytes, a domain of dot-separated
    /// labels or an address literal in brackets), at most 320 bytes, without white space or control characters.
    #[error("mailbox address {address:?} {rule}")]
    InvalidAddress {
        /// The address given.
        address: String,
        /// The rule it breaks.
        rule: String,
    },
    /// A display name must have at most 320 printable bytes.
    #[error("display name too long or not printable")]
    InvalidDisplayName,
    /// A folder name breaks the naming rules (1 to 255 bytes, no `/`, no control characters, not `.` or `..`,
    /// no leading or trailing white space).
    #[error("folder name {name:?} {rule}")]
    InvalidFolderName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        rule: String,
    },
    /// A keyword is not an IMAP atom of 1 to 128 bytes (nor a system flag, which starts with `\`).
    #[error("keyword {keyword:?} is not an IMAP atom of 1 to {max} bytes", max = super::ops::MAX_KEYWORD)]
    InvalidKeyword {
        /// The keyword given.
        keyword: String,
    },
    /// UIDVALIDITY 0 is not allowed.
    #[error("UIDVALIDITY must not be 0")]
    InvalidUidValidity,
    /// The database has given out every UIDVALIDITY up to `u32::MAX` (folders are created faster than one a
    /// second on average since 1970): no new folder can get one no folder had before. Create it in another
    /// database.
    #[error("this database has given out every UIDVALIDITY; create the folder or mailbox in another database")]
    UidValidityExhausted,
    /// The quota's limits are inconsistent.
    #[error("invalid quota: {rule}")]
    InvalidQuota {
        /// The rule they break.
        rule: &'static str,
    },
    /// An audited operation that breaks the rules of [`MailOp::Audited`](super::MailOp::Audited).
    #[error("invalid audited operation: {rule}")]
    InvalidAudit {
        /// The rule broken.
        rule: &'static str,
    },
    /// Housekeeping asked for something it cannot do.
    #[error("invalid housekeeping: {rule}")]
    InvalidHousekeeping {
        /// The rule broken.
        rule: &'static str,
    },
    /// The content hash an operation carries is not the hash of its message's bytes (an operation built by hand).
    #[error("the content hash is not the hash of the message's {size} bytes")]
    ContentHashMismatch {
        /// The message's size.
        size: usize,
    },

    // Batches.
    /// An operation of a [`MailOp::Batch`](super::MailOp::Batch) was refused, so the batch was: nothing of it was
    /// applied. `cause` is the operation's own refusal (match it as if the operation had been committed alone);
    /// fix or drop the operation at `index` and commit the batch again.
    #[error("operation {index} of the batch was refused, so nothing of the batch was applied: {cause}")]
    BatchRefused {
        /// The operation's position in the batch, from 0.
        index: usize,
        /// Why it was refused.
        cause: Box<MailError>,
    },
    /// A batch that breaks the rules of batches (1 to `MAX_BATCH_OPS` operations of one mailbox, none of them a
    /// batch): split it, or commit the odd operation alone.
    #[error("the batch {rule}")]
    InvalidBatch {
        /// The rule it breaks, with the operation's index where one is at fault.
        rule: String,
    },
    /// The messages of a batch together are larger than one record holds: commit them in several batches.
    #[error(
        "the batch's messages have {size} bytes together, more than the {limit} bytes one batch may hold; split it"
    )]
    BatchTooLarge {
        /// Their size.
        size: u64,
        /// The limit ([`MAX_MESSAGE_SIZE`](super::MAX_MESSAGE_SIZE)).
        limit: u64,
    },
}
