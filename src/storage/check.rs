//! The checks every stored byte passes: each row as strictly as an incoming bet
//! and in the exact stored format, and each sync group against its sidecar record
//! (range, rows, CRC32C, chain head). The server's open and the `verify` command
//! both run [`scan`].

use super::integrity::{chain_step, hex, Record, StoreSpec, MAX_UNSEALED, RECORD_LEN};
use super::{render_raw_row, StorageError};
use crate::bet::{AgencyId, BetRef, RawBet};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The fields of a checked row that the callers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRow {
    pub agency: AgencyId,
    pub number: u16,
}

/// Checks one stored line (without its `\n`): six CSV fields, valid UTF-8, the
/// agency in `1..=agencies`, a bet the domain accepts, and byte for byte what the
/// store renders for it. `scratch` is reused between rows.
pub fn check_row(line: &[u8], agencies: u32, scratch: &mut Vec<u8>) -> Result<StoredRow, String> {
    let fields = split_fields(line)?;
    let text = |i: usize| std::str::from_utf8(&fields[i]).map_err(|_| format!("field {} is not UTF-8", i + 1));
    let agency_text = text(0)?;
    let agency: AgencyId = agency_text
        .parse()
        .ok()
        .filter(|a| (1..=agencies).contains(a))
        .ok_or_else(|| format!("agency {agency_text:?} is not in 1..={agencies}"))?;
    let bet = BetRef::parse(text(1)?, text(2)?, text(3)?, text(4)?, text(5)?).map_err(|e| e.to_string())?;
    scratch.clear();
    render_raw_row(scratch, agency, &RawBet::from(bet));
    if scratch.strip_suffix(b"\n") != Some(line) {
        return Err("the row is not in the stored format (quoting, leading zeros or spacing differ)".into());
    }
    Ok(StoredRow { agency, number: bet.number })
}

/// Splits a CSV line into exactly six fields (quoted fields unescaped).
fn split_fields(line: &[u8]) -> Result<Vec<Cow<'_, [u8]>>, String> {
    let mut fields = Vec::with_capacity(6);
    let mut at = 0;
    loop {
        if line.get(at) == Some(&b'"') {
            let mut value = Vec::new();
            let mut i = at + 1;
            loop {
                match line.get(i) {
                    None => return Err(format!("field {} has an unterminated quote", fields.len() + 1)),
                    Some(b'"') if line.get(i + 1) == Some(&b'"') => {
                        value.push(b'"');
                        i += 2;
                    }
                    Some(b'"') => break,
                    Some(&b) => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
            fields.push(Cow::Owned(value));
            at = i + 1;
            match line.get(at) {
                None => break,
                Some(b',') => at += 1,
                Some(_) => return Err(format!("field {} has bytes after its closing quote", fields.len())),
            }
        } else {
            let end = memchr::memchr(b',', &line[at..]).map_or(line.len(), |p| at + p);
            let field = &line[at..end];
            if field.contains(&b'"') {
                return Err(format!("field {} has a quote inside an unquoted field", fields.len() + 1));
            }
            fields.push(Cow::Borrowed(field));
            if end == line.len() {
                break;
            }
            at = end + 1;
        }
        if fields.len() > 6 {
            break;
        }
    }
    if fields.len() != 6 {
        return Err(format!(
            "expected 6 fields, found {}",
            if fields.len() > 6 { "more".into() } else { fields.len().to_string() }
        ));
    }
    Ok(fields)
}

/// How far the store is checked: bytes and records, rows and the chain head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// End of the last sealed group in the bets file.
    pub bets: u64,
    /// Bytes of whole records read from the sidecar.
    pub sidecar: u64,
    /// Rows in the sealed groups.
    pub rows: u64,
    pub groups: u64,
    pub head: [u8; 32],
}

/// What to do with bytes past the last sealed group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// A crash's leftovers (never acknowledged): report them for the caller to cut,
    /// up to [`MAX_UNSEALED`] bytes; more is an error.
    Cut,
    /// No sidecar (the benchmark's baseline): complete rows are checked and kept,
    /// a torn last line is reported for cutting.
    Adopt,
    /// `verify`: any byte past the last sealed group is an error.
    Refuse,
}

/// What a scan found.
#[derive(Debug, Clone, Copy)]
pub struct Scanned {
    pub pos: Position,
    /// Bytes of the bets file past `pos.bets` to cut.
    pub bets_cut: u64,
    /// Bytes of a torn last sidecar record to cut.
    pub sidecar_cut: u64,
}

