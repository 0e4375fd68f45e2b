//! Mailbox workloads of the mailbox model, each measured against a SQLite baseline in the same run.
//!
//! One run measures:
//!
//! * `deliver_10k/mailstore`: durable deliveries (`MailOp::append` + `Engine::commit`, `Durability::Full`,
//!   default options) of a 10 KiB RFC 5322 message into one Inbox, from 32 threads at once;
//! * `deliver_10k/mailstore_16m_generations`: the same with 16 MiB log generations instead of the default 1 MiB
//!   (not a target: it shows what rolling and deleting a generation every ~100 deliveries costs);
//! * `deliver_10k/sqlite`: the same deliveries into SQLite (rusqlite, bundled SQLite, WAL, `synchronous=FULL`),
//!   32 threads each with its own connection, `busy_timeout` set, `BEGIN IMMEDIATE` retried on `SQLITE_BUSY`;
//! * `deliver_10k/sqlite_serialized`: the SQLite baseline again, with the 32 threads taking one process-wide
//!   mutex around each transaction, so that they queue in the process instead of sleeping in SQLite's busy
//!   handler (still one transaction, so one WAL `fsync`, per delivery; shown for context);
//! * `deliver_10k/sqlite_group_commit`: SQLite with application-level group commit, the strongest baseline and
//!   the one the issue's delivery targets are evaluated against — what a careful SQLite user would build: one
//!   writer thread owns the only connection (configured as above); the 32 deliverers build and parse their
//!   messages themselves, hand each delivery to the writer through a channel and wait for its answer; the writer
//!   takes every delivery waiting, runs them all in one transaction (`BEGIN IMMEDIATE`, the same statements as
//!   the other variants per delivery, `COMMIT`: one WAL `fsync` for all of them), answers each deliverer, and
//!   starts over, adding no delay to gather more. It counts its transactions, so the summary gives deliveries
//!   per transaction (per commit `fsync`);
//! * `newest50/mailstore` and `newest50/sqlite`: the listing of the 50 newest messages of a 100,000-message
//!   folder (id, UID, MODSEQ, flags, received time, subject, From, To, `Date`, Message-ID, size), one query per
//!   iteration, one thread, every row read **in place** on both sides: mailstore's `MailStore::newest_summaries`
//!   (`ItemSummary` views borrowing from the read transaction) and SQLite rows read with `Row::get_ref` (`&str`
//!   borrowed from the statement), each field of each row handed to `black_box` the same way (`use_summary`,
//!   `use_row`) — the issue's targets are evaluated on this pair;
//! * `newest50_owned/mailstore` and `newest50_owned/sqlite`: the same query with every row copied into owned
//!   values (`MailStore::newest_by_uid`, whole `ItemInfo`s; SQLite rows into structs of `String`s), for context;
//! * and, outside criterion, the latency of every one of 5,000 queries per store and variant (measured with
//!   `Instant` around each query, the four interleaved in blocks of 100), for p50 / p90 / p99 / max.
//!
//! Every delivery builds its own message (unique `Subject` and `Message-ID`, 10,240 bytes) and parses its
//! envelope with `mailstore::model::envelope::parse`, on both sides (`MailOp::append` parses it; the SQLite path
//! calls the same function). A SQLite delivery does, in its transaction (its own, or the group commit's), what
//! `MailOp::Append` does: take the next MODSEQ of the mailbox and update its counters, take the next UID of the
//! folder and update its counters (`uidnext`, `highest_modseq`, `total`, `unread`, `size`), insert the message
//! (envelope columns and the raw body as a BLOB; unique index on `(folder, uid)`), and insert one change-log row.
//! The SQL is the same in every SQLite variant (`sqlite_append`, each statement prepared once per connection and
//! cached with `prepare_cached`, as a careful user would); only how deliveries are grouped into transactions
//! differs.
//!
//! The 100,000-message folders are filled once per run, before their first query: the mailstore one by 32
//! deliverers into an engine mounted `Durability::Relaxed`, which is then dismounted and mounted again with
//! `Durability::Full` (default options); the SQLite one by one connection in transactions of 1,000 deliveries,
//! then closed and opened again. Filling is not measured by criterion; its time is printed.
//!
//! The engine's counters (and the group-commit writer's transaction count) are read around every criterion
//! sample; after criterion's report, a summary table gives over the measurement samples (warm-up excluded)
//! deliveries/s, deliveries per log `fdatasync` (SQLite: per transaction, i.e. per WAL `fsync` at `COMMIT`), bytes
//! written to the block device per delivery and per delivered byte (the 10,240-byte message) and deliveries per
//! device cache flush (`/sys/class/block/DEV/stat`, read around every sample; whole-device counters, so
//! meaningful on an idle machine only), the latency percentiles, the ratios and whether the issue's targets are
//! met:
//!
//! * deliveries: `mailstore` at least 2x the deliveries/s of `sqlite_group_commit`; at least 10 deliveries per log
//!   `fdatasync`; at most 1.5 bytes written to the device per delivered byte (the ratios against the weaker
//!   `sqlite` and `sqlite_serialized` baselines are printed for context, without a verdict);
//! * newest-50 (on the in-place pair): p99 at most 200 us, and at least 3x faster than SQLite at p50 and p99.
//!
//! No timed assertion: nothing fails on a figure.
//!
//! The files go to `MAILSTORE_BENCH_DIR` if set, else to the system temporary directory unless that is a memory
//! file system (`tmpfs`, where `fdatasync` costs nothing and the comparison would be meaningless), in which case
//! they go under the crate's `target/bench-tmp`. A full run needs about 3 GB of free space there.
//! `MAILSTORE_BENCH_QUICK=1` shrinks the run to a smoke test (5,000-message folders, short samples); so does
//! criterion's test mode (`-- --test`, or `cargo test --benches`).
//!
//! ```text
//! cargo bench --bench mailbox
//! MAILSTORE_BENCH_QUICK=1 cargo bench --bench mailbox
//! cargo bench --bench mailbox -- --test
//! ```

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;

use common::{Call, MESSAGE_SIZE, Record, Summary, Tally, bench_root, message, mount_of};
use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use mailstore::model::envelope::{self, Address, Envelope};
use mailstore::model::{
    Flags, FolderId, FolderRole, ItemInfo, ItemSummary, MailEngine, MailOp, MailOutput, MailboxKind, Uid,
};
use mailstore::{Durability, Engine, EngineStats, Guid, Options};
use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior, params};

/// Threads delivering at once.
const DELIVERERS: usize = 32;
/// Envelopes per newest-N query.
const NEWEST: u32 = 50;
/// Messages in the folder the queries read (full run).
const FOLDER_MESSAGES: u64 = 100_000;
/// Messages in that folder in a smoke run.
const QUICK_FOLDER_MESSAGES: u64 = 5_000;
/// Queries timed one by one, per store (full run).
const LATENCY_QUERIES: usize = 5_000;
/// Queries run per store before the timed ones.
const LATENCY_WARM_UP: usize = 500;
/// The two stores' timed queries alternate in blocks of this many.
const LATENCY_BLOCK: usize = 100;
/// Deliveries per SQLite transaction while filling the read folder.
const SQLITE_FILL_BATCH: u64 = 1_000;
/// Log generation size of the `mailstore_16m_generations` variant.
const BIG_GENERATION: u64 = 16 << 20;
/// SQLite's busy timeout for the delivering connections.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long criterion runs each benchmark, and how big the fixtures are.
struct Config {
    quick: bool,
    test: bool,
    sample_size: usize,
    warm_up: Duration,
    measurement: Duration,
    folder_messages: u64,
    latency_queries: usize,
}

