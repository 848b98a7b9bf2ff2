//! Issue 10 on the real binaries over raw sockets on 127.0.0.1: impostors,
//! replayed and wrong handshakes, silent peers and a burst of wrong keys, each
//! beside honest agencies whose results must not change; and the agency that
//! checks the server's "done" against its own file. Every loop is bounded.

mod util;

use bytes::BytesMut;
use loteria::auth::{AuthKey, NONCE_LEN};
use loteria::bet::{Bet, Date};
use loteria::datagen;
use loteria::net::{NackCode, Request, Response, ServerCodec};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;
use tokio_util::codec::Decoder;
use util::*;

const RUN: Duration = Duration::from_secs(120);

fn raw(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn bet(doc: &str) -> Bet {
    Bet {
        first_name: "Impostor".into(),
        last_name: "Falso".into(),
        document: doc.into(),
        birthdate: Date::new(1990, 1, 1).unwrap(),
        number: 7574,
    }
}

/// The four messages an impostor would send for `agency`.
fn impostor_requests(agency: u32) -> Vec<Request> {
    vec![
        Request::Done { agency, total: 0 },
        Request::Batch { agency, first_index: 0, bets: vec![bet("66666666")].into() },
        Request::Resume { agency },
        Request::WinnersRequest { agency },
    ]
}

/// Each impostor message on a fresh unauthenticated connection: a Nack
/// (unauthenticated), then the server closes the connection.
fn unauthenticated_impostors_are_refused(port: u16, agency: u32) {
    for req in impostor_requests(agency) {
        let mut s = raw(port);
        let mut buf = BytesMut::new();
        let mut frame = BytesMut::new();
        req.encode(&mut frame).unwrap();
        if matches!(req, Request::Done { .. }) {
            assert_eq!(frame.len(), 17, "the issue's 17-byte Done frame");
        }
        s.write_all(&frame).unwrap();
        match read_reply(&mut s, &mut buf) {
            Some(Response::Nack { code: NackCode::Unauthenticated, .. }) => {}
            other => panic!("{req:?} answered with {other:?}"),
        }
        assert!(read_reply(&mut s, &mut buf).is_none(), "{req:?}: the connection must be closed");
    }
}

/// The same messages from a peer that holds another agency's key: refused.
fn other_agencys_key_cannot_speak_for_it(port: u16, dir: &Path, own: u32, victim: u32) {
    let (mut s, mut buf) = connect_as(port, dir, own);
    for req in impostor_requests(victim) {
        send_request(&mut s, &req);
        match read_reply(&mut s, &mut buf) {
            Some(Response::Nack { code: NackCode::WrongAgency, .. }) => {}
            other => panic!("{req:?} from agency {own}'s connection answered with {other:?}"),
        }
    }
}

/// Every agency's file stored exactly once and its own winners logged.
fn assert_results_unchanged(dir: &Path, summaries: &[datagen::AgencySummary], clients: &[Proc]) {
    let stored = stored_by_agency(&dir.join("bets.csv"));
    assert_eq!(stored.len(), summaries.len(), "only the honest agencies have rows: {:?}", stored.keys());
    for (summary, client) in summaries.iter().zip(clients) {
        let got = stored.get(&summary.agency.to_string()).cloned().unwrap_or_default();
        assert!(got == input_rows(&summary.path), "agency {}: stored rows differ from its file", summary.agency);
        assert_eq!(winners_logged(client), Some(summary.winners), "{}", client.name);
    }
}

/// No key of `dir`'s key file appears anywhere in these logs.
fn assert_no_key_in_logs(dir: &Path, agencies: u32, logs: &[&Proc]) {
    for agency in 1..=agencies {
        let hex = key_of(dir, agency).unwrap().to_hex();
        for p in logs {
            assert!(!p.lines.dump().contains(&hex[..16]), "agency {agency}'s key is in {}'s log", p.name);
        }
    }
}

#[test]
fn auth_impostors_for_another_agency_are_refused_before_and_after_it_connects() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, 2, 1_000, 17, 7574).unwrap();
    let (server, port) = start_server(dir.path(), 2, &[]);

    // The course's netcat check still works: an Echo right after connecting gets exactly
    // its bytes back (the server never speaks first, not even a challenge).
    let mut echo = raw(port);
    let sent = [0x01, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o'];
    echo.write_all(&sent).unwrap();
    let mut back = [0u8; 10];
    echo.read_exact(&mut back).unwrap();
    assert_eq!(back, sent);
    drop(echo);

    // Before agency 2 connects: the attack, and the rest.
    unauthenticated_impostors_are_refused(port, 2);
    other_agencys_key_cannot_speak_for_it(port, dir.path(), 1, 2);

    // Agency 2 runs first: it stores its bets, says Done, and then waits
    // (connected) for the draw, which needs agency 1.
    let mut c2 = start_client(dir.path(), 2, port, &summaries[1].path, &[]);
    c2.lines.wait_for("action: apuestas_enviadas | result: success", RUN).expect("agency 2 sent its bets");
    server.lines.wait_for("action: auth | result: success", Duration::from_secs(10)).expect("agency 2 authenticated");
    std::thread::sleep(Duration::from_millis(100));
    // After agency 2 connected: the same attempts fail the same way.
    unauthenticated_impostors_are_refused(port, 2);
    other_agencys_key_cannot_speak_for_it(port, dir.path(), 1, 2);

    let mut c1 = start_client(dir.path(), 1, port, &summaries[0].path, &[]);
    for c in [&mut c1, &mut c2] {
        assert!(c.wait(RUN).success(), "{}:\n{}\nserver:\n{}", c.name, c.lines.dump(), server.lines.dump());
    }
    let mut server = server;
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(10)).success());
    assert_eq!(server.lines.count("action: sorteo | result: success | bets: 2000"), 1, "{}", server.lines.dump());
    assert!(server.lines.count("action: auth | result: fail | ip: 127.0.0.1:") >= 8);
    assert_results_unchanged(dir.path(), &summaries, &[c1, c2]);
}

