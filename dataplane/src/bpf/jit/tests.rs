//! Unit tests, one group per instruction class. Every program is validated, then run by the
//! JIT and by the interpreter (the reference) on copies of the same input: results and memory
//! must agree, and the tests also pin the expected values.

use super::analyze::{self, Note};
use super::*;
use crate::bpf::check::validate;
use crate::bpf::ctx::xdp_md;
use crate::bpf::insn::build::*;
use crate::bpf::insn::*;
use crate::bpf::interp::Interpreter;
use crate::bpf::{Helper, Helpers, MAX_CALL_DEPTH, ProgKind};

fn prog(kind: ProgKind, insns: &[Insn]) -> Program {
    validate(insns.to_vec(), kind, &table()).expect("valid program")
}

/// Runs `insns` in both back ends and returns the JIT's result, asserting that the interpreter
/// agrees on the result and on the memory afterwards. Fault addresses inside the stack differ
/// between back ends (each has its own stack), so tests compare those by kind and pc only.
fn both(kind: ProgKind, insns: &[Insn], mem: &mut [u8]) -> Result<u64, Fault> {
    let p = prog(kind, insns);
    let jit = JitProgram::compile(&p).expect("compile");
    let interp = Interpreter::new(&p);
    let mut theirs = mem.to_vec();
    let mem_before = mem.to_vec();
    let (ours, want) = match kind {
        ProgKind::Raw => (jit.run_raw(mem), interp.run_raw(&mut theirs)),
        ProgKind::Xdp => (jit.run_xdp(mem, 7, 3), interp.run_xdp(&mut theirs, 7, 3)),
    };
    if kind == ProgKind::Xdp {
        // The batch entry, on a batch of two copies of the input, gives each the same verdict.
        let (mut one, mut two) = (mem_before.clone(), mem_before.clone());
        let mut refs = [PacketRef::new(&mut one), PacketRef::new(&mut two)];
        let mut verdicts = [u64::MAX; 2];
        let faults = jit.run_batch(&mut refs, 7, 3, &mut verdicts);
        let expected = want.unwrap_or(Fault::VERDICT);
        assert_eq!((verdicts, faults), ([expected; 2], 2 * want.is_err() as usize), "batch: {insns:?}");
        assert_eq!((&one, &two), (&theirs, &theirs), "memory after a batch of {insns:?}");
    }
    match (ours, want) {
        (Err(Fault::OutOfBounds { pc: a, size: s, write: w, .. }), Err(Fault::OutOfBounds { pc: b, size: t, write: x, .. })) => {
            assert_eq!((a, s, w), (b, t, x), "{insns:?}")
        }
        _ => assert_eq!(ours, want, "{insns:?}"),
    }
    assert_eq!(mem, &theirs[..], "memory after {insns:?}");
    ours
}

fn raw(insns: &[Insn], mem: &mut [u8]) -> Result<u64, Fault> {
    both(ProgKind::Raw, insns, mem)
}

fn xdp(insns: &[Insn], packet: &mut [u8]) -> Result<u64, Fault> {
    both(ProgKind::Xdp, insns, packet)
}

/// `r0 = value` for any 64-bit value.
fn load(r: u8, value: u64) -> [Insn; 2] {
    lddw(r, value)
}

/// Runs `op` on r0 = a (and r1 = b for register forms) and returns r0.
fn alu(op: Insn, a: u64, b: u64) -> u64 {
    let [a0, a1] = load(0, a);
    let [b0, b1] = load(1, b);
    raw(&[a0, a1, b0, b1, op, exit()], &mut []).expect("no fault")
}

fn local(imm: i32) -> Insn {
    Insn::new(CLASS_JMP | JMP_CALL, 0, CALL_LOCAL, 0, imm)
}

fn callx(reg: u8) -> Insn {
    Insn::new(CLASS_JMP | JMP_CALL | SRC_X, reg, 0, 0, 0)
}

fn atomic(size: u8, dst: u8, src: u8, off: i16, op: i32) -> Insn {
    Insn::new(CLASS_STX | MODE_ATOMIC | size, dst, src, off, op)
}

unsafe extern "C" fn add5(a: u64, b: u64, c: u64, d: u64, e: u64) -> u64 {
    a.wrapping_add(b).wrapping_add(c).wrapping_add(d).wrapping_add(e)
}

/// Reads `ingress_ifindex` through a context pointer.
unsafe extern "C" fn ifindex_of(ctx: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    // SAFETY: test programs pass the context pointer they were given in r1.
    unsafe { (*(ctx as *const XdpContext)).ingress_ifindex as u64 }
}

unsafe extern "C" fn first(a: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    a
}

/// Writes 0xee over `len` bytes at `ptr`: lets tests see that helpers get real pointers.
unsafe extern "C" fn scribble(ptr: u64, len: u64, _: u64, _: u64, _: u64) -> u64 {
    // SAFETY: test programs pass a pointer to `len` writable bytes of their stack or memory.
    unsafe { std::ptr::write_bytes(ptr as *mut u8, 0xee, len as usize) };
    len
}

fn table() -> Helpers {
    Helpers::from_list(&[
        Helper { id: 1, name: "add5", func: add5, unwind_on_zero: false },
        Helper { id: 2, name: "scribble", func: scribble, unwind_on_zero: false },
        Helper { id: 3, name: "ifindex_of", func: ifindex_of, unwind_on_zero: false },
        Helper { id: 5, name: "unwind", func: first, unwind_on_zero: true },
    ])
}

const EDGES: [u64; 10] = [
    0,
    1,
    2,
    0x7f,
    0xffff_ffff,
    0x8000_0000,
    0x1_0000_0001,
    i64::MAX as u64,
    i64::MIN as u64,
    u64::MAX,
];

const ALU_OPS: [u8; 13] =
    [ALU_ADD, ALU_SUB, ALU_MUL, ALU_DIV, ALU_OR, ALU_AND, ALU_LSH, ALU_RSH, ALU_MOD, ALU_XOR, ALU_MOV, ALU_ARSH, ALU_NEG];

