//! What the audit trail costs in bytes (issue 20): per 1,000 audited operations, the state bytes of their
//! entries (key, encoded value and the per-value checksum of the state store) and the log bytes the actor adds to
//! each record; and the commit rate of audited against unaudited operations of the same work, interleaved.
//!
//! `MAILSTORE_AUDIT_OPS` operations per kind (default 1,000), one UID each: a delegate's soft delete (`DeleteItems`
//! wrapped in `MailOp::by`) and the owner's unattributed one (audited too, without an actor). `Durability::Relaxed`.
//!
//! ```text
//! cargo bench --bench audit
//! ```

use std::time::Instant;

use mailstore::internals::codec::{encode, encode_record};
use mailstore::internals::engine::CHECKSUM_LEN;
use mailstore::model::{ActorRole, FolderRole, MailEngine, MailOp, MailboxKind};
use mailstore::{Durability, Engine, Guid, Options, Timestamp};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A mailbox with `n` small messages in its Inbox.
fn setup(db: &MailEngine, address: &str, n: u64) -> (Guid, u64) {
    let op = MailOp::create_mailbox(address, "Bench", MailboxKind::User);
    let guid = op.mailbox().expect("a mailbox operation");
    db.commit(op).expect("create");
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &guid, FolderRole::Inbox)).expect("read").expect("inbox").id;
    let ops: Vec<MailOp> = (0..n)
        .map(|i| {
            MailOp::append(
                guid,
                inbox,
                format!("Subject: {i}\r\n\r\nbody {i}\r\n").into_bytes(),
                Default::default(),
                vec![],
            )
        })
        .collect();
    for chunk in ops.chunks(500) {
        db.commit(MailOp::batch(chunk.to_vec())).expect("deliver");
    }
    (guid, inbox)
}

fn main() {
    let n = env_u64("MAILSTORE_AUDIT_OPS", 1_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let db: MailEngine = Engine::mount(dir.path(), Options::default().durability(Durability::Relaxed)).expect("mount");
    let (delegated, d_inbox) = setup(&db, "delegated@example.com", n);
    let (owned, o_inbox) = setup(&db, "owned@example.com", n);

    let (mut audited_s, mut plain_s) = (0f64, 0f64);
    for uid in 1..=n as u32 {
        let started = Instant::now();
        db.commit(MailOp::delete_items(delegated, d_inbox, vec![uid]).by("assistant@example.com", ActorRole::Delegate))
            .expect("delete");
        audited_s += started.elapsed().as_secs_f64();
        let started = Instant::now();
        db.commit(MailOp::delete_items(owned, o_inbox, vec![uid])).expect("delete");
        plain_s += started.elapsed().as_secs_f64();
    }

    let from = Timestamp::from_micros(0);
    let to = Timestamp::from_micros(u64::MAX);
    let entries = db.read(|s, txn| s.audit(txn, &delegated, from, to, usize::MAX)).expect("audit");
    let unattributed = db.read(|s, txn| s.audit(txn, &owned, from, to, usize::MAX)).expect("audit");
    assert_eq!((entries.len() as u64, unattributed.len() as u64), (n, n));
    let state = |es: &[mailstore::model::AuditEntry]| -> usize {
        es.iter().map(|e| 36 + encode(e).expect("encode").len() + CHECKSUM_LEN).sum()
    };
    let sample = MailOp::delete_items(delegated, d_inbox, vec![1]);
    let plain_record = encode_record(&sample, &[]).expect("encode").len();
    let wrapped_record =
        encode_record(&sample.by("assistant@example.com", ActorRole::Delegate), &[]).expect("encode").len();
    let per_1000 = |bytes: usize| bytes as f64 * 1_000.0 / n as f64;
    println!("audit trail, {n} soft deletes of one item each per kind (Durability::Relaxed)");
    println!(
        "  state bytes per 1,000 entries: {:.0} with an actor (assistant@example.com, Delegate), {:.0} unattributed",
        per_1000(state(&entries)),
        per_1000(state(&unattributed))
    );
    println!(
        "  log bytes per 1,000 records added by the actor: {:.0} ({wrapped_record} against {plain_record} bytes a record)",
        1_000.0 * (wrapped_record - plain_record) as f64
    );
    println!(
        "  commit rate: {:.0}/s with an actor, {:.0}/s unattributed (ratio {:.3}), one committer",
        n as f64 / audited_s,
        n as f64 / plain_s,
        plain_s / audited_s
    );
    db.dismount().expect("dismount");
}
