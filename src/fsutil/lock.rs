//! The lock a mounted database (or an open store) holds on its directory.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long a refused lock is retried before the directory counts as mounted elsewhere.
const LOCK_PATIENCE: Duration = Duration::from_millis(250);

/// Name of the lock file inside a database directory.
pub const LOCK_FILE: &str = "lock";

/// An advisory lock (`flock`) on `DIR/lock`, held for as long as the value lives.
///
/// The lock belongs to an open file description, so a second mount of the same directory conflicts whether it
/// comes from another process or from this one.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the exclusive lock (mounting), or fails with [`Error::AlreadyMounted`].
    pub(crate) fn exclusive(dir: &Path) -> Result<Self> {
        Self::take(dir, true, true)
    }

    /// Takes a shared lock (read-only inspection): conflicts with a mounted engine, not with other inspectors.
    /// The lock file is created only when `create` says so: inspecting a directory that is not a database must
    /// not leave a lock file in it, while a database copied without its lock file (a backup image) gets one.
    pub(crate) fn shared(dir: &Path, create: bool) -> Result<Self> {
        Self::take(dir, false, create)
    }

    fn take(dir: &Path, exclusive: bool, create: bool) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let create = exclusive || create;
        let file = match OpenOptions::new().read(true).write(true).create(create).truncate(false).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotADatabase { path: dir.to_path_buf(), reason: "no lock file".into() });
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        // A lock that was just released can still look held for a moment: a process that forks (to spawn a
        // child) while the lock is held gives the child a copy of the descriptor, which keeps the lock until
        // the child calls exec. So a refused attempt is retried for a short while before giving up.
        let started = Instant::now();
        loop {
            let taken = if exclusive { file.try_lock() } else { file.try_lock_shared() };
            match taken {
                Ok(()) => return Ok(DirLock { _file: file }),
                Err(TryLockError::WouldBlock) if started.elapsed() < LOCK_PATIENCE => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TryLockError::WouldBlock) => return Err(Error::AlreadyMounted { path: dir.to_path_buf() }),
                Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
        }
    }
}
