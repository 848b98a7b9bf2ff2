//! The writing side of one connection: a task fed by a bounded channel that
//! writes the answers in order, each write with a deadline, and closes the
//! socket when the connection is gone or the peer stops reading.

use super::Connection;
use crate::actors::listener::{ConnectionClosed, Listener};
use crate::net::tls::PeerWrite as OwnedWriteHalf;
use crate::net::{Response, MAX_FRAME};
use actix::prelude::*;
use bytes::BytesMut;
use slog::{warn, Logger};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// A write buffer larger than this is dropped between bursts.
const IDLE_CAPACITY: usize = 4096;

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

/// The writing side of one connection: owns the write half of the socket and
/// the receiving end of the actor's outbox; tells the Listener when the socket
/// is really closed, and the actor when it gave up.
pub(super) struct Writer {
    id: u64,
    peer: SocketAddr,
    /// How long one write may wait for the peer to read.
    deadline: Duration,
    listener: Addr<Listener>,
    log: Logger,
}

impl Writer {
    pub(super) fn new(id: u64, peer: SocketAddr, deadline: Duration, listener: Addr<Listener>, log: Logger) -> Writer {
        Writer { id, peer, deadline, listener, log }
    }

    /// The connection stopped before its socket was handed over (mid-handshake).
    pub(super) fn never_started(self) {
        self.listener.do_send(ConnectionClosed { id: self.id });
    }

    /// Writes queued answers, coalescing up to four frames per write; closes the
    /// socket when the connection is gone or the peer stops reading. Holding
    /// `_drain` tells shutdown it is not done.
    pub(super) async fn run(
        self,
        mut socket: OwnedWriteHalf,
        mut rx: mpsc::Receiver<Box<[Response]>>,
        conn: Addr<Connection>,
        _drain: mpsc::Sender<()>,
    ) {
        // Grown on the first answer: 10,000 idle connections must not hold 8 KiB each.
        let mut buf = BytesMut::new();
        let outcome = self.write_all(&mut socket, &mut rx, &mut buf).await;
        let _ = Box::pin(tokio::time::timeout(self.deadline, socket.shutdown())).await;
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
        rx: &mut mpsc::Receiver<Box<[Response]>>,
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
            // Between bursts a connection keeps no large buffer (its acks are small).
            if buf.capacity() > IDLE_CAPACITY {
                *buf = BytesMut::new();
            }
        }
        Ok(())
    }

    /// One bounded write: a peer that reads nothing for `deadline` is dropped.
    async fn flush(&self, socket: &mut OwnedWriteHalf, buf: &mut BytesMut) -> Result<(), String> {
        if buf.is_empty() {
            return Ok(());
        }
        // Boxed, like the shutdown's: a timer lives only while a write does, so an
        // idle connection's task stays small (10,000 of them are held at once).
        // The flush matters on TLS: write_all may leave records in rustls when the
        // socket is full, and nothing else would push them out (a no-op on plain TCP).
        let write = async {
            socket.write_all(buf).await?;
            socket.flush().await
        };
        match Box::pin(tokio::time::timeout(self.deadline, write)).await {
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
