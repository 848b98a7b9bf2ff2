//! The agency: streams its CSV file to the central in batches, says it is done,
//! and asks for its winners. Shared by the `client` binary and the tests.
//!
//! The file is read row by row (never whole); a batch is at most
//! `batch.maxAmount` bets and never a frame over [`MAX_FRAME`] bytes. Each batch
//! carries the index of its first bet, so the server stores a retried batch once.

mod auth;

use crate::bet::{AgencyId, Bet, BetError, BetRef};
use crate::config::ClientConfig;
use crate::net::frame::{encode_batch, encoded_bet_len, put_bet_into, BATCH_OVERHEAD};
use crate::net::{ClientCodec, NackCode, ProtocolError, Request, Response, MAX_FRAME, MAX_PAYLOAD};
use bytes::BytesMut;
use slog::{debug, error, info, warn, Logger};
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

/// After SIGTERM, how long the answer to the request in flight may take.
pub const IN_FLIGHT_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: io::Error },
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

/// One framed connection to the central.
pub struct AgencyConnection {
    stream: TcpStream,
    input: BytesMut,
    output: BytesMut,
}

impl AgencyConnection {
    /// One connection attempt (retries are the caller's, see [`Backoff`]).
    pub async fn connect(address: &str, cancel: &CancellationToken) -> Result<AgencyConnection, ClientError> {
        let stream = tokio::select! {
            r = TcpStream::connect(address) => r.map_err(|source| ClientError::Connect { address: address.to_string(), source })?,
            _ = cancel.cancelled() => return Err(ClientError::Cancelled),
        };
        let _ = stream.set_nodelay(true);
        Ok(AgencyConnection {
            stream,
            input: BytesMut::with_capacity(MAX_FRAME),
            output: BytesMut::with_capacity(MAX_FRAME),
        })
    }

    /// Sends the batch in `batcher` as bets `first_index..`; returns how many.
    pub async fn send_batch(
        &mut self,
        agency: AgencyId,
        first_index: u64,
        batcher: &mut Batcher,
    ) -> Result<u64, ClientError> {
        self.output.clear();
        let count = batcher.take_frame(agency, first_index, &mut self.output)?;
        self.stream.write_all(&self.output).await?;
        Ok(count as u64)
    }

    pub async fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        self.output.clear();
        request.encode(&mut self.output)?;
        self.stream.write_all(&self.output).await?;
        Ok(())
    }

    /// Reads the next answer; a `Nack` becomes [`ClientError::Refused`].
    pub async fn recv(&mut self) -> Result<Response, ClientError> {
        loop {
            if let Some(item) = ClientCodec.decode(&mut self.input)? {
                return match item? {
                    Response::Nack { code, message, .. } => Err(ClientError::Refused { code, message }),
                    other => Ok(other),
                };
            }
            if self.stream.read_buf(&mut self.input).await? == 0 {
                if let Some(Ok(Response::Nack { code, message, .. })) = ClientCodec.decode_eof(&mut self.input)? {
                    return Err(ClientError::Refused { code, message });
                }
                return Err(ClientError::Closed);
            }
        }
    }

    /// Reads an answer, giving up [`IN_FLIGHT_GRACE`] after `cancel` fires.
    pub async fn recv_in_flight(&mut self, cancel: &CancellationToken) -> Result<Response, ClientError> {
        tokio::select! {
            r = self.recv() => r,
            _ = async { cancel.cancelled().await; tokio::time::sleep(IN_FLIGHT_GRACE).await } => Err(ClientError::Cancelled),
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.shutdown().await;
    }
}

/// Streams bets out of an agency file (`first_name,last_name,document,birthdate,number`).
pub struct BetReader {
    path: PathBuf,
    reader: csv::Reader<File>,
    record: csv::ByteRecord,
    /// Line of the next record; counted here because the csv crate's own count
    /// lags by one on CRLF files.
    line: u64,
}

impl BetReader {
    pub fn open(path: &Path) -> Result<BetReader, ClientError> {
        let file = File::open(path).map_err(|source| ClientError::DataFile { path: path.to_path_buf(), source })?;
        let reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(file);
        Ok(BetReader { path: path.to_path_buf(), reader, record: csv::ByteRecord::new(), line: 1 })
    }

