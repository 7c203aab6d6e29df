//! The JIT against the interpreter on random well-formed programs (proptest), and the JIT's
//! code memory staying bounded when programs are compiled and dropped over and over.
//!
//! Programs come from a grammar of valid items: ALU (every operation, both widths, immediate
//! and register), byte swaps, `lddw`, loads/stores/atomics on the stack and the data region
//! (some out of bounds), accesses through computed pointers, forward jumps (including
//! `data + c > data_end` bounds tests), packet loads, helper calls, `callx`, early exits and a
//! local function. Pointer values never reach r0..r6, so results do not depend on where each
//! back end keeps its buffers.

use std::sync::Mutex;

use proptest::prelude::*;
use sluice::bpf::check::validate;
use sluice::bpf::ctx::xdp_md;
use sluice::bpf::insn::build::*;
use sluice::bpf::insn::*;
use sluice::bpf::interp::Interpreter;
use sluice::bpf::jit::JitProgram;
use sluice::bpf::{Exec, Fault, Helper, Helpers, ProgKind, Program};

/// Tests here measure the process's memory; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Registers the generated arithmetic may read and write. r7 holds computed pointers, r8 the
/// data end (Xdp) or length (Raw), r9 the data start; r10 is the frame pointer.
const GENERAL: std::ops::RangeInclusive<u8> = 0..=6;
const PTR: u8 = 7;
const END: u8 = 8;
const DATA: u8 = 9;

unsafe extern "C" fn mix(a: u64, b: u64, c: u64, d: u64, e: u64) -> u64 {
    a.rotate_left(7) ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ c.wrapping_add(d) ^ e.rotate_right(3)
}

unsafe extern "C" fn unwind(a: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    a
}

fn helpers() -> Helpers {
    Helpers::from_list(&[
        Helper { id: 1, name: "mix", func: mix, unwind_on_zero: false },
        Helper { id: 5, name: "unwind", func: unwind, unwind_on_zero: true },
    ])
}

#[derive(Debug, Clone)]
enum Item {
    Alu { wide: bool, op: u8, signed: bool, dst: u8, src: Option<u8>, imm: i32 },
    MovSx { wide: bool, bits: i16, dst: u8, src: u8 },
    End { class: u8, to_be: bool, bits: i32, dst: u8 },
    Lddw { dst: u8, imm: u64 },
    /// `*(size *)(base + off) = src or imm`, base r10 or the data start.
    Store { stack: bool, size: u8, off: i16, src: Option<u8>, imm: i32 },
    Load { stack: bool, size: u8, signed: bool, dst: u8, off: i16 },
    Atomic { stack: bool, wide: bool, op: i32, off: i16, src: u8 },
    /// `r7 = base + c; load or store at r7 + off`: the run-time checked path.
    ViaPointer { stack: bool, c: i16, size: u8, store: bool, off: i16, reg: u8 },
    Jump { wide: bool, cond: u8, dst: u8, src: Option<u8>, imm: i32, skip: u8 },
    /// `r7 = data + c; if r7 cond data_end goto skip` (Xdp).
    Bounds { c: i16, cond: u8, skip: u8 },
    /// Xdp only.
    LdAbs { size: u8, imm: i32 },
    /// Xdp only; `mask` keeps the index register small so the load usually lands.
    LdInd { size: u8, src: u8, mask: bool, imm: i32 },
    Call { id: i32 },
    Callx { id: i32 },
    Exit,
    CallLocal,
}

const ALU: [u8; 13] =
    [ALU_ADD, ALU_SUB, ALU_MUL, ALU_DIV, ALU_OR, ALU_AND, ALU_LSH, ALU_RSH, ALU_MOD, ALU_XOR, ALU_MOV, ALU_ARSH, ALU_NEG];
const CONDS: [u8; 11] =
    [JMP_JEQ, JMP_JGT, JMP_JGE, JMP_JSET, JMP_JNE, JMP_JSGT, JMP_JSGE, JMP_JLT, JMP_JLE, JMP_JSLT, JMP_JSLE];
