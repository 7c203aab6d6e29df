//! The bpf_conformance corpus on every back end: each must pass all vectors.

mod support;

use sluice::bpf::interp::Interpreter;

#[test]
fn interpreter_passes_the_conformance_suite() {
    support::run_suite("interpreter", |p| Box::new(Interpreter::new(p)));
}
