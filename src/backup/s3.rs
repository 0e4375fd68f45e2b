//! The S3 backup target (feature `s3`): a bucket and prefix of an S3-compatible object store, through
//! `object_store`'s S3 client on a private current-thread tokio runtime (the API stays blocking).
//!
//! Layout under the prefix: `catalogue.json`, `backup.lock` while a backup runs, and `<id>/state.mdb`,
//! `<id>/logs/<generation>.log`, `<id>/segments/<generation>.log` — the same paths as a local target.
//!
//! Durability. Every file is one PUT (or, above the part size, a multipart upload completed at its end): when
//! the store answers success the object is whole and durable (S3's promise). The catalogue is written last, by
//! one PUT that replaces it whole, after every file of the backup was stored; so an S3 backup is complete
//! exactly when the catalogue naming it was stored, and [`crate::Engine::backup_completed`] is called only then.
//! Objects of a backup that a crash, a failure or a lost connection cut short are not in the catalogue: restore
//! never reads them, and the next backup deletes them (those under an unlisted `<digits>/` holding only backup
//! files; nothing else under the prefix is touched). A multipart upload that failed is aborted; one a killed
//! process left is invisible and is removed by the bucket's lifecycle rule for incomplete multipart uploads.
//!
//! Lock. `backup.lock` is created with a conditional PUT (`If-None-Match: *`), so two backups into one prefix
//! exclude each other, and deleted when the backup ends. A lock a killed backup left is taken over once it is
//! older than [`S3Config::stale_lock_after`] (default 24 hours); until then the backup fails with
//! [`BackupError::Locked`], which names the object to delete.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion, WriteMultipart};
use tokio::runtime::Runtime;

use super::catalogue::CATALOGUE_FILE;
use super::target::{Backend, FileOut, TARGET_LOCK_FILE, is_backup_file, is_backup_id};
use crate::error::{BackupError, Error, IoContext, Result};
use crate::time::Timestamp;
use crate::types::Guid;

/// The smallest part S3 accepts in a multipart upload (all but the last).
const MIN_PART_SIZE: usize = 5 << 20;
/// The most parts one multipart upload may have (S3 allows 10,000; some room is left).
const MAX_PARTS: u64 = 9_000;
/// Parts of one file in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// The size of one ranged read of a restore.
const READ_CHUNK: u64 = 8 << 20;

/// Where and how to reach an S3 backup target. Built from the usual AWS environment variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` / `AWS_DEFAULT_REGION`,
/// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`), each overridden by what is set here:
///
/// ```no_run
/// # use mailstore::backup::S3Config;
/// let target = S3Config::new("backups", "mail/db1")
///     .endpoint("http://127.0.0.1:9000")
///     .allow_http(true)
///     .region("us-east-1")
///     .credentials("AKIA…", "secret");
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct S3Config {
    bucket: String,
    prefix: String,
    endpoint: Option<String>,
    region: Option<String>,
    credentials: Option<(String, String)>,
    session_token: Option<String>,
    allow_http: Option<bool>,
    part_size: usize,
    stale_lock_after: Duration,
}

