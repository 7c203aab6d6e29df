//! Which bytes of the stack area a program can reach ([`stack_reach`]), so that back ends zero
//! only those before a run: the area starts zeroed, so results never depend on an earlier run
//! (of this program or another sharing the area), yet zeroing all 4 KiB costs more than many
//! filters do.
//!
//! Programs that use r10 only as the base of loads and stores (classic translations, most
//! hand-written code) are answered by one linear scan of the offsets. Otherwise a dataflow over
//! the whole program, calls included, follows every value derived from r10 by constant steps:
//! a register or an 8-byte spill slot holds "not a stack address", "r10 of the entry frame +
//! an offset in `[lo, hi]`", or "anything" (r10 after other arithmetic, a partly overwritten
//! spill). Accesses through a stack address reach their bytes; a stack address handed to a
//! helper reaches everything from it up to the top of the area, since a helper may touch any
//! length of stack memory (run time bounds it to the area, not the frame). Using an "anything"
//! value as an address, or storing a stack address where it cannot be followed (the packet, a
//! map, a spill at a variable offset), reaches the whole area.
//!
//! What it relies on: helpers never produce stack addresses (none of the kernel's returns or
//! writes one), and a program does not conjure one from a constant (a guessed absolute address
//! passes the run-time checks, but such a program reads stale bytes, not another's memory). The
//! verifier proves far more for the programs it accepts: see `verifier::Verified::stack_reach`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{AtomicOp, Form, Operand, form};
use crate::bpf::MAX_CALL_DEPTH;
use crate::bpf::insn::*;

/// Which part of the stack area a program can reach, so back ends zero only that part before
/// a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackReach {
    /// No stack at all: r10 is never used and there are no local calls (r10 reads as 0).
    None,
    /// The stack exists; bytes `[top + lo, top + hi)` of the area (`-area <= lo <= hi <= 0`)
    /// are all a run may read before writing, so only they are zeroed. `lo == hi`: nothing.
    Frame { lo: i64, hi: i64 },
    /// Anything in the area: all of it is zeroed.
    Whole,
}

/// Bytes of the stack area (every call frame); offsets are relative to its top.
const AREA: i64 = (MAX_CALL_DEPTH * STACK_SIZE) as i64;

/// Offsets tracked from r10 stay far from overflow; anything beyond is "anything".
const OFFSET_LIMIT: i64 = 1 << 32;

/// Joins at one block start before growing ranges are widened to "anything" (loops that walk
/// the stack), which bounds the dataflow.
const WIDEN_AFTER: u32 = 16;

/// Computes [`StackReach`] for a validated program.
pub fn stack_reach(insns: &[Insn]) -> StackReach {
    let mut direct = Direct::default();
    if direct.scan(insns) {
        return direct.result();
    }
    Flow::new(insns).run()
}

/// The linear scan: r10 used only as the base of accesses, no local calls.
#[derive(Default)]
struct Direct {
    /// Hull of the accessed offsets, if any.
    hull: Option<(i64, i64)>,
}

impl Direct {
    /// Collects the accesses; false if the program needs the dataflow.
    fn scan(&mut self, insns: &[Insn]) -> bool {
        for (_, i, f) in slots(insns) {
            let base_size = match f {
                Form::Ldx { size, .. } => (i.src == REG_FP).then_some(size),
                Form::St { size } | Form::Stx { size } => (i.dst == REG_FP).then_some(size),
                Form::Atomic { wide, .. } => (i.dst == REG_FP).then_some(if wide { 8 } else { 4 }),
                _ => None,
            };
            let other_use = match f {
                Form::Alu { src: Operand::Reg, .. } => i.src == REG_FP,
                Form::Stx { .. } | Form::Atomic { .. } => i.src == REG_FP,
                Form::Callx => i.dst == REG_FP,
                Form::CallLocal => true,
                _ => false,
            };
            if other_use {
                return false;
            }
            if let Some(size) = base_size {
                let (lo, hi) = (i.off as i64, i.off as i64 + size as i64);
                self.hull = Some(self.hull.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
            }
        }
        true
    }

    fn result(&self) -> StackReach {
        match self.hull.map(|(lo, hi)| (lo.max(-AREA), hi.min(0))) {
            Some((lo, hi)) if lo < hi => StackReach::Frame { lo, hi },
            _ => StackReach::None,
        }
    }
}

/// Instructions with their forms (second `lddw` slots and undecodable slots skipped).
fn slots(insns: &[Insn]) -> impl Iterator<Item = (usize, Insn, Form)> + '_ {
    let mut pc = 0;
    std::iter::from_fn(move || {
        while pc < insns.len() {
            let (at, i) = (pc, insns[pc]);
            let f = form(&i);
            pc += if f == Ok(Form::Lddw) { 2 } else { 1 };
            if let Ok(f) = f {
                return Some((at, i, f));
            }
        }
        None
    })
}

