//! From a [`PipelineSpec`] to a runnable [`Pipeline`]: every filter through its front end,
//! validation and the JIT, every action resolved against the port, all before anything is
//! published. A pipeline that does not compile is refused whole, naming the stage.
//!
//! A packet's trip through a compiled pipeline: stages in order; a stage whose filter returns
//! non-zero has matched and its action applies (`verdict` stages decide by the value); the
//! first terminal action ends the trip, otherwise the default action does. Faults and unknown
//! verdicts drop the packet and count as `aborted` on the stage.
//!
//! The whole trip is ONE native function (`bpf::jit::fuse`): the stages' code inlined in order,
//! each stage's action and counting compiled in, so a packet makes one call whatever the
//! pipeline's length. This module turns stage actions into the fuser's plain-number rules
//! (decision codes, the sample mark, the counter slot layout).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use crate::bpf::helpers::RunEnv;
use crate::bpf::jit::fuse::{self, CounterLayout, Entries, Exit, FuseError, FusedPipeline, Rule, Step};
use crate::bpf::jit::{JitError, PacketRef};
use crate::bpf::object;
use crate::bpf::source::{self, Compiled, SourceError};
use crate::bpf::verifier::{self, MapShape, Verified, VerifyEnv, VerifyError};

use super::counters::{offsets, Counters};
use super::spec::{ActionSpec, DefaultAction, FilterSpec, PipelineSpec, SpecError};

/// What the pipeline needs to know about the port it runs on.
#[derive(Debug, Clone, Copy)]
pub struct PortEnv<'a> {
    pub port: &'a str,
    /// The forwarding peer: the one port `forward` may name (it shares this port's UMEM).
    pub peer: Option<&'a str>,
    /// Workers that run the pipeline (the port's queues): one counter block each.
    pub workers: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("stage `{id}`: {source}")]
    Spec { id: String, source: SpecError },
    #[error("stage `{id}`: read filter file {}: {source}", path.display())]
    Read { id: String, path: PathBuf, source: std::io::Error },
    #[error("stage `{id}`: {source}")]
    Filter { id: String, source: Box<SourceError> },
    #[error("stage `{id}`: jit: {source}")]
    Jit { id: String, source: Box<JitError> },
    #[error("stage `{id}`: verify: {source}")]
    Verify { id: String, source: Box<VerifyError> },
    #[error("fuse pipeline: {0}")]
    Fuse(Box<FuseError>),
    #[error("default action: {0}")]
    Default(SpecError),
    #[error("{0}")]
    Ids(SpecError),
    #[error("port {port}: a pipeline needs at least one worker")]
    NoWorkers { port: String },
}

impl PipelineError {
    /// The stage the error is about, if it is about one.
    pub fn stage_id(&self) -> Option<&str> {
        match self {
            PipelineError::Spec { id, .. }
            | PipelineError::Read { id, .. }
            | PipelineError::Filter { id, .. }
            | PipelineError::Jit { id, .. }
            | PipelineError::Verify { id, .. } => Some(id),
            PipelineError::Default(_) | PipelineError::Ids(_) | PipelineError::NoWorkers { .. } | PipelineError::Fuse(_) => None,
        }
    }
}

/// What happens to the packet after the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Decision {
    Drop = 0,
    /// Swap MAC addresses, send back out of the receiving port.
    Reflect = 1,
    /// Send back out of the receiving port unchanged (an eBPF program's XDP_TX).
    Bounce = 2,
    /// Send out of the forwarding peer unchanged.
    Peer = 3,
}

impl Decision {
    pub fn from_code(code: u64) -> Decision {
        match code & 3 {
            1 => Decision::Reflect,
            2 => Decision::Bounce,
            3 => Decision::Peer,
            _ => Decision::Drop,
        }
    }
}

