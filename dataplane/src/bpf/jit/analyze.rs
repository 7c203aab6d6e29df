//! Static facts the code generator relies on: which instructions make up each native function,
//! where its basic blocks start, and which memory accesses are already proven in bounds so that
//! their run-time check can be left out.
//!
//! Bounds facts come from one forward pass per function in instruction order. Edges only go
//! forward in `Xdp` programs, so that order is topological and a block sees the minimum over all
//! of its predecessors; a block that is also reached by a back edge (`Raw` loops) starts from
//! nothing proven. Two facts are tracked:
//! - `proven`: the packet is known to hold at least this many bytes (from an earlier LD_ABS
//!   check, a successful LD_IND, or a `data + c > data_end` comparison);
//! - per register, its value relative to a base: a constant, `r10 + c`, `data + c` or
//!   `data_end + c`, so that `*(r10 - 8)` or `*(data + 12)` can be classified at compile time.
//!
//! For a program the verifier accepted ([`analyze_verified`]), its proofs replace this
//! module's weaker ones: every access it proved in bounds (packet at any offset, stack at any
//! depth, map values) is `Proven`, so no run-time check is left on them.
//!
//! A packet check that must be emitted is made as wide as possible: a backward pass finds, per
//! instruction, how short a packet must be for the rest of the run to end in r0 = 0 with no
//! visible effect (`short_means_zero`), so one check can cover every LD_ABS on all paths below
//! it. In a classic filter that is usually one check for the whole protocol branch.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::JitError;
use crate::bpf::check::{self, StackReach};
use crate::bpf::ctx::CtxField;
use crate::bpf::insn::*;
use crate::bpf::verifier::Verified;
use crate::bpf::helpers::{ADJUST_HEAD, ADJUST_TAIL};
use crate::bpf::{Program, MAX_CALL_DEPTH};

/// Bytes of the whole stack area (every call frame).
pub(super) const STACK_AREA: i64 = (MAX_CALL_DEPTH * STACK_SIZE) as i64;

/// Offsets tracked relative to a base stay small, so base + offset never wraps for any real
/// address and comparisons between such values mean what they say.
const OFFSET_LIMIT: i64 = 1 << 31;

/// What the generator does for one instruction, beyond its plain semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Note {
    /// Nothing special (or not a memory access).
    None,
    /// LD_ABS: check that the packet holds at least this many bytes first (may be more than the
    /// load itself needs: see `short_means_zero`).
    PacketCheck(u64),
    /// LD_ABS, or a load/store/atomic into the packet, whose bounds are already proven: no check.
    Proven,
    /// A load/store/atomic at a constant offset from r10 that stays inside the stack area at
    /// any call depth: no check.
    Stack,
    /// A load/store/atomic that needs the full run-time check (packet, then stack).
    Checked,
}

/// One native function: the instructions reachable from `entry` without following calls.
#[derive(Debug)]
pub(super) struct Func {
    pub entry: usize,
    /// Reachable instruction indices, ascending (second `lddw` slots excluded).
    pub pcs: Vec<usize>,
    /// Block leaders, ascending; `entry` is always one.
    pub leaders: BTreeSet<usize>,
    /// By pc; absent means `Note::None`. Tables are per function and sized to it, so a
    /// program with many functions costs no more than the sum of its functions.
    pub notes: HashMap<usize, Note>,
}

impl Func {
    pub fn note(&self, pc: usize) -> Note {
        self.notes.get(&pc).copied().unwrap_or(Note::None)
    }

    /// The reachable instructions of the block from `leader` up to (not including) `end`.
    pub fn block(&self, leader: usize, end: usize) -> &[usize] {
        let lo = self.pcs.partition_point(|&pc| pc < leader);
        let hi = self.pcs.partition_point(|&pc| pc < end);
        &self.pcs[lo..hi]
    }
}