/// Runs `op` on r0 = a, r1 = b for every pair of edge values in one program that stores each
/// result into memory, so `both` compares every result separately.
fn alu_table(op: Insn) {
    let mut p = vec![mov64_reg(9, 1)];
    for (i, &a) in EDGES.iter().enumerate() {
        for (j, &b) in EDGES.iter().enumerate() {
            p.extend(load(0, a));
            p.extend(load(1, b));
            let op = if op.source() == SRC_K && op.code() != ALU_NEG { Insn { imm: b as i32, ..op } } else { op };
            p.push(op);
            p.push(stx(SIZE_DW, 9, 0, ((i * EDGES.len() + j) * 8) as i16));
        }
    }
    p.push(exit());
    let mut mem = vec![0u8; EDGES.len() * EDGES.len() * 8];
    raw(&p, &mut mem).expect("no fault");
}

#[test]
fn alu64_and_alu32_agree_with_the_interpreter_on_edge_values() {
    for class in [CLASS_ALU64, CLASS_ALU] {
        for code in ALU_OPS {
            for signed in [0i16, 1] {
                if signed == 1 && !matches!(code, ALU_DIV | ALU_MOD) {
                    continue;
                }
                if code == ALU_NEG {
                    alu_table(Insn::new(class | code, 0, 0, 0, 0));
                } else {
                    alu_table(Insn::new(class | SRC_X | code, 0, 1, signed, 0));
                    alu_table(Insn::new(class | code, 0, 0, signed, 0));
                }
            }
        }
    }
}

#[test]
fn alu_results_are_pinned() {
    let m = u64::MAX;
    assert_eq!(alu(alu32_imm(ALU_ADD, 0, 1), 0xffff_ffff, 0), 0, "32-bit add wraps and zero-extends");
    assert_eq!(alu(alu32_reg(ALU_MOV, 0, 1), 7, m), 0xffff_ffff);
    assert_eq!(alu(alu64_imm(ALU_MOV, 0, -1), 0, 0), m, "64-bit immediates sign-extend");
    assert_eq!(alu(alu64_reg(ALU_LSH, 0, 1), 1, 65), 2, "shift counts are masked");
    assert_eq!(alu(alu32_reg(ALU_LSH, 0, 1), 1, 33), 2);
    assert_eq!(alu(alu32_imm(ALU_ARSH, 0, 4), 0x8000_0000, 0), 0xf800_0000, "arsh32 zero-extends");
    assert_eq!(alu(alu64_reg(ALU_DIV, 0, 1), 7, 0), 0, "x / 0 = 0");
    assert_eq!(alu(alu64_reg(ALU_MOD, 0, 1), 7, 0), 7, "x % 0 = x");
    assert_eq!(alu(alu32_reg(ALU_MOD, 0, 1), 0x1_0000_0007, 0), 7);
    let sdiv = Insn::new(CLASS_ALU64 | SRC_X | ALU_DIV, 0, 1, 1, 0);
    let smod = Insn::new(CLASS_ALU64 | SRC_X | ALU_MOD, 0, 1, 1, 0);
    assert_eq!(alu(sdiv, i64::MIN as u64, m), i64::MIN as u64, "INT_MIN / -1 wraps");
    assert_eq!(alu(smod, i64::MIN as u64, m), 0);
    assert_eq!(alu(sdiv, -7i64 as u64, 2), -3i64 as u64);
    assert_eq!(alu(smod, -7i64 as u64, 2), -1i64 as u64, "smod takes the dividend's sign");
    let sdiv32 = Insn::new(CLASS_ALU | ALU_DIV, 0, 0, 1, -1);
    assert_eq!(alu(sdiv32, i32::MIN as u32 as u64, 0), i32::MIN as u32 as u64);
    assert_eq!(alu(alu64_imm(ALU_DIV, 0, -1), m, 0), 1, "64-bit div by imm -1 is by u64::MAX");
    assert_eq!(alu(alu32_imm(ALU_NEG, 0, 0), 1, 0), 0xffff_ffff);
}

#[test]
fn movsx_sign_extends_from_the_narrow_width() {
    let sx = |class, off| Insn::new(class | SRC_X | ALU_MOV, 0, 1, off, 0);
    assert_eq!(alu(sx(CLASS_ALU64, 8), 0, 0x80), 0xffff_ffff_ffff_ff80);
    assert_eq!(alu(sx(CLASS_ALU64, 16), 0, 0x1_8000), 0xffff_ffff_ffff_8000);
    assert_eq!(alu(sx(CLASS_ALU64, 32), 0, 0x8000_0000), 0xffff_ffff_8000_0000);
    assert_eq!(alu(sx(CLASS_ALU, 8), 0, 0xff), 0xffff_ffff);
    assert_eq!(alu(sx(CLASS_ALU, 16), 0, 0x7fff), 0x7fff);
}

#[test]
fn byte_order_operations() {
    let end = |class, src, bits| Insn::new(class | ALU_END | src, 0, 0, 0, bits);
    let v = 0x0102_0304_0506_0708u64;
    assert_eq!(alu(end(CLASS_ALU, SRC_K, 16), v, 0), 0x0708, "le16 truncates");
    assert_eq!(alu(end(CLASS_ALU, SRC_K, 32), v, 0), 0x0506_0708);
    assert_eq!(alu(end(CLASS_ALU, SRC_K, 64), v, 0), v);
    assert_eq!(alu(end(CLASS_ALU, SRC_X, 16), v, 0), 0x0807, "be16 swaps");
    assert_eq!(alu(end(CLASS_ALU, SRC_X, 32), v, 0), 0x0807_0605);
    assert_eq!(alu(end(CLASS_ALU, SRC_X, 64), v, 0), 0x0807_0605_0403_0201);
    assert_eq!(alu(end(CLASS_ALU64, SRC_K, 16), v, 0), 0x0807, "bswap16");
    assert_eq!(alu(end(CLASS_ALU64, SRC_K, 32), v, 0), 0x0807_0605);
    assert_eq!(alu(end(CLASS_ALU64, SRC_K, 64), v, 0), 0x0807_0605_0403_0201);
}

