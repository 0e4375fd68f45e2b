//! The mailbox directory of a store of mailbox databases (`Store<MailStore>`): which database holds a mailbox.
//! It is computed from the mounted databases themselves (each mailbox's existence and address are logged in its
//! own database), so it can never disagree with them; mailboxes of dismounted databases are not found until
//! their database is mounted.

use std::sync::Arc;

use super::Store;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{MailError, MailOp, MailOutput, MailStore, MailboxInfo, MailboxKind};
use crate::types::Guid;

/// Where a mailbox lives.
#[derive(Clone)]
pub struct Located {
    /// The database's name in the store.
    pub database: String,
    /// The mounted database.
    pub engine: Arc<Engine<MailStore>>,
    /// The mailbox.
    pub mailbox: MailboxInfo,
}

impl Store<MailStore> {
    /// The mounted database holding mailbox `guid`.
    pub fn locate(&self, guid: &Guid) -> Result<Option<Located>> {
        self.find(|s, txn| s.mailbox(txn, guid))
    }

    /// The mounted database holding the mailbox with `address` (compared case-insensitively).
    pub fn locate_address(&self, address: &str) -> Result<Option<Located>> {
        self.find(|s, txn| s.mailbox_by_address(txn, address))
    }

    /// Creates a mailbox in the mounted database `database`, refusing an address that any mounted database
    /// already uses ([`MailError::AddressTaken`]). Returns its GUID.
    pub fn create_mailbox(&self, database: &str, address: &str, display_name: &str, kind: MailboxKind) -> Result<Guid> {
        // One creation at a time across the store, so two databases cannot take the same address at once.
        let _creating = self.creating.lock();
        if self.locate_address(address)?.is_some() {
            return Err(MailError::AddressTaken { address: address.to_owned() }.into());
        }
        let engine = self.database(database)?;
        let op = MailOp::create_mailbox(address, display_name, kind);
        let guid = match &op {
            MailOp::CreateMailbox { guid, .. } => *guid,
            _ => return Err(Error::InvalidArgument("not a mailbox creation".into())),
        };
        engine.commit(op)?;
        Ok(guid)
    }

    /// Delivers `raw` to mailbox `mailbox` in whichever mounted database holds it ([`Engine::deliver`]: into
    /// `folder`, a path, or the Inbox when `None`). A mailbox no mounted database holds is
    /// [`MailError::NoSuchMailbox`].
    pub fn deliver(&self, mailbox: &Guid, folder: Option<&str>, raw: impl Into<bytes::Bytes>) -> Result<MailOutput> {
        let Some(located) = self.locate(mailbox)? else {
            return Err(MailError::NoSuchMailbox { mailbox: *mailbox }.into());
        };
        located.engine.deliver(*mailbox, folder, raw)
    }

    fn find(
        &self,
        lookup: impl Fn(&MailStore, &heed::RoTxn<'_>) -> Result<Option<MailboxInfo>>,
    ) -> Result<Option<Located>> {
        let mounted: Vec<(String, Arc<Engine<MailStore>>)> =
            self.mounted.lock().iter().map(|(n, e)| (n.clone(), Arc::clone(e))).collect();
        for (database, engine) in mounted {
            if let Some(mailbox) = engine.read(&lookup)? {
                return Ok(Some(Located { database, engine, mailbox }));
            }
        }
        Ok(None)
    }
}
