//! Connection: one TCP peer. Decodes frames, validates them, and turns them into
//! messages for the BetStore and the DrawCoordinator.
//!
//! Requests are pipelined: a batch is handed to the store and the next frame is
//! read at once, so an agency with several batches in flight gets them stored
//! (and synced) together. Every request takes a sequence number and answers leave
//! strictly in that order, whatever order the store and coordinator reply in. At
//! most [`MAX_IN_FLIGHT`] store requests are outstanding per connection; at the
//! limit the actor `wait`s, which also pauses reading (backpressure to the peer).
//! Writing is a small task fed by a bounded channel; when the actor stops, the
//! channel closes and the task writes what is left, then closes the socket.
//! Every write has a deadline (`idle_timeout`): a peer that does not read its
//! answers loses its socket. The listener counts the connection until the writer
//! has finished and the actor (holding the read half) is gone, so a socket is
//! counted against `max_connections` until it is really closed.

mod handshake;

use super::auth_guard::AuthGuard;
use super::bet_store::{BetStore, MarkDone, QueryProgress, StoreBets, StoreError};
use super::draw_coordinator::{DrawCoordinator, WinnersFor, WinnersReady};
use super::listener::{ConnectionClosed, Listener};
use crate::bet::AgencyId;
use crate::net::frame::winners_pages;
use crate::net::{NackCode, ProtocolError, Request, Response, ServerCodec, MAX_FRAME};
use actix::prelude::*;
use bytes::BytesMut;
use slog::{debug, info, warn, Logger};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

/// Answers queued for one peer before it is considered not to be reading. One
/// answer is one slot however many frames it has (all winners pages are one).
const OUTBOX: usize = 64;
/// Store requests one connection may have outstanding (pipelined batches).
pub const MAX_IN_FLIGHT: usize = 64;
/// Answers that may wait behind an earlier, slower one (e.g. the winners).
const MAX_WAITING_ANSWERS: usize = 64;

/// What every connection needs from the rest of the server.
#[derive(Clone)]
pub struct ConnectionDeps {
    pub store: Addr<BetStore>,
    pub coordinator: Addr<DrawCoordinator>,
    /// Valid agencies are `1..=agencies`.
    pub agencies: u32,
    pub idle_timeout: Duration,
    pub log: Logger,
    /// Checks handshakes; `None` when the server runs with `SERVER_AUTH=off`.
    pub auth: Option<Addr<AuthGuard>>,
}

/// Finish the messages in hand, then close (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

type Frame = Result<Result<Request, ProtocolError>, ProtocolError>;

pub struct Connection {
    peer: SocketAddr,
    agency: Option<AgencyId>,
    auth: handshake::AuthState,
    deps: ConnectionDeps,
    outbox: mpsc::Sender<Vec<Response>>,
    reading: Option<SpawnHandle>,
    last_frame: Instant,
    /// Sequence number of the next request.
    next_seq: u64,
    /// Sequence number of the next answer to write.
    next_out: u64,
    /// Answers ready before an earlier one, with the log line each one owes.
    ready: BTreeMap<u64, (Vec<Response>, Option<Outcome>)>,
    /// Store requests awaiting their reply.
    in_flight: usize,
    /// Sequence numbers of winners requests parked at the coordinator.
    awaiting_winners: Vec<u64>,
    /// Stop as soon as nothing is in flight.
    closing: bool,
    log: Logger,
}

