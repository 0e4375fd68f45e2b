//! Seeding from a passive: [`PassiveCopy::seeding_source`] and the [`LogSource`] that serves snapshots of the
//! copy's state (and no log): the state file and the generations of the copy's own `logs/` and `segments/` it
//! needs, chosen as on the active (`prepare_snapshot`).

use std::path::Path;
use std::sync::Arc;

use super::PassiveCopy;
use super::shared::Shared;
use crate::engine::state::StateStore;
use crate::engine::{LOGS_DIR, StateMachine};
use crate::error::{Error, Result};
use crate::replication::ReplicationError;
use crate::replication::protocol::{
    Chunk, CopyId, Hello, LogSource, ReadRequest, SnapshotRequest, SourceInfo, SourceRole,
};
use crate::replication::snapshot::prepare_snapshot;

impl<M: StateMachine> PassiveCopy<M> {
    /// A [`LogSource`] that serves snapshots of this copy's state, to seed another copy from it (a seeding
    /// source): the state as replayed so far, the generations holding the message bodies it refers to, and the
    /// start of the log from there (see [`SnapshotPart`](crate::replication::SnapshotPart)). It serves no log.
    pub fn seeding_source(&self) -> Arc<dyn LogSource> {
        Arc::new(PassiveSnapshots { shared: Arc::downgrade(&self.shared), state: Arc::downgrade(&self.state) })
    }
}

/// Serves snapshots of a passive copy's state (seeding from a passive).
struct PassiveSnapshots<M: StateMachine> {
    shared: std::sync::Weak<Shared<M>>,
    state: std::sync::Weak<StateStore<M>>,
}

/// The seeding source copy was closed while it served a snapshot.
fn closed() -> Error {
    ReplicationError::Refused { reason: "the seeding source copy is closed".into() }.into()
}

impl<M: StateMachine> PassiveSnapshots<M> {
    fn shared(&self) -> Result<Arc<Shared<M>>> {
        self.shared.upgrade().ok_or_else(closed)
    }
}

impl<M: StateMachine> LogSource for PassiveSnapshots<M> {
    fn hello(&self, _hello: Hello) -> Result<SourceInfo> {
        let shared = self.shared()?;
        let p = shared.progress.lock();
        Ok(SourceInfo {
            guid: shared.guid,
            epoch: p.known_epoch,
            position: crate::engine::LogPosition {
                generation: p.copied_generation,
                offset: p.copied_offset,
                lsn: p.replayed_lsn,
                epoch: p.known_epoch,
            },
            oldest_generation: p.gens.keys().next().copied().unwrap_or(0),
            role: SourceRole::Passive,
        })
    }

    fn read(&self, _request: ReadRequest) -> Result<Chunk> {
        Err(ReplicationError::Refused {
            reason: "a passive copy serves snapshots, not log: copy the log from the active".into(),
        }
        .into())
    }

    fn headers(&self, from: u64) -> Result<Vec<Vec<u8>>> {
        crate::replication::source::generation_headers(&self.shared()?.dir.join(LOGS_DIR), from)
    }

    fn snapshot(&self, request: SnapshotRequest) -> Result<crate::replication::protocol::SnapshotPart> {
        let shared = self.shared()?;
        shared.progress.lock().seeding_others += 1;
        let state = self.state.upgrade().ok_or_else(closed)?;
        let prepare = |into: &Path| {
            // Held for the whole preparation (see `prepare_snapshot`).
            let _token = state.attachments.enter();
            prepare_snapshot::<M>(
                &shared.dir,
                into,
                shared.guid,
                |path| state.snapshot_to(path),
                || {
                    let p = shared.progress.lock();
                    (p.copied_generation, p.copied_offset)
                },
            )
        };
        let result = shared.snapshots.serve(request, prepare, &shared.dir);
        let mut p = shared.progress.lock();
        p.seeding_others = p.seeding_others.saturating_sub(1);
        result
    }

    fn goodbye(&self, copy: CopyId) -> Result<()> {
        // A snapshot it did not finish is dropped, with the generations it holds.
        if let Some(shared) = self.shared.upgrade() {
            shared.snapshots.forget(copy);
        }
        Ok(())
    }
}
