//! The state store: one LMDB environment per database, opened through heed.
//!
//! Besides the state machine's own databases it holds `engine.meta`, whose `applied_lsn` is written in the same
//! LMDB transaction as the changes it reflects: after any crash it says exactly where replay resumes.

use std::fs;
use std::path::{Path, PathBuf};

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, RoTxn, RwTxn, WithoutTls};
use parking_lot::RwLock;

use crate::codec;
use crate::engine::attachments::{Attachments, Place, ReaderToken};
use crate::engine::lmdb_file;
use crate::engine::table::Table;
use crate::engine::{ApplyContext, ApplyError, Counters, Durability, LogPolicy, LogRetention, StateMachine};
use crate::error::{CodecError, Error, IoContext, Result};
use crate::log::RecordRef;
use crate::types::{Guid, Lsn};

/// Directory of the LMDB environment inside a database directory.
pub const STATE_DIR: &str = "state";
const META_DB: &str = "engine.meta";
const KEY_GUID: &[u8] = b"guid";
const KEY_EPOCH: &[u8] = b"epoch";
const KEY_APPLIED: &[u8] = b"applied_lsn";
const KEY_MACHINE: &[u8] = b"machine";
const KEY_POLICY: &[u8] = b"log_policy";
const KEY_FORMAT: &[u8] = b"format";
/// The format of a database's files this release writes and reads: log records with attachments (`codec`), and
/// the state store's layout: every value of every table checksummed (`engine::table`); version 3 log records
/// carry their commit time. Version 1 (before attachments) kept no `format` key; version 2 stored values without
/// checksums and records without times.
pub(crate) const FORMAT: u32 = 3;
/// Initial map size; the map doubles whenever a write finds it full.
pub const INITIAL_MAP_SIZE: usize = 64 << 20;
/// Named databases an environment may hold (engine and state machine together).
const MAX_DBS: u32 = 128;

/// The engine's own keys in the state store.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    db: Table,
    /// The same database read without checksums: only to name the format of a database older than them.
    raw: Database<'static, Bytes, Bytes>,
}

/// The engine's metadata as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaValues {
    /// The database's GUID.
    pub guid: Guid,
    /// Current epoch.
    pub epoch: u64,
    /// Last LSN applied.
    pub applied_lsn: Lsn,
    /// The [`StateMachine::NAME`] the database was created for.
    pub machine: String,
    /// The stored log policy.
    pub policy: LogPolicy,
    /// The format versions the database was written in: the engine's ([`FORMAT`]) and the state machine's
    /// ([`StateMachine::FORMAT`]); 1 and 1 for a database older than format versions.
    pub format: (u32, u32),
}

/// The engine's metadata in `env`, the state store of the database in `dir`; [`Error::NotADatabase`] when it
/// holds none (a state store that was never initialised, or not a database's).
pub(crate) fn read_meta(env: &Env<WithoutTls>, dir: &Path) -> Result<MetaValues> {
    let values = match Meta::open(env)? {
        Some(meta) => {
            let txn = env.read_txn()?;
            meta.read(&txn).map_err(|e| e.in_database(dir))?
        }
        None => None,
    };
    values.ok_or_else(|| Error::NotADatabase {
        path: dir.join(STATE_DIR),
        reason: "the state store holds no engine metadata".into(),
    })
}

