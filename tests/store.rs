//! The store: several databases under one root, each mounted, dismounted and deleted on its own.

mod common;

use std::fs;

use common::*;
use mailstore::kv::Kv;
use mailstore::model::Fai;
use mailstore::model::MailError;
use mailstore::store::{DATABASES_DIR, validate_name};
use mailstore::{Error, Options, Store, StoreError};

fn open(root: &std::path::Path) -> Store<Kv> {
    Store::open(root, Options::default()).unwrap()
}

#[test]
fn databases_are_independent() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = open(&root);
    let db1 = store.create_database("db1").unwrap();
    let db2 = store.create_database("db2").unwrap();
    assert_ne!(db1.guid(), db2.guid());
    db1.commit(put("k", "one")).unwrap();
    db2.commit(put("k", "two")).unwrap();
    db2.commit(put("only-in-2", "x")).unwrap();
    assert_eq!(get(&db1, "k").as_deref(), Some(&b"one"[..]));
    assert_eq!(count(&db1), 1);
    assert_eq!(count(&db2), 2);
    // Each has its own log and checkpoint.
    assert_eq!(db1.status().applied_lsn, 1);
    assert_eq!(db2.status().applied_lsn, 2);

    let names: Vec<_> = store.list().unwrap().into_iter().map(|e| (e.name, e.mounted)).collect();
    assert_eq!(names, [("db1".to_string(), true), ("db2".to_string(), true)]);
    drop(db1);
    store.dismount_database("db1").unwrap();
    assert!(matches!(store.database("db1"), Err(Error::Store(StoreError::NotMounted { .. }))));
    assert!(!store.list().unwrap()[0].mounted);
    // db2 keeps working while db1 is dismounted.
    db2.commit(put("while-db1-down", "y")).unwrap();
    let db1 = store.mount_database("db1").unwrap();
    assert!(db1.recovery_report().was_clean);
    assert_eq!(get(&db1, "k").as_deref(), Some(&b"one"[..]));
    drop((db1, db2));
    store.close().unwrap();

    // Reopened, every database is there and was dismounted cleanly.
    let store = open(&root);
    for name in ["db1", "db2"] {
        let db = store.mount_database(name).unwrap();
        assert!(db.recovery_report().was_clean, "{name}");
    }
    assert_eq!(count(&store.database("db2").unwrap()), 3);
}

#[test]
fn names_cannot_leave_the_root() {
    for bad in ["", ".", "..", "../x", "a/b", "/abs", ".hidden", "-dash", "a\\b", "sp ace", "ü", &"x".repeat(65)] {
        assert!(matches!(validate_name(bad), Err(Error::Store(StoreError::InvalidName { .. }))), "{bad:?} accepted");
    }
    for good in ["db1", "Mailbox_DB-01", "a.b", "9", &"x".repeat(64)] {
        validate_name(good).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(matches!(store.create_database("../escape"), Err(Error::Store(StoreError::InvalidName { .. }))));
    assert!(matches!(store.mount_database("a/b"), Err(Error::Store(StoreError::InvalidName { .. }))));
    assert!(!dir.path().parent().unwrap().join("escape").exists());
}

#[test]
fn one_store_per_root_and_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(matches!(Store::<Kv>::open(dir.path(), Options::default()), Err(Error::AlreadyMounted { .. })));
    store.create_database("db").unwrap();
    assert!(matches!(store.create_database("db"), Err(Error::Store(StoreError::DatabaseExists { .. }))));
    assert!(matches!(store.mount_database("missing"), Err(Error::Store(StoreError::NoSuchDatabase { .. }))));
    assert!(matches!(store.dismount_database("missing"), Err(Error::Store(StoreError::NotMounted { .. }))));

    // A handle still in use keeps the database mounted.
    let handle = store.database("db").unwrap();
    assert!(matches!(store.dismount_database("db"), Err(Error::Store(StoreError::InUse { handles: 1, .. }))));
    handle.commit(put("still", "usable")).unwrap();
    drop(handle);
    store.dismount_database("db").unwrap();

    // An unrelated non-empty directory is never turned into a store.
    let other = tempfile::tempdir().unwrap();
    fs::write(other.path().join("notes.txt"), "mine").unwrap();
    assert!(matches!(Store::<Kv>::open(other.path(), Options::default()), Err(Error::NotADatabase { .. })));
}

