//! Passive copies: catch-up under load, inspection of bad chunks, lag, activation, fencing, resync, TCP.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Rng, env_u64, key, put};
use mailstore::kv::{Kv, KvEngine};
use mailstore::model::Fai;
use mailstore::replication::{
    Chunk, CopyId, CopyOptions, CopyState, Hello, LogSource, MountDial, PassiveCopy, ReadRequest, ReplicationError,
    ResyncOutcome, ShippingKey, ShippingSource, SnapshotPart, SnapshotRequest, SourceInfo, SourceOptions,
    TcpShippingServer, TcpSource, resync,
};
use mailstore::{Engine, Error, OnSyncTimeout, Options, Result, SyncPolicy, Timestamp};
use tempfile::TempDir;

type Copy = PassiveCopy<Kv>;

fn small_gens() -> Options {
    Options::default().log_target_size(16 << 10)
}

fn copy_options() -> CopyOptions {
    CopyOptions::default().poll(Duration::from_millis(50)).checkpoint_depth(64 << 10)
}

fn dump_engine(db: &KvEngine) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.read(|kv, txn| kv.dump(txn)).unwrap()
}

fn dump_copy(copy: &Copy) -> Vec<(Vec<u8>, Vec<u8>)> {
    copy.read(|kv, txn| kv.dump(txn)).unwrap()
}

fn active(dir: &Path) -> (Arc<KvEngine>, Arc<ShippingSource<Kv>>) {
    let db = Arc::new(Engine::mount(dir, small_gens()).unwrap());
    let source = Arc::new(ShippingSource::new(Arc::clone(&db), SourceOptions::default()).unwrap());
    (db, source)
}

fn seed(dir: &Path, source: &Arc<ShippingSource<Kv>>, options: CopyOptions) -> Copy {
    let log: Arc<dyn LogSource> = source.clone();
    PassiveCopy::seed(dir, source.as_ref(), log, options, |_| {}).unwrap()
}

/// Waits until the copy has replayed everything the active applied.
fn catch_up(copy: &Copy, db: &KvEngine) {
    let target = db.status().applied_lsn;
    assert!(copy.wait_replayed(target, Duration::from_secs(30)), "copy stuck: {:?}", copy.status());
}

/// Commits `n` puts from `threads` threads; returns the keys written.
fn load(db: &KvEngine, threads: u64, n: u64, prefix: &str) {
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in 0..n {
                    db.commit(put(&format!("{prefix}-{t}-{}", key(i)), &"v".repeat((i % 200) as usize + 1))).unwrap();
                }
            });
        }
    });
}

#[test]
fn catch_up_under_concurrent_load_gives_equal_state_in_block_and_file_mode() {
    let seeds = env_u64("MAILSTORE_REPLICATION_SEEDS", 3);
    for seed_no in 0..seeds {
        for block_mode in [true, false] {
            let tmp = TempDir::new().unwrap();
            let (db, source) = active(&tmp.path().join("active"));
            let mut rng = Rng::new(seed_no);
            // Some state before the copy exists: it arrives in the snapshot.
            load(&db, 2, 50 + rng.below(100), "before");
            let copy = seed(&tmp.path().join("passive"), &source, copy_options().block_mode(block_mode));
            // Writes while it catches up.
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let _ = copy.status();
                        std::thread::sleep(Duration::from_millis(5));
                    }
                });
                load(&db, 4, 100 + rng.below(200), "during");
                stop.store(true, Ordering::Relaxed);
            });
            if !block_mode {
                // File mode ships closed generations only.
                db.roll_log().unwrap();
            }
            catch_up(&copy, &db);
            assert_eq!(dump_copy(&copy), dump_engine(&db), "seed {seed_no}, block mode {block_mode}");
            let status = copy.status();
            assert_eq!(status.state, CopyState::Healthy, "{status:?}");
            assert_eq!(status.replay_queue_length, 0);
            assert!(db.status().head_generation > 3, "the load should span several generations");
        }
    }
}

/// A mailbox database with one mailbox (alice), shipping to a copy seeded in `dir/p` with `options`.
fn mail_active_with_copy(
    dir: &Path,
    db_options: Options,
    options: CopyOptions,
) -> (Arc<Engine<mailstore::model::MailStore>>, mailstore::Guid, PassiveCopy<mailstore::model::MailStore>) {
    use mailstore::model::{MailOp, MailboxKind};
    let db = Arc::new(Engine::mount(dir.join("a"), db_options).unwrap());
    let source = Arc::new(ShippingSource::new(Arc::clone(&db), SourceOptions::default()).unwrap());
    let op = MailOp::create_mailbox("alice@example.com", "Alice", MailboxKind::User);
    let MailOp::CreateMailbox { guid, .. } = &op else { unreachable!() };
    let guid = *guid;
    db.commit(op).unwrap();
    let log: Arc<dyn LogSource> = source.clone();
    let copy = PassiveCopy::seed(dir.join("p"), source.as_ref(), log, options, |_| {}).unwrap();
    (db, guid, copy)
}

#[test]
fn mailbox_databases_replicate_with_equal_digests() {
    let tmp = TempDir::new().unwrap();
    let (db, guid, copy) = mail_active_with_copy(tmp.path(), small_gens(), copy_options());
    for i in 0..60 {
        let raw = format!("From: bob@example.com\r\nTo: alice@example.com\r\nSubject: note {i}\r\n\r\nbody {i}\r\n");
        db.deliver(guid, None, raw.into_bytes()).unwrap();
    }
    assert!(copy.wait_replayed(db.status().applied_lsn, Duration::from_secs(30)));
    let a = db.read(|m, txn| m.digest(txn)).unwrap();
    let p = copy.read(|m, txn| m.digest(txn)).unwrap();
    assert_eq!(a, p);
}

