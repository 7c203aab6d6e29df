//! Fusion: a list of programs run one after another on the same packet, compiled into ONE
//! native function, so a packet costs one call however many programs (stages) it passes.
//!
//! Each stage's main function is inlined in order (`Lower::inline_on_stack`); its exits land
//! in a block that applies the stage's [`Rule`]: go on to the next stage, or end the packet
//! with an action code. Counting happens in the native code too: each stage has a counter slot
//! (packets, bytes, aborted) in a block of 64-bit words the caller owns, updated with plain
//! loads and stores — the caller guarantees one writer per block. bpf-to-bpf callees of each
//! stage are separate functions of the same module, exactly as in a [`JitProgram`].
//!
//! Before the stages, the code dispatches on the header fields the leading pure stages test
//! (`bpf::specialize`): the ethertype, then the IP protocol, ... are loaded once and each arm
//! runs those stages specialized to the values it knows, so ten tcpdump filters cost about two
//! of them instead of ten, and a filter that cannot match in an arm costs nothing there.
//!
//! Nothing here knows what the codes or slots mean (that is the pipeline's business): a stage
//! is a [`Program`] and a [`Rule`] in plain numbers, the counter layout is byte offsets.
//!
//! Two entries may be built, as the plan asks ([`Entries`]): one packet per call and a loop over
//! a batch ([`FusedPipeline::run_batch`]). Each inlines every stage, so a plan builds only the
//! entries its caller uses; [`FusedPipeline::run`] works with either (a batch of one without
//! the single-packet entry).
//!
//! [`JitProgram`]: super::JitProgram

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    types, AbiParam, Block, BlockArg, FuncRef, InstBuilder, MemFlagsData, Signature, StackSlotData, StackSlotKind,
    UserFuncName, Value,
};
use cranelift_codegen::isa::{CallConv, TargetFrontendConfig};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Switch, Variable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module, ModuleError};

use super::analyze::{self, Layout, STACK_AREA};
use super::batch::PacketRef;
use super::lower::{self, Env, Exits, Lower, Region};
use super::{host_isa, JitError, JitProgram};
use crate::bpf::check::StackReach;
use crate::bpf::specialize::{self, Residual, Tree};
use crate::bpf::verifier::Verified;
use crate::bpf::{ProgKind, Program};

const I64: types::Type = types::I64;

/// What a stage's result means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// r0 != 0 is a match: count the packet, record the stage as the packet's mark if `mark`
    /// and none is recorded yet, then end with `end`'s code or (None) go on.
    Match { end: Option<u32>, mark: bool },
    /// r0 is an XDP verdict: `steps[r0]` for r0 in 0..5; anything larger aborts.
    Verdict([Step; 5]),
}

/// What one XDP verdict of a [`Rule::Verdict`] stage does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Go on to the next stage, uncounted.
    Pass,
    /// Count the packet and end with this code.
    End(u32),
    /// Count the run as aborted and end with the plan's abort code.
    Abort,
}

/// One stage of a plan.
#[derive(Debug, Clone, Copy)]
pub struct Stage<'a> {
    pub program: &'a Program,
    pub rule: Rule,
    /// The verifier's result for `program`, if it was verified: every access it proved in
    /// bounds is compiled without a run-time check (as `JitProgram::compile_verified`).
    pub verified: Option<&'a Verified>,
}

/// Where a stage's counters live, in bytes: stage `i`'s slot starts at `i * slot` from the
/// block start, the default action's slot follows the last stage's. Each field is a 64-bit
/// word: offsets are multiples of 8, inside the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterLayout {
    pub slot: i32,
    pub packets: i32,
    pub bytes: i32,
    pub aborted: i32,
}

/// Which native entries to build: every entry inlines all the stages, so each one costs a
/// full compile of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entries {
    /// One packet per call only.
    Single,
    /// The batch loop only ([`FusedPipeline::run`] then runs a batch of one).
    Batch,
    Both,
}

impl Entries {
    fn single(self) -> bool {
        self != Entries::Batch
    }

    fn batch(self) -> bool {
        self != Entries::Single
    }
}

/// Everything to fuse: stages in order, the code when no stage ends the packet (counted in
/// the last slot), the code for a faulted or aborted run, the counter layout, which entries
/// to build, and whether the leading pure stages run under a dispatch on the header fields
/// they test (`specialize::tree`), each arm with the stages specialized to what it knows.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'a> {
    pub stages: &'a [Stage<'a>],
    pub default: u32,
    pub abort: u32,
    pub counters: CounterLayout,
    pub entries: Entries,
    pub dispatch: usize,
}

/// The [`Plan::dispatch`] budget pipelines use. Measured on ten tcpdump filters
/// (`sluice-bench pipeline`): ethertype, then the IP protocol, then a port cost 1.7x.
pub const DISPATCH_BUDGET: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    #[error("stage {stage}: {source}")]
    Stage {
        stage: usize,
        #[source]
        source: JitError,
    },
    #[error("stage {stage}: only xdp programs can be fused")]
    Kind { stage: usize },
    #[error("counter layout: {0}")]
    Layout(String),
    #[error("fused function: {0}")]
    Jit(#[from] JitError),
}

/// How a packet left the pipeline: the action code, and the first marking stage that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Exit {
    pub code: u32,
    pub mark: Option<u32>,
}

impl Exit {
    /// Decodes a word written by [`FusedPipeline::run_batch`]: the code in bits 0-31, the
    /// marking stage + 1 (0 for none) in bits 32-63.
    pub fn from_word(word: u64) -> Exit {
        Exit { code: word as u32, mark: ((word >> 32) as u32).checked_sub(1) }
    }
}

/// `(data, len, ifindex | rx_queue << 32, counters) -> (code, mark + 1 or 0)`.
type RunFn = unsafe extern "C" fn(*mut u8, u64, u64, *const AtomicU64) -> FusedOut;
/// `(packets, count, exits, ifindex | rx_queue << 32, counters)`.
type BatchFn = unsafe extern "C" fn(*mut PacketRef<'_>, u64, *mut u64, u64, *const AtomicU64);

/// Two integers, returned in registers by the C ABI (see `Outcome` in the parent module).
#[repr(C)]
struct FusedOut {
    code: u64,
    mark: u64,
}

/// A pipeline of programs compiled to one native function. Owns its code: freed on drop.
pub struct FusedPipeline {
    entry: Option<RunFn>,
    batch: Option<BatchFn>,
    /// Only `Drop` touches the module (see `JitProgram::module`).
    module: Mutex<ManuallyDrop<JITModule>>,
    /// Counter words a block must have: (stages + 1) slots.
    words: usize,
    code_size: usize,
    /// Some stage may move the packet window (see [`run_batch`](Self::run_batch)).
    moves: bool,
    /// Stages the code calls rather than inlines (`run_callout`), which it holds pointers to
    /// (into this vector's buffer, which is never resized).
    callouts: Vec<JitProgram>,
}

impl std::fmt::Debug for FusedPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FusedPipeline")
            .field("code_size", &self.code_size)
            .field("words", &self.words)
            .finish_non_exhaustive()
    }
}

