//! End-to-end tests: the real `server` and `client` binaries on 127.0.0.1.

mod util;

use bytes::BytesMut;
use loteria::bet::{Bet, Date};
use loteria::datagen;
use loteria::net::{ClientCodec, NackCode, Request, Response};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::codec::Decoder;
use util::*;

const RUN: Duration = Duration::from_secs(120);

fn expected_winners(dir: &Path) -> HashMap<u32, Vec<String>> {
    let mut map: HashMap<u32, Vec<String>> = HashMap::new();
    for line in std::fs::read_to_string(dir.join("expected-winners.csv")).unwrap().lines() {
        let (agency, doc) = line.split_once(',').unwrap();
        map.entry(agency.parse().unwrap()).or_default().push(doc.to_string());
    }
    map
}

/// Runs `agencies` clients over `data/agency-K.csv` against a fresh server and
/// returns (server, clients) after all clients exited 0.
fn full_run(dir: &Path, data: &Path, agencies: u32) -> (Proc, Vec<Proc>) {
    full_run_with(dir, data, agencies, &[])
}

/// [`full_run`] with `env` added to every agency's environment.
fn full_run_with(dir: &Path, data: &Path, agencies: u32, env: &[(&str, String)]) -> (Proc, Vec<Proc>) {
    let (server, port) = start_server(dir, agencies, &[]);
    let mut clients: Vec<Proc> =
        (1..=agencies).map(|id| start_client(dir, id, port, &data.join(format!("agency-{id}.csv")), env)).collect();
    for c in &mut clients {
        let status = c.wait(RUN);
        assert!(status.success(), "{} failed:\n{}\nserver:\n{}", c.name, c.lines.dump(), server.lines.dump());
    }
    (server, clients)
}

fn stop_server(mut server: Proc) -> Proc {
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(5)).success(), "server exit code:\n{}", server.lines.dump());
    server
}

#[test]
fn five_agencies_on_generated_data_get_only_their_own_winners() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, 5, 20_000, 11, 7574).unwrap();
    let expected = expected_winners(&data);
    let (server, clients) = full_run(dir.path(), &data, 5);

    for (client, summary) in clients.iter().zip(&summaries) {
        assert_eq!(winners_logged(client), Some(summary.winners), "{}", client.name);
    }
    let server = stop_server(server);
    assert_eq!(server.lines.count("action: sorteo | result: success"), 1);
    assert!(server.lines.count("action: shutdown | result: success") == 1);

    let rows = stored_rows(&dir.path().join("bets.csv"));
    assert_eq!(rows.len(), 100_000);
    // Every row of every agency file is stored exactly once, fields intact.
    for summary in &summaries {
        let agency = summary.agency.to_string();
        let stored: Vec<Vec<String>> =
            rows.iter().filter(|r| r[0] == *agency).map(|r| r.iter().skip(1).map(str::to_string).collect()).collect();
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_path(&summary.path).unwrap();
        let input: Vec<Vec<String>> =
            reader.records().map(|r| r.unwrap().iter().map(str::to_string).collect()).collect();
        assert_eq!(stored, input, "agency {agency}");
        let won: Vec<String> =
            rows.iter().filter(|r| r[0] == *agency && &r[5] == "7574").map(|r| r[3].to_string()).collect();
        assert_eq!(won, expected.get(&summary.agency).cloned().unwrap_or_default());
    }
}

#[test]
#[ignore = "needs the course dataset in ../shared/datasets/tp0: `make unit` runs it when the folder \
            exists or REQUIRE_DATASET is set (CI), or run `cargo test --test system -- --ignored course_dataset`"]
fn course_dataset_gives_the_known_winners() {
    // Asked for by name: a missing dataset is a failure, never a pass.
    let data = course_dataset().expect("the course dataset ../shared/datasets/tp0 (agency-1.csv ..) is absent");
    let dir = tempfile::tempdir().unwrap();
    let (server, clients) = full_run(dir.path(), &data, 5);
    let winners: Vec<Option<u64>> = clients.iter().map(winners_logged).collect();
    assert_eq!(winners, vec![Some(2), Some(3), Some(3), Some(2), Some(0)]);
    let server = stop_server(server);
    assert_eq!(server.lines.count("action: sorteo | result: success"), 1);
    let rows = stored_rows(&dir.path().join("bets.csv"));
    assert_eq!(rows.len(), 78_697);
    let mut docs: Vec<&str> = rows.iter().filter(|r| &r[5] == "7574").map(|r| r.get(3).unwrap()).collect();
    docs.sort_unstable();
    let mut known = vec![
        "30876370", "24807259", "33791469", "31660107", "24813860", "22737492", "23328212", "28188111", "34963649",
        "35635602",
    ];
    known.sort_unstable();
    assert_eq!(docs, known);
}

