//! After a resume the agency resends the last rows the server says it has: the
//! server compares them with its stored rows and refuses them as a
//! `conflicting batch` when they differ, so a process never goes on from rows
//! another process (another file claiming the same agency) stored.

use super::{AgencyConnection, Batcher, ClientError};
use crate::bet::{AgencyId, Bet, BetRef};
use crate::net::Response;
use std::collections::VecDeque;
use tokio_util::sync::CancellationToken;

/// Rows resent at most; the server keeps the digests of more (`TAIL_ROWS`).
pub const RESUME_CHECK_ROWS: usize = 32;
const _: () = assert!(RESUME_CHECK_ROWS <= crate::actors::bet_store::TAIL_ROWS);

/// The last valid rows before the resume point, kept while skipping.
pub(super) struct ResumeTail {
    stored: u64,
    rows: VecDeque<Bet>,
}

impl ResumeTail {
    pub(super) fn new(stored: u64) -> ResumeTail {
        ResumeTail { stored, rows: VecDeque::with_capacity(RESUME_CHECK_ROWS) }
    }

    /// The valid row at index `index` (from 0) was skipped.
    pub(super) fn skipped(&mut self, index: u64, bet: &BetRef<'_>) {
        if index + RESUME_CHECK_ROWS as u64 >= self.stored {
            if self.rows.len() == RESUME_CHECK_ROWS {
                self.rows.pop_front();
            }
            self.rows.push_back(bet.to_bet());
        }
    }

    /// Resends the kept rows (as many of the last ones as fit one frame) and
    /// waits for their ack; a `Nack(conflicting_batch)` comes back as an error.
    pub(super) async fn verify(
        self,
        agency: AgencyId,
        conn: &mut AgencyConnection,
        cancel: &CancellationToken,
    ) -> Result<(), ClientError> {
        let mut batcher = Batcher::new(RESUME_CHECK_ROWS);
        for keep in (1..=self.rows.len()).rev() {
            batcher = Batcher::new(RESUME_CHECK_ROWS);
            if self.rows.iter().skip(self.rows.len() - keep).all(|bet| batcher.try_push(&bet.as_ref())) {
                break;
            }
        }
        if batcher.is_empty() {
            return Ok(());
        }
        let first = self.stored - batcher.len() as u64;
        let count = conn.send_batch(agency, first, &mut batcher).await?;
        match conn.recv_in_flight(cancel).await? {
            Response::Ack { index, count: c } if index == first && u64::from(c) == count => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?} instead of the ack of the resent rows {first}.."))),
        }
    }
}
