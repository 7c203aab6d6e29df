//! `sluice ctl`: drives a running daemon through its control socket; a readable summary by
//! default, the protocol's JSON result with `--json`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};
use serde_json::Value;

use sluice::control::client::{Client, DEFAULT_SOCKET};
use sluice::control::proto::{
    Action, CaptureInfo, CaptureSpec, Command, FilterFormat, FwStatsReply, HistogramReply, PipelineInfo, PipelineSource, PipelineSpec, ReloadReport,
    StageSpec, StatsReply, Status, SwapReport,
};

#[derive(Args)]
pub struct CtlArgs {
    /// The daemon's control socket (`control.socket` in its config).
    #[arg(long, short, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the reply's JSON result instead of a summary.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Version, uptime, ports, their default actions and pipeline generations.
    Status,
    /// Per-queue, per-stage and steering counters since start (or since the last --reset).
    Stats {
        /// Start counting afresh after this reading.
        #[arg(long)]
        reset: bool,
    },
    /// The running pipelines with their stage counters.
    Pipeline {
        /// Only this port.
        #[arg(long, short)]
        port: Option<String>,
    },
    /// Replace a port's whole pipeline with a TOML (or .json) file of `[[stage]]` tables;
    /// `-` reads TOML from stdin.
    Replace {
        #[arg(long, short)]
        port: String,
        file: PathBuf,
    },
    /// Add a stage (at the end unless --position is given).
    Add {
        #[arg(long, short)]
        port: String,
        /// The stage's id, unique within the port.
        #[arg(long)]
        id: String,
        /// A tcpdump expression, or with --format a program text or file path.
        #[arg(long)]
        filter: String,
        #[arg(long, default_value = "tcpdump", value_parser = parse_format)]
        format: FilterFormat,
        /// The program's section in an ELF object (--format file).
        #[arg(long)]
        section: Option<String>,
        /// drop, reflect, forward:PORT, count, sample, continue or verdict.
        #[arg(long, value_parser = parse_action)]
        action: Action,
        /// Insert before the stage now at this index (0 = first).
        #[arg(long)]
        position: Option<usize>,
    },
    /// Remove a stage.
    Remove {
        #[arg(long, short)]
        port: String,
        /// The stage's id.
        stage: String,
    },
    /// Move a stage to another index.
    Move {
        #[arg(long, short)]
        port: String,
        /// The stage's id.
        stage: String,
        /// Its index in the new list.
        position: usize,
    },
    /// Set a port's default action (what packets no stage took get).
    Action {
        #[arg(long, short)]
        port: String,
        /// drop, reflect or forward:PORT.
        #[arg(value_parser = parse_action)]
        action: Action,
    },
    /// Re-read the daemon's config file and apply what changed (like SIGHUP).
    Reload,
    /// The per-batch processing-time histogram.
    Histogram {
        /// Start recording afresh after this reading.
        #[arg(long)]
        reset: bool,
    },
    /// Start or stop writing sampled packets to a pcap file.
    #[command(subcommand)]
    Capture(CaptureCommand),
    /// The firewall (`[dataplane] firewall`).
    #[command(subcommand)]
    Fw(FwCommand),
}

#[derive(Subcommand)]
enum FwCommand {
    /// Per-rule packet/byte counters, kernel stage and userspace engines merged.
    Stats,
}

#[derive(Subcommand)]
enum CaptureCommand {
    /// Start a capture; packets reach it through `sample` stages, or with --filter through
    /// that filter.
    Start {
        /// The pcap file, written by the daemon.
        path: PathBuf,
        /// Only this port's packets.
        #[arg(long, short)]
        port: Option<String>,
        /// Stop after this many packets.
        #[arg(long)]
        limit: Option<u64>,
        /// Bytes kept of each packet.
        #[arg(long)]
        snaplen: Option<u32>,
        /// Capture the frames matching this tcpdump expression (of --port, or of every port)
        /// instead of what `sample` stages pick.
        #[arg(long, short)]
        filter: Option<String>,
    },
    /// Stop the running capture and report its counts.
    Stop,
}

fn parse_action(s: &str) -> Result<Action, String> {
    s.parse()
}

fn parse_format(s: &str) -> Result<FilterFormat, String> {
    s.parse()
}

/// The daemon resolves paths against its own working directory; make them the user's.
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolve {}", path.display()))
}

