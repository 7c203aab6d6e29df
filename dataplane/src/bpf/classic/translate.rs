//! Translation of a validated classic program to eBPF of kind [`ProgKind::Xdp`](crate::bpf::ProgKind).
//!
//! Register and memory layout:
//! ```text
//!  r0  A        (as in the kernel's own converter: packet loads land in A without a move)
//!  r7  X
//!  r8  scratch  (A saved across `ldxb 4*([k]&0xf)`, `data` in the prologue)
//!  r9  packet length, computed in the prologue when `#pktlen` is used
//!  r10-64 .. r10-4   M[0] .. M[15], one 32-bit word each
//! ```
//! A and X are only ever written by 32-bit operations and zero-extending loads, so their upper
//! halves are always zero, exactly as if they were the 32-bit registers classic BPF defines.
//!
//! Semantics follow libpcap's `bpf_filter` (the reference the differential tests compare with):
//! packet loads use `LD_ABS`/`LD_IND`, which end the filter with 0 when out of range; the index
//! of `[x + k]` is `X + k` without 32-bit wrap-around; division or modulo by X = 0 ends the
//! filter with 0; a shift by X ≥ 32 gives 0 (not eBPF's shift-count masking).

use super::op::*;
use super::{ClassicInsn, MEM_WORDS};
use crate::bpf::ctx::xdp_md;
use crate::bpf::insn::{self, Insn, build};

const REG_A: u8 = 0;
const REG_CTX: u8 = 1;
const REG_X: u8 = 7;
const REG_TMP: u8 = 8;
const REG_LEN: u8 = 9;
/// Frame-pointer offset of M[0]; M[i] is at `MEM_BASE + 4 * i`.
const MEM_BASE: i16 = -(MEM_WORDS as i16) * 4;

const LIVE_A: u8 = 1;
const LIVE_X: u8 = 2;

/// Translates a program that passed [`validate`](super::validate). Never panics; translating an
/// unvalidated program gives an eBPF program that `check::validate` may refuse or that computes
/// nonsense, so validate first (or use [`compile`](super::compile)).
pub fn translate(insns: &[ClassicInsn]) -> Vec<Insn> {
    let live_out = liveness(insns);
    // Pass 1 measures (every instruction's length is independent of jump distances); pass 2
    // emits with the slot numbers pass 1 found.
    let mut measure = Lowering::new(insns, &live_out, None);
    measure.run();
    let layout = Layout { starts: measure.starts, ret0: measure.ret0.unwrap_or(0), end: measure.out.len() };
    let mut emit = Lowering::new(insns, &live_out, Some(layout));
    emit.run();
    emit.out
}

/// Where pass 1 placed things.
struct Layout {
    /// First eBPF slot of each classic instruction.
    starts: Vec<usize>,
    /// Slot of the shared `r0 = 0; exit` epilogue.
    ret0: usize,
    /// Length of the whole program (the target of jumps past the last instruction).
    end: usize,
}

struct Lowering<'a> {
    insns: &'a [ClassicInsn],
    live_out: &'a [u8],
    /// `None` while measuring.
    layout: Option<Layout>,
    starts: Vec<usize>,
    /// Where the `r0 = 0; exit` epilogue starts, once something needs it.
    ret0: Option<usize>,
    out: Vec<Insn>,
}

impl<'a> Lowering<'a> {
    fn new(insns: &'a [ClassicInsn], live_out: &'a [u8], layout: Option<Layout>) -> Self {
        Lowering { insns, live_out, layout, starts: Vec::with_capacity(insns.len()), ret0: None, out: Vec::new() }
    }

    fn run(&mut self) {
        self.prologue();
        for (pc, insn) in self.insns.iter().enumerate() {
            self.starts.push(self.out.len());
            self.lower(pc, insn);
        }
        if self.ret0.is_some() {
            self.ret0 = Some(self.out.len());
            self.out.push(build::mov32_imm(REG_A, 0));
            self.out.push(build::exit());
        }
    }

    fn prologue(&mut self) {
        if self.insns.iter().any(|i| i.code == LD | W | LEN || i.code == LDX | W | LEN) {
            // 32-bit `xdp_md` loads, which the checker rewrites to the real pointer fields; read
            // before any packet load so r1 need not survive them.
            self.out.push(build::ldx(insn::SIZE_W, REG_LEN, REG_CTX, xdp_md::DATA_END));
            self.out.push(build::ldx(insn::SIZE_W, REG_TMP, REG_CTX, xdp_md::DATA));
            self.out.push(build::alu64_reg(insn::ALU_SUB, REG_LEN, REG_TMP));
        }
        let entry = entry_liveness(self.insns, self.live_out);
        if entry & LIVE_A != 0 {
            self.out.push(build::mov32_imm(REG_A, 0));
        }
        if entry & LIVE_X != 0 {
            self.out.push(build::mov32_imm(REG_X, 0));
        }
    }

