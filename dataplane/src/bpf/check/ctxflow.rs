//! The context-pointer dataflow of `Xdp` programs: which registers and 8-byte stack slots hold
//! the `xdp_md` pointer, which loads through it to rewrite, and which uses of it to refuse.

use std::collections::HashMap;

use super::{AluOp, AtomicOp, CallGraph, CheckError, Form, Functions, Operand, Reason, form};
use crate::bpf::ctx::CtxField;
use crate::bpf::insn::*;

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

pub(super) struct CtxFlow<'a> {
    insns: &'a [Insn],
    funcs: &'a Functions,
    /// Entry state of every function (None: not reached).
    entry: Vec<Option<State>>,
    /// What each function returns in r0.
    ret: Vec<Cx>,
    /// Joined states arriving over back-edges (programs the verifier bounds may loop), by
    /// target; they reach the target on the next sweep.
    back: HashMap<usize, State>,
}

impl<'a> CtxFlow<'a> {
    /// Iterates to a fixpoint (monotone joins over a finite lattice), then makes one checking
    /// pass with the final states. Returns the loads to rewrite.
    pub(super) fn run(
        insns: &'a [Insn],
        funcs: &'a Functions,
        graph: &'a CallGraph,
    ) -> Result<Vec<(usize, CtxField)>, CheckError> {
        let n = funcs.count();
        let mut flow = CtxFlow { insns, funcs, entry: vec![None; n], ret: vec![Cx::Unset; n], back: HashMap::new() };
        flow.entry[0] = Some(State::entry(true));
        loop {
            let before = (flow.entry.clone(), flow.ret.clone(), flow.back.clone());
            for &f in &graph.order {
                flow.function(f, None)?;
            }
            if (flow.entry.clone(), flow.ret.clone(), flow.back.clone()) == before {
                break;
            }
        }
        let mut rewrites = Vec::new();
        for &f in &graph.order {
            flow.function(f, Some(&mut rewrites))?;
        }
        Ok(rewrites)
    }

    /// One pass over function `f` in slot order, which is a topological order apart from
    /// back-edges (their states wait in `back` for the next sweep). With `out`, uses of the
    /// context pointer are checked and rewrites collected.
    fn function(&mut self, f: usize, mut out: Option<&mut Vec<(usize, CtxField)>>) -> Result<(), CheckError> {
        let Some(entry) = self.entry[f].clone() else { return Ok(()) };
        let (start, end) = self.funcs.range(f);
        let mut pending: HashMap<usize, State> = HashMap::new();
        let mut cur = Some(entry);
        let mut pc = start;
        while pc < end {
            for p in [pending.remove(&pc), self.back.get(&pc).cloned()].into_iter().flatten() {
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
                    // check_jumps guarantees the target is a slot of this function.
                    let t = t as usize;
                    let pending = if t <= pc { &mut self.back } else { &mut pending };
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
    fn step(
        &mut self,
        st: &mut State,
        f: usize,
        pc: usize,
        insn: Insn,
        form: Form,
    ) -> Result<Option<CtxField>, String> {
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
                    Cx::Some => {
                        return Err(format!("load through r{src}, which holds the ctx pointer on some paths only"));
                    }
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
                st.set(
                    0,
                    match self.ret[callee] {
                        Cx::Unset => Cx::No,
                        r => r,
                    },
                );
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
    use crate::bpf::check::validate;
    use crate::bpf::ctx::xdp_md;
    use crate::bpf::insn::build::*;
    use crate::bpf::{Helper, Helpers, ProgKind, Program};

    unsafe extern "C" fn nop(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
        0
    }

    const RAW: ProgKind = ProgKind::Raw;
    const XDP: ProgKind = ProgKind::Xdp;

    fn check(kind: ProgKind, insns: &[Insn]) -> Result<Program, CheckError> {
        let helpers = Helpers::from_list(&[Helper { id: 3, name: "nop", func: nop, unwind_on_zero: false }]);
        validate(insns.to_vec(), kind, &helpers)
    }

    fn refuse(kind: ProgKind, insns: &[Insn]) -> (usize, Reason) {
        match check(kind, insns) {
            Err(CheckError::Insn { index, reason, .. }) => (index, reason),
            other => panic!("expected an instruction error, got {other:?}"),
        }
    }

    fn ldxw(dst: u8, src: u8, off: i16) -> Insn {
        ldx(SIZE_W, dst, src, off)
    }

    fn local(imm: i32) -> Insn {
        Insn::new(CLASS_JMP | JMP_CALL, 0, CALL_LOCAL, 0, imm)
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
            stx(SIZE_DW, 10, 1, -16),     // spill ctx
            mov64_reg(6, 1),              // keep it in a callee-saved register
            call_helper(3),               // clobbers r1-r5 (and may take ctx)
            ldx(SIZE_DW, 7, 10, -16),     // reload
            ldxw(2, 7, xdp_md::DATA),     // 4: rewritten
            ldxw(3, 6, xdp_md::DATA_END), // 5: rewritten
            mov64_reg(1, 6),
            local(2),                            // f(ctx)
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
        let p = [mov64_imm(2, 0), jmp_imm(JMP_JEQ, 3, 0, 1), mov64_reg(2, 1), ldxw(0, 2, 0), exit()];
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
}
