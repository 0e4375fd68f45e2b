//! The logged operations of the mailbox model and the one function that applies them.

use heed::RwTxn;
use serde::{Deserialize, Serialize};

use crate::engine::{ApplyContext, ApplyError};
use crate::error::{Error, Result};
use crate::model::envelope::{self, Envelope};
use crate::model::types::{
    ContentHash, DEFAULT_RETENTION_MICROS, Deleted, Flags, FolderId, FolderInfo, FolderRole, ItemClass, ItemId,
    ItemInfo, MailboxInfo, MailboxKind, ModSeq, Quota, Uid,
};
use crate::model::{MailStore, keys, load, store, summary};
use crate::types::{Guid, now_micros};

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
    pub submitted_micros: u64,
}

/// A mutation of the mailbox model: the payload of one log record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
        created_micros: u64,
        /// UIDVALIDITY of its folders (chosen before logging).
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
        /// Its UIDVALIDITY (chosen before logging).
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
        received_micros: u64,
        /// Item class.
        class: ItemClass,
        /// A folder-associated (settings) item.
        fai: bool,
        /// The envelope, parsed once before logging so replay never re-parses.
        envelope: Box<Envelope>,
        /// The hash of `raw`, computed before logging ([`ContentHash::of`]).
        content: ContentHash,
        /// The raw RFC 5322 bytes.
        #[serde(with = "serde_bytes")]
        raw: Vec<u8>,
    },
    /// Replaces an item's content (an edited appointment, contact or draft): the new version gets a new UID in
    /// the same folder, keeping flags and keywords. Under litigation hold the original is kept in Recoverable
    /// Items/Versions; otherwise it is removed.
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
        at_micros: u64,
        /// The new envelope, parsed before logging.
        envelope: Box<Envelope>,
        /// The hash of `raw`, computed before logging ([`ContentHash::of`]).
        content: ContentHash,
        /// The new raw bytes.
        #[serde(with = "serde_bytes")]
        raw: Vec<u8>,
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
        at_micros: u64,
    },
    /// Puts items of Recoverable Items/Deletions back in the folder they were deleted from (or the Inbox if it
    /// is gone).
    RecoverItems {
        /// The mailbox.
        mailbox: Guid,
        /// The items, by UID in Deletions.
        uids: Vec<Uid>,
    },
    /// Permanently removes the items of Recoverable Items/Deletions deleted before `deleted_before_micros`
    /// (the caller computes it from its clock and the retention period before logging).
    PurgeDeleted {
        /// The mailbox.
        mailbox: Guid,
        /// Items deleted before this time are purged.
        deleted_before_micros: u64,
    },
    /// Purges the items of Recoverable Items (Deletions and Purges) whose retention has ended at `now_micros`
    /// (decided before logging); nothing under litigation hold.
    PurgeExpired {
        /// The mailbox.
        mailbox: Guid,
        /// The current time.
        now_micros: u64,
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
        /// Deleted-item retention in microseconds.
        retention_micros: u64,
    },
    /// Deletes a folder and its subfolders; their items go to Recoverable Items/Deletions.
    DeleteFolder {
        /// The mailbox.
        mailbox: Guid,
        /// The folder (not a well-known one).
        folder: FolderId,
        /// When (decided before logging).
        at_micros: u64,
    },
    /// Submits a message for sending: it is stored in the Outbox and queued for a transport. Refused over the
    /// prohibit-send quota.
    Submit {
        /// The sending mailbox.
        mailbox: Guid,
        /// When (decided before logging).
        submitted_micros: u64,
        /// The envelope, parsed before logging.
        envelope: Box<Envelope>,
        /// The hash of `raw`, computed before logging ([`ContentHash::of`]).
        content: ContentHash,
        /// The raw RFC 5322 bytes.
        #[serde(with = "serde_bytes")]
        raw: Vec<u8>,
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
        at_micros: u64,
    },
    /// Restores a soft-deleted mailbox (its address must still be free).
    RestoreMailbox {
        /// The mailbox.
        mailbox: Guid,
    },
    /// Removes a soft-deleted mailbox and everything in it.
    PurgeMailbox {
        /// The mailbox.
        mailbox: Guid,
    },
    /// Sets a mailbox's own quota, or (`None`) returns it to the database default.
    SetQuota {
        /// The mailbox.
        mailbox: Guid,
        /// The quota.
        quota: Option<Quota>,
    },
    /// Removes the items of a folder flagged `\Deleted` (all of them, or those among `uids`).
    Expunge {
        /// The mailbox.
        mailbox: Guid,
        /// The folder.
        folder: FolderId,
        /// Restrict to these UIDs (IMAP `UID EXPUNGE`).
        uids: Option<Vec<Uid>>,
    },
}

/// What applying a [`MailOp`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
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
        /// Where the original went: its UID in Versions under litigation hold.
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
}

fn uidvalidity_now() -> u32 {
    // Seconds since the epoch, as Dovecot and Cyrus do; at least 1 (0 is not a valid UIDVALIDITY).
    ((now_micros() / 1_000_000) as u32).max(1)
}

impl MailOp {
    /// A new mailbox with a fresh GUID, created now.
    pub fn create_mailbox(address: &str, display_name: &str, kind: MailboxKind) -> MailOp {
        MailOp::CreateMailbox {
            guid: Guid::new_random(),
            address: address.to_owned(),
            display_name: display_name.to_owned(),
            kind,
            created_micros: now_micros(),
            uidvalidity: uidvalidity_now(),
        }
    }

    /// A new folder, with a UIDVALIDITY from the clock.
    pub fn create_folder(mailbox: Guid, parent: FolderId, name: &str) -> MailOp {
        MailOp::CreateFolder { mailbox, parent, name: name.to_owned(), uidvalidity: uidvalidity_now() }
    }

    /// A message to store, received now: its envelope is parsed here, once.
    pub fn append(mailbox: Guid, folder: FolderId, raw: Vec<u8>, flags: Flags, keywords: Vec<String>) -> MailOp {
        MailOp::Append {
            mailbox,
            folder,
            flags,
            keywords,
            received_micros: now_micros(),
            class: ItemClass::Note,
            fai: false,
            envelope: Box::new(envelope::parse(&raw)),
            content: ContentHash::of(&raw),
            raw,
        }
    }