    /// The next row: `Ok(Some(Ok(bet)))`, a bad row as `Ok(Some(Err(BadRow)))`,
    /// `Ok(None)` at the end, `Err` when the file cannot be read at all.
    /// The bet borrows the reader's record: nothing is allocated per row.
    pub fn next_bet(&mut self) -> Result<Option<Result<BetRef<'_>, ClientError>>, ClientError> {
        let line = self.line;
        let read = self.reader.read_byte_record(&mut self.record);
        // A record spans one line plus any newlines quoted inside its fields.
        self.line += 1 + self.record.iter().map(|f| f.iter().filter(|&&b| b == b'\n').count() as u64).sum::<u64>();
        match read {
            Ok(false) => return Ok(None),
            Ok(true) => {}
            Err(e) => {
                return match e.kind() {
                    csv::ErrorKind::Io(_) => {
                        Err(ClientError::DataFile { path: self.path.clone(), source: io::Error::other(e.to_string()) })
                    }
                    _ => Ok(Some(Err(self.bad_row(line, e.to_string())))),
                }
            }
        }
        if self.record.len() != 5 {
            let reason = format!(
                "expected 5 fields (first_name,last_name,document,birthdate,number), found {}",
                self.record.len()
            );
            return Ok(Some(Err(self.bad_row(line, reason))));
        }
        let mut fields = [""; 5];
        for (i, raw) in self.record.iter().enumerate() {
            match std::str::from_utf8(raw) {
                Ok(s) => fields[i] = s,
                Err(_) => {
                    let name = ["first_name", "last_name", "document", "birthdate", "number"][i];
                    return Ok(Some(Err(self.bad_row(line, format!("{name} is not valid UTF-8")))));
                }
            }
        }
        Ok(Some(
            BetRef::parse(fields[0], fields[1], fields[2].trim(), fields[3].trim(), fields[4].trim())
                .map_err(|e: BetError| self.bad_row(line, e.to_string())),
        ))
    }

    fn bad_row(&self, line: u64, reason: String) -> ClientError {
        ClientError::BadRow { path: self.path.clone(), line, reason }
    }
}

/// Builds one batch, already encoded, bounded by count and by frame size.
pub struct Batcher {
    max_amount: usize,
    encoded: BytesMut,
    count: usize,
}

impl Batcher {
    pub fn new(max_amount: usize) -> Self {
        Batcher { max_amount: max_amount.max(1), encoded: BytesMut::with_capacity(MAX_PAYLOAD), count: 0 }
    }

    /// Whether `bet` still fits in this batch.
    pub fn fits(&self, bet: &BetRef<'_>) -> bool {
        self.count < self.max_amount && BATCH_OVERHEAD + self.encoded.len() + encoded_bet_len(bet) <= MAX_PAYLOAD
    }

    /// Adds a bet (call [`fits`](Self::fits) first; an empty batch takes any valid bet).
    pub fn push(&mut self, bet: &BetRef<'_>) {
        put_bet_into(&mut self.encoded, bet);
        self.count += 1;
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes the batch as one frame and empties the builder.
    pub fn take_frame(
        &mut self,
        agency: AgencyId,
        first_index: u64,
        out: &mut BytesMut,
    ) -> Result<usize, ProtocolError> {
        let count = self.count;
        encode_batch(out, agency, first_index, count, &self.encoded)?;
        self.encoded.clear();
        self.count = 0;
        Ok(count)
    }
}

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

/// Capped exponential backoff between reconnection attempts.
pub struct Backoff {
    initial: Duration,
    max: Duration,
    delay: Duration,
    attempts_allowed: u32,
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, attempts_allowed: u32) -> Backoff {
        Backoff { initial, max, delay: initial, attempts_allowed, failures: 0 }
    }

    /// After progress (an ack), failures count from zero again.
    pub fn reset(&mut self) {
        self.failures = 0;
        self.delay = self.initial;
    }

