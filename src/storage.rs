//! The bets file: `agency,first_name,last_name,document,birthdate,number`, one row
//! per bet, quoted only where needed (the course's `load_bets` reads it).
//!
//! Owned by exactly one writer (the `BetStore` actor). Opening it repairs a torn
//! last row left by a crash and recounts each agency's stored bets by streaming
//! the file once, so memory never depends on its size.
//!
//! A failed append never leaves a torn row for the next append to continue: the
//! file is cut back to the end of its last complete row before anything else is
//! written, and if even that cut fails the file is marked poisoned and takes no
//! more rows until it is reopened (which cuts any torn tail again).

mod file_io;
pub mod shared;

use crate::bet::{AgencyId, BetRef, RawBet};
pub use file_io::{plain, FileIo, WrapFile};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

#[cfg(test)]
pub use file_io::fault;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}:{line}: {reason}", path.display())]
    Corrupt { path: PathBuf, line: u64, reason: String },
}

impl StorageError {
    /// The kind of the underlying failure (`InvalidData` for a corrupt file).
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            StorageError::Io { source, .. } => source.kind(),
            StorageError::Corrupt { .. } => io::ErrorKind::InvalidData,
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            StorageError::Io { path, .. } | StorageError::Corrupt { path, .. } => path,
        }
    }
}

/// Makes a file's creation (its directory entry) durable: `fsync` on the directory.
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
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
    file: Box<dyn FileIo>,
    /// One batch's rows, reused: a batch reaches the file in one `write` call.
    buf: Vec<u8>,
    /// Bytes of complete rows in the file: where the next row starts.
    len: u64,
    /// Bytes covered by the last successful `fdatasync`.
    synced_len: u64,
    /// A failed append could not be rolled back: the file may end in a torn row,
    /// so it takes no more rows (reopening cuts the tail).
    poisoned: bool,
    /// The same open file, for reading what other processes appended.
    reader: File,
}

/// What one catch-up found past the last known end of a shared file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CaughtUp {
    pub rows: u64,
    pub bytes: u64,
    /// A torn last row left by a process that died mid-write, cut off.
    pub torn_cut: u64,
}

/// Reads the complete lines of `reader` past `from`, cutting a torn tail through
/// `file` (the caller holds the exclusive lock, so a tail without a newline
/// belongs to a writer that died).
fn catch_up_lines(
    path: &Path,
    reader: &File,
    file: &mut dyn FileIo,
    from: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), String>,
) -> Result<(u64, CaughtUp), StorageError> {
    let io_err = |source| StorageError::Io { path: path.to_path_buf(), source };
    let mut rows = 0u64;
    let mut bad = None;
    let (complete, eof) = shared::scan_from(reader, from, |line| {
        rows += 1;
        if let Err(reason) = f(rows, line) {
            bad.get_or_insert((rows, reason));
            return Err(io::Error::new(io::ErrorKind::InvalidData, "corrupt row"));
        }
        Ok(())
    })
    .map_err(|e| match bad.take() {
        Some((n, reason)) => StorageError::Corrupt {
            path: path.to_path_buf(),
            line: n,
            reason: format!("{n}. row past byte {from}: {reason}"),
        },
        None => io_err(e),
    })?;
    if eof < from {
        return Err(StorageError::Corrupt {
            path: path.to_path_buf(),
            line: 0,
            reason: format!("the file is {eof} bytes but {from} were counted: another process cut counted rows"),
        });
    }
    let torn_cut = eof - complete;
    if torn_cut > 0 {
        file.set_len(complete).map_err(io_err)?;
    }
    Ok((complete, CaughtUp { rows, bytes: complete - from, torn_cut }))
}

impl BetFile {
    /// Opens (creating) the file, repairs a torn tail and counts what is stored.
    pub fn open(path: &Path) -> Result<(BetFile, Recovered), StorageError> {
        BetFile::open_with(path, &plain())
    }

