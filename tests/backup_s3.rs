//! Backups into a real S3-compatible server (`--features s3`): moto's server mode, started by the test on a free
//! port of the loopback address. Full backup while deliveries go on, an incremental, restores to the end, to an
//! LSN and to a time — each restored digest equals the source's at that point — and what a cut-short upload
//! leaves (objects under an unlisted id, a lock) ignored by restore and cleaned up by the next backup.
//!
//! moto is found as `$MAILSTORE_MOTO_PYTHON -m moto.server`, else `target/moto-venv/bin/python` (what `.ci/run`
//! installs: `python3 -m venv target/moto-venv && target/moto-venv/bin/pip install 'moto[server]'`), else
//! `python3`. When none starts, each test prints why and returns: skipped, never run against a fake.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use mailstore::backup::{self, BackupError, BackupKind, Catalogue, FileKind, S3Config, StopAt, Target};
use mailstore::model::{Flags, FolderRole, MailEngine, MailOp};
use mailstore::{Engine, Error, Guid, Lsn, Options, Timestamp};

mod common;
use common::history::{deliver_n, now_micros, options, record, source, while_delivering};

const BUCKET: &str = "mail-backups";

/// A moto server of this test, killed (by its own process id) when dropped.
struct Moto {
    child: Child,
    port: u16,
    python: PathBuf,
}

