//! The central server's settings.

use super::source::{parse_bool, parse_int, parse_log_level, parse_millis, parse_path, Source};
use super::{ConfigError, Settings};
use crate::auth::AgencyKeys;
use crate::bet::MAX_NUMBER;
use crate::logging::level_name;
use crate::storage::ChainKey;
use slog::Level;
use std::path::PathBuf;
use std::time::Duration;

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

/// Where the store keeps the bets: one local file, or a NATS JetStream stream
/// that several servers share (docs/design.md, "Replicas").
#[derive(Debug, Clone)]
pub enum StorageBackend {
    File,
    JetStream(NatsConfig),
}

/// How the replicated store reaches its NATS cluster.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://` or `tls://` URLs of the cluster's nodes (any of them will do).
    pub urls: Vec<String>,
    /// The CA the nodes' certificates must chain to; with it the link requires TLS.
    pub ca: Option<crate::net::tls::AgencyTls>,
    /// The stream's name, the prefix of its subjects (`<stream>.bets.<agency>`).
    pub stream: String,
}

/// A stream name NATS takes as one subject token: letters, digits, `-` and `_`.
fn parse_stream(s: &str) -> Result<String, String> {
    let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| s.to_string()).ok_or_else(|| "a stream name is 1..=64 letters, digits, '-' or '_'".to_string())
}

/// Comma-separated `nats://HOST:PORT`, `tls://HOST:PORT` or `HOST:PORT` (plain
/// unless a CA is set) URLs (empty: none).
fn parse_urls(s: &str) -> Result<Vec<String>, String> {
    let urls: Vec<String> = s.split(',').map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect();
    for url in &urls {
        let rest = url.strip_prefix("nats://").or_else(|| url.strip_prefix("tls://")).unwrap_or(url);
        let host_port = rest.rsplit_once(':');
        let whole = host_port.is_some_and(|(h, p)| !h.is_empty() && !h.contains('/') && p.parse::<u16>().is_ok());
        if !whole {
            return Err(format!("{url:?} is not nats://HOST:PORT, tls://HOST:PORT or HOST:PORT"));
        }
    }
    if urls.len() > 32 {
        return Err("at most 32 URLs".into());
    }
    Ok(urls)
}

