//! Threading (RFC 5256 `THREAD`): the hits of a [`Query`] in a folder arranged into threads by
//! `ORDEREDSUBJECT` or `REFERENCES`, from the listing records alone.
//!
//! ```
//! use mailstore::model::search::{Query, ThreadAlgorithm, format_threads};
//! use mailstore::model::{Flags, FolderRole, MailEngine, MailOp, MailboxKind};
//! use mailstore::{Engine, Options};
//!
//! # fn main() -> mailstore::Result<()> {
//! let dir = tempfile::tempdir().expect("a temporary directory");
//! let db: MailEngine = Engine::mount(dir.path(), Options::default())?;
//! let op = MailOp::create_mailbox("erin@example.com", "Erin", MailboxKind::User);
//! let erin = op.mailbox().expect("a mailbox operation");
//! db.commit(op)?;
//! let inbox = db.read(|s, txn| s.folder_by_role(txn, &erin, FolderRole::Inbox))?.expect("an Inbox").id;
//! let messages: [&[u8]; 4] = [
//!     b"From: a@x\r\nSubject: plans\r\nMessage-ID: <1@x>\r\nDate: 1 Jan 2024 10:00:00 +0000\r\n\r\n.\r\n",
//!     b"From: b@x\r\nSubject: other\r\nMessage-ID: <2@x>\r\nDate: 1 Jan 2024 11:00:00 +0000\r\n\r\n.\r\n",
//!     b"From: c@x\r\nSubject: Re: plans\r\nReferences: <1@x>\r\nDate: 1 Jan 2024 12:00:00 +0000\r\n\r\n.\r\n",
//!     b"From: d@x\r\nSubject: Re: plans\r\nDate: 1 Jan 2024 13:00:00 +0000\r\n\r\n.\r\n",
//! ];
//! for raw in messages {
//!     db.commit(MailOp::append(erin, inbox, raw.to_vec(), Flags::empty(), vec![]))?;
//! }
//! let thread = |a| db.read(|s, txn| s.thread(txn, &erin, inbox, &Query::all(), a));
//! // REFERENCES: 3 answers 1; 4 has no reference but the same base subject and is a reply: a child of 1 too.
//! let r = thread(ThreadAlgorithm::References)?;
//! assert_eq!(format_threads(&r.threads), "(1 (3)(4))(2)");
//! // ORDEREDSUBJECT: grouped by base subject, the first message the parent of the others.
//! assert_eq!(format_threads(&thread(ThreadAlgorithm::OrderedSubject)?.threads), "(1 (3)(4))(2)");
//! assert_eq!(r.messages_read, 0);
//! db.dismount()
//! # }
//! ```
//!
//! # The algorithms
//!
//! Both follow RFC 5256 §3 step by step (the code names the steps). *Sent date* is the `Date:` header as an
//! instant, or the received time (INTERNALDATE) where it is absent or invalid (§2.2); ties go to the lower UID
//! (the sequence number order). *Base subject* is [`base_subject`](super::base_subject), and a message "is a reply
//! or forward" when extracting it removed a `Re:`/`Fw:`/`Fwd:` leader, a `(fwd)` trailer or a `[fwd: …]` wrapper.
//!
//! - **ORDEREDSUBJECT**: the hits sorted by base subject, then sent date; each run of one base subject is a
//!   thread whose first message is the parent of all the others (no grandchildren); threads sorted by the sent
//!   date of their first message.
//! - **REFERENCES**: (1) messages linked parent → child along their `References` (or, where it has no id, the
//!   first `In-Reply-To` id), dummies standing for ids no hit has, a duplicate `Message-ID` used only by its first
//!   (lowest UID) message, an existing parent kept in step 1.A and replaced in 1.B, no link that would make a loop;
//!   (2) the parentless messages gathered under the root; (3) dummies pruned (children promoted, but not to the
//!   root unless there is one); (4) the root's children sorted by sent date (a dummy by its first child's);
//!   (5) root threads of one base subject merged through the subject table; (6) every set of siblings sorted by
//!   sent date, the deepest first.
//!
//! A dummy can remain only at the top level ([`Thread::uid`] `None`), as RFC 5256's `((3)(5))`.
//!
//! # Cost and limits
//!
//! The query is evaluated as by [`MailStore::search`] (a message is read only where the query needs it); the
//! threading itself reads only listing records: Message-ID, In-Reply-To, References, subject, `Date:`. So it
//! sees what the stored envelope kept (`envelope` module): at most 100 References per message (the first and the
//! last 99: the nearest ancestors and the root), strings cut at 998 bytes. A message with more References may be
//! linked to its root's descendants a little differently from a threader reading the whole header. Message ids
//! compare exactly (case-sensitive, as RFC 5256 says), without their angle brackets; any non-empty id is valid.
//! Memory: one node per hit and per referenced id (at most 101 per hit); time O(n · depth) for the loop checks,
//! plus the sorts.

