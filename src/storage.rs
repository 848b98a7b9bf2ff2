//! The bets file: `agency,first_name,last_name,document,birthdate,number`, one row
//! per bet, quoted only where needed (the course's `load_bets` reads it).
//!
//! Owned by exactly one writer (the `BetStore` actor). Opening it repairs a torn
//! last row left by a crash and recounts each agency's stored bets by streaming
//! the file once, so memory never depends on its size.

use crate::bet::{AgencyId, Bet, Date};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}:{line}: {reason}", path.display())]
    Corrupt { path: PathBuf, line: u64, reason: String },
}

/// What opening the store found on disk.
#[derive(Debug, Default, Clone)]
pub struct Recovered {
    /// Stored bets per agency.
    pub per_agency: HashMap<AgencyId, u64>,
    /// Bytes of a torn last row that were cut off.
    pub repaired_bytes: u64,
}

/// Append-only writer over the bets file.
pub struct BetFile {
    path: PathBuf,
    file: File,
    /// One batch's rows, reused: a batch reaches the file in one `write` call.
    buf: Vec<u8>,
}

impl BetFile {
    /// Opens (creating) the file, repairs a torn tail and counts what is stored.
    pub fn open(path: &Path) -> Result<(BetFile, Recovered), StorageError> {
        let io_err = |source| StorageError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io_err)?;
        let repaired_bytes = repair_tail(&mut file).map_err(io_err)?;
        let mut per_agency: HashMap<AgencyId, u64> = HashMap::new();
        scan(path, |_, agency, _| {
            *per_agency.entry(agency).or_default() += 1;
            Ok(())
        })?;
        Ok((
            BetFile { path: path.to_path_buf(), file, buf: Vec::with_capacity(16 * 1024) },
            Recovered { per_agency, repaired_bytes },
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the rows of one batch with a single write (reaches the OS, not yet the disk).
    pub fn append(&mut self, agency: AgencyId, bets: &[Bet]) -> Result<(), StorageError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let rendered = render_rows(&mut buf, agency, bets);
        let written = rendered.and_then(|_| self.file.write_all(&buf));
        buf.clear();
        buf.shrink_to(64 * 1024);
        self.buf = buf;
        written.map_err(|source| StorageError::Io { path: self.path.clone(), source })
    }

    /// Forces the appended rows to the disk.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.file.sync_data().map_err(|source| StorageError::Io { path: self.path.clone(), source })
    }
}

/// Renders rows in the stored format into `out` (quoting only where needed).
fn render_rows(out: &mut Vec<u8>, agency: AgencyId, bets: &[Bet]) -> io::Result<()> {
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(out);
    let agency = agency.to_string();
    for bet in bets {
        let date = bet.birthdate.to_string();
        let number = bet.number.to_string();
        w.write_record([
            agency.as_bytes(),
            bet.first_name.as_bytes(),
            bet.last_name.as_bytes(),
            bet.document.as_bytes(),
            date.as_bytes(),
            number.as_bytes(),
        ])
        .map_err(|e| io::Error::other(e.to_string()))?;
    }
    w.flush()
}

/// Cuts the file back to its last newline; returns how many bytes were removed.
fn repair_tail(file: &mut File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    // Walk back in blocks until a newline is found (rows are short).
    let mut end = len;
    let mut block = vec![0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block[..n])?;
        if let Some(pos) = block[..n].iter().rposition(|&b| b == b'\n') {
            let keep = start + pos as u64 + 1;
            if keep < len {
                file.set_len(keep)?;
                file.sync_data()?;
            }
            return Ok(len - keep);
        }
        end = start;
    }
    file.set_len(0)?;
    file.sync_data()?;
    Ok(len)
}

/// Streams every stored row, calling `f(line, agency, record)`; rows that do not
/// parse are reported with their line number.
pub fn scan(
    path: &Path,
    mut f: impl FnMut(u64, AgencyId, &csv::StringRecord) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let file = File::open(path).map_err(|source| StorageError::Io { path: path.to_path_buf(), source })?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(BufReader::with_capacity(64 * 1024, file));
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        let corrupt = |reason: String| StorageError::Corrupt { path: path.to_path_buf(), line, reason };
        match reader.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => return Err(corrupt(e.to_string())),
        }
        if record.len() != 6 {
            return Err(corrupt(format!("expected 6 fields, found {}", record.len())));
        }
        let agency: AgencyId =
            record[0].parse().map_err(|_| corrupt(format!("agency {:?} is not a number", &record[0])))?;
        f(line, agency, &record)?;
    }
}

/// Parses a stored row back into a bet (tests and tools).
pub fn row_to_bet(record: &csv::StringRecord) -> Option<(AgencyId, Bet)> {
    let agency = record.get(0)?.parse().ok()?;
    let bet = Bet {
        first_name: record.get(1)?.to_string(),
        last_name: record.get(2)?.to_string(),
        document: record.get(3)?.to_string(),
        birthdate: Date::parse(record.get(4)?).ok()?,
        number: record.get(5)?.parse().ok()?,
    };
    Some((agency, bet))
}

