//! The auditor's check of a stopped store (the `verify` command): the same
//! [`check::scan`] the server's open runs, read-only, with every byte required to
//! be sealed, then the journal's totals and each agency's rows and winners.

use super::check::{self, Position, Tail};
use super::integrity::{sidecar_path, StoreSpec};
use super::{check_done_totals, DoneJournal, StorageError};
use crate::bet::AgencyId;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::Path;

/// What an audit found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// The chain head (`None` without a key).
    pub head: Option<String>,
    pub rows: u64,
    pub groups: u64,
    /// Per agency: rows stored and winners among them.
    pub agencies: BTreeMap<AgencyId, (u64, u64)>,
    /// Agencies the journal records as done.
    pub done: usize,
}

/// Checks the store at `bets_path` (its sidecar and journal beside it) without
/// changing anything; the first fault is the error.
pub fn audit(bets_path: &Path, spec: &StoreSpec, winning_number: u16) -> Result<Audit, StorageError> {
    let open = |path: &Path| File::open(path).map_err(|source| StorageError::Io { path: path.to_path_buf(), source });
    let bets = open(bets_path)?;
    let side_path = sidecar_path(bets_path);
    let side = open(&side_path)?;
    let mut agencies: BTreeMap<AgencyId, (u64, u64)> = BTreeMap::new();
    let scanned = check::scan(
        &bets,
        bets_path,
        Some((&side, &side_path)),
        Position::default(),
        spec,
        Tail::Refuse,
        |_, row, _| {
            let entry = agencies.entry(row.agency).or_default();
            entry.0 += 1;
            entry.1 += u64::from(row.number == winning_number);
        },
    )?;
    let journal_path = DoneJournal::path_for(bets_path);
    let done = match std::fs::read(&journal_path) {
        Ok(text) => DoneJournal::parse_all(&journal_path, &text, spec.agencies)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(StorageError::Io { path: journal_path, source }),
    };
    let per_agency: HashMap<AgencyId, u64> = agencies.iter().map(|(a, (rows, _))| (*a, *rows)).collect();
    check_done_totals(&journal_path, &done, &per_agency)?;
    Ok(Audit {
        head: spec.key.as_ref().map(|_| check::head_hex(&scanned.pos)),
        rows: scanned.pos.rows,
        groups: scanned.pos.groups,
        agencies,
        done: done.len(),
    })
}
