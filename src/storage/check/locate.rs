//! Naming the changed row of a group that failed its CRC32C, from the row CRCs
//! its record carries.

use super::super::integrity::{Record, RECORD_LEN, ROW_CRC_LEN};
use super::super::StorageError;
use super::CHUNK;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The first row of a group that fails its group check whose bytes differ from
/// the row the sidecar sealed (its CRC32C after the record at `at`): its line and
/// first byte. `None` if every sealed row matches (the change is in the group's
/// count, past its last sealed row). Runs only on a failed group, reading it in
/// bounded chunks.
pub(super) fn locate_row(
    bets: &File,
    bets_path: &Path,
    side: &File,
    side_path: &Path,
    rec: &Record,
    at: u64,
    first: u64,
) -> Result<Option<(u64, u64)>, StorageError> {
    let io = |path: &Path, source| StorageError::Io { path: path.to_path_buf(), source };
    let mut buf = vec![0u8; CHUNK];
    let (mut pos, mut filled, mut row) = (rec.start, 0usize, 0u64);
    let mut crc = [0u8; ROW_CRC_LEN];
    loop {
        let want = ((rec.end - pos) as usize).min(buf.len() - filled);
        let n = bets.read_at(&mut buf[filled..filled + want], pos).map_err(|e| io(bets_path, e))?;
        pos += n as u64;
        filled += n;
        let at_end = n == 0 || pos == rec.end;
        let mut line_start = 0;
        while line_start < filled {
            let line_end = match memchr::memchr(b'\n', &buf[line_start..filled]) {
                Some(nl) => line_start + nl + 1,
                None if at_end => filled,
                None => break,
            };
            if row == rec.rows {
                return Ok(None);
            }
            side.read_exact_at(&mut crc, at + RECORD_LEN as u64 + row * ROW_CRC_LEN as u64)
                .map_err(|e| io(side_path, e))?;
            if crc32c::crc32c(&buf[line_start..line_end]) != u32::from_le_bytes(crc) {
                let byte = pos - filled as u64 + line_start as u64;
                return Ok(Some((first + row, byte)));
            }
            row += 1;
            line_start = line_end;
        }
        if at_end {
            return Ok(None);
        }
        buf.copy_within(line_start..filled, 0);
        filled -= line_start;
        if filled == buf.len() {
            // A line longer than a chunk: no stored row is; this one is not the row sealed.
            return Ok(Some((first + row, pos - filled as u64)));
        }
    }
}
