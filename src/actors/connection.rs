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
//!
//! The actor drives a `Session` (binding, answer order, in-flight
//! window); `route` sends each request on, `handshake` checks the agency's key,
//! `outcome` has the log lines a bet request owes, `writer` the writing task,
//! `link` the TLS handshake (or the plain peer) before the first frame.

mod fence;
mod handshake;
mod link;
mod outcome;
mod route;
mod session;
mod writer;

use super::auth_guard::AuthGuard;
use super::bet_store::{BetStore, StoreError};
use super::draw_coordinator::{DrawCoordinator, WinnersReady};
use super::listener::Listener;
use crate::net::frame::winners_pages;
use crate::net::tls::{PeerRead, PeerWrite, ServerTls, BINDING_LEN};
use crate::net::{FrameReader, NackCode, ProtocolError, Request, Response, ServerCodec};
use actix::dev::ToEnvelope;
use actix::prelude::*;
use bytes::BytesMut;
use outcome::{nack_code, Outcome};
pub use session::MAX_IN_FLIGHT;
use session::{Answer, Session};
use slog::{debug, info, warn, Logger};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;
use writer::Writer;

/// Writes queued for one peer before it is considered not to be reading. One
/// slot holds every answer that became due at once (all winners pages, or a
/// whole burst of acks released by one sync), so a burst never fills it.
const OUTBOX: usize = 64;
/// Answers that may wait behind an earlier, slower one (e.g. the winners). Store
/// replies released by one sync complete in the order actix polls them, not in
/// request order: with an agency window above the in-flight limit (windows go
/// up to 256), over a hundred acks were seen waiting for an earlier one, and a
/// limit of 64 closed the connection again and again (each agency reconnected
/// and re-read its file hundreds of times). The bound stays: a peer flooding
/// requests behind its winners request is still closed.
const MAX_WAITING_ANSWERS: usize = 4 * MAX_IN_FLIGHT;

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
    /// The port speaks TLS (plain peers get Echo only); `None`: plain TCP.
    pub tls: Option<ServerTls>,
}

/// Finish the messages in hand, then close (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

/// One frame as the reader hands it to the actor.
enum Incoming {
    Request(Request),
    /// A frame that could be read but whose content is wrong: answered with a
    /// `Nack`, and the connection goes on.
    Refused(ProtocolError),
}

/// The server's codec, with a frame's bad content told apart from a broken
/// stream in one enum (the stream's own errors close the connection).
struct IncomingCodec;

impl Decoder for IncomingCodec {
    type Item = Incoming;
    type Error = ProtocolError;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Incoming>, ProtocolError> {
        Ok(ServerCodec.decode(src)?.map(Incoming::from))
    }
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Incoming>, ProtocolError> {
        Ok(ServerCodec.decode_eof(src)?.map(Incoming::from))
    }
}

impl From<Result<Request, ProtocolError>> for Incoming {
    fn from(item: Result<Request, ProtocolError>) -> Incoming {
        match item {
            Ok(request) => Incoming::Request(request),
            Err(bad) => Incoming::Refused(bad),
        }
    }
}

