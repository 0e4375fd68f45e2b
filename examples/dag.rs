//! A database availability group on one machine: one active and two passive copies of a mailbox database, as
//! three separate processes talking over TCP on loopback, under a delivery load. The story:
//!
//! 1. the active takes deliveries; both passives are seeded from it and follow its log (block mode);
//! 2. the copies are cut off for half a second while the active goes on acknowledging deliveries (asynchronous
//!    mode), then the active is killed with SIGKILL;
//! 3. the best copy is selected (copy queue, replay queue, preference) and activated (BestAvailability): it
//!    starts a new epoch and takes deliveries; the other passive follows the new active (resynchronizing first);
//! 4. the old active comes back: it finds where its log diverged, reports its diverged commits, and reseeds;
//! 5. the load stops, every copy catches up, and their digests must be equal.
//!
//! Copy status is printed all the way. It exits 0 when the story ends with equal digests.
//!
//! ```text
//! cargo run --release --example dag
//! cargo run --release --example dag -- DIR     # keep the three copies in DIR
//! ```
//!
//! Each process is this same binary started as `dag node --dir D [--source HOST:PORT] [--resync]`, driven by
//! line commands on its standard input (`status`, `load on|off`, `suspend`, `resume`, `activate EPOCH`, `follow HOST:PORT`,
//! `digest LSN`, `quit`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use mailstore::internals::codec;
use mailstore::model::{MailOp, MailStore, MailboxKind};
use mailstore::replication::{
    CopyOptions, CopyStatus, LogSource, MountDial, PassiveCopy, ResyncOutcome, ShippingKey, ShippingSource,
    SourceOptions, TcpShippingServer, TcpSource, best_copy, is_passive_copy, resync,
};
use mailstore::{Engine, Options};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const KEY: &str = "dag example shared key";
const MAILBOX: &str = "alice@example.com";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("node") {
        return node(&args[1..]);
    }
    let temp;
    let root: PathBuf = match args.first() {
        Some(dir) => dir.into(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    orchestrate(&root)
}

// ---------------------------------------------------------------------------------------------------------------
// The orchestrator.

struct Node {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Node {
    fn start(name: &'static str, dir: &Path, source: Option<&str>, resync: bool) -> Result<Node> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("node").arg("--dir").arg(dir);
        if let Some(source) = source {
            cmd.arg("--source").arg(source);
        }
        if resync {
            cmd.arg("--resync");
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(note) = line.strip_prefix("note ") {
                    println!("    [{name}] {note}");
                } else if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Node { name, child, stdin, lines })
    }

    /// Sends a command and returns the first answer line starting with `prefix`.
    fn ask(&mut self, command: &str, prefix: &str) -> Result<String> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        self.expect(prefix, Duration::from_secs(120))
    }

    fn expect(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).map_err(|_| format!("{}: no {prefix:?} answer", self.name))?;
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok(rest.trim().to_owned());
            }
            if let Some(err) = line.strip_prefix("error ") {
                return Err(format!("{}: {err}", self.name).into());
            }
        }
    }

    fn status(&mut self) -> Result<CopyStatus> {
        let hex = self.ask("status", "status ")?;
        Ok(codec::decode(&from_hex(&hex)?)?)
    }

    fn quit(mut self) -> Result<()> {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        self.child.wait()?;
        Ok(())
    }
}

fn print_status(name: &str, s: &CopyStatus) {
    println!(
        "  {name:<8} {:<22} CQL {:>2}  RQL {:>2}  copied {:>6}  replayed {:>6}  source {:>6}  epoch {}{}",
        format!("{:?}", s.state),
        s.copy_queue_length,
        s.replay_queue_length,
        s.last_copied_lsn,
        s.last_replayed_lsn,
        s.source_lsn,
        s.epoch,
        s.reason.as_deref().map(|r| format!("  ({r})")).unwrap_or_default(),
    );
}

fn watch(nodes: &mut [&mut Node], rounds: usize) -> Result<()> {
    for _ in 0..rounds {
        std::thread::sleep(Duration::from_millis(300));
        for node in nodes.iter_mut() {
            let s = node.status()?;
            print_status(node.name, &s);
        }
    }
    Ok(())
}