impl FusedPipeline {
    pub fn compile(plan: &Plan<'_>) -> Result<FusedPipeline, FuseError> {
        let words = check_layout(&plan.counters, plan.stages.len())?;
        let mut layouts = Vec::with_capacity(plan.stages.len());
        for (i, s) in plan.stages.iter().enumerate() {
            if s.program.kind != ProgKind::Xdp {
                return Err(FuseError::Kind { stage: i });
            }
            let layout = match s.verified {
                Some(v) => analyze::analyze_verified(s.program, v),
                None => analyze::analyze(s.program),
            };
            layouts.push(layout.map_err(|source| FuseError::Stage { stage: i, source })?);
        }
        let dispatch = if plan.dispatch > 1 {
            let programs: Vec<&Program> = plan.stages.iter().map(|s| s.program).collect();
            specialize::tree(&programs, plan.dispatch)
        } else {
            Tree::Leaf(Vec::new())
        };
        // A residual shared by several leaves is analyzed once.
        let mut analyzed: HashMap<*const Program, Rc<Layout>> = HashMap::new();
        let dispatch = dispatch.try_map(&mut |leaf: Vec<Residual>| {
            leaf.into_iter()
                .enumerate()
                .map(|(i, r)| match r {
                    Residual::Original => Ok(Code::Original),
                    Residual::Const(v) => Ok(Code::Const(v)),
                    Residual::Program(p) => {
                        let layout = match analyzed.get(&Rc::as_ptr(&p)) {
                            Some(l) => Rc::clone(l),
                            None => {
                                let l = Rc::new(analyze::analyze(&p).map_err(|source| FuseError::Stage { stage: i, source })?);
                                analyzed.insert(Rc::as_ptr(&p), Rc::clone(&l));
                                l
                            }
                        };
                        Ok(Code::Own(p, layout))
                    }
                })
                .collect::<Result<Vec<_>, FuseError>>()
        })?;
        let prefix = dispatch.leaves().first().map_or(0, |l| l.len());
        // Stages with kernel helpers run as programs of their own (see `run_callout`).
        let mut programs = Vec::new();
        let mut own = Vec::with_capacity(plan.stages.len());
        for (i, s) in plan.stages.iter().enumerate() {
            if !s.program.helpers().needs_env() {
                own.push(None);
                continue;
            }
            let jit = match s.verified {
                Some(v) => JitProgram::compile_verified(s.program, v),
                None => JitProgram::compile(s.program),
            };
            own.push(Some(programs.len()));
            programs.push(jit.map_err(|source| FuseError::Stage { stage: i, source })?);
        }
        // Addresses of the programs, taken once the vector is complete: its buffer never moves
        // again (the vector itself moves into the pipeline, its elements do not).
        let callouts: Vec<Option<usize>> = own.iter().map(|o| o.map(|k| &programs[k] as *const JitProgram as usize)).collect();
        let moves = layouts.iter().zip(&callouts).any(|(l, c)| l.moves && c.is_some());
        // A moved window leaves the native code through the batch descriptors only.
        let entries = if moves && plan.entries == Entries::Single { Entries::Both } else { plan.entries };
        let plan = &Plan { entries, ..*plan };
        let isa = host_isa()?;
        let call_conv = isa.default_call_conv();
        let frontend = isa.frontend_config();
        let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        let built = Builder { plan, layouts: &layouts, dispatch: &dispatch, prefix, callouts: &callouts, moves, call_conv, frontend }.define(&mut module);
        match built {
            Ok((run, batch, code_size)) => {
                // SAFETY: `run` was built with `run_signature` under the host's default calling
                // convention, which is the C ABI `RunFn` declares; the module owning the code
                // is stored beside the pointer and freed only in `Drop`.
                let entry = run.map(|id| unsafe { std::mem::transmute::<*const u8, RunFn>(module.get_finalized_function(id)) });
                // SAFETY: as above, for the loop built with `batch_signature` (`BatchFn`).
                let batch = batch.map(|id| unsafe {
                    std::mem::transmute::<*const u8, BatchFn>(module.get_finalized_function(id))
                });
                let module = Mutex::new(ManuallyDrop::new(module));
                Ok(FusedPipeline { entry, batch, module, words, code_size, moves, callouts: programs })
            }
            Err(e) => {
                // SAFETY: nothing from this module was handed out or ever ran.
                unsafe { module.free_memory() };
                Err(e)
            }
        }
    }

    /// Counter words a block passed to `run` must hold at least.
    pub fn counter_words(&self) -> usize {
        self.words
    }

    /// Bytes of machine code (every function).
    pub fn code_size(&self) -> usize {
        self.code_size
    }

    pub fn has_batch(&self) -> bool {
        self.batch.is_some()
    }

    /// Whether a stage may move a packet's head or tail (then `run` reports no move: use
    /// [`run_batch`](Self::run_batch), which updates the descriptors).
    pub fn moves(&self) -> bool {
        self.moves
    }

    /// Whether some stage runs as its own program because it calls kernel helpers, which then
    /// look for their `helpers::RunEnv` (a worker's per-CPU map slot, a redirect).
    pub fn calls_out(&self) -> bool {
        !self.callouts.is_empty()
    }

    /// Whether the single-packet entry was built (else `run` goes through the batch loop).
    pub fn has_single(&self) -> bool {
        self.entry.is_some()
    }

    /// Runs every stage on `packet` until one ends it, counting into `counters`.
    ///
    /// `counters` must be written by this thread only while the call runs (the native code
    /// updates it with plain loads and stores: other threads may read it with atomic loads).
    /// Panics if it is shorter than [`counter_words`](Self::counter_words) — a caller bug.
    #[inline]
    pub fn run(&self, packet: &mut [u8], ingress_ifindex: u32, rx_queue_index: u32, counters: &[AtomicU64]) -> Exit {
        let Some(entry) = self.entry.filter(|_| !self.moves) else {
            let mut exit = [0u64];
            self.run_batch(&mut [PacketRef::new(packet)], ingress_ifindex, rx_queue_index, counters, &mut exit);
            return Exit::from_word(exit[0]);
        };
        assert!(counters.len() >= self.words, "fused run: {} counter words for {}", counters.len(), self.words);
        let ifq = ingress_ifindex as u64 | (rx_queue_index as u64) << 32;
        // SAFETY: `entry` points into code owned by `self.module`, alive for `&self`. The code
        // touches only the packet (`data..data+len`, a live `&mut [u8]`), its own frame, the
        // `XdpContext` it builds there, helpers of the programs, and words `0..self.words`
        // of `counters` (checked above), through the atomics' interior mutability: aligned
        // 64-bit loads and stores, which are single-copy atomic on every supported host, so
        // a concurrent atomic load reads some value the word had.
        let out = unsafe { entry(packet.as_mut_ptr(), packet.len() as u64, ifq, counters.as_ptr()) };
        Exit { code: out.code as u32, mark: (out.mark as u32).checked_sub(1) }
    }