    /// [`open`](Self::open), with the writes going through `wrap` (the test seam).
    pub fn open_with(path: &Path, wrap: &WrapFile) -> Result<(BetFile, Recovered), StorageError> {
        let io_err = |source| StorageError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io_err)?;
        sync_parent_dir(path).map_err(io_err)?;
        let reader = file.try_clone().map_err(io_err)?;
        let repaired_bytes = repair_tail(&mut file).map_err(io_err)?;
        // Whatever a previous run left in the page cache becomes the durable base.
        file.sync_data().map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let mut per_agency: HashMap<AgencyId, u64> = HashMap::new();
        for_each_row(path, |line, row| {
            let parsed = parse_row_keys(row).map_err(|reason| StorageError::Corrupt {
                path: path.to_path_buf(),
                line,
                reason,
            })?;
            *per_agency.entry(parsed.agency).or_default() += 1;
            Ok(())
        })?;
        let bet_file = BetFile {
            path: path.to_path_buf(),
            file: wrap(file),
            buf: Vec::with_capacity(16 * 1024),
            len,
            synced_len: len,
            poisoned: false,
            reader,
        };
        Ok((bet_file, Recovered { per_agency, repaired_bytes }))
    }

    /// Cuts the file at `len` (the end of its last synced row) and syncs, before a
    /// reopen: rows past it were never acknowledged, and after a failed sync
    /// nobody can say whether they reached the disk.
    pub fn cut_at(path: &Path, len: u64) -> Result<(), StorageError> {
        let io_err = |source| StorageError::Io { path: path.to_path_buf(), source };
        let file = OpenOptions::new().write(true).open(path).map_err(io_err)?;
        if file.metadata().map_err(io_err)?.len() > len {
            file.set_len(len).map_err(io_err)?;
        }
        file.sync_data().map_err(io_err)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes covered by the last successful sync.
    pub fn synced_len(&self) -> u64 {
        self.synced_len
    }

    /// Why the file takes no more rows, if it does not.
    pub fn poisoned(&self) -> Option<StorageError> {
        self.poisoned.then(|| self.poisoned_error())
    }

    /// Appends the rows of one batch with a single write (reaches the OS, not yet
    /// the disk). On failure the file is cut back to its last complete row.
    pub fn append<'a>(
        &mut self,
        agency: AgencyId,
        bets: impl IntoIterator<Item = RawBet<'a>>,
    ) -> Result<(), StorageError> {
        if self.poisoned {
            return Err(self.poisoned_error());
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for bet in bets {
            render_raw_row(&mut buf, agency, &bet);
        }
        let written = self.file.write_all(&buf);
        let n = buf.len() as u64;
        buf.clear();
        buf.shrink_to(64 * 1024);
        self.buf = buf;
        match written {
            Ok(()) => {
                self.len += n;
                Ok(())
            }
            Err(source) => {
                // Part of the batch may be in the file: cut it before anything else is written.
                if self.file.set_len(self.len).is_err() {
                    self.poisoned = true;
                }
                Err(StorageError::Io { path: self.path.clone(), source })
            }
        }
    }

    fn poisoned_error(&self) -> StorageError {
        StorageError::Io {
            path: self.path.clone(),
            source: io::Error::other("a failed append could not be rolled back; the file must be reopened"),
        }
    }

    /// Counts (with `f`) the rows other processes appended since this one's last
    /// look, cuts a torn row a dead writer left, and with `sync` makes them durable
    /// before anything is decided from them (their writer may have died before its
    /// own sync). The caller holds the exclusive lock.
    pub fn catch_up(&mut self, sync: bool, mut f: impl FnMut(AgencyId)) -> Result<CaughtUp, StorageError> {
        if self.poisoned {
            return Err(self.poisoned_error());
        }
        let (end, caught) = catch_up_lines(&self.path, &self.reader, self.file.as_mut(), self.len, |_, row| {
            f(parse_row_keys(row)?.agency);
            Ok(())
        })?;
        self.len = end;
        if caught.bytes > 0 || caught.torn_cut > 0 {
            if sync {
                self.file.sync_data().map_err(|source| StorageError::Io { path: self.path.clone(), source })?;
            }
            self.synced_len = self.len;
        }
        Ok(caught)
    }

    /// Forces the appended rows to the disk.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.file.sync_data().map_err(|source| StorageError::Io { path: self.path.clone(), source })?;
        self.synced_len = self.len;
        Ok(())
    }
}

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

