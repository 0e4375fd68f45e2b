//! Log shipping over TCP: length-framed, checksummed, authenticated with a shared key, reconnecting.
//!
//! Handshake (both sides prove they hold the key, nothing of it crosses the wire):
//!
//! ```text
//! server → client   b"MSSHIP01" ‖ server nonce (32 bytes)
//! client → server   client nonce (32) ‖ BLAKE3-keyed(key, "client" ‖ server nonce ‖ client nonce)
//! server → client   BLAKE3-keyed(key, "server" ‖ client nonce ‖ server nonce)   (32 zero bytes: wrong key)
//! ```
//!
//! Then every message, either way, is one frame:
//!
//! ```text
//! u32 length L (LE) ‖ u32 CRC32 of payload ‖ 16-byte MAC ‖ payload (L bytes, a bincode Request or Response)
//! MAC = first 16 bytes of BLAKE3-keyed(session key, direction ‖ sequence number (u64 LE) ‖ payload)
//! session key = BLAKE3-keyed(key, "session" ‖ server nonce ‖ client nonce)
//! ```
//!
//! The whole handshake has a deadline (`HANDSHAKE_DEADLINE`), and at most `MAX_HANDSHAKES` run at once, a new
//! connection closing the oldest handshake: idle or trickling connections cannot hold the slots a copy needs.
//! Authenticated connections have their own `MAX_CONNECTIONS` slots.
//!
//! The length is bounded before anything is allocated; the CRC tells corruption from forgery in the error;
//! the MAC with a per-direction sequence number stops injected, replayed or reordered frames. The payload is not
//! encrypted: run it over a private network or a tunnel when the log must stay confidential.
//!
//! The client reconnects on any transport error and repeats the request: requests name the position they want,
//! so a repeat never loses or duplicates log.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::codec;
use crate::error::{Error, Result};
use crate::replication::ReplicationError;
use crate::replication::protocol::{
    Chunk, CopyId, Hello, LogSource, MAX_CHUNK_BYTES, ReadRequest, Request, Response, SnapshotPart, SnapshotRequest,
    SourceInfo, serve,
};

const GREETING: &[u8; 8] = b"MSSHIP01";
/// The largest frame payload: a chunk and its envelope.
const MAX_FRAME: usize = MAX_CHUNK_BYTES + 4096;
const MAC_LEN: usize = 16;
/// Authenticated connections served at once; more are closed once authenticated (copies need one each).
const MAX_CONNECTIONS: usize = 64;
/// Connections in their handshake at once. A new one beyond closes the oldest: a flood of idle or slow
/// connections cannot keep a copy out, since a copy's handshake takes one round trip and theirs never end.
const MAX_HANDSHAKES: usize = 16;
/// The whole handshake, every read and write of it together: a peer sending a byte at a time is cut off at this
/// deadline, not kept as long as it keeps sending.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(3);

/// The shared key of a shipping link: 32 bytes, or derived from a passphrase.
#[derive(Clone)]
pub struct ShippingKey([u8; 32]);

impl ShippingKey {
    /// A key from 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ShippingKey(bytes)
    }

    /// A key derived from a passphrase (BLAKE3 key derivation).
    pub fn from_passphrase(passphrase: &str) -> Self {
        ShippingKey(blake3::derive_key("mailstore 2026 log shipping key", passphrase.as_bytes()))
    }

    fn mac(&self, parts: &[&[u8]]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        for p in parts {
            h.update(p);
        }
        h.finalize()
    }
}

impl std::fmt::Debug for ShippingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShippingKey(..)")
    }
}

fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    n[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    n[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    n
}

fn io_err(what: &str, e: std::io::Error) -> Error {
    transport(format!("{what}: {e}"))
}

fn transport(reason: impl Into<String>) -> Error {
    ReplicationError::Transport { reason: reason.into() }.into()
}

fn protocol(reason: impl Into<String>) -> Error {
    ReplicationError::Protocol { reason: reason.into() }.into()
}

/// Why a link operation failed: a transport problem worth a new connection, or an authentication failure that
/// another connection would only repeat.
enum LinkError {
    Transport(Error),
    Authentication(Error),
}

impl From<Error> for LinkError {
    fn from(e: Error) -> Self {
        LinkError::Transport(e)
    }
}

fn authentication(message: &str) -> LinkError {
    LinkError::Authentication(ReplicationError::Authentication { reason: message.into() }.into())
}

/// One authenticated connection, either side.
struct Link {
    stream: TcpStream,
    session: ShippingKey,
    /// Direction byte of frames this side sends (b'c' client, b's' server).
    out_dir: u8,
    sent: u64,
    received: u64,
}

impl Link {
    fn send(&mut self, payload: &[u8]) -> Result<(), LinkError> {
        let mac = self.session.mac(&[&[self.out_dir], &self.sent.to_le_bytes(), payload]);
        let mut frame = Vec::with_capacity(payload.len() + 8 + MAC_LEN);
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        frame.extend_from_slice(&mac.as_bytes()[..MAC_LEN]);
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).map_err(|e| io_err("send", e))?;
        self.sent += 1;
        Ok(())
    }

    fn receive(&mut self) -> Result<Vec<u8>, LinkError> {
        let mut head = [0u8; 8 + MAC_LEN];
        self.stream.read_exact(&mut head).map_err(|e| io_err("receive", e))?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > MAX_FRAME {
            return Err(protocol(format!("frame of {len} bytes exceeds the limit of {MAX_FRAME}")).into());
        }
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).map_err(|e| io_err("receive", e))?;
        if crc32fast::hash(&payload).to_le_bytes() != head[4..8] {
            return Err(transport("frame checksum mismatch (corrupted in transit)").into());
        }
        let in_dir = if self.out_dir == b'c' { b's' } else { b'c' };
        let mac = self.session.mac(&[&[in_dir], &self.received.to_le_bytes(), &payload]);
        if !constant_time_eq(&mac.as_bytes()[..MAC_LEN], &head[8..]) {
            return Err(authentication("frame authentication failed (forged, replayed or reordered)"));
        }
        self.received += 1;
        Ok(payload)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves a [`LogSource`] over TCP, one thread per connection.
pub struct TcpShippingServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepter: Option<JoinHandle<()>>,
    connections: Arc<AtomicU64>,
}

impl TcpShippingServer {
    /// Listens on `addr` (give port 0 to pick one; see [`TcpShippingServer::local_addr`]) and serves `source`
    /// to clients holding `key`.
    pub fn bind(addr: impl ToSocketAddrs, source: Arc<dyn LogSource>, key: ShippingKey) -> Result<Self> {
        let listener = TcpListener::bind(addr).map_err(|e| io_err("bind", e))?;
        let addr = listener.local_addr().map_err(|e| io_err("bind", e))?;
        listener.set_nonblocking(true).map_err(|e| io_err("listen", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let accepter = {
            let stop = Arc::clone(&stop);
            let connections = Arc::clone(&connections);
            let gate = Arc::new(Gate::default());
            std::thread::Builder::new()
                .name("mailstore-ship-accept".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        match listener.accept() {
                            Ok((stream, _)) => {
                                let Some(ticket) = gate.admit(&stream) else {
                                    let _ = stream.shutdown(Shutdown::Both);
                                    continue;
                                };
                                let source = Arc::clone(&source);
                                let key = key.clone();
                                let stop = Arc::clone(&stop);
                                let gate = Arc::clone(&gate);
                                connections.fetch_add(1, Ordering::Relaxed);
                                let _ =
                                    std::thread::Builder::new().name("mailstore-ship-conn".into()).spawn(move || {
                                        serve_connection(stream, ticket, &gate, source.as_ref(), &key, &stop)
                                    });
                                // A connection whose thread could not start is closed with it; its handshake
                                // slot goes at the next eviction.
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(50)),
                        }
                    }
                })
                .map_err(|e| io_err("spawn", e))?
        };
        Ok(TcpShippingServer { addr, stop, accepter: Some(accepter), connections })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Stops accepting; open connections end after their current request.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.accepter.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TcpShippingServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// The server's connection slots: handshakes in progress (oldest first, each with a handle to close it) and
/// authenticated connections.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    next: u64,
    handshaking: std::collections::VecDeque<(u64, TcpStream)>,
    authenticated: usize,
}

/// A connection's slot; released when dropped, whatever ends the connection.
struct Ticket {
    id: u64,
    authenticated: bool,
}

impl Gate {
    /// A handshake slot for `stream`, closing the oldest handshake when all are taken.
    fn admit(&self, stream: &TcpStream) -> Option<Ticket> {
        let handle = stream.try_clone().ok()?;
        let mut state = self.state.lock();
        if state.handshaking.len() >= MAX_HANDSHAKES
            && let Some((_, oldest)) = state.handshaking.pop_front()
        {
            let _ = oldest.shutdown(Shutdown::Both);
        }
        state.next += 1;
        let id = state.next;
        state.handshaking.push_back((id, handle));
        Some(Ticket { id, authenticated: false })
    }

