//! `sluice-bench objects`: nanoseconds per packet for the example C filters of
//! `programs/filters/` (built here with clang-19), in one run: the run-time-checked JIT
//! (`JitProgram::compile`), the verified JIT (`JitProgram::compile_verified`, no check left on
//! the accesses the verifier proved) and the interpreter, plus the time the static verifier
//! takes to accept each program and the stack bytes each build zeroes per run.
//!
//! Every engine gets its own copy of the object's maps and runs the same packets (a fixed mix
//! from the generated corpus); before timing, their verdicts are compared on every packet, so a
//! fast wrong answer cannot be reported.

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice::bpf::Exec;
use sluice::bpf::check::{StackReach, stack_reach};
use sluice::bpf::helpers::RunEnv;
use sluice::bpf::interp::Interpreter;
use sluice::bpf::jit::JitProgram;
use sluice::bpf::maps::ANY;
use sluice::bpf::object::Object;
use sluice::bpf::verifier::{VerifyEnv, verify};
use sluice::testbed::corpus;

use crate::report::Table;

#[derive(clap::Args)]
pub struct Opts {
    /// Measuring time per (filter, engine) cell, in milliseconds.
    #[arg(long, default_value_t = 300)]
    ms: u64,
    /// Frames taken from the corpus for the packet mix.
    #[arg(long, default_value_t = 256)]
    mix: usize,
}

/// The example filters of `programs/filters/`.
pub(crate) const EXAMPLES: &[&str] = &["port_blocklist", "src_counter", "syn_flood", "vlan_ipv6", "sampler", "ipv6_exthdr"];

/// `programs/filters/NAME.c` built with clang-19, as a user would (shared by the `verify` bench).
pub(crate) fn build_example(name: &str) -> Result<Vec<u8>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../programs/filters").join(format!("{name}.c"));
    let dir = std::env::temp_dir().join(format!("sluice-bench-objects-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let out = dir.join(format!("{name}.o"));
    let status = Command::new("clang-19")
        .args(["-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c"])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .context("run clang-19")?;
    let bytes = std::fs::read(&out);
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        bail!("clang-19 failed on {}", src.display());
    }
    Ok(bytes?)
}

/// Loads a fresh copy of the object with the example's maps filled as its tests do.
fn load(name: &str, bytes: &[u8]) -> Result<Object> {
    let obj = Object::load(bytes, 1).with_context(|| format!("load {name}"))?;
    if let Some(m) = obj.maps().by_name("blocked_ports") {
        for port in [53u16, 443] {
            m.set(&port.to_ne_bytes(), &0u64.to_le_bytes(), ANY)?;
        }
    }
    Ok(obj)
}

pub fn run(opts: &Opts) -> Result<()> {
    let budget = Duration::from_millis(opts.ms);
    let mix: Vec<Vec<u8>> = corpus::corpus().into_iter().step_by(3).take(opts.mix).collect();
    let mut table = Table::new(&[
        "filter",
        "program",
        "insns",
        "verify us",
        "zeroed B",
        "checked ns",
        "verified ns",
        "interp ns",
        "checked/verified",
        "interp/verified",
    ]);
    let env = RunEnv::new(0);
    for name in EXAMPLES {
        let bytes = build_example(name)?;
        let (a, b, c) = (load(name, &bytes)?, load(name, &bytes)?, load(name, &bytes)?);
        for ((pa, pb), pc) in a.programs().iter().zip(b.programs()).zip(c.programs()) {
            let what = format!("{name}/{}", pa.name);
            let started = Instant::now();
            let verified = verify(&pa.program, &VerifyEnv::for_table(a.maps()));
            let verify_us = started.elapsed().as_secs_f64() * 1e6;
            let verified = verified.with_context(|| format!("verify {what}"))?;
            let checked = JitProgram::compile(&pa.program).with_context(|| format!("jit {what}"))?;
            let proven = JitProgram::compile_verified(&pc.program, &verified).with_context(|| format!("jit (verified) {what}"))?;
            let interp = Interpreter::new(&pb.program);
            let engines: [&dyn Exec; 3] = [&checked, &proven, &interp];
            let mut bufs = mix.clone();
            for (i, p) in bufs.iter_mut().enumerate() {
                let mut copies = [p.clone(), p.clone()];
                let x = env.run(|| checked.run_xdp(p, 1, 0));
                let [q, r] = &mut copies;
                let (y, z) = env.run(|| (proven.run_xdp(q, 1, 0), interp.run_xdp(r, 1, 0)));
                if x != y || x != z {
                    bail!("{what}: engines disagree on packet {i}: checked {x:?}, verified {y:?}, interpreter {z:?}");
                }
            }
            let [checked_ns, verified_ns, interp_ns] = engines.map(|e| env.run(|| time(e, &mut bufs, budget)));
            table.row(vec![
                name.to_string(),
                pa.name.clone(),
                pa.program.insns().len().to_string(),
                format!("{verify_us:.1}"),
                zeroed(stack_reach(pa.program.insns())).to_string(),
                format!("{checked_ns:.2}"),
                format!("{verified_ns:.2}"),
                format!("{interp_ns:.2}"),
                format!("{:.2}", checked_ns / verified_ns),
                format!("{:.2}", interp_ns / verified_ns),
            ]);
        }
    }
    println!("example C filters over {} corpus frames, ns/packet (one run):", mix.len());
    print!("{}", table.render());
    Ok(())
}

/// Stack bytes zeroed before each run (both JIT builds zero what `check::stack_reach` says).
fn zeroed(reach: StackReach) -> i64 {
    match reach {
        StackReach::None => 0,
        StackReach::Frame { lo, hi } => hi - lo,
        StackReach::Whole => (sluice::bpf::MAX_CALL_DEPTH * sluice::bpf::insn::STACK_SIZE) as i64,
    }
}

/// Mean ns/packet of `exec` over `packets`, repeated for about `budget`.
fn time(exec: &dyn Exec, packets: &mut [Vec<u8>], budget: Duration) -> f64 {
    let started = Instant::now();
    let mut runs = 0u64;
    while started.elapsed() < budget {
        for p in packets.iter_mut() {
            black_box(exec.run_xdp(black_box(p), 1, 0).ok());
        }
        runs += packets.len() as u64;
    }
    started.elapsed().as_nanos() as f64 / runs.max(1) as f64
}