/// Every kind of mail operation, and rejected ones, committed one at a time on the active (a transaction each)
/// and replayed by a lagged copy in large batches (many operations per transaction; with a savepoint each when
/// one of them is rejected): message bytes are packed into chunks differently on each side, and the logical
/// state must still be the same — equal digests, every count and chunk consistent on both. Contents of every size from empty to
/// more than a chunk, duplicates (single-instance storage), copies, moves, deletes, expunges and purges, so that
/// chunks fill, empty and are compacted.
#[test]
fn mail_operations_of_every_kind_replay_in_large_batches_to_the_same_state() {
    use mailstore::model::{FlagAction, Flags, FolderRole, MailOp, MailOutput, MailboxKind};
    for seed in 0..env_u64("MAILSTORE_MAIL_REPLAY_SEEDS", 3) {
        let tmp = TempDir::new().unwrap();
        let (db, mbx, copy) = mail_active_with_copy(
            tmp.path(),
            Options::default(),
            copy_options().replay_lag(mailstore::replication::MAX_LAG),
        );
        let role = |r| db.read(|m, txn| m.folder_by_role(txn, &mbx, r)).unwrap().unwrap().id;
        let folders = [role(FolderRole::Inbox), role(FolderRole::Archive), role(FolderRole::JunkEmail)];
        let deletions = role(FolderRole::Deletions);
        let uids = |folder| {
            db.read(|m, txn| m.items_by_uid(txn, &mbx, folder, 1, usize::MAX, Fai::Exclude))
                .unwrap()
                .into_iter()
                .map(|i| i.uid)
                .collect::<Vec<_>>()
        };
        let mut rng = Rng::new(seed);
        let mut sent: Vec<Vec<u8>> = Vec::new();
        // One rejected operation sends its whole replay batch down the savepoint path (one chunk per operation);
        // odd seeds reject nothing, so that their batch is applied in one transaction, with shared chunks.
        let rejecting = seed % 2 == 0;
        let mut rejected = 0;
        for step in 0..300u64 {
            let at = rng.below(3) as usize;
            let folder = folders[at];
            // Another folder: a copy or move onto itself would be rejected.
            let other = folders[(at + 1 + rng.below(2) as usize) % 3];
            let pick = |rng: &mut Rng, from: u64| -> Vec<u32> {
                let all = uids(from);
                all.into_iter().filter(|_| rng.below(3) == 0).collect()
            };
            let op = match rng.below(if rejecting { 12 } else { 11 }) {
                0..=4 => {
                    let size = match rng.below(10) {
                        0 => 0,
                        1 => 200_000 + rng.below(200_000) as usize,
                        _ => 100 + rng.below(6_000) as usize,
                    };
                    let mut raw = format!("Subject: seed {seed} step {step}\r\n\r\n").into_bytes();
                    raw.resize(raw.len() + size, b'a' + (step % 26) as u8);
                    if size == 0 {
                        raw.clear();
                    }
                    sent.push(raw.clone());
                    MailOp::append(mbx, folder, raw, Flags::empty(), Vec::new())
                }
                // The same bytes again: stored once.
                5 if !sent.is_empty() => {
                    let raw = sent[rng.below(sent.len() as u64) as usize].clone();
                    MailOp::append(mbx, folder, raw, Flags::empty(), Vec::new())
                }
                6 => MailOp::CopyItems {
                    mailbox: mbx,
                    from: folder,
                    uids: pick(&mut rng, folder),
                    to: other,
                    remove_source: false,
                },
                7 => MailOp::move_items(mbx, folder, pick(&mut rng, folder), other),
                8 => MailOp::delete_items(mbx, folder, pick(&mut rng, folder)),
                9 => {
                    db.commit(MailOp::store_flags(
                        mbx,
                        folder,
                        pick(&mut rng, folder),
                        FlagAction::Add,
                        Flags::DELETED,
                    ))
                    .unwrap();
                    MailOp::expunge(mbx, folder, None)
                }
                10 => MailOp::PurgeItems { mailbox: mbx, uids: pick(&mut rng, deletions) },
                // Logged, then rejected by `apply` (no such folder): replay meets it inside a batch.
                _ => MailOp::append(mbx, 999_999, b"Subject: lost\r\n\r\nx".to_vec(), Flags::empty(), Vec::new()),
            };
            // Every error here is a rejection by `apply`: logged, so replay meets it too.
            if db.commit(op).is_err() {
                rejected += 1;
            }
        }
        assert_eq!(rejected > 0, rejecting, "seed {seed}: {rejected} operations rejected");
        // Records deleted inside a batch are gone for the operations after them in the same transaction (the
        // model keeps the records a transaction wrote at hand): a mailbox with a folder of its own is purged and
        // created again under the same GUID; a delivery into the new Inbox gets UID 1, and one into the old
        // folder's id is rejected, on the active and on the copy.
        let into = |mailbox, folder| {
            MailOp::append(mailbox, folder, b"Subject: x\r\n\r\nx".to_vec(), Flags::empty(), Vec::new())
        };
        let bob_op = MailOp::create_mailbox("bob@example.com", "Bob", MailboxKind::User);
        let MailOp::CreateMailbox { guid: bob, .. } = &bob_op else { unreachable!() };
        let bob = *bob;
        let bob_role = |r| db.read(|m, txn| m.folder_by_role(txn, &bob, r)).unwrap().unwrap().id;
        db.commit(bob_op.clone()).unwrap();
        let MailOutput::FolderCreated { id: temp, .. } =
            db.commit(MailOp::create_folder(bob, bob_role(FolderRole::Root), "Temp")).unwrap().output
        else {
            unreachable!()
        };
        db.commit(into(bob, temp)).unwrap();
        db.commit(into(bob, bob_role(FolderRole::Inbox))).unwrap();
        db.commit(MailOp::DeleteMailbox { mailbox: bob, at: us(1) }).unwrap();
        db.commit(MailOp::purge_mailbox(bob)).unwrap();
        db.commit(bob_op).unwrap();
        let MailOutput::Appended { uid, .. } = db.commit(into(bob, bob_role(FolderRole::Inbox))).unwrap().output else {
            unreachable!()
        };
        assert_eq!(uid, 1);
        assert!(db.commit(into(bob, temp)).is_err(), "the purged mailbox's folder {temp} is gone");
        let head = db.status().applied_lsn;
        assert!(copy.wait_copied(head, Duration::from_secs(30)), "{:?}", copy.status());
        assert!(copy.play_down(Duration::from_secs(60)), "{:?}", copy.status());
        assert_eq!(copy.status().last_replayed_lsn, head);
        assert_eq!(db.read(|m, txn| m.verify_counters(txn)).unwrap(), Vec::<String>::new(), "seed {seed}");
        assert_eq!(copy.read(|m, txn| m.verify_counters(txn)).unwrap(), Vec::<String>::new(), "seed {seed}");
        assert_eq!(
            db.read(|m, txn| m.stored_contents(txn)).unwrap(),
            copy.read(|m, txn| m.stored_contents(txn)).unwrap()
        );
        assert_eq!(db.read(|m, txn| m.digest(txn)).unwrap(), copy.read(|m, txn| m.digest(txn)).unwrap(), "seed {seed}");
    }
}

/// How a [`Tamper`] source damages the next chunk it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Damage {
    None,
    FlipPayloadByte,
    Truncate,
    Duplicate,
    Reorder,
    Foreign,
}

/// A source that damages the chunks of a real source.
struct Tamper {
    real: Arc<ShippingSource<Kv>>,
    foreign: Arc<ShippingSource<Kv>>,
    damage: parking_lot::Mutex<Damage>,
    previous: parking_lot::Mutex<Option<Chunk>>,
}

impl LogSource for Tamper {
    fn hello(&self, hello: Hello) -> Result<SourceInfo> {
        self.real.hello(hello)
    }
    fn read(&self, request: ReadRequest) -> Result<Chunk> {
        let damage = *self.damage.lock();
        let mut chunk = match damage {
            Damage::Foreign => self.foreign.read(ReadRequest { offset: 0, ..request })?,
            Damage::Reorder => {
                self.real.read(ReadRequest { generation: request.generation + 1, offset: 0, ..request })?
            }
            _ => self.real.read(request)?,
        };
        if !chunk.bytes.is_empty() {
            match damage {
                Damage::FlipPayloadByte => {
                    let at = chunk.bytes.len() - 3;
                    chunk.bytes[at] ^= 0x10;
                }
                Damage::Truncate => {
                    let len = chunk.bytes.len() - 5;
                    chunk.bytes.truncate(len);
                }
                Damage::Duplicate => {
                    if let Some(prev) = self.previous.lock().clone() {
                        chunk = prev;
                    }
                }
                _ => {}
            }
        }
        if !chunk.bytes.is_empty() && damage == Damage::None {
            *self.previous.lock() = Some(chunk.clone());
        }
        Ok(chunk)
    }
    fn headers(&self, from: u64) -> Result<Vec<Vec<u8>>> {
        self.real.headers(from)
    }
    fn snapshot(&self, request: SnapshotRequest) -> Result<SnapshotPart> {
        self.real.snapshot(request)
    }
    fn goodbye(&self, copy: CopyId) -> Result<()> {
        self.real.goodbye(copy)
    }
}

#[test]
fn corrupt_truncated_duplicated_reordered_and_foreign_chunks_are_rejected_and_nothing_applied() {
    for damage in [Damage::FlipPayloadByte, Damage::Truncate, Damage::Duplicate, Damage::Reorder, Damage::Foreign] {
        let tmp = TempDir::new().unwrap();
        let (db, real) = active(&tmp.path().join("active"));
        let (_other, foreign) = active(&tmp.path().join("other"));
        _other.commit(put("foreign", "x")).unwrap();
        load(&db, 1, 20, "a");
        let tamper = Arc::new(Tamper {
            real: Arc::clone(&real),
            foreign,
            damage: parking_lot::Mutex::new(Damage::None),
            previous: parking_lot::Mutex::new(None),
        });
        let log: Arc<dyn LogSource> = tamper.clone();
        let copy: Copy = PassiveCopy::seed(tmp.path().join("p"), real.as_ref(), log, copy_options(), |_| {}).unwrap();
        load(&db, 1, 30, "b");
        catch_up(&copy, &db);
        let good = dump_copy(&copy);
        let good_lsn = copy.status().last_replayed_lsn;

        copy.suspend().unwrap();
        *tamper.damage.lock() = damage;
        copy.resume().unwrap();
        if damage == Damage::Reorder {
            // The next generation must exist for a reordered chunk to be served.
            db.roll_log().unwrap();
        }
        load(&db, 1, 40, "c");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while copy.status().state != CopyState::Failed {
            assert!(std::time::Instant::now() < deadline, "{damage:?} not rejected: {:?}", copy.status());
            std::thread::sleep(Duration::from_millis(10));
        }
        let status = copy.status();
        assert!(status.reason.as_deref().unwrap_or("").contains("rejected"), "{damage:?}: {status:?}");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(copy.status().last_replayed_lsn, good_lsn, "{damage:?}: nothing of the bad chunk replayed");
        assert_eq!(dump_copy(&copy), good, "{damage:?}");

        // With the damage gone, resuming catches up.
        *tamper.damage.lock() = Damage::None;
        copy.resume().unwrap();
        catch_up(&copy, &db);
        assert_eq!(dump_copy(&copy), dump_engine(&db), "{damage:?}");
    }
}

