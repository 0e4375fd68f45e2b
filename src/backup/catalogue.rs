//! The catalogue of a backup target: which backups exist, their LSN ranges, times, files and checksums.
//!
//! Stored as `catalogue.json` at the target's root, replaced atomically (temporary file, sync, rename, sync of
//! the directory). A backup directory that the catalogue does not list (a `*.partial` one, or one a crash left
//! before its catalogue entry) is not a backup.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::time::Timestamp;
use crate::types::{Guid, Lsn};

/// The catalogue's file name in a target.
pub const CATALOGUE_FILE: &str = "catalogue.json";

/// Full or incremental.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupKind {
    /// A state snapshot, the generations it refers to and the log since.
    Full,
    /// The log generations closed since the previous backup.
    Incremental,
}

/// What a file of a backup is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    /// The state snapshot (`state.mdb`).
    State,
    /// A generation below the log's start that the state refers to.
    Segment,
    /// A generation of the log.
    Log,
}

/// One file of a backup: where it is in the target, its length and its BLAKE3 hash (hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFile {
    /// Path relative to the target's root.
    pub path: String,
    /// What it is.
    pub kind: FileKind,
    /// The generation it is, for a segment or log file.
    pub generation: Option<u64>,
    /// Its length in bytes.
    pub len: u64,
    /// BLAKE3 of its bytes, hex.
    pub blake3: String,
}

/// One backup as the catalogue lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BackupEntry {
    /// Its directory in the target.
    pub id: String,
    /// Full or incremental.
    pub kind: BackupKind,
    /// The backup it follows (incrementals).
    pub parent: Option<String>,
    /// The database's epoch when it was taken.
    pub epoch: u64,
    /// Full: the snapshot's applied LSN. Incremental: the previous backup's last LSN.
    pub applied_lsn: Lsn,
    /// The last log record it holds.
    pub last_lsn: Lsn,
    /// The first log generation it holds.
    pub first_generation: u64,
    /// The last log generation it holds (closed by a roll).
    pub last_generation: u64,
    /// When it started.
    #[serde(rename = "started_micros")]
    pub started: Timestamp,
    /// Full: when the state snapshot was finished; every record the state holds was committed before.
    #[serde(rename = "snapshot_micros")]
    pub snapshot: Timestamp,
    /// When it was finished.
    #[serde(rename = "finished_micros")]
    pub finished: Timestamp,
    /// Its files.
    pub files: Vec<BackupFile>,
}

/// The catalogue of one target: the database it belongs to and its backups, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalogue {
    /// Format of this file (1).
    pub version: u32,
    /// The database backed up here (hex GUID).
    pub guid: String,
    /// Backups, oldest first.
    pub backups: Vec<BackupEntry>,
}

impl Catalogue {
    /// Reads the catalogue of `target`; [`Error::NotFound`]-like `InvalidArgument` when it has none.
    pub fn load(target: &Path) -> Result<Self> {
        let path = target.join(CATALOGUE_FILE);
        let bytes = fs::read(&path).at(&path)?;
        let catalogue: Catalogue =
            serde_json::from_slice(&bytes).map_err(|e| Error::corrupted(&path, 0, format!("catalogue: {e}")))?;
        if catalogue.version != 1 {
            return Err(Error::corrupted(&path, 0, format!("catalogue version {} is unknown", catalogue.version)));
        }
        Ok(catalogue)
    }

    /// The catalogue of `target` (created with the directory if missing), refused when it is another database's.
    pub(crate) fn load_or_new(target: &Path, guid: Guid) -> Result<Self> {
        fs::create_dir_all(target).at(target)?;
        if !target.join(CATALOGUE_FILE).exists() {
            return Ok(Catalogue { version: 1, guid: guid.to_string(), backups: Vec::new() });
        }
        let catalogue = Self::load(target)?;
        if catalogue.guid != guid.to_string() {
            return Err(Error::InvalidArgument(format!(
                "{} holds backups of database {}, not of {guid}",
                target.display(),
                catalogue.guid
            )));
        }
        Ok(catalogue)
    }

    /// The id of the next backup in `target`: above every id listed, and naming no directory in `target` (an
    /// unlisted one that did not look like a backup's is skipped, never reused).
    pub(crate) fn next_id(&self, target: &Path) -> String {
        let listed = self.backups.iter().map(|b| b.id.parse::<u64>().unwrap_or(0)).max().unwrap_or(0);
        let mut n = listed.max(self.backups.len() as u64).saturating_add(1);
        while n < u64::MAX && fs::symlink_metadata(target.join(format!("{n:06}"))).is_ok() {
            n += 1;
        }
        format!("{n:06}")
    }

    /// Replaces the catalogue in `target` atomically and durably.
    pub(crate) fn store(&self, target: &Path) -> Result<()> {
        let tmp = target.join(format!("{CATALOGUE_FILE}.tmp"));
        let path = target.join(CATALOGUE_FILE);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        (|| -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &bytes)?;
            f.sync_all()
        })()
        .at(&tmp)?;
        fs::rename(&tmp, &path).at(&path)?;
        crate::fsutil::sync_dir(target)
    }
}
