//! A batch of validated bets kept inside the buffer they arrived in: one
//! allocation per batch (where each field sits) instead of three per bet.
//!
//! The wire decoder says where each bet's fields are; [`BetBatch::push`] checks
//! them (UTF-8 once, then the rules of [`BetRef::validate`]), so a batch holds
//! nothing but valid bets. The store writes them straight from the buffer.

mod quick;

use super::{Bet, BetError, BetRef, Date, RawBet};
use bytes::{Bytes, BytesMut};
use quick::plainly_valid_bet;

/// Where one text field sits in a batch's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub len: u16,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.start as usize + self.len as usize
    }
}

/// One bet as the decoder found it: its text fields as spans of the buffer.
#[derive(Debug, Clone, Copy)]
pub struct BetSlot {
    pub first_name: Span,
    pub last_name: Span,
    pub document: Span,
    pub birthdate: Date,
    pub number: u16,
}

/// Why a bet could not join a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("{field} is not valid UTF-8")]
    NotUtf8 { field: &'static str },
    #[error("{field} lies outside the batch's buffer")]
    OutOfBuffer { field: &'static str },
    #[error(transparent)]
    Invalid(#[from] BetError),
}

/// The bets of one batch, validated, kept inside their buffer.
#[derive(Clone, Default)]
pub struct BetBatch {
    buf: Bytes,
    bets: Vec<BetSlot>,
}

impl BetBatch {
    /// An empty batch over `buf`, with room for `capacity` bets.
    pub fn new(buf: Bytes, capacity: usize) -> BetBatch {
        BetBatch { buf, bets: Vec::with_capacity(capacity) }
    }

    /// Checks the bet at `slot` and adds it; a refused bet leaves the batch as it was.
    pub fn push(&mut self, slot: BetSlot) -> Result<(), SlotError> {
        if self.plainly_valid(&slot) {
            self.bets.push(slot);
            return Ok(());
        }
        self.push_checked(slot)
    }

    /// The quick yes for the usual bet (see [`plainly_valid_bet`]): no string is
    /// built and no field is scanned twice. Anything else takes [`push_checked`](Self::push_checked).
    fn plainly_valid(&self, slot: &BetSlot) -> bool {
        plainly_valid_bet(&self.buf, slot)
    }

    /// The full rules, naming the first problem.
    fn push_checked(&mut self, slot: BetSlot) -> Result<(), SlotError> {
        let text = |span: Span, field: &'static str| {
            let bytes = self.buf.get(span.range()).ok_or(SlotError::OutOfBuffer { field })?;
            std::str::from_utf8(bytes).map_err(|_| SlotError::NotUtf8 { field })
        };
        let bet = BetRef {
            first_name: text(slot.first_name, "first_name")?,
            last_name: text(slot.last_name, "last_name")?,
            document: text(slot.document, "document")?,
            birthdate: slot.birthdate,
            number: slot.number,
        };
        bet.validate()?;
        self.bets.push(slot);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.bets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bets.is_empty()
    }

    /// The bets as bytes, for storing them: no second UTF-8 check.
    pub fn raw_iter(&self) -> impl Iterator<Item = RawBet<'_>> + '_ {
        self.bets.iter().map(move |slot| RawBet {
            first_name: &self.buf[slot.first_name.range()],
            last_name: &self.buf[slot.last_name.range()],
            document: &self.buf[slot.document.range()],
            birthdate: slot.birthdate,
            number: slot.number,
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = BetRef<'_>> + '_ {
        // Checked as UTF-8 by `push`, and `Bytes` is immutable.
        let text = move |span: Span| std::str::from_utf8(&self.buf[span.range()]).unwrap_or("");
        self.bets.iter().map(move |slot| BetRef {
            first_name: text(slot.first_name),
            last_name: text(slot.last_name),
            document: text(slot.document),
            birthdate: slot.birthdate,
            number: slot.number,
        })
    }

    /// Owned copies (tests, tools).
    pub fn to_bets(&self) -> Vec<Bet> {
        self.iter().map(|b| b.to_bet()).collect()
    }

    /// A batch holding the valid ones of `bets` (single bets, tests), their text
    /// copied once into one buffer.
    pub fn from_bets(bets: &[Bet]) -> BetBatch {
        let mut buf = BytesMut::new();
        let mut slots = Vec::with_capacity(bets.len());
        let span = |buf: &mut BytesMut, text: &str| {
            // Names and documents are bounded well below u16::MAX by validation.
            let len = text.len().min(u16::MAX as usize);
            let span = Span { start: buf.len() as u32, len: len as u16 };
            buf.extend_from_slice(&text.as_bytes()[..len]);
            span
        };
        for bet in bets {
            slots.push(BetSlot {
                first_name: span(&mut buf, &bet.first_name),
                last_name: span(&mut buf, &bet.last_name),
                document: span(&mut buf, &bet.document),
                birthdate: bet.birthdate,
                number: bet.number,
            });
        }
        let mut batch = BetBatch::new(buf.freeze(), slots.len());
        for slot in slots {
            // Only a bet that fails validation is left out.
            let _ = batch.push(slot);
        }
        batch
    }
}

impl From<Vec<Bet>> for BetBatch {
    fn from(bets: Vec<Bet>) -> Self {
        BetBatch::from_bets(&bets)
    }
}

impl From<Bet> for BetBatch {
    fn from(bet: Bet) -> Self {
        BetBatch::from_bets(std::slice::from_ref(&bet))
    }
}

impl FromIterator<Bet> for BetBatch {
    fn from_iter<I: IntoIterator<Item = Bet>>(iter: I) -> Self {
        BetBatch::from_bets(&iter.into_iter().collect::<Vec<_>>())
    }
}

impl PartialEq for BetBatch {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for BetBatch {}

impl std::fmt::Debug for BetBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::quick::{plainly_valid_document_in, plainly_valid_name_in, scalar};
    use super::*;
    use crate::bet::MAX_NAME_BYTES;
    use proptest::prelude::*;

    /// The quick name rule byte by byte (the model the wide check must equal).
    use scalar::name as model_quick_name;

    /// [`plainly_valid_name_in`] over a whole slice.
    fn plainly_valid_name(bytes: &[u8]) -> bool {
        u16::try_from(bytes.len()).is_ok_and(|len| plainly_valid_name_in(bytes, Span { start: 0, len }))
    }

    /// Bytes of names worth checking: mostly printable ASCII and two-byte
    /// UTF-8 parts, with any byte now and then.
    fn name_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                4 => 0x20u8..0x7f,
                2 => 0xc2u8..0xe0,
                2 => 0x80u8..0xc0,
                1 => any::<u8>(),
            ],
            0..max,
        )
    }

    proptest! {
        // 300 cases keep `cargo test` (a debug build) within a second.
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// The quick yes never accepts what the full rules refuse, says yes
        /// exactly where its rule does (the model above), and does not
        /// depend on the bytes around the name in the buffer.
        #[test]
        fn the_quick_name_check_accepts_only_valid_names(
            bytes in name_bytes(300),
            text in "[a-zA-Z ÁÉÍÓÚáéíóúÑñÜü'\\-,\"\u{85}\u{a0}\u{2003}\t]{0,40}",
            before in prop::collection::vec(any::<u8>(), 0..20),
            after in prop::collection::vec(any::<u8>(), 0..20),
        ) {
            for b in [&bytes[..], text.as_bytes()] {
                let quick = plainly_valid_name(b);
                if quick {
                    let s = std::str::from_utf8(b).expect("quick yes for invalid UTF-8");
                    prop_assert!(super::super::check_name("first_name", s).is_ok(), "quick yes for {s:?}");
                }
                prop_assert_eq!(quick, model_quick_name(b), "{:?}", b);
                // The same name inside a longer buffer.
                let buf = [&before[..], b, &after[..]].concat();
                let span = Span { start: before.len() as u32, len: b.len() as u16 };
                prop_assert_eq!(plainly_valid_name_in(&buf, span), quick, "{:?} in {:?}", b, buf);
            }
        }

        /// The quick document check is exactly the full rule.
        #[test]
        fn the_quick_document_check_is_the_full_rule(
            doc in prop::collection::vec(prop_oneof![8 => b'0'..=b'9', 1 => any::<u8>()], 0..20),
            before in prop::collection::vec(any::<u8>(), 0..20),
            after in prop::collection::vec(any::<u8>(), 0..20),
        ) {
            let full = std::str::from_utf8(&doc).is_ok_and(|d| super::super::check_document(d).is_ok());
            let buf = [&before[..], &doc[..], &after[..]].concat();
            let span = Span { start: before.len() as u32, len: doc.len() as u16 };
            prop_assert_eq!(plainly_valid_document_in(&buf, span), full, "{:?}", doc);
            prop_assert_eq!(plainly_valid_document_in(&doc, Span { start: 0, len: doc.len() as u16 }), full);
        }
    }

    #[test]
    fn the_quick_name_check_takes_the_usual_names() {
        let at_window_edges = ["a".repeat(15) + "é", "a".repeat(16) + "é", "é".repeat(8), "ñ".repeat(127) + "a"];
        let usual = ["Ana", "José Luis", "Núñez", "O'Brien, Jr", "Peña \"el Tano\"", "Zoë", "Ñ", "Ángela", "  x ", "~"];
        for name in usual.iter().copied().chain(at_window_edges.iter().map(String::as_str)) {
            assert!(plainly_valid_name(name.as_bytes()), "{name}");
        }
        assert!(plainly_valid_name(&[b'a'; MAX_NAME_BYTES]));
    }

    #[test]
    fn the_quick_name_check_leaves_the_rest_to_the_full_rules() {
        let lead_then_ascii = [&[b'a'; 15][..], b"\xc3a"].concat();
        let lead_at_window_end = [&[b'a'; 15][..], b"\xc3"].concat();
        let long = [b'a'; MAX_NAME_BYTES + 1];
        let cases: [&[u8]; 26] = [
            b"",
            b" ",
            b"     ",
            &[b' '; 40],
            b"\x80",                 // lone continuation
            b"a\x80b",               // continuation after ASCII
            b"\xc3\xa9\x80",         // continuation after a continuation
            b"a\xc3",                // lead at the end
            b"\xc3\xc3\xa9",         // lead followed by a lead
            b"a\xc3b",               // lead followed by ASCII
            b"\xc2\xa0a",            // C2 lead (U+00A0, a space)
            b"\xc2\x85a",            // C2 lead (U+0085, a control character)
            b"a\xc2\xbf",            // C2 lead (U+00BF, valid but not quick)
            b"\xc0\x80a",            // overlong
            b"\xc1\xbfa",            // overlong
            "€uro".as_bytes(),       // three bytes
            "x\u{1F600}".as_bytes(), // four bytes
            b"A\tB",
            b"A\nB",
            b"\x00a",
            b"a\x1f",
            b"a\x7f", // DEL
            b"a\xff",
            &lead_then_ascii,
            &lead_at_window_end,
            &long,
        ];
        for name in cases {
            assert!(!plainly_valid_name(name), "{:?}", String::from_utf8_lossy(name));
            assert!(!model_quick_name(name), "{:?}", String::from_utf8_lossy(name));
        }
    }

    /// What the quick check leaves to the full rules gets their answer: the
    /// same errors as before, and a yes for valid names it does not know.
    #[test]
    fn a_batch_names_the_problem_of_a_refused_bet() {
        let push = |first: &[u8]| {
            let buf = Bytes::from([first, b"B1"].concat());
            let len = first.len() as u16;
            let slot = BetSlot {
                first_name: Span { start: 0, len },
                last_name: Span { start: len.into(), len: 1 },
                document: Span { start: u32::from(len) + 1, len: 1 },
                birthdate: Date::new(1990, 1, 1).unwrap(),
                number: 1,
            };
            BetBatch::new(buf, 1).push(slot)
        };
        let field = "first_name";
        assert_eq!(push(b"  "), Err(BetError::EmptyField { field }.into()));
        assert_eq!(push(b""), Err(BetError::EmptyField { field }.into()));
        assert_eq!(push(b"A\tB"), Err(BetError::ControlCharacter { field }.into()));
        assert_eq!(push(b"A\x7f"), Err(BetError::ControlCharacter { field }.into()));
        assert_eq!(push("A\u{85}".as_bytes()), Err(BetError::ControlCharacter { field }.into()));
        assert_eq!(push("\u{a0}\u{2003}".as_bytes()), Err(BetError::EmptyField { field }.into()));
        assert_eq!(push(&[b'a'; 256]), Err(BetError::TooLong { field, len: 256, max: MAX_NAME_BYTES }.into()));
        assert_eq!(push(b"a\xc3"), Err(SlotError::NotUtf8 { field }));
        assert_eq!(push(b"\x80"), Err(SlotError::NotUtf8 { field }));
        for valid in ["€uro", "¿Qué?", "x\u{1F600}", "\u{a0}x"] {
            assert_eq!(push(valid.as_bytes()), Ok(()), "{valid}");
        }
    }

    #[test]
    fn a_batch_holds_only_valid_bets_and_gives_them_back() {
        let ana = Bet::from_fields("Ana", "Pérez", "00000042", "1990-01-31", "7574").unwrap();
        let bad = Bet { document: "12a".into(), ..ana.clone() };
        let batch = BetBatch::from_bets(&[ana.clone(), bad, ana.clone()]);
        assert_eq!(batch.to_bets(), vec![ana.clone(), ana.clone()]);
        let raw: Vec<RawBet<'_>> = batch.raw_iter().collect();
        assert_eq!(raw[1], RawBet::from(ana.as_ref()));

        let mut batch = BetBatch::new(Bytes::from_static(b"Ana\xff1"), 1);
        let span = |start, len| Span { start, len };
        let slot = BetSlot {
            first_name: span(0, 3),
            last_name: span(3, 1),
            document: span(4, 1),
            birthdate: Date::new(1990, 1, 1).unwrap(),
            number: 1,
        };
        assert_eq!(batch.push(slot), Err(SlotError::NotUtf8 { field: "last_name" }));
        let outside = BetSlot { document: span(4, 9), last_name: span(0, 3), ..slot };
        assert_eq!(batch.push(outside), Err(SlotError::OutOfBuffer { field: "document" }));
        assert!(batch.is_empty());
    }
}
