//! One stored row: rendered from a bet (byte for byte what the csv crate would
//! write) and, reading back, the few fields the server needs.

use crate::bet::{AgencyId, BetRef, RawBet};

/// Renders one row in the stored format into `out`, quoting a field only when it
/// holds a comma, a quote or a line break: byte for byte what the csv crate's
/// writer produces (a property test checks it), without its per-field overhead.
pub fn render_row(out: &mut Vec<u8>, agency: AgencyId, bet: &BetRef<'_>) {
    render_raw_row(out, agency, &RawBet::from(*bet));
}

pub fn render_raw_row(out: &mut Vec<u8>, agency: AgencyId, bet: &RawBet<'_>) {
    render_rows(out, agency, std::iter::once(*bet));
}

/// Room a row may take past its own bytes: the prefix (16 bytes copied, 2 to 11
/// used) and the tail (24 copied, at least 14 used) are fixed-size arrays.
const SLACK: usize = 16;
/// The least the buffer grows by, so zeroing it is one call per many rows.
const GROW: usize = 4096;

/// Renders a batch of one agency's rows: the agency's digits are worked out
/// once, and each row is written into room made in steps of at least 4 KiB
/// (zeroed by `resize`, then cut back to what was written: a batch of 100
/// usual rows takes one or two steps), with fixed-size copies where a call
/// to `memcpy` per field would be most of the cost (this runs for every
/// stored bet, on the store's thread).
pub fn render_rows<'a>(out: &mut Vec<u8>, agency: AgencyId, bets: impl IntoIterator<Item = RawBet<'a>>) {
    let mut prefix = [0u8; 16];
    let digits = decimal(u64::from(agency), &mut prefix[..10]);
    let prefix_len = digits + 1;
    prefix.copy_within(10 - digits..10, 0);
    prefix[digits] = b',';
    let mut end = out.len();
    for bet in bets {
        // The longest this row can be: agency and number at most 11 + 4 bytes,
        // the date 10, four commas and a newline, and a quoted name at most
        // doubles plus its two quotes.
        let bound = prefix_len + 2 * (bet.first_name.len() + bet.last_name.len()) + bet.document.len() + 24;
        if out.len() < end + bound + SLACK {
            out.resize(end + (bound + SLACK).max(GROW), 0);
        }
        end += render_into(&mut out[end..end + bound + SLACK], &prefix, prefix_len, &bet);
    }
    out.truncate(end);
}

/// Writes one row at the start of `row` (room for the row and [`SLACK`]);
/// returns its length.
fn render_into(row: &mut [u8], prefix: &[u8; 16], prefix_len: usize, bet: &RawBet<'_>) -> usize {
    row[..16].copy_from_slice(prefix);
    let mut at = prefix_len;
    at += put_text_field(&mut row[at..], bet.first_name);
    row[at] = b',';
    at += 1;
    at += put_text_field(&mut row[at..], bet.last_name);
    row[at] = b',';
    at += 1;
    at += put(&mut row[at..], bet.document).0;
    // `,YYYY-MM-DD,` then the number and the newline, built in a fixed array
    // (no copy of a variable length) and written whole.
    let d = bet.birthdate;
    let mut tail = [0u8; 24];
    tail[..12].copy_from_slice(b",0000-00-00,");
    let (y, m, day) = (d.year(), d.month(), d.day());
    tail[1..3].copy_from_slice(&two_digits((y / 100) as u8));
    tail[3..5].copy_from_slice(&two_digits((y % 100) as u8));
    tail[6..8].copy_from_slice(&two_digits(m));
    tail[9..11].copy_from_slice(&two_digits(day));
    let (number, len) = number_line(bet.number);
    tail[12..20].copy_from_slice(&number.to_le_bytes());
    row[at..at + tail.len()].copy_from_slice(&tail);
    at + 12 + len
}

