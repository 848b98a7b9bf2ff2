//! What seals the bets file: one record per sync group in the sidecar
//! (`<bets>.sum`), with the group's byte range, rows, CRC32C and the keyed chain
//! head, followed by each row's CRC32C so a changed row can be named (the
//! construction is in docs/integrity.md).

mod rows;

use super::{sync_parent_dir, FileIo, StorageError, WrapFile};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes of a sidecar record's fixed part; the group's row CRCs follow it.
pub const RECORD_LEN: usize = 64;
/// Bytes of one row's CRC32C after a record.
pub const ROW_CRC_LEN: usize = 4;
/// Record magic: a group sealed with a chain key, and one sealed without
/// (version 2 and 3: records carry their rows' CRCs).
const KEYED: [u8; 4] = *b"LSG3";
const UNKEYED: [u8; 4] = *b"LSG2";
/// Domain separation of the chain's HMAC input.
/// v2: the group digest is BLAKE3 (v1 used SHA-256, three times the CPU per row).
const DOMAIN: &[u8; 16] = b"loteria-chain-v2";
/// Bytes of a chain key (HMAC-SHA256's output size; 256 bits).
pub const CHAIN_KEY_LEN: usize = 32;
/// A group is sealed once this many bytes wait, even inside a burst, so what a
/// crash can leave past the last seal stays bounded.
pub const MAX_GROUP: u64 = 8 << 20;
/// The most bytes past the last sealed group that a crash can leave: one group
/// and the write buffer's slack. More is a cut or removed sidecar, not a crash.
pub const MAX_UNSEALED: u64 = MAX_GROUP + (1 << 20);

type HmacSha256 = Hmac<Sha256>;

/// The deployment's chain key. Never printed: `Debug` says `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct ChainKey([u8; CHAIN_KEY_LEN]);

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainKey(<redacted>)")
    }
}

impl ChainKey {
    pub fn from_bytes(bytes: [u8; CHAIN_KEY_LEN]) -> ChainKey {
        ChainKey(bytes)
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> std::io::Result<ChainKey> {
        crate::auth::random_bytes().map(ChainKey)
    }

    /// Parses 64 hex digits (surrounding white space allowed); the error never repeats the text.
    pub fn from_hex(text: &str) -> Result<ChainKey, String> {
        let text = text.trim();
        if text.len() != 2 * CHAIN_KEY_LEN {
            return Err(format!("a chain key is {} hex digits, found {} characters", 2 * CHAIN_KEY_LEN, text.len()));
        }
        let mut out = [0u8; CHAIN_KEY_LEN];
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16).ok_or("a chain key is hex digits only (0-9, a-f)");
            out[i] = (digit(pair[0])? << 4 | digit(pair[1])?) as u8;
        }
        Ok(ChainKey(out))
    }

    /// The key as 64 lowercase hex digits, for writing its file only.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Reads a key file (one line of 64 hex digits, at most 1 KiB).
    pub fn load(path: &Path) -> Result<ChainKey, String> {
        let mut text = String::new();
        File::open(path)
            .and_then(|f| f.take(1024).read_to_string(&mut text))
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        ChainKey::from_hex(&text).map_err(|e| format!("{}: {e} (the key is secret and not shown)", path.display()))
    }

    /// Writes the key file, readable by its owner only.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
        writeln!(f, "{}", self.to_hex())
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One chain step: `HMAC-SHA256(key, DOMAIN || prev || start || end || rows || BLAKE3(group))`,
/// the integers as 8 bytes little-endian.
pub fn chain_step(key: &ChainKey, prev: &[u8; 32], start: u64, end: u64, rows: u64, digest: &[u8; 32]) -> [u8; 32] {
    // new_from_slice fails only for lengths HMAC cannot take; it takes any length.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(&key.0).unwrap_or_else(|_| unreachable!());
    mac.update(DOMAIN);
    mac.update(prev);
    mac.update(&start.to_le_bytes());
    mac.update(&end.to_le_bytes());
    mac.update(&rows.to_le_bytes());
    mac.update(digest);
    mac.finalize().into_bytes().into()
}

