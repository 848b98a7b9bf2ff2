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
mod journal;
mod row;
pub mod shared;

pub use journal::DoneJournal;
pub use row::{parse_row_keys, render_raw_row, render_row, render_rows, RowKeys};

use crate::bet::{AgencyId, RawBet};
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

/// Rows wait in [`BetFile`]'s buffer until this many bytes can go in one write.
///
/// One `write` per batch (about 4 KiB) cost the server a third of its CPU: on
/// ext4 each append that ends inside a fresh page makes the kernel zero the
/// rest of it (`ext4_block_write_begin` → `memset`), once per write. Writes of
/// 64 KiB and more make that cost vanish (measured with `dd`: 215 MB in
/// 4,300-byte writes, 0.24–0.8 s of system time; in 65,000-byte writes, 0.1 s).
pub const WRITE_CHUNK: usize = 64 * 1024;

/// Append-only writer over the bets file.
pub struct BetFile {
    path: PathBuf,
    file: Box<dyn FileIo>,
    /// Rendered rows not yet handed to the OS: whole rows only, bounded by
    /// [`WRITE_CHUNK`] plus one batch. They reach the file when the buffer is
    /// full, and always before a sync, so "synced" still means "on the disk".
    pending: Vec<u8>,
    /// Bytes of complete rows in the file (not counting `pending`): where the
    /// next write starts.
    len: u64,
    /// Every append is written at once (relaxed acks: "stored" means handed to the OS).
    write_through: bool,
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
            pending: Vec::new(),
            write_through: false,
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

    /// Bytes covered by the last successful sync.
    pub fn synced_len(&self) -> u64 {
        self.synced_len
    }

    /// Why the file takes no more rows, if it does not.
    pub fn poisoned(&self) -> Option<StorageError> {
        self.poisoned.then(|| self.poisoned_error())
    }

    /// Appends the rows of one batch. They go to the OS with the rows before
    /// them once [`WRITE_CHUNK`] bytes are waiting, or at the next [`flush`](Self::flush)
    /// or [`sync`](Self::sync). A failed write takes back this batch's rows only:
    /// the file is cut back to its last complete row, and the rows of earlier
    /// batches stay waiting, in order, for the next write.
    pub fn append<'a>(
        &mut self,
        agency: AgencyId,
        bets: impl IntoIterator<Item = RawBet<'a>>,
    ) -> Result<(), StorageError> {
        if self.poisoned {
            return Err(self.poisoned_error());
        }
        let before = self.pending.len();
        render_rows(&mut self.pending, agency, bets);
        if self.pending.len() < WRITE_CHUNK && !self.write_through {
            return Ok(());
        }
        self.flush().inspect_err(|_| self.pending.truncate(before))
    }

    /// Hands every waiting row to the OS in one write. On failure the file is
    /// cut back to its last complete row (or, if even that fails, poisoned) and
    /// the rows keep waiting.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        if self.poisoned {
            return Err(self.poisoned_error());
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        match self.file.write_all(&self.pending) {
            Ok(()) => {
                self.len += self.pending.len() as u64;
                self.pending.clear();
                // One batch past a chunk at most; keep no more between bursts.
                self.pending.shrink_to(2 * WRITE_CHUNK);
                Ok(())
            }
            Err(source) => {
                // Part of the rows may be in the file: cut them before anything else is written.
                if self.file.set_len(self.len).is_err() {
                    self.poisoned = true;
                }
                Err(StorageError::Io { path: self.path.clone(), source })
            }
        }
    }

    /// Writes every append at once instead of in chunks (for acks that only
    /// promise the OS has the rows).
    pub fn set_write_through(&mut self, on: bool) {
        self.write_through = on;
    }

    /// Whether rows are waiting to be written.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
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
        // Others' rows start where this process's end: its own must be in the file first.
        self.flush()?;
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

    /// Forces the appended rows to the disk (writing the waiting ones first).
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.flush()?;
        self.file.sync_data().map_err(|source| StorageError::Io { path: self.path.clone(), source })?;
        self.synced_len = self.len;
        Ok(())
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

/// Winning documents per agency, in stored order.
pub type Winners = HashMap<AgencyId, Vec<String>>;

/// A file at least this long is drawn by two threads, one per half.
const SPLIT_AT_LEAST: u64 = 8 << 20;
/// Bytes read at a time by each thread of the draw (the two together hold what
/// the one-pass draw held: the server's peak with 10,000 agencies waiting for
/// the draw is close to its 64 MiB bound); also the longest row it accepts.
const DRAW_CHUNK: usize = 512 << 10;

/// One pass over the file: the winning documents of each agency, in stored order,
/// and the rows counted.
///
/// The winning number is only known now, so this scans every stored byte; it
/// looks for `,<number>` followed by the end of a line with `memchr`'s vectorised
/// substring search, and does no per-row work for the rows that do not win (about
/// 9,999 in 10,000): rows are counted with one vectorisable count of newlines,
/// line numbers are only worked out for a winner (for its error, if any).
///
/// Every agency waits for the draw, and the draw is the last step of a run, so
/// nothing else needs the second core then: a long file is cut at a line end
/// near its middle and both halves are scanned at once (each thread with its own
/// buffer, reading with `pread`; nothing is shared but the open file), which
/// halved the draw over 5,000,000 rows. The second half's line numbers are moved
/// on by the first half's rows, and its winners come after the first half's.
pub fn draw(path: &Path, winning_number: u16) -> Result<(Winners, u64), StorageError> {
    draw_split(path, winning_number, SPLIT_AT_LEAST, DRAW_CHUNK)
}