/// One TCP peer. Owns the read half of its socket (as a stream added to the
/// actor) and the sending end of its writer's channel; the peer sends it
/// frames, the BetStore, the DrawCoordinator and the AuthGuard send it their
/// replies, the Listener sends it [`Close`] at shutdown.
pub struct Connection {
    peer: SocketAddr,
    /// Binding, answer order and in-flight window: the protocol state.
    session: Session,
    /// Where the handshake stands.
    auth: handshake::AuthState,
    deps: ConnectionDeps,
    /// Answers for the writer task; bounded, so a peer that does not read is dropped.
    /// Boxed slices, not `Vec`s: the channel's first block holds 32 items, and
    /// 8 bytes less each is 256 bytes less per connection.
    outbox: mpsc::Sender<Box<[Response]>>,
    /// The reading stream, cancelled to stop reading when closing.
    reading: Option<SpawnHandle>,
    /// When the last frame arrived (idle timeout).
    last_frame: Instant,
    /// Stop as soon as nothing is in flight.
    closing: bool,
    /// The writer, kept until the TLS handshake is over (then it starts).
    pending: Option<link::Pending>,
    /// The TLS session's keying material the agency's proof must cover.
    binding: Option<[u8; BINDING_LEN]>,
    /// The epoch the store gave this connection's claim of its agency (`None`
    /// without a handshake); sent with every write so a fenced one is refused.
    writer: Option<u64>,
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
        let (outbox, rx) = mpsc::channel(OUTBOX);
        let log = deps.log.new(slog::o!());
        let writer = Writer::new(id, peer, deps.idle_timeout, listener, log.clone());
        Connection::create(move |ctx| {
            let tls = deps.tls.clone();
            let mut conn = Connection {
                peer,
                session: Session::new(deps.agencies),
                auth: handshake::AuthState::new(deps.auth.is_some()),
                deps,
                outbox,
                reading: None,
                last_frame: Instant::now(),
                closing: false,
                pending: None,
                binding: None,
                writer: None,
                log,
            };
            let pending = link::Pending { writer, rx, drain_guard };
            match tls {
                None => conn.attach(crate::net::tls::split_plain(stream), pending, ctx),
                Some(tls) => conn.open(stream, tls, pending, ctx),
            }
            conn
        })
    }

    /// Starts the writer on `write` and reads frames from `read`.
    fn attach(&mut self, (read, write): (PeerRead, PeerWrite), pending: link::Pending, ctx: &mut Context<Self>) {
        let link::Pending { writer, rx, drain_guard } = pending;
        actix::spawn(writer.run(write, rx, ctx.address(), drain_guard));
        self.reading = Some(ctx.add_stream(FrameReader::new(read, IncomingCodec)));
    }

    /// Records the answer of request `seq` and writes every answer now in order,
    /// logging each one's outcome as it leaves.
    fn answer(&mut self, seq: u64, answer: Answer, ctx: &mut Context<Self>) {
        self.session.record(seq, answer);
        // Everything now due goes to the writer as one outbox item.
        let mut due: Vec<Response> = Vec::new();
        while let Some(Answer { responses, outcome }) = self.session.next_answer() {
            if let Some(outcome) = outcome {
                outcome.log(&self.log, self.peer);
            }
            if due.is_empty() {
                due = responses;
            } else {
                due.extend(responses);
            }
        }
        if !due.is_empty() {
            self.write(due, ctx);
        }
        if self.session.held_back() > MAX_WAITING_ANSWERS {
            warn!(self.log, "action: send_response | result: fail"; "ip" => %self.peer,
                "error" => "too many requests waiting behind an unanswered one");
            ctx.stop();
        }
        self.stop_if_drained(ctx);
    }

    fn write(&mut self, responses: Vec<Response>, ctx: &mut Context<Self>) {
        match self.outbox.try_send(responses.into_boxed_slice()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(self.log, "action: send_response | result: fail"; "ip" => %self.peer,
                    "error" => "peer is not reading its answers");
                ctx.stop();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => ctx.stop(),
        }
    }

    fn nack(&mut self, seq: u64, code: NackCode, index: u64, message: String, ctx: &mut Context<Self>) {
        self.answer(seq, Answer::new(Response::Nack { code, index, message }), ctx);
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
        if self.closing && self.session.is_drained() {
            ctx.stop();
        }
    }

    /// Sends `msg` to another actor without blocking the connection (unless the
    /// window is full) and hands the reply to `then`: the one path every request
    /// that waits on another actor takes.
    fn ask<A, M, F>(&mut self, to: &Addr<A>, msg: M, then: F, ctx: &mut Context<Self>)
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
        F: FnOnce(&mut Self, Result<M::Result, MailboxError>, &mut Context<Self>) + 'static,
    {
        let fut = to.send(msg).into_actor(self).map(move |reply, act, ctx| {
            act.session.replied();
            then(act, reply, ctx);
        });
        if self.session.sent() {
            ctx.wait(fut);
        } else {
            ctx.spawn(fut);
        }
    }

    /// Asks the store, and answers request `seq` with what `stored` makes of its
    /// reply, or with a `Nack` at `index` (logged by `refused`) when it refuses.
    fn ask_store<M, T>(
        &mut self,
        seq: u64,
        msg: M,
        index: u64,
        stored: impl FnOnce(&Self, T) -> Answer + 'static,
        refused: impl FnOnce(&Self, &StoreError) -> Option<Outcome> + 'static,
        ctx: &mut Context<Self>,
    ) where
        M: Message<Result = Result<T, StoreError>> + Send + 'static,
        BetStore: Handler<M>,
        T: Send + 'static,
    {
        let store = self.deps.store.clone();
        self.ask(
            &store,
            msg,
            move |act, reply, ctx| {
                let answer = match reply.unwrap_or(Err(StoreError::Closed)) {
                    Ok(value) => stored(act, value),
                    Err(e) => {
                        let nack = Response::Nack { code: nack_code(&e), index, message: e.to_string() };
                        Answer { responses: vec![nack], outcome: refused(act, &e) }
                    }
                };
                act.answer(seq, answer, ctx);
            },
            ctx,
        );
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        debug!(self.log, "action: accept_connection | result: success"; "ip" => %self.peer);
        let every = (self.deps.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        ctx.run_interval(every, |act, ctx| {
            if !act.session.is_busy() && act.last_frame.elapsed() > act.deps.idle_timeout {
                warn!(act.log, "action: idle_timeout | result: fail"; "ip" => %act.peer,
                    "idle_ms" => act.last_frame.elapsed().as_millis() as u64);
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(pending) = self.pending.take() {
            // Stopped mid-handshake: no writer ever ran to tell the listener.
            pending.writer.never_started();
        }
        // The listener hears of the close from the writer, once the socket is really closed.
        let agency = self.session.agency().map(|a| a.to_string()).unwrap_or_else(|| "-".into());
        info!(self.log, "action: close_connection | result: success"; "ip" => %self.peer, "agency" => agency);
    }
}

impl StreamHandler<Result<Incoming, ProtocolError>> for Connection {
    fn handle(&mut self, frame: Result<Incoming, ProtocolError>, ctx: &mut Context<Self>) {
        self.last_frame = Instant::now();
        let seq = self.session.begin();
        match frame {
            Ok(Incoming::Request(request)) => self.route(seq, request, ctx),
            Ok(Incoming::Refused(bad)) => {
                self.refuse_frame(seq, bad, ctx);
                if self.auth.echo_only() {
                    self.close_when_idle(ctx);
                }
            }
            Err(ProtocolError::Io(e)) => {
                info!(self.log, "action: receive_message | result: fail"; "ip" => %self.peer, "error" => %e);
                self.answer(seq, Answer::nothing(), ctx);
                self.close_when_idle(ctx);
            }
            Err(fatal) => {
                warn!(self.log, "action: receive_message | result: fail"; "ip" => %self.peer, "error" => %fatal,
                    "closing" => true);
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
        let Some(seq) = self.session.take_winners() else {
            return;
        };
        self.last_frame = Instant::now();
        let answers = match msg.result {
            Ok(documents) => {
                info!(self.log, "action: winners_sent | result: success"; "agency" => msg.agency,
                    "cant_ganadores" => documents.len());
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
        self.answer(seq, Answer::pages(answers), ctx);
    }
}