#[test]
fn lagged_copy_replays_nothing_before_its_lag_and_plays_down_to_the_head() {
    let tmp = TempDir::new().unwrap();
    let (db, source) = active(&tmp.path().join("active"));
    let lag = Duration::from_secs(3600);
    let copy = seed(&tmp.path().join("lagged"), &source, copy_options().replay_lag(lag).truncation_lag(lag));
    let seeded = copy.status().last_replayed_lsn;
    load(&db, 2, 200, "x");
    let head = db.status().applied_lsn;
    // Everything is copied and inspected ...
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while copy.status().last_inspected_lsn < head {
        assert!(std::time::Instant::now() < deadline, "{:?}", copy.status());
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    // ... but nothing replayed before the lag.
    let status = copy.status();
    assert_eq!(status.last_replayed_lsn, seeded, "{status:?}");
    assert!(status.replay_queue_length > 0);
    // The active keeps what the lagged copy still keeps.
    db.checkpoint().unwrap();
    assert!(db.status().oldest_lsn <= seeded + 1, "{:?}", db.status());
    // A play-down reaches the head.
    assert!(copy.play_down(Duration::from_secs(30)));
    assert_eq!(copy.status().last_replayed_lsn, head);
    assert_eq!(dump_copy(&copy), dump_engine(&db));
}

#[test]
fn activation_obeys_the_mount_dial() {
    let tmp = TempDir::new().unwrap();
    let (db, source) = active(&tmp.path().join("active"));
    let copy = seed(&tmp.path().join("p"), &source, copy_options());
    load(&db, 1, 20, "a");
    catch_up(&copy, &db);
    copy.suspend().unwrap();
    // Nine generations the copy will not have.
    for _ in 0..9 {
        db.commit(put("filler", "f")).unwrap();
        db.roll_log().unwrap();
    }
    let info = source.hello(Hello { copy: copy.id(), known_epoch: 0, keep_lsn: 0 }).unwrap();
    assert!(info.position.generation >= 10);
    drop(source);
    let dir = copy.dir().to_path_buf();
    drop(copy);
    drop(db);

    // Reopen the copy against a source that knows the position but serves nothing new (a dead active's last
    // word): a source that only answers hello.
    struct Dead(SourceInfo);
    impl LogSource for Dead {
        fn hello(&self, _: Hello) -> Result<SourceInfo> {
            Ok(self.0)
        }
        fn read(&self, r: ReadRequest) -> Result<Chunk> {
            Ok(Chunk { generation: r.generation, offset: r.offset, bytes: Vec::new(), closed: false, source: self.0 })
        }
        fn headers(&self, _: u64) -> Result<Vec<Vec<u8>>> {
            Ok(Vec::new())
        }
        fn snapshot(&self, _: SnapshotRequest) -> Result<SnapshotPart> {
            Err(ReplicationError::Transport { reason: "dead".into() }.into())
        }
        fn goodbye(&self, _: CopyId) -> Result<()> {
            Ok(())
        }
    }
    let copy: Copy = PassiveCopy::open(&dir, Arc::new(Dead(info)), copy_options()).unwrap();
    copy.resume().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while copy.status().source_generation < info.position.generation {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let missing = copy.status().copy_queue_length;
    assert!((7..=12).contains(&missing), "missing {missing}: {:?}", copy.status());
    assert!(matches!(
        copy.check_activation(MountDial::Lossless),
        Err(Error::Replication(ReplicationError::ActivationRefused { .. }))
    ));
    assert!(matches!(
        copy.check_activation(MountDial::GoodAvailability),
        Err(Error::Replication(ReplicationError::ActivationRefused { .. }))
    ));
    let engine = copy.activate(MountDial::BestAvailability, 2, small_gens()).unwrap();
    let status = engine.status();
    assert_eq!(status.epoch, 2);
    engine.commit(put("after", "failover")).unwrap();
    assert_eq!(common::get(&engine, "after").as_deref(), Some(&b"failover"[..]));
}

#[test]
fn failover_fences_the_old_active_and_it_reseeds_with_its_diverged_commits_reported() {
    let tmp = TempDir::new().unwrap();
    let (old, old_source) = active(&tmp.path().join("a"));
    let copy = seed(&tmp.path().join("b"), &old_source, copy_options());
    load(&old, 2, 50, "shared");
    catch_up(&copy, &old);
    // The link breaks; the old active goes on alone (its clients see success: asynchronous mode).
    copy.suspend().unwrap();
    let shared_lsn = copy.status().last_copied_lsn;
    load(&old, 1, 25, "diverged");
    let old_last = old.status().applied_lsn;
    assert_eq!(old_last - shared_lsn, 25);

    // Activate the copy (BestAvailability: it may miss what the old active wrote alone).
    let new: Arc<KvEngine> = Arc::new(copy.activate(MountDial::BestAvailability, 2, small_gens()).unwrap());
    assert_eq!(new.status().epoch, 2);
    load(&new, 1, 30, "new");
    let new_source = Arc::new(ShippingSource::new(Arc::clone(&new), SourceOptions::default()).unwrap());

    // Split brain: a copy that knows epoch 2 talks to the old active: it fences itself, and writes stop.
    let refused = old_source.hello(Hello { copy: mailstore::Guid::new_random(), known_epoch: 2, keep_lsn: 0 });
    assert!(matches!(refused, Err(Error::Fenced { epoch: 2, current: 1 })), "{refused:?}");
    assert!(matches!(old.commit(put("late", "x")), Err(Error::Fenced { .. })));
    assert_eq!(old.status().fenced_by, Some(2));
    drop(old_source);
    let old = Arc::try_unwrap(old).ok().unwrap();
    old.dismount().unwrap();
    // A fenced database refuses to mount as an active.
    let again = Engine::<Kv>::mount(tmp.path().join("a"), small_gens());
    assert!(matches!(again, Err(Error::Fenced { .. })), "{again:?}");

    // The old active comes back: its state applied diverged commits, so it must be reseeded; they are reported.
    let outcome = resync::<Kv>(tmp.path().join("a"), new_source.as_ref()).unwrap();
    let ResyncOutcome::NeedsReseed(diverged) = outcome else { panic!("{outcome:?}") };
    assert_eq!(diverged.common_lsn, shared_lsn);
    assert_eq!(diverged.records(), 25);
    let log: Arc<dyn LogSource> = new_source.clone();
    let reseeded: Copy =
        PassiveCopy::seed(tmp.path().join("a"), new_source.as_ref(), log, copy_options(), |_| {}).unwrap();
    catch_up(&reseeded, &new);
    let state = dump_copy(&reseeded);
    assert_eq!(state, dump_engine(&new));
    assert!(!state.iter().any(|(k, _)| k.starts_with(b"diverged")), "diverged commits must never be merged");
}

#[test]
fn a_lagged_copy_with_diverged_log_resynchronizes_by_discarding_it() {
    let tmp = TempDir::new().unwrap();
    let (a, a_source) = active(&tmp.path().join("a"));
    let b = seed(&tmp.path().join("b"), &a_source, copy_options());
    let lag = Duration::from_secs(3600);
    let c = seed(&tmp.path().join("c"), &a_source, copy_options().replay_lag(lag));
    load(&a, 1, 40, "shared");
    catch_up(&b, &a);
    b.suspend().unwrap();
    let common = b.status().last_copied_lsn;
    load(&a, 1, 15, "only-c");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while c.status().last_inspected_lsn < a.status().applied_lsn {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(a_source);
    drop(a);
    // B becomes active; C copied more than B has, but replayed none of it (lag).
    let b_engine: Arc<KvEngine> = Arc::new(b.activate(MountDial::BestAvailability, 2, small_gens()).unwrap());
    load(&b_engine, 1, 20, "b");
    let b_source = Arc::new(ShippingSource::new(Arc::clone(&b_engine), SourceOptions::default()).unwrap());
    let c_dir = c.dir().to_path_buf();
    c.close().unwrap();
    let outcome = resync::<Kv>(&c_dir, b_source.as_ref()).unwrap();
    let ResyncOutcome::Resynchronized(diverged) = outcome else { panic!("{outcome:?}") };
    assert_eq!(diverged.common_lsn, common);
    assert_eq!(diverged.records(), 15);
    assert!(!diverged.files.is_empty() && diverged.files.iter().all(|f| f.exists()));
    let log: Arc<dyn LogSource> = b_source.clone();
    let c: Copy = PassiveCopy::open(&c_dir, log, copy_options()).unwrap();
    assert!(c.play_down(Duration::from_secs(30)));
    catch_up(&c, &b_engine);
    assert_eq!(dump_copy(&c), dump_engine(&b_engine));
}

#[test]
fn synchronous_mode_acknowledges_only_what_a_copy_holds() {
    let tmp = TempDir::new().unwrap();
    let policy = SyncPolicy { copies: 1, timeout: Duration::from_millis(300), on_timeout: OnSyncTimeout::Fail };
    let db = Arc::new(Engine::<Kv>::mount(tmp.path().join("a"), small_gens().synchronous(policy)).unwrap());
    let source = Arc::new(ShippingSource::new(Arc::clone(&db), SourceOptions::default()).unwrap());
    // No copy yet: the commit is durable locally but reported as not replicated.
    let lonely = db.commit(put("lonely", "1"));
    assert!(matches!(lonely, Err(Error::NotReplicated { copies: 0, required: 1, .. })), "{lonely:?}");
    let copy = seed(&tmp.path().join("p"), &source, copy_options());
    let acked = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..4 {
            let db = &db;
            let copy = &copy;
            let acked = &acked;
            s.spawn(move || {
                for i in 0..50 {
                    let committed = db.commit(put(&format!("k{t}-{i}"), "v")).unwrap();
                    // Acknowledged means the copy has it in its log.
                    assert!(copy.status().last_copied_lsn >= committed.lsn);
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(acked.load(Ordering::Relaxed), 200);
    // Degrade: without copies, commits go on after one timeout.
    db.set_sync_policy(Some(SyncPolicy { on_timeout: OnSyncTimeout::Degrade, ..policy }));
    copy.close().unwrap();
    source.goodbye(mailstore::Guid::new_random()).unwrap();
    // The closed copy still counts until it says goodbye; forget it through the source.
    for (id, _) in source.copies() {
        source.goodbye(id).unwrap();
    }
    db.commit(put("degraded", "1")).unwrap();
    assert!(db.status().sync_degraded);
}

#[test]
fn tcp_transport_refuses_a_wrong_key_and_resumes_a_cut_connection_without_loss_or_duplication() {
    let tmp = TempDir::new().unwrap();
    let (db, source) = active(&tmp.path().join("a"));
    load(&db, 1, 30, "a");
    let key = ShippingKey::from_passphrase("correct horse");
    let server = TcpShippingServer::bind("127.0.0.1:0", source.clone(), key.clone()).unwrap();
    let addr = server.local_addr().to_string();

    let wrong = TcpSource::new(&addr, ShippingKey::from_passphrase("wrong")).retry_for(Duration::from_millis(200));
    let refused = wrong.hello(Hello { copy: mailstore::Guid::new_random(), known_epoch: 0, keep_lsn: 0 });
    assert!(matches!(&refused, Err(Error::Replication(ReplicationError::Authentication { .. }))), "{refused:?}");

    let tcp = Arc::new(TcpSource::new(&addr, key));
    let log: Arc<dyn LogSource> = tcp.clone();
    let copy: Copy = PassiveCopy::seed(tmp.path().join("p"), tcp.as_ref(), log, copy_options(), |_| {}).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let stop = &stop;
        let tcp = &tcp;
        s.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(15));
                tcp.disconnect();
            }
        });
        // Keep writing until the link has been cut several times.
        for round in 0..200 {
            load(&db, 2, 20, &format!("b{round}"));
            if tcp.connects() > 5 {
                break;
            }
        }
        catch_up(&copy, &db);
        stop.store(true, Ordering::Relaxed);
    });
    assert!(tcp.connects() > 5, "the connection should have been cut and remade");
    assert_eq!(dump_copy(&copy), dump_engine(&db));
    assert_eq!(copy.status().state, CopyState::Healthy);
}

#[test]
fn seeding_from_a_healthy_passive_while_the_active_takes_writes() {
    let tmp = TempDir::new().unwrap();
    let (db, source) = active(&tmp.path().join("a"));
    load(&db, 2, 100, "a");
    let first = seed(&tmp.path().join("p1"), &source, copy_options());
    catch_up(&first, &db);
    let from_passive = first.seeding_source();
    let log: Arc<dyn LogSource> = source.clone();
    let mut progress = Vec::new();
    let second: Copy = std::thread::scope(|s| {
        let db = &db;
        s.spawn(move || load(db, 2, 100, "during"));
        PassiveCopy::seed(tmp.path().join("p2"), from_passive.as_ref(), log, copy_options(), |p| progress.push(p))
            .unwrap()
    });
    assert!(progress.last().is_some_and(|p| p.bytes == p.total && p.total > 0));
    catch_up(&second, &db);
    assert_eq!(dump_copy(&second), dump_engine(&db));
}

/// Child process of [`sigkill_of_a_synchronous_active_loses_no_acknowledged_commit`]: an active in synchronous
/// mode serving its log over TCP, committing from four threads and printing every acknowledged key.
#[test]
#[ignore = "run as a child process by sigkill_of_a_synchronous_active_loses_no_acknowledged_commit"]
fn sync_active_child() {
    use std::io::Write;
    let Ok(dir) = std::env::var("MAILSTORE_SYNC_DIR") else { return };
    let policy = SyncPolicy { copies: 1, timeout: Duration::from_secs(5), on_timeout: OnSyncTimeout::Fail };
    let db = Arc::new(Engine::<Kv>::mount(&dir, small_gens().synchronous(policy)).unwrap());
    let source = Arc::new(ShippingSource::new(Arc::clone(&db), SourceOptions::default()).unwrap());
    let server = TcpShippingServer::bind("127.0.0.1:0", source, ShippingKey::from_passphrase("k")).unwrap();
    println!("port {}", server.local_addr().port());
    println!("mounted");
    std::io::stdout().flush().unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let db = &db;
            s.spawn(move || {
                for i in 0.. {
                    let k = format!("t{t}-{i:08}");
                    if db.commit(put(&k, "v")).is_ok() {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "ack {k}");
                        let _ = out.flush();
                    }
                }
            });
        }
    });
}

