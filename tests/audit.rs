//! The mailbox audit trail (issue 20): who did what to which items, written by the operations themselves in the
//! same transaction, read by mailbox and time range, replicated to passive copies, trimmed by housekeeping's audit
//! retention, and gone with a purged mailbox except the entry of the purge.

use std::sync::Arc;
use std::time::Duration;

use mailstore::model::{
    ActorRole, AuditAction, AuditEntry, FlagAction, Flags, FolderRole, HousekeepingOptions, MailEngine, MailOp,
    housekeep_due,
};
use mailstore::replication::{CopyOptions, LogSource, MountDial, PassiveCopy, ShippingSource, SourceOptions};
use mailstore::{Engine, Error, Guid, Options, Timestamp};

mod common;
use common::mail::{check, deliver, mailbox, message};

const ASSISTANT: &str = "assistant@example.com";

fn trail(db: &MailEngine, mbx: Guid) -> Vec<AuditEntry> {
    db.read(|s, txn| s.audit(txn, &mbx, Timestamp::from_micros(0), Timestamp::from_micros(u64::MAX), usize::MAX))
        .unwrap()
}

fn actor_of(e: &AuditEntry) -> Option<(&str, ActorRole)> {
    e.actor.as_ref().map(|a| (a.address.as_str(), a.role))
}

#[test]
fn the_trail_records_who_did_what_to_which_items() {
    let dir = tempfile::tempdir().unwrap();
    let db: MailEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    let (mbx, inbox) = mailbox(&db);
    let archive = db.read(|s, txn| s.folder_by_role(txn, &mbx, FolderRole::Archive)).unwrap().unwrap().id;
    let uids: Vec<u32> = (0..6).map(|n| deliver(&db, mbx, inbox, message(n)).1).collect();
    db.commit(MailOp::store_flags(mbx, inbox, uids.clone(), FlagAction::Add, Flags::SEEN)).unwrap();
    assert!(trail(&db, mbx).is_empty(), "deliveries and flag changes are the change log's, not the audit trail's");

    let before = Timestamp::now();
    db.commit(MailOp::delete_items(mbx, inbox, uids[..2].to_vec()).by(ASSISTANT, ActorRole::Delegate)).unwrap();
    db.commit(MailOp::move_items(mbx, inbox, vec![uids[2]], archive).by("alice@example.com", ActorRole::Owner))
        .unwrap();
    db.commit(MailOp::store_flags(mbx, inbox, vec![uids[3]], FlagAction::Add, Flags::DELETED)).unwrap();
    db.commit(MailOp::expunge(mbx, inbox, None)).unwrap();
    db.commit(MailOp::audit_access(mbx, inbox, vec![uids[4]], "officer@example.com", ActorRole::Administrator))
        .unwrap();
    let hold = MailOp::SetRetention {
        mailbox: mbx,
        single_item_recovery: true,
        litigation_hold: true,
        retention: Duration::from_secs(86_400),
    };
    db.commit(hold.by("officer@example.com", ActorRole::Administrator)).unwrap();
    db.commit(MailOp::submit(mbx, message(99)).by(ASSISTANT, ActorRole::Delegate)).unwrap();
    // A refused operation leaves no entry (its transaction is rolled back with it).
    let refused = db.commit(MailOp::delete_items(mbx, 999, vec![1]).by(ASSISTANT, ActorRole::Delegate));
    assert!(matches!(refused, Err(Error::Mail(_))), "{refused:?}");
    // An operation on items that are not there acts on nothing and records nothing.
    db.commit(MailOp::delete_items(mbx, inbox, vec![5000]).by(ASSISTANT, ActorRole::Delegate)).unwrap();

    let entries = trail(&db, mbx);
    let summary: Vec<_> = entries.iter().map(|e| (e.action, actor_of(e), e.folder, e.uids.clone(), e.count)).collect();
    assert_eq!(
        summary,
        vec![
            (AuditAction::SoftDelete, Some((ASSISTANT, ActorRole::Delegate)), Some(inbox), uids[..2].to_vec(), 2),
            (AuditAction::Move, Some(("alice@example.com", ActorRole::Owner)), Some(inbox), vec![uids[2]], 1),
            (AuditAction::HardDelete, None, Some(inbox), vec![uids[3]], 1),
            (
                AuditAction::Access,
                Some(("officer@example.com", ActorRole::Administrator)),
                Some(inbox),
                vec![uids[4]],
                1
            ),
            (AuditAction::HoldChange, Some(("officer@example.com", ActorRole::Administrator)), None, vec![], 0),
            (AuditAction::Send, Some((ASSISTANT, ActorRole::Delegate)), None, vec![1], 1),
        ]
    );
    assert!(entries.windows(2).all(|w| w[0].lsn < w[1].lsn && w[0].at <= w[1].at));
    assert!(entries[0].at >= before);
    // By time range: from the third entry's time on, and a limit.
    let from = entries[2].at;
    let later = db.read(|s, txn| s.audit(txn, &mbx, from, Timestamp::from_micros(u64::MAX), 2)).unwrap();
    assert_eq!(later.len(), 2);
    assert!(later.iter().all(|e| e.at >= from));
    let none_before = db.read(|s, txn| s.audit(txn, &mbx, Timestamp::from_micros(0), before, usize::MAX)).unwrap();
    assert!(none_before.is_empty());
    db.dismount().unwrap();
    check(dir.path());
}

