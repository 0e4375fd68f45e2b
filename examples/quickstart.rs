//! A first tour of `mailstore`'s engine: one database, many committers, a clean dismount and a remount.
//!
//! ```text
//! cargo run --release --example quickstart            # in a temporary directory
//! cargo run --release --example quickstart -- DIR     # creates DIR, or reuses the database in it
//! ```
//!
//! Afterwards `mailstore check DIR` (the admin tool: `cargo run --features cli --bin mailstore -- check DIR`)
//! verifies the log and the checkpoint.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use mailstore::kv::{KvEngine, KvOp};
use mailstore::{Engine, Options};

const THREADS: u64 = 8;
const COMMITS_PER_THREAD: u64 = 500;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp;
    let dir: PathBuf = match std::env::args_os().nth(1) {
        Some(dir) => dir.into(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().join("db1")
        }
    };

    // Mount (creating the database on first use). Every acknowledged commit survives power loss by default.
    let db: Arc<KvEngine> = Arc::new(Engine::mount(&dir, Options::default())?);
    let report = db.recovery_report();
    println!("mounted {} ({})", dir.display(), if report.created { "new database" } else { "existing database" });
    println!("  guid {}", db.guid());
    let run = db.status().applied_lsn; // distinguishes the keys of this run from earlier ones

    // Commit from several threads at once: the writer batches them into one log write and one fdatasync.
    let started = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let db = Arc::clone(&db);
            thread::spawn(move || -> mailstore::Result<()> {
                for i in 0..COMMITS_PER_THREAD {
                    let key = format!("run{run}/thread{t}/{i:05}").into_bytes();
                    db.commit(KvOp::Put { key, value: format!("value {i} from thread {t}").into_bytes() })?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "a committer panicked")??;
    }
    let elapsed = started.elapsed();
    let stats = db.stats();
    println!(
        "committed {} operations from {THREADS} threads in {:.1} ms: {:.0} commits/s, {} log fsyncs ({:.1} commits per fsync)",
        stats.commits,
        elapsed.as_secs_f64() * 1e3,
        stats.commits as f64 / elapsed.as_secs_f64(),
        stats.log_syncs,
        stats.commits as f64 / stats.log_syncs.max(1) as f64
    );

    // A conditional operation that does not hold is refused, and changes nothing.
    let refused = db.commit(KvOp::CompareAndSwap {
        key: b"run0/thread0/00000".to_vec(),
        expected: Some(b"something else".to_vec()),
        new: None,
    });
    println!(
        "compare-and-swap with a wrong expectation: {}",
        refused.err().map_or("applied".into(), |e| e.to_string())
    );

    // Dismount cleanly, then mount again: nothing to replay, everything there.
    let db = Arc::into_inner(db).ok_or("the engine is still shared")?;
    db.dismount()?;
    let db: KvEngine = Engine::mount(&dir, Options::default())?;
    let report = db.recovery_report();
    let keys = db.read(|kv, txn| kv.len(txn))?;
    let sample = db.read(|kv, txn| kv.get(txn, format!("run{run}/thread3/00042").as_bytes()))?;
    let status = db.status();
    println!("remounted: previous shutdown {}, {} records replayed", clean(report.was_clean), report.replayed);
    println!("  keys in the database  {keys}");
    println!("  run{run}/thread3/00042   {:?}", sample.map(|v| String::from_utf8_lossy(&v).into_owned()));
    println!("status");
    println!("  guid                  {}", status.guid);
    println!("  epoch                 {}", status.epoch);
    println!("  durability            {:?}", status.durability);
    println!("  applied LSN           {}", status.applied_lsn);
    println!("  checkpoint LSN        {}", status.checkpoint_lsn);
    println!("  log generations       {} ..= {}", status.oldest_generation, status.head_generation);
    println!("  log policy            {:?}", status.log_policy);
    db.dismount()?;
    println!("dismounted {}", dir.display());
    Ok(())
}

fn clean(was_clean: bool) -> &'static str {
    if was_clean { "clean" } else { "dirty (recovered from the log)" }
}
