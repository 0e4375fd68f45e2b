//! The mailbox model: mailboxes and their well-known folders, folders, items, UIDs, MODSEQs, flags, copy and
//! move, expunge and the change log — each through logged operations, checked after remounts too.

use std::sync::Arc;
use std::thread;

use mailstore::model::{
    ChangeKind, Entity, FlagAction, Flags, FolderId, FolderRole, ItemClass, MAX_MESSAGE_SIZE, MailEngine, MailError,
    MailOp, MailOutput, MailboxKind, QuotaKind, Uid,
};
use mailstore::model::{Fai, Order};
use mailstore::{Engine, Error, Guid, Options, Timestamp};

fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Alice Example <alice@example.com>\r\nTo: Bob <bob@example.com>\r\nSubject: {subject}\r\n\
         Date: Sun, 22 Nov 2026 10:00:00 +0100\r\nMessage-ID: <{subject}@example.com>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

fn mount(dir: &std::path::Path) -> MailEngine {
    Engine::mount(dir, Options::default()).unwrap()
}

fn create_mailbox(db: &MailEngine, address: &str) -> Guid {
    let op = MailOp::create_mailbox(address, "Test User", MailboxKind::User);
    let MailOp::CreateMailbox { guid, .. } = op else { unreachable!() };
    db.commit(op).unwrap();
    guid
}

fn role(db: &MailEngine, mbx: Guid, role: FolderRole) -> FolderId {
    db.read(|s, txn| s.folder_by_role(txn, &mbx, role)).unwrap().unwrap().id
}

fn append(db: &MailEngine, mbx: Guid, folder: FolderId, subject: &str) -> (Uid, u64) {
    match db.commit(MailOp::append(mbx, folder, message(subject, "hello"), Flags::empty(), vec![])).unwrap().output {
        MailOutput::Appended { uid, modseq, .. } => (uid, modseq),
        other => panic!("{other:?}"),
    }
}

#[test]
fn mail_mailbox_gets_the_well_known_folders() {
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    let mbx = create_mailbox(&db, "alice@example.com");
    let folders = db.read(|s, txn| s.folders(txn, &mbx)).unwrap();
    assert_eq!(folders.len(), 16, "root + 15 well-known folders");
    let visible: Vec<_> = folders.iter().filter(|f| !f.hidden && f.parent.is_some()).map(|f| f.name.as_str()).collect();
    assert_eq!(
        visible,
        [
            "Inbox",
            "Drafts",
            "Sent Items",
            "Deleted Items",
            "Junk Email",
            "Outbox",
            "Archive",
            "Calendar",
            "Contacts",
            "Tasks",
            "Notes"
        ]
    );
    let ri = folders.iter().find(|f| f.role == Some(FolderRole::RecoverableItems)).unwrap();
    for sub in [FolderRole::Deletions, FolderRole::Versions, FolderRole::Purges] {
        let f = folders.iter().find(|f| f.role == Some(sub)).unwrap();
        assert!(f.hidden);
        assert_eq!(f.parent, Some(ri.id));
    }
    assert_eq!(FolderRole::SentItems.special_use(), Some("\\Sent"));
    assert_eq!(FolderRole::DeletedItems.special_use(), Some("\\Trash"));
    let info = db.read(|s, txn| s.mailbox_by_address(txn, "ALICE@example.com")).unwrap().unwrap();
    assert_eq!(info.guid, mbx);

    // Public folder mailboxes get no mail folders; addresses and GUIDs are unique.
    let pf = db.commit(MailOp::create_mailbox("pf@example.com", "PF", MailboxKind::PublicFolderHierarchy)).unwrap();
    assert!(matches!(pf.output, MailOutput::MailboxCreated { .. }));
    let dup = db.commit(MailOp::create_mailbox("Alice@Example.com", "again", MailboxKind::Shared));
    assert!(matches!(dup, Err(Error::Mail(MailError::AddressTaken { .. }))), "{dup:?}");
}

#[test]
fn folders_names_and_moves() {
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    let mbx = create_mailbox(&db, "bob@example.com");
    let inbox = role(&db, mbx, FolderRole::Inbox);
    let root = db.read(|s, txn| s.folder_by_role(txn, &mbx, FolderRole::Root)).unwrap().unwrap().id;
    let create = |parent, name: &str| match db.commit(MailOp::create_folder(mbx, parent, name)) {
        Ok(c) => match c.output {
            MailOutput::FolderCreated { id, .. } => Ok(id),
            other => panic!("{other:?}"),
        },
        Err(e) => Err(e),
    };
    let projects = create(root, "Projects").unwrap();
    let alpha = create(projects, "Alpha").unwrap();
    assert!(
        matches!(create(root, "projects"), Err(Error::Mail(MailError::FolderExists { .. }))),
        "sibling names are case-insensitive"
    );
    for bad in ["", "a/b", "..", " padded", "x\u{7}y", &"n".repeat(256)] {
        let before = db.status().applied_lsn;
        assert!(matches!(create(root, bad), Err(Error::Mail(MailError::InvalidFolderName { .. }))), "{bad:?}");
        assert_eq!(db.status().applied_lsn, before, "{bad:?} reached the log");
    }
    let ri = role(&db, mbx, FolderRole::RecoverableItems);
    assert!(matches!(create(ri, "Sneaky"), Err(Error::Mail(MailError::RecoverableItems { .. }))));
    assert!(matches!(create(9999, "Orphan"), Err(Error::Mail(MailError::NoSuchFolder { folder: 9999, .. }))));

    let rename = |folder, parent, name: &str| {
        db.commit(MailOp::RenameFolder { mailbox: mbx, folder, parent, name: name.into() }).map(|_| ())
    };
    // No cycles, no renaming well-known folders.
    assert!(matches!(rename(projects, alpha, "Loop"), Err(Error::Mail(MailError::FolderCycle { .. }))));
    assert!(matches!(rename(projects, projects, "Self"), Err(Error::Mail(MailError::FolderCycle { .. }))));
    assert!(matches!(rename(inbox, root, "Mail"), Err(Error::Mail(MailError::WellKnownFolder { .. }))));
    rename(alpha, inbox, "Alpha 2").unwrap();
    let moved = db.read(|s, txn| s.child_folder(txn, &mbx, inbox, "alpha 2")).unwrap().unwrap();
    assert_eq!((moved.id, moved.parent), (alpha, Some(inbox)));
    assert!(db.read(|s, txn| s.child_folder(txn, &mbx, projects, "Alpha")).unwrap().is_none());
    // The old name is free again.
    create(projects, "Alpha").unwrap();
}

