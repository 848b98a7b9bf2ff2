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
    /// Reads `count` bets into `batch`, which checks each (UTF-8 once, then the
    /// domain's rules); an error says at which position. One cursor over the
    /// payload's bytes for the whole run, and the `Bytes` advanced once.
    fn bets_into(&mut self, batch: &mut BetBatch, count: usize) -> Result<(), (usize, ProtocolError)> {
        let offset = self.start_len - self.buf.remaining();
        let mut bets = BetCursor { data: &self.buf, at: 0 };
        for position in 0..count {
            let slot = bets.slot(offset).map_err(|e| (position, e))?;
            batch.push(slot).map_err(|e| {
                let e = match e {
                    SlotError::NotUtf8 { field } => ProtocolError::BadUtf8 { field },
                    SlotError::OutOfBuffer { field } => ProtocolError::Truncated { field, needed: 0, left: 0 },
                    SlotError::Invalid(e) => ProtocolError::InvalidField { field: "bet", reason: e.to_string() },
                };
                (position, e)
            })?;
        }
        let used = bets.at;
        self.buf.advance(used);
        Ok(())
    }
}

/// Reads one bet's fields straight from the payload's bytes: the hot path of a
/// batch (a million bets a second), where [`Reader`]'s per-call `Bytes`
/// bookkeeping showed in profiles. Same checks, same errors, built only when
/// they happen.
struct BetCursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl BetCursor<'_> {
    fn truncated(&self, field: &'static str, needed: usize) -> ProtocolError {
        ProtocolError::Truncated { field, needed, left: self.data.len() - self.at }
    }

    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ProtocolError> {
        let out = self
            .data
            .get(self.at..self.at + N)
            .and_then(|bytes| <[u8; N]>::try_from(bytes).ok())
            .ok_or_else(|| self.truncated(field, N))?;
        self.at += N;
        Ok(out)
    }

    /// Skips a string field; `offset` is where `data` starts in the payload.
    fn span(&mut self, field: &'static str, offset: usize) -> Result<Span, ProtocolError> {
        let len = u16::from_be_bytes(self.take(field)?);
        let left = self.data.len() - self.at;
        if left < usize::from(len) {
            return Err(self.truncated(field, len.into()));
        }
        let start = offset + self.at;
        self.at += usize::from(len);
        Ok(Span { start: start as u32, len })
    }

    fn slot(&mut self, offset: usize) -> Result<BetSlot, ProtocolError> {
        let first_name = self.span("first_name", offset)?;
        let last_name = self.span("last_name", offset)?;
        let document = self.span("document", offset)?;
        // Birthdate (year, month, day) and number in one read when all 6 bytes are there.
        let (birthdate, number) = match self.data.get(self.at..self.at + 6) {
            Some(&[y0, y1, m, d, n0, n1]) => {
                self.at += 6;
                (birthdate(u16::from_be_bytes([y0, y1]), m, d)?, u16::from_be_bytes([n0, n1]))
            }
            _ => self.short_tail()?,
        };
        Ok(BetSlot { first_name, last_name, document, birthdate, number })
    }

    /// Birthdate and number read part by part, so that a short payload gets
    /// the error reading them one by one gives (the field it stops in, or a
    /// bad date before a missing number).
    fn short_tail(&mut self) -> Result<(Date, u16), ProtocolError> {
        let y = u16::from_be_bytes(self.take("birthdate")?);
        let [m] = self.take("birthdate")?;
        let [d] = self.take("birthdate")?;
        let birthdate = birthdate(y, m, d)?;
        let number = u16::from_be_bytes(self.take("number")?);
        Ok((birthdate, number))
    }
}

/// Inlined, so the date stays in registers on its way into the slot (returned
/// through memory, its parts written one by one and read back whole stalled
/// the store-to-load forwarding).
#[inline(always)]
fn birthdate(year: u16, month: u8, day: u8) -> Result<Date, ProtocolError> {
    Date::new(year, month, day).map_err(invalid_birthdate)
}

