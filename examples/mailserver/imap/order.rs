//! SORT (RFC 5256, with RFC 5957's DISPLAYFROM / DISPLAYTO) and THREAD (RFC 5256 ORDEREDSUBJECT and REFERENCES),
//! answered by the store's `MailStore::sort` and `MailStore::thread` over the same queries as SEARCH.

use imap_codec::imap_types::extensions::sort::{SortCriterion, SortKey as ImapSortKey};
use imap_codec::imap_types::extensions::thread::ThreadingAlgorithm;
use imap_codec::imap_types::search::SearchKey;
use mailstore::model::MailError;
use mailstore::model::search::{
    Query, SortField, SortKey, Thread, ThreadAlgorithm, ThreadNode, Window, format_threads,
};

use super::{CmdResult, Fail, Session, bad, no};
use crate::search;

fn sort_key(c: &SortCriterion) -> SortKey {
    let field = match c.key {
        ImapSortKey::Arrival => SortField::Arrival,
        ImapSortKey::Cc => SortField::Cc,
        ImapSortKey::Date => SortField::Date,
        ImapSortKey::From => SortField::From,
        ImapSortKey::Size => SortField::Size,
        ImapSortKey::Subject => SortField::Subject,
        ImapSortKey::To => SortField::To,
        ImapSortKey::DisplayFrom => SortField::DisplayFrom,
        ImapSortKey::DisplayTo => SortField::DisplayTo,
    };
    if c.reverse { SortKey::new(field).reversed() } else { SortKey::new(field) }
}

/// A store error of a query as the client's mistake (BAD) where it is one.
fn answer<T>(result: mailstore::Result<T>) -> Result<T, Fail> {
    match result {
        Err(mailstore::Error::Mail(MailError::InvalidQuery(e))) => bad(format!("invalid search: {e}")),
        other => Ok(other?),
    }
}

impl Session<'_> {
    /// The query of `keys`, limited to the messages of the session's view: a message that arrived since has a
    /// UID above the view's last and no sequence number yet, so every answer is one the client was told about.
    fn view_query(&self, keys: &[SearchKey<'_>]) -> Result<Option<Query>, Fail> {
        let sel = self.selected()?;
        let Some(&last) = sel.uids.last() else { return Ok(None) };
        let query = match search::query(keys, &sel.uids) {
            Ok(q) => q,
            Err(search::Unsupported::TooDeep) => return bad("search keys nest too deeply"),
            Err(search::Unsupported::Date) => return bad("a search date out of range"),
        };
        Ok(Some(query.and(Query::uids([1..=last]))))
    }

    /// A message's number for the client: its UID, or its sequence number in the session's view.
    fn number(&self, uid: u32, by_uid: bool) -> Option<u32> {
        let sel = self.selected.as_ref()?;
        if by_uid { Some(uid) } else { sel.uids.binary_search(&uid).ok().map(|i| i as u32 + 1) }
    }

    pub(super) fn sort(&mut self, criteria: &[SortCriterion], keys: &[SearchKey<'_>], by_uid: bool) -> CmdResult {
        let account = self.authed()?;
        let folder = self.selected()?.folder;
        let mut line = String::from("* SORT");
        if let Some(query) = self.view_query(keys)? {
            let keys: Vec<SortKey> = criteria.iter().map(sort_key).collect();
            let guid = account.guid;
            let found = answer(account.engine.read(|s, txn| s.sort(txn, &guid, folder, &query, &keys, Window::all())))?;
            for hit in &found.hits {
                if let Some(n) = self.number(hit.uid, by_uid) {
                    line.push_str(&format!(" {n}"));
                }
            }
        }
        line.push_str("\r\n");
        self.write(line.as_bytes())?;
        Ok(format!("{}SORT completed", if by_uid { "UID " } else { "" }))
    }

    pub(super) fn thread(
        &mut self,
        algorithm: &ThreadingAlgorithm<'_>,
        keys: &[SearchKey<'_>],
        by_uid: bool,
    ) -> CmdResult {
        let algorithm = match algorithm {
            ThreadingAlgorithm::OrderedSubject => ThreadAlgorithm::OrderedSubject,
            ThreadingAlgorithm::References => ThreadAlgorithm::References,
            ThreadingAlgorithm::Other(other) => return no(format!("unknown threading algorithm {}", other.as_ref())),
        };
        let account = self.authed()?;
        let folder = self.selected()?.folder;
        let mut line = String::from("* THREAD");
        if let Some(query) = self.view_query(keys)? {
            let guid = account.guid;
            let found = answer(account.engine.read(|s, txn| s.thread(txn, &guid, folder, &query, algorithm)))?;
            // Every message is in the view (`view_query`), so each has a number.
            let numbered: Vec<Thread> = found
                .threads
                .iter()
                .map(|t| Thread {
                    nodes: t
                        .nodes
                        .iter()
                        .map(|n| ThreadNode { uid: n.uid.and_then(|u| self.number(u, by_uid)), parent: n.parent })
                        .collect(),
                })
                .collect();
            if !numbered.is_empty() {
                line.push(' ');
                line.push_str(&format_threads(&numbered));
            }
        }
        line.push_str("\r\n");
        self.write(line.as_bytes())?;
        Ok(format!("{}THREAD completed", if by_uid { "UID " } else { "" }))
    }
}
