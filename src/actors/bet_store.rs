//! BetStore: the only writer of the bets file, on a thread of its own so that
//! network actors never wait on the disk.
//!
//! It also owns each agency's progress (bets stored, `Done` received), because the
//! decision "is this batch new, a retry, or a gap?" must be taken atomically with
//! the write. Durable acks use group commit: a batch is written at once, its reply
//! is parked, and one `fdatasync` at the end of the current mailbox burst releases
//! every reply parked so far.

use crate::bet::AgencyId;
use crate::net::frame::BetBatch;
use crate::storage::{self, BetFile, StorageError};
use actix::prelude::*;
use slog::{debug, error, info, Logger};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Why the store refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("agency {0} already sent Done")]
    AlreadyDone(AgencyId),
    #[error("batch starts at index {got} but agency's next expected index is {expected}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("agency announced {total} bets but {stored} are stored")]
    Incomplete { stored: u64, total: u64 },
    #[error("storage failed: {0}")]
    Io(String),
    #[error("the store is closed")]
    Closed,
}

impl From<StorageError> for StoreError {
    fn from(e: StorageError) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// Per-agency progress, rebuilt from disk at start.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    stored: u64,
    done: bool,
}

/// Result of a stored (or recognised as already stored) batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub first_index: u64,
    pub count: u32,
    /// Bets of this batch that were new (0 for a pure retry).
    pub newly_stored: u32,
}

/// Append bets of one agency. `first_index` `None` means "at the next index" (single bets).
#[derive(Message)]
#[rtype(result = "Result<Stored, StoreError>")]
pub struct StoreBets {
    pub agency: AgencyId,
    pub first_index: Option<u64>,
    pub bets: BetBatch,
}

/// The agency has sent all `total` bets.
#[derive(Message)]
#[rtype(result = "Result<u64, StoreError>")]
pub struct MarkDone {
    pub agency: AgencyId,
    pub total: u64,
}

/// How far an agency got: `(stored, done)`, counting only durable rows.
#[derive(Message)]
#[rtype(result = "(u64, bool)")]
pub struct QueryProgress {
    pub agency: AgencyId,
}

/// Agencies that were done before a restart (for the coordinator).
#[derive(Message)]
#[rtype(result = "Vec<AgencyId>")]
pub struct DoneAgencies;

/// One streaming pass over the file: every agency's winning documents.
#[derive(Message)]
#[rtype(result = "Result<DrawOutcome, StoreError>")]
pub struct Draw {
    pub winning_number: u16,
}

#[derive(Debug, Clone)]
pub struct DrawOutcome {
    pub winners: HashMap<AgencyId, Arc<Vec<String>>>,
    pub rows: u64,
}

/// Flush, sync and close the file (last step of shutdown).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct CloseStore;

/// Sync now and release parked acks (sent by the store to itself).
#[derive(Message)]
#[rtype(result = "()")]
struct SyncNow;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub struct BetStore {
    file: Option<BetFile>,
    path: PathBuf,
    progress: HashMap<AgencyId, Progress>,
    durable: bool,
    /// Replies waiting for the next sync.
    parked_batches: Vec<(Reply<Stored>, Stored)>,
    parked_done: Vec<(Reply<u64>, u64)>,
    sync_scheduled: bool,
    /// Batches appended and syncs done: their ratio is what group commit saves.
    appends: u64,
    syncs: u64,
    /// Journal of `Done`s, so a restart knows which agencies had finished.
    done_journal: storage::DoneJournal,
    log: Logger,
}

impl BetStore {
    /// Opens the file (repairing and recounting it) before any actor runs.
    pub fn open(path: PathBuf, durable: bool, log: Logger) -> Result<BetStore, StorageError> {
        let (file, recovered) = BetFile::open(&path)?;
        let (done_journal, done) = storage::DoneJournal::open(&path)?;
        let mut progress: HashMap<AgencyId, Progress> = HashMap::new();
        for (agency, stored) in &recovered.per_agency {
            progress.entry(*agency).or_default().stored = *stored;
        }
        for agency in &done {
            progress.entry(*agency).or_default().done = true;
        }
        let rows: u64 = recovered.per_agency.values().sum();
        info!(log, "action: open_store | result: success";
            "path" => path.display(), "rows" => rows, "agencies_with_bets" => recovered.per_agency.len(),
            "agencies_done" => done.len(), "repaired_bytes" => recovered.repaired_bytes);
        Ok(BetStore {
            file: Some(file),
            path,
            progress,
            durable,
            parked_batches: Vec::new(),
            parked_done: Vec::new(),
            sync_scheduled: false,
            appends: 0,
            syncs: 0,
            done_journal,
            log,
        })
    }

    fn schedule_sync(&mut self, ctx: &mut Context<Self>) {
        if !self.sync_scheduled {
            self.sync_scheduled = true;
            ctx.notify(SyncNow);
        }
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        let file = self.file.as_mut().ok_or(StoreError::Closed)?;
        if self.durable {
            file.sync()?;
            self.syncs += 1;
        }
        Ok(())
    }
}

impl Actor for BetStore {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Replies are parked in the actor, so a burst of batches must not be cut
        // short by the default mailbox capacity.
        ctx.set_mailbox_capacity(1024);
    }
}

impl Handler<StoreBets> for BetStore {
    type Result = ResponseFuture<Result<Stored, StoreError>>;

