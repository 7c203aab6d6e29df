//! Validation with the rules of the Linux kernel's `bpf_check_classic` and
//! `check_load_and_stores` (net/core/filter.c), so a program sluice accepts is one
//! `SO_ATTACH_FILTER` would accept, minus the Linux-only extensions, which sluice cannot honour.
//!
//! Checks, in the kernel's order: length 1..=4096; per instruction, an allowed opcode and its
//! operand rules (no division or modulo by constant zero, constant shifts below 32, scratch
//! indices below 16, jump targets inside the program, no ancillary loads); the last instruction
//! is a return; no scratch word is read before it is written on some path.

use super::op::*;
use super::{
    ClassicError, ClassicInsn, MAX_INSNS, MEM_WORDS, Reject, SKF_AD_OFF, SKF_LL_OFF, SKF_NET_OFF, extension_name,
    insn_text,
};

/// The opcodes the kernel's `chk_code_allowed` lists; every other value is refused.
pub(super) fn is_allowed(code: u16) -> bool {
    const ALU_OPS: [u16; 10] = [ADD, SUB, MUL, DIV, MOD, AND, OR, XOR, LSH, RSH];
    const JMP_OPS: [u16; 4] = [JEQ, JGE, JGT, JSET];
    let alu = ALU_OPS.iter().any(|&o| code == ALU | o | K || code == ALU | o | X);
    let jmp = JMP_OPS.iter().any(|&o| code == JMP | o | K || code == JMP | o | X);
    alu || jmp
        || [
            ALU | NEG,
            LD | W | ABS,
            LD | H | ABS,
            LD | B | ABS,
            LD | W | LEN,
            LD | W | IND,
            LD | H | IND,
            LD | B | IND,
            LD | IMM,
            LD | MEM,
            LDX | W | LEN,
            LDX | B | MSH,
            LDX | IMM,
            LDX | MEM,
            ST,
            STX,
            MISC | TAX,
            MISC | TXA,
            RET | K,
            RET | A,
            JMP | JA,
        ]
        .contains(&code)
}

fn is_cond_jump(code: u16) -> bool {
    code & 0x07 == JMP && code != JMP | JA
}

fn invalid(insns: &[ClassicInsn], index: usize, reason: Reject) -> ClassicError {
    ClassicError::Invalid { index, text: insn_text(&insns[index], index), reason }
}

/// Accepts exactly the programs the kernel's classic checker accepts, except that loads of Linux
/// socket metadata (`SKF_AD_OFF` and the `SKF_NET_OFF`/`SKF_LL_OFF` windows) are refused.
pub fn validate(insns: &[ClassicInsn]) -> Result<(), ClassicError> {
    let len = insns.len();
    if len == 0 || len > MAX_INSNS {
        return Err(ClassicError::Length(len));
    }
    let last = len - 1;
    for (pc, insn) in insns.iter().enumerate() {
        let code = insn.code;
        let k = insn.k;
        if !is_allowed(code) {
            return Err(invalid(insns, pc, Reject::UnknownOpcode(code)));
        }
        let reason = match code {
            c if c == ALU | DIV | K && k == 0 => Some(Reject::DivByZero),
            c if c == ALU | MOD | K && k == 0 => Some(Reject::ModByZero),
            c if (c == ALU | LSH | K || c == ALU | RSH | K) && k >= 32 => Some(Reject::ShiftTooLarge(k)),
            c if (c == LD | MEM || c == LDX | MEM || c == ST || c == STX) && k >= MEM_WORDS => {
                Some(Reject::MemIndex(k))
            }
            c if c == JMP | JA => {
                // The kernel's test is `k >= flen - pc - 1`; a k with the top bit set is what a
                // "backward" jump looks like once someone treats it as signed.
                if k >= 0x8000_0000 {
                    Some(Reject::JumpBackward { k, target: pc as i64 + 1 + i64::from(k as i32) })
                } else if k as u64 >= (len - pc - 1) as u64 {
                    Some(Reject::JumpOutOfRange { target: pc as u64 + 1 + k as u64, last })
                } else {
                    None
                }
            }
            c if is_cond_jump(c) => {
                let far = insn.jt.max(insn.jf) as usize;
                (pc + far + 1 >= len).then_some(Reject::JumpOutOfRange { target: (pc + far + 1) as u64, last })
            }
            c if c == LD | W | ABS || c == LD | H | ABS || c == LD | B | ABS => absolute_load(k),
            _ => None,
        };
        if let Some(reason) = reason {
            return Err(invalid(insns, pc, reason));
        }
    }
    if !matches!(insns[last].code, c if c == RET | K || c == RET | A) {
        return Err(invalid(insns, last, Reject::NoFinalReturn));
    }
    check_load_and_stores(insns)
}