#[test]
fn jumps_agree_with_the_interpreter_on_edge_values() {
    let conds = [JMP_JEQ, JMP_JGT, JMP_JGE, JMP_JSET, JMP_JNE, JMP_JSGT, JMP_JSGE, JMP_JLT, JMP_JLE, JMP_JSLT, JMP_JSLE];
    for class in [CLASS_JMP, CLASS_JMP32] {
        for code in conds {
            for from_reg in [true, false] {
                // Each pair stores 1 (not taken) or 2 (taken) into its own memory slot.
                let mut p = vec![mov64_reg(9, 1)];
                for (i, &a) in EDGES.iter().enumerate() {
                    for (j, &b) in EDGES.iter().enumerate() {
                        p.extend(load(1, a));
                        p.extend(load(2, b));
                        p.push(mov64_imm(3, 2));
                        p.push(if from_reg {
                            Insn::new(class | SRC_X | code, 1, 2, 1, 0)
                        } else {
                            Insn::new(class | code, 1, 0, 1, b as i32)
                        });
                        p.push(mov64_imm(3, 1));
                        p.push(stx(SIZE_B, 9, 3, (i * EDGES.len() + j) as i16));
                    }
                }
                p.push(exit());
                let mut mem = vec![0u8; EDGES.len() * EDGES.len()];
                raw(&p, &mut mem).expect("no fault");
                assert!(mem.iter().all(|&m| m == 1 || m == 2));
            }
        }
    }
    // Pinned: signed versus unsigned, and 32-bit comparisons looking at the low half only.
    let run = |j: Insn, a: u64| {
        let [a0, a1] = load(1, a);
        raw(&[a0, a1, j, mov64_imm(0, 0), exit(), mov64_imm(0, 1), exit()], &mut []).unwrap()
    };
    assert_eq!(run(jmp_imm(JMP_JSGT, 1, 0, 2), u64::MAX), 0);
    assert_eq!(run(jmp_imm(JMP_JGT, 1, 0, 2), u64::MAX), 1);
    assert_eq!(run(jmp32_imm(JMP_JEQ, 1, 5, 2), 0x7_0000_0005), 1);
    assert_eq!(run(jmp32_imm(JMP_JSLT, 1, 0, 2), 0x8000_0000), 1);
    assert_eq!(run(Insn::new(CLASS_JMP32 | JMP_JA, 0, 0, 0, 2), 0), 1, "ja32 jumps by imm");
}

#[test]
fn lddw_loads_64_bits() {
    let [a, b] = lddw(0, 0x1122_3344_5566_7788);
    assert_eq!(raw(&[a, b, exit()], &mut []), Ok(0x1122_3344_5566_7788));
}

#[test]
fn packet_loads_are_big_endian_and_return_zero_out_of_range() {
    let mut pkt: Vec<u8> = (0u8..16).collect();
    assert_eq!(xdp(&[ld_abs(SIZE_B, 3), exit()], &mut pkt), Ok(3));
    assert_eq!(xdp(&[ld_abs(SIZE_H, 2), exit()], &mut pkt), Ok(0x0203));
    assert_eq!(xdp(&[ld_abs(SIZE_W, 12), exit()], &mut pkt), Ok(0x0c0d_0e0f));
    assert_eq!(xdp(&[ld_abs(SIZE_W, 13), exit()], &mut pkt), Ok(0), "one byte short");
    assert_eq!(xdp(&[ld_abs(SIZE_B, -1), exit()], &mut pkt), Ok(0), "offsets are unsigned");
    assert_eq!(xdp(&[ld_abs(SIZE_B, i32::MIN), exit()], &mut pkt), Ok(0));
    let ind = |x: u64, imm, size| {
        let [a, b] = load(7, x);
        vec![a, b, mov64_imm(0, 99), ld_ind(size, 7, imm), exit()]
    };
    let mut pkt: Vec<u8> = (0u8..16).collect();
    assert_eq!(xdp(&ind(4, 2, SIZE_H), &mut pkt), Ok(0x0607));
    assert_eq!(xdp(&ind(0xffff_ffff_0000_0004, 2, SIZE_H), &mut pkt), Ok(0x0607), "x is taken as u32");
    assert_eq!(xdp(&ind(0xffff_ffff, 2, SIZE_B), &mut pkt), Ok(0), "x + imm does not wrap");
    assert_eq!(xdp(&ind(6, -2, SIZE_B), &mut pkt), Ok(0), "imm is unsigned");
    assert_eq!(xdp(&ind(14, 0, SIZE_W), &mut pkt), Ok(0));
    assert_eq!(xdp(&ind(12, 0, SIZE_W), &mut pkt), Ok(0x0c0d_0e0f));
    assert_eq!(xdp(&[ld_abs(SIZE_B, 0), exit()], &mut []), Ok(0), "empty packet");
}

