//! The maintenance commands: `space`, `compact` and `repair`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget};
use mailstore::StateMachine;
use mailstore::engine::{self, CompactReport, RepairReport, SpaceReport};
use serde_json::json;

use crate::{Failure, ForMachine, print_fields, with_machine};

/// `mailstore space PATH [--json]`.
pub(crate) fn space(dir: &Path, json: bool) -> Result<ExitCode, Failure> {
    let report = run(dir, SpaceAs(dir))?;
    if json {
        println!("{}", space_json(&report));
    } else {
        print_space(dir, &report);
    }
    Ok(ExitCode::SUCCESS)
}

/// `mailstore compact PATH [--json]`.
pub(crate) fn compact(dir: &Path, json: bool) -> Result<ExitCode, Failure> {
    // A spinner on a terminal (stderr), nothing otherwise or with --json: compaction reports no fractions.
    let spinner = if json { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
    if !json {
        spinner.set_draw_target(ProgressDrawTarget::stderr());
        spinner.enable_steady_tick(Duration::from_millis(120));
        spinner.set_message(format!("compacting {}", dir.display()));
    }
    let outcome = run(dir, CompactAs(dir));
    spinner.finish_and_clear();
    let report = outcome?;
    if json {
        let value = json!({
            "database": dir.display().to_string(),
            "relocations": report.relocations,
            "before": space_json(&report.before),
            "after": space_json(&report.after),
        });
        println!("{value}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("compacted {}: {} relocation(s)", dir.display(), report.relocations);
    let (before, after) = (&report.before, &report.after);
    print_fields(
        "  ",
        &[
            ("state file", format!("{} -> {} bytes", before.state_file_bytes, after.state_file_bytes)),
            ("segments", format!("{} -> {}", before.segments, after.segments)),
            ("segment bytes", format!("{} -> {}", before.segment_bytes, after.segment_bytes)),
            ("log bytes", format!("{} -> {}", before.log_bytes, after.log_bytes)),
            ("total", format!("{} -> {} bytes", total(before), total(after))),
        ],
    );
    Ok(ExitCode::SUCCESS)
}

/// `mailstore repair PATH --from HEALTHY [--json]`.
pub(crate) fn repair(dir: &Path, healthy: &Path, json: bool) -> Result<ExitCode, Failure> {
    let spinner = if json { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
    if !json {
        spinner.set_draw_target(ProgressDrawTarget::stderr());
        spinner.enable_steady_tick(Duration::from_millis(120));
        spinner.set_message(format!("repairing {} from {}", dir.display(), healthy.display()));
    }
    // The damaged state may not even say which machine it holds: the healthy copy's does.
    let outcome = run(healthy, RepairAs { dir, healthy });
    spinner.finish_and_clear();
    let r = outcome?;
    let kept = r.damaged_state.as_ref().map(|p| p.display().to_string());
    if json {
        let value = json!({
            "database": dir.display().to_string(),
            "from": healthy.display().to_string(),
            "copied_at_lsn": r.copied_at,
            "replayed": r.replayed,
            "generations_copied": r.generations_copied,
            "damaged_state": kept,
        });
        println!("{value}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("repaired {} from {}", dir.display(), healthy.display());
    print_fields(
        "  ",
        &[
            ("state copied at LSN", r.copied_at.to_string()),
            ("records replayed", r.replayed.to_string()),
            ("generations copied", r.generations_copied.to_string()),
            ("damaged state kept at", kept.unwrap_or_else(|| "- (there was none)".into())),
        ],
    );
    Ok(ExitCode::SUCCESS)
}

fn total(r: &SpaceReport) -> u64 {
    r.state_file_bytes + r.log_bytes + r.segment_bytes
}

fn print_space(dir: &Path, r: &SpaceReport) {
    print_fields(
        "",
        &[
            ("database", dir.display().to_string()),
            ("used", format!("{} bytes", r.used_bytes())),
            ("free", format!("{} bytes (free pages in the state file, reused before it grows)", r.free_bytes())),
            ("reclaimable", format!("{} bytes (what `mailstore compact` gives back)", r.reclaimable_bytes())),
            ("state file", format!("{} bytes, {} in use", r.state_file_bytes, r.state_used_bytes)),
            ("log", format!("{} generation(s), {} bytes", r.log_generations, r.log_bytes)),
            (
                "segments",
                format!(
                    "{} ({} bytes, {} of them live message bodies, {} reclaimable)",
                    r.segments, r.segment_bytes, r.segment_live_bytes, r.segment_reclaimable_bytes
                ),
            ),
        ],
    );
}

fn space_json(r: &SpaceReport) -> serde_json::Value {
    json!({
        "used_bytes": r.used_bytes(),
        "free_bytes": r.free_bytes(),
        "reclaimable_bytes": r.reclaimable_bytes(),
        "state_file_bytes": r.state_file_bytes,
        "state_used_bytes": r.state_used_bytes,
        "log_generations": r.log_generations,
        "log_bytes": r.log_bytes,
        "segments": r.segments,
        "segment_bytes": r.segment_bytes,
        "segment_live_bytes": r.segment_live_bytes,
        "segment_reclaimable_bytes": r.segment_reclaimable_bytes,
    })
}

/// Runs `command` as the machine the database in `dir` was created for (read from its state store).
fn run<C: ForMachine<Output = mailstore::Result<T>>, T>(dir: &Path, command: C) -> Result<T, Failure> {
    let machine = engine::machine_name(dir)?;
    match with_machine(&machine, command) {
        Some(outcome) => Ok(outcome?),
        None => Err(Failure::error(format_args!(
            "{} was created for state machine {machine:?}, which this build of mailstore does not know",
            dir.display()
        ))),
    }
}

struct SpaceAs<'a>(&'a Path);

impl ForMachine for SpaceAs<'_> {
    type Output = mailstore::Result<SpaceReport>;

    fn run<M: StateMachine>(self) -> Self::Output {
        engine::space::<M>(self.0)
    }
}

struct CompactAs<'a>(&'a Path);

impl ForMachine for CompactAs<'_> {
    type Output = mailstore::Result<CompactReport>;

    fn run<M: StateMachine>(self) -> Self::Output {
        engine::compact::<M>(self.0)
    }
}

struct RepairAs<'a> {
    dir: &'a Path,
    healthy: &'a Path,
}

impl ForMachine for RepairAs<'_> {
    type Output = mailstore::Result<RepairReport>;

    fn run<M: StateMachine>(self) -> Self::Output {
        engine::repair_state_from::<M>(self.dir, self.healthy)
    }
}
