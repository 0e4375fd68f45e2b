//! The `mailstore` admin tool, run as a separate process against real databases: `status`, `logs`, `check`
//! and `recover` on healthy, corrupted, torn, incomplete and mounted databases.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

use mailstore::engine::list_generations;
use mailstore::heed::{self, CommitToken, DatabaseOpener, OnCommit, RwTxn, WithoutTls};
use mailstore::internals::engine::{CHECKPOINT_FILE, LOCK_FILE, LOGS_DIR, STATE_DIR};
use mailstore::kv::{KvEngine, KvOp};
use mailstore::{ApplyContext, ApplyError, Engine, Guid, LogRetention, Options, StateMachine};

/// Key-value pairs, in key order.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// What one run of the tool returned.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn mailstore(args: &[&str], dir: &Path) -> Run {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.push(dir.display().to_string());
    mailstore_args(&all.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Runs the tool with exactly `args`.
fn mailstore_args(args: &[&str]) -> Run {
    mailstore_env(args, &[])
}

/// Runs the tool with exactly `args` and the environment variables `envs`.
fn mailstore_env(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_mailstore")).args(args).envs(envs.iter().copied()).output().unwrap();
    let run = Run {
        // `None` only when killed by a signal, which is a failure too.
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    };
    eprintln!("$ mailstore {}\n{}{}[exit {}]", args.join(" "), run.stdout, run.stderr, run.code);
    run
}

fn key(t: usize, i: usize) -> Vec<u8> {
    format!("t{t}-k{i:04}").into_bytes()
}

fn value(t: usize, i: usize, len: usize) -> Vec<u8> {
    let mut v = format!("value {t}/{i} ").into_bytes();
    v.resize(len, b'.');
    v
}

/// Creates a database in `dir`, commits `per_thread` puts from each of `threads` threads, dismounts it, and
/// returns its GUID and every pair written.
fn create(dir: &Path, options: Options, threads: usize, per_thread: usize, len: usize) -> (Guid, Pairs) {
    let db = KvEngine::mount(dir, options).unwrap();
    let guid = db.guid();
    thread::scope(|s| {
        for t in 0..threads {
            let db = &db;
            s.spawn(move || {
                for i in 0..per_thread {
                    db.commit(KvOp::Put { key: key(t, i), value: value(t, i, len) }).unwrap();
                }
            });
        }
    });
    db.dismount().unwrap();
    let mut pairs: Vec<_> =
        (0..threads).flat_map(|t| (0..per_thread).map(move |i| (key(t, i), value(t, i, len)))).collect();
    pairs.sort();
    (guid, pairs)
}

/// Mounts the database and returns every pair it holds.
fn contents(dir: &Path) -> Pairs {
    let db = KvEngine::mount(dir, Options::default().create_if_missing(false)).unwrap();
    let pairs = db.read(|kv, txn| kv.dump(txn)).unwrap();
    db.dismount().unwrap();
    pairs
}

fn generation_file(dir: &Path, generation: u64) -> PathBuf {
    dir.join(LOGS_DIR).join(format!("{generation:016}.log"))
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
    file.sync_all().unwrap();
}

/// The value of the `label` line of `status` output (`label  value`).
fn field<'a>(stdout: &'a str, label: &str) -> Option<&'a str> {
    stdout.lines().find_map(|l| l.strip_prefix(label).filter(|rest| rest.starts_with("  ")).map(str::trim))
}

/// The rows of `logs` output, split into cells (the header excluded).
fn log_rows(stdout: &str) -> Vec<Vec<&str>> {
    let mut lines = stdout.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("GEN"), "no header line: {stdout}");
    lines.map(|l| l.split_whitespace().collect()).collect()
}

