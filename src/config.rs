//! Configuration of the server and the agency client: a YAML file, then
//! environment variables on top, then defaults.
//!
//! The file is flattened into dotted keys (`server.port`) so that each known key can
//! be checked and reported by name, and keys the program does not know (the course's
//! `loop.amount`, `SERVER_IP`, ...) become warnings instead of failures: existing
//! course config files keep working.
//!
//! - `source`: the flattened file plus the environment, and the value parsers.
//! - `server`: [`ServerConfig`]; `client`: [`ClientConfig`]; both are [`Settings`].
//! - `cli`: the command line both programs share (`--config`, `--help`, `--version`).

mod cli;
mod client;
mod server;
mod source;
mod tls;

pub use client::{ClientConfig, DEFAULT_BATCH_WINDOW};
pub use server::{NatsConfig, ServerAuth, ServerConfig, StorageBackend};
pub use source::{EnvLookup, Source};

use crate::auth::KeyFileError;
use slog::Level;
use std::fmt;
use std::path::{Path, PathBuf};

/// The most bets a batch may carry, whatever the configuration says.
pub const MAX_BATCH_AMOUNT: usize = 1000;

/// Where a configuration value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Env(&'static str),
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Default => write!(f, "default"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {} is not valid YAML: {source}", path.display())]
    Yaml { path: PathBuf, source: serde_yaml::Error },
    #[error("config file {} must be a YAML mapping of keys", .0.display())]
    NotAMapping(PathBuf),
    #[error("invalid value for {key} ({origin}): {value:?}: {reason}")]
    Invalid { key: &'static str, value: String, origin: Origin, reason: String },
    /// A list or a mapping in the file where the key takes one value.
    #[error("invalid value for {key} ({origin}): {found} where a single value belongs")]
    NotAScalar { key: &'static str, origin: Origin, found: &'static str },
    #[error("{key} is required: set the environment variable {var}")]
    Required { key: &'static str, var: &'static str },
    /// A secret that does not parse: the value is never repeated.
    #[error("invalid value for {key} ({origin}): {reason} (the value is secret and not shown)")]
    InvalidSecret { key: &'static str, origin: Origin, reason: String },
    #[error(
        "no agency keys: set SERVER_AUTH_KEYS (or auth.keys_path) to a file of agency,hexkey lines \
         (gen_compose and generar-compose.sh write one), or SERVER_AUTH=off for a local experiment"
    )]
    NoKeys,
    #[error("{0}")]
    Keys(#[from] KeyFileError),
    #[error("storage.chain_key (SERVER_CHAIN_KEY) {}: {reason}", path.display())]
    ChainKey { path: PathBuf, reason: String },
    #[error("key file {} has no key for agencies {missing} (server.agencies is {agencies})", path.display())]
    MissingKeys { path: PathBuf, missing: String, agencies: u32 },
    #[error("{0}")]
    Tls(#[from] crate::net::tls::TlsFileError),
    /// The NATS settings of the replicated backend do not fit together.
    #[error("{key} ({var}): {reason}")]
    Nats { key: &'static str, var: &'static str, reason: String },
    #[error("storage.nats_ca (SERVER_NATS_CA): {0}")]
    NatsCa(crate::net::tls::TlsFileError),
}

/// What both programs' configurations share: where they are read from, their
/// command line, and what they log at start.
pub trait Settings: Sized {
    /// The program's name, for `--help` and `--version`.
    const PROGRAM: &'static str;
    /// What the program does, in a sentence (`--help`).
    const ABOUT: &'static str;
    /// The environment variable that names the configuration file, like `--config`.
    const CONFIG_VAR: &'static str;
    /// The file read when none is named; it may be absent.
    const DEFAULT_PATH: &'static str;
    /// Every setting with its YAML key, environment variable and default (`--help`).
    const SETTINGS_HELP: &'static str;

    /// Reads the settings from `src`.
    fn read(src: &mut Source) -> Result<Self, ConfigError>;
    fn log_level(&self) -> Level;
    /// The whole effective configuration as log pairs (course names first).
    fn log_pairs(&self) -> Vec<(&'static str, String)>;

    /// Reads the settings; also returns the file's keys nobody asked for.
    fn from_source(src: &mut Source) -> Result<(Self, Vec<String>), ConfigError> {
        let settings = Self::read(src)?;
        Ok((settings, src.unknown_keys()))
    }

    /// Loads `config` (it must exist), else [`Self::DEFAULT_PATH`] when present,
    /// with the process environment on top.
    fn load(config: Option<PathBuf>) -> Result<(Self, Vec<String>), ConfigError> {
        Self::from_source(&mut Source::from_process(config, Path::new(Self::DEFAULT_PATH))?)
    }

    /// Reads the command line (`--config`, `--help`, `--version`; clap prints
    /// those, and a usage error with exit code 2) and loads.
    fn from_command_line() -> Result<(Self, Vec<String>), ConfigError> {
        Self::load(cli::config_path::<Self>())
    }
}

/// Turns a loaded configuration into a logger plus the `config` line, or logs
/// why it failed (`action: config | result: fail`) and gives the exit code 2.
///
/// The [`LogWriter`](crate::logging::LogWriter) owns the thread that writes the
/// log: finish it on every way out of the process, or the last lines may be lost.
pub fn start_logging<C: Settings>(
    loaded: Result<(C, Vec<String>), ConfigError>,
) -> Result<(C, slog::Logger, crate::logging::LogWriter), std::process::ExitCode> {
    match loaded {
        Ok((cfg, unknown)) => {
            let (log, writer) = crate::logging::root_with_writer(cfg.log_level());
            log_config(&log, &cfg.log_pairs(), &unknown);
            Ok((cfg, log, writer))
        }
        Err(e) => {
            // One line, then exit: written synchronously, nothing to finish.
            let log = crate::logging::root(Level::Info);
            slog::error!(log, "action: config | result: fail"; "error" => %e);
            Err(std::process::ExitCode::from(2))
        }
    }
}

/// Logs `action: config | result: success | k: v | ...` plus one warning per unknown key.
pub fn log_config(log: &slog::Logger, pairs: &[(&'static str, String)], unknown: &[String]) {
    let mut msg = String::from("action: config | result: success");
    for (k, v) in pairs {
        msg.push_str(" | ");
        msg.push_str(k);
        msg.push_str(": ");
        crate::logging::escape_value(v, &mut msg);
    }
    slog::info!(log, "{}", msg);
    for key in unknown {
        slog::warn!(log, "action: config | result: success"; "ignored_key" => key, "reason" => "unknown key");
    }
}

#[cfg(test)]
mod readme_tests;
