//! The filter pipeline of a port: an ordered list of stages (a filter and an action on match)
//! ending in a default action; compiled off the data path, published to the workers without
//! stopping them, counted per stage and per worker.
//!
//! - [`spec`]: the pipeline as written (config `[[port.stage]]`, control-socket JSON).
//! - [`compile`]: spec → [`Pipeline`] (front ends, validation, JIT) and the per-packet run.
//! - [`counters`]: per-worker, per-stage counter slots.
//! - [`ledger`]: stage counters carried across swaps by stage id.
//! - [`swap`]: publishing a new pipeline and the grace period before the old one is freed.
//! - [`capture`]: the ring carrying `sample` matches from a worker to the capture writer.
//!
//! No I/O beyond reading filter files at compile time: frames in, [`Outcome`]s out, so all of
//! it is tested without root.

pub mod capture;
pub mod compile;
pub mod counters;
pub mod ledger;
pub mod spec;
pub mod swap;

pub use compile::{Decision, Outcome, Pipeline, PipelineError, PortEnv, StageAct};
pub use crate::bpf::jit::PacketRef;
pub use counters::{StageSlot, StageTotals};
pub use spec::{ActionSpec, DefaultAction, FilterSpec, PipelineDoc, PipelineSpec, SpecError, StageDoc, StageSpec};
pub use ledger::Ledger;
pub use swap::{Published, Retired, WorkerView};
