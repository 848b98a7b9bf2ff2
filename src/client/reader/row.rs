//! One row's five fields to a bet, with the reason a bad row is refused.
//!
//! A plain row is looked at in one pass ([`scan`]) that finds its end, its
//! commas and the kinds of bytes in its fields; a row in the usual form is then
//! accepted with one UTF-8 check and no trims. Every other row takes the full
//! checks of the old reader, in its order (field count, UTF-8 per field, then
//! [`BetRef::parse`] on the trimmed document, birthdate and number), so its
//! reason is the same.
//!
//! On x86_64 both the pass and the UTF-8 check look at 64 bytes at once
//! ([`super::simd`]) when that many are buffered and the row ends within them;
//! [`scan_scalar`] and [`utf8`], byte by byte, are the reference they must
//! equal, and take every other row.

use crate::bet::{BetRef, Date, MAX_DOCUMENT_DIGITS, MAX_NAME_BYTES};

const FIELD_NAMES: [&str; 5] = ["first_name", "last_name", "document", "birthdate", "number"];

/// The reason for a row without exactly five fields.
pub(super) fn field_count_reason(found: usize) -> String {
    format!("expected 5 fields (first_name,last_name,document,birthdate,number), found {found}")
}

/// Where [`scan`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// At a `\r` or `\n`: the line is complete.
    LineEnd,
    /// At a quote: the row needs the general parser.
    Quote,
    /// At the end of the bytes given.
    NoEnd,
}

/// A quote-free stretch of a row, as one pass over its bytes found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Line {
    /// Bytes before the stop.
    pub(super) len: usize,
    pub(super) stop: Stop,
    /// Where the first four commas are (0 for a comma not found).
    pub(super) commas: [usize; 4],
    /// Commas in the line.
    pub(super) found: usize,
    /// The byte classes of each of the first three fields, ORed together (0
    /// for a field whose comma was not found).
    pub(super) classes: [u8; 3],
}

/// Byte classes: the bytes that stop a plain field, and what the fast checks ask of the rest.
const SPECIAL: u8 = 1;
/// `b < 0x20`, `0x7f`, or `0xc2` (the lead of U+0080..U+00BF, among them the C1 controls).
pub(super) const CONTROL: u8 = 2;
/// `0x21..=0x7e`.
pub(super) const PRINTABLE: u8 = 4;
/// Anything but `0-9`.
pub(super) const NOT_DIGIT: u8 = 8;
static CLASSES: [u8; 256] = classes();

const fn classes() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut class = 0;
        if b == b',' || b == b'"' || b == b'\r' || b == b'\n' {
            class |= SPECIAL;
        }
        // 0xc2 leads U+0080..U+00BF, among them the C1 control characters.
        if b < 0x20 || b == 0x7f || b == 0xc2 {
            class |= CONTROL;
        }
        if b > b' ' && b < 0x7f {
            class |= PRINTABLE;
        }
        if !b.is_ascii_digit() {
            class |= NOT_DIGIT;
        }
        table[i] = class;
        i += 1;
    }
    table
}

/// One pass over the start of a row: its line end or first quote, its commas,
/// and what kind of bytes its first fields hold.
#[inline]
pub(super) fn scan(bytes: &[u8]) -> Line {
    #[cfg(target_arch = "x86_64")]
    if let Some(line) = super::simd::scan(bytes) {
        return line;
    }
    scan_scalar(bytes)
}

/// [`scan`] byte by byte: the reference, and the way for rows the wide scan
/// does not take (longer than its window, near the end of what is buffered).
pub(super) fn scan_scalar(bytes: &[u8]) -> Line {
    let mut line = Line { len: bytes.len(), stop: Stop::NoEnd, commas: [0; 4], found: 0, classes: [0; 3] };
    let mut class = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let c = CLASSES[b as usize];
        if c & SPECIAL == 0 {
            class |= c;
            continue;
        }
        match b {
            b',' => {
                if let Some(slot) = line.commas.get_mut(line.found) {
                    *slot = i;
                }
                if let Some(slot) = line.classes.get_mut(line.found) {
                    *slot = class;
                }
                class = 0;
                line.found += 1;
            }
            b'"' => {
                line.len = i;
                line.stop = Stop::Quote;
                return line;
            }
            _ => {
                line.len = i;
                line.stop = Stop::LineEnd;
                return line;
            }
        }
    }
    line
}