pub fn run(args: &CtlArgs) -> Result<()> {
    let command = match &args.command {
        CtlCommand::Status => Command::Status,
        CtlCommand::Stats { reset } => Command::Stats { reset: *reset },
        CtlCommand::Pipeline { port } => Command::PipelineList { port: port.clone() },
        CtlCommand::Replace { port, file } => {
            let source = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).context("read the pipeline from stdin")?;
                let spec: PipelineSpec = toml::from_str(&text).map_err(|e| anyhow!("pipeline on stdin: {}", e.message()))?;
                PipelineSource::Inline(spec)
            } else {
                PipelineSource::File(absolute(file)?)
            };
            Command::PipelineReplace { port: port.clone(), source }
        }
        CtlCommand::Add { port, id, filter, format, section, action, position } => {
            let filter = if *format == FilterFormat::File { absolute(Path::new(filter))?.display().to_string() } else { filter.clone() };
            let stage = StageSpec { id: id.clone(), filter, format: *format, section: section.clone(), action: action.clone() };
            Command::StageAdd { port: port.clone(), stage, position: *position }
        }
        CtlCommand::Remove { port, stage } => Command::StageRemove { port: port.clone(), id: stage.clone() },
        CtlCommand::Move { port, stage, position } => Command::StageMove { port: port.clone(), id: stage.clone(), position: *position },
        CtlCommand::Action { port, action } => Command::PortAction { port: port.clone(), action: action.clone() },
        CtlCommand::Reload => Command::Reload,
        CtlCommand::Histogram { reset } => Command::Histogram { reset: *reset },
        CtlCommand::Capture(CaptureCommand::Start { path, port, limit, snaplen, filter }) => Command::CaptureStart(CaptureSpec {
            path: absolute(path)?,
            port: port.clone(),
            limit: *limit,
            snaplen: *snaplen,
            filter: filter.clone(),
        }),
        CtlCommand::Capture(CaptureCommand::Stop) => Command::CaptureStop,
        CtlCommand::Fw(FwCommand::Stats) => Command::FwStats,
    };
    let mut client = Client::connect(&args.socket)?;
    let result = client.call(command.clone())?;
    if args.json {
        println!("{result}");
        return Ok(());
    }
    print!("{}", human(&command, result)?);
    Ok(())
}

fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v).context("unexpected reply from the daemon (is it another version?)")
}

