//! Conversations (`model::conversations`, JMAP `Thread`): a reply before its parent, across folders, copies, moves
//! and expunges, the subject rule, no merging, the same ids after a remount, a recovery and on a passive copy, and
//! a property test holding the stored conversations against an oracle computed from the delivered messages.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::folder::Fixture;
use mailstore::model::{
    ConversationId, Fai, FlagAction, Flags, FolderId, ItemId, MAX_CONVERSATION_REFERENCES, MAX_CONVERSATIONS_PER_ID,
    MailEngine, MailOp, MailOutput, MailStore, MailboxKind, search::base_subject,
};
use mailstore::replication::{CopyOptions, LogSource, PassiveCopy, ShippingSource, SourceOptions};
use mailstore::{Durability, Engine, Guid, LogRetention, Options};
use proptest::prelude::*;

/// A message with these headers (`\n` separated) and a one-line body.
fn msg(headers: &str) -> Vec<u8> {
    format!("From: a@example.com\r\n{}\r\n\r\nbody\r\n", headers.replace('\n', "\r\n")).into_bytes()
}

/// Appends `raw` to `folder` of mailbox `mbx`; its item id.
fn append(db: &MailEngine, mbx: Guid, folder: FolderId, raw: Vec<u8>) -> ItemId {
    match db.commit(MailOp::append(mbx, folder, raw, Flags::empty(), vec![])).unwrap().output {
        MailOutput::Appended { item, .. } => item,
        other => panic!("not an append: {other:?}"),
    }
}

fn conversation(db: &MailEngine, mbx: Guid, item: ItemId) -> Option<ConversationId> {
    db.read(|s, txn| s.conversation(txn, &mbx, item)).unwrap()
}

fn members(db: &MailEngine, mbx: Guid, c: ConversationId) -> Vec<ItemId> {
    db.read(|s, txn| s.conversation_items(txn, &mbx, c)).unwrap().iter().map(|i| i.id).collect()
}

