//! Reads an agency file row by row (never whole), validating each row and
//! naming the file and line of a bad one.
//!
//! The file goes through one fixed buffer. A row with no quote is split on its
//! commas where it lies in the buffer (the usual case: no copy, one UTF-8 check);
//! any other row goes through `quoted`, which follows the csv crate's rules.
//! Rows are what the csv crate made of the file with `has_headers(false)` and
//! `flexible(true)`: a UTF-8 BOM at the start is skipped, empty lines are skipped
//! (but counted), `\n`, `\r\n` and a lone `\r` end a line, quoted fields may
//! hold commas, quotes (`""`) and line breaks, and a last line needs no line end.
//!
//! A row longer than [`MAX_ROW_BYTES`] is refused (a bad row naming its line)
//! and skipped: a valid bet is at most about 1.1 KiB even with every name
//! character a quoted quote, so only padding could make a longer row valid, and
//! refusing it keeps memory bounded.

#[cfg(test)]
mod differential;
mod quoted;
mod row;
#[cfg(target_arch = "x86_64")]
mod simd;

use super::ClientError;
use crate::bet::BetRef;
use quoted::{QuotedRecord, Unterminated};
use row::Stop;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Longest row accepted, line breaks inside quotes included, line end excluded.
pub const MAX_ROW_BYTES: usize = 4096;
/// Bytes read from the file at a time.
const BUFFER_BYTES: usize = 64 * 1024;
const BOM: &[u8] = b"\xef\xbb\xbf";

/// Streams bets out of an agency file (`first_name,last_name,document,birthdate,number`).
pub struct BetReader {
    /// The file, for error messages.
    pub(super) path: PathBuf,
    /// Where the rows come from (the agency file, or a generated stream); let go
    /// of at its end, so a finished agency waiting for the draw holds no file.
    source: Box<dyn Read + Send>,
    buf: Box<[u8]>,
    /// Unread bytes are `buf[pos..end]`.
    pos: usize,
    end: usize,
    eof: bool,
    started: bool,
    /// Line of the next record.
    line: u64,
    /// The last line end seen was a `\r`: a `\n` right after it is the same line end.
    last_was_cr: bool,
    quoted: QuotedRecord,
    max_row: usize,
}

impl BetReader {
    pub fn open(path: &Path) -> Result<BetReader, ClientError> {
        BetReader::with_limits(path, BUFFER_BYTES, MAX_ROW_BYTES)
    }

    /// `buffer` bytes read at a time, rows up to `max_row` bytes.
    fn with_limits(path: &Path, buffer: usize, max_row: usize) -> Result<BetReader, ClientError> {
        let file = File::open(path).map_err(|source| ClientError::DataFile { path: path.to_path_buf(), source })?;
        Ok(BetReader::from_source(path.to_path_buf(), Box::new(file), buffer, max_row))
    }

    /// Rows from any source, named `name` in errors, read `buffer` bytes at a
    /// time: the load generator's agencies read generated streams this way
    /// (10,000 of them at once must not need 10,000 open files).
    pub fn from_reader(name: PathBuf, source: Box<dyn Read + Send>, buffer: usize) -> BetReader {
        BetReader::from_source(name, source, buffer, MAX_ROW_BYTES)
    }

    fn from_source(path: PathBuf, source: Box<dyn Read + Send>, buffer: usize, max_row: usize) -> BetReader {
        BetReader {
            path,
            source,
            buf: vec![0; buffer.max(BOM.len())].into_boxed_slice(),
            pos: 0,
            end: 0,
            eof: false,
            started: false,
            line: 1,
            last_was_cr: false,
            quoted: QuotedRecord::new(max_row),
            max_row,
        }
    }