/// One sealed group as the sidecar holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub keyed: bool,
    pub crc: u32,
    pub start: u64,
    pub end: u64,
    pub rows: u64,
    /// The chain head after this group (zeros when sealed without a key).
    pub head: [u8; 32],
}

impl Record {
    /// Bytes of this record in the sidecar, its row CRCs included.
    pub fn sidecar_len(&self) -> u64 {
        RECORD_LEN as u64 + self.rows * ROW_CRC_LEN as u64
    }

    /// `magic(4) crc(4) start(8) end(8) rows(8) head(32)`, little-endian.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[..4].copy_from_slice(if self.keyed { &KEYED } else { &UNKEYED });
        out[4..8].copy_from_slice(&self.crc.to_le_bytes());
        out[8..16].copy_from_slice(&self.start.to_le_bytes());
        out[16..24].copy_from_slice(&self.end.to_le_bytes());
        out[24..32].copy_from_slice(&self.rows.to_le_bytes());
        out[32..].copy_from_slice(&self.head);
        out
    }

    pub fn decode(b: &[u8; RECORD_LEN]) -> Result<Record, String> {
        let keyed = match [b[0], b[1], b[2], b[3]] {
            KEYED => true,
            UNKEYED => false,
            other => return Err(format!("not a group record (magic {:?})", String::from_utf8_lossy(&other))),
        };
        let u64_at = |at: usize| {
            u64::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5], b[at + 6], b[at + 7]])
        };
        let mut head = [0u8; 32];
        head.copy_from_slice(&b[32..]);
        let rec = Record {
            keyed,
            crc: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            start: u64_at(8),
            end: u64_at(16),
            rows: u64_at(24),
            head,
        };
        if rec.end <= rec.start || rec.end - rec.start > MAX_UNSEALED || rec.rows == 0 || rec.rows > rec.end - rec.start
        {
            return Err(format!("group record with bytes {}..{} and {} rows", rec.start, rec.end, rec.rows));
        }
        Ok(rec)
    }
}

/// What opening and appending need to know to check and seal the store.
#[derive(Debug, Clone)]
pub struct StoreSpec {
    /// Stored rows must name an agency in `1..=agencies`.
    pub agencies: u32,
    /// The chain key; without it groups carry only their CRC32C.
    pub key: Option<Arc<ChainKey>>,
    /// `false` (the benchmark's baseline only): no sidecar is written or read.
    pub sidecar: bool,
}

impl Default for StoreSpec {
    fn default() -> Self {
        StoreSpec { agencies: u32::MAX, key: None, sidecar: true }
    }
}

/// The group being written: its CRC32C, its BLAKE3 digest (with a key), its
/// rows so far and each one's CRC32C (little-endian, as the sidecar stores them;
/// bounded by the group's bound, [`MAX_GROUP`] and one write). The store feeds
/// it each write's bytes as they leave for the file, still in the cache.
pub struct Sealer {
    crc: u32,
    digest: Option<blake3::Hasher>,
    /// The group's last bytes, fewer than [`DIGEST_STEP`], not yet digested.
    held: Vec<u8>,
    rows: u64,
    row_crcs: Vec<u8>,
    /// CRC32C of the row begun in an earlier chunk, not yet ended.
    row_crc: u32,
}

impl Sealer {
    pub fn new(keyed: bool) -> Sealer {
        let digest = keyed.then(blake3::Hasher::new);
        Sealer { crc: 0, digest, held: Vec::new(), rows: 0, row_crcs: Vec::new(), row_crc: 0 }
    }

