//! Instruction forms: what each RFC 9669 v4 slot means, and the field rules that make it
//! well-formed. Shared by validation, the disassembler and the back ends' pre-decoders.

use super::Reason;
use crate::bpf::ctx::CtxField;
use crate::bpf::insn::*;

/// Source operand of an ALU or jump instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    Imm,
    Reg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AluOp {
    Add,
    Sub,
    Mul,
    Div,
    SDiv,
    Or,
    And,
    Lsh,
    Rsh,
    Neg,
    Mod,
    SMod,
    Xor,
    Mov,
    /// Sign-extending move from the low 8, 16 or 32 bits.
    MovSx(u8),
    Arsh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndOp {
    /// To little endian (ALU | END | K): truncation on the little-endian ISA.
    Le,
    /// To big endian (ALU | END | X).
    Be,
    /// Unconditional swap (ALU64 | END | K).
    Swap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    Eq,
    Gt,
    Ge,
    Set,
    Ne,
    Sgt,
    Sge,
    Lt,
    Le,
    Slt,
    Sle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomicOp {
    Add,
    Or,
    And,
    Xor,
    FetchAdd,
    FetchOr,
    FetchAnd,
    FetchXor,
    Xchg,
    Cmpxchg,
}

impl AtomicOp {
    /// Whether the old value is written back into `src`.
    pub fn fetches(self) -> bool {
        matches!(self, Self::FetchAdd | Self::FetchOr | Self::FetchAnd | Self::FetchXor | Self::Xchg)
    }
}

/// A slot decoded to what it means. Sizes are in bytes; `wide` = 64-bit operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Alu {
        wide: bool,
        op: AluOp,
        src: Operand,
    },
    End {
        op: EndOp,
        bits: u8,
    },
    /// First slot of `lddw`: a 64-bit constant (source 0) or a map reference (sources
    /// [`PSEUDO_MAP_FD`] and [`PSEUDO_MAP_VALUE`], see [`LddwKind`]); the second slot and the
    /// map index are checked by [`validate`](super::validate).
    Lddw,
    /// LD_ABS (`indirect` false) or LD_IND.
    LdPacket {
        size: u8,
        indirect: bool,
    },
    Ldx {
        size: u8,
        signed: bool,
    },
    /// The rewritten `xdp_md` load (internal).
    LdCtx(CtxField),
    St {
        size: u8,
    },
    Stx {
        size: u8,
    },
    Atomic {
        wide: bool,
        op: AtomicOp,
    },
    /// `ja` with a 16-bit offset.
    Ja,
    /// `ja32` (JMP32 | JA) with the offset in `imm`.
    Ja32,
    Jump {
        wide: bool,
        cond: Cond,
        src: Operand,
    },
    /// Helper call by static id in `imm`.
    Call,
    /// bpf-to-bpf call, target `pc + 1 + imm`.
    CallLocal,
    /// Helper call by BTF id: decoded so it can be refused by name.
    CallKfunc,
    /// Helper call by the id held in `dst`.
    Callx,
    Exit,
}

impl Form {
    /// The register this instruction writes besides r0 (for r10 protection).
    pub(super) fn written_reg(self, insn: &Insn) -> Option<u8> {
        match self {
            Form::Alu { .. } | Form::End { .. } | Form::Lddw | Form::Ldx { .. } | Form::LdCtx(_) => Some(insn.dst),
            Form::Atomic { op, .. } if op.fetches() => Some(insn.src),
            _ => None,
        }
    }
}

/// What an `lddw` loads. Map references follow the object loader's convention: after loading,
/// `imm` is an index into the program's map table (never a file descriptor), and a
/// [`PSEUDO_MAP_VALUE`] load carries the byte offset into that map's value in the second
/// slot's `imm` (global data sections become single-entry array maps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LddwKind {
    /// `rD = imm64 ll`.
    Imm(u64),
    /// `rD = map[index] ll`: a pointer to the map, only useful as a helper argument.
    Map(u32),
    /// `rD = map_value[index] + offset ll`: a pointer into the value of a single-entry map.
    MapValue { map: u32, offset: u32 },
}

/// Classifies the `lddw` at `pc`; `None` if `pc` is not the first slot of one with a second
/// slot present (unknown sources are [`form`]'s business and classify as `None` too).
pub fn lddw_kind(insns: &[Insn], pc: usize) -> Option<LddwKind> {
    let (lo, hi) = (insns.get(pc)?, insns.get(pc + 1)?);
    if !lo.is_lddw() {
        return None;
    }
    match lo.src {
        0 => Some(LddwKind::Imm(lddw_imm(insns, pc))),
        PSEUDO_MAP_FD => Some(LddwKind::Map(lo.imm as u32)),
        PSEUDO_MAP_VALUE => Some(LddwKind::MapValue { map: lo.imm as u32, offset: hi.imm as u32 }),
        _ => None,
    }
}

fn zero(field: &'static str, value: i64) -> Result<(), Reason> {
    if value == 0 { Ok(()) } else { Err(Reason::NonZeroField { field, value }) }
}

