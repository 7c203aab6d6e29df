//! The accumulator loop: a second, faster way to run the programs classic BPF translates to.
//!
//! A translated classic filter (see [`crate::bpf::classic::translate`]) only ever holds 32-bit
//! values: packet loads into r0, 32-bit ALU, moves, 32-bit jumps, 32-bit scratch words just
//! below r10 and the packet length. For such a program the general loop's machinery (a 64-bit
//! register file in memory, the context, a stack area, fault plumbing) is pure overhead. This
//! loop keeps r0, the accumulator, in a host register and every other register or scratch word
//! the program names in a small `u32` array (four entries for most filters), reads the packet
//! straight from the slice, fuses each packet load with the test that follows it, returns
//! straight from a jump whose target is `r0 = k; exit`, and cannot fault, so a run returns r0
//! directly.
//!
//! [`AccProgram::build`] accepts a program only when every instruction is one this loop runs
//! with exactly the general loop's semantics; anything else stays on the general loop:
//! - A register read anywhere must hold a value below 2^32 ("clean") on every path there.
//!   r1 (the context pointer) and r10 start unclean; a 64-bit register move carries
//!   uncleanness along; other 64-bit ALU is refused except moves of a non-negative
//!   immediate; the only context pointers allowed are those of the length prologue
//!   `rX = ctx->data_end; rY = ctx->data; rX -= rY`, which leaves rY unclean. A 64-bit jump
//!   compares clean values, so it becomes the unsigned 32-bit jump with the same outcome
//!   (refused against a negative immediate).
//! - Memory is the packet, through `ld_abs`/`ld_ind`, and the 32-bit words at
//!   `r10 - 64 .. r10 - 4` (the classic scratch words), which become array entries like the
//!   registers. No calls, `lddw` or atomics.
//!
//! Every edge of an Xdp program goes forward, so one pass in program order finds which
//! registers may be unclean at each instruction. As in the general loop, every instruction
//! keeps a slot of its own and a fused op in the first slot of its sequence skips the rest,
//! so a jump into the middle of a sequence runs the plain ops from there.

use super::{div32, mod32, sdiv32, smod32};
use crate::bpf::check::{self, AluOp, Cond, Form, Operand};
use crate::bpf::ctx::CtxField;
use crate::bpf::insn::{ALU_AND, ALU_LSH, CLASS_ALU, Insn, REG_FP};

