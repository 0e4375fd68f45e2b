//! The values of the mailbox model as the API returns them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::envelope::Envelope;
use crate::time::Timestamp;
use crate::types::Guid;

/// A folder's id, unique within its mailbox, never reused.
pub type FolderId = u64;
/// An item's id, unique within its mailbox, never reused.
pub type ItemId = u64;
/// An IMAP UID: unique within its folder under one UIDVALIDITY, strictly increasing, never reused.
pub type Uid = u32;
/// A mailbox's change counter (RFC 7162 MODSEQ): strictly increasing with every change in the mailbox.
pub type ModSeq = u64;

/// The BLAKE3 hash of a message's raw bytes: the key of its single stored copy (single-instance storage).
///
/// It is computed when the operation is built, on the caller's thread, and carried in the logged operation, so
/// neither the writer thread nor a passive copy's replay hashes message bodies. [`Engine::commit`] checks it
/// against the bytes before anything is logged (an operation whose hash does not match is refused with
/// [`MailError::ContentHashMismatch`]); `apply` trusts the logged value, as it trusts every other logged field.
///
/// [`Engine::commit`]: crate::Engine::commit
/// [`MailError::ContentHashMismatch`]: crate::model::MailError::ContentHashMismatch
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContentHash(#[serde(with = "serde_bytes")] pub(crate) [u8; 32]);

impl ContentHash {
    /// The hash of `raw`.
    pub fn of(raw: &[u8]) -> ContentHash {
        ContentHash(*blake3::hash(raw).as_bytes())
    }

    /// The 32 hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ContentHash({})", blake3::Hash::from_bytes(self.0).to_hex())
    }
}

/// What a mailbox is for (Exchange's recipient types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MailboxKind {
    /// A person's mailbox.
    User,
    /// A mailbox several people use.
    Shared,
    /// A bookable room.
    Room,
    /// Bookable equipment.
    Equipment,
    /// An archive mailbox (the In-Place Archive).
    Archive,
    /// The writable hierarchy of public folders.
    PublicFolderHierarchy,
    /// Content of public folders.
    PublicFolderContent,
}

impl MailboxKind {
    /// True for the kinds that receive mail and get the well-known folders.
    pub fn is_mail(self) -> bool {
        !matches!(self, MailboxKind::PublicFolderHierarchy | MailboxKind::PublicFolderContent)
    }
}

/// The role of a well-known folder. Roles with an RFC 6154 special-use attribute report it through
/// [`FolderRole::special_use`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FolderRole {
    /// The root of the folder tree (not listed as a folder).
    Root,
    /// Inbox.
    Inbox,
    /// Drafts (`\Drafts`).
    Drafts,
    /// Sent Items (`\Sent`).
    SentItems,
    /// Deleted Items (`\Trash`).
    DeletedItems,
    /// Junk Email (`\Junk`).
    JunkEmail,
    /// Outbox.
    Outbox,
    /// Archive (`\Archive`).
    Archive,
    /// Calendar.
    Calendar,
    /// Contacts.
    Contacts,
    /// Tasks.
    Tasks,
    /// Notes.
    Notes,
    /// The hidden Recoverable Items folder.
    RecoverableItems,
    /// Recoverable Items/Deletions.
    Deletions,
    /// Recoverable Items/Versions.
    Versions,
    /// Recoverable Items/Purges.
    Purges,
}

