//! UIDVALIDITY is never reused (issue 17's library defect): it used to be the folder's creation time in seconds,
//! so a folder deleted and re-created under the same name within one second kept its UIDVALIDITY while UIDNEXT
//! restarted at 1, and a client's cache paired its old UIDs with new messages. Now every folder of a database gets
//! a UIDVALIDITY no folder of it had before: in the same second, across a remount, for a mailbox deleted and
//! re-created under the same address, on a passive copy and after its activation, and after the process is
//! killed with SIGKILL while it creates and deletes folders.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use mailstore::model::{FolderInfo, FolderRole, MailEngine, MailOp, MailOutput, MailboxKind};
use mailstore::replication::{CopyOptions, LogSource, MountDial, PassiveCopy, ShippingSource, SourceOptions};
use mailstore::{Engine, Guid, Options, Timestamp};

mod common;
use common::{Rng, env_u64, run_killed_child, seed_from};

/// One second's UIDVALIDITY, as every operation built in the same second proposes it.
const SECOND: u32 = 1_800_000_000;

fn create_mailbox(db: &MailEngine, address: &str) -> Guid {
    let mut op = MailOp::create_mailbox(address, "Client", MailboxKind::User);
    let MailOp::CreateMailbox { guid, uidvalidity, .. } = &mut op else { unreachable!() };
    *uidvalidity = SECOND;
    let guid = *guid;
    db.commit(op).unwrap();
    guid
}

fn create_folder(db: &MailEngine, mbx: Guid, name: &str) -> FolderInfo {
    let root = db.read(|s, txn| s.folder_by_role(txn, &mbx, FolderRole::Root)).unwrap().unwrap().id;
    let op = MailOp::CreateFolder { mailbox: mbx, parent: root, name: name.to_owned(), uidvalidity: SECOND };
    let MailOutput::FolderCreated { id, .. } = db.commit(op).unwrap().output else { panic!() };
    db.read(|s, txn| s.folder(txn, &mbx, id)).unwrap().unwrap()
}

fn all_uidvalidities(db: &MailEngine) -> Vec<(Guid, u64, u32)> {
    db.read(|s, txn| {
        let mut all = Vec::new();
        for m in s.mailboxes(txn)? {
            for f in s.folders(txn, &m.guid)? {
                all.push((m.guid, f.id, f.uidvalidity));
            }
        }
        Ok(all)
    })
    .unwrap()
}

#[test]
fn a_re_created_folder_never_gets_an_old_uidvalidity() {
    let dir = tempfile::tempdir().unwrap();
    let active = dir.path().join("active");
    let db = Engine::mount(&active, Options::default()).unwrap();
    let mbx = create_mailbox(&db, "client@example.com");
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &mbx, FolderRole::Inbox)).unwrap().unwrap();
    assert_eq!(inbox.uidvalidity, SECOND, "the well-known folders share the creation second");

    // DELETE then CREATE of the same name within one second.
    let first = create_folder(&db, mbx, "Projects");
    db.commit(MailOp::DeleteFolder { mailbox: mbx, folder: first.id, at: Timestamp::now() }).unwrap();
    let second = create_folder(&db, mbx, "Projects");
    assert!(second.uidvalidity > first.uidvalidity, "{} after {}", second.uidvalidity, first.uidvalidity);
    assert!(first.uidvalidity > SECOND);

    // After a remount, and for a mailbox deleted, purged and re-created under the same address.
    db.dismount().unwrap();
    let db = Engine::mount(&active, Options::default()).unwrap();
    db.commit(MailOp::DeleteMailbox { mailbox: mbx, at: Timestamp::now() }).unwrap();
    db.commit(MailOp::purge_mailbox(mbx)).unwrap();
    let again = create_mailbox(&db, "client@example.com");
    let new_inbox = db.read(|s, txn| s.folder_by_role(txn, &again, FolderRole::Inbox)).unwrap().unwrap();
    assert!(new_inbox.uidvalidity > second.uidvalidity, "the new Inbox is not the old one to a client");

    // A copy replays the same UIDVALIDITYs, and its engine goes on from the highest.
    let db: Arc<MailEngine> = Arc::new(db);
    let source = Arc::new(ShippingSource::new(Arc::clone(&db), SourceOptions::default()).unwrap());
    let log: Arc<dyn LogSource> = source.clone();
    let copy_options = CopyOptions::default().poll(Duration::from_millis(20));
    let copy: PassiveCopy<mailstore::model::MailStore> =
        PassiveCopy::seed(dir.path().join("copy"), source.as_ref(), log, copy_options, |_| {}).unwrap();
    let third = create_folder(&db, again, "Projects");
    assert!(copy.wait_replayed(db.status().applied_lsn, Duration::from_secs(20)));
    let before = all_uidvalidities(&db);
    let activated: MailEngine = copy.activate(MountDial::Lossless, 2, Options::default()).unwrap();
    drop(source);
    assert_eq!(all_uidvalidities(&activated), before);
    let fourth = create_folder(&activated, again, "Projects 2");
    assert!(fourth.uidvalidity > third.uidvalidity);

    // No two folders of the database, living or dead, ever shared one (the Inbox's siblings created with it do).
    let mut seen: Vec<u32> = [first.uidvalidity, second.uidvalidity, third.uidvalidity, fourth.uidvalidity].into();
    seen.push(new_inbox.uidvalidity);
    seen.dedup();
    assert_eq!(seen.len(), 5);
}

