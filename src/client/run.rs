//! The whole run of one agency: resume from the server's count, stream the
//! rest of the file with a window of batches awaiting acks, say it is done, ask
//! for its winners; reconnecting (see [`Backoff`]) after any network failure.

use super::auth;
use super::verify::ResumeTail;
use super::{AgencyConnection, Backoff, Batcher, BetReader, ClientError};
use crate::bet::AgencyId;
use crate::config::ClientConfig;
use crate::net::{Request, Response};
use slog::{debug, error, info, Logger};
use std::collections::VecDeque;
use tokio_util::sync::CancellationToken;

/// What an agency's run achieved.
#[derive(Debug, Clone, Default)]
pub struct AgencyReport {
    /// Bets of the agency's stream now stored (including those of earlier runs).
    pub sent: u64,
    pub rejected_rows: u64,
    pub winners: Vec<String>,
    /// Sessions it took (1 when nothing failed).
    pub sessions: u32,
}

/// The whole run of one agency: batches, done, winners; reconnecting and
/// resuming from the server's count after any network failure.
pub async fn run_agency(
    cfg: &ClientConfig,
    log: &Logger,
    cancel: &CancellationToken,
) -> Result<AgencyReport, ClientError> {
    run_agency_with(cfg, log, cancel, || BetReader::open(&cfg.data_path)).await
}

/// [`run_agency`] with the rows from `open` instead of `cfg.data_path` (called
/// at every session: a reconnect reads from the start and skips what the
/// server has). The load generator gives each agency a generated stream.
pub async fn run_agency_with(
    cfg: &ClientConfig,
    log: &Logger,
    cancel: &CancellationToken,
    open: impl Fn() -> Result<BetReader, ClientError>,
) -> Result<AgencyReport, ClientError> {
    let mut backoff = Backoff::new(cfg.retry_initial, cfg.retry_max, cfg.retry_attempts);
    let mut sessions = 0;
    loop {
        sessions += 1;
        let mut progressed = false;
        let address = address_for_attempt(&cfg.server_address, sessions - 1);
        let result = session(cfg, address, &open, log, cancel, &mut progressed).await;
        if progressed {
            backoff.reset();
        }
        match result {
            Ok(mut report) => {
                report.sessions = sessions;
                return Ok(report);
            }
            Err(e) => backoff.retry_or_fail(e, log, cancel).await?,
        }
    }
}

/// The address for connection attempt `attempt` (from 0): `server.address` may
/// list several `HOST:PORT`s separated by commas (replicas of the central), and
/// each attempt takes the next one, so a reconnect after a replica died goes
/// elsewhere.
pub fn address_for_attempt(addresses: &str, attempt: u32) -> &str {
    let count = addresses.split(',').count() as u32;
    addresses.split(',').nth((attempt % count) as usize).map(str::trim).unwrap_or(addresses)
}

/// One connection's worth of work, starting from what the server already has.
async fn session(
    cfg: &ClientConfig,
    address: &str,
    open: &impl Fn() -> Result<BetReader, ClientError>,
    log: &Logger,
    cancel: &CancellationToken,
    progressed: &mut bool,
) -> Result<AgencyReport, ClientError> {
    let reader = open()?;
    check_cancel(cancel)?;
    let mut conn = match AgencyConnection::connect(address, cfg.tls.as_ref(), cancel).await {
        Ok(conn) => conn,
        Err(e) => {
            if let ClientError::TlsRejected { server_name, reason, .. } = &e {
                error!(log, "action: tls_handshake | result: fail"; "address" => address,
                    "server_name" => server_name, "error" => reason);
            }
            return Err(e);
        }
    };
    let result = match &cfg.auth_key {
        Some(key) => auth::authenticate(&mut conn, cfg.id, key, log, cancel).await,
        None => Ok(()),
    };
    let result = match result {
        Ok(()) => resume_and_stream(cfg, reader, &mut conn, log, cancel, progressed).await,
        Err(e) => Err(e),
    };
    conn.close().await;
    info!(log, "action: close_connection | result: success"; "address" => address);
    result
}

