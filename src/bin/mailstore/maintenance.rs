//! The maintenance commands: `space` and `compact`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget};
use mailstore::StateMachine;
use mailstore::engine::{self, CompactReport, SpaceReport};
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

/// Runs `command` as the machine the database in `dir` was created for.
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
