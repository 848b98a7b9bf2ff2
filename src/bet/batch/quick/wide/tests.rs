use super::super::{plainly_valid_bet, scalar, BetSlot, Span, MAX_NUMBER};
use super::*;
use crate::bet::Date;
use proptest::prelude::*;

/// Bytes where the classes change, and some of everything else.
fn alphabet() -> Vec<u8> {
    let mut bytes = vec![0x00, 0x09, 0x0a, 0x1f, b' ', b'!', b'"', b',', b'/', b'0', b'9', b':', b'A', b'z', b'~'];
    bytes.extend_from_slice(&[0x7f, 0x80, 0x85, 0xa0, 0xa9, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xd1, 0xdf, 0xe0]);
    bytes.extend_from_slice(&[0xe2, 0xed, 0xf0, 0xff]);
    bytes
}

fn any_byte() -> impl Strategy<Value = u8> {
    prop_oneof![3 => prop::sample::select(alphabet()), 1 => any::<u8>()]
}

/// Lengths up to `max`, the edges of the loads and windows weighted.
fn length(max: usize) -> impl Strategy<Value = usize> {
    let edges = [0, 1, 2, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 127, 128, 129, 191, 192, 193, 255, 256];
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
                    assert_eq!(name_in(&buf, span(before, &name)), want, "{b:#x} at {at}, {context}, {before}+{after}");
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