#[test]
fn healthy_database() {
    let dir = tempfile::tempdir().unwrap();
    let (guid, pairs) = create(dir.path(), Options::default(), 4, 25, 40);

    let check = mailstore(&["check"], dir.path());
    assert_eq!(check.code, 0, "{check:?}");
    assert!(check.stdout.contains("1 generation, 100 records"), "{check:?}");
    assert!(check.stdout.contains("result: healthy"), "{check:?}");
    assert!(check.stderr.is_empty(), "{check:?}");

    let status = mailstore(&["status"], dir.path());
    assert_eq!(status.code, 0, "{status:?}");
    assert_eq!(field(&status.stdout, "guid"), Some(guid.to_string().as_str()), "{status:?}");
    assert_eq!(field(&status.stdout, "shutdown"), Some("clean"), "{status:?}");
    assert_eq!(field(&status.stdout, "state machine"), Some("kv"), "{status:?}");
    assert_eq!(field(&status.stdout, "applied LSN"), Some("100"), "{status:?}");
    assert_eq!(field(&status.stdout, "log head"), Some("generation 1, LSN 100"), "{status:?}");

    let logs = mailstore(&["logs"], dir.path());
    assert_eq!(logs.code, 0, "{logs:?}");
    let rows = log_rows(&logs.stdout);
    assert_eq!(rows.len(), 1, "{logs:?}");
    // GEN EPOCH FIRST LAST RECORDS BYTES CHECKSUM CHAIN PROBLEM
    assert_eq!(&rows[0][..5], ["1", "1", "1", "100", "100"], "{logs:?}");
    let gens = list_generations(dir.path()).unwrap();
    assert_eq!(rows[0][5], gens[0].bytes.to_string());
    assert_eq!(rows[0][6], format!("{:08x}", gens[0].checksum));
    assert_eq!(&rows[0][7..], ["head", "-"], "{logs:?}");

    // Inspection changed nothing.
    assert_eq!(contents(dir.path()), pairs);
}

#[test]
fn flipped_byte_is_named_by_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (_, pairs) = create(dir.path(), Options::default(), 3, 20, 40);
    let file = generation_file(dir.path(), 1);
    // The first record's frame starts right after the 128-byte header; its payload after the 16-byte frame
    // header. Offset 148 is inside that payload.
    let mut byte = [0u8; 1];
    let f = OpenOptions::new().read(true).open(&file).unwrap();
    f.read_exact_at(&mut byte, 128 + 20).unwrap();
    write_at(&file, 128 + 20, &[byte[0] ^ 0x40]);

    let check = mailstore(&["check"], dir.path());
    assert_eq!(check.code, 1, "{check:?}");
    let problem = check.stdout.lines().find(|l| l.contains("0000000000000001.log")).unwrap_or_else(|| {
        panic!("no problem names the generation: {check:?}");
    });
    assert!(problem.contains("at offset 128"), "{check:?}");
    assert!(problem.contains("checksum"), "{check:?}");
    assert!(!check.stdout.contains("torn tail"), "damage followed by valid records is not a torn tail: {check:?}");
    assert!(check.stdout.contains("result: DAMAGED"), "{check:?}");

    let logs = mailstore(&["logs"], dir.path());
    assert_eq!(logs.code, 0, "{logs:?}");
    let rows = log_rows(&logs.stdout);
    assert_eq!(&rows[0][..5], ["1", "1", "1", "0", "0"], "no record of generation 1 is valid: {logs:?}");

    // Corruption inside the log is not something recovery may repair: it refuses, changing nothing.
    let recover = mailstore(&["recover"], dir.path());
    assert_eq!(recover.code, 1, "{recover:?}");
    assert!(recover.stderr.starts_with("error: "), "{recover:?}");
    assert!(recover.stderr.contains("0000000000000001.log is corrupted at offset 128"), "{recover:?}");
    let status = mailstore(&["status"], dir.path());
    assert_eq!(status.code, 1, "{status:?}");
    assert_eq!(mailstore(&["check"], dir.path()).stdout, check.stdout);

    // Put the byte back: the database is whole again.
    write_at(&file, 128 + 20, &byte);
    assert_eq!(mailstore(&["check"], dir.path()).code, 0);
    assert_eq!(contents(dir.path()), pairs);
}

