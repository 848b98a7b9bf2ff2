//! Message layout on the wire.
//!
//! Every frame is `[type: u8][payload length: u32 BE][payload]`, at most
//! [`MAX_FRAME`] bytes in all. Integers are fixed-width big-endian; strings are a
//! `u16` BE byte length followed by UTF-8; dates are `year u16, month u8, day u8`.
//! The README has one table per message.

use super::error::ProtocolError;
use crate::auth::{MAC_LEN, NONCE_LEN};
use crate::bet::batch::{BetSlot, SlotError, Span};
use crate::bet::{AgencyId, BetBatch, BetRef, Date};
use bytes::{Buf, BufMut, Bytes, BytesMut};

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

/// Why the server refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum NackCode {
    /// The frame could be read but its content is wrong.
    Malformed = 1,
    /// A bet in the batch failed validation; nothing of the batch was stored.
    InvalidBet = 2,
    /// The connection belongs to another agency.
    WrongAgency = 3,
    /// The agency is not in `1..=agencies`.
    UnknownAgency = 4,
    /// The agency already sent `Done`.
    AlreadyDone = 5,
    /// The server could not store the batch.
    StorageError = 6,
    /// The batch does not start at the agency's next expected index.
    OutOfOrder = 7,
    /// The server is shutting down or at capacity.
    Unavailable = 8,
    /// `Done` announced more bets than are stored.
    Incomplete = 9,
    /// The connection has not authenticated: only `Echo` and the handshake are open.
    Unauthenticated = 10,
    /// The handshake failed (wrong proof, no challenge, or no key for the agency).
    AuthFailed = 11,
    /// A request of the same kind from this connection is still waiting for its
    /// answer (a second winners request before the draw).
    AlreadyWaiting = 12,
    /// Any other code (from a newer peer).
    Other = 0xffff,
}