/// Calls `f(line_number, row)` for every line of the file, reading 1 MiB at a time.
pub fn for_each_row(
    path: &Path,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    const CHUNK: usize = 1 << 20;
    let io_err = |source| StorageError::Io { path: path.to_path_buf(), source };
    let mut file = File::open(path).map_err(io_err)?;
    let mut buf = vec![0u8; CHUNK];
    let (mut start, mut end, mut line) = (0usize, 0usize, 0u64);
    loop {
        while let Some(pos) = buf[start..end].iter().position(|&b| b == b'\n') {
            line += 1;
            f(line, &buf[start..start + pos])?;
            start += pos + 1;
        }
        buf.copy_within(start..end, 0);
        end -= start;
        start = 0;
        if end == buf.len() {
            return Err(StorageError::Corrupt {
                path: path.to_path_buf(),
                line: line + 1,
                reason: "row longer than 1 MiB".into(),
            });
        }
        let n = file.read(&mut buf[end..]).map_err(io_err)?;
        if n == 0 {
            if end > 0 {
                line += 1;
                f(line, &buf[..end])?;
            }
            return Ok(());
        }
        end += n;
    }
}

/// One pass over the file: the winning documents of each agency, in stored order.
pub fn draw(path: &Path, winning_number: u16) -> Result<(HashMap<AgencyId, Vec<String>>, u64), StorageError> {
    let mut winners: HashMap<AgencyId, Vec<String>> = HashMap::new();
    let mut rows = 0u64;
    // A row wins when it ends in `,<number>`: check that cheaply, parse only winners.
    let suffix = format!(",{winning_number}");
    let suffix = suffix.as_bytes();
    for_each_row(path, |line, row| {
        rows += 1;
        let row = row.strip_suffix(b"\r").unwrap_or(row);
        if row.ends_with(suffix) {
            let keys = parse_row_keys(row).map_err(|reason| StorageError::Corrupt {
                path: path.to_path_buf(),
                line,
                reason,
            })?;
            winners.entry(keys.agency).or_default().push(String::from_utf8_lossy(keys.document).into_owned());
        }
        Ok(())
    })?;
    Ok((winners, rows))
}

/// The `Done` journal beside the bets file (`<bets>.done`): one `agency,total`
/// line per finished agency, so a restarted server knows who had finished.
pub struct DoneJournal {
    path: PathBuf,
    file: Box<dyn FileIo>,
    /// Bytes of complete, synced lines.
    len: u64,
    reader: File,
}

impl DoneJournal {
    pub fn path_for(bets_path: &Path) -> PathBuf {
        let mut name = bets_path.as_os_str().to_owned();
        name.push(".done");
        PathBuf::from(name)
    }

    /// Opens (creating) the journal, repairing a torn tail; returns the agencies done.
    pub fn open(bets_path: &Path) -> Result<(DoneJournal, Vec<AgencyId>), StorageError> {
        DoneJournal::open_with(bets_path, &plain())
    }

