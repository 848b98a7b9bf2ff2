//! Boots the server's actors in order on an already bound listener, and wires
//! SIGTERM/SIGINT to the supervisor.
//!
//! Binding happens in the caller so tests can pass a port-0 listener and the
//! binary can apply the configured backlog.

use crate::actors::bet_store::{DoneAgencies, NotifyDone};
use crate::actors::connection::ConnectionDeps;
use crate::actors::supervisor::Shutdown;
use crate::actors::{AuthGuard, BetStore, DrawCoordinator, Listener, Supervisor};
use crate::config::{ServerAuth, ServerConfig, StorageBackend};
use crate::storage::{plain, StorageError, StoreSpec};
use actix::prelude::*;
use slog::Logger;
use std::io;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot listen on port {port}: {source}")]
    Bind { port: u16, source: io::Error },
    #[error("cannot open the bets store: {0}")]
    Store(#[from] StorageError),
    #[error("{0}")]
    Nats(#[from] crate::storage::jetstream::NatsError),
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    #[error("actor system: {0}")]
    Mailbox(#[from] MailboxError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Addresses of the running server's actors.
#[derive(Clone)]
pub struct ServerHandle {
    pub address: SocketAddr,
    pub supervisor: Addr<Supervisor>,
    pub coordinator: Addr<DrawCoordinator>,
    pub store: Addr<BetStore>,
}

impl BootError {
    /// The exit code: 3 when the store failed its checks, 4 when NATS could not
    /// be reached or its stream not made, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            BootError::Store(StorageError::Corrupt { .. }) => STORE_FAILED_CHECKS,
            BootError::Nats(_) => NATS_UNREACHABLE,
            _ => 1,
        }
    }
}

/// The server's exit code when the store fails its open-time checks (configuration errors exit 2).
pub const STORE_FAILED_CHECKS: u8 = 3;
/// The server's exit code when the replicated store's NATS cluster cannot be reached at start.
pub const NATS_UNREACHABLE: u8 = 4;

impl ServerHandle {
    /// The same ordered stop that SIGTERM triggers.
    pub async fn shutdown(&self) {
        let _ = self.supervisor.send(Shutdown { reason: "request" }).await;
    }
}

/// Binds `0.0.0.0:port` with the given backlog (must run inside the runtime).
pub fn bind(port: u16, backlog: u32) -> Result<TcpListener, BootError> {
    let err = |source| BootError::Bind { port, source };
    let socket = TcpSocket::new_v4().map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(SocketAddr::from(([0, 0, 0, 0], port))).map_err(err)?;
    socket.listen(backlog).map_err(err)
}

/// Starts store, coordinator, listener and supervisor, in that order.
pub async fn start(listener: TcpListener, cfg: &ServerConfig, log: Logger) -> Result<ServerHandle, BootError> {
    let address = listener.local_addr()?;
    let spec = StoreSpec {
        agencies: cfg.agencies,
        key: cfg.chain_key.as_ref().map(|(_, key)| key.clone()),
        sidecar: cfg.integrity,
    };
    match (&spec.key, spec.sidecar) {
        (_, false) => slog::warn!(log, "action: integrity | result: fail"; "mode" => "off",
            "warning" => "SERVER_STORAGE_INTEGRITY=false: no sidecar, no checksums, no chain (benchmark baseline only)"),
        (None, true) => slog::warn!(log, "action: integrity | result: success"; "mode" => "crc32c",
            "warning" => "no chain key (storage.chain_key / SERVER_CHAIN_KEY): groups are checksummed, not chained; the sorteo line carries no head"),
        (Some(_), true) => slog::info!(log, "action: integrity | result: success"; "mode" => "chained"),
    }
    let bet_store = match &cfg.backend {
        StorageBackend::File => {
            BetStore::open_checked(cfg.storage_path.clone(), cfg.durable, spec, plain(), log.clone())?
        }
        StorageBackend::JetStream(nats) => {
            let link = crate::storage::jetstream::connect(nats, &log).await?;
            BetStore::open_replicated(cfg.storage_path.clone(), spec, link, log.clone())?
        }
    };
    // The store gets a thread of its own: disk waits never stall the network actors.
    let store_thread = Arbiter::new();
    let store = BetStore::start_in_arbiter(&store_thread.handle(), move |_| bet_store);
    let already_done = store.send(DoneAgencies).await?;
    let coordinator =
        DrawCoordinator::new(cfg.agencies, cfg.winning_number, already_done, store.clone(), log.clone()).start();
    // The store tells the coordinator about each Done itself (before any connection exists).
    store.send(NotifyDone(coordinator.clone().recipient())).await?;
    let (drain_tx, drain_rx) = mpsc::channel(1);
    let deps = ConnectionDeps {
        store: store.clone(),
        coordinator: coordinator.clone(),
        agencies: cfg.agencies,
        idle_timeout: cfg.idle_timeout,
        log: log.clone(),
        auth: match &cfg.auth {
            ServerAuth::Keys { keys, .. } => Some(AuthGuard::new(keys.clone()).start()),
            ServerAuth::Off => None,
        },
        tls: cfg.tls.clone(),
    };
    match &cfg.tls {
        Some(tls) => slog::info!(log, "action: tls | result: success"; "mode" => "TLS 1.3",
            "cert" => %tls.cert_path.display(), "plain_peers" => "Echo only"),
        None => slog::warn!(log, "action: tls | result: success"; "mode" => "off",
            "warning" => "no server.tls.cert/server.tls.key: links to the agencies are not encrypted"),
    }
    let listener = Listener::new(listener, cfg.max_connections, deps, drain_tx, log.clone())?.start();
    let supervisor = Supervisor::new(listener, store.clone(), drain_rx, log).start();
    Ok(ServerHandle { address, supervisor, coordinator, store })
}

/// Sends [`Shutdown`] to the supervisor on the first SIGTERM or SIGINT.
pub fn handle_signals(supervisor: Addr<Supervisor>) -> Result<(), BootError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(BootError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(BootError::Signals)?;
    actix::spawn(async move {
        let reason = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        supervisor.do_send(Shutdown { reason });
    });
    Ok(())
}