impl Config {
    fn from_env() -> Self {
        let quick = env::var("MAILSTORE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        // Criterion's test mode (`cargo bench -- --test`, or `cargo test --benches`, which passes no `--bench`) runs
        // every routine once: a check that the bench works, so keep the fixtures small.
        let args: Vec<String> = env::args().collect();
        let test = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
        if quick || test {
            Config {
                quick,
                test,
                sample_size: 10,
                warm_up: Duration::from_millis(100),
                measurement: Duration::from_millis(300),
                folder_messages: QUICK_FOLDER_MESSAGES,
                latency_queries: 500,
            }
        } else {
            Config {
                quick,
                test,
                sample_size: 10,
                warm_up: Duration::from_secs(1),
                measurement: Duration::from_secs(4),
                folder_messages: FOLDER_MESSAGES,
                latency_queries: LATENCY_QUERIES,
            }
        }
    }

    fn apply(&self, group: &mut BenchmarkGroup<'_, WallTime>) {
        group.sample_size(self.sample_size).warm_up_time(self.warm_up).measurement_time(self.measurement);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Records of what was measured.

/// The engine counters this bench looks at (a subset of [`EngineStats`], so that new fields don't matter).
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    commits: u64,
    rejected: u64,
    batches: u64,
    log_syncs: u64,
    state_commits: u64,
    checkpoints: u64,
    map_resizes: u64,
    generations_created: u64,
    generations_recycled: u64,
    bytes_logged: u64,
    /// SQLite only: transactions retried after `SQLITE_BUSY`.
    busy_retries: u64,
    /// SQLite only: transactions committed (with `synchronous=FULL` in WAL mode, one WAL `fsync` each at `COMMIT`).
    transactions: u64,
    /// Bytes written to the bench directory's block device (all processes: see [`device_stat`]).
    dev_bytes: u64,
    /// Cache flushes the device completed (what `fsync`/`fdatasync` become at the device; all processes).
    dev_flushes: u64,
}

impl Tally for Counts {
    fn add(&mut self, other: Counts) {
        self.add_counts(other);
    }
}

impl Counts {
    fn of(s: &EngineStats) -> Self {
        Counts {
            commits: s.commits,
            rejected: s.rejected,
            batches: s.batches,
            log_syncs: s.log_syncs,
            state_commits: s.state_commits,
            checkpoints: s.checkpoints,
            map_resizes: s.map_resizes,
            generations_created: s.generations_created,
            generations_recycled: s.generations_recycled,
            bytes_logged: s.bytes_logged,
            busy_retries: 0,
            transactions: 0,
            ..Counts::device()
        }
    }

    fn since(self, before: Counts) -> Self {
        Counts {
            commits: self.commits - before.commits,
            rejected: self.rejected - before.rejected,
            batches: self.batches - before.batches,
            log_syncs: self.log_syncs - before.log_syncs,
            state_commits: self.state_commits - before.state_commits,
            checkpoints: self.checkpoints - before.checkpoints,
            map_resizes: self.map_resizes - before.map_resizes,
            generations_created: self.generations_created - before.generations_created,
            generations_recycled: self.generations_recycled - before.generations_recycled,
            bytes_logged: self.bytes_logged - before.bytes_logged,
            busy_retries: self.busy_retries - before.busy_retries,
            transactions: self.transactions - before.transactions,
            dev_bytes: self.dev_bytes.saturating_sub(before.dev_bytes),
            dev_flushes: self.dev_flushes.saturating_sub(before.dev_flushes),
        }
    }

    fn add_counts(&mut self, o: Counts) {
        self.commits += o.commits;
        self.rejected += o.rejected;
        self.batches += o.batches;
        self.log_syncs += o.log_syncs;
        self.state_commits += o.state_commits;
        self.checkpoints += o.checkpoints;
        self.map_resizes += o.map_resizes;
        self.generations_created += o.generations_created;
        self.generations_recycled += o.generations_recycled;
        self.bytes_logged += o.bytes_logged;
        self.busy_retries += o.busy_retries;
        self.transactions += o.transactions;
        self.dev_bytes += o.dev_bytes;
        self.dev_flushes += o.dev_flushes;
    }

    /// Only the device counters, now.
    fn device() -> Self {
        let (dev_bytes, dev_flushes) = device_stat();
        Counts { dev_bytes, dev_flushes, ..Counts::default() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    DeliverMailstore,
    DeliverMailstoreBigGenerations,
    DeliverSqlite,
    DeliverSqliteSerialized,
    DeliverSqliteGroupCommit,
    NewestMailstore,
    NewestSqlite,
    NewestOwnedMailstore,
    NewestOwnedSqlite,
}

impl Kind {
    fn is_delivery(self) -> bool {
        self.is_mailstore_delivery()
            || matches!(self, Kind::DeliverSqlite | Kind::DeliverSqliteSerialized | Kind::DeliverSqliteGroupCommit)
    }

    fn is_mailstore_delivery(self) -> bool {
        matches!(self, Kind::DeliverMailstore | Kind::DeliverMailstoreBigGenerations)
    }
}

/// Every benchmark of this run, in registration order.
static RECORDS: Mutex<Vec<Record<Kind, Counts>>> = Mutex::new(Vec::new());
/// Per-query latencies collected outside criterion: (store, latencies).
static LATENCIES: Mutex<Vec<(Kind, Vec<Duration>)>> = Mutex::new(Vec::new());
/// Lines about the fixtures (fill times, sizes) for the summary.
static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn register(name: &str, kind: Kind) -> Arc<Mutex<Vec<Call<Counts>>>> {
    common::register(&RECORDS, name.to_string(), kind)
}

fn note(line: String) {
    println!("{line}");
    NOTES.lock().unwrap().push(line);
}

/// Percentiles of one latency collection.
struct Percentiles {
    count: usize,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    mean: Duration,
}

impl Percentiles {
    fn of(latencies: &[Duration]) -> Option<Self> {
        if latencies.is_empty() {
            return None;
        }
        let mut sorted = latencies.to_vec();
        sorted.sort_unstable();
        // Nearest rank: the smallest value with at least p % of the values at or below it.
        let rank = |p: f64| sorted[((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        Some(Percentiles {
            count: sorted.len(),
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: sorted[sorted.len() - 1],
            mean: sorted.iter().sum::<Duration>() / sorted.len() as u32,
        })
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Where the files go (`common::bench_root`, shared with benches/engine.rs) and the device counters beside it.

/// The bench directory, with the block device counters of its file system located (see [`DEVICE_STAT`]).
fn bench_root_with_device() -> PathBuf {
    let root = bench_root();
    let stat = mount_of(&root).and_then(|(_, _, source)| {
        let name = Path::new(&source).file_name()?.to_owned();
        let path = Path::new("/sys/class/block").join(name).join("stat");
        path.exists().then_some(path)
    });
    match &stat {
        Some(path) => println!("device counters: {}", path.display()),
        None => println!("device counters: none found for the bench dir's file system"),
    }
    DEVICE_STAT.set(stat).expect("the bench root is chosen once");
    root
}

/// The `stat` file of the block device holding the bench directory (set by [`bench_root_with_device`]).
static DEVICE_STAT: OnceLock<Option<PathBuf>> = OnceLock::new();

/// (bytes written, cache flushes completed) of the bench directory's block device since boot, from
/// `/sys/class/block/DEV/stat`; (0, 0) when unknown. These count every process's I/O, the file system's journal
/// included: run on an otherwise idle machine. (`/proc/self/io` would be per process, but it counts whole page
/// cache folios as they are dirtied, which with large folios says little about the bytes actually written.)
fn device_stat() -> (u64, u64) {
    let Some(Some(path)) = DEVICE_STAT.get() else { return (0, 0) };
    let Ok(stat) = fs::read_to_string(path) else { return (0, 0) };
    let fields: Vec<u64> = stat.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    // Field 7 is sectors written (512 bytes each), field 16 flush requests completed.
    (fields.get(6).map_or(0, |s| s * 512), fields.get(15).copied().unwrap_or(0))
}

/// Whether [`device_stat`] reads real counters.
fn has_device_stat() -> bool {
    matches!(DEVICE_STAT.get(), Some(Some(_)))
}

/// Bytes of the files under `path`.
fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(path) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

// ---------------------------------------------------------------------------------------------------------------
// The messages.

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Runs `iters` units of `work` spread over one thread per element of `states` (at most `iters` threads),
/// released together; returns the wall time until the last one finished, and the sum of what `work` returned.
fn run_parallel<S: Send>(states: &mut [S], iters: u64, work: impl Fn(&mut S) -> u64 + Sync) -> (Duration, u64) {
    let threads = (states.len() as u64).min(iters).max(1) as usize;
    let barrier = Barrier::new(threads + 1);
    let total = AtomicU64::new(0);
    let elapsed = thread::scope(|s| {
        let handles: Vec<_> = states
            .iter_mut()
            .take(threads)
            .enumerate()
            .map(|(t, state)| {
                let share = iters / threads as u64 + u64::from((t as u64) < iters % threads as u64);
                let (barrier, work, total) = (&barrier, &work, &total);
                s.spawn(move || {
                    barrier.wait();
                    let mut sum = 0;
                    for _ in 0..share {
                        sum += work(state);
                    }
                    total.fetch_add(sum, Ordering::Relaxed);
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().expect("worker panicked");
        }
        start.elapsed()
    });
    (elapsed, total.into_inner())
}

// ---------------------------------------------------------------------------------------------------------------
// mailstore.

/// One mailbox in a mounted engine, and where its files are.
struct MailFixture {
    db: MailEngine,
    guid: Guid,
    inbox: FolderId,
    next: AtomicU64,
}

fn mail_mount(dir: &Path, options: Options) -> MailEngine {
    Engine::mount(dir, options).expect("mount")
}

/// Mounts a new engine in `dir` and creates a user mailbox in it.
fn mail_create(dir: &Path, options: Options) -> MailFixture {
    let db = mail_mount(dir, options);
    let op = MailOp::create_mailbox("alice@example.com", "Alice Example", MailboxKind::User);
    let MailOp::CreateMailbox { guid, .. } = op else { unreachable!() };
    db.commit(op).expect("create mailbox");
    let inbox = mail_inbox(&db, guid);
    MailFixture { db, guid, inbox, next: AtomicU64::new(0) }
}

fn mail_inbox(db: &MailEngine, guid: Guid) -> FolderId {
    db.read(|s, txn| s.folder_by_role(txn, &guid, FolderRole::Inbox)).expect("read").expect("an Inbox").id
}

fn mail_deliver(f: &MailFixture) -> u64 {
    let raw = message(f.next.fetch_add(1, Ordering::Relaxed));
    match f.db.commit(MailOp::append(f.guid, f.inbox, raw, Flags::empty(), vec![])).expect("deliver").output {
        MailOutput::Appended { .. } => 0,
        other => panic!("append returned {other:?}"),
    }
}

/// The listing of the newest [`NEWEST`] messages of the Inbox, in one snapshot, every row read in place and
/// handed to [`use_summary`]; returns the rows read.
fn mail_newest(f: &MailFixture) -> u64 {
    f.db.read(|s, txn| {
        let rows = s.newest_summaries(txn, &f.guid, f.inbox, NEWEST as usize)?;
        Ok(rows.iter().map(use_summary).sum())
    })
    .expect("read")
}

/// What a listing reads of each row: the same fields as [`use_row`] reads of a SQLite row (From and To as their
/// addresses, which the SQLite schema stores pre-formatted in one string each).
fn use_summary(s: &ItemSummary<'_>) -> u64 {
    black_box((s.id(), s.uid(), s.modseq(), s.flags(), s.received(), s.subject(), s.date(), s.message_id(), s.size()));
    for a in s.from().iter().chain(s.to().iter()) {
        black_box(a);
    }
    1
}

/// The envelopes (whole item records, owned) of the newest [`NEWEST`] messages of the Inbox, in one snapshot.
fn mail_newest_owned(f: &MailFixture) -> Vec<ItemInfo> {
    f.db.read(|s, txn| s.newest_by_uid(txn, &f.guid, f.inbox, NEWEST as usize)).expect("read")
}

// ---------------------------------------------------------------------------------------------------------------
// SQLite.

const SQLITE_SCHEMA: &str = "
    CREATE TABLE mailboxes (
        id INTEGER PRIMARY KEY,
        guid BLOB NOT NULL UNIQUE,
        address TEXT NOT NULL UNIQUE,
        highest_modseq INTEGER NOT NULL,
        items INTEGER NOT NULL,
        size INTEGER NOT NULL
    );
    CREATE TABLE folders (
        id INTEGER PRIMARY KEY,
        mailbox INTEGER NOT NULL REFERENCES mailboxes(id),
        parent INTEGER,
        name TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uidnext INTEGER NOT NULL,
        highest_modseq INTEGER NOT NULL,
        total INTEGER NOT NULL,
        unread INTEGER NOT NULL,
        size INTEGER NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        folder INTEGER NOT NULL,
        uid INTEGER NOT NULL,
        modseq INTEGER NOT NULL,
        flags INTEGER NOT NULL,
        received INTEGER NOT NULL,
        subject TEXT,
        from_addr TEXT NOT NULL,
        to_addr TEXT NOT NULL,
        date INTEGER,
        message_id TEXT,
        size INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    CREATE UNIQUE INDEX messages_folder_uid ON messages(folder, uid);
    CREATE TABLE changes (
        mailbox INTEGER NOT NULL,
        modseq INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        folder INTEGER,
        item INTEGER,
        uid INTEGER,
        PRIMARY KEY (mailbox, modseq, seq)
    ) WITHOUT ROWID;
";

/// The row ids of the mailbox and its Inbox.
#[derive(Clone, Copy, Debug)]
struct SqlIds {
    mailbox: i64,
    inbox: i64,
}

/// A SQLite database with one mailbox, and one connection per deliverer.
struct SqlFixture {
    path: PathBuf,
    ids: SqlIds,
    conns: Vec<Connection>,
    next: AtomicU64,
}

/// Opens a connection as every connection of the baseline is configured: WAL, `synchronous=FULL`, a busy timeout.
fn sqlite_open(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open SQLite");
    conn.busy_timeout(BUSY_TIMEOUT).expect("busy_timeout");
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).expect("journal_mode");
    assert_eq!(mode, "wal", "SQLite refused WAL mode");
    conn.pragma_update(None, "synchronous", "FULL").expect("synchronous");
    let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).expect("synchronous");
    assert_eq!(sync, 2, "synchronous is not FULL");
    conn
}

/// Creates the database in `dir` with one mailbox and its Inbox; opens `conns` connections to it.
fn sqlite_create(dir: &Path, conns: usize) -> SqlFixture {
    let path = dir.join("mail.sqlite");
    let conn = sqlite_open(&path);
    conn.execute_batch(SQLITE_SCHEMA).expect("schema");
    let uidvalidity = (now_micros() / 1_000_000) as i64;
    conn.execute(
        "INSERT INTO mailboxes (guid, address, highest_modseq, items, size) VALUES (?1, ?2, 1, 0, 0)",
        params![Guid::new_random().as_bytes().as_slice(), "alice@example.com"],
    )
    .expect("mailbox");
    let mailbox = conn.last_insert_rowid();
    conn.execute(
        "INSERT INTO folders (mailbox, parent, name, uidvalidity, uidnext, highest_modseq, total, unread, size) \
         VALUES (?1, NULL, '', ?2, 1, 1, 0, 0, 0)",
        params![mailbox, uidvalidity],
    )
    .expect("root folder");
    let root = conn.last_insert_rowid();
    conn.execute(
        "INSERT INTO folders (mailbox, parent, name, uidvalidity, uidnext, highest_modseq, total, unread, size) \
         VALUES (?1, ?2, 'Inbox', ?3, 1, 1, 0, 0, 0)",
        params![mailbox, root, uidvalidity],
    )
    .expect("inbox");
    let inbox = conn.last_insert_rowid();
    let mut all = vec![conn];
    all.extend((1..conns).map(|_| sqlite_open(&path)));
    SqlFixture { path, ids: SqlIds { mailbox, inbox }, conns: all, next: AtomicU64::new(0) }
}

fn addresses(list: &[Address]) -> String {
    let mut out = String::new();
    for a in list {
        if !out.is_empty() {
            out.push_str(", ");
        }
        match (&a.name, &a.email) {
            (Some(name), Some(email)) => write!(out, "\"{name}\" <{email}>").expect("write to a String"),
            (None, Some(email)) => out.push_str(email),
            (Some(name), None) => out.push_str(name),
            (None, None) => {}
        }
    }
    out
}

/// What `MailOp::Append` does, inside the caller's transaction: next MODSEQ and counters of the mailbox, next
/// UID and counters of the folder, the message row, one change-log row.
fn sqlite_append(tx: &Transaction<'_>, ids: SqlIds, raw: &[u8], env: &Envelope, received: u64) -> rusqlite::Result<()> {
    let size = raw.len() as i64;
    let modseq: i64 = tx
        .prepare_cached(
            "UPDATE mailboxes SET highest_modseq = highest_modseq + 1, items = items + 1, size = size + ?2 \
             WHERE id = ?1 RETURNING highest_modseq",
        )?
        .query_row(params![ids.mailbox, size], |r| r.get(0))?;
    let uid: i64 = tx
        .prepare_cached(
            "UPDATE folders SET uidnext = uidnext + 1, highest_modseq = ?2, total = total + 1, \
             unread = unread + 1, size = size + ?3 WHERE id = ?1 RETURNING uidnext - 1",
        )?
        .query_row(params![ids.inbox, modseq, size], |r| r.get(0))?;
    tx.prepare_cached(
        "INSERT INTO messages (folder, uid, modseq, flags, received, subject, from_addr, to_addr, date, \
         message_id, size, body) VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        ids.inbox,
        uid,
        modseq,
        received as i64,
        env.subject,
        addresses(&env.from),
        addresses(&env.to),
        env.date,
        env.message_id,
        size,
        raw
    ])?;
    let item = tx.last_insert_rowid();
    tx.prepare_cached(
        "INSERT INTO changes (mailbox, modseq, seq, kind, folder, item, uid) VALUES (?1, ?2, 0, 0, ?3, ?4, ?5)",
    )?
    .execute(params![ids.mailbox, modseq, ids.inbox, item, uid])?;
    Ok(())
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

/// Process-wide lock of the serialized SQLite variant.
static SQLITE_WRITER: Mutex<()> = Mutex::new(());

/// One delivery as its own transaction (`BEGIN IMMEDIATE`, retried on `SQLITE_BUSY`); returns the retries.
/// With `serialize`, the transaction runs under [`SQLITE_WRITER`].
fn sqlite_deliver(conn: &mut Connection, ids: SqlIds, n: u64, serialize: bool) -> u64 {
    let raw = message(n);
    let env = envelope::parse(&raw);
    let received = now_micros();
    let mut retries = 0;
    loop {
        let _guard = serialize.then(|| SQLITE_WRITER.lock().unwrap());
        let result = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .and_then(|tx| sqlite_append(&tx, ids, &raw, &env, received).and_then(|()| tx.commit()));
        match result {
            Ok(()) => return retries,
            Err(e) if is_busy(&e) => retries += 1,
            Err(e) => panic!("SQLite delivery failed: {e}"),
        }
    }
}

/// One delivery handed to the group-commit writer: the message and its envelope, built and parsed by the
/// deliverer, and where the writer answers once the transaction holding it has committed (or failed).
struct GroupDelivery {
    raw: Vec<u8>,
    env: Envelope,
    received: u64,
    answer: mpsc::SyncSender<Result<(), String>>,
}

/// What the group-commit writer counts, read by the benchmark around each sample.
#[derive(Default)]
struct GroupStats {
    /// Transactions committed. Counted before their deliverers are answered, so a sample's count is complete
    /// when its last deliverer returns.
    transactions: AtomicU64,
    /// Most deliveries in one transaction.
    largest: AtomicU64,
}

/// SQLite with application-level group commit: one writer thread owns the only connection (configured as every
/// baseline connection is: WAL, `synchronous=FULL`); deliverers hand it their deliveries through a channel and
/// wait for its answer.
struct SqlGroupFixture {
    path: PathBuf,
    ids: SqlIds,
    /// Where deliverers hand over deliveries (`None` once the writer is told to stop).
    queue: Option<mpsc::Sender<GroupDelivery>>,
    writer: Option<JoinHandle<Connection>>,
    stats: Arc<GroupStats>,
    next: AtomicU64,
}

impl SqlGroupFixture {
    /// Creates the database in `dir` (the same schema and mailbox as [`sqlite_create`]) and starts the writer.
    fn start(dir: &Path) -> Self {
        let SqlFixture { path, ids, mut conns, next } = sqlite_create(dir, 1);
        let conn = conns.pop().expect("one connection");
        let (queue, deliveries) = mpsc::channel();
        let stats = Arc::new(GroupStats::default());
        let writer = thread::Builder::new()
            .name("sqlite-group-writer".into())
            .spawn({
                let stats = Arc::clone(&stats);
                move || sqlite_group_writer(conn, ids, &deliveries, &stats)
            })
            .expect("spawn the writer");
        SqlGroupFixture { path, ids, queue: Some(queue), writer: Some(writer), stats, next }
    }

    /// Stops the writer (it commits what was handed over first) and returns its connection.
    fn finish(&mut self) -> Connection {
        drop(self.queue.take());
        self.writer.take().expect("the writer runs").join().expect("the writer panicked")
    }
}

/// The group-commit writer: waits for a delivery, takes it and every other one waiting, runs them all in one
/// transaction (`BEGIN IMMEDIATE`, one [`sqlite_append`] each, `COMMIT`: one WAL `fsync`), answers every one of
/// them, and starts over; no delay is added to gather more. Returns the connection once every sender is gone.
fn sqlite_group_writer(
    mut conn: Connection,
    ids: SqlIds,
    deliveries: &mpsc::Receiver<GroupDelivery>,
    stats: &GroupStats,
) -> Connection {
    let mut batch = Vec::with_capacity(DELIVERERS);
    while let Ok(first) = deliveries.recv() {
        batch.push(first);
        batch.extend(deliveries.try_iter());
        let result = conn.transaction_with_behavior(TransactionBehavior::Immediate).and_then(|tx| {
            for d in &batch {
                sqlite_append(&tx, ids, &d.raw, &d.env, d.received)?;
            }
            tx.commit()
        });
        if result.is_ok() {
            stats.transactions.fetch_add(1, Ordering::Relaxed);
            stats.largest.fetch_max(batch.len() as u64, Ordering::Relaxed);
        }
        let answer = result.map_err(|e| e.to_string());
        for d in batch.drain(..) {
            // A deliverer that is gone has nobody to tell.
            let _ = d.answer.send(answer.clone());
        }
    }
    conn
}

/// One delivery through the group-commit writer: build the message and parse its envelope here, on the
/// deliverer's thread, hand it over and wait until its transaction has committed. Returns 0 (no retries).
fn sqlite_group_deliver(queue: &mpsc::Sender<GroupDelivery>, n: u64) -> u64 {
    let raw = message(n);
    let env = envelope::parse(&raw);
    let received = now_micros();
    let (answer, reply) = mpsc::sync_channel(1);
    queue.send(GroupDelivery { raw, env, received, answer }).expect("the group-commit writer is gone");
    match reply.recv() {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => panic!("SQLite group-commit delivery failed: {e}"),
        Err(_) => panic!("the group-commit writer went away without answering"),
    }
}

/// One row of a newest-N answer, owned.
#[allow(dead_code)] // read through `black_box` only
#[derive(Debug)]
struct EnvelopeRow {
    id: i64,
    uid: Uid,
    modseq: i64,
    flags: u8,
    received: i64,
    subject: Option<String>,
    from: String,
    to: String,
    date: Option<i64>,
    message_id: Option<String>,
    size: i64,
}

/// The newest-N query of both SQLite variants.
const SQLITE_NEWEST: &str = "SELECT id, uid, modseq, flags, received, subject, from_addr, to_addr, date, \
                             message_id, size FROM messages WHERE folder = ?1 ORDER BY uid DESC LIMIT ?2";

/// One row of a newest-N answer, borrowed from the statement (valid until the next step).
#[derive(Debug)]
struct EnvelopeRef<'a> {
    id: i64,
    uid: Uid,
    modseq: i64,
    flags: u8,
    received: i64,
    subject: Option<&'a str>,
    from: &'a str,
    to: &'a str,
    date: Option<i64>,
    message_id: Option<&'a str>,
    size: i64,
}

/// What a listing reads of each row (see [`use_summary`]).
fn use_row(r: &EnvelopeRef<'_>) -> u64 {
    black_box((r.id, r.uid, r.modseq, r.flags, r.received, r.subject, r.date, r.message_id, r.size));
    black_box(r.from);
    black_box(r.to);
    1
}

/// The listing of the newest [`NEWEST`] messages of the Inbox (newest first), every row read in place and handed
/// to [`use_row`]; returns the rows read.
fn sqlite_newest(conn: &Connection, ids: SqlIds) -> u64 {
    let mut stmt = conn.prepare_cached(SQLITE_NEWEST).expect("prepare");
    let mut rows = stmt.query(params![ids.inbox, NEWEST]).expect("query");
    let mut read = 0;
    while let Some(r) = rows.next().expect("row") {
        let text = |i: usize| r.get_ref(i).expect("column").as_str().expect("text");
        let opt_text = |i: usize| r.get_ref(i).expect("column").as_str_or_null().expect("text or NULL");
        let row = EnvelopeRef {
            id: r.get(0).expect("id"),
            uid: r.get(1).expect("uid"),
            modseq: r.get(2).expect("modseq"),
            flags: r.get(3).expect("flags"),
            received: r.get(4).expect("received"),
            subject: opt_text(5),
            from: text(6),
            to: text(7),
            date: r.get(8).expect("date"),
            message_id: opt_text(9),
            size: r.get(10).expect("size"),
        };
        read += use_row(&row);
    }
    read
}

/// The envelopes of the newest [`NEWEST`] messages of the Inbox (newest first), copied into owned rows.
fn sqlite_newest_owned(conn: &Connection, ids: SqlIds) -> Vec<EnvelopeRow> {
    let mut stmt = conn.prepare_cached(SQLITE_NEWEST).expect("prepare");
    let rows = stmt
        .query_map(params![ids.inbox, NEWEST], |r| {
            Ok(EnvelopeRow {
                id: r.get(0)?,
                uid: r.get(1)?,
                modseq: r.get(2)?,
                flags: r.get(3)?,
                received: r.get(4)?,
                subject: r.get(5)?,
                from: r.get(6)?,
                to: r.get(7)?,
                date: r.get(8)?,
                message_id: r.get(9)?,
                size: r.get(10)?,
            })
        })
        .expect("query");
    rows.collect::<rusqlite::Result<Vec<_>>>().expect("row")
}

// ---------------------------------------------------------------------------------------------------------------
// Deliveries.

fn bench_deliveries(c: &mut Criterion, cfg: &Config, root: &Path) {
    let mut group = c.benchmark_group("deliver_10k");
    cfg.apply(&mut group);
    group.throughput(Throughput::Elements(1));

    // One database per benchmark, made on its first call (so that filtered-out benchmarks make no files),
    // used for all its samples: creating it is not what is measured.
    // `mailstore` is the benchmark of the issue (default options); `mailstore_16m_generations` is the same with
    // 16 MiB log generations instead of 1 MiB, to show what rolling and deleting generations costs here.
    for (name, kind, options) in [
        ("mailstore", Kind::DeliverMailstore, Options::default()),
        (
            "mailstore_16m_generations",
            Kind::DeliverMailstoreBigGenerations,
            Options::default().log_target_size(BIG_GENERATION),
        ),
    ] {
        let dir = tempfile::tempdir_in(root).expect("tempdir");
        let mut fixture: Option<MailFixture> = None;
        let calls = register(&format!("deliver_10k/{name}"), kind);
        group.bench_function(name, |b| {
            let f = fixture.get_or_insert_with(|| mail_create(dir.path(), options.clone()));
            b.iter_custom(|iters| {
                let before = Counts::of(&f.db.stats());
                let mut states = vec![(); DELIVERERS];
                let (elapsed, _) = run_parallel(&mut states, iters, |_| mail_deliver(f));
                // The writer counts a batch before it answers its committers, so every delivery is in here.
                let counts = Counts::of(&f.db.stats()).since(before);
                calls.lock().unwrap().push(Call { iters, elapsed, counts });
                elapsed
            })
        });
        if let Some(f) = fixture {
            let (deliveries, bytes) = (f.next.load(Ordering::Relaxed), dir_size(dir.path()));
            let stats = f.db.stats();
            f.db.dismount().expect("dismount");
            note(format!(
                "deliver_10k/{name}: {deliveries} deliveries in all (warm-up included), {:.0} MiB on disk at the \
                 end ({} checkpoints, {} generations created, {} recycled, {} map resizes since mount)",
                mib(bytes),
                stats.checkpoints,
                stats.generations_created,
                stats.generations_recycled,
                stats.map_resizes
            ));
        }
    }

    for (name, kind, serialize) in
        [("sqlite", Kind::DeliverSqlite, false), ("sqlite_serialized", Kind::DeliverSqliteSerialized, true)]
    {
        let dir = tempfile::tempdir_in(root).expect("tempdir");
        let mut fixture: Option<SqlFixture> = None;
        let calls = register(&format!("deliver_10k/{name}"), kind);
        group.bench_function(name, |b| {
            let f = fixture.get_or_insert_with(|| sqlite_create(dir.path(), DELIVERERS));
            b.iter_custom(|iters| {
                let (ids, next) = (f.ids, &f.next);
                let before = Counts::device();
                let (elapsed, retries) = run_parallel(&mut f.conns, iters, |conn| {
                    sqlite_deliver(conn, ids, next.fetch_add(1, Ordering::Relaxed), serialize)
                });
                // One transaction per delivery (a retried one never began: `BEGIN IMMEDIATE` is what fails).
                let counts = Counts { commits: iters, busy_retries: retries, transactions: iters, ..Counts::device() }
                    .since(before);
                calls.lock().unwrap().push(Call { iters, elapsed, counts });
                elapsed
            })
        });
        if let Some(f) = fixture {
            let deliveries = f.next.load(Ordering::Relaxed);
            let total: i64 = f.conns[0]
                .query_row("SELECT total FROM folders WHERE id = ?1", [f.ids.inbox], |r| r.get(0))
                .expect("count");
            let bytes = dir_size(dir.path());
            drop(f.conns);
            note(format!(
                "deliver_10k/{name}: {deliveries} deliveries in all (warm-up included; folder total {total}), \
                 {:.0} MiB on disk at the end ({})",
                mib(bytes),
                f.path.display()
            ));
        }
    }

    // The strongest SQLite baseline: one writer thread and connection, every waiting delivery in one transaction.
    let dir = tempfile::tempdir_in(root).expect("tempdir");
    let mut fixture: Option<SqlGroupFixture> = None;
    let calls = register("deliver_10k/sqlite_group_commit", Kind::DeliverSqliteGroupCommit);
    group.bench_function("sqlite_group_commit", |b| {
        let f = fixture.get_or_insert_with(|| SqlGroupFixture::start(dir.path()));
        b.iter_custom(|iters| {
            let (queue, next) = (f.queue.as_ref().expect("the writer runs"), &f.next);
            let transactions = f.stats.transactions.load(Ordering::Relaxed);
            let before = Counts::device();
            let mut states = vec![(); DELIVERERS];
            let (elapsed, _) =
                run_parallel(&mut states, iters, |_| sqlite_group_deliver(queue, next.fetch_add(1, Ordering::Relaxed)));
            // The writer counts a transaction before it answers its deliverers, so every delivery is in here.
            let transactions = f.stats.transactions.load(Ordering::Relaxed) - transactions;
            let counts = Counts { commits: iters, transactions, ..Counts::device() }.since(before);
            calls.lock().unwrap().push(Call { iters, elapsed, counts });
            elapsed
        })
    });
    if let Some(mut f) = fixture {
        let conn = f.finish();
        let deliveries = f.next.load(Ordering::Relaxed);
        let total: i64 =
            conn.query_row("SELECT total FROM folders WHERE id = ?1", [f.ids.inbox], |r| r.get(0)).expect("count");
        let transactions = f.stats.transactions.load(Ordering::Relaxed);
        let bytes = dir_size(dir.path());
        drop(conn);
        note(format!(
            "deliver_10k/sqlite_group_commit: {deliveries} deliveries in all (warm-up included; folder total \
             {total}) in {transactions} transactions ({:.1} per transaction, at most {}), {:.0} MiB on disk at the \
             end ({})",
            deliveries as f64 / transactions.max(1) as f64,
            f.stats.largest.load(Ordering::Relaxed),
            mib(bytes),
            f.path.display()
        ));
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------------------------
// Newest 50 of a big folder.

/// Fills a mailstore Inbox with `count` messages (32 deliverers, `Relaxed`), then remounts it `Full`.
fn mail_fill(dir: &Path, count: u64) -> MailFixture {
    let start = Instant::now();
    let mut f = mail_create(dir, Options::default().durability(Durability::Relaxed));
    let mut states = vec![(); DELIVERERS];
    let (delivering, _) = run_parallel(&mut states, count, |_| mail_deliver(&f));
    let stats = f.db.stats();
    f.db.dismount().expect("dismount");
    f.db = mail_mount(dir, Options::default());
    let folder = f.db.read(|s, txn| s.folder(txn, &f.guid, f.inbox)).expect("read").expect("the Inbox");
    note(format!(
        "newest50/mailstore fixture: {} messages ({:.0} MiB) delivered in {:.1} s ({:.0}/s, Relaxed, {DELIVERERS} \
         deliverers, {} checkpoints, {} map resizes), remounted Full; {:.1} s in all; {:.0} MiB on disk",
        folder.total,
        mib(folder.size),
        delivering.as_secs_f64(),
        count as f64 / delivering.as_secs_f64(),
        stats.checkpoints,
        stats.map_resizes,
        start.elapsed().as_secs_f64(),
        mib(dir_size(dir)),
    ));
    f
}

/// Fills a SQLite Inbox with `count` messages (one connection, transactions of [`SQLITE_FILL_BATCH`]), then
/// closes it and opens it again.
fn sqlite_fill(dir: &Path, count: u64) -> SqlFixture {
    let start = Instant::now();
    let mut f = sqlite_create(dir, 1);
    let conn = &mut f.conns[0];
    let mut n = 0;
    while n < count {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).expect("begin");
        for _ in 0..SQLITE_FILL_BATCH.min(count - n) {
            let raw = message(n);
            let env = envelope::parse(&raw);
            sqlite_append(&tx, f.ids, &raw, &env, now_micros()).expect("insert");
            n += 1;
        }
        tx.commit().expect("commit");
    }
    let filling = start.elapsed();
    drop(f.conns);
    f.conns = vec![sqlite_open(&f.path)];
    let total: i64 =
        f.conns[0].query_row("SELECT total FROM folders WHERE id = ?1", [f.ids.inbox], |r| r.get(0)).expect("total");
    note(format!(
        "newest50/sqlite fixture: {total} messages inserted in {:.1} s ({:.0}/s, transactions of \
         {SQLITE_FILL_BATCH}), closed and reopened; {:.1} s in all; {:.0} MiB on disk",
        filling.as_secs_f64(),
        count as f64 / filling.as_secs_f64(),
        start.elapsed().as_secs_f64(),
        mib(dir_size(dir)),
    ));
    f
}

fn bench_newest(c: &mut Criterion, cfg: &Config, root: &Path) {
    let mail_dir = tempfile::tempdir_in(root).expect("tempdir");
    let sql_dir = tempfile::tempdir_in(root).expect("tempdir");
    let mut mail: Option<MailFixture> = None;
    let mut sql: Option<SqlFixture> = None;

    // Times `iters` calls of `query`, for criterion, and records the sample.
    fn timed(iters: u64, calls: &Mutex<Vec<Call<Counts>>>, query: impl Fn()) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            query();
        }
        let elapsed = start.elapsed();
        calls.lock().unwrap().push(Call { iters, elapsed, counts: Counts::default() });
        elapsed
    }

    // `newest50`: rows read in place on both sides (the issue's targets); `newest50_owned`: rows copied out.
    for (group_name, owned) in [("newest50", false), ("newest50_owned", true)] {
        let mut group = c.benchmark_group(group_name);
        cfg.apply(&mut group);
        group.throughput(Throughput::Elements(1));
        let kind = if owned { Kind::NewestOwnedMailstore } else { Kind::NewestMailstore };
        let calls = register(&format!("{group_name}/mailstore"), kind);
        group.bench_function("mailstore", |b| {
            let f = mail.get_or_insert_with(|| mail_fill(mail_dir.path(), cfg.folder_messages));
            b.iter_custom(|iters| {
                if owned {
                    timed(iters, &calls, || drop(black_box(mail_newest_owned(f))))
                } else {
                    timed(iters, &calls, || {
                        black_box(mail_newest(f));
                    })
                }
            })
        });
        let kind = if owned { Kind::NewestOwnedSqlite } else { Kind::NewestSqlite };
        let calls = register(&format!("{group_name}/sqlite"), kind);
        group.bench_function("sqlite", |b| {
            let f = sql.get_or_insert_with(|| sqlite_fill(sql_dir.path(), cfg.folder_messages));
            b.iter_custom(|iters| {
                if owned {
                    timed(iters, &calls, || drop(black_box(sqlite_newest_owned(&f.conns[0], f.ids))))
                } else {
                    timed(iters, &calls, || {
                        black_box(sqlite_newest(&f.conns[0], f.ids));
                    })
                }
            })
        });
        group.finish();
    }

    // Both variants of each store answer the same rows.
    if let Some(f) = &mail {
        let newest = mail_newest_owned(f);
        let uids = (newest.first().map(|i| i.uid), newest.last().map(|i| i.uid));
        println!("newest50/mailstore answers {} items, UIDs {:?}..={:?}", newest.len(), uids.0, uids.1);
        assert_eq!(mail_newest(f), newest.len() as u64, "in-place and owned listings differ");
        let in_place: mailstore::Result<Vec<ItemInfo>> = f.db.read(|s, txn| {
            Ok(s.newest_summaries(txn, &f.guid, f.inbox, NEWEST as usize)?.iter().map(|s| s.to_item_info()).collect())
        });
        assert_eq!(in_place.expect("read"), newest, "in-place and owned listings differ");
    }
    if let Some(f) = &sql {
        let newest = sqlite_newest_owned(&f.conns[0], f.ids);
        let uids = (newest.last().map(|r| r.uid), newest.first().map(|r| r.uid));
        println!("newest50/sqlite answers {} rows, UIDs {:?}..={:?}", newest.len(), uids.0, uids.1);
        assert_eq!(sqlite_newest(&f.conns[0], f.ids), newest.len() as u64, "in-place and owned listings differ");
    }

    // Per-query latencies, outside criterion, for the stores whose benchmarks ran.
    let mut queries: Vec<(Kind, Box<dyn Fn() + '_>)> = Vec::new();
    if let Some(f) = &mail {
        queries.push((
            Kind::NewestMailstore,
            Box::new(move || {
                black_box(mail_newest(f));
            }),
        ));
        queries.push((Kind::NewestOwnedMailstore, Box::new(move || drop(black_box(mail_newest_owned(f))))));
    }
    if let Some(f) = &sql {
        queries.push((
            Kind::NewestSqlite,
            Box::new(move || {
                black_box(sqlite_newest(&f.conns[0], f.ids));
            }),
        ));
        queries.push((
            Kind::NewestOwnedSqlite,
            Box::new(move || drop(black_box(sqlite_newest_owned(&f.conns[0], f.ids)))),
        ));
    }
    if !queries.is_empty() {
        let count = cfg.latency_queries;
        for (_, query) in &queries {
            for _ in 0..LATENCY_WARM_UP {
                query();
            }
        }
        let mut latencies: Vec<Vec<Duration>> = queries.iter().map(|_| Vec::with_capacity(count)).collect();
        let mut done = 0;
        while done < count {
            let block = LATENCY_BLOCK.min(count - done);
            for ((_, query), out) in queries.iter().zip(&mut latencies) {
                for _ in 0..block {
                    let start = Instant::now();
                    query();
                    out.push(start.elapsed());
                }
            }
            done += block;
        }
        let mut all = LATENCIES.lock().unwrap();
        for ((kind, _), l) in queries.iter().zip(latencies) {
            all.push((*kind, l));
        }
    }
    drop(queries);
    if let Some(f) = mail {
        f.db.dismount().expect("dismount");
    }
    drop(sql);
}

// ---------------------------------------------------------------------------------------------------------------
// Summary.

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn print_summary(cfg: &Config) {
    let records = RECORDS.lock().unwrap();
    let summaries: Vec<Summary<Kind, Counts>> =
        records.iter().filter_map(|r| Summary::of(r, cfg.sample_size)).collect();
    let latencies = LATENCIES.lock().unwrap();
    if summaries.is_empty() && latencies.is_empty() {
        return;
    }
    let find = |kind: Kind| summaries.iter().find(|s| s.kind == kind);

    println!();
    println!(
        "mailstore mailbox summary{} (criterion measurement samples only, warm-up excluded; rate = total ops / \
         total time)",
        if cfg.quick || cfg.test { " [smoke run: QUICK or --test, figures not meaningful]" } else { "" }
    );
    for line in NOTES.lock().unwrap().iter() {
        println!("  {line}");
    }

    // Bytes written to the device per delivery and per delivered byte (the message), `None` without counters.
    let dev_per_op =
        |s: &Summary<Kind, Counts>| has_device_stat().then(|| s.counts.dev_bytes as f64 / s.ops.max(1) as f64);
    let dev_per_byte = |s: &Summary<Kind, Counts>| dev_per_op(s).map(|b| b / MESSAGE_SIZE as f64);
    let or_dash = |v: Option<f64>, precision: usize| v.map_or_else(|| "-".to_string(), |v| format!("{v:.precision$}"));

    if summaries.iter().any(|s| s.kind.is_delivery()) {
        println!();
        println!(
            "{:<38} {:>7} {:>9} {:>8} {:>9} {:>8} {:>8} {:>9} {:>8} {:>6} {:>5} {:>10} {:>9} {:>8} {:>9} {:>8}",
            "deliveries (10 KiB, 32 threads)",
            "samples",
            "ops",
            "ops/s",
            "median/s",
            "batches",
            "fsyncs",
            "per fsync",
            "LMDB cmt",
            "ckpts",
            "gens",
            "KiB log/op",
            "dev B/op",
            "dev B/B",
            "ops/flush",
            "busy rtr"
        );
        for s in summaries.iter().filter(|s| s.kind.is_delivery()) {
            let k = s.counts;
            let mail = s.kind.is_mailstore_delivery();
            let field = |v: u64| if mail { v.to_string() } else { "-".to_string() };
            // mailstore: write batches and the log fdatasyncs that made them durable; SQLite: transactions, each made
            // durable by one WAL fsync at COMMIT (`synchronous=FULL`).
            let (batches, syncs) = if mail { (k.batches, k.log_syncs) } else { (k.transactions, k.transactions) };
            let per_sync = if syncs > 0 { format!("{:.1}", k.commits as f64 / syncs as f64) } else { "-".to_string() };
            let log_per_op = if mail {
                format!("{:.2}", k.bytes_logged as f64 / 1024.0 / k.commits.max(1) as f64)
            } else {
                "-".into()
            };
            println!(
                "{:<38} {:>7} {:>9} {:>8.0} {:>9.0} {:>8} {:>8} {:>9} {:>8} {:>6} {:>5} {:>10} {:>9} {:>8} {:>9} {:>8}",
                s.name,
                s.samples,
                s.ops,
                s.rate(),
                1e9 / s.median_ns,
                batches,
                syncs,
                per_sync,
                field(k.state_commits),
                field(k.checkpoints),
                field(k.generations_created + k.generations_recycled),
                log_per_op,
                or_dash(dev_per_op(s), 0),
                or_dash(dev_per_byte(s), 2),
                if has_device_stat() {
                    format!("{:.1}", s.ops as f64 / k.dev_flushes.max(1) as f64)
                } else {
                    "-".into()
                },
                if matches!(s.kind, Kind::DeliverSqlite | Kind::DeliverSqliteSerialized) {
                    k.busy_retries.to_string()
                } else {
                    "-".to_string()
                },
            );
            if mail {
                if k.commits != s.ops || k.rejected > 0 {
                    println!(
                        "  note: the engine counted {} commits ({} rejected) for {} timed deliveries",
                        k.commits, k.rejected, s.ops
                    );
                }
                if k.batches > 0 {
                    println!(
                        "  {:.1} deliveries/batch, {:.0} us/batch, {} map resizes",
                        k.commits as f64 / k.batches as f64,
                        s.elapsed.as_secs_f64() * 1e6 / k.batches as f64,
                        k.map_resizes
                    );
                }
            } else if s.kind == Kind::DeliverSqliteGroupCommit && k.transactions > 0 {
                println!(
                    "  {:.1} deliveries/transaction, {:.0} us/transaction",
                    k.commits as f64 / k.transactions as f64,
                    s.elapsed.as_secs_f64() * 1e6 / k.transactions as f64
                );
            }
        }
        println!(
            "batches: mailstore write batches, SQLite transactions committed; fsyncs: mailstore log fdatasyncs that \
             made batches durable (generation rolls and checkpoints sync too, not counted), SQLite one WAL fsync per \
             committed transaction (synchronous=FULL; checkpoint syncs not counted either); per fsync: deliveries per \
             such sync (SQLite: per transaction); LMDB cmt: LMDB write transactions; ckpts: checkpoints; gens: log \
             generations started; dev B/op, dev B/B, ops/flush: bytes written to the block device per delivery and per \
             delivered byte (the {MESSAGE_SIZE}-byte message), and deliveries per device cache flush, from \
             /sys/class/block/DEV/stat (every process's I/O, the file system journal included); busy rtr: SQLite \
             transactions retried after SQLITE_BUSY"
        );
    }

    let pct = |kind: Kind| latencies.iter().find(|(k, _)| *k == kind).and_then(|(_, l)| Percentiles::of(l));
    const NEWEST_KINDS: [Kind; 4] =
        [Kind::NewestMailstore, Kind::NewestSqlite, Kind::NewestOwnedMailstore, Kind::NewestOwnedSqlite];
    if NEWEST_KINDS.into_iter().any(|kind| find(kind).is_some() || pct(kind).is_some()) {
        println!();
        println!(
            "{:<26} {:>7} {:>9} {:>13} {:>13} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "newest 50 (1 thread)",
            "samples",
            "queries",
            "crit. median",
            "crit. mean",
            "p50",
            "p90",
            "p99",
            "max",
            "mean"
        );
        for kind in NEWEST_KINDS {
            let s = find(kind);
            let p = pct(kind);
            if s.is_none() && p.is_none() {
                continue;
            }
            let name = match kind {
                Kind::NewestMailstore => "newest50/mailstore",
                Kind::NewestSqlite => "newest50/sqlite",
                Kind::NewestOwnedMailstore => "newest50_owned/mailstore",
                _ => "newest50_owned/sqlite",
            };
            let crit = |f: &dyn Fn(&Summary<Kind, Counts>) -> f64| {
                s.map_or_else(|| "-".to_string(), |s| format!("{:.1} us", f(s) / 1e3))
            };
            let lat = |f: &dyn Fn(&Percentiles) -> Duration| {
                p.as_ref().map_or_else(|| "-".to_string(), |p| format!("{:.1}", us(f(p))))
            };
            println!(
                "{:<26} {:>7} {:>9} {:>13} {:>13} {:>8} {:>8} {:>8} {:>8} {:>8}",
                name,
                s.map_or(0, |s| s.samples),
                p.as_ref().map_or(0, |p| p.count),
                crit(&|s| s.median_ns),
                crit(&|s| s.mean_ns()),
                lat(&|p| p.p50),
                lat(&|p| p.p90),
                lat(&|p| p.p99),
                lat(&|p| p.max),
                lat(&|p| p.mean),
            );
        }
        println!(
            "newest50: rows read in place (mailstore ItemSummary views, SQLite Row::get_ref), the same fields on both \
             sides; newest50_owned: rows copied into owned values (mailstore whole ItemInfos); crit.: criterion's \
             samples (median / mean time per query); p50..mean: {} queries per store and variant timed one by one with \
             Instant, in microseconds, after {LATENCY_WARM_UP} unrecorded ones, the four alternating every \
             {LATENCY_BLOCK}",
            cfg.latency_queries
        );
    }

    // The issue's targets.
    println!();
    let mail = find(Kind::DeliverMailstore);
    let group_commit = find(Kind::DeliverSqliteGroupCommit);
    if summaries.iter().any(|s| s.samples < cfg.sample_size) || cfg.test {
        println!("targets not evaluated: too few samples (criterion --test, or a partial run)");
        return;
    }
    if cfg.quick {
        println!("(smoke run: the verdicts below are not meaningful)");
    }
    for (candidate, label) in
        [(mail, "default options"), (find(Kind::DeliverMailstoreBigGenerations), "16 MiB generations, not the target")]
    {
        let (Some(m), Some(q)) = (candidate, group_commit) else { continue };
        let times = m.rate() / q.rate();
        println!(
            "{}deliveries >= 2x SQLite with group commit [mailstore {label}]: {:.0}/s vs {:.0}/s = {times:.2}x ({})",
            if m.kind == Kind::DeliverMailstore { "target " } else { "  extra: " },
            m.rate(),
            q.rate(),
            met(times >= 2.0)
        );
    }
    if let Some(m) = mail {
        let per_sync = m.counts.commits as f64 / m.counts.log_syncs.max(1) as f64;
        println!("target deliveries per log fsync >= 10: {per_sync:.1} ({})", met(per_sync >= 10.0));
    }
    if let Some(m) = mail {
        match dev_per_byte(m) {
            Some(ratio) => println!(
                "target device bytes written per delivered byte <= 1.5 [mailstore default options]: {:.0} bytes per \
                 {MESSAGE_SIZE}-byte delivery = {ratio:.2} ({}; whole-device counters: meaningful on an idle \
                 machine only)",
                dev_per_op(m).unwrap_or(0.0),
                met(ratio <= 1.5)
            ),
            None => println!("target device bytes written per delivered byte: not evaluated (no device counters)"),
        }
    }
    // For context, no target: the other deliveries' write amplification, and the older baselines.
    let others: Vec<String> = summaries
        .iter()
        .filter(|s| s.kind.is_delivery() && s.kind != Kind::DeliverMailstore)
        .filter_map(|s| Some(format!("{} {:.2}", s.name.trim_start_matches("deliver_10k/"), dev_per_byte(s)?)))
        .collect();
    if !others.is_empty() {
        println!("  extra: device bytes per delivered byte: {}", others.join(", "));
    }
    if let Some(m) = mail {
        let others: Vec<String> = [Kind::DeliverSqlite, Kind::DeliverSqliteSerialized]
            .into_iter()
            .filter_map(find)
            .map(|q| {
                format!("{} {:.0}/s ({:.2}x)", q.name.trim_start_matches("deliver_10k/"), q.rate(), m.rate() / q.rate())
            })
            .collect();
        if !others.is_empty() {
            println!("  extra: mailstore against the weaker SQLite baselines (no target): {}", others.join(", "));
        }
    }
    if let (Some(pm), Some(ps)) = (pct(Kind::NewestMailstore), pct(Kind::NewestSqlite)) {
        println!(
            "target newest-50 p99 <= 200 us: {:.1} us ({})",
            us(pm.p99),
            met(pm.p99 <= Duration::from_micros(200))
        );
        let p99 = ps.p99.as_secs_f64() / pm.p99.as_secs_f64();
        let p50 = ps.p50.as_secs_f64() / pm.p50.as_secs_f64();
        println!(
            "target newest-50 >= 3x faster than SQLite: p99 {:.1} vs {:.1} us = {p99:.1}x ({}), p50 {:.1} vs {:.1} us \
             = {p50:.1}x ({})",
            us(pm.p99),
            us(ps.p99),
            met(p99 >= 3.0),
            us(pm.p50),
            us(ps.p50),
            met(p50 >= 3.0)
        );
        if let (Some(cm), Some(cs)) = (find(Kind::NewestMailstore), find(Kind::NewestSqlite)) {
            println!("  (criterion medians: {:.1} vs {:.1} us = {:.1}x)", cm.median_ns / 1e3, cs.median_ns / 1e3, {
                cs.median_ns / cm.median_ns
            });
        }
    }
    if let (Some(pm), Some(ps)) = (pct(Kind::NewestOwnedMailstore), pct(Kind::NewestOwnedSqlite)) {
        println!(
            "  extra: newest-50 with owned rows (not the target): p99 {:.1} vs {:.1} us = {:.1}x, p50 {:.1} vs {:.1} \
             us = {:.1}x",
            us(pm.p99),
            us(ps.p99),
            ps.p99.as_secs_f64() / pm.p99.as_secs_f64(),
            us(pm.p50),
            us(ps.p50),
            ps.p50.as_secs_f64() / pm.p50.as_secs_f64()
        );
    }
}

fn main() {
    let cfg = Config::from_env();
    let root = bench_root_with_device();
    if cfg.quick {
        println!("MAILSTORE_BENCH_QUICK is set: short smoke run with {}-message folders", cfg.folder_messages);
    } else if cfg.test {
        println!("--test: every routine once, {}-message folders", cfg.folder_messages);
    }
    let mut c = Criterion::default()
        .sample_size(cfg.sample_size)
        .warm_up_time(cfg.warm_up)
        .measurement_time(cfg.measurement)
        .configure_from_args();
    let start = Instant::now();
    bench_deliveries(&mut c, &cfg, &root);
    bench_newest(&mut c, &cfg, &root);
    c.final_summary();
    print_summary(&cfg);
    println!("\nbench wall time: {:.0} s", start.elapsed().as_secs_f64());
}
