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

mod handshake;

use super::auth_guard::AuthGuard;
use super::bet_store::{BetStore, MarkDone, QueryProgress, StoreBets, StoreError};
use super::draw_coordinator::{AgencyDone, DrawCoordinator, WinnersFor, WinnersReady};
use super::listener::{ConnectionClosed, Listener};
use crate::bet::AgencyId;
use crate::net::frame::{winners_pages, BetBatch};
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

/// Responses queued for one peer before it is considered not to be reading.
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
    id: u64,
    peer: SocketAddr,
    agency: Option<AgencyId>,
    auth: handshake::AuthState,
    deps: ConnectionDeps,
    listener: Addr<Listener>,
    outbox: mpsc::Sender<Response>,
    reading: Option<SpawnHandle>,
    last_frame: Instant,
    /// Sequence number of the next request.
    next_seq: u64,
    /// Sequence number of the next answer to write.
    next_out: u64,
    /// Answers ready before an earlier one.
    ready: BTreeMap<u64, Vec<Response>>,
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
        actix::spawn(write_loop(write, rx, drain_guard));
        Connection::create(move |ctx| {
            let reading = Some(ctx.add_stream(FramedRead::with_capacity(read, ServerCodec, MAX_FRAME)));
            Connection {
                id,
                peer,
                agency: None,
                auth: handshake::AuthState::new(deps.auth.is_some()),
                deps,
                listener,
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
        self.ready.insert(seq, responses);
        while let Some(responses) = self.ready.remove(&self.next_out) {
            self.next_out += 1;
            for response in responses {
                self.write(response, ctx);
            }
        }
        if self.ready.len() > MAX_WAITING_ANSWERS {
            warn!(self.log, "action: send_response | result: fail"; "ip" => %self.peer,
                "error" => "too many requests waiting behind an unanswered one");
            ctx.stop();
        }
        self.stop_if_drained(ctx);
    }

    fn write(&mut self, response: Response, ctx: &mut Context<Self>) {
        match self.outbox.try_send(response) {
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
                info!(self.log, "action: apuesta_recibida | result: fail"; "cantidad" => *count, "ip" => %self.peer, "error" => %error);
                (NackCode::InvalidBet, *first_index)
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
                let (document, number) = (bet.document.clone(), bet.number);
                let fut = self.deps.store.send(StoreBets { agency, first_index: None, bets: BetBatch::from_bets(&[bet]) }).into_actor(self).map(
                    move |res, act, ctx| {
                        act.in_flight -= 1;
                        let answer = match flatten(res) {
                            Ok(stored) => {
                                info!(act.log, "action: apuesta_almacenada | result: success"; "dni" => &document, "numero" => number);
                                Response::Ack { index: stored.first_index, count: 1 }
                            }
                            Err(e) => {
                                info!(act.log, "action: apuesta_almacenada | result: fail"; "dni" => &document, "numero" => number, "error" => %e);
                                Response::Nack { code: nack_code(&e), index: 0, message: e.to_string() }
                            }
                        };
                        act.answer(seq, vec![answer], ctx);
                    },
                );
                self.in_flight(fut, ctx);
            }
            Request::Batch { agency, first_index, bets } => {
                let count = bets.len();
                let fut = self.deps.store.send(StoreBets { agency, first_index: Some(first_index), bets }).into_actor(self).map(
                    move |res, act, ctx| {
                        act.in_flight -= 1;
                        let answer = match flatten(res) {
                            Ok(stored) => {
                                info!(act.log, "action: apuesta_recibida | result: success"; "cantidad" => count);
                                if stored.newly_stored < stored.count {
                                    debug!(act.log, "action: apuesta_recibida | result: success"; "agency" => agency,
                                        "first_index" => first_index, "already_stored" => stored.count - stored.newly_stored);
                                }
                                Response::Ack { index: first_index, count: stored.count }
                            }
                            Err(e) => {
                                info!(act.log, "action: apuesta_recibida | result: fail"; "cantidad" => count, "agency" => agency, "error" => %e);
                                Response::Nack { code: nack_code(&e), index: first_index, message: e.to_string() }
                            }
                        };
                        act.answer(seq, vec![answer], ctx);
                    },
                );
                self.in_flight(fut, ctx);
            }
            Request::Done { agency, total } => {
                let fut = self.deps.store.send(MarkDone { agency, total }).into_actor(self).map(move |res, act, ctx| {
                    act.in_flight -= 1;
                    let answer = match flatten(res) {
                        Ok(stored) => {
                            act.deps.coordinator.do_send(AgencyDone { agency });
                            Response::Ack { index: stored, count: 0 }
                        }
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
                    let answer = match res {
                        Ok((stored, done)) => {
                            info!(act.log, "action: resume | result: success"; "agency" => agency, "stored" => stored, "done" => done);
                            Response::Progress { agency, stored, done }
                        }
                        Err(e) => Response::Nack { code: NackCode::Unavailable, index: 0, message: e.to_string() },
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

fn flatten<T>(res: Result<Result<T, StoreError>, MailboxError>) -> Result<T, StoreError> {
    res.unwrap_or(Err(StoreError::Closed))
}

fn nack_code(e: &StoreError) -> NackCode {
    match e {
        StoreError::AlreadyDone(_) => NackCode::AlreadyDone,
        StoreError::OutOfOrder { .. } => NackCode::OutOfOrder,
        StoreError::Incomplete { .. } => NackCode::Incomplete,
        StoreError::Io(_) => NackCode::StorageError,
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
        self.listener.do_send(ConnectionClosed { id: self.id });
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
/// Writes queued responses, coalescing what is ready into one write; closes the
/// socket when the connection is gone. Holding `_drain` tells shutdown it is not done.
async fn write_loop(mut socket: OwnedWriteHalf, mut rx: mpsc::Receiver<Response>, _drain: mpsc::Sender<()>) {
    let mut buf = BytesMut::with_capacity(MAX_FRAME);
    'outer: while let Some(response) = rx.recv().await {
        buf.clear();
        let mut next = Some(response);
        while let Some(r) = next.take() {
            if r.encode(&mut buf).is_err() {
                break 'outer;
            }
            if buf.len() < 4 * MAX_FRAME {
                next = rx.try_recv().ok();
            }
        }
        if socket.write_all(&buf).await.is_err() {
            break;
        }
        if buf.capacity() > 8 * MAX_FRAME {
            buf = BytesMut::with_capacity(MAX_FRAME);
        }
    }
    let _ = socket.shutdown().await;
}