    /// Moves a connection whose handshake succeeded to an authenticated slot; false when its handshake slot was
    /// taken from it meanwhile or every authenticated slot is in use.
    fn authenticate(&self, ticket: &mut Ticket) -> bool {
        let mut state = self.state.lock();
        let Some(at) = state.handshaking.iter().position(|(id, _)| *id == ticket.id) else { return false };
        state.handshaking.remove(at);
        if state.authenticated >= MAX_CONNECTIONS {
            return false;
        }
        state.authenticated += 1;
        ticket.authenticated = true;
        true
    }

    fn release(&self, ticket: &Ticket) {
        let mut state = self.state.lock();
        if ticket.authenticated {
            state.authenticated -= 1;
        } else if let Some(at) = state.handshaking.iter().position(|(id, _)| *id == ticket.id) {
            state.handshaking.remove(at);
        }
    }
}

fn serve_connection(
    mut stream: TcpStream,
    mut ticket: Ticket,
    gate: &Gate,
    source: &dyn LogSource,
    key: &ShippingKey,
    stop: &AtomicBool,
) {
    struct Release<'a>(&'a Gate, &'a Ticket);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            self.0.release(self.1);
        }
    }
    let _ = stream.set_nodelay(true);
    let handshake = server_handshake(&mut stream, key);
    let admitted = handshake.is_ok() && gate.authenticate(&mut ticket);
    let _release = Release(gate, &ticket);
    let (Ok(mut link), true) = (handshake, admitted) else {
        let _ = stream.shutdown(Shutdown::Both);
        return;
    };
    let mut idle = Duration::ZERO;
    while !stop.load(Ordering::Acquire) {
        // Wait for the next request without consuming it, so the stop flag is seen between requests and a
        // timeout can never cut a frame in half.
        let _ = link.stream.set_read_timeout(Some(Duration::from_millis(250)));
        let mut probe = [0u8; 1];
        match link.stream.peek(&mut probe) {
            Ok(0) => break,
            Ok(_) => idle = Duration::ZERO,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                idle += Duration::from_millis(250);
                if idle > Duration::from_secs(300) {
                    break;
                }
                continue;
            }
            Err(_) => break,
        }
        let _ = link.stream.set_read_timeout(Some(Duration::from_secs(30)));
        let payload = match link.receive() {
            Ok(p) => p,
            Err(_) => break,
        };
        let Ok(request) = codec::decode::<Request>(&payload) else { break };
        let response = serve(source, request);
        let Ok(bytes) = codec::encode(&response) else { break };
        if link.send(&bytes).is_err() {
            break;
        }
    }
    let _ = link.stream.shutdown(Shutdown::Both);
}