impl S3Config {
    /// The target `prefix` (no leading or trailing `/` needed; empty for the bucket's root) of `bucket`.
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        let prefix: String = prefix.into();
        S3Config {
            bucket: bucket.into(),
            prefix: prefix.split('/').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("/"),
            endpoint: None,
            region: None,
            credentials: None,
            session_token: None,
            allow_http: None,
            part_size: 8 << 20,
            stale_lock_after: Duration::from_secs(24 * 3600),
        }
    }

    /// `s3://bucket/prefix`, everything else from the environment.
    pub fn from_url(url: &str) -> Result<Self> {
        let bad = |reason: &str| BackupError::BadTarget { target: url.to_owned(), reason: reason.to_owned() };
        let rest = url.strip_prefix("s3://").ok_or_else(|| bad("an S3 target is written s3://bucket/prefix"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket is named: write s3://bucket/prefix").into());
        }
        Ok(Self::new(bucket, prefix))
    }

    /// The endpoint's URL (an S3-compatible server: MinIO, Ceph, moto …); AWS's own when not set.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The region.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// An access key and its secret.
    pub fn credentials(mut self, access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        self.credentials = Some((access_key_id.into(), secret_access_key.into()));
        self
    }

    /// A session token for temporary credentials.
    pub fn session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(token.into());
        self
    }

    /// Allows a plain-HTTP endpoint (a local test server); refused by default.
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = Some(allow);
        self
    }

    /// The size of a multipart upload's parts; a file larger than this is uploaded in parts (at least 5 MiB,
    /// S3's minimum; default 8 MiB).
    pub fn part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(MIN_PART_SIZE);
        self
    }

    /// How old a lock object must be before a backup takes it over (one a killed backup left); default 24 hours.
    pub fn stale_lock_after(mut self, age: Duration) -> Self {
        self.stale_lock_after = age;
        self
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The prefix, without leading or trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl fmt::Display for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.credentials.as_ref().map(|c| &c.0))
            .field("secret_access_key", &self.credentials.as_ref().map(|_| "<redacted>"))
            .field("allow_http", &self.allow_http)
            .field("part_size", &self.part_size)
            .field("stale_lock_after", &self.stale_lock_after)
            .finish_non_exhaustive()
    }
}

/// An open S3 target: the client, its private runtime, and the lock while held.
pub(crate) struct S3Bucket {
    config: S3Config,
    store: Arc<AmazonS3>,
    runtime: Runtime,
    /// The lock object's ETag while this backend holds it.
    lock: Option<String>,
}

impl S3Bucket {
    pub(crate) fn connect(config: S3Config) -> Result<Self> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(BackupError::InsideRuntime { target: config.to_string() }.into());
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&config.bucket);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        if let Some((key, secret)) = &config.credentials {
            builder = builder.with_access_key_id(key).with_secret_access_key(secret);
        }
        if let Some(token) = &config.session_token {
            builder = builder.with_token(token);
        }
        if let Some(allow) = config.allow_http {
            builder = builder.with_allow_http(allow);
        }
        let store = builder.build().map_err(|e| BackupError::BadTarget {
            target: config.to_string(),
            reason: format!("{e} (set the AWS_* variables or the S3Config)"),
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
            BackupError::ObjectStore {
                target: config.to_string(),
                operation: "starting the I/O runtime".into(),
                reason: e.to_string(),
            }
        })?;
        Ok(S3Bucket { config, store: Arc::new(store), runtime, lock: None })
    }

    /// The object at `rel` under the prefix.
    fn key(&self, rel: &str) -> ObjectPath {
        if self.config.prefix.is_empty() {
            ObjectPath::from(rel)
        } else {
            ObjectPath::from(format!("{}/{rel}", self.config.prefix))
        }
    }

    fn fail(&self, operation: impl fmt::Display, key: &ObjectPath, e: object_store::Error) -> Error {
        BackupError::ObjectStore {
            target: self.config.to_string(),
            operation: format!("{operation} {key}"),
            reason: e.to_string(),
        }
        .into()
    }

    /// Every object under the prefix: its path relative to the prefix.
    fn list(&self) -> Result<Vec<String>> {
        let root = self.key("");
        let prefix = (!self.config.prefix.is_empty()).then(|| ObjectPath::from(self.config.prefix.as_str()));
        let metas: Vec<_> = self
            .runtime
            .block_on(self.store.list(prefix.as_ref()).try_collect::<Vec<_>>())
            .map_err(|e| self.fail("listing", &root, e))?;
        let skip = if self.config.prefix.is_empty() { 0 } else { self.config.prefix.len() + 1 };
        Ok(metas.into_iter().filter_map(|m| m.location.as_ref().get(skip..).map(str::to_owned)).collect())
    }
}

