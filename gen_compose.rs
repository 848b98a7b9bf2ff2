//! `gen_compose N [--output FILE] [--template FILE]`: renders
//! `docker-compose.tmpl.yaml` into a compose file with a server and N agencies.
//!
//! The template is plain text with one repeated block, so what ends up in the
//! compose file is visible in the template; the result is parsed back as YAML and
//! checked before anything is written.

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

/// Renders the template for `agencies` agencies.
fn render(template: &str, agencies: u32) -> Result<String, String> {
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
    out.push_str(&head.replace("{{agencies}}", &agencies.to_string()));
    for id in 1..=agencies {
        out.push_str(&block.replace("{{id}}", &id.to_string()));
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
    let rendered = match render(&template, args.agencies) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gen_compose: {}: {e}", args.template.display());
            return ExitCode::from(1);
        }
    };
    if let Err(e) = std::fs::write(&args.output, rendered) {
        eprintln!("gen_compose: cannot write {}: {e}", args.output.display());
        return ExitCode::from(1);
    }
    println!("gen_compose: wrote {} with {} agencies", args.output.display(), args.agencies);
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
            let out = render(&template, n).unwrap();
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
            }
            assert_eq!(doc["networks"]["testing_net"]["name"].as_str(), Some("tp0_testing_net"));
            assert!(doc.get("name").is_none(), "compose 1.29 rejects a top-level name");
            // One deployment is one draw: no named volume outlives `down`.
            assert!(doc.get("volumes").is_none(), "no named volume");
            for volume in doc["services"]["server"]["volumes"].as_sequence().unwrap() {
                assert_eq!(volume["type"].as_str(), Some("bind"), "{volume:?}");
            }
        }
    }
}