#[test]
fn sigterm_mid_ingestion_shuts_the_server_down_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    datagen::generate(&data, 2, 300_000, 5, 7574).unwrap();
    let (mut server, port) = start_server(dir.path(), 2, &[]);
    let mut clients: Vec<Proc> = (1..=2)
        .map(|id| {
            start_client(
                dir.path(),
                id,
                port,
                &data.join(format!("agency-{id}.csv")),
                &[("CLI_BATCH_MAXAMOUNT", "50".into()), ("CLI_RETRY_MAX_ATTEMPTS", "2".into())],
            )
        })
        .collect();
    server.lines.wait_for("apuesta_recibida", Duration::from_secs(30)).expect("ingestion started");
    std::thread::sleep(Duration::from_millis(150));
    let signalled = Instant::now();
    server.signal("TERM");
    let status = server.wait(Duration::from_secs(10));
    let took = signalled.elapsed();
    assert!(status.success(), "exit code {status:?}:\n{}", server.lines.dump());
    assert!(took <= Duration::from_secs(2), "shutdown took {took:?}");
    let log = server.lines.all();
    let pos = |needle: &str| log.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?}"));
    let order = [
        pos("action: shutdown | result: in_progress"),
        pos("action: close_listener | result: success"),
        pos("action: close_connections"),
        pos("action: close_store | result: success"),
        pos("action: shutdown | result: success"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "shutdown steps out of order: {order:?}");
    assert_eq!(server.lines.count("action: sorteo"), 0);
    for c in &mut clients {
        assert!(!c.wait(Duration::from_secs(120)).success(), "{} cannot finish without a server", c.name);
    }
    let rows = stored_rows(&dir.path().join("bets.csv"));
    assert!(!rows.is_empty() && rows.len() < 600_000, "{} rows", rows.len());
}

#[test]
fn sigterm_stops_a_client_after_the_request_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    datagen::generate(&data, 1, 400_000, 9, 7574).unwrap();
    let (server, port) = start_server(dir.path(), 1, &[]);
    let mut client =
        start_client(dir.path(), 1, port, &data.join("agency-1.csv"), &[("CLI_BATCH_MAXAMOUNT", "20".into())]);
    server.lines.wait_for("apuesta_recibida", Duration::from_secs(30)).expect("ingestion started");
    client.signal("TERM");
    assert!(client.wait(Duration::from_secs(5)).success(), "{}", client.lines.dump());
    assert!(client.lines.wait_for("action: shutdown | result: success", Duration::from_secs(1)).is_some());
    assert!(client.lines.count("action: close_connection | result: success") == 1, "{}", client.lines.dump());
    server.lines.wait_for("action: close_connection", Duration::from_secs(5)).expect("server saw the close");
    let server = stop_server(server);
    assert_eq!(server.lines.count("action: sorteo"), 0);
    let rows = stored_rows(&dir.path().join("bets.csv"));
    assert!(rows.len() < 400_000 && rows.len().is_multiple_of(20), "whole batches only: {}", rows.len());
}

fn frame(req: &Request) -> Vec<u8> {
    let mut buf = BytesMut::new();
    req.encode(&mut buf).unwrap();
    buf.to_vec()
}

