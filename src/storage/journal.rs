//! The done journal: which agencies finished, kept beside the bets file.

use super::*;

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
