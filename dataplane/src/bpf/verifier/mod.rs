//! The static verifier: proves a validated XDP program memory-safe and terminating before it
//! runs, and tells the JIT which memory accesses need no run-time check.
//!
//! It is an abstract interpreter over every path of the program, in the kernel verifier's
//! manner but written for sluice. Per register and stack byte of every call frame it tracks a
//! type ([`state::Kind`]: scalar, ctx, packet, packet end, stack, map value, map value or
//! null, map pointer, ring-buffer memory) and for scalars and variable pointer offsets the
//! known bits and unsigned/signed ranges ([`scalar::Scalar`]). Comparisons against
//! `data_end` establish how many packet bytes are present; comparisons against 0 settle
//! nullable lookups; other comparisons narrow scalar ranges on each edge and prune edges no
//! value can take, which is how a loop's bound is proven: the loop is simply run, abstractly,
//! until its exit condition holds.
//!
//! States are saved at jump targets, conditional fall-throughs and call return sites. A path
//! reaching a saved, fully explored state that includes it (registers no later instruction
//! reads are ignored) is pruned; a path that returns to a still-open ancestor state unchanged
//! cannot make progress and is refused as an infinite loop; a program needing more than
//! [`VerifyEnv::max_insns`] steps is refused as too complex (the kernel's 1M limit).
//!
//! Submodules: `tnum` and `scalar` (value tracking), `state` (abstract state, pruning test),
//! `protos` (helper prototypes), `cfg` (reachability, prune points, liveness), `exec` (the
//! exploration and the per-instruction rules), `mem` (memory accesses and helper arguments).

mod cfg;
mod exec;
mod mem;
pub mod protos;
pub mod scalar;
pub mod state;
pub mod tnum;

use super::check::{self, CheckError, StackReach};
use super::maps::{MapDef, MapKind, MapTable};
use super::{Helpers, Insn, ProgKind, Program};

/// What the verifier must know about a map of the program's map table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapShape {
    pub kind: MapKind,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// The program may only read its values (`.rodata`).
    pub read_only: bool,
}

impl From<&MapDef> for MapShape {
    fn from(d: &MapDef) -> MapShape {
        MapShape {
            kind: d.kind,
            key_size: d.key_size,
            value_size: d.value_size,
            max_entries: d.max_entries,
            read_only: !d.prog_writable(),
        }
    }
}

/// The verifier's configuration and the program's environment.
#[derive(Debug, Clone)]
pub struct VerifyEnv {
    /// The program's map table: `lddw` map references index it.
    pub maps: Vec<MapShape>,
    /// Refuse division and modulo by a value that may be 0 (the ISA defines `x / 0 = 0` and
    /// `x % 0 = x`, so this is a style rule, off by default).
    pub strict_div: bool,
    /// Keep the full log: every instruction explored with the registers it leaves.
    pub log: bool,
    /// Most instructions explored before giving up (the kernel's 1M).
    pub max_insns: usize,
}

impl Default for VerifyEnv {
    fn default() -> Self {
        VerifyEnv { maps: Vec::new(), strict_div: false, log: false, max_insns: 1_000_000 }
    }
}

impl VerifyEnv {
    pub fn with_maps(maps: Vec<MapShape>) -> Self {
        VerifyEnv { maps, ..Self::default() }
    }

    /// The environment of a program whose map references index `maps` (an object's table).
    pub fn for_table(maps: &MapTable) -> Self {
        Self::with_maps(maps.iter().map(|m| MapShape::from(m.def())).collect())
    }
}

/// Which memory an access touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    Packet,
    Stack,
    MapValue,
    RingBuf,
    /// Different memory on different paths (each proven).
    Mixed,
}

/// What the verifier proved about the memory access at one instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Not a memory access, or never explored.
    None,
    /// In bounds on every path that reaches it.
    Proven(Region),
    /// A legacy packet load (`ld_abs`/`ld_ind`) not proven in bounds: its run-time check
    /// stays (out of range ends the run with r0 = 0, by definition).
    Checked,
}