/// A row that is one stretch of bytes with no quotes: `line` is what [`scan`]
/// found at the start of `rest`, and fields are what lies between commas
/// (`rest` goes on after the row so that the UTF-8 check may look at 64 bytes).
/// It is [`quick_bet`], or else [`full_checks`] (the wide scan's tests use it).
#[cfg(all(test, target_arch = "x86_64"))]
pub(super) fn parse_plain<'a>(rest: &'a [u8], line: &Line) -> Result<BetRef<'a>, String> {
    match quick_bet(rest, line) {
        Some(bet) => Ok(bet),
        None => full_checks(rest, line),
    }
}

/// A plain row (as for [`parse_plain`]) through the checks of the old reader:
/// its bet, or what is wrong with it.
pub(super) fn full_checks<'a>(rest: &'a [u8], line: &Line) -> Result<BetRef<'a>, String> {
    if line.found != 4 {
        return Err(field_count_reason(line.found + 1));
    }
    let [c0, c1, c2, c3] = line.commas;
    let text = &rest[..line.len];
    parse_fields([&text[..c0], &text[c0 + 1..c1], &text[c1 + 1..c2], &text[c2 + 1..c3], &text[c3 + 1..]])
}

/// The bet of a plain row (as for [`parse_plain`]) that passes every check in
/// the form nearly all rows have (five fields, no padding, no rare
/// characters); `None` leaves the row to [`full_checks`], which then either
/// accepts it the same way or says what is wrong.
#[inline]
pub(super) fn quick_bet<'a>(rest: &'a [u8], scanned: &Line) -> Option<BetRef<'a>> {
    if scanned.found != 4 {
        return None;
    }
    let line = &rest[..scanned.len];
    let [c0, c1, c2, c3] = scanned.commas;
    // A name: within the length limit, not blank (it has a printable ASCII
    // character) and with no byte that may be part of a control character.
    let plain_name = |class: u8, len: usize| class & (PRINTABLE | CONTROL) == PRINTABLE && len <= MAX_NAME_BYTES;
    if !plain_name(scanned.classes[0], c0) || !plain_name(scanned.classes[1], c1 - c0 - 1) {
        return None;
    }
    let document_len = c2 - c1 - 1;
    if scanned.classes[2] & NOT_DIGIT != 0 || document_len == 0 || document_len > MAX_DOCUMENT_DIGITS {
        return None;
    }
    let date = &line[c2 + 1..c3];
    if date.len() != 10 || date[4] != b'-' || date[7] != b'-' {
        return None;
    }
    let year = digits(&date[0..4])?;
    let (month, day) = (digits(&date[5..7])?, digits(&date[8..10])?);
    let number = &line[c3 + 1..];
    if number.is_empty() || number.len() > 4 {
        return None;
    }
    // One UTF-8 check for the names and the document; commas are ASCII, so the
    // text splits at them.
    let text = names_text(rest, c2)?;
    Some(BetRef {
        first_name: text.get(..c0)?,
        last_name: text.get(c0 + 1..c1)?,
        document: text.get(c1 + 1..)?,
        birthdate: birthdate(year, month, day)?,
        number: digits(number)?,
    })
}

/// `Date::new`, kept out of line so the date comes back in a register: in
/// the reader, `Date::new` stayed a call whose result came back through
/// memory, written in parts and read whole (a store-forwarding stall per row).
#[inline(never)]
fn birthdate(year: u16, month: u16, day: u16) -> Option<Date> {
    Date::new(year, month as u8, day as u8).ok()
}

/// ASCII digits (at most four) as a number.
fn digits(text: &[u8]) -> Option<u16> {
    text.iter().try_fold(0u16, |n, &b| b.is_ascii_digit().then(|| n * 10 + u16::from(b - b'0')))
}

/// `rest[..end]` as text, if it is UTF-8: 64 bytes at a time when `rest` has
/// them and `end` is inside them, byte by byte otherwise.
#[inline]
fn names_text(rest: &[u8], end: usize) -> Option<&str> {
    #[cfg(target_arch = "x86_64")]
    if let Some(window) = rest.first_chunk().filter(|_| end < crate::simd::WINDOW) {
        return super::simd::utf8(window, end);
    }
    utf8(rest.get(..end)?)
}