#[test]
fn torn_tail_is_reported_then_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let (_, pairs) = create(dir.path(), Options::default(), 4, 30, 60);
    let gens = list_generations(dir.path()).unwrap();
    let last = gens.last().unwrap();
    let end = last.bytes;
    // A partial frame right after the last valid record: length 100, some checksum bytes, then nothing.
    let mut torn = 100u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0x01, 0x02]);
    write_at(&last.path, end, &torn);

    let check = mailstore(&["check"], dir.path());
    assert_eq!(check.code, 1, "{check:?}");
    let problem = check.stdout.lines().find(|l| l.contains("torn tail")).unwrap_or_else(|| {
        panic!("no torn tail reported: {check:?}");
    });
    assert!(problem.contains("0000000000000001.log"), "{check:?}");
    assert!(problem.contains(&format!("at offset {end}")), "{check:?}");

    // A torn tail does not keep status from reading the database.
    let status = mailstore(&["status"], dir.path());
    assert_eq!(status.code, 0, "{status:?}");
    assert_eq!(field(&status.stdout, "log head"), Some("generation 1, LSN 120"), "{status:?}");

    let recover = mailstore(&["recover"], dir.path());
    assert_eq!(recover.code, 0, "{recover:?}");
    let truncated = field(&recover.stdout, "  truncated tail").unwrap_or_else(|| panic!("{recover:?}"));
    assert!(truncated.contains("0000000000000001.log"), "{recover:?}");
    assert!(truncated.contains(&format!("at offset {end}:")), "{recover:?}");
    assert!(truncated.contains(&format!("{} bytes discarded", torn.len())), "{recover:?}");
    assert_eq!(field(&recover.stdout, "  applied LSN after"), Some("120"), "{recover:?}");
    assert_eq!(field(&recover.stdout, "  previous shutdown"), Some("clean"), "{recover:?}");
    assert!(recover.stdout.contains("dismounted cleanly"), "{recover:?}");

    let check = mailstore(&["check"], dir.path());
    assert_eq!(check.code, 0, "{check:?}");
    assert!(check.stdout.contains("120 records"), "{check:?}");
    // A second recover finds nothing to do.
    let again = mailstore(&["recover"], dir.path());
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(field(&again.stdout, "  truncated tail"), Some("none"), "{again:?}");
    assert_eq!(field(&again.stdout, "  records replayed"), Some("0"), "{again:?}");
    assert_eq!(contents(dir.path()), pairs);
}

/// Copies what a crash would leave: the state store as it was at mount (before any commit was applied to it),
/// and the checkpoint and log as they are after the commits (synced: every commit returned).
#[test]
fn crash_image_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let image = tempfile::tempdir().unwrap();
    let db = KvEngine::mount(dir.path(), Options::default()).unwrap();
    std::fs::create_dir_all(image.path().join(STATE_DIR)).unwrap();
    // No commit is running: the state store's file is quiescent.
    std::fs::copy(dir.path().join(STATE_DIR).join("data.mdb"), image.path().join(STATE_DIR).join("data.mdb")).unwrap();
    for i in 0..25 {
        db.commit(KvOp::Put { key: key(0, i), value: value(0, i, 30) }).unwrap();
    }
    std::fs::create_dir_all(image.path().join(LOGS_DIR)).unwrap();
    std::fs::copy(generation_file(dir.path(), 1), generation_file(image.path(), 1)).unwrap();
    std::fs::copy(dir.path().join(CHECKPOINT_FILE), image.path().join(CHECKPOINT_FILE)).unwrap();
    db.dismount().unwrap();

    let status = mailstore(&["status"], image.path());
    assert_eq!(status.code, 0, "{status:?}");
    assert_eq!(field(&status.stdout, "shutdown"), Some("dirty (mounted, or crashed while mounted)"), "{status:?}");
    assert_eq!(field(&status.stdout, "applied LSN"), Some("0"), "{status:?}");
    assert_eq!(field(&status.stdout, "log head"), Some("generation 1, LSN 25"), "{status:?}");
    assert_eq!(mailstore(&["check"], image.path()).code, 0, "a dirty database is not a damaged one");

    let recover = mailstore(&["recover"], image.path());
    assert_eq!(recover.code, 0, "{recover:?}");
    assert_eq!(field(&recover.stdout, "  previous shutdown"), Some("dirty"), "{recover:?}");
    assert_eq!(field(&recover.stdout, "  applied LSN before"), Some("0"), "{recover:?}");
    assert_eq!(field(&recover.stdout, "  applied LSN after"), Some("25"), "{recover:?}");
    assert_eq!(field(&recover.stdout, "  records replayed"), Some("25"), "{recover:?}");
    assert_eq!(field(&recover.stdout, "  truncated tail"), Some("none"), "{recover:?}");

    let status = mailstore(&["status"], image.path());
    assert_eq!(field(&status.stdout, "shutdown"), Some("clean"), "{status:?}");
    assert_eq!(field(&status.stdout, "applied LSN"), Some("25"), "{status:?}");
    assert_eq!(contents(image.path()), contents(dir.path()));
}

