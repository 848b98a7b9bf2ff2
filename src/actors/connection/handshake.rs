//! The connection's side of the handshake: which messages an unauthenticated
//! peer may send, the challenge, and the verdict of the AuthGuard.
//!
//! Only `Echo` (the course's netcat check) and the handshake are open before
//! authentication; the server never speaks first, so a peer that sends an Echo
//! right after connecting gets exactly its echo back. Anything else gets a
//! `Nack(unauthenticated)` and the connection is closed. A successful proof binds
//! the connection to its agency; each challenge is used once.
//!
//! On a TLS link the proof covers the session's keying material too
//! ([`bound_nonce`]), so a proof relayed from another session fails; a plain
//! peer on a TLS port gets Echo and nothing else.

use super::session::Answer;
use super::Connection;
use crate::actors::auth_guard::{Verdict, Verify};
use crate::auth::{bound_nonce, random_bytes, MAC_LEN, NONCE_LEN};
use crate::bet::AgencyId;
use crate::net::{NackCode, Request, Response};
use actix::prelude::*;
use slog::warn;

/// Where a connection stands in the handshake.
pub(super) enum AuthState {
    /// The server runs with `SERVER_AUTH=off`: every message is open, and a
    /// handshake is answered (any proof is accepted) so agencies with a key still work.
    Off,
    /// Nothing but `Echo` and `AuthHello` yet.
    Fresh,
    /// A challenge is out for this agency.
    Challenged { agency: AgencyId, nonce: [u8; NONCE_LEN] },
    /// The proof is with the AuthGuard.
    Verifying,
    /// Proven: the connection speaks for `self.agency`.
    Authenticated,
    /// A plain peer on a TLS port: Echo only, whatever else it sends.
    EchoOnly,
}

impl AuthState {
    pub(super) fn new(enabled: bool) -> AuthState {
        if enabled {
            AuthState::Fresh
        } else {
            AuthState::Off
        }
    }

    pub(super) fn set_echo_only(&mut self) {
        *self = AuthState::EchoOnly;
    }

    pub(super) fn echo_only(&self) -> bool {
        matches!(self, AuthState::EchoOnly)
    }
}

impl Connection {
    /// Handles the handshake messages and refuses what an unauthenticated peer
    /// may not send; returns the request when it may go on.
    pub(super) fn gate(&mut self, seq: u64, request: Request, ctx: &mut Context<Self>) -> Option<Request> {
        if self.auth.echo_only() && !matches!(request, Request::Echo(_)) {
            warn!(self.log, "action: auth | result: fail"; "ip" => %self.peer,
                "agency" => request.agency().unwrap_or(0), "error" => "plain connection to a TLS port, closing");
            let msg = "this server speaks TLS: a plain connection may only send Echo".to_string();
            self.nack(seq, NackCode::Unauthenticated, 0, msg, ctx);
            self.close_when_idle(ctx);
            return None;
        }
        match request {
            Request::AuthHello { agency } => {
                self.hello(seq, agency, ctx);
                None
            }
            Request::AuthProof { mac } => {
                self.proof(seq, mac, ctx);
                None
            }
            Request::Echo(_) => Some(request),
            other => match self.auth {
                AuthState::Off | AuthState::Authenticated => Some(other),
                _ => {
                    warn!(self.log, "action: auth | result: fail"; "ip" => %self.peer,
                        "agency" => other.agency().unwrap_or(0), "error" => "message before authentication, closing");
                    let msg = "authenticate first (AuthHello, then AuthProof): only Echo is open".to_string();
                    self.nack(seq, NackCode::Unauthenticated, 0, msg, ctx);
                    self.close_when_idle(ctx);
                    None
                }
            },
        }
    }

