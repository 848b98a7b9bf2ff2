//! The replicated store's link to NATS JetStream: a bounded connect, the
//! stream's configuration, the publisher that keeps a replica's messages in
//! order, and the format of the stream's messages.
//!
//! One stream holds the whole draw: a message per stored batch on
//! `<stream>.bets.<agency>` (its payload the batch's rows exactly as the bets
//! file stores them) and one per finished agency on `<stream>.done.<agency>`.
//! Each carries a `Nats-Msg-Id` derived from what it stores, so a resend
//! through another replica, or after a crash, inside the duplicate window is
//! dropped by the stream itself (docs/design.md, "Replicas").

use crate::bet::AgencyId;
use crate::config::NatsConfig;
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use slog::{info, warn, Logger};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The stream drops a message whose id it saw this recently: a whole draw.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// The largest message the stream takes. A batch frame is at most 8 KiB; its
/// rendered rows (agency column, quoting) stay far below this.
pub const MAX_MESSAGE: usize = 256 << 10;
/// Replicas of the stream: R3 on a cluster of three or more, fewer on a smaller one.
pub const MAX_REPLICAS: usize = 3;
/// Connect attempts at start, each bounded by [`CONNECT_TIMEOUT`], one second apart.
pub const CONNECT_ATTEMPTS: u32 = 10;
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a publish waits for JetStream's ack (quorum stored) before it is refused.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Publishes queued for the publisher at most (more are refused as unavailable).
const PUBLISH_QUEUE: usize = 4096;

/// Header names of the stream's messages.
pub const MSG_ID: &str = "Nats-Msg-Id";
pub const FIRST: &str = "Loteria-First";
pub const ROWS: &str = "Loteria-Rows";
pub const TOTAL: &str = "Loteria-Total";

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot reach NATS at {urls} after {attempts} attempts: {reason}")]
    Unreachable { urls: String, attempts: u32, reason: String },
}

/// A connected client, its JetStream context and the draw's stream.
pub struct Link {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub stream: stream::Stream,
    pub name: String,
}

/// The stream's configuration for a cluster reached through `urls` nodes.
pub fn stream_config(name: &str, nodes: usize) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        subjects: vec![format!("{name}.>")],
        storage: stream::StorageType::File,
        num_replicas: nodes.clamp(1, MAX_REPLICAS),
        duplicate_window: DUPLICATE_WINDOW,
        max_message_size: MAX_MESSAGE as i32,
        ..Default::default()
    }
}

/// Connects and creates the stream if it is not there yet, in at most
/// [`CONNECT_ATTEMPTS`] tries one second apart (a cluster just started may not
/// have elected its JetStream leader yet); then an error naming the URLs.
pub async fn connect(cfg: &NatsConfig, log: &Logger) -> Result<Link, NatsError> {
    let urls = cfg.urls.join(",");
    let replicas = cfg.urls.len().clamp(1, MAX_REPLICAS);
    let mut client = None;
    let mut last = String::new();
    for attempt in 1..=CONNECT_ATTEMPTS {
        if attempt > 1 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let c = match &client {
            Some(c) => c,
            None => match options(cfg, log).connect(cfg.urls.as_slice()).await {
                Ok(c) => client.insert(c),
                Err(e) => {
                    last = e.to_string();
                    warn!(log, "action: nats_connect | result: fail"; "urls" => &urls, "attempt" => attempt, "error" => &last);
                    continue;
                }
            },
        };
        let js = jetstream::ContextBuilder::new().timeout(ACK_TIMEOUT).build(c.clone());
        match js.get_or_create_stream(stream_config(&cfg.stream, cfg.urls.len())).await {
            Ok(stream) => {
                info!(log, "action: nats_connect | result: success"; "urls" => &urls, "stream" => &cfg.stream,
                    "replicas" => replicas, "attempt" => attempt);
                return Ok(Link { client: c.clone(), js, stream, name: cfg.stream.clone() });
            }
            Err(e) => {
                last = format!("stream {}: {e}", cfg.stream);
                warn!(log, "action: nats_connect | result: fail"; "urls" => &urls, "attempt" => attempt, "error" => &last);
            }
        }
    }
    Err(NatsError::Unreachable { urls, attempts: CONNECT_ATTEMPTS, reason: last })
}

/// The client's options: bounded connect, endless reconnects (logged), TLS with the CA.
fn options(cfg: &NatsConfig, log: &Logger) -> async_nats::ConnectOptions {
    let events = log.clone();
    let opts = async_nats::ConnectOptions::new()
        .connection_timeout(CONNECT_TIMEOUT)
        .max_reconnects(None)
        .event_callback(move |event| {
            let log = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => info!(log, "action: nats_link | result: success"),
                    other => warn!(log, "action: nats_link | result: fail"; "event" => %other),
                }
            }
        });
    match &cfg.ca {
        Some(ca) => opts.require_tls(true).tls_client_config(ca.client_config()),
        None => opts,
    }
}

/// What the stream said about one publish: its sequence, and whether it was a
/// duplicate of a message already stored (then the sequence is that message's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub sequence: u64,
    pub duplicate: bool,
}

/// One message for the publisher, answered once JetStream acked it (or did not).
pub struct Outgoing {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
    pub reply: oneshot::Sender<Result<Published, String>>,
}