const SETTINGS_HELP: &str = "\
Settings (YAML key, environment variable, default); the environment wins over the file:
  server.port              SERVER_PORT              12345
  server.listen_backlog    SERVER_LISTEN_BACKLOG    128
  server.agencies          SERVER_AGENCIES          5
  server.max_connections   SERVER_MAX_CONNECTIONS   4096
  server.idle_timeout_ms   SERVER_IDLE_TIMEOUT_MS   60000
  storage.path             SERVER_STORAGE_PATH      ./bets.csv
  storage.durable          SERVER_STORAGE_DURABLE   true (an ack waits for fdatasync)
  storage.chain_key        SERVER_CHAIN_KEY         none (a file of 64 hex digits: the sync groups are chained
                                                    with it and the sorteo line carries the head; without it,
                                                    CRC32C checks only; never beside the store)
  storage.integrity        SERVER_STORAGE_INTEGRITY true (false: no sidecar, the benchmark's baseline only)
  storage.backend          SERVER_STORAGE_BACKEND   file (jetstream: replicas share a NATS JetStream stream;
                                                    storage.path is then each replica's local view of it)
  storage.nats_urls        SERVER_NATS_URLS         none (comma-separated nats:// or tls:// URLs; required with jetstream)
  storage.nats_ca          SERVER_NATS_CA           none (PEM CA of the NATS nodes' certificates: TLS required)
  storage.stream           SERVER_NATS_STREAM       bets (the stream's name and its subjects' prefix)
  draw.winning_number      SERVER_WINNING_NUMBER    7574
  log.level                LOGGING_LEVEL            INFO
  auth.enabled             SERVER_AUTH              true (off: no handshake, local experiments only)
  auth.keys_path           SERVER_AUTH_KEYS         none (required while auth is on)
  server.tls.cert          SERVER_TLS_CERT          none (PEM chain; with the key: TLS 1.3 on the port)
  server.tls.key           SERVER_TLS_KEY           none (PEM private key of the certificate)";

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
    /// The certificate and key the port speaks TLS with; `None`: plain TCP.
    pub tls: Option<crate::net::tls::ServerTls>,
    /// The chain key's file and the key (`None`: CRC32C checks only, no head).
    pub chain_key: Option<(PathBuf, std::sync::Arc<ChainKey>)>,
    /// `false`: no sidecar at all (the benchmark's baseline).
    pub integrity: bool,
    /// One local file (the default) or a shared JetStream stream.
    pub backend: StorageBackend,
}

impl Settings for ServerConfig {
    const PROGRAM: &'static str = "server";
    const ABOUT: &'static str = "The Lotería Nacional central: stores the agencies' bets, runs the draw \
        once every agency is done, and answers each agency with its own winners.";
    const CONFIG_VAR: &'static str = "SERVER_CONFIG";
    const DEFAULT_PATH: &'static str = "config/server.yaml";
    const SETTINGS_HELP: &'static str = SETTINGS_HELP;

    fn read(src: &mut Source) -> Result<ServerConfig, ConfigError> {
        let mut cfg = ServerConfig {
            port: src.get("server.port", Some("SERVER_PORT"), crate::DEFAULT_PORT, parse_int(0u16, u16::MAX))?,
            listen_backlog: src.get(
                "server.listen_backlog",
                Some("SERVER_LISTEN_BACKLOG"),
                128,
                parse_int(1u32, 65_535),
            )?,
            agencies: src.get("server.agencies", Some("SERVER_AGENCIES"), 5, parse_int(1u32, 100_000))?,
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
            tls: None,
            chain_key: None,
            integrity: src.get("storage.integrity", Some("SERVER_STORAGE_INTEGRITY"), true, parse_bool)?,
            backend: StorageBackend::File,
        };
        cfg.backend = read_backend(src)?;
        cfg.auth = ServerAuth::from_source(src, cfg.agencies)?;
        cfg.tls = super::tls::server(src)?;
        // Empty means none (an environment that must override a file's key).
        let key_path = src.get("storage.chain_key", Some("SERVER_CHAIN_KEY"), None, |s| match s {
            "" => Ok(None),
            s => parse_path(s).map(Some),
        })?;
        if let Some(path) = key_path {
            let dir = |p: &std::path::Path| {
                let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
                std::fs::canonicalize(parent).ok()
            };
            if dir(&path).is_some() && dir(&path) == dir(&cfg.storage_path) {
                return Err(ConfigError::ChainKey {
                    path,
                    reason: "the chain key must not sit beside the store it seals".into(),
                });
            }
            let key = ChainKey::load(&path).map_err(|reason| ConfigError::ChainKey { path: path.clone(), reason })?;
            cfg.chain_key = Some((path, std::sync::Arc::new(key)));
        }
        Ok(cfg)
    }

    fn log_level(&self) -> Level {
        self.log_level
    }

    fn log_pairs(&self) -> Vec<(&'static str, String)> {
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
            ("chain_key", self.chain_key.as_ref().map_or("-".to_string(), |(path, _)| path.display().to_string())),
            ("integrity", self.integrity.to_string()),
            (
                "backend",
                match &self.backend {
                    StorageBackend::File => "file".to_string(),
                    StorageBackend::JetStream(n) => format!(
                        "jetstream (stream {}, {}, {})",
                        n.stream,
                        n.urls.join(","),
                        n.ca.as_ref().map_or("no TLS".to_string(), |ca| format!("CA {}", ca.ca_path.display()))
                    ),
                },
            ),
            ("auth", if matches!(self.auth, ServerAuth::Off) { "off" } else { "on" }.to_string()),
            (
                "auth_keys",
                match &self.auth {
                    ServerAuth::Keys { path, keys } => format!("{} ({} agencies)", path.display(), keys.len()),
                    ServerAuth::Off => "-".to_string(),
                },
            ),
            (
                "tls",
                match &self.tls {
                    Some(tls) => format!("on ({}, {})", tls.cert_path.display(), tls.key_path.display()),
                    None => "off".to_string(),
                },
            ),
        ]
    }
}

/// The backend and, for JetStream, its NATS settings (all read always, so
/// `--help` and the README name every one).
fn read_backend(src: &mut Source) -> Result<StorageBackend, ConfigError> {
    let jetstream = src.get("storage.backend", Some("SERVER_STORAGE_BACKEND"), false, |s| match s {
        "file" => Ok(false),
        "jetstream" => Ok(true),
        _ => Err("expected file or jetstream".to_string()),
    })?;
    let urls = src.get("storage.nats_urls", Some("SERVER_NATS_URLS"), Vec::new(), parse_urls)?;
    let ca = src.get("storage.nats_ca", Some("SERVER_NATS_CA"), None, |s| match s {
        "" => Ok(None),
        s => parse_path(s).map(Some),
    })?;
    let stream = src.get("storage.stream", Some("SERVER_NATS_STREAM"), "bets".to_string(), parse_stream)?;
    if !jetstream {
        return Ok(StorageBackend::File);
    }
    if urls.is_empty() {
        return Err(ConfigError::Nats {
            key: "storage.nats_urls",
            var: "SERVER_NATS_URLS",
            reason: "required with storage.backend: jetstream (e.g. tls://nats1:4222,tls://nats2:4222)".into(),
        });
    }
    let ca = match ca {
        Some(path) => Some(crate::net::tls::AgencyTls::load(&path, None).map_err(ConfigError::NatsCa)?),
        None => None,
    };
    Ok(StorageBackend::JetStream(NatsConfig { urls, ca, stream }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::source::env;

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
    fn zero_agencies_is_an_error_from_the_file_and_the_environment() {
        let mut src = Source::from_parts("server:\n  agencies: 0\n", env(&[("SERVER_AUTH", "off")])).unwrap();
        let err = ServerConfig::from_source(&mut src).unwrap_err().to_string();
        assert!(err.contains("server.agencies") && err.contains("\"0\"") && err.contains("1..="), "{err}");
        let mut src = Source::from_parts("", env(&[("SERVER_AGENCIES", "0"), ("SERVER_AUTH", "off")])).unwrap();
        let err = ServerConfig::from_source(&mut src).unwrap_err().to_string();
        assert!(err.contains("server.agencies") && err.contains("SERVER_AGENCIES"), "{err}");
        let mut src = Source::from_parts("", env(&[("SERVER_AGENCIES", "1"), ("SERVER_AUTH", "off")])).unwrap();
        assert_eq!(ServerConfig::from_source(&mut src).unwrap().0.agencies, 1);
    }

    #[test]
    fn the_jetstream_backend_needs_urls_and_a_readable_ca() {
        let get = |pairs: &[(&'static str, &'static str)]| {
            let mut all = vec![("SERVER_AUTH", "off")];
            all.extend_from_slice(pairs);
            ServerConfig::from_source(&mut Source::from_parts("", env(&all)).unwrap()).map(|(cfg, _)| cfg)
        };
        assert!(matches!(get(&[]).unwrap().backend, StorageBackend::File));
        let err = get(&[("SERVER_STORAGE_BACKEND", "etcd")]).unwrap_err().to_string();
        assert!(err.contains("storage.backend") && err.contains("etcd"), "{err}");
        let err = get(&[("SERVER_STORAGE_BACKEND", "jetstream")]).unwrap_err().to_string();
        assert!(err.contains("storage.nats_urls") && err.contains("SERVER_NATS_URLS"), "{err}");
        let err = get(&[("SERVER_STORAGE_BACKEND", "jetstream"), ("SERVER_NATS_URLS", "http://nats1")]).unwrap_err();
        assert!(err.to_string().contains("\"http://nats1\" is not nats://"), "{err}");
        let bare = get(&[("SERVER_STORAGE_BACKEND", "jetstream"), ("SERVER_NATS_URLS", "nats1:4222")]);
        assert!(matches!(bare.unwrap().backend, StorageBackend::JetStream(_)));
        let err = get(&[("SERVER_NATS_STREAM", "a.b")]).unwrap_err().to_string();
        assert!(err.contains("storage.stream") && err.contains("a.b"), "{err}");
        let urls = "tls://nats1:4222, tls://nats2:4222,tls://nats3:4222";
        let missing = "/nonexistent/nats-ca.pem";
        let err =
            get(&[("SERVER_STORAGE_BACKEND", "jetstream"), ("SERVER_NATS_URLS", urls), ("SERVER_NATS_CA", missing)]);
        let err = err.unwrap_err().to_string();
        assert!(err.contains("storage.nats_ca") && err.contains(missing), "{err}");
        let cfg =
            get(&[("SERVER_STORAGE_BACKEND", "jetstream"), ("SERVER_NATS_URLS", urls), ("SERVER_NATS_STREAM", "d7")]);
        let StorageBackend::JetStream(nats) = cfg.unwrap().backend else { panic!("not jetstream") };
        assert_eq!(nats.urls, ["tls://nats1:4222", "tls://nats2:4222", "tls://nats3:4222"]);
        assert_eq!((nats.stream.as_str(), nats.ca.is_none()), ("d7", true));
    }

    #[test]
    fn a_list_where_the_storage_path_belongs_is_an_error() {
        let mut src = Source::from_parts("storage:\n  path: [a, b]\n", env(&[("SERVER_AUTH", "off")])).unwrap();
        let err = ServerConfig::from_source(&mut src).unwrap_err();
        assert!(matches!(err, ConfigError::NotAScalar { key: "storage.path", .. }), "{err}");
        let mut src = Source::from_parts("server:\n  port:\n    a: 1\n", env(&[("SERVER_AUTH", "off")])).unwrap();
        let err = ServerConfig::from_source(&mut src).unwrap_err().to_string();
        assert!(err.contains("server.port") && err.contains("a mapping"), "{err}");
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
}
