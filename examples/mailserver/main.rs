//! An example mail server on `mailstore`: IMAP4rev1 (with CONDSTORE, QRESYNC, IDLE, UIDPLUS, MOVE, SPECIAL-USE)
//! and LMTP delivery, over one `Store`.
//!
//! ```text
//! cargo run --release --example mailserver -- --store DIR --users FILE \
//!     --imap 127.0.0.1:1143 --lmtp 127.0.0.1:2424
//! cargo run --release --example mailserver -- --hash-password SECRET   # prints {ARGON2ID}… for the users file
//! # with TLS: STARTTLS on --imap, implicit TLS on --imaps
//! … --cert chain.pem --key key.pem --imaps 127.0.0.1:1993
//! ```
//!
//! The users file has one `address:{SCHEME}secret:database[:quota=BYTES]` a line (see `users.rs`). On start the
//! store, the databases it names and the users' mailboxes are created when missing. The server listens only on
//! the addresses given, serves each connection on its own thread, and on Ctrl-C (or SIGTERM) closes every
//! connection and dismounts the store cleanly.
//!
//! - `imap.rs`: IMAP sessions; commands are parsed by `imap-codec`.
//! - `lmtp.rs`: LMTP sessions; commands are parsed by `smtp-proto`.
//! - `mime.rs`: ENVELOPE, BODYSTRUCTURE and BODY[section] from the stored message.
//! - `users.rs`: the users file and password checks.
//! - `tls.rs`: rustls for STARTTLS and implicit TLS.
//! - `utf7.rs`: IMAP's modified UTF-7 mailbox names.
//!
//! Not implemented: BINARY, SORT / THREAD, LIST-EXTENDED, QUOTA, NAMESPACE, `\Recent` (always none); LMTP over
//! TLS and AUTH (LMTP is for trusted MTAs on loopback).

mod imap;
mod lmtp;
mod mime;
mod search;
mod tls;
mod users;
mod utf7;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mailstore::model::{MailEngine, MailOp, MailStore, MailboxKind, Quota};
use mailstore::{Durability, Guid, Options, Store};
use parking_lot::{Condvar, Mutex};

use crate::users::Users;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What every session shares.
pub struct Server {
    /// The store.
    pub store: Store<MailStore>,
    /// The users file.
    pub users: Users,
    /// Set on Ctrl-C.
    pub shutdown: AtomicBool,
    /// Open connections, so shutdown can close them.
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_connection: AtomicU64,
    /// TLS for IMAP (STARTTLS and `--imaps`), when a certificate was given.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Subscribed folder names per user (IMAP SUBSCRIBE), persisted in the store root.
    pub subscriptions: Mutex<HashMap<String, std::collections::BTreeSet<String>>>,
    subscriptions_file: PathBuf,
}

/// A user's mailbox, found in the store.
#[derive(Clone)]
pub struct Account {
    /// The address.
    pub address: String,
    /// The mailbox's GUID.
    pub guid: Guid,
    /// Its database.
    pub engine: Arc<MailEngine>,
}

impl Server {
    /// The mailbox of the user `address` (who must be in the users file).
    pub fn account(&self, address: &str) -> Result<Option<Account>, mailstore::Error> {
        let Some(user) = self.users.get(address) else { return Ok(None) };
        Ok(self.store.locate_address(&user.address)?.map(|l| Account {
            address: user.address.clone(),
            guid: l.mailbox.guid,
            engine: l.engine,
        }))
    }

