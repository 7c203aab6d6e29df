//! Translation of one eBPF function (see `analyze::Func`) into Cranelift IR.
//!
//! Registers r0..r10 are Cranelift `Variable`s, so they live in machine registers and the SSA
//! builder inserts block parameters where control joins. Every function returns a status word
//! beside its value (see `trap_word`): 0 for a normal exit, else why the run ended, with the
//! faulting address in the value. Faults leave through one cold block per function; a packet
//! load out of range (or a helper asking to unwind) leaves through another that returns 0.

use std::collections::{BTreeMap, HashMap};

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    types, AbiParam, AliasRegionData, Block, BlockArg, FuncRef, InstBuilder, InstructionData, Opcode, MemFlagsData, SigRef, Signature, StackSlotData,
    StackSlotKind, Type, Value,
};
use cranelift_codegen::isa::{CallConv, TargetFrontendConfig};
use cranelift_frontend::{FunctionBuilder, Switch, Variable};

use super::analyze::{self, Func, Layout, Note, STACK_AREA};
use crate::bpf::check::StackReach;
use super::{trap_word, JitError, TrapKind};
use crate::bpf::ctx::CtxField;
use crate::bpf::insn::*;
use crate::bpf::helpers;
use crate::bpf::{Helper, Program, MAX_CALL_DEPTH};

const I64: Type = types::I64;
const I32: Type = types::I32;

/// Parameters of a local (bpf-to-bpf) function: r0..r9, its frame pointer, its depth, then the
/// run environment (data, data_len, stack area, ifindex/queue). Callees see every caller
/// register, as they would in the interpreter.
pub(super) const LOCAL_PARAMS: usize = 16;
/// Results of a local function: r0..r5, then the status word.
pub(super) const LOCAL_RESULTS: usize = 7;

pub(super) fn entry_signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    // (r1, r2, data, data_len, ifindex | rx_queue << 32) -> (r0 or fault address, status
    // word): the status travels in the second return register, so a normal run touches no
    // memory for it.
    sig.params.extend([AbiParam::new(I64); 5]);
    sig.returns.extend([AbiParam::new(I64); 2]);
    sig
}

pub(super) fn local_signature() -> Signature {
    let mut sig = Signature::new(CallConv::Tail);
    sig.params.extend([AbiParam::new(I64); LOCAL_PARAMS]);
    sig.returns.extend([AbiParam::new(I64); LOCAL_RESULTS]);
    sig
}

fn helper_signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    sig.params.extend([AbiParam::new(I64); 5]);
    sig.returns.push(AbiParam::new(I64));
    sig
}

/// Memory the program may touch, once a check (or the analysis) has admitted the address.
fn checked() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Disjoint kinds of memory the generated code touches, as Cranelift alias regions. A store
/// with no region may alias anything, so Cranelift must reload everything after it; with
/// regions, a counter update between two stages does not stop the second stage's header loads
/// from reusing the first stage's (redundant-load elimination), while every access of a BPF
/// program — packet, stack, map values, which a checked address may reach alike — stays in
/// one region and keeps its order.
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub(super) enum Region {
    /// Whatever a BPF program's loads, stores and stack zeroing reach.
    Program = 1,
    /// The caller's counter block and verdict/exit arrays.
    Counters = 2,
    /// The `XdpContext` built in the frame (read only by helpers, through calls).
    Context = 3,
}

/// `checked()` flags in `region` of the function being built.
pub(super) fn region_flags(b: &mut FunctionBuilder<'_>, region: Region) -> MemFlagsData {
    let description = match region {
        Region::Program => "bpf memory",
        Region::Counters => "counters",
        Region::Context => "xdp context",
    };
    let r = b.func.dfg.alias_regions.insert(AliasRegionData { user_id: region as u32, description: description.into() });
    checked().with_alias_region(Some(r))
}

/// What the emitter needs from outside the function.
pub(super) struct Env<'a> {
    pub prog: &'a Program,
    pub layout: &'a Layout,
    /// One `FuncRef` per entry of `layout.funcs`, imported into the function being built.
    pub local_refs: &'a [FuncRef],
    pub call_conv: CallConv,
    pub frontend: TargetFrontendConfig,
}

/// Where an inlined program's clean exits with a constant r0 go instead of the exit block:
/// see `Lower::shortcuts`. `None` keeps those exits on the exit block.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Exits {
    pub zero: Option<Block>,
    pub nonzero: Option<Block>,
}

pub(super) struct Lower<'a, 'b, 'f> {
    b: &'b mut FunctionBuilder<'f>,
    env: &'a Env<'a>,
    func: &'a Func,
    main: bool,
    /// Where the program's exits go: `None` returns from the native function; a block taking
    /// (verdict, 1 if the run faulted else 0) continues an enclosing function the program is
    /// inlined into, as the batch loop does. The verdict follows `Outcome::into_result`: r0
    /// after a normal or unwinding exit, `Fault::VERDICT` after a fault.
    exit: Option<Block>,
    /// Shortcuts for an inlined program's clean exits whose r0 is a compile-time constant:
    /// r0 = 0 jumps to `zero`, any other constant to `nonzero` (both without arguments), so
    /// the enclosing code need not join and re-test a value it could know (see [`Exits`]).
    shortcuts: Exits,
    regs: [Variable; NUM_REGS as usize],
    data: Value,
    len: Value,
    stack_lo: Value,
    /// `ingress_ifindex | rx_queue_index << 32`, for context field loads.
    ifq: Value,
    /// Frame depth: a constant 0 in the program entry, a parameter in local functions.
    depth: Value,
    /// Per access size (1, 2, 4, 8): `len - (size - 1)` saturated at 0, so `off < lim` is
    /// exactly "size bytes at `off` fit in the packet".
    lims: [Option<Value>; 4],
    blocks: BTreeMap<usize, Block>,
    ret_zero: Option<Block>,
    trap_block: Option<Block>,
    helper_sig: Option<SigRef>,
    /// Flags of every access the program makes (`Region::Program`).
    mem: MemFlagsData,
    /// Results of 16- and 32-bit packet loads → the loaded bytes before the byte swap, so a
    /// test against a constant can compare the raw bytes with a swapped constant instead
    /// (the swap then usually becomes dead).
    unswapped: HashMap<Value, Value>,
}

