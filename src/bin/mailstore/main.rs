//! `mailstore`: the administration tool for `mailstore` databases.
//!
//! Every command takes the path of one database directory (the directory an [`Engine`] mounts), or the root of
//! a store (a [`mailstore::Store`]), in which case it runs on every database of the store in turn, one section
//! each, and exits with the worst of their codes. It works on databases that are **not** mounted: the
//! inspecting commands take a shared lock and `recover` mounts, so each of them refuses a database that an
//! engine (in any process) has mounted.
//!
//! Commands:
//!
//! - `mailstore status PATH`: the database's GUID, its state machine, epoch, checkpoint LSN, the LSN the state
//!   store has applied, the log head (generation and LSN), the oldest generation on disk, and whether the last
//!   mount ended with a clean dismount.
//! - `mailstore logs PATH`: one line per log generation on disk: number, epoch, first and last LSN, valid
//!   records, bytes up to the end of the last valid record, checksum of those bytes, whether the next
//!   generation's header links to it, and what is wrong with it, if anything.
//! - `mailstore check PATH`: verifies every generation (framing, checksums, LSN sequence), the chain between
//!   them, that none is missing, the checkpoint and the state store; prints every problem, each naming its
//!   file and offset. Changes nothing.
//! - `mailstore recover PATH`: mounts the database, which recovers it (replays the log into the state store,
//!   discards a torn tail of the last generation, removes leftovers of an interrupted generation create),
//!   prints what recovery found and did, and dismounts cleanly. It never creates a database and keeps the log
//!   policy stored in it (so generations a backup still needs stay). A database damaged inside its log (not
//!   just at its tail) is refused, unchanged. A checkpoint file that is missing, or damaged in both slots, is
//!   first rebuilt from the state store and the log (`engine::rebuild_checkpoint`; a damaged one is kept as
//!   `checkpoint.damaged`).
//! - `mailstore space PATH [--json]`: where the database's bytes are: used, free (pages of the state file the
//!   store reuses) and reclaimable (what `compact` gives back), the state file, the log, the segments.
//! - `mailstore compact PATH [--json]`: checks the database (refusing a damaged one), relocates the live
//!   message bodies out of mostly dead segments (logged, so copies replay it), and replaces the state file
//!   with a compacted copy; prints the space before and after.
//! - `mailstore recover-mailbox PATH --from DIR --mailbox M [--into M] [--folder NAME]`: single-mailbox
//!   recovery: mailbox `M` (address or GUID) of the dismounted database `DIR` (for example one restored from a
//!   backup) is written into a new folder (default `Recovered`) of mailbox `--into` (default `M`) of `PATH`, as
//!   ordinary logged operations, flags, keywords and received times kept.
//! - `mailstore repair PATH --from HEALTHY [--json]`: replaces the damaged (or lost) state store of `PATH` with
//!   the state of `HEALTHY` — a dismounted passive copy of the same database, or an older copy of `PATH` — and
//!   replays `PATH`'s own log on top of it; the damaged state is kept as `state.damaged-N/`. Refuses a copy of
//!   another database, a damaged one, and one the log cannot carry on from (records after it truncated).
//!
//! - `mailstore copy-status PATH [--source HOST:PORT]`: the status of a passive copy that is not open: its
//!   state, copy and replay queue lengths (against the active at `--source` when given, otherwise against the
//!   position the copy last saw), last copied and replayed LSN, epoch.
//! - `mailstore seed PATH --source HOST:PORT [--from HOST:PORT] [--machine mail|kv]`: creates a passive copy in
//!   `PATH` from a consistent snapshot of the active at `--source` (or of the healthy passive serving snapshots
//!   at `--from`), printing progress, then copies and replays the log until it has caught up with where the
//!   active stood, and closes it cleanly. A failed copy or an old active in `PATH` is replaced.
//! - `mailstore activate PATH [--dial lossless|good|best] [--epoch N] [--source HOST:PORT]`: activates a
//!   passive copy: refuses when more generations are missing than the dial allows (Lossless 0,
//!   GoodAvailability 6, BestAvailability 12), otherwise replays what it has, starts a new epoch (at least `N`)
//!   and leaves `PATH` an active database, dismounted cleanly, ready to mount.
//!
//! - `mailstore backup PATH --to TARGET [--incremental] [--json]`: mounts the database (refused when it is
//!   mounted elsewhere), takes a full backup (or an incremental one) into `TARGET`, and dismounts. A mounted
//!   database is backed up with the library's `mailstore::backup`.
//! - `mailstore restore --from TARGET --to DIR [--lsn N | --time RFC3339] [--json]`: restores the backups in
//!   `TARGET` into the new or empty directory `DIR`, up to the end, LSN `N`, or the last record committed at or
//!   before the time; mounting `DIR` replays the carried log.
//!
//!   `TARGET` is a backup directory, or `s3://bucket/prefix` in a build with the `s3` feature
//!   (`cargo build --features cli,s3`; `cli` alone does not bring the HTTP and TLS stack): endpoint, region and
//!   credentials come from the usual `AWS_*` variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP=true` for a plain-HTTP server). A build without `s3` refuses an
//!   `s3://` target and says to rebuild.
//!
//! Shipping commands authenticate with the shared key in the environment variable `MAILSTORE_SHIPPING_KEY` (a
//! passphrase).
//!
//! Exit codes:
//!
//! - `0`: success; for `check`, the database is healthy.
//! - `1`: the database is damaged: `check` found problems, or another command stopped because of damage
//!   (corruption inside the log, a missing generation, a broken chain, a foreign file, a state store ahead
//!   of its log).
//! - `2`: the command could not run: bad usage, the path is not a database, the database is mounted, the
//!   database was created for a state machine this build does not know, an I/O error.
//!
//! Errors are printed to stderr as `error: ...`.
//!
//! [`Engine`]: mailstore::Engine

