//! The accumulator loop against the general loop: on classic translations over the packet
//! corpus, on random programs of the subset it accepts, and on the shapes it must refuse.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::super::Interpreter;
use crate::bpf::check::validate;
use crate::bpf::classic::{self, ClassicInsn, op::*};
use crate::bpf::ctx::xdp_md;
use crate::bpf::insn::build::*;
use crate::bpf::insn::*;
use crate::bpf::{Exec, Helpers, ProgKind, disasm, tcpdump};
use crate::testbed::corpus;

fn xdp(insns: &[Insn]) -> crate::bpf::Program {
    validate(insns.to_vec(), ProgKind::Xdp, &Helpers::none()).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether the accumulator loop takes the (valid) program.
fn accepted(insns: &[Insn]) -> bool {
    Interpreter::new(&xdp(insns)).acc.is_some()
}

/// Runs both loops on `packet`, asserts they agree, returns the result.
fn both(prog: &crate::bpf::Program, packet: &[u8]) -> u64 {
    let fast = Interpreter::new(prog);
    assert!(fast.acc.is_some(), "not accepted:\n{}", disasm::program(prog.insns()));
    let general = Interpreter::general(prog);
    let got = fast.run_xdp(&mut packet.to_vec(), 7, 3);
    let want = general.run_xdp(&mut packet.to_vec(), 7, 3);
    assert_eq!(got, want, "packet {packet:02x?}\n{}", disasm::program(prog.insns()));
    got.unwrap_or(u64::MAX)
}

const EXPRESSIONS: &[&str] = &[
    "",
    "udp dst port 53",
    "tcp",
    "host 10.0.0.1",
    "src net 10.0.0.0/8 and dst port 443",
    "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
    "vlan and udp",
    "vlan 100 and ip",
    "ip6 and tcp dst port 443",
    "icmp or icmp6 or arp",
    "ip[2:2] - ((ip[0]&0xf)<<2) > 20 and len > 100",
    "ip[6:2] & 0x1fff != 0",
    "ip6[6] == 58",
    "greater 100 and less 200",
    "ether broadcast or ether multicast",
    "udp[8:4] * 3 / 5 % 7 > 2 or tcp[4:4] >> 3 << 1 == 8",
    "ip[1] ^ 0xff != 0 and ip[0] | 1 == 0x45 and -ip[8] & 0xff > 3",
    "portrange 1000-2000 or not port 22",
    "net 192.168.0.0/16 and (tcp or udp) and not host 192.168.1.1",
    "(tcp port 22 or tcp port 80 or udp port 53) and not (host 10.1.1.1 or net 172.16.0.0/12) \
     and (ip[8] > 1 or ip6) and not ether broadcast and greater 60 and less 1500",
];

#[test]
fn classic_translations_run_on_the_accumulator_loop_with_the_general_results() {
    let packets = corpus::corpus();
    for expr in EXPRESSIONS {
        let insns = tcpdump::compile_expr(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let prog = classic::compile(&insns).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let pcap = tcpdump::LibpcapFilter::compile(expr).unwrap();
        for p in &packets {
            assert_eq!(both(&prog, p) != 0, pcap.matches(p), "`{expr}` on {p:02x?}");
        }
    }
}

fn i(code: u16, jt: u8, jf: u8, k: u32) -> ClassicInsn {
    ClassicInsn::new(code, jt, jf, k)
}

/// Every classic operation, including the ones libpcap never emits (X shifts, division by X,
/// `ret a`, scratch words), on packets of several lengths.
#[test]
fn every_classic_operation_runs_on_the_accumulator_loop() {
    let alu: Vec<u16> = [ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, MOD, XOR].into_iter().collect();
    let mut programs: Vec<Vec<ClassicInsn>> = Vec::new();
    for &op in &alu {
        for x in [0, 1, 3, 31, 32, 0xffff_ffff] {
            // ld [2]; ldx #x; st M[3]; ldxb 4*([14]&0xf); ldx M[3] ... keep X = x for the op.
            programs.push(vec![
                i(LD | W | ABS, 0, 0, 2),
                i(LDX | IMM, 0, 0, x),
                i(ALU | op | X, 0, 0, 0),
                i(ALU | op | K, 0, 0, if matches!(op, DIV | MOD) { 7 } else { x & 31 }),
                i(RET | A, 0, 0, 0),
            ]);
        }
    }
    programs.push(vec![
        i(LD | B | ABS, 0, 0, 0),
        i(ST, 0, 0, 3),
        i(LDX | B | MSH, 0, 0, 14),
        i(STX, 0, 0, 15),
        i(LD | H | IND, 0, 0, 2),
        i(ALU | NEG, 0, 0, 0),
        i(MISC | TAX, 0, 0, 0),
        i(LD | MEM, 0, 0, 15),
        i(LDX | MEM, 0, 0, 3),
        i(ALU | ADD | X, 0, 0, 0),
        i(LDX | W | LEN, 0, 0, 0),
        i(JMP | JGT | X, 0, 2, 0),
        i(MISC | TXA, 0, 0, 0),
        i(RET | A, 0, 0, 0),
        i(LD | W | LEN, 0, 0, 0),
        i(JMP | JSET | K, 1, 0, 4),
        i(RET | K, 0, 0, 9),
        i(LD | B | IND, 0, 0, 1),
        i(JMP | JGE | X, 0, 1, 0),
        i(RET | K, 0, 0, 5),
        i(RET | A, 0, 0, 0),
    ]);
    let mut accepting = 0;
    for prog in &programs {
        let p = classic::compile(prog).unwrap_or_else(|e| panic!("{e}"));
        for len in [0, 1, 14, 15, 20, 34, 60, 64, 100] {
            let packet: Vec<u8> = (0..len).map(|b| (b as u8).wrapping_mul(29).wrapping_add(5)).collect();
            accepting += (both(&p, &packet) != 0) as u32;
        }
    }
    assert!(accepting > 0);
}

#[test]
fn reads_of_unclean_registers_stay_on_the_general_loop() {
    // r1 is the context pointer: it may be copied for context loads, not used as a value.
    assert_eq!(both(&xdp(&[mov64_reg(6, 1), ldx(SIZE_W, 0, 6, xdp_md::RX_QUEUE_INDEX), exit()]), &[]), 3);
    // The length prologue leaves the data pointer in r8: reading it is refused, overwriting is fine.
    let prologue = [ldx(SIZE_W, 9, 1, xdp_md::DATA_END), ldx(SIZE_W, 8, 1, xdp_md::DATA), alu64_reg(ALU_SUB, 9, 8)];
    let mut read = prologue.to_vec();
    read.extend([mov32_reg(0, 8), exit()]);
    assert!(!accepted(&read));
    let mut overwrite = prologue.to_vec();
    overwrite.extend([mov32_imm(8, 1), alu32_reg(ALU_ADD, 8, 9), mov32_reg(0, 8), exit()]);
    assert_eq!(both(&xdp(&overwrite), &[0; 10]), 11);
    // A path that skips the overwrite still reads the pointer.
    let mut one_path = prologue.to_vec();
    one_path.extend([ld_abs(SIZE_B, 0), jmp32_imm(JMP_JEQ, 0, 1, 1), mov32_imm(8, 1), mov32_reg(0, 8), exit()]);
    assert!(!accepted(&one_path));
    // Values that 64-bit ALU could push past 32 bits, and r10 as a value.
    assert!(!accepted(&[mov32_imm(0, -1), alu64_imm(ALU_ADD, 0, 1), exit()]));
    assert!(!accepted(&[mov64_imm(0, -1), exit()]));
    assert!(!accepted(&[mov64_reg(0, 10), exit()]));
    // Stack words outside the scratch area, and other widths.
    assert!(!accepted(&[st(SIZE_W, 10, -68, 1), mov32_imm(0, 0), exit()]));
    assert!(!accepted(&[st(SIZE_W, 10, -6, 1), mov32_imm(0, 0), exit()]));
    assert!(!accepted(&[st(SIZE_DW, 10, -8, 1), mov32_imm(0, 0), exit()]));
    // 64-bit jumps against a negative immediate have no 32-bit equivalent.
    assert!(!accepted(&[jmp_imm(JMP_JGT, 0, -1, 0), exit()]));
}

#[test]
fn verified_loops_stay_on_the_general_loop() {
    // Every instruction is one the accumulator loop runs, but the jump goes back.
    let insns = vec![mov32_imm(0, 0), alu32_imm(ALU_ADD, 0, 1), jmp_imm(JMP_JLT, 0, 10, -2), exit()];
    let (prog, _) = crate::bpf::verifier::load(insns, &Helpers::none(), &Default::default()).unwrap();
    let interp = Interpreter::new(&prog);
    assert!(interp.acc.is_none());
    assert_eq!(interp.run_xdp(&mut [0u8; 4], 1, 0), Ok(10));
}

#[test]
fn packet_loads_out_of_range_end_the_run_with_zero() {
    for load in [ld_abs(SIZE_W, 7), ld_abs(SIZE_H, 9), ld_abs(SIZE_B, 10), ld_ind(SIZE_B, 2, 9), ld_abs(SIZE_B, -1)] {
        let plain = xdp(&[mov32_imm(2, 1), mov32_imm(0, 5), load, mov32_imm(0, 4), exit()]);
        assert_eq!(both(&plain, &[0xab; 10]), 0, "{load:?}");
        let fused =
            xdp(&[mov32_imm(2, 1), mov32_imm(0, 5), load, jmp32_imm(JMP_JEQ, 0, 0, 0), mov32_imm(0, 4), exit()]);
        assert_eq!(both(&fused, &[0xab; 10]), 0, "{load:?}");
    }
    // The index is added without 32-bit wrap-around.
    assert_eq!(both(&xdp(&[mov32_imm(2, -1), ld_ind(SIZE_B, 2, 2), exit()]), &[1; 8]), 0);
    assert_eq!(both(&xdp(&[ld_abs(SIZE_W, 6), exit()]), &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), 0x0708_090a);
}

#[test]
fn jumps_into_fused_sequences_run_the_plain_ops() {
    // ld + test, msh, msh keeping A and `r0 = k; exit`, each entered in the middle.
    let p = xdp(&[
        ld_abs(SIZE_B, 1),
        jmp32_imm(JMP_JEQ, 0, 0x99, 4), // → the `and` of the msh
        ld_abs(SIZE_H, 0),
        jmp32_imm(JMP_JNE, 0, 0x4500, 9), // → the exit of `r0 = 3; exit`
        mov64_reg(8, 0),
        ld_abs(SIZE_B, 0),
        alu32_imm(ALU_AND, 0, 0xf),
        alu32_imm(ALU_LSH, 0, 2),
        mov32_reg(7, 0),
        mov64_reg(0, 8),
        alu32_reg(ALU_ADD, 0, 7),
        jmp32_imm(JMP_JGT, 0, 0x1000, 1), // → the same exit
        mov32_imm(0, 3),
        exit(),
    ]);
    assert_eq!(both(&p, &[0x45, 0x00]), 0x4514);
    assert_eq!(both(&p, &[0x45, 0x99]), 3);
    assert_eq!(both(&p, &[0x46, 0x00]), 0x4600);
    let keep = xdp(&[
        ld_abs(SIZE_B, 1),
        mov64_reg(8, 0),
        ld_abs(SIZE_B, 0),
        alu32_imm(ALU_AND, 0, 0xf),
        alu32_imm(ALU_LSH, 0, 2),
        mov32_reg(7, 0),
        mov64_reg(0, 8),
        alu32_reg(ALU_ADD, 0, 7),
        exit(),
    ]);
    assert_eq!(both(&keep, &[0x45, 0x10]), 0x10 + 20);
    assert_eq!(both(&keep, &[0x45]), 0);
}

#[test]
fn context_fields_and_the_length_are_read_like_the_general_loop() {
    let p = xdp(&[
        ldx(SIZE_W, 9, 1, xdp_md::DATA_END),
        ldx(SIZE_W, 8, 1, xdp_md::DATA),
        alu64_reg(ALU_SUB, 9, 8),
        ldx(SIZE_W, 3, 1, xdp_md::INGRESS_IFINDEX),
        ldx(SIZE_W, 0, 1, xdp_md::RX_QUEUE_INDEX),
        alu32_imm(ALU_MUL, 3, 100),
        alu32_reg(ALU_ADD, 0, 3),
        alu32_imm(ALU_MUL, 9, 10000),
        alu32_reg(ALU_ADD, 0, 9),
        exit(),
    ]);
    assert_eq!(both(&p, &[0; 5]), 50_000 + 700 + 3);
}

/// A random instruction of the subset (and a few outside it, which must be refused).
fn random_insn(rng: &mut impl Rng, pc: usize, len: usize) -> Insn {
    let reg = |rng: &mut dyn rand::RngCore| [0u8, 0, 0, 2, 3, 7, 8, 9][rng.gen_range(0..8)];
    let imm = |rng: &mut dyn rand::RngCore| {
        [0, 1, 2, 4, 14, 20, 31, 32, 33, 0x45, 0x800, 0xffff, -1, -2, i32::MIN, i32::MAX, 0x8000][rng.gen_range(0..17)]
    };
    let size = |rng: &mut dyn rand::RngCore| [SIZE_B, SIZE_H, SIZE_W][rng.gen_range(0..3)];
    let alu = [ALU_ADD, ALU_SUB, ALU_MUL, ALU_DIV, ALU_OR, ALU_AND, ALU_LSH, ALU_RSH, ALU_MOD, ALU_XOR, ALU_ARSH];
    let conds =
        [JMP_JEQ, JMP_JNE, JMP_JGT, JMP_JGE, JMP_JLT, JMP_JLE, JMP_JSET, JMP_JSGT, JMP_JSGE, JMP_JSLT, JMP_JSLE];
    let fwd = rng.gen_range(0..=(len - pc - 1).min(6)) as i16;
    if rng.gen_bool(0.02) {
        // Outside the subset: 64-bit arithmetic, byte stores, ctx fields after r1 may have moved.
        return [
            alu64_imm(ALU_ADD, reg(rng), imm(rng)),
            st(SIZE_B, 10, -1, 1),
            ldx(SIZE_W, reg(rng), 1, [xdp_md::INGRESS_IFINDEX, xdp_md::RX_QUEUE_INDEX][rng.gen_range(0..2)]),
        ][rng.gen_range(0..3)];
    }
    match rng.gen_range(0..21) {
        0..=3 => ld_abs(size(rng), rng.gen_range(0..40)),
        4 => ld_ind(size(rng), [2, 3, 7, 8, 9][rng.gen_range(0..5)], rng.gen_range(0..30)),
        5..=6 => alu32_imm(alu[rng.gen_range(0..alu.len())], reg(rng), imm(rng)),
        7 => alu32_reg(alu[rng.gen_range(0..alu.len())], reg(rng), reg(rng)),
        8 => Insn::new(CLASS_ALU | [ALU_DIV, ALU_MOD][rng.gen_range(0..2)], reg(rng), 0, 1, imm(rng)),
        9 => alu32_imm(ALU_NEG, reg(rng), 0),
        10 => [mov32_imm(reg(rng), imm(rng)), mov32_reg(reg(rng), reg(rng))][rng.gen_range(0..2)],
        11 => [mov64_imm(reg(rng), imm(rng)), mov64_reg(reg(rng), reg(rng))][rng.gen_range(0..2)],
        12..=14 => jmp32_imm(conds[rng.gen_range(0..conds.len())], reg(rng), imm(rng), fwd),
        15 => jmp32_reg(conds[rng.gen_range(0..conds.len())], reg(rng), reg(rng), fwd),
        16 => [jmp_imm(conds[rng.gen_range(0..conds.len())], reg(rng), imm(rng), fwd), ja(fwd)][rng.gen_range(0..2)],
        17 => jmp_reg(conds[rng.gen_range(0..conds.len())], reg(rng), reg(rng), fwd),
        18 => stx(SIZE_W, 10, reg(rng), -4 * rng.gen_range(1..=16)),
        19 => [
            st(SIZE_W, 10, -4 * rng.gen_range(1..=16), imm(rng)),
            ldx(SIZE_W, reg(rng), 10, -4 * rng.gen_range(1..=16)),
        ][rng.gen_range(0..2)],
        _ => [mov32_imm(0, imm(rng)), exit()][rng.gen_range(0..2)],
    }
}

#[test]
fn random_programs_of_the_subset_agree_with_the_general_loop() {
    let mut rng = StdRng::seed_from_u64(0x5eed_acc0);
    let (mut valid, mut fast) = (0, 0);
    for _ in 0..6000 {
        let len = rng.gen_range(2..30);
        let mut p: Vec<Insn> = Vec::new();
        if rng.gen_bool(0.3) {
            p.extend([ldx(SIZE_W, 9, 1, xdp_md::DATA_END), ldx(SIZE_W, 8, 1, xdp_md::DATA), alu64_reg(ALU_SUB, 9, 8)]);
        }
        // The ctx loads need r1 as the context, so they come before anything could move it.
        if rng.gen_bool(0.2) {
            p.push(ldx(SIZE_W, [0, 2, 7][rng.gen_range(0..3)], 1, xdp_md::INGRESS_IFINDEX));
        }
        let start = p.len();
        for pc in 0..len {
            p.push(random_insn(&mut rng, start + pc, start + len));
        }
        p.extend([mov32_imm(0, 2), exit()]);
        let Ok(prog) = validate(p, ProgKind::Xdp, &Helpers::none()) else { continue };
        valid += 1;
        let it = Interpreter::new(&prog);
        if it.acc.is_none() {
            continue;
        }
        fast += 1;
        let general = Interpreter::general(&prog);
        for _ in 0..4 {
            let n = rng.gen_range(0..48);
            let packet: Vec<u8> = (0..n).map(|_| rng.r#gen()).collect();
            let got = it.run_xdp(&mut packet.clone(), 7, 3);
            let want = general.run_xdp(&mut packet.clone(), 7, 3);
            assert_eq!(got, want, "packet {packet:02x?}\n{}", disasm::program(prog.insns()));
        }
    }
    // Most valid programs must take the accumulator loop, or this test would prove little.
    assert!(valid > 3000 && fast * 2 > valid, "{fast} of {valid} valid programs accepted");
}

fn has(prog: &crate::bpf::Program, code: super::Code) -> bool {
    Interpreter::new(prog).acc.is_some_and(|a| a.code.iter().any(|o| o.code == code))
}

#[test]
fn runs_of_jeq_with_one_target_become_set_tests() {
    // `if w0 == k goto T` × n, the last maybe `if w0 != k goto F` with T right after it, else
    // followed by `goto F`; entered at every slot, over every value of the loaded byte.
    for n in 2..=9usize {
        for jne_last in [false, true] {
            let t = 2 + n + !jne_last as usize;
            let f = t + 2;
            for entry in 0..n {
                let mut p = vec![ld_abs(SIZE_B, 0), ja(entry as i16)];
                for j in 0..n {
                    let (slot, k) = (2 + j, 3 * j as i32 + 1);
                    let to = |x: usize| (x - slot - 1) as i16;
                    p.push(match j {
                        _ if jne_last && j == n - 1 => jmp32_imm(JMP_JNE, 0, k, to(f)),
                        _ if j % 2 == 0 => jmp32_imm(JMP_JEQ, 0, k, to(t)),
                        _ => jmp_imm(JMP_JEQ, 0, k, to(t)),
                    });
                }
                if !jne_last {
                    p.push(ja((f - (2 + n) - 1) as i16));
                }
                p.extend([mov32_imm(0, 1), exit(), mov32_imm(0, 2), exit()]);
                let prog = xdp(&p);
                assert!(has(&prog, super::Code::JeqSet), "{}", disasm::program(prog.insns()));
                let hits = (0..=255u8).filter(|&b| both(&prog, &[b]) == 1).count();
                assert_eq!(hits, n - entry, "{}", disasm::program(prog.insns()));
            }
        }
    }
}

#[test]
fn loads_fuse_with_a_mask_and_test_or_a_set_test() {
    let loads = [ld_abs(SIZE_B, 3), ld_abs(SIZE_H, 2), ld_abs(SIZE_W, 1), ld_ind(SIZE_B, 2, 1), ld_ind(SIZE_H, 2, 3)];
    let mut rng = StdRng::seed_from_u64(7);
    let packets: Vec<Vec<u8>> = (0..64).map(|i| (0..i % 9).map(|_| rng.gen_range(0..4u8) * 0x40).collect()).collect();
    for load in loads {
        for entry in 0..3i16 {
            for (mask, k) in [(0xc0, 0x40), (0xc0c0, 0x4000), (0xffff_0000u32 as i32, 0x4080_0000), (0, 0)] {
                for jump in [jmp32_imm(JMP_JEQ, 0, k, 2), jmp_imm(JMP_JNE, 0, k, 2)] {
                    // r2 = 1; goto +entry; load; w0 &= mask; jump → `r0 = 9; exit`; r0 += 1; exit
                    let p = [
                        mov32_imm(2, 1),
                        ja(entry),
                        load,
                        alu32_imm(ALU_AND, 0, mask),
                        jump,
                        alu32_imm(ALU_ADD, 0, 1),
                        exit(),
                        mov32_imm(0, 9),
                        exit(),
                    ];
                    let prog = xdp(&p);
                    let fused = super::build::LOAD_MASK_TESTS.iter().flatten().any(|&c| has(&prog, c));
                    assert!(fused, "{}", disasm::program(prog.insns()));
                    packets.iter().for_each(|pk| _ = both(&prog, pk));
                }
            }
            // load; w0 == 0 / 0x40 / 0x4000 → `r0 = 9; exit`, else fall through.
            let p = [
                mov32_imm(2, 1),
                ja(entry),
                load,
                jmp32_imm(JMP_JEQ, 0, 0, 3),
                jmp32_imm(JMP_JEQ, 0, 0x40, 2),
                jmp_imm(JMP_JEQ, 0, 0x4000, 1),
                exit(),
                mov32_imm(0, 9),
                exit(),
            ];
            let prog = xdp(&p);
            assert!(super::build::LOAD_SETS.iter().any(|&c| has(&prog, c)), "{}", disasm::program(prog.insns()));
            packets.iter().for_each(|pk| _ = both(&prog, pk));
        }
    }
}

#[test]
fn msh_fuses_with_the_indexed_load_and_test_after_it() {
    let mut rng = StdRng::seed_from_u64(11);
    let packets: Vec<Vec<u8>> = (0..200)
        .map(|i| (0..i % 40).map(|j| if j == 0 { rng.r#gen() } else { rng.gen_range(0..3u8) }).collect())
        .collect();
    for size in [SIZE_B, SIZE_H, SIZE_W] {
        for jump in [Some(jmp32_imm(JMP_JEQ, 0, 1, 2)), Some(jmp_imm(JMP_JNE, 0, 0, 2)), None] {
            for entry in 0..6i16 {
                let mut p = vec![
                    ja(entry),
                    ld_abs(SIZE_B, 0),
                    alu32_imm(ALU_AND, 0, 0xf),
                    alu32_imm(ALU_LSH, 0, 2),
                    mov32_reg(7, 0),
                    ld_ind(size, 7, 1),
                ];
                // Without a test, the sixth slot is a plain add the entry may land on.
                p.push(jump.unwrap_or(alu32_imm(ALU_ADD, 0, 0x100)));
                p.extend([alu32_reg(ALU_ADD, 0, 7), exit(), mov32_imm(0, 9), exit()]);
                let prog = xdp(&p);
                assert!(
                    super::build::MSH_LOADS.iter().flatten().any(|&c| has(&prog, c)),
                    "{}",
                    disasm::program(prog.insns())
                );
                packets.iter().for_each(|pk| _ = both(&prog, pk));
            }
        }
    }
}

#[test]
fn a_jne_to_a_second_test_is_a_two_way_demultiplexer() {
    // ld [0]; if != 0x86dd goto Y; r0 = 1; exit; ...; Y: if (== / !=) 0x800 goto ...
    for second in [JMP_JEQ, JMP_JNE] {
        for (size, k1, k2) in [(SIZE_H, 0x86dd, 0x800), (SIZE_B, 6, 17), (SIZE_W, 1, 2)] {
            for after in [mov32_imm(0, 3), ja(1)] {
                let p = [
                    ld_abs(size, 0),
                    jmp32_imm(JMP_JNE, 0, k1, 2),
                    mov32_imm(0, 1),
                    exit(),
                    jmp32_imm(second, 0, k2, 3), // Y
                    after,
                    exit(),
                    mov32_imm(0, 4),
                    mov32_imm(0, 5),
                    exit(),
                ];
                let prog = xdp(&p);
                assert!([super::Code::AbsBSw, super::Code::AbsHSw, super::Code::AbsWSw].iter().any(|&c| has(&prog, c)));
                for v in [k1 as u32, k2 as u32, 0, 0x8000_0000] {
                    let bytes = v.to_be_bytes();
                    let packet = &bytes[4 - size_bytes(size)..];
                    both(&prog, packet);
                    both(&prog, &packet[1..]);
                }
            }
        }
    }
}