impl<'a, 'b, 'f> Lower<'a, 'b, 'f> {
    /// Emits function `index`'s entry block: parameters, initial registers, the stack area.
    /// The caller seals and finalizes the builder after `run`.
    pub fn new(b: &'b mut FunctionBuilder<'f>, env: &'a Env<'a>, index: usize) -> Self {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let params = b.block_params(entry).to_vec();
        Self::start(b, env, index, &params, None, None)
    }

    /// Inlines the program's main function at the builder's current block, with `inputs` =
    /// (r1, r2, data, data_len, ifindex | rx_queue << 32) and every exit jumping to `exit`
    /// with (verdict, faulted) instead of returning — see the `exit` field. Each exit site
    /// passes what it knows statically, so a normal exit costs one jump. The caller seals and
    /// finalizes.
    pub fn inline(b: &'b mut FunctionBuilder<'f>, env: &'a Env<'a>, inputs: [Value; 5], exit: Block) -> Self {
        Self::start(b, env, 0, &inputs, Some(exit), None)
    }

    /// [`inline`](Self::inline), with the stack area at `stack` (`STACK_AREA` bytes, 16-byte
    /// aligned, or `None` for a slot of its own) and exit shortcuts: programs inlined one after
    /// another (a fused pipeline) then share one area rather than growing the frame by one
    /// area each — each still zeroes the part it can reach on entry, as a run of its own would
    /// — and a classic filter's `ret #0` / `ret #k` branch straight to where the enclosing code
    /// handles "no match" / "match".
    pub fn inline_with(
        b: &'b mut FunctionBuilder<'f>,
        env: &'a Env<'a>,
        inputs: [Value; 5],
        exit: Block,
        stack: Option<Value>,
        shortcuts: Exits,
    ) -> Self {
        let mut lower = Self::start(b, env, 0, &inputs, Some(exit), stack);
        lower.shortcuts = shortcuts;
        lower
    }

    fn start(
        b: &'b mut FunctionBuilder<'f>,
        env: &'a Env<'a>,
        index: usize,
        params: &[Value],
        exit: Option<Block>,
        shared_stack: Option<Value>,
    ) -> Self {
        let regs: [Variable; NUM_REGS as usize] = std::array::from_fn(|_| b.declare_var(I64));
        let main = index == 0;
        let mem = region_flags(b, Region::Program);
        let (data, len, stack_lo, ifq, depth);
        if main {
            let zero = b.ins().iconst(I64, 0);
            for r in regs.iter().take(10) {
                b.def_var(*r, zero);
            }
            b.def_var(regs[1], params[0]);
            b.def_var(regs[2], params[1]);
            (data, len, ifq, depth) = (params[2], params[3], params[4], zero);
            let zeroed = match env.layout.stack {
                StackReach::None => None,
                StackReach::Frame { lo, hi } => Some((lo, hi)),
                StackReach::Whole => Some((-STACK_AREA, 0)),
            };
            if let Some((lo, hi)) = zeroed {
                // The whole call stack lives in this one slot: frame k has r10 = top - k*512.
                stack_lo = match shared_stack {
                    Some(area) => area,
                    None => {
                        let slot = b.create_sized_stack_slot(StackSlotData::new(
                            StackSlotKind::ExplicitSlot,
                            STACK_AREA as u32,
                            4,
                        ));
                        b.ins().stack_addr(I64, slot, 0)
                    }
                };
                let top = b.ins().iadd_imm_s(stack_lo, STACK_AREA);
                b.def_var(regs[REG_FP as usize], top);
                zero_stack(b, env, mem, top, lo, hi);
            } else {
                // As in the interpreter: no stack at all, and r10 reads as 0.
                stack_lo = zero;
                b.def_var(regs[REG_FP as usize], zero);
            }
        } else {
            for (r, v) in regs.iter().zip(params) {
                b.def_var(*r, *v);
            }
            (depth, data, len, stack_lo, ifq) = (params[11], params[12], params[13], params[14], params[15]);
        }
        let func = &env.layout.funcs[index];
        let mut lims = [None; 4];
        if func.notes.values().any(|n| *n == Note::Checked) {
            for (i, size) in [1i64, 2, 4, 8].into_iter().enumerate() {
                lims[i] = Some(if size == 1 {
                    len
                } else {
                    let short = b.ins().icmp_imm_s(IntCC::UnsignedLessThan, len, size - 1);
                    let rest = b.ins().iadd_imm_s(len, -(size - 1));
                    let zero = b.ins().iconst(I64, 0);
                    b.ins().select(short, zero, rest)
                });
            }
        }
        Lower {
            b,
            env,
            func,
            main,
            exit,
            shortcuts: Exits::default(),
            regs,
            data,
            len,
            stack_lo,
            ifq,
            depth,
            lims,
            blocks: BTreeMap::new(),
            ret_zero: None,
            trap_block: None,
            helper_sig: None,
            mem,
            unswapped: HashMap::new(),
        }
    }

    /// Emits every block of the function (the caller seals and finalizes the builder).
    pub fn run(mut self) -> Result<(), JitError> {
        let first = self.block(self.func.entry);
        self.b.ins().jump(first, &[]);
        let leaders: Vec<usize> = self.func.leaders.iter().copied().collect();
        let insns = &self.env.prog.insns;
        // Loop heads: targets of jumps at or after them (Raw programs only).
        let back_targets: std::collections::HashSet<usize> = self
            .func
            .pcs
            .iter()
            .filter(|&&pc| insns[pc].is_jump() && insns[pc].jump_offset() < 0)
            .map(|&pc| (pc as i64 + 1 + insns[pc].jump_offset()) as usize)
            .collect();
        for (bi, &leader) in leaders.iter().enumerate() {
            let end = leaders.get(bi + 1).copied().unwrap_or(insns.len());
            let block = self.block(leader);
            if back_targets.contains(&leader) {
                // A loop head: its back edges are not emitted yet; sealed at the end.
                self.b.switch_to_block(block);
            } else {
                self.enter(block);
            }
            let mut open = true;
            let mut last = leader;
            for &pc in self.func.block(leader, end) {
                last = pc;
                if !self.insn(pc)? {
                    open = false;
                    break;
                }
            }
            if open {
                let next = last + if insns[last].is_lddw() { 2 } else { 1 };
                let target = self.block(next);
                self.b.ins().jump(target, &[]);
            }
        }
        self.fill_exits();
        Ok(())
    }

