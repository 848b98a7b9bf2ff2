//! The defects a hostile tester found, each with the real binaries on 127.0.0.1:
//! bad configuration, an unterminated quote, and two processes claiming one agency.

mod util;

use std::time::Duration;
use util::*;

const RUN: Duration = Duration::from_secs(120);

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
    let _ = RUN;
}
