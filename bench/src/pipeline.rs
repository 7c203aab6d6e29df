//! `sluice-bench pipeline`: what a pipeline costs per packet as it grows, and how long a swap
//! takes to reach every worker.
//!
//! (a) ns/packet of a 1-stage and a 10-stage pipeline (every stage a `count`, so each packet
//! runs all of them), on the 64-byte UDP/53 frame and on a corpus mix, in the same run; the
//! ratio 10/1 is the figure of merit (target ≤ 3). Three engines, measured interleaved in
//! short rounds (best round wins, so other load on the machine does not pick the winner):
//! - `fused`: the pipeline's single-packet entry, one native call per packet;
//! - `fused batch`: what workers run, the batch entry, one call per 64 packets;
//! - `batch, no dispatch`: the batch entry fused without the dispatch on header fields
//!   (`bpf::specialize`), every stage tested in full;
//! - `unfused`: the baseline, one JIT program call per stage with the actions in Rust.
//!
//! Then what the dispatch costs at compile time: fusion of 10 and 100 stages by budget.
//!
//! (b) Swap latency of a 100-stage pipeline while worker threads run batches of 64 packets
//! flat out, recorded in hdrhistogram (target p99 < 1 ms): from the swap request (code from
//! the port's cache, as for a rollback) to the moment the last worker took the new pipeline
//! (each worker notes when it moved, at its batch boundary); beside it, until the controller
//! saw the old one released (the grace period, which adds the controller's own wake-up), and
//! a few requests for never-seen pipelines, whose cold compile of 100 stages (front ends and
//! fusion, on the controller while the old pipeline keeps running) is inside the window.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use std::sync::atomic::AtomicU64 as Word;

use sluice::bpf::Exec;
use sluice::bpf::jit::fuse::{self, Entries, FusedPipeline};
use sluice::bpf::jit::{JitProgram, PacketRef};
use sluice::bpf::source::Format;
use sluice::pipeline::compile::{CodeCache, PipelineCode};
use sluice::pipeline::{ActionSpec, Decision, DefaultAction, FilterSpec, Outcome, Pipeline, PipelineSpec, PortEnv, Published, StageSpec, WorkerView};
use sluice::testbed::corpus;

use crate::report::Table;

#[derive(clap::Args)]
pub struct Opts {
    /// Measuring time per (pipeline, packet set) cell, in milliseconds.
    #[arg(long, default_value_t = 500)]
    ms: u64,
    /// Swaps measured in (b).
    #[arg(long, default_value_t = 2000)]
    swaps: usize,
    /// Worker threads running packets during (b).
    #[arg(long, default_value_t = 1)]
    workers: usize,
}


fn spec(stages: usize) -> PipelineSpec {
    let stages = (0..stages)
        .map(|i| StageSpec {
            id: format!("s{i}"),
            filter: FilterSpec::Text { text: corpus::FILTERS[i % corpus::FILTERS.len()].into(), format: Format::Tcpdump },
            action: ActionSpec::Count,
        })
        .collect();
    PipelineSpec { stages, default: DefaultAction::Drop }
}

/// One way to run a pipeline over a set of packets, counting every matching stage.
enum Engine {
    Fused(Box<FusedPipeline>, Vec<Word>),
    Batch(Box<FusedPipeline>, Vec<Word>),
    Unfused(Vec<JitProgram>, Vec<u64>),
}

impl Engine {
    fn pass(&mut self, packets: &mut [Vec<u8>]) {
        match self {
            Engine::Fused(f, counters) => {
                for pkt in packets.iter_mut() {
                    black_box(f.run(black_box(pkt), 0, 0, counters));
                }
            }
            Engine::Batch(f, counters) => {
                let mut exits = [0u64; 64];
                let mut refs: Vec<PacketRef<'_>> = packets.iter_mut().map(|p| PacketRef::new(p)).collect();
                for chunk in refs.chunks_mut(64) {
                    f.run_batch(chunk, 0, 0, counters, &mut exits);
                    black_box(&exits);
                }
            }
            Engine::Unfused(stages, counts) => {
                // The pre-fusion path: a call per stage, the action decided in Rust.
                for pkt in packets.iter_mut() {
                    for (jit, count) in stages.iter().zip(counts.iter_mut()) {
                        if let Ok(r0) = jit.run_xdp(black_box(pkt), 0, 0)
                            && r0 != 0
                        {
                            *count += 1;
                        }
                    }
                }
            }
        }
    }
}

/// ns/packet of each engine: rounds of about 2 ms each, engines interleaved, best round wins.
fn ns_per_packet(engines: &mut [Engine], packets: &mut [Vec<u8>], budget: Duration) -> Vec<f64> {
    let mut best = vec![f64::INFINITY; engines.len()];
    // Passes per round: about 2 ms on the first engine.
    let t = Instant::now();
    engines[0].pass(packets);
    let once = t.elapsed().as_nanos().max(1) as f64;
    let passes = ((2e6 / once) as usize).max(1);
    let start = Instant::now();
    while start.elapsed() < budget {
        for (e, b) in engines.iter_mut().zip(best.iter_mut()) {
            let t = Instant::now();
            for _ in 0..passes {
                e.pass(packets);
            }
            *b = b.min(t.elapsed().as_nanos() as f64 / (passes * packets.len()) as f64);
        }
    }
    best
}

