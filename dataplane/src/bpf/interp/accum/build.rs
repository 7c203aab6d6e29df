//! Compiling a validated program to the accumulator form: which programs qualify (the clean-
//! value dataflow), one op per instruction, then the fusions, jump threading and switches.

use super::{
    ALU_OPS, AccProgram, CONDS, Code, Code::*, DST_A, Op, RET_F, RET_T, RET_X, SCRATCH_WORDS, SET_SIZE, SMALL_ENTRIES,
    SRC_A, SRC_REG, op,
};
use crate::bpf::check::{self, AluOp, Cond, Form, Operand};
use crate::bpf::ctx::CtxField;
use crate::bpf::insn::{ALU_AND, ALU_LSH, CLASS_ALU, Insn, REG_FP};

const JUMPS_K: [Code; 11] = [JeqK, JgtK, JgeK, JsetK, JneK, JsgtK, JsgeK, JltK, JleK, JsltK, JsleK];
const JUMPS_X: [Code; 11] = [JeqX, JgtX, JgeX, JsetX, JneX, JsgtX, JsgeX, JltX, JleX, JsltX, JsleX];

/// The conditions a fused load-and-test supports, in the order of its codes.
const FUSED_CONDS: [Cond; 7] = [Cond::Eq, Cond::Ne, Cond::Gt, Cond::Ge, Cond::Lt, Cond::Le, Cond::Set];
#[rustfmt::skip]
const LOAD_TESTS: [[Code; 7]; 6] = [
    [AbsBEq, AbsBNe, AbsBGt, AbsBGe, AbsBLt, AbsBLe, AbsBSet],
    [AbsHEq, AbsHNe, AbsHGt, AbsHGe, AbsHLt, AbsHLe, AbsHSet],
    [AbsWEq, AbsWNe, AbsWGt, AbsWGe, AbsWLt, AbsWLe, AbsWSet],
    [IndBEq, IndBNe, IndBGt, IndBGe, IndBLt, IndBLe, IndBSet],
    [IndHEq, IndHNe, IndHGt, IndHGe, IndHLt, IndHLe, IndHSet],
    [IndWEq, IndWNe, IndWGt, IndWGe, IndWLt, IndWLe, IndWSet],
];
const LOADS: [Code; 6] = [AbsB, AbsH, AbsW, IndB, IndH, IndW];
/// The masked load-tests, for `Eq` and `Ne`.
#[rustfmt::skip]
pub(super) const LOAD_MASK_TESTS: [[Code; 2]; 6] = [
    [AbsBMEq, AbsBMNe], [AbsHMEq, AbsHMNe], [AbsWMEq, AbsWMNe],
    [IndBMEq, IndBMNe], [IndHMEq, IndHMNe], [IndWMEq, IndWMNe],
];
pub(super) const LOAD_SETS: [Code; 6] = [AbsBIn, AbsHIn, AbsWIn, IndBIn, IndHIn, IndWIn];
/// `Msh` then an indexed load of 1, 2, 4 bytes: alone, or with the `Eq` or `Ne` test after it.
pub(super) const MSH_LOADS: [[Code; 3]; 3] =
    [[MshIndB, MshIndBEq, MshIndBNe], [MshIndH, MshIndHEq, MshIndHNe], [MshIndW, MshIndWEq, MshIndWNe]];

#[rustfmt::skip]
const FAST_K: [Option<Code>; 14] = [
    Some(AddK), Some(SubK), Some(MulK), Some(DivK), None, Some(OrK), Some(AndK),
    Some(LshK), Some(RshK), Some(Neg), Some(ModK), None, Some(XorK), Some(ArshK),
];
#[rustfmt::skip]
const FAST_X: [Option<Code>; 14] = [
    Some(AddX), Some(SubX), Some(MulX), Some(DivX), None, Some(OrX), Some(AndX),
    Some(LshX), Some(RshX), None, Some(ModX), None, Some(XorX), Some(ArshX),
];

/// Register bit masks.
fn bit(r: u8) -> u16 {
    1 << (r & 15)
}

