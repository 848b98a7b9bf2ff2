//! TLS 1.3 on the agency ↔ central link (rustls with the `ring` provider):
//! loading the central's certificate and key and the agency's CA, telling a
//! ClientHello from a plain peer, the keying material the handshake proof is
//! bound to, and the two halves a connection reads and writes.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// A PEM file larger than this is refused (a chain of a few certificates is ~4 KiB).
pub const MAX_PEM_FILE: u64 = 1 << 20;
/// The first byte of a TLS record carrying a handshake message (the ClientHello).
pub const HANDSHAKE_RECORD: u8 = 0x16;
/// RFC 8446 §7.5 exporter label binding the agency's proof to its TLS session.
pub const PROOF_EXPORTER_LABEL: &[u8] = b"EXPERIMENTAL loteria agency proof";
/// Bytes of exported keying material mixed into the proof.
pub const BINDING_LEN: usize = 32;

/// A bad certificate, key or CA file: always names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read { what: &'static str, path: PathBuf, source: io::Error },
    #[error("{what} {} is larger than {MAX_PEM_FILE} bytes", path.display())]
    TooLarge { what: &'static str, path: PathBuf },
    #[error("{what} {} holds no usable PEM {expected}: {reason}", path.display())]
    NoPem { what: &'static str, path: PathBuf, expected: &'static str, reason: String },
    #[error("key {} does not fit certificate {}: {reason}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf, reason: String },
    #[error("CA {} is not a usable certificate: {reason}", path.display())]
    BadCa { path: PathBuf, reason: String },
    #[error("TLS setup: {0}")]
    Setup(String),
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let read_err = |source| TlsFileError::Read { what, path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE + 1).read_to_end(&mut bytes).map_err(read_err)?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(TlsFileError::TooLarge { what, path: path.to_path_buf() });
    }
    Ok(bytes)
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem = read_pem(what, path)?;
    let no_pem =
        |reason: String| TlsFileError::NoPem { what, path: path.to_path_buf(), expected: "certificate", reason };
    let certs =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| no_pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(no_pem("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The central's TLS side: its certificate chain and key, TLS 1.3 only.
#[derive(Clone)]
pub struct ServerTls {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("cert_path", &self.cert_path).field("key_path", &self.key_path).finish()
    }
}

impl ServerTls {
    /// Loads and checks the pair: the key must be the certificate's.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<ServerTls, TlsFileError> {
        let chain = certificates("certificate", cert_path)?;
        let pem = read_pem("key", key_path)?;
        let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsFileError::NoPem {
            what: "key",
            path: key_path.to_path_buf(),
            expected: "private key",
            reason: e.to_string(),
        })?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsFileError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsFileError::Mismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
                reason: e.to_string(),
            })?;
        Ok(ServerTls {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }
}

/// The agency's TLS side: the deployment CA it trusts (and nothing else) and
/// the name the central's certificate must carry.
#[derive(Clone, Debug)]
pub struct AgencyTls {
    pub ca_path: PathBuf,
    /// `None`: the host part of each server address.
    pub server_name: Option<ServerName<'static>>,
    config: Arc<rustls::ClientConfig>,
}

impl AgencyTls {
    pub fn load(ca_path: &Path, server_name: Option<ServerName<'static>>) -> Result<AgencyTls, TlsFileError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates("CA", ca_path)? {
            roots.add(cert).map_err(|e| TlsFileError::BadCa { path: ca_path.to_path_buf(), reason: e.to_string() })?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsFileError::Setup(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(AgencyTls { ca_path: ca_path.to_path_buf(), server_name, config: Arc::new(config) })
    }

    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }

    /// The client configuration itself (the NATS client of the replicated store
    /// takes one: the same CA, TLS 1.3 and the ring provider).
    pub fn client_config(&self) -> rustls::ClientConfig {
        (*self.config).clone()
    }

    /// The name to verify for a connection to `address` (`HOST:PORT`).
    pub fn name_for(&self, address: &str) -> Result<ServerName<'static>, String> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        parse_server_name(host_of(address))
    }
}

