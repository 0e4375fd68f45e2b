//! Where backups go: a [`Target`] (a local directory, or with the `s3` feature an S3 bucket and prefix), and the
//! [`Backend`] each kind implements, so that the backup and restore steps in `mod.rs` and `restore.rs` are
//! written once.
//!
//! Both kinds lay a backup out the same way: `catalogue.json` at the root, and one backup's files under `<id>/`
//! (`state.mdb`, `logs/<generation>.log`, `segments/<generation>.log`). What differs is how a backup becomes
//! visible: a local backup is written under `<id>.partial` and renamed; an S3 backup's objects are uploaded under
//! `<id>/` and become part of a backup only when the catalogue, written last, names them. In both, whatever a
//! crash leaves that the catalogue does not list is ignored by restore and removed by the next backup.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::catalogue::CATALOGUE_FILE;
use crate::engine::{LOGS_DIR, SEGMENTS_DIR};
use crate::error::{Error, IoContext, Result};
use crate::fault::crash_point;
use crate::log::generation;
use crate::replication::snapshot::SNAPSHOT_STATE_FILE;

#[cfg(feature = "s3")]
pub use super::s3::S3Config;

/// A backup target: a local directory, or (feature `s3`) a prefix of an S3 bucket.
///
/// `&Path`, `PathBuf` and `&PathBuf` convert into a local target; [`Target::parse`] reads the command line's
/// form (`s3://bucket/prefix` or a path).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Target {
    /// A local directory (created if missing).
    Dir(PathBuf),
    /// A bucket and prefix of an S3-compatible object store.
    #[cfg(feature = "s3")]
    S3(S3Config),
}

impl Target {
    /// `s3://bucket/prefix` (endpoint and credentials from the usual `AWS_*` variables, see
    /// `S3Config::from_url`), or a local directory for anything else. Without the `s3` feature an `s3://`
    /// target fails with [`crate::BackupError::NoS3Support`].
    pub fn parse(text: &str) -> Result<Target> {
        if text.starts_with("s3://") {
            #[cfg(feature = "s3")]
            return Ok(Target::S3(S3Config::from_url(text)?));
            #[cfg(not(feature = "s3"))]
            return Err(crate::error::BackupError::NoS3Support { target: text.to_owned() }.into());
        }
        Ok(Target::Dir(PathBuf::from(text)))
    }

    /// The backend that reads and writes this target.
    pub(crate) fn open(&self) -> Result<Box<dyn Backend>> {
        match self {
            Target::Dir(dir) => Ok(Box::new(LocalDir { dir: dir.clone(), lock: None })),
            #[cfg(feature = "s3")]
            Target::S3(config) => Ok(Box::new(super::s3::S3Bucket::connect(config.clone())?)),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Dir(dir) => write!(f, "{}", dir.display()),
            #[cfg(feature = "s3")]
            Target::S3(config) => write!(f, "{config}"),
        }
    }
}

impl From<&Path> for Target {
    fn from(dir: &Path) -> Self {
        Target::Dir(dir.to_path_buf())
    }
}

impl From<PathBuf> for Target {
    fn from(dir: PathBuf) -> Self {
        Target::Dir(dir)
    }
}

impl From<&PathBuf> for Target {
    fn from(dir: &PathBuf) -> Self {
        Target::Dir(dir.clone())
    }
}

impl From<&Target> for Target {
    fn from(target: &Target) -> Self {
        target.clone()
    }
}

#[cfg(feature = "s3")]
impl From<S3Config> for Target {
    fn from(config: S3Config) -> Self {
        Target::S3(config)
    }
}

