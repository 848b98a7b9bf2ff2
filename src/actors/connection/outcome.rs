//! The log line a bet request owes, written when its answer leaves, and the
//! Nack code of each store refusal.

use crate::actors::bet_store::StoreError;
use crate::bet::AgencyId;
use crate::net::NackCode;
use slog::{info, Logger};
use std::net::SocketAddr;

/// The log line of a bet request, written when its answer leaves, so an
/// agency's `apuesta_recibida` lines follow the order of its batches (the
/// course's checks read them in log order), not the order the store replied in.
///
/// The `cantidad` of the `apuesta_recibida` success lines adds up to exactly the bets
/// stored: a resent batch (bets the store already had, after a reconnection) is
/// reported as `apuesta_reenviada`, never counted twice.
pub(super) enum Outcome {
    BatchStored { agency: AgencyId, first_index: u64, fresh: u32, count: u32 },
    BatchRefused { count: u64, error: String },
    Bet { document: String, number: u16, error: Option<String> },
}

impl Outcome {
    pub fn log(self, log: &Logger, peer: SocketAddr) {
        match self {
            Outcome::BatchStored { agency, first_index, fresh, count } => {
                if fresh > 0 {
                    info!(log, "action: apuesta_recibida | result: success"; "cantidad" => fresh);
                }
                if fresh < count {
                    info!(log, "action: apuesta_reenviada | result: success"; "cantidad" => count - fresh,
                        "agency" => agency, "first_index" => first_index);
                }
            }
            Outcome::BatchRefused { count, error } => {
                info!(log, "action: apuesta_recibida | result: fail"; "cantidad" => count, "ip" => %peer,
                    "error" => error);
            }
            Outcome::Bet { document, number, error: None } => {
                info!(log, "action: apuesta_almacenada | result: success"; "dni" => document, "numero" => number);
            }
            Outcome::Bet { document, number, error: Some(error) } => {
                info!(log, "action: apuesta_almacenada | result: fail"; "dni" => document, "numero" => number,
                    "error" => error);
            }
        }
    }
}

/// How the peer hears of a store refusal.
pub(super) fn nack_code(e: &StoreError) -> NackCode {
    match e {
        StoreError::AlreadyDone(_) => NackCode::AlreadyDone,
        StoreError::OutOfOrder { .. } => NackCode::OutOfOrder,
        StoreError::Incomplete { .. } => NackCode::Incomplete,
        StoreError::Storage { .. } => NackCode::StorageError,
        StoreError::Fenced { .. } => NackCode::Fenced,
        StoreError::Conflict { .. } => NackCode::Conflict,
        StoreError::Closed | StoreError::Replication { .. } => NackCode::Unavailable,
    }
}
