//! Configuration of the server and the agency client: a YAML file, then
//! environment variables on top, then defaults.
//!
//! The file is flattened into dotted keys (`server.port`) so that each known key can
//! be checked and reported by name, and keys the program does not know (the course's
//! `loop.amount`, `SERVER_IP`, ...) become warnings instead of failures: existing
//! course config files keep working.

use crate::auth::{AgencyKeys, AuthKey, KeyFileError};
use crate::bet::{AgencyId, MAX_NUMBER};
use crate::logging::{level_name, parse_level};
use slog::Level;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    #[error("{key} is required: set the environment variable {var}")]
    Required { key: &'static str, var: &'static str },
    #[error("{0}")]
    Usage(String),
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
    #[error("key file {} has no key for agencies {missing} (server.agencies is {agencies})", path.display())]
    MissingKeys { path: PathBuf, missing: String, agencies: u32 },
}

/// Looks up an environment variable (injectable for tests).
pub type EnvLookup = Box<dyn Fn(&str) -> Option<String>>;

/// The flattened file plus the environment, with provenance for every value.
pub struct Source {
    file: BTreeMap<String, String>,
    file_path: Option<PathBuf>,
    env: EnvLookup,
    used: std::collections::BTreeSet<String>,
}

impl Source {
    /// Reads `explicit` (must exist) or `default_path` (may be absent).
    pub fn load(explicit: Option<PathBuf>, default_path: &Path, env: EnvLookup) -> Result<Source, ConfigError> {
        let (path, must_exist) = match explicit {
            Some(p) => (p, true),
            None => (default_path.to_path_buf(), false),
        };
        if !path.exists() {
            if must_exist {
                return Err(ConfigError::Missing(path));
            }
            return Ok(Source { file: BTreeMap::new(), file_path: None, env, used: Default::default() });
        }
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        let file = flatten_yaml(&text).map_err(|e| match e {
            FlattenError::Yaml(source) => ConfigError::Yaml { path: path.clone(), source },
            FlattenError::NotAMapping => ConfigError::NotAMapping(path.clone()),
        })?;
        Ok(Source { file, file_path: Some(path), env, used: Default::default() })
    }

    /// An in-memory source (tests).
    pub fn from_parts(yaml: &str, env: EnvLookup) -> Result<Source, ConfigError> {
        let file = flatten_yaml(yaml).map_err(|_| ConfigError::NotAMapping(PathBuf::from("<memory>")))?;
        Ok(Source { file, file_path: Some(PathBuf::from("<memory>")), env, used: Default::default() })
    }

    /// The raw value of `key`: the env var wins over the file.
    fn raw(&mut self, key: &'static str, var: Option<&'static str>) -> Option<(String, Origin)> {
        self.used.insert(key.to_string());
        if let Some(var) = var {
            if let Some(v) = (self.env)(var) {
                return Some((v, Origin::Env(var)));
            }
        }
        let path = self.file_path.clone().unwrap_or_default();
        self.file.get(key).map(|v| (v.clone(), Origin::File(path)))
    }

    /// Parses `key` with `parse`, falling back to `default`.
    fn get<T>(
        &mut self,
        key: &'static str,
        var: Option<&'static str>,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.raw(key, var) {
            None => Ok(default),
            Some((value, origin)) => {
                parse(value.trim()).map_err(|reason| ConfigError::Invalid { key, value, origin, reason })
            }
        }
    }

    /// File keys that no `get` asked for: reported as warnings.
    fn unknown_keys(&self) -> Vec<String> {
        self.file.keys().filter(|k| !self.used.contains(k.as_str())).cloned().collect()
    }

    /// Reads an env var directly (keys that have no file form).
    fn env(&self, var: &str) -> Option<String> {
        (self.env)(var)
    }
}

enum FlattenError {
    Yaml(serde_yaml::Error),
    NotAMapping,
}

fn flatten_yaml(text: &str) -> Result<BTreeMap<String, String>, FlattenError> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(FlattenError::Yaml)?;
    let mut out = BTreeMap::new();
    match value {
        serde_yaml::Value::Null => {}
        serde_yaml::Value::Mapping(_) => flatten_into("", &value, &mut out),
        _ => return Err(FlattenError::NotAMapping),
    }
    Ok(out)
}