/// Index of `c` in `table`.
fn index_of<T: PartialEq>(table: &[T], c: T) -> Option<usize> {
    table.iter().position(|x| *x == c)
}

/// The 32-bit condition with the same outcome on clean operands; `None` when there is none.
fn clean_cond(wide: bool, cond: Cond, src: Operand, imm: i32) -> Option<Cond> {
    if !wide {
        return Some(cond);
    }
    // Clean values are non-negative as i64, so a signed 64-bit comparison between two of them is
    // the unsigned one; a negative immediate is not clean.
    if src == Operand::Imm && imm < 0 {
        return None;
    }
    Some(match cond {
        Cond::Sgt => Cond::Gt,
        Cond::Sge => Cond::Ge,
        Cond::Slt => Cond::Lt,
        Cond::Sle => Cond::Le,
        c => c,
    })
}

fn target(pc: usize, insn: &Insn) -> Option<u32> {
    u32::try_from(pc as i64 + 1 + insn.jump_offset()).ok()
}

/// Gives each register (r1-r9) and scratch word the program names an array entry, in order of
/// first appearance.
#[derive(Default)]
struct Entries {
    /// Registers at 0..16, scratch words at 16..32.
    of: [Option<u8>; 32],
    used: u8,
}

impl Entries {
    fn of(&mut self, key: usize) -> u8 {
        let used = &mut self.used;
        *self.of[key % 32].get_or_insert_with(|| {
            *used += 1;
            *used - 1
        })
    }

    fn reg(&mut self, r: u8) -> u8 {
        self.of(r as usize & 15)
    }

    /// The scratch word an `r10 + off` 32-bit access names.
    fn word(&mut self, off: i16) -> Option<u8> {
        let from_bottom = off as i32 + 4 * SCRATCH_WORDS as i32;
        let inside = off % 4 == 0 && (0..4 * SCRATCH_WORDS as i32).contains(&from_bottom);
        inside.then(|| self.of(16 + from_bottom as usize / 4))
    }
}

/// One instruction decoded on its own: the op, the registers it reads and writes.
struct Decoded {
    op: Op,
    reads: u16,
    writes: u16,
    /// A 64-bit register move `(dst, src)`: it carries an unclean value along instead of
    /// reading it (compilers copy the context pointer before loading fields through the copy).
    copy: Option<(u8, u8)>,
}

