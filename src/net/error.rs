//! Every way a frame can be wrong, typed, so the server can decide between
//! answering with a `Nack` (the frame was readable) and closing the connection.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The header announces more than the protocol allows; nothing was buffered.
    #[error("frame of {len} bytes announced, the maximum is {max}")]
    FrameTooLong { len: usize, max: usize },
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({buffered} bytes of an incomplete frame)")]
    TruncatedStream { buffered: usize },
    /// The payload ended before a field it announces.
    #[error("payload truncated: {field} needs {needed} more bytes, {left} left")]
    Truncated { field: &'static str, needed: usize, left: usize },
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    #[error("{field} is not valid UTF-8")]
    BadUtf8 { field: &'static str },
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    /// A bet of a batch is invalid; the whole batch is refused.
    #[error(
        "batch of agency {agency} starting at index {first_index}: bet {position} of {count} is invalid: {reason}"
    )]
    InvalidBatch { agency: u32, first_index: u64, count: usize, position: usize, reason: String },
    #[error("{0} unexpected bytes after the payload")]
    TrailingBytes(usize),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}
