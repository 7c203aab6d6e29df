//! The config-driven firewall: rules written once in TOML ([`config`]), split between the
//! steering program's maps in the kernel ([`place`], loaded by `steer::firewall`) and a
//! per-worker userspace [`Engine`] with connection tracking and rate limiting, and per-rule
//! counters merged from both ([`stats`]).
//!
//! Flow: `FirewallConfig::load` → `Ruleset::new` (compiles tcpdump matches with the JIT) →
//! per interface `place::place` + `place::kernel_tables` → `FirewallMaps::load`; per worker
//! `Engine::new(Arc<Ruleset>)` → `Engine::classify(frame, ingress, now)` → [`Decision`].

pub mod config;
pub mod conntrack;
pub mod describe;
pub mod engine;
pub mod group;
pub mod packet;
pub mod place;
pub mod ratelimit;
pub mod set;
pub mod stats;

pub use config::{Action, FirewallConfig, FwConfigError, Rule, Verdict};
pub use engine::{Counter, Decision, Engine, IngressId, Ruleset, RulesetError};
pub use place::{Place, Placement};
