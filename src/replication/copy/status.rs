//! What a copy reports: [`CopyState`], [`CopyStatus`] and how it is computed from the progress, the status of a
//! copy that is not open ([`offline_copy_status`]), the [`MountDial`] of activation, and [`NoSource`].

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::admin::{CopyFile, RESYNCING_FILE, SEEDING_FILE, read_copy_file};
use super::options::CopyOptions;
use super::shared::{Progress, Shared, read_log};
use crate::engine::checkpoint::CheckpointFile;
use crate::engine::state;
use crate::engine::{Durability, LOGS_DIR, StateMachine, read_fence};
use crate::error::{Error, Result};
use crate::replication::ReplicationError;
use crate::replication::protocol::{Chunk, CopyId, Hello, LogSource, ReadRequest, SnapshotRequest, SourceInfo};
use crate::time::Timestamp;
use crate::types::{Guid, Lsn};

/// The state of a copy, as Exchange names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyState {
    /// Opened, not yet in contact with its source.
    Initializing,
    /// Copying and replaying.
    Healthy,
    /// Finding where its log diverged from the new active's and discarding what diverged.
    Resynchronizing,
    /// Receiving a snapshot.
    Seeding,
    /// Serving a snapshot to a copy being seeded (and otherwise healthy).
    SeedingSource,
    /// Suspended by an administrator: neither copying nor replaying.
    Suspended,
    /// Stopped by an error it cannot get past alone (see the reason); resume or reseed it.
    Failed,
    /// Failed and suspended: needs an administrator (a divergence that could not be resolved ends here).
    FailedAndSuspended,
    /// Its source is unreachable; what it has is sound and it retries.
    DisconnectedAndHealthy,
    /// It was activated: it is now the mounted active copy.
    Mounted,
    /// Closed.
    Dismounted,
}

/// What a passive copy reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CopyStatus {
    /// The copy.
    pub copy: CopyId,
    /// The database.
    pub database: Guid,
    /// Its state.
    pub state: CopyState,
    /// Why it failed, or why it is disconnected.
    pub reason: Option<String>,
    /// Copy queue length: generations the source has of which the copy lacks some bytes.
    pub copy_queue_length: u64,
    /// Replay queue length: generations copied and inspected but not completely replayed.
    pub replay_queue_length: u64,
    /// Last LSN copied (received and written).
    pub last_copied_lsn: Lsn,
    /// When (`None`: never).
    pub last_copied: Option<Timestamp>,
    /// Last LSN inspected (every copied record is inspected before it is written).
    pub last_inspected_lsn: Lsn,
    /// When (`None`: never).
    pub last_inspected: Option<Timestamp>,
    /// Last LSN replayed into the copy's state.
    pub last_replayed_lsn: Lsn,
    /// When (`None`: never).
    pub last_replayed: Option<Timestamp>,
    /// The source's durable end as last seen.
    pub source_lsn: Lsn,
    /// The source's head generation as last seen.
    pub source_generation: u64,
    /// When the source last answered (`None`: never).
    pub source_contact: Option<Timestamp>,
    /// The newest epoch the copy knows exists.
    pub epoch: u64,
    /// Replay lag in force.
    pub replay_lag: Duration,
    /// Truncation lag in force.
    pub truncation_lag: Duration,
    /// A play-down (replay to the head regardless of lag) is in progress.
    pub playing_down: bool,
    /// Activation preference (lower is preferred).
    pub activation_preference: u32,
    /// The copy's last deep checkpoint.
    pub checkpoint_lsn: Lsn,
}

/// The mount dial of activation (Exchange's `AutoDatabaseMountDial`): how many generations may be missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountDial {
    /// Mount only with nothing missing.
    Lossless,
    /// Mount with at most 6 generations missing.
    GoodAvailability,
    /// Mount with at most 12 generations missing.
    BestAvailability,
}

impl MountDial {
    /// Generations the dial allows to be missing.
    pub fn allowed(self) -> u64 {
        match self {
            MountDial::Lossless => 0,
            MountDial::GoodAvailability => 6,
            MountDial::BestAvailability => 12,
        }
    }
}

impl std::fmt::Display for MountDial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// The status of a passive copy that is not open, from its files alone (for admin tools). `source`, when given,
/// is asked where its log ends (for the copy queue length); otherwise the position the copy last saw is used.
/// Lags and preference are options of an open copy and read as their defaults here.
///
/// While another process seeds the copy or resynchronizes it (and so holds the directory), the answer is a status
/// in state `Seeding` or `Resynchronizing`, built from the copy file alone (identity and last known source).
pub fn offline_copy_status(dir: impl AsRef<Path>, source: Option<&dyn LogSource>) -> Result<CopyStatus> {
    let dir = dir.as_ref();
    let _lock = match crate::engine::inspection_lock(dir) {
        Ok(lock) => lock,
        Err(Error::AlreadyMounted { path }) => {
            let state = if dir.join(state::STATE_DIR).join(SEEDING_FILE).exists() {
                CopyState::Seeding
            } else if dir.join(RESYNCING_FILE).exists() {
                CopyState::Resynchronizing
            } else {
                return Err(Error::AlreadyMounted { path });
            };
            let copy = read_copy_file(dir)?.ok_or(Error::AlreadyMounted { path })?;
            return Ok(busy_status(&copy, state));
        }
        Err(e) => return Err(e),
    };
    let copy = read_copy_file(dir)?
        .ok_or_else(|| Error::NotADatabase { path: dir.to_path_buf(), reason: "it is not a passive copy".into() })?;
    let values = state::read_meta(&state::open_env(dir, Durability::Full, true)?, dir)?;
    let gens =
        read_log(&dir.join(LOGS_DIR), values.guid, values.applied_lsn)?.map(|(gens, _)| gens).unwrap_or_default();
    let known_epoch =
        gens.values().map(|g| g.extent.header.epoch).fold(values.epoch.max(read_fence(dir)?.unwrap_or(0)), u64::max);
    let copied = gens.values().next_back().map_or((values.applied_lsn, 0, 0), |last| {
        (last.extent.last_lsn.max(values.applied_lsn), last.extent.header.generation, last.extent.end_offset)
    });
    let source = match source {
        Some(s) => Some(s.hello(Hello { copy: copy.id, known_epoch, keep_lsn: 0 })?),
        None => copy.source,
    };
    let progress = Progress {
        copied_lsn: copied.0,
        copied_generation: copied.1,
        copied_offset: copied.2,
        replayed_lsn: values.applied_lsn,
        source,
        known_epoch,
        gens,
        checkpoint_lsn: CheckpointFile::open(dir).map(|c| c.current().lsn).unwrap_or(0),
        ..Progress::of(CopyState::Dismounted, &copy)
    };
    Ok(compute_status(copy.id, values.guid, &CopyOptions::default(), &progress))
}

