//! Static facts about the control-flow graph, computed once before exploration: which
//! instructions are reachable at all, where states are saved for pruning, and which registers
//! may still be read from each instruction on (so dead registers never block pruning).

use super::protos::{self, Arg};
use crate::bpf::check::{AluOp, AtomicOp, Form, Operand, form};
use crate::bpf::insn::Insn;

pub struct Cfg {
    /// Instructions (first slots) reachable from the entry through jumps and calls.
    pub reachable: Vec<bool>,
    /// States are saved and compared at these instructions: jump targets, fall-through
    /// edges of conditional jumps, and call return sites.
    pub prune: Vec<bool>,
    /// Registers (bit r) that may be read before being written, from each instruction on,
    /// within its function (an `exit` reads r0; a call reads its argument registers).
    pub live_in: Vec<u16>,
    /// Registers whose exact value may still matter from each instruction on: it may flow
    /// (through arithmetic) into an address, a comparison, a helper or callee argument, a
    /// store, or a callee's return value. A scalar outside this set only needs to be a scalar
    /// for two states to be interchangeable (the kernel's "precise" marks, computed ahead).
    pub precise_in: Vec<u16>,
}

const ALL_ARGS: u16 = 0b11_1110;

/// Successors of `pc` within its function (calls fall through).
fn successors(insns: &[Insn], pc: usize, f: Form) -> [Option<usize>; 2] {
    let next = pc + if f == Form::Lddw { 2 } else { 1 };
    let target = |off: i64| usize::try_from(pc as i64 + 1 + off).ok();
    match f {
        Form::Exit => [None, None],
        Form::Ja | Form::Ja32 => [target(insns[pc].jump_offset()), None],
        Form::Jump { .. } => [target(insns[pc].jump_offset()), Some(next)],
        _ => [Some(next), None],
    }
}

/// (registers read, registers written) by one instruction.
fn uses_defs(insn: &Insn, f: Form) -> (u16, u16) {
    let bit = |r: u8| 1u16 << r;
    let (d, s) = (insn.dst, insn.src);
    match f {
        Form::Alu { op, src, .. } => {
            let mut u = if matches!(op, AluOp::Mov | AluOp::MovSx(_)) { 0 } else { bit(d) };
            if src == Operand::Reg {
                u |= bit(s);
            }
            (u, bit(d))
        }
        Form::End { .. } => (bit(d), bit(d)),
        Form::Lddw => (0, bit(d)),
        Form::LdPacket { indirect, .. } => (if indirect { bit(s) } else { 0 }, 1),
        Form::Ldx { .. } | Form::LdCtx(_) => (bit(s), bit(d)),
        Form::St { .. } => (bit(d), 0),
        Form::Stx { .. } => (bit(d) | bit(s), 0),
        Form::Atomic { op, .. } => {
            let mut u = bit(d) | bit(s);
            let mut w = 0;
            if op == AtomicOp::Cmpxchg {
                u |= 1;
                w |= 1;
            }
            if op.fetches() {
                w |= bit(s);
            }
            (u, w)
        }
        Form::Ja | Form::Ja32 => (0, 0),
        Form::Jump { src, .. } => (bit(d) | if src == Operand::Reg { bit(s) } else { 0 }, 0),
        Form::Call => {
            let args = protos::proto(insn.imm as i64).map_or(ALL_ARGS, |p| {
                p.args.iter().enumerate().filter(|(_, a)| **a != Arg::None).fold(0, |m, (k, _)| m | bit(k as u8 + 1))
            });
            (args, 0b11_1111)
        }
        Form::Callx => (ALL_ARGS | bit(d), 0b11_1111),
        Form::CallLocal | Form::CallKfunc => (ALL_ARGS, 0b11_1111),
        Form::Exit => (1, 0),
    }
}

/// (registers whose value matters, registers overwritten) for the precision analysis, given
/// the registers that matter after the instruction (`out`).
fn precise_step(insn: &Insn, f: Form, out: u16, main_exit: bool) -> (u16, u16) {
    let bit = |r: u8| 1u16 << r;
    let (d, s) = (insn.dst, insn.src);
    match f {
        // A result that matters makes its operands matter.
        Form::Alu { .. } | Form::End { .. } => {
            let (u, w) = uses_defs(insn, f);
            (if out & bit(d) != 0 { u } else { 0 }, w)
        }
        Form::Lddw => (0, bit(d)),
        Form::LdPacket { indirect, .. } => (if indirect { bit(s) } else { 0 }, 1),
        Form::Exit if main_exit => (0, 0),
        // Stores keep their value in memory, where later loads may use it: always precise.
        _ => uses_defs(insn, f),
    }
}

