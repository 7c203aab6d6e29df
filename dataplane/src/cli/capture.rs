//! `sluice capture -i IFACE [-c N] -w out.pcap EXPR`: filtered capture through AF_XDP with the
//! expression run by the sluice JIT (see `sluice::capture` for what it does to the interface).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Result, anyhow};

use sluice::capture::Capture;
use sluice::pcapio::filter::Matcher;
use sluice::pcapio::{LINKTYPE_ETHERNET, Writer};

use super::r#gen::{Ticker, stop_flag};
use super::offline::compile_filter;

#[derive(clap::Args)]
pub struct CaptureArgs {
    /// Interface to capture on.
    #[arg(short, long)]
    interface: String,
    /// Queues to capture (0..N).
    #[arg(short = 'Q', long, default_value_t = 1)]
    queues: u32,
    /// Stop after writing this many packets.
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// Output pcap file.
    #[arg(short = 'w', long)]
    write: PathBuf,
    /// Bytes kept of each packet.
    #[arg(short = 's', long, default_value_t = sluice::pcapio::DEFAULT_SNAPLEN)]
    snaplen: u32,
    /// Filter: a tcpdump expression (several words are joined, as tcpdump does) or a filter
    /// file; none captures everything.
    expr: Vec<String>,
}

pub fn run(args: &CaptureArgs) -> Result<()> {
    let matcher = Matcher::new(&compile_filter(&args.expr)?)?;
    let mut out = Writer::create(&args.write, LINKTYPE_ETHERNET, args.snaplen)?;
    let stop = stop_flag()?;
    let mut capture = Capture::open(&args.interface, args.queues)?;
    eprintln!("capturing on {} (AF_XDP), writing {}", args.interface, args.write.display());
    let progress = AtomicU64::new(0);
    let stats = std::thread::scope(|s| {
        let worker = s.spawn(|| capture.run(&matcher, &mut out, args.count, &stop, &progress));
        let mut ticker = Ticker::new(args.count);
        while !worker.is_finished() {
            std::thread::sleep(Duration::from_millis(100));
            let n = progress.load(Relaxed);
            ticker.update(n, format!("{n} packets captured"));
        }
        ticker.finish();
        worker.join().map_err(|_| anyhow!("capture thread panicked"))
    })??;
    let written = out.finish()?;
    eprintln!("{written} packets captured\n{} packets received on the interface", stats.seen);
    Ok(())
}
