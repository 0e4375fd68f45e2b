//! Building operations: the [`MailOp`] constructors, which choose before logging whatever varies between runs
//! (GUIDs, times, UIDVALIDITY, parsed envelopes, content hashes), and the checks an operation passes without the
//! state.

use crate::model::envelope;
use crate::model::error::MailError;
use crate::model::types::{ContentHash, Fai, Flags, FolderId, ItemClass, MailboxKind, Uid};
use bytes::Bytes;

use crate::time::Timestamp;
use crate::types::Guid;

use super::{
    FlagAction, MAX_ADDRESS, MAX_FOLDER_NAME, MAX_KEYWORD, MAX_MESSAGE_SIZE, MAX_UIDS_PER_OP, MailOp, Message, batch,
};

fn uidvalidity_now() -> u32 {
    // Seconds since the epoch, as Dovecot and Cyrus do; at least 1 (0 is not a valid UIDVALIDITY).
    ((Timestamp::now().as_micros() / 1_000_000) as u32).max(1)
}

impl Message<Bytes> {
    /// `raw` as it arrives now: its envelope is parsed and its content hashed here, once, before logging.
    fn now(raw: impl Into<Bytes>) -> Self {
        let raw = raw.into();
        Message {
            received: Timestamp::now(),
            envelope: Box::new(envelope::parse(&raw)),
            content: ContentHash::of(&raw),
            raw,
        }
    }
}

impl MailOp {
    /// The mailbox the operation changes (`None` for the store's own body relocation): the key of its change
    /// notifications (`Scope::Key`).
    pub fn mailbox(&self) -> Option<Guid> {
        match self {
            MailOp::CreateMailbox { guid, .. } => Some(*guid),
            MailOp::RelocateBodies { .. } => None,
            MailOp::Batch { ops, .. } => ops.first().and_then(MailOp::mailbox),
            MailOp::CreateFolder { mailbox, .. }
            | MailOp::RenameFolder { mailbox, .. }
            | MailOp::Append { mailbox, .. }
            | MailOp::ReplaceItem { mailbox, .. }
            | MailOp::StoreFlags { mailbox, .. }
            | MailOp::CopyItems { mailbox, .. }
            | MailOp::DeleteItems { mailbox, .. }
            | MailOp::RecoverItems { mailbox, .. }
            | MailOp::PurgeDeleted { mailbox, .. }
            | MailOp::PurgeExpired { mailbox, .. }
            | MailOp::PurgeItems { mailbox, .. }
            | MailOp::SetRetention { mailbox, .. }
            | MailOp::SetHoldDuration { mailbox, .. }
            | MailOp::DeleteFolder { mailbox, .. }
            | MailOp::Submit { mailbox, .. }
            | MailOp::AcknowledgeSubmission { mailbox, .. }
            | MailOp::TrimHistory { mailbox, .. }
            | MailOp::DeleteMailbox { mailbox, .. }
            | MailOp::RestoreMailbox { mailbox, .. }
            | MailOp::PurgeMailbox { mailbox, .. }
            | MailOp::SetQuota { mailbox, .. }
            | MailOp::Expunge { mailbox, .. }
            | MailOp::Housekeep { mailbox, .. }
            | MailOp::RecordAccess { mailbox, .. } => Some(*mailbox),
            MailOp::Audited { op, .. } => op.mailbox(),
        }
    }

    /// The bytes the operation attaches to its log record: the message it stores, if any.
    pub(crate) fn attachment(&self) -> &[u8] {
        match self {
            MailOp::Append { raw, .. }
            | MailOp::ReplaceItem { raw, .. }
            | MailOp::Submit { raw, .. }
            | MailOp::RelocateBodies { raw, .. }
            | MailOp::Batch { raw, .. } => raw,
            MailOp::Audited { op, .. } => op.attachment(),
            _ => &[],
        }
    }

