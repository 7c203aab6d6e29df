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
use sluice::bpf::jit::JitProgram;
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
    let anchor = vec![corpus::udp_64(53)];
    let mix: Vec<Vec<u8>> = corpus::corpus().into_iter().step_by(3).take(opts.mix).collect();

    let mut table = Table::new(&["filter", "classic", "packets", "jit ns", "interp ns", "libpcap ns", "libpcap/jit", "libpcap/interp"]);
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
            for (i, p) in packets.iter().enumerate() {
                let want = pcap.matches(p);
                for (name, got) in [("jit", by_jit(&mut bufs[i])), ("interpreter", by_interp(&mut bufs[i]))] {
                    if got != want {
                        bail!("`{expr}`: the {name} disagrees with libpcap on packet {i} of {set}");
                    }
                }
            }
            let ns = time_engines(&by_jit, &by_interp, &by_libpcap, &mut bufs, budget);
            table.row(vec![
                short(expr),
                pcap.insns().len().to_string(),
                set.to_string(),
                format!("{:.2}", ns[0]),
                format!("{:.2}", ns[1]),
                format!("{:.2}", ns[2]),
                format!("{:.1}", ns[2] / ns[0]),
                format!("{:.1}", ns[2] / ns[1]),
            ]);
        }
    }
    println!("BPF filters: ns per packet (lower is better), same packets and program for every engine");
    print!("{}", table.render());
    Ok(())
}

/// Each batch lasts about this long: short enough that many run without being interrupted.
const BATCH: Duration = Duration::from_millis(1);

/// ns per packet of the three engines, measured in turns, batch after batch, for about
/// `budget` each. Interleaving gives every engine the same machine (the machine is shared and
/// its load changes from second to second); the best batch is the engine's cost, the others
/// were interrupted by other work.
fn time_engines(
    jit: &impl Fn(&mut [u8]) -> bool,
    interp: &impl Fn(&mut [u8]) -> bool,
    libpcap: &impl Fn(&mut [u8]) -> bool,
    packets: &mut [Vec<u8>],
    budget: Duration,
) -> [f64; 3] {
    let rounds = [calibrate(jit, packets), calibrate(interp, packets), calibrate(libpcap, packets)];
    let mut best = [f64::INFINITY; 3];
    let start = Instant::now();
    while start.elapsed() < budget * 3 {
        best[0] = best[0].min(batch(jit, packets, rounds[0]));
        best[1] = best[1].min(batch(interp, packets, rounds[1]));
        best[2] = best[2].min(batch(libpcap, packets, rounds[2]));
    }
    best
}

/// Rounds over `packets` that take about [`BATCH`] (running them warms caches and predictors).
fn calibrate(f: &impl Fn(&mut [u8]) -> bool, packets: &mut [Vec<u8>]) -> u64 {
    let mut rounds = 1u64;
    loop {
        let t = Instant::now();
        run_rounds(f, packets, rounds);
        if t.elapsed() >= BATCH {
            return rounds;
        }
        rounds *= 2;
    }
}

/// ns per packet of one batch.
fn batch(f: &impl Fn(&mut [u8]) -> bool, packets: &mut [Vec<u8>], rounds: u64) -> f64 {
    let t = Instant::now();
    run_rounds(f, packets, rounds);
    t.elapsed().as_nanos() as f64 / (rounds as f64 * packets.len() as f64)
}

fn run_rounds(f: &impl Fn(&mut [u8]) -> bool, packets: &mut [Vec<u8>], rounds: u64) {
    let mut hits = 0u64;
    for _ in 0..rounds {
        for p in packets.iter_mut() {
            hits += f(black_box(p.as_mut_slice())) as u64;
        }
    }
    black_box(hits);
}

fn short(expr: &str) -> String {
    let one_line: String = expr.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 44 {
        format!("{}… ({} chars)", one_line.chars().take(30).collect::<String>(), one_line.len())
    } else {
        one_line
    }
}
