//! The store from async code: a tokio program that delivers with `commit_async` and pushes changes JMAP-style
//! from a change subscription, with no thread blocked per waiting commit and no polling.
//!
//! ```text
//! cargo run --release --example async_push [DIR]
//! ```
//!
//! The pattern: mount and dismount in `spawn_blocking` (they run recovery and a final checkpoint); commit with
//! `Engine::commit_async` (the writer thread wakes the task once the operation is durable and applied); read
//! inline (a read is a short LMDB snapshot, microseconds, never waiting for the writer); and wait for changes with
//! `Subscription::changed()`, then ask `MailStore::changes` what changed since the client's state token.

use std::sync::Arc;
use std::time::Duration;

use mailstore::engine::Scope;
use mailstore::model::{Changes, Flags, FolderRole, MailEngine, MailOp, MailboxKind};
use mailstore::{Engine, Options};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DELIVERIES: u64 = 200;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let dir = match std::env::args().nth(1) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("mailstore-async-push-{}", std::process::id())),
    };
    let path = dir.clone();
    let db: Arc<MailEngine> =
        Arc::new(tokio::task::spawn_blocking(move || Engine::mount(path, Options::default())).await??);

    let create = MailOp::create_mailbox(&format!("push{}@example.com", std::process::id()), "Push", MailboxKind::User);
    let MailOp::CreateMailbox { guid, .. } = create else { unreachable!() };
    db.commit_async(create).await?;
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &guid, FolderRole::Inbox))?.ok_or("no Inbox")?.id;

    // The push side: subscribe first, then read the state token, then wait.
    let mut changes = db.subscribe(Scope::Key(guid));
    let mut state = db.read(|s, txn| s.mailbox(txn, &guid))?.ok_or("no mailbox")?.highest_modseq;
    let pusher = {
        let db = Arc::clone(&db);
        tokio::spawn(async move {
            let (mut pushes, mut created) = (0u64, 0usize);
            while created < DELIVERIES as usize {
                changes.changed().await?;
                match db.read(|s, txn| s.changes(txn, &guid, state))? {
                    Changes::Feed(feed) => {
                        created += feed.created.len();
                        state = feed.new_state;
                        pushes += 1;
                    }
                    Changes::CannotCalculate { .. } => return Err::<_, BoxError>("history trimmed".into()),
                }
            }
            Ok((pushes, created, state))
        })
    };

    // The delivery side: many commits in flight from a few tasks; each await returns once durable.
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..4 {
        let db = Arc::clone(&db);
        tasks.spawn(async move {
            for i in (t..DELIVERIES).step_by(4) {
                let raw = format!("From: sender@example.net\r\nSubject: async {i}\r\n\r\nhello\r\n").into_bytes();
                db.commit_async(MailOp::append(guid, inbox, raw, Flags::empty(), Vec::new())).await?;
            }
            Ok::<_, mailstore::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let delivered_in = started.elapsed();
    let (pushes, created, state) = tokio::time::timeout(Duration::from_secs(10), pusher).await???;
    println!(
        "delivered {DELIVERIES} messages from 4 tasks in {:.0} ms; the push side saw {created} created items in \
         {pushes} wake-ups, now at state {state}",
        delivered_in.as_secs_f64() * 1e3
    );

    let db = Arc::into_inner(db).ok_or("a handle is still alive")?;
    tokio::task::spawn_blocking(move || db.dismount()).await??;
    if std::env::args().nth(1).is_none() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
