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
