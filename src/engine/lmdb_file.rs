//! A structural verifier of an LMDB data file that reads it with `pread`, never through a memory map, so a
//! damaged or truncated file is reported as a list of typed problems instead of a `SIGBUS` in whoever maps it.
//!
//! The layout is LMDB's own (`lmdb-master-sys`, `mdb.c`, 64-bit build, native byte order): page 0 and 1 are meta
//! pages (`MDB_page` header of 16 bytes, then `MDB_meta`); LMDB uses the one with the higher `mm_txnid` (meta 0
//! on a tie), whose `mm_dbs` give the free DB and the main DB. Every named database is an `F_SUBDATA` node of the
//! main DB whose data is an `MDB_db`. Branch nodes carry a child page number, leaf nodes a key and either their
//! data or (`F_BIGDATA`) the first page of an overflow run.
//!
//! [`verify`] walks every tree from the meta page LMDB would pick and checks what LMDB trusts without checking:
//! each page's stored number equals the one it was reached by and is below `mm_last_pg + 1` and inside the file;
//! flags fit its place; `mp_lower`/`mp_upper`, node offsets and key/data sizes stay inside the page and the nodes
//! tile the page's upper part exactly; overflow runs stay inside the file; keys increase strictly within and
//! across pages (inside the bounds the branch separators set); all leaves sit at the tree's recorded depth and the
//! page and entry counts of each `MDB_db` match the tree; each page is reached once; free-list entries are
//! disjoint from live pages and from each other; and every page up to `mm_last_pg` is either live or free.
//! The file may legitimately end before `(mm_last_pg + 1) * psize` when its last pages are free (LMDB only
//! writes the pages it uses), so the length rule is "every live page is inside the file", not a naive size test.
//!
//! What it does *not* check: the bytes of values (a flipped bit inside a value is the job of the per-entry
//! checksums of the tables), the meta page LMDB does not pick (beyond its header), and the lock file
//! (`lock.mdb`, which LMDB re-initialises whenever it opens the environment alone, as the engine always does).
//! Memory is bounded: one bit per page of the file, the separator keys of one root-to-leaf path, and the
//! free list's page numbers.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

const PAGEHDRSZ: usize = 16;
const NODESIZE: usize = 8;
const META_LEN: usize = 136;
const DB_LEN: usize = 48;
const MDB_MAGIC: u32 = 0xBEEF_C0DE;
const MDB_DATA_VERSION: u32 = 1;
const P_BRANCH: u16 = 0x01;
const P_LEAF: u16 = 0x02;
const P_OVERFLOW: u16 = 0x04;
const P_META: u16 = 0x08;
const F_BIGDATA: u16 = 0x01;
const F_SUBDATA: u16 = 0x02;
const MDB_REVERSEKEY: u16 = 0x02;
const MDB_INTEGERKEY: u16 = 0x08;
const P_INVALID: u64 = u64::MAX;
const MAX_KEY: usize = 511;
/// Deeper than any tree LMDB can build in a file of 2^64 bytes; a deeper `md_depth` is damage.
const MAX_DEPTH: u16 = 64;
/// Problems reported per file before the walk stops listing them (the count is still given).
const MAX_PROBLEMS: usize = 100;

/// One thing wrong with an LMDB file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The page it is on (`None` for the file as a whole).
    pub page: Option<u64>,
    /// What is wrong.
    pub what: String,
}

/// What [`verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// Page size from the meta page.
    pub psize: u64,
    /// The chosen meta page's `mm_last_pg`.
    pub last_pg: u64,
    /// The chosen meta page's transaction id.
    pub txnid: u64,
    /// Length of the file in bytes.
    pub file_len: u64,
    /// Pages reached from the trees (meta pages included).
    pub live_pages: u64,
    /// Pages the free list names.
    pub free_pages: u64,
    /// Named databases walked.
    pub databases: u64,
    /// Every problem found (at most 100 listed; `more_problems` counts the rest).
    pub problems: Vec<Problem>,
    /// Problems found beyond those listed.
    pub more_problems: u64,
}