/// The status of a copy another process is seeding or resynchronizing: only its identity and last known source
/// are known.
fn busy_status(copy: &CopyFile, state: CopyState) -> CopyStatus {
    let progress = Progress { reason: None, suspended: false, failed: false, ..Progress::of(state, copy) };
    let database = copy.source.map_or(Guid([0; 16]), |s| s.guid);
    compute_status(copy.id, database, &CopyOptions::default(), &progress)
}

/// A source for a copy whose active is gone: every request fails. Open a copy with it to activate the copy
/// from what it has ([`PassiveCopy::activate`] measures the missing generations against the source position
/// the copy last saw).
///
/// [`PassiveCopy::activate`]: super::PassiveCopy::activate
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSource;

impl LogSource for NoSource {
    fn hello(&self, _: Hello) -> Result<SourceInfo> {
        Err(ReplicationError::Offline.into())
    }
    fn read(&self, _: ReadRequest) -> Result<Chunk> {
        Err(ReplicationError::Offline.into())
    }
    fn headers(&self, _: u64) -> Result<Vec<Vec<u8>>> {
        Err(ReplicationError::Offline.into())
    }
    fn snapshot(&self, _: SnapshotRequest) -> Result<crate::replication::protocol::SnapshotPart> {
        Err(ReplicationError::Offline.into())
    }
    fn goodbye(&self, _: CopyId) -> Result<()> {
        Ok(())
    }
}

pub(super) fn status_of<M: StateMachine>(shared: &Shared<M>) -> CopyStatus {
    let p = shared.progress.lock();
    compute_status(shared.id, shared.guid, &shared.options, &p)
}

fn compute_status(id: CopyId, guid: Guid, options: &CopyOptions, p: &Progress) -> CopyStatus {
    let state = if p.state == CopyState::Dismounted {
        CopyState::Dismounted
    } else if p.failed && p.suspended {
        CopyState::FailedAndSuspended
    } else if p.failed {
        CopyState::Failed
    } else if p.suspended {
        CopyState::Suspended
    } else if p.seeding_others > 0 {
        CopyState::SeedingSource
    } else {
        p.state
    };
    let (source_lsn, source_generation, source_offset) =
        p.source.map_or((0, 0, 0), |s| (s.position.lsn, s.position.generation, s.position.offset));
    // Generations of which the copy lacks bytes: from the one it is copying to the source's head.
    // A freshly seeded copy holds no generation yet: it lacks at least the one its source is writing.
    let caught_up = !p.gens.is_empty()
        && (p.copied_lsn >= source_lsn
            || (p.copied_generation == source_generation && p.copied_offset >= source_offset));
    let copy_queue_length =
        if p.source.is_none() || caught_up { 0 } else { source_generation.saturating_sub(p.copied_generation) + 1 };
    let replay_queue_length = if p.replayed_lsn >= p.copied_lsn {
        0
    } else {
        let holding =
            |lsn: Lsn| p.gens.iter().rev().find(|(_, g)| g.extent.header.first_lsn <= lsn).map_or(0, |(n, _)| *n);
        holding(p.copied_lsn).saturating_sub(holding(p.replayed_lsn + 1)) + 1
    };
    CopyStatus {
        copy: id,
        database: guid,
        state,
        reason: p.reason.clone(),
        copy_queue_length,
        replay_queue_length,
        last_copied_lsn: p.copied_lsn,
        last_copied: ever(p.copied_micros),
        last_inspected_lsn: p.copied_lsn,
        last_inspected: ever(p.copied_micros),
        last_replayed_lsn: p.replayed_lsn,
        last_replayed: ever(p.replayed_micros),
        source_lsn,
        source_generation,
        source_contact: ever(p.source_micros),
        epoch: p.known_epoch,
        replay_lag: options.replay_lag,
        truncation_lag: options.truncation_lag,
        playing_down: p.play_down,
        activation_preference: options.activation_preference,
        checkpoint_lsn: p.checkpoint_lsn,
    }
}

/// A time kept as µs since the epoch with 0 for "never".
fn ever(micros: u64) -> Option<Timestamp> {
    (micros != 0).then_some(Timestamp::from_micros(micros))
}
