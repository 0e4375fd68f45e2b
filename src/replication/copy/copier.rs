//! The copier thread: it asks the source for the log, has every chunk inspected, and only then writes and syncs
//! it to the copy's own log (creating each new generation), recording the source's position and epochs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::admin::learn_epoch;
use super::shared::{LocalGen, Shared, Tail};
use super::status::CopyState;
use crate::engine::{LOGS_DIR, StateMachine};
use crate::error::{Error, Result};
use crate::log::LogWriter;
use crate::log::format::GenerationHeader;
use crate::log::reader::Extent;
use crate::replication::ReplicationError;
use crate::replication::inspect::{Expect, Inspected, TailView, inspect, inspect_origin};
use crate::replication::protocol::{Chunk, ReadRequest, SourceInfo};
use crate::types::now_micros;

/// The copier + inspector thread.
pub(super) struct Copier<M: StateMachine> {
    pub(super) shared: Arc<Shared<M>>,
    pub(super) tail: Option<Tail>,
}

impl<M: StateMachine> Copier<M> {
    pub(super) fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        let mut backoff = Duration::from_millis(50);
        while !shared.stopped() {
            {
                let mut p = shared.progress.lock();
                if p.suspended || p.failed {
                    drop(p);
                    shared.idle(Duration::from_millis(200));
                    continue;
                }
                p.copier_busy = true;
            }
            let outcome = self.step();
            shared.progress.lock().copier_busy = false;
            shared.changed.notify_all();
            match outcome {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(e) if is_shipping(&e) && !is_local_io(&e, &shared.dir) => {
                    let mut p = shared.progress.lock();
                    p.state = CopyState::DisconnectedAndHealthy;
                    p.reason = Some(e.to_string());
                    drop(p);
                    shared.changed.notify_all();
                    shared.idle(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(Error::Fenced { epoch, current }) => {
                    // The source is an old active: it fenced itself; we wait for the new active.
                    let mut p = shared.progress.lock();
                    p.state = CopyState::DisconnectedAndHealthy;
                    p.reason = Some(format!("the source is an old active (epoch {current}; epoch {epoch} exists)"));
                    drop(p);
                    shared.idle(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) if is_local_io(&e, &shared.dir) => {
                    // What the failed write or sync left of the log is unknown, and a failed fsync is never
                    // retried (ARCHITECTURE §8): this copier writes no more; reopening the copy judges its log.
                    shared.poison(e.to_string());
                    return;
                }
                Err(e) => shared.fail(e.to_string()),
            }
        }
    }

    /// One request and what comes of it.
    fn step(&mut self) -> Result<()> {
        let shared = &self.shared;
        let (generation, offset) = match &self.tail {
            Some(t) if t.closed => (t.generation() + 1, 0),
            Some(t) => (t.generation(), t.log.offset()),
            None => (self.seed_generation()?, 0),
        };
        let (known_epoch, durable_lsn, keep_lsn) = {
            let p = shared.progress.lock();
            (p.known_epoch, p.copied_lsn, shared.keep_lsn(&p))
        };
        let chunk = shared.source.read(ReadRequest {
            copy: shared.id,
            known_epoch,
            generation,
            offset,
            durable_lsn,
            keep_lsn,
            max_bytes: shared.options.chunk_bytes,
            wait_millis: shared.options.poll.as_millis().min(u128::from(u32::MAX)) as u32,
            block_mode: shared.options.block_mode,
        })?;
        {
            let mut p = shared.progress.lock();
            p.source_micros = now_micros();
            if p.state == CopyState::Initializing || p.state == CopyState::DisconnectedAndHealthy {
                p.state = CopyState::Healthy;
                p.reason = None;
            }
        }
        let shared = Arc::clone(&self.shared);
        let _gate = shared.write_gate.lock();
        if shared.stopped() {
            return Ok(());
        }
        self.accept(generation, offset, chunk)
    }

    /// The generation holding the first record the state needs, for a freshly seeded copy with no log yet.
    fn seed_generation(&self) -> Result<u64> {
        let want = self.shared.progress.lock().replayed_lsn + 1;
        let mut found = None;
        let mut from = 1;
        loop {
            let headers = self.shared.source.headers(from)?;
            let Some(last) = headers.last() else { break };
            for raw in &headers {
                let header = GenerationHeader::decode(raw)
                    .map_err(|e| ReplicationError::ChunkRejected { reason: format!("source header: {e}") })?;
                if header.first_lsn <= want {
                    found = Some(header.generation);
                }
            }
            let last = GenerationHeader::decode(last)
                .map_err(|e| ReplicationError::ChunkRejected { reason: format!("source header: {e}") })?;
            if headers.len() < 4096 {
                break;
            }
            from = last.generation + 1;
        }
        found.ok_or_else(|| {
            ReplicationError::CopyFailed {
                reason: format!("the source no longer has the log from LSN {want}: reseed the copy"),
            }
            .into()
        })
    }

    /// Inspects a chunk and, only if all of it passes, writes and syncs it.
    fn accept(&mut self, generation: u64, offset: u64, chunk: Chunk) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let (known_epoch, want_lsn) = {
            let p = shared.progress.lock();
            (p.known_epoch, p.replayed_lsn + 1)
        };
        let expect = Expect {
            guid: shared.guid,
            known_epoch,
            generation,
            offset,
            tail: self.tail.as_ref().map(|t| TailView {
                header: *t.log.header(),
                next_lsn: t.log.next_lsn(),
                chain: t.log.checksum(),
            }),
            want_lsn,
        };
        if chunk.bytes.is_empty() {
            // Nothing to inspect but who sent it and for which position.
            inspect_origin(&expect, &chunk)?;
            if chunk.closed
                && let Some(t) = &mut self.tail
                && t.generation() == generation
            {
                t.closed = true;
            }
            return self.note_source(chunk.source);
        }
        let Inspected { header, last_lsn, records } = inspect::<M::Op>(&expect, &chunk)?;
        let bytes = &chunk.bytes;
        // Write and sync, then publish.
        if let Some(header) = header {
            let logs = shared.dir.join(LOGS_DIR);
            let log = LogWriter::start_copied(&logs, header, bytes, last_lsn + 1)?;
            let mut p = shared.progress.lock();
            if let Some(prev) = p.gens.values_mut().last() {
                prev.closed_micros = Some(header.created_micros);
            }
            p.gens.insert(
                generation,
                LocalGen {
                    extent: Extent { header, path: log.path().to_path_buf(), end_offset: log.offset(), last_lsn },
                    closed_micros: None,
                },
            );
            drop(p);
            self.tail = Some(Tail { log, closed: false });
        } else if let Some(t) = &mut self.tail {
            t.log.append_frames(bytes, last_lsn)?;
            t.log.sync()?;
            let mut p = shared.progress.lock();
            if let Some(local) = p.gens.get_mut(&generation) {
                local.extent.end_offset = t.log.offset();
                local.extent.last_lsn = last_lsn;
            }
        }
        if let Some(t) = &mut self.tail {
            t.closed = chunk.closed;
        }
        {
            let mut p = shared.progress.lock();
            if records > 0 || header.is_some() {
                p.copied_lsn = p.copied_lsn.max(last_lsn);
                p.copied_micros = now_micros();
            }
            if let Some(t) = &self.tail {
                p.copied_generation = t.generation();
                p.copied_offset = t.log.offset();
            }
        }
        shared.changed.notify_all();
        self.note_source(chunk.source)
    }

    /// Records the source's position (durably once per generation: it survives a restart of the copy) and any
    /// newer epoch. Called with the write gate held.
    fn note_source(&self, source: SourceInfo) -> Result<()> {
        let mut p = self.shared.progress.lock();
        let moved = p.source.is_none_or(|s| s.position.generation != source.position.generation);
        p.source = Some(source);
        if moved {
            self.shared.save_admin(&p)?;
        }
        drop(p);
        learn_epoch(&self.shared, source.epoch)
    }
}

/// A failure of log shipping or an I/O error (the copier reports the copy disconnected and asks again, unless the
/// I/O error is about the copy's own files: see `is_local_io`).
fn is_shipping(e: &Error) -> bool {
    match e {
        Error::Replication(e) => e.is_shipping(),
        Error::Io { .. } => true,
        _ => false,
    }
}

/// I/O errors on the copy's own files are failures; I/O errors elsewhere (a transport) are disconnections.
fn is_local_io(e: &Error, dir: &Path) -> bool {
    matches!(e, Error::Io { path, .. } if path.starts_with(dir))
}
