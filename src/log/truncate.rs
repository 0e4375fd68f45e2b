//! Deleting truncated generations, off the thread that truncated them.
//!
//! With `discard` on ext4 an unlink of a 1 MiB generation took ~3 ms (a quarter of the writer's time under a
//! mail workload), and a passive copy's deep checkpoint releases ~100 generations at once (3–25 ms each), so
//! neither the engine's writer nor a copy's replayer waits for them (BENCHMARKS.md). Whoever truncates has
//! already dropped the files from its own list (and published the new oldest LSN) before handing them over, so
//! nothing can still need them.
//!
//! Files are deleted oldest first and the directory is synced after each batch. A crash, or a [`Truncator::stop`],
//! part-way through leaves a contiguous run of generations below the checkpoint: the next truncation after the
//! database is opened again lists and removes them. A file already gone counts as deleted.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use crate::error::{Error, IoContext, Result};

/// Work for the deletion thread.
enum Work {
    /// Delete these files (oldest first), then sync the directory.
    Files(Vec<PathBuf>),
    /// Answer once everything sent before has been deleted.
    Flush(SyncSender<()>),
}

/// The thread deleting a log directory's truncated generations.
pub(crate) struct Truncator {
    sender: Option<Sender<Work>>,
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Truncator {
    /// Starts the thread for the log directory `logs`. `failed` hears of every deletion or directory sync that
    /// failed (the owner poisons or fails: a generation that could not be deleted may still be on disk);
    /// `deleted` of every batch done, with its number of files.
    pub(crate) fn start(
        logs: PathBuf,
        failed: impl Fn(Error) + Send + 'static,
        deleted: impl Fn(u64) + Send + 'static,
    ) -> Result<Self> {
        let (sender, receiver) = channel::<Work>();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("mailstore-truncate".into())
            .spawn({
                let logs = logs.clone();
                move || {
                    for work in receiver {
                        match work {
                            Work::Files(files) => {
                                let mut done = 0;
                                for path in &files {
                                    if stopping.load(Ordering::Acquire) {
                                        break;
                                    }
                                    match fs::remove_file(path) {
                                        Ok(()) => done += 1,
                                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => done += 1,
                                        Err(e) => failed(Error::io(path, e)),
                                    }
                                }
                                match crate::fsutil::sync_dir(&logs) {
                                    Ok(()) => deleted(done),
                                    Err(e) => failed(e),
                                }
                            }
                            Work::Flush(answer) => {
                                let _ = answer.send(());
                            }
                        }
                    }
                }
            })
            .at(&logs)?;
        Ok(Truncator { sender: Some(sender), thread: Some(thread), stop })
    }

    /// Queues `files` for deletion, oldest first, behind everything queued before.
    pub(crate) fn delete(&self, files: Vec<PathBuf>) {
        if files.is_empty() {
            return;
        }
        if let Some(sender) = &self.sender {
            let _ = sender.send(Work::Files(files));
        }
    }

    /// Waits until every deletion queued so far is done.
    pub(crate) fn flush(&self) {
        let (answer, done) = sync_channel(1);
        if let Some(sender) = &self.sender
            && sender.send(Work::Flush(answer)).is_ok()
        {
            let _ = done.recv();
        }
    }

    /// Stops deleting after the file being deleted now; what is still queued stays on disk, below the
    /// checkpoint, for the next truncation after a reopen.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl Drop for Truncator {
    /// Finishes the deletions queued (all of them, unless [`Truncator::stop`] was called) and joins the thread.
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use parking_lot::Mutex;

    use super::*;

    #[test]
    fn deletes_oldest_first_and_counts_a_missing_file_as_deleted() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io(Path::new("tmp"), e))?;
        let files: Vec<PathBuf> = (1..=3).map(|i| dir.path().join(format!("{i}.log"))).collect();
        for f in &files[..2] {
            fs::write(f, b"x").at(f)?;
        }
        let counted = Arc::new(Mutex::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let truncator = {
            let (counted, errors) = (Arc::clone(&counted), Arc::clone(&errors));
            Truncator::start(
                dir.path().to_path_buf(),
                move |e| errors.lock().push(e.to_string()),
                move |n| *counted.lock() += n,
            )?
        };
        truncator.delete(files.clone());
        truncator.flush();
        assert!(files.iter().all(|f| !f.exists()));
        assert_eq!(*counted.lock(), 3);
        assert!(errors.lock().is_empty());
        Ok(())
    }

    #[test]
    fn a_stopped_truncator_leaves_what_is_queued() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io(Path::new("tmp"), e))?;
        let file = dir.path().join("1.log");
        fs::write(&file, b"x").at(&file)?;
        let truncator = Truncator::start(dir.path().to_path_buf(), |_| {}, |_| {})?;
        truncator.stop();
        truncator.delete(vec![file.clone()]);
        drop(truncator);
        assert!(file.exists());
        Ok(())
    }
}
