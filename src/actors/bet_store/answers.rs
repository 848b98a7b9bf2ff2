//! The store's read-side answers: an agency's progress, the agencies done, the
//! draw over the synced file (with the chain head) and the closing sync.

use super::*;

impl Handler<QueryProgress> for BetStore {
    type Result = ResponseFuture<Result<(u64, bool), StoreError>>;

    fn handle(&mut self, msg: QueryProgress, ctx: &mut Context<Self>) -> Self::Result {
        if self.js.is_some() {
            return self.js_progress(msg, ctx);
        }
        let result = self.ensure_open().and_then(|_| {
            // Report only durable rows: sync what was written first.
            let p = self.progress.get(&msg.agency).copied().unwrap_or_default();
            if p.written > p.synced {
                self.sync_all()?;
            }
            let p = self.progress.get(&msg.agency).copied().unwrap_or_default();
            Ok((p.synced, p.done))
        });
        Box::pin(async move { result })
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
        // Every row this actor accepted is in the file or its write buffer; the
        // sync writes the buffer and makes it all durable before it is read back.
        self.ensure_open().and_then(|_| {
            self.sync_all()?;
            if let Some(file) = self.file.as_mut() {
                // Rows wait in the buffer only while an agency is dirty, so the sync
                // above wrote them; this keeps the draw right if that ever changes.
                file.flush()?;
            }
            let (winners, rows) = storage::draw(&self.path, msg.winning_number)?;
            let winners = winners.into_iter().map(|(a, docs)| (a, Arc::new(docs))).collect();
            let head = self.file.as_ref().and_then(BetFile::head);
            Ok(DrawOutcome { winners, rows, head })
        })
    }
}

impl Handler<CloseStore> for BetStore {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, _: CloseStore, _: &mut Context<Self>) -> Self::Result {
        self.js_close();
        // Release anything parked (a sync may be queued behind this message).
        let parked = self.sync_all();
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
            Ok(()) => info!(self.log, "action: close_store | result: success"; "path" => self.path.display(),
                "batches" => self.appends, "syncs" => self.syncs),
            Err(e) => {
                error!(self.log, "action: close_store | result: fail"; "path" => self.path.display(), "error" => %e)
            }
        }
        result
    }
}
