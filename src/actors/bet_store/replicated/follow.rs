//! The replicated backend's reading side: following the stream from the first
//! message the view lacks, and applying each message to the view by the rule
//! every replica shares (see the parent module).

use super::*;
use crate::storage::jetstream::Entry;
use async_nats::jetstream::Message as JsMessage;
use futures_util::StreamExt;

/// How long a reader being made is waited for before a lag check may replace it.
const MAKING_LIMIT: Duration = Duration::from_secs(15);

/// One item of a stream reader (its generation), forwarded into the mailbox in stream order.
#[derive(Message)]
#[rtype(result = "()")]
struct Follow(u64, Result<JsMessage, push::OrderedError>);

/// The stream reader of this generation ended.
#[derive(Message)]
#[rtype(result = "()")]
struct FollowEnded(u64);

impl BetStore {
    /// Makes a new stream reader from the first message the view lacks; the
    /// older reader, if any, is superseded (what it still delivers is ignored).
    pub(super) fn subscribe(&mut self, ctx: &mut Context<Self>) {
        let Some(r) = self.js.as_mut() else { return };
        r.generation += 1;
        r.making_since = Some(Instant::now());
        let generation = r.generation;
        let (stream, inbox, start) = (r.link.stream.clone(), r.link.client.new_inbox(), r.applied + 1);
        let make = async move {
            let config = push::OrderedConfig {
                deliver_subject: inbox,
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: start },
                ..Default::default()
            };
            let consumer = stream.create_consumer(config).await.map_err(|e| e.to_string())?;
            consumer.messages().await.map_err(|e| e.to_string())
        };
        ctx.spawn(make.into_actor(self).map(move |made, store, ctx| match made {
            _ if store.js.as_ref().is_none_or(|r| r.generation != generation) || store.closed => {}
            Ok(mut messages) => {
                if let Some(r) = store.js.as_mut() {
                    r.making_since = None;
                }
                info!(store.log, "action: follow_stream | result: success"; "from_sequence" => start);
                let addr = ctx.address();
                let follower = actix::spawn(async move {
                    while let Some(item) = messages.next().await {
                        // Waiting for each answer keeps the mailbox bounded.
                        if addr.send(Follow(generation, item)).await.is_err() {
                            return;
                        }
                    }
                    addr.do_send(FollowEnded(generation));
                });
                if let Some(r) = store.js.as_mut() {
                    if let Some(older) = r.follower.replace(follower) {
                        older.abort();
                    }
                }
            }
            Err(e) => {
                warn!(store.log, "action: follow_stream | result: fail"; "from_sequence" => start, "error" => e);
                ctx.run_later(RESUBSCRIBE_AFTER, move |store, ctx| {
                    if store.js.as_ref().is_some_and(|r| r.generation == generation) {
                        store.subscribe(ctx);
                    }
                });
            }
        }));
    }

    /// The stream reader must not stall silently: the client's ordered
    /// consumer recreates itself when heartbeats stop or a sequence is
    /// skipped, but a reader that gets heartbeats and no messages while the
    /// stream grows would leave this replica's draw waiting for a Done it never
    /// reads. When the view lags the stream's end and did not move over a whole
    /// check period, the reader is replaced by a new one from the next message.
    pub(super) fn check_lag(&mut self, ctx: &mut Context<Self>) {
        let Some(r) = self.js.as_mut() else { return };
        // A reader being made is given its time (a slow answer is not a stall).
        let making = r.making_since.is_some_and(|at| at.elapsed() < MAKING_LIMIT);
        if r.lag_check || making || r.failed.is_some() || self.closed {
            return;
        }
        r.lag_check = true;
        let stream = r.link.stream.clone();
        let tail = async move { stream.get_info().await.map(|i| i.state.last_sequence) };
        ctx.spawn(tail.into_actor(self).map(|tail, store, ctx| {
            let Some(r) = store.js.as_mut() else { return };
            r.lag_check = false;
            // Without an answer nothing is known: the next period asks again.
            let Ok(last) = tail else { return };
            if last <= r.applied {
                r.lagging_at = None;
                return;
            }
            if r.lagging_at != Some(r.applied) {
                r.lagging_at = Some(r.applied);
                return;
            }
            warn!(store.log, "action: follow_stream | result: fail"; "applied_sequence" => r.applied,
                "stream_last_sequence" => last, "error" => "the stream reader made no progress behind the stream's end; following again");
            r.lagging_at = None;
            if let Some(follower) = r.follower.take() {
                follower.abort();
            }
            store.subscribe(ctx);
        }));
    }

    /// Applies one stream message to the view; returns the agency and the
    /// range of its rows the message added.
    fn apply(&mut self, entry: Entry) -> Option<(AgencyId, u64, u64)> {
        match entry {
            Entry::Bets { agency, first, rows, payload } => {
                let p = self.progress.entry(agency).or_default();
                let (start, added) = fresh_part(p.written, p.done, first, rows, &payload)?;
                let fresh = &payload[start..];
                let at = p.written;
                let file = self.file.as_mut()?;
                if let Err(e) = file.append_rendered(fresh) {
                    let e = StoreError::from(e);
                    error!(self.log, "action: apply_stream | result: fail"; "error" => %e);
                    if let Some(r) = self.js.as_mut() {
                        r.failed = Some(e);
                    }
                    return None;
                }
                self.fence.applied_rows(agency, at, fresh);
                p.written += added;
                p.synced = p.written;
                self.appends += 1;
                Some((agency, at, at + added))
            }
            Entry::Done { agency, total } => {
                let p = self.progress.entry(agency).or_default();
                if done_counts(p.written, p.done, total) {
                    p.done = true;
                    if let Some(coordinator) = &self.coordinator {
                        coordinator.do_send(AgencyDone { agency });
                    }
                }
                None
            }
        }
    }
}

