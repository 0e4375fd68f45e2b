//! The damage campaign: random bit flips, byte overwrites and truncations of every file of a stopped mail
//! database. Each trial runs the check and a mount in a child process (this test binary, re-executed in child
//! mode), so a signal (`SIGBUS` from a mapped file) or a panic is seen as such; the parent classifies the outcome.
//! No trial may crash, and none may end in a silently wrong state: a mount that succeeds with a state other
//! than the original while neither the mount nor the check said anything.
//!
//! `MAILSTORE_DAMAGE_TRIALS` sets the number of trials (short by default), `MAILSTORE_DAMAGE_SEED` the seed (printed
//! at the start, so a failure replays), `MAILSTORE_DAMAGE_JOBS` how many children run at once.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Rng, copy_dir};
use mailstore::internals::engine::{LOGS_DIR, SEGMENTS_DIR, STATE_DIR, lmdb_file};
use mailstore::model::Fai;
use mailstore::model::{FlagAction, Flags, FolderId, FolderRole, MailEngine, MailOp, MailOutput, MailStore};
use mailstore::{Engine, Guid, Options};

const CHILD_ENV: &str = "MAILSTORE_DAMAGE_CHILD";

fn options() -> Options {
    Options::default().log_target_size(64 << 10).checkpoint_depth(1 << 30).create_if_missing(false)
}

fn message(n: usize, lines: usize) -> Vec<u8> {
    let body: String = (0..lines).map(|l| format!("line {l} of message {n}: words to fill a body\r\n")).collect();
    format!(
        "From: Alice <alice@example.com>\r\nTo: Bob <bob@example.com>\r\nSubject: message {n}\r\n\
         Message-ID: <m{n}@example.com>\r\n\r\n{body}"
    )
    .into_bytes()
}

fn mailbox(db: &MailEngine, address: &str) -> (Guid, FolderId) {
    let op = MailOp::create_mailbox(address, address, mailstore::model::MailboxKind::User);
    let MailOp::CreateMailbox { guid, .. } = op else { unreachable!() };
    db.commit(op).unwrap();
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &guid, FolderRole::Inbox)).unwrap().unwrap().id;
    (guid, inbox)
}

fn append(db: &MailEngine, mbx: Guid, folder: FolderId, raw: Vec<u8>) -> u32 {
    match db.commit(MailOp::append(mbx, folder, raw, Flags::empty(), vec![])).unwrap().output {
        MailOutput::Appended { uid, .. } => uid,
        other => panic!("{other:?}"),
    }
}

fn expunge(db: &MailEngine, mbx: Guid, folder: FolderId, uids: Vec<u32>) {
    db.commit(MailOp::store_flags(mbx, folder, uids.clone(), FlagAction::Add, Flags::DELETED)).unwrap();
    db.commit(MailOp::expunge(mbx, folder, Some(uids))).unwrap();
}

/// A stopped database with two mailboxes, a folder, bodies of several sizes in `segments/` and in several log
/// generations, some expunged, flags, and a checkpoint below the log's head (the last dismount's).
fn build(dir: &Path) {
    let db: MailEngine = Engine::mount(dir, options().create_if_missing(true)).unwrap();
    let (alice, inbox) = mailbox(&db, "alice@example.com");
    let (bob, bob_inbox) = mailbox(&db, "bob@example.com");
    let mut uids = Vec::new();
    for n in 0..30 {
        uids.push(append(&db, alice, inbox, message(n, 20 + n * 7)));
    }
    expunge(&db, alice, inbox, uids[..10].to_vec());
    db.commit(MailOp::store_flags(alice, inbox, uids[10..15].to_vec(), FlagAction::Add, Flags::SEEN)).unwrap();
    db.checkpoint().unwrap();
    db.dismount().unwrap();
    // From here on the log keeps every generation (no backup is ever taken): the log holds several.
    let db: MailEngine = Engine::mount(dir, options().retention(mailstore::LogRetention::UntilBackup)).unwrap();
    let projects = match db.commit(MailOp::create_folder(alice, inbox, "Projects")).unwrap().output {
        MailOutput::FolderCreated { id, .. } => id,
        other => panic!("{other:?}"),
    };
    for n in 30..70 {
        append(&db, alice, projects, message(n, 50 + n));
        append(&db, bob, bob_inbox, message(n + 100, 10));
    }
    // A body larger than a page, to have overflow pages in the state store if values grow so large.
    append(&db, bob, bob_inbox, message(1000, 2000));
    db.dismount().unwrap();
}

