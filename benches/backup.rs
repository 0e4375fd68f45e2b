//! Backup and restore rates (issue 14): `backup::full_backup` of a mounted mail database and `backup::restore` of
//! it, in MB/s, against `cp -r` of the same database directory in the same run (ratios are what to compare; the
//! machine is shared). `MAILSTORE_BACKUP_MESSAGES` (default 5,000 messages of 10 KiB) sets the size.
//!
//! Run: `cargo bench --bench backup`. With `--features s3` and `MAILSTORE_BACKUP_S3=http://HOST:PORT/BUCKET` (an
//! S3-compatible server whose bucket exists, e.g. moto's server mode; credentials from the `AWS_*` variables or
//! `testing`), the same database is also backed up into and restored from `s3://BUCKET/bench-<pid>`.

mod common;

use std::process::Command;
use std::time::Instant;

use common::{bench_root, message};
use mailstore::backup::{self, StopAt};
use mailstore::model::{Flags, FolderRole, MailEngine, MailOp, MailboxKind};
use mailstore::{Engine, Options};

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() { dir_bytes(&entry.path()) } else { meta.len() };
    }
    total
}

fn cp(from: &std::path::Path, to: &std::path::Path) -> f64 {
    let start = Instant::now();
    assert!(Command::new("cp").arg("-r").arg(from).arg(to).status().unwrap().success());
    assert!(Command::new("sync").status().unwrap().success());
    start.elapsed().as_secs_f64()
}

fn main() {
    let n: u64 = std::env::var("MAILSTORE_BACKUP_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000);
    let root = tempfile::tempdir_in(bench_root()).unwrap();
    let source = root.path().join("source");
    let db: MailEngine = Engine::mount(&source, Options::default()).unwrap();
    let op = MailOp::create_mailbox("bench@example.com", "Bench", MailboxKind::User);
    let MailOp::CreateMailbox { guid: mbx, .. } = op else { unreachable!() };
    db.commit(op).unwrap();
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &mbx, FolderRole::Inbox)).unwrap().unwrap().id;
    std::thread::scope(|s| {
        for t in 0..8 {
            let db = &db;
            s.spawn(move || {
                for i in (t..n).step_by(8) {
                    db.commit(MailOp::append(mbx, inbox, message(i), Flags::empty(), vec![])).unwrap();
                }
            });
        }
    });
    db.checkpoint().unwrap();
    let db_bytes = dir_bytes(&source);

    let copy_secs = cp(&source, &root.path().join("cp-source"));
    let start = Instant::now();
    let entry = backup::full_backup(&db, root.path().join("backups")).unwrap();
    let backup_secs = start.elapsed().as_secs_f64();
    #[cfg(feature = "s3")]
    let s3 = s3_target().map(|target| {
        let start = Instant::now();
        let entry = backup::full_backup(&db, target.clone()).unwrap();
        let backup_secs = start.elapsed().as_secs_f64();
        let bytes: u64 = entry.files.iter().map(|f| f.len).sum();
        let start = Instant::now();
        let report = backup::restore(target, &root.path().join("restored-s3"), StopAt::End).unwrap();
        (bytes, backup_secs, report.bytes, start.elapsed().as_secs_f64())
    });
    db.dismount().unwrap();
    let backup_bytes: u64 = entry.files.iter().map(|f| f.len).sum();
    let copy_backup_secs = cp(&root.path().join("backups"), &root.path().join("cp-backups"));
    let start = Instant::now();
    let report = backup::restore(root.path().join("backups"), &root.path().join("restored"), StopAt::End).unwrap();
    let restore_secs = start.elapsed().as_secs_f64();

    let mb = |bytes: u64, secs: f64| bytes as f64 / 1e6 / secs;
    println!(
        "messages {n}, database directory {:.1} MB, backup {:.1} MB",
        db_bytes as f64 / 1e6,
        backup_bytes as f64 / 1e6
    );
    println!("cp -r + sync of the database:  {:8.1} MB/s", mb(db_bytes, copy_secs));
    println!(
        "full_backup:                   {:8.1} MB/s  ({:.2}x cp)",
        mb(backup_bytes, backup_secs),
        mb(backup_bytes, backup_secs) / mb(db_bytes, copy_secs)
    );
    println!("cp -r + sync of the backup:    {:8.1} MB/s", mb(backup_bytes, copy_backup_secs));
    println!(
        "restore (verify + copy):       {:8.1} MB/s  ({:.2}x cp)",
        mb(report.bytes, restore_secs),
        mb(report.bytes, restore_secs) / mb(backup_bytes, copy_backup_secs)
    );
    #[cfg(feature = "s3")]
    if let Some((bytes, backup_secs, restored, restore_secs)) = s3 {
        println!("full_backup into S3:           {:8.1} MB/s", mb(bytes, backup_secs));
        println!("restore from S3 (download + verify + copy): {:8.1} MB/s", mb(restored, restore_secs));
    }
}

/// The S3 target of `MAILSTORE_BACKUP_S3` (`http://HOST:PORT/BUCKET`).
#[cfg(feature = "s3")]
fn s3_target() -> Option<backup::S3Config> {
    let url = std::env::var("MAILSTORE_BACKUP_S3").ok()?;
    let (endpoint, bucket) = url.rsplit_once('/').expect("MAILSTORE_BACKUP_S3=http://HOST:PORT/BUCKET");
    let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "testing".into());
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "testing".into());
    Some(
        backup::S3Config::new(bucket, format!("bench-{}", std::process::id()))
            .endpoint(endpoint)
            .allow_http(endpoint.starts_with("http://"))
            .region("us-east-1")
            .credentials(key, secret),
    )
}
