//! The running dataplane as the controller drives it: a cheap, cloneable [`RuntimeHandle`]
//! for swapping pipelines, reading counters and histograms, capturing, and reloading the
//! config. Every change compiles first and publishes only a pipeline that compiled; changes
//! are serialized by one lock that workers never touch.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hdrhistogram::Histogram;

use crate::config::{Config, ConfigError};
use crate::pipeline::compile::CodeCache;
use crate::pipeline::{Ledger, Pipeline, PipelineError, PipelineSpec, PortEnv, Published, Retired, StageTotals};
use crate::stats::{self, HistCollector, QueueSnapshot, QueueStats};
use crate::steer::{SteerCounters, Steering};
use crate::worker::capture::CaptureFilterCell;

use super::capture::Captures;
use super::firewall::{FirewallControl, FirewallError, FwRuleTotals, load_ruleset};
use super::plan::WorkerPlan;
use super::report::QueueLabel;
use super::units::Unit;

/// How long a swap waits for every worker to leave the old pipeline before leaving it to be
/// freed later (a worker would have to be stuck for this long).
const GRACE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a swap did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwapOutcome {
    /// The port's pipeline generation now running (1 = the one it started with).
    pub generation: u64,
    pub stages: usize,
    /// Front ends, validation and JIT.
    pub compile: Duration,
    /// From publishing to every worker having left the old pipeline.
    pub grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("port `{0}` does not exist")]
    NoPort(String),
    #[error("port {port}: stage `{id}` does not exist")]
    NoStage { port: String, id: String },
    #[error("port {port}: position {position} is past the end ({len} stages)")]
    Position { port: String, position: usize, len: usize },
    #[error("port {port}: {source}")]
    Rejected { port: String, source: PipelineError },
    #[error("reload: {0}")]
    Config(#[from] ConfigError),
    #[error("reload: {0}")]
    Layout(String),
    /// The firewall file failed to read or compile (`file:line:column: reason`), or its
    /// kernel part failed to load.
    #[error("reload: firewall: {0}")]
    Firewall(#[from] FirewallError),
    #[error("the dataplane was started without a config file")]
    NoConfigFile,
}

/// One port, as the running config has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    pub name: String,
    pub interface: String,
    pub queues: Vec<u32>,
    pub peer: Option<String>,
}

impl PortInfo {
    pub(super) fn of(config: &Config) -> Vec<PortInfo> {
        config
            .ports
            .iter()
            .map(|p| PortInfo { name: p.name.clone(), interface: p.interface.clone(), queues: p.queues.clone(), peer: p.peer().map(str::to_owned) })
            .collect()
    }

    pub(super) fn env(&self) -> PortEnv<'_> {
        PortEnv { port: &self.name, peer: self.peer.as_deref(), workers: self.queues.len() }
    }
}

/// One socket's counters.
#[derive(Debug, Clone)]
pub struct QueueRef {
    pub port: usize,
    pub queue: u32,
    pub stats: Arc<QueueStats>,
    pub label: QueueLabel,
}

/// What a reload that adds or removes ports or queues replaces as a whole: the ports (in
/// config order), the pipeline table indexed like them, and every socket's counters.
#[derive(Debug)]
pub(super) struct Layout {
    pub ports: Arc<Vec<PortInfo>>,
    pub published: Arc<Published>,
    pub queues: Vec<QueueRef>,
    pub workers: usize,
}

impl Layout {
    pub fn new(config: &Config, published: Arc<Published>, units: &[Unit]) -> Layout {
        let queues = units
            .iter()
            .flat_map(|u| u.plan.sockets.iter().zip(&u.stats).zip(&u.labels))
            .map(|((s, stats), label)| QueueRef { port: s.port, queue: s.queue, stats: Arc::clone(stats), label: label.clone() })
            .collect();
        Layout { ports: Arc::new(PortInfo::of(config)), published, queues, workers: units.len() }
    }
}

/// Recent pipelines' code kept per port, so a rollback or a swap back is instant.
const CODE_CACHE: usize = 4;

/// A port's change history.
#[derive(Debug)]
pub(super) struct PortControl {
    pub generation: u64,
    pub ledger: Ledger,
    pub cache: CodeCache,
}

impl PortControl {
    pub fn new() -> PortControl {
        PortControl { generation: 1, ledger: Ledger::new(), cache: CodeCache::new(CODE_CACHE) }
    }
}

pub(super) struct ControlState {
    pub config: Config,
    pub ports: Vec<PortControl>,
    pub firewall: FirewallControl,
}

/// Every worker's histogram collector, by worker name.
pub(super) struct Hists {
    pub names: Vec<String>,
    pub collectors: Vec<HistCollector>,
    total: Histogram<u64>,
}

