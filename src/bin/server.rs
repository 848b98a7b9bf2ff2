//! The central server: `server [--config PATH]` (`server --help` lists the settings).

use clap::Parser;
use loteria::config::{self, ServerConfig};
use loteria::server;
use slog::{error, warn};
use std::path::PathBuf;
use std::process::ExitCode;

/// The Lotería Nacional central: stores the agencies' bets, runs the draw once
/// every agency is done, and answers each agency with its own winners.
#[derive(Parser)]
#[command(name = "server", version, after_help = config::SERVER_SETTINGS_HELP)]
struct Args {
    /// YAML configuration file; it must exist [default: config/server.yaml when present]
    #[arg(long, value_name = "PATH", env = "SERVER_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (cfg, log) = match config::start_logging(ServerConfig::load(args.config)) {
        Ok(started) => started,
        Err(code) => return code,
    };
    if matches!(cfg.auth, config::ServerAuth::Off) {
        warn!(log, "action: auth | result: fail"; "mode" => "off",
            "warning" => "SERVER_AUTH=off: any peer can send, close or read for any agency; local experiments only");
    }

    let system = actix::System::new();
    let booted = system.block_on(async {
        let listener = server::bind(cfg.port, cfg.listen_backlog)?;
        let handle = server::start(listener, &cfg, log.clone()).await?;
        server::handle_signals(handle.supervisor.clone())?;
        Ok::<_, server::BootError>(handle)
    });
    if let Err(e) = booted {
        error!(log, "action: boot | result: fail"; "error" => %e);
        return ExitCode::from(1);
    }
    match system.run_with_code() {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(code.clamp(1, 255) as u8),
        Err(e) => {
            error!(log, "action: run | result: fail"; "error" => %e);
            ExitCode::from(1)
        }
    }
}