/// Takes the reader by value so the file is closed while the agency waits for
/// the draw: a load generator holding 10,000 agencies needs one descriptor
/// (the socket) per waiting agency, not two.
async fn resume_and_stream(
    cfg: &ClientConfig,
    mut reader: BetReader,
    conn: &mut AgencyConnection,
    log: &Logger,
    cancel: &CancellationToken,
    progressed: &mut bool,
) -> Result<AgencyReport, ClientError> {
    let agency = cfg.id;
    conn.send(&Request::Resume { agency }).await?;
    let (stored, done) = match conn.recv_in_flight(cancel).await? {
        Response::Progress { agency: a, stored, done } if a == agency => (stored, done),
        other => return Err(ClientError::Unexpected(format!("{other:?} instead of the agency's progress"))),
    };
    let mut report = AgencyReport::default();
    if stored > 0 || done {
        // Skip what the server already has; rows that failed validation were never sent.
        let mut skipped = 0;
        let mut tail = ResumeTail::new(stored);
        while skipped < stored {
            match reader.next_bet()? {
                Some(Ok(bet)) => {
                    tail.skipped(skipped, &bet);
                    skipped += 1;
                }
                Some(Err(_)) => report.rejected_rows += 1,
                None => break,
            }
        }
        if done {
            // "Done" is the server's word that every bet is stored: check it against the file.
            auth::check_done_count(agency, stored, skipped, &mut reader)?;
        } else if skipped < stored {
            return Err(ClientError::Unexpected(format!(
                "the server holds {stored} bets of agency {agency} but {} has only {skipped} valid rows",
                cfg.data_path.display()
            )));
        }
        // The rows the server holds must be this file's: it compares these.
        tail.verify(agency, conn, cancel).await?;
        info!(log, "action: resume | result: success"; "stored" => stored, "done" => done);
    }
    report.sent = stored;
    if !done {
        stream_batches(agency, stored, &mut reader, conn, cfg, &mut report, log, cancel, progressed).await?;
        info!(log, "action: apuestas_enviadas | result: success"; "cantidad" => report.sent,
            "rechazadas" => report.rejected_rows);
        check_cancel(cancel)?;
        conn.send(&Request::Done { agency, total: report.sent }).await?;
        match conn.recv_in_flight(cancel).await? {
            Response::Ack { index, .. } if index == report.sent => *progressed = true,
            Response::Ack { index, .. } => {
                let path = cfg.data_path.clone();
                return Err(ClientError::Miscount { agency, stored: index, valid: report.sent, path });
            }
            other => return Err(ClientError::Unexpected(format!("{other:?} instead of the ack of Done"))),
        }
    }

    drop(reader);
    check_cancel(cancel)?;
    conn.send(&Request::WinnersRequest { agency }).await?;
    loop {
        // The draw waits for every agency: no grace period here, only the signal.
        let page = tokio::select! {
            r = conn.recv() => r?,
            _ = cancel.cancelled() => return Err(ClientError::Cancelled),
        };
        match page {
            Response::Winners { agency: a, more, documents } if a == agency => {
                report.winners.extend(documents);
                if !more {
                    break;
                }
            }
            other => return Err(ClientError::Unexpected(format!("{other:?} instead of winners"))),
        }
    }
    info!(log, "action: consulta_ganadores | result: success"; "cant_ganadores" => report.winners.len());
    Ok(report)
}

/// Reads rows into `batcher` until its batch is full (`Ok(false)`; the row
/// that did not fit is carried into the next batch) or the file ends
/// (`Ok(true)`), logging and counting bad rows. Not `async`, so the row, which
/// borrows the reader's buffer, never lives in the agency's future: kept there
/// across the send, every row was copied into it and read back (a tenth of
/// the agency's CPU in a profile).
fn fill_batch(
    reader: &mut BetReader,
    batcher: &mut Batcher,
    report: &mut AgencyReport,
    log: &Logger,
) -> Result<bool, ClientError> {
    while !batcher.is_full() {
        match reader.next_bet()? {
            Some(Ok(bet)) => {
                batcher.push_or_carry(&bet);
            }
            Some(Err(bad)) => {
                error!(log, "action: apuesta_invalida | result: fail"; "error" => %bad);
                report.rejected_rows += 1;
            }
            None => return Ok(true),
        }
    }
    Ok(false)
}

fn check_cancel(cancel: &CancellationToken) -> Result<(), ClientError> {
    if cancel.is_cancelled() {
        Err(ClientError::Cancelled)
    } else {
        Ok(())
    }
}

/// Sends the rest of the file with up to `batch.window` batches awaiting acks.
/// On a signal it stops sending, collects the acks already owed, and returns.
#[allow(clippy::too_many_arguments)]
async fn stream_batches(
    agency: AgencyId,
    first_index: u64,
    reader: &mut BetReader,
    conn: &mut AgencyConnection,
    cfg: &ClientConfig,
    report: &mut AgencyReport,
    log: &Logger,
    cancel: &CancellationToken,
    progressed: &mut bool,
) -> Result<(), ClientError> {
    let mut batcher = Batcher::new(cfg.batch_max_amount);
    let mut in_flight: VecDeque<(u64, u64)> = VecDeque::with_capacity(cfg.batch_window);
    let mut next_index = first_index;
    let mut at_end = false;
    loop {
        // The signal is checked once per batch: a token check per row would cost more than the row.
        let stopping = cancel.is_cancelled();
        while !at_end && in_flight.len() < cfg.batch_window && !stopping {
            at_end = fill_batch(reader, &mut batcher, report, log)?;
            if at_end || cancel.is_cancelled() {
                break;
            }
            let count = conn.send_batch(agency, next_index, &mut batcher).await?;
            in_flight.push_back((next_index, count));
            next_index += count;
        }
        if at_end && !batcher.is_empty() && in_flight.len() < cfg.batch_window && !stopping {
            let count = conn.send_batch(agency, next_index, &mut batcher).await?;
            in_flight.push_back((next_index, count));
            next_index += count;
        }
        let Some(&(index, count)) = in_flight.front() else {
            break;
        };
        match conn.recv_in_flight(cancel).await? {
            Response::Ack { index: i, count: c } if i == index && u64::from(c) == count => {
                in_flight.pop_front();
                report.sent = index + count;
                *progressed = true;
                debug!(log, "action: batch_enviado | result: success"; "first_index" => index, "cantidad" => count);
            }
            other => return Err(ClientError::Unexpected(format!("{other:?} instead of the ack of batch {index}"))),
        }
    }
    check_cancel(cancel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_attempt_takes_the_next_address() {
        assert_eq!(address_for_attempt("server:12345", 7), "server:12345");
        let list = "127.0.0.1:1,127.0.0.1:2, 127.0.0.1:3";
        let picked: Vec<&str> = (0..4).map(|k| address_for_attempt(list, k)).collect();
        assert_eq!(picked, ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:1"]);
    }
}