pub(super) struct Shared {
    pub config_path: Option<PathBuf>,
    /// Replaced whole by a reload that changes ports or queues (under `control`).
    pub layout: ArcSwap<Layout>,
    pub started: Instant,
    pub control: Mutex<ControlState>,
    pub hist: Mutex<Hists>,
    pub captures: Captures,
    pub capture_filter: Arc<CaptureFilterCell>,
    pub swaps: AtomicU64,
    /// Taken out (and so detached) at shutdown.
    pub steering: Mutex<Option<BTreeMap<String, Steering>>>,
    /// The running workers, in plan order; taken out (and so stopped) at shutdown.
    pub units: Mutex<Vec<Unit>>,
}

/// A unique name for the next worker thread (also its key for histograms and capture rings).
pub(super) fn next_worker_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("sluice-w{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The firewall a dataplane runs, in brief.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallSummary {
    pub file: PathBuf,
    pub rules: usize,
    /// Per port interface, how many rules its kernel stage runs.
    pub kernel_rules: Vec<(String, usize)>,
}

/// Drives a running dataplane; clone freely, use from any (non-worker) thread.
#[derive(Clone)]
pub struct RuntimeHandle {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeHandle").field("ports", &self.ports()).finish_non_exhaustive()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data behind: every update to it is a
    // single assignment after the fallible work is done.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Compiles the config's pipelines, one per port (workers = the port's queues).
pub(super) fn compile_all(config: &Config) -> Result<Vec<Arc<Pipeline>>, ControlError> {
    config
        .ports
        .iter()
        .map(|p| {
            Pipeline::compile(&p.pipeline(), &p.env())
                .map(Arc::new)
                .map_err(|source| ControlError::Rejected { port: p.name.clone(), source })
        })
        .collect()
}

pub(super) struct SharedParts {
    pub config: Config,
    pub config_path: Option<PathBuf>,
    pub published: Arc<Published>,
    pub units: Vec<Unit>,
    pub hist: Vec<HistCollector>,
    pub captures: Captures,
    pub capture_filter: Arc<CaptureFilterCell>,
    pub steering: BTreeMap<String, Steering>,
    pub firewall: FirewallControl,
}

impl RuntimeHandle {
    pub(super) fn new(parts: SharedParts) -> RuntimeHandle {
        let layout = Layout::new(&parts.config, parts.published, &parts.units);
        let control = ControlState {
            ports: parts.config.ports.iter().map(|_| PortControl::new()).collect(),
            config: parts.config,
            firewall: parts.firewall,
        };
        let names = parts.units.iter().map(|u| u.name.clone()).collect();
        RuntimeHandle {
            shared: Arc::new(Shared {
                config_path: parts.config_path,
                layout: ArcSwap::from_pointee(layout),
                started: Instant::now(),
                control: Mutex::new(control),
                hist: Mutex::new(Hists { names, collectors: parts.hist, total: stats::batch_histogram() }),
                captures: parts.captures,
                capture_filter: parts.capture_filter,
                swaps: AtomicU64::new(0),
                steering: Mutex::new(Some(parts.steering)),
                units: Mutex::new(parts.units),
            }),
        }
    }

    pub(super) fn layout(&self) -> Arc<Layout> {
        self.shared.layout.load_full()
    }

    /// The ports as the running config has them (a reload may change them).
    pub fn ports(&self) -> Arc<Vec<PortInfo>> {
        Arc::clone(&self.shared.layout.load().ports)
    }

    pub fn port_index(&self, name: &str) -> Result<usize, ControlError> {
        self.shared.layout.load().ports.iter().position(|p| p.name == name).ok_or_else(|| ControlError::NoPort(name.to_owned()))
    }

    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.shared.config_path.as_deref()
    }

    /// The config in force (the file as last loaded, with the pipeline edits made since).
    pub fn config(&self) -> Config {
        lock(&self.shared.control).config.clone()
    }

    pub fn workers(&self) -> usize {
        self.shared.layout.load().workers
    }

    /// The running workers' plans, in order.
    pub fn plans(&self) -> Vec<WorkerPlan> {
        lock(&self.shared.units).iter().map(|u| u.plan.clone()).collect()
    }

    /// Whether a worker stopped on its own (an error); true after shutdown.
    pub fn any_worker_finished(&self) -> bool {
        let units = lock(&self.shared.units);
        units.is_empty() || units.iter().any(Unit::finished)
    }

    /// Every socket's label and counters, in plan order.
    pub fn labelled_stats(&self) -> Vec<(QueueLabel, QueueSnapshot)> {
        self.shared.layout.load().queues.iter().map(|q| (q.label.clone(), q.stats.snapshot())).collect()
    }

