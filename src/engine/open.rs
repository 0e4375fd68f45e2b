//! Opening an existing database directory: the one step an active mount ([`Engine::mount`](super::Engine::mount),
//! through recovery) and a passive copy ([`PassiveCopy::open`](crate::replication::PassiveCopy::open)) share.
//!
//! With the directory's lock held by the caller, it opens the checkpoint file and the state store, checks that
//! they belong together and to this state machine, and removes what an interrupted generation create left
//! (`*.log.tmp`). What each caller then does with the log differs (recovery replays it, a copy resumes copying
//! and replaying), but both judge it with the same walk ([`verify::walk`](crate::log::verify::walk)) and
//! discard a torn tail the same way ([`Walk::discard_tail`](crate::log::verify::Walk::discard_tail)).

use std::fs;
use std::path::{Path, PathBuf};

use crate::engine::checkpoint::CheckpointFile;
use crate::engine::state::{self, MetaValues, StateStore};
use crate::engine::{Attachments, Durability, LOGS_DIR, SEGMENTS_DIR, StateMachine};
use crate::error::{Error, IoContext, Result};
use crate::log::generation;

/// A database directory, open and checked, before its log is read.
pub(crate) struct OpenDir<M: StateMachine> {
    pub(crate) state: StateStore<M>,
    /// The engine's metadata as the state store holds it.
    pub(crate) meta: MetaValues,
    pub(crate) checkpoint: CheckpointFile,
    /// Leftovers of an interrupted generation create, removed.
    pub(crate) leftovers_removed: Vec<PathBuf>,
}

impl<M: StateMachine> OpenDir<M> {
    /// Opens the database in `dir`, whose exclusive lock (`DirLock`) the caller holds, with the state store
    /// flags of `durability`. Fails with [`Error::ForeignDatabase`] when
    /// the checkpoint file and the state store belong to different databases, and with
    /// [`Error::NotADatabase`] when the state store holds no metadata or was created for another machine.
    pub(crate) fn open(dir: &Path, durability: Durability) -> Result<Self> {
        let checkpoint = CheckpointFile::open(dir)?;
        let guid = checkpoint.current().guid;
        let env = state::open_env(dir, durability, false)?;
        let values = state::read_meta(&env, dir)?;
        if values.guid != guid {
            return Err(Error::ForeignDatabase {
                file: dir.join(state::STATE_DIR),
                expected: guid,
                found: values.guid,
            });
        }
        check_meta::<M>(dir, &values)?;
        let state = StateStore::<M>::open(env, Attachments::new(dir), dir)?;
        let logs = dir.join(LOGS_DIR);
        fs::create_dir_all(&logs).at(&logs)?;
        let segments = dir.join(SEGMENTS_DIR);
        fs::create_dir_all(&segments).at(&segments)?;
        let leftovers_removed = generation::list(&logs)?.leftovers;
        if !leftovers_removed.is_empty() {
            for path in &leftovers_removed {
                fs::remove_file(path).at(path)?;
            }
            crate::fsutil::sync_dir(&logs)?;
        }
        Ok(OpenDir { state, meta: values, checkpoint, leftovers_removed })
    }
}

/// Checks that a database's metadata is of this state machine, in the formats this release reads: a database of
/// another format is refused ([`Error::UnsupportedFormat`]), never misread.
pub(crate) fn check_meta<M: StateMachine>(dir: &Path, values: &MetaValues) -> Result<()> {
    if values.machine != M::NAME {
        return Err(Error::NotADatabase {
            path: dir.to_path_buf(),
            reason: format!("it was created for state machine {:?}, not {:?}", values.machine, M::NAME),
        });
    }
    for (what, found, supported) in [("engine", values.format.0, state::FORMAT), (M::NAME, values.format.1, M::FORMAT)]
    {
        if found != supported {
            return Err(Error::UnsupportedFormat { path: dir.to_path_buf(), what: what.to_string(), found, supported });
        }
    }
    Ok(())
}
