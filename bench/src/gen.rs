//! `gen`: transmit rates of the load generator's two engines against minimal loops in the
//! same run, and offline filtering against tcpdump on the same file.
//!
//! Transmit: one namespace, veth `a0` — `b0`, an XDP drop program on b0; each sender runs
//! pinned to the last core for a warm-up and a window, and its rate is what b0 received over
//! the window. Measured: (a) a minimal AF_XDP TX loop (one fixed frame, no stamp, no pacing),
//! (b) the AF_XDP engine (templates, 16 flows, stamps), (c) minimal live frames (`gen_tx`,
//! one template), (d) the live-frames engine (`gen_stamp`: stamps and 16 flows written by the
//! XDP program). Ratios are to (a), and (d) also to (c).
//!
//! Offline: a pcap of `--packets` corpus frames, filtered by `sluice filter` (library, rayon
//! on all cores) and by `tcpdump -r IN -w OUT` with the same expression; both outputs must hold
//! the same packets.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice::bpf::source::{Format, compile_text};
use sluice::loadgen::traffic::{FrameSet, FrameSize, PortRange, Proto, Traffic};
use sluice::loadgen::xsk_tx::{self, Limit};
use sluice::loadgen::{LiveFlows, LiveSender, SinkAction, XdpSink};
use sluice::pcapio::filter::{Matcher, filter_file};
use sluice::pcapio::{LINKTYPE_ETHERNET, Reader, Writer};
use sluice::testbed::corpus;
use sluice::testbed::netns::Netns;
use sluice::xsk::ZeroCopy;

use crate::report::Table;

#[derive(clap::Args)]
pub struct Opts {
    /// Length of each transmit measurement window.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Rounds of the four transmit measurements; the best of each is kept.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Packets in the offline-filter capture.
    #[arg(long, default_value_t = 2_000_000)]
    packets: usize,
    /// Filter expression for the offline comparison.
    #[arg(long, default_value = "tcp port 80 or udp port 53 or icmp")]
    expr: String,
}

const WARMUP: Duration = Duration::from_millis(500);

fn traffic() -> Traffic {
    Traffic {
        proto: Proto::Udp,
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        src_ip: "10.0.0.1".parse().expect("constant address"),
        dst_ip: "10.0.0.2".parse().expect("constant address"),
        src_port: PortRange { first: 1000, count: 16 },
        dst_port: PortRange::single(9),
        vlan: None,
        size: FrameSize::Fixed(64),
        flows: 16,
    }
}

