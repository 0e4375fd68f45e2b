//! The exclusive lock a mounted engine holds on its directory.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

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
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).at(&path)?;
        let taken = if exclusive { file.try_lock() } else { file.try_lock_shared() };
        match taken {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(Error::AlreadyMounted { path: dir.to_path_buf() }),
            Err(TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }
}