/// `mailstore check`'s verification finds nothing wrong.
fn verified(db: &MailEngine) {
    let problems = db.read(|s, txn| s.verify_counters(txn)).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Every item of the mailbox with its conversation, by item id.
fn all_conversations(db: &MailEngine, mbx: Guid) -> BTreeMap<ItemId, ConversationId> {
    db.read(|s, txn| {
        let mut out = BTreeMap::new();
        for f in s.folders(txn, &mbx)? {
            for item in s.items_by_uid(txn, &mbx, f.id, 1, usize::MAX, Fai::Include)? {
                out.insert(item.id, s.conversation(txn, &mbx, item.id)?.expect("every item has a conversation"));
            }
        }
        Ok(out)
    })
    .unwrap()
}

impl Fixture {
    fn folder(&self, name: &str) -> FolderId {
        match self.db.commit(MailOp::create_folder(self.mbx, self.inbox, name)).unwrap().output {
            MailOutput::FolderCreated { id, .. } => id,
            other => panic!("{other:?}"),
        }
    }

    fn uid_of(&self, item: ItemId) -> (FolderId, u32) {
        let i = self.db.read(|s, txn| s.item(txn, &self.mbx, item)).unwrap().unwrap();
        (i.folder, i.uid)
    }

    /// The item at `uid` of `folder`.
    fn at(&self, folder: FolderId, uid: u32) -> ItemId {
        self.db.read(|s, txn| s.item_by_uid(txn, &self.mbx, folder, uid)).unwrap().unwrap().id
    }
}

#[test]
fn a_reply_that_arrives_first_and_its_parent_share_a_conversation_named_after_the_first() {
    let f = Fixture::create();
    let reply = append(&f.db, f.mbx, f.inbox, msg("Subject: Re: plans\nMessage-ID: <2@x>\nIn-Reply-To: <1@x>"));
    let grandchild =
        append(&f.db, f.mbx, f.inbox, msg("Subject: RE: Plans\nMessage-ID: <3@x>\nReferences: <1@x> <2@x>"));
    let parent = append(&f.db, f.mbx, f.inbox, msg("Subject: Plans\nMessage-ID: <1@x>"));
    let c = conversation(&f.db, f.mbx, reply).unwrap();
    assert_eq!(c, ConversationId(reply));
    assert_eq!(conversation(&f.db, f.mbx, grandchild), Some(c));
    assert_eq!(conversation(&f.db, f.mbx, parent), Some(c));
    assert_eq!(members(&f.db, f.mbx, c), [reply, grandchild, parent], "received order");
    // The same subject with no reference, and a reference with another subject, are conversations of their own.
    let alone = append(&f.db, f.mbx, f.inbox, msg("Subject: Plans\nMessage-ID: <4@x>"));
    let topic = append(&f.db, f.mbx, f.inbox, msg("Subject: Re: something else\nIn-Reply-To: <1@x>"));
    assert_eq!(conversation(&f.db, f.mbx, alone), Some(ConversationId(alone)));
    assert_eq!(conversation(&f.db, f.mbx, topic), Some(ConversationId(topic)));
    assert_eq!(conversation(&f.db, f.mbx, 999), None);
    assert!(members(&f.db, f.mbx, ConversationId(999)).is_empty());
    verified(&f.db);
}

#[test]
fn a_message_linking_two_conversations_joins_the_first_found_and_they_never_merge() {
    let f = Fixture::create();
    let a = append(&f.db, f.mbx, f.inbox, msg("Subject: x\nMessage-ID: <a@x>"));
    let b = append(&f.db, f.mbx, f.inbox, msg("Subject: x\nMessage-ID: <b@x>"));
    // In-Reply-To is looked up first, then References newest first.
    let c = append(&f.db, f.mbx, f.inbox, msg("Subject: Re: x\nIn-Reply-To: <b@x>\nReferences: <a@x> <b@x>"));
    assert_eq!(conversation(&f.db, f.mbx, c), Some(ConversationId(b)));
    let d = append(&f.db, f.mbx, f.inbox, msg("Subject: Re: x\nReferences: <b@x> <a@x>"));
    assert_eq!(conversation(&f.db, f.mbx, d), Some(ConversationId(a)));
    assert_eq!(members(&f.db, f.mbx, ConversationId(a)), [a, d]);
    assert_eq!(members(&f.db, f.mbx, ConversationId(b)), [b, c]);
    // A duplicate of b (same Message-ID, e.g. the list's copy of a sent message): <b@x> is mentioned in both
    // conversations now (by b, and by d in a's), and the oldest is taken.
    let dup = append(&f.db, f.mbx, f.inbox, msg("Subject: x\nMessage-ID: <b@x>"));
    assert_eq!(conversation(&f.db, f.mbx, dup), Some(ConversationId(a)));
    assert_eq!(members(&f.db, f.mbx, ConversationId(b)), [b, c]);
    verified(&f.db);
}

#[test]
fn replies_in_other_folders_copies_and_moves_keep_the_conversation_and_expunges_leave_it() {
    let f = Fixture::create();
    let sent = f.folder("Sent mail");
    let other = f.folder("Archive");
    let parent = append(&f.db, f.mbx, f.inbox, msg("Subject: report\nMessage-ID: <p@x>"));
    let reply = append(&f.db, f.mbx, sent, msg("Subject: Re: report\nMessage-ID: <r@x>\nIn-Reply-To: <p@x>"));
    let c = ConversationId(parent);
    assert_eq!(conversation(&f.db, f.mbx, reply), Some(c));
    // Copy the parent to the archive: a new item, same conversation.
    let (_, puid) = f.uid_of(parent);
    f.db.commit(MailOp::CopyItems { mailbox: f.mbx, from: f.inbox, uids: vec![puid], to: other, remove_source: false })
        .unwrap();
    let copy = f.at(other, 1);
    assert_eq!(conversation(&f.db, f.mbx, copy), Some(c));
    // Move the reply to the Inbox: the moved item keeps it, the old id is gone.
    let (_, ruid) = f.uid_of(reply);
    f.db.commit(MailOp::move_items(f.mbx, sent, vec![ruid], f.inbox)).unwrap();
    let moved = f.at(f.inbox, 2);
    assert_eq!(conversation(&f.db, f.mbx, moved), Some(c));
    assert_eq!(conversation(&f.db, f.mbx, reply), None);
    assert_eq!(members(&f.db, f.mbx, c), [parent, copy, moved]);
    // Deleting into Recoverable Items keeps it too (the item is still there, hidden).
    f.db.commit(MailOp::delete_items(f.mbx, other, vec![1])).unwrap();
    assert_eq!(members(&f.db, f.mbx, c).len(), 3);
    verified(&f.db);
    // Expunge the Inbox's two: only the deleted copy is left; purge it and the conversation is gone.
    f.db.commit(MailOp::store_flags(f.mbx, f.inbox, vec![1, 2], FlagAction::Add, Flags::DELETED)).unwrap();
    f.db.commit(MailOp::expunge(f.mbx, f.inbox, None)).unwrap();
    assert_eq!(members(&f.db, f.mbx, c).len(), 1);
    f.db.commit(MailOp::PurgeItems { mailbox: f.mbx, uids: vec![1] }).unwrap();
    assert!(members(&f.db, f.mbx, c).is_empty());
    verified(&f.db);
    // A late reply to the gone parent starts a new conversation, named after itself.
    let late = append(&f.db, f.mbx, f.inbox, msg("Subject: Re: report\nIn-Reply-To: <p@x>"));
    assert_eq!(conversation(&f.db, f.mbx, late), Some(ConversationId(late)));
    verified(&f.db);
}

#[test]
fn only_the_first_references_up_to_the_limit_link_a_message() {
    let f = Fixture::create();
    let root = append(&f.db, f.mbx, f.inbox, msg("Subject: long\nMessage-ID: <root@x>"));
    // The root is the oldest reference: past the limit of newest ones considered, so it does not link.
    let refs: Vec<String> = (0..MAX_CONVERSATION_REFERENCES).map(|i| format!("<n{i}@x>")).collect();
    let far =
        append(&f.db, f.mbx, f.inbox, msg(&format!("Subject: Re: long\nReferences: <root@x> {}", refs.join(" "))));
    assert_eq!(conversation(&f.db, f.mbx, far), Some(ConversationId(far)));
    // 49 other ids and the root: the root is within the limit.
    let near: Vec<String> = (1..MAX_CONVERSATION_REFERENCES).map(|i| format!("<o{i}@x>")).collect();
    let close =
        append(&f.db, f.mbx, f.inbox, msg(&format!("Subject: Re: long\nReferences: <root@x> {}", near.join(" "))));
    assert_eq!(conversation(&f.db, f.mbx, close), Some(ConversationId(root)));
    verified(&f.db);
}

#[test]
fn an_id_mentioned_by_many_conversations_is_looked_up_in_the_oldest_few() {
    let f = Fixture::create();
    let hub = append(&f.db, f.mbx, f.inbox, msg("Subject: hub\nMessage-ID: <hub@x>"));
    // Replies to the hub under new subjects: each its own conversation, each mentioning <hub@x>.
    let topics: Vec<ItemId> = (0..MAX_CONVERSATIONS_PER_ID)
        .map(|i| append(&f.db, f.mbx, f.inbox, msg(&format!("Subject: Re: topic {i}\nIn-Reply-To: <hub@x>"))))
        .collect();
    // <hub@x> is now in 1 + 16 conversations: the newest is past the 16 oldest looked at.
    let last = MAX_CONVERSATIONS_PER_ID - 1;
    let missed = append(&f.db, f.mbx, f.inbox, msg(&format!("Subject: Re: topic {last}\nIn-Reply-To: <hub@x>")));
    assert_eq!(conversation(&f.db, f.mbx, missed), Some(ConversationId(missed)));
    let found = append(&f.db, f.mbx, f.inbox, msg("Subject: Re: topic 3\nIn-Reply-To: <hub@x>"));
    assert_eq!(conversation(&f.db, f.mbx, found), Some(ConversationId(topics[3])));
    let root = append(&f.db, f.mbx, f.inbox, msg("Subject: Re: hub\nIn-Reply-To: <hub@x>"));
    assert_eq!(conversation(&f.db, f.mbx, root), Some(ConversationId(hub)));
    verified(&f.db);
}

/// Delivers a small conversation-rich history into `mbx`.
fn history(db: &MailEngine, mbx: Guid, folder: FolderId, from: usize, n: usize) {
    for i in from..from + n {
        let headers = match i % 4 {
            0 => format!("Subject: topic {i}\nMessage-ID: <{i}@h>"),
            1 => format!("Subject: Re: topic {}\nMessage-ID: <{i}@h>\nIn-Reply-To: <{}@h>", i - 1, i - 1),
            2 => format!("Subject: Re: topic {}\nMessage-ID: <{i}@h>\nReferences: <{}@h> <{}@h>", i + 2, i + 2, i + 3),
            _ => format!("Subject: topic {}\nMessage-ID: <{}@h>", i - 3, i - 3),
        };
        append(db, mbx, folder, msg(&headers));
    }
}

fn mailbox(db: &MailEngine) -> (Guid, FolderId) {
    let op = MailOp::create_mailbox("user@example.com", "User", MailboxKind::User);
    let mbx = op.mailbox().unwrap();
    db.commit(op).unwrap();
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &mbx, mailstore::model::FolderRole::Inbox)).unwrap().unwrap().id;
    (mbx, inbox)
}

