//! The store's integrity on the real binaries: a finished draw's store, then one
//! fault at a time in a copy of it (a row's newline turned into `x`, one digit of a
//! document, a cut in the middle, a bad journal line). The server refuses to start
//! (exit 3) naming the place, and no draw runs; `verify` reproduces the `sorteo`
//! line's head on the good store and names the row on a changed one.

mod util;

use loteria::datagen;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use util::*;

const RUN: Duration = Duration::from_secs(120);
const AGENCIES: u32 = 2;

/// Runs a whole draw in `dir`; returns the `sorteo` line's head and the summaries.
fn finished_store(dir: &Path) -> (String, Vec<datagen::AgencySummary>, String) {
    let summaries = datagen::generate(&dir.join("data"), AGENCIES, 3_000, 24, 7574).unwrap();
    let (mut server, port) = start_server(dir, AGENCIES, &[]);
    let mut clients: Vec<Proc> = summaries.iter().map(|s| start_client(dir, s.agency, port, &s.path, &[])).collect();
    for c in &mut clients {
        assert!(c.wait(RUN).success(), "{}:\n{}", c.name, c.lines.dump());
    }
    let sorteo = server.lines.wait_for("action: sorteo | result: success", Duration::from_secs(5)).expect("a draw");
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(10)).success());
    let head = head_of(&sorteo).unwrap_or_else(|| panic!("no head in {sorteo}"));
    assert_eq!(head.len(), 64, "{sorteo}");
    (head, summaries, sorteo)
}

/// A copy of `dir`'s store (bets, sidecar, journal) in a fresh folder `name`,
/// sharing the keys.
fn copy_store(dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for file in ["bets.csv", "bets.csv.sum", "bets.csv.done"] {
        std::fs::copy(dir.join(file), to.join(file)).unwrap();
    }
    to
}

/// Starts a server on the store in `store_dir` (keys from `dir`); it must exit 3
/// before listening, with an error naming `needles`, and run no draw.
fn refused(dir: &Path, store_dir: &Path, needles: &[&str]) {
    let env = [
        ("SERVER_PORT", "0".to_string()),
        ("SERVER_AGENCIES", AGENCIES.to_string()),
        ("SERVER_STORAGE_PATH", store_dir.join("bets.csv").display().to_string()),
        ("SERVER_AUTH_KEYS", keys_path(dir).display().to_string()),
        ("SERVER_CHAIN_KEY", chain_key_path(dir).display().to_string()),
    ];
    let mut server = Proc::spawn(SERVER, "server", &env, store_dir);
    let status = server.wait(Duration::from_secs(20));
    let dump = server.lines.dump();
    assert_eq!(status.code(), Some(3), "{dump}");
    let line = server.lines.all().into_iter().find(|l| l.contains("action: boot | result: fail")).expect(&dump);
    for needle in needles {
        assert!(line.contains(needle), "{needle:?} not in {line}");
    }
    println!("{line}");
    assert_eq!(server.lines.count("action: sorteo"), 0, "{dump}");
    assert_eq!(server.lines.count("accept_connections"), 0, "{dump}");
}

