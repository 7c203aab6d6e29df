//! The bpf_conformance corpus on every back end (each must pass all vectors), and through the
//! disassembler and assembler.

mod support;

use sluice::bpf::interp::Interpreter;
use sluice::bpf::jit::JitProgram;
use sluice::bpf::{asm, disasm, insn};

#[test]
fn interpreter_passes_the_conformance_suite() {
    support::run_suite("interpreter", |p| Box::new(Interpreter::new(p)));
}

#[test]
fn jit_passes_the_conformance_suite() {
    support::run_suite("jit", |p| Box::new(JitProgram::compile(p).expect("jit compile")));
}

/// Disassembling and reassembling every conformance program gives back the same bytes.
#[test]
fn every_conformance_program_round_trips_through_the_assembler() {
    let Some(vectors) = support::load_vectors() else { return };
    let mut misses = Vec::new();
    for v in &vectors {
        let text = disasm::program(&v.program);
        match asm::assemble(&text) {
            Ok(back) if insn::encode(&back) == insn::encode(&v.program) => {}
            Ok(_) => misses.push(format!("{}: reassembled bytes differ\n{text}", v.name)),
            Err(e) => misses.push(format!("{}: {e}\n{text}", v.name)),
        }
    }
    assert!(misses.is_empty(), "{} programs do not round-trip:\n{}", misses.len(), misses.join("\n"));
}
