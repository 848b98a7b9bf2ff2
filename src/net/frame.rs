//! Message layout on the wire.
//!
//! Every frame is `[type: u8][payload length: u32 BE][payload]`, at most
//! [`MAX_FRAME`] bytes in all. Integers are fixed-width big-endian; strings are a
//! `u16` BE byte length followed by UTF-8; dates are `year u16, month u8, day u8`.
//! The README has one table per message.

use super::error::ProtocolError;
pub use super::nack::NackCode;
use crate::auth::{MAC_LEN, NONCE_LEN};
use crate::bet::{AgencyId, BetBatch, BetRef};
use bytes::{BufMut, Bytes, BytesMut};

/// Largest frame, header included.
pub const MAX_FRAME: usize = 8192;
/// Type byte plus the `u32` length.
pub const HEADER_LEN: usize = 5;
/// Largest payload.
pub const MAX_PAYLOAD: usize = MAX_FRAME - HEADER_LEN;

pub mod kind {
    pub const ECHO: u8 = 0x01;
    pub const BET: u8 = 0x02;
    pub const BATCH: u8 = 0x03;
    pub const DONE: u8 = 0x04;
    pub const WINNERS_REQUEST: u8 = 0x05;
    pub const RESUME: u8 = 0x06;
    pub const AUTH_HELLO: u8 = 0x07;
    pub const AUTH_PROOF: u8 = 0x08;
    pub const ACK: u8 = 0x81;
    pub const NACK: u8 = 0x82;
    pub const WINNERS: u8 = 0x83;
    pub const PROGRESS: u8 = 0x84;
    pub const CHALLENGE: u8 = 0x85;
}

/// Fixed part of a `Batch` payload: agency, first index, count.
pub const BATCH_OVERHEAD: usize = 4 + 8 + 2;
/// Fixed part of a `Winners` payload: agency, more flag, count.
pub const WINNERS_OVERHEAD: usize = 4 + 1 + 2;

/// What an agency sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Answered with the byte-identical frame (connectivity check).
    Echo(Bytes),
    /// One bet (course exercise 5), stored at the agency's next index: a batch
    /// of exactly one, so it goes to the store as it was decoded.
    Bet { agency: AgencyId, bet: BetBatch },
    /// Bets `first_index..first_index + bets.len()` of the agency's stream.
    Batch { agency: AgencyId, first_index: u64, bets: BetBatch },
    /// The agency has sent all its `total` bets.
    Done { agency: AgencyId, total: u64 },
    /// Which of this agency's bets won (answered after the draw).
    WinnersRequest { agency: AgencyId },
    /// How far did this agency get? (answered with `Progress`; used to resume).
    Resume { agency: AgencyId },
    /// Starts the handshake: "I am this agency" (answered with a `Challenge`).
    AuthHello { agency: AgencyId },
    /// HMAC-SHA256(key, nonce || agency as u32 BE) for the last `Challenge`.
    AuthProof { mac: [u8; MAC_LEN] },
}

impl Request {
    /// The agency a message speaks for, if any.
    pub fn agency(&self) -> Option<AgencyId> {
        match self {
            Request::Echo(_) | Request::AuthHello { .. } | Request::AuthProof { .. } => None,
            Request::Bet { agency, .. }
            | Request::Batch { agency, .. }
            | Request::Done { agency, .. }
            | Request::WinnersRequest { agency }
            | Request::Resume { agency } => Some(*agency),
        }
    }
}

/// What the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Echo(Bytes),
    /// `count` bets starting at `index` are stored (for `Done`: `index` is the total, `count` 0).
    Ack {
        index: u64,
        count: u32,
    },
    /// Refusal of the message that starts at `index` (0 when it has none).
    Nack {
        code: NackCode,
        index: u64,
        message: String,
    },
    /// A page of the agency's winning documents; `more` says another page follows.
    Winners {
        agency: AgencyId,
        more: bool,
        documents: Vec<String>,
    },
    /// The agency's bets `0..stored` are durably stored; `done`: its Done is recorded.
    Progress {
        agency: AgencyId,
        stored: u64,
        done: bool,
    },
    /// A fresh nonce to prove the agency's key against (answer to `AuthHello`).
    Challenge {
        nonce: [u8; NONCE_LEN],
    },
}