fn replace_dir(from: &Path, to: &Path) {
    std::fs::remove_dir_all(to).unwrap();
    common::copy_dir(from, to);
}

#[test]
fn conversations_are_the_same_after_a_remount_and_after_recovery_replays_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    // Keep every generation, so an old state can be brought forward by replaying the log.
    let options = || Options::default().durability(Durability::Relaxed).retention(LogRetention::UntilBackup);
    let db: MailEngine = Engine::mount(&dir, options()).unwrap();
    let (mbx, inbox) = mailbox(&db);
    db.dismount().unwrap();
    let old = tmp.path().join("old");
    common::copy_dir(&dir, &old);
    let db: MailEngine = Engine::mount(&dir, options()).unwrap();
    history(&db, mbx, inbox, 0, 40);
    let expected = all_conversations(&db, mbx);
    assert!(expected.values().collect::<std::collections::BTreeSet<_>>().len() < 40, "some conversations join");
    let digest = db.read(|s, txn| s.digest(txn)).unwrap();
    db.dismount().unwrap();
    let db: MailEngine = Engine::mount(&dir, options()).unwrap();
    assert_eq!(all_conversations(&db, mbx), expected, "after a remount");
    db.dismount().unwrap();
    // The state store and checkpoint from before the deliveries, with the log after them: recovery replays it.
    replace_dir(&old.join("state"), &dir.join("state"));
    std::fs::copy(old.join("checkpoint"), dir.join("checkpoint")).unwrap();
    let db: MailEngine = Engine::mount(&dir, options()).unwrap();
    assert!(db.recovery_report().replayed > 0, "{:?}", db.recovery_report());
    assert_eq!(all_conversations(&db, mbx), expected, "after recovery");
    assert_eq!(db.read(|s, txn| s.digest(txn)).unwrap(), digest);
    verified(&db);
    db.dismount().unwrap();
}