/// Decodes one slot to its [`Form`], requiring the fields the form does not use to be zero
/// (as the kernel does). Register ranges, r10 writes, targets and the program kind are checked
/// by [`validate`](super::validate); this is shared with the disassembler and the back ends' pre-decoders.
pub fn form(insn: &Insn) -> Result<Form, Reason> {
    let unknown = Err(Reason::UnknownOpcode(insn.op));
    let (dst, src, off, imm) = (insn.dst as i64, insn.src as i64, insn.off as i64, insn.imm as i64);
    let operand = if insn.source() == SRC_X { Operand::Reg } else { Operand::Imm };
    match insn.class() {
        CLASS_ALU | CLASS_ALU64 => {
            let wide = insn.class() == CLASS_ALU64;
            let code = insn.code();
            let op = match code {
                ALU_END => {
                    if wide && operand == Operand::Reg {
                        return unknown;
                    }
                    zero("off", off)?;
                    zero("src", src)?;
                    let bits = match insn.imm {
                        16 => 16,
                        32 => 32,
                        64 => 64,
                        w => return Err(Reason::BadEndWidth(w)),
                    };
                    let op = match (wide, operand) {
                        (true, _) => EndOp::Swap,
                        (false, Operand::Imm) => EndOp::Le,
                        (false, Operand::Reg) => EndOp::Be,
                    };
                    return Ok(Form::End { op, bits });
                }
                ALU_NEG => {
                    if operand == Operand::Reg {
                        return unknown;
                    }
                    zero("off", off)?;
                    zero("src", src)?;
                    zero("imm", imm)?;
                    return Ok(Form::Alu { wide, op: AluOp::Neg, src: operand });
                }
                ALU_MOV if operand == Operand::Reg => match insn.off {
                    0 => AluOp::Mov,
                    8 | 16 => AluOp::MovSx(insn.off as u8),
                    32 if wide => AluOp::MovSx(32),
                    o => return Err(Reason::BadAluOffset(o)),
                },
                ALU_DIV | ALU_MOD => match (code, insn.off) {
                    (ALU_DIV, 0) => AluOp::Div,
                    (ALU_DIV, 1) => AluOp::SDiv,
                    (ALU_MOD, 0) => AluOp::Mod,
                    (ALU_MOD, 1) => AluOp::SMod,
                    (_, o) => return Err(Reason::BadAluOffset(o)),
                },
                _ => {
                    zero("off", off)?;
                    match code {
                        ALU_ADD => AluOp::Add,
                        ALU_SUB => AluOp::Sub,
                        ALU_MUL => AluOp::Mul,
                        ALU_OR => AluOp::Or,
                        ALU_AND => AluOp::And,
                        ALU_LSH => AluOp::Lsh,
                        ALU_RSH => AluOp::Rsh,
                        ALU_XOR => AluOp::Xor,
                        ALU_MOV => AluOp::Mov,
                        ALU_ARSH => AluOp::Arsh,
                        _ => return unknown,
                    }
                }
            };
            match operand {
                Operand::Imm => zero("src", src)?,
                Operand::Reg => zero("imm", imm)?,
            }
            Ok(Form::Alu { wide, op, src: operand })
        }
        CLASS_JMP | CLASS_JMP32 => {
            let wide = insn.class() == CLASS_JMP;
            let cond = match insn.code() {
                JMP_JA => {
                    if operand == Operand::Reg {
                        return unknown;
                    }
                    zero("dst", dst)?;
                    zero("src", src)?;
                    return if wide {
                        zero("imm", imm)?;
                        Ok(Form::Ja)
                    } else {
                        zero("off", off)?;
                        Ok(Form::Ja32)
                    };
                }
                JMP_CALL if wide => {
                    zero("off", off)?;
                    return if operand == Operand::Reg {
                        zero("src", src)?;
                        zero("imm", imm)?;
                        Ok(Form::Callx)
                    } else {
                        zero("dst", dst)?;
                        match insn.src {
                            CALL_HELPER => Ok(Form::Call),
                            CALL_LOCAL => Ok(Form::CallLocal),
                            CALL_KFUNC => Ok(Form::CallKfunc),
                            s => Err(Reason::BadCallSource(s)),
                        }
                    };
                }
                JMP_EXIT if wide && operand == Operand::Imm => {
                    zero("dst", dst)?;
                    zero("src", src)?;
                    zero("off", off)?;
                    zero("imm", imm)?;
                    return Ok(Form::Exit);
                }
                JMP_JEQ => Cond::Eq,
                JMP_JGT => Cond::Gt,
                JMP_JGE => Cond::Ge,
                JMP_JSET => Cond::Set,
                JMP_JNE => Cond::Ne,
                JMP_JSGT => Cond::Sgt,
                JMP_JSGE => Cond::Sge,
                JMP_JLT => Cond::Lt,
                JMP_JLE => Cond::Le,
                JMP_JSLT => Cond::Slt,
                JMP_JSLE => Cond::Sle,
                _ => return unknown,
            };
            match operand {
                Operand::Imm => zero("src", src)?,
                Operand::Reg => zero("imm", imm)?,
            }
            Ok(Form::Jump { wide, cond, src: operand })
        }
        CLASS_LD => {
            if insn.is_lddw() {
                zero("off", off)?;
                return match insn.src {
                    0 | PSEUDO_MAP_FD | PSEUDO_MAP_VALUE => Ok(Form::Lddw),
                    s => Err(Reason::LddwSource(s)),
                };
            }
            let indirect = match insn.mode() {
                MODE_ABS => false,
                MODE_IND => true,
                _ => return unknown,
            };
            if insn.size() == SIZE_DW {
                return unknown;
            }
            zero("dst", dst)?;
            if !indirect {
                zero("src", src)?;
            }
            zero("off", off)?;
            Ok(Form::LdPacket { size: insn.size_bytes() as u8, indirect })
        }
        CLASS_LDX => match insn.mode() {
            MODE_MEM | MODE_MEMSX => {
                let signed = insn.mode() == MODE_MEMSX;
                if signed && insn.size() == SIZE_DW {
                    return unknown;
                }
                zero("imm", imm)?;
                Ok(Form::Ldx { size: insn.size_bytes() as u8, signed })
            }
            MODE_CTX => {
                if insn.size() != SIZE_DW {
                    return unknown;
                }
                zero("imm", imm)?;
                CtxField::from_index(insn.off).map(Form::LdCtx).ok_or(Reason::InternalCtxMode)
            }
            _ => unknown,
        },
        CLASS_ST => {
            if insn.mode() != MODE_MEM {
                return unknown;
            }
            zero("src", src)?;
            Ok(Form::St { size: insn.size_bytes() as u8 })
        }
        CLASS_STX => match insn.mode() {
            MODE_MEM => {
                zero("imm", imm)?;
                Ok(Form::Stx { size: insn.size_bytes() as u8 })
            }
            MODE_ATOMIC => {
                let wide = match insn.size() {
                    SIZE_W => false,
                    SIZE_DW => true,
                    _ => return unknown,
                };
                let op = match insn.imm {
                    ATOMIC_ADD => AtomicOp::Add,
                    ATOMIC_OR => AtomicOp::Or,
                    ATOMIC_AND => AtomicOp::And,
                    ATOMIC_XOR => AtomicOp::Xor,
                    x if x == ATOMIC_ADD | ATOMIC_FETCH => AtomicOp::FetchAdd,
                    x if x == ATOMIC_OR | ATOMIC_FETCH => AtomicOp::FetchOr,
                    x if x == ATOMIC_AND | ATOMIC_FETCH => AtomicOp::FetchAnd,
                    x if x == ATOMIC_XOR | ATOMIC_FETCH => AtomicOp::FetchXor,
                    ATOMIC_XCHG => AtomicOp::Xchg,
                    ATOMIC_CMPXCHG => AtomicOp::Cmpxchg,
                    x => return Err(Reason::BadAtomic(x)),
                };
                Ok(Form::Atomic { wide, op })
            }
            _ => unknown,
        },
        _ => unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decodes_every_v4_shape() {
        use Form::*;
        let cases = [
            (0x07, Alu { wide: true, op: AluOp::Add, src: Operand::Imm }),
            (0x3c, Alu { wide: false, op: AluOp::Div, src: Operand::Reg }),
            (0xdc, End { op: EndOp::Be, bits: 16 }),
            (0xd4, End { op: EndOp::Le, bits: 16 }),
            (0xd7, End { op: EndOp::Swap, bits: 16 }),
            (0x18, Lddw),
            (0x28, LdPacket { size: 2, indirect: false }),
            (0x50, LdPacket { size: 1, indirect: true }),
            (0x79, Ldx { size: 8, signed: false }),
            (0x89, Ldx { size: 2, signed: true }),
            (0x7a, St { size: 8 }),
            (0x73, Stx { size: 1 }),
            (0x05, Ja),
            (0x06, Ja32),
            (0x5e, Jump { wide: false, cond: Cond::Ne, src: Operand::Reg }),
            (0xdd, Jump { wide: true, cond: Cond::Sle, src: Operand::Reg }),
            (0x85, Call),
            (0x8d, Callx),
            (0x95, Exit),
        ];
        for (op, f) in cases {
            let imm = if matches!(f, End { .. }) { 16 } else { 0 };
            assert_eq!(form(&Insn::new(op, 0, 0, 0, imm)), Ok(f), "{op:#x}");
        }
        let sdiv = Insn::new(CLASS_ALU64 | ALU_DIV | SRC_X, 1, 2, 1, 0);
        assert_eq!(form(&sdiv), Ok(Alu { wide: true, op: AluOp::SDiv, src: Operand::Reg }));
        let movsx = Insn::new(CLASS_ALU | ALU_MOV | SRC_X, 1, 2, 16, 0);
        assert_eq!(form(&movsx), Ok(Alu { wide: false, op: AluOp::MovSx(16), src: Operand::Reg }));
        let cmpxchg = Insn::new(CLASS_STX | MODE_ATOMIC | SIZE_W, 1, 2, 0, ATOMIC_CMPXCHG);
        assert_eq!(form(&cmpxchg), Ok(Atomic { wide: false, op: AtomicOp::Cmpxchg }));
    }
}
