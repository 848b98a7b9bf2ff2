//! `make bench` (`cargo bench --bench end_to_end -- [options]`): the whole system
//! against the floors of the same machine, measured in the same run.
//!
//! - one-process floor: one process, the csv crate reading every agency file and
//!   writing the store rows (agency prepended, no validation), one fsync at the
//!   end: what one program doing all the work alone needs;
//! - I/O floor: the agency files copied into one file, one fsync;
//! - transport floor: the same file bytes pushed by one sender per agency,
//!   concurrently, over loopback TCP into one receiver that appends to a file and
//!   fsyncs once;
//! - the system: the real server (durable acks) and one agency process per
//!   agency, from the agencies' start to the last agency's exit, for window 1
//!   (stop-and-wait) and the default window.
//!
//! It also runs the default window with relaxed acks (`storage.durable: false`)
//! to show what durability costs, and the default window over TLS 1.3 (a fresh
//! deployment PKI per run) beside the same run in plain TCP, wall time and CPU.
//!
//! Per side (agencies, server) it reports CPU seconds per million bets (user and
//! system), fdatasyncs, and (unless `--no-strace`) the syscalls per batch of one
//! extra run under `strace -f -c`.
//!
//! Options (`cargo bench --bench end_to_end -- --help`): `--quick`, `--agencies N`,
//! `--bets M`, `--runs R`, `--windows 1,32`, `--mix real,plain`, `--no-relaxed`, `--no-tls`,
//! `--no-strace`, `--no-load`, `--load-tls`, `--json FILE`, `--keep DIR`. Figures are printed, never asserted.

use loteria::auth::AgencyKeys;
use loteria::config::DEFAULT_BATCH_WINDOW;
use loteria::datagen;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SERVER_BIN: &str = env!("CARGO_BIN_EXE_server");
const CLIENT_BIN: &str = env!("CARGO_BIN_EXE_client");

/// The server and agency programs under test: this build's, or others named by
/// `BENCH_SERVER` and `BENCH_CLIENT` (to measure an older build in the same run
/// conditions, against the same floors).
fn program(var: &str, built: &'static str) -> String {
    std::env::var(var).unwrap_or_else(|_| built.to_string())
}

/// The whole system against the floors of the same machine; figures are
/// printed, never asserted.
#[derive(clap::Parser)]
#[command(name = "end_to_end", bin_name = "cargo bench --bench end_to_end --")]
struct Options {
    /// Agencies (one process each)
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    agencies: u32,
    /// Bets per agency [default: 1000000, 20000 with --quick]
    #[arg(long)]
    bets: Option<u64>,
    /// Runs of each measurement (the median is reported)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// Pipelining windows to run the system with
    #[arg(long, value_delimiter = ',', default_values_t = [1, DEFAULT_BATCH_WINDOW])]
    windows: Vec<usize>,
    /// Also write the figures as JSON to FILE
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Keep the data and stores in DIR instead of a temporary folder
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// A small run (20,000 bets per agency) that only proves the benchmark runs
    #[arg(long)]
    quick: bool,
    /// Skip the default window with relaxed (not fsynced) acks
    #[arg(long)]
    no_relaxed: bool,
    /// Skip the default window over TLS (side by side with plain TCP)
    #[arg(long)]
    no_tls: bool,
    /// Data mixes to measure, each with its own floors (`real`: names like real
    /// files, most non-ASCII, some needing CSV quotes; `plain`: the tests' data)
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [datagen::Mix::Real, datagen::Mix::Plain])]
    mix: Vec<datagen::Mix>,
    /// Skip the extra run of the default window under `strace -f -c` (syscalls per batch)
    #[arg(long)]
    no_strace: bool,
    /// Load generator: this many agencies at once from this one process (each its
    /// own connection, stream and key) against one server [default: 10000, 200 with --quick]
    #[arg(long, value_name = "N")]
    load_agencies: Option<u32>,
    /// Bets per agency of the load generator
    #[arg(long, value_name = "M", default_value_t = 20)]
    load_bets: u64,
    /// Skip the load generator
    #[arg(long)]
    no_load: bool,
    /// The load generator's agencies speak TLS 1.3 (the deployments' way)
    #[arg(long)]
    load_tls: bool,
    /// Passed by `cargo bench`
    #[arg(long, hide = true)]
    bench: bool,
}

impl Options {
    fn load_agencies(&self) -> u32 {
        self.load_agencies.unwrap_or(if self.quick { 200 } else { 10_000 })
    }
    fn bets(&self) -> u64 {
        self.bets.unwrap_or(if self.quick { 20_000 } else { 1_000_000 })
    }
}

// ---- process accounting ------------------------------------------------------

/// Peak RSS (`VmHWM`, KiB) of live processes, sampled every 10 ms until each exits.
///
/// `wait4`'s `ru_maxrss` would be simpler, but Linux carries the high-water mark
/// across `execve`, so a child spawned from this (large) process would report
/// the benchmark's own footprint; `VmHWM` belongs to the program's own memory.
struct PeakRss {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<std::collections::HashMap<u32, u64>>,
}

impl PeakRss {
    fn watch(pids: Vec<u32>) -> PeakRss {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peaks = std::collections::HashMap::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for pid in &pids {
                    if let Some(kib) = vm_hwm(*pid) {
                        let e = peaks.entry(*pid).or_insert(0);
                        *e = kib.max(*e);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peaks
        });
        PeakRss { stop, handle }
    }

