//! The exploration: a depth-first walk of every path with saved states for pruning and loop
//! detection, and the rules for each instruction form except memory accesses (`mem`).

use std::fmt::Write;

use super::cfg::Cfg;
use super::scalar::{self, Scalar};
use super::state::{self, Kind, Reg, State};
use super::{Access, Reason, Region, Verified, VerifyEnv, VerifyError};
use crate::bpf::check::{AluOp, Cond, Form, LddwKind, Operand, form, lddw_kind};
use crate::bpf::ctx::CtxField;
use crate::bpf::disasm;
use crate::bpf::insn::*;
use crate::bpf::{Helpers, MAX_CALL_DEPTH};

/// Saved states per instruction beyond which the oldest are forgotten for comparison (they
/// only cost time; exploration stays sound without them).
const MAX_STATES_PER_INSN: usize = 64;

/// Largest constant or variable offset a pointer may carry (the kernel's `BPF_MAX_VAR_OFF`).
pub(super) const MAX_OFF: i64 = 1 << 29;

struct Checkpoint {
    state: State,
    /// Paths still being explored below this state; 0 = fully explored (safe to prune against).
    branches: u32,
    parent: Option<usize>,
}

struct Work {
    pc: usize,
    st: State,
    cp: Option<usize>,
}

enum Step {
    Next(usize),
    Branch { taken: Option<(usize, State)>, fall: Option<(usize, State)> },
    Done,
}

pub(super) struct Checker<'a> {
    pub(super) insns: &'a [Insn],
    helpers: &'a Helpers,
    pub(super) env: &'a VerifyEnv,
    cfg: Cfg,
    access: Vec<Access>,
    /// A helper was handed a stack pointer it may read through without the checks below
    /// (`trace_printk`'s `%s` arguments): reads of unwritten stack are then possible.
    pub(super) stack_escapes: bool,
    log: Option<String>,
    next_id: u32,
    processed: usize,
    cps: Vec<Checkpoint>,
    visited: Vec<Vec<usize>>,
}

impl<'a> Checker<'a> {
    pub(super) fn new(insns: &'a [Insn], helpers: &'a Helpers, env: &'a VerifyEnv) -> Self {
        Checker {
            insns,
            helpers,
            env,
            cfg: Cfg::build(insns),
            access: vec![Access::None; insns.len()],
            stack_escapes: false,
            log: env.log.then(String::new),
            next_id: 0,
            processed: 0,
            cps: Vec::new(),
            visited: vec![Vec::new(); insns.len()],
        }
    }

    pub(super) fn fresh_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn error(&self, pc: usize, reason: Reason, state: String) -> VerifyError {
        VerifyError::Insn { pc, text: disasm::insn(self.insns, pc), reason: Box::new(reason), state, log: self.log.clone() }
    }