/// Reads one answer (bounded by the socket's read timeout).
fn read_response(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<Response> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(item) = ClientCodec.decode(buf).unwrap() {
            return Some(item.unwrap());
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn bet(doc: &str, number: u16) -> Bet {
    Bet {
        first_name: "Ana María".into(),
        last_name: "Núñez, \"la\" | Peña".into(),
        document: doc.into(),
        birthdate: Date::new(1990, 5, 17).unwrap(),
        number,
    }
}

#[test]
fn garbage_and_oversized_frames_never_disturb_a_well_behaved_agency() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, 1, 30_000, 3, 7574).unwrap();
    let (server, port) = start_server(dir.path(), 1, &[]);
    let mut client =
        start_client(dir.path(), 1, port, &data.join("agency-1.csv"), &[("CLI_BATCH_MAXAMOUNT", "10".into())]);

    // Oversized length: refused with a Nack and the connection is closed.
    let mut big = connect(port);
    big.write_all(&[0x03, 0x7f, 0xff, 0xff, 0xff]).unwrap();
    let mut buf = BytesMut::new();
    match read_response(&mut big, &mut buf) {
        Some(Response::Nack { code: NackCode::Malformed, message, .. }) => {
            assert!(message.contains("maximum is 8192"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(read_response(&mut big, &mut buf).is_none(), "closed after an unreadable frame");

    // Unknown type and random bytes: Nack, connection stays usable until the stream breaks.
    let mut junk = connect(port);
    junk.write_all(&[0x42, 0, 0, 0, 3, 1, 2, 3]).unwrap();
    let mut buf = BytesMut::new();
    assert!(matches!(read_response(&mut junk, &mut buf), Some(Response::Nack { code: NackCode::Malformed, .. })));
    junk.write_all(&frame(&Request::Echo(bytes::Bytes::from_static(b"still here")))).unwrap();
    assert_eq!(read_response(&mut junk, &mut buf), Some(Response::Echo(bytes::Bytes::from_static(b"still here"))));
    let mut rng = datagen::Rng::new(12345);
    for _ in 0..20 {
        let mut g = connect(port);
        let noise: Vec<u8> = (0..2000).map(|_| rng.next_u64() as u8).collect();
        let _ = g.write_all(&noise);
    }
    // A half frame and a hang-up.
    let mut half = connect(port);
    half.write_all(&[0x03, 0, 0, 0x10]).unwrap();
    drop(half);

    assert!(client.wait(RUN).success(), "{}\nserver:\n{}", client.lines.dump(), server.lines.dump());
    assert_eq!(winners_logged(&client), Some(summaries[0].winners));
    assert!(server.lines.count("action: receive_message | result: fail") >= 3);
    assert!(server.lines.all().iter().any(|l| l.contains("result: fail") && l.contains("ip: 127.0.0.1:")));
    stop_server(server);
    assert_eq!(stored_rows(&dir.path().join("bets.csv")).len(), 30_000);
}

#[test]
fn a_connection_speaks_for_one_agency_and_the_rules_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let (server, port) = start_server(dir.path(), 2, &[]);
    let (mut a1, mut buf) = connect_as(port, dir.path(), 1);
    let ask = |s: &mut TcpStream, buf: &mut BytesMut, req: Request| {
        s.write_all(&frame(&req)).unwrap();
        read_response(s, buf).unwrap()
    };
    assert_eq!(
        ask(
            &mut a1,
            &mut buf,
            Request::Batch { agency: 1, first_index: 0, bets: vec![bet("00000042", 7574), bet("2", 1)].into() }
        ),
        Response::Ack { index: 0, count: 2 }
    );
    // The same batch again (a retry) is acknowledged and not stored twice.
    assert_eq!(
        ask(
            &mut a1,
            &mut buf,
            Request::Batch { agency: 1, first_index: 0, bets: vec![bet("00000042", 7574), bet("2", 1)].into() }
        ),
        Response::Ack { index: 0, count: 2 }
    );
    // A gap is refused.
    assert!(matches!(
        ask(&mut a1, &mut buf, Request::Batch { agency: 1, first_index: 5, bets: vec![bet("3", 1)].into() }),
        Response::Nack { code: NackCode::OutOfOrder, index: 5, .. }
    ));
    // Another agency on this connection is refused: it can neither send, close nor read.
    assert!(matches!(
        ask(&mut a1, &mut buf, Request::Done { agency: 2, total: 0 }),
        Response::Nack { code: NackCode::WrongAgency, .. }
    ));
    assert!(matches!(
        ask(&mut a1, &mut buf, Request::WinnersRequest { agency: 2 }),
        Response::Nack { code: NackCode::WrongAgency, .. }
    ));
    // Agencies outside 1..=2 are refused.
    assert!(matches!(
        ask(&mut a1, &mut buf, Request::Bet { agency: 9, bet: bet("1", 1).into() }),
        Response::Nack { code: NackCode::UnknownAgency, .. }
    ));
    // A Done that announces more bets than stored is refused; the right one is acked, twice.
    assert!(matches!(
        ask(&mut a1, &mut buf, Request::Done { agency: 1, total: 3 }),
        Response::Nack { code: NackCode::Incomplete, .. }
    ));
    assert_eq!(ask(&mut a1, &mut buf, Request::Done { agency: 1, total: 2 }), Response::Ack { index: 2, count: 0 });
    assert_eq!(ask(&mut a1, &mut buf, Request::Done { agency: 1, total: 2 }), Response::Ack { index: 2, count: 0 });
    assert!(matches!(
        ask(&mut a1, &mut buf, Request::Batch { agency: 1, first_index: 2, bets: vec![bet("3", 1)].into() }),
        Response::Nack { code: NackCode::AlreadyDone, .. }
    ));
    // A bet with an invalid field inside a batch: the whole batch is refused.
    let (mut a2, mut buf2) = connect_as(port, dir.path(), 2);
    let mut bad = frame(&Request::Batch { agency: 2, first_index: 0, bets: vec![bet("7", 1), bet("8", 1)].into() });
    let n = bad.len();
    bad[n - 2..].copy_from_slice(&10_000u16.to_be_bytes());
    a2.write_all(&bad).unwrap();
    assert!(matches!(read_response(&mut a2, &mut buf2), Some(Response::Nack { code: NackCode::InvalidBet, .. })));
    server.lines.wait_for("apuesta_recibida | result: fail | cantidad: 2", Duration::from_secs(5)).expect("fail line");

    // Agency 1 asks for winners before agency 2 is done: the answer waits for the draw.
    a1.write_all(&frame(&Request::WinnersRequest { agency: 1 })).unwrap();
    a1.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    assert!(read_response(&mut a1, &mut buf).is_none(), "no answer before the draw");
    a1.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A second request while one waits is refused (answered in order, after the first).
    a1.write_all(&frame(&Request::WinnersRequest { agency: 1 })).unwrap();
    assert_eq!(
        ask(&mut a2, &mut buf2, Request::Batch { agency: 2, first_index: 0, bets: vec![bet("7", 1)].into() }),
        Response::Ack { index: 0, count: 1 }
    );
    assert_eq!(ask(&mut a2, &mut buf2, Request::Done { agency: 2, total: 1 }), Response::Ack { index: 1, count: 0 });
    assert_eq!(
        read_response(&mut a1, &mut buf),
        Some(Response::Winners { agency: 1, more: false, documents: vec!["00000042".into()] })
    );
    assert!(matches!(read_response(&mut a1, &mut buf), Some(Response::Nack { code: NackCode::AlreadyWaiting, .. })));
    assert_eq!(
        ask(&mut a2, &mut buf2, Request::WinnersRequest { agency: 2 }),
        Response::Winners { agency: 2, more: false, documents: vec![] }
    );
    let server = stop_server(server);
    assert_eq!(server.lines.count("action: sorteo | result: success"), 1);
    let rows = stored_rows(&dir.path().join("bets.csv"));
    assert_eq!(rows.len(), 3);
    assert_eq!(&rows[0][2], "Núñez, \"la\" | Peña");
}

#[test]
fn single_bet_mode_stores_one_bet_with_its_leading_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let (server, port) = start_server(dir.path(), 5, &[]);
    let env = [
        ("NOMBRE", "Santiago Lionel".to_string()),
        ("APELLIDO", "Lorca".to_string()),
        ("DOCUMENTO", "00304877".to_string()),
        ("NACIMIENTO", "1999-03-17".to_string()),
        ("NUMERO", "7574".to_string()),
    ];
    let mut client = start_client(dir.path(), 3, port, Path::new("/nonexistent"), &env);
    assert!(client.wait(RUN).success(), "{}", client.lines.dump());
    assert!(
        client.lines.count("action: apuesta_enviada | result: success | dni: 00304877 | numero: 7574") == 1,
        "{}",
        client.lines.dump()
    );
    server
        .lines
        .wait_for("action: apuesta_almacenada | result: success | dni: 00304877 | numero: 7574", Duration::from_secs(5))
        .expect("server line");
    stop_server(server);
    let rows = stored_rows(&dir.path().join("bets.csv"));
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].iter().collect::<Vec<_>>(),
        vec!["3", "Santiago Lionel", "Lorca", "00304877", "1999-03-17", "7574"]
    );
}

