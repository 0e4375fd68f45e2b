//! `backup` and `restore`: a database to and from a backup target (a local directory, or `s3://bucket/prefix` in
//! a build with the `s3` feature).
//!
//! `backup` works on a dismounted database: it mounts it (the engine's exclusive lock, so a database mounted
//! elsewhere is refused), takes the backup with the library's online backup (`mailstore::backup`), and dismounts.
//! A mounted database is backed up through the library API by the program that mounted it.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use mailstore::backup::{self, BackupReport, StopAt, Target};
use mailstore::engine;
use mailstore::{Engine, Options, StateMachine, Timestamp};

use crate::{Failure, ForMachine, print_fields, with_machine};

/// A spinner on stderr while `what` runs; hidden when stderr is not a terminal or output is JSON.
fn spinner(what: &str, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// `mailstore backup PATH --to TARGET [--incremental] [--json]`.
pub(crate) fn backup_command(dir: &Path, to: &str, incremental: bool, json: bool) -> Result<ExitCode, Failure> {
    let to = Target::parse(to)?;
    let machine = engine::machine_name(dir)?;
    let bar = spinner(if incremental { "incremental backup" } else { "full backup" }, json);
    let outcome = with_machine(&machine, BackupAs { dir, to: &to, incremental }).unwrap_or_else(|| {
        Err(Failure::error(format_args!(
            "{} was created for state machine {machine:?}, which this build of mailstore does not know",
            dir.display()
        )))
    });
    bar.finish_and_clear();
    let entry = outcome?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entry).map_err(Failure::error)?);
    } else {
        let bytes: u64 = entry.files.iter().map(|f| f.len).sum();
        println!("backup {} of {} in {to}", entry.id, dir.display());
        print_fields(
            "  ",
            &[
                ("kind", format!("{:?}", entry.kind)),
                ("LSNs", format!("{}..={}", entry.applied_lsn + 1, entry.last_lsn)),
                ("generations", format!("{}..={}", entry.first_generation, entry.last_generation)),
                ("files", entry.files.len().to_string()),
                ("bytes", bytes.to_string()),
            ],
        );
    }
    Ok(ExitCode::SUCCESS)
}

struct BackupAs<'a> {
    dir: &'a Path,
    to: &'a Target,
    incremental: bool,
}

impl ForMachine for BackupAs<'_> {
    type Output = Result<BackupReport, Failure>;

    fn run<M: StateMachine>(self) -> Self::Output {
        // No log policy is given: the database's own applies (a backup may then release generations).
        let db = Engine::<M>::mount(self.dir, Options::default().create_if_missing(false))?;
        let taken =
            if self.incremental { backup::incremental_backup(&db, self.to) } else { backup::full_backup(&db, self.to) };
        let dismounted = db.dismount();
        let entry = taken?;
        dismounted?;
        Ok(entry)
    }
}

/// `mailstore restore --from TARGET --to DIR [--lsn N | --time RFC3339] [--json]`.
pub(crate) fn restore_command(
    from: &str,
    to: &Path,
    lsn: Option<u64>,
    time: Option<&str>,
    json: bool,
) -> Result<ExitCode, Failure> {
    let stop = match (lsn, time) {
        (Some(_), Some(_)) => return Err(Failure::error("give --lsn or --time, not both")),
        (Some(n), None) => StopAt::Lsn(n),
        (None, Some(t)) => StopAt::Time(t.parse::<Timestamp>().map_err(Failure::error)?),
        (None, None) => StopAt::End,
    };
    let from = Target::parse(from)?;
    let bar = spinner("restore", json);
    let outcome = backup::restore(&from, to, stop);
    bar.finish_and_clear();
    let report = outcome?;
    if json {
        let value = serde_json::json!({
            "backups": report.backups,
            "snapshot_lsn": report.snapshot_lsn,
            "stop_lsn": report.stop_lsn,
            "bytes": report.bytes,
            "to": to.display().to_string(),
        });
        println!("{value}");
    } else {
        println!("restored {from} into {}", to.display());
        print_fields(
            "  ",
            &[
                ("backups", report.backups.join(", ")),
                ("snapshot LSN", report.snapshot_lsn.to_string()),
                ("stop LSN", format!("{} (replayed when {} is mounted)", report.stop_lsn, to.display())),
                ("bytes", report.bytes.to_string()),
            ],
        );
    }
    Ok(ExitCode::SUCCESS)
}
