//! Lotería Nacional: agencies stream bets to a central server that runs the draw.
//!
//! # Layout
//! - [`bet`]: the domain (a bet, its validation, when it wins); no I/O.
//! - [`net`]: the binary protocol (frames, messages, codecs).
//! - [`config`]: YAML + environment configuration of both programs.
//! - [`logging`]: the course's log-line format on slog.
//! - [`storage`]: the bets file (append, repair, streaming scan).
//! - [`actors`]: the server: Listener, Connection, BetStore, DrawCoordinator, Supervisor.
//! - [`server`]: boots the actor system on a bound listener.
//! - [`client`]: the agency: CSV to batches, done, winners.
//! - [`datagen`]: deterministic synthetic agency files.

pub mod actors;
pub mod auth;
pub mod bet;
pub mod client;
pub mod config;
pub mod datagen;
pub mod logging;
pub mod net;
pub mod server;
pub mod storage;

/// The course's port.
pub const DEFAULT_PORT: u16 = 12345;
