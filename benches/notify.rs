//! What change notification costs the commit path (ARCHITECTURE.md §4.0): deliveries with no subscription, with
//! 100 subscriptions to other mailboxes (looked up, never woken), and with 100 subscriptions woken by every batch
//! (database-wide, each drained by a thread of its own), interleaved in one process so that the machine's load
//! falls on all alike.
//!
//! `MAILSTORE_NOTIFY_ROUNDS` rounds (default 5) of `MAILSTORE_NOTIFY_COMMITS` deliveries (default 4,000) from 16
//! threads per mode, `Durability::Relaxed` (so the commit path, not the disk, is measured). Printed per mode: the
//! median rate and its ratio to the rate without subscriptions.
//!
//! ```text
//! cargo bench --bench notify
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::{bench_root, message};
use mailstore::engine::{Scope, Subscription};
use mailstore::model::{Flags, FolderRole, MailEngine, MailOp, MailboxKind};
use mailstore::{Durability, Engine, Guid, Options};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    None,
    OtherMailboxes,
    WokenEveryBatch,
}

fn deliver(db: &Arc<MailEngine>, guid: Guid, inbox: u64, commits: u64) -> f64 {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (db, next) = (Arc::clone(db), Arc::clone(&next));
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < commits {
                    let op = MailOp::append(guid, inbox, message(7), Flags::empty(), Vec::new());
                    db.commit(op).expect("deliver");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("deliverer");
    }
    commits as f64 / started.elapsed().as_secs_f64()
}

fn run(db: &Arc<MailEngine>, guid: Guid, inbox: u64, mode: Mode, commits: u64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let mut drainers = Vec::new();
    let mut idle: Vec<Subscription> = Vec::new();
    match mode {
        Mode::None => {}
        Mode::OtherMailboxes => idle = (0..100u8).map(|i| db.subscribe(Scope::Key(Guid([i; 16])))).collect(),
        Mode::WokenEveryBatch => {
            for _ in 0..100 {
                let mut sub = db.subscribe(Scope::Database);
                let stop = Arc::clone(&stop);
                drainers.push(std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let _ = sub.wait(Duration::from_millis(20));
                    }
                }));
            }
        }
    }
    let rate = deliver(db, guid, inbox, commits);
    stop.store(true, Ordering::Relaxed);
    for d in drainers {
        d.join().expect("drainer");
    }
    drop(idle);
    rate
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds = env_u64("MAILSTORE_NOTIFY_ROUNDS", 5).max(1);
    let commits = env_u64("MAILSTORE_NOTIFY_COMMITS", 4_000);
    let dir = tempfile::tempdir_in(bench_root()).expect("bench dir");
    let db: Arc<MailEngine> =
        Arc::new(Engine::mount(dir.path(), Options::default().durability(Durability::Relaxed)).expect("mount"));
    let op = MailOp::create_mailbox("alice@example.com", "Alice", MailboxKind::User);
    let MailOp::CreateMailbox { guid, .. } = op else { unreachable!() };
    db.commit(op).expect("create");
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &guid, FolderRole::Inbox)).expect("read").expect("Inbox").id;
    let modes = [Mode::None, Mode::OtherMailboxes, Mode::WokenEveryBatch];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for round in 0..rounds as usize {
        for i in 0..modes.len() {
            let m = (i + round) % modes.len(); // rotate the order from round to round
            rates[m].push(run(&db, guid, inbox, modes[m], commits));
        }
    }
    let base = median(rates[0].clone());
    for (mode, r) in modes.iter().zip(rates) {
        let rate = median(r);
        println!("{:<18} {:>9.0} deliveries/s  {:.3}x", format!("{mode:?}"), rate, rate / base);
    }
    drop(db);
}
