//! Partial evaluation of packet filters under known header fields, so that a pipeline of many
//! filters tests each shared header field once instead of once per filter.
//!
//! tcpdump-style filters all begin alike: load the ethertype, compare it with constants, then
//! (for IP) load the protocol and compare again. Ten of them run one after another test the
//! same fields ten times, through ten data-dependent branches that mispredict on mixed
//! traffic. A fused pipeline (`jit::fuse`) instead dispatches once on the fields its filters
//! test ([`tree`]), and in each arm runs the filters [`specialize`]d to what the arm knows: the
//! load of a known field becomes its constant, comparisons it decides become plain jumps or
//! vanish, and code no longer reachable goes. A filter whose result an arm decides (`arp` in
//! the IPv4 arm) becomes that constant ([`Residual::Const`]), for which the fuser emits no
//! code beyond the stage's rule: nothing at all for a filter that cannot match.
//!
//! What an arm knows is a set of [`Fact`]s about `LD_ABS` loads, the only packet access whose
//! address is a constant. Only *pure* filters are specialized: no calls, no stores other than
//! to their own stack, no map references, no back-edges. Every classic translation is pure;
//! anything else is left as it is. A residual program runs exactly like its original on every
//! packet satisfying the facts: it is the original with paths those packets cannot take
//! removed, so faults, stack use and results are those of the original (a fault names the
//! residual's instruction index, which is what a fused pipeline never reports anyway).
//!
//! This module owns no code generation: it maps programs to programs, so it is tested with
//! the interpreter against the originals.

use std::collections::HashMap;
use std::rc::Rc;

use super::check::{self, CheckError};
use super::insn::*;
use super::{ProgKind, Program};

/// Something known about every packet reaching a point of the pipeline, stated in terms of the
/// `LD_ABS` load of `size` (1, 2 or 4) bytes at `off`: network byte order, zero-extended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Fact {
    /// The load is in range and yields `value`.
    Is { off: u32, size: u8, value: u32 },
    /// The load is in range and yields none of `values`.
    NotIn { off: u32, size: u8, values: Vec<u32> },
    /// The packet has fewer than `len` bytes.
    Shorter { len: u64 },
}

/// What a program becomes under facts.
#[derive(Debug, Clone)]
pub enum Residual {
    /// Unchanged (not pure, or the facts do not touch it).
    Original,
    /// It ends with this r0 on every packet satisfying the facts, without faulting.
    Const(u64),
    /// Shared by every leaf where the program becomes the same residual.
    Program(Rc<Program>),
}

/// What a dispatch on `LD_ABS` fields runs: at a leaf, the stages, each specialized to the
/// facts of the path to the leaf.
#[derive(Debug)]
pub enum Tree<L = Vec<Residual>> {
    Leaf(L),
    /// Load the field; run the arm of its value, or `other` for any other value, or `short`
    /// when the packet is too short to hold the field.
    Split { off: u32, size: u8, arms: Vec<(u32, Tree<L>)>, other: Box<Tree<L>>, short: Box<Tree<L>> },
}

impl<L> Tree<L> {
    /// The same tree with every leaf mapped by `f`.
    pub fn try_map<M, E>(self, f: &mut impl FnMut(L) -> Result<M, E>) -> Result<Tree<M>, E> {
        Ok(match self {
            Tree::Leaf(l) => Tree::Leaf(f(l)?),
            Tree::Split { off, size, arms, other, short } => Tree::Split {
                off,
                size,
                arms: arms.into_iter().map(|(v, t)| Ok((v, t.try_map(f)?))).collect::<Result<_, E>>()?,
                other: Box::new(other.try_map(f)?),
                short: Box::new(short.try_map(f)?),
            },
        })
    }

    /// The leaf `packet` reaches: the dispatch a fuser must build, for tests and references.
    pub fn route(&self, packet: &[u8]) -> &L {
        match self {
            Tree::Leaf(l) => l,
            Tree::Split { off, size, arms, other, short } => {
                let (start, end) = (*off as usize, *off as usize + *size as usize);
                let Some(bytes) = packet.get(start..end) else {
                    return short.route(packet);
                };
                let value = bytes.iter().fold(0u32, |v, &b| v << 8 | b as u32);
                arms.iter().find(|(v, _)| *v == value).map_or_else(|| other.route(packet), |(_, t)| t.route(packet))
            }
        }
    }

