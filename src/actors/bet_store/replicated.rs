//! The replicated backend (`storage.backend: jetstream`): the same messages,
//! answered from one NATS JetStream stream that every replica reads whole.
//!
//! A replica publishes what an agency sends it and reads the stream back, in
//! stream order, into its local view (`storage.path`): every message is
//! applied by the same rule on every replica (a batch that continues its
//! agency's rows adds the rows past what is there; one after the agency's Done,
//! or after a gap, adds nothing; a Done counts only with its total right), so
//! every view holds the same bytes and seals them in the same groups (one per
//! message), and the sorteo lines of one draw carry the same head. An answer
//! that says "stored" leaves only once JetStream acked the publish (stored on a
//! quorum) and this replica's own view applied it: the answer is read from the
//! view, so a batch the stream holds after a lost predecessor is refused, not
//! acked. `Resume` first reads the stream's last sequence and answers once the
//! view reached it. Nothing here ever ends the process: a NATS cluster that is
//! down or without quorum makes requests fail with a transient error.

use super::*;
use crate::storage::jetstream::{self as js, Link, Outgoing, Published};
use async_nats::jetstream::consumer::{push, DeliverPolicy};
use std::collections::{BTreeMap, VecDeque};
use tokio::sync::mpsc;

mod follow;

/// A request waiting for the view longer than this is refused (transient).
const WAIT_LIMIT: Duration = Duration::from_secs(20);
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// A stream reader that could not be made is tried again after this.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);
/// How often the view's place is compared with the stream's end: a view that
/// lags and made no progress over one period has a stalled reader.
const LAG_CHECK_EVERY: Duration = Duration::from_secs(2);
/// Messages whose added rows are remembered (for `newly_stored`).
const RECENT: usize = 8192;

/// The rows one stream message added to the view: agency, from and to index.
#[derive(Clone, Copy)]
struct Added {
    sequence: u64,
    agency: AgencyId,
    from: u64,
    to: u64,
}

/// What a request waits for once the view reached a stream sequence.
enum Waiter {
    /// A published batch: acked if the view then holds `first..first + count`.
    Batch { tx: Reply<Stored>, agency: AgencyId, first: u64, count: u32, acked: Published },
    /// `Resume`: the view's count and Done.
    Progress { tx: Reply<(u64, bool)>, agency: AgencyId },
    /// `Done`, before its message: publish it if the view holds `total` rows.
    DoneCheck { tx: Reply<u64>, agency: AgencyId, total: u64 },
    /// `Done`, its message acked: answered from the view.
    Done { tx: Reply<u64>, agency: AgencyId, total: u64 },
}

impl Waiter {
    fn refuse(self, e: StoreError) {
        match self {
            Waiter::Batch { tx, .. } => drop(tx.send(Err(e))),
            Waiter::Progress { tx, .. } => drop(tx.send(Err(e))),
            Waiter::DoneCheck { tx, .. } | Waiter::Done { tx, .. } => drop(tx.send(Err(e))),
        }
    }
}

/// The replicated backend's state, owned by the BetStore actor.
pub(super) struct Replicated {
    link: Link,
    publish: mpsc::Sender<Outgoing>,
    /// The last stream sequence applied to the view.
    applied: u64,
    /// Per agency, the end of the rows this replica published (acked or not).
    published: HashMap<AgencyId, u64>,
    /// Requests by the stream sequence the view must reach first.
    waiting: BTreeMap<u64, Vec<(Instant, Waiter)>>,
    /// Rows each recent message added to the view.
    recent: VecDeque<Added>,
    agencies: u32,
    /// The task reading the stream (aborted at close, while its runtime still runs).
    follower: Option<tokio::task::JoinHandle<()>>,
    /// Counts the readers made: what an older one still delivers is ignored.
    generation: u64,
    /// `applied` when the last lag check found the view behind the stream's end.
    lagging_at: Option<u64>,
    /// A lag check is waiting for the stream's end.
    lag_check: bool,
    /// Since when the newest reader is being made (`None` once it was).
    making_since: Option<Instant>,
    /// The local view could not be written: every request is refused.
    failed: Option<StoreError>,
    skipped: u64,
}

/// What a batch needs: nothing (a resend the view holds whole, from `first`),
/// or a message with its rows past the first `skip` (those the view holds).
enum Publish {
    No { first: u64 },
    Rows { first: u64, skip: usize },
}

fn unavailable(reason: impl Into<String>) -> StoreError {
    StoreError::Replication { reason: reason.into() }
}