/// What a register or spill slot may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Val {
    /// Never a stack address (scalars, packet, context and map pointers).
    Other,
    /// The area's top plus an offset in `[lo, hi]` (entry frame: r10 = top).
    Stack { lo: i64, hi: i64 },
    /// Possibly a stack address at an unknown offset.
    Any,
}

impl Val {
    fn join(self, o: Val) -> Val {
        match (self, o) {
            (Val::Any, _) | (_, Val::Any) => Val::Any,
            (Val::Other, v) | (v, Val::Other) => v,
            (Val::Stack { lo: a, hi: b }, Val::Stack { lo: c, hi: d }) => Val::Stack { lo: a.min(c), hi: b.max(d) },
        }
    }

    fn shift(self, by: i64) -> Val {
        match self {
            Val::Stack { lo, hi } => {
                let (lo, hi) = (lo + by, hi + by);
                if lo.abs() > OFFSET_LIMIT || hi.abs() > OFFSET_LIMIT { Val::Any } else { Val::Stack { lo, hi } }
            }
            v => v,
        }
    }

    /// The value of arithmetic other than adding a constant, on operands `self` and `o`.
    fn mix(self, o: Val) -> Val {
        if self == Val::Other && o == Val::Other { Val::Other } else { Val::Any }
    }

    fn is_other(self) -> bool {
        self == Val::Other
    }
}

/// The abstract state at one point: registers and the spill slots that may hold stack
/// addresses (8 bytes at each key; a slot not listed holds none).
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    regs: [Val; NUM_REGS as usize],
    slots: BTreeMap<i64, Val>,
}

impl State {
    fn entry() -> State {
        let mut regs = [Val::Other; NUM_REGS as usize];
        regs[REG_FP as usize] = Val::Stack { lo: 0, hi: 0 };
        State { regs, slots: BTreeMap::new() }
    }

    /// Joins `o` in; with `widen`, ranges that grew become "anything". Returns whether this
    /// state changed.
    fn join(&mut self, o: &State, widen: bool) -> bool {
        let grow = |old: Val, new: Val| {
            let joined = old.join(new);
            if widen && joined != old && matches!(joined, Val::Stack { .. }) { Val::Any } else { joined }
        };
        let mut changed = false;
        for (a, &b) in self.regs.iter_mut().zip(&o.regs) {
            let j = grow(*a, b);
            changed |= j != *a;
            *a = j;
        }
        for (&k, &v) in &o.slots {
            let old = self.slots.get(&k).copied().unwrap_or(Val::Other);
            let j = grow(old, v);
            if j != old {
                self.slots.insert(k, j);
                changed = true;
            }
        }
        changed
    }

    /// Slots whose 8 bytes overlap `[lo, hi)`.
    fn overlapping(&self, lo: i64, hi: i64) -> Vec<i64> {
        self.slots.range(lo.saturating_sub(7)..hi).map(|(&k, _)| k).filter(|&k| k + 8 > lo).collect()
    }

    /// Bytes `[lo, hi)` get something other than a whole tracked stack address: the slots
    /// they touch may now hold a mangled one.
    fn clobber(&mut self, lo: i64, hi: i64) {
        for k in self.overlapping(lo, hi) {
            self.slots.insert(k, Val::Any);
        }
    }
}

/// Ends the analysis: the whole area is reachable.
struct WholeArea;

/// The whole-program dataflow.
struct Flow<'a> {
    insns: &'a [Insn],
    /// First instruction of each function, ascending (0 first).
    starts: Vec<usize>,
    /// States at block starts not yet final.
    at: HashMap<usize, State>,
    joins: HashMap<usize, u32>,
    work: BTreeSet<usize>,
    /// Block starts: jump targets and what follows a jump, call or exit.
    leaders: BTreeSet<usize>,
    /// Per local-call instruction: the caller's state there (for the return).
    call_sites: HashMap<usize, State>,
    /// Per function index: the join of the states at its exits.
    exits: HashMap<usize, State>,
    /// Hull of the reached offsets.
    hull: Option<(i64, i64)>,
    has_calls: bool,
}