#[test]
fn tests_on_packet_loads_match_the_interpreter() {
    // Such tests compare the unswapped bytes with a swapped constant: cover the constants the
    // loaded value can and cannot equal, in both jump widths.
    let pkt: Vec<u8> = vec![0x08, 0x00, 0x86, 0xdd, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01];
    let consts = [0i32, 1, 0x800, 0x86dd, 0x0008, 0xffff, 0x1_0000, 0x0800_86dd, -1, 0x1fff, i32::MIN];
    for (size, offs) in [(SIZE_H, [0, 2, 4, 8]), (SIZE_W, [0, 4, 8, 6])] {
        for off in offs {
            for class in [CLASS_JMP, CLASS_JMP32] {
                for code in [JMP_JEQ, JMP_JNE, JMP_JSET] {
                    for k in consts {
                        let p = [
                            ld_abs(size, off),
                            Insn::new(class | code, 0, 0, 2, k),
                            mov64_imm(0, 1),
                            exit(),
                            mov64_imm(0, 2),
                            exit(),
                        ];
                        let r = xdp(&p, &mut pkt.clone()).unwrap();
                        assert!(r == 1 || r == 2);
                    }
                }
            }
        }
    }
    let p = [ld_abs(SIZE_H, 2), jmp32_imm(JMP_JEQ, 0, 0x86dd, 1), exit(), mov64_imm(0, 7), exit()];
    assert_eq!(xdp(&p, &mut pkt.clone()), Ok(7));
    // The swapped value stays available after the test.
    let p = [ld_abs(SIZE_H, 2), jmp32_imm(JMP_JEQ, 0, 0x86dd, 0), exit()];
    assert_eq!(xdp(&p, &mut pkt.clone()), Ok(0x86dd));
}

#[test]
fn context_fields_read_the_runs_own_values() {
    // r0 = data_end - data + ingress_ifindex * 100 + rx_queue_index * 10 + packet[1] + data_meta - data
    let p = [
        ldx(SIZE_W, 2, 1, xdp_md::DATA),
        ldx(SIZE_W, 3, 1, xdp_md::DATA_END),
        ldx(SIZE_W, 4, 1, xdp_md::INGRESS_IFINDEX),
        ldx(SIZE_W, 5, 1, xdp_md::RX_QUEUE_INDEX),
        ldx(SIZE_W, 8, 1, xdp_md::DATA_META),
        ldx(SIZE_W, 9, 1, xdp_md::EGRESS_IFINDEX),
        mov64_reg(0, 3),
        alu64_reg(ALU_SUB, 0, 2),
        alu64_imm(ALU_MUL, 4, 100),
        alu64_reg(ALU_ADD, 0, 4),
        alu64_imm(ALU_MUL, 5, 10),
        alu64_reg(ALU_ADD, 0, 5),
        ldx(SIZE_B, 6, 2, 1),
        alu64_reg(ALU_ADD, 0, 6),
        alu64_reg(ALU_SUB, 8, 2),
        alu64_reg(ALU_ADD, 0, 8),
        alu64_reg(ALU_ADD, 0, 9),
        exit(),
    ];
    assert_eq!(xdp(&p, &mut [0u8, 5, 0, 0]), Ok(4 + 700 + 30 + 5));
    // r1 itself escapes (into a helper), so a real context is built.
    let p = [call_helper(3), exit()];
    assert_eq!(xdp(&p, &mut [1u8; 4]), Ok(7));
}

#[test]
fn loads_and_stores_reach_the_memory_and_the_stack() {
    let mut mem = [0u8; 16];
    let p = [
        st(SIZE_DW, 1, 0, -2),
        st(SIZE_W, 1, 8, 0x1234_5678),
        mov64_imm(3, 0xab),
        stx(SIZE_B, 1, 3, 15),
        stx(SIZE_H, 10, 3, -2),
        ldx(SIZE_H, 4, 10, -2),
        stx(SIZE_H, 1, 4, 12),
        Insn::new(CLASS_LDX | MODE_MEMSX | SIZE_B, 5, 1, 15, 0),
        Insn::new(CLASS_LDX | MODE_MEMSX | SIZE_H, 6, 1, 0, 0),
        Insn::new(CLASS_LDX | MODE_MEMSX | SIZE_W, 7, 1, 8, 0),
        ldx(SIZE_DW, 0, 1, 0),
        alu64_reg(ALU_ADD, 0, 5),
        alu64_reg(ALU_XOR, 0, 6),
        alu64_reg(ALU_ADD, 0, 7),
        exit(),
    ];
    let want = ((-2i64 as u64).wrapping_add(-0x55i64 as u64) ^ (-2i64 as u64)).wrapping_add(0x1234_5678);
    assert_eq!(raw(&p, &mut mem), Ok(want));
    assert_eq!(mem[12..16], [0xab, 0, 0, 0xab]);
}

#[test]
fn out_of_bounds_accesses_fault_with_the_interpreters_evidence() {
    let mut mem = [1u8, 2, 3, 4];
    let base = mem.as_ptr() as u64;
    let p = [mov64_imm(0, 0), ldx(SIZE_W, 0, 1, 1), exit()];
    assert_eq!(raw(&p, &mut mem), Err(Fault::OutOfBounds { pc: 1, addr: base + 1, size: 4, write: false }));
    let p = [st(SIZE_H, 1, -1, 7), exit()];
    assert_eq!(raw(&p, &mut mem), Err(Fault::OutOfBounds { pc: 0, addr: base - 1, size: 2, write: true }));
    let p = [st(SIZE_B, 1, 3, 9), ldx(SIZE_W, 0, 1, 0), exit()];
    assert_eq!(raw(&p, &mut mem), Ok(u32::from_le_bytes([1, 2, 3, 9]) as u64));
    let p = [atomic(SIZE_DW, 1, 2, 8, ATOMIC_ADD), exit()];
    assert!(matches!(raw(&p, &mut mem), Err(Fault::OutOfBounds { pc: 0, size: 8, write: true, .. })));
    // Without any stack, r10 is 0, so the address is the same in both back ends.
    let p = [ldx(SIZE_B, 0, 10, 4), exit()];
    assert_eq!(raw(&p, &mut []), Err(Fault::OutOfBounds { pc: 0, addr: 4, size: 1, write: false }));
    // A constant address.
    let [a, b] = lddw(2, 0x1000);
    assert_eq!(raw(&[a, b, stx(SIZE_DW, 2, 2, 0), exit()], &mut []), Err(Fault::OutOfBounds { pc: 2, addr: 0x1000, size: 8, write: true }));
    // The stack area ends at the entry frame's top and starts MAX_CALL_DEPTH frames below.
    let area = (MAX_CALL_DEPTH * STACK_SIZE) as i16;
    assert!(matches!(raw(&[ldx(SIZE_B, 0, 10, 0), exit()], &mut []), Err(Fault::OutOfBounds { pc: 0, .. })));
    assert!(matches!(raw(&[ldx(SIZE_B, 0, 10, -area - 1), exit()], &mut []), Err(Fault::OutOfBounds { .. })));
    assert_eq!(raw(&[ldx(SIZE_B, 0, 10, -area), exit()], &mut []), Ok(0));
    // The same through a pointer the analysis cannot follow.
    let p = [mov64_reg(2, 10), alu64_imm(ALU_ADD, 2, -(area as i32)), ldx(SIZE_W, 0, 2, -1), exit()];
    assert!(matches!(raw(&p, &mut []), Err(Fault::OutOfBounds { pc: 2, size: 4, .. })));
    let p = [mov64_reg(2, 10), alu64_imm(ALU_ADD, 2, -(area as i32)), ldx(SIZE_W, 0, 2, 0), exit()];
    assert_eq!(raw(&p, &mut []), Ok(0));
}