    /// A new version of an item, now.
    pub fn replace_item(mailbox: Guid, folder: FolderId, uid: Uid, raw: Vec<u8>, class: ItemClass) -> MailOp {
        MailOp::ReplaceItem {
            mailbox,
            folder,
            uid,
            class,
            at_micros: now_micros(),
            envelope: Box::new(envelope::parse(&raw)),
            content: ContentHash::of(&raw),
            raw,
        }
    }

    /// Sets (`FlagAction::Add`), clears or replaces system flags of items, unconditionally and without keywords
    /// (IMAP `STORE +FLAGS`); build [`MailOp::StoreFlags`] directly for keywords or `UNCHANGEDSINCE`.
    pub fn store_flags(mailbox: Guid, folder: FolderId, uids: Vec<Uid>, action: FlagAction, flags: Flags) -> MailOp {
        MailOp::StoreFlags { mailbox, folder, uids, action, flags, keywords: Vec::new(), unchanged_since: None }
    }

    /// Moves items to another folder of the same mailbox (IMAP `MOVE`); they get new UIDs there.
    pub fn move_items(mailbox: Guid, from: FolderId, uids: Vec<Uid>, to: FolderId) -> MailOp {
        MailOp::CopyItems { mailbox, from, uids, to, remove_source: true }
    }

    /// Deletes items now: they move to Recoverable Items/Deletions.
    pub fn delete_items(mailbox: Guid, folder: FolderId, uids: Vec<Uid>) -> MailOp {
        MailOp::DeleteItems { mailbox, folder, uids, at_micros: now_micros() }
    }

    /// A message to submit for sending, now.
    pub fn submit(mailbox: Guid, raw: Vec<u8>) -> MailOp {
        MailOp::Submit {
            mailbox,
            submitted_micros: now_micros(),
            envelope: Box::new(envelope::parse(&raw)),
            content: ContentHash::of(&raw),
            raw,
        }
    }

    /// An item of any class (an appointment, a contact, a folder-associated settings item), received now.
    pub fn append_item(mailbox: Guid, folder: FolderId, raw: Vec<u8>, class: ItemClass, fai: bool) -> MailOp {
        MailOp::Append {
            mailbox,
            folder,
            flags: Flags::empty(),
            keywords: Vec::new(),
            received_micros: now_micros(),
            class,
            fai,
            envelope: Box::new(envelope::parse(&raw)),
            content: ContentHash::of(&raw),
            raw,
        }
    }

    /// Checks that the content hash an operation carries is the hash of its bytes (see [`ContentHash`]).
    pub(crate) fn check_content(&self) -> Result<()> {
        match self {
            MailOp::Append { content, raw, .. }
            | MailOp::ReplaceItem { content, raw, .. }
            | MailOp::Submit { content, raw, .. }
                if *content != ContentHash::of(raw) =>
            {
                Err(invalid(format!(
                    "the content hash {content:?} is not the hash of the message's {} bytes",
                    raw.len()
                )))
            }
            _ => Ok(()),
        }
    }

    /// Checks what can be checked without the state: names, sizes, keyword syntax.
    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            MailOp::CreateMailbox { address, display_name, uidvalidity, .. } => {
                if address.is_empty() || address.len() > MAX_ADDRESS || address.chars().any(char::is_control) {
                    return Err(invalid(format!(
                        "mailbox address {address:?} must have 1 to {MAX_ADDRESS} printable bytes"
                    )));
                }
                if display_name.len() > MAX_ADDRESS || display_name.chars().any(char::is_control) {
                    return Err(invalid("display name too long or not printable"));
                }
                check_uidvalidity(*uidvalidity)
            }
            MailOp::CreateFolder { name, uidvalidity, .. } => {
                check_folder_name(name)?;
                check_uidvalidity(*uidvalidity)
            }
            MailOp::RenameFolder { name, .. } => check_folder_name(name),
            MailOp::Append { raw, keywords, .. } => {
                if raw.len() > MAX_MESSAGE_SIZE {
                    return Err(invalid(format!(
                        "message of {} bytes exceeds the maximum of {MAX_MESSAGE_SIZE} bytes",
                        raw.len()
                    )));
                }
                check_keywords(keywords)
            }
            MailOp::StoreFlags { uids, keywords, .. } => {
                check_uids(uids)?;
                check_keywords(keywords)
            }
            MailOp::CopyItems { uids, .. } | MailOp::DeleteItems { uids, .. } | MailOp::RecoverItems { uids, .. } => {
                check_uids(uids)
            }
            MailOp::Submit { raw, .. } if raw.len() > MAX_MESSAGE_SIZE => {
                Err(invalid(format!("message of {} bytes exceeds the maximum of {MAX_MESSAGE_SIZE} bytes", raw.len())))
            }
            MailOp::PurgeItems { uids, .. } => check_uids(uids),
            MailOp::ReplaceItem { raw, .. } if raw.len() > MAX_MESSAGE_SIZE => {
                Err(invalid(format!("item of {} bytes exceeds the maximum of {MAX_MESSAGE_SIZE} bytes", raw.len())))
            }
            MailOp::ReplaceItem { .. } => Ok(()),
            MailOp::Submit { .. }
            | MailOp::AcknowledgeSubmission { .. }
            | MailOp::PurgeExpired { .. }
            | MailOp::SetRetention { .. }
            | MailOp::PurgeDeleted { .. }
            | MailOp::DeleteFolder { .. }
            | MailOp::TrimHistory { .. }
            | MailOp::DeleteMailbox { .. }
            | MailOp::RestoreMailbox { .. }
            | MailOp::PurgeMailbox { .. } => Ok(()),
            MailOp::SetQuota { quota, .. } => match quota {
                Some(q) if q.issue_warning > q.prohibit_send || q.prohibit_send > q.prohibit_send_receive => {
                    Err(invalid("quota limits must satisfy warning <= prohibit send <= prohibit send and receive"))
                }
                Some(q) if q.recoverable_warning > q.recoverable_hard => {
                    Err(invalid("the Recoverable Items warning must not exceed its hard limit"))
                }
                _ => Ok(()),
            },
            MailOp::Expunge { uids, .. } => uids.as_deref().map_or(Ok(()), check_uids),
        }
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument(message.into())
}