#[test]
fn mounted_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    create(dir.path(), Options::default(), 2, 5, 10);
    let db = KvEngine::mount(dir.path(), Options::default()).unwrap();
    for command in ["check", "status", "logs", "recover"] {
        let run = mailstore(&[command], dir.path());
        assert_eq!(run.code, 2, "{command}: {run:?}");
        assert!(run.stdout.is_empty(), "{command}: {run:?}");
        assert!(run.stderr.starts_with("error: "), "{command}: {run:?}");
        assert!(run.stderr.contains("already mounted"), "{command}: {run:?}");
    }
    // The tool did not disturb the mounted engine.
    db.commit(KvOp::Put { key: b"after".to_vec(), value: b"1".to_vec() }).unwrap();
    db.dismount().unwrap();
    assert_eq!(mailstore(&["check"], dir.path()).code, 0);
}

#[test]
fn missing_middle_generation_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // Keep every generation (nothing is truncated until a backup completes) so several stay on disk.
    let options = Options::default().log_target_size(8 << 10).retention(LogRetention::UntilBackup);
    create(dir.path(), options, 3, 60, 200);
    let logs = mailstore(&["logs"], dir.path());
    assert_eq!(logs.code, 0, "{logs:?}");
    let rows = log_rows(&logs.stdout);
    assert!(rows.len() >= 4, "expected several generations: {logs:?}");
    let numbers: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(numbers[..4], ["1", "2", "3", "4"], "{logs:?}");
    assert!(rows[..rows.len() - 1].iter().all(|r| r[7] == "ok"), "{logs:?}");
    assert_eq!(mailstore(&["check"], dir.path()).code, 0);

    // `recover` deletes no generation that a backup has not copied, whatever the mount options default to.
    let recover = mailstore(&["recover"], dir.path());
    assert_eq!(recover.code, 0, "{recover:?}");
    assert_eq!(mailstore(&["logs"], dir.path()).stdout, logs.stdout, "recover changed the generations");

    std::fs::remove_file(generation_file(dir.path(), 2)).unwrap();
    let check = mailstore(&["check"], dir.path());
    assert_eq!(check.code, 1, "{check:?}");
    let problem = check.stdout.lines().find(|l| l.contains("missing generation 2")).unwrap_or_else(|| {
        panic!("the missing generation is not named: {check:?}");
    });
    assert!(problem.contains("0000000000000002.log"), "{check:?}");

    let logs = mailstore(&["logs"], dir.path());
    assert_eq!(logs.code, 0, "{logs:?}");
    let rows = log_rows(&logs.stdout);
    assert_eq!((rows[0][0], rows[0][7]), ("1", "gap"), "{logs:?}");
    assert_eq!(rows[1][0], "3", "{logs:?}");
}

#[test]
fn not_a_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["check", "status", "logs", "recover"] {
        let run = mailstore(&[command], dir.path());
        assert_eq!(run.code, 2, "{command}: {run:?}");
        assert!(run.stderr.contains("is not a mailstore database"), "{command}: {run:?}");
        let missing = mailstore(&[command], &dir.path().join("nowhere"));
        assert_eq!(missing.code, 2, "{command}: {missing:?}");
        assert!(missing.stderr.contains("no such directory"), "{command}: {missing:?}");
    }
    // Neither a lock file nor a database was left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!(!dir.path().join(LOCK_FILE).exists());
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(mailstore(&["frobnicate"], dir.path()).code, 2);
    assert_eq!(mailstore(&["check", "extra"], dir.path()).code, 2);
}

/// A state machine this build of the tool does not know.
struct Other;

struct OtherDatabases;

impl OnCommit for OtherDatabases {
    type Committed = Other;
    fn on_commit(self, _token: &CommitToken) -> Other {
        Other
    }
}

impl StateMachine for Other {
    const NAME: &'static str = "other";
    type Op = u8;
    type Output = ();
    type Rejection = mailstore::Error;
    type Databases<'e> = OtherDatabases;