#[test]
fn uids_modseqs_counters_flags_copy_move_expunge() {
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    let mbx = create_mailbox(&db, "carol@example.com");
    let inbox = role(&db, mbx, FolderRole::Inbox);
    let archive = role(&db, mbx, FolderRole::Archive);
    let mut last_modseq = 0;
    for (i, subject) in ["one", "two", "three", "four"].into_iter().enumerate() {
        let (uid, modseq) = append(&db, mbx, inbox, subject);
        assert_eq!(uid, i as u32 + 1);
        assert!(modseq > last_modseq);
        last_modseq = modseq;
    }
    let folder = db.read(|s, txn| s.folder(txn, &mbx, inbox)).unwrap().unwrap();
    assert_eq!((folder.total, folder.unread, folder.uidnext, folder.highest_modseq), (4, 4, 5, last_modseq));
    let items = db.read(|s, txn| s.items_by_uid(txn, &mbx, inbox, 1, 100, Fai::Exclude)).unwrap();
    assert_eq!(items.iter().map(|i| i.uid).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(items[1].envelope.subject.as_deref(), Some("two"));
    assert_eq!(folder.size, items.iter().map(|i| i.size).sum::<u64>());
    let raw = db.read(|s, txn| s.raw(txn, &mbx, items[0].id)).unwrap().unwrap();
    assert_eq!(raw, message("one", "hello"));
    let part = db.read(|s, txn| s.raw_range(txn, &mbx, items[0].id, 6..11)).unwrap().unwrap();
    assert_eq!(part, b"Alice");

    // Flags: \Seen lowers unread; UNCHANGEDSINCE leaves newer items alone and reports them.
    let store = |uids: Vec<Uid>, action, flags, keywords: Vec<&str>, since| match db
        .commit(MailOp::StoreFlags {
            mailbox: mbx,
            folder: inbox,
            uids,
            action,
            flags,
            keywords: keywords.into_iter().map(String::from).collect(),
            unchanged_since: since,
        })
        .unwrap()
        .output
    {
        MailOutput::FlagsStored { modseq, updated, modified } => (modseq, updated, modified),
        other => panic!("{other:?}"),
    };
    let (m1, updated, _) = store(vec![1, 2], FlagAction::Add, Flags::SEEN, vec!["$Work"], None);
    let m1 = m1.unwrap();
    assert_eq!(updated, [(1, m1), (2, m1)]);
    assert_eq!(db.read(|s, txn| s.folder(txn, &mbx, inbox)).unwrap().unwrap().unread, 2);
    let (_, updated, modified) = store(vec![1, 3], FlagAction::Add, Flags::FLAGGED, vec![], Some(m1 - 1));
    assert_eq!(modified, [1], "item 1 changed after the given MODSEQ");
    assert_eq!(updated.iter().map(|u| u.0).collect::<Vec<_>>(), [3]);
    let (none, updated, _) = store(vec![2], FlagAction::Add, Flags::SEEN, vec![], None);
    assert_eq!((none, updated.len()), (None, 0), "a store that changes nothing takes no MODSEQ");
    let (_, _, _) = store(vec![2], FlagAction::Replace, Flags::DELETED, vec!["b", "a", "a"], None);
    let item2 = db.read(|s, txn| s.item_by_uid(txn, &mbx, inbox, 2)).unwrap().unwrap();
    assert_eq!((item2.flags, item2.keywords.clone()), (Flags::DELETED, vec!["a".to_string(), "b".to_string()]));
    assert_eq!(db.read(|s, txn| s.folder(txn, &mbx, inbox)).unwrap().unwrap().unread, 3, "2 is unseen again: 2, 3, 4");

    // Copy and move: new UIDs in the destination, the mapping reported, source removed on move.
    let copied =
        db.commit(MailOp::CopyItems { mailbox: mbx, from: inbox, uids: vec![1, 3], to: archive, remove_source: false });
    let MailOutput::Copied { mapping, .. } = copied.unwrap().output else { panic!() };
    assert_eq!(mapping, [(1, 1), (3, 2)]);
    let moved =
        db.commit(MailOp::CopyItems { mailbox: mbx, from: inbox, uids: vec![4, 99], to: archive, remove_source: true });
    let MailOutput::Copied { mapping, .. } = moved.unwrap().output else { panic!() };
    assert_eq!(mapping, [(4, 3)], "unknown UIDs are ignored");
    let (inbox_f, archive_f) =
        db.read(|s, txn| Ok((s.folder(txn, &mbx, inbox)?.unwrap(), s.folder(txn, &mbx, archive)?.unwrap()))).unwrap();
    assert_eq!((inbox_f.total, archive_f.total), (3, 3));

    // Expunge removes only \Deleted items; their UIDs are never given out again.
    let MailOutput::Expunged { uids, modseq } = db.commit(MailOp::expunge(mbx, inbox, None)).unwrap().output else {
        panic!()
    };
    assert_eq!(uids, [2]);
    let expunge_modseq = modseq.unwrap();
    let (uid, _) = append(&db, mbx, inbox, "five");
    assert_eq!(uid, 5, "UIDs are not reused");
    let changes = db.read(|s, txn| s.changes_since(txn, &mbx, expunge_modseq - 1)).unwrap();
    assert!(
        changes.iter().any(
            |c| c.kind == ChangeKind::Destroyed && c.entity == Entity::Item { id: item2.id, folder: inbox, uid: 2 }
        )
    );
    assert!(changes.windows(2).all(|w| w[0].modseq <= w[1].modseq));

    // Everything survives a remount.
    let before = db
        .read(|s, txn| Ok((s.folders(txn, &mbx)?, s.items_by_uid(txn, &mbx, archive, 1, 10, Fai::Include)?)))
        .unwrap();
    db.dismount().unwrap();
    let db = mount(dir.path());
    let after = db
        .read(|s, txn| Ok((s.folders(txn, &mbx)?, s.items_by_uid(txn, &mbx, archive, 1, 10, Fai::Include)?)))
        .unwrap();
    assert_eq!(before, after);
}

#[test]
fn concurrent_delivery_keeps_imap_invariants() {
    let dir = tempfile::tempdir().unwrap();
    let db: Arc<MailEngine> = Arc::new(mount(dir.path()));
    let mbx = create_mailbox(&db, "busy@example.com");
    let inbox = role(&db, mbx, FolderRole::Inbox);
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let db = Arc::clone(&db);
            thread::spawn(move || {
                let mut seen = Vec::new();
                for i in 0..40 {
                    let (uid, modseq) = append(&db, mbx, inbox, &format!("t{t}-{i}"));
                    // Flag some, concurrently with other deliveries.
                    if i % 3 == 0 {
                        db.commit(MailOp::store_flags(mbx, inbox, vec![uid], FlagAction::Add, Flags::SEEN)).unwrap();
                    }
                    seen.push((uid, modseq));
                }
                seen
            })
        })
        .collect();
    let mut all: Vec<(Uid, u64)> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    all.sort();
    // UIDs unique and dense; MODSEQ strictly increasing in UID order (UIDs are handed out in log order).
    assert_eq!(all.iter().map(|a| a.0).collect::<Vec<_>>(), (1..=320).collect::<Vec<_>>());
    assert!(all.windows(2).all(|w| w[0].1 < w[1].1));
    let folder = db.read(|s, txn| s.folder(txn, &mbx, inbox)).unwrap().unwrap();
    let items = db.read(|s, txn| s.items_by_uid(txn, &mbx, inbox, 1, 1000, Fai::Exclude)).unwrap();
    assert_eq!(folder.total, 320);
    assert_eq!(folder.unread, items.iter().filter(|i| !i.flags.contains(Flags::SEEN)).count() as u64);
    assert_eq!(folder.unread, 320 - 8 * 14);
    assert_eq!(folder.size, items.iter().map(|i| i.size).sum::<u64>());
}

fn folder_info(db: &MailEngine, mbx: Guid, id: FolderId) -> mailstore::model::FolderInfo {
    db.read(|s, txn| s.folder(txn, &mbx, id)).unwrap().unwrap()
}

