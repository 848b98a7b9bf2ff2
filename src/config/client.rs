//! One agency's settings.

use super::source::{parse_int, parse_log_level, parse_millis, parse_path, Source};
use super::{ConfigError, Origin, Settings, MAX_BATCH_AMOUNT};
use crate::auth::AuthKey;
use crate::bet::AgencyId;
use crate::logging::level_name;
use slog::Level;
use std::path::PathBuf;
use std::time::Duration;

const SETTINGS_HELP: &str = "\
Settings (YAML key, environment variable, default); the environment wins over the file:
  (no key)                  CLI_ID                      required: the agency's number
  server.address            CLI_SERVER_ADDRESS          server:12345
  data.path                 CLI_DATA_PATH               /data/agency-{id}.csv
  batch.maxAmount           CLI_BATCH_MAXAMOUNT         1000 (the most; a batch also ends at 8 kB)
  batch.window              CLI_BATCH_WINDOW            32
  retry.initial_delay_ms    CLI_RETRY_INITIAL_DELAY_MS  100
  retry.max_delay_ms        CLI_RETRY_MAX_DELAY_MS      2000
  retry.max_attempts        CLI_RETRY_MAX_ATTEMPTS      30
  log.level                 CLI_LOG_LEVEL               INFO
  auth.key                  CLI_AUTH_KEY                none (no handshake)
  tls.ca                    CLI_TLS_CA                  none (PEM CA: TLS 1.3 to the central, never plain)
  tls.server_name           CLI_TLS_SERVER_NAME         the host part of server.address
Single-bet mode (course exercise 5): NOMBRE, APELLIDO, DOCUMENTO, NACIMIENTO, NUMERO.";

/// One agency's settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub id: AgencyId,
    pub server_address: String,
    pub batch_max_amount: usize,
    pub data_path: PathBuf,
    pub log_level: Level,
    /// Batches sent before waiting for the oldest ack (1 = stop-and-wait).
    pub batch_window: usize,
    /// Reconnection backoff: first delay, cap, and consecutive failures allowed.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub retry_attempts: u32,
    /// This agency's key (`CLI_AUTH_KEY`); without one the agency skips the handshake.
    pub auth_key: Option<AuthKey>,
    /// The deployment CA (`CLI_TLS_CA`): with it the agency speaks TLS only.
    pub tls: Option<crate::net::tls::AgencyTls>,
}

/// The default pipelining window (chosen by measurement, see the README).
pub const DEFAULT_BATCH_WINDOW: usize = 32;

impl Settings for ClientConfig {
    const PROGRAM: &'static str = "client";
    const ABOUT: &'static str = "A Lotería Nacional agency: sends the bets of its CSV file to the central, \
        says it is done, and asks for its winners.";
    const CONFIG_VAR: &'static str = "CLI_CONFIG";
    const DEFAULT_PATH: &'static str = "config/client.yaml";
    const SETTINGS_HELP: &'static str = SETTINGS_HELP;

    fn read(src: &mut Source) -> Result<ClientConfig, ConfigError> {
        let id = match src.env("CLI_ID") {
            None => return Err(ConfigError::Required { key: "id", var: "CLI_ID" }),
            Some(v) => parse_int(1u32, u32::MAX)(v.trim()).map_err(|reason| ConfigError::Invalid {
                key: "id",
                value: v.clone(),
                origin: Origin::Env("CLI_ID"),
                reason,
            })?,
        };
        let server_address =
            src.get("server.address", Some("CLI_SERVER_ADDRESS"), "server:12345".to_string(), |s| {
                // Several addresses (replicas) are separated by commas; each must be whole.
                let whole = |a: &str| {
                    matches!(a.trim().rsplit_once(':'),
                        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok())
                };
                match s.split(',').all(whole) {
                    true => Ok(s.to_string()),
                    false => Err("expected HOST:PORT, or several separated by commas".to_string()),
                }
            })?;
        let batch_max_amount = src.get(
            "batch.maxAmount",
            Some("CLI_BATCH_MAXAMOUNT"),
            MAX_BATCH_AMOUNT,
            parse_int(1usize, MAX_BATCH_AMOUNT),
        )?;
        let data_path =
            src.get("data.path", Some("CLI_DATA_PATH"), PathBuf::from("/data/agency-{id}.csv"), parse_path)?;
        let data_path = PathBuf::from(data_path.to_string_lossy().replace("{id}", &id.to_string()));
        let log_level = src.get("log.level", Some("CLI_LOG_LEVEL"), Level::Info, parse_log_level)?;
        let batch_window =
            src.get("batch.window", Some("CLI_BATCH_WINDOW"), DEFAULT_BATCH_WINDOW, parse_int(1usize, 256))?;
        let retry_initial = src.get(
            "retry.initial_delay_ms",
            Some("CLI_RETRY_INITIAL_DELAY_MS"),
            Duration::from_millis(100),
            parse_millis,
        )?;
        let retry_max =
            src.get("retry.max_delay_ms", Some("CLI_RETRY_MAX_DELAY_MS"), Duration::from_secs(2), parse_millis)?;
        let retry_attempts =
            src.get("retry.max_attempts", Some("CLI_RETRY_MAX_ATTEMPTS"), 30, parse_int(0u32, 1_000_000))?;
        let auth_key = match src.raw("auth.key", Some("CLI_AUTH_KEY"))? {
            None => None,
            Some((value, origin)) => Some(AuthKey::from_hex(&value).map_err(|e| ConfigError::InvalidSecret {
                key: "auth.key",
                origin,
                reason: e.to_string(),
            })?),
        };
        let cfg = ClientConfig {
            id,
            server_address,
            batch_max_amount,
            data_path,
            log_level,
            batch_window,
            retry_initial,
            retry_max: retry_max.max(retry_initial),
            retry_attempts,
            auth_key,
            tls: super::tls::client(src)?,
        };
        Ok(cfg)
    }

