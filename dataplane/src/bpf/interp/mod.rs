//! The interpreter: the reference semantics of RFC 9669 v4 that the JIT is tested against.
//!
//! A [`Program`] is pre-decoded once into compact 16-byte ops (jump targets resolved to
//! absolute slots, immediates sign-extended, helpers resolved, and the sequences classic
//! filters are made of fused into single ops), so a run is a `match` per op with no
//! allocation and no re-parsing.
//!
//! Xdp programs made only of what classic filters translate to also get an accumulator form (`accum`): a
//! second loop with r0 in a host register, no context, stack area or faults, which
//! [`Exec::run_xdp`] prefers. The general loop stays the reference; the tests hold the two equal.
//!
//! Execution model, shared with the JIT:
//! - Registers start at zero except r1 (memory pointer, or context pointer for `run_xdp`),
//!   r2 (memory length; 0 for `run_xdp`) and r10.
//! - Guest addresses are host addresses: r1 points at the real buffer (or context), r10 at the
//!   top of a real stack area, so helpers receive pointers they can use.
//! - A load, store or atomic is allowed only inside the memory/packet slice or the stack area;
//!   it is translated to a slice index (safe code, no pointer dereference). Anything else is
//!   [`Fault::OutOfBounds`].
//! - The stack area holds [`MAX_CALL_DEPTH`] frames of [`STACK_SIZE`] bytes; frame k (0 = entry)
//!   has r10 = top - k * 512, and an access anywhere in the area is allowed so a caller's stack
//!   pointer works in its callee. The part of the area a program can reach
//!   ([`check::stack_reach`]) is zeroed before every run; for a verified program that reads
//!   only stack it wrote ([`Interpreter::verified`]), nothing is.
//! - Local calls save r6-r9 and restore them and r10 at the callee's `exit`; r1-r5 are not
//!   restored (callers must treat them as clobbered). Helper calls leave r1-r5 untouched.
//! - Map memory (values a lookup returned, reserved ring-buffer records, global data) is the
//!   third region: an access inside one of the program's map arenas is allowed (writes only
//!   where the program may write: not `.rodata`), through raw pointers because workers and the
//!   controller share those bytes; atomics there are real atomics. `lddw` map references are
//!   resolved once, at pre-decoding, to the map's or value's address.
//! - Programs with kernel helpers run inside `helpers::enter`, which tells the helpers about
//!   the run; after `xdp_adjust_head/tail` the context's packet pointers are reloaded from it.
//! - `ld_abs`/`ld_ind` read big-endian from the packet; out of range ends the run with r0 = 0.
//!   `MODE_CTX` loads read the run's own context: the source register is never dereferenced.
//! - Everything else is little-endian, whatever the host.
//!
//! Instruction budget: the interpreter is the reference engine and also runs programs that were
//! only validated, never verified (Raw programs may loop), so a run is stopped with
//! [`Fault::StepLimit`] once it may have executed more than its budget ([`STEP_LIMIT`] unless
//! [`Interpreter::with_step_limit`] says otherwise). Counting every instruction would cost a
//! decrement and a branch per dispatch; instead only the two ways a run can come back to code
//! it already ran are charged, each with an upper bound of what it lets run again:
//! - a taken backward jump from `from` to `to` charges `from + 1 - to`, the length of the code it
//!   jumps back over (between two back-edges the pc only moves forward, so a run's total
//!   forward travel is at most its backward travel plus the code's length);
//! - a local call charges the callee's length (a function's code runs at most once per call,
//!   back-edges aside).
//!
//! So the budget bounds executed instructions, up to the entry function's length, and a run
//! that charges nothing (every filter without loops or calls) pays one compare per taken jump.
//! The accumulator loop takes only loop-free programs and needs no budget. The JIT keeps none:
//! what it runs is loop-free (validated filters), bounded by the verifier's proof (objects), or
//! a trusted Raw program (the conformance contract).

use std::cell::RefCell;

use super::check::{self, AluOp, AtomicOp, Cond, EndOp, Form, Operand, StackReach};
use super::helpers::{self, ADJUST_HEAD, ADJUST_TAIL, StackArea};
use super::insn::{ALU_AND, ALU_LSH, ALU_MOV, CLASS_ALU, Insn, SRC_X, STACK_SIZE, lddw_imm};
use super::maps::MapTable;
use super::verifier::Verified;
use super::{Exec, Fault, Helper, Helpers, MAX_CALL_DEPTH, ProgKind, Program, XdpContext};

mod accum;

/// Bytes of the stack area.
pub const STACK_AREA: usize = MAX_CALL_DEPTH * STACK_SIZE;

/// Instructions a run may execute before [`Fault::StepLimit`] ends it (as counted in the
/// module docs): the kernel verifier's complexity limit (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const STEP_LIMIT: u64 = 1_000_000;

/// Pre-decoded operation. Names: `I`/`R` = immediate/register operand, `64`/`32` = width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[rustfmt::skip]
enum Code {
    Add64I, Add64R, Add32I, Add32R,
    Sub64I, Sub64R, Sub32I, Sub32R,
    Mul64I, Mul64R, Mul32I, Mul32R,
    Div64I, Div64R, Div32I, Div32R,
    SDiv64I, SDiv64R, SDiv32I, SDiv32R,
    Or64I, Or64R, Or32I, Or32R,
    And64I, And64R, And32I, And32R,
    Lsh64I, Lsh64R, Lsh32I, Lsh32R,
    Rsh64I, Rsh64R, Rsh32I, Rsh32R,
    Mod64I, Mod64R, Mod32I, Mod32R,
    SMod64I, SMod64R, SMod32I, SMod32R,
    Xor64I, Xor64R, Xor32I, Xor32R,
    Mov64I, Mov64R, Mov32I, Mov32R,
    Arsh64I, Arsh64R, Arsh32I, Arsh32R,
    Neg64, Neg32,
    MovSx64B, MovSx64H, MovSx64W, MovSx32B, MovSx32H,
    Le16, Le32, Be16, Be32, Be64,
    /// `le64` and other operations that leave every register as it is.
    Nop,
    /// `lddw`: `imm` is the 64-bit value; the second slot is skipped.
    Lddw,
    AbsB, AbsH, AbsW, IndB, IndH, IndW,
    /// Context field number `off`.
    Ctx,
    LdxB, LdxH, LdxW, LdxDw, LdxSxB, LdxSxH, LdxSxW,
    StB, StH, StW, StDw, StxB, StxH, StxW, StxDw,
    /// `imm` = [`AtomicOp`] index.
    AtomicW, AtomicDw,
    Ja,
    Jeq64I, Jeq64R, Jeq32I, Jeq32R,
    Jgt64I, Jgt64R, Jgt32I, Jgt32R,
    Jge64I, Jge64R, Jge32I, Jge32R,
    Jset64I, Jset64R, Jset32I, Jset32R,
    Jne64I, Jne64R, Jne32I, Jne32R,
    Jsgt64I, Jsgt64R, Jsgt32I, Jsgt32R,
    Jsge64I, Jsge64R, Jsge32I, Jsge32R,
    Jlt64I, Jlt64R, Jlt32I, Jlt32R,
    Jle64I, Jle64R, Jle32I, Jle32R,
    Jslt64I, Jslt64R, Jslt32I, Jslt32R,
    Jsle64I, Jsle64R, Jsle32I, Jsle32R,
    /// `imm` = index into the interpreter's resolved helpers.
    Call,
    /// Fused packet load + conditional jump on r0 (see [`fuse`]): `imm` = packet offset in
    /// the low half, the compared constant in the high half; `dst` = 1 inverts the test.
    AbsBEq, AbsHEq, AbsWEq, IndBEq, IndHEq, IndWEq,
    AbsBGe, AbsHGe, AbsWGe, IndBGe, IndHGe, IndWGe,
    AbsBSet, AbsHSet, AbsWSet, IndBSet, IndHSet, IndWSet,
    /// Fused `r0 = pkt[imm] (u8); w0 &= 0xf; w0 <<= 2; w<dst> = w0` (classic `ldxb 4*([k]&0xf)`).
    Msh,
    /// Fused `r0 = imm; exit`.
    Ret,
    Callx,
    CallLocal,
    Exit,
}

