//! Helpers for tests that run the real binaries on 127.0.0.1.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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
        for var in ["SERVER_CONFIG", "CLI_CONFIG", "NOMBRE", "APELLIDO", "DOCUMENTO", "NACIMIENTO", "NUMERO"] {
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

/// Starts a server on a free port (port 0, read back from its log).
pub fn start_server(dir: &Path, agencies: u32, extra: &[(&str, String)]) -> (Proc, u16) {
    let mut env = vec![
        ("SERVER_PORT", "0".to_string()),
        ("SERVER_AGENCIES", agencies.to_string()),
        ("SERVER_STORAGE_PATH", dir.join("bets.csv").display().to_string()),
    ];
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

/// The course's dataset beside the project, when it is there.
pub fn course_dataset() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/tp0");
    dir.join("agency-1.csv").exists().then_some(dir)
}

/// Open descriptors of a process (`/proc/<pid>/fd`).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}
