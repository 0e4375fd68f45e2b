//! The mailbox commands: `mailboxes`, `folders`, `recover-mailbox`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mailstore::RoTxn;
use mailstore::engine;
use mailstore::model::{MailEngine, MailStore, MailboxInfo, recover_mailbox};
use mailstore::{Engine, Guid, Options, StateMachine, store};

use crate::{Failure, print_fields};

/// The database of the store at `root` that holds `mailbox`.
pub(crate) fn store_database_holding(root: &Path, mailbox: &str) -> Result<PathBuf, Failure> {
    for (_, dir) in store::database_dirs(root)? {
        if engine::machine_name(&dir).is_ok_and(|m| m == <MailStore as StateMachine>::NAME)
            && engine::with_state::<MailStore, _>(&dir, |s, txn| find_mailbox(s, txn, mailbox))
                .is_ok_and(|m| m.is_some())
        {
            return Ok(dir);
        }
    }
    Err(Failure::error(format_args!("no database of {} holds mailbox {mailbox:?}", root.display())))
}

fn find_mailbox(s: &MailStore, txn: &RoTxn<'_>, mailbox: &str) -> mailstore::Result<Option<MailboxInfo>> {
    match mailbox.parse::<Guid>() {
        Ok(guid) => s.mailbox(txn, &guid),
        Err(_) => s.mailbox_by_address(txn, mailbox),
    }
}

fn require_mail_database(dir: &Path) -> Result<(), Failure> {
    let machine = engine::machine_name(dir)?;
    if machine != <MailStore as StateMachine>::NAME {
        return Err(Failure::error(format_args!("{} holds {machine:?} state, not mailboxes", dir.display())));
    }
    Ok(())
}

pub(crate) fn mailboxes(dir: &Path) -> Result<ExitCode, Failure> {
    require_mail_database(dir)?;
    let list = engine::with_state::<MailStore, _>(dir, |s, txn| s.mailboxes(txn))?;
    println!(
        "{:<36}  {:<30}  {:<22}  {:>7}  {:>12}  {:>9}  {:>12}  {:>8}",
        "GUID", "ADDRESS", "KIND", "ITEMS", "BYTES", "RECOV", "RECOV BYTES", "MODSEQ"
    );
    for m in &list {
        println!(
            "{:<36}  {:<30}  {:<22}  {:>7}  {:>12}  {:>9}  {:>12}  {:>8}",
            m.guid.to_string(),
            m.address,
            format!("{:?}", m.kind),
            m.items,
            m.size,
            m.recoverable_items,
            m.recoverable_size,
            m.highest_modseq
        );
    }
    println!("{} mailbox(es)", list.len());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn folders(dir: &Path, mailbox: &str) -> Result<ExitCode, Failure> {
    require_mail_database(dir)?;
    let (m, list) = engine::with_state::<MailStore, _>(dir, |s, txn| {
        let Some(m) = find_mailbox(s, txn, mailbox)? else { return Ok((None, Vec::new())) };
        let folders = s.folders(txn, &m.guid)?;
        Ok((Some(m), folders))
    })?;
    let Some(m) = m else {
        return Err(Failure::error(format_args!("{}: no mailbox {mailbox:?}", dir.display())));
    };
    println!("mailbox {} ({}), {:?}", m.address, m.guid, m.kind);
    println!(
        "{:<40}  {:>5}  {:<10}  {:>11}  {:>7}  {:>8}  {:>6}  {:>6}  {:>10}",
        "FOLDER", "ID", "USE", "UIDVALIDITY", "UIDNEXT", "MODSEQ", "TOTAL", "UNREAD", "BYTES"
    );
    // Depth-first from the root, children in id order.
    let mut stack: Vec<(u64, usize)> = list.iter().filter(|f| f.parent.is_none()).map(|f| (f.id, 0)).collect();
    while let Some((id, depth)) = stack.pop() {
        let Some(f) = list.iter().find(|f| f.id == id) else { continue };
        let name =
            if f.parent.is_none() { "(root)".to_string() } else { format!("{}{}", "  ".repeat(depth - 1), f.name) };
        let usage = f.role.and_then(|r| r.special_use()).unwrap_or(if f.hidden { "hidden" } else { "" });
        if f.parent.is_some() {
            println!(
                "{:<40}  {:>5}  {:<10}  {:>11}  {:>7}  {:>8}  {:>6}  {:>6}  {:>10}",
                name, f.id, usage, f.uidvalidity, f.uidnext, f.highest_modseq, f.total, f.unread, f.size
            );
        }
        let mut children: Vec<u64> = list.iter().filter(|c| c.parent == Some(id)).map(|c| c.id).collect();
        children.sort_unstable_by(|a, b| b.cmp(a));
        stack.extend(children.into_iter().map(|c| (c, depth + 1)));
    }
    Ok(ExitCode::SUCCESS)
}

/// `mailstore recover-mailbox PATH --from DIR --mailbox M [--into M] [--folder NAME]`: recovers mailbox `M` of the
/// dismounted database `from` (a database restored from a backup, say) into a new folder of mailbox `into`
/// (default: the same address or GUID) of the dismounted database `dir`.
pub(crate) fn recover_mailbox_into(
    dir: &Path,
    from: &Path,
    mailbox: &str,
    into: Option<&str>,
    folder: &str,
) -> Result<ExitCode, Failure> {
    require_mail_database(dir)?;
    require_mail_database(from)?;
    let options = Options::default().create_if_missing(false);
    let source: MailEngine = Engine::mount(from, options.clone())?;
    let target: MailEngine = Engine::mount(dir, options)?;
    let lookup = |db: &MailEngine, name: &str, side: &Path| -> Result<MailboxInfo, Failure> {
        db.read(|s, txn| find_mailbox(s, txn, name))?
            .ok_or_else(|| Failure::error(format_args!("{}: no mailbox {name:?}", side.display())))
    };
    let outcome = (|| {
        let theirs = lookup(&source, mailbox, from)?;
        let ours = lookup(&target, into.unwrap_or(mailbox), dir)?;
        Ok::<_, Failure>((recover_mailbox(&source, theirs.guid, &target, ours.guid, folder)?, ours))
    })();
    source.dismount()?;
    target.dismount()?;
    let (report, ours) = outcome?;
    println!("recovered mailbox {mailbox} of {} into {} of {}", from.display(), ours.address, dir.display());
    print_fields(
        "  ",
        &[
            ("folder", format!("{folder} (id {})", report.folder)),
            ("folders created", report.folders.to_string()),
            ("items", report.items.to_string()),
            ("bytes", report.bytes.to_string()),
        ],
    );
    Ok(ExitCode::SUCCESS)
}
