//! The source side of the backup tests: deliveries that record the source's digest after each commit, so a
//! restore to any LSN or time can be compared with what the source was then.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailstore::model::{Flags, FolderRole, MailEngine, MailOp, MailboxKind};
use mailstore::{Engine, Guid, LogRetention, Lsn, Options};

/// Small generations, kept until backed up.
pub fn options() -> Options {
    Options::default().log_target_size(16 << 10).retention(LogRetention::UntilBackup)
}

pub fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

/// What the source looked like after each commit: its digest, and a time after that commit and before the next.
pub type History = BTreeMap<Lsn, (String, u64)>;

pub fn record(db: &MailEngine, lsn: Lsn, history: &parking_lot::Mutex<History>) {
    let digest = db.read(|s, txn| s.digest(txn)).unwrap();
    history.lock().insert(lsn, (digest, now_micros()));
    // The next commit's time is strictly later than the time recorded here.
    std::thread::sleep(Duration::from_millis(1));
}

/// Delivers `n` messages to the Inbox, recording the history after each.
pub fn deliver_n(db: &MailEngine, mbx: Guid, n: u64, history: &parking_lot::Mutex<History>, done: &AtomicU64) {
    let inbox = db.read(|s, txn| s.folder_by_role(txn, &mbx, FolderRole::Inbox)).unwrap().unwrap().id;
    for _ in 0..n {
        let i = done.fetch_add(1, Ordering::SeqCst);
        let raw = format!("Subject: message {i}\r\nFrom: a@example.com\r\n\r\n{}\r\n", "body line\r\n".repeat(20));
        let lsn = db.commit(MailOp::append(mbx, inbox, raw.into_bytes(), Flags::empty(), vec![])).unwrap().lsn;
        record(db, lsn, history);
    }
}

/// A source database at `dir` with one mailbox, its creation recorded in a new history.
pub fn source(dir: &Path) -> (Arc<MailEngine>, Guid, Arc<parking_lot::Mutex<History>>) {
    let db: Arc<MailEngine> = Arc::new(Engine::mount(dir, options()).unwrap());
    let history = Arc::new(parking_lot::Mutex::new(History::new()));
    let op = MailOp::create_mailbox("alice@example.com", "Alice", MailboxKind::User);
    let MailOp::CreateMailbox { guid: mbx, .. } = op else { unreachable!() };
    let lsn = db.commit(op).unwrap().lsn;
    record(&db, lsn, &history);
    (db, mbx, history)
}

/// Runs `backup` while another thread delivers 150 messages, once 40 of them have started (`done` counts them),
/// and returns its result after the deliveries have ended.
pub fn while_delivering<T>(
    db: &Arc<MailEngine>,
    mbx: Guid,
    history: &Arc<parking_lot::Mutex<History>>,
    done: &Arc<AtomicU64>,
    backup: impl FnOnce() -> T,
) -> T {
    let delivering = {
        let (db, history, done) = (Arc::clone(db), Arc::clone(history), Arc::clone(done));
        std::thread::spawn(move || deliver_n(&db, mbx, 150, &history, &done))
    };
    while done.load(Ordering::SeqCst) < 40 {
        std::thread::sleep(Duration::from_millis(2));
    }
    let result = backup();
    delivering.join().unwrap();
    result
}