    fn finish(self) -> std::collections::HashMap<u32, u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds from the kernel's accounting.
#[derive(Clone, Copy, Default)]
struct Cpu {
    user: f64,
    sys: f64,
}

impl std::ops::AddAssign for Cpu {
    fn add_assign(&mut self, o: Cpu) {
        self.user += o.user;
        self.sys += o.sys;
    }
}

/// Waits for `pid` and returns (exit status, cpu seconds) from the kernel's accounting.
fn wait_rusage(pid: u32) -> (i32, Cpu) {
    let mut status = 0i32;
    // SAFETY: rusage is plain data; all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 fills `status` and `usage`, both valid for writes; pid is our child.
    let rc = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    assert!(rc == pid as libc::pid_t, "wait4({pid}) failed");
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (status, Cpu { user: secs(usage.ru_utime), sys: secs(usage.ru_stime) })
}

// ---- floors ------------------------------------------------------------------

/// Every measurement starts on a settled disk: `out` (the previous run's output,
/// if any) is removed and every dirty page on the machine is written back
/// before the clock starts. Without it each step paid for the one before: the
/// first floor ran while the freshly generated agency files were still being
/// written back, and the later ones while the relaxed-acks run's 230 MB (never
/// synced) were, and the floor's own truncation of its previous output was
/// timed; that made the floors slower and the system's ratio look better.
fn settle(out: Option<&Path>) {
    if let Some(out) = out {
        let _ = std::fs::remove_file(out);
    }
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// The csv crate reads every agency file and writes the store rows (agency
/// prepended) with its writer: no validation, one fsync.
fn compute_floor(files: &[PathBuf], out: &Path) -> Duration {
    settle(Some(out));
    let started = Instant::now();
    let file = std::fs::File::create(out).expect("create floor file");
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_writer(std::io::BufWriter::with_capacity(64 * 1024, file));
    let (mut record, mut row) = (csv::ByteRecord::new(), csv::ByteRecord::new());
    for (i, path) in files.iter().enumerate() {
        let agency = (i + 1).to_string();
        let mut reader =
            csv::ReaderBuilder::new().has_headers(false).flexible(true).from_path(path).expect("open agency file");
        while reader.read_byte_record(&mut record).expect("read") {
            row.clear();
            row.push_field(agency.as_bytes());
            for field in record.iter() {
                row.push_field(field);
            }
            writer.write_byte_record(&row).expect("write");
        }
    }
    let file = writer.into_inner().map_err(|e| e.into_error()).expect("flush").into_inner().expect("flush");
    file.sync_data().expect("fsync");
    started.elapsed()
}

/// The agency files copied into one file, one fsync.
fn io_floor(files: &[PathBuf], out: &Path) -> Duration {
    settle(Some(out));
    let started = Instant::now();
    let mut file = std::fs::File::create(out).expect("create floor file");
    for path in files {
        let mut input = std::fs::File::open(path).expect("open agency file");
        std::io::copy(&mut input, &mut file).expect("copy");
    }
    file.sync_data().expect("fsync");
    started.elapsed()
}

fn transport_floor(files: &[PathBuf], out: &Path) -> Duration {
    settle(Some(out));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let n = files.len();
    let out = out.to_path_buf();
    let started = Instant::now();
    let receiver = std::thread::spawn(move || {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(64);
        let mut readers = Vec::new();
        for _ in 0..n {
            let (mut sock, _) = listener.accept().unwrap();
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match sock.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => tx.send(buf[..k].to_vec()).unwrap(),
                    }
                }
            }));
        }
        drop(tx);
        let mut file = std::fs::File::create(&out).unwrap();
        for chunk in rx {
            file.write_all(&chunk).unwrap();
        }
        file.sync_data().unwrap();
        for r in readers {
            r.join().unwrap();
        }
    });
    let senders: Vec<_> = files
        .iter()
        .cloned()
        .map(|path| {
            std::thread::spawn(move || {
                let mut file = std::fs::File::open(path).unwrap();
                let mut sock = TcpStream::connect(addr).unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let k = file.read(&mut buf).unwrap();
                    if k == 0 {
                        break;
                    }
                    sock.write_all(&buf[..k]).unwrap();
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    receiver.join().unwrap();
    started.elapsed()
}

// ---- the system --------------------------------------------------------------

struct SystemRun {
    elapsed: Duration,
    draw_ms: f64,
    server_rss_kib: u64,
    agency_rss_kib: u64,
    server_cpu: Cpu,
    agency_cpu: Cpu,
    batches: u64,
    syncs: u64,
}

/// `strace -f -c -o FILE PROGRAM` in place of `PROGRAM` when tracing into `dir`.
fn traced(program: &str, trace: Option<(&Path, String)>) -> Command {
    match trace {
        None => Command::new(program),
        Some((dir, name)) => {
            let mut c = Command::new("strace");
            c.arg("-f").arg("-c").arg("-o").arg(dir.join(name)).arg(program);
            c
        }
    }
}

/// Calls per syscall in `strace -c` summaries.
fn strace_counts(files: &[PathBuf]) -> std::collections::BTreeMap<String, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text.lines() {
            let t: Vec<&str> = line.split_whitespace().collect();
            if t.len() < 5 || t[0].parse::<f64>().is_err() || *t.last().unwrap() == "total" {
                continue;
            }
            if let Ok(calls) = t[3].parse::<u64>() {
                *counts.entry(t.last().unwrap().to_string()).or_insert(0) += calls;
            }
        }
    }
    counts
}

/// The traced program's own process (strace's child), for signals.
fn traced_child(pid: u32) -> u32 {
    for _ in 0..500 {
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(child) = children.split_whitespace().next().and_then(|c| c.parse().ok()) {
            return child;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("strace ({pid}) started no child");
}

// Children are reaped with wait4 (for their CPU accounting), not Child::wait.
#[allow(clippy::zombie_processes)]
/// A central for one measured run: a fresh store and a fresh key per agency, as a
/// deployment would have (the handshake is part of the measure). Returns the
/// command (the caller adds what differs) and the keys.
fn server_command(mut cmd: Command, dir: &Path, store_name: &str, agencies: u32) -> (Command, AgencyKeys) {
    let store = dir.join(store_name);
    let _ = std::fs::remove_file(&store);
    let _ = std::fs::remove_file(dir.join(format!("{store_name}.done")));
    let _ = std::fs::remove_file(dir.join(format!("{store_name}.sum")));
    settle(None);
    // The deployment's chain key, kept apart from the store as a deployment keeps it.
    let chain_key = dir.join("keys").join(format!("{store_name}.chain-key"));
    std::fs::create_dir_all(dir.join("keys")).expect("the keys folder");
    loteria::storage::ChainKey::generate().and_then(|k| k.write(&chain_key)).expect("write the chain key");
    let keys = AgencyKeys::generate(agencies).expect("random keys");
    let keys_path = dir.join(format!("{store_name}.keys"));
    keys.write(&keys_path).expect("write the key file");
    cmd.current_dir(dir)
        .env("SERVER_PORT", "0")
        .env("SERVER_AGENCIES", agencies.to_string())
        .env("SERVER_STORAGE_PATH", &store)
        .env("SERVER_LISTEN_BACKLOG", "4096")
        .env("SERVER_AUTH_KEYS", &keys_path)
        .env("SERVER_CHAIN_KEY", &chain_key)
        .env_remove("SERVER_STORAGE_INTEGRITY")
        .env_remove("SERVER_AUTH")
        .env_remove("SERVER_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    (cmd, keys)
}

/// A started central: its lines that contain one of `keep` (the log itself is not
/// buffered whole), and the port read from its start line.
struct RunningServer {
    child: Child,
    lines: mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
    port: u16,
}

fn start_server(mut cmd: Command, keep: &'static [&'static str]) -> RunningServer {
    let mut child = cmd.spawn().expect("spawn server");
    let (tx, lines) = mpsc::channel::<String>();
    let out = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("accept_connections") || keep.iter().any(|k| line.contains(k)) {
                let _ = tx.send(line);
            }
        }
    });
    let first = lines.recv_timeout(Duration::from_secs(30)).expect("server start");
    let port = first.rsplit(':').next().and_then(|p| p.trim().parse().ok()).expect("port in the start line");
    RunningServer { child, lines, reader, port }
}

