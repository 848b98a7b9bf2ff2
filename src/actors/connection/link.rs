//! The link under a connection on a TLS port: the first byte tells a TLS
//! ClientHello from a plain peer (the course's netcat check), then the TLS
//! handshake runs inside the actor, so the idle timeout drops a peer that
//! stalls in it and the listener counts it like any connection.

use super::writer::Writer;
use super::Connection;
use crate::actors::auth_guard::HandshakeFailed;
use crate::net::tls::{binding, rustls_error, split_plain, split_tls, starts_with_tls, ServerTls};
use crate::net::Response;
use actix::prelude::*;
use slog::{debug, info, warn};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// What the writer needs once the link is up.
pub(super) struct Pending {
    pub(super) writer: Writer,
    pub(super) rx: mpsc::Receiver<Box<[Response]>>,
    pub(super) drain_guard: mpsc::Sender<()>,
}

/// How the peer opened its side.
enum Opened {
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Plain(TcpStream),
    /// Closed before sending a byte (a port probe).
    Gone,
}

impl Connection {
    /// Waits for the peer's first byte, then runs the TLS handshake or opens a
    /// plain, Echo-only link.
    pub(super) fn open(&mut self, stream: TcpStream, tls: ServerTls, pending: Pending, ctx: &mut Context<Self>) {
        self.pending = Some(pending);
        let acceptor = tls.acceptor().clone();
        let opening = async move {
            match starts_with_tls(&stream).await? {
                None => Ok(Opened::Gone),
                Some(false) => Ok(Opened::Plain(stream)),
                Some(true) => acceptor.accept(stream).await.map(|s| Opened::Tls(Box::new(s))),
            }
        };
        ctx.spawn(opening.into_actor(self).map(|opened, act, ctx| act.opened(opened, ctx)));
    }

    fn opened(&mut self, opened: std::io::Result<Opened>, ctx: &mut Context<Self>) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        match opened {
            Ok(Opened::Tls(stream)) => match binding(stream.get_ref().1) {
                Ok(b) => {
                    self.binding = Some(b);
                    debug!(self.log, "action: tls_handshake | result: success"; "ip" => %self.peer);
                    self.attach(split_tls(*stream), pending, ctx);
                }
                Err(e) => {
                    self.pending = Some(pending);
                    self.handshake_failed(format!("no keying material to bind the proof to: {e}"), ctx);
                }
            },
            Ok(Opened::Plain(stream)) => {
                info!(self.log, "action: plain_connection | result: success"; "ip" => %self.peer,
                    "note" => "not TLS: only Echo is answered");
                self.auth.set_echo_only();
                self.attach(split_plain(stream), pending, ctx);
            }
            Ok(Opened::Gone) => {
                self.pending = Some(pending);
                ctx.stop();
            }
            Err(e) => {
                self.pending = Some(pending);
                let reason = match rustls_error(&e) {
                    Some(tls) => format!("TLS: {tls}"),
                    None => format!("{e} ({:?})", e.kind()),
                };
                self.handshake_failed(reason, ctx);
            }
        }
    }

    /// Logs the failure, counts it against the address, and closes.
    fn handshake_failed(&mut self, reason: String, ctx: &mut Context<Self>) {
        warn!(self.log, "action: tls_handshake | result: fail"; "ip" => %self.peer, "error" => reason);
        if let Some(guard) = &self.deps.auth {
            guard.do_send(HandshakeFailed { ip: self.peer.ip() });
        }
        ctx.stop();
    }
}