/// One pre-decoded slot: 16 bytes.
#[derive(Debug, Clone, Copy)]
struct Op {
    code: Code,
    dst: u8,
    src: u8,
    /// Memory offset, or absolute target of a jump/local call.
    off: i32,
    /// Immediate, sign-extended to 64 bits (`lddw`: the full value).
    imm: u64,
}

const ATOMIC_OPS: [AtomicOp; 10] = [
    AtomicOp::Add,
    AtomicOp::Or,
    AtomicOp::And,
    AtomicOp::Xor,
    AtomicOp::FetchAdd,
    AtomicOp::FetchOr,
    AtomicOp::FetchAnd,
    AtomicOp::FetchXor,
    AtomicOp::Xchg,
    AtomicOp::Cmpxchg,
];

/// Runs validated programs by interpretation.
#[derive(Debug, Clone)]
pub struct Interpreter {
    code: Box<[Op]>,
    /// Helpers named by `call imm`, in the order `Code::Call` indexes them.
    called: Box<[Helper]>,
    /// The whole table, for `callx`.
    helpers: Helpers,
    reach: StackReach,
    /// The accumulator form, for the Xdp programs it can run.
    acc: Option<accum::AccProgram>,
    /// The program's map arenas, the third memory region (kept alive by `helpers`).
    arenas: Box<[ArenaRef]>,
    /// Instructions a run may execute ([`STEP_LIMIT`] unless set).
    step_limit: u64,
}

/// One map arena a program may address: `[base, base + len)`.
#[derive(Debug, Clone, Copy)]
struct ArenaRef {
    base: u64,
    len: u64,
    writable: bool,
}

impl ArenaRef {
    fn of(maps: &MapTable) -> Box<[ArenaRef]> {
        maps.iter()
            .filter(|m| !m.arena().is_empty())
            .map(|m| ArenaRef { base: m.arena().base(), len: m.arena().len() as u64, writable: m.def().prog_writable() })
            .collect()
    }

    #[inline(always)]
    fn holds(&self, addr: u64, size: u64) -> bool {
        addr.wrapping_sub(self.base) <= self.len.wrapping_sub(size) && size <= self.len
    }
}

impl Interpreter {
    pub fn new(prog: &Program) -> Self {
        let acc = if prog.kind() == ProgKind::Xdp && !prog.helpers().needs_env() {
            accum::AccProgram::build(prog.insns())
        } else {
            None
        };
        Interpreter { acc, ..Self::general(prog) }
    }

    /// [`new`](Self::new) for a program the verifier accepted (`verified` must come from
    /// verifying `prog`): the stack is zeroed only where [`Verified::stack_reach`] says.
    pub fn verified(prog: &Program, verified: &Verified) -> Self {
        Interpreter { reach: verified.stack_reach(prog.insns()), ..Self::new(prog) }
    }

    /// An interpreter that always runs the general loop, the reference semantics (tests compare
    /// it with the accumulator loop [`new`](Self::new) may pick).
    pub fn general(prog: &Program) -> Self {
        let insns = prog.insns();
        let mut called: Vec<Helper> = Vec::new();
        let mut code = Vec::with_capacity(insns.len());
        for (pc, insn) in insns.iter().enumerate() {
            if let Some(addr) = prog.helpers().maps().lddw_value(insns, pc) {
                code.push(Op { code: Code::Lddw, dst: insn.dst, src: 0, off: 0, imm: addr });
                continue;
            }
            let op = match check::form(insn) {
                Ok(Form::Call) => {
                    // Validation guarantees the id exists; an unknown one would have been refused.
                    let h = u64::try_from(insn.imm).ok().and_then(|id| prog.helpers().get(id)).copied();
                    match h {
                        Some(h) => {
                            let idx = called.iter().position(|c| c.id == h.id).unwrap_or_else(|| {
                                called.push(h);
                                called.len() - 1
                            });
                            Op { code: Code::Call, dst: 0, src: 0, off: 0, imm: idx as u64 }
                        }
                        None => exit_op(),
                    }
                }
                Ok(f) => decode(insns, pc, insn, f),
                // The second slot of an lddw: never executed.
                Err(_) => exit_op(),
            };
            code.push(op);
        }
        fuse(insns, &mut code);
        callee_lengths(&mut code);
        Interpreter {
            code: code.into(),
            called: called.into(),
            helpers: prog.helpers().clone(),
            reach: check::stack_reach(insns),
            acc: None,
            arenas: ArenaRef::of(prog.helpers().maps()),
            step_limit: STEP_LIMIT,
        }
    }

    /// The same interpreter with a run budget of `limit` instructions instead of
    /// [`STEP_LIMIT`] (counted as the module docs say).
    pub fn with_step_limit(self, limit: u64) -> Self {
        Interpreter { step_limit: limit, ..self }
    }

    /// Instructions a run may execute before [`Fault::StepLimit`].
    pub fn step_limit(&self) -> u64 {
        self.step_limit
    }
}

/// Sets each local call's `imm` to its callee's length in slots, what the call charges to the
/// run's budget. Validation keeps every jump inside its function, so a function runs from its
/// start to the next function's start (or the end).
fn callee_lengths(code: &mut [Op]) {
    let mut starts: Vec<usize> = code.iter().filter(|o| o.code == Code::CallLocal).map(|o| o.off as usize).collect();
    starts.sort_unstable();
    starts.dedup();
    let end = code.len();
    for op in code.iter_mut().filter(|o| o.code == Code::CallLocal) {
        let start = op.off as usize;
        let next = starts.get(starts.partition_point(|&s| s <= start)).copied().unwrap_or(end);
        op.imm = next.saturating_sub(start) as u64;
    }
}

