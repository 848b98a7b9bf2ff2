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
mod wide {
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
    mod tests {
        use super::super::{plainly_valid_bet, scalar, BetSlot, Span, MAX_NUMBER};
        use super::*;
        use crate::bet::Date;
        use proptest::prelude::*;

        /// Bytes where the classes change, and some of everything else.
        fn alphabet() -> Vec<u8> {
            let mut bytes =
                vec![0x00, 0x09, 0x0a, 0x1f, b' ', b'!', b'"', b',', b'/', b'0', b'9', b':', b'A', b'z', b'~'];
            bytes.extend_from_slice(&[0x7f, 0x80, 0x85, 0xa0, 0xa9, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xd1, 0xdf, 0xe0]);
            bytes.extend_from_slice(&[0xe2, 0xed, 0xf0, 0xff]);
            bytes
        }

        fn any_byte() -> impl Strategy<Value = u8> {
            prop_oneof![3 => prop::sample::select(alphabet()), 1 => any::<u8>()]
        }

        /// Lengths up to `max`, the edges of the loads and windows weighted.
        fn length(max: usize) -> impl Strategy<Value = usize> {
            let edges =
                [0, 1, 2, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 127, 128, 129, 191, 192, 193, 255, 256];
            let edges: Vec<usize> = edges.into_iter().filter(|&n| n <= max).collect();
            prop_oneof![2 => prop::sample::select(edges), 1 => 0..=max]
        }

        /// Bytes of a name: mostly good pieces (ASCII, spaces, two-byte
        /// characters), now and then any byte; cut to its length, which may
        /// leave a lead at its end.
        fn name(len: impl Strategy<Value = usize>) -> impl Strategy<Value = Vec<u8>> {
            let good = ["a", "Z", " ", "'", "é", "Ñ", "ß", "\u{c0}", "\u{7ff}"].map(|s| s.as_bytes().to_vec());
            let piece = prop_oneof![6 => prop::sample::select(good.to_vec()), 1 => any_byte().prop_map(|b| vec![b])];
            len.prop_flat_map(move |len| {
                prop::collection::vec(piece.clone(), len).prop_map(move |pieces| {
                    let mut bytes = pieces.concat();
                    bytes.truncate(len);
                    bytes
                })
            })
        }

        /// Bytes of a document: mostly digits, 0 to 20 of them.
        fn document() -> impl Strategy<Value = Vec<u8>> {
            length(20).prop_flat_map(|len| prop::collection::vec(prop_oneof![8 => b'0'..=b'9', 1 => any_byte()], len))
        }

        /// What lies before or after a field: often nothing or a few bytes
        /// (the last field of a payload), sometimes more than a window.
        fn around() -> impl Strategy<Value = Vec<u8>> {
            let len = prop_oneof![prop::sample::select(vec![0usize, 1, 6, 15, 16, 17, 63, 64, 65]), 0..=100usize];
            len.prop_flat_map(|len| prop::collection::vec(any_byte(), len))
        }

        fn span(start: usize, bytes: &[u8]) -> Span {
            Span { start: start as u32, len: bytes.len() as u16 }
        }

        /// A bet's bytes as the wire lays them out after `before`: each text
        /// field after its 2-byte length, then 6 bytes of date and number,
        /// then `after`.
        fn wire(before: &[u8], fields: [&[u8]; 3], after: &[u8]) -> (Vec<u8>, [Span; 3]) {
            let mut buf = before.to_vec();
            let spans = fields.map(|field| {
                buf.extend_from_slice(&(field.len() as u16).to_be_bytes());
                let span = span(buf.len(), field);
                buf.extend_from_slice(field);
                span
            });
            buf.extend_from_slice(&[0x07, 0xc6, 1, 31, 0x1d, 0x96]);
            buf.extend_from_slice(after);
            (buf, spans)
        }

        fn bet_slot([first_name, last_name, document]: [Span; 3], number: u16) -> BetSlot {
            BetSlot { first_name, last_name, document, birthdate: Date::new(1990, 1, 31).unwrap(), number }
        }

