//! The inspecting commands and `recover`: `status`, `logs`, `check`, `recover`.

use std::path::Path;
use std::process::ExitCode;

use mailstore::engine::{self, CheckReport, GenerationInfo, OfflineStatus, TailTruncation};
use mailstore::internals::engine::{CHECKPOINT_FILE, LOGS_DIR};
use mailstore::{Engine, Options, RecoveryMode, RecoveryReport, StateMachine};

use crate::{EXIT_DAMAGED, Failure, ForMachine, count, print_fields, with_machine};

pub(crate) fn status(dir: &Path) -> Result<ExitCode, Failure> {
    let s: OfflineStatus = engine::offline_status(dir)?;
    let ck = &s.checkpoint;
    print_fields(
        "",
        &[
            ("database", dir.display().to_string()),
            ("guid", s.guid.to_string()),
            ("state machine", s.machine.clone()),
            ("epoch", s.epoch.to_string()),
            ("checkpoint LSN", format!("{} (sequence {}, epoch {})", ck.lsn, ck.sequence, ck.epoch)),
            ("backup LSN", if ck.backup_lsn == 0 { "none".into() } else { ck.backup_lsn.to_string() }),
            ("applied LSN", s.applied_lsn.to_string()),
            ("log head", format!("generation {}, LSN {}", s.head_generation, s.head_lsn)),
            ("oldest generation", s.oldest_generation.to_string()),
            ("segments", format!("{} ({} bytes of generations kept for message bodies)", s.segments, s.segment_bytes)),
            ("shutdown", if s.clean { "clean".into() } else { "dirty (mounted, or crashed while mounted)".into() }),
        ],
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn logs(dir: &Path) -> Result<ExitCode, Failure> {
    let gens = engine::list_generations(dir)?;
    if gens.is_empty() {
        println!("{}: no generation", dir.join(LOGS_DIR).display());
        return Ok(ExitCode::SUCCESS);
    }
    let header = ["GEN", "EPOCH", "FIRST LSN", "LAST LSN", "RECORDS", "BYTES", "CHECKSUM", "CHAIN", "PROBLEM"];
    let mut rows: Vec<[String; 9]> = Vec::with_capacity(gens.len());
    for (i, g) in gens.iter().enumerate() {
        rows.push([
            g.number.to_string(),
            g.epoch.to_string(),
            g.first_lsn.to_string(),
            g.last_lsn.to_string(),
            g.records.to_string(),
            g.bytes.to_string(),
            format!("{:08x}", g.checksum),
            chain(g, gens.get(i + 1)).to_string(),
            g.problem.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    // Numbers are right-aligned, text left-aligned; the last column (the problem) is not padded.
    let numeric = [true, true, true, true, true, true, false, false, false];
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else if numeric[i] {
                out.push_str(&format!("{cell:>w$}", w = widths[i]));
            } else {
                out.push_str(&format!("{cell:<w$}", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    Ok(ExitCode::SUCCESS)
}

/// The CHAIN column: whether the next generation's header links to `g`.
fn chain(g: &GenerationInfo, next: Option<&GenerationInfo>) -> &'static str {
    match next {
        None => "head",
        Some(next) if next.number != g.number + 1 => "gap",
        Some(_) if g.chain_ok => "ok",
        Some(_) => "BROKEN",
    }
}

pub(crate) fn check(dir: &Path) -> Result<ExitCode, Failure> {
    // With a known state machine, every record's payload is decoded too; otherwise the log's structure only.
    let report: CheckReport = match engine::machine_name(dir).ok().and_then(|m| with_machine(&m, CheckAs(dir))) {
        Some(report) => report?,
        None => engine::check(dir)?,
    };
    let generations = count(report.generations, "generation", "generations");
    let records = count(report.records, "record", "records");
    println!("checked {}: {generations}, {records}", dir.display());
    if report.healthy() {
        println!("result: healthy");
        return Ok(ExitCode::SUCCESS);
    }
    println!("problems: {}", report.problems.len());
    for problem in &report.problems {
        println!("  - {problem}");
    }
    println!("result: DAMAGED");
    Ok(ExitCode::from(EXIT_DAMAGED))
}

/// Checks the database with its machine's decoding and consistency checks.
struct CheckAs<'a>(&'a Path);

impl ForMachine for CheckAs<'_> {
    type Output = mailstore::Result<CheckReport>;

    fn run<M: StateMachine>(self) -> Self::Output {
        engine::check_as::<M>(self.0)
    }
}

pub(crate) fn recover(dir: &Path) -> Result<ExitCode, Failure> {
    // The machine name comes from the state store alone, so a damaged log does not hide it.
    let machine = engine::machine_name(dir)?;
    // A checkpoint file that is missing or unreadable is rebuilt from the state store and the log first.
    match checkpoint_state(dir) {
        CheckpointState::Readable => {}
        CheckpointState::Lost(why) => {
            let ck = engine::rebuild_checkpoint(dir).map_err(|e| {
                Failure::from(e).with_context(&format!("the checkpoint file is {why}; rebuilding it failed"))
            })?;
            println!(
                "the checkpoint file was {why}: rebuilt from the state store and the log (checkpoint LSN {}, epoch {})",
                ck.lsn, ck.epoch
            );
        }
    }
    let report = with_machine(&machine, RecoverAs(dir)).unwrap_or_else(|| {
        Err(Failure::error(format_args!(
            "{} was created for state machine {machine:?}, which this build of mailstore does not know",
            dir.display()
        )))
    })?;
    print_recovery(dir, &report);
    Ok(ExitCode::SUCCESS)
}

enum CheckpointState {
    Readable,
    /// Why it is not: "missing" or "damaged".
    Lost(&'static str),
}

fn checkpoint_state(dir: &Path) -> CheckpointState {
    let path = dir.join(CHECKPOINT_FILE);
    if !path.exists() {
        return CheckpointState::Lost("missing");
    }
    match engine::offline_status(dir) {
        Err(mailstore::Error::Corrupted { file, .. }) if file == path => CheckpointState::Lost("damaged"),
        _ => CheckpointState::Readable,
    }
}

/// Mounts the database as its machine (never creating one), which runs recovery, then dismounts.
struct RecoverAs<'a>(&'a Path);

impl ForMachine for RecoverAs<'_> {
    type Output = Result<RecoveryReport, Failure>;

    fn run<M: StateMachine>(self) -> Self::Output {
        // No log policy is given, so the one stored in the database applies: the final checkpoint deletes only
        // what the database's own policy allows.
        let options = Options::default().create_if_missing(false).recovery(RecoveryMode::TolerateTailCorruption);
        let db = Engine::<M>::mount(self.0, options)?;
        let report = db.recovery_report().clone();
        db.dismount().map_err(|e| {
            Failure::from(e).with_context("recovery succeeded, but the dismount after it failed; the database is dirty")
        })?;
        Ok(report)
    }
}

fn print_recovery(dir: &Path, r: &RecoveryReport) {
    let tail = match &r.truncated_tail {
        None => "none".to_string(),
        Some(TailTruncation { file, offset, bytes, reason }) => {
            format!("{} at offset {offset}: {bytes} bytes discarded ({reason})", file.display())
        }
    };
    let leftovers = if r.leftovers_removed.is_empty() {
        "none".to_string()
    } else {
        r.leftovers_removed.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    };
    println!("recovered {}", dir.display());
    print_fields(
        "  ",
        &[
            ("previous shutdown", if r.was_clean { "clean".into() } else { "dirty".into() }),
            ("checkpoint LSN", r.checkpoint_lsn.to_string()),
            ("applied LSN before", r.applied_lsn_before.to_string()),
            ("applied LSN after", r.applied_lsn_after.to_string()),
            ("records replayed", r.replayed.to_string()),
            ("generations scanned", r.generations_scanned.to_string()),
            ("truncated tail", tail),
            ("leftovers removed", leftovers),
        ],
    );
    println!("dismounted cleanly");
}
