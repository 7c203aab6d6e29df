//! The Cranelift JIT: compiles a validated [`Program`] to host machine code (x86-64 or aarch64,
//! whatever `cranelift-native` detects) with the interpreter's exact semantics and memory model.
//!
//! Each [`JitProgram`] owns the `JITModule` holding its code and frees that memory when dropped,
//! so filters can be swapped indefinitely. The program entry is one native function
//! (`EntryFn`); bpf-to-bpf callees are further functions of the same module.
//!
//! Memory safety does not depend on the program: every load, store and atomic is checked at
//! run time against the data region and the stack area, except where `analyze` proved the
//! access in range at compile time. A failed check returns a status word describing the fault
//! beside the faulting address (`Outcome`); [`JitProgram`] turns it into the same [`Fault`] the
//! interpreter reports.

mod analyze;
mod batch;
pub mod fuse;
mod lower;
#[cfg(test)]
mod tests;

use std::mem::ManuallyDrop;
use std::sync::{Mutex, OnceLock, PoisonError};

use cranelift_codegen::ir::UserFuncName;
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module, ModuleError};

use crate::bpf::helpers::{self, Helpers, StackArea};
use crate::bpf::verifier::Verified;
use crate::bpf::{Exec, Fault, Insn, ProgKind, Program, XdpContext};

pub use batch::PacketRef;
use batch::BatchFn;

/// The native entry: `(r1, r2, data, data_len, ifindex | rx_queue << 32) -> (value, status)`.
type EntryFn = unsafe extern "C" fn(u64, u64, *mut u8, u64, u64) -> Outcome;

/// Why a program could not be compiled. Validated programs only fail on host problems.
#[derive(Debug, thiserror::Error)]
pub enum JitError {
    #[error("set up cranelift for this host: {0}")]
    Host(String),
    #[error("compile: program is empty")]
    Empty,
    #[error("compile: instruction {pc}: target {target} is outside the program or inside an lddw")]
    BadTarget { pc: usize, target: i64 },
    #[error("compile: instruction {pc}: control falls off the end of the program")]
    FallsOffEnd { pc: usize },
    #[error("compile: instruction {pc} ({insn:?}): {reason}")]
    Unsupported { pc: usize, insn: Insn, reason: &'static str },
    #[error("compile: {stage} function at instruction {entry}: {source}")]
    Module {
        stage: &'static str,
        entry: usize,
        #[source]
        source: Box<ModuleError>,
    },
}

/// What ended a native run early (bits 0-7 of the status word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum TrapKind {
    OutOfBounds = 1,
    CallDepth = 2,
    UnknownHelper = 3,
    /// A callee stopped the run with r0 = 0 (packet load out of range, unwinding helper).
    Stop = 4,
}

/// What a native function returns: two integers, which the C ABI of both x86-64 (rax:rdx)
/// and aarch64 (x0:x1) returns in registers, exactly where Cranelift puts two `i64` results.
/// `word` is 0 after a normal exit, then `value` is r0; otherwise `word` packs the kind (bits
/// 0-7), access size (8-15), write flag (16) and pc (32-63), and `value` is the faulting
/// address or unknown helper id. Each trap site returns one constant word.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Outcome {
    value: u64,
    word: u64,
}

fn trap_word(kind: TrapKind, pc: usize, size: usize, write: bool) -> u64 {
    kind as u64 | (size as u64) << 8 | (write as u64) << 16 | (pc as u64) << 32
}

impl Outcome {
    #[inline(always)]
    fn into_result(self) -> Result<u64, Fault> {
        if self.word == 0 {
            return Ok(self.value);
        }
        let pc = (self.word >> 32) as usize;
        match self.word & 0xff {
            1 => Err(Fault::OutOfBounds {
                pc,
                addr: self.value,
                size: (self.word >> 8) as u8,
                write: self.word >> 16 & 1 == 1,
            }),
            2 => Err(Fault::CallDepth { pc }),
            3 => Err(Fault::UnknownHelper { pc, id: self.value }),
            _ => Ok(0),
        }
    }
}

/// A program compiled to native code. Cheap to share: workers hold it through `Arc`.
pub struct JitProgram {
    entry: EntryFn,
    /// The same program inlined into a loop over a batch of packets (`Xdp` programs only).
    batch: Option<BatchFn>,
    /// Only `Drop` touches the module (through `get_mut`, never locking); the mutex is what
    /// makes the module, which is `Send` but not `Sync`, shareable between threads.
    module: Mutex<ManuallyDrop<JITModule>>,
    code_size: usize,
    uses_ctx: bool,
    /// Kept for programs with kernel helpers: runs go through `helpers::enter`, and the maps
    /// whose addresses the code holds stay alive as long as the code.
    helpers: Helpers,
}

