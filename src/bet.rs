//! The lottery's domain: what a bet is, what makes one valid, and when it wins.
//!
//! Validation lives here, not in the codec or the CSV reader, so that a bet read
//! from an agency file, decoded from the network, or loaded from the store obeys
//! exactly the same rules.

pub mod batch;

pub use batch::BetBatch;
use std::fmt;

/// Agencies are numbered from 1; the server knows how many take part.
pub type AgencyId = u32;

/// The highest lottery number; numbers are four-digit tickets `0..=9999`.
pub const MAX_NUMBER: u16 = 9999;
/// Names longer than this are refused, so one bet always fits in a frame.
pub const MAX_NAME_BYTES: usize = 255;
/// Documents are 1 to this many decimal digits (leading zeros kept).
pub const MAX_DOCUMENT_DIGITS: usize = 16;

/// A calendar date (proleptic Gregorian), validated on construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: u16,
    month: u8,
    day: u8,
}

impl Date {
    /// Builds a date if it exists on the calendar (years 1000..=9999).
    #[inline]
    pub fn new(year: u16, month: u8, day: u8) -> Result<Date, BetError> {
        // Every month has days 1..=28: most dates need no more (every decoded bet comes here).
        if !((1000..=9999).contains(&year) & (1..=12).contains(&month) & (1..=28).contains(&day)) {
            Date::check(year, month, day)?;
        }
        // Built here on both paths, so the date stays in registers (a date
        // returned from the full check came back through memory, written in
        // parts and read whole: a store-forwarding stall on every decoded bet).
        Ok(Date { year, month, day })
    }

    /// [`Date::new`]'s full rule, with its error.
    fn check(year: u16, month: u8, day: u8) -> Result<(), BetError> {
        if !(1000..=9999).contains(&year) || !(1..=12).contains(&month) {
            return Err(BetError::InvalidDate(format!("{year:04}-{month:02}-{day:02}")));
        }
        if day == 0 || day > days_in_month(year, month) {
            return Err(BetError::InvalidDate(format!("{year:04}-{month:02}-{day:02}")));
        }
        Ok(())
    }

    /// Parses exactly `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Result<Date, BetError> {
        let bad = || BetError::InvalidDate(text.to_string());
        let b = text.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(bad());
        }
        let digits = |r: std::ops::Range<usize>| -> Result<u16, BetError> {
            let part = &text[r];
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse::<u16>().map_err(|_| bad())
        };
        let (y, m, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
        Date::new(y, m as u8, d as u8).map_err(|_| bad())
    }

    pub fn year(&self) -> u16 {
        self.year
    }
    pub fn month(&self) -> u8 {
        self.month
    }
    pub fn day(&self) -> u8 {
        self.day
    }
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => 29,
        2 => 28,
        _ => 31,
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// One bet as an agency sends it (the agency itself travels with the batch).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bet {
    pub first_name: String,
    pub last_name: String,
    /// Kept as text: `00000042` is a different document from `42`.
    pub document: String,
    pub birthdate: Date,
    pub number: u16,
}

/// Why a bet (or one of its fields) is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BetError {
    #[error("{field} is empty")]
    EmptyField { field: &'static str },
    #[error("{field} is {len} bytes long, the maximum is {max}")]
    TooLong { field: &'static str, len: usize, max: usize },
    #[error("{field} contains a control character")]
    ControlCharacter { field: &'static str },
    #[error("document {0:?} is not 1 to 16 decimal digits")]
    InvalidDocument(String),
    #[error("birthdate {0:?} is not a real calendar date in YYYY-MM-DD form")]
    InvalidDate(String),
    #[error("number {0:?} is not an integer in 0..=9999")]
    InvalidNumber(String),
}

/// A bet whose text borrows from a buffer (a CSV record, a received frame):
/// the hot paths validate, encode and store bets without allocating per bet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BetRef<'a> {
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub document: &'a str,
    pub birthdate: Date,
    pub number: u16,
}

impl<'a> BetRef<'a> {
    /// Parses and validates text fields, as found in an agency's CSV file.
    pub fn parse(
        first_name: &'a str,
        last_name: &'a str,
        document: &'a str,
        birthdate: &str,
        number: &str,
    ) -> Result<BetRef<'a>, BetError> {
        let bet = BetRef {
            first_name,
            last_name,
            document,
            birthdate: Date::parse(birthdate)?,
            number: parse_number(number)?,
        };
        bet.validate()?;
        Ok(bet)
    }

    /// Checks the rules every bet follows; the date is valid by construction.
    pub fn validate(&self) -> Result<(), BetError> {
        check_name("first_name", self.first_name)?;
        check_name("last_name", self.last_name)?;
        check_document(self.document)?;
        if self.number > MAX_NUMBER {
            return Err(BetError::InvalidNumber(self.number.to_string()));
        }
        Ok(())
    }

    pub fn wins(&self, winning_number: u16) -> bool {
        self.number == winning_number
    }

    pub fn to_bet(&self) -> Bet {
        Bet {
            first_name: self.first_name.to_string(),
            last_name: self.last_name.to_string(),
            document: self.document.to_string(),
            birthdate: self.birthdate,
            number: self.number,
        }
    }
}

/// A validated bet's fields as bytes: what storing it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawBet<'a> {
    pub first_name: &'a [u8],
    pub last_name: &'a [u8],
    pub document: &'a [u8],
    pub birthdate: Date,
    pub number: u16,
}

impl<'a> From<BetRef<'a>> for RawBet<'a> {
    fn from(b: BetRef<'a>) -> Self {
        RawBet {
            first_name: b.first_name.as_bytes(),
            last_name: b.last_name.as_bytes(),
            document: b.document.as_bytes(),
            birthdate: b.birthdate,
            number: b.number,
        }
    }
}