impl NackCode {
    pub fn from_u16(v: u16) -> NackCode {
        match v {
            1 => NackCode::Malformed,
            2 => NackCode::InvalidBet,
            3 => NackCode::WrongAgency,
            4 => NackCode::UnknownAgency,
            5 => NackCode::AlreadyDone,
            6 => NackCode::StorageError,
            7 => NackCode::OutOfOrder,
            8 => NackCode::Unavailable,
            9 => NackCode::Incomplete,
            10 => NackCode::Unauthenticated,
            11 => NackCode::AuthFailed,
            12 => NackCode::AlreadyWaiting,
            _ => NackCode::Other,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            NackCode::Malformed => "malformed",
            NackCode::InvalidBet => "invalid_bet",
            NackCode::WrongAgency => "wrong_agency",
            NackCode::UnknownAgency => "unknown_agency",
            NackCode::AlreadyDone => "already_done",
            NackCode::StorageError => "storage_error",
            NackCode::OutOfOrder => "out_of_order",
            NackCode::Unavailable => "unavailable",
            NackCode::Incomplete => "incomplete",
            NackCode::Unauthenticated => "unauthenticated",
            NackCode::AuthFailed => "auth_failed",
            NackCode::AlreadyWaiting => "already_waiting",
            NackCode::Other => "other",
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

/// Appends one encoded bet (the agency side builds batches with this).
pub fn put_bet(out: &mut BytesMut, bet: &BetRef<'_>) {
    put_str(out, bet.first_name);
    put_str(out, bet.last_name);
    put_str(out, bet.document);
    out.put_u16(bet.birthdate.year());
    out.put_u8(bet.birthdate.month());
    out.put_u8(bet.birthdate.day());
    out.put_u16(bet.number);
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

// ---- decoding -------------------------------------------------------------

/// A cursor over one payload that turns every short read into a typed error.
struct Reader {
    buf: Bytes,
    /// Payload length, so field offsets can be computed from what remains.
    start_len: usize,
}

impl Reader {
    fn need(&self, field: &'static str, n: usize) -> Result<(), ProtocolError> {
        if self.buf.remaining() < n {
            return Err(ProtocolError::Truncated { field, needed: n, left: self.buf.remaining() });
        }
        Ok(())
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, ProtocolError> {
        self.need(field, 1)?;
        Ok(self.buf.get_u8())
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, ProtocolError> {
        self.need(field, 2)?;
        Ok(self.buf.get_u16())
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, ProtocolError> {
        self.need(field, 4)?;
        Ok(self.buf.get_u32())
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, ProtocolError> {
        self.need(field, 8)?;
        Ok(self.buf.get_u64())
    }
    fn string(&mut self, field: &'static str) -> Result<String, ProtocolError> {
        let len = self.u16(field)? as usize;
        self.need(field, len)?;
        // Validate in place, then copy once: no reference-counted slice per field.
        let text = std::str::from_utf8(&self.buf[..len]).map_err(|_| ProtocolError::BadUtf8 { field })?.to_owned();
        self.buf.advance(len);
        Ok(text)
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ProtocolError> {
        self.need(field, N)?;
        let mut out = [0u8; N];
        self.buf.copy_to_slice(&mut out);
        Ok(out)
    }
    fn finish(self) -> Result<(), ProtocolError> {
        match self.buf.remaining() {
            0 => Ok(()),
            n => Err(ProtocolError::TrailingBytes(n)),
        }
    }
    fn agency(&mut self) -> Result<AgencyId, ProtocolError> {
        let agency = self.u32("agency")?;
        if agency == 0 {
            return Err(ProtocolError::InvalidField { field: "agency", reason: "agencies are numbered from 1".into() });
        }
        Ok(agency)
    }
    /// Skips a string field and returns where it sits in the payload.
    fn str_span(&mut self, field: &'static str) -> Result<Span, ProtocolError> {
        let len = self.u16(field)? as usize;
        self.need(field, len)?;
        let start = self.start_len - self.buf.remaining();
        self.buf.advance(len);
        Ok(Span { start: start as u32, len: len as u16 })
    }

    /// Reads one bet into `batch`, which checks it (UTF-8 once, then the domain's rules).
    fn bet_into(&mut self, batch: &mut BetBatch) -> Result<(), ProtocolError> {
        let first_name = self.str_span("first_name")?;
        let last_name = self.str_span("last_name")?;
        let document = self.str_span("document")?;
        let (y, m, d) = (self.u16("birthdate")?, self.u8("birthdate")?, self.u8("birthdate")?);
        let birthdate = Date::new(y, m, d)
            .map_err(|e| ProtocolError::InvalidField { field: "birthdate", reason: e.to_string() })?;
        let number = self.u16("number")?;
        batch.push(BetSlot { first_name, last_name, document, birthdate, number }).map_err(|e| match e {
            SlotError::NotUtf8 { field } => ProtocolError::BadUtf8 { field },
            SlotError::OutOfBuffer { field } => ProtocolError::Truncated { field, needed: 0, left: 0 },
            SlotError::Invalid(e) => ProtocolError::InvalidField { field: "bet", reason: e.to_string() },
        })
    }
}

impl Request {
    /// Parses one payload of the given type.
    pub fn decode(kind: u8, payload: Bytes) -> Result<Request, ProtocolError> {
        let start_len = payload.len();
        let whole = payload.clone();
        let mut r = Reader { buf: payload, start_len };
        let req = match kind {
            kind::ECHO => return Ok(Request::Echo(r.buf)),
            kind::BET => {
                let agency = r.agency()?;
                let mut bet = BetBatch::new(whole, 1);
                r.bet_into(&mut bet)?;
                Request::Bet { agency, bet }
            }
            kind::BATCH => {
                let agency = r.agency()?;
                let first_index = r.u64("first_index")?;
                let count = r.u16("count")? as usize;
                // Each bet takes at least 12 bytes, so `count` cannot make us allocate
                // more than the frame already holds.
                let mut bets = BetBatch::new(whole, count.min(r.buf.remaining() / 12));
                for position in 0..count {
                    match r.bet_into(&mut bets) {
                        Ok(()) => {}
                        Err(e) => {
                            return Err(ProtocolError::InvalidBatch {
                                agency,
                                first_index,
                                count,
                                position,
                                reason: e.to_string(),
                            })
                        }
                    }
                }
                Request::Batch { agency, first_index, bets }
            }
            kind::DONE => Request::Done { agency: r.agency()?, total: r.u64("total")? },
            kind::WINNERS_REQUEST => Request::WinnersRequest { agency: r.agency()? },
            kind::RESUME => Request::Resume { agency: r.agency()? },
            kind::AUTH_HELLO => Request::AuthHello { agency: r.agency()? },
            kind::AUTH_PROOF => Request::AuthProof { mac: r.array("mac")? },
            other => return Err(ProtocolError::UnknownType(other)),
        };
        r.finish()?;
        Ok(req)
    }
}

impl Response {
    pub fn decode(kind: u8, payload: Bytes) -> Result<Response, ProtocolError> {
        let start_len = payload.len();
        let mut r = Reader { buf: payload, start_len };
        let resp = match kind {
            kind::ECHO => return Ok(Response::Echo(r.buf)),
            kind::ACK => Response::Ack { index: r.u64("index")?, count: r.u32("count")? },
            kind::NACK => Response::Nack {
                code: NackCode::from_u16(r.u16("code")?),
                index: r.u64("index")?,
                message: r.string("message")?,
            },
            kind::WINNERS => {
                let agency = r.agency()?;
                let more = match r.u8("more")? {
                    0 => false,
                    1 => true,
                    v => {
                        return Err(ProtocolError::InvalidField { field: "more", reason: format!("{v} is not 0 or 1") })
                    }
                };
                let count = r.u16("count")? as usize;
                let mut documents = Vec::with_capacity(count.min(r.buf.remaining() / 3));
                for _ in 0..count {
                    let doc = r.string("document")?;
                    crate::bet::check_document(&doc)
                        .map_err(|e| ProtocolError::InvalidField { field: "document", reason: e.to_string() })?;
                    documents.push(doc);
                }
                Response::Winners { agency, more, documents }
            }
            kind::PROGRESS => {
                let agency = r.agency()?;
                let stored = r.u64("stored")?;
                let done = match r.u8("done")? {
                    0 => false,
                    1 => true,
                    v => {
                        return Err(ProtocolError::InvalidField { field: "done", reason: format!("{v} is not 0 or 1") })
                    }
                };
                Response::Progress { agency, stored, done }
            }
            kind::CHALLENGE => Response::Challenge { nonce: r.array("nonce")? },
            other => return Err(ProtocolError::UnknownType(other)),
        };
        r.finish()?;
        Ok(resp)
    }
}
