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
#[non_exhaustive]
pub struct DatabaseEntry {
    /// Its name.
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Mounted by this store.
    pub mounted: bool,
    /// Its GUID, when mounted (reading it otherwise would need its lock).
    pub guid: Option<Guid>,
    /// Why its last mount by this store failed, while it stays dismounted because of it.
    pub mount_failure: Option<String>,
}

/// A store of mailbox databases under one root directory.
///
/// `Store` is `Sync`; databases are handed out as `Arc<Engine<M>>`. While a `Store` has its root open it holds
/// the root's lock: a second `Store` on the same root, in this or another process, gets
/// [`Error::AlreadyMounted`]. [`Store::open`] mounts every database the store holds; dropping the store
/// dismounts every database it mounted (once the last handle to each is gone), and [`Store::close`] does so
/// explicitly, reporting what it could not dismount.
pub struct Store<M: StateMachine> {
    // Field order: databases are dismounted (dropped) before the root lock is released.
    mounted: Mutex<BTreeMap<String, Arc<Engine<M>>>>,
    /// Databases whose last mount by this store failed, with the reason (they stay dismounted).
    failed: Mutex<BTreeMap<String, String>>,
    /// Serializes creations that must first look through every database (a mailbox's address is unique in the
    /// store).
    creating: Mutex<()>,
    root: PathBuf,
    options: Options,
    _lock: DirLock,
}

impl<M: StateMachine> Store<M> {
    /// Opens the store at `root`, creating it when `root` does not exist or is an empty directory, and mounts
    /// every database it holds (each recovered from its log as [`Engine::mount`] does, one after the other, so
    /// this blocks for as long as their recoveries take). `options` are used for every database this store
    /// creates or mounts.
    ///
    /// A database that fails to mount (damaged, say) does not stop the others: it stays dismounted,
    /// [`Store::list`] reports why ([`DatabaseEntry::mount_failure`]), [`Store::database`] answers
    /// [`StoreError::MountFailed`], and [`Store::mount_database`] tries again.
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
        let store = Store {
            mounted: Mutex::new(BTreeMap::new()),
            failed: Mutex::new(BTreeMap::new()),
            creating: Mutex::new(()),
            root,
            options,
            _lock: lock,
        };
        for name in database_dirs(&store.root)?.into_keys() {
            // A failure is recorded by `mount_database`; the other databases are mounted all the same.
            let _ = store.mount_database(&name);
        }
        Ok(store)
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
        self.failed.lock().remove(name);
        Ok(engine)
    }

    /// The database `name`, mounted: the one already mounted, or the existing one mounted now, or a new one
    /// created when the store holds none of that name — what a server calls at start-up for each database it
    /// serves, however often it restarts. A directory without a checkpoint file is created into only when it
    /// holds no data (an interrupted creation); one that holds data is refused with the engine's typed error,
    /// never created over.
    pub fn open_database(&self, name: &str) -> Result<Arc<Engine<M>>> {
        let dir = self.dir_of(name)?;
        if self.mounted.lock().contains_key(name) || dir.join(CHECKPOINT_FILE).exists() {
            return self.mount_database(name);
        }
        let created = self.create_database(name);
        if let Err(e) = &created {
            self.failed.lock().insert(name.to_owned(), e.to_string());
        }
        created
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
        match Engine::mount(&dir, self.options.clone().create_if_missing(false)) {
            Ok(engine) => {
                let engine = Arc::new(engine);
                mounted.insert(name.to_owned(), Arc::clone(&engine));
                self.failed.lock().remove(name);
                Ok(engine)
            }
            Err(e) => {
                self.failed.lock().insert(name.to_owned(), e.to_string());
                Err(e)
            }
        }
    }

    /// The mounted database `name`: [`StoreError::MountFailed`] when the store could not mount it,
    /// [`StoreError::NotMounted`] when it was dismounted, [`StoreError::NoSuchDatabase`] when there is none.
    pub fn database(&self, name: &str) -> Result<Arc<Engine<M>>> {
        let dir = self.dir_of(name)?;
        if let Some(engine) = self.mounted.lock().get(name) {
            return Ok(Arc::clone(engine));
        }
        if let Some(reason) = self.failed.lock().get(name) {
            return Err(StoreError::MountFailed { name: name.to_owned(), reason: reason.clone() }.into());
        }
        if !dir.exists() {
            return Err(StoreError::NoSuchDatabase { name: name.to_owned() }.into());
        }
        Err(StoreError::NotMounted { name: name.to_owned() }.into())
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
        self.failed.lock().remove(name);
        Ok(())
    }

    /// Every database of the store, by name.
    pub fn list(&self) -> Result<Vec<DatabaseEntry>> {
        let mounted = self.mounted.lock();
        let failed = self.failed.lock();
        Ok(database_dirs(&self.root)?
            .into_iter()
            .map(|(name, dir)| {
                let engine = mounted.get(&name);
                DatabaseEntry {
                    mounted: engine.is_some(),
                    guid: engine.map(|e| e.guid()),
                    mount_failure: failed.get(&name).cloned(),
                    name,
                    dir,
                }
            })
            .collect())
    }

    /// Dismounts every database cleanly and closes the store (its root's lock is released). Tries every
    /// database; when one cannot be dismounted — still used by other handles ([`StoreError::InUse`]), or its
    /// final checkpoint failed — the store comes back inside the error with that database still mounted, so the
    /// caller can drop the handles and call `close` again ([`CloseError::into_store`]). `?` turns the
    /// [`CloseError`] into an [`Error`] (dropping the store, which dismounts what it can).
    pub fn close(self) -> std::result::Result<(), CloseError<M>> {
        let mut first_error = None;
        let names: Vec<String> = self.mounted.lock().keys().cloned().collect();
        for name in names {
            if let Err(e) = self.dismount_database(&name)
                && first_error.is_none()
            {
                first_error = Some(e);
            }
        }
        match first_error {
            None => Ok(()),
            Some(error) if self.mounted.lock().is_empty() => Err(CloseError { store: None, error }),
            Some(error) => Err(CloseError { store: Some(Box::new(self)), error }),
        }
    }
}

/// Why [`Store::close`] did not close the store, and the store itself while a database of it is still mounted.
pub struct CloseError<M: StateMachine> {
    store: Option<Box<Store<M>>>,
    error: Error,
}

impl<M: StateMachine> CloseError<M> {
    /// The first failure.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The store, with the databases it could not dismount still mounted, to close again; `None` when every
    /// database was dismounted (a failure then was a dismount's final checkpoint: the store is closed).
    pub fn into_store(self) -> Option<Store<M>> {
        self.store.map(|store| *store)
    }
}

impl<M: StateMachine> From<CloseError<M>> for Error {
    fn from(e: CloseError<M>) -> Self {
        e.error
    }
}

impl<M: StateMachine> std::fmt::Debug for CloseError<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloseError").field("error", &self.error).field("store_open", &self.store.is_some()).finish()
    }
}

impl<M: StateMachine> std::fmt::Display for CloseError<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the store was not closed: {}", self.error)
    }
}

impl<M: StateMachine> std::error::Error for CloseError<M> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<M: StateMachine> std::fmt::Debug for Store<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}