#[test]
fn the_stack_starts_zeroed_on_every_run() {
    let dirty = [st(SIZE_DW, 10, -8, -1), st(SIZE_DW, 10, -4000, -1), ldx(SIZE_DW, 0, 10, -4000), exit()];
    let jit = JitProgram::compile(&prog(ProgKind::Raw, &dirty)).unwrap();
    assert_eq!(jit.run_raw(&mut []), Ok(u64::MAX));
    assert_eq!(jit.run_raw(&mut []), Ok(u64::MAX));
    let read = [ldx(SIZE_DW, 0, 10, -8), ldx(SIZE_DW, 1, 10, -4000), alu64_reg(ALU_OR, 0, 1), exit()];
    assert_eq!(raw(&read, &mut []), Ok(0));
    // r10 escapes: the whole area is zeroed.
    let far = [mov64_reg(2, 10), ldx(SIZE_DW, 0, 2, -2000), ldx(SIZE_DW, 1, 2, -4096), alu64_reg(ALU_OR, 0, 1), st(SIZE_DW, 2, -2000, 1), exit()];
    let jit = JitProgram::compile(&prog(ProgKind::Raw, &far)).unwrap();
    assert_eq!(jit.run_raw(&mut []), Ok(0));
    assert_eq!(jit.run_raw(&mut []), Ok(0));
}