/// Decodes `insn` (at `pc`) alone, or `None` when this loop does not run it.
fn decode(pc: usize, insn: &Insn, form: Form, e: &mut Entries) -> Option<Decoded> {
    let (d, s, k) = (insn.dst, insn.src, insn.imm as u32);
    let done = |op, reads, writes| Some(Decoded { op, reads, writes, copy: None });
    // `aux` flags and entries of an `Any` op's operands.
    let any = |e: &mut Entries, sel: usize, src: Operand| {
        let mut aux = sel as u8;
        if d == 0 {
            aux |= DST_A;
        }
        match src {
            Operand::Reg if s == 0 => aux |= SRC_A,
            Operand::Reg => aux |= SRC_REG,
            Operand::Imm => {}
        }
        let x = if src == Operand::Reg && s != 0 { e.reg(s) } else { 0 };
        let r = if d != 0 { e.reg(d) } else { 0 };
        (aux, r, x)
    };
    let reg_read = |src: Operand| if src == Operand::Reg { bit(s) } else { 0 };
    match form {
        Form::LdPacket { size, indirect } => {
            // `ld_ind` indexed by r0 is legal but never produced: left to the general loop.
            if indirect && s == 0 {
                return None;
            }
            let load = LOADS[indirect as usize * 3 + (size.trailing_zeros() as usize).min(2)];
            let r = if indirect { e.reg(s) } else { 0 };
            done(Op { r, off: k, ..op(load) }, if indirect { bit(s) } else { 0 }, bit(0))
        }
        Form::Alu { wide, op: AluOp::Mov, src } => {
            if wide && src == Operand::Imm && insn.imm < 0 {
                return None;
            }
            let op = match (src, d, s) {
                (Operand::Imm, 0, _) => Op { k, ..op(MovAK) },
                (Operand::Imm, _, _) => Op { r: e.reg(d), k, ..op(MovXK) },
                (Operand::Reg, 0, 0) => op(Nop),
                (Operand::Reg, 0, _) => Op { r: e.reg(s), ..op(MovAX) },
                (Operand::Reg, _, 0) => Op { r: e.reg(d), ..op(MovXA) },
                (Operand::Reg, _, _) => Op { r: e.reg(d), x: e.reg(s), ..op(MovXX) },
            };
            match src {
                Operand::Reg if wide => Some(Decoded { op, reads: 0, writes: bit(d), copy: Some((d, s)) }),
                _ => done(op, reg_read(src), bit(d)),
            }
        }
        Form::Alu { wide: false, op: a, src } => {
            let sel = index_of(&ALU_OPS, a)?;
            let fast = if src == Operand::Reg { FAST_X[sel] } else { FAST_K[sel] };
            let op = match fast {
                Some(code) if d == 0 && !(src == Operand::Reg && s == 0) => {
                    let r = if src == Operand::Reg { e.reg(s) } else { 0 };
                    Op { r, k, ..op(code) }
                }
                _ => {
                    let (aux, r, x) = any(e, sel, src);
                    Op { r, x, aux, k, ..op(AluAny) }
                }
            };
            done(op, bit(d) | reg_read(src), bit(d))
        }
        Form::Ldx { size: 4, signed: false } if s == REG_FP => {
            let w = e.word(insn.off)?;
            let op = if d == 0 { Op { r: w, ..op(MovAX) } } else { Op { r: e.reg(d), x: w, ..op(MovXX) } };
            done(op, 0, bit(d))
        }
        Form::Stx { size: 4 } if d == REG_FP => {
            let w = e.word(insn.off)?;
            let op = if s == 0 { Op { r: w, ..op(MovXA) } } else { Op { r: w, x: e.reg(s), ..op(MovXX) } };
            done(op, bit(s), 0)
        }
        Form::St { size: 4 } if d == REG_FP => done(Op { r: e.word(insn.off)?, k, ..op(MovXK) }, 0, 0),
        Form::LdCtx(field) if !field.is_pointer() => {
            let (aux, r) = if d == 0 { (DST_A, 0) } else { (0, e.reg(d)) };
            done(Op { r, aux, k: field as u32, ..op(Ctx) }, 0, bit(d))
        }
        Form::Ja | Form::Ja32 => done(Op { t: target(pc, insn)?, ..op(Ja) }, 0, 0),
        Form::Jump { wide, cond, src } => {
            let sel = index_of(&CONDS, clean_cond(wide, cond, src, insn.imm)?)?;
            let t = target(pc, insn)?;
            let op = match (src, d, s) {
                (Operand::Imm, 0, _) => Op { k, t, ..op(JUMPS_K[sel]) },
                (Operand::Reg, 0, 1..) => Op { r: e.reg(s), t, ..op(JUMPS_X[sel]) },
                _ => {
                    let (aux, r, x) = any(e, sel, src);
                    Op { r, x, aux, k, t, ..op(JmpAny) }
                }
            };
            done(op, bit(d) | reg_read(src), 0)
        }
        Form::Exit => done(op(Exit), bit(0), 0),
        _ => None,
    }
}

/// `rX = ctx->data_end; rY = ctx->data; rX -= rY` at `pc`: `(X, Y)`.
fn length_prologue(insns: &[Insn], pc: usize) -> Option<(u8, u8)> {
    let [end, data, sub] = insns.get(pc..pc + 3)?.try_into().ok()?;
    let ctx = |i: &Insn| match check::form(i) {
        Ok(Form::LdCtx(f)) => Some(f),
        _ => None,
    };
    let is_sub = check::form(&sub) == Ok(Form::Alu { wide: true, op: AluOp::Sub, src: Operand::Reg });
    (ctx(&end)? == CtxField::DataEnd
        && ctx(&data)? == CtxField::Data
        && is_sub
        && sub.dst == end.dst
        && sub.src == data.dst
        && end.dst != data.dst)
        .then_some((end.dst, data.dst))
}