impl BetStore {
    /// The replicated store: the local view at `path` is rebuilt from the stream
    /// (files a previous run left there are removed first).
    pub fn open_replicated(path: PathBuf, spec: StoreSpec, link: Link, log: Logger) -> Result<BetStore, StorageError> {
        for file in [path.clone(), storage::integrity::sidecar_path(&path), DoneJournal::path_for(&path)] {
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StorageError::Io { path: file, source: e })
                }
                _ => {}
            }
        }
        let agencies = spec.agencies;
        let mut store = BetStore::open_checked(path, false, spec, storage::plain(), log)?;
        store.journal = None;
        let _ = std::fs::remove_file(DoneJournal::path_for(&store.path));
        let publish = js::publisher(link.js.clone(), link.name.clone());
        store.js = Some(Box::new(Replicated {
            link,
            publish,
            applied: 0,
            published: HashMap::new(),
            waiting: BTreeMap::new(),
            recent: VecDeque::new(),
            agencies,
            follower: None,
            generation: 0,
            lagging_at: None,
            lag_check: false,
            making_since: None,
            failed: None,
            skipped: 0,
        }));
        Ok(store)
    }

    /// Starts reading the stream (from the first message the view lacks) and the sweep.
    pub(super) fn js_started(&mut self, ctx: &mut Context<Self>) {
        self.subscribe(ctx);
        ctx.run_interval(SWEEP_EVERY, |store, _| {
            let Some(r) = store.js.as_mut() else { return };
            for list in r.waiting.values_mut() {
                let (late, keep): (Vec<_>, Vec<_>) = list.drain(..).partition(|(at, _)| at.elapsed() > WAIT_LIMIT);
                *list = keep;
                for (_, w) in late {
                    w.refuse(unavailable("the stream did not reach this replica in time"));
                }
            }
            r.waiting.retain(|_, list| !list.is_empty());
        });
        ctx.run_interval(LAG_CHECK_EVERY, |store, ctx| store.check_lag(ctx));
    }

    /// Answers what waited for the view to reach `seq`.
    fn release(&mut self, seq: u64, ctx: &mut Context<Self>) {
        loop {
            let Some(r) = self.js.as_mut() else { return };
            let Some(entry) = r.waiting.first_entry() else { return };
            if *entry.key() > seq {
                return;
            }
            for (_, w) in entry.remove() {
                self.resolve(w, ctx);
            }
        }
    }

    fn resolve(&mut self, w: Waiter, ctx: &mut Context<Self>) {
        let view = |store: &Self, agency| store.progress.get(&agency).copied().unwrap_or_default();
        match w {
            Waiter::Batch { tx, agency, first, count, acked } => {
                let p = view(self, agency);
                let answer = if p.written >= first + u64::from(count) {
                    // A coalesced message holds other batches too: this one's new
                    // rows are those of its range the message added.
                    let end = first + u64::from(count);
                    let added = self.js.as_ref().and_then(|r| {
                        let at = r.recent.binary_search_by_key(&acked.sequence, |a| a.sequence).ok()?;
                        r.recent.get(at).copied()
                    });
                    let newly = match added {
                        Some(a) if !acked.duplicate && a.agency == agency => {
                            end.min(a.to).saturating_sub(first.max(a.from))
                        }
                        _ => 0,
                    };
                    let newly = newly as u32;
                    Ok(Stored { first_index: first, count, newly_stored: newly })
                } else {
                    Err(unavailable(format!(
                        "the stream holds agency {agency}'s rows up to {}, not {first}+{count}: a batch before it is missing",
                        p.written
                    )))
                };
                let _ = tx.send(answer);
            }
            Waiter::Progress { tx, agency } => {
                let p = view(self, agency);
                let _ = tx.send(Ok((p.written, p.done)));
            }
            Waiter::Done { tx, agency, total } => {
                let p = view(self, agency);
                let _ = tx.send(if p.done {
                    Ok(p.written)
                } else {
                    Err(StoreError::Incomplete { stored: p.written, total })
                });
            }
            Waiter::DoneCheck { tx, agency, total } => {
                let p = view(self, agency);
                if p.done {
                    let _ = tx.send(Ok(p.written));
                } else if p.written != total {
                    let _ = tx.send(Err(StoreError::Incomplete { stored: p.written, total }));
                } else {
                    let done = move |reply| Outgoing::Done { agency, total, reply };
                    self.send_out(done, agency, ctx, move |_| Waiter::Done { tx, agency, total });
                }
            }
        }
    }

    /// Queues a message for the publisher; once acked, `waiter` waits for the view
    /// to reach it. A failure refuses the waiter's request.
    fn send_out(
        &mut self,
        message: impl FnOnce(js::Reply) -> Outgoing,
        agency: AgencyId,
        ctx: &mut Context<Self>,
        waiter: impl FnOnce(Published) -> Waiter + 'static,
    ) {
        let Some(r) = self.js.as_mut() else { return };
        let (reply, acked) = oneshot::channel();
        // A full or closed queue drops the message and its reply: the request is refused below.
        let _ = r.publish.try_send(message(reply));
        ctx.spawn(acked.into_actor(self).map(move |result, store, ctx| {
            let result = result.unwrap_or_else(|_| Err("the publish was dropped".into()));
            let Some(r) = store.js.as_mut() else { return };
            match result {
                Ok(acked) => {
                    let w = waiter(acked);
                    if acked.sequence <= r.applied {
                        store.resolve(w, ctx);
                    } else {
                        r.waiting.entry(acked.sequence).or_default().push((Instant::now(), w));
                    }
                }
                Err(e) => {
                    // Later batches of the agency must not pass over the one refused.
                    let written = store.progress.get(&agency).map_or(0, |p| p.written);
                    r.published.insert(agency, written);
                    warn!(store.log, "action: publish | result: fail"; "error" => &e);
                    waiter(Published { sequence: 0, duplicate: false }).refuse(unavailable(e));
                }
            }
        }));
    }

    /// Reads the stream's last sequence, then `waiter` waits for the view to reach it.
    fn after_tail(&mut self, ctx: &mut Context<Self>, waiter: Waiter) {
        let Some(r) = self.js.as_ref() else { return };
        let stream = r.link.stream.clone();
        let tail = async move { stream.get_info().await.map(|i| i.state.last_sequence).map_err(|e| e.to_string()) };
        ctx.spawn(tail.into_actor(self).map(move |tail, store, ctx| match tail {
            Ok(last) => match store.js.as_mut() {
                Some(r) if last > r.applied => r.waiting.entry(last).or_default().push((Instant::now(), waiter)),
                Some(_) => store.resolve(waiter, ctx),
                None => waiter.refuse(StoreError::Closed),
            },
            Err(e) => waiter.refuse(unavailable(format!("cannot read the stream's end: {e}"))),
        }));
    }

    fn js_ready(&self) -> Result<(), StoreError> {
        match self.js.as_ref().and_then(|r| r.failed.clone()) {
            _ if self.closed => Err(StoreError::Closed),
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub(super) fn js_store_bets(
        &mut self,
        msg: StoreBets,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<Stored, StoreError>> {
        let (tx, rx) = oneshot::channel();
        match self.js_decide(&msg) {
            Err(e) => drop(tx.send(Err(e))),
            Ok(Publish::No { first }) => {
                let count = msg.bets.len() as u32;
                drop(tx.send(Ok(Stored { first_index: first, count, newly_stored: 0 })));
            }
            Ok(Publish::Rows { first, skip }) => {
                let (agency, count) = (msg.agency, msg.bets.len() as u32);
                let mut payload = Vec::new();
                storage::render_rows(&mut payload, agency, msg.bets.raw_iter().skip(skip));
                let (from, rows) = (first + skip as u64, u64::from(count) - skip as u64);
                let bets = move |reply| Outgoing::Bets { agency, first: from, rows, payload, reply };
                self.send_out(bets, agency, ctx, move |acked| Waiter::Batch { tx, agency, first, count, acked });
            }
        }
        Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Closed)) })
    }

    /// Whether a batch has rows to publish, decided against the view.
    fn js_decide(&mut self, msg: &StoreBets) -> Result<Publish, StoreError> {
        self.js_ready()?;
        self.fence.admit(msg.agency, msg.writer)?;
        let p = self.progress.get(&msg.agency).copied().unwrap_or_default();
        let r = self.js.as_mut().ok_or(StoreError::Closed)?;
        let published = r.published.get(&msg.agency).copied().unwrap_or(0).max(p.written);
        let first = msg.first_index.unwrap_or(published);
        let count = msg.bets.len() as u64;
        if first + count <= p.written {
            self.fence.compare(msg.agency, first, &msg.bets, count as usize)?;
            return Ok(Publish::No { first });
        }
        if p.done {
            return Err(StoreError::AlreadyDone(msg.agency));
        }
        if first > published {
            return Err(unavailable(format!(
                "batch starts at {first} but agency {}'s rows end at {published} here: resume",
                msg.agency
            )));
        }
        let skip = p.written.saturating_sub(first) as usize;
        self.fence.compare(msg.agency, first, &msg.bets, skip)?;
        let r = self.js.as_mut().ok_or(StoreError::Closed)?;
        r.published.insert(msg.agency, published.max(first + count));
        Ok(Publish::Rows { first, skip })
    }

    pub(super) fn js_mark_done(
        &mut self,
        msg: MarkDone,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<u64, StoreError>> {
        let (tx, rx) = oneshot::channel();
        match self.js_ready().and_then(|_| self.fence.admit(msg.agency, msg.writer)) {
            Err(e) => drop(tx.send(Err(e))),
            Ok(()) => self.after_tail(ctx, Waiter::DoneCheck { tx, agency: msg.agency, total: msg.total }),
        }
        Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Closed)) })
    }

    pub(super) fn js_progress(
        &mut self,
        msg: QueryProgress,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<(u64, bool), StoreError>> {
        let (tx, rx) = oneshot::channel();
        match self.js_ready() {
            Err(e) => drop(tx.send(Err(e))),
            Ok(()) => self.after_tail(ctx, Waiter::Progress { tx, agency: msg.agency }),
        }
        Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Closed)) })
    }

    /// At close: every waiting request is refused.
    pub(super) fn js_close(&mut self) {
        if let Some(r) = self.js.as_mut() {
            if let Some(follower) = r.follower.take() {
                follower.abort();
            }
            for (_, list) in std::mem::take(&mut r.waiting) {
                for (_, w) in list {
                    w.refuse(StoreError::Closed);
                }
            }
            info!(self.log, "action: close_view | result: success"; "stream" => &r.link.name,
                "applied_sequence" => r.applied, "skipped" => r.skipped);
        }
    }
}