    /// Leaves, in the order of the tree.
    pub fn leaves(&self) -> Vec<&L> {
        match self {
            Tree::Leaf(l) => vec![l],
            Tree::Split { arms, other, short, .. } => {
                let mut all: Vec<&L> = arms.iter().flat_map(|(_, t)| t.leaves()).collect();
                all.extend(other.leaves());
                all.extend(short.leaves());
                all
            }
        }
    }
}

/// Levels of dispatch at most (ethertype, then the IP protocol, then one more field).
const MAX_DEPTH: usize = 3;
/// Values of one field an arm is made for at most; rarer fields stay in the filters.
const MAX_ARMS: usize = 16;

/// What compiling a program costs beside its instructions, in instructions: a fused stage's
/// blocks for its outcomes and counters. A constant stage costs nothing (no code is run).
const STAGE_COST: usize = 8;

/// The dispatch for running `programs` in order on one packet, under a size budget: the
/// leaves together cost at most `budget` times `programs` ([`cost`]: the fuser's compile time
/// grows with it). Only the leading pure programs take part — a later one might follow a
/// stage that rewrote the packet — so the leaves are as long as that prefix. A field is
/// dispatched on only when at least two programs test it.
pub fn tree(programs: &[&Program], budget: usize) -> Tree {
    let mut memo = Memo::new(programs);
    // The root's outcomes, up to the first program that is not pure.
    let mut root: Vec<Rc<Outcome>> = Vec::new();
    for (i, p) in programs.iter().enumerate() {
        let o = memo.get(i, &[]);
        if p.kind != ProgKind::Xdp || !o.pure {
            break;
        }
        root.push(o);
    }
    memo.programs = &programs[..root.len()];
    let grown = grow(&mut memo, &mut Vec::new(), root, MAX_DEPTH);
    let cap = grown.leaf_cost.saturating_mul(budget);
    // The deepest tree within the budget (each level multiplies the code by the arms it adds).
    let depth = (0..=MAX_DEPTH).rev().find(|&d| grown.cost(d) <= cap).unwrap_or(0);
    grown.cut(depth)
}

/// What the leaves of `t` cost together, for stages `programs`: instructions plus
/// [`STAGE_COST`] per stage that runs code.
pub fn cost(t: &Tree, programs: &[&Program]) -> usize {
    t.leaves().iter().map(|l| l.iter().zip(programs).map(|(r, p)| r.cost(p)).sum::<usize>()).sum()
}

impl Residual {
    fn cost(&self, original: &Program) -> usize {
        match self {
            Residual::Original => STAGE_COST + original.insns.len(),
            Residual::Const(_) => 0,
            Residual::Program(r) => STAGE_COST + r.insns.len(),
        }
    }
}

/// A dispatch grown to the maximum depth, every node with the leaf it would be if cut there.
struct Grown {
    leaf: Vec<Residual>,
    leaf_cost: usize,
    split: Option<GrownSplit>,
}

struct GrownSplit {
    off: u32,
    size: u8,
    arms: Vec<(u32, Grown)>,
    other: Box<Grown>,
    short: Box<Grown>,
}

impl Grown {
    /// Cost of the tree cut at `depth` levels of dispatch.
    fn cost(&self, depth: usize) -> usize {
        match &self.split {
            Some(s) if depth > 0 => {
                s.arms.iter().map(|(_, a)| a.cost(depth - 1)).sum::<usize>() + s.other.cost(depth - 1) + s.short.leaf_cost
            }
            _ => self.leaf_cost,
        }
    }

    fn cut(self, depth: usize) -> Tree {
        match self.split {
            Some(s) if depth > 0 => Tree::Split {
                off: s.off,
                size: s.size,
                arms: s.arms.into_iter().map(|(v, a)| (v, a.cut(depth - 1))).collect(),
                other: Box::new(s.other.cut(depth - 1)),
                short: Box::new(Tree::Leaf(s.short.leaf)),
            },
            _ => Tree::Leaf(self.leaf),
        }
    }
}