/// Operation of one slot. `K`/`X` = immediate / array-entry operand; unprefixed ALU and jump
/// ops work on the accumulator `a`; `v[i]` is array entry `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[rustfmt::skip]
enum Code {
    /// `a = packet[off..]`, big-endian; `Ind*` add `v[r]` to `off`.
    AbsB, AbsH, AbsW, IndB, IndH, IndW,
    /// A packet load into `a` fused with the jump on `a` against `k` that follows it (2 slots).
    AbsBEq, AbsBNe, AbsBGt, AbsBGe, AbsBLt, AbsBLe, AbsBSet,
    AbsHEq, AbsHNe, AbsHGt, AbsHGe, AbsHLt, AbsHLe, AbsHSet,
    AbsWEq, AbsWNe, AbsWGt, AbsWGe, AbsWLt, AbsWLe, AbsWSet,
    IndBEq, IndBNe, IndBGt, IndBGe, IndBLt, IndBLe, IndBSet,
    IndHEq, IndHNe, IndHGt, IndHGe, IndHLt, IndHLe, IndHSet,
    IndWEq, IndWNe, IndWGt, IndWGe, IndWLt, IndWLe, IndWSet,
    /// The same with `a &= m` between the load and the test (3 slots).
    AbsBMEq, AbsBMNe, AbsHMEq, AbsHMNe, AbsWMEq, AbsWMNe,
    IndBMEq, IndBMNe, IndHMEq, IndHMNe, IndWMEq, IndWMNe,
    /// A 2-way demultiplexer: `AbsBNe`... whose target tests `a` against another constant:
    /// `a = packet[off..]; if a == k goto pc + 2; if a == sets[m][0] goto sets[m][1] else goto
    /// sets[m][2]` (IPv6 first, then IPv4, as libpcap orders `ip6 or ip` tests).
    AbsBSw, AbsHSw, AbsWSw,
    /// A packet load into `a` fused with the `JeqSet` that follows it.
    AbsBIn, AbsHIn, AbsWIn, IndBIn, IndHIn, IndWIn,
    /// `a = v[r] = 4 * (packet[off] & 0xf)`: classic `ldxb 4*([k]&0xf)` (4 slots).
    Msh,
    /// `Msh` into `v[r]` from `packet[m]`, then `a = packet[v[r] + off..]` (5 slots), and
    /// maybe the jump on `a` against `k` after it (6 slots): the TCP/UDP port load.
    MshIndB, MshIndH, MshIndW, MshIndBEq, MshIndBNe, MshIndHEq, MshIndHNe, MshIndWEq, MshIndWNe,
    /// The same with A saved around it: `v[x] = a; v[r] = 4 * (packet[off] & 0xf)` (6 slots).
    MshKeep,
    /// `v[r] = packet length` (the 3-slot length prologue).
    Len,
    /// `a` (`aux & DST_A`) or `v[r]` = the 32-bit context field number `k`.
    Ctx,
    AddK, SubK, MulK, DivK, ModK, OrK, AndK, LshK, RshK, ArshK, XorK, Neg,
    AddX, SubX, MulX, DivX, ModX, OrX, AndX, LshX, RshX, ArshX, XorX,
    /// `ALU_OPS[aux & SELECTOR]` on `a` (`aux & DST_A`) or `v[r]`, with operand `a`
    /// (`aux & SRC_A`), `v[x]` (`aux & SRC_REG`) or `k`.
    AluAny,
    /// `a = k`, `a = v[r]`, `v[r] = a`, `v[r] = k`, `v[r] = v[x]`.
    MovAK, MovAX, MovXA, MovXK, MovXX,
    Nop,
    /// `pc = t`.
    Ja,
    /// `if a <cond> k goto t`.
    JeqK, JgtK, JgeK, JsetK, JneK, JsgtK, JsgeK, JltK, JleK, JsltK, JsleK,
    /// `if a <cond> v[r] goto t`.
    JeqX, JgtX, JgeX, JsetX, JneX, JsgtX, JsgeX, JltX, JleX, JsltX, JsleX,
    /// `if <dst> CONDS[aux & SELECTOR] <src> goto t`, operands as for `AluAny`.
    JmpAny,
    /// `if a is one of sets[k] goto t else goto m`: a run of `jeq` with one target.
    JeqSet,
    /// `return k` (`r0 = k; exit`, 2 slots).
    Ret,
    /// `return a`.
    Exit,
}

use Code::*;

/// One slot: 20 bytes.
#[derive(Debug, Clone, Copy)]
struct Op {
    code: Code,
    /// Array entry of the operand (destination of moves and of the `Any` ops).
    r: u8,
    /// Second array entry.
    x: u8,
    /// Selector and operand flags of the `Any` ops; `RET_*` flags of the jumps.
    aux: u8,
    k: u32,
    /// Packet offset.
    off: u32,
    /// Jump target slot.
    t: u32,
    /// Mask of the masked load-tests; fall-through slot of the set tests.
    m: u32,
}

const fn op(code: Code) -> Op {
    Op { code, r: 0, x: 0, aux: 0, k: 0, off: 0, t: 0, m: 0 }
}