/// `bytes` as text, if it is UTF-8. Rows are nearly always ASCII with some
/// two-byte characters (Spanish names): checked here in a simple loop, they
/// cost a fraction of `std::str::from_utf8` on such short text (a fifth of the
/// reader's time went there); anything else takes the standard check.
fn utf8(bytes: &[u8]) -> Option<&str> {
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b < 0x80 {
            i += 1;
        } else if (0xc2..=0xdf).contains(&b) && bytes.get(i + 1).is_some_and(|&c| c & 0xc0 == 0x80) {
            i += 2;
        } else {
            return std::str::from_utf8(bytes).ok();
        }
    }
    // SAFETY: the loop went through every byte and found only ASCII bytes and
    // pairs of a lead byte 0xc2..=0xdf and a continuation byte 0x80..=0xbf: those
    // are exactly UTF-8's well-formed one- and two-byte sequences (U+0000..U+07FF),
    // so the whole is UTF-8.
    Some(unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// Five fields as bytes (a quoted record's, unescaped).
pub(super) fn parse_fields(raw: [&[u8]; 5]) -> Result<BetRef<'_>, String> {
    let mut fields = [""; 5];
    for (i, bytes) in raw.into_iter().enumerate() {
        fields[i] = std::str::from_utf8(bytes).map_err(|_| format!("{} is not valid UTF-8", FIELD_NAMES[i]))?;
    }
    parse_strs(fields)
}

/// Names are taken as written; document, birthdate and number are trimmed.
fn parse_strs(f: [&str; 5]) -> Result<BetRef<'_>, String> {
    BetRef::parse(f[0], f[1], trim(f[2]), trim(f[3]), trim(f[4])).map_err(|e| e.to_string())
}

/// `str::trim`, skipped when neither end could be whitespace (the usual case).
fn trim(s: &str) -> &str {
    let b = s.as_bytes();
    let solid = |c: u8| c > b' ' && c < 0x7f;
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) if solid(first) && solid(last) => s,
        _ => s.trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_agrees_with_std_on_every_short_input() {
        let check = |bytes: &[u8]| assert_eq!(utf8(bytes), std::str::from_utf8(bytes).ok(), "{bytes:x?}");
        for a in 0..=255u8 {
            check(&[a]);
            for b in 0..=255u8 {
                check(&[a, b]);
                check(&[b'x', a, b]);
            }
        }
        for s in ["José Núñez", "日本", "😀x", "Ñ", ""] {
            check(s.as_bytes());
        }
        check(b"Jos\xc3");
        check(b"\xc3\xa9\xa9");
        check(b"\xed\xa0\x80");
    }

    proptest::proptest! {
        #[test]
        fn utf8_agrees_with_std(bytes in proptest::collection::vec(
            proptest::sample::select(vec![b'a', b',', 0x7f, 0x80, 0xa9, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xdf, 0xe0, 0xed, 0xf0, 0xf4, 0xff]),
            0..12,
        )) {
            proptest::prop_assert_eq!(utf8(&bytes), std::str::from_utf8(&bytes).ok());
        }
    }

    /// Names and document longer together than the wide check's window still
    /// take the quick path (byte by byte), with 64 bytes and more buffered.
    #[test]
    fn a_row_with_long_names_takes_the_quick_path() {
        let row = "María de los Ángeles Iturralde,Fernández de la Cruz y Echeverría,00000042,1990-01-31,7574\n";
        let mut buffer = row.as_bytes().to_vec();
        buffer.extend_from_slice(&[b'x'; 80]);
        let line = scan(&buffer);
        assert_eq!(line.stop, Stop::LineEnd);
        assert!(line.commas[2] >= 64, "names and document span {} bytes", line.commas[2]);
        let bet = quick_bet(&buffer, &line).expect("the quick path takes it");
        assert_eq!((bet.last_name, bet.document, bet.number), ("Fernández de la Cruz y Echeverría", "00000042", 7574));
    }

    #[test]
    fn trim_is_str_trim() {
        for s in ["", " ", "42", " 42", "42\t", "\u{a0}42\u{3000}", "4 2", "é", "\u{1c}42"] {
            assert_eq!(trim(s), s.trim(), "{s:?}");
        }
    }
}
