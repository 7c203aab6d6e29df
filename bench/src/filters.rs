//! `sluice-bench filters`: nanoseconds per packet for a fixed table of tcpdump expressions,
//! run by sluice's JIT, sluice's interpreter and libpcap's own `bpf_filter`, all in one run.
//!
//! Each engine runs the same compiled classic program (libpcap's optimiser on) over the same
//! packets; before timing, every engine's verdict is checked against libpcap's on every packet,
//! so a fast wrong answer cannot be reported. Two packet sets: the 64-byte UDP/53 frame alone
//! (the anchor case) and a fixed mix from the generated corpus.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice::bpf::interp::Interpreter;
use sluice::bpf::jit::{JitProgram, PacketRef};
use sluice::bpf::tcpdump::LibpcapFilter;
use sluice::bpf::{Exec, classic};
use sluice::testbed::corpus;

use crate::report::Table;

#[derive(clap::Args)]
pub struct Opts {
    /// Measuring time per (filter, engine, packet set) cell, in milliseconds.
    #[arg(long, default_value_t = 300)]
    ms: u64,
    /// Frames taken from the corpus for the packet mix.
    #[arg(long, default_value_t = 256)]
    mix: usize,
    /// Runs only the filters whose expression contains this text.
    #[arg(long)]
    only: Option<String>,
}

/// From one clause to twenty: ports, hosts, nets, flags, VLAN, IPv6, ICMP, length, arithmetic.
const FILTERS: &[&str] = &[
    "udp dst port 53",
    "tcp",
    "host 10.0.0.1",
    "src net 10.0.0.0/8 and dst port 443",
    "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
    "vlan and udp",
    "ip6 and tcp dst port 443",
    "icmp or icmp6 or arp",
    "ip[2:2] - ((ip[0]&0xf)<<2) > 20 and len > 100",
    "(tcp port 22 or tcp port 80 or tcp port 443 or tcp port 8080 or udp port 53 or udp port 123 \
     or udp port 67 or udp port 68) and not (host 10.1.1.1 or host 10.1.1.2 or host 10.1.1.3 \
     or host 10.1.1.4 or net 192.168.0.0/16 or net 172.16.0.0/12) and (ip[8] > 1 or ip6) \
     and not ether broadcast and greater 60 and less 1500 and not ip[6:2] & 0x1fff != 0",
];