impl Backend for S3Bucket {
    fn lock(&mut self) -> Result<()> {
        let key = self.key(TARGET_LOCK_FILE);
        let holder = format!("backup {} since {}", Guid::new_random(), Timestamp::now().as_micros());
        let create = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        let put = self.runtime.block_on(self.store.put_opts(&key, PutPayload::from(holder.clone()), create));
        let etag = match put {
            Ok(done) => done.e_tag,
            Err(object_store::Error::AlreadyExists { .. }) => {
                let held = self.runtime.block_on(async {
                    let got = self.store.get(&key).await?;
                    let meta = got.meta.clone();
                    Ok::<_, object_store::Error>((meta, got.bytes().await?))
                });
                let (meta, bytes) = held.map_err(|e| self.fail("reading the lock", &key, e))?;
                let since = String::from_utf8_lossy(&bytes)
                    .rsplit(' ')
                    .next()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                let age = Timestamp::now().as_micros().saturating_sub(since);
                let locked = || BackupError::Locked {
                    target: self.config.to_string(),
                    lock: format!("s3://{}/{key}", self.config.bucket),
                    holder: String::from_utf8_lossy(&bytes).trim().to_owned(),
                };
                if u128::from(age) < self.config.stale_lock_after.as_micros() {
                    return Err(locked().into());
                }
                // Stale: take it over, unless another backup took it over first.
                let update = PutOptions {
                    mode: PutMode::Update(UpdateVersion { e_tag: meta.e_tag, version: meta.version }),
                    ..PutOptions::default()
                };
                match self.runtime.block_on(self.store.put_opts(&key, PutPayload::from(holder), update)) {
                    Ok(done) => done.e_tag,
                    Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => {
                        return Err(locked().into());
                    }
                    Err(e) => return Err(self.fail("taking over the stale lock", &key, e)),
                }
            }
            Err(e) => return Err(self.fail("creating the lock", &key, e)),
        };
        self.lock = Some(etag.unwrap_or_default());
        Ok(())
    }

    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key(rel);
        let got = self.runtime.block_on(async { self.store.get(&key).await?.bytes().await });
        match got {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail("reading", &key, e)),
        }
    }

    fn store_catalogue(&self, bytes: &[u8]) -> Result<()> {
        let key = self.key(CATALOGUE_FILE);
        self.runtime
            .block_on(self.store.put(&key, PutPayload::from(bytes.to_vec())))
            .map_err(|e| self.fail("writing the catalogue", &key, e))?;
        Ok(())
    }

    /// Deletes, for every `<digits>/` the catalogue does not list, its objects when all of them are backup
    /// files (what an upload cut short left); anything else is left alone.
    fn remove_unlisted(&mut self, listed: &HashSet<&str>) -> Result<HashSet<String>> {
        let mut groups: HashMap<String, Vec<String>> = HashMap::new();
        for rel in self.list()? {
            let top = rel.split('/').next().unwrap_or_default().to_owned();
            groups.entry(top).or_default().push(rel);
        }
        let mut names = HashSet::new();
        for (top, objects) in groups {
            let stray = is_backup_id(&top)
                && !listed.contains(top.as_str())
                && objects.iter().all(|rel| rel.split_once('/').is_some_and(|(_, rest)| is_backup_file(rest)));
            if !stray {
                names.insert(top);
                continue;
            }
            for rel in objects {
                let key = self.key(&rel);
                match self.runtime.block_on(self.store.delete(&key)) {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.fail("deleting the unlisted object", &key, e)),
                }
            }
        }
        Ok(names)
    }

    fn begin(&self, _id: &str) -> Result<()> {
        Ok(())
    }

    fn create<'a>(&'a self, id: &str, name: &str, len: u64) -> Result<Box<dyn FileOut + 'a>> {
        let key = self.key(&format!("{id}/{name}"));
        let body = if len > self.config.part_size as u64 {
            let upload = self
                .runtime
                .block_on(self.store.put_multipart(&key))
                .map_err(|e| self.fail("starting the multipart upload of", &key, e))?;
            // S3 takes at most 10,000 parts: a very large file gets larger parts.
            let part = self.config.part_size.max(usize::try_from(len.div_ceil(MAX_PARTS)).unwrap_or(usize::MAX));
            Body::Parts(WriteMultipart::new_with_chunk_size(upload, part))
        } else {
            Body::Whole(Vec::with_capacity(usize::try_from(len).unwrap_or(0)))
        };
        Ok(Box::new(ObjectFile { bucket: self, key, body, failed: None }))
    }

    fn seal(&self, _id: &str) -> Result<()> {
        // Each object was durable when its upload returned; the catalogue, written next, makes the backup.
        Ok(())
    }

    fn fetch(&self, rel: &str, len: u64, to: &Path) -> Result<()> {
        let key = self.key(rel);
        let meta = self.runtime.block_on(self.store.head(&key)).map_err(|e| match e {
            object_store::Error::NotFound { .. } => {
                BackupError::MissingObject { target: self.config.to_string(), object: key.to_string() }.into()
            }
            e => self.fail("reading", &key, e),
        })?;
        if meta.size != len {
            // Not downloaded: restore would refuse it for its length anyway.
            return Err(Error::corrupted(
                Path::new(&format!("s3://{}/{key}", self.config.bucket)),
                meta.size.min(len),
                format!("backup object is {} bytes, the catalogue says {len}", meta.size),
            ));
        }
        let mut out = File::create(to).at(to)?;
        let mut at = 0;
        while at < meta.size {
            let end = (at + READ_CHUNK).min(meta.size);
            let chunk = self
                .runtime
                .block_on(self.store.get_range(&key, at..end))
                .map_err(|e| self.fail("reading", &key, e))?;
            out.write_all(&chunk).at(to)?;
            at = end;
        }
        out.sync_all().at(to)
    }
}

