//! `mailstore compact` killed at each of its steps (`--features failpoints`): the database mounts afterwards with
//! the same state, `check` finds it healthy, and compacting it again succeeds and removes what the crash left.
//!
//! Each trial runs the ignored test `compact_child` in a child process that compacts a copy of one database and
//! dies at a crash point (a panic hook that aborts: no unwinding, nothing cleaned up), or is killed with SIGKILL
//! at a random moment. `MAILSTORE_COMPACT_KILLS` sets how many random kills (default 6), `MAILSTORE_SEED` their
//! seed.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailstore::engine;
use mailstore::internals::engine::STATE_DIR;
use mailstore::model::{MailEngine, MailStore};
use mailstore::{Engine, Options};

mod common;
use common::mail::{check, deliver, digest, expunge, mailbox, message};
use common::{Rng, copy_dir, env_u64, seed_from};

const STEPS: [&str; 4] = ["compact::relocated", "compact::dismounted", "compact::copy_synced", "compact::renamed"];

fn options() -> Options {
    Options::default().log_target_size(64 << 10).checkpoint_depth(1 << 30).create_if_missing(false)
}

/// A dismounted database with free pages in its state file and segments mostly expunged, so that compaction
/// relocates bodies and shrinks the file; returns its digest.
fn build(dir: &Path) -> String {
    let db: MailEngine = Engine::mount(dir, options().create_if_missing(true)).unwrap();
    let (mbx, inbox) = mailbox(&db);
    let uids: Vec<u32> = (0..240).map(|n| deliver(&db, mbx, inbox, message(n)).1).collect();
    expunge(&db, mbx, inbox, uids.iter().copied().filter(|uid| uid % 4 != 0).collect());
    db.roll_log().unwrap();
    db.checkpoint().unwrap();
    let expected = digest(&db);
    db.dismount().unwrap();
    expected
}

/// Runs the child on `dir`; `crash_at` names the crash point it dies at, or `kill_after` ends it with SIGKILL.
/// Returns whether the child finished its compaction.
fn run_child(dir: &Path, crash_at: Option<&str>, kill_after: Option<Duration>) -> bool {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "compact_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("MAILSTORE_COMPACT_DIR", dir)
        .env("MAILSTORE_CRASH_AT", crash_at.unwrap_or(""))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let status = match kill_after {
        None => child.wait().unwrap(),
        Some(after) => {
            let deadline = Instant::now() + after;
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if Instant::now() >= deadline {
                    child.kill().unwrap(); // SIGKILL
                    break child.wait().unwrap();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    };
    if let Some(point) = crash_at {
        assert_eq!(status.signal(), Some(6), "the child did not die at {point} (SIGABRT): {status:?}");
    }
    status.success()
}

/// What every crash must leave: the same state, mountable, healthy; and a compaction that then succeeds, leaves
/// no compacted copy behind and still keeps the state.
fn assert_whole(dir: &Path, expected: &str, what: &str) {
    check(dir);
    let db: MailEngine = Engine::mount(dir, options()).unwrap_or_else(|e| panic!("{what}: mount failed: {e}"));
    assert_eq!(digest(&db), expected, "{what}: the state changed");
    db.dismount().unwrap();
    engine::compact::<MailStore>(dir).unwrap_or_else(|e| panic!("{what}: compacting again failed: {e}"));
    assert!(!dir.join(STATE_DIR).join("data.mdb.compact").exists(), "{what}: a compacted copy was left behind");
    let after = engine::space::<MailStore>(dir).unwrap();
    assert_eq!(after.free_bytes(), 0, "{what}: {after:?}");
    check(dir);
    let db: MailEngine = Engine::mount(dir, options()).unwrap();
    assert_eq!(digest(&db), expected, "{what}: compacting again changed the state");
    db.dismount().unwrap();
}

#[test]
fn compaction_killed_at_each_step_leaves_the_state_whole() {
    let source = tempfile::tempdir().unwrap();
    let expected = build(source.path());
    for step in STEPS {
        let trial = tempfile::tempdir().unwrap();
        copy_dir(source.path(), trial.path());
        assert!(!run_child(trial.path(), Some(step), None));
        assert_whole(trial.path(), &expected, step);
    }
}

#[test]
fn compaction_killed_at_random_moments_leaves_the_state_whole() {
    let source = tempfile::tempdir().unwrap();
    let expected = build(source.path());
    // How long one whole compaction takes here, to spread the kills over it.
    let timed = tempfile::tempdir().unwrap();
    copy_dir(source.path(), timed.path());
    let started = Instant::now();
    assert!(run_child(timed.path(), None, None), "an uninterrupted compaction failed");
    let whole = started.elapsed().as_micros() as u64;
    let seed = seed_from("MAILSTORE_SEED");
    println!("seed {seed}, one compaction {whole} µs");
    let mut rng = Rng::new(seed);
    for trial_no in 0..env_u64("MAILSTORE_COMPACT_KILLS", 6) {
        let trial = tempfile::tempdir().unwrap();
        copy_dir(source.path(), trial.path());
        let after = Duration::from_micros(rng.below(whole + 1));
        let finished = run_child(trial.path(), None, Some(after));
        assert_whole(trial.path(), &expected, &format!("kill {trial_no} after {after:?} (finished: {finished})"));
    }
}

/// The child: compacts `MAILSTORE_COMPACT_DIR`, dying at `MAILSTORE_CRASH_AT` when one is named.
#[test]
#[ignore = "run by the tests above in a child process"]
fn compact_child() {
    let dir = std::env::var("MAILSTORE_COMPACT_DIR").expect("MAILSTORE_COMPACT_DIR");
    let point = std::env::var("MAILSTORE_CRASH_AT").unwrap_or_default();
    if !point.is_empty() {
        std::panic::set_hook(Box::new(|_| std::process::abort()));
        fail::cfg(&point, "panic").unwrap();
    }
    engine::compact::<MailStore>(Path::new(&dir)).unwrap();
}