    /// [`run`](Self::run) over every packet of `packets` in one native call, writing each
    /// packet's exit to `exits` (decode with [`Exit::from_word`]). If a stage moved a packet's
    /// head or tail (`xdp_adjust_head/tail`, only when [`moves`](Self::moves)), its descriptor
    /// now describes the moved packet: a part of the bytes it described before.
    ///
    /// Panics if the pipeline has no batch entry (`Plan::entries` was `Single`), `exits` is shorter
    /// than `packets`, or `counters` is short — all caller bugs.
    pub fn run_batch(
        &self,
        packets: &mut [PacketRef<'_>],
        ingress_ifindex: u32,
        rx_queue_index: u32,
        counters: &[AtomicU64],
        exits: &mut [u64],
    ) {
        let batch = self.batch.expect("run_batch needs a pipeline fused with a batch entry");
        assert!(exits.len() >= packets.len(), "fused batch: {} exit slots for {} packets", exits.len(), packets.len());
        assert!(counters.len() >= self.words, "fused batch: {} counter words for {}", counters.len(), self.words);
        let ifq = ingress_ifindex as u64 | (rx_queue_index as u64) << 32;
        // SAFETY: as in `run`, for each of the `packets.len()` descriptors (each borrows its
        // packet mutably, so they are live and disjoint), plus `exits[i]` for i < packets.len()
        // (checked above).
        unsafe {
            batch(packets.as_mut_ptr(), packets.len() as u64, exits.as_mut_ptr(), ifq, counters.as_ptr());
        }
    }
}

impl Drop for FusedPipeline {
    fn drop(&mut self) {
        let module = self.module.get_mut().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: `&mut self` means no run is in progress and none can start; the entry
        // pointers die with `self`, and the module is taken exactly once.
        unsafe { ManuallyDrop::take(module).free_memory() };
    }
}

/// Validates the layout; returns the words a counter block needs.
fn check_layout(c: &CounterLayout, stages: usize) -> Result<usize, FuseError> {
    let err = |m: String| Err(FuseError::Layout(m));
    if c.slot <= 0 || c.slot % 8 != 0 {
        return err(format!("slot size {} is not a positive multiple of 8", c.slot));
    }
    for (name, off) in [("packets", c.packets), ("bytes", c.bytes), ("aborted", c.aborted)] {
        if off < 0 || off % 8 != 0 || off + 8 > c.slot {
            return err(format!("{name} offset {off} is not an 8-byte word inside a {}-byte slot", c.slot));
        }
    }
    // Every offset the code adds to the block pointer must fit an i32 immediate.
    let bytes = (stages as i64 + 1) * c.slot as i64;
    if bytes > i32::MAX as i64 {
        return err(format!("{} slots of {} bytes do not fit 2 GiB", stages + 1, c.slot));
    }
    Ok(bytes as usize / 8)
}

fn run_signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    sig.params.extend([AbiParam::new(I64); 4]);
    sig.returns.extend([AbiParam::new(I64); 2]);
    sig
}

fn batch_signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    sig.params.extend([AbiParam::new(I64); 5]);
    sig
}

/// Bytes of one `PacketRef`, as the batch loop strides over them.
const REF_SIZE: i64 = std::mem::size_of::<PacketRef<'static>>() as i64;
const _: () = assert!(REF_SIZE == 16);
/// Bytes of `XdpContext`, built in the frame for stages that observe r1.
const CTX_SIZE: u32 = std::mem::size_of::<crate::bpf::XdpContext>() as u32;
const _: () = assert!(CTX_SIZE == 40);

struct Builder<'p> {
    plan: &'p Plan<'p>,
    layouts: &'p [Layout],
    /// The dispatch over stages `0..prefix` (a single leaf of no stages when not specialized).
    dispatch: &'p Dispatch,
    prefix: usize,
    /// Per stage: the address of its own `JitProgram` when it is called out, not inlined.
    callouts: &'p [Option<usize>],
    /// Some stage may move the window: the batch entry writes it back to the descriptors.
    moves: bool,
    call_conv: CallConv,
    frontend: TargetFrontendConfig,
}

fn module_err(stage: &'static str, entry: usize) -> impl Fn(ModuleError) -> JitError {
    move |e| JitError::Module { stage, entry, source: Box::new(e) }
}

