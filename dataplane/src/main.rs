//! The `sluice` command line: parses arguments and hands over to `runtime`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use sluice::runtime::{self, RunOptions};

mod cli {
    pub mod capture;
    pub mod check;
    pub mod ctl;
    pub mod r#gen;
    pub mod offline;
    pub mod verify;
    pub mod fw;
}

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
    /// Validate a config and all its filters without touching any interface.
    Check(cli::check::CheckArgs),
    /// Drive a running daemon through its control socket.
    Ctl(cli::ctl::CtlArgs),
    /// Work with BPF filters without touching any interface: compile one, or filter a capture
    /// file like `tcpdump -r IN -w OUT EXPR`.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Filter {
        #[command(subcommand)]
        command: Option<FilterCommand>,
        #[command(flatten)]
        offline: cli::offline::OfflineArgs,
    },
    /// Generate traffic (AF_XDP or kernel live frames) with rate control and measure loss and
    /// latency, or replay a capture.
    Gen(Box<cli::r#gen::GenArgs>),
    /// Capture through AF_XDP into a pcap file, filtered by a tcpdump expression run by the JIT.
    Capture(cli::capture::CaptureArgs),
    /// Firewall rules: explain their placement, test packets, load the kernel part.
    #[command(subcommand)]
    Fw(cli::fw::FwCommand),
}

#[derive(Subcommand)]
enum FilterCommand {
    /// Compile a filter and report its classic and eBPF code, validation and JIT size.
    Compile {
        /// A tcpdump expression, or a file with classic BPF (tcpdump -ddd/-dd), eBPF bytecode
        /// (hex or raw) or eBPF assembler text.
        filter: String,
        /// Front end to use instead of detecting it.
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
        /// Print the classic and eBPF instructions.
        #[arg(long)]
        dump: bool,
        /// For an eBPF object (clang -target bpf): the program (function or section name) to
        /// compile when the object has several.
        #[arg(long)]
        section: Option<String>,
    },
    /// Run the static verifier on a filter file (--log prints every step).
    Verify(cli::verify::VerifyArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Tcpdump,
    Classic,
    Hex,
    Asm,
    Bytes,
    Object,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        // Dependencies log at info too (cranelift prints every function's IR): keep them quiet.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sluice=info"));
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
        Command::Filter { command: Some(FilterCommand::Compile { filter, format, dump, section }), .. } => {
            filter_compile(&filter, format, dump, section.as_deref())
        }
        Command::Filter { command: None, offline } => cli::offline::run(&offline),
        Command::Filter { command: Some(FilterCommand::Verify(args)), .. } => cli::verify::run(&args),
        Command::Check(args) => cli::check::run(&args),
        Command::Ctl(args) => cli::ctl::run(&args),
        Command::Gen(args) => cli::r#gen::run(&args),
        Command::Capture(args) => cli::capture::run(&args),
        Command::Fw(cmd) => cli::fw::run(&cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            // Bad input (config, filter) is exit status 2, like clap's usage errors; failures at run time 1.
            let bad_input = e.downcast_ref::<sluice::config::ConfigError>().is_some()
                || e.downcast_ref::<sluice::bpf::source::SourceError>().is_some()
                || e.downcast_ref::<sluice::firewall::FwConfigError>().is_some()
                || e.downcast_ref::<sluice::firewall::RulesetError>().is_some()
                || e.downcast_ref::<sluice::firewall::describe::DescribeError>().is_some();
            if bad_input { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

/// `sluice filter compile`: a file argument is read and its format detected; anything else is a
/// tcpdump expression, the way tcpdump itself takes its last argument.
fn filter_compile(filter: &str, format: Option<FormatArg>, dump: bool, section: Option<&str>) -> anyhow::Result<()> {
    use anyhow::Context;
    use sluice::bpf::source::{self, Format};
    use sluice::bpf::{classic, disasm, jit::JitProgram};

    let path = std::path::Path::new(filter);
    let compiled = match format {
        None if section.is_some() => {
            source::compile_object(&std::fs::read(path).with_context(|| format!("read {filter}"))?, section, 1)?
        }
        Some(f) => {
            let format = match f {
                FormatArg::Tcpdump => Format::Tcpdump,
                FormatArg::Classic => Format::Classic,
                FormatArg::Hex => Format::Hex,
                FormatArg::Asm => Format::Asm,
                FormatArg::Bytes => Format::Bytes,
                FormatArg::Object => Format::Object,
            };
            if format == Format::Tcpdump {
                source::compile_text(filter, format)?
            } else if format == Format::Object {
                let bytes = std::fs::read(path).with_context(|| format!("read {filter}"))?;
                source::compile_object(&bytes, section, 1)?
            } else {
                let text = std::fs::read_to_string(path).with_context(|| format!("read {filter}"))?;
                source::compile_text(&text, format)?
            }
        }
        None if path.is_file() => source::compile_file(&std::fs::read(path).with_context(|| format!("read {filter}"))?)?,
        None => source::compile_text(filter, Format::Tcpdump)?,
    };
    let jit = JitProgram::compile(&compiled.program).context("jit")?;

    println!("filter: {} ({})", filter, compiled.format);
    if let Some(c) = &compiled.classic {
        println!("classic: {} instructions, valid (0 = no match, non-zero = match)", c.len());
        if dump {
            print!("{}", indent(&classic::disasm(c)));
        }
    }
    for m in compiled.program.helpers().maps().iter() {
        let d = m.def();
        println!("map: {} ({}, key {} B, value {} B, max_entries {})", d.name, d.kind, d.key_size, d.value_size, d.max_entries);
    }
    let insns = compiled.program.insns();
    println!("ebpf: {} instructions, valid", insns.len());
    if dump {
        print!("{}", indent(&disasm::program(insns)));
    }
    println!("jit: {} bytes of {} code", jit.code_size(), std::env::consts::ARCH);
    Ok(())
}

fn indent(listing: &str) -> String {
    listing.lines().map(|l| format!("    {l}\n")).collect()
}

/// The error and its causes joined with ": ", leaving out a cause whose text the message before
/// it already contains (library errors often show their source in their own message).
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
