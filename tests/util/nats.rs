//! A real NATS cluster as local processes on 127.0.0.1 (free ports), each
//! node with JetStream on and `sync_interval: "always"`, for the replicated
//! store's tests and benchmark.

use super::Proc;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The binary the cluster runs (`NATS_SERVER` overrides the search of `PATH`).
pub fn nats_server() -> String {
    if let Ok(bin) = std::env::var("NATS_SERVER") {
        return bin;
    }
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|d| d.join("nats-server")).find(|p| p.is_file()))
        .unwrap_or_default();
    let Some(bin) = found else {
        panic!("nats-server is not installed: run `bash scripts/install-deps.sh rust` (CI installs it)");
    };
    let out = std::process::Command::new(&bin).arg("--version").output().expect("nats-server --version");
    let version = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        version.contains("v2.15"),
        "{} says {version:?}; the tests need 2.15 (sync_interval: always): run `bash scripts/install-deps.sh rust`",
        bin.display()
    );
    bin.display().to_string()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One node: its ports, its config file and its process (`None` while stopped).
pub struct Node {
    pub name: String,
    pub port: u16,
    pub config: PathBuf,
    pub proc: Option<Proc>,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    bin: String,
    dir: PathBuf,
}

impl Cluster {
    /// Writes the configs of `n` nodes under `dir` and starts them all.
    pub fn start(dir: &Path, n: usize) -> Cluster {
        Cluster::start_with(dir, n, None)
    }

    /// [`start`](Self::start), the client port speaking TLS only with this
    /// certificate and key when `tls` is given.
    pub fn start_with(dir: &Path, n: usize, tls: Option<(&Path, &Path)>) -> Cluster {
        let bin = nats_server();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let mut nodes = Vec::new();
        for (i, (port, cluster_port)) in ports.iter().enumerate() {
            let name = format!("nats{}", i + 1);
            let store = dir.join(&name);
            std::fs::create_dir_all(&store).unwrap();
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, c))| format!("\"nats-route://127.0.0.1:{c}\""))
                .collect();
            let cluster = if n > 1 {
                format!(
                    "cluster {{\n  name: loteria\n  listen: 127.0.0.1:{cluster_port}\n  routes: [{}]\n}}\n",
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            let tls = tls.map_or(String::new(), |(cert, key)| {
                format!("tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n", cert.display(), key.display())
            });
            let config = dir.join(format!("{name}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{port}\n\
                     jetstream {{\n  store_dir: \"{}\"\n  sync_interval: \"always\"\n}}\n{cluster}{tls}",
                    store.display()
                ),
            )
            .unwrap();
            nodes.push(Node { name, port: *port, config, proc: None });
        }
        let mut cluster = Cluster { nodes, bin, dir: dir.to_path_buf() };
        for i in 0..n {
            cluster.start_node(i);
        }
        cluster
    }

    /// Starts (or starts again, on the same store) node `i`.
    pub fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = self.dir.join(format!("{}.log", node.name));
        let args = ["-c", node.config.to_str().unwrap(), "-l", log.to_str().unwrap()];
        let proc = Proc::spawn_args(&self.bin, &args, &node.name, &[], &self.dir);
        // The client port answers once the node is up (JetStream may still elect).
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", node.port)).is_err() {
            assert!(Instant::now() < deadline, "{} did not open its port", node.name);
            std::thread::sleep(Duration::from_millis(50));
        }
        node.proc = Some(proc);
    }

    /// SIGKILLs node `i` and waits for it to be gone.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut proc) = self.nodes[i].proc.take() {
            proc.signal("KILL");
            proc.wait(Duration::from_secs(10));
        }
    }

    /// `nats://127.0.0.1:PORT` of every node, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",")
    }
}