impl Builder<'_> {
    /// Declares and defines every function; returns the entries and the code bytes.
    fn define(&self, module: &mut JITModule) -> Result<(Option<FuncId>, Option<FuncId>, usize), FuseError> {
        // Callees of every stage: `callees[s][i - 1]` is function `i` of stage `s`.
        let mut callees: Vec<Vec<FuncId>> = Vec::with_capacity(self.layouts.len());
        for (s, layout) in self.layouts.iter().enumerate() {
            let mut ids = Vec::with_capacity(layout.funcs.len().saturating_sub(1));
            for (i, f) in layout.funcs.iter().enumerate().skip(1) {
                let name = format!("stage_{s}_bpf_{i}_at_{}", f.entry);
                let id = module
                    .declare_function(&name, Linkage::Local, &lower::local_signature())
                    .map_err(module_err("declare", f.entry))
                    .map_err(|source| FuseError::Stage { stage: s, source })?;
                ids.push(id);
            }
            callees.push(ids);
        }
        let mut ctx = module.make_context();
        let mut fctx = FunctionBuilderContext::new();
        let mut code_size = 0;
        for (s, layout) in self.layouts.iter().enumerate() {
            for (i, f) in layout.funcs.iter().enumerate().skip(1) {
                let stage_err = |source| FuseError::Stage { stage: s, source };
                ctx.func.signature = lower::local_signature();
                ctx.func.name = UserFuncName::user(0, callees[s][i - 1].as_u32());
                let mut builder = FunctionBuilder::new(&mut ctx.func, &mut fctx);
                let refs = import(module, &mut builder, &callees[s]);
                let env = self.env(s, &refs);
                Lower::new(&mut builder, &env, i).run().map_err(stage_err)?;
                builder.seal_all_blocks();
                builder.finalize(self.frontend);
                module.define_function(callees[s][i - 1], &mut ctx).map_err(module_err("compile", f.entry)).map_err(stage_err)?;
                code_size += ctx.compiled_code().map_or(0, |c| c.code_buffer().len());
                module.clear_context(&mut ctx);
            }
        }
        let (mut single, mut looped) = (None, None);
        let kinds = [(false, self.plan.entries.single()), (true, self.plan.entries.batch())];
        for batch in kinds.into_iter().filter_map(|(batch, wanted)| wanted.then_some(batch)) {
            let (name, sig) = if batch {
                ("pipeline_batch", batch_signature(self.call_conv))
            } else {
                ("pipeline", run_signature(self.call_conv))
            };
            let id = module.declare_function(name, Linkage::Local, &sig).map_err(module_err("declare", 0))?;
            ctx.func.signature = sig;
            ctx.func.name = UserFuncName::user(0, id.as_u32());
            let mut builder = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let refs: Vec<Vec<FuncRef>> = callees.iter().map(|ids| import(module, &mut builder, ids)).collect();
            let envs: Vec<Env<'_>> = refs.iter().enumerate().map(|(s, r)| self.env(s, r)).collect();
            if batch {
                self.batch_entry(&mut builder, &envs)?;
            } else {
                self.run_entry(&mut builder, &envs)?;
            }
            builder.seal_all_blocks();
            builder.finalize(self.frontend);
            module.define_function(id, &mut ctx).map_err(module_err("compile", 0))?;
            code_size += ctx.compiled_code().map_or(0, |c| c.code_buffer().len());
            module.clear_context(&mut ctx);
            *(if batch { &mut looped } else { &mut single }) = Some(id);
        }
        module.finalize_definitions().map_err(module_err("finalize", 0))?;
        Ok((single, looped, code_size))
    }

    fn env<'e>(&'e self, stage: usize, refs: &'e [FuncRef]) -> Env<'e> {
        Env {
            prog: self.plan.stages[stage].program,
            layout: &self.layouts[stage],
            local_refs: refs,
            call_conv: self.call_conv,
            frontend: self.frontend,
        }
    }

    /// The single-packet entry: the stages, then return (code, mark).
    fn run_entry(&self, b: &mut FunctionBuilder<'_>, envs: &[Env<'_>]) -> Result<(), FuseError> {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let &[data, len, ifq, counters] = b.block_params(entry) else {
            unreachable!("run signature has four parameters")
        };
        let finish = b.create_block();
        let [code, mark, _, _] = [(); 4].map(|()| b.append_block_param(finish, I64));
        let frame = self.frame(b);
        self.packet(b, envs, &frame, [data, len, ifq, counters], finish)?;
        b.switch_to_block(finish);
        b.seal_block(finish);
        b.ins().return_(&[code, mark]);
        Ok(())
    }

    /// The batch entry: a rotated loop over the descriptors (see `batch::build`), storing
    /// `code | (mark + 1) << 32` per packet.
    fn batch_entry(&self, b: &mut FunctionBuilder<'_>, envs: &[Env<'_>]) -> Result<(), FuseError> {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        let body = b.create_block();
        let [desc, out] = [(); 2].map(|()| b.append_block_param(body, I64));
        let finish = b.create_block();
        let [code, mark, data_now, len_now] = [(); 4].map(|()| b.append_block_param(finish, I64));
        let done = b.create_block();

        b.switch_to_block(entry);
        b.seal_block(entry);
        let &[packets, count, exits, ifq, counters] = b.block_params(entry) else {
            unreachable!("batch signature has five parameters")
        };
        let frame = self.frame(b);
        let bytes = b.ins().imul_imm_s(count, REF_SIZE);
        let end = b.ins().iadd(packets, bytes);
        b.ins().brif(count, body, &[BlockArg::Value(packets), BlockArg::Value(exits)], done, &[]);

        b.switch_to_block(body);
        let data = b.ins().load(I64, MemFlagsData::trusted(), desc, 0);
        let len = b.ins().load(I64, MemFlagsData::trusted(), desc, 8);
        self.packet(b, envs, &frame, [data, len, ifq, counters], finish)?;

        b.switch_to_block(finish);
        b.seal_block(finish);
        let high = b.ins().ishl_imm_u(mark, 32);
        let word = b.ins().bor(code, high);
        let flags = lower::region_flags(b, Region::Counters).with_aligned();
        b.ins().store(flags, word, out, 0);
        if self.moves {
            b.ins().store(flags, data_now, desc, 0);
            b.ins().store(flags, len_now, desc, 8);
        }
        let next = b.ins().iadd_imm_s(desc, REF_SIZE);
        let out = b.ins().iadd_imm_s(out, 8);
        let finished = b.ins().icmp(IntCC::Equal, next, end);
        b.ins().brif(finished, done, &[], body, &[BlockArg::Value(next), BlockArg::Value(out)]);
        b.seal_block(body);

        b.switch_to_block(done);
        b.seal_block(done);
        b.ins().return_(&[]);
        Ok(())
    }

    /// Frame areas shared by all stages: one stack area if any stage reaches its stack, one
    /// `XdpContext` if any observes r1.
    fn frame(&self, b: &mut FunctionBuilder<'_>) -> Frame {
        let residuals = self.dispatch.leaves().into_iter().flatten().filter_map(|c| match c {
            Code::Own(_, layout) => Some(&**layout),
            _ => None,
        });
        let layouts: Vec<&Layout> = self.layouts.iter().chain(residuals).collect();
        let stack = layouts.iter().any(|l| l.stack != StackReach::None).then(|| {
            let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, STACK_AREA as u32, 4));
            b.ins().stack_addr(I64, slot, 0)
        });
        let ctx = layouts.iter().any(|l| l.uses_ctx).then(|| {
            let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, CTX_SIZE, 3));
            b.ins().stack_addr(I64, slot, 0)
        });
        let window = self.moves.then(|| {
            let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 16, 3));
            b.ins().stack_addr(I64, slot, 0)
        });
        let zero = b.ins().iconst(I64, 0);
        Frame { stack, ctx, window, zero }
    }

    /// Emits one packet's trip through the stages at the current block; every way out jumps
    /// to `finish(code, mark)`, which the caller fills and seals.
    ///
    /// The leading pure stages run under the dispatch ([`Dispatch`]): the fields they share
    /// are loaded and tested once, and each arm runs those stages specialized to the field
    /// values it knows. Every arm then joins the remaining stages, emitted once.
    fn packet(
        &self,
        b: &mut FunctionBuilder<'_>,
        envs: &[Env<'_>],
        frame: &Frame,
        [data, len, ifq, counters]: [Value; 4],
        finish: Block,
    ) -> Result<(), FuseError> {
        let mark = b.declare_var(I64);
        b.def_var(mark, frame.zero);
        // The packet window: a stage calling `xdp_adjust_head/tail` moves it for the stages
        // after it and for the caller.
        let (cur_data, cur_len) = (b.declare_var(I64), b.declare_var(I64));
        b.def_var(cur_data, data);
        b.def_var(cur_len, len);
        let run = Run { frame, ifq, counters, mark, cur_data, cur_len, finish };
        let tail = b.create_block();
        self.dispatch(b, self.dispatch, envs, &run, [data, len], tail)?;
        b.switch_to_block(tail);
        b.seal_block(tail);
        for (i, env) in envs.iter().enumerate().skip(self.prefix) {
            self.stage(b, i, env, &run)?;
        }
        run.hit(b, self.plan, self.plan.stages.len() as i32 * self.plan.counters.slot);
        run.finish_with(b, self.plan.default);
        Ok(())
    }

    /// Emits `node` of the dispatch at the current block: a leaf runs the first `prefix`
    /// stages (specialized where it has residuals) and jumps to `tail`.
    fn dispatch(&self, b: &mut FunctionBuilder<'_>, node: &Dispatch, envs: &[Env<'_>], run: &Run<'_>, [data, len]: [Value; 2], tail: Block) -> Result<(), FuseError> {
        match node {
            Tree::Leaf(stages) => {
                for (i, code) in stages.iter().enumerate() {
                    match code {
                        Code::Original => self.stage(b, i, &envs[i], run)?,
                        Code::Const(r0) => self.constant_stage(b, i, *r0, run),
                        Code::Own(prog, layout) => {
                            let env = Env { prog, layout, local_refs: &[], call_conv: self.call_conv, frontend: self.frontend };
                            self.stage(b, i, &env, run)?;
                        }
                    }
                }
                b.ins().jump(tail, &[]);
            }
            Tree::Split { off, size, arms, other, short } => {
                let (load, short_blk, other_blk) = (b.create_block(), b.create_block(), b.create_block());
                let holds = b.ins().icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, len, *off as i64 + *size as i64);
                b.ins().brif(holds, load, &[], short_blk, &[]);
                b.switch_to_block(load);
                b.seal_block(load);
                let value = field(b, data, *off, *size);
                let mut switch = Switch::new();
                let blocks: Vec<Block> = arms.iter().map(|(v, _)| {
                    let blk = b.create_block();
                    switch.set_entry(*v as u128, blk);
                    blk
                }).collect();
                switch.emit(b, value, other_blk);
                for (blk, (_, arm)) in blocks.into_iter().zip(arms) {
                    b.switch_to_block(blk);
                    b.seal_block(blk);
                    self.dispatch(b, arm, envs, run, [data, len], tail)?;
                }
                for (blk, arm) in [(other_blk, other), (short_blk, short)] {
                    b.switch_to_block(blk);
                    b.seal_block(blk);
                    self.dispatch(b, arm, envs, run, [data, len], tail)?;
                }
            }
        }
        Ok(())
    }

    /// Emits stage `i` known to end with `r0` without faulting: only what its rule does with
    /// that result (often nothing: a filter that cannot match), in the current block.
    fn constant_stage(&self, b: &mut FunctionBuilder<'_>, i: usize, r0: u64, run: &Run<'_>) {
        let plan = self.plan;
        let slot = i as i32 * plan.counters.slot;
        let step = match plan.stages[i].rule {
            Rule::Match { .. } if r0 == 0 => Step::Pass,
            Rule::Match { end, mark } => {
                run.hit(b, plan, slot);
                if mark {
                    run.mark(b, i);
                }
                match end {
                    Some(code) => return run.finish_with_then_dead(b, code),
                    None => Step::Pass,
                }
            }
            Rule::Verdict(steps) => usize::try_from(r0).ok().and_then(|v| steps.get(v)).copied().unwrap_or(Step::Abort),
        };
        match step {
            Step::Pass => {}
            Step::End(code) => {
                run.hit(b, plan, slot);
                run.finish_with_then_dead(b, code);
            }
            Step::Abort => {
                let one = b.ins().iconst(I64, 1);
                run.bump(b, slot + plan.counters.aborted, one);
                run.finish_with_then_dead(b, plan.abort);
            }
        }
    }

    /// Emits stage `i` (its program as `env` has it) at the current block and leaves the
    /// builder in the block where the packet goes on to the next stage.
    fn stage(&self, b: &mut FunctionBuilder<'_>, i: usize, env: &Env<'_>, run: &Run<'_>) -> Result<(), FuseError> {
        let plan = self.plan;
        let stage = &plan.stages[i];
        let (frame, zero) = (run.frame, run.frame.zero);
        // Fits: `check_layout` bounded (stages + 1) * slot by i32::MAX.
        let slot = i as i32 * plan.counters.slot;
        let (data, len) = (b.use_var(run.cur_data), b.use_var(run.cur_len));
        let r1 = match frame.ctx {
            Some(ctx) if env.layout.uses_ctx => {
                // A fresh context per stage, as a run of its own would get.
                let flags = lower::region_flags(b, Region::Context).with_aligned();
                let end = b.ins().iadd(data, len);
                b.ins().store(flags, data, ctx, 0);
                b.ins().store(flags, end, ctx, 8);
                b.ins().store(flags, data, ctx, 16);
                // ingress_ifindex and rx_queue_index are adjacent u32s: one store.
                b.ins().store(flags, run.ifq, ctx, 24);
                b.ins().store(flags, zero, ctx, 32);
                ctx
            }
            _ => zero,
        };

        // The blocks handling the stage's outcomes exist before its code, so that its
        // exits with a constant r0 (a classic filter's `ret #0` / `ret #k`) branch to them
        // directly instead of through the exit block's join and re-test.
        let exit = b.create_block();
        let (verdict, faulted) = (b.append_block_param(exit, I64), b.append_block_param(exit, I64));
        let next = b.create_block();
        let abort = b.create_block();
        b.set_cold_block(abort);
        let ends: Vec<(Block, u32)> = match stage.rule {
            Rule::Match { end: _, mark: _ } => vec![(b.create_block(), 0)],
            Rule::Verdict(steps) => steps
                .iter()
                .filter_map(|s| match *s {
                    Step::End(code) => Some((b.create_block(), code)),
                    _ => None,
                })
                .collect(),
        };
        // Where each outcome goes: for `Match`, [no match, match]; for `Verdict`, by r0.
        let targets: Vec<Block> = match stage.rule {
            Rule::Match { .. } => vec![next, ends[0].0],
            Rule::Verdict(steps) => {
                let mut end_blocks = ends.iter().map(|e| e.0);
                steps
                    .iter()
                    .map(|s| match s {
                        Step::Pass => next,
                        Step::Abort => abort,
                        Step::End(_) => end_blocks.next().unwrap_or(abort),
                    })
                    .collect()
            }
        };
        let shortcuts = match stage.rule {
            Rule::Match { .. } => Exits { zero: Some(targets[0]), nonzero: Some(targets[1]) },
            Rule::Verdict(_) => Exits { zero: Some(targets[0]), nonzero: None },
        };
        match self.callouts[i] {
            Some(jit) => {
                let args = [data, len, run.ifq];
                let [verdict, faulted] = callout(b, self.call_conv, jit, args, frame.window.filter(|_| env.layout.moves));
                if let (Some(window), true) = (frame.window, env.layout.moves) {
                    let flags = lower::region_flags(b, Region::Context).with_aligned();
                    let start = b.ins().load(I64, flags, window, 0);
                    let end = b.ins().load(I64, flags, window, 8);
                    let moved = b.ins().iadd(data, start);
                    let new_len = b.ins().isub(end, start);
                    b.def_var(run.cur_data, moved);
                    b.def_var(run.cur_len, new_len);
                }
                b.ins().jump(exit, &[BlockArg::Value(verdict), BlockArg::Value(faulted)]);
            }
            None => Lower::inline_with(b, env, [r1, zero, data, len, run.ifq], exit, frame.stack, shortcuts)
                .run()
                .map_err(|source| FuseError::Stage { stage: i, source })?,
        }

        b.switch_to_block(exit);
        b.seal_block(exit);
        let ran = b.create_block();
        b.ins().brif(faulted, abort, &[], ran, &[]);
        b.switch_to_block(ran);
        b.seal_block(ran);
        match stage.rule {
            Rule::Match { .. } => {
                b.ins().brif(verdict, targets[1], &[], targets[0], &[]);
            }
            Rule::Verdict(_) => {
                let mut switch = Switch::new();
                for (v, target) in targets.iter().enumerate() {
                    switch.set_entry(v as u128, *target);
                }
                switch.emit(b, verdict, abort);
            }
        }
        for (blk, code) in ends {
            b.switch_to_block(blk);
            b.seal_block(blk);
            run.hit(b, plan, slot);
            match stage.rule {
                Rule::Match { end, mark: marks } => {
                    if marks {
                        run.mark(b, i);
                    }
                    match end {
                        Some(code) => run.finish_with(b, code),
                        None => {
                            b.ins().jump(next, &[]);
                        }
                    }
                }
                Rule::Verdict(_) => run.finish_with(b, code),
            }
        }
        b.switch_to_block(abort);
        b.seal_block(abort);
        let one = b.ins().iconst(I64, 1);
        run.bump(b, slot + plan.counters.aborted, one);
        run.finish_with(b, plan.abort);

        b.switch_to_block(next);
        b.seal_block(next);
        Ok(())
    }
}