    fn log_level(&self) -> Level {
        self.log_level
    }

    fn log_pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("client_id", self.id.to_string()),
            ("server_address", self.server_address.clone()),
            ("batch_max_amount", self.batch_max_amount.to_string()),
            ("log_level", level_name(self.log_level).to_string()),
            ("data_path", self.data_path.display().to_string()),
            ("batch_window", self.batch_window.to_string()),
            ("retry_initial_delay_ms", self.retry_initial.as_millis().to_string()),
            ("retry_max_delay_ms", self.retry_max.as_millis().to_string()),
            ("retry_max_attempts", self.retry_attempts.to_string()),
            ("auth_key", if self.auth_key.is_some() { "set" } else { "none" }.to_string()),
            ("tls_ca", self.tls.as_ref().map(|t| t.ca_path.display().to_string()).unwrap_or_else(|| "none".into())),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::source::env;

    #[test]
    fn the_server_address_may_list_replicas_each_whole() {
        let parse = |v: &str| {
            let mut src = Source::from_parts("", env(&[("CLI_ID", "1"), ("CLI_SERVER_ADDRESS", v)])).unwrap();
            ClientConfig::from_source(&mut src).map(|(cfg, _)| cfg.server_address).map_err(|e| e.to_string())
        };
        assert_eq!(parse("127.0.0.1:1,127.0.0.1:2").unwrap(), "127.0.0.1:1,127.0.0.1:2");
        for bad in ["a,b:1", "a:1,", "a:1,b:x", ":1"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("CLI_SERVER_ADDRESS") && err.contains("HOST:PORT"), "{bad}: {err}");
        }
    }

    #[test]
    fn client_needs_an_id_and_a_positive_batch() {
        let mut src = Source::from_parts("", env(&[])).unwrap();
        assert!(matches!(ClientConfig::from_source(&mut src), Err(ConfigError::Required { .. })));
        let mut src = Source::from_parts("batch:\n  maxAmount: 0\n", env(&[("CLI_ID", "2")])).unwrap();
        let err = ClientConfig::from_source(&mut src).unwrap_err().to_string();
        assert!(err.contains("batch.maxAmount") && err.contains("\"0\""), "{err}");
        let mut src = Source::from_parts("", env(&[("CLI_ID", "2"), ("CLI_DATA_PATH", "/x/agency-{id}.csv")])).unwrap();
        let (cfg, _) = ClientConfig::from_source(&mut src).unwrap();
        assert_eq!(cfg.data_path, PathBuf::from("/x/agency-2.csv"));
        assert_eq!(cfg.batch_max_amount, 1000);
        let mut src = Source::from_parts("", env(&[("CLI_ID", "0")])).unwrap();
        assert!(ClientConfig::from_source(&mut src).unwrap_err().to_string().contains("CLI_ID"));
    }

    #[test]
    fn the_agency_key_is_parsed_and_never_shown() {
        let secret = "c0ffee".repeat(10) + "abcd";
        let mut src = Source::from_parts("", env(&[("CLI_ID", "2"), ("CLI_AUTH_KEY", &secret)])).unwrap();
        let (cfg, _) = ClientConfig::from_source(&mut src).unwrap();
        assert_eq!(cfg.auth_key.as_ref().map(AuthKey::to_hex), Some(secret.clone()));
        let shown = format!("{cfg:?} {:?}", cfg.log_pairs());
        assert!(!shown.contains(&secret[..12]) && shown.contains("\"set\""), "{shown}");
        let bad = format!("{}xyz", &secret[..61]);
        let mut src = Source::from_parts("", env(&[("CLI_ID", "2"), ("CLI_AUTH_KEY", &bad)])).unwrap();
        let err = ClientConfig::from_source(&mut src).unwrap_err().to_string();
        assert!(err.contains("CLI_AUTH_KEY") && !err.contains(&bad[..12]), "{err}");
        let mut src = Source::from_parts("", env(&[("CLI_ID", "2")])).unwrap();
        assert!(ClientConfig::from_source(&mut src).unwrap().0.auth_key.is_none());
    }
}
