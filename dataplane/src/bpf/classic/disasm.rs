//! Classic disassembly in the format of libpcap's `bpf_image` (what `tcpdump -d` prints), so a
//! listing can be diffed against tcpdump's own.
//!
//! One deliberate difference from `bpf_image`: `ldx #pktlen`, which libpcap executes but prints
//! as `unimp 0x81`, is named.

use super::op::*;
use super::{ClassicInsn, extension_name};
use std::fmt::Write;

/// The mnemonic and operand of one instruction, as `bpf_image` spells them. `k` is printed as
/// a signed decimal wherever libpcap uses `%d`.
fn parts(insn: &ClassicInsn, index: usize) -> (&'static str, String) {
    let k = insn.k;
    let sk = k as i32;
    let abs = |op: &'static str| match extension_name(k) {
        Some(name) => (op, format!("[{name}]")),
        None => (op, format!("[{sk}]")),
    };
    match insn.code {
        c if c == RET | K => ("ret", format!("#{sk}")),
        c if c == RET | A => ("ret", String::new()),
        c if c == LD | W | ABS => abs("ld"),
        c if c == LD | H | ABS => abs("ldh"),
        c if c == LD | B | ABS => abs("ldb"),
        c if c == LD | W | LEN => ("ld", "#pktlen".into()),
        c if c == LDX | W | LEN => ("ldx", "#pktlen".into()),
        c if c == LD | W | IND => ("ld", format!("[x + {sk}]")),
        c if c == LD | H | IND => ("ldh", format!("[x + {sk}]")),
        c if c == LD | B | IND => ("ldb", format!("[x + {sk}]")),
        c if c == LD | IMM => ("ld", format!("#{k:#x}")),
        c if c == LDX | IMM => ("ldx", format!("#{k:#x}")),
        c if c == LDX | MSH | B => ("ldxb", format!("4*([{sk}]&0xf)")),
        c if c == LD | MEM => ("ld", format!("M[{sk}]")),
        c if c == LDX | MEM => ("ldx", format!("M[{sk}]")),
        c if c == ST => ("st", format!("M[{sk}]")),
        c if c == STX => ("stx", format!("M[{sk}]")),
        // 32-bit wrap-around, as libpcap computes it: a "backward" k shows its real target.
        c if c == JMP | JA => ("ja", ((index as u32).wrapping_add(1).wrapping_add(k) as i32).to_string()),
        c if c == ALU | NEG => ("neg", String::new()),
        c if c == MISC | TAX => ("tax", String::new()),
        c if c == MISC | TXA => ("txa", String::new()),
        c if c < 0x100 && c & 0x07 == JMP => {
            let name = match c & 0xf0 {
                JEQ => "jeq",
                JGT => "jgt",
                JGE => "jge",
                JSET => "jset",
                _ => return unimp(c),
            };
            if c & X != 0 { (name, "x".into()) } else { (name, format!("#{k:#x}")) }
        }
        c if c < 0x100 && c & 0x07 == ALU => {
            let (name, hex) = match c & 0xf0 {
                ADD => ("add", false),
                SUB => ("sub", false),
                MUL => ("mul", false),
                DIV => ("div", false),
                MOD => ("mod", false),
                AND => ("and", true),
                OR => ("or", true),
                XOR => ("xor", true),
                LSH => ("lsh", false),
                RSH => ("rsh", false),
                _ => return unimp(c),
            };
            if c & X != 0 {
                (name, "x".into())
            } else if hex {
                (name, format!("#{k:#x}"))
            } else {
                (name, format!("#{sk}"))
            }
        }
        c => unimp(c),
    }
}

fn unimp(code: u16) -> (&'static str, String) {
    ("unimp", format!("{code:#x}"))
}

fn is_cond_jump(insn: &ClassicInsn) -> bool {
    insn.class() == JMP && insn.code & 0xf0 != JA
}

/// One instruction on one line without padding, e.g. `jeq #0x800 jt 2 jf 5` (targets are
/// absolute instruction numbers, as in `tcpdump -d`). Used in error messages.
pub fn insn_text(insn: &ClassicInsn, index: usize) -> String {
    let (op, operand) = parts(insn, index);
    let mut s = if operand.is_empty() { op.to_string() } else { format!("{op} {operand}") };
    if is_cond_jump(insn) {
        let _ = write!(s, " jt {} jf {}", index + 1 + insn.jt as usize, index + 1 + insn.jf as usize);
    }
    s
}