#[test]
fn auth_a_replayed_handshake_fails_on_a_new_connection() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, 1, 500, 3, 7574).unwrap();
    let (server, port) = start_server(dir.path(), 1, &[]);
    let key = key_of(dir.path(), 1).unwrap();

    // A recorded honest handshake.
    let mut first = raw(port);
    let mut buf = BytesMut::new();
    send_request(&mut first, &Request::AuthHello { agency: 1 });
    let Some(Response::Challenge { nonce: recorded_nonce }) = read_reply(&mut first, &mut buf) else { panic!() };
    let recorded_proof = key.proof(&recorded_nonce, 1);
    send_request(&mut first, &Request::AuthProof { mac: recorded_proof });
    assert_eq!(read_reply(&mut first, &mut buf), Some(Response::Ack { index: 0, count: 0 }));
    drop(first);

    // Replayed on a new connection: the server sent a new nonce, so it fails.
    let mut replay = raw(port);
    let mut buf = BytesMut::new();
    send_request(&mut replay, &Request::AuthHello { agency: 1 });
    let Some(Response::Challenge { nonce }) = read_reply(&mut replay, &mut buf) else { panic!() };
    assert_ne!(nonce, recorded_nonce, "every challenge is fresh");
    send_request(&mut replay, &Request::AuthProof { mac: recorded_proof });
    assert!(matches!(read_reply(&mut replay, &mut buf), Some(Response::Nack { code: NackCode::AuthFailed, .. })));
    assert!(read_reply(&mut replay, &mut buf).is_none(), "closed after a failed proof");

    // A proof with no challenge at all fails too.
    let mut bare = raw(port);
    let mut buf = BytesMut::new();
    send_request(&mut bare, &Request::AuthProof { mac: recorded_proof });
    assert!(matches!(read_reply(&mut bare, &mut buf), Some(Response::Nack { code: NackCode::AuthFailed, .. })));
    assert!(read_reply(&mut bare, &mut buf).is_none());

    let mut client = start_client(dir.path(), 1, port, &summaries[0].path, &[]);
    assert!(client.wait(RUN).success(), "{}\nserver:\n{}", client.lines.dump(), server.lines.dump());
    let mut server = server;
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(10)).success());
    assert_results_unchanged(dir.path(), &summaries, &[client]);
}

