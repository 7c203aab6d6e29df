//! `dataplane`: end-to-end packet rates on a veth topology (client —veth— dut —veth— server).
//!
//! The client floods the dut's port a with the kernel live-frames sender, pinned to the last
//! core; the loop under test runs on the first. Each measurement: the dut side is set up, the
//! sender starts, a warm-up passes, then rates are taken on the receiving side over the
//! window, so set-up and start-up transients stay out of the result.
//!
//! sluice is driven as a library (steering program + AF_XDP group + worker loop), exactly as
//! the runtime composes them, so the worker's busy time can be read precisely.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice::loadgen::{SinkAction, UdpFrame, XdpSink};
use sluice::stats::{QueueSnapshot, QueueStats, batch_histogram, collect_histograms, hist_link};
use sluice::steer::{AttachPref, Steering};
use sluice::testbed::netns::{Netns, NetnsError, Topology, TopologyOpts};
use sluice::worker::{Action, DEFAULT_BATCH, Worker};
use sluice::xsk::{BaselineReport, KernelStats, XskConfig, XskGroup, rxdrop_baseline};

use crate::bed::{Bed, pin};
use crate::report::{Table, mpps, tsc_ghz};

#[derive(clap::Args)]
pub struct Opts {
    /// Length of each measurement window.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds of (a), (b) and (c) back to back; the best of each is reported, since on a
    /// shared machine other load only ever makes a round slower.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

const WARMUP: Duration = Duration::from_millis(500);
/// How long the bench waits for the worker to hand over its batch-time histogram (it does at
/// its next batch boundary, at most an idle poll away).
const HIST_WAIT: Duration = Duration::from_secs(1);

/// Set by SIGINT/SIGTERM.
static INTERRUPTED: std::sync::LazyLock<Arc<AtomicBool>> =
    std::sync::LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// Sleeps for `d`, or fails as soon as the bench is interrupted.
fn pause(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        if INTERRUPTED.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

pub fn run(opts: &Opts) -> Result<()> {
    if !sluice::testbed::netns::privileged("bench dataplane") {
        bail!("the dataplane bench needs root (namespaces, XDP, AF_XDP)");
    }
    // SIGINT/SIGTERM end the bench through the normal error path, so every namespace, XDP
    // program and socket is released by its Drop rather than left behind.
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&INTERRUPTED))
            .context("install signal handler")?;
    }
    let window = Duration::from_secs(opts.seconds.max(1));
    let topo = Topology::new(TopologyOpts {
        tag: "bench".into(),
        ..Default::default()
    })
    .context("build topology")?;
    let frame = bench_frame(&topo)?;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let bed = Bed {
        topo: &topo,
        frame: &frame,
        sender_core: cores.last().copied(),
        dut_core: cores.first().copied(),
        window,
    };
    // Whatever sluice forwards to the server is dropped there by XDP, so the server's stack
    // never answers (ICMP unreachable) and disturbs the measurement.
    let _server_sink = topo
        .server
        .run_in(|| XdpSink::attach(&topo.server_if.name, SinkAction::Drop))?
        .context("attach drop sink to the server")?;

    let ceiling = bed.sender_ceiling()?;
    let (mut baseline, mut drop, mut forward) = (None, None, None);
    for round in 1..=opts.rounds.max(1) {
        let a = bed.rxdrop_baseline()?;
        let b = bed.sluice(Mode::Drop)?;
        let c = bed.sluice(Mode::Forward)?;
        eprintln!(
            "round {round}: (a) {:.2} Mpps, (b) {:.2} Mpps, (c) {:.2} Mpps",
            a.mpps, b.mpps, c.mpps
        );
        baseline = Some(best(baseline, a));
        drop = Some(best(drop, b));
        forward = Some(best(forward, c));
    }
    let (Some(baseline), Some(drop), Some(forward)) = (baseline, drop, forward) else {
        bail!("no round ran");
    };

    let ghz = tsc_ghz();
    let cycles = |ns: Option<f64>| match (ns, ghz) {
        (Some(ns), Some(ghz)) => format!("{:.1}", ns * ghz),
        _ => "-".into(),
    };
    let ns = |ns: Option<f64>| ns.map_or("-".into(), |ns| format!("{ns:.2}"));
    let mut table = Table::new(&[
        "measurement",
        "Mpps",
        "ns/pkt",
        "cycles/pkt",
        "pkts/batch",
        "cycles/batch",
        "p50 cycles/batch",
        "p50 cycles/pkt",
        "target",
    ]);
    let row = |name: &str, o: &Outcome, target: &str| {
        let mean_batch = o.ns_per_packet.zip(o.per_batch).map(|(ns, b)| ns * b);
        let p50_pkt = o.batch_ns_p50.zip(o.per_batch).map(|(ns, b)| ns / b);
        vec![
            name.into(),
            format!("{:.2}", o.mpps),
            ns(o.ns_per_packet),
            cycles(o.ns_per_packet),
            o.per_batch.map_or("-".into(), |b| format!("{b:.1}")),
            cycles(mean_batch),
            cycles(o.batch_ns_p50),
            cycles(p50_pkt),
            target.into(),
        ]
    };
    let dashes = |name: &str, value: String, target: &str| {
        let mut cells = vec![name.to_string(), value];
        cells.extend(std::iter::repeat_n("-".to_string(), 6));
        cells.push(target.into());
        cells
    };
    table.row(dashes("sender -> XDP_DROP on dut port a", format!("{ceiling:.2}"), "(sender ceiling)"));
    table.row(row("(a) bare AF_XDP rxdrop loop", &baseline, "(baseline)"));
    table.row(row("(b) sluice worker, drop", &drop, "< 58 cycles/pkt (DPDK af_xdp)"));
    let ratio = format!("{:.1}%", 100.0 * drop.mpps / baseline.mpps.max(f64::MIN_POSITIVE));
    table.row(dashes("    ratio (b)/(a)", ratio, ">= 95%"));
    table.row(row("(c) sluice worker, forward a->b", &forward, ">= 0.94 Mpps (DPDK testpmd)"));
    println!("{}", table.render());
    println!(
        "best of {} rounds; window {} s per measurement after {} ms warm-up; 60-byte UDP frames; \
         sender on core {}, dut on core {}; XSK mode {}; TSC {}",
        opts.rounds.max(1),
        window.as_secs(),
        WARMUP.as_millis(),
        core_name(bed.sender_core),
        core_name(bed.dut_core),
        drop.xsk_mode,
        ghz.map_or("unknown".into(), |g| format!("{g:.3} GHz")),
    );
    println!(
        "busy time is per non-empty batch, from after the RX ring showed packets to after the fill \
         ring was topped up, one clock read included; the p50 columns take the median batch, \
         which a loaded core does not inflate (divided by the mean batch for a packet)"
    );
    println!(
        "(c) delivered to the server {:.2} Mpps; worker tx {:.2} Mpps, tx ring full {:.2} Mpps",
        forward.mpps, forward.tx_mpps, forward.ring_full_mpps
    );
    println!("kernel losses at port a's socket while each (best) loop ran:");
    for (name, o) in [("(a)", &baseline), ("(b)", &drop), ("(c)", &forward)] {
        println!("  {name} {}", o.kernel_losses());
    }
    Ok(())
}