/// The whole program as `tcpdump -d` prints it, one instruction per line.
pub fn disasm(insns: &[ClassicInsn]) -> String {
    let mut out = String::new();
    for (i, insn) in insns.iter().enumerate() {
        let (op, operand) = parts(insn, i);
        if is_cond_jump(insn) {
            let _ = writeln!(
                out,
                "({i:03}) {op:<8} {operand:<16} jt {}\tjf {}",
                i + 1 + insn.jt as usize,
                i + 1 + insn.jf as usize
            );
        } else {
            let _ = writeln!(out, "({i:03}) {op:<8} {operand}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(code: u16, jt: u8, jf: u8, k: u32) -> String {
        insn_text(&ClassicInsn::new(code, jt, jf, k), 3)
    }

    #[test]
    fn every_opcode_has_its_bpf_image_spelling() {
        assert_eq!(one(LD | H | ABS, 0, 0, 12), "ldh [12]");
        assert_eq!(one(LD | B | ABS, 0, 0, 23), "ldb [23]");
        assert_eq!(one(LD | W | ABS, 0, 0, 26), "ld [26]");
        assert_eq!(one(LD | W | IND, 0, 0, 2), "ld [x + 2]");
        assert_eq!(one(LD | H | IND, 0, 0, 16), "ldh [x + 16]");
        assert_eq!(one(LD | B | IND, 0, 0, 13), "ldb [x + 13]");
        assert_eq!(one(LD | W | LEN, 0, 0, 0), "ld #pktlen");
        assert_eq!(one(LDX | W | LEN, 0, 0, 0), "ldx #pktlen");
        assert_eq!(one(LD | IMM, 0, 0, 10), "ld #0xa");
        assert_eq!(one(LDX | IMM, 0, 0, 10), "ldx #0xa");
        assert_eq!(one(LDX | MSH | B, 0, 0, 14), "ldxb 4*([14]&0xf)");
        assert_eq!(one(LD | MEM, 0, 0, 2), "ld M[2]");
        assert_eq!(one(LDX | MEM, 0, 0, 2), "ldx M[2]");
        assert_eq!(one(ST, 0, 0, 15), "st M[15]");
        assert_eq!(one(STX, 0, 0, 0), "stx M[0]");
        assert_eq!(one(JMP | JA, 0, 0, 2), "ja 6");
        assert_eq!(one(JMP | JEQ | K, 2, 5, 0x800), "jeq #0x800 jt 6 jf 9");
        assert_eq!(one(JMP | JGT | X, 0, 1, 0), "jgt x jt 4 jf 5");
        assert_eq!(one(JMP | JGE | K, 0, 1, 100), "jge #0x64 jt 4 jf 5");
        assert_eq!(one(JMP | JSET | K, 0, 1, 0x1fff), "jset #0x1fff jt 4 jf 5");
        assert_eq!(one(ALU | ADD | K, 0, 0, 1), "add #1");
        assert_eq!(one(ALU | SUB | X, 0, 0, 0), "sub x");
        assert_eq!(one(ALU | MUL | K, 0, 0, 3), "mul #3");
        assert_eq!(one(ALU | DIV | X, 0, 0, 0), "div x");
        assert_eq!(one(ALU | MOD | K, 0, 0, 7), "mod #7");
        assert_eq!(one(ALU | AND | K, 0, 0, 15), "and #0xf");
        assert_eq!(one(ALU | OR | K, 0, 0, 15), "or #0xf");
        assert_eq!(one(ALU | XOR | X, 0, 0, 0), "xor x");
        assert_eq!(one(ALU | LSH | K, 0, 0, 2), "lsh #2");
        assert_eq!(one(ALU | RSH | X, 0, 0, 0), "rsh x");
        assert_eq!(one(ALU | NEG, 0, 0, 0), "neg");
        assert_eq!(one(MISC | TAX, 0, 0, 0), "tax");
        assert_eq!(one(MISC | TXA, 0, 0, 0), "txa");
        assert_eq!(one(RET | K, 0, 0, 262144), "ret #262144");
        assert_eq!(one(RET | A, 0, 0, 0), "ret");
    }

    #[test]
    fn unknown_codes_and_extensions_print_like_libpcap() {
        assert_eq!(one(0x0e, 0, 0, 0), "unimp 0xe");
        assert_eq!(one(ALU | NEG | X, 0, 0, 0), "unimp 0x8c");
        assert_eq!(one(JMP | 0x50, 0, 0, 0), "unimp 0x55 jt 4 jf 4");
        assert_eq!(one(0x1234, 0, 0, 0), "unimp 0x1234");
        assert_eq!(one(LD | W | ABS, 0, 0, 0xffff_f008), "ld [ifidx]");
        assert_eq!(one(LD | B | ABS, 0, 0, 0xffff_f030), "ldb [vlanp]");
        assert_eq!(one(RET | K, 0, 0, u32::MAX), "ret #-1");
        assert_eq!(one(JMP | JA, 0, 0, u32::MAX), "ja 3");
        assert_eq!(one(JMP | JA, 0, 0, 0x7fff_ffff), "ja -2147483645");
    }

    #[test]
    fn listing_matches_tcpdump_d() {
        let prog = [
            ClassicInsn::new(LD | H | ABS, 0, 0, 12),
            ClassicInsn::new(JMP | JEQ | K, 0, 1, 0x800),
            ClassicInsn::new(RET | K, 0, 0, 262144),
            ClassicInsn::new(RET | A, 0, 0, 0),
        ];
        assert_eq!(
            disasm(&prog),
            "(000) ldh      [12]\n\
             (001) jeq      #0x800           jt 2\tjf 3\n\
             (002) ret      #262144\n\
             (003) ret      \n"
        );
    }
}
