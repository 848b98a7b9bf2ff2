//! BetStore: the only writer of the bets file, on a thread of its own so that
//! network actors never wait on the disk.
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
//! A failed `fdatasync` is final for the in-memory state ("fsyncgate": the kernel
//! may have dropped the dirty pages, and a later sync could succeed without
//! them). The parked replies fail, the file is cut back to the last synced byte
//! and reopened and recounted exactly as at start; while that is impossible,
//! every request gets a storage error (transient for the agencies, which retry).
//! The store also tells the DrawCoordinator about each `Done`, once the journal
//! line is synced, so no state about an agency lives in two actors.
//!
//! Several server processes (replicas) may share the two files. Between processes
//! the agreement is an exclusive `flock` (see [`storage::shared`]) that the store
//! takes at the first request of a burst and lets go of only after the burst's
//! sync: under it, it first catches up on the rows and Dones the others appended,
//! then decides "new, retry or gap" against that shared truth. It never lets go
//! with rows written but not synced, so no other process can count, and ack, rows
//! that a failed sync here would cut. Every `POLL_DONES_EVERY` it looks (one
//! `fstat`) whether the journal grew, and if so catches up, so its coordinator
//! learns of Dones other replicas recorded.

use super::draw_coordinator::AgencyDone;
use crate::bet::AgencyId;
use crate::bet::BetBatch;
use crate::storage::shared::{LockStats, StoreLock};
use crate::storage::{self, BetFile, DoneJournal, StorageError, WrapFile};
use actix::prelude::*;
use slog::{debug, error, info, warn, Logger};
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A store that could not be reopened tries again at most this often.
const REOPEN_EVERY: Duration = Duration::from_millis(500);
/// How often the store looks for Dones recorded by other replicas.
const POLL_DONES_EVERY: Duration = Duration::from_millis(150);

/// Why the store refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("agency {0} already sent Done")]
    AlreadyDone(AgencyId),
    #[error("batch starts at index {got} but agency's next expected index is {expected}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("agency announced {total} bets but {stored} are stored")]
    Incomplete { stored: u64, total: u64 },
    /// The disk failed; `kind` and `path` survive so logs and Nacks can name them.
    #[error("storage error ({kind}) on {}: {message}", path.display())]
    Storage { kind: io::ErrorKind, path: PathBuf, message: String },
    #[error("the store is closed")]
    Closed,
}

impl From<StorageError> for StoreError {
    fn from(e: StorageError) -> Self {
        let message = match &e {
            StorageError::Io { source, .. } => source.to_string(),
            StorageError::Corrupt { line, reason, .. } => format!("line {line}: {reason}"),
        };
        StoreError::Storage { kind: e.kind(), path: e.path().to_path_buf(), message }
    }
}

/// Per-agency progress, rebuilt from disk at start and at every reopen.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    /// Bets in the file.
    written: u64,
    /// Bets covered by a successful sync: the only count ever reported.
    synced: u64,
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

/// The agency has sent all `total` bets. On success the store tells the
/// coordinator (see [`NotifyDone`]).
#[derive(Message)]
#[rtype(result = "Result<u64, StoreError>")]
pub struct MarkDone {
    pub agency: AgencyId,
    pub total: u64,
}

/// How far an agency got: `(stored, done)`, counting only synced rows.
#[derive(Message)]
#[rtype(result = "Result<(u64, bool), StoreError>")]
pub struct QueryProgress {
    pub agency: AgencyId,
}

