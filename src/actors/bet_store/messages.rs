//! The messages the BetStore answers, and what they answer with.

use crate::actors::draw_coordinator::AgencyDone;
use crate::bet::{AgencyId, BetBatch};
use crate::storage::StorageError;
use actix::prelude::*;
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Why the store refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("agency {0} already sent Done")]
    AlreadyDone(AgencyId),
    #[error("batch starts at index {got} but agency's next expected index is {expected}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("agency announced {total} bets but {stored} are stored")]
    Incomplete { stored: u64, total: u64 },
    /// The disk failed; `kind` and `path` survive so logs and Nacks can name them.
    #[error("storage error ({kind}) on {}: {message}", path.display())]
    Storage { kind: io::ErrorKind, path: PathBuf, message: String },
    /// A newer connection of the agency (epoch `epoch`) took over.
    #[error("fenced: a newer connection of agency {agency} (epoch {epoch}) took over")]
    Fenced { agency: AgencyId, epoch: u64 },
    /// The batch repeats index `index`, but not the row stored there.
    #[error("conflicting batch: agency {agency}'s bet at index {index} differs from the stored one")]
    Conflict { agency: AgencyId, index: u64 },
    #[error("the store is closed")]
    Closed,
    /// The replicated store cannot answer now (NATS down, no quorum, the view
    /// behind): transient, the agency backs off and resumes.
    #[error("replicated store unavailable: {reason}")]
    Replication { reason: String },
}

impl From<StorageError> for StoreError {
    fn from(e: StorageError) -> Self {
        let message = match &e {
            StorageError::Io { source, .. } => source.to_string(),
            StorageError::Corrupt { line, reason, .. } => format!("line {line}: {reason}"),
        };
        StoreError::Storage { kind: e.kind(), path: e.path().to_path_buf(), message }
    }
}

/// Result of a stored (or recognised as already stored) batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub first_index: u64,
    pub count: u32,
    /// Bets of this batch that were new (0 for a pure retry).
    pub newly_stored: u32,
}

/// Append bets of one agency. `first_index` `None` means "at the next index" (single bets).
#[derive(Message)]
#[rtype(result = "Result<Stored, StoreError>")]
pub struct StoreBets {
    pub agency: AgencyId,
    pub first_index: Option<u64>,
    pub bets: BetBatch,
    /// The epoch the connection's [`Claim`](super::Claim) got (`None` without a handshake).
    pub writer: Option<u64>,
}

/// The agency has sent all `total` bets. On success the store tells the
/// coordinator (see [`NotifyDone`]).
#[derive(Message)]
#[rtype(result = "Result<u64, StoreError>")]
pub struct MarkDone {
    pub agency: AgencyId,
    pub total: u64,
    /// As in [`StoreBets`].
    pub writer: Option<u64>,
}

/// How far an agency got: `(stored, done)`, counting only synced rows.
#[derive(Message)]
#[rtype(result = "Result<(u64, bool), StoreError>")]
pub struct QueryProgress {
    pub agency: AgencyId,
}

/// Where the store sends [`AgencyDone`] (set once, after both actors started).
#[derive(Message)]
#[rtype(result = "()")]
pub struct NotifyDone(pub Recipient<AgencyDone>);

/// Agencies that were done before a restart (for the coordinator).
#[derive(Message)]
#[rtype(result = "Vec<AgencyId>")]
pub struct DoneAgencies;

/// One streaming pass over the file: every agency's winning documents.
#[derive(Message)]
#[rtype(result = "Result<DrawOutcome, StoreError>")]
pub struct Draw {
    pub winning_number: u16,
}

#[derive(Debug, Clone)]
pub struct DrawOutcome {
    pub winners: HashMap<AgencyId, Arc<Vec<String>>>,
    pub rows: u64,
    /// The chain head over every sealed group (`None` without a chain key).
    pub head: Option<String>,
}

/// Flush, sync and close the file (last step of shutdown).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct CloseStore;
