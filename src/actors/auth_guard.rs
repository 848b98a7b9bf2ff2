//! AuthGuard: owns the agencies' keys and the table of failed handshakes per
//! peer address and claimed agency, and decides every proof.
//!
//! Guessing a key must cost time without slowing honest agencies. Failures are
//! counted per lane, an (address, agency) pair: a guess at agency k's key must
//! claim agency k, so a flood claiming one agency slows only that agency's proofs
//! from that address, and agencies sharing the address (behind one NAT) are not
//! held up. A lane with no failures is answered at once; after a failure, its next
//! proofs are checked one at a time, spaced by a delay that doubles up to
//! [`MAX_DELAY`], and one that would wait more than [`MAX_QUEUE`] is refused
//! unchecked: many connections buy no more guesses at one key than one. Claims of
//! agencies without a key share one lane per address, so lanes per address stay
//! at most the agencies plus one. The table holds at most [`MAX_PEERS`] lanes and
//! forgets one [`FORGET_AFTER`] after its last failure (docs/auth.md).

use crate::auth::{AgencyKeys, MAC_LEN, NONCE_LEN};
use crate::bet::AgencyId;
use actix::prelude::*;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Delay after the first failure; it doubles with each further one.
pub const BASE_DELAY: Duration = Duration::from_millis(100);
/// The most one proof waits because of earlier failures of its address.
pub const MAX_DELAY: Duration = Duration::from_secs(2);
/// A proof that would wait longer than this is refused without being checked.
pub const MAX_QUEUE: Duration = Duration::from_secs(5);
/// A lane is forgotten this long after its last failure.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Lanes (address, agency) remembered at most.
pub const MAX_PEERS: usize = 4096;

/// Where failures are counted: a peer address and the agency it claims (0 for
/// every agency without a key).
type Lane = (IpAddr, AgencyId);

/// Check `mac` as agency `agency`'s answer to `nonce`, sent from `ip`.
#[derive(Message, Clone, Copy)]
#[rtype(result = "Verdict")]
pub struct Verify {
    pub ip: IpAddr,
    pub agency: AgencyId,
    pub nonce: [u8; NONCE_LEN],
    pub mac: [u8; MAC_LEN],
}

/// A TLS handshake from `ip` failed: it counts like a wrong proof, so an
/// address cannot probe the port with broken handshakes for free.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct HandshakeFailed {
    pub ip: IpAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The proof is right; `delayed`: how long it waited for its slot.
    Accepted { delayed: Duration },
    /// Wrong proof, or no key for the agency; `failures` of this lane so far.
    Rejected { failures: u32, delayed: Duration },
    /// Not checked: the lane has too many recent failures queued.
    Throttled { retry_after: Duration },
}

/// The lane of failed TLS handshakes of an address (agency numbers stay far below it).
const NO_CLAIM: u32 = u32::MAX;

/// What one lane has done lately.
struct Peer {
    /// Failed proofs in a row.
    failures: u32,
    /// Proofs waiting for their slot: each is spaced as if it will fail too.
    pending: u32,
    /// The earliest moment this lane's next proof may be checked.
    next_free: Instant,
    /// When it last failed (old entries are forgotten).
    last_failure: Instant,
}

/// Owns the agencies' keys and the failed handshakes per address. Connections
/// send it [`Verify`] with a proof and get a [`Verdict`], delayed after failures.
pub struct AuthGuard {
    /// The key of each agency (from the key file).
    keys: AgencyKeys,
    /// Lanes with recent failures or proofs waiting; bounded.
    peers: HashMap<Lane, Peer>,
}

/// The spacing between checks after `failures` failures.
pub fn delay_after(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    BASE_DELAY.saturating_mul(1 << (failures - 1).min(16)).min(MAX_DELAY)
}

impl AuthGuard {
    pub fn new(keys: AgencyKeys) -> AuthGuard {
        AuthGuard { keys, peers: HashMap::new() }
    }

    /// How many lanes are remembered (tests).
    pub fn remembered(&self) -> usize {
        self.peers.len()
    }

    fn check(&mut self, msg: &Verify, now: Instant, delayed: Duration) -> Verdict {
        let ok = self.keys.get(msg.agency).is_some_and(|key| key.verify(&msg.nonce, msg.agency, &msg.mac));
        if ok {
            return Verdict::Accepted { delayed };
        }
        let failures = self.record_failure(self.lane(msg), now);
        Verdict::Rejected { failures, delayed }
    }

