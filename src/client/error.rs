//! Everything that can end an agency's run, and which of it is worth a retry.

use crate::bet::AgencyId;
use crate::net::{NackCode, ProtocolError};
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: io::Error },
    /// The central did not prove itself: another CA, a wrong name, expired, or no TLS.
    #[error(
        "the central at {address} did not prove itself as {server_name:?} with the CA {}: {reason}",
        ca.display()
    )]
    TlsRejected { address: String, server_name: String, ca: PathBuf, reason: String },
    #[error("gave up after {attempts} consecutive failed attempts; last error: {last}")]
    GaveUp { attempts: u32, last: Box<ClientError> },
    #[error("cannot read {}: {source}", path.display())]
    DataFile { path: PathBuf, source: io::Error },
    #[error("{}:{line}: {reason}", path.display())]
    BadRow { path: PathBuf, line: u64, reason: String },
    #[error("invalid single bet from the environment: {0}")]
    BadEnvBet(String),
    #[error("the server refused the request ({}): {message}", code.name())]
    Refused { code: NackCode, message: String },
    #[error("unexpected answer from the server: {0}")]
    Unexpected(String),
    #[error("the server closed the connection")]
    Closed,
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("network error: {0}")]
    Io(#[from] io::Error),
    #[error("stopped by a signal")]
    Cancelled,
    #[error(
        "the server says agency {agency} is done with {stored} bets stored, but {} has {valid} valid bets",
        path.display()
    )]
    Miscount { agency: AgencyId, stored: u64, valid: u64, path: PathBuf },
}

impl ClientError {
    /// Failures worth a reconnection: the network, a server busy or restarting, or
    /// its storage in trouble (a full disk heals when space comes back; nothing of a
    /// refused batch is kept, and `Resume` says where to go on).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Closed | ClientError::Io(_) => true,
            ClientError::Protocol(ProtocolError::TruncatedStream { .. } | ProtocolError::Io(_)) => true,
            ClientError::Refused { code, .. } => matches!(code, NackCode::Unavailable | NackCode::StorageError),
            _ => false,
        }
    }
}