#[test]
fn sigkill_of_a_synchronous_active_loses_no_acknowledged_commit() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let rounds = env_u64("MAILSTORE_SYNC_KILLS", 3);
    let mut rng = Rng::new(common::seed_from("MAILSTORE_SYNC_SEED"));
    for round in 0..rounds {
        let tmp = TempDir::new().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sync_active_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env("MAILSTORE_SYNC_DIR", tmp.path().join("active"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    [.., "port", port] => {
                        let _ = port_tx.send(port.parse::<u16>().unwrap());
                    }
                    ["ack", k] => acks.push((*k).to_owned()),
                    _ => {}
                }
            }
            acks
        });
        let port = port_rx.recv_timeout(Duration::from_secs(60)).unwrap();
        let tcp = Arc::new(
            TcpSource::new(format!("127.0.0.1:{port}"), ShippingKey::from_passphrase("k"))
                .retry_for(Duration::from_millis(200)),
        );
        let log: Arc<dyn LogSource> = tcp.clone();
        let copy: Copy =
            PassiveCopy::seed(tmp.path().join("passive"), tcp.as_ref(), log, copy_options(), |_| {}).unwrap();
        std::thread::sleep(Duration::from_millis(200 + rng.below(600)));
        child.kill().unwrap(); // SIGKILL, mid-stream
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        assert!(!acked.is_empty(), "round {round}: the child acknowledged nothing");
        let engine = copy.activate(MountDial::Lossless, 2, small_gens()).unwrap();
        let lost: Vec<&String> = acked.iter().filter(|k| common::get(&engine, k).is_none()).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} of {} acknowledged commits lost: {lost:?}",
            lost.len(),
            acked.len()
        );
    }
}