/// Offsets in Linux's special windows mean socket metadata or header-relative addressing, which
/// a frame-only filter cannot provide: refuse them by name instead of silently returning 0.
fn absolute_load(k: u32) -> Option<Reject> {
    if k >= SKF_AD_OFF {
        let offset = k - SKF_AD_OFF;
        return Some(match extension_name(k) {
            Some(name) => Reject::Extension { name, offset },
            None => Reject::UnknownExtension(offset),
        });
    }
    if k >= SKF_NET_OFF {
        return Some(Reject::RelativeLoad { window: "SKF_NET_OFF", offset: k - SKF_NET_OFF });
    }
    if k >= SKF_LL_OFF {
        return Some(Reject::RelativeLoad { window: "SKF_LL_OFF", offset: k - SKF_LL_OFF });
    }
    None
}

/// The kernel's scratch-memory check, step for step: one pass in instruction order, `valid`
/// holding the words written on the path being followed; a jump intersects its targets' masks
/// with `valid` and resets `valid` to all-ones, so an instruction reached only by jumps gets the
/// intersection of what its predecessors wrote. Like the kernel, a `ret` does not reset `valid`,
/// so the instruction after a return also intersects with the return's state (stricter than
/// necessary, but it is the acceptance set of `SO_ATTACH_FILTER`).
fn check_load_and_stores(insns: &[ClassicInsn]) -> Result<(), ClassicError> {
    let len = insns.len();
    let mut masks = vec![u16::MAX; len];
    let mut valid: u16 = 0;
    for (pc, insn) in insns.iter().enumerate() {
        valid &= masks[pc];
        // Indices, opcodes and targets were checked above, so the shifts and indexing hold.
        match insn.code {
            c if c == ST || c == STX => valid |= 1 << insn.k,
            c if (c == LD | MEM || c == LDX | MEM) && valid & (1 << insn.k) == 0 => {
                return Err(invalid(insns, pc, Reject::UninitializedMemory(insn.k)));
            }
            c if c == JMP | JA => {
                masks[pc + 1 + insn.k as usize] &= valid;
                valid = u16::MAX;
            }
            c if is_cond_jump(c) => {
                masks[pc + 1 + insn.jt as usize] &= valid;
                masks[pc + 1 + insn.jf as usize] &= valid;
                valid = u16::MAX;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(code: u16, jt: u8, jf: u8, k: u32) -> ClassicInsn {
        ClassicInsn::new(code, jt, jf, k)
    }

    fn ret0() -> ClassicInsn {
        i(RET | K, 0, 0, 0)
    }

    /// The rejection of `prog`, as (index, reason).
    fn rejected(prog: &[ClassicInsn]) -> (usize, Reject) {
        match validate(prog) {
            Err(ClassicError::Invalid { index, reason, .. }) => (index, reason),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn accepts_every_allowed_opcode() {
        assert_eq!(validate(&crate::bpf::classic::tests::every_opcode()), Ok(()));
        // The kernel's table: 20 ALU + NEG, 9 LD, 4 LDX, ST, STX, 2 MISC, 2 RET, JA + 8 jumps.
        assert_eq!((0..=0xffffu16).filter(|&c| is_allowed(c)).count(), 21 + 9 + 4 + 2 + 2 + 2 + 9);
    }

    #[test]
    fn refuses_unknown_opcodes() {
        for code in [0x08, 0x0e, 0x8c, 0x0d, 0x55, 0x87 | 0x100, 0xff, 0x41, 0xc4, 0xd4] {
            assert_eq!(rejected(&[i(code, 0, 0, 0), ret0()]), (0, Reject::UnknownOpcode(code)), "{code:#x}");
        }
    }

    #[test]
    fn refuses_bad_lengths() {
        assert_eq!(validate(&[]), Err(ClassicError::Length(0)));
        assert_eq!(validate(&vec![ret0(); 4097]), Err(ClassicError::Length(4097)));
        assert_eq!(validate(&vec![ret0(); 4096]), Ok(()));
    }

    #[test]
    fn refuses_constant_division_by_zero_and_wide_shifts() {
        assert_eq!(rejected(&[i(ALU | DIV | K, 0, 0, 0), ret0()]), (0, Reject::DivByZero));
        assert_eq!(rejected(&[i(ALU | MOD | K, 0, 0, 0), ret0()]), (0, Reject::ModByZero));
        assert_eq!(rejected(&[i(ALU | LSH | K, 0, 0, 32), ret0()]), (0, Reject::ShiftTooLarge(32)));
        assert_eq!(rejected(&[i(ALU | RSH | K, 0, 0, 99), ret0()]), (0, Reject::ShiftTooLarge(99)));
        // Division by X is checked at run time, not here.
        assert_eq!(validate(&[i(ALU | DIV | X, 0, 0, 0), ret0()]), Ok(()));
        assert_eq!(validate(&[i(ALU | LSH | K, 0, 0, 31), ret0()]), Ok(()));
    }

    #[test]
    fn refuses_scratch_indices_past_15() {
        for code in [LD | MEM, LDX | MEM, ST, STX] {
            assert_eq!(rejected(&[i(code, 0, 0, 16), ret0()]), (0, Reject::MemIndex(16)));
        }
    }

    #[test]
    fn refuses_jumps_out_of_range_or_backward() {
        assert_eq!(rejected(&[i(JMP | JA, 0, 0, 1), ret0()]), (0, Reject::JumpOutOfRange { target: 2, last: 1 }));
        assert_eq!(
            rejected(&[ret0(), i(JMP | JA, 0, 0, u32::MAX - 1), ret0()]),
            (1, Reject::JumpBackward { k: u32::MAX - 1, target: 0 })
        );
        assert_eq!(
            rejected(&[i(JMP | JEQ | K, 0, 2, 1), ret0(), ret0()]),
            (0, Reject::JumpOutOfRange { target: 3, last: 2 })
        );
        assert_eq!(
            rejected(&[ret0(), i(JMP | JSET | X, 1, 0, 1), ret0()]),
            (1, Reject::JumpOutOfRange { target: 3, last: 2 })
        );
        assert_eq!(validate(&[i(JMP | JGT | K, 1, 0, 1), ret0(), ret0()]), Ok(()));
        assert_eq!(validate(&[i(JMP | JA, 0, 0, 1), ret0(), ret0()]), Ok(()));
    }

    #[test]
    fn refuses_linux_extensions_by_name() {
        assert_eq!(
            rejected(&[i(LD | W | ABS, 0, 0, SKF_AD_OFF + 8), ret0()]),
            (0, Reject::Extension { name: "ifidx", offset: 8 })
        );
        assert_eq!(
            rejected(&[i(LD | B | ABS, 0, 0, SKF_AD_OFF + 48), ret0()]),
            (0, Reject::Extension { name: "vlanp", offset: 48 })
        );
        assert_eq!(rejected(&[i(LD | H | ABS, 0, 0, SKF_AD_OFF + 64), ret0()]), (0, Reject::UnknownExtension(64)));
        assert_eq!(
            rejected(&[i(LD | H | ABS, 0, 0, SKF_NET_OFF + 9), ret0()]),
            (0, Reject::RelativeLoad { window: "SKF_NET_OFF", offset: 9 })
        );
        assert_eq!(
            rejected(&[i(LD | B | ABS, 0, 0, SKF_LL_OFF), ret0()]),
            (0, Reject::RelativeLoad { window: "SKF_LL_OFF", offset: 0 })
        );
        // Just below the windows is an ordinary (always out-of-range) load.
        assert_eq!(validate(&[i(LD | W | ABS, 0, 0, SKF_LL_OFF - 1), ret0()]), Ok(()));
    }

    #[test]
    fn refuses_a_program_not_ending_in_return() {
        assert_eq!(rejected(&[ret0(), i(LD | IMM, 0, 0, 0)]), (1, Reject::NoFinalReturn));
        assert_eq!(rejected(&[i(JMP | JA, 0, 0, 0), i(MISC | TAX, 0, 0, 0)]), (1, Reject::NoFinalReturn));
    }

    #[test]
    fn refuses_reads_of_unwritten_scratch_memory() {
        assert_eq!(rejected(&[i(LD | MEM, 0, 0, 3), ret0()]), (0, Reject::UninitializedMemory(3)));
        assert_eq!(rejected(&[i(ST, 0, 0, 1), i(LDX | MEM, 0, 0, 2), ret0()]), (1, Reject::UninitializedMemory(2)));
        // Written on one branch only.
        let one_branch = [i(JMP | JEQ | K, 0, 1, 7), i(ST, 0, 0, 0), i(LD | MEM, 0, 0, 0), i(RET | A, 0, 0, 0)];
        assert_eq!(rejected(&one_branch), (2, Reject::UninitializedMemory(0)));
        // Written on both branches.
        let both = [
            i(JMP | JEQ | K, 0, 2, 7),
            i(ST, 0, 0, 0),
            i(JMP | JA, 0, 0, 1),
            i(STX, 0, 0, 0),
            i(LD | MEM, 0, 0, 0),
            i(RET | A, 0, 0, 0),
        ];
        assert_eq!(validate(&both), Ok(()));
    }

    #[test]
    fn scratch_check_keeps_the_kernels_return_fallthrough() {
        // Instruction 4 is reached only from 2, where M[0] is written, but the kernel also
        // intersects with the state falling out of the `ret` at 3 (reached from 0 without the
        // write). The kernel refuses this program, so sluice does too.
        let prog = [
            i(JMP | JEQ | K, 0, 2, 1),
            i(ST, 0, 0, 0),
            i(JMP | JEQ | K, 1, 1, 2),
            ret0(),
            i(LD | MEM, 0, 0, 0),
            i(RET | A, 0, 0, 0),
        ];
        assert_eq!(rejected(&prog), (4, Reject::UninitializedMemory(0)));
    }

    #[test]
    fn errors_carry_index_disassembly_and_reason() {
        let err = validate(&[i(LD | H | ABS, 0, 0, 12), i(JMP | JEQ | K, 2, 5, 0x800), ret0()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "instruction 1 (jeq #0x800 jt 4 jf 7): jump target 7 is past the last instruction (2)"
        );
        let err = validate(&[i(LD | W | ABS, 0, 0, SKF_AD_OFF + 8), ret0()]).unwrap_err();
        assert!(err.to_string().starts_with("instruction 0 (ld [ifidx]): linux extension `ifidx`"), "{err}");
    }
}
