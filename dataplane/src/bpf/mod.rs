//! The BPF engine: instructions, front ends (classic BPF, tcpdump expressions, eBPF bytecode and
//! assembler text), validation, an interpreter and a Cranelift JIT.
//!
//! It owns nothing but programs and their execution: no AF_XDP, sockets or threads, so it is
//! tested, fuzzed and benchmarked alone and could become its own crate unchanged.
//!
//! Data flows one way: text or bytes → `Vec<Insn>` → [`check::validate`] → [`Program`] →
//! [`interp::Interpreter`] or [`jit::JitProgram`], both of which implement [`Exec`].

pub mod asm;
pub mod check;
pub mod classic;
pub mod ctx;
pub mod disasm;
pub mod helpers;
pub mod insn;
pub mod interp;
pub mod jit;
pub mod maps;
pub mod object;
pub mod source;
pub mod specialize;
pub mod tcpdump;
pub mod verifier;

pub use ctx::{Verdict, XdpContext};
pub use helpers::{Helper, HelperFn, Helpers};
pub use insn::Insn;

/// How a program is entered, which fixes what r1/r2 hold and which memory it may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgKind {
    /// The bpf_conformance contract: r1 = pointer to a memory buffer, r2 = its length; the
    /// buffer and the stack are the only memory. Loops are allowed (trusted test programs).
    Raw,
    /// A packet filter: r1 = `&XdpContext`; the packet and the stack are the only memory;
    /// no back-edges, so every run terminates. Classic BPF translates to this kind.
    Xdp,
}

/// A program that passed validation: every instruction known, registers and jump targets in
/// range, no fall-through off the end, `xdp_md` loads rewritten to `MODE_CTX`. Only
/// [`check::validate`] builds one, so back ends may rely on all of that.
#[derive(Debug, Clone)]
pub struct Program {
    pub(crate) insns: Vec<Insn>,
    pub(crate) kind: ProgKind,
    pub(crate) helpers: Helpers,
}

impl Program {
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }
    pub fn kind(&self) -> ProgKind {
        self.kind
    }
    pub fn helpers(&self) -> &Helpers {
        &self.helpers
    }
}

/// Why a run ended early. Every back end reports the same fault for the same program and input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("instruction {pc}: {size}-byte {access} at {addr:#x} is outside the packet/memory and the stack", access = if *.write { "store" } else { "load" })]
    OutOfBounds { pc: usize, addr: u64, size: u8, write: bool },
    #[error("instruction {pc}: call depth exceeds {max} frames", max = MAX_CALL_DEPTH)]
    CallDepth { pc: usize },
    #[error("instruction {pc}: callx to unknown helper id {id}")]
    UnknownHelper { pc: usize, id: u64 },
    /// The run used up its instruction budget ([`interp::STEP_LIMIT`] by default) at the
    /// back-edge or local call `pc`. Only the interpreter counts (see `interp`): the JIT runs
    /// programs whose loops a verifier bounded, loop-free filters, and trusted test programs.
    #[error("instruction {pc}: run exceeds its budget of {limit} instructions (an unbounded loop?)")]
    StepLimit { pc: usize, limit: u64 },
}

impl Fault {
    /// The verdict a faulting filter produces: the kernel's XDP_ABORTED.
    pub const VERDICT: u64 = Verdict::Aborted as u64;

    /// The same fault with the address cleared: each back end keeps its stack in its own place,
    /// so runs of the same program compare equal on everything else.
    pub fn without_address(self) -> Fault {
        match self {
            Fault::OutOfBounds { pc, size, write, .. } => Fault::OutOfBounds { pc, addr: 0, size, write },
            other => other,
        }
    }
}

/// Frames of bpf-to-bpf calls, as the kernel allows (`MAX_CALL_FRAMES`).
pub const MAX_CALL_DEPTH: usize = 8;

/// Runs a validated program. Implemented by the interpreter (the reference semantics) and the JIT.
pub trait Exec {
    /// Runs under the `Raw` contract (r1 = `mem` pointer, r2 = `mem.len()`).
    fn run_raw(&self, mem: &mut [u8]) -> Result<u64, Fault>;
    /// Runs under the `Xdp` contract: r1 = a context over `packet`.
    fn run_xdp(&self, packet: &mut [u8], ingress_ifindex: u32, rx_queue_index: u32) -> Result<u64, Fault>;
}