/// What a mount shows: the logical digest and the bytes of every body (hashed).
fn fingerprint(db: &MailEngine) -> mailstore::Result<String> {
    db.read(|s, txn| {
        let mut bodies = blake3_free_hash::Hasher::default();
        for mbx in s.mailboxes(txn)? {
            for folder in s.folders(txn, &mbx.guid)? {
                for item in s.items_by_uid(txn, &mbx.guid, folder.id, 1, usize::MAX, Fai::Include)? {
                    let raw = s.raw(txn, &mbx.guid, item.id)?;
                    bodies.update(&raw.unwrap_or_default());
                }
            }
        }
        Ok(format!("{}:{:016x}", s.digest(txn)?, bodies.finish()))
    })
}

/// A tiny FNV-1a hasher (the digest itself is the model's BLAKE3; this only fingerprints the bodies read).
mod blake3_free_hash {
    pub struct Hasher(u64);
    impl Default for Hasher {
        fn default() -> Self {
            Hasher(0xcbf2_9ce4_8422_2325)
        }
    }
    impl Hasher {
        pub fn update(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
            }
            self.0 = (self.0 ^ bytes.len() as u64).wrapping_mul(0x100_0000_01b3);
        }
        pub fn finish(&self) -> u64 {
            self.0
        }
    }
}

/// Child mode: checks and mounts the database named by `MAILSTORE_DAMAGE_CHILD`, printing one line for each.
#[test]
fn damage_campaign_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let dir = PathBuf::from(dir);
    match mailstore::engine::check_as::<MailStore>(&dir) {
        Ok(r) if r.healthy() => println!("CHECK healthy"),
        Ok(r) => println!("CHECK problems {}", r.problems.join(" | ").replace('\n', " ")),
        Err(e) => println!("CHECK error {}", e.to_string().replace('\n', " ")),
    }
    match MailEngine::mount(&dir, options()) {
        Ok(db) => {
            let tail = db.recovery_report().truncated_tail.is_some();
            match fingerprint(&db) {
                Ok(fp) => println!("MOUNT ok {fp} {tail}"),
                Err(e) => println!("MOUNT readerror {}", e.to_string().replace('\n', " ")),
            }
        }
        Err(e) => println!("MOUNT error {} {}", e.is_damage(), e.to_string().replace('\n', " ")),
    }
}

/// What one child run said.
#[derive(Debug)]
struct Verdict {
    crashed: Option<String>,
    check: String,
    mount: String,
}

fn run_child(dir: &Path) -> Verdict {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["damage_campaign_child", "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_ENV, dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = |tag: &str| stdout.lines().find_map(|l| l.strip_prefix(tag)).unwrap_or("").to_string();
    let crashed = match (out.status.signal(), out.status.code()) {
        (Some(sig), _) => Some(format!("killed by signal {sig}")),
        (None, Some(0)) if !line("MOUNT ").is_empty() => None,
        (None, code) => Some(format!("exit {code:?}: {}", String::from_utf8_lossy(&out.stderr).trim())),
    };
    Verdict { crashed, check: line("CHECK "), mount: line("MOUNT ") }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(files(&path)) } else { out.push(path) }
    }
    out.sort();
    out
}

fn kind_of(rel: &Path) -> String {
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    match first.as_str() {
        STATE_DIR | LOGS_DIR | SEGMENTS_DIR => {
            format!(
                "{first}/{}",
                if first == STATE_DIR { rel.file_name().unwrap().to_string_lossy() } else { "*".into() }
            )
        }
        _ => first,
    }
}