/// Replaces the first op of a few hot sequences (what classic filters translate to) with one
/// fused op, so a filter dispatches about half as often. The fused op sits in the first slot
/// and continues after the last; the other slots keep their own ops, so jumps into the middle
/// of a sequence still work. Only sequences whose inner instructions cannot fault are fused.
fn fuse(insns: &[Insn], code: &mut [Op]) {
    let form_at = |pc: usize| insns.get(pc).and_then(|i| check::form(i).ok());
    for pc in 0..insns.len() {
        let (i, next) = (insns[pc], insns.get(pc + 1).copied().unwrap_or_default());
        match form_at(pc) {
            Some(Form::LdPacket { size, indirect }) => {
                if let Some((test, c, invert)) = form_at(pc + 1).and_then(|f| r0_test(&next, f)) {
                    use Code::*;
                    let codes = match test {
                        Test::Eq => [AbsBEq, AbsHEq, AbsWEq, IndBEq, IndHEq, IndWEq],
                        Test::Ge => [AbsBGe, AbsHGe, AbsWGe, IndBGe, IndHGe, IndWGe],
                        Test::Set => [AbsBSet, AbsHSet, AbsWSet, IndBSet, IndHSet, IndWSet],
                    };
                    let which = (indirect as usize) * 3 + (size.trailing_zeros() as usize).min(2);
                    code[pc] = Op {
                        code: codes[which],
                        dst: invert as u8,
                        src: i.src,
                        off: (pc as i64 + 2 + next.off as i64) as i32,
                        imm: i.imm as u32 as u64 | (c as u64) << 32,
                    };
                    continue;
                }
                let msh = [Insn::new(CLASS_ALU | ALU_AND, 0, 0, 0, 0xf), Insn::new(CLASS_ALU | ALU_LSH, 0, 0, 0, 2)];
                let x = insns.get(pc + 3).copied().unwrap_or_default();
                if !indirect
                    && size == 1
                    && insns.get(pc + 1..pc + 3) == Some(&msh[..])
                    && x.op == CLASS_ALU | ALU_MOV | SRC_X
                    && x.src == 0
                    && x.off == 0
                {
                    code[pc] = Op { code: Code::Msh, dst: x.dst, src: 0, off: 0, imm: i.imm as u32 as u64 };
                }
            }
            Some(Form::Alu { op: AluOp::Mov, src: Operand::Imm, wide }) if i.dst == 0 && next.is_exit() => {
                let imm = if wide { i.imm as i64 as u64 } else { i.imm as u32 as u64 };
                code[pc] = Op { code: Code::Ret, dst: 0, src: 0, off: 0, imm };
            }
            _ => {}
        }
    }
}

/// How a fused op tests the loaded value `v` against its constant `c`.
enum Test {
    /// `v == c`
    Eq,
    /// `v >= c`
    Ge,
    /// `v & c != 0`
    Set,
}

/// A conditional jump on r0 against an immediate, as a [`Test`] of the 32-bit value r0 holds
/// after a packet load, its constant, and whether the jump is taken when the test fails.
/// `None` for jumps that test anything else.
fn r0_test(j: &Insn, f: Form) -> Option<(Test, u32, bool)> {
    let Form::Jump { wide, cond, src: Operand::Imm } = f else { return None };
    // After a packet load r0 < 2^32, so a 64-bit test against a non-negative immediate is
    // the same test on 32 bits; a negative one (sign-extended) is not fused.
    if j.dst != 0 || (wide && j.imm < 0) {
        return None;
    }
    let k = j.imm as u32;
    Some(match cond {
        Cond::Eq => (Test::Eq, k, false),
        Cond::Ne => (Test::Eq, k, true),
        Cond::Ge => (Test::Ge, k, false),
        Cond::Lt => (Test::Ge, k, true),
        // v > k is v >= k + 1, except that nothing is above u32::MAX (not fused).
        Cond::Gt => (Test::Ge, k.checked_add(1)?, false),
        Cond::Le => (Test::Ge, k.checked_add(1)?, true),
        Cond::Set => (Test::Set, k, false),
        _ => return None,
    })
}

fn exit_op() -> Op {
    Op { code: Code::Exit, dst: 0, src: 0, off: 0, imm: 0 }
}

fn decode(insns: &[Insn], pc: usize, insn: &Insn, f: Form) -> Op {
    use Code::*;
    let imm = insn.imm as i64 as u64;
    let target = (pc as i64 + 1 + insn.jump_offset()) as i32;
    let mut op = Op { code: Exit, dst: insn.dst, src: insn.src, off: insn.off as i32, imm };
    op.code = match f {
        Form::Alu { wide, op: a, src } => {
            let four = |c: [Code; 4]| c[(!wide as usize) * 2 + (src == Operand::Reg) as usize];
            match a {
                AluOp::Add => four([Add64I, Add64R, Add32I, Add32R]),
                AluOp::Sub => four([Sub64I, Sub64R, Sub32I, Sub32R]),
                AluOp::Mul => four([Mul64I, Mul64R, Mul32I, Mul32R]),
                AluOp::Div => four([Div64I, Div64R, Div32I, Div32R]),
                AluOp::SDiv => four([SDiv64I, SDiv64R, SDiv32I, SDiv32R]),
                AluOp::Or => four([Or64I, Or64R, Or32I, Or32R]),
                AluOp::And => four([And64I, And64R, And32I, And32R]),
                AluOp::Lsh => four([Lsh64I, Lsh64R, Lsh32I, Lsh32R]),
                AluOp::Rsh => four([Rsh64I, Rsh64R, Rsh32I, Rsh32R]),
                AluOp::Mod => four([Mod64I, Mod64R, Mod32I, Mod32R]),
                AluOp::SMod => four([SMod64I, SMod64R, SMod32I, SMod32R]),
                AluOp::Xor => four([Xor64I, Xor64R, Xor32I, Xor32R]),
                AluOp::Mov => four([Mov64I, Mov64R, Mov32I, Mov32R]),
                AluOp::Arsh => four([Arsh64I, Arsh64R, Arsh32I, Arsh32R]),
                AluOp::Neg if wide => Neg64,
                AluOp::Neg => Neg32,
                AluOp::MovSx(8) if wide => MovSx64B,
                AluOp::MovSx(16) if wide => MovSx64H,
                AluOp::MovSx(_) if wide => MovSx64W,
                AluOp::MovSx(8) => MovSx32B,
                AluOp::MovSx(_) => MovSx32H,
            }
        }
        Form::End { op: e, bits } => match (e, bits) {
            (EndOp::Le, 16) => Le16,
            (EndOp::Le, 32) => Le32,
            (EndOp::Le, _) => Nop,
            (_, 16) => Be16,
            (_, 32) => Be32,
            _ => Be64,
        },
        Form::Lddw => {
            op.imm = lddw_imm(insns, pc);
            Lddw
        }
        Form::LdPacket { size, indirect } => {
            // Packet offsets are unsigned 32-bit, as in classic BPF.
            op.imm = insn.imm as u32 as u64;
            match (indirect, size) {
                (false, 1) => AbsB,
                (false, 2) => AbsH,
                (false, _) => AbsW,
                (true, 1) => IndB,
                (true, 2) => IndH,
                (true, _) => IndW,
            }
        }
        Form::LdCtx(field) => {
            op.off = field as i32;
            Ctx
        }
        Form::Ldx { size, signed } => match (signed, size) {
            (false, 1) => LdxB,
            (false, 2) => LdxH,
            (false, 4) => LdxW,
            (false, _) => LdxDw,
            (true, 1) => LdxSxB,
            (true, 2) => LdxSxH,
            (true, _) => LdxSxW,
        },
        Form::St { size } => [StB, StH, StW, StDw][size.trailing_zeros() as usize & 3],
        Form::Stx { size } => [StxB, StxH, StxW, StxDw][size.trailing_zeros() as usize & 3],
        Form::Atomic { wide, op: a } => {
            op.imm = ATOMIC_OPS.iter().position(|&x| x == a).unwrap_or(0) as u64;
            if wide { AtomicDw } else { AtomicW }
        }
        Form::Ja | Form::Ja32 => {
            op.off = target;
            Ja
        }
        Form::Jump { wide, cond, src } => {
            op.off = target;
            let four = |c: [Code; 4]| c[(!wide as usize) * 2 + (src == Operand::Reg) as usize];
            match cond {
                Cond::Eq => four([Jeq64I, Jeq64R, Jeq32I, Jeq32R]),
                Cond::Gt => four([Jgt64I, Jgt64R, Jgt32I, Jgt32R]),
                Cond::Ge => four([Jge64I, Jge64R, Jge32I, Jge32R]),
                Cond::Set => four([Jset64I, Jset64R, Jset32I, Jset32R]),
                Cond::Ne => four([Jne64I, Jne64R, Jne32I, Jne32R]),
                Cond::Sgt => four([Jsgt64I, Jsgt64R, Jsgt32I, Jsgt32R]),
                Cond::Sge => four([Jsge64I, Jsge64R, Jsge32I, Jsge32R]),
                Cond::Lt => four([Jlt64I, Jlt64R, Jlt32I, Jlt32R]),
                Cond::Le => four([Jle64I, Jle64R, Jle32I, Jle32R]),
                Cond::Slt => four([Jslt64I, Jslt64R, Jslt32I, Jslt32R]),
                Cond::Sle => four([Jsle64I, Jsle64R, Jsle32I, Jsle32R]),
            }
        }
        Form::CallLocal => {
            op.off = (pc as i64 + 1 + insn.imm as i64) as i32;
            CallLocal
        }
        Form::Callx => Callx,
        // Refused by validation; kept total so decoding cannot panic.
        Form::Call | Form::CallKfunc | Form::Exit => Exit,
    };
    op
}