const ATOMICS: [i32; 10] = [
    ATOMIC_ADD,
    ATOMIC_OR,
    ATOMIC_AND,
    ATOMIC_XOR,
    ATOMIC_ADD | ATOMIC_FETCH,
    ATOMIC_OR | ATOMIC_FETCH,
    ATOMIC_AND | ATOMIC_FETCH,
    ATOMIC_XOR | ATOMIC_FETCH,
    ATOMIC_XCHG,
    ATOMIC_CMPXCHG,
];

fn size() -> impl Strategy<Value = u8> {
    prop::sample::select(vec![SIZE_B, SIZE_H, SIZE_W, SIZE_DW])
}

fn reg() -> impl Strategy<Value = u8> {
    GENERAL
}

fn imm() -> impl Strategy<Value = i32> {
    prop_oneof![-4i32..64, any::<i32>(), prop::sample::select(vec![i32::MIN, -1, 0x7fff_ffff, 0x8000, 31, 32, 63])]
}

/// Mostly inside a packet of at least 24 bytes, sometimes anywhere near it.
fn data_off() -> impl Strategy<Value = i16> {
    prop_oneof![6 => 0i16..16, 1 => -8i16..72]
}

fn stack_off() -> impl Strategy<Value = i16> {
    prop_oneof![4 => -64i16..0, 1 => -4104i16..8]
}

fn item(xdp: bool, local: bool) -> BoxedStrategy<Item> {
    let common = prop_oneof![
        6 => (any::<bool>(), prop::sample::select(ALU.to_vec()), any::<bool>(), reg(), prop::option::of(reg()), imm())
            .prop_map(|(wide, op, signed, dst, src, imm)| Item::Alu { wide, op, signed, dst, src, imm }),
        1 => (any::<bool>(), prop::sample::select(vec![8i16, 16, 32]), reg(), reg())
            .prop_map(|(wide, bits, dst, src)| Item::MovSx { wide, bits, dst, src }),
        1 => (prop::sample::select(vec![CLASS_ALU, CLASS_ALU64]), any::<bool>(), prop::sample::select(vec![16, 32, 64]), reg())
            .prop_map(|(class, to_be, bits, dst)| Item::End { class, to_be, bits, dst }),
        1 => (reg(), any::<u64>()).prop_map(|(dst, imm)| Item::Lddw { dst, imm }),
        2 => (size(), stack_off(), prop::option::of(reg()), imm())
            .prop_map(|(size, off, src, imm)| Item::Store { stack: true, size, off, src, imm }),
        2 => (size(), any::<bool>(), reg(), stack_off())
            .prop_map(|(size, signed, dst, off)| Item::Load { stack: true, size, signed, dst, off }),
        2 => (size(), data_off(), prop::option::of(reg()), imm())
            .prop_map(|(size, off, src, imm)| Item::Store { stack: false, size, off, src, imm }),
        2 => (size(), any::<bool>(), reg(), data_off())
            .prop_map(|(size, signed, dst, off)| Item::Load { stack: false, size, signed, dst, off }),
        1 => (any::<bool>(), any::<bool>(), prop::sample::select(ATOMICS.to_vec()), any::<bool>(), reg())
            .prop_map(|(stack, wide, op, far, src)| {
                let off = match (stack, far) {
                    (true, false) => -16,
                    (true, true) => -4,
                    (false, false) => 4,
                    (false, true) => 60,
                };
                Item::Atomic { stack, wide, op, off, src }
            }),
        2 => (any::<bool>(), prop_oneof![4 => 0i16..16, 1 => -4200i16..100], size(), any::<bool>(), -8i16..8, reg())
            .prop_map(|(stack, c, size, store, off, reg)| {
                // From r10, mostly a little way into the frames.
                let c = if stack && (0..16).contains(&c) { -8 - 32 * c } else { c };
                Item::ViaPointer { stack, c, size, store, off, reg }
            }),
        3 => (any::<bool>(), prop::sample::select(CONDS.to_vec()), reg(), prop::option::of(reg()), imm(), 0u8..6)
            .prop_map(|(wide, cond, dst, src, imm, skip)| Item::Jump { wide, cond, dst, src, imm, skip }),
        1 => prop::sample::select(vec![1, 5]).prop_map(|id| Item::Call { id }),
        1 => prop::sample::select(vec![1, 5, 0, 7]).prop_map(|id| Item::Callx { id }),
        1 => Just(Item::Exit),
    ];
    let mut choices: Vec<(u32, BoxedStrategy<Item>)> = vec![(20, common.boxed())];
    if xdp {
        choices.push((2, (size().prop_filter("no 8-byte packet loads", |s| *s != SIZE_DW), -2i32..70)
            .prop_map(|(size, imm)| Item::LdAbs { size, imm }).boxed()));
        choices.push((2, (size().prop_filter("no 8-byte packet loads", |s| *s != SIZE_DW), reg(), any::<bool>(), prop_oneof![0i32..40, any::<i32>()])
            .prop_map(|(size, src, mask, imm)| Item::LdInd { size, src, mask, imm }).boxed()));
        choices.push((2, (-4i16..80, prop::sample::select(vec![JMP_JGT, JMP_JGE, JMP_JLT, JMP_JLE]), 0u8..6)
            .prop_map(|(c, cond, skip)| Item::Bounds { c, cond, skip }).boxed()));
    }
    if local {
        choices.push((1, Just(Item::CallLocal).boxed()));
    }
    prop::strategy::Union::new_weighted(choices).boxed()
}