/// The result as text for a terminal.
fn human(command: &Command, result: Value) -> Result<String> {
    use std::fmt::Write as _;
    let mut out = String::new();
    match command {
        Command::Status => {
            let s: Status = typed(result)?;
            let _ = writeln!(out, "sluice {} (pid {}), up {}, config {}", s.version, s.pid, duration(s.uptime_secs), s.config.display());
            let _ = writeln!(out, "{} worker(s), {} pipeline swap(s)", s.workers, s.swaps);
            for p in &s.ports {
                let queues: Vec<String> = p.queues.iter().map(u32::to_string).collect();
                let _ = writeln!(
                    out,
                    "port {:<8} {:<15} queues {:<6} default {:<12} {} stage(s), generation {}",
                    p.name,
                    p.interface,
                    queues.join(","),
                    p.action.to_string(),
                    p.stages,
                    p.generation
                );
            }
            if let Some(f) = &s.firewall {
                let kernel: Vec<String> = f.kernel_rules.iter().map(|(i, n)| format!("{n} on {i}")).collect();
                let _ = writeln!(out, "firewall {}: {} rule(s), in the kernel: {}", f.file.display(), f.rules, kernel.join(", "));
            }
            if let Some(c) = &s.capture {
                out.push_str(&capture_line(c));
            }
        }
        Command::Stats { .. } => {
            let s: StatsReply = typed(result)?;
            let _ = writeln!(out, "over the last {}:", duration(s.interval_secs as f64));
            let _ = writeln!(out, "{:<10} {:<15} {:>5} {:>12} {:>12} {:>12} {:>10} {:>10}", "port", "interface", "queue", "rx", "tx", "drop", "ring_full", "wakeups");
            for q in &s.queues {
                let c = &q.counters;
                let _ = writeln!(out, "{:<10} {:<15} {:>5} {:>12} {:>12} {:>12} {:>10} {:>10}", q.port, q.interface, q.queue, c.rx, c.tx, c.drop, c.ring_full, c.wakeups);
            }
            if !s.stages.is_empty() {
                let _ = writeln!(out, "\n{:<10} {:<24} {:>12} {:>14}", "port", "stage", "packets", "bytes");
                for st in &s.stages {
                    let _ = writeln!(out, "{:<10} {:<24} {:>12} {:>14}", st.port, st.id, st.packets, st.bytes);
                }
            }
            if !s.steering.is_empty() {
                let _ = writeln!(out, "\n{:<15} {:>12} {:>12} {:>12} {:>10}", "steering", "seen", "redirected", "passed", "dropped");
                for st in &s.steering {
                    let c = &st.counters;
                    let _ = writeln!(out, "{:<15} {:>12} {:>12} {:>12} {:>10}", st.interface, c.seen, c.redirected, c.passed, c.dropped);
                }
            }
            let _ = writeln!(out, "\npipeline swaps: {}", s.swaps);
        }
        Command::PipelineList { .. } => {
            let list: Vec<PipelineInfo> = typed(result)?;
            for p in &list {
                let _ = writeln!(out, "port {} (generation {}), default {}", p.port, p.generation, p.default);
                if p.stages.is_empty() {
                    let _ = writeln!(out, "  (no stages)");
                }
                for (i, s) in p.stages.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "  {i:>2} {:<16} {:<12} {:>12} pkts {:>14} bytes  {} {:?}{}",
                        s.spec.id,
                        s.spec.action.to_string(),
                        s.packets,
                        s.bytes,
                        s.spec.format.as_str(),
                        s.spec.filter,
                        s.spec.section.as_ref().map(|x| format!(" section {x}")).unwrap_or_default()
                    );
                }
            }
        }
        Command::PipelineReplace { .. } | Command::StageAdd { .. } | Command::StageRemove { .. } | Command::StageMove { .. } | Command::PortAction { .. } => {
            let r: SwapReport = typed(result)?;
            let _ = writeln!(out, "port {}: generation {} running, {} stage(s), compiled in {} µs", r.port, r.generation, r.stages, r.compile_us);
        }
        Command::Reload => {
            let r: ReloadReport = typed(result)?;
            if r.changes.is_empty() {
                let _ = writeln!(out, "reloaded {}: nothing changed", r.config.display());
            } else {
                let _ = writeln!(out, "reloaded {}:", r.config.display());
                for c in &r.changes {
                    let _ = writeln!(out, "  {c}");
                }
            }
        }
        Command::Histogram { .. } => {
            let h: HistogramReply = typed(result)?;
            let _ = writeln!(out, "batch processing time: {} batches, min {} ns, mean {:.0} ns, max {} ns", h.count, h.min, h.mean, h.max);
            let quantiles: Vec<String> = h.quantiles.iter().map(|(q, v)| format!("p{} {v} ns", q * 100.0)).collect();
            let _ = writeln!(out, "{}", quantiles.join(", "));
            let most = h.buckets.iter().map(|&(_, n)| n).max().unwrap_or(0).max(1);
            for &(le, n) in &h.buckets {
                let bar = "#".repeat(((n * 40).div_ceil(most)) as usize);
                let _ = writeln!(out, "  <= {le:>12} ns {n:>12} {bar}");
            }
        }
        Command::CaptureStart(_) | Command::CaptureStop => {
            let c: CaptureInfo = typed(result)?;
            out.push_str(&capture_line(&c));
        }
        Command::FwStats => {
            let r: FwStatsReply = typed(result)?;
            match &r.file {
                Some(f) => {
                    let _ = writeln!(out, "firewall {}:", f.display());
                }
                None => {
                    let _ = writeln!(out, "no firewall ([dataplane] firewall not set)");
                }
            }
            if !r.rules.is_empty() {
                let _ = writeln!(
                    out,
                    "{:>4} {:<20} {:>12} {:>14} {:>12} {:>12}  kernel on",
                    "#", "rule", "packets", "bytes", "in kernel", "in userspace"
                );
            }
            for e in &r.rules {
                let index = if e.rule == "default" && e.line == 0 { "-".to_owned() } else { (e.index + 1).to_string() };
                let on = if e.kernel_on.is_empty() { "-".to_owned() } else { e.kernel_on.join(",") };
                let _ = writeln!(
                    out,
                    "{index:>4} {:<20} {:>12} {:>14} {:>12} {:>12}  {on}",
                    e.rule,
                    e.packets(),
                    e.bytes(),
                    e.kernel_packets,
                    e.user_packets
                );
            }
        }
    }
    Ok(out)
}

fn capture_line(c: &CaptureInfo) -> String {
    let port = c.port.as_ref().map(|p| format!(" (port {p})")).unwrap_or_default();
    let port = match &c.filter {
        Some(f) => format!("{port} filter {f:?}"),
        None => port,
    };
    let state = if c.running { "running" } else { "stopped" };
    format!("capture {state}: {}{port}, {} packets written, {} dropped\n", c.path.display(), c.packets, c.dropped)
}

fn duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..60 => format!("{secs:.1}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}
