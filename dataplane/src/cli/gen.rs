//! `sluice gen`: the load generator's command line — flags layered over an optional
//! `configs/loadtest.toml`, live progress, the final summary (human or `--json`), the latency
//! histogram file and the plot; `--pcap` replays a capture instead of generating.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use sluice::loadgen::config::{RunSettings, Settings, TrafficSettings};
use sluice::loadgen::replay::{self, ReplayPlan};
use sluice::loadgen::report::{self, pps};
use sluice::loadgen::run::{self, Engine, Progress};
use sluice::loadgen::traffic::Proto;
use sluice::loadgen::xsk_tx;
use sluice::pcapio::Reader;
use sluice::xsk::ZeroCopy;

#[derive(clap::Args)]
pub struct GenArgs {
    /// Interface to send on.
    #[arg(short, long)]
    interface: Option<String>,
    /// Load-test settings (TOML, see configs/loadtest.toml); flags override it.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Transmit engine.
    #[arg(long, value_enum)]
    engine: Option<Engine>,
    /// Sender threads (AF_XDP: TX queue i each; live frames: pinned to core i each).
    #[arg(long)]
    senders: Option<u32>,
    #[arg(long, value_enum)]
    zero_copy: Option<ZeroCopyArg>,
    /// Target packets per second (k, M, G suffixes); default full speed.
    #[arg(long, value_parser = parse_si)]
    rate: Option<f64>,
    /// Target bits per second on the wire, instead of --rate (k, M, G suffixes).
    #[arg(long, value_parser = parse_si)]
    bps: Option<f64>,
    /// Reach the rate linearly over this many milliseconds.
    #[arg(long)]
    ramp_ms: Option<u64>,
    /// Packets to send in total.
    #[arg(short = 'n', long)]
    count: Option<u64>,
    /// Seconds to send for.
    #[arg(short, long)]
    duration: Option<f64>,
    #[arg(long, value_enum)]
    proto: Option<Proto>,
    #[arg(long)]
    src_mac: Option<String>,
    #[arg(long)]
    dst_mac: Option<String>,
    /// Source address or range A-B.
    #[arg(long)]
    src_ip: Option<String>,
    #[arg(long)]
    dst_ip: Option<String>,
    /// Source port or range P-Q.
    #[arg(long)]
    src_port: Option<String>,
    #[arg(long)]
    dst_port: Option<String>,
    #[arg(long)]
    vlan: Option<u16>,
    /// Frame length without FCS, or "imix".
    #[arg(long)]
    size: Option<String>,
    /// Flows (combinations of the address and port ranges).
    #[arg(long)]
    flows: Option<u32>,
    /// Receive on this interface and report loss and latency.
    #[arg(long)]
    rx: Option<String>,
    /// Receive on queues 0..N of the --rx interface (counted per queue in the summary).
    #[arg(long)]
    rx_queues: Option<u32>,
    /// How long the receiver waits for late frames after sending ends.
    #[arg(long)]
    linger_ms: Option<u64>,
    /// Do not pin threads to cores.
    #[arg(long)]
    no_pin: bool,
    /// Run the sender threads with SCHED_FIFO: steadier pacing on a busy machine.
    #[arg(long)]
    realtime: bool,
    /// Final summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Write the latency histogram here (HdrHistogram percentile-distribution format, µs).
    #[arg(long)]
    hdr_out: Option<PathBuf>,
    /// Draw the latency distribution and the rates over time as SVG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Replay this capture (pcap or pcapng) over AF_XDP instead of generating.
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Replay time scale (2.0 = twice as fast).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Replay back to back, ignoring the capture's timing.
    #[arg(long)]
    full_speed: bool,
    /// Times to replay the capture.
    #[arg(long = "loop", default_value_t = 1)]
    loops: u32,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ZeroCopyArg {
    Auto,
    On,
    Off,
}

/// `100k`, `1.5M`, `10G` (decimal multipliers).
fn parse_si(s: &str) -> Result<f64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1e3),
        Some((i, 'm' | 'M')) => (&s[..i], 1e6),
        Some((i, 'g' | 'G')) => (&s[..i], 1e9),
        _ => (s, 1.0),
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("{s:?} is not a number (k, M, G suffixes allowed)"))?;
    if v > 0.0 && v.is_finite() { Ok(v * mult) } else { Err(format!("{s:?} must be positive")) }
}

impl GenArgs {
    fn settings(&self) -> Settings {
        Settings {
            traffic: TrafficSettings {
                proto: self.proto,
                src_mac: self.src_mac.clone(),
                dst_mac: self.dst_mac.clone(),
                src_ip: self.src_ip.clone(),
                dst_ip: self.dst_ip.clone(),
                src_port: self.src_port.clone(),
                dst_port: self.dst_port.clone(),
                vlan: self.vlan,
                size: self.size.clone(),
                flows: self.flows,
            },
            run: RunSettings {
                interface: self.interface.clone(),
                engine: self.engine,
                senders: self.senders,
                zero_copy: self.zero_copy.map(|z| match z {
                    ZeroCopyArg::Auto => ZeroCopy::Auto,
                    ZeroCopyArg::On => ZeroCopy::On,
                    ZeroCopyArg::Off => ZeroCopy::Off,
                }),
                rate_pps: self.rate,
                rate_bps: self.bps,
                ramp_ms: self.ramp_ms,
                count: self.count,
                duration_s: self.duration,
                rx_interface: self.rx.clone(),
                rx_queues: self.rx_queues,
                linger_ms: self.linger_ms,
                pin: self.no_pin.then_some(false),
                realtime: self.realtime.then_some(true),
            },
        }
    }
}