#[derive(Debug)]
pub(super) struct Layout {
    /// `funcs[0]` is the program entry; the others are targets of local calls (a local call
    /// may target slot 0 too: that callee is compiled again as a local function).
    pub funcs: Vec<Func>,
    /// Which part of the stack area the program can reach (the interpreter's rule): with
    /// `None` there is no stack and r10 is 0; the reachable part is zeroed before each run.
    pub stack: StackReach,
    /// Some instruction can observe the context pointer in r1 itself (not a field load, which
    /// the JIT computes without it), so `run_xdp` must build a real `XdpContext`.
    pub uses_ctx: bool,
    /// Some instruction may call `xdp_adjust_head/tail`, which move the packet window the
    /// context describes (`data`, `data_end`); memory checks still admit the whole slice the
    /// run was given, as in the interpreter.
    pub moves: bool,
}

impl Layout {
    /// Index in `funcs` of the local function a call to `entry` runs.
    pub fn local_index(&self, entry: usize) -> Option<usize> {
        self.funcs.iter().skip(1).position(|f| f.entry == entry).map(|i| i + 1)
    }
}

/// Where control goes after `pc`.
enum Flow {
    Next,
    Jump(usize),
    Branch(usize),
    Exit,
}

fn flow(insns: &[Insn], pc: usize) -> Result<Flow, JitError> {
    let insn = &insns[pc];
    if insn.is_exit() {
        return Ok(Flow::Exit);
    }
    if insn.is_jump() {
        let target = pc as i64 + 1 + insn.jump_offset();
        let target = usize::try_from(target)
            .ok()
            .filter(|&t| t < insns.len())
            .ok_or(JitError::BadTarget { pc, target })?;
        return Ok(if insn.code() == JMP_JA { Flow::Jump(target) } else { Flow::Branch(target) });
    }
    Ok(Flow::Next)
}

fn width(insn: &Insn) -> usize {
    if insn.is_lddw() { 2 } else { 1 }
}

/// Target of a `call local` at `pc`.
pub(super) fn local_call_target(insns: &[Insn], pc: usize) -> Result<usize, JitError> {
    let target = pc as i64 + 1 + insns[pc].imm as i64;
    usize::try_from(target)
        .ok()
        .filter(|&t| t < insns.len())
        .ok_or(JitError::BadTarget { pc, target })
}

pub(super) fn is_local_call(insn: &Insn) -> bool {
    insn.class() == CLASS_JMP && insn.code() == JMP_CALL && insn.source() == SRC_K && insn.src == CALL_LOCAL
}

pub(super) fn analyze(prog: &Program) -> Result<Layout, JitError> {
    let insns = &prog.insns;
    if insns.is_empty() {
        return Err(JitError::Empty);
    }
    // Second slots of `lddw` are data, never instructions.
    let mut second_slot = vec![false; insns.len()];
    let mut pc = 0;
    while pc < insns.len() {
        if insns[pc].is_lddw() {
            if pc + 1 >= insns.len() {
                return Err(JitError::Unsupported { pc, insn: insns[pc], reason: "lddw without its second slot" });
            }
            second_slot[pc + 1] = true;
            pc += 2;
        } else {
            pc += 1;
        }
    }

    // entries[0] is the program entry; the rest are local functions, each listed once.
    let mut entries = vec![0usize];
    let mut funcs = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let (pcs, leaders) = reach(insns, &second_slot, entries[i])?;
        for &pc in &pcs {
            if is_local_call(&insns[pc]) {
                let t = local_call_target(insns, pc)?;
                if second_slot[t] {
                    return Err(JitError::BadTarget { pc, target: t as i64 });
                }
                if !entries[1..].contains(&t) {
                    entries.push(t);
                }
            }
        }
        funcs.push(Func { entry: entries[i], pcs, leaders, notes: HashMap::new() });
        i += 1;
    }

    let mut uses_ctx = false;
    for f in &funcs {
        for &pc in &f.pcs {
            let insn = &insns[pc];
            let ctx_load = insn.class() == CLASS_LDX && insn.mode() == MODE_CTX;
            uses_ctx |= (reads_reg(insn, 1) && !ctx_load) || insn.is_call();
        }
    }
    let stack = check::stack_reach(insns);
    let mover = Mover::of(prog);
    let moves = funcs.iter().flat_map(|f| &f.pcs).any(|&pc| mover.moves(&insns[pc]));
    for (index, f) in funcs.iter_mut().enumerate() {
        f.notes = plan(prog, f, index == 0, stack != StackReach::None, mover);
    }
    Ok(Layout { funcs, stack, uses_ctx, moves })
}

