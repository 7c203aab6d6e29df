//! Arbitrary bytes as an eBPF program and a packet: validation must never panic, and every
//! program it accepts must give the same result (r0 or fault) and the same packet bytes in the
//! interpreter and the JIT.
//!
//! Input layout: byte 0 = instruction count, then 8 bytes per instruction, then the packet.
//! Programs are validated as filters (`ProgKind::Xdp`: no back-edges), so every run terminates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::bpf::interp::Interpreter;
use sluice::bpf::jit::JitProgram;
use sluice::bpf::{Exec, Helpers, ProgKind, check, insn};

fuzz_target!(|data: &[u8]| {
    let [n, rest @ ..] = data else { return };
    let code_len = (*n as usize * insn::Insn::SIZE).min(rest.len() / insn::Insn::SIZE * insn::Insn::SIZE);
    let (code, packet) = rest.split_at(code_len);
    let Ok(insns) = insn::decode(code) else { return };
    let Ok(program) = check::validate(insns, ProgKind::Xdp, &Helpers::none()) else { return };
    let jit = JitProgram::compile(&program).expect("a validated program must compile");
    let interp = Interpreter::new(&program);
    let mut by_interp = packet.to_vec();
    let mut by_jit = packet.to_vec();
    let a = interp.run_xdp(&mut by_interp, 1, 0);
    let b = jit.run_xdp(&mut by_jit, 1, 0);
    assert_eq!(a, b, "interpreter and JIT disagree");
    assert_eq!(by_interp, by_jit, "interpreter and JIT wrote different packet bytes");
});
