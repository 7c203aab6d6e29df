//! sluice benchmarks: `sluice-bench <suite> [options]`, one subcommand per suite, each
//! printing a plain table. Privileged suites build their own namespace topology.

mod bed;
mod dataplane;
mod filters;
mod pipeline;
mod objects;
mod r#gen;
mod firewall;
mod report;
mod verify;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sluice-bench", about = "sluice benchmarks")]
struct Cli {
    #[command(subcommand)]
    suite: Suite,
}

#[derive(Subcommand)]
enum Suite {
    /// End-to-end packet rates on veth: live-frames sender, bare AF_XDP rxdrop loop, sluice
    /// drop and forward.
    Dataplane(dataplane::Opts),
    /// ns/packet of BPF filters: sluice JIT, sluice interpreter and libpcap's bpf_filter.
    Filters(filters::Opts),
    /// Pipeline ns/packet for 1 vs 10 stages, and swap latency of a 100-stage pipeline under load.
    Pipeline(pipeline::Opts),
    /// ns/packet of the example C filters (programs/filters) in sluice's interpreter and JIT.
    Objects(objects::Opts),
    /// Load generator: each transmit engine vs minimal loops, offline filter vs tcpdump.
    Gen(r#gen::Opts),
    /// Verifier time per program and for a generated 4,000-instruction one; JIT ns/packet without and with its proofs.
    Verify(verify::Opts),
    /// Firewall: engine ns/packet vs set size and rule count; kernel-stage, userspace and
    /// nftables drop rates on veth.
    Firewall(firewall::Opts),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().suite {
        Suite::Dataplane(opts) => dataplane::run(&opts),
        Suite::Filters(opts) => filters::run(&opts),
        Suite::Pipeline(opts) => pipeline::run(&opts),
        Suite::Objects(opts) => objects::run(&opts),
        Suite::Gen(opts) => r#gen::run(&opts),
        Suite::Verify(opts) => verify::run(&opts),
        Suite::Firewall(opts) => firewall::run(&opts),
    }
}
