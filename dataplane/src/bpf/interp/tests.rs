//! Unit tests of the general interpreter: memory model, faults, calls, helpers, fused ops.

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

#[test]
fn an_infinite_loop_ends_at_the_step_limit() {
    let spin = [ja(-1), exit()];
    assert_eq!(raw(&spin, &mut []), Err(Fault::StepLimit { pc: 0, limit: STEP_LIMIT }));
    // A conditional back-edge over a longer body, with a budget of its own.
    let p = [mov64_imm(0, 0), alu64_imm(ALU_ADD, 0, 1), alu64_imm(ALU_ADD, 1, 1), jmp_imm(JMP_JNE, 1, 0, -3), exit()];
    let i = interp(ProgKind::Raw, &p, &Helpers::none()).with_step_limit(30);
    assert_eq!(i.run_raw(&mut []), Err(Fault::StepLimit { pc: 3, limit: 30 }));
    assert_eq!(i.step_limit(), 30);
}

/// `r0` counts `n` iterations of a three-instruction body (each taken back-edge charges 3).
fn counting_loop(n: i32) -> [Insn; 6] {
    [mov64_imm(0, 0), mov64_imm(1, n), alu64_imm(ALU_ADD, 0, 1), alu64_imm(ALU_SUB, 1, 1), jmp_imm(JMP_JNE, 1, 0, -3), exit()]
}

#[test]
fn a_long_bounded_loop_under_the_limit_completes() {
    // n iterations take n - 1 back-edges: 3 * (n - 1) <= STEP_LIMIT, about 3n executed
    // instructions, as many as the budget allows.
    let most = (STEP_LIMIT / 3 + 1) as i32;
    assert_eq!(raw(&counting_loop(most), &mut []), Ok(most as u64));
    assert_eq!(raw(&counting_loop(most + 1), &mut []), Err(Fault::StepLimit { pc: 4, limit: STEP_LIMIT }));
}

#[test]
fn local_calls_charge_their_callee_length() {
    // Three calls of a two-instruction function: 6 instructions charged.
    let p = [local(3), local(2), local(1), exit(), alu64_imm(ALU_ADD, 0, 1), exit()];
    let run = |limit| interp(ProgKind::Raw, &p, &Helpers::none()).with_step_limit(limit).run_raw(&mut []);
    assert_eq!(run(6), Ok(3));
    assert_eq!(run(5), Err(Fault::StepLimit { pc: 2, limit: 5 }));
    // Deep call trees without loops are bounded by the budget too: each level calls the next
    // twice, 2^7 calls in all.
    let mut tree = Vec::new();
    for _ in 0..MAX_CALL_DEPTH - 1 {
        tree.extend([local(2), local(1), exit()]);
    }
    tree.extend([alu64_imm(ALU_ADD, 0, 1), exit()]);
    let i = interp(ProgKind::Raw, &tree, &Helpers::none());
    assert_eq!(i.run_raw(&mut []), Ok(1 << (MAX_CALL_DEPTH - 1)));
    assert!(matches!(i.with_step_limit(100).run_raw(&mut []), Err(Fault::StepLimit { limit: 100, .. })));
}

