//! Listener: owns the listening socket and the table of live connections.
//!
//! Accepting is a stream added to the actor; cancelling it drops the socket, so
//! "stop accepting" really closes the port. Connections over the limit get a
//! `Nack` and are closed, and the server stays healthy.
//!
//! A failed `accept` (EMFILE when descriptors run out, ENOBUFS, ...) pauses
//! accepting with a doubling delay (as mini-redis does), logged once per pause,
//! so a process out of descriptors never spins; the first success resets it.

use super::connection::{Close, Connection, ConnectionDeps};
use crate::net::{NackCode, Response};
use actix::prelude::*;
use bytes::BytesMut;
use slog::{info, warn, Logger};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// First pause after a failed accept.
pub const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The pause doubles up to this.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A failed accept, and how long accepting now pauses.
pub struct AcceptFailed {
    pub error: io::Error,
    pub pause: Duration,
}

/// `TcpListener` as a stream of accepted sockets (tokio 1 has no `incoming()`),
/// pausing after a failure.
pub struct AcceptStream {
    listener: TcpListener,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    next_pause: Duration,
}

impl AcceptStream {
    pub fn new(listener: TcpListener) -> Self {
        AcceptStream { listener, pause: None, next_pause: ACCEPT_BACKOFF_FIRST }
    }
}

impl Stream for AcceptStream {
    type Item = Result<(TcpStream, SocketAddr), AcceptFailed>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(pause) = this.pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.pause = None;
        }
        match this.listener.poll_accept(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(pair)) => {
                this.next_pause = ACCEPT_BACKOFF_FIRST;
                Poll::Ready(Some(Ok(pair)))
            }
            Poll::Ready(Err(error)) => {
                let pause = this.next_pause;
                this.next_pause = (pause * 2).min(ACCEPT_BACKOFF_MAX);
                this.pause = Some(Box::pin(tokio::time::sleep(pause)));
                Poll::Ready(Some(Err(AcceptFailed { error, pause })))
            }
        }
    }
}

/// Stop accepting: the port closes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAccepting;

/// Ask every connection to finish its message and close; replies how many.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseConnections;

/// A connection actor has stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectionClosed {
    pub id: u64,
}

/// Owns the listening socket and the table of live connections. Its accept
/// stream feeds it sockets; the Supervisor sends it [`StopAccepting`] and
/// [`CloseConnections`]; each connection's writer sends [`ConnectionClosed`].
pub struct Listener {
    /// The bound socket until `started` turns it into the accept stream.
    socket: Option<TcpListener>,
    /// Where it listens (logs).
    address: SocketAddr,
    /// The accept stream; cancelling it closes the port.
    accepting: Option<SpawnHandle>,
    /// Live connections by id, until their socket is really closed.
    connections: HashMap<u64, Addr<Connection>>,
    /// The id the next connection takes.
    next_id: u64,
    /// Connections above this get `Nack(unavailable)` and are closed.
    max_connections: usize,
    /// Handed to every new connection.
    deps: ConnectionDeps,
    /// Cloned into each connection's writer; dropped at shutdown so the supervisor
    /// learns when the last writer has finished.
    drain_guard: Option<mpsc::Sender<()>>,
    /// The server's root logger.
    log: Logger,
}

impl Listener {
    pub fn new(
        socket: TcpListener,
        max_connections: usize,
        deps: ConnectionDeps,
        drain_guard: mpsc::Sender<()>,
        log: Logger,
    ) -> io::Result<Self> {
        let address = socket.local_addr()?;
        Ok(Listener {
            socket: Some(socket),
            address,
            accepting: None,
            connections: HashMap::new(),
            next_id: 0,
            max_connections,
            deps,
            drain_guard: Some(drain_guard),
            log,
        })
    }
}

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(socket) = self.socket.take() {
            self.accepting = Some(ctx.add_stream(AcceptStream::new(socket)));
            info!(self.log, "action: accept_connections | result: in_progress"; "address" => %self.address);
        }
    }
}

impl StreamHandler<Result<(TcpStream, SocketAddr), AcceptFailed>> for Listener {
    fn handle(&mut self, accepted: Result<(TcpStream, SocketAddr), AcceptFailed>, ctx: &mut Context<Self>) {
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(AcceptFailed { error, pause }) => {
                warn!(self.log, "action: accept_connection | result: fail"; "kind" => ?error.kind(), "error" => %error,
                    "open_connections" => self.connections.len(), "retry_in_ms" => pause.as_millis() as u64);
                return;
            }
        };
        let Some(guard) = self.drain_guard.clone() else {
            return; // shutting down: dropping the socket refuses it
        };
        if self.connections.len() >= self.max_connections {
            warn!(self.log, "action: accept_connection | result: fail"; "ip" => %peer,
                "error" => format!("too many connections (max {})", self.max_connections));
            // A TLS peer would take a plain Nack for a broken handshake: it gets the close alone,
            // which its agency retries like any refused connection.
            let nack = self.deps.tls.is_none();
            actix::spawn(refuse(stream, self.max_connections, nack));
            return;
        }
        self.next_id += 1;
        let id = self.next_id;
        let addr = Connection::start(id, stream, peer, self.deps.clone(), ctx.address(), guard);
        self.connections.insert(id, addr);
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // The accept stream never ends by itself; when cancelled the listener lives on
        // to track its connections.
    }
}

/// Tells a peer over the limit why it is refused (plain ports only), then closes.
async fn refuse(mut stream: TcpStream, max: usize, nack: bool) {
    if !nack {
        let _ = stream.shutdown().await;
        return;
    }
    let mut buf = BytesMut::new();
    let nack = Response::Nack {
        code: NackCode::Unavailable,
        index: 0,
        message: format!("too many connections (max {max}), retry later"),
    };
    if nack.encode(&mut buf).is_ok() {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stream.write_all(&buf)).await;
    }
    let _ = stream.shutdown().await;
}

impl Handler<StopAccepting> for Listener {
    type Result = ();
    fn handle(&mut self, _: StopAccepting, ctx: &mut Context<Self>) {
        if let Some(handle) = self.accepting.take() {
            ctx.cancel_future(handle);
            info!(self.log, "action: close_listener | result: success"; "address" => %self.address);
        }
    }
}

impl Handler<CloseConnections> for Listener {
    type Result = usize;
    fn handle(&mut self, _: CloseConnections, _: &mut Context<Self>) -> usize {
        self.drain_guard = None;
        for conn in self.connections.values() {
            conn.do_send(Close);
        }
        self.connections.len()
    }
}

impl Handler<ConnectionClosed> for Listener {
    type Result = ();
    fn handle(&mut self, msg: ConnectionClosed, _: &mut Context<Self>) {
        self.connections.remove(&msg.id);
    }
}
