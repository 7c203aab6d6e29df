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
//! back-edges (unless a loader that verifies the program admits them, see [`validate_full`]),
//! no recursion, bounded call depth, and the `xdp_md` rewrite. A forward dataflow
//! over the (acyclic) program tracks which registers and 8-byte stack slots hold the context
//! pointer; a 32-bit load of an `xdp_md` field through it becomes a `MODE_CTX` load of the real
//! 64-bit field, and every other use of the context pointer is refused.
//!
//! The tracking follows direct `r10`-relative spills only; a store that reaches a spill slot
//! through another pointer is not seen. That cannot make a program unsafe because a `MODE_CTX`
//! instruction reads the run's own context: back ends must never dereference its `src`
//! register (they keep the context pointer themselves).
//!
//! Submodules: `form` decodes slots (shared with the disassembler and back ends), `ctxflow` is
//! the context dataflow, `stack` finds the stack bytes a run can reach ([`stack_reach`]).

use super::insn::*;
use super::{Helpers, MAX_CALL_DEPTH, ProgKind, Program, disasm};

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
    #[error("map index {index} does not exist (the program has {count} maps)")]
    MapIndex { index: u32, count: usize },
    #[error("offset {offset} is outside the {size}-byte value of map {map}")]
    MapValueOffset { map: u32, offset: u32, size: u32 },
    #[error("second slot of a map lddw must be zero")]
    MapSecondSlot,
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

mod ctxflow;
mod form;
mod stack;

pub use form::{AluOp, AtomicOp, Cond, EndOp, Form, LddwKind, Operand, form, lddw_kind};
pub use stack::{StackReach, stack_reach};

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// Validates `insns` for `kind` against the helper table and builds the [`Program`] back ends
/// run. For [`ProgKind::Xdp`] the returned instructions carry the `xdp_md` rewrite. Map
/// references are refused: a program with maps comes from an object and goes through
/// [`validate_with_maps`].
pub fn validate(insns: Vec<Insn>, kind: ProgKind, helpers: &Helpers) -> Result<Program, CheckError> {
    validate_with_maps(insns, kind, helpers, &[])
}

/// [`validate`] for a program whose `lddw` map references ([`LddwKind`]) index a map table
/// whose values are `map_value_sizes[i]` bytes: every index must exist, and a map-value
/// reference's offset must lie inside the value. What the program does with the pointers is
/// the verifier's business.
pub fn validate_with_maps(
    insns: Vec<Insn>,
    kind: ProgKind,
    helpers: &Helpers,
    map_value_sizes: &[u32],
) -> Result<Program, CheckError> {
    validate_full(insns, kind, helpers, map_value_sizes, false)
}

/// [`validate_with_maps`], optionally admitting back-edges in [`ProgKind::Xdp`] programs.
/// Only loaders that verify what they validate pass `loops` (`verifier::load`, and
/// `object::build_program`, which refuses a program with a [`back_edge`] the verifier does not
/// accept): such a program terminates only by the verifier's proof, so it never leaves them
/// unverified.
pub(crate) fn validate_full(
    insns: Vec<Insn>,
    kind: ProgKind,
    helpers: &Helpers,
    map_value_sizes: &[u32],
    loops: bool,
) -> Result<Program, CheckError> {
    if insns.is_empty() {
        return Err(CheckError::Empty);
    }
    if insns.len() > MAX_INSNS {
        return Err(CheckError::TooLong { len: insns.len(), max: MAX_INSNS });
    }
    let second = check_slots(&insns, kind, helpers, map_value_sizes)?;
    let funcs = Functions::find(&insns, &second)?;
    check_jumps(&insns, kind, loops, &second, &funcs)?;
    check_ends(&insns, &second, &funcs)?;
    let mut insns = insns;
    if kind == ProgKind::Xdp {
        let graph = CallGraph::build(&insns, &funcs)?;
        let rewrites = ctxflow::CtxFlow::run(&insns, &funcs, &graph)?;
        for (pc, field) in rewrites {
            let i = insns[pc];
            insns[pc] = Insn::new(CLASS_LDX | MODE_CTX | SIZE_DW, i.dst, i.src, field as i16, 0);
        }
    }
    Ok(Program { insns, kind, helpers: helpers.clone() })
}

