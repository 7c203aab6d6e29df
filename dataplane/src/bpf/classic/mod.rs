//! Classic BPF (`struct sock_filter`): the text formats tcpdump prints, validation with the
//! Linux kernel's rules, a tcpdump-style disassembler and the translation to eBPF.
//!
//! Classic BPF has two 32-bit registers (A, X), sixteen 32-bit scratch words `M[0..16]`,
//! forward-only jumps and packet loads that end the filter with 0 when they fall outside the
//! packet. A filter returns 0 for "no match" and anything else for "match".
//!
//! ```text
//!  code:  | op or mode:3-4 bits | source (K/X) or size:1-2 bits | class:3 bits |
//!  insn:  | code:16 | jt:8 | jf:8 | k:32 |
//! ```
//!
//! Flow: [`parse`] text → [`validate`] (kernel `bpf_check_classic`) → [`translate`] to eBPF of
//! kind [`ProgKind::Xdp`] → [`check::validate`](crate::bpf::check) → [`Program`]; [`compile`]
//! does the last three in one call.

use super::check::{self, CheckError};
use super::{Helpers, ProgKind, Program};

mod disasm;
mod parse;
mod translate;
mod validate;

pub use disasm::{disasm, insn_text};
pub use parse::{parse, to_dd, to_ddd};
pub use translate::translate;
pub use validate::validate;

/// One classic instruction, laid out like the kernel's `struct sock_filter` and libpcap's
/// `struct bpf_insn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ClassicInsn {
    pub code: u16,
    /// Forward offset of the true branch, from the next instruction.
    pub jt: u8,
    /// Forward offset of the false branch, from the next instruction.
    pub jf: u8,
    pub k: u32,
}

impl ClassicInsn {
    pub const fn new(code: u16, jt: u8, jf: u8, k: u32) -> Self {
        ClassicInsn { code, jt, jf, k }
    }

    pub fn class(&self) -> u16 {
        self.code & 0x07
    }
}

/// Opcode fields, named as in `<linux/filter.h>` / `<pcap/bpf.h>` without the `BPF_` prefix.
pub mod op {
    // Classes.
    pub const LD: u16 = 0x00;
    pub const LDX: u16 = 0x01;
    pub const ST: u16 = 0x02;
    pub const STX: u16 = 0x03;
    pub const ALU: u16 = 0x04;
    pub const JMP: u16 = 0x05;
    pub const RET: u16 = 0x06;
    pub const MISC: u16 = 0x07;
    // Load sizes.
    pub const W: u16 = 0x00;
    pub const H: u16 = 0x08;
    pub const B: u16 = 0x10;
    // Load modes.
    pub const IMM: u16 = 0x00;
    pub const ABS: u16 = 0x20;
    pub const IND: u16 = 0x40;
    pub const MEM: u16 = 0x60;
    pub const LEN: u16 = 0x80;
    pub const MSH: u16 = 0xa0;
    // ALU operations (the same values as eBPF's).
    pub const ADD: u16 = 0x00;
    pub const SUB: u16 = 0x10;
    pub const MUL: u16 = 0x20;
    pub const DIV: u16 = 0x30;
    pub const OR: u16 = 0x40;
    pub const AND: u16 = 0x50;
    pub const LSH: u16 = 0x60;
    pub const RSH: u16 = 0x70;
    pub const NEG: u16 = 0x80;
    pub const MOD: u16 = 0x90;
    pub const XOR: u16 = 0xa0;
    // Jump operations (the same values as eBPF's).
    pub const JA: u16 = 0x00;
    pub const JEQ: u16 = 0x10;
    pub const JGT: u16 = 0x20;
    pub const JGE: u16 = 0x30;
    pub const JSET: u16 = 0x40;
    // Operand source of ALU/JMP.
    pub const K: u16 = 0x00;
    pub const X: u16 = 0x08;
    // Return value source.
    pub const A: u16 = 0x10;
    // MISC operations.
    pub const TAX: u16 = 0x00;
    pub const TXA: u16 = 0x80;
}

/// Most instructions the kernel accepts in one filter (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;
/// Scratch memory words (`BPF_MEMWORDS`).
pub const MEM_WORDS: u32 = 16;

/// Linux's ancillary-data window for absolute loads (`SKF_AD_OFF`, -0x1000 as u32).
pub const SKF_AD_OFF: u32 = 0xffff_f000;
/// Linux's network-header-relative window (`SKF_NET_OFF`, -0x100000 as u32).
pub const SKF_NET_OFF: u32 = 0xfff0_0000;
/// Linux's link-layer-relative window (`SKF_LL_OFF`, -0x200000 as u32).
pub const SKF_LL_OFF: u32 = 0xffe0_0000;