// `aux` of the `Any` ops: the selector and where the operands are.
const SELECTOR: u8 = 0x1f;
const SRC_REG: u8 = 0x80;
const SRC_A: u8 = 0x40;
const DST_A: u8 = 0x20;
// `aux` of the jumps: the taken (or fall-through) successor is a `Ret`, which they run
// themselves instead of dispatching it.
const RET_T: u8 = 0x01;
const RET_F: u8 = 0x02;
/// `aux` of the `*Sw` ops: `sets[m][2]` is a `Ret` (`RET_T` is for `sets[m][1]`).
const RET_X: u8 = 0x04;

/// The conditions in the order of `JeqK..JsleK`, `JeqX..JsleX` and `JmpAny`'s selector.
const CONDS: [Cond; 11] =
    [Cond::Eq, Cond::Gt, Cond::Ge, Cond::Set, Cond::Ne, Cond::Sgt, Cond::Sge, Cond::Lt, Cond::Le, Cond::Slt, Cond::Sle];
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
const LOAD_MASK_TESTS: [[Code; 2]; 6] = [
    [AbsBMEq, AbsBMNe], [AbsHMEq, AbsHMNe], [AbsWMEq, AbsWMNe],
    [IndBMEq, IndBMNe], [IndHMEq, IndHMNe], [IndWMEq, IndWMNe],
];
const LOAD_SETS: [Code; 6] = [AbsBIn, AbsHIn, AbsWIn, IndBIn, IndHIn, IndWIn];
/// `Msh` then an indexed load of 1, 2, 4 bytes: alone, or with the `Eq` or `Ne` test after it.
const MSH_LOADS: [[Code; 3]; 3] =
    [[MshIndB, MshIndBEq, MshIndBNe], [MshIndH, MshIndHEq, MshIndHNe], [MshIndW, MshIndWEq, MshIndWNe]];

/// The ALU operations in the order of `AluAny`'s selector, and their accumulator forms.
const ALU_OPS: [AluOp; 14] = [
    AluOp::Add,
    AluOp::Sub,
    AluOp::Mul,
    AluOp::Div,
    AluOp::SDiv,
    AluOp::Or,
    AluOp::And,
    AluOp::Lsh,
    AluOp::Rsh,
    AluOp::Neg,
    AluOp::Mod,
    AluOp::SMod,
    AluOp::Xor,
    AluOp::Arsh,
];
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

/// Scratch words: `r10 - 4 * SCRATCH_WORDS .. r10`.
const SCRATCH_WORDS: usize = 16;
/// Array entries: r1-r9 and the scratch words, at most.
const MAX_ENTRIES: usize = 32;
/// Entries of the small array most filters fit in (it is zeroed on every run).
const SMALL_ENTRIES: usize = 4;
/// Constants one `JeqSet` compares with.
const SET_SIZE: usize = 4;