        /// The quick rules of a bet, field by field and byte by byte.
        fn model_bet(buf: &[u8], slot: &BetSlot) -> bool {
            scalar::name_in(buf, slot.first_name)
                && scalar::name_in(buf, slot.last_name)
                && scalar::document_in(buf, slot.document)
                && slot.number <= MAX_NUMBER
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// Names of 0 to 300 bytes anywhere in a buffer: the wide check
            /// says what the byte-by-byte rule says of the name's bytes.
            #[test]
            fn the_wide_name_check_is_the_scalar_rule(name in name(length(300)), before in around(), after in around()) {
                let buf = [&before[..], &name, &after].concat();
                prop_assert_eq!(name_in(&buf, span(before.len(), &name)), scalar::name(&name), "{:?} in {:?}", name, buf);
            }

            #[test]
            fn the_wide_document_check_is_the_scalar_rule(
                document in document(),
                before in around(),
                after in around(),
            ) {
                let buf = [&before[..], &document, &after].concat();
                let want = scalar::document(&document);
                prop_assert_eq!(document_in(&buf, span(before.len(), &document)), want, "{:?}", document);
            }

            /// A bet laid out as on the wire, often the payload's last (a few
            /// bytes or none after it): the one-window check (or the field
            /// by field one it falls back to) is the quick rules of its fields.
            #[test]
            fn the_one_window_bet_check_is_the_quick_rules_of_its_fields(
                first in name(length(70)),
                last in name(length(70)),
                document in document(),
                number in prop_oneof![4 => 0..=MAX_NUMBER, 1 => any::<u16>()],
                before in around(),
                after in around(),
            ) {
                let (buf, spans) = wire(&before, [&first, &last, &document], &after);
                let slot = bet_slot(spans, number);
                let fields = scalar::name(&first) && scalar::name(&last) && scalar::document(&document);
                prop_assert_eq!(plainly_valid_bet(&buf, &slot), fields && number <= MAX_NUMBER, "{:?}", buf);
                // The window is taken whenever the three fields lie in the one
                // that holds the first name.
                let origin = (spans[0].start as usize).min(buf.len().saturating_sub(WINDOW));
                let takes = spans[2].range().end <= origin + WINDOW;
                let one = bet_in_one_window(&buf, &slot);
                prop_assert_eq!(one.is_some(), takes);
                if let Some(one) = one {
                    prop_assert_eq!(one, fields);
                }
            }

            /// Mostly valid fields in any order, with bytes between them: the
            /// bet check, and the one-window check where it answers, is the
            /// quick rules of the bytes each span names.
            #[test]
            fn fields_in_any_order_get_the_quick_rules_of_their_bytes(
                first in name(length(30)),
                last in name(length(30)),
                document in document(),
                order in Just([0usize, 1, 2]).prop_shuffle(),
                gaps in prop::collection::vec(prop::collection::vec(any_byte(), 0..=4), 3),
                before in around(),
                after in around(),
            ) {
                let fields = [&first[..], &last, &document];
                let mut buf = before;
                let mut spans = [Span { start: 0, len: 0 }; 3];
                for (i, gap) in order.into_iter().zip(&gaps) {
                    buf.extend_from_slice(gap);
                    spans[i] = span(buf.len(), fields[i]);
                    buf.extend_from_slice(fields[i]);
                }
                buf.extend_from_slice(&after);
                let slot = bet_slot(spans, 1);
                let want = model_bet(&buf, &slot);
                prop_assert_eq!(plainly_valid_bet(&buf, &slot), want, "{:?} {:?}", buf, spans);
                if let Some(one) = bet_in_one_window(&buf, &slot) {
                    prop_assert_eq!(one, want);
                }
            }

            /// Spans anywhere (out of order, overlapping, past the buffer's
            /// end): the bet check is still the rules of the bytes they name.
            #[test]
            fn any_spans_get_the_quick_rules_of_their_bytes(
                buf in prop::collection::vec(prop_oneof![3 => prop::sample::select(b"a 0\xc3\xa9".to_vec()), 1 => any_byte()], 0..=140),
                spans in prop::collection::vec((0..=150u32, 0..=70u16), 3),
                number in 0..=MAX_NUMBER,
            ) {
                let spans = [0, 1, 2].map(|i| Span { start: spans[i].0, len: spans[i].1 });
                let slot = bet_slot(spans, number);
                prop_assert_eq!(plainly_valid_bet(&buf, &slot), model_bet(&buf, &slot), "{:?} {:?}", buf, spans);
            }
        }

        /// Every byte value in every lane of a window gets the classes of its
        /// value, and no other lane changes.
        #[test]
        fn every_byte_in_every_lane_gets_its_classes() {
            for b in 0..=255u8 {
                for lane in 0..WINDOW {
                    let mut window = [b'a'; WINDOW];
                    window[lane] = b;
                    // SAFETY: this target has SSE2 (see the assertion in `crate::simd`).
                    let (c, digit) = unsafe { bet_classes(&window) };
                    let at = |yes: bool| if yes { 1u64 << lane } else { 0 };
                    let lead = (0xc3..=0xdf).contains(&b);
                    let continuation = (0x80..=0xbf).contains(&b);
                    let printable = (0x20..=0x7e).contains(&b);
                    assert_eq!(c.allowed, !(1 << lane) | at(printable || lead || continuation), "{b:#x} at {lane}");
                    assert_eq!(c.lead, at(lead), "{b:#x} at {lane}");
                    assert_eq!(c.continuation, at(continuation), "{b:#x} at {lane}");
                    assert_eq!(c.space, at(b == b' '), "{b:#x} at {lane}");
                    assert_eq!(digit, at(b.is_ascii_digit()), "{b:#x} at {lane}");
                    let mut chunk = [b'a'; 16];
                    chunk[lane % 16] = b;
                    // SAFETY: as above.
                    let digit16 = unsafe { mask16(digits(load16(&chunk))) };
                    assert_eq!(u64::from(digit16), at(b.is_ascii_digit()) >> (lane / 16 * 16), "{b:#x} at {lane}");
                }
            }
        }