/// The faster of two outcomes.
fn best(current: Option<Outcome>, new: Outcome) -> Outcome {
    match current {
        Some(c) if c.mpps >= new.mpps => c,
        _ => new,
    }
}

fn core_name(core: Option<core_affinity::CoreId>) -> String {
    core.map_or("(unpinned)".into(), |c| c.id.to_string())
}

/// What one measured run produced.
struct Outcome {
    /// Packets per second (millions) over the window: processed for drop runs, delivered to
    /// the server for forward runs.
    mpps: f64,
    /// Busy nanoseconds per packet over non-empty batches.
    ns_per_packet: Option<f64>,
    /// Packets per non-empty batch, on average.
    per_batch: Option<f64>,
    /// The median time of a non-empty batch, in nanoseconds. The mean (`ns_per_packet` times
    /// `per_batch`) also counts the time the loop spent descheduled inside a batch, which on
    /// a shared machine can double it; the median does not move with that.
    batch_ns_p50: Option<f64>,
    tx_mpps: f64,
    ring_full_mpps: f64,
    xsk_mode: String,
    /// The kernel's counters of port a's socket while the loop ran, and for how long.
    kernel: KernelStats,
    kernel_secs: f64,
}

impl Outcome {
    /// Where the kernel lost frames before the loop saw them, per second.
    fn kernel_losses(&self) -> String {
        let k = &self.kernel;
        let per_s = |n: u64| mpps(n, self.kernel_secs);
        format!(
            "rx_dropped {:.2} Mpps, rx ring full {:.2} Mpps, fill ring empty {:.2} Mpps",
            per_s(k.rx_dropped),
            per_s(k.rx_ring_full),
            per_s(k.rx_fill_ring_empty_descs)
        )
    }
}