/// A packet's result: its fate, the first `sample` stage that matched it, if any, and where
/// its bytes are now if a stage moved its head or tail (`xdp_adjust_head/tail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Outcome {
    pub decision: Decision,
    pub sample: Option<u32>,
    /// `(start, end)`: the packet is now bytes `start..end` of the slice the pipeline was
    /// given (always inside it: there is no headroom beyond the slice). `None` when no stage
    /// moved either end, which is always the case for pipelines of classic filters.
    pub window: Option<(u32, u32)>,
}

impl Outcome {
    fn from_exit(exit: Exit) -> Outcome {
        Outcome { decision: Decision::from_code(exit.code as u64), sample: exit.mark, window: None }
    }
}

/// A stage's action, resolved for execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageAct {
    /// Ends the pipeline on a match.
    Stop(Decision),
    /// Counts a match and goes on (`count`, `continue`).
    Count,
    /// Counts, marks the packet for capture, goes on.
    Sample,
    /// r0 is an XDP verdict; REDIRECT becomes `redirect` (dropped as aborted without a peer).
    Verdict { redirect: Option<Decision> },
}

/// One stage: its filter as the front end produced it, its action, and for eBPF objects the
/// verifier's proof (their accesses it proved run unchecked).
pub struct StageCode {
    pub id: String,
    pub act: StageAct,
    pub source: Compiled,
    pub verified: Option<Verified>,
}

impl StageCode {
    /// The stage as the fuser sees it.
    pub fn fuse_stage(&self) -> fuse::Stage<'_> {
        fuse::Stage { program: &self.source.program, rule: self.act.rule(), verified: self.verified.as_ref() }
    }
}

impl std::fmt::Debug for StageCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageCode").field("id", &self.id).field("act", &self.act).finish_non_exhaustive()
    }
}

/// A pipeline's code: shareable between pipeline instances of the same spec (each instance
/// has its own counters), so swapping back to a recent pipeline needs no compile.
#[derive(Debug)]
pub struct PipelineCode {
    stages: Box<[StageCode]>,
    default: Decision,
    fused: FusedPipeline,
}

/// Where the fused code finds a stage's counters: the slots of `counters`.
pub const COUNTER_LAYOUT: CounterLayout =
    CounterLayout { slot: offsets::SLOT, packets: offsets::PACKETS, bytes: offsets::BYTES, aborted: offsets::ABORTED };

impl StageAct {
    /// The action as the fuser's rule: decisions are action codes, sampling is the mark.
    pub fn rule(self) -> Rule {
        match self {
            StageAct::Stop(d) => Rule::Match { end: Some(d as u32), mark: false },
            StageAct::Count => Rule::Match { end: None, mark: false },
            StageAct::Sample => Rule::Match { end: None, mark: true },
            // Indexed by XDP verdict: ABORTED, DROP, PASS, TX, REDIRECT.
            StageAct::Verdict { redirect } => Rule::Verdict([
                Step::Abort,
                Step::End(Decision::Drop as u32),
                Step::Pass,
                Step::End(Decision::Bounce as u32),
                redirect.map_or(Step::Abort, |d| Step::End(d as u32)),
            ]),
        }
    }
}

