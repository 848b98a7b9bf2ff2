//! One framed connection to the central: connect, send a request or a batch,
//! read the answer (a `Nack` becomes an error), close. With a CA the link is
//! TLS (see `link`); the framing is the same either way.

use super::batcher::Batcher;
use super::link::{self, AgencyStream};
use super::ClientError;
use crate::bet::AgencyId;
use crate::net::tls::{AgencyTls, BINDING_LEN};
use crate::net::{ClientCodec, Request, Response, MAX_FRAME};
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

/// After SIGTERM, how long the answer to the request in flight may take.
pub const IN_FLIGHT_GRACE: Duration = Duration::from_secs(1);

/// Queued batch frames are written once they reach this many bytes: several
/// frames per `write` instead of one (fewer syscalls on both sides), and the
/// output buffer stays bounded by this plus one frame.
pub const COALESCE_BYTES: usize = 32 * 1024;

/// One framed connection to the central.
pub struct AgencyConnection {
    stream: AgencyStream,
    /// The TLS session's keying material (`None` on a plain link).
    binding: Option<[u8; BINDING_LEN]>,
    /// Bytes read and not yet decoded (at most a frame and a read's worth).
    input: BytesMut,
    /// Frames queued and not yet written (at most [`COALESCE_BYTES`] plus a
    /// frame); reused so a batch costs no allocation.
    output: BytesMut,
    /// Frames in `output`.
    queued: usize,
    /// Frames written whose answer has not come yet: while there is one, the
    /// next answer is for it, so waiting for it needs no flush.
    awaiting: usize,
}

impl AgencyConnection {
    /// One connection attempt (retries are the caller's, see [`super::Backoff`]).
    /// With `tls`, the central must prove itself first.
    pub async fn connect(
        address: &str,
        tls: Option<&AgencyTls>,
        cancel: &CancellationToken,
    ) -> Result<AgencyConnection, ClientError> {
        let (stream, binding) = link::open(address, tls, cancel).await?;
        Ok(AgencyConnection {
            stream,
            binding,
            input: BytesMut::with_capacity(MAX_FRAME),
            output: BytesMut::with_capacity(COALESCE_BYTES + MAX_FRAME),
            queued: 0,
            awaiting: 0,
        })
    }

    /// The TLS session's keying material the handshake proof must cover.
    pub fn binding(&self) -> Option<&[u8]> {
        self.binding.as_ref().map(|b| b.as_slice())
    }

    /// Queues the batch in `batcher` as bets `first_index..` and returns how
    /// many; the queued frames go out together once they reach
    /// [`COALESCE_BYTES`], or at the next [`flush`](Self::flush) or `send`, or at
    /// a `recv` that waits for the answer to a frame not written yet.
    pub async fn send_batch(
        &mut self,
        agency: AgencyId,
        first_index: u64,
        batcher: &mut Batcher,
    ) -> Result<u64, ClientError> {
        let count = batcher.take_frame(agency, first_index, &mut self.output)?;
        self.queued += 1;
        if self.output.len() >= COALESCE_BYTES {
            self.flush().await?;
        }
        Ok(count as u64)
    }

    /// Writes every queued frame.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            // On TLS, records left in rustls by a full socket go out only on a flush.
            self.stream.flush().await?;
            self.output.clear();
            self.awaiting += std::mem::take(&mut self.queued);
        }
        Ok(())
    }

    pub async fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        request.encode(&mut self.output)?;
        self.queued += 1;
        self.flush().await
    }

    /// Reads the next answer; a `Nack` becomes [`ClientError::Refused`].
    pub async fn recv(&mut self) -> Result<Response, ClientError> {
        // An answer can only come to what was sent: with no written frame
        // unanswered, the queued ones go out now. Otherwise they wait to be
        // coalesced (one write per several batches instead of one each).
        if self.awaiting == 0 {
            self.flush().await?;
        }
        loop {
            if let Some(item) = ClientCodec.decode(&mut self.input)? {
                // A Winners answer may take several frames: counting each as an
                // answer errs towards flushing early, never towards waiting forever.
                self.awaiting = self.awaiting.saturating_sub(1);
                return match item? {
                    Response::Nack { code, message, .. } => Err(ClientError::Refused { code, message }),
                    other => Ok(other),
                };
            }
            if self.stream.read_buf(&mut self.input).await? == 0 {
                if let Some(Ok(Response::Nack { code, message, .. })) = ClientCodec.decode_eof(&mut self.input)? {
                    return Err(ClientError::Refused { code, message });
                }
                return Err(ClientError::Closed);
            }
        }
    }

    /// Reads an answer, giving up [`IN_FLIGHT_GRACE`] after `cancel` fires.
    pub async fn recv_in_flight(&mut self, cancel: &CancellationToken) -> Result<Response, ClientError> {
        let grace_over = async {
            cancel.cancelled().await;
            tokio::time::sleep(IN_FLIGHT_GRACE).await
        };
        tokio::select! {
            r = self.recv() => r,
            _ = grace_over => Err(ClientError::Cancelled),
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.shutdown().await;
    }
}
