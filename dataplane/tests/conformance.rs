//! The bpf_conformance corpus on every back end (each must pass all vectors), and through the
//! disassembler and assembler.

mod support;

use sluice::bpf::interp::Interpreter;
use sluice::bpf::jit::{self, JitProgram};
use sluice::bpf::{ProgKind, asm, check, disasm, insn};

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

/// The aarch64 back end: every conformance program (and its batch entry, for XDP programs)
/// compiles to aarch64 code. Running that code needs an aarch64 machine; this proves the
/// lowering uses nothing x86-specific and Cranelift accepts every function for that target.
#[test]
fn every_conformance_program_compiles_for_aarch64() {
    let Some(vectors) = support::load_vectors() else { return };
    let (mut bytes, mut as_xdp) = (0, 0);
    let mut failures = Vec::new();
    for v in &vectors {
        // As the suite runs them (Raw), and, where the program is also a valid filter (no
        // loops), as an XDP program, which adds the batch entry.
        for kind in [ProgKind::Raw, ProgKind::Xdp] {
            let Ok(program) = check::validate(v.program.clone(), kind, &support::conformance_helpers()) else {
                assert_eq!(kind, ProgKind::Xdp, "{}: the suite's programs validate as Raw", v.name);
                continue;
            };
            as_xdp += (kind == ProgKind::Xdp) as usize;
            match jit::cross_compile(&program, "aarch64-unknown-linux-gnu") {
                Ok(size) => bytes += size,
                Err(e) => failures.push(format!("{} ({kind:?}): {e}", v.name)),
            }
        }
    }
    println!(
        "aarch64: {} conformance programs compiled ({as_xdp} also as XDP filters with a batch entry), {bytes} bytes of code",
        vectors.len()
    );
    assert!(failures.is_empty(), "{} programs fail to compile for aarch64:\n{}", failures.len(), failures.join("\n"));
}