#[test]
fn delete_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let db = store.create_database("gone").unwrap();
    db.commit(put("k", "v")).unwrap();
    drop(db);
    assert!(
        matches!(store.delete_database("gone"), Err(Error::Store(StoreError::Mounted { .. }))),
        "mounted databases are not deleted"
    );
    store.dismount_database("gone").unwrap();
    store.delete_database("gone").unwrap();
    assert!(store.list().unwrap().is_empty());
    assert!(matches!(store.delete_database("gone"), Err(Error::Store(StoreError::NoSuchDatabase { .. }))));
    // The name can be used again, for a new database.
    let again = store.create_database("gone").unwrap();
    assert_eq!(count(&again), 0);
    drop(again);
    store.close().unwrap();

    // A deletion interrupted after the rename is finished when the store opens.
    let leftover = dir.path().join(DATABASES_DIR).join(".deleting-old-123");
    fs::create_dir_all(leftover.join("state")).unwrap();
    let store = open(dir.path());
    assert!(!leftover.exists());
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn mailbox_directory_across_databases() {
    use mailstore::model::{MailStore, MailboxKind};
    let dir = tempfile::tempdir().unwrap();
    let store: Store<MailStore> = Store::open(dir.path(), Options::default()).unwrap();
    store.create_database("db1").unwrap();
    store.create_database("db2").unwrap();
    let alice = store.create_mailbox("db1", "alice@example.com", "Alice", MailboxKind::User).unwrap();
    let room = store.create_mailbox("db2", "room1@example.com", "Room 1", MailboxKind::Room).unwrap();
    // Addresses are unique across the store's mounted databases.
    assert!(matches!(
        store.create_mailbox("db2", "ALICE@example.com", "Other", MailboxKind::User),
        Err(Error::Mail(MailError::AddressTaken { .. }))
    ));
    assert_eq!(store.locate(&alice).unwrap().map(|l| l.database).as_deref(), Some("db1"));
    assert_eq!(store.locate(&room).unwrap().map(|l| l.database).as_deref(), Some("db2"));
    let found = store.locate_address("room1@EXAMPLE.com").unwrap().unwrap();
    assert_eq!((found.database.as_str(), found.mailbox.guid, found.mailbox.kind), ("db2", room, MailboxKind::Room));
    assert!(store.locate(&mailstore::Guid([0; 16])).unwrap().is_none());
    // A dismounted database's mailboxes are found again once it is mounted.
    store.dismount_database("db1").unwrap();
    assert!(store.locate(&alice).unwrap().is_none());
    store.mount_database("db1").unwrap();
    assert!(store.locate(&alice).unwrap().is_some());

    // The store delivers into whichever database holds the mailbox.
    let raw = b"From: Bob <bob@example.com>\r\nSubject: hi\r\n\r\nhello\r\n".to_vec();
    assert!(matches!(
        store.deliver(&room, None, raw.clone()).unwrap(),
        mailstore::model::MailOutput::Appended { uid: 1, .. }
    ));
    let db2 = store.database("db2").unwrap();
    let inbox = db2.read(|s, txn| s.folder_by_role(txn, &room, mailstore::model::FolderRole::Inbox)).unwrap().unwrap();
    assert_eq!(inbox.total, 1);
    let item = db2.read(|s, txn| s.item_by_uid(txn, &room, inbox.id, 1)).unwrap().unwrap();
    assert_eq!(item.envelope.from_address(), Some("bob@example.com"));
    let nobody = mailstore::Guid([9; 16]);
    let missing = store.deliver(&nobody, None, raw).unwrap_err();
    assert!(matches!(missing, Error::Mail(MailError::NoSuchMailbox { mailbox }) if mailbox == nobody), "{missing}");
}