/// Checks a program derived from `from` (a validated, loop-free program) by removing paths
/// and retargeting jumps, as `specialize` does: every slot, jump and end as [`validate`]
/// checks them (such a program references no maps); its `MODE_CTX` loads are taken as they are, since
/// `from`'s validation made them (the context dataflow does not run again).
pub(crate) fn revalidate(insns: Vec<Insn>, from: &Program) -> Result<Program, CheckError> {
    if insns.is_empty() {
        return Err(CheckError::Empty);
    }
    let second = check_slots_of(&insns, from.kind, &from.helpers, &[], true)?;
    let funcs = Functions::find(&insns, &second)?;
    check_jumps(&insns, from.kind, false, &second, &funcs)?;
    check_ends(&insns, &second, &funcs)?;
    Ok(Program { insns, kind: from.kind, helpers: from.helpers.clone() })
}

/// Per-slot checks. Returns which slots are the second half of an `lddw`.
fn check_slots(insns: &[Insn], kind: ProgKind, helpers: &Helpers, maps: &[u32]) -> Result<Vec<bool>, CheckError> {
    check_slots_of(insns, kind, helpers, maps, false)
}

/// [`check_slots`], admitting `MODE_CTX` loads when `internal`.
fn check_slots_of(insns: &[Insn], kind: ProgKind, helpers: &Helpers, maps: &[u32], internal: bool) -> Result<Vec<bool>, CheckError> {
    let mut second = vec![false; insns.len()];
    let mut pc = 0;
    while pc < insns.len() {
        let insn = insns[pc];
        let err = |reason| CheckError::at(insns, pc, reason);
        if insn.class() == CLASS_LDX && insn.mode() == MODE_CTX && !internal {
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
                check_map_ref(insns, pc, maps).map_err(err)?;
                second[pc + 1] = true;
                pc += 1;
            }
            _ => {}
        }
        pc += 1;
    }
    Ok(second)
}

