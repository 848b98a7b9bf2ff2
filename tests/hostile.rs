//! The defects a hostile tester found, each with the real binaries on 127.0.0.1:
//! bad configuration, an unterminated quote, and two processes claiming one agency.

mod util;

use std::time::Duration;
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