#[test]
fn a_passive_copy_replays_the_same_conversations() {
    let tmp = tempfile::tempdir().unwrap();
    let db: Arc<MailEngine> = Arc::new(Engine::mount(tmp.path().join("a"), Options::default()).unwrap());
    let source = Arc::new(ShippingSource::new(Arc::clone(&db), SourceOptions::default()).unwrap());
    let (mbx, inbox) = mailbox(&db);
    history(&db, mbx, inbox, 0, 12);
    let log: Arc<dyn LogSource> = source.clone();
    let options = CopyOptions::default().poll(Duration::from_millis(50));
    let copy: PassiveCopy<MailStore> =
        PassiveCopy::seed(tmp.path().join("p"), source.as_ref(), log, options, |_| {}).unwrap();
    history(&db, mbx, inbox, 12, 28);
    f_copy_and_expunge(&db, mbx, inbox);
    assert!(copy.wait_replayed(db.status().applied_lsn, Duration::from_secs(30)));
    let expected = all_conversations(&db, mbx);
    let replayed = copy
        .read(|s, txn| {
            let mut out = BTreeMap::new();
            for f in s.folders(txn, &mbx)? {
                for item in s.items_by_uid(txn, &mbx, f.id, 1, usize::MAX, Fai::Include)? {
                    out.insert(item.id, s.conversation(txn, &mbx, item.id)?.expect("every item has one"));
                }
            }
            Ok(out)
        })
        .unwrap();
    assert_eq!(replayed, expected);
    assert_eq!(copy.read(|s, txn| s.digest(txn)).unwrap(), db.read(|s, txn| s.digest(txn)).unwrap());
}