    /// Fills the shared exit blocks created on demand while emitting.
    fn fill_exits(&mut self) {
        if let Some(exit) = self.exit {
            if let Some(blk) = self.ret_zero {
                self.enter(blk);
                if let Some(zero) = self.shortcuts.zero {
                    self.b.ins().jump(zero, &[]);
                } else {
                    let zero = self.b.ins().iconst(I64, 0);
                    self.b.ins().jump(exit, &[BlockArg::Value(zero), BlockArg::Value(zero)]);
                }
            }
            if let Some(blk) = self.trap_block {
                // Every trap site records a fault (never `Stop`, which only callees return).
                self.enter(blk);
                let aborted = self.b.ins().iconst(I64, crate::bpf::Fault::VERDICT as i64);
                let one = self.b.ins().iconst(I64, 1);
                self.b.ins().jump(exit, &[BlockArg::Value(aborted), BlockArg::Value(one)]);
            }
            return;
        }
        if let Some(blk) = self.ret_zero {
            self.enter(blk);
            // From a callee, `Stop` makes every caller return too; the entry then reports 0.
            let status = if self.main { 0 } else { trap_word(TrapKind::Stop, 0, 0, false) };
            let zero = self.b.ins().iconst(I64, 0);
            let word = self.b.ins().iconst(I64, status as i64);
            self.emit_return(zero, word);
        }
        if let Some(blk) = self.trap_block {
            self.enter(blk);
            let params = self.b.block_params(blk).to_vec();
            self.emit_return(params[1], params[0]);
        }
    }

    fn ins(&mut self) -> cranelift_frontend::FuncInstBuilder<'_, 'f> {
        self.b.ins()
    }

    /// Switches to a block all of whose predecessors are emitted, and seals it, so reads of
    /// registers in it resolve to their defining values at once.
    fn enter(&mut self, block: Block) {
        self.b.switch_to_block(block);
        self.b.seal_block(block);
    }

    fn block(&mut self, pc: usize) -> Block {
        *self.blocks.entry(pc).or_insert_with(|| self.b.create_block())
    }

    fn reg(&mut self, r: u8) -> Value {
        self.b.use_var(self.regs[r as usize])
    }

    fn set(&mut self, r: u8, v: Value) {
        self.b.def_var(self.regs[r as usize], v);
    }

    /// Leaves the run with r0 = 0 (out-of-range packet load, unwinding helper).
    fn ret_zero_block(&mut self) -> Block {
        if let Some(b) = self.ret_zero {
            return b;
        }
        let blk = self.b.create_block();
        self.b.set_cold_block(blk);
        self.ret_zero = Some(blk);
        blk
    }

    /// Returns `(addr, word)`: the status word describes the fault, the value carries the
    /// faulting address (or the unknown helper id).
    fn trap_block(&mut self) -> Block {
        if let Some(b) = self.trap_block {
            return b;
        }
        let blk = self.b.create_block();
        self.b.set_cold_block(blk);
        self.b.append_block_param(blk, I64);
        self.b.append_block_param(blk, I64);
        self.trap_block = Some(blk);
        blk
    }

    /// Returns `value` and the status `word` (r1..r5 of a callee do not matter then).
    fn emit_return(&mut self, value: Value, word: Value) {
        if let Some(exit) = self.exit {
            // A callee's status, known only at run time: `Stop` unwinds with r0 = 0, any other
            // non-zero status is a fault.
            let zero = self.b.ins().iconst(I64, 0);
            let kind = self.b.ins().band_imm_u(word, 0xff);
            let stopped = self.b.ins().icmp_imm_s(IntCC::Equal, kind, TrapKind::Stop as i64);
            let clean = self.b.ins().icmp_imm_s(IntCC::Equal, word, 0);
            let aborted = self.b.ins().iconst(I64, crate::bpf::Fault::VERDICT as i64);
            let failed = self.b.ins().select(stopped, zero, aborted);
            let verdict = self.b.ins().select(clean, value, failed);
            let normal = self.b.ins().bor(clean, stopped);
            let faulted = self.b.ins().bxor_imm_u(normal, 1);
            let faulted = self.b.ins().uextend(I64, faulted);
            self.b.ins().jump(exit, &[BlockArg::Value(verdict), BlockArg::Value(faulted)]);
        } else if self.main {
            self.b.ins().return_(&[value, word]);
        } else {
            let zero = self.b.ins().iconst(I64, 0);
            let mut rets = [zero; LOCAL_RESULTS];
            rets[0] = value;
            rets[LOCAL_RESULTS - 1] = word;
            self.b.ins().return_(&rets);
        }
    }

    /// Jumps to the trap block with a constant record.
    fn trap_args(&mut self, word: u64, addr: Value) -> [BlockArg; 2] {
        let w = self.b.ins().iconst(I64, word as i64);
        [BlockArg::Value(w), BlockArg::Value(addr)]
    }

    /// Continues in a fresh block that nothing jumps to, after an unconditional exit, so the
    /// rest of the source block can still be emitted (and is then dropped as dead code).
    fn start_dead_block(&mut self) {
        let dead = self.b.create_block();
        self.enter(dead);
    }

    /// Emits instruction `pc`; false when it ends its block (jump or exit).
    fn insn(&mut self, pc: usize) -> Result<bool, JitError> {
        let insn = self.env.prog.insns[pc];
        match insn.class() {
            CLASS_ALU | CLASS_ALU64 => self.alu(pc, &insn)?,
            CLASS_JMP | CLASS_JMP32 => return self.jmp(pc, &insn),
            CLASS_LD => self.ld(pc, &insn)?,
            CLASS_LDX => self.ldx(pc, &insn)?,
            CLASS_ST | CLASS_STX => self.store(pc, &insn)?,
            _ => return Err(unsupported(pc, insn, "unknown instruction class")),
        }
        Ok(true)
    }