/// A program in the accumulator loop's form.
#[derive(Debug, Clone)]
pub(super) struct AccProgram {
    code: Box<[Op]>,
    /// The constants of the `JeqSet` ops (short runs repeat their first constant).
    sets: Box<[[u32; SET_SIZE]]>,
    /// Whether the program names more than [`SMALL_ENTRIES`] registers and scratch words.
    large: bool,
}

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
    pub(super) fn build(insns: &[Insn]) -> Option<AccProgram> {
        let n = insns.len();
        let forms: Vec<Form> = insns.iter().map(|i| check::form(i).ok()).collect::<Option<_>>()?;
        let mut is_target = vec![false; n + 1];
        for (pc, (i, f)) in insns.iter().zip(&forms).enumerate() {
            if matches!(f, Form::Ja | Form::Ja32 | Form::Jump { .. }) {
                *is_target.get_mut(target(pc, i)? as usize)? = true;
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

/// Big-endian packet bytes at `off`, as a number; `None` when outside the packet.
#[inline(always)]
fn be<const N: usize>(packet: &[u8], off: u64) -> Option<u32> {
    let b = packet.get(usize::try_from(off).ok()?..)?.first_chunk::<N>()?;
    Some(b.iter().fold(0, |v, &x| v << 8 | x as u32))
}

#[inline(always)]
fn alu32(a: AluOp, d: u32, y: u32) -> u32 {
    match a {
        AluOp::Add => d.wrapping_add(y),
        AluOp::Sub => d.wrapping_sub(y),
        AluOp::Mul => d.wrapping_mul(y),
        AluOp::Div => div32(d, y),
        AluOp::SDiv => sdiv32(d, y),
        AluOp::Or => d | y,
        AluOp::And => d & y,
        // wrapping_shl/shr mask the count to 5 bits, the RFC's `& 31`.
        AluOp::Lsh => d.wrapping_shl(y),
        AluOp::Rsh => d.wrapping_shr(y),
        AluOp::Neg => d.wrapping_neg(),
        AluOp::Mod => mod32(d, y),
        AluOp::SMod => smod32(d, y),
        AluOp::Xor => d ^ y,
        AluOp::Arsh => (d as i32).wrapping_shr(y) as u32,
        AluOp::Mov | AluOp::MovSx(_) => y,
    }
}

#[inline(always)]
fn test32(c: Cond, d: u32, y: u32) -> bool {
    match c {
        Cond::Eq => d == y,
        Cond::Gt => d > y,
        Cond::Ge => d >= y,
        Cond::Set => d & y != 0,
        Cond::Ne => d != y,
        Cond::Sgt => (d as i32) > (y as i32),
        Cond::Sge => (d as i32) >= (y as i32),
        Cond::Lt => d < y,
        Cond::Le => d <= y,
        Cond::Slt => (d as i32) < (y as i32),
        Cond::Sle => (d as i32) <= (y as i32),
    }
}

impl AccProgram {
    /// Runs over `packet`, which must be shorter than 4 GiB (the length is a clean value).
    #[inline]
    pub(super) fn run(&self, packet: &[u8], ingress_ifindex: u32, rx_queue_index: u32) -> u64 {
        if self.large {
            run::<MAX_ENTRIES>(&self.code, &self.sets, packet, ingress_ifindex, rx_queue_index)
        } else {
            run::<SMALL_ENTRIES>(&self.code, &self.sets, packet, ingress_ifindex, rx_queue_index)
        }
    }
}

/// The loop, with `N` array entries (a power of two, so `i & (N - 1)` indexes unchecked).
#[inline(always)]
fn run<const N: usize>(
    code: &[Op],
    sets: &[[u32; SET_SIZE]],
    packet: &[u8],
    ingress_ifindex: u32,
    rx_queue_index: u32,
) -> u64 {
    let mut a = 0u32;
    let mut v = [0u32; N];
    let mut pc = 0usize;
    loop {
        let op = &code[pc];
        macro_rules! e {
            ($i:expr) => {
                v[$i as usize & (N - 1)]
            };
        }
        macro_rules! load {
            ($n:literal, abs) => {
                be::<$n>(packet, op.off as u64)
            };
            ($n:literal, ind) => {
                be::<$n>(packet, op.off as u64 + e!(op.r) as u64)
            };
        }
        macro_rules! ld {
            ($n:literal, $mode:ident) => {{
                let Some(x) = load!($n, $mode) else { return 0 };
                a = x;
                pc += 1;
            }};
        }
        // Go to `t` when `$taken`, else to `$fall`; a successor that is a `Ret` returns here.
        // The two sides stay apart so that the compiler emits a branch, which the CPU predicts,
        // rather than a select, which would chain every op's address to the previous test.
        macro_rules! branch {
            ($taken:expr, $fall:expr) => {{
                if $taken {
                    if op.aux & RET_T != 0 {
                        return code[op.t as usize].k as u64;
                    }
                    pc = op.t as usize;
                } else {
                    let fall = $fall;
                    if op.aux & RET_F != 0 {
                        return code[fall].k as u64;
                    }
                    pc = fall;
                }
            }};
        }
        macro_rules! ld_test {
            ($n:literal, $mode:ident, $c:ident) => {{
                let Some(x) = load!($n, $mode) else { return 0 };
                a = x;
                branch!(test32(Cond::$c, x, op.k), pc + 2);
            }};
            ($n:literal, $mode:ident, mask $c:ident) => {{
                let Some(x) = load!($n, $mode) else { return 0 };
                a = x & op.m;
                branch!(test32(Cond::$c, a, op.k), pc + 3);
            }};
        }
        macro_rules! msh_ind {
            ($n:literal) => {{
                let Some(b) = be::<1>(packet, op.m as u64) else { return 0 };
                let x = (b & 0xf) << 2;
                e!(op.r) = x;
                let Some(y) = be::<$n>(packet, op.off as u64 + x as u64) else { return 0 };
                a = y;
            }};
        }
        macro_rules! switch {
            ($n:literal) => {{
                let Some(x) = load!($n, abs) else { return 0 };
                a = x;
                if a == op.k {
                    if op.aux & RET_F != 0 {
                        return code[pc + 2].k as u64;
                    }
                    pc += 2;
                } else {
                    let s = &sets[op.m as usize];
                    if a == s[0] {
                        if op.aux & RET_T != 0 {
                            return code[s[1] as usize].k as u64;
                        }
                        pc = s[1] as usize;
                    } else {
                        if op.aux & RET_X != 0 {
                            return code[s[2] as usize].k as u64;
                        }
                        pc = s[2] as usize;
                    }
                }
            }};
        }
        macro_rules! in_set {
            () => {{
                let s = &sets[op.k as usize];
                branch!((a == s[0]) | (a == s[1]) | (a == s[2]) | (a == s[3]), op.m as usize);
            }};
            ($n:literal, $mode:ident) => {{
                let Some(x) = load!($n, $mode) else { return 0 };
                a = x;
                in_set!();
            }};
        }
        macro_rules! alu {
            ($a:ident, $y:expr) => {{
                a = alu32(AluOp::$a, a, $y);
                pc += 1;
            }};
        }
        macro_rules! jump {
            ($c:ident, $y:expr) => {
                branch!(test32(Cond::$c, a, $y), pc + 1)
            };
        }
        // Operands of the `Any` ops.
        macro_rules! dst {
            () => {
                if op.aux & DST_A != 0 { a } else { e!(op.r) }
            };
        }
        macro_rules! src {
            () => {
                if op.aux & SRC_A != 0 {
                    a
                } else if op.aux & SRC_REG != 0 {
                    e!(op.x)
                } else {
                    op.k
                }
            };
        }
        match op.code {
            AbsB => ld!(1, abs),
            AbsH => ld!(2, abs),
            AbsW => ld!(4, abs),
            IndB => ld!(1, ind),
            IndH => ld!(2, ind),
            IndW => ld!(4, ind),
            AbsBEq => ld_test!(1, abs, Eq),
            AbsBNe => ld_test!(1, abs, Ne),
            AbsBGt => ld_test!(1, abs, Gt),
            AbsBGe => ld_test!(1, abs, Ge),
            AbsBLt => ld_test!(1, abs, Lt),
            AbsBLe => ld_test!(1, abs, Le),
            AbsBSet => ld_test!(1, abs, Set),
            AbsHEq => ld_test!(2, abs, Eq),
            AbsHNe => ld_test!(2, abs, Ne),
            AbsHGt => ld_test!(2, abs, Gt),
            AbsHGe => ld_test!(2, abs, Ge),
            AbsHLt => ld_test!(2, abs, Lt),
            AbsHLe => ld_test!(2, abs, Le),
            AbsHSet => ld_test!(2, abs, Set),
            AbsWEq => ld_test!(4, abs, Eq),
            AbsWNe => ld_test!(4, abs, Ne),
            AbsWGt => ld_test!(4, abs, Gt),
            AbsWGe => ld_test!(4, abs, Ge),
            AbsWLt => ld_test!(4, abs, Lt),
            AbsWLe => ld_test!(4, abs, Le),
            AbsWSet => ld_test!(4, abs, Set),
            IndBEq => ld_test!(1, ind, Eq),
            IndBNe => ld_test!(1, ind, Ne),
            IndBGt => ld_test!(1, ind, Gt),
            IndBGe => ld_test!(1, ind, Ge),
            IndBLt => ld_test!(1, ind, Lt),
            IndBLe => ld_test!(1, ind, Le),
            IndBSet => ld_test!(1, ind, Set),
            IndHEq => ld_test!(2, ind, Eq),
            IndHNe => ld_test!(2, ind, Ne),
            IndHGt => ld_test!(2, ind, Gt),
            IndHGe => ld_test!(2, ind, Ge),
            IndHLt => ld_test!(2, ind, Lt),
            IndHLe => ld_test!(2, ind, Le),
            IndHSet => ld_test!(2, ind, Set),
            IndWEq => ld_test!(4, ind, Eq),
            IndWNe => ld_test!(4, ind, Ne),
            IndWGt => ld_test!(4, ind, Gt),
            IndWGe => ld_test!(4, ind, Ge),
            IndWLt => ld_test!(4, ind, Lt),
            IndWLe => ld_test!(4, ind, Le),
            IndWSet => ld_test!(4, ind, Set),
            AbsBMEq => ld_test!(1, abs, mask Eq),
            AbsBMNe => ld_test!(1, abs, mask Ne),
            AbsHMEq => ld_test!(2, abs, mask Eq),
            AbsHMNe => ld_test!(2, abs, mask Ne),
            AbsWMEq => ld_test!(4, abs, mask Eq),
            AbsWMNe => ld_test!(4, abs, mask Ne),
            IndBMEq => ld_test!(1, ind, mask Eq),
            IndBMNe => ld_test!(1, ind, mask Ne),
            IndHMEq => ld_test!(2, ind, mask Eq),
            IndHMNe => ld_test!(2, ind, mask Ne),
            IndWMEq => ld_test!(4, ind, mask Eq),
            IndWMNe => ld_test!(4, ind, mask Ne),
            AbsBSw => switch!(1),
            AbsHSw => switch!(2),
            AbsWSw => switch!(4),
            AbsBIn => in_set!(1, abs),
            AbsHIn => in_set!(2, abs),
            AbsWIn => in_set!(4, abs),
            IndBIn => in_set!(1, ind),
            IndHIn => in_set!(2, ind),
            IndWIn => in_set!(4, ind),
            Msh => {
                let Some(b) = load!(1, abs) else { return 0 };
                a = (b & 0xf) << 2;
                e!(op.r) = a;
                pc += 4;
            }
            MshIndB => {
                msh_ind!(1);
                pc += 5;
            }
            MshIndH => {
                msh_ind!(2);
                pc += 5;
            }
            MshIndW => {
                msh_ind!(4);
                pc += 5;
            }
            MshIndBEq => {
                msh_ind!(1);
                branch!(a == op.k, pc + 6);
            }
            MshIndBNe => {
                msh_ind!(1);
                branch!(a != op.k, pc + 6);
            }
            MshIndHEq => {
                msh_ind!(2);
                branch!(a == op.k, pc + 6);
            }
            MshIndHNe => {
                msh_ind!(2);
                branch!(a != op.k, pc + 6);
            }
            MshIndWEq => {
                msh_ind!(4);
                branch!(a == op.k, pc + 6);
            }
            MshIndWNe => {
                msh_ind!(4);
                branch!(a != op.k, pc + 6);
            }
            MshKeep => {
                let Some(b) = load!(1, abs) else { return 0 };
                e!(op.x) = a;
                e!(op.r) = (b & 0xf) << 2;
                pc += 6;
            }
            Len => {
                e!(op.r) = packet.len() as u32;
                pc += 3;
            }
            Ctx => {
                let x = match CtxField::from_index(op.k as i16) {
                    Some(CtxField::IngressIfindex) => ingress_ifindex,
                    Some(CtxField::RxQueueIndex) => rx_queue_index,
                    _ => 0,
                };
                if op.aux & DST_A != 0 {
                    a = x;
                } else {
                    e!(op.r) = x;
                }
                pc += 1;
            }
            AddK => alu!(Add, op.k),
            SubK => alu!(Sub, op.k),
            MulK => alu!(Mul, op.k),
            DivK => alu!(Div, op.k),
            ModK => alu!(Mod, op.k),
            OrK => alu!(Or, op.k),
            AndK => alu!(And, op.k),
            LshK => alu!(Lsh, op.k),
            RshK => alu!(Rsh, op.k),
            ArshK => alu!(Arsh, op.k),
            XorK => alu!(Xor, op.k),
            Neg => alu!(Neg, 0),
            AddX => alu!(Add, e!(op.r)),
            SubX => alu!(Sub, e!(op.r)),
            MulX => alu!(Mul, e!(op.r)),
            DivX => alu!(Div, e!(op.r)),
            ModX => alu!(Mod, e!(op.r)),
            OrX => alu!(Or, e!(op.r)),
            AndX => alu!(And, e!(op.r)),
            LshX => alu!(Lsh, e!(op.r)),
            RshX => alu!(Rsh, e!(op.r)),
            ArshX => alu!(Arsh, e!(op.r)),
            XorX => alu!(Xor, e!(op.r)),
            AluAny => {
                let x = alu32(ALU_OPS[(op.aux & SELECTOR) as usize % ALU_OPS.len()], dst!(), src!());
                if op.aux & DST_A != 0 {
                    a = x;
                } else {
                    e!(op.r) = x;
                }
                pc += 1;
            }
            MovAK => {
                a = op.k;
                pc += 1;
            }
            MovAX => {
                a = e!(op.r);
                pc += 1;
            }
            MovXA => {
                e!(op.r) = a;
                pc += 1;
            }
            MovXK => {
                e!(op.r) = op.k;
                pc += 1;
            }
            MovXX => {
                e!(op.r) = e!(op.x);
                pc += 1;
            }
            Nop => pc += 1,
            Ja => pc = op.t as usize,
            JeqK => jump!(Eq, op.k),
            JgtK => jump!(Gt, op.k),
            JgeK => jump!(Ge, op.k),
            JsetK => jump!(Set, op.k),
            JneK => jump!(Ne, op.k),
            JsgtK => jump!(Sgt, op.k),
            JsgeK => jump!(Sge, op.k),
            JltK => jump!(Lt, op.k),
            JleK => jump!(Le, op.k),
            JsltK => jump!(Slt, op.k),
            JsleK => jump!(Sle, op.k),
            JeqX => jump!(Eq, e!(op.r)),
            JgtX => jump!(Gt, e!(op.r)),
            JgeX => jump!(Ge, e!(op.r)),
            JsetX => jump!(Set, e!(op.r)),
            JneX => jump!(Ne, e!(op.r)),
            JsgtX => jump!(Sgt, e!(op.r)),
            JsgeX => jump!(Sge, e!(op.r)),
            JltX => jump!(Lt, e!(op.r)),
            JleX => jump!(Le, e!(op.r)),
            JsltX => jump!(Slt, e!(op.r)),
            JsleX => jump!(Sle, e!(op.r)),
            JmpAny => {
                let c = CONDS[(op.aux & SELECTOR) as usize % CONDS.len()];
                pc = if test32(c, dst!(), src!()) { op.t as usize } else { pc + 1 };
            }
            JeqSet => in_set!(),
            Ret => return op.k as u64,
            Exit => return a as u64,
        }
    }
}

#[cfg(test)]
mod tests;