#[test]
fn a_fused_packet_test_that_jumps_back_is_charged_at_its_jump() {
    // `r0 = pkt[0]; if r0 == 0 goto 0`: fused into one op, looping while the byte is 0.
    let p = [ld_abs(SIZE_B, 0), jmp_imm(JMP_JEQ, 0, 0, -2), exit()];
    let prog = check::validate_full(p.to_vec(), ProgKind::Xdp, &Helpers::none(), &[], true).unwrap();
    let i = Interpreter::new(&prog).with_step_limit(1000);
    assert_eq!(i.run_xdp(&mut [0u8; 4], 0, 0), Err(Fault::StepLimit { pc: 1, limit: 1000 }));
    assert_eq!(i.run_xdp(&mut [7u8; 4], 0, 0), Ok(7));
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
                for load in
                    [ld_abs(SIZE_B, 1), ld_abs(SIZE_H, 1), ld_abs(SIZE_W, 1), ld_ind(SIZE_H, 7, 2), ld_abs(SIZE_W, 14)]
                {
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

/// Fills this thread's whole stack area with `byte`, through a program that zeroes and then
/// writes all of it.
fn dirty_stack(byte: u8) {
    let mut p = vec![mov64_reg(1, 10), alu64_imm(ALU_MUL, 1, 1), ldx(SIZE_B, 0, 1, -1)];
    p.extend(lddw(2, u64::from_ne_bytes([byte; 8])));
    p.extend((1..=(STACK_AREA / 8) as i16).map(|k| stx(SIZE_DW, 10, 2, -8 * k)));
    p.extend([mov64_imm(0, 0), exit()]);
    assert_eq!(raw(&p, &mut []), Ok(0));
}

/// A random body for [`stack_program`]: r1-r5 carry addresses derived from r10 (offset,
/// spilled, reloaded, partly overwritten, handed to `csum_diff`); every value read is folded
/// into r9.
fn stack_body(rng: &mut rand::rngs::StdRng, most: usize, out: &mut Vec<Insn>) {
    use rand::Rng;
    let n = rng.gen_range(0..most);
    let mut spills = Vec::new();
    let p = |rng: &mut rand::rngs::StdRng| rng.gen_range(1..=5u8);
    let size = |rng: &mut rand::rngs::StdRng| [SIZE_B, SIZE_H, SIZE_W, SIZE_DW][rng.gen_range(0..4)];
    let slot = |rng: &mut rand::rngs::StdRng| -8 * rng.gen_range(1..12i16);
    for _ in 0..n {
        let base = if rng.gen_bool(0.3) { 10 } else { p(rng) };
        let off = if base == 10 { rng.gen_range(-40..0i16) } else { rng.gen_range(-24..8i16) };
        match rng.gen_range(0..11) {
            0 | 1 => out.push(mov64_reg(p(rng), 10)),
            2 => out.push(alu64_imm(ALU_ADD, p(rng), -8 * rng.gen_range(0..8))),
            3 | 4 => out.extend([ldx(size(rng), 6, base, off), alu64_reg(ALU_XOR, 9, 6)]),
            5 => out.push(st(size(rng), base, off, rng.gen_range(-9..9))),
            6 => out.push(stx(size(rng), base, 6, off)),
            7 => {
                let at = slot(rng);
                spills.push(at);
                out.push(stx(SIZE_DW, 10, p(rng), at));
            }
            8 => {
                let at = spills.get(rng.gen_range(0..spills.len().max(1))).copied().unwrap_or_else(|| slot(rng));
                out.push(ldx(SIZE_DW, p(rng), 10, at));
            }
            9 => {
                let from = p(rng);
                if from != 1 {
                    out.push(mov64_reg(1, from));
                }
                let len = 4 * rng.gen_range(1..8);
                out.extend([mov64_imm(2, len), mov64_imm(3, 0), mov64_imm(4, 0), mov64_imm(5, 0)]);
                out.extend([call_helper(28), alu64_reg(ALU_XOR, 9, 0)]);
                for r in 2..=5 {
                    out.extend([mov64_reg(r, 10), alu64_imm(ALU_ADD, r, -8 * rng.gen_range(1..60))]);
                }
            }
            _ => {
                let fetch = Insn::new(CLASS_STX | MODE_ATOMIC | SIZE_DW, 10, 6, slot(rng), ATOMIC_ADD | ATOMIC_FETCH);
                out.extend([jmp_imm(JMP_JSET, 6, 1, 1), fetch, alu64_reg(ALU_XOR, 9, 6)]);
            }
        }
    }
}

/// main: `r1 = 0`, a body, maybe a call of f (whose r0 is folded into r9), a body, `r0 = r9`.
/// f: a body, `r0 = r9`.
fn stack_program(rng: &mut rand::rngs::StdRng) -> Vec<Insn> {
    use rand::Rng;
    let mut main = vec![mov64_imm(1, 0), mov64_imm(9, 0), mov64_imm(6, 0)];
    for r in 1..=5 {
        main.extend([mov64_reg(r, 10), alu64_imm(ALU_ADD, r, -8 * rng.gen_range(1..60))]);
    }
    stack_body(rng, 12, &mut main);
    let call_at = rng.gen_bool(0.5).then(|| {
        main.push(local(0));
        main.push(alu64_reg(ALU_XOR, 9, 0));
        main.len() - 2
    });
    stack_body(rng, 12, &mut main);
    main.extend([mov64_reg(0, 9), exit()]);
    if let Some(at) = call_at {
        main[at].imm = (main.len() - at - 1) as i32;
        stack_body(rng, 10, &mut main);
        main.extend([mov64_reg(0, 9), exit()]);
    }
    main
}

/// The zeroed part of the stack ([`check::stack_reach`]) covers every byte a run can read
/// before writing: runs over stacks left dirty with different bytes give the same results.
#[test]
fn runs_never_see_what_an_earlier_run_left_on_the_stack() {
    use rand::SeedableRng;
    let helpers = Helpers::kernel(MapTable::new(Vec::new()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x51ac);
    let mut checked = 0;
    for _ in 0..3000 {
        let insns = stack_program(&mut rng);
        let Ok(prog) = validate(insns.clone(), ProgKind::Xdp, &helpers) else { continue };
        let interp = Interpreter::new(&prog);
        let results: Vec<_> = [0x5a, 0xc3]
            .into_iter()
            .map(|byte| {
                dirty_stack(byte);
                let mut packet = vec![7u8; 64];
                let r = helpers::RunEnv::new(0).run(|| interp.run_xdp(&mut packet, 1, 0));
                (r, packet)
            })
            .collect();
        assert_eq!(results[0], results[1], "{:?}\n{}", interp.reach, crate::bpf::disasm::program(&insns));
        checked += 1;
    }
    assert!(checked > 2000, "only {checked} programs were valid");
}
