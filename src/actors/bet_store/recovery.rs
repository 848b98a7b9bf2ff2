//! Recovery: loading the files, reopening them after a failed sync, and the
//! out-of-service state while that is impossible.

use super::*;

impl BetStore {
    /// Reads the files into a fresh in-memory state (start, and every reopen).
    pub(super) fn load(&mut self, action: &str) -> Result<(), StorageError> {
        let (mut file, recovered) = BetFile::open_with(&self.path, &self.wrap, &self.spec)?;
        file.set_write_through(!self.durable);
        let (journal, done) = DoneJournal::open_with(&self.path, &self.wrap, self.spec.agencies)?;
        storage::check_done_totals(&DoneJournal::path_for(&self.path), &done, &recovered.per_agency)?;
        self.fence.rebuild(&self.path)?;
        self.progress.clear();
        self.dirty.clear();
        for (agency, stored) in &recovered.per_agency {
            let p = self.progress.entry(*agency).or_default();
            p.written = *stored;
            p.synced = *stored;
        }
        for d in &done {
            self.progress.entry(d.agency).or_default().done = true;
        }
        self.synced_len = file.synced_len();
        self.sidecar_len = file.sidecar_len();
        let head = file.head().unwrap_or_else(|| "-".into());
        self.journal_len = journal.synced_len();
        self.file = Some(file);
        self.journal = Some(journal);
        self.broken = None;
        let rows: u64 = recovered.per_agency.values().sum();
        info!(self.log, "action: {action} | result: success";
            "path" => self.path.display(), "rows" => rows, "agencies_with_bets" => recovered.per_agency.len(),
            "agencies_done" => done.len(), "repaired_bytes" => recovered.repaired_bytes,
            "groups" => recovered.groups, "head" => head);
        Ok(())
    }

    /// Throws the in-memory state away and rebuilds it from what is surely on
    /// disk: both files are cut at their last synced byte, then loaded as at start.
    pub(super) fn reopen(&mut self) -> Result<(), StoreError> {
        self.file = None;
        self.journal = None;
        let result = match self.cut_pending {
            true => BetFile::cut_at(&self.path, self.synced_len, self.sidecar_len)
                .and_then(|_| storage::cut_file(&DoneJournal::path_for(&self.path), self.journal_len))
                .map(|_| self.cut_pending = false),
            false => Ok(()),
        }
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
    pub(super) fn distrust(&mut self, cause: StoreError) {
        for (tx, _) in self.parked.drain(..) {
            let _ = tx.send(Err(cause.clone()));
        }
        self.broken = Some((cause, Instant::now()));
        // Rows past the last sync go: none of them was acknowledged.
        self.cut_pending = true;
        let _ = self.reopen();
    }

    /// Ready to take a request, reopening first if an earlier failure left the store down.
    pub(super) fn ensure_open(&mut self) -> Result<(), StoreError> {
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
}
