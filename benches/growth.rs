//! Cost growth with database size (issue 13): "delivery rate and newest-50 latency at 10 million messages in one
//! database within 20 % of the figures at 10 thousand; resident memory flat".
//!
//! Why: every other bench measures a database of at most 100,000 messages. A store whose per-delivery cost or
//! listing latency grew with the number of messages it holds (a B-tree getting deeper, a log or segment directory
//! walked per commit, a checkpoint that rewrites more each time, a cache that never stops growing) would pass
//! them and still fail a real mailbox server after a few months. This bench grows ONE database and measures it
//! as it grows.
//!
//! What it does: it mounts one mailbox database (`Options::default()`, `Durability::Full`), creates one user
//! mailbox (its size quotas lifted: the default one refuses deliveries past 2.3 GB), and fills its Inbox with
//! 10 KiB RFC 5322 messages (the same messages as `benches/mailbox.rs`: unique `Subject` and `Message-ID`,
//! 10,240 bytes) from 32 deliverer threads, each delivery one `MailOp::append` + `Engine::commit`. At each point
//! of the curve — 10 thousand, 100 thousand, 1 million and 10 million messages, up to
//! `MAILSTORE_GROWTH_MESSAGES` — it measures the database as it is at that size:
//!
//! * **delivery rate**: durable deliveries per second of the same 32-thread load over a window of
//!   `MAILSTORE_GROWTH_WINDOW_SECS` (default 5 s); the window's deliveries stay in the database, so a point's
//!   rate is over the messages from the point to the point plus the window's (the `+window` column; at the 10k
//!   point that is most of the messages);
//! * **newest-50 latency**: p50 / p99 / max of 2,000 queries (after 200 untimed ones) of
//!   `MailStore::newest_summaries(txn, &guid, inbox, 50)`, one thread, load stopped, every field of every row
//!   read in place as `benches/mailbox.rs`'s `use_summary` reads it, `Instant` around each query;
//! * **memory**: the process's `VmRSS`, `VmHWM` (peak) and `RssAnon` (heap and stacks: `VmRSS` without the file
//!   pages of LMDB's memory map, which it counts as they are touched) from `/proc/self/status`, after the queries;
//! * **files**: the size of the LMDB file (`state/data.mdb`) and of `logs/` + `segments/` (where the message
//!   bodies are);
//! * **device bytes written per delivered byte** during the window: from `/sys/class/block/DEV/stat` of the
//!   bench directory's device, read after a `sync` before the window and after a `sync` after it (so the
//!   window's own write-back is counted, and the filling's is not). Whole-device counters: meaningful only on an
//!   otherwise idle machine (the `load` column is the 1-minute load average when the point was measured).
//!
//! Between points it fills as fast as it can (the same load, not timed; progress every 30 s). It prints one row
//! per point as it is measured, the table again at the end, the ratios of each point to the first (10k) one, and
//! whether "within 20 %" (rate at least 80 % of the 10k rate, p99 at most 120 % of the 10k p99) and "memory
//! flat" (`VmRSS` and `RssAnon` at most 120 % of the 10k point's) hold. Nothing fails on a figure.
//!
//! Space: a 10 KiB delivery takes about 10.5 KiB on disk (the body in the log plus the state), so 1M messages
//! need ~10.5 GB and 10M ~105 GB, plus the windows' deliveries. Before it starts, the bench reads the free space
//! of the bench directory's file system (`df`) and refuses a curve that would need more than 90 % of it: it says
//! so and stops at the largest point that fits (and refuses to start if not even the first fits). Before filling
//! to each further point it checks again with the bytes per message measured so far.
//!
//! The files go where `benches/common` says (`MAILSTORE_BENCH_DIR`, else the system temporary directory unless
//! it is a memory file system) in a temporary directory (`growth-*`) removed at the end (a run killed by a signal
//! leaves it behind). `MAILSTORE_BENCH_QUICK=1`, criterion style `--test`, or no `--bench` argument (how
//! `cargo test --benches` runs a `harness = false` bench: `cargo bench` passes `--bench`) makes a smoke run:
//! 10,000 messages and a 1 s window, a few seconds.
//!
//! ```text
//! cargo bench --bench growth                                     # 10k and 100k points, a couple of minutes
//! MAILSTORE_GROWTH_MESSAGES=1000000 cargo bench --bench growth   # up to 1M: ~10.5 GB, several minutes
//! MAILSTORE_GROWTH_MESSAGES=10000000 cargo bench --bench growth  # the issue's full curve: ~105 GB
//! MAILSTORE_GROWTH_WINDOW_SECS=10 cargo bench --bench growth     # a longer measurement window
//! MAILSTORE_BENCH_QUICK=1 cargo bench --bench growth             # smoke run
//! ```

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::hint::black_box;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::{MESSAGE_SIZE, bench_root, message, mount_of, settle};
use mailstore::internals::engine::{LOGS_DIR, SEGMENTS_DIR, STATE_DIR};
use mailstore::model::{Flags, FolderId, FolderRole, ItemSummary, MailEngine, MailOp, MailOutput, MailboxKind, Quota};
use mailstore::{Durability, Engine, EngineStats, Guid, Options};

