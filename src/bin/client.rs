//! An agency: `client [--config PATH]` (CLI_ID and friends in the environment;
//! `client --help` lists them).

use loteria::client::{self, ClientError};
use loteria::config::{self, ClientConfig, Settings};
use slog::{error, info, Logger};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let (cfg, log, log_writer) = match config::start_logging(ClientConfig::from_command_line()) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let code = run(&cfg, &log);
    // Every way out of `run` ends here: the queued log lines reach stdout before exit.
    log_writer.finish();
    code
}

/// The agency's life; the runtime is gone when it returns.
fn run(cfg: &ClientConfig, log: &Logger) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(log, "action: start | result: fail"; "error" => %e);
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let cancel = CancellationToken::new();
        if let Err(e) = watch_signals(cancel.clone()) {
            error!(log, "action: start | result: fail"; "error" => %e);
            return ExitCode::from(1);
        }
        let env = |k: &str| std::env::var(k).ok();
        let outcome = match client::bet_from_env(&env) {
            Ok(Some(bet)) => client::send_single_bet(cfg, bet, log, &cancel).await,
            Ok(None) => client::run_agency(cfg, log, &cancel).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                info!(log, "action: exit | result: success"; "client_id" => cfg.id);
                ExitCode::SUCCESS
            }
            Err(ClientError::Cancelled) => {
                info!(log, "action: shutdown | result: success"; "client_id" => cfg.id, "reason" => "signal");
                ExitCode::SUCCESS
            }
            Err(e) => {
                error!(log, "action: exit | result: fail"; "client_id" => cfg.id, "error" => %e);
                ExitCode::from(1)
            }
        }
    })
}

/// Cancels the run on the first SIGTERM or SIGINT.
fn watch_signals(cancel: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        cancel.cancel();
    });
    Ok(())
}