    /// Takes in the group's next bytes (cut anywhere; the group ends with a `\n`).
    pub fn absorb(&mut self, bytes: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        if let Some(digest) = &mut self.digest {
            digest_aligned(digest, &mut self.held, bytes);
        }
        let (carry, rows) = rows::row_crcs(self.row_crc, bytes, &mut self.row_crcs);
        self.row_crc = carry;
        self.rows += rows;
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The record of the group `start..end` after the head `prev`, and its
    /// bytes in the sidecar (the fixed part, then the row CRCs). The sealer
    /// keeps the group until [`reset`](Self::reset), so after a failed seal it
    /// still holds every byte past the last seal that succeeded.
    pub fn record(&self, key: Option<&ChainKey>, prev: &[u8; 32], start: u64, end: u64) -> (Record, Vec<u8>) {
        let head = match (key, &self.digest) {
            (Some(key), Some(digest)) => {
                let mut digest = digest.clone();
                digest.update(&self.held);
                chain_step(key, prev, start, end, self.rows, digest.finalize().as_bytes())
            }
            _ => [0u8; 32],
        };
        let rec = Record { keyed: key.is_some(), crc: self.crc, start, end, rows: self.rows, head };
        let mut bytes = Vec::with_capacity(RECORD_LEN + self.row_crcs.len());
        bytes.extend_from_slice(&rec.encode());
        bytes.extend_from_slice(&self.row_crcs);
        (rec, bytes)
    }

    /// Starts a fresh group (after its record is on disk).
    pub fn reset(&mut self) {
        self.crc = 0;
        self.rows = 0;
        self.row_crc = 0;
        // Its room stays: at most a [`MAX_UNSEALED`] group's row CRCs.
        self.row_crcs.clear();
        self.held.clear();
        if let Some(digest) = &mut self.digest {
            digest.reset();
        }
    }
}

/// Bytes the digest is given at a time, at offsets of the group that are
/// multiples of it. BLAKE3 hashes 16 of its 1 KiB chunks side by side, but
/// only in whole subtrees aligned in the input: fed the store's writes as they
/// come (64 KiB and part of a batch) it fell back to a few chunks at a time
/// and took 8.6 ns per row; fed 16 KiB steps, 5.2 (and 4.6 for whole 64 KiB).
const DIGEST_STEP: usize = 16 * 1024;

/// Gives `digest` the bytes of `held` then `bytes` in whole [`DIGEST_STEP`]s,
/// keeping the rest (fewer than one step) in `held`.
fn digest_aligned(digest: &mut blake3::Hasher, held: &mut Vec<u8>, mut bytes: &[u8]) {
    if !held.is_empty() {
        let take = (DIGEST_STEP - held.len()).min(bytes.len());
        held.extend_from_slice(&bytes[..take]);
        bytes = &bytes[take..];
        if held.len() < DIGEST_STEP {
            return;
        }
        digest.update(held);
        held.clear();
    }
    let whole = bytes.len() - bytes.len() % DIGEST_STEP;
    digest.update(&bytes[..whole]);
    held.extend_from_slice(&bytes[whole..]);
}

/// The sidecar's path for a bets file (`<bets>.sum`).
pub fn sidecar_path(bets_path: &Path) -> PathBuf {
    let mut name = bets_path.as_os_str().to_owned();
    name.push(".sum");
    PathBuf::from(name)
}

/// The open sidecar: appended through the storage seam, read back through `reader`.
pub struct Sidecar {
    pub path: PathBuf,
    pub file: Box<dyn FileIo>,
    pub reader: File,
}

impl Sidecar {
    /// Opens (creating) the sidecar of `bets_path`.
    pub fn open(bets_path: &Path, wrap: &WrapFile) -> Result<Sidecar, StorageError> {
        let path = sidecar_path(bets_path);
        let io_err = |source| StorageError::Io { path: path.clone(), source };
        let file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io_err)?;
        sync_parent_dir(&path).map_err(io_err)?;
        let reader = file.try_clone().map_err(io_err)?;
        Ok(Sidecar { path: path.clone(), file: wrap(file), reader })
    }