/// Reads exactly `buf.len()` bytes before `deadline`, however the peer spreads them out.
fn read_before(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake deadline passed"));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_before(stream: &mut TcpStream, bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    stream.set_write_timeout(Some(left))?;
    stream.write_all(bytes)?;
    stream.set_write_timeout(None)
}

fn server_handshake(stream: &mut TcpStream, key: &ShippingKey) -> Result<Link> {
    let deadline = Instant::now() + HANDSHAKE_DEADLINE;
    let server_nonce = nonce();
    let mut hello = GREETING.to_vec();
    hello.extend_from_slice(&server_nonce);
    write_before(stream, &hello, deadline).map_err(|e| io_err("handshake", e))?;
    let mut answer = [0u8; 64];
    read_before(stream, &mut answer, deadline).map_err(|e| io_err("handshake", e))?;
    let (client_nonce, proof) = answer.split_at(32);
    let expected = key.mac(&[b"client", &server_nonce, client_nonce]);
    if !constant_time_eq(expected.as_bytes(), proof) {
        // An answer that is no proof tells the client its key is wrong; a closed connection would only tell it
        // that the connection went (as when its handshake slot is taken by a newer one), worth another try.
        let _ = write_before(stream, &[0u8; 32], deadline);
        return Err(ReplicationError::Authentication { reason: "client failed authentication".into() }.into());
    }
    let proof = key.mac(&[b"server", client_nonce, &server_nonce]);
    write_before(stream, proof.as_bytes(), deadline).map_err(|e| io_err("handshake", e))?;
    let session = ShippingKey(*key.mac(&[b"session", &server_nonce, client_nonce]).as_bytes());
    let stream = stream.try_clone().map_err(|e| io_err("handshake", e))?;
    Ok(Link { stream, session, out_dir: b's', sent: 0, received: 0 })
}

fn client_handshake(mut stream: TcpStream, key: &ShippingKey) -> Result<Link, LinkError> {
    let deadline = Instant::now() + HANDSHAKE_DEADLINE;
    let mut hello = [0u8; 40];
    read_before(&mut stream, &mut hello, deadline).map_err(|e| io_err("handshake", e))?;
    if &hello[..8] != GREETING {
        return Err(protocol("the peer is not a mailstore shipping server").into());
    }
    let server_nonce = &hello[8..];
    let client_nonce = nonce();
    let proof = key.mac(&[b"client", server_nonce, &client_nonce]);
    let mut answer = client_nonce.to_vec();
    answer.extend_from_slice(proof.as_bytes());
    write_before(&mut stream, &answer, deadline).map_err(|e| io_err("handshake", e))?;
    let mut server_proof = [0u8; 32];
    read_before(&mut stream, &mut server_proof, deadline).map_err(|e| io_err("handshake", e))?;
    if server_proof == [0u8; 32] {
        return Err(authentication("authentication refused by the server (wrong key?)"));
    }
    let expected = key.mac(&[b"server", &client_nonce, server_nonce]);
    if !constant_time_eq(expected.as_bytes(), &server_proof) {
        return Err(authentication("the server failed authentication (wrong key?)"));
    }
    let session = ShippingKey(*key.mac(&[b"session", server_nonce, &client_nonce]).as_bytes());
    Ok(Link { stream, session, out_dir: b'c', sent: 0, received: 0 })
}

/// A [`LogSource`] reached over TCP. Reconnects on any transport error and repeats the request (for up to
/// [`TcpSource::retry_for`]), so a cut connection costs time, never log.
pub struct TcpSource {
    addr: String,
    key: ShippingKey,
    link: Mutex<Option<Link>>,
    retry_for: Duration,
    reconnects: AtomicU64,
}

