//! `firewall`: the firewall's cost, in one run.
//!
//! 1. ns/packet of the userspace engine (`Engine::classify`) against a blocklist set of
//!    10 … 100,000 entries (lookups that miss and that hit), and against 10 … 100,000 rules
//!    (one address each, none matching: the engine groups them into one lookup). Needs no
//!    privileges.
//! 2. As root, on a veth pair in a private namespace, a flood from the client dropped by the
//!    same rule set (`src @blocklist drop`, 10,000 entries) three ways: in the steering
//!    program's kernel stage (XDP, before AF_XDP), in userspace (steering → AF_XDP → engine),
//!    and by nftables (netdev ingress hook with an interval set), the anchor to beat. Without
//!    `nft` (Debian package `nftables`) that row says so and the others still run.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice::firewall::{describe, group, place};
use sluice::firewall::{Engine, FirewallConfig, IngressId, Ruleset, Verdict};
use sluice::loadgen::{SinkAction, XdpSink};
use sluice::steer::firewall::FwCounter;
use sluice::steer::{AttachPref, Steering};
use sluice::testbed::netns::{Topology, TopologyOpts};
use sluice::xsk::{Verdict as XskVerdict, XskConfig, XskGroup};

use crate::bed::{Bed, pin};
use crate::report::Table;

#[derive(clap::Args)]
pub struct Opts {
    /// Seconds per veth measurement.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Rounds of the three veth measurements; the best of each is kept.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Entries of the blocklist the veth measurements drop with.
    #[arg(long, default_value_t = 10_000)]
    entries: usize,
    /// Only the engine measurements (no root needed).
    #[arg(long)]
    engine_only: bool,
    /// Only the veth measurements.
    #[arg(long, conflicts_with = "engine_only")]
    veth_only: bool,
}

const SIZES: [usize; 5] = [10, 100, 1_000, 10_000, 100_000];

pub fn run(opts: &Opts) -> Result<()> {
    if !opts.veth_only {
        engine_tables()?;
    }
    if opts.engine_only {
        return Ok(());
    }
    if !sluice::testbed::netns::privileged("bench firewall") {
        bail!("the veth part needs root (use --engine-only without)");
    }
    veth(opts)
}

/// Deterministic distinct addresses in 100.64.0.0/10.
fn host(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x6440_0000 | ((i as u32).wrapping_mul(2_654_435_761) & 0x003f_ffff))
}

fn udp_from(src: Ipv4Addr, dport: u16) -> Vec<u8> {
    describe::frame(&format!("udp {src}:1000 > 10.0.0.1:{dport}")).expect("frame description is valid")
}

