//! The agency's link to the central: plain TCP, or TLS 1.3 verified against
//! the deployment CA and the central's name. An agency with a CA never falls
//! back to plain TCP: a central that does not prove itself is an error.

use super::ClientError;
use crate::net::tls::{binding, rustls_error, AgencyTls, BINDING_LEN};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The most a TLS handshake may take before the attempt counts as a failed connection.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The agency's socket, with or without TLS.
pub enum AgencyStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Connects to `address`; with `tls`, runs the handshake and returns the
/// session's keying material too (the handshake proof covers it).
pub async fn open(
    address: &str,
    tls: Option<&AgencyTls>,
    cancel: &CancellationToken,
) -> Result<(AgencyStream, Option<[u8; BINDING_LEN]>), ClientError> {
    let stream = tokio::select! {
        r = TcpStream::connect(address) => {
            r.map_err(|source| ClientError::Connect { address: address.to_string(), source })?
        }
        _ = cancel.cancelled() => return Err(ClientError::Cancelled),
    };
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok((AgencyStream::Plain(stream), None));
    };
    let rejected = |reason: String, name: &str| ClientError::TlsRejected {
        address: address.to_string(),
        server_name: name.to_string(),
        ca: tls.ca_path.clone(),
        reason,
    };
    let name = tls.name_for(address).map_err(|reason| rejected(reason, crate::net::tls::host_of(address)))?;
    let shown = name.to_str().into_owned();
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.connector().connect(name, stream));
    let stream = tokio::select! {
        r = handshake => match r {
            Ok(r) => r.map_err(|e| match rustls_error(&e) {
                // The central did not prove itself (or spoke no TLS): retrying cannot help.
                Some(tls_error) => rejected(tls_error.to_string(), &shown),
                None => ClientError::Connect { address: address.to_string(), source: e },
            })?,
            Err(_) => {
                let source = io::Error::new(io::ErrorKind::TimedOut, "the TLS handshake took too long");
                return Err(ClientError::Connect { address: address.to_string(), source });
            }
        },
        _ = cancel.cancelled() => return Err(ClientError::Cancelled),
    };
    let material = binding(stream.get_ref().1).map_err(|e| rejected(format!("no keying material: {e}"), &shown))?;
    Ok((AgencyStream::Tls(Box::new(stream)), Some(material)))
}

impl AsyncRead for AgencyStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgencyStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            AgencyStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for AgencyStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AgencyStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            AgencyStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgencyStream::Plain(s) => Pin::new(s).poll_flush(cx),
            AgencyStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgencyStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            AgencyStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
