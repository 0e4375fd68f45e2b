//! The replication port against hostile peers: connection floods, trickling handshakes, snapshots and pins
//! under ever new copy ids, and what a stopped process left behind.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailstore::kv::{Kv, KvEngine, KvOp};
use mailstore::replication::{
    CopyId, Hello, LogSource, ReplicationError, ShippingKey, ShippingSource, SnapshotRequest, SourceOptions,
    TcpShippingServer, TcpSource,
};
use mailstore::{Engine, Error, Guid, Options};
use tempfile::TempDir;

fn active(dir: &Path, options: SourceOptions) -> (Arc<KvEngine>, Arc<ShippingSource<Kv>>) {
    let db: Arc<KvEngine> = Arc::new(Engine::mount(dir, Options::default()).unwrap());
    for i in 0..20u32 {
        db.commit(KvOp::Put { key: i.to_be_bytes().to_vec(), value: vec![7; 100] }).unwrap();
    }
    let source = Arc::new(ShippingSource::new(Arc::clone(&db), options).unwrap());
    (db, source)
}

fn hello(copy: CopyId, keep_lsn: u64) -> Hello {
    Hello { copy, known_epoch: 0, keep_lsn }
}

fn snapshot_start(copy: CopyId) -> SnapshotRequest {
    SnapshotRequest { copy, offset: 0, max_bytes: 4096 }
}

fn seeds_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("seed-"))
        .count()
}

fn refused(result: &mailstore::Result<impl std::fmt::Debug>) -> bool {
    matches!(result, Err(Error::Replication(ReplicationError::Refused { .. })))
}