/// Moves the first three messages to a new folder and expunges two more, on `db`.
fn f_copy_and_expunge(db: &MailEngine, mbx: Guid, inbox: FolderId) {
    let archive = match db.commit(MailOp::create_folder(mbx, inbox, "Archive")).unwrap().output {
        MailOutput::FolderCreated { id, .. } => id,
        other => panic!("{other:?}"),
    };
    db.commit(MailOp::move_items(mbx, inbox, vec![1, 2, 3], archive)).unwrap();
    db.commit(MailOp::store_flags(mbx, inbox, vec![5, 6], FlagAction::Add, Flags::DELETED)).unwrap();
    db.commit(MailOp::expunge(mbx, inbox, None)).unwrap();
}

// ---- The property test: the stored conversations against an oracle of the rule. ----

/// One step of a random history.
#[derive(Clone, Debug)]
enum Step {
    /// A message: its Message-ID (index into the pool), In-Reply-To, References and subject (index into SUBJECTS).
    Deliver {
        folder: usize,
        id: Option<u8>,
        reply_to: Option<u8>,
        references: Vec<u8>,
        subject: usize,
    },
    Copy {
        pick: usize,
        to: usize,
    },
    Move {
        pick: usize,
        to: usize,
    },
    Expunge {
        pick: usize,
    },
}

const SUBJECTS: [&str; 4] = ["lunch", "Re: lunch", "Fwd: dinner", "dinner"];

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..2usize, proptest::option::of(0..8u8), proptest::option::of(0..8u8), proptest::collection::vec(0..8u8, 0..4), 0..4usize)
            .prop_map(|(folder, id, reply_to, references, subject)| Step::Deliver { folder, id, reply_to, references, subject }),
        1 => (any::<usize>(), 0..2usize).prop_map(|(pick, to)| Step::Copy { pick, to }),
        1 => (any::<usize>(), 0..2usize).prop_map(|(pick, to)| Step::Move { pick, to }),
        1 => any::<usize>().prop_map(|pick| Step::Expunge { pick }),
    ]
}

/// What the oracle knows of a live item: its conversation and the envelope fields the rule reads.
#[derive(Clone, Debug)]
struct Known {
    conversation: u64,
    mentions: Vec<String>,
}

/// The rule, written from its statement: the ids a message mentions, in lookup order.
fn mentions(id: &Option<String>, reply_to: &[String], references: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in reply_to.iter().chain(references.iter().rev()) {
        if out.len() == MAX_CONVERSATION_REFERENCES {
            break;
        }
        if !out.contains(r) {
            out.push(r.clone());
        }
    }
    if let Some(id) = id
        && !out.contains(id)
    {
        out.push(id.clone());
    }
    out
}

