//! The catalogue of a backup target: which backups exist, their LSN ranges, times, files and checksums.
//!
//! Stored as `catalogue.json` at the target's root, replaced atomically (local: temporary file, sync, rename,
//! sync of the directory; S3: one PUT, which readers see whole or not at all). A backup directory or object that
//! the catalogue does not list (a `*.partial` one, or one a crash left before its catalogue entry) is not a
//! backup.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::target::Target;
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
    /// Reads the catalogue of the local directory `target`; an [`Error::Io`] (not found) when it has none.
    pub fn load(target: &Path) -> Result<Self> {
        let path = target.join(CATALOGUE_FILE);
        let bytes = fs::read(&path).at(&path)?;
        Self::parse(&bytes, &path)
    }

    /// Reads the catalogue of any target (a local directory or an S3 prefix); [`Error::InvalidArgument`] when it
    /// has none.
    pub fn load_from(target: impl Into<Target>) -> Result<Self> {
        let target = target.into();
        match target.open()?.read(CATALOGUE_FILE)? {
            Some(bytes) => Self::parse(&bytes, &catalogue_path(&target)),
            None => Err(Error::InvalidArgument(format!("{target} holds no backup catalogue ({CATALOGUE_FILE})"))),
        }
    }

    /// Decodes a catalogue's bytes; `path` names it in errors.
    pub(crate) fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let catalogue: Catalogue =
            serde_json::from_slice(bytes).map_err(|e| Error::corrupted(path, 0, format!("catalogue: {e}")))?;
        if catalogue.version != 1 {
            return Err(Error::corrupted(path, 0, format!("catalogue version {} is unknown", catalogue.version)));
        }
        Ok(catalogue)
    }

    /// The catalogue whose bytes are `stored` (a new one when `None`), refused when it is another database's.
    pub(crate) fn for_database(stored: Option<Vec<u8>>, target: &Target, guid: Guid) -> Result<Self> {
        let Some(bytes) = stored else {
            return Ok(Catalogue { version: 1, guid: guid.to_string(), backups: Vec::new() });
        };
        let catalogue = Self::parse(&bytes, &catalogue_path(target))?;
        if catalogue.guid != guid.to_string() {
            return Err(Error::InvalidArgument(format!(
                "{target} holds backups of database {}, not of {guid}",
                catalogue.guid
            )));
        }
        Ok(catalogue)
    }

    /// The id of the next backup: above every id listed, and none of the names in `taken` (the target's
    /// top-level names: an unlisted one that did not look like a backup's is skipped, never reused).
    pub(crate) fn next_id(&self, taken: &HashSet<String>) -> String {
        let listed = self.backups.iter().map(|b| b.id.parse::<u64>().unwrap_or(0)).max().unwrap_or(0);
        let mut n = listed.max(self.backups.len() as u64).saturating_add(1);
        while n < u64::MAX && taken.contains(&format!("{n:06}")) {
            n += 1;
        }
        format!("{n:06}")
    }

    /// The catalogue's bytes as stored.
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| Error::InvalidArgument(e.to_string()))
    }
}

/// How errors name the catalogue of `target`.
fn catalogue_path(target: &Target) -> PathBuf {
    match target {
        Target::Dir(dir) => dir.join(CATALOGUE_FILE),
        #[allow(unreachable_patterns)]
        other => PathBuf::from(format!("{other}/{CATALOGUE_FILE}")),
    }
}