/// Which calls may move the packet window (`xdp_adjust_head/tail`).
#[derive(Debug, Clone, Copy)]
struct Mover {
    /// The helper table has an adjust helper, so a `callx` may reach it.
    any: bool,
}

impl Mover {
    fn of(prog: &Program) -> Mover {
        Mover { any: prog.helpers().get(ADJUST_HEAD as u64).is_some() || prog.helpers().get(ADJUST_TAIL as u64).is_some() }
    }

    fn moves(self, insn: &Insn) -> bool {
        if !self.any || !insn.is_call() || is_local_call(insn) {
            return false;
        }
        insn.source() == SRC_X || (insn.src == CALL_HELPER && matches!(insn.imm as u32, ADJUST_HEAD | ADJUST_TAIL))
    }
}

/// [`analyze`] for a program the verifier accepted: every access it proved in bounds needs
/// no check. The verifier's proof covers every path, so it holds in every function copy.
pub(super) fn analyze_verified(prog: &Program, verified: &Verified) -> Result<Layout, JitError> {
    let mut layout = analyze(prog)?;
    // Proven-initialised stack reads need no zeroing at all.
    layout.stack = verified.stack_reach(prog.insns());
    for f in &mut layout.funcs {
        for &pc in &f.pcs {
            if verified.proven(pc) {
                f.notes.insert(pc, Note::Proven);
            }
        }
    }
    Ok(layout)
}

/// Instructions reachable from `entry` (calls fall through) and the block leaders among them.
fn reach(insns: &[Insn], second_slot: &[bool], entry: usize) -> Result<(Vec<usize>, BTreeSet<usize>), JitError> {
    let mut seen = HashSet::new();
    let mut leaders = BTreeSet::from([entry]);
    let mut work = vec![entry];
    let check = |from: usize, to: usize| {
        if to >= insns.len() {
            Err(JitError::FallsOffEnd { pc: from })
        } else if second_slot[to] {
            Err(JitError::BadTarget { pc: from, target: to as i64 })
        } else {
            Ok(to)
        }
    };
    while let Some(start) = work.pop() {
        let mut pc = start;
        while seen.insert(pc) {
            match flow(insns, pc)? {
                Flow::Exit => break,
                Flow::Jump(t) => {
                    leaders.insert(check(pc, t)?);
                    work.push(t);
                    break;
                }
                Flow::Branch(t) => {
                    leaders.insert(check(pc, t)?);
                    work.push(t);
                    let next = check(pc, pc + 1)?;
                    leaders.insert(next);
                    pc = next;
                }
                Flow::Next => pc = check(pc, pc + width(&insns[pc]))?,
            }
        }
    }
    let mut pcs: Vec<usize> = seen.into_iter().collect();
    pcs.sort_unstable();
    Ok((pcs, leaders))
}

/// Does `insn` read register `r` (conservatively: any operand naming it)?
pub(super) fn reads_reg(insn: &Insn, r: u8) -> bool {
    match insn.class() {
        CLASS_ALU | CLASS_ALU64 => {
            let mov = insn.code() == ALU_MOV;
            (insn.dst == r && !mov) || (insn.source() == SRC_X && insn.src == r)
        }
        CLASS_JMP | CLASS_JMP32 => {
            if insn.is_call() {
                // Helpers and callees receive r1..r5 (callees also see the rest).
                (1..=5).contains(&r) || (insn.source() == SRC_X && insn.dst == r) || is_local_call(insn)
            } else if insn.is_exit() {
                r == 0
            } else {
                insn.dst == r || (insn.source() == SRC_X && insn.src == r)
            }
        }
        CLASS_LD => insn.mode() == MODE_IND && insn.src == r,
        CLASS_LDX => insn.src == r,
        CLASS_ST => insn.dst == r,
        CLASS_STX => insn.dst == r || insn.src == r || (insn.mode() == MODE_ATOMIC && r == 0),
        _ => false,
    }
}