/// How one measured system run is set up.
#[derive(Clone, Copy)]
struct Setup {
    window: usize,
    durable: bool,
    /// TLS 1.3 with a fresh deployment PKI (made before the clock starts).
    tls: bool,
    /// `false`: the store without sidecar, CRC32C or chain (the integrity's baseline).
    sealed: bool,
}

fn run_system(dir: &Path, data: &Path, agencies: u32, setup: Setup, trace: Option<&Path>) -> SystemRun {
    let Setup { window, durable, tls, sealed } = setup;
    let server_bin = traced(&program("BENCH_SERVER", SERVER_BIN), trace.map(|t| (t, "server.strace".to_string())));
    let (mut cmd, keys) = server_command(server_bin, dir, "bets.csv", agencies);
    cmd.env("SERVER_STORAGE_DURABLE", durable.to_string());
    cmd.env("SERVER_STORAGE_INTEGRITY", sealed.to_string());
    let pki = tls.then(|| {
        let made = loteria::pki::issue(&loteria::pki::server_names(1), Default::default()).expect("make the PKI");
        loteria::pki::write(&made, &dir.join(".keys"), "bench").expect("write the PKI")
    });
    match &pki {
        Some(files) => cmd.env("SERVER_TLS_CERT", &files.server_cert).env("SERVER_TLS_KEY", &files.server_key),
        None => cmd.env_remove("SERVER_TLS_CERT").env_remove("SERVER_TLS_KEY"),
    };
    let RunningServer { child: server, lines: line_rx, reader, port } =
        start_server(cmd, &["action: sorteo", "close_store"]);
    let pid = server.id();

    let started = Instant::now();
    let clients: Vec<u32> = (1..=agencies)
        .map(|id| {
            traced(&program("BENCH_CLIENT", CLIENT_BIN), trace.map(|t| (t, format!("agency-{id}.strace"))))
                .current_dir(dir)
                .env("CLI_ID", id.to_string())
                .env("CLI_SERVER_ADDRESS", format!("127.0.0.1:{port}"))
                .env("CLI_DATA_PATH", data.join(format!("agency-{id}.csv")))
                .env("CLI_BATCH_WINDOW", window.to_string())
                .env("CLI_LOG_LEVEL", "WARNING")
                .env("CLI_AUTH_KEY", keys.get(id).expect("a key per agency").to_hex())
                .env_remove("CLI_CONFIG")
                .env_remove("CLI_TLS_SERVER_NAME")
                .envs(pki.iter().map(|f| ("CLI_TLS_CA", f.ca_cert.as_os_str())))
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn client")
                .id()
        })
        .collect();
    let mut watched = clients.clone();
    watched.push(pid);
    let peaks = PeakRss::watch(watched);
    let mut agency_cpu = Cpu::default();
    for pid in &clients {
        let (status, cpu) = wait_rusage(*pid);
        assert_eq!(status, 0, "an agency failed (wait status {status})");
        agency_cpu += cpu;
    }
    let elapsed = started.elapsed();
    let sorteo = line_rx.recv_timeout(Duration::from_secs(30)).expect("sorteo line");
    let draw_ms = field(&sorteo, "millis").unwrap_or(f64::NAN);
    std::thread::sleep(Duration::from_millis(20));
    let peaks = peaks.finish();
    let agency_rss = clients.iter().filter_map(|p| peaks.get(p)).copied().max().unwrap_or(0);
    let server_rss = peaks.get(&pid).copied().unwrap_or(0);
    let target = if trace.is_some() { traced_child(pid) } else { pid };
    // SAFETY: plain kill(2) on our own child (or strace's).
    unsafe { libc::kill(target as libc::pid_t, libc::SIGTERM) };
    let (status, server_cpu) = wait_rusage(pid);
    assert_eq!(status, 0, "server exit status {status}");
    let close = line_rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    let _ = reader.join();
    SystemRun {
        elapsed,
        draw_ms,
        server_rss_kib: server_rss,
        agency_rss_kib: agency_rss,
        server_cpu,
        agency_cpu,
        batches: field(&close, "batches").unwrap_or(0.0) as u64,
        syncs: field(&close, "syncs").unwrap_or(0.0) as u64,
    }
}

