//! LMTP (RFC 2033): LHLO, MAIL FROM, RCPT TO, DATA with one reply per recipient, RSET, NOOP, VRFY, QUIT.
//! Commands are parsed by `smtp-proto`; the DATA stream is unstuffed by its `DataReceiver`. Every delivery is
//! committed with full durability before its `250` is sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use mailstore::model::{Flags, FolderId, FolderRole, MailError, MailOp, MailOutput};
use smtp_proto::request::receiver::DataReceiver;
use smtp_proto::{Error as SmtpError, Request};

use crate::{Account, Server};

/// The longest command line accepted.
const MAX_LINE: usize = 4096;
/// The largest message accepted (the store's own limit on one message).
const MAX_MESSAGE: usize = mailstore::model::MAX_MESSAGE_SIZE;
/// Most recipients per transaction.
const MAX_RECIPIENTS: usize = 1000;
/// Most deliveries of one message committed at once (they share a log flush); a connection's memory for one
/// message is about this many times its size.
const MAX_IN_FLIGHT: usize = 4;
/// An idle connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

struct Transaction {
    from: String,
    /// The size MAIL FROM declared (RFC 1870 `SIZE=`; 0 when not declared).
    size: usize,
    recipients: Vec<Recipient>,
}

/// An accepted recipient: the mailbox and its Inbox, looked up at RCPT time.
struct Recipient {
    account: Account,
    inbox: FolderId,
}

/// Serves one LMTP connection until QUIT, an error or shutdown.
pub fn serve(server: &Server, stream: TcpStream) {
    if let Err(e) = session(server, stream)
        && !server.shutdown.load(std::sync::atomic::Ordering::SeqCst)
    {
        eprintln!("lmtp: connection ended: {e}");
    }
}

