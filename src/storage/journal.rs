//! The done journal: which agencies finished and with how many bets, kept beside
//! the bets file; every line is parsed whole and checked against the stored rows.

use super::*;

/// One journal line: the agency, the total it announced, and the line's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoneLine {
    pub agency: AgencyId,
    pub total: u64,
    pub line: u64,
}

/// Parses `agency,total` exactly: two decimal fields, the agency in `1..=agencies`.
fn parse_line(line: &[u8], agencies: u32) -> Result<(AgencyId, u64), String> {
    let bad = || format!("bad journal line {:?}: expected agency,total", String::from_utf8_lossy(line));
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let (agency, total) = text.split_once(',').ok_or_else(bad)?;
    let number = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !number(agency) || !number(total) {
        return Err(bad());
    }
    let agency: AgencyId = agency.parse().map_err(|_| bad())?;
    if !(1..=agencies).contains(&agency) {
        return Err(format!("journal line {text:?}: agency {agency} is not in 1..={agencies}"));
    }
    Ok((agency, total.parse().map_err(|_| bad())?))
}

/// Each done agency's total against its stored rows, and no agency done twice
/// with different totals: the first line that disagrees, named.
pub fn check_done_totals(
    journal_path: &Path,
    done: &[DoneLine],
    per_agency: &HashMap<AgencyId, u64>,
) -> Result<(), StorageError> {
    let mut seen: HashMap<AgencyId, u64> = HashMap::new();
    for d in done {
        let stored = per_agency.get(&d.agency).copied().unwrap_or(0);
        let reason = if seen.insert(d.agency, d.total).is_some_and(|t| t != d.total) {
            Some(format!("agency {} is recorded done twice with different totals", d.agency))
        } else if stored != d.total {
            Some(format!(
                "agency {} is recorded done with {} bets, but {stored} of its rows are stored",
                d.agency, d.total
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(StorageError::Corrupt { path: journal_path.to_path_buf(), line: d.line, reason });
        }
    }
    Ok(())
}

/// The `Done` journal beside the bets file (`<bets>.done`): one `agency,total`
/// line per finished agency, so a restarted server knows who had finished.
pub struct DoneJournal {
    path: PathBuf,
    file: Box<dyn FileIo>,
    /// Bytes of complete, synced lines.
    len: u64,
}

impl DoneJournal {
    pub fn path_for(bets_path: &Path) -> PathBuf {
        let mut name = bets_path.as_os_str().to_owned();
        name.push(".done");
        PathBuf::from(name)
    }

    /// Opens (creating) the journal, repairing a torn tail; returns the agencies done.
    pub fn open(bets_path: &Path) -> Result<(DoneJournal, Vec<DoneLine>), StorageError> {
        DoneJournal::open_with(bets_path, &plain(), u32::MAX)
    }

    /// [`open`](Self::open), with the writes going through `wrap` (the test seam)
    /// and agencies in `1..=agencies` only.
    pub fn open_with(
        bets_path: &Path,
        wrap: &WrapFile,
        agencies: u32,
    ) -> Result<(DoneJournal, Vec<DoneLine>), StorageError> {
        let path = DoneJournal::path_for(bets_path);
        let io_err = |source| StorageError::Io { path: path.clone(), source };
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io_err)?;
        sync_parent_dir(&path).map_err(io_err)?;
        repair_tail(&mut file).map_err(io_err)?;
        file.sync_data().map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let mut text = Vec::new();
        // The journal holds one short line per agency: bounded by the agency count.
        (&mut file).take(64 * 1024 * 1024).read_to_end(&mut text).map_err(io_err)?;
        let done = DoneJournal::parse_all(&path, &text, agencies)?;
        Ok((DoneJournal { path, file: wrap(file), len: text.len() as u64 }, done))
    }

    /// Parses every line of a journal's `text` (which must end with a newline).
    pub fn parse_all(path: &Path, text: &[u8], agencies: u32) -> Result<Vec<DoneLine>, StorageError> {
        let mut done = Vec::new();
        let mut lines = text.split(|&b| b == b'\n').peekable();
        let mut line_no = 0;
        while let Some(line) = lines.next() {
            line_no += 1;
            let corrupt = |reason| StorageError::Corrupt { path: path.to_path_buf(), line: line_no, reason };
            if lines.peek().is_none() {
                return match line.is_empty() {
                    true => Ok(done),
                    false => Err(corrupt("a torn last line (no newline)".into())),
                };
            }
            let (agency, total) = parse_line(line, agencies).map_err(corrupt)?;
            done.push(DoneLine { agency, total, line: line_no });
        }
        Ok(done)
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
