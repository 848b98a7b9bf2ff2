//! TLS on the real binaries over 127.0.0.1, with certificates from the
//! project's own generator: the whole draw, a central that cannot prove itself,
//! a proxy that flips one byte, a relayed proof, plain peers on a TLS port,
//! stalled and broken handshakes, bad files. Every loop is bounded.

mod util;

use bytes::BytesMut;
use loteria::datagen;
use loteria::net::tls::AgencyTls;
use loteria::net::{NackCode, Request, Response};
use loteria::pki::{self, Validity};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use util::*;

const RUN: Duration = Duration::from_secs(120);

fn tls_server(dir: &Path, agencies: u32, extra: &[(&str, String)]) -> (Proc, u16) {
    let mut env = tls_server_env(dir);
    env.extend(extra.iter().cloned());
    let (server, port) = start_server(dir, agencies, &env);
    assert!(server.lines.wait_for("action: tls | result: success | mode: TLS 1.3", RUN).is_some());
    (server, port)
}

fn tls_client(dir: &Path, id: u32, port: u16, data: &Path, extra: &[(&str, String)]) -> Proc {
    let mut env = tls_client_env(dir);
    env.extend(extra.iter().cloned());
    start_client(dir, id, port, &data.join(format!("agency-{id}.csv")), &env)
}

fn assert_stored_equals_input(dir: &Path, summaries: &[datagen::AgencySummary]) {
    let stored = stored_by_agency(&dir.join("bets.csv"));
    for s in summaries {
        let want = input_rows(&s.path);
        let got = stored.get(&s.agency.to_string()).cloned().unwrap_or_default();
        assert_eq!(got.len(), want.len(), "agency {}", s.agency);
        assert!(got == want, "agency {}: a stored row differs from its input row", s.agency);
    }
}

#[test]
fn the_whole_draw_runs_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, 3, 5_000, 31, 7574).unwrap();
    let (mut server, port) = tls_server(dir.path(), 3, &[]);
    let mut clients: Vec<Proc> = (1..=3).map(|id| tls_client(dir.path(), id, port, &data, &[])).collect();
    for (c, s) in clients.iter_mut().zip(&summaries) {
        assert!(c.wait(RUN).success(), "{}:\n{}\nserver:\n{}", c.name, c.lines.dump(), server.lines.dump());
        assert_eq!(winners_logged(c), Some(s.winners), "{}", c.name);
        assert_eq!(c.lines.count("action: reconnect"), 0, "{}", c.lines.dump());
    }
    assert_eq!(server.lines.count("action: auth | result: success"), 3);
    assert_eq!(server.lines.count("plain_connection"), 0);
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(10)).success());
    assert_stored_equals_input(dir.path(), &summaries);
}

/// An agency that cannot verify the central sends nothing, says why, and exits non-zero.
fn refused_central(client_env: &[(&str, String)], reason: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    datagen::generate(&data, 1, 200, 5, 7574).unwrap();
    let (server, port) = tls_server(dir.path(), 1, &[]);
    let mut client = tls_client(dir.path(), 1, port, &data, client_env);
    let status = client.wait(RUN);
    assert!(!status.success(), "the agency trusted a central it could not verify:\n{}", client.lines.dump());
    let line = client.lines.all().into_iter().find(|l| l.contains("action: tls_handshake | result: fail"));
    let line = line.unwrap_or_else(|| panic!("no tls_handshake fail line:\n{}", client.lines.dump()));
    assert!(line.to_lowercase().contains(reason), "{line}");
    assert!(client.lines.count("action: exit | result: fail") == 1, "{}", client.lines.dump());
    assert_eq!(client.lines.count("action: reconnect"), 0, "a certificate failure is not retried");
    assert!(stored_rows(&dir.path().join("bets.csv")).is_empty(), "a bet was stored");
    assert!(server.lines.wait_for("action: tls_handshake | result: fail", Duration::from_secs(10)).is_some());
    assert_eq!(server.lines.count("action: auth"), 0, "the agency sent its handshake:\n{}", server.lines.dump());
}

#[test]
fn an_agency_given_another_ca_sends_nothing() {
    let other = tempfile::tempdir().unwrap();
    let files =
        pki::write(&pki::issue(&pki::server_names(1), Validity::default()).unwrap(), other.path(), "x").unwrap();
    refused_central(&[("CLI_TLS_CA", files.ca_cert.display().to_string())], "invalid peer certificate: unknownissuer");
}

#[test]
fn an_agency_expecting_another_name_sends_nothing() {
    refused_central(&[("CLI_TLS_SERVER_NAME", "central.example".to_string())], "not valid for name");
}

