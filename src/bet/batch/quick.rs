//! The quick yes for the usual bet, before the full rules of [`BetRef::validate`](crate::bet::BetRef::validate):
//! SSE2 on x86_64, byte by byte elsewhere and as the reference the wide checks are tested against.

use super::{BetSlot, Span};
use crate::bet::{MAX_DOCUMENT_DIGITS, MAX_NAME_BYTES, MAX_NUMBER};

/// A quick yes for the usual bet: both names pass [`plainly_valid_name_in`],
/// the document [`plainly_valid_document_in`], and the number is in range.
/// `false` does not mean invalid, only "ask the full rules".
///
/// On x86_64 the three fields are classified together when they lie in one
/// 64-byte window, as they do in a usual BATCH payload (each field follows the
/// one before it after its 2-byte length; a usual bet's three fields and two
/// lengths take about 40 bytes): one set of masks instead of one per field.
#[inline]
pub(super) fn plainly_valid_bet(buf: &[u8], slot: &BetSlot) -> bool {
    let number = slot.number <= MAX_NUMBER;
    #[cfg(target_arch = "x86_64")]
    if let Some(fields) = wide::bet_in_one_window(buf, slot) {
        return fields & number;
    }
    // `&`, not `&&`: each check is cheap, and a usual bet passes them all.
    plainly_valid_name_in(buf, slot.first_name)
        & plainly_valid_name_in(buf, slot.last_name)
        & plainly_valid_document_in(buf, slot.document)
        & number
}

/// A quick yes for the usual name at `span` of `buf`: printable ASCII and
/// two-byte UTF-8 characters from U+00C0 up (leads C3..=DF: accented Latin
/// letters, none of which is a control character or a space), with at least
/// one byte that is not a space, at most [`MAX_NAME_BYTES`]. `false` does not
/// mean invalid, only "ask the full rules" (`check_name`, after `push_checked`
/// has refused a span outside the buffer), which also say what is wrong. The
/// server checks every name of every batch, so this is its hottest check.
///
/// 64 bytes at a time with SSE2 on x86_64 ([`wide::name_in`]), byte by byte
/// elsewhere ([`scalar::name_in`], the reference the wide check is tested against).
#[cfg(target_arch = "x86_64")]
pub(super) use wide::name_in as plainly_valid_name_in;

#[cfg(not(target_arch = "x86_64"))]
pub(super) use scalar::name_in as plainly_valid_name_in;

/// A quick yes for a document at `span` of `buf`: 1 to [`MAX_DOCUMENT_DIGITS`]
/// ASCII digits (exactly the full rule). One window on x86_64
/// ([`wide::document_in`]), byte by byte elsewhere ([`scalar::document_in`]).
#[cfg(target_arch = "x86_64")]
pub(super) use wide::document_in as plainly_valid_document_in;

#[cfg(not(target_arch = "x86_64"))]
pub(super) use scalar::document_in as plainly_valid_document_in;

/// The quick rules one byte at a time with early exits: the way on targets
/// without SSE2, and the model the wide checks must equal (property-tested).
#[cfg(any(test, not(target_arch = "x86_64")))]
pub(super) mod scalar {
    use super::{Span, MAX_DOCUMENT_DIGITS, MAX_NAME_BYTES};

    /// [`plainly_valid_name_in`](super::plainly_valid_name_in), byte by byte.
    pub(in crate::bet::batch) fn name_in(buf: &[u8], span: Span) -> bool {
        buf.get(span.range()).is_some_and(name)
    }

    /// [`plainly_valid_document_in`](super::plainly_valid_document_in), byte by byte.
    pub(in crate::bet::batch) fn document_in(buf: &[u8], span: Span) -> bool {
        buf.get(span.range()).is_some_and(document)
    }

    /// Printable ASCII and pairs of a lead C3..=DF and a continuation 80..=BF,
    /// at least one byte that is not a space, 1 to `MAX_NAME_BYTES` bytes.
    pub(in crate::bet::batch) fn name(bytes: &[u8]) -> bool {
        if bytes.is_empty() || bytes.len() > MAX_NAME_BYTES {
            return false;
        }
        let (mut visible, mut i) = (false, 0);
        while let Some(&b) = bytes.get(i) {
            if (0x20..0x7f).contains(&b) {
                visible |= b != b' ';
                i += 1;
            } else if (0xc3..=0xdf).contains(&b) && bytes.get(i + 1).is_some_and(|&c| (0x80..0xc0).contains(&c)) {
                visible = true;
                i += 2;
            } else {
                return false;
            }
        }
        visible
    }

    /// 1 to `MAX_DOCUMENT_DIGITS` ASCII digits.
    pub(in crate::bet::batch) fn document(bytes: &[u8]) -> bool {
        (1..=MAX_DOCUMENT_DIGITS).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_digit)
    }
}

/// The quick rules with SSE2: a window of 64 bytes of the buffer gives, for
/// each class of bytes the rules ask about, one bit per byte (a `u64`), and a
/// field's answer is a few operations on the bits of its bytes, with no branch
/// per byte to mispredict on accented letters.
///
/// A name is good when every byte is allowed (printable ASCII, a lead C3..=DF
/// or a continuation 80..=BF) and its continuations are exactly the bytes right
/// after its leads: `continuation == lead << 1`, both taken over the name's
/// bits only, so a continuation that starts the name, one after another
/// continuation or ASCII, a lead followed by anything else, and a lead that
/// ends the name (its shifted bit falls past the name's bits) all differ.
#[cfg(target_arch = "x86_64")]
mod wide;
