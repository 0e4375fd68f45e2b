//! A copy's administrative files and actions: the copy file (identity, suspended, failed, last known source),
//! the directory markers (seeding, resynchronizing, unsynced with its boot id), suspend/resume and learned epochs.

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::PassiveCopy;
use super::shared::Shared;
use crate::codec;
use crate::engine::{COPY_FILE, StateMachine, write_fence};
use crate::error::{Error, Result};
use crate::replication::protocol::{CopyId, SourceInfo};

/// The snapshot being received while a copy is seeded (inside `state/`): its presence means "Seeding".
pub(super) const SEEDING_FILE: &str = "data.mdb.seeding";
/// Present while [`resync`](crate::replication::resync) works on a directory: its presence means "Resynchronizing".
pub(crate) const RESYNCING_FILE: &str = "resyncing";

/// Marker of a copy open with [`StateSync::AtCheckpoint`]: the boot id of the machine it runs on.
///
/// [`StateSync::AtCheckpoint`]: super::StateSync::AtCheckpoint
pub(super) const UNSYNCED_FILE: &str = "unsynced";

/// This boot's identity (Linux); `None` where the system does not say.
pub(super) fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// The copy's identity and administrative state, in `DIR/copy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CopyFile {
    pub(crate) id: CopyId,
    pub(crate) suspended: bool,
    pub(crate) failed: Option<String>,
    /// The source as last seen: what activation measures missing generations against when the source is gone.
    pub(crate) source: Option<SourceInfo>,
}

pub(crate) fn read_copy_file(dir: &Path) -> Result<Option<CopyFile>> {
    let path = dir.join(COPY_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    if bytes.len() > 64 << 10 || bytes.len() < 4 {
        return Err(Error::corrupted(&path, 0, "copy file has an impossible length"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(Error::corrupted(&path, 0, "copy file checksum mismatch"));
    }
    codec::decode(body).map(Some).map_err(|e| Error::corrupted(&path, 0, e.to_string()))
}

pub(crate) fn write_copy_file(dir: &Path, file: &CopyFile) -> Result<()> {
    let mut bytes = codec::encode(file)?;
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    crate::fsutil::replace_file(dir, COPY_FILE, &bytes)
}

/// True when `dir` holds a passive copy.
pub fn is_passive_copy(dir: &Path) -> bool {
    dir.join(COPY_FILE).is_file()
}

impl<M: StateMachine> PassiveCopy<M> {
    /// Suspends copying and replaying (the source keeps the log the copy needs; see
    /// [`SourceOptions::max_pinned_generations`](crate::replication::SourceOptions) for the guard). Survives a restart.
    /// Returns once the copier has finished the request it had in flight: nothing more is copied after it.
    pub fn suspend(&self) -> Result<()> {
        self.set_admin(true, false)?;
        let mut p = self.shared.progress.lock();
        while p.copier_busy && !self.shared.stopped() {
            self.shared.changed.wait_for(&mut p, Duration::from_millis(50));
        }
        Ok(())
    }

    /// Resumes a suspended or failed copy (clearing the failure: the copier retries where it stopped). A copy
    /// whose own log write or sync failed refuses with [`Error::CopyPoisoned`]: close it and open it again.
    pub fn resume(&self) -> Result<()> {
        if let Some(reason) = self.shared.progress.lock().poisoned.clone() {
            return Err(Error::CopyPoisoned { reason });
        }
        self.set_admin(false, true)
    }

    fn set_admin(&self, suspended: bool, clear_failure: bool) -> Result<()> {
        let mut p = self.shared.progress.lock();
        p.suspended = suspended;
        if clear_failure {
            p.failed = false;
            p.reason = None;
        }
        self.shared.save_admin(&p)?;
        drop(p);
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Learns that epoch `epoch` exists (from a coordinator, or another copy's status): the copy then refuses
    /// log from any older active. Stored durably.
    pub fn learn_epoch(&self, epoch: u64) -> Result<()> {
        learn_epoch(&self.shared, epoch)
    }
}

pub(super) fn learn_epoch<M: StateMachine>(shared: &Shared<M>, epoch: u64) -> Result<()> {
    let mut p = shared.progress.lock();
    if epoch > p.known_epoch {
        write_fence(&shared.dir, epoch)?;
        p.known_epoch = epoch;
    }
    Ok(())
}