    fn alu(&mut self, pc: usize, insn: &Insn) -> Result<(), JitError> {
        let wide = insn.class() == CLASS_ALU64;
        let ty = if wide { I64 } else { I32 };
        let code = insn.code();
        if code == ALU_END {
            return self.end(pc, insn);
        }
        let k = if wide { insn.imm as i64 } else { insn.imm as u32 as i64 };
        let from_k = insn.source() == SRC_K;
        let bval = if from_k {
            self.b.ins().iconst(ty, k)
        } else {
            let s = self.reg(insn.src);
            if wide { s } else { self.b.ins().ireduce(I32, s) }
        };
        // A move does not read its destination: reading it anyway would keep the old value
        // alive and cost block parameters where control joins.
        let r = if code == ALU_MOV {
            self.mov(pc, insn, ty, bval)?
        } else {
            let a64 = self.reg(insn.dst);
            let a = if wide { a64 } else { self.b.ins().ireduce(I32, a64) };
            let signed = insn.off == 1;
            match code {
                ALU_ADD => self.ins().iadd(a, bval),
                ALU_SUB => self.ins().isub(a, bval),
                ALU_MUL => self.ins().imul(a, bval),
                ALU_OR => self.ins().bor(a, bval),
                ALU_AND => self.ins().band(a, bval),
                ALU_XOR => self.ins().bxor(a, bval),
                // Cranelift masks shift counts to the operand width, exactly as eBPF does.
                ALU_LSH => self.ins().ishl(a, bval),
                ALU_RSH => self.ins().ushr(a, bval),
                ALU_ARSH => self.ins().sshr(a, bval),
                ALU_NEG => self.ins().ineg(a),
                ALU_DIV | ALU_MOD if !matches!(insn.off, 0 | 1) => {
                    return Err(unsupported(pc, *insn, "division offset must be 0 or 1"));
                }
                ALU_DIV | ALU_MOD => {
                    let k = from_k.then_some(if signed || wide { insn.imm as i64 } else { insn.imm as u32 as i64 });
                    self.divide(ty, code == ALU_DIV, signed, a, bval, k)
                }
                _ => return Err(unsupported(pc, *insn, "unknown alu operation")),
            }
        };
        let r = if wide { r } else { self.b.ins().uextend(I64, r) };
        self.set(insn.dst, r);
        Ok(())
    }

    /// `mov` and `movsx` (offset 8, 16, or 32 for the 64-bit form): sign-extend the low bits.
    fn mov(&mut self, pc: usize, insn: &Insn, ty: Type, src: Value) -> Result<Value, JitError> {
        let narrow = match (insn.off, ty == I64) {
            (0, _) => return Ok(src),
            (8, _) => types::I8,
            (16, _) => types::I16,
            (32, true) => I32,
            _ => return Err(unsupported(pc, *insn, "mov offset must be 0, 8, 16 or (64-bit) 32")),
        };
        let low = if narrow == ty { src } else { self.ins().ireduce(narrow, src) };
        Ok(self.ins().sextend(ty, low))
    }

    /// Division and remainder without hardware traps: x/0 = 0, x%0 = x, and signed
    /// INT_MIN/-1 = INT_MIN (wrapping), INT_MIN%-1 = 0.
    fn divide(&mut self, ty: Type, div: bool, signed: bool, a: Value, b: Value, k: Option<i64>) -> Value {
        if let Some(k) = k {
            let minus_one = if ty == I32 { k as i32 == -1 } else { k == -1 };
            if k == 0 {
                return if div { self.ins().iconst(ty, 0) } else { a };
            }
            if signed && minus_one {
                return if div { self.ins().ineg(a) } else { self.ins().iconst(ty, 0) };
            }
            return match (div, signed) {
                (true, false) => self.ins().udiv(a, b),
                (false, false) => self.ins().urem(a, b),
                (true, true) => self.ins().sdiv(a, b),
                (false, true) => self.ins().srem(a, b),
            };
        }
        let zero = self.ins().iconst(ty, 0);
        let one = self.ins().iconst(ty, 1);
        let is_zero = self.ins().icmp_imm_s(IntCC::Equal, b, 0);
        if !signed {
            let safe = self.ins().select(is_zero, one, b);
            return if div {
                let q = self.ins().udiv(a, safe);
                self.ins().select(is_zero, zero, q)
            } else {
                let r = self.ins().urem(a, safe);
                self.ins().select(is_zero, a, r)
            };
        }
        let all_ones = if ty == I32 { u32::MAX as i64 } else { -1 };
        let m1 = self.ins().iconst(ty, all_ones);
        let is_m1 = self.ins().icmp(IntCC::Equal, b, m1);
        let bad = self.ins().bor(is_zero, is_m1);
        let safe = self.ins().select(bad, one, b);
        if div {
            let q = self.ins().sdiv(a, safe);
            let neg = self.ins().ineg(a);
            let q = self.ins().select(is_m1, neg, q);
            self.ins().select(is_zero, zero, q)
        } else {
            let r = self.ins().srem(a, safe);
            let r = self.ins().select(is_m1, zero, r);
            self.ins().select(is_zero, a, r)
        }
    }

    /// Byte-order operations, relative to a little-endian host (x86-64, aarch64).
    fn end(&mut self, pc: usize, insn: &Insn) -> Result<(), JitError> {
        let v = self.reg(insn.dst);
        let swap = insn.class() == CLASS_ALU64 || insn.source() == SRC_X;
        let narrow = match insn.imm {
            16 => types::I16,
            32 => I32,
            64 => I64,
            _ => return Err(unsupported(pc, *insn, "byte swap width must be 16, 32 or 64")),
        };
        let low = if narrow == I64 { v } else { self.ins().ireduce(narrow, v) };
        let r = if swap { self.ins().bswap(low) } else { low };
        let r = if narrow == I64 { r } else { self.ins().uextend(I64, r) };
        self.set(insn.dst, r);
        Ok(())
    }

    fn jmp(&mut self, pc: usize, insn: &Insn) -> Result<bool, JitError> {
        if insn.is_exit() {
            self.exit();
            return Ok(false);
        }
        if insn.is_call() {
            self.call(pc, insn)?;
            return Ok(true);
        }
        let target = (pc as i64 + 1 + insn.jump_offset()) as usize;
        let taken = self.block(target);
        if insn.code() == JMP_JA {
            self.b.ins().jump(taken, &[]);
            return Ok(false);
        }
        let c = self.condition(pc, insn)?;
        let fall = self.block(pc + 1);
        self.b.ins().brif(c, taken, &[], fall, &[]);
        Ok(false)
    }

