//! Offline commands: `vevee verify` and `vevee snapshot`, run while the server is stopped.

use crate::actors::snapshotter;
use crate::config::Config;
use crate::engine::audit::audit;
use crate::persistence::Journal;
use crate::startup::{Recovered, recover};
use std::fmt;

#[derive(Debug)]
pub struct VerifyReport {
    pub users: usize,
    pub balances: usize,
    pub pending_reservations: usize,
    pub journal_bytes: u64,
    pub snapshot_bytes: u64,
    pub snapshots: usize,
    pub next_seq: u64,
    /// The first broken invariant, with the user it belongs to.
    pub violation: Option<String>,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "users:                {}", self.users)?;
        writeln!(f, "balances:             {}", self.balances)?;
        writeln!(f, "pending reservations: {}", self.pending_reservations)?;
        writeln!(f, "journal records:      {}", self.next_seq)?;
        writeln!(f, "journal size:         {} bytes", self.journal_bytes)?;
        writeln!(
            f,
            "snapshots:            {} ({} bytes)",
            self.snapshots, self.snapshot_bytes
        )?;
        match &self.violation {
            None => write!(f, "invariants:           all hold"),
            Some(v) => write!(f, "VIOLATION:            {v}"),
        }
    }
}

/// Replays snapshot and journal and checks every invariant of every user.
pub fn verify(config: &Config) -> anyhow::Result<VerifyReport> {
    let Recovered {
        image,
        next_seq,
        journal,
        history,
        store,
    } = recover(config)?;
    let mut violation = None;
    let mut keys: Vec<_> = image.users.keys().collect();
    keys.sort();
    let (mut balances, mut pending_reservations) = (0, 0);
    for key in keys {
        let user = &image.users[key].unpack()?;
        balances += user.balances.len();
        pending_reservations += user.reservations.len();
        let mut on_disk = history.lines_newest_first(key, None);
        let lines: Vec<_> = (&mut on_disk).collect();
        if let Some(error) = on_disk.error {
            anyhow::bail!("reading the ledger of {}: {error}", key.user);
        }
        let ledger = user
            .ledger_tail
            .iter()
            .chain(&lines)
            .map(|line| &*line.event);
        if let Err(v) = audit(user, ledger) {
            violation = Some(format!(
                "{}/{}/{}: {v}",
                key.app,
                key.mode.as_str(),
                key.user
            ));
            break;
        }
    }
    let snapshots = store.list()?;
    let snapshot_bytes = snapshots
        .iter()
        .filter_map(|(_, path)| std::fs::metadata(path).ok())
        .map(|m| m.len())
        .sum();
    Ok(VerifyReport {
        users: image.users.len(),
        balances,
        pending_reservations,
        journal_bytes: journal.size_on_disk()?,
        snapshot_bytes,
        snapshots: snapshots.len(),
        next_seq,
        violation,
    })
}

/// Takes a snapshot of everything in the journal and drops the batches it covers.
pub fn snapshot(config: &Config) -> anyhow::Result<u64> {
    let Recovered {
        next_seq,
        mut journal,
        store,
        ..
    } = recover(config)?;
    Ok(snapshotter::take(&store, &mut journal, next_seq)?)
}