impl FolderRole {
    /// The RFC 6154 special-use attribute of the role, if it has one.
    pub fn special_use(self) -> Option<&'static str> {
        match self {
            FolderRole::Drafts => Some("\\Drafts"),
            FolderRole::SentItems => Some("\\Sent"),
            FolderRole::DeletedItems => Some("\\Trash"),
            FolderRole::JunkEmail => Some("\\Junk"),
            FolderRole::Archive => Some("\\Archive"),
            _ => None,
        }
    }

    /// The well-known folders of a mail mailbox, in creation order: `(role, name, parent role, hidden)`.
    pub const WELL_KNOWN: [(FolderRole, &'static str, FolderRole, bool); 15] = [
        (FolderRole::Inbox, "Inbox", FolderRole::Root, false),
        (FolderRole::Drafts, "Drafts", FolderRole::Root, false),
        (FolderRole::SentItems, "Sent Items", FolderRole::Root, false),
        (FolderRole::DeletedItems, "Deleted Items", FolderRole::Root, false),
        (FolderRole::JunkEmail, "Junk Email", FolderRole::Root, false),
        (FolderRole::Outbox, "Outbox", FolderRole::Root, false),
        (FolderRole::Archive, "Archive", FolderRole::Root, false),
        (FolderRole::Calendar, "Calendar", FolderRole::Root, false),
        (FolderRole::Contacts, "Contacts", FolderRole::Root, false),
        (FolderRole::Tasks, "Tasks", FolderRole::Root, false),
        (FolderRole::Notes, "Notes", FolderRole::Root, false),
        (FolderRole::RecoverableItems, "Recoverable Items", FolderRole::Root, true),
        (FolderRole::Deletions, "Deletions", FolderRole::RecoverableItems, true),
        (FolderRole::Versions, "Versions", FolderRole::RecoverableItems, true),
        (FolderRole::Purges, "Purges", FolderRole::RecoverableItems, true),
    ];
}

/// IMAP system flags, as a bit set. `Debug` and `Display` print them as IMAP does: `(\Seen \Flagged)`.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Flags(pub u8);

impl Flags {
    /// `\Seen`.
    pub const SEEN: Flags = Flags(1);
    /// `\Answered`.
    pub const ANSWERED: Flags = Flags(2);
    /// `\Flagged`.
    pub const FLAGGED: Flags = Flags(4);
    /// `\Deleted`.
    pub const DELETED: Flags = Flags(8);
    /// `\Draft`.
    pub const DRAFT: Flags = Flags(16);
    /// Every defined flag.
    pub const ALL: Flags = Flags(31);

    /// No flag.
    pub fn empty() -> Self {
        Flags(0)
    }
    /// True when every flag of `other` is set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    /// Both sets.
    pub fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
    /// `self` without `other`.
    pub fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }
}

impl std::fmt::Display for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const NAMES: [(Flags, &str); 5] = [
            (Flags::SEEN, "\\Seen"),
            (Flags::ANSWERED, "\\Answered"),
            (Flags::FLAGGED, "\\Flagged"),
            (Flags::DELETED, "\\Deleted"),
            (Flags::DRAFT, "\\Draft"),
        ];
        let names: Vec<&str> = NAMES.iter().filter(|(flag, _)| self.contains(*flag)).map(|(_, name)| *name).collect();
        write!(f, "({})", names.join(" "))?;
        let unknown = self.0 & !Flags::ALL.0;
        if unknown != 0 { write!(f, "+{unknown:#04x}") } else { Ok(()) }
    }
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Flags{self}")
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        self.union(rhs)
    }
}

/// Folder-associated items (FAI, Exchange's "associated contents"): the hidden items a folder keeps for itself
/// (views, rules, settings). Whether a listing includes them, and whether an item appended is one
/// ([`MailOp::append_item`](crate::model::MailOp::append_item)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fai {
    /// A listing leaves them out; an appended item is a normal one.
    Exclude,
    /// A listing includes them; an appended item is folder-associated.
    Include,
}

impl Fai {
    pub(crate) fn included(self) -> bool {
        self == Fai::Include
    }
}

/// The order of a listing by received time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Order {
    /// The most recently received first.
    NewestFirst,
    /// The earliest received first.
    OldestFirst,
}

/// The kind of an item (Exchange's message class).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemClass {
    /// `IPM.Note`: an e-mail message.
    Note,
    /// `IPM.Appointment`, with its start and end for free/busy.
    Appointment {
        /// Start.
        start: Timestamp,
        /// End.
        end: Timestamp,
    },
    /// `IPM.Contact`.
    Contact,
    /// `IPM.Task`.
    Task,
    /// Any other class, by name.
    Other(String),
}