#[test]
fn auth_a_wrong_key_is_refused_and_the_agency_without_a_key_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, 2, 500, 5, 7574).unwrap();
    let (server, port) = start_server(dir.path(), 2, &[]);

    // Raw: a random key for agency 2.
    let mut s = raw(port);
    let peer = s.local_addr().unwrap();
    let mut buf = BytesMut::new();
    let wrong = AuthKey::generate().unwrap();
    match handshake(&mut s, &mut buf, 2, &wrong) {
        Some(Response::Nack { code: NackCode::AuthFailed, message, .. }) => assert!(message.contains("agency 2")),
        other => panic!("{other:?}"),
    }
    assert!(read_reply(&mut s, &mut buf).is_none(), "closed after a failed proof");
    server
        .lines
        .wait_for(&format!("action: auth | result: fail | ip: {peer} | agency: 2"), Duration::from_secs(5))
        .expect("the failure is logged with the peer address");

    // The agency program with a wrong key, and with none: exit 1, clear reason.
    let wrong_env = [("CLI_AUTH_KEY", wrong.to_hex()), ("CLI_RETRY_MAX_ATTEMPTS", "2".into())];
    let mut bad = start_client(dir.path(), 2, port, &summaries[1].path, &wrong_env);
    assert_eq!(bad.wait(RUN).code(), Some(1), "{}", bad.lines.dump());
    assert!(bad.lines.dump().contains("auth_failed"), "{}", bad.lines.dump());
    assert!(!bad.lines.dump().contains(&wrong.to_hex()[..16]), "the key is in the log");
    let none = dir.path().join("no-keys-here");
    std::fs::create_dir_all(&none).unwrap();
    let mut keyless = start_client(&none, 2, port, &summaries[1].path, &[]);
    assert_eq!(keyless.wait(RUN).code(), Some(1), "{}", keyless.lines.dump());
    assert!(keyless.lines.dump().contains("unauthenticated"), "{}", keyless.lines.dump());

    // Honest agencies are unaffected.
    let mut clients: Vec<Proc> =
        (1..=2).map(|id| start_client(dir.path(), id, port, &summaries[id as usize - 1].path, &[])).collect();
    for c in &mut clients {
        assert!(c.wait(RUN).success(), "{}\nserver:\n{}", c.lines.dump(), server.lines.dump());
    }
    let mut server = server;
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(10)).success());
    assert_no_key_in_logs(dir.path(), 2, &[&server, &clients[0], &clients[1]]);
    assert_results_unchanged(dir.path(), &summaries, &clients);
}

#[test]
fn auth_a_peer_that_never_answers_the_challenge_is_dropped_at_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, 1, 500, 6, 7574).unwrap();
    let (server, port) = start_server(dir.path(), 1, &[("SERVER_IDLE_TIMEOUT_MS", "400".into())]);
    let mut silent = raw(port);
    let peer = silent.local_addr().unwrap();
    let mut buf = BytesMut::new();
    send_request(&mut silent, &Request::AuthHello { agency: 1 });
    assert!(matches!(read_reply(&mut silent, &mut buf), Some(Response::Challenge { .. })));
    // Never answer: the server closes the socket at the idle timeout.
    silent.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut byte = [0u8; 1];
    assert!(matches!(silent.read(&mut byte), Ok(0)), "the silent peer was kept");
    server
        .lines
        .wait_for(&format!("action: idle_timeout | result: fail | ip: {peer}"), Duration::from_secs(2))
        .expect("the drop is logged with the peer address");
    let mut client = start_client(dir.path(), 1, port, &summaries[0].path, &[]);
    assert!(client.wait(RUN).success(), "{}", client.lines.dump());
    let mut server = server;
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(10)).success());
    assert_results_unchanged(dir.path(), &summaries, &[client]);
}

/// One wrong-key attempt for `agency`; returns the peer address and the answer.
fn wrong_attempt(port: u16, agency: u32) -> (std::net::SocketAddr, Option<Response>) {
    let mut s = raw(port);
    let peer = s.local_addr().unwrap();
    let mut buf = BytesMut::new();
    let answer = handshake(&mut s, &mut buf, agency, &AuthKey::from_bytes([0x42; 32]));
    (peer, answer)
}

