//! The daemon's firewall (`[dataplane] firewall = "FILE"`): reading and compiling the rules
//! off the data path, loading their kernel part into the steering program of every port
//! interface, publishing the ruleset to the workers, reloading it, and the per-rule counters
//! merged from the kernel stages and the workers' engines.
//!
//! A reload runs in this order: parse and compile (any error: nothing changed); publish to the
//! workers and wait until each adopted it at a batch boundary; read the kernel counters of the
//! old tables and carry them, by rule name, into the new ones; load the new kernel tables. The
//! kernel stage is off while its maps are rewritten, so those frames reach userspace, whose
//! engine evaluates every rule (kernel ones included): verdicts never lapse and no frame is
//! lost. Counters of frames that arrive during the few milliseconds between the workers'
//! adoption and the kernel load may be missed, since the engine leaves the new kernel rules'
//! counting to a kernel that does not run them yet.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::firewall::stats::{RuleStats, merge};
use crate::firewall::{Counter, FirewallConfig, FwConfigError, Place, Ruleset, RulesetError, place};
use crate::steer::firewall::{FirewallMaps, FwCounter, KernelFirewall};
use crate::steer::{SteerError, Steering};
use crate::worker::firewall::FirewallCell;

/// How long a reload waits for every worker to adopt the new rules (a sleeping worker takes
/// up to one idle poll).
const ADOPT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// `file:line:column: reason`.
    #[error("{0}")]
    Config(#[from] FwConfigError),
    #[error("{}:{line}:1: {source}", file.display())]
    Compile { file: PathBuf, line: usize, source: RulesetError },
    #[error("load the kernel firewall: {0}")]
    Kernel(#[from] SteerError),
}

/// Reads and compiles a firewall file (tcpdump matches through the JIT).
pub fn load_ruleset(path: &Path) -> Result<Arc<Ruleset>, FirewallError> {
    let config = FirewallConfig::load(path)?;
    Ruleset::new(config).map(Arc::new).map_err(|source| {
        let line = match &source {
            RulesetError::Filter { line, .. } => *line,
            RulesetError::TooManyInterfaces(_) => 1,
        };
        FirewallError::Compile { file: path.to_owned(), line, source }
    })
}

/// The kernel tables of `rules` for the interface `ifname` (none: the stage switched off).
pub fn kernel_tables(rules: Option<&Ruleset>, ifname: &str) -> KernelFirewall {
    match rules {
        None => KernelFirewall::default(),
        Some(rs) => place::kernel_tables(rs.config(), rs.placement(rs.ingress(ifname))),
    }
}

/// One rule's counters with where it runs, for `fw_stats` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwRuleTotals {
    /// Index in the file's rule order; the default policy comes last, index = number of rules.
    pub index: usize,
    pub stats: RuleStats,
    /// The `[[rule]]` header's line; 0 for the default policy.
    pub line: usize,
    /// Interfaces whose kernel stage runs the rule.
    pub kernel_on: Vec<String>,
}

/// The firewall as the controller drives it.
pub(super) struct FirewallControl {
    cell: Arc<FirewallCell>,
    /// The file the running rules came from.
    path: Option<PathBuf>,
    /// Per port interface, the firewall maps of its steering program.
    maps: Vec<(String, FirewallMaps)>,
    /// Kernel counts of tables replaced by reloads, by rule name (`default` for the policy).
    carry: HashMap<String, Counter>,
    /// Userspace counts of workers a reload stopped, by rule name.
    user_carry: HashMap<String, Counter>,
}

impl FirewallControl {
    /// Loads `rules`' kernel part into every steering program and makes the cell the workers
    /// read; call before any socket is registered with the steering programs.
    pub fn start(
        steering: &mut std::collections::BTreeMap<String, Steering>,
        workers: usize,
        path: Option<PathBuf>,
        rules: Option<Arc<Ruleset>>,
    ) -> Result<FirewallControl, FirewallError> {
        let mut maps = Vec::new();
        for (ifname, s) in steering.iter_mut() {
            s.set_firewall_owned(path.is_some())?;
            let mut m = s.firewall()?;
            m.load(&kernel_tables(rules.as_deref(), ifname))?;
            maps.push((ifname.clone(), m));
        }
        let cell = Arc::new(FirewallCell::new(workers, rules));
        Ok(FirewallControl { cell, path, maps, carry: HashMap::new(), user_carry: HashMap::new() })
    }

