//! `make bench-replicas` (`cargo bench --bench replicas -- [--agencies N] [--bets M]
//! [--runs R] [--servers 1,2,3] [--mix real|plain] [--quick]`): the system with one server on the
//! local file, and with M = 1, 2, 3 servers sharing a JetStream stream (R3 on a
//! three-node NATS cluster on 127.0.0.1, every node `sync_interval: "always"`),
//! side by side: wall time, CPU of each side (servers, agencies, NATS nodes) and
//! bets per second; beside them JetStream's own floor on this machine: raw 8 kB
//! R3 publishes with async-nats, as many as the runs' views hold bytes, with as
//! many in flight as the agencies keep (agencies x their default window).
//! Agency k starts on server k mod M. Figures are printed, never asserted.

use loteria::auth::AgencyKeys;
use loteria::datagen;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SERVER_BIN: &str = env!("CARGO_BIN_EXE_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_client");
/// The agencies' default pipelining window (`batch.window`).
const WINDOW: usize = 32;
const FLOOR_MESSAGE: usize = 8 * 1024;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port()
}

/// CPU seconds (user + system) of a live process, from `/proc/<pid>/stat`.
fn proc_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, rest)| rest.split(' ').collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

/// Waits for a child and returns whether it exited 0 and its CPU seconds.
fn wait_cpu(child: &Child) -> (bool, f64) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child's pid, with pointers to live locals.
    let rc = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (rc > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, secs(usage.ru_utime) + secs(usage.ru_stime))
}

/// The three-node cluster, started once for every JetStream run.
struct Nats {
    nodes: Vec<Child>,
    urls: String,
}

