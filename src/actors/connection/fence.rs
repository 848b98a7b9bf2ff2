//! The connection's side of the one-writer fence: a proven connection claims its
//! agency from the store before it is authenticated, and closes when a newer one
//! claims it (see `bet_store::fence`).

use super::handshake::AuthState;
use super::session::Answer;
use super::Connection;
use crate::actors::bet_store::{Claim, Fenced};
use crate::bet::AgencyId;
use crate::net::{NackCode, Response};
use actix::prelude::*;
use slog::{info, warn};
use std::time::Duration;

impl Connection {
    /// Claims `agency` for this connection, then answers the handshake's `Ack`.
    pub(super) fn claim(&mut self, seq: u64, agency: AgencyId, delayed: Duration, ctx: &mut Context<Self>) {
        let store = self.deps.store.clone();
        let claim = Claim { agency, fenced: ctx.address().recipient() };
        self.ask(
            &store,
            claim,
            move |act, epoch, ctx| match epoch {
                Ok(epoch) => {
                    act.writer = Some(epoch);
                    act.auth = AuthState::Authenticated;
                    act.session.bind_proven(agency);
                    info!(act.log, "action: auth | result: success"; "ip" => %act.peer, "agency" => agency,
                        "delayed_ms" => delayed.as_millis() as u64, "epoch" => epoch);
                    act.answer(seq, Answer::new(Response::Ack { index: 0, count: 0 }), ctx);
                }
                Err(_) => {
                    act.nack(seq, NackCode::Unavailable, 0, "the server is closing".into(), ctx);
                    act.close_when_idle(ctx);
                }
            },
            ctx,
        );
    }
}

impl Handler<Fenced> for Connection {
    type Result = ();

    /// A newer connection of the agency took over: stop reading; what is in
    /// flight is refused by the store (or was stored before the fence) and
    /// answered, then the connection closes.
    fn handle(&mut self, msg: Fenced, ctx: &mut Context<Self>) {
        warn!(self.log, "action: fence | result: fail"; "ip" => %self.peer, "agency" => msg.agency,
            "epoch" => self.writer.unwrap_or(0), "error" => format!("a newer connection (epoch {}) took over, closing", msg.by));
        self.close_when_idle(ctx);
    }
}