/// The node for `facts`, whose programs' outcomes are `here`, grown `depth` more levels.
fn grow(memo: &mut Memo<'_>, facts: &mut Vec<Fact>, here: Vec<Rc<Outcome>>, depth: usize) -> Grown {
    let leaf: Vec<Residual> = here.iter().map(|o| o.residual.clone()).collect();
    let leaf_cost = leaf.iter().zip(memo.programs).map(|(r, p)| r.cost(p)).sum();
    let field = (depth > 0).then(|| pick_field(&here, facts)).flatten();
    let split = field.map(|(off, size, values)| {
        // A child's outcomes: the parent's, except for programs its new fact concerns.
        let child = |memo: &mut Memo<'_>, facts: &mut Vec<Fact>, fact: Fact, depth: usize| {
            let outcomes = here
                .iter()
                .enumerate()
                .map(|(i, o)| if memo.concerns(i, &fact) { None } else { Some(Rc::clone(o)) })
                .collect::<Vec<_>>();
            facts.push(fact);
            let outcomes = outcomes.into_iter().enumerate().map(|(i, o)| o.unwrap_or_else(|| memo.get(i, facts))).collect();
            let grown = grow(memo, facts, outcomes, depth);
            facts.pop();
            grown
        };
        let mut arms = Vec::with_capacity(values.len());
        for &value in &values {
            arms.push((value, child(memo, facts, Fact::Is { off, size, value }, depth - 1)));
        }
        let other = child(memo, facts, Fact::NotIn { off, size, values }, depth - 1);
        let short = child(memo, facts, Fact::Shorter { len: off as u64 + size as u64 }, 0);
        GrownSplit { off, size, arms, other: Box::new(other), short: Box::new(short) }
    });
    Grown { leaf, leaf_cost, split }
}

/// A program under some facts: its residual, and the undecided tests of fields with constants
/// (`(off, size, constant)`), which choose the next field to dispatch on.
struct Outcome {
    /// Whether the program is pure (else it is left as it is).
    pure: bool,
    residual: Residual,
    compares: Vec<(u32, u8, u32)>,
}

/// Outcomes by (program, the facts that concern it), so that growing a dispatch evaluates a
/// program again only where its fields are newly known, and identical programs once.
struct Memo<'p> {
    programs: &'p [&'p Program],
    /// Per program: the first program with the same instructions.
    same_as: Vec<usize>,
    /// Per program: the `LD_ABS` fields it loads.
    fields: Vec<Vec<(u32, u8)>>,
    cache: HashMap<(usize, Vec<Fact>), Rc<Outcome>>,
}

impl<'p> Memo<'p> {
    fn new(programs: &'p [&'p Program]) -> Memo<'p> {
        let mut first: HashMap<&[Insn], usize> = HashMap::new();
        let same_as = programs.iter().enumerate().map(|(i, p)| *first.entry(p.insns.as_slice()).or_insert(i)).collect();
        let fields = programs
            .iter()
            .map(|p| {
                let mut f: Vec<(u32, u8)> = p
                    .insns
                    .iter()
                    .filter(|i| i.class() == CLASS_LD && i.mode() == MODE_ABS)
                    .map(|i| (i.imm as u32, i.size_bytes() as u8))
                    .collect();
                f.sort_unstable();
                f.dedup();
                f
            })
            .collect();
        Memo { programs, same_as, fields, cache: HashMap::new() }
    }

    /// Whether `fact` can change what program `i` becomes.
    fn concerns(&self, i: usize, fact: &Fact) -> bool {
        let fields = &self.fields[self.same_as[i]];
        match fact {
            Fact::Is { off, size, .. } | Fact::NotIn { off, size, .. } => fields.contains(&(*off, *size)),
            Fact::Shorter { len } => fields.iter().any(|&(o, s)| o as u64 + s as u64 >= *len),
        }
    }

    fn get(&mut self, i: usize, facts: &[Fact]) -> Rc<Outcome> {
        let relevant: Vec<Fact> = facts.iter().filter(|f| self.concerns(i, f)).cloned().collect();
        let i = self.same_as[i];
        let program = self.programs[i];
        Rc::clone(self.cache.entry((i, relevant)).or_insert_with_key(|(_, facts)| {
            let Some(eval) = Eval::run(program, facts) else {
                return Rc::new(Outcome { pure: false, residual: Residual::Original, compares: Vec::new() });
            };
            let residual = eval.residual(program);
            Rc::new(Outcome { pure: true, residual, compares: eval.compares })
        }))
    }
}