#[test]
fn a_suspended_copy_pins_the_log_only_up_to_the_guard() {
    let tmp = TempDir::new().unwrap();
    let db = Arc::new(Engine::<Kv>::mount(tmp.path().join("a"), small_gens()).unwrap());
    let options = SourceOptions::default().max_pinned_generations(4);
    let source = Arc::new(ShippingSource::new(Arc::clone(&db), options).unwrap());
    let copy = seed(&tmp.path().join("p"), &source, copy_options());
    load(&db, 1, 10, "a");
    catch_up(&copy, &db);
    copy.suspend().unwrap();
    let pinned_from = db.status().oldest_generation;
    // Within the guard, the suspended copy's generations stay.
    for _ in 0..3 {
        db.commit(put("x", "y")).unwrap();
        db.roll_log().unwrap();
    }
    db.checkpoint().unwrap();
    assert_eq!(db.status().oldest_generation, pinned_from, "the suspended copy's log must be kept");
    // Past the guard (noticed at the next request of any copy), its pin goes and the log is truncated.
    for _ in 0..6 {
        db.commit(put("x", "y")).unwrap();
        db.roll_log().unwrap();
    }
    let other = seed(&tmp.path().join("q"), &source, copy_options());
    catch_up(&other, &db);
    db.checkpoint().unwrap();
    assert!(db.status().oldest_generation > pinned_from, "{:?}", db.status());
    // The suspended copy, resumed, finds its log gone: it fails and asks for a reseed.
    copy.resume().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while copy.status().state != CopyState::Failed {
        assert!(std::time::Instant::now() < deadline, "{:?}", copy.status());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(copy.status().reason.unwrap().contains("reseed"));
    // Reseeding the failed copy in place brings it back.
    let dir = copy.dir().to_path_buf();
    let id = copy.id();
    copy.close().unwrap();
    let log: Arc<dyn LogSource> = source.clone();
    let reseeded: Copy = PassiveCopy::seed(&dir, source.as_ref(), log, copy_options(), |_| {}).unwrap();
    assert_eq!(reseeded.id(), id, "a reseed keeps the copy's identity");
    catch_up(&reseeded, &db);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while reseeded.status().state != CopyState::Healthy {
        assert!(std::time::Instant::now() < deadline, "{:?}", reseeded.status());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(dump_copy(&reseeded), dump_engine(&db));
}

#[test]
fn a_copy_behind_the_activated_one_resyncs_without_divergence_and_catches_up() {
    let tmp = TempDir::new().unwrap();
    let (a, a_source) = active(&tmp.path().join("a"));
    let behind = seed(&tmp.path().join("b"), &a_source, copy_options());
    let ahead = seed(&tmp.path().join("c"), &a_source, copy_options());
    load(&a, 1, 30, "x");
    catch_up(&behind, &a);
    behind.suspend().unwrap();
    load(&a, 1, 10, "y");
    catch_up(&ahead, &a);
    drop(a_source);
    drop(a);
    let c: Arc<KvEngine> = Arc::new(ahead.activate(MountDial::Lossless, 2, small_gens()).unwrap());
    load(&c, 1, 10, "z");
    let c_source = Arc::new(ShippingSource::new(Arc::clone(&c), SourceOptions::default()).unwrap());
    let dir = behind.dir().to_path_buf();
    behind.close().unwrap();
    let outcome = resync::<Kv>(&dir, c_source.as_ref()).unwrap();
    assert!(matches!(outcome, ResyncOutcome::InSync { .. }), "{outcome:?}");
    let log: Arc<dyn LogSource> = c_source.clone();
    let b: Copy = PassiveCopy::open(&dir, log, copy_options()).unwrap();
    catch_up(&b, &c);
    assert_eq!(dump_copy(&b), dump_engine(&c));
}

#[test]
fn state_synced_at_checkpoints_only_replays_the_same_and_refuses_to_open_after_a_machine_crash() {
    use mailstore::replication::StateSync;
    let tmp = TempDir::new().unwrap();
    let (db, source) = active(&tmp.path().join("a"));
    let options = copy_options().state_sync(StateSync::AtCheckpoint);
    let copy = seed(&tmp.path().join("p"), &source, options.clone());
    load(&db, 2, 100, "x");
    catch_up(&copy, &db);
    assert_eq!(dump_copy(&copy), dump_engine(&db));
    let dir = copy.dir().to_path_buf();
    assert!(dir.join("unsynced").exists(), "an open copy with unsynced state is marked");
    copy.close().unwrap();
    assert!(!dir.join("unsynced").exists(), "a clean close syncs the state and removes the mark");

    // Reopened in this boot, it goes on.
    let log: Arc<dyn LogSource> = source.clone();
    let copy: Copy = PassiveCopy::open(&dir, log, options.clone()).unwrap();
    load(&db, 1, 50, "y");
    catch_up(&copy, &db);
    drop(copy);

    // The mark of another boot (the machine went down while the copy was open): refused, then reseeded.
    std::fs::write(dir.join("unsynced"), "00000000-0000-0000-0000-000000000000").unwrap();
    let log: Arc<dyn LogSource> = source.clone();
    let refused = PassiveCopy::<Kv>::open(&dir, log, options.clone());
    assert!(
        matches!(&refused, Err(Error::Replication(ReplicationError::CopyFailed { reason })) if reason.contains("reseed")),
        "{:?}",
        refused.err()
    );
    let log: Arc<dyn LogSource> = source.clone();
    let copy: Copy = PassiveCopy::seed(&dir, source.as_ref(), log, options, |_| {}).unwrap();
    catch_up(&copy, &db);
    assert_eq!(dump_copy(&copy), dump_engine(&db));
}

/// A real source that answers snapshot pieces and headers slowly.
struct Slow(Arc<ShippingSource<Kv>>);

impl LogSource for Slow {
    fn hello(&self, hello: Hello) -> Result<SourceInfo> {
        self.0.hello(hello)
    }
    fn read(&self, request: ReadRequest) -> Result<Chunk> {
        self.0.read(request)
    }
    fn headers(&self, from: u64) -> Result<Vec<Vec<u8>>> {
        std::thread::sleep(Duration::from_millis(400));
        self.0.headers(from)
    }
    fn snapshot(&self, request: SnapshotRequest) -> Result<SnapshotPart> {
        std::thread::sleep(Duration::from_millis(100));
        self.0.snapshot(request)
    }
    fn goodbye(&self, copy: CopyId) -> Result<()> {
        self.0.goodbye(copy)
    }
}

#[test]
fn copy_status_shows_seeding_and_resynchronizing_while_another_caller_holds_the_copy() {
    use mailstore::replication::offline_copy_status;
    let tmp = TempDir::new().unwrap();
    let (db, source) = active(&tmp.path().join("a"));
    load(&db, 2, 200, "x");
    let dir = tmp.path().join("p");
    let slow = Slow(Arc::clone(&source));
    let seen = |want: CopyState| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(status) = offline_copy_status(&dir, None)
                && status.state == want
            {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "never saw {want:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let copy: Copy = std::thread::scope(|s| {
        let seeding = s.spawn(|| {
            let log: Arc<dyn LogSource> = source.clone();
            // Small pieces: the snapshot takes several slow round trips.
            PassiveCopy::seed(&dir, &slow, log, copy_options().chunk_bytes(4096), |_| {}).unwrap()
        });
        seen(CopyState::Seeding);
        seeding.join().unwrap()
    });
    load(&db, 1, 20, "y"); // so the copy holds log to compare
    catch_up(&copy, &db);
    copy.close().unwrap();
    std::thread::scope(|s| {
        let resyncing = s.spawn(|| resync::<Kv>(&dir, &slow).unwrap());
        seen(CopyState::Resynchronizing);
        assert!(matches!(resyncing.join().unwrap(), ResyncOutcome::InSync { .. }));
    });
    assert_eq!(offline_copy_status(&dir, None).unwrap().state, CopyState::Dismounted);
}

#[test]
fn a_caught_up_copy_keeps_the_generation_it_sits_in_across_a_roll_and_a_checkpoint() {
    // Regression: the copy pinned only the LSN after its last record, so a roll and a checkpoint on the active
    // could delete the generation the copy sat at the end of, and its next request failed with LogTruncated.
    let tmp = TempDir::new().unwrap();
    let (db, source) = active(&tmp.path().join("a"));
    let copy = seed(&tmp.path().join("p"), &source, copy_options());
    load(&db, 1, 20, "a");
    catch_up(&copy, &db);
    copy.suspend().unwrap(); // the copy sits at the end of the active's current generation
    db.roll_log().unwrap();
    load(&db, 1, 20, "b");
    db.roll_log().unwrap();
    db.checkpoint().unwrap();
    copy.resume().unwrap();
    catch_up(&copy, &db);
    assert_eq!(copy.status().state, CopyState::Healthy, "{:?}", copy.status());
    assert_eq!(dump_copy(&copy), dump_engine(&db));
}

/// Child process of [`a_killed_copy_keeps_what_it_copied_and_catches_up`]: a passive copy following an active over
/// TCP, printing every LSN it has copied (written and synced) as it advances.
#[test]
#[ignore = "run as a child process by a_killed_copy_keeps_what_it_copied_and_catches_up"]
fn copy_child() {
    use mailstore::replication::StateSync;
    use std::io::Write;
    let (Ok(dir), Ok(addr), Ok(sync)) = (
        std::env::var("MAILSTORE_COPY_DIR"),
        std::env::var("MAILSTORE_COPY_SOURCE"),
        std::env::var("MAILSTORE_COPY_SYNC"),
    ) else {
        return;
    };
    let sync = if sync == "checkpoint" { StateSync::AtCheckpoint } else { StateSync::EveryBatch };
    let tcp = Arc::new(TcpSource::new(addr, ShippingKey::from_passphrase("k")));
    let log: Arc<dyn LogSource> = tcp.clone();
    let options = copy_options().state_sync(sync).checkpoint_depth(256 << 10);
    let copy: Copy = PassiveCopy::seed(&dir, tcp.as_ref(), log, options, |_| {}).unwrap();
    println!("mounted");
    let mut last = 0;
    loop {
        let copied = copy.status().last_copied_lsn;
        if copied > last {
            last = copied;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "ack {copied}");
            let _ = out.flush();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_killed_copy_keeps_what_it_copied_and_catches_up() {
    use mailstore::replication::StateSync;
    let rounds = env_u64("MAILSTORE_COPY_KILLS", 2);
    let mut rng = Rng::new(common::seed_from("MAILSTORE_COPY_SEED"));
    for round in 0..rounds {
        for (name, sync) in [("every", StateSync::EveryBatch), ("checkpoint", StateSync::AtCheckpoint)] {
            let tmp = TempDir::new().unwrap();
            let (db, source) = active(&tmp.path().join("a"));
            load(&db, 1, 50, "before");
            let server =
                TcpShippingServer::bind("127.0.0.1:0", source.clone(), ShippingKey::from_passphrase("k")).unwrap();
            let addr = server.local_addr().to_string();
            let dir = tmp.path().join("copy");
            let stop = AtomicBool::new(false);
            let acks = std::thread::scope(|s| {
                s.spawn(|| {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        load(&db, 2, 20, &format!("r{i}"));
                        i += 1;
                    }
                });
                let envs = [
                    ("MAILSTORE_COPY_DIR", dir.display().to_string()),
                    ("MAILSTORE_COPY_SOURCE", addr.clone()),
                    ("MAILSTORE_COPY_SYNC", name.to_owned()),
                ];
                let acks = common::run_killed_child("copy_child", &envs, Duration::from_millis(200 + rng.below(500)));
                stop.store(true, Ordering::Relaxed);
                acks
            });
            let acked: u64 = acks.iter().filter_map(|w| w.get(1)?.parse().ok()).max().unwrap_or(0);
            assert!(acked > 0, "round {round} {name}: the copy acknowledged nothing");
            // The killed copy opens with everything it acknowledged, and catches up.
            let log: Arc<dyn LogSource> = source.clone();
            let copy: Copy = PassiveCopy::open(&dir, log, copy_options().state_sync(sync)).unwrap();
            let status = copy.status();
            assert!(
                status.last_copied_lsn >= acked,
                "round {round} {name}: copied {} < acknowledged {acked}",
                status.last_copied_lsn
            );
            catch_up(&copy, &db);
            assert_eq!(dump_copy(&copy), dump_engine(&db), "round {round} {name}");
            drop(copy);
            drop(server);
        }
    }
}

/// The generation numbers in a database's `logs/` directory, oldest first.
fn generations_in(dir: &Path) -> Vec<u64> {
    common::generation_files(dir)
        .iter()
        .filter_map(|p| mailstore::internals::log::parse_file_name(p.file_name()?.to_str()?))
        .collect()
}

/// Puts back the generations just below the oldest one `copy_dir` holds, from the active's log (they are the
/// same files): what a copy stopped or killed part-way through a deep checkpoint's deletions leaves behind.
fn restore_deleted_generations(active_dir: &Path, copy_dir: &Path, how_many: u64) -> Vec<u64> {
    let oldest = generations_in(copy_dir)[0];
    assert!(oldest > how_many, "no deep checkpoint deleted enough generations yet (oldest kept: {oldest})");
    let restored: Vec<u64> = (oldest - how_many..oldest).collect();
    for n in &restored {
        let name = mailstore::internals::log::file_name(*n);
        std::fs::copy(active_dir.join("logs").join(&name), copy_dir.join("logs").join(&name)).unwrap();
    }
    restored
}

#[test]
fn generations_left_below_a_copy_checkpoint_are_deleted_later_by_the_copy_or_its_activated_engine() {
    let tmp = TempDir::new().unwrap();
    let active_dir = tmp.path().join("active");
    let copy_dir = tmp.path().join("passive");
    let (db, source) = active(&active_dir);
    let copy = seed(&copy_dir, &source, copy_options());
    load(&db, 2, 600, "a");
    catch_up(&copy, &db);
    copy.close().unwrap();

    // Reopened with leftovers below its checkpoint: it opens, replays on, and its next deep checkpoint deletes
    // them (oldest first, with the ones it releases itself).
    let restored = restore_deleted_generations(&active_dir, &copy_dir, 2);
    let log: Arc<dyn LogSource> = source.clone();
    let copy: Copy = PassiveCopy::open(&copy_dir, log, copy_options()).unwrap();
    load(&db, 2, 600, "b");
    catch_up(&copy, &db);
    assert_eq!(copy.status().state, CopyState::Healthy, "{:?}", copy.status());
    assert_eq!(dump_copy(&copy), dump_engine(&db));
    copy.close().unwrap();
    let kept = generations_in(&copy_dir);
    assert!(restored.iter().all(|n| !kept.contains(n)), "leftovers {restored:?} still there: {kept:?}");

    // Activated with leftovers: the engine mounts, takes writes, and truncates them at its checkpoint.
    let restored = restore_deleted_generations(&active_dir, &copy_dir, 2);
    let log: Arc<dyn LogSource> = source.clone();
    let copy: Copy = PassiveCopy::open(&copy_dir, log, copy_options()).unwrap();
    catch_up(&copy, &db);
    let engine = copy.activate(MountDial::Lossless, 2, small_gens()).unwrap();
    engine.commit(put("after-activation", "v")).unwrap();
    engine.checkpoint().unwrap();
    engine.dismount().unwrap();
    let kept = generations_in(&copy_dir);
    assert!(restored.iter().all(|n| !kept.contains(n)), "leftovers {restored:?} still there: {kept:?}");
}

// Seeding carries the message bodies the snapshot's state refers to in older generations (`segments/`, and
// generations of `logs/` below the one the copier starts with).

type MailCopy = PassiveCopy<mailstore::model::MailStore>;
type MailDb = Engine<mailstore::model::MailStore>;

/// A 10 KB message, different for each `i`.
fn big_message(i: usize) -> Vec<u8> {
    let line = format!("line of message {i} ").repeat(4);
    let body: String = (0..10_000 / line.len()).map(|_| format!("{line}\r\n")).collect();
    format!("From: bob@example.com\r\nTo: alice@example.com\r\nSubject: big {i}\r\n\r\n{body}").into_bytes()
}

/// A mail database with small generations and one mailbox; returns it, its source and the mailbox.
fn mail_active(dir: &Path) -> (Arc<MailDb>, Arc<ShippingSource<mailstore::model::MailStore>>, mailstore::Guid) {
    use mailstore::model::{MailOp, MailboxKind};
    let db = Arc::new(Engine::mount(dir, Options::default().log_target_size(64 << 10)).unwrap());
    let source = Arc::new(ShippingSource::new(Arc::clone(&db), SourceOptions::default()).unwrap());
    let op = MailOp::create_mailbox("alice@example.com", "Alice", MailboxKind::User);
    let MailOp::CreateMailbox { guid, .. } = &op else { unreachable!() };
    let guid = *guid;
    db.commit(op).unwrap();
    (db, source, guid)
}

fn deliver_big(db: &MailDb, guid: mailstore::Guid, range: std::ops::Range<usize>) {
    for i in range {
        db.deliver(guid, None, big_message(i)).unwrap();
    }
}

/// Every message of the inbox of `guid` on the active, with its raw bytes.
fn raw_messages(db: &MailDb, guid: mailstore::Guid) -> Vec<(mailstore::model::ItemId, Vec<u8>)> {
    use mailstore::model::FolderRole;
    db.read(|s, txn| {
        let inbox = s.folder_by_role(txn, &guid, FolderRole::Inbox)?.unwrap();
        let items = s.items_by_uid(txn, &guid, inbox.id, 1, usize::MAX, Fai::Exclude)?;
        items.iter().map(|item| Ok((item.id, s.raw(txn, &guid, item.id)?.unwrap()))).collect()
    })
    .unwrap()
}

/// Asserts that `copy` reads every message of `expected` back identically.
fn assert_copy_reads(copy: &MailCopy, guid: mailstore::Guid, expected: &[(mailstore::model::ItemId, Vec<u8>)]) {
    assert!(!expected.is_empty());
    for (id, raw) in expected {
        let read = copy.read(|s, txn| s.raw(txn, &guid, *id));
        assert!(matches!(&read, Ok(Some(bytes)) if bytes == raw), "item {id:?} on the copy: {:?}", read.map(|_| ()));
    }
}

fn segment_generations(dir: &Path) -> Vec<u64> {
    generation_files_in(&dir.join("segments"))
}

/// The generations in directory `dir` (none when it does not exist), oldest first.
fn generation_files_in(dir: &Path) -> Vec<u64> {
    let mut found: Vec<u64> = match std::fs::read_dir(dir) {
        Ok(entries) => {
            entries.filter_map(|e| mailstore::internals::log::parse_file_name(e.ok()?.file_name().to_str()?)).collect()
        }
        Err(_) => Vec::new(),
    };
    found.sort_unstable();
    found
}

fn assert_healthy(dir: &Path) {
    let report = mailstore::engine::check_as::<mailstore::model::MailStore>(dir).unwrap();
    assert!(report.healthy(), "{}: {:?}", dir.display(), report.problems);
}

#[test]
fn a_copy_seeded_from_the_active_holds_the_bodies_in_older_generations() {
    let tmp = TempDir::new().unwrap();
    let (db, source, guid) = mail_active(&tmp.path().join("a"));
    deliver_big(&db, guid, 0..40);
    db.checkpoint().unwrap();
    assert!(!segment_generations(&tmp.path().join("a")).is_empty(), "some bodies should be in segments/ by now");
    let log: Arc<dyn LogSource> = source.clone();
    let copy: MailCopy = PassiveCopy::seed(tmp.path().join("p"), source.as_ref(), log, copy_options(), |_| {}).unwrap();
    deliver_big(&db, guid, 40..45);
    assert!(copy.wait_replayed(db.status().applied_lsn, Duration::from_secs(30)), "{:?}", copy.status());
    assert_copy_reads(&copy, guid, &raw_messages(&db, guid));
    assert_eq!(copy.read(|m, txn| m.digest(txn)).unwrap(), db.read(|m, txn| m.digest(txn)).unwrap());
    let dir = copy.dir().to_path_buf();
    copy.close().unwrap();
    assert_healthy(&dir);
}

#[test]
fn a_copy_seeded_from_a_passive_holds_the_bodies_in_older_generations() {
    let tmp = TempDir::new().unwrap();
    let (db, source, guid) = mail_active(&tmp.path().join("a"));
    deliver_big(&db, guid, 0..20);
    db.checkpoint().unwrap();
    let log: Arc<dyn LogSource> = source.clone();
    let first: MailCopy =
        PassiveCopy::seed(tmp.path().join("p1"), source.as_ref(), log, copy_options(), |_| {}).unwrap();
    // More than the copy's checkpoint depth: its deep checkpoints move generations to its own segments/.
    deliver_big(&db, guid, 20..50);
    assert!(first.wait_replayed(db.status().applied_lsn, Duration::from_secs(30)), "{:?}", first.status());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while segment_generations(first.dir()).len() < 3 {
        assert!(std::time::Instant::now() < deadline, "the first copy moved nothing to segments/");
        std::thread::sleep(Duration::from_millis(10));
    }
    let from_passive = first.seeding_source();
    let log: Arc<dyn LogSource> = source.clone();
    let second: MailCopy =
        PassiveCopy::seed(tmp.path().join("p2"), from_passive.as_ref(), log, copy_options(), |_| {}).unwrap();
    deliver_big(&db, guid, 50..55);
    let expected = raw_messages(&db, guid);
    for copy in [&first, &second] {
        assert!(copy.wait_replayed(db.status().applied_lsn, Duration::from_secs(30)), "{:?}", copy.status());
        assert_copy_reads(copy, guid, &expected);
    }
    let dirs = [first.dir().to_path_buf(), second.dir().to_path_buf()];
    drop(from_passive);
    second.close().unwrap();
    first.close().unwrap();
    for dir in &dirs {
        assert_healthy(dir);
    }
}

#[test]
fn a_seeded_copy_keeps_only_the_segments_its_state_refers_to_after_its_first_deep_checkpoint() {
    use mailstore::engine::StateMachine;
    use mailstore::model::{FolderRole, MailOp};
    let tmp = TempDir::new().unwrap();
    let (db, source, guid) = mail_active(&tmp.path().join("a"));
    deliver_big(&db, guid, 0..40);
    db.checkpoint().unwrap();
    let log: Arc<dyn LogSource> = source.clone();
    let copy: MailCopy = PassiveCopy::seed(tmp.path().join("p"), source.as_ref(), log, copy_options(), |_| {}).unwrap();
    let seeded = segment_generations(copy.dir());
    assert!(!seeded.is_empty(), "the seed should have brought segments");
    // The oldest messages go: their generations hold nothing referenced any more.
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &guid, FolderRole::Inbox)).unwrap().unwrap().id;
    db.commit(MailOp::delete_items(guid, inbox, (1..=20).collect())).unwrap();
    db.commit(MailOp::PurgeDeleted { mailbox: guid, deleted_before: us(u64::MAX) }).unwrap();
    // Past the copy's checkpoint depth.
    deliver_big(&db, guid, 40..52);
    assert!(copy.wait_replayed(db.status().applied_lsn, Duration::from_secs(30)), "{:?}", copy.status());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let referenced = copy.read(|m, txn| m.referenced_generations(txn)).unwrap();
        let segments = segment_generations(copy.dir());
        if segments.iter().all(|g| referenced.contains(g)) && seeded.iter().any(|g| !segments.contains(g)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "segments {segments:?}, referenced {referenced:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_copy_reads(&copy, guid, &raw_messages(&db, guid));
    let dir = copy.dir().to_path_buf();
    copy.close().unwrap();
    assert_healthy(&dir);
}

fn no_snapshot_left(dir: &Path) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("seed-"))
        .collect();
    assert!(left.is_empty(), "{}: snapshot files left: {left:?}", dir.display());
}