    /// A new mailbox with a fresh GUID, created now.
    pub fn create_mailbox(address: &str, display_name: &str, kind: MailboxKind) -> MailOp {
        MailOp::CreateMailbox {
            guid: Guid::new_random(),
            address: address.to_owned(),
            display_name: display_name.to_owned(),
            kind,
            created: Timestamp::now(),
            uidvalidity: uidvalidity_now(),
        }
    }

    /// A new folder, with a UIDVALIDITY from the clock.
    pub fn create_folder(mailbox: Guid, parent: FolderId, name: &str) -> MailOp {
        MailOp::CreateFolder { mailbox, parent, name: name.to_owned(), uidvalidity: uidvalidity_now() }
    }

    /// A message to store, received now: its envelope is parsed here, once.
    pub fn append(
        mailbox: Guid,
        folder: FolderId,
        raw: impl Into<Bytes>,
        flags: Flags,
        keywords: Vec<String>,
    ) -> MailOp {
        MailOp::append_now(mailbox, folder, raw, flags, keywords, ItemClass::Note, false)
    }

    /// The same [`MailOp::Append`] received at `at` instead of now (IMAP APPEND's date-time, an import's original
    /// arrival). Any other operation is returned unchanged.
    pub fn received_at(mut self, at: Timestamp) -> MailOp {
        if let MailOp::Append { received, .. } = &mut self {
            *received = at;
        }
        self
    }

    /// A new version of an item, now.
    pub fn replace_item(mailbox: Guid, folder: FolderId, uid: Uid, raw: impl Into<Bytes>, class: ItemClass) -> MailOp {
        let Message { received: at, envelope, content, raw } = Message::now(raw);
        MailOp::ReplaceItem { mailbox, folder, uid, class, at, envelope, content, raw }
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
        MailOp::DeleteItems { mailbox, folder, uids, at: Timestamp::now() }
    }

    /// Expunges now the items of `folder` flagged `\Deleted` (all, or those among `uids`): see
    /// [`MailOp::Expunge`] for where held items go.
    pub fn expunge(mailbox: Guid, folder: FolderId, uids: Option<Vec<Uid>>) -> MailOp {
        MailOp::Expunge { mailbox, folder, uids, at: Timestamp::now() }
    }

    /// Purges a soft-deleted mailbox now ([`MailOp::PurgeMailbox`]).
    pub fn purge_mailbox(mailbox: Guid) -> MailOp {
        MailOp::PurgeMailbox { mailbox, now: Timestamp::now() }
    }

    /// A message to submit for sending, now.
    pub fn submit(mailbox: Guid, raw: impl Into<Bytes>) -> MailOp {
        let Message { received: submitted, envelope, content, raw } = Message::now(raw);
        MailOp::Submit { mailbox, submitted, envelope, content, raw }
    }

    /// An item of any class (an appointment, a contact, a folder-associated settings item), received now.
    /// `fai`: [`Fai::Include`] makes it a folder-associated item.
    pub fn append_item(mailbox: Guid, folder: FolderId, raw: impl Into<Bytes>, class: ItemClass, fai: Fai) -> MailOp {
        MailOp::append_now(mailbox, folder, raw, Flags::empty(), Vec::new(), class, fai.included())
    }

    /// The [`MailOp::Append`] of `raw`, received now.
    fn append_now(
        mailbox: Guid,
        folder: FolderId,
        raw: impl Into<Bytes>,
        flags: Flags,
        keywords: Vec<String>,
        class: ItemClass,
        fai: bool,
    ) -> MailOp {
        let Message { received, envelope, content, raw } = Message::now(raw);
        MailOp::Append { mailbox, folder, flags, keywords, received, class, fai, envelope, content, raw }
    }

    /// Checks that the content hash an operation carries is the hash of its bytes (see [`ContentHash`]).
    pub(crate) fn check_content(&self) -> Result<(), MailError> {
        self.check_content_of(self.attachment())
    }