/// Starts the task that hands messages to the client one after the other (so a
/// replica's messages reach the stream in the order it decided them) and waits
/// for each ack beside it. Returns its queue.
pub fn publisher(js: jetstream::Context) -> mpsc::Sender<Outgoing> {
    let (tx, mut rx) = mpsc::channel::<Outgoing>(PUBLISH_QUEUE);
    actix::spawn(async move {
        while let Some(out) = rx.recv().await {
            match js.publish_with_headers(out.subject, out.headers, out.payload).await {
                Ok(ack) => {
                    actix::spawn(async move {
                        let result = ack
                            .await
                            .map(|a| Published { sequence: a.sequence, duplicate: a.duplicate })
                            .map_err(|e| e.to_string());
                        let _ = out.reply.send(result);
                    });
                }
                Err(e) => {
                    let _ = out.reply.send(Err(e.to_string()));
                }
            }
        }
    });
    tx
}

/// A batch's message: `rows` rendered rows of `agency` from index `first`.
pub fn bets_message(
    stream: &str,
    agency: AgencyId,
    first: u64,
    rows: u32,
    payload: Vec<u8>,
) -> (String, HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(MSG_ID, format!("{agency}-{first}").as_str());
    headers.insert(FIRST, first.to_string().as_str());
    headers.insert(ROWS, rows.to_string().as_str());
    (format!("{stream}.bets.{agency}"), headers, Bytes::from(payload))
}

/// An agency's Done with its total (the id names the total, so a Done the
/// stream's readers refused does not block a later, right one).
pub fn done_message(stream: &str, agency: AgencyId, total: u64) -> (String, HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(MSG_ID, format!("done-{agency}-{total}").as_str());
    headers.insert(TOTAL, total.to_string().as_str());
    (format!("{stream}.done.{agency}"), headers, Bytes::new())
}

/// One message of the stream, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Bets { agency: AgencyId, first: u64, rows: u64, payload: Bytes },
    Done { agency: AgencyId, total: u64 },
}

/// Reads a stream message; what does not parse is an error the caller skips
/// (every replica skips the same messages, so their views stay the same).
pub fn decode(
    stream: &str,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &Bytes,
    agencies: u32,
) -> Result<Entry, String> {
    let rest = subject.strip_prefix(stream).and_then(|s| s.strip_prefix('.')).ok_or("subject outside the stream")?;
    let (kind, agency) = rest.split_once('.').ok_or("subject without an agency")?;
    let agency: AgencyId = agency.parse().map_err(|_| format!("agency {agency:?} is not a number"))?;
    if !(1..=agencies).contains(&agency) {
        return Err(format!("agency {agency} is not in 1..={agencies}"));
    }
    let number = |name: &str| -> Result<u64, String> {
        let value = headers.and_then(|h| h.get(name)).ok_or(format!("no {name} header"))?;
        value.as_str().parse().map_err(|_| format!("{name} is not a number"))
    };
    match kind {
        "bets" => {
            let (first, rows) = (number(FIRST)?, number(ROWS)?);
            let lines = memchr::memchr_iter(b'\n', payload).count() as u64;
            if rows == 0 || lines != rows || !payload.ends_with(b"\n") {
                return Err(format!("{rows} rows announced, {lines} lines carried"));
            }
            let prefix = format!("{agency},");
            if payload.split(|&b| b == b'\n').filter(|l| !l.is_empty()).any(|l| !l.starts_with(prefix.as_bytes())) {
                return Err(format!("a row of another agency than {agency}"));
            }
            Ok(Entry::Bets { agency, first, rows, payload: payload.clone() })
        }
        "done" => Ok(Entry::Done { agency, total: number(TOTAL)? }),
        other => Err(format!("unknown kind {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_back_as_what_they_store() {
        let rows = b"2,A,B,1,2000-01-01,7\n2,C,D,2,2000-01-01,8\n".to_vec();
        let (subject, headers, payload) = bets_message("d1", 2, 40, 2, rows.clone());
        assert_eq!(subject, "d1.bets.2");
        assert_eq!(headers.get(MSG_ID).map(|v| v.as_str().to_string()), Some("2-40".into()));
        let entry = decode("d1", &subject, Some(&headers), &payload, 5).unwrap();
        assert_eq!(entry, Entry::Bets { agency: 2, first: 40, rows: 2, payload: Bytes::from(rows) });
        let (subject, headers, payload) = done_message("d1", 2, 42);
        assert_eq!(decode("d1", &subject, Some(&headers), &payload, 5), Ok(Entry::Done { agency: 2, total: 42 }));
    }

    #[test]
    fn what_does_not_fit_is_refused() {
        let (subject, headers, payload) = bets_message("d1", 2, 0, 3, b"2,A,B,1,2000-01-01,7\n".to_vec());
        assert!(decode("d1", &subject, Some(&headers), &payload, 5).is_err(), "row count");
        let (_, headers, payload) = bets_message("d1", 2, 0, 1, b"3,A,B,1,2000-01-01,7\n".to_vec());
        assert!(decode("d1", "d1.bets.2", Some(&headers), &payload, 5).is_err(), "another agency's row");
        assert!(decode("d1", "d1.bets.9", Some(&headers), &payload, 5).is_err(), "agency out of range");
        assert!(decode("d1", "other.bets.2", Some(&headers), &payload, 5).is_err());
        assert!(decode("d1", "d1.bets.2", None, &payload, 5).is_err(), "no headers");
    }

    #[test]
    fn the_stream_is_replicated_on_up_to_three_nodes_and_keeps_ids_for_a_draw() {
        assert_eq!(stream_config("s", 1).num_replicas, 1);
        assert_eq!(stream_config("s", 3).num_replicas, 3);
        assert_eq!(stream_config("s", 5).num_replicas, 3);
        let c = stream_config("s", 3);
        assert_eq!((c.subjects, c.duplicate_window), (vec!["s.>".to_string()], DUPLICATE_WINDOW));
        assert_eq!(c.storage, stream::StorageType::File);
    }
}