/// The field most programs compare with constants (ties: the lowest offset), if at least two
/// do and no fact already speaks of it; with the constants, sorted.
fn pick_field(outcomes: &[Rc<Outcome>], facts: &[Fact]) -> Option<(u32, u8, Vec<u32>)> {
    let known = |off: u32, size: u8| {
        facts.iter().any(|f| match *f {
            Fact::Is { off: o, size: s, .. } | Fact::NotIn { off: o, size: s, .. } => (o, s) == (off, size),
            Fact::Shorter { .. } => false,
        })
    };
    // (off, size) -> (programs testing it, constants).
    let mut fields: Vec<((u32, u8), usize, Vec<u32>)> = Vec::new();
    for o in outcomes {
        let mut seen: Vec<(u32, u8)> = Vec::new();
        for &(off, size, value) in &o.compares {
            if known(off, size) {
                continue;
            }
            let i = match fields.iter().position(|f| f.0 == (off, size)) {
                Some(i) => i,
                None => {
                    fields.push(((off, size), 0, Vec::new()));
                    fields.len() - 1
                }
            };
            if !seen.contains(&(off, size)) {
                seen.push((off, size));
                fields[i].1 += 1;
            }
            if !fields[i].2.contains(&value) {
                fields[i].2.push(value);
            }
        }
    }
    let ((off, size), _, mut values) = fields
        .into_iter()
        .filter(|f| f.1 >= 2 && f.2.len() <= MAX_ARMS)
        .min_by_key(|f| (std::cmp::Reverse(f.1), f.0))?;
    values.sort_unstable();
    Some((off, size, values))
}

/// Whether [`specialize`] may rewrite `program`: see the module documentation.
pub fn is_pure(program: &Program) -> bool {
    program.kind == ProgKind::Xdp && Eval::run(program, &[]).is_some()
}

/// `program` for packets satisfying every fact.
pub fn specialize(program: &Program, facts: &[Fact]) -> Residual {
    match Eval::run(program, facts) {
        Some(eval) => eval.residual(program),
        None => Residual::Original,
    }
}

/// A residual is a subset of a valid program's paths: if validation refuses it, the rewrite
/// has a bug, which tests must see; a release build keeps the original program.
fn residual_invalid(e: CheckError) -> Residual {
    debug_assert!(false, "residual program refused: {e}");
    Residual::Original
}

/// What the abstract run knows of a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Val {
    Unknown,
    Const(u64),
    /// The value of the `LD_ABS` field (off, size), not known.
    Field(u32, u8),
}

type Regs = [Val; NUM_REGS as usize];

fn join(a: &mut Regs, b: &Regs) {
    for (x, y) in a.iter_mut().zip(b) {
        if x != y {
            *x = Val::Unknown;
        }
    }
}

/// What an `LD_ABS` becomes under the facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Keep,
    Const(u32),
    /// Out of range on every packet: the program ends with r0 = 0 there.
    Fails,
}

/// One abstract run of a pure, loop-free program in instruction order (every edge goes
/// forward, so each instruction is reached after all of its predecessors).
struct Eval {
    reached: Vec<bool>,
    /// Per conditional jump: whether the facts decide it (taken or not).
    decided: Vec<Option<bool>>,
    loads: Vec<Load>,
    /// `(off, size, constant)` for every undecided equality test of a field with a constant.
    compares: Vec<(u32, u8, u32)>,
    /// r0 at every way the run can end (a failing packet load ends it with 0).
    results: Vec<Val>,
    /// Some reached instruction may fault (a memory access other than an in-range stack slot).
    may_fault: bool,
}