impl Bet {
    /// Builds a bet from text fields, as found in an agency's CSV file.
    pub fn from_fields(
        first_name: &str,
        last_name: &str,
        document: &str,
        birthdate: &str,
        number: &str,
    ) -> Result<Bet, BetError> {
        BetRef::parse(first_name, last_name, document, birthdate, number).map(|b| b.to_bet())
    }

    pub fn as_ref(&self) -> BetRef<'_> {
        BetRef {
            first_name: &self.first_name,
            last_name: &self.last_name,
            document: &self.document,
            birthdate: self.birthdate,
            number: self.number,
        }
    }

    /// Checks the rules every bet follows; the date is valid by construction.
    pub fn validate(&self) -> Result<(), BetError> {
        self.as_ref().validate()
    }

    pub fn wins(&self, winning_number: u16) -> bool {
        self.number == winning_number
    }
}

/// Parses a lottery number: decimal digits only, `0..=9999`.
pub fn parse_number(text: &str) -> Result<u16, BetError> {
    let bad = || BetError::InvalidNumber(text.to_string());
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u32 = text.parse().map_err(|_| bad())?;
    if n > u32::from(MAX_NUMBER) {
        return Err(bad());
    }
    Ok(n as u16)
}

fn check_name(field: &'static str, value: &str) -> Result<(), BetError> {
    if value.len() > MAX_NAME_BYTES {
        return Err(BetError::TooLong { field, len: value.len(), max: MAX_NAME_BYTES });
    }
    // Fast path: printable ASCII with a letter that is not a space.
    let bytes = value.as_bytes();
    if bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        if bytes.iter().all(|&b| b == b' ') || bytes.is_empty() {
            return Err(BetError::EmptyField { field });
        }
        return Ok(());
    }
    if value.trim().is_empty() {
        return Err(BetError::EmptyField { field });
    }
    if value.chars().any(char::is_control) {
        return Err(BetError::ControlCharacter { field });
    }
    Ok(())
}

/// Checks a document: 1 to 16 ASCII digits.
pub fn check_document(document: &str) -> Result<(), BetError> {
    if document.is_empty() || document.len() > MAX_DOCUMENT_DIGITS || !document.bytes().all(|c| c.is_ascii_digit()) {
        return Err(BetError::InvalidDocument(document.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_follow_the_calendar() {
        assert!(Date::parse("2000-02-29").is_ok());
        assert!(Date::parse("1900-02-29").is_err());
        assert!(Date::parse("2023-02-29").is_err());
        assert!(Date::parse("2023-04-31").is_err());
        assert!(Date::parse("2023-13-01").is_err());
        assert!(Date::parse("2023-1-01").is_err());
        assert!(Date::parse("2023-01-0a").is_err());
        assert!(Date::parse("+023-01-01").is_err());
        assert_eq!(Date::parse("1999-12-31").unwrap().to_string(), "1999-12-31");
    }

    /// `Date::new` (quick yes for days 1..=28, then the full rule) agrees with
    /// an independent model of the calendar everywhere around the edges (years,
    /// months, days out of range, leap years).
    #[test]
    fn the_quick_date_check_is_the_full_rule() {
        let model = |year: u16, month: u8, day: u8| {
            let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
            let days = match month {
                1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
                4 | 6 | 9 | 11 => 30,
                2 if leap => 29,
                2 => 28,
                _ => 0,
            };
            (1000..=9999).contains(&year) && (1..=days).contains(&day)
        };
        for year in [0, 999, 1000, 1900, 1996, 2000, 2023, 2024, 9999, 10000, u16::MAX] {
            for month in 0..=14 {
                for day in (0..=33).chain([255]) {
                    let got = Date::new(year, month, day);
                    assert_eq!(got.is_ok(), model(year, month, day), "{year}-{month}-{day}");
                    if let Ok(date) = got {
                        assert_eq!((date.year(), date.month(), date.day()), (year, month, day));
                    }
                }
            }
        }
        assert!(Date::new(2024, 2, 29).is_ok());
        assert!(Date::new(2023, 2, 29).is_err());
        assert_eq!(
            Date::new(2023, 2, 0).unwrap_err().to_string(),
            "birthdate \"2023-02-00\" is not a real calendar date in YYYY-MM-DD form"
        );
    }

    #[test]
    fn documents_keep_leading_zeros() {
        let bet = Bet::from_fields("Ana", "Pérez", "00000042", "1990-01-01", "7574").unwrap();
        assert_eq!(bet.document, "00000042");
        assert!(bet.wins(7574));
        assert!(Bet::from_fields("Ana", "Pérez", "12a4", "1990-01-01", "1").is_err());
        assert!(Bet::from_fields("Ana", "Pérez", "", "1990-01-01", "1").is_err());
    }

    #[test]
    fn numbers_are_integers_in_range() {
        assert_eq!(parse_number("0"), Ok(0));
        assert_eq!(parse_number("9999"), Ok(9999));
        assert!(parse_number("10000").is_err());
        assert!(parse_number("-1").is_err());
        assert!(parse_number("1.5").is_err());
        assert!(parse_number(" 1").is_err());
        assert!(parse_number("").is_err());
    }

    #[test]
    fn names_are_bounded_and_printable() {
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        assert!(Bet::from_fields(&long, "B", "1", "1990-01-01", "1").is_err());
        assert!(Bet::from_fields("A\nB", "B", "1", "1990-01-01", "1").is_err());
        assert!(Bet::from_fields("  ", "B", "1", "1990-01-01", "1").is_err());
        assert!(Bet::from_fields("O'Brien, \"Jr\" | x; y", "Núñez", "1", "1990-01-01", "1").is_ok());
    }
}