#[test]
fn an_expired_certificate_is_refused() {
    let old = tempfile::tempdir().unwrap();
    let expired = Validity { from_day: -30, until_day: -2 };
    let files = pki::write(&pki::issue(&pki::server_names(1), expired).unwrap(), old.path(), "old").unwrap();
    let server = [
        ("SERVER_TLS_CERT", files.server_cert.display().to_string()),
        ("SERVER_TLS_KEY", files.server_key.display().to_string()),
    ];
    // Its own CA: the certificate is trusted but no longer valid.
    let client = [("CLI_TLS_CA", files.ca_cert.display().to_string())];
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    datagen::generate(&data, 1, 50, 5, 7574).unwrap();
    let (_server, port) = start_server(dir.path(), 1, &server);
    let mut agency = start_client(dir.path(), 1, port, &data.join("agency-1.csv"), &client);
    assert!(!agency.wait(RUN).success());
    let line = agency.lines.all().into_iter().find(|l| l.contains("action: tls_handshake | result: fail"));
    assert!(line.is_some_and(|l| l.to_lowercase().contains("expired")), "{}", agency.lines.dump());
    assert!(stored_rows(&dir.path().join("bets.csv")).is_empty());
}

/// A TCP proxy to `target` that flips one byte of the first connection's
/// agency→server stream once `after` bytes have passed; returns its port and
/// how many bytes it flipped.
fn flipping_proxy(target: u16, after: usize) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let flipped = Arc::new(AtomicUsize::new(0));
    let flips = flipped.clone();
    std::thread::spawn(move || {
        for (n, agency) in listener.incoming().take(64).enumerate() {
            let Ok(agency) = agency else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { return };
            let flip_at = (n == 0).then_some(after);
            let (a2, s2) = (agency.try_clone().unwrap(), server.try_clone().unwrap());
            let flips = flips.clone();
            std::thread::spawn(move || pump(agency, server, flip_at, &flips));
            std::thread::spawn(move || pump(s2, a2, None, &AtomicUsize::new(0)));
        }
    });
    (port, flipped)
}

fn pump(mut from: TcpStream, mut to: TcpStream, flip_at: Option<usize>, flips: &AtomicUsize) {
    let mut buf = [0u8; 16 * 1024];
    let mut passed = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(at) = flip_at {
            if passed <= at && at < passed + n && flips.load(Ordering::SeqCst) == 0 {
                buf[at - passed] ^= 0x01;
                flips.fetch_add(1, Ordering::SeqCst);
            }
        }
        passed += n;
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

#[test]
fn a_flipped_byte_breaks_the_link_and_the_agency_resumes_with_nothing_altered() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, 2, 20_000, 77, 7574).unwrap();
    let (mut server, port) = tls_server(dir.path(), 2, &[]);
    let (proxy, flipped) = flipping_proxy(port, 64 * 1024);
    let retry = [("CLI_RETRY_INITIAL_DELAY_MS", "20".to_string()), ("CLI_RETRY_MAX_ATTEMPTS", "50".to_string())];
    let mut relayed = tls_client(dir.path(), 1, proxy, &data, &retry);
    let mut direct = tls_client(dir.path(), 2, port, &data, &[]);
    for c in [&mut relayed, &mut direct] {
        assert!(c.wait(RUN).success(), "{}:\n{}\nserver:\n{}", c.name, c.lines.dump(), server.lines.dump());
    }
    assert_eq!(flipped.load(Ordering::SeqCst), 1, "the proxy flipped no byte: the stream was shorter than 64 KiB");
    let broken = server.lines.all().into_iter().find(|l| l.contains("action: receive_message | result: fail"));
    let broken = broken.unwrap_or_else(|| panic!("the server did not see the broken record:\n{}", server.lines.dump()));
    assert!(broken.to_lowercase().contains("decrypt") || broken.contains("BadRecordMac"), "{broken}");
    assert!(relayed.lines.count("action: reconnect") >= 1, "{}", relayed.lines.dump());
    assert!(relayed.lines.count("action: resume | result: success") >= 1, "{}", relayed.lines.dump());
    for (c, s) in [&relayed, &direct].into_iter().zip(&summaries) {
        assert_eq!(winners_logged(c), Some(s.winners), "{}", c.name);
    }
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(10)).success());
    assert_stored_equals_input(dir.path(), &summaries);
}