fn ruleset(text: &str) -> Result<Arc<Ruleset>> {
    let dir = std::env::temp_dir().join(format!("sluice-bench-fw-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cfg = FirewallConfig::parse(text, &dir.join("fw.toml"));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Arc::new(Ruleset::new(cfg?)?))
}

/// A firewall whose only rule drops sources in a set of `n` hosts, read from a file.
fn blocklist_ruleset(n: usize, extra: Option<Ipv4Addr>) -> Result<(Arc<Ruleset>, String)> {
    let dir = std::env::temp_dir().join(format!("sluice-bench-fw-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut list = String::new();
    for i in 0..n {
        let _ = writeln!(list, "{}", host(i));
    }
    if let Some(a) = extra {
        let _ = writeln!(list, "{a}");
    }
    std::fs::write(dir.join("bl.txt"), &list)?;
    let text = "[firewall]\ndefault = \"accept\"\n[set.bl]\nfile = \"bl.txt\"\n[[rule]]\nname = \"bl\"\nsrc = \"@bl\"\naction = \"drop\"\n";
    let cfg = FirewallConfig::parse(text, &dir.join("fw.toml"));
    let _ = std::fs::remove_dir_all(&dir);
    Ok((Arc::new(Ruleset::new(cfg?)?), list))
}

/// One engine classifying a fixed list of frames, timed in rounds of about 20 ms.
struct Probe {
    engine: Engine,
    ingress: IngressId,
    frames: Vec<Vec<u8>>,
    reps: u64,
    best: f64,
}

impl Probe {
    /// Checks every frame gets `want`, and sizes a round.
    fn new(rs: &Arc<Ruleset>, mut frames: Vec<Vec<u8>>, want: Verdict) -> Result<Probe> {
        let mut engine = Engine::new(Arc::clone(rs), false);
        let ingress = rs.ingress("bench0");
        for f in frames.iter_mut() {
            let got = engine.classify(f, ingress, 0).verdict;
            if got != want {
                bail!("bench frame classified {got}, expected {want}");
            }
        }
        let t0 = Instant::now();
        for f in frames.iter_mut() {
            std::hint::black_box(engine.classify(f, ingress, 0));
        }
        let pass = t0.elapsed().as_nanos().max(1) as u64;
        let reps = (20_000_000 / pass).clamp(1, 200);
        Ok(Probe { engine, ingress, frames, reps, best: f64::MAX })
    }

    /// One timed round; keeps the best ns per classify.
    fn round(&mut self) {
        let t0 = Instant::now();
        for r in 0..self.reps {
            for f in self.frames.iter_mut() {
                std::hint::black_box(self.engine.classify(f, self.ingress, r));
            }
        }
        let ns = t0.elapsed().as_nanos() as f64 / (self.reps as f64 * self.frames.len() as f64);
        self.best = self.best.min(ns);
    }
}

/// Best-of-rounds ns per classify for every probe. Rounds go round-robin over the probes, so
/// a burst of load from elsewhere on the machine hits every configuration alike and the
/// ratios between them hold.
fn measure(probes: &mut [Probe], rounds: usize) {
    for _ in 0..rounds {
        for p in probes.iter_mut() {
            p.round();
        }
    }
}

fn engine_tables() -> Result<()> {
    // Misses spread over the set's whole range like the hits (`host` is a bijection on the
    // /10, so hosts past the set's size are not in it), so both touch the whole structure.
    // 1,024 distinct sources each, cycled.
    let misses: Vec<Vec<u8>> = (0..1024).map(|i| udp_from(host(200_000 + i * 997), 53)).collect();
    let mut table = Table::new(&["blocklist entries", "ns/pkt miss", "ns/pkt hit", "miss vs 10", "hit vs 10"]);
    // Warm-up (page faults, frequency): the first configuration measured must not pay for it.
    let (warm, _) = blocklist_ruleset(SIZES[0], None)?;
    measure(&mut [Probe::new(&warm, misses.clone(), Verdict::Accept)?], 7);
    let mut probes = Vec::new();
    for n in SIZES {
        let (rs, _) = blocklist_ruleset(n, None)?;
        let hits: Vec<Vec<u8>> = (0..1024).map(|i| udp_from(host(i * 7 % n), 53)).collect();
        probes.push(Probe::new(&rs, misses.clone(), Verdict::Accept)?);
        probes.push(Probe::new(&rs, hits, Verdict::Drop)?);
    }
    measure(&mut probes, 15);
    let (bm, bh) = (probes[0].best, probes[1].best);
    for (n, pair) in SIZES.iter().zip(probes.chunks(2)) {
        let (m, h) = (pair[0].best, pair[1].best);
        table.row(vec![n.to_string(), format!("{m:.1}"), format!("{h:.1}"), format!("{:.2}x", m / bm), format!("{:.2}x", h / bh)]);
    }
    println!("userspace engine, one rule `src @blocklist drop` (target: 100k within 2x of 10):");
    println!("{}", table.render());

    let mut table = Table::new(&["rules", "ns/pkt (no match)", "ns/rule", "evaluated as"]);
    for n in SIZES {
        let mut text = String::from("[firewall]\ndefault = \"accept\"\n");
        for i in 0..n {
            let _ = write!(text, "[[rule]]\nsrc = \"{}\"\naction = \"drop\"\n", host(i));
        }
        let rs = ruleset(&text)?;
        // Were they not grouped, a scan of 100k rules would take milliseconds: 64 frames.
        let mut probe = [Probe::new(&rs, misses[..64].to_vec(), Verdict::Accept)?];
        measure(&mut probe, 7);
        let ns = probe[0].best;
        let groups = group::groups(rs.config());
        let grouped: usize = groups.iter().map(|g| g.len).sum();
        let shape = format!("{} group(s) + {} single rule(s)", groups.len(), n - grouped);
        table.row(vec![n.to_string(), format!("{ns:.1}"), format!("{:.3}", ns / n as f64), shape]);
    }
    println!("userspace engine, N rules `src <address> drop` each, packets matching none:");
    println!("{}", table.render());
    Ok(())
}

// ---- veth ---------------------------------------------------------------------------------

fn veth(opts: &Opts) -> Result<()> {
    let topo = Topology::new(TopologyOpts { tag: "fwb".into(), ..TopologyOpts::default() }).context("build topology")?;
    let src = topo.client_if.addr.context("client addr")?;
    let dst = topo.server_if.addr.context("server addr")?;
    // veth delivers every frame to its peer whatever the MAC, and both droppers sit before
    // any MAC check, so describe's fixed addresses do.
    let frame = describe::frame(&format!("udp {src}:9000 > {dst}:9001 len 60"))?;
    let (rs, list) = blocklist_ruleset(opts.entries.saturating_sub(1), Some(src))?;
    let window = Duration::from_secs(opts.seconds.max(1));
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (sender_core, dut_core) = (cores.last().copied(), cores.first().copied());
    let bed = Bed { topo: &topo, frame: &frame, sender_core, dut_core, window };

    let have_nft = nft_available();
    if !have_nft {
        eprintln!("nftables row skipped: `nft` is not installed (Debian package `nftables`)");
    }
    let (mut k, mut u, mut n) = (0f64, 0f64, 0f64);
    for round in 1..=opts.rounds.max(1) {
        let kr = bed.kernel(&rs)?;
        let ur = bed.userspace(&rs)?;
        let nr = if have_nft { bed.nftables(&list)? } else { 0.0 };
        eprintln!("round {round}: kernel {kr:.3} Mpps, userspace {ur:.3} Mpps, nftables {nr:.3} Mpps");
        (k, u, n) = (k.max(kr), u.max(ur), n.max(nr));
    }
    let mut table = Table::new(&["dropper (same rule, same traffic)", "Mpps", "vs nftables"]);
    for (name, v) in [
        ("sluice kernel stage (XDP, before AF_XDP)", Some(k)),
        ("sluice userspace engine (AF_XDP)", Some(u)),
        ("nftables netdev ingress, interval set", have_nft.then_some(n)),
    ] {
        let ratio = if n > 0.0 { format!("{:.2}x", v.unwrap_or(0.0) / n) } else { "-".into() };
        let rate = v.map_or_else(|| "skipped: no `nft` (apt-get install nftables)".into(), |v| format!("{v:.3}"));
        table.row(vec![name.into(), rate, ratio]);
    }
    println!(
        "veth flood of 60-byte UDP frames from one source, dropped by `src @blocklist drop` with {} entries:",
        opts.entries
    );
    println!("{}", table.render());
    println!(
        "best of {} rounds, {} s each; sender on core {:?}, dut on core {:?}; packets counted by each dropper's own counter",
        opts.rounds.max(1),
        window.as_secs(),
        sender_core.map(|c| c.id),
        dut_core.map(|c| c.id)
    );
    Ok(())
}

/// Whether the nftables anchor can run: `nft` is on the PATH and answers.
fn nft_available() -> bool {
    std::process::Command::new("nft")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Bed<'_> {
    /// Rate of a counter read by `read` over the window, after a warm-up.
    fn rate(&self, read: impl Fn() -> Result<u64>) -> Result<f64> {
        std::thread::sleep(Duration::from_millis(500));
        let (c0, t0) = (read()?, Instant::now());
        std::thread::sleep(self.window);
        let (c1, t1) = (read()?, Instant::now());
        Ok(c1.saturating_sub(c0) as f64 / (t1 - t0).as_secs_f64() / 1e6)
    }

    fn kernel(&self, rs: &Arc<Ruleset>) -> Result<f64> {
        let topo = self.topo;
        let ifname = topo.dut_a.name.clone();
        topo.dut
            .run_in(|| -> Result<f64> {
                let mut steering = Steering::attach(&ifname, AttachPref::Native, &[], false)?;
                let placement = place::place(rs.config(), Some(&ifname));
                let mut maps = steering.firewall()?;
                maps.load(&place::kernel_tables(rs.config(), &placement))?;
                // A socket on the queue, as in service: the frames the firewall lets through
                // would go to it.
                let group = XskGroup::open(&XskConfig::default(), &[(ifname.clone(), 0)])?;
                steering.register_socket(0, group.fd(0))?;
                let read = || -> Result<u64> {
                    let c: Vec<FwCounter> = maps.counters(1)?;
                    Ok(c[0].packets)
                };
                self.flood_while(|| self.rate(read))
            })
            .context("enter dut")?
    }

    fn userspace(&self, rs: &Arc<Ruleset>) -> Result<f64> {
        let topo = self.topo;
        let ifname = topo.dut_a.name.clone();
        let dut_core = self.dut_core;
        let stop = AtomicBool::new(false);
        let dropped = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            let (stop, dropped) = (&stop, &dropped);
            let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
            let ifname2 = ifname.clone();
            let dut = scope.spawn(move || {
                topo.dut.run_in(move || -> Result<()> {
                    pin(dut_core);
                    let mut steering = Steering::attach(&ifname2, AttachPref::Native, &[], false)?;
                    let mut group = XskGroup::open(&XskConfig::default(), &[(ifname2.clone(), 0)])?;
                    while group.refill(0) > 0 {}
                    steering.register_socket(0, group.fd(0))?;
                    let mut engine = Engine::new(Arc::clone(rs), false);
                    let ingress = rs.ingress(&ifname2);
                    ready_tx.send(())?;
                    let epoch = Instant::now();
                    let mut local = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        group.refill(0);
                        if group.rx_ready(0, 64) == 0 {
                            group.poll(10)?;
                            continue;
                        }
                        let now = epoch.elapsed().as_nanos() as u64;
                        group.process_rx(0, 64, |f| {
                            if engine.classify(f, ingress, now).verdict != Verdict::Accept {
                                local += 1;
                            }
                            XskVerdict::Drop
                        })?;
                        dropped.store(local, Ordering::Relaxed);
                    }
                    group.drain(Duration::from_millis(200));
                    Ok(())
                })
            });
            if ready_rx.recv().is_err() {
                return match dut.join() {
                    Ok(r) => Err(r.context("enter dut").and_then(|r| r).err().unwrap_or_else(|| anyhow::anyhow!("dut stopped"))),
                    Err(p) => std::panic::resume_unwind(p),
                };
            }
            let rate = self.flood_while(|| self.rate(|| Ok(dropped.load(Ordering::Relaxed))));
            stop.store(true, Ordering::Relaxed);
            match dut.join() {
                Ok(r) => r.context("enter dut")??,
                Err(p) => std::panic::resume_unwind(p),
            }
            rate
        })
    }

    fn nftables(&self, list: &str) -> Result<f64> {
        let topo = self.topo;
        let ifname = &topo.dut_a.name;
        let elements: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
        let script = format!(
            "table netdev sluicebench {{\n set bl {{ type ipv4_addr; flags interval; elements = {{ {} }} }}\n \
             chain ingress {{ type filter hook ingress device \"{ifname}\" priority 0; ip saddr @bl counter drop; }}\n}}\n",
            elements.join(", ")
        );
        let path = std::env::temp_dir().join(format!("sluice-bench-nft-{}.nft", std::process::id()));
        std::fs::write(&path, script)?;
        let out = topo.dut.exec(["nft", "-f"]).arg(&path).output().context("run nft (apt-get install nftables)")?;
        let _ = std::fs::remove_file(&path);
        if !out.status.success() {
            bail!("nft -f: {}", String::from_utf8_lossy(&out.stderr));
        }
        let read = || -> Result<u64> {
            let out = topo.dut.exec(["nft", "-j", "list", "chain", "netdev", "sluicebench", "ingress"]).output()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("parse nft -j")?;
            v["nftables"]
                .as_array()
                .and_then(|items| items.iter().find_map(|i| i["rule"]["expr"].as_array()))
                .and_then(|exprs| exprs.iter().find_map(|e| e["counter"]["packets"].as_u64()))
                .context("no counter in the nft rule")
        };
        // Live frames reach a veth's stack only through its XDP receive path: a pass-all
        // program opens it, and the frames then meet the ingress hook as skbs.
        let sink = topo.dut.run_in(|| XdpSink::attach(ifname, SinkAction::Pass)).context("enter dut")?;
        let rate = sink.context("attach xdp pass program").and_then(|_sink| self.flood_while(|| self.rate(read)));
        let _ = topo.dut.exec(["nft", "delete", "table", "netdev", "sluicebench"]).status();
        rate
    }
}