pub fn run(opts: &Opts) -> Result<()> {
    let budget = Duration::from_millis(opts.ms);
    // The anchor packet repeated to one batch, so the batch entry sees what a worker sees.
    let anchor = vec![corpus::udp_64(53); BATCH_PACKETS];
    let mix: Vec<Vec<u8>> = corpus::corpus().into_iter().step_by(3).take(opts.mix).collect();

    let mut table = Table::new(&[
        "filter",
        "classic",
        "packets",
        "jit batch ns",
        "jit call ns",
        "interp ns",
        "libpcap ns",
        "libpcap/jit batch",
        "libpcap/jit call",
        "libpcap/interp",
    ]);
    for expr in FILTERS.iter().filter(|e| opts.only.as_ref().is_none_or(|o| e.contains(o.as_str()))) {
        let pcap = LibpcapFilter::compile(expr)?;
        let program = classic::compile(pcap.insns()).with_context(|| format!("compile `{expr}`"))?;
        let jit = JitProgram::compile(&program).with_context(|| format!("jit `{expr}`"))?;
        let interp = Interpreter::new(&program);
        let by_jit = |p: &mut [u8]| jit.run_xdp(p, 0, 0).is_ok_and(|r| r != 0);
        let by_interp = |p: &mut [u8]| interp.run_xdp(p, 0, 0).is_ok_and(|r| r != 0);
        let by_libpcap = |p: &mut [u8]| pcap.matches(p);
        for (set, packets) in [("udp64", &anchor), ("mix", &mix)] {
            let mut bufs = packets.clone();
            let mut batch_bufs = packets.clone();
            let mut refs: Vec<PacketRef<'_>> = batch_bufs.iter_mut().map(|b| PacketRef::new(b)).collect();
            let mut verdicts = vec![0u64; refs.len()];
            jit.run_batch(&mut refs, 0, 0, &mut verdicts);
            for (i, p) in packets.iter().enumerate() {
                let want = pcap.matches(p);
                let by_batch = verdicts[i] != 0;
                for (name, got) in [("jit", by_jit(&mut bufs[i])), ("interpreter", by_interp(&mut bufs[i])), ("jit batch entry", by_batch)] {
                    if got != want {
                        bail!("`{expr}`: the {name} disagrees with libpcap on packet {i} of {set}");
                    }
                }
            }
            let mut engines: [Box<dyn FnMut() -> u64 + '_>; 4] = [
                Box::new(|| {
                    // The verdicts stay in memory for the caller, as a worker reads them.
                    for chunk in refs.chunks_mut(BATCH_PACKETS) {
                        let n = chunk.len();
                        jit.run_batch(black_box(chunk), 0, 0, &mut verdicts[..n]);
                        black_box(&verdicts[..n]);
                    }
                    0
                }),
                per_packet(&by_jit, packets.clone()),
                per_packet(&by_interp, packets.clone()),
                per_packet(&by_libpcap, packets.clone()),
            ];
            let ns = time_engines(&mut engines, packets.len(), budget);
            table.row(vec![
                short(expr),
                pcap.insns().len().to_string(),
                set.to_string(),
                format!("{:.2}", ns[0]),
                format!("{:.2}", ns[1]),
                format!("{:.2}", ns[2]),
                format!("{:.2}", ns[3]),
                format!("{:.1}", ns[3] / ns[0]),
                format!("{:.1}", ns[3] / ns[1]),
                format!("{:.1}", ns[3] / ns[2]),
            ]);
        }
    }
    println!(
        "BPF filters: ns per packet (lower is better), same packets and program for every engine; \
         `jit batch` is one native call per {BATCH_PACKETS} packets (the workers' way), `jit call` one per packet"
    );
    print!("{}", table.render());
    Ok(())
}

/// Packets per call of the JIT's batch entry, as a worker's RX batch.
const BATCH_PACKETS: usize = 64;

/// One round of `f` over every packet, as an engine for [`time_engines`]; returns the matches.
fn per_packet<'a>(f: &'a (impl Fn(&mut [u8]) -> bool + 'a), mut packets: Vec<Vec<u8>>) -> Box<dyn FnMut() -> u64 + 'a> {
    Box::new(move || {
        let mut hits = 0u64;
        for p in packets.iter_mut() {
            hits += f(black_box(p.as_mut_slice())) as u64;
        }
        hits
    })
}

/// Each timed slice lasts about this long: short enough that many run uninterrupted.
const SLICE: Duration = Duration::from_millis(1);

/// ns per packet of each engine (a closure running one round over `packets` packets),
/// measured in turns, slice after slice, for about `budget` each. Interleaving gives every
/// engine the same machine (it is shared and its load changes from second to second); the
/// best slice is the engine's cost, the others were interrupted by other work.
fn time_engines(engines: &mut [Box<dyn FnMut() -> u64 + '_>], packets: usize, budget: Duration) -> Vec<f64> {
    let rounds: Vec<u64> = engines.iter_mut().map(calibrate).collect();
    let mut best = vec![f64::INFINITY; engines.len()];
    let start = Instant::now();
    while start.elapsed() < budget * engines.len() as u32 {
        for (i, e) in engines.iter_mut().enumerate() {
            let t = Instant::now();
            for _ in 0..rounds[i] {
                black_box(e());
            }
            best[i] = best[i].min(t.elapsed().as_nanos() as f64 / (rounds[i] as f64 * packets as f64));
        }
    }
    best
}

/// Rounds that take about [`SLICE`] (running them warms caches and predictors).
fn calibrate(e: &mut Box<dyn FnMut() -> u64 + '_>) -> u64 {
    let mut rounds = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..rounds {
            black_box(e());
        }
        if t.elapsed() >= SLICE {
            return rounds;
        }
        rounds *= 2;
    }
}

fn short(expr: &str) -> String {
    let one_line: String = expr.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 44 {
        format!("{}… ({} chars)", one_line.chars().take(30).collect::<String>(), one_line.len())
    } else {
        one_line
    }
}