    /// The truth value (an `i8`) of conditional jump `insn`'s test in the current registers.
    fn condition(&mut self, pc: usize, insn: &Insn) -> Result<Value, JitError> {
        let wide = insn.class() == CLASS_JMP;
        let a = self.reg(insn.dst);
        if insn.source() == SRC_K
            && let Some(&raw) = self.unswapped.get(&a)
            && let Some(c) = self.test_unswapped(insn, wide, raw)
        {
            return Ok(c);
        }
        let a = if wide { a } else { self.b.ins().ireduce(I32, a) };
        let b = if insn.source() == SRC_K {
            let (ty, k) = if wide { (I64, insn.imm as i64) } else { (I32, insn.imm as u32 as i64) };
            self.b.ins().iconst(ty, k)
        } else {
            let s = self.reg(insn.src);
            if wide { s } else { self.b.ins().ireduce(I32, s) }
        };
        let cc = match insn.code() {
            JMP_JEQ => IntCC::Equal,
            JMP_JNE => IntCC::NotEqual,
            JMP_JGT => IntCC::UnsignedGreaterThan,
            JMP_JGE => IntCC::UnsignedGreaterThanOrEqual,
            JMP_JLT => IntCC::UnsignedLessThan,
            JMP_JLE => IntCC::UnsignedLessThanOrEqual,
            JMP_JSGT => IntCC::SignedGreaterThan,
            JMP_JSGE => IntCC::SignedGreaterThanOrEqual,
            JMP_JSLT => IntCC::SignedLessThan,
            JMP_JSLE => IntCC::SignedLessThanOrEqual,
            JMP_JSET => IntCC::NotEqual,
            _ => return Err(unsupported(pc, *insn, "unknown jump operation")),
        };
        let c = if insn.code() == JMP_JSET {
            let m = self.b.ins().band(a, b);
            self.b.ins().icmp_imm_s(IntCC::NotEqual, m, 0)
        } else {
            self.b.ins().icmp(cc, a, b)
        };
        Ok(c)
    }

    /// `jeq`/`jne`/`jset` against a constant on a value that is `bswap(raw)` zero-extended,
    /// as the same test on `raw` against the swapped constant; `None` for other tests.
    fn test_unswapped(&mut self, insn: &Insn, wide: bool, raw: Value) -> Option<Value> {
        let ty = self.b.func.dfg.value_type(raw);
        let bits = ty.bits();
        // The constant as the compare sees it; the loaded value is below 2^bits either way.
        let k = if wide { insn.imm as i64 as u64 } else { insn.imm as u32 as u64 };
        let mask = (1u64 << bits) - 1;
        let swap = |k: u64| if bits == 16 { (k as u16).swap_bytes() as i64 } else { (k as u32).swap_bytes() as i64 };
        let constant = |this: &mut Self, b: bool| this.b.ins().iconst(types::I8, b as i64);
        Some(match insn.code() {
            JMP_JEQ | JMP_JNE => {
                let eq = insn.code() == JMP_JEQ;
                if k > mask {
                    constant(self, !eq)
                } else {
                    let c = self.b.ins().iconst(ty, swap(k));
                    self.b.ins().icmp(if eq { IntCC::Equal } else { IntCC::NotEqual }, raw, c)
                }
            }
            JMP_JSET => {
                if k & mask == 0 {
                    constant(self, false)
                } else {
                    let c = self.b.ins().iconst(ty, swap(k & mask));
                    let m = self.b.ins().band(raw, c);
                    self.b.ins().icmp_imm_s(IntCC::NotEqual, m, 0)
                }
            }
            _ => return None,
        })
    }

    fn exit(&mut self) {
        let r0 = self.reg(0);
        let shortcut = match self.constant_of(r0) {
            Some(0) => self.shortcuts.zero,
            Some(_) => self.shortcuts.nonzero,
            None => None,
        };
        if let (Some(target), Some(_)) = (shortcut, self.exit) {
            self.b.ins().jump(target, &[]);
            return;
        }
        let ok = self.b.ins().iconst(I64, 0);
        if let Some(exit) = self.exit {
            self.b.ins().jump(exit, &[BlockArg::Value(r0), BlockArg::Value(ok)]);
        } else if self.main {
            self.b.ins().return_(&[r0, ok]);
        } else {
            let mut rets: Vec<Value> = (0..6u8).map(|r| self.reg(r)).collect();
            rets.push(ok);
            self.b.ins().return_(&rets);
        }
    }

    /// The value of `v` if an `iconst` defines it, directly or zero-extended (a 32-bit move).
    fn constant_of(&self, v: Value) -> Option<u64> {
        let dfg = &self.b.func.dfg;
        let inst = dfg.value_def(v).inst()?;
        match dfg.insts[inst] {
            InstructionData::UnaryImm { opcode: Opcode::Iconst, imm } => {
                let bits = dfg.value_type(v).bits();
                Some(imm.bits() as u64 & (u64::MAX >> (64 - bits)))
            }
            InstructionData::Unary { opcode: Opcode::Uextend, arg } => self.constant_of(arg),
            _ => None,
        }
    }

    fn call(&mut self, pc: usize, insn: &Insn) -> Result<(), JitError> {
        if analyze::is_local_call(insn) {
            return self.call_local(pc, insn);
        }
        if insn.source() == SRC_X {
            return self.callx(pc, insn);
        }
        if insn.src != CALL_HELPER {
            return Err(unsupported(pc, *insn, "only helper, local and register calls are supported"));
        }
        let id = insn.imm as u32 as u64;
        let helper = *self
            .env
            .prog
            .helpers
            .get(id)
            .ok_or_else(|| unsupported(pc, *insn, "call to a helper id that is not in the helper table"))?;
        let r0 = self.call_helper(&helper);
        self.set(0, r0);
        Ok(())
    }

    /// Calls `helper` with r1..r5 and applies its unwinding rule; returns r0.
    fn call_helper(&mut self, helper: &Helper) -> Value {
        let sig = match self.helper_sig {
            Some(s) => s,
            None => {
                let s = self.b.import_signature(helper_signature(self.env.call_conv));
                self.helper_sig = Some(s);
                s
            }
        };
        let args: Vec<Value> = (1..=5).map(|r| self.reg(r)).collect();
        let callee = self.b.ins().iconst(I64, helper.func as usize as i64);
        let call = self.b.ins().call_indirect(sig, callee, &args);
        let r0 = self.b.inst_results(call)[0];
        if helper.unwind_on_zero {
            let stop = self.ret_zero_block();
            let cont = self.b.create_block();
            self.b.ins().brif(r0, cont, &[], stop, &[]);
            self.enter(cont);
        }
        r0
    }