fn run(steps: Vec<Step>) {
    let f = Fixture::create();
    let folders = [f.inbox, f.folder("Other")];
    let mut live: BTreeMap<ItemId, Known> = BTreeMap::new();
    // Each conversation's base subject, fixed by its first message.
    let mut subjects: BTreeMap<u64, String> = BTreeMap::new();
    for step in steps {
        match step {
            Step::Deliver { folder, id, reply_to, references, subject } => {
                let id = id.map(|i| format!("m{i}@pool"));
                let reply_to: Vec<String> = reply_to.map(|i| format!("m{i}@pool")).into_iter().collect();
                let references: Vec<String> = references.iter().map(|i| format!("m{i}@pool")).collect();
                let mut headers = format!("Subject: {}", SUBJECTS[subject]);
                if let Some(id) = &id {
                    headers += &format!("\nMessage-ID: <{id}>");
                }
                if !reply_to.is_empty() {
                    headers += &format!("\nIn-Reply-To: <{}>", reply_to[0]);
                }
                if !references.is_empty() {
                    let list: Vec<String> = references.iter().map(|r| format!("<{r}>")).collect();
                    headers += &format!("\nReferences: {}", list.join(" "));
                }
                let item = append(&f.db, f.mbx, folders[folder], msg(&headers));
                let ids = mentions(&id, &reply_to, &references);
                let base = base_subject(SUBJECTS[subject]);
                let mut joined = None;
                'ids: for mentioned in &ids {
                    let mut candidates: Vec<u64> =
                        live.values().filter(|k| k.mentions.contains(mentioned)).map(|k| k.conversation).collect();
                    candidates.sort_unstable();
                    candidates.dedup();
                    for c in candidates.into_iter().take(MAX_CONVERSATIONS_PER_ID) {
                        if subjects[&c] == base {
                            joined = Some(c);
                            break 'ids;
                        }
                    }
                }
                let c = joined.unwrap_or(item);
                subjects.entry(c).or_insert(base);
                live.insert(item, Known { conversation: c, mentions: ids });
            }
            Step::Copy { pick, to } | Step::Move { pick, to } => {
                let Some((&item, known)) = live.iter().nth(pick % live.len().max(1)) else { continue };
                let known = known.clone();
                let (from, uid) = f.uid_of(item);
                if from == folders[to] {
                    continue;
                }
                let moving = matches!(step, Step::Move { .. });
                let op = if moving {
                    MailOp::move_items(f.mbx, from, vec![uid], folders[to])
                } else {
                    MailOp::CopyItems { mailbox: f.mbx, from, uids: vec![uid], to: folders[to], remove_source: false }
                };
                let MailOutput::Copied { mapping, .. } = f.db.commit(op).unwrap().output else { panic!() };
                let new = f.at(folders[to], mapping[0].1);
                if moving {
                    live.remove(&item);
                }
                live.insert(new, known);
            }
            Step::Expunge { pick } => {
                let Some(&item) = live.keys().nth(pick % live.len().max(1)) else { continue };
                let (from, uid) = f.uid_of(item);
                f.db.commit(MailOp::store_flags(f.mbx, from, vec![uid], FlagAction::Add, Flags::DELETED)).unwrap();
                f.db.commit(MailOp::expunge(f.mbx, from, Some(vec![uid]))).unwrap();
                live.remove(&item);
                // A conversation without items is gone, with its subject.
                subjects.retain(|c, _| live.values().any(|k| k.conversation == *c));
            }
        }
        subjects.retain(|c, _| live.values().any(|k| k.conversation == *c));
    }
    let stored = all_conversations(&f.db, f.mbx);
    let expected: BTreeMap<ItemId, ConversationId> =
        live.iter().map(|(id, k)| (*id, ConversationId(k.conversation))).collect();
    assert_eq!(stored, expected);
    // Each conversation lists exactly its items, in received order.
    for c in expected.values() {
        let mut mine: Vec<ItemId> = expected.iter().filter(|(_, v)| *v == c).map(|(k, _)| *k).collect();
        let listed = f.db.read(|s, txn| s.conversation_items(txn, &f.mbx, *c)).unwrap();
        let listed_ids: Vec<ItemId> = listed.iter().map(|i| i.id).collect();
        let mut sorted = listed.clone();
        sorted.sort_by_key(|i| (i.received, i.id));
        assert_eq!(listed_ids, sorted.iter().map(|i| i.id).collect::<Vec<_>>(), "received order");
        let mut listed_sorted = listed_ids.clone();
        listed_sorted.sort_unstable();
        mine.sort_unstable();
        assert_eq!(listed_sorted, mine);
    }
    verified(&f.db);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn stored_conversations_match_the_rule_applied_to_the_delivered_messages(steps in proptest::collection::vec(step(), 1..40)) {
        run(steps);
    }
}

// ---- RFC 5256 THREAD (`MailStore::thread`). ----

