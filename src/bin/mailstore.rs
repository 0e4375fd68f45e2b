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
//!   just at its tail) is refused, unchanged.
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

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use heed::RoTxn;
use mailstore::engine::{self, CheckReport, GenerationInfo, OfflineStatus, TailTruncation};
// The names of a database's parts, for the check that a path is a database before any library call (the `cli`
// feature enables `internals` for them).
use mailstore::internals::engine::{CHECKPOINT_FILE, LOGS_DIR, STATE_DIR};
use mailstore::kv::Kv;
use mailstore::model::{MailStore, MailboxInfo};
use mailstore::replication::{
    self, CopyOptions, CopyState, CopyStatus, Hello, LogSource, MountDial, NoSource, PassiveCopy, ShippingKey,
    TcpSource,
};
use mailstore::{Engine, Guid, Options, RecoveryMode, RecoveryReport, StateMachine, store};

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
    let (path, run): (&Path, Run<'_>) = match &cli.command {
        Command::Status { path } => (path, &status),
        Command::Logs { path } => (path, &logs),
        Command::Check { path } => (path, &check),
        Command::Recover { path } => (path, &recover),
        Command::Mailboxes { path } => (path, &mailboxes),
        Command::CopyStatus { path, source } => return report(copy_status(path, source.as_deref())),
        Command::Seed { path, source, from, machine } => {
            return report(seed(path, source, from.as_deref(), machine));
        }
        Command::Activate { path, dial, epoch, source } => {
            return report(activate(path, dial, *epoch, source.as_deref()));
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

/// The database of the store at `root` that holds `mailbox`.
fn store_database_holding(root: &Path, mailbox: &str) -> Result<PathBuf, Failure> {
    for (_, dir) in store::database_dirs(root)? {
        if engine::machine_name(&dir).is_ok_and(|m| m == <MailStore as StateMachine>::NAME)
            && engine::with_state::<MailStore, _>(&dir, |s, txn| find_mailbox(s, txn, mailbox))
                .is_ok_and(|m| m.is_some())
        {
            return Ok(dir);
        }
    }
    Err(Failure::error(format_args!("no database of {} holds mailbox {mailbox:?}", root.display())))
}

fn find_mailbox(s: &MailStore, txn: &RoTxn<'_>, mailbox: &str) -> mailstore::Result<Option<MailboxInfo>> {
    match mailbox.parse::<Guid>() {
        Ok(guid) => s.mailbox(txn, &guid),
        Err(_) => s.mailbox_by_address(txn, mailbox),
    }
}

fn require_mail_database(dir: &Path) -> Result<(), Failure> {
    let machine = engine::machine_name(dir)?;
    if machine != <MailStore as StateMachine>::NAME {
        return Err(Failure::error(format_args!("{} holds {machine:?} state, not mailboxes", dir.display())));
    }
    Ok(())
}

fn mailboxes(dir: &Path) -> Result<ExitCode, Failure> {
    require_mail_database(dir)?;
    let list = engine::with_state::<MailStore, _>(dir, |s, txn| s.mailboxes(txn))?;
    println!(
        "{:<36}  {:<30}  {:<22}  {:>7}  {:>12}  {:>9}  {:>12}  {:>8}",
        "GUID", "ADDRESS", "KIND", "ITEMS", "BYTES", "RECOV", "RECOV BYTES", "MODSEQ"
    );
    for m in &list {
        println!(
            "{:<36}  {:<30}  {:<22}  {:>7}  {:>12}  {:>9}  {:>12}  {:>8}",
            m.guid.to_string(),
            m.address,
            format!("{:?}", m.kind),
            m.items,
            m.size,
            m.recoverable_items,
            m.recoverable_size,
            m.highest_modseq
        );
    }
    println!("{} mailbox(es)", list.len());
    Ok(ExitCode::SUCCESS)
}

fn folders(dir: &Path, mailbox: &str) -> Result<ExitCode, Failure> {
    require_mail_database(dir)?;
    let (m, list) = engine::with_state::<MailStore, _>(dir, |s, txn| {
        let Some(m) = find_mailbox(s, txn, mailbox)? else { return Ok((None, Vec::new())) };
        let folders = s.folders(txn, &m.guid)?;
        Ok((Some(m), folders))
    })?;
    let Some(m) = m else {
        return Err(Failure::error(format_args!("{}: no mailbox {mailbox:?}", dir.display())));
    };
    println!("mailbox {} ({}), {:?}", m.address, m.guid, m.kind);
    println!(
        "{:<40}  {:>5}  {:<10}  {:>11}  {:>7}  {:>8}  {:>6}  {:>6}  {:>10}",
        "FOLDER", "ID", "USE", "UIDVALIDITY", "UIDNEXT", "MODSEQ", "TOTAL", "UNREAD", "BYTES"
    );
    // Depth-first from the root, children in id order.
    let mut stack: Vec<(u64, usize)> = list.iter().filter(|f| f.parent.is_none()).map(|f| (f.id, 0)).collect();
    while let Some((id, depth)) = stack.pop() {
        let Some(f) = list.iter().find(|f| f.id == id) else { continue };
        let name =
            if f.parent.is_none() { "(root)".to_string() } else { format!("{}{}", "  ".repeat(depth - 1), f.name) };
        let usage = f.role.and_then(|r| r.special_use()).unwrap_or(if f.hidden { "hidden" } else { "" });
        if f.parent.is_some() {
            println!(
                "{:<40}  {:>5}  {:<10}  {:>11}  {:>7}  {:>8}  {:>6}  {:>6}  {:>10}",
                name, f.id, usage, f.uidvalidity, f.uidnext, f.highest_modseq, f.total, f.unread, f.size
            );
        }
        let mut children: Vec<u64> = list.iter().filter(|c| c.parent == Some(id)).map(|c| c.id).collect();
        children.sort_unstable_by(|a, b| b.cmp(a));
        stack.extend(children.into_iter().map(|c| (c, depth + 1)));
    }
    Ok(ExitCode::SUCCESS)
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

fn status(dir: &Path) -> Result<ExitCode, Failure> {
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

fn logs(dir: &Path) -> Result<ExitCode, Failure> {
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

fn check(dir: &Path) -> Result<ExitCode, Failure> {
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

/// `n` followed by the singular or plural noun.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn recover(dir: &Path) -> Result<ExitCode, Failure> {
    // The machine name comes from the state store alone, so a damaged log does not hide it.
    let machine = engine::machine_name(dir)?;
    let report = with_machine(&machine, RecoverAs(dir)).unwrap_or_else(|| {
        Err(Failure::error(format_args!(
            "{} was created for state machine {machine:?}, which this build of mailstore does not know",
            dir.display()
        )))
    })?;
    print_recovery(dir, &report);
    Ok(ExitCode::SUCCESS)
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

/// The shipping key from `MAILSTORE_SHIPPING_KEY`.
fn shipping_key() -> Result<ShippingKey, Failure> {
    let passphrase = std::env::var("MAILSTORE_SHIPPING_KEY")
        .map_err(|_| Failure::error("set MAILSTORE_SHIPPING_KEY to the shipping passphrase"))?;
    Ok(ShippingKey::from_passphrase(&passphrase))
}

fn tcp_source(addr: &str) -> Result<Arc<dyn LogSource>, Failure> {
    Ok(Arc::new(TcpSource::new(addr, shipping_key()?)))
}

fn print_copy_status(dir: &Path, s: &CopyStatus) {
    let micros = |m: u64| if m == 0 { "never".to_string() } else { format!("{m} µs since the Unix epoch") };
    print_fields(
        "",
        &[
            ("copy", dir.display().to_string()),
            ("copy id", s.copy.to_string()),
            ("database", s.database.to_string()),
            ("state", format!("{:?}", s.state)),
            ("reason", s.reason.clone().unwrap_or_else(|| "-".into())),
            ("copy queue length", format!("{} generation(s)", s.copy_queue_length)),
            ("replay queue length", format!("{} generation(s)", s.replay_queue_length)),
            ("last copied LSN", format!("{} ({})", s.last_copied_lsn, micros(s.last_copied_micros))),
            ("last inspected LSN", s.last_inspected_lsn.to_string()),
            ("last replayed LSN", s.last_replayed_lsn.to_string()),
            ("checkpoint LSN", s.checkpoint_lsn.to_string()),
            ("source", format!("generation {}, LSN {}", s.source_generation, s.source_lsn)),
            ("epoch", s.epoch.to_string()),
        ],
    );
}

fn copy_status(dir: &Path, source: Option<&str>) -> Result<ExitCode, Failure> {
    let source = source.map(tcp_source).transpose()?;
    let s = replication::offline_copy_status(dir, source.as_deref())?;
    print_copy_status(dir, &s);
    Ok(ExitCode::SUCCESS)
}

fn seed(dir: &Path, source: &str, from: Option<&str>, machine: &str) -> Result<ExitCode, Failure> {
    // `mail` is how `--machine` spells the mailbox model.
    let name = if machine == "mail" { <MailStore as StateMachine>::NAME } else { machine };
    with_machine(name, SeedAs { dir, source, from })
        .unwrap_or_else(|| Err(Failure::error(format_args!("unknown state machine {machine:?} (mail or kv)"))))
}

/// Seeds a copy of the given machine from a snapshot, then catches it up with the log.
struct SeedAs<'a> {
    dir: &'a Path,
    source: &'a str,
    from: Option<&'a str>,
}

impl ForMachine for SeedAs<'_> {
    type Output = Result<ExitCode, Failure>;

    fn run<M: StateMachine>(self) -> Self::Output {
        seed_as::<M>(self.dir, self.source, self.from)
    }
}

fn seed_as<M: StateMachine>(dir: &Path, source: &str, from: Option<&str>) -> Result<ExitCode, Failure> {
    let log = tcp_source(source)?;
    let snapshots = match from {
        Some(addr) => tcp_source(addr)?,
        None => Arc::clone(&log),
    };
    let mut shown = 0u64;
    let copy = PassiveCopy::<M>::seed(dir, snapshots.as_ref(), Arc::clone(&log), CopyOptions::default(), |p| {
        if p.bytes == p.total || p.bytes >= shown + (16 << 20) {
            println!("snapshot: {} of {} KiB", p.bytes >> 10, p.total >> 10);
            shown = p.bytes;
        }
    })?;
    let target = log.hello(Hello { copy: copy.id(), known_epoch: 0, keep_lsn: 0 })?.position.lsn;
    println!("seeded; catching up to LSN {target}");
    while !copy.wait_replayed(target, Duration::from_secs(2)) {
        let s = copy.status();
        if matches!(s.state, CopyState::Failed | CopyState::FailedAndSuspended) {
            return Err(Failure::error(format_args!("the copy failed: {}", s.reason.unwrap_or_default())));
        }
        println!("  copied LSN {}, replayed LSN {}, state {:?}", s.last_copied_lsn, s.last_replayed_lsn, s.state);
    }
    let status = copy.status();
    copy.close()?;
    print_copy_status(dir, &status);
    Ok(ExitCode::SUCCESS)
}

fn activate(dir: &Path, dial: &str, epoch: u64, source: Option<&str>) -> Result<ExitCode, Failure> {
    let dial = match dial {
        "lossless" => MountDial::Lossless,
        "good" => MountDial::GoodAvailability,
        "best" => MountDial::BestAvailability,
        other => return Err(Failure::error(format_args!("unknown mount dial {other:?} (lossless, good, best)"))),
    };
    let machine = engine::machine_name(dir)?;
    with_machine(&machine, ActivateAs { dir, dial, epoch, source }).unwrap_or_else(|| {
        Err(Failure::error(format_args!("{} holds state machine {machine:?}, unknown here", dir.display())))
    })
}

/// Activates a passive copy of the given machine.
struct ActivateAs<'a> {
    dir: &'a Path,
    dial: MountDial,
    epoch: u64,
    source: Option<&'a str>,
}

impl ForMachine for ActivateAs<'_> {
    type Output = Result<ExitCode, Failure>;

    fn run<M: StateMachine>(self) -> Self::Output {
        activate_as::<M>(self.dir, self.dial, self.epoch, self.source)
    }
}

fn activate_as<M: StateMachine>(
    dir: &Path,
    dial: MountDial,
    epoch: u64,
    source: Option<&str>,
) -> Result<ExitCode, Failure> {
    let source: Arc<dyn LogSource> = match source {
        Some(addr) => tcp_source(addr)?,
        None => Arc::new(NoSource),
    };
    let reachable = source.hello(Hello { copy: Guid::new_random(), known_epoch: 0, keep_lsn: 0 }).is_ok();
    let copy = PassiveCopy::<M>::open(dir, Arc::clone(&source), CopyOptions::default())?;
    copy.resume()?;
    if reachable {
        // Copy what the source still has before deciding.
        let target = source.hello(Hello { copy: copy.id(), known_epoch: 0, keep_lsn: 0 })?.position.lsn;
        copy.wait_replayed(target, Duration::from_secs(60));
    }
    let before = copy.status();
    print_copy_status(dir, &before);
    let db = copy.activate(dial, epoch.max(before.epoch + 1), Options::default().create_if_missing(false))?;
    let status = db.status();
    db.dismount()?;
    println!(
        "activated {} under {dial}: epoch {}, log continues at generation {} after LSN {}; dismounted cleanly",
        dir.display(),
        status.epoch,
        status.head_generation,
        status.applied_lsn
    );
    Ok(ExitCode::SUCCESS)
}