/// The rule every replica applies to a batch message of an agency with `count`
/// rows in the view: the offset in `payload` from which its rows are new, and
/// how many they are; `None` after the agency's Done, after a gap (`first`
/// past `count`), or for rows the view holds all of.
fn fresh_part(count: u64, done: bool, first: u64, rows: u64, payload: &[u8]) -> Option<(usize, u64)> {
    if done || first > count || first + rows <= count {
        return None;
    }
    let skip = count - first;
    let start = match skip {
        0 => 0,
        n => memchr::memchr_iter(b'\n', payload).nth(n as usize - 1).map_or(payload.len(), |at| at + 1),
    };
    Some((start, rows - skip))
}

/// The rule for a Done: it counts once, and only with the total the view holds.
fn done_counts(count: u64, done: bool, total: u64) -> bool {
    !done && count == total
}

impl Handler<Follow> for BetStore {
    type Result = ();

    fn handle(&mut self, Follow(generation, item): Follow, ctx: &mut Context<Self>) {
        if self.js.as_ref().is_none_or(|r| r.generation != generation) {
            return;
        }
        let msg = match item {
            Ok(msg) => msg,
            Err(e) => {
                warn!(self.log, "action: follow_stream | result: fail"; "error" => %e);
                return;
            }
        };
        let Some(r) = self.js.as_ref() else { return };
        if r.failed.is_some() {
            return;
        }
        let seq = match msg.info() {
            Ok(info) => info.stream_sequence,
            Err(e) => {
                warn!(self.log, "action: follow_stream | result: fail"; "error" => %e);
                return;
            }
        };
        if seq <= r.applied {
            return;
        }
        let decoded = js::decode(&r.link.name, msg.subject.as_str(), msg.headers.as_ref(), &msg.payload, r.agencies);
        let added = match decoded {
            Ok(entry) => self.apply(entry),
            Err(reason) => {
                warn!(self.log, "action: apply_stream | result: fail"; "sequence" => seq, "skipped" => reason);
                if let Some(r) = self.js.as_mut() {
                    r.skipped += 1;
                }
                None
            }
        };
        if let Some(r) = self.js.as_mut() {
            r.applied = seq;
            if let Some((agency, from, to)) = added {
                if r.recent.len() == RECENT {
                    r.recent.pop_front();
                }
                r.recent.push_back(Added { sequence: seq, agency, from, to });
            }
        }
        self.release(seq, ctx);
    }
}

impl Handler<FollowEnded> for BetStore {
    type Result = ();

    /// The reader ended (it recreates itself on most faults): read on from the next message.
    fn handle(&mut self, FollowEnded(generation): FollowEnded, ctx: &mut Context<Self>) {
        if self.closed || self.js.as_ref().is_none_or(|r| r.generation != generation) {
            return;
        }
        warn!(self.log, "action: follow_stream | result: fail"; "error" => "the stream reader ended; following again");
        ctx.run_later(RESUBSCRIBE_AFTER, move |store, ctx| {
            if store.js.as_ref().is_some_and(|r| r.generation == generation) {
                store.subscribe(ctx);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays `(first, rows)` batches and Dones (`rows` 0, `first` the total)
    /// of one agency by the rule: the row indexes the view ends up with, and Done.
    fn replay(messages: &[(u64, u64)]) -> (Vec<u64>, bool) {
        let (mut view, mut done) = (Vec::new(), false);
        for &(first, rows) in messages {
            if rows == 0 {
                done |= done_counts(view.len() as u64, done, first);
                continue;
            }
            let payload: String = (first..first + rows).map(|i| format!("1,row{i}\n")).collect();
            if let Some((start, added)) = fresh_part(view.len() as u64, done, first, rows, payload.as_bytes()) {
                let fresh = &payload[start..];
                assert_eq!(fresh.lines().count() as u64, added);
                view.extend(fresh.lines().map(|l| l.trim_start_matches("1,row").parse::<u64>().unwrap()));
            }
        }
        (view, done)
    }

    #[test]
    fn the_view_takes_each_row_once_in_order_whatever_the_stream_repeats() {
        // In order; a resend with other boundaries overlapping the end; a copy of
        // rows held; a batch after a lost predecessor (a gap) adds nothing.
        let (view, done) = replay(&[(0, 3), (3, 2), (2, 4), (0, 3), (9, 2), (6, 1)]);
        assert_eq!((view, done), ((0..7).collect(), false));
        // A Done with the wrong total does not count; the right one does, and
        // nothing after it is taken.
        let (view, done) = replay(&[(0, 4), (5, 0), (4, 0), (4, 2)]);
        assert_eq!((view, done), ((0..4).collect(), true));
    }
}