/// Forwards to a seeding source, and rolls the active's log (nothing committed since the snapshot) once the last
/// piece of a snapshot is served: the generation the snapshot's state ends in closes right at its applied LSN,
/// before the copy's copier has asked for anything.
struct RollAfterSnapshot {
    inner: Arc<dyn LogSource>,
    db: Arc<MailDb>,
}

impl LogSource for RollAfterSnapshot {
    fn hello(&self, hello: Hello) -> Result<SourceInfo> {
        self.inner.hello(hello)
    }
    fn read(&self, request: ReadRequest) -> Result<Chunk> {
        self.inner.read(request)
    }
    fn headers(&self, from: u64) -> Result<Vec<Vec<u8>>> {
        self.inner.headers(from)
    }
    fn snapshot(&self, request: SnapshotRequest) -> Result<SnapshotPart> {
        let part = self.inner.snapshot(request)?;
        if part.offset + part.bytes.len() as u64 == part.total {
            self.db.roll_log()?;
        }
        Ok(part)
    }
    fn goodbye(&self, copy: CopyId) -> Result<()> {
        self.inner.goodbye(copy)
    }
}

#[test]
fn a_copy_seeded_just_before_its_generation_closes_holds_its_bodies() {
    let tmp = TempDir::new().unwrap();
    let (db, source, guid) = mail_active(&tmp.path().join("a"));
    deliver_big(&db, guid, 0..20);
    db.checkpoint().unwrap();
    let log: Arc<dyn LogSource> = source.clone();
    let first: MailCopy =
        PassiveCopy::seed(tmp.path().join("p1"), source.as_ref(), log, copy_options(), |_| {}).unwrap();
    for (name, from) in [("active", source.clone() as Arc<dyn LogSource>), ("passive", first.seeding_source())] {
        // The generation being written holds a body, and nothing is committed after the snapshot.
        db.roll_log().unwrap();
        deliver_big(&db, guid, 100..101);
        assert!(first.wait_replayed(db.status().applied_lsn, Duration::from_secs(30)), "{:?}", first.status());
        let rolling = RollAfterSnapshot { inner: from, db: Arc::clone(&db) };
        let log: Arc<dyn LogSource> = source.clone();
        let copy: MailCopy = PassiveCopy::seed(tmp.path().join(name), &rolling, log, copy_options(), |_| {}).unwrap();
        assert!(copy.wait_replayed(db.status().applied_lsn, Duration::from_secs(30)), "{name}: {:?}", copy.status());
        assert_copy_reads(&copy, guid, &raw_messages(&db, guid));
        let dir = copy.dir().to_path_buf();
        copy.close().unwrap();
        assert_healthy(&dir);
    }
    no_snapshot_left(&tmp.path().join("a"));
    no_snapshot_left(first.dir());
}