impl PipelineCode {
    /// The fuser's plan for `stages` (faults and aborts drop the packet).
    pub fn plan<'a>(stages: &'a [fuse::Stage<'a>], default: Decision, entries: Entries) -> fuse::Plan<'a> {
        fuse::Plan { stages, default: default as u32, abort: Decision::Drop as u32, counters: COUNTER_LAYOUT, entries, dispatch: fuse::DISPATCH_BUDGET }
    }

    /// Fuses the stages into one native function. Only the batch entry is built: workers run
    /// whole batches ([`Pipeline::run_batch`]), and the occasional single packet
    /// ([`Pipeline::run`]) goes through the same loop as a batch of one, so the pipeline is
    /// compiled once, not once per entry.
    fn fuse(stages: Vec<StageCode>, default: Decision) -> Result<PipelineCode, PipelineError> {
        let plan: Vec<fuse::Stage<'_>> = stages.iter().map(StageCode::fuse_stage).collect();
        let fused = FusedPipeline::compile(&PipelineCode::plan(&plan, default, Entries::Batch)).map_err(|e| match e {
            FuseError::Stage { stage, source } => PipelineError::Jit { id: stages[stage].id.clone(), source: Box::new(source) },
            other => PipelineError::Fuse(Box::new(other)),
        })?;
        Ok(PipelineCode { stages: stages.into(), default, fused })
    }
}

/// A compiled pipeline. Immutable once built; workers share it through `Arc`.
#[derive(Debug)]
pub struct Pipeline {
    spec: PipelineSpec,
    code: Arc<PipelineCode>,
    counters: Counters,
    compile_time: Duration,
}

/// The code of the last few pipelines compiled for one port, by spec. Only specs whose filters
/// are all inline text are kept: a file may change between two compiles.
///
/// Beside it, the front ends' output for inline filters by (text, format), so that adding,
/// removing or moving one stage of a long pipeline runs no front end again for the others
/// (only fusion is redone). Text filters have no maps or other state, so one compiled filter
/// may serve any number of pipelines.
#[derive(Debug)]
pub struct CodeCache {
    entries: VecDeque<(PipelineSpec, Option<String>, Arc<PipelineCode>)>,
    capacity: usize,
    fronts: Fronts,
}

/// Compiled inline filters by text, then format (see [`CodeCache`]).
#[derive(Debug, Default)]
struct Fronts {
    by_text: HashMap<String, Vec<(source::Format, Compiled)>>,
}

/// Distinct filter texts kept before the front-end cache starts over.
const FRONTS_MAX: usize = 4096;

impl Fronts {
    fn load(&mut self, id: &str, filter: &FilterSpec, workers: usize) -> Result<Compiled, PipelineError> {
        let FilterSpec::Text { text, format } = filter else { return load_filter_for(id, filter, workers) };
        if let Some(hit) = self.by_text.get(text).and_then(|v| v.iter().find(|(f, _)| f == format)) {
            return Ok(hit.1.clone());
        }
        let compiled = load_filter(id, filter)?;
        if self.by_text.len() >= FRONTS_MAX {
            self.by_text.clear();
        }
        self.by_text.entry(text.clone()).or_default().push((*format, compiled.clone()));
        Ok(compiled)
    }
}

impl CodeCache {
    pub fn new(capacity: usize) -> CodeCache {
        CodeCache { entries: VecDeque::with_capacity(capacity), capacity, fronts: Fronts::default() }
    }

    fn get(&self, spec: &PipelineSpec, peer: Option<&str>) -> Option<Arc<PipelineCode>> {
        self.entries.iter().find(|(s, p, _)| s == spec && p.as_deref() == peer).map(|(_, _, c)| Arc::clone(c))
    }

