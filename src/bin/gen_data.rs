//! `gen_data --agencies N --bets M --out DIR [--seed S] [--winning-number W]`
//!
//! Writes `DIR/agency-{1..N}.csv` and `DIR/expected-winners.csv`, and prints one
//! line per agency with its expected winners.

use loteria::datagen;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: gen_data --agencies N --bets M --out DIR [--seed S] [--winning-number W]";

struct Args {
    agencies: u32,
    bets: u64,
    out: PathBuf,
    seed: u64,
    winning_number: u16,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let (mut agencies, mut bets, mut out, mut seed, mut winning) = (None, None, None, 7574u64, 7574u16);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |v: &str| format!("invalid value {v:?} for {flag}");
        match flag.as_str() {
            "--agencies" => {
                let v = value()?;
                agencies = Some(v.parse::<u32>().map_err(|_| bad(v))?);
            }
            "--bets" => {
                let v = value()?;
                bets = Some(v.parse::<u64>().map_err(|_| bad(v))?);
            }
            "--out" => out = Some(PathBuf::from(value()?)),
            "--seed" => {
                let v = value()?;
                seed = v.parse().map_err(|_| bad(v))?;
            }
            "--winning-number" => {
                let v = value()?;
                winning = v.parse().ok().filter(|w| *w <= 9999).ok_or_else(|| bad(v))?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        agencies: agencies.ok_or("--agencies is required")?,
        bets: bets.ok_or("--bets is required")?,
        out: out.ok_or("--out is required")?,
        seed,
        winning_number: winning,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&args) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("gen_data: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match datagen::generate(&args.out, args.agencies, args.bets, args.seed, args.winning_number) {
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