impl std::fmt::Debug for JitProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitProgram").field("code_size", &self.code_size).finish_non_exhaustive()
    }
}

fn host_isa() -> Result<OwnedTargetIsa, JitError> {
    static ISA: OnceLock<Result<OwnedTargetIsa, String>> = OnceLock::new();
    ISA.get_or_init(|| {
        let builder = cranelift_native::builder().map_err(|e| format!("detect host: {e}"))?;
        finish_isa(builder)
    })
    .clone()
    .map_err(JitError::Host)
}

/// The code generator for `builder`'s target, with sluice's settings.
fn finish_isa(builder: cranelift_codegen::isa::Builder) -> Result<OwnedTargetIsa, String> {
    let mut flags = settings::builder();
    let set = |flags: &mut settings::Builder, name: &str, value: &str| {
        flags.set(name, value).map_err(|e| format!("set {name}={value}: {e}"))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "is_pic", "false")?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    set(&mut flags, "unwind_info", "false")?;
    // The 4 KiB stack area must not jump over a guard page.
    set(&mut flags, "enable_probestack", "true")?;
    set(&mut flags, "probestack_strategy", "inline")?;
    set(&mut flags, "enable_verifier", if cfg!(debug_assertions) { "true" } else { "false" })?;
    // Local functions return r0..r5 and a status word: seven values, one more than aarch64's
    // `tail` convention has return registers (x2..x7); the extra one goes through memory.
    set(&mut flags, "enable_multi_ret_implicit_sret", "true")?;
    builder.finish(settings::Flags::new(flags)).map_err(|e| format!("build isa: {e}"))
}

/// Compiles `prog` for another architecture (a target triple such as `aarch64-unknown-linux-gnu`,
/// if this build of Cranelift includes it) and returns the size of the machine code; the code
/// is generated exactly as for the host, then discarded, never run. This is how the aarch64
/// back end is tested on an x86-64 machine.
pub fn cross_compile(prog: &Program, triple: &str) -> Result<usize, JitError> {
    let builder = cranelift_codegen::isa::lookup_by_name(triple).map_err(|e| JitError::Host(format!("target `{triple}`: {e}")))?;
    let isa = finish_isa(builder).map_err(JitError::Host)?;
    let layout = analyze::analyze(prog)?;
    let call_conv = isa.default_call_conv();
    let frontend = isa.frontend_config();
    let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
    let defined = JitProgram::define(&mut module, prog, &layout, call_conv, frontend, false);
    // SAFETY: nothing from this module was handed out or ever ran (it was never finalized).
    unsafe { module.free_memory() };
    defined.map(|(_, _, size)| size)
}

impl JitProgram {
    pub fn compile(prog: &Program) -> Result<JitProgram, JitError> {
        Self::build(prog, analyze::analyze(prog)?)
    }

    /// Compiles a program the verifier accepted (`verified` must come from verifying `prog`):
    /// every memory access it proved in bounds runs with no run-time check.
    pub fn compile_verified(prog: &Program, verified: &Verified) -> Result<JitProgram, JitError> {
        Self::build(prog, analyze::analyze_verified(prog, verified)?)
    }

    fn build(prog: &Program, layout: analyze::Layout) -> Result<JitProgram, JitError> {
        let isa = host_isa()?;
        let call_conv = isa.default_call_conv();
        let frontend = isa.frontend_config();
        let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        match Self::define(&mut module, prog, &layout, call_conv, frontend, true) {
            Ok((main, batch, code_size)) => {
                let code = module.get_finalized_function(main);
                // SAFETY: `code` is the finalized entry function, built with `entry_signature`
                // under the host's default calling convention, which is the C ABI `EntryFn`
                // declares. The module that owns the code is stored beside the pointer and is
                // freed only in `Drop`, so the pointer never outlives it.
                let entry = unsafe { std::mem::transmute::<*const u8, EntryFn>(code) };
                // SAFETY: as above, for the function built by `batch::build` with
                // `batch::signature`, which is the C ABI `BatchFn` declares.
                let batch = batch.map(|id| unsafe {
                    std::mem::transmute::<*const u8, BatchFn>(module.get_finalized_function(id))
                });
                Ok(JitProgram {
                    entry,
                    batch,
                    module: Mutex::new(ManuallyDrop::new(module)),
                    code_size,
                    uses_ctx: layout.uses_ctx,
                    helpers: prog.helpers().clone(),
                })
            }
            Err(e) => {
                // SAFETY: nothing from this module was handed out or ever ran.
                unsafe { module.free_memory() };
                Err(e)
            }
        }
    }