#[test]
fn delete_goes_to_recoverable_items_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    let mbx = create_mailbox(&db, "dave@example.com");
    let inbox = role(&db, mbx, FolderRole::Inbox);
    let deletions = role(&db, mbx, FolderRole::Deletions);
    for s in ["a", "b", "c"] {
        append(&db, mbx, inbox, s);
    }
    let before = db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().unwrap();
    let MailOutput::DeletedToRecoverable { mapping, .. } =
        db.commit(MailOp::DeleteItems { mailbox: mbx, folder: inbox, uids: vec![1, 3], at: us(1_000) }).unwrap().output
    else {
        panic!()
    };
    assert_eq!(mapping, [(1, 1), (3, 2)]);
    let after = db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().unwrap();
    // The quota counts move from the mailbox to Recoverable Items.
    assert_eq!(after.items + after.recoverable_items, before.items);
    assert_eq!(after.size + after.recoverable_size, before.size);
    assert_eq!(after.recoverable_items, 2);
    assert_eq!(folder_info(&db, mbx, inbox).total, 1);
    assert_eq!(folder_info(&db, mbx, deletions).total, 2);
    let deleted = db.read(|s, txn| s.item_by_uid(txn, &mbx, deletions, 2)).unwrap().unwrap();
    assert_eq!(deleted.deleted.map(|d| (d.from, d.at)), Some((inbox, us(1_000))));
    // Deleted items are not stored or copied into Recoverable Items by other paths.
    assert!(matches!(
        db.commit(MailOp::CopyItems { mailbox: mbx, from: inbox, uids: vec![2], to: deletions, remove_source: false }),
        Err(Error::Mail(MailError::RecoverableItems { .. }))
    ));

    // Recover puts an item back where it came from, with a new UID.
    let MailOutput::Recovered { mapping, .. } =
        db.commit(MailOp::RecoverItems { mailbox: mbx, uids: vec![2] }).unwrap().output
    else {
        panic!()
    };
    assert_eq!(mapping, [(2, inbox, 4)]);
    assert!(db.read(|s, txn| s.item_by_uid(txn, &mbx, inbox, 4)).unwrap().unwrap().deleted.is_none());

    // Purge removes what was deleted before the cut-off, and nothing else.
    db.commit(MailOp::DeleteItems { mailbox: mbx, folder: inbox, uids: vec![2], at: us(5_000) }).unwrap();
    let MailOutput::Expunged { uids, .. } =
        db.commit(MailOp::PurgeDeleted { mailbox: mbx, deleted_before: us(2_000) }).unwrap().output
    else {
        panic!()
    };
    assert_eq!(uids, [1], "only the item deleted at 1000 is older than 2000");
    let m = db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().unwrap();
    assert_eq!((m.items, m.recoverable_items), (1, 1));
}

#[test]
fn deleting_a_folder_moves_its_subtree_to_recoverable_items() {
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    let mbx = create_mailbox(&db, "erin@example.com");
    let inbox = role(&db, mbx, FolderRole::Inbox);
    let deletions = role(&db, mbx, FolderRole::Deletions);
    let new_folder = |parent, name: &str| match db.commit(MailOp::create_folder(mbx, parent, name)).unwrap().output {
        MailOutput::FolderCreated { id, .. } => id,
        other => panic!("{other:?}"),
    };
    let top = new_folder(inbox, "Top");
    let child = new_folder(top, "Child");
    let grandchild = new_folder(child, "Grandchild");
    append(&db, mbx, top, "t");
    append(&db, mbx, grandchild, "g1");
    append(&db, mbx, grandchild, "g2");
    assert!(matches!(
        db.commit(MailOp::DeleteFolder { mailbox: mbx, folder: inbox, at: us(1) }),
        Err(Error::Mail(MailError::WellKnownFolder { .. }))
    ));
    let MailOutput::FolderDeleted { folders, items, .. } =
        db.commit(MailOp::DeleteFolder { mailbox: mbx, folder: top, at: us(7) }).unwrap().output
    else {
        panic!()
    };
    assert_eq!(folders, [top, child, grandchild]);
    assert_eq!(items, 3);
    for id in [top, child, grandchild] {
        assert!(db.read(|s, txn| s.folder(txn, &mbx, id)).unwrap().is_none());
    }
    assert!(db.read(|s, txn| s.child_folder(txn, &mbx, inbox, "Top")).unwrap().is_none());
    assert_eq!(folder_info(&db, mbx, deletions).total, 3);
    // Their folder is gone, so recovery brings them to the Inbox; the name can be used again.
    let MailOutput::Recovered { mapping, .. } =
        db.commit(MailOp::RecoverItems { mailbox: mbx, uids: vec![1, 2, 3] }).unwrap().output
    else {
        panic!()
    };
    assert!(mapping.iter().all(|(_, folder, _)| *folder == inbox));
    new_folder(inbox, "Top");
}

#[test]
fn quotas_refuse_delivery_and_report_state() {
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    let mbx = create_mailbox(&db, "frank@example.com");
    let inbox = role(&db, mbx, FolderRole::Inbox);
    let status = db.read(|s, txn| s.quota_status(txn, &mbx)).unwrap().unwrap();
    assert_eq!(status.quota.prohibit_send_receive, 2_300_000_000, "database default");
    let msg_size = message("q0", "hello").len() as u64;
    let quota = mailstore::model::Quota {
        issue_warning: msg_size,
        prohibit_send: 2 * msg_size,
        prohibit_send_receive: 3 * msg_size,
        recoverable_warning: msg_size,
        recoverable_hard: 2 * msg_size,
        max_message_size: 1 << 20,
    };
    db.commit(MailOp::SetQuota { mailbox: mbx, quota: Some(quota) }).unwrap();
    let bad = mailstore::model::Quota { issue_warning: 10, prohibit_send: 5, ..quota };
    assert!(matches!(
        db.commit(MailOp::SetQuota { mailbox: mbx, quota: Some(bad) }),
        Err(Error::Mail(MailError::InvalidQuota { .. }))
    ));
    for i in 0..3 {
        append(&db, mbx, inbox, &format!("q{i}"));
    }
    let status = db.read(|s, txn| s.quota_status(txn, &mbx)).unwrap().unwrap();
    assert!(status.warning && status.prohibit_send && !status.prohibit_send_receive);
    let before = db.read(|s, txn| s.folder(txn, &mbx, inbox)).unwrap().unwrap();
    let refused = db.commit(MailOp::append(mbx, inbox, message("q3", "hello"), Flags::empty(), vec![]));
    assert!(
        matches!(refused, Err(Error::Mail(MailError::QuotaExceeded { quota: QuotaKind::ProhibitSendReceive, .. }))),
        "{refused:?}"
    );
    assert_eq!(db.read(|s, txn| s.folder(txn, &mbx, inbox)).unwrap().unwrap(), before, "nothing half-written");
    // Recoverable Items has its own limit: two items fit, the third deletion is refused whole.
    db.commit(MailOp::DeleteItems { mailbox: mbx, folder: inbox, uids: vec![1, 2], at: us(1) }).unwrap();
    let refused = db.commit(MailOp::DeleteItems { mailbox: mbx, folder: inbox, uids: vec![3], at: us(1) });
    assert!(
        matches!(refused, Err(Error::Mail(MailError::QuotaExceeded { quota: QuotaKind::RecoverableItems, .. }))),
        "{refused:?}"
    );
    assert_eq!(db.read(|s, txn| s.folder(txn, &mbx, inbox)).unwrap().unwrap().total, 1);
    // Deleting freed mailbox quota: delivery works again.
    append(&db, mbx, inbox, "fits again");
}

#[test]
fn digest_is_deterministic_and_sensitive() {
    // Two databases fed the same operations reach the same digest; one more change makes them differ.
    let ops = |mbx: Guid| {
        vec![
            MailOp::CreateMailbox {
                guid: mbx,
                address: "gina@example.com".into(),
                display_name: "Gina".into(),
                kind: MailboxKind::User,
                created: us(42),
                uidvalidity: 7,
            },
            MailOp::CreateFolder { mailbox: mbx, parent: 1, name: "Projects".into(), uidvalidity: 8 },
        ]
    };
    let mbx = Guid([9; 16]);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (da, dbb) = (mount(a.path()), mount(b.path()));
    for op in ops(mbx) {
        da.commit(op.clone()).unwrap();
        dbb.commit(op).unwrap();
    }
    let digest = |db: &MailEngine| db.read(|s, txn| s.digest(txn)).unwrap();
    assert_eq!(digest(&da), digest(&dbb));
    da.commit(MailOp::create_folder(mbx, 1, "Extra")).unwrap();
    assert_ne!(digest(&da), digest(&dbb));
    // The digest survives a remount unchanged.
    let before = digest(&da);
    da.dismount().unwrap();
    assert_eq!(digest(&mount(a.path())), before);
}

