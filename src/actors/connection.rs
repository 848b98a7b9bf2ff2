//! Connection: one TCP peer. Decodes frames, validates them, and turns them into
//! messages for the BetStore and the DrawCoordinator.
//!
//! Reading is a stream into the actor; a request that needs the store is awaited
//! with `wait`, which also pauses the stream, so each connection handles its
//! messages strictly in order and a fast agency cannot flood the store's mailbox.
//! Writing is a small task fed by a bounded channel; when the actor stops, the
//! channel closes and the task writes what is left, then closes the socket.

use super::bet_store::{BetStore, MarkDone, StoreBets, StoreError};
use super::draw_coordinator::{AgencyDone, DrawCoordinator, WinnersFor, WinnersReady};
use super::listener::{ConnectionClosed, Listener};
use crate::bet::AgencyId;
use crate::net::frame::winners_pages;
use crate::net::{NackCode, ProtocolError, Request, Response, ServerCodec, MAX_FRAME};
use actix::prelude::*;
use bytes::BytesMut;
use slog::{debug, info, warn, Logger};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

/// Responses queued for one peer before it is considered not to be reading.
const OUTBOX: usize = 64;

/// What every connection needs from the rest of the server.
#[derive(Clone)]
pub struct ConnectionDeps {
    pub store: Addr<BetStore>,
    pub coordinator: Addr<DrawCoordinator>,
    /// Valid agencies are `1..=agencies`.
    pub agencies: u32,
    pub idle_timeout: Duration,
    pub log: Logger,
}

/// Finish the message in hand, then close (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

type Frame = Result<Result<Request, ProtocolError>, ProtocolError>;