impl AccProgram {
    /// The accumulator form of a validated Xdp program, or `None` when it needs the general loop.
    pub(in crate::bpf::interp) fn build(insns: &[Insn]) -> Option<AccProgram> {
        let n = insns.len();
        let forms: Vec<Form> = insns.iter().map(|i| check::form(i).ok()).collect::<Option<_>>()?;
        let mut is_target = vec![false; n + 1];
        for (pc, (i, f)) in insns.iter().zip(&forms).enumerate() {
            if matches!(f, Form::Ja | Form::Ja32 | Form::Jump { .. }) {
                let t = target(pc, i)?;
                // The one-pass analysis below and `thread_jumps` need every edge to go
                // forward: programs with (verified) loops stay on the general loop.
                if t as usize <= pc {
                    return None;
                }
                *is_target.get_mut(t as usize)? = true;
            }
        }
        let mut entries = Entries::default();
        // Registers that may be unclean on entry to each instruction (edges only go forward).
        let mut unclean = vec![0u16; n + 1];
        unclean[0] = bit(1) | bit(REG_FP);
        let mut code = vec![op(Exit); n];
        let mut pc = 0;
        while pc < n {
            let state = unclean[pc];
            if let Some((len, data)) = length_prologue(insns, pc).filter(|_| !is_target[pc + 1] && !is_target[pc + 2]) {
                code[pc] = Op { r: entries.reg(len), ..op(Len) };
                unclean[pc + 3] |= (state & !bit(len)) | bit(data);
                pc += 3;
                continue;
            }
            let d = decode(pc, &insns[pc], forms[pc], &mut entries)?;
            if d.reads & state != 0 {
                return None;
            }
            let mut out = (state & !d.writes) | bit(REG_FP);
            if let Some((dst, src)) = d.copy {
                out |= if state & bit(src) != 0 { bit(dst) } else { 0 };
            }
            if !matches!(d.op.code, Exit | Ja) {
                unclean[pc + 1] |= out;
            }
            if matches!(forms[pc], Form::Ja | Form::Ja32 | Form::Jump { .. }) {
                unclean[d.op.t as usize] |= out;
            }
            code[pc] = d.op;
            pc += 1;
        }
        let mut sets = fuse(insns, &forms, &mut code);
        thread_jumps(&mut code);
        demultiplex(&mut code, &mut sets);
        Some(AccProgram { code: code.into(), sets: sets.into(), large: entries.used as usize > SMALL_ENTRIES })
    }
}

/// `(constant, target)` of a `jeq` on `a` against an immediate at `pc`.
fn jeq_a(code: &[Op], pc: usize) -> Option<(u32, u32)> {
    code.get(pc).filter(|o| o.code == JeqK).map(|o| (o.k, o.t))
}

/// The `jeq`/`jne` run starting at `pc` that one `JeqSet` can replace: its constants, the
/// target when one matches and the target when none does. Runs of fewer than two are not
/// worth it.
fn jeq_run(code: &[Op], pc: usize) -> Option<(Vec<u32>, u32, u32)> {
    let (first, t) = jeq_a(code, pc)?;
    let mut ks = vec![first];
    while ks.len() < SET_SIZE {
        let at = pc + ks.len();
        match (jeq_a(code, at), code.get(at)) {
            (Some((k, to)), _) if to == t => ks.push(k),
            // `jne k → f` ending a run whose target is right after it: a match falls through.
            (None, Some(o)) if o.code == JneK && t as usize == at + 1 => {
                ks.push(o.k);
                return Some((ks, t, o.t));
            }
            _ => break,
        }
    }
    let fall = (pc + ks.len()) as u32;
    (ks.len() >= 2).then_some((ks, t, fall))
}