fn orchestrate(root: &Path) -> Result<()> {
    let started = Instant::now();
    println!("DAG in {}", root.display());
    println!("1. active copy-a takes deliveries; copy-b and copy-c are seeded from it over TCP");
    let mut a = Node::start("copy-a", &root.join("copy-a"), None, false)?;
    let port_a = a.expect("active ", Duration::from_secs(60))?;
    println!("  copy-a active at {port_a}");
    a.ask("load on", "ok")?;
    let mut b = Node::start("copy-b", &root.join("copy-b"), Some(&port_a), false)?;
    let mut c = Node::start("copy-c", &root.join("copy-c"), Some(&port_a), false)?;
    b.expect("ready", Duration::from_secs(60))?;
    c.expect("ready", Duration::from_secs(60))?;
    watch(&mut [&mut b, &mut c], 5)?;

    println!(
        "2. the copies are cut off (suspended) while the active goes on acknowledging deliveries; then SIGKILL it"
    );
    b.ask("suspend", "ok")?;
    c.ask("suspend", "ok")?;
    std::thread::sleep(Duration::from_millis(500));
    a.child.kill()?;
    a.child.wait()?;
    // The partition heals, but the active is gone.
    b.ask("resume", "ok")?;
    c.ask("resume", "ok")?;
    std::thread::sleep(Duration::from_millis(600));
    let statuses = vec![b.status()?, c.status()?];
    print_status("copy-b", &statuses[0]);
    print_status("copy-c", &statuses[1]);

    println!("3. best copy selection and activation (BestAvailability)");
    let ranking = best_copy(&statuses);
    let best = *ranking.first().ok_or("no copy can be activated")?;
    let epoch = statuses.iter().map(|s| s.epoch).max().unwrap_or(1) + 1;
    let (mut new, mut other) = if best == 0 { (b, c) } else { (c, b) };
    println!("  selected {} (ranking {:?}); activating at epoch {epoch}", new.name, ranking);
    let t = Instant::now();
    let port_new = new.ask(&format!("activate {epoch}"), "active ")?;
    println!("  {} active at {port_new} after {:.0} ms", new.name, t.elapsed().as_secs_f64() * 1e3);
    new.ask("load on", "ok")?;
    other.ask(&format!("follow {port_new}"), "ready")?;
    watch(&mut [&mut other], 4)?;

    println!("4. the old active copy-a comes back as a passive copy of {}", new.name);
    let mut old = Node::start("copy-a", &root.join("copy-a"), Some(&port_new), true)?;
    old.expect("ready", Duration::from_secs(120))?;
    watch(&mut [&mut other, &mut old], 4)?;

    println!("5. stop the load; every copy catches up; digests must be equal");
    let head = new.ask("load off", "ok")?;
    let expected = new.ask(&format!("digest {head}"), "digest ")?;
    let digest_other = other.ask(&format!("digest {head}"), "digest ")?;
    let digest_old = old.ask(&format!("digest {head}"), "digest ")?;
    watch(&mut [&mut other, &mut old], 1)?;
    println!("  {} (active) {expected}", new.name);
    println!("  {}          {digest_other}", other.name);
    println!("  {}          {digest_old}", old.name);
    new.quit()?;
    other.quit()?;
    old.quit()?;
    if expected != digest_other || expected != digest_old {
        return Err("the copies' digests differ".into());
    }
    println!("all three copies hold the same state; story told in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// One copy's process.

enum Role {
    Active { engine: Arc<Engine<MailStore>>, _server: TcpShippingServer, load: Option<Load> },
    Passive(PassiveCopy<MailStore>),
    Gone,
}

struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn copy_options() -> CopyOptions {
    CopyOptions::default().poll(Duration::from_millis(100))
}

fn options() -> Options {
    Options::default().log_target_size(256 << 10)
}

fn source_at(addr: &str) -> Arc<dyn LogSource> {
    Arc::new(TcpSource::new(addr, ShippingKey::from_passphrase(KEY)).retry_for(Duration::from_millis(300)))
}

fn node(args: &[String]) -> Result<()> {
    let dir = PathBuf::from(arg(args, "--dir").ok_or("--dir is required")?);
    let mut role = match arg(args, "--source") {
        None => serve_active(Engine::mount(&dir, options())?)?,
        Some(addr) => Role::Passive(follow(&dir, &addr, args.iter().any(|a| a == "--resync"))?),
    };
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let result = command(&mut role, &dir, &words);
        match result {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => println!("error {e}"),
        }
        std::io::stdout().flush()?;
    }
    if let Role::Active { load: Some(load), .. } = &mut role {
        stop_load(load);
    }
    Ok(())
}

/// Makes `dir` a passive copy of the active at `addr`: resynchronizing (and reseeding if it must) an old
/// active or a copy of another active, seeding an empty directory.
fn follow(dir: &Path, addr: &str, resync_first: bool) -> Result<PassiveCopy<MailStore>> {
    let source = source_at(addr);
    if resync_first || (dir.join("checkpoint").exists() && !is_passive_copy(dir)) {
        match resync::<MailStore>(dir, source.as_ref())? {
            ResyncOutcome::InSync { lsn } => println!("note resync: no divergence (log ends at LSN {lsn})"),
            ResyncOutcome::Resynchronized(d) => println!(
                "note resync: {} diverged commits (LSN {}..={}) discarded and kept in {}",
                d.records(),
                d.first_lsn,
                d.last_lsn,
                d.files.first().and_then(|f| f.parent()).map(|p| p.display().to_string()).unwrap_or_default()
            ),
            ResyncOutcome::NeedsReseed(d) => {
                println!(
                    "note resync: {} diverged commits (LSN {}..={}) were already applied: reseeding; never merged",
                    d.records(),
                    d.first_lsn,
                    d.last_lsn
                );
                return seed(dir, source);
            }
        }
        let copy = PassiveCopy::open(dir, source, copy_options())?;
        println!("ready");
        return Ok(copy);
    }
    if is_passive_copy(dir) {
        let copy = PassiveCopy::open(dir, source, copy_options())?;
        println!("ready");
        return Ok(copy);
    }
    seed(dir, source)
}

fn seed(dir: &Path, source: Arc<dyn LogSource>) -> Result<PassiveCopy<MailStore>> {
    let mut last = 0;
    let copy = PassiveCopy::seed(dir, source.as_ref(), Arc::clone(&source), copy_options(), |p| {
        if p.bytes == p.total || p.bytes - last > 4 << 20 {
            println!("note seeding: {} of {} KiB", p.bytes >> 10, p.total >> 10);
            last = p.bytes;
        }
    })?;
    println!("ready");
    Ok(copy)
}

fn serve_active(engine: Engine<MailStore>) -> Result<Role> {
    let engine = Arc::new(engine);
    if engine.read(|m, txn| m.mailbox_by_address(txn, MAILBOX))?.is_none() {
        engine.commit(MailOp::create_mailbox(MAILBOX, "Alice Example", MailboxKind::User))?;
    }
    let source = Arc::new(ShippingSource::new(Arc::clone(&engine), SourceOptions::default())?);
    let server = TcpShippingServer::bind("127.0.0.1:0", source, ShippingKey::from_passphrase(KEY))?;
    println!("active {}", server.local_addr());
    Ok(Role::Active { engine, _server: server, load: None })
}

fn start_load(engine: &Arc<Engine<MailStore>>) -> Result<Load> {
    let mailbox = engine.read(|m, txn| m.mailbox_by_address(txn, MAILBOX))?.ok_or("no mailbox")?.guid;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let threads = (0..4)
        .map(|t| {
            let engine = Arc::clone(engine);
            let stop = Arc::clone(&stop);
            let sent = Arc::clone(&sent);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let n = sent.fetch_add(1, Ordering::Relaxed);
                    let raw = format!(
                        "From: sender{t}@example.net\r\nTo: {MAILBOX}\r\nSubject: message {n}\r\n\
                         Message-ID: <{n}.{t}@example.net>\r\n\r\n{}\r\n",
                        "lorem ipsum dolor sit amet ".repeat(40)
                    );
                    if engine.deliver(mailbox, None, raw.into_bytes()).is_err() {
                        break; // fenced or dismounted
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();
    Ok(Load { stop, threads })
}

fn stop_load(load: &mut Load) {
    load.stop.store(true, Ordering::Relaxed);
    for t in load.threads.drain(..) {
        let _ = t.join();
    }
}

fn command(role: &mut Role, dir: &Path, words: &[&str]) -> Result<bool> {
    match (words, &mut *role) {
        (["quit"], _) => return Ok(false),
        (["status"], Role::Passive(copy)) => println!("status {}", to_hex(&codec::encode(&copy.status())?)),
        (["status"], Role::Active { engine, .. }) => {
            let s = engine.status();
            println!("note active: LSN {} generation {} epoch {}", s.applied_lsn, s.head_generation, s.epoch);
        }
        (["load", "on"], Role::Active { engine, load, .. }) => {
            *load = Some(start_load(engine)?);
            println!("ok");
        }
        (["load", "off"], Role::Active { engine, load, .. }) => {
            if let Some(load) = load {
                stop_load(load);
            }
            println!("ok {}", engine.status().applied_lsn);
        }
        (["suspend"], Role::Passive(copy)) => {
            copy.suspend()?;
            println!("ok");
        }
        (["resume"], Role::Passive(copy)) => {
            copy.resume()?;
            println!("ok");
        }
        (["activate", epoch], Role::Passive(_)) => {
            // This arm matched `Role::Passive`, so the role taken out is one.
            let Role::Passive(copy) = std::mem::replace(role, Role::Gone) else { unreachable!() };
            let engine = copy.activate(MountDial::BestAvailability, epoch.parse()?, options())?;
            *role = serve_active(engine)?;
        }
        (["follow", addr], Role::Passive(_)) => {
            // This arm matched `Role::Passive`, so the role taken out is one.
            let Role::Passive(copy) = std::mem::replace(role, Role::Gone) else { unreachable!() };
            copy.close()?;
            *role = Role::Passive(follow(dir, addr, true)?);
        }
        (["digest", lsn], Role::Passive(copy)) => {
            let lsn: u64 = lsn.parse()?;
            if !copy.wait_replayed(lsn, Duration::from_secs(120)) {
                return Err(format!("did not reach LSN {lsn}: {:?}", copy.status()).into());
            }
            println!("digest {}", copy.read(|m, txn| m.digest(txn))?);
        }
        (["digest", _], Role::Active { engine, .. }) => println!("digest {}", engine.read(|m, txn| m.digest(txn))?),
        _ => println!("error unknown command {words:?}"),
    }
    Ok(true)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return Err("odd hex length".into());
    }
    (0..s.len()).step_by(2).map(|i| Ok(u8::from_str_radix(&s[i..i + 2], 16)?)).collect()
}