    fn create_databases<'e>(
        _opener: &DatabaseOpener<'e, WithoutTls>,
        _txn: &mut RwTxn<'e>,
        _attachments: &mailstore::Attachments,
    ) -> mailstore::Result<OtherDatabases> {
        Ok(OtherDatabases)
    }

    fn open_databases<'e>(
        _opener: &DatabaseOpener<'e, WithoutTls>,
        _txn: &heed::RoTxn<'e>,
        _attachments: &mailstore::Attachments,
    ) -> mailstore::Result<Option<OtherDatabases>> {
        Ok(Some(OtherDatabases))
    }

    fn apply(&self, _txn: &mut RwTxn<'_>, _ctx: ApplyContext<'_>, _op: u8) -> Result<(), ApplyError> {
        Ok(())
    }
}

#[test]
fn unknown_state_machine_is_not_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let db: Engine<Other> = Engine::mount(dir.path(), Options::default()).unwrap();
    db.commit(7).unwrap();
    db.dismount().unwrap();

    let status = mailstore(&["status"], dir.path());
    assert_eq!(status.code, 0, "{status:?}");
    assert_eq!(field(&status.stdout, "state machine"), Some("other"), "{status:?}");
    assert_eq!(mailstore(&["check"], dir.path()).code, 0);

    let recover = mailstore(&["recover"], dir.path());
    assert_eq!(recover.code, 2, "{recover:?}");
    assert!(recover.stderr.contains("state machine \"other\""), "{recover:?}");
    assert!(recover.stderr.contains("does not know"), "{recover:?}");
    // Nothing was mounted: the database is still clean and mountable by its own machine.
    assert_eq!(field(&mailstore(&["status"], dir.path()).stdout, "shutdown"), Some("clean"));
    let db: Engine<Other> = Engine::mount(dir.path(), Options::default()).unwrap();
    assert!(db.recovery_report().was_clean);
    db.dismount().unwrap();
}

/// A store root works too: every database in it is covered, and the exit code is the worst of theirs.
#[test]
fn store_root_covers_every_database() {
    let dir = tempfile::tempdir().unwrap();
    let store: mailstore::Store<mailstore::kv::Kv> = mailstore::Store::open(dir.path(), Options::default()).unwrap();
    for name in ["alpha", "beta"] {
        let db = store.create_database(name).unwrap();
        db.commit(KvOp::Put { key: name.as_bytes().to_vec(), value: b"v".to_vec() }).unwrap();
    }
    store.close().unwrap();

    let check = mailstore(&["check"], dir.path());
    assert_eq!(check.code, 0, "{check:?}");
    assert!(check.stdout.contains("== database alpha") && check.stdout.contains("== database beta"), "{check:?}");
    let status = mailstore(&["status"], dir.path());
    assert_eq!(status.code, 0, "{status:?}");
    assert_eq!(status.stdout.matches("shutdown").count(), 2, "{status:?}");

    // Damage one database: the store's check exits 1 and names that database's file.
    let gen1 = dir.path().join("databases/beta").join(LOGS_DIR).join("0000000000000001.log");
    write_at(&gen1, 128 + 20, &[0xFF]);
    let check = mailstore(&["check"], dir.path());
    assert_eq!(check.code, 1, "{check:?}");
    assert!(check.stdout.contains("databases/beta/logs/0000000000000001.log"), "{check:?}");
    let recover = mailstore(&["recover"], dir.path());
    assert_eq!(recover.code, 1, "a damaged record the state store already applied is refused: {recover:?}");
    assert!(recover.stdout.contains("== database alpha"));
}