/// The dispatch the fused code runs first: per leaf, each stage's code.
type Dispatch = Tree<Vec<Code>>;

/// A stage's code in one leaf of the dispatch.
enum Code {
    /// The stage's own program (with its callees and verifier proofs).
    Original,
    /// The program ends with this r0 on every packet reaching the leaf, without faulting.
    Const(u64),
    /// The residual program for the leaf, with its layout (both shared by leaves).
    Own(Rc<Program>, Rc<Layout>),
}

/// One packet's trip: the values and variables every stage of the packet code shares.
struct Run<'f> {
    frame: &'f Frame,
    ifq: Value,
    counters: Value,
    /// The first marking stage that matched, + 1 (0: none yet).
    mark: Variable,
    cur_data: Variable,
    cur_len: Variable,
    finish: Block,
}

impl Run<'_> {
    /// Ends the packet with `code`: jumps to `finish(code, mark, data, len)`.
    fn finish_with(&self, b: &mut FunctionBuilder<'_>, code: u32) {
        let code = b.ins().iconst(I64, code as i64);
        let m = b.use_var(self.mark);
        let (d, l) = (b.use_var(self.cur_data), b.use_var(self.cur_len));
        b.ins().jump(self.finish, &[code, m, d, l].map(BlockArg::Value));
    }

    /// Records stage `i` as the packet's mark unless an earlier stage is recorded.
    fn mark(&self, b: &mut FunctionBuilder<'_>, i: usize) {
        let m = b.use_var(self.mark);
        let unset = b.ins().icmp_imm_s(IntCC::Equal, m, 0);
        let this = b.ins().iconst(I64, i as i64 + 1);
        let m = b.ins().select(unset, this, m);
        b.def_var(self.mark, m);
    }

    /// [`finish_with`](Self::finish_with), then goes on in a new block nothing jumps to, so
    /// that what follows a stage that always ends the packet is still well formed.
    fn finish_with_then_dead(&self, b: &mut FunctionBuilder<'_>, code: u32) {
        self.finish_with(b, code);
        let dead = b.create_block();
        b.switch_to_block(dead);
        b.seal_block(dead);
    }

    fn bump(&self, b: &mut FunctionBuilder<'_>, off: i32, by: Value) {
        let flags = lower::region_flags(b, Region::Counters).with_aligned();
        let old = b.ins().load(I64, flags, self.counters, off);
        let new = b.ins().iadd(old, by);
        b.ins().store(flags, new, self.counters, off);
    }

    /// Counts the packet (and its bytes) in the slot at `slot`.
    fn hit(&self, b: &mut FunctionBuilder<'_>, plan: &Plan<'_>, slot: i32) {
        let one = b.ins().iconst(I64, 1);
        self.bump(b, slot + plan.counters.packets, one);
        let len = b.use_var(self.cur_len);
        self.bump(b, slot + plan.counters.bytes, len);
    }
}