/// How [`Tampering`] damages a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SnapshotDamage {
    /// A byte of the first segment's header (its generation number).
    SegmentHeader,
    /// A byte of the first record of the generation the copy's log starts with.
    LogRecord,
    /// A layout whose files do not add up to the total.
    Layout,
}

/// Forwards to a real source, damaging the snapshot it serves.
struct Tampering {
    inner: Arc<ShippingSource<mailstore::model::MailStore>>,
    damage: SnapshotDamage,
    layout: parking_lot::Mutex<Option<SnapshotPart>>,
}

impl LogSource for Tampering {
    fn hello(&self, hello: Hello) -> Result<SourceInfo> {
        self.inner.hello(hello)
    }
    fn read(&self, request: ReadRequest) -> Result<Chunk> {
        self.inner.read(request)
    }
    fn headers(&self, from: u64) -> Result<Vec<Vec<u8>>> {
        self.inner.headers(from)
    }
    fn snapshot(&self, request: SnapshotRequest) -> Result<SnapshotPart> {
        let mut part = self.inner.snapshot(request)?;
        if part.offset == 0 {
            *self.layout.lock() = Some(part.clone());
            if self.damage == SnapshotDamage::Layout {
                part.segments[0].1 += 1;
            }
        }
        let first = self.layout.lock().clone().unwrap();
        let log_start = first.total - first.log.unwrap().1;
        let (at, byte) = match self.damage {
            SnapshotDamage::SegmentHeader => (first.state_len, 32),
            SnapshotDamage::LogRecord => (log_start, mailstore::internals::log::HEADER_LEN as u64 + 30),
            SnapshotDamage::Layout => return Ok(part),
        };
        if part.offset == at {
            assert!(part.bytes.len() as u64 > byte, "{:?}: piece too short to damage", self.damage);
            part.bytes[byte as usize] ^= 0x01;
        }
        Ok(part)
    }
    fn goodbye(&self, copy: CopyId) -> Result<()> {
        self.inner.goodbye(copy)
    }
}