use mailstore::Timestamp;
use mailstore::model::search::{Query, ThreadAlgorithm, format_threads};

impl Fixture {
    /// Appends one message per `(headers, received second)`; UIDs follow from 1.
    fn thread_fixture(messages: &[(String, u64)]) -> Fixture {
        let f = Fixture::create();
        f.append_to(
            f.inbox,
            messages
                .iter()
                .map(|(h, at)| (msg(h), Flags::empty(), vec![], Timestamp::from_micros(at * 1_000_000)))
                .collect(),
        );
        f
    }

    fn thread(&self, query: &Query, algorithm: ThreadAlgorithm) -> String {
        let r = self.db.read(|s, txn| s.thread(txn, &self.mbx, self.inbox, query, algorithm)).unwrap();
        assert_eq!(r.messages_read, 0, "threading reads listing records only");
        format_threads(&r.threads)
    }
}

/// `Date:` of minute `m` of 1 Jan 2024.
fn date(m: u64) -> String {
    format!("Date: Mon, 1 Jan 2024 {:02}:{:02}:00 +0000", m / 60, m % 60)
}

#[test]
fn references_rebuilds_the_rfc_5256_example_response() {
    // RFC 5256 §4's example, "(2)(3 6 (4 23)(44 7 96))": 3 → 6 → {4 → 23, 44 → 7 → 96}, and 2 alone.
    let refs: BTreeMap<u64, &str> = [
        (6, "<3@x>"),
        (4, "<3@x> <6@x>"),
        (23, "<3@x> <6@x> <4@x>"),
        (44, "<3@x> <6@x>"),
        (7, "<6@x> <44@x>"),
        (96, "<3@x> <6@x> <44@x> <7@x>"),
    ]
    .into_iter()
    .collect();
    let messages: Vec<(String, u64)> = (1..=96u64)
        .map(|uid| {
            let subject = match uid {
                2 => "Subject: other".to_owned(),
                3 => "Subject: topic".to_owned(),
                _ if refs.contains_key(&uid) => "Subject: Re: topic".to_owned(),
                _ => format!("Subject: filler {uid}"),
            };
            let mut h = format!("{subject}\nMessage-ID: <{uid}@x>\n{}", date(uid));
            if let Some(r) = refs.get(&uid) {
                h += &format!("\nReferences: {r}");
            }
            (h, uid)
        })
        .collect();
    let f = Fixture::thread_fixture(&messages);
    let hits = Query::uids([2..=4, 6..=7, 23..=23, 44..=44, 96..=96]);
    assert_eq!(f.thread(&hits, ThreadAlgorithm::References), "(2)(3 6 (4 23)(44 7 96))");
    // ORDEREDSUBJECT: "other" and "topic" threads, every reply a child of the first.
    assert_eq!(f.thread(&hits, ThreadAlgorithm::OrderedSubject), "(2)(3 (4)(6)(7)(23)(44)(96))");
    // Without a query restriction the fillers are threads of their own, in date order.
    let all = f.thread(&Query::all(), ThreadAlgorithm::References);
    assert!(all.starts_with("(1)(2)(3 6 (4 23)(44 7 96))(5)(8)"), "{all}");
}

#[test]
fn references_keeps_a_dummy_with_several_children_at_the_top_and_prunes_the_others() {
    let f = Fixture::thread_fixture(&[
        (format!("Subject: a\nMessage-ID: <1@x>\n{}", date(1)), 1),
        (format!("Subject: b\nMessage-ID: <2@x>\n{}", date(2)), 2),
        // 3 and 5 answer a message not in the folder: a dummy with two children, kept ("((3)(5))").
        (format!("Subject: lost\nMessage-ID: <3@x>\nReferences: <gone@x>\n{}", date(3)), 3),
        (format!("Subject: c\nMessage-ID: <4@x>\nIn-Reply-To: <gone2@x>\n{}", date(4)), 4),
        (format!("Subject: Re: lost\nMessage-ID: <5@x>\nReferences: <gone@x>\n{}", date(5)), 5),
        // 6 answers 2 through a missing middle message: the dummy goes and 6 is 2's child.
        (format!("Subject: Re: b\nMessage-ID: <6@x>\nReferences: <2@x> <mid@x>\n{}", date(6)), 6),
    ]);
    assert_eq!(f.thread(&Query::all(), ThreadAlgorithm::References), "(1)(2 6)((3)(5))(4)");
}