/// A saved caller frame.
#[derive(Debug, Clone, Copy)]
struct Frame {
    ret: usize,
    saved: [u64; 4],
}

impl Frame {
    const ZERO: Frame = Frame { ret: 0, saved: [0; 4] };
}

/// Per-thread run state reused across runs, so a run allocates nothing.
struct Scratch {
    stack: [u8; STACK_AREA],
    frames: [Frame; MAX_CALL_DEPTH],
}

impl Scratch {
    const fn new() -> Self {
        Scratch { stack: [0; STACK_AREA], frames: [Frame::ZERO; MAX_CALL_DEPTH] }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch::new()) };
}

/// The memory a run may touch.
struct Mem<'a> {
    data: &'a mut [u8],
    data_base: u64,
    stack: &'a mut [u8],
    stack_base: u64,
    frames: &'a mut [Frame],
    /// A copy: `xdp_adjust_head/tail` move its packet pointers during the run.
    ctx: XdpContext,
    arenas: &'a [ArenaRef],
}

#[inline(always)]
fn window<const N: usize>(m: &[u8], base: u64, addr: u64) -> Option<[u8; N]> {
    let off = usize::try_from(addr.wrapping_sub(base)).ok()?;
    m.get(off..)?.first_chunk::<N>().copied()
}

#[inline(always)]
fn window_mut<const N: usize>(m: &mut [u8], base: u64, addr: u64) -> Option<&mut [u8; N]> {
    let off = usize::try_from(addr.wrapping_sub(base)).ok()?;
    m.get_mut(off..)?.first_chunk_mut::<N>()
}

impl Mem<'_> {
    #[inline(always)]
    fn load<const N: usize>(&self, addr: u64) -> Option<[u8; N]> {
        window(self.data, self.data_base, addr)
            .or_else(|| window(self.stack, self.stack_base, addr))
            .or_else(|| self.arena_load(addr))
    }

    /// The arena holding `[addr, addr + n)`, if any (and writable, when `write`).
    #[inline(always)]
    fn arena(&self, addr: u64, n: u64, write: bool) -> Option<&ArenaRef> {
        self.arenas.iter().find(|a| a.holds(addr, n) && (a.writable || !write))
    }

    #[inline(never)]
    fn arena_load<const N: usize>(&self, addr: u64) -> Option<[u8; N]> {
        self.arena(addr, N as u64, false)?;
        // SAFETY: the N bytes lie inside a live map arena (checked above; the interpreter's
        // `helpers` keeps the maps alive). Other threads may write them concurrently, which
        // only tears the value (see `maps::Arena`).
        Some(unsafe { std::ptr::read_unaligned(addr as *const [u8; N]) })
    }

    /// Stores into a writable map arena; false if `[addr, addr + N)` is not in one.
    #[inline(never)]
    fn arena_store<const N: usize>(&self, addr: u64, v: [u8; N]) -> bool {
        if self.arena(addr, N as u64, true).is_none() {
            return false;
        }
        // SAFETY: inside a live, program-writable map arena (checked above); see `arena_load`.
        unsafe { std::ptr::write_unaligned(addr as *mut [u8; N], v) };
        true
    }

    #[inline(always)]
    fn place<const N: usize>(&mut self, addr: u64) -> Option<&mut [u8; N]> {
        let in_data = usize::try_from(addr.wrapping_sub(self.data_base)).is_ok_and(|o| o < self.data.len());
        if in_data {
            window_mut(self.data, self.data_base, addr)
        } else {
            window_mut(self.stack, self.stack_base, addr)
        }
    }

    /// Big-endian packet bytes at `off` (ld_abs/ld_ind).
    #[inline(always)]
    fn packet<const N: usize>(&self, off: u64) -> Option<[u8; N]> {
        window(self.data, 0, off)
    }
}

fn oob(pc: usize, addr: u64, size: u8, write: bool) -> Fault {
    Fault::OutOfBounds { pc, addr, size, write }
}

#[inline(always)]
fn div64(a: u64, b: u64) -> u64 {
    a.checked_div(b).unwrap_or(0)
}
#[inline(always)]
fn div32(a: u32, b: u32) -> u32 {
    a.checked_div(b).unwrap_or(0)
}
#[inline(always)]
fn mod64(a: u64, b: u64) -> u64 {
    a.checked_rem(b).unwrap_or(a)
}
#[inline(always)]
fn mod32(a: u32, b: u32) -> u32 {
    a.checked_rem(b).unwrap_or(a)
}
#[inline(always)]
fn sdiv64(a: u64, b: u64) -> u64 {
    if b == 0 { 0 } else { (a as i64).wrapping_div(b as i64) as u64 }
}
#[inline(always)]
fn sdiv32(a: u32, b: u32) -> u32 {
    if b == 0 { 0 } else { (a as i32).wrapping_div(b as i32) as u32 }
}
#[inline(always)]
fn smod64(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { (a as i64).wrapping_rem(b as i64) as u64 }
}
#[inline(always)]
fn smod32(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { (a as i32).wrapping_rem(b as i32) as u32 }
}