impl Eval {
    fn run(program: &Program, facts: &[Fact]) -> Option<Eval> {
        let insns = &program.insns;
        let n = insns.len();
        let mut states: Vec<Option<Regs>> = vec![None; n + 1];
        states[0] = Some([Val::Unknown; NUM_REGS as usize]);
        let mut ev = Eval {
            reached: vec![false; n],
            decided: vec![None; n],
            loads: vec![Load::Keep; n],
            compares: Vec::new(),
            results: Vec::new(),
            may_fault: false,
        };
        let flow = |states: &mut Vec<Option<Regs>>, to: usize, regs: &Regs| match &mut states[to] {
            Some(s) => join(s, regs),
            s @ None => *s = Some(*regs),
        };
        let mut pc = 0;
        while pc < n {
            let insn = insns[pc];
            let width = if insn.is_lddw() { 2 } else { 1 };
            let Some(mut regs) = states[pc] else {
                pc += width;
                continue;
            };
            ev.reached[pc] = true;
            let dst = insn.dst as usize;
            match insn.class() {
                CLASS_ALU | CLASS_ALU64 => {
                    let wide = insn.class() == CLASS_ALU64;
                    regs[dst] = match (insn.code(), insn.off, insn.source()) {
                        (ALU_MOV, 0, SRC_K) => Val::Const(if wide { insn.imm as i64 as u64 } else { insn.imm as u32 as u64 }),
                        (ALU_MOV, 0, _) => match regs[insn.src as usize] {
                            Val::Const(c) if !wide => Val::Const(c as u32 as u64),
                            v => v,
                        },
                        _ => Val::Unknown,
                    };
                    flow(&mut states, pc + 1, &regs);
                }
                CLASS_LD if insn.is_lddw() => {
                    if insn.src != 0 {
                        return None;
                    }
                    let value = insn.imm as u32 as u64 | (insns[pc + 1].imm as u32 as u64) << 32;
                    regs[dst] = Val::Const(value);
                    flow(&mut states, pc + 2, &regs);
                }
                CLASS_LD if insn.mode() == MODE_ABS => {
                    let (off, size) = (insn.imm as u32, insn.size_bytes() as u8);
                    ev.loads[pc] = field_load(facts, off, size);
                    match ev.loads[pc] {
                        // The run ends here with r0 = 0: nothing flows on.
                        Load::Fails => ev.results.push(Val::Const(0)),
                        Load::Const(v) => {
                            regs[0] = Val::Const(v as u64);
                            flow(&mut states, pc + 1, &regs);
                        }
                        Load::Keep => {
                            ev.results.push(Val::Const(0));
                            regs[0] = Val::Field(off, size);
                            flow(&mut states, pc + 1, &regs);
                        }
                    }
                }
                CLASS_LD => {
                    ev.results.push(Val::Const(0));
                    regs[0] = Val::Unknown;
                    flow(&mut states, pc + 1, &regs);
                }
                CLASS_LDX => {
                    ev.may_fault |= insn.mode() != MODE_CTX && !on_stack(insn.src, insn.off, insn.size_bytes());
                    regs[dst] = Val::Unknown;
                    flow(&mut states, pc + 1, &regs);
                }
                CLASS_ST | CLASS_STX => {
                    if insn.dst != REG_FP || insn.mode() != MODE_MEM {
                        return None;
                    }
                    ev.may_fault |= !on_stack(insn.dst, insn.off, insn.size_bytes());
                    flow(&mut states, pc + 1, &regs);
                }
                _ => match insn.code() {
                    JMP_CALL => return None,
                    JMP_EXIT => ev.results.push(regs[0]),
                    code => {
                        let target = pc as i64 + 1 + insn.jump_offset();
                        if target <= pc as i64 {
                            return None;
                        }
                        let target = target as usize;
                        if code == JMP_JA {
                            flow(&mut states, target, &regs);
                        } else {
                            let decided = ev.decide(&insn, &regs, facts);
                            ev.decided[pc] = decided;
                            if decided != Some(false) {
                                flow(&mut states, target, &regs);
                            }
                            if decided != Some(true) {
                                flow(&mut states, pc + 1, &regs);
                            }
                        }
                    }
                },
            }
            pc += width;
        }
        Some(ev)
    }

    /// Whether the conditional jump `insn` is taken, if the facts decide it; notes undecided
    /// equality tests of a field with a constant.
    fn decide(&mut self, insn: &Insn, regs: &Regs, facts: &[Fact]) -> Option<bool> {
        let wide = insn.class() == CLASS_JMP;
        let a = regs[insn.dst as usize];
        let b = match insn.source() {
            SRC_K => Val::Const(if wide { insn.imm as i64 as u64 } else { insn.imm as u32 as u64 }),
            _ => regs[insn.src as usize],
        };
        let code = insn.code();
        match (a, b) {
            (Val::Const(x), Val::Const(y)) => Some(holds(code, x, y, wide)),
            (Val::Field(off, size), Val::Const(k)) | (Val::Const(k), Val::Field(off, size)) if matches!(code, JMP_JEQ | JMP_JNE) => {
                let k = if wide { k } else { k as u32 as u64 };
                // A field is below 2^(8 * size): a larger constant never equals it.
                let equal = if k >> (8 * size as u32) != 0 || excluded(facts, off, size, k as u32) {
                    Some(false)
                } else {
                    self.compares.push((off, size, k as u32));
                    None
                };
                equal.map(|e| e == (code == JMP_JEQ))
            }
            _ => None,
        }
    }

