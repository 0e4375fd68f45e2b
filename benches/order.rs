//! What SORT and THREAD cost on a large folder (issue 16's target: sort of 100,000 messages by date ≤ 20 ms),
//! against the walk every one of them starts with: `search` of ALL, the same cursor walk over the folder's UID
//! index and its listing records, with nothing to order.
//!
//! One folder of `MAILSTORE_ORDER_MESSAGES` messages (default 100,000) is filled once (16 deliverers,
//! `Durability::Relaxed`): 2,000 conversations of up to 50 messages, each reply naming its parent in
//! `In-Reply-To` and `References` with a `Re:` subject, 400 senders with display names, dates in eight zones.
//! Then each query runs `MAILSTORE_ORDER_ROUNDS` times (default 7), the kinds interleaved round by round; printed:
//! the median time of each and its ratio to the walk's median.
//!
//! ```text
//! cargo bench --bench order
//! MAILSTORE_ORDER_MESSAGES=5000 MAILSTORE_ORDER_ROUNDS=3 cargo bench --bench order
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::bench_root;
use mailstore::model::search::{Query, SortField, SortKey, ThreadAlgorithm, Window};
use mailstore::model::{Flags, FolderRole, MailEngine, MailOp, MailboxKind};
use mailstore::{Durability, Engine, Options};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const CONVERSATIONS: u64 = 2_000;
const ZONES: [&str; 8] = ["+0000", "-0500", "+0100", "+0530", "-0800", "+0900", "+1000", "-0300"];

/// Message `n`: conversation `n % CONVERSATIONS`, its `n / CONVERSATIONS`-th message, a reply to the one before.
fn message(n: u64) -> Vec<u8> {
    let (topic, depth) = (n % CONVERSATIONS, n / CONVERSATIONS);
    let sender = n * 7 % 400;
    let day = 1 + n % 28;
    let (hour, minute) = (n / 60 % 24, n % 60);
    let zone = ZONES[(n % 8) as usize];
    let mut raw = format!(
        "From: Sender {sender} <sender{sender}@example.org>\r\nTo: alice@example.com\r\n\
         Subject: {}topic {topic} of the week\r\nDate: {day} Mar 2026 {hour:02}:{minute:02}:00 {zone}\r\n\
         Message-ID: <m{n}@example.org>\r\n",
        if depth > 0 { "Re: " } else { "" }
    );
    if depth > 0 {
        let parent = n - CONVERSATIONS;
        raw.push_str(&format!("In-Reply-To: <m{parent}@example.org>\r\nReferences: <m{topic}@example.org>"));
        if parent != topic {
            raw.push_str(&format!(" <m{parent}@example.org>"));
        }
        raw.push_str("\r\n");
    }
    raw.push_str("\r\n");
    raw.push_str(&"Some words of the message body. ".repeat(1 + (n % 40) as usize));
    raw.push_str("\r\n");
    raw.into_bytes()
}

fn main() {
    let messages = env_u64("MAILSTORE_ORDER_MESSAGES", 100_000);
    let rounds = env_u64("MAILSTORE_ORDER_ROUNDS", 7).max(1);
    let root = bench_root();
    let dir = tempfile::tempdir_in(&root).expect("bench dir");

    let started = Instant::now();
    let db: MailEngine = Engine::mount(dir.path(), Options::default().durability(Durability::Relaxed)).expect("mount");
    let op = MailOp::create_mailbox("alice@example.com", "Alice Example", MailboxKind::User);
    let MailOp::CreateMailbox { guid, .. } = op else { unreachable!() };
    db.commit(op).expect("create mailbox");
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &guid, FolderRole::Inbox)).expect("read").expect("Inbox").id;
    let db = Arc::new(db);
    let next = Arc::new(AtomicU64::new(0));
    // Parents go first: each deliverer takes the next number, so a reply can only overtake its parent by a few.
    let deliverers: Vec<_> = (0..16)
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
    for d in deliverers {
        d.join().unwrap();
    }
    println!("filled {messages} messages in {:.1} s", started.elapsed().as_secs_f64());

    type Run = Box<dyn Fn(&MailEngine) -> usize>;
    let sort = |field: SortField| -> Run {
        Box::new(move |db: &MailEngine| {
            let keys = [SortKey::new(field)];
            db.read(|s, txn| s.sort(txn, &guid, inbox, &Query::all(), &keys, Window::all())).expect("sort").hits.len()
        })
    };
    let thread = |algorithm: ThreadAlgorithm| -> Run {
        Box::new(move |db: &MailEngine| {
            db.read(|s, txn| s.thread(txn, &guid, inbox, &Query::all(), algorithm)).expect("thread").threads.len()
        })
    };
    let kinds: Vec<(&str, Run)> = vec![
        (
            "walk (search ALL)",
            Box::new(move |db: &MailEngine| {
                db.read(|s, txn| s.search(txn, &guid, inbox, &Query::all(), Window::all())).expect("search").hits.len()
            }),
        ),
        ("sort DATE", sort(SortField::Date)),
        ("sort ARRIVAL", sort(SortField::Arrival)),
        ("sort SUBJECT", sort(SortField::Subject)),
        ("sort DISPLAYFROM", sort(SortField::DisplayFrom)),
        ("thread ORDEREDSUBJECT", thread(ThreadAlgorithm::OrderedSubject)),
        ("thread REFERENCES", thread(ThreadAlgorithm::References)),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
    for _ in 0..rounds {
        for (i, (_, run)) in kinds.iter().enumerate() {
            let t = Instant::now();
            std::hint::black_box(run(&db));
            times[i].push(t.elapsed());
        }
    }
    let median = |t: &mut Vec<Duration>| {
        t.sort_unstable();
        t[t.len() / 2]
    };
    let walk = median(&mut times[0]);
    println!("{messages} messages, {rounds} rounds, median per query:");
    for (i, (name, run)) in kinds.iter().enumerate() {
        let m = median(&mut times[i]);
        let ratio = m.as_secs_f64() / walk.as_secs_f64();
        println!("  {name:<24} {:>9.2} ms  {ratio:>5.2}x the walk  ({} results)", m.as_secs_f64() * 1e3, run(&db));
    }
}