/// `mailboxes` and `folders` list a mailbox database; `check` covers its counters; all of it through a store.
#[test]
fn mailbox_listings() {
    use mailstore::model::{Flags, FolderRole, MailOp, MailStore, MailboxKind};
    let dir = tempfile::tempdir().unwrap();
    let store: mailstore::Store<MailStore> = mailstore::Store::open(dir.path(), Options::default()).unwrap();
    let db = store.create_database("mdb1").unwrap();
    let op = MailOp::create_mailbox("ivy@example.com", "Ivy", MailboxKind::User);
    let MailOp::CreateMailbox { guid, .. } = op else { unreachable!() };
    db.commit(op).unwrap();
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &guid, FolderRole::Inbox)).unwrap().unwrap().id;
    let raw = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n".to_vec();
    db.commit(MailOp::append(guid, inbox, raw, Flags::empty(), vec![])).unwrap();
    drop(db);
    store.close().unwrap();

    let dbdir = dir.path().join("databases/mdb1");
    let list = mailstore(&["mailboxes"], &dbdir);
    assert_eq!(list.code, 0, "{list:?}");
    assert!(list.stdout.contains("ivy@example.com") && list.stdout.contains(&guid.to_string()), "{list:?}");
    let folders = mailstore_args(&["folders", &dbdir.display().to_string(), "ivy@example.com"]);
    assert_eq!(folders.code, 0, "{folders:?}");
    let inbox_line = folders.stdout.lines().find(|l| l.trim_start().starts_with("Inbox")).unwrap();
    assert!(inbox_line.split_whitespace().rev().nth(1) == Some("1"), "one unread in the Inbox: {inbox_line}");
    assert!(folders.stdout.contains("\\Sent") && folders.stdout.contains("Recoverable Items"), "{folders:?}");
    // Through the store root: the database holding the mailbox is found.
    let via_store = mailstore_args(&["folders", &dir.path().display().to_string(), &guid.to_string()]);
    assert_eq!(via_store.code, 0, "{via_store:?}");
    let missing = mailstore_args(&["folders", &dbdir.display().to_string(), "nobody@example.com"]);
    assert_eq!(missing.code, 2, "{missing:?}");
    let check = mailstore(&["check"], dir.path());
    assert_eq!(check.code, 0, "{check:?}");
    let recover = mailstore(&["recover"], dir.path());
    assert_eq!(recover.code, 0, "{recover:?}");
}

#[test]
fn seed_copy_status_and_activate_over_tcp() {
    use mailstore::replication::{ShippingKey, ShippingSource, SourceOptions, TcpShippingServer};
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let db = Arc::new(KvEngine::mount(tmp.path().join("active"), Options::default().log_target_size(8192)).unwrap());
    for i in 0..200 {
        db.commit(KvOp::Put { key: key(0, i), value: value(0, i, 64) }).unwrap();
    }
    let source = Arc::new(ShippingSource::new(Arc::clone(&db), SourceOptions::default()).unwrap());
    let server = TcpShippingServer::bind("127.0.0.1:0", source, ShippingKey::from_passphrase("cli test")).unwrap();
    let addr = server.local_addr().to_string();
    let copy = tmp.path().join("copy");
    let copy_arg = copy.display().to_string();
    let run = |args: &[&str], key: &str| mailstore_env(args, &[("MAILSTORE_SHIPPING_KEY", key)]);
    // A wrong key is refused.
    let refused = run(&["seed", &copy_arg, "--source", &addr, "--machine", "kv"], "wrong");
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("authentication"), "{refused:?}");

    let seeded = run(&["seed", &copy_arg, "--source", &addr, "--machine", "kv"], "cli test");
    assert_eq!(seeded.code, 0, "{seeded:?}");
    assert_eq!(field(&seeded.stdout, "last replayed LSN"), Some("200"));

    // The active goes on; the offline copy measures its queue against it.
    for i in 0..200 {
        db.commit(KvOp::Put { key: key(1, i), value: value(1, i, 64) }).unwrap();
    }
    let status = run(&["copy-status", &copy_arg, "--source", &addr], "cli test");
    assert_eq!(status.code, 0, "{status:?}");
    assert_eq!(field(&status.stdout, "state"), Some("Dismounted"));
    let queue: u64 = field(&status.stdout, "copy queue length").unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(queue > 0, "{status:?}");

    // Activation with the active still reachable copies what is left first; Lossless then holds.
    let activated = run(&["activate", &copy_arg, "--dial", "lossless", "--source", &addr], "cli test");
    assert_eq!(activated.code, 0, "{activated:?}");
    assert!(activated.stdout.contains("epoch 2"), "{activated:?}");
    drop(server);
    let expected = db.read(|kv, txn| kv.dump(txn)).unwrap();
    let new = KvEngine::mount(&copy, Options::default().create_if_missing(false)).unwrap();
    assert_eq!(new.read(|kv, txn| kv.dump(txn)).unwrap(), expected);
    assert_eq!(new.status().epoch, 2);
}

