//! Agency credentials: per-agency secret keys, the key file the central reads,
//! and the HMAC-SHA256 challenge-response both ends compute.
//!
//! A key never leaves this module as text except through [`AuthKey::to_hex`],
//! which only the key generators call: its `Debug` and `Display` print
//! `<redacted>`, and no error here quotes a key, so a key cannot end up in a log
//! line, a `config` line or an error message by accident.

use crate::bet::AgencyId;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Bytes of a key (the HMAC-SHA256 block is 64; 32 random bytes are 256 bits).
pub const KEY_LEN: usize = 32;
/// Bytes of a challenge nonce: fresh per handshake, so a recorded proof is useless.
pub const NONCE_LEN: usize = 32;
/// Bytes of a proof (the HMAC-SHA256 output).
pub const MAC_LEN: usize = 32;
/// A key file larger than this is refused (a line is ~70 bytes: 100,000 agencies fit).
pub const MAX_KEY_FILE: u64 = 16 << 20;

type HmacSha256 = Hmac<Sha256>;

/// One agency's secret key.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey([u8; KEY_LEN]);

impl AuthKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> AuthKey {
        AuthKey(bytes)
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> std::io::Result<AuthKey> {
        Ok(AuthKey(random_bytes()?))
    }

    /// Parses 64 hex digits. The error never repeats the input.
    pub fn from_hex(text: &str) -> Result<AuthKey, KeyError> {
        let text = text.trim();
        if text.len() != 2 * KEY_LEN {
            return Err(KeyError::Length { found: text.len() });
        }
        let mut out = [0u8; KEY_LEN];
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let hi = hex_digit(pair[0]).ok_or(KeyError::NotHex)?;
            let lo = hex_digit(pair[1]).ok_or(KeyError::NotHex)?;
            out[i] = hi << 4 | lo;
        }
        Ok(AuthKey(out))
    }

    /// The key as 64 lowercase hex digits: only for writing key files and
    /// compose environments, never for logs.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(2 * KEY_LEN);
        for b in self.0 {
            s.push(DIGITS[(b >> 4) as usize] as char);
            s.push(DIGITS[(b & 0xf) as usize] as char);
        }
        s
    }

    fn mac(&self, nonce: &[u8; NONCE_LEN], agency: AgencyId) -> HmacSha256 {
        // new_from_slice only fails for lengths HMAC cannot take; any length is fine for HMAC.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(nonce);
        mac.update(&agency.to_be_bytes());
        mac
    }

    /// The agency's answer to a challenge: HMAC-SHA256(key, nonce || agency as u32 BE).
    pub fn proof(&self, nonce: &[u8; NONCE_LEN], agency: AgencyId) -> [u8; MAC_LEN] {
        self.mac(nonce, agency).finalize().into_bytes().into()
    }

    /// The agency's answer on a TLS link: the same HMAC over the challenge
    /// bound to the session (see [`bound_nonce`]).
    pub fn proof_bound(&self, nonce: &[u8; NONCE_LEN], agency: AgencyId, binding: Option<&[u8]>) -> [u8; MAC_LEN] {
        match binding {
            Some(binding) => self.proof(&bound_nonce(nonce, binding), agency),
            None => self.proof(nonce, agency),
        }
    }

    /// Checks a proof in constant time (`verify_slice` compares without early exit).
    pub fn verify(&self, nonce: &[u8; NONCE_LEN], agency: AgencyId, proof: &[u8; MAC_LEN]) -> bool {
        self.mac(nonce, agency).verify_slice(proof).is_ok()
    }
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthKey(<redacted>)")
    }
}

impl fmt::Display for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The challenge as the proof covers it on a TLS link: SHA-256 over a label,
/// the nonce and the session's exported keying material (RFC 8446 §7.5). Both
/// ends compute it; a proof made in another TLS session answers another value.
pub fn bound_nonce(nonce: &[u8; NONCE_LEN], binding: &[u8]) -> [u8; NONCE_LEN] {
    use sha2::Digest;
    let mut hash = Sha256::new();
    hash.update(b"loteria tls-bound challenge v1");
    hash.update(nonce);
    hash.update(binding);
    hash.finalize().into()
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `N` bytes from `/dev/urandom` (the kernel's CSPRNG; no crate needed for it).
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut out = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut out)?;
    Ok(out)
}

/// Why a key is unusable (never says what the key was).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a key must be {} hex digits ({KEY_LEN} bytes), found {found} characters", 2 * KEY_LEN)]
    Length { found: usize },
    #[error("a key must be hex digits only (0-9, a-f)")]
    NotHex,
}