    /// The program this run describes: `program` under the run's facts.
    fn residual(&self, program: &Program) -> Residual {
        if let Some(v) = self.constant() {
            return Residual::Const(v);
        }
        if !self.changes() {
            return Residual::Original;
        }
        let Some(insns) = self.rewrite(&program.insns) else {
            return Residual::Original;
        };
        match check::revalidate(insns, program) {
            Ok(p) => Residual::Program(Rc::new(p)),
            Err(e) => residual_invalid(e),
        }
    }

    /// The result of every run, if it is one constant and no run can fault.
    fn constant(&self) -> Option<u64> {
        let Some(&Val::Const(v)) = self.results.first() else {
            return None;
        };
        (!self.may_fault && self.results.iter().all(|r| *r == Val::Const(v))).then_some(v)
    }

    fn changes(&self) -> bool {
        self.reached.iter().any(|r| !r) || self.decided.iter().any(Option::is_some) || self.loads.iter().any(|l| *l != Load::Keep)
    }

    /// The residual program: reached instructions only, decided jumps as `ja` or nothing,
    /// known loads as constants, failing loads as `r0 = 0; exit`. `None` if a jump no longer
    /// fits its offset field (it cannot: the residual is never longer than the original).
    fn rewrite(&self, insns: &[Insn]) -> Option<Vec<Insn>> {
        // Slots each original instruction becomes.
        let emitted = |pc: usize| -> usize {
            if !self.reached[pc] {
                return 0;
            }
            match (self.decided[pc], self.loads[pc]) {
                (Some(false), _) => 0,
                (_, Load::Fails) => 2,
                _ if insns[pc].is_lddw() => 2,
                _ => 1,
            }
        };
        // `at[pc]`: where instruction pc (or, when it emits nothing, what follows it) lands.
        let mut at = Vec::with_capacity(insns.len() + 1);
        let mut next = 0usize;
        for pc in 0..insns.len() {
            at.push(next);
            next += emitted(pc);
        }
        at.push(next);
        let mut out = Vec::with_capacity(next);
        let jump = |from: usize, to: usize| i16::try_from(at[to] as i64 - at[from] as i64 - 1).ok();
        for (pc, insn) in insns.iter().enumerate() {
            if !self.reached[pc] {
                continue;
            }
            let target = || (pc as i64 + 1 + insn.jump_offset()) as usize;
            match (self.decided[pc], self.loads[pc]) {
                (Some(false), _) => {}
                (Some(true), _) => out.push(Insn::new(CLASS_JMP | JMP_JA, 0, 0, jump(pc, target())?, 0)),
                (_, Load::Const(v)) => out.push(Insn::new(CLASS_ALU | ALU_MOV | SRC_K, 0, 0, 0, v as i32)),
                (_, Load::Fails) => {
                    out.push(Insn::new(CLASS_ALU | ALU_MOV | SRC_K, 0, 0, 0, 0));
                    out.push(Insn::new(CLASS_JMP | JMP_EXIT, 0, 0, 0, 0));
                }
                _ if insn.is_lddw() => out.extend_from_slice(&insns[pc..pc + 2]),
                _ if insn.is_jump() && insn.class() == CLASS_JMP32 && insn.code() == JMP_JA => {
                    out.push(Insn::new(CLASS_JMP | JMP_JA, 0, 0, jump(pc, target())?, 0));
                }
                _ if insn.is_jump() => out.push(Insn { off: jump(pc, target())?, ..*insn }),
                _ => out.push(*insn),
            }
        }
        Some(out)
    }
}

/// Whether `reg + off` names `size` bytes inside the stack frame (then the access cannot fault).
fn on_stack(reg: u8, off: i16, size: usize) -> bool {
    reg == REG_FP && (off as i64) >= -(STACK_SIZE as i64) && off as i64 + size as i64 <= 0
}

/// What the `LD_ABS` of (off, size) gives under the facts.
fn field_load(facts: &[Fact], off: u32, size: u8) -> Load {
    let end = off as u64 + size as u64;
    for f in facts {
        match *f {
            Fact::Is { off: o, size: s, value } if (o, s) == (off, size) => return Load::Const(value),
            Fact::Shorter { len } if end >= len => return Load::Fails,
            _ => {}
        }
    }
    Load::Keep
}

fn excluded(facts: &[Fact], off: u32, size: u8, k: u32) -> bool {
    facts.iter().any(|f| matches!(f, Fact::NotIn { off: o, size: s, values } if (*o, *s) == (off, size) && values.contains(&k)))
}

