//! Single-mailbox recovery: a mailbox's folders and messages read out of another database (here an older copy
//! of the same database, standing for one restored from a backup) and written into the live mailbox as ordinary
//! operations, flags, keywords and received times kept.

use mailstore::model::Fai;
use mailstore::model::{
    FlagAction, Flags, FolderId, FolderRole, ItemClass, MailEngine, MailOp, MailOutput, recover_mailbox,
};
use mailstore::{Engine, Error, Options, Timestamp};

mod common;
use common::copy_dir;
use common::mail::{check, deliver, expunge, mailbox, message};

fn folder(db: &MailEngine, mbx: mailstore::Guid, parent: FolderId, name: &str) -> FolderId {
    match db.commit(MailOp::create_folder(mbx, parent, name)).unwrap().output {
        MailOutput::FolderCreated { id, .. } => id,
        other => panic!("{other:?}"),
    }
}

/// Every item of a folder path as (raw, flags, keywords, received), in UID order.
type Contents = Vec<(Vec<u8>, Flags, Vec<String>, Timestamp)>;

fn contents(db: &MailEngine, mbx: mailstore::Guid, path: &str) -> Contents {
    db.read(|s, txn| {
        let f = s.folder_by_path(txn, &mbx, path)?.unwrap_or_else(|| panic!("no folder {path}"));
        let mut out = Vec::new();
        for item in s.items_by_uid(txn, &mbx, f.id, 1, usize::MAX, Fai::Include)? {
            let raw = s.raw(txn, &mbx, item.id)?.unwrap();
            out.push((raw, item.flags, item.keywords, item.received));
        }
        Ok(out)
    })
    .unwrap()
}

#[test]
fn a_mailbox_is_recovered_from_another_database_into_a_new_folder() {
    let dir = tempfile::tempdir().unwrap();
    let db: MailEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    let (mbx, inbox) = mailbox(&db);
    let root = db.read(|s, txn| s.folder_by_role(txn, &mbx, FolderRole::Root)).unwrap().unwrap().id;
    let uids: Vec<u32> = (0..300).map(|n| deliver(&db, mbx, inbox, message(n)).1).collect();
    db.commit(MailOp::StoreFlags {
        mailbox: mbx,
        folder: inbox,
        uids: uids[..10].to_vec(),
        action: FlagAction::Add,
        flags: Flags::SEEN | Flags::FLAGGED,
        keywords: vec!["$Important".into()],
        unchanged_since: None,
    })
    .unwrap();
    let projects = folder(&db, mbx, root, "Projects");
    let year = folder(&db, mbx, projects, "2026");
    deliver(&db, mbx, year, message(1000));
    db.commit(MailOp::append_item(
        mbx,
        year,
        b"Subject: view settings\r\n\r\n{}".to_vec(),
        ItemClass::Note,
        Fai::Include,
    ))
    .unwrap();
    let inbox_before = contents(&db, mbx, "Inbox");
    let year_before = contents(&db, mbx, "Projects/2026");
    db.dismount().unwrap();
    let recovery_dir = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), recovery_dir.path());

    // The user loses the Inbox's messages and the Projects folder.
    let db: MailEngine = Engine::mount(dir.path(), Options::default().create_if_missing(false)).unwrap();
    expunge(&db, mbx, inbox, uids.clone());
    db.commit(MailOp::DeleteFolder { mailbox: mbx, folder: projects, at: us(1) }).unwrap();
    assert!(contents(&db, mbx, "Inbox").is_empty());

    let from: MailEngine = Engine::mount(recovery_dir.path(), Options::default().create_if_missing(false)).unwrap();
    let report = recover_mailbox(&from, mbx, &db, mbx, "Recovered").unwrap();
    assert_eq!(report.items, 302, "{report:?}");
    assert!(report.folders >= 4, "Inbox, Projects, 2026 and the other visible folders: {report:?}");
    assert_eq!(contents(&db, mbx, "Recovered/Inbox"), inbox_before);
    assert_eq!(contents(&db, mbx, "Recovered/Projects/2026"), year_before);
    // Hidden folders (Recoverable Items) are not recovered.
    let hidden = db
        .read(|s, txn| s.folders(txn, &mbx))
        .unwrap()
        .into_iter()
        .filter(|f| f.hidden && f.name.contains("Recoverable"))
        .count();
    assert_eq!(hidden, 1, "one Recoverable Items folder, the mailbox's own");

    let missing = recover_mailbox(&from, mailstore::Guid::new_random(), &db, mbx, "Nothing").unwrap_err();
    assert!(matches!(missing, Error::Mail(mailstore::model::MailError::NoSuchMailbox { .. })), "{missing}");
    from.dismount().unwrap();
    db.dismount().unwrap();
    check(dir.path());
}

/// A time `micros` µs after the epoch.
fn us(micros: u64) -> Timestamp {
    Timestamp::from_micros(micros)
}