/// Replaces the first op of the hot sequences with one fused op (see the module notes);
/// returns the constants of the `JeqSet` ops.
fn fuse(insns: &[Insn], forms: &[Form], code: &mut [Op]) -> Vec<[u32; SET_SIZE]> {
    let mut sets = Vec::new();
    let at = |pc: usize| insns.get(pc).copied().unwrap_or_default();
    let mov_reg = |pc: usize| matches!(forms.get(pc), Some(Form::Alu { op: AluOp::Mov, src: Operand::Reg, .. }));
    // `w0 &= 0xf; w0 <<= 2; w<x> = w0` after a byte load at `pc`: the slot of the move.
    let msh_tail = |pc: usize| {
        let and = Insn::new(CLASS_ALU | ALU_AND, 0, 0, 0, 0xf);
        let lsh = Insn::new(CLASS_ALU | ALU_LSH, 0, 0, 0, 2);
        let mov = at(pc + 3);
        let mov_x_a = mov_reg(pc + 3) && mov.src == 0 && mov.dst != 0;
        (at(pc + 1) == and && at(pc + 2) == lsh && mov_x_a).then_some(pc + 3)
    };
    let is_abs_b = |pc: usize| forms.get(pc) == Some(&Form::LdPacket { size: 1, indirect: false });
    // The condition of a jump on r0 against an immediate at `pc`, as a 32-bit one.
    let test_a = |pc: usize| match forms.get(pc) {
        Some(&Form::Jump { wide, cond, src: Operand::Imm }) if at(pc).dst == 0 => {
            clean_cond(wide, cond, Operand::Imm, at(pc).imm)
        }
        _ => None,
    };
    let is_and_a = |pc: usize| {
        forms.get(pc) == Some(&Form::Alu { wide: false, op: AluOp::And, src: Operand::Imm }) && at(pc).dst == 0
    };
    let mut set_of = |ks: Vec<u32>| {
        sets.push(std::array::from_fn(|i| ks.get(i).copied().unwrap_or(ks[0])));
        sets.len() as u32 - 1
    };
    for pc in 0..insns.len() {
        let first = code[pc];
        let load = index_of(&LOADS, first.code);
        if let Some((ks, t, f)) = jeq_run(code, pc) {
            code[pc] = Op { k: set_of(ks), t, m: f, ..op(JeqSet) };
        } else if let Some(li) = load
            && let Some((ks, t, f)) = jeq_run(code, pc + 1)
        {
            code[pc] = Op { code: LOAD_SETS[li], k: set_of(ks), t, m: f, ..first };
        } else if let Some(li) = load
            && is_and_a(pc + 1)
            && let Some(ci) = test_a(pc + 2).and_then(|c| index_of(&[Cond::Eq, Cond::Ne], c))
        {
            let (mask, jump) = (at(pc + 1).imm as u32, code[pc + 2]);
            code[pc] = Op { code: LOAD_MASK_TESTS[li][ci], k: jump.k, t: jump.t, m: mask, ..first };
        } else if let Some(li) = load
            && let Some(ci) = test_a(pc + 1).and_then(|c| index_of(&FUSED_CONDS, c))
        {
            code[pc] = Op { code: LOAD_TESTS[li][ci], k: at(pc + 1).imm as u32, t: code[pc + 1].t, ..first };
        } else if is_abs_b(pc)
            && let Some(mov) = msh_tail(pc)
        {
            let (x, ind) = (at(mov).dst, pc + 4);
            let ind_size = match forms.get(ind) {
                Some(&Form::LdPacket { size, indirect: true }) if at(ind).src == x => Some(size),
                _ => None,
            };
            code[pc] = match ind_size {
                Some(size) => {
                    let row = &MSH_LOADS[(size.trailing_zeros() as usize).min(2)];
                    let test = test_a(ind + 1).and_then(|c| index_of(&[Cond::Eq, Cond::Ne], c));
                    let (fused, k, t) = match test {
                        Some(ci) => (row[1 + ci], at(ind + 1).imm as u32, code[ind + 1].t),
                        None => (row[0], 0, 0),
                    };
                    Op { r: code[mov].r, off: code[ind].off, m: first.off, k, t, ..op(fused) }
                }
                None => Op { code: Msh, r: code[mov].r, ..first },
            };
        } else if mov_reg(pc)
            && at(pc).src == 0
            && at(pc).dst != 0
            && is_abs_b(pc + 1)
            && let Some(mov) = msh_tail(pc + 1)
            && at(mov).dst != at(pc).dst
            && mov_reg(pc + 5)
            && at(pc + 5).dst == 0
            && at(pc + 5).src == at(pc).dst
        {
            // r<s> = a; msh into r<x>; a = r<s>
            code[pc] = Op { r: code[mov].r, x: first.r, off: code[pc + 1].off, ..op(MshKeep) };
        } else if first.code == MovAK && at(pc + 1).is_exit() {
            code[pc] = Op { code: Ret, ..first };
        }
    }
    sets
}