/// One pass over the file: the winning documents of each agency, in stored order.
pub fn draw(path: &Path, winning_number: u16) -> Result<(HashMap<AgencyId, Vec<String>>, u64), StorageError> {
    let mut winners: HashMap<AgencyId, Vec<String>> = HashMap::new();
    let mut rows = 0u64;
    let wanted = winning_number.to_string();
    scan(path, |_, agency, record| {
        rows += 1;
        if &record[5] == wanted.as_str() {
            winners.entry(agency).or_default().push(record[3].to_string());
        }
        Ok(())
    })?;
    Ok((winners, rows))
}

/// The `Done` journal beside the bets file (`<bets>.done`): one `agency,total`
/// line per finished agency, so a restarted server knows who had finished.
pub struct DoneJournal {
    path: PathBuf,
    file: File,
}

impl DoneJournal {
    /// Opens (creating) the journal, repairing a torn tail; returns the agencies done.
    pub fn open(bets_path: &Path) -> Result<(DoneJournal, Vec<AgencyId>), StorageError> {
        let mut name = bets_path.as_os_str().to_owned();
        name.push(".done");
        let path = PathBuf::from(name);
        let io_err = |source| StorageError::Io { path: path.clone(), source };
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io_err)?;
        repair_tail(&mut file).map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let mut text = String::new();
        // The journal holds one short line per agency: bounded by the agency count.
        (&mut file).take(64 * 1024 * 1024).read_to_string(&mut text).map_err(io_err)?;
        let mut done = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let agency = line.split(',').next().and_then(|a| a.parse::<AgencyId>().ok()).ok_or_else(|| {
                StorageError::Corrupt {
                    path: path.clone(),
                    line: i as u64 + 1,
                    reason: format!("bad journal line {line:?}"),
                }
            })?;
            done.push(agency);
        }
        Ok((DoneJournal { path, file }, done))
    }

    /// Appends and syncs one `Done` (rare: once per agency).
    pub fn record(&mut self, agency: AgencyId, total: u64) -> Result<(), StorageError> {
        let line = format!("{agency},{total}\n");
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.sync_data())
            .map_err(|source| StorageError::Io { path: self.path.clone(), source })
    }

    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.file.sync_data().map_err(|source| StorageError::Io { path: self.path.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bet(first: &str, last: &str, doc: &str, number: u16) -> Bet {
        Bet {
            first_name: first.into(),
            last_name: last.into(),
            document: doc.into(),
            birthdate: Date::new(2000, 2, 29).unwrap(),
            number,
        }
    }

    #[test]
    fn append_and_load_round_trip_awkward_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/bets.csv");
        let bets = vec![
            bet("O'Brien, Jr", "Núñez \"el Tano\"", "00000042", 7574),
            bet("Ana; María", "Pérez | Gómez", "1", 1),
            bet("Zoë", "Ñandú", "35635602", 7574),
        ];
        let (mut file, rec) = BetFile::open(&path).unwrap();
        assert!(rec.per_agency.is_empty());
        file.append(3, &bets).unwrap();
        file.append(1, &bets[1..2]).unwrap();
        file.sync().unwrap();
        drop(file);

        let mut loaded = Vec::new();
        scan(&path, |_, _, r| {
            loaded.push(row_to_bet(r).unwrap());
            Ok(())
        })
        .unwrap();
        assert_eq!(loaded.len(), 4);
        assert_eq!(loaded[0], (3, bets[0].clone()));
        assert_eq!(loaded[3], (1, bets[1].clone()));

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("3,\"O'Brien, Jr\",\"Núñez \"\"el Tano\"\"\",00000042,2000-02-29,7574\n"), "{text}");
        assert!(text.contains("\n3,Zoë,Ñandú,35635602,2000-02-29,7574\n"), "only needed quoting: {text}");

        let (winners, rows) = draw(&path, 7574).unwrap();
        assert_eq!(rows, 4);
        assert_eq!(winners.get(&3).unwrap(), &vec!["00000042".to_string(), "35635602".to_string()]);
        assert!(!winners.contains_key(&1));

        let (_, rec) = BetFile::open(&path).unwrap();
        assert_eq!(rec.per_agency.get(&3), Some(&3));
        assert_eq!(rec.per_agency.get(&1), Some(&1));
    }

    #[test]
    fn torn_last_row_is_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        std::fs::write(&path, "1,A,B,1,2000-01-01,1\n1,A,B,2,2000-01-01,2\n2,Half,Ro").unwrap();
        let (_, rec) = BetFile::open(&path).unwrap();
        assert_eq!(rec.repaired_bytes, 9);
        assert_eq!(rec.per_agency.get(&1), Some(&2));
        assert!(!rec.per_agency.contains_key(&2));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1,A,B,1,2000-01-01,1\n1,A,B,2,2000-01-01,2\n");
    }

    #[test]
    fn a_corrupt_row_is_reported_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        std::fs::write(&path, "1,A,B,1,2000-01-01,1\nx,A,B,1,2000-01-01,1\n").unwrap();
        let err = BetFile::open(&path).err().unwrap().to_string();
        assert!(err.contains(":2:") && err.contains("agency"), "{err}");
    }
}
