//! The central server: `server [--config PATH]`.

use loteria::config::{log_config, ServerConfig};
use loteria::{logging, server};
use slog::{error, Level};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cfg, unknown) = match ServerConfig::load(&args) {
        Ok(loaded) => loaded,
        Err(e) => {
            let log = logging::root(Level::Info);
            error!(log, "action: config | result: fail"; "error" => %e);
            return ExitCode::from(2);
        }
    };
    let log = logging::root(cfg.log_level);
    log_config(&log, &cfg.log_pairs(), &unknown);

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