/// The condition of jump `code` on two known operands, as the interpreter evaluates it.
fn holds(code: u8, x: u64, y: u64, wide: bool) -> bool {
    let (x, y, sx, sy) = if wide { (x, y, x as i64, y as i64) } else { (x as u32 as u64, y as u32 as u64, x as i32 as i64, y as i32 as i64) };
    match code {
        JMP_JEQ => x == y,
        JMP_JNE => x != y,
        JMP_JGT => x > y,
        JMP_JGE => x >= y,
        JMP_JLT => x < y,
        JMP_JLE => x <= y,
        JMP_JSET => x & y != 0,
        JMP_JSGT => sx > sy,
        JMP_JSGE => sx >= sy,
        JMP_JSLT => sx < sy,
        // Validation admits no other conditional jump.
        _ => sx <= sy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::interp::Interpreter;
    use crate::bpf::source::{compile_text, Format};
    use crate::bpf::Exec;
    use crate::testbed::corpus;

    fn tcpdump(text: &str) -> Program {
        compile_text(text, Format::Tcpdump).expect("compile").program
    }

    /// Filters beyond `corpus::FILTERS`: IPv6 with ports, lengths, ethertypes, byte tests.
    const MORE: &[&str] = &[
        "ip6 and tcp port 22",
        "vlan and udp",
        "greater 100",
        "ether proto 0x88cc",
        "icmp6",
        "ip host 1.2.3.4 and not port 22",
        "ip6 net fe80::/10",
        "ether host 02:00:00:00:00:01 or rarp",
        "ip[8] < 5 and udp",
        "sctp or (ip6 and udp)",
        "ether[12] = 8 and ip[9] = 17",
    ];

    fn exprs() -> Vec<&'static str> {
        corpus::FILTERS.iter().chain(MORE).copied().collect()
    }

    /// Every stage of every leaf a packet reaches gives what the original gives.
    fn agrees(programs: &[&Program], tree: &Tree, packets: &[Vec<u8>]) {
        for (pi, p) in packets.iter().enumerate() {
            let leaf = tree.route(p);
            for (i, original) in programs.iter().enumerate() {
                let (mut a, mut b) = (p.clone(), p.clone());
                let want = Interpreter::new(original).run_xdp(&mut a, 1, 0);
                let got = match leaf.get(i) {
                    Some(Residual::Program(r)) => Interpreter::new(r).run_xdp(&mut b, 1, 0),
                    Some(Residual::Const(v)) => Ok(*v),
                    _ => Interpreter::new(original).run_xdp(&mut b, 1, 0),
                };
                assert_eq!(got, want, "packet {pi} ({} bytes), stage {i} `{}`", p.len(), exprs().get(i).unwrap_or(&"?"));
            }
        }
    }

    #[test]
    fn residuals_agree_with_their_originals_on_every_leaf() {
        let programs: Vec<Program> = exprs().iter().map(|e| tcpdump(e)).collect();
        let refs: Vec<&Program> = programs.iter().collect();
        let packets = corpus::field_variants(5);
        for budget in [2, 8] {
            let t = tree(&refs, budget);
            agrees(&refs, &t, &packets);
        }
    }

    #[test]
    fn dispatch_is_on_ethertype_then_the_ip_protocol() {
        let programs: Vec<Program> = corpus::FILTERS.iter().map(|e| tcpdump(e)).collect();
        let refs: Vec<&Program> = programs.iter().collect();
        let t = tree(&refs, 4);
        let Tree::Split { off: 12, size: 2, arms, .. } = &t else { panic!("root is not the ethertype: {t:?}") };
        let ip = &arms.iter().find(|(v, _)| *v == 0x0800).expect("an IPv4 arm").1;
        let Tree::Split { off: 23, size: 1, arms: protos, .. } = ip else { panic!("IPv4 does not split on the protocol") };
        assert!([1, 6, 17].iter().all(|p| protos.iter().any(|(v, _)| v == p)), "{:?}", protos.iter().map(|a| a.0).collect::<Vec<_>>());
        // In the IPv4/UDP arm, `arp`, `ip6` and `vlan` are the constant 0.
        let udp = &protos.iter().find(|(v, _)| *v == 17).expect("udp").1;
        let Tree::Leaf(stages) = udp else { panic!("udp arm is not a leaf") };
        for i in [3, 4, 9] {
            assert!(matches!(stages[i], Residual::Const(0)), "`{}`: {:?}", corpus::FILTERS[i], stages[i]);
        }
        let original = cost(&Tree::Leaf(refs.iter().map(|_| Residual::Original).collect()), &refs);
        assert!(cost(&t, &refs) <= 4 * original, "{} > 4 x {original}", cost(&t, &refs));
    }

    #[test]
    fn impure_programs_and_what_follows_them_are_left_alone() {
        let write = compile_text("r2 = *(u32 *)(r1 + 0)\n*(u8 *)(r2 + 20) = 0x5a\nr0 = 2\nexit\n", Format::Asm).unwrap().program;
        let (udp, tcp) = (tcpdump("udp"), tcpdump("tcp"));
        assert!(is_pure(&udp) && !is_pure(&write));
        let t = tree(&[&udp, &write, &tcp, &udp], 4);
        assert!(matches!(t, Tree::Leaf(ref l) if l.len() == 1), "a single pure stage splits nothing: {t:?}");
        let t = tree(&[&udp, &tcp, &write, &tcp], 4);
        assert!(t.leaves().iter().all(|l| l.len() == 2));
        assert!(matches!(t, Tree::Split { off: 12, size: 2, .. }));
        let facts = [Fact::Is { off: 12, size: 2, value: 0x0800 }];
        assert!(matches!(specialize(&write, &facts), Residual::Original));
    }

    #[test]
    fn a_residual_faults_where_its_original_does() {
        // Reads 8 bytes at data + 100 after the ethertype test: faults on short IPv4 packets.
        let text = "r2 = *(u32 *)(r1 + 0)\nr0 = *(u16 *)skb[12]\nif w0 != 0x800 goto +2\nr3 = *(u64 *)(r2 + 100)\nr0 = 1\nexit\n";
        let original = compile_text(text, Format::Asm).unwrap().program;
        let Residual::Program(r) = specialize(&original, &[Fact::Is { off: 12, size: 2, value: 0x0800 }]) else { panic!("not specialized") };
        let mut packet = corpus::udp_64(53);
        let fault = |p: &Program, pkt: &mut [u8]| match Interpreter::new(p).run_xdp(pkt, 0, 0) {
            Err(crate::bpf::Fault::OutOfBounds { size, write, .. }) => (size, write),
            other => panic!("expected a fault, got {other:?}"),
        };
        assert_eq!(fault(&r, &mut packet), fault(&original, &mut packet));
        // The ethertype load is gone, so the fault has another index; and the read can fault,
        // so the stage is not a constant even where its result is always 1.
        assert!(r.insns().len() < original.insns().len());
    }

    #[test]
    fn facts_fold_loads_and_comparisons() {
        let arp = tcpdump("arp");
        let ip = Fact::Is { off: 12, size: 2, value: 0x0800 };
        assert!(matches!(specialize(&arp, std::slice::from_ref(&ip)), Residual::Const(0)), "arp is never IPv4");
        let arp_is = specialize(&arp, &[Fact::Is { off: 12, size: 2, value: 0x0806 }]);
        assert!(matches!(arp_is, Residual::Const(v) if v != 0), "ARP is arp without reading: {arp_is:?}");
        let other = Fact::NotIn { off: 12, size: 2, values: vec![0x0806] };
        assert!(matches!(specialize(&arp, &[other]), Residual::Const(0)));
        // A short packet fails the load.
        assert!(matches!(specialize(&arp, &[Fact::Shorter { len: 14 }]), Residual::Const(0)));
        // Facts about other fields change nothing.
        assert!(matches!(specialize(&arp, &[Fact::Is { off: 23, size: 1, value: 6 }]), Residual::Original));
        // A folded comparison leaves a residual program; its loads of known fields are gone.
        let Residual::Program(r) = specialize(&tcpdump("udp dst port 53"), std::slice::from_ref(&ip)) else { panic!("not a program") };
        assert!(!r.insns().iter().any(|i| i.mode() == MODE_ABS && i.class() == CLASS_LD && i.imm == 12));
        // A stage reading memory other than its stack is never constant: the read may fault.
        let peek = compile_text("r2 = *(u32 *)(r1 + 0)\nr3 = *(u8 *)(r2 + 0)\nr0 = 0\nexit\n", Format::Asm).unwrap().program;
        assert!(matches!(specialize(&peek, &[Fact::Shorter { len: 14 }]), Residual::Original));
    }
}
