//! The replicated store for real: a three-node NATS cluster (JetStream,
//! `sync_interval: "always"`) and three server processes on 127.0.0.1, agencies
//! spread over the servers. Faults happen for real: a NATS node and a server
//! SIGKILLed mid-ingest, two NATS nodes (the quorum) killed and started again.
//! Every row must be stored once, in each agency's order, in every replica's
//! view; every agency must finish with its winners; every sorteo line of the
//! draw must carry the same chain head. Without `nats-server` these tests fail
//! (run `bash scripts/install-deps.sh rust`).

mod util;

use loteria::datagen::{self, AgencySummary};
use loteria::storage::jetstream::ACK_TIMEOUT;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use util::nats::{free_port, Cluster};
use util::*;

const RUN: Duration = Duration::from_secs(240);

/// A server with the replicated backend; its view is `dir/<name>/bets.csv`.
fn replica(dir: &Path, name: &str, port: u16, agencies: u32, urls: &str, stream: &str) -> Proc {
    let view = view_of(dir, name);
    std::fs::create_dir_all(view.parent().unwrap()).unwrap();
    let mut env = server_env(dir, port, agencies, &[]);
    env.retain(|(k, _)| *k != "SERVER_STORAGE_PATH");
    env.extend([
        ("SERVER_STORAGE_PATH", view.display().to_string()),
        ("SERVER_STORAGE_BACKEND", "jetstream".to_string()),
        ("SERVER_NATS_URLS", urls.to_string()),
        ("SERVER_NATS_STREAM", stream.to_string()),
    ]);
    let server = Proc::spawn(SERVER, name, &env, dir);
    server
        .lines
        .wait_for("action: accept_connections | result: in_progress", Duration::from_secs(40))
        .unwrap_or_else(|| panic!("{name} did not start:\n{}", server.lines.dump()));
    server
}

fn view_of(dir: &Path, name: &str) -> PathBuf {
    dir.join(name).join("bets.csv")
}

fn rows_in(path: &Path) -> u64 {
    std::fs::read(path).map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64).unwrap_or(0)
}

/// Agency k starts on server k mod M and moves to the next one on each reconnect.
fn agencies_over(dir: &Path, data: &Path, agencies: u32, ports: &[u16]) -> Vec<Proc> {
    (1..=agencies)
        .map(|id| {
            let first = id as usize % ports.len();
            let list: Vec<String> =
                (0..ports.len()).map(|k| format!("127.0.0.1:{}", ports[(first + k) % ports.len()])).collect();
            let env = [
                ("CLI_SERVER_ADDRESS", list.join(",")),
                ("CLI_BATCH_MAXAMOUNT", "40".to_string()),
                ("CLI_BATCH_WINDOW", "8".to_string()),
                ("CLI_RETRY_INITIAL_DELAY_MS", "20".to_string()),
                ("CLI_RETRY_MAX_DELAY_MS", "300".to_string()),
                ("CLI_RETRY_MAX_ATTEMPTS", "400".to_string()),
            ];
            start_client(dir, id, 0, &data.join(format!("agency-{id}.csv")), &env)
        })
        .collect()
}