/// Opens the environment in `dir/state` with the flags `durability` calls for (see ARCHITECTURE.md, "Why these
/// LMDB flags"). `read_only` opens it for inspection only.
pub fn open_env(dir: &Path, durability: Durability, read_only: bool) -> Result<Env<WithoutTls>> {
    let path: PathBuf = dir.join(STATE_DIR);
    if !read_only {
        fs::create_dir_all(&path).at(&path)?;
    }
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options.map_size(INITIAL_MAP_SIZE).max_dbs(MAX_DBS);
    let flags = match (read_only, durability) {
        (true, _) => EnvFlags::READ_ONLY,
        (false, Durability::Full) => EnvFlags::NO_META_SYNC,
        (false, Durability::Relaxed) => EnvFlags::NO_META_SYNC | EnvFlags::NO_SYNC,
    };
    // SAFETY: `NO_META_SYNC` keeps LMDB atomic and consistent (a system crash may only undo the last commit,
    // which the log replays); `NO_SYNC` is only used in `Relaxed` mode, whose documented promise excludes
    // power loss. The environment is opened once per directory and process: the caller holds the directory's
    // exclusive lock (or, read-only, a shared one that excludes a mounted writer), and no file of the
    // environment is modified outside LMDB.
    unsafe { options.flags(flags) };
    // LMDB trusts the file's page numbers and offsets: a truncated or damaged file would fault in the map.
    lmdb_file::validate_before_mapping(&lmdb_file::data_file(&path), lmdb_file::WALK_AT_MOUNT)?;
    // SAFETY: see above; the memory map is only ever touched through heed's transactions, and the file's
    // structure was verified (without mapping it) not to lead LMDB's reads outside the file.
    let env = unsafe { options.open(&path) }?;
    // LMDB keeps the map size of the file if it is larger than what we asked for.
    Ok(env)
}

impl Meta {
    fn new(raw: Database<'static, Bytes, Bytes>) -> Self {
        Meta { db: Table::new(raw, META_DB), raw }
    }

    /// The format versions of a database written before values carried checksums (format 1 or 2), read
    /// without verifying anything; `None` for a database of this format or later.
    fn legacy_format(&self, txn: &RoTxn<'_>) -> Result<Option<(u32, u32)>> {
        if self.raw.get(txn, KEY_GUID)?.is_none() {
            return Ok(None);
        }
        match self.raw.get(txn, KEY_FORMAT)? {
            None => Ok(Some((1, 1))),
            // Format 2 stored the two versions alone; from format 3 on a checksum follows them.
            Some(v) if v.len() == 8 => Ok(Some((keys_u32(&v[..4]), keys_u32(&v[4..])))),
            Some(_) => Ok(None),
        }
    }

    /// Opens the metadata database of an existing environment without writing; `None` when it does not exist.
    pub fn open(env: &Env<WithoutTls>) -> Result<Option<Self>> {
        let rtxn = env.read_txn()?;
        let db = env
            .open_databases_and_commit(rtxn, |dbo, rtxn| -> Result<_> {
                Ok(CommitOrAbort::<_, ()>::Commit(dbo.open_database::<Bytes, Bytes>(rtxn, Some(META_DB))?))
            })?
            .commit()
            .flatten();
        Ok(db.map(Meta::new))
    }

    /// Writes a fresh database's identity, and the format versions it is written in.
    pub fn init(&self, txn: &mut RwTxn<'_>, guid: Guid, epoch: u64, machine: &str, machine_format: u32) -> Result<()> {
        let mut format = [0u8; 8];
        format[..4].copy_from_slice(&FORMAT.to_be_bytes());
        format[4..].copy_from_slice(&machine_format.to_be_bytes());
        self.db.put(txn, KEY_FORMAT, &format)?;
        self.db.put(txn, KEY_GUID, guid.as_bytes())?;
        self.db.put(txn, KEY_MACHINE, machine.as_bytes())?;
        self.db.put(txn, KEY_EPOCH, &epoch.to_be_bytes())?;
        self.db.put(txn, KEY_APPLIED, &0u64.to_be_bytes())?;
        Ok(())
    }