#[test]
fn references_merges_by_base_subject_links_no_loops_and_uses_a_duplicate_id_once() {
    let f = Fixture::thread_fixture(&[
        // Two unrelated messages of one subject, neither a reply: a new dummy over both (step 5.C).
        (format!("Subject: lunch\n{}", date(1)), 1),
        (format!("Subject: lunch\n{}", date(2)), 2),
        // A reply without references joins the non-reply of its subject as a child.
        (format!("Subject: plans\nMessage-ID: <p@x>\n{}", date(3)), 3),
        (format!("Subject: Re: plans\n{}", date(4)), 4),
        // 5 and 6 name each other as parents: 5 becomes the child of (the dummy for, then) 6, and 6's link to 5
        // would be a loop, so it is not made.
        (format!("Subject: loop\nMessage-ID: <5@x>\nIn-Reply-To: <6@x>\n{}", date(5)), 5),
        (format!("Subject: Re: loop\nMessage-ID: <6@x>\nIn-Reply-To: <5@x>\n{}", date(6)), 6),
        // 8 has 3's Message-ID again: only 3 owns it, so 9's reference is to 3.
        (format!("Subject: dup\nMessage-ID: <d@x>\n{}", date(7)), 7),
        (format!("Subject: other dup\nMessage-ID: <d@x>\n{}", date(8)), 8),
        (format!("Subject: Re: dup\nIn-Reply-To: <d@x>\n{}", date(9)), 9),
    ]);
    assert_eq!(f.thread(&Query::all(), ThreadAlgorithm::References), "((1)(2))(3 4)(6 5)(7 9)(8)");
    assert_eq!(f.thread(&Query::all(), ThreadAlgorithm::OrderedSubject), "(1 2)(3 4)(5 6)(7 9)(8)");
}

#[test]
fn ordered_subject_sorts_by_sent_date_with_the_received_time_where_date_is_missing() {
    let f = Fixture::thread_fixture(&[
        (format!("Subject: b\n{}", date(30)), 1),
        (format!("Subject: a\n{}", date(20)), 2),
        // Sent before the message it answers: it heads the thread.
        (format!("Subject: Re: a\n{}", date(10)), 3),
        // No Date: its received time (1970) is its sent date, before everything else.
        ("Subject: Fwd: B".to_owned(), 4),
    ]);
    assert_eq!(f.thread(&Query::all(), ThreadAlgorithm::OrderedSubject), "(4 1)(3 2)");
    // The query chooses the messages threaded.
    assert_eq!(f.thread(&Query::subject("a"), ThreadAlgorithm::OrderedSubject), "(3 2)");
    assert_eq!(f.thread(&Query::uids([9..=9]), ThreadAlgorithm::References), "");
}

#[test]
fn a_reply_chain_twenty_thousand_deep_threads_without_recursion_and_is_one_conversation() {
    const N: u64 = 20_000;
    let f = Fixture::create();
    for chunk in (1..=N).collect::<Vec<_>>().chunks(10_000) {
        let batch = chunk
            .iter()
            .map(|&i| {
                let h = match i {
                    1 => "Subject: deep\nMessage-ID: <1@c>".to_owned(),
                    _ => format!("Subject: Re: deep\nMessage-ID: <{i}@c>\nIn-Reply-To: <{}@c>", i - 1),
                };
                (msg(&h), Flags::empty(), vec![], Timestamp::from_micros(i * 1_000_000))
            })
            .collect();
        f.append_to(f.inbox, batch);
    }
    let expected = format!("({})", (1..=N).map(|i| i.to_string()).collect::<Vec<_>>().join(" "));
    assert_eq!(f.thread(&Query::all(), ThreadAlgorithm::References), expected);
    let c = conversation(&f.db, f.mbx, 1).unwrap();
    assert_eq!(members(&f.db, f.mbx, c).len() as u64, N);
}
