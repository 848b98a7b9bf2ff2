//! Each row's CRC32C for the sidecar's row CRCs, with the CPU's `crc32`
//! instruction (SSE4.2) where it has one. The crc32c crate is fast over long
//! inputs, but its per-call setup cost about 30 ns per 44-byte row. Here the
//! row ends are found 64 bytes at a time (one vector compare per 16 bytes) and
//! four rows are summed side by side in whole 8-byte words: about 6 ns a
//! 45-byte row (64 KiB at a time, in the cache), where three rows side by side
//! with their last bytes one at a time took 9.
//!
//! A row's words are laid so that the last ends where the row ends, so every
//! word is a whole `u64`: the bytes of the first word (or words) that lie
//! before the row are masked to zero, and the row starts from the CRC state
//! that those zero bytes take to CRC32C's usual initial state ([`PRE`]). Four
//! rows of different lengths are then one loop of as many words as the
//! longest has, with no branch on any row's length.

use crate::simd::{eq, load, mask, WINDOW};
use core::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};

/// Appends (little-endian) the CRC32C of each `\n`-ended row of `bytes` to
/// `out`. `carry` is the CRC of a row begun in an earlier chunk (0 if none);
/// returns the CRC of the row left unfinished at the end and the rows ended.
/// The values are `crc32c::crc32c`'s.
pub fn row_crcs(carry: u32, bytes: &[u8], out: &mut Vec<u8>) -> (u32, u64) {
    if std::arch::is_x86_feature_detected!("sse4.2") && std::arch::is_x86_feature_detected!("popcnt") {
        // SAFETY: the CPU has SSE4.2 and POPCNT, checked just above.
        unsafe { row_crcs_sse42(carry, bytes, out) }
    } else {
        rows_with(carry, bytes, out, crc32c::crc32c_append)
    }
}

#[inline(always)]
fn rows_with(mut carry: u32, bytes: &[u8], out: &mut Vec<u8>, append: impl Fn(u32, &[u8]) -> u32) -> (u32, u64) {
    let (mut start, mut rows) = (0, 0);
    for nl in memchr::memchr_iter(b'\n', bytes) {
        let crc = append(carry, &bytes[start..=nl]);
        out.extend_from_slice(&crc.to_le_bytes());
        carry = 0;
        start = nl + 1;
        rows += 1;
    }
    (append(carry, &bytes[start..]), rows)
}

/// Bytes of zero padding a row may get in front of it (see [`PRE`]).
const MAX_PAD: usize = 63;

/// `PRE[k]`: the raw CRC32C state from which `k` zero bytes lead to `!0`, the
/// state a CRC starts from. Found by running the CRC's bit step backwards.
const PRE: [u32; MAX_PAD + 1] = {
    // The reflected Castagnoli polynomial.
    const POLY: u32 = 0x82F6_3B78;
    let mut pre = [0u32; MAX_PAD + 1];
    let mut state = !0u32;
    let mut k = 0;
    while k <= MAX_PAD {
        pre[k] = state;
        let mut bit = 0;
        while bit < 8 {
            // Forward, a zero bit maps s to (s >> 1) ^ (POLY if s & 1): the
            // top bit tells which, since POLY has it and s >> 1 has not.
            state = if state & 0x8000_0000 != 0 { ((state ^ POLY) << 1) | 1 } else { state << 1 };
            bit += 1;
        }
        k += 1;
    }
    pre
};

/// Rows ended per round: the ends of a few windows are found, then summed.
const ROUND: usize = 128;

