//! The server's actors. Each owns one piece of state and changes it only in its
//! own handlers, one message at a time, so no state needs a lock:
//!
//! - [`Listener`] owns the listening socket and the table of live connections.
//! - [`Connection`] owns one TCP peer: decodes frames, validates, talks to the others.
//! - [`AuthGuard`] owns the agencies' keys and the failed handshakes per address.
//! - [`BetStore`] owns the bets file and per-agency progress, on its own thread.
//! - [`DrawCoordinator`] owns the set of finished agencies and the draw's result.
//! - [`Supervisor`] owns the shutdown sequence.

pub mod auth_guard;
pub mod bet_store;
pub mod connection;
pub mod draw_coordinator;
pub mod listener;
pub mod supervisor;

pub use auth_guard::AuthGuard;
pub use bet_store::BetStore;
pub use connection::Connection;
pub use draw_coordinator::DrawCoordinator;
pub use listener::Listener;
pub use supervisor::Supervisor;
