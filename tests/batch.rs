//! Atomic batches (issue 15): many operations of one mailbox in one commit, applied all or none, with the
//! refused operation named; each message stored by a batch reads back as its own bytes; a batch is replayed the
//! same way by crash recovery (a child killed with SIGKILL mid-stream) and by a passive copy.

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mailstore::engine::Scope;
use mailstore::model::{
    FlagAction, Flags, FolderId, FolderRole, MAX_BATCH_OPS, MAX_MESSAGE_SIZE, MailEngine, MailError, MailOp,
    MailOutput, MailboxKind, Quota,
};
use mailstore::replication::{CopyOptions, LogSource, PassiveCopy, ShippingSource, SourceOptions};
use mailstore::{Engine, Error, Guid, Options};

mod common;
use common::mail::{check, deliver, digest, mailbox, message};
use common::{Rng, env_u64, run_killed_child, seed_from};

/// The raw bytes of every item of `folder`, in UID order.
fn raws(db: &MailEngine, mbx: Guid, folder: FolderId) -> Vec<Vec<u8>> {
    db.read(|s, txn| {
        let items = s.items_by_uid(txn, &mbx, folder, 1, usize::MAX, mailstore::model::Fai::Include)?;
        items.iter().map(|i| Ok(s.raw(txn, &mbx, i.id)?.expect("a listed item has its bytes"))).collect()
    })
    .unwrap()
}

fn appended_uid(output: &MailOutput) -> u32 {
    match output {
        MailOutput::Appended { uid, .. } => *uid,
        other => panic!("{other:?}"),
    }
}

fn batch_outputs(output: MailOutput) -> Vec<MailOutput> {
    match output {
        MailOutput::Batch(outputs) => outputs,
        other => panic!("{other:?}"),
    }
}

fn append(mbx: Guid, folder: FolderId, raw: Vec<u8>) -> MailOp {
    MailOp::append(mbx, folder, raw, Flags::empty(), vec![])
}

#[test]
fn a_batch_applies_all_its_operations_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let db: MailEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    let (mbx, inbox) = mailbox(&db);
    let (_, old) = deliver(&db, mbx, inbox, message(0));
    let (_, doomed) = deliver(&db, mbx, inbox, message(1));
    let before = db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().unwrap();
    let lsn_before = db.status().applied_lsn;

    // A JMAP `Email/set`: two creations, an update, a destruction, and a creation in a folder that does not exist.
    let ops = |with_bad: bool| {
        let mut ops = vec![
            append(mbx, inbox, message(10)),
            MailOp::store_flags(mbx, inbox, vec![old], FlagAction::Add, Flags::SEEN),
            append(mbx, inbox, message(11)),
            MailOp::delete_items(mbx, inbox, vec![doomed]),
        ];
        if with_bad {
            ops.push(append(mbx, 999, message(12)));
        }
        MailOp::batch(ops)
    };
    match db.commit(ops(true)) {
        Err(Error::Mail(MailError::BatchRefused { index: 4, cause })) => {
            assert!(matches!(*cause, MailError::NoSuchFolder { folder: 999, .. }), "{cause:?}")
        }
        other => panic!("{other:?}"),
    }
    // Nothing of it: the mailbox is as it was (the record is in the log, as a no-op).
    let after = db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().unwrap();
    assert_eq!(after, before);
    assert_eq!(raws(&db, mbx, inbox), vec![message(0), message(1)]);
    assert!(db.status().applied_lsn > lsn_before);
    let seen = db.read(|s, txn| s.item_by_uid(txn, &mbx, inbox, old)).unwrap().unwrap().flags;
    assert!(!seen.contains(Flags::SEEN));

    let committed = db.commit(ops(false)).unwrap();
    let outputs = batch_outputs(committed.output);
    assert_eq!(outputs.len(), 4);
    let (first, second) = (appended_uid(&outputs[0]), appended_uid(&outputs[2]));
    assert!(first < second, "applied in order: {first} then {second}");
    assert!(matches!(outputs[3], MailOutput::DeletedToRecoverable { .. }), "{:?}", outputs[3]);
    // Each message reads back as its own bytes: the batch's parts got their own slices of one attachment.
    assert_eq!(raws(&db, mbx, inbox), vec![message(0), message(10), message(11)]);
    let flags = db.read(|s, txn| s.item_by_uid(txn, &mbx, inbox, old)).unwrap().unwrap().flags;
    assert!(flags.contains(Flags::SEEN));
    // Each operation took its own MODSEQ, in order.
    let m = db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().unwrap();
    assert_eq!(m.highest_modseq, before.highest_modseq + 4);
    db.dismount().unwrap();
    check(dir.path());
}

