//! Passive copies: log shipping, inspection, replay with lag, copy status, seeding, activation, fencing and
//! resynchronization — Exchange's database availability group for one database, in a library.
//!
//! ```text
//!  active (Engine)                         passive (PassiveCopy)
//!  writer ── durable log ──► ShippingSource ──transport──► copier ─► inspector ─► copy's log ─► replayer ─► state
//!                  ▲  pins, acks (sync mode), fence ◄──────────┘
//! ```
//!
//! - [`ShippingSource`] serves an active engine's generations: closed ones, and in block mode the durable bytes
//!   of the current one. It pins the log each copy still needs, counts copies' acknowledgements for
//!   [synchronous mode](crate::SyncPolicy), and fences the engine when a copy knows a newer epoch.
//! - [`LogSource`] is the transport-agnostic interface; a source is used in process directly (`Arc<dyn
//!   LogSource>`), or over TCP with [`TcpShippingServer`] and [`TcpSource`].
//! - [`PassiveCopy`] copies, inspects and replays; reports [`CopyStatus`]; is seeded with
//!   [`PassiveCopy::seed`]; is activated with [`PassiveCopy::activate`] under a [`MountDial`].
//! - [`resync`] brings an old active back as a passive copy: it finds where its log diverged, discards (and
//!   reports) its diverged generations, or says it must be reseeded.
//! - [`best_copy`] ranks activation candidates.

mod copy;
mod error;
pub(crate) mod inspect;
mod protocol;
mod resync;
pub(crate) mod snapshot;
pub(crate) mod source;
mod tcp;

pub use copy::{
    CopyOptions, CopyState, CopyStatus, MAX_LAG, MountDial, NoSource, PassiveCopy, SeedProgress, StateSync,
    is_passive_copy, offline_copy_status,
};
pub use error::ReplicationError;
pub use protocol::{
    Chunk, CopyId, Hello, LogSource, MAX_CHUNK_BYTES, ReadRequest, Refusal, Request, Response, SnapshotPart,
    SnapshotRequest, SourceInfo, SourceRole, serve,
};
pub use resync::{Diverged, ResyncOutcome, resync};
pub use source::{ShippingSource, SourceOptions};
pub use tcp::{ShippingKey, TcpShippingServer, TcpSource};

/// Ranks activation candidates the way Exchange's best copy selection does: healthy-enough copies first
/// (Healthy, DisconnectedAndHealthy, Initializing), then by copy queue length, then replay queue length, then
/// activation preference (lower first). Failed, suspended and seeding copies are left out. Returns indexes into
/// `candidates`, best first.
pub fn best_copy(candidates: &[CopyStatus]) -> Vec<usize> {
    let mut usable: Vec<usize> = (0..candidates.len())
        .filter(|&i| {
            matches!(
                candidates[i].state,
                CopyState::Healthy | CopyState::DisconnectedAndHealthy | CopyState::Initializing
            )
        })
        .collect();
    usable.sort_by_key(|&i| {
        let c = &candidates[i];
        (c.copy_queue_length, c.replay_queue_length, c.activation_preference, std::cmp::Reverse(c.last_copied_lsn))
    });
    usable
}
