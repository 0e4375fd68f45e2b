//! IMAP4rev1 sessions. Commands are framed by `imap-codec`'s `Fragmentizer` (which finds lines and literals)
//! and parsed by its `CommandCodec`; responses are written here.
//!
//! Mapping onto the store: an IMAP mailbox is a folder of the user's mailbox (`INBOX` is the Inbox folder, `/`
//! the hierarchy separator, the Recoverable Items subtree and the non-mail folders are not listed); UIDs,
//! UIDVALIDITY, UIDNEXT and MODSEQs are the store's own. A selected folder's message sequence numbers are kept
//! per session; changes made by other sessions are found in the store's change log (`changes_since`) and
//! reported as EXISTS / EXPUNGE (or VANISHED) / FETCH at the end of each command, on NOOP and during IDLE.

use std::collections::{BTreeSet, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use imap_codec::fragmentizer::{DecodeMessageError, FragmentInfo, Fragmentizer, LiteralAnnouncement};
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_codec::imap_types::command::{Command, CommandBody, FetchModifier, SelectParameter, StoreModifier};
use imap_codec::imap_types::core::LiteralMode;
use imap_codec::imap_types::extensions::enable::CapabilityEnable;
use imap_codec::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName, Part, Section};
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use imap_codec::imap_types::status::StatusDataItemName;
use imap_codec::{AuthenticateDataCodec, CommandCodec, IdleDoneCodec};
use mailstore::Timestamp;
use mailstore::engine::Scope;
use mailstore::model::Fai;
use mailstore::model::search::Window;
use mailstore::model::{
    Change, ChangeKind, Entity, FlagAction, Flags, FolderId, FolderInfo, FolderRole, ItemInfo, MailError, MailOp,
    MailOutput, ModSeq, Uid,
};

mod order;

use crate::mime::{self, SectionText};
use crate::search;
use crate::tls::Transport;
use crate::utf7;
use crate::{Account, Server};

const CAPABILITIES: &str = "IMAP4rev1 LITERAL+ SASL-IR ENABLE IDLE UIDPLUS MOVE UNSELECT CONDSTORE QRESYNC \
                            SPECIAL-USE SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT THREAD=REFERENCES AUTH=PLAIN";
/// The largest command (an APPEND literal included) accepted.
const MAX_COMMAND: u32 = 50 << 20;
/// Autologout after this long without a command (RFC 3501: at least 30 minutes).
const AUTOLOGOUT: Duration = Duration::from_secs(31 * 60);
/// How often IDLE looks for input (DONE) and at its mailbox's change subscription.
const IDLE_POLL: Duration = Duration::from_millis(25);

type IoResult<T> = std::io::Result<T>;

/// Serves one IMAP connection until LOGOUT, an error or shutdown.
pub fn serve(server: &Server, stream: TcpStream) {
    serve_on(server, Transport::Plain(stream));
}

/// Serves one IMAP connection in implicit TLS (the `--imaps` port).
pub fn serve_tls(server: &Server, stream: TcpStream) {
    let Some(config) = &server.tls else { return };
    let mut transport = Transport::Plain(stream);
    if transport.start_tls(config).is_ok() {
        serve_on(server, transport);
    }
}

fn serve_on(server: &Server, io: Transport) {
    let result = (|| -> IoResult<()> {
        io.tcp()?.set_read_timeout(Some(AUTOLOGOUT))?;
        let mut session = Session {
            server,
            io,
            out: Vec::with_capacity(64 * 1024),
            frag: Fragmentizer::new(MAX_COMMAND),
            account: None,
            selected: None,
            condstore: false,
            qresync: false,
        };
        session.run()
    })();
    if let Err(e) = result
        && !server.shutdown.load(Ordering::SeqCst)
        && !matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset)
    {
        eprintln!("imap: connection ended: {e}");
    }
}

struct Selected {
    folder: FolderId,
    read_only: bool,
    /// UIDs in sequence-number order (sequence number = index + 1).
    uids: Vec<Uid>,
    /// The mailbox MODSEQ this view reflects.
    modseq: ModSeq,
    /// MODSEQs of this session's own flag changes (already reported to the client).
    own: HashSet<ModSeq>,
}

struct Session<'a> {
    server: &'a Server,
    io: Transport,
    /// Responses not yet sent; `flush` sends them.
    out: Vec<u8>,
    frag: Fragmentizer,
    account: Option<Account>,
    selected: Option<Selected>,
    condstore: bool,
    qresync: bool,
}

/// A folder as IMAP names it.
struct View {
    info: FolderInfo,
    path: String,
    has_children: bool,
}

/// A failed command: the tagged response's status and text.
enum Fail {
    No(String),
    Bad(String),
    Io(std::io::Error),
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Self {
        Fail::Io(e)
    }
}

impl From<mailstore::Error> for Fail {
    fn from(e: mailstore::Error) -> Self {
        let code = match &e {
            mailstore::Error::Mail(refusal) => response_code(refusal),
            mailstore::Error::InvalidArgument(_) => "[CANNOT] ",
            _ => "[SERVERBUG] ",
        };
        Fail::No(format!("{code}{}", one_line(&e.to_string())))
    }
}

/// The IMAP response code (RFC 5530) of a refusal by the mailbox model.
fn response_code(refusal: &MailError) -> &'static str {
    match refusal {
        MailError::QuotaExceeded { .. } => "[OVERQUOTA] ",
        MailError::MessageTooLarge { .. } | MailError::ItemTooLarge { .. } => "[TOOBIG] ",
        MailError::NoSuchMailbox { .. }
        | MailError::MailboxDeleted { .. }
        | MailError::NoSuchFolder { .. }
        | MailError::NoSuchFolderPath { .. }
        | MailError::NoWellKnownFolder { .. }
        | MailError::NoSuchItem { .. }
        | MailError::NoSuchSubmission { .. } => "[NONEXISTENT] ",
        MailError::MailboxExists { .. } | MailError::AddressTaken { .. } | MailError::FolderExists { .. } => {
            "[ALREADYEXISTS] "
        }
        MailError::UidsExhausted { .. } | MailError::TooManyUids { .. } => "[LIMIT] ",
        // Folder rules, Recoverable Items, holds and malformed input: it can never succeed as asked.
        _ => "[CANNOT] ",
    }
}

type CmdResult = Result<String, Fail>;

/// The charsets SEARCH, SORT and THREAD accept: the store compares UTF-8.
fn charset_supported(charset: &imap_codec::imap_types::core::Charset<'_>) -> bool {
    let name = match charset {
        imap_codec::imap_types::core::Charset::Atom(a) => a.as_ref().to_ascii_uppercase(),
        imap_codec::imap_types::core::Charset::Quoted(q) => q.as_ref().to_ascii_uppercase(),
    };
    name == "UTF-8" || name == "US-ASCII"
}

fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn no<T>(text: impl Into<String>) -> Result<T, Fail> {
    Err(Fail::No(text.into()))
}

fn bad<T>(text: impl Into<String>) -> Result<T, Fail> {
    Err(Fail::Bad(text.into()))
}

enum Flow {
    Continue,
    Logout,
}

