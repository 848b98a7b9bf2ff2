//! The seam between the store and the operating system's file calls.
//!
//! A full disk and a failed `fdatasync` cannot be produced on demand on every
//! machine, so the bets file reaches the kernel through [`FileIo`]: the real
//! implementation is `std::fs::File`, and the store's unit tests put
//! [`FaultyFile`](fault::FaultyFile) in between to make a write short or a sync
//! fail exactly when they want.

use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;

/// The three calls the append-only bets file needs.
pub trait FileIo: Send {
    /// Appends `buf` (the file is opened with `O_APPEND`).
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes (rolls back a failed append).
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

impl FileIo for File {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(self, buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

/// How an opened file is handed to the writer: the identity in production.
pub type WrapFile = Arc<dyn Fn(File) -> Box<dyn FileIo> + Send + Sync>;

pub fn plain() -> WrapFile {
    Arc::new(|file| Box::new(file))
}

#[cfg(test)]
pub mod fault {
    //! Faults on demand for unit tests. The plan is shared with the test through
    //! atomics (test scaffolding, not domain state).
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[derive(Default)]
    pub struct FaultPlan {
        /// The next write stores only this many bytes, then fails with ENOSPC.
        pub short_write: AtomicUsize,
        pub short_write_armed: AtomicBool,
        /// Writes that go through whole before the short one.
        pub short_write_skip: AtomicUsize,
        /// The next `fdatasync` fails with EIO (the data stays in the file, as
        /// after a real failed writeback whose pages the kernel kept).
        pub fail_sync: AtomicBool,
        /// Syncs that succeed before the one `fail_sync` fails.
        pub fail_sync_skip: AtomicUsize,
        /// The next `set_len` fails (a rollback that cannot happen).
        pub fail_set_len: AtomicBool,
    }

    impl FaultPlan {
        pub fn short_write_next(&self, bytes: usize) {
            self.short_write_after(0, bytes);
        }

        /// Lets `skip` writes through, then makes the next one short.
        pub fn short_write_after(&self, skip: usize, bytes: usize) {
            self.short_write.store(bytes, Ordering::SeqCst);
            self.short_write_skip.store(skip, Ordering::SeqCst);
            self.short_write_armed.store(true, Ordering::SeqCst);
        }
    }

    pub struct FaultyFile {
        inner: File,
        plan: Arc<FaultPlan>,
    }

    pub fn wrap(plan: Arc<FaultPlan>) -> WrapFile {
        Arc::new(move |inner| Box::new(FaultyFile { inner, plan: plan.clone() }))
    }

    impl FileIo for FaultyFile {
        fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
            let skip = self.plan.short_write_skip.load(Ordering::SeqCst);
            if self.plan.short_write_armed.load(Ordering::SeqCst) && skip > 0 {
                self.plan.short_write_skip.store(skip - 1, Ordering::SeqCst);
            } else if self.plan.short_write_armed.swap(false, Ordering::SeqCst) {
                let n = self.plan.short_write.load(Ordering::SeqCst).min(buf.len());
                Write::write_all(&mut self.inner, &buf[..n])?;
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            Write::write_all(&mut self.inner, buf)
        }
        fn sync_data(&mut self) -> io::Result<()> {
            let skip = self.plan.fail_sync_skip.load(Ordering::SeqCst);
            if self.plan.fail_sync.load(Ordering::SeqCst) && skip > 0 {
                self.plan.fail_sync_skip.store(skip - 1, Ordering::SeqCst);
            } else if self.plan.fail_sync.swap(false, Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(5)); // EIO
            }
            self.inner.sync_data()
        }
        fn set_len(&mut self, len: u64) -> io::Result<()> {
            if self.plan.fail_set_len.swap(false, Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(5));
            }
            self.inner.set_len(len)
        }
    }
}
