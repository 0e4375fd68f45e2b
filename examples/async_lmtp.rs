//! An async LMTP front end (RFC 2033) on the store, in tokio: one task per connection, no thread per waiting
//! delivery, and a JMAP-style push task per mailbox fed by change subscriptions — with no state of its own
//! beyond the protocol's. `.ci/run` drives it with Python's `smtplib.LMTP` (`tests/clients/test_async_lmtp.py`).
//!
//! ```text
//! cargo run --release --example async_lmtp -- --store DIR [--listen 127.0.0.1:0] [--mailbox ADDRESS]...
//! ```
//!
//! It creates the store and the given mailboxes (in database `db1`) if they are missing, prints
//! `lmtp listening on ADDR` and `ready`, then a `push {...}` line (a JMAP `StateChange`) each time a mailbox's
//! state moves, and on SIGTERM or SIGINT stops accepting, closes the store and prints `closed cleanly`.
//!
//! The pattern: open and close the store in `spawn_blocking` (mount runs recovery, close a final checkpoint);
//! look recipients up inline (a read is a short LMDB snapshot); deliver with `Engine::deliver_async`, every
//! recipient of a message queued at once so that they share one group commit; wait for changes with
//! `Subscription::changed()`. Limits per connection, checked before anything is stored: command lines of at most
//! `MAX_LINE` bytes, `MAX_RECIPIENTS` recipients, messages of at most `MAX_MESSAGE_SIZE` (the rest of a larger
//! one is read and dropped, never held).

use std::sync::Arc;

use mailstore::engine::Scope;
use mailstore::model::{MAX_MESSAGE_SIZE, MailError, MailOutput, MailStore, MailboxKind};
use mailstore::{Error, Guid, Options, Store};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The longest command line accepted, CRLF included (RFC 5321 asks for at least 512).
const MAX_LINE: usize = 4096;
/// The most recipients of one message.
const MAX_RECIPIENTS: usize = 100;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let (mut root, mut listen, mut addresses) = (None, "127.0.0.1:0".to_owned(), Vec::new());
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--store" => root = Some(value()?),
            "--listen" => listen = value()?,
            "--mailbox" => addresses.push(value()?),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let root = root.ok_or("--store DIR is required")?;
    let store = tokio::task::spawn_blocking(move || open(&root, &addresses)).await??;
    let store = Arc::new(store);
    let mut pushers = tokio::task::JoinSet::new();
    for (address, guid) in mailboxes(&store)? {
        pushers.spawn(push(Arc::clone(&store), address, guid));
    }

    let listener = TcpListener::bind(&listen).await?;
    println!("lmtp listening on {}", listener.local_addr()?);
    println!("ready");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                sessions.spawn(session(stream, Arc::clone(&store)));
            }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // A session stopped in the middle of a delivery loses only its reply: the commit was queued and completes
    // before the close below, and the client, with no reply, retries later (LMTP's temporary failure).
    sessions.abort_all();
    while sessions.join_next().await.is_some() {}
    pushers.abort_all();
    while pushers.join_next().await.is_some() {}
    let store = Arc::into_inner(store).ok_or("a task still holds the store")?;
    tokio::task::spawn_blocking(move || store.close().map_err(|e| e.error().to_string())).await??;
    println!("closed cleanly");
    Ok(())
}

/// Opens (or creates) the store with database `db1` and the mailboxes named.
fn open(root: &str, addresses: &[String]) -> mailstore::Result<Store<MailStore>> {
    let store: Store<MailStore> = Store::open(root, Options::default())?;
    store.open_database("db1")?;
    for address in addresses {
        if store.locate_address(address)?.is_none() {
            store.create_mailbox("db1", address, address, MailboxKind::User)?;
        }
    }
    Ok(store)
}

/// Every mailbox of `db1`: address and GUID.
fn mailboxes(store: &Store<MailStore>) -> mailstore::Result<Vec<(String, Guid)>> {
    store.database("db1")?.read(|s, txn| Ok(s.mailboxes(txn)?.into_iter().map(|m| (m.address, m.guid)).collect()))
}