#[test]
fn atomics_match_the_interpreter_aligned_and_not() {
    let ops = [
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
    for size in [SIZE_W, SIZE_DW] {
        for op in ops {
            for at in [0i16, 3, 8] {
                for r0 in [0x0102_0304_0506_0708u64, 0x1111_1111_1111_1111] {
                    let mut mem = [0x11u8; 24];
                    let [a, b] = load(2, 0xf0f0_f0f0_0f0f_0f0f);
                    let [c, d] = load(0, r0);
                    // r0 + r2 * 3 mixes both results into one number.
                    let p = [
                        a,
                        b,
                        c,
                        d,
                        atomic(size, 1, 2, at, op),
                        mov64_reg(3, 2),
                        alu64_imm(ALU_MUL, 3, 3),
                        alu64_reg(ALU_ADD, 0, 3),
                        exit(),
                    ];
                    raw(&p, &mut mem).expect("in range");
                }
            }
        }
    }
    // Pinned: fetch-add returns the old value, cmpxchg stores only on a match.
    let mut mem = 5u64.to_le_bytes();
    let p = [mov64_imm(2, 3), atomic(SIZE_DW, 1, 2, 0, ATOMIC_ADD | ATOMIC_FETCH), mov64_reg(0, 2), exit()];
    assert_eq!(raw(&p, &mut mem), Ok(5));
    assert_eq!(u64::from_le_bytes(mem), 8);
    let p = [mov64_imm(0, 8), mov64_imm(2, 1), atomic(SIZE_W, 1, 2, 0, ATOMIC_CMPXCHG), exit()];
    assert_eq!(raw(&p, &mut mem), Ok(8));
    assert_eq!(u64::from_le_bytes(mem), 1);
    assert_eq!(raw(&p, &mut mem), Ok(1));
    assert_eq!(u64::from_le_bytes(mem), 1);
    // Atomics on the stack.
    let p = [st(SIZE_DW, 10, -8, 40), mov64_imm(2, 2), atomic(SIZE_DW, 10, 2, -8, ATOMIC_ADD), ldx(SIZE_DW, 0, 10, -8), exit()];
    assert_eq!(raw(&p, &mut []), Ok(42));
}

#[test]
fn helpers_are_called_with_r1_to_r5_and_leave_them_alone() {
    let p = [
        mov64_imm(1, 1),
        mov64_imm(2, 20),
        mov64_imm(3, 300),
        mov64_imm(4, 4000),
        mov64_imm(5, 50000),
        call_helper(1),
        alu64_reg(ALU_ADD, 0, 1),
        alu64_reg(ALU_ADD, 0, 5),
        exit(),
    ];
    assert_eq!(raw(&p, &mut []), Ok(54321 + 1 + 50000));
    // Helpers get real pointers into the stack and the memory.
    let mut mem = [0u8; 4];
    let p = [
        mov64_imm(2, 2),
        call_helper(2),
        mov64_reg(1, 10),
        alu64_imm(ALU_ADD, 1, -8),
        mov64_imm(2, 8),
        call_helper(2),
        ldx(SIZE_DW, 0, 10, -8),
        exit(),
    ];
    assert_eq!(raw(&p, &mut mem), Ok(0xeeee_eeee_eeee_eeee));
    assert_eq!(mem, [0xee, 0xee, 0, 0]);
}

#[test]
fn an_unwinding_helper_returning_zero_ends_the_run_even_from_a_callee() {
    let p = [mov64_imm(1, 0), call_helper(5), mov64_imm(0, 7), exit()];
    assert_eq!(raw(&p, &mut []), Ok(0));
    let p = [mov64_imm(1, 3), call_helper(5), mov64_imm(0, 7), exit()];
    assert_eq!(raw(&p, &mut []), Ok(7));
    let p = [mov64_imm(1, 0), local(2), mov64_imm(0, 7), exit(), call_helper(5), mov64_imm(0, 9), exit()];
    assert_eq!(raw(&p, &mut []), Ok(0));
}

#[test]
fn callx_dispatches_on_the_register_and_faults_on_unknown_ids() {
    let p = [mov64_imm(1, 2), mov64_imm(2, 40), mov64_imm(6, 1), callx(6), exit()];
    assert_eq!(raw(&p, &mut []), Ok(42));
    let p = [mov64_imm(1, 0), mov64_imm(3, 5), callx(3), mov64_imm(0, 7), exit()];
    assert_eq!(raw(&p, &mut []), Ok(0), "callx honours unwinding");
    for id in [0i32, 4, 9, -1] {
        let p = [mov64_imm(3, id), callx(3), exit()];
        assert_eq!(raw(&p, &mut []), Err(Fault::UnknownHelper { pc: 1, id: id as i64 as u64 }));
    }
}

#[test]
fn local_calls_save_r6_to_r9_and_share_the_stack_area() {
    // main: r6 = 5; *(r10-8) = 40; r1 = r10 - 8; call f; r0 += r6; r0 += *(r10-8); r0 += r2; exit
    // f:    r6 = 100; r2 = 1000; r0 = *(u64 *)(r1 + 0); *(u64 *)(r10 - 8) = 1; r0 += 1; exit
    let p = [
        mov64_imm(6, 5),
        st(SIZE_DW, 10, -8, 40),
        mov64_reg(1, 10),
        alu64_imm(ALU_ADD, 1, -8),
        local(5),
        alu64_reg(ALU_ADD, 0, 6),
        ldx(SIZE_DW, 7, 10, -8),
        alu64_reg(ALU_ADD, 0, 7),
        alu64_reg(ALU_ADD, 0, 2),
        exit(),
        mov64_imm(6, 100),
        mov64_imm(2, 1000),
        ldx(SIZE_DW, 0, 1, 0),
        st(SIZE_DW, 10, -8, 1),
        alu64_imm(ALU_ADD, 0, 1),
        exit(),
    ];
    // f's frame is below main's; r1-r5 are not restored, so main sees f's r2.
    assert_eq!(raw(&p, &mut []), Ok(41 + 5 + 40 + 1000));
    // Callees see the caller's r6-r9 and r0.
    let p = [mov64_imm(0, 3), mov64_imm(9, 4), local(1), exit(), alu64_reg(ALU_ADD, 0, 9), exit()];
    assert_eq!(raw(&p, &mut []), Ok(7));
}

#[test]
fn call_depth_is_bounded_and_faults_report_the_callee_pc() {
    let recurse = [local(-1), exit()];
    assert_eq!(raw(&recurse, &mut []), Err(Fault::CallDepth { pc: 0 }));
    let mut p = Vec::new();
    for _ in 0..MAX_CALL_DEPTH - 1 {
        p.extend([local(1), exit()]);
    }
    p.extend([mov64_imm(0, 3), exit()]);
    assert_eq!(raw(&p, &mut []), Ok(3), "exactly MAX_CALL_DEPTH frames is fine");
    // The deepest frame's stack is still inside the area.
    let n = p.len();
    p[n - 2] = ldx(SIZE_DW, 0, 10, -(STACK_SIZE as i16));
    assert_eq!(raw(&p, &mut []), Ok(0));
    let mut mem = [0u8; 2];
    let base = mem.as_ptr() as u64;
    let p = [local(1), exit(), ldx(SIZE_W, 0, 1, 0), exit()];
    assert_eq!(raw(&p, &mut mem), Err(Fault::OutOfBounds { pc: 2, addr: base, size: 4, write: false }));
}

#[test]
fn packet_checks_are_elided_once_proven() {
    let notes = |insns: &[Insn]| {
        let layout = analyze::analyze(&prog(ProgKind::Xdp, insns)).unwrap();
        (0..insns.len()).map(|pc| layout.funcs[0].note(pc)).collect::<Vec<_>>()
    };
    // A load at 12 after a check that 24 bytes exist needs no check of its own.
    let n = notes(&[ld_abs(SIZE_B, 23), ld_abs(SIZE_H, 12), exit()]);
    assert_eq!(&n[..2], &[Note::PacketCheck(24), Note::Proven]);
    // Within a pure run the larger check is hoisted to the first load.
    let n = notes(&[ld_abs(SIZE_H, 12), mov64_reg(2, 0), ld_abs(SIZE_B, 23), exit()]);
    assert_eq!(&n[..3], &[Note::PacketCheck(24), Note::None, Note::Proven]);
    // ...but not across a packet store, whose effect would be lost.
    let n = notes(&[ld_abs(SIZE_H, 12), ldx(SIZE_W, 2, 1, xdp_md::DATA), st(SIZE_B, 2, 0, 1), ld_abs(SIZE_B, 23), exit()]);
    assert_eq!(n[0], Note::PacketCheck(14));
    assert_eq!(n[3], Note::PacketCheck(24));
    // udp dst port 53: one check on entry covers the IPv4 path; IPv6 adds one for port 56.
    let n = notes(&udp_dst_port_53());
    let checks: Vec<(usize, u64)> =
        n.iter().enumerate().filter_map(|(pc, n)| if let Note::PacketCheck(k) = n { Some((pc, *k)) } else { None }).collect();
    assert_eq!(checks, [(0, 24), (4, 58)]);
    // A `data + 14 > data_end` test proves the packet loads behind it.
    let p = [
        ldx(SIZE_W, 2, 1, xdp_md::DATA),
        ldx(SIZE_W, 3, 1, xdp_md::DATA_END),
        mov64_reg(4, 2),
        alu64_imm(ALU_ADD, 4, 14),
        jmp_reg(JMP_JGT, 4, 3, 2),
        ldx(SIZE_H, 0, 2, 12),
        exit(),
        mov64_imm(0, 1),
        exit(),
    ];
    let n = notes(&p);
    assert_eq!(n[5], Note::Proven);
    assert_eq!(xdp(&p, &mut [0u8; 14]), Ok(0));
    assert_eq!(xdp(&p, &mut [0u8; 13]), Ok(1));
    // Frame accesses at constant offsets need no check either.
    let n = notes(&[st(SIZE_DW, 10, -8, 1), ldx(SIZE_DW, 0, 10, -8), ldx(SIZE_DW, 0, 10, 0), exit()]);
    assert_eq!(&n[..3], &[Note::Stack, Note::Stack, Note::Checked]);
}

#[test]
fn elided_checks_keep_the_interpreters_results_on_short_packets() {
    let p = udp_dst_port_53();
    let full = udp_packet(53);
    for len in 0..=full.len() {
        let mut pkt = full[..len].to_vec();
        xdp(&p, &mut pkt).unwrap();
    }
    let mut ip6 = [0u8; 64];
    ip6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    ip6[20] = 17;
    ip6[56..58].copy_from_slice(&53u16.to_be_bytes());
    for len in 0..=ip6.len() {
        let mut pkt = ip6[..len].to_vec();
        let want = if len >= 58 { 262144 } else { 0 };
        assert_eq!(xdp(&p, &mut pkt), Ok(want), "len {len}");
    }
    assert_eq!(xdp(&p, &mut udp_packet(53)), Ok(262144));
    assert_eq!(xdp(&p, &mut udp_packet(54)), Ok(0));
}

#[test]
fn compiled_programs_are_shareable_and_report_their_size() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<JitProgram>();
    let j = JitProgram::compile(&prog(ProgKind::Raw, &[mov64_imm(0, 1), exit()])).unwrap();
    assert!(j.code_size() > 0);
    let shared = std::sync::Arc::new(j);
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let j = shared.clone();
            std::thread::spawn(move || j.run_raw(&mut []))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), Ok(1));
    }
}

