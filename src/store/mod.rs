//! A store: one root directory hosting several mailbox databases, each an independent [`Engine`].
//!
//! ```text
//! ROOT/store                marker: this directory is a mailstore store
//! ROOT/lock                 held exclusively by the `Store` that has the root open
//! ROOT/databases/NAME/      one database directory per database (see `engine`)
//! ROOT/databases/.deleting-NAME-…   a database being deleted; removed when the store opens
//! ```
//!
//! Each database is mounted, dismounted, recovered and deleted on its own; the store only names them. For
//! mailbox databases (`Store<MailStore>`) it also answers which database holds a mailbox (by GUID or address). Names
//! are validated so that none can leave the root: 1 to 64 characters from `A-Z a-z 0-9 . _ -`, starting with a
//! letter or digit.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::engine::{CHECKPOINT_FILE, Engine, Options, StateMachine};
use crate::error::{Error, IoContext, Result, StoreError};
use crate::fsutil::{DirLock, sync_dir};
use crate::types::{Guid, now_micros};

mod mailboxes;

pub use mailboxes::Located;

/// Name of the marker file at the root of a store.
pub const STORE_MARKER: &str = "store";
/// Directory of the databases inside a store root.
pub const DATABASES_DIR: &str = "databases";
const MARKER_TEXT: &str = "mailstore store v1\n";
const DELETING_PREFIX: &str = ".deleting-";
/// The longest database name.
pub const MAX_NAME_LEN: usize = 64;

/// Checks that `name` can name a database: it becomes a directory name, so it may not leave the root.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(StoreError::InvalidName { name: name.to_owned(), rule: why.to_owned() }.into());
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return bad(&format!("must have 1 to {MAX_NAME_LEN} characters"));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("must start with a letter or a digit");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return bad("may only contain letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// True when `root` holds a store (its marker file).
pub fn is_store(root: &Path) -> bool {
    root.join(STORE_MARKER).is_file()
}

/// The database directories of the store at `root`, by name (mounted or not), without opening it.
pub fn database_dirs(root: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let dir = root.join(DATABASES_DIR);
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(&dir).at(&dir)? {
        let entry = entry.at(&dir)?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if validate_name(&name).is_ok() && entry.path().is_dir() {
            out.insert(name, entry.path());
        }
    }
    Ok(out)
}

/// One database of a store, as [`Store::list`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseEntry {
    /// Its name.
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Mounted by this store.
    pub mounted: bool,
    /// Its GUID, when mounted (reading it otherwise would need its lock).
    pub guid: Option<Guid>,
}

/// A store of mailbox databases under one root directory.
///
/// `Store` is `Sync`; databases are handed out as `Arc<Engine<M>>`. While a `Store` has its root open it holds
/// the root's lock: a second `Store` on the same root, in this or another process, gets
/// [`Error::AlreadyMounted`]. Dropping the store dismounts every database it mounted (once the last handle to
/// each is gone).
pub struct Store<M: StateMachine> {
    // Field order: databases are dismounted (dropped) before the root lock is released.
    mounted: Mutex<BTreeMap<String, Arc<Engine<M>>>>,
    /// Serializes creations that must first look through every database (a mailbox's address is unique in the
    /// store).
    creating: Mutex<()>,
    root: PathBuf,
    options: Options,
    _lock: DirLock,
}