#[test]
fn a_damaged_snapshot_is_refused_and_none_of_its_generations_kept() {
    let tmp = TempDir::new().unwrap();
    let (db, source, guid) = mail_active(&tmp.path().join("a"));
    deliver_big(&db, guid, 0..20);
    db.checkpoint().unwrap();
    deliver_big(&db, guid, 20..22);
    for damage in [SnapshotDamage::SegmentHeader, SnapshotDamage::LogRecord, SnapshotDamage::Layout] {
        let tampering = Tampering { inner: source.clone(), damage, layout: parking_lot::Mutex::new(None) };
        let dir = tmp.path().join(format!("{damage:?}"));
        let log: Arc<dyn LogSource> = source.clone();
        let seeded = PassiveCopy::<mailstore::model::MailStore>::seed(&dir, &tampering, log, copy_options(), |_| {});
        let error = seeded.err().expect("a damaged snapshot was accepted");
        match damage {
            SnapshotDamage::Layout => {
                assert!(matches!(error, Error::Replication(ReplicationError::Protocol { .. })), "{damage:?}: {error}")
            }
            _ => assert!(
                matches!(error, Error::Replication(ReplicationError::ChunkRejected { .. })),
                "{damage:?}: {error}"
            ),
        }
        assert!(segment_generations(&dir).is_empty(), "{damage:?}: a segment was kept");
        assert!(generation_files_in(&dir.join("logs")).is_empty(), "{damage:?}: a generation was kept");
        // Seeding the same directory again from the real source works.
        let log: Arc<dyn LogSource> = source.clone();
        let copy: MailCopy = PassiveCopy::seed(&dir, source.as_ref(), log, copy_options(), |_| {}).unwrap();
        assert!(copy.wait_replayed(db.status().applied_lsn, Duration::from_secs(30)), "{:?}", copy.status());
        assert_copy_reads(&copy, guid, &raw_messages(&db, guid));
        copy.close().unwrap();
    }
    no_snapshot_left(&tmp.path().join("a"));
}

#[test]
fn a_copy_replays_the_actives_compaction_and_gives_the_space_back_too() {
    use mailstore::model::{FolderRole, MailOp};
    let tmp = TempDir::new().unwrap();
    let (db, source, guid) = mail_active(&tmp.path().join("a"));
    let log: Arc<dyn LogSource> = source.clone();
    let copy: MailCopy = PassiveCopy::seed(tmp.path().join("p"), source.as_ref(), log, copy_options(), |_| {}).unwrap();
    deliver_big(&db, guid, 0..60);
    db.checkpoint().unwrap();
    // Keep one message in five: every segment is then mostly dead, and the active's compaction relocates the rest.
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &guid, FolderRole::Inbox)).unwrap().unwrap().id;
    let gone: Vec<u32> = (1..=60).filter(|uid| uid % 5 != 0).collect();
    db.commit(MailOp::delete_items(guid, inbox, gone)).unwrap();
    db.commit(MailOp::PurgeDeleted { mailbox: guid, deleted_before: us(u64::MAX) }).unwrap();
    db.checkpoint().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while db.stats().compactions == 0 {
        assert!(std::time::Instant::now() < deadline, "no compaction: {:?}", db.status().compaction_failure);
        std::thread::sleep(Duration::from_millis(10));
    }
    // Past the copy's checkpoint depth, so that its deep checkpoints release what the relocations emptied.
    deliver_big(&db, guid, 60..72);
    db.checkpoint().unwrap();
    assert!(copy.wait_replayed(db.status().applied_lsn, Duration::from_secs(30)), "{:?}", copy.status());
    assert_copy_reads(&copy, guid, &raw_messages(&db, guid));
    assert_eq!(copy.read(|m, txn| m.digest(txn)).unwrap(), db.read(|m, txn| m.digest(txn)).unwrap());
    // The copy holds the same generations' worth of bodies as the active: it applied the same relocations.
    let referenced = |s: &mailstore::model::MailStore, txn: &mailstore::RoTxn<'_>| {
        use mailstore::engine::StateMachine;
        s.referenced_generations(txn)
    };
    let kept = copy.read(referenced).unwrap();
    assert_eq!(kept, db.read(referenced).unwrap());
    // And it deletes the segments the relocations emptied, at its own deep checkpoints.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !segment_generations(copy.dir()).iter().all(|g| kept.contains(g)) {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?} kept, {kept:?} referenced",
            segment_generations(copy.dir())
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let dir = copy.dir().to_path_buf();
    copy.close().unwrap();
    assert_healthy(&dir);
}

/// A time `micros` µs after the epoch.
fn us(micros: u64) -> Timestamp {
    Timestamp::from_micros(micros)
}
