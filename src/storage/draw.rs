//! The draw: one streaming pass over the bets file for the winning rows.

use super::*;

/// Winning documents per agency, in stored order.
pub type Winners = HashMap<AgencyId, Vec<String>>;

/// A file at least this long is drawn by two threads, one per half.
const SPLIT_AT_LEAST: u64 = 8 << 20;
/// Bytes read at a time by each thread of the draw (the two together hold what
/// the one-pass draw held: the server's peak with 10,000 agencies waiting for
/// the draw is close to its 64 MiB bound); also the longest row it accepts.
pub(super) const DRAW_CHUNK: usize = 512 << 10;

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
pub(super) fn draw_split(
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
