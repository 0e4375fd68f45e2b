//! Passive copies, measured in one run against the active they follow (`Durability::Full`), once for each of two
//! workloads: 4 KiB deliveries only (every record stores a message: the most a record costs a replayer), and a
//! mail mix in which each message is delivered, marked read, then moved to Archive or deleted (three records per
//! message, one carrying its bytes). For each:
//!
//! * **active alone**: the workload from 32 threads into one mailbox database for `SECONDS` with no copy at work
//!   (the rate of an active whose copies run on other machines). Two lagged copies (replay lag 14 days), one per
//!   [`StateSync`] mode, are seeded before it and suspended through it: the source keeps the log for them;
//! * **replay of the same records** (the target, ≥ 5x): the lagged copies are resumed, copy and inspect
//!   everything, and each plays down all it holds: exactly the records the active committed alone, into a
//!   database growing through the same sizes; records per second against the active's commits per second;
//! * **active with copies**: the same load for `SECONDS` more while a healthy copy follows in block mode over the
//!   in-process transport on the same two vCPUs, and the lagged copies copy and inspect;
//! * **shipping lag**: meanwhile a sampler thread delivers one more message every 2 ms and measures the time from
//!   its acknowledgement (`commit` returned) to the healthy copy having inspected it, and from the moment it
//!   called `commit` (p50 / p99 / max);
//! * **replay of the second phase's records**, on copies already holding the first phase's (so into a larger
//!   database than the active alone wrote), against the active alone, the active at the copies' size and the
//!   active with copies;
//! * **raw heed baseline** (deliveries only): heed alone doing the state writes of those deliveries, into an
//!   environment first filled with as many as the copies held, in transactions as large as replay's — what LMDB
//!   itself costs for this data model;
//! * **activation**: the caught-up healthy copy is activated (Lossless) while the source is still there and
//!   idle, and again for five small fresh copies whose active is gone; wall time from `activate` to a mounted
//!   engine (target ≤ 500 ms);
//! * **active alone at the copies' size**: the activated copy takes the same load for `SECONDS`, as an active
//!   with no copy: the active's rate on a database as large as the one the second replay worked on.
//!
//! Before each timed phase the bench writes back the machine's dirty pages (`sync`), so that no phase pays for
//! the write-back of the previous one. The files go where `benches/common` says (never a memory file system). `MAILSTORE_BENCH_QUICK=1` runs a
//! two-second smoke test.
//!
//! ```text
//! cargo bench --bench replication
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::{bench_root, settle};
use mailstore::model::{FlagAction, Flags, FolderRole, MailEngine, MailOp, MailOutput, MailStore, MailboxKind};
use mailstore::replication::{
    CopyOptions, LogSource, MountDial, PassiveCopy, ShippingSource, SourceOptions, StateSync,
};
use mailstore::{Engine, Guid, Options};

const DELIVERERS: usize = 32;
const MESSAGE: usize = 4096;

fn message(n: u64) -> Vec<u8> {
    let mut raw = format!(
        "From: sender@example.net\r\nTo: alice@example.com\r\nSubject: replication {n}\r\nMessage-ID: <{n}@bench>\r\n\r\n"
    )
    .into_bytes();
    raw.resize(MESSAGE, b'x');
    raw.extend_from_slice(b"\r\n");
    raw
}

/// What the loaders commit.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Workload {
    /// 4 KiB deliveries only: every record stores a message, the most a record costs a replayer.
    Deliveries,
    /// A mail server's day in miniature: each loader delivers a 4 KiB message, marks it `\Seen` (read), then
    /// files it into Archive (MOVE) or deletes it (into Recoverable Items), in turn: three records per message,
    /// one of them carrying the bytes.
    MailMix,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Deliveries => "4 KiB deliveries",
            Workload::MailMix => "mail mix (deliver, mark read, move to Archive or delete)",
        }
    }
}

/// Where the loaders work.
#[derive(Clone, Copy)]
struct Target {
    mailbox: Guid,
    inbox: u64,
    archive: u64,
}