impl Access {
    fn merge(self, r: Option<Region>) -> Access {
        match (self, r) {
            (Access::Checked, _) | (_, None) => Access::Checked,
            (Access::None, Some(r)) => Access::Proven(r),
            (Access::Proven(a), Some(b)) if a == b => Access::Proven(a),
            (Access::Proven(_), Some(_)) => Access::Proven(Region::Mixed),
        }
    }
}

/// A program the verifier accepted, with what it proved.
#[derive(Debug, Clone)]
pub struct Verified {
    access: Vec<Access>,
    stack_initialised: bool,
    log: Option<String>,
    processed: usize,
    states: usize,
}

impl Verified {
    /// What was proven about the access at `pc`.
    pub fn access(&self, pc: usize) -> Access {
        self.access.get(pc).copied().unwrap_or(Access::None)
    }

    /// Whether the memory access at `pc` needs no run-time bounds check.
    pub fn proven(&self, pc: usize) -> bool {
        matches!(self.access(pc), Access::Proven(_))
    }

    /// Whether every stack byte a run reads, itself or through a helper, was written earlier
    /// in the same run, on every path: the verifier refuses reads of unwritten stack, and
    /// helper arguments are checked for the bytes the helper reads.
    pub fn stack_initialised(&self) -> bool {
        self.stack_initialised
    }

    /// What back ends must zero before each run of the verified `insns`: nothing (an empty
    /// [`StackReach::Frame`]) when [`stack_initialised`](Self::stack_initialised), since no
    /// result can depend on bytes left by an earlier run; otherwise [`check::stack_reach`].
    pub fn stack_reach(&self, insns: &[Insn]) -> StackReach {
        match check::stack_reach(insns) {
            StackReach::None => StackReach::None,
            _ if self.stack_initialised => StackReach::Frame { lo: 0, hi: 0 },
            reach => reach,
        }
    }

    /// Instructions with a proven access.
    pub fn proven_count(&self) -> usize {
        self.access.iter().filter(|a| matches!(a, Access::Proven(_))).count()
    }

    /// The full log, when [`VerifyEnv::log`] was set.
    pub fn log(&self) -> Option<&str> {
        self.log.as_deref()
    }

    /// Instructions explored (over all paths).
    pub fn processed(&self) -> usize {
        self.processed
    }

    /// States saved for pruning.
    pub fn states(&self) -> usize {
        self.states
    }
}

/// Why a program was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the verifier checks xdp programs, not {0:?} ones")]
    Kind(ProgKind),
    #[error("instruction {pc} ({text}): {reason}{}", if state.is_empty() { String::new() } else { format!(" [{state}]") })]
    Insn {
        pc: usize,
        text: String,
        reason: Box<Reason>,
        /// The registers involved, as the verifier saw them.
        state: String,
        log: Option<String>,
    },
    #[error("program is too complex: explored {limit} instructions without finishing (last at instruction {pc})")]
    TooComplex { limit: usize, pc: usize, log: Option<String> },
}

impl VerifyError {
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            VerifyError::Insn { reason, .. } => Some(reason),
            _ => None,
        }
    }

    pub fn index(&self) -> Option<usize> {
        match self {
            VerifyError::Insn { pc, .. } | VerifyError::TooComplex { pc, .. } => Some(*pc),
            VerifyError::Kind(_) => None,
        }
    }

    /// The log up to the failure, when [`VerifyEnv::log`] was set.
    pub fn log(&self) -> Option<&str> {
        match self {
            VerifyError::Insn { log, .. } | VerifyError::TooComplex { log, .. } => log.as_deref(),
            VerifyError::Kind(_) => None,
        }
    }
}

