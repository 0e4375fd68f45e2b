//! Model-based property test of the mailbox model: random sequences of folder and item operations, with
//! remounts in between, against a plain in-memory model. UIDs, UIDNEXT, MODSEQs, flags, keywords, counts, unread
//! counts, sizes and quota usage must match the model after every step, the state must survive every remount,
//! and the change feed since every earlier state token must describe exactly what happened to the items.

use std::collections::BTreeMap;

use mailstore::model::Fai;
use mailstore::model::{
    Changes, Entity, FlagAction, Flags, FolderId, FolderRole, MailEngine, MailOp, MailOutput, MailboxKind, Uid,
};
use mailstore::{Engine, Guid, Options, Timestamp};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Append { folder: usize, size: usize, seen: bool },
    Store { folder: usize, pick: Vec<usize>, action: u8, flags: u8, keyword: Option<u8>, guarded: bool },
    Copy { from: usize, to: usize, pick: Vec<usize>, remove: bool },
    Expunge { folder: usize, only: Option<Vec<usize>> },
    Delete { folder: usize, pick: Vec<usize> },
    Recover { pick: Vec<usize> },
    Remount,
}

fn step() -> impl Strategy<Value = Step> {
    let pick = prop::collection::vec(0usize..12, 0..4);
    prop_oneof![
        5 => (0usize..3, 1usize..400, any::<bool>()).prop_map(|(folder, size, seen)| Step::Append { folder, size, seen }),
        3 => (0usize..3, pick.clone(), 0u8..3, 0u8..32, prop::option::of(0u8..3), any::<bool>())
            .prop_map(|(folder, pick, action, flags, keyword, guarded)| Step::Store { folder, pick, action, flags, keyword, guarded }),
        2 => (0usize..3, 0usize..3, pick.clone(), any::<bool>()).prop_map(|(from, to, pick, remove)| Step::Copy { from, to, pick, remove }),
        1 => (0usize..3, prop::option::of(pick.clone())).prop_map(|(folder, only)| Step::Expunge { folder, only }),
        1 => (0usize..3, pick.clone()).prop_map(|(folder, pick)| Step::Delete { folder, pick }),
        1 => pick.prop_map(|pick| Step::Recover { pick }),
        1 => Just(Step::Remount),
    ]
}

#[derive(Clone, Debug, Default, PartialEq)]
struct ModelItem {
    flags: u8,
    keywords: Vec<String>,
    size: u64,
    modseq: u64,
    /// The model folder an item in Deletions came from.
    origin: Option<usize>,
}

#[derive(Clone, Debug, Default)]
struct ModelFolder {
    uidnext: Uid,
    items: BTreeMap<Uid, ModelItem>,
}

fn check(
    db: &MailEngine,
    mbx: Guid,
    ids: &[FolderId],
    model: &[ModelFolder],
    modseq: u64,
) -> Result<(), TestCaseError> {
    let info = db.read(|s, txn| s.mailbox(txn, &mbx)).unwrap().unwrap();
    prop_assert_eq!(info.highest_modseq, modseq);
    // Counters, the UID index and its listing records agree with the items.
    prop_assert_eq!(db.read(|s, txn| s.verify_counters(txn)).unwrap(), Vec::<String>::new());
    let live = &model[..3];
    prop_assert_eq!(info.items, live.iter().map(|f| f.items.len() as u64).sum::<u64>());
    prop_assert_eq!(info.size, live.iter().flat_map(|f| f.items.values()).map(|i| i.size).sum::<u64>());
    prop_assert_eq!(info.recoverable_items, model[3].items.len() as u64);
    for (id, m) in ids.iter().zip(model) {
        let f = db.read(|s, txn| s.folder(txn, &mbx, *id)).unwrap().unwrap();
        let items = db.read(|s, txn| s.items_by_uid(txn, &mbx, *id, 1, 10_000, Fai::Include)).unwrap();
        // The listing records read in place, newest first, are the same items.
        let mut newest: Vec<_> = db
            .read(|s, txn| Ok(s.newest_summaries(txn, &mbx, *id, 10_000)?.iter().map(|s| s.to_item_info()).collect()))
            .unwrap();
        newest.reverse();
        prop_assert_eq!(&newest, &items);
        prop_assert_eq!(f.uidnext, m.uidnext);
        prop_assert_eq!(f.total, m.items.len() as u64);
        prop_assert_eq!(f.unread, m.items.values().filter(|i| i.flags & 1 == 0).count() as u64);
        prop_assert_eq!(f.size, m.items.values().map(|i| i.size).sum::<u64>());
        let got: BTreeMap<Uid, ModelItem> = items
            .into_iter()
            .map(|i| {
                let origin = i.deleted.map(|d| ids.iter().position(|id| *id == d.from).unwrap_or(usize::MAX));
                (i.uid, ModelItem { flags: i.flags.0, keywords: i.keywords, size: i.size, modseq: i.modseq, origin })
            })
            .collect();
        prop_assert_eq!(&got, &m.items);
        if let Some(max) = m.items.values().map(|i| i.modseq).max() {
            prop_assert!(f.highest_modseq >= max);
        }
    }
    Ok(())
}