    /// [`open`](Self::open), with the writes going through `wrap` (the test seam).
    pub fn open_with(bets_path: &Path, wrap: &WrapFile) -> Result<(DoneJournal, Vec<AgencyId>), StorageError> {
        let path = DoneJournal::path_for(bets_path);
        let io_err = |source| StorageError::Io { path: path.clone(), source };
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io_err)?;
        sync_parent_dir(&path).map_err(io_err)?;
        let reader = file.try_clone().map_err(io_err)?;
        repair_tail(&mut file).map_err(io_err)?;
        file.sync_data().map_err(io_err)?;
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
        Ok((DoneJournal { path, file: wrap(file), len: text.len() as u64, reader }, done))
    }

    /// The agencies other processes recorded since this one's last look (the
    /// caller holds the exclusive lock; a torn line is cut).
    pub fn catch_up(&mut self) -> Result<(Vec<AgencyId>, CaughtUp), StorageError> {
        let mut done = Vec::new();
        let (end, caught) = catch_up_lines(&self.path, &self.reader, self.file.as_mut(), self.len, |_, line| {
            let agency = std::str::from_utf8(line)
                .ok()
                .and_then(|l| l.split(',').next())
                .and_then(|a| a.parse::<AgencyId>().ok())
                .ok_or_else(|| format!("bad journal line {:?}", String::from_utf8_lossy(line)))?;
            done.push(agency);
            Ok(())
        })?;
        if caught.torn_cut > 0 {
            self.sync()?;
        }
        self.len = end;
        Ok((done, caught))
    }

    /// Whether the journal on disk grew past what this process has read (one `fstat`).
    pub fn grew(&self) -> bool {
        self.reader.metadata().map(|m| m.len() != self.len).unwrap_or(false)
    }

    /// Appends and syncs one `Done` (rare: once per agency). A failed write is cut
    /// back at once; a failed sync is reported so the caller stops trusting the
    /// journal's state and reopens it (see `BetStore`).
    pub fn record(&mut self, agency: AgencyId, total: u64) -> Result<(), StorageError> {
        let line = format!("{agency},{total}\n");
        let io_err = |source| StorageError::Io { path: self.path.clone(), source };
        if let Err(e) = self.file.write_all(line.as_bytes()) {
            let _ = self.file.set_len(self.len);
            return Err(io_err(e));
        }
        self.file.sync_data().map_err(io_err)?;
        self.len += line.len() as u64;
        Ok(())
    }

    /// Bytes of the journal known to be on disk.
    pub fn synced_len(&self) -> u64 {
        self.len
    }

    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.file.sync_data().map_err(|source| StorageError::Io { path: self.path.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bet::{Bet, Date};

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
        let bets = [
            bet("O'Brien, Jr", "Núñez \"el Tano\"", "00000042", 7574),
            bet("Ana; María", "Pérez | Gómez", "1", 1),
            bet("Zoë", "Ñandú", "35635602", 7574),
        ];
        let (mut file, rec) = BetFile::open(&path).unwrap();
        assert!(rec.per_agency.is_empty());
        file.append(3, bets.iter().map(|b| RawBet::from(b.as_ref()))).unwrap();
        file.append(1, bets[1..2].iter().map(|b| RawBet::from(b.as_ref()))).unwrap();
        file.sync().unwrap();
        drop(file);

        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_path(&path).unwrap();
        let loaded: Vec<(AgencyId, Bet)> = reader
            .records()
            .map(|r| {
                let r = r.unwrap();
                let bet = Bet {
                    first_name: r[1].to_string(),
                    last_name: r[2].to_string(),
                    document: r[3].to_string(),
                    birthdate: Date::parse(&r[4]).unwrap(),
                    number: r[5].parse().unwrap(),
                };
                (r[0].parse().unwrap(), bet)
            })
            .collect();
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

    fn csv_crate_row(agency: AgencyId, bet: &Bet) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(&mut out);
            let (date, number) = (bet.birthdate.to_string(), bet.number.to_string());
            w.write_record([&agency.to_string(), &bet.first_name, &bet.last_name, &bet.document, &date, &number])
                .unwrap();
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn rows_match_the_csv_crate_byte_for_byte(
            agency in 1u32..100_000,
            first in "[^\\p{Cc}]{1,30}",
            last in "[a-zA-Z ,;|\"'áéíóúñÑ]{1,30}",
            doc in "[0-9]{1,16}",
            (y, m, d) in (1000u16..=9999, 1u8..=12, 1u8..=28),
            number in 0u16..=9999,
        ) {
            let bet = Bet { first_name: first, last_name: last, document: doc, birthdate: Date::new(y, m, d).unwrap(), number };
            let mut ours = Vec::new();
            render_row(&mut ours, agency, &bet.as_ref());
            proptest::prop_assert_eq!(String::from_utf8(ours.clone()).unwrap(), String::from_utf8(csv_crate_row(agency, &bet)).unwrap());
            let keys = parse_row_keys(&ours[..ours.len() - 1]).unwrap();
            proptest::prop_assert_eq!(keys.agency, agency);
            proptest::prop_assert_eq!(keys.document, bet.document.as_bytes());
            let number_text = bet.number.to_string();
            proptest::prop_assert_eq!(keys.number, number_text.as_bytes());
        }
    }

    #[test]
    fn malformed_rows_are_named() {
        assert!(parse_row_keys(b"1,A,B,12,2000-01-01,7574").is_ok());
        assert!(parse_row_keys(b"1,\"A, x\",B,12,2000-01-01,7574").is_ok());
        for bad in [
            &b"x,A,B,12,2000-01-01,1"[..],
            b"1,A,B,1a,2000-01-01,1",
            b"1,A,B,12,2000-1-01,1",
            b"1,A,B,12,2000-01-01,12345",
            b"1,12,2000-01-01,1",
            b"",
        ] {
            assert!(parse_row_keys(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
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