/// Lays out one function body; `calls` collects the pcs of `call local` to patch.
fn emit(items: &[Item], out: &mut Vec<Insn>, calls: &mut Vec<usize>) {
    let mut starts = Vec::with_capacity(items.len());
    let mut jumps: Vec<(usize, usize)> = Vec::new(); // (pc, target item)
    for (i, it) in items.iter().enumerate() {
        starts.push(out.len());
        let base = |stack: bool| if stack { REG_FP } else { DATA };
        match *it {
            Item::Alu { wide, op, signed, dst, src, imm } => {
                let class = if wide { CLASS_ALU64 } else { CLASS_ALU };
                let off = if signed && matches!(op, ALU_DIV | ALU_MOD) { 1 } else { 0 };
                out.push(match (op, src) {
                    (ALU_NEG, _) => Insn::new(class | op, dst, 0, 0, 0),
                    (_, Some(s)) => Insn::new(class | SRC_X | op, dst, s, off, 0),
                    (_, None) => Insn::new(class | op, dst, 0, off, imm),
                });
            }
            Item::MovSx { wide, bits, dst, src } => {
                let (class, bits) = if wide { (CLASS_ALU64, bits) } else { (CLASS_ALU, bits.min(16)) };
                out.push(Insn::new(class | SRC_X | ALU_MOV, dst, src, bits, 0));
            }
            Item::End { class, to_be, bits, dst } => {
                let src = if to_be && class == CLASS_ALU { SRC_X } else { SRC_K };
                out.push(Insn::new(class | ALU_END | src, dst, 0, 0, bits));
            }
            Item::Lddw { dst, imm } => out.extend(lddw(dst, imm)),
            Item::Store { stack, size, off, src, imm } => out.push(match src {
                Some(s) => stx(size, base(stack), s, off),
                None => st(size, base(stack), off, imm),
            }),
            Item::Load { stack, size, signed, dst, off } => {
                let mode = if signed && size != SIZE_DW { MODE_MEMSX } else { MODE_MEM };
                out.push(Insn::new(CLASS_LDX | mode | size, dst, base(stack), off, 0));
            }
            Item::Atomic { stack, wide, op, off, src } => {
                let size = if wide { SIZE_DW } else { SIZE_W };
                out.push(Insn::new(CLASS_STX | MODE_ATOMIC | size, base(stack), src, off, op));
            }
            Item::ViaPointer { stack, c, size, store, off, reg } => {
                out.push(mov64_reg(PTR, base(stack)));
                out.push(alu64_imm(ALU_ADD, PTR, c as i32));
                out.push(if store { stx(size, PTR, reg, off) } else { ldx(size, reg, PTR, off) });
            }
            Item::Jump { wide, cond, dst, src, imm, skip } => {
                jumps.push((out.len(), i + 1 + skip as usize));
                out.push(match (wide, src) {
                    (true, Some(s)) => jmp_reg(cond, dst, s, 0),
                    (true, None) => jmp_imm(cond, dst, imm, 0),
                    (false, Some(s)) => jmp32_reg(cond, dst, s, 0),
                    (false, None) => jmp32_imm(cond, dst, imm, 0),
                });
            }
            Item::Bounds { c, cond, skip } => {
                out.push(mov64_reg(PTR, DATA));
                out.push(alu64_imm(ALU_ADD, PTR, c as i32));
                jumps.push((out.len(), i + 1 + skip as usize));
                out.push(jmp_reg(cond, PTR, END, 0));
            }
            Item::LdAbs { size, imm } => out.push(ld_abs(size, imm)),
            Item::LdInd { size, src, mask, imm } => {
                if mask {
                    out.push(alu32_imm(ALU_AND, src, 31));
                }
                out.push(ld_ind(size, src, imm));
            }
            Item::Call { id } => out.push(call_helper(id)),
            Item::Callx { id } => {
                out.push(mov64_imm(6, id));
                out.push(Insn::new(CLASS_JMP | JMP_CALL | SRC_X, 6, 0, 0, 0));
            }
            Item::Exit => out.push(exit()),
            Item::CallLocal => {
                calls.push(out.len());
                out.push(Insn::new(CLASS_JMP | JMP_CALL, 0, CALL_LOCAL, 0, 0));
            }
        }
    }
    let end = out.len();
    out.push(exit());
    for (pc, target) in jumps {
        let t = starts.get(target).copied().unwrap_or(end);
        out[pc].off = (t - pc - 1) as i16;
    }
}

