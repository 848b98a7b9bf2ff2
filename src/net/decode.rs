//! Reading payloads: every short read a typed error, every bet checked by the
//! domain as it joins its batch.

use super::error::ProtocolError;
use super::frame::{kind, NackCode, Request, Response};
use crate::bet::batch::{BetSlot, SlotError, Span};
use crate::bet::{AgencyId, BetBatch, Date};
use bytes::{Buf, Bytes};

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
    /// A big-endian integer (`u16::from_be_bytes`, ...).
    fn int<T, const N: usize>(&mut self, field: &'static str, from_be: fn([u8; N]) -> T) -> Result<T, ProtocolError> {
        self.array(field).map(from_be)
    }
    fn string(&mut self, field: &'static str) -> Result<String, ProtocolError> {
        let len = self.int(field, u16::from_be_bytes)? as usize;
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
        let agency = self.int("agency", u32::from_be_bytes)?;
        if agency == 0 {
            return Err(ProtocolError::InvalidField { field: "agency", reason: "agencies are numbered from 1".into() });
        }
        Ok(agency)
    }
    /// Reads one bet into `batch`, which checks it (UTF-8 once, then the domain's rules).
    fn bet_into(&mut self, batch: &mut BetBatch) -> Result<(), ProtocolError> {
        let offset = self.start_len - self.buf.remaining();
        let mut bet = BetCursor { data: &self.buf, at: 0 };
        let slot = bet.slot(offset)?;
        let used = bet.at;
        self.buf.advance(used);
        batch.push(slot).map_err(|e| match e {
            SlotError::NotUtf8 { field } => ProtocolError::BadUtf8 { field },
            SlotError::OutOfBuffer { field } => ProtocolError::Truncated { field, needed: 0, left: 0 },
            SlotError::Invalid(e) => ProtocolError::InvalidField { field: "bet", reason: e.to_string() },
        })
    }
}

/// Reads one bet's fields straight from the payload's bytes: the hot path of a
/// batch (a million bets a second), where [`Reader`]'s per-call `Bytes`
/// bookkeeping showed in profiles. Same checks, same errors.
struct BetCursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl BetCursor<'_> {
    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ProtocolError> {
        let left = self.data.len() - self.at;
        let bytes = self.data.get(self.at..self.at + N).ok_or(ProtocolError::Truncated { field, needed: N, left })?;
        self.at += N;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Skips a string field; `offset` is where `data` starts in the payload.
    fn span(&mut self, field: &'static str, offset: usize) -> Result<Span, ProtocolError> {
        let len = u16::from_be_bytes(self.take(field)?) as usize;
        let left = self.data.len() - self.at;
        if left < len {
            return Err(ProtocolError::Truncated { field, needed: len, left });
        }
        let start = offset + self.at;
        self.at += len;
        Ok(Span { start: start as u32, len: len as u16 })
    }

    fn slot(&mut self, offset: usize) -> Result<BetSlot, ProtocolError> {
        let first_name = self.span("first_name", offset)?;
        let last_name = self.span("last_name", offset)?;
        let document = self.span("document", offset)?;
        let y = u16::from_be_bytes(self.take("birthdate")?);
        let [m] = self.take("birthdate")?;
        let [d] = self.take("birthdate")?;
        let birthdate = Date::new(y, m, d)
            .map_err(|e| ProtocolError::InvalidField { field: "birthdate", reason: e.to_string() })?;
        let number = u16::from_be_bytes(self.take("number")?);
        Ok(BetSlot { first_name, last_name, document, birthdate, number })
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
                let first_index = r.int("first_index", u64::from_be_bytes)?;
                let count = r.int("count", u16::from_be_bytes)? as usize;
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
            kind::DONE => Request::Done { agency: r.agency()?, total: r.int("total", u64::from_be_bytes)? },
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
            kind::ACK => {
                Response::Ack { index: r.int("index", u64::from_be_bytes)?, count: r.int("count", u32::from_be_bytes)? }
            }
            kind::NACK => Response::Nack {
                code: NackCode::from_u16(r.int("code", u16::from_be_bytes)?),
                index: r.int("index", u64::from_be_bytes)?,
                message: r.string("message")?,
            },
            kind::WINNERS => {
                let agency = r.agency()?;
                let more = match r.int("more", u8::from_be_bytes)? {
                    0 => false,
                    1 => true,
                    v => {
                        return Err(ProtocolError::InvalidField { field: "more", reason: format!("{v} is not 0 or 1") })
                    }
                };
                let count = r.int("count", u16::from_be_bytes)? as usize;
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
                let stored = r.int("stored", u64::from_be_bytes)?;
                let done = match r.int("done", u8::from_be_bytes)? {
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
