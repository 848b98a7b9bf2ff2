//! The replicas' side of the store: the lock shared with other processes and
//! the catch-up on what they appended, taken at the start of every burst.

use super::*;

impl BetStore {
    /// Takes the inter-process lock if this process does not hold it yet.
    pub(super) fn acquire(&mut self) -> io::Result<()> {
        if self.locked_since.is_none() {
            let waited = self.lock.lock_exclusive()?;
            self.lock_stats.waited(waited);
            self.locked_since = Some(Instant::now());
        }
        Ok(())
    }

    /// Takes the lock and catches up on what other processes appended since this
    /// one's last look: their rows count as stored (and synced), their Dones as done.
    pub(super) fn lock_and_catch_up(&mut self) -> Result<(), StoreError> {
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

    pub(super) fn catch_up(&mut self) -> Result<(), StorageError> {
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
        self.sidecar_len = file.sidecar_len();
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
        for storage::DoneLine { agency, .. } in done {
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
    pub(super) fn release(&mut self) {
        if let Some(e) = self.file.as_ref().and_then(BetFile::poisoned) {
            self.distrust(e.into());
        }
        if self.cut_pending
            || self.file.as_ref().is_some_and(BetFile::has_pending)
            || self.dirty.iter().any(|a| self.progress.get(a).is_some_and(|p| p.written > p.synced))
        {
            return;
        }
        if let Some(since) = self.locked_since.take() {
            self.lock_stats.held(since.elapsed());
            if let Err(e) = self.lock.unlock() {
                error!(self.log, "action: unlock_store | result: fail";
                    "path" => self.lock.path().display(), "error" => %e);
            }
        }
    }
}