/// A whole program: a prologue that parks the data pointers in r8/r9 and gives r1..r6 plain
/// values, the main body, and optionally a local function after it.
fn build(kind: ProgKind, main: &[Item], callee: Option<&[Item]>, seeds: [i32; 6]) -> Vec<Insn> {
    let xdp = kind == ProgKind::Xdp;
    let mut out = if xdp {
        vec![ldx(SIZE_W, DATA, 1, xdp_md::DATA), ldx(SIZE_W, END, 1, xdp_md::DATA_END)]
    } else {
        vec![mov64_reg(DATA, 1), mov64_reg(END, 2)]
    };
    for (r, v) in (1..=6).zip(seeds) {
        out.push(mov64_imm(r, v));
    }
    let mut calls = Vec::new();
    emit(main, &mut out, &mut calls);
    if let Some(callee) = callee {
        let entry = out.len();
        emit(callee, &mut out, &mut Vec::new());
        for pc in calls {
            out[pc].imm = (entry - pc - 1) as i32;
        }
    }
    out
}

/// Runs both back ends on copies of `mem` and checks they agree.
fn agree(prog: &Program, mem: &[u8]) -> Result<(), TestCaseError> {
    let interp = Interpreter::new(prog);
    let jit = JitProgram::compile(prog).map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
    let (mut a, mut b) = (mem.to_vec(), mem.to_vec());
    let run = |e: &dyn Exec, m: &mut Vec<u8>| match prog.kind() {
        ProgKind::Raw => e.run_raw(m),
        ProgKind::Xdp => e.run_xdp(m, 4, 2),
    };
    let want = run(&interp, &mut a);
    let got = run(&jit, &mut b);
    match (want, got) {
        (
            Err(Fault::OutOfBounds { pc, addr, size, write }),
            Err(Fault::OutOfBounds { pc: pc2, addr: addr2, size: size2, write: write2 }),
        ) => {
            prop_assert_eq!((pc, size, write), (pc2, size2, write2));
            // Addresses relative to the data match unless the base was a stack pointer, which
            // each back end keeps in its own place.
            let insn = prog.insns()[pc];
            let base = if insn.class() == CLASS_LDX { insn.src } else { insn.dst };
            if base != REG_FP && base != PTR {
                let rel = |addr: u64, m: &Vec<u8>| addr.wrapping_sub(m.as_ptr() as u64);
                prop_assert_eq!(rel(addr, &a), rel(addr2, &b), "fault address at pc {}", pc);
            }
        }
        (want, got) => prop_assert_eq!(want, got),
    }
    prop_assert_eq!(a, b, "memory after the run");
    Ok(())
}

