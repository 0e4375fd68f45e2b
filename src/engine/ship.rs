//! What an active engine shares with the log shipping source ([`crate::replication::ShippingSource`]): the
//! durable end of its log, the copies' acknowledgements for synchronous mode, and the fence.
//!
//! The writer publishes the log position after every batch is durable (after its `fdatasync` in
//! [`Durability::Full`](crate::Durability::Full), after its write in `Relaxed`), so a passive copy is never
//! shipped a record the active could still lose.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::{Guid, Lsn};

/// Name of the file that makes a directory a passive copy (`crate::replication`): such a directory is mounted
/// only by activating the copy.
pub const COPY_FILE: &str = "copy";
/// Name of the fence file inside a database directory: the newest epoch this copy knows exists elsewhere.
pub const FENCE_FILE: &str = "fence";

/// A position in a database's log: the end of the records of one generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogPosition {
    /// The generation.
    pub generation: u64,
    /// Offset just past its last durable record (the header length for a generation with no record yet).
    pub offset: u64,
    /// LSN of the last durable record of the log (0: none).
    pub lsn: Lsn,
    /// Epoch of that generation.
    pub epoch: u64,
}

/// Synchronous replication: commits wait for copies (RPO 0), PostgreSQL's `synchronous_standby_names` in spirit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncPolicy {
    /// How many passive copies must hold a record durably in their log before its commit is acknowledged.
    pub copies: usize,
    /// How long a commit waits for them.
    pub timeout: Duration,
    /// What happens when they do not answer in time.
    pub on_timeout: OnSyncTimeout,
}

/// What a synchronous commit does when too few copies acknowledged it within [`SyncPolicy::timeout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnSyncTimeout {
    /// The commit returns [`Error::NotReplicated`]: it **is** durable and applied locally, but not confirmed
    /// on enough copies, so a failover may lose it. Every commit keeps waiting the full timeout while copies are
    /// missing: writes slow down rather than silently lose RPO 0.
    Fail,
    /// The commit is acknowledged with local durability only, and the database is *degraded*
    /// ([`crate::EngineStatus::sync_degraded`]): later commits do not wait until enough copies have caught up
    /// with the head again. RPO 0 does not hold while degraded.
    Degrade,
}

#[derive(Default)]
struct Acks {
    /// Durable LSN per connected copy.
    copies: BTreeMap<Guid, Lsn>,
    policy: Option<SyncPolicy>,
    degraded: bool,
}

/// The shared part; see the module docs.
pub(crate) struct Shipping {
    pub(crate) dir: PathBuf,
    position: Mutex<LogPosition>,
    advanced: Condvar,
    acks: Mutex<Acks>,
    acked: Condvar,
    /// The newest epoch known to exist elsewhere (0: none). Read on every commit, so an atomic; `set_fence`
    /// writes it under `fence_write`, after the fence file.
    fence: AtomicU64,
    fence_write: Mutex<()>,
}

impl Shipping {
    pub(crate) fn new(dir: &Path, position: LogPosition, policy: Option<SyncPolicy>) -> Result<Self> {
        Ok(Shipping {
            dir: dir.to_path_buf(),
            position: Mutex::new(position),
            advanced: Condvar::new(),
            acks: Mutex::new(Acks { policy, ..Acks::default() }),
            acked: Condvar::new(),
            fence: AtomicU64::new(read_fence(dir)?.unwrap_or(0)),
            fence_write: Mutex::new(()),
        })
    }

    /// Publishes a new durable end of the log and wakes sources waiting for it.
    pub(crate) fn publish(&self, position: LogPosition) {
        *self.position.lock() = position;
        self.advanced.notify_all();
    }

    pub(crate) fn position(&self) -> LogPosition {
        *self.position.lock()
    }

    /// Waits until the durable end differs from `seen` or someone wakes the waiters (a copy leaving), at most
    /// `timeout`; returns the position either way. Callers re-check their own conditions and wait again.
    pub(crate) fn wait_past(&self, seen: LogPosition, timeout: Duration) -> LogPosition {
        let mut position = self.position.lock();
        if *position == seen {
            self.advanced.wait_for(&mut position, timeout);
        }
        *position
    }