impl Moto {
    /// Starts moto on a free port and waits until it answers; `None` (with a message) when it cannot start.
    fn start() -> Option<Moto> {
        let python = std::env::var_os("MAILSTORE_MOTO_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
            let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/moto-venv/bin/python");
            if venv.exists() { venv } else { PathBuf::from("python3") }
        });
        let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let spawned = Command::new(&python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                skip(&format!("{} could not be run: {e}", python.display()));
                return None;
            }
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                let _ = child.stderr.take().map(|mut s| s.read_to_string(&mut err));
                let last = err.lines().last().unwrap_or("").to_owned();
                skip(&format!("`{} -m moto.server` exited ({status}): {last}", python.display()));
                return None;
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let moto = Moto { child, port, python };
                let (status, body) = moto.http("PUT", &format!("/{BUCKET}"), b"");
                assert_eq!(status, 200, "creating the bucket: {body}");
                return Some(moto);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        skip("moto did not answer within 30 s");
        None
    }

    /// One plain HTTP/1.1 request to the server (moto checks no signature); its status and body.
    fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_owned());
        (status, body)
    }

    /// Stores `body` at `key`, through boto3 (which moto's server mode comes with): a signed request, as moto
    /// refuses an unsigned one that replaces an object.
    fn put(&self, key: &str, body: &[u8]) {
        let script = format!(
            "import boto3, sys\n\
             s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:{}', region_name='us-east-1', \
             aws_access_key_id='testing', aws_secret_access_key='testing')\n\
             s3.put_object(Bucket='{BUCKET}', Key=sys.argv[1], Body=sys.stdin.buffer.read())\n",
            self.port
        );
        let mut child = Command::new(&self.python).args(["-c", &script, key]).stdin(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(body).unwrap();
        assert!(child.wait().unwrap().success(), "PUT {key} through boto3");
    }

    /// The keys under `prefix`, sorted.
    fn keys(&self, prefix: &str) -> Vec<String> {
        let (status, body) = self.http("GET", &format!("/{BUCKET}?list-type=2&prefix={prefix}/"), b"");
        assert_eq!(status, 200, "{body}");
        let mut keys: Vec<String> =
            body.split("<Key>").skip(1).filter_map(|k| k.split_once("</Key>").map(|(k, _)| k.to_owned())).collect();
        keys.sort();
        keys
    }

    fn target(&self, prefix: &str) -> S3Config {
        S3Config::new(BUCKET, prefix)
            .endpoint(format!("http://127.0.0.1:{}", self.port))
            .allow_http(true)
            .region("us-east-1")
            .credentials("testing", "testing")
            .part_size(5 << 20)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn skip(why: &str) {
    println!(
        "SKIPPED: no S3-compatible server for this test: {why}. Install moto with \
         `python3 -m venv target/moto-venv && target/moto-venv/bin/pip install 'moto[server]'` \
         (or set MAILSTORE_MOTO_PYTHON to a python that has it)."
    );
}

fn restored_digest(dir: &Path) -> (Lsn, String) {
    let db: MailEngine = Engine::mount(dir, Options::default()).unwrap();
    let out = (db.status().applied_lsn, db.read(|s, txn| s.digest(txn)).unwrap());
    db.dismount().unwrap();
    out
}

/// A source with a mailbox: the engine, its mailbox and the digest history.
fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs.max(1e-9)
}

#[test]
fn full_and_incremental_backups_into_s3_restore_to_end_lsn_and_time() {
    let Some(moto) = Moto::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (db, mbx, history) = source(&tmp.path().join("source"));
    let target = moto.target("mail/db1");
    // One message of 6 MiB: its generation is larger than a part, so it goes up as a multipart upload.
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &mbx, FolderRole::Inbox)).unwrap().unwrap().id;
    let big = format!("Subject: big\r\n\r\n{}", "0123456789abcdef".repeat(6 << 16)).into_bytes();
    let lsn = db.commit(MailOp::append(mbx, inbox, big, Flags::empty(), vec![])).unwrap().lsn;
    record(&db, lsn, &history);

    // A full backup while another thread delivers.
    let done = Arc::new(AtomicU64::new(0));
    let (full, full_secs) = while_delivering(&db, mbx, &history, &done, || {
        let started = Instant::now();
        (backup::full_backup(&db, target.clone()).unwrap(), started.elapsed().as_secs_f64())
    });
    assert_eq!(full.kind, BackupKind::Full);
    assert!(full.applied_lsn >= 40 && full.last_lsn >= full.applied_lsn, "{full:?}");
    assert!(full.files.iter().any(|f| f.kind == FileKind::State));
    assert!(full.files.iter().any(|f| f.len > 5 << 20), "a file above the part size: {:?}", full.files);
    // Every file the catalogue names is an object under the prefix, and the lock is gone.
    let keys = moto.keys("mail/db1");
    for f in &full.files {
        assert!(keys.contains(&format!("mail/db1/{}", f.path)), "{} missing from {keys:?}", f.path);
    }
    assert!(keys.contains(&"mail/db1/catalogue.json".to_owned()) && !keys.iter().any(|k| k.ends_with("backup.lock")));

    deliver_n(&db, mbx, 100, &history, &done);
    let incremental = backup::incremental_backup(&db, Target::S3(target.clone())).unwrap();
    assert_eq!(incremental.applied_lsn, full.last_lsn);
    assert_eq!(incremental.parent.as_deref(), Some(full.id.as_str()));
    assert_eq!(db.status().backup_lsn, incremental.last_lsn + 1);
    // Records after the last backup are not in any restore.
    deliver_n(&db, mbx, 10, &history, &done);
    let catalogue = Catalogue::load_from(target.clone()).unwrap();
    assert_eq!(catalogue.backups.len(), 2);

    let history = history.lock().clone();
    let check = |stop: StopAt, expect_lsn: Lsn| {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("restored");
        let started = Instant::now();
        let report = backup::restore(target.clone(), &to, stop).unwrap();
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(report.stop_lsn, expect_lsn, "{stop:?}");
        // The download beside the restored directory is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let (applied, digest) = restored_digest(&to);
        assert_eq!(applied, expect_lsn, "{stop:?}");
        assert_eq!(digest, history[&expect_lsn].0, "{stop:?}: digest at LSN {expect_lsn}");
        (report.bytes, secs)
    };
    let (bytes, restore_secs) = check(StopAt::End, incremental.last_lsn);
    check(StopAt::Lsn(full.applied_lsn + 1), full.applied_lsn + 1);
    let mid = (full.last_lsn + incremental.last_lsn) / 2;
    check(StopAt::Lsn(mid), mid);
    let at = full.last_lsn + 7;
    check(StopAt::Time(Timestamp::from_micros(history[&at].1)), at);
    let full_bytes: u64 = full.files.iter().map(|f| f.len).sum();
    println!(
        "moto on loopback: full backup {:.1} MB in {full_secs:.2} s ({:.1} MB/s), restore {:.1} MB in \
         {restore_secs:.2} s ({:.1} MB/s)",
        full_bytes as f64 / 1e6,
        mb_per_s(full_bytes, full_secs),
        bytes as f64 / 1e6,
        mb_per_s(bytes, restore_secs)
    );
    Arc::try_unwrap(db).ok().unwrap().dismount().unwrap();
}

