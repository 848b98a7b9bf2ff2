//! The configuration file flattened into dotted keys plus the environment,
//! with where each value came from, and the parsers of its values.

use super::{ConfigError, Origin};
use crate::logging::parse_level;
use slog::Level;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Looks up an environment variable (injectable for tests).
pub type EnvLookup = Box<dyn Fn(&str) -> Option<String>>;

/// The flattened file plus the environment, with provenance for every value.
pub struct Source {
    file: BTreeMap<String, String>,
    file_path: Option<PathBuf>,
    lookup: EnvLookup,
    used: std::collections::BTreeSet<String>,
    /// Every (key, variable) the settings asked for, `-` where there is none:
    /// what the README's configuration tables are checked against.
    asked: std::collections::BTreeSet<(String, String)>,
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
            return Ok(Source {
                file: BTreeMap::new(),
                file_path: None,
                lookup: env,
                used: Default::default(),
                asked: Default::default(),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        let file = flatten_yaml(&text).map_err(|e| match e {
            FlattenError::Yaml(source) => ConfigError::Yaml { path: path.clone(), source },
            FlattenError::NotAMapping => ConfigError::NotAMapping(path.clone()),
        })?;
        Ok(Source { file, file_path: Some(path), lookup: env, used: Default::default(), asked: Default::default() })
    }

    /// Reads `explicit` (must exist) or `default_path` (may be absent), with the
    /// process environment on top.
    pub fn from_process(explicit: Option<PathBuf>, default_path: &Path) -> Result<Source, ConfigError> {
        Source::load(explicit, default_path, Box::new(|k: &str| std::env::var(k).ok()))
    }

    /// An in-memory source (tests).
    pub fn from_parts(yaml: &str, env: EnvLookup) -> Result<Source, ConfigError> {
        let file = flatten_yaml(yaml).map_err(|_| ConfigError::NotAMapping(PathBuf::from("<memory>")))?;
        Ok(Source {
            file,
            file_path: Some(PathBuf::from("<memory>")),
            lookup: env,
            used: Default::default(),
            asked: Default::default(),
        })
    }

    /// The raw value of `key`: the env var wins over the file.
    pub(super) fn raw(&mut self, key: &'static str, var: Option<&'static str>) -> Option<(String, Origin)> {
        self.used.insert(key.to_string());
        self.asked.insert((key.to_string(), var.unwrap_or("-").to_string()));
        if let Some(var) = var {
            if let Some(v) = (self.lookup)(var) {
                return Some((v, Origin::Env(var)));
            }
        }
        let path = self.file_path.clone().unwrap_or_default();
        self.file.get(key).map(|v| (v.clone(), Origin::File(path)))
    }

    /// Parses `key` with `parse`, falling back to `default`.
    pub(super) fn get<T>(
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
    pub(super) fn unknown_keys(&self) -> Vec<String> {
        self.file.keys().filter(|k| !self.used.contains(k.as_str())).cloned().collect()
    }

    /// Reads an env var directly (keys that have no file form).
    pub(super) fn env(&mut self, var: &str) -> Option<String> {
        self.asked.insert(("-".to_string(), var.to_string()));
        (self.lookup)(var)
    }

    /// Every (key, variable) asked for so far, `-` for a missing half.
    #[cfg(test)]
    pub(super) fn asked(&self) -> &std::collections::BTreeSet<(String, String)> {
        &self.asked
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

pub(super) fn parse_int<T>(min: T, max: T) -> impl Fn(&str) -> Result<T, String>
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

pub(super) fn parse_log_level(s: &str) -> Result<Level, String> {
    parse_level(s).ok_or_else(|| "unknown log level (use DEBUG, INFO, WARNING, ERROR or CRITICAL)".to_string())
}

pub(super) fn parse_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("empty path".to_string());
    }
    Ok(PathBuf::from(s))
}

pub(super) fn parse_millis(s: &str) -> Result<Duration, String> {
    parse_int(1u64, 86_400_000)(s).map(Duration::from_millis)
}

pub(super) fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err("not a boolean (true/false)".to_string()),
    }
}

/// A fixed environment (tests).
#[cfg(test)]
pub(super) fn env(pairs: &[(&str, &str)]) -> EnvLookup {
    let map: std::collections::HashMap<String, String> =
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Box::new(move |k| map.get(k).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_config_file_must_exist() {
        let err = Source::load(Some("/nonexistent/x.yaml".into()), Path::new("config/server.yaml"), env(&[]));
        assert!(matches!(err, Err(ConfigError::Missing(_))));
    }
}