#[test]
fn a_batch_is_checked_before_it_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let db: MailEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    let (mbx, inbox) = mailbox(&db);
    let other = MailOp::create_mailbox("bob@example.com", "Bob", MailboxKind::User);
    let bob = other.mailbox().unwrap();
    db.commit(other).unwrap();
    let lsn = db.status().applied_lsn;
    let invalid = |op: MailOp| match db.commit(op) {
        Err(Error::Mail(MailError::InvalidBatch { rule })) => rule,
        other => panic!("{other:?}"),
    };
    assert!(invalid(MailOp::batch([])).contains("1 to"));
    let nested = MailOp::batch([MailOp::batch([append(mbx, inbox, message(1))])]);
    assert!(invalid(nested).contains("do not nest"));
    let two_mailboxes = MailOp::batch([append(mbx, inbox, message(1)), MailOp::expunge(bob, inbox, None)]);
    assert!(invalid(two_mailboxes).contains("at 1"));
    let many = MailOp::batch((0..=MAX_BATCH_OPS).map(|_| MailOp::expunge(mbx, inbox, None)));
    assert!(invalid(many).contains(&MAX_BATCH_OPS.to_string()));

    // A part's own refusal before logging names the part.
    let bad_keyword = MailOp::batch([
        append(mbx, inbox, message(1)),
        MailOp::append(mbx, inbox, message(2), Flags::empty(), vec!["two words".into()]),
    ]);
    match db.commit(bad_keyword) {
        Err(Error::Mail(MailError::BatchRefused { index: 1, cause })) => {
            assert!(matches!(*cause, MailError::InvalidKeyword { .. }), "{cause:?}")
        }
        other => panic!("{other:?}"),
    }
    let mut forged = append(mbx, inbox, message(3));
    if let MailOp::Append { content, .. } = &mut forged {
        *content = mailstore::model::ContentHash::of(b"other bytes");
    }
    match db.commit(MailOp::batch([append(mbx, inbox, message(2)), forged])) {
        Err(Error::Mail(MailError::BatchRefused { index: 1, cause })) => {
            assert!(matches!(*cause, MailError::ContentHashMismatch { .. }), "{cause:?}")
        }
        other => panic!("{other:?}"),
    }
    // Messages that are each small enough but together more than a record holds.
    let big = vec![b'x'; MAX_MESSAGE_SIZE / 2 + 1];
    let too_big = MailOp::batch([append(mbx, inbox, big.clone()), append(mbx, inbox, big)]);
    assert!(matches!(db.commit(too_big), Err(Error::Mail(MailError::BatchTooLarge { .. }))));
    assert_eq!(db.status().applied_lsn, lsn, "nothing was logged");
    assert!(raws(&db, mbx, inbox).is_empty());
}

