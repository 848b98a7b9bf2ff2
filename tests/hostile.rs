//! The defects a hostile tester found, each with the real binaries on 127.0.0.1:
//! bad configuration, an unterminated quote, and two processes claiming one agency.

mod util;

use bytes::BytesMut;
use loteria::auth::AuthKey;
use loteria::datagen;
use loteria::net::{Request, Response};
use std::net::TcpStream;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use util::*;

const RUN: Duration = Duration::from_secs(120);

fn stop_server(mut server: Proc) -> Proc {
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(5)).success(), "server exit code:\n{}", server.lines.dump());
    server
}

#[test]
fn zero_agencies_and_a_list_where_a_path_belongs_stop_the_server_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let env = |extra: &[(&'static str, &str)]| {
        let mut env: Vec<(&'static str, String)> = vec![("SERVER_PORT", "0".into()), ("SERVER_AUTH", "off".into())];
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        env
    };
    let mut server = Proc::spawn(SERVER, "server", &env(&[("SERVER_AGENCIES", "0")]), dir.path());
    assert_eq!(server.wait(Duration::from_secs(10)).code(), Some(2));
    let log = server.lines.dump();
    assert!(log.contains("action: config | result: fail") && log.contains("server.agencies"), "{log}");

    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("config/server.yaml"), "server:\n  agencies: 1\nstorage:\n  path: [a, b]\n")
        .unwrap();
    let mut server = Proc::spawn(SERVER, "server", &env(&[]), dir.path());
    assert_eq!(server.wait(Duration::from_secs(10)).code(), Some(2));
    let log = server.lines.dump();
    assert!(log.contains("action: config | result: fail") && log.contains("storage.path"), "{log}");
    assert!(log.contains("a list where a single value belongs"), "{log}");
    assert!(!dir.path().join("<list>").exists(), "a file named after the list was made");

    std::fs::write(dir.path().join("config/server.yaml"), "server:\n  agencies:\n    count: 3\n").unwrap();
    let mut server = Proc::spawn(SERVER, "server", &env(&[]), dir.path());
    assert_eq!(server.wait(Duration::from_secs(10)).code(), Some(2));
    let log = server.lines.dump();
    assert!(log.contains("server.agencies") && log.contains("a mapping"), "{log}");
}

#[test]
fn an_unterminated_quote_costs_its_row_and_the_rows_after_it_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agency-1.csv");
    let mut rows: Vec<String> = (0..300).map(|i| format!("Ana,Pérez,{},1990-01-01,{}", 1000 + i, i)).collect();
    rows[4] = "Ana,\"Pérez,1004,1990-01-01,4".to_string();
    std::fs::write(&data, rows.join("\r\n") + "\r\n").unwrap();
    let (server, port) = start_server(dir.path(), 1, &[]);
    let mut client = start_client(dir.path(), 1, port, &data, &[]);
    assert!(client.wait(RUN).success(), "{}", client.lines.dump());
    let log = client.lines.dump();
    assert!(
        log.contains("action: apuesta_invalida | result: fail")
            && log.contains("agency-1.csv:5: unterminated quote: the quote opened on line 5 runs over")
            && log.contains("reading goes on at line 6"),
        "{log}"
    );
    assert!(log.contains("action: apuestas_enviadas | result: success | cantidad: 299 | rechazadas: 1"), "{log}");
    stop_server(server);
    let stored = stored_by_agency(&dir.path().join("bets.csv"));
    let documents: Vec<&str> = stored["1"].iter().map(|r| r[2].as_str()).collect();
    assert_eq!(documents.len(), 299);
    assert!(!documents.contains(&"1004") && documents.contains(&"1005") && documents.contains(&"1299"));
}

/// Wrong proofs claiming `agency` from 127.0.0.1, from `threads` threads, until `stop`.
fn flood(port: u16, agency: u32, threads: usize, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<usize>> {
    (0..threads)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                        let mut buf = BytesMut::new();
                        send_request(&mut s, &Request::AuthHello { agency });
                        if let Some(Response::Challenge { nonce }) = read_reply(&mut s, &mut buf) {
                            let wrong = AuthKey::from_bytes([0x42; 32]);
                            send_request(&mut s, &Request::AuthProof { mac: wrong.proof(&nonce, agency) });
                            let _ = read_reply(&mut s, &mut buf);
                            sent += 1;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                sent
            })
        })
        .collect()
}

/// An agency authenticating from the address of a flood of wrong proofs:
/// returns how long from its start until the server logged its handshake,
/// and the flood's attempts. `claimed` is the agency the flood claims.
fn honest_agency_behind_a_flood(claimed: u32, attempts: &str) -> (Duration, usize, ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, 2, 500, 29, 7574).unwrap();
    let (server, port) = start_server(dir.path(), 2, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let threads = flood(port, claimed, 8, stop.clone());
    // Let the flood fill its lane's queue first.
    server.lines.wait_for("too many failed attempts from this address", Duration::from_secs(20));
    let started = Instant::now();
    let env = [("CLI_RETRY_MAX_ATTEMPTS", attempts.to_string())];
    let mut client = start_client(dir.path(), 1, port, &summaries[0].path, &env);
    let waited = server
        .lines
        .wait_for("action: auth | result: success | ip: 127.0.0.1", Duration::from_secs(90))
        .map(|_| started.elapsed());
    stop.store(true, Ordering::Relaxed);
    let flooded: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let mut other = start_client(dir.path(), 2, port, &summaries[1].path, &[]);
    let status = client.wait(RUN);
    other.wait(RUN);
    let log = format!("{}\nserver:\n{}", client.lines.dump(), server.lines.dump());
    stop_server(server);
    (waited.unwrap_or(Duration::MAX), flooded, status, log)
}

