//! A batch of validated bets kept inside the buffer they arrived in: one
//! allocation per batch (where each field sits) instead of three per bet.
//!
//! The wire decoder says where each bet's fields are; [`BetBatch::push`] checks
//! them (UTF-8 once, then the rules of [`BetRef::validate`]), so a batch holds
//! nothing but valid bets. The store writes them straight from the buffer.

use super::{Bet, BetError, BetRef, Date, RawBet, MAX_DOCUMENT_DIGITS, MAX_NAME_BYTES, MAX_NUMBER};
use bytes::{Bytes, BytesMut};

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

    /// The quick yes for the usual bet (see [`plainly_valid_name`]): no string is
    /// built and no field is scanned twice. Anything else takes [`push_checked`](Self::push_checked).
    fn plainly_valid(&self, slot: &BetSlot) -> bool {
        let field = |span: Span| self.buf.get(span.range());
        let (Some(first), Some(last), Some(document)) =
            (field(slot.first_name), field(slot.last_name), field(slot.document))
        else {
            return false;
        };
        plainly_valid_name(first)
            && plainly_valid_name(last)
            && (1..=MAX_DOCUMENT_DIGITS).contains(&document.len())
            && document.iter().all(u8::is_ascii_digit)
            && slot.number <= MAX_NUMBER
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

/// A quick yes for the usual name, in one pass over its bytes: printable ASCII
/// and two-byte UTF-8 characters from U+00C0 up (accented Latin letters: none
/// is a control character or a space), with at least one visible ASCII
/// character, at most [`MAX_NAME_BYTES`]. `false` does not mean invalid, only
/// "ask the full rules" (`check_name`), which also say what is wrong. The
/// server checks every name of every batch, so this is its hottest check.
fn plainly_valid_name(bytes: &[u8]) -> bool {
    if bytes.len() > MAX_NAME_BYTES {
        return false;
    }
    let (mut visible, mut i) = (false, 0);
    while let Some(&b) = bytes.get(i) {
        if b < 0x80 {
            if b < 0x20 || b == 0x7f {
                return false;
            }
            visible |= b != b' ';
            i += 1;
        } else if (0xc3..=0xdf).contains(&b) && bytes.get(i + 1).is_some_and(|&c| c & 0xc0 == 0x80) {
            i += 2;
        } else {
            return false;
        }
    }
    visible
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
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // 300 cases keep `cargo test` (a debug build) within a second.
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// The quick yes never accepts what the full rules refuse, and says yes
        /// to the usual accented names.
        #[test]
        fn the_quick_name_check_accepts_only_valid_names(
            bytes in prop::collection::vec(prop_oneof![
                4 => 0x20u8..0x7f,
                2 => 0xc2u8..0xe0,
                2 => 0x80u8..0xc0,
                1 => any::<u8>(),
            ], 0..300),
            text in "[a-zA-Z ÁÉÍÓÚáéíóúÑñÜü'\\-,\"\u{85}\u{a0}\u{2003}\t]{0,40}",
        ) {
            for b in [&bytes[..], text.as_bytes()] {
                if plainly_valid_name(b) {
                    let s = std::str::from_utf8(b).expect("quick yes for invalid UTF-8");
                    prop_assert!(super::super::check_name("first_name", s).is_ok(), "quick yes for {s:?}");
                }
            }
        }
    }

    #[test]
    fn the_quick_name_check_takes_the_usual_names() {
        for name in ["Ana", "José Luis", "Núñez", "O'Brien, Jr", "Peña \"el Tano\"", "Zoë"] {
            assert!(plainly_valid_name(name.as_bytes()), "{name}");
        }
        for name in ["", "  ", "Ñ", "A\u{85}", "A\u{a0}", "A\tB", "\u{2003}", "\u{1F600}x"] {
            assert!(!plainly_valid_name(name.as_bytes()), "{name:?}");
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
