//! The replicated backend's reading side: following the stream from the first
//! message the view lacks, and applying each message to the view by the rule
//! every replica shares (see the parent module).

use super::*;
use crate::storage::jetstream::Entry;
use async_nats::jetstream::Message as JsMessage;
use futures_util::StreamExt;

/// One item of the stream reader, forwarded into the mailbox in stream order.
#[derive(Message)]
#[rtype(result = "()")]
struct Follow(Result<JsMessage, push::OrderedError>);

/// The stream reader ended.
#[derive(Message)]
#[rtype(result = "()")]
struct FollowEnded;

impl BetStore {
    pub(super) fn subscribe(&mut self, ctx: &mut Context<Self>) {
        let Some(r) = self.js.as_ref() else { return };
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
            Ok(mut messages) => {
                info!(store.log, "action: follow_stream | result: success"; "from_sequence" => start);
                let addr = ctx.address();
                let follower = actix::spawn(async move {
                    while let Some(item) = messages.next().await {
                        // Waiting for each answer keeps the mailbox bounded.
                        if addr.send(Follow(item)).await.is_err() {
                            return;
                        }
                    }
                    addr.do_send(FollowEnded);
                });
                if let Some(r) = store.js.as_mut() {
                    r.follower = Some(follower);
                }
            }
            Err(e) => {
                warn!(store.log, "action: follow_stream | result: fail"; "from_sequence" => start, "error" => e);
                ctx.run_later(RESUBSCRIBE_AFTER, |store, ctx| store.subscribe(ctx));
            }
        }));
    }

    /// Applies one stream message to the view; returns the rows it added.
    fn apply(&mut self, entry: Entry) -> u32 {
        match entry {
            Entry::Bets { agency, first, rows, payload } => {
                let p = self.progress.entry(agency).or_default();
                if p.done || first > p.written || first + rows <= p.written {
                    return 0;
                }
                let skip = (p.written - first) as usize;
                let start = if skip == 0 {
                    0
                } else {
                    memchr::memchr_iter(b'\n', &payload).nth(skip - 1).map_or(payload.len(), |at| at + 1)
                };
                let fresh = &payload[start..];
                let at = p.written;
                let Some(file) = self.file.as_mut() else { return 0 };
                if let Err(e) = file.append_rendered(fresh) {
                    let e = StoreError::from(e);
                    error!(self.log, "action: apply_stream | result: fail"; "error" => %e);
                    if let Some(r) = self.js.as_mut() {
                        r.failed = Some(e);
                    }
                    return 0;
                }
                self.fence.applied_rows(agency, at, fresh);
                let added = rows - skip as u64;
                p.written += added;
                p.synced = p.written;
                self.appends += 1;
                added as u32
            }
            Entry::Done { agency, total } => {
                let p = self.progress.entry(agency).or_default();
                if !p.done && p.written == total {
                    p.done = true;
                    if let Some(coordinator) = &self.coordinator {
                        coordinator.do_send(AgencyDone { agency });
                    }
                }
                0
            }
        }
    }
}

impl Handler<Follow> for BetStore {
    type Result = ();

    fn handle(&mut self, Follow(item): Follow, ctx: &mut Context<Self>) {
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
                0
            }
        };
        if let Some(r) = self.js.as_mut() {
            r.applied = seq;
            if r.recent.len() == RECENT {
                r.recent.pop_front();
            }
            r.recent.push_back((seq, added));
        }
        self.release(seq, ctx);
    }
}

impl Handler<FollowEnded> for BetStore {
    type Result = ();

    /// The reader ended (it recreates itself on most faults): read on from the next message.
    fn handle(&mut self, _: FollowEnded, ctx: &mut Context<Self>) {
        if self.closed {
            return;
        }
        warn!(self.log, "action: follow_stream | result: fail"; "error" => "the stream reader ended; following again");
        ctx.run_later(RESUBSCRIBE_AFTER, |store, ctx| store.subscribe(ctx));
    }
}
