//! The interpreter: the reference semantics of RFC 9669 v4 that the JIT is tested against.
//!
//! A [`Program`] is pre-decoded once into compact 16-byte ops (jump targets resolved to
//! absolute slots, immediates sign-extended, helpers resolved, and the sequences classic
//! filters are made of fused into single ops), so a run is a `match` per op with no
//! allocation and no re-parsing.
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
//!   ([`check::stack_reach`]) is zeroed before every run.
//! - Local calls save r6-r9 and restore them and r10 at the callee's `exit`; r1-r5 are not
//!   restored (callers must treat them as clobbered). Helper calls leave r1-r5 untouched.
//! - `ld_abs`/`ld_ind` read big-endian from the packet; out of range ends the run with r0 = 0.
//!   `MODE_CTX` loads read the run's own context: the source register is never dereferenced.
//! - Everything else is little-endian, whatever the host.

use std::cell::RefCell;

use super::check::{self, AluOp, AtomicOp, Cond, EndOp, Form, Operand, StackReach};
use super::insn::{ALU_AND, ALU_LSH, ALU_MOV, CLASS_ALU, Insn, SRC_X, STACK_SIZE, lddw_imm};
use super::{Exec, Fault, Helper, Helpers, MAX_CALL_DEPTH, Program, XdpContext};

/// Bytes of the stack area.
pub const STACK_AREA: usize = MAX_CALL_DEPTH * STACK_SIZE;

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
}

