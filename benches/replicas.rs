//! `make bench-replicas` (`cargo bench --bench replicas -- [--agencies N] [--bets M]
//! [--runs R] [--servers 1,2,3] [--quick]`): the system with M = 1, 2, 3 server
//! processes on 127.0.0.1 sharing one store folder, side by side, with what the
//! inter-process lock costs: time waiting for it, time holding it, and the rows
//! each replica read back from the others (summed over replicas, from their
//! `close_store` lines). Agency k starts on replica k mod M. Figures are printed,
//! never asserted.

use loteria::auth::AgencyKeys;
use loteria::datagen;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SERVER: &str = env!("CARGO_BIN_EXE_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_client");

/// The `close_store` counters this benchmark sums over the replicas.
const COUNTERS: [&str; 8] = [
    "batches",
    "syncs",
    "lock_acquisitions",
    "lock_wait_us",
    "lock_hold_us",
    "catch_ups",
    "caught_up_rows",
    "lock_wait_max_us",
];

struct Run {
    secs: f64,
    /// Summed over replicas, except the `_max_` ones (the largest).
    counters: Vec<f64>,
}

fn field(line: &str, key: &str) -> Option<f64> {
    line.split(" | ").find_map(|f| f.strip_prefix(&format!("{key}: "))).and_then(|v| v.trim().parse().ok())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port()
}

fn spawn_server(dir: &Path, port: u16, agencies: u32, keys: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(SERVER)
        .current_dir(dir)
        .env("SERVER_PORT", port.to_string())
        .env("SERVER_AGENCIES", agencies.to_string())
        .env("SERVER_STORAGE_PATH", dir.join("bets.csv"))
        .env("SERVER_LISTEN_BACKLOG", "4096")
        .env("SERVER_AUTH_KEYS", keys)
        .env_remove("SERVER_AUTH")
        .env_remove("SERVER_CONFIG")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("server stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("accept_connections") || line.contains("close_store") {
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30)).expect("server start");
    (child, rx)
}

fn run(dir: &Path, data: &Path, agencies: u32, servers: usize) -> Run {
    for name in ["bets.csv", "bets.csv.done", "bets.csv.lock"] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let keys = AgencyKeys::generate(agencies).expect("random keys");
    let keys_path = dir.join("agency-keys.csv");
    keys.write(&keys_path).expect("write the key file");
    let ports: Vec<u16> = (0..servers).map(|_| free_port()).collect();
    let mut replicas: Vec<_> = ports.iter().map(|p| spawn_server(dir, *p, agencies, &keys_path)).collect();
    let started = Instant::now();
    let mut clients: Vec<Child> = (1..=agencies)
        .map(|id| {
            let first = id as usize % servers;
            let list: Vec<String> =
                (0..servers).map(|k| format!("127.0.0.1:{}", ports[(first + k) % servers])).collect();
            Command::new(CLIENT)
                .current_dir(dir)
                .env("CLI_ID", id.to_string())
                .env("CLI_SERVER_ADDRESS", list.join(","))
                .env("CLI_DATA_PATH", data.join(format!("agency-{id}.csv")))
                .env("CLI_LOG_LEVEL", "WARNING")
                .env("CLI_AUTH_KEY", keys.get(id).expect("a key per agency").to_hex())
                .env_remove("CLI_CONFIG")
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn client")
        })
        .collect();
    for c in &mut clients {
        assert!(c.wait().expect("wait for an agency").success(), "an agency failed");
    }
    let secs = started.elapsed().as_secs_f64();
    let mut counters = vec![0.0f64; COUNTERS.len()];
    for (child, lines) in replicas.iter_mut() {
        // SAFETY: kill(2) with SIGTERM on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert!(child.wait().expect("wait for a server").success(), "a server failed");
        let close = lines.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        for (i, key) in COUNTERS.iter().enumerate() {
            let v: f64 = field(&close, key).unwrap_or(0.0);
            counters[i] = if key.contains("_max_") { counters[i].max(v) } else { counters[i] + v };
        }
    }
    Run { secs, counters }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("replicas: run it with `make bench-replicas` (cargo bench --bench replicas)");
        return;
    }
    let (mut agencies, mut bets, mut runs, mut servers, mut quick) = (5u32, 200_000u64, 3usize, vec![1, 2, 3], false);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_default();
        let bad = |what: &str| -> ! {
            eprintln!("replicas: {what} needs a whole number (options: --agencies N --bets M --runs R --servers 1,2,3 --quick)");
            std::process::exit(2)
        };
        match a.as_str() {
            "--bench" => {}
            "--quick" => {
                quick = true;
                bets = 20_000;
                runs = 1;
            }
            "--agencies" => agencies = value().parse().unwrap_or_else(|_| bad("--agencies")),
            "--bets" => bets = value().parse().unwrap_or_else(|_| bad("--bets")),
            "--runs" => runs = value().parse().unwrap_or_else(|_| bad("--runs")),
            "--servers" => {
                servers = value().split(',').map(|s| s.trim().parse().unwrap_or_else(|_| bad("--servers"))).collect()
            }
            other => bad(other),
        }
    }
    if agencies == 0 || runs == 0 || servers.contains(&0) {
        eprintln!("replicas: --agencies, --runs and every --servers value must be at least 1");
        std::process::exit(2);
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    println!("generating {agencies} agencies x {bets} bets (not timed)");
    datagen::generate(&data, agencies, bets, 7574, 7574).expect("generate data");
    let mut results: Vec<(usize, Vec<Run>)> = servers.iter().map(|m| (*m, Vec::new())).collect();
    for r in 1..=runs {
        for (m, list) in results.iter_mut() {
            list.push(run(tmp.path(), &data, agencies, *m));
        }
        println!("run {r}/{runs} done");
    }
    let total = u64::from(agencies) * bets;
    println!(
        "\n{agencies} agencies x {bets} bets = {total} bets, {runs} runs (medians), window default, durable acks, {} cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!("| servers | s | bets/s | batches | fsyncs | lock acquisitions | waiting for the lock s (sum over replicas) | longest wait ms | holding it s | catch-ups | rows read back |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (m, list) in &results {
        let c = |i: usize| median(list.iter().map(|r| r.counters[i]).collect());
        let secs = median(list.iter().map(|r| r.secs).collect());
        println!(
            "| {m} | {secs:.3} | {:.0} | {:.0} | {:.0} | {:.0} | {:.3} | {:.1} | {:.3} | {:.0} | {:.0} |",
            total as f64 / secs,
            c(0),
            c(1),
            c(2),
            c(3) / 1e6,
            c(7) / 1e3,
            c(4) / 1e6,
            c(5),
            c(6)
        );
    }
    if quick {
        println!("\n(--quick: a small size that only proves the benchmark works; do not read the figures)");
    }
}