    /// Records that `copy` holds every record up to `lsn` durably.
    pub(crate) fn acknowledge(&self, copy: Guid, lsn: Lsn) {
        let mut acks = self.acks.lock();
        let entry = acks.copies.entry(copy).or_insert(0);
        *entry = (*entry).max(lsn);
        self.acked.notify_all();
    }

    /// Forgets `copy` (it disconnected or was removed): it no longer counts for synchronous commits.
    pub(crate) fn forget(&self, copy: Guid) {
        self.acks.lock().copies.remove(&copy);
        self.acked.notify_all();
    }

    pub(crate) fn set_policy(&self, policy: Option<SyncPolicy>) {
        let mut acks = self.acks.lock();
        acks.policy = policy;
        acks.degraded = false;
        self.acked.notify_all();
    }

    pub(crate) fn policy(&self) -> (Option<SyncPolicy>, bool) {
        let acks = self.acks.lock();
        (acks.policy, acks.degraded)
    }

    /// Waits until enough copies hold `lsn` (synchronous mode). `Ok(())` when no policy is set, when enough
    /// copies answered, or when the policy degrades on timeout; [`Error::NotReplicated`] otherwise.
    pub(crate) fn wait_replicated(&self, lsn: Lsn) -> Result<()> {
        let mut acks = self.acks.lock();
        let Some(policy) = acks.policy else { return Ok(()) };
        let holding = |acks: &Acks| acks.copies.values().filter(|&&l| l >= lsn).count();
        if acks.degraded {
            // Leave degraded mode once enough copies have caught up with the head again.
            if holding(&acks) >= policy.copies {
                acks.degraded = false;
            }
            return Ok(());
        }
        let deadline = Instant::now() + policy.timeout;
        while holding(&acks) < policy.copies {
            if self.acked.wait_until(&mut acks, deadline).timed_out() && holding(&acks) < policy.copies {
                return match policy.on_timeout {
                    OnSyncTimeout::Degrade => {
                        acks.degraded = true;
                        Ok(())
                    }
                    OnSyncTimeout::Fail => {
                        Err(Error::NotReplicated { lsn, copies: holding(&acks), required: policy.copies })
                    }
                };
            }
            if acks.policy.is_none() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The newest epoch known to exist elsewhere, if it fences this copy.
    pub(crate) fn fence(&self) -> Option<u64> {
        Some(self.fence.load(Ordering::Acquire)).filter(|&e| e > 0)
    }

    /// Records durably that epoch `epoch` exists; this copy refuses writes from now on if it is older.
    pub(crate) fn set_fence(&self, epoch: u64) -> Result<()> {
        let _write = self.fence_write.lock();
        if self.fence.load(Ordering::Acquire) >= epoch {
            return Ok(());
        }
        write_fence(&self.dir, epoch)?;
        self.fence.store(epoch, Ordering::Release);
        // Wake committers waiting for copies: they must see the fence.
        self.acked.notify_all();
        Ok(())
    }
}

/// Reads the fence file of `dir`, if there is one.
pub fn read_fence(dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(FENCE_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let parsed = <[u8; 12]>::try_from(bytes.as_slice()).ok().and_then(|b| {
                let (epoch, crc) = b.split_at(8);
                let epoch: [u8; 8] = epoch.try_into().ok()?;
                (crc32fast::hash(&epoch).to_le_bytes() == crc).then(|| u64::from_le_bytes(epoch))
            });
            parsed.map(Some).ok_or_else(|| Error::corrupted(&path, 0, "fence file is not 8 bytes of epoch + CRC32"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Writes the fence file of `dir` durably (temporary file, fsync, rename, directory fsync).
pub fn write_fence(dir: &Path, epoch: u64) -> Result<()> {
    let mut bytes = epoch.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32fast::hash(&epoch.to_le_bytes()).to_le_bytes());
    crate::fsutil::replace_file(dir, FENCE_FILE, &bytes)
}