#[test]
fn a_proof_relayed_from_another_tls_session_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (server, port) = tls_server(dir.path(), 2, &[]);
    let key = key_of(dir.path(), 1).unwrap();
    let tls = AgencyTls::load(&ensure_pki(dir.path()).ca_cert, None).unwrap();
    let address = format!("127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use loteria::client::{AgencyConnection, ClientError};
        let cancel = tokio_util::sync::CancellationToken::new();
        async fn challenge(conn: &mut AgencyConnection) -> [u8; loteria::auth::NONCE_LEN] {
            conn.send(&Request::AuthHello { agency: 1 }).await.unwrap();
            match conn.recv().await.unwrap() {
                Response::Challenge { nonce } => nonce,
                other => panic!("{other:?}"),
            }
        }
        // The victim's session (A) gets the challenge; the relay's session (B) makes
        // the proof with A's nonce, as an agency talking to a relay would.
        let mut a = AgencyConnection::connect(&address, Some(&tls), &cancel).await.unwrap();
        let mut b = AgencyConnection::connect(&address, Some(&tls), &cancel).await.unwrap();
        let nonce = challenge(&mut a).await;
        assert_ne!(a.binding(), b.binding(), "two sessions export different keying material");
        let relayed = key.proof_bound(&nonce, 1, b.binding());
        a.send(&Request::AuthProof { mac: relayed }).await.unwrap();
        match a.recv().await {
            Err(ClientError::Refused { code: NackCode::AuthFailed, .. }) => {}
            other => panic!("a relayed proof was not refused: {other:?}"),
        }
        // The unbound (plain-mode) proof fails on a TLS link too.
        let mut c = AgencyConnection::connect(&address, Some(&tls), &cancel).await.unwrap();
        let nonce = challenge(&mut c).await;
        c.send(&Request::AuthProof { mac: key.proof(&nonce, 1) }).await.unwrap();
        assert!(matches!(c.recv().await, Err(ClientError::Refused { code: NackCode::AuthFailed, .. })));
        // The same key bound to its own session is accepted.
        let nonce = challenge(&mut b).await;
        b.send(&Request::AuthProof { mac: key.proof_bound(&nonce, 1, b.binding()) }).await.unwrap();
        assert_eq!(b.recv().await.unwrap(), Response::Ack { index: 0, count: 0 });
    });
    assert!(server.lines.wait_for_count(&["error: wrong proof, closing"], 2, Duration::from_secs(10)) >= 2);
}

fn raw(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn a_plain_peer_on_a_tls_port_gets_echo_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (server, port) = tls_server(dir.path(), 1, &[]);
    // The netcat check's exact bytes.
    let mut s = raw(port);
    s.write_all(b"\x01\x00\x00\x00\x05hello").unwrap();
    let mut buf = BytesMut::new();
    assert_eq!(read_reply(&mut s, &mut buf), Some(Response::Echo("hello".into())));
    let refused = [
        Request::AuthHello { agency: 1 },
        Request::Done { agency: 1, total: 0 },
        Request::WinnersRequest { agency: 1 },
        Request::Resume { agency: 1 },
    ];
    for request in refused {
        let mut s = raw(port);
        send_request(&mut s, &request);
        let mut buf = BytesMut::new();
        match read_reply(&mut s, &mut buf) {
            Some(Response::Nack { code: NackCode::Unauthenticated, message, .. }) => {
                assert!(message.contains("TLS"), "{message}")
            }
            other => panic!("{request:?} on a plain link: {other:?}"),
        }
        assert_eq!(read_reply(&mut s, &mut buf), None, "{request:?}: the connection stays open");
    }
    // A plain bet batch after an Echo: refused and closed, nothing stored.
    let mut s = raw(port);
    s.write_all(b"\x01\x00\x00\x00\x02hi").unwrap();
    let mut buf = BytesMut::new();
    assert_eq!(read_reply(&mut s, &mut buf), Some(Response::Echo("hi".into())));
    let bet = loteria::bet::Bet {
        first_name: "Ana".into(),
        last_name: "Paz".into(),
        document: "30111222".into(),
        birthdate: loteria::bet::Date::new(1990, 1, 1).unwrap(),
        number: 7574,
    };
    send_request(&mut s, &Request::Bet { agency: 1, bet: bet.into() });
    assert!(matches!(read_reply(&mut s, &mut buf), Some(Response::Nack { code: NackCode::Unauthenticated, .. })));
    assert_eq!(read_reply(&mut s, &mut buf), None);
    assert!(stored_rows(&dir.path().join("bets.csv")).is_empty());
    let refused = server.lines.wait_for_count(&["plain connection to a TLS port"], 5, Duration::from_secs(10));
    assert!(refused >= 5, "{}", server.lines.dump());
}