/// Names of the Linux ancillary loads at `SKF_AD_OFF + offset`, as libpcap's `bpf_image` prints them.
const EXTENSIONS: [(u32, &str); 16] = [
    (0, "proto"),
    (4, "type"),
    (8, "ifidx"),
    (12, "nla"),
    (16, "nlan"),
    (20, "mark"),
    (24, "queue"),
    (28, "hatype"),
    (32, "rxhash"),
    (36, "cpu"),
    (40, "xor_x"),
    (44, "vlan_tci"),
    (48, "vlanp"),
    (52, "poff"),
    (56, "random"),
    (60, "vlan_tpid"),
];

/// The libpcap name of the ancillary load at absolute offset `k`, if it is one.
fn extension_name(k: u32) -> Option<&'static str> {
    let off = k.checked_sub(SKF_AD_OFF)?;
    EXTENSIONS.iter().find(|(o, _)| *o == off).map(|(_, n)| *n)
}

/// Why a classic program is refused. Each names what the kernel's `bpf_check_classic` checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u16),
    #[error("division by constant zero")]
    DivByZero,
    #[error("modulo by constant zero")]
    ModByZero,
    #[error("shift by {0} (must be below 32)")]
    ShiftTooLarge(u32),
    #[error("scratch memory index {0} is out of range (M[0] to M[15])")]
    MemIndex(u32),
    #[error("jump target {target} is past the last instruction ({last})")]
    JumpOutOfRange { target: u64, last: usize },
    #[error("jump offset {k:#x} wraps around to instruction {target}: classic jumps only go forward")]
    JumpBackward { k: u32, target: i64 },
    #[error(
        "linux extension `{name}` (SKF_AD_OFF+{offset}) is not supported: sluice filters see frames, not socket metadata"
    )]
    Extension { name: &'static str, offset: u32 },
    #[error("load at SKF_AD_OFF+{0} is not a known linux extension")]
    UnknownExtension(u32),
    #[error("linux {window}-relative load ({window}+{offset}) is not supported: offsets are from the frame start")]
    RelativeLoad { window: &'static str, offset: u32 },
    #[error("reads M[{0}] before it is written on some path")]
    UninitializedMemory(u32),
    #[error("the last instruction must be a return")]
    NoFinalReturn,
}

/// A classic program that could not be read, validated or compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassicError {
    #[error("line {line}, column {col}: {reason}")]
    Parse { line: usize, col: usize, reason: String },
    #[error("program has {0} instructions: classic BPF allows 1 to 4096")]
    Length(usize),
    #[error("instruction {index} ({text}): {reason}")]
    Invalid { index: usize, text: String, reason: Reject },
    /// The translation was refused by the eBPF checker: a sluice bug, reported with the evidence.
    #[error("check translated program: {0}")]
    Check(#[from] CheckError),
}

/// Validates, translates and checks a classic program: the one call front ends need.
pub fn compile(insns: &[ClassicInsn]) -> Result<Program, ClassicError> {
    validate(insns)?;
    Ok(check::validate(translate(insns), ProgKind::Xdp, &Helpers::none())?)
}

#[cfg(test)]
mod tests {
    use super::op::*;
    use super::*;
    use crate::bpf::tcpdump::compile_expr;

    /// One instance of every opcode the kernel allows, with operands validation accepts.
    pub(super) fn every_opcode() -> Vec<ClassicInsn> {
        let mut prog = vec![ClassicInsn::new(ST, 0, 0, 0), ClassicInsn::new(STX, 0, 0, 1)];
        for code in 0..=0xffffu16 {
            if !validate::is_allowed(code) || matches!(code, ST | STX) || code & 0x07 == RET {
                continue;
            }
            let k = match code & 0x07 {
                _ if code == LD | MEM || code == LDX | MEM => 1,
                ALU => 3,
                JMP => 0,
                _ => 14,
            };
            prog.push(ClassicInsn::new(code, 0, 0, k));
        }
        prog.push(ClassicInsn::new(RET | A, 0, 0, 0));
        prog.push(ClassicInsn::new(RET | K, 0, 0, 0));
        prog
    }

    #[test]
    fn every_opcode_compiles_to_a_checked_program() {
        let prog = compile(&every_opcode()).unwrap();
        assert_eq!(prog.kind(), ProgKind::Xdp);
        assert!(prog.insns().len() > every_opcode().len());
    }

    #[test]
    fn tcpdump_programs_compile() {
        for expr in ["", "tcp", "udp dst port 53", "vlan and ip6", "len > 100", "ip[2:2] - ((ip[0]&0xf)<<2) > 20"] {
            let insns = compile_expr(expr).unwrap();
            compile(&insns).unwrap_or_else(|e| panic!("{expr}: {e}"));
        }
    }

    #[test]
    fn compile_reports_classic_rejections_first() {
        let err = compile(&[ClassicInsn::new(LD | MEM, 0, 0, 16), ClassicInsn::new(RET | A, 0, 0, 0)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "instruction 0 (ld M[16]): scratch memory index 16 is out of range (M[0] to M[15])"
        );
        assert_eq!(compile(&[]).unwrap_err(), ClassicError::Length(0));
    }
}