impl Connection {
    /// Starts the actor and its writer task for an accepted socket.
    pub fn start(
        id: u64,
        stream: TcpStream,
        peer: SocketAddr,
        deps: ConnectionDeps,
        listener: Addr<Listener>,
        drain_guard: mpsc::Sender<()>,
    ) -> Addr<Connection> {
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (outbox, rx) = mpsc::channel(OUTBOX);
        let log = deps.log.new(slog::o!());
        let writer = Writer { id, peer, deadline: deps.idle_timeout, listener: listener.clone(), log: log.clone() };
        Connection::create(move |ctx| {
            actix::spawn(writer.run(write, rx, ctx.address(), drain_guard));
            let reading = Some(ctx.add_stream(FramedRead::with_capacity(read, ServerCodec, MAX_FRAME)));
            Connection {
                peer,
                agency: None,
                auth: handshake::AuthState::new(deps.auth.is_some()),
                deps,
                outbox,
                reading,
                last_frame: Instant::now(),
                next_seq: 0,
                next_out: 0,
                ready: BTreeMap::new(),
                in_flight: 0,
                awaiting_winners: Vec::new(),
                closing: false,
                log,
            }
        })
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Records the answers of request `seq` and writes every answer now in order.
    fn answer(&mut self, seq: u64, responses: Vec<Response>, ctx: &mut Context<Self>) {
        self.answer_logged(seq, responses, None, ctx);
    }

    /// Like [`Self::answer`], and logs `outcome` when the answer is written, so an
    /// agency's `apuesta_recibida` lines follow the order of its batches (the
    /// course's checks read them in log order), not the order the store replied in.
    fn answer_logged(&mut self, seq: u64, responses: Vec<Response>, outcome: Option<Outcome>, ctx: &mut Context<Self>) {
        self.ready.insert(seq, (responses, outcome));
        while let Some((responses, outcome)) = self.ready.remove(&self.next_out) {
            self.next_out += 1;
            if let Some(outcome) = outcome {
                outcome.log(&self.log, self.peer);
            }
            if !responses.is_empty() {
                self.write(responses, ctx);
            }
        }
        if self.ready.len() > MAX_WAITING_ANSWERS {
            warn!(self.log, "action: send_response | result: fail"; "ip" => %self.peer,
                "error" => "too many requests waiting behind an unanswered one");
            ctx.stop();
        }
        self.stop_if_drained(ctx);
    }

    fn write(&mut self, responses: Vec<Response>, ctx: &mut Context<Self>) {
        match self.outbox.try_send(responses) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(self.log, "action: send_response | result: fail"; "ip" => %self.peer, "error" => "peer is not reading its answers");
                ctx.stop();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => ctx.stop(),
        }
    }

    fn nack(&mut self, seq: u64, code: NackCode, index: u64, message: String, ctx: &mut Context<Self>) {
        self.answer(seq, vec![Response::Nack { code, index, message }], ctx);
    }

    /// Stops reading; stops the actor once the requests in flight are answered.
    fn close_when_idle(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.reading.take() {
            ctx.cancel_future(handle);
        }
        self.closing = true;
        self.stop_if_drained(ctx);
    }

    fn stop_if_drained(&mut self, ctx: &mut Context<Self>) {
        if self.closing && self.in_flight == 0 {
            ctx.stop();
        }
    }

    /// Runs a store request without blocking the connection, unless too many are out.
    fn in_flight<F>(&mut self, fut: F, ctx: &mut Context<Self>)
    where
        F: ActorFuture<Self, Output = ()> + 'static,
    {
        self.in_flight += 1;
        if self.in_flight >= MAX_IN_FLIGHT {
            ctx.wait(fut);
        } else {
            ctx.spawn(fut);
        }
    }

    /// Refuses messages for another agency than the one the connection is bound to
    /// (by its handshake; with `SERVER_AUTH=off`, by its first message).
    fn check_agency(&mut self, seq: u64, agency: AgencyId, ctx: &mut Context<Self>) -> bool {
        if agency == 0 || agency > self.deps.agencies {
            warn!(self.log, "action: check_agency | result: fail"; "ip" => %self.peer, "agency" => agency,
                "error" => format!("agency outside 1..={}", self.deps.agencies));
            let msg = format!("agency {agency} is not taking part (agencies are 1..={})", self.deps.agencies);
            self.nack(seq, NackCode::UnknownAgency, 0, msg, ctx);
            return false;
        }
        match self.agency {
            None => {
                self.agency = Some(agency);
                true
            }
            Some(bound) if bound == agency => true,
            Some(bound) => {
                warn!(self.log, "action: check_agency | result: fail"; "ip" => %self.peer, "bound_agency" => bound, "agency" => agency,
                    "error" => "message for another agency");
                let msg = format!("this connection belongs to agency {bound}, not {agency}");
                self.nack(seq, NackCode::WrongAgency, 0, msg, ctx);
                false
            }
        }
    }