    pub fn io_err(&self, source: std::io::Error) -> StorageError {
        StorageError::Io { path: self.path.clone(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_nonsense_is_refused() {
        let rec = Record { keyed: true, crc: 7, start: 10, end: 90, rows: 2, head: [3; 32] };
        assert_eq!(Record::decode(&rec.encode()), Ok(rec));
        let mut bad = rec.encode();
        bad[0] = b'X';
        assert!(Record::decode(&bad).is_err());
        let empty = Record { rows: 0, ..rec };
        assert!(Record::decode(&empty.encode()).is_err());
    }

    #[test]
    fn the_head_depends_on_key_bytes_range_and_previous_head() {
        let (k1, k2) = (ChainKey::from_bytes([1; 32]), ChainKey::from_bytes([2; 32]));
        let seal = |key: &ChainKey, bytes: &[u8], prev: [u8; 32], start: u64| {
            let mut s = Sealer::new(true);
            s.absorb(bytes);
            s.record(Some(key), &prev, start, start + bytes.len() as u64).0
        };
        let base = seal(&k1, b"1,A,B,1,2000-01-01,1\n", [0; 32], 0);
        assert_eq!(base.rows, 1);
        assert_eq!(base.crc, crc32c::crc32c(b"1,A,B,1,2000-01-01,1\n"));
        let mut two = Sealer::new(false);
        two.absorb(b"1,A,B,1,2000-01-01,1\n2,C,D,3,2001-02-03,4\n");
        let (rec, bytes) = two.record(None, &[0; 32], 0, 44);
        assert_eq!((rec.rows, rec.sidecar_len(), bytes.len()), (2, 72, 72));
        two.reset();
        two.absorb(b"1,A,B,1,2000-01-01,1\n");
        assert_eq!(two.record(None, &[0; 32], 0, 21).0, Record { rows: 1, end: 21, crc: base.crc, ..rec });
        assert_eq!(bytes[64..68], crc32c::crc32c(b"1,A,B,1,2000-01-01,1\n").to_le_bytes());
        assert_eq!(bytes[68..], crc32c::crc32c(b"2,C,D,3,2001-02-03,4\n").to_le_bytes());
        for other in [
            seal(&k2, b"1,A,B,1,2000-01-01,1\n", [0; 32], 0),
            seal(&k1, b"1,A,B,2,2000-01-01,1\n", [0; 32], 0),
            seal(&k1, b"1,A,B,1,2000-01-01,1\n", [9; 32], 0),
            seal(&k1, b"1,A,B,1,2000-01-01,1\n", [0; 32], 5),
        ] {
            assert_ne!(other.head, base.head);
        }
        assert_eq!(seal(&k1, b"1,A,B,1,2000-01-01,1\n", [0; 32], 0), base);
    }

    #[test]
    fn a_group_cut_anywhere_gets_the_digest_crc_and_rows_of_its_bytes_whole() {
        let key = ChainKey::from_bytes([5; 32]);
        let rows: Vec<u8> = (0..3000u32)
            .flat_map(|i| format!("{},A,B,{},2000-01-01,{}\n", i % 5 + 1, 10_000 + i, i % 10_000).into_bytes())
            .collect();
        let whole = chain_step(&key, &[1; 32], 0, rows.len() as u64, 3000, blake3::hash(&rows).as_bytes());
        for cuts in [&[][..], &[1, 100], &[16_383, 16_385, 40_000], &[16_384, 32_768, 65_536], &[65_536 + 700, 70_000]]
        {
            let mut sealer = Sealer::new(true);
            let mut at = 0;
            for &cut in cuts.iter().chain([&rows.len()]) {
                sealer.absorb(&rows[at..cut.min(rows.len())]);
                at = cut.min(rows.len());
            }
            let (rec, bytes) = sealer.record(Some(&key), &[1; 32], 0, rows.len() as u64);
            assert_eq!((rec.head, rec.crc, rec.rows), (whole, crc32c::crc32c(&rows), 3000), "{cuts:?}");
            assert_eq!(bytes.len() as u64, rec.sidecar_len());
        }
    }

    #[test]
    fn keys_parse_from_hex_and_never_print() {
        let key = ChainKey::generate().unwrap();
        assert_eq!(ChainKey::from_hex(&format!(" {}\n", key.to_hex())).unwrap(), key);
        assert!(ChainKey::from_hex("abc").is_err());
        let err = ChainKey::from_hex(&"z".repeat(64)).unwrap_err();
        assert!(!err.contains("zzzz"), "{err}");
        assert!(!format!("{key:?}").contains(&key.to_hex()[..8]));
    }
}
