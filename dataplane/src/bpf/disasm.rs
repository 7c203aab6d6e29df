//! Disassembly in the kernel / llvm-objdump C-like style (`r0 = *(u16 *)(r1 + 12)`,
//! `if r3 != 0x81 goto +4`, `lock *(u64 *)(r10 - 8) += r1`).
//!
//! Map references (see [`LddwKind`]) print as `r1 = map[0] ll` (a pointer to map 0 of the
//! program's map table) and `r1 = map_value[1] + 8 ll` (a pointer 8 bytes into the value of the
//! single-entry map 1; ` + 0` is left out).
//!
//! The text is exactly what [`super::asm::assemble`] parses, so `assemble(program(p))` gives
//! back `p` slot for slot. A slot whose fields no form can express (unknown opcode, a field
//! its form does not use set non-zero, an lddw without a proper second slot) prints as
//! `.insn 0x` followed by its eight wire bytes in hex, which the assembler also accepts.
//! Nothing here panics, whatever the input.

use std::fmt::Write;

use super::check::{AluOp, AtomicOp, Cond, EndOp, Form, LddwKind, Operand, form, lddw_kind};
use super::insn::Insn;

/// One instruction (an `lddw` covers its second slot too), without its index.
pub fn insn(insns: &[Insn], pc: usize) -> String {
    match insns.get(pc) {
        Some(i) => text(insns, pc, i).unwrap_or_else(|| raw(i)),
        None => format!("<no instruction {pc}>"),
    }
}

/// The whole program, one `index: text` line per instruction; the second slot of an `lddw`
/// gets no line of its own, as in llvm-objdump.
pub fn program(insns: &[Insn]) -> String {
    let mut out = String::new();
    let width = insns.len().saturating_sub(1).to_string().len().max(4);
    let mut pc = 0;
    while pc < insns.len() {
        let line = insn(insns, pc);
        let _ = writeln!(out, "{pc:>width$}: {line}");
        pc += if is_full_lddw(insns, pc) { 2 } else { 1 };
    }
    out
}

/// Whether `pc` starts an `lddw` whose second slot is well-formed (printed as one line).
pub(crate) fn is_full_lddw(insns: &[Insn], pc: usize) -> bool {
    insns.get(pc).is_some_and(|i| form(i) == Ok(Form::Lddw))
        && insns.get(pc + 1).is_some_and(|h| h.op == 0 && h.dst == 0 && h.src == 0 && h.off == 0)
}