fn flatten_into(prefix: &str, value: &serde_yaml::Value, out: &mut BTreeMap<String, String>) {
    use serde_yaml::Value;
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                let k = match k {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => "<complex key>".to_string(),
                };
                let key = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
                flatten_into(&key, v, out);
            }
        }
        Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        Value::Number(n) => {
            out.insert(prefix.to_string(), n.to_string());
        }
        Value::Bool(b) => {
            out.insert(prefix.to_string(), b.to_string());
        }
        Value::Null => {
            out.insert(prefix.to_string(), String::new());
        }
        Value::Sequence(_) => {
            out.insert(prefix.to_string(), "<list>".to_string());
        }
        Value::Tagged(t) => flatten_into(prefix, &t.value, out),
    }
}

fn parse_int<T>(min: T, max: T) -> impl Fn(&str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    move |s: &str| {
        let v: T = s.parse().map_err(|_| format!("not an integer in {min}..={max}"))?;
        if v < min || v > max {
            return Err(format!("out of range {min}..={max}"));
        }
        Ok(v)
    }
}

fn parse_log_level(s: &str) -> Result<Level, String> {
    parse_level(s).ok_or_else(|| "unknown log level (use DEBUG, INFO, WARNING, ERROR or CRITICAL)".to_string())
}

fn parse_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("empty path".to_string());
    }
    Ok(PathBuf::from(s))
}

fn parse_millis(s: &str) -> Result<Duration, String> {
    parse_int(1u64, 86_400_000)(s).map(Duration::from_millis)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err("not a boolean (true/false)".to_string()),
    }
}

/// Picks the config path from `--config PATH` or the given env var.
pub fn config_path_from_args(
    args: &[String],
    env_var: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<PathBuf>, ConfigError> {
    let mut path = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--config" => match it.next() {
                Some(p) => path = Some(PathBuf::from(p)),
                None => return Err(ConfigError::Usage("--config needs a PATH".into())),
            },
            s if s.starts_with("--config=") => path = Some(PathBuf::from(&s["--config=".len()..])),
            other => return Err(ConfigError::Usage(format!("unknown argument {other:?} (usage: --config PATH)"))),
        }
    }
    Ok(path.or_else(|| env(env_var).map(PathBuf::from)))
}

/// How the central checks who its peers are.
#[derive(Debug, Clone)]
pub enum ServerAuth {
    /// Every agency proves its key before anything but `Echo` (the default).
    Keys { path: PathBuf, keys: AgencyKeys },
    /// `SERVER_AUTH=off`: anyone may speak for any agency (local experiments only).
    Off,
}

impl ServerAuth {
    fn from_source(src: &mut Source, agencies: u32) -> Result<ServerAuth, ConfigError> {
        let enabled = src.get("auth.enabled", Some("SERVER_AUTH"), true, parse_bool)?;
        let path = src.get("auth.keys_path", Some("SERVER_AUTH_KEYS"), None, |s| parse_path(s).map(Some))?;
        if !enabled {
            return Ok(ServerAuth::Off);
        }
        let path = path.ok_or(ConfigError::NoKeys)?;
        let keys = AgencyKeys::load(&path)?;
        let missing: Vec<String> = (1..=agencies).filter(|a| keys.get(*a).is_none()).map(|a| a.to_string()).collect();
        if !missing.is_empty() {
            let shown = if missing.len() > 10 {
                format!("{} and {} more", missing[..10].join(", "), missing.len() - 10)
            } else {
                missing.join(", ")
            };
            return Err(ConfigError::MissingKeys { path, missing: shown, agencies });
        }
        Ok(ServerAuth::Keys { path, keys })
    }
}

/// The central server's settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub port: u16,
    pub listen_backlog: u32,
    pub agencies: u32,
    pub storage_path: PathBuf,
    pub winning_number: u16,
    pub log_level: Level,
    /// Connections above this are refused with a Nack.
    pub max_connections: usize,
    /// A peer silent this long (or stuck mid-frame) is disconnected.
    pub idle_timeout: Duration,
    /// `true`: an ack waits for fsync; `false`: only for the OS page cache.
    pub durable: bool,
    pub auth: ServerAuth,
}