/// Applies an atomic read-modify-write to `cell` (W or DW), updating `src` / `r0` as the
/// operation demands. `T` is the cell's width.
macro_rules! atomic {
    ($t:ty, $cell:expr, $op:expr, $regs:ident, $s:expr) => {{
        let src = $s;
        let cell = $cell;
        let old = <$t>::from_le_bytes(*cell);
        let v = $regs[src] as $t;
        let new = match $op {
            AtomicOp::Add | AtomicOp::FetchAdd => old.wrapping_add(v),
            AtomicOp::Or | AtomicOp::FetchOr => old | v,
            AtomicOp::And | AtomicOp::FetchAnd => old & v,
            AtomicOp::Xor | AtomicOp::FetchXor => old ^ v,
            AtomicOp::Xchg => v,
            AtomicOp::Cmpxchg => {
                if old == $regs[0] as $t {
                    v
                } else {
                    old
                }
            }
        };
        *cell = new.to_le_bytes();
        if $op == AtomicOp::Cmpxchg {
            $regs[0] = old as u64;
        } else if $op.fetches() {
            $regs[src] = old as u64;
        }
    }};
}

/// Defines `$name`, an atomic of width `$t` on map memory (checked by the caller to be inside
/// a writable arena): a real atomic when aligned, since other workers update the same values;
/// otherwise a plain read-modify-write, as the JIT does.
macro_rules! arena_atomic {
    ($name:ident, $t:ty, $atomic:ty) => {
        fn $name(addr: u64, a: AtomicOp, r: &mut [u64; 16], src: usize) {
            use std::sync::atomic::Ordering::SeqCst;
            const N: usize = std::mem::size_of::<$t>();
            if !addr.is_multiple_of(N as u64) {
                // SAFETY: inside a live writable arena (caller's check); unaligned access is
                // explicit.
                let mut cell = unsafe { std::ptr::read_unaligned(addr as *const [u8; N]) };
                atomic!($t, &mut cell, a, r, src);
                // SAFETY: as above.
                unsafe { std::ptr::write_unaligned(addr as *mut [u8; N], cell) };
                return;
            }
            // SAFETY: aligned, inside a live arena that outlives this call; every other access
            // to these bytes is atomic or a racy byte copy (see `maps::Arena`).
            let cell = unsafe { <$atomic>::from_ptr(addr as *mut $t) };
            let v = r[src] as $t;
            let old = match a {
                AtomicOp::Add | AtomicOp::FetchAdd => cell.fetch_add(v, SeqCst),
                AtomicOp::Or | AtomicOp::FetchOr => cell.fetch_or(v, SeqCst),
                AtomicOp::And | AtomicOp::FetchAnd => cell.fetch_and(v, SeqCst),
                AtomicOp::Xor | AtomicOp::FetchXor => cell.fetch_xor(v, SeqCst),
                AtomicOp::Xchg => cell.swap(v, SeqCst),
                AtomicOp::Cmpxchg => cell.compare_exchange(r[0] as $t, v, SeqCst, SeqCst).unwrap_or_else(|x| x),
            };
            if a == AtomicOp::Cmpxchg {
                r[0] = old as u64;
            } else if a.fetches() {
                r[src] = old as u64;
            }
        }
    };
}

arena_atomic!(arena_atomic32, u32, std::sync::atomic::AtomicU32);
arena_atomic!(arena_atomic64, u64, std::sync::atomic::AtomicU64);

impl Interpreter {
    /// Runs with `data` as the memory (Raw) or packet (Xdp) region and `r1` as given.
    #[inline(always)]
    fn execute(&self, data: &mut [u8], r1: u64, r2: u64, ctx: &XdpContext) -> Result<u64, Fault> {
        if self.reach == StackReach::None {
            let (base, len) = (data.as_ptr() as u64, data.len());
            let arenas = &self.arenas;
            let mut mem =
                Mem { data_base: base, data, stack: &mut [], stack_base: 0, frames: &mut [], ctx: *ctx, arenas };
            if self.helpers.needs_env() {
                return helpers::enter(&self.helpers, base, len, StackArea::None, || self.run(&mut mem, r1, r2, 0));
            }
            return self.run(&mut mem, r1, r2, 0);
        }
        self.execute_with_stack(data, r1, r2, ctx)
    }

    /// [`execute`](Self::execute) for programs that use the stack: borrows this thread's
    /// scratch area and zeroes what the program can reach. Kept out of line so the hot
    /// stack-free path stays small.
    #[inline(never)]
    fn execute_with_stack(&self, data: &mut [u8], r1: u64, r2: u64, ctx: &XdpContext) -> Result<u64, Fault> {
        let mut go = |s: &mut Scratch| {
            let (lo, hi) = match self.reach {
                StackReach::Frame { lo, hi } => ((STACK_AREA as i64 + lo) as usize, (STACK_AREA as i64 + hi) as usize),
                _ => (0, STACK_AREA),
            };
            if let Some(reached) = s.stack.get_mut(lo..hi) {
                reached.fill(0);
            }
            let stack_base = s.stack.as_ptr() as u64;
            let (base, len) = (data.as_ptr() as u64, data.len());
            let mut mem = Mem {
                data_base: base,
                data: &mut *data,
                stack: &mut s.stack,
                stack_base,
                frames: &mut s.frames,
                ctx: *ctx,
                arenas: &self.arenas,
            };
            let top = stack_base + STACK_AREA as u64;
            if self.helpers.needs_env() {
                let area = StackArea::Area { lo: stack_base, hi: top };
                return helpers::enter(&self.helpers, base, len, area, || self.run(&mut mem, r1, r2, top));
            }
            self.run(&mut mem, r1, r2, top)
        };
        let shared = SCRATCH.try_with(|cell| cell.try_borrow_mut().ok().map(|mut s| go(&mut s)));
        match shared {
            Ok(Some(result)) => result,
            // A helper running a filter on this thread, or thread teardown: use a private area.
            _ => go(&mut Box::new(Scratch::new())),
        }
    }

