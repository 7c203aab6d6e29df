//! `dataplane`: end-to-end packet rates on a veth topology (client —veth— dut —veth— server).
//!
//! The client floods the dut's port a with the kernel live-frames sender, pinned to the last
//! core; whatever receives on the dut runs on the others. Rates are counted on the receiving
//! side over a measurement window that starts after a warm-up, so start-up transients and
//! the sender's own figure do not leak into the result.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice::loadgen::{LiveSender, SinkAction, UdpFrame, XdpSink};
use sluice::testbed::netns::{Netns, Topology, TopologyOpts};

use crate::report::{Table, mpps, tsc_ghz};

#[derive(clap::Args)]
pub struct Opts {
    /// Length of each measurement window.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

const WARMUP: Duration = Duration::from_millis(500);

pub fn run(opts: &Opts) -> Result<()> {
    if !sluice::testbed::netns::privileged("bench dataplane") {
        bail!("the dataplane bench needs root (namespaces, XDP, AF_XDP)");
    }
    let window = Duration::from_secs(opts.seconds.max(1));
    let topo = Topology::new(TopologyOpts {
        tag: "bench".into(),
        ..Default::default()
    })
    .context("build topology")?;
    let frame = bench_frame(&topo)?;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let sender_core = cores.last().copied();

    let mut table = Table::new(&["measurement", "Mpps", "note"]);

    // The sender alone, into a port whose XDP program drops everything: the ceiling.
    let sender = {
        let _sink = topo
            .dut
            .run_in(|| XdpSink::attach(&topo.dut_a.name, SinkAction::Drop))?
            .context("attach drop sink to dut port a")?;
        let counter = || link_rx_packets(&topo.dut, &topo.dut_a.name);
        measure(&topo.client, &topo.client_if.name, &frame, sender_core, window, counter)?
    };
    table.row(vec![
        "live-frames sender -> XDP_DROP".into(),
        format!("{:.2}", sender),
        "dut port a rx".into(),
    ]);

    println!("{}", table.render());
    if let Some(ghz) = tsc_ghz() {
        println!("TSC {ghz:.3} GHz; window {} s per measurement", window.as_secs());
    }
    Ok(())
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

/// Floods `frame` out of `ifname` in `ns` and returns the rate of `counter` (in Mpps) over
/// `window`, measured after a warm-up.
fn measure(
    ns: &Netns,
    ifname: &str,
    frame: &[u8],
    core: Option<core_affinity::CoreId>,
    window: Duration,
    counter: impl Fn() -> Result<u64>,
) -> Result<f64> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let flood = scope.spawn(|| {
            ns.run_in(|| {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                LiveSender::new(ifname, frame)?.flood(&stop)
            })
        });
        let result = (|| {
            std::thread::sleep(WARMUP);
            let (c0, t0) = (counter()?, Instant::now());
            std::thread::sleep(window);
            let (c1, t1) = (counter()?, Instant::now());
            Ok(mpps(c1.saturating_sub(c0), (t1 - t0).as_secs_f64()))
        })();
        stop.store(true, Ordering::Relaxed);
        match flood.join() {
            Ok(sent) => {
                sent.context("enter sender namespace")?
                    .context("live-frames sender")?;
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
        result
    })
}

/// The kernel's rx packet counter of an interface.
fn link_rx_packets(ns: &Netns, ifname: &str) -> Result<u64> {
    let out = ns.ip(&["-j", "-s", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parse ip -j -s link")?;
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .with_context(|| format!("no rx packet counter for {ifname}"))
}
