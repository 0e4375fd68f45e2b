//! Small file-system helpers shared by the layers that keep little files next to a database.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::log::generation;

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
    generation::sync_dir(dir)
}