/// A lottery number's digits (no leading zeros) and a newline, as the bytes
/// of a little-endian word, with how many bytes they take. Numbers are below
/// 10,000 (validation keeps them in 0..=9999); a larger one would be written
/// modulo 10,000 rather than past its room.
fn number_line(n: u16) -> (u64, usize) {
    debug_assert!(n <= crate::bet::MAX_NUMBER);
    let n = u32::from(n % 10_000);
    let digits = 1 + usize::from(n >= 10) + usize::from(n >= 100) + usize::from(n >= 1000);
    let [hi0, hi1] = two_digits((n / 100) as u8);
    let [lo0, lo1] = two_digits((n % 100) as u8);
    // Four digits, first in memory first; the leading zeros are shifted out.
    let four = u64::from(u32::from_le_bytes([hi0, hi1, lo0, lo1]));
    let word = (four >> (8 * (4 - digits))) | u64::from(b'\n') << (8 * digits);
    (word, digits + 1)
}

/// Copies `src` to the start of `dst` (which has room for it) and says
/// whether it holds a byte the csv crate quotes for (comma, quote, line
/// break); returns its length too. With SSE2 on x86_64 ([`wide::put`]:
/// fixed-size moves, no call to `memcpy`, the quote check on the moved
/// vectors), byte by byte elsewhere ([`scalar::put`], the reference the wide
/// copy is tested against).
#[cfg(target_arch = "x86_64")]
use wide::put;

#[cfg(not(target_arch = "x86_64"))]
use scalar::put;

/// [`put`] byte by byte: the way on targets without SSE2 and the reference.
#[cfg(any(test, not(target_arch = "x86_64")))]
mod scalar {
    pub(super) fn put(dst: &mut [u8], src: &[u8]) -> (usize, bool) {
        dst[..src.len()].copy_from_slice(src);
        (src.len(), src.iter().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')))
    }
}

/// [`put`] with SSE2: a short field is moved as two overlapping words (one
/// to three bytes, four to seven, eight to sixteen) that are also put side
/// by side in one vector for the quote check; a longer one in 16-byte
/// vectors, the last one overlapping. No move writes past the field, and
/// none reads past `src`.
#[cfg(target_arch = "x86_64")]
mod wide {
    use crate::simd::{__m128i, eq, load16, mask16, or, store16};
    use core::arch::x86_64::{_mm_set_epi64x, _mm_setzero_si128};

    #[inline(always)]
    pub(super) fn put(dst: &mut [u8], src: &[u8]) -> (usize, bool) {
        let n = src.len();
        let quoted = match n {
            0 => false,
            1..4 => {
                // The first, middle and last bytes cover 1 to 3 bytes.
                let (a, b, c) = (src[0], src[n / 2], src[n - 1]);
                dst[0] = a;
                dst[n / 2] = b;
                dst[n - 1] = c;
                // Zero bytes are never quoted for.
                quoted_words(u64::from(u32::from_le_bytes([a, b, c, 0])), 0)
            }
            4..8 => {
                let (a, b) = (word::<4>(src, 0), word::<4>(src, n - 4));
                dst[..4].copy_from_slice(&a);
                dst[n - 4..n].copy_from_slice(&b);
                quoted_words(u64::from(u32::from_le_bytes(a)) | u64::from(u32::from_le_bytes(b)) << 32, 0)
            }
            8..=16 => {
                let (a, b) = (word::<8>(src, 0), word::<8>(src, n - 8));
                dst[..8].copy_from_slice(&a);
                dst[n - 8..n].copy_from_slice(&b);
                quoted_words(u64::from_le_bytes(a), u64::from_le_bytes(b))
            }
            // SAFETY: needs only SSE2, which this target has (see the assertion in `crate::simd`).
            _ => unsafe { copy_long(dst, src) },
        };
        (n, quoted)
    }

