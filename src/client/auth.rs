//! The agency's side of the handshake, and its check of the server's word
//! against its own file.

use super::{AgencyConnection, BetReader, ClientError};
use crate::auth::AuthKey;
use crate::bet::AgencyId;
use crate::net::{Request, Response};
use slog::{debug, Logger};
use tokio_util::sync::CancellationToken;

/// Proves the agency's key: `AuthHello`, the server's `Challenge`, then
/// `AuthProof` = HMAC-SHA256(key, nonce || agency), the nonce bound to the TLS
/// session when there is one; the key itself never leaves.
pub(super) async fn authenticate(
    conn: &mut AgencyConnection,
    agency: AgencyId,
    key: &AuthKey,
    log: &Logger,
    cancel: &CancellationToken,
) -> Result<(), ClientError> {
    conn.send(&Request::AuthHello { agency }).await?;
    let nonce = match conn.recv_in_flight(cancel).await? {
        Response::Challenge { nonce } => nonce,
        other => return Err(ClientError::Unexpected(format!("{other:?} instead of a challenge"))),
    };
    let mac = key.proof_bound(&nonce, agency, conn.binding());
    conn.send(&Request::AuthProof { mac }).await?;
    match conn.recv_in_flight(cancel).await? {
        Response::Ack { .. } => {
            debug!(log, "action: auth | result: success"; "agency" => agency);
            Ok(())
        }
        other => Err(ClientError::Unexpected(format!("{other:?} instead of the ack of the handshake"))),
    }
}

/// The server says this agency is done with `stored` bets; the file must have
/// exactly that many valid rows. `counted` valid rows were already read from
/// `reader`, the rest are counted here.
pub(super) fn check_done_count(
    agency: AgencyId,
    stored: u64,
    counted: u64,
    reader: &mut BetReader,
) -> Result<(), ClientError> {
    let mut valid = counted;
    while let Some(row) = reader.next_bet()? {
        if row.is_ok() {
            valid += 1;
        }
    }
    if valid != stored {
        return Err(ClientError::Miscount { agency, stored, valid, path: reader.path.clone() });
    }
    Ok(())
}
