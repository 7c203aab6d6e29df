//! The load generator behind `sluice gen`: traffic templates, rate control, two transmit
//! engines, a receiver that measures loss and latency, pcap replay, and the run's report.
//!
//! - [`traffic`] — what is sent (protocols, flows, sizes) as ready-made templates;
//! - [`stamp`] — the sequence number and timestamp every frame ends with;
//! - [`pace`] — the schedule senders follow;
//! - [`live`] — the kernel live-frames engine (BPF_PROG_RUN, `programs/xdp/gen.bpf.c`);
//! - [`xsk_tx`] — the AF_XDP transmit engine;
//! - [`rx`] — the AF_XDP receiver and its loss/reorder/latency accounting;
//! - [`replay`] — sending a pcap's packets with their timing;
//! - [`sched`] — pinning threads, real-time priority for senders;
//! - `sys` — the module's only `unsafe` code (clock, scheduler, interface lookup);
//! - [`config`] — `configs/loadtest.toml`;
//! - [`run`] — one run end to end (threads, progress, stop);
//! - [`report`] — its results.
//!
//! Sender and receiver threads are spawned here rather than by `runtime`: a load test is a
//! separate tool that shares only the AF_XDP and steering layers with the dataplane.
//!
//! Unsafe code is denied in the whole module but `sys`, which allows it for three libc calls.

#![deny(unsafe_code)]

pub mod config;
pub mod live;
pub mod pace;
pub mod replay;
pub mod report;
pub mod run;
pub mod rx;
pub mod sched;
pub mod stamp;
mod sys;
pub mod traffic;
pub mod xsk_tx;

pub use live::{LiveFlows, LiveSender, SinkAction, UdpFrame, XdpSink};

use std::path::PathBuf;

use aya::EbpfError;
use aya::programs::ProgramError;

/// A failure of the load generator.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("load gen.bpf.o: {0}")]
    Load(#[from] EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("program {name} missing from gen.bpf.o")]
    MissingProgram { name: &'static str },
    #[error("interface {ifname}: not found in this network namespace")]
    NoInterface { ifname: String },
    #[error("frame of {len} bytes: {reason}")]
    Frame { len: usize, reason: &'static str },
    #[error("send on {ifname}: {source}")]
    Send {
        ifname: String,
        #[source]
        source: ProgramError,
    },
    #[error("attach {program} to {ifname}: {source}")]
    Attach {
        program: &'static str,
        ifname: String,
        #[source]
        source: ProgramError,
    },
    #[error("read network namespace of this thread: {0}")]
    Namespace(#[source] std::io::Error),
    #[error(
        "sender for {ifname} used from another network namespace ({now:?}, created in {created:?})"
    )]
    WrongNamespace {
        ifname: String,
        created: PathBuf,
        now: PathBuf,
    },
    #[error("build frame: {0}")]
    Build(String),
    #[error(transparent)]
    Traffic(#[from] traffic::TrafficError),
    #[error("af_xdp: {0}")]
    Xsk(#[from] crate::xsk::XskError),
    #[error("steering on the receiver: {0}")]
    Steer(#[from] crate::steer::SteerError),
    #[error("{engine} engine: {reason}")]
    Unsupported { engine: &'static str, reason: String },
    #[error("spawn {thread} thread: {source}")]
    Thread {
        thread: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{thread} thread panicked")]
    Panicked { thread: String },
}
