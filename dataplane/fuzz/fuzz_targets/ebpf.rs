//! Arbitrary bytes as an eBPF program and a packet: validation must never panic, and every
//! program it accepts must give the same result (r0 or fault) and the same packet bytes in the
//! interpreter and the JIT.
//!
//! Input layout: byte 0 = instruction count, then 8 bytes per instruction, then the packet.
//! Programs are validated as filters (`ProgKind::Xdp`: no back-edges), so every run terminates.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sluice::bpf::{Helpers, ProgKind, check, insn};

fuzz_target!(|data: &[u8]| {
    let [n, rest @ ..] = data else { return };
    let code_len = (*n as usize * insn::Insn::SIZE).min(rest.len() / insn::Insn::SIZE * insn::Insn::SIZE);
    let (code, packet) = rest.split_at(code_len);
    let Ok(insns) = insn::decode(code) else { return };
    let Ok(program) = check::validate(insns, ProgKind::Xdp, &Helpers::none()) else { return };
    common::interpreter_and_jit_agree(&program, packet);
    common::specializing_keeps_the_result(&program, packet);
});