fn field(line: &str, key: &str) -> Option<f64> {
    line.split(" | ").find_map(|f| f.strip_prefix(&format!("{key}: "))).and_then(|v| v.trim().parse().ok())
}

// ---- statistics and report ---------------------------------------------------

#[derive(Clone)]
struct Stat {
    name: String,
    secs: Vec<f64>,
}

impl Stat {
    fn median(&self) -> f64 {
        let mut v = self.secs.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }
    fn min(&self) -> f64 {
        self.secs.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn max(&self) -> f64 {
        self.secs.iter().copied().fold(0.0, f64::max)
    }
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn median_u64(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (`cargo test --all-targets`) only
    // checks that the benchmark builds, since a run takes minutes.
    if !std::env::args().any(|a| a == "--bench") {
        println!("end_to_end: run it with `make bench` (cargo bench --bench end_to_end)");
        return;
    }
    let o = <Options as clap::Parser>::parse();
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = o.keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    let mut json =
        format!("{{\"agencies\":{},\"bets_per_agency\":{},\"runs\":{},\"mixes\":[", o.agencies, o.bets(), o.runs);
    let mut summaries = Vec::new();
    for (i, mix) in o.mix.iter().enumerate() {
        let (part, summary) = measure_mix(&o, &dir, *mix);
        json.push_str(if i > 0 { "," } else { "" });
        json.push_str(&part);
        summaries.push((*mix, summary));
    }
    json.push(']');
    let mut load_figures = None;
    if !o.no_load {
        let load = load_run(&dir, o.load_agencies(), o.load_bets, o.load_tls);
        json.push_str(&format!(
            ",\"load\":{{\"agencies\":{},\"bets_per_agency\":{},\"seconds\":{:.3},\"server_rss_kib\":{},\
             \"right_winners\":{},\"retried\":{}}}",
            o.load_agencies(),
            o.load_bets,
            load.elapsed.as_secs_f64(),
            load.server_rss_kib,
            load.right,
            load.retried
        ));
        load_figures = Some(load);
    }
    json.push_str("}\n");
    print_targets(&o, &summaries, load_figures.as_ref());
    if let Some(path) = &o.json {
        std::fs::write(path, json).expect("write json");
        println!("\nwrote {}", path.display());
    }
    if o.quick {
        println!("\n(--quick: a small size that only proves the benchmark works; do not read the figures)");
    }
}

/// What the closing summary needs from one mix's measurements.
struct MixSummary {
    /// The default window's (durable acks) median over the one-process floor's.
    ratio: f64,
    draw_ms: f64,
    server_rss_kib: u64,
    agency_rss_kib: u64,
    /// TLS on beside off, when both ran.
    tls: Option<TlsCost>,
}

/// The default window's medians with TLS and without.
struct TlsCost {
    plain_s: f64,
    tls_s: f64,
    plain_cpu_s: f64,
    tls_cpu_s: f64,
}

impl TlsCost {
    /// Percent more wall time with TLS.
    fn wall_cost(&self) -> f64 {
        (self.tls_s / self.plain_s - 1.0) * 100.0
    }
    /// Percent more CPU (server plus agencies) with TLS.
    fn cpu_cost(&self) -> f64 {
        (self.tls_cpu_s / self.plain_cpu_s - 1.0) * 100.0
    }
}

/// The issue's targets beside this run's figures (printed, never asserted).
fn print_targets(o: &Options, mixes: &[(datagen::Mix, MixSummary)], load: Option<&LoadRun>) {
    let bets = u64::from(o.agencies) * o.bets();
    println!();
    println!("targets, this run ({} agencies x {} bets):", o.agencies, o.bets());
    println!("| target | this run | met |");
    println!("|---|---|---|");
    let met = |ok: bool| if ok { "yes" } else { "NO" };
    for (mix, m) in mixes {
        println!(
            "| {mix} mix: system (window {DEFAULT_BATCH_WINDOW}, durable acks) <= 1.0 x one-process floor | {:.2} x | {} |",
            m.ratio,
            met(m.ratio <= 1.0)
        );
    }
    for (mix, m) in mixes {
        if let Some(t) = &m.tls {
            let (wall, cpu) = (t.wall_cost(), t.cpu_cost());
            println!("| {mix} mix: TLS 1.3 costs <= 10 % wall time | {wall:+.1} % | {} |", met(wall <= 10.0));
            println!(
                "| {mix} mix: TLS 1.3 costs <= 15 % CPU (server + agencies) | {cpu:+.1} % | {} |",
                met(cpu <= 15.0)
            );
        }
    }
    if let Some((_, m)) = mixes.first() {
        println!("| draw over {bets} stored bets <= 150 ms | {:.0} ms | {} |", m.draw_ms, met(m.draw_ms <= 150.0));
        let (s, a) = (m.server_rss_kib as f64 / 1024.0, m.agency_rss_kib as f64 / 1024.0);
        println!("| server peak RSS <= 32 MiB at {} agencies | {s:.1} MiB | {} |", o.agencies, met(s <= 32.0));
        println!("| agency peak RSS <= 16 MiB | {a:.1} MiB | {} |", met(a <= 16.0));
    }
    if let Some(l) = load {
        let rss = l.server_rss_kib as f64 / 1024.0;
        println!(
            "| {} agencies at once: each its own right winners, server peak RSS <= 64 MiB | {} right, {rss:.1} MiB | {} |",
            o.load_agencies(),
            l.right,
            met(l.right == o.load_agencies() && rss <= 64.0)
        );
    }
}

/// Every measurement on data of one mix; returns its JSON and what the
/// closing summary needs.
fn measure_mix(o: &Options, dir: &Path, mix: datagen::Mix) -> (String, MixSummary) {
    let data = dir.join(format!("data-{mix}"));
    let total = u64::from(o.agencies) * o.bets();
    println!(
        "generating {} agencies x {} bets ({} bets, {mix} mix) in {} (not timed)",
        o.agencies,
        o.bets(),
        total,
        data.display()
    );
    let summaries = datagen::generate_mix(&data, o.agencies, o.bets(), 7574, 7574, mix).expect("generate data");
    let files: Vec<PathBuf> = summaries.iter().map(|s| s.path.clone()).collect();
    let bytes: u64 = files.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum();

    let mut compute = Stat { name: "one-process floor (csv crate reads, writes rows, 1 fsync)".into(), secs: vec![] };
    let mut io = Stat { name: "I/O floor (files copied into one, 1 fsync)".into(), secs: vec![] };
    let mut transport = Stat { name: "transport floor (file bytes over loopback TCP, 1 fsync)".into(), secs: vec![] };
    // (label, setup, figures)
    let mut systems: Vec<(String, Setup, Stat, Vec<SystemRun>)> = o
        .windows
        .iter()
        .map(|w| {
            let label = format!("window {w}{}", if *w == 1 { " (stop-and-wait)" } else { "" });
            let setup = Setup { window: *w, durable: true, tls: false, sealed: true };
            (label.clone(), setup, Stat { name: format!("system, {label}"), secs: vec![] }, vec![])
        })
        .collect();
    if !o.no_relaxed {
        let label = format!("window {DEFAULT_BATCH_WINDOW}, relaxed acks (no fdatasync)");
        let setup = Setup { window: DEFAULT_BATCH_WINDOW, durable: false, tls: false, sealed: true };
        systems.push((label.clone(), setup, Stat { name: format!("system, {label}"), secs: vec![] }, vec![]));
    }
    if !o.no_tls {
        if !systems.iter().any(|(_, s, _, _)| s.window == DEFAULT_BATCH_WINDOW && s.durable && !s.tls) {
            let label = format!("window {DEFAULT_BATCH_WINDOW}");
            let setup = Setup { window: DEFAULT_BATCH_WINDOW, durable: true, tls: false, sealed: true };
            systems.push((label.clone(), setup, Stat { name: format!("system, {label}"), secs: vec![] }, vec![]));
        }
        let label = format!("window {DEFAULT_BATCH_WINDOW}, TLS 1.3");
        let setup = Setup { window: DEFAULT_BATCH_WINDOW, durable: true, tls: true, sealed: true };
        systems.push((label.clone(), setup, Stat { name: format!("system, {label}"), secs: vec![] }, vec![]));
    }
    // The baseline the integrity's cost is read against: the default system
    // without sidecar, checksums or chain.
    let label = format!("window {DEFAULT_BATCH_WINDOW}, integrity off (no sidecar, no CRC32C, no chain)");
    let setup = Setup { window: DEFAULT_BATCH_WINDOW, durable: true, tls: false, sealed: false };
    systems.push((label.clone(), setup, Stat { name: format!("system, {label}"), secs: vec![] }, vec![]));
    for run in 1..=o.runs {
        compute.secs.push(compute_floor(&files, &dir.join("floor.csv")).as_secs_f64());
        io.secs.push(io_floor(&files, &dir.join("io.bin")).as_secs_f64());
        transport.secs.push(transport_floor(&files, &dir.join("transport.bin")).as_secs_f64());
        for (_, setup, stat, runs) in systems.iter_mut() {
            let r = run_system(dir, &data, o.agencies, *setup, None);
            stat.secs.push(r.elapsed.as_secs_f64());
            runs.push(r);
        }
        println!("run {run}/{} done", o.runs);
    }
    for f in ["floor.csv", "io.bin", "transport.bin"] {
        let _ = std::fs::remove_file(dir.join(f));
    }

    println!();
    println!(
        "{mix} mix: {} agencies x {} bets = {} bets ({:.1} MiB of agency files), {} runs, this machine: {} cores",
        o.agencies,
        o.bets(),
        total,
        bytes as f64 / 1048576.0,
        o.runs,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!("| measurement | median s | min–max s | bets/s (median) | / one-process floor | / transport floor |");
    println!("|---|---|---|---|---|---|");
    let (cf, tf) = (compute.median(), transport.median());
    let mut rows = vec![compute.clone(), io.clone(), transport.clone()];
    rows.extend(systems.iter().map(|(_, _, s, _)| s.clone()));
    for s in &rows {
        println!(
            "| {} | {:.3} | {:.3}–{:.3} | {:.0} | {:.2} | {:.2} |",
            s.name,
            s.median(),
            s.min(),
            s.max(),
            total as f64 / s.median(),
            s.median() / cf,
            s.median() / tf
        );
    }
    println!();
    let per_m = 1e6 / total as f64;
    println!(
        "| system | draw ms (median) | server peak RSS MiB | largest agency peak RSS MiB \
         | server CPU s/M bets (user + sys) | agencies CPU s/M bets (user + sys) | batches | fdatasyncs |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (label, _, _, runs) in &systems {
        let mut draws: Vec<f64> = runs.iter().map(|r| r.draw_ms).collect();
        draws.sort_by(|a, b| a.total_cmp(b));
        let (su, ss) = (
            median_f64(runs.iter().map(|r| r.server_cpu.user).collect()),
            median_f64(runs.iter().map(|r| r.server_cpu.sys).collect()),
        );
        let (au, asys) = (
            median_f64(runs.iter().map(|r| r.agency_cpu.user).collect()),
            median_f64(runs.iter().map(|r| r.agency_cpu.sys).collect()),
        );
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.3} ({:.3} + {:.3}) | {:.3} ({:.3} + {:.3}) | {} | {} |",
            label,
            draws[draws.len() / 2],
            median_u64(&runs.iter().map(|r| r.server_rss_kib).collect::<Vec<_>>()) as f64 / 1024.0,
            median_u64(&runs.iter().map(|r| r.agency_rss_kib).collect::<Vec<_>>()) as f64 / 1024.0,
            (su + ss) * per_m,
            su * per_m,
            ss * per_m,
            (au + asys) * per_m,
            au * per_m,
            asys * per_m,
            median_u64(&runs.iter().map(|r| r.batches).collect::<Vec<_>>()),
            median_u64(&runs.iter().map(|r| r.syncs).collect::<Vec<_>>()),
        );
    }
    if !o.no_strace {
        strace_report(dir, &data, o.agencies);
    }
    let find = |tls: bool| {
        systems.iter().find(|(_, s, _, _)| s.window == DEFAULT_BATCH_WINDOW && s.durable && s.tls == tls && s.sealed)
    };
    let tls = match (find(false), find(true)) {
        (Some((_, _, plain_stat, plain)), Some((_, _, tls_stat, tls))) => {
            let cpu = |runs: &[SystemRun]| {
                median_f64(
                    runs.iter()
                        .map(|r| r.server_cpu.user + r.server_cpu.sys + r.agency_cpu.user + r.agency_cpu.sys)
                        .collect(),
                )
            };
            let t = TlsCost {
                plain_s: plain_stat.median(),
                tls_s: tls_stat.median(),
                plain_cpu_s: cpu(plain),
                tls_cpu_s: cpu(tls),
            };
            println!();
            println!(
                "TLS 1.3 beside plain TCP (window {DEFAULT_BATCH_WINDOW}, durable acks, medians of {} runs):",
                o.runs
            );
            println!("| link | wall s | CPU s (server + agencies) | CPU s/M bets |");
            println!("|---|---|---|---|");
            println!("| plain TCP | {:.3} | {:.3} | {:.3} |", t.plain_s, t.plain_cpu_s, t.plain_cpu_s * per_m);
            println!("| TLS 1.3 | {:.3} | {:.3} | {:.3} |", t.tls_s, t.tls_cpu_s, t.tls_cpu_s * per_m);
            println!("| TLS cost | {:+.1} % | {:+.1} % | |", t.wall_cost(), t.cpu_cost());
            Some(t)
        }
        _ => None,
    };
    let default = find(false);
    let unsealed = systems.iter().find(|(_, s, _, _)| !s.sealed);
    if let (Some((_, _, with, _)), Some((_, _, without, _))) = (default, unsealed) {
        let (with, without) = (with.median(), without.median());
        println!(
            "integrity cost (sidecar CRC32C + BLAKE3/HMAC-SHA256 chain), window {DEFAULT_BATCH_WINDOW}, durable acks: \
             {with:.3} s with, {without:.3} s without: {:+.1} % of the wall (target: at most +5 %)",
            100.0 * (with / without - 1.0)
        );
    }
    let summary = match default {
        Some((_, _, stat, runs)) => MixSummary {
            ratio: stat.median() / cf,
            draw_ms: median_f64(runs.iter().map(|r| r.draw_ms).collect()),
            server_rss_kib: runs.iter().map(|r| r.server_rss_kib).max().unwrap_or(0),
            agency_rss_kib: runs.iter().map(|r| r.agency_rss_kib).max().unwrap_or(0),
            tls,
        },
        None => MixSummary { ratio: f64::NAN, draw_ms: f64::NAN, server_rss_kib: 0, agency_rss_kib: 0, tls },
    };

    let mut json = format!("{{\"mix\":\"{mix}\",\"measurements\":[");
    for (i, s) in rows.iter().enumerate() {
        let secs: Vec<String> = s.secs.iter().map(|x| format!("{x:.4}")).collect();
        json.push_str(&format!(
            "{}{{\"name\":\"{}\",\"seconds\":[{}],\"median\":{:.4}}}",
            if i > 0 { "," } else { "" },
            s.name,
            secs.join(","),
            s.median()
        ));
    }
    json.push_str("],\"system\":[");
    for (i, (label, setup, _, runs)) in systems.iter().enumerate() {
        let items: Vec<String> = runs
            .iter()
            .map(|r| {
                format!(
                    "{{\"seconds\":{:.4},\"draw_ms\":{},\"server_rss_kib\":{},\"agency_rss_kib\":{},\
                     \"server_user_s\":{:.3},\"server_sys_s\":{:.3},\"agencies_user_s\":{:.3},\
                     \"agencies_sys_s\":{:.3},\"batches\":{},\"syncs\":{}}}",
                    r.elapsed.as_secs_f64(),
                    r.draw_ms,
                    r.server_rss_kib,
                    r.agency_rss_kib,
                    r.server_cpu.user,
                    r.server_cpu.sys,
                    r.agency_cpu.user,
                    r.agency_cpu.sys,
                    r.batches,
                    r.syncs
                )
            })
            .collect();
        json.push_str(&format!(
            "{}{{\"label\":\"{}\",\"window\":{},\"durable\":{},\"tls\":{},\"runs\":[{}]}}",
            if i > 0 { "," } else { "" },
            label,
            setup.window,
            setup.durable,
            setup.tls,
            items.join(",")
        ));
    }
    json.push_str("]}");
    (json, summary)
}

/// One run of the default window (durable acks) under `strace -f -c`: syscalls
/// per batch on each side (the run's time is not reported: strace slows it).
fn strace_report(dir: &Path, data: &Path, agencies: u32) {
    if Command::new("strace").arg("-V").stdout(Stdio::null()).status().map(|s| !s.success()).unwrap_or(true) {
        println!("\n(strace is not installed (`make deps` installs it): no syscall counts)");
        return;
    }
    let trace = dir.join("strace");
    let _ = std::fs::remove_dir_all(&trace);
    std::fs::create_dir_all(&trace).expect("strace folder");
    let setup = Setup { window: DEFAULT_BATCH_WINDOW, durable: true, tls: false, sealed: true };
    let r = run_system(dir, data, agencies, setup, Some(&trace));
    let server = strace_counts(&[trace.join("server.strace")]);
    let clients: Vec<PathBuf> = (1..=agencies).map(|id| trace.join(format!("agency-{id}.strace"))).collect();
    let agencies_counts = strace_counts(&clients);
    let batches = r.batches.max(1) as f64;
    println!();
    println!(
        "syscalls per batch, window {DEFAULT_BATCH_WINDOW}, durable acks, one run under strace -f -c ({} batches):",
        r.batches
    );
    println!("| side | all | read-like | write-like | epoll | futex | fdatasync (total) | top 5 |");
    println!("|---|---|---|---|---|---|---|---|");
    for (side, c) in [("server", &server), ("agencies", &agencies_counts)] {
        let sum = |names: &[&str]| names.iter().map(|n| c.get(*n).copied().unwrap_or(0)).sum::<u64>();
        let all: u64 = c.values().sum();
        let mut top: Vec<(&String, &u64)> = c.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1));
        let top: Vec<String> = top.iter().take(5).map(|(n, k)| format!("{n} {k}")).collect();
        println!(
            "| {side} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
            all as f64 / batches,
            sum(&["read", "recvfrom", "recvmsg", "readv", "pread64"]) as f64 / batches,
            sum(&["write", "writev", "sendto", "sendmsg", "pwrite64"]) as f64 / batches,
            sum(&["epoll_wait", "epoll_pwait", "epoll_ctl"]) as f64 / batches,
            sum(&["futex"]) as f64 / batches,
            sum(&["fdatasync", "fsync"]),
            top.join(", ")
        );
    }
}

