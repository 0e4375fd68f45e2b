//! Small file-system helpers shared by every layer that writes files: durable directory entries, atomic
//! replacement of small files, and the directory lock.

pub(crate) mod lock;

pub(crate) use lock::DirLock;

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Replaces `dir/name` with `bytes` atomically and durably: written to a temporary file, synced, renamed over
/// the old one, and the directory synced. A crash leaves the old contents or the new, never a mix.
pub(crate) fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    })()
    .at(&path)?;
    sync_dir(dir)
}

/// Makes the directory's entries (creations, renames, deletions) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}