#[test]
fn a_batch_over_quota_is_refused_whole_at_the_first_message_over() {
    let dir = tempfile::tempdir().unwrap();
    let db: MailEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    let (mbx, inbox) = mailbox(&db);
    let size = message(0).len() as u64;
    let quota =
        Quota { issue_warning: 2 * size, prohibit_send: 3 * size, prohibit_send_receive: 3 * size, ..Quota::default() };
    db.commit(MailOp::SetQuota { mailbox: mbx, quota: Some(quota) }).unwrap();
    // Three fit, the fourth does not: the whole batch (a MULTIAPPEND) is refused.
    match db.commit(MailOp::batch((0..5).map(|n| append(mbx, inbox, message(n))))) {
        Err(Error::Mail(MailError::BatchRefused { index: 3, cause })) => {
            assert!(matches!(*cause, MailError::QuotaExceeded { .. }), "{cause:?}")
        }
        other => panic!("{other:?}"),
    }
    assert!(raws(&db, mbx, inbox).is_empty());
    let outputs =
        batch_outputs(db.commit(MailOp::batch((0..3).map(|n| append(mbx, inbox, message(n))))).unwrap().output);
    assert_eq!(outputs.len(), 3);
    assert_eq!(db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().unwrap().size, 3 * size);
}

#[test]
fn a_batch_wakes_its_mailbox_once_and_a_passive_copy_replays_it_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options::default().log_target_size(64 << 10);
    let db: Arc<MailEngine> = Arc::new(Engine::mount(dir.path().join("active"), options()).unwrap());
    let source = Arc::new(ShippingSource::new(Arc::clone(&db), SourceOptions::default()).unwrap());
    let (mbx, inbox) = mailbox(&db);
    let log: Arc<dyn LogSource> = source.clone();
    let copy_options = CopyOptions::default().poll(Duration::from_millis(20));
    let copy: PassiveCopy<mailstore::model::MailStore> =
        PassiveCopy::seed(dir.path().join("copy"), source.as_ref(), log, copy_options, |_| {}).unwrap();
    let mut sub = db.subscribe(Scope::Key(mbx));

    // Batches of appends that span several log generations, with a refused batch among them.
    let mut expected = Vec::new();
    for round in 0..12 {
        let ops: Vec<MailOp> = (0..8).map(|k| append(mbx, inbox, message(round * 8 + k))).collect();
        if round == 5 {
            let refused = MailOp::batch(ops.into_iter().chain([append(mbx, 999, message(0))]));
            assert!(matches!(db.commit(refused), Err(Error::Mail(MailError::BatchRefused { index: 8, .. }))));
            continue;
        }
        let lsn = db.commit(MailOp::batch(ops)).unwrap().lsn;
        expected.extend((0..8).map(|k| message(round * 8 + k)));
        assert_eq!(sub.wait(Duration::from_secs(5)).unwrap(), Some(lsn), "one wake-up per batch");
    }
    assert_eq!(raws(&db, mbx, inbox), expected);
    assert!(copy.wait_replayed(db.status().applied_lsn, Duration::from_secs(20)), "{:?}", copy.status());
    let on_copy = copy
        .read(|s, txn| {
            let items = s.items_by_uid(txn, &mbx, inbox, 1, usize::MAX, mailstore::model::Fai::Include)?;
            items.iter().map(|i| Ok(s.raw(txn, &mbx, i.id)?.unwrap())).collect::<mailstore::Result<Vec<_>>>()
        })
        .unwrap();
    assert_eq!(on_copy, expected, "the copy stores every part's own bytes");
    assert_eq!(copy.read(|s, txn| s.digest(txn)).unwrap(), digest(&db));
    copy.close().unwrap();
    drop(source);
}

const CHILD_DIR: &str = "MAILSTORE_BATCH_CHILD_DIR";
const CHILD_ROUND: &str = "MAILSTORE_BATCH_CHILD_ROUND";
const PARTS: usize = 6;
const MAILBOX: Guid = Guid([0x5b; 16]);

fn options() -> Options {
    Options::default().log_target_size(32 << 10).checkpoint_depth(64 << 10)
}

fn part(round: u64, seq: u64, k: usize) -> Vec<u8> {
    format!(
        "Subject: r{round}-s{seq}-p{k}\r\nMessage-ID: <r{round}.s{seq}.p{k}@x>\r\n\r\n{}\r\n",
        "x".repeat(300 + k * 50)
    )
    .into_bytes()
}