/// A backward register-set dataflow to its fixpoint (loops need more than one sweep): the set
/// at `pc` is `uses | (out & !defs)`, where `step(pc, form, out)` gives `(uses, defs)` and
/// `out` is the union over the successors.
fn backward(
    insns: &[Insn],
    reachable: &[bool],
    form_at: impl Fn(usize) -> Option<Form>,
    step: impl Fn(usize, Form, u16) -> (u16, u16),
) -> Vec<u16> {
    let n = insns.len();
    let mut set_in = vec![0u16; n];
    loop {
        let mut changed = false;
        for pc in (0..n).rev() {
            let Some(f) = form_at(pc).filter(|_| reachable[pc]) else { continue };
            let out = successors(insns, pc, f).into_iter().flatten().filter(|&t| t < n).fold(0u16, |m, t| m | set_in[t]);
            let (u, d) = step(pc, f, out);
            let v = u | (out & !d);
            if v != set_in[pc] {
                set_in[pc] = v;
                changed = true;
            }
        }
        if !changed {
            return set_in;
        }
    }
}

impl Cfg {
    /// `insns` passed structural validation, so every target is an instruction of the same
    /// function and every function ends in `exit` or `ja`.
    pub fn build(insns: &[Insn]) -> Cfg {
        let n = insns.len();
        let forms: Vec<Option<Form>> = insns.iter().map(|i| form(i).ok()).collect();
        let mut second = vec![false; n];
        let mut pc = 0;
        while pc < n {
            if forms[pc] == Some(Form::Lddw) {
                if let Some(s) = second.get_mut(pc + 1) {
                    *s = true;
                }
                pc += 2;
            } else {
                pc += 1;
            }
        }
        let form_at = |pc: usize| if second[pc] { None } else { forms[pc] };

        let mut reachable = vec![false; n];
        let mut prune = vec![false; n];
        let mut work = vec![0usize];
        while let Some(pc) = work.pop() {
            if pc >= n || reachable[pc] {
                continue;
            }
            reachable[pc] = true;
            let Some(f) = form_at(pc) else { continue };
            let succ = successors(insns, pc, f);
            match f {
                Form::Jump { .. } => {
                    for t in succ.into_iter().flatten() {
                        if t < n {
                            prune[t] = true;
                        }
                    }
                }
                Form::Ja | Form::Ja32 => {
                    if let Some(t) = succ[0].filter(|&t| t < n) {
                        prune[t] = true;
                    }
                }
                Form::CallLocal => {
                    if let Ok(t) = usize::try_from(pc as i64 + 1 + insns[pc].imm as i64) {
                        work.push(t);
                    }
                    if pc + 1 < n {
                        prune[pc + 1] = true;
                    }
                }
                Form::Call | Form::Callx if pc + 1 < n => prune[pc + 1] = true,
                _ => {}
            }
            work.extend(succ.into_iter().flatten());
        }

        let live_in = backward(insns, &reachable, form_at, |pc, f, _| uses_defs(&insns[pc], f));
        // Function starts other than the entry: code before the first one is the entry's, whose
        // `exit` ends the run (its r0 needs only be a scalar).
        let first_callee = (0..n)
            .filter(|&pc| form_at(pc) == Some(Form::CallLocal))
            .filter_map(|pc| usize::try_from(pc as i64 + 1 + insns[pc].imm as i64).ok())
            .filter(|&t| t > 0)
            .min()
            .unwrap_or(n);
        let precise_in = backward(insns, &reachable, form_at, |pc, f, out| precise_step(&insns[pc], f, out, pc < first_callee));
        Cfg { reachable, prune, live_in, precise_in }
    }

    /// The first instruction no path reaches, skipping second `lddw` slots.
    pub fn first_unreachable(&self, insns: &[Insn]) -> Option<usize> {
        let mut pc = 0;
        while pc < insns.len() {
            if !self.reachable[pc] {
                return Some(pc);
            }
            pc += if insns[pc].is_lddw() { 2 } else { 1 };
        }
        None
    }
}