impl<'a> Flow<'a> {
    fn new(insns: &'a [Insn]) -> Self {
        let mut starts = vec![0];
        let mut leaders = BTreeSet::from([0]);
        let mut has_calls = false;
        for (pc, i, f) in slots(insns) {
            let next = pc + if f == Form::Lddw { 2 } else { 1 };
            match f {
                Form::CallLocal => {
                    has_calls = true;
                    let t = (pc as i64 + 1 + i.imm as i64) as usize;
                    starts.push(t);
                    leaders.extend([t, next]);
                }
                Form::Ja | Form::Ja32 | Form::Jump { .. } => {
                    leaders.extend([(pc as i64 + 1 + i.jump_offset()) as usize, next]);
                }
                Form::Exit => {
                    leaders.insert(next);
                }
                _ => {}
            }
        }
        starts.sort_unstable();
        starts.dedup();
        Flow {
            insns,
            starts,
            at: HashMap::new(),
            joins: HashMap::new(),
            work: BTreeSet::new(),
            leaders,
            call_sites: HashMap::new(),
            exits: HashMap::new(),
            hull: None,
            has_calls,
        }
    }

    fn run(mut self) -> StackReach {
        self.at.insert(0, State::entry());
        self.work.insert(0);
        // Each block start is joined into at most a bounded number of times before widening
        // makes its state final, so this ends; the budget is a second guard.
        let mut budget = 64usize.saturating_mul(self.insns.len()).saturating_add(100_000);
        while let Some(start) = self.work.pop_first() {
            let Some(state) = self.at.get(&start).cloned() else { continue };
            match self.block(start, state, &mut budget) {
                Ok(()) => {}
                Err(WholeArea) => return StackReach::Whole,
            }
        }
        match self.hull.map(|(lo, hi)| (lo.max(-AREA), hi.min(0))) {
            Some((lo, hi)) if lo < hi => StackReach::Frame { lo, hi },
            _ if self.has_calls => StackReach::Frame { lo: 0, hi: 0 },
            _ => StackReach::None,
        }
    }

    fn flow_to(&mut self, pc: usize, st: &State) {
        if pc >= self.insns.len() {
            return;
        }
        let joins = self.joins.entry(pc).or_insert(0);
        *joins += 1;
        let widen = *joins > WIDEN_AFTER;
        let changed = match self.at.get_mut(&pc) {
            Some(old) => old.join(st, widen),
            None => {
                self.at.insert(pc, st.clone());
                true
            }
        };
        if changed {
            self.work.insert(pc);
        }
    }

    fn function_of(&self, pc: usize) -> usize {
        self.starts.partition_point(|&s| s <= pc) - 1
    }

    /// Runs the block at `start` and passes its end state on.
    fn block(&mut self, start: usize, mut st: State, budget: &mut usize) -> Result<(), WholeArea> {
        let mut pc = start;
        loop {
            *budget = budget.checked_sub(1).ok_or(WholeArea)?;
            let Some(&i) = self.insns.get(pc) else { return Ok(()) };
            let Ok(f) = form(&i) else { return Ok(()) };
            let next = pc + if f == Form::Lddw { 2 } else { 1 };
            match f {
                Form::Ja | Form::Ja32 => {
                    let t = (pc as i64 + 1 + i.jump_offset()) as usize;
                    self.flow_to(t, &st);
                    return Ok(());
                }
                Form::Jump { .. } => {
                    let t = (pc as i64 + 1 + i.jump_offset()) as usize;
                    self.flow_to(t, &st);
                    self.flow_to(next, &st);
                    return Ok(());
                }
                Form::Exit => {
                    let func = self.function_of(pc);
                    if func != 0 {
                        self.returned(func, &st);
                    }
                    return Ok(());
                }
                Form::CallLocal => {
                    let t = (pc as i64 + 1 + i.imm as i64) as usize;
                    self.call(pc, t, next, &st);
                    return Ok(());
                }
                _ => self.step(&i, f, &mut st)?,
            }
            pc = next;
            if self.leaders.contains(&pc) {
                self.flow_to(pc, &st);
                return Ok(());
            }
        }
    }