fn engines(p: &Pipeline) -> Result<Vec<Engine>> {
    let stages = p.fuse_stages();
    let fuse = |entries, dispatch| {
        FusedPipeline::compile(&fuse::Plan { dispatch, ..PipelineCode::plan(&stages, p.default_decision(), entries) })
    };
    let single = fuse(Entries::Single, fuse::DISPATCH_BUDGET).context("fuse with a single-packet entry")?;
    let batch = fuse(Entries::Batch, fuse::DISPATCH_BUDGET).context("fuse with a batch entry")?;
    let plain = fuse(Entries::Batch, 0).context("fuse without dispatch")?;
    let words = |f: &FusedPipeline| (0..f.counter_words()).map(|_| Word::new(0)).collect();
    let (single_counters, counters, plain_counters) = (words(&single), words(&batch), words(&plain));
    let jits = p.stages().iter().map(|s| JitProgram::compile(&s.source.program)).collect::<Result<Vec<_>, _>>().context("jit a stage")?;
    let counts = vec![0; jits.len()];
    Ok(vec![
        Engine::Fused(Box::new(single), single_counters),
        Engine::Batch(Box::new(batch), counters),
        Engine::Batch(Box::new(plain), plain_counters),
        Engine::Unfused(jits, counts),
    ])
}

/// Swaps measured with the compile inside the window.
const COLD_SWAPS: usize = 20;

