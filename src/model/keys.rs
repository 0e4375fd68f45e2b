//! Key layout of the mailbox model's LMDB databases. Every key starts with the mailbox GUID (or is a content
//! hash or an address) and continues with big-endian fixed-width integers, so one mailbox's entries are contiguous
//! and ordered by id, UID or MODSEQ. No key encodes a `usize`. Values that are not a plain integer are bincode
//! (`crate::codec`), except the UID index's listing records (`crate::model::summary`, a fixed layout read in place).
//!
//! | database | key | value |
//! |---|---|---|
//! | `mail.mailboxes` | GUID | `MailboxInfo` |
//! | `mail.addresses` | lower-cased address | GUID |
//! | `mail.folders` | GUID ‖ folder id (u64) | `FolderInfo` |
//! | `mail.folder_names` | GUID ‖ parent id (u64) ‖ lower-cased name | folder id (u64) |
//! | `mail.items` | GUID ‖ item id (u64) | `ItemInfo` |
//! | `mail.uids` | GUID ‖ folder id (u64) ‖ UID (u32) | listing record: item id (u64, big-endian) ‖ a full copy of the item laid out for reading in place (`summary`) |
//! | `mail.blob_refs` | BLAKE3 hash of the raw bytes (32 bytes) | reference count, body id (the LSN that stored it), where the bytes lie in the log (generation, offset) and their length (`bodies`) |
//! | `mail.segments` | generation (u64) | bytes of the generation's bodies still referenced (u64) ‖ bytes stored in it (u64) |
//! | `mail.placed` | generation (u64) ‖ offset (u64) | the content hash of the body stored there |
//! | `mail.changes` | GUID ‖ MODSEQ (u64) ‖ index (u32) | `Change` |
//! | `mail.received` | GUID ‖ folder id (u64) ‖ received time (u64) ‖ item id (u64) | empty |
//! | `mail.submissions` | GUID ‖ item id (u64) | `Submission` |
//! | `mail.audit` | GUID ‖ commit time (µs, u64) ‖ LSN (u64) ‖ index (u32) | `AuditEntry` (`audit`) |
//! | `mail.meta` | a name ([`LAST_UIDVALIDITY`]) | that value of the whole database |
//! | `mail.conversation_of`, `mail.conversations`, `mail.conversation_members`, `mail.message_ids` | see `conversations` | |

use crate::model::types::{FolderId, ItemId, ModSeq, Uid};
use crate::types::Guid;

/// `mail.meta`: the highest UIDVALIDITY the database has given out (u32, big-endian).
pub(crate) const LAST_UIDVALIDITY: &[u8] = b"last_uidvalidity";

pub(crate) fn mailbox(guid: &Guid) -> [u8; 16] {
    guid.0
}

pub(crate) fn folder(guid: &Guid, folder: FolderId) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&guid.0);
    k[16..].copy_from_slice(&folder.to_be_bytes());
    k
}

pub(crate) fn folder_name(guid: &Guid, parent: FolderId, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(24 + name.len());
    k.extend_from_slice(&guid.0);
    k.extend_from_slice(&parent.to_be_bytes());
    k.extend_from_slice(name.to_lowercase().as_bytes());
    k
}

pub(crate) fn item(guid: &Guid, item: ItemId) -> [u8; 24] {
    folder(guid, item)
}

pub(crate) fn uid(guid: &Guid, folder: FolderId, uid: Uid) -> [u8; 28] {
    let mut k = [0u8; 28];
    k[..24].copy_from_slice(&self::folder(guid, folder));
    k[24..].copy_from_slice(&uid.to_be_bytes());
    k
}

pub(crate) fn change(guid: &Guid, modseq: ModSeq, index: u32) -> [u8; 28] {
    let mut k = [0u8; 28];
    k[..16].copy_from_slice(&guid.0);
    k[16..24].copy_from_slice(&modseq.to_be_bytes());
    k[24..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Reads the big-endian u64 at `at`, or 0 when the key is too short (keys are written by this module only).
pub(crate) fn u64_at(key: &[u8], at: usize) -> u64 {
    key.get(at..at + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes)
}

/// Reads the big-endian u32 at `at`, or 0 when the key is too short.
pub(crate) fn u32_at(key: &[u8], at: usize) -> u32 {
    key.get(at..at + 4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_be_bytes)
}

pub(crate) fn received(guid: &Guid, folder: FolderId, received: u64, item: ItemId) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..24].copy_from_slice(&self::folder(guid, folder));
    k[24..32].copy_from_slice(&received.to_be_bytes());
    k[32..].copy_from_slice(&item.to_be_bytes());
    k
}