#[test]
fn check_verifies_counters_against_items() {
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    let mbx = create_mailbox(&db, "henry@example.com");
    let inbox = role(&db, mbx, FolderRole::Inbox);
    for s in ["a", "b"] {
        append(&db, mbx, inbox, s);
    }
    db.dismount().unwrap();
    let report = mailstore::engine::check_as::<mailstore::model::MailStore>(dir.path()).unwrap();
    assert!(report.healthy(), "{:?}", report.problems);
    let listed = mailstore::engine::with_state::<mailstore::model::MailStore, _>(dir.path(), |s, txn| s.mailboxes(txn));
    assert_eq!(listed.unwrap().len(), 1);

    // Make a counter lie (as a bug in apply would): check names the mailbox and folder.
    // SAFETY: the database is dismounted and nothing else opens its environment while the test edits it.
    let env = unsafe { heed::EnvOpenOptions::new().read_txn_without_tls().max_dbs(128).open(dir.path().join("state")) }
        .unwrap();
    let rtxn = env.read_txn().unwrap();
    type Table<'e> = heed::Database<'e, heed::types::Bytes, heed::types::Bytes>;
    let (folders, blob_refs): (Table<'_>, Table<'_>) = env
        .open_databases_and_commit(rtxn, |dbo, rtxn| -> heed::Result<_> {
            Ok(heed::CommitOrAbort::<_, ()>::Commit((
                dbo.open_database(rtxn, Some("mail.folders"))?.unwrap(),
                dbo.open_database(rtxn, Some("mail.blob_refs"))?.unwrap(),
            )))
        })
        .unwrap()
        .unwrap_commit();
    let mut wtxn = env.write_txn().unwrap();
    let mut key = mbx.0.to_vec();
    key.extend_from_slice(&inbox.to_be_bytes());
    let stored = folders.get(&wtxn, &key).unwrap().unwrap();
    let mut info: mailstore::model::FolderInfo =
        mailstore::internals::codec::decode(&stored[..stored.len() - mailstore::internals::engine::CHECKSUM_LEN])
            .unwrap();
    info.unread += 5;
    let encoded = mailstore::internals::codec::encode(&info).unwrap();
    folders.put(&mut wtxn, &key, &mailstore::internals::engine::seal("mail.folders", &key, &encoded)).unwrap();
    wtxn.commit().unwrap();
    // And damage one stored message (as a bit flip would): check names the content whose bytes no longer match.
    // A `mail.blob_refs` value: count (bytes 0..4), length (4..8), body id (8..16), then where the bytes lie in
    // the log: generation (16..24) and offset in its file (24..32).
    let rtxn = env.read_txn().unwrap();
    let (hash, refs) = blob_refs.first(&rtxn).unwrap().map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap();
    drop(rtxn);
    let len = u32::from_be_bytes(refs[4..8].try_into().unwrap());
    let generation = u64::from_be_bytes(refs[16..24].try_into().unwrap());
    let offset = u64::from_be_bytes(refs[24..32].try_into().unwrap());
    let name = mailstore::internals::log::file_name(generation);
    let file = [mailstore::internals::engine::LOGS_DIR, mailstore::internals::engine::SEGMENTS_DIR]
        .iter()
        .map(|d| dir.path().join(d).join(&name))
        .find(|p| p.exists())
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[offset as usize + 10] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    drop(env);
    let report = mailstore::engine::check_as::<mailstore::model::MailStore>(dir.path()).unwrap();
    assert!(
        report.problems.iter().any(|p| p.contains("henry@example.com") && p.contains("7 unread")),
        "{:?}",
        report.problems
    );
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains(&hex) && p.contains(&format!("{len} bytes) reads back as bytes that hash to"))),
        "{:?}",
        report.problems
    );
}

#[test]
fn change_feed_folds_and_knows_when_history_is_gone() {
    use mailstore::model::Changes;
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    let mbx = create_mailbox(&db, "iris@example.com");
    let inbox = role(&db, mbx, FolderRole::Inbox);
    append(&db, mbx, inbox, "kept");
    let state = db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().unwrap().highest_modseq;
    let (flagged, _) = append(&db, mbx, inbox, "flagged later");
    let (gone, _) = append(&db, mbx, inbox, "created then expunged");
    let store =
        |uids: Vec<Uid>, flags| db.commit(MailOp::store_flags(mbx, inbox, uids, FlagAction::Add, flags)).unwrap();
    store(vec![1, flagged], Flags::SEEN);
    store(vec![gone], Flags::DELETED);
    db.commit(MailOp::expunge(mbx, inbox, None)).unwrap();

    let Changes::Feed(feed) = db.read(|s, txn| s.changes(txn, &mbx, state)).unwrap() else { panic!() };
    let uids = |v: &[Entity]| {
        v.iter().filter_map(|e| if let Entity::Item { uid, .. } = e { Some(*uid) } else { None }).collect::<Vec<_>>()
    };
    assert_eq!(uids(&feed.created), [flagged], "created then updated is created; created then gone is not reported");
    assert_eq!(uids(&feed.updated), [1]);
    assert!(feed.destroyed.is_empty());
    assert_eq!(feed.new_state, db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().unwrap().highest_modseq);
    // Since the state before the doomed item existed, nothing vanished; since its creation, it did.
    assert_eq!(db.read(|s, txn| s.vanished_since(txn, &mbx, inbox, state)).unwrap(), Some(vec![]));
    let after_creation = feed.new_state - 3;
    assert_eq!(db.read(|s, txn| s.vanished_since(txn, &mbx, inbox, after_creation)).unwrap(), Some(vec![gone]));

    // Trimming the history makes older states unanswerable, explicitly, and keeps newer ones.
    db.commit(MailOp::TrimHistory { mailbox: mbx, below: feed.new_state }).unwrap();
    assert!(matches!(db.read(|s, txn| s.changes(txn, &mbx, state)).unwrap(), Changes::CannotCalculate { .. }));
    assert_eq!(db.read(|s, txn| s.vanished_since(txn, &mbx, inbox, state)).unwrap(), None);
    assert!(matches!(db.read(|s, txn| s.changes(txn, &mbx, feed.new_state - 1)).unwrap(), Changes::Feed(_)));
    let Changes::Feed(empty) = db.read(|s, txn| s.changes(txn, &mbx, feed.new_state)).unwrap() else { panic!() };
    assert!(empty.created.is_empty() && empty.updated.is_empty() && empty.destroyed.is_empty());
}

#[test]
fn mailbox_soft_delete_restore_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    let mbx = create_mailbox(&db, "jack@example.com");
    let inbox = role(&db, mbx, FolderRole::Inbox);
    append(&db, mbx, inbox, "keep me");
    db.commit(MailOp::DeleteMailbox { mailbox: mbx, at: us(99) }).unwrap();
    // A deleted mailbox takes no operation and frees its address.
    let refused = db.commit(MailOp::append(mbx, inbox, message("x", "y"), Flags::empty(), vec![]));
    assert!(matches!(refused, Err(Error::Mail(MailError::MailboxDeleted { .. }))), "{refused:?}");
    assert!(db.read(|s, txn| s.mailbox_by_address(txn, "jack@example.com")).unwrap().is_none());
    assert_eq!(db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().unwrap().deleted, Some(us(99)));
    // Restored, with its content.
    db.commit(MailOp::RestoreMailbox { mailbox: mbx }).unwrap();
    assert_eq!(db.read(|s, txn| s.folder(txn, &mbx, inbox)).unwrap().unwrap().total, 1);
    assert!(
        matches!(db.commit(MailOp::purge_mailbox(mbx)), Err(Error::Mail(MailError::MailboxNotDeleted { .. }))),
        "purge needs a delete first"
    );
    // Deleted again, its address taken by a new mailbox: restore is refused; purge removes everything.
    db.commit(MailOp::DeleteMailbox { mailbox: mbx, at: us(100) }).unwrap();
    let other = create_mailbox(&db, "jack@example.com");
    assert!(matches!(
        db.commit(MailOp::RestoreMailbox { mailbox: mbx }),
        Err(Error::Mail(MailError::AddressTaken { .. }))
    ));
    db.commit(MailOp::purge_mailbox(mbx)).unwrap();
    assert!(db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().is_none());
    assert!(db.read(|s, txn| s.folders(txn, &mbx)).unwrap().is_empty());
    assert_eq!(db.read(|s, txn| s.mailbox_by_address(txn, "jack@example.com")).unwrap().unwrap().guid, other);
    db.dismount().unwrap();
    assert!(mailstore::engine::check_as::<mailstore::model::MailStore>(dir.path()).unwrap().healthy());
}

