//! What verifying every read of the state store costs (ARCHITECTURE.md §13): the same queries on the same
//! database with verification on and off (`mailstore::internals::engine::set_verification`, which exists for
//! this benchmark only), interleaved in one process so that the machine's load falls on both alike.
//!
//! One folder of `MAILSTORE_VERIFY_MESSAGES` messages (default 100,000) is filled once (32 deliverers,
//! `Durability::Relaxed`). Then `MAILSTORE_VERIFY_ROUNDS` rounds (default 9): each query kind runs a block of
//! queries verified and a block unverified, the order alternating from round to round. Printed per query kind:
//! the median time per query of each mode and the median of the rounds' verified ÷ unverified ratios.
//!
//! * `newest50`: `MailStore::newest_summaries`, 50 rows read in place (the tightest listing);
//! * `newest50_owned`: `MailStore::newest_by_uid`, 50 whole `ItemInfo`s;
//! * `item_by_uid`: one item found by a random UID (a point lookup that hits);
//! * `item_missing`: a UID above every one (a lookup that misses: both neighbours are verified);
//! * `raw`: one message's 10 KiB body (its entries verified; the bytes themselves come from the log).
//!
//! ```text
//! cargo bench --bench verify
//! MAILSTORE_VERIFY_MESSAGES=5000 MAILSTORE_VERIFY_ROUNDS=3 cargo bench --bench verify
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::{bench_root, message};
use mailstore::internals::engine::set_verification;
use mailstore::model::{Flags, FolderId, FolderRole, MailEngine, MailOp, MailboxKind, Uid};
use mailstore::{Durability, Engine, Guid, Options};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Fixture {
    db: MailEngine,
    guid: Guid,
    inbox: FolderId,
    messages: u64,
}

fn fill(dir: &std::path::Path, messages: u64) -> Fixture {
    let options = Options::default().durability(Durability::Relaxed);
    let db: MailEngine = Engine::mount(dir, options).expect("mount");
    let op = MailOp::create_mailbox("alice@example.com", "Alice Example", MailboxKind::User);
    let MailOp::CreateMailbox { guid, .. } = op else { unreachable!() };
    db.commit(op).expect("create mailbox");
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &guid, FolderRole::Inbox)).expect("read").expect("Inbox").id;
    let db = Arc::new(db);
    let next = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let (db, next) = (Arc::clone(&db), Arc::clone(&next));
            std::thread::spawn(move || {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= messages {
                        break;
                    }
                    db.commit(MailOp::append(guid, inbox, message(n), Flags::empty(), vec![])).expect("deliver");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let db = Arc::into_inner(db).expect("one owner");
    db.dismount().expect("dismount");
    let db: MailEngine = Engine::mount(dir, Options::default()).expect("mount again");
    Fixture { db, guid, inbox, messages }
}

/// One query of `kind`; `n` varies the item it asks for. Returns something to keep the work alive.
fn query(f: &Fixture, kind: &str, n: u64) -> u64 {
    let uid: Uid = (n % f.messages) as u32 + 1;
    f.db.read(|s, txn| {
        Ok(match kind {
            "newest50" => s.newest_summaries(txn, &f.guid, f.inbox, 50)?.iter().map(|r| r.uid() as u64).sum(),
            "newest50_owned" => s.newest_by_uid(txn, &f.guid, f.inbox, 50)?.len() as u64,
            "item_by_uid" => s.item_by_uid(txn, &f.guid, f.inbox, uid)?.map_or(0, |i| i.size),
            "item_missing" => s.item_by_uid(txn, &f.guid, f.inbox, u32::MAX - 1)?.map_or(1, |i| i.size),
            "raw" => {
                let item = s.item_by_uid(txn, &f.guid, f.inbox, uid)?.expect("an item");
                s.raw(txn, &f.guid, item.id)?.map_or(0, |raw| raw.len() as u64)
            }
            other => unreachable!("{other}"),
        })
    })
    .expect("query")
}

/// Times `count` queries; the mean per query.
fn block(f: &Fixture, kind: &str, verify: bool, count: u64, offset: u64) -> Duration {
    set_verification(verify);
    let started = Instant::now();
    for n in 0..count {
        black_box(query(f, kind, offset.wrapping_add(n.wrapping_mul(7919))));
    }
    let mean = started.elapsed() / count as u32;
    set_verification(true);
    mean
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs a `harness = false` bench without it: a smoke run.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test") {
        smoke();
        return;
    }
    let messages = env_u64("MAILSTORE_VERIFY_MESSAGES", 100_000);
    let rounds = env_u64("MAILSTORE_VERIFY_ROUNDS", 9).max(1);
    let root = bench_root();
    let dir = tempfile::tempdir_in(&root).expect("bench dir");
    let started = Instant::now();
    let f = fill(dir.path(), messages);
    println!("filled {messages} messages in {:.1} s", started.elapsed().as_secs_f64());
    run(&f, rounds);
}

/// A few queries of each kind in both modes, on a small folder: the benchmark still runs.
fn smoke() {
    let dir = tempfile::tempdir().expect("dir");
    let f = fill(dir.path(), 200);
    run(&f, 1);
}

fn run(f: &Fixture, rounds: u64) {
    let kinds = ["newest50", "newest50_owned", "item_by_uid", "item_missing", "raw"];
    println!("| query | verified (µs) | unverified (µs) | verified ÷ unverified (median of {rounds} rounds) |");
    println!("| --- | ---: | ---: | ---: |");
    for kind in kinds {
        // Size the blocks to ~50 ms each.
        let probe = block(f, kind, true, 200, 0).as_secs_f64().max(1e-7);
        let count = ((0.05 / probe) as u64).clamp(200, 200_000);
        let (mut on, mut off, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let offset = round * 1_000_003;
            let (a, b) = if round % 2 == 0 {
                let a = block(f, kind, true, count, offset);
                (a, block(f, kind, false, count, offset))
            } else {
                let b = block(f, kind, false, count, offset);
                (block(f, kind, true, count, offset), b)
            };
            on.push(a.as_secs_f64() * 1e6);
            off.push(b.as_secs_f64() * 1e6);
            ratio.push(a.as_secs_f64() / b.as_secs_f64());
        }
        println!("| {kind} | {:.3} | {:.3} | {:.3}x |", median(on), median(off), median(ratio));
    }
}
