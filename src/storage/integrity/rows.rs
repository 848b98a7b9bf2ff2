//! Each row's CRC32C for the sidecar's row CRCs, with the CPU's `crc32`
//! instruction (SSE4.2) where it has one. The crc32c crate is fast over long
//! inputs, but its per-call setup cost about 30 ns per 44-byte row, eight times
//! its CRC over the same bytes as one group; one loop over the rows here costs
//! about a third of that.

use core::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};

/// Appends (little-endian) the CRC32C of each `\n`-ended row of `bytes` to
/// `out`. `carry` is the CRC of a row begun in an earlier chunk (0 if none);
/// returns the CRC of the row left unfinished at the end and the rows ended.
/// The values are `crc32c::crc32c`'s.
pub fn row_crcs(carry: u32, bytes: &[u8], out: &mut Vec<u8>) -> (u32, u64) {
    if std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE4.2, checked just above.
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

/// Three rows at a time: the `crc32` instruction takes three cycles to give its
/// result but can start one every cycle, so three independent rows keep it busy
/// where one row would wait on itself.
#[target_feature(enable = "sse4.2")]
fn row_crcs_sse42(carry: u32, bytes: &[u8], out: &mut Vec<u8>) -> (u32, u64) {
    let mut ends = memchr::memchr_iter(b'\n', bytes);
    let Some(first) = ends.next() else { return (!raw(!carry, bytes), 0) };
    out.extend_from_slice(&(!raw(!carry, &bytes[..=first])).to_le_bytes());
    let (mut start, mut rows) = (first + 1, 1);
    loop {
        match (ends.next(), ends.next(), ends.next()) {
            (Some(a), Some(b), Some(c)) => {
                let crcs = raw3(&bytes[start..=a], &bytes[a + 1..=b], &bytes[b + 1..=c]);
                for crc in crcs {
                    out.extend_from_slice(&(!crc).to_le_bytes());
                }
                start = c + 1;
                rows += 3;
            }
            (a, b, _) => {
                for end in [a, b].into_iter().flatten() {
                    out.extend_from_slice(&(!raw(!0, &bytes[start..=end])).to_le_bytes());
                    start = end + 1;
                    rows += 1;
                }
                return (!raw(!0, &bytes[start..]), rows);
            }
        }
    }
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

/// [`raw`] of three rows from the initial state, their common words interleaved.
#[inline]
#[target_feature(enable = "sse4.2")]
fn raw3(a: &[u8], b: &[u8], c: &[u8]) -> [u32; 3] {
    let common = a.len().min(b.len()).min(c.len()) / 8;
    let (mut x, mut y, mut z) = (u64::from(!0u32), u64::from(!0u32), u64::from(!0u32));
    fn words(s: &[u8], n: usize) -> impl Iterator<Item = u64> + '_ {
        s.as_chunks::<8>().0.iter().take(n).map(|w| u64::from_le_bytes(*w))
    }
    for ((wa, wb), wc) in words(a, common).zip(words(b, common)).zip(words(c, common)) {
        x = _mm_crc32_u64(x, wa);
        y = _mm_crc32_u64(y, wb);
        z = _mm_crc32_u64(z, wc);
    }
    let at = common * 8;
    [raw(x as u32, &a[at..]), raw(y as u32, &b[at..]), raw(z as u32, &c[at..])]
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
