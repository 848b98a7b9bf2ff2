//! What lets several server processes share one bets file and one done journal.
//!
//! Each process keeps its own in-memory view (the `BetStore` actor's); between
//! processes the only agreement is the files themselves, guarded by an exclusive
//! `flock` on a lock file beside them (`<bets>.lock`). A process holds it around a
//! whole group-commit burst: it first checks the groups the others sealed since its
//! last look (the bets through `check::scan`, the journal through [`scan_from`]),
//! then decides, appends, syncs and seals, then lets go; so the sidecar holds one
//! chain, in the order the groups reached the file. The kernel drops the lock of a
//! process that dies, so a killed replica never blocks the others; what it may
//! leave behind is unsealed rows and a torn record, which the next holder cuts.

use super::{FileIo, StorageError};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lock file's path for a bets file (`<bets>.lock`).
pub fn lock_path_for(bets_path: &Path) -> PathBuf {
    let mut name = bets_path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// An open lock file. `flock` locks belong to the open file description, so
/// one `StoreLock` per process is one lock holder.
pub struct StoreLock {
    file: File,
    path: PathBuf,
}

impl StoreLock {
    pub fn open(bets_path: &Path) -> io::Result<StoreLock> {
        let path = lock_path_for(bets_path);
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        Ok(StoreLock { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Blocks until this process holds the lock alone; returns how long it waited.
    pub fn lock_exclusive(&self) -> io::Result<Duration> {
        let started = Instant::now();
        self.flock(libc::LOCK_EX)?;
        Ok(started.elapsed())
    }

    pub fn unlock(&self) -> io::Result<()> {
        self.flock(libc::LOCK_UN)
    }

    fn flock(&self, op: libc::c_int) -> io::Result<()> {
        loop {
            // SAFETY: flock on a descriptor this struct owns; no memory is passed.
            let rc = unsafe { libc::flock(self.file.as_raw_fd(), op) };
            if rc == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// Calls `f` on every complete line (without its `\n`) of `file` from byte `from`
/// to the end, 1 MiB at a time; returns the offset just past the last complete
/// line, and the file's length (larger when a torn last line follows).
pub fn scan_from(file: &File, from: u64, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<(u64, u64)> {
    const CHUNK: usize = 1 << 20;
    let eof = file.metadata()?.len();
    if eof <= from {
        return Ok((from, eof));
    }
    let mut buf = vec![0u8; CHUNK.min((eof - from) as usize)];
    let (mut pos, mut filled, mut complete) = (from, 0usize, from);
    while pos < eof {
        let want = ((eof - pos) as usize).min(buf.len() - filled);
        let n = file.read_at(&mut buf[filled..filled + want], pos)?;
        if n == 0 {
            break;
        }
        pos += n as u64;
        filled += n;
        let mut start = 0;
        while let Some(nl) = buf[start..filled].iter().position(|&b| b == b'\n') {
            f(&buf[start..start + nl])?;
            start += nl + 1;
        }
        complete += start as u64;
        buf.copy_within(start..filled, 0);
        filled -= start;
        if filled == buf.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "row longer than 1 MiB"));
        }
    }
    Ok((complete, eof))
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
pub(super) fn catch_up_lines(
    path: &Path,
    reader: &File,
    file: &mut dyn FileIo,
    from: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), String>,
) -> Result<(u64, CaughtUp), StorageError> {
    let io_err = |source| StorageError::Io { path: path.to_path_buf(), source };
    let mut rows = 0u64;
    let mut bad = None;
    let (complete, eof) = scan_from(reader, from, |line| {
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
            reason: format!("{n}. line past byte {from}: {reason}"),
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

/// Counters of the inter-process agreement, logged when the store closes.
#[derive(Debug, Default, Clone, Copy)]
pub struct LockStats {
    pub acquisitions: u64,
    pub wait: Duration,
    pub max_wait: Duration,
    pub hold: Duration,
    pub max_hold: Duration,
    /// Catch-ups that found rows or journal lines written by another process.
    pub catch_ups: u64,
    pub caught_up_rows: u64,
    pub caught_up_bytes: u64,
    /// Bytes of torn rows that dead processes left and this one cut.
    pub torn_cut_bytes: u64,
}

impl LockStats {
    pub fn waited(&mut self, d: Duration) {
        self.acquisitions += 1;
        self.wait += d;
        self.max_wait = self.max_wait.max(d);
    }

    pub fn held(&mut self, d: Duration) {
        self.hold += d;
        self.max_hold = self.max_hold.max(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_stops_at_the_last_complete_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "a\nbb\nccc\ntorn").unwrap();
        let file = File::open(&path).unwrap();
        let mut lines = Vec::new();
        let (complete, eof) = scan_from(&file, 2, |l| {
            lines.push(String::from_utf8(l.to_vec()).unwrap());
            Ok(())
        })
        .unwrap();
        assert_eq!(lines, ["bb", "ccc"]);
        assert_eq!((complete, eof), (9, 13));
        assert_eq!(scan_from(&file, 13, |_| Ok(())).unwrap(), (13, 13));
    }

    #[test]
    fn a_second_holder_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let bets = dir.path().join("bets.csv");
        let (a, b) = (StoreLock::open(&bets).unwrap(), StoreLock::open(&bets).unwrap());
        a.lock_exclusive().unwrap();
        // SAFETY: a non-blocking try on b's descriptor; it must fail while a holds the lock.
        let rc = unsafe { libc::flock(b.file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, -1, "two holders at once");
        a.unlock().unwrap();
        b.lock_exclusive().unwrap();
        b.unlock().unwrap();
    }
}
