//! The passive-copy commands: `copy-status`, `seed`, `activate`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use mailstore::engine;
use mailstore::model::MailStore;
use mailstore::replication::{
    self, CopyOptions, CopyState, CopyStatus, Hello, LogSource, MountDial, NoSource, PassiveCopy, ShippingKey,
    TcpSource,
};
use mailstore::{Guid, Options, StateMachine, Timestamp};

use crate::{Failure, ForMachine, print_fields, with_machine};

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
    let when = |t: Option<Timestamp>| t.map_or_else(|| "never".to_string(), |t| t.to_string());
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
            ("last copied LSN", format!("{} ({})", s.last_copied_lsn, when(s.last_copied))),
            ("last inspected LSN", s.last_inspected_lsn.to_string()),
            ("last replayed LSN", s.last_replayed_lsn.to_string()),
            ("checkpoint LSN", s.checkpoint_lsn.to_string()),
            ("source", format!("generation {}, LSN {}", s.source_generation, s.source_lsn)),
            ("epoch", s.epoch.to_string()),
        ],
    );
}

pub(crate) fn copy_status(dir: &Path, source: Option<&str>) -> Result<ExitCode, Failure> {
    let source = source.map(tcp_source).transpose()?;
    let s = replication::offline_copy_status(dir, source.as_deref())?;
    print_copy_status(dir, &s);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn seed(dir: &Path, source: &str, from: Option<&str>, machine: &str) -> Result<ExitCode, Failure> {
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

pub(crate) fn activate(dir: &Path, dial: &str, epoch: u64, source: Option<&str>) -> Result<ExitCode, Failure> {
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