use std::collections::HashMap;

use heed::RoTxn;

use super::eval::Sink;
use super::sort::base_subject_and_reply;
use super::{Hit, Query};
use crate::error::Result;
use crate::model::MailStore;
use crate::model::summary::ItemSummary;
use crate::model::types::{FolderId, Uid};
use crate::types::Guid;

/// An RFC 5256 threading algorithm (the `THREAD=` capabilities).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ThreadAlgorithm {
    /// `ORDEREDSUBJECT`: by base subject, then sent date ("poor man's threading").
    OrderedSubject,
    /// `REFERENCES`: by `References` / `In-Reply-To`, then merged by base subject.
    References,
}

/// One thread: its nodes in depth-first order (a node, then its children's subtrees in sent-date order), each
/// naming its parent. Flat rather than nested, so that a chain of replies of any depth costs no recursion.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Thread {
    /// The nodes; the first is the thread's head (the only one without a parent).
    pub nodes: Vec<ThreadNode>,
}

/// A node of a [`Thread`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadNode {
    /// The message's UID; `None` for a dummy, which only occurs as the head of a thread whose head message is
    /// missing and which has several children (RFC 5256's `((3)(5))`).
    pub uid: Option<Uid>,
    /// The index of its parent in [`Thread::nodes`] (always before it); `None` for the head.
    pub parent: Option<usize>,
}

impl Thread {
    /// Every UID of the thread, in depth-first order (the order of the IMAP response).
    pub fn uids(&self) -> Vec<Uid> {
        self.nodes.iter().filter_map(|n| n.uid).collect()
    }
}

/// The answer to [`MailStore::thread`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadResults {
    /// The threads, in order.
    pub threads: Vec<Thread>,
    /// How many messages the query's evaluation read (see [`SearchResults::messages_read`](super::SearchResults)).
    pub messages_read: u64,
}

/// The IMAP `THREAD` response data of `threads` (RFC 5256 §4: `thread-list`s back to back, without the leading
/// `* THREAD `): a parent with one child is written as a run (`1 2 3`), one with several as nested lists
/// (`1 (2)(3 4)`), a dummy as its nested lists alone (`((3)(5))`).
pub fn format_threads(threads: &[Thread]) -> String {
    let mut out = String::new();
    for t in threads {
        let mut children = vec![0usize; t.nodes.len()];
        for n in &t.nodes {
            if let Some(p) = n.parent.filter(|&p| p < children.len()) {
                children[p] += 1;
            }
        }
        // The nodes whose list is open, with whether they opened a parenthesis.
        let mut open: Vec<(usize, bool)> = Vec::new();
        for (i, n) in t.nodes.iter().enumerate() {
            while let Some(&(top, paren)) = open.last() {
                if Some(top) == n.parent {
                    break;
                }
                open.pop();
                if paren {
                    out.push(')');
                }
            }
            let paren = match n.parent {
                None => true,
                Some(p) => children.get(p) != Some(&1) || t.nodes.get(p).is_none_or(|n| n.uid.is_none()),
            };
            if paren {
                out.push('(');
            }
            if let Some(uid) = n.uid {
                out.push_str(&uid.to_string());
                if children[i] > 0 {
                    out.push(' ');
                }
            }
            open.push((i, paren));
        }
        for (_, paren) in open.into_iter().rev() {
            if paren {
                out.push(')');
            }
        }
    }
    out
}