/// Waits (bounded) until `view` holds a fifth of `total` rows.
fn wait_for_a_fifth(view: &Path, total: u64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let rows = rows_in(view);
        if rows * 5 >= total {
            return;
        }
        assert!(Instant::now() < deadline, "ingestion too slow: {rows} of {total} rows in {}", view.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every agency exited 0 with its winners, and `view` holds every agency's rows
/// once, in its file's order, and nothing else. A failed agency's message
/// carries every server's log too (what each replica saw of the stream).
fn check_outcome(view: &Path, summaries: &[AgencySummary], clients: &mut [Proc], servers: &[Proc]) {
    for c in clients.iter_mut() {
        let status = c.wait(RUN);
        if !status.success() {
            let logs: Vec<String> = servers
                .iter()
                .map(|s| {
                    let quiet = |l: &&str| !l.contains("action: apuesta_recibida | result: success");
                    format!("---- {}:\n{}", s.name, s.lines.dump().lines().filter(quiet).collect::<Vec<_>>().join("\n"))
                })
                .collect();
            panic!("{} failed:\n{}\n{}", c.name, c.lines.dump(), logs.join("\n"));
        }
    }
    let mut by_agency = stored_by_agency(view);
    for (summary, client) in summaries.iter().zip(clients.iter()) {
        let want = input_rows(&summary.path);
        let got = by_agency.remove(&summary.agency.to_string()).unwrap_or_default();
        assert_eq!(
            got.len(),
            want.len(),
            "{}: agency {}: {} of {} rows",
            view.display(),
            summary.agency,
            got.len(),
            want.len()
        );
        assert!(
            got == want,
            "{}: agency {}'s rows differ from its file (order or content)",
            view.display(),
            summary.agency
        );
        assert_eq!(winners_logged(client), Some(summary.winners), "{}", client.name);
    }
    assert!(by_agency.is_empty(), "rows of unknown agencies: {:?}", by_agency.keys());
}

/// The head of the (first) sorteo line of `server`, which must count `total` bets.
fn sorteo_head(server: &Proc, total: u64) -> String {
    let line = server
        .lines
        .wait_for("action: sorteo | result: success", Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{} did not draw:\n{}", server.name, server.lines.dump()));
    assert!(line.contains(&format!("bets: {total} ")), "{}: {line}", server.name);
    head_of(&line).unwrap_or_else(|| panic!("{}: no head in {line}", server.name))
}

/// The auditor's recomputation from a view's files gives `head` over `total` bets.
fn verify_view(dir: &Path, view: &Path, agencies: u32, total: u64, head: &str) {
    let out = std::process::Command::new(VERIFY)
        .args(["--store", &view.display().to_string(), "--agencies", &agencies.to_string()])
        .args(["--key", &chain_key_path(dir).display().to_string()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains(&format!("bets: {total} ")) && out.contains(&format!("head: {head} ")), "{out}");
}

#[test]
fn a_nats_node_and_a_server_killed_mid_ingest_lose_nothing_and_store_nothing_twice() {
    const AGENCIES: u32 = 6;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, AGENCIES, 12_000, 11, 7574).unwrap();
    let total: u64 = summaries.iter().map(|s| s.bets).sum();
    let mut cluster = Cluster::start(&dir.path().join("nats"), 3);
    let urls = cluster.urls();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let names = ["server1", "server2", "server3"];
    let mut servers: Vec<Proc> =
        (0..3).map(|i| replica(dir.path(), names[i], ports[i], AGENCIES, &urls, "kill")).collect();
    let mut clients = agencies_over(dir.path(), &data, AGENCIES, &ports);

    wait_for_a_fifth(&view_of(dir.path(), "server2"), total);
    let took: Vec<usize> =
        servers.iter().map(|s| s.lines.count("action: apuesta_recibida | result: success")).collect();
    cluster.kill_node(1);
    servers[0].signal("KILL");
    servers[0].wait(Duration::from_secs(10));
    println!("nats2 and server1 SIGKILLed; batches per server before: {took:?}");
    assert!(took[0] > 0, "the killed server took no batch: {took:?}");

    // Started again on the same port, server1 rebuilds its view from the stream.
    std::thread::sleep(Duration::from_millis(500));
    servers[0] = replica(dir.path(), "server1", ports[0], AGENCIES, &urls, "kill");

    check_outcome(&view_of(dir.path(), "server2"), &summaries, &mut clients, &servers);
    assert!(clients.iter().any(|c| c.lines.count("action: reconnect") > 0), "no agency had to move");
    let mut heads = std::collections::BTreeSet::new();
    for (name, server) in names.iter().zip(&servers) {
        heads.insert(sorteo_head(server, total));
        let view = view_of(dir.path(), name);
        assert_eq!(rows_in(&view), total, "{name}'s view");
        assert_eq!(stored_rows(&view), stored_rows(&view_of(dir.path(), "server2")), "{name}'s view differs");
    }
    assert_eq!(heads.len(), 1, "the replicas' sorteo lines differ in their heads: {heads:?}");
    let head = heads.into_iter().next().unwrap();
    verify_view(dir.path(), &view_of(dir.path(), "server3"), AGENCIES, total, &head);
    for s in servers.iter_mut() {
        s.signal("TERM");
        assert!(s.wait(Duration::from_secs(10)).success(), "{}:\n{}", s.name, s.lines.dump());
    }
}

#[test]
fn a_lost_quorum_for_a_few_seconds_refuses_batches_and_then_every_agency_finishes() {
    const AGENCIES: u32 = 4;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, AGENCIES, 12_000, 5, 7574).unwrap();
    let total: u64 = summaries.iter().map(|s| s.bets).sum();
    let mut cluster = Cluster::start(&dir.path().join("nats"), 3);
    let urls = cluster.urls();
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let mut servers: Vec<Proc> =
        (0..2).map(|i| replica(dir.path(), &format!("server{}", i + 1), ports[i], AGENCIES, &urls, "quorum")).collect();
    let mut clients = agencies_over(dir.path(), &data, AGENCIES, &ports);

    let view = view_of(dir.path(), "server1");
    wait_for_a_fifth(&view, total);
    cluster.kill_node(0);
    cluster.kill_node(2);
    let before = rows_in(&view);
    // Longer than a publish waits for its ack: what was in flight at the kill
    // is refused (not held until the quorum is back).
    let outage = ACK_TIMEOUT + Duration::from_secs(2);
    std::thread::sleep(outage);
    // With one node of three no publish is acked: the views stop growing (a
    // publish the quorum held just before may still land right after the kill).
    let during = rows_in(&view);
    assert!(during < total, "every row went in while the quorum was lost ({before} -> {during})");
    cluster.start_node(0);
    cluster.start_node(2);
    println!("quorum lost for {outage:?} at {before} rows (then {during}); nodes 1 and 3 started again");

    check_outcome(&view, &summaries, &mut clients, &servers);
    let refused: usize = servers.iter().map(|s| s.lines.count("replicated store unavailable")).sum();
    let retried: usize = clients.iter().map(|c| c.lines.count("unavailable")).sum();
    println!("refusals logged by servers: {refused}, agency lines naming unavailable: {retried}");
    for s in &servers {
        for line in s.lines.all().iter().filter(|l| l.contains("action: follow_stream | result: fail")) {
            println!("{}: {line}", s.name);
        }
    }
    assert!(refused > 0, "no batch was refused while the quorum was lost");
    let heads: std::collections::BTreeSet<String> = servers.iter().map(|s| sorteo_head(s, total)).collect();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert_eq!(stored_rows(&view), stored_rows(&view_of(dir.path(), "server2")));
    for s in servers.iter_mut() {
        s.signal("TERM");
        assert!(s.wait(Duration::from_secs(10)).success(), "{}:\n{}", s.name, s.lines.dump());
    }
}

/// Deletes every consumer of `stream` (what a node restart does to an ordered
/// consumer's memory state); returns how many there were.
fn delete_consumers(urls: &str, stream: &str) -> usize {
    use futures_util::StreamExt;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(urls.split(',').collect::<Vec<_>>()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream(stream).await.unwrap();
        let names: Vec<String> = stream.consumer_names().filter_map(|n| async { n.ok() }).collect().await;
        for name in &names {
            stream.delete_consumer(name).await.unwrap();
        }
        names.len()
    })
}

#[test]
fn a_stream_reader_whose_consumer_vanishes_is_replaced_and_the_draw_runs() {
    const AGENCIES: u32 = 2;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, AGENCIES, 20_000, 7, 7574).unwrap();
    let total: u64 = summaries.iter().map(|s| s.bets).sum();
    let cluster = Cluster::start(&dir.path().join("nats"), 1);
    let urls = cluster.urls();
    let port = free_port();
    let mut server = replica(dir.path(), "server1", port, AGENCIES, &urls, "vanish");
    let mut clients = agencies_over(dir.path(), &data, AGENCIES, &[port]);
    let view = view_of(dir.path(), "server1");
    wait_for_a_fifth(&view, total);
    // The reader's consumer is gone, the client library hears nothing for
    // 10 s; the batches in flight still land in the stream, so the view lags
    // its end without moving, and the store replaces the reader.
    assert_eq!(delete_consumers(&urls, "vanish"), 1, "the replica reads through one consumer");
    check_outcome(&view, &summaries, &mut clients, std::slice::from_ref(&server));
    let replaced = server.lines.count("the stream reader made no progress behind the stream's end");
    assert!(replaced >= 1, "the stalled reader was not replaced:\n{}", server.lines.dump());
    assert_eq!(rows_in(&view), total);
    sorteo_head(&server, total);
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(10)).success(), "{}", server.lines.dump());
}