impl<M: StateMachine> Store<M> {
    /// Opens the store at `root`, creating it when `root` does not exist or is an empty directory. `options`
    /// are used for every database this store creates or mounts.
    ///
    /// A directory that holds files but no store marker is refused ([`Error::NotADatabase`]), so a mistyped
    /// path never turns an unrelated directory into a store.
    pub fn open(root: impl AsRef<Path>, options: Options) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if !is_store(&root) {
            let empty = match fs::read_dir(&root) {
                Ok(mut entries) => entries.next().is_none(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                Err(e) => return Err(Error::io(&root, e)),
            };
            if !empty {
                return Err(Error::NotADatabase {
                    path: root,
                    reason: "the directory is not empty and holds no mailstore store".into(),
                });
            }
            fs::create_dir_all(root.join(DATABASES_DIR)).at(&root)?;
            let tmp = root.join(format!("{STORE_MARKER}.tmp"));
            fs::write(&tmp, MARKER_TEXT).at(&tmp)?;
            fs::File::open(&tmp).and_then(|f| f.sync_all()).at(&tmp)?;
            fs::rename(&tmp, root.join(STORE_MARKER)).at(&root)?;
            sync_dir(&root)?;
        }
        let lock = DirLock::exclusive(&root)?;
        let marker = root.join(STORE_MARKER);
        if fs::read_to_string(&marker).at(&marker)? != MARKER_TEXT {
            return Err(Error::NotADatabase { path: marker, reason: "unknown store marker".into() });
        }
        let databases = root.join(DATABASES_DIR);
        fs::create_dir_all(&databases).at(&databases)?;
        // Finish deletions a crash interrupted.
        let mut removed = false;
        for entry in fs::read_dir(&databases).at(&databases)? {
            let entry = entry.at(&databases)?;
            if entry.file_name().to_string_lossy().starts_with(DELETING_PREFIX) {
                fs::remove_dir_all(entry.path()).at(entry.path())?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&databases)?;
        }
        Ok(Store { mounted: Mutex::new(BTreeMap::new()), creating: Mutex::new(()), root, options, _lock: lock })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir_of(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        Ok(self.root.join(DATABASES_DIR).join(name))
    }

    /// Creates the database `name` and mounts it.
    pub fn create_database(&self, name: &str) -> Result<Arc<Engine<M>>> {
        let dir = self.dir_of(name)?;
        let mut mounted = self.mounted.lock();
        if mounted.contains_key(name) || dir.join(CHECKPOINT_FILE).exists() {
            return Err(StoreError::DatabaseExists { name: name.to_owned() }.into());
        }
        let engine = Arc::new(Engine::mount(&dir, self.options.clone().create_if_missing(true))?);
        sync_dir(&self.root.join(DATABASES_DIR))?;
        mounted.insert(name.to_owned(), Arc::clone(&engine));
        Ok(engine)
    }

    /// Mounts the existing database `name` (recovering it if needed), or returns it if already mounted.
    pub fn mount_database(&self, name: &str) -> Result<Arc<Engine<M>>> {
        let dir = self.dir_of(name)?;
        let mut mounted = self.mounted.lock();
        if let Some(engine) = mounted.get(name) {
            return Ok(Arc::clone(engine));
        }
        if !dir.exists() {
            return Err(StoreError::NoSuchDatabase { name: name.to_owned() }.into());
        }
        let engine = Arc::new(Engine::mount(&dir, self.options.clone().create_if_missing(false))?);
        mounted.insert(name.to_owned(), Arc::clone(&engine));
        Ok(engine)
    }

    /// The mounted database `name`.
    pub fn database(&self, name: &str) -> Result<Arc<Engine<M>>> {
        validate_name(name)?;
        self.mounted.lock().get(name).cloned().ok_or_else(|| StoreError::NotMounted { name: name.to_owned() }.into())
    }

    /// Dismounts the database `name` cleanly. Fails with [`StoreError::InUse`] (and leaves it mounted) while other
    /// handles to it are alive.
    pub fn dismount_database(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        let mut mounted = self.mounted.lock();
        let engine = mounted.remove(name).ok_or_else(|| StoreError::NotMounted { name: name.to_owned() })?;
        match Arc::try_unwrap(engine) {
            Ok(engine) => engine.dismount(),
            Err(engine) => {
                let handles = Arc::strong_count(&engine) - 1;
                mounted.insert(name.to_owned(), engine);
                Err(StoreError::InUse { name: name.to_owned(), handles }.into())
            }
        }
    }

    /// Deletes the dismounted database `name` and all its files. The directory is first renamed aside (and the
    /// rename synced), so a crash leaves either the whole database or none of it.
    pub fn delete_database(&self, name: &str) -> Result<()> {
        let dir = self.dir_of(name)?;
        let mounted = self.mounted.lock();
        if mounted.contains_key(name) {
            return Err(StoreError::Mounted { name: name.to_owned() }.into());
        }
        if !dir.exists() {
            return Err(StoreError::NoSuchDatabase { name: name.to_owned() }.into());
        }
        // Its own lock makes sure no other process has it mounted.
        drop(DirLock::exclusive(&dir)?);
        let databases = self.root.join(DATABASES_DIR);
        let aside = databases.join(format!("{DELETING_PREFIX}{name}-{}", now_micros()));
        fs::rename(&dir, &aside).at(&dir)?;
        sync_dir(&databases)?;
        fs::remove_dir_all(&aside).at(&aside)?;
        Ok(())
    }

    /// Every database of the store, by name.
    pub fn list(&self) -> Result<Vec<DatabaseEntry>> {
        let mounted = self.mounted.lock();
        Ok(database_dirs(&self.root)?
            .into_iter()
            .map(|(name, dir)| {
                let engine = mounted.get(&name);
                DatabaseEntry { mounted: engine.is_some(), guid: engine.map(|e| e.guid()), name, dir }
            })
            .collect())
    }

    /// Dismounts every database cleanly and closes the store. Reports the first failure, after trying all.
    pub fn close(self) -> Result<()> {
        let mut first_error = None;
        let names: Vec<String> = self.mounted.lock().keys().cloned().collect();
        for name in names {
            if let Err(e) = self.dismount_database(&name)
                && first_error.is_none()
            {
                first_error = Some(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl<M: StateMachine> std::fmt::Debug for Store<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}