    fn put(&mut self, spec: &PipelineSpec, peer: Option<&str>, code: &Arc<PipelineCode>) {
        if self.capacity == 0 || spec.stages.iter().any(|s| !matches!(s.filter, FilterSpec::Text { .. })) {
            return;
        }
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back((spec.clone(), peer.map(str::to_owned), Arc::clone(code)));
    }
}

/// Compiles one filter with its front end (reading the file first, for file filters), for a
/// single worker.
pub fn load_filter(id: &str, filter: &FilterSpec) -> Result<Compiled, PipelineError> {
    load_filter_for(id, filter, 1)
}

/// [`load_filter`] for a port run by `workers` workers: an eBPF object's per-CPU maps hold one
/// copy of each value per worker (see `bpf::maps`).
pub fn load_filter_for(id: &str, filter: &FilterSpec, workers: usize) -> Result<Compiled, PipelineError> {
    let result = match filter {
        FilterSpec::Text { text, format } => source::compile_text(text, *format),
        FilterSpec::File { path, format } => {
            let bytes = std::fs::read(path)
                .map_err(|source| PipelineError::Read { id: id.to_owned(), path: path.clone(), source })?;
            match (format, std::str::from_utf8(&bytes)) {
                (None | Some(source::Format::Object), _) if object::is_elf(&bytes) => {
                    source::compile_object(&bytes, None, workers)
                }
                (None, _) => source::compile_file(&bytes),
                (Some(f), Ok(text)) => source::compile_text(text, *f),
                (Some(source::Format::Bytes | source::Format::Object), Err(_)) => source::compile_file(&bytes),
                (Some(f), Err(_)) => {
                    return Err(PipelineError::Spec {
                        id: id.to_owned(),
                        source: SpecError { key: "format", reason: format!("{} is not text, so it cannot be {f}", path.display()) },
                    });
                }
            }
        }
    };
    result.map_err(|source| PipelineError::Filter { id: id.to_owned(), source: Box::new(source) })
}

fn resolve(action: &ActionSpec, env: &PortEnv) -> Result<Decision, SpecError> {
    Ok(match action {
        ActionSpec::Drop => Decision::Drop,
        ActionSpec::Reflect => Decision::Reflect,
        ActionSpec::Forward(to) => match env.peer {
            Some(peer) if peer == to => Decision::Peer,
            Some(peer) => {
                return Err(SpecError {
                    key: "to",
                    reason: format!("port {} can only forward to its peer `{peer}`, not `{to}`", env.port),
                });
            }
            None => {
                return Err(SpecError {
                    key: "to",
                    reason: format!("port {} has no forwarding peer (give both ports action = \"forward\" and forward_to)", env.port),
                });
            }
        },
        _ => return Err(SpecError { key: "action", reason: format!("`{}` does not end a pipeline", action.name()) }),
    })
}

/// Runs the verifier on an eBPF object's program (objects are what users write in C for the
/// kernel, so they are held to the kernel's rules); other filters are not verified: classic
/// filters and eBPF text keep the run-time checks they are compiled with.
fn verify(id: &str, source: &Compiled) -> Result<Option<Verified>, PipelineError> {
    if source.format != source::Format::Object {
        return Ok(None);
    }
    let maps = source.program.helpers().maps().iter().map(|m| MapShape::from(m.def())).collect();
    verifier::verify(&source.program, &VerifyEnv::with_maps(maps))
        .map(Some)
        .map_err(|e| PipelineError::Verify { id: id.to_owned(), source: Box::new(e) })
}

/// A stage through its front end and the verifier, with its action.
type CheckedStage = (StageAct, Compiled, Option<Verified>);

/// Front ends, verification and action resolution for every stage, and the default action's
/// decision.
fn check(spec: &PipelineSpec, env: &PortEnv, mut fronts: Option<&mut Fronts>) -> Result<(Vec<CheckedStage>, Decision), PipelineError> {
    if env.workers == 0 {
        return Err(PipelineError::NoWorkers { port: env.port.to_owned() });
    }
    spec.check_ids().map_err(PipelineError::Ids)?;
    let default = resolve(&spec.default.as_action(), env).map_err(PipelineError::Default)?;
    let mut stages = Vec::with_capacity(spec.stages.len());
    for s in &spec.stages {
        let id = || s.id.clone();
        let source = match fronts.as_deref_mut() {
            Some(f) => f.load(&s.id, &s.filter, env.workers)?,
            None => load_filter_for(&s.id, &s.filter, env.workers)?,
        };
        let act = match &s.action {
            ActionSpec::Count | ActionSpec::Continue => StageAct::Count,
            ActionSpec::Sample => StageAct::Sample,
            ActionSpec::Verdict if source.is_classic() => {
                return Err(PipelineError::Spec {
                    id: id(),
                    source: SpecError {
                        key: "action",
                        reason: format!("a {} returns match/no match, not an XDP verdict: give it an action", source.format),
                    },
                });
            }
            ActionSpec::Verdict => StageAct::Verdict { redirect: env.peer.map(|_| Decision::Peer) },
            terminal => StageAct::Stop(resolve(terminal, env).map_err(|source| PipelineError::Spec { id: id(), source })?),
        };
        let verified = verify(&s.id, &source)?;
        stages.push((act, source, verified));
    }
    Ok((stages, default))
}

impl Pipeline {
    /// Compiles `spec` for the port described by `env`. Nothing is shared with a running
    /// pipeline: the result is published, or dropped with its error.
    pub fn compile(spec: &PipelineSpec, env: &PortEnv) -> Result<Pipeline, PipelineError> {
        Pipeline::compile_cached(spec, env, &mut CodeCache::new(0))
    }