    /// Offset from the slot about to be pushed to `slot`.
    fn off_to(&self, slot: usize) -> i16 {
        let from = self.out.len() as i64 + 1;
        i16::try_from(slot as i64 - from).unwrap_or(i16::MAX)
    }

    /// Offset to the first slot of classic instruction `pc` (0 while measuring).
    fn off_to_insn(&self, pc: usize) -> i16 {
        match &self.layout {
            Some(l) => self.off_to(l.starts.get(pc).copied().unwrap_or(l.end)),
            None => 0,
        }
    }

    /// A jump (`op` on `reg` and `imm`) to the `r0 = 0; exit` epilogue.
    fn jump_ret0(&mut self, op: u8, reg: u8, imm: i32) {
        self.ret0 = Some(0);
        let off = self.layout.as_ref().map_or(0, |l| self.off_to(l.ret0));
        self.out.push(Insn::new(op, reg, 0, off, imm));
    }

    fn mem_off(k: u32) -> i16 {
        MEM_BASE.saturating_add(i16::try_from(k.saturating_mul(4)).unwrap_or(i16::MAX))
    }

    fn lower(&mut self, pc: usize, insn: &ClassicInsn) {
        let (code, k) = (insn.code, insn.k);
        let fp = insn::REG_FP;
        match code & 0x07 {
            LD => match code & 0xe0 {
                IMM => self.out.push(build::mov32_imm(REG_A, k as i32)),
                ABS => self.packet_load(code, None, k),
                IND => self.packet_load(code, Some(REG_X), k),
                MEM => self.out.push(build::ldx(insn::SIZE_W, REG_A, fp, Self::mem_off(k))),
                LEN => self.out.push(build::mov32_reg(REG_A, REG_LEN)),
                _ => self.invalid(),
            },
            LDX => match code & 0xe0 {
                IMM => self.out.push(build::mov32_imm(REG_X, k as i32)),
                MEM => self.out.push(build::ldx(insn::SIZE_W, REG_X, fp, Self::mem_off(k))),
                LEN => self.out.push(build::mov32_reg(REG_X, REG_LEN)),
                MSH => self.msh(pc, k),
                _ => self.invalid(),
            },
            ST => self.out.push(build::stx(insn::SIZE_W, fp, REG_A, Self::mem_off(k))),
            STX => self.out.push(build::stx(insn::SIZE_W, fp, REG_X, Self::mem_off(k))),
            ALU => self.alu(code, k),
            JMP => self.jump(pc, insn),
            RET => self.ret(insn),
            _ => match code {
                c if c == MISC | TAX => self.out.push(build::mov32_reg(REG_X, REG_A)),
                c if c == MISC | TXA => self.out.push(build::mov32_reg(REG_A, REG_X)),
                _ => self.invalid(),
            },
        }
    }

    /// For an opcode validation refuses: a slot the eBPF checker refuses too (opcode 0 would be
    /// a 32-bit `ld` immediate, which eBPF does not have).
    fn invalid(&mut self) {
        self.out.push(Insn::new(0, 0, 0, 0, 0));
    }

    fn size_of(code: u16) -> u8 {
        match code & 0x18 {
            H => insn::SIZE_H,
            B => insn::SIZE_B,
            _ => insn::SIZE_W,
        }
    }

    /// `ld[hb] [k]` / `ld[hb] [x + k]`. An offset of 2 GiB or more is never inside a packet
    /// (libpcap: `k >= buflen` returns 0), so it becomes "return 0" rather than an immediate
    /// whose sign a back end could read either way.
    fn packet_load(&mut self, code: u16, index: Option<u8>, k: u32) {
        let Ok(imm) = i32::try_from(k) else {
            return self.jump_ret0(insn::CLASS_JMP | insn::JMP_JA, 0, 0);
        };
        let size = Self::size_of(code);
        self.out.push(match index {
            None => build::ld_abs(size, imm),
            Some(reg) => build::ld_ind(size, reg, imm),
        });
    }