    /// [`check_content`](Self::check_content) against `raw` as the operation's bytes (a batch's part's slice).
    pub(super) fn check_content_of(&self, raw: &[u8]) -> Result<(), MailError> {
        match self {
            MailOp::Append { content, .. } | MailOp::ReplaceItem { content, .. } | MailOp::Submit { content, .. }
                if *content != ContentHash::of(raw) =>
            {
                Err(MailError::ContentHashMismatch { size: raw.len() })
            }
            MailOp::Batch { ops, lengths, .. } => batch::check_content(ops, lengths, raw),
            MailOp::Audited { op, .. } => op.check_content_of(raw),
            // Every relocated body must be the content it claims to be: a relocation rewrites where it is read from.
            MailOp::RelocateBodies { contents, .. } => {
                let mut rest = raw;
                for (hash, len) in contents {
                    let Some((body, after)) = rest.split_at_checked(*len as usize) else {
                        return Err(MailError::ContentHashMismatch { size: raw.len() });
                    };
                    if *hash != ContentHash::of(body) {
                        return Err(MailError::ContentHashMismatch { size: body.len() });
                    }
                    rest = after;
                }
                if rest.is_empty() { Ok(()) } else { Err(MailError::ContentHashMismatch { size: raw.len() }) }
            }
            _ => Ok(()),
        }
    }

    /// Checks what can be checked without the state: names, sizes, keyword syntax.
    pub(crate) fn validate(&self) -> Result<(), MailError> {
        self.validate_attached(self.attachment().len())
    }