impl Session<'_> {
    fn run(&mut self) -> IoResult<()> {
        let greeting = format!("* OK [CAPABILITY {}] mailstore IMAP ready\r\n", self.capabilities());
        self.out.extend_from_slice(greeting.as_bytes());
        self.flush()?;
        loop {
            if !self.next_message()? {
                return Ok(());
            }
            let decoded = match self.frag.decode_message(&CommandCodec::default()) {
                Ok(command) => Ok(command.into_static()),
                Err(e) => {
                    let tag = self.frag.decode_tag().map(|t| t.as_ref().to_owned());
                    Err((tag, decode_error_text(&e)))
                }
            };
            match decoded {
                Ok(command) => {
                    if let Flow::Logout = self.handle(command)? {
                        self.flush()?;
                        return Ok(());
                    }
                }
                Err((tag, text)) => {
                    let tag = tag.unwrap_or_else(|| "*".into());
                    self.out.extend_from_slice(format!("{tag} BAD {text}\r\n").as_bytes());
                }
            }
            self.flush()?;
            if self.server.shutdown.load(Ordering::SeqCst) {
                self.out.extend_from_slice(b"* BYE server shutting down\r\n");
                self.flush()?;
                return Ok(());
            }
        }
    }

    /// Reads until the fragmentizer holds a complete message, answering synchronizing literals. False at EOF.
    fn next_message(&mut self) -> IoResult<bool> {
        loop {
            match self.frag.progress() {
                None => {
                    if !self.read_some()? {
                        return Ok(false);
                    }
                    continue;
                }
                Some(FragmentInfo::Line {
                    announcement: Some(LiteralAnnouncement { mode: LiteralMode::Sync, length }),
                    ..
                }) => {
                    if length > MAX_COMMAND {
                        if let Some(tag) = self.frag.decode_tag() {
                            let line = format!("{} NO [TOOBIG] literal too large\r\n", tag.as_ref());
                            self.frag.skip_message();
                            self.out.extend_from_slice(line.as_bytes());
                            self.flush()?;
                        } else {
                            self.frag.poison_message();
                        }
                        continue;
                    }
                    self.out.extend_from_slice(b"+ Ready for literal data\r\n");
                    self.flush()?;
                }
                Some(_) => {}
            }
            if self.frag.is_message_complete() {
                return Ok(true);
            }
        }
    }

    /// Reads what the socket has; false at EOF.
    fn read_some(&mut self) -> IoResult<bool> {
        let mut buf = [0u8; 16 * 1024];
        let n = self.io.read(&mut buf)?;
        if n == 0 {
            return Ok(false);
        }
        self.frag.enqueue_bytes(&buf[..n]);
        Ok(true)
    }

    fn write(&mut self, bytes: &[u8]) -> IoResult<()> {
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    /// Sends the responses written so far.
    fn flush(&mut self) -> IoResult<()> {
        self.io.write_all(&self.out)?;
        self.out.clear();
        self.io.flush()
    }

    fn capabilities(&self) -> String {
        if self.server.tls.is_some() && !self.io.is_tls() {
            format!("{CAPABILITIES} STARTTLS")
        } else {
            CAPABILITIES.to_owned()
        }
    }

    fn handle(&mut self, command: Command<'static>) -> IoResult<Flow> {
        let tag = command.tag.as_ref().to_owned();
        let name = command.body.name();
        let mut flow = Flow::Continue;
        // Whether the command may be followed by EXPUNGE responses (RFC 3501 7.4.1: not after FETCH, STORE or
        // SEARCH by sequence number).
        let expunge_ok = !matches!(
            command.body,
            CommandBody::Fetch { uid: false, .. }
                | CommandBody::Store { uid: false, .. }
                | CommandBody::Search { uid: false, .. }
                | CommandBody::Sort { uid: false, .. }
                | CommandBody::Thread { uid: false, .. }
        );
        let result: CmdResult = match command.body {
            CommandBody::Capability => {
                self.write(format!("* CAPABILITY {}\r\n", self.capabilities()).as_bytes())?;
                Ok("CAPABILITY completed".into())
            }
            CommandBody::Noop | CommandBody::Check => Ok(format!("{name} completed")),
            CommandBody::Logout => {
                self.write(b"* BYE logging out\r\n")?;
                flow = Flow::Logout;
                Ok("LOGOUT completed".into())
            }
            CommandBody::Login { username, password } => {
                let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                self.login(&user, password.declassify().as_ref())
            }
            CommandBody::Authenticate { mechanism, initial_response } => {
                let initial = initial_response.map(|r| r.declassify().to_vec());
                self.authenticate(&tag, mechanism, initial)
            }
            CommandBody::Enable { capabilities } => self.authed().and_then(|_| {
                let mut enabled = Vec::new();
                for c in capabilities.as_ref() {
                    match c {
                        CapabilityEnable::CondStore => {
                            self.condstore = true;
                            enabled.push("CONDSTORE");
                        }
                        other if other.to_string().eq_ignore_ascii_case("QRESYNC") => {
                            self.condstore = true;
                            self.qresync = true;
                            enabled.push("QRESYNC");
                        }
                        _ => {}
                    }
                }
                self.write(format!("* ENABLED {}\r\n", enabled.join(" ")).trim_end().as_bytes())?;
                self.write(b"\r\n")?;
                Ok("ENABLE completed".into())
            }),
            CommandBody::Select { mailbox, parameters } => self.select(&mailbox, false, &parameters),
            CommandBody::Examine { mailbox, parameters } => self.select(&mailbox, true, &parameters),
            CommandBody::Unselect => match self.selected() {
                Ok(_) => {
                    self.selected = None;
                    Ok("UNSELECT completed".into())
                }
                Err(e) => Err(e),
            },
            CommandBody::Close => self.close(),
            CommandBody::Create { mailbox } => self.create(&mailbox_name(&mailbox)),
            CommandBody::Delete { mailbox } => self.delete(&mailbox_name(&mailbox)),
            CommandBody::Rename { from, to } => self.rename(&mailbox_name(&from), &mailbox_name(&to)),
            CommandBody::Subscribe { mailbox } => self.subscribe(&mailbox_name(&mailbox), true),
            CommandBody::Unsubscribe { mailbox } => self.subscribe(&mailbox_name(&mailbox), false),
            CommandBody::List { reference, mailbox_wildcard } => self.list(&reference, &mailbox_wildcard, false),
            CommandBody::Lsub { reference, mailbox_wildcard } => self.list(&reference, &mailbox_wildcard, true),
            CommandBody::Status { mailbox, item_names } => self.status(&mailbox_name(&mailbox), &item_names),
            CommandBody::Append { mailbox, flags, date, message } => {
                let bytes = match &message {
                    imap_codec::imap_types::extensions::binary::LiteralOrLiteral8::Literal(l) => l.data().to_vec(),
                    imap_codec::imap_types::extensions::binary::LiteralOrLiteral8::Literal8(l) => l.data.to_vec(),
                };
                let micros = date.map(|d| d.as_ref().timestamp_micros().max(0) as u64);
                self.append(&mailbox_name(&mailbox), &flags, micros, bytes)
            }
            CommandBody::Expunge => self.expunge(None),
            CommandBody::ExpungeUid { sequence_set } => self.expunge(Some(&sequence_set)),
            CommandBody::Search { charset, criteria, uid } => {
                if charset.as_ref().is_none_or(charset_supported) {
                    self.search(criteria.as_ref(), uid)
                } else {
                    no("[BADCHARSET (UTF-8 US-ASCII)] unsupported charset")
                }
            }
            CommandBody::Sort { sort_criteria, charset, search_criteria, uid } => {
                if charset_supported(&charset) {
                    self.sort(sort_criteria.as_ref(), search_criteria.as_ref(), uid)
                } else {
                    no("[BADCHARSET (UTF-8 US-ASCII)] unsupported charset")
                }
            }
            CommandBody::Thread { algorithm, charset, search_criteria, uid } => {
                if charset_supported(&charset) {
                    self.thread(&algorithm, search_criteria.as_ref(), uid)
                } else {
                    no("[BADCHARSET (UTF-8 US-ASCII)] unsupported charset")
                }
            }
            CommandBody::Fetch { sequence_set, macro_or_item_names, uid, modifiers } => {
                self.fetch(&sequence_set, macro_or_item_names, uid, &modifiers)
            }
            CommandBody::Store { sequence_set, kind, response, flags, uid, modifiers } => {
                self.store(&sequence_set, &kind, &response, &flags, uid, &modifiers)
            }
            CommandBody::Copy { sequence_set, mailbox, uid } => {
                self.copy(&sequence_set, &mailbox_name(&mailbox), uid, false)
            }
            CommandBody::Move { sequence_set, mailbox, uid } => {
                self.copy(&sequence_set, &mailbox_name(&mailbox), uid, true)
            }
            CommandBody::Idle => self.idle(&tag),
            CommandBody::StartTLS => {
                return self.start_tls(&tag);
            }
            other => bad(format!("{} is not supported", other.name())),
        };
        let line = match result {
            Ok(text) => {
                // Report what other sessions changed before completing the command.
                if let Err(e) = self.sync(expunge_ok) {
                    eprintln!("imap: sync failed: {}", e.message());
                }
                format!("{tag} OK {text}\r\n")
            }
            Err(Fail::No(text)) => format!("{tag} NO {text}\r\n"),
            Err(Fail::Bad(text)) => format!("{tag} BAD {text}\r\n"),
            Err(Fail::Io(e)) => return Err(e),
        };
        self.write(line.as_bytes())?;
        Ok(flow)
    }

    /// STARTTLS: answers, switches the connection to TLS and forgets anything the client sent in clear after the
    /// command (RFC 3501 6.2.1; no command injection across the switch).
    fn start_tls(&mut self, tag: &str) -> IoResult<Flow> {
        let Some(config) = self.server.tls.clone() else {
            self.write(format!("{tag} BAD STARTTLS is not available\r\n").as_bytes())?;
            return Ok(Flow::Continue);
        };
        if self.io.is_tls() || self.account.is_some() {
            self.write(format!("{tag} BAD TLS is already active or the session is authenticated\r\n").as_bytes())?;
            return Ok(Flow::Continue);
        }
        self.write(format!("{tag} OK begin TLS negotiation now\r\n").as_bytes())?;
        self.flush()?;
        self.frag = Fragmentizer::new(MAX_COMMAND);
        self.io.start_tls(&config)?;
        Ok(Flow::Continue)
    }

    fn authed(&self) -> Result<Account, Fail> {
        self.account.clone().ok_or(Fail::Bad("log in first".into()))
    }

    fn selected(&self) -> Result<&Selected, Fail> {
        self.authed()?;
        self.selected.as_ref().ok_or(Fail::Bad("select a mailbox first".into()))
    }

    // ---- authentication ----

    fn login(&mut self, user: &str, password: &[u8]) -> CmdResult {
        if self.account.is_some() {
            return bad("already logged in");
        }
        let ok = self.server.users.get(user).is_some_and(|u| u.verify(password));
        if !ok {
            // Same answer for unknown users and wrong passwords.
            std::thread::sleep(Duration::from_millis(200));
            return no("[AUTHENTICATIONFAILED] invalid credentials");
        }
        match self.server.account(user)? {
            Some(account) => {
                self.account = Some(account);
                Ok(format!("[CAPABILITY {}] logged in", self.capabilities()))
            }
            None => no("[UNAVAILABLE] the user's mailbox is not mounted"),
        }
    }

    fn authenticate(&mut self, tag: &str, mechanism: AuthMechanism<'_>, initial: Option<Vec<u8>>) -> CmdResult {
        if self.account.is_some() {
            return bad("already logged in");
        }
        if mechanism != AuthMechanism::Plain {
            return no("[CANNOT] only AUTHENTICATE PLAIN is supported");
        }
        let data = match initial {
            Some(d) => d,
            None => {
                self.write(b"+ \r\n")?;
                self.flush()?;
                if !self.next_message()? {
                    return Err(Fail::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                match self.frag.decode_message(&AuthenticateDataCodec::default()) {
                    Ok(AuthenticateData::Continue(d)) => d.declassify().to_vec(),
                    Ok(_) => return bad("authentication canceled"),
                    Err(_) => return bad(format!("{tag}: malformed SASL response")),
                }
            }
        };
        let mut fields = data.split(|&b| b == 0);
        let (Some(authz), Some(authc), Some(password), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return bad("malformed PLAIN response");
        };
        let authc = String::from_utf8_lossy(authc).into_owned();
        if !authz.is_empty() && authz != authc.as_bytes() {
            return no("[AUTHORIZATIONFAILED] proxy authorization is not supported");
        }
        self.login(&authc, password)
    }

    // ---- folders ----

    fn views(&self, account: &Account) -> Result<Vec<View>, Fail> {
        let folders = account.engine.read(|s, txn| s.folders(txn, &account.guid))?;
        Ok(folder_views(folders))
    }

    fn find(&self, account: &Account, name: &str) -> Result<View, Fail> {
        let name = normalize(name);
        self.views(account)?
            .into_iter()
            .find(|v| v.path.eq_ignore_ascii_case(&name))
            .ok_or_else(|| Fail::No(format!("[NONEXISTENT] no mailbox {name:?}")))
    }

    fn root(&self, account: &Account) -> Result<FolderId, Fail> {
        match account.engine.read(|s, txn| s.folder_by_role(txn, &account.guid, FolderRole::Root))? {
            Some(f) => Ok(f.id),
            None => no("[SERVERBUG] the mailbox has no root folder"),
        }
    }

    /// The id of the folder at `parent_path` ("" for the top of the tree).
    fn parent_id(&self, account: &Account, parent_path: &str) -> Result<FolderId, Fail> {
        if parent_path.is_empty() { self.root(account) } else { Ok(self.find(account, parent_path)?.info.id) }
    }

    fn create(&mut self, name: &str) -> CmdResult {
        let account = self.authed()?;
        let name = normalize(name);
        if name.is_empty() {
            return bad("empty mailbox name");
        }
        let views = self.views(&account)?;
        if views.iter().any(|v| v.path.eq_ignore_ascii_case(&name)) {
            return no("[ALREADYEXISTS] mailbox exists");
        }
        // Create missing superiors too (RFC 3501 6.3.3).
        let mut parent = self.root(&account)?;
        let mut path = String::new();
        for segment in name.split('/') {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(segment);
            let existing = views.iter().find(|v| v.path.eq_ignore_ascii_case(&path));
            parent = match existing {
                Some(v) => v.info.id,
                None => match account.engine.commit(MailOp::create_folder(account.guid, parent, segment))?.output {
                    MailOutput::FolderCreated { id, .. } => id,
                    _ => return no("[SERVERBUG] unexpected result of a folder creation"),
                },
            };
        }
        self.change_subscriptions(&account, |set| {
            set.insert(name.clone());
        })?;
        Ok("CREATE completed".into())
    }

    fn delete(&mut self, name: &str) -> CmdResult {
        let account = self.authed()?;
        let view = self.find(&account, name)?;
        if view.info.role.is_some() {
            return no("[CANNOT] special folders cannot be deleted");
        }
        account.engine.commit(MailOp::DeleteFolder {
            mailbox: account.guid,
            folder: view.info.id,
            at: Timestamp::now(),
        })?;
        if self.selected.as_ref().is_some_and(|s| s.folder == view.info.id) {
            self.selected = None;
        }
        let path = view.path.clone();
        self.change_subscriptions(&account, |set| {
            set.remove(&path);
        })?;
        Ok("DELETE completed".into())
    }

    fn rename(&mut self, from: &str, to: &str) -> CmdResult {
        let account = self.authed()?;
        let view = self.find(&account, from)?;
        if view.info.role.is_some() {
            return no("[CANNOT] special folders cannot be renamed");
        }
        let to = normalize(to);
        if self.find(&account, &to).is_ok() {
            return no("[ALREADYEXISTS] target exists");
        }
        let (parent_path, leaf) = match to.rsplit_once('/') {
            Some((p, l)) => (p.to_owned(), l.to_owned()),
            None => (String::new(), to.clone()),
        };
        if !parent_path.is_empty() && self.find(&account, &parent_path).is_err() {
            self.create(&parent_path)?;
        }
        let parent = self.parent_id(&account, &parent_path)?;
        account.engine.commit(MailOp::RenameFolder {
            mailbox: account.guid,
            folder: view.info.id,
            parent,
            name: leaf,
        })?;
        let old = view.path.clone();
        self.change_subscriptions(&account, |set| {
            if set.remove(&old) {
                set.insert(to.clone());
            }
        })?;
        Ok("RENAME completed".into())
    }

    /// The user's subscriptions; a user who never subscribed or unsubscribed has every folder subscribed.
    fn subscriptions(&self, account: &Account, views: &[View]) -> BTreeSet<String> {
        match self.server.subscriptions.lock().get(&account.address) {
            Some(set) => set.clone(),
            None => views.iter().map(|v| v.path.clone()).collect(),
        }
    }

    fn change_subscriptions(&self, account: &Account, change: impl FnOnce(&mut BTreeSet<String>)) -> Result<(), Fail> {
        let explicit = self.server.subscriptions.lock().contains_key(&account.address);
        if !explicit {
            // Only explicit subscription lists are kept; the implicit one follows the folders.
            return Ok(());
        }
        if let Some(set) = self.server.subscriptions.lock().get_mut(&account.address) {
            change(set);
        }
        self.server.save_subscriptions().map_err(|e| Fail::No(format!("[SERVERBUG] saving subscriptions: {e}")))
    }

    fn subscribe(&mut self, name: &str, on: bool) -> CmdResult {
        let account = self.authed()?;
        let views = self.views(&account)?;
        let name = normalize(name);
        let path = match views.iter().find(|v| v.path.eq_ignore_ascii_case(&name)) {
            Some(v) => v.path.clone(),
            None if on => return no("[NONEXISTENT] no such mailbox"),
            None => name.clone(),
        };
        let current = self.subscriptions(&account, &views);
        {
            let mut subs = self.server.subscriptions.lock();
            let set = subs.entry(account.address.clone()).or_insert(current);
            if on {
                set.insert(path);
            } else {
                set.remove(&path);
            }
        }
        self.server.save_subscriptions().map_err(|e| Fail::No(format!("[SERVERBUG] saving subscriptions: {e}")))?;
        Ok(if on { "SUBSCRIBE completed".into() } else { "UNSUBSCRIBE completed".into() })
    }

    fn list(&mut self, reference: &Mailbox<'_>, pattern: &ListMailbox<'_>, lsub: bool) -> CmdResult {
        let account = self.authed()?;
        let pattern = match pattern {
            ListMailbox::Token(t) => String::from_utf8_lossy(t.as_ref()).into_owned(),
            ListMailbox::String(s) => String::from_utf8_lossy(s.as_ref()).into_owned(),
        };
        let pattern = utf7::decode(&pattern).unwrap_or(pattern);
        let reference = mailbox_name(reference);
        let verb = if lsub { "LSUB" } else { "LIST" };
        if pattern.is_empty() && !lsub {
            self.write(b"* LIST (\\Noselect) \"/\" \"\"\r\n")?;
            return Ok("LIST completed".into());
        }
        let full = format!("{reference}{pattern}");
        let views = self.views(&account)?;
        let subscribed = if lsub { Some(self.subscriptions(&account, &views)) } else { None };
        let mut out = Vec::new();
        for v in &views {
            if !wildcard(full.as_bytes(), v.path.as_bytes()) {
                continue;
            }
            if let Some(subs) = &subscribed
                && !subs.contains(&v.path)
            {
                continue;
            }
            let mut attrs = vec![if v.has_children { "\\HasChildren" } else { "\\HasNoChildren" }];
            if let Some(special) = v.info.role.and_then(FolderRole::special_use) {
                attrs.push(special);
            }
            out.extend_from_slice(format!("* {verb} ({}) \"/\" ", attrs.join(" ")).as_bytes());
            mime::string(&mut out, utf7::encode(&v.path).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.write(&out)?;
        Ok(format!("{verb} completed"))
    }

    fn status(&mut self, name: &str, items: &[StatusDataItemName]) -> CmdResult {
        let account = self.authed()?;
        let view = self.find(&account, name)?;
        let f = &view.info;
        let deleted = if items.iter().any(|i| matches!(i, StatusDataItemName::Deleted)) {
            let list =
                account.engine.read(|s, txn| s.items_by_uid(txn, &account.guid, f.id, 1, usize::MAX, Fai::Exclude))?;
            list.iter().filter(|i| i.flags.contains(Flags::DELETED)).count()
        } else {
            0
        };
        let mut parts = Vec::new();
        for item in items {
            parts.push(match item {
                StatusDataItemName::Messages => format!("MESSAGES {}", f.total),
                StatusDataItemName::Recent => "RECENT 0".into(),
                StatusDataItemName::UidNext => format!("UIDNEXT {}", f.uidnext),
                StatusDataItemName::UidValidity => format!("UIDVALIDITY {}", f.uidvalidity),
                StatusDataItemName::Unseen => format!("UNSEEN {}", f.unread),
                StatusDataItemName::Deleted => format!("DELETED {deleted}"),
                StatusDataItemName::DeletedStorage => "DELETED-STORAGE 0".into(),
                StatusDataItemName::HighestModSeq => format!("HIGHESTMODSEQ {}", f.highest_modseq),
            });
        }
        let mut out = b"* STATUS ".to_vec();
        mime::string(&mut out, utf7::encode(&view.path).as_bytes());
        out.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        self.write(&out)?;
        Ok("STATUS completed".into())
    }

    // ---- selected state ----

    fn select(&mut self, mailbox: &Mailbox<'_>, read_only: bool, params: &[SelectParameter]) -> CmdResult {
        let account = self.authed()?;
        self.selected = None;
        let view = self.find(&account, &mailbox_name(mailbox))?;
        let folder = view.info.id;
        let (items, mailbox_modseq, f) = account.engine.read(|s, txn| {
            let items = s.items_by_uid(txn, &account.guid, folder, 1, usize::MAX, Fai::Exclude)?;
            let m = s.mailbox(txn, &account.guid)?;
            let f = s.folder(txn, &account.guid, folder)?;
            Ok((items, m.map(|m| m.highest_modseq).unwrap_or(0), f))
        })?;
        let Some(f) = f else { return no("[NONEXISTENT] the mailbox disappeared") };
        let mut qresync = None;
        for p in params {
            match p {
                SelectParameter::CondStore => self.condstore = true,
                SelectParameter::QResync { uid_validity, mod_sequence_value, known_uids, .. } => {
                    if !self.qresync {
                        return bad("QRESYNC is not enabled");
                    }
                    qresync = Some((uid_validity.get(), mod_sequence_value.get(), known_uids.clone()));
                }
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n");
        out.extend_from_slice(if read_only {
            b"* OK [PERMANENTFLAGS ()] read-only\r\n".as_slice()
        } else {
            b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] flags permitted\r\n".as_slice()
        });
        out.extend_from_slice(format!("* {} EXISTS\r\n* 0 RECENT\r\n", items.len()).as_bytes());
        if let Some(pos) = items.iter().position(|i| !i.flags.contains(Flags::SEEN)) {
            out.extend_from_slice(format!("* OK [UNSEEN {}] first unseen\r\n", pos + 1).as_bytes());
        }
        out.extend_from_slice(format!("* OK [UIDVALIDITY {}] UIDs valid\r\n", f.uidvalidity).as_bytes());
        out.extend_from_slice(format!("* OK [UIDNEXT {}] predicted next UID\r\n", f.uidnext).as_bytes());
        out.extend_from_slice(format!("* OK [HIGHESTMODSEQ {}] highest\r\n", f.highest_modseq).as_bytes());
        let uids: Vec<Uid> = items.iter().map(|i| i.uid).collect();
        if let Some((validity, since, known)) = qresync
            && validity == f.uidvalidity
        {
            let vanished = account.engine.read(|s, txn| s.vanished_since(txn, &account.guid, folder, since))?;
            let largest = f.uidnext.saturating_sub(1);
            let mut gone: Vec<Uid> = match vanished {
                Some(list) => list,
                // History trimmed: every UID the client may know that is not here.
                None => {
                    let present: HashSet<Uid> = uids.iter().copied().collect();
                    (1..=largest).filter(|u| !present.contains(u)).collect()
                }
            };
            if let Some(known) = &known {
                gone.retain(|&u| contains(known, u, largest));
            }
            if !gone.is_empty() {
                out.extend_from_slice(format!("* VANISHED (EARLIER) {}\r\n", compress(&gone)).as_bytes());
            }
            for (i, item) in items.iter().enumerate() {
                if item.modseq > since {
                    out.extend_from_slice(
                        format!(
                            "* {} FETCH (UID {} FLAGS {} MODSEQ ({}))\r\n",
                            i + 1,
                            item.uid,
                            flags_list(item),
                            item.modseq
                        )
                        .as_bytes(),
                    );
                }
            }
        }
        self.write(&out)?;
        self.selected = Some(Selected { folder, read_only, uids, modseq: mailbox_modseq, own: HashSet::new() });
        Ok(if read_only { "[READ-ONLY] EXAMINE completed".into() } else { "[READ-WRITE] SELECT completed".into() })
    }

    fn close(&mut self) -> CmdResult {
        let account = self.authed()?;
        let sel = self.selected()?;
        if !sel.read_only {
            let op = MailOp::expunge(account.guid, sel.folder, None);
            account.engine.commit(op)?;
        }
        self.selected = None;
        Ok("CLOSE completed".into())
    }

    /// `(sequence number, UID)` of the messages a set names.
    fn targets(&self, set: &SequenceSet, uid: bool) -> Result<Vec<(u32, Uid)>, Fail> {
        let sel = self.selected()?;
        let mut out = Vec::new();
        if uid {
            let largest = sel.uids.last().copied().unwrap_or(0);
            for (i, &u) in sel.uids.iter().enumerate() {
                if contains(set, u, largest) {
                    out.push((i as u32 + 1, u));
                }
            }
        } else {
            let largest = sel.uids.len() as u32;
            for s in set.0.as_ref() {
                let too_big = match s {
                    Sequence::Single(SeqOrUid::Value(v)) => v.get() > largest,
                    Sequence::Range(SeqOrUid::Value(a), SeqOrUid::Value(b)) => a.get().min(b.get()) > largest,
                    _ => false,
                };
                if too_big {
                    return bad("message sequence number out of range");
                }
            }
            for (i, &u) in sel.uids.iter().enumerate() {
                if contains(set, i as u32 + 1, largest) {
                    out.push((i as u32 + 1, u));
                }
            }
        }
        Ok(out)
    }

    fn fetch(
        &mut self,
        set: &SequenceSet,
        names: MacroOrMessageDataItemNames<'_>,
        uid: bool,
        modifiers: &[FetchModifier],
    ) -> CmdResult {
        let account = self.authed()?;
        let targets = self.targets(set, uid)?;
        let names: Vec<MessageDataItemName<'_>> = match names {
            MacroOrMessageDataItemNames::Macro(m) => m.expand().into_iter().map(|n| n.into_static()).collect(),
            MacroOrMessageDataItemNames::MessageDataItemNames(list) => list,
        };
        let mut changed_since = None;
        let mut vanished = false;
        for m in modifiers {
            match m {
                FetchModifier::ChangedSince(v) => changed_since = Some(v.get()),
                FetchModifier::Vanished => vanished = true,
            }
        }
        if vanished && (!uid || !self.qresync || changed_since.is_none()) {
            return bad("VANISHED needs UID FETCH, QRESYNC enabled and CHANGEDSINCE");
        }
        if changed_since.is_some() || names.contains(&MessageDataItemName::ModSeq) {
            // Using a CONDSTORE feature enables CONDSTORE (RFC 7162 3.1).
            self.condstore = true;
        }
        if names
            .iter()
            .any(|n| matches!(n, MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. }))
        {
            return bad("BINARY is not supported");
        }
        let sel = self.selected()?;
        let (folder, read_only) = (sel.folder, sel.read_only);
        // Fetching a body without PEEK sets \Seen (RFC 3501 6.4.5).
        let sets_seen = !read_only
            && names.iter().any(|n| {
                matches!(
                    n,
                    MessageDataItemName::BodyExt { peek: false, .. }
                        | MessageDataItemName::Rfc822
                        | MessageDataItemName::Rfc822Text
                )
            });
        let mut seen_changed: HashSet<Uid> = HashSet::new();
        let unseen: Vec<Uid> = if sets_seen {
            let guid = account.guid;
            account.engine.read(|s, txn| {
                let mut v = Vec::new();
                for &(_, u) in &targets {
                    if s.item_by_uid(txn, &guid, folder, u)?.is_some_and(|i| !i.flags.contains(Flags::SEEN)) {
                        v.push(u);
                    }
                }
                Ok(v)
            })?
        } else {
            Vec::new()
        };
        if !unseen.is_empty() {
            let uids = unseen;
            let op = MailOp::store_flags(account.guid, folder, uids, FlagAction::Add, Flags::SEEN);
            if let MailOutput::FlagsStored { modseq, updated, .. } = account.engine.commit(op)?.output {
                if let (Some(m), Some(sel)) = (modseq, self.selected.as_mut()) {
                    sel.own.insert(m);
                }
                seen_changed = updated.into_iter().map(|u| u.0).collect();
            }
        }
        let mut out = Vec::new();
        if let (true, Some(since)) = (vanished, changed_since) {
            let gone = account.engine.read(|s, txn| s.vanished_since(txn, &account.guid, folder, since))?;
            let largest = self.selected()?.uids.last().copied().unwrap_or(0).max(1);
            let gone: Vec<Uid> = gone.unwrap_or_default().into_iter().filter(|&u| contains(set, u, largest)).collect();
            if !gone.is_empty() {
                out.extend_from_slice(format!("* VANISHED (EARLIER) {}\r\n", compress(&gone)).as_bytes());
            }
        }
        let with_modseq = self.condstore && (changed_since.is_some() || names.contains(&MessageDataItemName::ModSeq));
        let guid = account.guid;
        account.engine.read(|s, txn| {
            for &(seq, u) in &targets {
                let Some(item) = s.item_by_uid(txn, &guid, folder, u)? else { continue };
                if changed_since.is_some_and(|c| item.modseq <= c) {
                    continue;
                }
                let mut raw: Option<Vec<u8>> = None;
                let load_raw = |raw: &mut Option<Vec<u8>>| -> mailstore::Result<Vec<u8>> {
                    if raw.is_none() {
                        *raw = Some(s.raw(txn, &guid, item.id)?.unwrap_or_default());
                    }
                    Ok(raw.clone().unwrap_or_default())
                };
                out.extend_from_slice(format!("* {seq} FETCH (").as_bytes());
                let mut first = true;
                let mut sep = |out: &mut Vec<u8>| {
                    if !first {
                        out.push(b' ');
                    }
                    first = false;
                };
                if uid && !names.contains(&MessageDataItemName::Uid) {
                    sep(&mut out);
                    out.extend_from_slice(format!("UID {}", item.uid).as_bytes());
                }
                for name in &names {
                    sep(&mut out);
                    match name {
                        MessageDataItemName::Uid => out.extend_from_slice(format!("UID {}", item.uid).as_bytes()),
                        MessageDataItemName::Flags => {
                            out.extend_from_slice(format!("FLAGS {}", flags_list(&item)).as_bytes())
                        }
                        MessageDataItemName::InternalDate => out.extend_from_slice(
                            format!("INTERNALDATE \"{}\"", internal_date(item.received.as_micros())).as_bytes(),
                        ),
                        MessageDataItemName::Rfc822Size => {
                            out.extend_from_slice(format!("RFC822.SIZE {}", item.size).as_bytes())
                        }
                        MessageDataItemName::Envelope => {
                            out.extend_from_slice(b"ENVELOPE ");
                            mime::envelope(&mut out, &item.envelope);
                        }
                        MessageDataItemName::BodyStructure => {
                            out.extend_from_slice(b"BODYSTRUCTURE ");
                            mime::body_structure(&mut out, &load_raw(&mut raw)?, true);
                        }
                        MessageDataItemName::Body => {
                            out.extend_from_slice(b"BODY ");
                            mime::body_structure(&mut out, &load_raw(&mut raw)?, false);
                        }
                        MessageDataItemName::ModSeq => {
                            out.extend_from_slice(format!("MODSEQ ({})", item.modseq).as_bytes())
                        }
                        MessageDataItemName::Rfc822 => {
                            out.extend_from_slice(b"RFC822 ");
                            mime::literal(&mut out, &load_raw(&mut raw)?);
                        }
                        MessageDataItemName::Rfc822Header => {
                            out.extend_from_slice(b"RFC822.HEADER ");
                            let bytes = mime::section(&load_raw(&mut raw)?, &[], &SectionText::Header);
                            mime::literal(&mut out, &bytes);
                        }
                        MessageDataItemName::Rfc822Text => {
                            out.extend_from_slice(b"RFC822.TEXT ");
                            let bytes = mime::section(&load_raw(&mut raw)?, &[], &SectionText::Text);
                            mime::literal(&mut out, &bytes);
                        }
                        MessageDataItemName::BodyExt { section, partial, .. } => {
                            let (path, text, label) = section_spec(section.as_ref());
                            let bytes = mime::section(&load_raw(&mut raw)?, &path, &text);
                            match partial {
                                Some((origin, count)) => {
                                    let start = (*origin as usize).min(bytes.len());
                                    let end = start.saturating_add(count.get() as usize).min(bytes.len());
                                    out.extend_from_slice(format!("BODY[{label}]<{origin}> ").as_bytes());
                                    mime::literal(&mut out, &bytes[start..end]);
                                }
                                None => {
                                    out.extend_from_slice(format!("BODY[{label}] ").as_bytes());
                                    mime::literal(&mut out, &bytes);
                                }
                            }
                        }
                        MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. } => {}
                    }
                }
                if seen_changed.contains(&item.uid) && !names.contains(&MessageDataItemName::Flags) {
                    sep(&mut out);
                    out.extend_from_slice(format!("FLAGS {}", flags_list(&item)).as_bytes());
                }
                if with_modseq && !names.contains(&MessageDataItemName::ModSeq) {
                    sep(&mut out);
                    out.extend_from_slice(format!("MODSEQ ({})", item.modseq).as_bytes());
                }
                out.extend_from_slice(b")\r\n");
            }
            Ok(())
        })?;
        self.write(&out)?;
        Ok(format!("{}FETCH completed", if uid { "UID " } else { "" }))
    }

    fn store(
        &mut self,
        set: &SequenceSet,
        kind: &StoreType,
        response: &StoreResponse,
        flags: &[Flag<'_>],
        uid: bool,
        modifiers: &[StoreModifier],
    ) -> CmdResult {
        let account = self.authed()?;
        if self.selected()?.read_only {
            return no("[READ-ONLY] the mailbox is read-only");
        }
        let targets = self.targets(set, uid)?;
        let (system, keywords) = split_flags(flags)?;
        let unchanged_since = modifiers.iter().map(|StoreModifier::UnchangedSince(v)| *v).next();
        if unchanged_since.is_some() {
            self.condstore = true;
        }
        let folder = self.selected()?.folder;
        let action = match kind {
            StoreType::Add => FlagAction::Add,
            StoreType::Remove => FlagAction::Remove,
            StoreType::Replace => FlagAction::Replace,
        };
        let mut text = format!("{}STORE completed", if uid { "UID " } else { "" });
        if targets.is_empty() {
            return Ok(text);
        }
        let op = MailOp::StoreFlags {
            mailbox: account.guid,
            folder,
            uids: targets.iter().map(|t| t.1).collect(),
            action,
            flags: system,
            keywords,
            unchanged_since,
        };
        let MailOutput::FlagsStored { modseq, updated, modified } = account.engine.commit(op)?.output else {
            return no("[SERVERBUG] unexpected result of a flag change");
        };
        if let Some(m) = modseq
            && let Some(sel) = self.selected.as_mut()
        {
            sel.own.insert(m);
        }
        let silent = matches!(response, StoreResponse::Silent);
        let seq_of = |u: Uid| targets.iter().find(|t| t.1 == u).map(|t| t.0);
        let mut out = Vec::new();
        if !silent || self.condstore {
            let guid = account.guid;
            let changed: Vec<Uid> = updated.iter().map(|u| u.0).collect();
            let items: Vec<ItemInfo> = account.engine.read(|s, txn| {
                let mut v = Vec::new();
                for u in &changed {
                    if let Some(i) = s.item_by_uid(txn, &guid, folder, *u)? {
                        v.push(i);
                    }
                }
                Ok(v)
            })?;
            for item in items {
                let Some(seq) = seq_of(item.uid) else { continue };
                let mut parts = Vec::new();
                if uid {
                    parts.push(format!("UID {}", item.uid));
                }
                if !silent {
                    parts.push(format!("FLAGS {}", flags_list(&item)));
                }
                if self.condstore {
                    parts.push(format!("MODSEQ ({})", item.modseq));
                }
                out.extend_from_slice(format!("* {seq} FETCH ({})\r\n", parts.join(" ")).as_bytes());
            }
        }
        if !modified.is_empty() {
            let list: Vec<u32> =
                if uid { modified.clone() } else { modified.iter().filter_map(|&u| seq_of(u)).collect() };
            text = format!("[MODIFIED {}] conditional STORE failed for some messages", compress(&list));
        }
        self.write(&out)?;
        Ok(text)
    }

    fn copy(&mut self, set: &SequenceSet, target: &str, uid: bool, remove_source: bool) -> CmdResult {
        let account = self.authed()?;
        let verb = if remove_source { "MOVE" } else { "COPY" };
        if remove_source && self.selected()?.read_only {
            return no("[READ-ONLY] the mailbox is read-only");
        }
        let targets = self.targets(set, uid)?;
        let to = match self.find(&account, target) {
            Ok(v) => v.info.id,
            Err(_) => return no("[TRYCREATE] no such mailbox"),
        };
        let from = self.selected()?.folder;
        if targets.is_empty() {
            return Ok(format!("{verb} completed (nothing to do)"));
        }
        let uids: Vec<Uid> = targets.iter().map(|t| t.1).collect();
        let op = MailOp::CopyItems { mailbox: account.guid, from, uids, to, remove_source };
        let MailOutput::Copied { uidvalidity, mapping, .. } = account.engine.commit(op)?.output else {
            return no("[SERVERBUG] unexpected result of a copy");
        };
        if mapping.is_empty() {
            return Ok(format!("{verb} completed"));
        }
        let src: Vec<Uid> = mapping.iter().map(|m| m.0).collect();
        let dst: Vec<Uid> = mapping.iter().map(|m| m.1).collect();
        let code = format!("[COPYUID {uidvalidity} {} {}]", list(&src), list(&dst));
        if !remove_source {
            return Ok(format!("{code} COPY completed"));
        }
        self.write(format!("* OK {code} moved\r\n").as_bytes())?;
        self.report_expunged(&src)?;
        Ok("MOVE completed".into())
    }

    /// Removes `uids` from the view and reports them (EXPUNGE, or VANISHED under QRESYNC).
    fn report_expunged(&mut self, uids: &[Uid]) -> IoResult<()> {
        let qresync = self.qresync;
        let Some(sel) = self.selected.as_mut() else { return Ok(()) };
        let mut out = Vec::new();
        let mut gone = Vec::new();
        let mut sorted = uids.to_vec();
        sorted.sort_unstable();
        // Highest first, so each EXPUNGE's sequence number is still valid when the client applies it.
        for &u in sorted.iter().rev() {
            if let Ok(pos) = sel.uids.binary_search(&u) {
                sel.uids.remove(pos);
                gone.push(u);
                if !qresync {
                    out.extend_from_slice(format!("* {} EXPUNGE\r\n", pos + 1).as_bytes());
                }
            }
        }
        if qresync && !gone.is_empty() {
            gone.sort_unstable();
            out.extend_from_slice(format!("* VANISHED {}\r\n", compress(&gone)).as_bytes());
        }
        self.out.extend_from_slice(&out);
        Ok(())
    }

    fn expunge(&mut self, set: Option<&SequenceSet>) -> CmdResult {
        let account = self.authed()?;
        let sel = self.selected()?;
        if sel.read_only {
            return no("[READ-ONLY] the mailbox is read-only");
        }
        let folder = sel.folder;
        let uids = match set {
            Some(set) => Some(self.targets(set, true)?.into_iter().map(|t| t.1).collect::<Vec<_>>()),
            None => None,
        };
        if uids.as_ref().is_some_and(Vec::is_empty) {
            return Ok("EXPUNGE completed".into());
        }
        let op = MailOp::expunge(account.guid, folder, uids);
        let MailOutput::Expunged { uids, .. } = account.engine.commit(op)?.output else {
            return no("[SERVERBUG] unexpected result of an expunge");
        };
        self.report_expunged(&uids)?;
        Ok("EXPUNGE completed".into())
    }

    fn append(&mut self, name: &str, flags: &[Flag<'_>], date: Option<u64>, raw: Vec<u8>) -> CmdResult {
        let account = self.authed()?;
        let view = match self.find(&account, name) {
            Ok(v) => v,
            Err(_) => return no("[TRYCREATE] no such mailbox"),
        };
        let (system, keywords) = split_flags(flags)?;
        let mut op = MailOp::append(account.guid, view.info.id, raw, system, keywords);
        if let Some(date) = date {
            op = op.received_at(Timestamp::from_micros(date));
        }
        let MailOutput::Appended { uid, uidvalidity, .. } = account.engine.commit(op)?.output else {
            return no("[SERVERBUG] unexpected result of an append");
        };
        Ok(format!("[APPENDUID {uidvalidity} {uid}] APPEND completed"))
    }

    fn search(&mut self, criteria: &[SearchKey<'_>], uid: bool) -> CmdResult {
        let account = self.authed()?;
        let sel = self.selected()?;
        let (folder, uids) = (sel.folder, sel.uids.clone());
        let query = match search::query(criteria, &uids) {
            Ok(q) => q,
            Err(search::Unsupported::TooDeep) => return bad("search keys nest too deeply"),
            Err(search::Unsupported::Date) => return bad("a search date out of range"),
        };
        let guid = account.guid;
        let found = account.engine.read(|s, txn| s.search(txn, &guid, folder, &query, Window::all()));
        let found = match found {
            Err(mailstore::Error::Mail(MailError::InvalidQuery(e))) => return bad(format!("invalid search: {e}")),
            other => other?,
        };
        // The store answers for every message of the folder; the session's view (its sequence numbers) may not
        // have the newest yet.
        let mut hits = Vec::new();
        let mut max_modseq = 0;
        for hit in &found.hits {
            let Ok(pos) = uids.binary_search(&hit.uid) else { continue };
            hits.push(if uid { hit.uid } else { pos as u32 + 1 });
            max_modseq = max_modseq.max(hit.modseq);
        }
        let mut line = String::from("* SEARCH");
        for h in &hits {
            line.push_str(&format!(" {h}"));
        }
        if search::uses_modseq(criteria) && !hits.is_empty() {
            line.push_str(&format!(" (MODSEQ {max_modseq})"));
        }
        line.push_str("\r\n");
        self.write(line.as_bytes())?;
        Ok(format!("{}SEARCH completed", if uid { "UID " } else { "" }))
    }

    fn idle(&mut self, tag: &str) -> CmdResult {
        let account = self.authed()?;
        // Subscribed before the first look, so no change can fall between the look and the wait. The store
        // wakes it for every change to the mailbox: this server's commits, other servers' (a passive copy
        // replaying them), and an activation.
        let mut changes = account.engine.subscribe(Scope::Key(account.guid));
        self.write(b"+ idling\r\n")?;
        self.sync(true).map_err(|e| Fail::No(e.message()))?;
        self.flush()?;
        self.io.tcp()?.set_read_timeout(Some(IDLE_POLL))?;
        let result = loop {
            // Consume what has arrived; the IDLE command itself was the previous message.
            if self.frag.progress().is_some() {
                if self.frag.is_message_complete() {
                    break match self.frag.decode_message(&IdleDoneCodec::default()) {
                        Ok(_) => Ok("IDLE terminated".into()),
                        Err(_) => bad(format!("{tag}: expected DONE")),
                    };
                }
                continue;
            }
            match self.read_some() {
                Ok(true) => continue,
                Ok(false) => break Err(Fail::Io(std::io::ErrorKind::UnexpectedEof.into())),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => break Err(Fail::Io(e)),
            }
            if self.server.shutdown.load(Ordering::SeqCst) {
                break Err(Fail::Io(std::io::ErrorKind::ConnectionAborted.into()));
            }
            match changes.try_changed() {
                Ok(None) => {}
                Ok(Some(_)) => {
                    self.sync(true).map_err(|e| Fail::No(e.message()))?;
                    self.flush()?;
                }
                // Dismounted under us: the client reconnects to wherever the database is mounted now.
                Err(e) => break Err(Fail::No(e.to_string())),
            }
        };
        self.io.tcp()?.set_read_timeout(Some(AUTOLOGOUT))?;
        result
    }

    /// Reports what changed in the selected folder since the view was last brought up to date: EXPUNGE or
    /// VANISHED, EXISTS, and FETCH for flag changes (except this session's own, already reported).
    fn sync(&mut self, expunge_ok: bool) -> Result<(), Fail> {
        let (Some(account), Some(sel)) = (self.account.clone(), self.selected.as_ref()) else { return Ok(()) };
        if !expunge_ok {
            // Everything waits for a command after which expunges may be reported, keeping the view simple.
            return Ok(());
        }
        let (guid, folder, since) = (account.guid, sel.folder, sel.modseq);
        let (changes, floor, now) = account.engine.read(|s, txn| {
            let Some(m) = s.mailbox(txn, &guid)? else { return Ok((Vec::new(), 0, since)) };
            if m.highest_modseq <= since {
                return Ok((Vec::new(), m.history_floor, m.highest_modseq));
            }
            Ok((s.changes_since(txn, &guid, since)?, m.history_floor, m.highest_modseq))
        })?;
        if now <= since {
            return Ok(());
        }
        let Some(sel) = self.selected.as_mut() else { return Ok(()) };
        let mut destroyed: BTreeSet<Uid> = BTreeSet::new();
        let mut created: BTreeSet<Uid> = BTreeSet::new();
        let mut updated: BTreeSet<Uid> = BTreeSet::new();
        let full = since.saturating_add(1) < floor;
        if full {
            // The history was trimmed: compare with the folder itself.
            let items =
                account.engine.read(|s, txn| s.items_by_uid(txn, &guid, folder, 1, usize::MAX, Fai::Exclude))?;
            let present: BTreeSet<Uid> = items.iter().map(|i| i.uid).collect();
            destroyed = sel.uids.iter().copied().filter(|u| !present.contains(u)).collect();
            let last = sel.uids.last().copied().unwrap_or(0);
            created = present.iter().copied().filter(|&u| u > last).collect();
            updated = items.iter().filter(|i| i.modseq > since).map(|i| i.uid).collect();
        } else {
            for Change { modseq, kind, entity } in changes {
                let Entity::Item { folder: f, uid, .. } = entity else { continue };
                if f != folder {
                    continue;
                }
                match kind {
                    ChangeKind::Created => {
                        created.insert(uid);
                    }
                    ChangeKind::Destroyed => {
                        if !created.remove(&uid) {
                            destroyed.insert(uid);
                        }
                    }
                    ChangeKind::Updated if !sel.own.contains(&modseq) => {
                        updated.insert(uid);
                    }
                    ChangeKind::Updated => {}
                }
            }
        }
        sel.modseq = now;
        sel.own.clear();
        let gone: Vec<Uid> = destroyed.into_iter().collect();
        self.report_expunged(&gone)?;
        let Some(sel) = self.selected.as_mut() else { return Ok(()) };
        let last = sel.uids.last().copied().unwrap_or(0);
        let fresh: Vec<Uid> = created.into_iter().filter(|&u| u > last).collect();
        let mut out = Vec::new();
        if !fresh.is_empty() {
            sel.uids.extend(fresh.iter().copied());
            out.extend_from_slice(format!("* {} EXISTS\r\n", sel.uids.len()).as_bytes());
        }
        let report: Vec<(u32, Uid)> = updated
            .into_iter()
            .filter(|u| !fresh.contains(u))
            .filter_map(|u| sel.uids.binary_search(&u).ok().map(|p| (p as u32 + 1, u)))
            .collect();
        if !report.is_empty() {
            let items = account.engine.read(|s, txn| {
                let mut v = Vec::new();
                for &(seq, u) in &report {
                    if let Some(i) = s.item_by_uid(txn, &guid, folder, u)? {
                        v.push((seq, i));
                    }
                }
                Ok(v)
            })?;
            for (seq, item) in items {
                let modseq = if self.condstore { format!(" MODSEQ ({})", item.modseq) } else { String::new() };
                out.extend_from_slice(
                    format!("* {seq} FETCH (UID {} FLAGS {}{modseq})\r\n", item.uid, flags_list(&item)).as_bytes(),
                );
            }
        }
        self.write(&out)?;
        Ok(())
    }
}

impl Fail {
    fn message(&self) -> String {
        match self {
            Fail::No(t) | Fail::Bad(t) => t.clone(),
            Fail::Io(e) => e.to_string(),
        }
    }
}

fn decode_error_text<C: imap_codec::decode::Decoder>(e: &DecodeMessageError<'_, C>) -> String {
    match e {
        DecodeMessageError::DecodingFailure(_) => "syntax error in command".into(),
        DecodeMessageError::DecodingRemainder { .. } => "unexpected characters after the command".into(),
        DecodeMessageError::MessageTooLong { .. } => "[TOOBIG] command too long".into(),
        DecodeMessageError::MessagePoisoned { .. } => "command rejected".into(),
    }
}

/// The name of a mailbox argument, decoded from modified UTF-7 (`INBOX` in any case is the Inbox). A name that is
/// not valid modified UTF-7 is taken as it is.
fn mailbox_name(mailbox: &Mailbox<'_>) -> String {
    match mailbox {
        Mailbox::Inbox => "INBOX".into(),
        Mailbox::Other(o) => {
            let raw = String::from_utf8_lossy(o.as_ref());
            utf7::decode(&raw).unwrap_or_else(|| raw.into_owned())
        }
    }
}

/// Canonical form of a mailbox name: no trailing separator, `INBOX` upper-cased as the first component.
fn normalize(name: &str) -> String {
    let name = name.trim_end_matches('/');
    match name.split_once('/') {
        Some((first, rest)) if first.eq_ignore_ascii_case("INBOX") => format!("INBOX/{rest}"),
        _ if name.eq_ignore_ascii_case("INBOX") => "INBOX".into(),
        _ => name.to_owned(),
    }
}

/// The folders IMAP shows, with their IMAP names: not the root, not the hidden Recoverable Items subtree, not the
/// folders of other item classes (calendar, contacts, tasks, notes) or the Outbox.
fn folder_views(folders: Vec<FolderInfo>) -> Vec<View> {
    let by_id: std::collections::HashMap<FolderId, &FolderInfo> = folders.iter().map(|f| (f.id, f)).collect();
    let excluded = |f: &FolderInfo| {
        f.hidden
            || matches!(
                f.role,
                Some(
                    FolderRole::Root
                        | FolderRole::Calendar
                        | FolderRole::Contacts
                        | FolderRole::Tasks
                        | FolderRole::Notes
                        | FolderRole::Outbox
                )
            )
    };
    let mut views = Vec::new();
    'folders: for f in &folders {
        if excluded(f) {
            continue;
        }
        let mut names = Vec::new();
        let mut cur = f;
        // Walk up to the root; a folder under an excluded one is excluded too. The depth bound guards against a
        // cycle in damaged data.
        for _ in 0..256 {
            names.push(if cur.role == Some(FolderRole::Inbox) { "INBOX".to_owned() } else { cur.name.clone() });
            match cur.parent.and_then(|p| by_id.get(&p)) {
                Some(parent) if parent.role == Some(FolderRole::Root) => break,
                Some(parent) if excluded(parent) => continue 'folders,
                Some(parent) => cur = parent,
                None => continue 'folders,
            }
        }
        names.reverse();
        let has_children = folders.iter().any(|c| c.parent == Some(f.id) && !excluded(c));
        views.push(View { info: f.clone(), path: names.join("/"), has_children });
    }
    views.sort_by(|a, b| (a.path != "INBOX", &a.path).cmp(&(b.path != "INBOX", &b.path)));
    views
}

/// IMAP LIST matching: `*` matches anything, `%` anything but the separator; case-insensitive. Dynamic
/// programming over (pattern, name) positions, so hostile patterns (`*****…`) cost O(pattern × name).
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    // can[j]: the pattern prefix processed so far matches name[..j].
    let mut can = vec![false; name.len() + 1];
    can[0] = true;
    for &p in pattern {
        let mut next = vec![false; name.len() + 1];
        match p {
            b'*' | b'%' => {
                // Extend any match by zero or more characters (for `%`, none of them the separator).
                let mut reach = false;
                for j in 0..=name.len() {
                    if j > 0 && p == b'%' && name[j - 1] == b'/' {
                        reach = false;
                    }
                    reach |= can[j];
                    next[j] = reach;
                }
            }
            c => {
                for j in 1..=name.len() {
                    next[j] = can[j - 1] && name[j - 1].eq_ignore_ascii_case(&c);
                }
            }
        }
        can = next;
    }
    can[name.len()]
}

fn seq_value(v: &SeqOrUid, largest: u32) -> u32 {
    match v {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => largest,
    }
}

/// True when `n` is in `set` (`*` standing for `largest`).
fn contains(set: &SequenceSet, n: u32, largest: u32) -> bool {
    set.0.as_ref().iter().any(|s| match s {
        Sequence::Single(v) => seq_value(v, largest) == n,
        Sequence::Range(a, b) => {
            let (a, b) = (seq_value(a, largest), seq_value(b, largest));
            (a.min(b)..=a.max(b)).contains(&n)
        }
    })
}

/// A sorted list as a compact IMAP set (`1:3,7`).
fn compress(sorted: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end.saturating_add(1) {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}:{end}") });
        i += 1;
    }
    parts.join(",")
}

/// A list in the given order (COPYUID pairs source and destination UIDs by position).
fn list(values: &[u32]) -> String {
    values.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn flags_list(item: &ItemInfo) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for (flag, name) in [
        (Flags::SEEN, "\\Seen"),
        (Flags::ANSWERED, "\\Answered"),
        (Flags::FLAGGED, "\\Flagged"),
        (Flags::DELETED, "\\Deleted"),
        (Flags::DRAFT, "\\Draft"),
    ] {
        if item.flags.contains(flag) {
            parts.push(name);
        }
    }
    parts.extend(item.keywords.iter().map(String::as_str));
    format!("({})", parts.join(" "))
}

fn split_flags(flags: &[Flag<'_>]) -> Result<(Flags, Vec<String>), Fail> {
    let mut system = Flags::empty();
    let mut keywords = Vec::new();
    for f in flags {
        match f {
            Flag::Seen => system = system | Flags::SEEN,
            Flag::Answered => system = system | Flags::ANSWERED,
            Flag::Flagged => system = system | Flags::FLAGGED,
            Flag::Deleted => system = system | Flags::DELETED,
            Flag::Draft => system = system | Flags::DRAFT,
            Flag::Keyword(k) => keywords.push(k.as_ref().to_owned()),
            Flag::Extension(_) => return bad("unknown system flag"),
        }
    }
    Ok((system, keywords))
}

fn internal_date(micros: u64) -> String {
    chrono::DateTime::from_timestamp((micros / 1_000_000) as i64, 0)
        .map(|d| d.format("%d-%b-%Y %H:%M:%S +0000").to_string())
        .unwrap_or_else(|| "01-Jan-1970 00:00:00 +0000".into())
}

/// The path, text selector and response label of a BODY[section].
fn section_spec(section: Option<&Section<'_>>) -> (Vec<u32>, SectionText, String) {
    let path_of = |p: Option<&Part>| -> Vec<u32> {
        p.map(|p| p.0.as_ref().iter().map(|n| n.get()).collect()).unwrap_or_default()
    };
    let label_of = |path: &[u32], suffix: &str| -> String {
        let mut parts: Vec<String> = path.iter().map(u32::to_string).collect();
        if !suffix.is_empty() {
            parts.push(suffix.to_owned());
        }
        parts.join(".")
    };
    let names = |list: &[imap_codec::imap_types::core::AString<'_>]| -> Vec<String> {
        list.iter().map(|a| String::from_utf8_lossy(a.as_ref()).to_ascii_uppercase()).collect()
    };
    match section {
        None => (Vec::new(), SectionText::Content, String::new()),
        Some(Section::Part(p)) => {
            let path = path_of(Some(p));
            let label = label_of(&path, "");
            (path, SectionText::Content, label)
        }
        Some(Section::Header(p)) => {
            let path = path_of(p.as_ref());
            let label = label_of(&path, "HEADER");
            (path, SectionText::Header, label)
        }
        Some(Section::HeaderFields(p, list)) => {
            let path = path_of(p.as_ref());
            let n = names(list.as_ref());
            let label = label_of(&path, &format!("HEADER.FIELDS ({})", n.join(" ")));
            (path, SectionText::HeaderFields { names: n, not: false }, label)
        }
        Some(Section::HeaderFieldsNot(p, list)) => {
            let path = path_of(p.as_ref());
            let n = names(list.as_ref());
            let label = label_of(&path, &format!("HEADER.FIELDS.NOT ({})", n.join(" ")));
            (path, SectionText::HeaderFields { names: n, not: true }, label)
        }
        Some(Section::Text(p)) => {
            let path = path_of(p.as_ref());
            let label = label_of(&path, "TEXT");
            (path, SectionText::Text, label)
        }
        Some(Section::Mime(p)) => {
            let path = path_of(Some(p));
            let label = label_of(&path, "MIME");
            (path, SectionText::Mime, label)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_sets() {
        assert!(wildcard(b"*", b"INBOX/a/b"));
        assert!(wildcard(b"%", b"Sent Items"));
        assert!(!wildcard(b"%", b"INBOX/a"));
        assert!(wildcard(b"INBOX/%", b"INBOX/a"));
        assert!(wildcard(b"inbox", b"INBOX"));
        assert_eq!(compress(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        let set = SequenceSet::try_from("2:4,9:*").unwrap();
        assert!(contains(&set, 3, 10) && contains(&set, 10, 10) && !contains(&set, 5, 10));
        assert_eq!(normalize("inbox/x/"), "INBOX/x");
        assert!(wildcard(b"%/b", b"a/b") && !wildcard(b"%b", b"a/b") && wildcard(b"*b", b"a/b"));
        assert!(!wildcard(&[b'*'; 200].iter().copied().chain(*b"x").collect::<Vec<_>>(), &[b'a'; 300]));
    }
}
