//! The agency: streams its CSV file to the central in batches, says it is done,
//! and asks for its winners. Shared by the `client` binary and the tests.
//!
//! The file is read row by row (never whole); a batch is at most
//! `batch.maxAmount` bets and never a frame over [`MAX_FRAME`](crate::net::MAX_FRAME)
//! bytes. Each batch carries the index of its first bet, so the server stores a
//! retried batch once.
//!
//! - [`reader`]: the agency file, row by row, with file:line errors.
//! - [`batcher`]: bets encoded into one bounded batch.
//! - [`connection`]: one framed connection to the central.
//! - [`backoff`]: the delays between reconnection attempts.
//! - [`run`]: the whole run (resume, stream, done, winners), reconnecting.
//! - [`single`]: course exercise 5, one bet from the environment.
//! - `auth`: the agency's side of the handshake.
//! - [`link`]: the socket under a connection, plain or TLS.

mod auth;
pub mod backoff;
pub mod batcher;
pub mod connection;
mod error;
pub mod link;
pub mod reader;
pub mod run;
pub mod single;
mod verify;

pub use backoff::Backoff;
pub use batcher::Batcher;
pub use connection::{AgencyConnection, IN_FLIGHT_GRACE};
pub use error::ClientError;
pub use reader::BetReader;
pub use run::{run_agency, run_agency_with, AgencyReport};
pub use single::{bet_from_env, send_single_bet};
