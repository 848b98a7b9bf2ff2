//! The storage's typed error: the file it is about, and either the OS's error or
//! what is wrong at which line.

use std::io;
use std::path::{Path, PathBuf};

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
