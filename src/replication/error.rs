//! Why log shipping, a passive copy or an activation failed: [`ReplicationError`], which reaches callers as
//! [`Error::Replication`](crate::Error::Replication).

use crate::replication::MountDial;
use crate::types::Guid;

/// Why log shipping, a passive copy or an activation failed.
///
/// The shipping failures ([`ReplicationError::is_shipping`]) are about the source or the way to it, not about the
/// copy: its copier reports the copy `DisconnectedAndHealthy` and asks again. The others are the copy's own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// The connection to the source could not be made or broke (resolving, connecting, sending, receiving, a
    /// timeout, bytes damaged in transit). Asking again may succeed; the copier does.
    #[error("log shipping: {reason}")]
    Transport {
        /// What failed, with what the operating system said.
        reason: String,
    },
    /// The copy was opened with [`NoSource`](crate::replication::NoSource): there is no source to ask.
    #[error("log shipping: no source: the copy is offline")]
    Offline,
    /// The source refused the request (it names a position or snapshot the source does not serve, or the source
    /// is gone).
    #[error("log shipping: {reason}")]
    Refused {
        /// The source's reason.
        reason: String,
    },
    /// The peer broke the shipping protocol (it is not a mailstore shipping server, sent an oversized frame,
    /// an undecodable or unexpected response, an undecodable generation header, a snapshot piece for another
    /// offset).
    #[error("log shipping: {reason}")]
    Protocol {
        /// What the peer did.
        reason: String,
    },
    /// One side failed authentication (wrong shipping key, or forged, replayed or reordered frames); another
    /// connection would fail again: check `MAILSTORE_SHIPPING_KEY` on both sides.
    #[error("log shipping: {reason}")]
    Authentication {
        /// What failed.
        reason: String,
    },
    /// The source serves another database than the copy's.
    #[error("log shipping: the source serves database {found}, not {expected}")]
    ForeignSource {
        /// The copy's database.
        expected: Guid,
        /// The source's database.
        found: Guid,
    },
    /// A thread of the copy panicked; the copy is Failed (open it again).
    #[error("the {thread} thread panicked")]
    ThreadPanicked {
        /// The thread (`"prefetch"`…).
        thread: &'static str,
    },
    /// A chunk of shipped log failed inspection; nothing of it was written or replayed.
    #[error("shipped log rejected: {reason}")]
    ChunkRejected {
        /// What was wrong with it.
        reason: String,
    },
    /// The source no longer has the generation a copy asked for (it was truncated): reseed the copy.
    #[error("generation {generation} is no longer on the source (its oldest is {oldest}): reseed the copy")]
    LogTruncated {
        /// The generation asked for.
        generation: u64,
        /// The oldest generation the source still has.
        oldest: u64,
    },
    /// Activation was refused by the mount dial: too much of the log is missing on this copy.
    #[error("activation refused: {missing} generations missing, the mount dial {dial} allows {allowed}")]
    ActivationRefused {
        /// Generations the copy lacks.
        missing: u64,
        /// Generations the dial allows.
        allowed: u64,
        /// The dial.
        dial: MountDial,
    },
    /// The copy's state is still in use by a seeding it serves, so the copy cannot be activated; activate again
    /// once the seeding ends.
    #[error("busy: the copy's state is still in use (a seeding in progress)")]
    StateInUse,
    /// A passive copy cannot continue from its source: its log diverged beyond repair, or its state needs a
    /// reseed. The copy is Failed (or FailedAndSuspended); nothing was merged.
    #[error("copy failed: {reason}")]
    CopyFailed {
        /// Why.
        reason: String,
    },
}

impl ReplicationError {
    /// True for a failure of log shipping (the transport, the source, or the peer: [`Transport`], [`Offline`],
    /// [`Refused`], [`Protocol`], [`Authentication`], [`ForeignSource`]) as opposed to one of the copy itself.
    /// A copier reports its copy disconnected on these and asks again.
    ///
    /// [`Transport`]: ReplicationError::Transport
    /// [`Offline`]: ReplicationError::Offline
    /// [`Refused`]: ReplicationError::Refused
    /// [`Protocol`]: ReplicationError::Protocol
    /// [`Authentication`]: ReplicationError::Authentication
    /// [`ForeignSource`]: ReplicationError::ForeignSource
    pub fn is_shipping(&self) -> bool {
        matches!(
            self,
            ReplicationError::Transport { .. }
                | ReplicationError::Offline
                | ReplicationError::Refused { .. }
                | ReplicationError::Protocol { .. }
                | ReplicationError::Authentication { .. }
                | ReplicationError::ForeignSource { .. }
        )
    }
}