    /// Reads the metadata; `None` for a store that was never initialised.
    pub fn read(&self, txn: &RoTxn<'_>) -> Result<Option<MetaValues>> {
        if let Some(format) = self.legacy_format(txn)? {
            return self.read_legacy(txn, format);
        }
        let Some(guid) = self.db.get(txn, KEY_GUID)? else { return Ok(None) };
        let guid: [u8; 16] = guid.try_into().map_err(|_| bad("guid"))?;
        let epoch = self.read_u64(txn, KEY_EPOCH)?;
        let applied_lsn = self.read_u64(txn, KEY_APPLIED)?;
        let machine = self.db.get(txn, KEY_MACHINE)?.ok_or_else(|| bad("machine"))?;
        let machine = String::from_utf8(machine.to_vec()).map_err(|_| bad("machine"))?;
        let policy = match self.db.get(txn, KEY_POLICY)?.ok_or_else(|| bad("log_policy"))? {
            [retention, circular] if *retention <= 1 && *circular <= 1 => LogPolicy {
                retention: if *retention == 1 { LogRetention::UntilBackup } else { LogRetention::Truncate },
                circular_logging: *circular == 1,
            },
            _ => return Err(bad("log_policy")),
        };
        let format = match self.db.get(txn, KEY_FORMAT)? {
            None => (1, 1),
            Some(v) => {
                let v: [u8; 8] = v.try_into().map_err(|_| bad("format"))?;
                (keys_u32(&v[..4]), keys_u32(&v[4..]))
            }
        };
        Ok(Some(MetaValues { guid: Guid(guid), epoch, applied_lsn, machine, policy, format }))
    }

    /// The metadata of a database of an older format, read without checksums, so that mounting it is refused
    /// with [`Error::UnsupportedFormat`] naming its version (nothing else is read from such a database).
    fn read_legacy(&self, txn: &RoTxn<'_>, format: (u32, u32)) -> Result<Option<MetaValues>> {
        let Some(guid) = self.raw.get(txn, KEY_GUID)? else { return Ok(None) };
        let guid: [u8; 16] = guid.try_into().map_err(|_| bad("guid"))?;
        let machine = self.raw.get(txn, KEY_MACHINE)?.ok_or_else(|| bad("machine"))?;
        let machine = String::from_utf8(machine.to_vec()).map_err(|_| bad("machine"))?;
        let policy = LogPolicy { retention: LogRetention::Truncate, circular_logging: false };
        Ok(Some(MetaValues { guid: Guid(guid), epoch: 0, applied_lsn: 0, machine, policy, format }))
    }

    /// Stores the log policy.
    pub fn set_policy(&self, txn: &mut RwTxn<'_>, policy: LogPolicy) -> Result<()> {
        let retention = u8::from(policy.retention == LogRetention::UntilBackup);
        self.db.put(txn, KEY_POLICY, &[retention, u8::from(policy.circular_logging)])?;
        Ok(())
    }

    fn read_u64(&self, txn: &RoTxn<'_>, key: &'static [u8]) -> Result<u64> {
        let raw = self.db.get(txn, key)?.ok_or_else(|| bad(key_name(key)))?;
        let raw: [u8; 8] = raw.try_into().map_err(|_| bad(key_name(key)))?;
        Ok(u64::from_be_bytes(raw))
    }

    /// Records that every record up to `lsn` is applied, in the transaction that applies them.
    pub fn set_applied(&self, txn: &mut RwTxn<'_>, lsn: Lsn) -> heed::Result<()> {
        self.db.put(txn, KEY_APPLIED, &lsn.to_be_bytes())
    }
}

fn keys_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn key_name(key: &[u8]) -> &'static str {
    match key {
        KEY_EPOCH => "epoch",
        KEY_APPLIED => "applied_lsn",
        KEY_MACHINE => "machine",
        KEY_POLICY => "log_policy",
        _ => "guid",
    }
}

fn bad(what: &'static str) -> Error {
    Error::NotADatabase { path: PathBuf::from(STATE_DIR), reason: format!("engine metadata key {what} is malformed") }
}