impl Verified {
    /// True when the file is structurally sound.
    #[cfg_attr(not(feature = "internals"), allow(dead_code, reason = "for tests, through `internals`"))]
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The header of an LMDB file as LMDB would choose it, read without mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Page size.
    pub psize: u64,
    /// Last page in use.
    pub last_pg: u64,
    /// Transaction id of the chosen meta page.
    pub txnid: u64,
    /// Length of the file.
    pub file_len: u64,
    free: Db,
    main: Db,
}

impl Header {
    /// True when the file holds every page up to `last_pg`: only then can LMDB's reads not pass its end
    /// without a walk proving which pages are live.
    pub fn complete(&self) -> bool {
        self.file_len >= (self.last_pg + 1) * self.psize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Db {
    pad: u32,
    flags: u16,
    depth: u16,
    branch: u64,
    leaf: u64,
    overflow: u64,
    entries: u64,
    root: u64,
}

impl Db {
    fn parse(b: &[u8]) -> Db {
        Db {
            pad: u32_at(b, 0),
            flags: u16_at(b, 4),
            depth: u16_at(b, 6),
            branch: u64_at(b, 8),
            leaf: u64_at(b, 16),
            overflow: u64_at(b, 24),
            entries: u64_at(b, 32),
            root: u64_at(b, 40),
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::corrupted(path, offset, reason)
}

/// Reads both meta pages of the LMDB file at `path` and returns the one LMDB would use, after checking what LMDB
/// checks (meta flag, magic, version) and what it trusts (page numbers, page size, `mm_last_pg`, the roots
/// inside it). `Ok(None)` when the file does not exist or is empty (LMDB creates a new environment there).
pub fn read_header(path: &Path) -> Result<Option<Header>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let file_len = file.metadata().at(path)?.len();
    if file_len == 0 {
        return Ok(None);
    }
    header_of(&file, path, file_len).map(Some)
}

fn header_of(file: &File, path: &Path, file_len: u64) -> Result<Header> {
    let mut metas = Vec::with_capacity(2);
    let mut off = 0u64;
    for i in 0..2u64 {
        let mut buf = [0u8; PAGEHDRSZ + META_LEN];
        if off + buf.len() as u64 > file_len {
            return Err(corrupt(path, off, format!("the file ends ({file_len} bytes) inside meta page {i}")));
        }
        file.read_exact_at(&mut buf, off).at(path)?;
        let (pgno, flags) = (u64_at(&buf, 0), u16_at(&buf, 10));
        let m = &buf[PAGEHDRSZ..];
        if flags != P_META || pgno != i {
            return Err(corrupt(path, off, format!("page {i} is not meta page {i} (number {pgno}, flags {flags:#x})")));
        }
        if u32_at(m, 0) != MDB_MAGIC || u32_at(m, 4) != MDB_DATA_VERSION {
            return Err(corrupt(path, off, format!("meta page {i} has a wrong magic number or version")));
        }
        let free = Db::parse(&m[24..24 + DB_LEN]);
        let main = Db::parse(&m[24 + DB_LEN..24 + 2 * DB_LEN]);
        let psize = u64::from(free.pad);
        if !psize.is_power_of_two() || !(512..=32768).contains(&psize) {
            return Err(corrupt(path, off, format!("meta page {i} has an impossible page size {psize}")));
        }
        if i == 0 {
            off = psize;
        }
        metas.push((u64_at(m, 128), u64_at(m, 120), psize, free, main, u64_at(m, 8)));
    }
    // mdb_env_pick_meta: the higher transaction id, meta 0 on a tie.
    let pick = usize::from(metas[0].0 < metas[1].0);
    let (txnid, last_pg, psize, free, main, address) = metas[pick];
    let at = pick as u64 * metas[0].2;
    if metas[1].2 != metas[0].2 {
        return Err(corrupt(path, at, "the meta pages disagree on the page size"));
    }
    if address != 0 {
        return Err(corrupt(path, at, "the meta page asks for a fixed mapping address"));
    }
    if last_pg < 1 || last_pg.checked_add(1).and_then(|n| n.checked_mul(psize)).is_none_or(|end| end > 1 << 48) {
        return Err(corrupt(path, at, format!("meta page {pick} has an impossible last page {last_pg}")));
    }
    for (name, db) in [("free", free), ("main", main)] {
        let empty = db.root == P_INVALID;
        if !empty && (db.root < 2 || db.root > last_pg) || db.depth > MAX_DEPTH || empty != (db.depth == 0) {
            return Err(corrupt(
                path,
                at,
                format!("meta page {pick}: the {name} DB's root {} / depth {} are impossible", db.root, db.depth),
            ));
        }
    }
    if free.flags & MDB_INTEGERKEY == 0 || free.flags & !(MDB_INTEGERKEY | 0x01 | 0x4000) != 0 || main.flags != 0 {
        return Err(corrupt(path, at, format!("meta page {pick} has impossible database flags")));
    }
    Ok(Header { psize, last_pg, txnid, file_len, free, main })
}

/// Walks the LMDB file at `path` (see the module documentation for what is checked). An I/O failure is an
/// error; everything wrong with the bytes is a [`Problem`] in the result.
pub fn verify(path: &Path) -> Result<Verified> {
    walk(path, None)
}

/// The byte ranges `(offset, length)` of the file at `path` that hold the entries of named databases — each leaf
/// key, and each value (inline in its leaf page or in an overflow run) — in the tree LMDB would read: the bytes a
/// structural walk cannot judge (a changed key that keeps its order, a changed value). For tests that tell
/// damage to entries from damage to structure.
#[cfg_attr(not(feature = "internals"), allow(dead_code, reason = "for tests, through `internals`"))]
pub fn entry_ranges(path: &Path) -> Result<Vec<(u64, u64)>> {
    let mut ranges = Vec::new();
    walk(path, Some(&mut ranges))?;
    Ok(ranges)
}

fn walk(path: &Path, values: Option<&mut Vec<(u64, u64)>>) -> Result<Verified> {
    let file = File::open(path).at(path)?;
    let file_len = file.metadata().at(path)?.len();
    let header = match header_of(&file, path, file_len) {
        Ok(h) => h,
        Err(Error::Corrupted { offset, reason, .. }) => {
            return Ok(Verified {
                file_len,
                problems: vec![Problem { page: (offset == 0).then_some(0), what: reason }],
                ..Verified::default()
            });
        }
        Err(e) => return Err(e),
    };
    let mut w = Walker::new(&file, path, &header);
    w.values = values;
    w.mark(0)?;
    w.mark(1)?;
    w.walk_db("free DB", header.free, Kind::Free)?;
    w.walk_db("main DB", header.main, Kind::Main)?;
    while let Some((name, db)) = w.named.pop() {
        w.databases += 1;
        w.walk_db(&name, db, Kind::Named)?;
    }
    w.finish_free();
    Ok(Verified {
        psize: header.psize,
        last_pg: header.last_pg,
        txnid: header.txnid,
        file_len,
        live_pages: w.live_count,
        free_pages: w.free.len() as u64,
        databases: w.databases,
        problems: w.problems,
        more_problems: w.more,
    })
}

/// Guarantees that LMDB's reads of the data file at `path` stay inside it before anyone maps it: the header
/// check always, and the full [`verify`] walk when `full` is set or when the file is shorter than its meta page's
/// `mm_last_pg` says (only the walk tells a file whose missing pages are free from a truncated one). Fails with
/// [`Error::Corrupted`] naming the first problem. A missing or empty file passes (LMDB creates a new one).
pub fn validate_before_mapping(path: &Path, full: bool) -> Result<()> {
    let Some(header) = read_header(path)? else { return Ok(()) };
    if !full && header.complete() {
        return Ok(());
    }
    let verified = verify(path)?;
    match verified.problems.first() {
        None => Ok(()),
        Some(p) => {
            let more = verified.problems.len() as u64 - 1 + verified.more_problems;
            let more = if more > 0 { format!(" (and {more} more problems)") } else { String::new() };
            let at = p.page.map_or(0, |pg| pg.saturating_mul(header.psize));
            Err(corrupt(path, at, format!("LMDB file structure: {}{more}", describe(p))))
        }
    }
}

/// A problem as one line: its page and what is wrong.
pub fn describe(p: &Problem) -> String {
    match p.page {
        Some(page) => format!("page {page}: {}", p.what),
        None => p.what.clone(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Free,
    Main,
    Named,
}

#[derive(Default)]
struct Counts {
    branch: u64,
    leaf: u64,
    overflow: u64,
    entries: u64,
}

struct Walker<'a> {
    file: &'a File,
    path: &'a Path,
    psize: usize,
    last_pg: u64,
    file_pages: u64,
    live: Vec<u64>,
    live_count: u64,
    free: Vec<u64>,
    named: Vec<(String, Db)>,
    databases: u64,
    problems: Vec<Problem>,
    more: u64,
    values: Option<&'a mut Vec<(u64, u64)>>,
}

/// Bounds a subtree's keys must lie in: `lower <= key < upper`.
struct Bounds<'k> {
    lower: Option<&'k [u8]>,
    upper: Option<&'k [u8]>,
}

impl<'a> Walker<'a> {
    fn new(file: &'a File, path: &'a Path, h: &Header) -> Self {
        let file_pages = h.file_len / h.psize;
        Walker {
            file,
            path,
            psize: h.psize as usize,
            last_pg: h.last_pg,
            file_pages,
            live: vec![0; file_pages.div_ceil(64) as usize],
            live_count: 0,
            free: Vec::new(),
            named: Vec::new(),
            databases: 0,
            problems: Vec::new(),
            more: 0,
            values: None,
        }
    }

    fn problem(&mut self, page: Option<u64>, what: impl Into<String>) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(Problem { page, what: what.into() });
        } else {
            self.more += 1;
        }
    }

    fn is_live(&self, pgno: u64) -> bool {
        pgno < self.file_pages && self.live[(pgno / 64) as usize] & (1 << (pgno % 64)) != 0
    }

    /// Marks `pgno` live; false (and a problem) when it was reached before or lies outside the file.
    fn mark(&mut self, pgno: u64) -> Result<bool> {
        if pgno > self.last_pg {
            self.problem(Some(pgno), format!("page number beyond the last page {}", self.last_pg));
            return Ok(false);
        }
        if pgno >= self.file_pages {
            self.problem(Some(pgno), format!("live page beyond the end of the file ({} pages)", self.file_pages));
            return Ok(false);
        }
        if self.is_live(pgno) {
            self.problem(Some(pgno), "page reached twice");
            return Ok(false);
        }
        self.live[(pgno / 64) as usize] |= 1 << (pgno % 64);
        self.live_count += 1;
        Ok(true)
    }

    fn read(&self, pgno: u64, buf: &mut [u8]) -> Result<()> {
        self.file.read_exact_at(buf, pgno * self.psize as u64).at(self.path)
    }

    fn walk_db(&mut self, name: &str, db: Db, kind: Kind) -> Result<()> {
        let supported = match kind {
            Kind::Free => MDB_INTEGERKEY | 0x01 | 0x4000,
            Kind::Main => 0,
            Kind::Named => MDB_INTEGERKEY | MDB_REVERSEKEY,
        };
        if db.flags & !supported != 0 {
            self.problem(None, format!("{name}: database flags {:#x} are not ones mailstore creates", db.flags));
            return Ok(());
        }
        let empty = db.root == P_INVALID;
        if empty != (db.depth == 0) || db.depth > MAX_DEPTH {
            self.problem(None, format!("{name}: root {} and depth {} disagree", db.root, db.depth));
            return Ok(());
        }
        let mut counts = Counts::default();
        let before = self.problems.len() as u64 + self.more;
        if !empty {
            let bounds = Bounds { lower: None, upper: None };
            self.walk_page(name, &db, kind, db.root, 1, &bounds, &mut counts)?;
        }
        let (want, got) = (
            [db.branch, db.leaf, db.overflow, db.entries],
            [counts.branch, counts.leaf, counts.overflow, counts.entries],
        );
        // A tree with a problem of its own has uncounted parts: its counts would only repeat that problem.
        if want != got && self.problems.len() as u64 + self.more == before {
            self.problem(
                None,
                format!("{name}: recorded branch/leaf/overflow pages and entries {want:?}, but the tree has {got:?}"),
            );
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn walk_page(
        &mut self,
        name: &str,
        db: &Db,
        kind: Kind,
        pgno: u64,
        level: u16,
        bounds: &Bounds<'_>,
        counts: &mut Counts,
    ) -> Result<()> {
        if !self.mark(pgno)? {
            return Ok(());
        }
        let mut page = vec![0u8; self.psize];
        self.read(pgno, &mut page)?;
        let Some(nodes) = self.page_layout(name, pgno, &page, db.depth, level) else { return Ok(()) };
        let branch = u16_at(&page, 10) == P_BRANCH;
        if branch {
            counts.branch += 1;
        } else {
            counts.leaf += 1;
        }
        let cmp = key_order(kind, db.flags);
        let mut prev: Option<&[u8]> = None;
        for (i, &ptr) in nodes.iter().enumerate() {
            let (lo, hi, flags, ksize) = (
                u16_at(&page, ptr),
                u16_at(&page, ptr + 2),
                u16_at(&page, ptr + 4),
                usize::from(u16_at(&page, ptr + 6)),
            );
            let key = &page[ptr + NODESIZE..ptr + NODESIZE + ksize];
            let skip_key = branch && i == 0;
            if !skip_key {
                if ksize == 0 || ksize > MAX_KEY || (kind == Kind::Free && ksize != 8) {
                    self.problem(Some(pgno), format!("{name}: node {i} has an impossible key size {ksize}"));
                    return Ok(());
                }
                let in_bounds = bounds.lower.is_none_or(|l| cmp(l, key).is_le())
                    && bounds.upper.is_none_or(|u| cmp(key, u).is_lt())
                    && prev.is_none_or(|p| cmp(p, key).is_lt());
                if !in_bounds {
                    self.problem(Some(pgno), format!("{name}: key of node {i} is out of order"));
                    return Ok(());
                }
                prev = Some(key);
            }
            if branch {
                let child = u64::from(lo) | u64::from(hi) << 16 | u64::from(flags) << 32;
                let upper = match nodes.get(i + 1) {
                    Some(&next) => {
                        let k = usize::from(u16_at(&page, next + 6));
                        Some(&page[next + NODESIZE..next + NODESIZE + k])
                    }
                    None => bounds.upper,
                };
                let lower = if skip_key { bounds.lower } else { Some(key) };
                let child_bounds = Bounds { lower, upper };
                self.walk_page(name, db, kind, child, level + 1, &child_bounds, counts)?;
                continue;
            }
            counts.entries += 1;
            let dsize = u64::from(lo) | u64::from(hi) << 16;
            let data_at = ptr + NODESIZE + ksize;
            let data = match (kind, flags) {
                (Kind::Main, F_SUBDATA) | (Kind::Free | Kind::Named, 0) => &page[data_at..data_at + dsize as usize],
                (Kind::Free | Kind::Named, F_BIGDATA) => {
                    if let (Kind::Named, Some(v)) = (kind, self.values.as_mut()) {
                        v.push((pgno * self.psize as u64 + (ptr + NODESIZE) as u64, ksize as u64));
                    }
                    let first = u64_at(&page, data_at);
                    match self.overflow(name, pgno, first, dsize, kind == Kind::Free, counts)? {
                        Some(bytes) => {
                            self.free_entry(pgno, &bytes);
                            continue;
                        }
                        None => continue,
                    }
                }
                _ => {
                    self.problem(Some(pgno), format!("{name}: leaf node {i} has flags {flags:#x}, not valid here"));
                    continue;
                }
            };
            match kind {
                Kind::Main if dsize as usize != DB_LEN => {
                    self.problem(Some(pgno), format!("{name}: named database record {i} has size {dsize}"))
                }
                Kind::Main => {
                    let sub = Db::parse(data);
                    if sub.root != P_INVALID && (sub.root < 2 || sub.root > self.last_pg) {
                        self.problem(Some(pgno), format!("{name}: named database {i} has an impossible root"));
                    } else {
                        self.named.push((format!("database {:?}", String::from_utf8_lossy(key)), sub));
                    }
                }
                Kind::Free => self.free_entry(pgno, data),
                Kind::Named => {
                    let at = pgno * self.psize as u64 + (ptr + NODESIZE) as u64;
                    if let Some(v) = self.values.as_mut() {
                        v.push((at, ksize as u64 + dsize));
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks a tree page's header and node table: `Some(node offsets)` when they are sound.
    fn page_layout(&mut self, name: &str, pgno: u64, page: &[u8], depth: u16, level: u16) -> Option<Vec<usize>> {
        let (stored, flags, lower, upper) =
            (u64_at(page, 0), u16_at(page, 10), usize::from(u16_at(page, 12)), usize::from(u16_at(page, 14)));
        let bad = |w: &mut Self, what: String| {
            w.problem(Some(pgno), format!("{name}: {what}"));
            None
        };
        if stored != pgno {
            return bad(self, format!("the page says it is page {stored}"));
        }
        let want = if level == depth { P_LEAF } else { P_BRANCH };
        if flags != want || level > depth {
            return bad(self, format!("flags {flags:#x} at level {level} of a tree of depth {depth}"));
        }
        if lower < PAGEHDRSZ || lower % 2 != 0 || lower > upper || upper > self.psize {
            return bad(self, format!("free space bounds {lower}..{upper} are impossible"));
        }
        let n = (lower - PAGEHDRSZ) / 2;
        if n == 0 {
            return bad(self, "the page holds no node".into());
        }
        let mut nodes = Vec::with_capacity(n);
        let mut spans = Vec::with_capacity(n);
        for i in 0..n {
            let ptr = usize::from(u16_at(page, PAGEHDRSZ + 2 * i));
            if ptr < upper || ptr % 2 != 0 || ptr + NODESIZE > self.psize {
                return bad(self, format!("node {i} at offset {ptr} lies outside the node area {upper}.."));
            }
            let ksize = usize::from(u16_at(page, ptr + 6));
            let data = if flags == P_BRANCH {
                0
            } else if u16_at(page, ptr + 4) & F_BIGDATA != 0 {
                8
            } else {
                usize::from(u16_at(page, ptr)) | usize::from(u16_at(page, ptr + 2)) << 16
            };
            let end = ptr + NODESIZE + ksize + data;
            if end > self.psize {
                return bad(self, format!("node {i} (key {ksize}, data {data} bytes) runs past the page's end"));
            }
            nodes.push(ptr);
            spans.push((ptr, end + end % 2));
        }
        // The nodes fill the space from `upper` to the page's end exactly, without overlap (LMDB keeps it packed).
        spans.sort_unstable();
        let mut at = upper;
        for (start, end) in spans {
            if start != at {
                return bad(self, format!("nodes overlap or leave a gap at offset {at}"));
            }
            at = end;
        }
        if at != self.psize {
            return bad(self, format!("the nodes end at offset {at}, not at the page's end"));
        }
        Some(nodes)
    }

    /// Checks the overflow run at `first` holding `dsize` bytes of a value on page `from`; returns the value's
    /// bytes when `want_bytes` (the free list's page lists), after marking its pages live.
    fn overflow(
        &mut self,
        name: &str,
        from: u64,
        first: u64,
        dsize: u64,
        want_bytes: bool,
        counts: &mut Counts,
    ) -> Result<Option<Vec<u8>>> {
        let pages = (PAGEHDRSZ as u64 - 1 + dsize) / self.psize as u64 + 1;
        let end = first.checked_add(pages);
        if first < 2 || end.is_none_or(|e| e > self.last_pg + 1 || e > self.file_pages) {
            self.problem(Some(from), format!("{name}: overflow run {first}+{pages} lies outside the file"));
            return Ok(None);
        }
        let mut header = [0u8; PAGEHDRSZ];
        self.read(first, &mut header)?;
        if u64_at(&header, 0) != first || u16_at(&header, 10) != P_OVERFLOW || u64::from(u32_at(&header, 12)) != pages {
            self.problem(Some(first), format!("{name}: not the overflow run of {pages} pages that page {from} names"));
            return Ok(None);
        }
        for p in first..first + pages {
            if !self.mark(p)? {
                return Ok(None);
            }
        }
        counts.overflow += pages;
        let at = first * self.psize as u64 + PAGEHDRSZ as u64;
        if !want_bytes {
            if let Some(v) = self.values.as_mut() {
                v.push((at, dsize));
            }
            return Ok(None);
        }
        let mut bytes = vec![0u8; dsize as usize];
        self.file.read_exact_at(&mut bytes, at).at(self.path)?;
        Ok(Some(bytes))
    }

    /// A free-list record: a count, then that many page numbers.
    fn free_entry(&mut self, from: u64, data: &[u8]) {
        let count = if data.len() >= 8 { u64_at(data, 0) } else { u64::MAX };
        if count.checked_add(1).and_then(|c| c.checked_mul(8)) != Some(data.len() as u64) {
            self.problem(Some(from), format!("free DB: a page list of {} bytes does not hold its count", data.len()));
            return;
        }
        for chunk in data[8..].chunks_exact(8) {
            let pgno = u64_at(chunk, 0);
            if !(2..=self.last_pg).contains(&pgno) {
                self.problem(Some(from), format!("free DB: free page {pgno} is outside 2..={}", self.last_pg));
                continue;
            }
            self.free.push(pgno);
        }
    }

    /// Free pages must be distinct, not live, and together with the live pages account for every page.
    fn finish_free(&mut self) {
        self.free.sort_unstable();
        let mut dup = None;
        let mut live_and_free = None;
        for (i, &p) in self.free.iter().enumerate() {
            if i > 0 && self.free[i - 1] == p {
                dup.get_or_insert(p);
            }
            if self.is_live(p) {
                live_and_free.get_or_insert(p);
            }
        }
        if let Some(p) = dup {
            self.problem(Some(p), "free DB: the page is listed free twice");
        }
        if let Some(p) = live_and_free {
            self.problem(Some(p), "free DB: the page is both free and live");
        }
        self.free.dedup();
        if dup.is_none() && live_and_free.is_none() && self.problems.is_empty() {
            let accounted = self.live_count + self.free.len() as u64;
            if accounted != self.last_pg + 1 {
                self.problem(
                    None,
                    format!("{accounted} pages are live or free, but the meta page's last page is {}", self.last_pg),
                );
            }
        }
    }
}

type Cmp = fn(&[u8], &[u8]) -> std::cmp::Ordering;

/// LMDB's key order for a database: unsigned native integers (`MDB_INTEGERKEY`, and the free DB), bytes compared
/// from the end (`MDB_REVERSEKEY`), or `memcmp` with the shorter key first on a tie.
fn key_order(kind: Kind, flags: u16) -> Cmp {
    if kind == Kind::Free || flags & MDB_INTEGERKEY != 0 {
        |a, b| match (a.len(), b.len()) {
            (8, 8) => u64_at(a, 0).cmp(&u64_at(b, 0)),
            (4, 4) => u32_at(a, 0).cmp(&u32_at(b, 0)),
            _ => a.len().cmp(&b.len()),
        }
    } else if flags & MDB_REVERSEKEY != 0 {
        |a, b| a.iter().rev().cmp(b.iter().rev())
    } else {
        |a, b| a.cmp(b)
    }
}

/// The data file of the LMDB environment in a state directory.
pub fn data_file(state_dir: &Path) -> PathBuf {
    state_dir.join("data.mdb")
}

/// Whether every mount (and every offline open) walks the data file in full before mapping it, rather than only
/// when the header check cannot rule out a read past the file's end (see ARCHITECTURE.md, "Validating the state
/// store before mapping it").
pub(crate) const WALK_AT_MOUNT: bool = true;