/// Every agency's key, as the central holds them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AgencyKeys(BTreeMap<AgencyId, AuthKey>);

impl fmt::Debug for AgencyKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgencyKeys({} agencies, <redacted>)", self.0.len())
    }
}

/// A bad key file, with the file and the line.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read key file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("key file {} is larger than {MAX_KEY_FILE} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("key file {}:{line}: {reason}", path.display())]
    Line { path: PathBuf, line: usize, reason: String },
}

impl AgencyKeys {
    pub fn new() -> AgencyKeys {
        AgencyKeys::default()
    }

    /// One fresh random key for each agency `1..=agencies`.
    pub fn generate(agencies: u32) -> std::io::Result<AgencyKeys> {
        let mut keys = AgencyKeys::new();
        for agency in 1..=agencies {
            keys.insert(agency, AuthKey::generate()?);
        }
        Ok(keys)
    }

    pub fn insert(&mut self, agency: AgencyId, key: AuthKey) {
        self.0.insert(agency, key);
    }

    pub fn get(&self, agency: AgencyId) -> Option<&AuthKey> {
        self.0.get(&agency)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn agencies(&self) -> impl Iterator<Item = AgencyId> + '_ {
        self.0.keys().copied()
    }

    /// The file's text: one `agency,hexkey` line per agency.
    pub fn to_file_text(&self) -> String {
        let mut out = String::from("# agency,key (HMAC-SHA256 key, hex). Secret: generated per deployment.\n");
        for (agency, key) in &self.0 {
            out.push_str(&format!("{agency},{}\n", key.to_hex()));
        }
        out
    }