impl Nats {
    /// Three nodes in `dir`; `sync_always: false` leaves JetStream's default
    /// (fsync every two minutes), for the floor's comparison only.
    fn start(dir: &Path, sync_always: bool) -> Nats {
        let bin = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let mut nodes = Vec::new();
        for (i, (port, cport)) in ports.iter().enumerate() {
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, c))| format!("\"nats-route://127.0.0.1:{c}\""))
                .collect();
            let store = dir.join(format!("nats{}", i + 1));
            std::fs::create_dir_all(&store).expect("node store");
            let conf = dir.join(format!("nats{}.conf", i + 1));
            let text = format!(
                "server_name: nats{}\nlisten: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{}\"\n{}}}\n\
                 cluster {{\n  name: bench\n  listen: 127.0.0.1:{cport}\n  routes: [{}]\n}}\n",
                i + 1,
                store.display(),
                if sync_always { "  sync_interval: \"always\"\n" } else { "" },
                routes.join(", ")
            );
            std::fs::write(&conf, text).expect("node config");
            let log = dir.join(format!("nats{}.log", i + 1));
            let child = Command::new(&bin)
                .args(["-c", &conf.display().to_string(), "-l", &log.display().to_string()])
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{bin}: {e} (install it: bash scripts/install-deps.sh rust)"));
            nodes.push(child);
        }
        for (port, _) in &ports {
            let deadline = Instant::now() + Duration::from_secs(20);
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(Instant::now() < deadline, "a NATS node did not open its port");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let urls = ports.iter().map(|(p, _)| format!("nats://127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
        Nats { nodes, urls }
    }

    fn cpu(&self) -> f64 {
        self.nodes.iter().map(|n| proc_cpu(n.id())).sum()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.kill();
            let _ = n.wait();
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Run {
    secs: f64,
    servers: f64,
    agencies: f64,
    nats: f64,
    /// Bytes of the (first) server's bets file or view.
    bytes: u64,
    /// Messages in the stream (the first server's last applied sequence at close).
    messages: u64,
}

/// A server process, its bets file or view, and the thread reading its log,
/// which returns the stream sequence its view had applied at close (0 on the file).
type Server = (Child, PathBuf, std::thread::JoinHandle<u64>);

fn spawn_server(dir: &Path, port: u16, agencies: u32, keys: &Path, js: Option<(&str, &str)>) -> Server {
    std::fs::create_dir_all(dir).expect("server dir");
    let view = dir.join("bets.csv");
    // `BENCH_SERVER` names another build to measure in the same conditions.
    let server = std::env::var("BENCH_SERVER").unwrap_or_else(|_| SERVER_BIN.to_string());
    let mut cmd = Command::new(server);
    cmd.current_dir(dir)
        .env("SERVER_PORT", port.to_string())
        .env("SERVER_AGENCIES", agencies.to_string())
        .env("SERVER_STORAGE_PATH", &view)
        .env("SERVER_LISTEN_BACKLOG", "4096")
        .env("SERVER_AUTH_KEYS", keys)
        .env_remove("SERVER_AUTH")
        .env_remove("SERVER_CONFIG")
        .stdout(Stdio::piped());
    if let Some((urls, stream)) = js {
        cmd.env("SERVER_STORAGE_BACKEND", "jetstream").env("SERVER_NATS_URLS", urls).env("SERVER_NATS_STREAM", stream);
    }
    let mut child = cmd.spawn().expect("spawn server");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("server stdout");
    let reader = std::thread::spawn(move || {
        let mut applied = 0;
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("accept_connections") {
                let _ = tx.send(());
            }
            if let Some(rest) = line.split("applied_sequence: ").nth(1) {
                applied = rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).unwrap_or(0);
            }
        }
        applied
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("server start");
    (child, view, reader)
}

fn run(dir: &Path, data: &Path, agencies: u32, servers: usize, nats: Option<(&Nats, &str)>) -> Run {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("run dir");
    let keys = AgencyKeys::generate(agencies).expect("random keys");
    let keys_path = dir.join("agency-keys.csv");
    keys.write(&keys_path).expect("write the key file");
    let ports: Vec<u16> = (0..servers).map(|_| free_port()).collect();
    let js = nats.map(|(n, stream)| (n.urls.as_str(), stream));
    let replicas: Vec<Server> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| spawn_server(&dir.join(format!("server{}", i + 1)), *p, agencies, &keys_path, js))
        .collect();
    let nats_before = nats.map_or(0.0, |(n, _)| n.cpu());
    let started = Instant::now();
    let clients: Vec<Child> = (1..=agencies)
        .map(|id| {
            let first = id as usize % servers;
            let list: Vec<String> =
                (0..servers).map(|k| format!("127.0.0.1:{}", ports[(first + k) % servers])).collect();
            Command::new(CLIENT)
                .current_dir(dir)
                .env("CLI_ID", id.to_string())
                .env("CLI_SERVER_ADDRESS", list.join(","))
                .env("CLI_DATA_PATH", data.join(format!("agency-{id}.csv")))
                .env("CLI_LOG_LEVEL", "WARNING")
                .env("CLI_AUTH_KEY", keys.get(id).expect("a key per agency").to_hex())
                .env("CLI_RETRY_MAX_ATTEMPTS", "200")
                .env_remove("CLI_CONFIG")
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn client")
        })
        .collect();
    let mut out = Run::default();
    for c in &clients {
        let (ok, cpu) = wait_cpu(c);
        assert!(ok, "an agency failed");
        out.agencies += cpu;
    }
    out.secs = started.elapsed().as_secs_f64();
    out.nats = nats.map_or(0.0, |(n, _)| n.cpu()) - nats_before;
    out.bytes = std::fs::metadata(&replicas[0].1).map(|m| m.len()).unwrap_or(0);
    for (i, (child, _, reader)) in replicas.into_iter().enumerate() {
        // SAFETY: kill(2) with SIGTERM on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let (ok, cpu) = wait_cpu(&child);
        assert!(ok, "a server failed");
        out.servers += cpu;
        let applied = reader.join().unwrap_or(0);
        if i == 0 {
            out.messages = applied;
        }
    }
    out
}

/// `messages` raw 8 kB publishes to a fresh R3 stream, `window` in flight;
/// returns the wall seconds and the NATS nodes' CPU seconds.
fn floor(nats: &Nats, stream: &str, messages: u64, window: usize) -> (f64, f64) {
    use async_nats::jetstream;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    rt.block_on(async {
        let client = async_nats::connect(nats.urls.split(',').collect::<Vec<_>>()).await.expect("connect to NATS");
        let js = jetstream::new(client);
        let config = loteria::storage::jetstream::stream_config(stream, 3);
        let deadline = Instant::now() + Duration::from_secs(30);
        while js.get_or_create_stream(config.clone()).await.is_err() {
            assert!(Instant::now() < deadline, "no stream {stream}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let payload = bytes::Bytes::from(vec![b'x'; FLOOR_MESSAGE]);
        let before = nats.cpu();
        let started = Instant::now();
        let mut in_flight = std::collections::VecDeque::new();
        for i in 0..messages {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("floor-{i}").as_str());
            let ack = js.publish_with_headers(format!("{stream}.bets.1"), headers, payload.clone()).await;
            in_flight.push_back(ack.expect("publish"));
            if in_flight.len() >= window {
                in_flight.pop_front().expect("an ack").await.expect("acked");
            }
        }
        for ack in in_flight {
            ack.await.expect("acked");
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu = nats.cpu() - before;
        let _ = js.delete_stream(stream).await;
        (secs, cpu)
    })
}

/// Deletes a run's stream, so the nodes' disks hold one run at a time.
fn drop_stream(nats: &Nats, stream: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    rt.block_on(async {
        if let Ok(client) = async_nats::connect(nats.urls.split(',').collect::<Vec<_>>()).await {
            let _ = async_nats::jetstream::new(client).delete_stream(stream).await;
        }
    });
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("replicas: run it with `make bench-replicas` (cargo bench --bench replicas)");
        return;
    }
    let (mut agencies, mut bets, mut runs, mut servers, mut quick) = (5u32, 200_000u64, 3usize, vec![1, 2, 3], false);
    let mut mix = datagen::Mix::Real;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_default();
        let bad = |what: &str| -> ! {
            eprintln!("replicas: bad {what} (options: --agencies N --bets M --runs R --servers 1,2,3 --mix real|plain --quick)");
            std::process::exit(2)
        };
        match a.as_str() {
            "--bench" => {}
            "--quick" => {
                quick = true;
                bets = 20_000;
                runs = 1;
            }
            "--agencies" => agencies = value().parse().unwrap_or_else(|_| bad("--agencies")),
            "--bets" => bets = value().parse().unwrap_or_else(|_| bad("--bets")),
            "--runs" => runs = value().parse().unwrap_or_else(|_| bad("--runs")),
            "--mix" => {
                mix = match value().as_str() {
                    "real" => datagen::Mix::Real,
                    "plain" => datagen::Mix::Plain,
                    _ => bad("--mix"),
                }
            }
            "--servers" => {
                servers = value().split(',').map(|s| s.trim().parse().unwrap_or_else(|_| bad("--servers"))).collect()
            }
            other => bad(other),
        }
    }
    if agencies == 0 || runs == 0 || servers.contains(&0) {
        eprintln!("replicas: --agencies, --runs and every --servers value must be at least 1");
        std::process::exit(2);
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    println!("generating {agencies} agencies x {bets} bets, {mix:?} mix (not timed)");
    datagen::generate_mix(&data, agencies, bets, 7574, 7574, mix).expect("generate data");
    let nats = Nats::start(&tmp.path().join("nats"), true);
    let mut file_runs = Vec::new();
    let mut js_runs: Vec<(usize, Vec<Run>)> = servers.iter().map(|m| (*m, Vec::new())).collect();
    let mut floors = Vec::new();
    let mut relaxed_floors = Vec::new();
    for r in 1..=runs {
        file_runs.push(run(&tmp.path().join("run"), &data, agencies, 1, None));
        for (m, list) in js_runs.iter_mut() {
            let stream = format!("bench-m{m}-r{r}");
            list.push(run(&tmp.path().join("run"), &data, agencies, *m, Some((&nats, &stream))));
            drop_stream(&nats, &stream);
        }
        let bytes = file_runs.last().map_or(0, |f| f.bytes);
        let messages = bytes.div_ceil(FLOOR_MESSAGE as u64).max(1);
        floors.push((messages, floor(&nats, &format!("floor-r{r}"), messages, agencies as usize * WINDOW)));
        let relaxed = Nats::start(&tmp.path().join(format!("nats-default-sync-{r}")), false);
        relaxed_floors.push(floor(&relaxed, &format!("floor-r{r}"), messages, agencies as usize * WINDOW));
        println!("run {r}/{runs} done");
    }
    let total = u64::from(agencies) * bets;
    println!(
        "\n{agencies} agencies x {bets} bets = {total} bets, {runs} runs (medians), window {WINDOW}, durable acks, {} cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!("| store | servers | s | bets/s | CPU servers s | CPU agencies s | CPU NATS s | stream messages |");
    println!("|---|---|---|---|---|---|---|---|");
    let row = |name: &str, m: usize, list: &[Run]| {
        let med = |f: fn(&Run) -> f64| median(list.iter().map(f).collect());
        let secs = med(|r| r.secs);
        println!(
            "| {name} | {m} | {secs:.3} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} |",
            total as f64 / secs,
            med(|r| r.servers),
            med(|r| r.agencies),
            med(|r| r.nats),
            med(|r| r.messages as f64)
        );
        secs
    };
    let file_secs = row("file", 1, &file_runs);
    let mut js_secs = Vec::new();
    for (m, list) in &js_runs {
        js_secs.push((*m, row("jetstream R3", *m, list)));
    }
    let messages = floors[0].0;
    let floor_secs = median(floors.iter().map(|(_, (s, _))| *s).collect());
    let floor_cpu = median(floors.iter().map(|(_, (_, c))| *c).collect());
    println!(
        "\nJetStream's floor: {messages} raw {FLOOR_MESSAGE}-byte R3 publishes (the file run's {} MB), {} in flight: \
         {floor_secs:.3} s, {:.0} publishes/s, {:.1} MB/s, NATS CPU {floor_cpu:.2} s",
        floors[0].0 * FLOOR_MESSAGE as u64 / 1_000_000,
        agencies as usize * WINDOW,
        messages as f64 / floor_secs,
        (messages * FLOOR_MESSAGE as u64) as f64 / 1e6 / floor_secs
    );
    let relaxed_secs = median(relaxed_floors.iter().map(|(s, _)| *s).collect());
    println!(
        "the same with JetStream's default sync (fsync every 2 min, NOT what the project runs): {relaxed_secs:.3} s, \
         {:.0} publishes/s: sync always costs {:.2}x",
        messages as f64 / relaxed_secs,
        floor_secs / relaxed_secs
    );
    for (m, secs) in js_secs {
        println!(
            "M = {m} on JetStream: {:.2}x the file mode's wall, {:.2}x JetStream's floor",
            secs / file_secs,
            secs / floor_secs
        );
    }
    if quick {
        println!("\n(--quick: a small size that only proves the benchmark works; do not read the figures)");
    }
}
