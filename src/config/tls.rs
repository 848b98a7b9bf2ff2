//! The TLS settings of both programs: the central's certificate and key, the
//! agency's CA and the name it expects. Files are read and checked here, so a
//! bad one is a configuration error naming it (exit 2), before any socket.

use super::source::{parse_path, Source};
use super::{ConfigError, Origin};
use crate::net::tls::{parse_server_name, AgencyTls, ServerTls};
use std::path::PathBuf;

/// `server.tls.cert` and `server.tls.key`: both or neither.
pub(super) fn server(src: &mut Source) -> Result<Option<ServerTls>, ConfigError> {
    let cert = src.raw("server.tls.cert", Some("SERVER_TLS_CERT"))?;
    let key = src.raw("server.tls.key", Some("SERVER_TLS_KEY"))?;
    match (cert, key) {
        (None, None) => Ok(None),
        (Some((cert, cert_origin)), Some((key, key_origin))) => {
            let cert = path("server.tls.cert", cert, cert_origin)?;
            let key = path("server.tls.key", key, key_origin)?;
            Ok(Some(ServerTls::load(&cert, &key)?))
        }
        (Some((value, origin)), None) => Err(ConfigError::Invalid {
            key: "server.tls.cert",
            value,
            origin,
            reason: "set server.tls.key (SERVER_TLS_KEY) too, or neither".into(),
        }),
        (None, Some((value, origin))) => Err(ConfigError::Invalid {
            key: "server.tls.key",
            value,
            origin,
            reason: "set server.tls.cert (SERVER_TLS_CERT) too, or neither".into(),
        }),
    }
}

/// `tls.ca` and `tls.server_name` (which needs the CA).
pub(super) fn client(src: &mut Source) -> Result<Option<AgencyTls>, ConfigError> {
    let ca = src.raw("tls.ca", Some("CLI_TLS_CA"))?;
    let name = match src.raw("tls.server_name", Some("CLI_TLS_SERVER_NAME"))? {
        None => None,
        Some((value, origin)) => match parse_server_name(value.trim()) {
            Ok(name) => Some((name, value, origin)),
            Err(reason) => return Err(ConfigError::Invalid { key: "tls.server_name", value, origin, reason }),
        },
    };
    match (ca, name) {
        (None, None) => Ok(None),
        (None, Some((_, value, origin))) => Err(ConfigError::Invalid {
            key: "tls.server_name",
            value,
            origin,
            reason: "a server name is only checked with TLS: set tls.ca (CLI_TLS_CA) too".into(),
        }),
        (Some((ca, origin)), name) => {
            let ca = path("tls.ca", ca, origin)?;
            Ok(Some(AgencyTls::load(&ca, name.map(|(n, _, _)| n))?))
        }
    }
}

fn path(key: &'static str, value: String, origin: Origin) -> Result<PathBuf, ConfigError> {
    parse_path(value.trim()).map_err(|reason| ConfigError::Invalid { key, value, origin, reason })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::source::env;
    use crate::pki;

    #[test]
    fn server_needs_both_files_and_names_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let files =
            pki::write(&pki::issue(&pki::server_names(1), Default::default()).unwrap(), dir.path(), "d").unwrap();
        let (cert, key) = (files.server_cert.display().to_string(), files.server_key.display().to_string());
        let mut src = Source::from_parts("", env(&[("SERVER_TLS_CERT", &cert), ("SERVER_TLS_KEY", &key)])).unwrap();
        assert!(server(&mut src).unwrap().is_some());
        let mut src = Source::from_parts("", env(&[])).unwrap();
        assert!(server(&mut src).unwrap().is_none());
        let mut src = Source::from_parts(&format!("server:\n  tls:\n    cert: {cert}\n"), env(&[])).unwrap();
        let err = server(&mut src).unwrap_err().to_string();
        assert!(err.contains("server.tls.cert") && err.contains("SERVER_TLS_KEY"), "{err}");
        let gone = dir.path().join("gone.key").display().to_string();
        let mut src = Source::from_parts("", env(&[("SERVER_TLS_CERT", &cert), ("SERVER_TLS_KEY", &gone)])).unwrap();
        let err = server(&mut src).unwrap_err().to_string();
        assert!(err.contains(&gone), "{err}");
    }

    #[test]
    fn client_takes_a_ca_and_an_optional_name() {
        let dir = tempfile::tempdir().unwrap();
        let files =
            pki::write(&pki::issue(&pki::server_names(1), Default::default()).unwrap(), dir.path(), "d").unwrap();
        let ca = files.ca_cert.display().to_string();
        let mut src = Source::from_parts("", env(&[("CLI_TLS_CA", &ca)])).unwrap();
        let tls = client(&mut src).unwrap().unwrap();
        assert_eq!(tls.name_for("server:12345").unwrap().to_str(), "server");
        let mut src = Source::from_parts("", env(&[("CLI_TLS_CA", &ca), ("CLI_TLS_SERVER_NAME", "central")])).unwrap();
        assert_eq!(client(&mut src).unwrap().unwrap().name_for("server:12345").unwrap().to_str(), "central");
        let mut src = Source::from_parts("", env(&[("CLI_TLS_SERVER_NAME", "central")])).unwrap();
        assert!(client(&mut src).unwrap_err().to_string().contains("CLI_TLS_CA"));
        let mut src = Source::from_parts("", env(&[("CLI_TLS_CA", &ca), ("CLI_TLS_SERVER_NAME", "a b")])).unwrap();
        assert!(client(&mut src).unwrap_err().to_string().contains("tls.server_name"));
        let mut src = Source::from_parts("", env(&[])).unwrap();
        assert!(client(&mut src).unwrap().is_none());
    }
}