    fn lane(&self, msg: &Verify) -> Lane {
        match self.keys.get(msg.agency) {
            Some(_) => (msg.ip, msg.agency),
            None => (msg.ip, 0),
        }
    }

    fn record_failure(&mut self, lane: Lane, now: Instant) -> u32 {
        if !self.peers.contains_key(&lane) {
            self.make_room(now);
        }
        let peer =
            self.peers.entry(lane).or_insert(Peer { failures: 0, pending: 0, next_free: now, last_failure: now });
        peer.failures = peer.failures.saturating_add(1);
        peer.last_failure = now;
        peer.next_free = peer.next_free.max(now + delay_after(peer.failures));
        peer.failures
    }

    /// Keeps the table under [`MAX_PEERS`]: forgotten addresses first, then the stalest.
    fn make_room(&mut self, now: Instant) {
        if self.peers.len() < MAX_PEERS {
            return;
        }
        self.peers.retain(|_, p| now.duration_since(p.last_failure) < FORGET_AFTER);
        if self.peers.len() >= MAX_PEERS {
            if let Some(stalest) = self.peers.iter().min_by_key(|(_, p)| p.last_failure).map(|(lane, _)| *lane) {
                self.peers.remove(&stalest);
            }
        }
    }
}

impl Actor for AuthGuard {
    type Context = Context<Self>;
}

impl Handler<Verify> for AuthGuard {
    type Result = ResponseActFuture<Self, Verdict>;

    fn handle(&mut self, msg: Verify, _: &mut Context<Self>) -> Self::Result {
        let now = Instant::now();
        let lane = self.lane(&msg);
        if self.peers.get(&lane).is_some_and(|p| now.duration_since(p.last_failure) >= FORGET_AFTER) {
            self.peers.remove(&lane);
        }
        // Failed TLS handshakes claim no agency: they space every proof from their address.
        let floor = self
            .peers
            .get(&(msg.ip, NO_CLAIM))
            .filter(|p| now.duration_since(p.last_failure) < FORGET_AFTER)
            .map_or(now, |p| p.next_free.max(now));
        let Some(peer) = self.peers.get_mut(&lane) else {
            if floor <= now {
                let verdict = self.check(&msg, now, Duration::ZERO);
                return Box::pin(actix::fut::ready(verdict));
            }
            let wait = floor - now;
            if wait > MAX_QUEUE {
                return Box::pin(actix::fut::ready(Verdict::Throttled { retry_after: wait }));
            }
            return Box::pin(
                tokio::time::sleep(wait).into_actor(self).map(move |_, act, _| act.check(&msg, Instant::now(), wait)),
            );
        };
        // Reserve the next slot of this lane: its proofs are checked one at a time.
        let at = peer.next_free.max(floor);
        let wait = at - now;
        if wait > MAX_QUEUE {
            return Box::pin(actix::fut::ready(Verdict::Throttled { retry_after: wait }));
        }
        peer.pending += 1;
        peer.next_free = at + delay_after(peer.failures.saturating_add(peer.pending));
        Box::pin(tokio::time::sleep(wait).into_actor(self).map(move |_, act, _| {
            if let Some(peer) = act.peers.get_mut(&lane) {
                peer.pending = peer.pending.saturating_sub(1);
            }
            act.check(&msg, Instant::now(), wait)
        }))
    }
}

impl Handler<HandshakeFailed> for AuthGuard {
    type Result = ();

