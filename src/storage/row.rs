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
    push_decimal(out, u64::from(agency));
    out.push(b',');
    push_text_field(out, bet.first_name);
    out.push(b',');
    push_text_field(out, bet.last_name);
    out.push(b',');
    out.extend_from_slice(bet.document);
    out.push(b',');
    let d = bet.birthdate;
    push_padded(out, u32::from(d.year()), 4);
    out.push(b'-');
    push_padded(out, u32::from(d.month()), 2);
    out.push(b'-');
    push_padded(out, u32::from(d.day()), 2);
    out.push(b',');
    push_decimal(out, u64::from(bet.number));
    out.push(b'\n');
}

fn push_text_field(out: &mut Vec<u8>, s: &[u8]) {
    if s.iter().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
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

fn push_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_padded(out: &mut Vec<u8>, v: u32, width: usize) {
    let mut digits = [b'0'; 4];
    let mut v = v;
    for slot in digits[..width].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&digits[..width]);
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