#[test]
fn an_unreachable_nats_url_at_start_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("nats://127.0.0.1:{}", free_port());
    let mut env = server_env(dir.path(), 0, 1, &[]);
    env.extend([("SERVER_STORAGE_BACKEND", "jetstream".to_string()), ("SERVER_NATS_URLS", url.clone())]);
    let mut server = Proc::spawn(SERVER, "server", &env, dir.path());
    let status = server.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(4), "{}", server.lines.dump());
    let log = server.lines.dump();
    assert!(log.contains("action: boot | result: fail") && log.contains(&url), "{log}");
}

#[test]
fn the_link_to_nats_speaks_tls_verified_against_the_deployment_ca() {
    const AGENCIES: u32 = 2;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, AGENCIES, 2_000, 3, 7574).unwrap();
    let pki = ensure_pki(dir.path());
    let cluster = Cluster::start_with(&dir.path().join("nats"), 1, Some((&pki.server_cert, &pki.server_key)));
    let url = format!("tls://localhost:{}", cluster.nodes[0].port);

    // Another deployment's CA: the node's certificate does not chain to it.
    let other = tempfile::tempdir().unwrap();
    let stranger = ensure_pki(other.path()).ca_cert;
    let mut env = server_env(dir.path(), 0, AGENCIES, &[]);
    env.extend([
        ("SERVER_STORAGE_BACKEND", "jetstream".to_string()),
        ("SERVER_NATS_URLS", url.clone()),
        ("SERVER_NATS_CA", stranger.display().to_string()),
    ]);
    let mut refused = Proc::spawn(SERVER, "server-wrong-ca", &env, dir.path());
    assert_eq!(refused.wait(Duration::from_secs(60)).code(), Some(4), "{}", refused.lines.dump());
    assert!(refused.lines.dump().contains(&url), "{}", refused.lines.dump());

    env.retain(|(k, _)| *k != "SERVER_NATS_CA");
    env.push(("SERVER_NATS_CA", pki.ca_cert.display().to_string()));
    let port = free_port();
    env.retain(|(k, _)| *k != "SERVER_PORT");
    env.push(("SERVER_PORT", port.to_string()));
    let mut server = Proc::spawn(SERVER, "server", &env, dir.path());
    server
        .lines
        .wait_for("action: accept_connections | result: in_progress", Duration::from_secs(40))
        .unwrap_or_else(|| panic!("the server did not start:\n{}", server.lines.dump()));
    let mut clients = agencies_over(dir.path(), &data, AGENCIES, &[port]);
    check_outcome(&dir.path().join("bets.csv"), &summaries, &mut clients, std::slice::from_ref(&server));
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(10)).success(), "{}", server.lines.dump());
}

#[test]
fn a_second_server_on_the_same_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, _) = start_server(dir.path(), 1, &[]);
    let mut second = Proc::spawn(SERVER, "second", &server_env(dir.path(), 0, 1, &[]), dir.path());
    assert_eq!(second.wait(Duration::from_secs(20)).code(), Some(1), "{}", second.lines.dump());
    let log = second.lines.dump();
    assert!(log.contains("bets.csv.lock") && log.contains("storage.backend: jetstream"), "{log}");
    first.signal("TERM");
    assert!(first.wait(Duration::from_secs(10)).success());
    // Once the first is gone the store is free again.
    let (mut again, _) = start_server(dir.path(), 1, &[]);
    again.signal("TERM");
    assert!(again.wait(Duration::from_secs(10)).success());
}
