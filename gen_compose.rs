//! `gen_compose N [--servers M] [--output FILE] [--template FILE]`: renders
//! `docker-compose.tmpl.yaml` into a compose file with a server (or M replicas
//! on a three-node NATS JetStream cluster) and N agencies.
//!
//! The template is plain text with marked blocks, so what ends up in the
//! compose file is visible in the template; the result is parsed back as YAML and
//! checked before anything is written.
//!
//! Each run makes a fresh random key per agency: the server's copy of all of
//! them goes to `.keys/<output name>.agency-keys.csv` beside the output file
//! (directory 0700, file 0600; the directory is mounted read-only into the server),
//! and each agency's own key into its block's environment (`CLI_AUTH_KEY`). Keys
//! are never printed. The file is named after the compose file because each
//! compose file carries its own generation's keys: generating a second compose file
//! in the same directory must not invalidate the first.
//!
//! Each run also makes the deployment's PKI beside the keys (`loteria::pki`): a
//! fresh CA and the central's certificate for `server`, `server1`..`serverM`,
//! `localhost` and `127.0.0.1` (`.keys/<name>.server.pem`, key `.server.key`
//! 0600), mounted read-only into the server; every agency gets only the CA
//! certificate (`.keys/<name>.ca.pem` at `/tls/ca.pem`). The CA's key is never
//! written: nothing can be issued under this CA after the run (docs/tls.md).
//! With M >= 2 the same CA also signs the NATS nodes' certificate
//! (`.keys/<name>.nats.pem`, key `.nats.key` 0600), and each node's configuration
//! goes to `.nats/<name>.natsK.conf` (`nats` module).

#[path = "gen_compose/nats.rs"]
mod nats;

use loteria::auth::AgencyKeys;
use loteria::pki;
use std::path::PathBuf;
use std::process::ExitCode;

/// More agencies and servers than this would not fit the /24 network.
const MAX_CONTAINERS: u32 = 250;

/// Renders docker-compose.tmpl.yaml into a compose file: the central server (or
/// M replicas behind the name `server`) and N agencies, with a fresh key per agency.
#[derive(Debug, clap::Parser)]
#[command(name = "gen_compose", version)]
struct Args {
    /// Number of agencies (0 or more)
    #[arg(value_name = "N")]
    agencies: u32,
    /// Number of central servers: 1 is the container `server`; M >= 2 are
    /// `server1`..`serverM`, all with the network alias `server`, storing on a
    /// three-node NATS JetStream cluster `nats1`..`nats3`
    #[arg(long, value_name = "M", default_value_t = 1, value_parser = parse_servers)]
    servers: u32,
    /// The compose file to write
    #[arg(short, long, value_name = "FILE", default_value = "docker-compose-dev.yaml")]
    output: PathBuf,
    /// The template to render
    #[arg(long, value_name = "FILE", default_value = "docker-compose.tmpl.yaml")]
    template: PathBuf,
}

fn parse_servers(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(m) if m >= 1 => Ok(m),
        _ => Err(format!("M must be a whole number of servers >= 1, got {s:?}")),
    }
}

fn parse_args(args: &[String]) -> Result<Args, clap::Error> {
    use clap::{CommandFactory, Parser};
    let parsed = Args::try_parse_from(std::iter::once("gen_compose".to_string()).chain(args.iter().cloned()))?;
    if parsed.agencies.saturating_add(parsed.servers).saturating_add(nats::nodes_for(parsed.servers)) > MAX_CONTAINERS {
        return Err(Args::command().error(
            clap::error::ErrorKind::ValueValidation,
            format!(
                "N + M (+ {} NATS nodes when M >= 2) must be at most {MAX_CONTAINERS} (the network is a /24), got {} + {}",
                nats::NODES,
                parsed.agencies,
                parsed.servers
            ),
        ));
    }
    Ok(parsed)
}

/// Where the server's key file goes, relative to the compose file's directory.
const KEYS_DIR: &str = ".keys";
const KEYS_SUFFIX: &str = ".agency-keys.csv";

