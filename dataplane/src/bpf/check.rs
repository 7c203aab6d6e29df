//! Structural validation: the only way to turn a `Vec<Insn>` into a [`Program`].
//!
//! This is not the verifier (that is a later issue). It checks what every back end relies on
//! without tracking values: every slot decodes to a known RFC 9669 v4 form ([`form`]) with the
//! fields that form does not use set to zero, registers exist and r10 is never written, jump and
//! call targets land on instructions of the program (never on the second slot of an `lddw`,
//! never outside the jumping function), no function falls off its end, and helper ids exist.
//! Memory safety is the back ends' job: they bounds-check every access at run time.
//!
//! [`ProgKind::Xdp`] adds what makes a packet filter terminate and see its context: no
//! back-edges, no recursion, bounded call depth, and the `xdp_md` rewrite. A forward dataflow
//! over the (acyclic) program tracks which registers and 8-byte stack slots hold the context
//! pointer; a 32-bit load of an `xdp_md` field through it becomes a `MODE_CTX` load of the real
//! 64-bit field, and every other use of the context pointer is refused.
//!
//! The tracking follows direct `r10`-relative spills only; a store that reaches a spill slot
//! through another pointer is not seen. That cannot make a program unsafe because a `MODE_CTX`
//! instruction reads the run's own context: back ends must never dereference its `src`
//! register (they keep the context pointer themselves).

use std::collections::HashMap;

use super::ctx::CtxField;
use super::insn::*;
use super::{disasm, Helpers, ProgKind, Program, MAX_CALL_DEPTH};

/// Most slots a program may have (the kernel's `BPF_COMPLEXITY_LIMIT_INSNS`).
pub const MAX_INSNS: usize = 1_000_000;

/// Why a program was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("program is empty")]
    Empty,
    #[error("program has {len} instructions, more than the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("instruction {index} ({text}): {reason}")]
    Insn { index: usize, text: String, reason: Reason },
}

impl CheckError {
    fn at(insns: &[Insn], index: usize, reason: Reason) -> Self {
        CheckError::Insn { index, text: disasm::insn(insns, index), reason }
    }

