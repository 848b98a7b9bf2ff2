//! A large randomized test of both decoders: a million mutated frames (valid
//! frames of every message type with bits flipped, bytes overwritten, lengths
//! forged, cuts and splices), fed in random chunks. Nothing may panic, and no
//! single input may make the decoder hold more than a few frames' worth of memory.
//!
//! A counting global allocator measures it; this file holds one test so no other
//! test's allocations are counted.

use bytes::{Bytes, BytesMut};
use loteria::bet::{Bet, Date};
use loteria::datagen::Rng;
use loteria::net::{ClientCodec, NackCode, Request, Response, ServerCodec, MAX_FRAME};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use tokio_util::codec::Decoder;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(live, Relaxed);
        LARGEST.fetch_max(layout.size(), Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Relaxed) + new_size - layout.size();
            PEAK.fetch_max(live, Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Relaxed);
        }
        LARGEST.fetch_max(new_size, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn seeds() -> Vec<Vec<u8>> {
    let bet = |i: u16| Bet {
        first_name: "María José".into(),
        last_name: "O'Brien, \"Jr\" | Núñez".into(),
        document: format!("{:08}", i),
        birthdate: Date::new(1990, 2, 28).unwrap(),
        number: i % 10_000,
    };
    let mut frames = Vec::new();
    let requests = vec![
        Request::Echo(Bytes::from_static(b"hello")),
        Request::Bet { agency: 1, bet: bet(1).into() },
        Request::Batch { agency: 2, first_index: 100, bets: (0..40).map(bet).collect() },
        Request::Done { agency: 3, total: 9 },
        Request::WinnersRequest { agency: 4 },
        Request::Resume { agency: 5 },
        Request::AuthHello { agency: 6 },
        Request::AuthProof { mac: [0x5a; 32] },
    ];
    for r in requests {
        let mut b = BytesMut::new();
        r.encode(&mut b).unwrap();
        frames.push(b.to_vec());
    }
    let responses = vec![
        Response::Ack { index: 1, count: 2 },
        Response::Nack { code: NackCode::OutOfOrder, index: 3, message: "gap | á".into() },
        Response::Winners { agency: 1, more: true, documents: vec!["00000042".into(); 30] },
        Response::Progress { agency: 1, stored: 7, done: false },
        Response::Challenge { nonce: [0xc3; 32] },
    ];
    for r in responses {
        let mut b = BytesMut::new();
        r.encode(&mut b).unwrap();
        frames.push(b.to_vec());
    }
    frames
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut input = Vec::new();
    for _ in 0..1 + rng.index(3) {
        input.extend_from_slice(&seeds[rng.index(seeds.len())]);
    }
    let edits = 1 + rng.index(6);
    for _ in 0..edits {
        if input.is_empty() {
            break;
        }
        let at = rng.index(input.len());
        match rng.index(7) {
            0 => input[at] ^= 1 << rng.index(8),
            1 => input[at] = rng.next_u64() as u8,
            2 => input.truncate(at),
            3 => {
                // Forge a length field somewhere.
                let len = [0u32, 1, 12, 8187, 8188, 65_535, u32::MAX][rng.index(7)];
                let end = (at + 4).min(input.len());
                input[at..end].copy_from_slice(&len.to_be_bytes()[..end - at]);
            }
            4 => {
                let n = rng.index(64);
                let extra: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                input.splice(at..at, extra);
            }
            5 => input[at] = [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x81, 0x82, 0x83, 0x84, 0xff][rng.index(12)],
            _ => {
                let cut = rng.index(16);
                let end = (at + cut).min(input.len());
                input.drain(at..end);
            }
        }
    }
    input
}

fn drain<D: Decoder>(codec: &mut D, input: &[u8], rng: &mut Rng) -> usize {
    let mut buf = BytesMut::new();
    let mut frames = 0;
    let mut pos = 0;
    while pos < input.len() {
        let max_step = if rng.index(2) == 0 { 8 } else { 4096 };
        let step = 1 + rng.index(max_step);
        let end = (pos + step).min(input.len());
        buf.extend_from_slice(&input[pos..end]);
        pos = end;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => frames += 1,
                Ok(None) => break,
                Err(_) => return frames,
            }
        }
    }
    let _ = codec.decode_eof(&mut buf);
    frames
}

#[test]
fn a_million_mutated_inputs_never_panic_or_over_allocate() {
    let inputs: usize = std::env::var("FUZZ_INPUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let seeds = seeds();
    let mut rng = Rng::new(0x7574);
    let (mut frames, mut worst_peak, mut worst_largest) = (0usize, 0usize, 0usize);
    for _ in 0..inputs {
        let input = mutate(&mut rng, &seeds);
        let baseline = LIVE.load(Relaxed);
        PEAK.store(baseline, Relaxed);
        LARGEST.store(0, Relaxed);
        frames += drain(&mut ServerCodec, &input, &mut rng);
        frames += drain(&mut ClientCodec, &input, &mut rng);
        let peak = PEAK.load(Relaxed) - baseline;
        worst_peak = worst_peak.max(peak);
        worst_largest = worst_largest.max(LARGEST.load(Relaxed));
        // The input itself is at most a few frames long; decoding may hold one
        // frame being assembled plus what was parsed out of it.
        assert!(LARGEST.load(Relaxed) <= 4 * MAX_FRAME, "one allocation of {} bytes", LARGEST.load(Relaxed));
        assert!(peak <= 8 * MAX_FRAME, "decoding one input held {peak} bytes at once");
    }
    println!(
        "decoded {inputs} mutated inputs ({frames} frames parsed), worst peak {worst_peak} bytes, \
         largest allocation {worst_largest} bytes"
    );
}