/// The key file's name for a compose file: its stem plus [`KEYS_SUFFIX`], with
/// anything but `[A-Za-z0-9._-]` replaced so the name is a plain YAML scalar.
fn keys_file_name(output: &std::path::Path) -> String {
    let stem = output.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let safe: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    format!("{}{KEYS_SUFFIX}", if safe.is_empty() { "compose" } else { &safe })
}

/// The deployment's name in its key and PKI files: the compose file's stem.
fn deployment_stem(output: &std::path::Path) -> String {
    let name = keys_file_name(output);
    name.strip_suffix(KEYS_SUFFIX).unwrap_or(&name).to_string()
}

/// Makes the deployment's CA and server certificate (and the NATS nodes' one
/// for replicas) and writes them into `.keys/` beside the compose file (the CA's
/// key is dropped, never written).
fn write_pki(output: &std::path::Path, servers: u32) -> Result<(pki::PkiFiles, Option<pki::NatsFiles>), pki::PkiError> {
    let base = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let (dir, stem, names) = (base.join(KEYS_DIR), deployment_stem(output), pki::server_names(servers));
    match nats::nodes_for(servers) {
        0 => Ok((pki::write(&pki::issue(&names, pki::Validity::default())?, &dir, &stem)?, None)),
        nodes => {
            let (made, leaf) = pki::issue_with_nats(&names, &pki::nats_names(nodes), pki::Validity::default())?;
            Ok((pki::write(&made, &dir, &stem)?, Some(pki::write_nats(&leaf, &dir, &stem)?)))
        }
    }
}

/// The chain key's file name for a compose file (beside its agency keys).
fn chain_key_file_name(output: &std::path::Path) -> String {
    keys_file_name(output).replace(KEYS_SUFFIX, ".chain-key")
}

/// Writes the deployment's fresh chain key beside the agency keys (`.keys/`, file
/// 0600): the servers seal the store with it; it never goes on the store's volume.
fn write_chain_key(output: &std::path::Path) -> std::io::Result<PathBuf> {
    let base = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let path = base.join(KEYS_DIR).join(chain_key_file_name(output));
    loteria::storage::ChainKey::generate()?.write(&path)?;
    restrict(&path)?;
    Ok(path)
}

/// Writes the server's key file beside the compose file (`.keys/`, 0700; file 0600).
fn write_keys(output: &std::path::Path, keys: &AgencyKeys) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let base = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let dir = base.join(KEYS_DIR);
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let path = dir.join(keys_file_name(output));
    keys.write(&path)?;
    Ok(path)
}

fn restrict(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Splits `text` at the `# BEGIN name` and `# END name` lines: (before, block, after).
fn section<'a>(text: &'a str, name: &str) -> Result<(&'a str, &'a str, &'a str), String> {
    let (begin_marker, end_marker) = (format!("# BEGIN {name}"), format!("# END {name}"));
    let line = |marker: &str| {
        text.lines()
            .scan(0usize, |pos, l| {
                let at = *pos;
                *pos += l.len() + 1;
                Some((at, l))
            })
            .find(|(_, l)| l.trim_end() == marker)
            .map(|(at, _)| at)
    };
    let begin = line(&begin_marker).ok_or(format!("template has no {begin_marker:?} line"))?;
    let end = line(&end_marker).ok_or(format!("template has no {end_marker:?} line"))?;
    if end < begin {
        return Err(format!("{end_marker:?} comes before {begin_marker:?}"));
    }
    let block = &text[begin + begin_marker.len()..end];
    let after = &text[end + end_marker.len()..];
    Ok((&text[..begin], block.strip_prefix('\n').unwrap_or(block), after.strip_prefix('\n').unwrap_or(after)))
}

/// What one generation renders: counts, keys, and the deployment's fresh id.
struct Deployment<'a> {
    agencies: u32,
    servers: u32,
    keys: &'a AgencyKeys,
    keys_file: &'a str,
    /// The stem of the PKI files in `.keys/` (`<stem>.ca.pem`, `.server.pem`, `.server.key`).
    tls_stem: &'a str,
    chain_key_file: &'a str,
    /// Names the NATS nodes' volumes and the stream (replicas only): a new
    /// generation, a new store.
    id: &'a str,
}

