//! One live writer per agency, and no batch that rewrites stored rows.
//!
//! Each handshake claims its agency from the store and gets a new epoch; the
//! store tells the previous claimant's connection it is fenced, and refuses any
//! of its later requests (its requests already handled stay: they came first).
//! Being in the store's mailbox order is what makes the fence exact.
//!
//! A batch that overlaps an agency's stored rows is a retry only if its rows
//! are those rows: the store keeps a digest of each agency's last [`TAIL_ROWS`]
//! rows (rebuilt from the file at open) and refuses a batch whose overlap
//! differs (`conflicting batch`). Overlapping rows older than the tail are not
//! compared (docs/auth.md says what that leaves).

use super::{BetStore, StoreError};
use crate::bet::{AgencyId, BetBatch, RawBet};
use crate::storage::{self, StorageError};
use actix::prelude::*;
use slog::info;
use std::collections::{HashMap, VecDeque};
use std::path::Path;

/// Rows per agency whose digest is kept: at least what an agency resends to
/// check its resume point.
pub const TAIL_ROWS: usize = 64;

/// A connection proved it is `agency`: it becomes the agency's one writer.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct Claim {
    pub agency: AgencyId,
    /// Told when a newer connection of the agency claims it.
    pub fenced: Recipient<Fenced>,
}

/// A newer connection of `agency` (epoch `by`) took over from this one.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Fenced {
    pub agency: AgencyId,
    pub by: u64,
}

/// Per agency: the current writer and the digests of its last rows.
#[derive(Default)]
pub(super) struct Fence {
    writers: HashMap<AgencyId, Writer>,
    tails: HashMap<AgencyId, Tail>,
}

struct Writer {
    epoch: u64,
    fenced: Recipient<Fenced>,
}

/// Digests of the agency's rows `end - digests.len() .. end`.
#[derive(Default)]
struct Tail {
    end: u64,
    digests: VecDeque<u64>,
}