fn check_uidvalidity(v: u32) -> Result<()> {
    if v == 0 { Err(invalid("UIDVALIDITY must not be 0")) } else { Ok(()) }
}

/// Folder names: 1 to 255 bytes, no `/` (the hierarchy separator), no control characters, not `.` or `..`,
/// no leading or trailing white space.
pub fn check_folder_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(invalid(format!("folder name {name:?} {why}")));
    if name.is_empty() || name.len() > MAX_FOLDER_NAME {
        return bad(&format!("must have 1 to {MAX_FOLDER_NAME} bytes"));
    }
    if name.contains('/') {
        return bad("contains '/', the hierarchy separator");
    }
    if name.chars().any(char::is_control) {
        return bad("contains control characters");
    }
    if name == "." || name == ".." {
        return bad("is reserved");
    }
    if name.trim() != name {
        return bad("starts or ends with white space");
    }
    Ok(())
}

fn check_keywords(keywords: &[String]) -> Result<()> {
    for k in keywords {
        let atom = |c: char| c.is_ascii_graphic() && !"(){%*\"\\]".contains(c);
        if k.is_empty() || k.len() > MAX_KEYWORD || k.starts_with('\\') || !k.chars().all(atom) {
            return Err(invalid(format!("keyword {k:?} is not an IMAP atom of 1 to {MAX_KEYWORD} bytes")));
        }
    }
    Ok(())
}

fn check_uids(uids: &[Uid]) -> Result<()> {
    if uids.len() > MAX_UIDS_PER_OP {
        return Err(invalid(format!("{} UIDs in one operation, at most {MAX_UIDS_PER_OP}", uids.len())));
    }
    Ok(())
}

fn reject(e: Error) -> ApplyError {
    ApplyError::Reject(e)
}

/// An error from a read helper used inside apply: storage errors stay storage errors.
fn storage(e: Error) -> ApplyError {
    match e {
        Error::State(e) => ApplyError::Storage(e),
        other => ApplyError::Reject(other),
    }
}

fn check_message_size(m: &MailboxInfo, size: usize) -> Result<(), ApplyError> {
    let limit = m.quota.unwrap_or_default().max_message_size;
    if size as u64 > limit {
        return Err(reject(Error::MessageTooLarge { size: size as u64, limit }));
    }
    Ok(())
}

fn check_recoverable_quota(m: &MailboxInfo) -> Result<(), ApplyError> {
    let limit = m.quota.unwrap_or_default().recoverable_hard;
    if m.recoverable_size > limit {
        return Err(reject(Error::QuotaExceeded {
            what: format!("Recoverable Items quota of mailbox {}", m.address),
            size: m.recoverable_size,
            limit,
        }));
    }
    Ok(())
}

/// The write side of one operation: the model's databases and the transaction.
struct Tx<'a, 't> {
    s: &'a MailStore,
    txn: &'a mut RwTxn<'t>,
    guid: Guid,
    changes: u32,
}

impl Tx<'_, '_> {
    /// The mailbox, which must not be soft-deleted.
    fn mailbox(&self) -> Result<MailboxInfo, ApplyError> {
        let m = self.any_mailbox()?;
        if m.deleted_micros.is_some() {
            return Err(reject(Error::NotFound(format!("mailbox {} (it is deleted)", self.guid))));
        }
        Ok(m)
    }

    /// The mailbox, soft-deleted or not.
    fn any_mailbox(&self) -> Result<MailboxInfo, ApplyError> {
        if let Some(m) = self.s.records.lock().mailboxes.remove(&self.guid) {
            return Ok(m);
        }
        match self.s.mailboxes.get(self.txn, &keys::mailbox(&self.guid))? {
            Some(raw) => Ok(load(raw)?),
            None => Err(reject(Error::NotFound(format!("mailbox {}", self.guid)))),
        }
    }

    /// Deletes every entry of `table` whose key starts with the mailbox GUID; returns how many.
    fn clear(&mut self, table: heed::Database<'static, heed::types::Bytes, heed::types::Bytes>) -> heed::Result<u64> {
        let prefix = keys::mailbox(&self.guid);
        let keys: Vec<Vec<u8>> =
            table.prefix_iter(self.txn, &prefix)?.map(|e| e.map(|(k, _)| k.to_vec())).collect::<heed::Result<_>>()?;
        for k in &keys {
            table.delete(self.txn, k)?;
        }
        Ok(keys.len() as u64)
    }

    fn put_mailbox(&mut self, m: &MailboxInfo) -> heed::Result<()> {
        self.s.mailboxes.put(self.txn, &keys::mailbox(&self.guid), &store(m)?)?;
        self.s.records.lock().mailboxes.insert(self.guid, m.clone());
        Ok(())
    }

    fn folder(&self, id: FolderId) -> Result<FolderInfo, ApplyError> {
        if let Some(f) = self.s.records.lock().folders.remove(&(self.guid, id)) {
            return Ok(f);
        }
        match self.s.folders.get(self.txn, &keys::folder(&self.guid, id))? {
            Some(raw) => Ok(load(raw)?),
            None => Err(reject(Error::NotFound(format!("folder {id} in mailbox {}", self.guid)))),
        }
    }

    /// A folder items can live in: not the root.
    fn item_folder(&self, id: FolderId) -> Result<FolderInfo, ApplyError> {
        let f = self.folder(id)?;
        if f.role == Some(FolderRole::Root) {
            return Err(reject(invalid("the root folder holds no items")));
        }
        Ok(f)
    }

    fn put_folder(&mut self, f: &FolderInfo) -> heed::Result<()> {
        self.s.folders.put(self.txn, &keys::folder(&self.guid, f.id), &store(f)?)?;
        self.s.records.lock().folders.insert((self.guid, f.id), f.clone());
        Ok(())
    }