#[target_feature(enable = "sse4.2,popcnt")]
fn row_crcs_sse42(carry: u32, bytes: &[u8], out: &mut Vec<u8>) -> (u32, u64) {
    // One past each row's `\n`; four slots of slack for the unconditional writes.
    let mut ends = [0usize; ROUND + WINDOW + 4];
    let (mut start, mut rows, mut carry, mut scanned) = (0usize, 0u64, carry, 0usize);
    while scanned < bytes.len() {
        let mut n = 0;
        while n < ROUND && scanned < bytes.len() {
            n = push_ends(bytes, scanned, &mut ends, n);
            scanned += WINDOW;
        }
        let mut i = 0;
        // A row begun in an earlier chunk, or too near the start to read words
        // before it, is summed alone.
        while i < n && (carry != 0 || start < 8) {
            out.extend_from_slice(&(!raw(!carry, &bytes[start..ends[i]])).to_le_bytes());
            (carry, start, i) = (0, ends[i], i + 1);
        }
        while i + LANES <= n {
            let group: [usize; LANES + 1] = std::array::from_fn(|r| if r == 0 { start } else { ends[i + r - 1] });
            for crc in raw_lanes(bytes, &group) {
                out.extend_from_slice(&(!crc).to_le_bytes());
            }
            (start, i) = (ends[i + LANES - 1], i + LANES);
        }
        for &end in &ends[i..n] {
            out.extend_from_slice(&(!raw(!0, &bytes[start..end])).to_le_bytes());
            start = end;
        }
        rows += n as u64;
    }
    (!raw(!carry, &bytes[start..]), rows)
}

/// Writes after `ends[n..]` one past each `\n` in the window of `bytes` at
/// `at` (the last window may be short); returns the new count.
#[inline]
#[target_feature(enable = "sse4.2,popcnt")]
fn push_ends(bytes: &[u8], at: usize, ends: &mut [usize; ROUND + WINDOW + 4], n: usize) -> usize {
    let bits = match bytes[at..].first_chunk::<WINDOW>() {
        Some(w) => mask(&load(w), |v| eq(v, b'\n')),
        None => {
            let mut window = [0u8; WINDOW];
            window[..bytes.len() - at].copy_from_slice(&bytes[at..]);
            mask(&load(&window), |v| eq(v, b'\n'))
        }
    };
    let count = bits.count_ones() as usize;
    // Four ends are written whatever the count (a window of stored rows, 21
    // bytes or more each, holds at most four): no branch on it but the loop
    // for more, which they never take.
    let mut m = bits;
    for slot in &mut ends[n..n + 4] {
        *slot = at + m.trailing_zeros() as usize + 1;
        m &= m.wrapping_sub(1);
    }
    let mut k = n + 4;
    while m != 0 {
        ends[k] = at + m.trailing_zeros() as usize + 1;
        m &= m - 1;
        k += 1;
    }
    n + count
}

/// Rows summed side by side: the `crc32` instruction takes three cycles to
/// give its result but can start one every cycle.
const LANES: usize = 4;

/// The longest row summed side by side (longer ones are summed alone).
const MAX_WIDE: usize = 256;

/// [`MAX_PAD`] + 1 zero bytes, then ones: the 8 bytes from `64 - pad + 8 w`
/// mask word `w` of a row that has `pad` zero bytes in front of it (its bytes
/// before the row to zero, the rest kept).
static KEEP: [u8; MAX_PAD + 1 + MAX_WIDE + 8] = {
    let mut keep = [0xffu8; MAX_PAD + 1 + MAX_WIDE + 8];
    let mut i = 0;
    while i <= MAX_PAD {
        keep[i] = 0;
        i += 1;
    }
    keep
};

/// The raw CRC32C states after [`LANES`] consecutive rows, `bytes[b[0]..b[1]]`
/// on, each from the initial state. Rows whose lengths differ too much for
/// [`PRE`], longer than [`MAX_WIDE`], or too near the start of `bytes` to read
/// whole words before them, are summed one by one.
#[inline]
#[target_feature(enable = "sse4.2")]
fn raw_lanes(bytes: &[u8], b: &[usize; LANES + 1]) -> [u32; LANES] {
    let len = |r: usize| b[r + 1] - b[r];
    let (mut long, mut short) = (0, usize::MAX);
    for r in 0..LANES {
        (long, short) = (long.max(len(r)), short.min(len(r)));
    }
    let words = long.div_ceil(8);
    if 8 * words - short > MAX_PAD || long > MAX_WIDE || b[1] < 8 * words || b[LANES] > bytes.len() {
        return std::array::from_fn(|r| raw(!0, &bytes[b[r]..b[r + 1]]));
    }
    // Row r's words end at its end; it gets `pad` zero bytes in front (its
    // words' bytes before it, masked).
    let pad: [usize; LANES] = std::array::from_fn(|r| 8 * words - len(r));
    let mut state = pad.map(|p| u64::from(PRE[p]));
    // SAFETY: row r's words are the 8 * words bytes ending at b[r + 1] <=
    // bytes.len(), the first at b[r + 1] - 8 * words >= b[1] - 8 * words >= 0
    // (both checked above); its masks are the 8 * words bytes from KEEP's byte
    // MAX_PAD + 1 - pad (pad <= MAX_PAD, checked above), ending at
    // MAX_PAD + 1 - pad + 8 * words = MAX_PAD + 1 + len(r) <= MAX_PAD + 1 +
    // MAX_WIDE, within KEEP. Every read is of a u64 at any alignment.
    unsafe {
        let data: [*const u8; LANES] = std::array::from_fn(|r| bytes.as_ptr().add(b[r + 1] - 8 * words));
        let keep: [*const u8; LANES] = std::array::from_fn(|r| KEEP.as_ptr().add(MAX_PAD + 1 - pad[r]));
        for w in 0..words {
            for r in 0..LANES {
                let word = data[r].add(8 * w).cast::<u64>().read_unaligned();
                let mask = keep[r].add(8 * w).cast::<u64>().read_unaligned();
                state[r] = _mm_crc32_u64(state[r], u64::from_le(word) & mask);
            }
        }
    }
    state.map(|s| s as u32)
}