/// FNV-1a over one stored row (its line end excluded): both sides of a
/// comparison are rendered rows, so equal rows have equal digests.
fn digest(row: &[u8]) -> u64 {
    let row = row.strip_suffix(b"\n").unwrap_or(row);
    row.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

fn rendered(agency: AgencyId, bet: RawBet<'_>, scratch: &mut Vec<u8>) -> u64 {
    scratch.clear();
    storage::render_raw_row(scratch, agency, &bet);
    digest(scratch)
}

impl Tail {
    fn push(&mut self, at: u64, digest: u64) {
        if at != self.end {
            self.digests.clear();
        }
        if self.digests.len() == TAIL_ROWS {
            self.digests.pop_front();
        }
        self.digests.push_back(digest);
        self.end = at + 1;
    }

    fn get(&self, index: u64) -> Option<u64> {
        let start = self.end - self.digests.len() as u64;
        (start..self.end).contains(&index).then(|| self.digests[(index - start) as usize])
    }
}

impl Fence {
    /// Refuses a request of a fenced writer (`writer` is the epoch its
    /// connection got; `None` for connections without a handshake).
    pub(super) fn admit(&self, agency: AgencyId, writer: Option<u64>) -> Result<(), StoreError> {
        match (writer, self.writers.get(&agency)) {
            (Some(epoch), Some(current)) if epoch != current.epoch => {
                Err(StoreError::Fenced { agency, epoch: current.epoch })
            }
            _ => Ok(()),
        }
    }

    /// Compares the first `overlap` bets of a batch starting at `first_index`
    /// with the stored rows they claim to repeat.
    pub(super) fn compare(
        &self,
        agency: AgencyId,
        first_index: u64,
        bets: &BetBatch,
        overlap: usize,
    ) -> Result<(), StoreError> {
        let Some(tail) = self.tails.get(&agency) else { return Ok(()) };
        let mut scratch = Vec::new();
        for (i, bet) in bets.raw_iter().take(overlap).enumerate() {
            let index = first_index + i as u64;
            if let Some(stored) = tail.get(index) {
                if stored != rendered(agency, bet, &mut scratch) {
                    return Err(StoreError::Conflict { agency, index });
                }
            }
        }
        Ok(())
    }

    /// The bets of a batch after its first `skip` were appended at index `at`:
    /// only the last [`TAIL_ROWS`] are digested.
    pub(super) fn appended(&mut self, agency: AgencyId, at: u64, bets: &BetBatch, skip: usize) {
        let from = skip.max(bets.len().saturating_sub(TAIL_ROWS));
        let tail = self.tails.entry(agency).or_default();
        let mut scratch = Vec::new();
        for (i, bet) in bets.raw_iter().enumerate().skip(from) {
            tail.push(at + (i - skip) as u64, rendered(agency, bet, &mut scratch));
        }
    }

    /// Rows rendered in the stored format (whole lines) were appended at index
    /// `at`: only the last [`TAIL_ROWS`] are digested (the replicated view).
    pub(super) fn applied_rows(&mut self, agency: AgencyId, at: u64, rows: &[u8]) {
        let lines: Vec<&[u8]> = rows.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        let from = lines.len().saturating_sub(TAIL_ROWS);
        let tail = self.tails.entry(agency).or_default();
        for (i, line) in lines.iter().enumerate().skip(from) {
            tail.push(at + i as u64, digest(line));
        }
    }

    /// Rebuilds every agency's tail from the file (start and reopen); the
    /// writers stay, as their connections do.
    pub(super) fn rebuild(&mut self, path: &Path) -> Result<(), StorageError> {
        self.tails.clear();
        if !path.exists() {
            return Ok(());
        }
        let mut counts: HashMap<AgencyId, u64> = HashMap::new();
        let tails = &mut self.tails;
        for_each_row(path, |_, row| {
            let agency = row
                .iter()
                .position(|&b| b == b',')
                .and_then(|comma| std::str::from_utf8(&row[..comma]).ok().and_then(|a| a.parse::<AgencyId>().ok()));
            if let Some(agency) = agency {
                let count = counts.entry(agency).or_default();
                tails.entry(agency).or_default().push(*count, digest(row));
                *count += 1;
            }
            Ok(())
        })
    }
}

impl Handler<Claim> for BetStore {
    type Result = MessageResult<Claim>;

    fn handle(&mut self, msg: Claim, _: &mut Context<Self>) -> Self::Result {
        let previous = self.fence.writers.get(&msg.agency).map(|w| w.epoch).unwrap_or(0);
        let epoch = previous + 1;
        let old = self.fence.writers.insert(msg.agency, Writer { epoch, fenced: msg.fenced });
        if let Some(old) = old {
            info!(self.log, "action: fence | result: success"; "agency" => msg.agency, "fenced_epoch" => old.epoch,
                "epoch" => epoch);
            old.fenced.do_send(Fenced { agency: msg.agency, by: epoch });
        }
        MessageResult(epoch)
    }
}

/// Calls `f(line_number, row)` for every line of the file, reading 1 MiB at a time.
fn for_each_row(path: &Path, mut f: impl FnMut(u64, &[u8]) -> Result<(), StorageError>) -> Result<(), StorageError> {
    const CHUNK: usize = 1 << 20;
    let io_err = |source| StorageError::Io { path: path.to_path_buf(), source };
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    let mut buf = vec![0u8; CHUNK];
    let (mut start, mut end, mut line) = (0usize, 0usize, 0u64);
    loop {
        while let Some(pos) = buf[start..end].iter().position(|&b| b == b'\n') {
            line += 1;
            f(line, &buf[start..start + pos])?;
            start += pos + 1;
        }
        buf.copy_within(start..end, 0);
        end -= start;
        start = 0;
        if end == buf.len() {
            return Err(StorageError::Corrupt {
                path: path.to_path_buf(),
                line: line + 1,
                reason: "row longer than 1 MiB".into(),
            });
        }
        let n = std::io::Read::read(&mut file, &mut buf[end..]).map_err(io_err)?;
        if n == 0 {
            if end > 0 {
                line += 1;
                f(line, &buf[..end])?;
            }
            return Ok(());
        }
        end += n;
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CloseStore, MarkDone, QueryProgress, StoreBets};
    use super::*;
    use crate::bet::{Bet, Date};

    fn batch(tag: &str, from: u64, n: u64) -> BetBatch {
        let bets: Vec<Bet> = (from..from + n)
            .map(|i| Bet {
                first_name: tag.into(),
                last_name: "Pérez, Jr".into(),
                document: format!("{}", 1_000 + i),
                birthdate: Date::new(1990, 1, 1).unwrap(),
                number: (i % 10_000) as u16,
            })
            .collect();
        bets.into()
    }

    /// Counts the fences it hears of.
    struct Conn(std::sync::Arc<std::sync::atomic::AtomicU64>);
    impl Actor for Conn {
        type Context = Context<Self>;
    }
    impl Handler<Fenced> for Conn {
        type Result = ();
        fn handle(&mut self, msg: Fenced, _: &mut Context<Self>) {
            self.0.store(msg.by, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn store_at(path: &Path) -> Addr<BetStore> {
        BetStore::open(path.to_path_buf(), true, crate::logging::discard()).unwrap().start()
    }

    fn put(store: &Addr<BetStore>, tag: &str, from: u64, n: u64, writer: Option<u64>) -> Request<BetStore, StoreBets> {
        store.send(StoreBets { agency: 1, first_index: Some(from), bets: batch(tag, from, n), writer })
    }

    #[actix::test]
    async fn a_newer_claim_fences_the_older_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(&dir.path().join("bets.csv"));
        let heard = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let old = Conn(heard.clone()).start().recipient();
        let new = Conn(std::sync::Arc::default()).start().recipient();
        let first = store.send(Claim { agency: 1, fenced: old }).await.unwrap();
        assert!(put(&store, "a", 0, 3, Some(first)).await.unwrap().is_ok());
        let second = store.send(Claim { agency: 1, fenced: new }).await.unwrap();
        assert_eq!(second, first + 1);
        let refused = put(&store, "a", 3, 2, Some(first)).await.unwrap();
        assert_eq!(refused, Err(StoreError::Fenced { agency: 1, epoch: second }));
        let done = store.send(MarkDone { agency: 1, total: 3, writer: Some(first) }).await.unwrap();
        assert!(matches!(done, Err(StoreError::Fenced { .. })));
        assert!(put(&store, "a", 3, 2, Some(second)).await.unwrap().is_ok());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(heard.load(std::sync::atomic::Ordering::SeqCst), second, "the old connection was told");
    }

    #[actix::test]
    async fn a_resend_must_repeat_the_stored_rows_also_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let store = store_at(&path);
        assert_eq!(put(&store, "a", 0, 100, None).await.unwrap().unwrap().newly_stored, 100);
        // The same rows, with other boundaries: a retry.
        assert_eq!(put(&store, "a", 90, 20, None).await.unwrap().unwrap().newly_stored, 10);
        // Other rows at stored indexes: refused, and nothing of the batch is stored.
        assert_eq!(put(&store, "b", 100, 5, None).await.unwrap(), Err(StoreError::Conflict { agency: 1, index: 100 }));
        assert_eq!(store.send(QueryProgress { agency: 1 }).await.unwrap(), Ok((110, false)));
        // Rows older than the tail are not compared (docs/auth.md).
        assert!(put(&store, "b", 0, 5, None).await.unwrap().is_ok());
        store.send(CloseStore).await.unwrap().unwrap();

        let store = store_at(&path);
        assert_eq!(put(&store, "b", 105, 5, None).await.unwrap(), Err(StoreError::Conflict { agency: 1, index: 105 }));
        assert_eq!(put(&store, "a", 105, 5, None).await.unwrap().unwrap().newly_stored, 0);
        // After Done a resend is still compared, and anything new refused.
        assert_eq!(store.send(MarkDone { agency: 1, total: 110, writer: None }).await.unwrap(), Ok(110));
        assert!(put(&store, "a", 100, 10, None).await.unwrap().is_ok());
        assert!(matches!(put(&store, "b", 100, 10, None).await.unwrap(), Err(StoreError::Conflict { .. })));
        assert_eq!(put(&store, "a", 105, 10, None).await.unwrap(), Err(StoreError::AlreadyDone(1)));
    }

    #[test]
    fn the_tail_keeps_the_last_rows_in_order() {
        let mut tail = Tail::default();
        for i in 0..200 {
            tail.push(i, i * 3);
        }
        assert_eq!((tail.get(199), tail.get(136), tail.get(135)), (Some(597), Some(408), None));
        tail.push(500, 1);
        assert_eq!((tail.get(500), tail.get(199)), (Some(1), None), "a gap starts the tail again");
    }
}