    /// The next row: `Ok(Some(Ok(bet)))`, a bad row as `Ok(Some(Err(BadRow)))`,
    /// `Ok(None)` at the end, `Err` when the file cannot be read at all.
    /// The bet borrows the reader's buffer: nothing is allocated per row.
    pub fn next_bet(&mut self) -> Result<Option<Result<BetRef<'_>, ClientError>>, ClientError> {
        if !self.start_of_row()? {
            return Ok(None);
        }
        let line = self.line;
        // One pass finds the row's line end (or a quote) and its commas,
        // reading more while the line is incomplete.
        let scanned = loop {
            let scanned = row::scan(&self.buf[self.pos..self.end]);
            let buffered = self.end - self.pos;
            match scanned.stop {
                Stop::LineEnd => break scanned,
                Stop::NoEnd if self.eof => break scanned,
                Stop::NoEnd if buffered <= self.max_row && buffered < self.buf.len() => self.fill()?,
                Stop::NoEnd | Stop::Quote => return self.next_quoted(line),
            }
        };
        if scanned.len > self.max_row {
            return self.next_quoted(line);
        }
        let (start, stop) = (self.pos, self.pos + scanned.len);
        if stop < self.end {
            self.last_was_cr = self.buf[stop] == b'\r';
            self.pos = stop + 1;
        } else {
            self.pos = stop;
        }
        self.line += 1;
        let rest = &self.buf[start..self.end];
        // Returned on its own, so the usual bet is written once, straight to
        // the result: merged with the other outcome, it was copied through the
        // stack, written in parts and read whole (a store-forwarding stall).
        if let Some(bet) = row::quick_bet(rest, &scanned) {
            return Ok(Some(Ok(bet)));
        }
        let path = &self.path;
        Ok(Some(row::full_checks(rest, &scanned).map_err(|reason| bad_row(path, line, reason))))
    }

    /// A row for the general parser: quoted, or longer than the fast path takes.
    fn next_quoted(&mut self, line: u64) -> Result<Option<Result<BetRef<'_>, ClientError>>, ClientError> {
        self.quoted.reset();
        loop {
            let (used, done) = self.quoted.feed(&self.buf[self.pos..self.end]);
            self.pos += used;
            if done {
                self.last_was_cr = self.quoted.ended_on_cr;
                break;
            }
            if self.eof {
                self.quoted.finish();
                break;
            }
            self.fill()?;
        }
        if let Some(open) = self.quoted.unterminated {
            return self.unterminated(line, open);
        }
        self.line += 1 + self.quoted.inner_lines;
        let path = &self.path;
        let row = if self.quoted.too_long() {
            Err(format!("the row is longer than {} bytes", self.max_row))
        } else {
            match self.quoted.fields() {
                Some(fields) => row::parse_fields(fields),
                None => Err(row::field_count_reason(self.quoted.field_count())),
            }
        };
        Ok(Some(row.map_err(|reason| bad_row(path, line, reason))))
    }

    /// Reports the row of an unterminated quote and goes on at the line after
    /// the one where the quote opened, the bytes after it read again as rows
    /// (at most the row limit: they are put back in front of the unread ones).
    fn unterminated(
        &mut self,
        line: u64,
        open: Unterminated,
    ) -> Result<Option<Result<BetRef<'_>, ClientError>>, ClientError> {
        let opened = line + open.opened_after;
        self.line = opened + 1;
        let replay = self.quoted.replay();
        let unread = self.end - self.pos;
        if replay.len() + unread > self.buf.len() {
            let mut grown = vec![0; replay.len() + unread].into_boxed_slice();
            grown[replay.len()..].copy_from_slice(&self.buf[self.pos..self.end]);
            self.buf = grown;
        } else {
            self.buf.copy_within(self.pos..self.end, replay.len());
        }
        self.buf[..replay.len()].copy_from_slice(replay);
        self.pos = 0;
        self.end = replay.len() + unread;
        let lines = match open.lines {
            1 => "1 line".to_string(),
            n => format!("{n} lines"),
        };
        let reason = if open.at_eof {
            format!("unterminated quote: the quote opened on line {opened} runs over {lines} to the end of the file")
        } else {
            format!(
                "unterminated quote: the quote opened on line {opened} runs over {lines} and is still open at the \
                 row limit of {} bytes",
                self.max_row
            )
        };
        let reason = format!("{reason}; reading goes on at line {}", opened + 1);
        Ok(Some(Err(bad_row(&self.path, line, reason))))
    }

    /// Skips the BOM and empty lines (counting them); false at the end of the file.
    fn start_of_row(&mut self) -> Result<bool, ClientError> {
        if !self.started {
            while self.end < BOM.len() && !self.eof {
                self.fill()?;
            }
            if self.buf[..self.end].starts_with(BOM) {
                self.pos = BOM.len();
            }
            self.started = true;
        }
        loop {
            while let Some(&b) = self.buf[self.pos..self.end].first() {
                match b {
                    b'\n' if self.last_was_cr => self.last_was_cr = false,
                    b'\n' | b'\r' => {
                        self.line += 1;
                        self.last_was_cr = b == b'\r';
                    }
                    _ => {
                        self.last_was_cr = false;
                        return Ok(true);
                    }
                }
                self.pos += 1;
            }
            if self.eof {
                return Ok(false);
            }
            self.fill()?;
        }
    }

    /// Moves the unread bytes to the front and reads after them (`buf` has room).
    fn fill(&mut self) -> Result<(), ClientError> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        loop {
            match self.source.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    // Closes the file now rather than when the agency's run ends.
                    self.source = Box::new(io::empty());
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(ClientError::DataFile { path: self.path.clone(), source }),
            }
        }
    }
}

fn bad_row(path: &Path, line: u64, reason: String) -> ClientError {
    ClientError::BadRow { path: path.to_path_buf(), line, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_validated_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agency-1.csv");
        let mut data = b"Ana,P\xc3\xa9rez,00000042,1990-01-31,7574\r\nBad,Row,1,1990-02-30,1\r\nShort,Row\r\n".to_vec();
        data.extend_from_slice(b"X,\xff,1,1990-01-01,1\nOk,\"Comma, Inc\",7,2000-02-29,9999\n");
        std::fs::write(&path, data).unwrap();
        let mut r = BetReader::open(&path).unwrap();
        let first = r.next_bet().unwrap().unwrap().unwrap();
        assert_eq!((first.document, first.last_name), ("00000042", "Pérez"));
        for (line, needle) in [(2, "birthdate"), (3, "expected 5 fields"), (4, "last_name is not valid UTF-8")] {
            let err = r.next_bet().unwrap().unwrap().unwrap_err().to_string();
            assert!(err.contains(&format!("agency-1.csv:{line}:")) && err.contains(needle), "{err}");
        }
        assert_eq!(r.next_bet().unwrap().unwrap().unwrap().last_name, "Comma, Inc");
        assert!(r.next_bet().unwrap().is_none());
        assert!(matches!(BetReader::open(&dir.path().join("missing.csv")), Err(ClientError::DataFile { .. })));
    }
}