    fn handle(&mut self, msg: StoreBets, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let result = (|| {
            let progress = self.progress.entry(msg.agency).or_default();
            if progress.done {
                return Err(StoreError::AlreadyDone(msg.agency));
            }
            let first_index = msg.first_index.unwrap_or(progress.stored);
            let count = msg.bets.len() as u64;
            let expected = progress.stored;
            if first_index > expected {
                return Err(StoreError::OutOfOrder { expected, got: first_index });
            }
            // A retry of bets already stored: store only what is new, if anything.
            let skip = (expected - first_index).min(count) as usize;
            let fresh = msg.bets.len() - skip;
            if fresh > 0 {
                let file = self.file.as_mut().ok_or(StoreError::Closed)?;
                file.append(msg.agency, msg.bets.raw_iter().skip(skip))?;
                self.appends += 1;
                progress.stored += fresh as u64;
            }
            Ok(Stored { first_index, count: count as u32, newly_stored: fresh as u32 })
        })();
        match result {
            Ok(stored) if stored.newly_stored > 0 => {
                if slog::Drain::is_enabled(&self.log, slog::Level::Debug) {
                    for bet in msg.bets.iter().skip((stored.count - stored.newly_stored) as usize) {
                        debug!(self.log, "action: apuesta_almacenada | result: success"; "agency" => msg.agency, "dni" => bet.document, "numero" => bet.number);
                    }
                }
                self.parked_batches.push((tx, stored));
                self.schedule_sync(ctx);
            }
            other => {
                if let Err(StoreError::Io(e)) = &other {
                    error!(self.log, "action: store_bets | result: fail"; "agency" => msg.agency, "error" => e);
                }
                let _ = tx.send(other);
            }
        }
        Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Closed)) })
    }
}

impl Handler<SyncNow> for BetStore {
    type Result = ();

    fn handle(&mut self, _: SyncNow, _: &mut Context<Self>) {
        self.sync_scheduled = false;
        if self.parked_batches.is_empty() && self.parked_done.is_empty() {
            return;
        }
        let synced = self.sync();
        if let Err(e) = &synced {
            error!(self.log, "action: sync_store | result: fail"; "path" => self.path.display(), "error" => %e);
        }
        for (tx, stored) in self.parked_batches.drain(..) {
            let _ = tx.send(synced.clone().map(|_| stored));
        }
        for (tx, total) in self.parked_done.drain(..) {
            let _ = tx.send(synced.clone().map(|_| total));
        }
    }
}

impl Handler<MarkDone> for BetStore {
    type Result = ResponseFuture<Result<u64, StoreError>>;

    fn handle(&mut self, msg: MarkDone, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let progress = self.progress.entry(msg.agency).or_default();
        if progress.done {
            // Idempotent: a second Done is acknowledged with what is stored.
            let _ = tx.send(Ok(progress.stored));
        } else if progress.stored != msg.total {
            let _ = tx.send(Err(StoreError::Incomplete { stored: progress.stored, total: msg.total }));
        } else {
            match self.done_journal.record(msg.agency, msg.total) {
                Ok(()) => {
                    progress.done = true;
                    self.parked_done.push((tx, msg.total));
                    self.schedule_sync(ctx);
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into()));
                }
            }
        }
        Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Closed)) })
    }
}

impl Handler<QueryProgress> for BetStore {
    type Result = MessageResult<QueryProgress>;

    fn handle(&mut self, msg: QueryProgress, ctx: &mut Context<Self>) -> Self::Result {
        // Report only durable rows: sync what is parked first.
        if !self.parked_batches.is_empty() {
            <Self as Handler<SyncNow>>::handle(self, SyncNow, ctx);
        }
        let p = self.progress.get(&msg.agency).copied().unwrap_or_default();
        MessageResult((p.stored, p.done))
    }
}

impl Handler<DoneAgencies> for BetStore {
    type Result = MessageResult<DoneAgencies>;

    fn handle(&mut self, _: DoneAgencies, _: &mut Context<Self>) -> Self::Result {
        let mut done: Vec<AgencyId> = self.progress.iter().filter(|(_, p)| p.done).map(|(a, _)| *a).collect();
        done.sort_unstable();
        MessageResult(done)
    }
}

impl Handler<Draw> for BetStore {
    type Result = Result<DrawOutcome, StoreError>;

    fn handle(&mut self, msg: Draw, _: &mut Context<Self>) -> Self::Result {
        // Every write this actor accepted is already in the file (writes are
        // synchronous); make it durable before reading it back.
        self.sync()?;
        let (winners, rows) = storage::draw(&self.path, msg.winning_number)?;
        let winners = winners.into_iter().map(|(a, docs)| (a, Arc::new(docs))).collect();
        Ok(DrawOutcome { winners, rows })
    }
}

impl Handler<CloseStore> for BetStore {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, _: CloseStore, ctx: &mut Context<Self>) -> Self::Result {
        // Release anything parked (a sync may be queued behind this message).
        <Self as Handler<SyncNow>>::handle(self, SyncNow, ctx);
        let result = match self.file.take() {
            Some(mut file) => file.sync().and_then(|_| self.done_journal.sync()).map_err(StoreError::from),
            None => Ok(()),
        };
        match &result {
            Ok(()) => {
                info!(self.log, "action: close_store | result: success"; "path" => self.path.display(),
                    "batches" => self.appends, "syncs" => self.syncs)
            }
            Err(e) => {
                error!(self.log, "action: close_store | result: fail"; "path" => self.path.display(), "error" => %e)
            }
        }
        result
    }
}