/// `later - earlier` for every kernel counter.
fn kernel_delta(later: &KernelStats, earlier: &KernelStats) -> KernelStats {
    KernelStats {
        rx_dropped: later.rx_dropped.saturating_sub(earlier.rx_dropped),
        rx_invalid_descs: later
            .rx_invalid_descs
            .saturating_sub(earlier.rx_invalid_descs),
        tx_invalid_descs: later
            .tx_invalid_descs
            .saturating_sub(earlier.tx_invalid_descs),
        rx_ring_full: later.rx_ring_full.saturating_sub(earlier.rx_ring_full),
        rx_fill_ring_empty_descs: later
            .rx_fill_ring_empty_descs
            .saturating_sub(earlier.rx_fill_ring_empty_descs),
        tx_ring_empty_descs: later
            .tx_ring_empty_descs
            .saturating_sub(earlier.tx_ring_empty_descs),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Drop,
    Forward,
}

impl Bed<'_> {
    fn xsk_config() -> XskConfig {
        XskConfig::default()
    }

    /// The sender alone, into a port whose XDP program drops everything: the ceiling.
    fn sender_ceiling(&self) -> Result<f64> {
        let topo = self.topo;
        let _sink = topo
            .dut
            .run_in(|| XdpSink::attach(&topo.dut_a.name, SinkAction::Drop))?
            .context("attach drop sink to dut port a")?;
        self.flood_while(|| {
            pause(WARMUP)?;
            let (c0, t0) = (
                link_rx_packets(&topo.dut, &topo.dut_a.name)?,
                Instant::now(),
            );
            pause(self.window)?;
            let (c1, t1) = (
                link_rx_packets(&topo.dut, &topo.dut_a.name)?,
                Instant::now(),
            );
            Ok(mpps(c1.saturating_sub(c0), (t1 - t0).as_secs_f64()))
        })
    }

    /// The bare rxdrop loop on dut port a, behind sluice's steering program.
    fn rxdrop_baseline(&self) -> Result<Outcome> {
        let topo = self.topo;
        // Channels rather than barriers: a dut thread that fails during set-up drops its
        // ends, and the main thread notices instead of waiting forever.
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let stop = &stop;
            let dut_core = self.dut_core;
            // The channel ends move into the dut thread (they are Send, not Sync).
            let dut = scope.spawn(move || {
                topo.dut
                    .run_in(move || -> Result<(BaselineReport, String, KernelStats)> {
                        pin(dut_core);
                        let mut steering = steering(&topo.dut_a.name)?;
                        let mut group =
                            XskGroup::open(&Self::xsk_config(), &[(topo.dut_a.name.clone(), 0)])
                                .context("open af_xdp socket on dut port a")?;
                        steering.register_socket(0, group.fd(0))?;
                        let mode = group.mode(0).to_string();
                        ready_tx.send(())?;
                        go_rx.recv()?;
                        let k0 = group.kernel_stats(0)?;
                        let report = rxdrop_baseline(&mut group, stop, DEFAULT_BATCH);
                        let kernel = kernel_delta(&group.kernel_stats(0)?, &k0);
                        group.drain(Duration::from_millis(200));
                        Ok((report, mode, kernel))
                    })
            });
            if ready_rx.recv().is_err() {
                return Err(join(dut)
                    .err()
                    .unwrap_or_else(|| anyhow::anyhow!("dut set-up stopped")));
            }
            // `go_tx` moves into the closure, so an interrupted warm-up drops it and the dut
            // thread, waiting for the go, gives up instead of blocking the join below.
            let run = self.flood_while(move || {
                pause(WARMUP)?;
                go_tx.send(())?;
                pause(self.window)?;
                stop.store(true, Ordering::Relaxed);
                Ok(())
            });
            stop.store(true, Ordering::Relaxed);
            let (report, mode, kernel) = join(dut)?;
            run?;
            Ok(Outcome {
                mpps: report.mpps(),
                ns_per_packet: report.ns_per_packet(),
                per_batch: (report.batches > 0).then(|| report.packets as f64 / report.batches as f64),
                batch_ns_p50: (report.batches > 0).then_some(report.batch_ns_p50 as f64),
                tx_mpps: 0.0,
                ring_full_mpps: 0.0,
                xsk_mode: mode,
                kernel,
                kernel_secs: report.elapsed.as_secs_f64(),
            })
        })
    }

    /// sluice's worker (library: steering + AF_XDP group + worker loop) on the dut, dropping
    /// everything from port a, or forwarding a <-> b.
    fn sluice(&self, mode: Mode) -> Result<Outcome> {
        let topo = self.topo;
        let ports: Vec<String> = match mode {
            Mode::Drop => vec![topo.dut_a.name.clone()],
            Mode::Forward => vec![topo.dut_a.name.clone(), topo.dut_b.name.clone()],
        };
        let actions = match mode {
            Mode::Drop => vec![Action::Drop],
            Mode::Forward => vec![Action::Forward(1), Action::Forward(0)],
        };
        let stats: Vec<Arc<QueueStats>> =
            ports.iter().map(|_| Arc::new(QueueStats::new())).collect();
        let (recorder, collector) = hist_link();
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let (stop, stats) = (&stop, &stats);
            let dut_core = self.dut_core;
            let dut = scope.spawn(move || {
                topo.dut
                    .run_in(move || -> Result<(String, KernelStats, f64)> {
                        pin(dut_core);
                        let mut steerings = Vec::new();
                        for p in &ports {
                            steerings.push(steering(p)?);
                        }
                        let pairs: Vec<(String, u32)> =
                            ports.iter().map(|p| (p.clone(), 0)).collect();
                        let group = XskGroup::open(&Self::xsk_config(), &pairs)
                            .context("open af_xdp sockets on the dut")?;
                        for (i, s) in steerings.iter_mut().enumerate() {
                            s.register_socket(0, group.fd(i))?;
                        }
                        let xsk_mode = group.mode(0).to_string();
                        let mut worker = Worker::new(group, actions, DEFAULT_BATCH)?;
                        // The runtime's workers record every batch's time; so does this one.
                        worker.record_batch_times(recorder);
                        ready_tx.send(())?;
                        let (k0, t0) = (worker.group().kernel_stats(0)?, Instant::now());
                        let account = worker.run(stop, stats)?;
                        let kernel = kernel_delta(&worker.group().kernel_stats(0)?, &k0);
                        let secs = t0.elapsed().as_secs_f64();
                        account
                            .check()
                            .map_err(|e| anyhow::anyhow!("worker frame accounting: {e}"))?;
                        Ok((xsk_mode, kernel, secs))
                    })
            });
            if ready_rx.recv().is_err() {
                return Err(join(dut)
                    .err()
                    .unwrap_or_else(|| anyhow::anyhow!("dut set-up stopped")));
            }
            let run = self.flood_while(|| {
                pause(WARMUP)?;
                let delivered = || link_rx_packets(&topo.server, &topo.server_if.name);
                let collectors = std::slice::from_ref(&collector);
                // Taking the histogram hands the worker a fresh one: the warm-up's batches
                // go with this first one.
                let mut times = batch_histogram();
                collect_histograms(collectors, &mut times, HIST_WAIT);
                let (s0, b0, d0, t0) = (sum(stats), batches(stats), delivered()?, Instant::now());
                pause(self.window)?;
                let (s1, b1, d1, t1) = (sum(stats), batches(stats), delivered()?, Instant::now());
                let mut times = batch_histogram();
                collect_histograms(collectors, &mut times, HIST_WAIT);
                Ok((
                    s1.delta(&s0),
                    b1.saturating_sub(b0),
                    (!times.is_empty()).then(|| times.value_at_quantile(0.5) as f64),
                    d1.saturating_sub(d0),
                    (t1 - t0).as_secs_f64(),
                ))
            });
            stop.store(true, Ordering::Relaxed);
            let (xsk_mode, kernel, kernel_secs) = join(dut)?;
            let (d, batches, batch_ns_p50, delivered, secs) = run?;
            Ok(Outcome {
                mpps: match mode {
                    Mode::Drop => mpps(d.rx, secs),
                    Mode::Forward => mpps(delivered, secs),
                },
                ns_per_packet: d.ns_per_packet(),
                per_batch: (batches > 0).then(|| d.busy_pkts as f64 / batches as f64),
                batch_ns_p50,
                tx_mpps: mpps(d.tx, secs),
                ring_full_mpps: mpps(d.ring_full, secs),
                xsk_mode,
                kernel,
                kernel_secs,
            })
        })
    }
}

