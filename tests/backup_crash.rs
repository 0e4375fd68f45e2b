//! Backup and restore killed at each of their steps and at random moments (`--features failpoints`).
//!
//! After a killed backup the source mounts with the same state, a following backup into the same target
//! succeeds and leaves neither a staging directory in the database nor a backup directory the catalogue does
//! not list, and a restore of the newest catalogued backup gives the state the source had at that backup's last
//! LSN. After a killed restore the directory is either empty or refused by mount (and checkpoint rebuild) with
//! [`Error::RestoreUnfinished`], or whole; a second restore into it succeeds and gives that state.
//!
//! Each trial runs the ignored test `backup_child` in a child process that dies at a crash point (a panic hook
//! that aborts: no unwinding, nothing cleaned up) or is killed with SIGKILL at a random moment of the backup or
//! restore. `MAILSTORE_BACKUP_KILLS` sets how many random kills of each (default 10), `MAILSTORE_SEED` their seed;
//! `MAILSTORE_CRASH_STEPS` (comma-separated) limits the crash points tried to those it names.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailstore::backup::{self, Catalogue, RESTORING_FILE, StopAt};
use mailstore::internals::engine::CHECKPOINT_FILE;
use mailstore::model::{FolderId, MailEngine, MailStore};
use mailstore::{Engine, Error, Guid, LogRetention, Lsn, Options, engine};

mod common;
use common::mail::{deliver, digest, mailbox, message};
use common::{Rng, env_u64, seed_from};

const BACKUP_STEPS: [&str; 6] = [
    "backup::staged",
    "backup::snapshot_written",
    "backup::logs_copied",
    "backup::synced",
    "backup::renamed",
    "backup::catalogued",
];
const RESTORE_STEPS: [&str; 3] = ["restore::marked", "restore::files_copied", "restore::checkpoint_written"];

fn options() -> Options {
    Options::default().log_target_size(16 << 10).retention(LogRetention::UntilBackup).create_if_missing(false)
}

/// A source database, its backup target, and its digest after each commit.
struct Source {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    target: PathBuf,
    history: BTreeMap<Lsn, String>,
    mbx: Guid,
    inbox: FolderId,
    delivered: usize,
}

impl Source {
    /// A source with some messages, a full backup and an incremental in its target.
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, target) = (tmp.path().join("source"), tmp.path().join("backups"));
        let db: MailEngine = Engine::mount(&dir, options().create_if_missing(true)).unwrap();
        let (mbx, inbox) = mailbox(&db);
        let mut history = BTreeMap::new();
        history.insert(db.status().applied_lsn, digest(&db));
        db.dismount().unwrap();
        let mut source = Source { _tmp: tmp, dir, target, history, mbx, inbox, delivered: 0 };
        source.deliver(20);
        source.with(|db| backup::full_backup(db, &source.target).map(drop).unwrap());
        source.deliver(10);
        source.with(|db| backup::incremental_backup(db, &source.target).map(drop).unwrap());
        source
    }

    fn with<T>(&self, f: impl FnOnce(&MailEngine) -> T) -> T {
        let db: MailEngine = Engine::mount(&self.dir, options()).unwrap();
        let out = f(&db);
        db.dismount().unwrap();
        out
    }

    /// Delivers `n` messages, recording the digest after each.
    fn deliver(&mut self, n: usize) {
        let db: MailEngine = Engine::mount(&self.dir, options()).unwrap();
        for _ in 0..n {
            deliver(&db, self.mbx, self.inbox, message(self.delivered));
            self.delivered += 1;
            self.history.insert(db.status().applied_lsn, digest(&db));
        }
        db.dismount().unwrap();
    }

    fn last_lsn(&self) -> Lsn {
        *self.history.keys().next_back().unwrap()
    }

    /// Restores the target's newest backup into `to` and checks the state at its last LSN.
    fn assert_restored(&self, to: &Path, what: &str) {
        let newest = Catalogue::load(&self.target).unwrap().backups.last().unwrap().clone();
        let report = backup::restore(&self.target, to, StopAt::End)
            .unwrap_or_else(|e| panic!("{what}: restoring the newest backup failed: {e}"));
        assert_eq!(report.stop_lsn, newest.last_lsn, "{what}");
        self.assert_mounts_at(to, newest.last_lsn, what);
    }

    fn assert_mounts_at(&self, to: &Path, lsn: Lsn, what: &str) {
        assert!(!to.join(RESTORING_FILE).exists(), "{what}: a finished restore left its marker");
        let db: MailEngine = Engine::mount(to, options()).unwrap_or_else(|e| panic!("{what}: restored mount: {e}"));
        assert_eq!(db.status().applied_lsn, lsn, "{what}");
        assert_eq!(digest(&db), self.history[&lsn], "{what}: the restored state differs from the source's at {lsn}");
        db.dismount().unwrap();
    }
}