mod backup;
mod copies;
mod inspect;
mod mail;
mod maintenance;

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
// The names of a database's parts, for the check that a path is a database before any library call (the `cli`
// feature enables `internals` for them).
use mailstore::internals::engine::{CHECKPOINT_FILE, LOGS_DIR, STATE_DIR};
use mailstore::kv::Kv;
use mailstore::model::MailStore;
use mailstore::{StateMachine, store};

use copies::{activate, copy_status, seed};
use inspect::{check, logs, recover, status};
use mail::{folders, mailboxes, recover_mailbox_into, store_database_holding};
use maintenance::{compact, repair, space};

/// Administration of mailstore databases (each command works on a dismounted database).
#[derive(Debug, Parser)]
#[command(name = "mailstore", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the position and shutdown state of a database.
    Status {
        /// A database directory, or a store root (every database in it).
        path: PathBuf,
    },
    /// List the log generations of a database, one line each.
    Logs {
        /// A database directory, or a store root (every database in it).
        path: PathBuf,
    },
    /// Verify a database without changing it; exits 1 when it is damaged.
    Check {
        /// A database directory, or a store root (every database in it).
        path: PathBuf,
    },
    /// Mount a database (running crash recovery), report what recovery did, and dismount it cleanly.
    Recover {
        /// A database directory, or a store root (every database in it).
        path: PathBuf,
    },
    /// Show where a database's bytes are: used, free and reclaimable.
    Space {
        /// A database directory, or a store root (every database in it).
        path: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Compact a database: relocate live message bodies out of mostly dead segments, compact the state file.
    Compact {
        /// A database directory, or a store root (every database in it).
        path: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Recover one mailbox out of another database (one restored from a backup) into a folder of a mailbox.
    RecoverMailbox {
        /// The mail database to recover into (dismounted).
        path: PathBuf,
        /// The database to recover from (dismounted).
        #[arg(long)]
        from: PathBuf,
        /// The mailbox to recover: its address or GUID in `--from`.
        #[arg(long)]
        mailbox: String,
        /// The mailbox to recover into (default: the same address or GUID).
        #[arg(long)]
        into: Option<String>,
        /// The folder created at the top of the target mailbox.
        #[arg(long, default_value = "Recovered")]
        folder: String,
    },
    /// Repair a damaged state store from a healthy copy of the database, and replay the log on top of it.
    Repair {
        /// The damaged database's directory.
        path: PathBuf,
        /// A dismounted healthy copy of the same database (a passive copy's directory, or an older copy).
        #[arg(long)]
        from: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the mailboxes of a mailbox database.
    Mailboxes {
        /// A database directory, or a store root (every database in it).
        path: PathBuf,
    },
    /// Show the status of a passive copy that is not open.
    CopyStatus {
        /// The copy's directory.
        path: PathBuf,
        /// The active's shipping address (HOST:PORT), to measure the queues against.
        #[arg(long)]
        source: Option<String>,
    },
    /// Create a passive copy from a snapshot of a running active, and catch it up.
    Seed {
        /// The copy's directory (created; a failed copy or an old active there is replaced).
        path: PathBuf,
        /// The active's shipping address (HOST:PORT).
        #[arg(long)]
        source: String,
        /// Take the snapshot from a healthy passive serving snapshots at this address instead.
        #[arg(long)]
        from: Option<String>,
        /// The database's state machine.
        #[arg(long, default_value = "mail")]
        machine: String,
    },
    /// Activate a passive copy under a mount dial: it becomes an active database with a new epoch.
    Activate {
        /// The copy's directory.
        path: PathBuf,
        /// How many missing generations to accept: lossless (0), good (6) or best (12).
        #[arg(long, default_value = "lossless")]
        dial: String,
        /// The lowest epoch to start (give one more than any copy reports).
        #[arg(long, default_value_t = 0)]
        epoch: u64,
        /// The active's shipping address, to copy what is left first (leave out when the active is gone).
        #[arg(long)]
        source: Option<String>,
    },
    /// Back up a dismounted database (full, or incremental) into a backup directory or `s3://bucket/prefix`.
    Backup {
        /// The database directory.
        path: PathBuf,
        /// The backup directory (created if missing), or `s3://bucket/prefix` (a build with the `s3` feature).
        #[arg(long)]
        to: String,
        /// Only the log closed since the newest backup in the directory.
        #[arg(long)]
        incremental: bool,
        /// Print the backup's catalogue entry as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup directory (or `s3://bucket/prefix`) into a new database directory, rolled forward to the
    /// end, an LSN or a time.
    Restore {
        /// The backup directory, or `s3://bucket/prefix` (a build with the `s3` feature).
        #[arg(long)]
        from: String,
        /// The new (missing or empty) database directory.
        #[arg(long)]
        to: PathBuf,
        /// Stop after this LSN.
        #[arg(long, conflicts_with = "time")]
        lsn: Option<u64>,
        /// Stop after the last record committed at or before this RFC 3339 time.
        #[arg(long)]
        time: Option<String>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the folder tree of one mailbox with its IMAP counters.
    Folders {
        /// A database directory, or a store root (the database holding the mailbox).
        path: PathBuf,
        /// The mailbox: its GUID or its address.
        mailbox: String,
    },
}

/// Exit code: the database is damaged.
const EXIT_DAMAGED: u8 = 1;
/// Exit code: the command could not run.
const EXIT_ERROR: u8 = 2;

/// Why a command failed, and with which exit code.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn error(message: impl Display) -> Self {
        Failure { code: EXIT_ERROR, message: message.to_string() }
    }

    fn with_context(mut self, context: &str) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl From<mailstore::Error> for Failure {
    fn from(e: mailstore::Error) -> Self {
        let code = if e.is_damage() { EXIT_DAMAGED } else { EXIT_ERROR };
        Failure { code, message: e.to_string() }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let folders_of;
    let space_of;
    let compact_of;
    let (path, run): (&Path, Run<'_>) = match &cli.command {
        Command::Status { path } => (path, &status),
        Command::Logs { path } => (path, &logs),
        Command::Check { path } => (path, &check),
        Command::Recover { path } => (path, &recover),
        Command::Mailboxes { path } => (path, &mailboxes),
        Command::Space { path, json } => {
            space_of = |dir: &Path| space(dir, *json);
            (path, &space_of)
        }
        Command::Compact { path, json } => {
            compact_of = |dir: &Path| compact(dir, *json);
            (path, &compact_of)
        }
        Command::RecoverMailbox { path, from, mailbox, into, folder } => {
            return report(database(path).and_then(|p| {
                database(from).and_then(|f| recover_mailbox_into(p, f, mailbox, into.as_deref(), folder))
            }));
        }
        Command::Repair { path, from, json } => return report(database(path).and_then(|p| repair(p, from, *json))),
        Command::CopyStatus { path, source } => return report(copy_status(path, source.as_deref())),
        Command::Seed { path, source, from, machine } => {
            return report(seed(path, source, from.as_deref(), machine));
        }
        Command::Activate { path, dial, epoch, source } => {
            return report(activate(path, dial, *epoch, source.as_deref()));
        }
        Command::Backup { path, to, incremental, json } => {
            return report(database(path).and_then(|dir| backup::backup_command(dir, to, *incremental, *json)));
        }
        Command::Restore { from, to, lsn, time, json } => {
            return report(backup::restore_command(from, to, *lsn, time.as_deref(), *json));
        }
        Command::Folders { path, mailbox } => {
            if store::is_store(path) {
                return report(store_database_holding(path, mailbox).and_then(|dir| folders(&dir, mailbox)));
            }
            folders_of = |dir: &Path| folders(dir, mailbox);
            (path, &folders_of)
        }
    };
    if store::is_store(path) {
        return over_store(path, run);
    }
    report(database(path).and_then(run))
}

/// A command that needs the state machine's type: `check`, `recover`, `seed` and `activate` run it with the
/// machine a database was created for (or was named), through [`with_machine`].
trait ForMachine {
    /// What the command returns.
    type Output;

    /// Runs the command as machine `M`.
    fn run<M: StateMachine>(self) -> Self::Output;
}

/// Runs `command` as the state machine named `name`: the one place that lists the state machines this build
/// knows. `None` when it knows none by that name.
fn with_machine<C: ForMachine>(name: &str, command: C) -> Option<C::Output> {
    match name {
        <Kv as StateMachine>::NAME => Some(command.run::<Kv>()),
        <MailStore as StateMachine>::NAME => Some(command.run::<MailStore>()),
        _ => None,
    }
}

/// One command, run on one database directory.
type Run<'a> = &'a dyn Fn(&Path) -> Result<ExitCode, Failure>;

/// Prints a failure and turns an outcome into the exit code.
fn report(outcome: Result<ExitCode, Failure>) -> ExitCode {
    match outcome {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Runs a command on every database of the store at `root`, one section each. The exit code is the worst
/// of the databases' (2 over 1 over 0), so `check` on a store exits 0 only when every database is healthy.
fn over_store(root: &Path, run: Run<'_>) -> ExitCode {
    let databases = match store::database_dirs(root) {
        Ok(dbs) => dbs,
        Err(e) => return report(Err(e.into())),
    };
    println!("store {}: {} database(s)", root.display(), databases.len());
    let mut worst = 0u8;
    for (name, dir) in databases {
        println!();
        println!("== database {name}");
        let code = match database(&dir).and_then(run) {
            Ok(code) if code == ExitCode::SUCCESS => 0,
            Ok(_) => EXIT_DAMAGED,
            Err(failure) => {
                eprintln!("error: {name}: {}", failure.message);
                failure.code
            }
        };
        worst = worst.max(code);
    }
    ExitCode::from(worst)
}

/// Refuses a path that is not a directory holding any part of a database before the library is called: the
/// inspecting functions create `PATH/lock`, which should not appear in an arbitrary directory named by
/// mistake. A directory holding any of the checkpoint, the state store or the log is a database, however
/// damaged (`check` then reports what is missing).
fn database(path: &Path) -> Result<&Path, Failure> {
    if !path.is_dir() {
        let reason = if path.exists() { "not a directory" } else { "no such directory" };
        return Err(Failure::error(format_args!("{}: {reason}", path.display())));
    }
    if ![CHECKPOINT_FILE, STATE_DIR, LOGS_DIR].iter().any(|part| path.join(part).exists()) {
        return Err(Failure::error(format_args!(
            "{} is not a mailstore database: it holds no {CHECKPOINT_FILE}, {STATE_DIR}/ or {LOGS_DIR}/",
            path.display()
        )));
    }
    Ok(path)
}

/// Prints `rows` as `label  value` lines with the values aligned, each line indented by `indent`.
fn print_fields(indent: &str, rows: &[(&str, String)]) {
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    for (label, value) in rows {
        println!("{indent}{label:<width$}  {value}");
    }
}

/// `n` followed by the singular or plural noun.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
