//! [`row::scan`](super::row::scan) 64 bytes at a time, with SSE2 (part of
//! every x86_64 CPU, so nothing is detected at run time).
//!
//! Four 16-byte loads ([`crate::simd`]; rows average about 41 bytes) give, for each class of bytes asked about, one bit per
//! byte of the window (a `u64`). The row ends at the first quote or line end
//! (the lowest bit of their mask), the commas are the set bits of the comma
//! mask below it, and a field's classes are whether its bits meet each class
//! mask; the UTF-8 check of the names and document is two comparisons of
//! masks: no branch per byte. Rows that do not end inside the window, or with
//! fewer than 64 bytes buffered, are left to the byte-by-byte scan and UTF-8
//! check, which these must equal (property-tested below).

use super::row::{Line, Stop, CONTROL, NOT_DIGIT, PRINTABLE};
use crate::simd::{between, bits, continuations, digits, eq, load, mask, or, splat, WINDOW};
use core::arch::x86_64::{_mm_cmpeq_epi8, _mm_min_epu8};

/// The classes the scan asks about, one bit per byte of the window.
struct ScanMasks {
    /// `"`, `\r`, `\n`: where a plain row stops.
    stops: u64,
    commas: u64,
    /// `b < 0x20`, `0x7f`, `0xc2` (row.rs's `CONTROL`).
    control: u64,
    /// `0x21..=0x7e`.
    printable: u64,
    /// `0-9`.
    digits: u64,
}

impl ScanMasks {
    #[inline]
    #[target_feature(enable = "sse2")]
    fn of(window: &[u8; WINDOW]) -> ScanMasks {
        let v = load(window);
        ScanMasks {
            stops: mask(&v, |v| or(or(eq(v, b'"'), eq(v, b'\r')), eq(v, b'\n'))),
            commas: mask(&v, |v| eq(v, b',')),
            control: mask(&v, |v| {
                // Unsigned `v <= 0x1f` is `min(v, 0x1f) == v`.
                let low = _mm_cmpeq_epi8(_mm_min_epu8(v, splat(0x1f)), v);
                or(or(low, eq(v, 0x7f)), eq(v, 0xc2))
            }),
            printable: mask(&v, |v| between(v, 0x20, 0x7f)),
            digits: mask(&v, |v| digits(v)),
        }
    }

    /// The row.rs classes of the bytes whose bits are set in `field`.
    fn classes(&self, field: u64) -> u8 {
        let has = |mask: u64, class: u8| if mask & field != 0 { class } else { 0 };
        has(self.control, CONTROL) | has(self.printable, PRINTABLE) | has(!self.digits, NOT_DIGIT)
    }
}

/// [`row::scan`](super::row::scan) of a row that ends within the first
/// [`WINDOW`] bytes of `bytes`; `None` when fewer are given or no quote or
/// line end is among them.
#[inline]
pub(super) fn scan(bytes: &[u8]) -> Option<Line> {
    let window = bytes.first_chunk()?;
    // SAFETY: needs only SSE2, which this target has (see the assertion in `crate::simd`).
    let m = unsafe { ScanMasks::of(window) };
    if m.stops == 0 {
        return None;
    }
    let len = m.stops.trailing_zeros() as usize;
    let stop = if window[len] == b'"' { Stop::Quote } else { Stop::LineEnd };
    let mut left = m.commas & bits(0, len);
    let found = left.count_ones() as usize;
    let (mut commas, mut classes) = ([0; 4], [0; 3]);
    let mut start = 0;
    for (k, slot) in commas.iter_mut().enumerate() {
        if left == 0 {
            break;
        }
        let comma = left.trailing_zeros() as usize;
        *slot = comma;
        if let Some(class) = classes.get_mut(k) {
            *class = m.classes(bits(start, comma));
        }
        start = comma + 1;
        left &= left - 1;
    }
    Some(Line { len, stop, commas, found, classes })
}