    /// `callx`: the helper id is in the dst register, dispatched over the helper table.
    fn callx(&mut self, pc: usize, insn: &Insn) -> Result<(), JitError> {
        let id = self.reg(insn.dst);
        let join = self.b.create_block();
        let r0 = self.b.append_block_param(join, I64);
        let unknown = self.b.create_block();
        self.b.set_cold_block(unknown);
        let helpers: Vec<Helper> = self.env.prog.helpers.iter().copied().collect();
        let mut switch = Switch::new();
        let cases: Vec<(Helper, Block)> = helpers.into_iter().map(|h| (h, self.b.create_block())).collect();
        for (h, blk) in &cases {
            switch.set_entry(h.id as u128, *blk);
        }
        switch.emit(self.b, id, unknown);
        for (h, blk) in cases {
            self.enter(blk);
            let r = self.call_helper(&h);
            self.b.ins().jump(join, &[BlockArg::Value(r)]);
        }
        self.enter(unknown);
        let trap = self.trap_block();
        let args = self.trap_args(trap_word(TrapKind::UnknownHelper, pc, 0, false), id);
        self.b.ins().jump(trap, &args);
        self.enter(join);
        self.set(0, r0);
        Ok(())
    }

    fn call_local(&mut self, pc: usize, insn: &Insn) -> Result<(), JitError> {
        let target = analyze::local_call_target(&self.env.prog.insns, pc)?;
        let index = self
            .env
            .layout
            .local_index(target)
            .ok_or_else(|| unsupported(pc, *insn, "local call target is not a function entry"))?;
        // The entry runs at depth 0, so its calls (to depth 1) never exceed the limit.
        const _: () = assert!(MAX_CALL_DEPTH >= 2);
        let depth = self.b.ins().iadd_imm_s(self.depth, 1);
        if !self.main {
            let deep = self.b.ins().icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, depth, MAX_CALL_DEPTH as i64);
            let trap = self.trap_block();
            let zero = self.b.ins().iconst(I64, 0);
            let args = self.trap_args(trap_word(TrapKind::CallDepth, pc, 0, false), zero);
            let cont = self.b.create_block();
            self.b.ins().brif(deep, trap, &args, cont, &[]);
            self.enter(cont);
        }
        let mut args: Vec<Value> = (0..10u8).map(|r| self.reg(r)).collect();
        let fp = self.reg(REG_FP);
        args.push(self.b.ins().iadd_imm_s(fp, -(STACK_SIZE as i64)));
        args.extend([depth, self.data, self.len, self.stack_lo, self.ifq]);
        let call = self.b.ins().call(self.env.local_refs[index], &args);
        let results = self.b.inst_results(call).to_vec();
        // A fault or stop inside the callee ends this frame too, passing its record up.
        let word = results[LOCAL_RESULTS - 1];
        let out = self.b.create_block();
        self.b.set_cold_block(out);
        let cont = self.b.create_block();
        self.b.ins().brif(word, out, &[], cont, &[]);
        self.enter(out);
        self.emit_return(results[0], word);
        self.enter(cont);
        for (r, v) in results.into_iter().take(6).enumerate() {
            self.set(r as u8, v);
        }
        Ok(())
    }

    fn ld(&mut self, pc: usize, insn: &Insn) -> Result<(), JitError> {
        match insn.mode() {
            MODE_IMM if insn.is_lddw() => {
                let value = match insn.src {
                    0 => lddw_imm(&self.env.prog.insns, pc),
                    _ => self
                        .env
                        .prog
                        .helpers
                        .maps()
                        .lddw_value(&self.env.prog.insns, pc)
                        .ok_or_else(|| unsupported(pc, *insn, "lddw source is not a map reference"))?,
                };
                let v = self.b.ins().iconst(I64, value as i64);
                self.set(insn.dst, v);
            }
            MODE_ABS => {
                let size = insn.size_bytes();
                match self.func.note(pc) {
                    Note::PacketCheck(u64::MAX) => {
                        let stop = self.ret_zero_block();
                        self.b.ins().jump(stop, &[]);
                        self.start_dead_block();
                        return Ok(());
                    }
                    Note::PacketCheck(need) => {
                        let ok = self.b.ins().icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, self.len, need as i64);
                        self.branch_or_stop(ok);
                    }
                    _ => {}
                }
                // The offset is `imm as u32`; one past i32::MAX needs a 64-bit add.
                let v = match i32::try_from(insn.imm as u32) {
                    Ok(off) => self.load_packet(self.data, off, size),
                    Err(_) => {
                        let base = self.b.ins().iadd_imm_s(self.data, insn.imm as u32 as i64);
                        self.load_packet(base, 0, size)
                    }
                };
                self.set(0, v);
            }
            MODE_IND => {
                let size = insn.size_bytes() as i64;
                let x = self.reg(insn.src);
                let x32 = self.b.ins().ireduce(I32, x);
                let x = self.b.ins().uextend(I64, x32);
                // src as u32 + imm as u32, in 64 bits: below 2^33, it cannot wrap into range.
                let off = self.b.ins().iadd_imm_s(x, insn.imm as u32 as i64);
                let end = self.b.ins().iadd_imm_s(off, size);
                let ok = self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, end, self.len);
                self.branch_or_stop(ok);
                let addr = self.b.ins().iadd(self.data, off);
                let v = self.load_packet(addr, 0, size as usize);
                self.set(0, v);
            }
            _ => return Err(unsupported(pc, *insn, "unknown ld mode")),
        }
        Ok(())
    }

    /// Continues when `ok`, else leaves with r0 = 0.
    fn branch_or_stop(&mut self, ok: Value) {
        let stop = self.ret_zero_block();
        let cont = self.b.create_block();
        self.b.ins().brif(ok, cont, &[], stop, &[]);
        self.enter(cont);
    }

    /// Big-endian load of `size` bytes at `base + off` (already bounds-checked), zero-extended.
    fn load_packet(&mut self, base: Value, off: i32, size: usize) -> Value {
        match size {
            1 => self.b.ins().uload8(I64, self.mem, base, off),
            2 | 4 => {
                let ty = if size == 2 { types::I16 } else { I32 };
                let raw = self.b.ins().load(ty, self.mem, base, off);
                let v = self.ins().bswap(raw);
                let v = self.ins().uextend(I64, v);
                self.unswapped.insert(v, raw);
                v
            }
            _ => {
                let v = self.b.ins().load(I64, self.mem, base, off);
                self.ins().bswap(v)
            }
        }
    }

    fn ldx(&mut self, pc: usize, insn: &Insn) -> Result<(), JitError> {
        if insn.mode() == MODE_CTX {
            // Like the interpreter, read the run's own context values rather than memory at
            // the source register: data_meta is data, egress_ifindex is 0.
            let field = CtxField::from_index(insn.off)
                .ok_or_else(|| unsupported(pc, *insn, "unknown context field"))?;
            let v = match field {
                CtxField::Data | CtxField::DataMeta => self.window().0,
                CtxField::DataEnd => self.window().1,
                CtxField::IngressIfindex => {
                    let low = self.b.ins().ireduce(I32, self.ifq);
                    self.b.ins().uextend(I64, low)
                }
                CtxField::RxQueueIndex => self.b.ins().ushr_imm_u(self.ifq, 32),
                CtxField::EgressIfindex => self.b.ins().iconst(I64, 0),
            };
            self.set(insn.dst, v);
            return Ok(());
        }
        let base = self.reg(insn.src);
        let size = insn.size_bytes();
        let addr = self.b.ins().iadd_imm_s(base, insn.off as i64);
        self.check(pc, addr, size, false);
        let v = match (insn.mode(), size) {
            (MODE_MEM, 1) => self.b.ins().uload8(I64, self.mem, addr, 0),
            (MODE_MEM, 2) => self.b.ins().uload16(I64, self.mem, addr, 0),
            (MODE_MEM, 4) => self.b.ins().uload32(self.mem, addr, 0),
            (MODE_MEM, _) => self.b.ins().load(I64, self.mem, addr, 0),
            (MODE_MEMSX, 1) => self.b.ins().sload8(I64, self.mem, addr, 0),
            (MODE_MEMSX, 2) => self.b.ins().sload16(I64, self.mem, addr, 0),
            (MODE_MEMSX, 4) => self.b.ins().sload32(self.mem, addr, 0),
            _ => return Err(unsupported(pc, *insn, "unknown ldx mode or size")),
        };
        self.set(insn.dst, v);
        Ok(())
    }

    fn store(&mut self, pc: usize, insn: &Insn) -> Result<(), JitError> {
        let size = insn.size_bytes();
        let base = self.reg(insn.dst);
        let addr = self.b.ins().iadd_imm_s(base, insn.off as i64);
        if insn.mode() == MODE_ATOMIC && insn.class() == CLASS_STX {
            return self.atomic(pc, insn, addr);
        }
        if insn.mode() != MODE_MEM {
            return Err(unsupported(pc, *insn, "unknown store mode"));
        }
        let v = if insn.class() == CLASS_ST {
            self.b.ins().iconst(I64, insn.imm as i64)
        } else {
            self.reg(insn.src)
        };
        self.check(pc, addr, size, true);
        match size {
            1 => self.b.ins().istore8(self.mem, v, addr, 0),
            2 => self.b.ins().istore16(self.mem, v, addr, 0),
            4 => self.b.ins().istore32(self.mem, v, addr, 0),
            _ => self.b.ins().store(self.mem, v, addr, 0),
        };
        Ok(())
    }

    /// Atomics. Naturally aligned addresses use Cranelift's atomic instructions; a misaligned
    /// one (possible in eBPF, a fault on aarch64) uses a plain read-modify-write, which is
    /// equivalent because the run has exclusive use of the packet and the stack.
    fn atomic(&mut self, pc: usize, insn: &Insn, addr: Value) -> Result<(), JitError> {
        use cranelift_codegen::ir::AtomicRmwOp as Op;
        let size = insn.size_bytes();
        let ty = match size {
            4 => I32,
            8 => I64,
            _ => return Err(unsupported(pc, *insn, "atomic operations are 32- or 64-bit")),
        };
        let op = match insn.imm & !ATOMIC_FETCH {
            ATOMIC_ADD => Some(Op::Add),
            ATOMIC_OR => Some(Op::Or),
            ATOMIC_AND => Some(Op::And),
            ATOMIC_XOR => Some(Op::Xor),
            _ if insn.imm == ATOMIC_XCHG => Some(Op::Xchg),
            _ if insn.imm == ATOMIC_CMPXCHG => None,
            _ => return Err(unsupported(pc, *insn, "unknown atomic operation")),
        };
        self.check(pc, addr, size, true);
        let narrow = |this: &mut Self, v: Value| if ty == I64 { v } else { this.b.ins().ireduce(I32, v) };
        let widen = |this: &mut Self, v: Value| if ty == I64 { v } else { this.b.ins().uextend(I64, v) };
        let src = self.reg(insn.src);
        let src = narrow(self, src);
        let expected = if op.is_none() {
            let r0 = self.reg(0);
            Some(narrow(self, r0))
        } else {
            None
        };

        let aligned = self.b.create_block();
        let unaligned = self.b.create_block();
        let join = self.b.create_block();
        let old = self.b.append_block_param(join, ty);
        let low = self.b.ins().band_imm_s(addr, size as i64 - 1);
        self.b.ins().brif(low, unaligned, &[], aligned, &[]);

        self.enter(aligned);
        let flags = MemFlagsData::trusted();
        let prev = match (op, expected) {
            (Some(op), _) => self.b.ins().atomic_rmw(ty, flags, op, addr, src),
            (None, Some(e)) => self.b.ins().atomic_cas(flags, addr, e, src),
            (None, None) => unreachable!("cmpxchg always has an expected value"),
        };
        self.b.ins().jump(join, &[BlockArg::Value(prev)]);

        self.enter(unaligned);
        let prev = self.b.ins().load(ty, self.mem, addr, 0);
        let new = match (op, expected) {
            (Some(Op::Add), _) => self.b.ins().iadd(prev, src),
            (Some(Op::Or), _) => self.b.ins().bor(prev, src),
            (Some(Op::And), _) => self.b.ins().band(prev, src),
            (Some(Op::Xor), _) => self.b.ins().bxor(prev, src),
            (Some(_), _) => src,
            (None, Some(e)) => {
                let eq = self.b.ins().icmp(IntCC::Equal, prev, e);
                self.b.ins().select(eq, src, prev)
            }
            (None, None) => unreachable!("cmpxchg always has an expected value"),
        };
        self.b.ins().store(self.mem, new, addr, 0);
        self.b.ins().jump(join, &[BlockArg::Value(prev)]);

        self.enter(join);
        let old = widen(self, old);
        if op.is_none() {
            self.set(0, old);
        } else if insn.imm & ATOMIC_FETCH != 0 {
            self.set(insn.src, old);
        }
        Ok(())
    }

    /// Admits `size` bytes at `addr` for instruction `pc`, unless the analysis proved them.
    fn check(&mut self, pc: usize, addr: Value, size: usize, write: bool) {
        if matches!(self.func.note(pc), Note::Proven | Note::Stack) {
            return;
        }
        let word = trap_word(TrapKind::OutOfBounds, pc, size, write);
        let lim = match self.lims[size.trailing_zeros() as usize] {
            Some(l) => l,
            None => {
                // Every Checked access has lims computed at entry; be safe regardless.
                let t = self.trap_block();
                let args = self.trap_args(word, addr);
                self.b.ins().jump(t, &args);
                self.start_dead_block();
                return;
            }
        };
        let off = self.b.ins().isub(addr, self.data);
        let in_packet = self.b.ins().icmp(IntCC::UnsignedLessThan, off, lim);
        let cont = self.b.create_block();
        let other = self.b.create_block();
        self.b.ins().brif(in_packet, cont, &[], other, &[]);
        self.enter(other);
        self.admit_map_memory(addr, size, write, cont);
        let trap = self.trap_block();
        let args = self.trap_args(word, addr);
        if self.env.layout.stack != StackReach::None {
            let soff = self.b.ins().isub(addr, self.stack_lo);
            let in_stack = self.b.ins().icmp_imm_s(IntCC::UnsignedLessThanOrEqual, soff, STACK_AREA - size as i64);
            self.b.ins().brif(in_stack, cont, &[], trap, &args);
        } else {
            self.b.ins().jump(trap, &args);
        }
        self.enter(cont);
    }
}

