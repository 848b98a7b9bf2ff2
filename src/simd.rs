//! SSE2 building blocks for the loops that classify bytes many at a time (the
//! agency's row scan, the server's quick checks of a bet and its row
//! rendering): loads, byte comparisons and masks of one bit per byte. It knows
//! nothing of bets, rows or CSV; its users decide what the classes mean.
//!
//! SSE2 is part of every x86_64 CPU (the architecture's baseline), so nothing
//! is detected at run time. The functions that use vectors are marked as
//! needing it, which is what lets them call the intrinsics safely; the
//! assertion below keeps a build without it from compiling, so a call into
//! them from unmarked code is sound (each such call says so).

pub(crate) use core::arch::x86_64::__m128i;
use core::arch::x86_64::{
    _mm_add_epi8, _mm_and_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8,
    _mm_or_si128, _mm_set1_epi8, _mm_storeu_si128,
};

const _: () = assert!(cfg!(target_feature = "sse2"), "x86_64 without SSE2");

/// Bytes of one window: four vectors, one `u64` mask.
pub(crate) const WINDOW: usize = 64;

/// The window as four vectors of 16 bytes.
#[inline]
#[target_feature(enable = "sse2")]
pub(crate) fn load(window: &[u8; WINDOW]) -> [__m128i; 4] {
    let (chunks, _) = window.as_chunks::<16>();
    [0, 1, 2, 3].map(|i| load16(&chunks[i]))
}

/// 16 bytes as one vector.
#[inline]
#[target_feature(enable = "sse2")]
pub(crate) fn load16(bytes: &[u8; 16]) -> __m128i {
    // SAFETY: `bytes` is a `&[u8; 16]`, so its pointer is valid for reading
    // 16 bytes, and `_mm_loadu_si128` has no alignment requirement.
    unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) }
}

/// Writes the 16 bytes of `v` to `dst`.
#[inline]
#[target_feature(enable = "sse2")]
pub(crate) fn store16(dst: &mut [u8; 16], v: __m128i) {
    // SAFETY: `dst` is a `&mut [u8; 16]`, so its pointer is valid for writing
    // 16 bytes, and `_mm_storeu_si128` has no alignment requirement.
    unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), v) }
}

/// The bits (bit `i` for byte `i` of the window) of the lanes that `class`
/// sets to all ones.
#[inline]
#[target_feature(enable = "sse2")]
pub(crate) fn mask(v: &[__m128i; 4], class: impl Fn(__m128i) -> __m128i) -> u64 {
    let lanes = |i: usize| u64::from(mask16(class(v[i])));
    lanes(0) | lanes(1) << 16 | lanes(2) << 32 | lanes(3) << 48
}

/// The top bit of each of the 16 bytes (bit `i` for byte `i`).
#[inline]
#[target_feature(enable = "sse2")]
pub(crate) fn mask16(v: __m128i) -> u16 {
    // The result has only its low 16 bits set.
    _mm_movemask_epi8(v) as u16
}

/// `b` in every byte.
#[inline]
#[target_feature(enable = "sse2")]
pub(crate) fn splat(b: u8) -> __m128i {
    _mm_set1_epi8(b as i8)
}

/// All ones in the bytes of `v` equal to `b`.
#[inline]
#[target_feature(enable = "sse2")]
pub(crate) fn eq(v: __m128i, b: u8) -> __m128i {
    _mm_cmpeq_epi8(v, splat(b))
}

/// All ones in the bytes of `v` with signed `lo < v < hi` (0x80..=0xff are
/// -128..=-1, so `between(v, 0xc1, 0xe0)` is 0xc2..=0xdf).
#[inline]
#[target_feature(enable = "sse2")]
pub(crate) fn between(v: __m128i, lo: u8, hi: u8) -> __m128i {
    _mm_and_si128(_mm_cmpgt_epi8(v, splat(lo)), _mm_cmplt_epi8(v, splat(hi)))
}

/// All ones in the bytes of `v` with signed `v < b` (`less(v, 0xc0)` is 0x80..=0xbf).
#[inline]
#[target_feature(enable = "sse2")]
pub(crate) fn less(v: __m128i, b: u8) -> __m128i {
    _mm_cmplt_epi8(v, splat(b))
}

#[inline]
#[target_feature(enable = "sse2")]
pub(crate) fn or(a: __m128i, b: __m128i) -> __m128i {
    _mm_or_si128(a, b)
}

/// All ones in the ASCII digits of `v`.
#[inline]
#[target_feature(enable = "sse2")]
pub(crate) fn digits(v: __m128i) -> __m128i {
    // Adding 0x80 - 0x30 takes 0x30..=0x39 to -128..=-119 (0x89), and nothing
    // else below -118 (0x8a).
    less(_mm_add_epi8(v, splat(0x50)), 0x8a)
}

/// All ones in the UTF-8 continuation bytes (0x80..=0xbf) of `v`.
#[inline]
#[target_feature(enable = "sse2")]
pub(crate) fn continuations(v: __m128i) -> __m128i {
    // Signed, 0x80..=0xbf are -128..=-65.
    less(v, 0xc0)
}

/// Bits `start..end` of a mask (`start <= end <= 64`; none when they meet).
#[inline]
pub(crate) fn bits(start: usize, end: usize) -> u64 {
    // A shift by 64 gives 0, not the shift modulo 64.
    u64::MAX.unbounded_shl(start as u32) & !u64::MAX.unbounded_shl(end as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_covers_exactly_its_range() {
        for start in 0..=WINDOW {
            for end in start..=WINDOW {
                let want = (start..end).fold(0u64, |m, i| m | 1 << i);
                assert_eq!(bits(start, end), want, "{start}..{end}");
            }
        }
    }

    #[test]
    fn masks_put_each_byte_at_its_bit() {
        for at in 0..WINDOW {
            let mut window = [b'a'; WINDOW];
            window[at] = b'x';
            // SAFETY: this target has SSE2 (see the assertion on top).
            let m = unsafe { mask(&load(&window), |v| eq(v, b'x')) };
            assert_eq!(m, 1 << at);
            // SAFETY: as above.
            let m = unsafe { mask(&load(&window), |v| between(v, b'a', b'y')) };
            assert_eq!(m, 1 << at);
        }
        let mut out = [0u8; 16];
        let bytes: [u8; 16] = core::array::from_fn(|i| i as u8 * 17);
        // SAFETY: as above.
        unsafe { store16(&mut out, load16(&bytes)) };
        assert_eq!(out, bytes);
        // SAFETY: as above.
        // 0x88, 0x99, 0xaa and 0xbb, at 8..=11, are the bytes 0x80..=0xbf.
        assert_eq!(unsafe { mask16(less(load16(&bytes), 0xc0)) }, 0b0000_1111_0000_0000);
    }
}
