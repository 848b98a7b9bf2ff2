//! `cargo bench --bench hot_path [-- --bets N --rounds R]`: the server's per-bet
//! CPU on a hot cache, without sockets or disks. Bets of the real mix are read
//! from a generated agency file, encoded into BATCH payloads of 100, then
//! (1) decoded and validated with `Request::decode`, (2) rendered into rows with
//! `storage::render_rows`, over and over until a million bets have gone
//! through each. The agency's side is timed too: (3) `BetReader` reading a
//! real-mix agency stream from memory (64 KiB at a time, as from its file),
//! (4) `Batcher` encoding the bets read into BATCH frames, and (5) what sealing
//! the rendered rows adds (`Sealer`: CRC32C, and BLAKE3 with a chain key). Figures (ns per bet
//! or row, every round, then the best and the median) are printed, never
//! asserted.

use bytes::{Bytes, BytesMut};
use loteria::bet::{Bet, BetBatch};
use loteria::client::{Batcher, BetReader};
use loteria::datagen::{self, Mix};
use loteria::net::codec::split_frame;
use loteria::net::Request;
use loteria::storage::integrity::Sealer;
use std::hint::black_box;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Distinct bets: 100 batches of 100, a few hundred KiB, which stay in cache.
const DISTINCT: u64 = 10_000;
const PER_BATCH: usize = 100;
const AGENCY: u32 = 7;
/// Rows of the agency stream the reader goes through (about 4 MiB, as a file's
/// pages would be in the page cache).
const STREAM_ROWS: u64 = 100_000;
/// What `BetReader::open` reads at a time.
const READ_BUFFER: usize = 64 * 1024;

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

/// A real-mix agency file of `STREAM_ROWS` rows, as bytes.
fn agency_stream() -> Arc<[u8]> {
    let dir = tempfile::tempdir().expect("tempdir");
    let summaries = datagen::generate_mix(dir.path(), 1, STREAM_ROWS, 42, 7574, Mix::Real).expect("generate");
    std::fs::read(&summaries[0].path).expect("generated stream").into()
}

/// Reads every row of `stream` with `BetReader`, taking each bet as the agency
/// does (a match on the row); returns (rows, a checksum of every field).
fn read_stream(stream: &Arc<[u8]>) -> (usize, u64) {
    let source = Box::new(Cursor::new(stream.clone()));
    let mut reader = BetReader::from_reader(PathBuf::from("agency-7.csv"), source, READ_BUFFER);
    let (mut rows, mut sum) = (0usize, 0u64);
    while let Some(row) = reader.next_bet().expect("read") {
        match row {
            Ok(bet) => {
                let names = bet.first_name.len() + bet.last_name.len() + bet.document.len();
                sum += names as u64 + u64::from(bet.birthdate.day()) + u64::from(bet.number);
            }
            Err(e) => panic!("not a valid row: {e}"),
        }
        rows += 1;
    }
    (rows, black_box(sum))
}

/// Encodes `bets` into BATCH frames of `PER_BATCH` with `Batcher`; returns the frames' bytes.
fn encode(bets: &[Bet], frame: &mut BytesMut) -> usize {
    let mut batcher = Batcher::new(PER_BATCH);
    let (mut index, mut bytes) = (0u64, 0usize);
    for bet in bets {
        let bet = black_box(bet).as_ref();
        if !batcher.try_push(&bet) {
            frame.clear();
            index += batcher.take_frame(AGENCY, index, frame).expect("frame") as u64;
            bytes += black_box(&*frame).len();
            batcher.push(&bet);
        }
    }
    frame.clear();
    batcher.take_frame(AGENCY, index, frame).expect("frame");
    bytes + frame.len()
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

    let stream = agency_stream();
    let (stream_rows, _) = read_stream(&stream);
    let stream_passes = (bets as usize).div_ceil(stream_rows).max(1);
    let read_total = (stream_passes * stream_rows) as f64;
    let bets_read: Vec<Bet> = batches.iter().flat_map(|b| b.iter().map(|bet| bet.to_bet())).collect();
    println!(
        "agency: a {} KiB stream of {stream_rows} real-mix rows, {stream_passes} passes = {read_total} rows per round; \
         {per_pass} bets encoded {passes} times per round",
        stream.len() / 1024
    );

    let (mut decode_ns, mut render_ns) = (Vec::new(), Vec::new());
    let (mut read_ns, mut encode_ns) = (Vec::new(), Vec::new());
    let (mut seal_ns, mut sealkey_ns) = (Vec::new(), Vec::new());
    let mut frame = BytesMut::with_capacity(2 * loteria::net::MAX_FRAME);
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

        // What sealing adds per row: the sidecar's CRC32C and row count, with a
        // chain key the group's BLAKE3 digest as well; SHA-256 beside it, the
        // digest it replaced.
        out.clear();
        for batch in &batches {
            loteria::storage::render_rows(&mut out, AGENCY, batch.raw_iter());
        }
        let mut seal = [0.0f64; 2];
        for (keyed, ns) in [false, true].into_iter().zip(seal.iter_mut()) {
            let mut sealer = Sealer::new(keyed);
            let start = Instant::now();
            for _ in 0..passes {
                sealer.absorb(black_box(&out));
            }
            *ns = start.elapsed().as_nanos() as f64 / total;
            black_box(sealer.rows());
        }
        let mut sha = <sha2::Sha256 as sha2::Digest>::new();
        let start = Instant::now();
        for _ in 0..passes {
            sha2::Digest::update(&mut sha, black_box(&out));
        }
        let sha_ns = start.elapsed().as_nanos() as f64 / total;
        black_box(sha2::Digest::finalize(sha));
        println!(
            "round {round}: seal crc32c {:6.1} ns/row   seal crc32c+blake3 {:6.1} ns/row   (sha256 alone {sha_ns:6.1})",
            seal[0], seal[1]
        );
        seal_ns.push(seal[0]);
        sealkey_ns.push(seal[1]);

        let start = Instant::now();
        let mut rows = 0usize;
        for _ in 0..stream_passes {
            rows += black_box(read_stream(&stream)).0;
        }
        let read = start.elapsed().as_nanos() as f64 / rows as f64;
        let start = Instant::now();
        let mut bytes = 0usize;
        for _ in 0..passes {
            bytes += encode(&bets_read, &mut frame);
        }
        let e = start.elapsed().as_nanos() as f64 / total;
        println!(
            "round {round}: read (agency) {read:6.1} ns/row   encode (agency) {e:6.1} ns/bet ({} bytes/bet)",
            bytes / total as usize
        );
        read_ns.push(read);
        encode_ns.push(e);
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "decode+validate: best {:.1} median {:.1} ns/bet; render: best {:.1} median {:.1} ns/bet",
        best(&decode_ns),
        median(decode_ns.clone()),
        best(&render_ns),
        median(render_ns.clone())
    );
    println!(
        "seal crc32c: best {:.1} median {:.1} ns/row; seal crc32c+blake3 (chain key): best {:.1} median {:.1} ns/row",
        best(&seal_ns),
        median(seal_ns.clone()),
        best(&sealkey_ns),
        median(sealkey_ns.clone())
    );
    println!(
        "read (agency): best {:.1} median {:.1} ns/row; encode (agency): best {:.1} median {:.1} ns/bet",
        best(&read_ns),
        median(read_ns.clone()),
        best(&encode_ns),
        median(encode_ns.clone())
    );
}