impl Lower<'_, '_, '_> {
    /// Map memory, the third region: continues to `cont` when `[addr, addr + size)` lies in
    /// one of the program's map arenas (writable ones for a store). Arenas never move, so
    /// each test is a subtraction and a compare against constants. Leaves the builder in the
    /// block reached when none matches.
    fn admit_map_memory(&mut self, addr: Value, size: usize, write: bool, cont: Block) {
        let arenas: Vec<(u64, u64)> = (self.env.prog.helpers.maps().iter())
            .filter(|m| !write || m.def().prog_writable())
            .map(|m| (m.arena().base(), m.arena().len() as u64))
            .filter(|&(_, len)| len >= size as u64)
            .collect();
        for (base, len) in arenas {
            let off = self.b.ins().iadd_imm_s(addr, (base as i64).wrapping_neg());
            let inside = self.b.ins().icmp_imm_s(IntCC::UnsignedLessThanOrEqual, off, (len - size as u64) as i64);
            let next = self.b.create_block();
            self.b.ins().brif(inside, cont, &[], next, &[]);
            self.enter(next);
        }
    }

    /// The packet window `(data, data_end)` as the program sees it now. Programs that call
    /// `xdp_adjust_head/tail` ([`Layout::moves`]) ask the run's helper frame each time (the
    /// helpers move the window there; callees see the move too); others have it in registers.
    fn window(&mut self) -> (Value, Value) {
        if !self.env.layout.moves {
            let end = self.b.ins().iadd(self.data, self.len);
            return (self.data, end);
        }
        let sig = self.b.import_signature(bounds_signature(self.env.call_conv));
        let callee = self.b.ins().iconst(I64, packet_window as *const () as usize as i64);
        let call = self.b.ins().call_indirect(sig, callee, &[self.data, self.len]);
        let r = self.b.inst_results(call);
        (r[0], r[1])
    }
}