/// Renders the template: the `server` block for one server, otherwise the
/// `replica` block per server and the `nats` block (and its volume) per NATS node;
/// the `client` block per agency.
fn render(template: &str, d: &Deployment) -> Result<String, String> {
    let (head, server, rest) = section(template, "server")?;
    let (between, replica, rest) = section(rest, "replica")?;
    let (after_replicas, nats_block, rest) = section(rest, "nats")?;
    let (before_clients, client, rest) = section(rest, "client")?;
    let (networks, volumes, rest) = section(rest, "volumes")?;
    let (before_nats_volumes, nats_volume, tail) = section(rest, "nats_volume")?;
    let deps: Vec<String> = match d.servers {
        1 => vec!["      - server".to_string()],
        m => (1..=m).map(|k| format!("      - server{k}")).collect(),
    };
    let nodes = nats::nodes_for(d.servers);
    let nats_deps: Vec<String> =
        (1..=nodes).map(|n| format!("      {}:\n        condition: service_healthy", nats::node(n))).collect();
    let fill = |text: &str| {
        text.replace("{{agencies}}", &d.agencies.to_string())
            .replace("{{servers}}", &d.servers.to_string())
            .replace("{{keys_file}}", d.keys_file)
            .replace("{{tls_stem}}", d.tls_stem)
            .replace("{{chain_key_file}}", d.chain_key_file)
            .replace("{{deployment}}", d.id)
            .replace("{{server_deps}}", &deps.join("\n"))
            .replace("{{nats_urls}}", &nats::client_urls(nodes))
            .replace("{{nats_deps}}", &nats_deps.join("\n"))
    };
    let mut out = String::with_capacity(template.len() + client.len() * d.agencies as usize);
    out.push_str(&fill(head));
    if d.servers == 1 {
        out.push_str(&fill(server));
    } else {
        for k in 1..=d.servers {
            out.push_str(&fill(&replica.replace("{{k}}", &k.to_string())));
        }
    }
    out.push_str(&fill(between));
    for n in 1..=nodes {
        out.push_str(&fill(&nats_block.replace("{{n}}", &n.to_string())));
    }
    out.push_str(&fill(after_replicas));
    out.push_str(&fill(before_clients));
    for id in 1..=d.agencies {
        let key = d.keys.get(id).ok_or(format!("no key for agency {id}"))?;
        out.push_str(&fill(&client.replace("{{id}}", &id.to_string()).replace("{{auth_key}}", &key.to_hex())));
    }
    out.push_str(&fill(networks));
    if nodes > 0 {
        out.push_str(&fill(volumes));
        out.push_str(&fill(before_nats_volumes));
        for n in 1..=nodes {
            out.push_str(&fill(&nats_volume.replace("{{n}}", &n.to_string())));
        }
    }
    out.push_str(&fill(tail));
    check(&out, d.agencies, d.servers)?;
    Ok(out)
}

