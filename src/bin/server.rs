//! The central server: `server [--config PATH]` (`server --help` lists the settings).
//! Exit codes: 0 after an orderly stop, 1 on a runtime or boot failure, 2 on a
//! configuration error, 3 when the store fails its open-time checks (docs/integrity.md).

use loteria::config::{self, ServerConfig, Settings};
use loteria::server;
use slog::{error, warn, Logger};
use std::process::ExitCode;

fn main() -> ExitCode {
    let (cfg, log, log_writer) = match config::start_logging(ServerConfig::from_command_line()) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let code = run(&cfg, &log);
    // Every way out of `run` ends here: the queued log lines reach stdout before exit.
    log_writer.finish();
    code
}

/// The server's life; the actor system and its runtime are gone when it returns.
fn run(cfg: &ServerConfig, log: &Logger) -> ExitCode {
    if matches!(cfg.auth, config::ServerAuth::Off) {
        warn!(log, "action: auth | result: fail"; "mode" => "off",
            "warning" => "SERVER_AUTH=off: any peer can send, close or read for any agency; local experiments only");
    }

    // One server per store (replicas share JetStream, each with its own view):
    // held until the process ends.
    let _sole = match loteria::storage::SoleWriter::take(&cfg.storage_path) {
        Ok(guard) => guard,
        Err(e) => {
            error!(log, "action: boot | result: fail"; "error" => %e, "exit_code" => 1);
            return ExitCode::from(1);
        }
    };
    let system = actix::System::new();
    let booted = system.block_on(async {
        let listener = server::bind(cfg.port, cfg.listen_backlog)?;
        let handle = server::start(listener, cfg, log.clone()).await?;
        server::handle_signals(handle.supervisor.clone())?;
        Ok::<_, server::BootError>(handle)
    });
    if let Err(e) = booted {
        error!(log, "action: boot | result: fail"; "error" => %e, "exit_code" => e.exit_code());
        return ExitCode::from(e.exit_code());
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