/// `(data, len) -> (data, data_end)`: see [`packet_window`].
fn bounds_signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    sig.params.extend([AbiParam::new(I64); 2]);
    sig.returns.extend([AbiParam::new(I64); 2]);
    sig
}

/// Two integers in registers (the C ABI), like `Outcome`.
#[repr(C)]
struct Window {
    data: u64,
    end: u64,
}

/// Called by generated code: the current run's packet window after `xdp_adjust_head/tail`
/// (the helpers keep it in the run's frame, see `helpers::env`), or the slice the run was given
/// when no frame is set (then no helper could have moved it).
extern "C" fn packet_window(data: u64, len: u64) -> Window {
    let (data, end) = helpers::packet_bounds().unwrap_or((data, data + len));
    Window { data, end }
}

/// Zeroes bytes `[top + lo, top + hi)` of the stack area, as the interpreter does before a run
/// (`lo < hi <= 0`): 16-byte stores for small frames, `memset` for large ones.
fn zero_stack(b: &mut FunctionBuilder<'_>, env: &Env<'_>, mem: MemFlagsData, top: Value, lo: i64, hi: i64) {
    // Widen to 16-byte boundaries: the extra bytes are the area's own, never anyone else's.
    let lo = (lo.div_euclid(16) * 16).max(-STACK_AREA);
    let hi = (hi + 15).div_euclid(16) * 16;
    let hi = hi.min(0);
    if hi - lo <= ZERO_INLINE {
        let zero = b.ins().iconst(I64, 0);
        let wide = b.ins().splat(types::I64X2, zero);
        for off in (lo..hi).step_by(16) {
            b.ins().store(mem.with_aligned(), wide, top, off as i32);
        }
    } else {
        let start = b.ins().iadd_imm_s(top, lo);
        let fill = b.ins().iconst(types::I8, 0);
        let size = b.ins().iconst(I64, hi - lo);
        b.call_memset(env.frontend, start, fill, size);
    }
}

/// Largest stack range zeroed with inline stores.
const ZERO_INLINE: i64 = 256;

fn unsupported(pc: usize, insn: Insn, reason: &'static str) -> JitError {
    JitError::Unsupported { pc, insn, reason }
}