/// A fresh deployment id: 12 hex digits from the OS's random source.
fn deployment_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 6];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Parses the result back and checks the services it must have.
fn check(rendered: &str, agencies: u32, servers: u32) -> Result<(), String> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(rendered).map_err(|e| format!("rendered file is not valid YAML: {e}"))?;
    let services = doc.get("services").and_then(|s| s.as_mapping()).ok_or("rendered file has no services")?;
    let expected = agencies + servers + nats::nodes_for(servers);
    if services.len() != expected as usize {
        return Err(format!("expected {expected} services, rendered {}", services.len()));
    }
    for id in 1..=agencies {
        if !services.contains_key(format!("client{id}").as_str()) {
            return Err(format!("service client{id} missing"));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&args) {
        Ok(a) => a,
        // Help and version on stdout, exit 0; bad arguments on stderr, exit 2.
        Err(e) => e.exit(),
    };
    let template = match std::fs::read_to_string(&args.template) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("gen_compose: cannot read template {}: {e}", args.template.display());
            return ExitCode::from(1);
        }
    };
    let keys = match AgencyKeys::generate(args.agencies) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("gen_compose: cannot read random bytes for the agency keys: {e}");
            return ExitCode::from(1);
        }
    };
    let id = match deployment_id() {
        Ok(id) => id,
        Err(e) => {
            eprintln!("gen_compose: cannot read random bytes for the deployment id: {e}");
            return ExitCode::from(1);
        }
    };
    let keys_file = keys_file_name(&args.output);
    let tls_stem = deployment_stem(&args.output);
    let chain_key_file = chain_key_file_name(&args.output);
    let deployment = Deployment {
        agencies: args.agencies,
        servers: args.servers,
        keys: &keys,
        keys_file: &keys_file,
        tls_stem: &tls_stem,
        chain_key_file: &chain_key_file,
        id: &id,
    };
    let rendered = match render(&template, &deployment) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gen_compose: {}: {e}", args.template.display());
            return ExitCode::from(1);
        }
    };
    let keys_path = match write_keys(&args.output, &keys) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("gen_compose: cannot write the agency keys beside {}: {e}", args.output.display());
            return ExitCode::from(1);
        }
    };
    let (pki_files, nats_files) = match write_pki(&args.output, args.servers) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("gen_compose: {e}");
            return ExitCode::from(1);
        }
    };
    if nats_files.is_some() {
        let base = args.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        if let Err(e) = nats::write_configs(base, &tls_stem, nats::NODES) {
            eprintln!(
                "gen_compose: cannot write the NATS configurations in {}: {e}",
                base.join(nats::CONF_DIR).display()
            );
            return ExitCode::from(1);
        }
    }
    if let Err(e) = write_chain_key(&args.output) {
        eprintln!("gen_compose: cannot write the chain key beside {}: {e}", args.output.display());
        return ExitCode::from(1);
    }
    if let Err(e) = std::fs::write(&args.output, rendered) {
        eprintln!("gen_compose: cannot write {}: {e}", args.output.display());
        return ExitCode::from(1);
    }
    // The compose file carries every agency's key in its environments: owner only.
    if let Err(e) = restrict(&args.output) {
        eprintln!("gen_compose: cannot make {} owner-only: {e}", args.output.display());
        return ExitCode::from(1);
    }
    let servers = match args.servers {
        1 => "1 server".to_string(),
        m => format!("{m} servers on the NATS cluster nats1..nats{} (stream bets_{id})", nats::NODES),
    };
    println!(
        "gen_compose: wrote {} with {servers}, {} agencies and fresh keys in {}; TLS: CA {}, server certificate {}{}",
        args.output.display(),
        args.agencies,
        keys_path.display(),
        pki_files.ca_cert.display(),
        pki_files.server_cert.display(),
        nats_files.map(|f| format!(", NATS certificate {}", f.cert.display())).unwrap_or_default()
    );
    prepare_data_folder(&args.output, args.agencies);
    ExitCode::SUCCESS
}