    /// `ldxb 4*([k]&0xf)`: X = the IPv4 header length in the byte at k.
    fn msh(&mut self, pc: usize, k: u32) {
        let Ok(imm) = i32::try_from(k) else {
            return self.jump_ret0(insn::CLASS_JMP | insn::JMP_JA, 0, 0);
        };
        // The byte load lands in r0 = A, so A is parked in r8 when something reads it later.
        let keep_a = self.live_out.get(pc).is_some_and(|l| l & LIVE_A != 0);
        if keep_a {
            self.out.push(build::mov64_reg(REG_TMP, REG_A));
        }
        self.out.push(build::ld_abs(insn::SIZE_B, imm));
        self.out.push(build::alu32_imm(insn::ALU_AND, REG_A, 0xf));
        self.out.push(build::alu32_imm(insn::ALU_LSH, REG_A, 2));
        self.out.push(build::mov32_reg(REG_X, REG_A));
        if keep_a {
            self.out.push(build::mov64_reg(REG_A, REG_TMP));
        }
    }

    fn alu(&mut self, code: u16, k: u32) {
        let op = (code & 0xf0) as u8;
        if code == ALU | NEG {
            return self.out.push(build::alu32_imm(insn::ALU_NEG, REG_A, 0));
        }
        if code & 0x08 == K {
            return self.out.push(build::alu32_imm(op, REG_A, k as i32));
        }
        match code & 0xf0 {
            DIV | MOD => {
                // Classic BPF: A / 0 and A % 0 end the filter with 0 (eBPF would give 0 or A).
                self.jump_ret0(insn::CLASS_JMP32 | insn::JMP_JEQ, REG_X, 0);
                self.out.push(build::alu32_reg(op, REG_A, REG_X));
            }
            LSH | RSH => {
                // libpcap: a shift by 32 or more gives 0; eBPF would mask the count to 5 bits.
                self.out.push(build::jmp32_imm(insn::JMP_JGE, REG_X, 32, 2));
                self.out.push(build::alu32_reg(op, REG_A, REG_X));
                self.out.push(build::ja(1));
                self.out.push(build::mov32_imm(REG_A, 0));
            }
            _ => self.out.push(build::alu32_reg(op, REG_A, REG_X)),
        }
    }

    fn ret(&mut self, insn: &ClassicInsn) {
        if insn.code & 0x18 == K {
            self.out.push(build::mov32_imm(REG_A, insn.k as i32));
        }
        self.out.push(build::exit());
    }

    /// An unconditional transfer to classic instruction `target`. A return there is copied
    /// instead of jumped to: one instruction fewer on the path, and most filters end in
    /// `jeq ... jt <ret #match> jf <ret #0>`.
    fn goto(&mut self, target: usize) {
        match self.insns.get(target) {
            Some(t) if t.class() == RET => self.ret(t),
            _ => {
                let off = self.off_to_insn(target);
                self.out.push(build::ja(off));
            }
        }
    }

    fn jump(&mut self, pc: usize, insn: &ClassicInsn) {
        let next = pc + 1;
        if insn.code == JMP | JA {
            let target = next.saturating_add(insn.k as usize);
            if target != next {
                self.goto(target);
            }
            return;
        }
        let (jt, jf) = (next + insn.jt as usize, next + insn.jf as usize);
        let op = (insn.code & 0xf0) as u8;
        let cond = |op: u8, off: i16| {
            if insn.code & 0x08 == X {
                build::jmp32_reg(op, REG_A, REG_X, off)
            } else {
                build::jmp32_imm(op, REG_A, insn.k as i32, off)
            }
        };
        if jt == jf {
            if jt != next {
                self.goto(jt);
            }
        } else if jf == next {
            let off = self.off_to_insn(jt);
            self.out.push(cond(op, off));
        } else if let (true, Some(inv)) = (jt == next, inverse(op)) {
            let off = self.off_to_insn(jf);
            self.out.push(cond(inv, off));
        } else {
            let off = self.off_to_insn(jt);
            self.out.push(cond(op, off));
            self.goto(jf);
        }
    }
}

/// The eBPF jump taken exactly when `op` is not (jset has none).
fn inverse(op: u8) -> Option<u8> {
    match op {
        insn::JMP_JEQ => Some(insn::JMP_JNE),
        insn::JMP_JGT => Some(insn::JMP_JLE),
        insn::JMP_JGE => Some(insn::JMP_JLT),
        _ => None,
    }
}

