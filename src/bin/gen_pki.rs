//! `gen_pki [--dir DIR] [--stem NAME] [--servers M] [--name HOST]... [--nats K]
//! [--nats-name HOST]... [--days N]`: a deployment's CA and the central's
//! certificate and key (with `--nats`, also the NATS nodes' certificate and key),
//! for local runs (`make demo`) and anyone wiring the programs by hand, on one
//! machine or several; gen_compose makes the same for compose.

use loteria::pki;
use std::path::PathBuf;
use std::process::ExitCode;

/// Makes a fresh CA, signs the central's certificate with it (names `server`,
/// `server1`..`serverM`, `localhost`, `127.0.0.1`) and drops the CA's key.
#[derive(Debug, clap::Parser)]
#[command(name = "gen_pki", version)]
struct Args {
    /// Directory for the files (created 0700)
    #[arg(long, value_name = "DIR", default_value = ".keys")]
    dir: PathBuf,
    /// File names start with this: STEM.ca.pem, STEM.server.pem, STEM.server.key
    #[arg(long, value_name = "NAME", default_value = "local")]
    stem: String,
    /// Replicas the certificate names (server1..serverM)
    #[arg(long, value_name = "M", default_value_t = 1)]
    servers: u32,
    /// Another name the central is reached by (a host name or IP address, e.g.
    /// when the central spans machines); repeatable
    #[arg(long = "name", value_name = "HOST")]
    names: Vec<String>,
    /// Also issue the NATS nodes' certificate (names nats1..natsK, localhost,
    /// 127.0.0.1; server and client use, for the cluster routes): STEM.nats.pem, STEM.nats.key
    #[arg(long = "nats", value_name = "K", value_parser = clap::value_parser!(u32).range(1..=99))]
    nats: Option<u32>,
    /// Another name a NATS node is reached by (a host name or IP address, when the
    /// cluster spans machines); repeatable, implies --nats 3 when --nats is absent
    #[arg(long = "nats-name", value_name = "HOST")]
    nats_names: Vec<String>,
    /// Days the certificates are valid
    #[arg(long, value_name = "N", default_value_t = pki::DEFAULT_VALID_DAYS,
          value_parser = clap::value_parser!(i64).range(1..=3650))]
    days: i64,
}

fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    let validity = pki::Validity { from_day: -1, until_day: args.days };
    let mut names = pki::server_names(args.servers);
    for name in &args.names {
        if let Err(e) = loteria::net::tls::parse_server_name(name) {
            eprintln!("gen_pki: --name {e}");
            return ExitCode::from(2);
        }
        names.push(name.clone());
    }
    let nats = match (args.nats, args.nats_names.is_empty()) {
        (None, true) => None,
        (nodes, _) => {
            let mut nats = pki::nats_names(nodes.unwrap_or(3));
            for name in &args.nats_names {
                if let Err(e) = loteria::net::tls::parse_server_name(name) {
                    eprintln!("gen_pki: --nats-name {e}");
                    return ExitCode::from(2);
                }
                nats.push(name.clone());
            }
            Some(nats)
        }
    };
    let made = match &nats {
        None => pki::issue(&names, validity).and_then(|p| pki::write(&p, &args.dir, &args.stem)).map(|f| (f, None)),
        Some(nats) => pki::issue_with_nats(&names, nats, validity).and_then(|(p, leaf)| {
            let files = pki::write(&p, &args.dir, &args.stem)?;
            Ok((files, Some(pki::write_nats(&leaf, &args.dir, &args.stem)?)))
        }),
    };
    match made {
        Ok((files, nats)) => {
            println!(
                "gen_pki: CA {} (for the agencies), certificate {} and key {} (for the central); the CA's key was not kept",
                files.ca_cert.display(),
                files.server_cert.display(),
                files.server_key.display()
            );
            if let Some(nats) = nats {
                println!(
                    "gen_pki: NATS certificate {} and key {} (for every NATS node, client port and routes)",
                    nats.cert.display(),
                    nats.key.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen_pki: {e}");
            ExitCode::from(1)
        }
    }
}