    /// Takes the workers out to stop them.
    pub(super) fn take_units(&self) -> Vec<Unit> {
        std::mem::take(&mut *lock(&self.shared.units))
    }

    pub fn uptime(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// Pipelines published since start, over all ports.
    pub fn swaps(&self) -> u64 {
        self.shared.swaps.load(Ordering::Relaxed)
    }

    /// The pipeline `port` runs now.
    pub fn pipeline(&self, port: usize) -> Arc<Pipeline> {
        self.shared.layout.load().published.current(port)
    }

    pub fn generation(&self, port: usize) -> u64 {
        lock(&self.shared.control).ports[port].generation
    }

    /// Compiles `spec` for `port` and, if it compiles, publishes it and waits for the grace
    /// period. On error nothing changed.
    pub fn replace(&self, port: usize, spec: PipelineSpec) -> Result<SwapOutcome, ControlError> {
        let mut control = lock(&self.shared.control);
        self.swap_locked(&mut control, port, spec)
    }

    /// Builds a new spec from the current one with `edit` and swaps to it.
    pub fn edit(
        &self,
        port: usize,
        edit: impl FnOnce(&mut PipelineSpec) -> Result<(), ControlError>,
    ) -> Result<SwapOutcome, ControlError> {
        let mut control = lock(&self.shared.control);
        let mut spec = self.pipeline(port).spec().clone();
        edit(&mut spec)?;
        self.swap_locked(&mut control, port, spec)
    }

    pub(super) fn swap_locked(&self, control: &mut ControlState, port: usize, spec: PipelineSpec) -> Result<SwapOutcome, ControlError> {
        let layout = self.layout();
        let info = layout.ports.get(port).ok_or_else(|| ControlError::NoPort(port.to_string()))?;
        let new = Pipeline::compile_cached(&spec, &info.env(), &mut control.ports[port].cache)
            .map_err(|source| ControlError::Rejected { port: info.name.clone(), source })?;
        let compile = new.compile_time();
        let stages = new.stages().len();
        let t0 = Instant::now();
        let retired = layout.published.replace(port, Arc::new(new), GRACE_TIMEOUT);
        let grace = t0.elapsed();
        let pc = &mut control.ports[port];
        if let Retired::Lingering(_) = retired {
            tracing::warn!(port = %info.name, "a worker still runs the previous pipeline after {GRACE_TIMEOUT:?}");
        }
        pc.ledger.retire(retired, &spec);
        pc.generation += 1;
        self.shared.swaps.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = control.config.ports.get_mut(port) {
            p.stages = spec.stages.clone();
            p.action = match &spec.default {
                crate::pipeline::DefaultAction::Drop => crate::config::PortAction::Drop,
                crate::pipeline::DefaultAction::Reflect => crate::config::PortAction::Reflect,
                crate::pipeline::DefaultAction::Forward(to) => crate::config::PortAction::Forward(to.clone()),
            };
        }
        Ok(SwapOutcome { generation: pc.generation, stages, compile, grace })
    }

    /// Every stage's counters (summed over workers and over the pipelines the id survived),
    /// then the default action's under `None`.
    pub fn stage_totals(&self, port: usize) -> Vec<(Option<String>, StageTotals)> {
        let control = lock(&self.shared.control);
        control.ports[port].ledger.totals(&self.pipeline(port))
    }

    /// Every socket's counters: (port, queue, counters).
    pub fn queue_stats(&self) -> Vec<(usize, u32, QueueSnapshot)> {
        self.shared.layout.load().queues.iter().map(|q| (q.port, q.queue, q.stats.snapshot())).collect()
    }

    /// The batch-time histogram over all workers since start. Busy workers answer within a
    /// batch; sleeping ones within their poll timeout, else their part comes with a later call.
    pub fn histogram(&self, wait: Duration) -> Histogram<u64> {
        let mut h = lock(&self.shared.hist);
        let Hists { collectors, total, .. } = &mut *h;
        stats::collect_histograms(collectors, total, wait);
        total.clone()
    }

    /// Re-reads the config file and applies it: changed pipelines are swapped in, a changed
    /// firewall reloaded, and added, removed or changed ports and queues get their workers
    /// started or stopped while the others keep running ([`relayout`](super::relayout)).
    /// Dataplane settings that cannot change live are refused, naming the key. On any error
    /// nothing changed. Returns one line per change.
    pub fn reload(&self) -> Result<Vec<String>, ControlError> {
        let path = self.shared.config_path.as_ref().ok_or(ControlError::NoConfigFile)?;
        let new = Config::load(path)?;
        let mut control = lock(&self.shared.control);
        let fixed = new.dataplane.fixed_keys_changed(&control.config.dataplane);
        if !fixed.is_empty() {
            let keys = fixed.iter().map(|k| format!("dataplane.{k}")).collect::<Vec<_>>().join(", ");
            return Err(ControlError::Layout(format!("{keys} changed: these settings apply only at start; restart to apply them")));
        }
        if PortInfo::of(&new) != *self.ports() {
            return super::relayout::apply(self, &mut control, new);
        }
        // Compile everything first: a bad pipeline on any port changes nothing on any port.
        let mut changed = Vec::new();
        for (i, p) in new.ports.iter().enumerate() {
            let spec = p.pipeline();
            if spec != *self.pipeline(i).spec() {
                Pipeline::check(&spec, &p.env()).map_err(|source| ControlError::Rejected { port: p.name.clone(), source })?;
                changed.push((i, spec));
            }
        }
        // The firewall is read and compiled whether or not its path changed: the file may have.
        let rules = new.dataplane.firewall.as_deref().map(load_ruleset).transpose()?;
        let mut lines = Vec::new();
        if let Some(line) = self.replace_firewall(&mut control, new.dataplane.firewall.clone(), rules)? {
            lines.push(line);
        }
        let ports = self.ports();
        for (i, spec) in changed {
            let n = spec.stages.len();
            self.swap_locked(&mut control, i, spec)?;
            lines.push(format!("port {}: pipeline replaced ({n} stages)", ports[i].name));
        }
        control.config = new;
        Ok(lines)
    }

    /// Makes `rules` (from `path`) the firewall, marking the steering programs as managed by
    /// it or not; the line saying so, or `None` when there was and is no firewall.
    pub(super) fn replace_firewall(
        &self,
        control: &mut ControlState,
        path: Option<PathBuf>,
        rules: Option<Arc<crate::firewall::Ruleset>>,
    ) -> Result<Option<String>, ControlError> {
        let line = match (&path, &rules) {
            (Some(p), Some(r)) => format!("firewall: {} rules from {}", r.len(), p.display()),
            _ if control.firewall.path().is_some() => "firewall: off".to_owned(),
            _ => return Ok(None),
        };
        let owned = path.is_some();
        control.firewall.replace(path, rules)?;
        // `sluice fw load/unload` refuse interfaces marked here (see `steer`).
        if let Some(steering) = lock(&self.shared.steering).as_mut() {
            for s in steering.values_mut() {
                s.set_firewall_owned(owned).map_err(|e| ControlError::Firewall(FirewallError::Kernel(e)))?;
            }
        }
        Ok(Some(line))
    }

    /// The running firewall's file, rule count and kernel rules per port interface.
    pub fn firewall_summary(&self) -> Option<FirewallSummary> {
        let control = lock(&self.shared.control);
        let path = control.firewall.path()?.to_owned();
        let rules = control.firewall.ruleset()?;
        let kernel = self
            .ports()
            .iter()
            .map(|p| p.interface.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|i| {
                let n = rules.placement(rules.ingress(&i)).kernel_rules().count();
                (i, n)
            })
            .collect();
        Some(FirewallSummary { file: path, rules: rules.len(), kernel_rules: kernel })
    }

    /// The running firewall's file and every rule's merged counters (empty without one).
    pub fn firewall_totals(&self) -> (Option<PathBuf>, Vec<FwRuleTotals>) {
        let control = lock(&self.shared.control);
        (control.firewall.path().map(PathBuf::from), control.firewall.totals())
    }

    /// Runs `f` on the attached steering programs (`None` after shutdown).
    pub fn with_steering<T>(&self, f: impl FnOnce(Option<&BTreeMap<String, Steering>>) -> T) -> T {
        f(lock(&self.shared.steering).as_ref())
    }

    /// The steering programs' counters by interface (empty after shutdown). An interface
    /// whose counters cannot be read is logged and left out.
    pub fn steering_counters(&self) -> Vec<(String, SteerCounters)> {
        let steering = lock(&self.shared.steering);
        let Some(map) = steering.as_ref() else { return Vec::new() };
        map.iter()
            .filter_map(|(ifname, s)| match s.counters() {
                Ok(c) => Some((ifname.clone(), c)),
                Err(e) => {
                    tracing::warn!(interface = %ifname, error = %e, "read steering counters");
                    None
                }
            })
            .collect()
    }

    /// Detaches every steering program; returns them for their last counters.
    pub(super) fn take_steering(&self) -> Option<BTreeMap<String, Steering>> {
        lock(&self.shared.steering).take()
    }

    pub fn captures(&self) -> &Captures {
        &self.shared.captures
    }
}
