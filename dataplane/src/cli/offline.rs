//! `sluice filter -r in.pcap -w out.pcap EXPR`: offline filtering like `tcpdump -r -w`, with
//! the sluice JIT on all cores and a progress bar.

use std::path::{Path, PathBuf};

use anyhow::Result;

use sluice::bpf::source::{self, Compiled, Format};
use sluice::pcapio::filter::{Matcher, filter_file};

use super::r#gen::Ticker;

#[derive(clap::Args)]
pub struct OfflineArgs {
    /// Capture to read (pcap or pcapng).
    #[arg(short = 'r', required = true)]
    read: Option<PathBuf>,
    /// pcap file to write the matching packets to.
    #[arg(short = 'w', required = true)]
    write: Option<PathBuf>,
    /// Summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Filter: a tcpdump expression (several words are joined, as tcpdump does) or a file with
    /// classic BPF, eBPF bytecode or assembler (an eBPF filter matches with XDP_PASS).
    expr: Vec<String>,
}

/// The filter the words name: a readable file is compiled by its detected format, anything
/// else is a tcpdump expression (the empty one matches everything).
pub fn compile_filter(words: &[String]) -> Result<Compiled> {
    let text = words.join(" ");
    let path = Path::new(&text);
    if words.len() == 1 && path.is_file() {
        let bytes = std::fs::read(path)?;
        return Ok(source::compile_file(&bytes)?);
    }
    Ok(source::compile_text(&text, Format::Tcpdump)?)
}

pub fn run(args: &OfflineArgs) -> Result<()> {
    let (Some(input), Some(output)) = (&args.read, &args.write) else {
        anyhow::bail!("filter needs -r IN and -w OUT (or the compile subcommand)");
    };
    let matcher = Matcher::new(&compile_filter(&args.expr)?)?;
    let mut ticker = Ticker::new(std::fs::metadata(input).ok().map(|m| m.len()));
    let stats = filter_file(input, output, &matcher, &mut |done, total| {
        ticker.update(done, format!("{} of {} MB", done >> 20, total >> 20));
    });
    ticker.finish();
    let stats = stats?;
    if args.json {
        println!("{}", serde_json::to_string(&stats)?);
    } else {
        eprintln!(
            "read {} packets, wrote {} in {:.3} s ({:.2} Mpps)",
            stats.read,
            stats.matched,
            stats.elapsed.as_secs_f64(),
            stats.packets_per_sec() / 1e6
        );
    }
    Ok(())
}
