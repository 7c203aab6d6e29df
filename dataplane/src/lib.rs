//! sluice: a userspace packet-processing dataplane on AF_XDP with JIT-compiled BPF filters.
//!
//! Layers (an arrow = "may import"; nothing imports upward):
//! `bpf`, `config`, `stats`, `xsk`, `steer`, `wire` are leaves; `worker` → xsk, wire, stats;
//! `runtime` → everything (config → steer → xsk → workers), and `main.rs` → runtime (CLI only).
//! `testbed` builds network-namespace topologies for tests, benches and the demo.

pub mod bpf;
pub mod capture;
pub mod config;
pub mod control;
pub mod firewall;
pub mod loadgen;
pub mod metrics;
pub mod pcapio;
pub mod pipeline;
pub mod privdrop;
pub mod runtime;
pub mod stats;
pub mod steer;
pub mod testbed;
pub mod wire;
pub mod worker;
pub mod xsk;