impl ServerConfig {
    pub fn from_source(src: &mut Source) -> Result<(ServerConfig, Vec<String>), ConfigError> {
        let mut cfg = ServerConfig {
            port: src.get("server.port", Some("SERVER_PORT"), crate::DEFAULT_PORT, parse_int(0u16, u16::MAX))?,
            listen_backlog: src.get(
                "server.listen_backlog",
                Some("SERVER_LISTEN_BACKLOG"),
                128,
                parse_int(1u32, 65_535),
            )?,
            agencies: src.get("server.agencies", Some("SERVER_AGENCIES"), 5, parse_int(0u32, 100_000))?,
            storage_path: src.get(
                "storage.path",
                Some("SERVER_STORAGE_PATH"),
                PathBuf::from("./bets.csv"),
                parse_path,
            )?,
            winning_number: src.get(
                "draw.winning_number",
                Some("SERVER_WINNING_NUMBER"),
                7574,
                parse_int(0u16, MAX_NUMBER),
            )?,
            log_level: src.get("log.level", Some("LOGGING_LEVEL"), Level::Info, parse_log_level)?,
            max_connections: src.get(
                "server.max_connections",
                Some("SERVER_MAX_CONNECTIONS"),
                4096,
                parse_int(1usize, 1_000_000),
            )?,
            idle_timeout: src.get(
                "server.idle_timeout_ms",
                Some("SERVER_IDLE_TIMEOUT_MS"),
                Duration::from_secs(60),
                parse_millis,
            )?,
            durable: src.get("storage.durable", Some("SERVER_STORAGE_DURABLE"), true, parse_bool)?,
            auth: ServerAuth::Off,
        };
        cfg.auth = ServerAuth::from_source(src, cfg.agencies)?;
        Ok((cfg, src.unknown_keys()))
    }

    /// Loads from the program's arguments and the process environment.
    pub fn load(args: &[String]) -> Result<(ServerConfig, Vec<String>), ConfigError> {
        let env = |k: &str| std::env::var(k).ok();
        let path = config_path_from_args(args, "SERVER_CONFIG", &env)?;
        let mut src = Source::load(path, Path::new("config/server.yaml"), Box::new(env))?;
        Self::from_source(&mut src)
    }

    /// The whole effective configuration as log pairs (course names first).
    pub fn log_pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("port", self.port.to_string()),
            ("listen_backlog", self.listen_backlog.to_string()),
            ("logging_level", level_name(self.log_level).to_string()),
            ("agencies", self.agencies.to_string()),
            ("storage_path", self.storage_path.display().to_string()),
            ("winning_number", self.winning_number.to_string()),
            ("max_connections", self.max_connections.to_string()),
            ("idle_timeout_ms", self.idle_timeout.as_millis().to_string()),
            ("durable", self.durable.to_string()),
            ("auth", if matches!(self.auth, ServerAuth::Off) { "off" } else { "on" }.to_string()),
            (
                "auth_keys",
                match &self.auth {
                    ServerAuth::Keys { path, keys } => format!("{} ({} agencies)", path.display(), keys.len()),
                    ServerAuth::Off => "-".to_string(),
                },
            ),
        ]
    }
}

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
}

/// The default pipelining window (chosen by measurement, see the README).
pub const DEFAULT_BATCH_WINDOW: usize = 32;

impl ClientConfig {
    pub fn from_source(src: &mut Source) -> Result<(ClientConfig, Vec<String>), ConfigError> {
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
        let batch_max_amount =
            src.get("batch.maxAmount", Some("CLI_BATCH_MAXAMOUNT"), 100, parse_int(1usize, MAX_BATCH_AMOUNT))?;
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
        let auth_key = match src.raw("auth.key", Some("CLI_AUTH_KEY")) {
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
        };
        Ok((cfg, src.unknown_keys()))
    }

    pub fn load(args: &[String]) -> Result<(ClientConfig, Vec<String>), ConfigError> {
        let env = |k: &str| std::env::var(k).ok();
        let path = config_path_from_args(args, "CLI_CONFIG", &env)?;
        let mut src = Source::load(path, Path::new("config/client.yaml"), Box::new(env))?;
        Self::from_source(&mut src)
    }

    pub fn log_pairs(&self) -> Vec<(&'static str, String)> {
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
        ]
    }
}