/// `udp dst port 53` as libpcap compiles it (IPv6 and IPv4 branches), in the eBPF the classic
/// translator emits for it: A = r0, X = r7, 32-bit compares, returns copied to each exit.
fn udp_dst_port_53() -> Vec<Insn> {
    // Slots of classic instructions 14 (`ret #262144`) and 15 (`ret #0`).
    let (ret_match, ret_zero) = (19, 21);
    let mut v = vec![
        ld_abs(SIZE_H, 12),                 // 0  (000) ldh [12]
        jmp32_imm(JMP_JNE, 0, 0x86dd, 0),   // 1  (001) jeq #0x86dd jt 2 jf 6
        ld_abs(SIZE_B, 20),                 // 2  (002) ldb [20]
        jmp32_imm(JMP_JNE, 0, 17, 0),       // 3  (003) jeq #0x11 jt 4 jf 15
        ld_abs(SIZE_H, 56),                 // 4  (004) ldh [56]
        jmp32_imm(JMP_JEQ, 0, 53, 0),       // 5  (005) jeq #0x35 jt 14 jf 15
        mov32_imm(0, 0),                    // 6
        exit(),                             // 7
        jmp32_imm(JMP_JNE, 0, 0x800, 0),    // 8  (006) jeq #0x800 jt 7 jf 15
        ld_abs(SIZE_B, 23),                 // 9  (007) ldb [23]
        jmp32_imm(JMP_JNE, 0, 17, 0),       // 10 (008) jeq #0x11 jt 9 jf 15
        ld_abs(SIZE_H, 20),                 // 11 (009) ldh [20]
        jmp32_imm(JMP_JSET, 0, 0x1fff, 0),  // 12 (010) jset #0x1fff jt 15 jf 11
        ld_abs(SIZE_B, 14),                 // 13 (011) ldxb 4*([14]&0xf)
        alu32_imm(ALU_AND, 0, 0xf),         // 14
        alu32_imm(ALU_LSH, 0, 2),           // 15
        mov32_reg(7, 0),                    // 16
        ld_ind(SIZE_H, 7, 16),              // 17 (012) ldh [x + 16]
        jmp32_imm(JMP_JNE, 0, 53, 0),       // 18 (013) jeq #0x35 jt 14 jf 15
        mov32_imm(0, 262144),               // 19 (014) ret #262144
        exit(),                             // 20
        mov32_imm(0, 0),                    // 21 (015) ret #0
        exit(),                             // 22
    ];
    let mut to = |at: usize, target: usize| v[at].off = (target as i64 - at as i64 - 1) as i16;
    to(1, 8);
    to(5, ret_match);
    for at in [3, 8, 10, 12, 18] {
        to(at, ret_zero);
    }
    v
}