#[test]
fn delivery_by_path_received_order_free_busy_and_fai() {
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    let mbx = create_mailbox(&db, "kate@example.com");
    let inbox = role(&db, mbx, FolderRole::Inbox);
    let MailOutput::FolderCreated { id: lists, .. } =
        db.commit(MailOp::create_folder(mbx, inbox, "Lists")).unwrap().output
    else {
        panic!()
    };
    // The store driver: into the Inbox by default, or into a folder named by its path.
    assert!(matches!(db.deliver(mbx, None, message("to inbox", "x")).unwrap(), MailOutput::Appended { uid: 1, .. }));
    db.deliver(mbx, Some("inbox/LISTS"), message("to lists", "x")).unwrap();
    assert_eq!(folder_info(&db, mbx, lists).total, 1);
    assert!(matches!(
        db.deliver(mbx, Some("Inbox/Nowhere"), message("lost", "x")),
        Err(Error::Mail(MailError::NoSuchFolderPath { .. }))
    ));

    // Received-time order, newest first, with pagination; independent of UID order.
    for (i, at) in [300, 100, 200].into_iter().enumerate() {
        let op = MailOp::append(mbx, lists, message(&format!("r{i}"), "x"), Flags::empty(), vec![]);
        db.commit(op.received_at(us(at))).unwrap();
    }
    let page = |offset, limit| {
        db.read(|s, txn| s.items_by_received(txn, &mbx, lists, Order::OldestFirst, offset, limit))
            .unwrap()
            .into_iter()
            .map(|i| i.received)
            .collect::<Vec<_>>()
    };
    assert_eq!(page(0, 2), [us(100), us(200)]);
    assert_eq!(page(2, 10)[0], us(300));
    let newest = db.read(|s, txn| s.items_by_received(txn, &mbx, lists, Order::NewestFirst, 0, 1)).unwrap();
    assert_eq!(newest[0].envelope.subject.as_deref(), Some("to lists"), "delivered now, so newest");

    // Free/busy: appointments overlapping a range, ordered by start.
    let calendar = role(&db, mbx, FolderRole::Calendar);
    for (start, end) in [(us(10), us(20)), (us(30), us(40)), (us(5), us(12))] {
        db.commit(MailOp::append_item(
            mbx,
            calendar,
            message("meeting", "x"),
            ItemClass::Appointment { start, end },
            Fai::Exclude,
        ))
        .unwrap();
    }
    let busy = db.read(|s, txn| s.appointments_overlapping(txn, &mbx, us(11), us(31))).unwrap();
    let spans: Vec<_> = busy.iter().map(|i| i.class.clone()).collect();
    assert_eq!(
        spans,
        [
            ItemClass::Appointment { start: us(5), end: us(12) },
            ItemClass::Appointment { start: us(10), end: us(20) },
            ItemClass::Appointment { start: us(30), end: us(40) }
        ]
    );
    assert!(
        db.read(|s, txn| s.appointments_overlapping(txn, &mbx, us(20), us(30))).unwrap().is_empty(),
        "ends are exclusive"
    );

    // Folder-associated items are hidden from listings and folder counts, but count against the quota.
    let before = folder_info(&db, mbx, inbox);
    db.commit(MailOp::append_item(
        mbx,
        inbox,
        b"view settings".to_vec(),
        ItemClass::Other("IPM.Configuration".into()),
        Fai::Include,
    ))
    .unwrap();
    let after = folder_info(&db, mbx, inbox);
    assert_eq!((after.total, after.size), (before.total, before.size));
    assert_eq!(db.read(|s, txn| s.items_by_uid(txn, &mbx, inbox, 1, 100, Fai::Exclude)).unwrap().len(), 1);
    assert_eq!(db.read(|s, txn| s.items_by_uid(txn, &mbx, inbox, 1, 100, Fai::Include)).unwrap().len(), 2);
    db.dismount().unwrap();
    assert!(mailstore::engine::check_as::<mailstore::model::MailStore>(dir.path()).unwrap().healthy());
}

#[test]
fn outbox_submission_queue() {
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    let mbx = create_mailbox(&db, "liam@example.com");
    let outbox = role(&db, mbx, FolderRole::Outbox);
    let sent = role(&db, mbx, FolderRole::SentItems);
    let MailOutput::Submitted { item, uid } = db.commit(MailOp::submit(mbx, message("outgoing", "hi"))).unwrap().output
    else {
        panic!()
    };
    assert_eq!(uid, 1);
    db.commit(MailOp::submit(mbx, message("second", "hi"))).unwrap();
    let queue = db.read(|s, txn| s.submissions(txn)).unwrap();
    assert_eq!(queue.len(), 2);
    assert_eq!((queue[0].mailbox, queue[0].item), (mbx, item));
    let raw = db.read(|s, txn| s.raw(txn, &mbx, item)).unwrap().unwrap();
    assert_eq!(raw, message("outgoing", "hi"), "the transport reads the bytes from the queue entry");
    // The transport acknowledges: the message moves to Sent Items and leaves the queue.
    let MailOutput::Sent { uid } = db.commit(MailOp::AcknowledgeSubmission { mailbox: mbx, item }).unwrap().output
    else {
        panic!()
    };
    assert_eq!(
        db.read(|s, txn| s.item_by_uid(txn, &mbx, sent, uid)).unwrap().unwrap().envelope.subject.as_deref(),
        Some("outgoing")
    );
    assert_eq!(folder_info(&db, mbx, outbox).total, 1);
    assert!(matches!(
        db.commit(MailOp::AcknowledgeSubmission { mailbox: mbx, item }),
        Err(Error::Mail(MailError::NoSuchSubmission { .. }))
    ));
    // Deleting a queued message withdraws it.
    db.commit(MailOp::DeleteItems { mailbox: mbx, folder: outbox, uids: vec![2], at: us(1) }).unwrap();
    assert!(db.read(|s, txn| s.submissions(txn)).unwrap().is_empty());
    // Over the prohibit-send quota, submission is refused (delivery still works below prohibit-send-receive).
    let size = folder_info(&db, mbx, sent).size;
    let quota = mailstore::model::Quota {
        issue_warning: 1,
        prohibit_send: size - 1,
        prohibit_send_receive: 1 << 40,
        ..Default::default()
    };
    db.commit(MailOp::SetQuota { mailbox: mbx, quota: Some(quota) }).unwrap();
    assert!(matches!(
        db.commit(MailOp::submit(mbx, message("blocked", "x"))),
        Err(Error::Mail(MailError::QuotaExceeded { quota: QuotaKind::ProhibitSend, .. }))
    ));
    append(&db, mbx, role(&db, mbx, FolderRole::Inbox), "still delivered");
}

