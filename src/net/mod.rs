//! The wire protocol between agencies and the central: frames, messages, codecs.

pub mod codec;
mod decode;
pub mod error;
pub mod frame;
mod nack;
pub mod reader;
pub mod tls;

pub use codec::{ClientCodec, ServerCodec};
pub use error::ProtocolError;
pub use frame::{NackCode, Request, Response, HEADER_LEN, MAX_FRAME, MAX_PAYLOAD};
pub use reader::FrameReader;