/// Pushes a JMAP `StateChange` each time the mailbox's state (its highest MODSEQ) moves; ends with the store.
/// Subscribed before the first read of the state, so no change falls between the two.
async fn push(store: Arc<Store<MailStore>>, address: String, guid: Guid) -> mailstore::Result<()> {
    let engine = store.database("db1")?;
    drop(store); // The engine handle is enough; the task is aborted before the store closes.
    let mut changes = engine.subscribe(Scope::Key(guid));
    let state = |engine: &mailstore::model::MailEngine| {
        engine.read(|s, txn| Ok(s.mailbox(txn, &guid)?.map_or(0, |m| m.highest_modseq)))
    };
    let mut last = state(&engine)?;
    while changes.changed().await.is_ok() {
        let now = state(&engine)?;
        if now != last {
            println!(r#"push {{"@type":"StateChange","changed":{{"{address}":{{"Email":"{now}"}}}}}}"#);
            last = now;
        }
    }
    Ok(())
}

/// One LMTP connection.
async fn session(stream: TcpStream, store: Arc<Store<MailStore>>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write.write_all(b"220 localhost LMTP mailstore ready\r\n").await?;
    let (mut greeted, mut sender, mut recipients) = (false, false, Vec::<(String, Guid)>::new());
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let n = (&mut read).take(MAX_LINE as u64).read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with(b"\n") {
            // Longer than any command: the connection is out of step with the protocol.
            write.write_all(b"500 5.5.2 line too long\r\n").await?;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        let upper = text.to_ascii_uppercase();
        let reply: String = if upper.starts_with("LHLO ") {
            (greeted, sender) = (true, false);
            recipients.clear();
            format!("250-localhost\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE {MAX_MESSAGE_SIZE}")
        } else if upper.starts_with("HELO") || upper.starts_with("EHLO") {
            "500 5.5.1 this is LMTP: say LHLO".into()
        } else if upper == "QUIT" {
            write.write_all(b"221 2.0.0 bye\r\n").await?;
            return Ok(());
        } else if upper == "NOOP" {
            "250 2.0.0 ok".into()
        } else if upper == "RSET" {
            sender = false;
            recipients.clear();
            "250 2.0.0 reset".into()
        } else if !greeted {
            "503 5.5.1 LHLO first".into()
        } else if upper.starts_with("MAIL FROM:") {
            sender = true;
            recipients.clear();
            "250 2.1.0 sender ok".into()
        } else if upper.starts_with("RCPT TO:") {
            match path(&text["RCPT TO:".len()..]) {
                _ if !sender => "503 5.5.1 MAIL FROM first".into(),
                _ if recipients.len() == MAX_RECIPIENTS => "452 4.5.3 too many recipients".into(),
                None => "501 5.1.3 bad recipient address syntax".into(),
                Some(address) => match store.locate_address(&address) {
                    Ok(Some(found)) => {
                        recipients.push((address, found.mailbox.guid));
                        "250 2.1.5 recipient ok".into()
                    }
                    Ok(None) => format!("550 5.1.1 <{address}>: no such mailbox"),
                    Err(e) => format!("451 4.3.0 {e}"),
                },
            }
        } else if upper == "DATA" {
            if recipients.is_empty() {
                "503 5.5.1 no valid recipients".into()
            } else {
                write.write_all(b"354 2.0.0 end data with <CRLF>.<CRLF>\r\n").await?;
                let message = read_data(&mut read).await?;
                let replies = deliver(&store, &recipients, message).await;
                (sender, recipients) = (false, Vec::new());
                replies.join("\r\n")
            }
        } else {
            "500 5.5.1 command not recognized".into()
        };
        // One write per reply (with TCP_NODELAY): a reply split in two waits out the client's delayed ACK.
        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}

/// The address of `<local@domain>` (with ESMTP parameters after it ignored).
fn path(rest: &str) -> Option<String> {
    let rest = rest.trim_start();
    let end = rest.find('>')?;
    let address = rest.strip_prefix('<')?[..end - 1].to_owned();
    (!address.is_empty()).then_some(address)
}

/// Reads a message up to its `.` line, dot-unstuffed: `Err` (its size so far) once it passes
/// `MAX_MESSAGE_SIZE`, the rest then read and dropped.
async fn read_data(read: &mut (impl AsyncBufRead + Unpin)) -> std::io::Result<Result<Vec<u8>, usize>> {
    let (mut message, mut size, mut line) = (Vec::new(), 0usize, Vec::new());
    loop {
        line.clear();
        if read.take(MAX_LINE as u64).read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(if size > MAX_MESSAGE_SIZE { Err(size) } else { Ok(message) });
        }
        // A line longer than `MAX_LINE` arrives in pieces: only a piece at a line's start is unstuffed.
        let at_start = message.last().is_none_or(|b| *b == b'\n');
        let bytes = if at_start && line.starts_with(b".") { &line[1..] } else { &line[..] };
        size += bytes.len();
        if size <= MAX_MESSAGE_SIZE {
            message.extend_from_slice(bytes);
        } else {
            message = Vec::new();
        }
    }
}

/// Delivers `message` to every recipient at once (one group commit for all) and gives one reply per
/// recipient, in order, as LMTP requires.
async fn deliver(
    store: &Store<MailStore>,
    recipients: &[(String, Guid)],
    message: Result<Vec<u8>, usize>,
) -> Vec<String> {
    let raw = match message {
        Ok(raw) => raw,
        Err(size) => {
            let reply = format!("552 5.3.4 message of {size} bytes exceeds {MAX_MESSAGE_SIZE}");
            return vec![reply; recipients.len()];
        }
    };
    let mut pending = Vec::with_capacity(recipients.len());
    for (_, guid) in recipients {
        // Queued now, all of them, before the first await.
        pending.push(match store.locate(guid) {
            Ok(Some(found)) => Ok(found.engine.deliver_async(*guid, None, raw.clone())),
            Ok(None) => Err(Error::Mail(MailError::NoSuchMailbox { mailbox: *guid })),
            Err(e) => Err(e),
        });
    }
    let mut replies = Vec::with_capacity(recipients.len());
    for ((address, _), delivery) in recipients.iter().zip(pending) {
        let answer = match delivery {
            Ok(future) => future.await.map(|c| c.output),
            Err(e) => Err(e),
        };
        replies.push(match answer {
            Ok(MailOutput::Appended { uid, .. }) => format!("250 2.0.0 <{address}> delivered as UID {uid}"),
            Ok(other) => format!("250 2.0.0 <{address}> {other:?}"),
            Err(Error::Mail(MailError::QuotaExceeded { .. })) => format!("552 5.2.2 <{address}> mailbox full"),
            Err(Error::Mail(MailError::MessageTooLarge { .. })) => format!("552 5.3.4 <{address}> message too big"),
            Err(e) => format!("451 4.3.0 <{address}> {e}"),
        });
    }
    replies
}
