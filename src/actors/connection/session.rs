//! The protocol state of one connection, apart from its socket and mailbox:
//! which agency it speaks for, the order its answers leave in (each with the
//! log line it owes), and its window of requests waiting on other actors.

use super::outcome::Outcome;
use crate::bet::AgencyId;
use crate::net::Response;
use std::collections::BTreeMap;

/// Store requests one connection may have outstanding (pipelined batches).
pub const MAX_IN_FLIGHT: usize = 64;

/// The answer to one request: its frames (none for a request that gets no
/// answer) and the log line written when they leave.
pub(super) struct Answer {
    pub responses: Vec<Response>,
    pub outcome: Option<Outcome>,
}

impl Answer {
    pub fn new(response: Response) -> Answer {
        Answer { responses: vec![response], outcome: None }
    }

    pub fn logged(response: Response, outcome: Outcome) -> Answer {
        Answer { responses: vec![response], outcome: Some(outcome) }
    }

    /// No frame: the request's turn passes without an answer (a broken stream).
    pub fn nothing() -> Answer {
        Answer { responses: Vec::new(), outcome: None }
    }

    /// Several frames (the winners' pages) that leave as one answer.
    pub fn pages(responses: Vec<Response>) -> Answer {
        Answer { responses, outcome: None }
    }
}

/// Why a message cannot speak for the agency it names.
pub(super) enum BindError {
    /// Outside `1..=agencies`.
    Unknown { agencies: u32 },
    /// The connection already speaks for `bound`.
    Other { bound: AgencyId },
}

pub(super) struct Session {
    /// The agency this connection speaks for, once known (by the handshake, or
    /// with `SERVER_AUTH=off` by its first message).
    bound: Option<AgencyId>,
    /// Valid agencies are `1..=agencies`.
    agencies: u32,
    /// Sequence number the next request takes.
    next_seq: u64,
    /// Sequence number of the next answer to write.
    next_out: u64,
    /// The answer due next, when it came in order (the usual case: no map node
    /// is allocated, which at 10,000 connections is 10 MB).
    due: Option<Answer>,
    /// Answers ready before an earlier one.
    ready: BTreeMap<u64, Answer>,
    /// Requests sent to another actor and not answered yet.
    in_flight: usize,
    /// The winners request parked at the coordinator (one per connection keeps
    /// the coordinator's queue bounded).
    awaiting_winners: Option<u64>,
}

impl Session {
    pub fn new(agencies: u32) -> Session {
        Session {
            bound: None,
            agencies,
            next_seq: 0,
            next_out: 0,
            due: None,
            ready: BTreeMap::new(),
            in_flight: 0,
            awaiting_winners: None,
        }
    }

    /// Numbers a new request; its answer leaves after those of every earlier one.
    pub fn begin(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    pub fn agency(&self) -> Option<AgencyId> {
        self.bound
    }

    /// Binds the connection to `agency`, or says why a message for it is refused.
    pub fn bind(&mut self, agency: AgencyId) -> Result<(), BindError> {
        if agency == 0 || agency > self.agencies {
            return Err(BindError::Unknown { agencies: self.agencies });
        }
        match self.bound {
            None => {
                self.bound = Some(agency);
                Ok(())
            }
            Some(bound) if bound == agency => Ok(()),
            Some(bound) => Err(BindError::Other { bound }),
        }
    }

    /// The handshake proved the peer is `agency`.
    pub fn bind_proven(&mut self, agency: AgencyId) {
        self.bound = Some(agency);
    }

    /// Records the answer of request `seq`; [`Self::next_answer`] hands out
    /// those now due, in order.
    pub fn record(&mut self, seq: u64, answer: Answer) {
        if seq == self.next_out && self.due.is_none() {
            self.due = Some(answer);
        } else {
            self.ready.insert(seq, answer);
        }
    }

    pub fn next_answer(&mut self) -> Option<Answer> {
        let answer = match self.due.take() {
            Some(answer) => answer,
            None => {
                let answer = self.ready.remove(&self.next_out)?;
                if self.ready.is_empty() {
                    // An emptied map keeps its node: let it go.
                    self.ready = BTreeMap::new();
                }
                answer
            }
        };
        self.next_out += 1;
        Some(answer)
    }

    /// Answers held back behind an earlier, slower one.
    pub fn held_back(&self) -> usize {
        self.ready.len() + usize::from(self.due.is_some())
    }

    /// A request went to another actor; `true` when the window is full and the
    /// connection must wait for it (which also pauses reading).
    pub fn sent(&mut self) -> bool {
        self.in_flight += 1;
        self.in_flight >= MAX_IN_FLIGHT
    }

    pub fn replied(&mut self) {
        self.in_flight -= 1;
    }

    /// Nothing is waiting on another actor.
    pub fn is_drained(&self) -> bool {
        self.in_flight == 0
    }

    /// Waiting on the store or on the draw: not idle, however quiet the peer.
    pub fn is_busy(&self) -> bool {
        self.in_flight > 0 || self.awaiting_winners.is_some()
    }

    /// Parks winners request `seq`; `false` when one is already waiting.
    pub fn park_winners(&mut self, seq: u64) -> bool {
        if self.awaiting_winners.is_some() {
            return false;
        }
        self.awaiting_winners = Some(seq);
        true
    }

    pub fn take_winners(&mut self) -> Option<u64> {
        self.awaiting_winners.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(index: u64) -> Answer {
        Answer::new(Response::Ack { index, count: 0 })
    }

    #[test]
    fn answers_leave_in_request_order() {
        let mut s = Session::new(2);
        let (a, b, c) = (s.begin(), s.begin(), s.begin());
        s.record(c, ack(c));
        s.record(b, ack(b));
        assert!(s.next_answer().is_none(), "the first request is not answered yet");
        assert_eq!(s.held_back(), 2);
        s.record(a, ack(a));
        let order: Vec<Vec<Response>> = std::iter::from_fn(|| s.next_answer()).map(|a| a.responses).collect();
        assert_eq!(order, vec![ack(0).responses, ack(1).responses, ack(2).responses]);
    }

    #[test]
    fn a_connection_binds_to_one_known_agency() {
        let mut s = Session::new(2);
        assert!(matches!(s.bind(3), Err(BindError::Unknown { agencies: 2 })));
        assert!(s.bind(2).is_ok() && s.bind(2).is_ok());
        assert!(matches!(s.bind(1), Err(BindError::Other { bound: 2 })));
        assert_eq!(s.agency(), Some(2));
    }

    #[test]
    fn the_window_fills_and_one_winners_request_waits() {
        let mut s = Session::new(1);
        assert!((1..MAX_IN_FLIGHT).all(|_| !s.sent()));
        assert!(s.sent(), "the last slot of the window makes the connection wait");
        (0..MAX_IN_FLIGHT).for_each(|_| s.replied());
        assert!(s.is_drained() && !s.is_busy());
        assert!(s.park_winners(7) && !s.park_winners(8));
        assert!(s.is_busy());
        assert_eq!((s.take_winners(), s.take_winners()), (Some(7), None));
    }
}
