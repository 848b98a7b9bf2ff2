//! BetStore: the only writer of the bets file, on a thread of its own so that
//! network actors never wait on the disk.
//!
//! The write path, its group-commit sync and `Done` stay in this file, because
//! whether an ack is safe depends on the order of those steps; the messages, the
//! read-side answers (progress, draw, close), the recovery, the replicated
//! backend on JetStream (`replicated`) and the tests are in `bet_store/`.
//!
//! It owns each agency's progress, with two watermarks: `written` (rows in the
//! file) and `synced` (rows covered by a successful `fdatasync`). The decision
//! "is this batch new, a retry, or a gap?" is taken against `written`, atomically
//! with the write; every answer that tells an agency its bets are stored (a batch
//! ack, a retry's ack, `Progress`, the ack of `Done`) leaves only once `synced`
//! covers it. Durable acks use group commit: a batch is written at once, its
//! reply is parked, and one `fdatasync` at the end of the current mailbox burst
//! releases every reply parked so far.
//!
//! A failed `fdatasync` is final for the in-memory state ("fsyncgate"): the parked
//! replies fail and the file is cut back, reopened and recounted as at start.
//! With `storage.backend: jetstream` the same messages are answered from a NATS
//! JetStream stream instead (`replicated`); docs/design.md says why each step is
//! in its order.

use super::draw_coordinator::AgencyDone;
use crate::bet::AgencyId;
use crate::storage::{self, BetFile, DoneJournal, StorageError, StoreSpec, WrapFile};
use actix::prelude::*;
use slog::{debug, error, info, warn, Logger};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

mod answers;
mod fence;
mod messages;
mod recovery;
mod replicated;
pub use fence::{Claim, Fenced, TAIL_ROWS};
pub use messages::*;

/// A store that could not be reopened tries again at most this often.
const REOPEN_EVERY: Duration = Duration::from_millis(500);

/// Per-agency progress, rebuilt from disk at start and at every reopen.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    /// Bets in the file.
    written: u64,
    /// Bets covered by a successful sync: the only count ever reported.
    synced: u64,
    done: bool,
}

/// Sync now and release parked acks (sent by the store to itself).
#[derive(Message)]
#[rtype(result = "()")]
struct SyncNow;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// The BetStore actor: owns the bets file, the done journal and every agency's
/// progress (or, replicated, the JetStream link and the local view of its stream). Connections send it
/// `StoreBets`, `MarkDone` and `QueryProgress`; the DrawCoordinator sends `Draw`
/// and `DoneAgencies`; the Supervisor sends `CloseStore`. It tells the
/// coordinator (`NotifyDone`'s recipient) about every synced Done.
pub struct BetStore {
    /// `None` while the in-memory state is not trusted (after a failed sync that
    /// could not be repaired by a reopen) or after close.
    file: Option<BetFile>,
    /// The done journal beside the bets file (`None` exactly when `file` is).
    journal: Option<DoneJournal>,
    /// Where the bets file lives (the journal and the lock file sit beside it).
    path: PathBuf,
    /// The storage seam: real files in production, fault-injecting ones in tests.
    wrap: WrapFile,
    /// Each agency's written and synced watermarks and its Done.
    progress: HashMap<AgencyId, Progress>,
    /// Agencies whose `written` ran ahead of `synced` since the last sync.
    dirty: Vec<AgencyId>,
    /// Acks wait for `fdatasync` (`storage.durable`); otherwise for the write.
    durable: bool,
    /// Replies waiting for the next sync.
    parked: Vec<(Reply<Stored>, Stored)>,
    sync_scheduled: bool,
    /// Bytes of each file known to be on disk: where a reopen cuts.
    synced_len: u64,
    sidecar_len: u64,
    journal_len: u64,
    /// What the stored rows must be, and the chain key that seals them.
    spec: StoreSpec,
    /// Why the store is out of service, and when it last tried to reopen.
    broken: Option<(StoreError, Instant)>,
    /// `CloseStore` was handled: every later request is refused as closed.
    closed: bool,
    /// Told about every Done once its journal line is synced.
    coordinator: Option<Recipient<AgencyDone>>,
    /// Batches appended and syncs done: their ratio is what group commit saves.
    appends: u64,
    syncs: u64,
    /// A failed sync left rows past `synced_len`: the reopen cuts them.
    cut_pending: bool,
    /// Each agency's one writer and the digests of its last rows.
    fence: fence::Fence,
    /// The replicated backend (`None`: the local file is the store).
    js: Option<Box<replicated::Replicated>>,
    log: Logger,
}