/// Threads delivering at once.
const DELIVERERS: usize = 32;
/// Rows per newest-N query.
const NEWEST: usize = 50;
/// Newest-N queries timed at each point.
const QUERIES: usize = 2_000;
/// Untimed queries before them.
const QUERY_WARM_UP: usize = 200;
/// The points of the issue's curve.
const POINTS: [u64; 4] = [10_000, 100_000, 1_000_000, 10_000_000];
/// Messages of a plain run (`MAILSTORE_GROWTH_MESSAGES` unset).
const DEFAULT_MESSAGES: u64 = 100_000;
/// Measurement window of a plain run (`MAILSTORE_GROWTH_WINDOW_SECS` unset).
const DEFAULT_WINDOW: Duration = Duration::from_secs(5);
/// Messages and window of a smoke run.
const QUICK_MESSAGES: u64 = 10_000;
const QUICK_WINDOW: Duration = Duration::from_secs(1);
/// Bytes on disk per 10 KiB delivery assumed before anything is measured (10.5 KiB).
const DISK_PER_MESSAGE: u64 = 10_752;
/// The share of the free space a run may take.
const SPACE_SHARE: f64 = 0.9;
/// Deliveries per second assumed for the windows in the space check made before anything is measured.
const ASSUMED_RATE: f64 = 20_000.0;
/// "Within 20 %".
const TOLERANCE: f64 = 0.2;
/// Seconds between progress lines while filling.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

struct Config {
    /// Why the run is a smoke run, if it is.
    smoke: Option<&'static str>,
    messages: u64,
    window: Duration,
}