    /// Parses `agency,hexkey` lines; blank lines and `#` comments are skipped.
    /// `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<AgencyKeys, KeyFileError> {
        let mut keys = AgencyKeys::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let bad = |reason: String| KeyFileError::Line { path: path.to_path_buf(), line, reason };
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let Some((agency, key)) = content.split_once(',') else {
                return Err(bad("expected agency,key".into()));
            };
            let agency: AgencyId = match agency.trim().parse() {
                Ok(a) if a >= 1 => a,
                // Quote the field only when it is short: swapped columns would put a key here.
                _ if agency.trim().len() <= 10 => {
                    return Err(bad(format!("agency {:?} is not a whole number >= 1", agency.trim())))
                }
                _ => {
                    return Err(bad(format!(
                        "the agency field ({} characters) is not a whole number >= 1",
                        agency.len()
                    )))
                }
            };
            let key = AuthKey::from_hex(key).map_err(|e| bad(format!("agency {agency}: {e}")))?;
            if keys.0.insert(agency, key).is_some() {
                return Err(bad(format!("agency {agency} has a key on an earlier line")));
            }
        }
        Ok(keys)
    }

    /// Reads and parses a key file (bounded in size).
    pub fn load(path: &Path) -> Result<AgencyKeys, KeyFileError> {
        let read_err = |source| KeyFileError::Read { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut text = String::new();
        file.take(MAX_KEY_FILE + 1).read_to_string(&mut text).map_err(read_err)?;
        if text.len() as u64 > MAX_KEY_FILE {
            return Err(KeyFileError::TooLarge { path: path.to_path_buf() });
        }
        AgencyKeys::parse(&text, path)
    }

    /// Writes the key file readable by its owner only (0600), replacing any
    /// previous one atomically.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(self.to_file_text().as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231_test_case_2() {
        // RFC 4231 4.3: key "Jefe", data "what do ya want for nothing?".
        let mut mac = <HmacSha256 as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let want = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(AuthKey(mac.finalize().into_bytes().into()).to_hex(), want);
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231_test_case_1() {
        // RFC 4231 4.2: key 20 x 0x0b, data "Hi There".
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&[0x0b; 20]).unwrap();
        mac.update(b"Hi There");
        let want = "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7";
        assert_eq!(AuthKey(mac.finalize().into_bytes().into()).to_hex(), want);
    }

    #[test]
    fn the_proof_is_the_hmac_of_nonce_then_agency_big_endian() {
        let key = AuthKey([7u8; KEY_LEN]);
        let nonce = [9u8; NONCE_LEN];
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&[7u8; KEY_LEN]).unwrap();
        let mut message = nonce.to_vec();
        message.extend_from_slice(&[0, 0, 1, 2]);
        mac.update(&message);
        let want: [u8; MAC_LEN] = mac.finalize().into_bytes().into();
        assert_eq!(key.proof(&nonce, 258), want);
        assert!(key.verify(&nonce, 258, &want));
        assert!(!key.verify(&nonce, 259, &want), "the agency is bound into the proof");
        assert!(!key.verify(&[8u8; NONCE_LEN], 258, &want), "the nonce is bound into the proof");
        assert!(!AuthKey([6u8; KEY_LEN]).verify(&nonce, 258, &want), "another key fails");
        let mut flipped = want;
        flipped[31] ^= 1;
        assert!(!key.verify(&nonce, 258, &flipped));
    }

    #[test]
    fn a_bound_proof_holds_only_for_its_session() {
        let key = AuthKey([5u8; KEY_LEN]);
        let nonce = [1u8; NONCE_LEN];
        let (a, b) = ([2u8; 32], [3u8; 32]);
        let proof = key.proof_bound(&nonce, 4, Some(&a));
        assert!(key.verify(&bound_nonce(&nonce, &a), 4, &proof));
        assert!(!key.verify(&bound_nonce(&nonce, &b), 4, &proof), "another session's binding fails");
        assert!(!key.verify(&nonce, 4, &proof), "a bound proof is not a plain one");
        assert_eq!(key.proof_bound(&nonce, 4, None), key.proof(&nonce, 4));
    }

    #[test]
    fn keys_round_trip_through_hex_and_never_print() {
        let key = AuthKey::generate().unwrap();
        let other = AuthKey::generate().unwrap();
        assert_ne!(key, other, "two draws of 32 random bytes");
        assert_eq!(AuthKey::from_hex(&key.to_hex()).unwrap(), key);
        assert_eq!(AuthKey::from_hex(&key.to_hex().to_uppercase()).unwrap(), key);
        let hex = key.to_hex();
        assert!(!format!("{key:?} {key}").contains(&hex[..8]));
        let mut keys = AgencyKeys::new();
        keys.insert(1, key);
        assert!(!format!("{keys:?}").contains(&hex[..8]));
        assert_eq!(AuthKey::from_hex("abc"), Err(KeyError::Length { found: 3 }));
        assert_eq!(AuthKey::from_hex(&"zz".repeat(KEY_LEN)), Err(KeyError::NotHex));
    }

    #[test]
    fn key_file_parses_and_names_file_and_line_without_the_key() {
        let keys = AgencyKeys::generate(3).unwrap();
        let text = keys.to_file_text();
        let path = Path::new("/keys/agency-keys.csv");
        assert_eq!(AgencyKeys::parse(&text, path).unwrap(), keys);
        let with_blank = format!("\n# comment\n  {}  \n\n", text.lines().nth(1).unwrap());
        assert_eq!(AgencyKeys::parse(&with_blank, path).unwrap().len(), 1);

        let secret = "ab".repeat(KEY_LEN);
        let short = &secret[..62];
        let cases = [
            (format!("1,{secret}\nno comma here\n"), 2, "expected agency,key"),
            (format!("1,{secret}\n0,{secret}\n"), 2, "agency \"0\""),
            (format!("x,{secret}\n"), 1, "agency \"x\""),
            (format!("1,{secret}\n\n2,{short}\n"), 3, "agency 2: a key must be 64 hex digits"),
            (format!("1,{}g\n", &secret[..63]), 1, "hex digits only"),
            (format!("1,{secret}\n1,{secret}\n"), 2, "agency 1 has a key on an earlier line"),
            (format!("{secret},1\n"), 1, "the agency field (64 characters)"),
        ];
        for (text, line, needle) in cases {
            let err = AgencyKeys::parse(&text, path).unwrap_err().to_string();
            assert!(err.contains(&format!("/keys/agency-keys.csv:{line}:")) && err.contains(needle), "{err}");
            assert!(!err.contains(&secret[..16]) && !err.contains(&short[..16]), "the key leaked: {err}");
        }
        // No key at all is a valid file (zero agencies); the server checks it has every agency's.
        assert!(AgencyKeys::parse("# nothing\n", path).unwrap().is_empty());
    }

    #[test]
    fn key_file_is_written_owner_only_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agency-keys.csv");
        let keys = AgencyKeys::generate(5).unwrap();
        keys.write(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(AgencyKeys::load(&path).unwrap(), keys);
        let again = AgencyKeys::generate(5).unwrap();
        again.write(&path).unwrap();
        assert_eq!(AgencyKeys::load(&path).unwrap(), again);
        assert!(matches!(AgencyKeys::load(&dir.path().join("missing")), Err(KeyFileError::Read { .. })));
    }
}
