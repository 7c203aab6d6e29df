//! Arbitrary bytes as a classic BPF program (8 bytes per `sock_filter`) and a packet: the
//! kernel-rule validation must never panic, and every accepted program must give the same
//! verdict in the interpreter and the JIT after translation to eBPF.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sluice::bpf::classic::{self, ClassicInsn};

fuzz_target!(|data: &[u8]| {
    let [n, rest @ ..] = data else { return };
    let count = (*n as usize).min(rest.len() / 8);
    let (code, packet) = rest.split_at(count * 8);
    let insns: Vec<ClassicInsn> = code
        .chunks_exact(8)
        .map(|c| ClassicInsn {
            code: u16::from_le_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let Ok(program) = classic::compile(&insns) else { return };
    common::interpreter_and_jit_agree(&program, packet);
    common::specializing_keeps_the_result(&program, packet);
});
