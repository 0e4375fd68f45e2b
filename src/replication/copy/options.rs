//! How a passive copy copies and replays: [`CopyOptions`] (with [`StateSync`] and the [`MAX_LAG`] limit) and
//! their validation.

use std::time::Duration;

use crate::error::{Error, Result};

/// The longest replay or truncation lag (Exchange's limit).
pub const MAX_LAG: Duration = Duration::from_secs(14 * 24 * 3600);

/// How a passive copy copies and replays.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CopyOptions {
    /// Block mode (default): ship the durable bytes of the generation being written, as they are written.
    /// File mode (`false`): ship closed generations only.
    pub block_mode: bool,
    /// Replay a generation only once this long has passed since it was closed (default 0, at most 14 days).
    pub replay_lag: Duration,
    /// Keep a replayed generation this long after it was closed before deleting it (default 0, at most 14
    /// days); the active keeps it as long too.
    pub truncation_lag: Duration,
    /// Bytes of replayed log between deep checkpoints (default 100 MiB).
    pub checkpoint_depth: u64,
    /// The most bytes asked for per request (default 4 MiB).
    pub chunk_bytes: u32,
    /// How long one request may wait at the source for new log (default 200 ms). Activation waits for the
    /// request in flight, so this also bounds how long activation takes to stop copying.
    pub poll: Duration,
    /// Activation preference for [`best_copy`](crate::replication::best_copy): lower is preferred (default 1).
    pub activation_preference: u32,
    /// When the copy's state store is made durable (default [`StateSync::EveryBatch`]).
    pub state_sync: StateSync,
}

/// When a passive copy makes its state store durable. Its *log* (what it acknowledges to its source) is
/// `fdatasync`ed chunk by chunk in both modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StateSync {
    /// After every replayed batch (LMDB with the flags of [`Durability::Full`]): after a process crash, an OS
    /// crash or a power loss the copy opens with its state intact and resumes replay from its own log.
    ///
    /// [`Durability::Full`]: crate::Durability::Full
    #[default]
    EveryBatch,
    /// Only at deep checkpoints and when the copy is closed or activated (LMDB `NO_SYNC` in between), like the
    /// deep checkpoint of Exchange's passive copies: replay writes far less synchronously. A process crash loses
    /// nothing (the operating system still has the pages). After an OS crash or a power loss *while the copy was
    /// open*, its state store may be damaged: the copy detects it (the machine's boot id changed since it
    /// opened) and refuses to open with
    /// [`ReplicationError::CopyFailed`](crate::replication::ReplicationError::CopyFailed) — reseed it.
    AtCheckpoint,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            block_mode: true,
            replay_lag: Duration::ZERO,
            truncation_lag: Duration::ZERO,
            checkpoint_depth: 100 << 20,
            chunk_bytes: 4 << 20,
            poll: Duration::from_millis(200),
            activation_preference: 1,
            state_sync: StateSync::EveryBatch,
        }
    }
}

impl CopyOptions {
    /// Sets [`CopyOptions::block_mode`].
    pub fn block_mode(mut self, on: bool) -> Self {
        self.block_mode = on;
        self
    }
    /// Sets [`CopyOptions::replay_lag`].
    pub fn replay_lag(mut self, lag: Duration) -> Self {
        self.replay_lag = lag;
        self
    }
    /// Sets [`CopyOptions::truncation_lag`].
    pub fn truncation_lag(mut self, lag: Duration) -> Self {
        self.truncation_lag = lag;
        self
    }
    /// Sets [`CopyOptions::checkpoint_depth`].
    pub fn checkpoint_depth(mut self, bytes: u64) -> Self {
        self.checkpoint_depth = bytes;
        self
    }
    /// Sets [`CopyOptions::chunk_bytes`].
    pub fn chunk_bytes(mut self, bytes: u32) -> Self {
        self.chunk_bytes = bytes;
        self
    }
    /// Sets [`CopyOptions::poll`].
    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }
    /// Sets [`CopyOptions::activation_preference`].
    pub fn activation_preference(mut self, preference: u32) -> Self {
        self.activation_preference = preference;
        self
    }
    /// Sets [`CopyOptions::state_sync`].
    pub fn state_sync(mut self, sync: StateSync) -> Self {
        self.state_sync = sync;
        self
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.replay_lag > MAX_LAG || self.truncation_lag > MAX_LAG {
            return Err(Error::InvalidArgument("replay and truncation lags are limited to 14 days".into()));
        }
        if self.checkpoint_depth == 0 || self.chunk_bytes < 4096 {
            return Err(Error::InvalidArgument("checkpoint_depth must be positive and chunk_bytes >= 4096".into()));
        }
        Ok(())
    }
}