    fn item(&self, id: ItemId) -> heed::Result<Option<ItemInfo>> {
        self.s.items.get(self.txn, &keys::item(&self.guid, id))?.map(load).transpose()
    }

    fn item_at(&self, folder: FolderId, uid: Uid) -> heed::Result<Option<ItemInfo>> {
        match self.s.uids.get(self.txn, &keys::uid(&self.guid, folder, uid))? {
            Some(raw) => self.item(keys::u64_at(raw, 0)),
            None => Ok(None),
        }
    }

    /// Writes the item and its UID index entry (the listing record, a copy of the item: see `summary`), so the
    /// two never differ after a transaction.
    fn put_item(&mut self, item: &ItemInfo) -> Result<(), ApplyError> {
        // Encoding fails only past 2 GiB of strings or 2^32 list entries (say, keywords added by a great many
        // operations): a function of the item alone, so the refusal is deterministic, like any other.
        let record = summary::encode(item).map_err(reject)?;
        self.s.items.put(self.txn, &keys::item(&self.guid, item.id), &store(item)?)?;
        self.s.uids.put(self.txn, &keys::uid(&self.guid, item.folder, item.uid), &record)?;
        Ok(())
    }

    fn record(&mut self, modseq: ModSeq, kind: ChangeKind, entity: Entity) -> heed::Result<()> {
        let key = keys::change(&self.guid, modseq, self.changes);
        self.changes += 1;
        self.s.changes.put(self.txn, &key, &store(&Change { modseq, kind, entity })?)
    }

    /// Inserts a new folder (the caller checked the parent) and indexes its name.
    fn insert_folder(&mut self, m: &mut MailboxInfo, folder: FolderInfo) -> Result<FolderId, ApplyError> {
        if let Some(parent) = folder.parent {
            let name_key = keys::folder_name(&self.guid, parent, &folder.name);
            if self.s.folder_names.get(self.txn, &name_key)?.is_some() {
                return Err(reject(Error::AlreadyExists(format!("folder {:?}", folder.name))));
            }
            self.s.folder_names.put(self.txn, &name_key, &folder.id.to_be_bytes())?;
        }
        self.put_folder(&folder)?;
        m.next_folder_id = m.next_folder_id.max(folder.id + 1);
        Ok(folder.id)
    }

    /// Takes the next MODSEQ of the mailbox.
    fn next_modseq(m: &mut MailboxInfo) -> ModSeq {
        m.highest_modseq += 1;
        m.highest_modseq
    }

    /// Stores a new item in `folder` with a fresh id and UID; updates counters. Returns it. `raw` is the
    /// content of a new message; `None` reuses the content `template` already references (copy, move).
    fn insert_item(
        &mut self,
        m: &mut MailboxInfo,
        folder: &mut FolderInfo,
        template: &ItemInfo,
        raw: Option<(&[u8], ContentHash)>,
        modseq: ModSeq,
    ) -> Result<ItemInfo, ApplyError> {
        if folder.uidnext == Uid::MAX {
            return Err(reject(invalid(format!("folder {} has used up its UIDs", folder.id))));
        }
        let content = match raw {
            Some((_, hash)) => hash.0,
            None => template.content,
        };
        self.add_ref(&content, raw.map(|(raw, _)| raw))?;
        let item = ItemInfo {
            id: m.next_item_id,
            folder: folder.id,
            uid: folder.uidnext,
            modseq,
            content,
            ..template.clone()
        };
        m.next_item_id += 1;
        folder.uidnext += 1;
        folder.highest_modseq = modseq;
        self.put_item(&item)?;
        self.s.received.put(self.txn, &keys::received(&self.guid, folder.id, item.received_micros, item.id), &[])?;
        count(m, folder, &item, 1);
        self.record(modseq, ChangeKind::Created, Entity::Item { id: item.id, folder: folder.id, uid: item.uid })?;
        Ok(item)
    }

    /// Removes an item from its folder and the mailbox; updates counters.
    fn remove_item(
        &mut self,
        m: &mut MailboxInfo,
        folder: &mut FolderInfo,
        item: &ItemInfo,
        modseq: ModSeq,
    ) -> heed::Result<()> {
        self.s.items.delete(self.txn, &keys::item(&self.guid, item.id))?;
        self.s.uids.delete(self.txn, &keys::uid(&self.guid, folder.id, item.uid))?;
        self.drop_ref(&item.content)?;
        self.s.received.delete(self.txn, &keys::received(&self.guid, folder.id, item.received_micros, item.id))?;
        // An item that leaves its folder (sent, deleted, moved, expunged) is no longer queued for submission.
        self.s.submissions.delete(self.txn, &keys::item(&self.guid, item.id))?;
        count(m, folder, item, -1);
        folder.highest_modseq = modseq;
        self.record(modseq, ChangeKind::Destroyed, Entity::Item { id: item.id, folder: folder.id, uid: item.uid })
    }

    /// Removes the items of `folder` among `uids` that `matches`, taking the operation's MODSEQ (in `modseq`)
    /// with the first removal. Returns their UIDs.
    fn remove_matching(
        &mut self,
        m: &mut MailboxInfo,
        folder: &mut FolderInfo,
        uids: Vec<Uid>,
        modseq: &mut Option<ModSeq>,
        matches: impl Fn(&ItemInfo) -> bool,
    ) -> Result<Vec<Uid>, ApplyError> {
        let mut removed = Vec::new();
        for uid in uids {
            let Some(item) = self.item_at(folder.id, uid)? else { continue };
            if !matches(&item) {
                continue;
            }
            let ms = *modseq.get_or_insert_with(|| Tx::next_modseq(m));
            self.remove_item(m, folder, &item, ms)?;
            removed.push(uid);
        }
        Ok(removed)
    }

    /// The folder with a well-known role.
    fn role_folder(&self, role: FolderRole) -> Result<FolderInfo, ApplyError> {
        match self.s.folder_by_role(self.txn, &self.guid, role).map_err(storage)? {
            Some(f) => Ok(f),
            None => Err(reject(Error::NotFound(format!("{role:?} folder of mailbox {}", self.guid)))),
        }
    }

