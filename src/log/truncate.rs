//! Releasing generations the log no longer needs, off the thread that truncated them.
//!
//! A generation leaving the log is either deleted or, when the state still refers to attachments in it (message
//! bodies, see `engine::attachments`), moved from `logs/` to `segments/` (a rename, nothing copied); a segment
//! is deleted once the state refers to nothing in it. [`plan`] decides which, the same way for the engine's
//! writer and a passive copy's deep checkpoints; the [`Truncator`] thread carries it out.
//!
//! With `discard` on ext4 an unlink of a 1 MiB generation took ~3 ms (a quarter of the writer's time under a
//! mail workload), and a passive copy's deep checkpoint releases ~100 generations at once (3–25 ms each), so
//! neither the engine's writer nor a copy's replayer waits for them (BENCHMARKS.md). Whoever truncates has
//! already dropped the files from its own list (and published the new oldest LSN) before handing them over, so
//! nothing can still need them from the log; a deletion first waits for the read transactions that may still
//! name attachments in them ([`Attachments::wait_for_readers`]).
//!
//! Files are moved and deleted oldest first and the directories are synced after each batch. A crash, or a
//! [`Truncator::stop`], part-way through leaves a contiguous run of generations below the checkpoint in `logs/`
//! (and segments nobody refers to): the next truncation after the database is opened again releases them. A file
//! already gone counts as deleted; a generation already moved counts as moved.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;

use crate::engine::Attachments;
use crate::error::{Error, Result};

/// What one truncation does with the files it releases.
#[derive(Debug, Default)]
pub(crate) struct Release {
    /// Generations whose attachments are still referenced: (number, path in `logs/`, path in `segments/`).
    pub(crate) moves: Vec<(u64, PathBuf, PathBuf)>,
    /// Files to delete: (generation, path), oldest first.
    pub(crate) deletes: Vec<(u64, PathBuf)>,
}

impl Release {
    fn is_empty(&self) -> bool {
        self.moves.is_empty() && self.deletes.is_empty()
    }
}

/// Decides what happens to the generations `leaving` the log (oldest first) and to the `segments` on disk
/// (updated to what will be there), given the generations the state refers to: referenced ones are (or stay)
/// segments, every other one is deleted.
pub(crate) fn plan(
    leaving: Vec<(u64, PathBuf)>,
    segments: &mut BTreeSet<u64>,
    referenced: &BTreeSet<u64>,
    attachments: &Attachments,
) -> Release {
    let mut release = Release::default();
    let dead: Vec<u64> = segments.iter().copied().filter(|g| !referenced.contains(g)).collect();
    for generation in dead {
        segments.remove(&generation);
        release.deletes.push((generation, attachments.segment_path(generation)));
    }
    for (generation, path) in leaving {
        if referenced.contains(&generation) {
            segments.insert(generation);
            release.moves.push((generation, path, attachments.segment_path(generation)));
        } else {
            release.deletes.push((generation, path));
        }
    }
    release
}

/// Work for the thread.
enum Work {
    /// Move these generations, then delete these files (oldest first), then sync the directories.
    Release(Release),
    /// Run this once everything sent before has been done.
    Then(Box<dyn FnOnce() + Send>),
}

