use super::{BetSlot, Span, MAX_DOCUMENT_DIGITS, MAX_NAME_BYTES};
use crate::simd::{between, bits, continuations, digits, eq, load, load16, mask, mask16, or, WINDOW};
use core::arch::x86_64::__m128i;

/// What the quick name rule asks of each byte of a window, one bit per byte.
struct NameClasses {
    /// Every byte a quick name may hold: printable ASCII (0x20..=0x7e),
    /// a lead or a continuation.
    allowed: u64,
    /// C3..=DF: the leads of two-byte characters from U+00C0 up.
    lead: u64,
    /// 80..=BF.
    continuation: u64,
    space: u64,
}

impl NameClasses {
    #[inline]
    #[target_feature(enable = "sse2")]
    fn of(v: &[__m128i; 4]) -> NameClasses {
        // Signed, 0xc3..=0xdf are -61..=-33; 0x20..=0x7e are the bytes
        // above 0x1f and below 0x7f.
        let lead = |v: __m128i| between(v, 0xc2, 0xe0);
        NameClasses {
            allowed: mask(v, |v| or(or(between(v, 0x1f, 0x7f), lead(v)), continuations(v))),
            lead: mask(v, lead),
            continuation: mask(v, |v| continuations(v)),
            space: mask(v, |v| eq(v, b' ')),
        }
    }
}

/// The name classes and the digits of a window.
#[inline]
#[target_feature(enable = "sse2")]
fn bet_classes(window: &[u8; WINDOW]) -> (NameClasses, u64) {
    let v = load(window);
    (NameClasses::of(&v), mask(&v, |v| digits(v)))
}

/// `classify` of the `N` bytes of `buf` from `at` (`at < buf.len()`) or,
/// where fewer follow it (the last fields of a payload), of the buffer's
/// last `N`, so there is no copy; a buffer shorter than that is copied
/// into a zeroed window. Also says where `at` is in the window and how
/// many of the window's bytes are the buffer's.
#[inline(always)]
fn window_at<const N: usize, R>(buf: &[u8], at: usize, classify: impl FnOnce(&[u8; N]) -> R) -> (R, usize, usize) {
    let origin = at.min(buf.len().saturating_sub(N));
    let rest = buf.get(origin..).unwrap_or_default();
    let classes = match rest.first_chunk() {
        Some(window) => classify(window),
        None => {
            let mut window = [0; N];
            window.iter_mut().zip(rest).for_each(|(w, &b)| *w = b);
            classify(&window)
        }
    };
    (classes, at - origin, rest.len().min(N))
}

/// What one window says of the bytes of a name at the bits `live` (one run):
/// whether they are good (allowed and paired), whether one is not a space,
/// and the lead bit of the window's last byte (1 when a lead ends the window).
/// `before` is the lead bit of the byte before the run, at the run's first bit.
#[inline]
fn name_part(c: &NameClasses, live: u64, before: u64) -> (bool, bool, u64) {
    let lead = c.lead & live;
    let paired = c.continuation & live == (lead << 1) | before;
    let good = (c.allowed & live == live) & paired;
    (good, !c.space & live != 0, lead >> (WINDOW - 1))
}

/// [`plainly_valid_name_in`](super::plainly_valid_name_in): windows of 64
/// bytes, the lead bit of each window's last byte carried into the next.
pub(in crate::bet::batch) fn name_in(buf: &[u8], span: Span) -> bool {
    let (start, len) = (span.start as usize, usize::from(span.len));
    let end = start + len;
    if end > buf.len() || len == 0 || len > MAX_NAME_BYTES {
        return false;
    }
    let (mut good, mut visible, mut carry) = (true, false, 0);
    let mut at = start;
    while at < end {
        // `at < buf.len()`, so `lo < 64`, and `hi > lo`: the loop ends.
        // SAFETY: needs only SSE2, which this target has (see the assertion in `crate::simd`).
        let (classes, lo, _) = window_at(buf, at, |w| unsafe { NameClasses::of(&load(w)) });
        let hi = (lo + (end - at)).min(WINDOW);
        let (g, v, last_lead) = name_part(&classes, bits(lo, hi), carry << lo);
        good &= g;
        visible |= v;
        carry = last_lead;
        at += hi - lo;
    }
    // A lead that ends the name at a window's last byte is carried out of it.
    good & visible & (carry == 0)
}

/// [`plainly_valid_document_in`](super::plainly_valid_document_in): one window.
pub(in crate::bet::batch) fn document_in(buf: &[u8], span: Span) -> bool {
    let (start, len) = (span.start as usize, usize::from(span.len));
    if start + len > buf.len() || len == 0 || len > MAX_DOCUMENT_DIGITS {
        return false;
    }
    // The window holds the whole document: it starts there or ends with
    // the buffer, and a document fits in it.
    const _: () = assert!(MAX_DOCUMENT_DIGITS <= 16);
    // SAFETY: needs only SSE2, which this target has (see the assertion in `crate::simd`).
    let (digit, lo, _) = window_at(buf, start, |w| unsafe { mask16(digits(load16(w))) });
    let live = bits(lo, lo + len);
    u64::from(digit) & live == live
}

/// The quick rules of a bet's three fields from the one window that holds
/// its first name, when the other two lie in it too; `None` when they do
/// not (a long name, or fields not laid out one after another).
#[inline]
pub(in crate::bet::batch) fn bet_in_one_window(buf: &[u8], slot: &BetSlot) -> Option<bool> {
    let first = slot.first_name.start as usize;
    if first >= buf.len() {
        return None;
    }
    // SAFETY: needs only SSE2, which this target has (see the assertion in `crate::simd`).
    let ((classes, digit), lo, filled) = window_at(buf, first, |w| unsafe { bet_classes(w) });
    let origin = first - lo;
    // A field's bits, if all of them are the buffer's bytes in the window.
    let field = |span: Span| {
        let lo = (span.start as usize).checked_sub(origin)?;
        let hi = lo + usize::from(span.len);
        (hi <= filled).then_some((lo, hi))
    };
    let (first, last, document) = (field(slot.first_name)?, field(slot.last_name)?, field(slot.document)?);
    // Names of 1 to 64 bytes, below `MAX_NAME_BYTES`.
    const _: () = assert!(WINDOW <= MAX_NAME_BYTES);
    let name = |(lo, hi): (usize, usize)| {
        let (good, visible, last_lead) = name_part(&classes, bits(lo, hi), 0);
        (lo < hi) & good & visible & (last_lead == 0)
    };
    let digits = bits(document.0, document.1);
    // 1 to `MAX_DOCUMENT_DIGITS` digits (an empty one wraps to the largest length).
    let document = (document.1 - document.0).wrapping_sub(1) < MAX_DOCUMENT_DIGITS && digit & digits == digits;
    Some(name(first) & name(last) & document)
}

/// The SSE2 checks against the byte-by-byte ones where they can part:
/// the edges of the 16-byte loads and of the 64-byte windows, fields near
/// the buffer's end (fewer than 16 or 64 bytes left) and in buffers
/// shorter than a window, and every byte value at every lane.
#[cfg(test)]
mod tests;
