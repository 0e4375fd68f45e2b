//! Change notification and the async commit (issue 15): a subscription wakes once a change is durable and
//! readable — on the active's commits, on a passive copy's replay, and across an activation — filtered by
//! mailbox, coalesced for a subscriber that does not look, and ended by a dismount; `commit_async` answers
//! through the task's waker. The futures are driven by a minimal executor of the test's own (a thread that parks),
//! so no runtime is assumed.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use mailstore::engine::Scope;
use mailstore::kv::{KvEngine, KvOp};
use mailstore::model::{FolderRole, MailEngine, MailOp, MailboxKind};
use mailstore::replication::{CopyOptions, LogSource, MountDial, PassiveCopy, ShippingSource, SourceOptions};
use mailstore::{Engine, Error, Guid, Options};

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` on this thread, parking between polls: woken only by its waker (or the 5 s safety bound).
fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park_timeout(deadline.saturating_duration_since(Instant::now()));
        assert!(Instant::now() < deadline, "the future was never woken");
    }
}

fn put(key: &str, value: &str) -> KvOp {
    KvOp::Put { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec() }
}

fn get(db: &KvEngine, key: &str) -> Option<Vec<u8>> {
    db.read(|kv, txn| kv.get(txn, key.as_bytes())).unwrap()
}

#[test]
fn a_wake_up_comes_after_the_change_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(KvEngine::mount(dir.path(), Options::default()).unwrap());
    let mut sub = db.subscribe(Scope::Database);
    assert_eq!(sub.wait(Duration::from_millis(20)).unwrap(), None, "nothing changed yet");
    for round in 0..20 {
        let writer = {
            let db = Arc::clone(&db);
            thread::spawn(move || db.commit(put("k", &round.to_string())).unwrap().lsn)
        };
        let lsn = sub.wait(Duration::from_secs(5)).unwrap().expect("woken");
        // Whatever the wake-up reports is already readable.
        let value = get(&db, "k").unwrap();
        assert!(value.as_slice() >= b"0".as_slice(), "{value:?}");
        assert!(db.status().applied_lsn >= lsn);
        let committed = writer.join().unwrap();
        assert!(lsn <= committed);
        if lsn < committed {
            assert_eq!(sub.wait(Duration::from_secs(5)).unwrap(), Some(committed));
        }
        assert_eq!(get(&db, "k").unwrap(), round.to_string().as_bytes());
    }
}

#[test]
fn a_subscriber_that_does_not_look_costs_one_slot() {
    let dir = tempfile::tempdir().unwrap();
    let db: KvEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    let mut sub = db.subscribe(Scope::Database);
    let mut last = 0;
    for i in 0..300 {
        last = db.commit(put(&format!("k{i}"), "v")).unwrap().lsn;
    }
    assert_eq!(sub.try_changed().unwrap(), Some(last), "one notification, with the newest LSN");
    assert_eq!(sub.try_changed().unwrap(), None);
    // A rejected operation (logged, refused by apply) changes nothing and wakes nobody.
    let conflict = KvOp::CompareAndSwap { key: b"k0".to_vec(), expected: Some(b"nope".to_vec()), new: None };
    assert!(matches!(db.commit(conflict), Err(Error::Kv(_))));
    assert_eq!(sub.wait(Duration::from_millis(50)).unwrap(), None);
}

fn mailbox(db: &MailEngine, address: &str) -> Guid {
    let op = MailOp::create_mailbox(address, "User", MailboxKind::User);
    let MailOp::CreateMailbox { guid, .. } = op else { unreachable!() };
    db.commit(op).unwrap();
    guid
}

fn mail(subject: &str) -> Vec<u8> {
    format!("Subject: {subject}\r\n\r\nbody\r\n").into_bytes()
}

#[test]
fn a_mailbox_subscription_hears_only_its_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let db: MailEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    let (alice, bob) = (mailbox(&db, "alice@example.com"), mailbox(&db, "bob@example.com"));
    let mut of_alice = db.subscribe(Scope::Key(alice));
    let mut of_all = db.subscribe(Scope::Database);
    db.deliver(bob, None, mail("for bob")).unwrap();
    assert_eq!(of_alice.wait(Duration::from_millis(50)).unwrap(), None, "bob's delivery woke alice's");
    assert!(of_all.try_changed().unwrap().is_some());
    db.deliver(alice, None, mail("for alice")).unwrap();
    let lsn = db.status().applied_lsn;
    assert_eq!(of_alice.wait(Duration::from_secs(5)).unwrap(), Some(lsn));
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &alice, FolderRole::Inbox)).unwrap().unwrap();
    assert_eq!(inbox.total, 1, "the change is readable when the subscriber looks");
    // A dropped subscription is gone: the others still work.
    drop(of_all);
    db.deliver(alice, None, mail("again")).unwrap();
    assert!(of_alice.wait(Duration::from_secs(5)).unwrap().is_some());
}

#[test]
fn dismounting_ends_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let db: KvEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    let mut sub = db.subscribe(Scope::Database);
    let lsn = db.commit(put("k", "v")).unwrap().lsn;
    let waiter = thread::spawn(move || {
        // The change first, then the end.
        assert_eq!(sub.wait(Duration::from_secs(5)).unwrap(), Some(lsn));
        let started = Instant::now();
        let end = sub.wait(Duration::from_secs(10));
        (end, started.elapsed())
    });
    thread::sleep(Duration::from_millis(50));
    db.dismount().unwrap();
    let (end, waited) = waiter.join().unwrap();
    assert!(matches!(end, Err(Error::Dismounted)), "{end:?}");
    assert!(waited < Duration::from_secs(5), "woken by the dismount, not the timeout");
}

#[test]
fn futures_are_woken_by_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(KvEngine::mount(dir.path(), Options::default()).unwrap());
    // Many commits in flight from one thread, answered through their wakers.
    let futures: Vec<_> = (0..64).map(|i| db.commit_async(put(&format!("a{i}"), "v"))).collect();
    let mut lsns: Vec<_> = futures.into_iter().map(|f| block_on(f).unwrap().lsn).collect();
    lsns.sort_unstable();
    lsns.dedup();
    assert_eq!(lsns.len(), 64);
    assert_eq!(get(&db, "a63").as_deref(), Some(&b"v"[..]));
    // A refusal before logging is an error from the future, like commit's.
    assert!(block_on(db.commit_async(KvOp::Put { key: Vec::new(), value: Vec::new() })).is_err());

    // A notification future, woken by a commit on another thread.
    let mut sub = db.subscribe(Scope::Database);
    let writer = {
        let db = Arc::clone(&db);
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(30));
            db.commit(put("later", "v")).unwrap().lsn
        })
    };
    let lsn = block_on(sub.changed()).unwrap();
    assert!(lsn <= writer.join().unwrap());
    assert_eq!(get(&db, "later").as_deref(), Some(&b"v"[..]));
}

#[test]
fn a_passive_copy_wakes_on_replay_and_across_its_activation() {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options::default().log_target_size(16 << 10);
    let db = Arc::new(KvEngine::mount(dir.path().join("active"), options()).unwrap());
    let source = Arc::new(ShippingSource::new(Arc::clone(&db), SourceOptions::default()).unwrap());
    db.commit(put("first", "x")).unwrap();
    let copy_options = CopyOptions::default().poll(Duration::from_millis(20));
    let log: Arc<dyn LogSource> = source.clone();
    let copy: PassiveCopy<mailstore::kv::Kv> =
        PassiveCopy::seed(dir.path().join("copy"), source.as_ref(), log, copy_options, |_| {}).unwrap();
    let mut sub = copy.subscribe(Scope::Database);
    let lsn = db.commit(put("shipped", "y")).unwrap().lsn;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = sub.wait(Duration::from_secs(10)).unwrap().expect("the copy's replay wakes it");
        // Readable on the copy when woken.
        let got = copy.read(|kv, txn| kv.get(txn, b"shipped")).unwrap();
        if seen >= lsn {
            assert_eq!(got.as_deref(), Some(&b"y"[..]));
            break;
        }
        assert!(Instant::now() < deadline);
    }
    db.roll_log().unwrap();
    assert!(copy.wait_replayed(db.status().applied_lsn, Duration::from_secs(10)));
    // The active stays mounted (the copy's source holds it); the activation fences it with a new epoch.
    // The subscription carries over to the activated engine and is woken once it is mounted.
    let engine: KvEngine = copy.activate(MountDial::BestAvailability, 2, options()).unwrap();
    assert!(sub.wait(Duration::from_secs(5)).unwrap().is_some(), "not woken by the activation");
    let lsn = engine.commit(put("after", "failover")).unwrap().lsn;
    assert_eq!(sub.wait(Duration::from_secs(5)).unwrap(), Some(lsn));
    engine.dismount().unwrap();
    assert!(matches!(sub.wait(Duration::from_secs(5)), Err(Error::Dismounted)));
}

#[test]
fn deliver_async_answers_as_deliver_does() {
    let dir = tempfile::tempdir().unwrap();
    let db: MailEngine = Engine::mount(dir.path(), Options::default()).unwrap();
    let op = MailOp::create_mailbox("erin@example.com", "Erin", MailboxKind::User);
    let erin = op.mailbox().unwrap();
    db.commit(op).unwrap();
    let committed = block_on(db.deliver_async(erin, None, b"Subject: a\r\n\r\nx\r\n".to_vec())).unwrap();
    assert!(matches!(committed.output, mailstore::model::MailOutput::Appended { uid: 1, .. }), "{committed:?}");
    // Refusals found before logging resolve at once, typed as `deliver` gives them.
    let stranger = Guid([7; 16]);
    match block_on(db.deliver_async(stranger, None, b"x".to_vec())) {
        Err(Error::Mail(mailstore::model::MailError::NoSuchMailbox { mailbox })) => assert_eq!(mailbox, stranger),
        other => panic!("{other:?}"),
    }
    match block_on(db.deliver_async(erin, Some("Nowhere"), b"x".to_vec())) {
        Err(Error::Mail(mailstore::model::MailError::NoSuchFolderPath { path, .. })) => assert_eq!(path, "Nowhere"),
        other => panic!("{other:?}"),
    }
}
