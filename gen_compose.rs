//! `gen_compose N [--output FILE] [--template FILE]`: renders
//! `docker-compose.tmpl.yaml` into a compose file with a server and N agencies.
//!
//! The template is plain text with one repeated block, so what ends up in the
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

use loteria::auth::AgencyKeys;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: gen_compose N [--output FILE] [--template FILE]\n  N: number of agencies (0 or more)\n  FILE defaults: docker-compose-dev.yaml, docker-compose.tmpl.yaml";
const BEGIN: &str = "# BEGIN client";
const END: &str = "# END client";
/// More agencies than this would not fit the /24 network.
const MAX_AGENCIES: u32 = 250;

#[derive(Debug)]
struct Args {
    agencies: u32,
    output: PathBuf,
    template: PathBuf,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut agencies = None;
    let mut output = PathBuf::from("docker-compose-dev.yaml");
    let mut template = PathBuf::from("docker-compose.tmpl.yaml");
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--output" | "-o" => output = it.next().map(PathBuf::from).ok_or("--output needs a FILE")?,
            "--template" => template = it.next().map(PathBuf::from).ok_or("--template needs a FILE")?,
            flag if flag.starts_with('-') && flag.parse::<i64>().is_err() => {
                return Err(format!("unknown option {flag:?}"))
            }
            n if agencies.is_none() => {
                let parsed: u32 =
                    n.parse().map_err(|_| format!("N must be a whole number of agencies >= 0, got {n:?}"))?;
                if parsed > MAX_AGENCIES {
                    return Err(format!("N must be at most {MAX_AGENCIES} (the network is a /24), got {parsed}"));
                }
                agencies = Some(parsed);
            }
            extra => return Err(format!("unexpected argument {extra:?}")),
        }
    }
    let agencies = agencies.ok_or("missing N (number of agencies)")?;
    Ok(Args { agencies, output, template })
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

/// Renders the template for `agencies` agencies.
fn render(template: &str, agencies: u32, keys: &AgencyKeys, keys_file: &str) -> Result<String, String> {
    let line = |marker: &str| {
        template
            .lines()
            .scan(0usize, |pos, l| {
                let at = *pos;
                *pos += l.len() + 1;
                Some((at, l))
            })
            .find(|(_, l)| l.trim_end() == marker)
            .map(|(at, _)| at)
    };
    let begin = line(BEGIN).ok_or(format!("template has no {BEGIN:?} line"))?;
    let end = line(END).ok_or(format!("template has no {END:?} line"))?;
    if end < begin {
        return Err(format!("{END:?} comes before {BEGIN:?}"));
    }
    let head = &template[..begin];
    let block = &template[begin + BEGIN.len()..end];
    let block = block.strip_prefix('\n').unwrap_or(block);
    let tail = &template[end + END.len()..];
    let tail = tail.strip_prefix('\n').unwrap_or(tail);
    let mut out = String::with_capacity(template.len() + block.len() * agencies as usize);
    out.push_str(&head.replace("{{agencies}}", &agencies.to_string()).replace("{{keys_file}}", keys_file));
    for id in 1..=agencies {
        let key = keys.get(id).ok_or(format!("no key for agency {id}"))?;
        out.push_str(&block.replace("{{id}}", &id.to_string()).replace("{{auth_key}}", &key.to_hex()));
    }
    out.push_str(tail);
    check(&out, agencies)?;
    Ok(out)
}

/// Parses the result back and checks the services it must have.
fn check(rendered: &str, agencies: u32) -> Result<(), String> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(rendered).map_err(|e| format!("rendered file is not valid YAML: {e}"))?;
    let services = doc.get("services").and_then(|s| s.as_mapping()).ok_or("rendered file has no services")?;
    if services.len() != agencies as usize + 1 {
        return Err(format!("expected {} services, rendered {}", agencies + 1, services.len()));
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
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse_args(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gen_compose: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
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
    let rendered = match render(&template, args.agencies, &keys, &keys_file_name(&args.output)) {
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
    if let Err(e) = std::fs::write(&args.output, rendered) {
        eprintln!("gen_compose: cannot write {}: {e}", args.output.display());
        return ExitCode::from(1);
    }
    // The compose file carries every agency's key in its environments: owner only.
    if let Err(e) = restrict(&args.output) {
        eprintln!("gen_compose: cannot make {} owner-only: {e}", args.output.display());
        return ExitCode::from(1);
    }
    println!(
        "gen_compose: wrote {} with {} agencies and fresh keys in {}",
        args.output.display(),
        args.agencies,
        keys_path.display()
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

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn bad_counts_are_refused() {
        for bad in [vec![], vec!["-1"], vec!["five"], vec!["1.5"], vec!["3", "4"], vec!["251"], vec!["2", "--output"]] {
            assert!(args(&bad).is_err(), "{bad:?}");
        }
        let ok = args(&["0", "--output", "x.yaml"]).unwrap();
        assert_eq!((ok.agencies, ok.output), (0, PathBuf::from("x.yaml")));
    }

    #[test]
    fn renders_n_agencies_from_the_real_template() {
        let template =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.tmpl.yaml")).unwrap();
        for n in [0, 1, 10] {
            let keys = AgencyKeys::generate(n).unwrap();
            let out = render(&template, n, &keys, "dc.agency-keys.csv").unwrap();
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