    /// Every UID of a folder, ascending.
    fn uids_of(&self, folder: FolderId) -> heed::Result<Vec<Uid>> {
        let mut all = Vec::new();
        for entry in self.s.uids.prefix_iter(self.txn, &keys::folder(&self.guid, folder))? {
            all.push(keys::u32_at(entry?.0, 24));
        }
        Ok(all)
    }

    /// Moves `item` from `src` to `dst` as `moved` (a new UID there); returns the new UID.
    fn move_item(
        &mut self,
        m: &mut MailboxInfo,
        src: &mut FolderInfo,
        dst: &mut FolderInfo,
        item: &ItemInfo,
        moved: ItemInfo,
        modseq: ModSeq,
    ) -> Result<Uid, ApplyError> {
        // Insert first: the new reference keeps the stored content alive while the old one is dropped.
        let uid = self.insert_item(m, dst, &moved, None, modseq)?.uid;
        self.remove_item(m, src, item, modseq)?;
        Ok(uid)
    }

    /// One more reference to the content `hash`; stores `raw` (its bytes) if this is the first (see `bodies`).
    fn add_ref(&mut self, hash: &[u8; 32], raw: Option<&[u8]>) -> Result<(), ApplyError> {
        Ok(self.s.pending.lock().add_ref(&self.s.body_tables(), self.txn, hash, raw)?)
    }

    /// One reference fewer to the content `hash`; the last one releases the stored bytes.
    fn drop_ref(&mut self, hash: &[u8; 32]) -> heed::Result<()> {
        self.s.pending.lock().drop_ref(&self.s.body_tables(), self.txn, hash)
    }
}

/// Changes a mailbox's settings (quota, retention, holds) as one logged change of the mailbox.
fn change_settings(tx: &mut Tx<'_, '_>, change: impl FnOnce(&mut MailboxInfo)) -> Result<MailOutput, ApplyError> {
    let mut m = tx.mailbox()?;
    let modseq = Tx::next_modseq(&mut m);
    change(&mut m);
    tx.record(modseq, ChangeKind::Updated, Entity::Mailbox)?;
    tx.put_mailbox(&m)?;
    Ok(MailOutput::SettingsChanged)
}

/// Removes the items of Deletions and Purges deleted before `cutoff` (none under litigation hold). The UIDs
/// reported are those of both folders, Deletions first.
fn purge_older_than(tx: &mut Tx<'_, '_>, cutoff: u64) -> Result<MailOutput, ApplyError> {
    let mut m = tx.mailbox()?;
    if m.litigation_hold {
        return Ok(MailOutput::Expunged { uids: Vec::new(), modseq: None });
    }
    let mut modseq = None;
    let mut purged = Vec::new();
    for role in [FolderRole::Deletions, FolderRole::Purges] {
        let mut folder = tx.role_folder(role)?;
        let uids = tx.uids_of(folder.id)?;
        let expired = |item: &ItemInfo| item.deleted.is_none_or(|d| d.at_micros < cutoff);
        purged.extend(tx.remove_matching(&mut m, &mut folder, uids, &mut modseq, expired)?);
        if modseq.is_some() {
            tx.put_folder(&folder)?;
        }
    }
    if modseq.is_some() {
        tx.put_mailbox(&m)?;
    }
    Ok(MailOutput::Expunged { uids: purged, modseq })
}

/// A new message as it arrives: unflagged `IPM.Note`; `insert_item` gives it its id, folder, UID, MODSEQ and
/// content reference.
fn incoming(received_micros: u64, size: usize, envelope: Envelope) -> ItemInfo {
    ItemInfo {
        id: 0,
        folder: 0,
        uid: 0,
        modseq: 0,
        flags: Flags::empty(),
        keywords: Vec::new(),
        class: ItemClass::Note,
        received_micros,
        size: size as u64,
        envelope,
        fai: false,
        deleted: None,
        content: [0; 32],
    }
}

/// Adds (`sign` 1) or removes (`sign` -1) an item from the counters of its mailbox and folder.
fn count(m: &mut MailboxInfo, folder: &mut FolderInfo, item: &ItemInfo, sign: i64) {
    let add = |v: &mut u64, by: u64| *v = if sign > 0 { v.saturating_add(by) } else { v.saturating_sub(by) };
    if folder.hidden {
        add(&mut m.recoverable_items, 1);
        add(&mut m.recoverable_size, item.size);
    } else {
        add(&mut m.items, 1);
        add(&mut m.size, item.size);
    }
    if !item.fai {
        add(&mut folder.total, 1);
        add(&mut folder.size, item.size);
        if !item.flags.contains(Flags::SEEN) {
            add(&mut folder.unread, 1);
        }
    }
}