/// `window[..end]` as text, if it is UTF-8: at once when it holds only ASCII
/// and well-formed two-byte sequences (nearly every row), through
/// `std::str::from_utf8` otherwise.
pub(super) fn utf8(window: &[u8; WINDOW], end: usize) -> Option<&str> {
    let bytes = window.get(..end)?;
    // SAFETY: needs only SSE2, which this target has (see the assertion in `crate::simd`).
    if unsafe { Utf8Masks::of(window) }.two_byte(end) {
        // SAFETY: `two_byte` found in the masks of `window[..end]`, which is
        // `bytes`, only ASCII bytes and pairs of a lead 0xc2..=0xdf followed by
        // a continuation 0x80..=0xbf: UTF-8's well-formed one- and two-byte
        // sequences (U+0000..U+07FF), so `bytes` is UTF-8.
        return Some(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).ok()
}

/// The classes the UTF-8 check asks about, one bit per byte of the window.
struct Utf8Masks {
    /// `0x80..=0xff`.
    high: u64,
    /// `0x80..=0xbf`.
    continuation: u64,
    /// `0xc2..=0xdf`: the leads of two-byte sequences.
    lead2: u64,
}

impl Utf8Masks {
    #[inline]
    #[target_feature(enable = "sse2")]
    fn of(window: &[u8; WINDOW]) -> Utf8Masks {
        let v = load(window);
        Utf8Masks {
            high: mask(&v, |v| v),
            continuation: mask(&v, |v| continuations(v)),
            // Signed, 0xc2..=0xdf are -62..=-33.
            lead2: mask(&v, |v| between(v, 0xc1, 0xe0)),
        }
    }

    /// Whether the first `end` bytes are only ASCII bytes and pairs of a lead
    /// 0xc2..=0xdf followed by a continuation 0x80..=0xbf (false for `end >= 64`).
    fn two_byte(&self, end: usize) -> bool {
        if end >= WINDOW {
            return false;
        }
        let below = bits(0, end);
        let (lead, continuation) = (self.lead2 & below, self.continuation & below);
        // Every byte >= 0x80 a lead or a continuation (the two never overlap),
        // every continuation right after a lead and every lead right before a
        // continuation: a lead at `end - 1` puts a bit at `end` in `lead << 1`,
        // which `continuation` never has, and as `end < 64` no lead is shifted out.
        self.high & below == lead | continuation && continuation == lead << 1
    }
}

#[cfg(test)]
mod tests {
    use super::super::row::{parse_plain, quick_bet, scan_scalar};
    use super::*;
    use proptest::prelude::*;

    /// Bytes where the classes change, every special, and some of everything else.
    fn alphabet() -> Vec<u8> {
        let mut bytes: Vec<u8> = (0x00..=0x21).collect();
        bytes.extend_from_slice(b",\"-/0123456789:AZaz~\x7f");
        bytes.extend_from_slice(&[0x80, 0x85, 0xa0, 0xa9, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xdf, 0xe0, 0xed, 0xf0, 0xff]);
        bytes
    }

    fn any_byte() -> impl Strategy<Value = u8> {
        prop::sample::select(alphabet())
    }

    /// Row lengths, the edges of the 16-byte loads and of the window often.
    fn length() -> impl Strategy<Value = usize> {
        prop_oneof![
            prop::sample::select(vec![0usize, 1, 15, 16, 17, 31, 32, 33, 47, 48, 49, 62, 63, 64, 65, 66, 127, 128]),
            0..=140usize,
        ]
    }

    /// A row of random bytes: mostly ones that do not stop it, some of any
    /// kind (so it may stop earlier), and a chosen end.
    fn random_row() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![3 => prop::sample::select(b"aZ09- ,,\xc3\xa9".to_vec()), 1 => any_byte()];
        let end = prop::sample::select(vec![&b"\r\n"[..], b"\n", b"\r", b"\"", b""]);
        (length().prop_flat_map(move |len| prop::collection::vec(byte.clone(), len)), end).prop_map(|(mut row, end)| {
            row.extend_from_slice(end);
            row
        })
    }

    /// A good value four times in five.
    fn good_or_bad(good: Vec<&'static str>, bad: Vec<&'static str>) -> impl Strategy<Value = &'static str> + Clone {
        prop_oneof![4 => prop::sample::select(good), 1 => prop::sample::select(bad)]
    }

    /// A row close to a valid bet (names with one- to four-byte characters;
    /// now and then a control, a blank or another bad field), then often up to
    /// two bytes of the alphabet put in or over it anywhere.
    fn bet_row() -> impl Strategy<Value = Vec<u8>> {
        let name = good_or_bad(
            vec!["Ana", "José Núñez", "Ñ", "日本", "😀x", "ab\u{7ff}", "María de los Ángeles", "Iñíguez Echeverría"],
            vec!["Zoë\u{85}", "\u{a0}", " ", "", "Ü\u{80}", "a\tb", "x\u{7f}"],
        );
        let document = good_or_bad(vec!["00000042", "30123456", "1"], vec!["", "12a", "12345678901234567", " 7"]);
        let date =
            good_or_bad(vec!["1990-01-31", "2000-02-29", "1940-12-01"], vec!["1990-02-30", "1990-1-31", "1990/01/31"]);
        let number = good_or_bad(vec!["0", "7574", "9999", "42"], vec!["10000", "", "-1", "1 "]);
        let edit = (any::<prop::sample::Index>(), any_byte(), any::<bool>());
        let edits = prop_oneof![2 => Just(Vec::new()), 1 => prop::collection::vec(edit, 1..=2)];
        (name.clone(), name, document, date, number, edits).prop_map(|(first, last, document, date, number, edits)| {
            let mut row = [first, last, document, date, number].join(",").into_bytes();
            for (at, byte, insert) in edits {
                let at = at.index(row.len() + 1);
                match row.get_mut(at) {
                    Some(b) if !insert => *b = byte,
                    _ => row.insert(at, byte),
                }
            }
            row.extend_from_slice(b"\r\n");
            row
        })
    }

    /// 64 bytes, mostly ASCII and two-byte characters, now and then a longer
    /// character, a malformed sequence (overlong, surrogate, cut, stray) or
    /// any byte: one odd piece among good ones is what a check must not miss.
    fn utf8_window() -> impl Strategy<Value = [u8; WINDOW]> {
        let good = prop::sample::select(vec!["a", " ", ",", "0", "é", "Ñ", "ß", "\u{80}", "\u{7ff}"])
            .prop_map(|s| s.as_bytes().to_vec());
        let odd = prop::sample::select(vec![
            &b"\xc0\x80"[..],
            b"\xc1\xbf",
            b"\xc2",
            b"\xdf",
            b"\x80",
            b"\xbf",
            b"\xc3\xc3",
            b"\xe0\xa0\x80",
            b"\xe0\x80\x80",
            b"\xed\x9f\xbf",
            b"\xed\xa0\x80",
            "日".as_bytes(),
            "😀".as_bytes(),
            b"\xf0\x80\x80\x80",
            b"\xf4\x90\x80\x80",
            b"\xff",
        ])
        .prop_map(|b| b.to_vec());
        let piece = prop_oneof![30 => good, 1 => odd, 1 => any_byte().prop_map(|b| vec![b])];
        prop::collection::vec(piece, 64).prop_map(|pieces| {
            let bytes = pieces.concat();
            let mut window = [0; WINDOW];
            window.copy_from_slice(&bytes[..WINDOW]);
            window
        })
    }

    /// Only ASCII and two-byte sequences, byte by byte.
    fn two_byte_model(bytes: &[u8]) -> bool {
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            match (b, bytes.get(i + 1)) {
                (0x00..=0x7f, _) => i += 1,
                (0xc2..=0xdf, Some(0x80..=0xbf)) => i += 2,
                _ => return false,
            }
        }
        true
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The wide scan says what the byte-by-byte scan says, whatever comes
        /// before and after the row, and takes every row it can; the row's
        /// parse (its UTF-8 check then wide) is the byte-by-byte one's.
        #[test]
        fn equals_the_scalar_scan(
            before in prop::collection::vec(any_byte(), 0..=20),
            row in prop_oneof![1 => random_row(), 2 => bet_row()],
            after in prop::collection::vec(any_byte(), 0..=80),
        ) {
            let buffer = [before.as_slice(), &row, &after].concat();
            let bytes = &buffer[before.len()..];
            let reference = scan_scalar(bytes);
            let fast = scan(bytes);
            let takes = bytes.len() >= WINDOW && reference.stop != Stop::NoEnd && reference.len < WINDOW;
            prop_assert_eq!(fast.is_some(), takes);
            prop_assert_eq!(super::super::row::scan(bytes), reference);
            let Some(fast) = fast else { return Ok(()) };
            prop_assert_eq!(fast, reference);
            // The row alone is shorter than the window: checked byte by byte.
            let alone = &bytes[..reference.len].to_vec();
            // The quick checks alone, and the whole parse.
            prop_assert_eq!(quick_bet(bytes, &fast), quick_bet(alone, &reference));
            prop_assert_eq!(parse_plain(bytes, &fast), parse_plain(alone, &reference));
        }

        /// The wide UTF-8 check answers as `std::str::from_utf8`, and takes its
        /// quick way exactly for ASCII and two-byte sequences.
        #[test]
        fn utf8_equals_std(
            window in utf8_window(),
            end in prop_oneof![prop::sample::select(vec![0usize, 1, 15, 16, 17, 62, 63, 64]), 0..=WINDOW],
        ) {
            let bytes = &window[..end];
            prop_assert_eq!(utf8(&window, end), std::str::from_utf8(bytes).ok());
            // SAFETY: this target has SSE2 (see the assertion in `crate::simd`).
            let masks = unsafe { Utf8Masks::of(&window) };
            prop_assert_eq!(masks.two_byte(end), end < WINDOW && two_byte_model(bytes));
        }
    }

    #[test]
    fn masks_classify_every_byte_like_the_table() {
        for b in 0..=255u8 {
            let mut window = [b'a'; WINDOW];
            let at = [0, 15, 16, 17, 31, 32, 48, 63];
            for i in at {
                window[i] = b;
            }
            let want = |yes: bool| if yes { at.iter().fold(0u64, |m, &i| m | 1 << i) } else { 0 };
            // SAFETY: this target has SSE2 (see the assertion in `crate::simd`).
            let (m, u) = unsafe { (ScanMasks::of(&window), Utf8Masks::of(&window)) };
            assert_eq!(m.stops, want(matches!(b, b'"' | b'\r' | b'\n')), "{b:#x}");
            assert_eq!(m.commas, want(b == b','), "{b:#x}");
            assert_eq!(m.control, want(b < 0x20 || b == 0x7f || b == 0xc2), "{b:#x}");
            assert_eq!(m.printable & want(true), want((0x21..=0x7e).contains(&b)), "{b:#x}");
            assert_eq!(!m.digits & want(true), want(!b.is_ascii_digit()), "{b:#x}");
            assert_eq!(u.high, want(b >= 0x80), "{b:#x}");
            assert_eq!(u.continuation, want((0x80..=0xbf).contains(&b)), "{b:#x}");
            assert_eq!(u.lead2, want((0xc2..=0xdf).contains(&b)), "{b:#x}");
        }
    }
}
