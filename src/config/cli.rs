//! The command line both programs share: `--config PATH` (or its environment
//! variable), `--help` listing every setting, `--version`.

use super::Settings;
use clap::{CommandFactory, FromArgMatches, Parser};
use std::path::PathBuf;

#[derive(Parser)]
struct CommandLine {
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

/// The configuration file named on the command line or in `S::CONFIG_VAR`;
/// `--help`, `--version` and usage errors end the process here (clap: exit 0, 2).
pub(super) fn config_path<S: Settings>() -> Option<PathBuf> {
    let help = format!("YAML configuration file; it must exist [default: {} when present]", S::DEFAULT_PATH);
    let matches = CommandLine::command()
        .name(S::PROGRAM)
        .bin_name(S::PROGRAM)
        .about(S::ABOUT)
        .version(env!("CARGO_PKG_VERSION"))
        .after_help(S::SETTINGS_HELP)
        .mut_arg("config", |arg| arg.env(S::CONFIG_VAR).help(help))
        .get_matches();
    CommandLine::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()).config
}