fn udp_packet(dst_port: u16) -> Vec<u8> {
    let mut p = vec![0u8; 64];
    p[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    p[14] = 0x45;
    p[16..18].copy_from_slice(&50u16.to_be_bytes());
    p[22] = 64;
    p[23] = 17;
    p[34..36].copy_from_slice(&12345u16.to_be_bytes());
    p[36..38].copy_from_slice(&dst_port.to_be_bytes());
    p
}

/// `xdp_adjust_head(ctx, head)`, then `xdp_adjust_tail(ctx, tail)` if the first succeeded,
/// then r0 packs what the program sees: the window's length, its first byte (if any), the
/// byte a pointer derived before the move reads (the slice stays reachable, as in the
/// interpreter), an LD_ABS (which addresses the slice), and a callee's view of the length.
fn adjusting(head: i32, tail: i32) -> Vec<Insn> {
    vec![
        mov64_reg(6, 1),
        ldx(SIZE_W, 8, 6, 0), // r8 = data before the move
        mov64_imm(2, head),
        call_helper(crate::bpf::helpers::ADJUST_HEAD as i32),
        mov64_reg(9, 0),
        jmp_imm(JMP_JNE, 0, 0, 3),
        mov64_reg(1, 6),
        mov64_imm(2, tail),
        call_helper(crate::bpf::helpers::ADJUST_TAIL as i32),
        ldx(SIZE_W, 2, 6, 0),
        ldx(SIZE_W, 3, 6, 4),
        mov64_reg(7, 3),
        alu64_reg(ALU_SUB, 7, 2), // r7 = window length
        mov64_reg(4, 2),
        alu64_imm(ALU_ADD, 4, 1),
        jmp_reg(JMP_JGT, 4, 3, 3),
        ldx(SIZE_B, 4, 2, 0),
        alu64_imm(ALU_LSH, 4, 16),
        alu64_reg(ALU_OR, 7, 4),
        ldx(SIZE_B, 4, 8, 0),
        alu64_imm(ALU_LSH, 4, 24),
        alu64_reg(ALU_OR, 7, 4),
        ld_abs(SIZE_B, 1),
        alu64_imm(ALU_LSH, 0, 32),
        alu64_reg(ALU_OR, 7, 0),
        mov64_reg(1, 6),
        local(5),
        alu64_imm(ALU_LSH, 0, 40),
        alu64_reg(ALU_OR, 0, 7),
        alu64_imm(ALU_LSH, 9, 56),
        alu64_reg(ALU_OR, 0, 9),
        exit(),
        // The callee: data_end - data, read through its own copy of the context pointer.
        ldx(SIZE_W, 2, 1, 0),
        ldx(SIZE_W, 0, 1, 4),
        alu64_reg(ALU_SUB, 0, 2),
        exit(),
    ]
}

#[test]
fn adjust_head_and_tail_move_the_window_as_in_the_interpreter() {
    use crate::bpf::helpers::RunEnv;
    use crate::bpf::maps::MapTable;
    let env = RunEnv::new(0);
    let packet: Vec<u8> = (0..60u8).map(|i| i.wrapping_mul(7) ^ 0x5a).collect();
    let mut moved = 0;
    for head in [-1, 0, 1, 5, 14, 46, 47, 60] {
        for tail in [-50, -4, 0, 1] {
            let p = validate(adjusting(head, tail), ProgKind::Xdp, &Helpers::kernel(MapTable::default())).expect("valid");
            let jit = JitProgram::compile(&p).expect("compile");
            let interp = Interpreter::new(&p);
            let (mut a, mut b) = (packet.clone(), packet.clone());
            let want = env.run(|| interp.run_xdp(&mut b, 7, 3));
            let want_window = env.window();
            let got = env.run(|| jit.run_xdp(&mut a, 7, 3));
            assert_eq!(got, want, "head {head}, tail {tail}");
            assert_eq!(env.window(), want_window, "head {head}, tail {tail}: window");
            assert_eq!(a, b, "head {head}, tail {tail}: packet");
            moved += want_window.is_some() as usize;
            // The batch entry runs such programs one packet at a time: same verdicts.
            let mut c = packet.clone();
            let mut verdicts = [u64::MAX];
            env.run(|| jit.run_batch(&mut [PacketRef::new(&mut c)], 7, 3, &mut verdicts));
            assert_eq!(verdicts[0], want.unwrap_or(Fault::VERDICT), "head {head}, tail {tail}: batch");
        }
    }
    assert!(moved >= 8, "only {moved} runs moved the window");
}

#[test]
fn checks_proven_before_a_move_are_made_again_after_it() {
    // A length proven against data_end, then the tail moves in: the same access must be
    // checked again (it now faults outside the slice only if it leaves the slice, as in the
    // interpreter; here it stays inside, and reads the same byte).
    let insns = [
        mov64_reg(6, 1),
        ldx(SIZE_W, 2, 6, 0),
        ldx(SIZE_W, 3, 6, 4),
        mov64_reg(4, 2),
        alu64_imm(ALU_ADD, 4, 40),
        jmp_reg(JMP_JGT, 4, 3, 7),
        mov64_imm(2, 20),
        call_helper(crate::bpf::helpers::ADJUST_HEAD as i32),
        ldx(SIZE_W, 2, 6, 0),
        ldx(SIZE_B, 0, 2, 39), // proven before the move (data + 40 <= end), not after it
        exit(),
        mov64_imm(0, 0),
        exit(),
        mov64_imm(0, 1),
        exit(),
    ];
    let p = validate(insns.to_vec(), ProgKind::Xdp, &Helpers::kernel(crate::bpf::maps::MapTable::default())).expect("valid");
    let layout = analyze::analyze(&p).unwrap();
    assert!(layout.moves);
    assert_eq!(layout.funcs[0].note(9), Note::Checked);
    let jit = JitProgram::compile(&p).unwrap();
    let interp = Interpreter::new(&p);
    let mut pkt = vec![3u8; 60];
    pkt[59] = 9;
    let mut copy = pkt.clone();
    // data + 20 + 39 = the slice's last byte: in range for both.
    assert_eq!(jit.run_xdp(&mut pkt, 0, 0), interp.run_xdp(&mut copy, 0, 0));
    assert_eq!(jit.run_xdp(&mut pkt, 0, 0), Ok(9));
    // One byte shorter: the same read leaves the slice and faults in both.
    let (mut short, mut short2) = (vec![3u8; 59], vec![3u8; 59]);
    let (a, b) = (jit.run_xdp(&mut short, 0, 0), interp.run_xdp(&mut short2, 0, 0));
    assert!(matches!((a, b), (Err(Fault::OutOfBounds { pc: 9, .. }), Err(Fault::OutOfBounds { pc: 9, .. }))), "{a:?} {b:?}");
}
