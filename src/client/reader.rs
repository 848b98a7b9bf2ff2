//! Reads an agency file row by row (never whole), validating each row and
//! naming the file and line of a bad one.

use super::ClientError;
use crate::bet::{BetError, BetRef};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Streams bets out of an agency file (`first_name,last_name,document,birthdate,number`).
pub struct BetReader {
    /// The file, for error messages.
    pub(super) path: PathBuf,
    reader: csv::Reader<File>,
    record: csv::ByteRecord,
    /// Line of the next record; counted here because the csv crate's own count
    /// lags by one on CRLF files.
    line: u64,
}

impl BetReader {
    pub fn open(path: &Path) -> Result<BetReader, ClientError> {
        let file = File::open(path).map_err(|source| ClientError::DataFile { path: path.to_path_buf(), source })?;
        let reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(file);
        Ok(BetReader { path: path.to_path_buf(), reader, record: csv::ByteRecord::new(), line: 1 })
    }

    /// The next row: `Ok(Some(Ok(bet)))`, a bad row as `Ok(Some(Err(BadRow)))`,
    /// `Ok(None)` at the end, `Err` when the file cannot be read at all.
    /// The bet borrows the reader's record: nothing is allocated per row.
    pub fn next_bet(&mut self) -> Result<Option<Result<BetRef<'_>, ClientError>>, ClientError> {
        let line = self.line;
        let read = self.reader.read_byte_record(&mut self.record);
        // A record spans one line plus any newlines quoted inside its fields.
        self.line += 1 + self.record.iter().map(|f| f.iter().filter(|&&b| b == b'\n').count() as u64).sum::<u64>();
        match read {
            Ok(false) => return Ok(None),
            Ok(true) => {}
            Err(e) => {
                return match e.kind() {
                    csv::ErrorKind::Io(_) => {
                        Err(ClientError::DataFile { path: self.path.clone(), source: io::Error::other(e.to_string()) })
                    }
                    _ => Ok(Some(Err(self.bad_row(line, e.to_string())))),
                }
            }
        }
        if self.record.len() != 5 {
            let reason = format!(
                "expected 5 fields (first_name,last_name,document,birthdate,number), found {}",
                self.record.len()
            );
            return Ok(Some(Err(self.bad_row(line, reason))));
        }
        let mut fields = [""; 5];
        for (i, raw) in self.record.iter().enumerate() {
            match std::str::from_utf8(raw) {
                Ok(s) => fields[i] = s,
                Err(_) => {
                    let name = ["first_name", "last_name", "document", "birthdate", "number"][i];
                    return Ok(Some(Err(self.bad_row(line, format!("{name} is not valid UTF-8")))));
                }
            }
        }
        Ok(Some(
            BetRef::parse(fields[0], fields[1], fields[2].trim(), fields[3].trim(), fields[4].trim())
                .map_err(|e: BetError| self.bad_row(line, e.to_string())),
        ))
    }

    fn bad_row(&self, line: u64, reason: String) -> ClientError {
        ClientError::BadRow { path: self.path.clone(), line, reason }
    }
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