/// Every item of the checked folders, as change-log entities with their MODSEQ.
fn items_now(db: &MailEngine, mbx: Guid, ids: &[FolderId]) -> BTreeMap<Entity, u64> {
    let mut out = BTreeMap::new();
    for id in ids {
        for i in db.read(|s, txn| s.items_by_uid(txn, &mbx, *id, 1, 10_000, Fai::Include)).unwrap() {
            out.insert(Entity::Item { id: i.id, folder: i.folder, uid: i.uid }, i.modseq);
        }
    }
    out
}

/// The folded change feed since `token` equals the difference between the items then and now.
fn check_feed(
    db: &MailEngine,
    mbx: Guid,
    ids: &[FolderId],
    token: u64,
    then: &BTreeMap<Entity, u64>,
    modseq: u64,
) -> Result<(), TestCaseError> {
    let Changes::Feed(feed) = db.read(|s, txn| s.changes(txn, &mbx, token)).unwrap() else {
        return Err(TestCaseError::fail("history was never trimmed"));
    };
    let now = items_now(db, mbx, ids);
    let items = |v: &[Entity]| v.iter().filter(|e| matches!(e, Entity::Item { .. })).copied().collect::<Vec<_>>();
    let created: Vec<Entity> = now.keys().filter(|e| !then.contains_key(e)).copied().collect();
    let destroyed: Vec<Entity> = then.keys().filter(|e| !now.contains_key(e)).copied().collect();
    let updated: Vec<Entity> =
        now.iter().filter(|(e, m)| then.contains_key(e) && **m > token).map(|(e, _)| *e).collect();
    prop_assert_eq!(items(&feed.created), created);
    prop_assert_eq!(items(&feed.destroyed), destroyed);
    prop_assert_eq!(items(&feed.updated), updated);
    prop_assert_eq!(feed.new_state, modseq);
    Ok(())
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options::default().log_target_size(8 << 10).checkpoint_depth(32 << 10);
    let mut db: MailEngine = Engine::mount(dir.path(), options()).unwrap();
    let op = MailOp::create_mailbox("prop@example.com", "Prop", MailboxKind::User);
    let MailOp::CreateMailbox { guid: mbx, .. } = op else { unreachable!() };
    let MailOutput::MailboxCreated { modseq: created, .. } = db.commit(op).unwrap().output else { unreachable!() };
    let mut modseq = created;
    let ids: Vec<FolderId> = [FolderRole::Inbox, FolderRole::Archive, FolderRole::Drafts, FolderRole::Deletions]
        .into_iter()
        .map(|r| db.read(|s, txn| s.folder_by_role(txn, &mbx, r)).unwrap().unwrap().id)
        .collect();
    let mut model = vec![ModelFolder { uidnext: 1, ..Default::default() }; 4];
    // A state token taken at every remount, with the items that existed then: the change feed since each token
    // must match what the items themselves say happened.
    let mut tokens = vec![(created, items_now(&db, mbx, &ids))];
    let uids_of = |m: &ModelFolder, pick: &[usize]| -> Vec<Uid> {
        let existing: Vec<Uid> = m.items.keys().copied().collect();
        // Mostly existing UIDs, sometimes one that does not exist.
        pick.iter().map(|p| existing.get(*p).copied().unwrap_or(m.uidnext + *p as u32)).collect()
    };
    for step in steps {
        match step {
            Step::Append { folder, size, seen } => {
                let flags = if seen { Flags::SEEN } else { Flags::empty() };
                let raw = vec![b'x'; size];
                let out = db.commit(MailOp::append(mbx, ids[folder], raw, flags, vec![])).unwrap().output;
                let MailOutput::Appended { uid, modseq: m, .. } = out else { unreachable!() };
                modseq += 1;
                prop_assert_eq!((uid, m), (model[folder].uidnext, modseq));
                model[folder].items.insert(
                    uid,
                    ModelItem { flags: flags.0, keywords: vec![], size: size as u64, modseq, origin: None },
                );
                model[folder].uidnext += 1;
            }
            Step::Store { folder, pick, action, flags, keyword, guarded } => {
                let uids = uids_of(&model[folder], &pick);
                let action = [FlagAction::Add, FlagAction::Remove, FlagAction::Replace][action as usize];
                let keywords: Vec<String> = keyword.map(|k| format!("kw{k}")).into_iter().collect();
                // A guard at the current MODSEQ - 2 refuses items changed in the last two operations.
                let since = guarded.then(|| modseq.saturating_sub(2));
                let out = db
                    .commit(MailOp::StoreFlags {
                        mailbox: mbx,
                        folder: ids[folder],
                        uids: uids.clone(),
                        action,
                        flags: Flags(flags),
                        keywords: keywords.clone(),
                        unchanged_since: since,
                    })
                    .unwrap()
                    .output;
                let MailOutput::FlagsStored { modseq: m, modified, .. } = out else { unreachable!() };
                let mut sorted = uids.clone();
                sorted.sort_unstable();
                sorted.dedup();
                let mut expect_modified = Vec::new();
                let mut changed = false;
                for uid in sorted {
                    let Some(item) = model[folder].items.get_mut(&uid) else { continue };
                    if since.is_some_and(|s| item.modseq > s) {
                        expect_modified.push(uid);
                        continue;
                    }
                    let (f, mut k) = match action {
                        FlagAction::Add => (item.flags | flags, [item.keywords.clone(), keywords.clone()].concat()),
                        FlagAction::Remove => (
                            item.flags & !flags,
                            item.keywords.iter().filter(|x| !keywords.contains(x)).cloned().collect(),
                        ),
                        FlagAction::Replace => (flags, keywords.clone()),
                    };
                    k.sort();
                    k.dedup();
                    if (f, &k) != (item.flags, &item.keywords) {
                        if !changed {
                            modseq += 1;
                            changed = true;
                        }
                        item.flags = f;
                        item.keywords = k;
                        item.modseq = modseq;
                    }
                }
                prop_assert_eq!(modified, expect_modified);
                prop_assert_eq!(m, changed.then_some(modseq));
            }
            Step::Copy { from, to, pick, remove } => {
                let uids = uids_of(&model[from], &pick);
                let result = db.commit(MailOp::CopyItems {
                    mailbox: mbx,
                    from: ids[from],
                    uids: uids.clone(),
                    to: ids[to],
                    remove_source: remove,
                });
                if from == to {
                    prop_assert!(result.is_err());
                    continue;
                }
                let MailOutput::Copied { mapping, .. } = result.unwrap().output else { unreachable!() };
                let mut sorted = uids.clone();
                sorted.sort_unstable();
                sorted.dedup();
                let mut expected = Vec::new();
                let present: Vec<Uid> = sorted.into_iter().filter(|u| model[from].items.contains_key(u)).collect();
                if !present.is_empty() {
                    modseq += 1;
                }
                for uid in present {
                    let mut item = model[from].items[&uid].clone();
                    item.modseq = modseq;
                    let new_uid = model[to].uidnext;
                    model[to].uidnext += 1;
                    model[to].items.insert(new_uid, item);
                    if remove {
                        model[from].items.remove(&uid);
                    }
                    expected.push((uid, new_uid));
                }
                prop_assert_eq!(mapping, expected);
            }
            Step::Expunge { folder, only } => {
                let uids = only.map(|p| uids_of(&model[folder], &p));
                let out = db.commit(MailOp::expunge(mbx, ids[folder], uids.clone())).unwrap().output;
                let MailOutput::Expunged { uids: gone, .. } = out else { unreachable!() };
                let expected: Vec<Uid> = model[folder]
                    .items
                    .iter()
                    .filter(|(u, i)| {
                        i.flags & Flags::DELETED.0 != 0 && uids.as_ref().is_none_or(|only| only.contains(u))
                    })
                    .map(|(u, _)| *u)
                    .collect();
                if !expected.is_empty() {
                    modseq += 1;
                }
                for u in &expected {
                    model[folder].items.remove(u);
                }
                prop_assert_eq!(gone, expected);
            }
            Step::Delete { folder, pick } => {
                let uids = uids_of(&model[folder], &pick);
                let out = db
                    .commit(MailOp::DeleteItems {
                        mailbox: mbx,
                        folder: ids[folder],
                        uids: uids.clone(),
                        at: Timestamp::from_micros(5),
                    })
                    .unwrap()
                    .output;
                let MailOutput::DeletedToRecoverable { mapping, .. } = out else { unreachable!() };
                let mut sorted = uids;
                sorted.sort_unstable();
                sorted.dedup();
                let present: Vec<Uid> = sorted.into_iter().filter(|u| model[folder].items.contains_key(u)).collect();
                if !present.is_empty() {
                    modseq += 1;
                }
                let mut expected = Vec::new();
                for uid in present {
                    let mut item = model[folder].items.remove(&uid).unwrap();
                    item.modseq = modseq;
                    item.origin = Some(folder);
                    let new_uid = model[3].uidnext;
                    model[3].uidnext += 1;
                    model[3].items.insert(new_uid, item);
                    expected.push((uid, new_uid));
                }
                prop_assert_eq!(mapping, expected);
            }
            Step::Recover { pick } => {
                let uids = uids_of(&model[3], &pick);
                let out = db.commit(MailOp::RecoverItems { mailbox: mbx, uids: uids.clone() }).unwrap().output;
                let MailOutput::Recovered { mapping, .. } = out else { unreachable!() };
                let mut sorted = uids;
                sorted.sort_unstable();
                sorted.dedup();
                let present: Vec<Uid> = sorted.into_iter().filter(|u| model[3].items.contains_key(u)).collect();
                if !present.is_empty() {
                    modseq += 1;
                }
                let mut expected = Vec::new();
                for uid in present {
                    let mut item = model[3].items.remove(&uid).unwrap();
                    let to = item.origin.take().unwrap();
                    item.modseq = modseq;
                    let new_uid = model[to].uidnext;
                    model[to].uidnext += 1;
                    model[to].items.insert(new_uid, item);
                    expected.push((uid, ids[to], new_uid));
                }
                prop_assert_eq!(mapping, expected);
            }
            Step::Remount => {
                db.dismount().unwrap();
                db = Engine::mount(dir.path(), options()).unwrap();
                tokens.push((modseq, items_now(&db, mbx, &ids)));
            }
        }
        check(&db, mbx, &ids, &model, modseq)?;
        for (token, then) in &tokens {
            check_feed(&db, mbx, &ids, *token, then, modseq)?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn mailbox_operations_match_the_model(steps in prop::collection::vec(step(), 1..60)) {
        run(steps)?;
    }
}