/// The host part of `HOST:PORT` (brackets of `[v6]:port` removed).
pub fn host_of(address: &str) -> &str {
    let host = address.trim().rsplit_once(':').map(|(h, _)| h).unwrap_or(address.trim());
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// A DNS name or an IP address as a certificate name.
pub fn parse_server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string()).map_err(|e| format!("{name:?} is not a DNS name or IP address: {e}"))
}

/// Whether the peer's first byte starts a TLS handshake record; waits for it.
/// `Ok(None)`: the peer closed without sending anything.
pub async fn starts_with_tls(stream: &TcpStream) -> io::Result<Option<bool>> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await? {
        0 => Ok(None),
        _ => Ok(Some(first[0] == HANDSHAKE_RECORD)),
    }
}

/// Keying material of this TLS session (RFC 8446 §7.5), the same on both ends.
pub fn binding<D>(conn: &rustls::ConnectionCommon<D>) -> Result<[u8; BINDING_LEN], rustls::Error> {
    conn.export_keying_material([0u8; BINDING_LEN], PROOF_EXPORTER_LABEL, None)
}

/// A rustls error inside an I/O error, when that is what it is.
pub fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;

/// The half a connection reads from: the socket's, or the TLS stream's.
pub enum PeerRead {
    Plain(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<ServerStream>),
}

/// The half a connection's writer writes to.
pub enum PeerWrite {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<ServerStream>),
}

/// Splits an accepted peer into its two halves.
pub fn split_plain(stream: TcpStream) -> (PeerRead, PeerWrite) {
    let (r, w) = stream.into_split();
    (PeerRead::Plain(r), PeerWrite::Plain(w))
}

pub fn split_tls(stream: ServerStream) -> (PeerRead, PeerWrite) {
    let (r, w) = tokio::io::split(stream);
    (PeerRead::Tls(r), PeerWrite::Tls(w))
}

impl AsyncRead for PeerRead {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerRead::Plain(r) => Pin::new(r).poll_read(cx, buf),
            PeerRead::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerWrite {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerWrite::Plain(w) => Pin::new(w).poll_write(cx, buf),
            PeerWrite::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerWrite::Plain(w) => Pin::new(w).poll_flush(cx),
            PeerWrite::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerWrite::Plain(w) => Pin::new(w).poll_shutdown(cx),
            PeerWrite::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki;

    #[test]
    fn hosts_come_out_of_addresses() {
        assert_eq!(host_of("server:12345"), "server");
        assert_eq!(host_of(" 127.0.0.1:1 "), "127.0.0.1");
        assert_eq!(host_of("[::1]:9"), "::1");
        assert!(parse_server_name("127.0.0.1").is_ok() && parse_server_name("bad name!").is_err());
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = pki::write(&pki::issue(&pki::server_names(1), Default::default()).unwrap(), dir.path(), "a").unwrap();
        let b = pki::write(&pki::issue(&pki::server_names(1), Default::default()).unwrap(), dir.path(), "b").unwrap();
        assert!(ServerTls::load(&a.server_cert, &a.server_key).is_ok());
        assert!(AgencyTls::load(&a.ca_cert, None).is_ok());
        let err = ServerTls::load(&a.server_cert, &b.server_key).unwrap_err().to_string();
        assert!(err.contains(&b.server_key.display().to_string()) && err.contains("does not fit"), "{err}");
        let missing = dir.path().join("missing.pem");
        let err = ServerTls::load(&missing, &a.server_key).unwrap_err().to_string();
        assert!(err.contains("missing.pem") && err.contains("cannot read certificate"), "{err}");
        let err = ServerTls::load(&a.server_key, &a.server_key).unwrap_err().to_string();
        assert!(err.contains("no usable PEM certificate") && err.contains("a.server.key"), "{err}");
        let err = ServerTls::load(&a.server_cert, &a.server_cert).unwrap_err().to_string();
        assert!(err.contains("no usable PEM private key") && err.contains("a.server.pem"), "{err}");
        let err = AgencyTls::load(&missing, None).unwrap_err().to_string();
        assert!(err.contains("cannot read CA") && err.contains("missing.pem"), "{err}");
    }
}
