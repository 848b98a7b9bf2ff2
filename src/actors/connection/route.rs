//! Where each request goes once read: the agency check, the store for bets,
//! Done and Resume (one path for all of them, see `Connection::ask_store`), the
//! coordinator for winners; and the `Nack` for a frame with bad content.

use super::outcome::Outcome;
use super::session::{Answer, BindError};
use super::Connection;
use crate::actors::bet_store::{MarkDone, QueryProgress, StoreBets};
use crate::actors::draw_coordinator::WinnersFor;
use crate::bet::AgencyId;
use crate::net::{NackCode, ProtocolError, Request, Response};
use actix::prelude::*;
use slog::{info, warn};

impl Connection {
    /// Refuses messages for another agency than the one the connection is bound to
    /// (by its handshake; with `SERVER_AUTH=off`, by its first message).
    fn check_agency(&mut self, seq: u64, agency: AgencyId, ctx: &mut Context<Self>) -> bool {
        match self.session.bind(agency) {
            Ok(()) => true,
            Err(BindError::Unknown { agencies }) => {
                warn!(self.log, "action: check_agency | result: fail"; "ip" => %self.peer, "agency" => agency,
                    "error" => format!("agency outside 1..={agencies}"));
                let msg = format!("agency {agency} is not taking part (agencies are 1..={agencies})");
                self.nack(seq, NackCode::UnknownAgency, 0, msg, ctx);
                false
            }
            Err(BindError::Other { bound }) => {
                warn!(self.log, "action: check_agency | result: fail"; "ip" => %self.peer, "bound_agency" => bound,
                    "agency" => agency, "error" => "message for another agency");
                let msg = format!("this connection belongs to agency {bound}, not {agency}");
                self.nack(seq, NackCode::WrongAgency, 0, msg, ctx);
                false
            }
        }
    }

    pub(super) fn refuse_frame(&mut self, seq: u64, error: ProtocolError, ctx: &mut Context<Self>) {
        let code = match &error {
            ProtocolError::InvalidBatch { first_index, count, .. } => {
                let outcome = Outcome::BatchRefused { count: *count as u64, error: error.to_string() };
                let nack =
                    Response::Nack { code: NackCode::InvalidBet, index: *first_index, message: error.to_string() };
                self.answer(seq, Answer::logged(nack, outcome), ctx);
                return;
            }
            ProtocolError::InvalidField { .. } | ProtocolError::BadUtf8 { .. } => NackCode::InvalidBet,
            _ => NackCode::Malformed,
        };
        warn!(self.log, "action: receive_message | result: fail"; "ip" => %self.peer, "error" => %error);
        self.nack(seq, code, 0, error.to_string(), ctx);
    }

    pub(super) fn route(&mut self, seq: u64, request: Request, ctx: &mut Context<Self>) {
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
                self.answer(seq, Answer::new(Response::Echo(payload)), ctx);
            }
            Request::Bet { agency, bet } => {
                let (document, number) =
                    bet.iter().next().map(|b| (b.document.to_string(), b.number)).unwrap_or_default();
                let refused_document = document.clone();
                self.ask_store(
                    seq,
                    StoreBets { agency, first_index: None, bets: bet, writer: self.writer },
                    0,
                    move |_, stored| {
                        let ack = Response::Ack { index: stored.first_index, count: 1 };
                        Answer::logged(ack, Outcome::Bet { document, number, error: None })
                    },
                    move |_, e| Some(Outcome::Bet { document: refused_document, number, error: Some(e.to_string()) }),
                    ctx,
                );
            }
            Request::Batch { agency, first_index, bets } => {
                let count = bets.len() as u64;
                self.ask_store(
                    seq,
                    StoreBets { agency, first_index: Some(first_index), bets, writer: self.writer },
                    first_index,
                    move |_, stored| {
                        let ack = Response::Ack { index: first_index, count: stored.count };
                        let fresh = stored.newly_stored;
                        Answer::logged(ack, Outcome::BatchStored { agency, first_index, fresh, count: stored.count })
                    },
                    move |_, e| Some(Outcome::BatchRefused { count, error: e.to_string() }),
                    ctx,
                );
            }
            Request::Done { agency, total } => self.ask_store(
                seq,
                MarkDone { agency, total, writer: self.writer },
                total,
                // The store told the coordinator itself, once the journal was synced.
                |_, stored| Answer::new(Response::Ack { index: stored, count: 0 }),
                move |act, e| {
                    warn!(act.log, "action: agency_done | result: fail"; "agency" => agency, "ip" => %act.peer,
                        "error" => %e);
                    None
                },
                ctx,
            ),
            Request::Resume { agency } => self.ask_store(
                seq,
                QueryProgress { agency },
                0,
                move |act, (stored, done)| {
                    info!(act.log, "action: resume | result: success"; "agency" => agency, "stored" => stored,
                        "done" => done);
                    Answer::new(Response::Progress { agency, stored, done })
                },
                move |act, e| {
                    warn!(act.log, "action: resume | result: fail"; "agency" => agency, "ip" => %act.peer,
                        "error" => %e);
                    None
                },
                ctx,
            ),
            Request::WinnersRequest { agency } => {
                if !self.session.park_winners(seq) {
                    let msg = "a winners request of this connection is already waiting for the draw".to_string();
                    self.nack(seq, NackCode::AlreadyWaiting, 0, msg, ctx);
                    return;
                }
                let reply = ctx.address().recipient();
                self.deps.coordinator.do_send(WinnersFor { agency, reply });
            }
        }
    }
}