// ---- load generator ------------------------------------------------------------

struct LoadRun {
    elapsed: Duration,
    server_rss_kib: u64,
    right: u32,
    retried: u32,
}

/// Raises this process's descriptor limit (soft and hard, as root may) so that
/// it and the server it spawns (which inherits it) hold `wanted` descriptors.
fn raise_nofile(wanted: u64) {
    let mut lim: libc::rlimit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit fill or read a valid rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur >= wanted {
            return;
        }
        let raised = libc::rlimit { rlim_cur: wanted, rlim_max: wanted.max(lim.rlim_max) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            let soft = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
            println!("(could not raise RLIMIT_NOFILE to {wanted}; soft limit now {})", lim.rlim_max);
        }
    }
}

/// `agencies` agencies at once from this process, each its own connection,
/// generated stream and key, against one server (durable acks): every agency
/// must get exactly the winners of its own file.
// The server is reaped with wait4, not Child::wait.
#[allow(clippy::zombie_processes)]
fn load_run(dir: &Path, agencies: u32, bets: u64, tls: bool) -> LoadRun {
    let data = dir.join("data-load");
    println!();
    let link = if tls { "TLS 1.3" } else { "plain TCP" };
    println!(
        "load generator: {agencies} agencies x {bets} bets at once from one process, {link} (generating, not timed)"
    );
    let summaries = datagen::generate_mix(&data, agencies, bets, 7574, 7574, datagen::Mix::Real).expect("generate");
    let mut expected: std::collections::HashMap<u32, Vec<String>> = std::collections::HashMap::new();
    for line in std::fs::read_to_string(data.join("expected-winners.csv")).expect("expected winners").lines() {
        if let Some((a, d)) = line.split_once(',') {
            expected.entry(a.parse().expect("agency")).or_default().push(d.to_string());
        }
    }
    // Each agency reads its stream from memory (generated above, read back one
    // file at a time): 10,000 agencies then need one descriptor each here (the
    // socket) and one each in the server.
    let streams: Vec<std::sync::Arc<[u8]>> =
        summaries.iter().map(|s| std::fs::read(&s.path).expect("generated stream").into()).collect();
    raise_nofile(u64::from(agencies) + 1024);
    let (mut cmd, keys) =
        server_command(Command::new(program("BENCH_SERVER", SERVER_BIN)), dir, "bets-load.csv", agencies);
    cmd.env("SERVER_MAX_CONNECTIONS", (u64::from(agencies) + 64).to_string());
    let agency_tls = tls.then(|| {
        let made = loteria::pki::issue(&loteria::pki::server_names(1), Default::default()).expect("make the PKI");
        let files = loteria::pki::write(&made, &dir.join(".keys"), "load").expect("write the PKI");
        cmd.env("SERVER_TLS_CERT", &files.server_cert).env("SERVER_TLS_KEY", &files.server_key);
        loteria::net::tls::AgencyTls::load(&files.ca_cert, None).expect("load the CA")
    });
    let RunningServer { child: server, reader, port, .. } = start_server(cmd, &[]);
    let pid = server.id();
    let peaks = PeakRss::watch(vec![pid]);

    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let cancel = tokio_util::sync::CancellationToken::new();
    let reports = local.block_on(&runtime, async {
        let tasks: Vec<_> = summaries
            .iter()
            .zip(streams)
            .map(|(s, stream)| {
                let cfg = loteria::config::ClientConfig {
                    id: s.agency,
                    server_address: format!("127.0.0.1:{port}"),
                    batch_max_amount: 100,
                    data_path: s.path.clone(),
                    log_level: slog::Level::Warning,
                    batch_window: DEFAULT_BATCH_WINDOW,
                    retry_initial: Duration::from_millis(100),
                    retry_max: Duration::from_millis(2000),
                    retry_attempts: 30,
                    auth_key: keys.get(s.agency).cloned(),
                    tls: agency_tls.clone(),
                };
                let (log, cancel) = (log.clone(), cancel.clone());
                let name = cfg.data_path.clone();
                let open = move || {
                    let rows = Box::new(std::io::Cursor::new(stream.clone()));
                    Ok(loteria::client::BetReader::from_reader(name.clone(), rows, 4096))
                };
                tokio::task::spawn_local(async move {
                    (cfg.id, loteria::client::run_agency_with(&cfg, &log, &cancel, open).await)
                })
            })
            .collect();
        let mut reports = Vec::with_capacity(tasks.len());
        for t in tasks {
            reports.push(t.await.expect("agency task"));
        }
        reports
    });
    let elapsed = started.elapsed();
    let (mut right, mut retried, mut failed) = (0u32, 0u32, 0u32);
    for (agency, report) in &reports {
        match report {
            Ok(r) => {
                let want = expected.get(agency).cloned().unwrap_or_default();
                if r.sent == bets && r.winners == want {
                    right += 1;
                }
                if r.sessions > 1 {
                    retried += 1;
                }
            }
            Err(e) => {
                failed += 1;
                if failed <= 5 {
                    println!("agency {agency} failed: {e}");
                }
            }
        }
    }
    std::thread::sleep(Duration::from_millis(20));
    let server_rss = peaks.finish().get(&pid).copied().unwrap_or(0);
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let (status, cpu) = wait_rusage(pid);
    let _ = reader.join();
    println!("| agencies at once | bets each | wall s | agencies with their right winners | needed a retry | failed | server peak RSS MiB | server CPU s (user + sys) |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {agencies} | {bets} | {:.2} | {right} of {agencies} | {retried} | {failed} | {:.1} | {:.2} ({:.2} + {:.2}) |",
        elapsed.as_secs_f64(),
        server_rss as f64 / 1024.0,
        cpu.user + cpu.sys,
        cpu.user,
        cpu.sys
    );
    assert_eq!(status, 0, "server exit status {status}");
    assert_eq!(right, agencies, "every agency must get its own right winners");
    LoadRun { elapsed, server_rss_kib: server_rss, right, retried }
}