/// Opens machine `M`'s existing databases in `env` without writing (offline tools, snapshots); `path` names the
/// store in the error when they do not exist.
pub(crate) fn open_machine<M: StateMachine>(
    env: &Env<WithoutTls>,
    attachments: &Attachments,
    path: &Path,
) -> Result<M> {
    let rtxn = env.read_txn()?;
    env.open_databases_and_commit(rtxn, |dbo, rtxn| -> Result<_> {
        Ok(CommitOrAbort::<_, ()>::Commit(M::open_databases(dbo, rtxn, attachments)?))
    })?
    .commit()
    .flatten()
    .ok_or_else(|| Error::NotADatabase {
        path: path.to_path_buf(),
        reason: format!(
            "the state store lacks one or more of the {:?} tables: its catalogue is damaged, or it is not a database \
             of this state machine (run `mailstore check`; repair it from a healthy copy or restore a backup)",
            M::NAME
        ),
    })
}

/// The state store of a mounted engine: the environment, the engine's metadata, the state machine, and the
/// gate that keeps readers out while the map grows.
pub(crate) struct StateStore<M: StateMachine> {
    pub(crate) env: Env<WithoutTls>,
    pub(crate) meta: Meta,
    pub(crate) machine: M,
    /// The attachments of the database's records, which the machine's readers read.
    pub(crate) attachments: Attachments,
    /// Readers hold it shared for the life of their read transaction; growing the map takes it exclusively,
    /// because LMDB requires that no transaction of this process is live during `mdb_env_set_mapsize`.
    gate: RwLock<()>,
}

/// Why a batch could not be applied.
enum Failure {
    MapFull,
    Fatal(Error),
}

impl From<heed::Error> for Failure {
    fn from(e: heed::Error) -> Self {
        match e {
            heed::Error::Mdb(heed::MdbError::MapFull) => Failure::MapFull,
            e => Failure::Fatal(Error::from(e)),
        }
    }
}

