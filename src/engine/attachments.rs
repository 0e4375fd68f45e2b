//! Attachments where the log wrote them: reading them back, and keeping their files until nothing needs them.
//!
//! A record's attachment (a message body, see `codec`) is written once, into the log, and stays there: the
//! state machine keeps only where it lies ([`Place`]). So a generation the log no longer needs (below the
//! checkpoint, every pin and the backup) may still hold attachments the state refers to. Truncation then moves
//! it from `logs/` to `segments/` (a rename: nothing is copied) instead of deleting it, and deletes it once the
//! state refers to none of its attachments ([`StateMachine::referenced_generations`]); see ARCHITECTURE.md,
//! "Message bodies live in the log".
//!
//! Readers find a generation in `logs/` or, once it has moved, in `segments/`, and keep the files they opened.
//! A file is deleted only after every read transaction that began before the state stopped referring to it has
//! ended ([`Attachments::wait_for_readers`]), so a reader never meets a deleted file its snapshot still names.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::log::format::HEADER_LEN;
use crate::log::generation;

/// Directory of the generations that only hold attachments, inside a database directory.
pub(crate) const SEGMENTS_DIR: &str = "segments";

/// Where an attachment's first byte lies: a generation of the database's log and an offset in its file. The
/// same on every copy of a database (copies hold byte-identical generations: the chain checksum of each
/// generation's header proves it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Place {
    /// The generation.
    pub generation: u64,
    /// Offset in the generation's file.
    pub offset: u64,
}

/// The attachments of one database directory (its `logs/` and `segments/`), for the state machine's readers.
/// Cheap to clone: clones share their open files.
#[derive(Clone, Debug)]
pub struct Attachments {
    files: Arc<Files>,
}

#[derive(Debug)]
struct Files {
    logs: PathBuf,
    segments: PathBuf,
    open: Mutex<HashMap<u64, Arc<OpenFile>>>,
    /// Held (cloned) by every read transaction for its whole life; swapped and waited for before a deletion.
    readers: Mutex<Arc<()>>,
}

/// A generation's file, open, and where it was found.
#[derive(Debug)]
struct OpenFile {
    file: File,
    path: PathBuf,
}

/// Held by a read transaction while it may read attachments (see [`Attachments::wait_for_readers`]).
pub(crate) struct ReaderToken(#[allow(dead_code)] Arc<()>);

impl Attachments {
    /// The attachments of the database in `dir`.
    pub(crate) fn new(dir: &Path) -> Self {
        Attachments {
            files: Arc::new(Files {
                logs: dir.join(crate::engine::LOGS_DIR),
                segments: dir.join(SEGMENTS_DIR),
                open: Mutex::new(HashMap::new()),
                readers: Mutex::new(Arc::new(())),
            }),
        }
    }

    /// Reads the `len` bytes at `at`. The bytes are those the log wrote and its checksum covered; a caller that
    /// must know they are intact checks them against what it recorded of them (the mailbox model compares
    /// every body it reads with its content hash). A place outside its file is [`Error::Corrupted`]; a
    /// generation in neither directory is [`Error::MissingGeneration`].
    pub fn read(&self, at: Place, len: u32) -> Result<Vec<u8>> {
        let open = self.file(at.generation)?;
        if at.offset < HEADER_LEN as u64 {
            return Err(Error::corrupted(&open.path, at.offset, "an attachment placed inside the generation header"));
        }
        let mut buf = Vec::new();
        buf.try_reserve_exact(len as usize)
            .map_err(|e| Error::corrupted(&open.path, at.offset, format!("{len} bytes: {e}")))?;
        buf.resize(len as usize, 0);
        match open.file.read_exact_at(&mut buf, at.offset) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(Error::corrupted(&open.path, at.offset, format!("an attachment of {len} bytes runs past the end")))
            }
            Err(e) => Err(Error::io(&open.path, e)),
        }
    }

    /// The open file of `generation`, opening it from `logs/` or, if it has moved, `segments/`.
    fn file(&self, generation: u64) -> Result<Arc<OpenFile>> {
        if let Some(open) = self.files.open.lock().get(&generation) {
            return Ok(Arc::clone(open));
        }
        let name = generation::file_name(generation);
        // Generations only ever move from `logs/` to `segments/`: a file missing from the first is in the second.
        let open = [&self.files.logs, &self.files.segments]
            .into_iter()
            .map(|dir| dir.join(&name))
            .find_map(|path| match File::open(&path) {
                Ok(file) => Some(Ok(OpenFile { file, path })),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => Some(Err(Error::io(&path, e))),
            })
            .unwrap_or_else(|| Err(Error::MissingGeneration { generation, file: self.files.segments.join(&name) }))?;
        let open = Arc::new(open);
        self.files.open.lock().insert(generation, Arc::clone(&open));
        Ok(open)
    }

    /// A read transaction begins: held until it ends.
    pub(crate) fn enter(&self) -> ReaderToken {
        ReaderToken(Arc::clone(&self.files.readers.lock()))
    }

    /// Waits until every read transaction that began before this call has ended. Called before deleting a
    /// generation the state no longer refers to: a transaction that began later cannot see a reference to it.
    pub(crate) fn wait_for_readers(&self) {
        let older = std::mem::replace(&mut *self.files.readers.lock(), Arc::new(()));
        while Arc::strong_count(&older) > 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Closes the file of a generation that was deleted.
    pub(crate) fn forget(&self, generation: u64) {
        self.files.open.lock().remove(&generation);
    }

    /// The path of `generation` once it only holds attachments.
    pub(crate) fn segment_path(&self, generation: u64) -> PathBuf {
        self.files.segments.join(generation::file_name(generation))
    }

    /// The generations in `segments/`, oldest first.
    pub(crate) fn list_segments(&self) -> Result<Vec<(u64, PathBuf)>> {
        if !self.files.segments.exists() {
            return Ok(Vec::new());
        }
        Ok(generation::list(&self.files.segments)?.generations)
    }
}