/// How the child's run ends.
#[derive(Clone, Copy)]
enum End {
    /// It dies at this crash point.
    CrashAt(&'static str),
    /// It is killed this long after it started the operation (or it finishes first).
    KillAfter(Duration),
    /// It finishes; returns how long the operation (with dismount and exit) took.
    Finish,
}

/// Runs the child: `kind` is `full`, `incremental` or `restore` (into `to`). Returns whether it finished, and how
/// long it ran from the start of the operation.
fn run_child(source: &Source, kind: &str, to: &Path, end: End) -> (bool, Duration) {
    let started = source.target.with_file_name(format!("started-{}", Guid::new_random()));
    let crash_at = match end {
        End::CrashAt(point) => point,
        _ => "",
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "backup_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("MAILSTORE_BACKUP_DIR", &source.dir)
        .env("MAILSTORE_BACKUP_TARGET", &source.target)
        .env("MAILSTORE_BACKUP_KIND", kind)
        .env("MAILSTORE_RESTORE_TO", to)
        .env("MAILSTORE_STARTED", &started)
        .env("MAILSTORE_CRASH_AT", crash_at)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the operation to start (the child mounts first).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut exited = None;
    while !started.exists() && exited.is_none() && Instant::now() < deadline {
        exited = child.try_wait().unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    let t0 = Instant::now();
    let status = match (exited, end) {
        (Some(status), _) => status,
        (None, End::KillAfter(after)) => loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if t0.elapsed() >= after {
                child.kill().unwrap(); // SIGKILL
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_micros(200));
        },
        (None, _) => child.wait().unwrap(),
    };
    let ran = t0.elapsed();
    let _ = std::fs::remove_file(&started);
    if !crash_at.is_empty() {
        assert_eq!(status.signal(), Some(6), "the child did not die at {crash_at} (SIGABRT): {status:?}");
    }
    if matches!(end, End::Finish) {
        assert!(status.success(), "an uninterrupted {kind} failed: {status:?}");
    }
    (status.success(), ran)
}

/// What every killed backup must leave: the source whole, a target that takes the next backup (leaving nothing
/// behind), and a newest backup that restores to the source's state at its last LSN.
fn assert_backup_whole(source: &Source, what: &str) {
    let db: MailEngine = Engine::mount(&source.dir, options()).unwrap_or_else(|e| panic!("{what}: mount: {e}"));
    assert_eq!(db.status().applied_lsn, source.last_lsn(), "{what}: the source lost records");
    assert_eq!(digest(&db), source.history[&source.last_lsn()], "{what}: the source's state changed");
    let catalogue = Catalogue::load(&source.target).unwrap();
    let next = if catalogue.backups.is_empty() {
        backup::full_backup(&db, &source.target)
    } else {
        backup::incremental_backup(&db, &source.target)
    };
    next.unwrap_or_else(|e| panic!("{what}: the following backup into the same target failed: {e}"));
    db.dismount().unwrap();
    let staging: Vec<_> = std::fs::read_dir(&source.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("backup-"))
        .collect();
    assert!(staging.is_empty(), "{what}: staging directories left in the database: {staging:?}");
    let catalogue = Catalogue::load(&source.target).unwrap();
    for entry in std::fs::read_dir(&source.target).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let known = ["catalogue.json", "backup.lock"].contains(&name.as_str());
        assert!(known || catalogue.backups.iter().any(|b| b.id == name), "{what}: {name} is not in the catalogue");
    }
    let restored = tempfile::tempdir().unwrap();
    source.assert_restored(&restored.path().join("db"), what);
}

/// What every killed restore must leave: nothing but a lock file, a directory that mount and checkpoint rebuild
/// refuse with the typed error until a second restore (which succeeds), or the whole restored database.
fn assert_restore_whole(source: &Source, to: &Path, finished: bool, what: &str) -> &'static str {
    let newest = Catalogue::load(&source.target).unwrap().backups.last().unwrap().clone();
    if to.join(RESTORING_FILE).exists() {
        assert!(!finished, "{what}: a finished restore left its marker");
        match Engine::<MailStore>::mount(to, Options::default()) {
            Err(e @ Error::RestoreUnfinished { .. }) => {
                assert!(e.to_string().contains("did not finish; restore again"), "{what}: {e}")
            }
            Err(other) => panic!("{what}: mount refused the unfinished restore with another error: {other}"),
            Ok(_) => panic!("{what}: mount accepted an unfinished restore"),
        }
        assert!(
            matches!(engine::rebuild_checkpoint(to), Err(Error::RestoreUnfinished { .. })),
            "{what}: checkpoint rebuild did not refuse the unfinished restore"
        );
        source.assert_restored(to, &format!("{what}, restored again"));
        "refused"
    } else if !to.exists() || std::fs::read_dir(to).unwrap().all(|e| e.unwrap().file_name() == "lock") {
        // Killed before the marker: nothing written yet.
        assert!(!finished, "{what}: a finished restore wrote nothing");
        source.assert_restored(to, &format!("{what}, restored again"));
        "not started"
    } else {
        // No marker but files: the restore must be whole (it returned before the kill).
        assert!(to.join(CHECKPOINT_FILE).exists(), "{what}: an unfinished restore left files but no marker");
        source.assert_mounts_at(to, newest.last_lsn, what);
        "whole"
    }
}