/// Found probing the port: 64 idle or slow connections held every slot and a real copy's hello failed. Idle
/// connections, and connections that trickle a byte at a time, now lose their handshake slot to newer ones and
/// are cut at the handshake deadline, so a copy gets in at its first try.
#[test]
fn idle_and_trickling_connections_do_not_keep_a_copy_out() {
    let tmp = TempDir::new().unwrap();
    let (_db, source) = active(tmp.path(), SourceOptions::default());
    let key = ShippingKey::from_passphrase("port");
    let server = TcpShippingServer::bind("127.0.0.1:0", source.clone(), key.clone()).unwrap();
    let addr = server.local_addr();

    let idle: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tricklers: Vec<_> = (0..20)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let Ok(mut s) = TcpStream::connect(addr) else { return };
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if s.write_all(&[0]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    // The default retry budget of 2 s is what the probe's copy had.
    let copy = TcpSource::new(addr.to_string(), key.clone());
    let info = copy.hello(hello(Guid::new_random(), 0)).expect("a copy gets in past the flood");
    assert_eq!(info.guid, source.engine().guid());

    // Every idle connection is closed by the server within the handshake deadline (3 s), not kept open.
    let started = Instant::now();
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    assert!(started.elapsed() < Duration::from_secs(8), "idle connections lingered {:?}", started.elapsed());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tricklers {
        t.join().unwrap();
    }
    // The copy's connection survived it all.
    copy.hello(hello(Guid::new_random(), 0)).unwrap();

    // A handshake trickled a byte every 200 ms (64 bytes would take 13 s) is cut at the deadline.
    let mut slow = TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    slow.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut greeting = [0u8; 64];
    let cut = loop {
        if slow.write_all(&[0]).is_err() {
            break started.elapsed();
        }
        match slow.read(&mut greeting) {
            Ok(0) => break started.elapsed(),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break started.elapsed(),
        }
        assert!(started.elapsed() < Duration::from_secs(20), "a trickled handshake was never cut");
    };
    assert!(cut >= Duration::from_secs(2) && cut < Duration::from_secs(8), "cut after {cut:?}");
}

/// A wrong key is still told apart from a cut connection: refused at once, not retried.
#[test]
fn a_wrong_key_is_refused_at_once() {
    let tmp = TempDir::new().unwrap();
    let (_db, source) = active(tmp.path(), SourceOptions::default());
    let server = TcpShippingServer::bind("127.0.0.1:0", source, ShippingKey::from_passphrase("right")).unwrap();
    let wrong = TcpSource::new(server.local_addr().to_string(), ShippingKey::from_passphrase("wrong"))
        .retry_for(Duration::from_secs(30));
    let started = Instant::now();
    let r = wrong.hello(hello(Guid::new_random(), 0));
    assert!(matches!(&r, Err(Error::Replication(ReplicationError::Authentication { .. }))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "it was retried: {:?}", started.elapsed());
    assert_eq!(wrong.connects(), 1);
}

/// Found probing the port: a peer starting snapshots under new copy ids left a full state copy each (20 starts,
/// 84 MB). At most `max_snapshots` are prepared at once, an idle one is removed, and a restarted source removes
/// the ones its predecessor left.
#[test]
fn snapshots_under_new_copy_ids_are_bounded_and_cleaned_up() {
    let tmp = TempDir::new().unwrap();
    let options = SourceOptions::default().max_snapshots(2).snapshot_idle(Duration::from_millis(400));
    let (db, source) = active(tmp.path(), options.clone());
    for _ in 0..2 {
        source.snapshot(snapshot_start(Guid::new_random())).unwrap();
    }
    let third = source.snapshot(snapshot_start(Guid::new_random()));
    assert!(refused(&third), "a third snapshot was prepared: {:?}", third.map(|p| p.total));
    assert_eq!(seeds_in(tmp.path()), 2);

    // Idle past `snapshot_idle`: removed when the next one is asked for.
    std::thread::sleep(Duration::from_millis(500));
    source.snapshot(snapshot_start(Guid::new_random())).unwrap();
    assert_eq!(seeds_in(tmp.path()), 1);

    // A source that stopped mid-seed left its directory; the next one removes it.
    drop(source);
    assert_eq!(seeds_in(tmp.path()), 1);
    let _source = ShippingSource::new(Arc::clone(&db), options).unwrap();
    assert_eq!(seeds_in(tmp.path()), 0);
}

/// Found probing the port: pins of copy ids that never came back persisted. Copy ids are bounded: a new one
/// evicts the longest-silent copy that pins nothing, and is refused when all pin log; a copy silent past
/// `forget_after` is forgotten with its pin, so the log can be truncated again.
#[test]
fn copy_ids_are_bounded_and_silent_copies_are_forgotten() {
    let tmp = TempDir::new().unwrap();
    let options = SourceOptions::default().max_copies(3).forget_after(Duration::from_millis(600));
    let (_db, source) = active(tmp.path(), options);

    // Copies that only talk (keep nothing) make room for new ones.
    for _ in 0..10 {
        source.hello(hello(Guid::new_random(), 0)).unwrap();
    }
    assert_eq!(source.copies().len(), 3);

    // Copies that pin the log are kept; a new one beyond the limit is refused.
    let pinned: Vec<CopyId> = (0..3).map(|_| Guid::new_random()).collect();
    for id in &pinned {
        source.hello(hello(*id, 1)).unwrap();
    }
    assert_eq!(source.copies().iter().filter(|(_, pin)| pin.is_some()).count(), 3);
    let r = source.hello(hello(Guid::new_random(), 1));
    assert!(refused(&r), "{r:?}");

    // One keeps talking; the other two fall silent and are forgotten, pins and all.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(200));
        source.hello(hello(pinned[0], 1)).unwrap();
    }
    source.hello(hello(Guid::new_random(), 1)).unwrap();
    let known: Vec<CopyId> = source.copies().into_iter().map(|(id, _)| id).collect();
    assert_eq!(known.len(), 2, "{known:?}");
    assert!(known.contains(&pinned[0]) && !known.contains(&pinned[1]) && !known.contains(&pinned[2]));

    // A seed that starts while a copy is due to be forgotten forgets it from inside the snapshot's preparation:
    // that must not wait on the snapshots' own lock.
    std::thread::sleep(Duration::from_millis(700));
    let (done, waited) = std::sync::mpsc::channel();
    let seeding = Arc::clone(&source);
    std::thread::spawn(move || done.send(seeding.snapshot(snapshot_start(Guid::new_random())).is_ok()));
    assert_eq!(waited.recv_timeout(Duration::from_secs(20)), Ok(true), "the seed hung or failed");
    assert_eq!(source.copies().len(), 1, "only the seeding copy is left");
}