/// Which of A and X each instruction reads and writes.
fn uses_defs(insn: &ClassicInsn) -> (u8, u8) {
    let c = insn.code;
    match c & 0x07 {
        LD if c & 0xe0 == IND => (LIVE_X, LIVE_A),
        LD => (0, LIVE_A),
        LDX => (0, LIVE_X),
        ST => (LIVE_A, 0),
        STX => (LIVE_X, 0),
        ALU if c != ALU | NEG && c & 0x08 == X => (LIVE_A | LIVE_X, LIVE_A),
        ALU => (LIVE_A, LIVE_A),
        JMP if c == JMP | JA => (0, 0),
        JMP if c & 0x08 == X => (LIVE_A | LIVE_X, 0),
        JMP => (LIVE_A, 0),
        RET if c & 0x18 == A => (LIVE_A, 0),
        RET => (0, 0),
        _ if c == MISC | TAX => (LIVE_A, LIVE_X),
        _ => (LIVE_X, LIVE_A),
    }
}

fn successors(pc: usize, insn: &ClassicInsn) -> [Option<usize>; 2] {
    let next = pc + 1;
    match insn.code & 0x07 {
        RET => [None, None],
        JMP if insn.code == JMP | JA => [Some(next.saturating_add(insn.k as usize)), None],
        JMP => [Some(next + insn.jt as usize), Some(next + insn.jf as usize)],
        _ => [Some(next), None],
    }
}

/// Registers live after each instruction. Every edge goes forward, so one backward sweep is exact.
fn liveness(insns: &[ClassicInsn]) -> Vec<u8> {
    let n = insns.len();
    let mut live_in = vec![0u8; n + 1];
    let mut live_out = vec![0u8; n];
    for pc in (0..n).rev() {
        let out = successors(pc, &insns[pc])
            .into_iter()
            .flatten()
            .filter_map(|s| live_in.get(s).copied())
            .fold(0, |a, b| a | b);
        let (uses, defs) = uses_defs(&insns[pc]);
        live_out[pc] = out;
        live_in[pc] = uses | (out & !defs);
    }
    live_out
}