fn delayed_ms(line: &str) -> u64 {
    line.split(" | ").find_map(|f| f.strip_prefix("delayed_ms: ")).and_then(|v| v.parse().ok()).unwrap()
}

#[test]
fn auth_a_burst_of_wrong_keys_from_one_address_is_slowed_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, 3, 20_000, 23, 7574).unwrap();
    let (server, port) = start_server(dir.path(), 3, &[]);
    let mut clients: Vec<Proc> = (1..=3)
        .map(|id| {
            let env = [("CLI_BATCH_MAXAMOUNT", "20".to_string()), ("CLI_BATCH_WINDOW", "2".to_string())];
            start_client(dir.path(), id, port, &summaries[id as usize - 1].path, &env)
        })
        .collect();
    // The honest agencies authenticate first (the attack below comes from their address).
    for _ in 0..300 {
        if server.lines.count("action: auth | result: success") >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.lines.count("action: auth | result: success"), 3, "{}", server.lines.dump());

    // A burst: 30 wrong proofs for agency 2 at once, from 127.0.0.1.
    const BURST: usize = 30;
    let burst: Vec<_> = (0..BURST).map(|_| std::thread::spawn(move || wrong_attempt(port, 2))).collect();
    for handle in burst {
        let (peer, answer) = handle.join().unwrap();
        match answer {
            Some(Response::Nack { code: NackCode::AuthFailed | NackCode::Unavailable, .. }) => {}
            other => panic!("{peer}: {other:?}"),
        }
    }
    // Bounded work: each attempt was checked at most once, the throttled ones not at all.
    let (wrong, unchecked) =
        ("error: wrong proof, closing", "error: too many failed attempts from this address, not checked");
    server.lines.wait_for_count(&[wrong, unchecked], BURST, Duration::from_secs(5));
    let checked = server.lines.count("error: wrong proof, closing");
    let unchecked = server.lines.count("error: too many failed attempts from this address, not checked");
    assert_eq!(checked + unchecked, BURST, "{}", server.lines.dump());
    println!("burst of {BURST}: {checked} checked, {unchecked} refused unchecked");

    // Later attempts from the address wait for their slot before being checked.
    for _ in 0..3 {
        let (peer, answer) = wrong_attempt(port, 2);
        assert!(matches!(answer, Some(Response::Nack { code: NackCode::AuthFailed, .. })), "{answer:?}");
        let line = server
            .lines
            .wait_for(&format!("action: auth | result: fail | ip: {peer} | agency: 2"), Duration::from_secs(5))
            .expect("logged");
        assert!(delayed_ms(&line) > 0, "a later attempt was not delayed: {line}");
    }
    // The right key from the same address still gets in (after its wait).
    let (mut ok, _) = connect_as(port, dir.path(), 3);
    send_request(&mut ok, &Request::Echo(bytes::Bytes::from_static(b"ok")));

    for c in &mut clients {
        assert!(c.wait(RUN).success(), "{}\nserver:\n{}", c.lines.dump(), server.lines.dump());
    }
    let mut server = server;
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(10)).success());
    assert_eq!(server.lines.count("action: sorteo | result: success"), 1);
    assert_results_unchanged(dir.path(), &summaries, &clients);
}