/// Where the store sends [`AgencyDone`] (set once, after both actors started).
#[derive(Message)]
#[rtype(result = "()")]
pub struct NotifyDone(pub Recipient<AgencyDone>);

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
    /// `None` while the in-memory state is not trusted (after a failed sync that
    /// could not be repaired by a reopen) or after close.
    file: Option<BetFile>,
    journal: Option<DoneJournal>,
    path: PathBuf,
    wrap: WrapFile,
    progress: HashMap<AgencyId, Progress>,
    /// Agencies whose `written` ran ahead of `synced` since the last sync.
    dirty: Vec<AgencyId>,
    durable: bool,
    /// Replies waiting for the next sync.
    parked: Vec<(Reply<Stored>, Stored)>,
    sync_scheduled: bool,
    /// Bytes of each file known to be on disk: where a reopen cuts.
    synced_len: u64,
    journal_len: u64,
    /// Why the store is out of service, and when it last tried to reopen.
    broken: Option<(StoreError, Instant)>,
    closed: bool,
    coordinator: Option<Recipient<AgencyDone>>,
    /// Batches appended and syncs done: their ratio is what group commit saves.
    appends: u64,
    syncs: u64,
    /// The lock shared with other processes on the same files, and since when it is held.
    lock: StoreLock,
    locked_since: Option<Instant>,
    /// A failed sync left rows of this process past `synced_len`: they must be cut
    /// before the lock is let go of (another process would count them).
    cut_pending: bool,
    lock_stats: LockStats,
    log: Logger,
}

impl BetStore {
    /// Opens the file (repairing and recounting it) before any actor runs.
    pub fn open(path: PathBuf, durable: bool, log: Logger) -> Result<BetStore, StorageError> {
        BetStore::open_with(path, durable, storage::plain(), log)
    }