    /// The delay before the next attempt, or `None` when out of attempts.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.failures >= self.attempts_allowed {
            return None;
        }
        self.failures += 1;
        let delay = self.delay;
        self.delay = (self.delay * 2).min(self.max);
        Some(delay)
    }

    /// Sleeps before a retry, or hands back `error` when it must not be retried.
    pub async fn retry_or_fail(
        &mut self,
        error: ClientError,
        log: &Logger,
        cancel: &CancellationToken,
    ) -> Result<(), ClientError> {
        if !error.is_retryable() {
            return Err(error);
        }
        let Some(delay) = self.next_delay() else {
            return Err(ClientError::GaveUp { attempts: self.failures, last: Box::new(error) });
        };
        warn!(log, "action: reconnect | result: in_progress"; "attempt" => self.failures,
            "retry_in_ms" => delay.as_millis() as u64, "error" => %error);
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = cancel.cancelled() => Err(ClientError::Cancelled),
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

/// The whole run of one agency: batches, done, winners; reconnecting and
/// resuming from the server's count after any network failure.
pub async fn run_agency(
    cfg: &ClientConfig,
    log: &Logger,
    cancel: &CancellationToken,
) -> Result<AgencyReport, ClientError> {
    let mut backoff = Backoff::new(cfg.retry_initial, cfg.retry_max, cfg.retry_attempts);
    let mut sessions = 0;
    loop {
        sessions += 1;
        let mut progressed = false;
        let address = address_for_attempt(&cfg.server_address, sessions - 1);
        let result = session(cfg, address, log, cancel, &mut progressed).await;
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

/// One connection's worth of work, starting from what the server already has.
async fn session(
    cfg: &ClientConfig,
    address: &str,
    log: &Logger,
    cancel: &CancellationToken,
    progressed: &mut bool,
) -> Result<AgencyReport, ClientError> {
    let mut reader = BetReader::open(&cfg.data_path)?;
    check_cancel(cancel)?;
    let mut conn = AgencyConnection::connect(address, cancel).await?;
    let result = match &cfg.auth_key {
        Some(key) => auth::authenticate(&mut conn, cfg.id, key, log, cancel).await,
        None => Ok(()),
    };
    let result = match result {
        Ok(()) => resume_and_stream(cfg, &mut reader, &mut conn, log, cancel, progressed).await,
        Err(e) => Err(e),
    };
    conn.close().await;
    info!(log, "action: close_connection | result: success"; "address" => address);
    result
}

async fn resume_and_stream(
    cfg: &ClientConfig,
    reader: &mut BetReader,
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
        while skipped < stored {
            match reader.next_bet()? {
                Some(Ok(_)) => skipped += 1,
                Some(Err(_)) => report.rejected_rows += 1,
                None => break,
            }
        }
        if done {
            // "Done" is the server's word that every bet is stored: check it against the file.
            auth::check_done_count(agency, stored, skipped, reader)?;
        } else if skipped < stored {
            return Err(ClientError::Unexpected(format!(
                "the server holds {stored} bets of agency {agency} but {} has only {skipped} valid rows",
                cfg.data_path.display()
            )));
        }
        info!(log, "action: resume | result: success"; "stored" => stored, "done" => done);
    }
    report.sent = stored;
    if !done {
        stream_batches(agency, stored, reader, conn, cfg, &mut report, log, cancel, progressed).await?;
        info!(log, "action: apuestas_enviadas | result: success"; "cantidad" => report.sent, "rechazadas" => report.rejected_rows);
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
            match reader.next_bet()? {
                Some(Ok(bet)) => {
                    if !batcher.fits(&bet) {
                        if cancel.is_cancelled() {
                            break;
                        }
                        let count = conn.send_batch(agency, next_index, &mut batcher).await?;
                        in_flight.push_back((next_index, count));
                        next_index += count;
                    }
                    batcher.push(&bet);
                }
                Some(Err(bad)) => {
                    error!(log, "action: apuesta_invalida | result: fail"; "error" => %bad);
                    report.rejected_rows += 1;
                }
                None => at_end = true,
            }
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

/// Course exercise 5: one bet from `NOMBRE`, `APELLIDO`, `DOCUMENTO`, `NACIMIENTO`, `NUMERO`.
pub fn bet_from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Bet>, ClientError> {
    const VARS: [&str; 5] = ["NOMBRE", "APELLIDO", "DOCUMENTO", "NACIMIENTO", "NUMERO"];
    let values: Vec<Option<String>> = VARS.iter().map(|v| env(v)).collect();
    if values.iter().all(Option::is_none) {
        return Ok(None);
    }
    let missing: Vec<&str> = VARS.iter().zip(&values).filter(|(_, v)| v.is_none()).map(|(k, _)| *k).collect();
    if !missing.is_empty() {
        return Err(ClientError::BadEnvBet(format!("missing {}", missing.join(", "))));
    }
    let v: Vec<String> = values.into_iter().flatten().collect();
    Bet::from_fields(&v[0], &v[1], v[2].trim(), v[3].trim(), v[4].trim())
        .map(Some)
        .map_err(|e| ClientError::BadEnvBet(e.to_string()))
}

/// Sends one bet and waits for its ack.
pub async fn send_single_bet(
    cfg: &ClientConfig,
    bet: Bet,
    log: &Logger,
    cancel: &CancellationToken,
) -> Result<(), ClientError> {
    // Only the connection is retried: a resent bet without an index could be stored twice.
    let mut backoff = Backoff::new(cfg.retry_initial, cfg.retry_max, cfg.retry_attempts);
    let mut conn = loop {
        match AgencyConnection::connect(address_for_attempt(&cfg.server_address, 0), cancel).await {
            Ok(conn) => break conn,
            Err(e) => backoff.retry_or_fail(e, log, cancel).await?,
        }
    };
    if let Some(key) = &cfg.auth_key {
        if let Err(e) = auth::authenticate(&mut conn, cfg.id, key, log, cancel).await {
            conn.close().await;
            return Err(e);
        }
    }
    let (document, number) = (bet.document.clone(), bet.number);
    conn.send(&Request::Bet { agency: cfg.id, bet }).await?;
    let result = match conn.recv_in_flight(cancel).await {
        Ok(Response::Ack { .. }) => {
            info!(log, "action: apuesta_enviada | result: success"; "dni" => &document, "numero" => number);
            Ok(())
        }
        Ok(other) => Err(ClientError::Unexpected(format!("{other:?} instead of an ack"))),
        Err(e) => Err(e),
    };
    conn.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bet::Date;
    use std::collections::HashMap;

    fn bet(name_len: usize) -> Bet {
        Bet {
            first_name: "a".repeat(name_len),
            last_name: "b".into(),
            document: "1".into(),
            birthdate: Date::new(2000, 1, 1).unwrap(),
            number: 1,
        }
    }

    #[test]
    fn batches_respect_count_and_frame_size() {
        let one = bet(1);
        let mut b = Batcher::new(3);
        for _ in 0..3 {
            assert!(b.fits(&one.as_ref()));
            b.push(&one.as_ref());
        }
        assert!(!b.fits(&one.as_ref()), "count limit");
        let mut frame = BytesMut::new();
        assert_eq!(b.take_frame(1, 0, &mut frame).unwrap(), 3);
        assert!(b.is_empty());
        let decoded = crate::net::ServerCodec.decode(&mut frame).unwrap().unwrap().unwrap();
        assert_eq!(decoded, Request::Batch { agency: 1, first_index: 0, bets: vec![one.clone(); 3].into() });

        // Long names: batches are cut by encoded size, every frame within the limit.
        let long = bet(250);
        let mut b = Batcher::new(1000);
        let (mut frames, mut total) = (Vec::new(), 0);
        for _ in 0..100 {
            if !b.fits(&long.as_ref()) {
                let mut f = BytesMut::new();
                total += b.take_frame(1, 0, &mut f).unwrap();
                frames.push(f);
            }
            b.push(&long.as_ref());
        }
        let mut f = BytesMut::new();
        total += b.take_frame(1, 0, &mut f).unwrap();
        frames.push(f);
        assert_eq!(total, 100);
        assert!(frames.len() > 3);
        assert!(frames.iter().all(|f| f.len() <= MAX_FRAME));
    }

    #[test]
    fn rows_are_validated_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agency-1.csv");
        let mut data = b"Ana,P\xc3\xa9rez,00000042,1990-01-31,7574\r\nBad,Row,1,1990-02-30,1\r\nShort,Row\r\n".to_vec();
        data.extend_from_slice(b"X,\xff,1,1990-01-01,1\nOk,\"Comma, Inc\",7,2000-02-29,9999\n");
        std::fs::write(&path, data).unwrap();
        let mut r = BetReader::open(&path).unwrap();
        let first = r.next_bet().unwrap().unwrap().unwrap();
        assert_eq!((first.document, first.last_name), ("00000042", "Pérez"));
        for (line, needle) in [(2, "birthdate"), (3, "expected 5 fields"), (4, "last_name is not valid UTF-8")] {
            let err = r.next_bet().unwrap().unwrap().unwrap_err().to_string();
            assert!(err.contains(&format!("agency-1.csv:{line}:")) && err.contains(needle), "{err}");
        }
        assert_eq!(r.next_bet().unwrap().unwrap().unwrap().last_name, "Comma, Inc");
        assert!(r.next_bet().unwrap().is_none());
        assert!(matches!(BetReader::open(&dir.path().join("missing.csv")), Err(ClientError::DataFile { .. })));
    }

    #[test]
    fn each_attempt_takes_the_next_address() {
        assert_eq!(address_for_attempt("server:12345", 7), "server:12345");
        let list = "127.0.0.1:1,127.0.0.1:2, 127.0.0.1:3";
        let picked: Vec<&str> = (0..4).map(|k| address_for_attempt(list, k)).collect();
        assert_eq!(picked, ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:1"]);
    }

    #[test]
    fn single_bet_env_needs_all_five_vars() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            let m: HashMap<&str, &str> = pairs.iter().copied().collect();
            move |k: &str| m.get(k).map(|v| v.to_string())
        };
        assert!(bet_from_env(&env(&[])).unwrap().is_none());
        let err = bet_from_env(&env(&[("NOMBRE", "Ana")])).unwrap_err().to_string();
        assert!(err.contains("APELLIDO") && err.contains("NUMERO"), "{err}");
        static ALL: [(&str, &str); 5] = [
            ("NOMBRE", "Ana"),
            ("APELLIDO", "Pérez"),
            ("DOCUMENTO", "00000042"),
            ("NACIMIENTO", "1990-01-01"),
            ("NUMERO", "7574"),
        ];
        let bet = bet_from_env(&env(&ALL)).unwrap().unwrap();
        assert_eq!(bet.document, "00000042");
    }
}