    fn hello(&mut self, seq: u64, agency: AgencyId, ctx: &mut Context<Self>) {
        if matches!(self.auth, AuthState::Authenticated | AuthState::Verifying) {
            let msg = "this connection is already authenticated or being verified".to_string();
            self.nack(seq, NackCode::Malformed, 0, msg, ctx);
            return;
        }
        let nonce = match random_bytes::<NONCE_LEN>() {
            Ok(nonce) => nonce,
            Err(e) => {
                warn!(self.log, "action: auth | result: fail"; "ip" => %self.peer,
                    "error" => format!("no random nonce: {e}"));
                self.nack(seq, NackCode::Unavailable, 0, "the server cannot make a challenge now".into(), ctx);
                self.close_when_idle(ctx);
                return;
            }
        };
        if !matches!(self.auth, AuthState::Off) {
            self.auth = AuthState::Challenged { agency, nonce };
        } else if self.session.agency().is_none() {
            self.session.bind_proven(agency);
        }
        self.answer(seq, Answer::new(Response::Challenge { nonce }), ctx);
    }

    fn proof(&mut self, seq: u64, mac: [u8; MAC_LEN], ctx: &mut Context<Self>) {
        let (agency, nonce) = match std::mem::replace(&mut self.auth, AuthState::Verifying) {
            AuthState::Challenged { agency, nonce } => (agency, nonce),
            AuthState::Off => {
                self.auth = AuthState::Off;
                self.answer(seq, Answer::new(Response::Ack { index: 0, count: 0 }), ctx);
                return;
            }
            AuthState::Authenticated => {
                self.auth = AuthState::Authenticated;
                self.nack(seq, NackCode::Malformed, 0, "this connection is already authenticated".into(), ctx);
                return;
            }
            AuthState::Fresh | AuthState::Verifying | AuthState::EchoOnly => {
                warn!(self.log, "action: auth | result: fail"; "ip" => %self.peer,
                    "error" => "proof without a challenge, closing");
                self.nack(seq, NackCode::AuthFailed, 0, "no challenge to answer: send AuthHello first".into(), ctx);
                self.close_when_idle(ctx);
                return;
            }
        };
        let Some(guard) = self.deps.auth.clone() else {
            // Unreachable: a guard exists whenever the state is not Off.
            self.nack(seq, NackCode::AuthFailed, 0, "authentication is not available".into(), ctx);
            self.close_when_idle(ctx);
            return;
        };
        let nonce = match &self.binding {
            Some(binding) => bound_nonce(&nonce, binding),
            None => nonce,
        };
        let verify = Verify { ip: self.peer.ip(), agency, nonce, mac };
        self.ask(&guard, verify, move |act, verdict, ctx| act.verdict(seq, agency, verdict.ok(), ctx), ctx);
    }

    fn verdict(&mut self, seq: u64, agency: AgencyId, verdict: Option<Verdict>, ctx: &mut Context<Self>) {
        match verdict {
            // Authenticated once the store made this connection the agency's writer.
            Some(Verdict::Accepted { delayed }) => self.claim(seq, agency, delayed, ctx),
            Some(Verdict::Rejected { failures, delayed }) => {
                warn!(self.log, "action: auth | result: fail"; "ip" => %self.peer, "agency" => agency,
                    "failures" => failures, "delayed_ms" => delayed.as_millis() as u64,
                    "error" => "wrong proof, closing");
                let msg = format!("authentication as agency {agency} failed");
                self.nack(seq, NackCode::AuthFailed, 0, msg, ctx);
                self.close_when_idle(ctx);
            }
            Some(Verdict::Throttled { retry_after }) => {
                warn!(self.log, "action: auth | result: fail"; "ip" => %self.peer, "agency" => agency,
                    "error" => "too many failed attempts from this address, not checked, closing");
                let msg = format!(
                    "too many failed authentications from this address; retry in {} ms",
                    retry_after.as_millis()
                );
                self.nack(seq, NackCode::Unavailable, 0, msg, ctx);
                self.close_when_idle(ctx);
            }
            None => {
                self.nack(seq, NackCode::Unavailable, 0, "the server is closing".into(), ctx);
                self.close_when_idle(ctx);
            }
        }
    }
}