/// Checks the store from `from` to the end: every sidecar record's group (in
/// order, contiguous, within the file; its rows, CRC32C and, with a key, chain
/// head), every row in it, and the bytes past the last group as `tail` says.
/// `on_row` sees each row (with its line number) as it is read; on an error the
/// caller throws away what it was told.
pub fn scan(
    bets: &File,
    bets_path: &Path,
    sidecar: Option<(&File, &Path)>,
    from: Position,
    spec: &StoreSpec,
    tail: Tail,
    mut on_row: impl FnMut(u64, StoredRow),
) -> Result<Scanned, StorageError> {
    let corrupt =
        |path: &Path, line: u64, reason: String| StorageError::Corrupt { path: path.to_path_buf(), line, reason };
    let io = |path: &Path, source| StorageError::Io { path: path.to_path_buf(), source };
    let eof = bets.metadata().map_err(|e| io(bets_path, e))?.len();
    let mut pos = from;
    let mut reader = GroupReader::new(spec);
    let mut sidecar_cut = 0;
    if let Some((side, side_path)) = sidecar {
        let side_eof = side.metadata().map_err(|e| io(side_path, e))?.len();
        if side_eof < pos.sidecar {
            return Err(corrupt(
                side_path,
                0,
                format!("the sidecar is {side_eof} bytes but {} were read: it was cut", pos.sidecar),
            ));
        }
        let mut raw = [0u8; RECORD_LEN];
        while pos.sidecar + RECORD_LEN as u64 <= side_eof {
            side.read_exact_at(&mut raw, pos.sidecar).map_err(|e| io(side_path, e))?;
            let group = pos.groups + 1;
            let at = pos.sidecar;
            let rec =
                Record::decode(&raw).map_err(|r| corrupt(side_path, 0, format!("record {group} at byte {at}: {r}")))?;
            let first = pos.rows + 1;
            let name = format!("group {group} (bytes {}..{}, first row line {first})", rec.start, rec.end);
            if rec.start != pos.bets {
                return Err(corrupt(
                    side_path,
                    0,
                    format!("{name}: starts at byte {} but the previous group ends at byte {}", rec.start, pos.bets),
                ));
            }
            if rec.end > eof {
                return Err(corrupt(
                    bets_path,
                    first,
                    format!("{name} is sealed, but the file ends at byte {eof}: the file was cut"),
                ));
            }
            let got = reader.read(bets, bets_path, rec.start, rec.end, pos.rows, &mut on_row)?;
            if got.crc != rec.crc || got.rows != rec.rows {
                let bad = got.bad_row.map(|(l, r)| format!("; first bad row: line {l}: {r}")).unwrap_or_default();
                return Err(corrupt(
                    bets_path,
                    first,
                    format!(
                        "{name}: CRC32C {:08x} and {} rows, the sidecar sealed {:08x} and {} rows{bad}",
                        got.crc, got.rows, rec.crc, rec.rows
                    ),
                ));
            }
            if let Some((line, reason)) = got.bad_row {
                return Err(corrupt(bets_path, line, format!("{name}: {reason}")));
            }
            if let (Some(key), Some(digest)) = (spec.key.as_deref(), got.digest) {
                let head = chain_step(key, &pos.head, rec.start, rec.end, rec.rows, &digest);
                if !rec.keyed || head != rec.head {
                    let why = if rec.keyed {
                        "its chain head does not match (altered, or another key)"
                    } else {
                        "it was sealed without a chain key"
                    };
                    return Err(corrupt(bets_path, first, format!("{name}: {why}")));
                }
                pos.head = head;
            } else {
                pos.head = rec.head;
            }
            pos.bets = rec.end;
            pos.rows += rec.rows;
            pos.groups = group;
            pos.sidecar += RECORD_LEN as u64;
        }
        sidecar_cut = side_eof - pos.sidecar;
        if sidecar_cut > 0 && tail == Tail::Refuse {
            return Err(corrupt(side_path, 0, format!("a torn record of {sidecar_cut} bytes at byte {}", pos.sidecar)));
        }
    }
    let unsealed = eof - pos.bets;
    let bets_cut = match tail {
        _ if unsealed == 0 => 0,
        Tail::Refuse => {
            return Err(corrupt(bets_path, pos.rows + 1, format!("{unsealed} bytes from byte {} on are in no sealed group", pos.bets)))
        }
        Tail::Cut if unsealed > MAX_UNSEALED => {
            return Err(corrupt(bets_path, pos.rows + 1, format!(
                "{unsealed} bytes from byte {} on are in no sealed group: more than a crash leaves ({MAX_UNSEALED}); the sidecar was cut or removed",
                pos.bets
            )))
        }
        Tail::Cut => unsealed,
        Tail::Adopt => {
            let got = reader.read(bets, bets_path, pos.bets, eof, pos.rows, &mut on_row)?;
            let whole = got.complete_end;
            if let Some((line, reason)) = got.bad_row.filter(|(line, _)| *line <= pos.rows + got.complete_rows) {
                return Err(corrupt(bets_path, line, reason));
            }
            pos.rows += got.complete_rows;
            pos.bets = whole;
            eof - whole
        }
    };
    Ok(Scanned { pos, bets_cut, sidecar_cut })
}

/// What reading one range found.
struct Read {
    crc: u32,
    rows: u64,
    digest: Option<[u8; 32]>,
    /// The first row that failed its check: line number and why.
    bad_row: Option<(u64, String)>,
    /// End of the last `\n`-terminated line, and how many such lines.
    complete_end: u64,
    complete_rows: u64,
}

