//! `gen_data --agencies N --bets M --out DIR [--seed S] [--winning-number W] [--mix real|plain]`
//!
//! Writes `DIR/agency-{1..N}.csv` and `DIR/expected-winners.csv`, and prints one
//! line per agency with its expected winners.

use clap::Parser;
use loteria::datagen;
use std::path::PathBuf;
use std::process::ExitCode;

/// Writes deterministic agency files in the course's format (the same bytes for
/// the same seed) and the winners they hold.
#[derive(Parser)]
#[command(name = "gen_data", version)]
struct Args {
    /// How many agencies (files agency-1.csv .. agency-N.csv)
    #[arg(long, value_name = "N")]
    agencies: u32,
    /// Bets per agency
    #[arg(long, value_name = "M")]
    bets: u64,
    /// Output folder (created when missing)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Seed of the generator
    #[arg(long, value_name = "S", default_value_t = 7574)]
    seed: u64,
    /// The number that wins, for expected-winners.csv
    #[arg(long, value_name = "W", default_value_t = 7574, value_parser = clap::value_parser!(u16).range(0..=9999))]
    winning_number: u16,
    /// Names and documents: `plain` (few names need quoting) or `real` (most names
    /// non-ASCII, a few percent needing CSV quotes, more leading zeros)
    #[arg(long, value_enum, default_value_t = datagen::Mix::Plain)]
    mix: datagen::Mix,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match datagen::generate_mix(&args.out, args.agencies, args.bets, args.seed, args.winning_number, args.mix) {
        Ok(summaries) => {
            for s in summaries {
                println!(
                    "agency: {} | bets: {} | winners: {} | path: {}",
                    s.agency,
                    s.bets,
                    s.winners,
                    s.path.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen_data: cannot write {}: {e}", args.out.display());
            ExitCode::from(1)
        }
    }
}