#[test]
fn invalid_rows_are_reported_with_file_and_line_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agency-1.csv");
    let rows = [
        "Ana,Pérez,1,1990-01-01,7574",
        "Bad,Date,2,1990-02-30,1",
        "Too,Few",
        "Ok,Row,00000003,2000-02-29,9999",
        "Big,Number,4,1990-01-01,12345",
    ];
    std::fs::write(&data, rows.map(|r| format!("{r}\r\n")).concat()).unwrap();
    let (server, port) = start_server(dir.path(), 1, &[]);
    let mut client = start_client(dir.path(), 1, port, &data, &[]);
    assert!(client.wait(RUN).success(), "{}", client.lines.dump());
    let log = client.lines.dump();
    for line in [2, 3, 5] {
        assert!(log.contains(&format!("agency-1.csv:{line}:")), "line {line} not reported:\n{log}");
    }
    assert!(log.contains("action: apuestas_enviadas | result: success | cantidad: 2 | rechazadas: 3"), "{log}");
    assert_eq!(winners_logged(&client), Some(1));
    stop_server(server);
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Proc::spawn(SERVER, "server", &[("SERVER_PORT", "not-a-port".into())], dir.path());
    assert_eq!(server.wait(Duration::from_secs(10)).code(), Some(2));
    let log = server.lines.dump();
    assert!(
        log.contains("action: config | result: fail") && log.contains("server.port") && log.contains("not-a-port"),
        "{log}"
    );

    let mut named = Proc::spawn(SERVER, "server", &[("SERVER_CONFIG", "/nonexistent/server.yaml".into())], dir.path());
    assert_eq!(named.wait(Duration::from_secs(10)).code(), Some(2));
    assert!(named.lines.dump().contains("/nonexistent/server.yaml"));

    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/client.yaml"),
        "server:\n  address: \"server:12345\"\nloop:\n  amount: 5\n  period: \"5s\"\nlog:\n  level: \"shouty\"\n",
    )
    .unwrap();
    let mut client = Proc::spawn(CLIENT, "client", &[("CLI_ID", "1".into())], dir.path());
    assert_eq!(client.wait(Duration::from_secs(10)).code(), Some(2));
    let log = client.lines.dump();
    assert!(log.contains("log.level") && log.contains("shouty"), "{log}");

    // Course files keep working: unknown keys are warnings.
    std::fs::write(dir.path().join("config/server.yaml"), "server:\n  port: 0\n  agencies: 1\nSERVER_IP: server\n")
        .unwrap();
    ensure_keys(dir.path(), 1);
    let mut ok = Proc::spawn(
        SERVER,
        "server",
        &[
            ("SERVER_STORAGE_PATH", dir.path().join("b.csv").display().to_string()),
            ("SERVER_AUTH_KEYS", keys_path(dir.path()).display().to_string()),
        ],
        dir.path(),
    );
    ok.lines.wait_for("accept_connections", Duration::from_secs(10)).expect("server started with a course-style file");
    assert!(ok.lines.dump().contains("WARNING  action: config | result: success | ignored_key: SERVER_IP"));
    ok.signal("TERM");
    assert!(ok.wait(Duration::from_secs(5)).success());
}