impl<M: StateMachine> StateStore<M> {
    /// Creates the engine's and the machine's databases of a new state store in one committed transaction;
    /// `attachments` are those of the database's directory. An existing store is opened with [`Self::open`].
    pub(crate) fn create(env: Env<WithoutTls>, attachments: Attachments) -> Result<Self> {
        let wtxn = env.write_txn()?;
        let (db, machine) = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> Result<_> {
                let meta = dbo.create_database::<Bytes, Bytes>(wtxn, Some(META_DB))?;
                let machine = M::create_databases(dbo, wtxn, &attachments)?;
                Ok(CommitOrAbort::<_, ()>::Commit((meta, machine)))
            })?
            .commit()
            .ok_or_else(|| Error::NotADatabase { path: env.path().to_path_buf(), reason: "open aborted".into() })?;
        Ok(StateStore { env, meta: Meta::new(db), machine, attachments, gate: RwLock::new(()) })
    }

    /// Opens the engine's and the machine's databases of an initialised state store, creating nothing: a table
    /// missing from it (a damaged LMDB catalogue names it no longer) is refused, never created anew and empty
    /// over the data it held.
    pub(crate) fn open(env: Env<WithoutTls>, attachments: Attachments, dir: &Path) -> Result<Self> {
        let meta = Meta::open(&env)?.ok_or_else(|| Error::NotADatabase {
            path: dir.join(STATE_DIR),
            reason: "the state store holds no engine metadata".into(),
        })?;
        let machine = open_machine::<M>(&env, &attachments, &dir.join(STATE_DIR))?;
        Ok(StateStore { env, meta, machine, attachments, gate: RwLock::new(()) })
    }

    /// Runs `f` over a read snapshot.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&M, &RoTxn<'_>) -> Result<T>) -> Result<T> {
        // Recursive, so that a reader nested inside another reader cannot deadlock behind a waiting grower.
        let _gate = self.gate.read_recursive();
        // Taken before the transaction begins: a generation the snapshot may name stays on disk until it ends.
        let _token: ReaderToken = self.attachments.enter();
        let txn = self.env.read_txn()?;
        f(&self.machine, &txn).map_err(|e| e.in_database(self.database()))
    }

    /// The database directory (the environment's parent).
    fn database(&self) -> &Path {
        let path = self.env.path();
        path.parent().unwrap_or(path)
    }

    /// The generations whose attachments the current state refers to.
    pub(crate) fn referenced_generations(&self) -> Result<std::collections::BTreeSet<u64>> {
        let txn = self.env.read_txn()?;
        self.machine.referenced_generations(&txn).map_err(|e| e.in_database(self.database()))
    }

    /// Writes a compacted, consistent copy of the environment to `path` and syncs it. Returns an LSN the copy
    /// has applied at least (the copy's own metadata holds the exact one, see [`StateStore::snapshot_contents`]):
    /// LMDB copies from a read transaction it opens itself, after the one this reads. Whoever needs the message
    /// bodies the copy refers to holds a reader token ([`Attachments::enter`]) from before this call: the
    /// generations the copy names then stay on disk.
    pub(crate) fn snapshot_to(&self, path: &Path) -> Result<Lsn> {
        let _gate = self.gate.read_recursive();
        let applied = {
            let txn = self.env.read_txn()?;
            self.meta.read(&txn)?.map_or(0, |m| m.applied_lsn)
        };
        let file = self.env.copy_to_path(path, heed::CompactionOption::Enabled)?;
        file.sync_all().at(path)?;
        Ok(applied)
    }

    /// What the snapshot file `path` (written by [`snapshot_to`](Self::snapshot_to)) holds: the engine's
    /// metadata (its exact applied LSN) and the generations whose attachments its state refers to. Opens the
    /// file read-only, as an environment of its own.
    pub(crate) fn snapshot_contents(path: &Path) -> Result<(MetaValues, std::collections::BTreeSet<u64>)> {
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options.map_size(INITIAL_MAP_SIZE).max_dbs(MAX_DBS);
        // SAFETY: the file is a finished copy that nothing writes any more (it is read-only here, so `NO_LOCK`
        // has no writer to exclude), opened once.
        unsafe { options.flags(EnvFlags::READ_ONLY | EnvFlags::NO_SUB_DIR | EnvFlags::NO_LOCK) };
        // A snapshot comes from elsewhere (a source, a transfer): always walked in full before it is mapped.
        lmdb_file::validate_before_mapping(path, true)?;
        // SAFETY: see above; its structure was verified.
        let env = unsafe { options.open(path) }?;
        let meta = read_meta(&env, path)?;
        let machine = open_machine::<M>(&env, &Attachments::new(path.parent().unwrap_or(path)), path)?;
        let txn = env.read_txn()?;
        let referenced = machine.referenced_generations(&txn)?;
        Ok((meta, referenced))
    }

    /// Applies `records` (consecutive LSNs) in one LMDB write transaction so that a rejected operation leaves no
    /// trace (see `try_apply`), and records the last LSN as applied in the same transaction. Grows the map and
    /// retries when it is full. This is the only path by which logged operations reach the state: commit,
    /// recovery and a passive copy's replay all call it.
    ///
    /// Returns one outcome per record: what `apply` returned, or the error it rejected the operation with.
    pub(crate) fn apply_records(&self, records: &[RecordRef<'_>], stats: &Counters) -> Result<Vec<Result<M::Output>>> {
        self.apply_decoded(records, None, stats)
    }

    /// [`apply_records`](Self::apply_records) with the operations already decoded from `records` (a passive
    /// copy decodes the next batch on another thread while this one is applied). They are used for the first
    /// attempt; a retry (map full, or a rejection that needs savepoints) decodes the records again.
    pub(crate) fn apply_decoded(
        &self,
        records: &[RecordRef<'_>],
        mut decoded: Option<Vec<M::Op>>,
        stats: &Counters,
    ) -> Result<Vec<Result<M::Output>>> {
        if decoded.as_ref().is_some_and(|ops| ops.len() != records.len()) {
            return Err(Error::InvalidArgument("decoded operations do not match their records".into()));
        }
        if self.make_room(records.iter().map(|r| r.payload.len()).sum())? {
            Counters::add(&stats.map_resizes, 1);
        }
        loop {
            match self.try_apply(records, decoded.take()) {
                Ok(outcomes) => {
                    Counters::add(&stats.state_commits, 1);
                    return Ok(outcomes);
                }
                Err(Failure::MapFull) => {
                    self.grow()?;
                    Counters::add(&stats.map_resizes, 1);
                }
                Err(Failure::Fatal(e)) => return Err(e.in_database(self.database())),
            }
        }
    }

    /// Applies a batch in one transaction. Operations are applied one after the other without a savepoint each
    /// (a nested LMDB transaction per operation halved replay throughput); if one is rejected, the whole
    /// transaction is aborted and the batch applied again with a savepoint per operation, so a rejected one
    /// leaves no trace. Both ways give the same state and outcomes: without rejections, operations applied in
    /// sequence in one transaction are what the savepoints would have committed one by one.
    fn try_apply(
        &self,
        records: &[RecordRef<'_>],
        decoded: Option<Vec<M::Op>>,
    ) -> Result<Vec<Result<M::Output>>, Failure> {
        match self.try_apply_flat(records, decoded)? {
            Some(outcomes) => Ok(outcomes),
            None => self.try_apply_nested(records),
        }
    }

    /// `Ok(None)`: an operation was rejected and nothing was committed.
    fn try_apply_flat(
        &self,
        records: &[RecordRef<'_>],
        decoded: Option<Vec<M::Op>>,
    ) -> Result<Option<Vec<Result<M::Output>>>, Failure> {
        let result = self.try_apply_flat_once(records, decoded);
        if !matches!(result, Ok(Some(_))) {
            // The transaction was dropped (aborted): what its operations gathered goes with it.
            self.machine.abandon();
        }
        result
    }

    fn try_apply_flat_once(
        &self,
        records: &[RecordRef<'_>],
        decoded: Option<Vec<M::Op>>,
    ) -> Result<Option<Vec<Result<M::Output>>>, Failure> {
        let Some(last) = records.last() else { return Ok(Some(Vec::new())) };
        let mut txn = self.env.write_txn()?;
        let mut outcomes = Vec::with_capacity(records.len());
        let mut decoded = decoded.map(Vec::into_iter);
        for record in records {
            let (op, ctx) = match decoded.as_mut().and_then(Iterator::next) {
                Some(op) => (op, context(record)?),
                None => decode_record::<M>(record)?,
            };
            match self.machine.apply(&mut txn, ctx, op) {
                Ok(output) => outcomes.push(Ok(output)),
                // Dropping `txn` aborts everything this batch wrote.
                Err(ApplyError::Reject(_)) => return Ok(None),
                Err(ApplyError::Storage(e)) => return Err(e.into()),
            }
        }
        finish(&self.machine, &mut txn)?;
        self.meta.set_applied(&mut txn, last.lsn)?;
        txn.commit()?;
        Ok(Some(outcomes))
    }

    fn try_apply_nested(&self, records: &[RecordRef<'_>]) -> Result<Vec<Result<M::Output>>, Failure> {
        let result = self.try_apply_nested_once(records);
        if result.is_err() {
            self.machine.abandon();
        }
        result
    }

    /// Each operation in a savepoint of its own, finished (see [`StateMachine::finish`]) before the savepoint
    /// commits, so that a rejected one takes only what it gathered itself.
    fn try_apply_nested_once(&self, records: &[RecordRef<'_>]) -> Result<Vec<Result<M::Output>>, Failure> {
        let Some(last) = records.last() else { return Ok(Vec::new()) };
        let mut txn = self.env.write_txn()?;
        let mut outcomes = Vec::with_capacity(records.len());
        for record in records {
            let (op, ctx) = decode_record::<M>(record)?;
            let mut nested = self.env.nested_write_txn(&mut txn)?;
            match self.machine.apply(&mut nested, ctx, op) {
                Ok(output) => {
                    finish(&self.machine, &mut nested)?;
                    nested.commit()?;
                    outcomes.push(Ok(output));
                }
                Err(ApplyError::Reject(e)) => {
                    nested.abort();
                    self.machine.abandon();
                    outcomes.push(Err(e.into()));
                }
                Err(ApplyError::Storage(e)) => return Err(e.into()),
            }
        }
        self.meta.set_applied(&mut txn, last.lsn)?;
        txn.commit()?;
        Ok(outcomes)
    }

    /// Grows the map ahead of a batch of `payload` bytes of log if what it may write could fill it: twice its
    /// payload (its records, and the pages they make it copy) and 16 MiB more must fit above the highest page in
    /// use. Growing is cheap (the map is address space; the file grows as pages are written), while a batch that
    /// fills the map is aborted and applied again: while a copy's map doubled from 64 MiB, replaying deliveries
    /// into a fresh copy spent more time in batches thrown away than in the ones kept (64 MiB batches). `MDB_MAP_FULL`
    /// remains handled (`grow`) for a batch that writes more than this allows for.
    /// Returns whether it grew.
    fn make_room(&self, payload: usize) -> Result<bool> {
        let info = self.env.info();
        let page = (self.env.unnamed_database_stat().page_size as usize).max(1);
        let needed = (info.last_page_number + 1)
            .saturating_mul(page)
            .saturating_add(payload.saturating_mul(2))
            .saturating_add(16 << 20);
        if needed <= info.map_size {
            return Ok(false);
        }
        let mut next = info.map_size.max(INITIAL_MAP_SIZE);
        while next < needed {
            next = next.checked_mul(2).ok_or_else(|| Error::InvalidArgument("LMDB map size overflow".into()))?;
        }
        self.resize(next.div_ceil(page) * page)?;
        Ok(true)
    }

    /// Doubles the map size, with every reader kept out.
    fn grow(&self) -> Result<()> {
        let current = self.env.info().map_size;
        let next = current.checked_mul(2).ok_or_else(|| Error::InvalidArgument("LMDB map size overflow".into()))?;
        self.resize(next)
    }

    /// Sets the map size to `next` (a multiple of the page size), with every reader kept out.
    fn resize(&self, next: usize) -> Result<()> {
        let _gate = self.gate.write();
        // SAFETY: the exclusive gate guarantees no read transaction of this process is live (every reader holds
        // the gate shared for its whole transaction), and the only writer is the calling thread, between
        // transactions. Callers pass multiples of the page size (doublings of one, or rounded up to one).
        unsafe { self.env.resize(next) }?;
        Ok(())
    }
}

/// [`StateMachine::finish`]; it rejects nothing (operations were accepted by then), so a rejection is a fault.
fn finish<M: StateMachine>(machine: &M, txn: &mut RwTxn<'_>) -> Result<(), Failure> {
    match machine.finish(txn) {
        Ok(()) => Ok(()),
        Err(ApplyError::Storage(e)) => Err(e.into()),
        Err(ApplyError::Reject(e)) => Err(Failure::Fatal(e.into())),
    }
}

/// The operation of `record` and what it knows about its record.
fn decode_record<'r, M: StateMachine>(record: &RecordRef<'r>) -> Result<(M::Op, ApplyContext<'r>), Failure> {
    let op = codec::decode_record(record.payload).map(|(op, _)| op).map_err(|e| record_error(record, e))?;
    Ok((op, context(record)?))
}

/// What an operation knows about `record`: its LSN, epoch, attachment and where that lies.
fn context<'r>(record: &RecordRef<'r>) -> Result<ApplyContext<'r>, Failure> {
    let (op, attachment) = codec::split_record(record.payload).map_err(|e| record_error(record, e))?;
    let skip = (codec::RECORD_PREFIX + op.len()) as u64;
    Ok(ApplyContext {
        lsn: record.lsn,
        epoch: record.epoch,
        committed: crate::time::Timestamp::from_micros(record.commit_micros),
        attachment,
        attachment_at: Place { generation: record.generation, offset: record.offset + skip },
    })
}

fn record_error(record: &RecordRef<'_>, e: CodecError) -> Failure {
    Failure::Fatal(CodecError::Record { lsn: record.lsn, source: Box::new(e) }.into())
}