fn session(server: &Server, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut out = std::io::BufWriter::new(stream.try_clone()?);
    let mut input = BufReader::with_capacity(64 * 1024, stream);
    out.write_all(b"220 localhost LMTP mailstore ready\r\n")?;
    out.flush()?;
    let mut greeted = false;
    let mut tx: Option<Transaction> = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut input).take(MAX_LINE as u64).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with(b"\n") {
            // Over-long line: skip to its end and refuse it.
            if line.len() >= MAX_LINE {
                if !skip_line(&mut input)? {
                    return Ok(());
                }
                reply(&mut out, "500 5.5.2 line too long")?;
                continue;
            }
            return Ok(());
        }
        let request = Request::parse(&mut line.iter());
        match request {
            Ok(Request::Lhlo { .. }) => {
                greeted = true;
                tx = None;
                let caps = format!(
                    "250-localhost\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SIZE {MAX_MESSAGE}"
                );
                reply(&mut out, &caps)?;
            }
            Ok(Request::Ehlo { .. } | Request::Helo { .. }) => reply(&mut out, "500 5.5.1 this is LMTP: use LHLO")?,
            Ok(Request::Mail { from }) => {
                if !greeted {
                    reply(&mut out, "503 5.5.1 LHLO first")?;
                } else if tx.is_some() {
                    reply(&mut out, "503 5.5.1 nested MAIL command")?;
                } else if from.size > MAX_MESSAGE {
                    reply(&mut out, "552 5.3.4 message size exceeds the fixed maximum")?;
                } else {
                    let size = from.size;
                    tx = Some(Transaction { from: from.address.into_owned(), size, recipients: Vec::new() });
                    reply(&mut out, "250 2.1.0 sender OK")?;
                }
            }
            Ok(Request::Rcpt { to }) => match tx.as_mut() {
                None => reply(&mut out, "503 5.5.1 MAIL first")?,
                Some(t) if t.recipients.len() >= MAX_RECIPIENTS => reply(&mut out, "452 4.5.3 too many recipients")?,
                Some(t) => {
                    let address = to.address.to_string();
                    match server.account(&address) {
                        Ok(Some(account)) => match inbox_if_accepted(&account, t.size) {
                            Ok(Accepts::Yes(inbox)) => {
                                t.recipients.push(Recipient { account, inbox });
                                reply(&mut out, "250 2.1.5 recipient OK")?;
                            }
                            Ok(Accepts::Full) => reply(&mut out, &format!("552 5.2.2 <{address}> mailbox is full"))?,
                            Ok(Accepts::TooLarge(limit)) => reply(
                                &mut out,
                                &format!("552 5.3.4 <{address}> accepts messages of at most {limit} bytes"),
                            )?,
                            Err(e) => reply(&mut out, &format!("451 4.3.0 <{address}> {e}"))?,
                        },
                        Ok(None) => reply(&mut out, &format!("550 5.1.1 <{address}> no such user"))?,
                        Err(e) => reply(&mut out, &format!("451 4.3.0 <{address}> {e}"))?,
                    }
                }
            },
            Ok(Request::Data) => {
                let Some(t) = tx.take() else {
                    reply(&mut out, "503 5.5.1 MAIL first")?;
                    continue;
                };
                if t.recipients.is_empty() {
                    reply(&mut out, "503 5.5.1 no valid recipients")?;
                    continue;
                }
                reply(&mut out, "354 go ahead, end with <CRLF>.<CRLF>")?;
                let Some(message) = read_data(&mut input)? else {
                    for _ in &t.recipients {
                        out.write_all(b"552 5.3.4 message size exceeds the fixed maximum\r\n")?;
                    }
                    out.flush()?;
                    continue;
                };
                let mut raw = format!("Return-Path: <{}>\r\n", t.from).into_bytes();
                raw.extend_from_slice(&message);
                for line in deliver_all(&t.recipients, raw) {
                    out.write_all(line.as_bytes())?;
                    out.write_all(b"\r\n")?;
                }
                out.flush()?;
            }
            Ok(Request::Rset) => {
                tx = None;
                reply(&mut out, "250 2.0.0 OK")?;
            }
            Ok(Request::Noop { .. }) => reply(&mut out, "250 2.0.0 OK")?,
            Ok(Request::Vrfy { .. }) => reply(&mut out, "252 2.5.0 cannot verify, but will try delivery")?,
            Ok(Request::Quit) => {
                reply(&mut out, "221 2.0.0 bye")?;
                return Ok(());
            }
            Ok(other) => reply(&mut out, &format!("502 5.5.1 {} is not implemented", other.name()))?,
            Err(SmtpError::UnknownCommand) => reply(&mut out, "500 5.5.1 unknown command")?,
            Err(SmtpError::InvalidSenderAddress) => reply(&mut out, "501 5.1.7 bad sender address")?,
            Err(SmtpError::InvalidRecipientAddress) => reply(&mut out, "501 5.1.3 bad recipient address")?,
            Err(SmtpError::UnsupportedParameter { param }) => {
                reply(&mut out, &format!("555 5.5.4 unsupported parameter {param}"))?
            }
            Err(e) => reply(&mut out, &format!("501 5.5.2 syntax error ({e:?})"))?,
        }
    }
}

fn reply(out: &mut impl Write, line: &str) -> std::io::Result<()> {
    out.write_all(line.as_bytes())?;
    out.write_all(b"\r\n")?;
    out.flush()
}

/// Whether a mailbox takes a message at RCPT time.
enum Accepts {
    /// Yes, into this Inbox.
    Yes(FolderId),
    /// No: it is already above its prohibit-send-receive quota.
    Full,
    /// No: the size MAIL FROM declared is above the mailbox's largest message (its quota's `max_message_size`).
    TooLarge(u64),
}

/// Whether the mailbox takes a message of the declared `size` (0: not declared), and its Inbox.
fn inbox_if_accepted(account: &Account, size: usize) -> Result<Accepts, mailstore::Error> {
    account.engine.read(|s, txn| {
        let Some(mailbox) = s.mailbox(txn, &account.guid)? else {
            return Err(MailError::NoSuchMailbox { mailbox: account.guid }.into());
        };
        let quota = mailbox.quota_status();
        if size as u64 > quota.quota.max_message_size {
            return Ok(Accepts::TooLarge(quota.quota.max_message_size));
        }
        if quota.prohibit_send_receive {
            return Ok(Accepts::Full);
        }
        match s.folder_by_role(txn, &account.guid, FolderRole::Inbox)? {
            Some(f) => Ok(Accepts::Yes(f.id)),
            None => Err(MailError::NoWellKnownFolder { mailbox: account.guid, role: FolderRole::Inbox }.into()),
        }
    })
}

