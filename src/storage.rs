//! The bets file: `agency,first_name,last_name,document,birthdate,number`, one row
//! per bet, quoted only where needed (the course's `load_bets` reads it).
//!
//! Owned by exactly one writer (the `BetStore` actor). Every sync group is sealed
//! in the sidecar `<bets>.sum` (see [`integrity`]); opening checks every group and
//! row ([`check`]), cuts what a crash left past the last seal and recounts each
//! agency's bets, streaming both files once, so memory never depends on their size.
//!
//! A failed append never leaves a torn row for the next append to continue: the
//! file is cut back to the end of its last complete row before anything else is
//! written, and if even that cut fails the file is marked poisoned and takes no
//! more rows until it is reopened (which cuts any torn tail again).

pub mod audit;
pub mod check;
mod draw;
mod error;
mod file_io;
pub mod integrity;
pub mod jetstream;
mod journal;
mod row;
mod sole;

use check::{Position, Tail};
pub use draw::{draw, Winners};
#[cfg(test)]
use draw::{draw_split, DRAW_CHUNK};
pub use error::StorageError;
pub use integrity::{ChainKey, StoreSpec};
use integrity::{Sealer, Sidecar};
pub use journal::{check_done_totals, DoneJournal, DoneLine};
pub use row::{parse_row_keys, render_raw_row, render_row, render_rows, RowKeys};
pub use sole::{lock_path_for, SoleWriter};

use crate::bet::{AgencyId, RawBet};
pub use file_io::{plain, FileIo, WrapFile};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

#[cfg(test)]
pub use file_io::fault;

/// Cuts the file at `path` to `len` bytes (if longer) and syncs it.
pub fn cut_file(path: &Path, len: u64) -> Result<(), StorageError> {
    let io_err = |source| StorageError::Io { path: path.to_path_buf(), source };
    let file = OpenOptions::new().write(true).open(path).map_err(io_err)?;
    if file.metadata().map_err(io_err)?.len() > len {
        file.set_len(len).map_err(io_err)?;
    }
    file.sync_data().map_err(io_err)
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
    /// Bytes past the last sealed group (and of a torn sidecar record) that were cut off.
    pub repaired_bytes: u64,
    /// Sealed groups checked.
    pub groups: u64,
}

/// Rows wait in [`BetFile`]'s buffer until this many bytes can go in one write.
///
/// One `write` per batch (about 4 KiB) cost the server a third of its CPU: on
/// ext4 each append that ends inside a fresh page makes the kernel zero the
/// rest of it (`ext4_block_write_begin` → `memset`), once per write. Writes of
/// 64 KiB and more make that cost vanish (measured with `dd`: 215 MB in
/// 4,300-byte writes, 0.24–0.8 s of system time; in 65,000-byte writes, 0.1 s).
pub const WRITE_CHUNK: usize = 64 * 1024;

/// Append-only writer over the bets file, and the sealer of its sync groups.
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
    /// Every append is written and sealed at once (relaxed acks: "stored" means handed to the OS).
    write_through: bool,
    /// Bytes covered by the last successful `fdatasync` and seal.
    synced_len: u64,
    /// A failed append could not be rolled back: the file may end in a torn row,
    /// so it takes no more rows (reopening cuts the tail).
    poisoned: bool,
    /// The group records (`None` only in the benchmark's baseline).
    sidecar: Option<Sidecar>,
    /// The group since the last seal: every byte written to the file since
    /// then, taken in as it was written (used only with a sidecar).
    sealer: Sealer,
    /// The last sealed group's end, rows, head and sidecar length.
    sealed: Position,
    spec: StoreSpec,
}

impl BetFile {
    /// Opens (creating) the file with the default checks (any agency, no key).
    pub fn open(path: &Path) -> Result<(BetFile, Recovered), StorageError> {
        BetFile::open_with(path, &plain(), &StoreSpec::default())
    }

    /// Opens (creating) the file and its sidecar, checks every sealed group and
    /// row (see [`check::scan`]), cuts what a crash left past the last seal and
    /// counts what is stored. Writes go through `wrap` (the test seam).
    pub fn open_with(path: &Path, wrap: &WrapFile, spec: &StoreSpec) -> Result<(BetFile, Recovered), StorageError> {
        BetFile::open_seeing(path, wrap, spec, |_, _, _| {})
    }

