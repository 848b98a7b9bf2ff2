//! The agency file reader on a real data file: prints ns per bet (a figure, not an assertion on time).
//!
//! `LOTERIA_READER_FILE=/tmp/bk/data-real/agency-1.csv cargo test --release --test client_reader -- --ignored --nocapture`

use bytes::BytesMut;
use loteria::client::{Batcher, BetReader};
use std::path::PathBuf;
use std::time::Instant;

#[test]
#[ignore = "benchmark: needs a data file in LOTERIA_READER_FILE"]
fn reader_ns_per_bet() {
    let path = PathBuf::from(std::env::var("LOTERIA_READER_FILE").expect("LOTERIA_READER_FILE"));
    for round in 0..3 {
        let started = Instant::now();
        let mut reader = BetReader::open(&path).unwrap();
        let mut batcher = Batcher::new(100);
        let mut frame = BytesMut::with_capacity(8192);
        let (mut bets, mut bad, mut frame_bytes) = (0u64, 0u64, 0usize);
        while let Some(row) = reader.next_bet().unwrap() {
            match row {
                Ok(bet) => {
                    if !batcher.try_push(&bet) {
                        batcher.take_frame(1, bets, &mut frame).unwrap();
                        frame_bytes += frame.len();
                        frame.clear();
                        batcher.push(&bet);
                    }
                    bets += 1;
                }
                Err(_) => bad += 1,
            }
        }
        batcher.take_frame(1, bets, &mut frame).unwrap();
        frame_bytes += frame.len();
        let elapsed = started.elapsed();
        println!(
            "round {round}: {bets} bets, {bad} bad rows, {frame_bytes} frame bytes, {:.1} ns/bet",
            elapsed.as_nanos() as f64 / (bets + bad) as f64
        );
    }
}
