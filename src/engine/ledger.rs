//! The ledger as it is kept: every event becomes a [`LedgerLine`] that reads on its own, the newest
//! lines of a user stay in memory (the tail, at most [`LEDGER_PAGE_LINES`]), and a full tail leaves
//! memory as one page for the history on disk. What a page holds is decided by `apply`, so replay
//! cuts the same pages as live operation did.
//!
//! Reading a page of the ledger is pure too: [`page_of`] walks lines newest first, whichever store
//! they come from.

use super::event::Event;
use super::name::Name;
use super::user::Reservation;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Lines a user keeps in memory before they go to disk as one page. A page is one write to the
/// history store, so this is also how many ledger entries share one write.
pub const LEDGER_PAGE_LINES: usize = 64;

/// A ledger entry with what it refers to, so that it reads on its own without the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerLine {
    /// Shared with the journal record that carries the same event: one copy, not two.
    #[serde(deserialize_with = "super::event::deserialize_shared")]
    pub event: Arc<Event>,
    /// On the entry that ended a reservation (`usage.committed`, `usage.released`,
    /// `usage.expired`): the reservation as it ended. This is also where a finished reservation is
    /// found again once it has left memory.
    /// Boxed: most lines have none, and a line is moved several times on its way to disk.
    pub reservation: Option<Box<Reservation>>,
    /// The pack of the balance a `credits.*` entry is about.
    pub pack_id: Option<Name>,
}

impl LedgerLine {
    /// The reservation this line ended, if it names `id`.
    pub fn ended(&self, id: &str) -> Option<&Reservation> {
        self.reservation.as_deref().filter(|r| r.id == id)
    }
}

/// One page of a user's ledger as a caller sees it, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerPage {
    pub entries: Vec<LedgerLine>,
    pub has_more: bool,
}

/// `limit` lines after the line `starting_after` from `lines`, which must come newest first;
/// `None` if `starting_after` names no line. Reads one line past the page to know `has_more`.
pub fn page_of(
    lines: impl IntoIterator<Item = LedgerLine>,
    limit: usize,
    starting_after: Option<&str>,
) -> Option<LedgerPage> {
    let mut lines = lines.into_iter();
    if let Some(cursor) = starting_after {
        lines.by_ref().find(|l| l.event.id == cursor)?;
    }
    let mut entries: Vec<LedgerLine> = lines.by_ref().take(limit).collect();
    let has_more = if entries.len() == limit {
        lines.next().is_some()
    } else {
        false
    };
    entries.truncate(limit);
    Some(LedgerPage { entries, has_more })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Ts;
    use crate::engine::event::EventKind;

    fn line(id: &str) -> LedgerLine {
        LedgerLine {
            event: Arc::new(Event {
                id: id.into(),
                at: Ts(0),
                kind: EventKind::UsageExpired {
                    reservation_id: "res_x".into(),
                },
            }),
            reservation: None,
            pack_id: None,
        }
    }

    fn ids(page: &LedgerPage) -> Vec<&str> {
        page.entries.iter().map(|l| l.event.id.as_str()).collect()
    }

    #[test]
    fn a_page_starts_after_its_cursor_and_knows_whether_more_follow() {
        let lines = || ["e5", "e4", "e3", "e2", "e1"].map(line);
        let first = page_of(lines(), 2, None).expect("no cursor");
        assert_eq!(ids(&first), ["e5", "e4"]);
        assert!(first.has_more);
        let next = page_of(lines(), 2, Some("e4")).expect("known cursor");
        assert_eq!(ids(&next), ["e3", "e2"]);
        assert!(next.has_more);
        let last = page_of(lines(), 2, Some("e2")).expect("known cursor");
        assert_eq!(ids(&last), ["e1"]);
        assert!(!last.has_more);
        let exact = page_of(lines(), 5, None).expect("no cursor");
        assert!(
            !exact.has_more,
            "a page that ends with the ledger has no more"
        );
    }

    #[test]
    fn an_unknown_cursor_is_no_page() {
        assert_eq!(page_of(["e1"].map(line), 10, Some("e9")), None);
    }
}
