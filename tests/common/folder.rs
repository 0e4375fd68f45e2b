//! A fresh database holding one mailbox, with its Inbox: the fixture of the read-side tests (search, sort).

use mailstore::model::{Flags, FolderId, FolderRole, MailEngine, MailOp, MailboxKind};
use mailstore::{Durability, Engine, Guid, Options, Timestamp};

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub db: MailEngine,
    pub mbx: Guid,
    pub inbox: FolderId,
}

impl Fixture {
    pub fn create() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db: MailEngine = Engine::mount(dir.path(), Options::default().durability(Durability::Relaxed)).unwrap();
        let op = MailOp::create_mailbox("user@example.com", "User", MailboxKind::User);
        let mbx = op.mailbox().unwrap();
        db.commit(op).unwrap();
        let inbox = db.read(|s, txn| s.folder_by_role(txn, &mbx, FolderRole::Inbox)).unwrap().unwrap().id;
        Fixture { _dir: dir, db, mbx, inbox }
    }

    /// Appends every message to `folder` in one batch, each with its flags, keywords and received time; their
    /// UIDs follow in order.
    pub fn append_to(&self, folder: FolderId, messages: Vec<(Vec<u8>, Flags, Vec<String>, Timestamp)>) {
        if messages.is_empty() {
            return;
        }
        let ops = messages.into_iter().map(|(raw, flags, keywords, received)| {
            MailOp::append(self.mbx, folder, raw, flags, keywords).received_at(received)
        });
        self.db.commit(MailOp::batch(ops)).unwrap();
    }
}