/// One kind of target's storage operations. Paths (`rel`) are relative to the target's root, `/`-separated.
pub(crate) trait Backend {
    /// Takes the target's backup lock (released when the backend is dropped), creating the target if missing.
    fn lock(&mut self) -> Result<()>;
    /// The whole object `rel` (the catalogue), or `None` when there is none.
    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>>;
    /// Replaces the catalogue atomically and durably: readers see the old one or the new one.
    fn store_catalogue(&self, bytes: &[u8]) -> Result<()>;
    /// Removes every backup the catalogue does not list (`listed` ids) that holds nothing but backup files;
    /// returns the top-level names still in the target (an id among them is taken).
    fn remove_unlisted(&mut self, listed: &HashSet<&str>) -> Result<HashSet<String>>;
    /// Starts writing backup `id` (not visible yet).
    fn begin(&self, id: &str) -> Result<()>;
    /// A new file `name` (`state.mdb`, `logs/…`) of backup `id`, `len` bytes long.
    fn create<'a>(&'a self, id: &str, name: &str, len: u64) -> Result<Box<dyn FileOut + 'a>>;
    /// Makes every file of backup `id` durable and the backup whole under `<id>/` (the catalogue, written
    /// next, is what names it).
    fn seal(&self, id: &str) -> Result<()>;
    /// Copies the object `rel`, which the catalogue says is `len` bytes long, to the local file `to` as it is
    /// (refused without copying when its length differs; restore checks its hash after).
    fn fetch(&self, rel: &str, len: u64, to: &Path) -> Result<()>;
}

/// A file being written into a target.
pub(crate) trait FileOut: Write {
    /// Ends the file: `filled` is how writing its bytes went. Durable once it returns `Ok`.
    fn finish(self: Box<Self>, filled: std::io::Result<()>) -> Result<()>;
}

/// Whether `rest` (a path inside a backup's `<id>/`) is a file a backup writes.
pub(crate) fn is_backup_file(rest: &str) -> bool {
    match rest.split_once('/') {
        None => rest == SNAPSHOT_STATE_FILE,
        Some((sub, name)) => (sub == LOGS_DIR || sub == SEGMENTS_DIR) && generation::parse_file_name(name).is_some(),
    }
}

/// Whether `name` is a backup's id: digits only.
pub(crate) fn is_backup_id(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
}

/// The lock file that serialises backups into one target.
pub(crate) const TARGET_LOCK_FILE: &str = "backup.lock";
/// How long a refused target lock is retried (a forked child may hold a copy of the descriptor for a moment).
const TARGET_LOCK_PATIENCE: Duration = Duration::from_millis(250);

/// A local directory target.
struct LocalDir {
    dir: PathBuf,
    lock: Option<File>,
}

impl LocalDir {
    fn partial(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.partial"))
    }
}

impl Backend for LocalDir {
    fn lock(&mut self) -> Result<()> {
        let target = &self.dir;
        fs::create_dir_all(target).at(target)?;
        let path = target.join(TARGET_LOCK_FILE);
        let lock = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).at(&path)?;
        let started = Instant::now();
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if started.elapsed() < TARGET_LOCK_PATIENCE => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(Error::InvalidArgument(format!(
                        "another backup into {} is under way; retry when it is done",
                        target.display()
                    )));
                }
                Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
        }
        self.lock = Some(lock);
        Ok(())
    }

    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join(rel);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn store_catalogue(&self, bytes: &[u8]) -> Result<()> {
        let tmp = self.dir.join(format!("{CATALOGUE_FILE}.tmp"));
        let path = self.dir.join(CATALOGUE_FILE);
        (|| -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        })()
        .at(&tmp)?;
        fs::rename(&tmp, &path).at(&path)?;
        crate::fsutil::sync_dir(&self.dir)
    }

    /// Removes the backup directories (`<digits>` and `<digits>.partial`) the catalogue does not list, when
    /// they hold nothing but backup files.
    fn remove_unlisted(&mut self, listed: &HashSet<&str>) -> Result<HashSet<String>> {
        let target = &self.dir;
        let mut removed = false;
        let mut names = HashSet::new();
        for entry in fs::read_dir(target).at(target)? {
            let entry = entry.at(target)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let id = name.strip_suffix(".partial").unwrap_or(name);
            if !is_backup_id(id) || (id == name && listed.contains(name)) || !looks_like_backup(&entry.path())? {
                names.insert(name.to_owned());
                continue;
            }
            fs::remove_dir_all(entry.path()).at(entry.path())?;
            removed = true;
        }
        if removed {
            crate::fsutil::sync_dir(target)?;
        }
        Ok(names)
    }

    fn begin(&self, id: &str) -> Result<()> {
        let partial = self.partial(id);
        if partial.exists() {
            fs::remove_dir_all(&partial).at(&partial)?;
        }
        for sub in [LOGS_DIR, SEGMENTS_DIR] {
            fs::create_dir_all(partial.join(sub)).at(&partial)?;
        }
        Ok(())
    }

    fn create<'a>(&'a self, id: &str, name: &str, _len: u64) -> Result<Box<dyn FileOut + 'a>> {
        let path = self.partial(id).join(name);
        let file = File::create(&path).at(&path)?;
        Ok(Box::new(LocalFile { file, path }))
    }

    fn seal(&self, id: &str) -> Result<()> {
        let partial = self.partial(id);
        for sub in [LOGS_DIR, SEGMENTS_DIR] {
            crate::fsutil::sync_dir(&partial.join(sub))?;
        }
        crate::fsutil::sync_dir(&partial)?;
        crash_point!("backup::synced");
        let done = self.dir.join(id);
        fs::rename(&partial, &done).at(&done)?;
        crate::fsutil::sync_dir(&self.dir)?;
        crash_point!("backup::renamed");
        Ok(())
    }

    fn fetch(&self, rel: &str, _len: u64, to: &Path) -> Result<()> {
        let from = self.dir.join(rel);
        fs::copy(&from, to).at(&from)?;
        Ok(())
    }
}

