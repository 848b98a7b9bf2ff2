//! `verify`: an auditor's check of a stopped store. Recomputes every sync group's
//! CRC32C and the keyed chain from bets.csv, its sidecar and the chain key, checks
//! every row and the done journal, and prints the head, the rows and each agency's
//! rows and winners; exits 1 naming the first row (line) that does not match.

use clap::Parser;
use loteria::storage::{audit, ChainKey, StoreSpec};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Checks a stopped store: bets.csv, its sidecar `<store>.sum` and done journal
/// `<store>.done` beside it, with the deployment's chain key. Prints the chain head
/// (compare it with the published `sorteo` line), the row count and each agency's
/// rows and winners. Exit codes: 0 the store checks; 1 it does not (the error names
/// the file, the line or byte range, and what is wrong); 2 bad arguments or key.
#[derive(Parser)]
#[command(name = "verify", version)]
struct Args {
    /// The bets file (the sidecar and the journal are read beside it).
    #[arg(long, value_name = "PATH", env = "SERVER_STORAGE_PATH")]
    store: PathBuf,
    /// The deployment's chain key file (64 hex digits). Without it only the
    /// CRC32C of each group is checked and no head is printed.
    #[arg(long, value_name = "PATH", env = "SERVER_CHAIN_KEY")]
    key: Option<PathBuf>,
    /// Agencies taking part: stored rows must name one in 1..=N.
    #[arg(long, value_name = "N", env = "SERVER_AGENCIES")]
    agencies: u32,
    /// The draw's winning number, for the winners per agency.
    #[arg(long, value_name = "NUMBER", default_value_t = 7574, env = "SERVER_WINNING_NUMBER")]
    winning_number: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let key = match args.key.as_deref().map(ChainKey::load).transpose() {
        Ok(key) => key.map(Arc::new),
        Err(e) => {
            eprintln!("action: verify | result: fail | error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.agencies == 0 {
        eprintln!("action: verify | result: fail | error: --agencies must be at least 1");
        return ExitCode::from(2);
    }
    let spec = StoreSpec { agencies: args.agencies, key, sidecar: true };
    match audit::audit(&args.store, &spec, args.winning_number) {
        Ok(a) => {
            for (agency, (rows, winners)) in &a.agencies {
                println!(
                    "action: verify_agency | result: success | agency: {agency} | rows: {rows} | winners: {winners}"
                );
            }
            let winners: u64 = a.agencies.values().map(|(_, w)| w).sum();
            let head = a.head.as_deref().unwrap_or("-");
            println!(
                "action: verify | result: success | bets: {} | winners: {winners} | head: {head} | groups: {} | agencies_done: {}",
                a.rows, a.groups, a.done
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("action: verify | result: fail | error: {e}");
            ExitCode::from(1)
        }
    }
}
