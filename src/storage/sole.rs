//! One server per store: a second server opening the same bets file (an old
//! compose file that shared one volume between replicas, a typo in
//! `storage.path`) would interleave its writes with the first one's and both
//! would count wrong. Replicas share a JetStream stream instead, each with its
//! own local view, so a store in use is refused at start.
//!
//! The guard is a non-blocking exclusive `flock` on `<bets>.lock`, held while
//! the process lives (the kernel drops it when the process dies, so a killed
//! server never blocks its own restart). It decides nothing else.

use super::StorageError;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's path for a bets file (`<bets>.lock`).
pub fn lock_path_for(bets_path: &Path) -> PathBuf {
    let mut name = bets_path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Held while this process is the store's one writer.
#[derive(Debug)]
pub struct SoleWriter {
    _file: File,
}

impl SoleWriter {
    /// Takes the guard, or says which store another process holds.
    pub fn take(bets_path: &Path) -> Result<SoleWriter, StorageError> {
        let path = lock_path_for(bets_path);
        let io_err = |source| StorageError::Io { path: path.clone(), source };
        if let Some(dir) = bets_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StorageError::Io { path: dir.to_path_buf(), source })?;
        }
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io_err)?;
        loop {
            // SAFETY: flock on a descriptor this function owns; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(SoleWriter { _file: file });
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    return Err(io_err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "another server process uses this store; replicas need storage.backend: jetstream, \
                         each with its own storage.path",
                    )))
                }
                _ => return Err(io_err(err)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let bets = dir.path().join("bets.csv");
        let first = SoleWriter::take(&bets).unwrap();
        let err = SoleWriter::take(&bets).unwrap_err().to_string();
        assert!(err.contains("bets.csv.lock") && err.contains("another server process"), "{err}");
        drop(first);
        SoleWriter::take(&bets).unwrap();
    }
}