fn verify(dir: &Path, store_dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(VERIFY)
        .args(["--store", &store_dir.join("bets.csv").display().to_string(), "--agencies", &AGENCIES.to_string()])
        .args(["--key", &chain_key_path(dir).display().to_string()])
        .env_clear()
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where line `n` (from 1) of `bytes` starts.
fn line_start(bytes: &[u8], n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    bytes.iter().enumerate().filter(|(_, &b)| b == b'\n').nth(n - 2).map(|(i, _)| i + 1).unwrap()
}

#[test]
fn a_store_that_fails_its_checks_stops_the_server_and_verify_names_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (head, summaries, sorteo) = finished_store(dir);

    // The good store: verify prints the sorteo line's head, rows and winners.
    let (code, out) = verify(dir, dir);
    assert_eq!(code, Some(0), "{out}");
    let total: u64 = summaries.iter().map(|s| s.bets).sum();
    let winners: u64 = summaries.iter().map(|s| s.winners).sum();
    assert!(out.contains(&format!("bets: {total} | winners: {winners} | head: {head} |")), "{out}\n{sorteo}");
    for s in &summaries {
        let want = format!("agency: {} | rows: {} | winners: {}", s.agency, s.bets, s.winners);
        assert!(out.contains(&want), "{want}: {out}");
    }

    let bets = std::fs::read(dir.join("bets.csv")).unwrap();
    // Row 11's newline turned into `x`: its group's CRC, named with the group's range and the row.
    let changed = copy_store(dir, "newline");
    let mut b = bets.clone();
    let at = line_start(&b, 12) - 1;
    assert_eq!(b[at], b'\n');
    b[at] = b'x';
    std::fs::write(changed.join("bets.csv"), &b).unwrap();
    refused(
        dir,
        &changed,
        &["bets.csv:11: group 1 (bytes 0..", "CRC32C", "row line 11 (byte ", "first bad row: line 11"],
    );

    // One digit of a document in row 2,500 (the CSV stays valid).
    let changed = copy_store(dir, "digit");
    let mut b = bets.clone();
    let row = line_start(&b, 2500);
    let comma = row + b[row..].iter().enumerate().filter(|(_, &c)| c == b',').nth(2).unwrap().0 + 1;
    b[comma] = if b[comma] == b'9' { b'0' } else { b[comma] + 1 };
    std::fs::write(changed.join("bets.csv"), &b).unwrap();
    refused(dir, &changed, &["bets.csv:2500: group ", "CRC32C", "row line 2500 (byte "]);
    let (code, out) = verify(dir, &changed);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("action: verify | result: fail") && out.contains("CRC32C"), "{out}");
    // The error names the group holding row 2,500 (its first row is at or before it) and the row.
    let first: usize = out.split("first row line ").nth(1).unwrap().split(')').next().unwrap().parse().unwrap();
    let named: usize = out.split("bets.csv:").nth(1).unwrap().split(':').next().unwrap().parse().unwrap();
    assert!(first <= 2500 && named == 2500, "{out}");
    assert!(out.contains(&format!("row line 2500 (byte {row}) is not the row sealed")), "{out}");

    // Cut in the middle after the finished draw.
    let changed = copy_store(dir, "cut");
    std::fs::write(changed.join("bets.csv"), &bets[..bets.len() / 2]).unwrap();
    refused(dir, &changed, &["bets.csv:", "the file was cut"]);

    // A journal line that is not `agency,total`.
    let changed = copy_store(dir, "journal");
    let journal = std::fs::read_to_string(changed.join("bets.csv.done")).unwrap();
    let bad = journal.replacen(&format!("{},{}", summaries[0].agency, summaries[0].bets), "1,abc", 1);
    assert_ne!(bad, journal);
    std::fs::write(changed.join("bets.csv.done"), bad).unwrap();
    refused(dir, &changed, &["bets.csv.done:", "1,abc"]);
}

#[test]
fn a_server_without_a_chain_key_checks_crcs_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summaries = datagen::generate(&data, 1, 500, 5, 7574).unwrap();
    let (mut server, port) = start_server(dir.path(), 1, &[("SERVER_CHAIN_KEY", String::new())]);
    let mut client = start_client(dir.path(), 1, port, &summaries[0].path, &[]);
    assert!(client.wait(RUN).success(), "{}", client.lines.dump());
    let sorteo = server.lines.wait_for("action: sorteo | result: success", Duration::from_secs(5)).unwrap();
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(10)).success());
    assert!(head_of(&sorteo).is_none(), "{sorteo}");
    assert_eq!(server.lines.count("action: integrity | result: success | mode: crc32c"), 1, "{}", server.lines.dump());
    // A key file beside the store is refused as a configuration error.
    let beside = dir.path().join("chain.key");
    ensure_chain_key(dir.path()).write(&beside).unwrap();
    let extra = [("SERVER_CHAIN_KEY", beside.display().to_string())];
    let mut env = server_env(dir.path(), 0, 1, &extra);
    env.extend(extra);
    let mut again = Proc::spawn(SERVER, "server", &env, dir.path());
    assert_eq!(again.wait(Duration::from_secs(10)).code(), Some(2), "{}", again.lines.dump());
    assert!(again.lines.dump().contains("must not sit beside the store"), "{}", again.lines.dump());
}