const CHILD_DIR: &str = "MAILSTORE_UIDVALIDITY_CHILD_DIR";
const MAILBOX: Guid = Guid([0x7c; 16]);

/// The child: deletes and re-creates the folder `Projects` with the same proposed UIDVALIDITY until killed,
/// printing `ack UIDVALIDITY` after each acknowledged creation.
#[test]
#[ignore = "run by `a_killed_process_never_reuses_a_uidvalidity` in a child process"]
fn uidvalidity_crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else { return };
    let db: MailEngine = Engine::mount(&dir, Options::default().log_target_size(32 << 10)).unwrap();
    if db.read(|s, txn| s.mailbox(txn, &MAILBOX)).unwrap().is_none() {
        let MailOp::CreateMailbox { address, display_name, kind, created, .. } =
            MailOp::create_mailbox("crash@example.com", "Crash", MailboxKind::User)
        else {
            unreachable!()
        };
        let op = MailOp::CreateMailbox { guid: MAILBOX, address, display_name, kind, created, uidvalidity: SECOND };
        db.commit(op).unwrap();
    }
    println!("mounted");
    loop {
        let folders = db.read(|s, txn| s.folders(txn, &MAILBOX)).unwrap();
        if let Some(old) = folders.iter().find(|f| f.name == "Projects") {
            db.commit(MailOp::DeleteFolder { mailbox: MAILBOX, folder: old.id, at: Timestamp::now() }).unwrap();
        }
        println!("ack {}", create_folder(&db, MAILBOX, "Projects").uidvalidity);
    }
}

/// Kills the child again and again (`MAILSTORE_UIDVALIDITY_KILLS`, default 4): every acknowledged UIDVALIDITY
/// is new, across the kills, and the recovered database goes on above all of them.
#[test]
fn a_killed_process_never_reuses_a_uidvalidity() {
    let kills = env_u64("MAILSTORE_UIDVALIDITY_KILLS", 4);
    let mut rng = Rng::new(seed_from("MAILSTORE_UIDVALIDITY_SEED"));
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    for _ in 0..kills {
        let envs = [(CHILD_DIR, dir.path().display().to_string())];
        let kill_after = Duration::from_millis(30 + rng.below(200));
        for words in run_killed_child("uidvalidity_crash_child", &envs, kill_after) {
            acked.push(words[1].parse::<u32>().unwrap());
        }
    }
    assert!(!acked.is_empty(), "the child acknowledged nothing in {kills} runs");
    let distinct: BTreeSet<u32> = acked.iter().copied().collect();
    assert_eq!(distinct.len(), acked.len(), "a UIDVALIDITY was given out twice across kills: {acked:?}");
    let db = Engine::mount(dir.path(), Options::default().create_if_missing(false)).unwrap();
    let next = create_folder(&db, MAILBOX, "After").uidvalidity;
    assert!(next > *distinct.last().unwrap(), "{next} after {acked:?}");
}