/// The child: commits batches of `PARTS` appends (and a flag change on the first) until killed, printing
/// `ack ROUND SEQ` after each acknowledged batch.
#[test]
#[ignore = "run by `a_killed_writer_leaves_whole_batches` in a child process"]
fn batch_crash_child() {
    let (Ok(dir), Ok(round)) = (env::var(CHILD_DIR), env::var(CHILD_ROUND)) else { return };
    let round: u64 = round.parse().unwrap();
    let db: MailEngine = Engine::mount(&dir, options()).unwrap();
    let exists = db.read(|s, txn| s.mailbox(txn, &MAILBOX)).unwrap().is_some();
    if !exists {
        let MailOp::CreateMailbox { address, display_name, kind, created, uidvalidity, .. } =
            MailOp::create_mailbox("crash@example.com", "Crash", MailboxKind::User)
        else {
            unreachable!()
        };
        db.commit(MailOp::CreateMailbox { guid: MAILBOX, address, display_name, kind, created, uidvalidity }).unwrap();
    }
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &MAILBOX, FolderRole::Inbox)).unwrap().unwrap().id;
    println!("mounted");
    for seq in 0.. {
        let ops = (0..PARTS).map(|k| append(MAILBOX, inbox, part(round, seq, k)));
        db.commit(MailOp::batch(ops)).unwrap();
        println!("ack {round} {seq}");
    }
}

/// Kills a child committing batches, again and again, and checks after each kill that every acknowledged batch
/// is there whole and no batch is there in part. `MAILSTORE_BATCH_KILLS` kills (default 6).
#[test]
fn a_killed_writer_leaves_whole_batches() {
    let kills = env_u64("MAILSTORE_BATCH_KILLS", 6);
    let seed = seed_from("MAILSTORE_BATCH_SEED");
    eprintln!("batch crash test: {kills} kills, MAILSTORE_BATCH_SEED={seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut acked = BTreeSet::new();
    for round in 0..kills {
        let envs = [(CHILD_DIR, dir.path().display().to_string()), (CHILD_ROUND, round.to_string())];
        let kill_after = Duration::from_millis(30 + rng.below(250));
        for words in run_killed_child("batch_crash_child", &envs, kill_after) {
            acked.insert((words[1].parse::<u64>().unwrap(), words[2].parse::<u64>().unwrap()));
        }
        let present = present_batches(dir.path());
        for (batch, parts) in &present {
            assert_eq!(parts.len(), PARTS, "batch {batch:?} is there in part: {parts:?}");
        }
        for batch in &acked {
            assert!(present.contains_key(batch), "acknowledged batch {batch:?} is lost");
        }
    }
    assert!(!acked.is_empty(), "the child acknowledged nothing in {kills} runs");
    check(dir.path());
}

/// `(round, seq)` → the parts of that batch in the recovered database, each checked against its bytes.
fn present_batches(dir: &Path) -> BTreeMap<(u64, u64), BTreeSet<usize>> {
    let db: MailEngine = Engine::mount(dir, options().create_if_missing(false)).unwrap();
    let mut present: BTreeMap<(u64, u64), BTreeSet<usize>> = BTreeMap::new();
    if db.read(|s, txn| s.mailbox(txn, &MAILBOX)).unwrap().is_none() {
        return present;
    }
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &MAILBOX, FolderRole::Inbox)).unwrap().unwrap().id;
    for raw in raws(&db, MAILBOX, inbox) {
        let text = String::from_utf8(raw.clone()).unwrap();
        let subject = text.lines().next().unwrap().trim_start_matches("Subject: ");
        let fields: Vec<u64> = subject.split('-').map(|f| f[1..].parse().unwrap()).collect();
        let (round, seq, k) = (fields[0], fields[1], fields[2] as usize);
        assert_eq!(raw, part(round, seq, k), "a part reads back as another's bytes");
        assert!(present.entry((round, seq)).or_default().insert(k), "part {k} of {round}-{seq} twice");
    }
    db.dismount().unwrap();
    present
}
