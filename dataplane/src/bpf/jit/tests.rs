//! Unit tests: one group per instruction class, run on programs built directly.

use super::*;
use crate::bpf::insn::build::*;
use crate::bpf::insn::*;
use crate::bpf::{Helpers, ProgKind};

fn prog(kind: ProgKind, insns: &[Insn]) -> Program {
    Program { insns: insns.to_vec(), kind, helpers: Helpers::none() }
}

fn raw(insns: &[Insn], mem: &mut [u8]) -> Result<u64, Fault> {
    JitProgram::compile(&prog(ProgKind::Raw, insns)).expect("compile").run_raw(mem)
}

#[test]
fn returns_immediate() {
    assert_eq!(raw(&[mov64_imm(0, 42), exit()], &mut []), Ok(42));
}

/// `udp dst port 53` as libpcap emits it (IPv6 and IPv4 branches), translated to eBPF the way
/// the kernel converts classic BPF: A = r0, X = r7, a temporary in r9.
fn udp_dst_port_53() -> Vec<Insn> {
    let ret_match = 23;
    let ret_zero = 25;
    let mut v = vec![
        ld_abs(SIZE_H, 12),                       // 0
        jmp_imm(JMP_JEQ, 0, 0x86dd, 0),           // 1 -> ip6 (patched)
        jmp_imm(JMP_JNE, 0, 0x800, 0),            // 2 -> ret0
        ld_abs(SIZE_B, 23),                       // 3
        jmp_imm(JMP_JNE, 0, 17, 0),               // 4 -> ret0
        ld_abs(SIZE_H, 20),                       // 5
        jmp_imm(JMP_JSET, 0, 0x1fff, 0),          // 6 -> ret0
        mov64_reg(9, 0),                          // 7
        ld_abs(SIZE_B, 14),                       // 8
        alu32_imm(ALU_AND, 0, 0xf),               // 9
        alu32_imm(ALU_LSH, 0, 2),                 // 10
        mov64_reg(7, 0),                          // 11
        mov64_reg(0, 9),                          // 12
        ld_ind(SIZE_H, 7, 16),                    // 13
        jmp_imm(JMP_JNE, 0, 53, 0),               // 14 -> ret0
        ja(0),                                    // 15 -> match
        // ip6 (16)
        ld_abs(SIZE_B, 20),                       // 16
        jmp_imm(JMP_JNE, 0, 17, 0),               // 17 -> ret0
        ld_abs(SIZE_H, 56),                       // 18
        jmp_imm(JMP_JNE, 0, 53, 0),               // 19 -> ret0
        ja(0),                                    // 20 -> match
        ja(0),                                    // 21 (unreachable filler)
        ja(0),                                    // 22 (unreachable filler)
        mov64_imm(0, 262144),                     // 23
        exit(),                                   // 24
        mov64_imm(0, 0),                          // 25
        exit(),                                   // 26
    ];
    let mut to = |at: usize, target: usize| v[at].off = (target as i64 - at as i64 - 1) as i16;
    to(1, 16);
    for at in [2, 4, 6, 14, 17, 19] {
        to(at, ret_zero);
    }
    for at in [15, 20] {
        to(at, ret_match);
    }
    v.truncate(27);
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

fn cpu_ns() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes only into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}

/// Best-of-many ns per `run_xdp`, in thread CPU time: the machine is shared, so wall time and
/// long runs would measure the neighbours.
fn time_per_packet(j: &JitProgram, pkt: &mut [u8]) -> f64 {
    let n = 1_000_000u64;
    let mut best = f64::MAX;
    for _ in 0..200 {
        let t = cpu_ns();
        let mut acc = 0u64;
        for _ in 0..n {
            let p = std::hint::black_box(&mut *pkt);
            acc = acc.wrapping_add(j.run_xdp(p, 1, 0).unwrap_or(0));
        }
        std::hint::black_box(acc);
        best = best.min((cpu_ns() - t) / n as f64);
    }
    best
}

#[test]
#[ignore = "timing: run with --release -- --ignored --nocapture"]
fn perf_udp_dst_port_53() {
    let j = JitProgram::compile(&prog(ProgKind::Xdp, &udp_dst_port_53())).expect("compile");
    let mut pkt = udp_packet(53);
    assert_eq!(j.run_xdp(&mut pkt, 1, 0), Ok(262144));
    let empty = JitProgram::compile(&prog(ProgKind::Xdp, &[mov64_imm(0, 0), exit()])).expect("compile");
    let floor = time_per_packet(&empty, &mut pkt);
    let best = time_per_packet(&j, &mut pkt);
    std::fs::write("/tmp/jitscratch/udp53.bin", j.code_bytes()).ok();
    eprintln!("udp dst port 53, 64-byte packet: {best:.2} ns/packet (empty program {floor:.2}), code {} bytes", j.code_size());
}