    pub fn cell(&self) -> &Arc<FirewallCell> {
        &self.cell
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn ruleset(&self) -> Option<Arc<Ruleset>> {
        self.cell.current().map(|v| Arc::clone(v.ruleset()))
    }

    /// Loads the running rules' kernel part into the steering program of an interface a
    /// reload adds, and marks it; call before any of its sockets is registered. Nothing of
    /// this control changes until [`add_interface`](Self::add_interface).
    pub fn prepare_interface(&self, ifname: &str, steering: &mut Steering) -> Result<FirewallMaps, FirewallError> {
        steering.set_firewall_owned(self.path.is_some())?;
        let mut m = steering.firewall()?;
        m.load(&kernel_tables(self.ruleset().as_deref(), ifname))?;
        Ok(m)
    }

    pub fn add_interface(&mut self, ifname: String, maps: FirewallMaps) {
        self.maps.push((ifname, maps));
    }

    /// Forgets an interface a reload removed, carrying what its kernel stage counted.
    pub fn remove_interface(&mut self, ifname: &str) {
        let Some(at) = self.maps.iter().position(|(i, _)| i == ifname) else { return };
        if let Some(rules) = self.ruleset() {
            let kernel: Vec<_> = self.kernel_counters(&rules).into_iter().filter(|(i, _)| i == ifname).collect();
            for r in merge(&rules, &kernel, std::iter::empty()) {
                let k = self.carry.entry(r.name).or_default();
                k.packets += r.kernel.packets;
                k.bytes += r.kernel.bytes;
            }
        }
        self.maps.swap_remove(at);
    }

    /// A cell for `workers` workers holding the running rules, for a reload that renumbers
    /// the workers; it takes over at [`install_cell`](Self::install_cell).
    pub fn new_cell(&self, workers: usize) -> Arc<FirewallCell> {
        Arc::new(FirewallCell::new(workers, self.ruleset()))
    }

    /// Makes `cell` the one the controller publishes to. `retired` are the old indices of the
    /// workers the reload stopped (already joined): their last counts are carried by name.
    /// The workers that kept running moved their engines, counts included, to `cell`.
    pub fn install_cell(&mut self, cell: Arc<FirewallCell>, retired: &[usize]) {
        if let Some(v) = self.cell.current() {
            let blocks = v.worker_counters();
            let rules = v.ruleset();
            for &w in retired {
                let Some(block) = blocks.get(w) else { continue };
                for (i, c) in block.iter().enumerate() {
                    let name = if i < rules.len() { rules.rule(i).name.clone() } else { "default".to_owned() };
                    let u = self.user_carry.entry(name).or_default();
                    u.packets += c.packets;
                    u.bytes += c.bytes;
                }
            }
        }
        self.cell = cell;
    }

    /// Makes `rules` (read from `path`) the firewall; see the module doc for the order.
    pub fn replace(&mut self, path: Option<PathBuf>, rules: Option<Arc<Ruleset>>) -> Result<(), FirewallError> {
        let old = self.ruleset();
        let version = self.cell.publish(rules.clone());
        if let Some(v) = &version
            && !self.cell.wait_adopted(v, ADOPT_TIMEOUT)
        {
            tracing::warn!("a worker had not adopted the new firewall after {ADOPT_TIMEOUT:?}");
        }
        let mut carry = HashMap::new();
        if let (Some(old), Some(new)) = (&old, &rules) {
            let kernel = self.kernel_counters(old);
            for r in merge(old, &kernel, std::iter::empty()) {
                let mut k = self.carry.get(&r.name).copied().unwrap_or_default();
                k.packets += r.kernel.packets;
                k.bytes += r.kernel.bytes;
                carry.insert(r.name, k);
            }
            let keep: std::collections::HashSet<&str> =
                (0..new.len()).map(|i| new.rule(i).name.as_str()).chain(["default"]).collect();
            carry.retain(|name, _| keep.contains(name.as_str()));
        }
        self.carry = carry;
        self.path = path;
        for (ifname, m) in &mut self.maps {
            m.load(&kernel_tables(rules.as_deref(), ifname)).inspect_err(|e| {
                tracing::error!(interface = %ifname, error = %e, "kernel firewall stage left off; userspace applies every rule");
            })?;
        }
        Ok(())
    }

    /// The kernel counters of `rules`' tables on every interface; an interface whose
    /// counters cannot be read is logged and counted as zero.
    fn kernel_counters(&self, rules: &Ruleset) -> Vec<(String, Vec<FwCounter>)> {
        self.maps
            .iter()
            .filter_map(|(ifname, m)| {
                let n = rules.placement(rules.ingress(ifname)).kernel_rules().count();
                match m.counters(n) {
                    Ok(c) => Some((ifname.clone(), c)),
                    Err(e) => {
                        tracing::warn!(interface = %ifname, error = %e, "read kernel firewall counters");
                        None
                    }
                }
            })
            .collect()
    }

    /// Every rule's counters (kernel stages plus workers' engines, and what earlier kernel
    /// tables counted under the same rule name), then the default policy's.
    pub fn totals(&self) -> Vec<FwRuleTotals> {
        let Some(version) = self.cell.current() else { return Vec::new() };
        let rules = version.ruleset();
        let kernel = self.kernel_counters(rules);
        let mut engines = version.worker_counters();
        let n = rules.len();
        if !self.user_carry.is_empty() {
            let name = |i: usize| if i < n { rules.rule(i).name.as_str() } else { "default" };
            engines.push((0..=n).map(|i| self.user_carry.get(name(i)).copied().unwrap_or_default()).collect());
        }
        merge(rules, &kernel, engines.iter().map(Vec::as_slice))
            .into_iter()
            .enumerate()
            .map(|(index, mut stats)| {
                if let Some(c) = self.carry.get(&stats.name) {
                    stats.kernel.packets += c.packets;
                    stats.kernel.bytes += c.bytes;
                }
                let kernel_on = self
                    .maps
                    .iter()
                    .filter(|(ifname, _)| {
                        let p = rules.placement(rules.ingress(ifname));
                        if index == n { p.kernel_default } else { p.places[index] == Place::Kernel }
                    })
                    .map(|(ifname, _)| ifname.clone())
                    .collect();
                let line = if index == n { 0 } else { rules.rule(index).line };
                FwRuleTotals { index, stats, line, kernel_on }
            })
            .collect()
    }
}