fn entry_liveness(insns: &[ClassicInsn], live_out: &[u8]) -> u8 {
    match (insns.first(), live_out.first()) {
        (Some(first), Some(&out)) => {
            let (uses, defs) = uses_defs(first);
            uses | (out & !defs)
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::classic::parse;
    use insn::build::*;
    use insn::{ALU_AND, ALU_LSH, JMP_JEQ, JMP_JGT, JMP_JLE, JMP_JNE, JMP_JSET, SIZE_B, SIZE_H, SIZE_W};

    fn tr(ddd: &str) -> Vec<Insn> {
        translate(&parse(ddd).unwrap())
    }

    #[test]
    fn ipv4_udp_dst_port_53_translates_slot_for_slot() {
        // tcpdump -ddd 'ip and udp dst port 53'.
        let prog = tr("11\n40 0 0 12\n21 0 8 2048\n48 0 0 23\n21 0 6 17\n40 0 0 20\n69 4 0 8191\n\
                       177 0 0 14\n72 0 0 16\n21 0 1 53\n6 0 0 262144\n6 0 0 0\n");
        let expected = vec![
            ld_abs(SIZE_H, 12),
            jmp32_imm(JMP_JNE, 0, 0x800, 12), // only jf leaves the straight line: inverted
            ld_abs(SIZE_B, 23),
            jmp32_imm(JMP_JNE, 0, 17, 10),
            ld_abs(SIZE_H, 20),
            jmp32_imm(JMP_JSET, 0, 0x1fff, 8), // only jt leaves
            ld_abs(SIZE_B, 14),                // A is dead here, so not saved around the MSH
            alu32_imm(ALU_AND, 0, 0xf),
            alu32_imm(ALU_LSH, 0, 2),
            mov32_reg(7, 0),
            ld_ind(SIZE_H, 7, 16),
            jmp32_imm(JMP_JNE, 0, 53, 2),
            mov32_imm(0, 262144),
            exit(),
            mov32_imm(0, 0),
            exit(),
        ];
        assert_eq!(prog, expected);
    }

    #[test]
    fn msh_keeps_a_when_it_is_read_later() {
        // ld #7; ldxb 4*([14]&0xf); add x; ret a
        let prog = tr("4\n0 0 0 7\n177 0 0 14\n12 0 0 0\n22 0 0 0\n");
        assert_eq!(
            prog,
            vec![
                mov32_imm(0, 7),
                mov64_reg(8, 0),
                ld_abs(SIZE_B, 14),
                alu32_imm(ALU_AND, 0, 0xf),
                alu32_imm(ALU_LSH, 0, 2),
                mov32_reg(7, 0),
                mov64_reg(0, 8),
                alu32_reg(insn::ALU_ADD, 0, 7),
                exit(),
            ]
        );
    }

    #[test]
    fn packet_length_is_read_from_the_context_first() {
        // ld #pktlen; ldx #pktlen; ret a
        let prog = tr("3\n128 0 0 0\n129 0 0 0\n22 0 0 0\n");
        assert_eq!(
            prog,
            vec![
                ldx(SIZE_W, 9, 1, xdp_md::DATA_END),
                ldx(SIZE_W, 8, 1, xdp_md::DATA),
                alu64_reg(insn::ALU_SUB, 9, 8),
                mov32_reg(0, 9),
                mov32_reg(7, 9),
                exit(),
            ]
        );
    }

    #[test]
    fn registers_are_zeroed_only_when_read_before_written() {
        // txa; ret a: X is read at entry, A is not.
        assert_eq!(tr("2\n135 0 0 0\n22 0 0 0\n"), vec![mov32_imm(7, 0), mov32_reg(0, 7), exit()]);
        // ret a alone returns the initial A = 0.
        assert_eq!(tr("1\n22 0 0 0\n"), vec![mov32_imm(0, 0), exit()]);
        // ldx M[] needs no init, and the scratch words sit below the frame pointer.
        assert_eq!(
            tr("3\n2 0 0 15\n97 0 0 15\n22 0 0 0\n"),
            vec![mov32_imm(0, 0), stx(SIZE_W, 10, 0, -4), ldx(SIZE_W, 7, 10, -4), exit()]
        );
        assert_eq!(
            tr("2\n3 0 0 0\n6 0 0 1\n"),
            vec![mov32_imm(7, 0), stx(SIZE_W, 10, 7, -64), mov32_imm(0, 1), exit()]
        );
    }

    #[test]
    fn division_by_x_jumps_to_a_shared_return_zero() {
        // ldx #0; div x; mod x; ret a
        let prog = tr("4\n1 0 0 0\n60 0 0 0\n156 0 0 0\n22 0 0 0\n");
        assert_eq!(
            prog,
            vec![
                mov32_imm(0, 0),
                mov32_imm(7, 0),
                jmp32_imm(JMP_JEQ, 7, 0, 4),
                alu32_reg(insn::ALU_DIV, 0, 7),
                jmp32_imm(JMP_JEQ, 7, 0, 2),
                alu32_reg(insn::ALU_MOD, 0, 7),
                exit(),
                mov32_imm(0, 0),
                exit(),
            ]
        );
    }

    #[test]
    fn shifts_by_x_of_32_or_more_give_zero() {
        let prog = tr("2\n108 0 0 0\n22 0 0 0\n");
        assert_eq!(
            &prog[2..],
            &[jmp32_imm(insn::JMP_JGE, 7, 32, 2), alu32_reg(insn::ALU_LSH, 0, 7), ja(1), mov32_imm(0, 0), exit()]
        );
    }

    #[test]
    fn far_packet_offsets_return_zero_without_loading() {
        // ld [0x80000000]; ldxb 4*([0xffff0000]&0xf); ldh [x + 0x90000000]; ret a
        let prog = tr("4\n32 0 0 2147483648\n177 0 0 4294901760\n72 0 0 2415919104\n22 0 0 0\n");
        assert_eq!(prog, vec![ja(3), ja(2), ja(1), exit(), mov32_imm(0, 0), exit()]);
    }

    #[test]
    fn conditional_jumps_pick_the_shortest_form() {
        // 0: jgt #5 jt 1 jf 2 (both away)   1: jgt #5 jt 0 jf 1 (inverted)
        // 2: jset x jt 0 jf 1 (no inverse)  3: jeq #1 jt 1 jf 1 (unconditional)
        // 4: jeq #1 jt 0 jf 0 (nothing)     5: ja 0 (nothing)
        // 6: ret #1  7: ret #2
        let prog = tr("8\n37 1 2 5\n37 0 1 5\n77 0 1 0\n21 1 1 1\n21 0 0 1\n5 0 0 0\n6 0 0 1\n6 0 0 2\n");
        assert_eq!(
            prog,
            vec![
                mov32_imm(0, 0),
                mov32_imm(7, 0),
                jmp32_imm(JMP_JGT, 0, 5, 2), // → 2
                ja(3),                       // → 3
                jmp32_imm(JMP_JLE, 0, 5, 2), // → 3
                jmp32_reg(JMP_JSET, 0, 7, 1),
                ja(1), // → 4, which is empty like 5, so → 6
                ja(0), // → 5: an empty instruction still gets its jump
                mov32_imm(0, 1),
                exit(),
                mov32_imm(0, 2),
                exit(),
            ]
        );
    }

    #[test]
    fn jumps_to_returns_copy_the_return() {
        // 0: jeq #1 jt 3 jf 4   1: ja 3   2: ld #5   3: ret #1   4: ret a
        let prog = tr("5\n21 2 3 1\n5 0 0 1\n0 0 0 5\n6 0 0 1\n22 0 0 0\n");
        assert_eq!(
            prog,
            vec![
                mov32_imm(0, 0),
                jmp32_imm(JMP_JEQ, 0, 1, 4), // → 3: the true branch stays a jump
                exit(),                      // the false branch is `ret a`, copied
                mov32_imm(0, 1),             // `ja` to `ret #1`, copied
                exit(),
                mov32_imm(0, 5),
                mov32_imm(0, 1),
                exit(),
                exit(),
            ]
        );
    }

    #[test]
    fn constants_keep_all_32_bits() {
        // ld #0xffffffff; jgt #0xfffffffe jt 0 jf 1; ret #0x80000000; ret #0
        let prog = tr("4\n0 0 0 4294967295\n37 0 1 4294967294\n6 0 0 2147483648\n6 0 0 0\n");
        assert_eq!(prog[0], mov32_imm(0, -1));
        // The comparison is 32-bit, so -2 means 0xfffffffe, not a sign-extended 64-bit value.
        assert_eq!(prog[1], jmp32_imm(JMP_JLE, 0, -2, 2));
        assert_eq!(prog[2], mov32_imm(0, i32::MIN));
    }

    #[test]
    fn never_panics_on_unvalidated_input() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let len = (next() % 40) as usize;
            let prog: Vec<ClassicInsn> = (0..len)
                .map(|_| {
                    let r = next();
                    ClassicInsn::new(r as u16, (r >> 16) as u8, (r >> 24) as u8, (r >> 32) as u32)
                })
                .collect();
            let _ = translate(&prog);
        }
        assert!(translate(&[]).is_empty());
    }

    /// Runs a classic program through compile and both back ends on `packet`, which must agree.
    fn exec_on(prog: &[ClassicInsn], packet: &[u8]) -> u64 {
        use crate::bpf::Exec;
        let program = crate::bpf::classic::compile(prog).unwrap_or_else(|e| panic!("{e}"));
        let jit = crate::bpf::jit::JitProgram::compile(&program).unwrap_or_else(|e| panic!("{e}"));
        let interp = crate::bpf::interp::Interpreter::new(&program);
        let mut buf = packet.to_vec();
        let by_interp = interp.run_xdp(&mut buf, 1, 0).unwrap_or_else(|f| panic!("{f}"));
        let by_jit = jit.run_xdp(&mut buf, 1, 0).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(by_interp, by_jit, "interpreter vs jit");
        by_interp
    }

    fn counting(len: usize) -> Vec<u8> {
        (0..len).map(|i| i as u8).collect()
    }

    /// On a 64-byte packet whose byte i is i.
    fn exec(prog: &[ClassicInsn]) -> u64 {
        exec_on(prog, &counting(64))
    }

    fn i(code: u16, jt: u8, jf: u8, k: u32) -> ClassicInsn {
        ClassicInsn::new(code, jt, jf, k)
    }

    const RET_A: ClassicInsn = ClassicInsn::new(RET | A, 0, 0, 0);

    /// `ld #a; ldx #x; <op>; ret a`.
    fn alu(op: ClassicInsn, a: u32, x: u32) -> u64 {
        exec(&[i(LD | IMM, 0, 0, a), i(LDX | IMM, 0, 0, x), op, RET_A])
    }

    #[test]
    fn loads_run_with_classic_semantics() {
        assert_eq!(exec(&[i(LD | IMM, 0, 0, 0xdead_beef), RET_A]), 0xdead_beef);
        assert_eq!(exec(&[i(LDX | IMM, 0, 0, 77), i(MISC | TXA, 0, 0, 0), RET_A]), 77);
        assert_eq!(exec(&[i(LD | W | ABS, 0, 0, 4), RET_A]), 0x0405_0607);
        assert_eq!(exec(&[i(LD | H | ABS, 0, 0, 12), RET_A]), 0x0c0d);
        assert_eq!(exec(&[i(LD | B | ABS, 0, 0, 23), RET_A]), 0x17);
        // MSH: (14 & 0xf) * 4 = 56, then [x + 4] = bytes 60..64.
        assert_eq!(exec(&[i(LDX | B | MSH, 0, 0, 14), i(LD | W | IND, 0, 0, 4), RET_A]), 0x3c3d_3e3f);
        assert_eq!(exec(&[i(LDX | IMM, 0, 0, 10), i(LD | H | IND, 0, 0, 2), RET_A]), 0x0c0d);
        assert_eq!(exec(&[i(LDX | IMM, 0, 0, 10), i(LD | B | IND, 0, 0, 53), RET_A]), 63);
        assert_eq!(exec(&[i(LD | W | LEN, 0, 0, 0), RET_A]), 64);
        assert_eq!(exec_on(&[i(LDX | W | LEN, 0, 0, 0), i(MISC | TXA, 0, 0, 0), RET_A], &counting(1514)), 1514);
        let mem = [i(LD | IMM, 0, 0, 5), i(ST, 0, 0, 3), i(LDX | IMM, 0, 0, 9), i(STX, 0, 0, 15)];
        let mut prog = mem.to_vec();
        prog.extend([i(LD | MEM, 0, 0, 15), i(LDX | MEM, 0, 0, 3), i(ALU | SUB | X, 0, 0, 0), RET_A]);
        assert_eq!(exec(&prog), 4);
    }

    #[test]
    fn out_of_range_loads_end_the_filter_with_zero() {
        let after = |load: ClassicInsn| exec(&[i(LD | IMM, 0, 0, 9), load, i(RET | K, 0, 0, 1)]);
        assert_eq!(after(i(LD | W | ABS, 0, 0, 61)), 0);
        assert_eq!(after(i(LD | W | ABS, 0, 0, 60)), 1);
        assert_eq!(after(i(LD | H | ABS, 0, 0, 63)), 0);
        assert_eq!(after(i(LD | B | ABS, 0, 0, 64)), 0);
        assert_eq!(after(i(LD | B | ABS, 0, 0, 0x8000_0000)), 0);
        assert_eq!(after(i(LDX | B | MSH, 0, 0, 64)), 0);
        assert_eq!(after(i(LDX | B | MSH, 0, 0, u32::MAX)), 0);
        assert_eq!(after(i(LD | B | IND, 0, 0, u32::MAX)), 0);
        // X + k does not wrap around 2^32 (libpcap compares without wrapping).
        let wrap = [i(LDX | IMM, 0, 0, u32::MAX), i(LD | B | IND, 0, 0, 1), i(RET | K, 0, 0, 1)];
        assert_eq!(exec(&wrap), 0);
        assert_eq!(exec_on(&[i(LD | B | ABS, 0, 0, 0), i(RET | K, 0, 0, 1)], &[]), 0);
    }

    #[test]
    fn alu_operations_are_32_bit() {
        assert_eq!(alu(i(ALU | ADD | K, 0, 0, 1), u32::MAX, 0), 0);
        assert_eq!(alu(i(ALU | ADD | X, 0, 0, 0), 0xffff_fff0, 0x20), 0x10);
        assert_eq!(alu(i(ALU | SUB | K, 0, 0, 2), 1, 0), 0xffff_ffff);
        assert_eq!(alu(i(ALU | SUB | X, 0, 0, 0), 10, 3), 7);
        assert_eq!(alu(i(ALU | MUL | K, 0, 0, 0x10000), 0x10001, 0), 0x10000);
        assert_eq!(alu(i(ALU | MUL | X, 0, 0, 0), 6, 7), 42);
        assert_eq!(alu(i(ALU | DIV | K, 0, 0, 7), 100, 0), 14);
        assert_eq!(alu(i(ALU | DIV | K, 0, 0, 0x8000_0000), u32::MAX, 0), 1);
        assert_eq!(alu(i(ALU | DIV | X, 0, 0, 0), 100, 9), 11);
        assert_eq!(alu(i(ALU | MOD | K, 0, 0, 7), 100, 0), 2);
        assert_eq!(alu(i(ALU | MOD | X, 0, 0, 0), 100, 9), 1);
        assert_eq!(alu(i(ALU | OR | K, 0, 0, 0xf0), 0x0f, 0), 0xff);
        assert_eq!(alu(i(ALU | OR | X, 0, 0, 0), 0x0f, 0xf000_0000), 0xf000_000f);
        assert_eq!(alu(i(ALU | AND | K, 0, 0, 0xff00), 0x1234, 0), 0x1200);
        assert_eq!(alu(i(ALU | AND | X, 0, 0, 0), 0x1234, 0xf), 4);
        assert_eq!(alu(i(ALU | XOR | K, 0, 0, 0xffff_ffff), 0x0f0f_0f0f, 0), 0xf0f0_f0f0);
        assert_eq!(alu(i(ALU | XOR | X, 0, 0, 0), 6, 3), 5);
        assert_eq!(alu(i(ALU | LSH | K, 0, 0, 31), 3, 0), 0x8000_0000);
        assert_eq!(alu(i(ALU | LSH | X, 0, 0, 0), 3, 4), 48);
        assert_eq!(alu(i(ALU | RSH | K, 0, 0, 4), 0x8000_0000, 0), 0x0800_0000);
        assert_eq!(alu(i(ALU | RSH | X, 0, 0, 0), 0x8000_0000, 31), 1);
        assert_eq!(alu(i(ALU | NEG, 0, 0, 0), 1, 0), 0xffff_ffff);
        assert_eq!(alu(i(MISC | TAX, 0, 0, 0), 5, 0), 5);
        assert_eq!(exec(&[i(LD | IMM, 0, 0, 5), i(MISC | TAX, 0, 0, 0), i(ALU | ADD | X, 0, 0, 0), RET_A]), 10);
    }

    #[test]
    fn division_by_zero_x_and_wide_shifts_follow_libpcap() {
        assert_eq!(alu(i(ALU | DIV | X, 0, 0, 0), 100, 0), 0);
        assert_eq!(alu(i(ALU | MOD | X, 0, 0, 0), 100, 0), 0);
        // The filter ends, so a following `ret #1` is never reached.
        assert_eq!(exec(&[i(LD | IMM, 0, 0, 1), i(ALU | DIV | X, 0, 0, 0), i(RET | K, 0, 0, 1)]), 0);
        assert_eq!(alu(i(ALU | LSH | X, 0, 0, 0), 1, 32), 0);
        assert_eq!(alu(i(ALU | RSH | X, 0, 0, 0), u32::MAX, 33), 0);
        assert_eq!(alu(i(ALU | LSH | X, 0, 0, 0), 1, u32::MAX), 0);
    }

    #[test]
    fn jumps_take_the_right_branch() {
        // `ld #a; jxx #k jt 0 jf 1; ret #1; ret #2`.
        let jump = |code: u16, a: u32, k: u32| {
            exec(&[
                i(LD | IMM, 0, 0, a),
                i(LDX | IMM, 0, 0, k),
                i(code, 0, 1, k),
                i(RET | K, 0, 0, 1),
                i(RET | K, 0, 0, 2),
            ])
        };
        for src in [K, X] {
            assert_eq!(jump(JMP | JEQ | src, 5, 5), 1);
            assert_eq!(jump(JMP | JEQ | src, 5, 6), 2);
            assert_eq!(jump(JMP | JGT | src, 0xffff_ffff, 0xffff_fffe), 1);
            assert_eq!(jump(JMP | JGT | src, 5, 5), 2);
            assert_eq!(jump(JMP | JGE | src, 5, 5), 1);
            assert_eq!(jump(JMP | JGE | src, 0x7fff_ffff, 0x8000_0000), 2);
            assert_eq!(jump(JMP | JSET | src, 6, 2), 1);
            assert_eq!(jump(JMP | JSET | src, 6, 0x8000_0001), 2);
        }
        // Both branches away from the next instruction, and `ja`.
        let prog = [
            i(LD | IMM, 0, 0, 3),
            i(JMP | JGT | K, 2, 3, 2),
            i(RET | K, 0, 0, 10),
            i(RET | K, 0, 0, 11),
            i(JMP | JA, 0, 0, 1),
            i(RET | K, 0, 0, 12),
            i(RET | K, 0, 0, 13),
        ];
        assert_eq!(exec(&prog), 13);
        let mut low = prog;
        low[0] = i(LD | IMM, 0, 0, 1);
        assert_eq!(exec(&low), 12);
        low[1] = i(JMP | JGT | K, 2, 1, 2);
        assert_eq!(exec(&low), 11);
    }

    #[test]
    fn returns_keep_all_32_bits() {
        assert_eq!(exec(&[i(RET | K, 0, 0, u32::MAX)]), 0xffff_ffff);
        assert_eq!(exec(&[i(LD | IMM, 0, 0, 0x8000_0000), RET_A]), 0x8000_0000);
        assert_eq!(exec(&[RET_A]), 0);
        assert_eq!(exec(&[i(MISC | TXA, 0, 0, 0), RET_A]), 0);
    }

    #[test]
    fn a_survives_msh_when_read_later() {
        let prog = [i(LD | IMM, 0, 0, 7), i(LDX | B | MSH, 0, 0, 14), i(ALU | ADD | X, 0, 0, 0), RET_A];
        assert_eq!(exec(&prog), 7 + 56);
    }
}