    #[inline(always)]
    fn run(&self, mem: &mut Mem<'_>, r1: u64, r2: u64, r10: u64) -> Result<u64, Fault> {
        use Code::*;
        // Sixteen entries so that `x & 15` indexes without a bounds check; validation keeps
        // every register number below 11.
        let mut r = [0u64; 16];
        r[1] = r1;
        r[2] = r2;
        r[10] = r10;
        let code = &*self.code;
        let mut depth = 0usize;
        let mut pc = 0usize;
        // What is left of the budget; only back-edges and local calls charge it.
        let mut budget = self.step_limit;
        loop {
            let op = &code[pc];
            let here = pc;
            pc += 1;
            // `d!()` / `s!()` are the dst / src registers. Fields are read inside the arms that
            // need them, so a dispatch loads only those (reading them up front costs ~10%).
            macro_rules! d {
                () => {
                    r[(op.dst & 15) as usize]
                };
            }
            macro_rules! s {
                () => {
                    r[(op.src & 15) as usize]
                };
            }
            // Charges `$cost` instructions to the budget for the jump or call at `$at`, ending the
            // run when the budget is spent.
            macro_rules! charge {
                ($cost:expr, $at:expr) => {
                    match budget.checked_sub($cost as u64) {
                        Some(left) => budget = left,
                        None => return Err(Fault::StepLimit { pc: $at, limit: self.step_limit }),
                    }
                };
            }
            // A taken jump from slot `$from`: a backward one charges what it jumps back over.
            macro_rules! goto {
                ($from:expr) => {{
                    pc = op.off as usize;
                    if pc <= $from {
                        charge!($from + 1 - pc, $from);
                    }
                }};
            }
            macro_rules! jump {
                ($cond:expr) => {
                    if $cond {
                        goto!(here);
                    }
                };
            }
            macro_rules! ldx {
                ($n:literal, $conv:expr) => {{
                    let addr_s = s!().wrapping_add(op.off as i64 as u64);
                    match mem.load::<$n>(addr_s) {
                        Some(b) => d!() = $conv(b),
                        None => return Err(oob(here, addr_s, $n, false)),
                    }
                }};
            }
            macro_rules! store {
                ($n:literal, $v:expr) => {{
                    let addr_d = d!().wrapping_add(op.off as i64 as u64);
                    let v = $v;
                    if let Some(cell) = mem.place::<$n>(addr_d) {
                        *cell = v;
                    } else if !mem.arena_store::<$n>(addr_d, v) {
                        return Err(oob(here, addr_d, $n, true));
                    }
                }};
            }
            macro_rules! fused {
                ($off:expr, $n:literal, $conv:expr, $test:expr) => {{
                    let Some(b) = mem.packet::<$n>($off) else { return Ok(0) };
                    let v: u32 = $conv(b);
                    r[0] = v as u64;
                    if $test(v, (op.imm >> 32) as u32) != (op.dst != 0) {
                        // The jump is the sequence's second instruction.
                        goto!(here + 1);
                    } else {
                        pc += 1;
                    }
                }};
            }
            // An atomic of `$n` bytes through dst: stack or packet bytes in place, map memory
            // through `$arena`.
            macro_rules! atomic_op {
                ($n:literal, $t:ty, $arena:ident) => {{
                    let addr_d = d!().wrapping_add(op.off as i64 as u64);
                    let a = ATOMIC_OPS[op.imm as usize % ATOMIC_OPS.len()];
                    if let Some(cell) = mem.place::<$n>(addr_d) {
                        atomic!($t, cell, a, r, (op.src & 15) as usize);
                    } else if mem.arena(addr_d, $n, true).is_some() {
                        $arena(addr_d, a, &mut r, (op.src & 15) as usize);
                    } else {
                        return Err(oob(here, addr_d, $n, true));
                    }
                }};
            }
            macro_rules! abs {
                ($n:literal, $t:ty, $off:expr) => {
                    match mem.packet::<$n>($off) {
                        Some(b) => r[0] = <$t>::from_be_bytes(b) as u64,
                        None => return Ok(0),
                    }
                };
            }

            match op.code {
                Add64I => d!() = d!().wrapping_add(op.imm),
                Add64R => d!() = d!().wrapping_add(s!()),
                Add32I => d!() = (d!() as u32).wrapping_add(op.imm as u32) as u64,
                Add32R => d!() = (d!() as u32).wrapping_add(s!() as u32) as u64,
                Sub64I => d!() = d!().wrapping_sub(op.imm),
                Sub64R => d!() = d!().wrapping_sub(s!()),
                Sub32I => d!() = (d!() as u32).wrapping_sub(op.imm as u32) as u64,
                Sub32R => d!() = (d!() as u32).wrapping_sub(s!() as u32) as u64,
                Mul64I => d!() = d!().wrapping_mul(op.imm),
                Mul64R => d!() = d!().wrapping_mul(s!()),
                Mul32I => d!() = (d!() as u32).wrapping_mul(op.imm as u32) as u64,
                Mul32R => d!() = (d!() as u32).wrapping_mul(s!() as u32) as u64,
                Div64I => d!() = div64(d!(), op.imm),
                Div64R => d!() = div64(d!(), s!()),
                Div32I => d!() = div32(d!() as u32, op.imm as u32) as u64,
                Div32R => d!() = div32(d!() as u32, s!() as u32) as u64,
                SDiv64I => d!() = sdiv64(d!(), op.imm),
                SDiv64R => d!() = sdiv64(d!(), s!()),
                SDiv32I => d!() = sdiv32(d!() as u32, op.imm as u32) as u64,
                SDiv32R => d!() = sdiv32(d!() as u32, s!() as u32) as u64,
                Or64I => d!() |= op.imm,
                Or64R => d!() |= s!(),
                Or32I => d!() = (d!() as u32 | (op.imm as u32)) as u64,
                Or32R => d!() = (d!() as u32 | s!() as u32) as u64,
                And64I => d!() &= op.imm,
                And64R => d!() &= s!(),
                And32I => d!() = (d!() as u32 & (op.imm as u32)) as u64,
                And32R => d!() = (d!() as u32 & s!() as u32) as u64,
                // wrapping_shl/shr mask the count to the width, exactly the RFC's & 63 / & 31.
                Lsh64I => d!() = d!().wrapping_shl(op.imm as u32),
                Lsh64R => d!() = d!().wrapping_shl(s!() as u32),
                Lsh32I => d!() = (d!() as u32).wrapping_shl(op.imm as u32) as u64,
                Lsh32R => d!() = (d!() as u32).wrapping_shl(s!() as u32) as u64,
                Rsh64I => d!() = d!().wrapping_shr(op.imm as u32),
                Rsh64R => d!() = d!().wrapping_shr(s!() as u32),
                Rsh32I => d!() = (d!() as u32).wrapping_shr(op.imm as u32) as u64,
                Rsh32R => d!() = (d!() as u32).wrapping_shr(s!() as u32) as u64,
                Mod64I => d!() = mod64(d!(), op.imm),
                Mod64R => d!() = mod64(d!(), s!()),
                Mod32I => d!() = mod32(d!() as u32, op.imm as u32) as u64,
                Mod32R => d!() = mod32(d!() as u32, s!() as u32) as u64,
                SMod64I => d!() = smod64(d!(), op.imm),
                SMod64R => d!() = smod64(d!(), s!()),
                SMod32I => d!() = smod32(d!() as u32, op.imm as u32) as u64,
                SMod32R => d!() = smod32(d!() as u32, s!() as u32) as u64,
                Xor64I => d!() ^= op.imm,
                Xor64R => d!() ^= s!(),
                Xor32I => d!() = (d!() as u32 ^ (op.imm as u32)) as u64,
                Xor32R => d!() = (d!() as u32 ^ s!() as u32) as u64,
                Mov64I => d!() = op.imm,
                Mov64R => d!() = s!(),
                Mov32I => d!() = (op.imm as u32) as u64,
                Mov32R => d!() = s!() as u32 as u64,
                Arsh64I => d!() = (d!() as i64).wrapping_shr(op.imm as u32) as u64,
                Arsh64R => d!() = (d!() as i64).wrapping_shr(s!() as u32) as u64,
                Arsh32I => d!() = (d!() as i32).wrapping_shr(op.imm as u32) as u32 as u64,
                Arsh32R => d!() = (d!() as i32).wrapping_shr(s!() as u32) as u32 as u64,
                Neg64 => d!() = d!().wrapping_neg(),
                Neg32 => d!() = (d!() as u32).wrapping_neg() as u64,
                MovSx64B => d!() = s!() as i8 as i64 as u64,
                MovSx64H => d!() = s!() as i16 as i64 as u64,
                MovSx64W => d!() = s!() as i32 as i64 as u64,
                MovSx32B => d!() = s!() as i8 as i32 as u32 as u64,
                MovSx32H => d!() = s!() as i16 as i32 as u32 as u64,
                Le16 => d!() = d!() as u16 as u64,
                Le32 => d!() = d!() as u32 as u64,
                Be16 => d!() = (d!() as u16).swap_bytes() as u64,
                Be32 => d!() = (d!() as u32).swap_bytes() as u64,
                Be64 => d!() = d!().swap_bytes(),
                Nop => {}
                Lddw => {
                    d!() = op.imm;
                    pc += 1;
                }
                AbsB => abs!(1, u8, op.imm),
                AbsH => abs!(2, u16, op.imm),
                AbsW => abs!(4, u32, op.imm),
                IndB => abs!(1, u8, op.imm + s!() as u32 as u64),
                IndH => abs!(2, u16, op.imm + s!() as u32 as u64),
                IndW => abs!(4, u32, op.imm + s!() as u32 as u64),
                Ctx => d!() = ctx_field(&mem.ctx, op.off),
                LdxB => ldx!(1, |b: [u8; 1]| b[0] as u64),
                LdxH => ldx!(2, |b| u16::from_le_bytes(b) as u64),
                LdxW => ldx!(4, |b| u32::from_le_bytes(b) as u64),
                LdxDw => ldx!(8, u64::from_le_bytes),
                LdxSxB => ldx!(1, |b: [u8; 1]| b[0] as i8 as i64 as u64),
                LdxSxH => ldx!(2, |b| i16::from_le_bytes(b) as i64 as u64),
                LdxSxW => ldx!(4, |b| i32::from_le_bytes(b) as i64 as u64),
                StB => store!(1, [op.imm as u8]),
                StH => store!(2, (op.imm as u16).to_le_bytes()),
                StW => store!(4, (op.imm as u32).to_le_bytes()),
                StDw => store!(8, op.imm.to_le_bytes()),
                StxB => store!(1, [s!() as u8]),
                StxH => store!(2, (s!() as u16).to_le_bytes()),
                StxW => store!(4, (s!() as u32).to_le_bytes()),
                StxDw => store!(8, s!().to_le_bytes()),
                AtomicW => atomic_op!(4, u32, arena_atomic32),
                AtomicDw => atomic_op!(8, u64, arena_atomic64),
                Ja => goto!(here),
                Jeq64I => jump!(d!() == op.imm),
                Jeq64R => jump!(d!() == s!()),
                Jeq32I => jump!(d!() as u32 == (op.imm as u32)),
                Jeq32R => jump!(d!() as u32 == s!() as u32),
                Jgt64I => jump!(d!() > op.imm),
                Jgt64R => jump!(d!() > s!()),
                Jgt32I => jump!(d!() as u32 > (op.imm as u32)),
                Jgt32R => jump!(d!() as u32 > s!() as u32),
                Jge64I => jump!(d!() >= op.imm),
                Jge64R => jump!(d!() >= s!()),
                Jge32I => jump!(d!() as u32 >= (op.imm as u32)),
                Jge32R => jump!(d!() as u32 >= s!() as u32),
                Jset64I => jump!(d!() & op.imm != 0),
                Jset64R => jump!(d!() & s!() != 0),
                Jset32I => jump!(d!() as u32 & (op.imm as u32) != 0),
                Jset32R => jump!(d!() as u32 & s!() as u32 != 0),
                Jne64I => jump!(d!() != op.imm),
                Jne64R => jump!(d!() != s!()),
                Jne32I => jump!(d!() as u32 != (op.imm as u32)),
                Jne32R => jump!(d!() as u32 != s!() as u32),
                Jsgt64I => jump!(d!() as i64 > op.imm as i64),
                Jsgt64R => jump!(d!() as i64 > s!() as i64),
                Jsgt32I => jump!(d!() as i32 > (op.imm as u32) as i32),
                Jsgt32R => jump!(d!() as i32 > s!() as i32),
                Jsge64I => jump!(d!() as i64 >= op.imm as i64),
                Jsge64R => jump!(d!() as i64 >= s!() as i64),
                Jsge32I => jump!(d!() as i32 >= (op.imm as u32) as i32),
                Jsge32R => jump!(d!() as i32 >= s!() as i32),
                Jlt64I => jump!(d!() < op.imm),
                Jlt64R => jump!(d!() < s!()),
                Jlt32I => jump!((d!() as u32) < (op.imm as u32)),
                Jlt32R => jump!((d!() as u32) < s!() as u32),
                Jle64I => jump!(d!() <= op.imm),
                Jle64R => jump!(d!() <= s!()),
                Jle32I => jump!(d!() as u32 <= (op.imm as u32)),
                Jle32R => jump!(d!() as u32 <= s!() as u32),
                Jslt64I => jump!((d!() as i64) < op.imm as i64),
                Jslt64R => jump!((d!() as i64) < s!() as i64),
                Jslt32I => jump!((d!() as i32) < (op.imm as u32) as i32),
                Jslt32R => jump!((d!() as i32) < s!() as i32),
                Jsle64I => jump!(d!() as i64 <= op.imm as i64),
                Jsle64R => jump!(d!() as i64 <= s!() as i64),
                Jsle32I => jump!(d!() as i32 <= (op.imm as u32) as i32),
                Jsle32R => jump!(d!() as i32 <= s!() as i32),
                Call => {
                    let Some(h) = self.called.get(op.imm as usize) else {
                        return Err(Fault::UnknownHelper { pc: here, id: op.imm });
                    };
                    if let Some(v) = call(h, &r) {
                        r[0] = v;
                    } else {
                        return Ok(0);
                    }
                    if (h.id == ADJUST_HEAD || h.id == ADJUST_TAIL)
                        && let Some((data, end)) = helpers::packet_bounds()
                    {
                        (mem.ctx.data, mem.ctx.data_end, mem.ctx.data_meta) = (data, end, data);
                    }
                }
                Callx => {
                    let Some(h) = self.helpers.get(d!()) else {
                        return Err(Fault::UnknownHelper { pc: here, id: d!() });
                    };
                    if let Some(v) = call(h, &r) {
                        r[0] = v;
                    } else {
                        return Ok(0);
                    }
                }
                CallLocal => {
                    let Some(frame) = mem.frames.get_mut(depth).filter(|_| depth + 1 < MAX_CALL_DEPTH) else {
                        return Err(Fault::CallDepth { pc: here });
                    };
                    charge!(op.imm, here);
                    *frame = Frame { ret: pc, saved: [r[6], r[7], r[8], r[9]] };
                    depth += 1;
                    r[10] = r[10].wrapping_sub(STACK_SIZE as u64);
                    pc = op.off as usize;
                }
                AbsBEq => fused!(op.imm as u32 as u64, 1, |b: [u8; 1]| b[0] as u32, |v: u32, c: u32| v == c),
                AbsHEq => fused!(op.imm as u32 as u64, 2, |b| u16::from_be_bytes(b) as u32, |v: u32, c: u32| v == c),
                AbsWEq => fused!(op.imm as u32 as u64, 4, u32::from_be_bytes, |v: u32, c: u32| v == c),
                IndBEq => {
                    fused!(op.imm as u32 as u64 + s!() as u32 as u64, 1, |b: [u8; 1]| b[0] as u32, |v: u32, c: u32| v
                        == c)
                }
                IndHEq => fused!(
                    op.imm as u32 as u64 + s!() as u32 as u64,
                    2,
                    |b| u16::from_be_bytes(b) as u32,
                    |v: u32, c: u32| v == c
                ),
                IndWEq => {
                    fused!(op.imm as u32 as u64 + s!() as u32 as u64, 4, u32::from_be_bytes, |v: u32, c: u32| v == c)
                }
                AbsBGe => fused!(op.imm as u32 as u64, 1, |b: [u8; 1]| b[0] as u32, |v: u32, c: u32| v >= c),
                AbsHGe => fused!(op.imm as u32 as u64, 2, |b| u16::from_be_bytes(b) as u32, |v: u32, c: u32| v >= c),
                AbsWGe => fused!(op.imm as u32 as u64, 4, u32::from_be_bytes, |v: u32, c: u32| v >= c),
                IndBGe => {
                    fused!(op.imm as u32 as u64 + s!() as u32 as u64, 1, |b: [u8; 1]| b[0] as u32, |v: u32, c: u32| v
                        >= c)
                }
                IndHGe => fused!(
                    op.imm as u32 as u64 + s!() as u32 as u64,
                    2,
                    |b| u16::from_be_bytes(b) as u32,
                    |v: u32, c: u32| v >= c
                ),
                IndWGe => {
                    fused!(op.imm as u32 as u64 + s!() as u32 as u64, 4, u32::from_be_bytes, |v: u32, c: u32| v >= c)
                }
                AbsBSet => fused!(op.imm as u32 as u64, 1, |b: [u8; 1]| b[0] as u32, |v: u32, c: u32| v & c != 0),
                AbsHSet => {
                    fused!(op.imm as u32 as u64, 2, |b| u16::from_be_bytes(b) as u32, |v: u32, c: u32| v & c != 0)
                }
                AbsWSet => fused!(op.imm as u32 as u64, 4, u32::from_be_bytes, |v: u32, c: u32| v & c != 0),
                IndBSet => {
                    fused!(op.imm as u32 as u64 + s!() as u32 as u64, 1, |b: [u8; 1]| b[0] as u32, |v: u32, c: u32| v
                        & c
                        != 0)
                }
                IndHSet => fused!(
                    op.imm as u32 as u64 + s!() as u32 as u64,
                    2,
                    |b| u16::from_be_bytes(b) as u32,
                    |v: u32, c: u32| v & c != 0
                ),
                IndWSet => {
                    fused!(op.imm as u32 as u64 + s!() as u32 as u64, 4, u32::from_be_bytes, |v: u32, c: u32| v & c
                        != 0)
                }
                Msh => {
                    let Some([b]) = mem.packet::<1>(op.imm) else { return Ok(0) };
                    let v = ((b & 0xf) as u64) << 2;
                    r[0] = v;
                    d!() = v;
                    pc += 3;
                }
                Ret => {
                    r[0] = op.imm;
                    if depth == 0 {
                        return Ok(r[0]);
                    }
                    depth -= 1;
                    let Some(f) = mem.frames.get(depth) else { return Err(Fault::CallDepth { pc: here }) };
                    [r[6], r[7], r[8], r[9]] = f.saved;
                    r[10] = r[10].wrapping_add(STACK_SIZE as u64);
                    pc = f.ret;
                }
                Exit => {
                    if depth == 0 {
                        return Ok(r[0]);
                    }
                    depth -= 1;
                    let Some(f) = mem.frames.get(depth) else { return Err(Fault::CallDepth { pc: here }) };
                    [r[6], r[7], r[8], r[9]] = f.saved;
                    r[10] = r[10].wrapping_add(STACK_SIZE as u64);
                    pc = f.ret;
                }
            }
        }
    }
}