/// Reads ranges of the bets file through one bounded buffer.
struct GroupReader<'a> {
    spec: &'a StoreSpec,
    buf: Vec<u8>,
    scratch: Vec<u8>,
}

/// Bytes read at a time; also the longest row accepted.
const CHUNK: usize = 1 << 20;

impl<'a> GroupReader<'a> {
    fn new(spec: &'a StoreSpec) -> Self {
        GroupReader { spec, buf: vec![0u8; CHUNK], scratch: Vec::new() }
    }

    /// Checks every line of `start..end` (row numbers after `rows_before`); a last
    /// line without its `\n` is checked too (and counted only in `rows`' CRC sense).
    fn read(
        &mut self,
        file: &File,
        path: &Path,
        start: u64,
        end: u64,
        rows_before: u64,
        on_row: &mut impl FnMut(u64, StoredRow),
    ) -> Result<Read, StorageError> {
        let mut sha = self.spec.key.is_some().then(Sha256::new);
        let mut out = Read { crc: 0, rows: 0, digest: None, bad_row: None, complete_end: start, complete_rows: 0 };
        let (mut pos, mut filled) = (start, 0usize);
        loop {
            let want = ((end - pos) as usize).min(self.buf.len() - filled);
            let n = if want == 0 {
                0
            } else {
                file.read_at(&mut self.buf[filled..filled + want], pos)
                    .map_err(|source| StorageError::Io { path: path.to_path_buf(), source })?
            };
            if n == 0 && pos < end {
                return Err(StorageError::Corrupt {
                    path: path.to_path_buf(),
                    line: rows_before + out.rows + 1,
                    reason: format!("the file ended at byte {pos} while reading up to {end}"),
                });
            }
            out.crc = crc32c::crc32c_append(out.crc, &self.buf[filled..filled + n]);
            if let Some(sha) = &mut sha {
                sha.update(&self.buf[filled..filled + n]);
            }
            pos += n as u64;
            filled += n;
            let at_end = pos == end;
            let mut line_start = 0;
            while let Some(nl) = memchr::memchr(b'\n', &self.buf[line_start..filled]) {
                out.rows += 1;
                let line_no = rows_before + out.rows;
                self.check(line_start, line_start + nl, line_no, &mut out, on_row);
                line_start += nl + 1;
                out.complete_end += (nl + 1) as u64;
                out.complete_rows += 1;
            }
            if at_end {
                if line_start < filled {
                    out.rows += 1;
                    let line_no = rows_before + out.rows;
                    self.check(line_start, filled, line_no, &mut out, &mut |_, _| {});
                }
                out.digest = sha.map(|s| s.finalize().into());
                return Ok(out);
            }
            self.buf.copy_within(line_start..filled, 0);
            filled -= line_start;
            if filled == self.buf.len() {
                return Err(StorageError::Corrupt {
                    path: path.to_path_buf(),
                    line: rows_before + out.rows + 1,
                    reason: format!("row longer than {CHUNK} bytes"),
                });
            }
        }
    }

    fn check(&mut self, from: usize, to: usize, line_no: u64, out: &mut Read, on_row: &mut impl FnMut(u64, StoredRow)) {
        match check_row(&self.buf[from..to], self.spec.agencies, &mut self.scratch) {
            Ok(row) => on_row(line_no, row),
            Err(reason) => {
                out.bad_row.get_or_insert((line_no, reason));
            }
        }
    }
}

/// The chain head as the `sorteo` line and `verify` print it.
pub fn head_hex(pos: &Position) -> String {
    hex(&pos.head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_checked_as_strictly_as_incoming_bets() {
        let mut s = Vec::new();
        assert_eq!(check_row(b"1,A,B,12,2000-01-01,7574", 5, &mut s), Ok(StoredRow { agency: 1, number: 7574 }));
        assert!(check_row(b"2,\"A, x\",\"say \"\"hi\"\"\",12,2000-02-29,0", 5, &mut s).is_ok());
        for (bad, why) in [
            (&b"6,A,B,12,2000-01-01,1"[..], "agency"),
            (b"0,A,B,12,2000-01-01,1", "agency"),
            (b"1,A,B,12,2001-02-29,1", "birthdate"),
            (b"1,A,B,1a,2000-01-01,1", "document"),
            (b"1,A,B,12,2000-01-01,10000", "number"),
            (b"1,A,B,12,2000-01-01,0007", "stored format"),
            (b"1,\"A\",B,12,2000-01-01,7", "stored format"),
            (b"1,A,B,12,2000-01-01", "6 fields"),
            (b"1,A,B,12,2000-01-01,1x1,A,B,13,2000-01-01,1", "fields"),
            (b"1,\xff,B,12,2000-01-01,1", "UTF-8"),
            (b"1,\"A,B,12,2000-01-01,1", "quote"),
            (b"1, ,B,12,2000-01-01,1", "empty"),
        ] {
            let err = check_row(bad, 5, &mut s).unwrap_err();
            assert!(err.contains(why), "{:?}: {err}", String::from_utf8_lossy(bad));
        }
    }
}