    /// [`validate`](Self::validate) with `attached` bytes as the message's (or a batch's messages'): the
    /// operation's own before logging, its record's attachment when applied.
    pub(super) fn validate_attached(&self, attached: usize) -> Result<(), MailError> {
        match self {
            MailOp::CreateMailbox { address, display_name, uidvalidity, .. } => {
                check_address(address)?;
                if display_name.len() > MAX_ADDRESS || display_name.chars().any(char::is_control) {
                    return Err(MailError::InvalidDisplayName);
                }
                check_uidvalidity(*uidvalidity)
            }
            MailOp::CreateFolder { name, uidvalidity, .. } => {
                check_folder_name(name)?;
                check_uidvalidity(*uidvalidity)
            }
            MailOp::RenameFolder { name, .. } => check_folder_name(name),
            MailOp::Append { keywords, .. } => {
                if attached > MAX_MESSAGE_SIZE {
                    return Err(too_large(attached));
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
            MailOp::Submit { .. } if attached > MAX_MESSAGE_SIZE => Err(too_large(attached)),
            MailOp::PurgeItems { uids, .. } => check_uids(uids),
            MailOp::ReplaceItem { .. } if attached > MAX_MESSAGE_SIZE => Err(too_large(attached)),
            MailOp::ReplaceItem { .. } => Ok(()),
            MailOp::Submit { .. }
            | MailOp::AcknowledgeSubmission { .. }
            | MailOp::PurgeExpired { .. }
            | MailOp::SetRetention { .. }
            | MailOp::SetHoldDuration { .. }
            | MailOp::PurgeDeleted { .. }
            | MailOp::DeleteFolder { .. }
            | MailOp::TrimHistory { .. }
            | MailOp::DeleteMailbox { .. }
            | MailOp::RestoreMailbox { .. }
            | MailOp::PurgeMailbox { .. } => Ok(()),
            MailOp::SetQuota { quota, .. } => match quota {
                Some(q) if q.issue_warning > q.prohibit_send || q.prohibit_send > q.prohibit_send_receive => {
                    Err(MailError::InvalidQuota { rule: "warning <= prohibit send <= prohibit send and receive" })
                }
                Some(q) if q.recoverable_warning > q.recoverable_hard => Err(MailError::InvalidQuota {
                    rule: "the Recoverable Items warning must not exceed its hard limit",
                }),
                _ => Ok(()),
            },
            MailOp::Expunge { uids, .. } => uids.as_deref().map_or(Ok(()), check_uids),
            MailOp::RelocateBodies { contents, .. } if contents.len() > MAX_UIDS_PER_OP => {
                Err(MailError::TooManyUids { count: contents.len(), max: MAX_UIDS_PER_OP })
            }
            MailOp::RelocateBodies { .. } => Ok(()),
            MailOp::Batch { ops, lengths, .. } => batch::validate(ops, lengths, attached),
            MailOp::Housekeep { keep_changes: 0, .. } => {
                Err(MailError::InvalidHousekeeping { rule: "keep_changes must be at least 1" })
            }
            MailOp::Housekeep { .. } => Ok(()),
            MailOp::Audited { op, .. } if matches!(**op, MailOp::Audited { .. }) => {
                Err(MailError::InvalidAudit { rule: "an audited operation does not nest" })
            }
            MailOp::Audited { actor, op } => {
                if actor.address.is_empty()
                    || actor.address.len() > MAX_ADDRESS
                    || actor.address.chars().any(char::is_control)
                {
                    return Err(MailError::InvalidAudit { rule: "an actor needs a printable name of 1 to 320 bytes" });
                }
                op.validate_attached(attached)
            }
            MailOp::RecordAccess { uids, .. } => check_uids(uids),
        }
    }
}

/// [`MailError::MessageTooLarge`] for a message of `size` bytes, above [`MAX_MESSAGE_SIZE`].
fn too_large(size: usize) -> MailError {
    MailError::MessageTooLarge { size: size as u64, limit: MAX_MESSAGE_SIZE as u64 }
}

fn check_uidvalidity(v: u32) -> Result<(), MailError> {
    if v == 0 { Err(MailError::InvalidUidValidity) } else { Ok(()) }
}

/// Folder names: 1 to 255 bytes, no `/` (the hierarchy separator), no control characters, not `.` or `..`,
/// no leading or trailing white space.
/// `local@domain`, as a mailbox address must be (see [`MailError::InvalidAddress`]). Non-ASCII is allowed in
/// both parts (SMTPUTF8 addresses); white space, control characters and empty parts are not.
fn check_address(address: &str) -> Result<(), MailError> {
    let bad = |rule: &str| Err(MailError::InvalidAddress { address: address.to_owned(), rule: rule.to_owned() });
    if address.is_empty() || address.len() > MAX_ADDRESS {
        return bad(&format!("must have 1 to {MAX_ADDRESS} bytes"));
    }
    if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("may not hold white space or control characters");
    }
    let Some((local, domain)) = address.rsplit_once('@') else { return bad("must be local@domain") };
    if local.is_empty() || local.len() > 64 {
        return bad("must have a local part of 1 to 64 bytes before the @");
    }
    if domain.starts_with('[') && domain.ends_with(']') && domain.len() > 2 {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    if domain.is_empty() || domain.len() > 255 || !domain.split('.').all(label_ok) {
        return bad("must have a domain of dot-separated labels (letters, digits, hyphens) after the @");
    }
    Ok(())
}

fn check_folder_name(name: &str) -> Result<(), MailError> {
    let bad = |why: &str| Err(MailError::InvalidFolderName { name: name.to_owned(), rule: why.to_owned() });
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

fn check_keywords(keywords: &[String]) -> Result<(), MailError> {
    for k in keywords {
        let atom = |c: char| c.is_ascii_graphic() && !"(){%*\"\\]".contains(c);
        if k.is_empty() || k.len() > MAX_KEYWORD || k.starts_with('\\') || !k.chars().all(atom) {
            return Err(MailError::InvalidKeyword { keyword: k.clone() });
        }
    }
    Ok(())
}

fn check_uids(uids: &[Uid]) -> Result<(), MailError> {
    if uids.len() > MAX_UIDS_PER_OP {
        return Err(MailError::TooManyUids { count: uids.len(), max: MAX_UIDS_PER_OP });
    }
    Ok(())
}
