//! Seeding: [`PassiveCopy::seed`] makes a copy directory from a snapshot served by the active or a healthy
//! passive, then opens it; [`SeedProgress`] reports how far the snapshot has come.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::PassiveCopy;
use super::admin::{CopyFile, SEEDING_FILE, UNSYNCED_FILE, read_copy_file, write_copy_file};
use super::options::CopyOptions;
use crate::engine::checkpoint::CheckpointFile;
use crate::engine::state;
use crate::engine::{CHECKPOINT_FILE, Checkpoint, Durability, LOGS_DIR, StateMachine, read_fence};
use crate::error::{IoContext, Result};
use crate::fsutil::DirLock;
use crate::replication::ReplicationError;
use crate::replication::protocol::{Hello, LogSource, SnapshotRequest};
use crate::types::Guid;

/// Progress of a seeding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedProgress {
    /// Snapshot bytes received.
    pub bytes: u64,
    /// Snapshot bytes in all.
    pub total: u64,
}

impl<M: StateMachine> PassiveCopy<M> {
    /// Creates a passive copy in `dir` from a consistent snapshot served by `snapshot_from` (the active or a
    /// healthy passive), then opens it: it catches up from `source`'s log while the active keeps taking
    /// writes. `dir` may hold a failed copy or an old active: its state and log are replaced (its `diverged/`
    /// directory is kept). `progress` is called after every piece of the snapshot.
    pub fn seed(
        dir: impl AsRef<Path>,
        snapshot_from: &dyn LogSource,
        source: Arc<dyn LogSource>,
        options: CopyOptions,
        mut progress: impl FnMut(SeedProgress),
    ) -> Result<Self> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).at(&dir)?;
        {
            let _lock = DirLock::exclusive(&dir)?;
            let id = read_copy_file(&dir).ok().flatten().map_or_else(Guid::new_random, |c| c.id);
            // Replace whatever was there (a failed copy, an old active's state).
            for name in [CHECKPOINT_FILE, crate::replication::source::COPIES_FILE, UNSYNCED_FILE] {
                let path = dir.join(name);
                if path.exists() {
                    fs::remove_file(&path).at(&path)?;
                }
            }
            for name in [state::STATE_DIR, LOGS_DIR] {
                let path = dir.join(name);
                if path.exists() {
                    fs::remove_dir_all(&path).at(&path)?;
                }
            }
            write_copy_file(&dir, &CopyFile { id, suspended: false, failed: None, source: None })?;
            let known_epoch = read_fence(&dir)?.unwrap_or(0);

            // Pin the log on the active from where the snapshot source stands, before the snapshot is taken.
            let info = source.hello(Hello { copy: id, known_epoch, keep_lsn: 0 })?;
            let from = snapshot_from.hello(Hello { copy: id, known_epoch, keep_lsn: 0 })?;
            if from.guid != info.guid {
                return Err(ReplicationError::ForeignSource { expected: info.guid, found: from.guid }.into());
            }
            source.hello(Hello { copy: id, known_epoch, keep_lsn: from.position.lsn.min(info.position.lsn) + 1 })?;

            let state_dir = dir.join(state::STATE_DIR);
            fs::create_dir_all(&state_dir).at(&state_dir)?;
            let tmp = state_dir.join(SEEDING_FILE);
            let file = File::create(&tmp).at(&tmp)?;
            let mut offset = 0u64;
            loop {
                let part =
                    snapshot_from.snapshot(SnapshotRequest { copy: id, offset, max_bytes: options.chunk_bytes })?;
                if part.offset != offset || part.bytes.is_empty() && offset < part.total {
                    return Err(ReplicationError::Protocol {
                        reason: format!("snapshot piece at {} answered for {offset}", part.offset),
                    }
                    .into());
                }
                file.write_all_at(&part.bytes, offset).at(&tmp)?;
                offset += part.bytes.len() as u64;
                progress(SeedProgress { bytes: offset, total: part.total });
                if offset >= part.total {
                    break;
                }
            }
            file.sync_all().at(&tmp)?;
            let data = state_dir.join("data.mdb");
            fs::rename(&tmp, &data).at(&data)?;
            crate::fsutil::sync_dir(&state_dir)?;

            let env = state::open_env(&dir, Durability::Full, false)?;
            let values = state::read_meta(&env, &dir)?;
            if values.guid != info.guid {
                return Err(ReplicationError::ForeignSource { expected: info.guid, found: values.guid }.into());
            }
            drop(env);
            CheckpointFile::create(
                &dir,
                Checkpoint {
                    guid: values.guid,
                    sequence: 0,
                    lsn: values.applied_lsn,
                    epoch: values.epoch,
                    backup_lsn: 0,
                    clean: true,
                },
            )?;
            let logs = dir.join(LOGS_DIR);
            fs::create_dir_all(&logs).at(&logs)?;
            crate::fsutil::sync_dir(&dir)?;
        }
        Self::open(dir, source, options)
    }
}
