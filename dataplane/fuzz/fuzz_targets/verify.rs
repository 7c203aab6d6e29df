//! Arbitrary bytes as an eBPF program and a packet, through the verifier: it must never
//! panic, and every program it accepts must run without a fault in the interpreter, the JIT
//! and the JIT with the verifier's proofs (no run-time checks on proven accesses), with the
//! same results. A fault in an accepted program is a verifier bug.
//!
//! Input layout: byte 0 = instruction count, then 8 bytes per instruction, then the packet.
//! Back-edges are allowed: the verifier must bound every loop it accepts.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sluice::bpf::interp::Interpreter;
use sluice::bpf::jit::JitProgram;
use sluice::bpf::verifier::{self, VerifyEnv};
use sluice::bpf::{Exec, Helpers, insn};

fuzz_target!(|data: &[u8]| {
    let [n, rest @ ..] = data else { return };
    let code_len = (*n as usize * insn::Insn::SIZE).min(rest.len() / insn::Insn::SIZE * insn::Insn::SIZE);
    let (code, packet) = rest.split_at(code_len);
    let Ok(insns) = insn::decode(code) else { return };
    // A smaller exploration budget keeps each input fast; the limit's logic is the same.
    let env = VerifyEnv { max_insns: 20_000, ..VerifyEnv::default() };
    let Ok((program, verified)) = verifier::load(insns, &Helpers::none(), &env) else { return };
    let proven = JitProgram::compile_verified(&program, &verified).expect("a verified program must compile");
    let interp = Interpreter::new(&program);
    for engine in [&interp as &dyn Exec, &proven] {
        let mut buf = packet.to_vec();
        if let Err(f) = engine.run_xdp(&mut buf, 1, 0) {
            panic!("verified program faults: {f}");
        }
    }
    common::interpreter_and_jit_agree(&program, packet);
});