    /// Whether a byte of `a` or `b` is one the csv crate quotes for.
    #[inline(always)]
    fn quoted_words(a: u64, b: u64) -> bool {
        // SAFETY: needs only SSE2, which this target has (see the assertion in `crate::simd`).
        unsafe { mask16(quoted(_mm_set_epi64x(b as i64, a as i64))) != 0 }
    }

    /// All ones in the bytes of `v` the csv crate quotes for.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn quoted(v: __m128i) -> __m128i {
        or(or(eq(v, b','), eq(v, b'"')), or(eq(v, b'\n'), eq(v, b'\r')))
    }

    /// [`put`] of more than 16 bytes: whole vectors, then the last 16 bytes
    /// (overlapping); whether one is quoted for.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn copy_long(dst: &mut [u8], src: &[u8]) -> bool {
        let n = src.len();
        let mut found = _mm_setzero_si128();
        let mut at = 0;
        while at + 16 < n {
            found = or(found, move16(dst, src, at));
            at += 16;
        }
        found = or(found, move16(dst, src, n.saturating_sub(16)));
        mask16(found) != 0
    }

    /// Copies the 16 bytes of `src` at `at` to `dst` at `at`; returns their quote mask.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn move16(dst: &mut [u8], src: &[u8], at: usize) -> __m128i {
        let v = load16(&word::<16>(src, at));
        // `dst` has room for `src`: the slice is 16 bytes, so the conversion holds.
        if let Ok(dst) = <&mut [u8; 16]>::try_from(&mut dst[at..at + 16]) {
            store16(dst, v);
        }
        quoted(v)
    }

    /// `N` bytes of `src` from `at` (which the caller keeps within it).
    #[inline(always)]
    fn word<const N: usize>(src: &[u8], at: usize) -> [u8; N] {
        src.get(at..at + N).and_then(|w| <[u8; N]>::try_from(w).ok()).unwrap_or([0; N])
    }

    /// The SSE2 copy against the byte-by-byte one: same bytes written, same
    /// answer, for every length across the 8- and 16-byte moves and each
    /// quoted byte at every place (the last lane of a vector included).
    #[cfg(test)]
    mod tests {
        use super::super::scalar;
        use super::*;
        use proptest::prelude::*;

        fn check(src: &[u8], fill: u8) {
            let (mut wide, mut byte) = ([fill; 400], [fill; 400]);
            let got = put(&mut wide, src);
            assert_eq!(got, scalar::put(&mut byte, src), "{src:?}");
            assert_eq!(&wide[..src.len()], src);
        }

        #[test]
        fn a_quoted_byte_is_found_at_every_place() {
            for n in 0..=80 {
                let plain: Vec<u8> = b"Zo\xc3\xab x'".iter().copied().cycle().take(n).collect();
                check(&plain, 0xee);
                for at in 0..n {
                    for b in [b',', b'"', b'\n', b'\r', b'\0', b';', 0xac, 0xa2, 0x8a, 0x8d] {
                        let mut src = plain.clone();
                        src[at] = b;
                        check(&src, b',');
                    }
                }
            }
        }

        /// Mostly name bytes, some quoted for, any byte now and then; the
        /// lengths around the moves' edges weighted.
        fn field() -> impl Strategy<Value = Vec<u8>> {
            let edges = vec![0usize, 1, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 47, 48, 49, 64, 65];
            let len = prop_oneof![prop::sample::select(edges), 0..=300usize];
            let byte = prop_oneof![
                8 => prop::sample::select(b"ab \xc3\xa9".to_vec()),
                1 => prop::sample::select(b",\"\n\r".to_vec()),
                1 => any::<u8>(),
            ];
            len.prop_flat_map(move |len| prop::collection::vec(byte.clone(), len))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn copies_and_answers_as_byte_by_byte(src in field(), fill in any::<u8>()) {
                check(&src, fill);
            }
        }
    }
}