/// A register's value relative to a base the generator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Val {
    Unknown,
    Const(u64),
    /// This frame's r10 + c.
    Stack(i64),
    /// Packet start + c.
    Packet(i64),
    /// Packet end + c.
    PacketEnd(i64),
}

impl Val {
    fn add(self, k: i64) -> Val {
        let shift = |c: i64| c.checked_add(k).filter(|v| v.abs() < OFFSET_LIMIT);
        match self {
            Val::Const(c) => Val::Const(c.wrapping_add(k as u64)),
            Val::Stack(c) => shift(c).map_or(Val::Unknown, Val::Stack),
            Val::Packet(c) => shift(c).map_or(Val::Unknown, Val::Packet),
            Val::PacketEnd(c) => shift(c).map_or(Val::Unknown, Val::PacketEnd),
            Val::Unknown => Val::Unknown,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    /// Bytes known present from `data` (the window the context describes).
    proven: u64,
    regs: [Val; NUM_REGS as usize],
    /// The window may have moved (`xdp_adjust_head/tail`): LD_ABS and LD_IND, which address
    /// the slice the run was given, no longer prove anything about the window. (A window proof
    /// still bounds the slice: the window lies inside it, starting no earlier.)
    moved: bool,
}

impl State {
    /// r1 is left unknown: which of memory or context it points to depends on the entry
    /// point (`run_raw` or `run_xdp`), not on the program.
    fn entry(has_stack: bool) -> State {
        let mut regs = [Val::Unknown; NUM_REGS as usize];
        regs[REG_FP as usize] = if has_stack { Val::Stack(0) } else { Val::Const(0) };
        State { proven: 0, regs, moved: false }
    }

    /// After a call that may move the window: nothing is known about it any more.
    fn moved(&mut self) {
        self.proven = 0;
        self.moved = true;
        for r in &mut self.regs {
            if matches!(r, Val::Packet(_) | Val::PacketEnd(_)) {
                *r = Val::Unknown;
            }
        }
    }

    fn meet(&mut self, other: &State) {
        self.proven = self.proven.min(other.proven);
        self.moved |= other.moved;
        for (a, b) in self.regs.iter_mut().zip(other.regs.iter()) {
            if a != b {
                *a = Val::Unknown;
            }
        }
    }
}

/// Packet bytes an LD_ABS needs; for LD_IND, the least it needs (its offset is
/// `src as u32 + imm as u32`, computed without wrapping, as in the interpreter).
pub(super) fn abs_need(insn: &Insn) -> u64 {
    insn.imm as u32 as u64 + insn.size_bytes() as u64
}

/// Is `[c, c + size)` relative to this frame's r10 inside the stack area whatever the depth?
fn stack_static(main: bool, c: i64, size: i64) -> bool {
    let (lo, hi) = if main { (-STACK_AREA, 0) } else { (-(STACK_SIZE as i64), STACK_SIZE as i64) };
    c >= lo && c + size <= hi
}

/// How a load/store/atomic through `base + off` is classified in `state`.
fn classify(state: &State, main: bool, base: u8, off: i16, size: usize) -> Note {
    let size = size as i64;
    match state.regs[base as usize] {
        Val::Stack(c) if stack_static(main, c + off as i64, size) => Note::Stack,
        Val::Packet(c) => {
            let a = c + off as i64;
            if a >= 0 && state.proven >= (a + size) as u64 { Note::Proven } else { Note::Checked }
        }
        _ => Note::Checked,
    }
}

fn plan(prog: &Program, f: &Func, main: bool, has_stack: bool, mover: Mover) -> HashMap<usize, Note> {
    // Pass 1 learns what each instruction is (which accesses are proven, which exits return 0)
    // with every LD_ABS checking only its own need; the backward pass then finds how much a
    // check may demand; pass 2 emits the wider checks. Wider checks only add proven bytes, so
    // every fact pass 1 used still holds in pass 2.
    let (notes, zero_exits) = forward(prog, f, main, has_stack, mover, None);
    let short = short_means_zero(prog, f, main, &notes, &zero_exits);
    forward(prog, f, main, has_stack, mover, Some(&short)).0
}

/// Forward pass over the function's blocks in instruction order. With `short`, an LD_ABS that
/// needs a check demands `short[pc]` bytes instead of its own need. Returns the notes and,
/// per pc, whether it is an `exit` where r0 is 0 on every path.
fn forward(
    prog: &Program,
    f: &Func,
    main: bool,
    has_stack: bool,
    mover: Mover,
    short: Option<&HashMap<usize, u64>>,
) -> (HashMap<usize, Note>, HashSet<usize>) {
    let insns = &prog.insns;
    let mut notes = HashMap::new();
    let mut zero_exits = HashSet::new();
    let back_target = back_targets(insns, f);
    let mut pending: BTreeMap<usize, State> = BTreeMap::new();
    pending.insert(f.entry, State::entry(has_stack));
    let leaders: Vec<usize> = f.leaders.iter().copied().collect();
    for (bi, &leader) in leaders.iter().enumerate() {
        let state = if back_target.contains(&leader) {
            // Facts from the loop body are not known yet: start from nothing.
            Some(State::entry(has_stack))
        } else {
            pending.remove(&leader)
        };
        let Some(mut state) = state else { continue };
        let end = leaders.get(bi + 1).copied().unwrap_or(insns.len());
        let mut fell_through = true;
        let mut last = leader;
        for &pc in f.block(leader, end) {
            last = pc;
            let insn = &insns[pc];
            if insn.is_exit() {
                if state.regs[0] == Val::Const(0) {
                    zero_exits.insert(pc);
                }
                fell_through = false;
                break;
            }
            if insn.is_jump() {
                let t = (pc as i64 + 1 + insn.jump_offset()) as usize;
                let (taken, not_taken) = refine(insn, &state);
                if t > pc {
                    merge(&mut pending, t, taken);
                }
                if insn.code() != JMP_JA {
                    merge(&mut pending, pc + 1, not_taken);
                }
                fell_through = false;
                break;
            }
            let demand = short.and_then(|z| z.get(&pc)).copied().unwrap_or(0);
            let note = step(insn, pc, insns, &mut state, main, demand);
            if mover.moves(insn) {
                state.moved();
            }
            if note != Note::None {
                notes.insert(pc, note);
            }
        }
        if fell_through {
            // The block runs into the next leader.
            let n = last + width(&insns[last]);
            if n < insns.len() && !back_target.contains(&n) {
                merge(&mut pending, n, state);
            }
        }
    }
    (notes, zero_exits)
}

fn back_targets(insns: &[Insn], f: &Func) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    for &pc in &f.pcs {
        if insns[pc].is_jump() {
            let t = (pc as i64 + 1 + insns[pc].jump_offset()) as usize;
            if t <= pc {
                out.insert(t);
            }
        }
    }
    out
}

fn merge(pending: &mut BTreeMap<usize, State>, at: usize, state: State) {
    match pending.get_mut(&at) {
        Some(s) => s.meet(&state),
        None => {
            pending.insert(at, state);
        }
    }
}

/// Backward pass: `z[pc]` is a packet length such that any packet shorter than it makes the run
/// from `pc` end with r0 = 0 and no effect anyone can observe (no fault, no packet store, no
/// helper call). A check for `z[pc]` bytes at `pc` may therefore return 0 early without changing
/// any result, and one check then covers every packet load on the paths below it: e.g. after
/// `ldh [12]; jeq #0x800, L, reject`, the `ldb [23]` at L lets the first load check 24 bytes.
/// Code reached only through a back edge counts as 0 (unknown).
fn short_means_zero(
    prog: &Program,
    f: &Func,
    main: bool,
    notes: &HashMap<usize, Note>,
    zero_exits: &HashSet<usize>,
) -> HashMap<usize, u64> {
    let insns = &prog.insns;
    let mut z: HashMap<usize, u64> = HashMap::with_capacity(f.pcs.len());
    let get = |z: &HashMap<usize, u64>, pc: usize| z.get(&pc).copied().unwrap_or(0);
    let at = |z: &HashMap<usize, u64>, from: usize, to: usize| if to > from { get(z, to) } else { 0 };
    let note = |pc: usize| notes.get(&pc).copied().unwrap_or(Note::None);
    for &pc in f.pcs.iter().rev() {
        let insn = &insns[pc];
        let next = pc + width(insn);
        let after = |z: &HashMap<usize, u64>| get(z, next);
        let value = match insn.class() {
            // Only the entry's exit ends the run; r0 = 0 there whatever the length.
            _ if insn.is_exit() && main && zero_exits.contains(&pc) => u64::MAX,
            _ if insn.is_exit() => 0,
            _ if insn.is_jump() => {
                let t = (pc as i64 + 1 + insn.jump_offset()) as usize;
                if insn.code() == JMP_JA { at(&z, pc, t) } else { at(&z, pc, t).min(after(&z)) }
            }
            CLASS_ALU | CLASS_ALU64 => after(&z),
            CLASS_LD => match insn.mode() {
                MODE_ABS | MODE_IND => abs_need(insn).max(after(&z)),
                _ => after(&z),
            },
            CLASS_LDX if insn.mode() == MODE_CTX || matches!(note(pc), Note::Proven | Note::Stack) => after(&z),
            // A store into a frame is invisible once the run ends; a packet store is not.
            CLASS_ST | CLASS_STX if insn.mode() == MODE_MEM && note(pc) == Note::Stack => after(&z),
            _ => 0,
        };
        z.insert(pc, value);
    }
    z
}

/// Applies `insn` to `state`, returning its note. An LD_ABS that needs a check demands at
/// least `demand` bytes (see `short_means_zero`).
fn step(insn: &Insn, pc: usize, insns: &[Insn], state: &mut State, main: bool, demand: u64) -> Note {
    let dst = insn.dst as usize;
    let mut note = Note::None;
    match insn.class() {
        CLASS_ALU64 => {
            let src_val = if insn.source() == SRC_X { state.regs[insn.src as usize] } else { Val::Const(insn.imm as i64 as u64) };
            let cur = state.regs[dst];
            state.regs[dst] = match (insn.code(), cur, src_val) {
                (ALU_MOV, _, v) if insn.off == 0 => v,
                (ALU_ADD, a, Val::Const(k)) => a.add(k as i64),
                (ALU_ADD, Val::Const(k), b) => b.add(k as i64),
                (ALU_SUB, a, Val::Const(k)) => match a {
                    Val::Const(c) => Val::Const(c.wrapping_sub(k)),
                    a => (k as i64).checked_neg().map_or(Val::Unknown, |n| a.add(n)),
                },
                _ => Val::Unknown,
            };
        }
        CLASS_ALU => {
            state.regs[dst] = match insn.code() {
                ALU_MOV if insn.source() == SRC_K && insn.off == 0 => Val::Const(insn.imm as u32 as u64),
                _ => Val::Unknown,
            };
        }
        CLASS_LD => match insn.mode() {
            MODE_IMM => {
                state.regs[dst] =
                    if insn.src == 0 { Val::Const(lddw_imm(insns, pc)) } else { Val::Unknown };
            }
            MODE_ABS => {
                let need = abs_need(insn);
                if state.proven >= need {
                    note = Note::Proven;
                } else if state.moved {
                    note = Note::PacketCheck(need.max(demand));
                } else {
                    let check = need.max(demand);
                    note = Note::PacketCheck(check);
                    state.proven = check;
                }
                state.regs[0] = Val::Unknown;
            }
            _ => {
                // LD_IND: the offset is never below `imm as u32`, so a load that succeeded
                // proves the packet holds that many bytes plus the size.
                if !state.moved {
                    state.proven = state.proven.max(abs_need(insn));
                }
                state.regs[0] = Val::Unknown;
            }
        },
        CLASS_LDX => {
            if insn.mode() == MODE_CTX {
                state.regs[dst] = match CtxField::from_index(insn.off) {
                    Some(CtxField::Data | CtxField::DataMeta) => Val::Packet(0),
                    Some(CtxField::DataEnd) => Val::PacketEnd(0),
                    _ => Val::Unknown,
                };
            } else {
                note = classify(state, main, insn.src, insn.off, insn.size_bytes());
                state.regs[dst] = Val::Unknown;
            }
        }
        CLASS_ST | CLASS_STX => {
            note = classify(state, main, insn.dst, insn.off, insn.size_bytes());
            if insn.mode() == MODE_ATOMIC {
                if insn.imm == ATOMIC_CMPXCHG {
                    state.regs[0] = Val::Unknown;
                } else if insn.imm & ATOMIC_FETCH != 0 {
                    state.regs[insn.src as usize] = Val::Unknown;
                }
            }
        }
        CLASS_JMP if insn.is_call() => {
            let clobbered = if is_local_call(insn) { 0..=5 } else { 0..=0 };
            for r in clobbered {
                state.regs[r] = Val::Unknown;
            }
        }
        _ => {}
    }
    note
}

/// States on the taken and fall-through edges of a conditional jump: a comparison of
/// `data + c` against `data_end + d` proves the packet length on one of them.
fn refine(insn: &Insn, state: &State) -> (State, State) {
    let mut taken = state.clone();
    let mut not_taken = state.clone();
    if insn.class() != CLASS_JMP || insn.source() != SRC_X {
        return (taken, not_taken);
    }
    let a = state.regs[insn.dst as usize];
    let b = state.regs[insn.src as usize];
    // Both offsets non-negative: neither side can wrap for any real packet address.
    let (pkt_left, c, d) = match (a, b) {
        (Val::Packet(c), Val::PacketEnd(d)) if c >= 0 && d >= 0 => (true, c, d),
        (Val::PacketEnd(d), Val::Packet(c)) if c >= 0 && d >= 0 => (false, c, d),
        _ => return (taken, not_taken),
    };
    // data + c <= data_end + d  <=>  len >= c - d;  data + c < data_end + d  <=>  len >= c - d + 1.
    let ge = (c - d).max(0) as u64;
    let gt = (c - d + 1).max(0) as u64;
    let (on_taken, on_not_taken) = match (insn.code(), pkt_left) {
        (JMP_JGT, true) => (0, ge),  // taken: data+c > end+d; else data+c <= end+d
        (JMP_JGE, true) => (0, gt),
        (JMP_JLT, true) => (gt, 0),
        (JMP_JLE, true) => (ge, 0),
        (JMP_JGT, false) => (gt, 0), // taken: end+d > data+c
        (JMP_JGE, false) => (ge, 0),
        (JMP_JLT, false) => (0, ge), // not taken: end+d >= data+c
        (JMP_JLE, false) => (0, gt),
        _ => (0, 0),
    };
    taken.proven = taken.proven.max(on_taken);
    not_taken.proven = not_taken.proven.max(on_not_taken);
    (taken, not_taken)
}

#[cfg(test)]
mod verified_tests {
    use super::*;
    use crate::bpf::verifier::{self, VerifyEnv};
    use crate::bpf::{asm, Helpers};

