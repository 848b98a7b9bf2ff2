//! Helpers for tests that run the real binaries on 127.0.0.1.
#![allow(dead_code)]

pub mod nats;

use bytes::BytesMut;
use loteria::auth::{AgencyKeys, AuthKey};
use loteria::net::{ClientCodec, Request, Response};
use loteria::storage::ChainKey;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio_util::codec::Decoder;

/// Every line a process printed on stdout, collected by a thread.
#[derive(Clone, Default)]
pub struct Lines(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Lines {
    fn follow(child: &mut Child) -> Lines {
        let lines = Lines::default();
        let out = child.stdout.take().expect("stdout piped");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let (store, cv) = &*sink.0;
                store.lock().unwrap().push(line);
                cv.notify_all();
            }
        });
        lines
    }

    pub fn all(&self) -> Vec<String> {
        self.0 .0.lock().unwrap().clone()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.all().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits (bounded) for a line containing `needle`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (store, cv) = &*self.0;
        let mut guard = store.lock().unwrap();
        loop {
            if let Some(l) = guard.iter().find(|l| l.contains(needle)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// Waits (bounded) until at least `n` lines contain one of `needles`, and
    /// returns how many do. The server logs through a writer thread that lets
    /// lines gather for a moment, so a line can show up a little after the
    /// answer it goes with.
    pub fn wait_for_count(&self, needles: &[&str], n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let (store, cv) = &*self.0;
        let mut guard = store.lock().unwrap();
        loop {
            let found = guard.iter().filter(|l| needles.iter().any(|k| l.contains(k))).count();
            let now = Instant::now();
            if found >= n || now >= deadline {
                return found;
            }
            guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    pub fn dump(&self) -> String {
        self.all().join("\n")
    }
}

/// A spawned binary, killed if the test ends early.
pub struct Proc {
    pub child: Child,
    pub lines: Lines,
    pub name: String,
}

impl Proc {
    pub fn spawn(bin: &str, name: &str, env: &[(&str, String)], cwd: &Path) -> Proc {
        Proc::spawn_args(bin, &[], name, env, cwd)
    }

    /// [`spawn`](Self::spawn) with arguments (e.g. `prlimit --nofile=64 -- server`).
    pub fn spawn_args(program: &str, args: &[&str], name: &str, env: &[(&str, String)], cwd: &Path) -> Proc {
        let bin = program;
        let mut cmd = Command::new(program);
        cmd.args(args);
        cmd.current_dir(cwd).stdout(Stdio::piped()).stderr(Stdio::inherit()).stdin(Stdio::null());
        for var in [
            "SERVER_CONFIG",
            "CLI_CONFIG",
            "NOMBRE",
            "APELLIDO",
            "DOCUMENTO",
            "NACIMIENTO",
            "NUMERO",
            "SERVER_AUTH",
            "SERVER_AUTH_KEYS",
            "CLI_AUTH_KEY",
            "SERVER_TLS_CERT",
            "SERVER_TLS_KEY",
            "CLI_TLS_CA",
            "CLI_TLS_SERVER_NAME",
            "SERVER_CHAIN_KEY",
            "SERVER_STORAGE_INTEGRITY",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let lines = Lines::follow(&mut child);
        Proc { child, lines, name: name.to_string() }
    }

    pub fn signal(&self, sig: &str) {
        let ok =
            Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill -{sig} {}", self.name);
    }

    /// Waits (bounded) for the exit; panics with the log on timeout.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread drain the pipe.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("{} did not exit within {timeout:?}; log:\n{}", self.name, self.lines.dump());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub const SERVER: &str = env!("CARGO_BIN_EXE_server");
pub const CLIENT: &str = env!("CARGO_BIN_EXE_client");
pub const VERIFY: &str = env!("CARGO_BIN_EXE_verify");

/// The test run's key file, in the test's directory.
pub fn keys_path(dir: &Path) -> PathBuf {
    dir.join("agency-keys.csv")
}

/// Fresh random keys for agencies `1..=agencies` in `dir`, keeping the keys
/// already there (a restarted server must know the same agencies).
pub fn ensure_keys(dir: &Path, agencies: u32) -> AgencyKeys {
    let path = keys_path(dir);
    let mut keys = AgencyKeys::load(&path).unwrap_or_default();
    for agency in 1..=agencies {
        if keys.get(agency).is_none() {
            keys.insert(agency, AuthKey::generate().unwrap());
        }
    }
    keys.write(&path).unwrap();
    keys
}

/// The test deployment's PKI, made by the project's generator beside the key
/// file (`dir/.keys`, 0700; key 0600), once per directory like a deployment's.
pub fn ensure_pki(dir: &Path) -> loteria::pki::PkiFiles {
    let keys = dir.join(".keys");
    let files = loteria::pki::PkiFiles::in_dir(&keys, "test");
    if !files.server_key.exists() {
        let pki = loteria::pki::issue(&loteria::pki::server_names(1), Default::default()).unwrap();
        assert_eq!(loteria::pki::write(&pki, &keys, "test").unwrap(), files);
    }
    files
}

/// Server environment for TLS with `dir`'s PKI.
pub fn tls_server_env(dir: &Path) -> Vec<(&'static str, String)> {
    let files = ensure_pki(dir);
    vec![
        ("SERVER_TLS_CERT", files.server_cert.display().to_string()),
        ("SERVER_TLS_KEY", files.server_key.display().to_string()),
    ]
}

/// Agency environment trusting `dir`'s CA.
pub fn tls_client_env(dir: &Path) -> Vec<(&'static str, String)> {
    vec![("CLI_TLS_CA", ensure_pki(dir).ca_cert.display().to_string())]
}

/// The key of `agency` in `dir`'s key file.
pub fn key_of(dir: &Path, agency: u32) -> Option<AuthKey> {
    AgencyKeys::load(&keys_path(dir)).ok().and_then(|keys| keys.get(agency).cloned())
}

/// The test run's chain key file: in `keys/` below the test's directory, never
/// beside the store (the server refuses that).
pub fn chain_key_path(dir: &Path) -> PathBuf {
    dir.join("keys").join("chain.key")
}

/// The test run's chain key, made once per directory (a restarted server must
/// chain on with the same key).
pub fn ensure_chain_key(dir: &Path) -> ChainKey {
    let path = chain_key_path(dir);
    if let Ok(key) = ChainKey::load(&path) {
        return key;
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let key = ChainKey::generate().unwrap();
    key.write(&path).unwrap();
    key
}

/// The `head` of a `sorteo` line.
pub fn head_of(line: &str) -> Option<String> {
    line.split(" | ").find_map(|f| f.strip_prefix("head: ")).map(str::to_string)
}

/// Server environment: port, agencies, store, keys (unless `extra` sets auth
/// itself) and the chain key (unless `extra` sets one).
pub fn server_env(dir: &Path, port: u16, agencies: u32, extra: &[(&str, String)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("SERVER_PORT", port.to_string()),
        ("SERVER_AGENCIES", agencies.to_string()),
        ("SERVER_STORAGE_PATH", dir.join("bets.csv").display().to_string()),
    ];
    if !extra.iter().any(|(k, _)| *k == "SERVER_AUTH" || *k == "SERVER_AUTH_KEYS") {
        ensure_keys(dir, agencies);
        env.push(("SERVER_AUTH_KEYS", keys_path(dir).display().to_string()));
    }
    if !extra.iter().any(|(k, _)| *k == "SERVER_CHAIN_KEY") {
        ensure_chain_key(dir);
        env.push(("SERVER_CHAIN_KEY", chain_key_path(dir).display().to_string()));
    }
    env
}

/// Starts a server on a free port (port 0, read back from its log).
pub fn start_server(dir: &Path, agencies: u32, extra: &[(&str, String)]) -> (Proc, u16) {
    let mut env = server_env(dir, 0, agencies, extra);
    env.extend(extra.iter().cloned());
    let server = Proc::spawn(SERVER, "server", &env, dir);
    let line = server
        .lines
        .wait_for("action: accept_connections | result: in_progress", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("server did not start:\n{}", server.lines.dump()));
    let port = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    (server, port)
}

pub fn start_client(dir: &Path, id: u32, port: u16, data: &Path, extra: &[(&str, String)]) -> Proc {
    let mut env = vec![
        ("CLI_ID", id.to_string()),
        ("CLI_SERVER_ADDRESS", format!("127.0.0.1:{port}")),
        ("CLI_DATA_PATH", data.display().to_string()),
    ];
    if !extra.iter().any(|(k, _)| *k == "CLI_AUTH_KEY") {
        if let Some(key) = key_of(dir, id) {
            env.push(("CLI_AUTH_KEY", key.to_hex()));
        }
    }
    env.extend(extra.iter().cloned());
    Proc::spawn(CLIENT, &format!("client{id}"), &env, dir)
}

/// The `cant_ganadores` an agency logged.
pub fn winners_logged(client: &Proc) -> Option<u64> {
    client
        .lines
        .all()
        .iter()
        .find(|l| l.contains("action: consulta_ganadores | result: success"))
        .and_then(|l| l.rsplit("cant_ganadores: ").next())
        .and_then(|v| v.trim().parse().ok())
}

/// Rows of the bets file, checking every row is whole.
pub fn stored_rows(path: &Path) -> Vec<csv::StringRecord> {
    let bytes = std::fs::read(path).unwrap_or_default();
    assert!(bytes.is_empty() || bytes.ends_with(b"\n"), "the bets file ends with a partial row");
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(&bytes[..]);
    reader.records().map(|r| r.expect("every stored row parses with 6 fields")).collect()
}

/// The stored rows of each agency, in stored order, without the agency column.
pub fn stored_by_agency(path: &Path) -> std::collections::HashMap<String, Vec<Vec<String>>> {
    let mut map: std::collections::HashMap<String, Vec<Vec<String>>> = std::collections::HashMap::new();
    for row in stored_rows(path) {
        map.entry(row[0].to_string()).or_default().push(row.iter().skip(1).map(str::to_string).collect());
    }
    map
}

/// The rows of an agency file (no header), field by field.
pub fn input_rows(path: &Path) -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_path(path).unwrap();
    reader.records().map(|r| r.unwrap().iter().map(str::to_string).collect()).collect()
}

/// The course's dataset beside the project, when it is there.
pub fn course_dataset() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/tp0");
    dir.join("agency-1.csv").exists().then_some(dir)
}

/// Open descriptors of a process (`/proc/<pid>/fd`).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Reads one answer from a raw socket (bounded by the socket's read timeout);
/// `None` when the peer closed or went silent.
pub fn read_reply(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<Response> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(Some(item)) = ClientCodec.decode(buf) {
            return item.ok();
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

pub fn send_request(stream: &mut TcpStream, req: &Request) {
    let mut out = BytesMut::new();
    req.encode(&mut out).unwrap();
    stream.write_all(&out).unwrap();
}

/// The handshake over a raw socket; returns the server's last answer
/// (`Ack` when it succeeded).
pub fn handshake(stream: &mut TcpStream, buf: &mut BytesMut, agency: u32, key: &AuthKey) -> Option<Response> {
    send_request(stream, &Request::AuthHello { agency });
    let Some(Response::Challenge { nonce }) = read_reply(stream, buf) else {
        panic!("no challenge for agency {agency}");
    };
    send_request(stream, &Request::AuthProof { mac: key.proof(&nonce, agency) });
    read_reply(stream, buf)
}

/// A raw connection authenticated as `agency` with the key in `dir`.
pub fn connect_as(port: u16, dir: &Path, agency: u32) -> (TcpStream, BytesMut) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = BytesMut::new();
    let key = key_of(dir, agency).expect("a key for the agency");
    assert_eq!(handshake(&mut s, &mut buf, agency, &key), Some(Response::Ack { index: 0, count: 0 }));
    (s, buf)
}