/// Progress on stderr: an indicatif bar on a terminal, a plain line per second otherwise.
pub struct Ticker {
    bar: Option<ProgressBar>,
    start: Instant,
    /// When the last plain line was printed; None before the first update.
    last_line: Option<Duration>,
}

impl Ticker {
    pub fn new(len: Option<u64>) -> Ticker {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match len {
                Some(n) => ProgressBar::new(n),
                None => ProgressBar::new_spinner(),
            };
            let template = if len.is_some() {
                "{elapsed_precise} [{bar:30}] {percent:>3}% {msg}"
            } else {
                "{elapsed_precise} {spinner} {msg}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Ticker { bar, start: Instant::now(), last_line: None }
    }

    pub fn update(&mut self, pos: u64, msg: String) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(pos);
                bar.set_message(msg);
            }
            None => {
                // The first update starts the clock: set-up time is not a second of progress.
                let now = self.start.elapsed();
                let last = *self.last_line.get_or_insert(now);
                if now - last >= Duration::from_secs(1) {
                    self.last_line = Some(now);
                    eprintln!("{:7.1}s {msg}", now.as_secs_f64());
                }
            }
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Sets the returned flag on SIGINT or SIGTERM, so runs end through their normal path.
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("install signal handler")?;
    }
    Ok(stop)
}

pub fn run(args: &GenArgs) -> Result<()> {
    let base = match &args.config {
        Some(path) => Settings::load(path)?,
        None => Settings::default(),
    };
    let settings = base.layered(&args.settings());
    if let Some(pcap) = &args.pcap {
        return replay(args, &settings, pcap);
    }
    let (plan, traffic) = settings.resolve()?;
    let stop = stop_flag()?;
    let mut ticker = Ticker::new(plan.limit.count);
    let outcome = run::run(&plan, &traffic, &stop, &mut |p: &Progress| {
        let rx = p.received.map_or(String::new(), |r| format!(", received {r} ({})", pps(p.rx_pps)));
        ticker.update(p.sent, format!("sent {} ({}){rx}", p.sent, pps(p.tx_pps)));
    });
    ticker.finish();
    let outcome = outcome?;
    if let Some(path) = &args.hdr_out {
        let Some(h) = &outcome.latency else { bail!("--hdr-out needs --rx: there is no latency without a receiver") };
        std::fs::write(path, report::percentile_distribution(h)).with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        report::plot(path, &outcome.report, outcome.latency.as_ref())?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&outcome.report)?);
    } else {
        print!("{}", outcome.report.human());
    }
    Ok(())
}

fn replay(args: &GenArgs, settings: &Settings, pcap: &std::path::Path) -> Result<()> {
    let ifname = settings.run.interface.clone().context("interface: not given (-i IFACE)")?;
    if settings.run.engine == Some(Engine::Live) {
        bail!("replay sends over AF_XDP only: the live-frames engine sends one template");
    }
    if !(args.speed > 0.0 && args.speed.is_finite()) {
        bail!("--speed must be a positive number");
    }
    let packets = Reader::open(pcap)?.read_all()?;
    let zero_copy = settings.run.zero_copy.unwrap_or_default();
    let mut group = xsk_tx::open(&ifname, 0, zero_copy)?;
    let max_len = xsk_tx::tx_config(zero_copy).max_packet() as usize;
    let plan = ReplayPlan { speed: (!args.full_speed).then_some(args.speed), loops: args.loops };
    let stop = stop_flag()?;
    let progress = Arc::new(AtomicU64::new(0));
    let total = packets.len() as u64 * u64::from(args.loops);
    let realtime = settings.run.realtime.unwrap_or(false);
    let result = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            sluice::loadgen::sched::prepare_thread(None, realtime);
            replay::replay(&mut group, &packets, plan, max_len, &stop, &progress)
        });
        let mut ticker = Ticker::new(Some(total));
        while !worker.is_finished() {
            std::thread::sleep(Duration::from_millis(100));
            let sent = progress.load(Relaxed);
            ticker.update(sent, format!("replayed {sent} of {total}"));
        }
        ticker.finish();
        worker.join().map_err(|_| anyhow::anyhow!("replay thread panicked"))
    })??;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "replayed {} packets in {:.3} s on {ifname} ({}), {} left out (too long), latest batch {:.1} us behind schedule",
            result.sent,
            result.elapsed.as_secs_f64(),
            pps(result.sent as f64 / result.elapsed.as_secs_f64().max(1e-9)),
            result.skipped,
            result.max_late.as_secs_f64() * 1e6
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_suffixes() {
        assert_eq!(parse_si("100k"), Ok(100e3));
        assert_eq!(parse_si("1.5M"), Ok(1.5e6));
        assert_eq!(parse_si("10G"), Ok(10e9));
        assert_eq!(parse_si("42"), Ok(42.0));
        assert!(parse_si("-1").is_err());
        assert!(parse_si("k").is_err());
    }
}
