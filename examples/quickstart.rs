//! A tour of `mailstore`: a store with two mailbox databases, mailboxes, deliveries from many threads, listing,
//! flags, move, delete and recover, quota and the change feed, a passive copy with a switchover to it and a
//! failback, then a clean dismount and a remount.
//!
//! ```text
//! cargo run --release --example quickstart            # in a temporary directory
//! cargo run --release --example quickstart -- DIR     # creates a store in DIR, or reuses the one there
//! ```
//!
//! Afterwards `mailstore check DIR` (the admin tool: `cargo run --features cli --bin mailstore -- check DIR`)
//! verifies every database of the store: logs, checkpoints, and that folder counters match their items.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mailstore::model::Fai;
use mailstore::model::{FlagAction, Flags, FolderRole, MailEngine, MailOp, MailOutput, MailStore, MailboxKind};
use mailstore::replication::{CopyOptions, LogSource, MountDial, PassiveCopy, ShippingSource, SourceOptions, resync};
use mailstore::{Guid, Options, Store, Timestamp};

const DELIVERERS: usize = 8;
const MESSAGES_PER_DELIVERER: usize = 250;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let temp;
    let root: PathBuf = match std::env::args_os().nth(1) {
        Some(dir) => dir.into(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().join("store")
        }
    };

    // A store hosts several databases; each is its own engine with its own log, checkpoint and writer.
    let store: Store<MailStore> = Store::open(&root, Options::default())?;
    println!("store {}", root.display());
    for name in ["db1", "db2"] {
        // Mounted by `Store::open` when it exists, created the first time.
        let db = store.open_database(name)?;
        let r = db.recovery_report();
        println!("  {name}: {} (guid {})", if r.created { "created" } else { "mounted" }, db.guid());
    }

    // Mailboxes live in one database each; the store finds them by address or GUID.
    let alice = mailbox(&store, "db1", "alice@example.com", "Alice Example", MailboxKind::User)?;
    let bob = mailbox(&store, "db2", "bob@example.com", "Bob Example", MailboxKind::User)?;
    mailbox(&store, "db2", "room-1@example.com", "Meeting Room 1", MailboxKind::Room)?;
    let db1 = store.database("db1")?;
    let db2 = store.database("db2")?;
    let alice_inbox = folder(&db1, alice, FolderRole::Inbox)?;
    let bob_inbox = folder(&db2, bob, FolderRole::Inbox)?;

    // Deliver from several threads at once: each database batches concurrent commits into one log write and one
    // fdatasync (group commit); every delivery is durable when `commit` returns.
    let started = Instant::now();
    let before = (db1.stats(), db2.stats());
    let workers: Vec<_> = (0..DELIVERERS)
        .map(|t| {
            let (db1, db2) = (Arc::clone(&db1), Arc::clone(&db2));
            thread::spawn(move || -> mailstore::Result<()> {
                for i in 0..MESSAGES_PER_DELIVERER {
                    let (db, mbx, inbox) =
                        if i.is_multiple_of(2) { (&db1, alice, alice_inbox) } else { (&db2, bob, bob_inbox) };
                    db.commit(MailOp::append(mbx, inbox, message(t, i), Flags::empty(), vec![]))?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "a deliverer panicked")??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (after1, after2) = (db1.stats(), db2.stats());
    let commits = after1.commits - before.0.commits + after2.commits - before.1.commits;
    let syncs = after1.log_syncs - before.0.log_syncs + after2.log_syncs - before.1.log_syncs;
    println!(
        "delivered {commits} messages from {DELIVERERS} threads in {:.0} ms: {:.0}/s, {:.1} per log fsync",
        elapsed * 1e3,
        commits as f64 / elapsed,
        commits as f64 / syncs.max(1) as f64
    );

    // List the newest messages of Alice's Inbox.
    let inbox = db1.read(|s, txn| s.folder(txn, &alice, alice_inbox))?.ok_or("no Inbox")?;
    let newest =
        db1.read(|s, txn| s.items_by_uid(txn, &alice, alice_inbox, inbox.uidnext.saturating_sub(3), 3, Fai::Exclude))?;
    println!(
        "Alice's Inbox: {} messages, {} unread, UIDVALIDITY {}, UIDNEXT {}",
        inbox.total, inbox.unread, inbox.uidvalidity, inbox.uidnext
    );
    for item in &newest {
        let from = item.envelope.from_address().unwrap_or_default();
        println!("  UID {:>5}  {:<24}  {}", item.uid, from, item.envelope.subject.clone().unwrap_or_default());
    }

    // Flag, move, delete and recover; each is one logged operation with its own MODSEQ.
    let uids: Vec<u32> = newest.iter().map(|i| i.uid).collect();
    let mark = db1.commit(MailOp::StoreFlags {
        mailbox: alice,
        folder: alice_inbox,
        uids: uids.clone(),
        action: FlagAction::Add,
        flags: Flags::SEEN | Flags::FLAGGED,
        keywords: vec!["$Important".into()],
        unchanged_since: None,
    })?;
    let MailOutput::FlagsStored { modseq: Some(flag_modseq), .. } = mark.output else {
        return Err("nothing flagged".into());
    };
    println!("flagged UIDs {uids:?} \\Seen \\Flagged at MODSEQ {flag_modseq}");
    let archive = folder(&db1, alice, FolderRole::Archive)?;
    if let MailOutput::Copied { mapping, uidvalidity, .. } = db1
        .commit(MailOp::CopyItems {
            mailbox: alice,
            from: alice_inbox,
            uids: vec![uids[0]],
            to: archive,
            remove_source: true,
        })?
        .output
    {
        println!("moved to Archive: COPYUID {uidvalidity} {mapping:?}");
    }
    let deleted = db1.commit(MailOp::DeleteItems {
        mailbox: alice,
        folder: alice_inbox,
        uids: vec![uids[1]],
        at: Timestamp::now(),
    })?;
    if let MailOutput::DeletedToRecoverable { mapping, .. } = deleted.output {
        println!("deleted UID {} to Recoverable Items/Deletions (UID {} there)", mapping[0].0, mapping[0].1);
        if let MailOutput::Recovered { mapping, .. } =
            db1.commit(MailOp::RecoverItems { mailbox: alice, uids: vec![mapping[0].1] })?.output
        {
            println!("recovered it to its folder: new UID {}", mapping[0].2);
        }
    }

    // Quota and the change feed (what IMAP CONDSTORE/QRESYNC and JMAP /changes are served from).
    let quota = db1.read(|s, txn| s.quota_status(txn, &alice))?.ok_or("no mailbox")?;
    println!(
        "quota: {} bytes used of {} (warning at {}), {} bytes in Recoverable Items",
        quota.size, quota.quota.prohibit_send_receive, quota.quota.issue_warning, quota.recoverable_size
    );
    let changes = db1.read(|s, txn| s.changes_since(txn, &alice, flag_modseq - 1))?;
    println!("changes since MODSEQ {}: {}", flag_modseq - 1, changes.len());
    for c in changes.iter().take(8) {
        println!("  MODSEQ {:>5}  {:?} {:?}", c.modseq, c.kind, c.entity);
    }

    // A passive copy of db2: seeded from a snapshot while db2 stays mounted, then following its log.
    let db2_dir = root.join(mailstore::store::DATABASES_DIR).join("db2");
    let copy_dir = root.join("copies").join("db2");
    if copy_dir.exists() {
        std::fs::remove_dir_all(&copy_dir)?; // the copy left by an earlier run of this tour
    }
    let source = Arc::new(ShippingSource::new(Arc::clone(&db2), SourceOptions::default())?);
    let log: Arc<dyn LogSource> = source.clone();
    let copy: PassiveCopy<MailStore> =
        PassiveCopy::seed(&copy_dir, source.as_ref(), log, CopyOptions::default(), |_| {})?;
    let lsn = db2.commit(MailOp::append(bob, bob_inbox, message(0, 1), Flags::empty(), vec![]))?.lsn;
    copy.wait_replayed(lsn, Duration::from_secs(30));
    let status = copy.status();
    println!(
        "passive copy of db2 in {}: {:?}, copy queue {}, replay queue {}, replayed LSN {} of {}",
        copy_dir.display(),
        status.state,
        status.copy_queue_length,
        status.replay_queue_length,
        status.last_replayed_lsn,
        db2.status().applied_lsn
    );

    // Switchover: fence the active (it refuses writes from now on), activate the copy with a new epoch.
    let epoch = status.epoch + 1;
    db2.fence(epoch)?;
    let started = Instant::now();
    let new_db2 = Arc::new(copy.activate(MountDial::Lossless, epoch, Options::default())?);
    println!(
        "activated the copy (Lossless) in {:.0} ms: epoch {}, the old active refuses writes: {}",
        started.elapsed().as_secs_f64() * 1e3,
        new_db2.status().epoch,
        db2.commit(MailOp::append(bob, bob_inbox, message(0, 3), Flags::empty(), vec![])).is_err()
    );
    drop((source, db2));
    store.dismount_database("db2")?;
    new_db2.commit(MailOp::append(bob, bob_inbox, message(0, 5), Flags::empty(), vec![]))?;
    let bob_count = new_db2.read(|s, txn| s.folder(txn, &bob, bob_inbox))?.ok_or("no Inbox")?.total;
    println!("delivered to Bob on the new active: his Inbox holds {bob_count} messages");

    // Failback: the old db2 resynchronizes as a passive copy of the new active, catches up, and is activated.
    let new_source = Arc::new(ShippingSource::new(Arc::clone(&new_db2), SourceOptions::default())?);
    let outcome = resync::<MailStore>(&db2_dir, new_source.as_ref())?;
    println!("old db2 resynchronized: {outcome:?}");
    let log: Arc<dyn LogSource> = new_source.clone();
    let back: PassiveCopy<MailStore> = PassiveCopy::open(&db2_dir, log, CopyOptions::default())?;
    back.wait_replayed(new_db2.status().applied_lsn, Duration::from_secs(30));
    new_db2.fence(epoch + 1)?;
    let db2_again = back.activate(MountDial::Lossless, epoch + 1, Options::default())?;
    println!("failed back to db2: epoch {}, applied LSN {}", db2_again.status().epoch, db2_again.status().applied_lsn);
    db2_again.dismount()?;
    drop(new_source);
    Arc::try_unwrap(new_db2).map_err(|_| "new active still shared")?.dismount()?;

    // Dismount everything cleanly, then open the store again: nothing to replay, everything there.
    drop(db1);
    store.close()?;
    let store: Store<MailStore> = Store::open(&root, Options::default())?;
    println!("remounted");
    for name in ["db1", "db2"] {
        let db = store.mount_database(name)?;
        let status = db.status();
        let report = db.recovery_report();
        let mailboxes = db.read(|s, txn| s.mailboxes(txn))?;
        println!(
            "  {name}: previous shutdown {}, {} records replayed, applied LSN {}, checkpoint LSN {}, log generations {}..={}, {} mailbox(es), digest {}",
            if report.was_clean { "clean" } else { "dirty" },
            report.replayed,
            status.applied_lsn,
            status.checkpoint_lsn,
            status.oldest_generation,
            status.head_generation,
            mailboxes.len(),
            &db.read(|s, txn| s.digest(txn))?[..16]
        );
        for m in mailboxes {
            println!(
                "    {:<22} {:?}: {} items, {} bytes, MODSEQ {}",
                m.address, m.kind, m.items, m.size, m.highest_modseq
            );
        }
    }
    store.close()?;
    println!("dismounted {}", root.display());
    Ok(())
}

/// The mailbox at `address`, created in `database` if the store has none.
fn mailbox(store: &Store<MailStore>, database: &str, address: &str, name: &str, kind: MailboxKind) -> Result<Guid> {
    Ok(match store.locate_address(address)? {
        Some(found) => found.mailbox.guid,
        None => store.create_mailbox(database, address, name, kind)?,
    })
}

fn folder(db: &MailEngine, mailbox: Guid, role: FolderRole) -> Result<u64> {
    Ok(db.read(|s, txn| s.folder_by_role(txn, &mailbox, role))?.ok_or("missing well-known folder")?.id)
}

fn message(thread: usize, i: usize) -> Vec<u8> {
    let to = if i.is_multiple_of(2) { "Alice Example <alice@example.com>" } else { "Bob Example <bob@example.com>" };
    format!(
        "From: Sender {thread} <sender{thread}@example.net>\r\nTo: {to}\r\nSubject: Report {i} from thread {thread}\r\n\
         Date: Sun, 22 Nov 2026 09:{:02}:00 +0000\r\nMessage-ID: <{thread}.{i}.{}@example.net>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
        i % 60,
        Timestamp::now().as_micros(),
        "The quarterly figures are attached inline below.\r\n".repeat(20)
    )
    .into_bytes()
}