/// Calls a helper with r1-r5. `None` = the helper asked the program to stop (unwind).
#[inline]
fn call(h: &Helper, r: &[u64; 16]) -> Option<u64> {
    // SAFETY: `HelperFn` is unsafe because a helper may dereference its arguments. Whoever
    // builds a `Helpers` table vouches for each entry's contract (the conformance helpers
    // dereference only what the program passes them, as in every eBPF runtime); the
    // interpreter passes register values and nothing else.
    let v = unsafe { (h.func)(r[1], r[2], r[3], r[4], r[5]) };
    if h.unwind_on_zero && v == 0 { None } else { Some(v) }
}

impl Exec for Interpreter {
    fn run_raw(&self, mem: &mut [u8]) -> Result<u64, Fault> {
        // Raw programs have no ctx loads; the context only keeps `execute` uniform.
        let ctx = XdpContext::new(mem, 0, 0);
        let (base, len) = (mem.as_ptr() as u64, mem.len() as u64);
        self.execute(mem, base, len, &ctx)
    }

    fn run_xdp(&self, packet: &mut [u8], ingress_ifindex: u32, rx_queue_index: u32) -> Result<u64, Fault> {
        if let Some(acc) = &self.acc
            && u32::try_from(packet.len()).is_ok()
        {
            return Ok(acc.run(packet, ingress_ifindex, rx_queue_index));
        }
        self.run_xdp_general(packet, ingress_ifindex, rx_queue_index)
    }
}

impl Interpreter {
    /// The general loop for `run_xdp`, out of line so the accumulator path does not pay for
    /// its frame.
    #[inline(never)]
    fn run_xdp_general(&self, packet: &mut [u8], ingress_ifindex: u32, rx_queue_index: u32) -> Result<u64, Fault> {
        let ctx = XdpContext::new(packet, ingress_ifindex, rx_queue_index);
        self.execute(packet, &ctx as *const XdpContext as u64, 0, &ctx)
    }
}

/// Context field number `i` (a `CtxField` discriminant, checked at validation).
#[inline(always)]
fn ctx_field(ctx: &XdpContext, i: i32) -> u64 {
    match i {
        0 => ctx.data,
        1 => ctx.data_end,
        2 => ctx.data_meta,
        3 => ctx.ingress_ifindex as u64,
        4 => ctx.rx_queue_index as u64,
        _ => ctx.egress_ifindex as u64,
    }
}

#[cfg(test)]
mod tests;