/// What is wrong at one instruction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("R{0} !read_ok: the register is not initialised on this path")]
    UninitReg(u8),
    #[error("R{reg} invalid mem access '{kind}'")]
    InvalidMem { reg: u8, kind: &'static str },
    #[error("R{0} invalid mem access 'map_value_or_null': compare the lookup result with 0 first")]
    NullDeref(u8),
    #[error("invalid access to packet, off={off} size={size}, R{reg} range={range}: compare against data_end first")]
    PacketRange { reg: u8, off: i64, size: u64, range: i64 },
    #[error("invalid access to packet through R{reg}: {detail}")]
    PacketOffset { reg: u8, detail: String },
    #[error("invalid {what} stack R{reg} off={off} size={size}: outside the 512-byte frame")]
    StackRange { reg: u8, what: &'static str, off: String, size: u64 },
    #[error("invalid read from stack R{reg} off {off} size {size}: byte at fp{byte} is not initialised")]
    StackUninit { reg: u8, off: String, size: u64, byte: i64 },
    #[error("invalid access to {what} R{reg}: off={off} size={size} is outside the {limit}-byte value")]
    ValueRange { reg: u8, what: &'static str, off: String, size: u64, limit: u32 },
    #[error("invalid access to ctx: {0}")]
    CtxAccess(String),
    #[error("R{reg} leaks addr into {into}")]
    PointerLeak { reg: u8, into: &'static str },
    #[error("R0 leaks addr as return value: filters return a scalar")]
    ReturnPointer,
    #[error("{0}")]
    PointerArith(String),
    #[error("{0}")]
    PointerSpill(String),
    #[error("division by zero: R{0} may be 0 (strict division)")]
    DivByZero(u8),
    #[error("division by constant 0 (strict division)")]
    DivByZeroImm,
    #[error("unknown helper id {0}: sluice has no such helper")]
    UnknownHelper(i64),
    #[error("callx through R{0}, whose value is not a known helper id")]
    Callx(u8),
    #[error("helper {helper} arg{arg} (R{arg}): expected {want}, got {got}")]
    HelperArg { helper: &'static str, arg: u8, want: String, got: String },
    #[error("unreachable insn {0}")]
    Unreachable(usize),
    #[error("infinite loop detected: the state at instruction {0} repeats without progress")]
    InfiniteLoop(usize),
    #[error("unreleased reference id={0}: a ring buffer reservation must be submitted or discarded on every path")]
    UnreleasedRef(u32),
    #[error("write into read-only map {0}")]
    ReadOnlyMap(u32),
    #[error("{0}")]
    Map(String),
    #[error("R{0} points into the stack of a returning function: the pointer would dangle")]
    DanglingStack(u8),
    #[error("call stack is too deep: {0} frames, the limit is {max}", max = crate::bpf::MAX_CALL_DEPTH)]
    CallDepth(usize),
    #[error("{0}")]
    Atomic(String),
}

/// Why [`load`] refused a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("validate: {0}")]
    Check(#[from] CheckError),
    #[error("verify: {0}")]
    Verify(#[from] VerifyError),
}

impl LoadError {
    /// The log of a verification failure, when [`VerifyEnv::log`] was set.
    pub fn log(&self) -> Option<&str> {
        match self {
            LoadError::Verify(e) => e.log(),
            LoadError::Check(_) => None,
        }
    }
}

/// Validates `insns` as an xdp program whose map references index `env.maps`, then verifies
/// it. This is the only way to obtain a filter with loops: structural validation admits
/// back-edges here because the verifier then bounds them.
pub fn load(insns: Vec<Insn>, helpers: &Helpers, env: &VerifyEnv) -> Result<(Program, Verified), LoadError> {
    let sizes: Vec<u32> = env.maps.iter().map(|m| m.value_size).collect();
    let prog = check::validate_full(insns, ProgKind::Xdp, helpers, &sizes, true)?;
    let verified = verify(&prog, env)?;
    Ok((prog, verified))
}

/// Proves `prog` safe under `env`, or says why not.
pub fn verify(prog: &Program, env: &VerifyEnv) -> Result<Verified, VerifyError> {
    if prog.kind() != ProgKind::Xdp {
        return Err(VerifyError::Kind(prog.kind()));
    }
    exec::Checker::new(prog.insns(), prog.helpers(), env).run()
}

#[cfg(test)]
mod tests;