    pub(super) fn run(mut self) -> Result<Verified, VerifyError> {
        if let Some(pc) = self.cfg.first_unreachable(self.insns) {
            return Err(self.error(pc, Reason::Unreachable(pc), String::new()));
        }
        let mut stack = vec![Work { pc: 0, st: State::entry(), cp: None }];
        'paths: while let Some(Work { mut pc, mut st, mut cp }) = stack.pop() {
            if let Some(l) = &mut self.log {
                let _ = writeln!(l, "from path at {pc}: {}", st.summary());
            }
            loop {
                self.processed += 1;
                if self.processed > self.env.max_insns {
                    return Err(VerifyError::TooComplex { limit: self.env.max_insns, pc, log: self.log.clone() });
                }
                if self.cfg.prune[pc] {
                    match self.visit(pc, &st, cp) {
                        Ok(Some(c)) => cp = Some(c),
                        Ok(None) => {
                            if let Some(l) = &mut self.log {
                                let _ = writeln!(l, "{pc}: safe (an explored state includes this one)");
                            }
                            self.path_done(cp);
                            continue 'paths;
                        }
                        Err(reason) => return Err(self.error(pc, reason, st.summary())),
                    }
                }
                let step = match self.step(pc, &mut st) {
                    Ok(s) => s,
                    Err((reason, regs)) => {
                        let state = st.describe(&regs);
                        return Err(self.error(pc, reason, state));
                    }
                };
                if let Some(l) = &mut self.log {
                    let _ = writeln!(l, "{pc}: {} ; {}", disasm::insn(self.insns, pc), st.summary());
                }
                match step {
                    Step::Next(n) => pc = n,
                    Step::Branch { taken, fall } => match (taken, fall) {
                        (Some((t, ts)), Some((f, fs))) => {
                            if let Some(c) = cp {
                                self.cps[c].branches += 1;
                            }
                            stack.push(Work { pc: t, st: ts, cp });
                            pc = f;
                            st = fs;
                        }
                        (Some((n, s)), None) | (None, Some((n, s))) => {
                            pc = n;
                            st = s;
                        }
                        (None, None) => {
                            self.path_done(cp);
                            continue 'paths;
                        }
                    },
                    Step::Done => {
                        self.path_done(cp);
                        continue 'paths;
                    }
                }
            }
        }
        Ok(Verified {
            access: self.access,
            stack_initialised: !self.stack_escapes,
            log: self.log,
            processed: self.processed,
            states: self.cps.len(),
        })
    }

    /// A path ended: the states it passed through lose one open branch each, up the chain
    /// while they become fully explored.
    fn path_done(&mut self, mut cp: Option<usize>) {
        while let Some(c) = cp {
            let b = &mut self.cps[c].branches;
            *b -= 1;
            if *b > 0 {
                break;
            }
            cp = self.cps[c].parent;
        }
    }

    /// Per frame, the registers that matter for comparing states at `pc`: (live, precise).
    fn live(&self, pc: usize, st: &State) -> Vec<(u16, u16)> {
        let n = st.frames.len();
        (0..n)
            .map(|i| {
                let at = if i + 1 == n { pc } else { st.frames[i + 1].callsite + 1 };
                let mut live = self.cfg.live_in.get(at).copied().unwrap_or(u16::MAX);
                let mut precise = self.cfg.precise_in.get(at).copied().unwrap_or(u16::MAX);
                if i + 1 < n {
                    // The return writes r0 and clobbers r1-r5 of the caller.
                    live &= !0x3f;
                    precise &= !0x3f;
                }
                (live | 1 << REG_FP, precise | 1 << REG_FP)
            })
            .collect()
    }

    /// Compares `st` with the states saved at `pc`: `Ok(None)` = prune, `Ok(Some(c))` = saved
    /// as checkpoint `c`, `Err` = an open ancestor repeats unchanged.
    fn visit(&mut self, pc: usize, st: &State, cp: Option<usize>) -> Result<Option<usize>, Reason> {
        let live = self.live(pc, st);
        for &c in &self.visited[pc] {
            let old = &self.cps[c];
            if old.branches == 0 {
                if state::subsumes(&old.state, st, &live) {
                    return Ok(None);
                }
            } else if state::subsumes(&old.state, st, &live) && state::subsumes(st, &old.state, &live) {
                // Open states are exactly the ancestors of this path (depth-first order).
                return Err(Reason::InfiniteLoop(pc));
            }
        }
        let c = self.cps.len();
        self.cps.push(Checkpoint { state: st.clone(), branches: 1, parent: cp });
        let list = &mut self.visited[pc];
        if list.len() >= MAX_STATES_PER_INSN {
            // Forget the oldest finished state, else the oldest open one (a long loop): the
            // state itself stays in the chain for branch counting, it is just not compared.
            let i = list.iter().position(|&o| self.cps[o].branches == 0).unwrap_or(0);
            list.remove(i);
        }
        list.push(c);
        Ok(Some(c))
    }

    pub(super) fn note(&mut self, pc: usize, r: Option<Region>) {
        self.access[pc] = self.access[pc].merge(r);
    }

    /// Executes one instruction on `st`. Errors carry the registers to show.
    fn step(&mut self, pc: usize, st: &mut State) -> Result<Step, (Reason, Vec<u8>)> {
        let insn = self.insns[pc];
        let (d, s) = (insn.dst, insn.src);
        // Validation guarantees a known form at every reachable first slot.
        let Ok(f) = form(&insn) else { return Ok(Step::Done) };
        let init = |st: &State, r: u8| -> Result<Reg, (Reason, Vec<u8>)> {
            let v = *st.reg(r);
            if v.is_init() { Ok(v) } else { Err((Reason::UninitReg(r), vec![r])) }
        };
        match f {
            Form::Alu { wide, op, src } => {
                self.alu(st, insn, wide, op, src).map_err(|r| (r, vec![d, s]))?;
            }
            Form::End { bits, .. } => {
                let v = init(st, d)?;
                if v.kind != Kind::Scalar {
                    return Err((Reason::PointerArith(format!("R{d} byte swap of a {} pointer prohibited", v.kind.name())), vec![d]));
                }
                let r = match v.var.as_const() {
                    Some(c) => Scalar::constant(end_const(f, c)),
                    None => Scalar::loaded(bits / 8, false),
                };
                st.set(d, Reg::scalar(r));
            }
            Form::Lddw => {
                let v = match lddw_kind(self.insns, pc) {
                    Some(LddwKind::Imm(v)) => Reg::scalar(Scalar::constant(v)),
                    Some(LddwKind::Map(m)) => {
                        self.map(m).map_err(|r| (r, vec![]))?;
                        Reg::pointer(Kind::MapPtr { map: m }, 0)
                    }
                    Some(LddwKind::MapValue { map, offset }) => {
                        let shape = self.map(map).map_err(|r| (r, vec![]))?;
                        if !shape.kind.has_values() || offset >= shape.value_size {
                            let msg = format!("map_value[{map}] + {offset}: map {map} ({}) has no such value byte", shape.kind);
                            return Err((Reason::Map(msg), vec![]));
                        }
                        Reg::pointer(Kind::MapValue { map }, offset as i64)
                    }
                    None => return Ok(Step::Done),
                };
                st.set(d, v);
                return Ok(Step::Next(pc + 2));
            }
            Form::LdPacket { size, indirect } => {
                // An out-of-range legacy load ends the run on the spot, which must not leave a
                // reservation open.
                if let Some(&id) = st.refs.first() {
                    return Err((Reason::UnreleasedRef(id), vec![]));
                }
                let need = insn.imm as u32 as u64 + size as u64;
                let proven = if indirect {
                    let v = init(st, s)?;
                    if v.kind != Kind::Scalar {
                        return Err((Reason::PointerArith(format!("R{s} packet offset is a {} pointer", v.kind.name())), vec![s]));
                    }
                    v.var.view32().umax + need <= st.pkt_min as u64
                } else {
                    need <= st.pkt_min as u64
                };
                self.note(pc, proven.then_some(Region::Packet));
                st.set(0, Reg::scalar(Scalar::loaded(size, false)));
            }
            Form::Ldx { size, signed } => {
                let v = self.load(st, pc, s, insn.off, size, signed).map_err(|r| (r, vec![s]))?;
                st.set(d, v);
            }
            Form::LdCtx(field) => {
                let base = init(st, s)?;
                if base.kind != Kind::Ctx || base.off != 0 {
                    let msg = format!("R{s} is {base}, not the ctx pointer, in a load of xdp_md->{}", field.name());
                    return Err((Reason::CtxAccess(msg), vec![s]));
                }
                let v = match field {
                    CtxField::Data | CtxField::DataMeta => Reg::pointer(Kind::Pkt, 0),
                    CtxField::DataEnd => Reg::pointer(Kind::PktEnd, 0),
                    _ => Reg::scalar(Scalar::loaded(4, false)),
                };
                st.set(d, v);
            }
            Form::St { size } => {
                let v = Reg::scalar(Scalar::constant(insn.imm as i64 as u64));
                self.store(st, pc, d, insn.off, size, &v).map_err(|r| (r, vec![d]))?;
            }
            Form::Stx { size } => {
                let v = init(st, s)?;
                self.store(st, pc, d, insn.off, size, &v).map_err(|r| (r, vec![d, s]))?;
            }
            Form::Atomic { wide, op } => {
                self.atomic(st, pc, insn, wide, op).map_err(|r| (r, vec![d, s, 0]))?;
            }
            Form::Ja | Form::Ja32 => return Ok(Step::Next(target(pc, insn.jump_offset()))),
            Form::Jump { wide, cond, src } => {
                let a = init(st, d)?;
                let b = match src {
                    Operand::Reg => init(st, s)?,
                    Operand::Imm if wide => Reg::scalar(Scalar::constant(insn.imm as i64 as u64)),
                    Operand::Imm => Reg::scalar(Scalar::constant(insn.imm as u32 as u64)),
                };
                let t = target(pc, insn.jump_offset());
                let (taken, fall) = self.branch(st, insn, wide, cond, src, &a, &b);
                return Ok(Step::Branch { taken: taken.map(|s| (t, s)), fall: fall.map(|s| (pc + 1, s)) });
            }
            Form::Call => {
                self.call_helper(st, insn.imm as i64)?;
            }
            Form::Callx => {
                let v = init(st, d)?;
                let id = match (v.kind, v.var.as_const()) {
                    (Kind::Scalar, Some(id)) => id as i64,
                    _ => return Err((Reason::Callx(d), vec![d])),
                };
                self.call_helper(st, id)?;
            }
            Form::CallKfunc => return Err((Reason::UnknownHelper(insn.imm as i64), vec![])),
            Form::CallLocal => {
                if st.depth() >= MAX_CALL_DEPTH {
                    return Err((Reason::CallDepth(st.depth() + 1), vec![]));
                }
                let mut frame = state::Frame::new(st.depth() as u8, pc);
                frame.regs[1..6].copy_from_slice(&st.cur().regs[1..6]);
                st.frames.push(frame);
                return Ok(Step::Next(target(pc, insn.imm as i64)));
            }
            Form::Exit => return self.exit(st),
        }
        Ok(Step::Next(pc + 1))
    }

    fn map(&self, m: u32) -> Result<super::MapShape, Reason> {
        self.env.maps.get(m as usize).copied().ok_or_else(|| {
            Reason::Map(format!("map index {m} does not exist (the program has {} maps)", self.env.maps.len()))
        })
    }

    fn exit(&mut self, st: &mut State) -> Result<Step, (Reason, Vec<u8>)> {
        let r0 = *st.reg(0);
        if !r0.is_init() {
            return Err((Reason::UninitReg(0), vec![0]));
        }
        let top = (st.depth() - 1) as u8;
        if st.depth() == 1 {
            if r0.kind != Kind::Scalar {
                return Err((Reason::ReturnPointer, vec![0]));
            }
            if let Some(&id) = st.refs.first() {
                return Err((Reason::UnreleasedRef(id), vec![]));
            }
            return Ok(Step::Done);
        }
        if r0.kind == (Kind::Stack { frame: top }) {
            return Err((Reason::DanglingStack(0), vec![0]));
        }
        let mut dangling = false;
        let frames = st.frames.len();
        for f in &st.frames[..frames - 1] {
            for s in &f.stack {
                if s.spilled().is_some_and(|r| r.kind == Kind::Stack { frame: top }) {
                    dangling = true;
                }
            }
            for r in &f.regs {
                if r.kind == (Kind::Stack { frame: top }) {
                    dangling = true;
                }
            }
        }
        if dangling {
            return Err((
                Reason::PointerSpill("a caller's frame keeps a pointer into the stack of the returning function".into()),
                vec![],
            ));
        }
        let callee = st.frames.pop().expect("depth > 1");
        let caller = st.cur_mut();
        caller.regs[0] = r0;
        for r in 1..=5 {
            caller.regs[r] = Reg::UNINIT;
        }
        Ok(Step::Next(callee.callsite + 1))
    }

    fn alu(&mut self, st: &mut State, insn: Insn, wide: bool, op: AluOp, src: Operand) -> Result<(), Reason> {
        let (d, s) = (insn.dst, insn.src);
        let b = match src {
            Operand::Reg => {
                let v = *st.reg(s);
                if !v.is_init() {
                    return Err(Reason::UninitReg(s));
                }
                v
            }
            Operand::Imm if wide => Reg::scalar(Scalar::constant(insn.imm as i64 as u64)),
            Operand::Imm => Reg::scalar(Scalar::constant(insn.imm as u32 as u64)),
        };
        if op == AluOp::Mov {
            let v = if b.kind == Kind::Scalar {
                let mut v = Reg::scalar(if wide { b.var } else { b.var.view32() });
                if wide && src == Operand::Reg {
                    // Copies of one scalar learn together from later comparisons.
                    let id = if b.id != 0 { b.id } else { self.fresh_id() };
                    v.id = id;
                    let mut orig = b;
                    orig.id = id;
                    st.set(s, orig);
                }
                v
            } else if wide {
                b
            } else {
                // A partial copy of a pointer is just a number.
                Reg::scalar(Scalar::urange(0, u32::MAX as u64))
            };
            st.set(d, v);
            return Ok(());
        }
        if let AluOp::MovSx(_) = op {
            if b.kind != Kind::Scalar {
                return Err(Reason::PointerArith(format!("R{s} sign extension of a {} pointer prohibited", b.kind.name())));
            }
            st.set(d, Reg::scalar(scalar::alu(op, wide, &Scalar::UNKNOWN, &b.var)));
            return Ok(());
        }
        let a = *st.reg(d);
        if !a.is_init() {
            return Err(Reason::UninitReg(d));
        }
        if a.kind == Kind::Scalar && b.kind == Kind::Scalar {
            if self.env.strict_div && matches!(op, AluOp::Div | AluOp::SDiv | AluOp::Mod | AluOp::SMod) {
                let divisor = if wide { b.var } else { b.var.view32() };
                if divisor.umin == 0 {
                    return Err(if src == Operand::Reg { Reason::DivByZero(s) } else { Reason::DivByZeroImm });
                }
            }
            st.set(d, Reg::scalar(scalar::alu(op, wide, &a.var, &b.var)));
            return Ok(());
        }
        let sym = alu_sym(op);
        if !wide {
            return Err(Reason::PointerArith(format!("32-bit pointer arithmetic prohibited (R{d} {sym} {})", operand_name(src, s))));
        }
        let r = match (op, a.kind.is_pointer(), b.kind.is_pointer()) {
            (AluOp::Add, true, false) => self.ptr_add(d, &a, &b.var, false)?,
            (AluOp::Add, false, true) => self.ptr_add(s, &b, &a.var, false)?,
            (AluOp::Sub, true, false) => self.ptr_add(d, &a, &b.var, true)?,
            (AluOp::Sub, true, true) => {
                if a.kind != b.kind && !matches!((a.kind, b.kind), (Kind::Pkt, Kind::PktEnd) | (Kind::PktEnd, Kind::Pkt)) {
                    return Err(Reason::PointerArith(format!(
                        "R{d} pointer -= pointer prohibited between {} and {}",
                        a.kind.name(),
                        b.kind.name()
                    )));
                }
                Reg::unknown()
            }
            (AluOp::Add, true, true) => {
                return Err(Reason::PointerArith(format!("R{d} pointer += pointer prohibited")));
            }
            (_, true, _) => {
                return Err(Reason::PointerArith(format!("R{d} {sym} on a {} pointer prohibited", a.kind.name())));
            }
            _ => {
                return Err(Reason::PointerArith(format!("R{d} {sym} with a {} pointer operand prohibited", b.kind.name())));
            }
        };
        st.set(d, r);
        Ok(())
    }

    /// `p + v` (or `p - v`): the pointer moved by a scalar.
    fn ptr_add(&mut self, r: u8, p: &Reg, v: &Scalar, sub: bool) -> Result<Reg, Reason> {
        let what = match p.kind {
            Kind::Ctx => Some("ctx"),
            Kind::PktEnd => Some("pkt_end"),
            Kind::MapPtr { .. } => Some("map_ptr"),
            Kind::MapValueOrNull { .. } | Kind::RingMemOrNull { .. } => Some("a pointer that may be null (compare it with 0 first)"),
            _ => None,
        };
        if let Some(what) = what {
            return Err(Reason::PointerArith(format!("R{r} pointer arithmetic on {what} prohibited")));
        }
        let mut out = *p;
        if let Some(c) = v.as_const() {
            let c = c as i64;
            let off = if sub { p.off.checked_sub(c) } else { p.off.checked_add(c) };
            match off.filter(|o| o.abs() < MAX_OFF) {
                Some(o) => out.off = o,
                None => {
                    return Err(Reason::PointerArith(format!("R{r} pointer offset {c} out of range (|off| < {MAX_OFF})")));
                }
            }
            return Ok(out);
        }
        let op = if sub { AluOp::Sub } else { AluOp::Add };
        let var = scalar::alu(op, true, &p.var, v);
        if var.smin <= -MAX_OFF || var.smax >= MAX_OFF {
            return Err(Reason::PointerArith(format!(
                "R{r} pointer arithmetic with an unbounded offset ({v}): bound it with a comparison first"
            )));
        }
        out.var = var;
        if p.kind == Kind::Pkt {
            // A new variable part: nothing is proven about it yet.
            out.id = self.fresh_id();
            out.range = 0;
        }
        Ok(out)
    }

    /// The two edges of a conditional jump.
    #[allow(clippy::too_many_arguments)]
    fn branch(
        &mut self,
        st: &State,
        insn: Insn,
        wide: bool,
        cond: Cond,
        src: Operand,
        a: &Reg,
        b: &Reg,
    ) -> (Option<State>, Option<State>) {
        let (d, s) = (insn.dst, insn.src);
        if a.kind == Kind::Scalar && b.kind == Kind::Scalar {
            let (t, f) = scalar::branch(cond, wide, &a.var, &b.var);
            let apply = |edge: Option<(Scalar, Scalar)>| {
                edge.map(|(x, y)| {
                    let mut n = st.clone();
                    narrow(&mut n, d, x);
                    if src == Operand::Reg {
                        narrow(&mut n, s, y);
                    }
                    n
                })
            };
            return (apply(t), apply(f));
        }
        let zero = |r: &Reg| r.kind == Kind::Scalar && r.var.as_const() == Some(0);
        let nullable = |r: &Reg| matches!(r.kind, Kind::MapValueOrNull { .. } | Kind::RingMemOrNull { .. });
        // A null check: `== 0` / `!= 0` against a nullable pointer.
        if wide && matches!(cond, Cond::Eq | Cond::Ne) {
            let (ptr, ok) = if nullable(a) && zero(b) {
                (a, true)
            } else if nullable(b) && zero(a) {
                (b, true)
            } else {
                (a, false)
            };
            if ok {
                let (mut is_null, mut non_null) = (st.clone(), st.clone());
                settle_null(&mut is_null, ptr.id, true);
                settle_null(&mut non_null, ptr.id, false);
                return if cond == Cond::Eq { (Some(is_null), Some(non_null)) } else { (Some(non_null), Some(is_null)) };
            }
            // A pointer that cannot be null compared with 0: the outcome is known.
            let never_null = |r: &Reg| r.kind.is_pointer() && !nullable(r);
            if (never_null(a) && zero(b)) || (never_null(b) && zero(a)) {
                return if cond == Cond::Eq { (None, Some(st.clone())) } else { (Some(st.clone()), None) };
            }
        }
        let (mut t, mut f) = (st.clone(), st.clone());
        if wide && src == Operand::Reg {
            // (packet pointer on the left?, edge where `pkt <= end`/`pkt < end` holds, strict)
            let learn = match (a.kind, b.kind, cond) {
                (Kind::Pkt, Kind::PktEnd, Cond::Gt) => Some((a, false, false)),
                (Kind::Pkt, Kind::PktEnd, Cond::Ge) => Some((a, false, true)),
                (Kind::Pkt, Kind::PktEnd, Cond::Lt) => Some((a, true, true)),
                (Kind::Pkt, Kind::PktEnd, Cond::Le) => Some((a, true, false)),
                (Kind::PktEnd, Kind::Pkt, Cond::Gt) => Some((b, true, true)),
                (Kind::PktEnd, Kind::Pkt, Cond::Ge) => Some((b, true, false)),
                (Kind::PktEnd, Kind::Pkt, Cond::Lt) => Some((b, false, false)),
                (Kind::PktEnd, Kind::Pkt, Cond::Le) => Some((b, false, true)),
                _ => None,
            };
            if let Some((pkt, on_taken, strict)) = learn {
                let edge = if on_taken { &mut t } else { &mut f };
                prove_packet(edge, pkt, strict);
            }
        }
        (Some(t), Some(f))
    }

    fn call_helper(&mut self, st: &mut State, id: i64) -> Result<(), (Reason, Vec<u8>)> {
        // The program's own table decides what runs; the prototype, what is allowed.
        let runs = u64::try_from(id).ok().and_then(|i| self.helpers.get(i)).is_some();
        let Some(proto) = super::protos::proto(id).filter(|_| runs) else {
            return Err((Reason::UnknownHelper(id), vec![]));
        };
        let ret = self.check_args(st, proto)?;
        if proto.changes_packet {
            st.pkt_min = 0;
            st.for_each_reg(|r| {
                if matches!(r.kind, Kind::Pkt | Kind::PktEnd) {
                    *r = Reg::unknown();
                }
            });
        }
        for r in 1..=5 {
            st.set(r, Reg::UNINIT);
        }
        st.set(0, ret);
        Ok(())
    }
}