#[test]
fn recover_rebuilds_a_lost_checkpoint_then_space_and_compact() {
    let dir = tempfile::tempdir().unwrap();
    let (_, pairs) = create(dir.path(), Options::default(), 2, 300, 200);
    std::fs::remove_file(dir.path().join(CHECKPOINT_FILE)).unwrap();
    let status = mailstore(&["status"], dir.path());
    assert_ne!(status.code, 0, "{status:?}");
    let recover = mailstore(&["recover"], dir.path());
    assert_eq!(recover.code, 0, "{recover:?}");
    assert!(recover.stdout.contains("checkpoint file was missing: rebuilt"), "{recover:?}");
    assert_eq!(mailstore(&["check"], dir.path()).code, 0);
    assert_eq!(contents(dir.path()), pairs);

    let space = mailstore(&["space", "--json"], dir.path());
    assert_eq!(space.code, 0, "{space:?}");
    let report: serde_json::Value = serde_json::from_str(space.stdout.trim()).unwrap();
    let state_file = report["state_file_bytes"].as_u64().unwrap();
    assert!(state_file > 0 && report["state_used_bytes"].as_u64().unwrap() <= state_file, "{report}");
    assert!(report["log_bytes"].as_u64().unwrap() > 0, "{report}");
    let text = mailstore(&["space"], dir.path());
    assert!(field(&text.stdout, "reclaimable").is_some(), "{text:?}");

    let compact = mailstore(&["compact", "--json"], dir.path());
    assert_eq!(compact.code, 0, "{compact:?}");
    let report: serde_json::Value = serde_json::from_str(compact.stdout.trim()).unwrap();
    assert_eq!(report["after"]["free_bytes"].as_u64(), Some(0), "{report}");
    assert!(report["after"]["state_file_bytes"].as_u64().unwrap() <= state_file, "{report}");
    assert_eq!(mailstore(&["check"], dir.path()).code, 0);
    assert_eq!(contents(dir.path()), pairs);
}

#[test]
fn repair_replaces_a_destroyed_state_from_a_healthy_copy() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().retention(LogRetention::UntilBackup);
    let (_, pairs) = create(dir.path(), options.clone(), 1, 200, 100);
    let healthy = tempfile::tempdir().unwrap();
    let copied = Command::new("cp").arg("-a").arg(format!("{}/.", dir.path().display())).arg(healthy.path()).status();
    assert!(copied.unwrap().success());
    let db = KvEngine::mount(dir.path(), options.create_if_missing(false)).unwrap();
    for i in 0..100 {
        db.commit(KvOp::Put { key: key(9, i), value: value(9, i, 50) }).unwrap();
    }
    db.dismount().unwrap();
    let data = dir.path().join(STATE_DIR).join("data.mdb");
    write_at(&data, 0, &[0xFF; 8192]);
    assert_ne!(mailstore(&["check"], dir.path()).code, 0);

    let path = dir.path().display().to_string();
    let from = healthy.path().display().to_string();
    let repair = mailstore_args(&["repair", &path, "--from", &from, "--json"]);
    assert_eq!(repair.code, 0, "{repair:?}");
    let report: serde_json::Value = serde_json::from_str(repair.stdout.trim()).unwrap();
    assert_eq!(report["replayed"].as_u64(), Some(100), "{report}");
    assert!(dir.path().join("state.damaged-1").join("data.mdb").exists());
    assert_eq!(mailstore(&["check"], dir.path()).code, 0);
    let mut expected = pairs;
    expected.extend((0..100).map(|i| (key(9, i), value(9, i, 50))));
    expected.sort();
    assert_eq!(contents(dir.path()), expected);
    // A copy of another database is refused (a foreign database counts as damage: exit 1).
    let other = tempfile::tempdir().unwrap();
    create(other.path(), Options::default(), 1, 1, 10);
    let foreign = mailstore_args(&["repair", &path, "--from", &other.path().display().to_string()]);
    assert_eq!(foreign.code, 1, "{foreign:?}");
}

