//! DrawCoordinator: waits for every agency's `Done`, runs the draw exactly once,
//! and answers each agency with its own winners only.
//!
//! Requests that arrive before the draw are parked and answered when it happens,
//! so agencies never poll and never see a partial answer.

use super::bet_store::{BetStore, Draw, DrawOutcome};
use crate::bet::AgencyId;
use actix::prelude::*;
use slog::{error, info, warn, Logger};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

/// An agency finished sending (its Done is recorded by the store).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AgencyDone {
    pub agency: AgencyId,
}

/// The winners of one agency, answered to `reply` once the draw has run.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WinnersFor {
    pub agency: AgencyId,
    pub reply: Recipient<WinnersReady>,
}

/// The answer to [`WinnersFor`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct WinnersReady {
    pub agency: AgencyId,
    pub result: Result<Arc<Vec<String>>, String>,
}

/// Where the draw stands (for tests and the supervisor).
#[derive(Message)]
#[rtype(result = "DrawStatus")]
pub struct QueryStatus;

#[derive(Debug, Clone, PartialEq, Eq, MessageResponse)]
pub struct DrawStatus {
    pub done: Vec<AgencyId>,
    pub drawn: bool,
    pub parked_requests: usize,
}

enum DrawState {
    Waiting,
    Running,
    Drawn(HashMap<AgencyId, Arc<Vec<String>>>),
    Failed(String),
}

pub struct DrawCoordinator {
    agencies: u32,
    winning_number: u16,
    done: BTreeSet<AgencyId>,
    state: DrawState,
    parked: Vec<WinnersFor>,
    store: Addr<BetStore>,
    log: Logger,
}

impl DrawCoordinator {
    /// `already_done`: agencies whose `Done` survived a restart.
    pub fn new(agencies: u32, winning_number: u16, already_done: Vec<AgencyId>, store: Addr<BetStore>, log: Logger) -> Self {
        let done = already_done.into_iter().filter(|a| (1..=agencies).contains(a)).collect();
        DrawCoordinator { agencies, winning_number, done, state: DrawState::Waiting, parked: Vec::new(), store, log }
    }

    fn maybe_draw(&mut self, ctx: &mut Context<Self>) {
        if self.agencies == 0 || self.done.len() < self.agencies as usize || !matches!(self.state, DrawState::Waiting) {
            return;
        }
        self.state = DrawState::Running;
        let started = Instant::now();
        self.store
            .send(Draw { winning_number: self.winning_number })
            .into_actor(self)
            .map(move |res, act, _| {
                let outcome: Result<DrawOutcome, String> = match res {
                    Ok(Ok(o)) => Ok(o),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(o) => {
                        let total: usize = o.winners.values().map(|w| w.len()).sum();
                        info!(act.log, "action: sorteo | result: success";
                            "bets" => o.rows, "winners" => total, "millis" => started.elapsed().as_millis() as u64);
                        act.state = DrawState::Drawn(o.winners);
                    }
                    Err(e) => {
                        error!(act.log, "action: sorteo | result: fail"; "error" => &e);
                        act.state = DrawState::Failed(e);
                    }
                }
                for request in std::mem::take(&mut act.parked) {
                    act.answer(request);
                }
            })
            .spawn(ctx);
    }

    fn answer(&self, request: WinnersFor) {
        let result = match &self.state {
            DrawState::Drawn(winners) => Ok(winners.get(&request.agency).cloned().unwrap_or_default()),
            DrawState::Failed(e) => Err(e.clone()),
            DrawState::Waiting | DrawState::Running => return,
        };
        request.reply.do_send(WinnersReady { agency: request.agency, result });
    }
}

impl Actor for DrawCoordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(self.log, "action: draw_coordinator | result: in_progress"; "agencies" => self.agencies, "done" => self.done.len());
        // All agencies may have finished before a restart: draw at once.
        self.maybe_draw(ctx);
    }
}

impl Handler<AgencyDone> for DrawCoordinator {
    type Result = ();

    fn handle(&mut self, msg: AgencyDone, ctx: &mut Context<Self>) {
        if !self.done.insert(msg.agency) {
            warn!(self.log, "action: agency_done | result: success"; "agency" => msg.agency, "note" => "repeated Done");
            return;
        }
        info!(self.log, "action: agency_done | result: success";
            "agency" => msg.agency, "done" => self.done.len(), "agencies" => self.agencies);
        self.maybe_draw(ctx);
    }
}

impl Handler<WinnersFor> for DrawCoordinator {
    type Result = ();

    fn handle(&mut self, msg: WinnersFor, _: &mut Context<Self>) {
        match self.state {
            DrawState::Waiting | DrawState::Running => self.parked.push(msg),
            _ => self.answer(msg),
        }
    }
}

impl Handler<QueryStatus> for DrawCoordinator {
    type Result = DrawStatus;

    fn handle(&mut self, _: QueryStatus, _: &mut Context<Self>) -> DrawStatus {
        DrawStatus {
            done: self.done.iter().copied().collect(),
            drawn: matches!(self.state, DrawState::Drawn(_)),
            parked_requests: self.parked.len(),
        }
    }
}