    /// [`compile`](Self::compile), reusing the code of an identical recent spec from `cache`
    /// (and remembering this one's).
    pub fn compile_cached(spec: &PipelineSpec, env: &PortEnv, cache: &mut CodeCache) -> Result<Pipeline, PipelineError> {
        let t0 = Instant::now();
        if env.workers == 0 {
            return Err(PipelineError::NoWorkers { port: env.port.to_owned() });
        }
        let code = match cache.get(spec, env.peer) {
            Some(code) => code,
            None => {
                let (checked, default) = check(spec, env, Some(&mut cache.fronts))?;
                let stages = (spec.stages.iter().zip(checked))
                    .map(|(s, (act, source, verified))| StageCode { id: s.id.clone(), act, source, verified })
                    .collect();
                let code = Arc::new(PipelineCode::fuse(stages, default)?);
                cache.put(spec, env.peer, &code);
                code
            }
        };
        let counters = Counters::new(env.workers, code.stages.len() + 1);
        Ok(Pipeline { spec: spec.clone(), code, counters, compile_time: t0.elapsed() })
    }

    /// Everything [`compile`](Self::compile) checks except what only the JIT can refuse
    /// (host problems): front ends, validation, verification, actions. For config validation.
    pub fn check(spec: &PipelineSpec, env: &PortEnv) -> Result<(), PipelineError> {
        check(spec, env, None).map(|_| ())
    }

    pub fn spec(&self) -> &PipelineSpec {
        &self.spec
    }

    pub fn stages(&self) -> &[StageCode] {
        &self.code.stages
    }

    /// The stages as a fuser plan, to build other entries of the same pipeline (the
    /// single-packet entry, for benchmarks and tests; workers use [`run_batch`](Self::run_batch)).
    pub fn fuse_stages(&self) -> Vec<fuse::Stage<'_>> {
        self.code.stages.iter().map(StageCode::fuse_stage).collect()
    }