/// Storage quotas of a mailbox, in bytes (Exchange's names and database defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Above this the mailbox is in the warning state (default 1.9 GB).
    pub issue_warning: u64,
    /// Above this the mailbox may not submit messages (default 2 GB).
    pub prohibit_send: u64,
    /// Above this the mailbox receives nothing: deliveries are refused (default 2.3 GB).
    pub prohibit_send_receive: u64,
    /// Recoverable Items warning (default 20 GB).
    pub recoverable_warning: u64,
    /// Recoverable Items hard limit: deletions that would pass it are refused (default 30 GB).
    pub recoverable_hard: u64,
    /// The largest message the mailbox receives or submits (default 35 MB, Exchange Online's limit).
    pub max_message_size: u64,
}

impl Default for Quota {
    fn default() -> Self {
        const GB: u64 = 1_000_000_000;
        Quota {
            issue_warning: 1_900_000_000,
            prohibit_send: 2 * GB,
            prohibit_send_receive: 2_300_000_000,
            recoverable_warning: 20 * GB,
            recoverable_hard: 30 * GB,
            max_message_size: 35_000_000,
        }
    }
}

/// The default deleted-item retention: 14 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);

/// A mailbox's quota state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaStatus {
    /// The limits in force (the mailbox's own, or the database default).
    pub quota: Quota,
    /// Size outside Recoverable Items.
    pub size: u64,
    /// Size of Recoverable Items.
    pub recoverable_size: u64,
    /// `size` is above the warning quota.
    pub warning: bool,
    /// `size` is above the prohibit-send quota.
    pub prohibit_send: bool,
    /// `size` is above the prohibit-send-receive quota.
    pub prohibit_send_receive: bool,
    /// `recoverable_size` is above the Recoverable Items warning quota.
    pub recoverable_warning: bool,
}

/// Where a deleted item came from, and when it was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// The folder it was deleted from (where recovery puts it back).
    pub from: FolderId,
    /// When (decided before logging).
    pub at: Timestamp,
}

/// A mailbox as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxInfo {
    /// Its GUID.
    pub guid: Guid,
    /// The unique address the embedder gave it.
    pub address: String,
    /// Display name.
    pub display_name: String,
    /// Its kind.
    pub kind: MailboxKind,
    /// When it was created.
    pub created: Timestamp,
    /// The highest MODSEQ given out in it.
    pub highest_modseq: ModSeq,
    /// Items outside Recoverable Items (FAI included).
    pub items: u64,
    /// Their total size in bytes: what the quota counts.
    pub size: u64,
    /// Items in Recoverable Items.
    pub recoverable_items: u64,
    /// Their total size in bytes.
    pub recoverable_size: u64,
    /// Its own quota, or `None` for the database default.
    pub quota: Option<Quota>,
    /// The change log holds every change with a MODSEQ at or above this; changes since an older state cannot
    /// be calculated (JMAP `cannotCalculateChanges`).
    pub history_floor: ModSeq,
    /// Single item recovery: items purged from Deletions are kept in Purges until their retention ends.
    pub single_item_recovery: bool,
    /// Litigation hold: nothing that leaves the user's view is removed for good, and nothing in Recoverable
    /// Items is purged, while it is on (for each item only until [`hold_duration`](Self::hold_duration) after it
    /// was received, when that is set).
    pub litigation_hold: bool,
    /// A time-bound litigation hold: an item is held only until this long after it was received (Exchange's
    /// `LitigationHoldDuration`); `None` holds everything for as long as the hold is on. Set with
    /// [`MailOp::SetHoldDuration`](crate::model::MailOp::SetHoldDuration); it has no effect without
    /// [`litigation_hold`](Self::litigation_hold).
    #[serde(with = "crate::time::option_duration_micros")]
    pub hold_duration: Option<Duration>,
    /// Deleted-item retention (default 14 days; stored as whole microseconds).
    #[serde(with = "crate::time::duration_micros")]
    pub retention: Duration,
    /// Set while the mailbox is soft-deleted: its content is kept until it is purged or restored, and it takes
    /// no other operation.
    pub deleted: Option<Timestamp>,
    /// When housekeeping ([`MailOp::Housekeep`](crate::model::MailOp::Housekeep), run by the
    /// [`Housekeeper`](crate::model::Housekeeper)) last ran on it; `None` before the first time.
    pub housekept: Option<Timestamp>,
    pub(crate) next_folder_id: FolderId,
    pub(crate) next_item_id: ItemId,
}