/// The dispatched field as `LD_ABS` reads it (network order, zero-extended); the caller
/// checked that the packet holds it.
fn field(b: &mut FunctionBuilder<'_>, data: Value, off: u32, size: u8) -> Value {
    let flags = lower::region_flags(b, Region::Program);
    let addr = b.ins().iadd_imm_s(data, off as i64);
    match size {
        1 => b.ins().uload8(I64, flags, addr, 0),
        _ => {
            let ty = if size == 2 { types::I16 } else { types::I32 };
            let raw = b.ins().load(ty, flags, addr, 0);
            let v = b.ins().bswap(raw);
            b.ins().uextend(I64, v)
        }
    }
}

/// Areas of the enclosing function's frame, and a zero everyone may use.
struct Frame {
    stack: Option<Value>,
    ctx: Option<Value>,
    /// Two words where a called-out stage that may move the packet leaves its window.
    window: Option<Value>,
    zero: Value,
}

/// `(jit, data, len, ifindex | rx_queue << 32, window) -> (verdict, faulted)`.
fn callout_signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    sig.params.extend([AbiParam::new(I64); 5]);
    sig.returns.extend([AbiParam::new(I64); 2]);
    sig
}

/// Emits a call of `run_callout` for the stage compiled as `jit`, with `[data, len, ifq]`;
/// returns (verdict, faulted) as an inlined stage's exit receives them.
fn callout(b: &mut FunctionBuilder<'_>, call_conv: CallConv, jit: usize, [data, len, ifq]: [Value; 3], window: Option<Value>) -> [Value; 2] {
    let sig = b.import_signature(callout_signature(call_conv));
    let f = b.ins().iconst(I64, run_callout as *const () as usize as i64);
    let jit = b.ins().iconst(I64, jit as i64);
    let window = match window {
        Some(w) => w,
        None => b.ins().iconst(I64, 0),
    };
    let call = b.ins().call_indirect(sig, f, &[jit, data, len, ifq, window]);
    let r = b.inst_results(call);
    [r[0], r[1]]
}

/// Two integers in registers (the C ABI), like `FusedOut`.
#[repr(C)]
struct CalloutOut {
    verdict: u64,
    faulted: u64,
}

