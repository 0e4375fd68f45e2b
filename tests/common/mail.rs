//! Mailbox-model helpers shared by the integration tests: messages, a mailbox, deliveries, expunges, checks.

use std::path::Path;

use mailstore::Guid;
use mailstore::model::{FlagAction, Flags, FolderId, FolderRole, ItemId, MailEngine, MailOp, MailOutput, MailboxKind};

/// A message of about 10 KiB, distinct for each `n`.
pub fn message(n: usize) -> Vec<u8> {
    let body: String = (0..160).map(|line| format!("line {line} of message {n}: some text to fill it\r\n")).collect();
    format!(
        "From: Alice <alice@example.com>\r\nTo: Bob <bob@example.com>\r\nSubject: message {n}\r\n\
         Message-ID: <m{n}@example.com>\r\n\r\n{body}"
    )
    .into_bytes()
}

/// Creates alice's user mailbox; its GUID and Inbox.
pub fn mailbox(db: &MailEngine) -> (Guid, FolderId) {
    let op = MailOp::create_mailbox("alice@example.com", "Alice", MailboxKind::User);
    let MailOp::CreateMailbox { guid, .. } = op else { unreachable!() };
    db.commit(op).unwrap();
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &guid, FolderRole::Inbox)).unwrap().unwrap().id;
    (guid, inbox)
}

/// Appends `raw` to `folder`; the item and its UID.
pub fn deliver(db: &MailEngine, mbx: Guid, folder: FolderId, raw: Vec<u8>) -> (ItemId, u32) {
    match db.commit(MailOp::append(mbx, folder, raw, Flags::empty(), vec![])).unwrap().output {
        MailOutput::Appended { item, uid, .. } => (item, uid),
        other => panic!("{other:?}"),
    }
}

/// Marks `uids` deleted and expunges them.
pub fn expunge(db: &MailEngine, mbx: Guid, folder: FolderId, uids: Vec<u32>) {
    db.commit(MailOp::StoreFlags {
        mailbox: mbx,
        folder,
        uids: uids.clone(),
        action: FlagAction::Add,
        flags: Flags::DELETED,
        keywords: vec![],
        unchanged_since: None,
    })
    .unwrap();
    db.commit(MailOp::expunge(mbx, folder, Some(uids))).unwrap();
}

/// Asserts that `mailstore check` finds the dismounted database in `dir` healthy.
pub fn check(dir: &Path) {
    let report = mailstore::engine::check_as::<mailstore::model::MailStore>(dir).unwrap();
    assert!(report.healthy(), "{:?}", report.problems);
}

/// The digest of the mounted database's whole logical state.
pub fn digest(db: &MailEngine) -> String {
    db.read(|s, txn| s.digest(txn)).unwrap()
}
