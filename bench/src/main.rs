//! sluice benchmarks: `sluice-bench <suite> [options]`, one subcommand per suite, each
//! printing a plain table. Privileged suites build their own namespace topology.

mod dataplane;
mod filters;
mod firewall;
mod report;

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
    /// Firewall: engine ns/packet vs set size and rule count; kernel-stage, userspace and
    /// nftables drop rates on veth.
    Firewall(firewall::Opts),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().suite {
        Suite::Dataplane(opts) => dataplane::run(&opts),
        Suite::Filters(opts) => filters::run(&opts),
        Suite::Firewall(opts) => firewall::run(&opts),
    }
}