pub struct Connection {
    id: u64,
    peer: SocketAddr,
    agency: Option<AgencyId>,
    deps: ConnectionDeps,
    listener: Addr<Listener>,
    outbox: mpsc::Sender<Response>,
    last_frame: Instant,
    /// An agency waiting for the draw is legitimately silent.
    awaiting_winners: bool,
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
            ctx.add_stream(FramedRead::with_capacity(read, ServerCodec, MAX_FRAME));
            Connection {
                id,
                peer,
                agency: None,
                deps,
                listener,
                outbox,
                last_frame: Instant::now(),
                awaiting_winners: false,
                log,
            }
        })
    }

    fn reply(&mut self, response: Response, ctx: &mut Context<Self>) {
        match self.outbox.try_send(response) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(self.log, "action: send_response | result: fail"; "ip" => %self.peer, "error" => "peer is not reading its answers");
                ctx.stop();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => ctx.stop(),
        }
    }

    fn nack(&mut self, code: NackCode, index: u64, message: String, ctx: &mut Context<Self>) {
        self.reply(
            Response::Nack {
                code,
                index,
                message,
            },
            ctx,
        );
    }

    /// Binds the connection to the agency of its first message and refuses any other.
    fn check_agency(&mut self, agency: AgencyId, ctx: &mut Context<Self>) -> bool {
        if agency == 0 || agency > self.deps.agencies {
            warn!(self.log, "action: check_agency | result: fail"; "ip" => %self.peer, "agency" => agency,
                "error" => format!("agency outside 1..={}", self.deps.agencies));
            let msg = format!(
                "agency {agency} is not taking part (agencies are 1..={})",
                self.deps.agencies
            );
            self.nack(NackCode::UnknownAgency, 0, msg, ctx);
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
                self.nack(NackCode::WrongAgency, 0, msg, ctx);
                false
            }
        }
    }

    fn refuse_frame(&mut self, error: ProtocolError, ctx: &mut Context<Self>) {
        let (code, index) = match &error {
            ProtocolError::InvalidBatch {
                first_index, count, ..
            } => {
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
        self.nack(code, index, error.to_string(), ctx);
    }

    fn route(&mut self, request: Request, ctx: &mut Context<Self>) {
        if let Some(agency) = request.agency() {
            if !self.check_agency(agency, ctx) {
                return;
            }
        }
        match request {
            Request::Echo(payload) => {
                info!(self.log, "action: receive_message | result: success"; "ip" => %self.peer);
                self.reply(Response::Echo(payload), ctx);
            }
            Request::Bet { agency, bet } => {
                let (document, number) = (bet.document.clone(), bet.number);
                self.deps
                    .store
                    .send(StoreBets { agency, first_index: None, bets: vec![bet] })
                    .into_actor(self)
                    .map(move |res, act, ctx| match flatten(res) {
                        Ok(stored) => {
                            info!(act.log, "action: apuesta_almacenada | result: success"; "dni" => &document, "numero" => number);
                            act.reply(Response::Ack { index: stored.first_index, count: 1 }, ctx);
                        }
                        Err(e) => {
                            info!(act.log, "action: apuesta_almacenada | result: fail"; "dni" => &document, "numero" => number, "error" => %e);
                            act.nack(nack_code(&e), 0, e.to_string(), ctx);
                        }
                    })
                    .wait(ctx);
            }
            Request::Batch {
                agency,
                first_index,
                bets,
            } => {
                let count = bets.len();
                self.deps
                    .store
                    .send(StoreBets { agency, first_index: Some(first_index), bets })
                    .into_actor(self)
                    .map(move |res, act, ctx| match flatten(res) {
                        Ok(stored) => {
                            info!(act.log, "action: apuesta_recibida | result: success"; "cantidad" => count);
                            if stored.newly_stored < stored.count {
                                debug!(act.log, "action: apuesta_recibida | result: success"; "agency" => agency,
                                    "first_index" => first_index, "already_stored" => stored.count - stored.newly_stored);
                            }
                            act.reply(Response::Ack { index: first_index, count: stored.count }, ctx);
                        }
                        Err(e) => {
                            info!(act.log, "action: apuesta_recibida | result: fail"; "cantidad" => count, "agency" => agency, "error" => %e);
                            act.nack(nack_code(&e), first_index, e.to_string(), ctx);
                        }
                    })
                    .wait(ctx);
            }
            Request::Done { agency, total } => {
                self.deps
                    .store
                    .send(MarkDone { agency, total })
                    .into_actor(self)
                    .map(move |res, act, ctx| match flatten(res) {
                        Ok(stored) => {
                            act.deps.coordinator.do_send(AgencyDone { agency });
                            act.reply(Response::Ack { index: stored, count: 0 }, ctx);
                        }
                        Err(e) => {
                            warn!(act.log, "action: agency_done | result: fail"; "agency" => agency, "ip" => %act.peer, "error" => %e);
                            act.nack(nack_code(&e), total, e.to_string(), ctx);
                        }
                    })
                    .wait(ctx);
            }
            Request::WinnersRequest { agency } => {
                self.awaiting_winners = true;
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
        let every =
            (self.deps.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        ctx.run_interval(every, |act, ctx| {
            if !act.awaiting_winners && act.last_frame.elapsed() > act.deps.idle_timeout {
                warn!(act.log, "action: idle_timeout | result: fail"; "ip" => %act.peer,
                    "idle_ms" => act.last_frame.elapsed().as_millis() as u64);
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.listener.do_send(ConnectionClosed { id: self.id });
        let agency = self
            .agency
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into());
        info!(self.log, "action: close_connection | result: success"; "ip" => %self.peer, "agency" => agency);
    }
}

impl StreamHandler<Frame> for Connection {
    fn handle(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        self.last_frame = Instant::now();
        match frame {
            Ok(Ok(request)) => self.route(request, ctx),
            Ok(Err(bad)) => self.refuse_frame(bad, ctx),
            Err(ProtocolError::Io(e)) => {
                info!(self.log, "action: receive_message | result: fail"; "ip" => %self.peer, "error" => %e);
                ctx.stop();
            }
            Err(fatal) => {
                warn!(self.log, "action: receive_message | result: fail"; "ip" => %self.peer, "error" => %fatal, "closing" => true);
                self.nack(NackCode::Malformed, 0, fatal.to_string(), ctx);
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Close> for Connection {
    type Result = ();
    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<WinnersReady> for Connection {
    type Result = ();
    fn handle(&mut self, msg: WinnersReady, ctx: &mut Context<Self>) {
        self.awaiting_winners = false;
        self.last_frame = Instant::now();
        match msg.result {
            Ok(documents) => {
                info!(self.log, "action: winners_sent | result: success"; "agency" => msg.agency, "cant_ganadores" => documents.len());
                for page in winners_pages(msg.agency, &documents) {
                    self.reply(page, ctx);
                }
            }
            Err(e) => {
                warn!(self.log, "action: winners_sent | result: fail"; "agency" => msg.agency, "error" => &e);
                self.nack(
                    NackCode::StorageError,
                    0,
                    format!("the draw failed: {e}"),
                    ctx,
                );
            }
        }
    }
}

/// Writes queued responses, coalescing what is ready into one write; closes the
/// socket when the connection is gone. Holding `_drain` tells shutdown it is not done.
async fn write_loop(
    mut socket: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Response>,
    _drain: mpsc::Sender<()>,
) {
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