#[test]
fn identical_messages_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    let a = create_mailbox(&db, "sis-a@example.com");
    let b = create_mailbox(&db, "sis-b@example.com");
    let (ia, ib) = (role(&db, a, FolderRole::Inbox), role(&db, b, FolderRole::Inbox));
    let newsletter = message("newsletter", &"same content for everyone ".repeat(100));
    for (mbx, inbox) in [(a, ia), (b, ib), (a, ia)] {
        db.commit(MailOp::append(mbx, inbox, newsletter.clone(), Flags::empty(), vec![])).unwrap();
    }
    db.commit(MailOp::append(a, ia, message("other", "x"), Flags::empty(), vec![])).unwrap();
    let stored = || db.read(|s, txn| s.stored_contents(txn)).unwrap();
    assert_eq!(stored(), (2, (newsletter.len() + message("other", "x").len()) as u64));
    // Copies share the bytes too; every item still reads its own message.
    let archive = role(&db, a, FolderRole::Archive);
    db.commit(MailOp::CopyItems { mailbox: a, from: ia, uids: vec![1, 2], to: archive, remove_source: false }).unwrap();
    assert_eq!(stored().0, 2);
    let copy = db.read(|s, txn| s.item_by_uid(txn, &a, archive, 1)).unwrap().unwrap();
    assert_eq!(db.read(|s, txn| s.raw(txn, &a, copy.id)).unwrap().unwrap(), newsletter);
    // The bytes go when the last item holding them goes, not before.
    let expunge_all = |mbx: Guid, folder: FolderId| {
        db.commit(MailOp::store_flags(mbx, folder, (1..10).collect(), FlagAction::Add, Flags::DELETED)).unwrap();
        db.commit(MailOp::expunge(mbx, folder, None)).unwrap();
    };
    expunge_all(a, ia);
    expunge_all(a, archive);
    assert_eq!(stored().0, 1, "mailbox b still holds the newsletter");
    assert_eq!(db.read(|s, txn| s.raw(txn, &b, 1)).unwrap().unwrap(), newsletter);
    expunge_all(b, ib);
    assert_eq!(stored(), (0, 0));
    db.dismount().unwrap();
    assert!(mailstore::engine::check_as::<mailstore::model::MailStore>(dir.path()).unwrap().healthy());
}

#[test]
fn single_item_recovery_litigation_hold_and_retention() {
    use mailstore::model::DEFAULT_RETENTION;
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    let mbx = create_mailbox(&db, "mia@example.com");
    let inbox = role(&db, mbx, FolderRole::Inbox);
    let (deletions, purges) = (role(&db, mbx, FolderRole::Deletions), role(&db, mbx, FolderRole::Purges));
    assert_eq!(db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().unwrap().retention, DEFAULT_RETENTION);
    for s in ["a", "b", "c"] {
        append(&db, mbx, inbox, s);
    }
    db.commit(MailOp::DeleteItems { mailbox: mbx, folder: inbox, uids: vec![1, 2, 3], at: us(1_000) }).unwrap();
    let retention = |sir, hold| MailOp::SetRetention {
        mailbox: mbx,
        single_item_recovery: sir,
        litigation_hold: hold,
        retention: std::time::Duration::from_micros(10_000),
    };
    // Without single item recovery, a user's purge removes the item at once.
    db.commit(MailOp::PurgeItems { mailbox: mbx, uids: vec![1] }).unwrap();
    assert_eq!((folder_info(&db, mbx, deletions).total, folder_info(&db, mbx, purges).total), (2, 0));
    // With it, purged items wait in Purges until their retention ends.
    db.commit(retention(true, false)).unwrap();
    db.commit(MailOp::PurgeItems { mailbox: mbx, uids: vec![2] }).unwrap();
    assert_eq!((folder_info(&db, mbx, deletions).total, folder_info(&db, mbx, purges).total), (1, 1));
    // Under litigation hold nothing is purged, however old.
    db.commit(retention(true, true)).unwrap();
    let MailOutput::Expunged { uids, .. } =
        db.commit(MailOp::PurgeExpired { mailbox: mbx, now: Timestamp::from_micros(u64::MAX) }).unwrap().output
    else {
        panic!()
    };
    assert!(uids.is_empty());
    // Released from hold: retention (10 ms here) decides; deleted at 1 ms, so still kept at 10.9 ms, purged at 11.
    db.commit(retention(true, false)).unwrap();
    let purge = |now| match db.commit(MailOp::PurgeExpired { mailbox: mbx, now }).unwrap().output {
        MailOutput::Expunged { uids, .. } => uids.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!(purge(us(10_900)), 0);
    assert_eq!(purge(us(11_001)), 2, "the item in Deletions and the one in Purges");
    let m = db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().unwrap();
    assert_eq!((m.recoverable_items, m.recoverable_size), (0, 0));
}

#[test]
fn bad_messages_are_refused_or_flagged_never_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    let mbx = create_mailbox(&db, "noah@example.com");
    let inbox = role(&db, mbx, FolderRole::Inbox);
    // Over the configured maximum: a typed error, nothing written.
    let quota = mailstore::model::Quota { max_message_size: 1000, ..Default::default() };
    db.commit(MailOp::SetQuota { mailbox: mbx, quota: Some(quota) }).unwrap();
    let before = folder_info(&db, mbx, inbox);
    let big = message("big", &"x".repeat(2000));
    let refused = db.commit(MailOp::append(mbx, inbox, big.clone(), Flags::empty(), vec![]));
    assert!(matches!(refused, Err(Error::Mail(MailError::MessageTooLarge { limit: 1000, .. }))), "{refused:?}");
    assert!(matches!(db.commit(MailOp::submit(mbx, big)), Err(Error::Mail(MailError::MessageTooLarge { .. }))));
    assert_eq!(folder_info(&db, mbx, inbox), before);
    // Beyond what any log record may hold: refused before logging.
    let lsn = db.status().applied_lsn;
    let huge = vec![b'a'; 49 << 20];
    assert!(matches!(
        db.commit(MailOp::append(mbx, inbox, huge, Flags::empty(), vec![])),
        Err(Error::Mail(MailError::MessageTooLarge { limit, .. })) if limit == MAX_MESSAGE_SIZE as u64
    ));
    assert_eq!(db.status().applied_lsn, lsn);
    // A content hash that is not the hash of the bytes (an operation built by hand): refused before logging,
    // so single-instance storage can never file bytes under another message's hash.
    for mut forged in [
        MailOp::append(mbx, inbox, message("forged", "body"), Flags::empty(), vec![]),
        MailOp::submit(mbx, message("forged", "body")),
        MailOp::replace_item(mbx, inbox, 1, message("forged", "body"), mailstore::model::ItemClass::Note),
    ] {
        if let MailOp::Append { content, .. } | MailOp::Submit { content, .. } | MailOp::ReplaceItem { content, .. } =
            &mut forged
        {
            *content = mailstore::model::ContentHash::of(b"other bytes");
        }
        let refused = db.commit(forged);
        assert!(matches!(&refused, Err(Error::Mail(MailError::ContentHashMismatch { .. }))), "{refused:?}");
    }
    assert_eq!(db.status().applied_lsn, lsn);
    // Malformed MIME is stored and flagged, never a panic.
    for junk in [&b"\x00\x01\x02 not a message"[..], b"", b"no colon line\r\n\r\nbody", b"Subject: only\r\n"] {
        let out = db.commit(MailOp::append(mbx, inbox, junk.to_vec(), Flags::empty(), vec![])).unwrap().output;
        let MailOutput::Appended { uid, .. } = out else { panic!() };
        let item = db.read(|s, txn| s.item_by_uid(txn, &mbx, inbox, uid)).unwrap().unwrap();
        assert!(item.envelope.malformed, "{junk:?}");
        assert_eq!(db.read(|s, txn| s.raw(txn, &mbx, item.id)).unwrap().unwrap(), junk);
    }
    // Bad keywords and unknown ids are typed errors too.
    let bad_keyword = MailOp::StoreFlags {
        mailbox: mbx,
        folder: inbox,
        uids: vec![1],
        action: FlagAction::Add,
        flags: Flags::empty(),
        keywords: vec!["has space".into()],
        unchanged_since: None,
    };
    assert!(matches!(db.commit(bad_keyword), Err(Error::Mail(MailError::InvalidKeyword { .. }))));
    assert!(matches!(
        db.commit(MailOp::expunge(Guid([1; 16]), inbox, None)),
        Err(Error::Mail(MailError::NoSuchMailbox { .. }))
    ));
    assert!(matches!(
        db.commit(MailOp::expunge(mbx, 4242, None)),
        Err(Error::Mail(MailError::NoSuchFolder { folder: 4242, .. }))
    ));
}