/// Commits `workload` into `target` until `stop` is set.
fn load_until(db: &MailEngine, workload: Workload, target: Target, counter: &AtomicU64, stop: &AtomicBool) {
    let Target { mailbox, inbox, archive } = target;
    while !stop.load(Ordering::Relaxed) {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let out = db.commit(MailOp::append(mailbox, inbox, message(n), Flags::empty(), Vec::new())).expect("deliver");
        if workload == Workload::Deliveries {
            continue;
        }
        // An append answers `Appended` (`MailOp::append` builds an `Append`).
        let MailOutput::Appended { uid, .. } = out.output else { unreachable!() };
        db.commit(MailOp::store_flags(mailbox, inbox, vec![uid], FlagAction::Add, Flags::SEEN)).expect("read");
        let file = if n.is_multiple_of(2) {
            MailOp::move_items(mailbox, inbox, vec![uid], archive)
        } else {
            MailOp::delete_items(mailbox, inbox, vec![uid])
        };
        db.commit(file).expect("file");
    }
}

/// Sizes of the state records one delivery writes, read from the active's own records.
struct RecordSizes {
    mailbox: usize,
    folder: usize,
    item: usize,
    /// The listing record: the item's encoded size plus its 156-byte fixed header (an approximation).
    listing: usize,
    body: usize,
}