    /// The reason of an instruction-level error.
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            CheckError::Insn { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// The index of the offending instruction, if the error is about one.
    pub fn index(&self) -> Option<usize> {
        match self {
            CheckError::Insn { index, .. } => Some(*index),
            _ => None,
        }
    }
}

/// What is wrong with one instruction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    #[error("ctx-field loads (mode 0xa0) are internal to sluice and not valid input")]
    InternalCtxMode,
    #[error("{field} field must be 0 for this opcode, is {value}")]
    NonZeroField { field: &'static str, value: i64 },
    #[error("offset {0} is not valid for this opcode")]
    BadAluOffset(i16),
    #[error("byte swap width must be 16, 32 or 64, not {0}")]
    BadEndWidth(i32),
    #[error("unknown atomic operation {0:#x}")]
    BadAtomic(i32),
    #[error("unknown call source {0}")]
    BadCallSource(u8),
    #[error("{field} register r{reg} does not exist (r0..r10)")]
    BadRegister { field: &'static str, reg: u8 },
    #[error("writes r10, the read-only frame pointer")]
    WritesFramePointer,
    #[error("lddw is missing its second slot")]
    LddwTruncated,
    #[error("second slot of lddw must be zero apart from imm")]
    LddwSecondSlot,
    #[error("lddw source {0}: map references need an object loader")]
    MapReference(u8),
    #[error("lddw source {0} is not supported")]
    LddwSource(u8),
    #[error("legacy packet loads (ld_abs/ld_ind) are only valid in xdp programs")]
    PacketLoadNeedsXdp,
    #[error("kfunc calls (btf id {0}) are not supported")]
    Kfunc(i32),
    #[error("unknown helper id {0}")]
    UnknownHelper(i32),
    #[error("{what} target {target} is outside the program ({len} instructions)")]
    TargetOutside { what: &'static str, target: i64, len: usize },
    #[error("{what} target {target} is the second slot of an lddw")]
    TargetInLddw { what: &'static str, target: usize },
    #[error("jump target {target} is outside its function (instructions {start}..{end})")]
    JumpLeavesFunction { target: usize, start: usize, end: usize },
    #[error("falls through the end of the program")]
    FallsOffEnd,
    #[error("falls through into the function at {0}")]
    FallsIntoFunction(usize),
    #[error("back-edge from {from} to {to}: loops are not allowed in filters")]
    BackEdge { from: usize, to: usize },
    #[error("call into the function at {0} closes a cycle: recursion is not allowed in filters")]
    Recursion(usize),
    #[error("call chain reaches {0} frames, more than the limit of {max}", max = MAX_CALL_DEPTH)]
    CallTooDeep(usize),
    #[error("invalid ctx access: {0}")]
    CtxAccess(String),
}

// ---------------------------------------------------------------------------------------------
// Instruction forms
// ---------------------------------------------------------------------------------------------

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
    Alu { wide: bool, op: AluOp, src: Operand },
    End { op: EndOp, bits: u8 },
    /// First slot of `lddw` (source 0); the second slot is checked by [`validate`].
    Lddw,
    /// LD_ABS (`indirect` false) or LD_IND.
    LdPacket { size: u8, indirect: bool },
    Ldx { size: u8, signed: bool },
    /// The rewritten `xdp_md` load (internal).
    LdCtx(CtxField),
    St { size: u8 },
    Stx { size: u8 },
    Atomic { wide: bool, op: AtomicOp },
    /// `ja` with a 16-bit offset.
    Ja,
    /// `ja32` (JMP32 | JA) with the offset in `imm`.
    Ja32,
    Jump { wide: bool, cond: Cond, src: Operand },
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
    fn written_reg(self, insn: &Insn) -> Option<u8> {
        match self {
            Form::Alu { .. } | Form::End { .. } | Form::Lddw | Form::Ldx { .. } | Form::LdCtx(_) => Some(insn.dst),
            Form::Atomic { op, .. } if op.fetches() => Some(insn.src),
            _ => None,
        }
    }
}

fn zero(field: &'static str, value: i64) -> Result<(), Reason> {
    if value == 0 { Ok(()) } else { Err(Reason::NonZeroField { field, value }) }
}

/// Decodes one slot to its [`Form`], requiring the fields the form does not use to be zero
/// (as the kernel does). Register ranges, r10 writes, targets and the program kind are checked
/// by [`validate`]; this is shared with the disassembler and the back ends' pre-decoders.
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
                    0 => Ok(Form::Lddw),
                    s @ (PSEUDO_MAP_FD | PSEUDO_MAP_VALUE | 5 | 6) => Err(Reason::MapReference(s)),
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

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// Validates `insns` for `kind` against the helper table and builds the [`Program`] back ends
/// run. For [`ProgKind::Xdp`] the returned instructions carry the `xdp_md` rewrite.
pub fn validate(insns: Vec<Insn>, kind: ProgKind, helpers: &Helpers) -> Result<Program, CheckError> {
    if insns.is_empty() {
        return Err(CheckError::Empty);
    }
    if insns.len() > MAX_INSNS {
        return Err(CheckError::TooLong { len: insns.len(), max: MAX_INSNS });
    }
    let second = check_slots(&insns, kind, helpers)?;
    let funcs = Functions::find(&insns, &second)?;
    check_jumps(&insns, kind, &second, &funcs)?;
    check_ends(&insns, &second, &funcs)?;
    let mut insns = insns;
    if kind == ProgKind::Xdp {
        let graph = CallGraph::build(&insns, &funcs)?;
        let rewrites = CtxFlow::run(&insns, &funcs, &graph)?;
        for (pc, field) in rewrites {
            let i = insns[pc];
            insns[pc] = Insn::new(CLASS_LDX | MODE_CTX | SIZE_DW, i.dst, i.src, field as i16, 0);
        }
    }
    Ok(Program { insns, kind, helpers: helpers.clone() })
}

/// Per-slot checks. Returns which slots are the second half of an `lddw`.
fn check_slots(insns: &[Insn], kind: ProgKind, helpers: &Helpers) -> Result<Vec<bool>, CheckError> {
    let mut second = vec![false; insns.len()];
    let mut pc = 0;
    while pc < insns.len() {
        let insn = insns[pc];
        let err = |reason| CheckError::at(insns, pc, reason);
        if insn.class() == CLASS_LDX && insn.mode() == MODE_CTX {
            return Err(err(Reason::InternalCtxMode));
        }
        let f = form(&insn).map_err(err)?;
        for (field, reg) in [("dst", insn.dst), ("src", insn.src)] {
            if reg >= NUM_REGS {
                return Err(err(Reason::BadRegister { field, reg }));
            }
        }
        if f.written_reg(&insn) == Some(REG_FP) {
            return Err(err(Reason::WritesFramePointer));
        }
        match f {
            Form::LdPacket { .. } if kind != ProgKind::Xdp => return Err(err(Reason::PacketLoadNeedsXdp)),
            Form::CallKfunc => return Err(err(Reason::Kfunc(insn.imm))),
            Form::Call => {
                let known = u64::try_from(insn.imm).ok().and_then(|id| helpers.get(id)).is_some();
                if !known {
                    return Err(err(Reason::UnknownHelper(insn.imm)));
                }
            }
            Form::Lddw => {
                let Some(hi) = insns.get(pc + 1) else {
                    return Err(err(Reason::LddwTruncated));
                };
                if hi.op != 0 || hi.dst != 0 || hi.src != 0 || hi.off != 0 {
                    return Err(err(Reason::LddwSecondSlot));
                }
                second[pc + 1] = true;
                pc += 1;
            }
            _ => {}
        }
        pc += 1;
    }
    Ok(second)
}

/// Absolute target of a jump or local call at `pc`, checked to be a real instruction.
fn target(insns: &[Insn], second: &[bool], pc: usize, rel: i64, what: &'static str) -> Result<usize, CheckError> {
    let t = pc as i64 + 1 + rel;
    let Some(t) = usize::try_from(t).ok().filter(|&t| t < insns.len()) else {
        return Err(CheckError::at(insns, pc, Reason::TargetOutside { what, target: t, len: insns.len() }));
    };
    if second[t] {
        return Err(CheckError::at(insns, pc, Reason::TargetInLddw { what, target: t }));
    }
    Ok(t)
}

/// Instructions that are not the second slot of an `lddw`, with their forms.
fn each_insn<'a>(insns: &'a [Insn], second: &'a [bool]) -> impl Iterator<Item = (usize, Insn, Form)> + 'a {
    insns.iter().enumerate().filter(|(pc, _)| !second[*pc]).filter_map(|(pc, i)| form(i).ok().map(|f| (pc, *i, f)))
}

/// Local functions: function 0 starts at slot 0, every local-call target starts one, and each
/// runs until the next one starts.
struct Functions {
    starts: Vec<usize>,
    len: usize,
}

impl Functions {
    fn find(insns: &[Insn], second: &[bool]) -> Result<Self, CheckError> {
        let mut starts = vec![0];
        for (pc, insn, f) in each_insn(insns, second) {
            if f == Form::CallLocal {
                starts.push(target(insns, second, pc, insn.imm as i64, "call")?);
            }
        }
        starts.sort_unstable();
        starts.dedup();
        Ok(Functions { starts, len: insns.len() })
    }

    /// Index of the function containing `pc`.
    fn of(&self, pc: usize) -> usize {
        self.starts.partition_point(|&s| s <= pc) - 1
    }

    fn range(&self, f: usize) -> (usize, usize) {
        (self.starts[f], self.starts.get(f + 1).copied().unwrap_or(self.len))
    }

    fn count(&self) -> usize {
        self.starts.len()
    }
}

fn check_jumps(insns: &[Insn], kind: ProgKind, second: &[bool], funcs: &Functions) -> Result<(), CheckError> {
    for (pc, insn, f) in each_insn(insns, second) {
        if !matches!(f, Form::Ja | Form::Ja32 | Form::Jump { .. }) {
            continue;
        }
        let t = target(insns, second, pc, insn.jump_offset(), "jump")?;
        let (start, end) = funcs.range(funcs.of(pc));
        if t < start || t >= end {
            return Err(CheckError::at(insns, pc, Reason::JumpLeavesFunction { target: t, start, end }));
        }
        if kind == ProgKind::Xdp && t <= pc {
            return Err(CheckError::at(insns, pc, Reason::BackEdge { from: pc, to: t }));
        }
    }
    Ok(())
}

/// Every function must end in `exit` or an unconditional jump.
fn check_ends(insns: &[Insn], second: &[bool], funcs: &Functions) -> Result<(), CheckError> {
    for f in 0..funcs.count() {
        let (_, end) = funcs.range(f);
        let last = if second[end - 1] { end - 2 } else { end - 1 };
        let ok = matches!(form(&insns[last]), Ok(Form::Exit | Form::Ja | Form::Ja32)) && last == end - 1;
        if !ok {
            let reason = if end == insns.len() { Reason::FallsOffEnd } else { Reason::FallsIntoFunction(end) };
            return Err(CheckError::at(insns, last, reason));
        }
    }
    Ok(())
}

/// Local calls between functions, for the recursion and depth checks and the ctx dataflow.
struct CallGraph {
    /// Functions reachable from the entry, callers before callees.
    order: Vec<usize>,
}

impl CallGraph {
    /// Builds the graph and refuses recursion and call chains deeper than [`MAX_CALL_DEPTH`].
    fn build(insns: &[Insn], funcs: &Functions) -> Result<Self, CheckError> {
        let mut calls = vec![Vec::new(); funcs.count()];
        for (pc, insn) in insns.iter().enumerate() {
            // Second lddw slots have opcode 0, so they never look like calls.
            if form(insn) == Ok(Form::CallLocal) {
                let callee = funcs.of((pc as i64 + 1 + insn.imm as i64) as usize);
                calls[funcs.of(pc)].push((pc, callee));
            }
        }
        // Iterative depth-first search: programs can have many functions and a deep call
        // graph must not overflow the native stack.
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let mut mark = vec![Mark::New; funcs.count()];
        let mut post = Vec::new();
        let mut stack = vec![(0usize, 0usize)];
        mark[0] = Mark::Open;
        while let Some(&mut (f, ref mut next)) = stack.last_mut() {
            if let Some(&(pc, g)) = calls[f].get(*next) {
                *next += 1;
                match mark[g] {
                    Mark::Open => return Err(CheckError::at(insns, pc, Reason::Recursion(funcs.starts[g]))),
                    Mark::New => {
                        mark[g] = Mark::Open;
                        stack.push((g, 0));
                    }
                    Mark::Done => {}
                }
            } else {
                mark[f] = Mark::Done;
                post.push(f);
                stack.pop();
            }
        }
        // Frames needed from each function down (itself included), callees first.
        let mut height = vec![1usize; funcs.count()];
        for &f in &post {
            height[f] = 1 + calls[f].iter().map(|&(_, g)| height[g]).max().unwrap_or(0);
        }
        if height[0] > MAX_CALL_DEPTH {
            // Follow a deepest chain to the call that opens one frame too many.
            let (mut f, mut depth) = (0, 1);
            while let Some(&(pc, g)) = calls[f].iter().find(|&&(_, g)| depth + height[g] > MAX_CALL_DEPTH) {
                if depth + 1 > MAX_CALL_DEPTH {
                    return Err(CheckError::at(insns, pc, Reason::CallTooDeep(depth + height[g])));
                }
                f = g;
                depth += 1;
            }
        }
        post.reverse();
        Ok(CallGraph { order: post })
    }
}

// ---------------------------------------------------------------------------------------------
// Context-pointer dataflow (Xdp)
// ---------------------------------------------------------------------------------------------

/// Whether a register or stack slot holds the context pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cx {
    /// Not reached yet.
    Unset,
    No,
    Yes,
    /// The context pointer on some paths only.
    Some,
}

impl Cx {
    fn join(self, o: Cx) -> Cx {
        match (self, o) {
            (Cx::Unset, x) | (x, Cx::Unset) => x,
            (a, b) if a == b => a,
            _ => Cx::Some,
        }
    }

    fn is_ctx(self) -> bool {
        matches!(self, Cx::Yes | Cx::Some)
    }
}

const SLOTS: usize = STACK_SIZE / 8;

#[derive(Clone, PartialEq, Eq)]
struct State {
    regs: [Cx; NUM_REGS as usize],
    /// 8-byte slots of the current frame, slot i at `r10 - 512 + 8 * i`.
    slots: [Cx; SLOTS],
}

impl State {
    fn entry(ctx_in_r1: bool) -> Self {
        let mut s = State { regs: [Cx::No; NUM_REGS as usize], slots: [Cx::No; SLOTS] };
        if ctx_in_r1 {
            s.regs[1] = Cx::Yes;
        }
        s
    }

    fn join(&mut self, o: &State) -> bool {
        let before = self.clone();
        for (a, b) in self.regs.iter_mut().zip(o.regs) {
            *a = a.join(b);
        }
        for (a, b) in self.slots.iter_mut().zip(o.slots) {
            *a = a.join(b);
        }
        *self != before
    }

    fn reg(&self, r: u8) -> Cx {
        self.regs.get(r as usize).copied().unwrap_or(Cx::No)
    }

    fn set(&mut self, r: u8, v: Cx) {
        if let Some(x) = self.regs.get_mut(r as usize) {
            *x = v;
        }
    }

    /// Forgets any slot a store of `size` bytes at `r10 + off` overlaps.
    fn clobber(&mut self, off: i16, size: u8) {
        let lo = off as i64 + STACK_SIZE as i64;
        let hi = lo + size as i64;
        for (i, s) in self.slots.iter_mut().enumerate() {
            let (a, b) = (8 * i as i64, 8 * i as i64 + 8);
            if lo < b && a < hi {
                *s = Cx::No;
            }
        }
    }
}

/// The slot an aligned 8-byte access at `r10 + off` hits, if it is inside the frame.
fn slot(off: i16) -> Option<usize> {
    let o = off as i64 + STACK_SIZE as i64;
    (o >= 0 && o % 8 == 0 && o < STACK_SIZE as i64).then_some(o as usize / 8)
}

struct CtxFlow<'a> {
    insns: &'a [Insn],
    funcs: &'a Functions,
    /// Entry state of every function (None: not reached).
    entry: Vec<Option<State>>,
    /// What each function returns in r0.
    ret: Vec<Cx>,
}

impl<'a> CtxFlow<'a> {
    /// Iterates to a fixpoint (monotone joins over a finite lattice), then makes one checking
    /// pass with the final states. Returns the loads to rewrite.
    fn run(insns: &'a [Insn], funcs: &'a Functions, graph: &'a CallGraph) -> Result<Vec<(usize, CtxField)>, CheckError> {
        let n = funcs.count();
        let mut flow = CtxFlow { insns, funcs, entry: vec![None; n], ret: vec![Cx::Unset; n] };
        flow.entry[0] = Some(State::entry(true));
        loop {
            let before = (flow.entry.clone(), flow.ret.clone());
            for &f in &graph.order {
                flow.function(f, None)?;
            }
            if (flow.entry.clone(), flow.ret.clone()) == before {
                break;
            }
        }
        let mut rewrites = Vec::new();
        for &f in &graph.order {
            flow.function(f, Some(&mut rewrites))?;
        }
        Ok(rewrites)
    }