#[test]
fn edits_keep_originals_in_versions_under_litigation_hold() {
    use mailstore::model::ItemClass;
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    let mbx = create_mailbox(&db, "olga@example.com");
    let calendar = role(&db, mbx, FolderRole::Calendar);
    let versions = role(&db, mbx, FolderRole::Versions);
    db.commit(MailOp::append_item(
        mbx,
        calendar,
        message("standup", "v1"),
        ItemClass::Appointment { start: us(10), end: us(20) },
        Fai::Exclude,
    ))
    .unwrap();
    let edit = |uid, body: &str, start| match db
        .commit(MailOp::replace_item(
            mbx,
            calendar,
            uid,
            message("standup", body),
            ItemClass::Appointment { start: us(start), end: us(start + 10) },
        ))
        .unwrap()
        .output
    {
        MailOutput::Replaced { uid, original_in_versions, .. } => (uid, original_in_versions),
        other => panic!("{other:?}"),
    };
    // Without a hold the original is simply replaced (a new UID: a message's content never changes under one).
    let (uid2, kept) = edit(1, "v2", 30);
    assert_eq!((uid2, kept), (2, None));
    assert_eq!(folder_info(&db, mbx, calendar).total, 1);
    // Under litigation hold the original goes to Versions, with where it came from.
    db.commit(MailOp::SetRetention {
        mailbox: mbx,
        single_item_recovery: true,
        litigation_hold: true,
        retention: std::time::Duration::from_micros(1),
    })
    .unwrap();
    let (uid3, kept) = edit(uid2, "v3", 50);
    assert_eq!((uid3, kept), (3, Some(1)));
    let original = db.read(|s, txn| s.item_by_uid(txn, &mbx, versions, 1)).unwrap().unwrap();
    assert_eq!(original.class, ItemClass::Appointment { start: us(30), end: us(40) });
    assert_eq!(original.deleted.map(|d| d.from), Some(calendar));
    assert_eq!(db.read(|s, txn| s.raw(txn, &mbx, original.id)).unwrap().unwrap(), message("standup", "v2"));
    // Free/busy follows the current version only.
    let busy = db.read(|s, txn| s.appointments_overlapping(txn, &mbx, us(0), us(100))).unwrap();
    assert_eq!(busy.len(), 1);
    assert_eq!(busy[0].class, ItemClass::Appointment { start: us(50), end: us(60) });
    assert!(matches!(
        db.commit(MailOp::replace_item(mbx, calendar, 99, message("x", "y"), ItemClass::Note)),
        Err(Error::Mail(MailError::NoSuchItem { uid: 99, .. }))
    ));
    db.dismount().unwrap();
    assert!(mailstore::engine::check_as::<mailstore::model::MailStore>(dir.path()).unwrap().healthy());
}

#[test]
fn newest_by_uid_skips_expunged_uids() {
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    let mbx = create_mailbox(&db, "pia@example.com");
    let inbox = role(&db, mbx, FolderRole::Inbox);
    for i in 0..6 {
        append(&db, mbx, inbox, &format!("m{i}"));
    }
    db.commit(MailOp::store_flags(mbx, inbox, vec![5, 6], FlagAction::Add, Flags::DELETED)).unwrap();
    db.commit(MailOp::expunge(mbx, inbox, None)).unwrap();
    let newest = db.read(|s, txn| s.newest_by_uid(txn, &mbx, inbox, 3)).unwrap();
    assert_eq!(newest.iter().map(|i| i.uid).collect::<Vec<_>>(), [4, 3, 2]);
    let page = db.read(|s, txn| s.items_by_received(txn, &mbx, inbox, Order::NewestFirst, 1, 2)).unwrap();
    assert_eq!(page.len(), 2, "offset and limit apply lazily");
}

#[test]
fn holds_cannot_be_bypassed() {
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    let mbx = create_mailbox(&db, "quinn@example.com");
    let inbox = role(&db, mbx, FolderRole::Inbox);
    let deletions = role(&db, mbx, FolderRole::Deletions);
    append(&db, mbx, inbox, "evidence");
    db.commit(MailOp::SetRetention {
        mailbox: mbx,
        single_item_recovery: true,
        litigation_hold: true,
        retention: std::time::Duration::from_micros(1),
    })
    .unwrap();
    db.commit(MailOp::DeleteItems { mailbox: mbx, folder: inbox, uids: vec![1], at: us(1) }).unwrap();
    // IMAP-style \Deleted + EXPUNGE inside Recoverable Items is refused.
    db.commit(MailOp::store_flags(mbx, deletions, vec![1], FlagAction::Add, Flags::DELETED)).unwrap();
    assert!(matches!(
        db.commit(MailOp::expunge(mbx, deletions, None)),
        Err(Error::Mail(MailError::RecoverableItems { .. }))
    ));
    // A mailbox on hold is not purged even once deleted.
    db.commit(MailOp::DeleteMailbox { mailbox: mbx, at: us(2) }).unwrap();
    assert!(matches!(db.commit(MailOp::purge_mailbox(mbx)), Err(Error::Mail(MailError::LitigationHold { .. }))));
    assert_eq!(db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().unwrap().recoverable_items, 1);
}

