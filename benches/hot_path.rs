//! `cargo bench --bench hot_path [-- --bets N --rounds R]`: the server's per-bet
//! CPU on a hot cache, without sockets or disks. Bets of the real mix are read
//! from a generated agency file, encoded into BATCH payloads of 100, then
//! (1) decoded and validated with `Request::decode`, (2) rendered into rows with
//! `storage::render_rows`, over and over until a million bets have gone
//! through each. Figures (ns per bet, every round, then the best and the
//! median) are printed, never asserted.

use bytes::{Bytes, BytesMut};
use loteria::bet::BetBatch;
use loteria::client::{Batcher, BetReader};
use loteria::datagen::{self, Mix};
use loteria::net::codec::split_frame;
use loteria::net::Request;
use std::hint::black_box;
use std::time::Instant;

/// Distinct bets: 100 batches of 100, a few hundred KiB, which stay in cache.
const DISTINCT: u64 = 10_000;
const PER_BATCH: usize = 100;
const AGENCY: u32 = 7;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The BATCH payloads (type byte and payload) of `DISTINCT` bets of the real mix.
fn payloads() -> Vec<(u8, Bytes)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let summaries = datagen::generate_mix(dir.path(), 1, DISTINCT, 42, 7574, Mix::Real).expect("generate");
    let mut reader = BetReader::open(&summaries[0].path).expect("open");
    let mut batcher = Batcher::new(PER_BATCH);
    let (mut frames, mut index) = (Vec::new(), 0u64);
    let mut take = |batcher: &mut Batcher, index: &mut u64| {
        let mut frame = BytesMut::new();
        *index += batcher.take_frame(AGENCY, *index, &mut frame).expect("frame") as u64;
        let split = split_frame(&mut frame).expect("split").expect("whole frame");
        frames.push(split);
    };
    while let Some(bet) = reader.next_bet().expect("read") {
        let bet = bet.expect("valid row");
        if !batcher.try_push(&bet) {
            take(&mut batcher, &mut index);
            batcher.push(&bet);
        }
    }
    if !batcher.is_empty() {
        take(&mut batcher, &mut index);
    }
    frames
}

fn decode(payloads: &[(u8, Bytes)]) -> Vec<BetBatch> {
    payloads
        .iter()
        .map(|(kind, payload)| match Request::decode(*kind, payload.clone()) {
            Ok(Request::Batch { bets, .. }) => bets,
            other => panic!("not a batch: {other:?}"),
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bets = arg(&args, "--bets", 1_000_000);
    let rounds = arg(&args, "--rounds", 5).max(1);
    let payloads = payloads();
    let batches = decode(&payloads);
    let per_pass: usize = batches.iter().map(BetBatch::len).sum();
    let passes = (bets as usize).div_ceil(per_pass).max(1);
    let total = (passes * per_pass) as f64;
    println!(
        "hot_path: {per_pass} distinct bets of the real mix in {} batches, {passes} passes = {total} bets per round",
        payloads.len()
    );

    let (mut decode_ns, mut render_ns) = (Vec::new(), Vec::new());
    let mut out = Vec::with_capacity(64 * 1024);
    for round in 1..=rounds {
        let start = Instant::now();
        let mut count = 0usize;
        for _ in 0..passes {
            for (kind, payload) in &payloads {
                match Request::decode(*kind, black_box(payload.clone())) {
                    Ok(Request::Batch { bets, .. }) => count += black_box(bets).len(),
                    other => panic!("not a batch: {other:?}"),
                }
            }
        }
        let d = start.elapsed().as_nanos() as f64 / count as f64;

        let start = Instant::now();
        let mut bytes = 0usize;
        for _ in 0..passes {
            for batch in &batches {
                out.clear();
                loteria::storage::render_rows(&mut out, AGENCY, black_box(batch).raw_iter());
                bytes += black_box(&out).len();
            }
        }
        let r = start.elapsed().as_nanos() as f64 / total;
        println!(
            "round {round}: decode+validate {d:6.1} ns/bet   render {r:6.1} ns/bet ({} bytes/row)",
            bytes / total as usize
        );
        decode_ns.push(d);
        render_ns.push(r);
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "decode+validate: best {:.1} median {:.1} ns/bet; render: best {:.1} median {:.1} ns/bet",
        best(&decode_ns),
        median(decode_ns.clone()),
        best(&render_ns),
        median(render_ns.clone())
    );
}