fn rx_packets(ns: &Netns, ifname: &str) -> Result<u64> {
    let out = ns.ip(&["-j", "-s", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parse ip -j output")?;
    v[0]["stats64"]["rx"]["packets"].as_u64().context("no rx packet count")
}

#[derive(Clone, Copy)]
enum Tx {
    XskBaseline,
    XskEngine,
    LiveBaseline,
    LiveEngine,
}

/// Runs one sender in `ns` and returns b0's receive rate over the window, in Mpps.
fn measure(ns: &Netns, which: Tx, window: Duration, core: Option<core_affinity::CoreId>) -> Result<f64> {
    let t = traffic();
    let frames = FrameSet::build(&t)?;
    let stop = AtomicBool::new(false);
    let progress = AtomicU64::new(0);
    ns.run_in(|| {
        std::thread::scope(|s| -> Result<f64> {
            let sender = s.spawn(|| -> Result<()> {
                if let Some(c) = core {
                    core_affinity::set_for_current(c);
                }
                let flows = LiveFlows { offset: t.l4_offset(), base: 1000, count: 16 };
                let template = frames.first();
                match which {
                    Tx::XskBaseline => {
                        let mut group = xsk_tx::open("a0", 0, ZeroCopy::Auto)?;
                        xsk_tx::baseline(&mut group, &template.bytes, &stop)?;
                    }
                    Tx::XskEngine => {
                        let mut group = xsk_tx::open("a0", 0, ZeroCopy::Auto)?;
                        xsk_tx::send(&mut group, &frames, 0, None, Limit::default(), &stop, &progress)?;
                    }
                    Tx::LiveBaseline => {
                        LiveSender::new("a0", &template.bytes)?.flood(&stop)?;
                    }
                    Tx::LiveEngine => {
                        LiveSender::stamped("a0", template, 0, Some(flows))?.send_paced(None, Limit::default(), &stop, &progress)?;
                    }
                }
                Ok(())
            });
            let measured = (|| {
                std::thread::sleep(WARMUP);
                let (c0, t0) = (rx_packets(ns, "b0")?, Instant::now());
                std::thread::sleep(window);
                let (c1, t1) = (rx_packets(ns, "b0")?, Instant::now());
                Ok::<_, anyhow::Error>((c1.saturating_sub(c0)) as f64 / (t1 - t0).as_secs_f64() / 1e6)
            })();
            stop.store(true, Relaxed);
            sender.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
            measured
        })
    })?
}

fn veth_ns() -> Result<Netns> {
    let ns = Netns::new("bgen")?;
    for key in ["all", "default"] {
        ns.sysctl(&format!("net.ipv6.conf.{key}.disable_ipv6"), "1")?;
    }
    let one = ["numrxqueues", "1", "numtxqueues", "1"];
    let mut args = vec!["link", "add", "a0"];
    args.extend(one);
    args.extend(["type", "veth", "peer", "name", "b0"]);
    args.extend(one);
    ns.ip(&args)?;
    ns.ip(&["link", "set", "a0", "up"])?;
    ns.ip(&["link", "set", "b0", "up"])?;
    Ok(ns)
}

pub fn run(opts: &Opts) -> Result<()> {
    if !sluice::testbed::netns::privileged("bench gen") {
        bail!("the gen bench needs root (namespaces, XDP, AF_XDP)");
    }
    let window = Duration::from_secs(opts.seconds.max(1));
    let ns = veth_ns().context("build namespace")?;
    let _sink = ns.run_in(|| XdpSink::attach("b0", SinkAction::Drop))?.context("attach drop sink to b0")?;
    let core = core_affinity::get_core_ids().unwrap_or_default().last().copied();
    let mut best = [0f64; 4];
    for round in 1..=opts.rounds.max(1) {
        for (i, which) in [Tx::XskBaseline, Tx::XskEngine, Tx::LiveBaseline, Tx::LiveEngine].into_iter().enumerate() {
            best[i] = best[i].max(measure(&ns, which, window, core)?);
        }
        eprintln!("round {round}: a {:.2} b {:.2} c {:.2} d {:.2} Mpps (best so far)", best[0], best[1], best[2], best[3]);
    }
    let pct = |x: f64, of: f64| format!("{:.0}%", 100.0 * x / of.max(f64::MIN_POSITIVE));
    let mut table = Table::new(&["transmit (64 B frames, veth, XDP drop on the peer)", "Mpps", "vs (a)", "vs (c)"]);
    table.row(vec!["(a) minimal AF_XDP TX loop".into(), format!("{:.2}", best[0]), "100%".into(), "-".into()]);
    table.row(vec!["(b) sluice gen, AF_XDP engine".into(), format!("{:.2}", best[1]), pct(best[1], best[0]), "-".into()]);
    table.row(vec!["(c) minimal live frames (gen_tx)".into(), format!("{:.2}", best[2]), pct(best[2], best[0]), "100%".into()]);
    table.row(vec!["(d) sluice gen, live-frames engine".into(), format!("{:.2}", best[3]), pct(best[3], best[0]), pct(best[3], best[2])]);
    print!("{}", table.render());
    drop(_sink);
    drop(ns);

    offline(opts)
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn offline(opts: &Opts) -> Result<()> {
    let dir = TempDir(std::env::temp_dir().join(format!("sluice-bench-gen-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let input = dir.0.join("in.pcap");
    let frames = corpus::corpus();
    let mut w = Writer::create(&input, LINKTYPE_ETHERNET, 262_144)?;
    for i in 0..opts.packets {
        let f = &frames[i % frames.len()];
        w.write(Duration::from_micros(i as u64), f.len() as u32, f)?;
    }
    w.finish()?;
    let size = std::fs::metadata(&input)?.len();

    let ours = dir.0.join("sluice.pcap");
    let matcher = Matcher::new(&compile_text(&opts.expr, Format::Tcpdump)?)?;
    let stats = filter_file(&input, &ours, &matcher, &mut |_, _| {})?;

    let theirs = dir.0.join("tcpdump.pcap");
    let t0 = Instant::now();
    let out = Command::new("tcpdump").arg("-r").arg(&input).arg("-w").arg(&theirs).arg(&opts.expr).output().context("run tcpdump")?;
    let tcpdump_s = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("tcpdump failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    if std::fs::read(&ours)? != std::fs::read(&theirs)? {
        let n = Reader::open(&theirs)?.read_all()?.len();
        bail!("outputs differ: sluice wrote {} packets, tcpdump {n}", stats.matched);
    }
    let tcpdump_pps = opts.packets as f64 / tcpdump_s;
    let mut table = Table::new(&["offline filter", "Mpkt/s", "seconds", "vs tcpdump"]);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    table.row(vec![
        format!("sluice filter ({threads} threads, JIT)"),
        format!("{:.2}", stats.packets_per_sec() / 1e6),
        format!("{:.3}", stats.elapsed.as_secs_f64()),
        format!("{:.2}x", stats.packets_per_sec() / tcpdump_pps),
    ]);
    table.row(vec!["tcpdump -r -w".into(), format!("{:.2}", tcpdump_pps / 1e6), format!("{tcpdump_s:.3}"), "1.00x".into()]);
    println!(
        "\n{} packets ({} MB), `{}` matched {} (outputs identical)",
        opts.packets,
        size >> 20,
        opts.expr,
        stats.matched
    );
    print!("{}", table.render());
    Ok(())
}