/// Reads and drops the rest of an over-long line in bounded pieces. `false` when the connection ended first.
fn skip_line(input: &mut BufReader<TcpStream>) -> std::io::Result<bool> {
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            return Ok(false);
        }
        match chunk.iter().position(|b| *b == b'\n') {
            Some(end) => {
                input.consume(end + 1);
                return Ok(true);
            }
            None => {
                let n = chunk.len();
                input.consume(n);
            }
        }
    }
}

/// Reads the DATA stream up to the lone dot, unstuffed. `None` when it exceeds [`MAX_MESSAGE`] (the rest is
/// read and dropped).
fn read_data(input: &mut BufReader<TcpStream>) -> std::io::Result<Option<Vec<u8>>> {
    let mut receiver = DataReceiver::new();
    let mut message = Vec::with_capacity(16 * 1024);
    // Prime the receiver with the CRLF that ended the DATA line, so a dot at the very start ends the data.
    receiver.ingest(&mut b"\r\n".iter(), &mut message);
    let mut too_big = false;
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed inside DATA"));
        }
        let mut iter = chunk.iter();
        let done = receiver.ingest(&mut iter, &mut message);
        let used = chunk.len() - iter.as_slice().len();
        input.consume(used);
        if message.len() > MAX_MESSAGE + 2 {
            too_big = true;
            message.truncate(2);
        }
        if done {
            break;
        }
    }
    if too_big {
        return Ok(None);
    }
    // Drop the priming CRLF.
    message.drain(..2.min(message.len()));
    Ok(Some(message))
}

/// Delivers `raw` to every recipient (concurrently, so deliveries to one database share a log flush) and
/// returns one reply line per recipient, in order. The message is parsed and hashed once and its bytes are
/// shared by every recipient's operation (`mailstore::Bytes`).
fn deliver_all(recipients: &[Recipient], raw: Vec<u8>) -> Vec<String> {
    let first = &recipients[0];
    let template = MailOp::append(first.account.guid, first.inbox, raw, Flags::empty(), Vec::new());
    let op_for = |r: &Recipient| {
        let mut op = template.clone();
        if let MailOp::Append { mailbox, folder, .. } = &mut op {
            (*mailbox, *folder) = (r.account.guid, r.inbox);
        }
        op
    };
    if recipients.len() == 1 {
        return vec![deliver(first, template)];
    }
    // At most `MAX_IN_FLIGHT` at once: each queued commit holds its own encoded record until it is written.
    let mut replies = Vec::with_capacity(recipients.len());
    for wave in recipients.chunks(MAX_IN_FLIGHT) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = wave.iter().map(|r| (r, scope.spawn(move || deliver(r, op_for(r))))).collect();
            replies.extend(handles.into_iter().map(|(r, h)| {
                h.join().unwrap_or_else(|_| format!("451 4.3.0 <{}> delivery failed", r.account.address))
            }));
        });
    }
    replies
}

fn deliver(recipient: &Recipient, op: MailOp) -> String {
    let account = &recipient.account;
    // `commit` returns once the record is fdatasynced (Durability::Full): only then is 250 sent.
    match account.engine.commit(op) {
        Ok(c) => match c.output {
            MailOutput::Appended { uid, .. } => format!("250 2.0.0 <{}> delivered as UID {uid}", account.address),
            _ => format!("250 2.0.0 <{}> delivered", account.address),
        },
        Err(mailstore::Error::Mail(MailError::QuotaExceeded { .. })) => {
            format!("552 5.2.2 <{}> mailbox is full", account.address)
        }
        Err(mailstore::Error::Mail(MailError::MessageTooLarge { .. })) => {
            format!("552 5.3.4 <{}> message too large for this mailbox", account.address)
        }
        Err(e) => format!("451 4.3.0 <{}> {e}", account.address),
    }
}
