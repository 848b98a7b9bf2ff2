//! Lotería Nacional: agencies stream bets to a central server that runs the draw.
//!
//! # Layout
//! - [`bet`]: the domain (a bet, its validation, when it wins, a batch of valid
//!   bets inside their buffer); no I/O, and nothing of the wire.
//! - [`net`]: the binary protocol (frames, messages, codecs).
//! - [`auth`]: agency keys and the HMAC proof of the handshake.
//! - [`pki`]: the deployment's CA and the central's certificate (TLS).
//! - [`config`]: YAML + environment configuration of both programs, their command line.
//! - [`logging`]: the course's log-line format on slog.
//! - [`storage`]: the bets file (append, repair, streaming scan).
//! - [`actors`]: the server: Listener, Connection, BetStore, DrawCoordinator, Supervisor.
//! - [`server`]: boots the actor system on a bound listener.
//! - [`client`]: the agency: CSV reader, batcher, connection, backoff, run.
//! - [`datagen`]: deterministic synthetic agency files (and the tests' random generator).
//! - `simd` (x86_64): SSE2 loads, byte comparisons and one-bit-per-byte masks,
//!   shared by the agency's row scan and the server's bet checks and row rendering.

pub mod actors;
pub mod auth;
pub mod bet;
pub mod client;
pub mod config;
pub mod datagen;
pub mod logging;
pub mod net;
pub mod pki;
pub mod server;
#[cfg(target_arch = "x86_64")]
mod simd;
pub mod storage;

/// The course's port.
pub const DEFAULT_PORT: u16 = 12345;