#[test]
fn batches_record_each_part_and_audited_operations_do_not_nest() {
    let dir = tempfile::tempdir().unwrap();
    let db: MailEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    let (mbx, inbox) = mailbox(&db);
    let uids: Vec<u32> = (0..4).map(|n| deliver(&db, mbx, inbox, message(n)).1).collect();
    // A whole batch by one actor, in one record: one entry per audited part, the append not audited.
    let batch = MailOp::batch([
        MailOp::delete_items(mbx, inbox, vec![uids[0]]),
        MailOp::append(mbx, inbox, message(10), Flags::empty(), vec![]),
        MailOp::delete_items(mbx, inbox, vec![uids[1]]),
    ]);
    let lsn = db.commit(batch.by(ASSISTANT, ActorRole::Delegate)).unwrap().lsn;
    // A batch of parts by different actors.
    let mixed = MailOp::batch([
        MailOp::delete_items(mbx, inbox, vec![uids[2]]).by("one@example.com", ActorRole::Delegate),
        MailOp::delete_items(mbx, inbox, vec![uids[3]]).by("two@example.com", ActorRole::Delegate),
    ]);
    db.commit(mixed).unwrap();
    let entries = trail(&db, mbx);
    let who: Vec<_> = entries.iter().map(|e| (e.lsn == lsn, actor_of(e).unwrap().0, e.uids.clone())).collect();
    assert_eq!(
        who,
        vec![
            (true, ASSISTANT, vec![uids[0]]),
            (true, ASSISTANT, vec![uids[1]]),
            (false, "one@example.com", vec![uids[2]]),
            (false, "two@example.com", vec![uids[3]]),
        ]
    );
    let nested =
        MailOp::expunge(mbx, inbox, None).by("a@example.com", ActorRole::Owner).by("b@example.com", ActorRole::Owner);
    assert!(matches!(db.commit(nested), Err(Error::Mail(mailstore::model::MailError::InvalidAudit { .. }))));
    let nameless = MailOp::expunge(mbx, inbox, None).by("", ActorRole::Owner);
    assert!(matches!(db.commit(nameless), Err(Error::Mail(mailstore::model::MailError::InvalidAudit { .. }))));
}

#[test]
fn the_trail_replicates_survives_a_failover_is_trimmed_and_goes_with_a_purged_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let db: Arc<MailEngine> = Arc::new(Engine::mount(dir.path().join("active"), Options::default()).unwrap());
    let source = Arc::new(ShippingSource::new(Arc::clone(&db), SourceOptions::default()).unwrap());
    let (mbx, inbox) = mailbox(&db);
    let uids: Vec<u32> = (0..3).map(|n| deliver(&db, mbx, inbox, message(n)).1).collect();
    for uid in &uids {
        db.commit(MailOp::delete_items(mbx, inbox, vec![*uid]).by(ASSISTANT, ActorRole::Delegate)).unwrap();
    }
    let log: Arc<dyn LogSource> = source.clone();
    let copy_options = CopyOptions::default().poll(Duration::from_millis(20));
    let copy: PassiveCopy<mailstore::model::MailStore> =
        PassiveCopy::seed(dir.path().join("copy"), source.as_ref(), log, copy_options, |_| {}).unwrap();
    assert!(copy.wait_replayed(db.status().applied_lsn, Duration::from_secs(20)));
    let on_copy = copy
        .read(|s, txn| s.audit(txn, &mbx, Timestamp::from_micros(0), Timestamp::from_micros(u64::MAX), usize::MAX))
        .unwrap();
    assert_eq!(on_copy, trail(&db, mbx), "the copy holds the same trail, with the same times");
    assert_eq!(on_copy.len(), 3);

    // After a failover the activated copy carries the trail on: what its users do is added to it.
    let db: MailEngine = copy.activate(MountDial::Lossless, 2, Options::default()).unwrap();
    drop(source);
    assert_eq!(trail(&db, mbx), on_copy, "the activated copy starts from the replicated trail");
    let uid = deliver(&db, mbx, inbox, message(3)).1;
    db.commit(MailOp::delete_items(mbx, inbox, vec![uid]).by(ASSISTANT, ActorRole::Delegate)).unwrap();
    let after = trail(&db, mbx);
    assert_eq!(after.len(), 4);
    assert_eq!(after[..3], on_copy[..]);
    assert_eq!(
        (after[3].action, actor_of(&after[3])),
        (AuditAction::SoftDelete, Some((ASSISTANT, ActorRole::Delegate)))
    );

    // Housekeeping with a retention that ends now removes them all.
    let options = HousekeepingOptions::default().audit_retention(Duration::ZERO);
    housekeep_due(&db, &options, Timestamp::now()).unwrap();
    assert!(trail(&db, mbx).is_empty(), "{:?}", trail(&db, mbx));

    // A purged mailbox leaves only the entry of its purge.
    db.commit(MailOp::delete_items(mbx, inbox, vec![]).by(ASSISTANT, ActorRole::Delegate)).unwrap();
    db.commit(
        MailOp::DeleteMailbox { mailbox: mbx, at: Timestamp::now() }.by("admin@example.com", ActorRole::Administrator),
    )
    .unwrap();
    db.commit(MailOp::purge_mailbox(mbx).by("admin@example.com", ActorRole::Administrator)).unwrap();
    let left: Vec<_> = trail(&db, mbx).iter().map(|e| e.action).collect();
    assert_eq!(left, vec![AuditAction::MailboxPurge]);
}