    /// Declares and builds every function, and finalizes them when asked (not for a foreign
    /// target); returns the entry ids and the code bytes.
    fn define(
        module: &mut JITModule,
        prog: &Program,
        layout: &analyze::Layout,
        call_conv: cranelift_codegen::isa::CallConv,
        frontend: cranelift_codegen::isa::TargetFrontendConfig,
        finalize: bool,
    ) -> Result<(FuncId, Option<FuncId>, usize), JitError> {
        let module_err = |stage, entry| move |e| JitError::Module { stage, entry, source: Box::new(e) };
        let mut ids = Vec::with_capacity(layout.funcs.len());
        for (i, f) in layout.funcs.iter().enumerate() {
            let sig = if i == 0 { lower::entry_signature(call_conv) } else { lower::local_signature() };
            let name = format!("bpf_{i}_at_{}", f.entry);
            ids.push(module.declare_function(&name, Linkage::Local, &sig).map_err(module_err("declare", f.entry))?);
        }
        let mut ctx = module.make_context();
        let mut fctx = FunctionBuilderContext::new();
        let mut code_size = 0;
        for (i, f) in layout.funcs.iter().enumerate() {
            ctx.func.signature = if i == 0 { lower::entry_signature(call_conv) } else { lower::local_signature() };
            ctx.func.name = UserFuncName::user(0, ids[i].as_u32());
            let mut builder = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let local_refs: Vec<_> = ids.iter().map(|&id| module.declare_func_in_func(id, builder.func)).collect();
            let env = lower::Env { prog, layout, local_refs: &local_refs, call_conv, frontend };
            lower::Lower::new(&mut builder, &env, i).run()?;
            builder.seal_all_blocks();
            builder.finalize(frontend);
            module.define_function(ids[i], &mut ctx).map_err(module_err("compile", f.entry))?;
            code_size += ctx.compiled_code().map_or(0, |c| c.code_buffer().len());
            module.clear_context(&mut ctx);
        }
        let batch = if prog.kind == ProgKind::Xdp {
            let sig = batch::signature(call_conv);
            let id = module.declare_function("bpf_batch", Linkage::Local, &sig).map_err(module_err("declare", 0))?;
            ctx.func.signature = sig;
            ctx.func.name = UserFuncName::user(0, id.as_u32());
            let builder = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let local_refs: Vec<_> = ids.iter().map(|&id| module.declare_func_in_func(id, builder.func)).collect();
            let env = lower::Env { prog, layout, local_refs: &local_refs, call_conv, frontend };
            batch::build(builder, &env)?;
            module.define_function(id, &mut ctx).map_err(module_err("compile", 0))?;
            code_size += ctx.compiled_code().map_or(0, |c| c.code_buffer().len());
            module.clear_context(&mut ctx);
            Some(id)
        } else {
            None
        };
        if finalize {
            module.finalize_definitions().map_err(module_err("finalize", 0))?;
        }
        Ok((ids[0], batch, code_size))
    }