/// What threading needs of one hit.
struct Message {
    uid: Uid,
    /// Sent date (µs) and UID: the sort key.
    key: (i128, Uid),
    subject: String,
    reply: bool,
}

/// A node of the REFERENCES tree: a message (index into the messages) or a dummy.
struct Node {
    message: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

/// Gathers the hits and, for REFERENCES, runs step 1 as they arrive (in UID order, which is sequence order).
struct Gather {
    algorithm: ThreadAlgorithm,
    messages: Vec<Message>,
    nodes: Vec<Node>,
    /// Message id → node (step 1's id table).
    ids: HashMap<String, usize>,
    messages_read: u64,
}

impl Gather {
    fn node(&mut self, message: Option<usize>) -> usize {
        self.nodes.push(Node { message, parent: None, children: Vec::new() });
        self.nodes.len() - 1
    }

    /// The node of `id`, a new dummy if no message has it yet.
    fn node_of(&mut self, id: &str) -> usize {
        if let Some(&n) = self.ids.get(id) {
            return n;
        }
        let n = self.node(None);
        self.ids.insert(id.to_owned(), n);
        n
    }

    /// Whether `a` is `b` or lies below it.
    fn descends(&self, mut a: usize, b: usize) -> bool {
        loop {
            if a == b {
                return true;
            }
            match self.nodes[a].parent {
                Some(p) => a = p,
                None => return false,
            }
        }
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.nodes[child].parent = Some(parent);
        self.nodes[parent].children.push(child);
    }

    fn unlink(&mut self, child: usize) {
        if let Some(p) = self.nodes[child].parent.take() {
            self.nodes[p].children.retain(|&c| c != child);
        }
    }

    /// Step 1 for one message.
    fn step1(&mut self, message: usize, summary: &ItemSummary<'_>) {
        // A message id: its own unless it has none or an earlier message has it (then a unique one: no entry).
        let me = match summary.message_id() {
            Some(id) => match self.ids.get(id) {
                Some(&n) if self.nodes[n].message.is_none() => {
                    self.nodes[n].message = Some(message);
                    n
                }
                Some(_) => self.node(Some(message)),
                None => {
                    let n = self.node(Some(message));
                    self.ids.insert(id.to_owned(), n);
                    n
                }
            },
            None => self.node(Some(message)),
        };
        let references = summary.references();
        let refs: Vec<&str> = if references.is_empty() {
            summary.in_reply_to().iter().take(1).collect()
        } else {
            references.iter().collect()
        };
        // 1.A: link the references in order; keep existing parents; no loops.
        let chain: Vec<usize> = refs.iter().map(|id| self.node_of(id)).collect();
        for pair in chain.windows(2) {
            let (p, c) = (pair[0], pair[1]);
            if self.nodes[c].parent.is_none() && !self.descends(p, c) {
                self.link(p, c);
            }
        }
        // 1.B: the last reference is the parent (replacing any parent 1.A left), unless that makes a loop.
        self.unlink(me);
        if let Some(&last) = chain.last()
            && !self.descends(last, me)
        {
            self.link(last, me);
        }
    }
}

impl Sink for Gather {
    fn message_read(&mut self) {
        self.messages_read += 1;
    }