#[test]
fn two_hundred_agencies_at_once_each_get_their_own_winners() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let agencies = 200;
    let summaries = datagen::generate(&data, agencies, 300, 99, 7574).unwrap();
    let (server, port) = start_server(dir.path(), agencies, &[]);
    let quiet = [("CLI_RETRY_INITIAL_DELAY_MS", "20".to_string())];
    let mut clients: Vec<Proc> = (1..=agencies)
        .map(|id| start_client(dir.path(), id, port, &data.join(format!("agency-{id}.csv")), &quiet))
        .collect();
    for c in &mut clients {
        assert!(c.wait(RUN).success(), "{}", c.lines.dump());
    }
    let server = stop_server(server);
    assert_eq!(server.lines.count("action: sorteo | result: success"), 1);
    let rows = stored_rows(&dir.path().join("bets.csv"));
    assert_eq!(rows.len(), 200 * 300);
    let mut per_agency: HashMap<String, usize> = HashMap::new();
    for r in &rows {
        *per_agency.entry(r[0].to_string()).or_default() += 1;
    }
    assert!(per_agency.values().all(|&n| n == 300) && per_agency.len() == 200);
    for (client, summary) in clients.iter().zip(&summaries) {
        assert_eq!(winners_logged(client), Some(summary.winners), "{}", client.name);
    }
}