    /// [`open`](Self::open) with the writes to both files going through `wrap` (tests inject faults).
    pub fn open_with(path: PathBuf, durable: bool, wrap: WrapFile, log: Logger) -> Result<BetStore, StorageError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StorageError::Io { path: dir.to_path_buf(), source })?;
        }
        let lock = StoreLock::open(&path)
            .map_err(|source| StorageError::Io { path: storage::shared::lock_path_for(&path), source })?;
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
            journal_len: 0,
            broken: None,
            closed: false,
            coordinator: None,
            appends: 0,
            syncs: 0,
            lock,
            locked_since: None,
            cut_pending: false,
            lock_stats: LockStats::default(),
            log,
        };
        // Opening cuts a torn tail: not while another replica is mid-write.
        store.acquire().map_err(|e| StorageError::Io { path: store.lock.path().to_path_buf(), source: e })?;
        let loaded = store.load("open_store");
        store.release();
        loaded?;
        Ok(store)
    }

    /// Takes the inter-process lock if this process does not hold it yet.
    fn acquire(&mut self) -> io::Result<()> {
        if self.locked_since.is_none() {
            let waited = self.lock.lock_exclusive()?;
            self.lock_stats.waited(waited);
            self.locked_since = Some(Instant::now());
        }
        Ok(())
    }

    /// Takes the lock and catches up on what other processes appended since this
    /// one's last look: their rows count as stored (and synced), their Dones as done.
    fn lock_and_catch_up(&mut self) -> Result<(), StoreError> {
        if self.locked_since.is_some() {
            return Ok(());
        }
        self.acquire()
            .map_err(|source| StoreError::from(StorageError::Io { path: self.lock.path().to_path_buf(), source }))?;
        if let Err(e) = self.catch_up() {
            let e = StoreError::from(e);
            error!(self.log, "action: catch_up | result: fail"; "path" => self.path.display(), "error" => %e);
            // Not `distrust`: this process has no unsynced rows here (it never lets go of
            // the lock with any), and a cut at its last known end would remove rows other
            // replicas synced and acked. Reload from the files as they are instead.
            self.broken = Some((e.clone(), Instant::now()));
            let _ = self.reopen();
            return Err(e);
        }
        Ok(())
    }

    fn catch_up(&mut self) -> Result<(), StorageError> {
        let (Some(file), Some(journal)) = (self.file.as_mut(), self.journal.as_mut()) else {
            return Ok(());
        };
        let progress = &mut self.progress;
        let rows = file.catch_up(self.durable, |agency| {
            let p = progress.entry(agency).or_default();
            p.written += 1;
            p.synced = p.written;
        })?;
        self.synced_len = file.synced_len();
        let (done, lines) = journal.catch_up()?;
        self.journal_len = journal.synced_len();
        for c in [rows, lines] {
            if c.bytes > 0 || c.torn_cut > 0 {
                self.lock_stats.catch_ups += 1;
                self.lock_stats.caught_up_rows += c.rows;
                self.lock_stats.caught_up_bytes += c.bytes;
                self.lock_stats.torn_cut_bytes += c.torn_cut;
            }
        }
        if rows.torn_cut > 0 || lines.torn_cut > 0 {
            warn!(self.log, "action: catch_up | result: success"; "path" => self.path.display(),
                "torn_cut_bytes" => rows.torn_cut + lines.torn_cut, "note" => "a writer died mid-write");
        }
        for agency in done {
            let p = self.progress.entry(agency).or_default();
            if !p.done {
                p.done = true;
                if let Some(coordinator) = &self.coordinator {
                    coordinator.do_send(AgencyDone { agency });
                }
            }
        }
        Ok(())
    }

    /// Lets go of the lock, never with rows of this process written but unsynced
    /// or cut-pending (a poisoned file is reopened, and so cut, first).
    fn release(&mut self) {
        if let Some(e) = self.file.as_ref().and_then(BetFile::poisoned) {
            self.distrust(e.into());
        }
        if self.cut_pending || self.dirty.iter().any(|a| self.progress.get(a).is_some_and(|p| p.written > p.synced)) {
            return;
        }
        if let Some(since) = self.locked_since.take() {
            self.lock_stats.held(since.elapsed());
            if let Err(e) = self.lock.unlock() {
                error!(self.log, "action: unlock_store | result: fail"; "path" => self.lock.path().display(), "error" => %e);
            }
        }
    }

    /// Ends a request that may have taken the lock: the lock goes once the mailbox
    /// burst is synced.
    fn end_request(&mut self, ctx: &mut Context<Self>) {
        if self.locked_since.is_some() {
            self.schedule_sync(ctx);
        }
    }

    /// Reads the files into a fresh in-memory state (start, and every reopen).
    fn load(&mut self, action: &str) -> Result<(), StorageError> {
        let (file, recovered) = BetFile::open_with(&self.path, &self.wrap)?;
        let (journal, done) = DoneJournal::open_with(&self.path, &self.wrap)?;
        self.progress.clear();
        self.dirty.clear();
        for (agency, stored) in &recovered.per_agency {
            let p = self.progress.entry(*agency).or_default();
            p.written = *stored;
            p.synced = *stored;
        }
        for agency in &done {
            self.progress.entry(*agency).or_default().done = true;
        }
        self.synced_len = file.synced_len();
        self.journal_len = journal.synced_len();
        self.file = Some(file);
        self.journal = Some(journal);
        self.broken = None;
        let rows: u64 = recovered.per_agency.values().sum();
        info!(self.log, "action: {action} | result: success";
            "path" => self.path.display(), "rows" => rows, "agencies_with_bets" => recovered.per_agency.len(),
            "agencies_done" => done.len(), "repaired_bytes" => recovered.repaired_bytes);
        Ok(())
    }

    /// Throws the in-memory state away and rebuilds it from what is surely on
    /// disk: both files are cut at their last synced byte, then loaded as at start.
    fn reopen(&mut self) -> Result<(), StoreError> {
        self.file = None;
        self.journal = None;
        let result = self
            .acquire()
            .map_err(|source| StorageError::Io { path: self.lock.path().to_path_buf(), source })
            .and_then(|_| match self.cut_pending {
                true => BetFile::cut_at(&self.path, self.synced_len)
                    .and_then(|_| BetFile::cut_at(&DoneJournal::path_for(&self.path), self.journal_len))
                    .map(|_| self.cut_pending = false),
                false => Ok(()),
            })
            .and_then(|_| self.load("reopen_store"));
        if let Err(e) = result {
            let e = StoreError::from(e);
            error!(self.log, "action: reopen_store | result: fail"; "path" => self.path.display(), "error" => %e);
            self.broken = Some((e.clone(), Instant::now()));
            return Err(e);
        }
        Ok(())
    }

    /// The in-memory state can no longer be trusted: fail every parked reply (no
    /// ack ever leaves from this state) and reopen.
    fn distrust(&mut self, cause: StoreError) {
        for (tx, _) in self.parked.drain(..) {
            let _ = tx.send(Err(cause.clone()));
        }
        self.broken = Some((cause, Instant::now()));
        // Rows of this process past the last sync go; others' rows (counted at the
        // last catch-up, all synced) stay. The lock is held here.
        self.cut_pending = true;
        let _ = self.reopen();
    }

    /// Ready to take a request, reopening first if an earlier failure left the store down.
    fn ensure_open(&mut self) -> Result<(), StoreError> {
        if self.closed {
            return Err(StoreError::Closed);
        }
        if let Some((e, at)) = &self.broken {
            if at.elapsed() < REOPEN_EVERY {
                return Err(e.clone());
            }
            self.reopen()?;
        }
        if let Some(e) = self.file.as_ref().and_then(BetFile::poisoned) {
            // The reopen cuts back to the last synced byte: replies parked for rows
            // past it must fail, not be acked by the next sync.
            self.distrust(e.into());
        }
        match (&self.file, &self.broken) {
            (Some(_), _) => Ok(()),
            (None, Some((e, _))) => Err(e.clone()),
            (None, None) => Err(StoreError::Closed),
        }
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
        self.lock_and_catch_up()?;
        let progress = self.progress.entry(msg.agency).or_default();
        if progress.done {
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
        let fresh = msg.bets.len() - skip;
        if fresh > 0 {
            let file = self.file.as_mut().ok_or(StoreError::Closed)?;
            file.append(msg.agency, msg.bets.raw_iter().skip(skip))?;
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
        ctx.run_interval(POLL_DONES_EVERY, |store, ctx| {
            let idle = store.locked_since.is_none() && !store.closed && store.broken.is_none();
            if idle && store.journal.as_ref().is_some_and(DoneJournal::grew) {
                let _ = store.lock_and_catch_up();
                store.end_request(ctx);
            }
        });
    }
}

impl Handler<StoreBets> for BetStore {
    type Result = ResponseFuture<Result<Stored, StoreError>>;

    fn handle(&mut self, msg: StoreBets, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        match self.store_bets(&msg) {
            Ok((stored, must_wait)) => {
                if stored.newly_stored > 0 && slog::Drain::is_enabled(&self.log, slog::Level::Debug) {
                    for bet in msg.bets.iter().skip((stored.count - stored.newly_stored) as usize) {
                        debug!(self.log, "action: apuesta_almacenada | result: success"; "agency" => msg.agency, "dni" => bet.document, "numero" => bet.number);
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
        self.end_request(ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Closed)) })
    }
}

impl Handler<SyncNow> for BetStore {
    type Result = ();

    fn handle(&mut self, _: SyncNow, _: &mut Context<Self>) {
        self.sync_scheduled = false;
        // A failure is logged and answered to the parked replies inside.
        let _ = self.sync_all();
        self.release();
    }
}

impl Handler<NotifyDone> for BetStore {
    type Result = ();

    fn handle(&mut self, msg: NotifyDone, _: &mut Context<Self>) {
        self.coordinator = Some(msg.0);
    }
}

impl Handler<MarkDone> for BetStore {
    type Result = Result<u64, StoreError>;

    fn handle(&mut self, msg: MarkDone, ctx: &mut Context<Self>) -> Self::Result {
        let result = self.mark_done(&msg);
        self.end_request(ctx);
        result
    }
}

impl BetStore {
    fn mark_done(&mut self, msg: &MarkDone) -> Result<u64, StoreError> {
        self.ensure_open()?;
        self.lock_and_catch_up()?;
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
            error!(self.log, "action: agency_done | result: fail"; "agency" => msg.agency, "kind" => %storage_kind(&e), "error" => %e);
            // A failed journal sync is as final as a failed bets sync.
            self.distrust(e.clone());
            return Err(e);
        }
        self.journal_len = journal_len;
        self.progress.entry(msg.agency).or_default().done = true;
        if let Some(coordinator) = &self.coordinator {
            coordinator.do_send(AgencyDone { agency: msg.agency });
        } else {
            warn!(self.log, "action: agency_done | result: fail"; "agency" => msg.agency, "error" => "no coordinator to tell");
        }
        Ok(msg.total)
    }
}

impl Handler<QueryProgress> for BetStore {
    type Result = Result<(u64, bool), StoreError>;

    fn handle(&mut self, msg: QueryProgress, ctx: &mut Context<Self>) -> Self::Result {
        let result = self.ensure_open().and_then(|_| self.lock_and_catch_up()).and_then(|_| {
            // Report only durable rows: sync what was written first.
            let p = self.progress.get(&msg.agency).copied().unwrap_or_default();
            if p.written > p.synced {
                self.sync_all()?;
            }
            let p = self.progress.get(&msg.agency).copied().unwrap_or_default();
            Ok((p.synced, p.done))
        });
        self.end_request(ctx);
        result
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

    fn handle(&mut self, msg: Draw, ctx: &mut Context<Self>) -> Self::Result {
        // Every write this actor accepted is already in the file (writes are
        // synchronous); make it durable before reading it back. Under the lock, no
        // other replica is mid-write, and a torn row a dead one left is cut.
        let result = self.ensure_open().and_then(|_| self.lock_and_catch_up()).and_then(|_| {
            self.sync_all()?;
            let (winners, rows) = storage::draw(&self.path, msg.winning_number)?;
            let winners = winners.into_iter().map(|(a, docs)| (a, Arc::new(docs))).collect();
            Ok(DrawOutcome { winners, rows })
        });
        self.end_request(ctx);
        result
    }
}

impl Handler<CloseStore> for BetStore {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, _: CloseStore, _: &mut Context<Self>) -> Self::Result {
        // Release anything parked (a sync may be queued behind this message).
        let parked = self.sync_all();
        self.release();
        self.closed = true;
        let journal = self.journal.take();
        let result = match (self.file.take(), parked) {
            (_, Err(e)) => Err(e),
            (Some(mut file), Ok(())) => {
                file.sync().and_then(|_| journal.map_or(Ok(()), |mut j| j.sync())).map_err(StoreError::from)
            }
            (None, Ok(())) => match self.broken.take() {
                Some((e, _)) => Err(e),
                None => Ok(()),
            },
        };
        match &result {
            Ok(()) => {
                let l = &self.lock_stats;
                info!(self.log, "action: close_store | result: success"; "path" => self.path.display(),
                    "batches" => self.appends, "syncs" => self.syncs, "lock_acquisitions" => l.acquisitions,
                    "lock_wait_us" => l.wait.as_micros() as u64, "lock_wait_max_us" => l.max_wait.as_micros() as u64,
                    "lock_hold_us" => l.hold.as_micros() as u64, "lock_hold_max_us" => l.max_hold.as_micros() as u64,
                    "catch_ups" => l.catch_ups, "caught_up_rows" => l.caught_up_rows,
                    "caught_up_bytes" => l.caught_up_bytes, "torn_cut_bytes" => l.torn_cut_bytes)
            }
            Err(e) => {
                error!(self.log, "action: close_store | result: fail"; "path" => self.path.display(), "error" => %e)
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    //! Faults the OS cannot produce on demand, injected through the storage seam.
    use super::*;
    use crate::bet::{Bet, Date};
    use crate::storage::fault::{self, FaultPlan};
    use std::path::Path;
    use std::sync::atomic::Ordering;

    fn bets(agency: AgencyId, from: u64, n: u64) -> BetBatch {
        let bets: Vec<Bet> = (from..from + n)
            .map(|i| Bet {
                first_name: format!("Name{agency}"),
                last_name: "Pérez, Jr".into(),
                document: format!("{}", agency as u64 * 1_000_000 + i),
                birthdate: Date::new(1990, 1, 1).unwrap(),
                number: (i % 10_000) as u16,
            })
            .collect();
        bets.into()
    }

    fn store_with_faults(path: &Path) -> (Addr<BetStore>, Arc<FaultPlan>) {
        let plan = Arc::new(FaultPlan::default());
        let store = BetStore::open_with(path.to_path_buf(), true, fault::wrap(plan.clone()), crate::logging::discard())
            .unwrap()
            .start();
        (store, plan)
    }

    /// Every stored row, checked whole, as `(agency, document)`.
    fn rows(path: &Path) -> Vec<(AgencyId, String)> {
        let bytes = std::fs::read(path).unwrap();
        assert!(bytes.is_empty() || bytes.ends_with(b"\n"), "torn tail");
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(&bytes[..]);
        reader
            .records()
            .map(|r| {
                let r = r.expect("every row whole, 6 fields");
                assert_eq!(r.len(), 6);
                (r[0].parse().unwrap(), r[3].to_string())
            })
            .collect()
    }

    fn expected(agency: AgencyId, n: u64) -> Vec<(AgencyId, String)> {
        (0..n).map(|i| (agency, format!("{}", agency as u64 * 1_000_000 + i))).collect()
    }

    fn send(store: &Addr<BetStore>, agency: AgencyId, from: u64, n: u64) -> Request<BetStore, StoreBets> {
        store.send(StoreBets { agency, first_index: Some(from), bets: bets(agency, from, n) })
    }

    #[actix::test]
    async fn a_failed_fdatasync_acks_nothing_parked_and_reopens_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let (store, plan) = store_with_faults(&path);
        assert_eq!(send(&store, 1, 0, 3).await.unwrap().unwrap().newly_stored, 3);

        // One burst: a new batch, a retry of it (written, not yet synced) and another
        // agency's batch, all parked behind the sync that fails.
        plan.fail_sync.store(true, Ordering::SeqCst);
        let (b, retry, c) = (send(&store, 1, 3, 2), send(&store, 1, 3, 2), send(&store, 2, 0, 4));
        let (b, retry, c) = (b.await.unwrap(), retry.await.unwrap(), c.await.unwrap());
        for answer in [b, retry, c] {
            match answer {
                Err(StoreError::Storage { path: p, .. }) => assert_eq!(p, path),
                other => panic!("acked after a failed sync: {other:?}"),
            }
        }
        // The reopened state is what was synced: the unsynced rows are gone.
        assert_eq!(store.send(QueryProgress { agency: 1 }).await.unwrap(), Ok((3, false)));
        assert_eq!(store.send(QueryProgress { agency: 2 }).await.unwrap(), Ok((0, false)));
        assert_eq!(rows(&path), expected(1, 3));

        // The agencies resend from there: each row once.
        send(&store, 1, 3, 2).await.unwrap().unwrap();
        send(&store, 2, 0, 4).await.unwrap().unwrap();
        assert_eq!(store.send(MarkDone { agency: 1, total: 5 }).await.unwrap(), Ok(5));
        let mut want = expected(1, 3);
        want.extend(expected(1, 5).split_off(3));
        want.extend(expected(2, 4));
        assert_eq!(rows(&path), want);
        store.send(CloseStore).await.unwrap().unwrap();
        let again = BetStore::open(path.clone(), true, crate::logging::discard()).unwrap().start();
        assert_eq!(again.send(QueryProgress { agency: 1 }).await.unwrap(), Ok((5, true)));
        assert_eq!(again.send(QueryProgress { agency: 2 }).await.unwrap(), Ok((4, false)));
    }

    #[actix::test]
    async fn a_short_write_leaves_no_torn_row_for_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let (store, plan) = store_with_faults(&path);
        send(&store, 1, 0, 2).await.unwrap().unwrap();
        // The next write stores 1.5 rows' worth of bytes, then fails like ENOSPC.
        plan.short_write_next(70);
        match send(&store, 2, 0, 3).await.unwrap() {
            Err(StoreError::Storage { kind, path: p, message }) => {
                assert_eq!(kind, io::ErrorKind::StorageFull);
                assert_eq!(p, path);
                assert!(message.contains("No space left"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(rows(&path), expected(1, 2), "the partial batch was cut back");
        // The next appends start on a row boundary; the refused batch goes in whole.
        send(&store, 1, 2, 1).await.unwrap().unwrap();
        send(&store, 2, 0, 3).await.unwrap().unwrap();
        let mut want = expected(1, 3);
        want.extend(expected(2, 3));
        assert_eq!(rows(&path), want);
        drop(store);
        let reopened = BetStore::open(path.clone(), true, crate::logging::discard()).unwrap().start();
        assert_eq!(reopened.send(QueryProgress { agency: 2 }).await.unwrap(), Ok((3, false)));
    }

    #[actix::test]
    async fn a_short_write_that_cannot_be_rolled_back_stops_writes_until_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let (store, plan) = store_with_faults(&path);
        send(&store, 1, 0, 2).await.unwrap().unwrap();
        plan.short_write_next(30);
        plan.fail_set_len.store(true, Ordering::SeqCst);
        assert!(send(&store, 1, 2, 2).await.unwrap().is_err());
        // The torn row is still on disk, but the next request reopens first, which cuts it.
        send(&store, 1, 2, 2).await.unwrap().unwrap();
        assert_eq!(rows(&path), expected(1, 4));
    }

    #[actix::test]
    async fn a_failed_sync_before_done_records_no_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let (store, plan) = store_with_faults(&path);
        // Relaxed by nothing: the batch waits for its sync, which fails.
        plan.fail_sync.store(true, Ordering::SeqCst);
        assert!(send(&store, 1, 0, 2).await.unwrap().is_err());
        // Done for rows that are not there is refused, and nothing says done.
        assert!(matches!(
            store.send(MarkDone { agency: 1, total: 2 }).await.unwrap(),
            Err(StoreError::Incomplete { stored: 0, total: 2 })
        ));
        assert_eq!(store.send(QueryProgress { agency: 1 }).await.unwrap(), Ok((0, false)));
        assert_eq!(store.send(DoneAgencies).await.unwrap(), Vec::<AgencyId>::new());
        assert!(rows(&path).is_empty());
    }

    #[actix::test]
    async fn a_failed_journal_sync_records_no_done_and_tells_nobody() {
        use crate::actors::draw_coordinator::{DrawCoordinator, QueryStatus};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let (store, plan) = store_with_faults(&path);
        let coordinator = DrawCoordinator::new(2, 7574, vec![], store.clone(), crate::logging::discard()).start();
        store.send(NotifyDone(coordinator.clone().recipient())).await.unwrap();
        send(&store, 1, 0, 3).await.unwrap().unwrap();
        // The bets are synced already: the only sync Done needs is the journal's, and it fails.
        plan.fail_sync.store(true, Ordering::SeqCst);
        assert!(matches!(
            store.send(MarkDone { agency: 1, total: 3 }).await.unwrap(),
            Err(StoreError::Storage { path: p, .. }) if p.ends_with("bets.csv.done")
        ));
        assert_eq!(store.send(QueryProgress { agency: 1 }).await.unwrap(), Ok((3, false)));
        assert!(coordinator.send(QueryStatus).await.unwrap().done.is_empty(), "coordinator told of an unrecorded Done");
        assert_eq!(std::fs::read_to_string(DoneJournal::path_for(&path)).unwrap(), "", "journal line cut");
        // Sent again, Done is recorded, and the store tells the coordinator.
        assert_eq!(store.send(MarkDone { agency: 1, total: 3 }).await.unwrap(), Ok(3));
        assert_eq!(store.send(QueryProgress { agency: 1 }).await.unwrap(), Ok((3, true)));
        assert_eq!(coordinator.send(QueryStatus).await.unwrap().done, vec![1]);
        assert_eq!(rows(&path), expected(1, 3));
    }

    #[actix::test]
    async fn what_another_process_appended_counts_and_its_torn_row_is_cut() {
        use crate::actors::draw_coordinator::{DrawCoordinator, QueryStatus};
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let store = BetStore::open(path.clone(), true, crate::logging::discard()).unwrap().start();
        let coordinator = DrawCoordinator::new(3, 7574, vec![], store.clone(), crate::logging::discard()).start();
        store.send(NotifyDone(coordinator.clone().recipient())).await.unwrap();
        send(&store, 1, 0, 2).await.unwrap().unwrap();
        // Another replica (holding the lock while this one is idle) stores agency 2's
        // three rows and its Done, then one that dies half way through a row.
        let lock = crate::storage::shared::StoreLock::open(&path).unwrap();
        lock.lock_exclusive().unwrap();
        let mut other = Vec::new();
        for bet in bets(2, 0, 3).raw_iter() {
            storage::render_raw_row(&mut other, 2, &bet);
        }
        other.extend_from_slice(b"3,Half a r");
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(&other).unwrap();
        let journal = DoneJournal::path_for(&path);
        std::fs::OpenOptions::new().append(true).open(&journal).unwrap().write_all(b"2,3\n").unwrap();
        lock.unlock().unwrap();
        // This store answers from the shared truth, cuts the torn row, and tells its coordinator.
        assert_eq!(store.send(QueryProgress { agency: 2 }).await.unwrap(), Ok((3, true)));
        assert_eq!(store.send(QueryProgress { agency: 3 }).await.unwrap(), Ok((0, false)));
        assert!(matches!(send(&store, 2, 3, 1).await.unwrap(), Err(StoreError::AlreadyDone(2))));
        send(&store, 1, 2, 1).await.unwrap().unwrap();
        send(&store, 3, 0, 1).await.unwrap().unwrap();
        let mut want = expected(1, 2);
        want.extend(expected(2, 3));
        want.extend(expected(1, 3).split_off(2));
        want.extend(expected(3, 1));
        assert_eq!(rows(&path), want);
        assert_eq!(coordinator.send(QueryStatus).await.unwrap().done, vec![2]);
    }

    #[actix::test]
    async fn rows_parked_before_a_torn_unrecoverable_write_are_never_acked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let (store, plan) = store_with_faults(&path);
        send(&store, 1, 0, 2).await.unwrap().unwrap();
        // One burst: a batch is written and parked, the next write tears and cannot
        // be cut back, and a third request makes the store reopen from the last sync.
        plan.short_write_after(1, 30);
        plan.fail_set_len.store(true, Ordering::SeqCst);
        let (parked, torn, after) = (send(&store, 1, 2, 2), send(&store, 2, 0, 2), send(&store, 3, 0, 1));
        assert!(parked.await.unwrap().is_err(), "acked rows the reopen cut away");
        assert!(torn.await.unwrap().is_err());
        after.await.unwrap().unwrap();
        assert_eq!(store.send(QueryProgress { agency: 1 }).await.unwrap(), Ok((2, false)));
        let mut want = expected(1, 2);
        want.extend(expected(3, 1));
        assert_eq!(rows(&path), want);
    }
}