impl TcpSource {
    /// A source at `addr` (`host:port`), authenticated with `key`. Connects lazily.
    pub fn new(addr: impl Into<String>, key: ShippingKey) -> Self {
        TcpSource {
            addr: addr.into(),
            key,
            link: Mutex::new(None),
            retry_for: Duration::from_secs(2),
            reconnects: AtomicU64::new(0),
        }
    }

    /// How long one call keeps reconnecting before it reports the source unreachable (default 2 s).
    pub fn retry_for(mut self, retry_for: Duration) -> Self {
        self.retry_for = retry_for;
        self
    }

    /// Connections made so far, the first included.
    pub fn connects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Drops the current connection (the next call reconnects): for tests of cut connections.
    pub fn disconnect(&self) {
        if let Some(link) = self.link.lock().take() {
            let _ = link.stream.shutdown(Shutdown::Both);
        }
    }

    fn connect(&self) -> Result<Link, LinkError> {
        let addrs: Vec<SocketAddr> =
            self.addr.to_socket_addrs().map_err(|e| io_err(&format!("resolve {}", self.addr), e))?.collect();
        let addr = addrs.first().ok_or_else(|| transport(format!("{} resolves to nothing", self.addr)))?;
        let stream = TcpStream::connect_timeout(addr, Duration::from_secs(2))
            .map_err(|e| io_err(&format!("connect {addr}"), e))?;
        let _ = stream.set_nodelay(true);
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        let link = client_handshake(stream, &self.key)?;
        let _ = link.stream.set_read_timeout(Some(Duration::from_secs(60)));
        Ok(link)
    }

    fn call(&self, request: &Request) -> Result<Response> {
        let payload = codec::encode(request)?;
        let deadline = Instant::now() + self.retry_for;
        let mut pause = Duration::from_millis(20);
        loop {
            let result = (|| {
                let mut guard = self.link.lock();
                if guard.is_none() {
                    *guard = Some(self.connect()?);
                }
                let link = guard.as_mut().ok_or_else(|| transport("no connection"))?;
                let outcome = link.send(&payload).and_then(|()| link.receive());
                if outcome.is_err() {
                    *guard = None;
                }
                outcome
            })();
            match result {
                Ok(bytes) => {
                    return codec::decode::<Response>(&bytes)
                        .map_err(|e| protocol(format!("undecodable response: {e}")));
                }
                // Another connection would fail authentication again.
                Err(LinkError::Authentication(e)) => return Err(e),
                Err(LinkError::Transport(e)) => {
                    if Instant::now() >= deadline {
                        return Err(e);
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        }
    }
}

fn unexpected(r: Response) -> Error {
    match r {
        Response::Refused(refusal) => refusal.into_error(),
        other => protocol(format!("unexpected response {:?}", std::mem::discriminant(&other))),
    }
}

impl LogSource for TcpSource {
    fn hello(&self, hello: Hello) -> Result<SourceInfo> {
        match self.call(&Request::Hello(hello))? {
            Response::Info(i) => Ok(i),
            r => Err(unexpected(r)),
        }
    }

    fn read(&self, request: ReadRequest) -> Result<Chunk> {
        match self.call(&Request::Read(request))? {
            Response::Chunk(c) => Ok(c),
            r => Err(unexpected(r)),
        }
    }

    fn headers(&self, from: u64) -> Result<Vec<Vec<u8>>> {
        match self.call(&Request::Headers(from))? {
            Response::Headers(h) => Ok(h),
            r => Err(unexpected(r)),
        }
    }

    fn snapshot(&self, request: SnapshotRequest) -> Result<SnapshotPart> {
        match self.call(&Request::Snapshot(request))? {
            Response::Snapshot(s) => Ok(s),
            r => Err(unexpected(r)),
        }
    }

    fn goodbye(&self, copy: CopyId) -> Result<()> {
        match self.call(&Request::Goodbye(copy))? {
            Response::Done => Ok(()),
            r => Err(unexpected(r)),
        }
    }
}
