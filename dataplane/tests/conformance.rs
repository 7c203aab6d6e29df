//! The bpf_conformance corpus on every back end: each must pass all vectors.

mod support;

use sluice::bpf::interp::Interpreter;

#[test]
fn interpreter_passes_the_conformance_suite() {
    support::run_suite("interpreter", |p| Box::new(Interpreter::new(p)));
}

#[test]
fn jit_passes_the_conformance_suite() {
    support::run_suite("jit", |p| Box::new(sluice::bpf::jit::JitProgram::compile(p).expect("jit compile")));
}
