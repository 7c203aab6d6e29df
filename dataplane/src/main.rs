//! The `sluice` command line: parses arguments and hands over to `runtime`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use sluice::runtime::{self, RunOptions};

#[derive(Parser)]
#[command(name = "sluice", version, about = "AF_XDP packet-processing dataplane with JIT-compiled BPF filters")]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the dataplane until SIGINT or SIGTERM, printing a summary once a second.
    Run {
        /// Appliance configuration (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Machine-readable JSON lines on stdout.
        #[arg(long)]
        json: bool,
        /// Per-queue lines in the periodic summary.
        #[arg(long, short)]
        verbose: bool,
        /// Interval between summaries, in milliseconds.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
        stats_interval_ms: u64,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run { config, json, verbose, stats_interval_ms } => runtime::run(&RunOptions {
            config,
            json,
            verbose,
            stats_interval: Duration::from_millis(stats_interval_ms),
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // Bad input (config) is exit status 2, like clap's usage errors; failures at run time 1.
            if e.downcast_ref::<sluice::config::ConfigError>().is_some() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}
