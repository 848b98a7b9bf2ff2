//! Why the server refused a message: the codes of a `Nack`, with their names.

/// Why the server refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum NackCode {
    /// The frame could be read but its content is wrong.
    Malformed = 1,
    /// A bet in the batch failed validation; nothing of the batch was stored.
    InvalidBet = 2,
    /// The connection belongs to another agency.
    WrongAgency = 3,
    /// The agency is not in `1..=agencies`.
    UnknownAgency = 4,
    /// The agency already sent `Done`.
    AlreadyDone = 5,
    /// The server could not store the batch.
    StorageError = 6,
    /// The batch does not start at the agency's next expected index.
    OutOfOrder = 7,
    /// The server is shutting down or at capacity.
    Unavailable = 8,
    /// `Done` announced more bets than are stored.
    Incomplete = 9,
    /// The connection has not authenticated: only `Echo` and the handshake are open.
    Unauthenticated = 10,
    /// The handshake failed (wrong proof, no challenge, or no key for the agency).
    AuthFailed = 11,
    /// A request of the same kind from this connection is still waiting for its
    /// answer (a second winners request before the draw).
    AlreadyWaiting = 12,
    /// A newer connection of the same agency took over this one.
    Fenced = 13,
    /// A batch repeats stored indexes with other bets than the stored ones.
    Conflict = 14,
    /// Any other code (from a newer peer).
    Other = 0xffff,
}

/// Every code with its name (logs, errors); `Other` is whatever is not listed.
const NAMES: [(NackCode, &str); 14] = [
    (NackCode::Malformed, "malformed"),
    (NackCode::InvalidBet, "invalid_bet"),
    (NackCode::WrongAgency, "wrong_agency"),
    (NackCode::UnknownAgency, "unknown_agency"),
    (NackCode::AlreadyDone, "already_done"),
    (NackCode::StorageError, "storage_error"),
    (NackCode::OutOfOrder, "out_of_order"),
    (NackCode::Unavailable, "unavailable"),
    (NackCode::Incomplete, "incomplete"),
    (NackCode::Unauthenticated, "unauthenticated"),
    (NackCode::AuthFailed, "auth_failed"),
    (NackCode::AlreadyWaiting, "already_waiting"),
    (NackCode::Fenced, "fenced"),
    (NackCode::Conflict, "conflicting_batch"),
];

impl NackCode {
    /// The code on the wire; an unknown one (from a newer peer) is `Other`.
    pub fn from_u16(v: u16) -> NackCode {
        NAMES.iter().map(|(code, _)| *code).find(|code| *code as u16 == v).unwrap_or(NackCode::Other)
    }

    pub fn name(self) -> &'static str {
        NAMES.iter().find(|(code, _)| *code == self).map_or("other", |(_, name)| name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_with_its_own_name() {
        for (code, name) in NAMES {
            assert_eq!((NackCode::from_u16(code as u16), code.name()), (code, name));
        }
        assert_eq!((NackCode::from_u16(999), NackCode::Other.name()), (NackCode::Other, "other"));
        let names: std::collections::BTreeSet<&str> = NAMES.iter().map(|(_, n)| *n).collect();
        assert_eq!(names.len(), NAMES.len());
    }
}