    /// A local call at `pc` into `target`: the callee's frame is 512 bytes lower; its return
    /// comes back through [`returned`](Self::returned).
    fn call(&mut self, pc: usize, target: usize, next: usize, st: &State) {
        let site = match self.call_sites.get_mut(&pc) {
            Some(s) => {
                s.join(st, false);
                s.clone()
            }
            None => {
                self.call_sites.insert(pc, st.clone());
                st.clone()
            }
        };
        let mut callee = site.clone();
        callee.regs[REG_FP as usize] = callee.regs[REG_FP as usize].shift(-(STACK_SIZE as i64));
        self.flow_to(target, &callee);
        let func = self.function_of(target);
        if let Some(exit) = self.exits.get(&func).cloned() {
            let back = Self::back(&site, &exit);
            self.flow_to(next, &back);
        }
    }

    /// The callee `func` exited with `st`: every call of it continues after the call.
    fn returned(&mut self, func: usize, st: &State) {
        let changed = match self.exits.get_mut(&func) {
            Some(old) => old.join(st, false),
            None => {
                self.exits.insert(func, st.clone());
                true
            }
        };
        if !changed {
            return;
        }
        let Some(exit) = self.exits.get(&func).cloned() else { return };
        let entry = self.starts[func];
        let sites: Vec<(usize, State)> = self
            .call_sites
            .iter()
            .filter(|(pc, _)| {
                let i = self.insns[**pc];
                (**pc as i64 + 1 + i.imm as i64) as usize == entry
            })
            .map(|(pc, s)| (*pc, s.clone()))
            .collect();
        for (pc, site) in sites {
            let back = Self::back(&site, &exit);
            self.flow_to(pc + 1, &back);
        }
    }

    /// The state after a call returns: the callee's registers and memory, with r6-r10
    /// restored to the caller's.
    fn back(site: &State, exit: &State) -> State {
        let mut back = exit.clone();
        back.regs[6..=REG_FP as usize].copy_from_slice(&site.regs[6..=REG_FP as usize]);
        back
    }