    fn notes(text: &str) -> (Vec<Note>, Vec<Note>) {
        let insns = asm::assemble(text).unwrap();
        let (prog, v) = verifier::load(insns, &Helpers::none(), &VerifyEnv::default()).unwrap();
        let all = |l: Layout| l.funcs.iter().flat_map(|f| f.notes.values().copied().collect::<Vec<_>>()).collect();
        (all(analyze(&prog).unwrap()), all(analyze_verified(&prog, &v).unwrap()))
    }

    #[test]
    fn verified_accesses_lose_their_checks() {
        // A variable header length: the plain analysis cannot follow it, the verifier can.
        let (plain, verified) = notes(
            "r2 = *(u32 *)(r1 + 0)
             r3 = *(u32 *)(r1 + 4)
             r4 = r2
             r4 += 34
             if r4 > r3 goto drop
             r5 = *(u8 *)(r2 + 14)
             r5 &= 15
             r5 <<= 2
             r6 = r2
             r6 += 14
             r6 += r5
             r7 = r6
             r7 += 4
             if r7 > r3 goto drop
             r0 = *(u16 *)(r6 + 2)
             r1 = r10
             r1 += -8
             call f
             r0 &= 3
             exit
             drop: r0 = 1
             exit
             f: *(u64 *)(r1 + 0) = 7
             r0 = *(u64 *)(r1 + 0)
             exit",
        );
        assert!(plain.contains(&Note::Checked), "{plain:?}");
        assert!(!verified.contains(&Note::Checked), "{verified:?}");
    }
}