    /// One pass over function `f` in slot order, which is a topological order because filters
    /// have no back-edges. With `out`, uses of the context pointer are checked and rewrites
    /// collected.
    fn function(&mut self, f: usize, mut out: Option<&mut Vec<(usize, CtxField)>>) -> Result<(), CheckError> {
        let Some(entry) = self.entry[f].clone() else { return Ok(()) };
        let (start, end) = self.funcs.range(f);
        let mut pending: HashMap<usize, State> = HashMap::new();
        let mut cur = Some(entry);
        let mut pc = start;
        while pc < end {
            if let Some(p) = pending.remove(&pc) {
                match &mut cur {
                    Some(c) => {
                        c.join(&p);
                    }
                    None => cur = Some(p),
                }
            }
            let insn = self.insns[pc];
            let Ok(form) = form(&insn) else {
                pc += 1;
                continue;
            };
            let next = if form == Form::Lddw { pc + 2 } else { pc + 1 };
            if let Some(mut st) = cur.take() {
                let checking = out.is_some();
                let fail = |msg: String| {
                    if checking { Err(CheckError::at(self.insns, pc, Reason::CtxAccess(msg))) } else { Ok(()) }
                };
                let mut jump_to = None;
                let mut falls = true;
                match self.step(&mut st, f, pc, insn, form) {
                    Ok(Some(field)) => {
                        if let Some(o) = out.as_deref_mut() {
                            o.push((pc, field));
                        }
                    }
                    Ok(None) => {}
                    Err(msg) => fail(msg)?,
                }
                match form {
                    Form::Ja | Form::Ja32 => {
                        jump_to = Some(pc as i64 + 1 + insn.jump_offset());
                        falls = false;
                    }
                    Form::Jump { .. } => jump_to = Some(pc as i64 + 1 + insn.jump_offset()),
                    Form::Exit => falls = false,
                    _ => {}
                }
                if let Some(t) = jump_to {
                    // check_jumps guarantees the target is a forward slot of this function.
                    let t = t as usize;
                    match pending.get_mut(&t) {
                        Some(p) => {
                            p.join(&st);
                        }
                        None => {
                            pending.insert(t, st.clone());
                        }
                    }
                }
                if falls {
                    cur = Some(st);
                }
            }
            pc = next;
        }
        Ok(())
    }