    fn refuse_frame(&mut self, seq: u64, error: ProtocolError, ctx: &mut Context<Self>) {
        let (code, index) = match &error {
            ProtocolError::InvalidBatch { first_index, count, .. } => {
                let outcome = Outcome::BatchRefused { count: *count as u64, error: error.to_string() };
                let nack =
                    Response::Nack { code: NackCode::InvalidBet, index: *first_index, message: error.to_string() };
                self.answer_logged(seq, vec![nack], Some(outcome), ctx);
                return;
            }
            ProtocolError::InvalidField { .. } | ProtocolError::BadUtf8 { .. } => {
                warn!(self.log, "action: receive_message | result: fail"; "ip" => %self.peer, "error" => %error);
                (NackCode::InvalidBet, 0)
            }
            _ => {
                warn!(self.log, "action: receive_message | result: fail"; "ip" => %self.peer, "error" => %error);
                (NackCode::Malformed, 0)
            }
        };
        self.nack(seq, code, index, error.to_string(), ctx);
    }

    fn route(&mut self, seq: u64, request: Request, ctx: &mut Context<Self>) {
        let Some(request) = self.gate(seq, request, ctx) else {
            return;
        };
        if let Some(agency) = request.agency() {
            if !self.check_agency(seq, agency, ctx) {
                return;
            }
        }
        match request {
            // Handled by `gate`.
            Request::AuthHello { .. } | Request::AuthProof { .. } => {}
            Request::Echo(payload) => {
                info!(self.log, "action: receive_message | result: success"; "ip" => %self.peer);
                self.answer(seq, vec![Response::Echo(payload)], ctx);
            }
            Request::Bet { agency, bet } => {
                let (document, number) =
                    bet.iter().next().map(|b| (b.document.to_string(), b.number)).unwrap_or_default();
                let fut =
                    self.deps.store.send(StoreBets { agency, first_index: None, bets: bet }).into_actor(self).map(
                        move |res, act, ctx| {
                            act.in_flight -= 1;
                            let (answer, error) = match flatten(res) {
                                Ok(stored) => (Response::Ack { index: stored.first_index, count: 1 }, None),
                                Err(e) => (
                                    Response::Nack { code: nack_code(&e), index: 0, message: e.to_string() },
                                    Some(e.to_string()),
                                ),
                            };
                            act.answer_logged(seq, vec![answer], Some(Outcome::Bet { document, number, error }), ctx);
                        },
                    );
                self.in_flight(fut, ctx);
            }
            Request::Batch { agency, first_index, bets } => {
                let count = bets.len();
                let fut = self
                    .deps
                    .store
                    .send(StoreBets { agency, first_index: Some(first_index), bets })
                    .into_actor(self)
                    .map(move |res, act, ctx| {
                        act.in_flight -= 1;
                        let (answer, outcome) = match flatten(res) {
                            Ok(stored) => (
                                Response::Ack { index: first_index, count: stored.count },
                                Outcome::BatchStored {
                                    agency,
                                    first_index,
                                    fresh: stored.newly_stored,
                                    count: stored.count,
                                },
                            ),
                            Err(e) => (
                                Response::Nack { code: nack_code(&e), index: first_index, message: e.to_string() },
                                Outcome::BatchRefused { count: count as u64, error: e.to_string() },
                            ),
                        };
                        act.answer_logged(seq, vec![answer], Some(outcome), ctx);
                    });
                self.in_flight(fut, ctx);
            }
            Request::Done { agency, total } => {
                let fut = self.deps.store.send(MarkDone { agency, total }).into_actor(self).map(move |res, act, ctx| {
                    act.in_flight -= 1;
                    let answer = match flatten(res) {
                        // The store told the coordinator itself, once the journal was synced.
                        Ok(stored) => Response::Ack { index: stored, count: 0 },
                        Err(e) => {
                            warn!(act.log, "action: agency_done | result: fail"; "agency" => agency, "ip" => %act.peer, "error" => %e);
                            Response::Nack { code: nack_code(&e), index: total, message: e.to_string() }
                        }
                    };
                    act.answer(seq, vec![answer], ctx);
                });
                self.in_flight(fut, ctx);
            }
            Request::Resume { agency } => {
                let fut = self.deps.store.send(QueryProgress { agency }).into_actor(self).map(move |res, act, ctx| {
                    act.in_flight -= 1;
                    let answer = match flatten(res) {
                        Ok((stored, done)) => {
                            info!(act.log, "action: resume | result: success"; "agency" => agency, "stored" => stored, "done" => done);
                            Response::Progress { agency, stored, done }
                        }
                        Err(e) => {
                            warn!(act.log, "action: resume | result: fail"; "agency" => agency, "ip" => %act.peer, "error" => %e);
                            Response::Nack { code: nack_code(&e), index: 0, message: e.to_string() }
                        }
                    };
                    act.answer(seq, vec![answer], ctx);
                });
                self.in_flight(fut, ctx);
            }
            Request::WinnersRequest { agency } => {
                // One parked request per connection keeps the coordinator's queue bounded.
                if !self.awaiting_winners.is_empty() {
                    let msg = "a winners request of this connection is already waiting for the draw".to_string();
                    self.nack(seq, NackCode::Malformed, 0, msg, ctx);
                    return;
                }
                self.awaiting_winners.push(seq);
                let reply = ctx.address().recipient();
                self.deps.coordinator.do_send(WinnersFor { agency, reply });
            }
        }
    }
}