/// Sluice's steering program on `ifname`, natively attached, with no kernel passthrough (the
/// bench traffic is all for the dataplane).
fn steering(ifname: &str) -> Result<Steering> {
    let steering = Steering::attach(ifname, AttachPref::Native, &[], false)
        .with_context(|| format!("attach steering to {ifname}"))?;
    Ok(steering)
}

fn batches(stats: &[Arc<QueueStats>]) -> u64 {
    stats.iter().map(|s| s.busy_batches()).sum()
}

fn sum(stats: &[Arc<QueueStats>]) -> QueueSnapshot {
    stats
        .iter()
        .fold(QueueSnapshot::default(), |acc, s| acc.add(&s.snapshot()))
}

/// Joins a dut thread that ran in a namespace.
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, Result<Result<T>, NetnsError>>) -> Result<T> {
    match handle.join() {
        Ok(r) => r.context("enter dut namespace")?,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A minimum-size UDP frame from client to server.
fn bench_frame(topo: &Topology) -> Result<Vec<u8>> {
    let (Some(src), Some(dst)) = (topo.client_if.addr, topo.server_if.addr) else {
        bail!("topology without client/server addresses");
    };
    Ok(UdpFrame {
        src_mac: topo.client_if.mac,
        dst_mac: topo.server_if.mac,
        src: SocketAddrV4::new(src, 9000),
        dst: SocketAddrV4::new(dst, 9001),
    }
    .build(&[0u8; 18])?)
}

/// The kernel's rx packet counter of an interface.
fn link_rx_packets(ns: &Netns, ifname: &str) -> Result<u64> {
    let out = ns.ip(&["-j", "-s", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parse ip -j -s link")?;
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .with_context(|| format!("no rx packet counter for {ifname}"))
}