/// Writes a name at the start of `dst`, in quotes (inner quotes doubled) only
/// when it holds a comma, a quote or a line break, as the csv crate does;
/// returns how many bytes it took.
#[inline(always)]
fn put_text_field(dst: &mut [u8], s: &[u8]) -> usize {
    let (n, special) = put(dst, s);
    if !special {
        return n;
    }
    dst[0] = b'"';
    let mut at = 1;
    for &b in s {
        if b == b'"' {
            dst[at] = b'"';
            at += 1;
        }
        dst[at] = b;
        at += 1;
    }
    dst[at] = b'"';
    at + 1
}

/// `00` to `99`, looked up rather than worked out: four of them per row.
const TWO_DIGITS: [[u8; 2]; 100] = {
    let mut table = [[0; 2]; 100];
    let mut v = 0;
    while v < 100 {
        table[v] = [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8];
        v += 1;
    }
    table
};

/// `v` (below 100; a larger one is taken modulo 100) as two ASCII digits.
fn two_digits(v: u8) -> [u8; 2] {
    TWO_DIGITS[usize::from(v % 100)]
}

/// Writes `v` right-aligned at the end of `buf` (which must hold its digits);
/// returns how many digits it has.
fn decimal(mut v: u64, buf: &mut [u8]) -> usize {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    buf.len() - i
}

/// The fields of a stored row that the server needs, found without a full CSV parse.
///
/// Names cannot hold control characters, so every row is one line; the fields
/// after the names (document, birthdate, number) and the agency before them never
/// need quoting, so they are found from the two ends of the line.
#[derive(Debug, PartialEq, Eq)]
pub struct RowKeys<'a> {
    pub agency: AgencyId,
    pub document: &'a [u8],
    pub number: &'a [u8],
}