/// The thread releasing a database's truncated generations.
pub(crate) struct Truncator {
    sender: Option<Sender<Work>>,
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Truncator {
    /// Starts the thread for the database whose attachments are `attachments`. `failed` hears of every move,
    /// deletion or directory sync that failed (the owner poisons or fails: a generation that could not be
    /// deleted may still be on disk); `deleted` of every batch done, with its number of files deleted.
    pub(crate) fn start(
        attachments: Attachments,
        failed: impl Fn(Error) + Send + 'static,
        deleted: impl Fn(u64) + Send + 'static,
    ) -> Result<Self> {
        let (sender, receiver) = channel::<Work>();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("mailstore-truncate".into())
            .spawn(move || {
                for work in receiver {
                    match work {
                        Work::Release(release) => match carry_out(&attachments, &release, &stopping) {
                            Ok(done) => deleted(done),
                            Err(e) => failed(e),
                        },
                        Work::Then(f) => f(),
                    }
                }
            })
            .map_err(|e| Error::io(Path::new("mailstore-truncate"), e))?;
        Ok(Truncator { sender: Some(sender), thread: Some(thread), stop })
    }

    /// Queues `release`, behind everything queued before.
    pub(crate) fn release(&self, release: Release) {
        if release.is_empty() {
            return;
        }
        if let Some(sender) = &self.sender {
            let _ = sender.send(Work::Release(release));
        }
    }

    /// Waits until everything queued so far is done.
    #[cfg(test)]
    pub(crate) fn flush(&self) {
        let (answer, done) = std::sync::mpsc::sync_channel(1);
        self.then(move || {
            let _ = answer.send(());
        });
        let _ = done.recv();
    }

    /// Runs `f` on the truncator's thread once everything queued so far is done, without waiting for it (a
    /// deletion may wait for long read transactions; the engine's writer must not). If the thread is gone, `f`
    /// runs now.
    pub(crate) fn then(&self, f: impl FnOnce() + Send + 'static) {
        let work = Work::Then(Box::new(f));
        match &self.sender {
            Some(sender) => {
                if let Err(std::sync::mpsc::SendError(Work::Then(f))) = sender.send(work) {
                    f();
                }
            }
            None => {
                if let Work::Then(f) = work {
                    f();
                }
            }
        }
    }

    /// Stops after the file being handled now; what is still queued stays on disk, for the next truncation
    /// after a reopen.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Moves, then deletes, then syncs the directories touched. Returns how many files were deleted.
fn carry_out(attachments: &Attachments, release: &Release, stopping: &AtomicBool) -> Result<u64> {
    let (mut moved_to, mut touched): (BTreeSet<PathBuf>, BTreeSet<PathBuf>) = Default::default();
    for (_, from, to) in &release.moves {
        if stopping.load(Ordering::Acquire) {
            return Ok(0);
        }
        match fs::rename(from, to) {
            Ok(()) => {}
            // Moved before a crash or a stop, and listed again from `logs/`'s stale entry: nothing to do.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.exists() => {}
            Err(e) => return Err(Error::io(from, e)),
        }
        moved_to.extend(to.parent().map(Path::to_path_buf));
        touched.extend(from.parent().map(Path::to_path_buf));
    }
    // The destination directory first: once the source's entry is gone for good, the file is in `segments/`.
    for dir in &moved_to {
        crate::fsutil::sync_dir(dir)?;
    }
    let mut done = 0;
    if !release.deletes.is_empty() {
        attachments.wait_for_readers();
    }
    for (generation, path) in &release.deletes {
        if stopping.load(Ordering::Acquire) {
            break;
        }
        match fs::remove_file(path) {
            Ok(()) => done += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => done += 1,
            Err(e) => return Err(Error::io(path, e)),
        }
        attachments.forget(*generation);
        touched.extend(path.parent().map(Path::to_path_buf));
    }
    for dir in &touched {
        crate::fsutil::sync_dir(dir)?;
    }
    Ok(done)
}

impl Drop for Truncator {
    /// Finishes what is queued (all of it, unless [`Truncator::stop`] was called) and joins the thread.
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use parking_lot::Mutex;

    use super::*;
    use crate::error::IoContext;

    fn dirs(root: &Path) -> Result<Attachments> {
        for d in [crate::engine::LOGS_DIR, crate::engine::SEGMENTS_DIR] {
            fs::create_dir_all(root.join(d)).at(root)?;
        }
        Ok(Attachments::new(root))
    }

    fn log_file(root: &Path, generation: u64) -> PathBuf {
        root.join(crate::engine::LOGS_DIR).join(crate::log::generation::file_name(generation))
    }

    #[test]
    fn referenced_generations_move_and_the_rest_are_deleted() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io(Path::new("tmp"), e))?;
        let attachments = dirs(dir.path())?;
        // Generations 1-3 leave the log (3 is already gone); 9 is a segment nobody refers to any more.
        let leaving: Vec<(u64, PathBuf)> = (1..=3).map(|g| (g, log_file(dir.path(), g))).collect();
        for (_, f) in &leaving[..2] {
            fs::write(f, b"x").at(f)?;
        }
        fs::write(attachments.segment_path(9), b"x").at(dir.path())?;
        let mut segments = BTreeSet::from([9]);
        let release = plan(leaving.clone(), &mut segments, &BTreeSet::from([2]), &attachments);
        assert_eq!(segments, BTreeSet::from([2]));
        let counted = Arc::new(Mutex::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let truncator = {
            let (counted, errors) = (Arc::clone(&counted), Arc::clone(&errors));
            Truncator::start(
                attachments.clone(),
                move |e| errors.lock().push(e.to_string()),
                move |n| *counted.lock() += n,
            )?
        };
        truncator.release(release);
        truncator.flush();
        assert!(leaving.iter().all(|(_, f)| !f.exists()));
        assert!(attachments.segment_path(2).exists(), "a referenced generation is kept as a segment");
        assert!(!attachments.segment_path(9).exists(), "a segment nobody refers to is deleted");
        assert_eq!(*counted.lock(), 3, "1, 3 (already gone) and segment 9");
        assert!(errors.lock().is_empty());
        Ok(())
    }

    #[test]
    fn a_deletion_waits_for_older_readers() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io(Path::new("tmp"), e))?;
        let attachments = dirs(dir.path())?;
        let file = log_file(dir.path(), 1);
        fs::write(&file, b"x").at(&file)?;
        let reader = attachments.enter();
        let truncator = Truncator::start(attachments.clone(), |_| {}, |_| {})?;
        truncator.release(plan(vec![(1, file.clone())], &mut BTreeSet::new(), &BTreeSet::new(), &attachments));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(file.exists(), "deleted under a reader that began before the release");
        let later = attachments.enter();
        drop(reader);
        truncator.flush();
        assert!(!file.exists(), "a reader that began after the release does not hold it up");
        drop(later);
        Ok(())
    }

    #[test]
    fn a_stopped_truncator_leaves_what_is_queued() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io(Path::new("tmp"), e))?;
        let attachments = dirs(dir.path())?;
        let file = log_file(dir.path(), 1);
        fs::write(&file, b"x").at(&file)?;
        let truncator = Truncator::start(attachments.clone(), |_| {}, |_| {})?;
        truncator.stop();
        truncator.release(plan(vec![(1, file.clone())], &mut BTreeSet::new(), &BTreeSet::new(), &attachments));
        drop(truncator);
        assert!(file.exists());
        Ok(())
    }
}