fn sorted_unique(uids: &[Uid]) -> Vec<Uid> {
    let mut v = uids.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

fn normalise_keywords(keywords: &[String]) -> Vec<String> {
    let mut v = keywords.to_vec();
    v.sort();
    v.dedup();
    v
}

/// Applies one operation. Deterministic: it reads only the transaction (with what the transaction's earlier
/// operations gathered for it, see `bodies`) and the operation.
pub(crate) fn apply(
    s: &MailStore,
    txn: &mut RwTxn<'_>,
    ctx: ApplyContext,
    op: MailOp,
) -> Result<MailOutput, ApplyError> {
    // New message bytes are stored under the LSN of the operation that stores them (their body id).
    s.pending.lock().begin(ctx.lsn);
    op.validate().map_err(reject)?;
    match op {
        MailOp::CreateMailbox { guid, address, display_name, kind, created_micros, uidvalidity } => {
            let mut tx = Tx { s, txn, guid, changes: 0 };
            if tx.s.mailboxes.get(tx.txn, &keys::mailbox(&guid))?.is_some() {
                return Err(reject(Error::AlreadyExists(format!("mailbox {guid}"))));
            }
            let address_key = address.to_lowercase();
            if tx.s.addresses.get(tx.txn, address_key.as_bytes())?.is_some() {
                return Err(reject(Error::AlreadyExists(format!("a mailbox with address {address:?}"))));
            }
            let mut m = MailboxInfo {
                guid,
                address,
                display_name,
                kind,
                created_micros,
                highest_modseq: 0,
                items: 0,
                size: 0,
                recoverable_items: 0,
                recoverable_size: 0,
                quota: None,
                single_item_recovery: false,
                litigation_hold: false,
                retention_micros: DEFAULT_RETENTION_MICROS,
                history_floor: 0,
                deleted_micros: None,
                next_folder_id: 1,
                next_item_id: 1,
            };
            let modseq = Tx::next_modseq(&mut m);
            let folder = |id, parent, name: &str, role, hidden| FolderInfo {
                id,
                parent,
                name: name.to_owned(),
                role: Some(role),
                hidden,
                uidvalidity,
                uidnext: 1,
                highest_modseq: modseq,
                total: 0,
                unread: 0,
                size: 0,
            };
            let root = tx.insert_folder(&mut m, folder(1, None, "", FolderRole::Root, false))?;
            tx.record(modseq, ChangeKind::Created, Entity::Mailbox)?;
            if kind.is_mail() {
                let mut ids = vec![(FolderRole::Root, root)];
                for (role, name, parent_role, hidden) in FolderRole::WELL_KNOWN {
                    let parent = ids.iter().find(|(r, _)| *r == parent_role).map_or(root, |(_, id)| *id);
                    let next = m.next_folder_id;
                    let id = tx.insert_folder(&mut m, folder(next, Some(parent), name, role, hidden))?;
                    tx.record(modseq, ChangeKind::Created, Entity::Folder(id))?;
                    ids.push((role, id));
                }
            }
            tx.s.addresses.put(tx.txn, address_key.as_bytes(), guid.as_bytes())?;
            tx.put_mailbox(&m)?;
            Ok(MailOutput::MailboxCreated { root, modseq })
        }

        MailOp::CreateFolder { mailbox, parent, name, uidvalidity } => {
            let mut tx = Tx { s, txn, guid: mailbox, changes: 0 };
            let mut m = tx.mailbox()?;
            let parent_folder = tx.folder(parent)?;
            if parent_folder.hidden {
                return Err(reject(invalid("folders cannot be created inside Recoverable Items")));
            }
            let modseq = Tx::next_modseq(&mut m);
            let folder = FolderInfo {
                id: m.next_folder_id,
                parent: Some(parent),
                name,
                role: None,
                hidden: false,
                uidvalidity,
                uidnext: 1,
                highest_modseq: modseq,
                total: 0,
                unread: 0,
                size: 0,
            };
            let id = tx.insert_folder(&mut m, folder)?;
            tx.record(modseq, ChangeKind::Created, Entity::Folder(id))?;
            tx.put_mailbox(&m)?;
            Ok(MailOutput::FolderCreated { id, modseq })
        }

        MailOp::RenameFolder { mailbox, folder, parent, name } => {
            let mut tx = Tx { s, txn, guid: mailbox, changes: 0 };
            let mut m = tx.mailbox()?;
            let mut f = tx.folder(folder)?;
            if f.role.is_some() {
                return Err(reject(invalid(format!(
                    "{:?} is a well-known folder and cannot be renamed or moved",
                    f.name
                ))));
            }
            let new_parent = tx.folder(parent)?;
            if new_parent.hidden {
                return Err(reject(invalid("folders cannot be moved into Recoverable Items")));
            }
            // No cycles: the new parent may not be the folder or lie below it.
            let mut walk = Some(new_parent.id);
            while let Some(id) = walk {
                if id == folder {
                    return Err(reject(invalid(format!("cannot move folder {:?} into its own subtree", f.name))));
                }
                walk = tx.folder(id)?.parent;
            }
            let old_parent = f.parent.unwrap_or(0);
            let old_key = keys::folder_name(&mailbox, old_parent, &f.name);
            let new_key = keys::folder_name(&mailbox, parent, &name);
            if new_key != old_key && tx.s.folder_names.get(tx.txn, &new_key)?.is_some() {
                return Err(reject(Error::AlreadyExists(format!("folder {name:?}"))));
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

        MailOp::Append { mailbox, folder, flags, keywords, received_micros, class, fai, envelope, content, raw } => {
            let mut tx = Tx { s, txn, guid: mailbox, changes: 0 };
            let mut m = tx.mailbox()?;
            let mut f = tx.item_folder(folder)?;
            if f.hidden {
                return Err(reject(invalid("items cannot be stored in Recoverable Items directly")));
            }
            check_message_size(&m, raw.len())?;
            let limit = m.quota.unwrap_or_default().prohibit_send_receive;
            let size = m.size.saturating_add(raw.len() as u64);
            if size > limit {
                return Err(reject(Error::QuotaExceeded {
                    what: format!("prohibit-send-receive quota of mailbox {}", m.address),
                    size,
                    limit,
                }));
            }
            let modseq = Tx::next_modseq(&mut m);
            let template = ItemInfo {
                flags: Flags(flags.0 & Flags::ALL.0),
                keywords: normalise_keywords(&keywords),
                class,
                fai,
                ..incoming(received_micros, raw.len(), *envelope)
            };
            let item = tx.insert_item(&mut m, &mut f, &template, Some((&raw, content)), modseq)?;
            tx.put_folder(&f)?;
            tx.put_mailbox(&m)?;
            Ok(MailOutput::Appended { item: item.id, uid: item.uid, uidvalidity: f.uidvalidity, modseq })
        }

        MailOp::ReplaceItem { mailbox, folder, uid, class, at_micros, envelope, content, raw } => {
            let mut tx = Tx { s, txn, guid: mailbox, changes: 0 };
            let mut m = tx.mailbox()?;
            let mut f = tx.item_folder(folder)?;
            if f.hidden {
                return Err(reject(invalid("items in Recoverable Items are not edited")));
            }
            check_message_size(&m, raw.len())?;
            let Some(original) = tx.item_at(folder, uid)? else {
                return Err(reject(Error::NotFound(format!("UID {uid} in folder {folder}"))));
            };
            let modseq = Tx::next_modseq(&mut m);
            let template = ItemInfo {
                class,
                received_micros: at_micros,
                size: raw.len() as u64,
                envelope: *envelope,
                deleted: None,
                ..original.clone()
            };
            let new_uid = tx.insert_item(&mut m, &mut f, &template, Some((&raw, content)), modseq)?.uid;
            let original_in_versions = if m.litigation_hold {
                let mut versions = tx.role_folder(FolderRole::Versions)?;
                let kept = ItemInfo { deleted: Some(Deleted { from: folder, at_micros }), ..original.clone() };
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

        MailOp::StoreFlags { mailbox, folder, uids, action, flags, keywords, unchanged_since } => {
            let mut tx = Tx { s, txn, guid: mailbox, changes: 0 };
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
                    FlagAction::Remove => (
                        item.flags.without(flags),
                        item.keywords.iter().filter(|k| !keywords.contains(k)).cloned().collect(),
                    ),
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

        MailOp::CopyItems { mailbox, from, uids, to, remove_source } => {
            let mut tx = Tx { s, txn, guid: mailbox, changes: 0 };
            let mut m = tx.mailbox()?;
            if from == to {
                return Err(reject(invalid("source and destination folder are the same")));
            }
            let mut src = tx.item_folder(from)?;
            let mut dst = tx.item_folder(to)?;
            if src.hidden || dst.hidden {
                return Err(reject(invalid(
                    "items enter and leave Recoverable Items only by DeleteItems, RecoverItems and PurgeDeleted",
                )));
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

        MailOp::DeleteItems { mailbox, folder, uids, at_micros } => {
            let mut tx = Tx { s, txn, guid: mailbox, changes: 0 };
            let mut m = tx.mailbox()?;
            let mut src = tx.item_folder(folder)?;
            if src.hidden {
                return Err(reject(invalid("items in Recoverable Items are purged, not deleted")));
            }
            let mut deletions = tx.role_folder(FolderRole::Deletions)?;
            let mut modseq = None;
            let mut mapping = Vec::new();
            for uid in sorted_unique(&uids) {
                let Some(item) = tx.item_at(folder, uid)? else { continue };
                let ms = *modseq.get_or_insert_with(|| Tx::next_modseq(&mut m));
                let moved = ItemInfo { deleted: Some(Deleted { from: folder, at_micros }), ..item.clone() };
                let new_uid = tx.move_item(&mut m, &mut src, &mut deletions, &item, moved, ms)?;
                mapping.push((uid, new_uid));
            }
            check_recoverable_quota(&m)?;
            if modseq.is_some() {
                tx.put_folder(&src)?;
                tx.put_folder(&deletions)?;
                tx.put_mailbox(&m)?;
            }
            Ok(MailOutput::DeletedToRecoverable { mapping, modseq })
        }

        MailOp::RecoverItems { mailbox, uids } => {
            let mut tx = Tx { s, txn, guid: mailbox, changes: 0 };
            let mut m = tx.mailbox()?;
            let mut deletions = tx.role_folder(FolderRole::Deletions)?;
            let inbox = tx.role_folder(FolderRole::Inbox)?.id;
            let mut modseq = None;
            let mut mapping = Vec::new();
            for uid in sorted_unique(&uids) {
                let Some(item) = tx.item_at(deletions.id, uid)? else { continue };
                let ms = *modseq.get_or_insert_with(|| Tx::next_modseq(&mut m));
                // Back where it came from, if that folder still exists outside Recoverable Items.
                let from = item.deleted.map_or(inbox, |d| d.from);
                let mut dst = match tx.folder(from) {
                    Ok(f) if !f.hidden && f.role != Some(FolderRole::Root) => f,
                    _ => tx.folder(inbox)?,
                };
                let restored = ItemInfo { deleted: None, ..item.clone() };
                let new_uid = tx.move_item(&mut m, &mut deletions, &mut dst, &item, restored, ms)?;
                tx.put_folder(&dst)?;
                mapping.push((uid, dst.id, new_uid));
            }
            if modseq.is_some() {
                tx.put_folder(&deletions)?;
                tx.put_mailbox(&m)?;
            }
            Ok(MailOutput::Recovered { mapping, modseq })
        }

        MailOp::PurgeDeleted { mailbox, deleted_before_micros } => {
            let mut tx = Tx { s, txn, guid: mailbox, changes: 0 };
            purge_older_than(&mut tx, deleted_before_micros)
        }

        MailOp::PurgeExpired { mailbox, now_micros } => {
            let mut tx = Tx { s, txn, guid: mailbox, changes: 0 };
            let retention = tx.mailbox()?.retention_micros;
            purge_older_than(&mut tx, now_micros.saturating_sub(retention))
        }

        MailOp::PurgeItems { mailbox, uids } => {
            let mut tx = Tx { s, txn, guid: mailbox, changes: 0 };
            let mut m = tx.mailbox()?;
            let mut deletions = tx.role_folder(FolderRole::Deletions)?;
            let mut purges = tx.role_folder(FolderRole::Purges)?;
            let keep = m.single_item_recovery || m.litigation_hold;
            let mut modseq = None;
            let mut purged = Vec::new();
            for uid in sorted_unique(&uids) {
                let Some(item) = tx.item_at(deletions.id, uid)? else { continue };
                let ms = *modseq.get_or_insert_with(|| Tx::next_modseq(&mut m));
                if keep {
                    tx.move_item(&mut m, &mut deletions, &mut purges, &item, item.clone(), ms)?;
                } else {
                    tx.remove_item(&mut m, &mut deletions, &item, ms)?;
                }
                purged.push(uid);
            }
            if modseq.is_some() {
                tx.put_folder(&deletions)?;
                tx.put_folder(&purges)?;
                tx.put_mailbox(&m)?;
            }
            Ok(MailOutput::Expunged { uids: purged, modseq })
        }

        MailOp::SetRetention { mailbox, single_item_recovery, litigation_hold, retention_micros } => {
            change_settings(&mut Tx { s, txn, guid: mailbox, changes: 0 }, |m| {
                m.single_item_recovery = single_item_recovery;
                m.litigation_hold = litigation_hold;
                m.retention_micros = retention_micros;
            })
        }

        MailOp::DeleteFolder { mailbox, folder, at_micros } => {
            let mut tx = Tx { s, txn, guid: mailbox, changes: 0 };
            let mut m = tx.mailbox()?;
            let target = tx.folder(folder)?;
            if target.role.is_some() || target.hidden {
                return Err(reject(invalid(format!("{:?} is a well-known folder and cannot be deleted", target.name))));
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
                    let deleted = ItemInfo { deleted: Some(Deleted { from: id, at_micros }), ..item.clone() };
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

        MailOp::Submit { mailbox, submitted_micros, envelope, content, raw } => {
            let mut tx = Tx { s, txn, guid: mailbox, changes: 0 };
            let mut m = tx.mailbox()?;
            check_message_size(&m, raw.len())?;
            let limit = m.quota.unwrap_or_default().prohibit_send;
            if m.size > limit {
                return Err(reject(Error::QuotaExceeded {
                    what: format!("prohibit-send quota of mailbox {}", m.address),
                    size: m.size,
                    limit,
                }));
            }
            let mut outbox = tx.role_folder(FolderRole::Outbox)?;
            let modseq = Tx::next_modseq(&mut m);
            let template = ItemInfo { flags: Flags::SEEN, ..incoming(submitted_micros, raw.len(), *envelope) };
            let item = tx.insert_item(&mut m, &mut outbox, &template, Some((&raw, content)), modseq)?;
            let queued = Submission { mailbox, item: item.id, submitted_micros };
            tx.s.submissions.put(tx.txn, &keys::item(&mailbox, item.id), &store(&queued)?)?;
            tx.put_folder(&outbox)?;
            tx.put_mailbox(&m)?;
            Ok(MailOutput::Submitted { item: item.id, uid: item.uid })
        }

        MailOp::AcknowledgeSubmission { mailbox, item } => {
            let mut tx = Tx { s, txn, guid: mailbox, changes: 0 };
            let mut m = tx.mailbox()?;
            let key = keys::item(&mailbox, item);
            if tx.s.submissions.get(tx.txn, &key)?.is_none() {
                return Err(reject(Error::NotFound(format!("submission of item {item} in mailbox {mailbox}"))));
            }
            let queued = tx.item(item)?.ok_or_else(|| reject(Error::NotFound(format!("item {item}"))))?;
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

        MailOp::TrimHistory { mailbox, below } => {
            let mut tx = Tx { s, txn, guid: mailbox, changes: 0 };
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

        MailOp::DeleteMailbox { mailbox, at_micros } => {
            let mut tx = Tx { s, txn, guid: mailbox, changes: 0 };
            let mut m = tx.mailbox()?;
            let modseq = Tx::next_modseq(&mut m);
            m.deleted_micros = Some(at_micros);
            tx.s.addresses.delete(tx.txn, m.address.to_lowercase().as_bytes())?;
            tx.record(modseq, ChangeKind::Destroyed, Entity::Mailbox)?;
            tx.put_mailbox(&m)?;
            Ok(MailOutput::MailboxChanged)
        }

        MailOp::RestoreMailbox { mailbox } => {
            let mut tx = Tx { s, txn, guid: mailbox, changes: 0 };
            let mut m = tx.any_mailbox()?;
            if m.deleted_micros.is_none() {
                return Err(reject(invalid(format!("mailbox {mailbox} is not deleted"))));
            }
            let address_key = m.address.to_lowercase();
            if tx.s.addresses.get(tx.txn, address_key.as_bytes())?.is_some() {
                return Err(reject(Error::AlreadyExists(format!("a mailbox with address {:?}", m.address))));
            }
            let modseq = Tx::next_modseq(&mut m);
            m.deleted_micros = None;
            tx.s.addresses.put(tx.txn, address_key.as_bytes(), mailbox.as_bytes())?;
            tx.record(modseq, ChangeKind::Created, Entity::Mailbox)?;
            tx.put_mailbox(&m)?;
            Ok(MailOutput::MailboxChanged)
        }

        MailOp::PurgeMailbox { mailbox } => {
            let mut tx = Tx { s, txn, guid: mailbox, changes: 0 };
            let m = tx.any_mailbox()?;
            if m.deleted_micros.is_none() {
                return Err(reject(invalid(format!("mailbox {mailbox} must be deleted before it is purged"))));
            }
            if m.litigation_hold {
                return Err(reject(invalid(format!("mailbox {mailbox} is on litigation hold and cannot be purged"))));
            }
            let mut contents = Vec::new();
            for entry in tx.s.items.prefix_iter(tx.txn, &keys::mailbox(&mailbox))? {
                let item: ItemInfo = load(entry?.1)?;
                contents.push(item.content);
            }
            for hash in &contents {
                tx.drop_ref(hash)?;
            }
            for table in [s.folders, s.folder_names, s.items, s.uids, s.changes, s.received, s.submissions] {
                tx.clear(table)?;
            }
            tx.s.mailboxes.delete(tx.txn, &keys::mailbox(&mailbox))?;
            tx.s.records.lock().clear();
            Ok(MailOutput::MailboxChanged)
        }

        MailOp::SetQuota { mailbox, quota } => {
            change_settings(&mut Tx { s, txn, guid: mailbox, changes: 0 }, |m| m.quota = quota)
        }

        MailOp::Expunge { mailbox, folder, uids } => {
            let mut tx = Tx { s, txn, guid: mailbox, changes: 0 };
            let mut m = tx.mailbox()?;
            let mut f = tx.item_folder(folder)?;
            if f.hidden {
                // Retention, single item recovery and holds decide what leaves Recoverable Items.
                return Err(reject(invalid("items leave Recoverable Items by PurgeItems and PurgeExpired only")));
            }
            let candidates: Vec<Uid> = match uids {
                Some(uids) => sorted_unique(&uids),
                None => tx.uids_of(folder)?,
            };
            let mut modseq = None;
            let deleted = |item: &ItemInfo| item.flags.contains(Flags::DELETED);
            let expunged = tx.remove_matching(&mut m, &mut f, candidates, &mut modseq, deleted)?;
            if modseq.is_some() {
                tx.put_folder(&f)?;
                tx.put_mailbox(&m)?;
            }
            Ok(MailOutput::Expunged { uids: expunged, modseq })
        }
    }
}