    pub fn default_decision(&self) -> Decision {
        self.code.default
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Wall time `compile` took (front ends, validation, JIT; near zero from the cache).
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// Machine code bytes of the fused pipeline.
    pub fn code_size(&self) -> usize {
        self.code.fused.code_size()
    }

    /// Runs the pipeline on one packet as worker `w` (its counter block), counting on the way:
    /// one native call (the batch loop, over a batch of one).
    #[inline]
    pub fn run(&self, w: usize, packet: &mut [u8], ifindex: u32, queue: u32) -> Outcome {
        let mut out = [Outcome { decision: Decision::Drop, sample: None, window: None }];
        self.run_batch(w, &mut [PacketRef::new(packet)], ifindex, queue, &mut out);
        out[0]
    }

    /// Runs the pipeline on every packet of `packets` as worker `w`, writing packet `i`'s
    /// outcome to `out[i]`: one native call per [`BATCH`](Self::BATCH) packets, with the same
    /// results and counts as [`run`](Self::run) on each packet in order.
    ///
    /// A packet whose head or tail a stage moved (`xdp_adjust_head/tail`) has
    /// `Outcome::window` set, and its `PacketRef` then describes the moved bytes.
    ///
    /// Panics if `out` is shorter than `packets` or `w` is not a worker of the pipeline
    /// (caller bugs).
    #[inline]
    pub fn run_batch(&self, w: usize, packets: &mut [PacketRef<'_>], ifindex: u32, queue: u32, out: &mut [Outcome]) {
        assert!(out.len() >= packets.len(), "pipeline batch: {} outcome slots for {} packets", out.len(), packets.len());
        let counters = self.counters.block(w);
        let fused = &self.code.fused;
        let mut exits = [0u64; Self::BATCH];
        let mut run = || {
            for (chunk, outs) in packets.chunks_mut(Self::BATCH).zip(out.chunks_mut(Self::BATCH)) {
                if fused.moves() {
                    Self::run_moving(fused, chunk, ifindex, queue, counters, &mut exits, outs);
                    continue;
                }
                fused.run_batch(chunk, ifindex, queue, counters, &mut exits);
                for (o, &word) in outs.iter_mut().zip(&exits[..chunk.len()]) {
                    *o = Outcome::from_exit(Exit::from_word(word));
                }
            }
        };
        // Kernel helpers of called-out stages find the worker's per-CPU map slot in the
        // `RunEnv`; without them, nothing reads it.
        if fused.calls_out() {
            RunEnv::new(w as u32).run(run);
        } else {
            run();
        }
    }

    /// One chunk through a pipeline whose stages may move a packet's window: the moved window
    /// is reported as offsets into the slice the packet was given.
    #[cold]
    fn run_moving(
        fused: &FusedPipeline,
        chunk: &mut [PacketRef<'_>],
        ifindex: u32,
        queue: u32,
        counters: &[AtomicU64],
        exits: &mut [u64; Self::BATCH],
        outs: &mut [Outcome],
    ) {
        let mut before = [(0usize, 0usize); Self::BATCH];
        for (b, p) in before.iter_mut().zip(chunk.iter()) {
            *b = p.raw();
        }
        fused.run_batch(chunk, ifindex, queue, counters, exits);
        for (i, (o, &word)) in outs.iter_mut().zip(&exits[..chunk.len()]).enumerate() {
            *o = Outcome::from_exit(Exit::from_word(word));
            let ((start, len), (was, was_len)) = (chunk[i].raw(), before[i]);
            if (start, len) != (was, was_len) {
                // Inside the slice it was given: offsets below its length.
                let off = (start - was) as u32;
                o.window = Some((off, off + len as u32));
            }
        }
    }

    /// Packets per native call of [`run_batch`](Self::run_batch) (longer slices are cut).
    pub const BATCH: usize = 64;

    /// Records that worker `w` copied a packet for stage `stage`'s sample.
    #[inline]
    pub fn note_sampled(&self, w: usize, stage: u32) {
        if let Some(slot) = self.counters.slot(w, stage as usize) {
            slot.sampled();
        }
    }

    /// Counters of every stage by id, then the default action's under `None`.
    pub fn totals(&self) -> impl Iterator<Item = (Option<&str>, super::StageTotals)> + '_ {
        let stages = self.code.stages.iter().enumerate().map(|(i, s)| (Some(s.id.as_str()), self.counters.totals(i)));
        stages.chain(std::iter::once((None, self.counters.totals(self.code.stages.len()))))
    }
}

impl DefaultAction {
    /// The decision this default action makes on `env`'s port.
    pub fn resolve(&self, env: &PortEnv) -> Result<Decision, SpecError> {
        resolve(&self.as_action(), env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::spec::StageSpec;
    use crate::testbed::corpus;

    const ENV: PortEnv = PortEnv { port: "a", peer: Some("b"), workers: 2 };

    fn stage(id: &str, filter: &str, action: ActionSpec) -> StageSpec {
        StageSpec { id: id.into(), filter: FilterSpec::Text { text: filter.into(), format: source::Format::Tcpdump }, action }
    }

    #[test]
    fn first_terminal_match_decides_and_counts() {
        let spec = PipelineSpec {
            stages: vec![
                stage("all-udp", "udp", ActionSpec::Count),
                stage("dns", "udp dst port 53", ActionSpec::Forward("b".into())),
                stage("tcp", "tcp", ActionSpec::Reflect),
            ],
            default: DefaultAction::Drop,
        };
        let p = Pipeline::compile(&spec, &ENV).unwrap();
        let mut dns = corpus::udp_64(53);
        let mut other = corpus::udp_64(54);
        assert_eq!(p.run(0, &mut dns, 0, 0), Outcome { decision: Decision::Peer, sample: None, window: None });
        assert_eq!(p.run(1, &mut other, 0, 0), Outcome { decision: Decision::Drop, sample: None, window: None });
        let t: Vec<_> = p.totals().map(|(id, t)| (id.map(str::to_owned), t.packets)).collect();
        assert_eq!(t, vec![(Some("all-udp".into()), 2), (Some("dns".into()), 1), (Some("tcp".into()), 0), (None, 1)]);
        assert_eq!(p.totals().next().unwrap().1.bytes, 128);
    }

    #[test]
    fn verdict_stages_map_xdp_verdicts() {
        let asm = |v: u32| StageSpec {
            id: format!("v{v}"),
            filter: FilterSpec::Text { text: format!("r0 = {v}\nexit\n"), format: source::Format::Asm },
            action: ActionSpec::Verdict,
        };
        let mut pkt = corpus::udp_64(1);
        for (v, want) in [(1, Decision::Drop), (2, Decision::Reflect), (3, Decision::Bounce), (4, Decision::Peer), (9, Decision::Drop)] {
            let spec = PipelineSpec { stages: vec![asm(v)], default: DefaultAction::Reflect };
            let p = Pipeline::compile(&spec, &ENV).unwrap();
            assert_eq!(p.run(0, &mut pkt, 0, 0).decision, want, "verdict {v}");
            let t = p.counters().totals(0);
            assert_eq!((t.packets, t.aborted), if v == 2 { (0, 0) } else if v == 9 { (0, 1) } else { (1, 0) }, "verdict {v}");
        }
        let alone = PortEnv { peer: None, ..ENV };
        let p = Pipeline::compile(&PipelineSpec { stages: vec![asm(4)], default: DefaultAction::Drop }, &alone).unwrap();
        assert_eq!(p.run(0, &mut pkt, 0, 0).decision, Decision::Drop);
        assert_eq!(p.counters().totals(0).aborted, 1);
    }

    #[test]
    fn sample_marks_the_first_sampling_stage() {
        let spec = PipelineSpec {
            stages: vec![stage("x", "tcp", ActionSpec::Sample), stage("s", "udp", ActionSpec::Sample), stage("t", "udp", ActionSpec::Sample)],
            default: DefaultAction::Reflect,
        };
        let p = Pipeline::compile(&spec, &ENV).unwrap();
        let out = p.run(0, &mut corpus::udp_64(9), 0, 0);
        assert_eq!(out, Outcome { decision: Decision::Reflect, sample: Some(1), window: None });
        p.note_sampled(0, 1);
        assert_eq!(p.counters().totals(1).sampled, 1);
    }

    #[test]
    fn the_cache_shares_code_but_not_counters() {
        let spec = PipelineSpec { stages: vec![stage("u", "udp", ActionSpec::Count)], default: DefaultAction::Drop };
        let mut cache = CodeCache::new(2);
        let a = Pipeline::compile_cached(&spec, &ENV, &mut cache).unwrap();
        let b = Pipeline::compile_cached(&spec, &ENV, &mut cache).unwrap();
        assert!(Arc::ptr_eq(&a.code, &b.code));
        a.run(0, &mut corpus::udp_64(1), 0, 0);
        assert_eq!((a.counters().totals(0).packets, b.counters().totals(0).packets), (1, 0));
        let other = PortEnv { peer: None, ..ENV };
        let c = Pipeline::compile_cached(&spec, &other, &mut cache).unwrap();
        assert!(!Arc::ptr_eq(&a.code, &c.code), "a different peer is a different pipeline");
        for text in ["tcp", "arp"] {
            let s = PipelineSpec { stages: vec![stage("u", text, ActionSpec::Count)], default: DefaultAction::Drop };
            Pipeline::compile_cached(&s, &ENV, &mut cache).unwrap();
        }
        let d = Pipeline::compile_cached(&spec, &ENV, &mut cache).unwrap();
        assert!(!Arc::ptr_eq(&a.code, &d.code), "evicted after two newer specs");
    }

    #[test]
    fn front_ends_run_once_per_filter_text() {
        let mut cache = CodeCache::new(2);
        let a = PipelineSpec {
            stages: vec![stage("u", "udp", ActionSpec::Count), stage("t", "tcp", ActionSpec::Drop), stage("u2", "udp", ActionSpec::Count)],
            default: DefaultAction::Reflect,
        };
        let first = Pipeline::compile_cached(&a, &ENV, &mut cache).unwrap();
        assert_eq!(cache.fronts.by_text.len(), 2, "udp twice, tcp once");
        // Moved and extended: only the new text goes through its front end.
        let mut b = a.clone();
        b.stages.swap(0, 1);
        b.stages.push(stage("a", "arp", ActionSpec::Count));
        let second = Pipeline::compile_cached(&b, &ENV, &mut cache).unwrap();
        assert_eq!(cache.fronts.by_text.len(), 3);
        for pkt in corpus::corpus().into_iter().step_by(11) {
            let (mut x, mut y) = (pkt.clone(), pkt.clone());
            let (p, q) = (first.run(0, &mut x, 0, 0), second.run(0, &mut y, 0, 0));
            assert_eq!(p.decision, q.decision);
        }
        // The same text in another format is another filter.
        let asm = StageSpec { id: "x".into(), filter: FilterSpec::Text { text: "udp".into(), format: source::Format::Asm }, action: ActionSpec::Drop };
        assert!(Pipeline::compile_cached(&PipelineSpec { stages: vec![asm], default: DefaultAction::Drop }, &ENV, &mut cache).is_err());
    }

    #[test]
    fn errors_name_the_stage_and_change_nothing() {
        let cases = [
            (stage("bad", "udp dst port", ActionSpec::Drop), "stage `bad`: tcpdump expression: compile filter `udp dst port`"),
            (stage("far", "udp", ActionSpec::Forward("c".into())), "stage `far`: to: port a can only forward to its peer `b`, not `c`"),
            (stage("v", "udp", ActionSpec::Verdict), "stage `v`: action: a tcpdump expression returns match/no match"),
            (
                StageSpec { id: "asm".into(), filter: FilterSpec::Text { text: "r0 = 1\nr0 +=\nexit\n".into(), format: source::Format::Asm }, action: ActionSpec::Drop },
                "stage `asm`: eBPF assembler: line 2",
            ),
            (
                StageSpec { id: "f".into(), filter: FilterSpec::File { path: "/nonexistent/x.bpf".into(), format: None }, action: ActionSpec::Drop },
                "stage `f`: read filter file /nonexistent/x.bpf",
            ),
        ];
        for (s, want) in cases {
            let e = Pipeline::compile(&PipelineSpec { stages: vec![s], default: DefaultAction::Drop }, &ENV).unwrap_err().to_string();
            assert!(e.starts_with(want), "got {e}");
        }
        let e = Pipeline::compile(&PipelineSpec::empty(DefaultAction::Forward("b".into())), &PortEnv { peer: None, ..ENV }).unwrap_err();
        assert!(e.to_string().starts_with("default action: to: port a has no forwarding peer"), "{e}");
    }
}