/// The course's parser adds up `cantidad` over `apuesta_recibida` and checks, in log
/// order, that only the last batch is short: pipelined batches are logged in their
/// order, and a resent batch is reported as `apuesta_reenviada`, never counted again.
#[test]
fn batch_log_lines_follow_the_batches_and_count_each_bet_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, port) = start_server(dir.path(), 1, &[("LOGGING_LEVEL", "DEBUG".to_string())]);
    let (mut stream, mut buf) = connect_as(port, dir.path(), 1);
    let sizes: Vec<usize> = std::iter::repeat_n(10, 40).chain([4]).collect();
    let mut first_index = 0u64;
    let mut frames = Vec::new();
    let mut batches = Vec::new();
    for (b, &size) in sizes.iter().enumerate() {
        let bets: Vec<Bet> = (0..size).map(|i| bet(&format!("{}", b * 100 + i + 1), 1)).collect();
        let req = Request::Batch { agency: 1, first_index, bets: bets.into() };
        frames.extend(frame(&req));
        batches.push(req);
        first_index += size as u64;
    }
    // Every batch in one write, so they are all in flight together, then the first again.
    frames.extend(frame(&batches[0]));
    stream.write_all(&frames).unwrap();
    for _ in 0..=sizes.len() {
        assert!(matches!(read_response(&mut stream, &mut buf), Some(Response::Ack { .. })));
    }
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.lines.count("action: apuesta_reenviada") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = server.lines.all();
    let recibida: Vec<&String> = lines.iter().filter(|l| l.contains("action: apuesta_recibida")).collect();
    let counts: Vec<usize> = recibida
        .iter()
        .map(|l| {
            assert!(l.contains("result: success"), "{l}");
            let (_, n) = l.split_once("cantidad: ").unwrap_or_else(|| panic!("no cantidad: {l}"));
            n.split(' ').next().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(counts, sizes, "apuesta_recibida lines in batch order");
    let resent: Vec<&String> = lines.iter().filter(|l| l.contains("action: apuesta_reenviada")).collect();
    assert_eq!(resent.len(), 1, "{resent:?}");
    assert!(resent[0].contains("result: success | cantidad: 10"), "{}", resent[0]);
    // Every line splits on `|` into `key: value` fields, with a result the course knows.
    for line in &lines {
        let fields: Vec<&str> = line.split('|').skip(1).map(str::trim).collect();
        assert!(fields.iter().all(|f| f.contains(": ")), "{line}");
        let result = fields.iter().find_map(|f| f.strip_prefix("result: ")).unwrap_or("missing");
        assert!(["success", "fail", "in_progress"].contains(&result), "{line}");
    }
    assert_eq!(server.lines.count("action: apuesta_almacenada | result: success"), 404);
    stop_server(server);
    assert_eq!(stored_rows(&dir.path().join("bets.csv")).len(), 404);
}

#[test]
fn the_widest_window_is_served_without_dropping_a_connection() {
    // Windows go up to 256 batches, four times the server's in-flight limit per
    // connection. Acks released by one sync used to come out of order often
    // enough to trip the server's limits: it closed the connection, the agency
    // reconnected and re-read its file, again and again.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, 3, 60_000, 29, 7574).unwrap();
    let wide = [("CLI_BATCH_WINDOW", "256".to_string()), ("CLI_BATCH_MAXAMOUNT", "20".to_string())];
    let (server, clients) = full_run_with(dir.path(), &data, 3, &wide);
    for (client, summary) in clients.iter().zip(&summaries) {
        assert_eq!(winners_logged(client), Some(summary.winners), "{}", client.name);
        assert_eq!(client.lines.count("action: reconnect"), 0, "{} reconnected:\n{}", client.name, client.lines.dump());
    }
    let server = stop_server(server);
    assert_eq!(server.lines.count("result: fail"), 0, "server:\n{}", server.lines.dump());
    assert_eq!(stored_rows(&dir.path().join("bets.csv")).len(), 180_000);
}