impl MailboxInfo {
    /// The mailbox's hold settings, as a value an operation can consult while it changes the mailbox.
    pub(crate) fn holds(&self) -> Holds {
        Holds {
            single_item_recovery: self.single_item_recovery,
            litigation_hold: self.litigation_hold,
            hold_duration: self.hold_duration,
        }
    }

    /// Its quota state: the limits in force and whether its sizes are above them.
    pub fn quota_status(&self) -> QuotaStatus {
        let quota = self.quota.unwrap_or_default();
        QuotaStatus {
            quota,
            size: self.size,
            recoverable_size: self.recoverable_size,
            warning: self.size > quota.issue_warning,
            prohibit_send: self.size > quota.prohibit_send,
            prohibit_send_receive: self.size > quota.prohibit_send_receive,
            recoverable_warning: self.recoverable_size > quota.recoverable_warning,
        }
    }
}

/// What a mailbox's holds keep ([`MailboxInfo::holds`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Holds {
    single_item_recovery: bool,
    litigation_hold: bool,
    hold_duration: Option<Duration>,
}

impl Holds {
    /// Whether litigation hold keeps `item` at `at`: the hold is on and, if it is time-bound, `at` is within
    /// [`MailboxInfo::hold_duration`] of the item's arrival.
    pub(crate) fn holds_item(&self, item: &ItemInfo, at: Timestamp) -> bool {
        self.litigation_hold && self.hold_duration.is_none_or(|d| at < item.received.saturating_add(d))
    }

    /// Whether `item`, leaving the user's view at `at`, is kept in Recoverable Items instead of removed for good:
    /// single item recovery, or a litigation hold that holds it.
    pub(crate) fn keeps(&self, item: &ItemInfo, at: Timestamp) -> bool {
        self.single_item_recovery || self.holds_item(item, at)
    }
}

/// A folder as stored, with the counters the same transactions keep exact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderInfo {
    /// Its id.
    pub id: FolderId,
    /// Its parent (`None` for the root).
    pub parent: Option<FolderId>,
    /// Its name (unique among its siblings, compared case-insensitively).
    pub name: String,
    /// Its well-known role, if any.
    pub role: Option<FolderRole>,
    /// Hidden from normal listings (the Recoverable Items subtree).
    pub hidden: bool,
    /// IMAP UIDVALIDITY: never the same for two folders of the database, a folder deleted and re-created under
    /// the same name included (it is the creation time in seconds, or one more than the highest given out
    /// before), so a client's cache of a deleted folder is never taken for the new one.
    pub uidvalidity: u32,
    /// IMAP UIDNEXT: the UID the next item will get.
    pub uidnext: Uid,
    /// The highest MODSEQ of any change to the folder or its items.
    pub highest_modseq: ModSeq,
    /// Items (FAI excluded).
    pub total: u64,
    /// Items without `\Seen` (FAI excluded).
    pub unread: u64,
    /// Total size of its items in bytes (FAI excluded).
    pub size: u64,
}

/// An item as stored (its raw bytes are fetched separately).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemInfo {
    /// Its id.
    pub id: ItemId,
    /// Its folder.
    pub folder: FolderId,
    /// Its UID in that folder.
    pub uid: Uid,
    /// Its MODSEQ: that of its last change.
    pub modseq: ModSeq,
    /// System flags.
    pub flags: Flags,
    /// Keywords, sorted, without duplicates.
    pub keywords: Vec<String>,
    /// Its class.
    pub class: ItemClass,
    /// Received time (IMAP INTERNALDATE).
    pub received: Timestamp,
    /// Size of the raw bytes.
    pub size: u64,
    /// The envelope parsed at ingest.
    pub envelope: Envelope,
    /// A folder-associated (settings) item, hidden from normal listings.
    pub fai: bool,
    /// Set while the item is in Recoverable Items.
    pub deleted: Option<Deleted>,
    /// BLAKE3 hash of the raw bytes: the key of the single stored copy (single-instance storage).
    pub(crate) content: [u8; 32],
}