#[test]
fn recover_mailbox_writes_a_mailbox_of_another_database_into_a_folder() {
    use mailstore::model::{Flags, FolderRole, MailEngine, MailOp, MailboxKind};
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let db: MailEngine = Engine::mount(&live, Options::default()).unwrap();
    let op = MailOp::create_mailbox("ivy@example.com", "Ivy", MailboxKind::User);
    let MailOp::CreateMailbox { guid, .. } = op else { unreachable!() };
    db.commit(op).unwrap();
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &guid, FolderRole::Inbox)).unwrap().unwrap().id;
    for n in 0..3 {
        let raw = format!("From: a@example.com\r\nSubject: hi {n}\r\n\r\nbody\r\n").into_bytes();
        db.commit(MailOp::append(guid, inbox, raw, Flags::SEEN, vec![])).unwrap();
    }
    db.dismount().unwrap();
    let restored = dir.path().join("restored");
    assert!(Command::new("cp").arg("-a").arg(&live).arg(&restored).status().unwrap().success());

    let path = live.display().to_string();
    let run = mailstore_args(&[
        "recover-mailbox",
        &path,
        "--from",
        &restored.display().to_string(),
        "--mailbox",
        "ivy@example.com",
        "--folder",
        "Restored 2026-12-03",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(field(&run.stdout, "  items"), Some("3"), "{run:?}");
    let folders = mailstore_args(&["folders", &path, "ivy@example.com"]);
    assert!(folders.stdout.contains("Restored 2026-12-03"), "{folders:?}");
    assert_eq!(mailstore(&["check"], &live).code, 0);
    let missing = mailstore_args(&[
        "recover-mailbox",
        &path,
        "--from",
        &restored.display().to_string(),
        "--mailbox",
        "no@x.test",
    ]);
    assert_eq!(missing.code, 2, "{missing:?}");
}

#[test]
fn backup_incremental_and_restore_to_an_lsn_and_to_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, target) = (tmp.path().join("db"), tmp.path().join("backups"));
    let options = || Options::default().log_target_size(8 << 10);
    let (_, first) = create(&dir, options(), 2, 40, 100);
    let arg = |p: &Path| p.display().to_string();
    let full = mailstore_args(&["backup", &arg(&dir), "--to", &arg(&target), "--json"]);
    assert_eq!(full.code, 0, "{full:?}");
    let entry: serde_json::Value = serde_json::from_str(&full.stdout).unwrap();
    assert_eq!(entry["kind"], "Full");
    let full_last = entry["last_lsn"].as_u64().unwrap();
    // More writes, then an incremental (human-readable output).
    let db = KvEngine::mount(&dir, options()).unwrap();
    for i in 0..30 {
        db.commit(KvOp::Put { key: key(9, i), value: value(9, i, 50) }).unwrap();
    }
    let all = db.read(|kv, txn| kv.dump(txn)).unwrap();
    db.dismount().unwrap();
    let incremental = mailstore_args(&["backup", &arg(&dir), "--to", &arg(&target), "--incremental"]);
    assert_eq!(incremental.code, 0, "{incremental:?}");
    let unindented: String = incremental.stdout.lines().map(|l| format!("{}\n", l.trim_start())).collect();
    assert_eq!(field(&unindented, "kind"), Some("Incremental"));

    let at_full = tmp.path().join("at-full");
    let run = mailstore_args(&[
        "restore",
        "--from",
        &arg(&target),
        "--to",
        &arg(&at_full),
        "--lsn",
        &full_last.to_string(),
        "--json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["stop_lsn"].as_u64(), Some(full_last));
    assert_eq!(contents(&at_full), first);
    let at_end = tmp.path().join("at-end");
    let run = mailstore_args(&["restore", "--from", &arg(&target), "--to", &arg(&at_end)]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(contents(&at_end), all);
    // Never over existing data; a bad time is a usage error.
    let again = mailstore_args(&["restore", "--from", &arg(&target), "--to", &arg(&at_end)]);
    assert_eq!(again.code, 2, "{again:?}");
    let bad =
        mailstore_args(&["restore", "--from", &arg(&target), "--to", &arg(&tmp.path().join("x")), "--time", "noon"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("RFC 3339"), "{bad:?}");
}

/// A build without the `s3` feature refuses an `s3://` target, saying how to get one, and touches nothing.
#[cfg(not(feature = "s3"))]
#[test]
fn an_s3_target_needs_the_s3_feature() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    create(&dir, Options::default(), 1, 5, 10);
    let run = mailstore_args(&["backup", &dir.display().to_string(), "--to", "s3://bucket/prefix"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("`s3` feature"), "{run:?}");
    let to = tmp.path().join("restored");
    let run = mailstore_args(&["restore", "--from", "s3://bucket/prefix", "--to", &to.display().to_string()]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("`s3` feature") && !to.exists(), "{run:?}");
}