fn target(pc: usize, off: i64) -> usize {
    (pc as i64 + 1 + off) as usize
}

fn alu_sym(op: AluOp) -> &'static str {
    match op {
        AluOp::Add => "+=",
        AluOp::Sub => "-=",
        AluOp::Mul => "*=",
        AluOp::Div => "/=",
        AluOp::SDiv => "s/=",
        AluOp::Or => "|=",
        AluOp::And => "&=",
        AluOp::Lsh => "<<=",
        AluOp::Rsh => ">>=",
        AluOp::Neg => "neg",
        AluOp::Mod => "%=",
        AluOp::SMod => "s%=",
        AluOp::Xor => "^=",
        AluOp::Mov | AluOp::MovSx(_) => "=",
        AluOp::Arsh => "s>>=",
    }
}

fn operand_name(src: Operand, s: u8) -> String {
    match src {
        Operand::Reg => format!("R{s}"),
        Operand::Imm => "imm".into(),
    }
}

/// A byte swap of a constant, as the interpreter computes it.
fn end_const(f: Form, v: u64) -> u64 {
    use crate::bpf::check::EndOp;
    match f {
        Form::End { op: EndOp::Le, bits: 16 } => v as u16 as u64,
        Form::End { op: EndOp::Le, bits: 32 } => v as u32 as u64,
        Form::End { op: EndOp::Le, .. } => v,
        Form::End { bits: 16, .. } => (v as u16).swap_bytes() as u64,
        Form::End { bits: 32, .. } => (v as u32).swap_bytes() as u64,
        _ => v.swap_bytes(),
    }
}