/// The log line of a bet request, written when its answer leaves (see `answer_logged`).
///
/// The `cantidad` of the `apuesta_recibida` success lines adds up to exactly the bets
/// stored: a resent batch (bets the store already had, after a reconnection) is
/// reported as `apuesta_reenviada`, never counted twice.
enum Outcome {
    BatchStored { agency: AgencyId, first_index: u64, fresh: u32, count: u32 },
    BatchRefused { count: u64, error: String },
    Bet { document: String, number: u16, error: Option<String> },
}

impl Outcome {
    fn log(self, log: &Logger, peer: SocketAddr) {
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
                info!(log, "action: apuesta_recibida | result: fail"; "cantidad" => count, "ip" => %peer, "error" => error);
            }
            Outcome::Bet { document, number, error: None } => {
                info!(log, "action: apuesta_almacenada | result: success"; "dni" => document, "numero" => number);
            }
            Outcome::Bet { document, number, error: Some(error) } => {
                info!(log, "action: apuesta_almacenada | result: fail"; "dni" => document, "numero" => number, "error" => error);
            }
        }
    }
}

fn flatten<T>(res: Result<Result<T, StoreError>, MailboxError>) -> Result<T, StoreError> {
    res.unwrap_or(Err(StoreError::Closed))
}

fn nack_code(e: &StoreError) -> NackCode {
    match e {
        StoreError::AlreadyDone(_) => NackCode::AlreadyDone,
        StoreError::OutOfOrder { .. } => NackCode::OutOfOrder,
        StoreError::Incomplete { .. } => NackCode::Incomplete,
        StoreError::Storage { .. } => NackCode::StorageError,
        StoreError::Closed => NackCode::Unavailable,
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        debug!(self.log, "action: accept_connection | result: success"; "ip" => %self.peer);
        let every = (self.deps.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        ctx.run_interval(every, |act, ctx| {
            let busy = act.in_flight > 0 || !act.awaiting_winners.is_empty();
            if !busy && act.last_frame.elapsed() > act.deps.idle_timeout {
                warn!(act.log, "action: idle_timeout | result: fail"; "ip" => %act.peer,
                    "idle_ms" => act.last_frame.elapsed().as_millis() as u64);
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // The listener hears of the close from the writer, once the socket is really closed.
        let agency = self.agency.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
        info!(self.log, "action: close_connection | result: success"; "ip" => %self.peer, "agency" => agency);
    }
}

impl StreamHandler<Frame> for Connection {
    fn handle(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        self.last_frame = Instant::now();
        let seq = self.next_seq();
        match frame {
            Ok(Ok(request)) => self.route(seq, request, ctx),
            Ok(Err(bad)) => self.refuse_frame(seq, bad, ctx),
            Err(ProtocolError::Io(e)) => {
                info!(self.log, "action: receive_message | result: fail"; "ip" => %self.peer, "error" => %e);
                self.answer(seq, vec![], ctx);
                self.close_when_idle(ctx);
            }
            Err(fatal) => {
                warn!(self.log, "action: receive_message | result: fail"; "ip" => %self.peer, "error" => %fatal, "closing" => true);
                self.nack(seq, NackCode::Malformed, 0, fatal.to_string(), ctx);
                self.close_when_idle(ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The peer closed its side: answer what is in flight, then close.
        self.reading = None;
        self.close_when_idle(ctx);
    }
}

impl Handler<Close> for Connection {
    type Result = ();
    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) {
        self.close_when_idle(ctx);
    }
}

impl Handler<WinnersReady> for Connection {
    type Result = ();
    fn handle(&mut self, msg: WinnersReady, ctx: &mut Context<Self>) {
        if self.awaiting_winners.is_empty() {
            return;
        }
        let seq = self.awaiting_winners.remove(0);
        self.last_frame = Instant::now();
        let answers = match msg.result {
            Ok(documents) => {
                info!(self.log, "action: winners_sent | result: success"; "agency" => msg.agency, "cant_ganadores" => documents.len());
                winners_pages(msg.agency, &documents)
            }
            Err(e) => {
                warn!(self.log, "action: winners_sent | result: fail"; "agency" => msg.agency, "error" => &e);
                vec![Response::Nack {
                    code: NackCode::StorageError,
                    index: 0,
                    message: format!("the draw failed: {e}"),
                }]
            }
        };
        self.answer(seq, answers, ctx);
    }
}
/// Tells the actor its writer gave up (the peer stopped reading, or the socket failed).
#[derive(Message)]
#[rtype(result = "()")]
struct WriterGone;

impl Handler<WriterGone> for Connection {
    type Result = ();
    fn handle(&mut self, _: WriterGone, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The writing side of one connection.
struct Writer {
    id: u64,
    peer: SocketAddr,
    /// How long one write may wait for the peer to read.
    deadline: Duration,
    listener: Addr<Listener>,
    log: Logger,
}

impl Writer {
    /// Writes queued answers, coalescing up to four frames per write; closes the
    /// socket when the connection is gone or the peer stops reading. Holding
    /// `_drain` tells shutdown it is not done.
    async fn run(
        self,
        mut socket: OwnedWriteHalf,
        mut rx: mpsc::Receiver<Vec<Response>>,
        conn: Addr<Connection>,
        _drain: mpsc::Sender<()>,
    ) {
        let mut buf = BytesMut::with_capacity(MAX_FRAME);
        let outcome = self.write_all(&mut socket, &mut rx, &mut buf).await;
        let _ = tokio::time::timeout(self.deadline, socket.shutdown()).await;
        drop(socket);
        if let Err(error) = outcome {
            warn!(self.log, "action: send_response | result: fail"; "ip" => %self.peer, "error" => error);
            conn.do_send(WriterGone);
        }
        // The read half lives in the actor: wait for it to go (the channel closes
        // when the actor is dropped), then the socket is really closed.
        while rx.recv().await.is_some() {}
        self.listener.do_send(ConnectionClosed { id: self.id });
    }

    async fn write_all(
        &self,
        socket: &mut OwnedWriteHalf,
        rx: &mut mpsc::Receiver<Vec<Response>>,
        buf: &mut BytesMut,
    ) -> Result<(), String> {
        while let Some(answer) = rx.recv().await {
            let mut pending = Some(answer);
            while let Some(responses) = pending.take() {
                for response in responses {
                    response.encode(buf).map_err(|e| e.to_string())?;
                    if buf.len() >= 4 * MAX_FRAME {
                        self.flush(socket, buf).await?;
                    }
                }
                if buf.len() < 4 * MAX_FRAME {
                    pending = rx.try_recv().ok();
                }
            }
            self.flush(socket, buf).await?;
            if buf.capacity() > 8 * MAX_FRAME {
                *buf = BytesMut::with_capacity(MAX_FRAME);
            }
        }
        Ok(())
    }

    /// One bounded write: a peer that reads nothing for `deadline` is dropped.
    async fn flush(&self, socket: &mut OwnedWriteHalf, buf: &mut BytesMut) -> Result<(), String> {
        if buf.is_empty() {
            return Ok(());
        }
        match tokio::time::timeout(self.deadline, socket.write_all(buf)).await {
            Ok(Ok(())) => {
                buf.clear();
                Ok(())
            }
            Ok(Err(e)) => Err(format!("{e} ({:?})", e.kind())),
            Err(_) => {
                Err(format!("peer is not reading its answers (nothing written for {} ms)", self.deadline.as_millis()))
            }
        }
    }
}