        /// Every byte value at every place of a name that spans three windows,
        /// alone, after a lead and before a continuation (pairs across the
        /// 16-byte loads and the windows), with the name at the buffer's end
        /// or not: the wide check is the rule.
        #[test]
        fn every_byte_at_every_place_of_a_long_name() {
            let mut checked = (0, 0);
            for b in 0..=255u8 {
                for at in 0..130 {
                    for context in 0..3 {
                        let mut name = [b'a'; 130];
                        name[at] = b;
                        match context {
                            1 if at > 0 => name[at - 1] = 0xc3,
                            2 if at + 1 < name.len() => name[at + 1] = 0xa9,
                            _ => {}
                        }
                        let want = scalar::name(&name);
                        checked.0 += usize::from(want);
                        checked.1 += 1;
                        for (before, after) in [(0, 0), (5, 0), (0, 7), (3, 64)] {
                            let buf = [&vec![b'x'; before][..], &name, &vec![0xc3; after]].concat();
                            assert_eq!(
                                name_in(&buf, span(before, &name)),
                                want,
                                "{b:#x} at {at}, {context}, {before}+{after}"
                            );
                        }
                    }
                }
            }
            // Both answers came up many times.
            assert!(checked.0 > 10_000 && checked.1 - checked.0 > 10_000, "{checked:?}");
        }

        /// Every byte value at every place of the fields of a usual bet read
        /// from one window: the answer is the rules of its fields.
        #[test]
        fn every_byte_at_every_place_of_a_one_window_bet() {
            let (first, last, document) =
                (*b"Mar\xc3\xada Jos\xc3\xa9 abcdef", *b"N\xc3\xba\xc3\xb1ez de la Pe\xc3\xb1a", *b"0012345678");
            for b in 0..=255u8 {
                for at in 0..first.len() + last.len() + document.len() {
                    let (mut f, mut l, mut d) = (first, last, document);
                    let byte = match at {
                        at if at < f.len() => &mut f[at],
                        at if at < f.len() + l.len() => &mut l[at - f.len()],
                        at => &mut d[at - f.len() - l.len()],
                    };
                    *byte = b;
                    let want = scalar::name(&f) && scalar::name(&l) && scalar::document(&d);
                    for (before, after) in [(0, 0), (9, 0), (0, 70), (17, 3)] {
                        let (buf, spans) = wire(&vec![b'x'; before], [&f, &l, &d], &vec![b'y'; after]);
                        let slot = bet_slot(spans, 1);
                        assert_eq!(bet_in_one_window(&buf, &slot), Some(want), "{b:#x} at {at}, {before}+{after}");
                    }
                }
            }
        }

        /// A lead as a name's last byte at the last lane of a window (whose
        /// missing continuation would be shifted out of the mask) is refused,
        /// in a name of one or more windows and in a bet read from one window
        /// whose fields are not in the wire's order.
        #[test]
        fn a_lead_at_the_last_lane_of_a_window_ends_no_name() {
            for len in [64, 128, 192] {
                let name = [&vec![b'a'; len - 1][..], b"\xc3"].concat();
                assert!(!name_in(&name, span(0, &name)), "{len}");
                let good = [&vec![b'a'; len - 2][..], b"\xc3\xa9"].concat();
                assert!(name_in(&good, span(0, &good)), "{len}");
            }
            // First name, document, then the last name up to the window's last byte.
            let mut buf = b"Ana12".to_vec();
            buf.resize(40, b'-');
            let last = [&[b'a'; 23][..], b"\xc3"].concat();
            buf.extend_from_slice(&last);
            let spans = [span(0, b"Ana"), span(40, &last), span(3, b"12")];
            assert_eq!(bet_in_one_window(&buf, &bet_slot(spans, 1)), Some(false));
            buf[63] = b'z';
            assert_eq!(bet_in_one_window(&buf, &bet_slot(spans, 1)), Some(true));
        }

        #[test]
        fn a_bet_that_does_not_fit_one_window_is_checked_field_by_field() {
            let long = [b'a'; 40];
            let (buf, spans) = wire(b"", [&long, &long, b"12"], b"");
            let slot = bet_slot(spans, 1);
            assert_eq!(bet_in_one_window(&buf, &slot), None);
            assert!(plainly_valid_bet(&buf, &slot));
            let bad = [&long[..39], b"\xc3"].concat();
            let (buf, spans) = wire(b"", [&long, &bad, b"12"], b"");
            assert!(!plainly_valid_bet(&buf, &bet_slot(spans, 1)));
        }
    }
}