/// Runs a stage that calls kernel helpers, which must run inside its own helper frame (its
/// maps, the packet window it may move: `helpers::env`) — so such a stage is its own
/// [`JitProgram`], called from the fused code through here rather than inlined. Writes the
/// window after the run, as `[start, end)` offsets into `data..data+len`, to `window` unless
/// it is null.
///
/// # Safety
/// `jit` points to a live `JitProgram`, `data..data+len` is the packet the fused function is
/// running on (exclusively borrowed by its caller), `window` is null or two writable words.
unsafe extern "C" fn run_callout(jit: *const JitProgram, data: *mut u8, len: u64, ifq: u64, window: *mut u64) -> CalloutOut {
    // SAFETY: the fused code passes a pointer to one of its pipeline's `callouts`, which live
    // as long as the code; see the function's contract for the packet.
    let (jit, packet) = unsafe { (&*jit, std::slice::from_raw_parts_mut(data, len as usize)) };
    let (result, moved) = jit.run_xdp_window(packet, ifq as u32, (ifq >> 32) as u32);
    if !window.is_null() {
        let (start, end) = moved.unwrap_or((0, len));
        // SAFETY: non-null, `window` is the fused function's two-word frame slot.
        unsafe {
            window.write(start);
            window.add(1).write(end);
        }
    }
    match result {
        Ok(v) => CalloutOut { verdict: v, faulted: 0 },
        Err(_) => CalloutOut { verdict: crate::bpf::Fault::VERDICT, faulted: 1 },
    }
}

