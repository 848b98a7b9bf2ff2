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

/// Renders a batch of one agency's rows: the agency's digits are worked out
/// once, and each row is put together in a few copies (this runs for every
/// stored bet, on the store's thread).
pub fn render_rows<'a>(out: &mut Vec<u8>, agency: AgencyId, bets: impl IntoIterator<Item = RawBet<'a>>) {
    let mut prefix = [0u8; 11];
    let digits = decimal(u64::from(agency), &mut prefix[..10]);
    let prefix_len = digits + 1;
    prefix.copy_within(10 - digits..10, 0);
    prefix[digits] = b',';
    let prefix = &prefix[..prefix_len];
    for bet in bets {
        // Room for the whole row at once: agency and number at most 11 + 4 bytes,
        // the date 10, four commas and a newline, and a quoted name at most doubles.
        out.reserve(prefix.len() + 2 * (bet.first_name.len() + bet.last_name.len()) + bet.document.len() + 24);
        out.extend_from_slice(prefix);
        push_text_field(out, bet.first_name);
        out.push(b',');
        push_text_field(out, bet.last_name);
        out.push(b',');
        out.extend_from_slice(bet.document);
        // `,YYYY-MM-DD,` then the number and the newline.
        let d = bet.birthdate;
        let mut tail = [b',', 0, 0, 0, 0, b'-', 0, 0, b'-', 0, 0, b',', 0, 0, 0, 0, 0];
        let (y, m, day) = (d.year(), d.month(), d.day());
        tail[1..3].copy_from_slice(&two_digits((y / 100) as u8));
        tail[3..5].copy_from_slice(&two_digits((y % 100) as u8));
        tail[6..8].copy_from_slice(&two_digits(m));
        tail[9..11].copy_from_slice(&two_digits(day));
        // Four digits at most: validation keeps numbers in 0..=9999.
        debug_assert!(bet.number <= crate::bet::MAX_NUMBER);
        let n = decimal(u64::from(bet.number), &mut tail[12..16]);
        tail.copy_within(16 - n..16, 12);
        tail[12 + n] = b'\n';
        out.extend_from_slice(&tail[..13 + n]);
    }
}

fn push_text_field(out: &mut Vec<u8>, s: &[u8]) {
    // A fold, not `any`: no early exit, so the compiler checks many bytes at a time.
    let special = s.iter().fold(false, |acc, &b| acc | matches!(b, b',' | b'"' | b'\n' | b'\r'));
    if special {
        out.push(b'"');
        for &b in s {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(s);
    }
}

/// `v` (below 100) as two ASCII digits.
fn two_digits(v: u8) -> [u8; 2] {
    [b'0' + v / 10, b'0' + v % 10]
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
