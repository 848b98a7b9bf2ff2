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

/// What a replica publishes: a run of an agency's rendered rows, or its Done.
#[derive(Debug)]
pub enum Outgoing {
    /// `rows` rows of `agency` from index `first`, rendered as the bets file stores them.
    Bets { agency: AgencyId, first: u64, rows: u64, payload: Vec<u8>, reply: Reply },
    /// The agency's Done with its total.
    Done { agency: AgencyId, total: u64, reply: Reply },
}

/// Answered once JetStream acked the message holding the request (or did not).
pub type Reply = oneshot::Sender<Result<Published, String>>;

/// Messages the stream has not acked yet, at most. While this many wait, what
/// the replica decides queues up and is published as fewer, larger messages:
/// each message is a Raft entry, a write and (sync always) an fsync on every
/// node, so fewer of them cost less where an fsync is dear.
pub const IN_FLIGHT: usize = 64;
/// A coalesced message carries at most this many payload bytes.
pub const COALESCE_BYTES: usize = 64 << 10;
/// Queued requests taken at once for coalescing.
const DRAIN: usize = 256;

/// One message to publish, and every request it answers.
struct Pending {
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
    replies: Vec<Reply>,
}

/// Groups queued requests into messages: each agency's consecutive row runs
/// (the next starting where the last ends) join one message up to
/// [`COALESCE_BYTES`]; a Done closes its agency's run and goes alone. Each
/// agency's messages keep the order its requests came in; between agencies
/// order does not matter (every replica applies each agency's rows by index).
fn coalesce(stream: &str, queued: Vec<Outgoing>) -> Vec<Pending> {
    struct Run {
        agency: AgencyId,
        first: u64,
        rows: u64,
        payload: Vec<u8>,
        replies: Vec<Reply>,
    }
    fn close(stream: &str, run: Run, out: &mut Vec<Pending>) {
        let (subject, headers, payload) = bets_message(stream, run.agency, run.first, run.rows, run.payload);
        out.push(Pending { subject, headers, payload, replies: run.replies });
    }
    let mut out = Vec::new();
    let mut open: Vec<Run> = Vec::new();
    for item in queued {
        match item {
            Outgoing::Bets { agency, first, rows, payload, reply } => {
                if let Some(at) = open.iter().position(|r| r.agency == agency) {
                    let run = &mut open[at];
                    if run.first + run.rows == first && run.payload.len() + payload.len() <= COALESCE_BYTES {
                        run.rows += rows;
                        run.payload.extend_from_slice(&payload);
                        run.replies.push(reply);
                        continue;
                    }
                    close(stream, open.swap_remove(at), &mut out);
                }
                open.push(Run { agency, first, rows, payload, replies: vec![reply] });
            }
            Outgoing::Done { agency, total, reply } => {
                if let Some(at) = open.iter().position(|r| r.agency == agency) {
                    close(stream, open.swap_remove(at), &mut out);
                }
                let (subject, headers, payload) = done_message(stream, agency, total);
                out.push(Pending { subject, headers, payload, replies: vec![reply] });
            }
        }
    }
    for run in open {
        close(stream, run, &mut out);
    }
    out
}