impl BetStore {
    /// Opens the file with the default checks (any agency, no chain key).
    pub fn open(path: PathBuf, durable: bool, log: Logger) -> Result<BetStore, StorageError> {
        BetStore::open_with(path, durable, storage::plain(), log)
    }

    /// [`open`](Self::open) with the writes to the files going through `wrap` (tests inject faults).
    pub fn open_with(path: PathBuf, durable: bool, wrap: WrapFile, log: Logger) -> Result<BetStore, StorageError> {
        BetStore::open_checked(path, durable, StoreSpec::default(), wrap, log)
    }

    /// Opens the store before any actor runs: every sealed group and row is checked
    /// against `spec` (a failure is the error, and no actor starts), what a crash
    /// left past the last seal is cut, and every agency recounted.
    pub fn open_checked(
        path: PathBuf,
        durable: bool,
        spec: StoreSpec,
        wrap: WrapFile,
        log: Logger,
    ) -> Result<BetStore, StorageError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StorageError::Io { path: dir.to_path_buf(), source })?;
        }
        let mut store = BetStore {
            file: None,
            journal: None,
            path,
            wrap,
            progress: HashMap::new(),
            dirty: Vec::new(),
            durable,
            parked: Vec::new(),
            sync_scheduled: false,
            synced_len: 0,
            sidecar_len: 0,
            journal_len: 0,
            spec,
            broken: None,
            closed: false,
            coordinator: None,
            appends: 0,
            syncs: 0,
            cut_pending: false,
            fence: fence::Fence::default(),
            js: None,
            log,
        };
        store.load("open_store")?;
        Ok(store)
    }

    fn schedule_sync(&mut self, ctx: &mut Context<Self>) {
        if !self.sync_scheduled {
            self.sync_scheduled = true;
            ctx.notify(SyncNow);
        }
    }

    /// Syncs what was written and releases every parked reply; a failure
    /// distrusts the state (see [`distrust`](Self::distrust)).
    fn sync_all(&mut self) -> Result<(), StoreError> {
        if self.dirty.is_empty() && self.parked.is_empty() {
            return Ok(());
        }
        let Some(file) = self.file.as_mut() else {
            return Err(self.broken.as_ref().map(|(e, _)| e.clone()).unwrap_or(StoreError::Closed));
        };
        if self.durable {
            if let Err(e) = file.sync() {
                let e = StoreError::from(e);
                error!(self.log, "action: sync_store | result: fail"; "path" => self.path.display(),
                    "kind" => %storage_kind(&e), "error" => %e, "parked" => self.parked.len());
                self.distrust(e.clone());
                return Err(e);
            }
            self.syncs += 1;
        }
        self.synced_len = file.synced_len();
        self.sidecar_len = file.sidecar_len();
        for agency in self.dirty.drain(..) {
            if let Some(p) = self.progress.get_mut(&agency) {
                p.synced = p.written;
            }
        }
        for (tx, stored) in self.parked.drain(..) {
            let _ = tx.send(Ok(stored));
        }
        Ok(())
    }

    /// Appends the new part of a batch; returns what to answer, and whether the
    /// answer must wait for a sync.
    fn store_bets(&mut self, msg: &StoreBets) -> Result<(Stored, bool), StoreError> {
        self.ensure_open()?;
        self.fence.admit(msg.agency, msg.writer)?;
        let progress = self.progress.entry(msg.agency).or_default();
        // After Done only a resend of stored rows is taken (to be compared).
        let resend = msg.first_index.is_some_and(|first| first + msg.bets.len() as u64 <= progress.written);
        if progress.done && !resend {
            return Err(StoreError::AlreadyDone(msg.agency));
        }
        let first_index = msg.first_index.unwrap_or(progress.written);
        let count = msg.bets.len() as u64;
        let expected = progress.written;
        if first_index > expected {
            return Err(StoreError::OutOfOrder { expected, got: first_index });
        }
        // A retry of bets already written: write only what is new, if anything.
        let skip = (expected - first_index).min(count) as usize;
        self.fence.compare(msg.agency, first_index, &msg.bets, skip)?;
        let fresh = msg.bets.len() - skip;
        if fresh > 0 {
            let file = self.file.as_mut().ok_or(StoreError::Closed)?;
            file.append(msg.agency, msg.bets.raw_iter().skip(skip))?;
            self.fence.appended(msg.agency, expected, &msg.bets, skip);
            self.appends += 1;
            if !self.durable {
                // Relaxed acks: "stored" means handed to the OS.
                progress.written += fresh as u64;
                progress.synced = progress.written;
            } else {
                if progress.written == progress.synced {
                    self.dirty.push(msg.agency);
                }
                progress.written += fresh as u64;
            }
        }
        let must_wait = first_index + count > progress.synced;
        Ok((Stored { first_index, count: count as u32, newly_stored: fresh as u32 }, must_wait))
    }
}