/// The baseline for replaying deliveries: heed alone doing the writes one delivery makes to the state — the
/// mailbox and folder records rewritten, the item, its listing record, its received-time and change entries, its
/// 32-byte hash entry, where its body lies (`mail.placed`) and its generation's count (`mail.segments`) — the
/// body itself stays in the log (format 2) — in transactions as
/// large as a copy's replay batches (32,768 records or 64 MiB of log, whichever comes first) synced as
/// `StateSync::EveryBatch` syncs them (`NO_META_SYNC`), into an environment first filled with `prefill`
/// deliveries the same way. No decoding, no reads, no `apply` logic: what LMDB itself costs for this data model
/// on this machine. Returns deliveries per second over the `count` timed ones.
fn raw_heed_deliveries(dir: &std::path::Path, prefill: u64, count: u64, sizes: &RecordSizes) -> f64 {
    use heed::types::Bytes;
    use heed::{Database, EnvFlags, EnvOpenOptions};
    // A delivery's log record is about its message, envelope and item fields (~300 bytes) long.
    let batch = 32_768.min((64 << 20) / (sizes.body as u64 + 300));
    const TABLES: [&str; 9] =
        ["mailboxes", "folders", "items", "uids", "blob_refs", "placed", "segments", "changes", "received"];
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("raw heed dir");
    // SAFETY: a fresh directory only this function opens, one environment at a time, in this process.
    let env = unsafe {
        EnvOpenOptions::new()
            .read_txn_without_tls()
            .map_size(64 << 30)
            .max_dbs(16)
            .flags(EnvFlags::NO_META_SYNC)
            .open(dir)
            .expect("open raw heed")
    };
    let wtxn = env.write_txn().expect("txn");
    let dbs: [Database<'_, Bytes, Bytes>; 9] = env
        .create_databases_and_commit(wtxn, |dbo, wtxn| -> heed::Result<_> {
            let mut dbs = Vec::with_capacity(TABLES.len());
            for name in TABLES {
                dbs.push(dbo.create_database::<Bytes, Bytes>(wtxn, Some(name))?);
            }
            // Nine names, nine databases.
            let dbs: [Database<'_, Bytes, Bytes>; 9] = dbs.try_into().unwrap_or_else(|_| unreachable!());
            Ok(heed::CommitOrAbort::<_, ()>::Commit(dbs))
        })
        .expect("databases")
        .commit()
        .expect("commit");
    let [mailboxes, folders, items, uids, blob_refs, placed, segments, changes, received] = dbs;
    let (mailbox, folder) = (vec![1u8; sizes.mailbox], vec![2u8; sizes.folder]);
    let (item, listing) = (vec![3u8; sizes.item], vec![4u8; sizes.listing]);
    let guid = [7u8; 16];
    let key = |n: u64, len: usize| {
        let mut k = [0u8; 40];
        k[..16].copy_from_slice(&guid);
        k[len - 8..len].copy_from_slice(&n.to_be_bytes());
        k
    };
    let mut n = 0u64;
    let mut started = Instant::now();
    while n < prefill + count {
        if n == prefill {
            started = Instant::now();
        }
        let end = if n < prefill { prefill } else { prefill + count };
        let mut txn = env.write_txn().expect("txn");
        for _ in 0..batch.min(end - n) {
            n += 1;
            let hash = blake3::hash(&n.to_be_bytes());
            // Where the body lies in the log: a generation of 16 MiB, the offset in it.
            let at = n * (sizes.body as u64 + 300);
            let generation = (at >> 24).to_be_bytes();
            let mut place = [0u8; 16];
            place[..8].copy_from_slice(&generation);
            place[8..].copy_from_slice(&at.to_be_bytes());
            mailboxes.put(&mut txn, &guid, &mailbox).expect("put");
            folders.put(&mut txn, &key(1, 24), &folder).expect("put");
            items.put(&mut txn, &key(n, 24), &item).expect("put");
            uids.put(&mut txn, &key(n, 28), &listing).expect("put");
            blob_refs.put(&mut txn, hash.as_bytes(), &[0u8; 32]).expect("put");
            placed.put(&mut txn, &place, hash.as_bytes()).expect("put");
            segments.put(&mut txn, &generation, &[6u8; 16]).expect("put");
            changes.put(&mut txn, &key(n, 28), &[5u8; 30]).expect("put");
            received.put(&mut txn, &key(n, 40), &[]).expect("put");
        }
        txn.commit().expect("commit");
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    drop(env);
    let _ = std::fs::remove_dir_all(dir);
    rate
}

/// Runs `workload` on `db` alone for `seconds` after writing back dirty pages; returns commits per second.
fn active_alone(db: &MailEngine, workload: Workload, target: Target, counter: &AtomicU64, seconds: u64) -> f64 {
    settle();
    let start = db.status().applied_lsn;
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for _ in 0..DELIVERERS {
            s.spawn(|| load_until(db, workload, target, counter, &stop));
        }
        thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
    });
    (db.status().applied_lsn - start) as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` from the test harness
    }
    let quick = std::env::var_os("MAILSTORE_BENCH_QUICK").is_some();
    let seconds = if quick { 2 } else { 10 };
    for workload in [Workload::Deliveries, Workload::MailMix] {
        run(workload, seconds);
    }
}

/// One whole run of the story above with `workload` as the load.
fn run(workload: Workload, seconds: u64) {
    let root = bench_root().join(format!("replication-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);

    let db: Arc<MailEngine> = Arc::new(Engine::mount(root.join("active"), Options::default()).expect("mount"));
    let op = MailOp::create_mailbox("alice@example.com", "Alice", MailboxKind::User);
    // `create_mailbox` builds a `CreateMailbox` operation.
    let MailOp::CreateMailbox { guid, .. } = &op else { unreachable!() };
    let mailbox: Guid = *guid;
    db.commit(op).expect("mailbox");
    let folder = |role| db.read(|m, txn| m.folder_by_role(txn, &mailbox, role)).expect("read").expect("folder").id;
    let target = Target { mailbox, inbox: folder(FolderRole::Inbox), archive: folder(FolderRole::Archive) };
    let inbox = target.inbox;
    let source = Arc::new(ShippingSource::new(Arc::clone(&db), SourceOptions::default()).expect("source"));
    let log: Arc<dyn LogSource> = source.clone();
    // The lagged copies are seeded before the first phase and suspended through it (the source keeps the log
    // they need): afterwards they replay exactly the records the active committed alone, over the same
    // database sizes.
    let lagged: PassiveCopy<MailStore> = PassiveCopy::seed(
        root.join("lagged"),
        source.as_ref(),
        Arc::clone(&log),
        CopyOptions::default().replay_lag(mailstore::replication::MAX_LAG),
        |_| {},
    )
    .expect("seed");
    let lagged_fast: PassiveCopy<MailStore> = PassiveCopy::seed(
        root.join("lagged-fast"),
        source.as_ref(),
        Arc::clone(&log),
        CopyOptions::default().replay_lag(mailstore::replication::MAX_LAG).state_sync(StateSync::AtCheckpoint),
        |_| {},
    )
    .expect("seed");
    lagged.suspend().expect("suspend");
    lagged_fast.suspend().expect("suspend");

    // Phase 0: the active alone.
    let counter = AtomicU64::new(0);
    let alone_start = db.status().applied_lsn;
    let alone_rate = active_alone(&db, workload, target, &counter, seconds);
    let alone_head = db.status().applied_lsn;

    // Replay of the same records: everything each lagged copy holds, played down.
    let play_down = |copy: &PassiveCopy<MailStore>, head: u64| {
        assert!(
            copy.wait_copied(head, Duration::from_secs(300)),
            "lagged copy did not copy everything: {:?}",
            copy.status()
        );
        settle();
        let before = copy.status().last_replayed_lsn;
        let t = Instant::now();
        assert!(copy.play_down(Duration::from_secs(600)), "play-down did not finish");
        let elapsed = t.elapsed();
        let replayed = copy.status().last_replayed_lsn - before;
        (replayed, elapsed, replayed as f64 / elapsed.as_secs_f64())
    };
    lagged.resume().expect("resume");
    lagged_fast.resume().expect("resume");
    let same = [play_down(&lagged, alone_head), play_down(&lagged_fast, alone_head)];

    let healthy: PassiveCopy<MailStore> =
        PassiveCopy::seed(root.join("healthy"), source.as_ref(), Arc::clone(&log), CopyOptions::default(), |_| {})
            .expect("seed");
    let start_lsn = db.status().applied_lsn;

    // Phase 1: load with the copies following, and the lag sampler.
    settle();
    let stop = AtomicBool::new(false);
    let mut from_ack = Vec::new();
    let mut from_call = Vec::new();
    let started = Instant::now();
    thread::scope(|s| {
        for _ in 0..DELIVERERS {
            s.spawn(|| load_until(&db, workload, target, &counter, &stop));
        }
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let called = Instant::now();
                let lsn = db
                    .commit(MailOp::append(mailbox, inbox, message(n), Flags::empty(), Vec::new()))
                    .expect("deliver")
                    .lsn;
                let acked = Instant::now();
                if healthy.wait_copied(lsn, Duration::from_secs(10)) {
                    let done = Instant::now();
                    from_ack.push(done - acked);
                    from_call.push(done - called);
                }
                thread::sleep(Duration::from_millis(2));
            }
        });
        thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed();
    let head = db.status().applied_lsn;
    let commits = head - start_lsn;
    let commit_rate = commits as f64 / elapsed.as_secs_f64();
    let stats = db.stats();

    // Replay of the second phase's records, on copies already holding the first phase's.
    let (replayed, replay_time, replay_rate) = play_down(&lagged, head);
    let (replayed_fast, replay_time_fast, replay_rate_fast) = play_down(&lagged_fast, head);
    // Closed before the activation is timed: their deep checkpoints' deletions would otherwise share the disk
    // with it (closing stops them after the current file).
    drop(lagged);
    drop(lagged_fast);
    // The LMDB baseline for the same deliveries, into a database as large as the copies' (deliveries only).
    let raw_heed = (workload == Workload::Deliveries).then(|| {
        let sizes = db
            .read(|m, txn| {
                let mb = m.mailbox(txn, &mailbox)?.expect("mailbox");
                let f = m.folder_by_role(txn, &mailbox, FolderRole::Inbox)?.expect("inbox");
                let item = m.newest_by_uid(txn, &mailbox, inbox, 1)?.pop().expect("an item");
                let item_len = mailstore::internals::codec::encode(&item)?.len();
                Ok(RecordSizes {
                    mailbox: mailstore::internals::codec::encode(&mb)?.len(),
                    folder: mailstore::internals::codec::encode(&f)?.len(),
                    item: item_len,
                    listing: item_len + 156,
                    body: MESSAGE + 2,
                })
            })
            .expect("record sizes");
        settle();
        // The first phase's deliveries from empty, as the first replay wrote them; the second phase's after the
        // first's, as the second replay did.
        let first = raw_heed_deliveries(&root.join("raw-heed"), 0, alone_head - alone_start, &sizes);
        settle();
        (first, start_lsn, raw_heed_deliveries(&root.join("raw-heed"), start_lsn, replayed, &sizes))
    });

    // Activation of the caught-up healthy copy (its source still up and idle).
    assert!(healthy.wait_replayed(head, Duration::from_secs(120)), "healthy copy did not catch up");
    settle();
    let t = Instant::now();
    let activated = healthy.activate(MountDial::Lossless, 2, Options::default()).expect("activate");
    let activation_big = t.elapsed();
    let big_epoch = activated.status().epoch;
    // The same load on the activated copy, now an active alone: the active's rate at the size the copies
    // replayed at (phase 0 ran on a database growing from empty, which is faster).
    let promoted_rate = active_alone(&activated, workload, target, &counter, seconds);
    drop(activated);
    drop(log);
    drop(source);

    // Activation of small copies whose active is gone.
    let mut small = Vec::new();
    for i in 0..5 {
        let dir = root.join(format!("small-{i}"));
        let db: Arc<MailEngine> = Arc::new(Engine::mount(dir.join("a"), Options::default()).expect("mount"));
        let op = MailOp::create_mailbox("bob@example.com", "Bob", MailboxKind::User);
        db.commit(op).expect("mailbox");
        let source = Arc::new(ShippingSource::new(Arc::clone(&db), SourceOptions::default()).expect("source"));
        let log: Arc<dyn LogSource> = source.clone();
        let copy: PassiveCopy<MailStore> =
            PassiveCopy::seed(dir.join("p"), source.as_ref(), log, CopyOptions::default(), |_| {}).expect("seed");
        // One commit after the seed, so the copy holds the log's current generation.
        let lsn = db.commit(MailOp::create_mailbox("carol@example.com", "Carol", MailboxKind::User)).expect("c").lsn;
        assert!(copy.wait_replayed(lsn, Duration::from_secs(30)));
        drop(source);
        drop(db);
        let t = Instant::now();
        let engine = copy.activate(MountDial::Lossless, 2, Options::default()).expect("activate");
        small.push(t.elapsed());
        drop(engine);
    }
    small.sort();
    from_ack.sort();
    from_call.sort();

    println!();
    println!("replication, {seconds} s of {} from {DELIVERERS} threads (Durability::Full)", workload.name());
    println!("  active alone:      {alone_rate:.0} commits/s");
    println!(
        "  active, 3 copies on the same vCPUs: {commits} commits in {:.2} s = {commit_rate:.0} commits/s ({:.1} per log fsync)",
        elapsed.as_secs_f64(),
        stats.commits as f64 / stats.log_syncs.max(1) as f64
    );
    println!(
        "  active alone at the copies' size (the activated copy, {head} records and more): {promoted_rate:.0} commits/s"
    );
    for (mode, (replayed, time, rate)) in ["StateSync::EveryBatch", "StateSync::AtCheckpoint"].into_iter().zip(same) {
        println!(
            "  replay of the first phase's records (LSN {alone_start}..{alone_head}, the same database sizes), {mode}: {replayed} records in {:.2} s = {rate:.0} records/s = {:.1}x the active alone (target >= 5x)",
            time.as_secs_f64(),
            rate / alone_rate,
        );
    }
    for (mode, replayed, time, rate) in [
        ("StateSync::EveryBatch", replayed, replay_time, replay_rate),
        ("StateSync::AtCheckpoint", replayed_fast, replay_time_fast, replay_rate_fast),
    ] {
        println!(
            "  replay of the second phase's records (after the first's), {mode}: {replayed} records in {:.2} s = {rate:.0} records/s = {:.1}x the active alone, {:.1}x the active alone at the copies' size, {:.1}x the active with copies",
            time.as_secs_f64(),
            rate / alone_rate,
            rate / promoted_rate,
            rate / commit_rate
        );
    }
    if let Some((first, prefill, rate)) = raw_heed {
        println!(
            "  raw heed baseline, the first phase's deliveries from empty (the state writes only, in transactions as large as replay's): {first:.0} deliveries/s = {:.1}x the active alone; replay of them EveryBatch is {:.0} % of it, AtCheckpoint {:.0} %",
            first / alone_rate,
            same[0].2 / first * 100.0,
            same[1].2 / first * 100.0
        );
        println!(
            "  raw heed baseline, the second phase's deliveries after {prefill} prefilled: {rate:.0} deliveries/s = {:.1}x the active alone; replay of them EveryBatch is {:.0} % of it, AtCheckpoint {:.0} %",
            rate / alone_rate,
            replay_rate / rate * 100.0,
            replay_rate_fast / rate * 100.0
        );
    }
    println!(
        "  lag, acknowledged -> inspected on the copy ({} samples): p50 {}  p99 {}  max {}",
        from_ack.len(),
        ms(percentile(&from_ack, 0.5)),
        ms(percentile(&from_ack, 0.99)),
        ms(from_ack.last().copied().unwrap_or_default())
    );
    println!(
        "  lag, commit called -> inspected on the copy:                p50 {}  p99 {}  max {}",
        ms(percentile(&from_call, 0.5)),
        ms(percentile(&from_call, 0.99)),
        ms(from_call.last().copied().unwrap_or_default())
    );
    println!(
        "  activation, caught-up copy of {head} records, source up and idle: {} (epoch {big_epoch}) (target <= 500 ms)",
        ms(activation_big)
    );
    println!(
        "  activation, 5 small caught-up copies, source gone: min {}  median {}  max {}",
        ms(small[0]),
        ms(small[small.len() / 2]),
        ms(small[small.len() - 1])
    );
    let _ = std::fs::remove_dir_all(&root);
}