/// A file of a local backup.
struct LocalFile {
    file: File,
    path: PathBuf,
}

impl Write for LocalFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl FileOut for LocalFile {
    fn finish(self: Box<Self>, filled: std::io::Result<()>) -> Result<()> {
        filled.at(&self.path)?;
        self.file.sync_all().at(&self.path)
    }
}

/// Whether `path` is a directory holding nothing but what a backup writes (`state.mdb`, and generation files in
/// `logs/` and `segments/`): an unlisted directory of any other shape is not a backup's, and is left alone.
fn looks_like_backup(path: &Path) -> Result<bool> {
    if !fs::symlink_metadata(path).at(path)?.is_dir() {
        return Ok(false);
    }
    for entry in fs::read_dir(path).at(path)? {
        let entry = entry.at(path)?;
        let name = entry.file_name();
        let kind = entry.file_type().at(entry.path())?;
        let fits = match name.to_str() {
            Some(SNAPSHOT_STATE_FILE) => kind.is_file(),
            Some(sub @ (LOGS_DIR | SEGMENTS_DIR)) if kind.is_dir() => {
                let mut generations = true;
                for file in fs::read_dir(entry.path()).at(entry.path())? {
                    let file = file.at(entry.path())?;
                    let name = file.file_name();
                    generations &= file.file_type().at(file.path())?.is_file()
                        && name.to_str().is_some_and(|n| is_backup_file(&format!("{sub}/{n}")));
                }
                generations
            }
            _ => false,
        };
        if !fits {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_files_and_ids_are_told_from_anything_else() {
        assert!(is_backup_file("state.mdb"));
        assert!(is_backup_file("logs/0000000000000001.log") && is_backup_file("segments/0000000000000002.log"));
        for other in ["notes.txt", "logs/notes.txt", "logs/", "other/0000000000000001.log", "state.mdb/x", ""] {
            assert!(!is_backup_file(other), "{other}");
        }
        assert!(is_backup_id("000001") && !is_backup_id("") && !is_backup_id("000001.partial"));
    }

    #[test]
    fn a_target_is_parsed_from_the_command_line() {
        assert!(matches!(Target::parse("/var/backups").unwrap(), Target::Dir(d) if d == Path::new("/var/backups")));
        #[cfg(not(feature = "s3"))]
        {
            let e = Target::parse("s3://bucket/prefix").unwrap_err();
            assert!(matches!(e, Error::Backup(crate::error::BackupError::NoS3Support { .. })), "{e}");
            assert!(e.to_string().contains("`s3` feature"), "{e}");
        }
    }
}