/// Starts the task that hands messages to the client one after the other (so a
/// replica's messages reach the stream in the order it decided them), with at
/// most [`IN_FLIGHT`] waiting for their acks, coalescing what queued meanwhile.
/// Returns its queue.
pub fn publisher(js: jetstream::Context, stream: String) -> mpsc::Sender<Outgoing> {
    let (tx, mut rx) = mpsc::channel::<Outgoing>(PUBLISH_QUEUE);
    actix::spawn(async move {
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let mut queued = Vec::with_capacity(DRAIN);
        loop {
            if rx.recv_many(&mut queued, DRAIN).await == 0 {
                return;
            }
            let mut messages = coalesce(&stream, std::mem::take(&mut queued)).into_iter();
            for message in messages.by_ref() {
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                let Pending { subject, headers, payload, replies } = message;
                match js.publish_with_headers(subject, headers, payload).await {
                    Ok(ack) => {
                        actix::spawn(async move {
                            let result = ack
                                .await
                                .map(|a| Published { sequence: a.sequence, duplicate: a.duplicate })
                                .map_err(|e| e.to_string());
                            drop(slot);
                            for reply in replies {
                                let _ = reply.send(result.clone());
                            }
                        });
                    }
                    Err(e) => {
                        let e = e.to_string();
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        }
    });
    tx
}

/// A message of `rows` rendered rows of `agency` from index `first`. Its id
/// names the rows it carries, so the stream drops only an exact resend (a
/// resend with other boundaries is stored, and readers take its new rows only).
pub fn bets_message(
    stream: &str,
    agency: AgencyId,
    first: u64,
    rows: u64,
    payload: Vec<u8>,
) -> (String, HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(MSG_ID, format!("{agency}-{first}-{rows}").as_str());
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
        assert_eq!(headers.get(MSG_ID).map(|v| v.as_str().to_string()), Some("2-40-2".into()));
        let entry = decode("d1", &subject, Some(&headers), &payload, 5).unwrap();
        assert_eq!(entry, Entry::Bets { agency: 2, first: 40, rows: 2, payload: Bytes::from(rows) });
        let (subject, headers, payload) = done_message("d1", 2, 42);
        assert_eq!(decode("d1", &subject, Some(&headers), &payload, 5), Ok(Entry::Done { agency: 2, total: 42 }));
    }

    fn rows(agency: AgencyId, first: u64, n: u64) -> (Outgoing, oneshot::Receiver<Result<Published, String>>) {
        let (reply, rx) = oneshot::channel();
        let payload = (first..first + n).map(|i| format!("{agency},row{i}\n")).collect::<String>().into_bytes();
        (Outgoing::Bets { agency, first, rows: n, payload, reply }, rx)
    }

    fn read(p: &Pending) -> (String, Option<String>) {
        (p.subject.clone(), p.headers.get(MSG_ID).map(|v| v.as_str().to_string()))
    }

    #[test]
    fn queued_runs_of_an_agency_become_one_message_each_agency_in_its_order() {
        let (done, _d) = {
            let (reply, rx) = oneshot::channel();
            (Outgoing::Done { agency: 1, total: 7, reply }, rx)
        };
        let queued = vec![rows(1, 0, 3).0, rows(2, 0, 2).0, rows(1, 3, 4).0, rows(2, 5, 1).0, done, rows(2, 6, 1).0];
        let out = coalesce("d", queued);
        let got: Vec<_> = out.iter().map(read).collect();
        let want = |s: &str, id: &str| (s.to_string(), Some(id.to_string()));
        // Agency 1's two runs join and the Done follows them; agency 2's run
        // breaks at the gap (2 -> 5), and 5..6 and 6..7 join.
        let of = |agency: &str| got.iter().filter(|(s, _)| s.ends_with(agency)).cloned().collect::<Vec<_>>();
        assert_eq!(of(".1"), vec![want("d.bets.1", "1-0-7"), want("d.done.1", "done-1-7")]);
        assert_eq!(of(".2"), vec![want("d.bets.2", "2-0-2"), want("d.bets.2", "2-5-2")]);
        let joined = out.iter().find(|p| p.subject == "d.bets.1").unwrap();
        assert_eq!(joined.replies.len(), 2);
        let entry = decode("d", &joined.subject, Some(&joined.headers), &joined.payload, 5).unwrap();
        let Entry::Bets { first, rows, payload, .. } = entry else { panic!("{entry:?}") };
        assert_eq!((first, rows), (0, 7));
        assert!(payload.starts_with(b"1,row0\n") && payload.ends_with(b"1,row6\n"));
    }

    #[test]
    fn a_coalesced_message_stays_within_its_byte_bound() {
        let per = COALESCE_BYTES / 3 + 1;
        let queued: Vec<Outgoing> = (0..4u64)
            .map(|k| {
                let (reply, _) = oneshot::channel();
                Outgoing::Bets { agency: 3, first: k, rows: 1, payload: vec![b'x'; per], reply }
            })
            .collect();
        let out = coalesce("d", queued);
        assert_eq!(out.iter().map(|p| p.replies.len()).collect::<Vec<_>>(), vec![2, 2]);
        assert!(out.iter().all(|p| p.payload.len() <= COALESCE_BYTES));
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