// ---- encoding -------------------------------------------------------------

/// Bytes one bet takes inside a payload.
pub fn encoded_bet_len(bet: &BetRef<'_>) -> usize {
    2 + bet.first_name.len() + 2 + bet.last_name.len() + 2 + bet.document.len() + 4 + 2
}

/// Writes a whole `Batch` frame from bets already encoded with [`put_bet`].
pub fn encode_batch(
    out: &mut BytesMut,
    agency: AgencyId,
    first_index: u64,
    count: usize,
    encoded_bets: &[u8],
) -> Result<(), ProtocolError> {
    if count > u16::MAX as usize {
        return Err(ProtocolError::InvalidField { field: "count", reason: "too many bets".into() });
    }
    put_frame(out, kind::BATCH, BATCH_OVERHEAD + encoded_bets.len(), |o| {
        o.put_u32(agency);
        o.put_u64(first_index);
        o.put_u16(count as u16);
        o.put_slice(encoded_bets);
    })
}

fn put_str(out: &mut BytesMut, s: &str) {
    // Field lengths are bounded by validation well below u16::MAX; truncation here
    // would only corrupt a frame the encoder then refuses by size.
    let len = s.len().min(u16::MAX as usize);
    out.put_u16(len as u16);
    out.put_slice(&s.as_bytes()[..len]);
}

/// Appends one encoded bet (the agency side builds batches with this): what
/// `put_str` for each name and the document, then the date and number,
/// would write, with one capacity check and one length update for the whole
/// bet instead of one per field (a fifth of the agency's encoding time).
pub fn put_bet(out: &mut BytesMut, bet: &BetRef<'_>) {
    // Cut as `put_str` cuts (validated fields are far shorter).
    let fields = [bet.first_name, bet.last_name, bet.document].map(|s| &s.as_bytes()[..s.len().min(u16::MAX as usize)]);
    let len = fields.iter().map(|f| 2 + f.len()).sum::<usize>() + 6;
    out.reserve(len);
    let start = out.len();
    // `reserve` made room for `len` more bytes, so this slice is never cut short.
    let spare = &mut out.spare_capacity_mut()[..len];
    let mut written = 0;
    let mut put = |bytes: &[u8]| {
        let dst = &mut spare[written..written + bytes.len()];
        // SAFETY: `dst` is an exclusive slice of exactly `bytes.len()` bytes
        // (of `MaybeUninit<u8>`, which any byte may be written to), so it
        // holds the copy and cannot overlap `bytes`. (`write_copy_of_slice`
        // would say this safely, but is newer than the crate's MSRV, 1.88.)
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.as_mut_ptr().cast::<u8>(), bytes.len()) };
        written += bytes.len();
    };
    for field in fields {
        put(&(field.len() as u16).to_be_bytes());
        put(field);
    }
    let [y0, y1] = bet.birthdate.year().to_be_bytes();
    let [n0, n1] = bet.number.to_be_bytes();
    put(&[y0, y1, bet.birthdate.month(), bet.birthdate.day(), n0, n1]);
    debug_assert_eq!(written, len);
    // SAFETY: the pieces above were written one after another from the start
    // of `spare`, and their sizes (2 + field for each field, then 6) add up to
    // `len`: the `len` bytes after the old length are initialized, within the
    // capacity `reserve` made.
    unsafe { out.set_len(start + len) };
}

/// Writes header and payload, refusing frames over [`MAX_FRAME`].
fn put_frame(
    out: &mut BytesMut,
    kind: u8,
    payload_len: usize,
    body: impl FnOnce(&mut BytesMut),
) -> Result<(), ProtocolError> {
    if payload_len > MAX_PAYLOAD {
        return Err(ProtocolError::FrameTooLong { len: payload_len + HEADER_LEN, max: MAX_FRAME });
    }
    out.reserve(HEADER_LEN + payload_len);
    out.put_u8(kind);
    out.put_u32(payload_len as u32);
    let start = out.len();
    body(out);
    debug_assert_eq!(out.len() - start, payload_len);
    Ok(())
}