fn case(xdp: bool) -> impl Strategy<Value = (Vec<Item>, Option<Vec<Item>>, [i32; 6], Vec<u8>)> {
    (
        prop::collection::vec(item(xdp, true), 1..40),
        prop::option::of(prop::collection::vec(item(xdp, false), 1..15)),
        any::<[i32; 6]>(),
        prop_oneof![4 => prop::collection::vec(any::<u8>(), 24..80), 1 => prop::collection::vec(any::<u8>(), 0..24)],
    )
}

fn check_case(kind: ProgKind, main: &[Item], callee: Option<&[Item]>, seeds: [i32; 6], mem: &[u8]) -> Result<(), TestCaseError> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Without a callee, local calls are dropped.
    let main: Vec<Item> = main.iter().filter(|i| callee.is_some() || !matches!(i, Item::CallLocal)).cloned().collect();
    let insns = build(kind, &main, callee, seeds);
    let prog = validate(insns, kind, &helpers()).map_err(|e| TestCaseError::fail(format!("generated an invalid program: {e}")))?;
    agree(&prog, mem)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn raw_programs_agree((main, callee, seeds, mem) in case(false)) {
        check_case(ProgKind::Raw, &main, callee.as_deref(), seeds, &mem)?;
    }

    #[test]
    fn xdp_programs_agree((main, callee, seeds, mem) in case(true)) {
        check_case(ProgKind::Xdp, &main, callee.as_deref(), seeds, &mem)?;
    }
}

/// Resident set size in bytes, from /proc/self/statm.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm.split_whitespace().nth(1).and_then(|f| f.parse().ok()).expect("statm resident field");
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    pages * page
}

#[test]
fn compiling_and_dropping_programs_frees_their_code() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Small, so the debug-build compiler keeps the test quick: the module, its code pages and
    // its bookkeeping are what each cycle allocates whatever the program's size.
    let insns = [ld_abs(SIZE_H, 12), st(SIZE_DW, 10, -8, 3), ldx(SIZE_DW, 0, 10, -8), exit()];
    let prog = validate(insns.to_vec(), ProgKind::Xdp, &helpers()).expect("valid");
    let mut pkt = [0u8; 64];
    let mut cycle = |n: usize| {
        for _ in 0..n {
            let jit = JitProgram::compile(&prog).expect("compile");
            assert_eq!(jit.run_xdp(&mut pkt, 1, 0), Ok(3));
        }
    };
    // Warm up allocator caches first, then measure the steady state.
    cycle(500);
    let before = rss();
    cycle(5_000);
    let grown = rss().saturating_sub(before);
    println!("rss grew {} KiB over 5000 compile/drop cycles", grown / 1024);
    // Leaking only the code page of each program would be 5000 * 4 KiB = 20 MiB.
    assert!(grown < 4 << 20, "rss grew {grown} bytes over 5000 compile/drop cycles");
}