#[test]
fn open_mounts_every_database_and_a_damaged_one_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_database("db1").unwrap().commit(put("k", "v")).unwrap();
    store.create_database("db2").unwrap().commit(put("k", "w")).unwrap();
    store.close().unwrap();

    // Reopened: both are mounted, nothing to do but ask.
    let store = open(dir.path());
    assert_eq!(get(&store.database("db1").unwrap(), "k").as_deref(), Some(&b"v"[..]));
    assert!(store.list().unwrap().iter().all(|e| e.mounted && e.mount_failure.is_none()));
    store.close().unwrap();

    // db2's checkpoint is unreadable: db1 is served, db2 is reported, and mounts again once repaired.
    let checkpoint = dir.path().join(DATABASES_DIR).join("db2").join("checkpoint");
    let saved = fs::read(&checkpoint).unwrap();
    fs::write(&checkpoint, vec![0u8; saved.len()]).unwrap();
    let store = open(dir.path());
    assert_eq!(get(&store.database("db1").unwrap(), "k").as_deref(), Some(&b"v"[..]));
    let Err(Error::Store(StoreError::MountFailed { name, reason })) = store.database("db2") else {
        panic!("db2 mounted with an unreadable checkpoint")
    };
    assert_eq!(name, "db2");
    assert!(reason.contains("checkpoint"), "{reason}");
    let entry = store.list().unwrap().into_iter().find(|e| e.name == "db2").unwrap();
    assert!(!entry.mounted && entry.mount_failure.is_some(), "{entry:?}");
    fs::write(&checkpoint, saved).unwrap();
    assert_eq!(get(&store.mount_database("db2").unwrap(), "k").as_deref(), Some(&b"w"[..]));
    assert!(store.list().unwrap().iter().all(|e| e.mount_failure.is_none()));
}

#[test]
fn close_gives_the_store_back_while_a_handle_lives_and_can_be_retried() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let db = store.create_database("db1").unwrap();
    store.create_database("db2").unwrap();
    let failed = store.close().unwrap_err();
    assert!(matches!(failed.error(), Error::Store(StoreError::InUse { handles: 1, .. })), "{failed}");
    let store = failed.into_store().expect("the store comes back with db1 mounted");
    assert!(store.database("db1").is_ok(), "db1 stays mounted");
    assert!(matches!(store.database("db2"), Err(Error::Store(StoreError::NotMounted { .. }))), "db2 was dismounted");
    db.commit(put("still", "works")).unwrap();
    drop(db);
    store.close().unwrap();
    // Closed for real: the root can be opened again.
    let store = open(dir.path());
    assert_eq!(get(&store.database("db1").unwrap(), "still").as_deref(), Some(&b"works"[..]));
}

/// The README's mail example, run twice on the same directory: the second run finds what the first created.
#[test]
fn the_readme_mail_example_runs_twice_on_one_directory() {
    use mailstore::model::{Flags, FolderRole, MailOp, MailStore, MailboxKind};
    let dir = tempfile::tempdir().unwrap();
    for run in 1..=2u64 {
        let store: Store<MailStore> = Store::open(dir.path(), Options::default()).unwrap();
        let db = store.open_database("db1").unwrap();
        let alice = match store.locate_address("alice@example.com").unwrap() {
            Some(found) => found.mailbox.guid,
            None => store.create_mailbox("db1", "alice@example.com", "Alice", MailboxKind::User).unwrap(),
        };
        let inbox = db.read(|s, txn| s.folder_by_role(txn, &alice, FolderRole::Inbox)).unwrap().unwrap().id;
        let raw = b"From: bob@example.com\r\nSubject: Hello\r\n\r\nHi Alice!\r\n".to_vec();
        db.commit(MailOp::append(alice, inbox, raw, Flags::empty(), vec![])).unwrap();
        let items = db.read(|s, txn| s.items_by_uid(txn, &alice, inbox, 1, 50, Fai::Exclude)).unwrap();
        assert_eq!(items.len() as u64, run);
        drop(db);
        store.close().unwrap();
    }
}