    /// Persists the subscriptions (one `address<TAB>folder` a line, written aside and renamed).
    pub fn save_subscriptions(&self) -> std::io::Result<()> {
        let mut text = String::new();
        for (address, names) in self.subscriptions.lock().iter() {
            for name in names {
                text.push_str(&format!("{address}\t{name}\n"));
            }
        }
        let tmp = self.subscriptions_file.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &self.subscriptions_file)
    }

    fn register(&self, stream: &TcpStream) -> Option<u64> {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let clone = stream.try_clone().ok()?;
        self.connections.lock().insert(id, clone);
        Some(id)
    }

    fn unregister(&self, id: u64) {
        self.connections.lock().remove(&id);
    }

    /// Shuts every open connection down, so the sessions' blocked reads return and their threads end.
    fn close_connections(&self) {
        for stream in self.connections.lock().values() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

struct Args {
    store: PathBuf,
    users: PathBuf,
    imap: Option<SocketAddr>,
    imaps: Option<SocketAddr>,
    lmtp: Option<SocketAddr>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

const USAGE: &str = "usage: mailserver --store DIR --users FILE [--imap ADDR:PORT] [--lmtp ADDR:PORT]\n       \
                     [--cert CHAIN.pem --key KEY.pem [--imaps ADDR:PORT]]\n       \
                     mailserver --hash-password SECRET";

fn parse_args() -> Result<Option<Args>, BoxError> {
    let mut args = std::env::args().skip(1);
    let (mut store, mut users, mut imap, mut lmtp) = (None, None, None, None);
    let (mut imaps, mut cert, mut key) = (None, None, None);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--store" => store = Some(PathBuf::from(value()?)),
            "--users" => users = Some(PathBuf::from(value()?)),
            "--imap" => imap = Some(value()?.parse::<SocketAddr>().map_err(|e| format!("--imap: {e}"))?),
            "--lmtp" => lmtp = Some(value()?.parse::<SocketAddr>().map_err(|e| format!("--lmtp: {e}"))?),
            "--imaps" => imaps = Some(value()?.parse::<SocketAddr>().map_err(|e| format!("--imaps: {e}"))?),
            "--cert" => cert = Some(PathBuf::from(value()?)),
            "--key" => key = Some(PathBuf::from(value()?)),
            "--hash-password" => {
                println!("{}", users::hash_password(&value()?)?);
                return Ok(None);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    let store = store.ok_or(format!("--store is required\n{USAGE}"))?;
    let users = users.ok_or(format!("--users is required\n{USAGE}"))?;
    if imap.is_none() && lmtp.is_none() && imaps.is_none() {
        return Err(format!("give --imap, --imaps, --lmtp or several\n{USAGE}").into());
    }
    if cert.is_some() != key.is_some() || (imaps.is_some() && cert.is_none()) {
        return Err(format!("--cert and --key go together, and --imaps needs them\n{USAGE}").into());
    }
    Ok(Some(Args { store, users, imap, imaps, lmtp, cert, key }))
}

/// Mounts (or creates) every database the users file names and creates missing mailboxes; applies quotas.
fn provision(store: &Store<MailStore>, users: &Users) -> Result<(), BoxError> {
    let mut databases: Vec<&str> = users.iter().map(|u| u.database.as_str()).collect();
    databases.sort_unstable();
    databases.dedup();
    for name in databases {
        if store.open_database(name)?.recovery_report().created {
            eprintln!("created database {name}");
        }
    }
    for user in users.iter() {
        let located = match store.locate_address(&user.address)? {
            Some(l) => l,
            None => {
                store.create_mailbox(&user.database, &user.address, &user.address, MailboxKind::User)?;
                eprintln!("created mailbox {} in {}", user.address, user.database);
                store.locate_address(&user.address)?.ok_or("a mailbox just created is not found")?
            }
        };
        let wanted = user.quota.map(|bytes| Quota {
            issue_warning: bytes,
            prohibit_send: bytes,
            prohibit_send_receive: bytes,
            ..Quota::default()
        });
        if located.mailbox.quota != wanted {
            located.engine.commit(MailOp::SetQuota { mailbox: located.mailbox.guid, quota: wanted })?;
        }
    }
    Ok(())
}

fn load_subscriptions(path: &std::path::Path) -> HashMap<String, std::collections::BTreeSet<String>> {
    let mut out: HashMap<String, std::collections::BTreeSet<String>> = HashMap::new();
    if let Ok(text) = std::fs::read_to_string(path) {
        for line in text.lines() {
            if let Some((address, name)) = line.split_once('\t') {
                out.entry(address.to_owned()).or_default().insert(name.to_owned());
            }
        }
    }
    out
}

/// The most connections served at once (IMAP and LMTP together); more are refused with `busy`.
const MAX_CONNECTIONS: usize = 2000;

fn listen(
    server: &Arc<Server>,
    addr: SocketAddr,
    name: &'static str,
    busy: &'static [u8],
    serve: fn(&Server, TcpStream),
) -> Result<(JoinHandle<()>, SocketAddr), BoxError> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("{name}: cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    eprintln!("{name} listening on {local}");
    let server = Arc::clone(server);
    let handle = thread::Builder::new().name(format!("{name}-accept")).spawn(move || {
        let mut workers: Vec<JoinHandle<()>> = Vec::new();
        while !server.shutdown.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut stream, _peer)) => {
                    if server.shutdown.load(Ordering::SeqCst) {
                        // The wake-up connection of the shutdown (or a late client).
                        break;
                    }
                    if server.connections.lock().len() >= MAX_CONNECTIONS {
                        let _ = std::io::Write::write_all(&mut stream, busy);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let Some(id) = server.register(&stream) else { continue };
                    let server = Arc::clone(&server);
                    let spawned = thread::Builder::new().name(format!("{name}-{id}")).spawn(move || {
                        serve(&server, stream);
                        server.unregister(id);
                    });
                    match spawned {
                        Ok(handle) => workers.push(handle),
                        Err(e) => eprintln!("{name}: cannot start a connection thread: {e}"),
                    }
                    workers.retain(|w| !w.is_finished());
                }
                Err(e) => {
                    eprintln!("{name}: accept failed: {e}");
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
        // Connections accepted while the shutdown began are closed too.
        server.close_connections();
        for w in workers {
            let _ = w.join();
        }
    })?;
    Ok((handle, local))
}

/// Wakes an acceptor blocked in `accept` by connecting to it (on loopback when it listens on every address).
fn wake(addr: SocketAddr) {
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let _ = TcpStream::connect_timeout(&target, Duration::from_secs(1));
}

fn main() {
    if let Err(e) = run() {
        eprintln!("mailserver: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), BoxError> {
    let Some(args) = parse_args()? else { return Ok(()) };
    let users = Users::load(&args.users).map_err(|e| format!("{}: {e}", args.users.display()))?;
    let tls = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(tls::load(cert, key)?),
        _ => None,
    };
    // Full durability: every delivery and every change is fdatasynced before it is acknowledged.
    let store: Store<MailStore> = Store::open(&args.store, Options::default().durability(Durability::Full))?;
    provision(&store, &users)?;
    let subscriptions_file = args.store.join("imap-subscriptions");
    let server = Arc::new(Server {
        subscriptions: Mutex::new(load_subscriptions(&subscriptions_file)),
        subscriptions_file,
        tls,
        store,
        users,
        shutdown: AtomicBool::new(false),
        connections: Mutex::new(HashMap::new()),
        next_connection: AtomicU64::new(1),
    });

    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    {
        let stop = Arc::clone(&stop);
        ctrlc::set_handler(move || {
            *stop.0.lock() = true;
            stop.1.notify_all();
        })?;
    }

    let mut acceptors = Vec::new();
    if let Some(addr) = args.imap {
        acceptors.push(listen(&server, addr, "imap", b"* BYE too many connections\r\n", imap::serve)?);
    }
    if let Some(addr) = args.imaps {
        acceptors.push(listen(&server, addr, "imaps", b"", imap::serve_tls)?);
    }
    if let Some(addr) = args.lmtp {
        acceptors.push(listen(&server, addr, "lmtp", b"421 4.3.2 too many connections\r\n", lmtp::serve)?);
    }
    eprintln!("ready");

    // Wait for Ctrl-C / SIGTERM.
    {
        let mut stopped = stop.0.lock();
        while !*stopped {
            stop.1.wait(&mut stopped);
        }
    }
    eprintln!("shutting down");
    server.shutdown.store(true, Ordering::SeqCst);
    server.close_connections();
    for (acceptor, addr) in acceptors {
        wake(addr);
        let _ = acceptor.join();
    }
    let server = Arc::try_unwrap(server).map_err(|_| "a session still holds the server")?;
    server.store.close()?;
    eprintln!("store dismounted cleanly");
    Ok(())
}
