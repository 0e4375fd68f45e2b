//! The exclusive lock a mounted engine holds on its directory.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use crate::engine::{CHECKPOINT_FILE, STATE_DIR};
use crate::error::{Error, Result};

/// Name of the lock file inside a database directory.
pub const LOCK_FILE: &str = "lock";

/// An advisory lock (`flock`) on `DIR/lock`, held for as long as the value lives.
///
/// The lock belongs to an open file description, so a second mount of the same directory conflicts whether it
/// comes from another process or from this one.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the exclusive lock (mounting), or fails with [`Error::AlreadyMounted`].
    pub fn exclusive(dir: &Path) -> Result<Self> {
        Self::take(dir, true)
    }

    /// Takes a shared lock (read-only inspection): conflicts with a mounted engine, not with other inspectors.
    pub fn shared(dir: &Path) -> Result<Self> {
        Self::take(dir, false)
    }

    fn take(dir: &Path, exclusive: bool) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        // Inspecting a directory that is not a database must not leave a lock file in it; a database copied
        // without its lock file (a backup image) gets one.
        let create = exclusive || dir.join(CHECKPOINT_FILE).exists() || dir.join(STATE_DIR).exists();
        let file = match OpenOptions::new().read(true).write(true).create(create).truncate(false).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotADatabase { path: dir.to_path_buf(), reason: "no lock file".into() });
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let taken = if exclusive { file.try_lock() } else { file.try_lock_shared() };
        match taken {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(Error::AlreadyMounted { path: dir.to_path_buf() }),
            Err(TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }
}