    fn reach(&mut self, lo: i64, hi: i64) {
        let (lo, hi) = (lo.max(-AREA), hi.min(0));
        if lo < hi {
            self.hull = Some(self.hull.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
        }
    }

    /// The bytes an access of `size` at `base + off` touches, if they are stack bytes.
    fn access(&mut self, base: Val, off: i16, size: u8) -> Result<Option<(i64, i64, bool)>, WholeArea> {
        match base {
            Val::Other => Ok(None),
            Val::Any => Err(WholeArea),
            Val::Stack { lo, hi } => {
                let (a, b) = (lo + off as i64, hi + off as i64 + size as i64);
                self.reach(a, b);
                Ok(Some((a, b, lo == hi && size == 8)))
            }
        }
    }

    fn step(&mut self, i: &Insn, f: Form, st: &mut State) -> Result<(), WholeArea> {
        let (d, s) = (i.dst as usize, i.src as usize);
        match f {
            Form::Alu { wide, op, src } => {
                let v = if src == Operand::Reg { st.regs[s] } else { Val::Other };
                st.regs[d] = match op {
                    super::AluOp::Mov if wide && i.off == 0 => v,
                    super::AluOp::Mov if src == Operand::Imm => Val::Other,
                    super::AluOp::Add if wide && src == Operand::Imm => st.regs[d].shift(i.imm as i64),
                    super::AluOp::Sub if wide && src == Operand::Imm => st.regs[d].shift(-(i.imm as i64)),
                    super::AluOp::Mov | super::AluOp::MovSx(_) => v.mix(Val::Other),
                    super::AluOp::Neg => st.regs[d].mix(Val::Other),
                    _ => st.regs[d].mix(v),
                };
            }
            Form::End { .. } => st.regs[d] = st.regs[d].mix(Val::Other),
            Form::Lddw | Form::LdCtx(_) => st.regs[d] = Val::Other,
            Form::LdPacket { .. } => st.regs[0] = Val::Other,
            Form::Ldx { size, .. } => {
                st.regs[d] = match self.access(st.regs[s], i.off, size)? {
                    None => Val::Other,
                    Some((a, b, exact)) => {
                        let hit = st.overlapping(a, b);
                        match (exact, hit.as_slice()) {
                            (_, []) => Val::Other,
                            (true, [k]) if *k == a => st.slots[k],
                            _ => Val::Any,
                        }
                    }
                };
            }
            Form::St { size } => self.store(st, d, i.off, size, Val::Other)?,
            Form::Stx { size } => {
                let v = st.regs[s];
                self.store(st, d, i.off, size, v)?;
            }
            Form::Atomic { wide, op } => {
                let size = if wide { 8 } else { 4 };
                if !st.regs[s].is_other() {
                    return Err(WholeArea);
                }
                let fetched = match self.access(st.regs[d], i.off, size)? {
                    None => Val::Other,
                    Some((a, b, _)) => {
                        let hit = !st.overlapping(a, b).is_empty();
                        st.clobber(a, b);
                        if hit { Val::Any } else { Val::Other }
                    }
                };
                if op == AtomicOp::Cmpxchg {
                    st.regs[0] = fetched;
                } else if op.fetches() {
                    st.regs[s] = fetched;
                }
            }
            Form::Call | Form::Callx | Form::CallKfunc => {
                for r in 1..=5 {
                    match st.regs[r] {
                        Val::Other => {}
                        Val::Any => return Err(WholeArea),
                        Val::Stack { lo, .. } => {
                            self.reach(lo, 0);
                            st.clobber(lo, 0);
                        }
                    }
                }
                st.regs[0] = Val::Other;
            }
            Form::Ja | Form::Ja32 | Form::Jump { .. } | Form::CallLocal | Form::Exit => {}
        }
        Ok(())
    }

    /// A store of `v` (`size` bytes) through register `base` at `off`.
    fn store(&mut self, st: &mut State, base: usize, off: i16, size: u8, v: Val) -> Result<(), WholeArea> {
        match self.access(st.regs[base], off, size)? {
            // Into the packet or a map: a stack address stored there cannot be followed.
            None if !v.is_other() => Err(WholeArea),
            None => Ok(()),
            Some((a, b, exact)) => {
                if exact {
                    st.slots.remove(&a);
                }
                st.clobber(a, b);
                match v {
                    Val::Other => {}
                    _ if exact => {
                        st.slots.insert(a, v);
                    }
                    _ => return Err(WholeArea),
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::insn::build::*;

    fn local(imm: i32) -> Insn {
        Insn::new(CLASS_JMP | JMP_CALL, 0, CALL_LOCAL, 0, imm)
    }

    fn frame(lo: i64, hi: i64) -> StackReach {
        StackReach::Frame { lo, hi }
    }

    #[test]
    fn direct_accesses_are_scanned() {
        assert_eq!(stack_reach(&[mov64_imm(0, 0), exit()]), StackReach::None);
        let p = [st(SIZE_W, 10, -64, 0), ldx(SIZE_DW, 0, 10, -8), exit()];
        assert_eq!(stack_reach(&p), frame(-64, 0));
        // Offsets beyond the area are clipped; accesses above the top reach nothing.
        assert_eq!(stack_reach(&[ldx(SIZE_B, 0, 10, 4), exit()]), StackReach::None);
        let p = [ldx(SIZE_DW, 0, 10, -5000), ldx(SIZE_B, 0, 10, -1), exit()];
        assert_eq!(stack_reach(&p), frame(-4096, 0));
        // Comparing r10 reaches nothing.
        assert_eq!(stack_reach(&[jmp_reg(JMP_JEQ, 10, 1, 0), exit()]), StackReach::None);
    }

    #[test]
    fn pointers_from_r10_are_followed() {
        // A map key: only the key's bytes and what a helper may read above them.
        let p = [st(SIZE_W, 10, -4, 7), mov64_reg(2, 10), alu64_imm(ALU_ADD, 2, -4), call_helper(1), exit()];
        assert_eq!(stack_reach(&p), frame(-4, 0));
        let p = [mov64_reg(2, 10), alu64_imm(ALU_SUB, 2, 40), stx(SIZE_DW, 2, 1, 8), ldx(SIZE_B, 0, 2, 0), exit()];
        assert_eq!(stack_reach(&p), frame(-40, -24));
        // Two paths join into a range.
        let p = [
            mov64_reg(3, 10),
            jmp_imm(JMP_JEQ, 1, 0, 2),
            alu64_imm(ALU_ADD, 3, -16),
            ja(1),
            alu64_imm(ALU_ADD, 3, -64),
            ldx(SIZE_DW, 0, 3, 0),
            exit(),
        ];
        assert_eq!(stack_reach(&p), frame(-64, -8));
        // A pointer copied, then overwritten by a scalar, reaches nothing.
        let p = [mov64_reg(1, 10), mov64_imm(1, 5), ldx(SIZE_B, 0, 1, 0), exit()];
        assert_eq!(stack_reach(&p), StackReach::None);
    }

    #[test]
    fn spills_are_followed_and_mangled_ones_reach_everything() {
        let spill = [mov64_reg(1, 10), alu64_imm(ALU_ADD, 1, -100), stx(SIZE_DW, 10, 1, -8)];
        let mut p = spill.to_vec();
        p.extend([ldx(SIZE_DW, 2, 10, -8), ldx(SIZE_W, 0, 2, 0), exit()]);
        assert_eq!(stack_reach(&p), frame(-100, 0));
        // A byte of the spill overwritten: the reloaded address could be anywhere near.
        let mut p = spill.to_vec();
        p.extend([st(SIZE_B, 10, -8, 0), ldx(SIZE_DW, 2, 10, -8), ldx(SIZE_W, 0, 2, 0), exit()]);
        assert_eq!(stack_reach(&p), StackReach::Whole);
        // Half a spill reloaded is not an address we know.
        let mut p = spill.to_vec();
        p.extend([ldx(SIZE_W, 2, 10, -8), ldx(SIZE_W, 0, 2, 0), exit()]);
        assert_eq!(stack_reach(&p), StackReach::Whole);
        // A whole-slot overwrite by a scalar forgets the address: r2 is not one.
        let mut p = spill.to_vec();
        p.extend([st(SIZE_DW, 10, -8, 0), ldx(SIZE_DW, 2, 10, -8), ldx(SIZE_W, 0, 2, 0), exit()]);
        assert_eq!(stack_reach(&p), frame(-8, 0));
    }

    #[test]
    fn untracked_uses_reach_the_whole_area() {
        let whole = [
            vec![mov64_reg(1, 10), alu64_imm(ALU_AND, 1, -8), ldx(SIZE_B, 0, 1, 0), exit()],
            vec![mov64_reg(1, 10), alu64_reg(ALU_ADD, 1, 2), ldx(SIZE_B, 0, 1, 0), exit()],
            vec![mov32_reg(1, 10), ldx(SIZE_B, 0, 1, 0), exit()],
            // Stored into the packet (r1 is not a stack address).
            vec![stx(SIZE_DW, 1, 10, 0), exit()],
            // Handed to an atomic as the value.
            vec![Insn::new(CLASS_STX | MODE_ATOMIC | SIZE_DW, 10, 10, -8, ATOMIC_ADD), exit()],
            // Passed to a helper after arbitrary arithmetic.
            vec![mov64_reg(1, 10), alu64_imm(ALU_MUL, 1, 1), call_helper(1), exit()],
        ];
        for p in whole {
            assert_eq!(stack_reach(&p), StackReach::Whole, "{p:?}");
        }
    }

    #[test]
    fn loops_walking_the_stack_are_widened() {
        // r1 walks down 8 bytes at a time until it meets r2: no bound is known.
        let p = [mov64_reg(1, 10), alu64_imm(ALU_ADD, 1, -8), st(SIZE_DW, 1, 0, 0), jmp_reg(JMP_JNE, 1, 2, -3), exit()];
        assert_eq!(stack_reach(&p), StackReach::Whole);
        // A loop that only re-reads one slot converges.
        let p = [st(SIZE_DW, 10, -8, 0), mov64_reg(1, 10), ldx(SIZE_DW, 0, 1, -8), jmp_imm(JMP_JNE, 0, 0, -2), exit()];
        assert_eq!(stack_reach(&p), frame(-8, 0));
    }

    #[test]
    fn callee_frames_sit_below_their_callers() {
        // main: *(r10-8) = 1; call f; exit.  f: r0 = *(r10-16); exit.
        let p = [st(SIZE_DW, 10, -8, 1), local(1), exit(), ldx(SIZE_DW, 0, 10, -16), exit()];
        assert_eq!(stack_reach(&p), frame(-512 - 16, 0));
        // A caller's pointer passed in r1 and used by the callee, which returns r10 - 4 in
        // r1 (not restored) for the caller to use after the call.
        let p = [
            mov64_reg(1, 10),
            alu64_imm(ALU_ADD, 1, -8),
            local(2),
            ldx(SIZE_W, 0, 1, 0),
            exit(),
            st(SIZE_DW, 1, 0, 3),
            mov64_reg(1, 10),
            alu64_imm(ALU_ADD, 1, -4),
            exit(),
        ];
        assert_eq!(stack_reach(&p), frame(-512 - 4, 0));
        // A call with no stack use still needs the area for its frame.
        assert_eq!(stack_reach(&[local(1), exit(), mov64_imm(0, 1), exit()]), frame(0, 0));
    }
}