/// What both programs' configurations offer to start logging.
pub trait Logged {
    fn log_level(&self) -> Level;
    fn log_pairs(&self) -> Vec<(&'static str, String)>;
}

impl Logged for ServerConfig {
    fn log_level(&self) -> Level {
        self.log_level
    }
    fn log_pairs(&self) -> Vec<(&'static str, String)> {
        ServerConfig::log_pairs(self)
    }
}

impl Logged for ClientConfig {
    fn log_level(&self) -> Level {
        self.log_level
    }
    fn log_pairs(&self) -> Vec<(&'static str, String)> {
        ClientConfig::log_pairs(self)
    }
}

/// Turns a loaded configuration into a logger plus the `config` line, or logs
/// why it failed (`action: config | result: fail`) and gives the exit code 2.
pub fn start_logging<C: Logged>(
    loaded: Result<(C, Vec<String>), ConfigError>,
) -> Result<(C, slog::Logger), std::process::ExitCode> {
    match loaded {
        Ok((cfg, unknown)) => {
            let log = crate::logging::root(cfg.log_level());
            log_config(&log, &cfg.log_pairs(), &unknown);
            Ok((cfg, log))
        }
        Err(e) => {
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
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> EnvLookup {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Box::new(move |k| map.get(k).cloned())
    }

    #[test]
    fn server_defaults_apply_without_a_file() {
        let mut src = Source::from_parts("", env(&[("SERVER_AUTH", "off")])).unwrap();
        let (cfg, unknown) = ServerConfig::from_source(&mut src).unwrap();
        assert_eq!((cfg.port, cfg.listen_backlog, cfg.agencies, cfg.winning_number), (12345, 128, 5, 7574));
        assert_eq!(cfg.log_level, Level::Info);
        assert!(unknown.is_empty());
    }

    #[test]
    fn env_overrides_file_and_unknown_keys_are_reported() {
        let yaml =
            "server:\n  port: 1000\n  agencies: 3\nlog:\n  level: debug\nloop:\n  amount: 5\nSERVER_IP: server\n";
        let mut src = Source::from_parts(yaml, env(&[("SERVER_PORT", "2000"), ("SERVER_AUTH", "off")])).unwrap();
        let (cfg, unknown) = ServerConfig::from_source(&mut src).unwrap();
        assert_eq!((cfg.port, cfg.agencies, cfg.log_level), (2000, 3, Level::Debug));
        assert_eq!(unknown, vec!["SERVER_IP".to_string(), "loop.amount".to_string()]);
    }

    #[test]
    fn bad_values_name_the_key_and_value() {
        let mut src = Source::from_parts("server:\n  port: lots\n", env(&[])).unwrap();
        let err = ServerConfig::from_source(&mut src).unwrap_err().to_string();
        assert!(err.contains("server.port") && err.contains("lots"), "{err}");
        let mut src = Source::from_parts("log:\n  level: chatty\n", env(&[])).unwrap();
        let err = ServerConfig::from_source(&mut src).unwrap_err().to_string();
        assert!(err.contains("log.level") && err.contains("chatty"), "{err}");
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
        assert_eq!(cfg.batch_max_amount, 100);
        let mut src = Source::from_parts("", env(&[("CLI_ID", "0")])).unwrap();
        assert!(ClientConfig::from_source(&mut src).unwrap_err().to_string().contains("CLI_ID"));
    }

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
    fn the_server_needs_keys_for_every_agency_unless_auth_is_off() {
        let dir = tempfile::tempdir().unwrap();
        let err = ServerConfig::from_source(&mut Source::from_parts("", env(&[])).unwrap()).unwrap_err();
        assert!(matches!(err, ConfigError::NoKeys), "{err}");
        assert!(err.to_string().contains("SERVER_AUTH_KEYS") && err.to_string().contains("SERVER_AUTH=off"));
        let off = ServerConfig::from_source(&mut Source::from_parts("", env(&[("SERVER_AUTH", "off")])).unwrap());
        assert!(matches!(off.unwrap().0.auth, ServerAuth::Off));

        let path = dir.path().join("keys.csv");
        let keys = AgencyKeys::generate(3).unwrap();
        keys.write(&path).unwrap();
        let p = path.display().to_string();
        let src = |agencies: &str| {
            Source::from_parts(&format!("auth:\n  keys_path: {p}\n"), env(&[("SERVER_AGENCIES", agencies)])).unwrap()
        };
        let (cfg, unknown) = ServerConfig::from_source(&mut src("3")).unwrap();
        assert!(unknown.is_empty());
        assert!(matches!(&cfg.auth, ServerAuth::Keys { keys: k, .. } if *k == keys));
        let line = cfg.log_pairs().iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(" | ");
        assert!(line.contains("auth: on") && line.contains("(3 agencies)"), "{line}");
        let debug = format!("{cfg:?}");
        for agency in 1..=3 {
            let hex = keys.get(agency).unwrap().to_hex();
            assert!(!line.contains(&hex[..12]) && !debug.contains(&hex[..12]), "a key leaked");
        }
        let err = ServerConfig::from_source(&mut src("5")).unwrap_err().to_string();
        assert!(err.contains("no key for agencies 4, 5") && err.contains(&p), "{err}");

        std::fs::write(&path, "1,00\n").unwrap();
        let err = ServerConfig::from_source(&mut src("1")).unwrap_err().to_string();
        assert!(err.contains(&format!("{p}:1:")), "{err}");
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

    #[test]
    fn named_config_file_must_exist() {
        let err = Source::load(Some("/nonexistent/x.yaml".into()), Path::new("config/server.yaml"), env(&[]));
        assert!(matches!(err, Err(ConfigError::Missing(_))));
    }
}