/// The error kind for logs (`-` when the error is not the disk's).
fn storage_kind(e: &StoreError) -> String {
    match e {
        StoreError::Storage { kind, .. } => format!("{kind:?}"),
        _ => "-".into(),
    }
}

impl Actor for BetStore {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Replies are parked in the actor, so a burst of batches must not be cut
        // short by the default mailbox capacity.
        ctx.set_mailbox_capacity(1024);
        if self.js.is_some() {
            self.js_started(ctx);
        }
    }
}

impl Handler<StoreBets> for BetStore {
    type Result = ResponseFuture<Result<Stored, StoreError>>;

    fn handle(&mut self, msg: StoreBets, ctx: &mut Context<Self>) -> Self::Result {
        if self.js.is_some() {
            return self.js_store_bets(msg, ctx);
        }
        let (tx, rx) = oneshot::channel();
        match self.store_bets(&msg) {
            Ok((stored, must_wait)) => {
                if stored.newly_stored > 0 && slog::Drain::is_enabled(&self.log, slog::Level::Debug) {
                    for bet in msg.bets.iter().skip((stored.count - stored.newly_stored) as usize) {
                        debug!(self.log, "action: apuesta_almacenada | result: success";
                            "agency" => msg.agency, "dni" => bet.document, "numero" => bet.number);
                    }
                }
                if must_wait {
                    self.parked.push((tx, stored));
                    self.schedule_sync(ctx);
                } else {
                    let _ = tx.send(Ok(stored));
                }
            }
            Err(e) => {
                if let StoreError::Storage { kind, path, .. } = &e {
                    error!(self.log, "action: store_bets | result: fail"; "agency" => msg.agency,
                        "path" => path.display(), "kind" => ?kind, "error" => %e);
                }
                let _ = tx.send(Err(e));
            }
        }
        Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Closed)) })
    }
}

impl Handler<SyncNow> for BetStore {
    type Result = ();

    fn handle(&mut self, _: SyncNow, _: &mut Context<Self>) {
        self.sync_scheduled = false;
        // A failure is logged and answered to the parked replies inside.
        let _ = self.sync_all();
        if let Some(e) = self.file.as_ref().and_then(BetFile::poisoned) {
            self.distrust(e.into());
        }
    }
}

impl Handler<NotifyDone> for BetStore {
    type Result = ();

    fn handle(&mut self, msg: NotifyDone, _: &mut Context<Self>) {
        self.coordinator = Some(msg.0);
    }
}

impl Handler<MarkDone> for BetStore {
    type Result = ResponseFuture<Result<u64, StoreError>>;

    fn handle(&mut self, msg: MarkDone, ctx: &mut Context<Self>) -> Self::Result {
        if self.js.is_some() {
            return self.js_mark_done(msg, ctx);
        }
        let result = self.mark_done(&msg);
        Box::pin(async move { result })
    }
}

impl BetStore {
    fn mark_done(&mut self, msg: &MarkDone) -> Result<u64, StoreError> {
        self.ensure_open()?;
        self.fence.admit(msg.agency, msg.writer)?;
        let p = self.progress.get(&msg.agency).copied().unwrap_or_default();
        if p.done {
            // Idempotent: a second Done is acknowledged with what is stored.
            return Ok(p.synced);
        }
        if p.written != msg.total {
            return Err(StoreError::Incomplete { stored: p.synced, total: msg.total });
        }
        // Done covers every bet: they must be on disk before the journal says so.
        if p.synced < msg.total {
            self.sync_all()?;
        }
        let journal = self.journal.as_mut().ok_or(StoreError::Closed)?;
        let recorded = journal.record(msg.agency, msg.total);
        let journal_len = journal.synced_len();
        if let Err(e) = recorded {
            let e = StoreError::from(e);
            error!(self.log, "action: agency_done | result: fail";
                "agency" => msg.agency, "kind" => %storage_kind(&e), "error" => %e);
            // A failed journal sync is as final as a failed bets sync.
            self.distrust(e.clone());
            return Err(e);
        }
        self.journal_len = journal_len;
        self.progress.entry(msg.agency).or_default().done = true;
        if let Some(coordinator) = &self.coordinator {
            coordinator.do_send(AgencyDone { agency: msg.agency });
        } else {
            warn!(self.log, "action: agency_done | result: fail";
                "agency" => msg.agency, "error" => "no coordinator to tell");
        }
        Ok(msg.total)
    }
}

#[cfg(test)]
mod tests;
