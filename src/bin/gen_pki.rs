//! `gen_pki [--dir DIR] [--stem NAME] [--servers M] [--name HOST]... [--days N]`: a deployment's
//! CA and the central's certificate and key, for local runs (`make demo`) and
//! anyone wiring the programs by hand; gen_compose makes the same for compose.

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
    let made = pki::issue(&names, validity).and_then(|p| pki::write(&p, &args.dir, &args.stem));
    match made {
        Ok(files) => {
            println!(
                "gen_pki: CA {} (for the agencies), certificate {} and key {} (for the central); the CA's key was not kept",
                files.ca_cert.display(),
                files.server_cert.display(),
                files.server_key.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen_pki: {e}");
            ExitCode::from(1)
        }
    }
}
