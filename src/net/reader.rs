//! Reading frames off a socket with a buffer that follows the peer.
//!
//! `tokio_util`'s `FramedRead` keeps its buffer for the life of the connection:
//! a frame-sized one (8 KiB) held by 10,000 mostly idle agencies is 80 MB, and
//! a small one (1 KiB was tried) made a streaming agency's reads three times as
//! many. [`FrameReader`] asks each read for what the peer is likely to send:
//! the rest of the current frame, or, while reads keep filling the room they
//! are given, up to [`MAX_READ_AHEAD`] (a streaming agency then needs one read
//! per several frames). When the socket has nothing more to give and no byte is
//! buffered, the buffer is let go of, so an idle connection holds none.

use actix::prelude::Stream;
use bytes::BytesMut;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncRead;
use tokio_util::codec::Decoder;

/// The smallest read a connection asks for when no frame is under way.
pub const MIN_READ_AHEAD: usize = 1024;
/// The most a streaming connection reads at once.
pub const MAX_READ_AHEAD: usize = 64 * 1024;

/// Decoded items of `D` read from `R`, ending at a clean end of stream, or with
/// the first error (`decode_eof` says whether bytes left at the end are one).
pub struct FrameReader<R, D> {
    io: R,
    decoder: D,
    buf: BytesMut,
    /// Bytes the next read asks for beyond what the current frame needs.
    read_ahead: usize,
    /// The peer closed its side: decode what is left, then end.
    eof: bool,
    /// An error or the end was returned: the stream is over.
    done: bool,
}

impl<R, D> FrameReader<R, D> {
    pub fn new(io: R, decoder: D) -> Self {
        FrameReader { io, decoder, buf: BytesMut::new(), read_ahead: MIN_READ_AHEAD, eof: false, done: false }
    }

    /// Bytes buffered and allocated now (tests, and a connection's footprint).
    pub fn buffered(&self) -> (usize, usize) {
        (self.buf.len(), self.buf.capacity())
    }
}

impl<R, D> Stream for FrameReader<R, D>
where
    R: AsyncRead + Unpin,
    D: Decoder + Unpin,
    D::Error: From<std::io::Error>,
{
    type Item = Result<D::Item, D::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let decoded =
                if this.eof { this.decoder.decode_eof(&mut this.buf) } else { this.decoder.decode(&mut this.buf) };
            match decoded {
                Ok(Some(item)) => return Poll::Ready(Some(Ok(item))),
                Ok(None) if this.eof => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            // The decoder reserved what the current frame still lacks (`split_frame`);
            // ask for more only when the peer has shown it streams.
            let spare = this.buf.capacity() - this.buf.len();
            if spare < this.read_ahead {
                this.buf.reserve(this.read_ahead);
            }
            let room = this.buf.capacity() - this.buf.len();
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.buf) {
                Poll::Pending => {
                    if this.buf.is_empty() {
                        // Nothing under way and nothing to read: keep no buffer while idle.
                        this.buf = BytesMut::new();
                        this.read_ahead = MIN_READ_AHEAD;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => this.eof = true,
                Poll::Ready(Ok(n)) => {
                    if n == room {
                        this.read_ahead = (this.read_ahead * 2).min(MAX_READ_AHEAD);
                    } else if n < this.read_ahead / 4 {
                        this.read_ahead = (this.read_ahead / 2).max(MIN_READ_AHEAD);
                    }
                }
                Poll::Ready(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{ClientCodec, ProtocolError, Request, ServerCodec};
    use std::future::poll_fn;
    use tokio::io::AsyncWriteExt;

    async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
        poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
    }

    fn frame(req: &Request) -> BytesMut {
        let mut out = BytesMut::new();
        tokio_util::codec::Encoder::encode(&mut ClientCodec, req, &mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn frames_split_anywhere_come_out_whole_and_an_idle_reader_holds_no_buffer() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (_, mut write) = tokio::io::split(client);
        let mut reader = FrameReader::new(server, ServerCodec);
        let reqs: Vec<Request> = (1..=50u32).map(|a| Request::Done { agency: a, total: u64::from(a) * 7 }).collect();
        let bytes: Vec<u8> = reqs.iter().flat_map(|r| frame(r).to_vec()).collect();
        // Written in odd pieces, some mid-header.
        let writer = tokio::spawn(async move {
            for piece in bytes.chunks(7) {
                write.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            write
        });
        for want in &reqs {
            let got = next(&mut reader).await.expect("a frame").expect("no stream error").expect("valid");
            assert_eq!(&got, want);
        }
        let mut write = writer.await.unwrap();
        // Everything read and nothing more to come yet: the reader keeps no buffer.
        let pending = poll_fn(|cx| Poll::Ready(Pin::new(&mut reader).poll_next(cx).is_pending())).await;
        assert!(pending);
        assert_eq!(reader.buffered(), (0, 0));
        // A clean end after a whole frame ends the stream.
        write.write_all(&frame(&Request::Resume { agency: 3 })).await.unwrap();
        write.shutdown().await.unwrap();
        drop(write);
        assert_eq!(next(&mut reader).await.unwrap().unwrap().unwrap(), Request::Resume { agency: 3 });
        assert!(next(&mut reader).await.is_none());
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_frame_is_an_error() {
        let (client, server) = tokio::io::duplex(1024);
        let (_, mut write) = tokio::io::split(client);
        let mut reader = FrameReader::new(server, ServerCodec);
        let whole = frame(&Request::Done { agency: 1, total: 2 });
        write.write_all(&whole[..whole.len() - 3]).await.unwrap();
        write.shutdown().await.unwrap();
        drop(write);
        assert!(matches!(next(&mut reader).await, Some(Err(ProtocolError::TruncatedStream { .. }))));
        assert!(next(&mut reader).await.is_none());
    }

    #[tokio::test]
    async fn a_streaming_peer_is_read_in_large_pieces() {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let (_, mut write) = tokio::io::split(client);
        let mut reader = FrameReader::new(server, ServerCodec);
        let one = frame(&Request::Done { agency: 1, total: 2 });
        let many: Vec<u8> = std::iter::repeat_n(one.to_vec(), 10_000).flatten().collect();
        write.write_all(&many).await.unwrap();
        let mut widest = 0;
        for _ in 0..10_000 {
            next(&mut reader).await.unwrap().unwrap().unwrap();
            widest = widest.max(reader.buffered().1);
        }
        assert!(widest >= MAX_READ_AHEAD, "reads grew to {widest} bytes");
        assert!(widest <= 2 * MAX_READ_AHEAD + crate::net::MAX_FRAME, "bounded: {widest}");
    }
}