/// A map reference must name an existing map, and a map-value one an offset inside its value.
fn check_map_ref(insns: &[Insn], pc: usize, maps: &[u32]) -> Result<(), Reason> {
    if insns[pc].src != 0 && maps.is_empty() {
        return Err(Reason::MapReference(insns[pc].src));
    }
    let (map, offset) = match lddw_kind(insns, pc) {
        Some(LddwKind::Map(map)) => {
            if insns[pc + 1].imm != 0 {
                return Err(Reason::MapSecondSlot);
            }
            (map, None)
        }
        Some(LddwKind::MapValue { map, offset }) => (map, Some(offset)),
        _ => return Ok(()),
    };
    let Some(&size) = maps.get(map as usize) else {
        return Err(Reason::MapIndex { index: map, count: maps.len() });
    };
    match offset {
        Some(offset) if offset >= size => Err(Reason::MapValueOffset { map, offset, size }),
        _ => Ok(()),
    }
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

fn check_jumps(insns: &[Insn], kind: ProgKind, loops: bool, second: &[bool], funcs: &Functions) -> Result<(), CheckError> {
    for (pc, insn, f) in each_insn(insns, second) {
        if !matches!(f, Form::Ja | Form::Ja32 | Form::Jump { .. }) {
            continue;
        }
        let t = target(insns, second, pc, insn.jump_offset(), "jump")?;
        let (start, end) = funcs.range(funcs.of(pc));
        if t < start || t >= end {
            return Err(CheckError::at(insns, pc, Reason::JumpLeavesFunction { target: t, start, end }));
        }
        if kind == ProgKind::Xdp && t <= pc && !loops {
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

/// The first backward jump `(from, to)` of a validated program (`to <= from`), if it has one:
/// a program without one runs each instruction at most once per call.
pub fn back_edge(insns: &[Insn]) -> Option<(usize, usize)> {
    let mut pc = 0;
    while pc < insns.len() {
        let i = insns[pc];
        let f = form(&i);
        if matches!(f, Ok(Form::Ja | Form::Ja32 | Form::Jump { .. })) {
            let t = pc as i64 + 1 + i.jump_offset();
            if t <= pc as i64 {
                return Some((pc, t.max(0) as usize));
            }
        }
        pc += if f == Ok(Form::Lddw) { 2 } else { 1 };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::Helper;
    use crate::bpf::insn::build::*;

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
            (
                Insn::new(CLASS_STX | MODE_ATOMIC | SIZE_W, 1, 2, 0, ATOMIC_XCHG & !ATOMIC_FETCH),
                Reason::BadAtomic(0xe0),
            ),
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
        assert_eq!(refuse(RAW, &[Insn { src: 5, ..lo }, hi, exit()]), (0, Reason::LddwSource(5)));
        check(RAW, &[lo, hi, exit()]).unwrap();
    }

    #[test]
    fn map_references_index_the_map_table() {
        let with = |insns: &[Insn], sizes: &[u32]| validate_with_maps(insns.to_vec(), XDP, &helpers(), sizes);
        let map = |src, idx, hi_imm| {
            [Insn::new(CLASS_LD | MODE_IMM | SIZE_DW, 1, src, 0, idx), Insn::new(0, 0, 0, 0, hi_imm)]
        };
        let prog = |[a, b]: [Insn; 2]| vec![a, b, mov64_imm(0, 2), exit()];
        let p = prog(map(PSEUDO_MAP_FD, 1, 0));
        let q = prog(map(PSEUDO_MAP_VALUE, 0, 12));
        with(&p, &[4, 8]).unwrap();
        with(&q, &[16]).unwrap();
        assert_eq!(lddw_kind(&q, 0), Some(LddwKind::MapValue { map: 0, offset: 12 }));
        assert_eq!(lddw_kind(&p, 0), Some(LddwKind::Map(1)));
        let reason = |r: Result<Program, CheckError>| r.unwrap_err().reason().cloned();
        assert_eq!(reason(with(&p, &[4])), Some(Reason::MapIndex { index: 1, count: 1 }));
        assert_eq!(reason(with(&q, &[12])), Some(Reason::MapValueOffset { map: 0, offset: 12, size: 12 }));
        assert_eq!(reason(with(&prog(map(PSEUDO_MAP_FD, 0, 3)), &[4])), Some(Reason::MapSecondSlot));
        let err = with(&q, &[12]).unwrap_err().to_string();
        assert!(err.starts_with("instruction 0 (r1 = map_value[0] + 12 ll): offset 12"), "{err}");
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
        let p = [Insn::new(CLASS_JMP | JMP_CALL, 0, CALL_LOCAL, 0, 1), mov64_imm(0, 0), mov64_imm(0, 1), exit()];
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
        assert_eq!(back_edge(&p), Some((1, 0)));
        assert_eq!(back_edge(&[ja(-1), exit()]), Some((0, 0)));
        // Forward jumps, and an lddw whose second slot decodes as nothing, are not loops.
        let [lo, hi] = lddw(1, u64::MAX);
        assert_eq!(back_edge(&[jmp_imm(JMP_JEQ, 0, 0, 2), lo, hi, exit()]), None);
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
        0x07, 0x0f, 0x17, 0x1f, 0xb7, 0xbf, 0xb4, 0xbc, 0x84, 0x87, 0x37, 0x3f, 0xd4, 0xdc, 0xd7, 0x18, 0x20, 0x28,
        0x48, 0x61, 0x69, 0x79, 0x81, 0x62, 0x7a, 0x63, 0x7b, 0xc3, 0xdb, 0x05, 0x06, 0x15, 0x1d, 0x16, 0x5e, 0x85,
        0x8d, 0x95, 0x00,
    ];
}