impl Request {
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), ProtocolError> {
        match self {
            Request::Echo(data) => put_frame(out, kind::ECHO, data.len(), |o| o.put_slice(data)),
            Request::Bet { agency, bet } => {
                let (Some(one), 1) = (bet.iter().next(), bet.len()) else {
                    let reason = format!("a Bet message carries exactly one bet, not {}", bet.len());
                    return Err(ProtocolError::InvalidField { field: "bet", reason });
                };
                put_frame(out, kind::BET, 4 + encoded_bet_len(&one), |o| {
                    o.put_u32(*agency);
                    put_bet(o, &one);
                })
            }
            Request::Batch { agency, first_index, bets } => {
                let mut encoded = BytesMut::new();
                for bet in bets.iter() {
                    put_bet(&mut encoded, &bet);
                }
                encode_batch(out, *agency, *first_index, bets.len(), &encoded)
            }
            Request::Done { agency, total } => put_frame(out, kind::DONE, 12, |o| {
                o.put_u32(*agency);
                o.put_u64(*total);
            }),
            Request::WinnersRequest { agency } => put_frame(out, kind::WINNERS_REQUEST, 4, |o| o.put_u32(*agency)),
            Request::Resume { agency } => put_frame(out, kind::RESUME, 4, |o| o.put_u32(*agency)),
            Request::AuthHello { agency } => put_frame(out, kind::AUTH_HELLO, 4, |o| o.put_u32(*agency)),
            Request::AuthProof { mac } => put_frame(out, kind::AUTH_PROOF, MAC_LEN, |o| o.put_slice(mac)),
        }
    }
}

impl Response {
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), ProtocolError> {
        match self {
            Response::Echo(data) => put_frame(out, kind::ECHO, data.len(), |o| o.put_slice(data)),
            Response::Ack { index, count } => put_frame(out, kind::ACK, 12, |o| {
                o.put_u64(*index);
                o.put_u32(*count);
            }),
            Response::Nack { code, index, message } => {
                // Messages are ours; cut them so a Nack always fits.
                let message = truncate_utf8(message, 1024);
                put_frame(out, kind::NACK, 2 + 8 + 2 + message.len(), |o| {
                    o.put_u16(*code as u16);
                    o.put_u64(*index);
                    put_str(o, message);
                })
            }
            Response::Winners { agency, more, documents } => {
                if documents.len() > u16::MAX as usize {
                    return Err(ProtocolError::InvalidField { field: "count", reason: "too many documents".into() });
                }
                let len = WINNERS_OVERHEAD + documents.iter().map(|d| 2 + d.len()).sum::<usize>();
                put_frame(out, kind::WINNERS, len, |o| {
                    o.put_u32(*agency);
                    o.put_u8(u8::from(*more));
                    o.put_u16(documents.len() as u16);
                    for d in documents {
                        put_str(o, d);
                    }
                })
            }
            Response::Progress { agency, stored, done } => put_frame(out, kind::PROGRESS, 13, |o| {
                o.put_u32(*agency);
                o.put_u64(*stored);
                o.put_u8(u8::from(*done));
            }),
            Response::Challenge { nonce } => put_frame(out, kind::CHALLENGE, NONCE_LEN, |o| o.put_slice(nonce)),
        }
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Splits winning documents into pages that each fit in one frame.
pub fn winners_pages(agency: AgencyId, documents: &[String]) -> Vec<Response> {
    let mut pages = Vec::new();
    let mut page: Vec<String> = Vec::new();
    let mut size = WINNERS_OVERHEAD;
    for doc in documents {
        if size + 2 + doc.len() > MAX_PAYLOAD && !page.is_empty() {
            pages.push(Response::Winners { agency, more: true, documents: std::mem::take(&mut page) });
            size = WINNERS_OVERHEAD;
        }
        size += 2 + doc.len();
        page.push(doc.clone());
    }
    pages.push(Response::Winners { agency, more: false, documents: page });
    pages
}