#[test]
fn auth_no_keys_no_start_unless_auth_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let store = ("SERVER_STORAGE_PATH", dir.path().join("bets.csv").display().to_string());
    let mut server = Proc::spawn(SERVER, "server", &[("SERVER_PORT", "0".into()), store.clone()], dir.path());
    assert_eq!(server.wait(Duration::from_secs(10)).code(), Some(2));
    let log = server.lines.dump();
    assert!(log.contains("action: config | result: fail") && log.contains("no agency keys"), "{log}");

    std::fs::write(dir.path().join("bad-keys.csv"), "1,not-a-key\n").unwrap();
    let bad = ("SERVER_AUTH_KEYS", dir.path().join("bad-keys.csv").display().to_string());
    let mut server = Proc::spawn(SERVER, "server", &[("SERVER_PORT", "0".into()), store.clone(), bad], dir.path());
    assert_eq!(server.wait(Duration::from_secs(10)).code(), Some(2));
    assert!(server.lines.dump().contains("bad-keys.csv:1:"), "{}", server.lines.dump());

    // SERVER_AUTH=off: a warning at start, and the old open behaviour (local experiments).
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, 1, 300, 8, 7574).unwrap();
    let (server, port) = start_server(dir.path(), 1, &[("SERVER_AUTH", "off".into())]);
    assert!(
        server.lines.dump().contains("WARNING  action: auth | result: fail | mode: off"),
        "{}",
        server.lines.dump()
    );
    let mut client = start_client(dir.path(), 1, port, &summaries[0].path, &[]);
    assert!(client.wait(RUN).success(), "{}", client.lines.dump());
    let mut server = server;
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(10)).success());
}

/// What the fake central claims.
#[derive(Clone, Copy)]
enum Claim {
    /// `Progress` at connect: done, with this many stored.
    DoneAtResume(u64),
    /// Takes the batches, then acks `Done` with a total short by one.
    ShortDoneAck,
}

/// A fake central on a raw socket: answers the handshake (checking the proof),
/// then lies about the agency's count as `claim` says.
fn fake_server(key: AuthKey, agency: u32, claim: Claim) -> (u16, std::thread::JoinHandle<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut input = BytesMut::new();
        let mut chunk = [0u8; 1024];
        let mut next = |s: &mut TcpStream| loop {
            if let Some(item) = ServerCodec.decode(&mut input).unwrap() {
                return item.unwrap();
            }
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "the agency hung up");
            input.extend_from_slice(&chunk[..n]);
        };
        let reply = |s: &mut TcpStream, r: Response| {
            let mut out = BytesMut::new();
            r.encode(&mut out).unwrap();
            s.write_all(&out).unwrap();
        };
        assert_eq!(next(&mut s), Request::AuthHello { agency });
        let nonce = [5u8; NONCE_LEN];
        reply(&mut s, Response::Challenge { nonce });
        let Request::AuthProof { mac } = next(&mut s) else { panic!("no proof") };
        let proven = key.verify(&nonce, agency, &mac);
        reply(&mut s, Response::Ack { index: 0, count: 0 });
        assert_eq!(next(&mut s), Request::Resume { agency });
        match claim {
            Claim::DoneAtResume(stored) => reply(&mut s, Response::Progress { agency, stored, done: true }),
            Claim::ShortDoneAck => {
                reply(&mut s, Response::Progress { agency, stored: 0, done: false });
                loop {
                    match next(&mut s) {
                        Request::Batch { first_index, bets, .. } => {
                            reply(&mut s, Response::Ack { index: first_index, count: bets.len() as u32 })
                        }
                        Request::Done { total, .. } => {
                            reply(&mut s, Response::Ack { index: total - 1, count: 0 });
                            break;
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
        }
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        proven
    });
    (port, handle)
}

#[test]
fn auth_the_agency_checks_the_servers_done_against_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, 1, 5, 2, 7574).unwrap();
    ensure_keys(dir.path(), 1);
    let key = key_of(dir.path(), 1).unwrap();
    for (claim, stored, word) in
        [(Claim::DoneAtResume(3), 3u64, "fewer"), (Claim::DoneAtResume(7), 7, "more"), (Claim::ShortDoneAck, 4, "ack")]
    {
        let (port, fake) = fake_server(key.clone(), 1, claim);
        let mut client = start_client(dir.path(), 1, port, &summaries[0].path, &[]);
        assert_eq!(client.wait(RUN).code(), Some(1), "told {word}: {}", client.lines.dump());
        assert!(fake.join().unwrap(), "the agency's proof was right");
        let log = client.lines.dump();
        assert!(
            log.contains("action: exit | result: fail")
                && log.contains(&format!("done with {stored} bets stored"))
                && log.contains("has 5 valid bets"),
            "told {word}:\n{log}"
        );
        assert!(!log.contains("consulta_ganadores | result: success"), "{log}");
    }
}