/// One damage: its kind and the first byte offset it touches.
fn damage(path: &Path, rng: &mut Rng) -> (&'static str, u64) {
    let mut bytes = fs::read(path).unwrap();
    let len = bytes.len() as u64;
    let choice = if len == 0 { 2 } else { rng.below(3) };
    match choice {
        0 => {
            let at = rng.below(len);
            bytes[at as usize] ^= 1 << rng.below(8);
            fs::write(path, bytes).unwrap();
            ("flip", at)
        }
        1 => {
            let at = rng.below(len);
            let n = 1 + rng.below(4).min(len - at - 1);
            for i in at..at + n {
                bytes[i as usize] = rng.next() as u8;
            }
            fs::write(path, bytes).unwrap();
            ("bytes", at)
        }
        _ => {
            let at = rng.below(len);
            fs::OpenOptions::new().write(true).open(path).unwrap().set_len(at).unwrap();
            ("truncate", at)
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn damage_campaign() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let trials = env_u64("MAILSTORE_DAMAGE_TRIALS").unwrap_or(60);
    let seed = env_u64("MAILSTORE_DAMAGE_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let jobs = env_u64("MAILSTORE_DAMAGE_JOBS").unwrap_or(1).max(1);
    println!("damage campaign: {trials} trials, seed {seed} (MAILSTORE_DAMAGE_SEED={seed} replays it), {jobs} jobs");

    let base = tempfile::tempdir().unwrap();
    let original = base.path().join("db");
    build(&original);
    let healthy = run_child(&original);
    assert!(healthy.crashed.is_none() && healthy.check == "healthy", "the undamaged database: {healthy:?}");
    let want = healthy.mount.strip_prefix("ok ").unwrap().split(' ').next().unwrap().to_string();
    if let Ok(keep) = std::env::var("MAILSTORE_DAMAGE_KEEP") {
        copy_dir(&original, Path::new(&keep)); // for replaying a trial by hand
    }
    let all = files(&original);
    let values = lmdb_file::entry_ranges(&original.join(STATE_DIR).join("data.mdb")).unwrap();
    println!("{} files; the state store holds {} entries", all.len(), values.len());
    for f in &all {
        println!("  {} ({} bytes)", f.strip_prefix(&original).unwrap().display(), fs::metadata(f).unwrap().len());
    }
    // A kind of file first (each as likely), then one file of that kind: the one state store gets as many trials
    // as all the log's generations together.
    let mut kinds: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for f in &all {
        kinds.entry(kind_of(f.strip_prefix(&original).unwrap())).or_default().push(f.clone());
    }
    let kinds: Vec<Vec<PathBuf>> = kinds.into_values().collect();

    let mut rng = Rng::new(seed);
    let plans: Vec<(u64, PathBuf, u64)> = (0..trials)
        .map(|t| {
            let kind = &kinds[rng.below(kinds.len() as u64) as usize];
            (t, kind[rng.below(kind.len() as u64) as usize].clone(), rng.next())
        })
        .collect();
    let results = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((trial, file, trial_seed)) = plans.get(i) else { break };
                    let work = tempfile::tempdir().unwrap();
                    let copy = work.path().join("db");
                    copy_dir(&original, &copy);
                    let rel = file.strip_prefix(&original).unwrap();
                    let mut trng = Rng::new(*trial_seed);
                    let (how, at) = damage(&copy.join(rel), &mut trng);
                    let in_entry = kind_of(rel) == "state/data.mdb"
                        && how != "truncate"
                        && values.iter().any(|&(s, l)| at >= s && at < s + l);
                    let verdict = run_child(&copy);
                    let outcome = classify(&verdict, &want, in_entry);
                    results.lock().unwrap().push((*trial, kind_of(rel), how, at, rel.to_path_buf(), outcome, verdict));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    let mut table: BTreeMap<(String, &str, &str), u64> = BTreeMap::new();
    let mut bad = Vec::new();
    for (trial, kind, how, at, rel, outcome, verdict) in &results {
        *table.entry((kind.clone(), how, outcome)).or_default() += 1;
        if outcome.starts_with("FAIL") || outcome.starts_with("SILENT") || outcome.starts_with("MISSED") {
            bad.push(format!("trial {trial}: {how} at {at} of {}: {outcome}: {verdict:?}", rel.display()));
        }
    }
    println!("{:<18} {:<9} {:<30} {:>6}", "file", "damage", "outcome", "trials");
    for ((kind, how, outcome), n) in &table {
        println!("{kind:<18} {how:<9} {outcome:<30} {n:>6}");
    }
    for line in &bad {
        println!("{line}");
    }
    // Damage to an entry's key or value bytes in data.mdb is caught by the tables' per-entry checksums
    // (`engine::table`): a `SILENT-entry` is a failure like any other.
    assert!(bad.is_empty(), "seed {seed}: {} trials crashed or ended silently wrong", bad.len());
}

/// The outcome of one trial. `FAIL-*` (a crash) and `SILENT-*` (a wrong state nobody reported) are failures;
/// `SILENT-entry` is one from damage to an entry's key or value bytes in the state store (which the per-entry
/// checksums must catch); `MISSED` is damage the check did not report but the mount refused.
fn classify(v: &Verdict, want: &str, in_entry: bool) -> &'static str {
    if v.crashed.is_some() {
        return if v.crashed.as_deref().is_some_and(|c| c.contains("signal")) { "FAIL-signal" } else { "FAIL-panic" };
    }
    let check_healthy = v.check == "healthy";
    let check = if check_healthy {
        "check ok"
    } else if v.check.starts_with("problems") {
        "check found"
    } else {
        "check error"
    };
    let mut parts = v.mount.splitn(3, ' ');
    let (status, fp, tail) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (status, check) {
        ("ok", _) if fp == want => match check {
            "check ok" => "unchanged",
            "check found" => "found; mount recovered it",
            _ => "check error; mount recovered it",
        },
        ("ok", _) if tail == "true" && !check_healthy => "found; mount cut a torn tail",
        ("ok", _) if in_entry => "SILENT-entry",
        ("ok", "check ok") => "SILENT-check missed",
        ("ok", _) => "SILENT-mount (check found)",
        ("readerror", "check ok") => "MISSED; reads refuse",
        ("readerror", _) => "found; reads refuse",
        ("error", "check ok") => "MISSED; mount refuses",
        ("error", "check found") => "found; mount refuses",
        ("error", _) => "check error; mount refuses",
        _ => "FAIL-no verdict",
    }
}

/// A truncated state store is a typed error for the check and the mount, never a signal: LMDB would map the
/// file and fault on the first page past its end. A cut that only removes free pages at the end leaves a file
/// that is legitimately short: it must then open with its state unchanged.
#[test]
fn a_truncated_state_store_is_a_typed_error_not_a_signal() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("db");
    build(&dir);
    let original = run_child(&dir);
    let data = dir.join(STATE_DIR).join("data.mdb");
    let len = fs::metadata(&data).unwrap().len();
    let psize = lmdb_file::read_header(&data).unwrap().unwrap().psize;
    let mut refused = 0;
    for cut in [len / 2, psize * 3, len - psize, 100] {
        let work = tempfile::tempdir().unwrap();
        let copy = work.path().join("db");
        copy_dir(&dir, &copy);
        fs::OpenOptions::new().write(true).open(copy.join(STATE_DIR).join("data.mdb")).unwrap().set_len(cut).unwrap();
        let v = run_child(&copy);
        assert!(v.crashed.is_none(), "cut at {cut} of {len}: {v:?}");
        if v.check == "healthy" {
            assert_eq!(v.mount, original.mount, "cut at {cut}: a healthy check, so the state must be the original");
        } else {
            assert!(v.check.starts_with("problems"), "cut at {cut}: {v:?}");
            assert!(v.mount.starts_with("error true"), "cut at {cut}: {v:?}");
            refused += 1;
        }
    }
    assert!(refused >= 2, "the cuts at 100 bytes and at half the file remove live pages");
}

/// The walk's speed on a large state store (`MAILSTORE_WALK_MESSAGES` deliveries, 100,000 by default), against a
/// read of the whole state through LMDB (the digest) in the same run. Run in release:
/// `cargo test --release --test damage_campaign walk_speed -- --ignored --nocapture`.
#[test]
#[ignore = "builds a large database; run by hand for ARCHITECTURE.md's figures"]
fn walk_speed() {
    let messages = env_u64("MAILSTORE_WALK_MESSAGES").unwrap_or(100_000) as usize;
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("db");
    let opts = Options::default().durability(mailstore::Durability::Relaxed).create_if_missing(true);
    let db: MailEngine = Engine::mount(&dir, opts.clone()).unwrap();
    let (alice, inbox) = mailbox(&db, "alice@example.com");
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let db = &db;
            scope.spawn(move || {
                for n in (t..messages).step_by(8) {
                    db.commit(MailOp::append(alice, inbox, message(n, 3), Flags::empty(), vec![])).unwrap();
                }
            });
        }
    });
    println!("{messages} deliveries in {:.1} s", started.elapsed().as_secs_f64());
    let _ = db.read(|s, txn| s.digest(txn)).unwrap();
    db.dismount().unwrap();
    let data = dir.join(STATE_DIR).join("data.mdb");
    let mb = fs::metadata(&data).unwrap().len() as f64 / (1 << 20) as f64;
    let mut walks = Vec::new();
    let mut digests = Vec::new();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let v = lmdb_file::verify(&data).unwrap();
        walks.push(t.elapsed().as_secs_f64());
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        let t = std::time::Instant::now();
        let digest = mailstore::engine::with_state::<MailStore, _>(&dir, |s, txn| s.digest(txn)).unwrap();
        digests.push(t.elapsed().as_secs_f64());
        assert!(!digest.is_empty());
    }
    walks.sort_by(f64::total_cmp);
    digests.sort_by(f64::total_cmp);
    println!(
        "data.mdb {mb:.1} MiB: walk median {:.3} s ({:.0} MiB/s); open + digest median {:.3} s (the open includes one walk)",
        walks[1],
        mb / walks[1],
        digests[1]
    );
}