    fn push(&mut self, summary: &ItemSummary<'_>, hit: Hit) {
        let received = i128::from(summary.received().as_micros());
        let date = summary.date().map_or(received, |secs| i128::from(secs) * 1_000_000);
        let (subject, reply) = base_subject_and_reply(summary.subject().unwrap_or(""));
        self.messages.push(Message { uid: hit.uid, key: (date, hit.uid), subject, reply });
        if self.algorithm == ThreadAlgorithm::References {
            self.step1(self.messages.len() - 1, summary);
        }
    }
}

impl MailStore {
    /// The items of `folder` that match `query`, arranged into threads by `algorithm` (IMAP `THREAD`, RFC 5256;
    /// see the [thread module](crate::model::search::thread)). [`format_threads`] writes the IMAP response.
    ///
    /// Errors as [`MailStore::search`].
    pub fn thread(
        &self,
        txn: &RoTxn<'_>,
        guid: &Guid,
        folder: FolderId,
        query: &Query,
        algorithm: ThreadAlgorithm,
    ) -> Result<ThreadResults> {
        let mut g =
            Gather { algorithm, messages: Vec::new(), nodes: Vec::new(), ids: HashMap::new(), messages_read: 0 };
        self.scan_folder(txn, guid, folder, query, &mut g)?;
        let messages_read = g.messages_read;
        let threads = match algorithm {
            ThreadAlgorithm::OrderedSubject => ordered_subject(&g.messages),
            ThreadAlgorithm::References => references(g),
        };
        Ok(ThreadResults { threads, messages_read })
    }
}

/// ORDEREDSUBJECT (RFC 5256 §3).
fn ordered_subject(messages: &[Message]) -> Vec<Thread> {
    let mut order: Vec<usize> = (0..messages.len()).collect();
    order.sort_by(|&a, &b| messages[a].subject.cmp(&messages[b].subject).then(messages[a].key.cmp(&messages[b].key)));
    let mut threads: Vec<((i128, Uid), Thread)> = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let head = &messages[order[i]];
        let mut j = i + 1;
        while j < order.len() && messages[order[j]].subject == head.subject {
            j += 1;
        }
        let mut nodes = vec![ThreadNode { uid: Some(head.uid), parent: None }];
        nodes.extend(order[i + 1..j].iter().map(|&m| ThreadNode { uid: Some(messages[m].uid), parent: Some(0) }));
        threads.push((head.key, Thread { nodes }));
        i = j;
    }
    threads.sort_by_key(|(key, _)| *key);
    threads.into_iter().map(|(_, t)| t).collect()
}

