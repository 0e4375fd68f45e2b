//! `backup` and `restore`: a database to and from a local backup directory.
//!
//! `backup` works on a dismounted database: it mounts it (the engine's exclusive lock, so a database mounted
//! elsewhere is refused), takes the backup with the library's online backup (`mailstore::backup`), and dismounts.
//! A mounted database is backed up through the library API by the program that mounted it.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use mailstore::backup::{self, BackupReport, StopAt};
use mailstore::engine;
use mailstore::{Engine, Options, StateMachine};

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
pub(crate) fn backup_command(dir: &Path, to: &Path, incremental: bool, json: bool) -> Result<ExitCode, Failure> {
    let machine = engine::machine_name(dir)?;
    let bar = spinner(if incremental { "incremental backup" } else { "full backup" }, json);
    let outcome = with_machine(&machine, BackupAs { dir, to, incremental }).unwrap_or_else(|| {
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
        println!("backup {} of {} in {}", entry.id, dir.display(), to.display());
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
    to: &'a Path,
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
    from: &Path,
    to: &Path,
    lsn: Option<u64>,
    time: Option<&str>,
    json: bool,
) -> Result<ExitCode, Failure> {
    let stop = match (lsn, time) {
        (Some(_), Some(_)) => return Err(Failure::error("give --lsn or --time, not both")),
        (Some(n), None) => StopAt::Lsn(n),
        (None, Some(t)) => StopAt::Time(parse_rfc3339_micros(t)?),
        (None, None) => StopAt::End,
    };
    let bar = spinner("restore", json);
    let outcome = backup::restore(from, to, stop);
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
        println!("restored {} into {}", from.display(), to.display());
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

/// Microseconds since the Unix epoch of an RFC 3339 time such as `2026-12-03T17:20:00Z` or
/// `2026-12-03T17:20:00.123456+01:00`.
fn parse_rfc3339_micros(text: &str) -> Result<u64, Failure> {
    let bad = || Failure::error(format_args!("{text:?} is not an RFC 3339 time (e.g. 2026-12-03T17:20:00Z)"));
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| text.get(r).and_then(|s| s.parse::<i64>().ok()).ok_or_else(bad);
    let (y, mo, d, h, mi, s) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &text[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let padded = format!("{:0<6}", &frac[..digits.min(6)]);
        micros = padded.parse().map_err(|_| bad())?;
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let oh: i64 = rest[1..3].parse().map_err(|_| bad())?;
            let om: i64 = rest[4..6].parse().map_err(|_| bad())?;
            sign * (oh * 3600 + om * 60)
        }
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return Err(bad());
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (yy, m) = if mo <= 2 { (y - 1, mo + 9) } else { (y, mo - 3) };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_secs;
    u64::try_from(secs * 1_000_000 + micros).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::parse_rfc3339_micros;

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339_micros("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_rfc3339_micros("2000-03-01T00:00:00.5Z").unwrap(), 951_868_800_500_000);
        assert_eq!(parse_rfc3339_micros("2000-03-01T01:00:00+01:00").unwrap(), 951_868_800_000_000);
        assert!(parse_rfc3339_micros("2000-13-01T00:00:00Z").is_err());
        assert!(parse_rfc3339_micros("yesterday").is_err());
    }
}