fn raw(i: &Insn) -> String {
    let mut s = String::from(".insn 0x");
    for b in i.encode() {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `+n` / `-n`.
fn rel(v: i64) -> String {
    if v < 0 { format!("-{}", -v) } else { format!("+{v}") }
}

/// `reg + off` / `reg - off`.
fn addr(reg: u8, off: i16) -> String {
    if off < 0 { format!("r{reg} - {}", -(off as i32)) } else { format!("r{reg} + {off}") }
}

/// Jump comparison immediates in hex, as the kernel prints them.
fn hex(v: i32) -> String {
    if v < 0 { format!("-{:#x}", -(v as i64)) } else { format!("{v:#x}") }
}

fn size_name(size: u8) -> u32 {
    size as u32 * 8
}

fn text(insns: &[Insn], pc: usize, i: &Insn) -> Option<String> {
    let f = form(i).ok()?;
    let (d, s) = (i.dst, i.src);
    Some(match f {
        Form::Alu { wide, op, src } => {
            let p = if wide { 'r' } else { 'w' };
            let operand = match src {
                Operand::Imm => i.imm.to_string(),
                Operand::Reg => format!("{p}{s}"),
            };
            let sym = match op {
                AluOp::Mov => "=",
                AluOp::MovSx(bits) => return Some(format!("{p}{d} = (s{bits}){p}{s}")),
                AluOp::Neg => return Some(format!("{p}{d} = -{p}{d}")),
                AluOp::Add => "+=",
                AluOp::Sub => "-=",
                AluOp::Mul => "*=",
                AluOp::Div => "/=",
                AluOp::SDiv => "s/=",
                AluOp::Or => "|=",
                AluOp::And => "&=",
                AluOp::Lsh => "<<=",
                AluOp::Rsh => ">>=",
                AluOp::Mod => "%=",
                AluOp::SMod => "s%=",
                AluOp::Xor => "^=",
                AluOp::Arsh => "s>>=",
            };
            format!("{p}{d} {sym} {operand}")
        }
        Form::End { op, bits } => {
            let name = match op {
                EndOp::Le => "le",
                EndOp::Be => "be",
                EndOp::Swap => "bswap",
            };
            format!("r{d} = {name}{bits} r{d}")
        }
        Form::Lddw => {
            if !is_full_lddw(insns, pc) {
                return None;
            }
            match lddw_kind(insns, pc)? {
                LddwKind::Imm(v) => format!("r{d} = {v:#x} ll"),
                LddwKind::Map(m) => format!("r{d} = map[{m}] ll"),
                LddwKind::MapValue { map, offset: 0 } => format!("r{d} = map_value[{map}] ll"),
                LddwKind::MapValue { map, offset } => format!("r{d} = map_value[{map}] + {offset} ll"),
            }
        }
        Form::LdPacket { size, indirect } => {
            let at = if indirect {
                if i.imm < 0 { format!("r{s} - {}", -(i.imm as i64)) } else { format!("r{s} + {}", i.imm) }
            } else {
                i.imm.to_string()
            };
            format!("r0 = *(u{} *)skb[{at}]", size_name(size))
        }
        Form::Ldx { size, signed } => {
            format!("r{d} = *({}{} *)({})", if signed { 's' } else { 'u' }, size_name(size), addr(s, i.off))
        }
        Form::LdCtx(field) => format!("r{d} = ctx->{}", field.name()),
        Form::St { size } => format!("*(u{} *)({}) = {}", size_name(size), addr(d, i.off), i.imm),
        Form::Stx { size } => format!("*(u{} *)({}) = r{s}", size_name(size), addr(d, i.off)),
        Form::Atomic { wide, op } => {
            let (p, bits) = if wide { ('r', 64) } else { ('w', 32) };
            let at = addr(d, i.off);
            let fetch = |name: &str| format!("{p}{s} = atomic_fetch_{name}((u{bits} *)({at}), {p}{s})");
            let lock = |sym: &str| format!("lock *(u{bits} *)({at}) {sym} {p}{s}");
            let x = if wide { "" } else { "32" };
            match op {
                AtomicOp::Add => lock("+="),
                AtomicOp::Or => lock("|="),
                AtomicOp::And => lock("&="),
                AtomicOp::Xor => lock("^="),
                AtomicOp::FetchAdd => fetch("add"),
                AtomicOp::FetchOr => fetch("or"),
                AtomicOp::FetchAnd => fetch("and"),
                AtomicOp::FetchXor => fetch("xor"),
                AtomicOp::Xchg => format!("{p}{s} = xchg{x}_{bits}({at}, {p}{s})"),
                AtomicOp::Cmpxchg => format!("{p}0 = cmpxchg{x}_{bits}({at}, {p}0, {p}{s})"),
            }
        }
        Form::Ja => format!("goto {}", rel(i.off as i64)),
        Form::Ja32 => format!("gotol {}", rel(i.imm as i64)),
        Form::Jump { wide, cond, src } => {
            let p = if wide { 'r' } else { 'w' };
            let sym = match cond {
                Cond::Eq => "==",
                Cond::Gt => ">",
                Cond::Ge => ">=",
                Cond::Set => "&",
                Cond::Ne => "!=",
                Cond::Sgt => "s>",
                Cond::Sge => "s>=",
                Cond::Lt => "<",
                Cond::Le => "<=",
                Cond::Slt => "s<",
                Cond::Sle => "s<=",
            };
            let operand = match src {
                Operand::Imm => hex(i.imm),
                Operand::Reg => format!("{p}{s}"),
            };
            format!("if {p}{d} {sym} {operand} goto {}", rel(i.off as i64))
        }
        Form::Call => format!("call {}", i.imm),
        Form::CallLocal => format!("call pc{}", rel(i.imm as i64)),
        Form::CallKfunc => format!("call kfunc {}", i.imm),
        Form::Callx => format!("callx r{d}"),
        Form::Exit => "exit".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::ctx::CtxField;
    use crate::bpf::insn::build::*;
    use crate::bpf::insn::*;

    fn one(i: Insn) -> String {
        insn(&[i], 0)
    }

    #[test]
    fn prints_the_kernel_style() {
        let atomic = |size, op| Insn::new(CLASS_STX | MODE_ATOMIC | size, 10, 1, -8, op);
        let cases = [
            (ldx(SIZE_H, 0, 1, 12), "r0 = *(u16 *)(r1 + 12)"),
            (Insn::new(CLASS_LDX | MODE_MEMSX | SIZE_B, 2, 10, -1, 0), "r2 = *(s8 *)(r10 - 1)"),
            (alu32_imm(ALU_ADD, 1, 2), "w1 += 2"),
            (alu64_imm(ALU_MOV, 1, -1), "r1 = -1"),
            (alu64_reg(ALU_ARSH, 1, 2), "r1 s>>= r2"),
            (Insn::new(CLASS_ALU | ALU_MOD | SRC_X, 1, 2, 1, 0), "w1 s%= w2"),
            (Insn::new(CLASS_ALU64 | ALU_DIV, 1, 0, 1, 3), "r1 s/= 3"),
            (Insn::new(CLASS_ALU64 | ALU_MOV | SRC_X, 1, 2, 32, 0), "r1 = (s32)r2"),
            (Insn::new(CLASS_ALU | ALU_MOV | SRC_X, 1, 2, 8, 0), "w1 = (s8)w2"),
            (Insn::new(CLASS_ALU | ALU_NEG, 3, 0, 0, 0), "w3 = -w3"),
            (jmp_imm(JMP_JNE, 3, 0x81, 4), "if r3 != 0x81 goto +4"),
            (jmp32_reg(JMP_JSLE, 3, 4, -2), "if w3 s<= w4 goto -2"),
            (jmp_imm(JMP_JSET, 3, -1, 0), "if r3 & -0x1 goto +0"),
            (ja(-3), "goto -3"),
            (Insn::new(CLASS_JMP32 | JMP_JA, 0, 0, 0, 70000), "gotol +70000"),
            (call_helper(5), "call 5"),
            (Insn::new(CLASS_JMP | JMP_CALL, 0, CALL_LOCAL, 0, 3), "call pc+3"),
            (Insn::new(CLASS_JMP | JMP_CALL, 0, CALL_KFUNC, 0, 9), "call kfunc 9"),
            (Insn::new(CLASS_JMP | JMP_CALL | SRC_X, 2, 0, 0, 0), "callx r2"),
            (Insn::new(CLASS_ALU | ALU_END | SRC_X, 0, 0, 0, 16), "r0 = be16 r0"),
            (Insn::new(CLASS_ALU | ALU_END, 0, 0, 0, 32), "r0 = le32 r0"),
            (Insn::new(CLASS_ALU64 | ALU_END, 0, 0, 0, 64), "r0 = bswap64 r0"),
            (atomic(SIZE_DW, ATOMIC_ADD), "lock *(u64 *)(r10 - 8) += r1"),
            (atomic(SIZE_W, ATOMIC_XOR), "lock *(u32 *)(r10 - 8) ^= w1"),
            (atomic(SIZE_DW, ATOMIC_ADD | ATOMIC_FETCH), "r1 = atomic_fetch_add((u64 *)(r10 - 8), r1)"),
            (atomic(SIZE_W, ATOMIC_AND | ATOMIC_FETCH), "w1 = atomic_fetch_and((u32 *)(r10 - 8), w1)"),
            (atomic(SIZE_DW, ATOMIC_XCHG), "r1 = xchg_64(r10 - 8, r1)"),
            (atomic(SIZE_W, ATOMIC_CMPXCHG), "w0 = cmpxchg32_32(r10 - 8, w0, w1)"),
            (st(SIZE_W, 10, -4, 7), "*(u32 *)(r10 - 4) = 7"),
            (stx(SIZE_B, 1, 2, 0), "*(u8 *)(r1 + 0) = r2"),
            (ld_abs(SIZE_H, 12), "r0 = *(u16 *)skb[12]"),
            (ld_ind(SIZE_W, 3, -2), "r0 = *(u32 *)skb[r3 - 2]"),
            (Insn::new(CLASS_LDX | MODE_CTX | SIZE_DW, 2, 1, CtxField::DataEnd as i16, 0), "r2 = ctx->data_end"),
            (exit(), "exit"),
        ];
        for (i, want) in cases {
            assert_eq!(one(i), want, "{i:?}");
        }
    }

    #[test]
    fn lddw_is_one_line_and_malformed_slots_print_raw() {
        let [lo, hi] = lddw(1, 0x1122_3344_5566_7788);
        assert_eq!(program(&[lo, hi, exit()]), "   0: r1 = 0x1122334455667788 ll\n   2: exit\n");
        // Truncated lddw, a bad second slot, an unknown opcode, a non-zero unused field.
        assert_eq!(one(lo), ".insn 0x1801000088776655");
        let bad = Insn { dst: 2, ..hi };
        assert_eq!(program(&[lo, bad]), "   0: .insn 0x1801000088776655\n   1: .insn 0x0002000044332211\n");
        assert_eq!(one(Insn::new(0xff, 1, 2, 3, 4)), ".insn 0xff21030004000000");
        assert_eq!(one(Insn::new(CLASS_ALU64 | ALU_ADD, 1, 3, 0, 1)), ".insn 0x0731000001000000");
        assert_eq!(insn(&[], 5), "<no instruction 5>");
    }

    #[test]
    fn map_references_print_by_index() {
        let lo = |src, imm| Insn::new(CLASS_LD | MODE_IMM | SIZE_DW, 1, src, 0, imm);
        let hi = |imm| Insn::new(0, 0, 0, 0, imm);
        assert_eq!(insn(&[lo(PSEUDO_MAP_FD, 3), hi(0)], 0), "r1 = map[3] ll");
        assert_eq!(insn(&[lo(PSEUDO_MAP_VALUE, 1), hi(8)], 0), "r1 = map_value[1] + 8 ll");
        assert_eq!(insn(&[lo(PSEUDO_MAP_VALUE, 0), hi(0)], 0), "r1 = map_value[0] ll");
        // Other sources are not forms at all.
        assert_eq!(insn(&[lo(4, 0), hi(0)], 0), ".insn 0x1841000000000000");
    }

    #[test]
    fn indices_are_aligned() {
        let p = vec![exit(); 10_001];
        let text = program(&p);
        assert!(text.starts_with("    0: exit\n"), "{}", &text[..20]);
        assert!(text.ends_with("10000: exit\n"));
    }
}