/// REFERENCES steps 2–6 on the tree step 1 built (step 1 ran as the hits arrived). Every walk is iterative.
fn references(g: Gather) -> Vec<Thread> {
    let Gather { messages, mut nodes, .. } = g;
    // The sort key of a node: its message's, or a dummy's first child's.
    let key = |nodes: &[Node], mut n: usize| loop {
        match nodes[n].message {
            Some(m) => return messages[m].key,
            None => match nodes[n].children.first() {
                Some(&c) => n = c,
                None => return (i128::MIN, 0),
            },
        }
    };
    let subject = |nodes: &[Node], mut n: usize| loop {
        match nodes[n].message {
            Some(m) => return messages[m].subject.as_str(),
            None => match nodes[n].children.first() {
                Some(&c) => n = c,
                None => return "",
            },
        }
    };
    let is_reply = |nodes: &[Node], n: usize| nodes[n].message.is_some_and(|m| messages[m].reply);
    // (2) The parentless nodes under the root.
    let roots: Vec<usize> = (0..nodes.len()).filter(|&n| nodes[n].parent.is_none()).collect();
    // (3) Prune dummies, children before parents: a dummy without children goes, one with children is replaced
    // by them (already pruned); at the root only when it has one child.
    let mut order = Vec::with_capacity(nodes.len());
    let mut stack = roots.clone();
    while let Some(n) = stack.pop() {
        order.push(n);
        stack.extend(nodes[n].children.iter().copied());
    }
    for &n in order.iter().rev() {
        let mut kept = Vec::with_capacity(nodes[n].children.len());
        for c in std::mem::take(&mut nodes[n].children) {
            if nodes[c].message.is_some() {
                kept.push(c);
            } else {
                kept.extend(std::mem::take(&mut nodes[c].children));
            }
        }
        for &c in &kept {
            nodes[c].parent = Some(n);
        }
        nodes[n].children = kept;
    }
    let mut root = Vec::with_capacity(roots.len());
    for r in roots {
        match (nodes[r].message, nodes[r].children.len()) {
            (Some(_), _) => root.push(r),
            (None, 0) => {}
            (None, 1) => {
                let only = nodes[r].children.pop().unwrap_or(r);
                nodes[only].parent = None;
                root.push(only);
            }
            (None, _) => root.push(r),
        }
    }
    // (4) Sort the root's children by sent date, a dummy by its first child (its children sorted first).
    for &r in &root {
        if nodes[r].message.is_none() {
            let mut children = std::mem::take(&mut nodes[r].children);
            children.sort_by_key(|&c| key(&nodes, c));
            nodes[r].children = children;
        }
    }
    root.sort_by_key(|&r| key(&nodes, r));
    // (5.B) The subject table: one root child per base subject.
    let mut table: HashMap<&str, usize> = HashMap::new();
    for &r in &root {
        let s = subject(&nodes, r);
        if s.is_empty() {
            continue;
        }
        match table.get(s) {
            None => {
                table.insert(s, r);
            }
            Some(&old) => {
                let dummy = nodes[r].message.is_none();
                if nodes[old].message.is_some() && (dummy || (is_reply(&nodes, old) && !is_reply(&nodes, r))) {
                    table.insert(s, r);
                }
            }
        }
    }
    // (5.C) Merge each root child into its subject's entry.
    let mut slots: Vec<Option<usize>> = root.iter().map(|&r| Some(r)).collect();
    let position: HashMap<usize, usize> = root.iter().enumerate().map(|(i, &r)| (r, i)).collect();
    // Where each table entry stands now (a merge may replace it by a new dummy, in the same slot).
    let mut entry_at: HashMap<&str, usize> = HashMap::new();
    for (i, &current) in root.iter().enumerate() {
        let s = subject(&nodes, current);
        if s.is_empty() {
            continue;
        }
        let Some(&first) = table.get(s) else { continue };
        if first == current {
            continue;
        }
        let slot = *entry_at.entry(s).or_insert(position[&first]);
        let Some(entry) = slots[slot] else { continue };
        slots[i] = None;
        let adopt = |nodes: &mut Vec<Node>, parent: usize, child: usize| {
            nodes[child].parent = Some(parent);
            nodes[parent].children.push(child);
        };
        match (nodes[entry].message.is_none(), nodes[current].message.is_none()) {
            (true, true) => {
                for c in std::mem::take(&mut nodes[current].children) {
                    adopt(&mut nodes, entry, c);
                }
            }
            (true, false) => adopt(&mut nodes, entry, current),
            _ if is_reply(&nodes, current) && !is_reply(&nodes, entry) => adopt(&mut nodes, entry, current),
            _ => {
                nodes.push(Node { message: None, parent: None, children: Vec::new() });
                let dummy = nodes.len() - 1;
                adopt(&mut nodes, dummy, entry);
                adopt(&mut nodes, dummy, current);
                nodes[dummy].parent = None;
                slots[slot] = Some(dummy);
            }
        }
    }
    let mut root: Vec<usize> = slots.into_iter().flatten().collect();
    // (6) Sort every set of siblings by sent date: messages' children first, then the dummies' (whose keys are
    // their first children's), then the root.
    for pass in [false, true] {
        for n in 0..nodes.len() {
            if nodes[n].message.is_none() == pass {
                let mut children = std::mem::take(&mut nodes[n].children);
                children.sort_by_key(|&c| key(&nodes, c));
                nodes[n].children = children;
            }
        }
    }
    root.sort_by_key(|&r| key(&nodes, r));
    root.into_iter().map(|r| flatten(&nodes, &messages, r)).collect()
}

/// The thread under `head`, depth-first.
fn flatten(nodes: &[Node], messages: &[Message], head: usize) -> Thread {
    let mut out = Vec::new();
    let mut stack = vec![(head, None)];
    while let Some((n, parent)) = stack.pop() {
        out.push(ThreadNode { uid: nodes[n].message.map(|m| messages[m].uid), parent });
        let me = out.len() - 1;
        stack.extend(nodes[n].children.iter().rev().map(|&c| (c, Some(me))));
    }
    Thread { nodes: out }
}
