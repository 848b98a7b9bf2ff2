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
    /// Keys whose file value is a list or a mapping, with which one: an error
    /// when the key is a known scalar, since no default should hide it.
    compound: BTreeMap<String, &'static str>,
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
                compound: BTreeMap::new(),
                file_path: None,
                lookup: env,
                used: Default::default(),
                asked: Default::default(),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        let (file, compound) = flatten_yaml(&text).map_err(|e| match e {
            FlattenError::Yaml(source) => ConfigError::Yaml { path: path.clone(), source },
            FlattenError::NotAMapping => ConfigError::NotAMapping(path.clone()),
        })?;
        Ok(Source {
            file,
            compound,
            file_path: Some(path),
            lookup: env,
            used: Default::default(),
            asked: Default::default(),
        })
    }

    /// Reads `explicit` (must exist) or `default_path` (may be absent), with the
    /// process environment on top.
    pub fn from_process(explicit: Option<PathBuf>, default_path: &Path) -> Result<Source, ConfigError> {
        Source::load(explicit, default_path, Box::new(|k: &str| std::env::var(k).ok()))
    }

    /// An in-memory source (tests).
    pub fn from_parts(yaml: &str, env: EnvLookup) -> Result<Source, ConfigError> {
        let (file, compound) = flatten_yaml(yaml).map_err(|_| ConfigError::NotAMapping(PathBuf::from("<memory>")))?;
        Ok(Source {
            file,
            compound,
            file_path: Some(PathBuf::from("<memory>")),
            lookup: env,
            used: Default::default(),
            asked: Default::default(),
        })
    }

    /// The raw value of `key`: the env var wins over the file. A list or mapping
    /// in the file at `key` is an error even when the env var is set: the file is
    /// wrong either way, and saying so beats a silent default.
    pub(super) fn raw(
        &mut self,
        key: &'static str,
        var: Option<&'static str>,
    ) -> Result<Option<(String, Origin)>, ConfigError> {
        self.used.insert(key.to_string());
        self.asked.insert((key.to_string(), var.unwrap_or("-").to_string()));
        let path = self.file_path.clone().unwrap_or_default();
        if let Some(found) = self.compound.get(key) {
            // The children of a mapping here are part of this error, not unknown keys.
            let prefix = format!("{key}.");
            let children: Vec<String> = self.file.keys().filter(|k| k.starts_with(&prefix)).cloned().collect();
            self.used.extend(children);
            return Err(ConfigError::NotAScalar { key, origin: Origin::File(path), found });
        }
        if let Some(var) = var {
            if let Some(v) = (self.lookup)(var) {
                return Ok(Some((v, Origin::Env(var))));
            }
        }
        Ok(self.file.get(key).map(|v| (v.clone(), Origin::File(path))))
    }

    /// Parses `key` with `parse`, falling back to `default`.
    pub(super) fn get<T>(
        &mut self,
        key: &'static str,
        var: Option<&'static str>,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.raw(key, var)? {
            None => Ok(default),
            Some((value, origin)) => {
                parse(value.trim()).map_err(|reason| ConfigError::Invalid { key, value, origin, reason })
            }
        }
    }

    /// File keys that no `get` asked for: reported as warnings.
    pub(super) fn unknown_keys(&self) -> Vec<String> {
        let lists = self.compound.iter().filter(|(_, found)| **found == "a list").map(|(k, _)| k);
        let mut keys: Vec<String> =
            self.file.keys().chain(lists).filter(|k| !self.used.contains(k.as_str())).cloned().collect();
        keys.sort();
        keys
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

/// The scalars by dotted key, and the keys that hold a list or a mapping.
type Flat = (BTreeMap<String, String>, BTreeMap<String, &'static str>);

fn flatten_yaml(text: &str) -> Result<Flat, FlattenError> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(FlattenError::Yaml)?;
    let mut out = (BTreeMap::new(), BTreeMap::new());
    match value {
        serde_yaml::Value::Null => {}
        serde_yaml::Value::Mapping(_) => flatten_into("", &value, &mut out),
        _ => return Err(FlattenError::NotAMapping),
    }
    Ok(out)
}

fn flatten_into(prefix: &str, value: &serde_yaml::Value, flat: &mut Flat) {
    use serde_yaml::Value;
    let scalar = match value {
        Value::Mapping(map) => {
            if !prefix.is_empty() {
                flat.1.insert(prefix.to_string(), "a mapping");
            }
            for (k, v) in map {
                let k = match k {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => "<complex key>".to_string(),
                };
                let key = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
                flatten_into(&key, v, flat);
            }
            return;
        }
        Value::Sequence(_) => {
            flat.1.insert(prefix.to_string(), "a list");
            return;
        }
        Value::Tagged(t) => return flatten_into(prefix, &t.value, flat),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
    };
    flat.0.insert(prefix.to_string(), scalar);
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

    #[test]
    fn a_list_or_mapping_at_a_scalar_key_is_an_error_naming_the_key() {
        for (yaml, found) in [
            ("storage:\n  path: [a, b]\n", "a list"),
            ("storage:\n  path:\n    - a\n", "a list"),
            ("storage:\n  path:\n    deep: x\n", "a mapping"),
        ] {
            let mut src = Source::from_parts(yaml, env(&[])).unwrap();
            let err = src.get("storage.path", Some("P"), PathBuf::from("d"), parse_path).unwrap_err();
            assert!(
                matches!(&err, ConfigError::NotAScalar { key: "storage.path", found: f, .. } if *f == found),
                "{yaml}: {err}"
            );
            let text = err.to_string();
            assert!(text.contains("storage.path") && text.contains(found), "{text}");
            assert!(src.unknown_keys().is_empty(), "{:?}", src.unknown_keys());
            // The environment does not hide a broken file.
            let mut src = Source::from_parts(yaml, env(&[("P", "x")])).unwrap();
            assert!(src.get("storage.path", Some("P"), PathBuf::from("d"), parse_path).is_err());
        }
    }

    #[test]
    fn a_list_at_an_unknown_key_stays_a_warning() {
        let mut src = Source::from_parts("loop:\n  items: [1, 2]\nstorage:\n  path: p\n", env(&[])).unwrap();
        assert_eq!(src.get("storage.path", None, PathBuf::from("d"), parse_path).unwrap(), PathBuf::from("p"));
        assert_eq!(src.unknown_keys(), vec!["loop.items".to_string()]);
    }
}