/// A flood claiming agency 2 from agency 1's address does not hold agency 1 up:
/// failures are counted per (address, agency).
#[test]
fn an_honest_agency_behind_a_flood_for_another_agency_gets_in() {
    let (waited, flooded, status, log) = honest_agency_behind_a_flood(2, "30");
    assert!(status.success(), "{log}");
    assert!(flooded > 0);
    // Its handshake was checked at once, not queued behind the flood's.
    let line = log.lines().find(|l| l.contains("action: auth | result: success") && l.contains("agency: 1")).unwrap();
    assert!(line.contains("delayed_ms: 0"), "{line}");
    println!(
        "flood for agency 2 ({flooded} wrong proofs): agency 1 authenticated {} ms after its start",
        waited.as_millis()
    );
}

/// A measurement, not a check: a flood claiming the honest agency's own number
/// from its address (the case no throttle can tell apart, see docs/auth.md).
#[test]
#[ignore = "measurement: prints the wait behind a flood claiming the same agency"]
fn measure_an_honest_agency_behind_a_flood_for_itself() {
    let (waited, flooded, status, _) = honest_agency_behind_a_flood(1, "1000");
    println!("flood for agency 1 ({flooded} wrong proofs): agency 1 authenticated after {waited:?}, exit {status}");
}

/// `rows` bets whose documents start with `tag`, as an agency file.
fn agency_file(path: &std::path::Path, tag: u32, rows: u32) {
    let text: String = (0..rows).map(|i| format!("Ana,Pérez,{tag}{i:06},1990-01-01,{}\n", (i * 7) % 10_000)).collect();
    std::fs::write(path, text).unwrap();
}

/// The stored rows of agency 1, as the file's rows (without the agency).
fn stored_of_agency_1(dir: &std::path::Path) -> Vec<Vec<String>> {
    stored_by_agency(&dir.join("bets.csv")).remove("1").unwrap_or_default()
}

/// Two processes as agency 1 (same key), different files, at once: whichever
/// reports success has exactly its file stored; a mix makes both fail.
#[test]
fn two_processes_as_one_agency_never_succeed_over_mixed_rows() {
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
        agency_file(&a, 1, 3000);
        agency_file(&b, 2, 3000);
        let (server, port) = start_server(dir.path(), 1, &[]);
        let env = [("CLI_BATCH_MAXAMOUNT", "20".to_string()), ("CLI_BATCH_WINDOW", "2".to_string())];
        let mut pa = start_client(dir.path(), 1, port, &a, &env);
        let mut pb = start_client(dir.path(), 1, port, &b, &env);
        let (sa, sb) = (pa.wait(RUN), pb.wait(RUN));
        let server = stop_server(server);
        let stored = stored_of_agency_1(dir.path());
        let logs = format!("a:\n{}\nb:\n{}\nserver:\n{}", pa.lines.dump(), pb.lines.dump(), server.lines.dump());
        for (status, file) in [(sa, &a), (sb, &b)] {
            if status.success() {
                assert_eq!(stored, input_rows(file), "round {round}: a process succeeded over other rows\n{logs}");
            }
        }
        assert!(!(sa.success() && sb.success()), "round {round}: both succeeded\n{logs}");
        let fenced = server.lines.count("action: fence | result: success");
        let why =
            |p: &Proc| p.lines.all().into_iter().filter(|l| l.contains("action: exit")).collect::<Vec<_>>().join(" ");
        println!(
            "round {round}: a {sa}, b {sb}, {} rows stored, {fenced} fences; {} / {}",
            stored.len(),
            why(&pa),
            why(&pb)
        );
    }
}

/// An agency finished; a second process claims it with another file of the same
/// length: the rows it resends to check its resume point are refused as a
/// conflicting batch, on both sides, and it exits non-zero.
#[test]
fn a_second_file_for_a_finished_agency_is_a_conflicting_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
    agency_file(&a, 1, 500);
    agency_file(&b, 2, 500);
    let (server, port) = start_server(dir.path(), 1, &[]);
    let mut first = start_client(dir.path(), 1, port, &a, &[]);
    assert!(first.wait(RUN).success(), "{}", first.lines.dump());
    let mut second = start_client(dir.path(), 1, port, &b, &[("CLI_RETRY_MAX_ATTEMPTS", "2".into())]);
    let status = second.wait(RUN);
    let log = second.lines.dump();
    assert!(!status.success(), "{log}");
    assert!(log.contains("result: fail") && log.contains("conflicting batch"), "{log}");
    assert!(!log.contains("action: consulta_ganadores | result: success"), "{log}");
    let server_line = server.lines.wait_for("conflicting batch", Duration::from_secs(5)).expect("logged by the server");
    assert!(server_line.contains("result: fail"), "{server_line}");
    let server = stop_server(server);
    assert_eq!(stored_of_agency_1(dir.path()), input_rows(&a), "{}", server.lines.dump());

    // After a restart the store rebuilt its digests from the file: still refused.
    let (server, port) = start_server(dir.path(), 1, &[]);
    let mut third = start_client(dir.path(), 1, port, &b, &[("CLI_RETRY_MAX_ATTEMPTS", "2".into())]);
    assert!(!third.wait(RUN).success());
    assert!(third.lines.dump().contains("conflicting batch"), "{}", third.lines.dump());
    // And the right file is still taken as the agency's.
    let mut again = start_client(dir.path(), 1, port, &a, &[]);
    assert!(again.wait(RUN).success(), "{}", again.lines.dump());
    stop_server(server);
}