/// Makes sure `.data` (beside the compose file) exists, and names the agency files
/// that are missing from it.
///
/// Compose v2 would otherwise create the bind-mounted folder itself, owned by root,
/// and Compose 1.29 would refuse the whole deployment; with the folder in place, an
/// agency whose file is missing exits 1 naming it and the others carry on.
fn prepare_data_folder(output: &std::path::Path, agencies: u32) {
    let dir = output.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let data = dir.join(".data");
    if let Err(e) = std::fs::create_dir_all(&data) {
        eprintln!("gen_compose: warning: cannot create {}: {e}", data.display());
        return;
    }
    for id in 1..=agencies {
        let file = data.join(format!("agency-{id}.csv"));
        if !file.is_file() {
            eprintln!("gen_compose: warning: {} is missing: agency {id} will exit 1 until it exists", file.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, clap::Error> {
        parse_args(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn render_n(template: &str, n: u32, m: u32, keys: &AgencyKeys) -> Result<String, String> {
        render(
            template,
            &Deployment {
                agencies: n,
                servers: m,
                keys,
                keys_file: "dc.agency-keys.csv",
                tls_stem: "dc",
                chain_key_file: "dc.chain-key",
                id: "0a1b2c",
            },
        )
    }

    #[test]
    fn bad_counts_are_refused() {
        for bad in [
            vec![],
            vec!["-1"],
            vec!["five"],
            vec!["1.5"],
            vec!["3", "4"],
            vec!["251"],
            vec!["2", "--output"],
            vec!["2", "--servers", "0"],
            vec!["2", "--servers", "-1"],
            vec!["2", "--servers", "two"],
            vec!["2", "--servers"],
            vec!["248", "--servers", "3"],
        ] {
            assert!(args(&bad).is_err(), "{bad:?}");
        }
        let ok = args(&["0", "--output", "x.yaml"]).unwrap();
        assert_eq!((ok.agencies, ok.servers, ok.output), (0, 1, PathBuf::from("x.yaml")));
        assert_eq!(args(&["5", "--servers", "3"]).unwrap().servers, 3);
        let help = args(&["--help"]).unwrap_err().to_string();
        assert!(help.contains("[default: 1]") && help.contains("[default: docker-compose-dev.yaml]"), "{help}");
    }

    #[test]
    fn replicas_store_on_a_fresh_three_node_nats_cluster_behind_the_name_server() {
        let template =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.tmpl.yaml")).unwrap();
        let keys = AgencyKeys::generate(4).unwrap();
        let out = render_n(&template, 4, 3, &keys).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        let services = doc["services"].as_mapping().unwrap();
        assert_eq!(services.len(), 4 + 3 + 3);
        assert!(!services.contains_key("server"));
        let env_of = |s: &serde_yaml::Value| -> Vec<String> {
            s["environment"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
        };
        for k in 1..=3 {
            let s = &doc["services"][format!("server{k}").as_str()];
            assert_eq!(s["container_name"].as_str(), Some(format!("server{k}").as_str()));
            assert_eq!(s["networks"]["testing_net"]["aliases"][0].as_str(), Some("server"));
            let env = env_of(s);
            assert_eq!(env[0], "SERVER_AGENCIES=4");
            for want in [
                "SERVER_STORAGE_BACKEND=jetstream",
                "SERVER_NATS_URLS=tls://nats1:4222,tls://nats2:4222,tls://nats3:4222",
                "SERVER_NATS_CA=/keys/dc.ca.pem",
                "SERVER_NATS_STREAM=bets_0a1b2c",
            ] {
                assert!(env.iter().any(|e| e == want), "server{k} lacks {want}");
            }
            // No shared volume: each replica's CSV view is its own container's.
            let mounts = s["volumes"].as_sequence().unwrap();
            assert!(mounts.iter().all(|v| v["type"].as_str() == Some("bind")), "server{k}: {mounts:?}");
            for n in 1..=3 {
                let dep = &s["depends_on"][format!("nats{n}").as_str()]["condition"];
                assert_eq!(dep.as_str(), Some("service_healthy"), "server{k} waits for nats{n}");
            }
        }
        for n in 1..=3 {
            let node = &doc["services"][format!("nats{n}").as_str()];
            assert_eq!(node["container_name"].as_str(), Some(format!("nats{n}").as_str()));
            assert_eq!(node["image"].as_str(), Some("loteria-nats:latest"));
            let mounts = node["volumes"].as_sequence().unwrap();
            let source = |target: &str| {
                let m = mounts.iter().find(|v| v["target"].as_str() == Some(target)).unwrap();
                (m["source"].as_str().unwrap().to_string(), m["read_only"].as_bool())
            };
            assert_eq!(source("/etc/nats/nats.conf"), (format!("./.nats/dc.nats{n}.conf"), Some(true)));
            assert_eq!(source("/etc/nats/tls/nats.key"), ("./.keys/dc.nats.key".to_string(), Some(true)));
            assert_eq!(source("/etc/nats/tls/ca.pem"), ("./.keys/dc.ca.pem".to_string(), Some(true)));
            assert_eq!(source("/data"), (format!("nats{n}"), None));
            assert!(!mounts.iter().any(|v| v["source"].as_str() == Some("./.keys")), "only its own files");
            assert_eq!(
                doc["volumes"][format!("nats{n}").as_str()]["name"].as_str(),
                Some(format!("tp0_nats{n}_0a1b2c").as_str())
            );
            assert!(node["healthcheck"]["test"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|t| t.as_str() == Some("http://127.0.0.1:8222/healthz")));
        }
        assert_eq!(doc["volumes"].as_mapping().unwrap().len(), 3, "the NATS nodes' volumes only");
        let deps = doc["services"]["client4"]["depends_on"].as_sequence().unwrap();
        assert_eq!(deps.iter().filter_map(|d| d.as_str()).collect::<Vec<_>>(), ["server1", "server2", "server3"]);
        assert!(!out.lines().filter(|l| !l.trim_start().starts_with('#')).any(|l| l.contains("{{")));
        assert_ne!(deployment_id().unwrap(), deployment_id().unwrap(), "each generation draws a new id");
    }

    #[test]
    fn replicas_get_a_nats_certificate_from_the_same_ca_and_one_server_none() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("dc.yaml");
        let (files, nats) = write_pki(&output, 2).unwrap();
        let nats = nats.expect("replicas have a NATS certificate");
        assert_eq!(nats, pki::NatsFiles::in_dir(&dir.path().join(".keys"), "dc"));
        assert_eq!(std::fs::metadata(&nats.key).unwrap().permissions().mode() & 0o777, 0o600);
        // Signed by this deployment's CA (pki's tests verify the chain and both usages).
        let ca = std::fs::read_to_string(&files.ca_cert).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(std::fs::read_to_string(&nats.cert).unwrap() != std::fs::read_to_string(&files.server_cert).unwrap());
        let single = tempfile::tempdir().unwrap();
        assert!(write_pki(&single.path().join("dc.yaml"), 1).unwrap().1.is_none(), "M = 1 stays as it was");
        assert!(!single.path().join(".keys/dc.nats.pem").exists());
    }

    #[test]
    fn renders_n_agencies_from_the_real_template() {
        let template =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.tmpl.yaml")).unwrap();
        for n in [0, 1, 10] {
            let keys = AgencyKeys::generate(n).unwrap();
            let out = render_n(&template, n, 1, &keys).unwrap();
            let doc: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
            let services = doc["services"].as_mapping().unwrap();
            assert_eq!(services.len(), n as usize + 1);
            assert_eq!(
                doc["services"]["server"]["environment"][0].as_str(),
                Some(format!("SERVER_AGENCIES={n}").as_str())
            );
            if n > 0 {
                let last = &doc["services"][format!("client{n}").as_str()];
                assert_eq!(last["container_name"].as_str(), Some(format!("client{n}").as_str()));
                assert_eq!(last["environment"][0].as_str(), Some(format!("CLI_ID={n}").as_str()));
                // The .data folder, read-only, in the long syntax (a missing source is
                // an error instead of a directory Docker creates on the host).
                let data = &last["volumes"][1];
                assert_eq!(data["type"].as_str(), Some("bind"));
                assert_eq!(data["source"].as_str(), Some("./.data"));
                assert_eq!(data["target"].as_str(), Some("/data"));
                assert_eq!(data["read_only"].as_bool(), Some(true));
                assert_eq!(last["restart"].as_str(), None, "an agency that failed must stay failed");
                // Each agency gets its own key, and only its own.
                for id in 1..=n {
                    let env = doc["services"][format!("client{id}").as_str()]["environment"].as_sequence().unwrap();
                    let own = format!("CLI_AUTH_KEY={}", keys.get(id).unwrap().to_hex());
                    assert!(env.iter().any(|v| v.as_str() == Some(own.as_str())), "client{id}");
                    let others = (1..=n).filter(|o| *o != id).map(|o| keys.get(o).unwrap().to_hex());
                    for other in others {
                        assert!(!env.iter().any(|v| v.as_str().is_some_and(|v| v.contains(&other))));
                    }
                }
            }
            let server = &doc["services"]["server"];
            let env = server["environment"].as_sequence().unwrap();
            assert!(env.iter().any(|v| v.as_str() == Some("SERVER_AUTH_KEYS=/keys/dc.agency-keys.csv")));
            assert!(env.iter().any(|v| v.as_str() == Some("SERVER_TLS_CERT=/keys/dc.server.pem")));
            assert!(env.iter().any(|v| v.as_str() == Some("SERVER_TLS_KEY=/keys/dc.server.key")));
            for id in 1..=n {
                let client = &doc["services"][format!("client{id}").as_str()];
                let env = client["environment"].as_sequence().unwrap();
                assert!(env.iter().any(|v| v.as_str() == Some("CLI_TLS_CA=/tls/ca.pem")), "client{id}");
                // Only the CA certificate, read-only: never the keys directory.
                let mounts = client["volumes"].as_sequence().unwrap();
                assert!(mounts.iter().any(|v| v["source"].as_str() == Some("./.keys/dc.ca.pem")
                    && v["target"].as_str() == Some("/tls/ca.pem")
                    && v["read_only"].as_bool() == Some(true)));
                assert!(!mounts.iter().any(|v| v["source"].as_str() == Some("./.keys")), "client{id}");
            }
            assert!(env.iter().any(|v| v.as_str() == Some("SERVER_CHAIN_KEY=/keys/dc.chain-key")));
            let volumes = server["volumes"].as_sequence().unwrap();
            assert!(volumes.iter().any(|v| v["source"].as_str() == Some("./.keys")
                && v["target"].as_str() == Some("/keys")
                && v["read_only"].as_bool() == Some(true)));
            let live = out.lines().filter(|l| !l.trim_start().starts_with('#'));
            assert!(!live.clone().any(|l| l.contains("{{")), "a placeholder was left");
            assert_eq!(doc["networks"]["testing_net"]["name"].as_str(), Some("tp0_testing_net"));
            assert!(doc.get("name").is_none(), "compose 1.29 rejects a top-level name");
            // One deployment is one draw: no named volume outlives `down`.
            assert!(doc.get("volumes").is_none(), "no named volume");
            for volume in doc["services"]["server"]["volumes"].as_sequence().unwrap() {
                assert_eq!(volume["type"].as_str(), Some("bind"), "{volume:?}");
            }
        }
    }

    #[test]
    fn the_pki_goes_beside_the_keys_without_the_ca_key_and_names_every_replica() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("docker-compose-dev.yaml");
        let (files, nats) = write_pki(&output, 3).unwrap();
        let nats = nats.expect("three replicas have a NATS certificate");
        assert_eq!(files, pki::PkiFiles::in_dir(&dir.path().join(".keys"), "docker-compose-dev"));
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&dir.path().join(".keys")), mode(&files.server_key)), (0o700, 0o600));
        // The pair loads, the agencies' CA loads, and no file holds a second private key.
        loteria::net::tls::ServerTls::load(&files.server_cert, &files.server_key).unwrap();
        let tls = loteria::net::tls::AgencyTls::load(&files.ca_cert, None).unwrap();
        assert_eq!(tls.name_for("server:12345").unwrap().to_str(), "server");
        let keys = std::fs::read_dir(dir.path().join(".keys")).unwrap().map(|e| e.unwrap().path());
        let mut private: Vec<_> =
            keys.filter(|p| std::fs::read_to_string(p).unwrap().contains("PRIVATE KEY")).collect();
        private.sort();
        assert_eq!(private, vec![nats.key.clone(), files.server_key.clone()], "the CA's key was written");
        let first_ca = std::fs::read_to_string(&files.ca_cert).unwrap();
        write_pki(&output, 3).unwrap();
        assert_ne!(std::fs::read_to_string(&files.ca_cert).unwrap(), first_ca, "a new generation, a new CA");
    }

    #[test]
    fn keys_go_beside_the_output_owner_only_and_fresh_each_time() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("docker-compose-dev.yaml");
        let first = AgencyKeys::generate(3).unwrap();
        let path = write_keys(&output, &first).unwrap();
        assert_eq!(path, dir.path().join(".keys/docker-compose-dev.agency-keys.csv"));
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&dir.path().join(".keys")), mode(&path)), (0o700, 0o600));
        assert_eq!(AgencyKeys::load(&path).unwrap(), first);
        let second = AgencyKeys::generate(3).unwrap();
        assert_ne!(first, second, "a new generation has new keys");
        write_keys(&output, &second).unwrap();
        assert_eq!(AgencyKeys::load(&path).unwrap(), second);
        // Another compose file in the same directory has its own keys and leaves these alone.
        let other = write_keys(&dir.path().join("dc-10.yaml"), &first).unwrap();
        assert_eq!(other, dir.path().join(".keys/dc-10.agency-keys.csv"));
        assert_eq!(AgencyKeys::load(&path).unwrap(), second);
        assert_eq!(keys_file_name(std::path::Path::new("a b:c.yaml")), "a_b_c.agency-keys.csv");
    }
}