impl Config {
    fn from_env() -> Self {
        let args: Vec<String> = env::args().skip(1).collect();
        let quick = env::var("MAILSTORE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        // `cargo bench` passes `--bench`; `cargo test --benches` runs a `harness = false` bench with no arguments
        // (or a test name filter), and criterion's test mode is `--test`.
        let smoke = if quick {
            Some("MAILSTORE_BENCH_QUICK is set")
        } else if args.iter().any(|a| a == "--test") {
            Some("--test")
        } else if !args.iter().any(|a| a == "--bench") {
            Some("no --bench argument (cargo test --benches)")
        } else {
            None
        };
        if smoke.is_some() {
            return Config { smoke, messages: QUICK_MESSAGES, window: QUICK_WINDOW };
        }
        let messages =
            match env::var("MAILSTORE_GROWTH_MESSAGES") {
                Ok(v) => v.replace('_', "").parse::<u64>().ok().filter(|&n| n > 0).unwrap_or_else(|| {
                    panic!("MAILSTORE_GROWTH_MESSAGES={v:?}: expected a positive number of messages")
                }),
                Err(_) => DEFAULT_MESSAGES,
            };
        let window = match env::var("MAILSTORE_GROWTH_WINDOW_SECS") {
            Ok(v) => {
                v.parse::<f64>().ok().filter(|s| s.is_finite() && *s > 0.0).map(Duration::from_secs_f64).unwrap_or_else(
                    || panic!("MAILSTORE_GROWTH_WINDOW_SECS={v:?}: expected a positive number of seconds"),
                )
            }
            Err(_) => DEFAULT_WINDOW,
        };
        Config { smoke: None, messages, window }
    }

    /// The curve's points up to `messages`, and `messages` itself if it lies past the last of them.
    fn points(&self) -> Vec<u64> {
        let mut points: Vec<u64> = POINTS.iter().copied().filter(|&p| p <= self.messages).collect();
        if points.last() != Some(&self.messages) {
            points.push(self.messages);
        }
        points
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The machine: free space, device counters, memory, load.

/// Bytes available to this user on the file system holding `path`, from `df -Pk` (POSIX output, 1 KiB blocks).
fn free_bytes(path: &Path) -> Option<u64> {
    let out = Command::new("df").arg("-Pk").arg(path).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // `Filesystem 1024-blocks Used Available Capacity Mounted-on`: the source and the mount point may hold
    // spaces, so find Capacity (the field ending in '%'); Available is the one before it.
    let line = text.lines().nth(1)?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let capacity = fields.iter().position(|f| f.ends_with('%'))?;
    let available: u64 = fields.get(capacity.checked_sub(1)?)?.parse().ok()?;
    Some(available * 1024)
}

/// The `stat` file of the block device holding `root`, if there is one.
fn device_stat_file(root: &Path) -> Option<PathBuf> {
    let (_, _, source) = mount_of(root)?;
    let name = Path::new(&source).file_name()?.to_owned();
    let path = Path::new("/sys/class/block").join(name).join("stat");
    path.exists().then_some(path)
}

/// Bytes written to the device since boot (field 7 of `/sys/class/block/DEV/stat`: 512-byte sectors). These
/// count every process's writes, the file system's journal included.
fn device_bytes_written(stat: Option<&Path>) -> Option<u64> {
    let text = fs::read_to_string(stat?).ok()?;
    let sectors: u64 = text.split_whitespace().nth(6)?.parse().ok()?;
    Some(sectors * 512)
}

/// Resident memory of this process from `/proc/self/status`, in bytes.
#[derive(Clone, Copy, Default)]
struct Memory {
    rss: u64,
    hwm: u64,
    anon: u64,
}

fn memory() -> Memory {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    Memory { rss: field("VmRSS"), hwm: field("VmHWM"), anon: field("RssAnon") }
}

/// The 1-minute load average.
fn load1() -> f64 {
    fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(f64::NAN)
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

fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

// ---------------------------------------------------------------------------------------------------------------
// The database and its load.

/// The one mailbox the bench fills, and the next message number.
struct Mailbox {
    db: MailEngine,
    guid: Guid,
    inbox: FolderId,
    next: AtomicU64,
    delivered: AtomicU64,
}

fn create(dir: &Path) -> Mailbox {
    let db: MailEngine = Engine::mount(dir, Options::default().durability(Durability::Full)).expect("mount");
    let op = MailOp::create_mailbox("alice@example.com", "Alice Example", MailboxKind::User);
    let MailOp::CreateMailbox { guid, .. } = op else { unreachable!() };
    db.commit(op).expect("create mailbox");
    // A user mailbox refuses deliveries above its default prohibit-send-receive quota (2.3 GB: ~220,000 of these
    // messages); the curve goes far past that, so its size limits are lifted.
    let unlimited =
        Quota { issue_warning: u64::MAX, prohibit_send: u64::MAX, prohibit_send_receive: u64::MAX, ..Quota::default() };
    db.commit(MailOp::SetQuota { mailbox: guid, quota: Some(unlimited) }).expect("lift the quota");
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &guid, FolderRole::Inbox)).expect("read").expect("an Inbox").id;
    Mailbox { db, guid, inbox, next: AtomicU64::new(0), delivered: AtomicU64::new(0) }
}

/// One durable delivery of message `n`.
fn deliver(mb: &Mailbox, n: u64) {
    match mb.db.commit(MailOp::append(mb.guid, mb.inbox, message(n), Flags::empty(), vec![])).expect("deliver").output {
        MailOutput::Appended { .. } => {
            mb.delivered.fetch_add(1, Ordering::Relaxed);
        }
        other => panic!("append returned {other:?}"),
    }
}

/// How long a load runs.
#[derive(Clone, Copy)]
enum Until {
    /// Until the mailbox holds this many messages (filling).
    Total(u64),
    /// For this long (a measurement window); the deliveries under way at its end are completed and counted.
    Elapsed(Duration),
}

/// Runs [`DELIVERERS`] threads delivering into `mb`, released together, until `until`; returns the deliveries
/// made and the wall time from the release to the last delivery's acknowledgement.
fn load(mb: &Mailbox, until: Until) -> (u64, Duration) {
    let barrier = Barrier::new(DELIVERERS + 1);
    let stop = AtomicBool::new(false);
    let before = mb.delivered.load(Ordering::Relaxed);
    let elapsed = thread::scope(|s| {
        let handles: Vec<_> = (0..DELIVERERS)
            .map(|_| {
                let (barrier, stop) = (&barrier, &stop);
                s.spawn(move || {
                    barrier.wait();
                    loop {
                        let n = match until {
                            Until::Total(total) => {
                                match mb.next.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                    (n < total).then_some(n + 1)
                                }) {
                                    Ok(n) => n,
                                    Err(_) => break,
                                }
                            }
                            Until::Elapsed(_) => {
                                if stop.load(Ordering::Relaxed) {
                                    break;
                                }
                                mb.next.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                        deliver(mb, n);
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        match until {
            Until::Elapsed(window) => {
                thread::sleep(window);
                stop.store(true, Ordering::Relaxed);
            }
            Until::Total(total) => {
                let mut last = Instant::now();
                while !handles.iter().all(|h| h.is_finished()) {
                    thread::sleep(Duration::from_millis(100));
                    if last.elapsed() >= PROGRESS_EVERY {
                        last = Instant::now();
                        let done = mb.delivered.load(Ordering::Relaxed);
                        let rate = (done - before) as f64 / start.elapsed().as_secs_f64();
                        println!(
                            "  filling: {done} of {total} messages ({rate:.0}/s since {before}, ~{:.0} s to go, \
                             load {:.2})",
                            total.saturating_sub(done) as f64 / rate,
                            load1()
                        );
                        let _ = std::io::stdout().flush();
                    }
                }
            }
        }
        for h in handles {
            h.join().expect("deliverer panicked");
        }
        start.elapsed()
    });
    (mb.delivered.load(Ordering::Relaxed) - before, elapsed)
}

/// What a listing reads of each row, as in benches/mailbox.rs.
fn use_summary(s: &ItemSummary<'_>) -> u64 {
    black_box((s.id(), s.uid(), s.modseq(), s.flags(), s.received(), s.subject(), s.date(), s.message_id(), s.size()));
    for a in s.from().iter().chain(s.to().iter()) {
        black_box(a);
    }
    1
}

/// The newest [`NEWEST`] messages of the Inbox, in one snapshot, every row read in place; returns the rows read.
fn newest(mb: &Mailbox) -> u64 {
    mb.db
        .read(|s, txn| {
            let rows = s.newest_summaries(txn, &mb.guid, mb.inbox, NEWEST)?;
            Ok(rows.iter().map(use_summary).sum())
        })
        .expect("read")
}

/// p50, p99 and max of `latencies` (nearest rank).
fn percentiles(latencies: &mut [Duration]) -> (Duration, Duration, Duration) {
    latencies.sort_unstable();
    let rank = |p: f64| latencies[((p / 100.0 * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1];
    (rank(50.0), rank(99.0), latencies[latencies.len() - 1])
}

// ---------------------------------------------------------------------------------------------------------------
// One point of the curve.

struct Point {
    /// Messages in the database when the window started.
    messages: u64,
    /// Messages after the window.
    after_window: u64,
    /// Time spent filling up to this point from the previous one, and its messages.
    fill: (u64, Duration),
    rate: f64,
    window: (u64, Duration),
    p50: Duration,
    p99: Duration,
    max: Duration,
    memory: Memory,
    lmdb: u64,
    logs: u64,
    total_files: u64,
    /// Device bytes written during the window and its write-back, per delivered message byte.
    device_per_byte: Option<f64>,
    /// Commits per log fdatasync in the window.
    per_sync: f64,
    /// Checkpoints and map resizes in the window.
    checkpoints: u64,
    map_resizes: u64,
    load: f64,
}

fn measure(mb: &Mailbox, dir: &Path, stat: Option<&Path>, window: Duration, fill: (u64, Duration)) -> Point {
    let messages = mb.delivered.load(Ordering::Relaxed);
    let load_avg = load1();
    // The window: after a sync, so that it does not pay for the filling's write-back; the device counters are
    // read again after a sync at its end, so that they hold its own write-back.
    settle();
    let stats_before: EngineStats = mb.db.stats();
    let device_before = device_bytes_written(stat);
    let (delivered, elapsed) = load(mb, Until::Elapsed(window));
    let stats_after = mb.db.stats();
    settle();
    let device_after = device_bytes_written(stat);
    let device_per_byte = match (device_before, device_after) {
        (Some(b), Some(a)) if delivered > 0 => Some((a - b) as f64 / (delivered * MESSAGE_SIZE as u64) as f64),
        _ => None,
    };
    let syncs = stats_after.log_syncs - stats_before.log_syncs;

    // The queries, load stopped.
    for _ in 0..QUERY_WARM_UP {
        black_box(newest(mb));
    }
    let mut latencies = Vec::with_capacity(QUERIES);
    for _ in 0..QUERIES {
        let start = Instant::now();
        let rows = newest(mb);
        latencies.push(start.elapsed());
        assert_eq!(rows, NEWEST as u64, "the newest-{NEWEST} listing returned {rows} rows");
    }
    let (p50, p99, max) = percentiles(&mut latencies);

    Point {
        messages,
        after_window: messages + delivered,
        fill,
        rate: delivered as f64 / elapsed.as_secs_f64(),
        window: (delivered, elapsed),
        p50,
        p99,
        max,
        memory: memory(),
        lmdb: fs::metadata(dir.join(STATE_DIR).join("data.mdb")).map_or(0, |m| m.len()),
        logs: dir_size(&dir.join(LOGS_DIR)) + dir_size(&dir.join(SEGMENTS_DIR)),
        total_files: dir_size(dir),
        device_per_byte,
        per_sync: if syncs == 0 {
            f64::NAN
        } else {
            (stats_after.commits - stats_before.commits) as f64 / syncs as f64
        },
        checkpoints: stats_after.checkpoints - stats_before.checkpoints,
        map_resizes: stats_after.map_resizes - stats_before.map_resizes,
        load: load_avg,
    }
}

const HEADER: &str = "  messages   +window  deliveries/s  p50 µs  p99 µs  max µs  VmRSS MiB  VmHWM MiB  RssAnon MiB  \
                      LMDB MiB  logs+segs MiB  dev B/B  commits/fsync  load";

fn row(p: &Point) -> String {
    format!(
        "{:>10}  {:>8}  {:>12.0}  {:>6.1}  {:>6.1}  {:>6.0}  {:>9.1}  {:>9.1}  {:>11.1}  {:>8.0}  {:>13.0}  \
         {:>7}  {:>13.1}  {:>4.2}",
        p.messages,
        p.after_window,
        p.rate,
        us(p.p50),
        us(p.p99),
        us(p.max),
        mib(p.memory.rss),
        mib(p.memory.hwm),
        mib(p.memory.anon),
        mib(p.lmdb),
        mib(p.logs),
        p.device_per_byte.map_or("n/a".to_string(), |r| format!("{r:.2}")),
        p.per_sync,
        p.load,
    )
}

fn note(p: &Point) -> String {
    let mut s = String::new();
    let (filled, fill_time) = p.fill;
    let _ = write!(
        s,
        "    at {}: filled {filled} messages in {:.1} s ({:.0}/s); window {} deliveries in {:.2} s, {} checkpoints, \
         {} map resizes; {:.0} MiB of files ({:.2} KiB per message)",
        p.messages,
        fill_time.as_secs_f64(),
        filled as f64 / fill_time.as_secs_f64(),
        p.window.0,
        p.window.1.as_secs_f64(),
        p.checkpoints,
        p.map_resizes,
        mib(p.total_files),
        p.total_files as f64 / p.after_window as f64 / 1024.0,
    );
    s
}

/// Bytes a curve up to `point` (the `index`-th point, from 0) needs before anything is measured.
fn projected_need(point: u64, index: usize, window: Duration) -> u64 {
    let windows = (index + 1) as f64 * window.as_secs_f64() * ASSUMED_RATE;
    (point as f64 + windows) as u64 * DISK_PER_MESSAGE
}

fn main() {
    if env::args().any(|a| a == "--list") {
        return; // `cargo test --benches -- --list`
    }
    let cfg = Config::from_env();
    let requested = cfg.points();
    if let Some(why) = cfg.smoke {
        println!("growth: smoke run ({why}): {QUICK_MESSAGES} messages, {} s window", QUICK_WINDOW.as_secs());
    }
    let root = bench_root();
    let stat = device_stat_file(&root);
    match &stat {
        Some(path) => println!("device counters: {}", path.display()),
        None => println!("device counters: none found for the bench dir's file system"),
    }

    // Space: refuse a curve that needs more than 90 % of the free space, stopping at the largest point that fits.
    let free = free_bytes(&root);
    let points: Vec<u64> = match free {
        Some(free) => {
            let budget = (free as f64 * SPACE_SHARE) as u64;
            println!(
                "free space: {:.1} GB on the bench dir's file system; a run may use {:.0} % of it ({:.1} GB)",
                gb(free),
                SPACE_SHARE * 100.0,
                gb(budget)
            );
            let fits: Vec<u64> = requested
                .iter()
                .enumerate()
                .take_while(|&(i, &p)| projected_need(p, i, cfg.window) <= budget)
                .map(|(_, &p)| p)
                .collect();
            let last = *requested.last().expect("at least one point");
            let need = projected_need(last, requested.len() - 1, cfg.window);
            if fits.is_empty() {
                eprintln!(
                    "growth: refusing to start: even the first point ({} messages) needs ~{:.1} GB ({:.1} KiB per \
                     message plus the windows' deliveries), more than {:.0} % of the {:.1} GB free",
                    requested[0],
                    gb(projected_need(requested[0], 0, cfg.window)),
                    DISK_PER_MESSAGE as f64 / 1024.0,
                    SPACE_SHARE * 100.0,
                    gb(free)
                );
                std::process::exit(2);
            }
            if fits.len() < requested.len() {
                println!(
                    "NOT ENOUGH SPACE for the curve up to {last} messages: it needs ~{:.1} GB ({:.1} KiB per message \
                     plus the windows' deliveries), more than {:.0} % of the {:.1} GB free. Stopping at the largest \
                     point that fits: {} messages (~{:.1} GB).",
                    gb(need),
                    DISK_PER_MESSAGE as f64 / 1024.0,
                    SPACE_SHARE * 100.0,
                    gb(free),
                    fits.last().unwrap(),
                    gb(projected_need(*fits.last().unwrap(), fits.len() - 1, cfg.window))
                );
            } else {
                println!("the curve up to {last} messages needs ~{:.1} GB: it fits", gb(need));
            }
            fits
        }
        None => {
            println!("free space: unknown (`df` gave no figure); the run goes ahead unchecked");
            requested.clone()
        }
    };

    let dir = tempfile::Builder::new().prefix("growth-").tempdir_in(&root).expect("bench dir");
    println!(
        "growth: one database ({}), Options::default() with Durability::Full, {DELIVERERS} deliverers of \
         {MESSAGE_SIZE}-byte messages into one Inbox; points {points:?}; {:.1} s windows; newest-{NEWEST} over \
         {QUERIES} queries; load {:.2} at the start (the device figures are whole-device: the machine must be idle)",
        dir.path().display(),
        cfg.window.as_secs_f64(),
        load1()
    );
    let mb = create(dir.path());
    let start = Instant::now();
    let mut measured: Vec<Point> = Vec::new();
    let mut stopped_for_space = None;
    println!("{HEADER}");
    for &point in &points {
        let have = mb.delivered.load(Ordering::Relaxed);
        // Check again, with what this database has taken per message so far.
        if let (Some(last), Some(free)) = (measured.last(), free_bytes(dir.path())) {
            let per_message = last.total_files as f64 / last.after_window as f64;
            let more = point.saturating_sub(have) as f64 + last.rate * cfg.window.as_secs_f64();
            let need = (more * per_message) as u64;
            if need as f64 > free as f64 * SPACE_SHARE {
                println!(
                    "NOT ENOUGH SPACE to go on to {point} messages: ~{:.1} GB more at {:.2} KiB per message, more than \
                     {:.0} % of the {:.1} GB free now. Stopping at {} messages.",
                    gb(need),
                    per_message / 1024.0,
                    SPACE_SHARE * 100.0,
                    gb(free),
                    last.messages
                );
                stopped_for_space = Some(point);
                break;
            }
        }
        let fill = if point > have { load(&mb, Until::Total(point)) } else { (0, Duration::ZERO) };
        let p = measure(&mb, dir.path(), stat.as_deref(), cfg.window, fill);
        println!("{}", row(&p));
        println!("{}", note(&p));
        let _ = std::io::stdout().flush();
        measured.push(p);
    }
    let elapsed = start.elapsed();
    let stats = mb.db.stats();
    let dismount = Instant::now();
    mb.db.dismount().expect("dismount");
    let dismount = dismount.elapsed();

    // The report.
    println!();
    println!(
        "growth summary{}: {} messages delivered in {:.0} s ({} checkpoints, {} generations created, {} map resizes \
         in all; dismount {:.2} s); load {:.2} at the end",
        if cfg.smoke.is_some() { " [smoke run, figures not meaningful]" } else { "" },
        mb.delivered.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        stats.checkpoints,
        stats.generations_created,
        stats.map_resizes,
        dismount.as_secs_f64(),
        load1()
    );
    println!("{HEADER}");
    for p in &measured {
        println!("{}", row(p));
    }
    let Some(base) = measured.first() else { return };
    let busy: Vec<&Point> = measured.iter().filter(|p| p.load > 1.0).collect();
    if !busy.is_empty() {
        println!(
            "warning: the 1-minute load was above 1 when {} of the {} points were measured (up to {:.2}): other \
             processes shared the CPUs and the device, so the rates and the device figures are not clean",
            busy.len(),
            measured.len(),
            busy.iter().map(|p| p.load).fold(0.0, f64::max)
        );
    }
    if measured.len() < 2 {
        println!("one point only: no ratios, no verdict");
        println!("removing {} ({:.1} GB)", dir.path().display(), gb(base.total_files));
        return;
    }
    println!("ratios to the {}-message point:", base.messages);
    println!("  messages  rate  p50   p99   VmRSS  VmHWM  RssAnon  rate ≥ 80 %  p99 ≤ 120 %");
    let ok = |b: bool| if b { "yes" } else { "NO" };
    for p in &measured[1..] {
        let rate = p.rate / base.rate;
        let p99 = p.p99.as_secs_f64() / base.p99.as_secs_f64();
        println!(
            "  {:>8}  {rate:>4.2}  {:>4.2}  {p99:>4.2}  {:>5.2}  {:>5.2}  {:>7.2}  {:>11}  {:>11}",
            p.messages,
            p.p50.as_secs_f64() / base.p50.as_secs_f64(),
            p.memory.rss as f64 / base.memory.rss as f64,
            p.memory.hwm as f64 / base.memory.hwm as f64,
            p.memory.anon as f64 / base.memory.anon as f64,
            ok(rate >= 1.0 - TOLERANCE),
            ok(p99 <= 1.0 + TOLERANCE),
        );
    }
    let last = measured.last().unwrap();
    let rate_ok = last.rate >= (1.0 - TOLERANCE) * base.rate;
    let p99_ok = last.p99.as_secs_f64() <= (1.0 + TOLERANCE) * base.p99.as_secs_f64();
    let rss_ok = last.memory.rss as f64 <= (1.0 + TOLERANCE) * base.memory.rss as f64;
    let anon_ok = last.memory.anon as f64 <= (1.0 + TOLERANCE) * base.memory.anon as f64;
    let verdict = |b: bool| if b { "holds" } else { "DOES NOT HOLD" };
    let full = *POINTS.last().unwrap();
    let scope = if last.messages >= full {
        format!("issue 13 at {} messages", last.messages)
    } else {
        let why = match stopped_for_space {
            Some(p) => format!("stopped for space before {p}"),
            None if points.len() < requested.len() => "stopped at the largest point the free space allows".to_string(),
            None => "MAILSTORE_GROWTH_MESSAGES=10000000 runs the full curve".to_string(),
        };
        format!("issue 13 NOT evaluated at {full} messages ({why}); at {} messages", last.messages)
    };
    println!(
        "{scope}: rate within 20 % of the {}-message point: {} ({:.0}/s against {:.0}/s); newest-{NEWEST} p99 within \
         20 %: {} ({:.1} µs against {:.1} µs); memory flat (≤ 120 %): VmRSS {} ({:.1} against {:.1} MiB), RssAnon {} \
         ({:.1} against {:.1} MiB)",
        base.messages,
        verdict(rate_ok),
        last.rate,
        base.rate,
        verdict(p99_ok),
        us(last.p99),
        us(base.p99),
        verdict(rss_ok),
        mib(last.memory.rss),
        mib(base.memory.rss),
        verdict(anon_ok),
        mib(last.memory.anon),
        mib(base.memory.anon),
    );
    println!("removing {} ({:.1} GB)", dir.path().display(), gb(last.total_files));
}
