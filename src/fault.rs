//! Fail points for fault-injection tests.
//!
//! With the `failpoints` feature, every write and sync of the log (an active's, and a passive copy's: both
//! append with `log::LogWriter`) and of the checkpoint passes through a named
//! fail point of the [`fail`](https://docs.rs/fail) crate. A test configures one with
//! `fail::cfg("log::append::sync", "return")` (an EIO) or `"return(enospc)"` (an ENOSPC). Without the feature
//! the macro expands to nothing.
//!
//! | fail point            | where                                              |
//! |-----------------------|----------------------------------------------------|
//! | `log::append::write`  | writing a batch of records (or a copied chunk) to the current generation |
//! | `log::append::sync`   | the `fdatasync` that makes a batch durable         |
//! | `log::roll::create`   | creating (or recycling) the next generation         |
//! | `log::roll::sync`     | syncing the new generation and the `logs/` directory |
//! | `checkpoint::write`   | writing a checkpoint slot                          |
//! | `checkpoint::sync`    | syncing the checkpoint file                        |
//!
//! Steps of offline operations that replace files, and of backup and restore, are marked with [`crash_point!`]: a crash test configures one
//! with `"panic"` in a child process whose panic hook aborts, so the process dies there as in a crash (no
//! unwinding, nothing cleaned up), and then checks what the next mount finds.
//!
//! | crash point               | where                                                        |
//! |---------------------------|--------------------------------------------------------------|
//! | `compact::relocated`      | `compact`: the live bodies relocated (logged), before the dismount |
//! | `compact::dismounted`     | `compact`: dismounted, before the compacted copy is written  |
//! | `compact::copy_synced`    | `compact`: the compacted copy written and synced, before the rename |
//! | `compact::renamed`        | `compact`: the copy renamed over `data.mdb`, before the directory sync |
//! | `backup::staged`          | a backup: the staging directory holds the links (and a full backup's snapshot) |
//! | `backup::snapshot_written`| a full backup: the state snapshot copied into `<id>.partial`  |
//! | `backup::logs_copied`     | a backup: every file written into `<id>.partial`, before the syncs |
//! | `backup::synced`          | a backup: `<id>.partial` synced, before the rename to `<id>` |
//! | `backup::renamed`         | a backup: renamed to `<id>` (target synced), before the catalogue names it |
//! | `backup::catalogued`      | a backup: the catalogue stored, before the staging directory is removed |
//! | `restore::marked`         | `restore`: the `RESTORING` marker written, before anything else |
//! | `restore::files_copied`   | `restore`: state, segments and log copied and synced, before the checkpoint |
//! | `restore::checkpoint_written` | `restore`: the checkpoint written, before the marker is removed |

/// The I/O error a fail point injects: `enospc` gives ENOSPC, anything else EIO.
#[cfg(feature = "failpoints")]
pub(crate) fn injected(name: &str, arg: Option<&str>) -> std::io::Error {
    let errno = match arg {
        Some("enospc") => 28, // ENOSPC
        _ => 5,               // EIO
    };
    let e = std::io::Error::from_raw_os_error(errno);
    std::io::Error::new(e.kind(), format!("injected at fail point {name}: {e}"))
}

/// Returns an injected `io::Error` from the enclosing function (which must return `io::Result<_>`) when the
/// named fail point is configured.
macro_rules! fail_io {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name, |arg: Option<String>| Err($crate::fault::injected($name, arg.as_deref())));
    };
}
pub(crate) use fail_io;

/// Marks a step where a crash test may end the process (see the table above). Without the feature it expands to
/// nothing.
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name);
    };
}
pub(crate) use crash_point;