/// The raw CRC32C state (not inverted) after `bytes`, from `state`.
#[inline]
#[target_feature(enable = "sse4.2")]
fn raw(state: u32, bytes: &[u8]) -> u32 {
    let (words, tail) = bytes.as_chunks::<8>();
    let mut state = u64::from(state);
    for word in words {
        state = _mm_crc32_u64(state, u64::from_le_bytes(*word));
    }
    // The instruction keeps the CRC in the low 32 bits.
    let mut state = state as u32;
    for &b in tail {
        state = _mm_crc32_u8(state, b);
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_bytes_lead_from_each_pre_state_to_the_initial_state() {
        for (k, &state) in PRE.iter().enumerate() {
            // The crate's CRC values are the inverted states.
            assert_eq!(crc32c::crc32c_append(!state, &vec![0u8; k]), 0, "{k}");
        }
    }

    proptest::proptest! {
        /// Rows of any bytes, cut into chunks anywhere, give the crate's CRC of each row.
        #[test]
        fn each_row_gets_the_crates_crc(
            rows in proptest::collection::vec(proptest::collection::vec(0u8..=255, 0..90), 0..40),
            cuts in proptest::collection::vec(0usize..4000, 0..6),
        ) {
            let mut bytes = Vec::new();
            let mut want = Vec::new();
            for row in &rows {
                let mut row: Vec<u8> = row.iter().map(|&b| if b == b'\n' { b'x' } else { b }).collect();
                row.push(b'\n');
                want.extend_from_slice(&crc32c::crc32c(&row).to_le_bytes());
                bytes.extend_from_slice(&row);
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let (mut got, mut carry, mut count) = (Vec::new(), 0, 0);
            for pair in cuts.windows(2) {
                let (c, n) = row_crcs(carry, &bytes[pair[0]..pair[1]], &mut got);
                carry = c;
                count += n;
            }
            proptest::prop_assert_eq!(count, rows.len() as u64);
            proptest::prop_assert_eq!(carry, 0);
            proptest::prop_assert_eq!(&got, &want);
            let mut plain = Vec::new();
            rows_with(0, &bytes, &mut plain, crc32c::crc32c_append);
            proptest::prop_assert_eq!(&plain, &want);
        }

        /// Many rows of one kind (the store's lengths, a few words each) in one
        /// chunk: the four-row path with its padding, against the crate.
        #[test]
        fn store_like_rows_get_the_crates_crc(lens in proptest::collection::vec(1usize..120, 1..300)) {
            let mut bytes = Vec::new();
            let mut want = Vec::new();
            for (i, len) in lens.iter().enumerate() {
                let row: Vec<u8> = (0..*len).map(|j| b'a' + ((i * 7 + j) % 26) as u8).chain([b'\n']).collect();
                want.extend_from_slice(&crc32c::crc32c(&row).to_le_bytes());
                bytes.extend_from_slice(&row);
            }
            let mut got = Vec::new();
            let (carry, n) = row_crcs(0, &bytes, &mut got);
            proptest::prop_assert_eq!((carry, n), (0, lens.len() as u64));
            proptest::prop_assert_eq!(&got, &want);
        }
    }
}