/// Sets scalar register `r` to `v`, and every copy linked to it.
fn narrow(st: &mut State, r: u8, v: Scalar) {
    let id = st.reg(r).id;
    if id != 0 {
        st.for_each_reg(|x| {
            if x.kind == Kind::Scalar && x.id == id {
                x.var = v;
            }
        });
    }
    let mut cur = *st.reg(r);
    cur.var = v;
    st.set(r, cur);
}

/// Settles every copy of the nullable pointer `id`: null becomes the scalar 0 (and a null
/// reservation holds nothing to release), non-null becomes the pointer.
fn settle_null(st: &mut State, id: u32, null: bool) {
    st.for_each_reg(|r| {
        if r.id != id {
            return;
        }
        match r.kind {
            Kind::MapValueOrNull { map } => {
                *r = if null { Reg::scalar(Scalar::constant(0)) } else { Reg { kind: Kind::MapValue { map }, id: 0, ..*r } };
            }
            Kind::RingMemOrNull { size } => {
                *r = if null { Reg::scalar(Scalar::constant(0)) } else { Reg { kind: Kind::RingMem { size }, ..*r } };
            }
            _ => {}
        }
    });
    if null {
        st.refs.retain(|&x| x != id);
    }
}

/// On an edge where `pkt + off <= data_end` (`<` when `strict`) holds.
fn prove_packet(st: &mut State, pkt: &Reg, strict: bool) {
    let bytes = pkt.off + strict as i64;
    if bytes <= 0 {
        return;
    }
    if pkt.id == 0 {
        let base = pkt.var.as_const().unwrap_or(0) as i64;
        let total = (base + bytes).clamp(0, u32::MAX as i64) as u32;
        st.pkt_min = st.pkt_min.max(total);
    } else {
        let bytes = bytes.min(u32::MAX as i64) as u32;
        st.for_each_reg(|r| {
            if r.kind == Kind::Pkt && r.id == pkt.id {
                r.range = r.range.max(bytes);
            }
        });
        // The variable part is at least its minimum: that much is proven from `data` too.
        let floor = (pkt.var.umin as i64).saturating_add(bytes as i64).min(u32::MAX as i64);
        if pkt.var.smin >= 0 {
            st.pkt_min = st.pkt_min.max(floor as u32);
        }
    }
}
