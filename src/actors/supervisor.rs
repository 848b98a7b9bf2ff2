//! Supervisor: turns SIGTERM/SIGINT into an ordered stop.
//!
//! 1. the listener stops accepting (the port closes);
//! 2. each connection finishes the message in hand and closes; its writer flushes;
//! 3. the store syncs and closes the file;
//! 4. the system stops and the process exits 0.
//!
//! Each step is bounded so the whole sequence ends within [`SHUTDOWN_BUDGET`].

use super::bet_store::{BetStore, CloseStore};
use super::listener::{CloseConnections, Listener, StopAccepting};
use actix::prelude::*;
use slog::{info, warn, Logger};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long connections get to finish before they are dropped.
pub const DRAIN_GRACE: Duration = Duration::from_millis(1000);
/// The promise: the whole shutdown ends within this.
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(2);

/// Start the ordered shutdown (`reason` is logged: `SIGTERM`, `SIGINT`, `request`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub reason: &'static str,
}

/// Owns the shutdown sequence. The signal task (or a test) sends it
/// [`Shutdown`]; it tells the Listener, then waits for the writers, then
/// closes the BetStore (synced) and stops the system.
pub struct Supervisor {
    /// Told to stop accepting, then to close every connection.
    listener: Addr<Listener>,
    /// Closed last (synced), before the system stops.
    store: Addr<BetStore>,
    /// Closes once every connection's writer has finished (taken by the shutdown).
    drain: Option<mpsc::Receiver<()>>,
    log: Logger,
}

impl Supervisor {
    pub fn new(listener: Addr<Listener>, store: Addr<BetStore>, drain: mpsc::Receiver<()>, log: Logger) -> Self {
        Supervisor { listener, store, drain: Some(drain), log }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Shutdown, _: &mut Context<Self>) -> Self::Result {
        let Some(mut drain) = self.drain.take() else {
            return Box::pin(async {}); // already shutting down
        };
        let (listener, store, log) = (self.listener.clone(), self.store.clone(), self.log.clone());
        info!(log, "action: shutdown | result: in_progress"; "reason" => msg.reason);
        Box::pin(async move {
            let _ = listener.send(StopAccepting).await;
            let open = listener.send(CloseConnections).await.unwrap_or(0);
            // Every writer holds a clone of the drain sender: `None` means all are done.
            match tokio::time::timeout(DRAIN_GRACE, drain.recv()).await {
                Ok(_) => {
                    info!(log, "action: close_connections | result: success"; "closed" => open)
                }
                Err(_) => warn!(log, "action: close_connections | result: fail"; "open" => open,
                    "error" => format!("peers still writing after {} ms; dropping them", DRAIN_GRACE.as_millis())),
            }
            let stored = tokio::time::timeout(Duration::from_millis(500), store.send(CloseStore)).await;
            let ok = matches!(stored, Ok(Ok(Ok(()))));
            if ok {
                info!(log, "action: shutdown | result: success");
            } else {
                warn!(log, "action: shutdown | result: fail"; "error" => "the store did not close cleanly");
            }
            System::current().stop_with_code(if ok { 0 } else { 1 });
        })
    }
}