#[cold]
fn invalid_birthdate(e: crate::bet::BetError) -> ProtocolError {
    ProtocolError::InvalidField { field: "birthdate", reason: e.to_string() }
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
                r.bets_into(&mut bet, 1).map_err(|(_, e)| e)?;
                Request::Bet { agency, bet }
            }
            kind::BATCH => {
                let agency = r.agency()?;
                let first_index = r.int("first_index", u64::from_be_bytes)?;
                let count = r.int("count", u16::from_be_bytes)? as usize;
                // Each bet takes at least 12 bytes, so `count` cannot make us allocate
                // more than the frame already holds.
                let mut bets = BetBatch::new(whole, count.min(r.buf.remaining() / 12));
                r.bets_into(&mut bets, count).map_err(|(position, e)| ProtocolError::InvalidBatch {
                    agency,
                    first_index,
                    count,
                    position,
                    reason: e.to_string(),
                })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bet::{Bet, BetRef};
    use proptest::prelude::*;

    /// The BATCH decoder as it was before it read a whole run of bets with one
    /// cursor and the birthdate and number in one read, frozen as the oracle:
    /// field by field, each bet checked by the full rules.
    fn old_decode_batch(payload: &[u8]) -> Result<(AgencyId, u64, Vec<Bet>), ProtocolError> {
        let mut at = 0;
        let mut take = |field: &'static str, n: usize| -> Result<&[u8], ProtocolError> {
            let left = payload.len() - at;
            let bytes = payload.get(at..at + n).ok_or(ProtocolError::Truncated { field, needed: n, left })?;
            at += n;
            Ok(bytes)
        };
        let be = |b: &[u8]| b.iter().fold(0u64, |v, &x| v << 8 | u64::from(x));
        let agency = be(take("agency", 4)?) as u32;
        if agency == 0 {
            return Err(ProtocolError::InvalidField { field: "agency", reason: "agencies are numbered from 1".into() });
        }
        let first_index = be(take("first_index", 8)?);
        let count = be(take("count", 2)?) as usize;
        let mut bets = Vec::new();
        for position in 0..count {
            let mut bet = || -> Result<Bet, ProtocolError> {
                let mut text = |field: &'static str| -> Result<&[u8], ProtocolError> {
                    let len = be(take(field, 2)?) as usize;
                    take(field, len)
                };
                let (first, last, document) = (text("first_name")?, text("last_name")?, text("document")?);
                let y = be(take("birthdate", 2)?) as u16;
                let m = take("birthdate", 1)?[0];
                let d = take("birthdate", 1)?[0];
                let birthdate = Date::new(y, m, d)
                    .map_err(|e| ProtocolError::InvalidField { field: "birthdate", reason: e.to_string() })?;
                let number = be(take("number", 2)?) as u16;
                let utf8 = |b, field| std::str::from_utf8(b).map_err(|_| ProtocolError::BadUtf8 { field });
                let bet = BetRef {
                    first_name: utf8(first, "first_name")?,
                    last_name: utf8(last, "last_name")?,
                    document: utf8(document, "document")?,
                    birthdate,
                    number,
                };
                bet.validate().map_err(|e| ProtocolError::InvalidField { field: "bet", reason: e.to_string() })?;
                Ok(bet.to_bet())
            };
            match bet() {
                Ok(bet) => bets.push(bet),
                Err(e) => {
                    let reason = e.to_string();
                    return Err(ProtocolError::InvalidBatch { agency, first_index, count, position, reason });
                }
            }
        }
        match payload.len() - at {
            0 => Ok((agency, first_index, bets)),
            n => Err(ProtocolError::TrailingBytes(n)),
        }
    }

    fn field() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => "[a-zA-Z ñÑéÁü',\"]{1,20}".prop_map(String::into_bytes),
            1 => "[0-9]{1,18}".prop_map(String::into_bytes),
            1 => prop::collection::vec(any::<u8>(), 0..20),
        ]
    }

    /// One encoded bet: mostly plausible, now and then anything.
    fn bet() -> impl Strategy<Value = Vec<u8>> {
        let date = prop_oneof![
            4 => (1000u16..=9999, 1u8..=12, 1u8..=31),
            1 => (any::<u16>(), any::<u8>(), any::<u8>()),
        ];
        let number = prop_oneof![4 => 0u16..=9999, 1 => any::<u16>()];
        (field(), field(), "[0-9]{1,17}", date, number).prop_map(|(first, last, doc, (y, m, d), number)| {
            let mut out = Vec::new();
            for text in [&first[..], &last[..], doc.as_bytes()] {
                out.extend_from_slice(&(text.len() as u16).to_be_bytes());
                out.extend_from_slice(text);
            }
            out.extend_from_slice(&y.to_be_bytes());
            out.extend_from_slice(&[m, d]);
            out.extend_from_slice(&number.to_be_bytes());
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// BATCH payloads, whole, cut anywhere, with a wrong count or bytes
        /// after them, decode to what the old decoder gave: the same bets,
        /// or the same error (message, field, position).
        #[test]
        fn batches_decode_as_before(
            agency in prop_oneof![9 => 1u32..100, 1 => Just(0u32)],
            first_index in any::<u64>(),
            bets in prop::collection::vec(bet(), 0..6),
            count_delta in -2i32..=2,
            cut in any::<prop::sample::Index>(),
            how in 0u8..4,
        ) {
            let count = (bets.len() as i32 + count_delta).max(0) as u16;
            let mut payload = [&agency.to_be_bytes()[..], &first_index.to_be_bytes(), &count.to_be_bytes()].concat();
            payload.extend(bets.concat());
            match how {
                0 => payload.truncate(cut.index(payload.len() + 1)),
                1 => payload.extend_from_slice(b"xyz"),
                _ => {}
            }
            let new = Request::decode(kind::BATCH, Bytes::from(payload.clone()));
            let old = old_decode_batch(&payload);
            match (new, old) {
                (Ok(Request::Batch { agency: a, first_index: f, bets }), Ok((oa, of, obets))) => {
                    prop_assert_eq!((a, f), (oa, of));
                    prop_assert_eq!(bets.to_bets(), obets);
                }
                (new, old) => prop_assert_eq!(format!("{:?}", new.map(|_| ())), format!("{:?}", old.map(|_| ()))),
            }
        }

        /// A single BET payload decodes to what the old decoder gave for it.
        #[test]
        fn single_bets_decode_as_before(bet in bet(), cut in any::<prop::sample::Index>(), whole in any::<bool>()) {
            let mut payload = [&7u32.to_be_bytes()[..], &bet].concat();
            if !whole {
                payload.truncate(cut.index(payload.len() + 1));
            }
            let new = Request::decode(kind::BET, Bytes::from(payload.clone()));
            // The same bet as a batch of one, through the oracle: a BET's errors are the batch's reason.
            let as_batch = [&7u32.to_be_bytes()[..], &[0; 8], &1u16.to_be_bytes(), &payload[4.min(payload.len())..]].concat();
            let old = if payload.len() < 4 { old_decode_batch(&payload) } else { old_decode_batch(&as_batch) };
            match (new, old) {
                (Ok(Request::Bet { agency, bet }), Ok((oa, _, obets))) => {
                    prop_assert_eq!(agency, oa);
                    prop_assert_eq!(bet.to_bets(), obets);
                }
                (Err(new), Err(ProtocolError::InvalidBatch { reason, .. })) => prop_assert_eq!(new.to_string(), reason),
                (new, old) => prop_assert_eq!(format!("{:?}", new.map(|_| ())), format!("{:?}", old.map(|_| ()))),
            }
        }
    }

    #[test]
    fn a_short_tail_names_the_field_it_stops_in() {
        let mut payload = [&7u32.to_be_bytes()[..], &[0; 8], &1u16.to_be_bytes(), b"\0\x01A\0\x01B\0\x011"].concat();
        let tail = [0x07, 0xc6, 2, 30, 0x1d, 0x96]; // 1990-02-30 (not a date), 7574
        let decode =
            |p: &[u8]| Request::decode(kind::BATCH, Bytes::copy_from_slice(p)).map(|_| ()).unwrap_err().to_string();
        payload.extend_from_slice(&tail[..3]);
        assert!(
            decode(&payload).ends_with("payload truncated: birthdate needs 1 more bytes, 0 left"),
            "{}",
            decode(&payload)
        );
        payload.push(tail[3]);
        // Four bytes of a date that does not exist: the date's error comes before the missing number's.
        assert!(decode(&payload).contains("invalid birthdate"), "{}", decode(&payload));
        *payload.last_mut().expect("a day") = 28;
        assert!(
            decode(&payload).ends_with("payload truncated: number needs 2 more bytes, 0 left"),
            "{}",
            decode(&payload)
        );
    }
}