#[test]
fn backup_and_restore_killed_at_each_step_leave_everything_whole() {
    let started = Instant::now();
    let mut source = Source::new();
    let only = std::env::var("MAILSTORE_CRASH_STEPS").unwrap_or_default();
    let chosen = |step: &str| only.is_empty() || only.split(',').any(|s| s == step);
    let mut trials = 0;
    for step in BACKUP_STEPS.into_iter().filter(|s| chosen(s)) {
        for kind in ["full", "incremental"] {
            if step == "backup::snapshot_written" && kind == "incremental" {
                continue; // An incremental takes no snapshot.
            }
            source.deliver(4);
            let what = format!("{kind} backup killed at {step}");
            let (finished, _) = run_child(&source, kind, Path::new(""), End::CrashAt(step));
            trials += 1;
            assert!(!finished, "{what}");
            assert_backup_whole(&source, &what);
        }
    }
    for step in RESTORE_STEPS.into_iter().filter(|s| chosen(s)) {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("restored");
        let what = format!("restore killed at {step}");
        let (finished, _) = run_child(&source, "restore", &to, End::CrashAt(step));
        trials += 1;
        assert!(!finished && to.join(RESTORING_FILE).exists(), "{what}: no marker left");
        assert_eq!(assert_restore_whole(&source, &to, false, &what), "refused", "{what}");
    }
    println!("{trials} crash points in {:?}", started.elapsed());
}

#[test]
fn backup_and_restore_killed_at_random_moments_leave_everything_whole() {
    let started = Instant::now();
    let mut source = Source::new();
    let seed = seed_from("MAILSTORE_SEED");
    let mut rng = Rng::new(seed);
    let kills = env_u64("MAILSTORE_BACKUP_KILLS", 10);
    // How long one whole backup and one whole restore take here, to spread the kills over them.
    source.deliver(4);
    let (_, backup_time) = run_child(&source, "incremental", Path::new(""), End::Finish);
    let timed = tempfile::tempdir().unwrap();
    let (_, restore_time) = run_child(&source, "restore", &timed.path().join("r"), End::Finish);
    println!("seed {seed}, one backup {backup_time:?}, one restore {restore_time:?}");
    let mut outcomes = BTreeMap::<String, u64>::new();
    for trial in 0..kills {
        source.deliver(3);
        let kind = if trial % 3 == 0 { "full" } else { "incremental" };
        let after = Duration::from_micros(rng.below(backup_time.as_micros() as u64 + 1));
        let (finished, _) = run_child(&source, kind, Path::new(""), End::KillAfter(after));
        assert_backup_whole(&source, &format!("{kind} backup {trial} killed after {after:?} (finished: {finished})"));
        *outcomes.entry(format!("backup finished: {finished}")).or_default() += 1;
    }
    for trial in 0..kills {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("restored");
        let after = Duration::from_micros(rng.below(restore_time.as_micros() as u64 + 1));
        let (finished, _) = run_child(&source, "restore", &to, End::KillAfter(after));
        let what = format!("restore {trial} killed after {after:?} (finished: {finished})");
        *outcomes.entry(format!("restore {}", assert_restore_whole(&source, &to, finished, &what))).or_default() += 1;
    }
    println!("{} random kills in {:?}: {outcomes:?}", 2 * kills, started.elapsed());
}

/// The child: a backup of `MAILSTORE_BACKUP_DIR` into `MAILSTORE_BACKUP_TARGET`, or a restore of it into
/// `MAILSTORE_RESTORE_TO`; creates `MAILSTORE_STARTED` as it starts, dies at `MAILSTORE_CRASH_AT` when named.
#[test]
#[ignore = "run by the tests above in a child process"]
fn backup_child() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name}"));
    let (dir, target) = (PathBuf::from(var("MAILSTORE_BACKUP_DIR")), PathBuf::from(var("MAILSTORE_BACKUP_TARGET")));
    let point = var("MAILSTORE_CRASH_AT");
    if !point.is_empty() {
        std::panic::set_hook(Box::new(|_| std::process::abort()));
        fail::cfg(&point, "panic").unwrap();
    }
    let started = PathBuf::from(var("MAILSTORE_STARTED"));
    match var("MAILSTORE_BACKUP_KIND").as_str() {
        "restore" => {
            std::fs::write(&started, b"").unwrap();
            backup::restore(&target, Path::new(&var("MAILSTORE_RESTORE_TO")), StopAt::End).unwrap();
        }
        kind => {
            let db: MailEngine = Engine::mount(&dir, options()).unwrap();
            std::fs::write(&started, b"").unwrap();
            if kind == "full" {
                backup::full_backup(&db, &target).unwrap();
            } else {
                backup::incremental_backup(&db, &target).unwrap();
            }
            db.dismount().unwrap();
        }
    }
}