impl Drop for S3Bucket {
    fn drop(&mut self) {
        if self.lock.take().is_some() {
            // Best effort: a lock left behind is taken over once stale (see the module's documentation).
            let key = self.key(TARGET_LOCK_FILE);
            let _ = self.runtime.block_on(self.store.delete(&key));
        }
    }
}

/// What an object being uploaded holds so far.
enum Body {
    /// A file of at most one part: sent whole by one PUT at its end.
    Whole(Vec<u8>),
    /// A larger file: its parts sent as they fill, completed at its end.
    Parts(WriteMultipart),
}

/// One file of a backup being uploaded.
struct ObjectFile<'a> {
    bucket: &'a S3Bucket,
    key: ObjectPath,
    body: Body,
    /// The store's error that failed a write (reported by `finish`).
    failed: Option<Error>,
}

impl Write for ObjectFile<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.body {
            Body::Whole(bytes) => bytes.extend_from_slice(buf),
            Body::Parts(parts) => {
                {
                    let _inside = self.bucket.runtime.enter();
                    parts.write(buf);
                }
                if let Err(e) = self.bucket.runtime.block_on(parts.wait_for_capacity(PARTS_IN_FLIGHT)) {
                    let error = self.bucket.fail("uploading a part of", &self.key, e);
                    let message = error.to_string();
                    self.failed = Some(error);
                    return Err(std::io::Error::other(message));
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl FileOut for ObjectFile<'_> {
    fn finish(self: Box<Self>, filled: std::io::Result<()>) -> Result<()> {
        let ObjectFile { bucket, key, body, failed } = *self;
        let runtime = &bucket.runtime;
        if failed.is_some() || filled.is_err() {
            if let Body::Parts(parts) = body {
                let _ = runtime.block_on(parts.abort());
            }
            return Err(failed.unwrap_or_else(|| {
                let e = filled.err().unwrap_or_else(|| std::io::Error::other("write failed"));
                Error::io(Path::new(&format!("s3://{}/{key}", bucket.config.bucket)), e)
            }));
        }
        match body {
            Body::Whole(bytes) => runtime
                .block_on(bucket.store.put(&key, PutPayload::from(bytes)))
                .map(drop)
                .map_err(|e| bucket.fail("uploading", &key, e)),
            Body::Parts(parts) => {
                runtime.block_on(parts.finish()).map(drop).map_err(|e| bucket.fail("completing the upload of", &key, e))
            }
        }
    }
}
