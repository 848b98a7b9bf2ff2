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

/// The DrawCoordinator actor: owns the set of finished agencies and the draw's
/// result. The BetStore sends it `AgencyDone` once a Done is synced; Connections
/// send `WinnersFor` and get `WinnersReady` back, parked until the draw is run.
pub struct DrawCoordinator {
    /// Agencies `1..=agencies` take part; the draw runs when all are done.
    agencies: u32,
    /// Read at draw time (`draw.winning_number`), not while bets arrive.
    winning_number: u16,
    /// Agencies whose Done is recorded (restored from the journal at start).
    done: BTreeSet<AgencyId>,
    /// Waiting for Dones, running, drawn (winners per agency) or failed.
    state: DrawState,
    /// Winners requests waiting for the draw (one per connection at most).
    parked: Vec<WinnersFor>,
    /// Where the draw reads the stored bets.
    store: Addr<BetStore>,
    log: Logger,
}

impl DrawCoordinator {
    /// `already_done`: agencies whose `Done` survived a restart.
    pub fn new(
        agencies: u32,
        winning_number: u16,
        already_done: Vec<AgencyId>,
        store: Addr<BetStore>,
        log: Logger,
    ) -> Self {
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
                        let millis = started.elapsed().as_millis() as u64;
                        match &o.head {
                            Some(head) => info!(act.log, "action: sorteo | result: success";
                                "bets" => o.rows, "winners" => total, "head" => head, "millis" => millis),
                            None => info!(act.log, "action: sorteo | result: success";
                                "bets" => o.rows, "winners" => total, "millis" => millis),
                        }
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
                // A failed draw (the disk, a descriptor limit) is tried again on the
                // next request: agencies retry a storage error.
                if matches!(act.state, DrawState::Failed(_)) {
                    act.state = DrawState::Waiting;
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
        info!(self.log, "action: draw_coordinator | result: in_progress";
            "agencies" => self.agencies, "done" => self.done.len());
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

    fn handle(&mut self, msg: WinnersFor, ctx: &mut Context<Self>) {
        match self.state {
            DrawState::Waiting | DrawState::Running => {
                self.parked.push(msg);
                self.maybe_draw(ctx);
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::bet_store::{MarkDone, NotifyDone, StoreBets};
    use crate::bet::{Bet, Date};
    use std::time::Duration;
    use tokio::sync::mpsc;

    /// Forwards every answer into a channel the test reads.
    type Answer = (AgencyId, Result<Arc<Vec<String>>, String>);
    struct Collector(mpsc::UnboundedSender<Answer>);
    impl Actor for Collector {
        type Context = Context<Self>;
    }
    impl Handler<WinnersReady> for Collector {
        type Result = ();
        fn handle(&mut self, msg: WinnersReady, _: &mut Context<Self>) {
            let _ = self.0.send((msg.agency, msg.result));
        }
    }

    fn bet(doc: &str, number: u16) -> Bet {
        Bet {
            first_name: "A".into(),
            last_name: "B".into(),
            document: doc.into(),
            birthdate: Date::new(1990, 1, 1).unwrap(),
            number,
        }
    }

    #[actix::test]
    async fn answers_nothing_before_all_done_and_only_own_winners_after() {
        let dir = tempfile::tempdir().unwrap();
        let log = crate::logging::discard();
        let store = BetStore::open(dir.path().join("bets.csv"), true, log.clone()).unwrap().start();
        let coordinator = DrawCoordinator::new(2, 7574, vec![], store.clone(), log).start();
        store.send(NotifyDone(coordinator.clone().recipient())).await.unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let collector = Collector(tx).start();

        let a1 = vec![bet("00000001", 7574), bet("2", 1), bet("3", 7574)];
        let a2 = vec![bet("4", 2), bet("5", 3)];
        store
            .send(StoreBets { agency: 1, first_index: Some(0), bets: a1.into(), writer: None })
            .await
            .unwrap()
            .unwrap();
        store
            .send(StoreBets { agency: 2, first_index: Some(0), bets: a2.into(), writer: None })
            .await
            .unwrap()
            .unwrap();

        // Agency 1 asks before anyone is done: parked, not answered. The store
        // tells the coordinator about each Done (no relay by a connection).
        coordinator.do_send(WinnersFor { agency: 1, reply: collector.clone().recipient() });
        store.send(MarkDone { agency: 1, total: 3, writer: None }).await.unwrap().unwrap();
        let status = coordinator.send(QueryStatus).await.unwrap();
        assert_eq!(status, DrawStatus { done: vec![1], drawn: false, parked_requests: 1 });
        assert!(rx.try_recv().is_err(), "no answer before every agency is done");

        store.send(MarkDone { agency: 2, total: 2, writer: None }).await.unwrap().unwrap();
        let (agency, result) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
        assert_eq!(agency, 1);
        assert_eq!(*result.unwrap(), vec!["00000001".to_string(), "3".to_string()]);

        // Later requests are answered at once, each with its own agency's winners.
        coordinator.do_send(WinnersFor { agency: 2, reply: collector.clone().recipient() });
        let (agency, result) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
        assert_eq!(agency, 2);
        assert!(result.unwrap().is_empty());
        assert!(coordinator.send(QueryStatus).await.unwrap().drawn);
    }

    #[actix::test]
    async fn store_refuses_gaps_after_done_and_stores_retries_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let store = BetStore::open(path.clone(), true, crate::logging::discard()).unwrap().start();
        let batch = vec![bet("1", 1), bet("2", 2)];
        let first = store
            .send(StoreBets { agency: 1, first_index: Some(0), bets: batch.clone().into(), writer: None })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.newly_stored, 2);
        let retry = store
            .send(StoreBets { agency: 1, first_index: Some(0), bets: batch.clone().into(), writer: None })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(retry.newly_stored, 0);
        let overlap = store
            .send(StoreBets {
                agency: 1,
                first_index: Some(1),
                bets: vec![bet("2", 2), bet("3", 3)].into(),
                writer: None,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(overlap.newly_stored, 1);
        let gap = store
            .send(StoreBets { agency: 1, first_index: Some(9), bets: batch.clone().into(), writer: None })
            .await
            .unwrap();
        assert_eq!(gap, Err(crate::actors::bet_store::StoreError::OutOfOrder { expected: 3, got: 9 }));
        assert!(store.send(MarkDone { agency: 1, total: 4, writer: None }).await.unwrap().is_err());
        assert_eq!(store.send(MarkDone { agency: 1, total: 3, writer: None }).await.unwrap(), Ok(3));
        assert_eq!(
            store.send(MarkDone { agency: 1, total: 3, writer: None }).await.unwrap(),
            Ok(3),
            "a second Done is idempotent"
        );
        let late =
            store.send(StoreBets { agency: 1, first_index: Some(3), bets: batch.into(), writer: None }).await.unwrap();
        assert!(matches!(late, Err(crate::actors::bet_store::StoreError::AlreadyDone(1))));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        drop(store);
        // A restarted store remembers progress and Done from disk.
        let reopened = BetStore::open(path, true, crate::logging::discard()).unwrap().start();
        assert_eq!(reopened.send(crate::actors::bet_store::DoneAgencies).await.unwrap(), vec![1]);
    }
}
