//! The model's LMDB databases while their opening transaction is live, and how they become a [`MailStore`].
//!
//! [`MailDatabases`] is the model's `StateMachine::Databases`: public because the trait's associated type is,
//! but in a private module, so no program can name it (it is not part of the API).

use heed::types::Bytes;
use heed::{CommitToken, Database, OnCommit};
use parking_lot::Mutex;

use super::{MailStore, Records, Table};
use crate::engine::Attachments;
use crate::error::{Error, Result};

/// The model's LMDB databases, in the order [`MailDatabases`] holds them.
pub(super) const TABLES: [&str; 18] = [
    "mail.mailboxes",
    "mail.addresses",
    "mail.folders",
    "mail.folder_names",
    "mail.items",
    "mail.uids",
    "mail.changes",
    "mail.received",
    "mail.submissions",
    "mail.blob_refs",
    "mail.segments",
    "mail.placed",
    "mail.audit",
    "mail.meta",
    "mail.conversation_of",
    "mail.conversations",
    "mail.conversation_members",
    "mail.message_ids",
];

/// [`MailStore`]'s databases while their opening transaction is live.
pub struct MailDatabases<'e>([Database<'e, Bytes, Bytes>; TABLES.len()], Attachments);

impl<'e> MailDatabases<'e> {
    /// The databases opened in [`TABLES`] order.
    pub(super) fn from_vec(dbs: Vec<Database<'e, Bytes, Bytes>>, attachments: &Attachments) -> Result<Self> {
        let dbs: [Database<'e, Bytes, Bytes>; TABLES.len()] =
            dbs.try_into().map_err(|_| Error::InvalidArgument("the model's table count changed".into()))?;
        Ok(MailDatabases(dbs, attachments.clone()))
    }
}

impl OnCommit for MailDatabases<'_> {
    type Committed = MailStore;
    fn on_commit(self, token: &CommitToken) -> MailStore {
        let t = self.0.on_commit(token);
        let t: [Table; TABLES.len()] = std::array::from_fn(|i| Table::new(t[i], TABLES[i]));
        MailStore {
            mailboxes: t[0],
            addresses: t[1],
            folders: t[2],
            folder_names: t[3],
            items: t[4],
            uids: t[5],
            changes: t[6],
            received: t[7],
            submissions: t[8],
            blob_refs: t[9],
            segments: t[10],
            placed: t[11],
            audit: t[12],
            meta: t[13],
            conversation_of: t[14],
            conversations: t[15],
            conversation_members: t[16],
            message_ids: t[17],
            attachments: self.1,
            records: Mutex::new(Records::default()),
        }
    }
}