#[test]
fn a_stalled_handshake_is_dropped_and_broken_ones_count_against_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, 1, 100, 3, 7574).unwrap();
    let extra = [("SERVER_IDLE_TIMEOUT_MS", "400".to_string()), ("SERVER_MAX_CONNECTIONS", "1".to_string())];
    let (server, port) = tls_server(dir.path(), 1, &extra);
    // The start of a ClientHello, then silence: it holds the only connection slot.
    let mut stalled = raw(port);
    stalled.write_all(&[0x16, 0x03, 0x01, 0x00, 0x80, 0x01]).unwrap();
    let started = Instant::now();
    let mut byte = [0u8; 1];
    assert!(matches!(stalled.read(&mut byte), Ok(0) | Err(_)), "the stalled peer was answered");
    assert!(started.elapsed() < Duration::from_secs(5), "dropped after {:?}", started.elapsed());
    // Broken handshakes from this address: each counts like a wrong proof.
    for _ in 0..5 {
        let mut s = raw(port);
        s.write_all(b"\x16\x03\x01\x00\x05hello").unwrap();
        let _ = s.read(&mut [0u8; 64]);
    }
    let failures = server.lines.wait_for_count(&["action: tls_handshake | result: fail"], 5, Duration::from_secs(10));
    assert!(failures >= 5, "{}", server.lines.dump());
    // The slot is free again, and this address's next proof waits its turn.
    let mut agency = tls_client(dir.path(), 1, port, &data, &[]);
    assert!(agency.wait(RUN).success(), "{}\nserver:\n{}", agency.lines.dump(), server.lines.dump());
    assert_eq!(winners_logged(&agency), Some(summaries[0].winners));
    let auth = server.lines.wait_for("action: auth | result: success", Duration::from_secs(5)).unwrap();
    let delayed: u64 = auth.rsplit("delayed_ms: ").next().unwrap().split(' ').next().unwrap().trim().parse().unwrap();
    assert!(delayed >= 300, "the proof after five failed handshakes waited only {delayed} ms: {auth}");
}

#[test]
fn bad_certificate_files_are_configuration_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ours = ensure_pki(dir.path());
    let other =
        pki::write(&pki::issue(&pki::server_names(1), Validity::default()).unwrap(), dir.path(), "other").unwrap();
    let missing = dir.path().join("nowhere.pem");
    let cases = [
        (missing.clone(), ours.server_key.clone(), missing.clone()),
        (ours.server_cert.clone(), other.server_key.clone(), other.server_key.clone()),
        (ours.server_cert.clone(), ours.server_cert.clone(), ours.server_cert.clone()),
    ];
    for (cert, key, named) in cases {
        let env = [("SERVER_TLS_CERT", cert.display().to_string()), ("SERVER_TLS_KEY", key.display().to_string())];
        let mut env_all = server_env(dir.path(), 0, 1, &[]);
        env_all.extend(env);
        let mut server = Proc::spawn(SERVER, "server", &env_all, dir.path());
        let status = server.wait(Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{}", server.lines.dump());
        let line = server.lines.all().into_iter().find(|l| l.contains("action: config | result: fail")).unwrap();
        assert!(line.contains(&named.display().to_string()), "{line}");
    }
    let mut agency =
        start_client(dir.path(), 1, 1, &dir.path().join("a.csv"), &[("CLI_TLS_CA", missing.display().to_string())]);
    assert_eq!(agency.wait(Duration::from_secs(10)).code(), Some(2));
    assert!(agency.lines.dump().contains(&missing.display().to_string()));
}

#[test]
fn an_agency_turned_away_by_the_connection_limit_retries_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, 1, 100, 9, 7574).unwrap();
    let (server, port) = tls_server(dir.path(), 1, &[("SERVER_MAX_CONNECTIONS", "1".to_string())]);
    // A plain Echo peer holds the only slot.
    let mut holder = raw(port);
    holder.write_all(b"\x01\x00\x00\x00\x02hi").unwrap();
    assert_eq!(read_reply(&mut holder, &mut BytesMut::new()), Some(Response::Echo("hi".into())));
    let retry = [("CLI_RETRY_INITIAL_DELAY_MS", "50".to_string()), ("CLI_RETRY_MAX_DELAY_MS", "100".to_string())];
    let mut agency = tls_client(dir.path(), 1, port, &data, &retry);
    assert!(server.lines.wait_for("too many connections", Duration::from_secs(10)).is_some());
    drop(holder);
    assert!(agency.wait(RUN).success(), "{}\nserver:\n{}", agency.lines.dump(), server.lines.dump());
    assert!(agency.lines.count("action: reconnect") >= 1, "{}", agency.lines.dump());
    assert_eq!(agency.lines.count("action: tls_handshake | result: fail"), 0, "{}", agency.lines.dump());
    assert_eq!(winners_logged(&agency), Some(summaries[0].winners));
}