/// [`draw`], splitting files of at least `split_at_least` bytes and reading
/// `chunk` bytes at a time (tests split small files and read them in small chunks).
fn draw_split(
    path: &Path,
    winning_number: u16,
    split_at_least: u64,
    chunk: usize,
) -> Result<(Winners, u64), StorageError> {
    let io_err = |source| StorageError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    let split = if len >= split_at_least { line_start_after(&file, len / 2, chunk).map_err(io_err)? } else { None };
    let Some(cut) = split.filter(|&cut| cut < len) else {
        return draw_range(&file, path, 0, len, winning_number, chunk);
    };
    let (first, second) = std::thread::scope(|scope| {
        let second = std::thread::Builder::new()
            .name("draw".into())
            .spawn_scoped(scope, || draw_range(&file, path, cut, len, winning_number, chunk));
        let first = draw_range(&file, path, 0, cut, winning_number, chunk);
        let second = match second {
            Ok(handle) => {
                handle.join().unwrap_or_else(|_| Err(io_err(io::Error::other("the draw's second thread panicked"))))
            }
            // No thread to be had: the same work, one half after the other.
            Err(_) => draw_range(&file, path, cut, len, winning_number, chunk),
        };
        (first, second)
    });
    let (mut winners, rows) = first?;
    let (more, more_rows) = second.map_err(|e| match e {
        StorageError::Corrupt { path, line, reason } => StorageError::Corrupt { path, line: line + rows, reason },
        other => other,
    })?;
    for (agency, documents) in more {
        winners.entry(agency).or_default().extend(documents);
    }
    Ok((winners, rows + more_rows))
}

/// Where the first line that starts at or after `at` starts (`None` when no line
/// end is found within `chunk` bytes: the file is then drawn whole, which reports it).
fn line_start_after(file: &File, at: u64, chunk: usize) -> io::Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; chunk.min(64 * 1024)];
    let mut pos = at;
    while pos - at < chunk as u64 {
        let n = file.read_at(&mut buf, pos)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
            return Ok(Some(pos + i as u64 + 1));
        }
        pos += n as u64;
    }
    Ok(None)
}

/// [`draw`] over the bytes `from..end_of_range` of `file`, which start a line and end
/// one (or end the file); line numbers count from the range's first line.
fn draw_range(
    file: &File,
    path: &Path,
    from: u64,
    end_of_range: u64,
    winning_number: u16,
    chunk: usize,
) -> Result<(Winners, u64), StorageError> {
    use std::os::unix::fs::FileExt;
    let io_err = |source| StorageError::Io { path: path.to_path_buf(), source };
    let mut winners: Winners = HashMap::new();
    let needle = format!(",{winning_number}");
    let finder = memchr::memmem::Finder::new(needle.as_bytes());
    let mut buf = vec![0u8; chunk];
    // Rows before `buf[0]`; `end` bytes of `buf` hold data; `pos` is where the next read starts.
    let (mut rows, mut end, mut pos) = (0u64, 0usize, from);
    loop {
        let want = (buf.len() - end).min(usize::try_from(end_of_range - pos).unwrap_or(usize::MAX));
        let n = if want == 0 { 0 } else { file.read_at(&mut buf[end..end + want], pos).map_err(io_err)? };
        pos += n as u64;
        let eof = n == 0;
        end += n;
        // Whole lines only; at the end of the file a last line without its newline counts too.
        let whole = if eof {
            end
        } else {
            match memchr::memrchr(b'\n', &buf[..end]) {
                Some(p) => p + 1,
                None if end == buf.len() => {
                    return Err(StorageError::Corrupt {
                        path: path.to_path_buf(),
                        line: rows + 1,
                        reason: format!("row longer than {chunk} bytes"),
                    })
                }
                None => continue,
            }
        };
        let data = &buf[..whole];
        let (mut counted, mut rows_at) = (0usize, rows);
        for at in finder.find_iter(data) {
            let after = at + needle.len();
            let ends_line = match data.get(after..) {
                Some([]) => true,
                Some([b'\n', ..]) | Some([b'\r', b'\n', ..]) => true,
                Some([b'\r']) => eof,
                _ => false,
            };
            if !ends_line {
                continue;
            }
            let start = memchr::memrchr(b'\n', &data[..at]).map_or(0, |p| p + 1);
            rows_at += count_newlines(&data[counted..start]);
            counted = start;
            let row = &data[start..after];
            let keys = parse_row_keys(row).map_err(|reason| StorageError::Corrupt {
                path: path.to_path_buf(),
                line: rows_at + 1,
                reason,
            })?;
            winners.entry(keys.agency).or_default().push(String::from_utf8_lossy(keys.document).into_owned());
        }
        rows += count_newlines(data);
        if eof {
            if whole > 0 && data[whole - 1] != b'\n' {
                rows += 1;
            }
            return Ok((winners, rows));
        }
        buf.copy_within(whole..end, 0);
        end -= whole;
    }
}

/// Newlines in `data`: 64 bytes at a time summed in byte lanes (at most 64, no
/// overflow), a shape the compiler turns into vector compares and adds.
fn count_newlines(data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(64);
    let mut n = 0u64;
    for chunk in &mut chunks {
        n += u64::from(chunk.iter().fold(0u8, |acc, &b| acc + u8::from(b == b'\n')));
    }
    n + chunks.remainder().iter().filter(|&&b| b == b'\n').count() as u64
}

#[cfg(test)]
mod tests;