pub fn run(opts: &Opts) -> Result<()> {
    let env = PortEnv { port: "a", peer: None, workers: opts.workers.max(1) };
    let budget = Duration::from_millis(opts.ms);

    // (a) cost per packet by length.
    let one = Pipeline::compile(&spec(1), &env).context("compile 1 stage")?;
    let ten = Pipeline::compile(&spec(10), &env).context("compile 10 stages")?;
    // The anchor frame repeated to a batch, so the batch engine sees full batches.
    let mut anchor = vec![corpus::udp_64(53); 64];
    let mut mix: Vec<Vec<u8>> = corpus::corpus().into_iter().step_by(3).take(256).collect();
    let mut table = Table::new(&["packets", "engine", "1 stage ns", "10 stages ns", "10/1"]);
    let names = ["fused", "fused batch", "batch, no dispatch", "unfused"];
    for (name, set) in [("udp/53 64B", &mut anchor), ("corpus mix", &mut mix)] {
        let mut all = engines(&one)?;
        all.extend(engines(&ten)?);
        let ns = ns_per_packet(&mut all, set, budget);
        for (e, engine) in names.iter().enumerate() {
            let (a, b) = (ns[e], ns[e + names.len()]);
            table.row(vec![name.into(), (*engine).into(), format!("{a:.1}"), format!("{b:.1}"), format!("{:.2}", b / a)]);
        }
    }
    println!("pipeline cost per packet (fused code: 1 stage {} B, 10 stages {} B)", one.code_size(), ten.code_size());
    print!("{}", table.render());

    // What the dispatch costs at compile time: fusion alone (front ends done), best of 3.
    let mut table = Table::new(&["stages", "dispatch budget", "fuse ms", "code B"]);
    for n in [10, 100] {
        let p = Pipeline::compile(&spec(n), &env).with_context(|| format!("compile {n} stages"))?;
        let stages = p.fuse_stages();
        for dispatch in [0, 2, 4, 8] {
            let plan = fuse::Plan { dispatch, ..PipelineCode::plan(&stages, p.default_decision(), Entries::Batch) };
            let mut best = Duration::MAX;
            let mut size = 0;
            for _ in 0..3 {
                let t = Instant::now();
                let f = FusedPipeline::compile(&plan).context("fuse")?;
                best = best.min(t.elapsed());
                size = f.code_size();
            }
            table.row(vec![n.to_string(), dispatch.to_string(), format!("{:.2}", best.as_secs_f64() * 1e3), size.to_string()]);
        }
    }
    print!("{}", table.render());

    // (b) swap latency, 100 stages, under load.
    let mut cache = CodeCache::new(4);
    let specs = [spec(100), {
        let mut s = spec(100);
        s.default = DefaultAction::Reflect;
        s
    }];
    let t0 = Instant::now();
    let first = Pipeline::compile_cached(&specs[0], &env, &mut cache).context("compile 100 stages")?;
    Pipeline::compile_cached(&specs[1], &env, &mut cache).context("compile 100 stages")?;
    let compile_100 = t0.elapsed() / 2;
    // Of which the front ends and validation (the rest is fusion and Cranelift).
    let t0 = Instant::now();
    Pipeline::check(&specs[0], &env).context("check 100 stages")?;
    let front_100 = t0.elapsed();
    let published = Arc::new(Published::new(vec![Arc::new(first)]));
    let stop = Arc::new(AtomicBool::new(false));
    let packets = Arc::new(AtomicU64::new(0));
    let nworkers = opts.workers.max(1);
    // Per worker: the generation it last moved to, and when (ns since `epoch`), written only
    // after a swap (not per packet or batch).
    let acks: Arc<Vec<(AtomicU64, AtomicU64)>> = Arc::new((0..nworkers).map(|_| (AtomicU64::new(0), AtomicU64::new(0))).collect());
    let epoch = Instant::now();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let workers: Vec<_> = (0..nworkers)
        .map(|w| {
            let (published, stop, packets, acks) = (Arc::clone(&published), Arc::clone(&stop), Arc::clone(&packets), Arc::clone(&acks));
            let core = cores.get((w + 1) % cores.len().max(1)).copied();
            std::thread::spawn(move || {
                if let Some(c) = core {
                    core_affinity::set_for_current(c);
                }
                let mut view = WorkerView::new(published, vec![0], vec![w]);
                let mut frames: Vec<Vec<u8>> = corpus::corpus().into_iter().step_by(3).take(64).collect();
                let mut batch: Vec<PacketRef<'_>> = frames.iter_mut().map(|f| PacketRef::new(f)).collect();
                let mut outs = [Outcome { decision: Decision::Drop, sample: None, window: None }; 64];
                let mut n = 0u64;
                let mut seen = u64::MAX;
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    view.refresh();
                    if view.generation() != seen {
                        seen = view.generation();
                        acks[w].1.store(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        acks[w].0.store(seen, Ordering::Release);
                    }
                    let (p, slot) = view.get(0);
                    p.run_batch(slot, &mut batch, 0, 0, &mut outs);
                    black_box(&outs);
                    n += batch.len() as u64;
                }
                view.park();
                // Packets per second of this worker's whole run, in packets per ms.
                packets.fetch_add(n / started.elapsed().as_millis().max(1) as u64, Ordering::Relaxed);
            })
        })
        .collect();
    // The controller on the first core, the workers from the second on.
    if let Some(&c) = cores.first() {
        core_affinity::set_for_current(c);
    }
    std::thread::sleep(Duration::from_millis(50));
    // When every worker has moved to generation `g`: the latest of their move times.
    let all_moved = |g: u64| -> Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if acks.iter().all(|(moved_to, _)| moved_to.load(Ordering::Acquire) >= g) {
                return Ok(acks.iter().map(|(_, ns)| ns.load(Ordering::Relaxed)).max().unwrap_or(0));
            }
            if Instant::now() > deadline {
                anyhow::bail!("a worker did not move to generation {g} within 5 s");
            }
            std::thread::yield_now();
        }
    };
    // The batch-time shape (1 ns to 10 s, 3 digits) fits swap latencies too.
    let mut moved = sluice::stats::batch_histogram();
    let mut grace = sluice::stats::batch_histogram();
    for i in 0..opts.swaps {
        let t = epoch.elapsed().as_nanos() as u64;
        let next = Pipeline::compile_cached(&specs[(i + 1) % 2], &env, &mut cache)?;
        let old = published.publish(0, Arc::new(next));
        let g = published.generation();
        moved.saturating_record(all_moved(g)?.saturating_sub(t));
        let retired = sluice::pipeline::swap::wait_retired(old, Duration::from_secs(5));
        grace.saturating_record((epoch.elapsed().as_nanos() as u64).saturating_sub(t));
        if matches!(retired, sluice::pipeline::Retired::Lingering(_)) {
            anyhow::bail!("swap {i}: a worker held the old pipeline for 5 s");
        }
    }
    // A few swaps to pipelines never seen before: the cold compile inside the window.
    let mut cold = sluice::stats::batch_histogram();
    for i in 0..COLD_SWAPS {
        let t = epoch.elapsed().as_nanos() as u64;
        let next = Pipeline::compile(&specs[(i + 1) % 2], &env)?;
        published.publish(0, Arc::new(next));
        cold.saturating_record(all_moved(published.generation())?.saturating_sub(t));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().map_err(|_| anyhow::anyhow!("worker panicked"))?;
    }
    let pps = packets.load(Ordering::Relaxed) as f64 * 1e3;
    println!(
        "\nswap latency, 100 stages ({compile_100:.1?} to compile once, {front_100:.1?} of it front ends), {nworkers} worker(s) at {:.2} Mpps, {} swaps",
        pps / 1e6,
        opts.swaps
    );
    let mut t = Table::new(&["measure", "p50 us", "p99 us", "max us"]);
    let rows = [
        ("request -> every worker on new (cached code)", &moved),
        ("request -> old released (grace seen by controller)", &grace),
        ("request incl. cold compile -> every worker on new", &cold),
    ];
    for (name, h) in rows {
        let us = |q: f64| format!("{:.1}", h.value_at_quantile(q) as f64 / 1e3);
        t.row(vec![name.into(), us(0.5), us(0.99), format!("{:.1}", h.max() as f64 / 1e3)]);
    }
    print!("{}", t.render());
    Ok(())
}