    fn handle(&mut self, msg: HandshakeFailed, _: &mut Context<Self>) {
        self.record_failure((msg.ip, NO_CLAIM), Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthKey;

    #[test]
    fn the_delay_doubles_up_to_its_cap() {
        assert_eq!(delay_after(0), Duration::ZERO);
        assert_eq!(delay_after(1), BASE_DELAY);
        assert_eq!(delay_after(2), BASE_DELAY * 2);
        assert_eq!(delay_after(3), BASE_DELAY * 4);
        assert_eq!(delay_after(50), MAX_DELAY);
        assert_eq!(delay_after(u32::MAX), MAX_DELAY);
    }

    #[actix_rt::test]
    async fn failures_space_later_proofs_and_honest_addresses_wait_for_nothing() {
        let key = AuthKey::generate().unwrap();
        let mut keys = AgencyKeys::new();
        keys.insert(1, key.clone());
        let mut guard = AuthGuard::new(keys);
        let attacker: IpAddr = "10.0.0.9".parse().unwrap();
        // Four earlier failures as agency 1: the next such proof from that address waits 800 ms.
        for _ in 0..4 {
            guard.record_failure((attacker, 1), Instant::now());
        }
        let guard = guard.start();
        let nonce = [3u8; NONCE_LEN];
        let wrong = |ip: IpAddr| Verify { ip, agency: 1, nonce, mac: [0; MAC_LEN] };
        // A new address's first wrong proof is answered at once.
        let fresh = guard.send(wrong("10.0.0.7".parse().unwrap())).await.unwrap();
        assert_eq!(fresh, Verdict::Rejected { failures: 1, delayed: Duration::ZERO });
        // Ten at once from the attacker: each is held for its own slot (0.8, 2.4, 4.4 s),
        // decided when it arrives, and the rest would wait over MAX_QUEUE: refused unchecked.
        let pending: Vec<_> = (0..10).map(|_| guard.send(wrong(attacker))).collect();
        let good = Verify { ip: "10.0.0.1".parse().unwrap(), agency: 1, nonce, mac: key.proof(&nonce, 1) };
        assert_eq!(guard.send(good).await.unwrap(), Verdict::Accepted { delayed: Duration::ZERO });
        let mut waits = Vec::new();
        let mut throttled = 0;
        for p in pending {
            match p.await.unwrap() {
                Verdict::Rejected { delayed, .. } => waits.push(delayed),
                Verdict::Throttled { retry_after } => {
                    assert!(retry_after > MAX_QUEUE);
                    throttled += 1;
                }
                Verdict::Accepted { .. } => panic!("a wrong proof was accepted"),
            }
        }
        assert_eq!((waits.len(), throttled), (3, 7), "{waits:?}");
        assert!(waits.windows(2).all(|w| w[0] < w[1]), "{waits:?}");
        assert!(waits[0] >= Duration::from_millis(600), "{waits:?}");
        // The right key from the attacker's address still works, after its slot.
        let late = Verify { ip: attacker, agency: 1, nonce, mac: key.proof(&nonce, 1) };
        assert!(matches!(guard.send(late).await.unwrap(), Verdict::Accepted { delayed } if delayed > Duration::ZERO));
    }

    /// A flood claiming one agency holds up that agency's proofs from the
    /// address and no other agency's; claims without a key share one lane.
    #[actix_rt::test]
    async fn failures_count_per_address_and_claimed_agency() {
        let (one, two) = (AuthKey::generate().unwrap(), AuthKey::generate().unwrap());
        let mut keys = AgencyKeys::new();
        keys.insert(1, one.clone());
        keys.insert(2, two.clone());
        let mut guard = AuthGuard::new(keys);
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        for _ in 0..20 {
            guard.record_failure((ip, 1), Instant::now());
        }
        let guard = guard.start();
        let nonce = [5u8; NONCE_LEN];
        let proof = |agency, key: &AuthKey| Verify { ip, agency, nonce, mac: key.proof(&nonce, agency) };
        // Agency 2 from the flooded address: at once.
        assert_eq!(guard.send(proof(2, &two)).await.unwrap(), Verdict::Accepted { delayed: Duration::ZERO });
        // Agency 1 from it: after its slot (MAX_DELAY after the last failure).
        assert!(
            matches!(guard.send(proof(1, &one)).await.unwrap(), Verdict::Accepted { delayed } if delayed > Duration::ZERO)
        );
        // Wrong proofs for agencies with no key (7, 8) share a lane: the second waits.
        let wrong = |agency| Verify { ip, agency, nonce, mac: [0; MAC_LEN] };
        assert_eq!(guard.send(wrong(7)).await.unwrap(), Verdict::Rejected { failures: 1, delayed: Duration::ZERO });
        assert!(
            matches!(guard.send(wrong(8)).await.unwrap(), Verdict::Rejected { failures: 2, delayed } if delayed > Duration::ZERO)
        );
        // Still none of it touched agency 2.
        assert_eq!(guard.send(proof(2, &two)).await.unwrap(), Verdict::Accepted { delayed: Duration::ZERO });
    }

    #[test]
    fn the_table_is_bounded() {
        let mut guard = AuthGuard::new(AgencyKeys::new());
        let now = Instant::now();
        for i in 0..(MAX_PEERS as u32 + 100) {
            guard.record_failure((IpAddr::from(i.to_be_bytes()), 1), now + Duration::from_nanos(i as u64));
        }
        assert_eq!(guard.remembered(), MAX_PEERS);
        // The newest are kept.
        assert!(guard.peers.contains_key(&(IpAddr::from((MAX_PEERS as u32 + 99).to_be_bytes()), 1)));
        assert!(!guard.peers.contains_key(&(IpAddr::from(0u32.to_be_bytes()), 1)));
    }
}
