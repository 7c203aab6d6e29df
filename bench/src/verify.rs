//! `sluice-bench verify`: how long the static verifier takes, and what its proofs are worth.
//!
//! First the example C filters (`programs/filters`, built with clang-19): verification time
//! per program, with its maps. Then, for each packet-parsing program of the verifier corpus (`dataplane/tests/verifier`, the
//! accepted ones without helpers or maps) and for a generated program of about 4,000
//! instructions (the target: verified in under 50 ms), it reports the verification
//! time, the instructions explored and the states saved, and then the JIT's ns/packet for the
//! same program compiled plain (every unproven access checked at run time) and with the
//! verifier's proofs (`compile_verified`), measured in the same run. Results are checked equal
//! on every packet before timing.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice::bpf::jit::JitProgram;
use sluice::bpf::object::Object;
use sluice::bpf::verifier::{self, VerifyEnv};
use sluice::bpf::{Exec, Helpers, Program, asm};

use crate::report::Table;

#[derive(clap::Args)]
pub struct Opts {
    /// Measuring time per timed cell, in milliseconds.
    #[arg(long, default_value_t = 300)]
    ms: u64,
    /// Instructions in the generated program.
    #[arg(long, default_value_t = 4000)]
    generated: usize,
}

/// A long packet parser: blocks that check the packet, load a field, branch on it and
/// accumulate a verdict, with a bounded loop every 40 blocks. `n` instructions at least.
pub fn generate(n: usize) -> String {
    let mut t = String::from("r2 = *(u32 *)(r1 + 0)\nr3 = *(u32 *)(r1 + 4)\nr0 = 0\n");
    let mut count = 3;
    let mut i = 0;
    while count + 4 < n {
        let k = 14 + (i * 2) % 1400;
        let _ = write!(
            t,
            "r4 = r2\nr4 += {}\nif r4 > r3 goto pass\nr5 = *(u16 *)(r2 + {k})\nif r5 != {} goto +3\n\
             r6 = r5\nr6 &= 7\nr0 += r6\nif r5 > 0x8000 goto +2\nr7 = 1\ngoto +1\nr7 = 2\nr0 += r7\n",
            k + 2,
            i % 251,
        );
        count += 13;
        if i % 40 == 39 {
            let _ = write!(t, "r8 = 0\nloop{i}:\nr8 += 1\nr0 += r8\nif r8 < 8 goto loop{i}\n");
            count += 4;
        }
        i += 1;
    }
    t.push_str("r0 &= 3\nexit\npass:\nr0 = 2\nexit\n");
    t
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dataplane/tests/verifier")
}

/// The corpus programs worth timing: accepted, packet-reading, no helpers or maps.
fn corpus_programs() -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let dir = corpus_dir();
    for e in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
        let path = e?.path();
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if !name.starts_with("acc_pkt") && !name.starts_with("acc_loop_packet") && !name.starts_with("acc_signed") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        if text.contains("call ") || text.contains("map") {
            continue;
        }
        out.push((name, text));
    }
    out.sort();
    Ok(out)
}

/// Mean time of `f` over at least `budget` (and at least 5 calls).
fn time(budget: Duration, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    let mut n = 0u32;
    while n < 5 || start.elapsed() < budget {
        f();
        n += 1;
    }
    start.elapsed() / n
}

fn packets() -> Vec<Vec<u8>> {
    // Ethernet + IPv4 + TCP headers with varied bytes, at several lengths.
    [64usize, 128, 512, 1514]
        .iter()
        .map(|&len| (0..len).map(|i| if i == 14 { 0x45 } else { (i * 13 % 251) as u8 }).collect())
        .collect()
}

fn ns_per_packet(jit: &JitProgram, pkts: &mut [Vec<u8>], budget: Duration) -> f64 {
    let per_call = time(budget, || {
        for p in pkts.iter_mut() {
            black_box(jit.run_xdp(black_box(p), 1, 0).ok());
        }
    });
    per_call.as_nanos() as f64 / pkts.len() as f64
}

fn examples(budget: Duration) -> Result<()> {
    let mut table = Table::new(&["example", "program", "insns", "verify ms", "explored", "states", "proven"]);
    for name in crate::objects::EXAMPLES {
        let obj = Object::load(&crate::objects::build_example(name)?, 1).with_context(|| format!("load {name}"))?;
        let env = VerifyEnv::for_table(obj.maps());
        for p in obj.programs() {
            let v = verifier::verify(&p.program, &env).with_context(|| format!("verify {name}/{}", p.name))?;
            let t = time(budget, || {
                black_box(verifier::verify(&p.program, &env).is_ok());
            });
            table.row(vec![
                name.to_string(),
                p.name.clone(),
                p.program.insns().len().to_string(),
                format!("{:.3}", t.as_secs_f64() * 1e3),
                v.processed().to_string(),
                v.states().to_string(),
                v.proven_count().to_string(),
            ]);
        }
    }
    println!("verifier: example C filters (clang-19 -O2 -target bpf)");
    print!("{}", table.render());
    Ok(())
}

pub fn run(opts: &Opts) -> Result<()> {
    let budget = Duration::from_millis(opts.ms);
    examples(budget)?;
    println!();
    let mut programs = corpus_programs()?;
    programs.push((format!("generated ({} insns)", opts.generated), generate(opts.generated)));

    let mut table = Table::new(&[
        "program", "insns", "verify ms", "explored", "states", "proven", "jit ns", "verified ns", "jit/verified",
    ]);
    for (name, text) in &programs {
        let insns = asm::assemble(text).with_context(|| format!("assemble {name}"))?;
        let count = insns.len();
        let (prog, verified) = verifier::load(insns.clone(), &Helpers::none(), &VerifyEnv::default())
            .with_context(|| format!("verify {name}"))?;
        let t = time(budget, || {
            black_box(verifier::load(insns.clone(), &Helpers::none(), &VerifyEnv::default()).is_ok());
        });
        let (plain, proven) = compile_both(name, &prog, &verified)?;
        let mut pkts = packets();
        let plain_ns = ns_per_packet(&plain, &mut pkts, budget);
        let proven_ns = ns_per_packet(&proven, &mut pkts, budget);
        table.row(vec![
            name.clone(),
            count.to_string(),
            format!("{:.3}", t.as_secs_f64() * 1e3),
            verified.processed().to_string(),
            verified.states().to_string(),
            verified.proven_count().to_string(),
            format!("{plain_ns:.2}"),
            format!("{proven_ns:.2}"),
            format!("{:.2}", plain_ns / proven_ns),
        ]);
    }
    println!("verifier: time to verify (validation included), and JIT ns/packet without and with its proofs");
    print!("{}", table.render());
    Ok(())
}

/// Both JIT builds of `prog`, checked to agree on every benchmark packet.
fn compile_both(name: &str, prog: &Program, verified: &verifier::Verified) -> Result<(JitProgram, JitProgram)> {
    let plain = JitProgram::compile(prog).with_context(|| format!("jit {name}"))?;
    let proven = JitProgram::compile_verified(prog, verified).with_context(|| format!("jit (verified) {name}"))?;
    for p in packets() {
        let (mut a, mut b) = (p.clone(), p.clone());
        let (ra, rb) = (plain.run_xdp(&mut a, 1, 0), proven.run_xdp(&mut b, 1, 0));
        if ra != rb || a != b || ra.is_err() {
            bail!("{name}: the verified JIT disagrees or faults on a {}-byte packet: {ra:?} vs {rb:?}", p.len());
        }
    }
    Ok((plain, proven))
}