    /// Transfer function of one reachable instruction. `Ok(Some(field))` = rewrite this load;
    /// `Err` = a forbidden use of the context pointer.
    fn step(&mut self, st: &mut State, f: usize, pc: usize, insn: Insn, form: Form) -> Result<Option<CtxField>, String> {
        let (dst, src) = (insn.dst, insn.src);
        let uses = |st: &State, r: u8, what: &str| -> Result<(), String> {
            match st.reg(r) {
                Cx::Yes => Err(format!("{what} the ctx pointer in r{r}")),
                Cx::Some => Err(format!("{what} r{r}, which holds the ctx pointer on some paths only")),
                _ => Ok(()),
            }
        };
        match form {
            Form::Alu { wide: true, op: AluOp::Mov, src: Operand::Reg } => st.set(dst, st.reg(src)),
            Form::Alu { op, src: operand, .. } => {
                if operand == Operand::Reg {
                    uses(st, src, "arithmetic on")?;
                }
                if !matches!(op, AluOp::Mov | AluOp::MovSx(_)) {
                    uses(st, dst, "arithmetic on")?;
                }
                st.set(dst, Cx::No);
            }
            Form::End { .. } => {
                uses(st, dst, "byte swap of")?;
                st.set(dst, Cx::No);
            }
            Form::Lddw => st.set(dst, Cx::No),
            Form::LdPacket { indirect, .. } => {
                if indirect {
                    uses(st, src, "packet offset from")?;
                }
                st.set(0, Cx::No);
            }
            Form::LdCtx(_) => st.set(dst, Cx::No),
            Form::Ldx { size, signed } => {
                let field = match st.reg(src) {
                    Cx::Yes => {
                        let field = CtxField::from_xdp_md_offset(insn.off).filter(|_| size == 4 && !signed);
                        let Some(field) = field else {
                            return Err(format!(
                                "{}-byte {}load at offset {} from the ctx pointer in r{src} (only 32-bit loads of xdp_md fields)",
                                size,
                                if signed { "sign-extending " } else { "" },
                                insn.off
                            ));
                        };
                        Some(field)
                    }
                    Cx::Some => return Err(format!("load through r{src}, which holds the ctx pointer on some paths only")),
                    _ => None,
                };
                let loaded = match (src, size, signed, slot(insn.off)) {
                    (REG_FP, 8, false, Some(i)) => st.slots[i],
                    _ => Cx::No,
                };
                st.set(dst, loaded);
                return Ok(field);
            }
            Form::St { size } => {
                uses(st, dst, "store through")?;
                if dst == REG_FP {
                    st.clobber(insn.off, size);
                }
            }
            Form::Stx { size } => {
                uses(st, dst, "store through")?;
                let v = st.reg(src);
                match (dst, size, slot(insn.off)) {
                    (REG_FP, 8, Some(i)) => st.slots[i] = v,
                    _ if v.is_ctx() => uses(st, src, "store outside an 8-byte stack slot of")?,
                    (REG_FP, _, _) => st.clobber(insn.off, size),
                    _ => {}
                }
            }
            Form::Atomic { op, wide } => {
                uses(st, dst, "atomic operation through")?;
                uses(st, src, "atomic operation on")?;
                if op == AtomicOp::Cmpxchg {
                    uses(st, 0, "atomic compare with")?;
                    st.set(0, Cx::No);
                }
                if op.fetches() {
                    st.set(src, Cx::No);
                }
                if dst == REG_FP {
                    st.clobber(insn.off, if wide { 8 } else { 4 });
                }
            }
            Form::Ja | Form::Ja32 => {}
            Form::Jump { src: operand, .. } => {
                uses(st, dst, "comparison of")?;
                if operand == Operand::Reg {
                    uses(st, src, "comparison of")?;
                }
            }
            Form::Call | Form::Callx | Form::CallKfunc => {
                if form == Form::Callx {
                    uses(st, dst, "helper id from")?;
                }
                // Helpers may receive the context pointer; they clobber r0-r5.
                for r in 0..=5 {
                    st.set(r, Cx::No);
                }
            }
            Form::CallLocal => {
                let callee = self.funcs.of((pc as i64 + 1 + insn.imm as i64) as usize);
                let mut into = st.clone();
                into.slots = [Cx::No; SLOTS];
                into.regs[REG_FP as usize] = Cx::No;
                match &mut self.entry[callee] {
                    Some(e) => {
                        e.join(&into);
                    }
                    e @ None => *e = Some(into),
                }
                // r6-r9 and the frame are restored; r1-r5 are scratch across calls.
                st.set(0, match self.ret[callee] {
                    Cx::Unset => Cx::No,
                    r => r,
                });
                for r in 1..=5 {
                    st.set(r, Cx::No);
                }
            }
            Form::Exit => {
                if f == 0 {
                    uses(st, 0, "verdict from")?;
                } else {
                    self.ret[f] = self.ret[f].join(st.reg(0));
                }
            }
        }
        Ok(None)
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::ctx::xdp_md;
    use crate::bpf::insn::build::*;
    use crate::bpf::Helper;

    unsafe extern "C" fn nop(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
        0
    }

    fn helpers() -> Helpers {
        Helpers::from_list(&[Helper { id: 3, name: "nop", func: nop, unwind_on_zero: false }])
    }

    fn check(kind: ProgKind, insns: &[Insn]) -> Result<Program, CheckError> {
        validate(insns.to_vec(), kind, &helpers())
    }

    /// The reason and index a program is refused with.
    fn refuse(kind: ProgKind, insns: &[Insn]) -> (usize, Reason) {
        match check(kind, insns) {
            Err(CheckError::Insn { index, reason, .. }) => (index, reason),
            other => panic!("expected an instruction error, got {other:?}"),
        }
    }

    const RAW: ProgKind = ProgKind::Raw;
    const XDP: ProgKind = ProgKind::Xdp;

    fn ldxw(dst: u8, src: u8, off: i16) -> Insn {
        ldx(SIZE_W, dst, src, off)
    }

    #[test]
    fn empty_and_oversized_programs_are_refused() {
        assert_eq!(check(RAW, &[]).unwrap_err(), CheckError::Empty);
        let big = vec![exit(); MAX_INSNS + 1];
        let err = validate(big, RAW, &helpers()).unwrap_err();
        assert_eq!(err, CheckError::TooLong { len: MAX_INSNS + 1, max: MAX_INSNS });
    }

    #[test]
    fn error_names_index_disassembly_and_reason() {
        let mut p = vec![mov64_imm(0, 0); 20];
        p[12] = jmp_imm(JMP_JNE, 3, 0x81, 40);
        p[19] = exit();
        let err = check(RAW, &p).unwrap_err();
        assert_eq!(
            err.to_string(),
            "instruction 12 (if r3 != 0x81 goto +40): jump target 53 is outside the program (20 instructions)"
        );
        assert_eq!(err.index(), Some(12));
    }

    #[test]
    fn unknown_opcodes_are_refused() {
        for op in [
            0xff, // no such class/op
            0xe4, // ALU op 0xe0
            0x38, // LD_ABS DW
            0x60, // LD class, MEM mode
            0xdf, // ALU64 END X
            0x8c, // NEG X
            0x86, // JMP32 CALL
            0x96, // JMP32 EXIT
            0x9d, // EXIT X
            0x0d, // JA X
            0x99, // LDXSX DW
            0xd3, // atomic B
            0x22, // ST ABS
            0x43, // STX IND
            0xe5, // JMP op 0xe0
        ] {
            let (i, r) = refuse(RAW, &[Insn::new(op, 0, 0, 0, 0), exit()]);
            assert_eq!((i, r), (0, Reason::UnknownOpcode(op)), "opcode {op:#x}");
        }
    }

    #[test]
    fn ctx_mode_in_input_is_refused() {
        let p = [Insn::new(CLASS_LDX | MODE_CTX | SIZE_DW, 0, 1, 0, 0), exit()];
        assert_eq!(refuse(XDP, &p), (0, Reason::InternalCtxMode));
        let p = [Insn::new(CLASS_LDX | MODE_CTX | SIZE_W, 0, 1, 0, 0), exit()];
        assert_eq!(refuse(RAW, &p), (0, Reason::InternalCtxMode));
    }

    #[test]
    fn unused_fields_must_be_zero() {
        let nz = |field, value| Reason::NonZeroField { field, value };
        let cases = [
            (Insn::new(CLASS_ALU64 | ALU_ADD, 1, 2, 0, 1), nz("src", 2)),
            (Insn::new(CLASS_ALU64 | ALU_ADD | SRC_X, 1, 2, 0, 1), nz("imm", 1)),
            (Insn::new(CLASS_ALU | ALU_SUB, 1, 0, 3, 1), nz("off", 3)),
            (Insn::new(CLASS_ALU64 | ALU_NEG, 1, 0, 0, 7), nz("imm", 7)),
            (Insn::new(CLASS_ALU64 | ALU_MOV, 1, 0, 8, 7), nz("off", 8)),
            (Insn::new(CLASS_ALU | ALU_END, 1, 4, 0, 16), nz("src", 4)),
            (Insn::new(CLASS_JMP | JMP_JA, 0, 0, 0, 5), nz("imm", 5)),
            (Insn::new(CLASS_JMP32 | JMP_JA, 0, 0, 1, 0), nz("off", 1)),
            (Insn::new(CLASS_JMP | JMP_JEQ, 1, 2, 0, 0), nz("src", 2)),
            (Insn::new(CLASS_JMP | JMP_EXIT, 0, 0, 0, 1), nz("imm", 1)),
            (Insn::new(CLASS_JMP | JMP_CALL, 1, 0, 0, 3), nz("dst", 1)),
            (Insn::new(CLASS_JMP | JMP_CALL | SRC_X, 1, 0, 0, 3), nz("imm", 3)),
            (Insn::new(CLASS_LDX | MODE_MEM | SIZE_W, 1, 2, 0, 9), nz("imm", 9)),
            (Insn::new(CLASS_ST | MODE_MEM | SIZE_W, 10, 2, -4, 9), nz("src", 2)),
            (Insn::new(CLASS_STX | MODE_MEM | SIZE_W, 10, 2, -4, 9), nz("imm", 9)),
            (Insn::new(CLASS_LD | MODE_ABS | SIZE_H, 1, 0, 0, 12), nz("dst", 1)),
            (Insn::new(CLASS_LD | MODE_ABS | SIZE_H, 0, 2, 0, 12), nz("src", 2)),
            (Insn::new(CLASS_LD | MODE_IND | SIZE_H, 0, 2, 1, 12), nz("off", 1)),
        ];
        for (insn, reason) in cases {
            assert_eq!(refuse(XDP, &[insn, exit()]), (0, reason), "{insn:?}");
        }
    }

    #[test]
    fn alu_offsets_end_widths_atomics_and_call_sources_are_checked() {
        let cases = [
            (Insn::new(CLASS_ALU64 | ALU_DIV, 1, 0, 2, 1), Reason::BadAluOffset(2)),
            (Insn::new(CLASS_ALU | ALU_MOD | SRC_X, 1, 2, -1, 0), Reason::BadAluOffset(-1)),
            (Insn::new(CLASS_ALU | ALU_MOV | SRC_X, 1, 2, 32, 0), Reason::BadAluOffset(32)),
            (Insn::new(CLASS_ALU64 | ALU_MOV | SRC_X, 1, 2, 4, 0), Reason::BadAluOffset(4)),
            (Insn::new(CLASS_ALU | ALU_END | SRC_X, 1, 0, 0, 8), Reason::BadEndWidth(8)),
            (Insn::new(CLASS_STX | MODE_ATOMIC | SIZE_DW, 1, 2, 0, 0x10), Reason::BadAtomic(0x10)),
            (Insn::new(CLASS_STX | MODE_ATOMIC | SIZE_W, 1, 2, 0, ATOMIC_XCHG & !ATOMIC_FETCH), Reason::BadAtomic(0xe0)),
            (Insn::new(CLASS_JMP | JMP_CALL, 0, 3, 0, 1), Reason::BadCallSource(3)),
        ];
        for (insn, reason) in cases {
            assert_eq!(refuse(RAW, &[insn, exit()]), (0, reason), "{insn:?}");
        }
    }

    #[test]
    fn registers_must_exist_and_r10_is_read_only() {
        assert_eq!(refuse(RAW, &[mov64_imm(11, 0), exit()]), (0, Reason::BadRegister { field: "dst", reg: 11 }));
        assert_eq!(refuse(RAW, &[mov64_reg(0, 15), exit()]), (0, Reason::BadRegister { field: "src", reg: 15 }));
        assert_eq!(refuse(RAW, &[mov64_imm(10, 0), exit()]), (0, Reason::WritesFramePointer));
        assert_eq!(refuse(RAW, &[ldx(SIZE_DW, 10, 1, 0), exit()]), (0, Reason::WritesFramePointer));
        let [lo, hi] = lddw(10, 1);
        assert_eq!(refuse(RAW, &[lo, hi, exit()]), (0, Reason::WritesFramePointer));
        let fetch = Insn::new(CLASS_STX | MODE_ATOMIC | SIZE_DW, 1, 10, 0, ATOMIC_ADD | ATOMIC_FETCH);
        assert_eq!(refuse(RAW, &[fetch, exit()]), (0, Reason::WritesFramePointer));
        // Reading r10 and storing through it are fine; a non-fetching atomic does not write src.
        let ok = [
            mov64_reg(1, 10),
            stx(SIZE_DW, 10, 10, -8),
            Insn::new(CLASS_STX | MODE_ATOMIC | SIZE_DW, 10, 1, -8, ATOMIC_ADD),
            exit(),
        ];
        check(RAW, &ok).unwrap();
    }

    #[test]
    fn lddw_must_be_whole_and_plain() {
        let [lo, hi] = lddw(1, 0x1122_3344_5566_7788);
        assert_eq!(refuse(RAW, &[exit(), lo]), (1, Reason::LddwTruncated));
        let bad_hi = Insn { dst: 1, ..hi };
        assert_eq!(refuse(RAW, &[lo, bad_hi, exit()]), (0, Reason::LddwSecondSlot));
        let map = Insn { src: PSEUDO_MAP_FD, ..lo };
        let err = check(RAW, &[map, hi, exit()]).unwrap_err();
        assert_eq!(err.reason(), Some(&Reason::MapReference(PSEUDO_MAP_FD)));
        assert!(err.to_string().contains("map references need an object loader"), "{err}");
        assert_eq!(refuse(RAW, &[Insn { src: 4, ..lo }, hi, exit()]), (0, Reason::LddwSource(4)));
        check(RAW, &[lo, hi, exit()]).unwrap();
    }

    #[test]
    fn packet_loads_need_xdp() {
        let p = [ld_abs(SIZE_H, 12), ld_ind(SIZE_B, 2, 14), exit()];
        assert_eq!(refuse(RAW, &p), (0, Reason::PacketLoadNeedsXdp));
        check(XDP, &p).unwrap();
    }

    #[test]
    fn calls_need_known_helpers() {
        assert_eq!(refuse(RAW, &[call_helper(4), exit()]), (0, Reason::UnknownHelper(4)));
        assert_eq!(refuse(RAW, &[call_helper(-1), exit()]), (0, Reason::UnknownHelper(-1)));
        let kfunc = Insn::new(CLASS_JMP | JMP_CALL, 0, CALL_KFUNC, 0, 77);
        assert_eq!(refuse(RAW, &[kfunc, exit()]), (0, Reason::Kfunc(77)));
        let err = check(RAW, &[call_helper(4), exit()]).unwrap_err();
        assert!(err.to_string().ends_with("unknown helper id 4"), "{err}");
        check(RAW, &[call_helper(3), exit()]).unwrap();
        // callx is resolved at run time.
        check(RAW, &[mov64_imm(2, 99), Insn::new(CLASS_JMP | JMP_CALL | SRC_X, 2, 0, 0, 0), exit()]).unwrap();
    }

    #[test]
    fn targets_must_be_instructions() {
        let out = |what, target, len| Reason::TargetOutside { what, target, len };
        assert_eq!(refuse(RAW, &[ja(1), exit()]), (0, out("jump", 2, 2)));
        assert_eq!(refuse(RAW, &[ja(-2), exit()]), (0, out("jump", -1, 2)));
        let ja32 = Insn::new(CLASS_JMP32 | JMP_JA, 0, 0, 0, 5);
        assert_eq!(refuse(RAW, &[ja32, exit()]), (0, out("jump", 6, 2)));
        let local = |imm| Insn::new(CLASS_JMP | JMP_CALL, 0, CALL_LOCAL, 0, imm);
        assert_eq!(refuse(RAW, &[local(5), exit()]), (0, out("call", 6, 2)));
        let [lo, hi] = lddw(1, 7);
        let into = |what, target| Reason::TargetInLddw { what, target };
        assert_eq!(refuse(RAW, &[jmp_imm(JMP_JEQ, 1, 0, 1), lo, hi, exit()]), (0, into("jump", 2)));
        assert_eq!(refuse(RAW, &[local(1), lo, hi, exit()]), (0, into("call", 2)));
    }

    #[test]
    fn jumps_stay_inside_their_function() {
        let p = [
            Insn::new(CLASS_JMP | JMP_CALL, 0, CALL_LOCAL, 0, 2),
            jmp_imm(JMP_JEQ, 0, 0, 2),
            exit(),
            mov64_imm(0, 1),
            exit(),
        ];
        assert_eq!(refuse(RAW, &p), (1, Reason::JumpLeavesFunction { target: 4, start: 0, end: 3 }));
    }

    #[test]
    fn no_fall_through() {
        assert_eq!(refuse(RAW, &[mov64_imm(0, 0)]), (0, Reason::FallsOffEnd));
        assert_eq!(refuse(RAW, &[exit(), jmp_imm(JMP_JEQ, 0, 0, -2)]), (1, Reason::FallsOffEnd));
        let [lo, hi] = lddw(0, 1);
        assert_eq!(refuse(RAW, &[exit(), lo, hi]), (1, Reason::FallsOffEnd));
        let p = [
            Insn::new(CLASS_JMP | JMP_CALL, 0, CALL_LOCAL, 0, 1),
            mov64_imm(0, 0),
            mov64_imm(0, 1),
            exit(),
        ];
        assert_eq!(refuse(RAW, &p), (1, Reason::FallsIntoFunction(2)));
        // Ending in an unconditional jump is fine.
        check(RAW, &[ja(1), exit(), ja(-2)]).unwrap();
    }

    #[test]
    fn filters_have_no_back_edges() {
        let p = [mov64_imm(0, 0), jmp_imm(JMP_JEQ, 0, 0, -2), exit()];
        let err = check(XDP, &p).unwrap_err();
        assert_eq!(err.reason(), Some(&Reason::BackEdge { from: 1, to: 0 }));
        assert!(err.to_string().contains("back-edge from 1 to 0: loops are not allowed in filters"), "{err}");
        assert_eq!(refuse(XDP, &[ja(-1), exit()]), (0, Reason::BackEdge { from: 0, to: 0 }));
        check(RAW, &p).unwrap();
    }

    fn local(imm: i32) -> Insn {
        Insn::new(CLASS_JMP | JMP_CALL, 0, CALL_LOCAL, 0, imm)
    }

    #[test]
    fn filters_have_no_recursion() {
        // main: call f; exit.  f (2): call g; exit.  g (4): call f; exit.
        let p = [local(1), exit(), local(1), exit(), local(-3), exit()];
        assert_eq!(refuse(XDP, &p), (4, Reason::Recursion(2)));
        let selfcall = [local(-1), exit()];
        assert_eq!(refuse(XDP, &selfcall), (0, Reason::Recursion(0)));
        check(RAW, &p).unwrap();
        // A function called from two places is not a cycle.
        check(XDP, &[local(2), local(1), exit(), mov64_imm(0, 1), exit()]).unwrap();
    }

    #[test]
    fn filters_have_bounded_call_depth() {
        // A chain main -> f1 -> ... -> fn, each function `call next; exit`.
        let chain = |n: usize| {
            let mut p = Vec::new();
            for _ in 0..n {
                p.extend([local(1), exit()]);
            }
            p.extend([mov64_imm(0, 2), exit()]);
            p
        };
        check(XDP, &chain(MAX_CALL_DEPTH - 1)).unwrap();
        let p = chain(MAX_CALL_DEPTH);
        let (index, reason) = refuse(XDP, &p);
        assert_eq!(reason, Reason::CallTooDeep(MAX_CALL_DEPTH + 1));
        assert_eq!(index, 2 * (MAX_CALL_DEPTH - 1));
        check(RAW, &p).unwrap();
    }

    fn rewritten(insns: &[Insn]) -> Vec<Insn> {
        check(XDP, insns).unwrap().insns().to_vec()
    }

    fn ctx_load(dst: u8, src: u8, field: CtxField) -> Insn {
        Insn::new(CLASS_LDX | MODE_CTX | SIZE_DW, dst, src, field as i16, 0)
    }

    #[test]
    fn xdp_md_loads_are_rewritten() {
        let p = [
            ldxw(2, 1, xdp_md::DATA),
            ldxw(3, 1, xdp_md::DATA_END),
            mov64_reg(6, 1),
            ldxw(4, 6, xdp_md::RX_QUEUE_INDEX),
            ldxw(5, 2, 0), // a packet load, untouched
            mov64_imm(0, 2),
            exit(),
        ];
        let out = rewritten(&p);
        assert_eq!(out[0], ctx_load(2, 1, CtxField::Data));
        assert_eq!(out[1], ctx_load(3, 1, CtxField::DataEnd));
        assert_eq!(out[3], ctx_load(4, 6, CtxField::RxQueueIndex));
        assert_eq!(out[4], p[4]);
        // Raw programs are never rewritten: r1 is plain memory there.
        assert_eq!(check(RAW, &p).unwrap().insns(), &p);
    }

    #[test]
    fn ctx_survives_spills_helper_calls_and_local_calls() {
        let p = [
            stx(SIZE_DW, 10, 1, -16),  // spill ctx
            mov64_reg(6, 1),           // keep it in a callee-saved register
            call_helper(3),            // clobbers r1-r5 (and may take ctx)
            ldx(SIZE_DW, 7, 10, -16),  // reload
            ldxw(2, 7, xdp_md::DATA),  // 4: rewritten
            ldxw(3, 6, xdp_md::DATA_END), // 5: rewritten
            mov64_reg(1, 6),
            local(2),                  // f(ctx)
            ldxw(4, 6, xdp_md::INGRESS_IFINDEX), // 8: r6 preserved across the call
            exit(),
            ldxw(0, 1, xdp_md::RX_QUEUE_INDEX), // 10: f sees ctx in r1
            exit(),
        ];
        let out = rewritten(&p);
        assert_eq!(out[4], ctx_load(2, 7, CtxField::Data));
        assert_eq!(out[5], ctx_load(3, 6, CtxField::DataEnd));
        assert_eq!(out[8], ctx_load(4, 6, CtxField::IngressIfindex));
        assert_eq!(out[10], ctx_load(0, 1, CtxField::RxQueueIndex));
    }

    #[test]
    fn clobbered_registers_and_slots_lose_ctx() {
        // After a helper call r1 is not ctx, so this load stays a memory load.
        let p = [call_helper(3), ldxw(0, 1, 0), exit()];
        assert_eq!(rewritten(&p)[1], p[1]);
        // A narrower store over a spill slot forgets it.
        let p = [stx(SIZE_DW, 10, 1, -8), st(SIZE_W, 10, -4, 0), ldx(SIZE_DW, 2, 10, -8), ldxw(0, 2, 0), exit()];
        assert_eq!(rewritten(&p)[3], p[3]);
        // A local call returns ctx in r0 if its function does on every path.
        let p = [local(2), ldxw(0, 0, xdp_md::DATA_END), exit(), mov64_reg(0, 1), exit()];
        assert_eq!(rewritten(&p)[1], ctx_load(0, 0, CtxField::DataEnd));
    }

    fn ctx_err(insns: &[Insn]) -> (usize, String) {
        match refuse(XDP, insns) {
            (i, Reason::CtxAccess(msg)) => (i, msg),
            other => panic!("expected a ctx error, got {other:?}"),
        }
    }

    #[test]
    fn other_uses_of_ctx_are_refused() {
        let cases: Vec<(Vec<Insn>, usize, &str)> = vec![
            (vec![ldx(SIZE_H, 0, 1, 0), exit()], 0, "2-byte load at offset 0"),
            (vec![ldxw(0, 1, 2), exit()], 0, "4-byte load at offset 2"),
            (vec![ldxw(0, 1, xdp_md::SIZE), exit()], 0, "offset 24"),
            (vec![Insn::new(CLASS_LDX | MODE_MEMSX | SIZE_W, 0, 1, 0, 0), exit()], 0, "sign-extending"),
            (vec![alu64_imm(ALU_ADD, 1, 4), mov64_imm(0, 0), exit()], 0, "arithmetic on the ctx pointer in r1"),
            (vec![alu64_reg(ALU_ADD, 2, 1), mov64_imm(0, 0), exit()], 0, "arithmetic on the ctx pointer in r1"),
            (vec![mov32_reg(2, 1), mov64_imm(0, 0), exit()], 0, "arithmetic"),
            (vec![st(SIZE_W, 1, 0, 0), mov64_imm(0, 0), exit()], 0, "store through the ctx pointer"),
            (vec![stx(SIZE_W, 10, 1, -8), mov64_imm(0, 0), exit()], 0, "store outside an 8-byte stack slot"),
            (vec![stx(SIZE_DW, 10, 1, -4), mov64_imm(0, 0), exit()], 0, "store outside an 8-byte stack slot"),
            (vec![jmp_imm(JMP_JEQ, 1, 0, 0), mov64_imm(0, 0), exit()], 0, "comparison of the ctx pointer"),
            (vec![ld_ind(SIZE_B, 1, 0), exit()], 0, "packet offset"),
            (vec![mov64_reg(0, 1), exit()], 1, "verdict"),
            (
                vec![Insn::new(CLASS_STX | MODE_ATOMIC | SIZE_DW, 10, 1, -8, ATOMIC_ADD), mov64_imm(0, 0), exit()],
                0,
                "atomic operation on",
            ),
            (vec![Insn::new(CLASS_JMP | JMP_CALL | SRC_X, 1, 0, 0, 0), exit()], 0, "helper id"),
            (vec![Insn::new(CLASS_ALU64 | ALU_END, 1, 0, 0, 16), mov64_imm(0, 0), exit()], 0, "byte swap"),
        ];
        for (p, index, needle) in cases {
            let (i, msg) = ctx_err(&p);
            assert_eq!(i, index, "{msg}");
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        }
    }

    #[test]
    fn ctx_on_some_paths_only_is_refused_when_used() {
        // r2 = r1 on one path, a number on the other; loading through r2 is ambiguous.
        let p = [
            mov64_imm(2, 0),
            jmp_imm(JMP_JEQ, 3, 0, 1),
            mov64_reg(2, 1),
            ldxw(0, 2, 0),
            exit(),
        ];
        let (i, msg) = ctx_err(&p);
        assert_eq!(i, 3);
        assert!(msg.contains("some paths only"), "{msg}");
        // Overwriting the ambiguous register makes it harmless.
        let p = [mov64_imm(2, 0), jmp_imm(JMP_JEQ, 3, 0, 1), mov64_reg(2, 1), mov64_imm(2, 0), ldxw(0, 2, 0), exit()];
        check(XDP, &p).unwrap();
        // A function called with ctx from one site and a number from another.
        let p = [local(3), mov64_imm(1, 0), local(1), exit(), ldxw(0, 1, 0), exit()];
        let (i, msg) = ctx_err(&p);
        assert_eq!(i, 4);
        assert!(msg.contains("some paths only"), "{msg}");
    }

    #[test]
    fn unreachable_code_is_not_ctx_checked() {
        let p = [mov64_imm(0, 2), exit(), alu64_imm(ALU_ADD, 1, 4), exit()];
        check(XDP, &p).unwrap();
    }

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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn random_slots_never_panic(
            slots in proptest::collection::vec(proptest::prelude::any::<[u8; 8]>(), 1..40),
            xdp in proptest::prelude::any::<bool>(),
        ) {
            let insns: Vec<Insn> = slots.into_iter().map(Insn::decode).collect();
            let kind = if xdp { XDP } else { RAW };
            if let Err(e) = validate(insns.clone(), kind, &helpers()) {
                let _ = e.to_string();
            }
            let _ = disasm::program(&insns);
        }

        /// Random slots drawn from valid opcodes with small fields reach the deeper checks.
        #[test]
        fn plausible_programs_never_panic(
            slots in proptest::collection::vec(
                (proptest::sample::select(VALID_OPS), 0u8..12, 0u8..12, -4i16..6, -3i32..70),
                1..30,
            ),
            xdp in proptest::prelude::any::<bool>(),
        ) {
            let mut insns: Vec<Insn> =
                slots.into_iter().map(|(op, dst, src, off, imm)| Insn::new(op, dst, src, off, imm)).collect();
            insns.push(exit());
            let kind = if xdp { XDP } else { RAW };
            if let Ok(p) = validate(insns, kind, &helpers()) {
                let _ = disasm::program(p.insns());
            }
        }
    }

    const VALID_OPS: &[u8] = &[
        0x07, 0x0f, 0x17, 0x1f, 0xb7, 0xbf, 0xb4, 0xbc, 0x84, 0x87, 0x37, 0x3f, 0xd4, 0xdc, 0xd7, 0x18, 0x20,
        0x28, 0x48, 0x61, 0x69, 0x79, 0x81, 0x62, 0x7a, 0x63, 0x7b, 0xc3, 0xdb, 0x05, 0x06, 0x15, 0x1d, 0x16,
        0x5e, 0x85, 0x8d, 0x95, 0x00,
    ];
}