    /// [`open_with`](Self::open_with), showing `seen` each kept row as the one
    /// read of the file meets it: its agency, its index among that agency's rows
    /// and its bytes (without the `\n`). Rows a crash left past the last seal are
    /// cut, never shown; after an error, what was shown is void.
    pub fn open_seeing(
        path: &Path,
        wrap: &WrapFile,
        spec: &StoreSpec,
        mut seen: impl FnMut(AgencyId, u64, &[u8]),
    ) -> Result<(BetFile, Recovered), StorageError> {
        let io_err = |source| StorageError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let side_path = integrity::sidecar_path(path);
        let side_len = std::fs::metadata(&side_path).ok().map(|m| m.len());
        let file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io_err)?;
        sync_parent_dir(path).map_err(io_err)?;
        let reader = file.try_clone().map_err(io_err)?;
        let bets_len = reader.metadata().map_err(io_err)?.len();
        let corrupt = |path: &Path, reason: String| StorageError::Corrupt { path: path.to_path_buf(), line: 0, reason };
        let sidecar = match (spec.sidecar, side_len) {
            (true, None) if bets_len > 0 => {
                return Err(corrupt(
                    &side_path,
                    format!("missing: nothing seals the {bets_len} bytes of {}", path.display()),
                ))
            }
            (true, _) => Some(Sidecar::open(path, wrap)?),
            (false, Some(n)) if n > 0 => {
                return Err(corrupt(&side_path, "the store is sealed: it cannot be opened with the sidecar off".into()))
            }
            (false, _) => None,
        };
        let mut per_agency: HashMap<AgencyId, u64> = HashMap::new();
        let tail = if spec.sidecar { Tail::Cut } else { Tail::Adopt };
        let side = sidecar.as_ref().map(|s| (&s.reader, s.path.as_path()));
        let scanned = check::scan(&reader, path, side, Position::default(), spec, tail, |_, row, line| {
            let count = per_agency.entry(row.agency).or_default();
            seen(row.agency, *count, line);
            *count += 1;
        })?;
        let mut sidecar = sidecar;
        if scanned.bets_cut > 0 {
            file.set_len(scanned.pos.bets).map_err(io_err)?;
        }
        if let Some(s) = &mut sidecar {
            if scanned.sidecar_cut > 0 {
                s.file.set_len(scanned.pos.sidecar).map_err(|e| s.io_err(e))?;
            }
            s.file.sync_data().map_err(|e| s.io_err(e))?;
        }
        // Whatever a previous run left in the page cache becomes the durable base.
        file.sync_data().map_err(io_err)?;
        let len = scanned.pos.bets;
        let bet_file = BetFile {
            path: path.to_path_buf(),
            file: wrap(file),
            pending: Vec::new(),
            write_through: false,
            len,
            synced_len: len,
            poisoned: false,
            sidecar,
            sealer: Sealer::new(spec.key.is_some()),
            sealed: scanned.pos,
            spec: spec.clone(),
        };
        let repaired_bytes = scanned.bets_cut + scanned.sidecar_cut;
        Ok((bet_file, Recovered { per_agency, repaired_bytes, groups: scanned.pos.groups }))
    }

    /// Cuts the file at `len` and its sidecar at `sidecar_len` (the ends of the
    /// last synced group) and syncs, before a reopen: rows past them were never
    /// acknowledged, and after a failed sync nobody can say whether they reached the disk.
    pub fn cut_at(path: &Path, len: u64, sidecar_len: u64) -> Result<(), StorageError> {
        cut_file(path, len)?;
        match integrity::sidecar_path(path) {
            side if side.exists() => cut_file(&side, sidecar_len),
            _ => Ok(()),
        }
    }

    /// Bytes covered by the last successful sync.
    pub fn synced_len(&self) -> u64 {
        self.synced_len
    }

    /// Bytes of the sidecar's records, as of the last seal.
    pub fn sidecar_len(&self) -> u64 {
        self.sealed.sidecar
    }

    /// The chain head after the last sealed group (`None` without a key).
    pub fn head(&self) -> Option<String> {
        self.spec.key.as_ref().map(|_| check::head_hex(&self.sealed))
    }

    /// Why the file takes no more rows, if it does not.
    pub fn poisoned(&self) -> Option<StorageError> {
        self.poisoned.then(|| self.poisoned_error())
    }

    /// Appends the rows of one batch. They go to the OS with the rows before
    /// them once [`WRITE_CHUNK`] bytes are waiting, or at the next [`flush`](Self::flush)
    /// or [`sync`](Self::sync). A failed write takes back this batch's rows only:
    /// the file is cut back to its last complete row, and the rows of earlier
    /// batches stay waiting, in order, for the next write. A group that grew to
    /// [`MAX_GROUP`](integrity::MAX_GROUP) is sealed here (a failure then poisons the file).
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
        self.appended(before)
    }

    /// [`append`](Self::append) for rows already rendered in the stored format
    /// (whole rows; the replicated store's messages carry them so).
    pub fn append_rendered(&mut self, rows: &[u8]) -> Result<(), StorageError> {
        if self.poisoned {
            return Err(self.poisoned_error());
        }
        let before = self.pending.len();
        self.pending.extend_from_slice(rows);
        self.appended(before)
    }

    /// Writes (and with write-through seals) what an append added past `before`.
    fn appended(&mut self, before: usize) -> Result<(), StorageError> {
        if self.pending.len() < WRITE_CHUNK && !self.write_through {
            return Ok(());
        }
        self.flush().inspect_err(|_| self.pending.truncate(before))?;
        let durable = !self.write_through;
        if self.write_through || self.len - self.sealed.bets >= integrity::MAX_GROUP {
            self.seal(durable).inspect_err(|_| self.poisoned = true)?;
        }
        Ok(())
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
                if self.sidecar.is_some() {
                    // Sealed as written, while the rows are still in the cache.
                    self.sealer.absorb(&self.pending);
                }
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

    /// Forces the appended rows to the disk (writing the waiting ones first) and
    /// seals them as one group.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.flush()?;
        self.seal(true)
    }

    /// Seals the bytes written since the last seal (taken in by the sealer as
    /// they were written). With `durable` the bets' `fdatasync` runs here while
    /// a second thread appends the group's record to the sidecar and syncs
    /// that: the two flushes overlap instead of following each other. Only once
    /// both are done do the seal's counters move and the sealer start a new
    /// group, so a failure leaves them at the last group that is whole on disk
    /// (where a reopen cuts). A crash between the two syncs can leave the last
    /// record on disk without all of its rows: opening cuts that group, which
    /// no ack covered (see [`check::scan`]).
    fn seal(&mut self, durable: bool) -> Result<(), StorageError> {
        let BetFile { path, file, sidecar, sealed, spec, sealer, len, .. } = self;
        let io_err = |source| StorageError::Io { path: path.clone(), source };
        let Some(side) = sidecar.as_mut().filter(|_| *len != sealed.bets) else {
            if durable {
                file.sync_data().map_err(io_err)?;
                self.synced_len = self.len;
            }
            self.sealed.bets = self.len;
            return Ok(());
        };
        let (rec, bytes) = sealer.record(spec.key.as_deref(), &sealed.head, sealed.bets, *len);
        let prev_sidecar = sealed.sidecar;
        let (bets, appended) = if durable {
            std::thread::scope(|scope| {
                let sealing = std::thread::Builder::new()
                    .name("seal".into())
                    .spawn_scoped(scope, || append_record(side, &bytes, prev_sidecar, true));
                let bets = file.sync_data();
                let appended = match sealing {
                    Ok(handle) => handle.join().unwrap_or_else(|_| {
                        Err(SealError::Failed(io_err(io::Error::other("the sealing thread panicked"))))
                    }),
                    Err(e) => Err(SealError::Failed(io_err(e))),
                };
                (bets, appended)
            })
        } else {
            (Ok(()), append_record(side, &bytes, prev_sidecar, false))
        };
        match appended {
            Ok(()) => {}
            Err(SealError::Failed(e)) => return Err(e),
            Err(SealError::Poisoned(e)) => {
                self.poisoned = true;
                return Err(e);
            }
        }
        bets.map_err(io_err)?;
        if durable {
            self.synced_len = self.len;
        }
        self.sealer.reset();
        self.sealed = Position {
            bets: self.len,
            rows: self.sealed.rows + rec.rows,
            groups: self.sealed.groups + 1,
            sidecar: self.sealed.sidecar + rec.sidecar_len(),
            head: rec.head,
        };
        Ok(())
    }
}

/// How sealing a group failed: `Poisoned` when the sidecar may hold part of
/// its record and could not be cut back.
enum SealError {
    Failed(StorageError),
    Poisoned(StorageError),
}

/// Appends a group's record (`bytes`, its fixed part and row CRCs) to the
/// sidecar, which ends at `prev_len`, and with `durable` syncs it. A failed
/// write is cut back to `prev_len`.
fn append_record(side: &mut Sidecar, bytes: &[u8], prev_len: u64, durable: bool) -> Result<(), SealError> {
    if let Err(e) = side.file.write_all(bytes) {
        return Err(match side.file.set_len(prev_len) {
            Ok(()) => SealError::Failed(side.io_err(e)),
            Err(_) => SealError::Poisoned(side.io_err(e)),
        });
    }
    if durable {
        side.file.sync_data().map_err(|e| SealError::Failed(side.io_err(e)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