impl Interpreter {
    pub fn new(prog: &Program) -> Self {
        let insns = prog.insns();
        let mut called: Vec<Helper> = Vec::new();
        let mut code = Vec::with_capacity(insns.len());
        for (pc, insn) in insns.iter().enumerate() {
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
        Interpreter {
            code: code.into(),
            called: called.into(),
            helpers: prog.helpers().clone(),
            reach: check::stack_reach(insns),
        }
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
    ctx: &'a XdpContext,
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
        window(self.data, self.data_base, addr).or_else(|| window(self.stack, self.stack_base, addr))
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

impl Interpreter {
    /// Runs with `data` as the memory (Raw) or packet (Xdp) region and `r1` as given.
    #[inline(always)]
    fn execute(&self, data: &mut [u8], r1: u64, r2: u64, ctx: &XdpContext) -> Result<u64, Fault> {
        if self.reach == StackReach::None {
            let mut mem =
                Mem { data_base: data.as_ptr() as u64, data, stack: &mut [], stack_base: 0, frames: &mut [], ctx };
            return self.run(&mut mem, r1, r2, 0);
        }
        let mut go = |s: &mut Scratch| {
            let (lo, hi) = match self.reach {
                StackReach::Frame { lo, hi } => ((STACK_AREA as i64 + lo) as usize, (STACK_AREA as i64 + hi) as usize),
                _ => (0, STACK_AREA),
            };
            if let Some(reached) = s.stack.get_mut(lo..hi) {
                reached.fill(0);
            }
            let stack_base = s.stack.as_ptr() as u64;
            let mut mem = Mem {
                data_base: data.as_ptr() as u64,
                data: &mut *data,
                stack: &mut s.stack,
                stack_base,
                frames: &mut s.frames,
                ctx,
            };
            self.run_with_stack(&mut mem, r1, r2, stack_base + STACK_AREA as u64)
        };
        let shared = SCRATCH.try_with(|cell| cell.try_borrow_mut().ok().map(|mut s| go(&mut s)));
        match shared {
            Ok(Some(result)) => result,
            // A helper running a filter on this thread, or thread teardown: use a private area.
            _ => go(&mut Box::new(Scratch::new())),
        }
    }

    /// [`run`](Self::run) for programs that use the stack, kept out of line so the hot
    /// stack-free path stays small.
    #[inline(never)]
    fn run_with_stack(&self, mem: &mut Mem<'_>, r1: u64, r2: u64, r10: u64) -> Result<u64, Fault> {
        self.run(mem, r1, r2, r10)
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
            macro_rules! jump {
                ($cond:expr) => {
                    if $cond {
                        pc = op.off as usize;
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
                    match mem.place::<$n>(addr_d) {
                        Some(cell) => *cell = $v,
                        None => return Err(oob(here, addr_d, $n, true)),
                    }
                }};
            }
            macro_rules! fused {
                ($off:expr, $n:literal, $conv:expr, $test:expr) => {{
                    let Some(b) = mem.packet::<$n>($off) else { return Ok(0) };
                    let v: u32 = $conv(b);
                    r[0] = v as u64;
                    if $test(v, (op.imm >> 32) as u32) != (op.dst != 0) {
                        pc = op.off as usize;
                    } else {
                        pc += 1;
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
                Ctx => d!() = ctx_field(mem.ctx, op.off),
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
                AtomicW => {
                    let addr_d = d!().wrapping_add(op.off as i64 as u64);
                    let a = ATOMIC_OPS[op.imm as usize % ATOMIC_OPS.len()];
                    let Some(cell) = mem.place::<4>(addr_d) else { return Err(oob(here, addr_d, 4, true)) };
                    atomic!(u32, cell, a, r, (op.src & 15) as usize);
                }
                AtomicDw => {
                    let addr_d = d!().wrapping_add(op.off as i64 as u64);
                    let a = ATOMIC_OPS[op.imm as usize % ATOMIC_OPS.len()];
                    let Some(cell) = mem.place::<8>(addr_d) else { return Err(oob(here, addr_d, 8, true)) };
                    atomic!(u64, cell, a, r, (op.src & 15) as usize);
                }
                Ja => pc = op.off as usize,
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
mod tests {
    use super::*;
    use crate::bpf::ProgKind;
    use crate::bpf::check::validate;
    use crate::bpf::ctx::xdp_md;
    use crate::bpf::insn::build::*;
    use crate::bpf::insn::*;

    fn interp(kind: ProgKind, insns: &[Insn], helpers: &Helpers) -> Interpreter {
        Interpreter::new(&validate(insns.to_vec(), kind, helpers).unwrap())
    }

    fn raw(insns: &[Insn], mem: &mut [u8]) -> Result<u64, Fault> {
        interp(ProgKind::Raw, insns, &Helpers::none()).run_raw(mem)
    }

    fn xdp(insns: &[Insn], packet: &mut [u8]) -> Result<u64, Fault> {
        interp(ProgKind::Xdp, insns, &Helpers::none()).run_xdp(packet, 7, 3)
    }

    fn local(imm: i32) -> Insn {
        Insn::new(CLASS_JMP | JMP_CALL, 0, CALL_LOCAL, 0, imm)
    }

    #[test]
    fn xdp_context_fields_and_packet_pointers() {
        // r0 = data_end - data + ingress_ifindex * 100 + rx_queue_index * 10 + packet[1]
        let p = [
            ldx(SIZE_W, 2, 1, xdp_md::DATA),
            ldx(SIZE_W, 3, 1, xdp_md::DATA_END),
            ldx(SIZE_W, 4, 1, xdp_md::INGRESS_IFINDEX),
            ldx(SIZE_W, 5, 1, xdp_md::RX_QUEUE_INDEX),
            mov64_reg(0, 3),
            alu64_reg(ALU_SUB, 0, 2),
            alu64_imm(ALU_MUL, 4, 100),
            alu64_reg(ALU_ADD, 0, 4),
            alu64_imm(ALU_MUL, 5, 10),
            alu64_reg(ALU_ADD, 0, 5),
            ldx(SIZE_B, 6, 2, 1),
            alu64_reg(ALU_ADD, 0, 6),
            exit(),
        ];
        let mut pkt = [0u8, 5, 0, 0];
        assert_eq!(xdp(&p, &mut pkt), Ok(4 + 700 + 30 + 5));
    }

    #[test]
    fn packet_loads_are_big_endian_and_end_the_run_with_zero_when_out_of_range() {
        let p = [ld_abs(SIZE_H, 2), mov64_reg(7, 0), ld_ind(SIZE_W, 7, -0x1233 + 0x1233), exit()];
        let mut pkt = [0u8; 8];
        pkt[2..4].copy_from_slice(&[0x00, 0x04]);
        pkt[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(xdp(&p, &mut pkt), Ok(0xdead_beef));
        // ld_abs past the end: r0 = 0, not a fault.
        let p = [mov64_imm(0, 9), ld_abs(SIZE_B, 8), mov64_imm(0, 9), exit()];
        assert_eq!(xdp(&p, &mut pkt), Ok(0));
        // ld_ind offsets are unsigned 32-bit and do not wrap.
        let p = [mov64_imm(7, -1), ld_ind(SIZE_B, 7, 2), exit()];
        assert_eq!(xdp(&p, &mut pkt), Ok(0));
        let p = [ld_abs(SIZE_B, -1), exit()];
        assert_eq!(xdp(&p, &mut pkt), Ok(0));
    }

    #[test]
    fn out_of_bounds_accesses_fault_with_the_evidence() {
        let mut mem = [1u8, 2, 3, 4];
        let base = mem.as_ptr() as u64;
        let p = [mov64_imm(0, 0), ldx(SIZE_W, 0, 1, 1), exit()];
        assert_eq!(raw(&p, &mut mem), Err(Fault::OutOfBounds { pc: 1, addr: base + 1, size: 4, write: false }));
        let p = [st(SIZE_H, 1, -1, 7), exit()];
        assert_eq!(raw(&p, &mut mem), Err(Fault::OutOfBounds { pc: 0, addr: base - 1, size: 2, write: true }));
        // Loads and stores exactly at the edges are fine.
        let p = [st(SIZE_B, 1, 3, 9), ldx(SIZE_W, 0, 1, 0), exit()];
        assert_eq!(raw(&p, &mut mem), Ok(u32::from_le_bytes([1, 2, 3, 9]) as u64));
        let p = [atomic(SIZE_DW, 1, 2, 8, ATOMIC_ADD), exit()];
        assert!(matches!(raw(&p, &mut mem), Err(Fault::OutOfBounds { pc: 0, size: 8, write: true, .. })));
    }

    #[test]
    fn the_context_is_not_memory() {
        // Launder the ctx pointer through the stack so the load is not rewritten: it faults.
        let p = [
            stx(SIZE_DW, 10, 1, -8),
            mov64_reg(3, 10),
            alu64_imm(ALU_ADD, 3, -8),
            ldx(SIZE_DW, 4, 3, 0),
            ldx(SIZE_W, 0, 4, 0),
            exit(),
        ];
        assert!(matches!(xdp(&p, &mut [0u8; 4]), Err(Fault::OutOfBounds { pc: 4, size: 4, write: false, .. })));
    }

    fn atomic(size: u8, dst: u8, src: u8, off: i16, op: i32) -> Insn {
        Insn::new(CLASS_STX | MODE_ATOMIC | size, dst, src, off, op)
    }

    #[test]
    fn the_stack_starts_zeroed_on_every_run() {
        let dirty = [st(SIZE_DW, 10, -8, -1), st(SIZE_DW, 10, -4000, -1), mov64_imm(0, 0), exit()];
        assert_eq!(raw(&dirty, &mut []), Ok(0));
        let read = [ldx(SIZE_DW, 0, 10, -8), exit()];
        assert_eq!(raw(&read, &mut []), Ok(0));
        // A program whose r10 escapes zeroes the whole area.
        let read_far = [mov64_reg(2, 10), ldx(SIZE_DW, 0, 2, -4000), exit()];
        assert_eq!(raw(&dirty, &mut []), Ok(0));
        assert_eq!(raw(&read_far, &mut []), Ok(0));
    }

    #[test]
    fn the_stack_area_ends_at_the_entry_frame_top() {
        let p = [ldx(SIZE_B, 0, 10, 0), exit()];
        assert!(matches!(raw(&p, &mut []), Err(Fault::OutOfBounds { pc: 0, size: 1, write: false, .. })));
        let p = [ldx(SIZE_B, 0, 10, -(STACK_AREA as i16) - 1), exit()];
        assert!(matches!(raw(&p, &mut []), Err(Fault::OutOfBounds { .. })));
        let p = [ldx(SIZE_B, 0, 10, -(STACK_AREA as i16)), exit()];
        assert_eq!(raw(&p, &mut []), Ok(0));
    }

    #[test]
    fn local_calls_save_registers_and_share_the_stack_area() {
        // main: r6 = 5; *(r10-8) = 40; r1 = r10 - 8; call f; r0 += r6; exit
        // f:    r6 = 100; r0 = *(u64 *)(r1 + 0); *(u64 *)(r10 - 8) = 1; r0 += 1; exit
        let p = [
            mov64_imm(6, 5),
            st(SIZE_DW, 10, -8, 40),
            mov64_reg(1, 10),
            alu64_imm(ALU_ADD, 1, -8),
            local(4),
            alu64_reg(ALU_ADD, 0, 6),
            ldx(SIZE_DW, 7, 10, -8),
            alu64_reg(ALU_ADD, 0, 7),
            exit(),
            mov64_imm(6, 100),
            ldx(SIZE_DW, 0, 1, 0),
            st(SIZE_DW, 10, -8, 1),
            alu64_imm(ALU_ADD, 0, 1),
            exit(),
        ];
        // f's frame is below main's: its store does not touch main's slot.
        assert_eq!(raw(&p, &mut []), Ok(41 + 5 + 40));
    }

    #[test]
    fn call_depth_is_bounded() {
        let recurse = [local(-1), exit()];
        assert_eq!(raw(&recurse, &mut []), Err(Fault::CallDepth { pc: 0 }));
        // Exactly MAX_CALL_DEPTH frames is fine.
        let mut p = Vec::new();
        for _ in 0..MAX_CALL_DEPTH - 1 {
            p.extend([local(1), exit()]);
        }
        p.extend([mov64_imm(0, 3), exit()]);
        assert_eq!(raw(&p, &mut []), Ok(3));
    }

    unsafe extern "C" fn add(a: u64, b: u64, _: u64, _: u64, _: u64) -> u64 {
        a + b
    }

    unsafe extern "C" fn first(a: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
        a
    }

    fn table() -> Helpers {
        Helpers::from_list(&[
            Helper { id: 1, name: "add", func: add, unwind_on_zero: false },
            Helper { id: 5, name: "unwind", func: first, unwind_on_zero: true },
        ])
    }

    #[test]
    fn helpers_are_called_by_id_and_register() {
        let p = [mov64_imm(1, 2), mov64_imm(2, 40), call_helper(1), exit()];
        assert_eq!(interp(ProgKind::Raw, &p, &table()).run_raw(&mut []), Ok(42));
        let p = [mov64_imm(1, 2), mov64_imm(2, 40), mov64_imm(3, 1), Insn::new(0x8d, 3, 0, 0, 0), exit()];
        assert_eq!(interp(ProgKind::Raw, &p, &table()).run_raw(&mut []), Ok(42));
        let p = [mov64_imm(3, 9), Insn::new(0x8d, 3, 0, 0, 0), exit()];
        assert_eq!(interp(ProgKind::Raw, &p, &table()).run_raw(&mut []), Err(Fault::UnknownHelper { pc: 1, id: 9 }));
    }

    #[test]
    fn an_unwinding_helper_returning_zero_ends_the_run() {
        let p = [mov64_imm(1, 0), call_helper(5), mov64_imm(0, 7), exit()];
        assert_eq!(interp(ProgKind::Raw, &p, &table()).run_raw(&mut []), Ok(0));
        let p = [mov64_imm(1, 3), call_helper(5), mov64_imm(0, 7), exit()];
        assert_eq!(interp(ProgKind::Raw, &p, &table()).run_raw(&mut []), Ok(7));
    }

    #[test]
    fn division_edge_cases_do_not_trap() {
        let cases: [(Insn, u64, u64); 6] = [
            (alu64_imm(ALU_DIV, 0, 0), 7, 0),
            (alu64_imm(ALU_MOD, 0, 0), 7, 7),
            (alu32_imm(ALU_MOD, 0, 0), 0x1_0000_0007, 7),
            (Insn::new(CLASS_ALU64 | ALU_DIV, 0, 0, 1, -1), i64::MIN as u64, i64::MIN as u64),
            (Insn::new(CLASS_ALU64 | ALU_MOD, 0, 0, 1, -1), i64::MIN as u64, 0),
            (Insn::new(CLASS_ALU | ALU_DIV, 0, 0, 1, -1), i32::MIN as u32 as u64, i32::MIN as u32 as u64),
        ];
        for (insn, input, want) in cases {
            let [lo, hi] = lddw(0, input);
            assert_eq!(raw(&[lo, hi, insn, exit()], &mut []), Ok(want), "{insn:?}");
        }
    }

    #[test]
    fn a_busy_scratch_area_falls_back_to_a_private_one() {
        let p = [st(SIZE_DW, 10, -8, 11), ldx(SIZE_DW, 0, 10, -8), exit()];
        let held = SCRATCH.with(|c| {
            let _guard = c.borrow_mut();
            raw(&p, &mut [])
        });
        assert_eq!(held, Ok(11));
    }

    /// Fused ops against the same program with fusion blocked by a `goto +0` in between.
    #[test]
    fn fused_packet_tests_match_the_unfused_ops() {
        let pkt: Vec<u8> = (0..16u8).map(|i| i.wrapping_mul(37)).collect();
        let conds = [JMP_JEQ, JMP_JNE, JMP_JGT, JMP_JGE, JMP_JLT, JMP_JLE, JMP_JSET, JMP_JSGT];
        let imms = [0, 1, 0x25, 0x4a, 0x254a, 0x4a6f, -1, i32::MAX, 0x7fff_ffff, 0xff];
        for class in [CLASS_JMP, CLASS_JMP32] {
            for cond in conds {
                for imm in imms {
                    for load in [
                        ld_abs(SIZE_B, 1),
                        ld_abs(SIZE_H, 1),
                        ld_abs(SIZE_W, 1),
                        ld_ind(SIZE_H, 7, 2),
                        ld_abs(SIZE_W, 14),
                    ] {
                        let jump = Insn::new(class | cond, 0, 0, 1, imm);
                        let tail = [mov64_imm(0, 1), exit(), mov64_imm(0, 2), exit()];
                        let mut fused = vec![mov64_imm(7, 3), load, jump];
                        fused.extend(tail);
                        let mut plain = vec![mov64_imm(7, 3), load, ja(0), Insn { off: 1, ..jump }];
                        plain.extend(tail);
                        let a = xdp(&fused, &mut pkt.clone());
                        let b = xdp(&plain, &mut pkt.clone());
                        assert_eq!(a, b, "{load:?} {jump:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn fused_sequences_can_be_entered_in_the_middle() {
        // msh: x = 4 * (pkt[0] & 0xf); a jump lands on the `w0 &= 0xf` inside it.
        let p = [
            ld_abs(SIZE_B, 1),
            jmp_imm(JMP_JEQ, 0, 0x99, 1),
            ld_abs(SIZE_B, 0),
            alu32_imm(ALU_AND, 0, 0xf),
            alu32_imm(ALU_LSH, 0, 2),
            mov32_reg(7, 0),
            mov64_reg(0, 7),
            exit(),
        ];
        assert_eq!(xdp(&p, &mut [0x45, 0x00]), Ok(20));
        assert_eq!(xdp(&p, &mut [0x45, 0x99]), Ok(4 * 9));
        assert_eq!(xdp(&p, &mut [0x45]), Ok(0));
        // A jump onto the `exit` of a fused `r0 = k; exit` keeps r0.
        let p = [ld_abs(SIZE_B, 0), jmp_imm(JMP_JEQ, 0, 7, 1), mov32_imm(0, 5), exit()];
        assert_eq!(xdp(&p, &mut [7]), Ok(7));
        assert_eq!(xdp(&p, &mut [8]), Ok(5));
    }

    /// Opcodes `form` accepts with zeroed fields, plus the atomics (which need an `imm`).
    fn valid_ops() -> Vec<(u8, i32)> {
        let mut v: Vec<(u8, i32)> = (0..=255u8)
            .flat_map(|op| [(op, 0), (op, 16)])
            .filter(|&(op, imm)| check::form(&Insn::new(op, 0, 0, 0, imm)).is_ok())
            .collect();
        for imm in [0x00, 0x01, 0x40, 0x41, 0x50, 0x51, 0xa0, 0xa1, 0xe1, 0xf1] {
            v.extend([(0xc3, imm), (0xdb, imm)]);
        }
        v
    }

    /// Turns random slots into a program validation accepts (most of the time): fields the
    /// form does not use are zeroed, jumps point forward inside the program, calls go to the
    /// one helper, and the prologue moves the packet pointers out of the ctx.
    fn repair(slots: Vec<Insn>) -> Vec<Insn> {
        let mut out = vec![ldx(SIZE_W, 2, 1, xdp_md::DATA), ldx(SIZE_W, 3, 1, xdp_md::DATA_END), mov64_reg(1, 2)];
        let n = slots.len();
        for (k, mut i) in slots.into_iter().enumerate() {
            for _ in 0..4 {
                match check::form(&i) {
                    Err(check::Reason::NonZeroField { field, .. }) => match field {
                        "dst" => i.dst = 0,
                        "src" => i.src = 0,
                        "off" => i.off = 0,
                        _ => i.imm = 0,
                    },
                    Err(check::Reason::BadAluOffset(_)) => i.off = 0,
                    Err(check::Reason::BadEndWidth(_)) => i.imm = 32,
                    Ok(Form::Call) => i.imm = 0,
                    Ok(Form::Lddw | Form::CallLocal | Form::CallKfunc) | Err(_) => i = mov64_imm(0, 1),
                    Ok(Form::Ja | Form::Jump { .. }) => {
                        // Forward, landing on one of the remaining slots or the tail.
                        i.off = (i.off as i64).rem_euclid((n - k) as i64 + 1) as i16;
                        break;
                    }
                    Ok(Form::Ja32) => {
                        i.imm = (i.imm as i64).rem_euclid((n - k) as i64 + 1) as i32;
                        break;
                    }
                    Ok(_) => break,
                }
            }
            if i.dst == 10 {
                i.dst = 0;
            }
            out.push(i);
        }
        out.extend([mov64_imm(0, 2), exit()]);
        out
    }

    unsafe extern "C" fn nop5(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
        1
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// Whatever a valid filter does, running it ends in a verdict or a fault, never a panic.
        #[test]
        fn random_valid_filters_run_without_panicking(
            slots in proptest::collection::vec(
                (proptest::sample::select(valid_ops()), 0u8..11, 0u8..11, -20i16..20, -4i32..80),
                1..40,
            ),
            packet in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            raw_mem in proptest::prelude::any::<bool>(),
        ) {
            let slots = slots
                .into_iter()
                .map(|((op, imm0), dst, src, off, imm)| Insn::new(op, dst, src, off, if imm0 != 0 { imm0 } else { imm }))
                .collect();
            let helpers = Helpers::from_list(&[Helper { id: 0, name: "one", func: nop5, unwind_on_zero: false }]);
            // Xdp validation forbids back-edges, so every run terminates.
            if let Ok(p) = validate(repair(slots), ProgKind::Xdp, &helpers) {
                let it = Interpreter::new(&p);
                let mut pkt = packet.clone();
                let _ = if raw_mem { it.run_raw(&mut pkt) } else { it.run_xdp(&mut pkt, 1, 0) };
            }
        }
    }

    #[test]
    fn interpreters_are_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Interpreter>();
    }
}
