//! The accumulator loop: a second, faster way to run the programs classic BPF translates to.
//!
//! A translated classic filter (see [`crate::bpf::classic::translate`]) only ever holds 32-bit
//! values: packet loads into r0, 32-bit ALU, moves, 32-bit jumps, 32-bit scratch words just
//! below r10 and the packet length. For such a program the general loop's machinery (a 64-bit
//! register file in memory, the context, a stack area, fault plumbing) is pure overhead. This
//! loop keeps r0, the accumulator, in a host register and every other register or scratch word
//! the program names in a small `u32` array (four entries for most filters, zeroed per run),
//! reads the packet straight from the slice and cannot fault, so a run returns r0 directly.
//! It also dispatches less: the sequences libpcap code is made of run as one op each (a packet
//! load with the mask and test after it, with a run of `jeq` sharing one target, or as a 2-way
//! ethertype switch; `ldxb 4*([k]&0xf)` with the port load and test after it), and a jump whose
//! successor is `r0 = k; exit` returns by itself.
//!
//! [`build`] accepts a program only when every instruction is one this loop runs with exactly
//! the general loop's semantics; anything else stays on the general loop:
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
//! As in the general loop, every instruction keeps a slot of its own and a fused op in the
//! first slot of its sequence skips the rest, so a jump into the middle of a sequence runs the
//! plain ops from there.

use super::{div32, mod32, sdiv32, smod32};
use crate::bpf::check::{AluOp, Cond};
use crate::bpf::ctx::CtxField;

mod build;

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