/// Imports a stage's callees into the function being built, indexed like `Layout::funcs`.
/// Slot 0 (the stage's entry, which is inlined) is never called — `Layout::local_index`
/// only returns 1.. — so it repeats slot 1 to keep the indices aligned.
fn import(module: &mut JITModule, b: &mut FunctionBuilder<'_>, ids: &[FuncId]) -> Vec<FuncRef> {
    let mut refs: Vec<FuncRef> = ids.iter().map(|&id| module.declare_func_in_func(id, b.func)).collect();
    if let Some(&first) = refs.first() {
        refs.insert(0, first);
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::check::validate;
    use crate::bpf::interp::Interpreter;
    use crate::bpf::{Exec, Fault, Helpers, Verdict};
    use crate::bpf::source::{compile_text, Format};
    use crate::testbed::corpus;

    const LAYOUT: CounterLayout = CounterLayout { slot: 32, packets: 0, bytes: 8, aborted: 16 };

    fn program(text: &str, format: Format) -> Program {
        compile_text(text, format).expect("compile").program
    }

    /// The plan's meaning over interpreter runs; counts into `counts[slot] = [packets, bytes,
    /// aborted]`.
    fn reference(plan: &Plan<'_>, pkt: &mut [u8], counts: &mut [[u64; 3]]) -> Exit {
        let len = pkt.len() as u64;
        let mut mark = None;
        for (i, s) in plan.stages.iter().enumerate() {
            let r = Interpreter::new(s.program).run_xdp(pkt, 7, 3);
            let step = match (r, s.rule) {
                (Err(_), _) => Step::Abort,
                (Ok(0), Rule::Match { .. }) => Step::Pass,
                (Ok(_), Rule::Match { end, mark: m }) => {
                    counts[i][0] += 1;
                    counts[i][1] += len;
                    if m {
                        mark = mark.or(Some(i as u32));
                    }
                    match end {
                        Some(code) => return Exit { code, mark },
                        None => Step::Pass,
                    }
                }
                (Ok(v), Rule::Verdict(steps)) => steps.get(v as usize).copied().unwrap_or(Step::Abort),
            };
            match step {
                Step::Pass => {}
                Step::End(code) => {
                    counts[i][0] += 1;
                    counts[i][1] += len;
                    return Exit { code, mark };
                }
                Step::Abort => {
                    counts[i][2] += 1;
                    return Exit { code: plan.abort, mark };
                }
            }
        }
        let n = plan.stages.len();
        counts[n][0] += 1;
        counts[n][1] += len;
        Exit { code: plan.default, mark }
    }

    fn block(words: usize) -> Vec<AtomicU64> {
        (0..words).map(|_| AtomicU64::new(0)).collect()
    }

    fn read(block: &[AtomicU64], slots: usize) -> Vec<[u64; 3]> {
        let w = |i: usize| block[i].load(std::sync::atomic::Ordering::Relaxed);
        (0..slots).map(|s| [w(s * 4), w(s * 4 + 1), w(s * 4 + 2)]).collect()
    }

    fn agree(plan: &Plan<'_>) {
        let packets: Vec<Vec<u8>> = corpus::corpus().into_iter().step_by(7).chain([vec![0u8; 10], Vec::new()]).collect();
        agree_on(plan, &packets);
    }

    fn agree_on(plan: &Plan<'_>, packets: &[Vec<u8>]) {
        let fused = FusedPipeline::compile(plan).expect("fuse");
        let slots = plan.stages.len() + 1;
        let (ours, batch_counts) = (block(fused.counter_words()), block(fused.counter_words()));
        let mut want = vec![[0u64; 3]; slots];
        let mut copies = packets.to_vec();
        let mut expected = Vec::new();
        for (pi, p) in packets.iter().enumerate() {
            let (mut a, mut b) = (p.clone(), p.clone());
            let got = fused.run(&mut a, 7, 3, &ours);
            let exit = reference(plan, &mut b, &mut want);
            assert_eq!(got, exit, "packet {pi}");
            assert_eq!(a, b, "packet {pi}: contents");
            expected.push((exit, b));
        }
        assert_eq!(read(&ours, slots), want);
        if fused.has_batch() {
            let mut refs: Vec<PacketRef<'_>> = copies.iter_mut().map(|p| PacketRef::new(p)).collect();
            let mut exits = vec![u64::MAX; refs.len()];
            fused.run_batch(&mut refs, 7, 3, &batch_counts, &mut exits);
            let got: Vec<Exit> = exits.iter().map(|&w| Exit::from_word(w)).collect();
            let (want_exits, want_pkts): (Vec<Exit>, Vec<Vec<u8>>) = expected.into_iter().unzip();
            assert_eq!(got, want_exits);
            assert_eq!(copies, want_pkts);
            assert_eq!(read(&batch_counts, slots), want);
        }
    }

    const XDP_STEPS: [Step; 5] = [Step::Abort, Step::End(10), Step::Pass, Step::End(11), Step::End(12)];

    #[test]
    fn fused_stages_agree_with_interpreter_runs() {
        let udp = program("udp", Format::Tcpdump);
        let dns = program("udp dst port 53", Format::Tcpdump);
        let tcp = program("tcp", Format::Tcpdump);
        let big = program("greater 100", Format::Tcpdump);
        // Writes the packet (faults on short frames), uses the stack, observes r1.
        let write = program("r2 = *(u32 *)(r1 + 0)\n*(u8 *)(r2 + 20) = 0x5a\nr0 = 2\nexit\n", Format::Asm);
        let stack = program("*(u64 *)(r10 - 8) = 3\nr0 = *(u64 *)(r10 - 8)\nexit\n", Format::Asm);
        let seven = program("r0 = 7\nexit\n", Format::Asm);
        // Constant exits take the shortcut to the outcome's block: 0 aborts a verdict stage.
        let aborts = program("w0 = 0\nexit\n", Format::Asm);
        let stages = [
            Stage { program: &udp, rule: Rule::Match { end: None, mark: false }, verified: None },
            Stage { program: &big, rule: Rule::Match { end: None, mark: true }, verified: None },
            Stage { program: &write, rule: Rule::Verdict(XDP_STEPS), verified: None },
            Stage { program: &dns, rule: Rule::Match { end: Some(3), mark: false }, verified: None },
            Stage { program: &udp, rule: Rule::Match { end: None, mark: true }, verified: None },
            Stage { program: &stack, rule: Rule::Verdict(XDP_STEPS), verified: None },
            Stage { program: &tcp, rule: Rule::Match { end: Some(1), mark: false }, verified: None },
            Stage { program: &seven, rule: Rule::Verdict(XDP_STEPS), verified: None },
            Stage { program: &aborts, rule: Rule::Verdict(XDP_STEPS), verified: None },
        ];
        for n in 0..=stages.len() {
            for entries in [Entries::Single, Entries::Batch, Entries::Both] {
                agree(&Plan { stages: &stages[..n], default: 2, abort: 0, counters: LAYOUT, entries, dispatch: DISPATCH_BUDGET });
            }
        }
    }

    #[test]
    fn dispatched_stages_agree_with_interpreter_runs() {
        let texts = corpus::FILTERS.iter().chain(&["ip6 and tcp port 22", "greater 100", "ether[12] = 8"]);
        let filters: Vec<Program> = texts.map(|t| program(t, Format::Tcpdump)).collect();
        // Pure verdict stages the dispatch folds to constants: DROP (1) ARP, abort (5) RARP,
        // else PASS (2), which goes on; short packets abort (0), so these come last.
        let arp = program("r0 = *(u16 *)skb[12]\nif w0 == 0x806 goto +2\nr0 = 2\nexit\nr0 = 1\nexit\n", Format::Asm);
        let rarp = program("r0 = *(u16 *)skb[12]\nif w0 == 0x8035 goto +2\nr0 = 2\nexit\nr0 = 5\nexit\n", Format::Asm);
        let write = program("r2 = *(u32 *)(r1 + 0)\n*(u8 *)(r2 + 20) = 0x5a\nr0 = 2\nexit\n", Format::Asm);
        let rule = |i: usize| match i % 4 {
            0 => Rule::Match { end: None, mark: false },
            1 => Rule::Match { end: None, mark: true },
            2 if i > 6 => Rule::Match { end: Some(20 + i as u32), mark: true },
            _ => Rule::Match { end: None, mark: false },
        };
        let mut stages: Vec<Stage<'_>> = filters.iter().enumerate().map(|(i, p)| Stage { program: p, rule: rule(i), verified: None }).collect();
        stages.push(Stage { program: &arp, rule: Rule::Verdict(XDP_STEPS), verified: None });
        stages.push(Stage { program: &rarp, rule: Rule::Verdict(XDP_STEPS), verified: None });
        // After a stage that writes the packet, the dispatch knows nothing: the rest is emitted once.
        let mut tail = stages.clone();
        tail.insert(8, Stage { program: &write, rule: Rule::Verdict(XDP_STEPS), verified: None });
        let packets = corpus::field_variants(9);
        for dispatch in [0, 2, 8] {
            for stages in [&stages, &tail] {
                agree_on(&Plan { stages, default: 2, abort: 0, counters: LAYOUT, entries: Entries::Both, dispatch }, &packets);
            }
        }
        // The runs above did go through a dispatch, first on the ethertype.
        let programs: Vec<&Program> = stages.iter().map(|s| s.program).collect();
        assert!(matches!(specialize::tree(&programs, 2), Tree::Split { off: 12, size: 2, .. }));
    }

    #[test]
    fn callees_are_functions_of_the_fused_module() {
        // r0 = f(); f: r0 = 2 (PASS), then a second stage with its own callee returning 3.
        let call = |v: u32| format!("call pc+1\nexit\nr0 = {v}\nexit\n");
        let (a, b) = (program(&call(2), Format::Asm), program(&call(3), Format::Asm));
        let stages = [Stage { program: &a, rule: Rule::Verdict(XDP_STEPS), verified: None }, Stage { program: &b, rule: Rule::Verdict(XDP_STEPS), verified: None }];
        let plan = Plan { stages: &stages, default: 9, abort: 0, counters: LAYOUT, entries: Entries::Both, dispatch: DISPATCH_BUDGET };
        agree(&plan);
        let fused = FusedPipeline::compile(&plan).unwrap();
        let counts = block(fused.counter_words());
        assert_eq!(fused.run(&mut corpus::udp_64(1), 0, 0, &counts), Exit { code: 11, mark: None });
    }

    #[test]
    fn refuses_bad_layouts_and_raw_programs() {
        let udp = program("udp", Format::Tcpdump);
        let stages = [Stage { program: &udp, rule: Rule::Match { end: None, mark: false }, verified: None }];
        for bad in [
            CounterLayout { slot: 12, ..LAYOUT },
            CounterLayout { aborted: 32, ..LAYOUT },
            CounterLayout { bytes: 4, ..LAYOUT },
            CounterLayout { slot: i32::MAX - 7, ..LAYOUT },
        ] {
            let e = FusedPipeline::compile(&Plan { stages: &stages, default: 0, abort: 0, counters: bad, entries: Entries::Single, dispatch: DISPATCH_BUDGET });
            assert!(matches!(e, Err(FuseError::Layout(_))), "{bad:?}");
        }
        let raw = validate(vec![crate::bpf::insn::build::mov64_imm(0, 1), crate::bpf::insn::build::exit()], ProgKind::Raw, &Helpers::none())
            .unwrap();
        let stages = [stages[0], Stage { program: &raw, rule: Rule::Verdict(XDP_STEPS), verified: None }];
        let e = FusedPipeline::compile(&Plan { stages: &stages, default: 0, abort: 0, counters: LAYOUT, entries: Entries::Single, dispatch: DISPATCH_BUDGET });
        assert_eq!(e.unwrap_err().to_string(), "stage 1: only xdp programs can be fused");
    }

    #[test]
    fn fault_verdict_matches_the_single_program_path() {
        // A faulting stage aborts whatever its rule says, like a faulted `JitProgram` run.
        let write = program("r2 = *(u32 *)(r1 + 0)\n*(u8 *)(r2 + 20) = 0x5a\nr0 = 2\nexit\n", Format::Asm);
        let stages = [Stage { program: &write, rule: Rule::Match { end: Some(5), mark: true }, verified: None }];
        let fused = FusedPipeline::compile(&Plan { stages: &stages, default: 4, abort: 6, counters: LAYOUT, entries: Entries::Single, dispatch: DISPATCH_BUDGET }).unwrap();
        let counts = block(fused.counter_words());
        let mut short = vec![0u8; 8];
        assert!(matches!(super::super::JitProgram::compile(&write).unwrap().run_xdp(&mut short, 0, 0), Err(Fault::OutOfBounds { .. })));
        assert_eq!(fused.run(&mut short, 0, 0, &counts), Exit { code: 6, mark: None });
        assert_eq!(read(&counts, 2), vec![[0, 0, 1], [0, 0, 0]]);
        assert_eq!(Verdict::from_r0(Fault::VERDICT), Verdict::Aborted);
    }
}