#[test]
fn a_cut_short_upload_is_ignored_by_restore_and_removed_by_the_next_backup() {
    let Some(moto) = Moto::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (db, mbx, history) = source(&tmp.path().join("source"));
    let target = moto.target("db2");
    let done = AtomicU64::new(0);
    deliver_n(&db, mbx, 20, &history, &done);
    let full = backup::full_backup(&db, target.clone()).unwrap();

    // What a backup killed before its catalogue entry leaves: objects of the next id (a state file, a log
    // generation, a torn one), and beside them objects that are not a backup's. And a lock it left behind.
    moto.put("db2/000002/state.mdb", b"half a snapshot");
    moto.put("db2/000002/logs/0000000000000009.log", b"torn");
    moto.put("db2/000003/notes.txt", b"mine");
    moto.put("db2/notes.txt", b"mine too");
    // A lock a killed backup left long ago.
    moto.put("db2/backup.lock", b"backup 00000000000000000000000000000000 since 1");

    // Restore reads only what the catalogue lists.
    let to = tmp.path().join("restored-1");
    let report = backup::restore(target.clone(), &to, StopAt::End).unwrap();
    assert_eq!(report.backups, vec![full.id.clone()]);
    let (applied, digest) = restored_digest(&to);
    assert_eq!((applied, &digest), (full.last_lsn, &history.lock()[&full.last_lsn].0));

    // A fresh lock is another backup's: refused with a message naming the lock.
    deliver_n(&db, mbx, 20, &history, &done);
    moto.put("db3/backup.lock", format!("backup {} since {}", Guid::new_random(), now_micros()).as_bytes());
    let locked = backup::full_backup(&db, moto.target("db3")).unwrap_err();
    assert!(matches!(locked, Error::Backup(BackupError::Locked { .. })), "{locked}");
    assert!(locked.to_string().contains("db3/backup.lock"), "{locked}");
    assert_eq!(moto.keys("db3"), vec!["db3/backup.lock".to_owned()], "a refused backup writes nothing");
    // The stale one is taken over.
    let incremental = backup::incremental_backup(&db, target.clone()).unwrap();
    assert_eq!(incremental.id, "000002", "the stray 000002 was removed, its id reused");
    let keys = moto.keys("db2");
    assert!(!keys.contains(&"db2/000002/state.mdb".to_owned()), "{keys:?}");
    assert!(!keys.iter().any(|k| k.ends_with("0000000000000009.log")), "{keys:?}");
    assert!(keys.contains(&"db2/000003/notes.txt".to_owned()) && keys.contains(&"db2/notes.txt".to_owned()));
    assert!(!keys.iter().any(|k| k.ends_with("backup.lock")), "{keys:?}");
    let another = backup::incremental_backup(&db, target.clone()).unwrap();
    assert_eq!(another.id, "000004", "000003 holds an object that is not a backup's");

    let to = tmp.path().join("restored-2");
    let report = backup::restore(target.clone(), &to, StopAt::End).unwrap();
    assert_eq!(report.backups, vec![full.id, incremental.id, another.id.clone()]);
    let (applied, digest) = restored_digest(&to);
    assert_eq!(applied, another.last_lsn);
    assert_eq!(digest, history.lock()[&applied].0);

    // A damaged object (its bytes replaced after the backup, same length) is found by its hash, and one of
    // another length by its length, before anything is written; the download is removed.
    let full_state = Catalogue::load_from(target.clone()).unwrap().backups[0]
        .files
        .iter()
        .find(|f| f.kind == FileKind::State)
        .cloned()
        .unwrap();
    for replacement in [vec![0u8; full_state.len as usize], b"not the snapshot".to_vec()] {
        moto.put(&format!("db2/{}", full_state.path), &replacement);
        let to = tmp.path().join("restored-3");
        let damaged = backup::restore(target.clone(), &to, StopAt::End).unwrap_err();
        assert!(matches!(damaged, Error::Corrupted { .. }), "{damaged}");
        assert!(!to.exists(), "nothing written");
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter(|n| n.contains(".download-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    Arc::try_unwrap(db).ok().unwrap().dismount().unwrap();
}

#[test]
fn an_s3_target_is_parsed_and_a_missing_bucket_is_a_typed_error() {
    let parsed = Target::parse("s3://bucket/some/prefix/").unwrap();
    let Target::S3(config) = &parsed else { panic!("{parsed:?}") };
    assert_eq!((config.bucket(), config.prefix()), ("bucket", "some/prefix"));
    assert_eq!(parsed.to_string(), "s3://bucket/some/prefix");
    assert!(matches!(Target::parse("s3:///x"), Err(Error::Backup(BackupError::BadTarget { .. }))));
    assert!(matches!(Target::parse("/var/backups").unwrap(), Target::Dir(_)));
    // The secret never shows in Debug.
    let shown = format!("{:?}", S3Config::new("b", "p").credentials("AKIA", "hunter2"));
    assert!(!shown.contains("hunter2"), "{shown}");

    let Some(moto) = Moto::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (db, _, _) = source(&tmp.path().join("source"));
    let missing = S3Config::new("no-such-bucket", "x")
        .endpoint(format!("http://127.0.0.1:{}", moto.port))
        .allow_http(true)
        .region("us-east-1")
        .credentials("testing", "testing");
    let e = backup::full_backup(&db, missing).unwrap_err();
    assert!(matches!(e, Error::Backup(BackupError::ObjectStore { .. })), "{e}");
    assert!(e.to_string().contains("check the endpoint"), "{e}");
    Arc::try_unwrap(db).ok().unwrap().dismount().unwrap();
}

/// `mailstore backup` / `restore` with an `s3://bucket/prefix` target, endpoint and credentials from the `AWS_*`
/// variables (a build with `--features cli,s3`).
#[cfg(feature = "cli")]
#[test]
fn the_cli_backs_up_into_and_restores_from_an_s3_target() {
    let Some(moto) = Moto::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("source");
    let (db, mbx, history) = source(&dir);
    let done = AtomicU64::new(0);
    deliver_n(&db, mbx, 30, &history, &done);
    let expected = db.read(|s, txn| s.digest(txn)).unwrap();
    Arc::try_unwrap(db).ok().unwrap().dismount().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mailstore"))
            .args(args)
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()
            .unwrap();
        let text =
            (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        assert!(out.status.success(), "mailstore {args:?}: {text:?}");
        text.0
    };
    let url = format!("s3://{BUCKET}/cli/db");
    let shown = run(&["backup", &dir.display().to_string(), "--to", &url]);
    assert!(shown.contains(&url), "{shown}");
    let to = tmp.path().join("restored");
    run(&["restore", "--from", &url, "--to", &to.display().to_string(), "--json"]);
    let (_, digest) = restored_digest(&to);
    assert_eq!(digest, expected);
}

/// `mailstore backup` into S3 killed (SIGKILL) while it uploads: the catalogue is untouched, the lock it left is
/// refused until stale, and the next backup removes its objects, takes the same id, and restores whole.
#[cfg(feature = "cli")]
#[test]
fn a_backup_killed_mid_upload_leaves_nothing_the_next_one_does_not_clean_up() {
    let Some(moto) = Moto::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("source");
    let (db, mbx, history) = source(&dir);
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &mbx, FolderRole::Inbox)).unwrap().unwrap().id;
    for i in 0..6 {
        let big = format!("Subject: big {i}\r\n\r\n{}", format!("{i:x}123456789abcdef").repeat(6 << 16)).into_bytes();
        db.commit(MailOp::append(mbx, inbox, big, Flags::empty(), vec![])).unwrap();
    }
    let done = AtomicU64::new(0);
    deliver_n(&db, mbx, 10, &history, &done);
    Arc::try_unwrap(db).ok().unwrap().dismount().unwrap();
    let url = format!("s3://{BUCKET}/killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailstore"))
        .args(["backup", &dir.display().to_string(), "--to", &url])
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", moto.port))
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the first object of its backup is stored (the catalogue is written last).
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) && child.try_wait().unwrap().is_none() {
        if moto.keys("killed").iter().any(|k| k.starts_with("killed/000001/")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let keys = moto.keys("killed");
    if keys.contains(&"killed/catalogue.json".to_owned()) {
        println!("not checked: the backup finished before it could be killed; nothing to check");
        return;
    }
    assert!(keys.contains(&"killed/backup.lock".to_owned()), "the killed backup held the lock: {keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("killed/000001/")), "{keys:?}");
    let target = moto.target("killed");
    let db: Arc<MailEngine> = Arc::new(Engine::mount(&dir, options()).unwrap());
    // Its lock is fresh: another backup's, as far as anyone can tell.
    let locked = backup::full_backup(&db, target.clone()).unwrap_err();
    assert!(matches!(locked, Error::Backup(BackupError::Locked { .. })), "{locked}");
    // Once stale, it is taken over; the killed backup's objects are removed and its id reused.
    let full = backup::full_backup(&db, target.clone().stale_lock_after(Duration::ZERO)).unwrap();
    assert_eq!(full.id, "000001");
    let keys = moto.keys("killed");
    let mut expected: Vec<String> = full.files.iter().map(|f| format!("killed/{}", f.path)).collect();
    expected.push("killed/catalogue.json".to_owned());
    expected.sort();
    assert_eq!(keys, expected, "only the new backup's objects and the catalogue");
    let digest = db.read(|s, txn| s.digest(txn)).unwrap();
    Arc::try_unwrap(db).ok().unwrap().dismount().unwrap();
    let to = tmp.path().join("restored");
    backup::restore(target, &to, StopAt::End).unwrap();
    assert_eq!(restored_digest(&to).1, digest);
}
