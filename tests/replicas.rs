//! Three server processes sharing one store folder on 127.0.0.1 (replicas), agencies
//! spread over them, one replica SIGKILLed mid-ingest and started again later:
//! every row stored once, in each agency's order, and every agency its winners.

mod util;

use loteria::datagen;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};
use util::*;

const RUN: Duration = Duration::from_secs(180);
const REPLICAS: usize = 3;
const AGENCIES: u32 = 6;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn replica(dir: &Path, port: u16, name: &str) -> Proc {
    let env = server_env(dir, port, AGENCIES, &[]);
    let server = Proc::spawn(SERVER, name, &env, dir);
    server
        .lines
        .wait_for("action: accept_connections | result: in_progress", Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{name} did not start:\n{}", server.lines.dump()));
    server
}

#[test]
fn three_replicas_one_killed_mid_ingest_store_every_bet_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, AGENCIES, 40_000, 11, 7574).unwrap();
    ensure_keys(dir.path(), AGENCIES);
    let ports: Vec<u16> = (0..REPLICAS).map(|_| free_port()).collect();
    let mut servers: Vec<Proc> =
        ports.iter().enumerate().map(|(i, p)| replica(dir.path(), *p, &format!("server{}", i + 1))).collect();
    // Agency k starts on replica k mod 3 and moves to the next one on each reconnect.
    let clients_started = Instant::now();
    let mut clients: Vec<Proc> = (1..=AGENCIES)
        .map(|id| {
            let first = id as usize % REPLICAS;
            let list: Vec<String> =
                (0..REPLICAS).map(|k| format!("127.0.0.1:{}", ports[(first + k) % REPLICAS])).collect();
            let env = [
                ("CLI_SERVER_ADDRESS", list.join(",")),
                ("CLI_BATCH_MAXAMOUNT", "25".to_string()),
                ("CLI_BATCH_WINDOW", "4".to_string()),
                ("CLI_RETRY_INITIAL_DELAY_MS", "20".to_string()),
                ("CLI_RETRY_MAX_DELAY_MS", "300".to_string()),
                ("CLI_RETRY_MAX_ATTEMPTS", "200".to_string()),
            ];
            start_client(dir.path(), id, 0, &data.join(format!("agency-{id}.csv")), &env)
        })
        .collect();

    // Kill replica 1 once a fifth of the bets are in the shared file.
    let total: u64 = summaries.iter().map(|s| s.bets).sum();
    let bets_file = dir.path().join("bets.csv");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = std::fs::read(&bets_file).map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64).unwrap_or(0);
        if rows * 5 >= total {
            break;
        }
        assert!(Instant::now() < deadline, "ingestion too slow: {rows} of {total} rows");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took_batches: Vec<usize> =
        servers.iter().map(|s| s.lines.count("action: apuesta_recibida | result: success")).collect();
    servers[0].signal("KILL");
    servers[0].wait(Duration::from_secs(10));
    println!("replica 1 SIGKILLed after {:?}; batches per replica before: {took_batches:?}", clients_started.elapsed());
    assert!(took_batches.iter().filter(|&&n| n > 0).count() >= 2, "{took_batches:?}");
    assert!(took_batches[0] > 0, "the killed replica took no batch: {took_batches:?}");

    // Started again later on the same port, it opens the shared store like at start.
    std::thread::sleep(Duration::from_millis(500));
    servers[0] = replica(dir.path(), ports[0], "server1-again");

    for c in &mut clients {
        let status = c.wait(RUN);
        assert!(status.success(), "{} failed:\n{}", c.name, c.lines.dump());
    }
    let mut by_agency = stored_by_agency(&bets_file);
    for (summary, client) in summaries.iter().zip(&clients) {
        let want = input_rows(&summary.path);
        let got = by_agency.remove(&summary.agency.to_string()).unwrap_or_default();
        assert_eq!(got.len(), want.len(), "agency {}: stored {} of {}", summary.agency, got.len(), want.len());
        assert!(got == want, "agency {}: stored rows differ from its file (order or content)", summary.agency);
        assert_eq!(winners_logged(client), Some(summary.winners), "{}", client.name);
    }
    assert!(by_agency.is_empty(), "rows of unknown agencies: {:?}", by_agency.keys());
    let reconnected = clients.iter().filter(|c| c.lines.count("action: reconnect") > 0).count();
    assert!(reconnected >= 1, "no agency had to move to another replica");

    // Every live replica that drew found every row, under the same chain head;
    // shut them down in order.
    let mut heads = std::collections::BTreeSet::new();
    for s in servers.iter_mut() {
        for line in s.lines.all().iter().filter(|l| l.contains("action: sorteo | result: success")) {
            assert!(line.contains(&format!("bets: {total} ")), "{}: {line}", s.name);
            heads.insert(head_of(line).unwrap_or_else(|| panic!("{}: no head in {line}", s.name)));
        }
        s.signal("TERM");
        assert!(s.wait(Duration::from_secs(10)).success(), "{}:\n{}", s.name, s.lines.dump());
        let close = s.lines.wait_for("action: close_store | result: success", Duration::from_secs(1));
        println!("{}: {}", s.name, close.unwrap_or_else(|| panic!("{} did not close:\n{}", s.name, s.lines.dump())));
    }
    assert_eq!(heads.len(), 1, "the replicas' sorteo lines differ in their heads: {heads:?}");
    // The auditor's recomputation from the shared files gives the same head.
    let out = std::process::Command::new(VERIFY)
        .args(["--store", &bets_file.display().to_string(), "--agencies", &AGENCIES.to_string()])
        .args(["--key", &chain_key_path(dir.path()).display().to_string()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    let head = heads.into_iter().next().unwrap();
    assert!(out.contains(&format!("bets: {total} ")) && out.contains(&format!("head: {head} ")), "{out}");
}