/// Points jumps past the `Ja`s they land on, turns a `Ja` to a `Ret` into that `Ret`, and
/// lets a jump whose successor is a `Ret` return itself: one dispatch fewer at the end of nearly
/// every run.
fn thread_jumps(code: &mut [Op]) {
    // Every edge goes forward, so following `Ja`s ends.
    let through = |code: &[Op], mut pc: usize| {
        while let Some(o) = code.get(pc).filter(|o| o.code == Ja) {
            pc = o.t as usize;
        }
        pc
    };
    let is_ret = |code: &[Op], pc: usize| code.get(pc).is_some_and(|o| o.code == Ret);
    for pc in 0..code.len() {
        let o = code[pc];
        let explicit_fall = o.code == JeqSet || LOAD_SETS.contains(&o.code);
        let fall = match o.code {
            c if LOAD_TESTS.iter().flatten().any(|&l| l == c) => pc + 2,
            c if LOAD_MASK_TESTS.iter().flatten().any(|&l| l == c) => pc + 3,
            c if MSH_LOADS.iter().any(|row| row[1..].contains(&c)) => pc + 6,
            c if JUMPS_K.contains(&c) || JUMPS_X.contains(&c) => pc + 1,
            _ if explicit_fall => through(code, o.m as usize),
            Ja | JmpAny => {
                let t = through(code, o.t as usize);
                code[pc] = if o.code == Ja && is_ret(code, t) { code[t] } else { Op { t: t as u32, ..o } };
                continue;
            }
            _ => continue,
        };
        let t = through(code, o.t as usize);
        let mut aux = 0;
        if is_ret(code, t) {
            aux |= RET_T;
        }
        if is_ret(code, fall) {
            aux |= RET_F;
        }
        code[pc].t = t as u32;
        code[pc].aux = aux;
        if explicit_fall {
            code[pc].m = fall as u32;
        }
    }
}

/// Turns a load-and-`jne` whose target tests `a` against another constant into a `*Sw` op, so
/// the second test of an ethertype (or protocol) demultiplexer costs no dispatch.
fn demultiplex(code: &mut [Op], sets: &mut Vec<[u32; SET_SIZE]>) {
    let is_ret = |code: &[Op], pc: usize| code.get(pc).is_some_and(|o| o.code == Ret);
    for pc in 0..code.len() {
        let o = code[pc];
        let Some(sw) = [(AbsBNe, AbsBSw), (AbsHNe, AbsHSw), (AbsWNe, AbsWSw)].iter().find(|c| c.0 == o.code) else {
            continue;
        };
        let y = o.t as usize;
        let Some(second) = code.get(y).copied().filter(|s| matches!(s.code, JeqK | JneK)) else { continue };
        // Where the second test goes when `a` equals its constant, and when not.
        let mut after = y + 1;
        while let Some(j) = code.get(after).filter(|j| j.code == Ja) {
            after = j.t as usize;
        }
        let after = after as u32;
        let (on_eq, on_ne) = if second.code == JeqK { (second.t, after) } else { (after, second.t) };
        let mut aux = o.aux & RET_F;
        if is_ret(code, on_eq as usize) {
            aux |= RET_T;
        }
        if is_ret(code, on_ne as usize) {
            aux |= RET_X;
        }
        sets.push([second.k, on_eq, on_ne, 0]);
        code[pc] = Op { code: sw.1, aux, m: sets.len() as u32 - 1, ..o };
    }
}