pub fn parse_row_keys(row: &[u8]) -> Result<RowKeys<'_>, String> {
    let row = row.strip_suffix(b"\r").unwrap_or(row);
    let first = row.iter().position(|&b| b == b',').ok_or("not a row: no comma")?;
    let agency = &row[..first];
    let mut rest = &row[first + 1..];
    let mut tail = [&b""[..]; 3];
    for slot in tail.iter_mut().rev() {
        let comma = rest.iter().rposition(|&b| b == b',').ok_or("expected 6 fields")?;
        *slot = &rest[comma + 1..];
        rest = &rest[..comma];
    }
    let [document, birthdate, number] = tail;
    let digits =
        |f: &[u8], min: usize, max: usize| f.len() >= min && f.len() <= max && f.iter().all(u8::is_ascii_digit);
    if !digits(agency, 1, 10) {
        return Err(format!("agency {:?} is not a number", String::from_utf8_lossy(agency)));
    }
    if !digits(document, 1, crate::bet::MAX_DOCUMENT_DIGITS) {
        return Err(format!("document {:?} is not 1 to 16 digits", String::from_utf8_lossy(document)));
    }
    if birthdate.len() != 10 || birthdate[4] != b'-' || birthdate[7] != b'-' {
        return Err(format!("birthdate {:?} is not YYYY-MM-DD", String::from_utf8_lossy(birthdate)));
    }
    if !digits(number, 1, 4) {
        return Err(format!("number {:?} is not 0..=9999", String::from_utf8_lossy(number)));
    }
    if rest.is_empty() {
        return Err("expected 6 fields".to_string());
    }
    let agency = std::str::from_utf8(agency).ok().and_then(|a| a.parse().ok()).ok_or("agency out of range")?;
    Ok(RowKeys { agency, document, number })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bet::Date;
    use proptest::prelude::*;

    /// What the csv crate writes for these rows (the stored format's definition).
    fn csv_crate_rows(agency: AgencyId, bets: &[RawBet<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(&mut out);
            for bet in bets {
                let (agency, date, number) = (agency.to_string(), bet.birthdate.to_string(), bet.number.to_string());
                let fields: [&[u8]; 6] = [
                    agency.as_bytes(),
                    bet.first_name,
                    bet.last_name,
                    bet.document,
                    date.as_bytes(),
                    number.as_bytes(),
                ];
                w.write_record(fields).expect("write to a Vec");
            }
        }
        out
    }

    /// Names of every length class the renderer copies differently (empty,
    /// 1..4, 4..8, 8..=16, longer, the edges of its 16-byte moves weighted),
    /// with the bytes the csv crate quotes for at any place, and any byte now and then.
    fn name() -> impl Strategy<Value = Vec<u8>> {
        let edges = prop::sample::select(vec![15usize, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65]);
        let len = prop_oneof![1 => 0usize..4, 1 => 4usize..8, 2 => 8usize..=16, 1 => edges, 1 => 17usize..300];
        len.prop_flat_map(|len| {
            let byte = prop_oneof![
                8 => prop::sample::select(b"abcXYZ '-.;|".to_vec()),
                2 => 0xc3u8..0xc4,
                2 => 0x80u8..0xc0,
                1 => prop::sample::select(b",\"\n\r".to_vec()),
                1 => any::<u8>(),
            ];
            prop::collection::vec(byte, len)
        })
    }

    /// Names, document, (year, month, day) and number of one bet.
    type Fields = (Vec<u8>, Vec<u8>, String, (u16, u8, u8), u16);

    fn bet() -> impl Strategy<Value = Fields> {
        (name(), name(), "[0-9]{1,16}", (1000u16..=9999, 1u8..=12, 1u8..=28), 0u16..=9999)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// A run of rows rendered at once, after what the buffer already
        /// held, is byte for byte what the csv crate writes for them.
        #[test]
        fn rendered_rows_are_the_csv_crates(
            agency in prop_oneof![1 => Just(u32::MAX), 1 => Just(1u32), 4 => any::<u32>()],
            bets in prop::collection::vec(bet(), 0..16),
            before in prop::collection::vec(any::<u8>(), 0..100),
        ) {
            let bets: Vec<RawBet<'_>> = bets
                .iter()
                .map(|(first, last, document, (y, m, d), number)| RawBet {
                    first_name: first,
                    last_name: last,
                    document: document.as_bytes(),
                    birthdate: Date::new(*y, *m, *d).expect("a date"),
                    number: *number,
                })
                .collect();
            let mut out = before.clone();
            render_rows(&mut out, agency, bets.iter().copied());
            let expected = [before, csv_crate_rows(agency, &bets)].concat();
            prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected));
            prop_assert_eq!(out, expected);
        }
    }

    #[test]
    fn every_number_and_name_length_renders_as_the_csv_crate() {
        let birthdate = Date::new(1999, 12, 31).expect("a date");
        let names: Vec<Vec<u8>> =
            (0..=40).map(|n| b"Zoe\xc3\xab,\"x\"".iter().copied().cycle().take(n).collect()).collect();
        let plain: Vec<Vec<u8>> = (0..=40).map(|n| "ñandú ".bytes().cycle().take(n).collect()).collect();
        let documents: Vec<String> = (1..=16).map(|n| "0123456789".repeat(2)[..n].to_string()).collect();
        let mut bets = Vec::new();
        for number in 0..=9999 {
            let i = usize::from(number);
            bets.push(RawBet {
                first_name: &names[i % names.len()],
                last_name: &plain[(i / 7) % plain.len()],
                document: documents[i % documents.len()].as_bytes(),
                birthdate,
                number,
            });
        }
        let mut out = Vec::new();
        render_rows(&mut out, 4_000_000_000, bets.iter().copied());
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&csv_crate_rows(4_000_000_000, &bets)));
        // One row at a time gives the same bytes.
        let mut one_by_one = Vec::new();
        for bet in &bets {
            render_raw_row(&mut one_by_one, 4_000_000_000, bet);
        }
        assert_eq!(one_by_one, out);
    }
}