/// The listing records read in place equal the items after every kind of change, and `verify_counters` agrees.
fn listing_matches_items(db: &MailEngine, mbx: Guid) {
    db.read(|s, txn| {
        assert_eq!(s.verify_counters(txn)?, Vec::<String>::new());
        for f in s.folders(txn, &mbx)? {
            let all = s.items_by_uid(txn, &mbx, f.id, 1, usize::MAX, Fai::Include)?;
            let summaries = s.summaries_by_uid(txn, &mbx, f.id, 1, usize::MAX, Fai::Include)?;
            assert_eq!(all.len(), summaries.len());
            for (item, summary) in all.iter().zip(&summaries) {
                assert_eq!(s.item(txn, &mbx, item.id)?.as_ref(), Some(item), "the index copy equals the item");
                assert_eq!(&summary.to_item_info(), item);
                assert_eq!(summary.subject(), item.envelope.subject.as_deref());
                assert_eq!(summary.from().to_vec(), item.envelope.from);
                assert_eq!(summary.keywords().to_vec(), item.keywords);
                let one = s.summary_by_uid(txn, &mbx, f.id, item.uid)?.unwrap();
                assert_eq!(one.to_item_info(), *item);
            }
            let mut visible: Vec<_> = all.into_iter().filter(|i| !i.fai).collect();
            visible.reverse();
            let newest = s.newest_summaries(txn, &mbx, f.id, usize::MAX)?;
            assert_eq!(newest.iter().map(|s| s.to_item_info()).collect::<Vec<_>>(), visible);
            assert_eq!(s.newest_by_uid(txn, &mbx, f.id, 2)?, visible.iter().take(2).cloned().collect::<Vec<_>>());
            assert!(s.newest_summaries(txn, &mbx, f.id, 0)?.is_empty());
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn listing_records_follow_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = mount(dir.path());
    let mbx = create_mailbox(&db, "lena@example.com");
    let inbox = role(&db, mbx, FolderRole::Inbox);
    let archive = role(&db, mbx, FolderRole::Archive);
    let deletions = role(&db, mbx, FolderRole::Deletions);
    let calendar = role(&db, mbx, FolderRole::Calendar);
    for i in 0..6 {
        append(&db, mbx, inbox, &format!("list{i}"));
    }
    // A folder-associated item, an appointment and a message with keywords, Cc and an unusual subject.
    db.commit(MailOp::append_item(
        mbx,
        inbox,
        b"X-Setting: 1\r\n\r\n".to_vec(),
        ItemClass::Other("IPM.Cfg".into()),
        Fai::Include,
    ))
    .unwrap();
    db.commit(MailOp::append_item(
        mbx,
        calendar,
        message("meeting", "at noon"),
        ItemClass::Appointment { start: us(10), end: us(20) },
        Fai::Exclude,
    ))
    .unwrap();
    let raw =
        b"From: \"J\xc3\xb6rg\" <j@example.com>\r\nCc: a@x, \"B\" <b@y>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\
                In-Reply-To: <p@x>\r\nReferences: <r@x> <p@x>\r\n\r\nbody\r\n";
    db.commit(MailOp::append(mbx, inbox, raw.to_vec(), Flags::FLAGGED, vec!["work".into(), "$Label1".into()])).unwrap();
    listing_matches_items(&db, mbx);
    let newest = db.read(|s, txn| {
        let rows = s.newest_summaries(txn, &mbx, inbox, 1)?;
        Ok((rows[0].subject().map(str::to_owned), rows[0].cc().len(), rows[0].references().len()))
    });
    assert_eq!(newest.unwrap(), (Some("Grüße".to_owned()), 2, 2));
    // Flags and keywords (MODSEQ changes with them).
    db.commit(MailOp::store_flags(mbx, inbox, vec![1, 2, 3], FlagAction::Add, Flags::SEEN)).unwrap();
    db.commit(MailOp::StoreFlags {
        mailbox: mbx,
        folder: inbox,
        uids: vec![2, 8],
        action: FlagAction::Add,
        flags: Flags::empty(),
        keywords: vec!["later".into()],
        unchanged_since: None,
    })
    .unwrap();
    listing_matches_items(&db, mbx);
    // Copy, move, delete to Recoverable Items, recover, expunge, replace.
    db.commit(MailOp::CopyItems { mailbox: mbx, from: inbox, uids: vec![1, 2], to: archive, remove_source: false })
        .unwrap();
    db.commit(MailOp::CopyItems { mailbox: mbx, from: inbox, uids: vec![3], to: archive, remove_source: true })
        .unwrap();
    db.commit(MailOp::DeleteItems { mailbox: mbx, folder: inbox, uids: vec![4, 5], at: us(7) }).unwrap();
    listing_matches_items(&db, mbx);
    db.commit(MailOp::RecoverItems { mailbox: mbx, uids: vec![1] }).unwrap();
    db.commit(MailOp::store_flags(mbx, inbox, vec![6], FlagAction::Add, Flags::DELETED)).unwrap();
    db.commit(MailOp::expunge(mbx, inbox, None)).unwrap();
    db.commit(MailOp::replace_item(
        mbx,
        calendar,
        1,
        message("moved", "at one"),
        ItemClass::Appointment { start: us(30), end: us(40) },
    ))
    .unwrap();
    listing_matches_items(&db, mbx);
    let deleted = db.read(|s, txn| Ok(s.summary_by_uid(txn, &mbx, deletions, 2)?.and_then(|s| s.deleted()))).unwrap();
    assert_eq!(deleted.map(|d| (d.from, d.at)), Some((inbox, us(7))));
    // A folder deleted with its items, a submission sent, purges, and a replace under litigation hold.
    let root = db.read(|s, txn| s.folder_by_role(txn, &mbx, FolderRole::Root)).unwrap().unwrap().id;
    let MailOutput::FolderCreated { id: projects, .. } =
        db.commit(MailOp::create_folder(mbx, root, "Projects")).unwrap().output
    else {
        unreachable!()
    };
    append(&db, mbx, projects, "project1");
    append(&db, mbx, projects, "project2");
    db.commit(MailOp::DeleteFolder { mailbox: mbx, folder: projects, at: us(8) }).unwrap();
    let MailOutput::Submitted { item, .. } = db.commit(MailOp::submit(mbx, message("outgoing", "hi"))).unwrap().output
    else {
        unreachable!()
    };
    listing_matches_items(&db, mbx);
    db.commit(MailOp::AcknowledgeSubmission { mailbox: mbx, item }).unwrap();
    db.commit(MailOp::PurgeItems { mailbox: mbx, uids: vec![2] }).unwrap();
    db.commit(MailOp::PurgeDeleted { mailbox: mbx, deleted_before: us(8) }).unwrap();
    db.commit(MailOp::SetRetention {
        mailbox: mbx,
        single_item_recovery: true,
        litigation_hold: true,
        retention: std::time::Duration::from_micros(1),
    })
    .unwrap();
    db.commit(MailOp::replace_item(mbx, calendar, 2, message("moved again", "at two"), ItemClass::Task)).unwrap();
    listing_matches_items(&db, mbx);
    // The records survive a remount (they are state, rebuilt by nothing).
    db.dismount().unwrap();
    db = mount(dir.path());
    listing_matches_items(&db, mbx);
    db.dismount().unwrap();
    assert!(mailstore::engine::check_as::<mailstore::model::MailStore>(dir.path()).unwrap().healthy());
}

#[test]
fn mailbox_addresses_must_be_local_at_domain() {
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    for bad in
        ["", "noat", " alice@x.test", "alice@x.test ", "alice@", "@x.test", "a b@x.test", "a@x..test", "a@-x.test"]
    {
        let refused = db.commit(MailOp::create_mailbox(bad, "Bad", MailboxKind::User)).err();
        assert!(
            matches!(refused, Some(Error::Mail(MailError::InvalidAddress { .. }))),
            "{bad:?} was accepted or refused otherwise: {refused:?}"
        );
    }
    for good in
        ["alice@example.com", "first.last+tag@mail.example.org", "ü@例え.jp", "ops@[192.0.2.1]", "root@localhost"]
    {
        db.commit(MailOp::create_mailbox(good, "Good", MailboxKind::User)).unwrap();
    }
    db.dismount().unwrap();
}

#[test]
fn looking_up_an_impossible_address_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = mount(dir.path());
    create_mailbox(&db, "alice@example.com");
    for address in [String::new(), "x".repeat(600), "ALICE@EXAMPLE.COM".into()] {
        let found = db.read(|s, txn| s.mailbox_by_address(txn, &address)).unwrap();
        assert_eq!(found.is_some(), address.starts_with("ALICE"), "{address:?}");
    }
    db.dismount().unwrap();
}

#[test]
fn delivering_through_the_wrong_database_names_the_mailbox() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (db1, db2) = (mount(a.path()), mount(b.path()));
    let alice = create_mailbox(&db1, "alice@example.com");
    let wrong = db2.deliver(alice, None, message("hi", "there")).unwrap_err();
    assert!(matches!(wrong, Error::Mail(MailError::NoSuchMailbox { mailbox }) if mailbox == alice), "{wrong}");
    let no_folder = db1.deliver(alice, Some("Nope"), message("hi", "there")).unwrap_err();
    assert!(matches!(no_folder, Error::Mail(MailError::NoSuchFolderPath { .. })), "{no_folder}");
    db1.deliver(alice, None, message("hi", "there")).unwrap();
    db1.dismount().unwrap();
    db2.dismount().unwrap();
}

#[test]
fn flags_print_as_imap_writes_them() {
    assert_eq!((Flags::SEEN | Flags::FLAGGED).to_string(), "(\\Seen \\Flagged)");
    assert_eq!(format!("{:?}", Flags::empty()), "Flags()");
    assert_eq!(format!("{:?}", Flags::DELETED | Flags(64)), "Flags(\\Deleted)+0x40");
}

/// A time `micros` µs after the epoch.
fn us(micros: u64) -> Timestamp {
    Timestamp::from_micros(micros)
}