    /// Runs the program over every packet of `packets` in ONE native call (the program is
    /// inlined into a loop), writing each verdict (r0) to `verdicts`; a faulting run's verdict
    /// is [`Fault::VERDICT`]. Returns how many runs faulted; `run_xdp` on such a packet gives
    /// the fault itself. Same results as `run_xdp` per packet, without a call per packet.
    ///
    /// Panics if `verdicts` is shorter than `packets` or the program is not an `Xdp` program
    /// (only those have a batch entry) — both are caller bugs, not input errors.
    pub fn run_batch(&self, packets: &mut [PacketRef<'_>], ingress_ifindex: u32, rx_queue_index: u32, verdicts: &mut [u64]) -> usize {
        let batch = self.batch.expect("run_batch needs an Xdp program");
        assert!(verdicts.len() >= packets.len(), "run_batch: {} verdict slots for {} packets", verdicts.len(), packets.len());
        if self.helpers.needs_env() {
            // Kernel helpers read per-run state (the packet window, map slots) that is set
            // around each run, so such programs take one call per packet.
            let mut faults = 0;
            for (p, v) in packets.iter_mut().zip(verdicts.iter_mut()) {
                // SAFETY: a `PacketRef` holds a live, exclusive borrow of `len` bytes at `data`.
                let packet = unsafe { std::slice::from_raw_parts_mut(p.data, p.len as usize) };
                *v = self.run_xdp(packet, ingress_ifindex, rx_queue_index).unwrap_or_else(|_| {
                    faults += 1;
                    Fault::VERDICT
                });
            }
            return faults;
        }
        let ifq = ingress_ifindex as u64 | (rx_queue_index as u64) << 32;
        // SAFETY: `batch` points into code owned by `self.module`, alive for `&self`. For each
        // of the `packets.len()` descriptors it reads, the code touches only that packet's
        // bytes (each `PacketRef` borrows its buffer mutably, so they are live and disjoint),
        // its own stack area, and `verdicts[i]` for i < packets.len() (checked above); every
        // other address is refused by the same run-time checks as the single-packet entry.
        let faults = unsafe { batch(packets.as_mut_ptr(), packets.len() as u64, verdicts.as_mut_ptr(), ifq) };
        faults as usize
    }

    /// Whether [`run_batch`](Self::run_batch) is available (the program is an `Xdp` program).
    pub fn has_batch(&self) -> bool {
        self.batch.is_some()
    }

    /// Bytes of machine code (all functions).
    pub fn code_size(&self) -> usize {
        self.code_size
    }

    #[inline(always)]
    fn call(&self, r1: u64, r2: u64, data: *mut u8, len: usize, ifq: u64) -> Result<u64, Fault> {
        // SAFETY: `entry` points into code owned by `self.module`, alive for `&self`. The code
        // only dereferences `data..data+len` (a live `&mut [u8]` of the caller), its own stack
        // area and — for programs given a context — the `XdpContext` r1 points to, which the
        // caller keeps alive across the call; every other address is refused by a run-time
        // check before use. Helpers it calls are the program's own `HelperFn`s.
        let out = unsafe { (self.entry)(r1, r2, data, len as u64, ifq) };
        out.into_result()
    }
}

impl Exec for JitProgram {
    #[inline]
    fn run_raw(&self, mem: &mut [u8]) -> Result<u64, Fault> {
        let ptr = mem.as_mut_ptr();
        self.call(ptr as u64, mem.len() as u64, ptr, mem.len(), 0)
    }

    #[inline]
    fn run_xdp(&self, packet: &mut [u8], ingress_ifindex: u32, rx_queue_index: u32) -> Result<u64, Fault> {
        if self.helpers.needs_env() {
            let (data, len) = (packet.as_ptr() as u64, packet.len());
            return helpers::enter(&self.helpers, data, len, StackArea::Native, || {
                self.run_xdp_direct(packet, ingress_ifindex, rx_queue_index)
            });
        }
        self.run_xdp_direct(packet, ingress_ifindex, rx_queue_index)
    }
}

impl JitProgram {
    #[inline(always)]
    fn run_xdp_direct(&self, packet: &mut [u8], ingress_ifindex: u32, rx_queue_index: u32) -> Result<u64, Fault> {
        let ifq = ingress_ifindex as u64 | (rx_queue_index as u64) << 32;
        if self.uses_ctx {
            let ctx = XdpContext::new(packet, ingress_ifindex, rx_queue_index);
            self.call(&ctx as *const XdpContext as u64, 0, packet.as_mut_ptr(), packet.len(), ifq)
        } else {
            // Nothing observes r1 itself (field loads use `ifq` and the packet bounds): skip
            // building the context.
            self.call(0, 0, packet.as_mut_ptr(), packet.len(), ifq)
        }
    }
}

impl JitProgram {
    /// [`run_xdp`](Exec::run_xdp), also returning the packet window after the run as
    /// `(start, end)` offsets into `packet` if `xdp_adjust_head/tail` moved it.
    pub(super) fn run_xdp_window(&self, packet: &mut [u8], ingress_ifindex: u32, rx_queue_index: u32) -> (Result<u64, Fault>, Option<(u64, u64)>) {
        if !self.helpers.needs_env() {
            return (self.run_xdp_direct(packet, ingress_ifindex, rx_queue_index), None);
        }
        let (base, len) = (packet.as_ptr() as u64, packet.len());
        helpers::enter(&self.helpers, base, len, StackArea::Native, || {
            let result = self.run_xdp_direct(packet, ingress_ifindex, rx_queue_index);
            let window = helpers::packet_bounds().map(|(data, end)| (data - base, end - base));
            (result, window.filter(|&w| w != (0, len as u64)))
        })
    }
}

impl Drop for JitProgram {
    fn drop(&mut self) {
        let module = self.module.get_mut().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: `&mut self` means no run is in progress and none can start; the entry
        // pointer dies with `self`, and the module is taken exactly once.
        unsafe { ManuallyDrop::take(module).free_memory() };
    }
}
